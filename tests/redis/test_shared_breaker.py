"""Shared breaker state in one process: replicas are stores of their own on one real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis_support import Attempts, RedisServer, free_port
from shared_workers import first_round, wait_for
from tcp_proxy import TcpFaultProxy

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    RateLimiter,
    RateLimiterConfig,
    RedisStore,
    ResilienceConfig,
    ResilienceManager,
    TimeWindow,
)
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, StateChanged, key_attribute
from otel_resilience.engine.registry import namesakes_expected
from otel_resilience.engine.shared import shared_key
from otel_resilience.patterns.circuit_breaker import shared
from otel_resilience.store import scripts
from otel_resilience.store.breaker import SharedBreaker
from otel_resilience.telemetry import instrumented
from otel_resilience.telemetry import semconv as sc

Replica = Callable[..., CircuitBreaker]


@pytest.fixture
def replicas(redis_url: str) -> Iterator[Replica]:
    """Make breakers, each with a store of its own (a replica of the service), all closed afterwards."""
    stores: list[RedisStore] = []

    def make(
        name: str = "db", namespace: str = "svc", resync_interval: float = 5.0, **options: object
    ) -> CircuitBreaker:
        store = RedisStore.from_url(redis_url, namespace=namespace, resync_interval=resync_interval)
        stores.append(store)
        settings: dict[str, object] = {"failure_threshold": 3, "timeout": 30.0, **options}
        if settings.get("sliding_window") is not None:  # a streak's setting: refused beside a window
            del settings["failure_threshold"]
        with namesakes_expected():
            breaker = CircuitBreaker(name, CircuitBreakerConfig(store=store, **settings))  # type: ignore[arg-type]
        first_round(store)
        return breaker

    yield make
    for store in stores:
        store.close()


def _fail(breaker: CircuitBreaker) -> None:
    def boom() -> None:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        breaker.call_sync(boom)


def _opened(*breakers: CircuitBreaker) -> Callable[[], bool]:
    return lambda: all(b.state is CircuitState.OPEN for b in breakers)


def _reported(*breakers: CircuitBreaker) -> Callable[[], bool]:
    """Whether each breaker's counts, as they are now, reached the store (its latest report)."""

    def reported(breaker: CircuitBreaker) -> bool:
        link = breaker._core._shared
        assert isinstance(link, SharedBreaker)
        return link._last_report == shared.local_counts(breaker._core)

    return lambda: all(reported(b) for b in breakers)


def _open_and_close(a: CircuitBreaker, b: CircuitBreaker) -> None:
    """Open ``a`` and close it again, ``b`` following each time: two periods of the cluster."""
    a.force_open()
    wait_for(_opened(a, b), 2.0, "both OPEN")
    a.reset()
    wait_for(lambda: b.state is CircuitState.CLOSED, 2.0, "both CLOSED")


def _lose_state(redis_url: str, namespace: str) -> None:
    """Delete every key of ``namespace``: what a restart of the server without persistence leaves."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*client.keys(f"{namespace}:*"))
    finally:
        client.close()


def test_failures_on_two_replicas_open_both_at_the_cluster_threshold(replicas: Replica) -> None:
    """Two failures on one replica and one on the other reach failure_threshold=3: both open."""
    a, b = replicas(), replicas()
    changes: list[StateChanged] = []
    a.on_state_change(changes.append)
    _fail(a)
    _fail(a)
    wait_for(_reported(a), 2.0, "a's failures in the store")
    _fail(b)
    wait_for(_opened(a, b), 2.0, "both OPEN")
    assert a.stats.times_opened == b.stats.times_opened == 1
    # a took b's trip, reported with b's reason
    assert [(c.old, c.new, c.reason) for c in changes] == [("closed", "open", "failure_threshold")]


def test_every_replica_reports_a_trip_of_the_cluster_on_its_transitions_counter(replicas: Replica) -> None:
    """One trip of a shared breaker counts one closed -> open transition on each replica that takes it.

    The flapping rule (``alerts/rules.yml``) relies on it: it counts a shared breaker's trips as the
    most any instance reported, not their sum over the instances.
    """
    reader = InMemoryMetricReader()
    with instrumented(meter_provider=MeterProvider(metric_readers=[reader])):
        a, b, c = replicas(), replicas(), replicas()
        for _ in range(3):
            _fail(a)
        wait_for(_opened(a, b, c), 5.0, "every replica OPEN")
        trips = [
            point.value
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == sc.CB_TRANSITIONS
            for point in metric.data.data_points
            if dict(point.attributes).get(sc.CB_PREVIOUS_STATE) == "closed"
            and dict(point.attributes).get(sc.CB_STATE) == "open"
        ]
    assert sum(trips) == 3  # the three replicas share the name: one series, one trip from each


def test_a_windowed_breaker_judges_the_merged_window(replicas: Replica) -> None:
    """A failure rate met only by the replicas' calls together opens the breaker."""
    window = {"sliding_window": TimeWindow(10.0), "minimum_calls": 4, "failure_rate_threshold": 0.5}
    a, b = replicas(**window), replicas(**window)
    a.call_sync(int)
    _fail(a)
    wait_for(_reported(a), 2.0, "a's call and failure in the store")
    b.call_sync(int)
    assert b.state is CircuitState.CLOSED  # 3 calls, 1 failure
    _fail(b)  # 4 calls, 2 failures: 50 %
    wait_for(_opened(a, b), 2.0, "both OPEN")


def test_a_replica_joining_reads_the_state_and_never_resets_it(replicas: Replica) -> None:
    """A new replica starts OPEN when the cluster is OPEN (pybreaker's storage reset it)."""
    a = replicas()
    a.force_open(30.0)
    wait_for(lambda: a._core._shared.epoch >= 1, 2.0, "published")  # type: ignore[union-attr]
    late = replicas()
    wait_for(_opened(late), 2.0, "the new replica OPEN")
    assert 25.0 < late.get_stats()["retry_after"] <= 30.0
    assert a.state is CircuitState.OPEN


def test_isolation_and_reset_are_cluster_wide(replicas: Replica) -> None:
    """ISOLATE (force_open(reason='isolated')) on one replica opens all; reset closes all."""
    a, b, c = replicas(), replicas(), replicas()
    b.force_open(10.0, reason="isolated")
    wait_for(_opened(a, b, c), 2.0, "all OPEN")
    a.reset()
    wait_for(lambda: all(x.state is CircuitState.CLOSED for x in (a, b, c)), 2.0, "all CLOSED")


def _link(breaker: CircuitBreaker) -> SharedBreaker:
    link = breaker._core._shared
    assert isinstance(link, SharedBreaker)
    return link


