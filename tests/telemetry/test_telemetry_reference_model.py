"""What a policy emits, predicted from docs/telemetry.md alone, against the real SDK's exports.

A reference model reads a scenario (a named policy with some of a total timeout, a rate limiter,
a retry with an attempt timeout and ``retry_on_result``, a circuit breaker with
``record_result``, a fallback with ``handle_result``, a chaos latency link and, async only, a
hedging in fallback mode with ``hedge_on_result`` in place of the retry; a script of the
dependency's answers; a run of executions on one driver) and predicts, from the documented rules
only, every metric data point that moves (with its attributes and value), every span with its
attributes and status, and each span's events in order with their attributes: retries and their
give-ups (``max_attempts``, ``deadline``, ``not_retryable``), breaker trips, half-open probes and
the one alert of an outage, rejections, timeouts, fallbacks, chaos injections, hedges with their
denials and wins, and results the policy judged failed. Seeded random scenarios run through the library with the SDK's in-memory
exporter and reader, on a :class:`FakeClock` (no backoff takes real time), with the sync and the
async driver, and the two must agree exactly. Whether every documented name is emitted at all is
``test_emitted_conformance``'s question.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from otel_support import Otel, instrumented

from otel_resilience import (
    ChaosConfig,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

POLICY = "reference-model-orders"  # a name no other test gives its live patterns
DELAY = 0.5  # the retry's fixed backoff
LATENCY = 0.001  # the chaos link's injected delay (shorter than the attempt timeout)
ATTEMPT_TIMEOUT = 0.02  # the retry's attempt timeout: a "slow" answer takes SLOW, far longer
SLOW = 30.0
GAP = 1.5  # the time between two executions: an open breaker half-opens after two
TOTAL = 0.8  # the policy's total timeout: a second backoff would pass it (stop reason deadline)
RATE = 0.0001  # the rate limiter's permits per second: no permit comes back within a scenario
DEPENDENCY_ERROR = f"{__name__}.DependencyError"
CIRCUIT_OPEN = "otel_resilience.errors.CircuitOpenError"
RATE_LIMITED = "otel_resilience.errors.RateLimitedError"
TIMED_OUT = "otel_resilience.errors.OperationTimeoutError"
UNACCEPTED = "otel_resilience.errors.UnacceptedResultError"
FAILED_RESULT = "failed_result"


class DependencyError(Exception):
    """The dependency's own failure."""


@dataclass(frozen=True)
class Scenario:
    """A policy, the dependency's answers in order, how many executions, and the driver."""

    max_attempts: int | None  # a retry of that many attempts, or none
    failure_threshold: int | None  # a breaker opening after that many failures in a row, or none
    fallback: bool
    chaos: bool  # a chaos link delaying every run of the dependency
    burst: int | None  # a rate limiter admitting that many executions, or none
    total: float | None  # the policy's total timeout (then no answer is slow: see _answer)
    hedges: int | None  # a hedging (async only, in place of the retry) of that many attempts, or none
    # "ok": the dependency answers; "fail": it raises DependencyError; "bad": it returns a result
    # the policy's predicates reject (None); "slow": it is slower than the retry's attempt timeout.
    answers: tuple[str, ...]
    executions: int
    driver: str


def _scenario(rng: random.Random, driver: str) -> Scenario:
    hedges = rng.choice([None, 2, 3]) if driver == "async" else None
    return Scenario(
        max_attempts=rng.choice([None, 2, 3]) if hedges is None else None,
        failure_threshold=rng.choice([None, 2, 4]),
        fallback=rng.random() < 0.5,
        chaos=rng.random() < 0.3,
        burst=rng.choice([None, None, 2, 4]),
        total=rng.choice([None, TOTAL]),
        hedges=hedges,
        answers=tuple(rng.choices(["ok", "fail", "bad", "slow"], weights=[8, 8, 3, 1], k=24)),
        executions=rng.randint(1, 6),
        driver=driver,
    )


# --- the reference model: what the docs say is emitted -------------------------------------


Attributes = frozenset[tuple[str, Any]]


