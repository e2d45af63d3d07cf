"""The rate limiter against exact reference models, at rates whose floats round (100/min, 3/s, 0.3/s).

``test_rate_limiter_model.py`` compares the rules decision for decision at powers of two, where
every float is exact. Here the rates and the clock's readings are any floats, as in real use:

* a reference model in exact fractions of each documented algorithm (a token bucket of ``burst``
  refilled at ``rate``; at most ``burst`` admissions in any window of ``burst / rate`` seconds)
  is driven beside a ``RateLimiter`` on a ``FakeClock`` by seeded random sequences of
  ``try_acquire``, calls, clock moves, moves to the very reading a permit is due, and moves by a
  refusal's ``retry_after``. Each decision must be the model's, except within a rounding's width
  of a permit's time (there the limiter's own answer is taken, and the model follows it); a
  refusal's ``retry_after`` is ``> 0`` and the model's wait to rounding, and a caller back then
  finds the permit (``RateLimitedError.retry_after``: "a caller that comes back then finds
  one"; swept too, at every tenth of an interval after a full burst); the counts and the
  permits available of ``get_stats`` are the model's;
* a keyed limiter is one model per key (a key's text), each on its own budget;
* a waiting caller (``max_wait``) is given the permit the model says is next, in the order
  asked (first come, first served), or is refused at once when it comes later than
  ``max_wait``; a waiter that gives up gives its place back (the latest: as if never asked);
* a limiter shared through a real redis-server (``RedisStore``) answers a sequence faster than its
  permits come as the local one does (its clock is the server's: only what time cannot change is
  compared).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Iterator
from fractions import Fraction

import pytest
from redis_support import RedisServer

from otel_resilience import RateLimitedError, RateLimiter, RateLimiterConfig, RedisStore
from otel_resilience.patterns.rate_limiter.config import Algorithm
from otel_resilience.patterns.rate_limiter.rules import _Reservation, new_rules
from otel_resilience.testing import FakeClock

RATES = [100 / 60, 3.0, 0.5, 0.3, 7.0, 10 / 3, 0.1, 1000.0]
SEEDS = range(12)
NEAR: Fraction = Fraction(1, 10**9)
"""How near a permit's time a reading is a rounding's width from it (either answer is right there)."""


class Model:
    """One limiter in exact fractions: ``admit(now)`` or the seconds until the next permit."""

    def __init__(self, algorithm: Algorithm, rate: float, burst: int) -> None:
        self.algorithm = algorithm
        self.rate = Fraction(rate)
        self.burst = burst
        self.window = burst / self.rate
        self.tokens = Fraction(burst)
        self.at: Fraction | None = None
        self.log: list[Fraction] = []  # the sliding window's admissions, oldest first
        self.admitted = self.rejected = 0

    def _refill(self, now: Fraction) -> None:
        if self.at is not None:
            self.tokens = min(Fraction(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait(self, now: Fraction) -> Fraction:
        """The seconds from ``now`` until a permit is free (0: free now)."""
        if self.algorithm == "token_bucket":
            self._refill(now)
            return max(Fraction(0), (1 - self.tokens) / self.rate)
        inside = [at for at in self.log if at > now - self.window]
        if len(inside) < self.burst:
            return Fraction(0)
        return inside[-self.burst] + self.window - now

    def take(self, now: Fraction) -> None:
        self._refill(now)
        self.tokens -= 1
        self.log.append(now)
        self.admitted += 1


_NAMES = itertools.count()


def _limiter(name: str, algorithm: Algorithm, rate: float, burst: int, clock: FakeClock) -> RateLimiter:
    config = RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm)
    return RateLimiter(f"{name}_{next(_NAMES)}", config, clock=clock)


def _refused_after(limiter: RateLimiter) -> float | None:
    """Ask for a permit with a call: ``None`` when admitted, else the rejection's ``retry_after``."""
    try:
        limiter.call_sync(lambda: None)
    except RateLimitedError as error:
        return error.retry_after
    return None


