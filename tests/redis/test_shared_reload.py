"""A live reload that gives a policy's breaker or rate limiter another store (or none) takes it."""

from __future__ import annotations

import asyncio
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
    RateLimiter,
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


def _drained(stores: Stores, limits: RateLimiterConfig) -> tuple[ResilienceManager, KeyedPolicyView]:
    """A replica's policy "quota" whose shared token bucket has just been drained (all its burst taken)."""
    manager = ResilienceManager()
    config = ResilienceConfig(rate_limiter=dataclasses.replace(limits, store=stores("quota")))
    policy = manager.policy("quota", config).for_key("t")
    for _ in range(limits.burst):
        assert policy.execute_sync(int) == 0
    with pytest.raises(RateLimitedError):
        policy.execute_sync(int)
    return manager, policy


def _reload(manager: ResilienceManager, policy: KeyedPolicyView, **limits: float) -> None:
    limiter = policy.rate_limiter
    assert limiter is not None
    config = dataclasses.replace(limiter.config, **limits)  # type: ignore[arg-type]
    manager.reconfigure("quota", ResilienceConfig(rate_limiter=config))
    assert policy.rate_limiter is limiter  # retuned, not replaced


def _admitted(policy: KeyedPolicyView, tries: int = 20) -> int:
    admitted = 0
    for _ in range(tries):
        try:
            policy.execute_sync(int)
        except RateLimitedError:
            continue
        admitted += 1
    return admitted


def test_a_reload_to_a_larger_burst_hands_the_shared_bucket_no_free_permits(stores: Stores) -> None:
    """A shared bucket of 5 (one permit every 100 s), drained, reloaded to ``burst=10``: still empty,
    as a local bucket is (the permits used are kept). Its key kept the time the bucket is full again,
    which the larger burst read as 5 free permits."""
    manager, policy = _drained(stores, RateLimiterConfig(rate=0.01, burst=5))
    _reload(manager, policy, burst=10)
    assert _admitted(policy) == 0


def test_a_reload_to_a_lower_rate_hands_the_shared_bucket_no_free_permits(stores: Stores) -> None:
    """A shared bucket of 5 at one permit every 10 s, drained, reloaded to one every 10 000 s: still
    empty. Its key's 50 s until full read, at the new rate, as a bucket short of 0.005 permits: 4 free."""
    manager, policy = _drained(stores, RateLimiterConfig(rate=0.1, burst=5))
    _reload(manager, policy, rate=0.0001)
    assert _admitted(policy) == 0


def _available(policy: KeyedPolicyView) -> float:
    limiter = policy.rate_limiter
    assert limiter is not None
    return limiter.available


def test_a_reload_to_a_higher_rate_refills_the_shared_bucket_at_the_new_rate(stores: Stores) -> None:
    """A shared bucket of 2 at one permit every 1000 s, drained, reloaded to 1000 a second: it refills at
    the new rate from the reload, as a local bucket does (full 2 ms later: both permits back at the next
    calls, however slow they are). Carried over as of its next call, the 0.1 s between the reload and
    that call refilled at the old rate (0.0001 permit): empty, then one permit a millisecond. Its key's
    2000 s until full kept it empty for that long, whatever the new rate."""
    manager, policy = _drained(stores, RateLimiterConfig(rate=0.001, burst=2))
    _reload(manager, policy, rate=1000.0)
    time.sleep(0.1)
    assert _available(policy) == 2.0  # read, not taken: the bucket is carried over by the next permit
    assert _admitted(policy, tries=2) == 2


def test_a_replica_carries_a_shared_bucket_over_from_its_reload_once(stores: Stores) -> None:
    """The reload's moment serves this replica's next permit only: once another replica still on the old
    limits took the bucket back (a rolling reload), this one carries it over as of its own next call,
    with the tokens the other left (less than one). Carried over as of the reload again (0.15 s
    before), it would be full at 1000 a second."""
    manager, policy = _drained(stores, RateLimiterConfig(rate=0.001, burst=2))
    old = RateLimiterConfig(rate=0.001, burst=2, store=stores("quota"))
    peer = ResilienceManager().policy("quota", ResilienceConfig(rate_limiter=old)).for_key("t")
    _reload(manager, policy, rate=1000.0)
    time.sleep(0.05)
    assert _admitted(policy, tries=2) == 2  # as of the reload: full
    _admitted(peer, tries=3)  # the old limits: it takes what the bucket holds (not 2: 1000 a second)
    held = _available(peer)
    assert held < 1.0
    time.sleep(0.1)
    assert _available(policy) == pytest.approx(held, abs=0.01)  # as of this call: the old rate's 0.0001


async def test_an_async_permit_carries_the_shared_bucket_over_from_the_reload(stores: Stores) -> None:
    """A coroutine's first permit after the reload carries the bucket over as of the reload, as a thread's does."""
    limiter = RateLimiter("async", RateLimiterConfig(rate=0.001, burst=2, store=stores("quota")))

    async def zero() -> int:
        return 0

    assert [await limiter.call(zero) for _ in range(2)] == [0, 0]
    with pytest.raises(RateLimitedError):
        await limiter.call(zero)
    assert limiter._reconfigure(dataclasses.replace(limiter.config, rate=1000.0))
    await asyncio.sleep(0.1)
    assert [await limiter.call(zero) for _ in range(2)] == [0, 0]


def test_a_reload_keeps_when_the_shared_buckets_waiters_get_their_permits(stores: Stores) -> None:
    """The permit a waiter reserved keeps its time across a reload to a lower rate, and the next is due
    one new interval after it, as in a local bucket: a newcomer is refused for about 1000 s, never let
    wait 2 s for a permit the new rate does not have."""
    store = stores("quota")
    limiter = RateLimiter("waits", RateLimiterConfig(rate=1.0, burst=1, max_wait=10.0, store=store))
    assert limiter.try_acquire()
    reserved = limiter._rules.acquire(0.0, 10.0)  # the next permit, due in about 1 s
    assert reserved is not None
    assert not isinstance(reserved, float)
    assert limiter._reconfigure(dataclasses.replace(limiter.config, rate=0.001))
    with pytest.raises(RateLimitedError) as raised:
        limiter.call_sync(int)
    assert 990.0 < raised.value.retry_after <= 1001.0


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
def test_a_reload_to_a_longer_window_forgets_the_admissions_the_old_one_had_left(
    stores: Stores, shared: bool
) -> None:
    """A log of 2 in 0.1 s: one admission, 0.15 s, another; reloaded to a window of 100 s, one permit is
    free, as in a local log, which forgets at its reload what its window had left. The shared log
    judged its first admission over the new window: no permit for 100 s."""
    config = RateLimiterConfig(
        rate=20.0, burst=2, algorithm="sliding_window", store=stores("quota") if shared else None
    )
    limiter = RateLimiter("log", config)
    assert limiter.try_acquire()
    time.sleep(0.15)  # the admission left the window
    assert limiter.try_acquire()
    assert limiter._reconfigure(dataclasses.replace(config, rate=0.02))
    assert limiter.available >= 1.0  # 2 on a machine slow enough to leave the second out too
    assert limiter.try_acquire()
