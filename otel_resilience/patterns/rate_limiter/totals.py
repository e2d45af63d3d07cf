"""What evicted rate limiters counted: totals that keep exported counters from going down.

``resilience.rate_limiter.permits`` is an observable counter read from every live limiter of a
name (the :data:`~otel_resilience.engine.registry.RATE_LIMITERS` registry) and summed. A keyed
limiter (:meth:`RateLimiter.per_key`, or a keyed policy of the manager) evicts idle keys; if an
evicted key's counts went with its limiter, the sum would go *down*, which a backend reads as a
counter reset (a false spike in ``rate()``). So an evicted key's limiter is taken out of the
registry and its counts are added, in the same step, to a :class:`LimiterTotals` of the same
name, registered in its place (exported, never found by name): a *new* totals object holding the
old one's counts and the limiter's replaces both at once
(:meth:`~otel_resilience.engine.registry.Registry.replace`), so that at every instant each count
is in exactly one exported place, and a registered totals object never changes. A
:class:`KeyTotals` keeps those of :meth:`RateLimiter.per_key`'s evicted keys.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final, cast

from otel_resilience.engine.counting import add_to
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.registry import RATE_LIMITERS

if TYPE_CHECKING:
    from otel_resilience.patterns.rate_limiter.facade import RateLimiter

__all__ = ["LIMITER_TOTALS", "KeyTotals", "LimiterTotals", "limiter_totals"]

LIMITER_TOTALS: Final = ("admitted", "rejected", "waited", "cancelled")
"""The lifetime counts of a rate limiter that totals sum over evicted keys."""


def limiter_totals(limiter: RateLimiter) -> dict[str, int]:
    """Return the lifetime counts of ``limiter`` (:data:`LIMITER_TOTALS`), read consistently."""
    stats = limiter._own_stats()  # its own counts: a key's limiter's get_stats may read another's
    return {name: int(stats[name]) for name in LIMITER_TOTALS}


class LimiterTotals:
    """The counts of evicted rate limiters, exported as a rate limiter of their name."""

    __slots__ = ("__weakref__", "name", *LIMITER_TOTALS)

    def __init__(self, name: str) -> None:
        self.name = name
        for count in LIMITER_TOTALS:
            setattr(self, count, 0)

    def add(self, counts: dict[str, int], sign: int = 1) -> None:
        """Add ``counts`` (or, with ``sign=-1``, take them back out)."""
        add_to(self, counts, sign)

    def get_stats(self) -> dict[str, int]:
        """Return the counts by name (as :meth:`RateLimiter.get_stats` names them)."""
        return {count: getattr(self, count) for count in LIMITER_TOTALS}

    _own_stats = get_stats  # what the exports read of a rate limiter (RateLimiter._own_stats)

    def carry(self, old: LimiterTotals | None, counts: dict[str, int], sign: int = 1) -> LimiterTotals:
        """Fill these new totals: the ``old`` ones' counts (if any), with ``counts`` added (or taken out).

        Totals are never changed once registered: a move of counts makes new ones in their place
        (:meth:`~otel_resilience.engine.registry.Registry.replace`). Returns ``self``.
        """
        if old is not None:
            self.add(old.get_stats())
        self.add(counts, sign)
        return self


class KeyTotals:
    """The totals of a :class:`~otel_resilience.patterns.rate_limiter.facade.KeyedRateLimiter`'s evicted keys.

    A key's limiter is held by its calls, blocks and ``try_acquire`` (``Pattern._hold_by``): the
    key is not evicted while one runs, and once it is evicted the limiter takes no permit (its
    uses run on the key's limiter in use), so its counts are final when :meth:`fold` takes them,
    as a keyed policy's ledger takes an evicted key's. So the sum only grows, and each count is
    in exactly one registered place at every instant.

    Args:
        name: The name of every key's limiter.
    """

    __slots__ = ("_lock", "_totals", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = fork_safe(threading.Lock())
        self._totals: LimiterTotals | None = None

    def fold(self, limiter: RateLimiter) -> None:
        """Move an evicted key's ``limiter`` out of the registry, its counts into new totals: one step."""
        with self._lock:
            old = self._totals

            def make() -> LimiterTotals:
                return LimiterTotals(self.name).carry(old, limiter_totals(limiter))

            self._totals = cast(
                "LimiterTotals",
                RATE_LIMITERS.replace((old, limiter), make, findable=False, announce=False),
            )
