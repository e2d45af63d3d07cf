"""The structural views the observable instruments read instances through (never a pattern class).

The observable callbacks (:mod:`otel_resilience.telemetry.observables`) read breakers, bulkheads,
rate limiters, retry links, named policies and keyed rate limiters from the engine registries
through these small protocols, so that telemetry depends on the engine only.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "BreakerStatsView",
    "BreakerView",
    "BudgetedRetryView",
    "BulkheadStatsView",
    "BulkheadView",
    "KeyedView",
    "Owner",
    "RateLimiterView",
    "RetryBudgetView",
    "WatchView",
]


class Owner(Protocol):
    """The listener that owns the instruments: says whether to report, and counts failures."""

    @property
    def active(self) -> bool:
        """Whether the callbacks should report (``False`` once uninstrumented)."""
        ...

    @property
    def total_errors(self) -> int:
        """Telemetry exceptions counted so far."""
        ...

    def failed(self, where: str) -> None:
        """Count and log one telemetry exception (called inside an ``except`` block)."""
        ...


class BreakerStatsView(Protocol):
    """The lifetime counters a circuit breaker keeps as plain integers."""

    @property
    def total_successes(self) -> int:
        """Calls that returned (or raised an error that is not recorded)."""
        ...

    @property
    def total_failures(self) -> int:
        """Calls that raised a recorded error."""
        ...

    @property
    def total_rejected(self) -> int:
        """Calls rejected without calling the dependency."""
        ...

    @property
    def total_ignored(self) -> int:
        """Calls that raised an ignored error."""
        ...

    @property
    def total_cancelled(self) -> int:
        """Calls cancelled while in flight."""
        ...


@runtime_checkable
class BreakerView(Protocol):
    """What the observable instruments read from a circuit breaker."""

    @property
    def name(self) -> str:
        """The breaker's name."""
        ...

    def peek_state(self) -> enum.Enum:
        """The current state (an enum member; its class lists every state), read with no side effect.

        A collection runs under the SDK's lock, in the exporter's thread: reading the state must
        not move the breaker (an OPEN breaker whose timer elapsed reads HALF_OPEN, and stays
        OPEN until a call moves it), nor run its callbacks there.
        """
        ...

    @property
    def stats(self) -> BreakerStatsView:
        """The live counters."""
        ...

    @property
    def failure_rate_threshold(self) -> float | None:
        """The failure rate that opens it, or ``None`` without a sliding window."""
        ...

    def rates(self) -> tuple[float, float] | None:
        """Its window's failure and slow-call rates, or ``None`` without a sliding window."""
        ...


class BulkheadStatsView(Protocol):
    """The counters a bulkhead keeps as plain integers."""

    @property
    def max_concurrent(self) -> int:
        """The concurrency limit."""
        ...

    @property
    def max_waiting(self) -> int:
        """The queue limit."""
        ...

    @property
    def active(self) -> int:
        """Calls holding a slot now."""
        ...

    @property
    def waiting(self) -> int:
        """Calls in the queue now."""
        ...


@runtime_checkable
class BulkheadView(Protocol):
    """What the observable instruments read from a bulkhead."""

    @property
    def name(self) -> str:
        """The bulkhead's name."""
        ...

    @property
    def stats(self) -> BulkheadStatsView:
        """The live counters."""
        ...


@runtime_checkable
class RateLimiterView(Protocol):
    """What the observable instruments read from a rate limiter."""

    @property
    def name(self) -> str:
        """The limiter's name."""
        ...

    def _own_stats(self) -> Mapping[str, Any]:
        """The limiter's own counts: ``admitted``, ``waited``, ``rejected`` and ``cancelled`` at least.

        Its own, never those of another it reads in its ``get_stats`` (a key's limiter kept past
        its key's eviction reads the key's limiter in use there): each is exported once.
        """
        ...


class RetryBudgetView(Protocol):
    """What the observable instruments read from a retry budget."""

    def get_stats(self) -> Mapping[str, float]:
        """The budget's counts now; ``available`` is how many more retries it would allow."""
        ...


@runtime_checkable
class BudgetedRetryView(Protocol):
    """What the observable instruments read from a retry link (a retry in one policy) with a budget."""

    @property
    def name(self) -> str:
        """The retry's name."""
        ...

    @property
    def policy_name(self) -> str:
        """The policy the link runs in (the retry's own name when it runs alone)."""
        ...

    @property
    def budget(self) -> RetryBudgetView | None:
        """The retry budget of the link's policy."""
        ...


@runtime_checkable
class KeyedView(Protocol):
    """What the observable instruments read from a keeper of keys.

    A named policy (``manager.policy``) or a keyed rate limiter (``RateLimiter.per_key``).
    """

    @property
    def name(self) -> str:
        """The policy's or keyed limiter's name."""
        ...

    @property
    def keys(self) -> int:
        """The keys it keeps now."""
        ...

    @property
    def max_keys(self) -> int:
        """The idle keys it keeps at most."""
        ...

    @property
    def evicted_keys(self) -> int:
        """The keys it evicted so far."""
        ...


@runtime_checkable
class WatchView(Protocol):
    """What the observable instruments read from a configuration file watch (``manager.watch``)."""

    @property
    def name(self) -> str:
        """The file watched (its absolute path)."""
        ...

    @property
    def stale(self) -> bool:
        """Whether the last changed version of the file was refused, and none applied since."""
        ...