def _stays_closed(redis_url: str, *breakers: CircuitBreaker) -> None:
    """Wait until every breaker and the cluster are CLOSED, then for each store's next reads of the cluster."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    server = redis.Redis.from_url(redis_url)
    try:
        closed = lambda: all(b.state is CircuitState.CLOSED for b in breakers)  # noqa: E731
        wait_for(lambda: closed() and server.hget("svc:cb:db:state", "state") == b"closed", 5.0, "all CLOSED")
        stores = [_link(b)._store for b in breakers]
        ops = [store.ops for store in stores]
        wait_for(lambda: all(s.ops >= o + 2 for s, o in zip(stores, ops, strict=True)), 5.0, "reads made")
        assert closed()
        assert server.hget("svc:cb:db:state", "state") == b"closed"
    finally:
        server.close()


def _forced_open_unheard(a: CircuitBreaker, b: CircuitBreaker, redis_url: str) -> int:
    """``b.force_open()`` published while ``a`` cannot take it yet (its link's lock held); return its epoch.

    The caller holds ``a``'s link lock: its subscriber's delivery of the transition waits for it,
    as does the store thread's publication of ``a``'s own.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    server = redis.Redis.from_url(redis_url)
    try:
        b.force_open()
        wait_for(lambda: server.hget("svc:cb:db:state", "state") == b"open", 5.0, "b's force_open published")
        return int(server.hget("svc:cb:db:state", "epoch") or 0)
    finally:
        server.close()


def test_a_reset_on_a_replica_still_closed_closes_the_replicas_that_are_open(
    replicas: Replica, redis_url: str
) -> None:
    """An operator's reset on a replica that had not yet heard of another's force_open applies to all.

    Its breaker was CLOSED already, so the reset changed nothing there: it was published not at
    all, and the other replicas (and this one, once it heard) stayed OPEN until a next reset,
    for good after a ``force_open()`` with no duration. The README: a reset on one replica
    applies to all.
    """
    a, b, c = (replicas(resync_interval=0.2) for _ in range(3))
    with _link(a)._lock:  # a hears nothing meanwhile, nor publishes
        _forced_open_unheard(a, b, redis_url)
        wait_for(_opened(b, c), 5.0, "b and c OPEN")
        assert a.state is CircuitState.CLOSED
        a.reset()  # the operator's last word
    _stays_closed(redis_url, a, b, c)


def test_a_reset_published_after_its_replica_took_the_earlier_force_open_closes_it_too(
    replicas: Replica, redis_url: str
) -> None:
    """The reset is published after its replica took the earlier force_open it had not heard of: it closes too.

    The delivery of the force_open comes between the reset and its publication (made here, in
    that order, while the store's thread waits for the link's lock). The publication closes the
    cluster; the replica, OPEN from the delivery, takes the state it published. It stayed OPEN,
    then published its OPEN again at its next read of the cluster (a replica OPEN facing a
    CLOSED cluster of its period takes it for its own trip), and the reset was undone everywhere.
    """
    a, b = replicas(resync_interval=0.2), replicas(resync_interval=0.2)
    link = _link(a)
    with link._lock:
        epoch = _forced_open_unheard(a, b, redis_url)
        a.reset()  # queued: published once the lock is free
        link.on_message("another replica", epoch, "open", -2, "forced")  # the delivery, first
        assert a.state is CircuitState.OPEN
    _stays_closed(redis_url, a, b)


def test_a_publication_answered_while_a_later_transition_of_its_replica_waits_keeps_the_later_state(
    replicas: Replica,
) -> None:
    """The reply to an earlier transition does not undo a later one of the same replica still queued.

    The replica takes the state it published only when nothing of its own is on its way: here a
    reset's reply comes back after the replica was forced OPEN (that transition queued while the
    store's thread waits for the link's lock). Taking the reset's CLOSED, it ran CLOSED until its
    OPEN was published and taken again, reporting two transitions that were never an operator's.
    """
    a = replicas(resync_interval=0.2)
    link = _link(a)
    with link._lock:
        a.force_open()  # queued: published once the lock is free
        assert a.state is CircuitState.OPEN
        link._published(
            [1, link.epoch + 1], StateChanged("closed", "closed", "reset")
        )  # an earlier reset's reply
        assert a.state is CircuitState.OPEN
    wait_for(lambda: a.state is CircuitState.OPEN and not link._store._queued(link), 5.0, "OPEN published")
    assert a.state is CircuitState.OPEN


def test_a_read_of_the_cluster_made_while_a_transition_of_its_replica_waits_does_not_undo_it(
    replicas: Replica, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resynchronising read taken while the replica's own later transition waits to be published
    leaves that transition alone: its publication settles it (compare-and-set on the period).

    Here an operator's reset is made between the store's publications and its read of every
    breaker's cluster state in one round, as a call's thread may (made in the round here): the
    read finds the cluster still OPEN from the replica's earlier ``force_open``. Taking it, the
    replica went OPEN again until its reset was published the next round and taken back: two
    transitions reported that nobody made, and calls rejected in between.
    """
    a = replicas(resync_interval=0.2)
    link = _link(a)
    store = link._store
    a.force_open()
    wait_for(lambda: not store._queued(link) and link.epoch > 0, 5.0, "force_open published")
    changes: list[StateChanged] = []
    a.on_state_change(changes.append)
    read_states = RedisStore._read_states
    read: list[bool] = []

    def reset_before_the_read(self: RedisStore, due: bool) -> bool:
        if self is store and not read:
            a.reset()  # queued for the next round's publications
            read.append(store._queued(link))
            return read_states(self, True)  # every breaker's state, as at a resync
        return read_states(self, due)

    monkeypatch.setattr(RedisStore, "_read_states", reset_before_the_read)
    store._wake.set()
    wait_for(lambda: bool(read), 5.0, "the round's read")
    _stays_closed(redis_url, a)
    assert read == [True]
    assert [(c.old, c.new, c.reason) for c in changes] == [("open", "closed", "reset")]


def test_namespaces_names_and_keys_never_share_state(replicas: Replica) -> None:
    """Another namespace, another name (even one with ':'), another key: each keeps its own state."""
    a = replicas("db")
    other_ns = replicas("db", namespace="other")
    colon = replicas("db:state")
    with shared_key("tenant-1"):
        keyed = replicas("db")
    witness = replicas("db")  # same namespace, name and key: it follows a
    a.force_open(10.0)
    wait_for(lambda: witness.state is CircuitState.OPEN, 2.0, "the namesake OPEN")
    assert a.state is CircuitState.OPEN
    assert other_ns.state is colon.state is keyed.state is CircuitState.CLOSED


def test_a_namespace_with_a_colon_never_shares_another_namespaces_keys(
    replicas: Replica, redis_url: str
) -> None:
    """Namespace ``svc:cb``'s breaker ``db`` and namespace ``svc``'s breaker ``cb`` of key ``db`` keep two states.

    The namespace went into each key as it was, while names and keys are percent-encoded: both
    breakers kept their state in ``svc:cb:cb:db:state``, so a trip in one service opened the other's
    breaker at its next resync (and a limiter ``state`` of namespace ``svc:cb`` and a breaker ``rl``
    of key ``token_bucket`` of namespace ``svc`` wrote one key, as a string and as a hash).
    """
    with shared_key("db"):
        keyed = replicas("cb", namespace="svc", resync_interval=0.05)
    nested = replicas("db", namespace="svc:cb")
    witness = replicas("db", namespace="svc:cb")
    nested.force_open(30.0)
    wait_for(lambda: witness.state is CircuitState.OPEN, 2.0, "the namesake OPEN")
    store = keyed.config.store
    assert isinstance(store, RedisStore)
    ops = store.ops
    wait_for(lambda: store.ops >= ops + 10, 5.0, "resyncs of the other namespace's breaker")
    assert keyed.state is CircuitState.CLOSED
    with shared_key("token_bucket"):
        breaker = replicas("rl", namespace="svc")
    breaker.force_open(30.0)
    wait_for(lambda: breaker._core._shared.epoch > 0, 2.0, "the trip published")  # type: ignore[union-attr]
    limiter_store = RedisStore.from_url(redis_url, namespace="svc:cb")
    try:
        limiter = RateLimiter(
            "state", RateLimiterConfig(rate=10.0, store=limiter_store, store_fallback="closed")
        )
        assert limiter.try_acquire()  # the cluster's permit, not the fallback's refusal of a WRONGTYPE
        assert limiter_store.errors == 0
    finally:
        limiter_store.close()


def test_a_name_or_key_utf8_cannot_encode_is_shared_as_any_other(
    replicas: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    """A lone surrogate in a key (JSON's ``"\\udcff"``, a ``surrogateescape`` decode) is shared too.

    Sent as it was, it made redis-py raise ``UnicodeEncodeError`` while packing the store's
    pipelined round: every round of the store's thread failed (a traceback logged each time), so
    that no breaker of the store shared anything more, while the store said it was healthy. (A
    name holding one is refused where it is given: no exporter could send it as an attribute.)
    """
    odd = json.loads('"tenant-\\udcff"')
    plain_a, plain_b = replicas("plain"), replicas("plain")
    with shared_key(odd):
        keyed_a, keyed_b = replicas("db"), replicas("db")
    with pytest.raises(ValueError, match="lone surrogate"):
        replicas(odd)
    with shared_key(json.loads('"tenant-\\udcfe"')):
        other_key = replicas("db")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for breaker in (plain_a, keyed_a):
            breaker.force_open(10.0)
        wait_for(_opened(plain_b, keyed_b), 2.0, "every namesake OPEN")
    assert other_key.state is CircuitState.CLOSED  # another key, surrogate or not
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _want_probes(*breakers: CircuitBreaker) -> None:
    """Once each one's OPEN period is over, make a call through each: rejected, it asks for a probe lease."""
    for breaker in breakers:
        wait_for(lambda b=breaker: b._core.retry_after() == 0.0, 3.0, "the end of the OPEN period")
        assert not _admits(lambda b=breaker: b.call_sync(int))  # no replica holds a lease before a call


def test_only_half_open_max_calls_probes_run_across_replicas(replicas: Replica) -> None:
    """After the break, one replica holds the probe lease; the other rejects its probes."""
    a, b = replicas(timeout=0.3, success_threshold=1), replicas(timeout=0.3, success_threshold=1)
    a.force_open(0.3)
    wait_for(_opened(a, b), 2.0, "both OPEN")
    _want_probes(a, b)
    wait_for(
        lambda: a._core.settings.half_open_max_calls + b._core.settings.half_open_max_calls == 1,
        3.0,
        "one lease",
    )
    holder, other = (a, b) if a._core.settings.half_open_max_calls else (b, a)
    assert other.state is CircuitState.HALF_OPEN
    assert other.get_stats()["half_open_in_flight"] == 0
    assert not _admits(lambda: other.call_sync(int))
    assert holder.call_sync(int) == 0
    wait_for(lambda: other.state is CircuitState.CLOSED, 2.0, "the other replica CLOSED")


def _admits(call: Callable[[], object]) -> bool:
    """Whether ``call()`` ran (``False``: the breaker rejected it)."""
    try:
        call()
    except CircuitOpenError:
        return False
    return True


def test_the_store_defaults_are_the_documented_ones() -> None:
    """README: ``timeout`` 250 ms, ``max_connections`` 50, ``probe_lease_ttl`` 5 s, reports every 100 ms."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert (store.timeout, store.max_connections, store.lease_ttl_ms) == (0.25, 50, 5000)
        assert store._interval == 0.1
        assert store.namespace == "otel_resilience"
    finally:
        store.close()


def test_the_stores_documented_attributes_are_read_only() -> None:
    """They are read, never set (was: each could be assigned; ``store.degraded = True`` showed a store
    that answers as unreachable, in ``resilience.store.degraded`` too, and ``False`` hid an outage)."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="svc:ro")
    try:
        given = {
            "namespace": "other",
            "name": "other",
            "key_prefix": "other",
            "timeout": 9.0,
            "max_connections": 1,
            "degraded": True,
            "outages": 7,
            "errors": 7,
        }
        for name, value in given.items():
            with pytest.raises(AttributeError):
                setattr(store, name, value)
            with pytest.raises(AttributeError):
                delattr(store, name)
        kept = {name: getattr(store, name) for name in given}
        assert kept == {
            "namespace": "svc:ro",
            "name": "svc:ro",
            "key_prefix": "svc%3Aro",
            "timeout": 0.25,
            "max_connections": 50,
            "degraded": False,
            "outages": 0,
            "errors": 0,
        }
        assert not store.local_only
    finally:
        store.close()


def test_the_stores_channel_and_ttls_are_read_only() -> None:
    """The channel and the TTLs its scripts are given are read, never set (was: each could be assigned,
    unchecked: ``store.lease_ttl_ms = 1`` gave leases that expired between two rounds while their probe
    ran, under the 3 ``flush_interval`` ``from_url`` refuses; ``store.key_ttl_ms = 0`` had every
    publication refused by Redis; ``store.channel = "x"`` left the subscriber on the old channel)."""
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", namespace="svc:ro", probe_lease_ttl=2.0, key_ttl=60.0
    )
    try:
        given = {"channel": "other:events", "lease_ttl_ms": 1, "key_ttl_ms": 0}
        for name, value in given.items():
            with pytest.raises(AttributeError):
                setattr(store, name, value)
            with pytest.raises(AttributeError):
                delattr(store, name)
        kept = {name: getattr(store, name) for name in given}
        assert kept == {"channel": "svc:ro:events", "lease_ttl_ms": 2000, "key_ttl_ms": 60_000}
    finally:
        store.close()


def test_calls_that_succeed_cost_no_redis_operation(redis_url: str) -> None:
    """README: "a breaker costs 0 Redis operations per call while all is well"."""
    store = RedisStore.from_url(redis_url, namespace="costs")
    try:
        breaker = CircuitBreaker("payments", CircuitBreakerConfig(failure_threshold=5, store=store))
        breaker.call_sync(int)
        wait_for(lambda: store.ops > 0 and not store._resync, 5.0, "the first read")
        before = store.ops
        for _ in range(5_000):
            breaker.call_sync(int)
        assert store.ops - before < 50  # a few background rounds at most, never one per call
    finally:
        store.close()


def test_redis_unreachable_runs_the_breaker_locally(caplog: pytest.LogCaptureFixture) -> None:
    """No Redis: the breaker trips and probes on its own; the store says it is degraded, once."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="gone", timeout=0.1)
    try:
        breaker = CircuitBreaker("alone", CircuitBreakerConfig(failure_threshold=2, timeout=0.2, store=store))
        wait_for(lambda: store.degraded, 2.0, "degraded")
        for _ in range(2):
            _fail(breaker)
        assert breaker.state is CircuitState.OPEN
        time.sleep(0.25)
        assert breaker.call_sync(int) == 0  # a local probe (half_open_max_calls) closes it
        assert store.outages == 1
        assert store.errors >= 1
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
    finally:
        store.close()


def test_the_store_field_and_the_factory_are_validated() -> None:
    """A store that is not one, an empty namespace or a bad timeout raise, naming the field."""
    with pytest.raises(TypeError, match=r"CircuitBreakerConfig\.store"):
        CircuitBreakerConfig(store="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"RedisStore\.from_url\.namespace"):
        RedisStore.from_url("redis://localhost", namespace="")
    with pytest.raises(ValueError, match=r"RedisStore\.from_url\.timeout"):
        RedisStore.from_url("redis://localhost", timeout=0)


_SETTINGS: dict[str, Any] = {"timeout": 0.25, "flush_interval": 0.1, "probe_lease_ttl": 5.0, "key_ttl": 60.0}


def _clients(url: str) -> dict[str, Any]:
    import redis  # noqa: PLC0415 - as the store imports it
    import redis.asyncio  # noqa: PLC0415

    return {
        "sync": redis.Redis.from_url(url),
        "async": redis.asyncio.Redis.from_url(url),
        "object": object(),
        "url": url,
        "none": None,
    }


@pytest.mark.parametrize(
    ("client", "subscriber", "field"),
    [
        ("async", "sync", "client"),  # redis.asyncio.Redis: its calls return coroutines no thread awaits
        ("object", "sync", "client"),
        ("url", "sync", "client"),
        ("none", "sync", "client"),
        ("sync", "async", "subscriber"),
        ("sync", "url", "subscriber"),
        ("sync", "object", "subscriber"),
    ],
)
def test_a_store_made_of_clients_refuses_one_that_is_not_a_sync_redis_client(
    redis_url: str, client: str, subscriber: str, field: str
) -> None:
    """``RedisStore(client, subscriber)`` checks both at construction, naming the parameter (was: taken
    as they were, a ``redis.asyncio.Redis`` client failed at the store's first round, in its thread, with
    "TypeError: 'coroutine' object is not iterable" logged and coroutines never awaited; another
    object failed there too, or, as the subscriber, in the subscriber thread)."""
    clients = _clients(redis_url)
    with pytest.raises(TypeError, match=rf"^RedisStore\.{field} must be a redis\.Redis"):
        RedisStore(clients[client], clients[subscriber], namespace="made", **_SETTINGS)


@pytest.mark.parametrize(
    ("arguments", "error", "field"),
    [
        ({"namespace": ""}, ValueError, "namespace"),
        ({"namespace": "svc-\udcff"}, ValueError, "namespace"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"flush_interval": "1s"}, TypeError, "flush_interval"),
        ({"probe_lease_ttl": 0.0004}, ValueError, "probe_lease_ttl"),
        ({"probe_lease_ttl": 0.29}, ValueError, "probe_lease_ttl"),  # flush_interval 0.1: 0.3 at least
        ({"key_ttl": 0.0001}, ValueError, "key_ttl"),
        ({"resync_interval": float("inf")}, ValueError, "resync_interval"),
        ({"max_connections": 0}, ValueError, "max_connections"),
        ({"max_connections": 2.5}, TypeError, "max_connections"),
        ({"max_connections": 10_001}, ValueError, "max_connections"),
    ],
)
def test_a_store_made_of_clients_checks_its_settings_as_from_url_does(
    redis_url: str, arguments: dict[str, object], error: type[Exception], field: str
) -> None:
    """The constructor's settings are checked by ``from_url``'s rules, the message naming the parameter
    (was: taken as they were: ``timeout=-1`` and ``max_connections=0`` made a store that failed at its
    first operations, ``key_ttl=0.0001`` one whose every state Redis deleted as it was written)."""
    clients = _clients(redis_url)
    settings = {"namespace": "made", **_SETTINGS, **arguments}
    with pytest.raises(error, match=rf"^RedisStore\.{field} must be"):
        RedisStore(clients["sync"], _clients(redis_url)["sync"], **settings)


def test_a_store_made_of_two_sync_clients_shares_a_trip(redis_url: str) -> None:
    """Two ``redis.Redis`` clients are what the constructor takes: its breaker's trip reaches a replica."""
    clients = [_clients(redis_url)["sync"] for _ in range(2)]
    made = RedisStore(*clients, namespace="made", **_SETTINGS)
    other = RedisStore.from_url(redis_url, namespace="made")
    try:
        with namesakes_expected():
            tripped = CircuitBreaker(
                "db", CircuitBreakerConfig(failure_threshold=2, timeout=30.0, store=made)
            )
            told = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=2, timeout=30.0, store=other))
        first_round(made)
        first_round(other)
        for _ in range(2):
            _fail(tripped)
        wait_for(_opened(told), 5.0, "the trip on the other replica")
    finally:
        made.close()
        other.close()


