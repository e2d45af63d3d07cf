"""The engine's hot-path pieces: exact lock-free counters, the registry's name index, dormant listeners."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import types
from dataclasses import dataclass

from otel_resilience import Bulkhead, CircuitBreaker, RateLimiter, RateLimiterConfig, Retry, RetryPolicy
from otel_resilience.engine import deadline
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.counting import Counter, read_all
from otel_resilience.engine.events import (
    HUB,
    CallRejected,
    Event,
    EventArgs,
    Outcome,
    StrategyTelemetry,
    TelemetryHub,
    TelemetrySource,
)
from otel_resilience.engine.pipeline import PipelineBuilder, PipelineStats
from otel_resilience.engine.registry import Registry
from otel_resilience.engine.step import Step


@dataclass(eq=False)
class Item:
    name: str


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        self.events.append(event)


def test_counter_counts_exactly_from_many_threads():
    """next() on a counter loses no increment with 8 threads switching every microsecond."""
    counter = Counter()
    barrier = threading.Barrier(8)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def work() -> None:
        barrier.wait(timeout=5)
        for _ in range(5_000):
            next(counter)

    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    finally:
        sys.setswitchinterval(previous)
    assert counter.value == 40_000


def test_counter_reads_are_not_counted():
    """Reading a counter, however often and between adds, returns the number of adds only."""
    counter = Counter()
    assert counter.value == 0
    assert counter.value == 0
    next(counter)
    next(counter)
    assert (counter.value, counter.value) == (2, 2)
    next(counter)
    assert counter.value == 3


def test_counter_is_exact_while_read_from_other_threads():
    """Adds from 4 threads stay exact while 4 other threads keep reading the counter."""
    counter = Counter()
    barrier = threading.Barrier(8)
    seen: list[int] = []
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def add() -> None:
        barrier.wait(timeout=5)
        for _ in range(5_000):
            next(counter)

    def read() -> None:
        barrier.wait(timeout=5)
        seen.extend(counter.value for _ in range(500))

    try:
        threads = [threading.Thread(target=add) for _ in range(4)]
        threads += [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    finally:
        sys.setswitchinterval(previous)
    assert counter.value == 20_000
    assert max(seen) <= 20_000


def test_pipeline_stats_read_their_counters():
    """PipelineStats exposes each counter as an int and derives the totals from them."""
    stats = PipelineStats()
    stats.count(Outcome.SUCCESS)
    stats.count(Outcome.SUCCESS)
    stats.count(Outcome.REJECTED)
    assert (stats.succeeded, stats.rejected, stats.failed, stats.total) == (2, 1, 1, 3)
    assert stats.as_dict()["total"] == 3


def test_read_all_reads_each_counter_as_value_does_and_is_not_counted():
    """read_all gives each counter's value in order; its reads, like value's, add nothing."""
    counters = [Counter() for _ in range(3)]
    for index, counter in enumerate(counters):
        for _ in range(index * 2):
            next(counter)
    assert read_all(counters) == [0, 2, 4]
    assert read_all(counters) == [0, 2, 4]
    next(counters[0])
    assert [counter.value for counter in counters] == [1, 2, 4]
    assert read_all(counters) == [1, 2, 4]
    assert read_all([]) == []


def test_pipeline_stats_counts_follow_the_outcome_order():
    """counts()[i] is the count of the i-th Outcome, the failures one being errors."""
    stats = PipelineStats()
    for times, outcome in enumerate(Outcome, start=1):
        for _ in range(times):
            stats.count(outcome)
    assert stats.counts() == list(range(1, len(Outcome) + 1))
    assert stats.counts()[list(Outcome).index(Outcome.FAILURE)] == stats.errors
    assert stats.as_dict()["failed"] == stats.errors + stats.rejected + stats.timeouts


def test_registry_get_uses_the_newest_live_instance_and_falls_back_to_older_ones():
    """get() returns the newest instance of a name, and an older live one once the newest is gone."""
    registry: Registry[Item] = Registry("thing")
    older, newer = Item("a"), Item("a")
    registry.register(older)
    registry.register(newer)
    assert registry.get("a") is newer
    del newer
    gc.collect()
    assert registry.get("a") is older
    assert registry.get("missing") is None


def test_registry_get_does_not_keep_instances_alive():
    """The name index holds weak references only."""
    registry: Registry[Item] = Registry("thing")
    registry.register(Item("gone"))
    gc.collect()
    assert registry.get("gone") is None
    assert len(registry) == 0


def test_dormant_listener_gets_no_events_until_woken():
    """A dormant listener stays registered but is left out of event delivery and enabled."""
    hub = TelemetryHub()
    listener = Recorder()
    hub.add_listener(listener)
    telemetry = StrategyTelemetry(TelemetrySource("circuit_breaker", "x"), hub)
    hub.set_dormant(listener, dormant=True)
    assert not telemetry.enabled
    assert hub.is_dormant(listener)
    hub.set_dormant(listener, dormant=False)
    telemetry.report(Event.CALL_REJECTED, CallRejected("circuit_open"))
    assert listener.events == [Event.CALL_REJECTED]


def test_set_dormant_ignores_unregistered_listeners_and_add_wakes():
    """set_dormant on a stranger does nothing; adding a dormant listener again wakes it."""
    hub = TelemetryHub()
    stranger, listener = Recorder(), Recorder()
    hub.set_dormant(stranger, dormant=True)
    assert not hub.is_dormant(stranger)
    hub.add_listener(listener)
    hub.set_dormant(listener, dormant=True)
    hub.add_listener(listener)
    assert hub.event_listeners == (listener,)
    hub.remove_listener(listener)
    assert hub.event_listeners == ()
    assert not hub.is_dormant(listener)


class Scoper:
    """An execution listener that counts the scopes it is asked to open (and opens none)."""

    def __init__(self) -> None:
        self.asked = 0

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        self.asked += 1
        return None

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        raise AssertionError("no scope was opened")

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        return None

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        raise AssertionError("no scope was opened")


def test_quiet_says_whether_an_execution_listener_needs_asking():
    """quiet(): always with no execution listener, never with one awake, else the one check all sleep under."""
    hub = TelemetryHub()
    assert hub.quiet() is True
    first, second = Scoper(), Scoper()
    hub.add_listener(first)
    assert hub.quiet() is False
    asleep = [True]

    def check() -> bool:
        return asleep[0]

    hub.set_dormant(first, dormant=True, asleep_while=check)
    assert hub.quiet is check
    hub.add_listener(second)  # awake: it must be asked
    assert hub.quiet() is False
    hub.set_dormant(second, dormant=True, asleep_while=lambda: True)  # not the same check
    assert hub.quiet() is False
    hub.set_dormant(second, dormant=True, asleep_while=check)
    assert hub.quiet is check
    hub.remove_listener(second)
    hub.set_dormant(first, dormant=True)  # dormant with no check: asked every execution
    assert hub.quiet() is False
    hub.remove_listener(first)
    assert hub.quiet() is True


def test_a_pipeline_asks_its_execution_listeners_only_while_the_hub_is_not_quiet():
    """While every execution listener sleeps under its check, no listener is asked; once the check
    says otherwise, the next execution asks it."""
    saved = tuple(
        {id(x): x for x in (*HUB.event_listeners, *HUB.execution_listeners)}.values()
    )  # a weak proxy: no hash
    for listener in saved:
        HUB.remove_listener(listener)
    scoper, asleep = Scoper(), [True]
    try:
        HUB.add_listener(scoper)
        HUB.set_dormant(scoper, dormant=True, asleep_while=lambda: asleep[0])
        pipeline = PipelineBuilder("quiet").build()
        assert pipeline.execute_sync(lambda: 1) == 1
        assert scoper.asked == 0
        asleep[0] = False
        assert pipeline.execute_sync(lambda: 2) == 2
        assert scoper.asked == 1
    finally:
        HUB.remove_listener(scoper)
        for listener in saved:
            HUB.add_listener(listener)


async def test_async_pipeline_without_strategies_awaits_the_function_directly():
    """An empty pipeline runs the function through the terminal link's start() and counts it."""
    pipeline = PipelineBuilder("direct").build()

    async def work() -> int:
        return 7

    assert await pipeline.execute(work) == 7
    assert pipeline.stats.succeeded == 1


