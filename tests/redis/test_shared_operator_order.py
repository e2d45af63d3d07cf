"""Operators acting on two replicas of a shared breaker, one of them cut off from Redis meanwhile."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
import redis
from redis_support import RedisServer
from shared_workers import wait_for
from tcp_proxy import TcpFaultProxy

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitState, RedisStore
from otel_resilience.engine.registry import namesakes_expected


@pytest.fixture
def made() -> Iterator[list[RedisStore]]:
    stores: list[RedisStore] = []
    yield stores
    for store in stores:
        store.close()


def test_a_reset_queued_while_its_replica_was_cut_off_does_not_undo_a_later_force_open(
    redis_server: RedisServer, redis_url: str, proxy: TcpFaultProxy, made: list[RedisStore]
) -> None:
    """The operators' last word applies to all: the earlier reset, sent late, does not close the cluster."""
    cut = RedisStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", namespace="ops", timeout=0.25)
    direct = RedisStore.from_url(redis_url, namespace="ops", timeout=0.25)
    made += [cut, direct]
    config = CircuitBreakerConfig(failure_threshold=3, timeout=60.0)
    with namesakes_expected():
        late = CircuitBreaker("dep", dataclasses.replace(config, store=cut))
        last = CircuitBreaker("dep", dataclasses.replace(config, store=direct))
    assert cut.wait_synced(10.0)
    assert direct.wait_synced(10.0)

    last.force_open()
    wait_for(lambda: late.state is CircuitState.OPEN, 10.0, "force_open heard")
    proxy.set("drop")
    late.reset()  # an operator's reset on the replica cut off from Redis: queued
    time.sleep(0.5)
    server = redis.Redis.from_url(redis_url)
    key = "ops:cb:dep:state"
    last.reset()  # then other operators' reset and force_open, on a replica that reaches Redis
    wait_for(lambda: server.hget(key, "state") == b"closed", 10.0, "reset published")
    last.force_open()
    wait_for(lambda: server.hget(key, "state") == b"open", 10.0, "force_open published")
    changes: list[str] = []
    last.on_state_change(lambda change: changes.append(change.new))
    proxy.set("pass")
    wait_for(lambda: late.state is CircuitState.OPEN or last.state is CircuitState.CLOSED, 15.0, "rejoined")
    time.sleep(1.0)  # a few rounds: the queued reset sent, each replica's reads made

    assert last.state is CircuitState.OPEN
    assert late.state is CircuitState.OPEN
    # Never closed meanwhile: the late reset, published from the period it was made in, fails
    # (it was published from the period its replica took on rejoining, and closed the cluster
    # until that replica, left OPEN, published its OPEN again).
    assert changes == []
