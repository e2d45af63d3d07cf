"""A shared store under the failures operators meet: slow links, refused writes, refused subscriptions, close.

Each replica is a store of its own on the session's real redis-server (some behind the fault
proxy); the assertions are the documented promises: no call waits longer than ``timeout``, one
outage is one warning and one count, a store that says it is back listens again, a store closed
under calls in flight is no outage, and a store with many breakers still publishes a trip at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from loops_support import NEW_LOOPS
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_support import RedisServer, free_port
from shared_workers import first_round, wait_for
from support import collect_quietly
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
from otel_resilience.engine.registry import namesakes_expected
from otel_resilience.patterns.circuit_breaker import shared as shared_rules
from otel_resilience.store import deadlines as deadlines_module
from otel_resilience.store import redis_store as redis_store_module
from otel_resilience.store.breaker import SharedBreaker
from otel_resilience.store.scripts import PUBLISH_STATE
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.store_observables import STORE_CALLBACKS

UNREACHABLE = "unreachable"
BACK = "reachable again"


@pytest.fixture
def control(redis_server: RedisServer, redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the session's server, to change its configuration (restored afterwards)."""
    assert redis_url
    client = redis.Redis(port=redis_server.port)
    yield client
    client.config_set("maxmemory", "0")
    client.close()