def test_max_connections_is_at_most_a_redis_servers_default_maxclients() -> None:
    """10 000 is taken; more is refused at once, naming the parameter (``sys.maxsize`` for "no limit"
    hung in redis-py's pool, which makes a place for each connection before opening one)."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    RedisStore.from_url(url, max_connections=10_000).close()
    for many in (10_001, sys.maxsize):
        with pytest.raises(ValueError, match=r"^RedisStore\.from_url\.max_connections must be <= 10000"):
            RedisStore.from_url(url, max_connections=many)


def test_a_probe_lease_of_three_rounds_is_taken_to_the_millisecond() -> None:
    """``probe_lease_ttl`` 3 times ``flush_interval + timeout`` is taken: ``3 * (0.1 + 0.25)`` is not above 1.05."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    RedisStore.from_url(url, probe_lease_ttl=1.05, flush_interval=0.1).close()
    RedisStore.from_url(url, probe_lease_ttl=0.6, flush_interval=0.1, timeout=0.1).close()
    RedisStore.from_url(url, probe_lease_ttl=0.9, flush_interval=0.2, timeout=0.1).close()


@pytest.mark.parametrize(
    ("settings", "lease_ms"),
    [
        ({}, 5000),  # 3 x (0.1 + 0.25) = 1.05 s: the default's 5 s
        ({"timeout": 1.56}, 5000),  # 3 x 1.66 = 4.98 s
        ({"timeout": 2.0}, 6300),  # 3 x (0.1 + 2.0): the shortest a lease may be, past 5 s
        ({"timeout": 1.0, "flush_interval": 1.0}, 6000),
        ({"timeout": 0.0006, "flush_interval": 0.0006}, 5000),
    ],
)
def test_a_store_given_no_probe_lease_ttl_takes_5_s_or_three_rounds_if_longer(
    settings: dict[str, float], lease_ms: int
) -> None:
    """With no ``probe_lease_ttl``, a store whose rounds are long (a ``timeout`` of 2 s) is made,
    its leases as long as three rounds: the default never refuses the settings beside it."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = RedisStore.from_url(url, **settings)  # type: ignore[arg-type]
    try:
        assert store.lease_ttl_ms == lease_ms
    finally:
        store.close()
    with pytest.raises(ValueError, match="probe_lease_ttl") if lease_ms > 5000 else contextlib.nullcontext():
        RedisStore.from_url(url, probe_lease_ttl=5.0, **settings).close()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("arguments", "error", "field"),
    [
        ({"url": None}, TypeError, "url"),
        ({"url": "localhost:6379"}, ValueError, "url"),
        ({"url": "redis://localhost:port/0"}, ValueError, "url"),
        ({"url": "redis://localhost:6379/notadb"}, ValueError, "url"),  # redis-py reads database 0
        ({"url": "redis://localhost:6379/2?db=3"}, ValueError, "url"),  # redis-py reads database 3
        ({"url": "rediss://:secret@localhost/0/1"}, ValueError, "url"),
        # A query option a client does not take: a typo; one the async client lacks.
        ({"url": "redis://localhost:6379/0?socket_timout=1"}, ValueError, "url"),
        ({"url": "rediss://localhost:6379/0?ssl_validate_ocsp=true"}, ValueError, "url"),
        ({"probe_lease_ttl": 0.0004}, ValueError, "probe_lease_ttl"),
        # A lease that expires between two renewals while its probe runs: 3 rounds at least.
        ({"probe_lease_ttl": 0.3, "flush_interval": 0.5}, ValueError, "probe_lease_ttl"),
        ({"probe_lease_ttl": 1.04}, ValueError, "probe_lease_ttl"),  # 3 x (0.1 + 0.25): 1.05 at least
        ({"probe_lease_ttl": 0.3, "flush_interval": 0.1, "timeout": 0.5}, ValueError, "probe_lease_ttl"),
        ({"probe_lease_ttl": 5.0, "flush_interval": 2.0}, ValueError, "probe_lease_ttl"),
        ({"key_ttl": 0.0001}, ValueError, "key_ttl"),
        ({"max_connections": 0}, ValueError, "max_connections"),
        ({"max_connections": -5}, ValueError, "max_connections"),
        ({"max_connections": 2.5}, TypeError, "max_connections"),
        ({"max_connections": True}, TypeError, "max_connections"),
        ({"namespace": "svc-\udcff"}, ValueError, "namespace"),  # no key of it could be sent
    ],
)
def test_a_url_or_ttl_redis_cannot_take_is_refused_at_construction(
    arguments: dict[str, object], error: type[Exception], field: str
) -> None:
    """A URL that is not Redis' and a TTL under Redis' millisecond raise, naming the field.

    They were accepted: the URL's error did not name it (``url=None``: an ``AttributeError``), a
    lease TTL of 0 ms made every lease fail in Redis (the store degraded, "unreachable"), and a
    key TTL of 0 ms deleted each state as it was written. A query option a client of the store
    does not take made each operation that opened a connection raise a ``TypeError``, a rate
    limiter's permit to its caller too. A lease TTL shorter than three rounds of the store's
    thread (``flush_interval``, then round trips of up to ``timeout``) expired while its probe ran:
    another replica took the lease and probed at once (2 probes with ``half_open_max_calls=1``, a
    TTL of 0.3 s and ``flush_interval=0.5``, or round trips of 0.3 s within a 1 s ``timeout``).
    """
    options: dict[str, object] = {"url": "redis://127.0.0.1:6379/0", **arguments}
    with pytest.raises(error, match=rf"RedisStore\.from_url\.{field}"):
        RedisStore.from_url(**options)  # type: ignore[arg-type]


def test_each_key_of_a_manager_policy_shares_its_own_breaker(redis_url: str) -> None:
    """Two replicas' policies: tenant a tripped on one is OPEN on the other; tenant b stays CLOSED."""
    stores = [RedisStore.from_url(redis_url, namespace="keys") for _ in range(2)]
    try:
        breaker = CircuitBreakerConfig(failure_threshold=2, timeout=30.0, store=stores[0])
        one = ResilienceManager().policy("payments", ResilienceConfig(circuit_breaker=breaker))
        other = dataclasses.replace(breaker, store=stores[1])
        two = ResilienceManager().policy("payments", ResilienceConfig(circuit_breaker=other))
        for key in ("a", "b"):  # each tenant's breaker exists on both replicas before the trip
            assert one.for_key(key).execute_sync(int) == two.for_key(key).execute_sync(int) == 0
        time.sleep(0.3)  # their first resync

        def boom() -> None:
            raise RuntimeError("down")

        for _ in range(2):
            with pytest.raises(RuntimeError):
                one.for_key("a").execute_sync(boom)
        wait_for(
            lambda: not _admits(lambda: two.for_key("a").execute_sync(int)),
            2.0,
            "tenant a OPEN on the other replica",
        )
        time.sleep(0.2)
        assert two.for_key("b").execute_sync(int) == one.for_key("b").execute_sync(int) == 0
    finally:
        for store in stores:
            store.close()