def _decide(limiter: RateLimiter, model: Model, now: Fraction, *, by_call: bool) -> float | None:
    """One request to both; the decisions agree unless ``now`` is a rounding's width from a permit's time."""
    wait = model.wait(now)
    refused = _refused_after(limiter) if by_call else (None if limiter.try_acquire() else 1.0)
    if abs(wait) > NEAR:
        assert (refused is None) == (wait == 0), (now, wait, refused)
    if refused is None:
        assert wait <= NEAR, (now, wait)
        model.take(now)
        return None
    model.rejected += 1
    if by_call:
        assert refused > 0
        assert abs(Fraction(refused) - wait) <= NEAR * max(Fraction(1), wait), (now, wait, refused)
    return refused


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("rate", RATES)
def test_try_acquire_and_calls_agree_with_the_model(algorithm: Algorithm, rate: float) -> None:
    for seed in SEEDS:
        rng = random.Random(f"{algorithm}-{rate}-{seed}")
        burst = rng.choice([1, 1, 2, 3, 5, 100])
        clock = FakeClock(rng.choice([0.0, 0.1, 1000.1, 86_400.7, rng.uniform(0.0, 1e5)]))
        limiter = _limiter("reference", algorithm, rate, burst, clock)
        model = Model(algorithm, rate, burst)
        for _ in range(150):
            now = Fraction(clock.now())
            move = rng.random()
            if move < 0.4:
                by_call = rng.random() < 0.5
                refused = _decide(limiter, model, now, by_call=by_call)
                if by_call and refused is not None and rng.random() < 0.5:
                    # Back at the refusal's retry_after: the permit is there (nobody else took it).
                    clock.advance(refused)
                    assert _decide(limiter, model, Fraction(clock.now()), by_call=True) is None
            elif move < 0.6:
                # To the reading the model's next permit is due at (or by exactly 1 / rate).
                seconds = float(model.wait(now)) if rng.random() < 0.7 else 1 / rate
                clock.advance(seconds)
                _decide(limiter, model, Fraction(clock.now()), by_call=rng.random() < 0.5)
            else:
                clock.advance(rng.choice([0.0, rng.uniform(0.0, 1.5 / rate), rng.uniform(0.0, 0.05 / rate)]))
        stats = limiter.get_stats()
        assert (stats["admitted"], stats["rejected"], stats["waited"]) == (model.admitted, model.rejected, 0)
        assert stats["waiting"] == stats["cancelled"] == 0
        now = Fraction(clock.now())
        if algorithm == "token_bucket":
            model.wait(now)  # refilled to now
            assert abs(Fraction(stats["available"]) - model.tokens) <= NEAR * burst
        else:
            # An admission a rounding's width from leaving the window may be in it or out of it.
            surely = sum(1 for at in model.log if at > now - model.window + NEAR)
            maybe = sum(1 for at in model.log if at > now - model.window - NEAR)
            assert max(0, burst - maybe) <= stats["available"] <= burst - surely


@pytest.mark.parametrize("rate", [100 / 60, 3.0, 0.5])
def test_a_permit_comes_exactly_one_interval_after_the_last(rate: float) -> None:
    """Paced at exactly ``1 / rate`` from an empty bucket or window of one, every caller is admitted."""
    for algorithm in ("token_bucket", "sliding_window"):
        for start in (0.0, 0.1, 1000.1, 86_400.7):
            clock = FakeClock(start)
            limiter = _limiter("paced", algorithm, rate, 1, clock)
            for _ in range(50):
                assert limiter.try_acquire(), (algorithm, start, clock.now())
                clock.advance(1 / rate)


