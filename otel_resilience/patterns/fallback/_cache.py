"""Which call's last good value a ``CACHED_VALUE`` fallback may answer with: keys, bound and age.

A cached value answers only a call made with the same arguments as the call that returned it:
each argument tuple has a cache-service key of its own (:func:`argument_key`), the same in every
process, so that handlers sharing a service share their values. With a ``cache_max_age``, the
handler also remembers, in a small LRU (:class:`LastGoodIndex`), which keys it wrote and when
the value they hold was returned; a key it does not remember (never written by it, forgotten, or
older than ``cache_max_age``) is then a miss, whatever the service holds under it.

The background writes of the async driver keep one order per cache service and event loop
(:class:`CacheWrites`): one write in flight, then the newest value of each key waiting, shared
by a handler and those that replace it in reloads, so that a value returned before a reload never
lands after one returned since.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, cast

from otel_resilience.engine.calling import refuse_awaitable
from otel_resilience.engine.forking import fork_safe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from otel_resilience.patterns.fallback._config import CacheService
    from otel_resilience.patterns.fallback._step import FallbackCore

__all__: list[str] = []

CACHE_ENTRIES: Final = 256
"""How many keys a handler with a ``cache_max_age`` remembers (least recently used forgotten
first), and how many writes per key may wait for a stalled async cache."""

_PLAIN: Final = frozenset({str, bytes, int, float, bool, type(None)})
"""The exact types whose ``repr`` is one text per value, the same in every process."""


_NESTING: Final = 32
"""How deeply tuples of plain values may nest (deeper, an argument has no key: its ``repr``
would recurse as deeply as the nesting, and could exhaust the stack)."""


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is a plain value: of a :data:`_PLAIN` type, or a tuple of plain values.

    Tuples may nest at most :data:`_NESTING` deep (``depth``: how deep ``value`` is).
    """
    kind = type(value)
    if kind is tuple:
        return depth < _NESTING and all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return kind in _PLAIN


def argument_key(cache_key: str, args: tuple[object, ...], kwargs: Mapping[str, object]) -> str | None:
    """Return the cache-service key of a call's last good value; ``None``: the call has none.

    Plain arguments (``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None`` and tuples of
    them, of exactly these types; or none): ``"<cache_key>:<digest>"``, the digest of their
    ``repr`` (keyword arguments in name order), one text per argument tuple and the same in every
    process that shares the service. The digest is always there and of one length, so the key
    parses from its end: a keyed policy's ``cache_key`` (``"<cache_key>:<key>"``) whose key
    looks like another key followed by a digest never meets that key's values. Any other
    argument (an object whose ``repr`` may be shared by unequal values, or differ between
    processes), tuples nested more
    than :data:`_NESTING` deep, or an ``int`` too long for ``repr``
    (``sys.get_int_max_str_digits``) give ``None``: a call's key never fails the call.
    """
    named = tuple(sorted(kwargs.items()))
    if not (_plain(args, -1) and all(_plain(value) for _, value in named)):
        return None
    try:
        text = repr((args, named))
    except ValueError:  # an int longer than the interpreter converts to text
        return None
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{cache_key}:{digest[:32]}"


class LastGoodIndex:
    """The keys a handler wrote, each with the time its value was returned (thread-safe).

    Without a ``max_age`` it remembers nothing and every key may answer (the value under a key is
    always one of that key's arguments). A reload's new handler of the same cache reads on with
    the memory of the one it replaces (:meth:`aged`): the two share it, and its lock.

    Args:
        max_age: Seconds a value may answer for after the call returned it; ``None``: no limit.
        size: How many keys it remembers, least recently used forgotten first.
    """

    __slots__ = ("_entries", "_lock", "_max_age", "_size")

    def __init__(self, max_age: float | None, size: int = CACHE_ENTRIES) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._lock = fork_safe(threading.Lock())
        self._max_age = max_age
        self._size = size

    def aged(self, max_age: float) -> LastGoodIndex:
        """Return an index that shares this one's keys (and lock), read with ``max_age``."""
        index = LastGoodIndex.__new__(LastGoodIndex)
        index._entries = self._entries
        index._lock = self._lock
        index._max_age = max_age
        index._size = self._size
        return index

    def landed(self, key: str, returned_at: float) -> None:
        """Record that the service holds, under ``key``, a value returned at ``returned_at``."""
        if self._max_age is None:
            return
        with self._lock:
            entries = self._entries
            entries[key] = returned_at  # the write that ended last is the value the service holds
            entries.move_to_end(key)
            if len(entries) > self._size:
                entries.popitem(last=False)

    def fresh(self, key: str, now: float) -> bool:
        """Whether ``key`` may answer at ``now`` (without a ``max_age``: any key).

        With a ``max_age``: a key this handler (or the one it replaced) wrote, no more than
        ``max_age`` before ``now``. A key too old is kept (the LRU forgets it): a handler that
        shares the memory may read it with a longer ``max_age``.
        """
        max_age = self._max_age
        if max_age is None:
            return True
        with self._lock:
            entries = self._entries
            returned_at = entries.get(key)
            if returned_at is None or now - returned_at > max_age:
                return False
            entries.move_to_end(key)
            return True

    def __len__(self) -> int:
        return len(self._entries)


NO_AGE_LIMIT: Final = LastGoodIndex(None)
"""The index of every handler without a ``cache_max_age``: it remembers nothing, so one serves all."""


_Waiting = tuple["FallbackCore", object, float]
"""A value waiting to be written: the handler whose call returned it, the value, when it was returned."""


