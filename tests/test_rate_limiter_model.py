"""The rate limiter against reference models: random sequences of requests, waits, cancels and time.

Times are multiples of 1/16 s and rates powers of two, so every float the limiter computes is
exact and it can be compared with a model in exact fractions, decision for decision.

* :class:`TryAcquireMachine` drives ``RateLimiter.try_acquire`` on a ``FakeClock`` beside a naive
  model (a token bucket refilled by the elapsed time; a list of every admission for the sliding
  window): each request is admitted exactly when the model has a permit, and the admissions
  never exceed the limit in any interval.
* :class:`ReservationMachine` drives the rules object itself with reservations, claims and
  cancellations; every permit handed out or promised to a waiter keeps within the limit, a wait
  is never longer than ``max_wait``, and a refusal always has a reason. A sliding window with no
  reservation ahead (none held for later, no hole left by a cancelled one that the next waiter
  may still take over) admits exactly when its window holds fewer than ``burst`` admissions: a
  cancelled permit nobody took over counts as none.
"""

from __future__ import annotations

from fractions import Fraction

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from otel_resilience import RateLimiter, RateLimiterConfig
from otel_resilience.patterns.rate_limiter.rules import _Reservation, new_rules
from otel_resilience.testing import FakeClock

RATES = st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
BURSTS = st.integers(min_value=1, max_value=6)
ALGORITHMS = st.sampled_from(["token_bucket", "sliding_window"])
STEPS = st.integers(min_value=0, max_value=40).map(lambda sixteenths: sixteenths / 16)


def bucket_excess(times: list[Fraction], rate: Fraction) -> Fraction:
    """The most admissions in any closed interval ``[t0, t1]`` minus ``rate * (t1 - t0)``."""
    worst = Fraction(0)
    lowest = None  # min over i <= j of (i - rate * t_i), for the sorted times
    for j, at in enumerate(sorted(times)):
        here = j - rate * at
        lowest = here if lowest is None or here < lowest else lowest
        worst = max(worst, here - lowest + 1)
    return worst


def window_overflow(times: list[Fraction], burst: int, window: Fraction) -> bool:
    """Whether some window ``[t, t + window)`` holds more than ``burst`` admissions."""
    ordered = sorted(times)
    return any(ordered[i + burst] < ordered[i] + window for i in range(len(ordered) - burst))


class TryAcquireMachine(RuleBasedStateMachine):
    """``try_acquire`` and the passing of time, against a naive model in exact fractions."""

    @initialize(rate=RATES, burst=BURSTS, algorithm=ALGORITHMS)
    def start(self, rate: float, burst: int, algorithm: str) -> None:
        self.clock = FakeClock(0.0)
        self.limiter = RateLimiter(
            "model", RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm), clock=self.clock
        )
        self.algorithm = algorithm
        self.rate, self.burst = Fraction(rate), burst
        self.window = self.burst / self.rate
        self.now = Fraction(0)
        self.tokens = Fraction(burst)  # the model bucket, refilled by the elapsed time
        self.admitted: list[Fraction] = []
        self.refused = 0

    def model_admits(self) -> bool:
        if self.algorithm == "token_bucket":
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False
        in_window = sum(1 for at in self.admitted if at > self.now - self.window)
        return in_window < self.burst

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.now += Fraction(seconds)
        self.tokens = min(Fraction(self.burst), self.tokens + self.rate * Fraction(seconds))

    @rule(count=st.integers(min_value=1, max_value=4))
    def try_acquire(self, count: int) -> None:
        for _ in range(count):
            taken = self.limiter.try_acquire()
            assert taken == self.model_admits(), (self.now, self.admitted)
            if taken:
                self.admitted.append(self.now)
            else:
                self.refused += 1

    @invariant()
    def within_the_limit(self) -> None:
        if self.algorithm == "token_bucket":
            assert bucket_excess(self.admitted, self.rate) <= self.burst
        else:
            assert not window_overflow(self.admitted, self.burst, self.window)

    @invariant()
    def counts_agree(self) -> None:
        stats = self.limiter.get_stats()
        assert (stats["admitted"], stats["rejected"]) == (len(self.admitted), self.refused)
        if self.algorithm == "token_bucket":
            assert stats["available"] == self.tokens


