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
:class:`KeyTotals` (:meth:`RateLimiter.per_key`, whose callers hold their key's limiter) first
puts a stand-in that reads the limiter's counts as they grow in its place, and folds it into the
totals once nothing can count through it any more.
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

    from otel_resilience.engine.pipeline import Pipeline
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


class _Evicted:
    """An evicted key's limiter as it is exported in its place: its counts, read as they grow.

    A caller may still hold the limiter (it was evicted between the caller's ``for_key`` and its
    call) and take permits through it, or through the limiter's own pipeline (a function it
    protects, a guard): they are read here, from its rules, until nothing can take one any more
    (:meth:`final`); then its counts are final and the totals take them.
    """

    __slots__ = ("__weakref__", "_clock", "_limiter", "_pipelines", "_rules", "name")

    def __init__(self, limiter: RateLimiter, pipelines: list[weakref.ref[Pipeline]]) -> None:
        self.name = limiter.name
        self._rules = limiter._rules
        self._clock = limiter.clock
        self._limiter = weakref.ref(limiter)
        self._pipelines = pipelines  # the limiter's own list: one built later is in it too

    def of(self, limiter: RateLimiter) -> bool:
        """Whether this stands for ``limiter``."""
        return self._limiter() is limiter

    def get_stats(self) -> dict[str, int]:
        """Return the limiter's counts now (:data:`LIMITER_TOTALS`), read consistently."""
        stats = self._rules.snapshot(self.name, self._clock.now())
        return {name: int(stats[name]) for name in LIMITER_TOTALS}

    def final(self) -> bool:
        """Whether no permit can be taken through its rules: the limiter and its pipeline are gone."""
        return self._limiter() is None and all(pipeline() is None for pipeline in self._pipelines)


class KeyTotals:
    """The totals of a :class:`~otel_resilience.patterns.rate_limiter.facade.KeyedRateLimiter`'s evicted keys.

    An evicted key's limiter leaves the registry, and an :class:`_Evicted` that reads its counts
    takes its place: a caller that still holds the limiter may take permits through it, which
    must not be lost. The limiter may come back (the keyed limiter revives it rather than make a
    second one for its key): :meth:`revived` puts it back in the place of its stand-in. Once the
    limiter and its pipeline are gone, its counts are final: the next eviction or revival adds
    them to the totals (a :class:`LimiterTotals`), and its stand-in goes. So the sum only grows,
    and each count is in exactly one registered place at every instant.

    Args:
        name: The name of every key's limiter.
    """

    __slots__ = ("_evicted", "_lock", "_totals", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = fork_safe(threading.Lock())
        self._totals: LimiterTotals | None = None
        self._evicted: list[_Evicted] = []

    def fold(
        self, limiter: RateLimiter, pipelines: list[weakref.ref[Pipeline]], *, kept: Callable[[], bool]
    ) -> None:
        """Put a stand-in for an evicted ``limiter`` in its place in the registry.

        Args:
            limiter: The evicted key's limiter.
            pipelines: Weak references to the pipelines built for it (the limiter's own list:
                a call running in one takes permits through its rules).
            kept: Says whether the store holds it again already (revived between its eviction
                and this call: then nothing moves). Asked under this object's lock, which
                :meth:`revived` takes too, so one of the two always sees the other.
        """
        with self._lock:
            if kept() or any(evicted.of(limiter) for evicted in self._evicted):
                return
            evicted = _Evicted(limiter, pipelines)
            RATE_LIMITERS.replace((limiter,), lambda: evicted, findable=False, announce=False)
            self._evicted.append(evicted)
            self._fold_final_locked()

    def revived(self, limiter: RateLimiter) -> None:
        """Put ``limiter`` back in the place of its stand-in, if it has one: it is a key's limiter again."""
        with self._lock:
            found = [evicted for evicted in self._evicted if evicted.of(limiter)]
            if not found:
                return
            self._evicted.remove(found[0])
            RATE_LIMITERS.replace(found, lambda: limiter, announce=False)  # the same counts

    def _fold_final_locked(self) -> None:
        """Move the counts of the stand-ins whose limiter and pipeline are gone into new totals."""
        final = [evicted for evicted in self._evicted if evicted.final()]
        if not final:
            return

        def make() -> LimiterTotals:
            totals = LimiterTotals(self.name).carry(self._totals, {})
            for evicted in final:
                totals.add(evicted.get_stats())
            return totals

        self._totals = cast(
            "LimiterTotals",
            RATE_LIMITERS.replace((self._totals, *final), make, findable=False, announce=False),
        )
        self._evicted = [evicted for evicted in self._evicted if evicted not in final]
