"""Forks made while every background part of the library is busy: each child works, none hangs.

A pre-fork server forks its workers at moments it does not choose: a shared store's threads may
be reporting to Redis, a configuration watch applying a file that keeps changing, a metrics
reader's thread taking statistics. The tests of ``test_fork_children`` hold each lock on purpose;
this one forks again and again into the real races (5 forks, 50 with ``--run-slow``), and every
child must make new keys, call, read statistics, reach Redis and follow the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from forking_support import run_in_child
from redis_support import RedisServer
from support import until_sync

from otel_resilience import (
    CircuitBreakerConfig,
    RateLimiterConfig,
    RedisStore,
    ResilienceConfig,
    ResilienceManager,
    subscribe,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

POLICIES = 3


def _file(threshold: int) -> str:
    """A configuration of :data:`POLICIES` policies, each with a breaker, a bulkhead and a limiter."""
    policy = (
        f"    circuit_breaker: {{failure_threshold: {threshold}}}\n"
        f"    bulkhead: {{max_concurrent: {threshold}, max_waiting: 5}}\n"
        f"    rate_limiter: {{rate: {threshold}00/s, burst: 10}}\n"
    )
    return "policies:\n" + "".join(f"  policy{n}:\n{policy}" for n in range(POLICIES))


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` at once (a rename), as a ConfigMap or an editor saves it."""
    fresh = path.with_suffix(f".{os.getpid()}.tmp")
    fresh.write_text(text)
    fresh.replace(path)


def _threshold(config: ResilienceConfig) -> int | None:
    """The ``failure_threshold`` of ``config``'s breaker."""
    return None if config.circuit_breaker is None else config.circuit_breaker.failure_threshold


def _fail() -> None:
    raise ConnectionError("down")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A redis-server of this test's own."""
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


def test_children_forked_while_the_store_the_watch_and_a_reader_are_busy_work(
    tmp_path: Path, redis_url: str, slow: bool
) -> None:
    """Every child makes keys, calls, reads statistics, reaches Redis and applies the file as it changes."""
    path = tmp_path / "resilience.yaml"
    path.write_text(_file(2))
    store = RedisStore.from_url(redis_url, namespace="busy", timeout=0.5, flush_interval=0.005)
    alerts: list[object] = []
    unsubscribe = subscribe(alerts.append)
    manager = ResilienceManager()
    watch = manager.watch(path, interval=0.002)
    policies = [manager.policy(f"policy{n}") for n in range(POLICIES)]
    shared = manager.policy(
        "shared", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, store=store))
    )
    limited = manager.policy(
        "limited", ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1e5, store=store))
    )
    for key in range(50):
        for policy in policies:
            policy.for_key(key).execute_sync(lambda: 1)
        with pytest.raises(ConnectionError):
            shared.for_key(key).execute_sync(_fail)  # a trip per key: the store's thread publishes
    assert store.wait_synced(30)
    stop = threading.Event()

    def rewrite() -> None:
        threshold = 2
        while not stop.is_set():
            threshold = 5 - threshold  # 2, 3, 2, ...: the watch applies each version two looks find
            _replace(path, _file(threshold))
            stop.wait(0.003)

    def read() -> None:
        while not stop.is_set():
            manager.get_resilience_statistics()
            for policy in policies:
                policy.get_stats()

    busy = [threading.Thread(target=rewrite), threading.Thread(target=read)]
    for thread in busy:
        thread.start()

    def child() -> None:
        for policy in policies:
            assert policy.for_key("made-in-child").execute_sync(lambda: 1) == 1
        with pytest.raises(ConnectionError):
            # A key of this child's own: the trip of an earlier child's key is in the store, and
            # a replica that reads it first rightly rejects (the breaker is shared).
            shared.for_key(f"made-in-child-{os.getpid()}").execute_sync(_fail)
        assert limited.execute_sync(lambda: 2) == 2
        assert manager.get_resilience_statistics()["named_policies"]
        assert store.wait_synced(30)
        applied = watch.applied  # the parent's writer goes on changing the file: the child follows
        until_sync(lambda: watch.applied >= applied + 2, 30.0)
        assert _threshold(policies[0].config) in {2, 3}
        store.close()

    try:
        until_sync(lambda: watch.applied >= 3, 30.0)  # the watch is busy applying
        for _ in range(50 if slow else 5):
            assert run_in_child(child, timeout=60.0) == 0
    finally:
        stop.set()
        for thread in busy:
            thread.join()
        watch.stop()
        unsubscribe()
        store.close()
    assert alerts  # the parent's trips alerted
