"""Which call's last good value a ``CACHED_VALUE`` fallback may answer with: keys, bound and age.

A cached value answers only a call made with the same arguments as the call that returned it:
each argument tuple has a cache-service key of its own (:func:`argument_key`), the same in every
process, so that handlers sharing a service share their values. With a ``cache_max_age``, the
handler also remembers, in a small LRU (:class:`LastGoodIndex`), which keys it wrote and when
the value they hold was returned; a key it does not remember (never written by it, forgotten, or
older than ``cache_max_age``) is then a miss, whatever the service holds under it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from otel_resilience.engine.forking import fork_safe

if TYPE_CHECKING:
    from collections.abc import Mapping

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
