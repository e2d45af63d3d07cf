"""Hedging with the OpenTelemetry SDK: typed attempt spans, the winner marked, losers cancelled, counters."""

from __future__ import annotations

import asyncio
import itertools

from hedging_support import HANG, Dependency
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_resilience import (
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    Hedging,
    HedgingConfig,
    OperationTimeoutError,
    PercentileDelay,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.engine.pipeline import PipelineBuilder
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


async def test_a_denied_hedge_is_a_span_event_and_counted_by_what_denied_it(otel) -> None:
    """A hedge that was due but refused: resilience.hedging.hedge_denied on the execution span and
    resilience.hedging.denied by trigger and denied_by, from zero (every reason)."""
    manager = ResilienceManager()
    name = _fresh("denied")
    clock = FakeClock()
    empty = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    config = ResilienceConfig(name=name, hedging=HedgingConfig(mode="fallback", budget=empty))
    assert await manager.execute_with_resilience(Dependency("x"), config) == "x"

    def denied() -> dict[tuple[str, str], float]:
        return {
            (p.attributes[sc.HEDGE_TRIGGER], p.attributes[sc.HEDGE_DENIED_BY]): p.value
            for p in otel.points(sc.HEDGES_DENIED)
            if p.attributes["resilience.policy"] == name
        }

    assert denied() == {
        ("failure", "budget"): 0,
        ("failure", "max_attempts"): 0,
        ("failure", "not_replayable"): 0,
        ("failure", "deadline"): 0,
        ("failure", "rejected"): 0,
    }
    failing = Dependency(ConnectionError("down"), "never")
    try:
        await manager.execute_with_resilience(failing, config)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the original's error passes through when its hedge is denied")
    assert len(failing.calls) == 1
    assert denied() == {
        ("failure", "budget"): 1,
        ("failure", "max_attempts"): 0,
        ("failure", "not_replayable"): 0,
        ("failure", "deadline"): 0,
        ("failure", "rejected"): 0,
    }
    execution = otel.spans(name)[-1]
    [event] = [e for e in execution.events if e.name == sc.EV_HEDGE_DENIED]
    assert dict(event.attributes) == {
        sc.PATTERN: "hedging",
        sc.NAME: name,
        sc.HEDGE_TRIGGER: "failure",
        sc.HEDGE_DENIED_BY: "budget",
    }


async def test_a_hedge_past_the_executions_cap_on_attempts_is_denied_by_max_attempts(otel) -> None:
    """A pipeline that allows one attempt in total: the hedge is refused, counted as max_attempts."""
    name = _fresh("capped")
    hedging = Hedging(name, HedgingConfig(mode="fallback"))
    pipeline = PipelineBuilder(name, max_attempts=1).add(hedging.as_strategy(name)).build()
    failing = Dependency(ConnectionError("down"), "never")
    try:
        await pipeline.execute(failing)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the original's error passes through when its hedge is denied")
    counts = {
        p.attributes[sc.HEDGE_DENIED_BY]: p.value
        for p in otel.points(sc.HEDGES_DENIED)
        if p.attributes[sc.NAME] == name
    }
    assert counts == {"budget": 0, "max_attempts": 1, "not_replayable": 0, "deadline": 0, "rejected": 0}
    assert hedging.get_stats()["hedges_denied"] == 1


async def test_attempt_durations_of_a_hedged_execution_carry_the_attempt_type(otel) -> None:
    """Each attempt of a race is timed with resilience.attempt.type; a plain retry's attempts carry none."""
    name = _fresh("typed-durations")
    h = Hedging(name, HedgingConfig(delay=0.05), clock=FakeClock())
    assert await h.call(Dependency(HANG, "hedged")) == "hedged"
    points = [p for p in otel.points(sc.ATTEMPT_DURATION) if p.attributes[sc.NAME] == name]
    by_type = {p.attributes[sc.ATTEMPT_TYPE]: (p.attributes[sc.OUTCOME], p.count) for p in points}
    assert by_type == {"original": ("cancelled", 1), "hedge": ("success", 1)}

    retried = _fresh("untyped-durations")
    calls = itertools.count()

    async def flaky() -> str:
        if next(calls) == 0:
            raise ConnectionError("once")
        return "ok"

    retry = Retry(retried, RetryPolicy(max_attempts=2, initial_delay=0.0))
    assert await retry.execute(flaky) == "ok"
    retry_points = [p for p in otel.points(sc.ATTEMPT_DURATION) if p.attributes[sc.NAME] == retried]
    assert sum(p.count for p in retry_points) == 2
    assert all(sc.ATTEMPT_TYPE not in p.attributes for p in retry_points)


async def test_latency_mode_reports_a_hedge_after_a_zero_delay_as_trigger_delay(otel) -> None:
    """Latency mode with a delay of 0 (a function returning 0): the hedge is a delay hedge, not parallel.

    The trigger follows the configured mode, so a latency policy only ever moves the series it
    exports from zero (delay, failure), whatever its delay function returns.
    """
    name = _fresh("zero-delay")
    h = Hedging(name, HedgingConfig(delay=lambda: 0, max_attempts=2), clock=FakeClock())
    assert await h.call(Dependency(HANG, "hedged")) == "hedged"
    [started] = [e for e in otel.span(name).events if e.name == sc.EV_HEDGE_STARTED]
    assert started.attributes[sc.HEDGE_TRIGGER] == "delay"
    source = {"resilience.policy": name, "resilience.name": name}
    assert otel.point(sc.HEDGES, **source, resilience__hedging__trigger="delay").value == 1
    triggers = {
        p.attributes[sc.HEDGE_TRIGGER]
        for p in otel.points(sc.HEDGES)
        if p.attributes["resilience.policy"] == name
    }
    assert triggers == {"delay", "failure"}


async def test_latency_mode_reports_a_hedge_denied_after_a_zero_delay_as_trigger_delay(otel) -> None:
    """A hedge due after a delay of 0 and refused by the budget is denied with trigger delay too."""
    name = _fresh("zero-denied")
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0)
    h = Hedging(name, HedgingConfig(delay=lambda: 0, budget=budget), clock=FakeClock())
    assert await h.call(Dependency("only")) == "only"
    denied = {
        p.attributes[sc.HEDGE_TRIGGER]
        for p in otel.points(sc.HEDGES_DENIED)
        if p.attributes["resilience.policy"] == name and p.value
    }
    assert denied == {"delay"}


