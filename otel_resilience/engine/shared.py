"""The seam between a pattern and a store that shares its state across processes.

A pattern never talks to a store's server: its configuration holds a :class:`SharedStore`
(``CircuitBreakerConfig(store=...)``, ``RateLimiterConfig(store=...)``), and the pattern hands
itself to the store once, when it is built. The store (``otel_resilience.store.RedisStore``)
then feeds the pattern through small documented methods of the pattern's own rules (for a
breaker: :class:`PeerCounts` for the counts of the other replicas, ``adopt`` for a state another
replica published, ``set_probe_limit`` for the half-open probes this replica may run), so the
rules stay in one place and the pattern's layer never imports the store's.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import threading
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any, Final, cast

from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.registry import Registry
from otel_resilience.engine.validation import fail

if TYPE_CHECKING:
    from otel_resilience.engine.event_args import StateChanged

__all__ = [
    "STORES",
    "STORE_COUNTS",
    "PeerCounts",
    "SharedStore",
    "StoreTotals",
    "check_store",
    "current_key",
    "retire_store",
    "shared_key",
]

_KEY: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar("shared_key", default=None)
"""The key of the instances being built (a manager policy builds one per key)."""


class PeerCounts(abc.ABC):
    """What a shared breaker's rules ask of the store, under the breaker's lock (never blocking).

    ``merged`` adds the latest counts of the other replicas (as the store last read them) to the
    local ones, ``merged_probes`` their probe successes (and the slow ones among them) of the
    current HALF_OPEN period; ``failed`` and ``probed`` say a call just failed or a probe just
    succeeded, so the store reports it at once rather than with its next batch; ``acted`` tells
    an operator's action that changed nothing here (asked outside the breaker's lock). All only
    read or set plain attributes: none waits on the network.
    """

    __slots__ = ()

    @abc.abstractmethod
    def merged(self, local: tuple[int, int, int]) -> tuple[int, int, int]:
        """Return ``local`` ``(calls, failures, slow)`` plus the other replicas' counts."""

    @abc.abstractmethod
    def failed(self) -> None:
        """Note that a call just failed (wakes the store's background work; never blocks)."""

    @abc.abstractmethod
    def merged_probes(self, local: tuple[int, int]) -> tuple[int, int]:
        """Return ``local`` HALF_OPEN ``(probe successes, slow ones)`` plus the other replicas'."""

    @abc.abstractmethod
    def probed(self) -> None:
        """Note that a HALF_OPEN probe just succeeded (reported at once; never blocks)."""

    @abc.abstractmethod
    def acted(self, change: StateChanged) -> None:
        """Note an operator's action that left the local state as it was (``change``: from it to it).

        A reset of a breaker CLOSED here, say: no transition of this replica, but an action for
        every replica (some of which may be OPEN), which the store tells them as it tells a
        transition (never blocks).
        """


class SharedStore(abc.ABC):
    """A store that shares patterns' state between processes (replicas of one service).

    Attributes:
        name: The store's namespace (its telemetry attribute ``store.namespace``).
        degraded: Whether the store is unreachable now (patterns run on local state).
        outages: Times the store became unreachable.
        errors: Operations on the store that failed.
        ops: Operations sent to the store.
        fallback_permits: Permits its rate limiters gave without it, while it was unreachable.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        # Read-only properties for type checkers, as each store's attributes are (a ``ReadOnly``,
        # a ``CounterValue``): declared as plain attributes, pyright would let them be assigned.
        # Documented in the class's Attributes.
        @property
        def name(self) -> str: ...  # noqa: D102
        @property
        def degraded(self) -> bool: ...  # noqa: D102
        @property
        def outages(self) -> int: ...  # noqa: D102
        @property
        def errors(self) -> int: ...  # noqa: D102
        @property
        def ops(self) -> int: ...  # noqa: D102
        @property
        def fallback_permits(self) -> int: ...  # noqa: D102
    else:
        # The same, declared for introspection at run time (``typing.get_type_hints``): annotations
        # alone, which define no class attribute (each store defines its own).
        name: str
        degraded: bool
        outages: int
        errors: int
        ops: int
        fallback_permits: int

    @property
    def local_only(self) -> bool:
        """Whether its patterns run on local state now: it is unreachable (:attr:`degraded`) or closed."""
        return self.degraded

    def local_breakers(self) -> Collection[Any]:
        """Return the breakers it shares that run on local state now, though it may answer.

        Every breaker it shares runs on local state while :attr:`local_only`; a store that can
        also refuse one breaker's keys alone (``WRONGTYPE``) names that breaker here, while its
        other breakers go on sharing. Read by telemetry (``resilience.circuit_breaker.shared``);
        never waits on the network. None by default.
        """
        return ()

    @abc.abstractmethod
    def share_breaker(self, breaker: Any) -> None:
        """Share ``breaker``'s state (a :class:`~otel_resilience.CircuitBreaker`) from now on."""

    @abc.abstractmethod
    def unshare_breaker(self, breaker: Any) -> None:
        """Stop sharing ``breaker`` (its config no longer names this store); it keeps its state.

        What this replica already decided and has not yet told the cluster (a queued
        transition) is still told; nothing else of the breaker's is read or written again.
        """

    @abc.abstractmethod
    def rate_rules(self, name: str, config: Any) -> Any:
        """Return the rules of a cluster-wide rate limiter named ``name`` with ``config``."""