def _via(proxy: TcpFaultProxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0"


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def _rejected(breaker: CircuitBreaker) -> None:
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(int)


def _leases(breaker: CircuitBreaker) -> int:
    link = breaker._core._shared
    assert isinstance(link, SharedBreaker)
    return link.leases


def _fail(breaker: CircuitBreaker) -> None:
    def boom() -> None:
        raise RuntimeError("down")

    with contextlib.suppress(RuntimeError):
        breaker.call_sync(boom)


def test_a_permit_asked_on_a_new_connection_waits_at_most_the_timeout(proxy: TcpFaultProxy) -> None:
    """Redis answers in 0.6 s, under the 1 s timeout: a permit that must open a connection still waits <= 1 s.

    Connecting and the handshake (``HELLO``, ``CLIENT SETINFO``) are round trips of their own:
    each bounded by the timeout alone, the first permit of a new connection waited 3 of them
    (1.8 s); the timeout bounds the operation as a whole, as on the async path. The margins
    (0.4 s to the timeout for a round trip, 0.4 s on each side of the bound) hold on a loaded
    machine.
    """
    store = RedisStore.from_url(_via(proxy), namespace="deadline", timeout=1.0)
    try:
        limiter = RateLimiter("api", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        assert limiter.try_acquire()
        proxy.set("delay", 0.3)  # each way: a round trip takes 0.6 s
        started = time.monotonic()
        assert limiter.try_acquire()  # a connection already open: one round trip, in time
        warm = time.monotonic() - started
        assert not store.degraded
        store._client.connection_pool.disconnect()  # the next permit opens a new connection
        started = time.monotonic()
        assert limiter.try_acquire()  # the fallback admits it if the cluster could not in time
        fresh = time.monotonic() - started
        print(f"permit on an open connection {warm:.3f} s, on a new one {fresh:.3f} s (timeout 1 s)")
        assert fresh < 1.4  # not the 1.8 s of three round trips
    finally:
        store.close()


def test_a_permit_asked_while_the_resolver_hangs_waits_at_most_the_timeout(
    redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's host name takes 5 s to resolve (a DNS server gone): a permit still waits <= the timeout.

    A connection's socket timeouts bound its TCP connection and its round trips, not the name's
    lookup (``getaddrinfo`` has no timeout): a permit that had to open a connection waited for
    the resolver (2 s with a resolver answering in 2 s, the timeout 0.25 s). The fallback
    admits it; the store is degraded. The bound (2 s for a 0.25 s timeout) holds on a loaded machine.
    """
    assert redis_url
    resolved = socket.getaddrinfo
    answer = threading.Event()

    def slow_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "redis.slow-resolver.test":
            answer.wait(5.0)  # every lookup of the name waits until the test lets them answer
            host = "127.0.0.1"
        return resolved(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
    answer.set()  # at once, for now
    store = RedisStore.from_url(f"redis://redis.slow-resolver.test:{redis_server.port}/0", timeout=0.25)
    try:
        limiter = RateLimiter("api", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        assert limiter.try_acquire()  # connected, and the subscriber too
        assert not store.degraded
        answer.clear()
        store._client.connection_pool.disconnect()  # the next permit opens a new connection
        started = time.monotonic()
        assert limiter.try_acquire()  # the fallback admits it
        waited = time.monotonic() - started
        assert waited < 2.0
        assert store.degraded
    finally:
        answer.set()
        store.close()


def test_a_resolver_that_hangs_leaves_a_bounded_number_of_connecting_threads(
    redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the host's name does not resolve, the tries to connect leave at most a few threads behind.

    Each connection is made in a thread its caller stops waiting for after the timeout; with no
    cap, every try of every permit and of the store's threads (each ``flush_interval``) left one
    more thread in the lookup for as long as the resolver hung. Past
    ``MAX_ABANDONED_CONNECTIONS`` a connection fails at once; once the resolver answers, the
    threads end and connections are made again.
    """
    assert redis_url
    resolved = socket.getaddrinfo
    answer = threading.Event()

    def hanging_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "redis.hanging-resolver.test":
            answer.wait(30.0)
            host = "127.0.0.1"
        return resolved(host, *args, **kwargs)

    def connecting() -> int:
        return sum(thread.name == "otel_resilience store connection" for thread in threading.enumerate())

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)
    answer.set()
    url = f"redis://redis.hanging-resolver.test:{redis_server.port}/0"
    store = RedisStore.from_url(url, namespace="resolver-cap", timeout=0.05)
    try:
        limiter = RateLimiter("capped", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        assert limiter.try_acquire()
        answer.clear()
        store._client.connection_pool.disconnect()
        most = 0
        for _ in range(120):  # 120 permits over 2.4 s, each of which may try a new connection
            assert limiter.try_acquire()  # the fallback admits them
            most = max(most, connecting())
            time.sleep(0.02)
        assert store.degraded
        # A few more than the cap at most: the count is read without a lock (a hint), and the
        # store's two threads may each be starting one.
        assert most <= deadlines_module.MAX_ABANDONED_CONNECTIONS + 3, most
    finally:
        answer.set()
    try:
        wait_for(lambda: connecting() == 0, 10.0, "the connecting threads ended once the name resolved")
        assert deadlines_module._ABANDONED.count == 0
        wait_for(lambda: limiter.try_acquire() and not store.degraded, 10.0, "the store connected again")
    finally:
        store.close()


@pytest.mark.parametrize(
    "option", ["socket_timeout=5", "socket_connect_timeout=5", "timeout=5", "max_connections=500", "retry=3"]
)
def test_a_url_setting_a_bound_the_store_sets_itself_is_refused_naming_url(
    proxy: TcpFaultProxy, option: str
) -> None:
    """``?socket_timeout=`` and the other bounds the store sets from its arguments: a ``ValueError`` naming ``url``.

    redis-py lets a URL's query win over the store's own options: with ``?socket_timeout=5`` the
    subscriber and the store's thread waited 5 s on a silent server while ``timeout`` said 0.2 s;
    ``?max_connections=`` changed a pool that the store's ``max_connections`` still named,
    ``?timeout=`` made every subscription raise a ``TypeError``, and ``?retry=`` replaced the
    clients' retry policy by a string. The password stays hidden.
    """
    name = option.partition("=")[0]
    url = f"redis://:secret@127.0.0.1:{proxy.port}/0?{option}"
    expected = rf"RedisStore\.from_url\.url must be a Redis URL without \?{name}="
    with pytest.raises(ValueError, match=expected) as raised:
        RedisStore.from_url(url, timeout=0.2)
    assert "secret" not in str(raised.value)


async def test_every_client_the_store_makes_gives_up_on_a_silent_server_within_its_timeout(
    proxy: TcpFaultProxy,
) -> None:
    """The operations' client (outside a permit), the subscriber's and a loop's: each waits about ``timeout``.

    The server takes the connections and answers nothing (the proxy drops every byte): each
    client's first command (its handshake on a new connection) fails after its socket timeout,
    the store's ``timeout`` (0.3 s), never a longer one. The 2 s bound is far from both.
    """
    proxy.set("drop")
    store = RedisStore.from_url(f"{_via(proxy)}?health_check_interval=0", namespace="bounds", timeout=0.3)
    try:
        async_client = await store._async_clients.client()
        for name, call in (
            ("operations", store._client.ping),
            ("subscriber", store._sub_client.ping),
        ):
            started = time.monotonic()
            with pytest.raises(redis.TimeoutError):
                call()
            took = time.monotonic() - started
            print(f"{name} client gave up after {took:.3f} s")
            assert took < 2.0
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await async_client.ping()
        took = time.monotonic() - started
        print(f"async client gave up after {took:.3f} s")
        assert took < 2.0
    finally:
        store.close()


def test_a_server_refusing_writes_is_one_outage_until_it_takes_them_again(
    control: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of memory (as read-only after a failover): the store stays degraded, one warning, one outage.

    Reads and PING still answer, so a store that came back on them was back for one round and
    failed again at its next write: an outage and two warnings a round, for as long as it lasted.
    """
    store = RedisStore.from_url(redis_url, namespace="oom", flush_interval=0.02)
    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1000, store=store))
        limiter = RateLimiter("api", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        first_round(store)
        control.config_set("maxmemory-policy", "noeviction")
        control.config_set("maxmemory", "1")
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                _fail(breaker)
                assert limiter.try_acquire()  # store_fallback="open"
                time.sleep(0.02)
            assert store.degraded
            assert store.outages == 1
            assert _messages(caplog, UNREACHABLE) == 1
            assert _messages(caplog, BACK) == 0
            control.config_set("maxmemory", "0")
            # The store is marked back before it logs so: wait for both.
            wait_for(
                lambda: not store.degraded and _messages(caplog, BACK) > 0,
                8.0,
                "the store back once Redis takes writes",
            )
        assert store.outages == 1
        assert _messages(caplog, BACK) == 1
    finally:
        store.close()


def _probes_admitted(*breakers: CircuitBreaker) -> int:
    """Once each one's OPEN period is over, make a call through each: how many ran (as probes)."""
    ran = 0
    for breaker in breakers:
        wait_for(lambda b=breaker: b._core.retry_after() == 0.0, 5.0, "the end of the OPEN period")
        with contextlib.suppress(CircuitOpenError):
            breaker.call_sync(int)
            ran += 1
    return ran


def test_a_period_open_across_an_outage_is_probed_on_leases_once_the_store_is_back(
    control: redis.Redis, redis_url: str
) -> None:
    """Both replicas OPEN through an outage that keeps their subscriptions (out of memory): no probe without a lease.

    The round that finds Redis again reads every breaker's state before the store says it is
    back: each breaker took that state with the probe limit of a breaker on its own
    (``half_open_max_calls``) and kept it once the store was back, until the next resync
    (``resync_interval``; at once only when a subscriber connecting again asked for one): when
    the period ended, each replica probed without a lease, one probe per replica.
    """
    stores = [RedisStore.from_url(redis_url, namespace="across", resync_interval=60.0) for _ in range(2)]
    try:
        with namesakes_expected():
            a, b = (
                CircuitBreaker("db", CircuitBreakerConfig(success_threshold=1, store=store))
                for store in stores
            )
        limiter = RateLimiter("api", RateLimiterConfig(rate=1000.0, burst=100, store=stores[0]))
        for store in stores:
            first_round(store)
        a.force_open(1.5)
        wait_for(lambda: a.state is b.state is CircuitState.OPEN, 2.0, "both OPEN")
        control.config_set("maxmemory-policy", "noeviction")
        control.config_set("maxmemory", "1")
        assert limiter.try_acquire()  # refused for want of memory: an outage, the fallback admits
        assert stores[0].degraded
        control.config_set("maxmemory", "0")
        wait_for(lambda: limiter.try_acquire() and not stores[0].degraded, 5.0, "the store back")
        assert _probes_admitted(a, b) == 0  # a probe runs on a lease only, which no replica held
        wait_for(
            lambda: a._core.settings.half_open_max_calls + b._core.settings.half_open_max_calls == 1,
            3.0,
            "one lease for the two replicas' calls",
        )
    finally:
        for store in stores:
            store.close()


def test_an_outage_found_while_a_breaker_is_being_shared_leaves_it_probing_on_its_own(
    proxy: TcpFaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread finds Redis gone just as a breaker is shared: that breaker probes on its own meanwhile.

    The store read whether it was reachable, then listed the breaker: an outage found in between
    made every listed breaker local, but not this one, whose probe limit stayed 0 (no lease) for
    the whole outage, so that once HALF_OPEN it rejected every call until Redis was back. A
    probe limit applied by one thread while another finds the store down is the local one.
    """
    store = RedisStore.from_url(_via(proxy), namespace="racing", timeout=0.2)
    try:
        RateLimiter("api", RateLimiterConfig(rate=10.0, store=store))  # starts the store's threads
        wait_for(lambda: _subscribed(_via(proxy), "racing:events", 1), 5.0, "the subscription")
        real = shared_rules.set_probe_limit

        def outage_meanwhile(core: Any, by: Any, probes: int) -> None:
            monkeypatch.setattr(shared_rules, "set_probe_limit", real)  # once
            proxy.set("drop")  # Redis gone: the store's thread cannot reach it again
            store.failed(ConnectionError("found by another thread"))
            real(core, by, probes)

        monkeypatch.setattr(shared_rules, "set_probe_limit", outage_meanwhile)
        config = CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=0.05, store=store)
        breaker = CircuitBreaker("db", config)
        assert store.degraded
        _fail(breaker)
        assert breaker.state is CircuitState.OPEN
        wait_for(lambda: breaker._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        assert breaker.call_sync(int) == 0  # its local probe
        assert breaker.state is CircuitState.CLOSED
    finally:
        store.close()


def test_leases_whose_give_up_meets_an_outage_expire_and_no_error_reaches_a_call(
    proxy: TcpFaultProxy,
    control: redis.Redis,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis gone as a replica gives its lease up: an outage of its store, and the lease expires.

    Nothing is raised to a call or logged as a failure of the store's thread; the replica runs
    on its own meanwhile, and another replica probes once the lease expired
    (``probe_lease_ttl``), as after a crashed prober.
    """
    prober_store = RedisStore.from_url(_via(proxy), namespace="giving", probe_lease_ttl=1.0, timeout=0.2)
    other_store = RedisStore.from_url(redis_url, namespace="giving", probe_lease_ttl=1.0, timeout=0.2)
    real = SharedBreaker._hold_at_most

    def outage_meanwhile(link: SharedBreaker, breaker: CircuitBreaker, wanted: int) -> int:
        kept = real(link, breaker, wanted)
        if not kept:
            proxy.set("drop")  # Redis gone between the give-up's decision and its round trip
        return kept

    try:
        config = CircuitBreakerConfig(failure_threshold=1, timeout=0.2, success_threshold=2)
        with namesakes_expected():
            prober = CircuitBreaker("db", dataclasses.replace(config, store=prober_store))
            other = CircuitBreaker("db", dataclasses.replace(config, store=other_store))
        first_round(prober_store)
        first_round(other_store)
        prober.force_open(0.2)
        wait_for(lambda: prober.state is other.state is CircuitState.OPEN, 2.0, "both OPEN")
        wait_for(lambda: prober._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        _rejected(prober)  # HALF_OPEN, no lease yet: it asks for one
        wait_for(lambda: _leases(prober) == 1, 3.0, "the lease taken for the call")
        lease = f"giving:cb:db:lease:{prober._core._shared.epoch}:1"  # type: ignore[union-attr]
        monkeypatch.setattr(SharedBreaker, "_hold_at_most", outage_meanwhile)
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            assert prober.call_sync(int) == 0  # its probe: 1 success of 2, then no more calls
            wait_for(lambda: prober_store.degraded, 5.0, "the give-up's outage")
            assert control.get(lease) is not None  # not given up: it expires
            wait_for(lambda: control.get(lease) is None, 3.0, "the lease expired")
            assert (prober_store.outages, _messages(caplog, UNREACHABLE)) == (1, 1)
            assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert prober._core.settings.half_open_max_calls == config.half_open_max_calls  # on its own
        wait_for(lambda: other._core.retry_after() == 0.0, 2.0, "the end of the other's OPEN period")
        wait_for(lambda: _admits(other), 5.0, "a probe of the other replica once the lease expired")
    finally:
        proxy.set("pass")
        prober_store.close()
        other_store.close()


def _shortest_lease_ttl(**options: float) -> float:
    """The shortest ``probe_lease_ttl`` (a multiple of 0.1 s) that ``from_url`` takes beside ``options``."""
    for tenths in range(1, 100):
        try:
            RedisStore.from_url(
                f"redis://127.0.0.1:{free_port()}/0", probe_lease_ttl=tenths / 10, **options
            ).close()
        except ValueError:
            continue
        return tenths / 10
    raise AssertionError(options)


def test_the_shortest_lease_taken_outlives_a_probe_whose_holders_round_trips_take_most_of_the_timeout(
    proxy: TcpFaultProxy, redis_url: str
) -> None:
    """A holder whose round trips are slow but within ``timeout`` (no outage) keeps its lease while it probes.

    It renews the lease in the rounds of its store's thread: each waits ``flush_interval``, then
    makes its round trips, each up to ``timeout`` before the store counts an outage. A TTL of 3
    ``flush_interval``s (0.3 s) was taken beside a 1 s ``timeout``: with round trips of 0.3 s
    the lease expired between two renewals, and the other replica took it and probed too (2
    probes at once with ``half_open_max_calls=1``; its calls then ran, 58 of them, the breaker
    closed by its probe while the holder's still ran).
    """
    flush, timeout = 0.1, 1.0
    ttl = _shortest_lease_ttl(flush_interval=flush, timeout=timeout)
    options = {"namespace": "slow-lease", "probe_lease_ttl": ttl, "flush_interval": flush, "timeout": timeout}
    holder_store = RedisStore.from_url(_via(proxy), **options)  # type: ignore[arg-type]
    other_store = RedisStore.from_url(redis_url, **options)  # type: ignore[arg-type]
    probing, release = threading.Event(), threading.Event()

    def probe() -> None:
        probing.set()
        release.wait(30.0)

    try:
        config = CircuitBreakerConfig(failure_threshold=1, timeout=0.2, success_threshold=1)
        with namesakes_expected():
            holder = CircuitBreaker("db", dataclasses.replace(config, store=holder_store))
            other = CircuitBreaker("db", dataclasses.replace(config, store=other_store))
        first_round(holder_store)
        first_round(other_store)
        holder.force_open(0.2)
        wait_for(lambda: holder.state is other.state is CircuitState.OPEN, 2.0, "both OPEN")
        wait_for(lambda: holder._core.retry_after() == 0.0, 2.0, "the end of the OPEN period")
        _rejected(holder)  # HALF_OPEN, no lease yet: it asks for one
        wait_for(lambda: _leases(holder) == 1, 3.0, "the lease taken for the call")
        prober = threading.Thread(target=holder.call_sync, args=(probe,), daemon=True)
        prober.start()
        assert probing.wait(5.0)
        proxy.set("delay", 0.15)  # each way: round trips of 0.3 s, well within the 1 s timeout
        watched = time.monotonic() + ttl + 1.5  # a lease not renewed in time has expired by then
        admitted = 0
        while time.monotonic() < watched:
            admitted += _admits(other)
            time.sleep(0.02)
        assert (holder_store.outages, holder_store.degraded) == (0, False)  # slow, never away
        assert admitted == 0, f"the other replica ran {admitted} calls while the holder probed (TTL {ttl} s)"
        release.set()
        prober.join(5.0)
    finally:
        release.set()
        proxy.set("pass")
        holder_store.close()
        other_store.close()


def _admits(breaker: CircuitBreaker) -> bool:
    """Whether a call through ``breaker`` ran (``False``: rejected)."""
    try:
        breaker.call_sync(int)
    except CircuitOpenError:
        return False
    return True


def test_an_outage_a_permit_meets_during_the_stores_round_is_not_ended_by_that_round(
    control: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's permit refused (out of memory) while the store's thread is in a round that had
    nothing to write before it ended: the store stays degraded until its probe writes again.

    The round ended by calling the store back (it had not failed itself), so one outage was two,
    with a "reachable again" between them, while Redis refused every write.
    """
    store = RedisStore.from_url(redis_url, namespace="mid-round", flush_interval=0.02)
    read_states = RedisStore._read_states
    met = threading.Event()

    def a_permit_refused_meanwhile(self: RedisStore, due: bool) -> bool:
        everything = read_states(self, due)  # reads: answered, out of memory or not
        if self is store and not met.is_set():
            control.config_set("maxmemory-policy", "noeviction")
            control.config_set("maxmemory", "1")
            self.failed(redis.exceptions.OutOfMemoryError("OOM command not allowed"))  # a caller's
            met.set()
        return everything

    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1000, store=store))
        first_round(store)
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            monkeypatch.setattr(RedisStore, "_read_states", a_permit_refused_meanwhile)
            assert met.wait(5.0)
            ops = store.ops
            wait_for(lambda: store.ops >= ops + 3, 5.0, "a few probes of the store")
            _fail(breaker)  # counts to report, which a store back would write
            assert store.degraded
            assert (store.outages, _messages(caplog, UNREACHABLE), _messages(caplog, BACK)) == (1, 1, 0)
            control.config_set("maxmemory", "0")
            # The store is marked back before it logs so: wait for both.
            wait_for(
                lambda: not store.degraded and _messages(caplog, BACK) > 0,
                8.0,
                "the store back once Redis takes writes",
            )
        assert (store.outages, _messages(caplog, BACK)) == (1, 1)
    finally:
        store.close()


def test_a_server_taking_no_write_for_want_of_replicas_is_one_outage_not_a_key_per_breaker(
    control: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``NOREPLICAS`` (as ``MISCONF``) refuses every write of every client: an outage, as ``READONLY`` is.

    Taken for one key's refusal, it sent each breaker local with a warning of its own (hundreds
    with hundreds of breakers), while the store said it was healthy: no outage, no degraded
    gauge, no alert.
    """
    store = RedisStore.from_url(redis_url, namespace="noreplicas", flush_interval=0.02)
    try:
        breakers = [
            CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1000, store=store))
            for i in range(3)
        ]
        limiter = RateLimiter("api", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        first_round(store)
        control.config_set("min-replicas-to-write", "1")  # no replica: every write is refused
        try:
            with caplog.at_level(logging.WARNING, logger="otel_resilience"):
                for breaker in breakers:
                    _fail(breaker)
                assert limiter.try_acquire()  # store_fallback="open"
                wait_for(lambda: store.degraded, 5.0, "the store degraded")
                assert store.outages == 1
                assert _messages(caplog, UNREACHABLE) == 1
                assert _messages(caplog, "refused") == 0
        finally:
            control.config_set("min-replicas-to-write", "0")
        wait_for(lambda: not store.degraded, 8.0, "the store back once Redis takes writes")
        assert store.outages == 1
    finally:
        store.close()


def test_a_message_on_the_channel_that_is_not_a_transition_is_ignored(
    control: redis.Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Anyone may publish on the namespace's channel: a message the store cannot read changes nothing.

    One with a field that is no number (or bytes that are no UTF-8) raised in the subscriber,
    which logged an error with its traceback, dropped its subscription and missed the
    transitions published until it subscribed again.
    """
    first = RedisStore.from_url(redis_url, namespace="garbled", resync_interval=60.0)
    second = RedisStore.from_url(redis_url, namespace="garbled", resync_interval=60.0)
    try:
        with namesakes_expected():
            a = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1, timeout=30.0, store=first))
            b = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1, timeout=30.0, store=second))
        wait_for(lambda: _subscribed(redis_url, "garbled:events", 2), 5.0, "both stores subscribed")
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            control.publish("garbled:events", "someone|db|not-an-epoch|open|1000|forced")
            control.publish("garbled:events", b"\xff\xfe|db|1|open|1000|forced")
            control.publish("garbled:events", "no separators at all")
            _fail(a)
            wait_for(lambda: b.peek_state() is CircuitState.OPEN, 5.0, "b adopting a's trip")
        assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
        assert first.errors == second.errors == 0
    finally:
        first.close()
        second.close()


def test_a_refused_subscription_is_logged_once_and_is_no_outage(
    control: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A user without SUBSCRIBE: the store works (not degraded), the refusal is counted and logged once.

    It was taken as an outage, and the subscriber retried every 100 ms (its backoff restarted at
    each SUBSCRIBE sent): 10 outages and 20 warnings a second.
    """
    control.execute_command("ACL", "SETUSER", "nosub", "on", "nopass", "~*", "&*", "+@all", "-subscribe")
    url = f"redis://nosub:x@127.0.0.1:{redis_server.port}/0"
    stores = [RedisStore.from_url(url, namespace="acl", resync_interval=0.3) for _ in range(2)]
    try:
        with caplog.at_level(logging.WARNING, logger="otel_resilience"), namesakes_expected():
            a, b = (CircuitBreaker("db", CircuitBreakerConfig(store=store)) for store in stores)
            wait_for(lambda: stores[0].errors >= 3, 5.0, "the subscription refused a few times")
        assert [store.outages for store in stores] == [0, 0]
        assert not any(store.degraded for store in stores)
        assert _messages(caplog, UNREACHABLE) == 0
        assert _messages(caplog, "refused its subscription") == 2  # once per store
        a.force_open(30.0)  # still shared: the other replica reads it at its next resync
        wait_for(lambda: b.state is CircuitState.OPEN, 3.0, "the trip read by the other replica")
    finally:
        for store in stores:
            store.close()
        control.execute_command("ACL", "DELUSER", "nosub")


class _Subscriber:
    """The subscriber's client of a store, switched between a dead server and the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real
        options = {"socket_connect_timeout": 0.2, "socket_timeout": 0.2, "retry": Retry(NoBackoff(), 0)}
        self.dead = redis.Redis(host="127.0.0.1", port=free_port(), **options)  # as the store's client
        self.down = True
        self.attempts = 0
        self.attempted = threading.Event()

    def pubsub(self, **options: Any) -> Any:
        self.attempts += 1
        self.attempted.set()
        return (self.dead if self.down else self.real).pubsub(**options)

    def close(self) -> None:
        self.dead.close()
        self.real.close()


def test_the_subscriber_listens_again_as_soon_as_the_store_reaches_redis(redis_url: str) -> None:
    """The subscriber cannot reach Redis while the store's thread can: once it may, it subscribes within a round.

    It waited out its own backoff (doubling to 5 s) while the store said it was back, so that no
    trip of another replica reached this one by pub/sub for that long.
    """
    store = RedisStore.from_url(redis_url, namespace="resub", resync_interval=60.0)
    other = RedisStore.from_url(redis_url, namespace="resub")
    subscriber = _Subscriber(store._sub_client)
    store._sub_client = subscriber
    try:
        with namesakes_expected():
            mine = CircuitBreaker("db", CircuitBreakerConfig(store=store))
            theirs = CircuitBreaker("db", CircuitBreakerConfig(store=other))
        wait_for(lambda: subscriber.attempts >= 5, 10.0, "the subscriber failing, its backoff growing")
        subscriber.attempted.clear()
        subscriber.attempted.wait(10.0)  # right after an attempt: its backoff is at least 1.6 s now
        subscriber.down = False
        took = wait_for(
            lambda: (
                not store.degraded and subscriber.attempts > 5 and _subscribed(redis_url, "resub:events", 2)
            ),
            5.0,
            "subscribed again",
        )
        print(f"subscribed {took:.3f} s after Redis became reachable for the subscriber")
        assert took < 1.4  # not the rest of its backoff (at least 1.6 s)
        theirs.force_open(30.0)
        wait_for(lambda: mine.state is CircuitState.OPEN, 5.0, "the trip of the other replica")
    finally:
        store.close()
        other.close()


def _subscribed(url: str, channel: str, count: int) -> bool:
    client = redis.Redis.from_url(url)
    try:
        return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) >= count
    finally:
        client.close()


def test_a_store_closed_under_calls_in_flight_reports_no_outage(
    proxy: TcpFaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """close() ends the permits in flight (their connections close): the fallback answers, no outage, no warning."""
    store = RedisStore.from_url(_via(proxy), namespace="closing", timeout=5.0, probe_lease_ttl=16.0)
    limiter = RateLimiter("api", RateLimiterConfig(rate=1000.0, burst=100, store=store))
    assert limiter.try_acquire()
    proxy.set("delay", 0.5)
    answers: list[bool] = []
    callers = [threading.Thread(target=lambda: answers.append(limiter.try_acquire())) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for caller in callers:
            caller.start()
        time.sleep(0.1)  # each is waiting for its answer (a round trip takes 1 s)
        store.close()
        for caller in callers:
            caller.join(10.0)
    assert answers == [True, True, True]
    assert (store.outages, store.errors, store.degraded) == (0, 0, False)
    assert _messages(caplog, UNREACHABLE) == 0


def test_a_closed_stores_breakers_are_reported_as_local(redis_url: str) -> None:
    """``resilience.circuit_breaker.shared`` is 0 for a breaker whose store closed (it runs on local state)."""
    store = RedisStore.from_url(redis_url, namespace="closed")
    breaker = CircuitBreaker("closed-store", CircuitBreakerConfig(store=store))
    observe = dict(STORE_CALLBACKS)[sc.CB_SHARED]

    def shared() -> object:
        return {obs.attributes[sc.NAME]: obs.value for obs in observe() if obs.attributes}[breaker.name]

    first_round(store)
    assert shared() == 1
    assert ", ok," in repr(store)
    store.close()
    assert not store.degraded
    assert shared() == 0
    assert ", closed," in repr(store)  # it said "ok", as for a store that shares


def test_a_breaker_whose_key_the_server_refuses_is_reported_as_local(
    control: redis.Redis, redis_url: str
) -> None:
    """``resilience.circuit_breaker.shared`` is 0 for a breaker whose state key is of the wrong type, 1 for the others.

    The server refuses that breaker's key (``WRONGTYPE``): it runs on local state while its store
    answers (not degraded) and its other breakers keep sharing. The gauge read only the store's
    health, so it said 1 for it; once the key is the store's again, it is shared again.
    """
    control.set("refused:cb:refused-bad:state", "not a hash")
    store = RedisStore.from_url(redis_url, namespace="refused", resync_interval=0.2)
    observe = dict(STORE_CALLBACKS)[sc.CB_SHARED]

    def shared() -> dict[str, object]:
        return {obs.attributes[sc.NAME]: obs.value for obs in observe() if obs.attributes}

    try:
        good = CircuitBreaker("refused-good", CircuitBreakerConfig(store=store))
        bad = CircuitBreaker("refused-bad", CircuitBreakerConfig(store=store))
        wait_for(lambda: store.errors > 0, 5.0, "the refused key met")
        assert (store.degraded, store.local_only) == (False, False)
        assert shared()[good.name] == 1
        assert shared()[bad.name] == 0
        control.delete(
            "refused:cb:refused-bad:state"
        )  # the key is the store's again: read at the next resync
        wait_for(lambda: shared()[bad.name] == 1, 5.0, "the breaker shared again")
        assert shared()[good.name] == 1
    finally:
        store.close()


def test_close_wakes_the_subscriber_at_once_and_leaves_nothing_behind(
    control: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() while the subscriber waits for a message returns at once, not after the wait.

    The subscriber polled every second: close() waited for the end of that poll (up to 1 s, in
    every test and every shutdown). Its socket is now shut down, which ends the wait; the thread
    is gone and the store's connections are closed when close() returns. The poll is made 60 s
    long here, so that a close() waiting for it stands out from a loaded machine's delays.
    """
    monkeypatch.setattr(redis_store_module, "_SUBSCRIBER_POLL", 60.0)
    store = RedisStore.from_url(redis_url, namespace="prompt-close")
    breaker = CircuitBreaker("db", CircuitBreakerConfig(store=store))

    def subscribed() -> bool:
        return bool(control.pubsub_numsub("prompt-close:events")[0][1] == 1)

    wait_for(subscribed, 5.0, "the subscriber's subscription")  # it now waits up to 60 s for a message
    threads = store._threads
    started = time.monotonic()
    store.close()
    took = time.monotonic() - started
    print(f"close() took {took * 1000:.0f} ms")
    assert took < 5.0  # not the 60 s poll
    assert not any(thread.is_alive() for thread in threads)
    wait_for(lambda: not subscribed(), 2.0, "the subscription gone")
    others = [c for c in control.client_list() if c["name"] != "control" and c["cmd"] != "client|list"]
    assert others == []
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("kind", NEW_LOOPS)
def test_close_ends_the_connections_of_a_loop_that_runs_nothing_now(
    control: redis.Redis, redis_url: str, kind: str
) -> None:
    """close() ends the connections of the client of a loop that is not running (nor closed): one that
    ``run_until_complete`` runs now and then, from a thread of its own or the one closing the store.

    Only the clients of running loops were closed (on their loops): the connection of an idle
    loop's client stayed open, on the server too, until that loop next ran, which may be never
    (close() says no connection of the store is left). On uvloop's loop, whose transports hand out
    a socket that refuses ``shutdown()``, close() raised ``TypeError`` and left the connection open.
    """
    store = RedisStore.from_url(redis_url, namespace="idle-loop-close")
    limiter = RateLimiter("idle", RateLimiterConfig(rate=100.0, store=store))
    loop = NEW_LOOPS[kind]()

    async def zero() -> int:
        return 0

    try:
        assert loop.run_until_complete(limiter.call(zero)) == 0  # the loop's client, connected
        assert len(store._async_clients) == 1
        store.close()

        def others() -> list[dict[str, Any]]:
            return [c for c in control.client_list() if c["name"] != "control" and c["cmd"] != "client|list"]

        wait_for(lambda: others() == [], 2.0, "every connection of the store ended")
    finally:
        store.close()
        with warnings.catch_warnings():  # uvloop's close() warns of that descriptor, still open, at once
            warnings.simplefilter("ignore", ResourceWarning)
            loop.close()
        collect_quietly()  # the ended connection's descriptor: closed by the collector (a warning)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner takes a loop factory from 3.11")
@pytest.mark.parametrize("kind", NEW_LOOPS)
def test_a_store_dropped_as_its_loop_shuts_down_leaves_no_connection_open(
    control: redis.Redis, redis_url: str, kind: str
) -> None:
    """A store made, used and closed in ``asyncio.run``'s coroutine, then dropped as it returns: its
    loop's client is closed as the loop shuts down, on uvloop's loop too (the loop uvicorn runs).

    Freed with the coroutine, the client's lifetime was handed to the loop's finaliser as a task,
    which the shutdown cancels with the loop's other tasks: the client's closing, cancelled, left
    its connection open past the loop's end (uvloop's ``close()`` warned of its transport, still
    open, and hung once that warning raised; the server kept the connection until the collector
    freed it).
    """

    async def main() -> int:
        store = RedisStore.from_url(redis_url, namespace="dropped-loop")
        limiter = RateLimiter("dropped", RateLimiterConfig(rate=100.0, store=store))
        try:
            return await limiter.call(asyncio.sleep, 0, 1)  # type: ignore[no-any-return]
        finally:
            store.close()

    def others() -> list[dict[str, Any]]:
        return [c for c in control.client_list() if c["name"] != "control" and c["cmd"] != "client|list"]

    gc_was_enabled = gc.isenabled()
    gc.disable()  # the connection is ended by its loop's shutdown, not freed by the collector meanwhile
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with asyncio.Runner(loop_factory=NEW_LOOPS[kind]) as runner:
                assert runner.run(main()) == 1
            wait_for(lambda: others() == [], 2.0, "the store's connection ended by its loop's shutdown")
    finally:
        if gc_was_enabled:
            gc.enable()
        collect_quietly()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_close_while_redis_is_unreachable_returns_at_once_and_leaves_no_thread(
    proxy: TcpFaultProxy, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() with Redis partitioned away (a 3 s timeout) and no operation in flight returns at once, no thread left.

    The subscriber's socket, shut down by close(), made redis-py's pub/sub connect again before it
    raised (its failure handler reconnects whatever the retries): close() waited for that
    connection and its handshake, each up to the store's timeout, gave up on the thread after 2 s
    and returned with the subscriber still connecting.
    """
    monkeypatch.setattr(redis_store_module, "_SUBSCRIBER_POLL", 60.0)
    store = RedisStore.from_url(
        _via(proxy), namespace="close-partitioned", timeout=3.0, resync_interval=60.0, probe_lease_ttl=10.0
    )
    limiter = RateLimiter("api", RateLimiterConfig(rate=10.0, store=store))  # the store's thread idles
    wait_for(lambda: _subscribed(redis_url, "close-partitioned:events", 1), 5.0, "the subscription")
    proxy.set("drop")
    threads = store._threads
    started = time.monotonic()
    store.close()
    took = time.monotonic() - started
    print(f"close() took {took * 1000:.0f} ms")
    assert not any(thread.is_alive() for thread in threads)
    assert took < 1.0  # not the 3 s of a connection's handshake through the partition
    assert limiter.try_acquire()  # store_fallback="open", without asking Redis


def test_close_while_the_resolver_hangs_returns_within_the_timeout_and_leaves_no_thread(
    redis_server: RedisServer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's threads connect while its host's name does not resolve: close() waits at most the timeout.

    The lookup (``getaddrinfo``) has no timeout: close() waited 2 s for each of the store's two
    threads, then returned with both still in the lookup. The bound (1.5 s for a 0.25 s timeout)
    holds on a loaded machine.
    """
    assert redis_url
    resolved = socket.getaddrinfo
    answer = threading.Event()
    lookups: list[str] = []

    def hanging_resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "redis.slow-resolver.test":
            lookups.append(threading.current_thread().name)
            answer.wait(10.0)
            host = "127.0.0.1"
        return resolved(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging_resolver)
    url = f"redis://redis.slow-resolver.test:{redis_server.port}/0"
    store = RedisStore.from_url(url, namespace="close-resolving", timeout=0.25)
    try:
        breaker = CircuitBreaker("dep", CircuitBreakerConfig(store=store))  # both threads connect (a read)
        wait_for(lambda: len(lookups) >= 2, 5.0, "both threads looking the name up")
        threads = store._threads
        started = time.monotonic()
        store.close()
        took = time.monotonic() - started
        assert took < 1.5
        wait_for(lambda: not any(thread.is_alive() for thread in threads), 1.5, "the store's threads ended")
        assert breaker.call_sync(int) == 0  # on local state
    finally:
        answer.set()
        store.close()


def test_close_ends_the_operations_in_flight_on_a_slow_redis_at_once(
    proxy: TcpFaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """close() while both threads wait on Redis 2 s a round trip away (a 5 s timeout) returns at once, no thread left.

    It shut down the subscriber's socket only once its subscription was made (not while it
    connected) and waited for the store's thread to end its round trip: up to 2 s for each
    thread, after which it returned with them still running. Every socket the store's threads
    opened is now shut down by close(), and none is opened after it.
    """
    proxy.set("delay", 1.0)  # each way
    store = RedisStore.from_url(_via(proxy), namespace="close-slow", timeout=5.0, probe_lease_ttl=16.0)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        breaker = CircuitBreaker("db", CircuitBreakerConfig(store=store))
        # The subscriber's handshake and the store's first read of the breaker's state are sent.
        wait_for(lambda: len(proxy._links) >= 2, 5.0, "both threads connected")
        threads = store._threads
        started = time.monotonic()
        store.close()
        took = time.monotonic() - started
        print(f"close() took {took * 1000:.0f} ms")
        assert took < 1.0  # not the 2 s of a round trip, nor the 2 s join of each thread
        assert not any(thread.is_alive() for thread in threads)
    assert (store.outages, store.errors, store.degraded) == (0, 0, False)
    assert [record.getMessage() for record in caplog.records] == []
    assert breaker.state is CircuitState.CLOSED
    _fail(breaker)  # on local state, as after any close()
    assert breaker.get_stats()["failure_count"] == 1


def test_a_subscription_the_network_dropped_silently_is_made_again(
    proxy: TcpFaultProxy, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber connection cut without a word (a NAT's idle timeout, a vanished host) is renewed.

    The subscriber waited for messages on it for ever: no error ever came, the server had
    dropped the subscription, and no transition reached the replica by pub/sub again (only at
    each resync), while the store said it was healthy. With no message for ``resync_interval`` it
    now PINGs the connection, and one that does not answer within ``timeout`` is replaced: no
    outage, one error and one warning.
    """
    # A PING every 0.3 s of silence; a healthy one answers in milliseconds, so its 2 s timeout
    # is never reached on a loaded machine (a false "no answer" would count a second error).
    store = RedisStore.from_url(
        _via(proxy), namespace="severed", timeout=2.0, resync_interval=0.3, probe_lease_ttl=7.0
    )
    try:
        limiter = RateLimiter("api", RateLimiterConfig(rate=10.0, store=store))  # the store's thread idles
        wait_for(lambda: _subscribed(redis_url, "severed:events", 1), 5.0, "the subscription")
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            proxy.sever()  # the server drops the subscription at once
            wait_for(
                lambda: store.errors == 1 and _subscribed(redis_url, "severed:events", 1),
                15.0,
                "the silent connection found, and a subscription again",
            )
        assert (store.degraded, store.outages, store.errors) == (False, 0, 1)
        assert _messages(caplog, "no answer to PING") == 1
        assert limiter.try_acquire()
    finally:
        store.close()


def test_a_subscription_whose_ping_is_refused_is_kept(
    control: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A user without PING: the refusal answers the subscriber's check, so its subscription is kept."""
    control.execute_command("ACL", "SETUSER", "noping", "on", "nopass", "~*", "&*", "+@all", "-ping")
    url = f"redis://noping:x@127.0.0.1:{redis_server.port}/0"
    store = RedisStore.from_url(url, namespace="noping", resync_interval=0.1)
    try:
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            RateLimiter("api", RateLimiterConfig(rate=10.0, store=store))
            wait_for(lambda: store.ops >= 4, 5.0, "a few checks of the subscription")  # and its SUBSCRIBE
        assert (store.degraded, store.outages, store.errors) == (False, 0, 0)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        store.close()
        control.execute_command("ACL", "DELUSER", "noping")


def test_breakers_made_one_by_one_cost_a_read_each_not_a_read_of_all(redis_url: str) -> None:
    """A service making breakers one at a time (a key each): each is read once, not every other one again."""
    store = RedisStore.from_url(redis_url, namespace="one-by-one")
    breakers: list[CircuitBreaker] = []
    try:
        with namesakes_expected():
            for index in range(100):
                before = store.ops
                breakers.append(CircuitBreaker(f"db{index}", CircuitBreakerConfig(store=store)))
                wait_for(lambda before=before: store.ops > before, 2.0, "the new breaker's state read")
        print(f"{store.ops} Redis operations for 100 breakers made one by one")
        assert store.ops < 4 * len(breakers)  # a read and a first report each (not 100 * 101 / 2 reads)
    finally:
        store.close()


def test_a_store_with_many_breakers_publishes_a_trip_at_once(proxy: TcpFaultProxy, redis_url: str) -> None:
    """600 breakers per replica, Redis 10 ms away: a trip reaches the other replica in well under a second.

    The store's thread read each breaker's state (and reported its first counts) in a round trip
    of its own: 1200 round trips, 12 s in which no trip was published; and every new breaker
    made it read all the others again. They go by hundreds per round trip now.
    """
    count = 600
    far = RedisStore.from_url(_via(proxy), namespace="many")
    near = RedisStore.from_url(redis_url, namespace="many")
    try:
        proxy.set("delay", 0.005)
        with namesakes_expected():
            mine = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=far))
                for i in range(count)
            ]
            theirs = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=near))
                for i in range(count)
            ]
        time.sleep(0.2)
        for index in (0, count // 2, count - 1):
            started = time.monotonic()
            _fail(mine[index])
            wait_for(
                lambda i=index: theirs[i].state is CircuitState.OPEN, 3.0, "the trip on the other replica"
            )
            print(f"trip {index} reached the other replica in {time.monotonic() - started:.3f} s")
        assert far.ops < 6 * count  # one read and one report each, a few more: not one read per pair
    finally:
        far.close()
        near.close()


def test_a_store_whose_breakers_all_await_probe_leases_publishes_a_trip_at_once(
    proxy: TcpFaultProxy, redis_url: str
) -> None:
    """300 breakers past their OPEN period (one dependency broke them all), Redis 10 ms away: a trip goes at once.

    Each breaker asked for its probe leases in a round trip of its own, every round while the
    other replica held them: 3 s a round, in which no trip of this replica was published.
    """
    count = 300
    far = RedisStore.from_url(_via(proxy), namespace="leases")
    near = RedisStore.from_url(redis_url, namespace="leases")
    try:
        proxy.set("delay", 0.005)
        config = {"failure_threshold": 1, "timeout": 0.05}
        with namesakes_expected():
            mine = [CircuitBreaker(f"db{i}", CircuitBreakerConfig(store=far, **config)) for i in range(count)]
            theirs = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(store=near, **config)) for i in range(count)
            ]
            tripped = [
                CircuitBreaker(f"other{i}", CircuitBreakerConfig(failure_threshold=1, store=far))
                for i in range(3)
            ]
            watching = [
                CircuitBreaker(f"other{i}", CircuitBreakerConfig(failure_threshold=1, store=near))
                for i in range(3)
            ]
        for breaker in theirs:
            _fail(breaker)
        wait_for(
            lambda: all(breaker.peek_state() is not CircuitState.CLOSED for breaker in mine),
            10.0,
            "every trip adopted",
        )
        wait_for(
            lambda: all(b.get_stats()["retry_after"] == 0.0 for b in mine), 2.0, "every OPEN period over"
        )
        wait_for(lambda: all(b._core.retry_after() == 0.0 for b in theirs), 2.0, "their OPEN periods over")
        for breaker in theirs:  # a call each, rejected: the other replica takes every lease
            _rejected(breaker)
        wait_for(lambda: all(_leases(b) for b in theirs), 10.0, "the other replica holding the leases")
        for breaker in mine:  # a call each, rejected: each asks for its leases every round
            _rejected(breaker)
        slowest = 0.0
        for mine_one, theirs_one in zip(tripped, watching, strict=True):
            started = time.monotonic()
            _fail(mine_one)
            wait_for(lambda b=theirs_one: b.state is CircuitState.OPEN, 10.0, "the trip on the other replica")
            slowest = max(slowest, time.monotonic() - started)
        print(f"slowest trip to reach the other replica: {slowest:.3f} s")
        # Not the 3 s (and more) of a round trip per breaker; 0.03 s on a quiet machine: a bound
        # far from both, for a loaded one.
        assert slowest < 2.5
    finally:
        far.close()
        near.close()


def test_close_waits_for_one_publication_not_for_every_queued_one(proxy: TcpFaultProxy) -> None:
    """20 trips queued, Redis 0.4 s a round trip away: close() returns within about one round trip.

    The store's thread published every queued transition before it looked whether the store
    had closed: close() waited out its 2 s bound for the thread, then closed the connection
    under it.
    """
    store = RedisStore.from_url(_via(proxy), namespace="closing", timeout=1.0)
    try:
        breakers = [
            CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=store))
            for i in range(20)
        ]
        first_round(store)
        proxy.set("delay", 0.2)  # each way
        ops = store.ops
        for breaker in breakers:
            _fail(breaker)
        wait_for(lambda: store.ops > ops, 5.0, "the first publication sent")
        started = time.monotonic()
        store.close()
        took = time.monotonic() - started
        print(f"close() took {took:.3f} s")
        # One round trip in flight (0.4 s); before, the thread published one queued trip a round
        # trip until the join's 2 s bound gave up on it: a bound below that, far above 0.4 s.
        assert took < 1.8
        assert not any(thread.is_alive() for thread in store._threads)
    finally:
        store.close()


def test_close_keeps_the_trip_whose_publication_is_in_flight(
    proxy: TcpFaultProxy, control: redis.Redis
) -> None:
    """A trip the store's thread is publishing when close() comes reaches Redis: close() waits for it to be sent.

    Every other operation in flight ends at once (the store's sockets are shut down); a
    publication is the cluster's to lose, so close() waits for its request to be sent (the
    server runs it, replied or not: it arrives here 0.2 s later).
    """
    store = RedisStore.from_url(_via(proxy), namespace="closing-trip", timeout=2.0, probe_lease_ttl=7.0)
    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1, store=store))
        first_round(store)
        proxy.set("delay", 0.2)  # each way
        ops = store.ops
        _fail(breaker)
        wait_for(lambda: store.ops > ops, 5.0, "the trip's publication sent")
        store.close()
        wait_for(
            lambda: control.hget("closing-trip:cb:db:state", "state") == b"open", 5.0, "the trip in Redis"
        )
    finally:
        store.close()


