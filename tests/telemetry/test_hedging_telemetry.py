"""Hedging with the OpenTelemetry SDK: typed attempt spans, the winner marked, losers cancelled, counters."""

from __future__ import annotations

import asyncio
import itertools

from hedging_support import HANG, Dependency
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_resilience import Hedging, HedgingConfig, ResilienceConfig, ResilienceManager
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

_names = itertools.count()


def _fresh(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _attempts(otel, operation):
    """The attempt spans of ``operation``, by attempt number."""
    return {s.attributes[sc.ATTEMPT]: s for s in otel.spans(operation + sc.ATTEMPT_SPAN_SUFFIX)}


async def test_each_attempt_is_a_typed_child_span_the_winner_marked_the_loser_cancelled(otel) -> None:
    """Original and hedge are children of the execution span; the hedge won; the original ended cancelled."""
    name = _fresh("race")
    h = Hedging(name, HedgingConfig(delay=0.05), clock=FakeClock())
    assert await h.call(Dependency(HANG, "hedged")) == "hedged"
    execution = otel.span(name)
    attempts = _attempts(otel, name)
    assert sorted(attempts) == [1, 2]
    original, hedge = attempts[1], attempts[2]
    assert original.attributes[sc.ATTEMPT_TYPE] == "original"
    assert hedge.attributes[sc.ATTEMPT_TYPE] == "hedge"
    for span in (original, hedge):
        assert span.parent is not None
        assert span.parent.span_id == execution.context.span_id
        assert span.attributes[sc.PATTERN] == "hedging"
    assert original.attributes[sc.OUTCOME] == "cancelled"
    assert original.status.status_code is StatusCode.UNSET  # cancelled is not an error
    assert original.events == ()
    assert hedge.attributes[sc.OUTCOME] == "success"
    [won] = hedge.events
    assert won.name == sc.EV_HEDGE_WON
    assert won.attributes[sc.ATTEMPT_TYPE] == "hedge"
    [started] = [e for e in execution.events if e.name == sc.EV_HEDGE_STARTED]
    assert dict(started.attributes) == {
        sc.PATTERN: "hedging",
        sc.NAME: name,
        sc.ATTEMPT: 2,
        sc.HEDGE_TRIGGER: "delay",
    }
    assert execution.attributes[sc.OUTCOME] == "success"


async def test_an_unraced_original_has_its_span_but_no_winner_mark(otel) -> None:
    """A hedged policy whose original answers in time: one attempt span, typed original, no won event."""
    name = _fresh("alone")
    h = Hedging(name, HedgingConfig(delay=10.0))
    assert await h.call(Dependency("fast")) == "fast"
    [attempt] = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    assert attempt.attributes[sc.ATTEMPT_TYPE] == "original"
    assert attempt.attributes[sc.OUTCOME] == "success"
    assert attempt.events == ()
    assert set(otel.values(sc.HEDGE_WINS).values()) == {0}  # no race, no win counted (series from zero)


async def test_a_failed_attempt_is_an_error_span_and_its_hedge_is_triggered_by_failure(otel) -> None:
    """The original raised: its span is ERROR with error.type; the hedge started with trigger failure and won."""
    name = _fresh("failover")
    h = Hedging(name, HedgingConfig(mode="fallback"))
    assert await h.call(Dependency(ConnectionError("down"), "second")) == "second"
    attempts = _attempts(otel, name)
    assert attempts[1].status.status_code is StatusCode.ERROR
    assert attempts[1].attributes[sc.ERROR_TYPE] == "ConnectionError"
    assert attempts[2].attributes[sc.OUTCOME] == "success"
    source = {"resilience.policy": name, "resilience.name": name}
    assert otel.point(sc.HEDGES, **source, resilience__hedging__trigger="failure").value == 1
    assert otel.point(sc.HEDGE_WINS, **source, resilience__attempt__type="hedge").value == 1
    assert otel.span(name).attributes[sc.OUTCOME] == "recovered"


async def test_the_callers_spans_nest_under_their_attempt(otel) -> None:
    """Inside an attempt its span is current: the dependency's own spans are its children."""
    name = _fresh("nested")
    tracer = otel.tracer_provider.get_tracer("test")

    async def work() -> str:
        with tracer.start_as_current_span("dependency call"):
            await asyncio.sleep(0)
        return "ok"

    h = Hedging(name, HedgingConfig(mode="parallel"))
    assert await h.call(work) == "ok"
    attempt_ids = {s.context.span_id: s for s in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)}
    calls = otel.spans("dependency call")
    assert len(calls) == 2
    assert {c.parent.span_id for c in calls} == set(attempt_ids)
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_a_policy_with_hedging_exports_its_counters_from_zero(otel) -> None:
    """The hedges series of the mode's triggers and both wins series exist, at 0, before any hedge."""
    manager = ResilienceManager()
    latency, parallel = _fresh("zero-latency"), _fresh("zero-parallel")
    for name, config in (
        (latency, HedgingConfig(delay=10.0)),
        (parallel, HedgingConfig(mode="parallel", max_attempts=1)),
    ):
        assert (
            await manager.execute_with_resilience(
                Dependency("x"), ResilienceConfig(name=name, hedging=config)
            )
            == "x"
        )
    hedges = {
        (p.attributes["resilience.policy"], p.attributes[sc.HEDGE_TRIGGER]) for p in otel.points(sc.HEDGES)
    }
    assert {t for p, t in hedges if p == latency} == {"delay", "failure"}
    assert {t for p, t in hedges if p == parallel} == {"parallel"}
    wins = otel.points(sc.HEDGE_WINS)
    assert {p.attributes[sc.ATTEMPT_TYPE] for p in wins if p.attributes["resilience.policy"] == latency} == {
        "original",
        "hedge",
    }
    assert all(p.value == 0 for p in (*otel.points(sc.HEDGES), *wins))
