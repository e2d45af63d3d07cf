"""Tests for waiting on the rate limiter: reservations in FIFO order, the limits of a wait, cancellation.

Waiters here sleep on a :class:`ManualClock`, whose sleeps end only when the test moves time, so
that several callers wait side by side as they would on a real clock; ``FakeClock`` (whose sleeps
jump the time forward) pins the length of single waits and serves the threads.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import weakref

import pytest
from support import collect_inside, until, until_sync

from otel_resilience import RateLimitedError, RateLimiter, RateLimiterConfig, TimeoutHandler, fail_after
from otel_resilience.engine.events import CallRejected, Event
from otel_resilience.engine.validation import MAX_DURATION
from otel_resilience.patterns.rate_limiter.rules import _Reservation, new_rules
from otel_resilience.testing import FakeClock


class ManualClock:
    """A clock whose sleeps, async and sync, end only when :meth:`advance` moves time past them.

    Attributes:
        sleeps: Every duration asked for, in order.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._blocked = 0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    @property
    def sleeping(self) -> int:
        """Tasks and threads asleep now."""
        with self._cond:
            return len(self._sleepers) + self._blocked

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        with self._cond:
            self.sleeps.append(seconds)
            entry = (self._now + seconds, future)
            self._sleepers.append(entry)
        try:
            await future
        finally:
            with self._cond:
                if entry in self._sleepers:
                    self._sleepers.remove(entry)

    def sleep_sync(self, seconds: float) -> None:
        with self._cond:
            self.sleeps.append(seconds)
            end = self._now + seconds
            self._blocked += 1
            try:
                while self._now < end:
                    if not self._cond.wait(timeout=5.0):
                        raise AssertionError("the test never moved the clock past this sleep")
            finally:
                self._blocked -= 1

    def advance(self, seconds: float) -> None:
        """Move time forward; wake every sleeper whose end has come (async ones on their loop)."""
        with self._cond:
            self._now += seconds
            woken = [entry for entry in self._sleepers if entry[0] <= self._now]
            for entry in woken:
                self._sleepers.remove(entry)
            self._cond.notify_all()
        for _, future in woken:
            future.get_loop().call_soon_threadsafe(_finish, future)


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def limiter_on(clock, **config):
    """A limiter named ``api`` on ``clock`` with ``RateLimiterConfig(**config)``."""
    return RateLimiter("api", RateLimiterConfig(**config), clock=clock)


async def start_waiters(limiter, clock, count, ran, first=0):
    """Start ``count`` async calls that record ``(i, clock.now())`` when they run; return the tasks."""

    async def work(i):
        ran.append((i, clock.now()))
        return i

    tasks = []
    for i in range(first, first + count):
        asleep = clock.sleeping
        tasks.append(asyncio.create_task(limiter.call(work, i)))
        await until(lambda: clock.sleeping == asleep + 1)  # noqa: B023 - read before the next start
    return tasks


# --- FIFO, and no longer than needed -------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_async_waiters_run_in_fifo_order_at_their_permits_time(algorithm):
    """Tasks that wait are admitted in the order they asked, each exactly when its permit is due."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=10.0, algorithm=algorithm)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 4, ran)
    assert clock.sleeps == [1.0, 2.0, 3.0, 4.0]
    assert limiter.waiting == 4
    assert not limiter.try_acquire()  # a newcomer never overtakes a waiter
    for step in range(1, 5):
        clock.advance(0.5)
        await until(lambda: clock.sleeping == 5 - step)  # noqa: B023
        assert len(ran) == step - 1
        clock.advance(0.5)
        await until(lambda: len(ran) == step)  # noqa: B023
    assert ran == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)]
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
    stats = limiter.get_stats()
    assert (stats["admitted"], stats["waited"], stats["waiting"], stats["rejected"]) == (5, 4, 0, 1)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_a_reload_to_a_higher_rate_lets_no_newcomer_overtake_the_waiters(algorithm):
    """Waiters keep their permits' times across a reload; a newcomer is served after them, at the new rate."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=10.0, algorithm=algorithm)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 3, ran)
    assert clock.sleeps == [1.0, 2.0, 3.0]
    assert limiter._reconfigure(RateLimiterConfig(rate=10.0, burst=1, max_wait=10.0, algorithm=algorithm))
    tasks += await start_waiters(limiter, clock, 1, ran, first=3)
    assert clock.sleeps[-1] == pytest.approx(3.1)  # one interval of the new rate after the last waiter
    for step in range(1, 4):
        clock.advance(1.0)
        await until(lambda: len(ran) == step)  # noqa: B023
    clock.advance(0.125)
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
    assert [i for i, _ in ran] == [0, 1, 2, 3]
    assert ran[-1][1] >= 3.1


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_a_reload_to_a_lower_rate_paces_the_newcomer_from_the_last_waiter(algorithm):
    """Waiters keep their permits' times; the next permit is one interval of the new rate after the last."""
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0, algorithm=algorithm))
    assert rules.acquire(0.0, 10.0) is None
    waiters = [rules.acquire(0.0, 10.0) for _ in range(3)]
    assert [w.due for w in waiters if isinstance(w, _Reservation)] == [1.0, 2.0, 3.0]
    assert rules.retune(RateLimiterConfig(rate=0.1, burst=1, max_wait=100.0, algorithm=algorithm), 0.0)
    assert rules.acquire(0.0, 0.0) == pytest.approx(13.0)  # 3 + 1 / 0.1, as for the higher rate
    for waiter in waiters:
        assert isinstance(waiter, _Reservation)
        rules.claim(waiter)
    assert rules.acquire(12.9, 0.0) == pytest.approx(0.1)
    assert rules.acquire(13.0, 0.0) is None


