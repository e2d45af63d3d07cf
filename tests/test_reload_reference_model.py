"""What a reload (``manager.reconfigure``) keeps, against reference models of the README's rules.

Seeded random sequences of calls, clock moves and reloads to random configs, with the state at
each reload random too (a breaker CLOSED with failures counted, OPEN part way through its
period, HALF_OPEN with probe successes; a bulkhead with calls running and waiting; a limiter with
permits spent). The models carry over what README's "Changing a policy while it runs" says:

* breaker: the state and its period's end carry over (the new ``timeout`` applies to the next
  opening), the consecutive failures too; the outcome of a call in flight at the reload judges
  nothing;
* bulkhead: running and waiting calls are kept; a smaller ``max_concurrent`` admits nobody until
  fewer than the new limit run, a larger one hands its new slots to the waiters at once; a
  smaller ``max_waiting`` keeps the queue and refuses newcomers until it is below it;
* rate limiter: the permits used are kept (a larger ``burst`` hands out none), the tokens refill
  at the new rate from the reload on; another ``algorithm`` starts with a full bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from dataclasses import dataclass, field

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    CountWindow,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    TimeWindow,
)
from otel_resilience.errors import BulkheadFullError, CircuitOpenError, RateLimitedError
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.testing import FakeClock


def boom() -> None:
    raise ConnectionError("down")


# -- circuit breaker -------------------------------------------------------------------------------


@dataclass
class BreakerModel:
    failure_threshold: int
    success_threshold: int
    timeout: float
    state: str = "closed"
    failures: int = 0
    successes: int = 0
    until: float = 0.0
    outages: int = 0
    """Openings from CLOSED: one alert each (a re-open, after a reload too, is the same outage)."""

    def reload(self, failure_threshold: int, success_threshold: int, timeout: float) -> None:
        """Everything carries over; the new settings judge from now on."""
        self.failure_threshold, self.success_threshold, self.timeout = (
            failure_threshold,
            success_threshold,
            timeout,
        )

    def admit(self, now: float) -> bool:
        if self.state == "open":
            if now < self.until:
                return False
            self.state, self.successes = "half_open", 0
        return True

    def ended(self, now: float, fails: bool) -> None:
        if self.state == "half_open":
            if fails:
                self.state, self.until = "open", now + self.timeout
            else:
                self.successes += 1
                if self.successes >= self.success_threshold:
                    self.state, self.failures = "closed", 0
        elif fails:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.state, self.until = "open", now + self.timeout
                self.outages += 1
        else:
            self.failures = 0


def breaker_config(rng: random.Random) -> tuple[int, int, float]:
    return rng.randint(1, 4), rng.randint(1, 3), rng.choice([5.0, 10.0, 20.0])


def breaker_policy(settings: tuple[int, int, float]) -> ResilienceConfig:
    failures, successes, timeout = settings
    return ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=failures, success_threshold=successes, timeout=timeout
        )
    )


@pytest.mark.parametrize("seed", range(30))
def test_breaker_state_carries_over_reloads_as_the_model_says(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    settings = breaker_config(rng)
    model = BreakerModel(*settings)
    with AlertSystem(clock=clock, name="reload-model-alerts") as alerts:
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        keyed = rng.random() < 0.5
        handle = manager.policy("breaker", breaker_policy(settings))
        view = handle.for_key("k") if keyed else handle
        for step in range(120):
            op = rng.random()
            now = clock.now()
            if op < 0.55:
                fails = rng.random() < 0.6
                admitted = model.admit(now)
                try:
                    view.execute_sync(boom if fails else (lambda: "up"))
                    outcome = "ok"
                except CircuitOpenError:
                    outcome = "rejected"
                except ConnectionError:
                    outcome = "failed"
                expected = "rejected" if not admitted else ("failed" if fails else "ok")
                assert outcome == expected, (step, now, model)
                if admitted:
                    model.ended(now, fails)
            elif op < 0.7:
                clock.advance(rng.choice([1.0, 2.5, 5.0, 10.0, 20.0]))
            elif op < 0.85:
                settings = breaker_config(rng)
                manager.reconfigure("breaker", breaker_policy(settings))
                model.reload(*settings)
            elif model.state != "open" or now >= model.until:
                # A call in flight across a reload: admitted before it, it ends after it and judges nothing.
                fails = rng.random() < 0.6
                settings = breaker_config(rng)
                model.admit(now)

                def across(fails: bool = fails, settings: tuple[int, int, float] = settings) -> str:
                    manager.reconfigure("breaker", breaker_policy(settings))
                    if fails:
                        raise ConnectionError("down")
                    return "up"

                with contextlib.suppress(ConnectionError):
                    view.execute_sync(across)
                if settings == (model.failure_threshold, model.success_threshold, model.timeout):
                    model.ended(now, fails)  # an equal config changes nothing: no reload came between
                model.reload(*settings)
            state = view.circuit_breaker.state.value
            shown = "open" if model.state == "open" and clock.now() < model.until else model.state
            if model.state == "open" and clock.now() >= model.until:
                assert state in {"open", "half_open"}, (step, model)
            else:
                assert state == shown, (step, model)
        assert alerts.get_stats()["by_kind"]["circuit_open"] == model.outages


Window = tuple[str, float, int] | None
"""``("count", 0, size)``, ``("time", seconds, buckets)``, or ``None`` (consecutive failures, 3)."""
Judged = tuple[Window, float, int, int, float]
"""A breaker's settings: its window, the failure rate and minimum calls it opens at,
``success_threshold``, ``timeout``."""


@dataclass
class JudgedBreakerModel:
    """Consecutive failures, or a failure rate over a window once ``minimum`` calls were seen.

    A count window holds the last ``size`` calls; a time window the calls of its current bucket
    (``floor(t / width)``) and the ``buckets - 1`` before it. The window starts again with each
    state. A reload keeps the state, the period's end, and the failure count (a window's: the
    failures it holds) with the window's contents when the window is unchanged; another window
    (or none instead of one) starts empty, with the failure count. The new settings judge the
    next outcome.
    """

    settings: Judged
    state: str = "closed"
    failures: int = 0
    window: list[tuple[float, bool]] = field(default_factory=list)
    successes: int = 0
    until: float = 0.0
    outages: int = 0

    def reload(self, settings: Judged) -> None:
        if settings[0] != self.settings[0]:  # another window, or none instead of one: from 0
            self.window, self.failures = [], 0 if self.state == "closed" else self.failures
        self.settings = settings

    def admit(self, now: float) -> bool:
        if self.state == "open":
            if now < self.until:
                return False
            self.state, self.successes = "half_open", 0
        return True

    def _open(self, now: float) -> None:
        if self.state == "closed":
            self.outages += 1
        self.state, self.until, self.window = "open", now + self.settings[4], []

    def held(self, now: float) -> list[bool]:
        """The outcomes the window holds at ``now``."""
        window = self.settings[0]
        assert window is not None
        kind, seconds, size = window
        if kind == "count":
            return [failed for _, failed in self.window[-size:]]
        width = seconds / size
        current = math.floor(now / width)
        return [failed for at, failed in self.window if math.floor(at / width) > current - size]

    def ended(self, now: float, fails: bool) -> None:
        window, rate, minimum, successes, _ = self.settings
        if self.state == "half_open":
            if fails:
                self._open(now)
            else:
                self.successes += 1
                if self.successes >= successes:
                    self.state, self.failures, self.window = "closed", 0, []
            return
        if window is None:
            self.failures = self.failures + 1 if fails else 0
            if self.failures >= 3:
                self._open(now)
            return
        self.window.append((now, fails))
        held = self.held(now)
        self.failures = sum(held)
        if len(held) >= minimum and self.failures / len(held) >= rate:
            self._open(now)


def judged_settings(rng: random.Random) -> Judged:
    window: Window = rng.choice([None, ("count", 0, 4), ("count", 0, 6), ("time", 10.0, 5), ("time", 6.0, 3)])
    minimum = 1 if window is None else rng.randint(1, 4)
    return window, rng.choice([0.25, 0.5, 0.75, 1.0]), minimum, rng.randint(1, 2), rng.choice([5.0, 10.0])


def judged_policy(settings: Judged) -> ResilienceConfig:
    window, rate, minimum, successes, timeout = settings
    if window is None:
        breaker = CircuitBreakerConfig(failure_threshold=3, success_threshold=successes, timeout=timeout)
    else:
        kind, seconds, size = window
        breaker = CircuitBreakerConfig(
            sliding_window=CountWindow(size=size)
            if kind == "count"
            else TimeWindow(seconds=seconds, buckets=size),
            failure_rate_threshold=rate,
            minimum_calls=minimum,
            success_threshold=successes,
            timeout=timeout,
        )
    return ResilienceConfig(circuit_breaker=breaker)


@pytest.mark.parametrize("seed", range(30))
def test_a_windowed_breaker_keeps_its_window_across_reloads_as_the_model_says(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    settings = judged_settings(rng)
    model = JudgedBreakerModel(settings)
    with AlertSystem(clock=clock, name="reload-model-alerts") as alerts:
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        handle = manager.policy("judged", judged_policy(settings))
        view = handle.for_key("k") if rng.random() < 0.5 else handle
        for step in range(150):
            op = rng.random()
            now = clock.now()
            if op < 0.65:
                fails = rng.random() < 0.5
                admitted = model.admit(now)
                try:
                    view.execute_sync(boom if fails else (lambda: "up"))
                    outcome = "ok"
                except CircuitOpenError:
                    outcome = "rejected"
                except ConnectionError:
                    outcome = "failed"
                expected = "rejected" if not admitted else ("failed" if fails else "ok")
                assert outcome == expected, (step, now, model)
                if admitted:
                    model.ended(now, fails)
            elif op < 0.8:
                clock.advance(rng.choice([0.5, 1.0, 2.5, 5.0, 10.0]))
            else:
                settings = judged_settings(rng)
                manager.reconfigure("judged", judged_policy(settings))
                model.reload(settings)
            if model.state != "open" or clock.now() < model.until:
                assert view.circuit_breaker.peek_state().value == model.state, (step, model)
            if model.state == "closed" and (model.settings[0] or ("count",))[0] == "count":
                assert view.circuit_breaker.get_stats()["failure_count"] == model.failures, (step, model)
        assert alerts.get_stats()["by_kind"]["circuit_open"] == model.outages


# -- rate limiter ----------------------------------------------------------------------------------


@dataclass
class LimiterModel:
    """A token bucket (``tokens``, refilled at ``rate`` up to ``burst``) or a sliding log (``log``:
    at most ``burst`` admissions in any ``burst / rate`` seconds)."""

    algorithm: str
    rate: float
    burst: int
    at: float
    tokens: float = 0.0
    log: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    @property
    def window(self) -> float:
        return self.burst / self.rate

    def bring_to(self, now: float) -> None:
        if self.algorithm == "token_bucket":
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        else:
            self.log = [admitted for admitted in self.log if now - admitted < self.window]
        self.at = now

    def available(self, now: float) -> float:
        self.bring_to(now)
        # a shorter log than a reload left (a smaller burst) shows none available, not fewer
        return self.tokens if self.algorithm == "token_bucket" else float(max(0, self.burst - len(self.log)))

    def take(self, now: float) -> bool:
        if self.available(now) < 1.0 - 1e-9:
            return False
        if self.algorithm == "token_bucket":
            self.tokens -= 1.0
        else:
            self.log.append(now)
        return True

    def reload(self, now: float, algorithm: str, rate: float, burst: int) -> None:
        """Brought to now under the old settings; the permits used kept, at most the new burst.

        Another algorithm is a new limiter, full.
        """
        if algorithm != self.algorithm:
            self.__init__(algorithm, rate, burst, now)  # type: ignore[misc]
            return
        self.bring_to(now)  # the sliding log lets go what its old window let go, never taken back
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, float(burst))


LIMITER_SETTINGS = ([0.5, 1.0, 2.0, 4.0], (1, 6), ["token_bucket", "token_bucket", "sliding_window"])


def limiter_settings(rng: random.Random) -> tuple[str, float, int]:
    rates, bursts, algorithms = LIMITER_SETTINGS
    return rng.choice(algorithms), rng.choice(rates), rng.randint(*bursts)


def limiter_policy(algorithm: str, rate: float, burst: int) -> ResilienceConfig:
    return ResilienceConfig(rate_limiter=RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(40))
def test_spent_permits_are_not_refilled_by_a_reload(seed: int) -> None:
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    settings = limiter_settings(rng)
    model = LimiterModel(*settings, at=clock.now())
    with AlertSystem(clock=clock, name="reload-model-alerts") as alerts:
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        handle = manager.policy("limited", limiter_policy(*settings))
        keyed = rng.random() < 0.5
        view = handle.for_key("k") if keyed else handle
        made = not keyed  # a key's limiter is made at its first use: from the config then
        for step in range(150):
            op = rng.random()
            now = clock.now()
            if op < 0.6:
                expected = model.take(now)
                try:
                    view.execute_sync(lambda: "ok")
                    admitted = True
                except RateLimitedError:
                    admitted = False
                assert admitted == expected, (step, now, model)
            elif op < 0.8:
                clock.advance(rng.choice([0.25, 0.5, 1.0, 2.0]))
            else:
                settings = limiter_settings(rng)
                manager.reconfigure("limited", limiter_policy(*settings))
                if made:
                    model.reload(now, *settings)
                else:
                    model = LimiterModel(*settings, at=now)
            assert math.isclose(view.rate_limiter.available, model.available(clock.now())), (step, model)
            made = True


# -- bulkhead --------------------------------------------------------------------------------------


def bulkhead_policy(slots: int, waiting: int, name: str | None = None) -> ResilienceConfig:
    return ResilienceConfig(
        bulkhead_config=BulkheadConfig(max_concurrent=slots, max_waiting=waiting), bulkhead_name=name
    )


@dataclass
class PoolModel:
    """One bulkhead (the handle's, or a key's): the calls running and those queued, oldest first."""

    running: list[int] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)

    def arrive(self, call: int, slots: int, waiting: int) -> bool:
        """Whether the call is admitted or queued (else rejected at once)."""
        if len(self.running) < slots and not self.queued:
            self.running.append(call)
        elif len(self.queued) < waiting:
            self.queued.append(call)
        else:
            return False
        return True

    def admit_waiters(self, slots: int) -> None:
        """A slot given back while over the limit is freed, not handed on; new slots go to the oldest."""
        while self.queued and len(self.running) < slots:
            self.running.append(self.queued.pop(0))


@pytest.mark.parametrize("seed", range(30))
def test_running_and_waiting_calls_are_kept_by_a_reload(seed: int) -> None:
    """Per key, with reloads of the limits and of the bulkhead's name (a new bulkhead: the calls
    running or queued in the one replaced finish there, under its limits)."""
    rng = random.Random(seed)

    async def scenario() -> None:
        clock = FakeClock(1000.0)
        slots, waiting, name = rng.randint(1, 4), rng.randint(0, 3), None
        with AlertSystem(clock=clock, name="reload-model-alerts") as alerts:
            manager = ResilienceManager(clock=clock, alert_system=alerts)
            handle = manager.policy("pool", bulkhead_policy(slots, waiting))
            views = {None: handle, "a": handle.for_key("a"), "b": handle.for_key("b")}
            pools = {key: PoolModel() for key in views}
            retired: list[tuple[PoolModel, int]] = []  # the pools a rename replaced, with their limits
            rejected: set[int] = set()
            cancelled: set[int] = set()
            entered: set[int] = set()
            finished: set[int] = set()
            releases: dict[int, asyncio.Event] = {}
            tasks: dict[int, asyncio.Task[object]] = {}

            async def work(call: int) -> int:
                entered.add(call)
                await releases[call].wait()
                finished.add(call)
                return call

            async def settle() -> None:
                for _ in range(30):
                    await asyncio.sleep(0)

            def limited() -> list[tuple[PoolModel, int]]:
                return [(pool, slots) for pool in pools.values()] + retired

            for step in range(100):
                op = rng.random()
                key = rng.choice(list(views))
                pool = pools[key]
                if op < 0.45:
                    call = len(tasks)
                    releases[call] = asyncio.Event()
                    tasks[call] = asyncio.ensure_future(views[key].execute(work, call))
                    if not pool.arrive(call, slots, waiting):
                        rejected.add(call)
                elif op < 0.7:
                    held = [(each, limit, call) for each, limit in limited() for call in each.running]
                    if held:
                        each, limit, call = rng.choice(held)
                        each.running.remove(call)
                        releases[call].set()
                        each.admit_waiters(limit)
                elif op < 0.8:
                    calls = [
                        (each, limit, call)
                        for each, limit in limited()
                        for call in each.running + each.queued
                    ]
                    if calls:  # a caller gives up: its slot, or its place in the queue, at once
                        each, limit, call = rng.choice(calls)
                        tasks[call].cancel()
                        cancelled.add(call)
                        (each.running if call in each.running else each.queued).remove(call)
                        each.admit_waiters(limit)
                else:
                    renamed = rng.random() < 0.3
                    if renamed:
                        retired += [(each, slots) for each in pools.values()]
                        pools = {key: PoolModel() for key in views}
                        name = "pool-2" if name is None else None
                    slots, waiting = rng.randint(1, 4), rng.randint(0, 3)
                    manager.reconfigure("pool", bulkhead_policy(slots, waiting, name))
                    for each in pools.values():
                        each.admit_waiters(slots)
                await settle()
                running = {call for each, _ in limited() for call in each.running}
                assert entered - finished - cancelled == running, (step, slots, waiting, pools)
                done_rejected = {
                    call
                    for call, task in tasks.items()
                    if task.done()
                    and not task.cancelled()
                    and isinstance(task.exception(), BulkheadFullError)
                }
                assert done_rejected == rejected, (step, slots, waiting)
                queued = {call for each, _ in limited() for call in each.queued}
                still_waiting = {c for c, t in tasks.items() if not t.done() and c not in entered}
                assert still_waiting == queued, (step, slots, waiting, pools)
                for key, view in views.items():
                    stats = view.bulkhead.get_stats()
                    assert (stats["active"], stats["waiting"]) == (
                        len(pools[key].running),
                        len(pools[key].queued),
                    )
            for event in releases.values():
                event.set()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    asyncio.run(scenario())


def test_a_sliding_window_shrunk_then_grown_back_hands_out_no_free_permits() -> None:
    """Its admissions still in the window are kept across a reload to a smaller burst.

    3 admissions in a 3 s window (1/s, burst 3), a reload to burst 1 (over the same 3 s), then
    back to burst 3: the 3 admissions are still in the window, so none is available. The log
    kept only the newest ``burst`` once shrunk (1), and the reload back handed out 2 free permits:
    5 admissions in 3 s at burst 3.
    """
    clock = FakeClock(1000.0)
    with AlertSystem(clock=clock, name="reload-model-alerts") as alerts:
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        handle = manager.policy("limited", limiter_policy("sliding_window", 1.0, 3))
        for _ in range(3):
            handle.execute_sync(lambda: "ok")
        manager.reconfigure("limited", limiter_policy("sliding_window", 1 / 3, 1))
        with pytest.raises(RateLimitedError):
            handle.execute_sync(lambda: "ok")  # 3 in the window: over the new burst
        manager.reconfigure("limited", limiter_policy("sliding_window", 1.0, 3))
        assert handle.rate_limiter.available == 0.0
        with pytest.raises(RateLimitedError):
            handle.execute_sync(lambda: "ok")
        clock.advance(3.0)  # the 3 leave the window
        assert handle.rate_limiter.available == 3.0


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("seed", range(15))
def test_waiters_for_a_permit_stay_first_across_reloads(seed: int, algorithm: str) -> None:
    """Reservations keep their times and stay first: no newcomer overtakes a waiter, whatever the
    new rate and burst (a faster bucket repays its debt no sooner than the latest reservation)."""
    rng = random.Random(seed)

    def config(rate: float, burst: int) -> ResilienceConfig:
        limiter = RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm, max_wait=4.0)  # type: ignore[arg-type]
        return ResilienceConfig(rate_limiter=limiter)

    async def scenario() -> None:
        clock = FakeClock(1000.0)
        with AlertSystem(clock=clock, name="reload-model-alerts") as alerts:
            manager = ResilienceManager(clock=clock, alert_system=alerts)
            handle = manager.policy("paced", config(rng.choice([0.5, 1.0, 4.0]), rng.randint(1, 3)))
            view = handle.for_key("k") if rng.random() < 0.5 else handle
            entries: dict[int, float] = {}
            tasks: list[asyncio.Task[object]] = []

            async def work(call: int) -> None:
                entries[call] = clock.now()

            for _ in range(60):
                op = rng.random()
                if op < 0.5:
                    tasks.append(asyncio.ensure_future(view.execute(work, len(tasks))))
                    await asyncio.sleep(0)  # it asks for its permit now
                elif op < 0.75:
                    await clock.sleep(rng.choice([0.1, 0.25, 0.5, 1.0]))
                elif op < 0.85:
                    waiting = [task for task in tasks if not task.done()]
                    if waiting:  # the latest waiter gives up: its reservation is rolled back
                        waiting[-1].cancel()  # (an earlier one's is a hole the next newcomer takes over)
                        await asyncio.sleep(0)
                else:
                    manager.reconfigure("paced", config(rng.choice([0.5, 1.0, 4.0, 10.0]), rng.randint(1, 4)))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            admitted = [call for call, result in enumerate(results) if not isinstance(result, BaseException)]
            assert all(
                isinstance(r, (RateLimitedError, asyncio.CancelledError))
                for r in results
                if isinstance(r, BaseException)
            )
            assert sorted(entries) == admitted
            times = [entries[call] for call in admitted]
            assert times == sorted(times), list(zip(admitted, times, strict=True))  # first come, first served

    asyncio.run(scenario())
