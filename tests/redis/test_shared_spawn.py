"""A config naming a store crosses a ``spawn`` boundary: the worker gets a store of its own, a replica.

``multiprocessing`` (``spawn``, ``forkserver``) and ``ProcessPoolExecutor`` pickle the configs
they send to workers. A store holds a process's own threads, locks and connections: it pickles
as a new store with the same URL and settings, made in the worker (a replica of its own, as a
forked worker's store is), while a copy in the process shares it.
"""

from __future__ import annotations

import concurrent.futures
import copy
import multiprocessing
import pickle

import pytest
from shared_workers import first_round, trip_in_worker, wait_for

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    RateLimiterConfig,
    RedisStore,
)

_NEW_INTERPRETERS = [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("method", _NEW_INTERPRETERS)
def test_a_breaker_config_naming_a_store_crosses_a_process_pool_as_a_replica(
    redis_url: str, method: str
) -> None:
    """A worker given the config trips its breaker through a store of its own; this replica adopts the trip.

    The config could not be sent: pickling the store raised ``AttributeError: Can't pickle local
    object 'WeakKeyDictionary.__init__.<locals>.remove'``.
    """
    store = RedisStore.from_url(redis_url, namespace="spawned", timeout=0.5)
    try:
        config = CircuitBreakerConfig(failure_threshold=2, timeout=30.0, store=store)
        breaker = CircuitBreaker("payments", config)
        first_round(store)
        context = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
            namespace, state = pool.submit(trip_in_worker, config).result(timeout=120)
        assert (namespace, state) == ("spawned", "open")
        wait_for(lambda: breaker.state is CircuitState.OPEN, 5.0, "the worker's trip adopted here")
    finally:
        store.close()


def test_a_store_copied_is_itself_and_pickled_is_a_new_store_with_its_settings(redis_url: str) -> None:
    """``copy`` and ``deepcopy`` share the store (``deepcopy`` of a config raised ``TypeError``); a pickle
    makes a new one of the same URL and settings, shared by the configs of one pickle."""
    store = RedisStore.from_url(
        redis_url,
        namespace="copied",
        timeout=0.5,
        flush_interval=0.2,
        probe_lease_ttl=3.0,
        key_ttl=60.0,
        resync_interval=2.0,
        max_connections=7,
    )
    breaker_config = CircuitBreakerConfig(store=store)
    limiter_config = RateLimiterConfig(rate=5.0, store=store)
    try:
        assert copy.copy(store) is store
        assert copy.deepcopy(breaker_config).store is store
        again, limited = pickle.loads(pickle.dumps([breaker_config, limiter_config]))
        remade = again.store
        try:
            assert remade is not store
            assert limited.store is remade  # one pickle: one store
            settings = ("namespace", "timeout", "lease_ttl_ms", "key_ttl_ms", "max_connections", "channel")
            assert [getattr(remade, name) for name in settings] == [getattr(store, name) for name in settings]
            assert (remade._interval, remade._resync_every) == (0.2, 2.0)
            assert not remade.degraded
        finally:
            remade.close()
    finally:
        store.close()