class Picky(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def wants(self, source: TelemetrySource, event: Event) -> bool:
        self.asked += 1
        return source.kind == "bulkhead"


def test_route_skips_listeners_that_do_not_want_the_event_and_caches_the_answer():
    """A listener with wants() only gets the events it asked for, and is asked once per kind and event."""
    hub = TelemetryHub()
    picky, everything = Picky(), Recorder()
    hub.add_listener(picky)
    hub.add_listener(everything)
    breaker = StrategyTelemetry(TelemetrySource("circuit_breaker", "b"), hub)
    bulkhead = StrategyTelemetry(TelemetrySource("bulkhead", "h"), hub)
    for _ in range(3):
        breaker.report(Event.CALL_REJECTED, CallRejected("circuit_open"))
    bulkhead.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    assert picky.events == [Event.CALL_REJECTED]
    assert len(everything.events) == 4
    assert picky.asked == 2
    hub.remove_listener(everything)
    assert not breaker.wants(Event.CALL_REJECTED)
    assert bulkhead.wants(Event.CALL_REJECTED)


def test_a_found_route_is_read_with_no_python_frame_and_wants_sees_the_kind_only():
    """report() reads a route it found before in C: the listener's on_event is the one frame it runs.

    wants() is asked once per kind and event, with a source that carries the kind (its name
    empty), and again after the listeners change.
    """
    seen: list[TelemetrySource] = []
    got: list[TelemetrySource] = []

    class Watching(Picky):
        def wants(self, source: TelemetrySource, event: Event) -> bool:
            seen.append(source)
            return source.kind == "bulkhead"

        def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
            self.events.append(event)
            got.append(source)

    hub = TelemetryHub()
    watching = Watching()
    hub.add_listener(watching)
    bulkhead = StrategyTelemetry(TelemetrySource("bulkhead", "h", "policy"), hub)
    bulkhead.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))  # found here
    assert seen == [TelemetrySource("bulkhead", "")]
    calls: list[str] = []

    def profile(frame: object, event: str, arg: object) -> None:
        if event == "call":
            calls.append(frame.f_code.co_name)  # type: ignore[attr-defined]

    full = CallRejected("bulkhead_full")
    sys.setprofile(profile)
    try:
        bulkhead.report(Event.CALL_REJECTED, full)
    finally:
        sys.setprofile(None)
    assert calls == ["report", "on_event"]
    assert got[-1] == TelemetrySource("bulkhead", "h", "policy")  # the reporter's own
    assert len(seen) == 1
    hub.add_listener(Recorder())  # the routes are made again for the new set of listeners
    bulkhead.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    assert len(seen) == 2
    assert len(watching.events) == 3