async def test_a_percentile_delay_that_learned_zero_latencies_still_hedges_by_delay(otel) -> None:
    """A PercentileDelay (minimum 0) that observed latencies of 0 returns a delay of 0: the hedge is still 'delay'."""
    name = _fresh("learned-zero")
    delay = PercentileDelay(initial=1.0, min_samples=1)
    delay.observe(0.0)  # an answer at once, as a FakeClock that never moves measures it
    assert delay() == 0.0
    h = Hedging(name, HedgingConfig(delay=delay), clock=FakeClock())
    assert await h.call(Dependency(HANG, "hedged")) == "hedged"
    triggers = {
        p.attributes[sc.HEDGE_TRIGGER]: p.value
        for p in otel.points(sc.HEDGES)
        if p.attributes["resilience.policy"] == name
    }
    assert triggers == {"delay": 1, "failure": 0}


def _denied(otel, name: str) -> dict[tuple[str, str], float]:
    """The hedge-denied counts of policy ``name`` that moved, by (trigger, denied_by)."""
    return {
        (p.attributes[sc.HEDGE_TRIGGER], p.attributes[sc.HEDGE_DENIED_BY]): p.value
        for p in otel.points(sc.HEDGES_DENIED)
        if p.attributes["resilience.policy"] == name and p.value
    }


def _denied_events(otel, name: str) -> list[tuple[str, str]]:
    """The hedge_denied span events of the execution spans of ``name``: (trigger, denied_by)."""
    return [
        (e.attributes[sc.HEDGE_TRIGGER], e.attributes[sc.HEDGE_DENIED_BY])
        for span in otel.spans(name)
        for e in span.events
        if e.name == sc.EV_HEDGE_DENIED
    ]