@pytest.mark.parametrize(("start", "rate"), [(1e6, 1e12), (1.7e9, 1e8)])
def test_waiters_of_a_sliding_window_shorter_than_the_clock_ticks_are_due_burst_per_reading(start, rate):
    """A window below the clock's step: the permits waited for are due ``burst`` per reading, each
    reading after the one whose admissions fill the window, never more at one reading."""
    rules = new_rules(RateLimiterConfig(rate=rate, burst=2, max_wait=1.0, algorithm="sliding_window"))
    assert [rules.acquire(start, 1.0) for _ in range(2)] == [None, None]
    waiters = [rules.acquire(start, 1.0) for _ in range(6)]
    assert all(isinstance(waiter, _Reservation) for waiter in waiters)
    readings = [start]
    for _ in range(3):
        readings.append(math.nextafter(readings[-1], math.inf))
    assert [waiter.due for waiter in waiters] == [reading for reading in readings[1:] for _ in range(2)]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize(("rate", "interval"), [(0.1, 10.0), (10.0, 0.1)])
def test_a_rollback_after_a_reload_paces_the_newcomer_from_the_waiter_left(algorithm, rate, interval):
    """Cancelled waiters after a reload give back exactly their permits, at the new rate.

    The permits left are those of the waiters still there: the next one is one interval of
    the new rate after the last of them, and no newcomer overtakes a waiter.
    """
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0, algorithm=algorithm))
    assert rules.acquire(0.0, 10.0) is None
    waiters = [rules.acquire(0.0, 10.0) for _ in range(3)]
    assert all(isinstance(waiter, _Reservation) for waiter in waiters)
    assert rules.retune(RateLimiterConfig(rate=rate, burst=1, max_wait=100.0, algorithm=algorithm), 0.0)
    rules.abandon(waiters[2], 0.0)  # the latest: rolled back
    assert rules.acquire(0.0, 0.0) == pytest.approx(2.0 + interval)
    rules.abandon(waiters[1], 0.0)
    assert rules.acquire(0.0, 0.0) == pytest.approx(1.0 + interval)  # never at once: a waiter is left
    stats = rules.snapshot("api", 0.0)
    assert (stats["waiting"], stats["cancelled"], stats["rejected"]) == (1, 2, 2)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize(("rate", "interval"), [(0.1, 10.0), (10.0, 0.1)])