def test_a_raising_wants_gets_every_event_and_is_counted():
    """A listener whose wants() raises is treated as wanting everything; the hub counts the error."""

    class Broken(Recorder):
        def wants(self, source: TelemetrySource, event: Event) -> bool:
            raise RuntimeError("broken filter")

    hub = TelemetryHub()
    broken = Broken()
    hub.add_listener(broken)
    StrategyTelemetry(TelemetrySource("retry", "r"), hub).report(Event.CALL_REJECTED, CallRejected("x"))
    assert broken.events == [Event.CALL_REJECTED]
    assert hub.errors == 1


def test_an_async_wants_is_a_failure_of_its_listener_counted_and_its_coroutine_closed() -> None:
    """A coroutine is never awaited, so its truth says nothing: the hub reports it as any broken
    filter (once per route), closes it (no "never awaited" warning), and other listeners are served."""
    made: list[types.CoroutineType[object, object, bool]] = []

    class Async(Recorder):
        async def wants(self, source: TelemetrySource, event: Event) -> bool:
            return False

    class Kept(Async):
        def wants(self, source: TelemetrySource, event: Event) -> object:  # type: ignore[override]
            answer = super().wants(source, event)
            made.append(answer)  # type: ignore[arg-type]
            return answer

    hub = TelemetryHub()
    broken, everything = Kept(), Recorder()
    hub.add_listener(broken)
    hub.add_listener(everything)
    telemetry = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
    for _ in range(2):
        telemetry.report(Event.CALL_REJECTED, CallRejected("x"))
    assert hub.errors == 1
    assert made[0].cr_frame is None  # closed, never awaited
    assert (len(broken.events), len(everything.events)) == (2, 2)


