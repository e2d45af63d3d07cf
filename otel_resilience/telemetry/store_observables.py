"""The observable callbacks of shared stores: their health, and which breakers run on cluster state.

Read from :data:`~otel_resilience.engine.shared.STORES` and the breakers' configs on each
collection; nothing is counted on a call's path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Final

from opentelemetry.metrics import Observation

from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.shared import STORES, SharedStore, StoreTotals
from otel_resilience.telemetry import semconv as sc

__all__ = ["STORE_CALLBACKS"]


def _per_store(
    read: Callable[[SharedStore | StoreTotals], int | None], combine: Callable[[int, int], int] = operator.add
) -> Callable[[], list[Observation]]:
    """A callback reporting ``read(store)`` for each store, the stores of one namespace combined.

    A process may hold several stores of one namespace (one per component that built its own):
    their counts add up (``combine`` is ``+``), those of its closed stores included (their
    :class:`~otel_resilience.engine.shared.StoreTotals`: a counter never goes down), while a state
    of the namespace in this process (degraded or not, 0 or 1) is any of its live stores' (``max``;
    ``None`` from ``read``: nothing to report): summed, two degraded stores reported 2, which the
    alert, summing the instances of a service, read as two instances.
    """

    def observe() -> list[Observation]:
        by_name: dict[str, int] = {}
        for store in STORES.items():
            value = read(store)
            if value is not None:
                name = store.name
                by_name[name] = combine(by_name[name], value) if name in by_name else value
        return [Observation(value, {sc.NAME: name}) for name, value in by_name.items()]

    return observe


def _degraded(store: SharedStore | StoreTotals) -> int | None:
    """1 for a live store that is degraded, 0 for one that is not; nothing for closed ones' totals."""
    return int(store.degraded) if isinstance(store, SharedStore) else None


def _breakers_shared() -> list[Observation]:
    """1 per shared breaker name while each of its breakers runs on the cluster's state, else 0.

    A breaker runs on local state while its store is unreachable or closed, or while the server
    refuses one of its keys (:meth:`SharedStore.local_breakers`, asked once per store).
    """
    by_name: dict[str, int] = {}
    local: dict[int, dict[int, object]] = {}  # by store: its breakers on local state, by id
    for breaker in BREAKERS.items():
        store = getattr(getattr(breaker, "config", None), "store", None)
        if isinstance(store, SharedStore):
            on_local = local.get(id(store))
            if on_local is None:
                on_local = local[id(store)] = {
                    id(local_one): local_one for local_one in store.local_breakers()
                }
            shared = 0 if store.local_only or id(breaker) in on_local else 1
            by_name[breaker.name] = min(by_name.get(breaker.name, 1), shared)
    return [Observation(value, {sc.NAME: name}) for name, value in by_name.items()]


STORE_CALLBACKS: Final = (
    (sc.CB_SHARED, _breakers_shared),
    (sc.STORE_DEGRADED, _per_store(_degraded, max)),
    (sc.STORE_OUTAGES, _per_store(lambda store: store.outages)),
    (sc.STORE_ERRORS, _per_store(lambda store: store.errors)),
    (sc.STORE_OPERATIONS, _per_store(lambda store: store.ops)),
    (sc.STORE_FALLBACK_PERMITS, _per_store(lambda store: store.fallback_permits)),
)
"""Each store instrument's name and its callback (no arguments; a list of observations)."""
