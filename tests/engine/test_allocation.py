"""Objects allocated by one C call and started by their own ``__init__`` (``engine.allocation``)."""

from __future__ import annotations

import pytest

from otel_resilience.engine.allocation import blank
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.context import SyncDeadline, current_deadline


class Point:
    """A slotted class with a Python ``__init__``."""

    __slots__ = ("x", "y")

    def __init__(self, x: int, y: int) -> None:
        self.x = x
        self.y = y

    def total(self) -> int:
        return self.x + self.y


def test_a_blank_instance_is_the_class_once_its_init_ran() -> None:
    """The allocator skips ``__init__``; running it by hand gives what calling the class gives."""
    new_point = blank(Point)
    point = new_point()
    assert isinstance(point, Point)
    assert type(point).__name__ == "Point"
    assert type(point).__qualname__ == Point.__qualname__
    with pytest.raises(AttributeError):
        _ = point.x  # nothing started yet
    Point.__init__(point, 2, 3)
    assert point.total() == 5
    with pytest.raises(AttributeError):
        point.z = 1  # type: ignore[attr-defined] # still slotted: no __dict__ came with the subclass
    with pytest.raises(TypeError):
        new_point(1, 2)  # type: ignore[call-arg] # the allocator takes no arguments


def test_blank_refuses_a_class_it_cannot_serve() -> None:
    """A class with its own ``__new__`` or without ``__slots__`` is refused, naming it."""

    class WithNew:
        __slots__ = ()

        def __new__(cls) -> WithNew:
            return object.__new__(cls)

    class WithDict:
        def __init__(self) -> None:
            self.a = 1

    with pytest.raises(TypeError, match="WithNew"):
        blank(WithNew)
    with pytest.raises(TypeError, match="WithDict"):
        blank(WithDict)


def test_a_deadline_scope_entered_by_explicit_calls_behaves_as_with() -> None:
    """The drivers' way (allocate, ``__init__``, ``__enter__``, ``__exit__``) publishes the deadline."""
    scope = blank(SyncDeadline)()
    SyncDeadline.__init__(scope, SYSTEM_CLOCK, 60.0, "op")
    assert current_deadline() is None
    scope.__enter__()
    try:
        published = current_deadline()
        assert published is not None
        assert published > SYSTEM_CLOCK.now()
    finally:
        scope.__exit__(None, None, None)
    assert current_deadline() is None
    assert not scope.expired
