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
is in exactly one exported place, and a registered totals object never changes.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Final, cast

from otel_resilience.engine.counting import add_to
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.registry import RATE_LIMITERS

if TYPE_CHECKING:
    from collections.abc import Callable

    from otel_resilience.patterns.rate_limiter.facade import RateLimiter

__all__ = ["LIMITER_TOTALS", "KeyTotals", "LimiterTotals", "limiter_totals"]

LIMITER_TOTALS: Final = ("admitted", "rejected", "waited", "cancelled")
"""The lifetime counts of a rate limiter that totals sum over evicted keys."""


def limiter_totals(limiter: RateLimiter) -> dict[str, int]:
    """Return the lifetime counts of ``limiter`` (:data:`LIMITER_TOTALS`), read consistently."""
    stats = limiter.get_stats()
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

    An evicted limiter that a caller still holds may come back (the keyed limiter revives it
    rather than make a second one for its key): :meth:`revived` takes what :meth:`fold` added
    back out and registers it again, so its counts are neither lost nor counted twice. While it
    was out, what it counted is not exported; it is when it comes back, so the sum only grows.

    Args:
        name: The name of every key's limiter.
    """

    __slots__ = ("_folded", "_lock", "_totals", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = fork_safe(threading.Lock())
        self._totals: LimiterTotals | None = None
        self._folded: weakref.WeakKeyDictionary[RateLimiter, dict[str, int]] = weakref.WeakKeyDictionary()

    def fold(self, limiter: RateLimiter, *, kept: Callable[[], bool]) -> None:
        """Move what an evicted ``limiter`` counted into the totals (and out of the registry).

        Args:
            limiter: The evicted key's limiter.
            kept: Says whether the store holds it again already (revived between its eviction
                and this call: then nothing moves). Asked under this object's lock, which
                :meth:`revived` takes too, so one of the two always sees the other.
        """
        with self._lock:
            if limiter in self._folded or kept():
                return
            counts: dict[str, int] = {}

            def make() -> LimiterTotals:
                counts.update(limiter_totals(limiter))
                return self._next_totals(counts, 1)

            old = (limiter, self._totals)
            self._totals = cast(
                "LimiterTotals", RATE_LIMITERS.replace(old, make, findable=False, announce=False)
            )
            self._folded[limiter] = counts

    def revived(self, limiter: RateLimiter) -> None:
        """Give ``limiter`` its counts back if it was folded: it is a key's limiter again."""
        with self._lock:
            counts = self._folded.pop(limiter, None)
            if counts is None:
                return
            self._totals = cast(
                "LimiterTotals",
                RATE_LIMITERS.replace(
                    (self._totals,),
                    lambda: self._next_totals(counts, -1),
                    findable=False,
                    announce=False,
                    restore=limiter,
                ),
            )

    def _next_totals(self, counts: dict[str, int], sign: int) -> LimiterTotals:
        """New totals: the current ones' counts with ``counts`` added (``sign=-1``: taken out)."""
        return LimiterTotals(self.name).carry(self._totals, counts, sign)
