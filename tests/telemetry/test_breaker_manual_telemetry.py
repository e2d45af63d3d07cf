"""A breaker's manual controls in telemetry: every forced opening reported, with a finite open time."""

from __future__ import annotations

import math

import pytest
from opentelemetry import trace

from otel_resilience.patterns.alerts import AlertSystem, default_alert_system
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitState
from otel_resilience.telemetry import semconv as sc


@pytest.fixture
def alerts(clock):
    """The only alert system on the global hub (closed afterwards), so its alerts can be counted."""
    default_alert_system().close()
    system = AlertSystem(clock=clock, name="manual-alerts")
    yield system
    system.close()


def _changes(otel, span_name: str) -> list[dict[str, object]]:
    """The attributes of the state-change events of the span ``span_name``."""
    span = otel.span(span_name)
    return [dict(e.attributes) for e in span.events if e.name == sc.EV_STATE_CHANGED]


def _transitions(otel, name: str) -> dict[tuple[str, str, str], int]:
    points = otel.points(sc.CB_TRANSITIONS)
    return {
        (
            p.attributes[sc.CB_PREVIOUS_STATE],
            p.attributes[sc.CB_STATE],
            p.attributes[sc.CB_TRANSITION_REASON],
        ): p.value
        for p in points
        if p.attributes[sc.NAME] == name
    }


def test_forced_open_until_reset_reports_no_infinite_open_duration(otel, clock, alerts):
    """An opening until reset() has no length: the event leaves the attribute out, never ``inf``."""
    breaker = CircuitBreaker("until-reset", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    seen = []
    breaker.on_state_change(seen.append)
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("operator"):
        breaker.force_open()
    (change,) = _changes(otel, "operator")
    assert change[sc.CB_STATE] == "open"
    assert change[sc.CB_TRANSITION_REASON] == "forced"
    assert sc.CB_OPEN_DURATION not in change
    assert all(
        not (isinstance(v, float) and not math.isfinite(v)) for v in change.values()
    )  # no inf nor nan anywhere
    assert seen[0].duration == math.inf  # the callback's change keeps its documented value
    assert _transitions(otel, "until-reset")[("closed", "open", "forced")] == 1


def test_forcing_an_open_breaker_open_again_is_reported_with_its_new_duration(otel, clock, alerts):
    """A tripped breaker forced open for 5 s reports open -> open (forced), 5 s, to telemetry and callbacks."""
    breaker = CircuitBreaker("reforced", CircuitBreakerConfig(failure_threshold=1, timeout=60.0), clock=clock)
    seen = []
    breaker.on_state_change(seen.append)
    breaker.force_open(60.0)
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("operator"):
        breaker.force_open(5.0)
        breaker.force_open()  # and then until reset(): reported too, its length left out
    assert breaker.state is CircuitState.OPEN
    assert [(c.old, c.new, c.reason, c.duration) for c in seen] == [
        ("closed", "open", "forced", 60.0),
        ("open", "open", "forced", 5.0),
        ("open", "open", "forced", math.inf),
    ]
    first, second = _changes(otel, "operator")
    assert (first[sc.CB_PREVIOUS_STATE], first[sc.CB_STATE], first[sc.CB_OPEN_DURATION]) == (
        "open",
        "open",
        5.0,
    )
    assert (second[sc.CB_PREVIOUS_STATE], second[sc.CB_STATE]) == ("open", "open")
    assert sc.CB_OPEN_DURATION not in second
    transitions = _transitions(otel, "reforced")
    assert transitions[("closed", "open", "forced")] == 1
    assert transitions[("open", "open", "forced")] == 2
    assert breaker.get_stats()["times_opened"] == 1  # one outage, opened once
    assert [a.kind.value for a in alerts.history] == [
        "circuit_open"
    ]  # the outage's one alert, not one per forcing


def test_an_isolation_that_lengthens_an_opening_is_reported_and_one_that_does_not_is_not(otel, clock, alerts):
    """ISOLATE never shortens an opening: left as is it reports nothing; lengthened, open -> open (isolated)."""
    breaker = CircuitBreaker("isolated", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    seen = []
    breaker.on_state_change(seen.append)
    breaker.force_open(30.0)
    breaker.force_open(10.0, reason="isolated")  # shorter: nothing changes
    breaker.force_open(90.0, reason="isolated")
    assert [(c.old, c.new, c.reason, c.duration) for c in seen] == [
        ("closed", "open", "forced", 30.0),
        ("open", "open", "isolated", 90.0),
    ]
    assert _transitions(otel, "isolated")[("open", "open", "isolated")] == 1


def test_the_forced_reopenings_series_exist_at_zero(otel):
    """Both open -> open series (forced, isolated) are known transitions, at 0 from the breaker's creation."""
    assert ("open", "open", "forced") in sc.CB_TRANSITIONS_KNOWN
    assert ("open", "open", "isolated") in sc.CB_TRANSITIONS_KNOWN
    CircuitBreaker("zero-reopen", CircuitBreakerConfig(failure_threshold=1))
    transitions = _transitions(otel, "zero-reopen")
    assert transitions[("open", "open", "forced")] == 0
    assert transitions[("open", "open", "isolated")] == 0


def test_a_forced_reopening_outside_any_span_is_still_counted(otel, clock, alerts):
    """With no current span, a forced reopening has no span event to go to and is still counted."""
    breaker = CircuitBreaker("no-span", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    breaker.force_open(10.0)
    breaker.force_open(20.0)
    assert not trace.get_current_span().is_recording()
    assert _transitions(otel, "no-span")[("open", "open", "forced")] == 1


def test_a_would_be_trip_of_metrics_only_carries_the_opening_it_would_make_as_documented(otel, clock, alerts):
    """A METRICS_ONLY breaker never opens, yet its would-be trip carries ``open_duration``: the docs say so.

    The attribute was documented "on a change to open" only, while the event of a would-be trip
    (``metrics_only`` to ``metrics_only``) carries it too: how long the breaker would have opened.
    """
    breaker = CircuitBreaker(
        "would-open", CircuitBreakerConfig(failure_threshold=1, timeout=7.0), clock=clock
    )
    breaker.metrics_only()

    def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError, match="x"):
        breaker.call_sync(boom)
    (change,) = _changes(otel, "would-open")  # on the breaker's own execution span
    assert (change[sc.CB_PREVIOUS_STATE], change[sc.CB_STATE], change[sc.CB_OPEN_DURATION]) == (
        "metrics_only",
        "metrics_only",
        7.0,
    )
    assert breaker.state is CircuitState.METRICS_ONLY
    described = sc.attribute(sc.CB_OPEN_DURATION).description
    assert "METRICS_ONLY" in described
    assert "would" in described