async def test_a_hedge_due_once_the_deadline_passed_is_denied_by_deadline(otel) -> None:
    """The original fails after the policy's deadline passed: its failure hedge is due, not started,
    and counted denied by ``deadline`` (it was counted nowhere)."""
    name = _fresh("past-deadline")
    clock = FakeClock()

    async def slow_failure() -> str:
        clock.advance(0.5)  # past the 0.1 s deadline, then fails
        await asyncio.sleep(0)
        raise ConnectionError("down")

    handle = ResilienceManager(clock=clock).policy(
        name, ResilienceConfig(timeout=0.1, hedging=HedgingConfig(mode="fallback", max_attempts=3))
    )
    try:
        await handle.execute(slow_failure)
    except (ConnectionError, OperationTimeoutError):
        pass
    else:
        raise AssertionError("the execution fails")
    assert _denied(otel, name) == {("failure", "deadline"): 1}
    assert _denied_events(otel, name) == [("failure", "deadline")]


async def test_a_hedge_delay_that_ends_past_the_deadline_starts_no_hedge_and_denies_none(otel) -> None:
    """The deadline comes before the hedge delay ends: no hedge by delay starts, and none is counted
    denied (it never came due); a hedge by failure still starts before the deadline and answers."""
    name = _fresh("delay-past-deadline")
    manager = ResilienceManager(clock=FakeClock())
    config = ResilienceConfig(name=name, timeout=5.0, hedging=HedgingConfig(delay=10.0, max_attempts=3))
    dependency = Dependency(ConnectionError("down"), "hedged")
    assert await manager.execute_with_resilience(dependency, config) == "hedged"
    assert len(dependency.calls) == 2  # the original, then a hedge by failure
    assert _denied(otel, name) == {}
    assert _denied_events(otel, name) == []
    source = {"resilience.policy": name, "resilience.name": name}
    assert otel.point(sc.HEDGES, **source, resilience__hedging__trigger="failure").value == 1


async def test_a_hung_original_whose_hedge_delay_ends_past_the_deadline_times_out_with_no_denial(
    otel,
) -> None:
    """The original hangs; the hedge delay (0.2 s) ends past the 0.1 s deadline: no hedge came due,
    none is denied, no delay is waited."""
    name = _fresh("hung-past-deadline")
    clock = FakeClock()
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(name=name, timeout=0.1, hedging=HedgingConfig(delay=0.2, max_attempts=3))
    dependency = Dependency(HANG)
    try:
        await manager.execute_with_resilience(dependency, config)
    except OperationTimeoutError:
        pass
    else:
        raise AssertionError("the execution times out")
    assert len(dependency.calls) == 1
    assert clock.sleeps == []
    assert _denied(otel, name) == {}


async def test_a_hedge_after_an_attempt_the_policys_own_breaker_rejected_is_denied_by_rejected(
    otel,
) -> None:
    """The policy's own breaker rejects the original: hedging ends, and the hedge that was due is
    counted denied by ``rejected`` (it was counted nowhere), asking nothing of the budget."""
    name = _fresh("own-breaker")
    clock = FakeClock()
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    hedging = Hedging(name, HedgingConfig(mode="fallback", max_attempts=3, budget=budget), clock=clock)
    breaker = CircuitBreaker(_fresh("inner"), CircuitBreakerConfig(failure_threshold=5))
    pipeline = PipelineBuilder(name).add(hedging.as_strategy(name)).add(breaker.as_strategy(name)).build()
    breaker.force_open()
    for _ in range(2):
        try:
            await pipeline.execute(Dependency("never"))
        except CircuitOpenError:
            pass
        else:
            raise AssertionError("the open breaker rejects the execution")
    assert _denied(otel, name) == {("failure", "rejected"): 2}
    assert _denied_events(otel, name) == [("failure", "rejected")] * 2
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"]) == (0, 2)
    assert budget.get_stats()["denied"] == 0
    assert budget.get_stats()["retries"] == 0


async def test_attempts_rejected_side_by_side_count_each_hedge_turned_away_as_denied(otel) -> None:
    """Parallel mode: every attempt started at once is rejected by the policy's own breaker.

    Each hedge turned away called nothing: it is counted denied (``rejected``, by its trigger),
    never as a hedge sent; the original turned away denies nothing more, as no hedge was left to
    start (a fourth, past max_attempts, was never due). Before, both hedges were counted in
    ``resilience.hedging.hedges`` and no denial was counted.
    """
    name = _fresh("parallel-rejected")
    hedging = Hedging(name, HedgingConfig(mode="parallel", max_attempts=3))
    breaker = CircuitBreaker(_fresh("inner"), CircuitBreakerConfig(failure_threshold=5))
    pipeline = PipelineBuilder(name).add(hedging.as_strategy(name)).add(breaker.as_strategy(name)).build()
    breaker.force_open()
    try:
        await pipeline.execute(Dependency("never"))
    except CircuitOpenError:
        pass
    else:
        raise AssertionError("the open breaker rejects the execution")
    assert _denied(otel, name) == {("parallel", "rejected"): 2}
    assert _denied_events(otel, name) == [("parallel", "rejected")] * 2
    assert not [p for p in otel.points(sc.HEDGES) if p.attributes[sc.NAME] == name and p.value]
    assert not [e for e in otel.span(name).events if e.name == sc.EV_HEDGE_STARTED]
    assert (hedging.get_stats()["hedges"], hedging.get_stats()["hedges_denied"]) == (0, 2)


