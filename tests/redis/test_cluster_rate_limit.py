"""A rate limit shared by replicas through a real redis-server, and its fallbacks while Redis is away."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import signal
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from redis_support import Attempts, RedisServer, free_port
from shared_workers import Board, limiter_worker, start, stop, wait_for
from support import collect_inside
from tcp_proxy import TcpFaultProxy

from otel_resilience import (
    OperationTimeoutError,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    RedisStore,
)
from otel_resilience.engine import SYSTEM_CLOCK, AsyncDeadline, SyncDeadline
from otel_resilience.patterns.rate_limiter.config import Algorithm
from otel_resilience.store import scripts
from otel_resilience.store.rate import ClusterRules
from otel_resilience.testing import FakeClock

WORKERS = 4


def test_four_processes_share_one_budget_of_100_per_second(redis_url: str) -> None:
    """Four processes trying as fast as they can admit 100 ± a few per second in total."""
    board = Board.new(WORKERS)
    options = {"rate": 100.0, "burst": 5, "pace": 0.002}
    processes = start(limiter_worker, redis_url, board, options, WORKERS)
    try:
        time.sleep(0.5)
        first, started = board.admitted.value, time.monotonic()
        time.sleep(3.0)
        last, ended = board.admitted.value, time.monotonic()
        rate = (last - first) / (ended - started)
        print(f"cluster rate: {rate:.1f}/s admitted, {sum(board.rejected)} rejected")
        assert 95.0 <= rate <= 105.0
        assert sum(board.rejected) > 0  # they asked for more than the budget
    finally:
        stop(board, processes)


def test_a_cluster_bucket_admits_its_burst_then_its_rate(redis_url: str) -> None:
    """Two limiters (two replicas) share one bucket: a burst of 5 between them, then refusals."""
    one, two = RedisStore.from_url(redis_url, namespace="rl"), RedisStore.from_url(redis_url, namespace="rl")
    try:
        a = RateLimiter("api", RateLimiterConfig(rate=1.0, burst=5, store=one))
        b = RateLimiter("api", RateLimiterConfig(rate=1.0, burst=5, store=two))
        admitted = [limiter.try_acquire() for limiter in (a, b, a, b, a, b, a)]
        assert admitted == [True] * 5 + [False, False]
        with pytest.raises(RateLimitedError) as raised:
            b.call_sync(int)
        assert 0.0 < raised.value.retry_after <= 1.0
        assert a.get_stats()["admitted"] == 3
        assert b.get_stats()["rejected"] == 2
    finally:
        one.close()
        two.close()


def test_try_acquire_under_a_deadline_that_passed_asks_nothing_and_raises_the_deadlines_timeout(
    redis_url: str,
) -> None:
    """A shared limiter asks Redis in the caller's thread, never past the caller's deadline: under
    one that has passed, ``try_acquire`` asks nothing, and the deadline's scope raises its timeout
    (counted in ``cancelled``; the store is not degraded, the permit not spent)."""
    store = RedisStore.from_url(redis_url, namespace="rl-expired")
    try:
        limiter = RateLimiter("expired", RateLimiterConfig(rate=0.001, burst=2, store=store))
        assert limiter.try_acquire()
        clock = FakeClock()
        with pytest.raises(OperationTimeoutError) as raised, SyncDeadline(clock, 1.0, "caller"):
            clock.advance(2.0)
            limiter.try_acquire()
        assert raised.value.operation == "caller"
        stats = limiter.get_stats()
        assert (stats["admitted"], stats["rejected"], stats["cancelled"]) == (1, 0, 1)
        assert (store.degraded, store.outages) == (False, 0)
        assert limiter.try_acquire()  # the second permit of the burst: none was spent meanwhile
        assert not limiter.try_acquire()
    finally:
        store.close()


def test_a_cluster_sliding_window_never_admits_more_than_burst_in_a_window(redis_url: str) -> None:
    """``"sliding_window"`` in the cluster: 3 admissions, then none until the window has passed."""
    store = RedisStore.from_url(redis_url, namespace="rl")
    try:
        limiter = RateLimiter(
            "log", RateLimiterConfig(rate=6.0, burst=3, algorithm="sliding_window", store=store)
        )
        assert [limiter.try_acquire() for _ in range(4)] == [True, True, True, False]
        time.sleep(0.6)
        assert limiter.try_acquire()
    finally:
        store.close()


def test_a_waiting_caller_gets_the_cluster_permit_due_next(redis_url: str) -> None:
    """With max_wait, a caller reserves the cluster's next permit and waits for it."""
    store = RedisStore.from_url(redis_url, namespace="rl")
    try:
        limiter = RateLimiter("wait", RateLimiterConfig(rate=10.0, burst=1, max_wait=1.0, store=store))
        started = time.monotonic()
        assert [limiter.call_sync(int) for _ in range(3)] == [0, 0, 0]
        assert time.monotonic() - started >= 0.15  # two waits of ~0.1 s each
        assert limiter.get_stats()["waited"] == 2
    finally:
        store.close()


