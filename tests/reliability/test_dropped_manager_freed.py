"""A manager a program stops using is freed at once, by reference counting, with all it made.

A test that makes a manager per test, or a worker that rebuilds its manager, drops the old one:
its breakers, bulkheads, pipelines and policy handles must leave with it, without waiting for
the cyclic garbage collector (a pre-fork server that freezes the collector never runs it), so
that they stop being exported and a new manager with the same policy names is no namesake of
them ("a second live circuit_breaker is named ..."). Each check runs with the collector off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import weakref
from typing import Any

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    ExecutionRejectedError,
    FallbackConfig,
    FallbackStrategy,
    OperationTimeoutError,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.registry import BREAKERS, BULKHEADS, PIPELINES, POLICIES

NAMESAKE = "a second live"


class BoomError(Exception):
    """What the protected functions raise."""


def _config(name: str | None, *, fallback: bool = True) -> ResilienceConfig:
    return ResilienceConfig(
        name=name,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2),
        bulkhead_config=BulkheadConfig(max_concurrent=4),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0),
        timeout=30.0,
        enable_recovery=True,
        fallback_config=(
            FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0) if fallback else None
        ),
    )


def _ok() -> int:
    return 1


def _boom() -> int:
    raise BoomError


async def _aok() -> int:
    return 1


async def _aboom() -> int:
    raise BoomError


def _call_sync(fn: Any, *args: Any) -> None:
    with contextlib.suppress(BoomError, ExecutionRejectedError):
        fn(*args)


async def _call_async(fn: Any, *args: Any) -> None:
    with contextlib.suppress(BoomError, ExecutionRejectedError):
        await fn(*args)


async def _use_async(manager: ResilienceManager) -> None:
    """Successes and failures (a trip, a recovery rule) through config policies and a named one."""
    handle = manager.policy("named", _config(None), max_keys=1)
    for i in range(3):  # max_policies=1: each config evicts the one before
        config = _config("calls", fallback=i != 1)
        for fn in (_aok, _aboom, _aboom, _aboom):
            await _call_async(manager.execute_with_resilience, fn, config)
    protected = handle.protect(_aboom)
    for key in ("a", "b", "c"):  # max_keys=1: each key evicts the one before
        for fn in (_aok, _aboom, _aboom):
            await _call_async(handle.for_key(key).execute, fn)
        await _call_async(protected)
    manager.reconfigure("named", dataclasses.replace(_config(None), timeout=20.0))
    await _call_async(handle.for_key("a").execute, _aboom)


def _use_sync(manager: ResilienceManager) -> None:
    """As :func:`_use_async`, in the calling thread."""
    handle = manager.policy("named", _config(None), max_keys=1)
    for i in range(3):
        config = _config("calls", fallback=i != 1)
        for fn in (_ok, _boom, _boom, _boom):
            _call_sync(manager.execute_with_resilience_sync, fn, config)
    protected = handle.protect(_boom)
    for key in ("a", "b", "c"):
        for fn in (_ok, _boom, _boom):
            _call_sync(handle.for_key(key).execute_sync, fn)
        _call_sync(protected)
    manager.reconfigure("named", dataclasses.replace(_config(None), timeout=20.0))
    _call_sync(handle.for_key("a").execute_sync, _boom)


def _run_and_watch(driver: str) -> dict[str, weakref.ref[Any]]:
    """Make a manager, use it, and return weak references to it and to what it made."""
    manager = ResilienceManager(max_policies=1)
    action = RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker="calls")
    manager.recovery_system.register_recovery_rule(BoomError, action)
    if driver == "async":
        asyncio.run(_use_async(manager))
    else:
        _use_sync(manager)
    manager.get_resilience_statistics()
    handle = manager.policy("named")
    handle.get_stats()
    watched: dict[str, Any] = {
        "manager": manager,
        "handle": handle,
        "recovery system": manager.recovery_system,
    }
    for name, breaker in manager._breakers.items():
        watched[f"breaker {name}"] = breaker
    for name, bulkhead in manager._bulkheads.items():
        watched[f"bulkhead {name}"] = bulkhead
    for policy in manager._policies.values():
        watched[f"pipeline {policy.name}"] = policy.pipeline
    for key in ("a", "c"):
        view = handle.for_key(key)
        watched[f"key {key} breaker"] = view.circuit_breaker
        watched[f"key {key} bulkhead"] = view.bulkhead
    return {what: weakref.ref(item) for what, item in watched.items()}


def _registered(registry: Any, watched: dict[str, weakref.ref[Any]]) -> list[str]:
    live = {id(item) for item in registry.items()}
    return [what for what, ref in watched.items() if id(ref()) in live]


def _check_dropped_manager_is_freed(driver: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_resilience")
    watched = _run_and_watch(driver)
    alive = [what for what, ref in watched.items() if ref() is not None]
    assert alive == []
    for registry in (BREAKERS, BULKHEADS, PIPELINES, POLICIES):
        assert _registered(registry, watched) == []
    assert not [r for r in caplog.records if NAMESAKE in r.getMessage()]
    second = _run_and_watch(driver)  # a new manager with the same policy names
    assert [what for what, ref in second.items() if ref() is not None] == []
    assert not [r for r in caplog.records if NAMESAKE in r.getMessage()]


@pytest.mark.usefixtures("collector_off")
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_dropped_manager_is_freed_by_reference_counting(
    driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    _check_dropped_manager_is_freed(driver, caplog)


@pytest.mark.usefixtures("collector_off")
@pytest.mark.parametrize("driver", ["sync", "async"])
def test_dropped_manager_is_freed_with_the_sdk_instrumented(
    driver: str, caplog: pytest.LogCaptureFixture, otel: Any
) -> None:
    _check_dropped_manager_is_freed(driver, caplog)
    assert otel.spans()  # the calls were traced


async def _hang() -> None:
    await asyncio.Event().wait()


@pytest.mark.usefixtures("collector_off")
def test_a_task_ended_by_a_timeout_is_freed_by_reference_counting() -> None:
    """A task that ends with a timeout's error holds the error: the error must not hold the task."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="hangs", timeout=0.001, circuit_breaker=CircuitBreakerConfig())
    watched: list[weakref.ref[Any]] = []

    async def main(manager: ResilienceManager) -> None:
        task = asyncio.ensure_future(manager.execute_with_resilience(_hang, config))
        await asyncio.wait({task})  # not awaited: the error raised here would hold this frame
        assert isinstance(task.exception(), OperationTimeoutError)
        watched.append(weakref.ref(task))

    asyncio.run(main(manager))
    watched.append(weakref.ref(manager))
    del manager
    assert [ref() for ref in watched] == [None, None]