class Counting(Step):
    """A step that counts its successes (the drivers call on_success only while it judges)."""

    def __init__(self) -> None:
        super().__init__()
        self.successes = 0

    def on_success(self, ctx: ExecutionContext, token: object, result: object) -> None:
        self.successes += 1


async def test_the_drivers_read_a_step_as_it_was_settled_at_build_and_as_settle_records_it() -> None:
    """build() settles every linked step; a change made afterwards counts once settle() records it."""
    outer, inner = Counting(), Counting()
    pipeline = PipelineBuilder("settled").add(outer).add(inner).build()
    assert pipeline.execute_sync(lambda: 1) == 1
    assert (outer.successes, inner.successes) == (1, 1)
    inner._judges = False  # an instance turning a hook off after the build: not read until settled
    assert await pipeline.execute(_one) == 1
    assert inner.successes == 2
    inner.settle()
    assert pipeline.execute_sync(lambda: 1) == 1
    assert await pipeline.execute(_one) == 1
    assert (outer.successes, inner.successes) == (4, 2)


async def _one() -> int:
    return 1


class PlanReads(Counting):
    """A step that counts the reads of its plan from the step itself (``step._plan``)."""

    reads = 0

    @property  # type: ignore[override]
    def _plan(self) -> list[object]:
        self.reads += 1
        return Step._plan.__get__(self)  # type: ignore[attr-defined, no-any-return]

    @_plan.setter
    def _plan(self, value: list[object]) -> None:
        Step._plan.__set__(self, value)  # type: ignore[attr-defined]


async def test_a_driver_hands_the_next_step_its_plan_and_reads_none_of_its_fields() -> None:
    """Only the first step's plan is read from the step: each driver hands the next one its own.

    The drivers' code is shared by every step class: a field read from steps of several classes
    at one site misses the interpreter's per-type cache (settle()). A step's plan is one list,
    filled in place, so a step settled again is still read as settled, through its outer step.
    """
    outer, middle, inner = PlanReads(), PlanReads(), PlanReads()
    pipeline = PipelineBuilder("handed").add(outer).add(middle).add(inner).build()
    outer.reads = middle.reads = inner.reads = 0
    assert pipeline.execute_sync(lambda: 1) == 1
    assert await pipeline.execute(_one) == 1
    assert (middle.reads, inner.reads) == (0, 0)
    assert outer.reads == 2  # the head's, once per execution
    assert (outer.successes, middle.successes, inner.successes) == (2, 2, 2)
    inner._judges = False
    inner.settle()  # in place: the middle step hands on the list it holds
    assert pipeline.execute_sync(lambda: 1) == 1
    assert await pipeline.execute(_one) == 1
    assert (middle.successes, inner.successes) == (4, 2)