@pytest.mark.parametrize("ran", [0, 1])
def test_every_waiter_left_rolled_back_after_a_reload_paces_the_newcomer_from_the_last_permit(
    algorithm, rate, interval, ran
):
    """The waiters still there cancelled after a reload, the last of them too: as if they never
    waited, the next permit is one interval of the new rate after the last permit taken (the
    one at once, or that of a waiter that ran), never sooner (beyond the new rate) nor later."""
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0, algorithm=algorithm))
    assert rules.acquire(0.0, 10.0) is None  # the bucket is empty at 0
    waiters = [rules.acquire(0.0, 10.0) for _ in range(3)]
    assert all(isinstance(waiter, _Reservation) for waiter in waiters)
    assert rules.retune(RateLimiterConfig(rate=rate, burst=1, max_wait=100.0, algorithm=algorithm), 0.0)
    for waiter in waiters[:ran]:
        rules.claim(waiter)  # at its time, 1.0: the last permit taken
    now = 1.5 if ran else 0.0
    for waiter in reversed(waiters[ran:]):
        rules.abandon(waiter, now)
    last = waiters[ran - 1].due if ran else 0.0
    due = last + interval
    assert rules.acquire(now, 0.0) == (None if due <= now else pytest.approx(due - now))
    stats = rules.snapshot("api", now)
    assert (stats["waiting"], stats["cancelled"], stats["waited"]) == (0, 3 - ran, ran)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_a_reload_to_a_larger_burst_lets_no_newcomer_overtake_the_waiters(algorithm):
    """A reload that widens the burst while callers wait: a newcomer's permit is due after theirs."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=2.0, burst=2, max_wait=10.0, algorithm=algorithm)
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 2, ran)
    last = max(clock.sleeps)
    assert limiter._reconfigure(RateLimiterConfig(rate=40.0, burst=4, max_wait=10.0, algorithm=algorithm))
    assert not limiter.try_acquire()  # the waiters' permits come first
    tasks += await start_waiters(limiter, clock, 1, ran, first=2)
    assert clock.sleeps[-1] >= last
    clock.advance(2.0)
    assert await asyncio.gather(*tasks) == [0, 1, 2]
    assert ran[-1] == (2, pytest.approx(2.0))
    assert limiter.get_stats()["rejected"] == 1


def test_sync_waiters_run_in_fifo_order_at_their_permits_time():
    """Threads that wait are admitted in the order they asked, each exactly when its permit is due."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=2.0, burst=1, max_wait=10.0)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    threads = []
    for i in range(4):
        thread = threading.Thread(target=limiter.call_sync, args=(lambda i=i: ran.append((i, clock.now())),))
        thread.start()
        threads.append(thread)
        until_sync(lambda: clock.sleeping == len(threads))
    assert clock.sleeps == [0.5, 1.0, 1.5, 2.0]
    for step in range(1, 5):
        clock.advance(0.5)
        until_sync(lambda: len(ran) == step)  # noqa: B023
    for thread in threads:
        thread.join(5)
    assert ran == [(0, 0.5), (1, 1.0), (2, 1.5), (3, 2.0)]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_threads_on_a_fake_clock_never_run_ahead_of_the_rate(algorithm):
    """8 threads x 25 waiting calls: all run, and the k-th to run never runs before the k-th permit."""
    clock = FakeClock(0.0)
    rate, burst = 10.0, 4
    limiter = limiter_on(clock, rate=rate, burst=burst, max_wait=1e6, max_waiting=1000, algorithm=algorithm)
    times: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8, timeout=5)

    def record():
        with lock:
            times.append(clock.now())

    def worker():
        barrier.wait()
        for _ in range(25):
            limiter.call_sync(record)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    times.sort()
    assert len(times) == 200
    for k, at in enumerate(times):
        assert at >= (k - burst + 1) / rate - 1e-9, (k, at)
    stats = limiter.get_stats()
    assert (stats["admitted"], stats["rejected"], stats["waiting"]) == (200, 0, 0)
    assert 0 < stats["waited"] <= 200 - burst  # the sleeps of some threads move the clock for others


async def test_a_wait_lasts_exactly_until_the_permit_is_due(clock, driver):
    """The caller sleeps the time its permit needs, once, and runs then."""
    limiter = limiter_on(clock, rate=4.0, burst=1, max_wait=1.0)
    assert limiter.try_acquire()
    clock.advance(0.1)
    if driver == "async":

        async def fn():
            return clock.now()

        at = await limiter.call(fn)
    else:
        at = limiter.call_sync(clock.now)
    assert clock.sleeps == [pytest.approx(0.15)]
    assert at == pytest.approx(1000.25)


# --- the limits of a wait ------------------------------------------------------------------


async def test_a_wait_longer_than_max_wait_is_rejected_at_once(clock, driver, recorder):
    """A permit due later than max_wait: rejected now (no sleep), retry_after when it is due."""
    limiter = limiter_on(clock, rate=2.0, burst=1, max_wait=0.5)
    assert limiter.try_acquire()
    assert limiter.call_sync(lambda: "waited 0.5") == "waited 0.5"  # exactly max_wait is allowed
    assert clock.sleeps == [0.5]
    assert limiter.try_acquire() is False
    limiter_two = limiter_on(clock, rate=2.0, burst=1, max_wait=0.4)
    assert limiter_two.try_acquire()
    with pytest.raises(RateLimitedError) as raised:
        if driver == "async":

            async def fn():
                return 1

            await limiter_two.call(fn)
        else:
            limiter_two.call_sync(lambda: 1)
    assert raised.value.retry_after == 0.5
    assert clock.sleeps == [0.5]
    assert recorder.of(Event.CALL_REJECTED) == [CallRejected(reason="rate_limited")]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("start", [1000.0, 4321.123, 123456.789])
