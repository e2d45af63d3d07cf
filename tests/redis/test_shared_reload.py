"""A live reload that gives a policy's breaker or rate limiter another store (or none) takes it."""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
from shared_workers import wait_for

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    KeyedPolicyView,
    RateLimitedError,
    RateLimiterConfig,
    RedisStore,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.patterns.circuit_breaker.state import settings_for

BREAKER = CircuitBreakerConfig(failure_threshold=2, timeout=30.0)

Stores = Callable[[str], RedisStore]


@pytest.fixture
def stores(redis_url: str) -> Iterator[Stores]:
    """Make stores (each a replica's) on the session's server, all closed afterwards."""
    made: list[RedisStore] = []

    def make(namespace: str) -> RedisStore:
        made.append(RedisStore.from_url(redis_url, namespace=namespace))
        return made[-1]

    yield make
    for store in made:
        store.close()


def _replica(store: RedisStore | None, breaker: CircuitBreakerConfig = BREAKER) -> KeyedPolicyView:
    """A replica's policy "payments" whose breaker shares ``store`` (built by a first call)."""
    config = ResilienceConfig(circuit_breaker=dataclasses.replace(breaker, store=store))
    view = ResilienceManager().policy("payments", config).for_key("t")
    assert view.execute_sync(int) == 0
    return view


def _trip(policy: KeyedPolicyView) -> None:
    def boom() -> None:
        raise RuntimeError("down")

    for _ in range(BREAKER.failure_threshold):
        with pytest.raises(RuntimeError):
            policy.execute_sync(boom)


def _rejects(policy: KeyedPolicyView) -> bool:
    try:
        policy.execute_sync(int)
    except CircuitOpenError:
        return True
    return False


def _linked(store: RedisStore, policy: KeyedPolicyView) -> bool:
    return any(link.breaker is policy.circuit_breaker for link in store._live())


class _Cluster(NamedTuple):
    manager: ResilienceManager
    policy: KeyedPolicyView
    one: RedisStore
    two: RedisStore
    old_peer: KeyedPolicyView
    new_peer: KeyedPolicyView


def _cluster(stores: Stores) -> _Cluster:
    """A replica's policy on store ``one``, its store ``two`` for later, a peer on each namespace (resynced)."""
    one, two = stores("one"), stores("two")
    manager = ResilienceManager()
    config = ResilienceConfig(circuit_breaker=dataclasses.replace(BREAKER, store=one))
    policy = manager.policy("payments", config).for_key("t")
    assert policy.execute_sync(int) == 0
    old_peer, new_peer = _replica(stores("one")), _replica(stores("two"))
    time.sleep(0.3)  # every replica's first resync
    return _Cluster(manager, policy, one, two, old_peer, new_peer)


def test_a_reload_moves_a_breaker_to_another_store_then_to_none(stores: Stores) -> None:
    """Reloaded onto store two, the breaker follows cluster two, not one; reloaded with no store, neither."""
    manager, policy, one, two, old_peer, new_peer = _cluster(stores)
    assert _linked(one, policy)
    manager.reconfigure("payments", ResilienceConfig(circuit_breaker=dataclasses.replace(BREAKER, store=two)))
    assert not _linked(one, policy)
    assert _linked(two, policy)
    witness = _replica(stores("one"))  # a replica still on cluster one
    _trip(old_peer)
    wait_for(lambda: _rejects(witness), 2.0, "cluster one OPEN")
    assert not _rejects(policy)  # cluster one no longer reaches it
    _trip(new_peer)
    wait_for(lambda: _rejects(policy), 2.0, "the breaker OPEN with cluster two")
    new_peer.circuit_breaker.reset()  # type: ignore[union-attr]
    wait_for(lambda: not _rejects(policy), 2.0, "the breaker CLOSED with cluster two")

    manager.reconfigure("payments", ResilienceConfig(circuit_breaker=BREAKER))
    assert not _linked(two, policy)
    assert policy.circuit_breaker._core._shared is None  # type: ignore[union-attr]
    witness = _replica(stores("two"))  # a replica still on cluster two
    new_peer.circuit_breaker.force_open(30.0)  # type: ignore[union-attr]
    wait_for(lambda: _rejects(witness), 2.0, "cluster two OPEN")
    assert not _rejects(policy)  # local now
    _trip(policy)
    assert _rejects(policy)  # its own failure_threshold
    assert policy.circuit_breaker._core.settings.half_open_max_calls == BREAKER.half_open_max_calls  # type: ignore[union-attr]