def test_close_waits_for_a_publication_to_be_sent_not_for_its_reply(
    proxy: TcpFaultProxy, control: redis.Redis
) -> None:
    """Redis 1.5 s a round trip away, a trip being published: close() returns at once, and the trip reaches Redis.

    close() waited for the publication's reply (here 1.5 s; up to 2 s), though its outcome on
    the server does not depend on it: the request, once sent, reaches Redis before the
    connection's end (a socket shut down sends what it was given first), and the script decides
    alone, a trip over CLOSED included. It now waits until the request is sent: 0.6 s is far
    from both figures.
    """
    store = RedisStore.from_url(_via(proxy), namespace="closing-sent", timeout=3.0, probe_lease_ttl=10.0)
    trips = _PublishingTrips(store._client)
    trips.gate.set()  # no wait: it says when the publication's round trip starts
    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1, store=store))
        first_round(store)
        store._client = trips
        proxy.set("delay", 0.75)  # each way
        _fail(breaker)
        assert trips.entered.wait(5.0)
        started = time.monotonic()
        store.close()
        took = time.monotonic() - started
        print(f"close() took {took:.3f} s")
        assert took < 0.6
        assert not any(thread.is_alive() for thread in store._threads)
        wait_for(
            lambda: control.hget("closing-sent:cb:db:state", "state") == b"open", 5.0, "the trip in Redis"
        )
    finally:
        store.close()


