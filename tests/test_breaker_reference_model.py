"""The circuit breaker against a reference model of its documented rules, through every driver.

The model (:class:`Model`) is the README's circuit breaker section and the
``CircuitBreakerConfig`` docstrings written the obvious way: every recorded call of a sliding
window is a ``(t, failed, slow)`` tuple in a list, judged by brute force with exact fractions;
each state period has a number, and a call ends in the period that admitted it or counts in the
totals only. Random sequences run on a real breaker on a :class:`FakeClock`: call starts and
ends (several in flight at once: concurrent half-open probes), outcomes (success, recorded
failure, unrecorded error, ignored error, an inner rejection, a value ``record_result`` counts as
failed, a predicate that raises, cancellation), clock moves (exactly to the end of the OPEN
period, to the next bucket boundary, to a call's slow-call duration, to a probe's
``max_half_open_wait``), operator actions (``force_open``, an isolation, ``reset``,
``force_closed``, ``disable``, ``metrics_only``) and reloads. Each runs through ``call``
(tasks), ``call_sync`` (threads), a guard entered and left by hand (``with`` and ``async
with``), a manager's policy and one key of it (reloaded by the manager); after each step the state, the admission (and the rejection's state and
``retry_after``), the live counts, ``get_stats()``, ``rates()`` and the state changes reported
(reason, re-opens, duration) are the model's. All times are multiples of 0.25 s, so that every
sum of them is exact.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CountWindow,
    ResilienceConfig,
    ResilienceManager,
    TimeWindow,
)
from otel_resilience.engine.events import StateChanged
from otel_resilience.testing import FakeClock


class Boom(Exception):
    """A recorded failure of the dependency."""


class Other(Exception):
    """An error neither recorded nor ignored: the dependency answered (a success)."""


class Ignored(Exception):
    """An ignored error: neither a success nor a failure."""


class Odd(Exception):
    """An error the ``record_exceptions`` predicate raises on (a tuple does not record it)."""


def recorded(error: BaseException) -> bool:
    if isinstance(error, Odd):
        raise RuntimeError("the predicate fails")
    return isinstance(error, Boom)


def failed_result(value: object) -> bool:
    if value == "odd":
        raise RuntimeError("the predicate fails")
    return value == "bad"


OUTCOMES = ("ok", "boom", "other", "ignored", "inner_rejection", "bad_result", "cancel", "odd", "odd_result")
MAX_IN_FLIGHT = 4
NAMES = itertools.count()
"""Each scenario's breaker has a name of its own (one name would combine their telemetry)."""


@dataclass(frozen=True)
class Spec:
    """What a scenario's breaker is built with (the model reads the same fields)."""

    window: CountWindow | TimeWindow | None
    failure_threshold: int
    minimum_calls: int
    rate_threshold: Fraction
    slow_call_duration: float | None
    slow_threshold: Fraction
    success_threshold: int
    half_open_max_calls: int
    timeout: float
    record_by_predicate: bool
    record_result: bool
    break_duration: str | None
    """``None``, ``"grows"`` (:func:`growing`) or ``"fails"`` (:func:`failing_later`)."""
    max_half_open_wait: float | None

    def config(self) -> CircuitBreakerConfig:
        record: Any = recorded if self.record_by_predicate else (Boom,)
        fields: dict[str, Any] = {
            "success_threshold": self.success_threshold,
            "half_open_max_calls": self.half_open_max_calls,
            "timeout": self.timeout,
            "record_exceptions": record,
            "ignore_exceptions": (Ignored,),
            "record_result": failed_result if self.record_result else None,
            "break_duration": BREAK_DURATIONS.get(self.break_duration or ""),
            "max_half_open_wait": self.max_half_open_wait,
        }
        if self.window is None:
            fields["failure_threshold"] = self.failure_threshold
        else:
            fields.update(
                sliding_window=self.window,
                minimum_calls=self.minimum_calls,
                failure_rate_threshold=float(self.rate_threshold),
            )
            if self.slow_call_duration is not None:
                fields.update(
                    slow_call_duration=self.slow_call_duration,
                    slow_call_rate_threshold=float(self.slow_threshold),
                )
        return CircuitBreakerConfig(**fields)


def growing(openings: int) -> float:
    """1 s for the first opening in a row, 2 s for the second ... up to 4 s."""
    return float(min(openings, 4))