def _attrs(**values: Any) -> Attributes:
    return frozenset((key.replace("__", "."), value) for key, value in values.items() if value is not None)


@dataclass
class SpanModel:
    name: str
    attributes: dict[str, Any]
    error: bool
    events: list[tuple[str, Attributes]] = field(default_factory=list)


@dataclass
class Expected:
    metrics: dict[str, Counter[Attributes]] = field(default_factory=dict)
    spans: list[SpanModel] = field(default_factory=list)

    def add(self, metric: str, attributes: Attributes, amount: float = 1) -> None:
        self.metrics.setdefault(metric, Counter())[attributes] += amount  # type: ignore[assignment]


def _transition(
    span: SpanModel, expected: Expected, previous: str, state: str, reason: str, *, alert: bool = False
) -> None:
    """A breaker's state change: the event, its counter, and the alert of an outage's opening."""
    span.events.append(
        (
            "resilience.circuit_breaker.state_changed",
            _attrs(
                resilience__pattern="circuit_breaker",
                resilience__name=POLICY,
                resilience__circuit_breaker__previous_state=previous,
                resilience__circuit_breaker__state=state,
                resilience__circuit_breaker__transition_reason=reason,
                resilience__circuit_breaker__open_duration=OPEN_FOR if state == "open" else None,
            ),
        )
    )
    expected.add(
        "resilience.circuit_breaker.transitions",
        _attrs(
            resilience__name=POLICY,
            resilience__circuit_breaker__previous_state=previous,
            resilience__circuit_breaker__state=state,
            resilience__circuit_breaker__transition_reason=reason,
        ),
    )
    if not alert:  # one circuit_open alert per outage: re-opens raise none (docs/design.md)
        return
    span.events.append(
        (
            "resilience.alert.raised",
            _attrs(
                resilience__pattern="alerts",
                resilience__name="alerts",
                resilience__alert__kind="circuit_open",
                resilience__alert__severity="critical",
                resilience__alert__subject=POLICY,
                resilience__alert__summary=f"circuit breaker '{POLICY}' opened ({reason})",
            ),
        )
    )
    expected.add(
        "resilience.alerts",
        _attrs(
            resilience__name="alerts",
            resilience__alert__kind="circuit_open",
            resilience__alert__severity="critical",
            resilience__alert__subject=POLICY,
        ),
    )


OPEN_FOR = 2.0  # the breaker's open timeout: backoffs and slow answers let it half-open


def _rejected(span: SpanModel, expected: Expected, pattern: str, reason: str) -> None:
    """A call a breaker or rate limiter turned away: the event on the current span, the counter."""
    span.events.append(
        (
            "resilience.call.rejected",
            _attrs(
                resilience__pattern=pattern, resilience__name=POLICY, resilience__rejection__reason=reason
            ),
        )
    )
    expected.add(
        "resilience.rejections",
        _attrs(
            resilience__policy=POLICY,
            resilience__pattern=pattern,
            resilience__name=POLICY,
            resilience__rejection__reason=reason,
        ),
    )


@dataclass
class _State:
    """What outlives one execution: the dependency's script, the breaker, the limiter's permits."""

    answers: Any
    failures_in_row: int = 0
    breaker: str = "closed"
    opened_at: float = 0.0
    permits: int = 0
    now: float = 0.0  # the FakeClock's time
    returned_none: bool = False  # the last attempt returned the result the policy may judge a failure