async def test_a_loser_that_caught_its_cancellation_and_returned_ends_cancelled(otel) -> None:
    """The original swallows the cancellation the race gives it once the hedge won, and returns.

    Its attempt span ended ``success``: a loser, whose result nobody got, counted as the
    dependency answering; the docs say the losers end ``cancelled``.
    """
    name = _fresh("swallowing-loser")

    async def dependency(calls: list[int] = []) -> str:  # noqa: B006 - counts the calls of this test
        calls.append(1)
        if len(calls) == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                return "late"
        return "hedged"

    h = Hedging(name, HedgingConfig(delay=0.05), clock=FakeClock())
    assert await h.call(dependency) == "hedged"
    attempts = _attempts(otel, name)
    assert attempts[1].attributes[sc.OUTCOME] == "cancelled"
    assert attempts[1].status.status_code is StatusCode.UNSET
    assert attempts[2].attributes[sc.OUTCOME] == "success"
    assert [e.name for e in attempts[2].events] == [sc.EV_HEDGE_WON]
    outcomes = {
        (p.attributes[sc.ATTEMPT_TYPE], p.attributes[sc.OUTCOME]): p.count
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.NAME] == name
    }
    assert outcomes == {("original", "cancelled"): 1, ("hedge", "success"): 1}


async def test_a_loser_that_failed_in_the_turn_the_hedge_won_ends_cancelled_not_error(otel) -> None:
    """The original wakes in the loop turn the hedge won and fails before the race cancels it: a loser.

    Its attempt span was ERROR (``failure``) in a hedged execution that succeeded.
    """
    name = _fresh("late-failing-loser")
    woken = asyncio.Event()

    async def dependency(calls: list[int] = []) -> str:  # noqa: B006 - counts the calls of this test
        calls.append(1)
        if len(calls) == 1:
            await woken.wait()
            raise ConnectionError("after the win")
        woken.set()  # the original runs again only after this attempt won
        return "hedged"

    h = Hedging(name, HedgingConfig(delay=0.05), clock=FakeClock())
    assert await h.call(dependency) == "hedged"
    attempts = _attempts(otel, name)
    assert attempts[1].attributes[sc.OUTCOME] == "cancelled"
    assert attempts[1].status.status_code is StatusCode.UNSET
    assert sc.ERROR_TYPE not in attempts[1].attributes
    assert attempts[2].attributes[sc.OUTCOME] == "success"
    assert otel.span(name).attributes[sc.OUTCOME] == "success"


async def test_attempts_that_caught_the_deadlines_cancellation_end_timeout_and_none_wins(otel) -> None:
    """Both attempts still run at the policy's deadline, catch the race's cancellation and return.

    The first to return was marked the winner (``resilience.hedging.won``, outcome ``success``)
    of an execution that timed out, its answer given to nobody; the docs say an attempt still
    running at the deadline ends ``timeout``.
    """
    name = _fresh("deadline-swallowed")

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "late"
        return "never"

    # The hedge is due 1 ms after the original, the deadline 0.5 s after: a stall of the loop past
    # both would run the deadline's cancellation before the hedge could start (one attempt).
    config = ResilienceConfig(name=name, timeout=0.5, hedging=HedgingConfig(delay=0.001, max_attempts=2))
    try:
        await ResilienceManager().execute_with_resilience(stubborn, config)
    except OperationTimeoutError:
        pass
    else:
        raise AssertionError("the execution times out")
    attempts = _attempts(otel, name)
    assert sorted(attempts) == [1, 2]
    for span in attempts.values():
        assert span.attributes[sc.OUTCOME] == "timeout"
        assert span.attributes[sc.ERROR_TYPE] == sc.TIMEOUT_ERROR_TYPE
        assert span.events == ()
    assert otel.span(name).attributes[sc.OUTCOME] == "timeout"
    assert not [p for p in otel.points(sc.HEDGE_WINS) if p.attributes[sc.NAME] == name and p.value]