def failing_later(openings: int) -> float:
    """2 s for the first opening in a row, then raises (``timeout`` is used instead)."""
    if openings > 1:
        raise ArithmeticError(openings)
    return 2.0


BREAK_DURATIONS: dict[str, Callable[[int], float]] = {"grows": growing, "fails": failing_later}


# -- the reference model --------------------------------------------------------------------------


class Model:
    """The breaker's documented rules, as plainly as they can be written."""

    def __init__(self, spec: Spec, *, judges_results: bool) -> None:
        self.spec = spec
        self.judges_results = judges_results  # a guarded block returns no value to judge
        self.state = "closed"
        self.period = 0  # the state period: a call counts towards the period that admitted it
        self.opened_until = -math.inf
        self.reopens = 0  # of the outage episode: HALF_OPEN -> OPEN moves in a row
        self.in_flight = 0
        self.probe_started = 0.0
        self.slow_probes = 0
        self.reclaimed: set[int] = set()  # the periods whose hung probes were counted as failed
        self.calls: list[tuple[float, bool, bool]] = []  # the window's calls: (t, failed, slow)
        self.failure_count = 0
        self.success_count = 0
        self.totals = dict.fromkeys(("successes", "failures", "rejected", "ignored", "cancelled"), 0)
        self.times_opened = 0
        self.last_failure_type: str | None = None
        self.changes: list[tuple[str, str, str, int, float | None]] = []

    # the window

    def held(self, now: float) -> tuple[int, int, int]:
        window = self.spec.window
        if isinstance(window, CountWindow):
            kept = self.calls[-window.size :]
        else:
            assert isinstance(window, TimeWindow)
            width = window.seconds / window.buckets
            current = math.floor(now / width)
            kept = [c for c in self.calls if current - window.buckets < math.floor(c[0] / width) <= current]
        return (len(kept), sum(c[1] for c in kept), sum(c[2] for c in kept))

    # transitions

    def open_seconds(self, openings: int) -> float:
        if self.spec.break_duration == "grows":
            return float(min(openings, 4))
        if self.spec.break_duration == "fails" and openings == 1:
            return 2.0
        return self.spec.timeout  # none, or one that failed

    def enter(self, new: str, reason: str, now: float, open_for: float | None = None) -> None:
        old = self.state
        self.success_count = 0
        duration = None
        if new == "open":
            if old == "half_open":
                self.reopens += 1
            elif old != "open":
                self.reopens = 0  # a new outage episode
            if old != "open":
                self.times_opened += 1
            duration = self.open_seconds(self.reopens + 1) if open_for is None else open_for
            self.opened_until = now + duration
        else:
            self.failure_count = 0
            self.opened_until = -math.inf
        self.state = new
        self.period += 1
        self.in_flight = 0
        self.slow_probes = 0
        self.calls = []  # each period judges the calls made in it
        if old != new or new == "open":
            self.changes.append((old, new, reason, self.reopens, duration))

    def poll(self, now: float) -> bool:
        if self.state == "open" and now >= self.opened_until:
            self.enter("half_open", "timeout_elapsed", now)
            return True
        return False

    # calls

    def admit(self, now: float) -> tuple[str, float] | int:
        """The admitted call's period, or the rejection's ``(state, retry_after)``."""
        if self.state in ("closed", "disabled", "metrics_only"):
            return self.period
        if self.state == "open" and now < self.opened_until:
            self.totals["rejected"] += 1
            return ("open", self.opened_until - now)
        if not self.poll(now):
            self.reclaim(now)
        if self.state == "half_open" and self.in_flight < self.spec.half_open_max_calls:
            self.in_flight += 1
            self.probe_started = now
            return self.period
        self.totals["rejected"] += 1
        wait = self.spec.max_half_open_wait
        if self.state == "half_open":
            if wait is None:  # what a failed probe would keep it open for
                return ("half_open", self.open_seconds(self.reopens + 2))
            return ("half_open", max(self.probe_started + wait - now, 0.001))  # until the hung ones count
        return ("open", max(self.opened_until - now, 0.001))

    def reclaim(self, now: float) -> None:
        """Every probe place taken for ``max_half_open_wait`` since the newest started: all failed."""
        wait = self.spec.max_half_open_wait
        if (
            wait is not None
            and self.state == "half_open"
            and self.in_flight >= self.spec.half_open_max_calls
            and now >= self.probe_started + wait
        ):
            self.totals["failures"] += self.in_flight
            self.reclaimed.add(self.period)
            self.enter("open", "probe_timed_out", now)

    def end(self, period: int, started: float, outcome: str, now: float) -> None:
        spec = self.spec
        slow = spec.slow_call_duration is not None and now >= started + spec.slow_call_duration
        current = period == self.period
        if period in self.reclaimed:  # counted as failed when it was reclaimed
            return
        judged = spec.record_result and self.judges_results
        if (outcome == "odd" and spec.record_by_predicate) or (outcome == "odd_result" and judged):
            outcome = "ignored"  # a predicate that raises: its error is raised, the permit given back
        if outcome in ("cancel", "ignored", "inner_rejection"):  # neither outcome: the permit given back
            self.totals["cancelled" if outcome == "cancel" else "ignored"] += 1
            if current and self.state == "half_open":
                self.in_flight -= 1
        elif outcome == "boom" or (outcome == "bad_result" and judged):
            self.failed(current, outcome, slow, now)
        else:
            self.succeeded(current, slow, now)

    def succeeded(self, current: bool, slow: bool, now: float) -> None:
        spec = self.spec
        self.totals["successes"] += 1
        if not current:
            return
        if self.state != "half_open":
            self.judge(False, slow, now)
            return
        self.in_flight -= 1
        self.success_count += 1
        self.slow_probes += slow
        if self.success_count < spec.success_threshold:
            return
        slow_rate = Fraction(self.slow_probes, self.success_count)
        if spec.slow_call_duration is not None and slow_rate >= spec.slow_threshold:
            self.enter("open", "slow_call_rate", now)  # slow probes never close it
        else:
            self.enter("closed", "probe_succeeded", now)

    def failed(self, current: bool, outcome: str, slow: bool, now: float) -> None:
        self.totals["failures"] += 1
        self.last_failure_type = f"{__name__}.Boom" if outcome == "boom" else "result"
        if not current:
            return
        if self.state == "half_open":
            self.enter("open", "probe_failed", now)
        else:
            self.judge(True, slow, now)

    def judge(self, failed: bool, slow: bool, now: float) -> None:
        spec = self.spec
        reason = None
        if spec.window is None:
            self.failure_count = self.failure_count + 1 if failed else 0
            if self.failure_count >= spec.failure_threshold:
                reason = "failure_threshold"
        else:
            self.calls.append((now, failed, slow))
            calls, failures, slows = self.held(now)
            self.failure_count = failures
            if calls >= spec.minimum_calls:
                if Fraction(failures, calls) >= spec.rate_threshold:
                    reason = "failure_rate"
                elif spec.slow_call_duration is not None and Fraction(slows, calls) >= spec.slow_threshold:
                    reason = "slow_call_rate"
        if reason is None or self.state == "disabled":
            return
        if self.state == "metrics_only":  # reports the trip it would make, and starts again
            self.failure_count = 0
            self.calls = []
            self.changes.append(("metrics_only", "metrics_only", reason, 0, self.open_seconds(1)))
            return
        self.enter("open", reason, now)

    def reload(self, spec: Spec) -> None:
        """The state, its timer and its probe successes carry over; the calls in flight judge nothing.

        The consecutive failures carry over, and so does the window's contents when the window is
        the same; another window starts empty.
        """
        if spec.window != self.spec.window:
            self.failure_count = 0
            self.calls = []
        self.spec = spec
        self.period += 1
        self.in_flight = 0

    # reads

    def peek_state(self, now: float) -> str:
        return "half_open" if self.state == "open" and now >= self.opened_until else self.state

    def rates(self, now: float) -> tuple[float, float] | None:
        """``rates()``: the window's rates now (it moves no state)."""
        if self.spec.window is None:
            return None
        calls, failures, slows = self.held(now)
        if self.state != "open":  # the window's failures, but the ones that tripped it while OPEN
            self.failure_count = failures
        return (failures / calls, slows / calls) if calls else (0.0, 0.0)

    def stats(self, now: float) -> dict[str, Any]:
        """``get_stats()``: an OPEN breaker whose period ended moves to HALF_OPEN first."""
        self.poll(now)
        rates = self.rates(now)
        return {
            **self.live(),
            "state": self.state,
            "half_open_in_flight": self.in_flight if self.state == "half_open" else 0,
            "retry_after": max(0.0, self.opened_until - now) if self.state == "open" else 0.0,
            "last_failure_type": self.last_failure_type,
            "failure_rate": None if rates is None else rates[0],
            "slow_call_rate": None if rates is None else rates[1],
            "total_requests": sum(self.totals.values()),
        }

    def live(self) -> dict[str, Any]:
        return {
            "failure_count": self.failure_count,
            "success_count": self.success_count,
            "times_opened": self.times_opened,
            **{f"total_{name}": value for name, value in self.totals.items()},
        }


