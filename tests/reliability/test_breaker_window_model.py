"""Every kind of breaker checked against a reference model, step by step (hypothesis).

The space :mod:`test_breaker_model` explores, widened: consecutive, count-window and
time-window breakers (failure and slow-call rates, ``minimum_calls``), ``record_exceptions``
as classes or a predicate, ``record_result``, ``break_duration``, ``max_half_open_wait``,
every manual control (``force_open`` forced and isolated, ``force_closed``, ``disable``,
``metrics_only``, ``reset``), reloads to another config while calls run, calls through
``call``/``call_sync`` and ``guard()``, several half-open probes in flight, cancellations and
rejections mixed in, and a clock that moves while calls run. After every step the stats, every
``CircuitOpenError`` (its state and ``retry_after``, also as given to ``on_rejection`` and
reported to telemetry) and every state change (to callbacks and to telemetry) equal the model's.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from otel_resilience.engine.events import Event
from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CountWindow,
    TimeWindow,
)
from otel_resilience.patterns.circuit_breaker.config import DEFAULT_FAILURE_THRESHOLD
from otel_resilience.testing import EventRecorder, FakeClock

CLOSED, OPEN, HALF_OPEN, DISABLED, METRICS_ONLY = "closed", "open", "half_open", "disabled", "metrics_only"
OUTCOMES = ("ok", "ok", "bad", "fail", "fail", "ignored", "unrecorded", "cancel")
_NAMES = itertools.count()


class RecordedError(Exception):
    """Counted as a failure."""


class IgnoredError(Exception):
    """Counted as neither success nor failure."""


class UnrecordedError(Exception):
    """Neither recorded nor ignored: a success."""


class Interrupt(BaseException):
    """A non-Exception escape of a sync call: a cancellation."""


def _recorded(error: BaseException) -> bool:
    return isinstance(error, RecordedError)


def _bad(result: object) -> bool:
    return result == "bad"


@dataclass(frozen=True)
class Shape:
    """The drawn configuration, as the model reads it."""

    window: CountWindow | TimeWindow | None
    failure_threshold: int
    success_threshold: int
    timeout: float
    half_open_max_calls: int
    break_base: float | None
    max_half_open_wait: float | None
    rate: float | None
    minimum_calls: int | None
    slow_call_duration: float | None
    slow_rate: float | None
    judge_results: bool

    def open_seconds(self, openings: int) -> float:
        if self.break_base is None:
            return self.timeout
        return self.break_base * min(openings, 3)


@dataclass
class Model:
    """The documented state machine of every kind of breaker, written plainly."""

    shape: Shape
    now: float
    state: str = CLOSED
    generation: int = 0
    failure_count: int = 0
    success_count: int = 0
    slow_probes: int = 0
    in_flight: int = 0
    probe_started: float = 0.0
    opened_until: float = -math.inf
    reopens: int = 0
    reclaimed: set[int] = field(default_factory=set)
    window: list[tuple[float, bool, bool]] = field(default_factory=list)
    events: list[tuple[str, str, str, int, float | None]] = field(default_factory=list)
    totals: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("successes", "failures", "rejected", "ignored", "cancelled", "times_opened"), 0
        )
    )

    # -- the window -----------------------------------------------------------------------

    def window_totals(self) -> tuple[int, int, int]:
        window = self.shape.window
        held = self.window
        if isinstance(window, CountWindow):
            held = held[-window.size :]
        elif isinstance(window, TimeWindow):
            width = window.seconds / window.buckets
            current = math.floor(self.now / width)
            held = [e for e in held if math.floor(e[0] / width) > current - window.buckets]
        return (len(held), sum(e[1] for e in held), sum(e[2] for e in held))

    def read_window(self) -> None:
        """What a read of the rates does: ``failure_count`` follows the window (not while OPEN)."""
        if self.shape.window is not None and self.state != OPEN:
            self.failure_count = self.window_totals()[1]

    # -- transitions ----------------------------------------------------------------------

    def transition(self, new: str, reason: str, open_for: float | None = None) -> None:
        old = self.state
        self.success_count = self.slow_probes = 0
        duration = None
        if new == OPEN:
            if old == HALF_OPEN:
                self.reopens += 1
            elif old != OPEN:
                self.reopens = 0
            if old != OPEN:
                self.totals["times_opened"] += 1
            duration = self.shape.open_seconds(self.reopens + 1) if open_for is None else open_for
            self.opened_until = self.now + duration
        else:
            self.failure_count = 0
            self.opened_until = -math.inf
        self.state = new
        self.generation += 1
        self.in_flight = 0
        self.window.clear()
        if old != new or new == OPEN:
            self.events.append((old, new, reason, self.reopens, duration))

    def poll(self) -> None:
        if self.state == OPEN and self.now >= self.opened_until:
            self.transition(HALF_OPEN, "timeout_elapsed")

    def reclaim(self) -> None:
        wait = self.shape.max_half_open_wait
        if (
            wait is None
            or self.state != HALF_OPEN
            or not self.in_flight
            or self.in_flight < self.shape.half_open_max_calls
            or self.now < self.probe_started + wait
        ):
            return
        self.totals["failures"] += self.in_flight
        self.reclaimed.add(self.generation)
        self.transition(OPEN, "probe_timed_out")

    def admit(self) -> int | tuple[str, float]:
        """Return the generation of an admitted call, or the rejection's ``(state, retry_after)``."""
        if self.state == OPEN and self.now < self.opened_until:
            self.totals["rejected"] += 1
            return (OPEN, self.opened_until - self.now)
        self.poll()
        self.reclaim()
        if self.state in {CLOSED, DISABLED, METRICS_ONLY}:
            return self.generation
        if self.state == HALF_OPEN and self.in_flight < self.shape.half_open_max_calls:
            self.in_flight += 1
            if self.shape.max_half_open_wait is not None:
                self.probe_started = self.now
            return self.generation
        self.totals["rejected"] += 1
        if self.state == HALF_OPEN:
            wait = self.shape.max_half_open_wait
            if wait is None:
                return (HALF_OPEN, self.shape.open_seconds(self.reopens + 2))
            return (HALF_OPEN, max(self.probe_started + wait - self.now, 0.001))
        return (OPEN, max(0.0, self.opened_until - self.now))

    # -- outcomes ---------------------------------------------------------------------------

    def judge(self, failed: bool, slow: bool) -> None:
        shape = self.shape
        if shape.window is None:
            self.failure_count = self.failure_count + 1 if failed else 0
            calls, failures, slows = 0, self.failure_count, 0
        else:
            self.window.append((self.now, failed, slow))
            calls, failures, slows = self.window_totals()
            self.failure_count = failures
        reason = None
        if shape.window is None:
            if failures >= shape.failure_threshold:
                reason = "failure_threshold"
        elif calls >= (shape.minimum_calls or 0):
            assert shape.rate is not None
            if failures / calls >= shape.rate:
                reason = "failure_rate"
            elif shape.slow_rate is not None and slows / calls >= shape.slow_rate:
                reason = "slow_call_rate"
        if reason is None or self.state == DISABLED:
            return
        if self.state == METRICS_ONLY:
            self.failure_count = 0
            self.window.clear()
            self.events.append((METRICS_ONLY, METRICS_ONLY, reason, 0, shape.open_seconds(1)))
            return
        self.transition(OPEN, reason)

    def end(self, generation: int, outcome: str, slow: bool) -> None:
        """``outcome``: ``success``, ``failure``, ``ignored`` or ``cancelled``."""
        current = generation == self.generation
        reclaimed = generation in self.reclaimed
        if outcome == "success":
            if not reclaimed:
                self.totals["successes"] += 1
            if not current:
                return
            if self.state == HALF_OPEN:
                self.in_flight -= 1
                self.success_count += 1
                self.slow_probes += slow
                if self.success_count >= self.shape.success_threshold:
                    shape = self.shape
                    if (
                        shape.slow_rate is not None
                        and self.slow_probes / self.success_count >= shape.slow_rate
                    ):
                        self.transition(OPEN, "slow_call_rate")  # the probes were too slow
                    else:
                        self.transition(CLOSED, "probe_succeeded")
                return
            self.judge(False, slow)
        elif outcome == "failure":
            if reclaimed:
                return
            self.totals["failures"] += 1
            if not current:
                return
            if self.state == HALF_OPEN:
                self.transition(OPEN, "probe_failed")
                return
            self.judge(True, slow)
        else:
            if not reclaimed:
                self.totals[outcome] += 1
            if current and self.state == HALF_OPEN:
                self.in_flight -= 1

    # -- manual control ---------------------------------------------------------------------

    def reload(self, shape: Shape) -> None:
        """A reload: the state, its timer and the counts carry over; calls in flight judge nothing."""
        if shape.window != self.shape.window:
            self.window.clear()
            self.failure_count = 0
        self.shape = shape
        self.generation += 1
        self.in_flight = 0

    def force_open(self, duration: float | None, reason: str) -> None:
        open_for = math.inf if duration is None else duration
        if reason == "isolated" and (
            self.state in {DISABLED, METRICS_ONLY}
            or (self.state == OPEN and self.opened_until >= self.now + open_for)
        ):
            return
        self.transition(OPEN, reason, open_for)