def _store_gauge(reader: InMemoryMetricReader, name: str) -> dict[str, float]:
    """The values of the store instrument ``name`` collected now, by namespace."""
    values: dict[str, float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        values[str(point.attributes[sc.NAME])] = point.value
    return values


def test_the_degraded_gauge_says_one_per_namespace_however_many_stores_share_it(redis_url: str) -> None:
    """Two stores of one namespace in one process, both unreachable: ``resilience.store.degraded`` is 1, not 2.

    The gauge is 0 or 1 per instance (the alert's value sums it over instances): its callback
    summed the stores of a namespace, so two stores of one degraded namespace reported two
    instances. A healthy store beside a degraded one of the same namespace leaves it at 1.
    """
    had_default = current_listener() is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)
    gone = f"redis://127.0.0.1:{free_port()}/0"
    stores = [RedisStore.from_url(gone, namespace="twice-down", timeout=0.1) for _ in range(2)]
    stores += [RedisStore.from_url(redis_url, namespace="twice-down")]
    stores += [RedisStore.from_url(redis_url, namespace="twice-up") for _ in range(2)]
    try:
        with namesakes_expected():
            breakers = [CircuitBreaker("db", CircuitBreakerConfig(store=store)) for store in stores]
        wait_for(lambda: stores[0].degraded and stores[1].degraded, 5.0, "the unreachable stores degraded")
        for store in stores[2:]:  # the reachable ones
            first_round(store)
        assert not any(store.degraded for store in stores[2:])
        degraded = _store_gauge(reader, sc.STORE_DEGRADED)
        assert (degraded["twice-down"], degraded["twice-up"]) == (1, 0)
        assert _store_gauge(reader, sc.STORE_OUTAGES)["twice-down"] == 2  # each store's outage counted
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()
        for store in stores:
            store.close()
    del breakers


