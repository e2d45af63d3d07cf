"""A result the breaker's ``record_result`` judged a failure is the execution's failure, as any judged result.

``record_result`` is the policy's judgement of a returned value, as ``retry_on_result``,
``hedge_on_result`` and a fallback's ``handle_result`` are: the caller still gets the value, but
the execution is no success. Its outcome is ``failure`` (``error.type`` ``failed_result``) on
its span, in ``resilience.executions`` and in the statistics, and a ``CACHED_VALUE`` fallback
never keeps it as the last good value (a later failure is answered with a good one).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from opentelemetry.trace import StatusCode
from support import needs_task_cancelling

from otel_resilience import (
    MISSING,
    CircuitBreaker,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    Jitter,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

_ids = itertools.count()


def _server_error(status: int) -> bool:
    return status >= 500


class _Cache:
    """A sync in-memory cache service."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def _answers(*values: int | Exception) -> Callable[[], int]:
    """A function returning (or raising) ``values`` in turn."""
    left = iter(values)

    def call() -> int:
        value = next(left)
        if isinstance(value, Exception):
            raise value
        return value

    return call


async def _run(
    runner: Callable[..., Any], runner_sync: Callable[..., Any], driver: str, fn: Callable[[], int]
) -> Any:
    """Run ``fn`` once through ``runner`` (async) or ``runner_sync``, then let a background cache write land."""
    if driver == "sync":
        result = runner_sync(fn)
    else:

        async def call() -> int:
            return fn()

        result = await runner(call)
    for _ in range(3):  # an async cache write runs as a task of its own
        await asyncio.sleep(0)
    return result


def _async(fn: Callable[[], int]) -> Callable[[], Any]:
    """``fn`` as an async function."""

    async def call() -> int:
        return fn()

    return call


def _outcomes(otel: Any, policy: str) -> dict[str, int]:
    return {
        p.attributes[sc.OUTCOME]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes[sc.POLICY] == policy and p.value
    }


def _cached_config(name: str, cache: _Cache, **fields: Any) -> ResilienceConfig:
    return ResilienceConfig(
        name=name,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, record_result=_server_error),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=cache
        ),
        **fields,
    )


async def test_a_result_the_breaker_judged_failed_is_never_cached_as_the_last_good_one(driver: str) -> None:
    """200, then 503 (the breaker's failure), then ConnectionError: answered with 200, not 503."""
    cache = _Cache()
    manager = ResilienceManager(clock=FakeClock())
    config = _cached_config(f"breaker-judged-cache-{next(_ids)}", cache)
    fn = _answers(200, 503, ConnectionError("down"))

    async def run() -> Any:
        return await _run(
            lambda f: manager.execute_with_resilience(f, config),
            lambda f: manager.execute_with_resilience_sync(f, config),
            driver,
            fn,
        )

    assert await run() == 200
    assert await run() == 503  # the caller still gets the result
    assert cache.data == {"k": 200}
    assert await run() == 200
    counts = manager.get_resilience_statistics()["policies"][config.name]
    assert (counts["successful"], counts["failed"], counts["fallback"]) == (1, 1, 1)
    breaker = manager.get_resilience_statistics()["circuit_breakers"][config.name]
    assert (breaker["total_successes"], breaker["total_failures"]) == (1, 2)


async def test_a_named_policy_counts_a_result_its_breaker_judged_failed(driver: str) -> None:
    """``manager.policy(name, config)``: its statistics count the 503 failed, and its cache keeps the 200."""
    cache = _Cache()
    manager = ResilienceManager(clock=FakeClock())
    name = f"breaker-judged-policy-{next(_ids)}"
    policy = manager.policy(name, _cached_config(name, cache))
    fn = _answers(503, 200, 503, ConnectionError("down"))
    results = [await _run(policy.execute, policy.execute_sync, driver, fn) for _ in range(4)]
    assert results == [503, 200, 503, 200]
    assert cache.data == {"k": 200}
    executions = policy.get_stats()["executions"]
    assert (executions["total"], executions["successful"], executions["failed"]) == (4, 1, 2)


async def test_the_execution_span_and_metrics_say_the_result_failed(otel: Any, driver: str) -> None:
    """Through the manager: ``failure`` with ``error.type`` ``failed_result``, status ERROR; a good one a success."""
    manager = ResilienceManager(clock=FakeClock())
    name = f"breaker-judged-spans-{next(_ids)}"
    config = _cached_config(name, _Cache())
    fn = _answers(503, 200)
    for _ in range(2):
        await _run(
            lambda f: manager.execute_with_resilience(f, config),
            lambda f: manager.execute_with_resilience_sync(f, config),
            driver,
            fn,
        )
    assert _outcomes(otel, name) == {"failure": 1, "success": 1}
    failed, succeeded = otel.spans(name)
    assert failed.attributes[sc.OUTCOME] == "failure"
    assert failed.attributes[sc.ERROR_TYPE] == sc.FAILED_RESULT
    assert failed.status.status_code is StatusCode.ERROR
    assert succeeded.attributes[sc.OUTCOME] == "success"
    durations = [
        p.attributes.get(sc.ERROR_TYPE)
        for p in otel.points(sc.EXECUTION_DURATION)
        if p.attributes[sc.POLICY] == name
    ]
    assert sorted(durations, key=str) == [None, sc.FAILED_RESULT]  # 'None' < 'failed_result'