def outcome_of(outcome: str, *, judged: bool, guarded: bool) -> str:
    """How the breaker counts a call that ended with ``outcome`` (``judged``: by ``record_result``)."""
    if outcome in {"ok", "unrecorded"}:
        return "success"
    if outcome == "bad":
        return "failure" if judged and not guarded else "success"
    if outcome == "fail":
        return "failure"
    return {"ignored": "ignored", "cancel": "cancelled"}[outcome]


def raise_for(outcome: str) -> str:
    """Run one sync outcome: return a value or raise."""
    if outcome == "cancel":
        raise Interrupt
    errors: dict[str, type[Exception]] = {
        "fail": RecordedError,
        "ignored": IgnoredError,
        "unrecorded": UnrecordedError,
    }
    if outcome in errors:
        raise errors[outcome]
    return outcome


@dataclass
class Call:
    """One async call in flight."""

    task: asyncio.Task[object]
    generation: int
    started: float
    guarded: bool
    judged: bool
    future: asyncio.Future[object]


windows = st.one_of(
    st.none(),
    st.builds(CountWindow, size=st.integers(1, 6)),
    st.builds(TimeWindow, seconds=st.sampled_from([2.0, 3.0, 5.0]), buckets=st.integers(1, 3)),
)


settings_drawn = st.fixed_dictionaries(
    {
        "window": windows,
        "failure_threshold": st.integers(1, 4),
        "success_threshold": st.integers(1, 3),
        "timeout": st.integers(1, 5),
        "half_open_max_calls": st.integers(1, 3),
        "break_base": st.none() | st.sampled_from([1.0, 2.0]),
        "max_half_open_wait": st.none() | st.sampled_from([1.0, 2.5, 4.0]),
        "rate": st.sampled_from([0.25, 0.5, 0.75, 1.0]),
        "minimum_calls": st.integers(1, 4),
        "slow_call_duration": st.none() | st.sampled_from([1.0, 2.0]),
        "slow_rate": st.sampled_from([None, 0.5, 1.0]),
        "judge_results": st.booleans(),
        "predicate": st.booleans(),
    }
)


