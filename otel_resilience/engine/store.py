"""A bounded, evicting store of named state: at most ``capacity`` entries, idle ones evicted first.

A manager keeps pattern instances (breakers, bulkheads, composed pipelines) by name so that
their state survives across calls. Names can be unbounded (one per tenant, per URL, per
generated function), so the store that keeps them is bounded:

* at most ``capacity`` entries are kept; adding one past the cap evicts the least recently
  added or touched entries that are **idle** (the owner's ``is_idle`` says which: an OPEN
  breaker or a busy bulkhead is not idle);
* with ``holds_state``, an idle entry that holds state a new one would not have (a CLOSED
  breaker's failures, a rate limiter's bucket not full) is set aside by an eviction (left where
  it is, its last use unchanged: a ``ttl`` still evicts it once unused that long) instead of
  evicted, so that churn through entries without state does not wipe it; once
  one eviction has set aside more than ``min(capacity, HELD_LOOKS)`` of them, the oldest of
  those goes, as an entry holding none would: memory stays bounded (at most ``capacity`` such
  entries kept beside the newest one in a store of up to :data:`HELD_LOOKS` entries, ``capacity``
  in all in a larger one), and an eviction looks at ``HELD_LOOKS + 1`` of them at most even when
  every entry holds state;
* an entry that is not idle is never evicted: it is moved to the young end and looked at again
  on a later eviction, so the store may hold more than ``capacity`` entries while entries are
  busy (or, for an owner whose ``is_idle`` gives a second chance to entries used since it last
  looked, in steady use), and shrinks back once they are idle: at the next add, at a
  :meth:`BoundedStore.trim`, and at each use (:meth:`BoundedStore.use`, which looks at the
  oldest entry of a store past its capacity), so traffic that stays on the entries of a burst
  brings the store back to its capacity too;
* every evicted entry is handed to ``on_evict`` (outside the store's lock) so that its owner can
  fold its counts into totals: nothing counted is lost; until its ``on_evict`` has returned it
  is still listed by ``values(evicting=True)``, so that an owner reading its entries and its
  totals under a lock of its own (the one it folds under) finds every entry in one of the two;
* with ``revive=True`` an evicted value that is still alive elsewhere (a caller holds it) is
  kept in a weak index and brought back by :meth:`BoundedStore.get_or_add` instead of a second
  instance of the same name being created;
* with ``ttl`` (and a ``clock``), an idle entry not used for ``ttl`` seconds is evicted too,
  whatever the count: each :meth:`BoundedStore.get_or_add` (and :meth:`BoundedStore.expire`)
  looks at the least recently used entries and evicts those that expired. A busy entry is
  never evicted: it counts as used now.

A store is owned: its owner keeps it, so a callback that is the owner's bound method is given
through :func:`weak_callback`, which does not keep the owner alive (a cycle, owner to store to
owner, is freed only by the cyclic garbage collector: until it runs, the owner's instances stay
registered by name, and a process that freezes the collector never frees them).

Each eviction looks at each entry at most once, and moves a busy entry to the young end,
``HELD_LOOKS + 1`` busy entries at most (past them it stops: the idle entries behind them go at
a later eviction, so a store whose ``b`` busy entries come first keeps some ``b / HELD_LOOKS``
idle entries past its capacity meanwhile), so the cost of adding is amortised O(1) however
many entries are busy; a use past the capacity looks at ``HELD_LOOKS + 1`` entries at most
(O(1)); the expiry looks at
entries oldest first and stops at the first one used within ``ttl`` (amortised O(1) too). An add whose
``create`` raises still hands over what its expiry evicted. Lookups (:meth:`BoundedStore.get`)
take no lock.
"""

from __future__ import annotations

import itertools
import math
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from otel_resilience.engine.clock import Clock, check_clock
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.validation import check_duration, check_hashable, check_int, fail