_STORE_COUNTERS = (sc.STORE_OPERATIONS, sc.STORE_OUTAGES, sc.STORE_ERRORS, sc.STORE_FALLBACK_PERMITS)


def _store_counts(store: RedisStore) -> tuple[int, ...]:
    """A store's counts, in the order of :data:`_STORE_COUNTERS`."""
    return (store.ops, store.outages, store.errors, store.fallback_permits)


def test_the_store_counters_keep_a_closed_stores_counts_while_its_namespace_lives_on(redis_url: str) -> None:
    """Three stores of one namespace, one unreachable: closing two of them leaves every counter where it was.

    The counters summed the live stores of a namespace: a store that closed took its counts with
    it, and ``resilience.store.operations`` (and the outages, errors and fallback permits) went
    down while the namespace's other store lived on, which a backend reads as a counter reset.
    """
    had_default = current_listener() is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)
    down = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="counted", timeout=0.1)
    first, kept = (RedisStore.from_url(redis_url, namespace="counted") for _ in range(2))
    stores = [down, first, kept]
    try:
        for store in stores:  # rate limiters only: no store's thread sends anything while Redis answers
            assert RateLimiter("api", RateLimiterConfig(rate=1.0, burst=5, store=store)).try_acquire()
        wait_for(lambda: down.degraded, 5.0, "the unreachable store degraded")
        before = [_store_gauge(reader, name)["counted"] for name in _STORE_COUNTERS]
        assert all(value > 0 for value in before), before
        down.close()
        first.close()
        after = [_store_gauge(reader, name)["counted"] for name in _STORE_COUNTERS]
        assert all(later >= earlier for later, earlier in zip(after, before, strict=True)), (before, after)
        totals = [sum(counts) for counts in zip(*map(_store_counts, stores), strict=True)]
        assert after == totals  # the closed stores' final counts and the live one's
        assert _store_gauge(reader, sc.STORE_DEGRADED)["counted"] == 0  # the unreachable one is gone
        down.close()  # closed twice: counted once
        assert [_store_gauge(reader, name)["counted"] for name in _STORE_COUNTERS] == totals
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()
        for store in stores:
            store.close()


