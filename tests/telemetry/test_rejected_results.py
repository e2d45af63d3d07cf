"""Executions that return a result their policy judged a failure: counted and traced as ``failure``.

A retry whose ``retry_on_result`` rejects every result returns the last one when attempts run
out; a hedging whose ``hedge_on_result`` rejects every attempt's result returns the original's.
The caller gets the result, but the policy judged it a failure: the execution's outcome is
``failure`` in ``resilience.executions``, on its span and in the manager's statistics, so an
error-ratio alert sees it (as the HTTP integrations' 503 returned after the retries ran out).
"""

from __future__ import annotations

import itertools
from typing import Any

from opentelemetry.trace import StatusCode

from otel_resilience import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.hedging import Hedging, HedgingConfig
from otel_resilience.patterns.retry import Jitter, Retry, RetryPolicy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

_ids = itertools.count()


def _policy(attempts: int = 3, **fields: Any) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, initial_delay=0.1, jitter=Jitter.NONE, **fields)


def _outcomes(otel: Any, policy: str) -> dict[str, int]:
    return {
        p.attributes[sc.OUTCOME]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes[sc.POLICY] == policy and p.value
    }


async def _run(runner: Any, driver: str, results: list[str]) -> Any:
    values = iter(results)
    if driver == "sync":
        return runner.execute_sync(lambda: next(values))

    async def call() -> str:
        return next(values)

    return await runner.execute(call)


async def test_a_retry_that_rejects_every_result_ends_in_failure(otel: Any, driver: str) -> None:
    """The last result is returned; the execution counts as a failure, its span is an error."""
    retry = Retry("pending-only", _policy(retry_on_result=lambda r: r == "pending"), clock=FakeClock())
    assert await _run(retry, driver, ["pending"] * 3) == "pending"
    assert _outcomes(otel, "pending-only") == {"failure": 1}
    span = otel.span("pending-only")
    assert span.attributes[sc.OUTCOME] == "failure"
    assert span.status.status_code is StatusCode.ERROR


async def test_a_retry_that_accepts_a_later_result_recovered(otel: Any, driver: str) -> None:
    """A result accepted after rejected ones is a recovery, as before."""
    retry = Retry("pending-then-ready", _policy(retry_on_result=lambda r: r == "pending"), clock=FakeClock())
    assert await _run(retry, driver, ["pending", "pending", "ready"]) == "ready"
    assert _outcomes(otel, "pending-then-ready") == {"recovered": 1}


async def test_the_manager_counts_a_rejected_last_result_as_failed(otel: Any, driver: str) -> None:
    """The manager's statistics agree with the metric: failed, not successful after failure."""
    manager = ResilienceManager(clock=FakeClock())
    config = ResilienceConfig(
        name=f"rejected-{next(_ids)}", retry_policy=_policy(retry_on_result=lambda r: r == "x")
    )
    if driver == "sync":
        assert manager.execute_with_resilience_sync(lambda: "x", config) == "x"
    else:

        async def call() -> str:
            return "x"

        assert await manager.execute_with_resilience(call, config) == "x"
    counts = manager.get_resilience_statistics()["policies"][config.name]
    assert (counts["failed"], counts["successful"], counts["successful_after_failure"]) == (1, 0, 0)
    assert _outcomes(otel, config.name) == {"failure": 1}


async def test_a_hedging_that_rejects_every_result_ends_in_failure(otel: Any) -> None:
    """The original's result is returned; the execution counts as a failure."""
    hedging = Hedging(
        "hedged-bad",
        HedgingConfig(mode="fallback", max_attempts=2, hedge_on_result=lambda r: r == "bad"),
        clock=FakeClock(),
    )

    async def bad() -> str:
        return "bad"

    assert await hedging.call(bad) == "bad"
    assert _outcomes(otel, "hedged-bad") == {"failure": 1}
    assert otel.span("hedged-bad").attributes[sc.OUTCOME] == "failure"


async def test_a_hedging_whose_hedge_answers_acceptably_recovered(otel: Any) -> None:
    """The original's rejected result, then a hedge's good one: recovered, as before."""
    hedging = Hedging(
        "hedged-good",
        HedgingConfig(mode="fallback", max_attempts=2, hedge_on_result=lambda r: r == "bad"),
        clock=FakeClock(),
    )
    results = iter(["bad", "good"])

    async def call() -> str:
        return next(results)

    assert await hedging.call(call) == "good"
    assert _outcomes(otel, "hedged-good") == {"recovered": 1}