__all__ = ["HELD_LOOKS", "BoundedStore", "InUse", "check_capacity", "key_text", "weak_callback"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
P = ParamSpec("P")

HELD_LOOKS = 16
"""How many idle entries holding state one eviction sets aside at most before the oldest of them goes."""

_NOTHING: list[tuple[Any, Any]] = []
"""What a look-up that evicted nothing returns (never changed: only read when not empty)."""


def weak_callback(method: Callable[P, None]) -> Callable[P, None]:
    """Return a function that calls the bound ``method`` while its object lives, and does nothing after.

    For an owner's ``on_evict``: the store holds the function, which holds its owner weakly.
    """
    ref = weakref.WeakMethod(method)

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        bound = ref()
        if bound is not None:
            bound(*args, **kwargs)

    return call


def key_text(owner: str, key: object) -> str:
    """Return what a keyed state is kept under: ``key``'s text, ``str(key)``, a ``str`` exactly.

    The one rule of a key's identity, for a manager policy's keys and a keyed rate limiter's:
    what a key is written as (its ``resilience.key``, a rejection's ``key``, its cached fallback
    value's key, its budget's or breaker's name in a shared store) is its text, so keys with one
    text are one key, one state: ``1`` and ``"1"`` are one key, and ``1`` and ``1.0``, equal in
    Python, are two (``"1"``, ``"1.0"``). ``None`` is no key (a missing tenant or host would
    share the state of the text ``"None"``). A caller gives a ``str`` key as it is
    (``type(key) is str``: nothing else to do) and the others to this.

    Raises:
        TypeError: ``key`` is not hashable (``"<owner>.key must be hashable, ..."``), or is ``None``.
        Exception: What ``key.__str__`` raised.
    """
    if key is None:
        raise fail(owner, "key", "a hashable value other than None", key, kind=TypeError)
    check_hashable(owner, "key", key)
    return str.__str__(str(key))  # a str exactly, though a __str__ may return a subclass of str


def check_capacity(owner: str, field: str, capacity: object) -> int:
    """Return ``capacity`` if it is an ``int >= 1`` (not a ``bool``): the rule of a store's ``capacity``.

    A count's rule (:func:`~otel_resilience.engine.validation.check_int`): another type
    (``None``, a ``float``, a ``bool``) is a ``TypeError``, an ``int < 1`` a ``ValueError``.
    """
    return check_int(owner, field, capacity, minimum=1)


class InUse:
    """The calls running in a store's entry, counted without a lock, and whether the store keeps it.

    The one rule of evicting an entry that calls (and blocks, and actions) use, for a keyed
    policy's keys (:class:`~otel_resilience.manager.keyed.KeyState`) and a keyed rate limiter's:
    a call counts itself in (:meth:`enter`) *before* it looks at :attr:`live`, and an eviction
    (the store's ``is_idle``: :meth:`retire_if_idle`) marks the entry evicted *before* it looks
    at the calls (:meth:`idle`), so one of the two always sees the other: the call finds the
    entry evicted (and takes the one in use, or is refused), or the entry is kept.

    Attributes:
        live: ``False`` once evicted (marked so for an instant while an eviction decides).
        leave: Counts a call out (it returned, raised or was cancelled): the bound ``__next__``
            of the count of ended calls, a call into C with no Python frame (an owner may put
            another in its place, which counts the call out too).
    """

    __slots__ = ("_ended", "_started", "leave", "live")

    leave: Callable[[], object]

    def __init__(self) -> None:
        self._started = Counter()
        self._ended = Counter()
        self.live = True
        self.leave = self._ended.__next__

    def enter(self) -> bool:
        """Count a call in; ``False`` (and nothing counted) if the entry was evicted meanwhile."""
        next(self._started)
        if self.live:
            return True
        next(self._ended)
        return False

    def enter_kept(self, kept: Callable[[], bool]) -> bool:
        """Count a call in, as :meth:`enter`; one that finds the entry evicted asks ``kept`` first.

        An entry an eviction is deciding about looks evicted for an instant (:meth:`retire_if_idle`
        marks it so before it looks at the calls): ``kept`` says whether the store keeps it (asked
        under the store's lock, where each eviction decides), and the entry is entered again if so.

        Returns:
            ``False`` (nothing counted) if the entry was evicted.
        """
        while not self.enter():
            if not kept():
                return False
        return True

    @property
    def running(self) -> int:
        """Calls running in the entry now (read without a lock; the ended count first)."""
        ended = self._ended.value
        return self._started.value - ended

    def idle(self) -> bool:
        """Whether the entry may be evicted: no call runs in it (an owner adds what else keeps it)."""
        return not self.running

    def retire_if_idle(self) -> bool:
        """Mark the entry evicted if it is :meth:`idle` (the store's ``is_idle``).

        Returns:
            Whether the entry was marked evicted (``live`` is ``False``).
        """
        self.live = False
        if not self.idle():
            self.live = True
            return False
        return True


def _no_clock() -> float:
    """The time of a store without a ``ttl``: never asked (only an expiry reads the time)."""
    raise AssertionError("a store without a ttl reads no time")  # pragma: no cover


class BoundedStore(Generic[K, V]):
    """A thread-safe map of at most ``capacity`` entries that evicts idle entries, oldest first.

    Args:
        owner: The owning class, for error messages (``"ResilienceManager"``).
        field: The owner's argument that set ``capacity``, for error messages.
        capacity: The most entries kept while they are idle (an ``int >= 1``).
        is_idle: Says whether an entry may be evicted now (called under the store's lock; it
            must not call back into the store).
        holds_state: Says whether an idle entry holds state that a new entry would not have
            (called as ``is_idle``, on idle entries only): past the capacity an eviction sets
            such entries aside (left where they are, their last use unchanged) and evicts the
            idle entries that hold none; once it has met more than ``min(capacity, HELD_LOOKS)``
            of them, the oldest of those goes (asked ``is_idle`` again just before: it may mark
            the entry it allows to evict, and ``holds_state`` unmark the one it keeps); a use's
            look passes over them as well (the next add or :meth:`trim` evicts one if need
            be). The ``ttl`` expiry does not ask it; :meth:`unexpired` asks
            its own ``holds`` (``None``: it counts as if this were ``None``). ``None``: every
            idle entry alike.
        on_evict: Called with ``(key, value)`` for each evicted entry, outside the lock.
        revive: Keep weak references to evicted values and return one that is still alive when
            its key is added again (the values must support weak references).
        on_revive: Called with ``(key, value)`` for each value brought back, under the store's
            lock (it must not call back into the store), so that an owner can undo what its
            ``on_evict`` did, whichever of the two runs first.
        ttl: Seconds after which an idle entry that was not used is evicted (``None``: never;
            ``timedelta`` accepted). Needs ``clock``.
        clock: The clock ``ttl`` is measured on.
        ttl_field: The owner's argument that set ``ttl``, for error messages.

    Raises:
        ValueError: If ``capacity`` is an ``int < 1``, or ``ttl`` is not finite and ``> 0``
            (``"<owner>.<field> must be ..."``).
        TypeError: If ``capacity`` is not an ``int`` (:func:`check_capacity`), or ``ttl`` is
            given without a ``clock``.
    """

    __slots__ = (
        "_capacity",
        "_clock",
        "_due",
        "_entries",
        "_evicted",
        "_holds_state",
        "_is_idle",
        "_leaving",
        "_lock",
        "_now",
        "_on_evict",
        "_on_revive",
        "_revivable",
        "_span",
        "_touched",
        "_ttl",
    )

    def __init__(
        self,
        owner: str,
        field: str,
        capacity: int,
        *,
        is_idle: Callable[[V], bool],
        holds_state: Callable[[V], bool] | None = None,
        on_evict: Callable[[K, V], None] | None = None,
        revive: bool = False,
        on_revive: Callable[[K, V], None] | None = None,
        ttl: float | timedelta | None = None,
        clock: Clock | None = None,
        ttl_field: str = "ttl",
    ) -> None:
        check_capacity(owner, field, capacity)
        self._ttl = None if ttl is None else check_duration(owner, ttl_field, ttl)
        if ttl is not None and clock is None:
            raise fail(owner, "clock", f"a Clock when {ttl_field} is set", clock, kind=TypeError)
        self._clock = None if clock is None else check_clock(owner, clock)
        # What the expiry reads on every use, typed and ready (set only with a ttl, read only then).
        self._now: Callable[[], float] = self._clock.now if self._clock is not None else _no_clock
        self._span: float = self._ttl if self._ttl is not None else 0.0
        self._due = -math.inf  # no entry can expire before this time (the oldest's use + ttl)
        self._touched: dict[K, float] = {}
        self._capacity = capacity
        self._is_idle = is_idle
        self._holds_state = holds_state
        self._on_evict = on_evict
        self._on_revive = on_revive
        # Taken by reloads and stats reads too (a watch, a metrics collection): free in a forked child.
        self._lock = fork_safe(threading.Lock())
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._leaving: dict[int, V] = {}  # by id: evicted, their on_evict not returned yet
        self._evicted = 0
        self._revivable: weakref.WeakValueDictionary[K, V] | None = (
            weakref.WeakValueDictionary() if revive else None
        )

    capacity = ReadOnly[int]("_capacity", "The most entries kept while they are idle.")

    evicted = ReadOnly[int]("_evicted", "How many entries were evicted so far.")

    ttl = ReadOnly["float | None"]("_ttl", "Seconds an unused idle entry is kept, or ``None`` (no expiry).")

    def get(self, key: K) -> V | None:
        """Return the value kept under ``key``, or ``None`` (no lock, no change of order)."""
        return self._entries.get(key)

    def get_or_add(self, key: K, create: Callable[[], V], *, evict: bool = True) -> tuple[V, bool]:
        """Return the value under ``key`` (marked as recently used), creating it if absent.

        A value created here may push the store past its capacity: the oldest idle entries are
        evicted (never the new one) and handed to ``on_evict`` before this returns.

        Args:
            key: The entry's key.
            create: Builds the value (called under the store's lock; it must not call back into
                this store).
            evict: ``False`` to leave eviction to a later :meth:`trim`: for an owner that is
                about to make entries idle (evict what uses them) and would otherwise make this
                scan look at entries that are busy only for now.

        Returns:
            ``(value, created)``: ``created`` is ``True`` when ``create`` was called.
        """
        value = self.use(key, evict=evict)
        if value is not None:
            return value, False
        evicted: list[tuple[K, V]] = _NOTHING
        try:
            with self._lock:
                value = self._entries.get(key)
                if value is not None:  # added by another thread since: used just now
                    return value, False
                # What expired has left the store: handed over below even if ``create`` raises.
                evicted = self._expire_locked(None) if self._ttl is not None else _NOTHING
                revived = self._revivable.pop(key, None) if self._revivable is not None else None
                value = revived if revived is not None else create()
                self._entries[key] = value
                if revived is not None and self._on_revive is not None:
                    self._on_revive(key, revived)
                if self._ttl is not None:
                    self._touched[key] = self._now()
                if evict:
                    evicted = evicted + self._evict_locked()
        finally:
            self._hand_over(evicted)
        return value, revived is None

    def use(self, key: K, *, evict: bool = True) -> V | None:
        """Return the value under ``key`` marked as recently used, or ``None`` (nothing is added).

        The hit path of :meth:`get_or_add` (an owner that makes its ``create`` only on a miss
        calls it first): what expired meanwhile is evicted as there, and a store kept past its
        capacity while its entries were busy looks at its oldest entry (past the idle ones
        holding state, ``min(capacity, HELD_LOOKS)`` at most, so that a use costs O(1)): evicted
        if idle, else moved to the young end. The store shrinks back to its
        capacity as its entries are used, not only when a new one is added.

        Args:
            key: The entry's key.
            evict: ``False`` to leave the shrink to a later :meth:`trim` (as :meth:`get_or_add`).
        """
        lock = self._lock
        lock.acquire()  # not `with`: on every call through a keyed policy, half the cost
        try:
            entries = self._entries
            value = entries.get(key)
            if value is None:
                return None
            if self._ttl is None:
                entries.move_to_end(key)
                if not evict or len(entries) <= self._capacity:
                    return value
                evicted = self._shrink_locked()
            else:
                evicted = self._expire_locked(key)
                if evict and len(entries) > self._capacity:
                    evicted = evicted + self._shrink_locked()
        finally:
            lock.release()
        if evicted:
            self._hand_over(evicted)
        return value

    def expire(self) -> int:
        """Evict the idle entries not used for ``ttl`` seconds (nothing without a ``ttl``).

        Returns:
            How many entries were evicted.
        """
        if self._ttl is None:
            return 0
        with self._lock:
            evicted = self._expire_locked(None)
        self._hand_over(evicted)
        return len(evicted)

    def unexpired(self, idle: Callable[[V], bool], holds: Callable[[V], bool] | None = None) -> int:
        """Return how many entries an :meth:`expire` and a :meth:`trim` now would keep, evicting nothing.

        For a reading that must change nothing and wait for nothing (a gauge read in a metric
        collection, where an eviction would run ``on_evict`` into the telemetry being collected):
        the entries, less the idle ones not used for ``ttl``, less the idle ones past the
        capacity (kept while they were busy, and evicted by the next add, use or trim; oldest
        first, never the youngest, as :meth:`trim` evicts them). O(1) while no entry can have
        expired and the store is within its capacity; else the entries are looked at, oldest
        first, as :meth:`expire` and :meth:`trim` look at them. It never waits for the store's
        lock: while the store is being changed (an entry being made, whose ``create`` may run a
        collection in this very thread), it returns the count of entries as they are.

        Args:
            idle: Says whether an entry is idle, as the store's ``is_idle`` does, but changes
                nothing (an ``is_idle`` may mark the entry it allows to evict); called under the
                store's lock.
            holds: Says whether an idle entry holds state, as the store's ``holds_state`` does,
                but changes nothing: the idle entries holding state are counted as :meth:`trim`
                keeps them (it sets aside ``min(capacity, HELD_LOOKS)`` of them at most).
                ``None``: every idle entry alike, as if the store had no ``holds_state``.
        """
        entries, lock, capacity = self._entries, self._lock, self._capacity
        kept = len(entries)
        ttl = self._ttl
        if (ttl is None and kept <= capacity) or not entries or not lock.acquire(blocking=False):
            return kept
        try:
            expiring, moved, holding, held_limit = False, False, 0, self._held_limit()
            if ttl is not None:
                now = self._now()
                expiring = now >= self._due  # else the oldest entry was used less than ttl ago
                limit, touched = now - self._span, self._touched
            youngest = kept - 1
            for place, (key, value) in enumerate(entries.items()):  # oldest use first
                if expiring:  # as expire(): up to the first entry used within ttl
                    if touched.get(key, now) <= limit:
                        if idle(value):
                            kept -= 1
                        else:
                            moved = True  # busy: expire() makes it the youngest, trim() keeps it
                        continue
                    expiring = False
                # as trim(): idle entries go while past the capacity; the youngest stays
                if kept <= capacity or (place == youngest and not moved):
                    break
                if idle(value):
                    if holds is not None and holds(value):
                        holding += 1  # set aside, as trim() does, until too many are
                        if holding <= held_limit:
                            continue
                        holding -= 1  # as trim(): the oldest set aside goes
                    kept -= 1
            return kept
        finally:
            lock.release()

    def trim(self) -> int:
        """Evict idle entries while the store holds more than its capacity.

        As an add does, it moves ``HELD_LOOKS + 1`` busy entries along at most: the idle entries
        behind more of them go at a later add, use or trim.

        Returns:
            How many entries were evicted.
        """
        with self._lock:
            evicted = self._evict_locked(added=False)
        self._hand_over(evicted)
        return len(evicted)

    def values(self, *, evicting: bool = False) -> list[V]:
        """Return a snapshot of the values, oldest first.

        Args:
            evicting: Also list the values evicted whose ``on_evict`` has not returned yet (after
                the others). An evicted entry leaves the store under its lock and is handed to
                ``on_evict`` after, outside it: an owner that folds it into totals there, under a
                lock of its own, and reads this snapshot under that lock, finds each entry here or
                in its totals, never in neither (it skips those it folded, whose ``on_evict`` is
                still returning).
        """
        with self._lock:
            values = list(self._entries.values())
            if evicting and self._leaving:
                kept = {id(value) for value in values}  # a revived value is listed once
                values += [value for ident, value in self._leaving.items() if ident not in kept]
            return values

    def items(self) -> list[tuple[K, V]]:
        """Return a snapshot of the ``(key, value)`` pairs, oldest first."""
        with self._lock:
            return list(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def _expire_locked(self, using: K | None) -> list[tuple[K, V]]:
        """Evict idle entries unused for ``ttl``, oldest first; mark ``using`` (if any) used now.

        Entries are kept in the order of their last use (``using`` first goes to the young end,
        and a busy entry looked at is in use, so it is marked used now and moved there too), so
        the scan stops at the first entry used within ``ttl``: at once, when the oldest is. The
        scan never reaches ``using`` (the entries it moves go after it), so no key is ever
        compared with another (a key's ``==`` may refuse other types: it would fail every look);
        ``using`` is made the youngest again at its end, so that the shrink of a use
        (:meth:`_shrink_locked`, which never looks at the youngest) never evicts the entry used.
        """
        clock_now = self._now  # read, then called: a call through a slot is not specialised
        now = clock_now()
        touched, entries = self._touched, self._entries
        if using is not None:
            entries.move_to_end(using)
            touched[using] = now
        if now < self._due:  # the oldest entry was used less than ttl ago
            return _NOTHING
        limit = now - self._span
        evicted: list[tuple[K, V]] = []
        for _ in range(len(entries) - (using is not None)):  # every entry but ``using``, the youngest
            key, value = next(iter(entries.items()))
            if touched.get(key, now) > limit:
                break
            if self._is_idle(value):
                del entries[key], touched[key]
                evicted.append((key, value))
            else:
                entries.move_to_end(key)
                touched[key] = now
        if using is not None:  # the youngest again (a busy entry moved after it): a shrink spares it
            entries.move_to_end(using)
        oldest = next(iter(entries), None)  # uses only grow from the oldest entry to the youngest
        self._due = (now if oldest is None else touched.get(oldest, now)) + self._span
        self._evicted += len(evicted)
        self._set_aside(evicted)
        return evicted

    def _evict_locked(self, *, added: bool = True) -> list[tuple[K, V]]:
        """Remove idle entries, oldest first, until at capacity; each entry is looked at once at most.

        Idle entries that hold state (``holds_state``) are set aside: left where they are, their
        last use unchanged (being looked at is no use: ``ttl`` still evicts them once unused that
        long); once more than :meth:`_held_limit` of them are met, the oldest of them is
        evicted (asked ``is_idle`` again first), as an idle entry holding none is. So they go
        only after the others, and only while more than ``capacity`` of them are kept (the
        newest entry, never evicted, aside), the least recently used first; one eviction looks
        at :data:`HELD_LOOKS` of them at most (it stays O(1) when every entry holds state).
        Busy entries are moved to the young end, ``HELD_LOOKS + 1`` at most: past them the
        eviction stops, and the idle entries behind them go at a later one (each moves that many
        busy ones along), so an add costs O(1) however many entries are busy.

        Args:
            added: The youngest entry was just added (used now): the entries kept go before it.
                ``False`` (a :meth:`trim`): with a ``ttl`` they go after it, as used after it,
                so that the order of last use, which the expiry relies on, holds.
        """
        entries = self._entries
        excess = len(entries) - self._capacity
        evicted: list[tuple[K, V]] = []
        if excess <= 0:
            return evicted
        holds, is_idle = self._holds_state, self._is_idle
        holding: deque[tuple[K, V]] = deque()
        limit = self._held_limit()
        busy: list[K] = []
        newest = next(reversed(entries))  # the entry just added (or the youngest): never evicted
        for key, value in entries.items():  # oldest first: nothing moves or leaves until the end
            if key is newest:  # the store's own key objects: no key is compared with another
                break
            if not is_idle(value):
                busy.append(key)
                if len(busy) > HELD_LOOKS:  # the idle entries behind them go at a later eviction
                    break
                continue
            entry = (key, value)
            if holds is not None and holds(value):
                holding.append(entry)
                if len(holding) <= limit:
                    continue
                # Too many hold state: the oldest of them goes, asked again just before (an
                # is_idle may mark the entry it allows to evict, and a holds_state unmark the
                # one it keeps): it may be busy by now (then it stays where it is).
                entry = holding.popleft()
                if not is_idle(entry[1]):
                    continue
            evicted.append(entry)
            if len(evicted) == excess:
                break
        for key, _ in evicted:
            self._remove_locked(key)
        before = newest if added or self._ttl is None else None  # where the busy entries go
        for key in busy:
            self._keep_locked(key, before)
        self._evicted += len(evicted)
        self._set_aside(evicted)
        return evicted

    def _held_limit(self) -> int:
        """How many idle entries holding state one eviction (or count) sets aside at most."""
        return min(self._capacity, HELD_LOOKS)

    def _keep_locked(self, key: K, newest: K | None) -> None:
        """Keep busy ``key`` past an eviction: moved to the young end (before ``newest``, if any).

        With a ``ttl`` it counts as used now, so that the order of last use holds.
        """
        entries = self._entries
        entries.move_to_end(key)
        if newest is not None:
            entries.move_to_end(newest)
        if self._ttl is not None:
            self._touched[key] = self._now()

    def _remove_locked(self, key: K) -> None:
        """Take ``key`` out of the entries (an eviction)."""
        del self._entries[key]
        self._touched.pop(key, None)

    def _shrink_locked(self) -> list[tuple[K, V]]:
        """Evict the oldest idle entry holding no state of a store past its capacity, or make one busy young.

        Looks at the entries oldest first, past the idle ones that hold state (left where they
        are, as an eviction leaves them: being looked at is no use), :meth:`_held_limit` of them
        at most: the first busy entry met is moved to the young end (in use now), the first idle
        one holding none is evicted; past more of them, or at the entry used, nothing changes
        (the next add or :meth:`trim` evicts what must go).

        Called on a use (the entry used is the youngest, never one looked at).
        """
        entries = self._entries
        holds, is_idle = self._holds_state, self._is_idle
        looks = min(len(entries) - 1, self._held_limit() + 1)  # never the youngest, the entry used
        found: tuple[K, V] | None = None
        for key, value in itertools.islice(entries.items(), looks):
            if not is_idle(value):
                entries.move_to_end(key)  # the scan ends here: nothing more is read
                if self._ttl is not None:  # busy: in use now, so the order of last use holds
                    self._touched[key] = self._now()
                return _NOTHING
            if holds is None or not holds(value):
                found = (key, value)
                break
        if found is None:
            return _NOTHING
        self._remove_locked(found[0])
        self._evicted += 1
        evicted = [found]
        self._set_aside(evicted)
        return evicted

    def _set_aside(self, evicted: list[tuple[K, V]]) -> None:
        """Note the entries just evicted: in the weak index to revive, and as leaving until handed over."""
        if self._revivable is not None:
            for key, value in evicted:
                self._revivable[key] = value
        if self._on_evict is not None:
            leaving = self._leaving
            for _, value in evicted:
                leaving[id(value)] = value

    def _hand_over(self, evicted: list[tuple[K, V]]) -> None:
        """Hand each evicted entry to ``on_evict``; it stops being listed as leaving once that returns."""
        on_evict = self._on_evict
        if on_evict is None or not evicted:
            return
        leaving, lock = self._leaving, self._lock
        done = 0
        try:
            for key, value in evicted:
                on_evict(key, value)
                done += 1
                with lock:
                    leaving.pop(id(value), None)
        finally:
            if done < len(evicted):  # on_evict raised: nothing is left listed as leaving
                with lock:
                    for _, value in evicted[done:]:
                        leaving.pop(id(value), None)
