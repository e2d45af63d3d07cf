"""The display name of a user's callable: the one rule every pattern and the manager name it by.

What a name is used for: the name of a :class:`~otel_resilience.Retry` that ``@retry`` and the
one-shot retry functions build for a function, the operation an unnamed timeout's error names,
the default policy name of a manager's function, a recovery context's operation, a hedging
action in an error message. So it is bounded (it comes from the code, never from user data),
read once (when a function is decorated, a policy made, or on a failure path), and never
raises: a callable whose name cannot be read is named after its class.
"""

from __future__ import annotations

import functools
import types
from typing import Final

__all__ = ["callable_module", "callable_name"]

_LAMBDA: Final = "<lambda>"


def callable_name(fn: object) -> str:
    """Return the display name of ``fn``, a callable: what it is, in code terms.

    * a function, a nested function, a method or a class: its ``__qualname__``
      (``fetch``, ``outer.<locals>.fetch``, ``Client.get``, ``Client``), else its ``__name__``;
      a bound method, a ``classmethod`` or a ``staticmethod`` is named as the function
      (``Client.get``), whatever instance it is bound to; a builtin likewise (``len``,
      ``dict.get``);
    * a lambda: its module, ``__qualname__`` and first line (``app.handlers.<lambda>@42``), so
      that two lambdas are told apart;
    * a ``functools.partial`` (nested ones too): ``partial(<the name of the function it wraps>)``,
      ``partial(fetch)``;
    * a callable object, or anything whose ``__qualname__`` and ``__name__`` are missing, blank,
      not a ``str`` or raise when read: its class's ``__qualname__`` (``RateClient``).

    Bounded: the bound methods of two instances of one class share a name, as do two instances
    of one callable class.
    """
    try:
        if isinstance(fn, functools.partial):
            return f"partial({callable_name(_wrapped(fn))})"
        name = getattr(fn, "__qualname__", None)
        if not isinstance(name, str) or not name or name.isspace():
            name = getattr(fn, "__name__", None)
            if not isinstance(name, str) or not name or name.isspace():
                return type(fn).__qualname__
        if name.endswith(_LAMBDA):
            code = getattr(fn, "__code__", None)
            if isinstance(code, types.CodeType):
                module = getattr(fn, "__module__", None) or "?"
                return f"{module}.{name}@{code.co_firstlineno}"
    except Exception:  # noqa: BLE001 - a broken attribute of a callable: name it after its type
        return _type_name(fn)
    return name


def callable_module(fn: object) -> str | None:
    """Return the module ``fn``'s name comes from: where the function was defined, or the class.

    For a ``functools.partial`` (nested ones too), its function's; for a callable object, its
    class's. ``None`` when there is none that is a ``str``, or reading it raises (never raises).
    Two callables of different modules may share a :func:`callable_name`; this tells them apart.
    """
    try:
        module = getattr(_wrapped(fn), "__module__", None)
    except Exception:  # noqa: BLE001 - a broken attribute of a callable: no module known
        return None
    return module if isinstance(module, str) else None


def _wrapped(fn: object) -> object:
    """Return the function a ``functools.partial`` (nested ones too) wraps; ``fn`` when it is none."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _type_name(fn: object) -> str:
    """Return the ``__qualname__`` of ``fn``'s type, read past a metaclass that makes reading it raise."""
    return type.__dict__["__qualname__"].__get__(type(fn))  # type: ignore[no-any-return]