async def test_a_standalone_breaker_counts_a_result_it_judged_failed(otel: Any, driver: str) -> None:
    """``breaker.call`` / ``call_sync``: the 503 is returned, and its execution is a failure."""
    name = f"breaker-judged-alone-{next(_ids)}"
    breaker = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=5, record_result=_server_error))
    fn = _answers(503, 200)
    assert await _run(breaker.call, breaker.call_sync, driver, fn) == 503
    assert await _run(breaker.call, breaker.call_sync, driver, fn) == 200
    assert _outcomes(otel, name) == {"failure": 1, "success": 1}
    failed, succeeded = otel.spans(name)
    assert (failed.attributes[sc.OUTCOME], failed.attributes[sc.ERROR_TYPE]) == ("failure", sc.FAILED_RESULT)
    assert succeeded.attributes[sc.OUTCOME] == "success"


async def test_a_disabled_breaker_still_judges_the_result(otel: Any, driver: str) -> None:
    """``disable()`` stops the rejections, not the judgement: the result is still a failure of the dependency."""
    name = f"breaker-judged-disabled-{next(_ids)}"
    breaker = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=1, record_result=_server_error))
    breaker.disable()
    assert await _run(breaker.call, breaker.call_sync, driver, _answers(503)) == 503
    assert _outcomes(otel, name) == {"failure": 1}


async def test_a_retry_that_accepts_what_the_breaker_judged_failed_does_not_recover(driver: str) -> None:
    """A ConnectionError retried, then a 503 the breaker judged failed: the execution failed, not recovered."""
    manager = ResilienceManager(clock=FakeClock())
    config = _cached_config(
        f"breaker-judged-retry-{next(_ids)}",
        _Cache(),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=Jitter.NONE),
    )
    result = await _run(
        lambda f: manager.execute_with_resilience(f, config),
        lambda f: manager.execute_with_resilience_sync(f, config),
        driver,
        _answers(ConnectionError("down"), 503),
    )
    assert result == 503
    counts = manager.get_resilience_statistics()["policies"][config.name]
    assert (counts["failed"], counts["successful_after_failure"]) == (1, 0)


async def test_a_retry_of_what_the_breaker_judged_failed_recovers_with_a_good_result(driver: str) -> None:
    """The judgement is the attempt's: a later attempt whose result is good recovers the execution, and is cached."""
    cache = _Cache()
    manager = ResilienceManager(clock=FakeClock())
    config = _cached_config(
        f"breaker-judged-retried-{next(_ids)}",
        cache,
        retry_policy=RetryPolicy(
            max_attempts=2, initial_delay=0.0, jitter=Jitter.NONE, retry_on_result=_server_error
        ),
    )
    result = await _run(
        lambda f: manager.execute_with_resilience(f, config),
        lambda f: manager.execute_with_resilience_sync(f, config),
        driver,
        _answers(503, 200),
    )
    assert result == 200
    assert cache.data == {"k": 200}
    counts = manager.get_resilience_statistics()["policies"][config.name]
    assert (counts["failed"], counts["successful_after_failure"]) == (0, 1)


async def test_a_hedged_attempts_result_the_breaker_judged_failed_ends_the_race_unless_hedge_on_result_rejects_it(
    otel: Any,
) -> None:
    """Hedging's own ``hedge_on_result`` decides which result ends the race (Polly's ``ShouldHandle``).

    As a retry runs the call again only if its ``retry_on_result`` rejects the value too, a
    hedging starts the next attempt only if its ``hedge_on_result`` rejects it: without it, the
    503 the breaker counted a failure is the answer (the execution a failure); with it, the hedge
    runs and its 200 recovers the execution.
    """
    manager = ResilienceManager(clock=FakeClock())
    outcomes = {}
    for rejecting in (None, _server_error):
        name = f"breaker-judged-hedged-{next(_ids)}"
        config = ResilienceConfig(
            name=name,
            circuit_breaker=CircuitBreakerConfig(failure_threshold=5, record_result=_server_error),
            hedging=HedgingConfig(mode="fallback", max_attempts=2, hedge_on_result=rejecting),
        )
        handle = manager.policy(name, config)
        result = await handle.execute(_async(_answers(503, 200)))
        outcomes[rejecting] = (result, _outcomes(otel, name), handle.get_stats()["hedging"]["hedges"])
    assert outcomes[None] == (503, {"failure": 1}, 0)
    assert outcomes[_server_error] == (200, {"recovered": 1}, 1)


@needs_task_cancelling
async def test_a_judged_result_a_cancelled_call_returned_is_still_a_failed_result(otel: Any) -> None:
    """The call swallowed its task's cancellation and returned a 503: no breaker failure, but no success either."""
    name = f"breaker-judged-swallowed-{next(_ids)}"
    breaker = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=1, record_result=_server_error))
    started = asyncio.Event()

    async def swallowing() -> int:
        started.set()
        try:
            await asyncio.sleep(60.0)
        except asyncio.CancelledError:
            return 503
        return 200

    task = asyncio.ensure_future(breaker.call(swallowing))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    assert await task == 503
    stats = breaker.get_stats()
    assert (stats["state"], stats["total_failures"]) == ("closed", 0)
    assert _outcomes(otel, name) == {"failure": 1}
