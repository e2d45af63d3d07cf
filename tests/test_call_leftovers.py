"""What a call leaves behind once it returned: no reference cycle, nothing of the call kept.

A cycle through a failed call's error (error -> traceback -> frames -> their locals) keeps the
error, every frame it went through and the call's arguments alive until a full collection. Each
test runs with the garbage collector off, so that what reference counting alone does not free
stays to be counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from otel_support import instrumented

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
    TimeoutHandler,
    resilient,
)
from otel_resilience.testing import FakeClock

CALLS = 20
"""Calls per measure: a cycle made by each is counted as often."""


class Payload:
    """A call's argument: found in the garbage when a cycle keeps the frames that hold it."""


class Failure(Exception):
    """The dependency's error in these tests (its message differs from call to call)."""


def ok(payload: Payload) -> str:
    return "ok"


def fails(payload: Payload) -> str:
    raise Failure(f"failed for {id(payload)}")


async def aok(payload: Payload) -> str:
    return "ok"


async def afails(payload: Payload) -> str:
    raise Failure(f"failed for {id(payload)}")


Call = Callable[[Payload], Any]
ACall = Callable[[Payload], Awaitable[Any]]


@dataclass
class Case:
    """One way of calling: its sync call (``None`` for async only) and its async call."""

    sync: Call | None
    call: ACall


class _Cache:
    """An empty cache service: every read misses."""

    def get(self, key: str) -> object:
        return None

    def set(self, key: str, value: object) -> None:
        pass


def _cases(clock: FakeClock) -> dict[str, Case]:
    """Every way of calling, each on an error path (and a success after failures where there is one)."""
    cases: dict[str, Case] = {}
    breaker = CircuitBreaker("leftovers.breaker", CircuitBreakerConfig(failure_threshold=10**6), clock=clock)
    cases["breaker fails"] = Case(lambda p: breaker.call_sync(fails, p), lambda p: breaker.call(afails, p))
    opened = CircuitBreaker("leftovers.open", clock=clock)
    opened.force_open()
    cases["breaker open"] = Case(lambda p: opened.call_sync(ok, p), lambda p: opened.call(aok, p))
    protected, aprotected = breaker.protect(fails), breaker.protect(afails)
    cases["decorated breaker fails"] = Case(protected, aprotected)

    def guarded(p: Payload) -> None:
        with breaker.guard():
            fails(p)

    async def aguarded(p: Payload) -> None:
        async with breaker.guard():
            fails(p)

    cases["guarded block fails"] = Case(guarded, aguarded)
    retry = Retry(
        "leftovers.retry", RetryPolicy(max_attempts=3, initial_delay=1.0, jitter="none"), clock=clock
    )
    cases["retries exhausted"] = Case(
        lambda p: retry.execute_sync(fails, p), lambda p: retry.execute(afails, p)
    )
    turns = iter(range(10**9))

    def flaky(p: Payload) -> str:
        return fails(p) if next(turns) % 2 == 0 else "ok"

    async def aflaky(p: Payload) -> str:
        return flaky(p)

    cases["retried, then succeeds"] = Case(
        lambda p: retry.execute_sync(flaky, p), lambda p: retry.execute(aflaky, p)
    )
    default = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0))
    cases["fallback default value"] = Case(
        lambda p: default.execute_with_fallback_sync(fails, p),
        lambda p: default.execute_with_fallback(afails, p),
    )
    alternative = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=lambda _e, p: ok(p))
    )
    cases["fallback alternative function"] = Case(
        lambda p: alternative.execute_with_fallback_sync(fails, p),
        lambda p: alternative.execute_with_fallback(afails, p),
    )
    failing = FallbackHandler(
        FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=lambda _e, p: fails(p)
        )
    )
    cases["fallback alternative function fails"] = Case(
        lambda p: failing.execute_with_fallback_sync(fails, p),
        lambda p: failing.execute_with_fallback(afails, p),
    )
    missed = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key="leftovers", cache_service=_Cache())
    )
    cases["fallback cache miss"] = Case(
        lambda p: missed.execute_with_fallback_sync(fails, p),
        lambda p: missed.execute_with_fallback(afails, p),
    )
    multiple = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=(fails, ok))
    )
    amultiple = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=(afails, aok))
    )
    cases["fallback function fails, the next answers"] = Case(
        lambda p: multiple.execute_with_fallback_sync(fails, p),
        lambda p: amultiple.execute_with_fallback(afails, p),
    )
    timeout = TimeoutHandler(timeout=30.0)
    cases["timeout, the call fails"] = Case(
        lambda p: timeout.with_timeout_sync(fails, p), lambda p: timeout.with_timeout(afails, p)
    )
    bulkhead = Bulkhead("leftovers.bulkhead", BulkheadConfig(max_concurrent=1, max_waiting=0))
    cases["bulkhead, the call fails"] = Case(
        lambda p: bulkhead.execute_sync(fails, p), lambda p: bulkhead.execute(afails, p)
    )

    def full(p: Payload) -> None:
        with bulkhead.slot():
            bulkhead.execute_sync(ok, p)

    async def afull(p: Payload) -> None:
        async with bulkhead.slot():
            await bulkhead.execute(aok, p)

    cases["bulkhead full"] = Case(full, afull)
    limiter = RateLimiter("leftovers.limiter", RateLimiterConfig(rate=0.001, burst=1), clock=clock)
    cases["rate limited"] = Case(lambda p: limiter.call_sync(ok, p), lambda p: limiter.call(aok, p))
    chaos = Chaos("leftovers.chaos", ChaosConfig(fault_rate=1.0, fault=Failure), clock=clock)
    cases["chaos fault"] = Case(lambda p: chaos.call_sync(ok, p), lambda p: chaos.call(aok, p))
    recovery = ErrorRecoverySystem(name="leftovers.recovery", clock=clock)
    recovery.register_recovery_rule(
        Failure, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    cases["recovery re-runs fail"] = Case(
        lambda p: recovery.execute_sync(fails, p), lambda p: recovery.execute(afails, p)
    )
    escalating = ErrorRecoverySystem(name="leftovers.escalation", clock=clock)
    escalating.register_recovery_rule(Failure, RecoveryAction(strategy=RecoveryStrategy.ESCALATE))
    cases["recovery escalates"] = Case(
        lambda p: escalating.execute_sync(fails, p), lambda p: escalating.execute(afails, p)
    )
    hedging = Hedging("leftovers.hedging", HedgingConfig(mode="parallel", max_attempts=2))
    cases["hedging, every attempt fails"] = Case(None, lambda p: hedging.call(afails, p))
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10**6),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=1.0, jitter="none"),
        timeout=30.0,
        bulkhead_config=BulkheadConfig(max_concurrent=5),
        rate_limiter=RateLimiterConfig(rate=1e9, burst=10**9),
    )
    policy = manager.policy("leftovers.policy", config)
    cases["policy exhausted"] = Case(
        lambda p: policy.execute_sync(fails, p), lambda p: policy.execute(afails, p)
    )
    cases["policy key exhausted"] = Case(
        lambda p: policy.for_key("tenant").execute_sync(fails, p),
        lambda p: policy.for_key("tenant").execute(afails, p),
    )
    decorate = resilient(config, manager=manager)
    cases["@resilient exhausted"] = Case(decorate(fails), decorate(afails))
    answering = manager.policy(
        "leftovers.multiple",
        ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=(fails, ok)
            ),
        ),
    )
    aanswering = manager.policy(
        "leftovers.amultiple",
        ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=(afails, aok)
            ),
        ),
    )
    cases["policy fallback function fails, the next answers"] = Case(
        lambda p: answering.execute_sync(fails, p), lambda p: aanswering.execute(afails, p)
    )
    return cases


