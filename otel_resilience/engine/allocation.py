"""Objects made on every execution: allocated by one C call, then started by their own ``__init__``.

Calling a class whose ``__init__`` is Python code enters that ``__init__`` from C (the
interpreter's ``type_call`` and ``slot_tp_init``), a call CPython 3.11 cannot inline: about 300
machine instructions more than calling the same ``__init__`` as a plain function, and about 300
more again for ``object.__new__(cls)``, a builtin's generic call path. The objects the drivers
make on every execution (an :class:`~otel_resilience.engine.context.ExecutionContext`, a
deadline scope) are therefore made in two calls::

    ctx = new_context()                                    # blank(ExecutionContext): C only
    start_context(ctx, fn, args, kwargs, name, cap, sync)  # ExecutionContext.__init__

The class's ``__init__`` stays the one place of the object's first state, and calling the class
keeps working for everyone else (tests, a guard, a recovery's replay). A deadline scope's
``__init__`` checks its arguments first, for whoever makes one directly, then sets that state by
its ``start`` (``AsyncDeadline.start``), which a step's driver calls with its step's timeout,
checked when the step was made. Measured in docs/benchmarks.md ("Round 5").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["blank"]

T = TypeVar("T")


def blank(cls: type[T]) -> Callable[[], T]:
    """Return a callable that allocates an instance of ``cls`` without running its ``__init__``.

    The callable is a subclass of ``cls`` with no field of its own and ``object.__init__`` (a C
    function) as its ``__init__``, named as ``cls``: its instances pass ``isinstance(x, cls)``,
    have ``cls``'s methods and print as ``cls``'s. Start one with ``cls.__init__(instance, ...)``.

    Args:
        cls: A class with ``__slots__`` and no ``__new__`` of its own.

    Returns:
        The allocator.

    Raises:
        TypeError: ``cls`` defines ``__new__`` (the subclass would run it) or has no
            ``__slots__`` (the subclass would get a ``__dict__``).
    """
    if cls.__new__ is not object.__new__ or "__slots__" not in vars(cls):
        msg = f"blank() needs a class with __slots__ and no __new__ of its own, got {cls.__qualname__}"
        raise TypeError(msg)
    namespace: dict[str, Any] = {
        "__slots__": (),
        "__init__": object.__init__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": cls.__doc__,
    }
    return cast("Callable[[], T]", type(cls.__name__, (cls,), namespace))