@pytest.mark.parametrize("rate", [10.0, 3.0, 7.0])
def test_a_permit_due_exactly_max_wait_later_is_waited_for_whatever_the_clock_reads(algorithm, start, rate):
    """``max_wait = 1 / rate`` waits one permit's interval, never rejects it: the permit due
    ``now + 1 / rate`` is compared with ``now + max_wait``, not ``due - now`` (which rounds above
    ``1 / rate`` at most clock readings: ``1000.1 - 1000.0`` is ``0.10000000000002274``)."""
    clock = FakeClock(start)
    limiter = limiter_on(clock, rate=rate, burst=1, max_wait=1 / rate, algorithm=algorithm)
    assert limiter.try_acquire()
    assert limiter.call_sync(lambda: "waited") == "waited"
    assert limiter.get_stats()["waited"] == 1
    assert clock.sleeps == [pytest.approx(1 / rate)]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize(("start", "rate"), [(1e6, 7.0), (1e7, 10.0), (1e5, 1000.0)])
def test_callers_that_wait_one_interval_each_are_all_served_days_into_the_clock(algorithm, start, rate):
    """``max_wait = 1 / rate``, caller after caller, each waiting for the permit after the last one's.

    At a monotonic clock's readings days after boot, ``now + 1 / rate`` rounds to the clock's
    step: a waiter woken at its permit's time took the token up to half a step early, and the
    bucket's next permit is then due a step after ``now + max_wait``. A wait is compared with
    ``max_wait`` to the clock's step: each caller waits its interval, none is refused.
    """
    clock = FakeClock(start)
    limiter = limiter_on(clock, rate=rate, burst=1, max_wait=1 / rate, algorithm=algorithm)
    assert limiter.try_acquire()
    refused = []
    for i in range(50):
        try:
            limiter.call_sync(lambda: None)
        except RateLimitedError:
            refused.append(i)
    assert refused == []
    stats = limiter.get_stats()
    assert (stats["waited"], stats["rejected"]) == (50, 0)
    assert clock.sleeps == [pytest.approx(1 / rate)] * 50


@pytest.mark.parametrize("start", [1000.0, 4321.123, 123456.789])
@pytest.mark.parametrize(("rate", "max_wait"), [(10.0, 0.3), (10.0, 0.5), (3.0, 1.0), (7.0, 1.0)])
def test_callers_at_one_instant_wait_until_the_permit_due_exactly_max_wait_later(start, rate, max_wait):
    """A burst of callers queues up to the permit due exactly ``max_wait`` from now, and no further."""
    rules = new_rules(RateLimiterConfig(rate=rate, burst=1, max_wait=max_wait, max_waiting=100))
    assert rules.acquire(start, 0.0) is None
    queued = round(max_wait * rate)
    answers = [rules.acquire(start, max_wait) for _ in range(queued + 1)]
    assert [type(answer) for answer in answers] == [_Reservation] * queued + [float]
    assert answers[-2].due == start + max_wait


async def test_an_async_wait_past_the_deadline_is_rejected_at_once(clock):
    """A permit due after the enclosing deadline: RateLimitedError now, not a timeout later."""
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=5.0)
    assert limiter.try_acquire()

    async def fn():
        return clock.now()

    with pytest.raises(RateLimitedError) as raised:
        async with fail_after(0.9, clock=clock):
            await limiter.call(fn)
    assert raised.value.retry_after == 1.0
    with pytest.raises(RateLimitedError):
        async with fail_after(1.0, clock=clock):  # due exactly at the deadline: no time to run
            await limiter.call(fn)
    assert clock.sleeps == []
    async with fail_after(1.5, clock=clock):
        assert await limiter.call(fn) == 1001.0
    assert clock.sleeps == [1.0]


def test_a_sync_wait_past_the_deadline_is_rejected_at_once(clock):
    """A thread's deadline (a sync timeout scope) bounds its wait the same way."""
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=5.0)
    assert limiter.try_acquire()
    short = TimeoutHandler(0.5, clock=clock)
    with pytest.raises(RateLimitedError):
        short.with_timeout_sync(limiter.call_sync, lambda: "late")
    assert clock.sleeps == []
    long = TimeoutHandler(2.0, clock=clock)
    assert long.with_timeout_sync(limiter.call_sync, lambda: "in time") == "in time"
    assert clock.sleeps == [1.0]


