"""Named pattern instances, for telemetry and for lookup by name.

Every circuit breaker, bulkhead, rate limiter, pipeline and error recovery system registers itself
in the registry of its kind when it is created, and so does every retry link that has a retry
budget. The registry holds *weak* references: it never keeps an instance alive.
Observable instruments iterate :meth:`Registry.items` to export live state (the Resilience4j
``bindTo`` idea); recovery rules find a breaker to isolate by name with :meth:`Registry.get`.

An owner that keeps many instances under one name on purpose (a manager policy keeps a breaker,
a bulkhead and a rate limiter per key, all named after the policy) creates them inside
:func:`namesakes_expected` with a token of its own, so that no warning is logged for them (a
namesake that is not the owner's, a standalone breaker or another manager's policy of that
name, is still warned about), and takes them out with :meth:`Registry.unregister` when it folds
their counts into totals of its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from _weakref import _remove_dead_weakref  # type: ignore[attr-defined] # WeakValueDictionary's delete
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from otel_resilience.engine.forking import fork_safe

__all__ = [
    "BREAKERS",
    "BUDGETED_RETRIES",
    "BULKHEADS",
    "KEYED_RATE_LIMITERS",
    "PIPELINES",
    "POLICIES",
    "RATE_LIMITERS",
    "RECOVERY_SYSTEMS",
    "WATCHES",
    "Named",
    "NamesakeOwner",
    "Registry",
    "namesakes_expected",
]


class Named(Protocol):
    """Anything with a ``name``."""

    @property
    def name(self) -> str:
        """The instance's configured name."""
        ...


T = TypeVar("T", bound=Named)

_LOG: Final = logging.getLogger("otel_resilience")


class _Expected(threading.local):
    """Per thread: the owner whose instances registered now share their name on purpose."""

    owner: NamesakeOwner | None = None  # a class default: read on every registration, never missing
    # (``getattr(local, name, None)`` on a missing attribute raises and catches an AttributeError
    # inside: about 4 000 instructions on each breaker's creation)


_EXPECTED: Final = _Expected()


class NamesakeOwner:
    """The token of an owner whose instances share a name on purpose (see :func:`namesakes_expected`).

    It remembers the names (by kind) it was warned about, so that an owner whose instances
    alternate with another owner's namesakes (two managers' policies of one name adding keys)
    is warned once per kind and name, not at each instance.
    """

    __slots__ = ("_warned",)

    def __init__(self) -> None:
        # Made by the first warning: every named policy holds a token, few are ever warned.
        self._warned: set[tuple[str, str]] | None = None

    def first_warning(self, kind: str, name: str) -> bool:
        """Whether this is the first namesake warning of ``kind`` and ``name`` for this owner."""
        with _WARNINGS:
            warned = self._warned
            if warned is None:
                warned = self._warned = set()
            elif (kind, name) in warned:
                return False
            warned.add((kind, name))
            return True


_WARNINGS: Final = fork_safe(threading.Lock())
"""The lock of every :class:`NamesakeOwner`'s warnings (rare: a namesake registered)."""


_ANY_OWNER: Final = NamesakeOwner()
"""The owner of :func:`namesakes_expected` without one: no namesake is warned about."""


@contextlib.contextmanager
def namesakes_expected(owner: NamesakeOwner | None = None) -> Iterator[None]:
    """Register the instances created inside (in this thread) without the namesake warning.

    For an owner that gives many instances one name on purpose (a policy's per-key breakers):
    their series combine by design, which the warning would report as a mistake.

    Args:
        owner: A token of the owner (the same object for all its instances): only namesakes
            registered under the same token are expected, so a namesake of anyone else (a
            standalone instance, another policy's) is still warned about. ``None``: no namesake
            is warned about (instances that are never exported, a trial build). An owner is
            warned at most once per kind and name.
    """
    previous = _EXPECTED.owner
    _EXPECTED.owner = _ANY_OWNER if owner is None else owner
    try:
        yield
    finally:
        _EXPECTED.owner = previous


class _Entry(weakref.ref[Any]):
    """The one weak reference a registry keeps to an instance.

    ``name`` is the instance's name when it can be found by name, else ``None``.
    """

    __slots__ = ("name",)

    name: str | None


class _OwnedEntry(_Entry):
    """The reference to an instance registered inside :func:`namesakes_expected` with an ``owner``.

    A subclass, so that the many instances registered outside one cost no owner slot.
    """

    __slots__ = ("owner",)

    owner: NamesakeOwner