class OwnDrivers(Step):
    """A step whose class runs drivers of its own, taking the context only."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def execute(self, ctx: ExecutionContext) -> object:  # type: ignore[override]
        self.log.append("async")
        return await self.next.execute(ctx)

    def execute_sync(self, ctx: ExecutionContext) -> object:  # type: ignore[override]
        self.log.append("sync")
        return self.next.execute_sync(ctx)


async def test_a_next_step_with_drivers_of_its_own_is_run_with_the_context_only() -> None:
    """A step of a class with its own ``execute``/``execute_sync`` after a step run by the drivers."""
    log: list[str] = []
    outer = Counting()
    pipeline = PipelineBuilder("own").add(outer).add(OwnDrivers(log)).build()
    assert pipeline.execute_sync(lambda: 1) == 1
    assert await pipeline.execute(_one) == 1
    assert log == ["sync", "async"]
    assert outer.successes == 2


def test_a_step_run_before_any_build_settles_itself() -> None:
    """A step linked by hand (no builder) is settled on its first run, with its links as they are then."""
    outer, inner = Counting(), Counting()
    outer.next = inner
    ctx = ExecutionContext(lambda: 7, (), {}, "by-hand", None, True)
    assert outer.execute_sync(ctx) == 7
    assert (outer.successes, inner.successes) == (1, 1)


def test_the_deadlines_task_look_up_agrees_with_asyncio_and_runs_no_python_frame():
    """``_current_task(loop)`` answers as ``asyncio.current_task(loop)``: the task, or ``None``.

    Where asyncio's own is Python code (3.10, 3.11), the look-up is its table's ``get``, with no
    Python frame: a deadline scope entered asks it twice.
    """
    seen: list[tuple[object, object]] = []
    frames: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def watch(frame: types.FrameType, event: str, _arg: object) -> None:
            if event == "call":
                frames.append(frame.f_code.co_name)

        sys.setprofile(watch)
        try:
            found = deadline._current_task(loop)
        finally:
            sys.setprofile(None)
        seen.append((found, asyncio.current_task(loop)))

    asyncio.run(main())
    other = asyncio.new_event_loop()
    try:
        outside = deadline._current_task(other)  # a loop running no task
    finally:
        other.close()
    [(found, expected)] = seen
    assert found is expected
    assert isinstance(found, asyncio.Task)
    assert outside is None
    if isinstance(asyncio.current_task, types.FunctionType):
        assert frames == []


def test_a_counter_is_made_with_no_frame_and_reads_right_before_and_after_adds():
    """``Counter()`` runs no Python code; a new counter reads 0, then what was counted and added."""
    frames: list[str] = []

    def watch(frame: types.FrameType, event: str, _arg: object) -> None:
        if event == "call":
            frames.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        fresh, added = Counter(), Counter()
    finally:
        sys.setprofile(None)
    assert frames == []
    added.add(5)  # before any read
    assert added.value == 5
    assert fresh.value == 0
    for _ in range(3):
        next(fresh)
    assert fresh.value == 3
    fresh.add(2)
    assert (fresh.value, fresh.value) == (5, 5)
    assert read_all([fresh, added, Counter()]) == [5, 5, 0]


def test_a_patterns_own_source_is_the_named_tuple_its_kind_and_name_make():
    """The source made for an instance used alone is exactly ``TelemetrySource(kind, name)``.

    It is made at first use (an instance that only runs in a manager's pipelines never reports
    an event of its own), then kept: every read gives the same object.
    """
    for pattern in (
        CircuitBreaker("src-a"),
        Bulkhead("src-b"),
        RateLimiter("src-c", RateLimiterConfig(rate=10)),
        Retry("src-d", RetryPolicy()),
    ):
        assert pattern._telemetry is None
        assert pattern.telemetry is pattern.telemetry
        source = pattern.telemetry.source
        assert type(source) is TelemetrySource
        assert source == TelemetrySource(pattern.kind, pattern.name)
        assert (source.pipeline, source.spans, source.metrics, source.key, source.metric_key) == (
            None,
            True,
            True,
            None,
            None,
        )
