"""A failed call leaves no reference cycle: its error, its frames and the caller's locals die with it.

Python frees an exception, its traceback and every frame the traceback holds by reference
counting, as soon as the caller drops the error, unless a frame of the library that the error
passed through still holds the error (``raise error`` of a local, a token, an action or a list
holding it): then they form a cycle that only the cyclic garbage collector frees. A service that
tunes the collector down (or freezes it, as pre-fork servers do) keeps, for every such failure,
the error and every local of every frame it passed through (a request's body, a response) until
a collection runs.

Each scenario here makes one failing call through one path (a fallback that cannot answer, a
hook that raises, an injected fault, a timeout, a recovery ...) with the cyclic collector
disabled, and checks that the error raised inside the protected function, a large object that
function held, and a large object the caller's frame held are all freed once the caller has
dropped the error: by reference counting alone.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import httpx
import pytest

from otel_resilience import (
    Chaos,
    ChaosConfig,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    RecoveryAction,
    RecoveryContext,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    TimeoutHandler,
    retry_async,
    retry_sync,
)
from otel_resilience.integrations.http import HttpOptions
from otel_resilience.integrations.httpx import ResilientTransport
from otel_resilience.testing import FakeClock


class Payload:
    """A large local: what a frame kept alive by a cycle would keep."""

    def __init__(self) -> None:
        self.data = bytearray(1 << 16)


class Down(ConnectionError):
    """The dependency is down."""


class Watched:
    """Weak references to what one failing call made: every one must be dead after it."""

    def __init__(self) -> None:
        self.refs: list[tuple[str, weakref.ref[Any]]] = []

    def track(self, what: str, obj: Any) -> Any:
        self.refs.append((what, weakref.ref(obj)))
        return obj

    def payload(self, what: str) -> Payload:
        return self.track(what, Payload())  # type: ignore[no-any-return]

    def down(self, what: str = "the function's error") -> Down:
        return self.track(what, Down("down"))  # type: ignore[no-any-return]

    def alive(self) -> list[str]:
        return [what for what, ref in self.refs if ref() is not None]


Scenario = Callable[[Watched], Callable[[], Any]]
"""Given the watch, return a function that makes one failing call (it may return a coroutine)."""


def _failing(watched: Watched) -> tuple[Callable[..., NoReturn], Callable[..., Awaitable[NoReturn]]]:
    """A sync and an async protected function that hold a payload and raise a watched error."""

    def down_sync(*_: object) -> NoReturn:
        _held = watched.payload("the function's local")
        raise watched.down()

    async def down_async(*_: object) -> NoReturn:
        _held = watched.payload("the function's local")
        raise watched.down()

    return down_sync, down_async


class _Cache:
    def get(self, key: str) -> object:
        return None

    def set(self, key: str, value: object) -> None:
        pass


def cached_fallback_miss(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)
    handler = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=_Cache())
    )
    if sync:
        return lambda: handler.execute_with_fallback_sync(down_sync)
    return lambda: handler.execute_with_fallback(down_async)


def multiple_attempts_all_fail(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)

    def other_sync(*_: object) -> NoReturn:
        raise watched.down("a fallback function's error")

    async def other_async(*_: object) -> NoReturn:
        raise watched.down("a fallback function's error")

    functions: list[Callable[..., Any]] = [other_sync, other_sync] if sync else [other_async, other_async]
    handler = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=functions)
    )
    if sync:
        return lambda: handler.execute_with_fallback_sync(down_sync)
    return lambda: handler.execute_with_fallback(down_async)


def alternative_function_fails(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)

    def alternative(error: Exception) -> NoReturn:
        raise watched.down("the fallback function's error")

    manager = ResilienceManager()
    config = ResilienceConfig(
        name="alternative-fails",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000_000),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative
        ),
    )
    if sync:
        return lambda: manager.execute_with_resilience_sync(down_sync, config)
    return lambda: manager.execute_with_resilience(down_async, config)


def on_retry_hook_raises(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)
    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0)

    def hook(attempt: int, error: Exception | None) -> NoReturn:
        raise watched.down("the hook's error")

    if sync:
        return lambda: retry_sync(down_sync, policy=policy, on_retry=hook)
    return lambda: retry_async(down_async, policy=policy, on_retry=hook)


def chaos_fault(watched: Watched, sync: bool) -> Callable[[], Any]:
    chaos = Chaos("retention-chaos", ChaosConfig(fault_rate=1.0, fault=Down))

    def never() -> str:
        return "never called"

    async def never_async() -> str:
        return "never called"

    if sync:
        return lambda: chaos.call_sync(never)
    return lambda: chaos.call(never_async)


def chaos_fault_in_policy(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)
    manager = ResilienceManager()
    config = ResilienceConfig(
        name="retention-chaos-policy",
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0),
        chaos=ChaosConfig(fault_rate=1.0, fault=Down),
    )
    if sync:
        return lambda: manager.execute_with_resilience_sync(down_sync, config)
    return lambda: manager.execute_with_resilience(down_async, config)


def sync_timeout(watched: Watched, sync: bool) -> Callable[[], Any]:
    clock = FakeClock()
    handler = TimeoutHandler(timeout=1.0, clock=clock)

    def late() -> Payload:
        _held = watched.payload("the function's local")
        clock.advance(2.0)  # returns after the deadline: a timeout
        return watched.payload("the late result")

    return lambda: handler.with_timeout_sync(late)


def recovery_reruns_run_out(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)
    manager = ResilienceManager()
    manager.recovery_system.register_recovery_rule(
        Down, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    config = ResilienceConfig(
        name="recovery-runs-out",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1_000_000),
        enable_recovery=True,
    )
    if sync:
        return lambda: manager.execute_with_resilience_sync(down_sync, config)
    return lambda: manager.execute_with_resilience(down_async, config)


def recovery_restarts(watched: Watched, sync: bool) -> Callable[[], Any]:
    """RESTART re-runs that all fail: the token holds each failure until its restart hook ran."""
    down_sync, down_async = _failing(watched)
    system = ErrorRecoverySystem(name="retention-restarts")
    system.register_recovery_rule(
        Down,
        RecoveryAction(
            strategy=RecoveryStrategy.RESTART, max_attempts=2, delay=0.0, restart_hook=lambda: None
        ),
    )
    if sync:
        return lambda: system.execute_sync(down_sync)
    return lambda: system.execute(down_async)


def recovery_restart_hook_fails(watched: Watched, sync: bool) -> Callable[[], Any]:
    """The restart hook raises: its error carries the failure it restarted for as context."""
    down_sync, down_async = _failing(watched)

    def hook() -> NoReturn:
        raise watched.down("the restart hook's error")

    system = ErrorRecoverySystem(name="retention-restart-hook")
    system.register_recovery_rule(
        Down, RecoveryAction(strategy=RecoveryStrategy.RESTART, max_attempts=2, delay=0.0, restart_hook=hook)
    )
    if sync:
        return lambda: system.execute_sync(down_sync)
    return lambda: system.execute(down_async)


def recovery_fallback_fails(watched: Watched, sync: bool) -> Callable[[], Any]:
    down_sync, down_async = _failing(watched)

    def fallback(*_: object) -> NoReturn:
        raise watched.down("the recovery fallback's error")

    manager = ResilienceManager()
    manager.recovery_system.register_recovery_rule(
        Down, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_function=fallback)
    )
    config = ResilienceConfig(name="recovery-fallback-fails", enable_recovery=True)
    if sync:
        return lambda: manager.execute_with_resilience_sync(down_sync, config)
    return lambda: manager.execute_with_resilience(down_async, config)


def recover_from_error(watched: Watched, sync: bool) -> Callable[[], Any]:
    """A caught error handed to ``recover_from_error``, whose RETRY rule re-runs and fails again."""
    down_sync, down_async = _failing(watched)
    system = ErrorRecoverySystem()
    system.register_recovery_rule(
        Down, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )

    def run_sync() -> Any:
        try:
            down_sync()
        except Down as error:
            return system.recover_from_error_sync(
                error, RecoveryContext(operation=down_sync, operation_name="q")
            )

    async def run_async() -> Any:
        try:
            await down_async()
        except Down as error:
            return await system.recover_from_error(
                error, RecoveryContext(operation=down_async, operation_name="q")
            )

    return run_sync if sync else run_async


def hedged_attempt_interrupted(watched: Watched, sync: bool) -> Callable[[], Any]:
    """A hedged attempt ends with a ``BaseException`` (not a failure): it ends the race."""

    class Interrupted(BaseException):
        pass

    hedging = Hedging("retention-hedging", HedgingConfig(mode="parallel", max_attempts=2))

    async def interrupted() -> NoReturn:
        _held = watched.payload("the function's local")
        raise watched.track("the function's error", Interrupted())

    return lambda: hedging.call(interrupted)


def hedged_attempt_cancels_itself(watched: Watched, sync: bool) -> Callable[[], Any]:
    """A hedged attempt's dependency raises ``CancelledError`` itself: it ends the race, raised as it is."""
    hedging = Hedging("retention-hedging-own-cancel", HedgingConfig(delay=10.0, max_attempts=2))

    async def cancels_itself() -> NoReturn:
        _held = watched.payload("the function's local")
        await asyncio.sleep(0)
        raise watched.track("the function's error", asyncio.CancelledError("the shared fetch was cancelled"))

    return lambda: hedging.call(cancels_itself)