def test_half_open_max_calls_leases_are_shared_by_all_replicas(replicas: Replica) -> None:
    """With half_open_max_calls=2 and three replicas, two probe places exist in the whole cluster."""
    group = [replicas(timeout=0.3, half_open_max_calls=2) for _ in range(3)]
    group[0].force_open(0.3)
    wait_for(_opened(*group), 2.0, "all OPEN")
    _want_probes(*group)

    def places() -> int:
        return sum(b._core.settings.half_open_max_calls for b in group)

    wait_for(lambda: places() == 2, 3.0, "two probe places")
    for _ in range(5):
        time.sleep(0.1)
        assert places() == 2
    assert all(b.state is CircuitState.HALF_OPEN for b in group)


def test_a_trip_while_redis_is_down_reaches_the_others_when_it_returns(
    replicas: Replica, redis_server: RedisServer
) -> None:
    """A replica that tripped alone during an outage publishes its OPEN on reconnecting: the others adopt it."""
    a, b = replicas(), replicas()
    redis_server.stop()
    store = a._core._shared._store  # type: ignore[union-attr]
    for _ in range(3):
        _fail(a)
    assert a.state is CircuitState.OPEN
    wait_for(lambda: store.degraded, 5.0, "the store degraded")
    assert b.state is CircuitState.CLOSED
    redis_server.start()
    took = wait_for(_opened(b), 15.0, "the other replica OPEN after Redis returned")
    wait_for(lambda: not store.degraded, 5.0, "the store healthy again")
    print(f"reconverged {took:.2f} s after Redis returned")


def test_a_trip_after_redis_returned_reaches_it_within_rounds_not_after_the_backoff(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Redis away long enough for the store's backoff to grow, back, then a breaker trips: its trip is in Redis at once.

    A breaker's failure, probe or transition woke the store's thread for its next round, but
    not out of its backoff (doubling to 5 s: 3.2 s after six failed attempts), which only a
    rate limiter's fallback cut short: a trip made after Redis was back stayed local, and
    unknown to the other replicas, for the rest of it. It now has the store try again one round
    after its last attempt, as a limiter's fallback does: 1.5 s is far from both figures.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    store = RedisStore.from_url(redis_url, namespace="back-cb", timeout=0.2, resync_interval=60.0)
    attempts = Attempts(store._client)
    store._client = attempts
    breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=2, timeout=30.0, store=store))
    control = redis.Redis.from_url(redis_url)

    def published() -> bool:
        return control.hget("back-cb:cb:db:state", "state") == b"open"

    try:
        first_round(store)
        redis_server.stop()
        wait_for(lambda: attempts.failed >= 6, 15.0, "six failed attempts: a backoff of 3.2 s now")
        assert store.degraded
        redis_server.start()
        for _ in range(2):
            _fail(breaker)
        assert breaker.state is CircuitState.OPEN
        took = wait_for(published, 10.0, "the trip in Redis")
        print(f"the trip reached Redis {took:.3f} s after it was made")
        assert took < 1.5
        wait_for(lambda: not store.degraded, 5.0, "the store back (after the round that published)")
        assert store.outages == 1
    finally:
        control.close()
        store.close()


def test_a_replica_whose_calls_succeed_rejoins_within_rounds_of_redis_return(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Redis away long enough for the backoff to grow, back: a breaker whose calls all succeed is shared again at once.

    Only a failure, a probe or a transition woke the store's thread out of its backoff (3.2 s
    after six failed attempts): a replica whose calls succeeded stayed on local state that long
    after Redis returned, its counts unreported and deaf to the cluster's trips, while one whose
    calls failed rejoined in a round. The store's thread now looks each round of its backoff
    whether a shared breaker had calls since its last attempt, which costs a call nothing:
    1.5 s is far from both figures.
    """
    store = RedisStore.from_url(redis_url, namespace="back-ok", timeout=0.2, resync_interval=60.0)
    attempts = Attempts(store._client)
    store._client = attempts
    breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=2, store=store))
    try:
        first_round(store)
        redis_server.stop()
        wait_for(lambda: attempts.failed >= 6, 15.0, "six failed attempts: a backoff of 3.2 s now")
        assert store.degraded
        redis_server.start()
        started = time.monotonic()

        def shared_again() -> bool:
            assert breaker.call_sync(lambda: "ok") == "ok"
            return not store.degraded

        took = wait_for(shared_again, 10.0, "the store back")
        print(f"shared again {took:.3f} s after Redis returned ({time.monotonic() - started:.3f} s)")
        assert took < 1.5
        assert store.outages == 1
    finally:
        store.close()


async def test_async_callers_share_the_breaker_as_threads_do(replicas: Replica) -> None:
    """Coroutines on an event loop trip the cluster's breaker and are rejected by another replica's."""
    a, b = replicas(), replicas()

    async def down() -> None:
        raise RuntimeError("down")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await a.call(down)
    deadline = time.monotonic() + 2.0
    while b.state is not CircuitState.OPEN and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    with pytest.raises(CircuitOpenError):
        await b.call(down)


def test_probe_successes_on_several_replicas_are_summed_to_close(redis_url: str) -> None:
    """success_threshold=3 met by 1 probe success on each of three replicas closes every replica.

    The first of them left the cluster after its success was reported: it still counts.
    """
    stores = [
        RedisStore.from_url(redis_url, namespace="probes", probe_lease_ttl=0.6, timeout=0.1) for _ in range(3)
    ]
    try:
        config = CircuitBreakerConfig(timeout=0.3, half_open_max_calls=3, success_threshold=3)
        with namesakes_expected():
            group = [CircuitBreaker("db", dataclasses.replace(config, store=store)) for store in stores]
        group[0].force_open(0.3)
        wait_for(_opened(*group), 2.0, "all OPEN")
        _want_probes(*group)

        def limits() -> list[int]:
            return [b._core.settings.half_open_max_calls for b in group]

        wait_for(lambda: limits() == [1, 1, 1], 3.0, "a probe lease for each replica's rejected call")
        first, second, third = group
        assert first.call_sync(int) == 0  # 1 of 3
        assert first.state is CircuitState.HALF_OPEN

        def reported(successes: int, *breakers: CircuitBreaker) -> Callable[[], bool]:
            return lambda: all(b._core._shared.merged_probes((0, 0))[0] == successes for b in breakers)  # type: ignore[union-attr]

        wait_for(reported(1, second, third), 2.0, "the success reported")
        stores[0].close()  # the first prober leaves the cluster: its success still counts
        assert second.call_sync(int) == 0  # 2 of 3
        assert second.state is CircuitState.HALF_OPEN
        wait_for(reported(2, third), 2.0, "the second success reported")
        assert third.call_sync(int) == 0  # 3 of 3, summed over three replicas
        assert third.state is CircuitState.CLOSED
        wait_for(lambda: second.state is CircuitState.CLOSED, 2.0, "the second replica CLOSED")
        assert [b.get_stats()["total_successes"] for b in group] == [1, 1, 1]
    finally:
        for store in stores:
            store.close()


def test_slow_probes_on_several_replicas_are_summed_to_reopen(redis_url: str) -> None:
    """Two slow probe successes, one per replica, are the cluster's 2 slow of 2: it opens again.

    Judged on its own slow probe alone (1 of 2: under the threshold of 1.0), the second replica
    closed the cluster's breaker on a dependency still slow.
    """
    stores = [
        RedisStore.from_url(redis_url, namespace="slow-probes", probe_lease_ttl=0.6, timeout=0.1)
        for _ in range(2)
    ]
    try:
        config = CircuitBreakerConfig(
            timeout=0.3,
            half_open_max_calls=2,
            success_threshold=2,
            sliding_window=CountWindow(10),
            slow_call_duration=0.5,
            slow_call_rate_threshold=1.0,
        )
        with namesakes_expected():
            group = [CircuitBreaker("db", dataclasses.replace(config, store=store)) for store in stores]
        group[0].force_open(0.3)
        wait_for(_opened(*group), 2.0, "all OPEN")
        _want_probes(*group)

        def slow() -> int:
            time.sleep(0.6)  # at least slow_call_duration, however loaded the machine
            return 0

        limits = lambda: [b._core.settings.half_open_max_calls for b in group]  # noqa: E731
        wait_for(lambda: limits() == [1, 1], 3.0, "a probe lease for each replica's rejected call")
        first, second = group
        changes: list[StateChanged] = []
        second.on_state_change(changes.append)
        assert first.call_sync(slow) == 0  # 1 slow of 2
        assert first.state is CircuitState.HALF_OPEN
        reported = lambda: second._core._shared.merged_probes((0, 0)) == (1, 1)  # type: ignore[union-attr]  # noqa: E731
        wait_for(reported, 2.0, "the slow success reported")
        stores[0].close()  # the first prober leaves the cluster: its slow success still counts
        assert second.call_sync(slow) == 0  # 2 slow of 2, summed over two replicas
        assert second.state is CircuitState.OPEN
        assert [(c.old, c.new, c.reason) for c in changes] == [("half_open", "open", "slow_call_rate")]
    finally:
        for store in stores:
            store.close()


def test_a_replica_that_publishes_its_own_trip_keeps_no_probe_of_an_earlier_period(redis_url: str) -> None:
    """Its leases were of the period before: once its trip is published it holds none, so probes none."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    store = RedisStore.from_url(
        redis_url, namespace="own-trip", flush_interval=30.0, probe_lease_ttl=91.0, resync_interval=60.0
    )
    client = redis.Redis.from_url(redis_url)
    try:
        breaker = CircuitBreaker("dep", CircuitBreakerConfig(store=store, failure_threshold=1, timeout=30.0))
        first_round(store)
        link = store._links[0]
        link.leases = 1  # as it held the one lease of an earlier HALF_OPEN period
        link._apply_probe_limit(breaker)
        assert breaker._core.settings.half_open_max_calls == 1
        epoch = link.epoch
        link.publish(client, StateChanged("closed", "open", "failure_threshold", duration=30.0))
        assert link.epoch > epoch  # its trip, a new period, published by this replica
        assert breaker._core.settings.half_open_max_calls == 0  # no lease of the new period yet
    finally:
        client.close()
        store.close()