async def test_max_waiting_callers_then_rejections():
    """Once max_waiting callers wait, the next is rejected at once with its own permit's time."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=60.0, max_waiting=2)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 2, ran)

    async def fn():
        return "never"

    with pytest.raises(RateLimitedError) as raised:
        await limiter.call(fn)
    assert raised.value.retry_after == 3.0
    clock.advance(1.0)
    await until(lambda: len(ran) == 1)
    tasks += await start_waiters(limiter, clock, 1, ran, first=2)  # room again
    for count in (2, 3):
        clock.advance(1.0)
        await until(lambda: len(ran) == count)  # noqa: B023
    await asyncio.gather(*tasks)
    assert ran == [(0, 1.0), (1, 2.0), (2, 3.0)]


async def test_max_waiting_zero_never_waits(clock, driver):
    """max_waiting=0 rejects at once even though max_wait would allow the wait."""
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=10.0, max_waiting=0)
    assert limiter.try_acquire()
    with pytest.raises(RateLimitedError):
        if driver == "async":

            async def fn():
                return 1

            await limiter.call(fn)
        else:
            limiter.call_sync(lambda: 1)
    assert clock.sleeps == []


# --- cancellation --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_the_latest_waiter_cancelled_gives_its_permit_back(algorithm):
    """Cancelling the last reservation rolls it back: the next caller gets that very permit."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=60.0, algorithm=algorithm)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 2, ran)
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert limiter.waiting == 1
    assert limiter.available == -1.0
    tasks += await start_waiters(limiter, clock, 1, ran, first=2)
    assert clock.sleeps == [1.0, 2.0, 2.0]
    clock.advance(1.0)
    await until(lambda: len(ran) == 1)
    clock.advance(1.0)
    await asyncio.gather(tasks[0], tasks[2])
    assert ran == [(0, 1.0), (2, 2.0)]
    stats = limiter.get_stats()
    assert (stats["cancelled"], stats["waited"], stats["waiting"]) == (1, 2, 0)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_an_earlier_waiter_cancelled_hands_its_permit_to_the_next_caller(algorithm):
    """A cancelled reservation before others is taken over by the next caller who would wait."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=60.0, algorithm=algorithm)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 3, ran)  # due at 1, 2, 3
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    clock.advance(0.25)
    tasks += await start_waiters(limiter, clock, 1, ran, first=3)  # takes the permit due at 1
    assert clock.sleeps[-1] == 0.75
    tasks += await start_waiters(limiter, clock, 1, ran, first=4)  # after the last: due at 4
    assert clock.sleeps[-1] == 3.75
    for count, at in enumerate((1.0, 2.0, 3.0, 4.0), start=1):
        clock.advance(at - clock.now())
        await until(lambda: len(ran) == count)  # noqa: B023
    await asyncio.gather(*tasks[1:])
    assert ran == [(3, 1.0), (1, 2.0), (2, 3.0), (4, 4.0)]


async def test_a_hole_whose_time_passed_is_not_given_to_a_late_caller():
    """A cancelled permit nobody took in time is gone: a later caller waits behind the queue."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=60.0)
    assert limiter.try_acquire()
    ran: list[tuple[int, float]] = []
    tasks = await start_waiters(limiter, clock, 2, ran)  # due at 1 and 2
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    clock.advance(1.5)
    tasks += await start_waiters(limiter, clock, 1, ran, first=2)
    assert clock.sleeps[-1] == 1.5  # due at 3: after the waiter due at 2
    clock.advance(0.5)
    await until(lambda: len(ran) == 1)
    clock.advance(1.0)
    await asyncio.gather(*tasks[1:])
    assert ran == [(1, 2.0), (2, 3.0)]