def _attempt(
    scenario: Scenario, state: _State, span: SpanModel, expected: Expected
) -> tuple[str, str | None, str | None]:
    """One attempt: its outcome, error.type, and the error the dependency itself raised (if any)."""
    breaker = scenario.failure_threshold is not None
    if state.breaker == "open" and state.now - state.opened_at >= OPEN_FOR:
        state.breaker = "half_open"
        _transition(span, expected, "open", "half_open", "timeout_elapsed")
    if state.breaker == "open":
        _rejected(span, expected, "circuit_breaker", "circuit_open")
        expected.add(
            "resilience.circuit_breaker.calls",
            _attrs(resilience__name=POLICY, resilience__circuit_breaker__call_result="rejected"),
        )
        state.returned_none = False
        return "rejected", CIRCUIT_OPEN, None
    answer = _answer(scenario, next(state.answers))
    state.returned_none = answer == "bad"
    timed = scenario.max_attempts is not None  # only a retry has an attempt timeout
    if answer == "slow" and timed:
        outcome, error = "timeout", TIMED_OUT
    elif answer == "fail":
        outcome, error = "failure", DEPENDENCY_ERROR
    elif answer == "bad" and (timed or breaker or scenario.hedges):  # the predicates that judge results
        outcome, error = "failure", FAILED_RESULT
    else:
        outcome, error = "success", None
    if scenario.chaos:
        state.now += LATENCY
        span.events.append(
            (
                "resilience.chaos.injected",
                _attrs(
                    resilience__pattern="chaos",
                    resilience__name=POLICY,
                    resilience__chaos__kind="latency",
                    resilience__chaos__delay=LATENCY,
                ),
            )
        )
        expected.add(
            "resilience.chaos.injections",
            _attrs(resilience__policy=POLICY, resilience__name=POLICY, resilience__chaos__kind="latency"),
        )
    if answer == "slow":
        state.now += SLOW
    if outcome == "timeout":
        span.events.append(
            (
                "resilience.timeout.expired",
                _attrs(
                    resilience__pattern="timeout",
                    resilience__name=POLICY,
                    resilience__timeout__scope="attempt",
                    resilience__timeout__limit=ATTEMPT_TIMEOUT,
                ),
            )
        )
        expected.add(
            "resilience.timeouts",
            _attrs(
                resilience__policy=POLICY,
                resilience__pattern="timeout",
                resilience__name=POLICY,
                resilience__timeout__scope="attempt",
            ),
        )
    if breaker:
        assert scenario.failure_threshold is not None
        failed = error is not None and (error != FAILED_RESULT or answer == "bad")
        expected.add(
            "resilience.circuit_breaker.calls",
            _attrs(
                resilience__name=POLICY,
                resilience__circuit_breaker__call_result="failure" if failed else "success",
            ),
        )
        if state.breaker == "half_open":
            if failed:
                state.breaker, state.opened_at = "open", state.now
                _transition(span, expected, "half_open", "open", "probe_failed")
            else:
                state.breaker, state.failures_in_row = "closed", 0
                _transition(span, expected, "half_open", "closed", "probe_succeeded")
        else:
            state.failures_in_row = state.failures_in_row + 1 if failed else 0
            if state.failures_in_row >= scenario.failure_threshold:
                state.breaker, state.opened_at = "open", state.now
                _transition(span, expected, "closed", "open", "failure_threshold", alert=True)
    return outcome, error, error if error != FAILED_RESULT else None


def _answer(scenario: Scenario, answer: str) -> str:
    """The dependency's answer: under a total timeout, a slow one is on time (see below).

    The async driver's deadlines fire on the loop's own clock, not the fake one: a slow answer
    past a total timeout would end differently in the two drivers for the test's sake only.
    """
    if answer == "slow" and (scenario.total is not None or scenario.hedges is not None):
        return "ok"  # nor under a hedging, which has no attempt timeout
    return answer


def _retry_event(span: SpanModel, name: str, number: int, error: str | None, **more: Any) -> None:
    span.events.append(
        (
            name,
            _attrs(
                resilience__pattern="retry",
                resilience__name=POLICY,
                resilience__attempt=number,
                error__type=None if error == FAILED_RESULT else error,  # the retry's events name no result
                **more,
            ),
        )
    )


