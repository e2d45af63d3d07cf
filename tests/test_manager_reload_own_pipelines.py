"""A reload keeps what a key's breaker, bulkhead and rate limiter counted in their own pipelines.

A keyed policy's view hands out the key's instances (``view.rate_limiter``, ...), whose verbs,
``guard()`` and ``protect`` run through the instance's own one-link pipeline, exported in
``resilience.executions`` under the policy's name. A reload reconfigures the instances in place
and gives that pipeline a link built under the new config: its counts must go on where they
stopped (or the exported counter goes down, which a backend reads as a counter reset), and what
was made on the instance before the reload (a function its ``protect`` decorated, a guard) must
run under the new config, in the breaker's current core, not the one the reload retired.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from otel_support import Otel

from otel_resilience import (
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.errors import BulkheadTimeoutError, CircuitOpenError
from otel_resilience.manager.policy import KeyedPolicyView
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

RELOADS: dict[str, tuple[ResilienceConfig, ResilienceConfig, Callable[[KeyedPolicyView], Any]]] = {
    "rate_limiter": (
        ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1000.0, burst=1000)),
        ResilienceConfig(rate_limiter=RateLimiterConfig(rate=500.0, burst=1000)),
        lambda view: view.rate_limiter,
    ),
    "circuit_breaker": (
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5)),
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=6)),
        lambda view: view.circuit_breaker,
    ),
    "bulkhead": (
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=5)),
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=6)),
        lambda view: view.bulkhead,
    ),
}


def executions(otel: Otel, policy: str) -> int:
    """``resilience.executions`` of ``policy``, summed over its series (one collection)."""
    return sum(p.value for p in otel.points(sc.EXECUTIONS) if p.attributes.get(sc.POLICY) == policy)


def noop() -> str:
    return "ok"


@pytest.mark.parametrize("kind", RELOADS)
def test_a_reload_keeps_the_executions_of_a_key_instance_s_own_pipeline(
    otel: Otel, manager: ResilienceManager, kind: str
) -> None:
    """Calls through a key's own instance stay exported after a reload, and go on counting there."""
    name = f"own-pipeline-{kind}"
    first, second, instance_of = RELOADS[kind]
    policy = manager.policy(name, first)
    instance = instance_of(policy.for_key("tenant"))
    protected = instance.protect(noop)  # decorated before the reload
    for _ in range(3):
        assert instance.run_sync(noop) == "ok"
    assert protected() == "ok"
    with instance.guard() if kind != "bulkhead" else instance.slot():
        pass
    assert executions(otel, name) == 5

    manager.reconfigure(name, second)
    gc.collect()
    assert instance_of(policy.for_key("tenant")) is instance  # reconfigured in place
    assert executions(otel, name) == 5

    assert instance.run_sync(noop) == "ok"  # the pipeline, with its new link
    assert protected() == "ok"  # the same pipeline, held by the decorated function
    assert executions(otel, name) == 7
    del protected
    gc.collect()
    assert executions(otel, name) == 7


# ---------------------------------------------------------------- what was decorated before a reload


def decorated(instance: Any, driver: str, body: Callable[..., Any]) -> Callable[..., Any]:
    """``instance.protect`` of ``body`` (``"async"``: of an async function that calls it)."""
    if driver == "sync":
        return instance.protect(body)  # type: ignore[no-any-return]

    async def afn(*args: Any) -> Any:
        return body(*args)

    return instance.protect(afn)  # type: ignore[no-any-return]


