"""`RedisStore`: breakers and rate limiters shared by the replicas of a service, through Redis."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, Final, cast

from otel_resilience.engine.counting import Counter, CounterValue
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.shared import STORES, SharedStore, current_key, retire_store
from otel_resilience.engine.validation import (
    check_callable,
    check_called_with,
    check_duration,
    check_int,
    check_name,
    describe,
    fail,
    redacted_url,
)
from otel_resilience.store.breaker import SharedBreaker, key_name, key_part, publish_states, read_states, tick
from otel_resilience.store.deadlines import Sockets, bound_connections, on_sent, track_sockets, within
from otel_resilience.store.demotion import leave_demoted
from otel_resilience.store.loops import LoopClients, bounded

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import timedelta

    from otel_resilience.engine.events import StateChanged
    from otel_resilience.patterns.circuit_breaker.facade import CircuitBreaker
    from otel_resilience.patterns.rate_limiter.config import RateLimiterConfig
    from otel_resilience.store.rate import ClusterRules

__all__ = ["RedisStore", "check_url"]

_LOG: Final = logging.getLogger("otel_resilience")
_OWNER: Final = "RedisStore.from_url"
_MIN_GAP: Final = 0.01
"""The shortest time between two rounds of the store's thread (at most 100 reports a second)."""
_MAX_CONNECTIONS: Final = 50
"""The default ``max_connections``: connections of the sync client, and of each event loop's async client."""
_MAX_CONNECTIONS_LIMIT: Final = 10_000
"""The largest ``max_connections``: a Redis server's own default ``maxclients``. redis-py's pool
makes a place for each connection it may open when it is made (a hundred million took minutes
and gigabytes before any connection), so a number meant as "no limit" is refused, not waited on."""
_RETRY_MAX: Final = 5.0
"""The longest pause between two attempts to reach an unreachable store, in seconds."""
_NEEDS_REDIS: Final = "RedisStore needs the redis package: pip install 'otel-resilience[redis]'"
"""The ``ImportError``'s message when the ``redis`` package is missing."""
_SHORTEST_TTL: Final = 0.001
"""The shortest ``probe_lease_ttl`` and ``key_ttl``: Redis expires keys in whole milliseconds."""
_WAIT_OWNER: Final = "RedisStore.wait_synced"
_SYNC_POLL: Final = 0.005
"""How often :meth:`RedisStore.wait_synced_async` looks whether the store is in sync (its loop runs on)."""
_CLOSE_POLL: Final = 0.1
"""How soon :meth:`RedisStore.wait_synced` returns once the store closed (it waits for an event)."""
_SUBSCRIBER_POLL: Final = 1.0
"""The longest wait of the subscriber for a message before it looks whether the store closed.

:meth:`RedisStore.close` does not wait for it: it shuts the subscriber's socket down, which ends
the wait at once."""
_JOIN: Final = 2.0
"""The longest :meth:`RedisStore.close` waits for a publication in flight to be sent, and for each of the
store's threads (their sockets shut down, they end at once, but for a TCP connection being made,
which ``timeout`` bounds)."""
_LEASE_ROUNDS: Final = 3
"""The shortest ``probe_lease_ttl``, in rounds of the store's thread (``flush_interval``, then a round
trip of up to ``timeout``): its holder renews a lease every third of its TTL (:func:`_check_lease_ttl`)."""
_LEASE_TTL: Final = 5.0
"""``probe_lease_ttl`` when none is given, unless :func:`_lease_rounds_ms` is longer."""
_PROBE_TTL_MS: Final = 1000
"""How long the key written to reach an unreachable store again lives, in milliseconds."""
_OUTAGE_CODES: Final = frozenset({"NOREPLICAS", "MISCONF", "BUSY"})
"""Error codes by which a server refuses every client, not one key (``READONLY``, ``OOM`` and
``MASTERDOWN`` have classes of their own): it takes no write (too few replicas, a failed
snapshot) or runs another client's script. An outage, as ``READONLY``: each breaker taking it
for its key's refusal logged a warning of its own and left the store reported healthy."""