def live_stats(breaker: CircuitBreaker) -> dict[str, Any]:
    stats = breaker.stats
    return {
        "failure_count": stats.failure_count,
        "success_count": stats.success_count,
        "times_opened": stats.times_opened,
        "total_successes": stats.total_successes,
        "total_failures": stats.total_failures,
        "total_rejected": stats.total_rejected,
        "total_ignored": stats.total_ignored,
        "total_cancelled": stats.total_cancelled,
    }


# -- the drivers: start a call, end it later ---------------------------------------------------------


def raise_for(outcome: str) -> BaseException | None:
    return {
        "boom": Boom(),
        "other": Other(),
        "ignored": Ignored(),
        "inner_rejection": CircuitOpenError("inner", "open", 1.0),
        "odd": Odd(),
        "cancel": KeyboardInterrupt(),
    }.get(outcome)


RESULTS = {"bad_result": "bad", "odd_result": "odd"}

Started = tuple[str, float] | object
"""A started call's handle, or the rejection's ``(state, retry_after)``."""


class Driver:
    """Runs the calls of a scenario on a breaker of its own, which it reloads as asked."""

    judges_results = True

    def __init__(self, config: CircuitBreakerConfig, clock: FakeClock) -> None:
        self.breaker = CircuitBreaker(f"model-{next(NAMES)}", config, clock=clock)

    def reload(self, config: CircuitBreakerConfig) -> None:
        self.breaker._reconfigure(config)  # what a manager's reload does to its breaker

    def close(self) -> None:
        pass