@pytest.fixture
def dead_store() -> Iterator[RedisStore]:
    """A store whose Redis is not there (nothing listens on its port)."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="dead", timeout=0.2)
    yield store
    store.close()


def test_fail_open_admits_every_call_and_counts_it(dead_store: RedisStore) -> None:
    """The default fallback: Redis unreachable, every call is admitted, counted, and the store degraded."""
    limiter = RateLimiter("open", RateLimiterConfig(rate=1.0, burst=1, store=dead_store))
    assert all(limiter.try_acquire() for _ in range(20))
    assert dead_store.degraded
    assert dead_store.outages == 1
    assert limiter._rules.fallback_admitted == dead_store.fallback_permits == 20


def test_fail_closed_rejects_every_call(dead_store: RedisStore) -> None:
    """``store_fallback="closed"``: Redis unreachable, every call is rejected."""
    config = RateLimiterConfig(rate=2.0, burst=5, store=dead_store, store_fallback="closed")
    limiter = RateLimiter("closed", config)
    with pytest.raises(RateLimitedError) as raised:
        limiter.call_sync(int)
    assert raised.value.retry_after == 0.5
    assert not limiter.try_acquire()


def test_local_fallback_admits_the_replicas_share(dead_store: RedisStore) -> None:
    """``store_fallback="local"``: Redis unreachable, this replica takes rate / expected_replicas."""
    clock = FakeClock(100.0)
    config = RateLimiterConfig(
        rate=40.0, burst=8, store=dead_store, store_fallback="local", expected_replicas=4
    )
    limiter = RateLimiter("local", config, clock=clock)
    assert [limiter.try_acquire() for _ in range(3)] == [True, True, False]  # burst 8 // 4
    clock.advance(0.1)  # 10/s locally: one permit
    assert [limiter.try_acquire() for _ in range(2)] == [True, False]
    assert limiter.get_stats()["admitted"] == 3


def test_a_limiter_is_on_redis_again_within_rounds_of_its_return(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Redis stops, the limiter's calls take the fallback, Redis returns: they are on Redis again at once.

    The limiter asks Redis again from its first call after the store's thread reached it, and
    that thread tried again after a backoff doubling to 5 s: after six failed attempts it waited
    3.2 s, in which every call took the fallback while Redis was back. A call taking the
    fallback has the store try again each round (``flush_interval``, 0.1 s): 1.5 s is far from
    both figures.
    """
    store = RedisStore.from_url(redis_url, namespace="back", timeout=0.2, resync_interval=60.0)
    attempts = Attempts(store._client)
    store._client = attempts
    limiter = RateLimiter("back", RateLimiterConfig(rate=1000.0, burst=1000, store=store))
    rules = limiter._rules
    assert isinstance(rules, ClusterRules)

    def on_redis() -> bool:
        before = rules.fallback_admitted
        assert limiter.try_acquire()
        return rules.fallback_admitted == before  # the cluster answered, not the fallback

    try:
        assert on_redis()
        redis_server.stop()
        wait_for(lambda: not on_redis() and attempts.failed >= 6, 15.0, "six failed attempts")
        assert store.degraded
        redis_server.start()
        took = wait_for(on_redis, 10.0, "the limiter on Redis again")
        print(f"on Redis again {took:.3f} s after it returned")
        assert took < 1.5
        assert not store.degraded
        assert store.outages == 1
    finally:
        store.close()