class RedisStore(SharedStore):
    """State shared by the replicas of a service through one Redis server.

    Build it with :meth:`from_url` (or of clients of your own: the constructor) and pass it as ``store=`` to
    :class:`~otel_resilience.CircuitBreakerConfig` or :class:`~otel_resilience.RateLimiterConfig`.

    A shared breaker stays local first: its calls never wait on Redis. One background thread
    per store reports the counts of each breaker (batched every ``flush_interval``, at once after
    a failure), publishes its transitions, and holds its half-open probe leases; one subscriber
    thread takes the transitions other replicas publish. A shared rate limiter asks Redis for
    each permit (one atomic script: from a thread with the sync client, from a coroutine with
    the event loop's own ``redis.asyncio`` client, so that the loop never blocks) and falls back
    to its ``store_fallback`` when Redis cannot answer within ``timeout``. While Redis is
    unreachable everything runs on local state, the store reports itself degraded
    (:attr:`degraded`, a log record, a counter), and it resynchronises when Redis is back: its
    thread tries to reach it with backoff (``flush_interval`` doubling to 5 s), but every round
    while a rate limiter's calls take their fallback (:meth:`wanted`) or a shared breaker has
    calls (:meth:`_back_off`), and the patterns use Redis again as soon as it did.
    However many threads or coroutines ask at once, the store keeps at most ``max_connections``
    connections per client (the sync one, and each event loop's): the others wait for one
    within ``timeout``, and a wait past it is a failed operation (the store degrades).

    A process forked from one that uses the store (the workers of a pre-fork server, a
    ``multiprocessing`` pool with the ``fork`` method) is a replica of its own: in the child the
    store takes a new replica id, starts its threads again (the parent's did not come along) and
    reads the cluster's state, so the workers' trips, counts and probes are shared as those of
    separate replicas. Transitions the parent had queued are published by the parent only.

    Attributes (read-only):
        namespace: The prefix of every key (one per service), percent-encoded there as names are
            (:attr:`key_prefix`).
        key_prefix: The namespace as it begins every key (``:`` and ``%`` percent-encoded).
        degraded: Whether Redis is unreachable now (local state only).
        outages: Times the store became unreachable.
        errors: Redis operations that failed (each counted once).
        max_connections: The most connections of its client, and of each event loop's async
            client, open at once (callers beyond wait, within ``timeout``).
        channel: The pub/sub channel of the namespace's transitions (``NAMESPACE:events``, and
            ``NAMESPACE:events:N`` on database ``N`` other than 0: :func:`_channel`).
        lease_ttl_ms: ``probe_lease_ttl`` in milliseconds; key_ttl_ms: ``key_ttl`` in milliseconds.
    """

    __slots__ = (
        "__weakref__",
        "_async_clients",
        "_channel",
        "_client",
        "_closed",
        "_degraded",
        "_drained",
        "_errors",
        "_fallbacks",
        "_id",
        "_interval",
        "_key_prefix",
        "_key_ttl_ms",
        "_lease_ttl_ms",
        "_links",
        "_lock",
        "_made",
        "_max_connections",
        "_namespace",
        "_ops",
        "_outages",
        "_pending",
        "_reached",
        "_redis_errors",
        "_reports_left",
        "_resync",
        "_resync_all",
        "_resync_every",
        "_serial",
        "_sockets",
        "_sub_client",
        "_sub_sockets",
        "_subscribed",
        "_subscription",
        "_synced",
        "_threads",
        "_timeout",
        "_usage_errors",
        "_wake",
    )

    def __init__(
        self,
        client: Any,
        subscriber: Any,
        *,
        namespace: str,
        timeout: float,
        flush_interval: float,
        probe_lease_ttl: float | None,
        key_ttl: float,
        resync_interval: float = 5.0,
        max_connections: int = _MAX_CONNECTIONS,
        sockets: tuple[Sockets, Sockets] | None = None,
        async_client_factory: Callable[[], Any] | None = None,
    ) -> None:
        """Make a store of two clients of one server; :meth:`from_url` makes them, and checks the rest.

        Args:
            client: The ``redis.Redis`` of the store's operations (its thread, a rate limiter's
                permits asked from a thread).
            subscriber: Another ``redis.Redis``, for the transitions other replicas publish.
            namespace: As :meth:`from_url`'s.
            timeout: As :meth:`from_url`'s.
            flush_interval: As :meth:`from_url`'s.
            probe_lease_ttl: As :meth:`from_url`'s.
            key_ttl: As :meth:`from_url`'s.
            resync_interval: As :meth:`from_url`'s.
            max_connections: As :meth:`from_url`'s.
            sockets: The sockets each client opens (:meth:`close` shuts them down).
            async_client_factory: A function of no argument that makes a ``redis.asyncio.Redis``
                of the same server: the client of a rate limiter's permits asked from a coroutine,
                called once per event loop (a client belongs to the loop it runs on) and closed
                when that loop shuts down. ``None``: the store takes no permit asked from a
                coroutine (a ``TypeError`` to that caller, the store still shared for the
                others). :meth:`from_url` gives one.

        Raises:
            TypeError: ``client`` or ``subscriber`` is not a sync ``redis.Redis`` (a
                ``redis.asyncio.Redis``, a URL, another object), ``async_client_factory`` is not
                callable with no argument, or a setting has the wrong type: the message names the
                parameter (``RedisStore.<parameter>``).
            ValueError: A setting is out of range, by :meth:`from_url`'s rules.
        """
        _check_client("client", client)
        _check_client("subscriber", subscriber)
        check_callable("RedisStore", "async_client_factory", async_client_factory, optional=True)
        check_called_with("RedisStore", "async_client_factory", async_client_factory)
        durations = {
            "timeout": timeout,
            "flush_interval": flush_interval,
            "probe_lease_ttl": probe_lease_ttl,
            "key_ttl": key_ttl,
            "resync_interval": resync_interval,
        }
        seconds, max_connections = _check_settings("RedisStore", namespace, durations, max_connections)
        self._client = client
        self._sub_client = subscriber
        self._sockets, self._sub_sockets = sockets or (Sockets(), Sockets())
        """The sockets each client opens: :meth:`close` shuts them down, ending what waits on them."""
        self._namespace = namespace
        self._key_prefix = key_part(namespace)
        """The first part of every key: the namespace percent-encoded as a name is (:func:`key_part`),
        so that no key of one namespace is another's (``svc:cb``'s breaker ``db`` and ``svc``'s
        breaker ``cb`` of key ``db`` had one state, ``svc:cb:cb:db:state``)."""
        self._timeout = seconds["timeout"]
        self._max_connections = max_connections
        self._interval = seconds["flush_interval"]
        self._resync_every = seconds["resync_interval"]
        self._lease_ttl_ms = round(seconds["probe_lease_ttl"] * 1000)
        self._key_ttl_ms = round(seconds["key_ttl"] * 1000)
        self._channel = _channel(namespace, client)
        self._id = uuid.uuid4().hex[:12]
        self._serial = itertools.count(1)
        self._lock = fork_safe(threading.Lock())
        self._links: list[SharedBreaker] = []
        self._pending: dict[int, tuple[SharedBreaker, StateChanged]] = {}
        self._reports_left: list[tuple[str, str]] = []
        """The counts reports (key, field) of breakers no longer shared: deleted next round."""
        self._resync_all = True
        self._resync: list[SharedBreaker] = []
        """Breakers shared since the last round: their cluster state is read in the next one."""
        self._wake = threading.Event()
        """Work for the store's thread (a breaker's failure, probe or transition, a rate limiter's
        fallback, a new breaker, :meth:`close`): its next round now, or, while Redis is away, its
        next attempt one round after the last (:meth:`_back_off`)."""
        self._closed = threading.Event()
        self._reached = threading.Event()
        """Set when the store's thread reaches Redis again (or it closes): the subscriber retries now."""
        self._drained = threading.Event()
        """Set while no transition is being sent: :meth:`close` waits for one in flight to be sent."""
        self._drained.set()
        self._synced = threading.Event()
        """Set while every shared breaker's cluster state was read since the subscription began
        (:meth:`wait_synced`); cleared by a new breaker, an outage, a subscription lost."""
        self._subscription = 0
        """The number of the subscriber's latest subscription (each one counted)."""
        self._subscribed = False
        """Whether that subscription is up now."""
        self._threads: tuple[threading.Thread, ...] = ()
        self._degraded = False
        self._outages = self._errors = 0
        self._ops = Counter()
        self._fallbacks = Counter()
        self._redis_errors, self._usage_errors = _redis_errors()
        """The errors of an operation; those the server answers to one operation (not an outage),
        and the exceptions among them."""
        self._async_clients = LoopClients(self._async_client_maker(async_client_factory))
        """One ``redis.asyncio`` client per event loop (:mod:`otel_resilience.store.loops`)."""
        self._made: tuple[str, dict[str, Any]] | None = None
        """The URL and settings :meth:`from_url` used (:meth:`__reduce__`); ``None``: built of clients."""
        STORES.register(self)

    namespace = ReadOnly[str](
        "_namespace", "The prefix of every key (one per service), percent-encoded there (:attr:`key_prefix`)."
    )
    name = ReadOnly[str]("_namespace", "The store's namespace (its telemetry attribute ``store.namespace``).")
    key_prefix = ReadOnly[str](
        "_key_prefix", "The namespace as it begins every key (``:`` and ``%`` percent-encoded)."
    )
    timeout = ReadOnly[float]("_timeout", "Seconds any Redis operation may take before it counts as failed.")
    max_connections = ReadOnly[int](
        "_max_connections",
        "The most connections of its client, and of each event loop's async client, open at once.",
    )
    channel = ReadOnly[str](
        "_channel",
        "The pub/sub channel of the namespace's transitions (``NAMESPACE:events``, ``NAMESPACE:events:N``"
        " on database N other than 0).",
    )
    lease_ttl_ms = ReadOnly[int](
        "_lease_ttl_ms", "``probe_lease_ttl`` in milliseconds, as probe leases are set."
    )
    key_ttl_ms = ReadOnly[int]("_key_ttl_ms", "``key_ttl`` in milliseconds, as a breaker's keys expire.")
    degraded = ReadOnly[bool]("_degraded", "Whether Redis is unreachable now (local state only).")
    outages = ReadOnly[int]("_outages", "Times the store became unreachable.")
    errors = ReadOnly[int]("_errors", "Redis operations that failed (each counted once).")

    ops = CounterValue(
        "_ops",
        "Redis operations sent (scripts, reads, publications, permits, the subscriber's SUBSCRIBEs, PINGs).",
    )
    fallback_permits = CounterValue(
        "_fallbacks", "Permits its rate limiters gave while it was unreachable (store_fallback='open')."
    )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "otel_resilience",
        timeout: float | timedelta = 0.25,
        flush_interval: float | timedelta = 0.1,
        probe_lease_ttl: float | timedelta | None = None,
        key_ttl: float | timedelta = 86_400.0,
        resync_interval: float | timedelta = 5.0,
        max_connections: int = _MAX_CONNECTIONS,
    ) -> RedisStore:
        """Return a store on the Redis server at ``url`` (``redis://host:port/db``); connect lazily.

        Args:
            url: A ``redis://`` (or ``rediss://``, ``unix://``) URL. Its query may carry redis-py's
                options that each of the store's clients takes, except those the store sets
                itself for every client it makes (``socket_timeout``, ``socket_connect_timeout``
                and ``timeout``: from ``timeout``; ``max_connections``; ``retry``): one of them is
                refused, whatever its value, since redis-py lets the URL win over the store's.
            namespace: The prefix of every key and channel: one per service (its replicas share
                it; two services with one Redis use two namespaces). In keys its ``:`` and ``%``
                are percent-encoded, as a name's are: ``svc:cb`` and ``svc`` never share a key.
            timeout: Seconds any Redis operation may take (connecting included) before it counts
                as failed and the store as degraded; a rate limiter's call waits at most this.
            flush_interval: Seconds between two reports of a breaker's counts (a failure is
                reported at once).
            probe_lease_ttl: Seconds a half-open probe lease lasts unless its holder renews it
                (it does while its probe runs, every third of it, in the rounds of the store's
                thread): a crashed prober blocks the others this long. At least 3 times
                ``flush_interval + timeout``, a round of that thread with its round trip (a
                shorter lease expired while its probe ran, and another replica probed too).
                ``None``: 5 s, or those 3 rounds if longer (a ``timeout`` over 1.56 s).
            key_ttl: Seconds a breaker's cluster state is kept after its last change (at least 0.001).
            resync_interval: Seconds between two reads of every shared breaker's cluster state,
                which heals a transition message lost in a partition (and notices a slow store
                while nothing else asks it), and between two reports of its counts that did not
                change, if it has any (at most 30 s apart, or half a longer time window: the
                other replicas drop a report older than both), which brings back counts the
                server lost; the subscriber, with no message for that long, PINGs its connection
                and replaces one that gives no answer within ``timeout`` (dropped without a word
                by a NAT or a vanished host).
            max_connections: The most connections open at once of the store's client (its thread
                and the threads asking for permits) and, apart, of each event loop's async client
                (1 to 10 000, a Redis server's default ``maxclients``; the subscriber has one
                more of its own). An operation finding them
                all in use waits for one within its ``timeout`` (the wait included); past it, it
                fails as a slow store does: the store degrades until its thread reaches Redis
                again, and the calls meanwhile go on with local state.

        Each duration is seconds or a ``timedelta``.

        Raises:
            ImportError: The ``redis`` package is not installed (``pip install otel-resilience[redis]``).
            TypeError: An argument has the wrong type (the message names ``RedisStore.from_url.<arg>``).
            ValueError: An argument is out of range, or ``url`` is not a Redis URL, sets an option
                the store sets itself (``?socket_timeout=``...) or one its clients do not take.
        """
        _check_url_type(url)
        _check_database(url)
        durations = {
            "timeout": timeout,
            "flush_interval": flush_interval,
            "probe_lease_ttl": probe_lease_ttl,
            "key_ttl": key_ttl,
            "resync_interval": resync_interval,
        }
        seconds, pooled = _check_settings(_OWNER, namespace, durations, max_connections)
        client, subscriber, sockets, async_factory = _connect(url, seconds["timeout"], pooled)
        store = cls(
            client,
            subscriber,
            namespace=namespace,
            max_connections=pooled,
            sockets=sockets,
            async_client_factory=async_factory,
            **seconds,
        )
        store._made = (url, {"namespace": namespace, "max_connections": pooled, **seconds})
        return store

    def _async_client_maker(self, factory: Callable[[], Any] | None) -> Callable[[], Any]:
        """What makes an event loop's client (:class:`LoopClients`): ``factory``, its client checked.

        Called once per loop, on its first permit asked from a coroutine. A store with no factory
        refuses that permit, and a factory's client that is no ``redis.asyncio.Redis`` is refused:
        a ``TypeError`` to the caller, never an outage (one such caller degraded the store for
        every other, the threads' included).
        """
        import redis.asyncio  # noqa: PLC0415 - an optional dependency, imported by _check_client already

        namespace = self._namespace

        def make() -> Any:
            if factory is None:
                msg = (
                    f"RedisStore {namespace!r} has no async client to ask a permit from a coroutine: "
                    "build it with RedisStore.from_url, or give the constructor async_client_factory="
                )
                raise TypeError(msg)
            made = factory()
            if not isinstance(made, redis.asyncio.Redis):
                msg = (
                    "RedisStore.async_client_factory must make a redis.asyncio.Redis (an event loop's "
                    f"client), made {describe(made)}"
                )
                raise TypeError(msg)
            return made

        return make

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle as a new store of the same URL and settings: in a worker process, a replica of its own.

        A store is a process's threads, locks and connections: a config naming it, sent to a
        ``spawn`` or ``forkserver`` worker (``multiprocessing``, a process pool), gives the
        worker a store of its own on the same Redis and namespace, as a forked worker's store is
        one (:meth:`_forked`). The configs that name this one share the new one in one pickle.

        Raises:
            TypeError: It was not made by :meth:`from_url` (built of clients: no URL to make another of).
        """
        if self._made is None:
            msg = "RedisStore: only a store made by RedisStore.from_url is pickled (made again of its URL)"
            raise TypeError(msg)
        return (_remade, self._made)

    def __copy__(self) -> RedisStore:
        """A copy is the store itself: configs copied in this process share its threads and connections."""
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> RedisStore:
        """As :meth:`__copy__`: a deep copy of a config names the same store."""
        return self

    # -- what patterns ask (SharedStore) ---------------------------------------------------

    def share_breaker(self, breaker: CircuitBreaker) -> None:
        """Share ``breaker`` from now on: its counts, its transitions and its probes."""
        from otel_resilience.patterns.circuit_breaker import shared  # noqa: PLC0415 - the layer above

        link = SharedBreaker(self, breaker, f"{self._id}.{next(self._serial)}", current_key())
        breaker._core.watch(link.on_change)
        shared.attach(breaker._core, link)
        with self._lock:
            self._links = [*(alive for alive in self._links if alive.breaker is not None), link]
            self._resync.append(link)  # read in the next round: this one only, not every breaker
            self._synced.clear()
        # Listed first, so that an outage found from now on makes it local too. Local while the
        # store is degraded or closed (a closed store grants no lease, ever); else no lease yet.
        link.rejoin()
        self._start()
        self._wake.set()

    def local_breakers(self) -> list[CircuitBreaker]:
        """Return the breakers it shares that run on local state now (:attr:`SharedBreaker.local_only`).

        Every one of them while the store is :attr:`local_only`; otherwise those whose keys the
        server refuses (``WRONGTYPE``), until it takes them again. Takes no lock (a collection
        calls it): the list of links is only ever replaced, never changed in place.
        """
        return [breaker for link in self._links if link.local_only and (breaker := link.breaker) is not None]

    def unshare_breaker(self, breaker: CircuitBreaker) -> None:
        """Stop sharing ``breaker``: no more reports, leases or adoptions (a queued transition is still sent).

        The probe leases its link holds expire after ``probe_lease_ttl``, as a crashed prober's do.
        Its counts leave the cluster in the store's next round (:meth:`_delete_reports`): left
        to expire (60 s), the streak of a policy key's breaker evicted while it held failures
        went on counting beside the breaker its key came back with, whose own success did not
        reset it (2 failures, an eviction, a success and 1 failure opened a threshold of 3).
        """
        with self._lock:
            links = [link for link in self._links if link.breaker is breaker]
            self._links = [link for link in self._links if link.breaker not in (breaker, None)]
        for link in links:
            breaker._core.unwatch(link.on_change)
            link.detach()
        reports = [report for link in links if (report := link.reported()) is not None]
        if reports:
            with self._lock:
                self._reports_left.extend(reports)
            self._wake.set()

    def rate_rules(self, name: str, config: RateLimiterConfig) -> ClusterRules:
        """Return the rules of a rate limiter whose budget all replicas share.

        Its key is ``NAMESPACE:rl:ALGORITHM:NAME`` (``NAME:KEY`` for a policy's key; each part
        percent-encoded, :attr:`key_prefix` and :func:`~otel_resilience.store.breaker.key_name`): the
        algorithm is part of it, so two limiters of one name and different algorithms (a rolling
        deploy or a reload that changes ``algorithm``) never share a key (a string for
        ``"token_bucket"``, a list for ``"sliding_window"``), and each has its own budget. A
        token bucket has a second key, ``NAMESPACE:rl:token_bucket-limits:NAME``: the rate and
        burst its bucket was last taken with, by which a reload carries the bucket over
        (:data:`~otel_resilience.store.scripts.TOKEN_BUCKET`).
        """
        from otel_resilience.store.rate import ClusterRules  # noqa: PLC0415 - built on demand

        algorithm, named = config.algorithm, key_name(name, current_key())
        keys: tuple[str, ...] = (f"{self._key_prefix}:rl:{algorithm}:{named}",)
        if algorithm == "token_bucket":
            keys = (*keys, f"{self._key_prefix}:rl:{algorithm}-limits:{named}")
        return ClusterRules(self, keys, config, name)

    # -- one script for a caller (a rate limiter's permit) ---------------------------------

    def _run_script(self, script: str, keys: Sequence[str], argv: Sequence[object], seconds: float) -> Any:
        """Run ``script`` on ``keys`` in this thread (at most ``seconds``); return its reply or the error.

        ``seconds`` is ``timeout``, or less: what a caller's deadline leaves of it.
        """
        next(self._ops)
        try:
            with within(seconds):  # connecting and the handshake included
                return self._client.eval(script, len(keys), *keys, *argv)
        except self._redis_errors as error:
            return error
        except Exception as error:  # noqa: BLE001 - raised again unless close() ended the operation
            return self._closed_under(error)

    async def _run_script_async(self, script: str, keys: Sequence[str], argv: Sequence[object]) -> Any:
        """Run ``script`` on ``keys`` from the running loop, without blocking it; reply or error.

        Each event loop gets its own ``redis.asyncio`` client, made on its first use and closed
        when the loop shuts down (:class:`~otel_resilience.store.loops.LoopClients`). The wait is
        bounded by ``timeout``, as in :meth:`_run_script`.

        A coroutine closed while it waits (its loop closed with it pending, then freed by the
        collector) closes quietly: redis-py, dropping a connection it was making, asks for the
        running task, and there is none, so its ``RuntimeError`` took the place of the close
        (``Exception ignored in`` the caller's coroutine, in whichever thread collected).
        """
        next(self._ops)
        try:
            client = await self._async_clients.client()
            return await bounded(client.eval(script, len(keys), *keys, *argv), self._timeout)
        except self._redis_errors as error:
            return error
        except Exception as error:  # noqa: BLE001 - raised again unless close() ended the operation
            closing = _closing(error)
            if closing is not None:
                raise closing from None
            return self._closed_under(error)

    def _closed_under(self, error: Exception) -> Exception:
        """Return ``error`` of an operation that :meth:`close` ended (its connection shut under it).

        redis-py 5 raises what the closed socket raised (``ValueError: I/O operation on closed
        file``) where later versions raise a ``ConnectionError``: either way the operation failed
        and the caller goes on with its local state. Any other error is raised.
        """
        if not self._closed.is_set():
            raise error
        return error

    # -- health ----------------------------------------------------------------------------

    def answered(self, error: BaseException) -> bool:
        """Whether ``error`` is the server's answer to one operation (it is reachable), not an outage.

        A ``ResponseError`` (``WRONGTYPE``, a script's error) is such an answer, unless it says the
        server cannot serve anyone now (``READONLY`` after a failover, ``OOM``, ``MASTERDOWN``,
        or a code of :data:`_OUTAGE_CODES`: ``NOREPLICAS``, ``MISCONF``, ``BUSY``): those are outages.
        """
        usage, outages = self._usage_errors
        if not isinstance(error, usage) or isinstance(error, outages):
            return False
        code = getattr(error, "status_code", None) or str(error).partition(" ")[0]
        return code not in _OUTAGE_CODES

    def refused(self) -> None:
        """Count an operation the (reachable) server refused: an error of that call, not an outage."""
        with self._lock:
            self._errors += 1

    def failed(self, error: BaseException) -> None:
        """Count a failed Redis operation; the first one of an outage logs a warning and degrades.

        An operation that fails because the store closed under it (a call in flight, its
        connection closed by :meth:`close`) is no outage: nothing is counted or logged.
        """
        if self._closed.is_set():
            return
        with self._lock:
            self._errors += 1
            if self._degraded:
                return
            self._degraded = True
            self._outages += 1
            self._synced.clear()
            links = list(self._links)
        _LOG.warning(
            "shared store %r unreachable (%s: %s): breakers and rate limiters run on local state",
            self._namespace,
            type(error).__name__,
            str(error) or self._unsaid(error),
        )
        for link in links:
            link.go_local()

    def _unsaid(self, error: BaseException) -> str:
        """What an outage's error with no message of its own means (a wait cut at ``timeout`` has none)."""
        if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
            return f"no answer within the store's timeout, {self._timeout:g} s"
        return "no message"

    @property
    def local_only(self) -> bool:
        """Whether shared patterns run on local state now (the store is degraded or closed)."""
        return self._degraded or self._closed.is_set()

    def wait_synced(self, timeout: float | timedelta) -> bool:
        """Wait until each breaker it shares has the cluster's state; return whether it did in ``timeout``.

        A breaker's calls never wait on Redis: a replica reads the cluster's state in its store's
        first rounds, and a call made before then is judged on the breaker's own state. One that
        started while an operator's ``force_open`` was in force cluster-wide sent its first calls
        (3, in its first 7-27 ms) to the isolated dependency. A service that calls this before
        it serves (at start-up, once its breakers are made) sends none: the store is in sync
        once its subscription is up and, since it began, its thread read the cluster's state of
        every breaker shared with it (one made later is waited for too, as after an outage or a
        lost subscription). With no shared breaker it is in sync at once (a rate limiter asks
        Redis at each permit). Redis unreachable (or the store closed), it returns ``False``
        once ``timeout`` passed (at once if closed), raising nothing: the breakers run on their
        own meanwhile, as they do whenever Redis is away.

        Args:
            timeout: The longest wait, in seconds (or a ``timedelta``); ``0`` only looks.

        Returns:
            Whether the store is in sync (``False``: ``timeout`` passed first, or it is closed).

        Raises:
            TypeError, ValueError: ``timeout`` is no duration (seconds or a ``timedelta``) ``>= 0``.
        """
        deadline = time.monotonic() + check_duration(_WAIT_OWNER, "timeout", timeout, allow_zero=True)
        while not self._in_sync():
            left = deadline - time.monotonic()
            if left <= 0 or self._closed.is_set():
                return False
            self._synced.wait(min(left, _CLOSE_POLL))
        return True

    async def wait_synced_async(self, timeout: float | timedelta) -> bool:
        """As :meth:`wait_synced`, for a coroutine (an async start-up): the event loop runs on meanwhile.

        Cancelled, it stops waiting at once.

        Args:
            timeout: As :meth:`wait_synced`'s.

        Returns:
            As :meth:`wait_synced`.

        Raises:
            TypeError, ValueError: As :meth:`wait_synced`.
        """
        deadline = time.monotonic() + check_duration(_WAIT_OWNER, "timeout", timeout, allow_zero=True)
        while not self._in_sync():
            left = deadline - time.monotonic()
            if left <= 0 or self._closed.is_set():
                return False
            await asyncio.sleep(min(left, _SYNC_POLL))
        return True

    def _in_sync(self) -> bool:
        """Whether each breaker it shares has the cluster's state (:meth:`wait_synced`); never, closed."""
        return not self._closed.is_set() and (self._synced.is_set() or not self._live())

    def wanted(self) -> None:
        """Say that a caller took local state for want of Redis (a rate limiter's fallback answered it).

        It wakes the store's thread, as a shared breaker's failure, probe or transition does: while
        Redis is away, the thread then tries to reach it again ``flush_interval`` after its last
        failed attempt, not after the rest of its backoff (doubling to 5 s, :meth:`_back_off`), so
        that a limiter whose calls go on, or a breaker that has something to tell the cluster,
        follows Redis back within a round or two, by the one rule of reachability (the store's
        write reaching it, :meth:`_run`). With no such call the store backs off as before. Takes
        no lock unless the event is not set yet.
        """
        if not self._wake.is_set():
            self._wake.set()

    def _recovered(self) -> None:
        """The store's thread reached Redis again: shared from now on, each breaker probing on leases."""
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
        for link in self._live():  # their states were read while degraded: with local probe limits
            link.rejoin()
        self._reached.set()
        _LOG.warning("shared store %r reachable again: state resynchronised", self._namespace)

    # -- the background threads ------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            self._threads = (
                threading.Thread(
                    target=self._run, name=f"otel_resilience store {self._namespace}", daemon=True
                ),
                threading.Thread(
                    target=self._listen, name=f"otel_resilience sub {self._namespace}", daemon=True
                ),
            )
        for thread in self._threads:
            thread.start()

    def _forked(self) -> None:
        """In a forked child: a replica of its own, with its background threads (see the class doc)."""
        closed = self._closed.is_set()
        self._wake = threading.Event()  # their locks may have been held by a thread of the parent
        self._closed = threading.Event()
        self._reached = threading.Event()
        self._drained = threading.Event()
        self._drained.set()  # the parent's publications are the parent's
        self._synced = threading.Event()  # the child's threads read the cluster's state again
        self._subscribed = False
        if closed:
            self._closed.set()
        self._id = uuid.uuid4().hex[:12]
        self._pending = {}
        self._reports_left = []  # the parent's to delete
        self._resync_all = True
        self._resync = []
        for link in self._links:
            link.forked(f"{self._id}.{next(self._serial)}")
        started, self._threads = bool(self._threads), ()
        if started and not closed:
            self._start()

    def _queue(self, link: SharedBreaker, change: StateChanged, *, replace: bool = True) -> None:
        """Queue a local transition for publishing (the latest per breaker wins, unless not ``replace``)."""
        with self._lock:
            if replace:
                self._pending[id(link)] = (link, change)
                link._late = self._degraded  # made while Redis was away: others may act meanwhile
                link._made_in = link.epoch
            elif self._pending.setdefault(id(link), (link, change))[1] is change:
                link._late = True  # its publication failed: sent late
        self._wake.set()

    def _queued(self, link: SharedBreaker) -> bool:
        """Whether a transition of ``link`` waits to be published (later than any in flight)."""
        with self._lock:
            return id(link) in self._pending

    def _run(self) -> None:
        """The store's thread: publish, report, hold leases, resynchronise; back off while down."""
        pause = self._interval
        last_resync = last_tick = 0.0
        while not self._closed.is_set():
            self._wake.wait(self._interval)
            early = last_tick + _MIN_GAP - time.monotonic()
            if early > 0 and not self._pending:  # failures close together are reported together
                self._closed.wait(early)
            self._wake.clear()
            try:
                now = last_tick = time.monotonic()
                probed = self._degraded
                if probed:  # work from now on (the wake-up was cleared) wants the next attempt
                    self._probe()
                    self._resync_all = True
                self._drain()
                self._delete_reports()
                if self._read_states(now - last_resync >= self._resync_every):
                    last_resync = now
                if probed:  # an outage another thread met during this round is the next probe's
                    self._recovered()
                tick(self._client, self._live(), now)
                pause = self._interval
            except self._redis_errors as error:
                self.failed(error)
                self._back_off(pause)
                pause = min(pause * 2, _RETRY_MAX)
            except Exception:  # noqa: BLE001 - the store's thread must outlive any one bug
                if not self._closed.is_set():  # not the end of a round trip close() shut down
                    _LOG.exception("shared store %r: background work failed", self._namespace)

    def _back_off(self, pause: float) -> None:
        """Wait before the next attempt to reach Redis: ``pause``, or one round if there is work for it.

        Work since the last attempt began (the thread's wake-up: a breaker's failure, probe or
        transition, a rate limiter's call answered by its fallback, :meth:`wanted`) cuts the wait
        to ``flush_interval`` after the failure: the patterns' return to Redis follows the
        store's, which waited up to 5 s after Redis was back. So do a shared breaker's calls that
        succeed (or are rejected): it has counts to report and the cluster's state to hear, and
        stayed on local state up to 5 s after Redis was back while one whose calls failed
        rejoined in a round. This thread looks for them each round of the wait (:meth:`_calls`),
        rather than a call waking it: that would cost every call that succeeds.
        """
        failed_at = time.monotonic()
        calls = self._calls()
        while (left := failed_at + pause - time.monotonic()) > 0:
            if self._wake.wait(min(left, self._interval)):  # work, or close()
                self._closed.wait(max(0.0, failed_at + self._interval - time.monotonic()))
                return
            if self._calls() != calls:  # a round after the failure, with calls since: try now
                return

    def _calls(self) -> int:
        """The calls the shared breakers have ended (read by this thread: a call pays nothing for it)."""
        return sum(
            breaker._core.stats.total_requests
            for link in self._live()
            if (breaker := link.breaker) is not None
        )

    def _probe(self) -> None:
        """Try to reach the store again with a write.

        A server that answers reads but refuses writes (read-only after a failover, out of
        memory) cannot serve the store: it stays degraded, rather than coming back for one
        round and failing again at its next write, an outage and two log records each time.
        """
        next(self._ops)
        self._client.set(f"{self._key_prefix}:alive", self._id, px=_PROBE_TTL_MS)

    def _read_states(self, due: bool) -> bool:
        """Read the cluster state of every breaker (``due``, or after reconnecting), else of new ones only.

        A new breaker's state is read in the round after it is shared, without reading every
        other breaker's again: a service making breakers one by one (a key each) costs one read
        per breaker, not one per breaker it already has. Returns whether every breaker was read.
        """
        with self._lock:
            fresh, self._resync = self._resync, []
            everything, self._resync_all = self._resync_all or due, False
            subscription = self._subscription if self._subscribed else 0
        links = self._live() if everything else [link for link in fresh if link.breaker is not None]
        read_states(self._client, links)
        with self._lock:  # read since the subscription began, and no breaker left to read: in sync
            if (
                subscription == self._subscription
                and self._subscribed
                and not (self._resync or self._degraded)
            ):
                self._synced.set()
        return everything

    def _live(self) -> list[SharedBreaker]:
        with self._lock:
            return [link for link in self._links if link.breaker is not None]

    def _drain(self) -> None:
        """Publish the queued transitions, pipelined (:func:`publish_states`); one that fails stays queued.

        Unless a newer one of its breaker came meanwhile. The store closing stops them between
        two round trips (:meth:`close` waits for the request in flight to be sent, not for all,
        which with thousands of trips queued and a slow Redis were seconds).
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            with on_sent(self._drained.set):  # sent: the server publishes it, replied or not
                publish_states(self._client, list(pending.values()), self._publishing)
        finally:
            self._drained.set()

    def _delete_reports(self) -> None:
        """Delete the counts reports of the breakers no longer shared (:meth:`unshare_breaker`), pipelined.

        Those the round trip did not delete (an outage) expire as a gone replica's do.
        """
        with self._lock:
            reports, self._reports_left = self._reports_left, []
        if not reports:
            return
        pipe = self._client.pipeline(transaction=False)
        for key, field in reports:
            next(self._ops)
            pipe.hdel(key, field)
        pipe.execute(raise_on_error=False)  # a key the server refuses holds no report to delete

    def _publishing(self) -> bool:
        """Before each round trip of :meth:`_drain`: whether to stop (the store closed); marks one in flight.

        Cleared before the store is looked at, so that either nothing is sent or :meth:`close`
        waits for the request to be sent.
        """
        self._drained.clear()
        return self._closed.is_set()

    def _listen(self) -> None:
        """The subscriber thread: take the transitions other replicas publish.

        After a failure it retries with backoff, and at once when the store's thread reaches
        Redis again: a store that says it is back is listening again within a round trip, not
        after the rest of the subscriber's backoff (up to 5 s in which no trip reached it). A
        subscription the server refuses (an ACL without ``SUBSCRIBE``) is no outage: the rest of
        the store works, and trips reach this replica at each resync only; it is counted in
        :attr:`errors`, logged once, and tried again with backoff.

        With no message for ``resync_interval`` it PINGs its connection: one that gives no answer
        within ``timeout`` was dropped without a word (a NAT's idle timeout, a server's host that
        vanished in a failover), and no error would ever come from it while the server had
        dropped the subscription; it is replaced at once, counted in :attr:`errors` and logged,
        with no outage (a new connection that fails is one).
        """
        pause = self._interval
        warned = False
        while not self._closed.is_set():
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)
            try:
                next(self._ops)
                pubsub.subscribe(self._channel)  # connects: a socket close() shuts down, or none once closed
                with self._lock:
                    self._subscription += 1
                    self._subscribed = True
                    self._resync_all = True  # messages may have been missed while unsubscribed
                self._wake.set()
                due, pinged = time.monotonic() + self._resync_every, False
                while not self._closed.is_set():  # set before close() shuts the socket down
                    left = due - time.monotonic()
                    if left <= 0:  # no message for resync_interval: is the connection still there?
                        self._ping(pubsub, again=pinged)
                        due, pinged, left = time.monotonic() + self._timeout, True, self._timeout
                    message = self._next_message(pubsub, min(left, _SUBSCRIBER_POLL), pinged=pinged)
                    pause = self._interval  # subscribed (a refusal is raised by the first read)
                    if message is not None:  # any message, a PING's answer too: the connection works
                        due, pinged = time.monotonic() + self._resync_every, False
                        if message["type"] == "message":
                            self._dispatch(message["data"])
            except _NoAnswerError:
                self.refused()
                if not self._degraded:  # one warning per outage: the store's thread logged it
                    _LOG.warning(
                        "shared store %r: its subscription's connection gave no answer to PING within %s s "
                        "(dropped by the network): subscribing again",
                        self._namespace,
                        self._timeout,
                    )
            except self._redis_errors as error:
                if self.answered(error):
                    self.refused()
                    if not warned:
                        warned = True
                        _LOG.warning(
                            "shared store %r refused its subscription (%s: %s): other replicas' "
                            "transitions reach this one every resync_interval only",
                            self._namespace,
                            type(error).__name__,
                            error,
                        )
                    self._closed.wait(pause)
                else:
                    self._reached.clear()
                    self.failed(error)
                    if not self._closed.is_set():  # close() sets _reached after _closed
                        self._reached.wait(pause)  # or at once when the store's thread reaches Redis again
                pause = min(pause * 2, _RETRY_MAX)
            except Exception:  # noqa: BLE001
                if not self._closed.is_set():  # not the end of a socket close() shut down
                    _LOG.exception("shared store %r: subscriber failed", self._namespace)
                self._closed.wait(pause)
            finally:
                with self._lock:  # a transition may be missed until it subscribed again and read
                    self._subscribed = False
                    self._synced.clear()
                pubsub.close()

    def _next_message(self, pubsub: Any, timeout: float, *, pinged: bool) -> Any:
        """The subscriber's next message within ``timeout`` (``None``: none came).

        While a PING is unanswered, the server refusing it (an ACL without ``PING``) answers it
        all the same: the connection works, and the subscription is kept.
        """
        try:
            return pubsub.get_message(timeout=timeout)
        except self._usage_errors[0] as error:
            if pinged and self.answered(error):
                return {"type": "pong", "data": b""}
            raise

    def _ping(self, pubsub: Any, *, again: bool) -> None:
        """PING the subscriber's connection, unless ``again`` (its last PING got no answer: raise).

        Raises:
            _NoAnswerError: ``again``: the connection is gone (:meth:`_listen` replaces it).
        """
        if again:
            raise _NoAnswerError
        next(self._ops)
        pubsub.ping()

    def _dispatch(self, data: bytes | str) -> None:
        """Hand one published transition (``origin|name|epoch|state|ms|reason``) to its breakers."""
        try:
            text = data.decode() if isinstance(data, bytes) else data
            origin, _, rest = text.partition("|")
            name, epoch, state, open_ms, reason = rest.rsplit("|", 4)
            period, left_ms = int(epoch), int(open_ms)
        except ValueError:  # not one of ours (anyone may publish on the channel): the resync heals
            return
        for link in self._live():
            if link.key_name == name:
                link.on_message(origin, period, state, left_ms, reason)

    def close(self) -> None:
        """Stop the background threads (shared breakers then run on local state) and disconnect.

        It returns at once, unless a transition is being published: its request is waited for
        until it is sent (not its reply: the server publishes it all the same; at most 2 s,
        which only a connection being made takes), so that a trip the store began telling the
        cluster is not lost; the transitions still queued are not sent. Every other operation
        in flight ends at once, whatever Redis' delay: the sockets of the store's clients are shut down
        (:class:`~otel_resilience.store.deadlines.Sockets`), which ends the subscriber's wait
        for a message or its handshake, a read, a report of counts, a permit asked from a thread
        (its caller gets its fallback; a permit the server took stays spent), and no operation
        opens another; only a TCP connection being made is waited for (at most ``timeout``).
        No thread and no connection of the store is left.
        """
        self._closed.set()
        self._wake.set()
        self._reached.set()
        self._sub_sockets.end()  # nothing the subscriber waits for is the cluster's to lose
        if threading.current_thread() not in self._threads[:1]:  # on the publisher's: nothing in flight
            self._drained.wait(_JOIN)  # a publication in flight: the cluster's, until it is sent
        self._sockets.end()  # each thread then finds the store closed and closes its own connection
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=_JOIN)
        for link in self._live():
            link.go_local()
        retire_store(self)  # its counts stay in the namespace's counters
        self._client.close()
        self._sub_client.close()
        self._async_clients.close()

    def __repr__(self) -> str:
        health = "closed" if self._closed.is_set() else "degraded" if self._degraded else "ok"
        return f"RedisStore(namespace={self._namespace!r}, {health}, ops={self.ops})"


def _remade(url: str, settings: dict[str, Any]) -> RedisStore:
    """Make an unpickled store (:meth:`RedisStore.__reduce__`)."""
    return RedisStore.from_url(url, **settings)


def _closing(error: BaseException) -> GeneratorExit | None:
    """The ``GeneratorExit`` that ``error`` was raised while handling, if any (its coroutine is closing)."""
    seen: BaseException | None = error.__context__
    while seen is not None and not isinstance(seen, GeneratorExit):
        seen = seen.__context__
    return seen


class _NoAnswerError(Exception):
    """The subscriber's PING got no answer within the store's ``timeout`` (never raised out of it)."""


def _forked_in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: every live store becomes the child's replica."""
    for store in STORES.items():
        if isinstance(store, RedisStore):
            store._forked()


if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(after_in_child=_forked_in_child)


def _check_settings(
    owner: str, namespace: object, durations: Mapping[str, object], max_connections: object
) -> tuple[dict[str, float], int]:
    """Check a store's settings (those of :meth:`RedisStore.from_url` and of the constructor).

    Args:
        owner: The messages' owner: ``"RedisStore.from_url"`` or ``"RedisStore"``.
        namespace: The namespace.
        durations: ``timeout``, ``flush_interval``, ``probe_lease_ttl``, ``key_ttl`` and
            ``resync_interval`` by name, each seconds or a ``timedelta``.
        max_connections: The most connections of a client.

    Returns:
        The durations in seconds, by name, and ``max_connections``.

    Raises:
        TypeError: A setting has the wrong type (the message names ``<owner>.<setting>``).
        ValueError: A setting is out of range.
    """
    check_name(owner, "namespace", namespace)
    try:
        cast("str", namespace).encode()
    except UnicodeEncodeError:  # a lone surrogate: no key or channel of it could be sent
        raise fail(owner, "namespace", "a name UTF-8 can encode", namespace) from None
    seconds = {
        name: check_duration(owner, name, value)
        for name, value in durations.items()
        if value is not None or name != "probe_lease_ttl"
    }
    if "probe_lease_ttl" not in seconds:  # the default: 5 s, or the shortest a lease may be if longer
        seconds["probe_lease_ttl"] = max(_LEASE_TTL, _lease_rounds_ms(seconds) / 1000)
    for name in ("probe_lease_ttl", "key_ttl"):
        if seconds[name] < _SHORTEST_TTL:
            rule = f">= {_SHORTEST_TTL} seconds (Redis expires keys in milliseconds)"
            raise fail(owner, name, rule, durations[name])
    _check_lease_ttl(owner, seconds, durations["probe_lease_ttl"])
    return seconds, check_int(
        owner, "max_connections", max_connections, minimum=1, maximum=_MAX_CONNECTIONS_LIMIT
    )


def _check_lease_ttl(owner: str, seconds: dict[str, float], given: object) -> None:
    """Refuse a ``probe_lease_ttl`` under :data:`_LEASE_ROUNDS` rounds of the store's thread.

    A lease's holder renews it a third of its TTL after the last renewal, in a round of the
    store's thread: one every ``flush_interval``, whose round trips take up to ``timeout`` each
    before the store counts an outage. A TTL shorter than three such rounds expired while its
    probe ran, and another replica took the lease and probed too (2 probes at once with
    ``half_open_max_calls=1``: a TTL of 0.3 s and ``flush_interval=0.5``; or 0.3 s,
    ``flush_interval=0.1`` and round trips of 0.3 s within a 1 s ``timeout``, Redis slow but
    never away). Compared in milliseconds, as Redis expires keys: ``3 * 0.1`` is
    0.30000000000000004 seconds, but 300 ms.

    Raises:
        ValueError: It is shorter (the message names ``<owner>.probe_lease_ttl``).
    """
    shortest_ms = _lease_rounds_ms(seconds)
    if round(seconds["probe_lease_ttl"] * 1000) < shortest_ms:
        rule = (
            f">= {_LEASE_ROUNDS} x (flush_interval + timeout) = {shortest_ms / 1000:g} s "
            "(its holder renews it in the store's rounds while its probe runs)"
        )
        raise fail(owner, "probe_lease_ttl", rule, given)


def _lease_rounds_ms(seconds: Mapping[str, float]) -> int:
    """The shortest ``probe_lease_ttl`` in milliseconds: :data:`_LEASE_ROUNDS` rounds of the store's thread.

    A round waits ``flush_interval``, then makes round trips of up to ``timeout`` each
    (:func:`_check_lease_ttl`).
    """
    return _LEASE_ROUNDS * (round(seconds["flush_interval"] * 1000) + round(seconds["timeout"] * 1000))


def _channel(namespace: str, client: Any) -> str:
    """The pub/sub channel of ``namespace``'s transitions on the database of ``client``.

    Redis' pub/sub is the server's, whatever the database a client selected: with one channel
    for all, a trip of a store on database 1 (staging) opened the namesake breakers of a store of
    the same namespace on database 0 (production), which founded it again in its own database
    at its next read. Database 0 keeps the channel it always had (``NAMESPACE:events``), so a
    replica of an earlier version still hears its peers there.
    """
    database = int(client.connection_pool.connection_kwargs.get("db") or 0)
    return f"{namespace}:events" if database == 0 else f"{namespace}:events:{database}"


def _check_client(parameter: str, value: object) -> None:
    """Refuse a ``client`` or ``subscriber`` of :class:`RedisStore` that is not a sync ``redis.Redis``.

    Both are used from the store's threads: a ``redis.asyncio.Redis`` returned coroutines no one
    awaited (its first round failed with "'coroutine' object is not iterable", logged from its
    thread), and another object failed there too, at first use, far from the mistake.

    Raises:
        ImportError: The ``redis`` package is not installed.
        TypeError: ``"RedisStore.<parameter> must be a redis.Redis ..., got ..."``.
    """
    try:
        import redis  # noqa: PLC0415 - an optional dependency, imported where it is used
    except ImportError as error:
        raise ImportError(_NEEDS_REDIS) from error
    if not isinstance(value, redis.Redis):
        rule = "a redis.Redis (a sync client, used from the store's threads; not a redis.asyncio.Redis)"
        raise fail("RedisStore", parameter, rule, value, kind=TypeError)


def _check_url_type(url: object) -> None:
    """Refuse a ``url`` that is not a string."""
    if not isinstance(url, str):
        raise fail(_OWNER, "url", "a redis://, rediss:// or unix:// URL (str)", url, kind=TypeError)


def check_url(url: str) -> None:
    """Refuse ``url`` as :meth:`RedisStore.from_url` would, making no store (no telemetry of one).

    For a command-line option checked before anything runs. The clients made to read the URL
    connect lazily: they are closed unused.

    Raises:
        ImportError: The ``redis`` package is not installed.
        TypeError: ``url`` is not a string.
        ValueError: ``url`` is not a Redis URL the store takes (see :meth:`RedisStore.from_url`).
    """
    _check_url_type(url)
    _check_database(url)
    client, subscriber, *_ = _connect(url, 0.25, 1)
    client.close()
    subscriber.close()


def _check_database(url: str) -> None:
    """Refuse a ``redis://`` or ``rediss://`` URL whose path is no database number, or not the query's.

    redis-py reads ``redis://host/notadb`` as database 0, and ``redis://host/2?db=3`` as database
    3: a typo would share another service's database without a word. (A ``unix://`` URL's path
    is its socket: its database is a query.)
    """
    parts = urllib.parse.urlsplit(url)
    database = parts.path.removeprefix("/")
    if parts.scheme not in ("redis", "rediss") or not database:
        return
    if not database.isdecimal():
        rule = f"a Redis URL whose path is a database number (/0), not /{database}"
        raise fail(_OWNER, "url", rule, redacted_url(url))
    queried = urllib.parse.parse_qs(parts.query).get("db", [])
    if any(not value.isdecimal() or int(value) != int(database) for value in queried):
        rule = f"a Redis URL naming one database (its path says /{database}, its query db={queried[-1]})"
        raise fail(_OWNER, "url", rule, redacted_url(url))


_OWN_OPTIONS: Final = {
    "socket_timeout": "from its timeout= argument: pass it there",
    "socket_connect_timeout": "from its timeout= argument: pass it there",
    "timeout": "from its timeout= argument: pass it there",
    "max_connections": "from its max_connections= argument: pass it there",
    "retry": "to none: its thread retries, with backoff",
}
"""The URL query options redis-py reads that the store sets itself, and what it sets them from.

redis-py lets a URL's query win over the keyword arguments of ``from_url``: ``?socket_timeout=5``
had the subscriber and the store's thread wait 5 s on a silent server while ``timeout`` said
0.25 s, ``?max_connections=`` changed a pool the store's ``max_connections`` still named,
``?timeout=`` made the subscriber's connections raise a ``TypeError`` and ``?retry=`` replaced
the clients' retry policy by a string. The store's arguments are their one source:
:func:`_check_url_options` refuses a URL that sets one, whatever its value."""


def _check_url_options(url: str, parse_url: Callable[[str], dict[str, Any]], pools: Sequence[Any]) -> None:
    """Refuse ``url`` if its query sets an option of :data:`_OWN_OPTIONS` or one ``pools`` cannot take.

    The query is read as redis-py reads it. Each of ``pools`` (one made from ``url`` for each kind
    of client: sync, async) makes one connection, never connected: an option its connection class
    does not take (a typo, ``?socket_timout=``; an option of the sync client only, such as
    ``?ssl_validate_ocsp=``, for the async one) raised a ``TypeError`` from each operation that
    opened a connection, to a rate limiter's callers too, and from the subscriber every round.

    Raises:
        ValueError: It does (the message names ``RedisStore.from_url.url`` and the option).
    """
    given = parse_url(url)
    for option, source in _OWN_OPTIONS.items():
        if option in given:
            rule = f"a Redis URL without ?{option}= (the store sets it {source})"
            raise fail(_OWNER, "url", rule, redacted_url(url))
    for pool in pools:
        try:
            pool.connection_class(**pool.connection_kwargs)
        except TypeError as error:
            rule = f"a Redis URL whose query options every client of the store takes ({error})"
            raise fail(_OWNER, "url", rule, redacted_url(url)) from None


def _connect(
    url: str, timeout: float, max_connections: int
) -> tuple[
    Any,
    Any,
    tuple[Sockets, Sockets],
    Callable[[], Any],
]:
    """Return lazy clients of ``url`` (operations, subscriber), their sockets, an async factory.

    The sockets each of the two clients opens are registered in a :class:`Sockets` of its own
    (returned in that order), which :meth:`RedisStore.close` shuts down.

    The factory makes a ``redis.asyncio`` client with the same options (one per event loop).
    The connections of both kinds of client are dropped once their server answers ``READONLY``
    (a primary demoted under them: :mod:`~otel_resilience.store.demotion`), so that the store
    follows a failover behind its endpoint.
    The operations' client and each async client keep at most ``max_connections`` connections
    (a ``BlockingConnectionPool``): a caller finding them all in use waits for one, at most
    ``timeout`` (within the operation's time: :mod:`~otel_resilience.store.deadlines` on a thread,
    the awaited operation's bound on a loop), then fails with a ``ConnectionError``.

    Every step of an operation (connecting, the handshake, the command) is bounded by
    ``timeout`` on every client made here (the operations', the subscriber's, each event loop's:
    a URL that sets an option the store sets itself, :data:`_OWN_OPTIONS`, is refused), and an
    operation a caller waits for (a rate limiter's permit) by ``timeout`` as a whole
    (:mod:`otel_resilience.store.deadlines`); none is retried by the client: the store's thread
    retries, with backoff, and the calls go on meanwhile.

    Raises:
        ImportError: The ``redis`` package is not installed.
        ValueError: redis-py cannot read ``url``, or one of its query options is refused
            (:func:`_check_url_options`); the message names ``RedisStore.from_url.url``.
    """
    try:
        import redis  # noqa: PLC0415 - an optional dependency, imported where it is used
        import redis.asyncio  # noqa: PLC0415
        from redis.asyncio.retry import Retry as AsyncRetry  # noqa: PLC0415
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.connection import parse_url  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(_NEEDS_REDIS) from error
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        **_idle_check(url, parse_url),
    }
    pooled = {"max_connections": max_connections, "timeout": timeout}

    def async_pool() -> Any:
        async_options = {**pooled, **options, "retry": AsyncRetry(NoBackoff(), 0)}
        return leave_demoted(redis.asyncio.BlockingConnectionPool.from_url(url, **async_options))

    try:
        pool = leave_demoted(redis.BlockingConnectionPool.from_url(url, **pooled, **options))
        checked = (pool, async_pool())  # pools connect lazily: neither has a connection yet
    except ValueError as error:  # a URL redis cannot read (another scheme, a bad port, a bad db)
        raise fail(_OWNER, "url", f"a Redis URL ({error})", redacted_url(url)) from error
    _check_url_options(url, parse_url, checked)  # before any client is made of them
    # The subscriber's errors reach the store's subscriber loop as they are: redis-py's pub/sub
    # connects again in its failure handler, whatever the retries (redis-py 6+), so a socket
    # that close() shut down had close() wait for a new connection and its handshake.
    listening = {**options, "retry": Retry(NoBackoff(), 0, supported_errors=())}
    sockets = (Sockets(), Sockets())
    clients = (
        bound_connections(track_sockets(redis.Redis.from_pool(pool), sockets[0])),
        track_sockets(redis.Redis.from_url(url, **listening), sockets[1]),
    )

    def async_client() -> Any:
        return redis.asyncio.Redis.from_pool(async_pool())

    return (*clients, sockets, async_client)