class GuardDriver(Driver):
    """A guard entered and left by hand: calls overlap in one thread (a guard per block)."""

    judges_results = False

    def start(self) -> Started:
        guard = self.breaker.guard()
        try:
            guard.__enter__()
        except CircuitOpenError as error:
            return (error.state, error.retry_after)
        return guard

    def end(self, handle: Any, outcome: str) -> None:
        error = raise_for(outcome)
        if error is None:
            handle.__exit__(None, None, None)
            return
        try:
            assert not handle.__exit__(type(error), error, None)
        except RuntimeError:  # a record_exceptions predicate that raises: raised in the error's place
            assert outcome == "odd"


class AsyncGuardDriver(Driver):
    """``async with`` a guard, entered and left by hand on an event loop (a guard per block)."""

    judges_results = False

    def __init__(self, config: CircuitBreakerConfig, clock: FakeClock) -> None:
        super().__init__(config, clock)
        self.loop = asyncio.new_event_loop()

    def start(self) -> Started:
        guard = self.breaker.guard()
        try:
            self.loop.run_until_complete(guard.__aenter__())
        except CircuitOpenError as error:
            return (error.state, error.retry_after)
        return guard

    def end(self, handle: Any, outcome: str) -> None:
        error = asyncio.CancelledError() if outcome == "cancel" else raise_for(outcome)
        leave = (
            handle.__aexit__(None, None, None)
            if error is None
            else handle.__aexit__(type(error), error, None)
        )
        try:
            assert not self.loop.run_until_complete(leave)
        except RuntimeError:  # a record_exceptions predicate that raises: raised in the error's place
            assert outcome == "odd"

    def close(self) -> None:
        self.loop.close()


class ThreadDriver(Driver):
    """``call_sync`` in a thread each, whose function waits to be told how to end."""

    def start(self) -> Started:
        ready = threading.Event()
        go = threading.Event()
        box: dict[str, Any] = {}

        def fn() -> str:
            box["entered"] = True
            ready.set()
            go.wait()
            error = raise_for(box["outcome"])
            if error is not None:
                raise error
            return RESULTS.get(box["outcome"], "ok")

        def body() -> None:
            try:
                self.breaker.call_sync(fn)
            except CircuitOpenError as error:
                if "entered" not in box:
                    box["rejected"] = (error.state, error.retry_after)
            except BaseException:
                pass
            finally:
                ready.set()

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        ready.wait()
        if "rejected" in box:
            thread.join()
            return box["rejected"]  # type: ignore[no-any-return]
        return (thread, go, box)

    def end(self, handle: Any, outcome: str) -> None:
        thread, go, box = handle
        box["outcome"] = outcome
        go.set()
        thread.join()