def test_the_fallback_fields_are_validated() -> None:
    """A wrong fallback or replica count raises, naming the field."""
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.store_fallback"):
        RateLimiterConfig(rate=1.0, store_fallback="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.expected_replicas"):
        RateLimiterConfig(rate=1.0, expected_replicas=0)
    with pytest.raises(TypeError, match=r"RateLimiterConfig\.store"):
        RateLimiterConfig(rate=1.0, store="redis://localhost")  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_a_replica_count_whose_local_share_is_no_rate_is_refused_naming_it(algorithm: str) -> None:
    """``store_fallback="local"`` takes ``rate / expected_replicas``: a split no limiter can take is refused.

    The config was taken, and the limiter made of it raised a ``ValueError`` naming
    ``RateLimiterConfig.rate`` with a figure the caller never gave (``1e-11``).
    """
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="split")
    try:
        with pytest.raises(ValueError, match=r"RateLimiterConfig\.expected_replicas") as raised:
            RateLimiterConfig(
                rate=1e-6,
                burst=1,
                algorithm=algorithm,  # type: ignore[arg-type]
                store=store,
                store_fallback="local",
                expected_replicas=100_000,
            )
        assert "1e-06 / 100000" in str(raised.value)
        config = RateLimiterConfig(
            rate=1e-6, burst=1, store=store, store_fallback="local", expected_replicas=1000
        )
        assert RateLimiter("split", config).get_stats()["rate"] == 1e-6
    finally:
        store.close()


def test_a_fallback_setting_beside_no_store_or_another_fallback_is_refused() -> None:
    """``store_fallback`` acts only with a ``store``, ``expected_replicas`` only with ``"local"``: else ignored.

    ``RateLimiterConfig(rate=1.0, store_fallback="closed")`` was taken (a process-local limiter,
    never unreachable), as was ``expected_replicas=4`` beside ``store_fallback="open"`` (a store
    down admitted every call, never a quarter of the rate). Their defaults cannot be told from
    values left out: only another value is refused.
    """
    rule = (
        r"^RateLimiterConfig\.store_fallback must be 'open' \(its default\) unless store is set "
        r"\(without a store nothing is unreachable\), got 'closed'$"
    )
    with pytest.raises(ValueError, match=rule):
        RateLimiterConfig(rate=1.0, store_fallback="closed")
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.store_fallback must be 'open' \(its default\)"):
        RateLimiterConfig(rate=1.0, store_fallback="local", expected_replicas=4)
    replicas = (
        r"^RateLimiterConfig\.expected_replicas must be 1 \(its default\) unless store_fallback is 'local' "
        r"\(only the local share splits the rate\), got 4$"
    )
    with pytest.raises(ValueError, match=replicas):
        RateLimiterConfig(rate=1.0, expected_replicas=4)
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="unused")
    try:
        with pytest.raises(ValueError, match=replicas):
            RateLimiterConfig(rate=1.0, store=store, expected_replicas=4)
        with pytest.raises(ValueError, match=replicas):
            RateLimiterConfig(rate=1.0, store=store, store_fallback="closed", expected_replicas=4)
        local = RateLimiterConfig(rate=8.0, store=store, store_fallback="local", expected_replicas=4)
        with pytest.raises(ValueError, match=r"RateLimiterConfig\.store_fallback must be 'open'"):
            dataclasses.replace(local, store=None)
        # The defaults are taken anywhere; the local share is a limiter of this process alone.
        assert RateLimiterConfig(rate=1.0, store_fallback="open", expected_replicas=1) == RateLimiterConfig(
            rate=1.0
        )
        assert RateLimiterConfig(rate=1.0, store=store, store_fallback="closed").store_fallback == "closed"
        share = local.local_share()
        assert (share.rate, share.burst, share.store, share.store_fallback, share.expected_replicas) == (
            2.0,
            2,
            None,
            "open",
            1,
        )
    finally:
        store.close()


def test_each_key_of_a_keyed_limiter_has_its_own_cluster_budget(redis_url: str) -> None:
    """KeyedRateLimiter with a store: two replicas share a key's budget; another key has its own."""
    one, two = RedisStore.from_url(redis_url, namespace="rl"), RedisStore.from_url(redis_url, namespace="rl")
    try:
        config = {"rate": 0.5, "burst": 2}
        a = RateLimiter.per_key("tenants", RateLimiterConfig(**config, store=one))  # type: ignore[arg-type]
        b = RateLimiter.per_key("tenants", RateLimiterConfig(**config, store=two))  # type: ignore[arg-type]
        assert [a.for_key("x").try_acquire(), b.for_key("x").try_acquire(), a.for_key("x").try_acquire()] == [
            True,
            True,
            False,
        ]
        assert b.for_key("y").try_acquire()
    finally:
        one.close()
        two.close()