def test_a_sliding_window_caller_back_at_its_retry_after_finds_its_permit() -> None:
    """0.3/s, a window of one: admitted at 0, refused at 0.8 for 2.533... s; back then, admitted.

    ``0.8 + 2.533333333333333`` rounds to ``3.333333333333333``, a step before the permit's time
    ``3.3333333333333335``: a ``retry_after`` of ``due - now`` came back to a refusal (for
    ``4.4e-16`` s).
    """
    clock = FakeClock(0.0)
    limiter = _limiter("window", "sliding_window", 0.3, 1, clock)
    assert _refused_after(limiter) is None
    clock.advance(0.8)
    retry_after = _refused_after(limiter)
    assert retry_after is not None
    assert retry_after > 0
    clock.advance(retry_after)
    assert _refused_after(limiter) is None


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("rate", RATES)
def test_every_caller_back_at_its_retry_after_finds_its_permit(algorithm: Algorithm, rate: float) -> None:
    """A full burst, then a caller every tenth of an interval refused and back at its retry_after: admitted."""
    for burst in (1, 2, 3):
        for start in (0.0, 0.1, 1000.1):
            for tenth in range(1, 10 * burst):
                clock = FakeClock(start)
                limiter = _limiter("back", algorithm, rate, burst, clock)
                assert [limiter.try_acquire() for _ in range(burst)] == [True] * burst
                clock.advance(tenth / 10 / rate)
                retry_after = _refused_after(limiter)
                if retry_after is None:
                    continue  # the bucket's permit came already
                assert retry_after > 0
                clock.advance(retry_after)
                assert _refused_after(limiter) is None, (burst, start, tenth, retry_after)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_keys_each_have_their_own_budget(algorithm: Algorithm) -> None:
    for seed in range(6):
        rng = random.Random(f"keys-{algorithm}-{seed}")
        rate, burst = rng.choice(RATES[:4]), rng.choice([1, 2, 3])
        clock = FakeClock(rng.choice([0.0, 1000.1]))
        config = RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm)
        keyed = RateLimiter.per_key(f"reference_keys_{next(_NAMES)}", config, clock=clock)
        models: dict[str, Model] = {}
        for _ in range(200):
            if rng.random() < 0.3:
                clock.advance(rng.uniform(0.0, 1.0 / rate))
                continue
            key = rng.choice([1, "1", "a", "b", ("t", 2)])  # 1 and "1" are one key: its text
            model = models.setdefault(str(key), Model(algorithm, rate, burst))
            _decide(keyed.for_key(key), model, Fraction(clock.now()), by_call=rng.random() < 0.5)
        for text, model in models.items():
            stats = keyed.for_key(text).get_stats()
            assert (stats["admitted"], stats["rejected"]) == (model.admitted, model.rejected), text


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("rate", [100 / 60, 3.0, 0.5, 0.3])
def test_waiters_are_served_in_order_at_the_models_times(algorithm: Algorithm, rate: float) -> None:
    """Callers that may wait, some giving up: each is promised the permit the model says is next, FIFO."""
    for seed in range(8):
        rng = random.Random(f"wait-{algorithm}-{rate}-{seed}")
        burst = rng.choice([1, 2, 3])
        max_wait = rng.choice([1.0, 2.5, 5.0]) / rate
        rules = new_rules(
            RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm, max_wait=max_wait, max_waiting=4)
        )
        now = rng.choice([0.0, 1000.1])
        times: list[Fraction] = []  # every admission, made or promised (sorted)
        held: list[_Reservation] = []
        admitted = rejected = cancelled = 0
        for _ in range(120):
            move = rng.random()
            if move < 0.3:
                now += rng.uniform(0.0, 1.0 / rate)
                for reservation in [r for r in held if r.due <= now]:
                    rules.claim(reservation)
                    held.remove(reservation)
                    admitted += 1
            elif move < 0.4 and held and held[-1].due > now:
                # The latest waiter gives up: as if it had never asked.
                rules.abandon(held.pop(), now)
                times.pop()
                cancelled += 1
            else:
                may_wait = rng.random() < 0.7
                due = _next_permit(algorithm, Fraction(rate), burst, times, Fraction(now))
                got = rules.acquire(now, max_wait if may_wait else 0.0)
                wait = due - Fraction(now)
                if abs(wait) <= NEAR or abs(wait - Fraction(max_wait if may_wait else 0.0)) <= NEAR:
                    pass  # a rounding's width from the permit or from max_wait: either answer
                elif wait <= 0:
                    assert got is None, (now, due)
                elif not may_wait or wait > Fraction(max_wait) or len(held) >= 4:
                    assert isinstance(got, float), (now, due, got)
                else:
                    assert isinstance(got, _Reservation), (now, due, got)
                if got is None:
                    times.append(Fraction(now))
                    admitted += 1
                elif isinstance(got, float):
                    assert got > 0
                    assert abs(Fraction(got) - wait) <= NEAR * max(Fraction(1), wait), (now, due, got)
                    rejected += 1
                else:
                    assert abs(Fraction(got.due) - due) <= NEAR * max(Fraction(1), due), (now, due, got.due)
                    assert not held or got.due >= held[-1].due  # first come, first served
                    times.append(Fraction(got.due))
                    held.append(got)
                times.sort()
        assert (rules.admitted, rules.rejected, rules.cancelled, rules.waiting) == (
            admitted,
            rejected,
            cancelled,
            len(held),
        )