class ReservationMachine(RuleBasedStateMachine):
    """Reservations, claims at their time, cancellations and immediate requests on the rules object."""

    @initialize(
        rate=RATES,
        burst=BURSTS,
        algorithm=ALGORITHMS,
        max_wait=st.sampled_from([0.5, 1.0, 2.0, 8.0]),
        max_waiting=st.integers(min_value=0, max_value=5),
    )
    def start(self, rate: float, burst: int, algorithm: str, max_wait: float, max_waiting: int) -> None:
        config = RateLimiterConfig(
            rate=rate, burst=burst, algorithm=algorithm, max_wait=max_wait, max_waiting=max_waiting
        )
        self.rules = new_rules(config)
        self.config = config
        self.now = 0.0
        self.admitted: list[float] = []  # admission times: immediate, or a claimed reservation's
        self.held: list[_Reservation] = []

    def schedule(self) -> list[Fraction]:
        """Every admission made or promised to a waiter."""
        return [Fraction(at) for at in self.admitted + [r.due for r in self.held]]

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.now += seconds

    def window_room(self) -> int | None:
        """A sliding window's permits free now, or ``None`` while a reservation is ahead (or another algorithm).

        Ahead: one held for later (a newcomer never overtakes it), or a hole whose time has not
        passed (a cancelled one left for the next waiter to take over; the rules' own list tells
        it from one rolled back).
        """
        now = self.now
        if self.config.algorithm != "sliding_window" or any(r.due > now for r in self.held):
            return None
        if any(not r.held and r.due >= now for r in self.rules._pending):
            return None
        window = Fraction(self.config.burst) / Fraction(self.config.rate)
        return self.config.burst - sum(1 for at in self.schedule() if at > Fraction(now) - window)

    @rule(wait=st.booleans(), count=st.integers(min_value=1, max_value=3))
    def request(self, wait: bool, count: int) -> None:
        max_wait = self.config.max_wait if wait else 0.0
        for _ in range(count):
            waiting = len(self.held)
            room = self.window_room()
            got = self.rules.acquire(self.now, max_wait)
            if room is not None:
                assert (got is None) == (room > 0), (self.now, self.schedule())
            if got is None:
                self.admitted.append(self.now)
            elif isinstance(got, float):
                assert got > 0
                assert got > max_wait or waiting >= self.config.max_waiting
            else:
                assert wait
                assert 0 < got.due - self.now <= max_wait
                assert got.held
                assert got not in self.held
                self.held.append(got)

    @precondition(lambda self: any(r.due <= self.now for r in self.held))
    @rule()
    def claim_those_due(self) -> None:
        for reservation in [r for r in self.held if r.due <= self.now]:
            self.rules.claim(reservation)
            self.held.remove(reservation)
            self.admitted.append(reservation.due)

    @precondition(lambda self: any(r.due > self.now for r in self.held))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        reservation = data.draw(st.sampled_from([r for r in self.held if r.due > self.now]))
        self.rules.abandon(reservation, self.now)
        self.held.remove(reservation)

    @invariant()
    def within_the_limit(self) -> None:
        times = self.schedule()
        rate, burst = Fraction(self.config.rate), self.config.burst
        if self.config.algorithm == "token_bucket":
            assert bucket_excess(times, rate) <= burst
        else:
            assert not window_overflow(times, burst, Fraction(burst) / rate)

    @invariant()
    def counts_agree(self) -> None:
        rules = self.rules
        assert rules.waiting == len(self.held) <= self.config.max_waiting
        assert rules.admitted == len(self.admitted)
        room = self.window_room()
        if room is not None:
            assert rules.available(self.now) == room


TestTryAcquire = TryAcquireMachine.TestCase
TestTryAcquire.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestReservations = ReservationMachine.TestCase
TestReservations.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
