"""A function that does not fit the driver, under a hedging or a recovery: a failed attempt, never a cancellation.

The driver refuses it (a plain function given to the async API, a coroutine function given to
the sync one, a hedging action that returns no awaitable) and the pipeline raises a
``TypeError``. The hedging counts the execution ``failed`` (never ``cancelled``) and starts no
hedge after the refused attempt; a recovery counts the refused re-run as a failed recovery. In
both, the attempt that was refused ends ``failure`` with ``error.type`` ``TypeError`` in its
metric and its span, as the execution does; the caller gets the driver's ``TypeError`` unchanged.
(The retry's side: tests/test_retry_wrong_driver.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from otel_support import Otel, attempts_ended
from support import refused_unchanged

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.engine.events import Event, RecoveryAttempted, error_type_name
from otel_resilience.patterns.hedging import Hedging, HedgingConfig
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.retry import Jitter, RetryPolicy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder, FakeClock

COROUTINE_IN_SYNC = "fn returned a coroutine, which the sync API cannot await"
PLAIN_IN_ASYNC = "fn must return an awaitable for the async API"
FAILED = ("failure", "TypeError")


async def coroutine_function() -> str:
    return "never awaited"


def plain_function() -> str:
    return "not awaitable"


def _attempt_spans(otel: Otel, pattern: str) -> list[tuple[int, str, str | None, StatusCode]]:
    """The attempt spans of ``pattern``: attempt number, outcome, error type and status, in order."""
    return sorted(
        (
            span.attributes[sc.ATTEMPT],
            span.attributes[sc.OUTCOME],
            span.attributes.get(sc.ERROR_TYPE),
            span.status.status_code,
        )
        for span in otel.spans()
        if span.attributes is not None
        and span.attributes.get(sc.PATTERN) == pattern
        and sc.ATTEMPT in span.attributes
    )


def _execution_failed(otel: Otel, name: str) -> None:
    """The execution span of policy ``name`` says failure with ``TypeError``."""
    (span,) = [s for s in otel.spans(name) if s.attributes is not None and sc.ATTEMPT not in s.attributes]
    assert span.attributes is not None
    assert (span.attributes[sc.OUTCOME], span.attributes[sc.ERROR_TYPE]) == FAILED
    assert span.status.status_code is StatusCode.ERROR


def _hedging_failed(stats: Any, hedges: int = 0) -> None:
    """The execution counted once, as failed (no acceptable outcome), never as cancelled."""
    assert (stats["executions"], stats["failed"], stats["cancelled"]) == (1, 1, 0), stats
    assert (stats["original_wins"], stats["hedge_wins"], stats["hedges"]) == (0, 0, hedges), stats


# -- hedging ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [HedgingConfig(delay=0.1), HedgingConfig(mode="parallel", max_attempts=3)],
    ids=["latency", "parallel"],
)
async def test_a_plain_function_given_to_hedging_call_is_a_failed_attempt_not_a_cancelled_one(
    config: HedgingConfig, clock: FakeClock, otel: Otel
) -> None:
    """A plain function given to ``Hedging.call``: a failed attempt and execution, and no hedge after it."""
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return "charged"

    hedging = Hedging("refused", config, clock=clock)
    with pytest.raises(TypeError) as caught:
        await hedging.call(charge)  # type: ignore[arg-type]
    refused_unchanged(caught.value, PLAIN_IN_ASYNC)
    assert calls == [1]  # no hedge raced the usage error again
    _hedging_failed(hedging.get_stats())
    assert attempts_ended(otel, "hedging", "refused") == {FAILED: 1}
    assert _attempt_spans(otel, "hedging") == [(1, "failure", "TypeError", StatusCode.ERROR)]
    _execution_failed(otel, "refused")


async def test_a_hedging_action_that_returns_no_awaitable_is_a_failed_hedge_not_a_cancelled_one(
    clock: FakeClock, otel: Otel
) -> None:
    """The hedge that called ``actions[0]`` was refused: the execution failed, the 3rd attempt never started."""

    def secondary() -> str:
        return "sync value"

    async def failing() -> str:
        raise ConnectionError("down")

    config = HedgingConfig(mode="fallback", max_attempts=3, actions=(secondary,))
    hedging = Hedging("refused-action", config, clock=clock)
    with pytest.raises(TypeError) as caught:
        await hedging.call(failing)
    refused_unchanged(caught.value, "HedgingConfig.actions[0]")
    _hedging_failed(hedging.get_stats(), hedges=1)
    down = error_type_name(ConnectionError())
    assert attempts_ended(otel, "hedging", "refused-action") == {("failure", down): 1, FAILED: 1}
    spans = _attempt_spans(otel, "hedging")
    assert spans == [(1, "failure", down, StatusCode.ERROR), (2, "failure", "TypeError", StatusCode.ERROR)]
    _execution_failed(otel, "refused-action")


async def test_a_managers_hedging_policy_given_a_plain_function_counts_a_failure(
    manager: ResilienceManager, clock: FakeClock, otel: Otel
) -> None:
    """Under its retry too: the retry counts an error it does not retry, the hedging a failed execution."""
    policy = RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=Jitter.NONE)
    config = ResilienceConfig(name="policy-refused", hedging=HedgingConfig(delay=0.1), retry_policy=policy)
    with pytest.raises(TypeError) as caught:
        await manager.execute_with_resilience(plain_function, config)  # type: ignore[arg-type]
    refused_unchanged(caught.value, PLAIN_IN_ASYNC)
    links = {s.kind: s for s in manager.pipeline_for(config, "policy-refused").strategies}
    _hedging_failed(links["hedging"].get_stats())  # type: ignore[attr-defined]
    retried = links["retry"]._core.stats.as_dict()  # type: ignore[attr-defined]
    assert (retried["non_retryable"], retried["cancelled"], retried["retries"]) == (1, 0, 0), retried
    assert attempts_ended(otel, "hedging", "policy-refused") == {FAILED: 1}
    assert [s[1:3] for s in _attempt_spans(otel, "hedging")] == [FAILED]
    _execution_failed(otel, "policy-refused")


# -- recovery --------------------------------------------------------------------------------------


def _recovery(clock: FakeClock, name: str) -> ErrorRecoverySystem:
    system = ErrorRecoverySystem(name, clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=3, delay=0.0)
    )
    return system


def _recovery_failed(system: ErrorRecoverySystem, recorder: EventRecorder) -> None:
    """One RETRY recovery, failed: its re-run was refused (never an uncounted cancellation)."""
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1), stats
    assert stats["by_strategy"]["retry"] == {"attempts": 1, "successful": 0, "failed": 1}
    down = error_type_name(ConnectionError())
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [RecoveryAttempted("retry", "failure", down)]


async def test_a_recovery_rerun_the_driver_refuses_is_a_failed_recovery_not_a_cancelled_one(
    driver: str, clock: FakeClock, otel: Otel, recorder: EventRecorder
) -> None:
    """The function fails, then returns what the driver refuses: the re-run failed, no further one runs."""
    calls: list[int] = []

    def fn() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return coroutine_function() if driver == "sync" else "not awaitable"

    system = _recovery(clock, "rerun-refused")
    with pytest.raises(TypeError) as caught:
        if driver == "sync":
            system.execute_sync(fn)
        else:
            await system.execute(fn)
    refused_unchanged(caught.value, COROUTINE_IN_SYNC if driver == "sync" else PLAIN_IN_ASYNC)
    assert len(calls) == 2
    _recovery_failed(system, recorder)
    assert attempts_ended(otel, "recovery", "rerun-refused") == {FAILED: 1}
    assert _attempt_spans(otel, "recovery") == [(2, "failure", "TypeError", StatusCode.ERROR)]
    _execution_failed(otel, "rerun-refused")


async def test_recover_from_error_with_a_plain_operation_is_a_failed_recovery(
    clock: FakeClock, otel: Otel, recorder: EventRecorder
) -> None:
    """``recover_from_error`` with a plain operation to re-run: a failed recovery, not a cancelled one."""
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        return "not awaitable"

    system = _recovery(clock, "caught-refused")
    with pytest.raises(TypeError) as caught:
        await system.recover_from_error(ConnectionError("caught"), {"operation": operation})
    refused_unchanged(caught.value, PLAIN_IN_ASYNC)
    assert len(calls) == 1
    _recovery_failed(system, recorder)
    assert attempts_ended(otel, "recovery", "caught-refused") == {FAILED: 1}