async def call(driver: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a function :func:`decorated` made, awaiting it under the async driver."""
    result = fn(*args)
    return await result if driver == "async" else result


def outcome(fail: bool) -> str:
    if fail:
        raise RuntimeError("boom")
    return "ok"


def breaker_config(threshold: int) -> ResilienceConfig:
    return ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, timeout=1000.0))


async def test_a_function_decorated_before_a_reload_is_admitted_by_the_breaker_reset_after_it(
    manager: ResilienceManager, driver: str
) -> None:
    """The breaker a reload carried OPEN and an operator reset admits the decorated function's calls."""
    policy = manager.policy(f"decorated-open-{driver}", breaker_config(2))
    breaker = policy.for_key("k").circuit_breaker
    assert breaker is not None
    fn = decorated(breaker, driver, outcome)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await call(driver, fn, True)
    assert breaker.state is CircuitState.OPEN

    manager.reconfigure(f"decorated-open-{driver}", breaker_config(3))
    assert policy.for_key("k").circuit_breaker is breaker
    assert breaker.state is CircuitState.OPEN
    breaker.reset()

    assert await call(driver, fn, False) == "ok"  # was CircuitOpenError: the retired core, still open


async def test_a_function_decorated_before_a_reload_trips_the_breaker_after_it(
    manager: ResilienceManager, driver: str
) -> None:
    """Failures of the decorated function after a reload count in the breaker (its new threshold)."""
    policy = manager.policy(f"decorated-closed-{driver}", breaker_config(5))
    breaker = policy.for_key("k").circuit_breaker
    assert breaker is not None
    fn = decorated(breaker, driver, outcome)
    manager.reconfigure(f"decorated-closed-{driver}", breaker_config(3))

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await call(driver, fn, True)
    assert breaker.state is CircuitState.OPEN  # was CLOSED: the retired core moves no state
    with pytest.raises(CircuitOpenError):
        await call(driver, fn, False)
    assert breaker.get_stats()["total_failures"] == 3


async def test_a_guard_made_before_a_reload_judges_in_the_breaker_after_it(
    manager: ResilienceManager, driver: str
) -> None:
    """A guard kept across a reload (one block at a time) runs its blocks in the breaker's current core."""
    policy = manager.policy(f"guard-kept-{driver}", breaker_config(5))
    breaker = policy.for_key("k").circuit_breaker
    assert breaker is not None
    guard = breaker.guard()
    manager.reconfigure(f"guard-kept-{driver}", breaker_config(2))

    for _ in range(2):
        with pytest.raises(RuntimeError):
            if driver == "sync":
                with guard:
                    raise RuntimeError("boom")
            else:
                async with guard:
                    raise RuntimeError("boom")
    assert breaker.state is CircuitState.OPEN  # was CLOSED


async def test_a_standalone_breaker_reconfigured_in_place_judges_what_it_protected_before(
    driver: str,
) -> None:
    """The rule is the pattern's, not the manager's: a breaker's own reload moves its protected functions."""
    breaker = CircuitBreaker(f"standalone-reloaded-{driver}", CircuitBreakerConfig(failure_threshold=5))
    fn = decorated(breaker, driver, outcome)
    assert await call(driver, fn, False) == "ok"  # its own pipeline is built
    breaker._reconfigure(CircuitBreakerConfig(failure_threshold=1))

    with pytest.raises(RuntimeError):
        await call(driver, fn, True)
    assert breaker.state is CircuitState.OPEN


async def test_a_function_decorated_before_a_reload_waits_in_the_bulkhead_s_new_queue_timeout(
    manager: ResilienceManager, driver: str
) -> None:
    """A queued call of a function decorated before the reload waits for the new ``timeout``, not the old one.

    The old timeout is 2 s and the new one 0.02 s: the error names the timeout the call waited,
    so the outcome does not depend on how fast the machine is.
    """
    old = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=2.0))
    new = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.02))
    policy = manager.policy(f"decorated-bulkhead-{driver}", old)
    bulkhead = policy.for_key("k").bulkhead
    assert bulkhead is not None
    fn = decorated(bulkhead, driver, noop)
    manager.reconfigure(f"decorated-bulkhead-{driver}", new)

    with bulkhead.slot(), pytest.raises(BulkheadTimeoutError) as caught:
        await call(driver, fn)
    assert caught.value.timeout == 0.02
    assert await call(driver, fn) == "ok"


async def test_a_function_decorated_before_a_reload_waits_up_to_the_limiter_s_new_max_wait(
    manager: ResilienceManager, clock: FakeClock, driver: str
) -> None:
    """The limiter's new ``max_wait`` applies to a function decorated before the reload (on the fake clock)."""
    old = ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=0.0))
    new = ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0))
    policy = manager.policy(f"decorated-limiter-{driver}", old)
    limiter = policy.for_key("k").rate_limiter
    assert limiter is not None
    fn = decorated(limiter, driver, noop)
    assert await call(driver, fn) == "ok"  # the one permit
    manager.reconfigure(f"decorated-limiter-{driver}", new)

    start = clock.now()
    assert await call(driver, fn) == "ok"  # was RateLimitedError: the old link's max_wait of 0
    assert clock.now() - start == pytest.approx(1.0)


class _ReloadedWhileBuilt(CircuitBreaker):
    """A breaker reconfigured while its own pipeline is built for its first call (as by a racing reload)."""

    def __init__(self, name: str, config: CircuitBreakerConfig, reload_to: CircuitBreakerConfig) -> None:
        super().__init__(name, config)
        self.reload_to: CircuitBreakerConfig | None = reload_to

    def _build_pipeline(self, *, register: bool = True) -> Any:
        built = super()._build_pipeline(register=register)  # its link is on the core of the moment
        reload_to, self.reload_to = self.reload_to, None
        if reload_to is not None:
            self._reconfigure(reload_to)  # lands before the first call stores what it built
        return built


async def test_a_reload_while_the_first_call_builds_the_own_pipeline_is_not_lost(driver: str) -> None:
    """The own pipeline a first call built before a reload it raced is built again, on the new core."""
    breaker = _ReloadedWhileBuilt(
        f"reloaded-while-built-{driver}",
        CircuitBreakerConfig(failure_threshold=5),
        reload_to=CircuitBreakerConfig(failure_threshold=1),
    )
    fn = decorated(breaker, driver, outcome)  # protect builds the own pipeline: the reload lands then

    with pytest.raises(RuntimeError):
        await call(driver, fn, True)
    assert breaker.state is CircuitState.OPEN  # was CLOSED: the pipeline ran the retired core