def _next_permit(
    algorithm: Algorithm, rate: Fraction, burst: int, times: list[Fraction], now: Fraction
) -> Fraction:
    """When the next permit is due at ``now``, after every admission made or promised (``times``, sorted).

    Both: not before the latest permit promised (first come, first served). The token bucket: the
    least such ``t`` at which, from every admission ``a_j`` on (the bucket at most full then), the
    admissions since and this one fit: ``count(times >= a_j) + 1 <= burst + rate * (t - a_j)``.
    The sliding window: the earliest ``t`` with fewer than ``burst`` admissions in ``(t - window, t]``.
    """
    latest = max([now, *times])
    if algorithm == "sliding_window":
        window = burst / rate
        if len(times) < burst:
            return latest if times and times[-1] > now else now
        due = times[-burst] + window
        return max(due, latest if times[-1] > now else now)
    due = latest if times and times[-1] > now else now
    for j, start in enumerate(times):
        taken = len(times) - j + 1  # the admissions from start on, and this one
        need = start + (taken - burst) / rate
        due = max(due, need)
    return due


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free 127.0.0.1 port for this module, stopped by pid at its end."""
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize(("rate", "burst"), [(100 / 60, 100), (0.5, 1), (0.3, 2), (1 / 7, 5)])
def test_a_shared_limiter_agrees_with_a_local_one(
    redis_url: str, algorithm: Algorithm, rate: float, burst: int
) -> None:
    """One sequence of requests, faster than a permit comes, on a local limiter and on Redis: the same answers.

    The shared limiter runs on the server's clock, so only what the time the requests take cannot
    change is compared: which are admitted, the counts, and each refusal's ``retry_after``: no later
    than the local one's (frozen clock), and no earlier than that less the seconds the requests took.
    """
    store = RedisStore.from_url(redis_url, namespace=f"model{next(_NAMES)}")
    try:
        config = RateLimiterConfig(rate=rate, burst=burst, algorithm=algorithm)
        local = RateLimiter(f"local_{next(_NAMES)}", config, clock=FakeClock(1000.1))
        shared = RateLimiter(f"shared_{next(_NAMES)}", dataclasses.replace(config, store=store))
        began = time.monotonic()
        answers = [(local.try_acquire(), shared.try_acquire()) for _ in range(burst + 3)]
        refusals = [(_refused_after(local), _refused_after(shared)) for _ in range(3)]
        took = time.monotonic() - began
        assert took < 0.5 / rate  # no permit came meanwhile: the comparison holds
        assert answers == [(True, True)] * burst + [(False, False)] * 3
        for mine, theirs in refusals:
            assert mine is not None
            assert theirs is not None
            assert mine - took - 1e-3 <= theirs <= mine + 1e-3  # the server's time is to the microsecond
        mine_counts, their_counts = local.get_stats(), shared.get_stats()
        for count in ("admitted", "rejected", "waited", "cancelled", "waiting"):
            assert mine_counts[count] == their_counts[count], count
        assert not store.degraded
        assert (store.outages, store.errors, store.fallback_permits) == (0, 0, 0)
    finally:
        store.close()