async def test_a_race_won_before_its_caller_was_cancelled_counts_the_win_its_telemetry_shows(otel) -> None:
    """The hedge wins; the caller is cancelled while the original, a loser, still shuts down.

    The win was reported as it happened (``resilience.hedging.won`` on the hedge's span, the wins
    counter); the hedging's own counts said the execution was cancelled and won by nobody, so
    ``hedge_wins`` and the counter of the wins by a hedge disagreed.
    """
    name = _fresh("won-then-cancelled")
    release = asyncio.Event()
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            try:
                await asyncio.Event().wait()
            finally:
                await release.wait()  # shuts down slowly
        return "hedged"

    h = Hedging(name, HedgingConfig(delay=0.05), clock=FakeClock())
    call = asyncio.ensure_future(h.call(dependency))
    while 2 not in _attempts(otel, name):  # the hedge won, its span ended
        await asyncio.sleep(0)
    call.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    release.set()
    try:
        await call
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the caller was cancelled")
    wins = {
        p.attributes[sc.ATTEMPT_TYPE]: p.value
        for p in otel.points(sc.HEDGE_WINS)
        if p.attributes[sc.NAME] == name
    }
    assert wins == {"original": 0, "hedge": 1}
    stats = h.get_stats()
    assert (stats["hedge_wins"], stats["original_wins"], stats["cancelled"]) == (1, 0, 0)
    assert otel.span(name).attributes[sc.OUTCOME] == "cancelled"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def _hedge_behind_the_one_slot(otel, label: str, *, max_waiting: int, until: str):
    """The original holds a bulkhead's one slot; the hedge, due, meets the bulkhead (its stat ``until``
    counts it), then the original answers. Asserts what both cases share: the hedge's attempt span
    is typed, and no hedge was counted sent nor any race won. Returns the policy's name and handle."""
    name = _fresh(label)
    clock = FakeClock()
    config = ResilienceConfig(
        name=name,
        hedging=HedgingConfig(delay=0.01, max_attempts=2),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=max_waiting),
    )
    handle = ResilienceManager(clock=clock).policy(name, config)
    release = asyncio.Event()

    async def answer() -> str:
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(handle.execute(answer))
    while not handle.get_stats()["bulkhead"]["active"]:
        await asyncio.sleep(0)
    clock.advance(0.02)
    while not handle.get_stats()["bulkhead"][until]:
        await asyncio.sleep(0)
    release.set()
    assert await task == "quote"
    attempts = _attempts(otel, name)
    assert attempts[2].attributes[sc.ATTEMPT_TYPE] == "hedge"
    assert attempts[1].events == ()  # no resilience.hedging.won: no hedge ran beside it
    assert not [p for p in otel.points(sc.HEDGES) if p.attributes[sc.NAME] == name and p.value]
    assert not [p for p in otel.points(sc.HEDGE_WINS) if p.attributes[sc.NAME] == name and p.value]
    return name, handle


async def test_a_hedge_the_policys_own_bulkhead_turns_away_is_denied_not_counted_sent(otel) -> None:
    """The original holds the one slot; the hedge meets the full bulkhead before it calls anything.

    Its attempt span stays (outcome ``rejected``), but it is no hedge sent: the hedges counter and
    the ``started`` event leave it out, it is counted denied (``delay``, ``rejected``), and the
    original's answer won no race. Before: ``resilience.hedging.hedges`` 1, a ``started`` event,
    a win by the original, and no denial (``max_attempts=2``: no hedge was left after it).
    """
    name, _ = await _hedge_behind_the_one_slot(otel, "turned-away", max_waiting=0, until="rejected")
    assert _attempts(otel, name)[2].attributes[sc.OUTCOME] == "rejected"
    assert _denied(otel, name) == {("delay", "rejected"): 1}
    assert _denied_events(otel, name) == [("delay", "rejected")]
    assert not [e for e in otel.span(name).events if e.name == sc.EV_HEDGE_STARTED]
    assert otel.span(name).attributes[sc.OUTCOME] == "success"


