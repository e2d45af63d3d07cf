"""A shared breaker in a process forked after the store started (a pre-fork worker): a replica of its own.

The child (``os.fork``, as gunicorn ``--preload`` makes its workers) trips its copy of the
breaker; the trip must reach the cluster, and the parent, another replica, must adopt it.
"""

from __future__ import annotations

import os

import pytest
from forking_support import run_in_child
from shared_workers import wait_for

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitState, RedisStore

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
        wait_for(lambda: store.ops > 0, 5.0, "the store's first resync")
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
        wait_for(lambda: store.ops > 0, 5.0, "the store's first resync")
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
