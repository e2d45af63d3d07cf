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
from typing import Any

from otel_resilience.engine.validation import fail

__all__ = ["PeerCounts", "SharedStore", "check_store"]


class PeerCounts(abc.ABC):
    """What a shared breaker's rules ask of the store, under the breaker's lock (never blocking).

    ``merged`` adds the latest counts of the other replicas (as the store last read them) to the
    local ones; ``failed`` says a call just failed, so the store reports it at once rather than
    with its next batch. Both only read or set plain attributes: neither waits on the network.
    """

    __slots__ = ()

    @abc.abstractmethod
    def merged(self, local: tuple[int, int, int]) -> tuple[int, int, int]:
        """Return ``local`` ``(calls, failures, slow)`` plus the other replicas' counts."""

    @abc.abstractmethod
    def failed(self) -> None:
        """Note that a call just failed (wakes the store's background work; never blocks)."""


class SharedStore(abc.ABC):
    """A store that shares patterns' state between processes (replicas of one service)."""

    __slots__ = ()

    @abc.abstractmethod
    def share_breaker(self, breaker: Any) -> None:
        """Share ``breaker``'s state (a :class:`~otel_resilience.CircuitBreaker`) from now on."""

    @abc.abstractmethod
    def rate_rules(self, name: str, config: Any) -> Any:
        """Return the rules of a cluster-wide rate limiter named ``name`` with ``config``."""


def check_store(owner: str, value: object) -> SharedStore | None:
    """Return ``value`` if it is ``None`` or a :class:`SharedStore`.

    Raises:
        TypeError: It is anything else (the message names ``owner.store``).
    """
    if value is not None and not isinstance(value, SharedStore):
        raise fail(owner, "store", "None or a shared store (RedisStore.from_url(...))", value, kind=TypeError)
    return value