async def test_a_hedge_still_in_the_policys_bulkhead_queue_when_the_original_answers_is_not_counted(
    otel,
) -> None:
    """The original holds the one slot; the hedge waits in the queue; the original answers.

    The hedge called nothing: its attempt span ends ``cancelled`` (a loser), but it is no hedge
    sent (the hedges counter and the ``started`` event leave it out), no denial (nothing refused
    it: the race was over before it was admitted), and the original's answer won no race.
    Before: ``resilience.hedging.hedges`` 1, a ``started`` event and a win by the original.
    """
    name, handle = await _hedge_behind_the_one_slot(otel, "queued", max_waiting=1, until="waiting")
    assert _attempts(otel, name)[2].attributes[sc.OUTCOME] == "cancelled"
    assert _denied(otel, name) == {}
    assert not [e for e in otel.span(name).events if e.name == sc.EV_HEDGE_STARTED]
    assert otel.span(name).attributes[sc.OUTCOME] == "success"
    assert handle.get_stats()["bulkhead"]["completed"] == 1


async def test_the_hedge_started_event_names_the_hedges_number_whatever_a_retry_inside_it_took(otel) -> None:
    """A retry inside the hedging: the hedge (attempt 2) fails once and its retry (attempt 3) answers.

    ``hedge_started`` names the attempt that started, 2, as the hedge's attempt span does. Before:
    3, the number the retry inside the hedge took last, which no hedging attempt span carries.
    """
    name = _fresh("retried-hedge")
    clock = FakeClock()
    hedging = Hedging(name, HedgingConfig(delay=0.05), clock=clock)
    retry = Retry(name, RetryPolicy(max_attempts=2, initial_delay=0.0), clock=clock)
    pipeline = (
        PipelineBuilder(name, clock=clock).add(hedging.as_strategy(name)).add(retry.as_strategy(name)).build()
    )
    assert await pipeline.execute(Dependency(HANG, ConnectionError("down"), "hedged")) == "hedged"
    hedges = [s for s in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX) if s.attributes[sc.PATTERN] == "hedging"]
    assert sorted((s.attributes[sc.ATTEMPT], s.attributes[sc.ATTEMPT_TYPE]) for s in hedges) == [
        (1, "original"),
        (2, "hedge"),
    ]
    [started] = [e for e in otel.span(name).events if e.name == sc.EV_HEDGE_STARTED]
    assert started.attributes[sc.ATTEMPT] == 2


async def test_the_hedge_won_event_names_the_hedges_number_whatever_a_retry_inside_it_took(otel) -> None:
    """A retry inside the hedging: the hedge (attempt 2) fails once and its retry (attempt 3) answers.

    ``hedge_won`` marks the hedge's attempt span, and names the attempt that span carries, 2.
    Before: 3, the number the retry inside the hedge took last.
    """
    name = _fresh("retried-winner")
    clock = FakeClock()
    hedging = Hedging(name, HedgingConfig(delay=0.05), clock=clock)
    retry = Retry(name, RetryPolicy(max_attempts=2, initial_delay=0.0), clock=clock)
    pipeline = (
        PipelineBuilder(name, clock=clock).add(hedging.as_strategy(name)).add(retry.as_strategy(name)).build()
    )
    assert await pipeline.execute(Dependency(HANG, ConnectionError("down"), "hedged")) == "hedged"
    attempts = {
        s.attributes[sc.ATTEMPT]: s
        for s in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
        if s.attributes[sc.PATTERN] == "hedging"
    }
    [won] = [e for e in attempts[2].events if e.name == sc.EV_HEDGE_WON]
    assert (won.attributes[sc.ATTEMPT], won.attributes[sc.ATTEMPT_TYPE]) == (2, "hedge")
    source = {"resilience.policy": name, "resilience.name": name}
    assert otel.point(sc.HEDGE_WINS, **source, resilience__attempt__type="hedge").value == 1