CASES = [
    (case, driver)
    for case, calls in _cases(FakeClock()).items()
    for driver in ("sync", "async")
    if driver == "async" or calls.sync is not None  # hedging: async only
]


@contextlib.contextmanager
def _collector_off() -> Iterator[list[object]]:
    """Turn the collector off for the block; then collect, and list what it found of ours.

    Ours: the calls' arguments and errors, and objects of the library's own classes. Other
    threads of the process (earlier tests') may leave cycles of their own meanwhile.
    """
    found: list[object] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage, to be counted
    try:
        yield found
        gc.collect()
        found.extend(
            item
            for item in gc.garbage
            if isinstance(item, (Payload, Failure)) or type(item).__module__.startswith("otel_resilience")
        )
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _garbage_per_case(case: str, driver: str) -> list[object]:
    clock = FakeClock()
    chosen = _cases(clock)[case]
    sync = chosen.sync
    if driver == "sync" and sync is not None:
        for _ in range(2):  # what a first call makes once (a key's policy, a breaker's cell)
            with contextlib.suppress(Exception):
                sync(Payload())
        with _collector_off() as found:
            for _ in range(CALLS):
                with contextlib.suppress(Exception):
                    sync(Payload())
        return found

    async def measure() -> list[object]:
        for _ in range(2):
            with contextlib.suppress(Exception):
                await chosen.call(Payload())
        with _collector_off() as found:
            for _ in range(CALLS):
                with contextlib.suppress(Exception):
                    await chosen.call(Payload())
        return found

    return asyncio.run(measure())


@pytest.mark.parametrize("sdk", [False, True], ids=["no-sdk", "sdk"])
@pytest.mark.parametrize(("case", "driver"), CASES)
def test_a_call_leaves_nothing_for_the_cycle_collector(case: str, driver: str, sdk: bool) -> None:
    """No cycle holds the call's error, its frames or its arguments, with or without the SDK."""
    with instrumented() if sdk else contextlib.nullcontext():
        found = _garbage_per_case(case, driver)
    assert [type(item).__name__ for item in found] == []


async def test_a_fallback_function_that_failed_is_let_go_once_the_next_one_answered(driver: str) -> None:
    """MULTIPLE_ATTEMPTS: the error of a fallback function that failed before another answered is
    freed by reference counting as the call returns, and so is the call's argument.

    The driver that ran the functions kept the last one's call in a local of its frame, which that
    error's traceback holds, and the call's state held the errors: a cycle.
    """
    errors: list[weakref.ref[Failure]] = []

    def recorded(p: Payload) -> str:
        error = Failure("the first fallback function failed")
        errors.append(weakref.ref(error))
        try:
            raise error
        finally:
            del error  # not bound by this frame, which its traceback holds (the test's own cycle)

    async def arecorded(p: Payload) -> str:
        return recorded(p)

    handler = FallbackHandler(
        FallbackConfig(
            strategy=FallbackStrategy.MULTIPLE_ATTEMPTS,
            fallback_functions=(recorded, ok) if driver == "sync" else (arecorded, aok),
        )
    )
    gc.collect()
    gc.disable()
    try:
        payload = Payload()
        argument = weakref.ref(payload)
        if driver == "sync":
            assert handler.execute_with_fallback_sync(fails, payload) == "ok"
        else:
            assert await handler.execute_with_fallback(afails, payload) == "ok"
        del payload
        assert errors[0]() is None
        assert argument() is None
    finally:
        gc.enable()