def test_a_periods_counts_expire_with_their_age_not_the_state_key_ttl(redis_url: str) -> None:
    """The counts of a state period live 60 s after their last report, not the state's day."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    store = RedisStore.from_url(redis_url, namespace="count-ttl", flush_interval=0.05)
    try:
        breaker = CircuitBreaker("dep", CircuitBreakerConfig(store=store, failure_threshold=5))
        first_round(store)
        _fail(breaker)  # a count to report
        client = redis.Redis.from_url(redis_url)
        wait_for(lambda: bool(client.keys("count-ttl:cb:dep:counts:*")), 5.0, "the counts reported")
        for key in client.keys("count-ttl:cb:dep:counts:*"):
            assert 0 < client.pttl(key) <= 60_000
        client.close()
    finally:
        store.close()


def test_counts_the_server_lost_are_reported_again_within_the_resync_interval(
    redis_url: str, replicas: Replica
) -> None:
    """A replica whose counts stop changing reports them again: the server's loss does not lose them.

    Reported only when they changed, ``a``'s two failures were gone from the cluster for good
    once the server lost its data (``FLUSHALL``, an eviction): ``b``'s failure found 1 of the
    cluster's 3 and opened nothing.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    a, b = replicas(namespace="lost-counts", resync_interval=0.5), replicas(namespace="lost-counts")
    _fail(a)
    _fail(a)
    wait_for(_reported(a), 2.0, "a's failures in the store")
    _lose_state(redis_url, "lost-counts")
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: bool(client.keys("lost-counts:cb:db:counts:*")), 5.0, "a's counts reported again")
    finally:
        client.close()
    _fail(b)
    wait_for(_opened(a, b), 2.0, "both OPEN on the cluster's 3 failures")


def test_a_live_replicas_counts_outlive_the_age_that_drops_a_gone_replicas(
    replicas: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other replicas drop counts not reported for a minute (their replica is gone): not a live one's.

    Two failures of a replica with no call since were dropped by the next replica's report a
    minute later: its failure then found 1 of the cluster's 3 consecutive failures (here the
    minute is 2 s).
    """
    monkeypatch.setattr("otel_resilience.store.breaker._PEER_MAX_AGE_MS", 2_000)
    a, b = replicas(namespace="idle-counts", resync_interval=60.0), replicas(namespace="idle-counts")
    _fail(a)
    _fail(a)
    wait_for(_reported(a), 2.0, "a's failures in the store")
    time.sleep(4.0)  # twice the age: a's report of them is older than it, unless a reported them again
    _fail(b)
    wait_for(_opened(a, b), 2.0, "both OPEN on the cluster's 3 failures")


@pytest.mark.parametrize(("switch", "mode"), [("disable", "disabled"), ("metrics_only", "metrics_only")])
def test_an_operators_mode_the_server_lost_reaches_a_replica_that_joins_later(
    redis_url: str, replicas: Replica, switch: str, mode: str
) -> None:
    """A replica in an operator's mode founds it again when the server lost it, as an OPEN one does.

    A day after its last change (``key_ttl``), or after a restart without persistence, the cluster's
    ``disable()`` was gone from the server: every replica started since ran its breaker CLOSED,
    rejecting calls the operator had let through, while the others stayed disabled, until an
    operator's next move.
    """
    a = replicas(namespace="lost-mode", resync_interval=0.5)
    getattr(a, switch)()
    wait_for(lambda: a._core._shared.epoch > 0, 2.0, "the mode published")  # type: ignore[union-attr]
    _lose_state(redis_url, "lost-mode")
    late = replicas(namespace="lost-mode")
    wait_for(lambda: late.state.value == mode, 5.0, "the replica that joined taking the operator's mode")
    assert a.state.value == mode


def test_a_trip_after_the_server_lost_the_state_still_reaches_the_others(
    redis_url: str, replicas: Replica
) -> None:
    """Redis restarted without persistence (or the state key expired): the next trip opens every replica."""
    a, b = replicas(namespace="lost"), replicas(namespace="lost")
    _open_and_close(a, b)
    _lose_state(redis_url, "lost")
    a.force_open()
    wait_for(_opened(a, b), 3.0, "the trip reaching the other replica")


def test_a_replica_that_joins_after_the_server_lost_the_state_and_trips_first_reaches_the_others(
    redis_url: str, replicas: Replica
) -> None:
    """Its trip founds the lost state anew, newer than every period the others saw, both ways."""
    a, b = (
        replicas(namespace="lagging", resync_interval=60.0),
        replicas(namespace="lagging", resync_interval=60.0),
    )
    for _ in range(3):  # periods that a replica joining later never sees
        _open_and_close(a, b)
    _lose_state(redis_url, "lagging")
    late = replicas(namespace="lagging", resync_interval=60.0)  # joins now: it knows no period at all
    late.force_open()
    wait_for(_opened(a, b), 3.0, "the late replica's trip reaching the others")
    late.reset()
    wait_for(lambda: a.state is CircuitState.CLOSED and b.state is CircuitState.CLOSED, 3.0, "its reset")
    a.force_open()
    wait_for(_opened(late, b), 3.0, "an older replica's trip reaching the late one")


def test_a_state_founded_again_at_a_lower_epoch_is_taken_and_published_over(
    redis_url: str, replicas: Replica
) -> None:
    """A replica of an earlier version founds a lost state at a low epoch: the others take it, then move it."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    a, b = (
        replicas(namespace="founded", resync_interval=0.1),
        replicas(namespace="founded", resync_interval=0.1),
    )
    _open_and_close(a, b)
    _lose_state(redis_url, "founded")
    client = redis.Redis.from_url(redis_url)
    try:  # an earlier version's replica trips first: the state founded at its own low epoch + 1
        until = int(client.time()[0]) * 1000 + 30_000
        state = {"epoch": 5, "state": "open", "until": until, "reason": "failure_threshold"}
        client.hset("founded:cb:db:state", mapping=state)
    finally:
        client.close()
    wait_for(_opened(a, b), 3.0, "the trip founded at a lower epoch")
    assert [breaker._core._shared.epoch for breaker in (a, b)] == [5, 5]  # type: ignore[attr-defined]
    a.reset()
    wait_for(lambda: b.state is CircuitState.CLOSED, 2.0, "a reset published over it")


def test_a_breaker_given_a_closed_store_probes_on_its_own(redis_url: str) -> None:
    """A closed store shares nothing: a breaker made (or reloaded) with it runs as a local one.

    It was given a probe limit of 0, waiting for leases that a closed store never takes: once
    it opened, it stayed HALF_OPEN, rejecting every call, for good.
    """
    store = RedisStore.from_url(redis_url, namespace="closed-first")
    store.close()
    breaker = CircuitBreaker(
        "db", CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=0.01, store=store)
    )
    _fail(breaker)
    assert breaker.state is CircuitState.OPEN
    wait_for(lambda: breaker.get_stats()["retry_after"] == 0.0, 2.0, "the end of the OPEN period")
    assert _admits(lambda: breaker.call_sync(int))  # the local probe
    assert breaker.state is CircuitState.CLOSED


def test_a_trip_published_late_leaves_an_open_cluster_as_it_is(replicas: Replica, redis_url: str) -> None:
    """A replica whose trip lost the race to another's opening adopts that opening, never starts one over it.

    A trip wins over CLOSED only; the cluster's state came back as bytes, never equal to
    ``"open"``, so a late trip always published again: it replaced an operator's opening until
    reset with one of ``timeout`` seconds (the cluster then probed the dependency) and started
    an opening anew, throwing its probe leases away.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    a, b = replicas(), replicas()
    a.force_open()  # until reset
    wait_for(_opened(b), 2.0, "b adopting the opening")
    store = b.config.store
    assert isinstance(store, RedisStore)
    link = next(link for link in store._links if link.breaker is b)
    client = redis.Redis.from_url(redis_url)
    try:
        before = client.hgetall("svc:cb:db:state")
        # b tripped on its own failures before a's opening reached it: its epoch is the one before
        link.epoch -= 1
        link.publish(store._client, StateChanged("closed", "open", "failure_threshold", 0, 30.0))
        assert client.hgetall("svc:cb:db:state") == before  # still open until reset, by a's hand
    finally:
        client.close()
    assert b.state is CircuitState.OPEN
    assert b.get_stats()["retry_after"] == float("inf")


@pytest.mark.parametrize(("switch", "mode"), [("disable", "disabled"), ("metrics_only", "metrics_only")])
def test_a_trip_published_late_leaves_an_operators_mode_as_it_is(
    replicas: Replica, redis_url: str, switch: str, mode: str
) -> None:
    """A trip that lost the race to an operator's ``disable()`` or ``metrics_only()`` adopts it.

    A trip wins over CLOSED only; a late trip won over every state but OPEN: a replica that
    tripped just before an operator switched the breaker off (or to shadow mode) opened it again
    on every replica, rejecting the calls the operator had let through.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    a, b = replicas(), replicas()
    getattr(a, switch)()
    wait_for(lambda: b.state.value == mode, 2.0, "b adopting the operator's mode")
    store = b.config.store
    assert isinstance(store, RedisStore)
    link = next(link for link in store._links if link.breaker is b)
    client = redis.Redis.from_url(redis_url)
    try:
        before = client.hgetall("svc:cb:db:state")
        with link._lock:  # the store's thread reads the cluster's state (and epoch) under it meanwhile
            link.epoch -= 1  # b tripped before the operator's mode reached it
            link.publish(store._client, StateChanged("closed", "open", "failure_threshold", 0, 30.0))
        assert client.hgetall("svc:cb:db:state") == before
    finally:
        client.close()
    assert b.state.value == mode
    assert a.state.value == mode


def test_a_url_with_a_database_number_or_none_is_taken() -> None:
    """``/0``, ``/15``, no path and a unix socket's path are all Redis URLs (nothing connects yet)."""
    for url in (
        "redis://127.0.0.1:1/0",
        "redis://127.0.0.1:1/15",
        "redis://127.0.0.1:1",
        "unix:///tmp/r.sock?db=2",
    ):
        RedisStore.from_url(url, namespace="urls").close()