def test_a_hole_already_passed_is_not_rolled_back_with_the_latest():
    """Rolling back the latest reservation stops at a hole whose time passed: its token is spent.

    Admitted at 0, reservations due at 1 (then cancelled: a hole) and 2 (cancelled at 1.9):
    at 1.9 the bucket holds 0.9 tokens; rolling the passed hole back too would make it 1.9, over
    its size of 1, and admit at 1.9 and again at 2.0.
    """
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0))
    assert rules.acquire(0.0, 10.0) is None
    first, second = rules.acquire(0.0, 10.0), rules.acquire(0.0, 10.0)
    assert isinstance(first, _Reservation)
    assert isinstance(second, _Reservation)
    rules.abandon(first, 0.0)
    rules.abandon(second, 1.9)
    assert rules.available(1.9) == pytest.approx(0.9)
    assert rules.acquire(1.9, 0.0) == pytest.approx(0.1)
    assert rules.acquire(2.0, 0.0) is None
    assert rules.acquire(2.0, 0.0) == 1.0


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_a_hole_whose_time_passed_is_no_admission(algorithm):
    """A cancelled permit nobody took in time was never used: it refuses nobody afterwards.

    Two admitted at 0 (rate 2, burst 2: a window of 1 s), then reservations A and B, due at 1.0
    (the bucket's A at 0.5); A is cancelled (a hole: B is the latest), B takes its permit. At 1.5 only B's
    admission is within the window (or the bucket has refilled 3 of its 2 tokens of debt): one
    permit is free, as if A had never reserved, where a sliding log counting the hole as an
    admission refused it (retry 0.5 s, ``available`` 0) until 2.0.
    """
    rules = new_rules(RateLimiterConfig(rate=2.0, burst=2, max_wait=10.0, algorithm=algorithm))
    assert rules.acquire(0.0, 0.0) is None
    assert rules.acquire(0.0, 0.0) is None
    first, second = rules.acquire(0.0, 10.0), rules.acquire(0.0, 10.0)
    assert isinstance(first, _Reservation)
    assert isinstance(second, _Reservation)
    assert (first.due, second.due) == ((0.5 if algorithm == "token_bucket" else 1.0), 1.0)
    rules.abandon(first, 0.0)  # not the latest: a hole
    rules.claim(second)
    assert rules.available(1.5) == 1.0
    assert rules.acquire(1.5, 0.0) is None
    assert rules.acquire(1.5, 0.0) == 0.5  # B's admission and this one: the window is full until 2.0
    assert rules.acquire(2.0, 0.0) is None
    stats = rules.snapshot("hole", 2.0)
    assert (stats["admitted"], stats["cancelled"], stats["waiting"], stats["available"]) == (5, 1, 0, 0.0)


def test_a_hole_lapsing_after_its_window_took_no_admission_of_the_log():
    """A waiter given up after its window passed (woken late, interrupted before its claim) lapses
    at once: its entry, forgotten with the window, takes no other admission out of the log."""
    rules = new_rules(RateLimiterConfig(rate=2.0, burst=2, max_wait=10.0, algorithm="sliding_window"))
    assert rules.acquire(0.0, 0.0) is None
    assert rules.acquire(0.0, 0.0) is None
    late, other = rules.acquire(0.0, 10.0), rules.acquire(0.0, 10.0)
    assert isinstance(late, _Reservation)
    assert isinstance(other, _Reservation)
    rules.claim(other)
    assert rules.acquire(2.5, 0.0) is None  # the window (1.5, 2.5] holds none of them
    rules.abandon(late, 2.5)  # due at 1.0: a hole already past
    assert rules.acquire(2.5, 0.0) is None
    assert rules.acquire(2.5, 0.0) == 1.0  # the two at 2.5 are counted, and only they
    assert rules.available(3.0) == 0.0
    stats = rules.snapshot("late", 3.5)
    assert (stats["admitted"], stats["cancelled"], stats["waiting"], stats["available"]) == (5, 1, 0, 2.0)


def test_an_interrupt_just_after_the_claim_gives_nothing_back():
    """A waiter interrupted once its permit is claimed has spent it: abandoning it changes nothing."""
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0))
    assert rules.acquire(0.0, 10.0) is None
    reservation = rules.acquire(0.0, 10.0)
    assert isinstance(reservation, _Reservation)
    rules.claim(reservation)
    rules.abandon(reservation, 1.0)
    snapshot = rules.snapshot("api", 1.0)
    assert (snapshot["admitted"], snapshot["waited"], snapshot["cancelled"], snapshot["waiting"]) == (
        2,
        1,
        0,
        0,
    )
    assert snapshot["available"] == 0.0