async def test_a_retry_around_hedging_that_rejects_every_result_ends_in_failure(otel: Any) -> None:
    """A policy's retry around hedging that rejects every result: the execution failed."""
    manager = ResilienceManager(clock=FakeClock())
    config = ResilienceConfig(
        name=f"hedged-retry-{next(_ids)}",
        retry_policy=_policy(retry_on_result=lambda r: r == "bad"),
        hedging=HedgingConfig(mode="fallback", max_attempts=2),
    )

    async def bad() -> str:
        return "bad"

    assert await manager.execute_with_resilience(bad, config) == "bad"
    assert _outcomes(otel, config.name) == {"failure": 1}


async def test_a_further_attempt_after_a_rejected_result_may_recover(otel: Any, driver: str) -> None:
    """An outer retry runs again after an inner one gave up on a result: an accepted answer recovered."""
    clock = FakeClock()
    inner = Retry("inner", _policy(1, retry_on_result=lambda r: r == "pending"), clock=clock)
    outer = Retry("outer", _policy(3, retry_on_result=lambda r: r == "pending"), clock=clock)
    pipeline = (
        PipelineBuilder("nested").add(outer.as_strategy("nested")).add(inner.as_strategy("nested")).build()
    )
    assert await _run(pipeline, driver, ["pending", "ready"]) == "ready"
    assert _outcomes(otel, "nested") == {"recovered": 1}


async def test_a_recovery_rerun_whose_result_is_rejected_is_a_failed_recovery(otel: Any, driver: str) -> None:
    """A recovery re-run that runs the retry again does not turn its rejected result into a success.

    The execution is a failure, and the recovery's own count follows it: ``resilience.recovery.attempts`` and the system's statistics (the recovery rate its alert
    reads) count it ``failure``, as the execution is.
    """
    clock = FakeClock()
    recovery = ErrorRecoverySystem(name=f"rerun-judged-{next(_ids)}", clock=clock)
    recovery.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    manager = ResilienceManager(clock=clock, recovery_system=recovery)
    config = ResilienceConfig(
        name=f"rerun-judged-{next(_ids)}",
        retry_policy=_policy(2, retry_on=(KeyError,), retry_on_result=lambda r: r == "pending"),
        enable_recovery=True,
    )
    calls = iter([ConnectionError("down"), "pending", "pending"])

    def step() -> str:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    if driver == "sync":
        assert manager.execute_with_resilience_sync(step, config) == "pending"
    else:

        async def call() -> str:
            return step()

        assert await manager.execute_with_resilience(call, config) == "pending"
    attempts = {
        p.attributes[sc.RECOVERY_RESULT]: p.value
        for p in otel.points(sc.RECOVERY_ATTEMPTS)
        if p.attributes[sc.POLICY] == config.name and p.value
    }
    assert attempts == {"failure": 1}
    counts = recovery.get_stats()
    assert (counts["successful_recoveries"], counts["failed_recoveries"]) == (0, 1)
    assert _outcomes(otel, config.name) == {"failure": 1}


async def test_a_rejected_result_has_an_error_type_of_its_own(otel: Any, driver: str) -> None:
    """No exception names the failure: ``error.type`` is ``failed_result``, not the unknown ``_OTHER``.

    On the execution span, the execution's duration, and the attempt whose result was rejected.
    """
    retry = Retry("judged-type", _policy(2, retry_on_result=lambda r: r == "pending"), clock=FakeClock())
    assert await _run(retry, driver, ["pending"] * 2) == "pending"
    span = otel.span("judged-type")
    assert span.attributes[sc.ERROR_TYPE] == "failed_result"
    (attempt,) = otel.spans("judged-type" + sc.ATTEMPT_SPAN_SUFFIX)
    assert attempt.attributes[sc.ERROR_TYPE] == "failed_result"
    durations = [
        p.attributes.get(sc.ERROR_TYPE)
        for p in otel.points(sc.EXECUTION_DURATION)
        if p.attributes[sc.POLICY] == "judged-type"
    ]
    assert durations == ["failed_result"]
    attempts = {
        p.attributes.get(sc.ERROR_TYPE)
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == "judged-type"
    }
    assert attempts == {"failed_result"}