class TaskDriver(Driver):
    """``call`` in a task each, on one event loop run in this thread between steps."""

    def __init__(self, config: CircuitBreakerConfig, clock: FakeClock) -> None:
        super().__init__(config, clock)
        self.loop = asyncio.new_event_loop()
        self.call: Callable[[Callable[[], Awaitable[str]]], Awaitable[str]] = self.breaker.call

    def start(self) -> Started:
        box: dict[str, Any] = {}
        go = asyncio.Event()

        async def fn() -> str:
            box["entered"] = True
            await go.wait()
            error = raise_for(box["outcome"])
            if error is not None:
                raise error
            return RESULTS.get(box["outcome"], "ok")

        async def body() -> None:
            try:
                await self.call(fn)
            except CircuitOpenError as error:
                if "entered" not in box:
                    box["rejected"] = (error.state, error.retry_after)
            except (Exception, KeyboardInterrupt):
                pass

        async def begin() -> asyncio.Task[None]:
            task = asyncio.ensure_future(body())
            while "entered" not in box and not task.done():
                await asyncio.sleep(0)
            return task

        task = self.loop.run_until_complete(begin())
        if "rejected" in box:
            return box["rejected"]  # type: ignore[no-any-return]
        return (task, go, box)

    def end(self, handle: Any, outcome: str) -> None:
        task, go, box = handle
        if outcome == "cancel":  # the task is cancelled while its call runs
            task.cancel()
        else:
            box["outcome"] = outcome
            go.set()
        self.loop.run_until_complete(asyncio.wait([task]))

    def close(self) -> None:
        self.loop.close()


class PolicyDriver(TaskDriver):
    """``execute`` of a manager's policy with the breaker, in a task each; reloaded by the manager."""

    def __init__(self, config: CircuitBreakerConfig, clock: FakeClock) -> None:
        self.manager = ResilienceManager(clock=clock)
        self.name = f"model-{next(NAMES)}"
        policy = self.manager.policy(self.name, ResilienceConfig(circuit_breaker=config))
        assert policy.circuit_breaker is not None
        self.breaker = policy.circuit_breaker
        self.loop = asyncio.new_event_loop()
        self.call = policy.execute

    def reload(self, config: CircuitBreakerConfig) -> None:
        self.manager.reconfigure(self.name, ResilienceConfig(circuit_breaker=config))


class KeyDriver(PolicyDriver):
    """``execute`` of one key of a manager's policy (the key's own breaker), in a task each."""

    def __init__(self, config: CircuitBreakerConfig, clock: FakeClock) -> None:
        self.manager = ResilienceManager(clock=clock)
        self.name = f"model-{next(NAMES)}"
        policy = self.manager.policy(self.name, ResilienceConfig(circuit_breaker=config), idle_ttl=86400.0)
        view = policy.for_key("tenant")
        assert view.circuit_breaker is not None
        self.breaker = view.circuit_breaker
        self.loop = asyncio.new_event_loop()
        self.call = view.execute


DRIVERS: dict[str, Callable[[CircuitBreakerConfig, FakeClock], Any]] = {
    "guard": GuardDriver,
    "async_guard": AsyncGuardDriver,
    "thread": ThreadDriver,
    "task": TaskDriver,
    "policy": PolicyDriver,
    "key": KeyDriver,
}


# -- the scenarios ---------------------------------------------------------------------------------

QUARTERS = st.sampled_from([Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(1)])


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    kind = draw(st.sampled_from(["plain", "count", "time"]))
    window: CountWindow | TimeWindow | None = None
    minimum = 1
    if kind == "count":
        window = CountWindow(draw(st.integers(1, 6)))
        minimum = draw(st.integers(1, window.size))
    elif kind == "time":
        window = TimeWindow(draw(st.sampled_from([1.0, 2.0, 3.0])), draw(st.sampled_from([1, 2, 4])))
        minimum = draw(st.integers(1, 5))
    slow = draw(st.sampled_from([None, 0.5, 1.0])) if window is not None else None
    return Spec(
        window=window,
        failure_threshold=draw(st.integers(1, 4)) if window is None else 5,
        minimum_calls=minimum,
        rate_threshold=draw(QUARTERS),
        slow_call_duration=slow,
        slow_threshold=draw(QUARTERS),
        success_threshold=draw(st.integers(1, 3)),
        half_open_max_calls=draw(st.integers(1, 3)),
        timeout=draw(st.sampled_from([1.0, 2.0, 3.0])),
        record_by_predicate=draw(st.booleans()),
        record_result=draw(st.booleans()),
        break_duration=draw(st.sampled_from([None, "grows", "fails"])),
        max_half_open_wait=draw(st.sampled_from([None, 1.0, 2.0])),
    )