@pytest.mark.usefixtures("collector_off")
@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_a_policy_reloaded_while_a_call_ran_leaves_with_its_manager(keyed: bool) -> None:
    """A reload that drops a breaker a call still runs in leaves nothing registered once the manager goes.

    The key's count-out that folds the dropped breaker when that call ends referred to itself
    (a closure cycle) and held the policy's ledger: once replaced, it kept the ledger, its
    breaker totals and executions carriers registered, exported under the policy's name (and
    summed into the series of a new manager's policy of that name) until the cyclic collector
    ran, never where it is frozen.
    """
    name = "reloaded-in-flight"

    async def use(manager: ResilienceManager) -> None:
        policy = manager.policy(name, ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))
        runs = policy.for_key("k") if keyed else policy
        release = asyncio.Event()

        async def answer_later() -> int:
            await release.wait()
            return 1

        running = asyncio.ensure_future(runs.execute(answer_later))
        await asyncio.sleep(0)
        manager.reconfigure(name, ResilienceConfig())  # drops the breaker the running call holds
        release.set()
        assert await running == 1  # folded as it ends: the count-out is the plain one again
        assert await runs.execute(_aok) == 1

    manager = ResilienceManager()
    asyncio.run(use(manager))
    watched = weakref.ref(manager)
    del manager
    assert watched() is None
    for registry in (BREAKERS, PIPELINES, POLICIES):
        assert [item for item in registry.items() if getattr(item, "name", None) == name] == []