def test_a_long_keys_refused_store_key_is_named_cut(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A 5,000-character key's refused store key, and its breaker, are named as a ``resilience.key`` is."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    key = "k" * 5_000
    control = redis.Redis.from_url(redis_url)
    control.set(f"wtlong:cb:bad:{key}:state", "not a hash")
    store = RedisStore.from_url(redis_url, namespace="wtlong", resync_interval=0.2)
    try:
        with caplog.at_level("WARNING", logger="otel_resilience"), shared_key(key):
            breaker = CircuitBreaker(
                "bad", CircuitBreakerConfig(store=store, failure_threshold=3, timeout=30.0)
            )  # type: ignore[arg-type]
            _fail(breaker)

            def refused() -> list[str]:  # logged by the store's thread once it counted the error
                return [r.getMessage() for r in caplog.records if "refused breaker key" in r.getMessage()]

            wait_for(lambda: store.errors > 0 and refused(), 5.0, "the refused key met and told")
        refusals = refused()
        assert refusals
        assert repr(key_attribute(f"wtlong:cb:bad:{key}:state")) in refusals[0]
        assert repr(key_attribute(f"bad:{key}")) in refusals[0]
        assert len(refusals[0]) < 3 * MAX_ATTRIBUTE_LENGTH + 200
    finally:
        control.delete(f"wtlong:cb:bad:{key}:state")
        control.close()
        store.close()


@pytest.mark.parametrize(
    ("key", "write", "error"),
    [
        ("state", ("set", "not a hash"), "WRONGTYPE"),
        ("counts:0", ("rpush", "not a hash"), "WRONGTYPE"),
        ("state", ("hset", "epoch", "not a number"), "epoch"),  # a hash the scripts cannot read
    ],
)
def test_a_key_of_the_wrong_type_makes_only_its_breaker_local(
    redis_url: str, caplog: pytest.LogCaptureFixture, key: str, write: tuple[str, ...], error: str
) -> None:
    """``WRONGTYPE`` on one breaker's key: that breaker runs on local state, the others keep sharing.

    The error of that key's script failed the whole round of the store's thread, which took it
    for an outage: every breaker went local (``degraded``, an outage, "unreachable" every round).
    What still works for that breaker is still shared: with its counts key refused, a trip is
    published through its state key (a new period, whose counts key is the store's again); once
    its state key is the store's again, a trip it made on its own reaches the others. A state
    hash whose epoch is no number is refused as well (the scripts answered a reply cut short at
    the missing epoch, which failed the round of the store's thread for every breaker).
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    control = redis.Redis.from_url(redis_url)
    getattr(control, write[0])(f"wt:cb:bad:{key}", *write[1:])
    stores = [RedisStore.from_url(redis_url, namespace="wt", resync_interval=0.2) for _ in range(2)]
    try:
        settings = {"failure_threshold": 3, "timeout": 30.0}
        with namesakes_expected(), caplog.at_level("WARNING", logger="otel_resilience"):
            good = [CircuitBreaker("good", CircuitBreakerConfig(store=s, **settings)) for s in stores]  # type: ignore[arg-type]
            bad = [CircuitBreaker("bad", CircuitBreakerConfig(store=s, **settings)) for s in stores]  # type: ignore[arg-type]
            for breaker in bad:  # its counts reported (or its state read): the server refuses the key
                _fail(breaker)
            wait_for(lambda: all(s.errors > 0 for s in stores), 5.0, "the refused key met")
            _fail(good[0])
            _fail(good[0])
            wait_for(_reported(good[0]), 2.0, "the failures in the store")
            _fail(good[1])
            wait_for(_opened(*good), 2.0, "the good breaker OPEN on both replicas: still shared")
            assert [b.state for b in bad] == [CircuitState.CLOSED] * 2  # 1 failure each: judged locally
            _fail(bad[0])
            _fail(bad[0])
            assert bad[0].state is CircuitState.OPEN  # its own 3 failures
            if key == "state":
                time.sleep(0.2)
                assert bad[1].state is CircuitState.CLOSED  # not shared: its state key is refused
            else:  # its counts are not shared, its state is: the trip reaches the other replica
                wait_for(_opened(bad[1]), 2.0, "the trip published through the state key")
        for store in stores:
            assert (store.degraded, store.outages) == (False, 0)
        assert not any("unreachable" in record.getMessage() for record in caplog.records)
        refusals = [r.getMessage() for r in caplog.records if "refused breaker key" in r.getMessage()]
        assert len(refusals) == 2  # once per replica, naming the key
        assert all(f"wt:cb:bad:{key}" in message and error in message for message in refusals)
        assert not good[0]._core._shared.local_only  # type: ignore[union-attr]
        if key == "state":
            assert bad[0]._core._shared.local_only  # type: ignore[union-attr]
            control.delete("wt:cb:bad:state")  # the key is the store's again: read at the next resync
            wait_for(_opened(bad[1]), 5.0, "the local trip published once the key is taken again")
            assert not bad[0]._core._shared.local_only  # type: ignore[union-attr]
    finally:
        for store in stores:
            store.close()
        control.close()


def test_an_idle_replica_takes_no_probe_lease_from_the_replica_with_calls(redis_url: str) -> None:
    """After a cluster-wide break, only a replica with a call to probe with takes the probe lease.

    Every replica whose OPEN period had ended took the cluster's leases in its next round, calls
    or not: a replica making no call through the breaker held them, and the replica with the
    traffic rejected every probe until they expired (``probe_lease_ttl``, 30 s here).
    """
    idle_store = RedisStore.from_url(redis_url, namespace="idle", probe_lease_ttl=30.0, resync_interval=0.01)
    # Its rounds only when something happens to it (a call, a trip): the idle store's come first.
    busy_store = RedisStore.from_url(
        redis_url, namespace="idle", probe_lease_ttl=91.0, flush_interval=30.0, resync_interval=30.0
    )
    try:
        config = CircuitBreakerConfig(timeout=0.2, success_threshold=1)
        with namesakes_expected():
            idle = CircuitBreaker("db", dataclasses.replace(config, store=idle_store))
            busy = CircuitBreaker("db", dataclasses.replace(config, store=busy_store))
        first_round(idle_store)
        first_round(busy_store)
        busy.force_open(0.2)
        wait_for(lambda: idle.peek_state() is CircuitState.OPEN, 2.0, "the idle replica OPEN")
        wait_for(lambda: idle._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        ops = idle_store.ops  # each round of the idle store reads the state (resync_interval)
        wait_for(lambda: idle_store.ops >= ops + 3, 5.0, "rounds of the idle store after the break")
        link = idle._core._shared
        assert isinstance(link, SharedBreaker)
        assert link.leases == 0
        wait_for(lambda: _admits(lambda: busy.call_sync(int)), 3.0, "a probe of the replica with calls")
        assert busy.state is CircuitState.CLOSED
        wait_for(lambda: idle.peek_state() is CircuitState.CLOSED, 2.0, "the idle replica CLOSED")
        assert idle.get_stats()["total_requests"] == 0
    finally:
        idle_store.close()
        busy_store.close()


def _server_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _half_open_alone(
    redis_url: str, namespace: str, ttl: float, **options: object
) -> tuple[RedisStore, CircuitBreaker]:
    """A store and its breaker, tripped and published, the cluster's OPEN period over (Redis' clock)."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    # Three rounds of its thread (a wait and a round trip) to a lease, the shortest TTL it takes.
    store = RedisStore.from_url(
        redis_url, namespace=namespace, probe_lease_ttl=ttl, flush_interval=ttl / 6, timeout=ttl / 6
    )
    settings: dict[str, object] = {"failure_threshold": 1, "timeout": 0.05, **options}
    breaker = CircuitBreaker("db", CircuitBreakerConfig(store=store, **settings))  # type: ignore[arg-type]
    first_round(store)
    _fail(breaker)
    link = breaker._core._shared
    assert isinstance(link, SharedBreaker)
    wait_for(lambda: link.epoch > 0, 2.0, "the trip published")
    client = redis.Redis.from_url(redis_url)
    try:
        until = int(client.hget(f"{namespace}:cb:db:state", "until") or 0)
        wait_for(lambda: _server_ms(client) > until, 2.0, "the cluster's OPEN period over")
    finally:
        client.close()
    wait_for(lambda: breaker._core.retry_after() == 0.0, 2.0, "the local OPEN period over")
    return store, breaker