ADVANCES = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 3.0])
CALLS = st.one_of(
    st.tuples(st.just("call"), st.sampled_from(OUTCOMES), ADVANCES),  # start, (time passes), end
    st.tuples(st.just("call"), st.sampled_from(("ok", "boom", "bad_result")), ADVANCES),
)
OPS = st.one_of(
    CALLS,
    CALLS,
    CALLS,
    st.tuples(st.just("start")),
    st.tuples(st.just("start")),
    st.tuples(st.just("end"), st.integers(0, MAX_IN_FLIGHT), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("end"), st.integers(0, MAX_IN_FLIGHT), st.sampled_from(OUTCOMES)),
    st.tuples(st.just("advance"), ADVANCES),
    st.tuples(
        st.just("advance_to"), st.sampled_from(["open_end", "open_end", "bucket", "slow", "probe_wait"])
    ),
    st.tuples(st.just("read"), st.sampled_from(["get_stats", "state", "rates"])),
    st.tuples(st.just("reload"), st.integers(0, 2**16)),
    st.tuples(
        st.just("operator"),
        st.sampled_from(
            ["open", "open_for", "reset", "closed", "disable", "shadow", "isolate", "isolate_long"]
        ),
    ),
)


def tell(what: str) -> None:
    """A Hypothesis event (``--hypothesis-show-statistics``: how often each path was taken)."""
    if currently_in_test_context():
        event(what)


def run_scenario(spec: Spec, ops: list[tuple[Any, ...]], driver_name: str) -> None:
    clock = FakeClock(1000.0)
    driver = DRIVERS[driver_name](spec.config(), clock)
    breaker: CircuitBreaker = driver.breaker
    changes: list[StateChanged] = []
    breaker.on_state_change(changes.append)
    model = Model(spec, judges_results=driver.judges_results)
    in_flight: list[tuple[Any, int, float]] = []  # (handle, the model's period, started)

    def start() -> bool:
        now = clock.now()
        expected = model.admit(now)
        got = driver.start()
        if isinstance(expected, tuple):
            assert got == expected, f"rejection at {now}: {got} != model {expected}"
            tell(f"rejected {expected[0]}")
            return False
        assert not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], str)), (
            f"rejected at {now} ({got}), the model admits"
        )
        in_flight.append((got, expected, now))
        return True

    def end(place: int, outcome: str) -> None:
        handle, period, started = in_flight.pop(place % len(in_flight))
        tell(f"ended in {'its' if period == model.period else 'a later'} period, {model.state}")
        model.end(period, started, outcome, clock.now())
        driver.end(handle, outcome)

    try:
        for step, op in enumerate(ops):
            name = op[0]
            if name == "call":
                if len(in_flight) < MAX_IN_FLIGHT and start():
                    clock.advance(op[2])
                    end(len(in_flight) - 1, op[1])
            elif name == "start":
                if len(in_flight) < MAX_IN_FLIGHT:
                    start()
            elif name == "end":
                if in_flight:
                    end(op[1], op[2])
            elif name == "advance":
                clock.advance(op[1])
            elif name == "advance_to":
                now, spec = clock.now(), model.spec  # the config in force (a reload changes it)
                if op[1] == "open_end" and now < model.opened_until < math.inf:
                    clock.advance(model.opened_until - now)
                elif op[1] == "bucket" and isinstance(spec.window, TimeWindow):
                    width = spec.window.seconds / spec.window.buckets
                    clock.advance(width * (math.floor(now / width) + 1) - now)
                elif op[1] == "probe_wait" and spec.max_half_open_wait is not None and model.in_flight:
                    clock.advance(max(0.0, model.probe_started + spec.max_half_open_wait - now))
                elif op[1] == "slow" and spec.slow_call_duration is not None and in_flight:
                    oldest = min(started for _, _, started in in_flight)
                    clock.advance(max(0.0, oldest + spec.slow_call_duration - now))
            elif name == "read":
                if op[1] == "get_stats":
                    stats = breaker.get_stats()
                    expected = model.stats(clock.now())
                    got = {key: stats[key] for key in expected}  # type: ignore[literal-required]
                    assert got == expected, f"step {step}: {got} != model {expected}"
                elif op[1] == "state":
                    model.poll(clock.now())
                    assert breaker.state.value == model.state
                else:
                    assert breaker.rates() == model.rates(clock.now())
            elif name == "reload":
                new = reloaded(model.spec, random.Random(op[1]))
                driver.reload(new.config())
                model.reload(new)
            else:
                operate(breaker, model, op[1], clock.now())
            assert breaker.peek_state().value == model.peek_state(clock.now()), f"step {step} {op}"
            assert live_stats(breaker) == model.live(), f"step {step} {op}"
            assert [(c.old, c.new, c.reason, c.reopens, c.duration) for c in changes] == model.changes, (
                f"step {step} {op}"
            )
        while in_flight:
            end(0, "ok")
        assert live_stats(breaker) == model.live()
    finally:
        for handle, _, _ in in_flight:
            driver.end(handle, "ok")
        driver.close()