def _race(
    scenario: Scenario, state: _State, execution: SpanModel, expected: Expected
) -> tuple[str, str | None, bool]:
    """A hedging's race in fallback mode: each attempt after a failed one; outcome, error.type, a hedge won."""
    assert scenario.hedges is not None
    reported: list[tuple[str, Attributes]] = []  # the race's events, reported as it ends
    ran: list[tuple[SpanModel, str, str | None]] = []  # the attempts past the policy's own breaker
    hedging = {"resilience__pattern": "hedging", "resilience__name": POLICY}
    counted = {"resilience__policy": POLICY, "resilience__name": POLICY}
    for number in range(1, scenario.hedges + 1):
        kind = "original" if number == 1 else "hedge"
        span = SpanModel(f"{POLICY} attempt", {}, error=False)
        outcome, error, _ = _attempt(scenario, state, span, expected)
        span.attributes = {
            "resilience.policy": POLICY,
            "resilience.pattern": "hedging",
            "resilience.name": POLICY,
            "resilience.attempt": number,
            "resilience.attempt.type": kind,
            "resilience.outcome": outcome,
            **({"error.type": error} if error else {}),
        }
        span.error = error is not None
        expected.spans.append(span)
        expected.add(
            "resilience.attempt.duration",
            _attrs(
                resilience__policy=POLICY,
                resilience__pattern="hedging",
                resilience__name=POLICY,
                resilience__outcome=outcome,
                error__type=error,
                resilience__attempt__type=kind,
            ),
        )
        if outcome == "rejected":  # this hedge, or the one due after a rejected original, is denied
            if number > 1 or scenario.hedges > 1:
                denial = {
                    "resilience__hedging__trigger": "failure",
                    "resilience__hedging__denied_by": "rejected",
                }
                execution.events.append(("resilience.hedging.hedge_denied", _attrs(**hedging, **denial)))
                expected.add("resilience.hedging.denied", _attrs(**counted, **denial))
            break
        ran.append((span, outcome, error))
        if number > 1:
            reported.append(
                (
                    "resilience.hedging.started",
                    _attrs(**hedging, resilience__attempt=number, resilience__hedging__trigger="failure"),
                )
            )
            expected.add(
                "resilience.hedging.hedges", _attrs(**counted, resilience__hedging__trigger="failure")
            )
        if outcome == "success":
            break
    execution.events += reported
    if not ran:
        return "rejected", CIRCUIT_OPEN, False
    span, outcome, error = ran[-1]
    if outcome != "success":  # no attempt answered: the caller gets the original's outcome
        outcome, error = ran[0][1], ran[0][2]
    kind = span.attributes["resilience.attempt.type"]
    if outcome == "success" and len(ran) > 1:
        span.events.append(
            (
                "resilience.hedging.won",
                _attrs(
                    **hedging,
                    resilience__attempt=span.attributes["resilience.attempt"],
                    resilience__attempt__type=kind,
                ),
            )
        )
        expected.add("resilience.hedging.wins", _attrs(**counted, resilience__attempt__type=kind))
    state.returned_none = error == FAILED_RESULT
    return outcome, error, outcome == "success" and kind == "hedge"