class _Pipeline:
    """A pipeline of :class:`_PublishingTrips`' client: its round trip is counted when executed."""

    def __init__(self, trips: _PublishingTrips, pipe: Any) -> None:
        self._trips, self._pipe, self._scripts = trips, pipe, []

    def eval(self, script: str, *args: Any) -> _Pipeline:
        self._scripts.append(script)
        self._pipe.eval(script, *args)
        return self

    def execute(self, **options: Any) -> Any:
        self._trips.sent(self._scripts)
        return self._pipe.execute(**options)


class _PublishingTrips:
    """A store's client counting the publications (``PUBLISH_STATE``) of each round trip.

    The first round trip carrying one waits for ``gate``: meanwhile the test queues more.
    """

    def __init__(self, client: Any, failures: int = 0) -> None:
        self._client = client
        self.failures = failures
        """Round trips carrying publications to fail (the connection lost) after the gate, first."""
        self.publications: list[int] = []
        self.entered, self.gate = threading.Event(), threading.Event()

    def sent(self, scripts: list[str]) -> None:
        count = scripts.count(PUBLISH_STATE)
        if count:
            self.entered.set()
            assert self.gate.wait(10.0)
            if self.failures:
                self.failures -= 1
                raise redis.ConnectionError("connection lost")
            self.publications.append(count)

    def eval(self, script: str, *args: Any) -> Any:
        self.sent([script])
        return self._client.eval(script, *args)

    def pipeline(self, transaction: bool = True) -> _Pipeline:
        return _Pipeline(self, self._client.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_transitions_queued_together_are_published_in_one_round_trip(redis_url: str) -> None:
    """19 trips queued while the store's thread publishes another: one round trip publishes them all.

    Each transition was a round trip of its own: a dependency that broke hundreds of breakers
    kept the store's thread publishing for hundreds of round trips (no failure reported, no
    lease taken meanwhile), the last trip reaching the other replicas after all the others.
    """
    count = 20
    store = RedisStore.from_url(redis_url, namespace="batched")
    other = RedisStore.from_url(redis_url, namespace="batched")
    trips = _PublishingTrips(store._client)
    try:
        with namesakes_expected():
            mine = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=store))
                for i in range(count)
            ]
            theirs = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=other))
                for i in range(count)
            ]
        first_round(store)
        first_round(other)
        store._client = trips
        _fail(mine[0])
        assert trips.entered.wait(5.0)  # the store's thread publishes the first trip: it waits
        for breaker in mine[1:]:
            _fail(breaker)
        trips.gate.set()
        wait_for(lambda: sum(trips.publications) == count, 5.0, "every trip published")
        assert trips.publications == [1, count - 1]
        wait_for(lambda: all(b.peek_state() is CircuitState.OPEN for b in theirs), 5.0, "every trip adopted")
    finally:
        trips.gate.set()
        store.close()
        other.close()