class CacheWrites:
    """The order of the writes to one cache service: per event loop, one write in flight at a time.

    While a loop's write runs (an awaitable ``set``, as a task of that loop), a later value only
    takes its key's place among that loop's waiting ones (the newest value of each key, at most
    :data:`CACHE_ENTRIES` keys, in the order the keys began to wait); the write's end starts the
    next one. A value is written on the loop of the call that returned it (an async client belongs
    to its loop). A reload's new handler of the same service writes through the one the handler
    it replaces made (:meth:`FallbackCore.follow`), so that what the old handler's calls left
    waiting never lands after what the new one's returned since: the newest value wins.

    Its lock is taken by a write's end, a loop callback that runs after the call returned, so it
    is made free in a forked child (:func:`~otel_resilience.engine.forking.fork_safe`).

    Args:
        service: The cache service written to.
    """

    __slots__ = ("lock", "next_writes", "service", "writes", "writing")

    def __init__(self, service: CacheService) -> None:
        self.service = service
        self.lock = fork_safe(threading.Lock())
        self.writing: dict[asyncio.AbstractEventLoop, asyncio.Future[Any]] | None = None
        """Per event loop, the write in flight, whose end starts that loop's next one; made at the
        first write."""
        self.next_writes: dict[asyncio.AbstractEventLoop, dict[str, _Waiting]] | None = None
        """Per event loop and key, the newest value waiting for that loop's :attr:`writing` to end;
        made at the first wait."""
        self.writes: set[asyncio.Future[Any]] | None = None
        """Every write task still running (kept alive until it ends); made at the first write."""

    def write(
        self,
        writer: FallbackCore,
        key: str,
        value: object,
        returned_at: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        """Write ``value`` (returned at ``returned_at`` by a call of ``writer``) under ``key``.

        ``loop``: the running loop of the call (the async driver), whose write in flight makes
        ``value`` wait in its key's place; ``None``: inline (the sync driver), where ``set`` must
        not return an awaitable. The key is remembered in ``writer``'s index once the value
        landed; an error is logged and counted by ``writer``.
        """
        if loop is not None:
            with self.lock:
                writing = self.writing
                if writing is not None and loop in writing:
                    queues = self.next_writes
                    if queues is None:
                        queues = self.next_writes = {}
                    waiting = queues.setdefault(loop, {})
                    waiting[key] = (writer, value, returned_at)  # in its key's place: it keeps its turn
                    if len(waiting) > CACHE_ENTRIES:
                        del waiting[next(iter(waiting))]
                    return
        self._start(writer, key, value, returned_at, loop)

    def _start(
        self,
        writer: FallbackCore,
        key: str,
        value: object,
        returned_at: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> bool:
        """Call ``set``; return whether its write now runs as ``loop``'s task (``None``: inline).

        ``False``: the write ended at once (landed, or failed: logged and counted), so nothing
        in flight will start ``loop``'s next one.
        """
        try:
            pending = self.service.set(key, value)
            if loop is None:
                refuse_awaitable(writer.label("cache_service.set"), pending)
        except Exception:  # noqa: BLE001 - logged and counted by cache_failed
            writer.cache_failed("set", key)
            return False
        if not inspect.isawaitable(pending):
            writer.index.landed(key, returned_at)  # thread-safe on its own
            return False
        loop = cast("asyncio.AbstractEventLoop", loop)  # an awaitable was refused inline
        task = asyncio.ensure_future(pending)
        with self.lock:
            writing = self.writing
            if writing is None:
                writing = self.writing = {}
            writes = self.writes
            if writes is None:
                writes = self.writes = set()
            for gone in [other for other in writing if other.is_closed()]:  # its write never ends
                writes.discard(writing.pop(gone))
                if self.next_writes is not None:
                    self.next_writes.pop(gone, None)
            writing[loop] = task
            writes.add(task)
        task.add_done_callback(functools.partial(self._written, writer, loop, key, returned_at))
        return True

    def _written(
        self,
        writer: FallbackCore,
        loop: asyncio.AbstractEventLoop,
        key: str,
        returned_at: float,
        task: asyncio.Future[Any],
    ) -> None:
        """Done callback of a write task: remember its key or count its error; write the loop's next one."""
        cancelled = task.cancelled()
        error = None if cancelled else task.exception()
        if error is not None:
            writer.cache_failed("set", key, error)
        elif not cancelled:
            writer.index.landed(key, returned_at)  # thread-safe on its own
        with self.lock:
            cast("set[asyncio.Future[Any]]", self.writes).discard(task)  # made when the task was added
            writing = cast("dict[asyncio.AbstractEventLoop, asyncio.Future[Any]]", self.writing)
            if writing.get(loop) is not task:
                return  # forgotten: its loop had closed
            del writing[loop]
        self._write_waiting(loop, drop=cancelled)  # cancelled: the loop shuts down, its values go

    def _write_waiting(self, loop: asyncio.AbstractEventLoop, *, drop: bool) -> None:
        """Write ``loop``'s waiting values, first waiting first, until one runs as a task.

        That task's end writes the rest. A value whose write ends at once (landed, or failed)
        never leaves the ones behind it waiting for a write that will not come. ``drop``: forget
        them instead (the loop shuts down).
        """
        while True:
            with self.lock:
                queues = self.next_writes
                waiting = None if queues is None else queues.get(loop)
                if not waiting or drop:
                    if queues is not None:
                        queues.pop(loop, None)
                    return
                key = next(iter(waiting))
                writer, value, returned_at = waiting.pop(key)
            if self._start(writer, key, value, returned_at, loop):
                return
