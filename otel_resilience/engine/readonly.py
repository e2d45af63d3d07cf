"""Read-only public attributes over private slots, in one line each; a read-only mapping.

``ratio = ReadOnly[float]("_ratio", "Retries allowed per first attempt.")`` in a class body
publishes the slot ``_ratio`` as the read-only attribute ``ratio``: a ``property`` whose getter is
``operator.attrgetter("_ratio")`` (no Python frame per read, so cheaper than a ``@property``
method), documented like one, typed ``float`` on instances for type checkers, and read-only for
them too (an assignment is a type error, as it is an ``AttributeError`` at run time).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, overload

__all__ = ["FrozenMapping", "ReadOnly"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class ReadOnly(property, Generic[T]):
    """A read-only attribute that reads the slot ``slot`` (``ReadOnly[type](slot, doc)``).

    Args:
        slot: The attribute read (a dotted path such as ``"_core.stats"`` reads through).
        doc: The attribute's docstring.
    """

    def __init__(self, slot: str, doc: str) -> None:
        super().__init__(operator.attrgetter(slot))
        self.__doc__ = doc

    if TYPE_CHECKING:

        @overload
        def __get__(self, instance: None, owner: type | None = None, /) -> ReadOnly[T]: ...

        @overload
        def __get__(self, instance: object, owner: type | None = None, /) -> T: ...

        def __get__(self, instance: object, owner: type | None = None, /) -> Any: ...

        def __set__(self, instance: object, value: NoReturn, /) -> None:
            """No value can be assigned (``property``'s own ``__set__`` raises ``AttributeError``)."""


class FrozenMapping(Mapping[K, V]):
    """A read-only mapping (a copy of ``items``) that can be pickled and deep-copied.

    A ``MappingProxyType`` cannot be: a value holding one (an alert's attributes, a recovery
    context's keyword arguments) could not be handed to another process, deep-copied, or given to
    ``dataclasses.asdict``. Made with the value that holds it, never on a call's path.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[K, V]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self) -> tuple[type[FrozenMapping[K, V]], tuple[dict[K, V]]]:
        return type(self), (self._items,)