class Registry(Generic[T]):
    """A thread-safe, weak set of named instances of one kind, indexed by name.

    Each instance costs one weak reference (an ``_Entry``), held in one place: by name (the
    newest instance of each name), or in the set of the others (older namesakes, and the
    instances that are not to be found by name). Its death callback takes it out without a lock
    (a set discard, and a delete that only removes a *dead* reference, so a newer namesake keeps
    its place).

    Args:
        kind: The kind of instance held (``"circuit_breaker"``, ``"bulkhead"``, ``"pipeline"``,
            ``"recovery"``, ``"rate_limiter"``, ``"keyed_rate_limiter"``, ``"retry_budget"``,
            ``"policy"``).
        warn_namesakes: Log a warning when an instance is registered while another live instance
            has its name: their telemetry series are combined (see docs/design.md, "Policies:
            identity, default names, bounds"), which should never happen unnoticed.
    """

    __slots__ = ("_by_name", "_forget", "_lock", "_on_added", "_others", "kind", "warn_namesakes")

    def __init__(self, kind: str, *, warn_namesakes: bool = False) -> None:
        self.kind = kind
        self.warn_namesakes = warn_namesakes
        self._lock = fork_safe(threading.Lock())
        self._by_name: dict[str, _Entry] = {}
        self._others: set[_Entry] = set()
        self._on_added: tuple[Callable[[T], None], ...] = ()  # replaced, never changed in place
        others, by_name = self._others, self._by_name

        def forget(entry: _Entry) -> None:  # a death callback: no lock, it may run inside one
            others.discard(entry)
            if entry.name is not None:
                _remove_dead_weakref(by_name, entry.name)

        self._forget = forget

    def register(self, item: T, *, findable: bool = True) -> None:
        """Add ``item`` and tell every ``on_added`` callback about it.

        Args:
            item: The instance.
            findable: ``False`` for an item that is exported but never returned by :meth:`get`
                (the totals a policy keeps of its evicted keys, which are not an instance to act on).
        """
        lock = self._lock
        lock.acquire()  # not `with`: once per instance made, half the cost
        try:
            namesake = self._add_locked(item, findable)
            callbacks = self._on_added
        finally:
            lock.release()
        if namesake is not None or callbacks:  # usually neither: no frame
            self._added(item, namesake, callbacks)

    def announce(self, item: T) -> None:
        """Tell every ``on_added`` callback about ``item`` without adding it.

        For an instance whose counts a registered carrier exports in its place (a one-shot
        retry's pipeline, counting into the carrier of its name): the callbacks start its
        series, as they do a registered instance's, and it is never exported itself.
        """
        self._added(item, None, self._on_added)  # replaced, never changed in place: no lock

    def unregister(self, item: T) -> None:
        """Take ``item`` out (no error if it is not in): it is no longer exported or found by name."""
        with self._lock:
            self._remove_locked(item)

    def replace(
        self,
        old: Iterable[T | None],
        make: Callable[[], T],
        *,
        findable: bool = True,
        announce: bool = True,
        restore: T | None = None,
    ) -> T:
        """Take the ``old`` items out and put ``make()`` in their place, in one step; return it.

        The one way to move counts from instances to one that carries them on (a policy's totals
        that take an evicted key's counts, a reloaded key's pipeline that counts on in the old
        one's stats): a snapshot (:meth:`items`) holds either every old item or the new one,
        never both (counted twice) nor neither (lost). So that a reader which reads the counts of
        its snapshot a little later reads the same numbers, the new item must hold the old items'
        counts as they are final (a copy, or the same objects) and never change them afterwards
        (a later move makes another item in its place).

        Args:
            old: The items taken out (``None`` entries are skipped; one not in is no error).
            make: Builds the new item. Called under the registry's lock, after nothing else changed
                it, so that it reads counts no one else moves meanwhile; it must not call into a
                registry.
            findable: As :meth:`register`.
            announce: ``False`` to leave the ``on_added`` callbacks out, for a new item that
                stands for instances they were told about (totals of the same name and kind).
            restore: An instance that comes back in the same step, findable (one whose counts
                totals had carried: the new totals no longer hold them).

        Raises:
            Exception: What ``make`` raised (then nothing changed).
        """
        lock = self._lock
        with lock:
            item = make()
            for gone in old:
                if gone is not None:
                    self._remove_locked(gone)
            namesake = self._add_locked(item, findable)
            if restore is not None:
                self._add_locked(restore, findable=True)  # it had its name: no namesake to tell of
            callbacks = self._on_added if announce else ()
        self._added(item, namesake, callbacks)
        return item

    def _add_locked(self, item: T, findable: bool) -> T | None:
        """Add ``item`` (the lock held); return the live namesake to warn about, if any.

        That is the namesake it displaced from the name index, unless that one was expected (see
        :func:`namesakes_expected`). Its one weak reference is named when ``findable``.
        """
        owner = _EXPECTED.owner
        if owner is None or owner is _ANY_OWNER:
            entry = _Entry(item, self._forget)
        else:
            entry = _OwnedEntry(item, self._forget)
            entry.owner = owner
        hash(entry)  # kept by the reference: its death callback may look it up in the set
        name = entry.name = item.name if findable else None
        if name is None:
            self._others.add(entry)
            return None
        previous = self._by_name.get(name)
        namesake = None if previous is None else previous()
        if namesake is item:
            return None
        self._by_name[name] = entry
        if namesake is None:
            return None
        previous = cast("_Entry", previous)
        self._others.add(previous)  # an older namesake
        if owner is _ANY_OWNER or (
            owner is not None
            and (getattr(previous, "owner", None) is owner or not owner.first_warning(self.kind, name))
        ):
            return None  # expected, or this owner was told already: no warning
        return cast("T", namesake)

    def _remove_locked(self, item: T) -> None:
        """Take ``item`` out (the lock held)."""
        self._others.discard(weakref.ref(item))  # equal to the item's entry while the item lives
        found = self._by_name.get(item.name)
        if found is not None and found() is item:
            del self._by_name[item.name]

    def _added(self, item: T, namesake: T | None, callbacks: tuple[Callable[[T], None], ...]) -> None:
        """Warn about a namesake (where asked) and tell the ``on_added`` callbacks (no lock held)."""
        if namesake is not None and self.warn_namesakes:
            _LOG.warning(
                "a second live %s is named %r: their telemetry series are combined (counts summed, "
                "the most severe state shown; when one is freed its counts leave the sums, so a "
                "counter goes down); give each instance its own name to tell them apart",
                self.kind,
                item.name,
            )
        for callback in callbacks:
            callback(item)

    def items(self) -> list[T]:
        """Return a snapshot list of the live instances.

        The references are resolved under the lock, so the snapshot holds every instance that was
        in at one instant, alive for as long as the caller keeps it: an item that
        :meth:`replace` took out just after (a policy's old totals, then dropped) is still read.
        """
        with self._lock:
            entries = [*self._by_name.values(), *self._others]
            return [item for entry in entries if (item := entry()) is not None]

    def has_other(self, name: str, item: object) -> bool:
        """Whether a live instance named ``name`` other than ``item`` is registered.

        One look by name; the older namesakes (and unfindable instances) are looked through only
        when the newest of the name is ``item``, or gone.
        """
        entry = self._by_name.get(name)
        found = None if entry is None else entry()
        if found is not None and found is not item:
            return True
        with self._lock:
            return any(
                other.name == name and (alive := other()) is not None and alive is not item
                for other in self._others
            )

    def get(self, name: str) -> T | None:
        """Return a live instance named ``name`` (the most recently created if several), or ``None``.

        A lookup in a weak name index: O(1) however many instances are alive. When the most
        recent instance of a name is gone while an older one lives, the older one is found by
        a scan, and indexed again.
        """
        entry = self._by_name.get(name)
        found: T | None = None if entry is None else entry()
        if found is not None:
            return found
        with self._lock:
            entry = self._by_name.get(name)
            found = None if entry is None else cast("T | None", entry())
            if found is not None:
                return found
            for entry in self._others:  # registration order is not kept: the rare fallback
                if entry.name == name:
                    found = cast("T | None", entry())
                    if found is not None:
                        self._others.discard(entry)
                        self._by_name[name] = entry
                        return found
        return None

    def on_added(self, callback: Callable[[T], None]) -> None:
        """Call ``callback(item)`` for every instance registered from now on."""
        with self._lock:
            self._on_added = (*self._on_added, callback)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_name) + len(self._others)