def test_a_cancelled_sync_waiter_gives_its_permit_back(clock):
    """An interrupt while a thread sleeps gives the reservation back before it propagates."""

    class Interrupting(FakeClock):
        def sleep_sync(self, seconds):
            raise KeyboardInterrupt

    clock = Interrupting(0.0)
    limiter = limiter_on(clock, rate=1.0, burst=1, max_wait=60.0)
    assert limiter.try_acquire()
    with pytest.raises(KeyboardInterrupt):
        limiter.call_sync(lambda: "never")
    assert limiter.available == 0.0
    stats = limiter.get_stats()
    assert (stats["cancelled"], stats["waiting"], stats["admitted"]) == (1, 0, 1)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_a_waiter_freed_after_its_loop_closed_gives_its_permit_back_without_deadlock(algorithm):
    """A task left waiting when its loop closed is freed by the garbage collector, which closes its
    coroutine on whichever thread allocates: maybe one inside the limiter's lock (a caller
    reserving a permit). Its reservation is given back all the same, by the lock's next holder."""
    limiter = RateLimiter(  # the system clock: the permit is due in 1000 s, nobody waits for it
        "api", RateLimiterConfig(rate=0.001, burst=1, max_wait=5000.0, algorithm=algorithm)
    )
    rules = limiter._rules
    assert limiter.try_acquire()

    async def fn():
        return "never"

    gc.disable()  # the collection below is the one that frees the task
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(limiter.call(fn))
        loop.run_until_complete(asyncio.sleep(0))
        assert limiter.waiting == 1
        freed = weakref.ref(task)
        loop.close()
        del task, loop

        collect_inside(rules._lock, "the limiter's lock")  # as an allocation under the lock would
        assert freed() is None
    finally:
        gc.enable()
    stats = limiter.get_stats()
    assert (stats["waiting"], stats["cancelled"], stats["admitted"]) == (0, 1, 1)
    assert stats["available"] == pytest.approx(0.0, abs=0.5)  # the permit given back (it was -1)


def test_a_reservation_dropped_while_the_lock_was_held_is_given_back_before_the_next_wait():
    """The next caller that would wait (or be refused) gives the dropped reservation back first,
    so it takes the dropped permit's place rather than a later one."""
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0, max_waiting=1))
    assert rules.acquire(0.0, 0.0) is None
    dropped = rules.acquire(0.0, 10.0)
    assert isinstance(dropped, _Reservation)
    assert dropped.due == 1.0
    with rules._lock:
        rules.drop(dropped, 0.0)  # the lock is held: left for its next holder
    assert rules.waiting == 1
    again = rules.acquire(0.0, 10.0)  # the queue's one place is free again, and the permit at 1.0
    assert isinstance(again, _Reservation)
    assert again.due == 1.0
    assert (rules.waiting, rules.cancelled, rules.rejected) == (1, 1, 0)


def test_a_key_whose_waiter_was_dropped_while_the_lock_was_held_is_idle():
    """A key's only waiter dropped while its lock was held waits no more: the key reads no waiter,
    and is evicted as an idle key is, not kept past ``max_keys`` until its counts are read."""
    clock = FakeClock(0.0)
    config = RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0)
    keyed = RateLimiter.per_key("tenants", config, max_keys=1, clock=clock)
    limiter = keyed.for_key("a")
    rules = limiter._rules
    assert rules.acquire(0.0, 0.0) is None
    dropped = rules.acquire(0.0, 10.0)
    assert isinstance(dropped, _Reservation)
    with rules._lock:
        rules.drop(dropped, 0.0)  # the lock is held: left for its next holder
    assert limiter.waiting == 0
    keyed.for_key("b")
    assert keyed.get_stats() == {"keys": 1, "max_keys": 1, "evicted": 1}


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_a_dropped_reservation_taken_over_by_a_new_waiter_is_not_given_back_again(algorithm: str) -> None:
    """A dropped reservation left as a hole goes to the next waiter: a later drop must not give it back under it."""
    rules = new_rules(RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0, algorithm=algorithm))
    assert rules.acquire(0.0, 0.0) is None
    first, second = rules.acquire(0.0, 10.0), rules.acquire(0.0, 10.0)
    assert isinstance(first, _Reservation)
    assert isinstance(second, _Reservation)
    with rules._lock:
        rules.drop(first, 0.0)  # the lock is held: left for its next holder
    assert (rules.snapshot("dropped", 0.0)["waiting"], rules.cancelled) == (1, 1)  # now a hole
    taken = rules.acquire(0.0, 10.0)  # the hole's permit, at 1.0, for a new waiter
    assert taken is first
    with rules._lock:
        rules.drop(second, 0.0)
    stats = rules.snapshot("dropped", 0.0)
    assert (stats["waiting"], stats["cancelled"]) == (1, 2)  # the new waiter still waits
    rules.claim(taken)
    stats = rules.snapshot("dropped", 1.0)
    assert (stats["waiting"], stats["waited"], stats["admitted"], stats["cancelled"]) == (0, 1, 2, 2)