async def test_a_key_utf8_cannot_encode_shares_its_own_cluster_budget(redis_url: str) -> None:
    """A key with a lone surrogate (JSON's ``"\\udcff"``) takes the cluster's permits, from a thread and a loop.

    Its Redis key could not be encoded: every permit raised ``UnicodeEncodeError`` to the caller.
    """
    one, two = RedisStore.from_url(redis_url, namespace="rl"), RedisStore.from_url(redis_url, namespace="rl")
    try:
        config = {"rate": 0.5, "burst": 2}
        a = RateLimiter.per_key("tenants", RateLimiterConfig(**config, store=one))  # type: ignore[arg-type]
        b = RateLimiter.per_key("tenants", RateLimiterConfig(**config, store=two))  # type: ignore[arg-type]
        odd, other = json.loads('"t-\\udcff"'), json.loads('"t-\\udcfe"')
        assert a.for_key(odd).try_acquire()
        assert await b.for_key(odd).call(asyncio.sleep, 0, "ran") == "ran"
        assert not a.for_key(odd).try_acquire()  # the key's burst of 2 is spent, on both replicas
        assert b.for_key(other).try_acquire()  # another key, its own budget
        assert one.fallback_permits == two.fallback_permits == one.errors == two.errors == 0
    finally:
        one.close()
        two.close()


def test_a_sync_waiter_on_a_slow_link_takes_its_permit_no_earlier_than_the_server_made_it_due(
    redis_url: str, proxy: TcpFaultProxy
) -> None:
    """Replica B, 100 ms each way from Redis, waits for the permit due 1/3 s after replica A's: never less."""
    near = RedisStore.from_url(redis_url, namespace="rlslow", timeout=2.0, probe_lease_ttl=7.0)
    far = RedisStore.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", namespace="rlslow", timeout=2.0, probe_lease_ttl=7.0
    )
    try:
        config = {"rate": 3.0, "burst": 1, "max_wait": 1.0}
        a = RateLimiter("api", RateLimiterConfig(store=near, **config))
        b = RateLimiter("api", RateLimiterConfig(store=far, **config))
        assert RateLimiter("warm", RateLimiterConfig(store=far, **config)).try_acquire()  # connected
        proxy.set("delay", 0.1)
        a.call_sync(int)
        first = time.monotonic()
        b.call_sync(int)
        gap = time.monotonic() - first
        assert gap >= 0.3  # 1/3 s after A's permit, not a one-way latency (0.1 s) before it
        assert b.get_stats()["waited"] == 1
    finally:
        near.close()
        far.close()


class _Interrupted(KeyboardInterrupt):
    """What the test's signal handler raises in the main thread."""


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


def test_a_thread_interrupted_while_redis_answers_is_counted_as_cancelled(
    redis_url: str, proxy: TcpFaultProxy
) -> None:
    """A thread interrupted while it waits for Redis's answer counts in ``cancelled``, as a cancelled coroutine does."""
    assert redis_url
    main = threading.get_ident()
    assert main == threading.main_thread().ident
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", namespace="rlint", timeout=5.0, probe_lease_ttl=16.0
    )
    previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        limiter = RateLimiter("interrupted", RateLimiterConfig(rate=1.0, burst=5, store=store))
        assert limiter.call_sync(int) == 0  # connected
        proxy.set("drop")  # the next request gets no answer: the thread blocks until interrupted
        signaller = threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGUSR1))
        signaller.start()
        ran: list[int] = []
        with pytest.raises(_Interrupted):
            limiter.call_sync(ran.append, 1)
        signaller.join(5.0)
        assert ran == []
        stats = limiter.get_stats()
        assert (stats["admitted"], stats["cancelled"], stats["waiting"]) == (1, 1, 0)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        store.close()


async def test_a_reload_while_the_store_is_away_keeps_the_fallbacks_waiter_and_permits(
    dead_store: RedisStore,
) -> None:
    """Reloaded during an outage, the ``"local"`` fallback keeps its bucket: its waiter is counted once, no new burst."""

    async def zero() -> int:
        return 0

    config = RateLimiterConfig(rate=5.0, burst=1, max_wait=1.0, store=dead_store, store_fallback="local")
    limiter = RateLimiter("api", config)
    assert await limiter.call(zero) == 0  # the store is found away: the fallback's one permit
    assert dead_store.degraded
    waiter = asyncio.ensure_future(limiter.call(zero))
    await asyncio.sleep(0.05)
    assert limiter.get_stats()["waiting"] == 1
    assert limiter._reconfigure(dataclasses.replace(config, rate=4.0))
    assert await waiter == 0
    stats = limiter.get_stats()
    assert (stats["waiting"], stats["waited"], stats["admitted"], stats["cancelled"]) == (0, 1, 2, 0)
    assert not limiter.try_acquire()  # the reload handed out no fresh bucket