async def test_the_hedge_won_event_names_the_originals_number_whatever_a_retry_inside_it_took(otel) -> None:
    """A retry inside the hedging: the original (1) fails, its retry (2) backs off, a hedge (3) hangs, the retry answers.

    ``hedge_won`` marks the original's attempt span with its number, 1. Before: 2, the number
    its retry took.
    """
    name = _fresh("retried-original")
    clock = FakeClock()
    hedging = Hedging(name, HedgingConfig(delay=0.05), clock=clock)
    retry = Retry(name, RetryPolicy(max_attempts=2, initial_delay=1.0, jitter="none"), clock=clock)
    pipeline = (
        PipelineBuilder(name, clock=clock).add(hedging.as_strategy(name)).add(retry.as_strategy(name)).build()
    )
    dependency = Dependency(ConnectionError("down"), HANG, "original")
    assert await pipeline.execute(dependency) == "original"  # the fake clock's sleeps pass at once
    assert dependency.cancelled == [1]  # the hedge ran, and lost
    attempts = {
        s.attributes[sc.ATTEMPT]: s
        for s in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
        if s.attributes[sc.PATTERN] == "hedging"
    }
    assert attempts[1].attributes[sc.ATTEMPT_TYPE] == "original"
    [won] = [e for e in attempts[1].events if e.name == sc.EV_HEDGE_WON]
    assert (won.attributes[sc.ATTEMPT], won.attributes[sc.ATTEMPT_TYPE]) == (1, "original")


async def test_the_outer_hedge_won_event_names_the_outer_originals_number_whatever_its_inner_race_took(
    otel,
) -> None:
    """Two hedgings in parallel mode: the outer original's inner race starts a hedge (3) beside its original (1).

    The outer original answers: its ``hedge_won`` names it 1, as its attempt span does. Before:
    3, the number its inner race's hedge took.
    """
    name = _fresh("nested-winner")
    clock = FakeClock()
    outer = Hedging(name, HedgingConfig(mode="parallel", max_attempts=2), clock=clock)
    inner = Hedging(_fresh("inner"), HedgingConfig(mode="parallel", max_attempts=2), clock=clock)
    pipeline = (
        PipelineBuilder(name, clock=clock).add(outer.as_strategy(name)).add(inner.as_strategy(name)).build()
    )
    assert await pipeline.execute(Dependency("quote", HANG)) == "quote"
    outer_attempts = [s for s in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX) if s.attributes[sc.NAME] == name]
    [winner] = [s for s in outer_attempts if s.attributes[sc.ATTEMPT_TYPE] == "original"]
    [won] = [e for e in winner.events if e.name == sc.EV_HEDGE_WON]
    assert won.attributes[sc.ATTEMPT] == winner.attributes[sc.ATTEMPT] == 1


async def test_a_retried_race_has_one_attempt_span_per_attempt_number(otel) -> None:
    """A retry around hedging: the first race's two attempts fail, the second's hedge answers.

    Each attempt has one span, its number unique in the execution (what ``resilience.attempt``
    means): the second race's original is 3, its hedge 4, each a child of the execution span as
    the first race's are; the retry leaves its attempts' spans to the hedging inside it. Before:
    the retry opened a span of its own for its second attempt, also ``resilience.attempt`` 3
    (outcome ``success``, though attempt 3 was cancelled and 4 answered), the parent of the
    second race's.
    """
    name = _fresh("retried-race")
    clock = FakeClock()
    retry = Retry(name, RetryPolicy(max_attempts=2, initial_delay=1.0, jitter="none"), clock=clock)
    hedging = Hedging(name, HedgingConfig(delay=0.05), clock=clock)
    pipeline = (
        PipelineBuilder(name, clock=clock).add(retry.as_strategy(name)).add(hedging.as_strategy(name)).build()
    )
    dependency = Dependency(ConnectionError("a"), ConnectionError("b"), HANG, "answer")
    assert await pipeline.execute(dependency) == "answer"
    spans = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    numbered = sorted(
        (
            s.attributes[sc.ATTEMPT],
            s.attributes[sc.PATTERN],
            s.attributes.get(sc.ATTEMPT_TYPE),
            s.attributes[sc.OUTCOME],
        )
        for s in spans
    )
    assert numbered == [
        (1, "hedging", "original", "failure"),
        (2, "hedging", "hedge", "failure"),
        (3, "hedging", "original", "cancelled"),
        (4, "hedging", "hedge", "success"),
    ]
    execution = otel.span(name)
    assert {s.parent.span_id for s in spans} == {execution.context.span_id}
    assert execution.attributes[sc.OUTCOME] == "recovered"
