"""A shared breaker in a process forked after the store started (a pre-fork worker): a replica of its own.

The child (``os.fork``, as gunicorn ``--preload`` makes its workers) trips its copy of the
breaker; the trip must reach the cluster, and the parent, another replica, must adopt it. What
the parent's own threads were doing at the fork (a connection still being made) is not the child's.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest
from forking_support import run_in_child
from redis_support import RedisServer
from shared_workers import first_round, wait_for
from tcp_proxy import TcpFaultProxy

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    RateLimiter,
    RateLimiterConfig,
    RedisStore,
)
from otel_resilience.store import deadlines as deadlines_module
from otel_resilience.store.breaker import SharedBreaker

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


def _trip(breaker: CircuitBreaker) -> None:
    def boom() -> None:
        raise RuntimeError("down")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            breaker.call_sync(boom)


def test_a_trip_in_a_forked_child_reaches_the_other_replicas(redis_url: str) -> None:
    """The child publishes its trip (its threads run again) as another replica (the parent adopts it)."""
    store = RedisStore.from_url(redis_url, namespace="forked")
    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=3, timeout=30.0, store=store))
        first_round(store)
        parent_id = store._id

        def child() -> None:
            assert store._id != parent_id
            assert all(thread.is_alive() for thread in store._threads)
            ops = store.ops
            _trip(breaker)
            wait_for(lambda: not store._pending and store.ops > ops, 10.0, "the child's trip published")
            store.close()

        assert run_in_child(child) == 0
        wait_for(lambda: breaker.peek_state() is CircuitState.OPEN, 10.0, "the parent adopting the trip")
        assert store._id == parent_id
    finally:
        store.close()


def test_a_forked_child_does_not_count_its_parents_failures_again(redis_url: str) -> None:
    """The parent's failures before the fork are the parent's: counted once in the cluster, not once per worker.

    The child inherited its parent's failure streak and reported it as its own: two failures
    before the fork (threshold 4) made 2 + 2 in the cluster, and the child opened the breaker,
    and every replica with it, without one failure more.
    """
    store = RedisStore.from_url(redis_url, namespace="forked-counts")
    try:
        config = CircuitBreakerConfig(failure_threshold=4, timeout=30.0, store=store)
        breaker = CircuitBreaker("db", config)
        first_round(store)
        for _ in range(2):
            with pytest.raises(RuntimeError):
                breaker.call_sync(_boom)
        link = store._links[0]
        wait_for(lambda: link._last_report == (0, 2, 0), 5.0, "the parent's failures reported")

        def child() -> None:
            child_link = store._links[0]
            assert breaker.get_stats()["failure_count"] == 0  # the parent's streak stays the parent's
            wait_for(lambda: child_link._peers == (0, 2, 0), 10.0, "the parent's failures read as a peer's")
            with pytest.raises(RuntimeError):
                breaker.call_sync(_boom)  # 2 + 1: under the threshold
            wait_for(lambda: child_link._last_report == (0, 1, 0), 10.0, "the child's failure reported")
            assert breaker.peek_state() is CircuitState.CLOSED
            store.close()

        assert run_in_child(child) == 0
        assert breaker.peek_state() is CircuitState.CLOSED
    finally:
        store.close()


def _boom() -> None:
    raise RuntimeError("down")


def test_a_forked_child_runs_no_probe_on_its_parents_lease(proxy: TcpFaultProxy) -> None:
    """The parent's probe lease is the parent's: the child probes only once it holds one of its own.

    The child forgot the leases it was born with (``leases = 0``) but kept the probe limit they
    had set on its breaker: until its store's first round read the cluster's state again (a
    round trip, longer on a slow link), its calls probed on a lease the parent held, and the
    parent probed on it too: two probes with ``half_open_max_calls=1``.
    """
    url = f"redis://127.0.0.1:{proxy.port}/0"
    store = RedisStore.from_url(
        url, namespace="forked-lease", timeout=5.0, flush_interval=0.05, probe_lease_ttl=16.0
    )
    try:
        config = CircuitBreakerConfig(failure_threshold=1, timeout=0.05, success_threshold=1, store=store)
        breaker = CircuitBreaker("db", config)
        first_round(store)
        with pytest.raises(RuntimeError):
            breaker.call_sync(_boom)
        link = breaker._core._shared
        assert isinstance(link, SharedBreaker)
        wait_for(lambda: link.epoch > 0 and breaker._core.retry_after() == 0.0, 5.0, "the OPEN period over")
        assert not _admits(breaker)  # HALF_OPEN, no lease yet: rejected, and wanting one
        wait_for(lambda: link.leases == 1, 5.0, "the lease taken for the rejected call")
        proxy.set("delay", 2.0)  # the child's store answers nothing for a while: no round of it ends

        def child() -> None:
            assert link.leases == 0
            assert breaker._core.settings.half_open_max_calls == 0  # the lease is the parent's
            assert not _admits(breaker)
            store.close()

        assert run_in_child(child) == 0
        proxy.set("pass")
        assert _admits(breaker)  # the parent's probe, on its lease
    finally:
        store.close()


def _admits(breaker: CircuitBreaker) -> bool:
    """Whether a call through ``breaker`` ran (``False``: it was rejected)."""
    try:
        breaker.call_sync(int)
    except CircuitOpenError:
        return False
    return True


def test_a_child_forked_while_the_resolver_hangs_connects_once_its_own_lookups_answer(
    redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections the parent abandoned in a hung lookup are the parent's: the child connects freely.

    A connection whose caller gave up is counted until its thread ends, and past a few such
    (``MAX_ABANDONED_CONNECTIONS``) a new connection fails at once. A child forked meanwhile (a
    pre-fork server's master starting while its DNS server hangs) kept the parent's count but
    not its threads, which alone count it down: with the cap reached at the fork, every
    connection of the child failed at once for the rest of its life, its store degraded forever
    although its own lookups answered.
    """
    assert redis_url
    resolved = socket.getaddrinfo
    answer = threading.Event()
    parent = os.getpid()

    def hanging_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "redis.forked-resolver.test":
            if os.getpid() == parent:  # the parent's lookups hang; the child's answer at once
                answer.wait(30.0)
            host = "127.0.0.1"
        return resolved(host, *args, **kwargs)

    def connecting() -> int:
        return sum(thread.name == "otel_resilience store connection" for thread in threading.enumerate())

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)
    answer.set()
    url = f"redis://redis.forked-resolver.test:{redis_server.port}/0"
    store = RedisStore.from_url(url, namespace="forked-resolver", timeout=0.05)
    try:
        limiter = RateLimiter("forked-capped", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        assert limiter.try_acquire()
        answer.clear()
        store._client.connection_pool.disconnect()
        cap = deadlines_module.MAX_ABANDONED_CONNECTIONS
        wait_for(
            lambda: limiter.try_acquire() and deadlines_module._ABANDONED.count >= cap,
            10.0,
            "the parent's abandoned connections at the cap",
        )

        def child() -> None:
            wait_for(
                lambda: limiter.try_acquire() and not store.degraded, 10.0, "the child's store connected"
            )
            store.close()

        assert run_in_child(child, timeout=30.0) == 0
    finally:
        answer.set()
    try:
        wait_for(lambda: connecting() == 0, 10.0, "the parent's connecting threads ended")
        assert deadlines_module._ABANDONED.count == 0
    finally:
        store.close()
