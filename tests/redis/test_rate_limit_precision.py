"""A cluster rate limiter on a real redis-server: sub-millisecond permits, and algorithms that differ.

The rate limiter's scripts read the server's time with its microseconds: permits less than a
millisecond apart are each admitted when due (a clock floored to the millisecond let a bucket
admit ``burst`` per millisecond: 996/s at rate 2000, burst 1). A limiter's key names its algorithm, so two limiters of one name and
different algorithms (a rolling deploy) never meet on one key; an error the server answers
(``WRONGTYPE``) is that call's error, never a store outage; and a permit due within ``max_wait``
is waited for, as with a local limiter, not refused for its rounding to whole milliseconds.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from otel_resilience import RateLimiter, RateLimiterConfig, RedisStore
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, key_attribute
from otel_resilience.patterns.rate_limiter.config import Algorithm

THREADS = 4
WINDOW = 1.0


def _offer(limiter: RateLimiter, seconds: float) -> tuple[int, int, float]:
    """Call ``try_acquire`` from a few threads as fast as they can: (admitted, refused, seconds taken)."""
    counts: list[tuple[int, int]] = []
    start = threading.Event()

    def run(stop: float) -> None:
        start.wait()
        admitted = refused = 0
        while time.monotonic() < stop:
            if limiter.try_acquire():
                admitted += 1
            else:
                refused += 1
        counts.append((admitted, refused))

    began = time.monotonic()
    threads = [threading.Thread(target=run, args=(began + seconds,)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()
    taken = time.monotonic() - began
    return sum(a for a, _ in counts), sum(r for _, r in counts), taken


def test_permits_less_than_a_millisecond_apart_are_each_admitted_when_due(redis_url: str) -> None:
    """A permit every 10 µs, burst 1: each request, a round trip after the last, finds its permit due.

    With the server's time floored to whole milliseconds every request within the millisecond of
    the one before was refused (its permit seemed a fraction of a millisecond away). No timing is
    asserted: a slower machine only puts the requests further apart, where they are due anyway.
    """
    store = RedisStore.from_url(redis_url, namespace="prec-due")
    try:
        limiter = RateLimiter("fast", RateLimiterConfig(rate=100_000.0, burst=1, store=store))
        assert [limiter.try_acquire() for _ in range(200)] == [True] * 200
        assert not store.degraded
        assert store.errors == 0
    finally:
        store.close()


def test_a_cluster_bucket_admits_no_more_than_its_rate(redis_url: str) -> None:
    """More offered than 200/s for 1 s: at most rate x seconds + burst admitted (GCRA on the server's clock)."""
    store = RedisStore.from_url(redis_url, namespace="prec-bound")
    try:
        limiter = RateLimiter("bound", RateLimiterConfig(rate=200.0, burst=1, store=store))
        admitted, refused, taken = _offer(limiter, WINDOW)
        assert refused > 0  # more offered than the rate
        assert 0 < admitted <= 200.0 * taken + 1 + 1
        assert not store.degraded
    finally:
        store.close()


def test_a_cluster_sliding_window_admits_exactly_burst_per_window_on_the_microsecond_clock(
    redis_url: str,
) -> None:
    """The sliding log keeps its promise on the finer clock: ``burst`` in a window, then none."""
    store = RedisStore.from_url(redis_url, namespace="prec")
    try:
        config = RateLimiterConfig(rate=200.0, burst=100, algorithm="sliding_window", store=store)
        limiter = RateLimiter("log", config)
        admitted, refused, taken = _offer(limiter, 0.3)
        assert taken < 0.5 * 0.99  # within one window of 0.5 s
        assert admitted == 100
        assert refused > 0
    finally:
        store.close()


def test_two_limiters_of_one_name_and_different_algorithms_each_work(redis_url: str) -> None:
    """A rolling deploy changes ``algorithm``: the old and new replicas' limiters use two keys.

    Each admits its burst then refuses, on its own budget; no ``WRONGTYPE``, no outage, no
    fallback permit.
    """
    old = RedisStore.from_url(redis_url, namespace="deploy")
    new = RedisStore.from_url(redis_url, namespace="deploy")
    try:
        bucket = RateLimiter("partner", RateLimiterConfig(rate=1.0, burst=3, store=old))
        log = RateLimiter(
            "partner", RateLimiterConfig(rate=1.0, burst=3, algorithm="sliding_window", store=new)
        )
        answers = [(bucket.try_acquire(), log.try_acquire()) for _ in range(5)]
        assert answers == [(True, True)] * 3 + [(False, False)] * 2
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.type("deploy:rl:token_bucket:partner") == b"string"
            assert client.type("deploy:rl:sliding_window:partner") == b"list"
            assert client.exists("deploy:rl:partner") == 0
        finally:
            client.close()
        for store in (old, new):
            assert not store.degraded
            assert (store.outages, store.errors, store.fallback_permits) == (0, 0, 0)
    finally:
        old.close()
        new.close()


def test_a_refused_long_keys_warning_names_its_store_key_cut(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5,000-character key's refused store key is named as a ``resilience.key`` is: cut, bounded."""
    key = "k" * 5_000
    store_key = f"longkey:rl:token_bucket:api:{key}"
    client = redis.Redis.from_url(redis_url)
    client.rpush(store_key, "not a bucket")
    store = RedisStore.from_url(redis_url, namespace="longkey")
    try:
        config = RateLimiterConfig(rate=1.0, burst=1, store=store, store_fallback="open")  # type: ignore[arg-type]
        per_key = RateLimiter.per_key("api", config)
        with caplog.at_level("WARNING", logger="otel_resilience"):
            assert per_key.for_key(key).try_acquire()
        refusals = [
            record.getMessage()
            for record in caplog.records
            if "refused rate limiter key" in record.getMessage()
        ]
        assert len(refusals) == 1
        assert repr(key_attribute(store_key)) in refusals[0]
        assert "WRONGTYPE" in refusals[0]
        assert len(refusals[0]) < 2 * MAX_ATTRIBUTE_LENGTH + 200
    finally:
        client.delete(store_key)
        client.close()
        store.close()


@pytest.mark.parametrize(("fallback", "admitted"), [("open", True), ("closed", False)])
def test_an_error_the_server_answers_is_the_calls_not_an_outage(
    redis_url: str, caplog: pytest.LogCaptureFixture, fallback: str, admitted: bool
) -> None:
    """``WRONGTYPE`` on a limiter's key: its fallback answers, the store counts an error, stays up.

    The store's breakers stay shared (it is not degraded), and the warning is logged once per limiter.
    """
    client = redis.Redis.from_url(redis_url)
    client.rpush("bad:rl:token_bucket:api", "not a bucket")
    store = RedisStore.from_url(redis_url, namespace="bad")
    try:
        config = RateLimiterConfig(rate=1.0, burst=1, store=store, store_fallback=fallback)  # type: ignore[arg-type]
        limiter = RateLimiter("api", config)
        with caplog.at_level("WARNING", logger="otel_resilience"):
            assert [limiter.try_acquire() for _ in range(3)] == [admitted] * 3
        assert not store.degraded
        assert (store.outages, store.errors) == (0, 3)
        refusals = [record for record in caplog.records if "refused rate limiter key" in record.getMessage()]
        assert len(refusals) == 1
        assert "WRONGTYPE" in refusals[0].getMessage()
        assert not any("unreachable" in record.getMessage() for record in caplog.records)
        client.delete("bad:rl:token_bucket:api")
        assert limiter.try_acquire()  # the key is the bucket's again: Redis answers
        assert limiter.get_stats()["admitted"] == (4 if admitted else 1)
    finally:
        store.close()
        client.close()


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_a_permit_due_within_max_wait_is_waited_for_as_a_local_limiters_is(
    redis_url: str, algorithm: Algorithm
) -> None:
    """Two callers at once, one permit every 100.99 ms, each allowed to wait that long: the second
    waits for the next permit, as with a local limiter. Due up to 100.99 ms after the first (less the
    time between the two asks), it was refused: the script compared the wait rounded up to whole
    milliseconds with ``max_wait`` floored, less one more millisecond (100.99 ms allowed 99)."""
    interval = 0.10099
    store = RedisStore.from_url(redis_url, namespace="rl-max-wait")
    try:
        for config in (
            RateLimiterConfig(rate=1 / interval, burst=1, max_wait=interval, algorithm=algorithm),
            RateLimiterConfig(
                rate=1 / interval, burst=1, max_wait=interval, algorithm=algorithm, store=store
            ),
        ):
            limiter = RateLimiter(f"paced-{config.store is None}", config)
            assert await asyncio.gather(limiter.call(_zero), limiter.call(_zero)) == [0, 0]
            stats = limiter.get_stats()
            assert (stats["admitted"], stats["waited"], stats["rejected"]) == (2, 1, 0)
    finally:
        store.close()


async def _zero() -> int:
    return 0
