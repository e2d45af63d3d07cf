"""Tests for the system clock: its ``now``, its async sleep, subclasses of it, pickling and copying."""

from __future__ import annotations

import asyncio
import copy
import itertools
import pickle
import time
from collections.abc import Callable
from typing import Any

import pytest

from otel_resilience import CircuitBreaker
from otel_resilience.engine import SYSTEM_CLOCK, Clock, SystemClock
from otel_resilience.engine.clock import check_clock
from otel_resilience.engine.deadline import SyncDeadline, time_remaining
from otel_resilience.manager import ResilienceManager
from otel_resilience.testing import FakeClock


class ShiftedClock(SystemClock):
    """The real clock's sleeps with a ``now`` of its own (a subclass may override it)."""

    def now(self) -> float:
        return time.monotonic() + 1000.0


class PlainSubclass(SystemClock):
    """A subclass that keeps the real ``now``."""


def test_the_system_clock_reads_monotonic_time() -> None:
    before = time.monotonic()
    assert before <= SYSTEM_CLOCK.now() <= time.monotonic()
    assert isinstance(SYSTEM_CLOCK, Clock)


def test_a_subclass_that_overrides_now_keeps_its_own() -> None:
    """``now`` held in a slot for speed must not hide a subclass's own ``now``."""
    clock = check_clock("test", ShiftedClock())
    assert clock.now() >= time.monotonic() + 999.0
    with SyncDeadline(clock, 5.0, "shifted"):
        assert 0.0 < time_remaining(clock) <= 5.0


def test_a_subclass_that_keeps_now_reads_monotonic_time() -> None:
    clock = PlainSubclass()
    before = time.monotonic()
    assert before <= clock.now() <= time.monotonic()


def test_the_system_clock_pickles_and_copies_as_itself() -> None:
    assert pickle.loads(pickle.dumps(SYSTEM_CLOCK)) is SYSTEM_CLOCK
    assert copy.deepcopy(SYSTEM_CLOCK) is SYSTEM_CLOCK
    assert copy.copy(SYSTEM_CLOCK) is SYSTEM_CLOCK
    assert repr(SYSTEM_CLOCK) == "SYSTEM_CLOCK"


def test_another_system_clock_pickles_and_copies_as_a_working_clock() -> None:
    """Only the process-wide instance is pickled by name (another one is not it)."""
    clock = SystemClock()
    copies = [pickle.loads(pickle.dumps(clock, protocol)) for protocol in range(pickle.HIGHEST_PROTOCOL + 1)]
    for back in (*copies, copy.deepcopy(clock), copy.copy(clock)):
        assert type(back) is SystemClock
        before = time.monotonic()
        assert before <= back.now() <= time.monotonic()
    assert repr(clock) == "SystemClock()"


def test_a_subclass_pickles_and_copies_as_itself() -> None:
    for clock in (ShiftedClock(), PlainSubclass()):
        back = pickle.loads(pickle.dumps(clock))
        assert type(back) is type(clock)
        assert type(copy.deepcopy(clock)) is type(clock)
        assert abs(back.now() - clock.now()) < 60.0
    assert repr(ShiftedClock()) == "ShiftedClock()"


@pytest.mark.parametrize("kind", [SystemClock, FakeClock, ShiftedClock])
def test_a_clock_class_in_place_of_a_clock_is_refused_at_construction(kind: Any) -> None:
    """A class has the methods a Clock has, unbound: refused where it is given, naming the field,
    not at the first call that reads the time."""
    with pytest.raises(TypeError, match=r"ResilienceManager\.clock must be a Clock"):
        ResilienceManager(clock=kind)
    with pytest.raises(TypeError, match=r"CircuitBreaker\.clock must be a Clock"):
        CircuitBreaker(unique_name(), clock=kind)
    with pytest.raises(TypeError, match=r"test\.clock must be a Clock"):
        check_clock("test", kind)


def test_clock_instances_are_accepted() -> None:
    for clock in (SYSTEM_CLOCK, SystemClock(), FakeClock(), ShiftedClock(), PlainSubclass()):
        assert check_clock("test", clock) is clock


_names = itertools.count()


def unique_name() -> str:
    return f"clock-check-{next(_names)}"


class ReadingClock:
    """Has a clock's names, but ``now`` is a reading, not a function."""

    now = 12.0

    async def sleep(self, seconds: float) -> None:
        return None

    def sleep_sync(self, seconds: float) -> None:
        return None


def test_a_clock_whose_now_is_not_callable_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match=r"ResilienceManager\.clock must be a Clock"):
        ResilienceManager(clock=ReadingClock())  # type: ignore[arg-type]


class EarlyTimersLoop(asyncio.SelectorEventLoop):
    """A loop whose timers run at a tenth of their delay: each sleep on it ends early, as uvloop's may."""

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        now = self.time()
        return super().call_at(now + (when - now) / 10, callback, *args, **kwargs)


def _on_early_timers(main: Callable[[], Any]) -> Any:
    loop = EarlyTimersLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_an_async_sleep_the_loop_ended_early_sleeps_the_rest() -> None:
    """``SYSTEM_CLOCK.sleep`` returns once the monotonic clock passed its time, whenever the loop's
    timer ran (before: the sleep ended with 90% of it left)."""

    async def main() -> float:
        start = time.monotonic()
        await SYSTEM_CLOCK.sleep(0.05)
        return time.monotonic() - start

    assert _on_early_timers(main) >= 0.05


def test_an_async_sleep_cancelled_while_it_sleeps_the_rest_ends_cancelled() -> None:
    """A cancellation that comes once the loop's timer ended the first wait early, while the sleep
    waits the rest, ends it at once: the rest is not slept through (a generous bound: 1 s into 5)."""

    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        sleeper = asyncio.ensure_future(SYSTEM_CLOCK.sleep(5.0))  # its first wait ends at 0.5 s
        loop.call_later(10.0, sleeper.cancel)  # at 1 s on this loop: in the rest
        await asyncio.wait({sleeper})
        return sleeper.cancelled(), time.monotonic() - start

    cancelled, took = _on_early_timers(main)
    assert cancelled
    assert took < 5.0