def test_a_replica_whose_probe_ran_takes_the_lease_again_only_for_a_call(redis_url: str) -> None:
    """After its probe, a replica making no call gives its lease up instead of taking it again as it expires.

    It took the lease again each time it expired, for as long as the breaker stayed HALF_OPEN:
    the replicas with calls had a chance only between its expiry and its next round.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    store, breaker = _half_open_alone(redis_url, "probed", 0.6, success_threshold=2)
    client = redis.Redis.from_url(redis_url)
    try:
        link = breaker._core._shared
        assert isinstance(link, SharedBreaker)
        assert not _admits(lambda: breaker.call_sync(int))  # HALF_OPEN, no lease yet: it asks for one
        wait_for(lambda: link.leases == 1, 2.0, "the lease taken for the call")
        assert _admits(lambda: breaker.call_sync(int))  # the probe: 1 success of 2
        assert breaker.state is CircuitState.HALF_OPEN
        wait_for(lambda: link.leases == 0, 3.0, "the lease given up, no call wanting it")
        wait_for(lambda: not client.keys("probed:cb:db:lease:*"), 3.0, "the lease gone from Redis")
        time.sleep(0.2)  # rounds of the store's thread: it takes the lease no more
        assert not client.keys("probed:cb:db:lease:*")
        assert (link.leases, breaker._core.settings.half_open_max_calls) == (0, 0)
    finally:
        client.close()
        store.close()


def test_a_replica_whose_probe_ran_gives_its_lease_up_in_redis_to_the_others_calls(redis_url: str) -> None:
    """After its probe, a replica with no more calls deletes its lease: another replica probes within rounds.

    It only let the lease expire, unrenewed: the other replicas rejected every call
    (``half_open_full``) until then, ``probe_lease_ttl`` (30 s here; measured 2.06 s with 2 s).
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    stores = [RedisStore.from_url(redis_url, namespace="given", probe_lease_ttl=30.0) for _ in range(2)]
    client = redis.Redis.from_url(redis_url)
    try:
        config = CircuitBreakerConfig(failure_threshold=1, timeout=0.2, success_threshold=2)
        with namesakes_expected():
            prober, other = (
                CircuitBreaker("db", dataclasses.replace(config, store=store)) for store in stores
            )
        for store in stores:
            first_round(store)
        prober.force_open(0.2)
        wait_for(_opened(prober, other), 2.0, "both OPEN")
        wait_for(lambda: prober._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        link = prober._core._shared
        assert isinstance(link, SharedBreaker)
        assert not _admits(lambda: prober.call_sync(int))  # HALF_OPEN, no lease yet: it asks for one
        wait_for(lambda: link.leases == 1, 3.0, "the lease taken for the call")
        assert _admits(lambda: prober.call_sync(int))  # its probe: 1 success of 2, then no more calls
        assert prober.state is CircuitState.HALF_OPEN
        wait_for(lambda: not client.keys("given:cb:db:lease:*"), 3.0, "the lease deleted in Redis")
        assert (link.leases, prober._core.settings.half_open_max_calls) == (0, 0)
        wait_for(lambda: other._core.retry_after() == 0.0, 2.0, "the end of the other's OPEN period")
        wait_for(lambda: _admits(lambda: other.call_sync(int)), 3.0, "a probe of the other replica")
        wait_for(
            lambda: prober.peek_state() is other.peek_state() is CircuitState.CLOSED,
            2.0,
            "the cluster's second probe success closes both",
        )
        assert other.get_stats()["total_requests"] >= 1
    finally:
        client.close()
        for store in stores:
            store.close()


def test_giving_leases_up_deletes_only_those_that_still_hold_the_givers_id(redis_url: str) -> None:
    """A lease that expired and another replica took since is that replica's: the give-up keeps it."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    client = redis.Redis.from_url(redis_url)
    try:
        client.set("cad:lease:7:1", "giver", px=30_000)
        client.set("cad:lease:7:2", "taker", px=30_000)
        assert client.eval(scripts.GIVE_UP_LEASES, 0, "cad:lease:7:", "giver", 3) == 1
        assert (client.get("cad:lease:7:1"), client.get("cad:lease:7:2")) == (None, b"taker")
    finally:
        client.close()


def test_a_call_rejected_for_want_of_a_lease_gets_the_next_probe_however_late(redis_url: str) -> None:
    """The lease taken for a rejected call is held (taken again as it expires) until a probe runs.

    A sparse caller (a call every minute, a lease TTL of seconds) would otherwise find it expired
    at each call and be rejected for good: the breaker would never close.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    ttl_ms = 600
    store, breaker = _half_open_alone(redis_url, "sparse", ttl_ms / 1000, success_threshold=1)
    client = redis.Redis.from_url(redis_url)
    try:
        link = breaker._core._shared
        assert isinstance(link, SharedBreaker)
        assert not _admits(lambda: breaker.call_sync(int))
        wait_for(lambda: link.leases == 1, 2.0, "the lease taken for the call")
        lease = f"sparse:cb:db:lease:{link.epoch}:1"
        taken = _server_ms(client)  # on Redis' clock, which expires the lease
        # No probe runs, so nothing renews the lease: held past its TTL, it was taken again.
        wait_for(
            lambda: _server_ms(client) > taken + 4 * ttl_ms and client.get(lease) == link._id.encode(),
            8.0,
            "the lease held four TTLs after it was taken",
        )
        assert _admits(lambda: breaker.call_sync(int))
        assert breaker.state is CircuitState.CLOSED
    finally:
        client.close()
        store.close()


def test_a_lease_held_for_a_lone_rejected_call_goes_to_the_replica_whose_calls_want_it(
    redis_url: str,
) -> None:
    """A replica whose only call was rejected gives its lease up once another replica's calls are rejected for it.

    It held the lease (taking it again as it expired) until a probe of its own ran, which without
    another call never came: the replica with the traffic rejected every call for as long as the
    lease lived (``probe_lease_ttl``, 30 s here), and again each time the idle one took it back.
    """
    stores = [RedisStore.from_url(redis_url, namespace="handover", probe_lease_ttl=30.0) for _ in range(2)]
    try:
        config = CircuitBreakerConfig(failure_threshold=1, timeout=0.2, success_threshold=1)
        with namesakes_expected():
            lone, busy = (CircuitBreaker("db", dataclasses.replace(config, store=store)) for store in stores)
        for store in stores:
            first_round(store)
        lone.force_open(0.2)
        wait_for(_opened(lone, busy), 2.0, "both OPEN")
        wait_for(lambda: lone._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        link = lone._core._shared
        assert isinstance(link, SharedBreaker)
        assert not _admits(lambda: lone.call_sync(int))  # its only call: rejected, it asks for the lease
        wait_for(lambda: link.leases == 1, 3.0, "the lease taken for that call")
        wait_for(lambda: busy._core.retry_after() == 0.0, 2.0, "the end of the other's OPEN period")
        wait_for(lambda: _admits(lambda: busy.call_sync(int)), 5.0, "a probe of the replica with calls")
        assert busy.state is CircuitState.CLOSED
        assert link.leases == 0
        wait_for(lambda: lone.peek_state() is CircuitState.CLOSED, 2.0, "the lone replica CLOSED")
        assert lone.get_stats()["total_requests"] == 1
    finally:
        for store in stores:
            store.close()


def test_a_forced_opening_of_an_open_breaker_reaches_the_others(replicas: Replica) -> None:
    """An OPEN breaker forced open again for longer is OPEN for longer on every replica.

    The others otherwise kept the earlier opening's end: they closed the cluster at it, and
    the replica an operator forced open followed them.
    """
    a, b = replicas(), replicas()
    a.force_open(5.0)
    wait_for(_opened(a, b), 2.0, "both OPEN")
    a.force_open(600.0)  # the operator wants it open for longer
    wait_for(lambda: b.get_stats()["retry_after"] > 500.0, 2.0, "the longer opening on b")
    assert a.state is b.state is CircuitState.OPEN


def _hang(breaker: CircuitBreaker, release: threading.Event, timeout: float = 3.0) -> threading.Thread:
    """Make calls through ``breaker`` until one is a probe that hangs (until ``release``), in a thread of its own."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        thread = threading.Thread(
            target=_admits, args=(lambda: breaker.call_sync(release.wait),), daemon=True
        )
        thread.start()
        while thread.is_alive() and not breaker.get_stats()["half_open_in_flight"]:
            time.sleep(0.005)
        if thread.is_alive():
            return thread
    message = f"no probe within {timeout} s"
    raise AssertionError(message)


def test_a_replica_takes_no_more_probe_leases_than_its_calls_want(redis_url: str) -> None:
    """A replica whose one call was rejected for want of a lease takes one lease, not every free one.

    It took all of ``half_open_max_calls`` (3 here) and, its one probe hanging on a slow dependency,
    renewed them all while it ran: the other replicas ran no probe (0 during 1 s of the hang, and
    none for as long as it hung), though the cluster allowed 2 more.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    stores = [RedisStore.from_url(redis_url, namespace="wants", probe_lease_ttl=30.0) for _ in range(4)]
    client = redis.Redis.from_url(redis_url)
    release = threading.Event()
    threads: list[threading.Thread] = []
    try:
        config = CircuitBreakerConfig(timeout=0.2, half_open_max_calls=3, success_threshold=3)
        with namesakes_expected():
            group = [CircuitBreaker("db", dataclasses.replace(config, store=store)) for store in stores]
        for store in stores:
            first_round(store)
        group[0].force_open(0.2)
        wait_for(_opened(*group), 2.0, "all OPEN")
        first, *others, last = group
        _want_probes(first)
        wait_for(lambda: first._core.settings.half_open_max_calls > 0, 3.0, "a lease for its call")
        threads.append(_hang(first, release))  # its one probe: the dependency hangs
        for breaker in others:  # each replica with calls probes beside it, within rounds
            wait_for(lambda b=breaker: b._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
            threads.append(_hang(breaker, release))
        owners = [client.get(key) for key in client.keys("wants:cb:db:lease:*")]
        assert sorted(owners) == sorted(
            link._id.encode() for link in (b._core._shared for b in (first, *others)) if link is not None
        )
        _want_probes(last)  # the cluster's 3 probe places are taken: the fourth replica waits
        for _ in range(3):
            time.sleep(0.1)
            assert not _admits(lambda: last.call_sync(int))
        assert sum(b.get_stats()["half_open_in_flight"] for b in group) == 3
        release.set()
        wait_for(
            lambda: all(b.peek_state() is CircuitState.CLOSED for b in group), 3.0, "3 successes close all"
        )
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=2.0)
        client.close()
        for store in stores:
            store.close()


def test_take_leases_holds_as_many_as_asked_for_and_gives_up_the_rest(redis_url: str) -> None:
    """``TAKE_LEASES`` takes free leases up to the number asked for, and deletes its own beyond it."""
    import redis  # noqa: PLC0415 - the redis extra, here only

    client = redis.Redis.from_url(redis_url)
    keys = ["tl:state", "tl:probes:7", "tl:wants:7", "tl:slowprobes:7"]

    def take(owner: str, wanted: int) -> int:
        argv = ["tl:lease:7:", owner, 30_000, 3, 0, 0, 60_000, 0, 0, 0, wanted]
        held: int = client.eval(scripts.TAKE_LEASES, len(keys), *keys, *argv)[0]
        return held

    def owners() -> list[bytes | None]:
        return [client.get(f"tl:lease:7:{i}") for i in (1, 2, 3)]

    try:
        assert take("a", 1) == 1
        assert owners() == [b"a", None, None]
        assert take("b", 3) == 2  # two free
        assert owners() == [b"a", b"b", b"b"]
        assert take("b", 1) == 1  # one of its own kept, the other given up
        assert owners() == [b"a", b"b", None]
        assert take("a", 2) == 2
        assert owners() == [b"a", b"b", b"a"]
    finally:
        client.close()


def test_a_replica_that_waits_for_its_store_to_sync_sends_nothing_to_an_isolated_dependency(
    redis_url: str,
) -> None:
    """``wait_synced`` returns once the store read each shared breaker's cluster state: an operator's opening.

    A replica's calls never wait on Redis: one that started while an operator's ``force_open``
    was in force cluster-wide sent its first calls (3, in its first 7-27 ms) to the isolated
    dependency. Waiting for its store before serving, it sends none.
    """
    operator = RedisStore.from_url(redis_url, namespace="startup")
    late = RedisStore.from_url(redis_url, namespace="startup")
    try:
        with namesakes_expected():
            isolated = CircuitBreaker("db", CircuitBreakerConfig(store=operator))
            first_round(operator)
            isolated.force_open(600.0, reason="isolated")
            wait_for(lambda: isolated._core._shared.epoch > 0, 2.0, "the opening published")  # type: ignore[union-attr]
            breaker = CircuitBreaker("db", CircuitBreakerConfig(store=late))
        assert late.wait_synced(5.0) is True
        sent: list[int] = []
        for _ in range(20):
            _admits(lambda: breaker.call_sync(lambda: sent.append(1)))
        assert sent == []
        assert breaker.state is CircuitState.OPEN
        with namesakes_expected():  # a breaker made later is read before the store is in sync again
            keyed = CircuitBreaker("db", CircuitBreakerConfig(store=late))
        assert late.wait_synced(5.0) is True
        assert keyed.state is CircuitState.OPEN
    finally:
        late.close()
        operator.close()


async def test_a_coroutine_waits_for_the_store_to_sync_without_blocking_its_loop(
    redis_url: str, proxy: TcpFaultProxy
) -> None:
    """``wait_synced_async`` is ``wait_synced`` for an async start-up: the event loop runs on meanwhile.

    The late replica reaches Redis through the fault proxy, 50 ms each way, so that its store is
    not in sync yet when the wait starts (on a fast path it could be, and the wait would not
    suspend at all).
    """
    operator = RedisStore.from_url(redis_url, namespace="startup_async")
    proxy.set("delay", 0.05)
    late = RedisStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", namespace="startup_async", timeout=1.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    running = asyncio.create_task(ticker())
    try:
        with namesakes_expected():
            isolated = CircuitBreaker("db", CircuitBreakerConfig(store=operator))
            first_round(operator)
            isolated.force_open(600.0)
            wait_for(lambda: isolated._core._shared.epoch > 0, 2.0, "the opening published")  # type: ignore[union-attr]
            breaker = CircuitBreaker("db", CircuitBreakerConfig(store=late))
        seen = ticks
        assert await late.wait_synced_async(5.0) is True
        assert ticks > seen  # the loop ran while it waited
        assert breaker.state is CircuitState.OPEN
    finally:
        running.cancel()
        late.close()
        operator.close()


def test_waiting_for_an_unreachable_store_to_sync_returns_false_within_the_timeout() -> None:
    """No Redis: ``wait_synced`` returns ``False`` once its timeout passed, raising nothing; a closed store at once."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="nowhere", timeout=0.1)
    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(store=store))
        started = time.monotonic()
        assert store.wait_synced(0.5) is False
        assert 0.5 <= time.monotonic() - started < 5.0  # generous: the machine is shared
        assert breaker.call_sync(int) == 0  # the breaker works on its own meanwhile
        assert asyncio.run(store.wait_synced_async(0.2)) is False
    finally:
        store.close()
    started = time.monotonic()
    assert store.wait_synced(30.0) is False  # closed: it never syncs, and returns at once
    assert time.monotonic() - started < 5.0
    closing = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="nowhere", timeout=0.1)
    with namesakes_expected():
        kept = CircuitBreaker("db", CircuitBreakerConfig(store=closing))
    closer = threading.Timer(0.2, closing.close)
    closer.start()
    started = time.monotonic()
    assert closing.wait_synced(60.0) is False  # closed while it waited: it returns then
    assert time.monotonic() - started < 10.0
    closer.join()
    assert kept.call_sync(int) == 0


def test_wait_synced_refuses_a_timeout_that_is_no_duration(redis_url: str) -> None:
    """A negative, infinite or non-numeric ``timeout`` is refused, naming it; a store with no breaker is in sync."""
    store = RedisStore.from_url(redis_url, namespace="bad_wait")
    try:
        for bad, error in ((-1.0, ValueError), (math.inf, ValueError), ("1", TypeError), (None, TypeError)):
            with pytest.raises(error, match="timeout"):
                store.wait_synced(bad)  # type: ignore[arg-type]
            with pytest.raises(error, match="timeout"):
                asyncio.run(store.wait_synced_async(bad))  # type: ignore[arg-type]
        assert store.wait_synced(0.0) is True  # no breaker to read: a rate limiter asks at each permit
    finally:
        store.close()


def test_a_replica_gives_up_the_leases_its_gone_calls_took_once_one_probe_of_it_runs(redis_url: str) -> None:
    """Leases taken for 3 rejected calls: once one probe of the replica runs (and hangs), it keeps that one.

    The other two went on being held, renewed with the probe, for calls that were gone: the
    other replica's calls were rejected for as long as the probe hung.
    """
    stores = [RedisStore.from_url(redis_url, namespace="gone", probe_lease_ttl=30.0) for _ in range(2)]
    release = threading.Event()
    threads: list[threading.Thread] = []
    try:
        config = CircuitBreakerConfig(timeout=0.2, half_open_max_calls=3, success_threshold=2)
        with namesakes_expected():
            holder, other = (
                CircuitBreaker("db", dataclasses.replace(config, store=store)) for store in stores
            )
        for store in stores:
            first_round(store)
        holder.force_open(0.2)
        wait_for(_opened(holder, other), 2.0, "both OPEN")
        wait_for(lambda: holder._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        for _ in range(3):  # three calls, gone once rejected: each wants a lease
            assert not _admits(lambda: holder.call_sync(int))
        link = holder._core._shared
        assert isinstance(link, SharedBreaker)
        wait_for(lambda: link.leases == 3, 3.0, "a lease for each rejected call")
        threads.append(_hang(holder, release))  # one more call: its probe hangs
        wait_for(lambda: link.leases == 1, 3.0, "the leases of the gone calls given up")
        wait_for(lambda: other._core.retry_after() == 0.0, 2.0, "the end of the other's OPEN period")
        threads.append(_hang(other, release))  # the other replica probes beside it
        release.set()
        wait_for(lambda: holder.peek_state() is other.peek_state() is CircuitState.CLOSED, 3.0, "both CLOSED")
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=2.0)
        for store in stores:
            store.close()


def test_a_replica_that_joins_after_the_server_lost_the_state_counts_with_the_others(
    redis_url: str, replicas: Replica
) -> None:
    """A replica started once the state was lost (a restart, or ``key_ttl`` after the last change) sums its failures with the others'.

    The replicas running since the last period kept reporting their counts under that period's
    epoch, and the one that joined under none (0): each counted apart, so that the cluster's
    ``failure_threshold`` (3) met by 1 failure of the old replica and 2 of the new one opened nothing.
    """
    a = replicas(namespace="late-counts", resync_interval=0.2)
    b = replicas(namespace="late-counts", resync_interval=0.2)
    _open_and_close(a, b)
    _lose_state(redis_url, "late-counts")
    late = replicas(namespace="late-counts", resync_interval=0.2)
    time.sleep(0.6)  # resyncs of every replica since the loss
    _fail(a)
    wait_for(_reported(a), 2.0, "a's failure in the store")
    _fail(late)
    _fail(late)
    wait_for(_opened(a, b, late), 3.0, "every replica OPEN on the cluster's 3 failures")


def test_the_probe_keys_of_a_period_go_with_it_not_a_day_later(redis_url: str) -> None:
    """Each period's probe successes and wants are deleted when the next period is published.

    They lived ``key_ttl`` (a day) after their last write, read by no one once their period was
    over: a breaker that broke and recovered every minute left 3 hashes a period, 4 320 a day,
    and a keyed policy's thousands of tenants as many each (3 periods here left 3 of each).
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    store = RedisStore.from_url(redis_url, namespace="period-keys", flush_interval=0.02)
    client = redis.Redis.from_url(redis_url)
    try:
        breaker = CircuitBreaker(
            "db",
            CircuitBreakerConfig(store=store, failure_threshold=1, success_threshold=2, timeout=0.05),
        )
        first_round(store)
        for _ in range(3):
            _fail(breaker)
            _want_probes(breaker)
            probe = lambda: _admits(lambda: breaker.call_sync(int))  # noqa: E731 - a call wanting a lease
            wait_for(probe, 3.0, "a probe on a lease")  # 1 of 2: reported in the store's next round
            period = f"period-keys:cb:db:probes:{breaker._core._shared.epoch}"  # type: ignore[union-attr]
            wait_for(lambda p=period: client.exists(p) == 1, 3.0, "the success reported")
            wait_for(probe, 3.0, "a second probe on a lease")
            assert breaker.state is CircuitState.CLOSED
            epoch = breaker._core._shared.epoch  # type: ignore[union-attr]
            wait_for(lambda e=epoch: breaker._core._shared.epoch > e, 3.0, "the closing published")  # type: ignore[union-attr]
        left = [
            key
            for kind in ("probes", "slowprobes", "wants")
            for key in client.keys(f"period-keys:cb:db:{kind}:*")
        ]
        assert left == []
    finally:
        client.close()
        store.close()


def test_two_databases_of_one_server_never_share_a_breaker(redis_url: str, replicas: Replica) -> None:
    """A store on database 1 keeps its transitions from a store of the same namespace on database 0.

    Redis' pub/sub is the server's, whatever the database: a trip of staging's breaker (``/1``)
    opened production's (``/0``) through the channel both listened on, and production's replica
    then founded that OPEN again in its own database at its next read.
    """
    assert redis_url.endswith("/0")
    other = RedisStore.from_url(f"{redis_url[:-2]}/1", namespace="svc")
    try:
        with namesakes_expected():
            staging = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=3, store=other))
        first_round(other)
        production, witness = replicas("db"), replicas("db")
        production.force_open(30.0)  # heard by its own database's replicas
        wait_for(lambda: witness.state is CircuitState.OPEN, 2.0, "production's trip on production")
        production.reset()
        wait_for(lambda: witness.state is CircuitState.CLOSED, 2.0, "production's reset on production")
        staging.force_open(30.0)
        wait_for(lambda: staging._core._shared.epoch > 0, 2.0, "staging's trip published")  # type: ignore[union-attr]
        time.sleep(0.5)
        assert production.state is witness.state is CircuitState.CLOSED
        assert other.channel != production.config.store.channel  # type: ignore[union-attr]
    finally:
        other.close()