def reloaded(spec: Spec, rng: random.Random) -> Spec:
    """Another config for a reload: the same window (or none) half the time; the same error rules."""
    new = random_spec(rng)
    if rng.random() < 0.5:
        new = replace(
            new,
            window=spec.window,
            minimum_calls=spec.minimum_calls,
            failure_threshold=spec.failure_threshold,
        )
        if spec.window is None:
            new = replace(new, slow_call_duration=None)
    return replace(new, record_by_predicate=spec.record_by_predicate, record_result=spec.record_result)


def operate(breaker: CircuitBreaker, model: Model, action: str, now: float) -> None:
    if action == "open":
        breaker.force_open()
        model.enter("open", "forced", now, math.inf)
    elif action == "open_for":
        breaker.force_open(1.5)
        model.enter("open", "forced", now, 1.5)
    elif action == "reset":
        breaker.reset()
        model.enter("closed", "reset", now)
    elif action == "closed":
        breaker.force_closed()
        model.enter("closed", "forced", now)
    elif action == "disable":
        breaker.disable()
        model.enter("disabled", "forced", now)
    elif action.startswith("isolate"):
        seconds = 1.5 if action == "isolate" else 3.0
        opened = model.state == "open" and model.opened_until >= now + seconds
        expected = model.state not in ("disabled", "metrics_only")
        if expected and not opened:
            model.enter("open", "isolated", now, seconds)
        assert breaker.force_open(seconds, reason="isolated") is expected
    else:
        breaker.metrics_only()
        model.enter("metrics_only", "forced", now)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=specs(), ops=st.lists(OPS, min_size=1, max_size=60))
def test_the_breaker_follows_the_reference_model_through_every_driver(
    spec: Spec, ops: list[tuple[Any, ...]]
) -> None:
    for driver_name in DRIVERS:
        run_scenario(spec, ops, driver_name)


def random_spec(rng: random.Random) -> Spec:
    kind = rng.choice(["plain", "count", "time"])
    window: CountWindow | TimeWindow | None = None
    minimum = 1
    if kind == "count":
        window = CountWindow(rng.randint(1, 6))
        minimum = rng.randint(1, window.size)
    elif kind == "time":
        window = TimeWindow(rng.choice([1.0, 2.0, 3.0]), rng.choice([1, 2, 4]))
        minimum = rng.randint(1, 5)
    quarters = [Fraction(1, 4), Fraction(1, 2), Fraction(3, 4), Fraction(1)]
    return Spec(
        window=window,
        failure_threshold=rng.randint(1, 4) if window is None else 5,
        minimum_calls=minimum,
        rate_threshold=rng.choice(quarters),
        slow_call_duration=rng.choice([None, 0.5, 1.0]) if window is not None else None,
        slow_threshold=rng.choice(quarters),
        success_threshold=rng.randint(1, 3),
        half_open_max_calls=rng.randint(1, 3),
        timeout=rng.choice([1.0, 2.0, 3.0]),
        record_by_predicate=rng.random() < 0.5,
        record_result=rng.random() < 0.5,
        break_duration=rng.choice([None, "grows", "fails"]),
        max_half_open_wait=rng.choice([None, 1.0, 2.0]),
    )