def predict(scenario: Scenario) -> Expected:
    """What docs/telemetry.md says the scenario emits."""
    expected = Expected()
    state = _State(iter(scenario.answers), permits=scenario.burst or 0)
    attempts = scenario.max_attempts or 1
    for _ in range(scenario.executions):
        execution = SpanModel(POLICY, {}, error=False)
        spans = [execution]
        outcome, error = "success", None
        dependency_error: str | None = None
        retried = False
        admitted = True
        state.returned_none = False
        started = state.now
        if scenario.burst is not None:
            admitted = state.permits > 0
            state.permits -= admitted
            expected.add(
                "resilience.rate_limiter.permits",
                _attrs(
                    resilience__name=POLICY,
                    resilience__rate_limiter__permit_result="immediate" if admitted else "rejected",
                ),
            )
            if not admitted:
                _rejected(execution, expected, "rate_limiter", "rate_limited")
                outcome, error = "rejected", RATE_LIMITED
        if admitted and scenario.hedges is not None:
            outcome, error, retried = _race(scenario, state, execution, expected)
        for number in range(1, attempts + 1 if admitted and scenario.hedges is None else 1):
            if number == 1:
                span = execution
            else:
                span = SpanModel(f"{POLICY} attempt", {}, error=False)
                spans.append(span)
            outcome, error, raised = _attempt(scenario, state, span, expected)
            if scenario.max_attempts is not None:
                expected.add(
                    "resilience.attempt.duration",
                    _attrs(
                        resilience__policy=POLICY,
                        resilience__pattern="retry",
                        resilience__name=POLICY,
                        resilience__outcome=outcome,
                        error__type=error,
                    ),
                )
            if number > 1:
                span.attributes = {
                    "resilience.policy": POLICY,
                    "resilience.pattern": "retry",
                    "resilience.name": POLICY,
                    "resilience.attempt": number,
                    "resilience.outcome": outcome,
                    **({"error.type": error} if error else {}),
                }
                span.error = error is not None
            if raised is not None:
                dependency_error = raised
            if outcome == "success" or scenario.max_attempts is None:
                break
            if outcome == "rejected":
                stop = "not_retryable"  # a rejection is not retried
            elif number == attempts:
                stop = "max_attempts"
            elif scenario.total is not None and started + scenario.total - state.now <= DELAY:
                stop = "deadline"  # the backoff would end past the deadline
            else:
                retried = True
                _retry_event(
                    execution,
                    "resilience.retry.scheduled",
                    number,
                    error,
                    resilience__retry__delay=DELAY,
                    resilience__retry__delay_source="strategy",
                )
                counted = None if error == FAILED_RESULT else error
                expected.add(
                    "resilience.retries",
                    _attrs(resilience__policy=POLICY, resilience__name=POLICY, error__type=counted),
                )
                expected.add(
                    "resilience.retry.delay", _attrs(resilience__policy=POLICY, resilience__name=POLICY)
                )
                state.now += DELAY
                continue
            if number > 1 or stop == "max_attempts":  # "an error not retried after a retry"
                _retry_event(
                    execution,
                    "resilience.retry.exhausted",
                    number,
                    error,
                    resilience__retry__stop_reason=stop,
                )
                expected.add(
                    "resilience.retry.exhausted",
                    _attrs(
                        resilience__policy=POLICY,
                        resilience__name=POLICY,
                        resilience__retry__stop_reason=stop,
                        error__type=None if error == FAILED_RESULT else error,
                    ),
                )
            break
        if outcome == "success" and retried:
            outcome = "recovered"
        elif scenario.fallback and (outcome != "success" or state.returned_none):
            if state.returned_none:  # the fallback's handle_result rejects the result it was given
                error = UNACCEPTED
            execution.events.append(
                (
                    "resilience.fallback.executed",
                    _attrs(
                        resilience__pattern="fallback",
                        resilience__name=POLICY,
                        resilience__fallback__strategy="default_value",
                        resilience__fallback__result="success",
                        error__type=error,
                    ),
                )
            )
            expected.add(
                "resilience.fallback.executions",
                _attrs(
                    resilience__policy=POLICY,
                    resilience__name=POLICY,
                    resilience__fallback__strategy="default_value",
                    resilience__fallback__result="success",
                    error__type=error,
                ),
            )
            outcome, error = "fallback", None
        execution.attributes = {
            "resilience.policy": POLICY,
            "resilience.pattern": "pipeline",
            "resilience.outcome": outcome,
            **({"error.type": error} if error else {}),
            **(
                {"resilience.dependency.error.type": dependency_error} if retried and dependency_error else {}
            ),
        }
        execution.error = error is not None
        expected.add(
            "resilience.executions",
            _attrs(resilience__policy=POLICY, resilience__pattern="pipeline", resilience__outcome=outcome),
        )
        expected.add(
            "resilience.execution.duration",
            _attrs(
                resilience__policy=POLICY,
                resilience__pattern="pipeline",
                resilience__outcome=outcome,
                error__type=error,
            ),
        )
        expected.spans += spans[1:] + spans[:1]  # the attempts end before their execution
        state.now += GAP
    return expected


# --- the library, through the SDK ----------------------------------------------------------


# Instruments the model does not predict: gauges of state, and series a policy holds at 0.
_UNMODELLED = {
    "resilience.circuit_breaker.state",
    "resilience.policy.keys",
    "resilience.policy.key_limit",
}


def _unaccepted(result: object) -> bool:
    return result is None