BREAKERS: Final[Registry[Named]] = Registry("circuit_breaker", warn_namesakes=True)
"""Every live circuit breaker."""
BULKHEADS: Final[Registry[Named]] = Registry("bulkhead", warn_namesakes=True)
"""Every live bulkhead."""
PIPELINES: Final[Registry[Named]] = Registry("pipeline")
"""Every live pipeline (manager policy)."""
POLICIES: Final[Registry[Named]] = Registry("policy")
"""Every live policy handle (``ResilienceManager.policy``): its reloads and keys are exported."""
RECOVERY_SYSTEMS: Final[Registry[Named]] = Registry("recovery")
"""Every live error recovery system."""
RATE_LIMITERS: Final[Registry[Named]] = Registry("rate_limiter", warn_namesakes=True)
"""Every live rate limiter (each key's limiter of a keyed one included: they share its name, made
inside :func:`namesakes_expected` with the keyed one's token)."""
KEYED_RATE_LIMITERS: Final[Registry[Named]] = Registry("keyed_rate_limiter")
"""Every live keyed rate limiter (``RateLimiter.per_key``): its keys are exported."""
BUDGETED_RETRIES: Final[Registry[Named]] = Registry("retry_budget")
"""Every live retry link (a retry in one policy) that has a retry budget."""
WATCHES: Final[Registry[Named]] = Registry("config_watch")
"""Every running configuration file watch (``manager.watch``), named after its file."""