def _idle_check(url: str, parse_url: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The option that has a pool check the connections it hands out, where redis-py skips it.

    A pool checks each idle connection it hands out and connects again if the server closed it
    (a restart, a dropped network), unless its maintenance notifications are on: redis-py 8.1
    (the newest on Python 3.10) then skips the check, and they are on (``auto``) by
    default, though they only apply to RESP3. The next operation failed on the closed connection,
    an outage counted for it once Redis was back (each drop of Redis counted twice). On such a
    release, a RESP2 URL (no ``protocol=3``) turns them off; a later release reads what is pending
    and connects again, and is left as it is, as a URL of RESP3 is.
    """
    try:
        import redis.asyncio.maint_notifications  # noqa: F401, PLC0415 - 8.1+: both clients take the option
        from redis.asyncio.connection import AbstractConnection  # noqa: PLC0415
        from redis.maint_notifications import MaintNotificationsConfig  # noqa: PLC0415
    except ImportError:  # an older redis-py: no notifications of async clients, the check is made
        return {}
    if hasattr(AbstractConnection, "handle_pending_push_notifications"):  # 8.2+: checked
        return {}
    try:
        protocol = parse_url(url).get("protocol")
    except ValueError:  # a URL redis-py cannot read: refused as the pools are made, naming the field
        return {}
    if str(protocol) == "3":
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def _redis_errors() -> tuple[
    tuple[type[BaseException], ...], tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]
]:
    """The errors of a store's operation, whatever made its clients (:meth:`RedisStore.from_url` or not).

    All those of an operation (redis-py's, a socket's, a timeout), then those that are the
    server's answer to it (it is reachable: ``ResponseError``) with the exceptions among them that
    are outages (see :meth:`RedisStore.answered`). A store made of clients knew only ``OSError``
    and timeouts: redis-py's ``ConnectionError`` of an unreachable Redis was raised into the
    caller's call instead of taking the limiter's ``store_fallback``.

    Raises:
        ImportError: The ``redis`` package is not installed.
    """
    try:
        import redis  # noqa: PLC0415 - an optional dependency, imported where it is used
        from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError  # noqa: PLC0415
    except ImportError as error:
        raise ImportError(_NEEDS_REDIS) from error
    usage = ((redis.ResponseError,), (ReadOnlyError, OutOfMemoryError, MasterDownError))
    return (redis.RedisError, OSError, asyncio.TimeoutError), usage