def test_a_trip_just_before_a_reload_reaches_both_clusters(stores: Stores) -> None:
    """Nothing is lost: a trip still queued for the old store is published there, and the new store's cluster learns it."""
    manager, policy, one, two, old_peer, new_peer = _cluster(stores)
    link = policy.circuit_breaker._core._shared  # type: ignore[union-attr]
    with link._lock:  # type: ignore[union-attr]  # holds the old store's thread: the trip waits across the reload
        _trip(policy)
        manager.reconfigure(
            "payments", ResilienceConfig(circuit_breaker=dataclasses.replace(BREAKER, store=two))
        )
        time.sleep(0.2)  # the old store's thread is at the trip (or still before it)
        assert not _linked(one, policy)
    assert policy.circuit_breaker.state is CircuitState.OPEN  # type: ignore[union-attr]
    wait_for(lambda: _rejects(old_peer), 2.0, "the old cluster OPEN")
    wait_for(lambda: _rejects(new_peer), 2.0, "the new cluster OPEN")
    assert policy.circuit_breaker.stats.times_opened == 1  # type: ignore[union-attr]


def _limited(store: RedisStore | None) -> ResilienceConfig:
    return ResilienceConfig(rate_limiter=RateLimiterConfig(rate=0.01, burst=2, store=store))


def test_a_reload_gives_a_rate_limiter_its_new_store_or_none(stores: Stores) -> None:
    """Local -> store one -> store two -> local: each reload takes the new budget; no count is lost."""
    one, two = stores("one"), stores("two")
    manager = ResilienceManager()
    handle = manager.policy("search", _limited(None))
    policy = handle.for_key("t")
    assert [policy.execute_sync(int) for _ in range(2)] == [0, 0]
    peer = ResilienceManager().policy("search", _limited(stores("one"))).for_key("t")
    assert peer.execute_sync(int) == 0  # cluster one: one of its two permits spent
    manager.reconfigure("search", _limited(one))
    assert policy.rate_limiter._rules._store is one  # type: ignore[union-attr]
    assert policy.execute_sync(int) == 0
    with pytest.raises(RateLimitedError):
        policy.execute_sync(int)  # cluster one's budget is spent (by both replicas)
    manager.reconfigure("search", _limited(two))
    assert policy.rate_limiter._rules._store is two  # type: ignore[union-attr]
    assert [policy.execute_sync(int) for _ in range(2)] == [0, 0]
    manager.reconfigure("search", _limited(None))
    limiter = policy.rate_limiter
    assert limiter is not None
    assert limiter.config.store is None
    assert not hasattr(limiter._rules, "_store")
    assert [policy.execute_sync(int) for _ in range(2)] == [0, 0]  # a local bucket of its own
    ops = two.ops
    with pytest.raises(RateLimitedError):
        policy.execute_sync(int)
    assert two.ops == ops  # not asked any more
    stats = handle.get_stats()["rate_limiter"]
    assert (stats["admitted"], stats["rejected"]) == (7, 2)  # nothing counted was lost


def test_a_breaker_configuration_naming_a_store_is_not_remembered(redis_url: str) -> None:
    """The breakers' shared settings memory keeps no store alive once its breakers and owner are gone."""
    store = RedisStore.from_url(redis_url, namespace="forget")
    config = dataclasses.replace(BREAKER, store=store)
    assert settings_for(config).failure_threshold == BREAKER.failure_threshold
    gone = weakref.ref(store)
    store.close()
    del config, store
    gc.collect()
    assert gone() is None