def made(
    *,
    window: CountWindow | TimeWindow | None,
    failure_threshold: int,
    success_threshold: int,
    timeout: int,
    half_open_max_calls: int,
    break_base: float | None,
    max_half_open_wait: float | None,
    rate: float,
    minimum_calls: int,
    slow_call_duration: float | None,
    slow_rate: float | None,
    judge_results: bool,
    predicate: bool,
) -> tuple[Shape, CircuitBreakerConfig]:
    """The drawn settings as the model's shape and the breaker's config."""
    windowed: dict[str, object] = {}
    if window is not None:
        if isinstance(window, CountWindow):
            minimum_calls = min(minimum_calls, window.size)
        windowed = {"failure_rate_threshold": rate, "minimum_calls": minimum_calls}
        if slow_call_duration is not None:
            windowed["slow_call_duration"] = slow_call_duration
            windowed["slow_call_rate_threshold"] = slow_rate
    breaks: Callable[[int], float] | None = None
    if break_base is not None:
        base = break_base

        def breaks(openings: int) -> float:
            return base * min(openings, 3)

    config = CircuitBreakerConfig(
        # a streak's setting: refused beside a window, which the model ignores it for
        failure_threshold=failure_threshold if window is None else DEFAULT_FAILURE_THRESHOLD,
        success_threshold=success_threshold,
        timeout=float(timeout),
        half_open_max_calls=half_open_max_calls,
        record_exceptions=_recorded if predicate else (RecordedError,),
        ignore_exceptions=(IgnoredError,),
        sliding_window=window,
        record_result=_bad if judge_results else None,
        break_duration=breaks,
        max_half_open_wait=max_half_open_wait,
        **windowed,  # type: ignore[arg-type]
    )
    shape = Shape(
        window=window,
        failure_threshold=failure_threshold,
        success_threshold=success_threshold,
        timeout=float(timeout),
        half_open_max_calls=half_open_max_calls,
        break_base=break_base,
        max_half_open_wait=max_half_open_wait,
        rate=config.failure_rate_threshold,
        minimum_calls=config.minimum_calls,
        slow_call_duration=config.slow_call_duration,
        slow_rate=config.slow_call_rate_threshold,
        judge_results=judge_results,
    )
    return shape, config