def random_op(rng: random.Random) -> tuple[Any, ...]:
    advances = [0.0, 0.25, 0.5, 1.0, 1.5, 3.0]
    operators = ["open", "open_for", "reset", "closed", "disable", "shadow", "isolate", "isolate_long"]
    weighted: list[tuple[float, Callable[[], tuple[Any, ...]]]] = [
        (0.35, lambda: ("call", rng.choice(("ok", "ok", "boom", "boom", *OUTCOMES)), rng.choice(advances))),
        (0.5, lambda: ("start",)),
        (0.65, lambda: ("end", rng.randint(0, MAX_IN_FLIGHT), rng.choice(("ok", "boom", *OUTCOMES)))),
        (0.72, lambda: ("advance", rng.choice(advances))),
        (0.87, lambda: ("advance_to", rng.choice(["open_end", "open_end", "bucket", "slow", "probe_wait"]))),
        (0.94, lambda: ("read", rng.choice(["get_stats", "state", "rates"]))),
        (0.97, lambda: ("reload", rng.randint(0, 2**16))),
        (1.0, lambda: ("operator", rng.choice(operators))),
    ]
    roll = rng.random()
    return next(make for bound, make in weighted if roll < bound)()


@pytest.mark.parametrize("seed", range(4))
def test_long_seeded_sequences_follow_the_reference_model(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        spec = random_spec(rng)
        ops = [random_op(rng) for _ in range(rng.randint(50, 200))]
        for driver_name in DRIVERS:
            run_scenario(spec, ops, driver_name)


# -- what the model found ---------------------------------------------------------------------------


async def test_a_failure_in_flight_at_a_reload_is_the_last_failure_type(manager: ResilienceManager) -> None:
    """A call in flight at a reload is counted in the totals, and its failure's type is the last one."""
    policy = manager.policy("reloaded-failure", ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))
    release = asyncio.Event()

    async def fails_later() -> str:
        await release.wait()
        raise Boom

    running = asyncio.ensure_future(policy.execute(fails_later))
    await asyncio.sleep(0)
    manager.reconfigure(
        "reloaded-failure", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(timeout=7.0))
    )
    release.set()
    with pytest.raises(Boom):
        await running
    assert policy.circuit_breaker is not None
    stats = policy.circuit_breaker.get_stats()
    assert (stats["total_failures"], stats["last_failure_type"]) == (1, f"{__name__}.Boom")


def test_a_guarded_block_failing_across_a_reload_is_the_last_failure_type() -> None:
    """The breaker's own guard: the block admitted before the reload fails after it."""
    breaker = CircuitBreaker("reloaded-guard", CircuitBreakerConfig(), clock=FakeClock())
    with pytest.raises(Boom), breaker.guard():
        breaker._reconfigure(CircuitBreakerConfig(timeout=7.0))
        raise Boom
    stats = breaker.get_stats()
    assert (stats["total_failures"], stats["last_failure_type"]) == (1, f"{__name__}.Boom")


def test_a_probe_whose_nested_call_is_rejected_is_given_back_and_the_breaker_stays_half_open() -> None:
    """A function that calls through its own breaker again takes a probe for each nested call.

    Past ``half_open_max_calls`` the nested call is rejected, and its ``CircuitOpenError``, a
    rejection, is never counted: the probe is given back (ignored), nothing opens the breaker
    again, and it stays HALF_OPEN until calls that do not nest that deep close it.
    """
    clock = FakeClock()
    breaker = CircuitBreaker("nested", CircuitBreakerConfig(timeout=1.0, success_threshold=1), clock=clock)
    changes: list[StateChanged] = []
    breaker.on_state_change(changes.append)
    breaker.force_open(1.0)
    clock.advance(1.0)

    def nested() -> str:
        return breaker.call_sync(lambda: "inner")

    for _ in range(3):
        with pytest.raises(CircuitOpenError, match="half-open"):
            breaker.call_sync(nested)
        clock.advance(1.0)
    stats = breaker.get_stats()
    assert (stats["state"], stats["total_ignored"], stats["total_failures"], stats["total_rejected"]) == (
        "half_open",
        3,
        0,
        3,
    )
    assert breaker.call_sync(lambda: "flat") == "flat"  # a call that does not nest closes it
    assert [(c.old, c.new, c.reason) for c in changes] == [
        ("closed", "open", "forced"),
        ("open", "half_open", "timeout_elapsed"),
        ("half_open", "closed", "probe_succeeded"),
    ]