def test_transitions_whose_round_trip_failed_are_published_when_the_store_is_back(redis_url: str) -> None:
    """The round trip publishing a batch fails: every transition of it stays queued and goes out later."""
    store = RedisStore.from_url(redis_url, namespace="requeued")
    other = RedisStore.from_url(redis_url, namespace="requeued")
    trips = _PublishingTrips(store._client, failures=1)
    try:
        with namesakes_expected():
            mine = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=store))
                for i in range(3)
            ]
            theirs = [
                CircuitBreaker(f"db{i}", CircuitBreakerConfig(failure_threshold=1, store=other))
                for i in range(3)
            ]
        first_round(store)
        first_round(other)
        store._client = trips
        _fail(mine[0])
        assert trips.entered.wait(5.0)
        for breaker in mine[1:]:
            _fail(breaker)
        trips.gate.set()  # the first round trip fails (an outage); the next ones pass
        wait_for(lambda: all(b.peek_state() is CircuitState.OPEN for b in theirs), 5.0, "every trip adopted")
        assert sum(trips.publications) == 3  # each published once, after the outage
        assert store.outages == 1
        wait_for(lambda: not store.degraded, 5.0, "the store back")
    finally:
        trips.gate.set()
        store.close()
        other.close()


@pytest.fixture
def failover() -> Iterator[tuple[RedisServer, RedisServer, TcpFaultProxy]]:
    """A primary and the server that takes over from it, behind one endpoint (a fault proxy: a DNS name)."""
    old, new = RedisServer().start(), RedisServer().start()
    for server in (old, new):  # a replica's first sync loads its snapshot from the socket: no file written
        client = redis.Redis(port=server.port)
        client.config_set("repl-diskless-sync", "yes")
        client.config_set("repl-diskless-load", "swapdb")
        client.close()
    endpoint = TcpFaultProxy("127.0.0.1", old.port).start()
    yield old, new, endpoint
    endpoint.stop()
    old.stop()
    new.stop()