def http_failure_raised(watched: Watched, sync: bool) -> Callable[[], Any]:
    """A failed response raised as ``FailedResponseError`` (``HttpOptions(raise_on_failure=True)``)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return watched.track("the failed response", httpx.Response(503))  # type: ignore[no-any-return]

    policy = ResilienceConfig(name="retention-http", retry_policy=RetryPolicy(max_attempts=1))
    options = HttpOptions(raise_on_failure=True)
    transport = ResilientTransport(
        policy, httpx.MockTransport(handler), manager=ResilienceManager(), options=options
    )
    client = httpx.Client(transport=transport)
    return lambda: client.get("http://retention.internal/")


def unknown_policy_reloaded(watched: Watched, sync: bool) -> Callable[[], Any]:
    manager = ResilienceManager()

    def reload() -> None:
        _held = watched.payload("the function's local")
        # The refusal's warning carries the error: a handler that keeps records (pytest's
        # capture) would keep it, and its traceback, for reasons of its own.
        log = logging.getLogger("otel_resilience.manager")
        log.disabled = True
        try:
            manager.reconfigure("no-such-policy", ResilienceConfig())
        finally:
            log.disabled = False

    return reload


SCENARIOS: dict[str, tuple[Callable[[Watched, bool], Callable[[], Any]], tuple[str, ...]]] = {
    "fallback cached value, cache miss": (cached_fallback_miss, ("sync", "async")),
    "fallback multiple attempts, all fail": (multiple_attempts_all_fail, ("sync", "async")),
    "fallback function raises": (alternative_function_fails, ("sync", "async")),
    "retry on_retry hook raises": (on_retry_hook_raises, ("sync", "async")),
    "chaos injects a fault": (chaos_fault, ("sync", "async")),
    "chaos in a policy": (chaos_fault_in_policy, ("sync", "async")),
    "sync timeout": (sync_timeout, ("sync",)),
    "recovery re-runs run out": (recovery_reruns_run_out, ("sync", "async")),
    "recovery fallback raises": (recovery_fallback_fails, ("sync", "async")),
    "recover_from_error": (recover_from_error, ("sync", "async")),
    "hedged attempt interrupted": (hedged_attempt_interrupted, ("async",)),
    "hedged attempt cancels itself": (hedged_attempt_cancels_itself, ("async",)),
    "recovery restarts run out": (recovery_restarts, ("sync", "async")),
    "recovery restart hook raises": (recovery_restart_hook_fails, ("sync", "async")),
    "http failure raised": (http_failure_raised, ("sync",)),
    "unknown policy reloaded": (unknown_policy_reloaded, ("sync",)),
}
CASES = [(name, driver) for name, (_, drivers) in SCENARIOS.items() for driver in drivers]


async def fail_once(call: Callable[[], Any], watched: Watched) -> None:
    """Call once, with a large local in this (the caller's) frame; the call must raise."""
    local = watched.payload("the caller's local")
    try:
        outcome = call()
        if asyncio.iscoroutine(outcome):
            await outcome
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        if type(error).__weakrefoffset__:  # a built-in exception cannot be weakly referenced
            watched.track("the raised error", error)
    else:
        raise AssertionError("the call did not fail")
    del local


@pytest.mark.parametrize(("name", "driver"), CASES)
async def test_a_failed_call_is_freed_by_reference_counting(
    name: str, driver: str, collector_off: None
) -> None:
    """Nothing of a failed call (its error, its frames' locals, the caller's) outlives it in a cycle."""
    scenario, _ = SCENARIOS[name]
    watched = Watched()
    call = scenario(watched, driver == "sync")
    await fail_once(call, watched)  # the first call fills every cache
    watched.refs.clear()
    for _ in range(3):
        await fail_once(call, watched)
    assert len(watched.refs) >= 6, f"the scenario tracked too little: {watched.refs}"
    alive = watched.alive()
    assert not alive, f"{name} ({driver}): kept alive by a reference cycle after the call: {alive}"
    gc.enable()
    gc.collect()
    assert not watched.alive(), f"{name} ({driver}): kept alive even by the collector: {watched.alive()}"