def test_a_waiter_of_the_local_fallback_freed_after_its_loop_closed_never_deadlocks(
    dead_store: RedisStore,
) -> None:
    """While Redis is away, the ``"local"`` fallback's waiter is a reservation of its own rules: the
    garbage collector that frees it (its loop closed), on a thread inside those rules' lock (a caller
    reserving a permit allocates there), leaves it for the lock's next holder instead of blocking."""
    config = RateLimiterConfig(  # the permit is due in 1000 s: nobody waits for it
        rate=0.001, burst=1, max_wait=5000.0, store=dead_store, store_fallback="local"
    )
    limiter = RateLimiter("api", config)
    assert limiter.try_acquire()  # the store is found away: the fallback's one permit
    assert dead_store.degraded
    local = limiter._rules._local  # type: ignore[attr-defined]

    async def fn() -> str:
        return "never"

    gc.disable()  # the collection below is the one that frees the task
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(limiter.call(fn))
        loop.run_until_complete(asyncio.sleep(0))
        assert limiter.get_stats()["waiting"] == 1
        freed = weakref.ref(task)
        loop.close()
        del task, loop

        collect_inside(local._lock, "the fallback's lock")  # as an allocation under the lock would
        assert freed() is None
    finally:
        gc.enable()
    stats = limiter.get_stats()
    assert (stats["waiting"], stats["cancelled"]) == (0, 1)


def test_a_cluster_waiter_dropped_inside_the_rules_lock_never_blocks_and_is_counted_later(
    redis_url: str,
) -> None:
    """A waiter for a cluster permit whose coroutine the garbage collector closes, on a thread that
    holds the cluster rules' lock (an allocation there), is given up without taking that lock: the
    lock's next holder counts it (``cancelled``; its place among ``max_waiting`` free again)."""
    store = RedisStore.from_url(redis_url, namespace="rl-drop")
    try:
        config = RateLimiterConfig(rate=0.001, burst=1, max_wait=5000.0, max_waiting=1, store=store)
        limiter = RateLimiter("api", config)
        rules = limiter._rules
        assert limiter.try_acquire()  # the cluster's one permit: the next is due in 1000 s
        dropped = rules.acquire(0.0, 5000.0)
        assert dropped is not None
        assert not isinstance(dropped, float)  # a reservation of the cluster's next permit
        assert limiter.get_stats()["waiting"] == 1

        def drop_inside_the_lock() -> None:
            with rules._lock:  # type: ignore[attr-defined]
                rules.drop(dropped, 0.0)  # what the collector closing the waiter's coroutine calls

        dropper = threading.Thread(target=drop_inside_the_lock, daemon=True)
        dropper.start()
        dropper.join(timeout=10)
        assert not dropper.is_alive(), "the dropped waiter blocked on the cluster rules' lock"
        again = rules.acquire(0.0, 5000.0)  # the one waiting place is free again
        assert again is not None
        assert not isinstance(again, float)
        stats = limiter.get_stats()
        assert (stats["waiting"], stats["cancelled"], stats["rejected"]) == (1, 1, 0)
    finally:
        store.close()