def _fail_over(old: RedisServer, new: RedisServer, endpoint: TcpFaultProxy) -> None:
    """The endpoint's primary becomes a replica of ``new``, and the endpoint leads to ``new`` from now on.

    The connections open to the old primary stay open (as through a DNS name or a load balancer):
    it answers them ``READONLY`` to every write, as a demoted primary does.
    """
    demoted = redis.Redis(port=old.port)
    try:
        demoted.replicaof("127.0.0.1", new.port)
    finally:
        demoted.close()
    endpoint.target = ("127.0.0.1", new.port)


def test_a_failover_behind_the_stores_endpoint_is_followed_to_the_new_primary(
    failover: tuple[RedisServer, RedisServer, TcpFaultProxy], caplog: pytest.LogCaptureFixture
) -> None:
    """A primary demoted under the store (``READONLY``) is an outage until the store reaches the new one.

    The store kept its connections to the demoted primary, which answered its every attempt to
    reach Redis again ``READONLY``: it stayed degraded for good (every breaker on local state)
    while the endpoint had led to a primary taking writes since the failover.
    """
    old, new, endpoint = failover
    store = RedisStore.from_url(_via(endpoint), namespace="failover", flush_interval=0.02)
    try:
        config = CircuitBreakerConfig(failure_threshold=1000, store=store)
        breakers = [CircuitBreaker(f"db{index}", config) for index in range(3)]
        first_round(store)
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            _fail_over(old, new, endpoint)
            for breaker in breakers:  # their reports, pipelined, meet the demoted primary: an outage
                _fail(breaker)
            wait_for(lambda: store.degraded, 5.0, "the outage")
            wait_for(lambda: not store.degraded, 8.0, "the store on the new primary")
        assert "read only replica" in caplog.text
        assert "background work failed" not in caplog.text  # the pipeline's other replies: never read
        assert store.outages == 1
    finally:
        store.close()


async def test_an_async_permit_follows_a_failover_to_the_new_primary(
    failover: tuple[RedisServer, RedisServer, TcpFaultProxy],
) -> None:
    """Each connection of a loop's client to the demoted primary is left once it answered ``READONLY``.

    Kept, the one connection the loop's permits reused answered every permit ``READONLY``, each
    time the store's thread had reached the new primary again: an outage, and the fallback, for good.
    """
    old, new, endpoint = failover
    store = RedisStore.from_url(
        _via(endpoint), namespace="failover-async", flush_interval=0.02, max_connections=4
    )
    try:
        limiter = RateLimiter("api", RateLimiterConfig(rate=1e6, burst=1000, store=store))
        assert await asyncio.gather(*(limiter.call(_zero) for _ in range(8))) == [0] * 8  # the loop's client
        _fail_over(old, new, endpoint)
        answered = 0  # permits in a row the cluster answered (not the fallback)
        deadline = time.monotonic() + 10.0
        while answered < 20 and time.monotonic() < deadline:
            if store.degraded:
                await asyncio.sleep(0.01)
                continue
            fallbacks = store.fallback_permits
            assert await limiter.call(_zero) == 0
            answered = answered + 1 if store.fallback_permits == fallbacks else 0
        assert answered == 20
        assert store.outages <= 4 + 1  # once per connection to the demoted primary at most, the thread's too
    finally:
        store.close()


async def _zero() -> int:
    return 0


def test_a_flushed_script_cache_costs_no_error_and_no_outage(control: redis.Redis, redis_url: str) -> None:
    """``SCRIPT FLUSH`` (as a restart empties the cache): every script is sent whole (``EVAL``), never ``NOSCRIPT``."""
    store = RedisStore.from_url(redis_url, namespace="flushed", flush_interval=0.02)
    try:
        breaker = CircuitBreaker("db", CircuitBreakerConfig(failure_threshold=1000, store=store))
        limiter = RateLimiter(
            "api", RateLimiterConfig(rate=1000.0, burst=100, store=store, store_fallback="closed")
        )
        first_round(store)
        for _ in range(5):
            control.script_flush()
            assert limiter.try_acquire()
            ops = store.ops
            _fail(breaker)
            wait_for(lambda ops=ops: store.ops > ops, 5.0, "the failure reported")
        assert (store.errors, store.outages, store.degraded) == (0, 0, False)
    finally:
        store.close()


def test_a_store_whose_redis_refuses_connections_counts_no_more_failed_operations_than_operations() -> None:
    """Every failed operation is an operation sent: the subscriber's attempts to subscribe too.

    With nothing listening on the port, each of the subscriber's attempts failed and was counted
    in ``errors`` but not in ``ops``: the store reported 10 failed operations of 5 operations.
    """
    with socket.socket() as held:  # a port of this host nothing listens on
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", namespace="refused", timeout=0.25)
        try:
            CircuitBreaker("db", CircuitBreakerConfig(store=store))  # starts the store's threads
            wait_for(lambda: store.errors >= 4, 30.0, "failed operations")
            errors = store.errors  # read first: an operation is counted before its failure
            assert errors <= store.ops
            assert store.outages == 1
        finally:
            store.close()


def test_an_outage_whose_error_has_no_message_is_logged_with_what_timed_out(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permit awaited past the store's ``timeout`` is logged with the timeout, not an empty message.

    A server that takes the connection and never answers made the warning say
    ``unreachable (TimeoutError: )``. The subscriber does not run here: its own timeout (with
    redis-py's message) would otherwise be the outage's first error, or not, by the scheduler.
    """
    monkeypatch.setattr(RedisStore, "_listen", lambda self: None)
    with socket.socket() as silent:  # takes connections (its backlog), answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", namespace="silent", timeout=0.25)
        try:
            limiter = RateLimiter("api", RateLimiterConfig(rate=10.0, store=store))
            with caplog.at_level(logging.WARNING, logger="otel_resilience"):
                assert asyncio.run(limiter.call(asyncio.sleep, 0, result=1)) == 1
            [warning] = [r.getMessage() for r in caplog.records if UNREACHABLE in r.getMessage()]
            assert "(TimeoutError: no answer within the store's timeout, 0.25 s)" in warning
        finally:
            store.close()