STORE_COUNTS: Final = ("outages", "errors", "ops", "fallback_permits")
"""A store's lifetime counts (exported as counters, which never go down)."""


class StoreTotals:
    """What the closed stores of one namespace counted, exported in their place (never found by name).

    The ``resilience.store.*`` counters sum the stores of a namespace in :data:`STORES`; a store
    that closed took its counts with it, and the sum went down while another store of its
    namespace lived on (a counter reset to a backend). A closed store is replaced there by new
    totals of its namespace holding its counts and the earlier totals' (:func:`retire_store`);
    registered totals never change.
    """

    __slots__ = ("__weakref__", "errors", "fallback_permits", "name", "ops", "outages")

    outages: int
    errors: int
    ops: int
    fallback_permits: int

    def __init__(self, name: str, *counted: SharedStore | StoreTotals | None) -> None:
        self.name = name
        for count in STORE_COUNTS:
            setattr(self, count, sum(getattr(item, count) for item in counted if item is not None))


STORES: Final[Registry[SharedStore | StoreTotals]] = Registry("shared_store")
"""Every live shared store, and the totals of the closed ones: observable metrics read them here."""

_RETIRED: Final[dict[str, StoreTotals]] = {}
"""The totals registered in :data:`STORES` for each namespace with a closed store (``_RETIRING`` held)."""
_RETIRING: Final = fork_safe(threading.Lock())


def retire_store(store: SharedStore) -> None:
    """Take the closed ``store`` out of :data:`STORES`: its counts go on in its namespace's totals.

    In one step (:meth:`~otel_resilience.engine.registry.Registry.replace`): a collection reads
    each count in exactly one place, never in both nor in neither. A store retired already (closed
    twice) changes nothing.
    """
    with _RETIRING:
        if not any(item is store for item in STORES.items()):
            return
        name = store.name
        old = _RETIRED.get(name)
        totals = STORES.replace(
            (store, old), lambda: StoreTotals(name, old, store), findable=False, announce=False
        )
        _RETIRED[name] = cast("StoreTotals", totals)


def check_store(owner: str, value: object) -> SharedStore | None:
    """Return ``value`` if it is ``None`` or a :class:`SharedStore`.

    Raises:
        TypeError: It is anything else (the message names ``owner.store``).
    """
    if value is not None and not isinstance(value, SharedStore):
        raise fail(owner, "store", "None or a shared store (RedisStore.from_url(...))", value, kind=TypeError)
    return value


@contextlib.contextmanager
def shared_key(key: str | None) -> Iterator[None]:
    """Build the instances created inside (in this context) as the ones of ``key``.

    A manager policy keeps a breaker and a rate limiter per key, all named after the policy: a
    store keeps each key's state apart (``namespace:cb:name:key``), never one state for all keys.
    """
    token = _KEY.set(key)
    try:
        yield
    finally:
        _KEY.reset(token)


def current_key() -> str | None:
    """Return the key :func:`shared_key` set here, or ``None``."""
    return _KEY.get()