async def test_a_waiter_cut_by_its_deadline_gives_its_permit_back():
    """A deadline that cancels a waiting task (a wait that fit the budget when it began) frees its permit."""
    clock = ManualClock()
    limiter = limiter_on(clock, rate=100.0, burst=1, max_wait=60.0)
    assert limiter.try_acquire()

    async def fn():
        return "never"

    with pytest.raises(TimeoutError):
        # The next permit is due in 0.01 s, within the 0.05 s left: the wait begins. The deadline
        # fires in real time, while the manual clock, which the wait is on, never moves.
        async with fail_after(0.05):
            await limiter.call(fn)
    assert limiter.waiting == 0
    assert limiter.get_stats()["cancelled"] == 1
    assert limiter.available == 0.0


# --- exact under contention ----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_eight_threads_on_a_frozen_clock_get_exactly_burst(algorithm):
    """8 threads x 1000 try_acquire on a frozen clock: exactly burst permits, every refusal counted."""
    clock = FakeClock(0.0)
    limiter = limiter_on(clock, rate=1000.0, burst=37, algorithm=algorithm)
    barrier = threading.Barrier(8, timeout=5)
    taken = [0] * 8

    def worker(index):
        barrier.wait()
        taken[index] = sum(limiter.try_acquire() for _ in range(1000))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(taken) == 37
    stats = limiter.get_stats()
    assert (stats["admitted"], stats["rejected"]) == (37, 8000 - 37)


async def test_tasks_and_threads_share_the_permits(clock):
    """Async tasks and threads take from one bucket: together exactly burst on a frozen clock."""
    limiter = limiter_on(clock, rate=10.0, burst=20)

    async def fn():
        return 1

    async def attempt():
        try:
            return await limiter.call(fn)
        except RateLimitedError:
            return 0

    def attempt_sync():
        try:
            return limiter.call_sync(lambda: 1)
        except RateLimitedError:
            return 0

    threads_done = asyncio.gather(*(asyncio.to_thread(attempt_sync) for _ in range(15)))
    tasks_done = asyncio.gather(*(attempt() for _ in range(15)))
    assert sum(await threads_done) + sum(await tasks_done) == 20


async def test_a_retry_after_behind_the_waiters_of_a_long_period_is_a_duration():
    """Rejected behind waiters past ``MAX_DURATION`` of permits, a caller's ``retry_after`` is at most it.

    Each waiter may wait up to ``max_wait`` (itself a duration), and the permit of the caller
    rejected then is one period later still: 1e10 s here, which no sleep takes.
    """
    clock = ManualClock()
    limiter = limiter_on(clock, rate=1e-9, burst=1, max_wait=MAX_DURATION, max_waiting=20)
    assert limiter.try_acquire()
    tasks = await start_waiters(limiter, clock, 9, [])  # their permits due at 1e9 ... 9e9 s

    async def fn():
        return "never"

    with pytest.raises(RateLimitedError) as raised:
        await limiter.call(fn)
    assert raised.value.retry_after == MAX_DURATION
    assert f"due in {MAX_DURATION:.3f} s" in str(raised.value)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_kept_key_limiter_s_call_waits_in_the_key_s_limiter_in_use_and_its_cancellation_lets_the_key_go():
    """A call on a key's limiter kept past the key's eviction waits in the key's limiter in use.

    Its wait holds that limiter's key (not evicted while it waits); cancelled, it gives its
    permit back there and lets the key go: the next new key evicts it.
    """
    clock = ManualClock()
    per_key = RateLimiter.per_key(
        "kept-wait", RateLimiterConfig(rate=1.0, burst=1, max_wait=60.0), max_keys=1, clock=clock
    )
    kept = per_key.for_key("a")
    per_key.for_key("b")  # evicts "a"
    assert per_key.for_key("a").try_acquire()  # "a"'s new limiter: its one permit
    ran: list[tuple[int, float]] = []
    (task,) = await start_waiters(kept, clock, 1, ran)
    current = per_key.for_key("a")
    assert current is not kept
    assert current.waiting == 1
    per_key.for_key("c")  # past max_keys: "a" is busy (a waiter), "c" is the one kept beside it
    assert per_key.for_key("a") is current
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ran == []
    stats = current.get_stats()
    assert (stats["admitted"], stats["cancelled"], stats["waiting"]) == (1, 1, 0)
    assert current.hold.running == 0
    evicted = per_key.evicted_keys
    per_key.for_key("d")  # "a" is idle now: evicted
    assert per_key.evicted_keys > evicted
    assert per_key.for_key("a") is not current