def _config(scenario: Scenario) -> ResilienceConfig:
    return ResilienceConfig(
        name=POLICY,
        retry_policy=(
            RetryPolicy(
                max_attempts=scenario.max_attempts,
                initial_delay=DELAY,
                multiplier=1.0,
                jitter="none",
                attempt_timeout=ATTEMPT_TIMEOUT,
                retry_on_result=_unaccepted,
            )
            if scenario.max_attempts is not None
            else None
        ),
        circuit_breaker=(
            CircuitBreakerConfig(
                failure_threshold=scenario.failure_threshold,
                timeout=OPEN_FOR,
                success_threshold=1,
                half_open_max_calls=1,
                record_result=_unaccepted,
            )
            if scenario.failure_threshold is not None
            else None
        ),
        fallback_config=(
            FallbackConfig(
                strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0, handle_result=_unaccepted
            )
            if scenario.fallback
            else None
        ),
        chaos=ChaosConfig(latency_rate=1.0, latency=LATENCY, seed=7) if scenario.chaos else None,
        hedging=(
            HedgingConfig(max_attempts=scenario.hedges, mode="fallback", hedge_on_result=_unaccepted)
            if scenario.hedges is not None
            else None
        ),
        rate_limiter=RateLimiterConfig(rate=RATE, burst=scenario.burst)
        if scenario.burst is not None
        else None,
        timeout=scenario.total,
    )


def _run(scenario: Scenario) -> ResilienceManager:
    """Run the scenario; the manager is returned so that its live counts are still exported."""
    clock = FakeClock()
    manager = ResilienceManager(clock=clock)
    policy = manager.policy(POLICY, _config(scenario))
    answers = iter(scenario.answers)

    def dependency() -> int | None:
        answer = _answer(scenario, next(answers))
        if answer == "fail":
            raise DependencyError("down")
        if answer == "slow":
            clock.advance(SLOW)  # the sync driver finds the attempt's deadline passed when it ends
        return None if answer == "bad" else 1

    async def adependency() -> int | None:
        answer = _answer(scenario, next(answers))
        if answer == "fail":
            raise DependencyError("down")
        if answer == "slow":
            clock.advance(SLOW)  # as in the sync driver; the await below is the loop's real time
        if answer == "slow" and scenario.max_attempts is not None:
            await asyncio.sleep(SLOW)  # cancelled by the attempt timeout, on the loop's own timer
        return None if answer == "bad" else 1

    async def run_async() -> None:
        for _ in range(scenario.executions):
            with contextlib.suppress(Exception):  # the answer is not under test, its telemetry is
                await policy.execute(adependency)
            clock.advance(GAP)

    if scenario.driver == "async":
        asyncio.run(run_async())
        return manager
    for _ in range(scenario.executions):
        with contextlib.suppress(Exception):  # as above
            policy.execute_sync(dependency)
        clock.advance(GAP)
    return manager


def _ours(attributes: dict[str, Any]) -> bool:
    return POLICY in (
        attributes.get("resilience.policy"),
        attributes.get("resilience.name"),
        attributes.get("resilience.alert.subject"),
    )


def _observed_metrics(otel: Otel) -> dict[str, Counter[Attributes]]:
    found: dict[str, Counter[Attributes]] = {}
    for name, metric in otel.metrics().items():
        if name in _UNMODELLED:
            continue
        for point in metric.data.data_points:
            if not _ours(dict(point.attributes)):
                continue  # a live pattern another test left (the instruments read every live one)
            value = point.value if hasattr(point, "value") else point.count
            if value:
                found.setdefault(name, Counter())[frozenset(point.attributes.items())] += value
    return found


def _observed_spans(otel: Otel) -> list[SpanModel]:
    return [
        SpanModel(
            span.name,
            dict(span.attributes or {}),
            span.status.status_code.name == "ERROR",
            [(event.name, frozenset((event.attributes or {}).items())) for event in span.events],
        )
        for span in otel.span_exporter.get_finished_spans()
    ]


