"""The observable callbacks of shared stores: their health, and which breakers run on cluster state.

Read from :data:`~otel_resilience.engine.shared.STORES` and the breakers' configs on each
collection; nothing is counted on a call's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from opentelemetry.metrics import Observation

from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.shared import STORES, SharedStore
from otel_resilience.telemetry import semconv as sc

__all__ = ["STORE_CALLBACKS"]


def _per_store(read: Callable[[SharedStore], int]) -> Callable[[], list[Observation]]:
    """A callback reporting ``read(store)`` for each live store, summed over stores of one namespace."""

    def observe() -> list[Observation]:
        by_name: dict[str, int] = {}
        for store in STORES.items():
            by_name[store.name] = by_name.get(store.name, 0) + read(store)
        return [Observation(value, {sc.NAME: name}) for name, value in by_name.items()]

    return observe


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
    (sc.STORE_DEGRADED, _per_store(lambda store: int(store.degraded))),
    (sc.STORE_OUTAGES, _per_store(lambda store: store.outages)),
    (sc.STORE_ERRORS, _per_store(lambda store: store.errors)),
    (sc.STORE_OPERATIONS, _per_store(lambda store: store.ops)),
    (sc.STORE_FALLBACK_PERMITS, _per_store(lambda store: store.fallback_permits)),
)
"""Each store instrument's name and its callback (no arguments; a list of observations)."""