def test_the_fallbacks_waiters_are_the_limiters_and_share_its_max_waiting(proxy: TcpFaultProxy) -> None:
    """A caller waiting for a permit of the ``"local"`` fallback is one of the limiter's waiters:
    ``waiting`` says so (as ``get_stats`` does; a manager or a keyed limiter reads it to keep the
    limiter), and once Redis is back it holds one of the ``max_waiting`` places, so that the
    cluster reserves no wait beyond them. ``waiting`` read the cluster's waiters only: 0 while the
    fallback's caller waited, and a second caller then waited for a cluster permit."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", namespace="rl-fbwait", timeout=0.2)
    try:
        config = RateLimiterConfig(
            rate=0.001, burst=1, max_wait=5000.0, max_waiting=1, store=store, store_fallback="local"
        )
        limiter = RateLimiter("api", config)
        rules = limiter._rules
        assert limiter.try_acquire()  # the cluster's one permit: its next is due in 1000 s
        proxy.set("drop")
        assert limiter.try_acquire()  # Redis is away after the store's timeout: the fallback's one permit
        assert store.degraded
        waiter = rules.acquire(0.0, 5000.0)  # the fallback's next permit, due in 1000 s: a waiter
        assert waiter is not None
        assert not isinstance(waiter, float)
        assert limiter.waiting == limiter.get_stats()["waiting"] == 1
        proxy.set("pass")
        wait_for(lambda: not store.degraded, 10.0, "the store on Redis again")
        refused = rules.acquire(0.0, 5000.0)  # asks Redis: its one waiting place is taken
        assert isinstance(refused, float)
        assert limiter.waiting == limiter.get_stats()["waiting"] == 1
        limiter._rules.abandon(waiter, 0.0)
        assert limiter.waiting == limiter.get_stats()["waiting"] == 0
    finally:
        store.close()


_LATE = {"rate": 0.5, "burst": 1, "max_wait": 5.0}
"""The limiter of the replicas far from Redis: one permit every 2 s, waited for up to 5 s."""


def _far_replica_behind(
    proxy: TcpFaultProxy, redis_url: str
) -> tuple[RedisStore, RedisStore, RateLimiter, RateLimiter]:
    """Replica A next to Redis and replica B behind the proxy (connected; :func:`_far` makes it far)."""
    near = RedisStore.from_url(redis_url, namespace="rl-late", timeout=3.0, probe_lease_ttl=10.0)
    far = RedisStore.from_url(
        f"redis://127.0.0.1:{proxy.port}/0", namespace="rl-late", timeout=3.0, probe_lease_ttl=10.0
    )
    a = RateLimiter("api", RateLimiterConfig(store=near, **_LATE))  # type: ignore[arg-type]
    b = RateLimiter("api", RateLimiterConfig(store=far, **_LATE))  # type: ignore[arg-type]
    return near, far, a, b


def _far(proxy: TcpFaultProxy) -> None:
    """Replica B, connected, is 0.25 s each way from Redis from now on (a permit's round trip: 0.5 s)."""
    proxy.set("delay", 0.25)


def test_a_sync_caller_is_refused_a_cluster_permit_due_after_its_deadline_at_once(
    redis_url: str, proxy: TcpFaultProxy
) -> None:
    """B asks just after A took the cluster's permit, inside a deadline of 2 s: Redis, reached 0.25 s
    later, makes the next permit due in about 1.75 s (within the 2 s left when B asked), and its
    answer reaches B 0.5 s after the ask: the permit is due after B's deadline. B is refused at once
    (``RateLimitedError``), as a local limiter refuses a wait past the deadline; it slept into its
    deadline, then ran the call late, whose result its scope threw away as a timeout."""
    near, far, a, b = _far_replica_behind(proxy, redis_url)
    try:
        assert RateLimiter("warm", RateLimiterConfig(store=far, **_LATE)).try_acquire()  # type: ignore[arg-type]
        _far(proxy)
        assert a.try_acquire()
        ran: list[int] = []
        started = time.monotonic()
        with pytest.raises(RateLimitedError), SyncDeadline(SYSTEM_CLOCK, 2.0, "caller"):
            b.call_sync(ran.append, 1)
        took = time.monotonic() - started
        assert took < 1.5  # the round trip (0.5 s), not the deadline (2 s)
        assert ran == []
        stats = b.get_stats()
        assert (stats["rejected"], stats["waited"], stats["waiting"]) == (1, 0, 0)
    finally:
        near.close()
        far.close()


async def test_an_async_caller_is_refused_a_cluster_permit_due_after_its_deadline_at_once(
    redis_url: str, proxy: TcpFaultProxy
) -> None:
    """As from a thread: the coroutine is refused at once, not cancelled by its deadline after a wait."""
    near, far, a, b = _far_replica_behind(proxy, redis_url)
    try:
        ran: list[int] = []

        async def work() -> None:
            ran.append(1)

        warm = RateLimiter("warm", RateLimiterConfig(store=far, **_LATE))  # type: ignore[arg-type]
        await warm.call(work)  # the loop's client connected
        _far(proxy)
        ran.clear()
        assert a.try_acquire()
        started = time.monotonic()
        with pytest.raises(RateLimitedError):
            async with AsyncDeadline(SYSTEM_CLOCK, 2.0, "caller"):
                await b.call(work)
        assert time.monotonic() - started < 1.5
        assert ran == []
        stats = b.get_stats()
        assert (stats["rejected"], stats["cancelled"], stats["waiting"]) == (1, 0, 0)
    finally:
        near.close()
        far.close()


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_available_reads_the_cluster_budget_while_redis_is_up(redis_url: str, algorithm: str) -> None:
    """Two replicas take the cluster's burst of 10: ``available`` says what the cluster has left.

    It read the fallback bucket's figure (burst 10 // 2 replicas: 5 for ever, since the fallback
    takes nothing while Redis answers), whatever the cluster had left.
    """
    one, two = (
        RedisStore.from_url(redis_url, namespace="avail"),
        RedisStore.from_url(redis_url, namespace="avail"),
    )
    try:
        config = {"rate": 0.1, "burst": 10, "algorithm": algorithm, "store_fallback": "local"}
        a = RateLimiter("api", RateLimiterConfig(**config, expected_replicas=2, store=one))
        b = RateLimiter("api", RateLimiterConfig(**config, expected_replicas=2, store=two))
        assert a.available == pytest.approx(10.0, abs=0.5)  # nothing taken yet
        assert [a.try_acquire() for _ in range(3)] == [True] * 3
        assert a.available == pytest.approx(7.0, abs=0.5)
        assert [b.try_acquire() for _ in range(7)] == [True] * 7
        assert a.available == pytest.approx(0.0, abs=0.5)  # the other replica's permits too
        assert b.available == pytest.approx(0.0, abs=0.5)
        assert not one.degraded
    finally:
        one.close()
        two.close()


def test_available_is_the_fallbacks_while_redis_is_away(dead_store: RedisStore) -> None:
    """Redis unreachable: ``available`` is the local fallback bucket's (what the calls take from)."""
    clock = FakeClock(100.0)
    config = RateLimiterConfig(
        rate=40.0, burst=8, store=dead_store, store_fallback="local", expected_replicas=4
    )
    limiter = RateLimiter("local", config, clock=clock)
    assert limiter.try_acquire()  # finds Redis away: the fallback answers
    assert dead_store.degraded
    assert limiter.available == 1.0  # burst 8 // 4, one taken


class _PinnedTimeStore(RedisStore):
    """A store whose rate limiter scripts read ``now_ms`` as the server's time: the real scripts, on
    the real server, at instants a test chooses (a microsecond apart, which no real clock pins)."""

    now_ms = 0.0

    def _run_script(self, script: str, keys: Any, argv: Any, seconds: float) -> Any:
        assert scripts._NOW_US in script
        pinned = script.replace(scripts._NOW_US, f"\nlocal now = {self.now_ms!r}\n")
        return super()._run_script(pinned, keys, argv, seconds)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_try_acquire_takes_a_permit_due_within_the_servers_microsecond_now(
    redis_url: str, algorithm: Algorithm
) -> None:
    """A permit due half a microsecond after the ask: ``try_acquire`` takes it, and waits for nothing.

    The script reserves such a permit (the wait is within ``max_wait=0`` give or take the clock's
    microsecond) and answers its wait rounded up to 1 ms: ``try_acquire`` said ``False`` for the
    permit the cluster had taken for it, and the reservation it never waited for held a waiting
    place for ever (33 places in 3 s of ``try_acquire`` at 1000/s on a real clock: after 100 of
    them, the default ``max_waiting``, no caller of the limiter could wait any more).
    """
    store = _PinnedTimeStore.from_url(redis_url, namespace="pinned")
    assert isinstance(store, _PinnedTimeStore)
    try:
        config = RateLimiterConfig(rate=1000.0, burst=1, algorithm=algorithm, store=store)
        limiter = RateLimiter(f"pinned-{algorithm}", config)
        store.now_ms = 1_000_000.0
        assert limiter.try_acquire()
        store.now_ms = 1_000_000.5
        assert not limiter.try_acquire()  # due in half a millisecond: refused
        store.now_ms = 1_000_000.9995
        assert limiter.try_acquire()
        stats = limiter.get_stats()
        assert (stats["admitted"], stats["rejected"], stats["waited"], stats["waiting"]) == (2, 1, 0, 0)
        assert not store.degraded
    finally:
        store.close()