class WindowedBreakerMachine(RuleBasedStateMachine):
    """Drives a real breaker and the model with the same steps."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, object]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.clock = FakeClock(1000.0)
        self.calls: dict[int, Call] = {}
        self.next_id = 0
        self.changes: list[tuple[str, str, str, int, float | None]] = []
        self.rejections: list[tuple[str, float]] = []
        self.expected_rejections: list[tuple[str, float]] = []
        self.recorder = EventRecorder()
        self.recorder.__enter__()
        self.name = f"window-model-{next(_NAMES)}"
        self.breaker: CircuitBreaker
        self.model: Model

    @initialize(params=settings_drawn)
    def build(self, params: dict[str, object]) -> None:
        shape, config = made(**params)  # type: ignore[arg-type]
        self.breaker = CircuitBreaker(self.name, config, clock=self.clock)
        self.breaker.on_state_change(
            lambda c: self.changes.append((c.old, c.new, c.reason, c.reopens, c.duration))
        )
        self.breaker.on_rejection(lambda e: self.rejections.append((e.state, e.retry_after)))
        self.model = Model(shape, self.clock.now())

    # -- helpers ------------------------------------------------------------------------------

    def settle(self) -> None:
        async def spin() -> None:
            for _ in range(8):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def in_flight_ids(self) -> list[int]:
        return sorted(i for i, call in self.calls.items() if not call.task.done())

    def check_rejection(self, error: BaseException | None, expected: tuple[str, float]) -> None:
        assert isinstance(error, CircuitOpenError), error
        state, retry_after = expected
        assert error.state == state
        assert error.retry_after > 0.0, error.retry_after
        assert error.retry_after == retry_after
        self.expected_rejections.append(expected)

    def slow(self, started: float) -> bool:
        duration = self.model.shape.slow_call_duration
        return duration is not None and self.clock.now() >= started + duration

    def move(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.model.now = self.clock.now()

    # -- rules --------------------------------------------------------------------------------

    @rule(count=st.integers(1, 3), guarded=st.booleans())
    def start_async_calls(self, count: int, guarded: bool) -> None:
        for _ in range(count):
            self.start_async_call(guarded=guarded)

    def start_async_call(self, *, guarded: bool) -> None:
        started: list[asyncio.Future[object]] = []

        async def dependency() -> object:
            future = self.loop.create_future()
            started.append(future)
            return await future

        async def in_guard() -> object:
            async with self.breaker.guard():
                return await dependency()

        task = self.loop.create_task(in_guard() if guarded else self.breaker.call(dependency))
        self.settle()
        admitted = self.model.admit()
        if not isinstance(admitted, int):
            assert not started, "a rejected call reached the dependency"
            assert task.done()
            self.check_rejection(task.exception(), admitted)
            return
        assert len(started) == 1, "an admitted call did not reach the dependency"
        self.calls[self.next_id] = Call(
            task, admitted, self.clock.now(), guarded, self.model.shape.judge_results, started[0]
        )
        self.next_id += 1

    @precondition(lambda self: bool(self.in_flight_ids()))
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def finish_async_call(self, data: st.DataObject, outcome: str) -> None:
        call_id = data.draw(st.sampled_from(self.in_flight_ids()))
        call = self.calls.pop(call_id)
        if outcome in {"ok", "bad"}:
            call.future.set_result(outcome)
        elif outcome == "cancel":
            call.task.cancel()
        else:
            try:
                raise_for(outcome)
            except Exception as error:
                call.future.set_exception(error)
        slow = self.slow(call.started)
        self.settle()
        assert call.task.done()
        if outcome == "cancel":
            assert call.task.cancelled()
        elif outcome in {"ok", "bad"}:
            assert call.task.result() == outcome
        else:
            call.task.exception()
        counted = outcome_of(outcome, judged=call.judged, guarded=call.guarded)
        self.model.end(call.generation, counted, slow)

    @rule(
        outcome=st.sampled_from(OUTCOMES), during=st.sampled_from([0.0, 0.0, 1.0, 2.5]), guarded=st.booleans()
    )
    def sync_call(self, outcome: str, during: float, guarded: bool) -> None:
        reached: list[bool] = []

        def dependency() -> str:
            reached.append(True)
            self.clock.advance(during)  # the call takes this long
            return raise_for(outcome)

        admitted = self.model.admit()
        started = self.clock.now()
        error: BaseException | None = None
        result: object = None
        try:
            if guarded:
                with self.breaker.guard():
                    result = dependency()
            else:
                result = self.breaker.call_sync(dependency)
        except (Exception, Interrupt) as caught:
            error = caught
        self.model.now = self.clock.now()
        if not isinstance(admitted, int):
            assert not reached, "a rejected call reached the dependency"
            self.check_rejection(error, admitted)
            return
        assert reached
        if outcome in {"ok", "bad"}:
            assert error is None, error
            assert result == outcome
        else:
            assert error is not None
        counted = outcome_of(outcome, judged=self.model.shape.judge_results, guarded=guarded)
        self.model.end(admitted, counted, self.slow(started))

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 3.0, 6.0]))
    def advance(self, seconds: float) -> None:
        self.move(seconds)

    @rule(
        action=st.sampled_from(
            [
                "reset",
                "force_closed",
                "disable",
                "metrics_only",
                "open",
                "open_1",
                "open_3",
                "isolate_1",
                "isolate_4",
            ]
        )
    )
    def manual_control(self, action: str) -> None:
        model = self.model
        if action == "reset":
            self.breaker.reset()
            model.transition(CLOSED, "reset")
        elif action == "force_closed":
            self.breaker.force_closed()
            model.transition(CLOSED, "forced")
        elif action == "disable":
            self.breaker.disable()
            model.transition(DISABLED, "forced")
        elif action == "metrics_only":
            self.breaker.metrics_only()
            model.transition(METRICS_ONLY, "forced")
        elif action == "open":
            self.breaker.force_open()
            model.force_open(None, "forced")
        elif action.startswith("open_"):
            seconds = float(action.removeprefix("open_"))
            self.breaker.force_open(seconds)
            model.force_open(seconds, "forced")
        else:
            seconds = float(action.removeprefix("isolate_"))
            self.breaker.force_open(seconds, reason="isolated")
            model.force_open(seconds, "isolated")

    @rule(params=settings_drawn)
    def reload(self, params: dict[str, object]) -> None:
        shape, config = made(**params)  # type: ignore[arg-type]
        self.breaker._reconfigure(config)
        self.model.reload(shape)

    # -- checks -------------------------------------------------------------------------------

    @invariant()
    def no_callback_failed(self) -> None:
        assert not self.loop_errors, self.loop_errors

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "model"):
            return
        model = self.model
        model.poll()
        model.read_window()
        stats = self.breaker.get_stats()
        assert stats["state"] == model.state
        assert stats["failure_count"] == model.failure_count
        assert stats["success_count"] == model.success_count
        assert stats["half_open_in_flight"] == model.in_flight
        for total in ("successes", "failures", "rejected", "ignored", "cancelled"):
            assert stats[f"total_{total}"] == model.totals[total], total  # type: ignore[literal-required]
        assert stats["times_opened"] == model.totals["times_opened"]
        expected_retry_after = max(0.0, model.opened_until - model.now) if model.state == OPEN else 0.0
        assert stats["retry_after"] == expected_retry_after
        if model.shape.window is None:
            assert stats["failure_rate"] is None
        else:
            calls, failures, slows = model.window_totals()
            expected = (failures / calls, slows / calls) if calls else (0.0, 0.0)
            assert (stats["failure_rate"], stats["slow_call_rate"]) == expected

    @invariant()
    def reports_the_model_changes(self) -> None:
        if not hasattr(self, "model"):
            return
        assert self.changes == self.model.events
        reported = [
            (a.old, a.new, a.reason, a.reopens, a.duration)
            for source, event, a in list(self.recorder.events)
            if event is Event.STATE_CHANGED and source.name == self.name
        ]
        assert reported == self.model.events
        assert self.rejections == self.expected_rejections
        reasons = [
            a.reason
            for source, event, a in list(self.recorder.events)
            if event is Event.CALL_REJECTED and source.name == self.name
        ]
        assert reasons == [
            "circuit_open" if state == OPEN else "half_open_full" for state, _ in self.expected_rejections
        ]

    def teardown(self) -> None:
        self.recorder.__exit__(None, None, None)
        pending = [call.task for call in self.calls.values() if not call.task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


WindowedBreakerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_every_breaker_kind_matches_reference_model = WindowedBreakerMachine.TestCase
test_every_breaker_kind_matches_reference_model.__doc__ = (
    "After every random step the stats, rejections and state changes equal the model's."
)
