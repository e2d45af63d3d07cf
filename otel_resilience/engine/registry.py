"""Named pattern instances, for telemetry and for lookup by name.

Every circuit breaker, bulkhead, rate limiter, pipeline and error recovery system registers itself
in the registry of its kind when it is created, and so does every retry link that has a retry
budget. The registry holds *weak* references: it never keeps an instance alive.
Observable instruments iterate :meth:`Registry.items` to export live state (the Resilience4j
``bindTo`` idea); recovery rules find a breaker to isolate by name with :meth:`Registry.get`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Final, Generic, Protocol, TypeVar

__all__ = [
    "BREAKERS",
    "BUDGETED_RETRIES",
    "BULKHEADS",
    "PIPELINES",
    "RATE_LIMITERS",
    "RECOVERY_SYSTEMS",
    "Named",
    "Registry",
]


class Named(Protocol):
    """Anything with a ``name``."""

    @property
    def name(self) -> str:
        """The instance's configured name."""
        ...


T = TypeVar("T", bound=Named)

_LOG: Final = logging.getLogger("otel_resilience")


class Registry(Generic[T]):
    """A thread-safe, weak set of named instances of one kind, indexed by name.

    Args:
        kind: The kind of instance held (``"circuit_breaker"``, ``"bulkhead"``, ``"pipeline"``,
            ``"recovery"``, ``"rate_limiter"``, ``"retry_budget"``).
        warn_namesakes: Log a warning when an instance is registered while another live instance
            has its name: their telemetry series are combined (see docs/design.md, "Policies:
            identity, default names, bounds"), which should never happen unnoticed.
    """

    __slots__ = ("_by_name", "_items", "_lock", "_on_added", "kind", "warn_namesakes")

    def __init__(self, kind: str, *, warn_namesakes: bool = False) -> None:
        self.kind = kind
        self.warn_namesakes = warn_namesakes
        self._lock = threading.Lock()
        self._items: weakref.WeakSet[T] = weakref.WeakSet()
        self._by_name: weakref.WeakValueDictionary[str, T] = weakref.WeakValueDictionary()
        self._on_added: list[Callable[[T], None]] = []

    def register(self, item: T) -> None:
        """Add ``item`` and tell every ``on_added`` callback about it."""
        with self._lock:
            namesake = self._by_name.get(item.name) if self.warn_namesakes else None
            self._items.add(item)
            self._by_name[item.name] = item
            callbacks = tuple(self._on_added)
        if namesake is not None and namesake is not item:
            _LOG.warning(
                "a second live %s is named %r: their telemetry series are combined (counts summed, "
                "the most severe state shown); give each instance its own name to tell them apart",
                self.kind,
                item.name,
            )
        for callback in callbacks:
            callback(item)

    def items(self) -> list[T]:
        """Return a snapshot list of the live instances."""
        with self._lock:
            return list(self._items)

    def get(self, name: str) -> T | None:
        """Return a live instance named ``name`` (the most recently created if several), or ``None``.

        A lookup in a weak name index: O(1) however many instances are alive. When the most
        recent instance of a name is gone while an older one lives, the older one is found by
        a scan, and indexed again.
        """
        found = self._by_name.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._by_name.get(name)
            if found is not None:
                return found
            for item in self._items:  # registration order is not kept: the rare fallback
                if item.name == name:
                    self._by_name[name] = item
                    return item
        return None

    def on_added(self, callback: Callable[[T], None]) -> None:
        """Call ``callback(item)`` for every instance registered from now on."""
        with self._lock:
            self._on_added.append(callback)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


BREAKERS: Final[Registry[Named]] = Registry("circuit_breaker", warn_namesakes=True)
"""Every live circuit breaker."""
BULKHEADS: Final[Registry[Named]] = Registry("bulkhead", warn_namesakes=True)
"""Every live bulkhead."""
PIPELINES: Final[Registry[Named]] = Registry("pipeline")
"""Every live pipeline (manager policy)."""
RECOVERY_SYSTEMS: Final[Registry[Named]] = Registry("recovery")
"""Every live error recovery system."""
RATE_LIMITERS: Final[Registry[Named]] = Registry("rate_limiter")
"""Every live rate limiter (each key's limiter of a keyed one included: they share its name)."""
BUDGETED_RETRIES: Final[Registry[Named]] = Registry("retry_budget")
"""Every live retry link (a retry in one policy) that has a retry budget."""