def _check(scenario: Scenario) -> tuple[set[str], set[str]]:
    expected = predict(scenario)
    with instrumented() as otel:
        manager = _run(scenario)
        metrics = _observed_metrics(otel)
        spans = _observed_spans(otel)
        del manager
    assert metrics == expected.metrics, scenario
    assert len(spans) == len(expected.spans), scenario
    for index, (got, want) in enumerate(zip(spans, expected.spans, strict=True)):
        assert (got.name, got.attributes, got.error) == (want.name, want.attributes, want.error), (
            index,
            scenario,
        )
        assert got.events == want.events, (index, scenario)
    return set(metrics), {name for span in spans for name, _ in span.events}


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_seeded_scenarios_emit_what_the_docs_predict(driver: str) -> None:
    rng = random.Random(f"telemetry-model-{driver}")
    metrics: set[str] = set()
    events: set[str] = set()
    for _ in range(60):
        seen_metrics, seen_events = _check(_scenario(rng, driver))
        metrics |= seen_metrics
        events |= seen_events
    documented_metrics = {spec.name for spec in sc.INSTRUMENTS}
    documented_events = {spec.name for spec in sc.SPAN_EVENTS}
    assert metrics <= documented_metrics
    assert events <= documented_events


# --- an attempt that returned past an enclosing deadline, in a thread -----------------------


def _late_attempt_spans(
    config: ResilienceConfig, recovery: bool
) -> tuple[list[dict[str, Any]], Counter[Any]]:
    """Run ``fail``, then a re-run or retry that returns 30 s later, past the 1 s total timeout (sync).

    Returns the attempt spans' attributes and the attempt durations counted by (pattern, outcome, error.type).
    """
    from otel_resilience import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy  # noqa: PLC0415

    clock = FakeClock()
    system = ErrorRecoverySystem(clock=clock)
    if recovery:
        system.register_recovery_rule(
            DependencyError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.1)
        )
    answers = iter(["fail", "slow"])

    def dependency() -> int:
        if next(answers) == "fail":
            raise DependencyError("down")
        clock.advance(SLOW)  # it returns, past the policy's deadline
        return 1

    with instrumented() as otel:
        manager = ResilienceManager(clock=clock, recovery_system=system)
        policy = manager.policy(POLICY, config)
        with pytest.raises(OperationTimeoutError):
            policy.execute_sync(dependency)
        spans = [dict(span.attributes or {}) for span in otel.spans(f"{POLICY} attempt")]
        durations: Counter[Any] = Counter()
        for point in otel.points(sc.ATTEMPT_DURATION):
            attributes = dict(point.attributes)
            durations[(attributes[sc.PATTERN], attributes[sc.OUTCOME], attributes.get(sc.ERROR_TYPE))] += (
                point.count
            )
    return spans, durations


def test_a_recovery_rerun_returning_past_the_deadline_in_a_thread_ends_timeout() -> None:
    """docs/telemetry.md: a re-run an enclosing deadline ended is a ``timeout``, in both drivers."""
    config = ResilienceConfig(name=POLICY, timeout=1.0, enable_recovery=True)
    spans, durations = _late_attempt_spans(config, recovery=True)
    assert [(s[sc.PATTERN], s[sc.OUTCOME], s.get(sc.ERROR_TYPE)) for s in spans] == [
        ("recovery", "timeout", TIMED_OUT)
    ]
    assert durations == Counter({("recovery", "timeout", TIMED_OUT): 1})


def test_a_retry_attempt_returning_a_result_past_the_deadline_in_a_thread_is_its_retrys_success() -> None:
    """README ("Timeout"): sync code cannot be pre-empted, and a retry with no ``attempt_timeout``
    of its own has counted a late attempt that returned a result a success when its caller gets
    the timeout: its span and ``resilience.attempt.duration`` say ``success`` (the async driver's
    deadline cancels it: ``timeout``), the execution ends ``timeout`` (docs/telemetry.md).
    """
    config = ResilienceConfig(
        name=POLICY, timeout=1.0, retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.1, jitter="none")
    )
    spans, durations = _late_attempt_spans(config, recovery=False)
    assert [(s[sc.PATTERN], s[sc.OUTCOME], s.get(sc.ERROR_TYPE)) for s in spans] == [
        ("retry", "success", None)
    ]
    assert durations == Counter({("retry", "failure", DEPENDENCY_ERROR): 1, ("retry", "success", None): 1})