def test_a_key_evicted_while_it_held_failures_comes_back_fresh(redis_url: str) -> None:
    """An evicted key's breaker takes its counts out of the cluster: the key comes back fresh, as without a store.

    Its report stayed in Redis a minute, summed as another replica's streak with the breaker its
    key came back with, whose own success could not reset it: 2 failures, an eviction
    (``idle_ttl``), a success and 1 failure opened a ``failure_threshold`` of 3, with one replica.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    store = RedisStore.from_url(redis_url, namespace="evicted", flush_interval=0.02)
    client = redis.Redis.from_url(redis_url)
    try:
        handle = ResilienceManager().policy(
            "tenants",
            ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, store=store)),
            max_keys=1,
            idle_ttl=0.2,
        )

        def boom() -> None:
            raise RuntimeError("down")

        def breaker() -> CircuitBreaker:
            found = handle.for_key("a").circuit_breaker
            assert found is not None
            return found

        for _ in range(2):
            with pytest.raises(RuntimeError):
                handle.for_key("a").execute_sync(boom)
        wait_for(_reported(breaker()), 2.0, "a's failures in the store")
        time.sleep(0.3)  # idle_ttl: the next call evicts it
        assert handle.for_key("b").execute_sync(int) == 0
        wait_for(lambda: not client.hlen("evicted:cb:tenants:a:counts:0"), 2.0, "a's report deleted")
        assert handle.for_key("a").execute_sync(int) == 0
        wait_for(_reported(breaker()), 2.0, "the new breaker's success reported")
        with pytest.raises(RuntimeError):
            handle.for_key("a").execute_sync(boom)
        wait_for(_reported(breaker()), 2.0, "its failure reported")
        assert breaker().state is CircuitState.CLOSED  # 1 failure since a success
    finally:
        client.close()
        store.close()


def test_a_publication_answered_before_a_later_transition_reached_its_store_keeps_the_later_state(
    replicas: Replica, redis_url: str
) -> None:
    """The reply to a transition does not undo a later one of its replica whose delivery is still under way.

    A breaker's changes are told to its store by its state change callbacks, outside its lock, in
    the order made: while another thread delivers an earlier change (here held in a watcher of
    its own), a later one is made but not yet queued. The reply to the earlier one's publication
    then took its state back: the replica, reset by its operator, went OPEN again (a transition
    no one made) until the reset was published and taken in turn.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    a = replicas(resync_interval=60.0)
    link = _link(a)
    store = link._store
    # Its first read of every breaker's state made: the next is a minute away (a read of the
    # cluster's state, which is the force_open's, meanwhile would take it too, a case apart).
    wait_for(store._synced.is_set, 5.0, "the store's first read")
    release = threading.Event()
    held = threading.Event()

    def watcher(change: StateChanged) -> None:
        if change.new == "open" and not held.is_set():
            held.set()
            release.wait(10.0)

    a.on_state_change(watcher)
    server = redis.Redis.from_url(redis_url)
    opener = threading.Thread(target=a.force_open)
    try:
        with link._lock:  # the store's thread takes the force_open, then waits for the lock to publish it
            opener.start()
            assert held.wait(5.0)
            wait_for(lambda: not store._queued(link), 5.0, "force_open taken for publishing")
            a.reset()  # made; told to the store once the opener's delivery is over
            assert a.state is CircuitState.CLOSED
        wait_for(lambda: server.hget("svc:cb:db:state", "state") == b"open", 5.0, "force_open published")
        with link._lock:  # its reply taken
            assert a.state is CircuitState.CLOSED
        release.set()  # the reset told to the store, and published
        opener.join(10.0)
        wait_for(lambda: server.hget("svc:cb:db:state", "state") == b"closed", 5.0, "reset published")
        with link._lock:  # its reply taken
            assert a.state is CircuitState.CLOSED
    finally:
        release.set()
        opener.join(10.0)
        server.close()
