"""Validation helpers shared by every configuration class.

Every check raises with one message shape, ``"<Class>.<field> must be <rule>, got <value>"``,
so that a user always learns which class, which field, which rule and which value was wrong.
Nothing is ever clamped silently. A value whose ``repr`` raises is still reported (by its type and
address), so that a bad value always gets the validation error, never the error of its ``repr``.

Every duration is at most :data:`MAX_DURATION` (``threading.TIMEOUT_MAX``, the longest wait the
platform's locks accept: about 292 years on Linux and macOS, 49.7 days on Windows), so that a
duration accepted at construction can be slept, waited on and added to a clock reading, and a
number too large for a ``float`` is a ``ValueError`` naming the field, never an ``OverflowError``.
Every count is at most :data:`MAX_COUNT` (``sys.maxsize``) for the same reason: a count accepted at
construction can size a window, a queue or a history, and is exported as a 64-bit integer.
"""

from __future__ import annotations

import abc
import inspect
import math
import os
import re
import reprlib
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import CoroutineType, FunctionType
from typing import Any, ClassVar, Final, Literal, cast, overload

from otel_resilience._text import MAX_ATTRIBUTE_LENGTH, whole_text

__all__ = [
    "MAX_ATTRIBUTE_LENGTH",
    "MAX_COUNT",
    "MAX_DURATION",
    "Derived",
    "ExceptionTypeCollection",
    "cannot_write",
    "check_callable",
    "check_called_with",
    "check_disjoint",
    "check_duration",
    "check_error_selector",
    "check_exception_types",
    "check_hashable",
    "check_int",
    "check_name",
    "check_number",
    "check_predicate",
    "check_sync_callable",
    "describe",
    "discard",
    "fail",
    "file_path",
    "in_the_way",
    "matched_by_class",
    "redacted_url",
    "verdict",
    "wrong_return",
]

MAX_DURATION: Final[float] = threading.TIMEOUT_MAX
"""The longest duration any configuration accepts, in seconds: ``threading.TIMEOUT_MAX``."""
MAX_COUNT: Final[int] = sys.maxsize
"""The largest count any configuration accepts: ``sys.maxsize`` (the longest a ``deque`` or a list
may be, and the largest value of a 64-bit metric)."""


_USER_INFO: Final = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)?[^/?#]*@")
"""A URL's user info (``user:password@``, up to the authority's last ``@``), after its scheme."""
_PASSWORD_PARAMETER: Final = re.compile(r"(?i)([?&]password=)[^&#]*")
"""A ``password=`` query parameter's value (redis-py reads one)."""


class Derived:
    """A field's default that its configuration class derives from the other fields, marked as such.

    Mixed into a subclass of the field's type (``class _Calls(Derived, int): plain = int``): the
    value is equal to, hashed and shown (``repr``) as the plain one, so every reader sees the value
    in force. A configuration given one back (``dataclasses.replace``, a copy, a pickle) finds it
    marked and derives it again from its own fields, rather than checking it as a value the caller
    wrote. Where every call reads the value, its owner keeps the plain one (an ``int`` or
    ``float`` subclass misses the interpreter's fast paths).
    """

    __slots__ = ()

    plain: ClassVar[Callable[[Any], object]]
    """The field's own type: what the value is shown, pickled and read as."""

    def __repr__(self) -> str:
        return repr(type(self).plain(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (type(self).plain(self),)


ExceptionTypeCollection = list[type[Exception]] | set[type[Exception]] | frozenset[type[Exception]]
"""The collections of exception types :func:`check_exception_types` takes besides a tuple (and
normalises to one): a field that names errors by type is declared to take them too."""


class _Shown(reprlib.Repr):
    """:class:`reprlib.Repr` whose repr of a value that is no container raises what ``repr`` raised.

    (``reprlib`` would hide it behind a name of its own: :func:`describe` says that it raised.)
    """

    def repr_instance(self, obj: object, level: int) -> str:  # noqa: ARG002 - reprlib's signature
        text = repr(obj)
        if len(text) > self.maxother:
            half = max(0, (self.maxother - 3) // 2)
            text = text[:half] + "..." + text[len(text) - half :]
        return text


def _bounded_repr() -> reprlib.Repr:
    """The repr of a value in an error message: bounded in depth and length, whatever it holds."""
    shown = _Shown()
    shown.maxlevel = 6
    shown.maxdict = shown.maxlist = shown.maxtuple = shown.maxset = shown.maxfrozenset = 32
    shown.maxdeque = shown.maxarray = 32
    shown.maxstring = shown.maxother = shown.maxlong = 400
    return shown


_SHOWN: Final = _bounded_repr()


def redacted_url(url: str) -> str:
    """Return ``url`` as a message or an output may show it: its user info and ``password=`` value as ``***``.

    A URL a user gives may carry credentials (``https://user:password@host``, ``?password=``);
    the messages that show it, and what a program prints of it, never show them.
    """
    return _PASSWORD_PARAMETER.sub(r"\1***", _USER_INFO.sub(r"\1***@", url, count=1))


def describe(value: object) -> str:
    """Return ``repr(value)`` for an error message, or a description that cannot fail when it raises.

    Bounded (:mod:`reprlib`: six levels deep, 32 items a container, 400 characters a value), so
    that a value built of shared parts (a configuration file's nested aliases), whose full repr
    would be exponential in its size, is described at once.

    Args:
        value: The value to show.

    Returns:
        ``repr(value)`` (cut where it is long, ``...`` marking what is left out), or
        ``"<Type object at 0x...> (its repr raised)"``.
    """
    try:
        return _SHOWN.repr(value)
    except Exception:  # noqa: BLE001 - the value is being reported as wrong, whatever its repr does
        return f"{object.__repr__(value)} (its repr raised)"


def _type_name(value: object) -> str:
    """Return the name of ``value``'s type, even when its metaclass makes that raise."""
    kind = type(value)
    try:
        return str(kind.__name__)
    except Exception:  # noqa: BLE001 - same as describe
        return type.__dict__["__name__"].__get__(kind)  # type: ignore[no-any-return]


def _as_float(owner: str, field: str, value: float, rule: str) -> float:
    """Return ``float(value)``; an ``int`` too large for a float is a ``ValueError`` naming the field.

    A negative zero is zero (``+ 0.0``): accepted where zero is, and held and shown as ``0.0``.
    """
    try:
        return float(value) + 0.0
    except OverflowError:
        raise fail(owner, field, rule, value) from None


def discard(value: object) -> None:
    """Close ``value`` if it is a coroutine being refused: it will never run.

    The one rule of every refused value, a field's or what a function the library calls and
    never awaits returned (a plain function that returns an async function's coroutine): left
    open, the coroutine would also make Python warn that it was never awaited.
    """
    if type(value) is CoroutineType:
        value.close()


def wrong_return(what: str, value: object, rule: str, *, kind: type[Exception] = TypeError) -> Exception:
    """Build (not raise) the error for a function the library calls that returned ``value``.

    A coroutine is closed (:func:`discard`).

    Args:
        what: The function, as the message names it (``"retry 'db': delay_from"``).
        value: What it returned.
        rule: What it must return, e.g. ``"it must return seconds"``.
        kind: ``TypeError`` (wrong type) or ``ValueError`` (wrong value).

    Returns:
        The exception, ready to be raised: ``"<what> returned <value>; <rule>"``.
    """
    discard(value)
    return kind(f"{what} returned {describe(value)}; {rule}")


def verdict(answer: object, predicate: str, name: str | None = None) -> bool:
    """Return the truth of what a predicate the library calls (and never awaits) answered: not a ``bool``.

    The one rule of every predicate's answer (``record_result``, ``retry_on``, ``handle_result``
    ...). Where it is read, a ``bool`` is taken as it is (``answer is False or answer is True``: no call) and
    anything else is given here: it counts by its truth (``None``, a string, a status), except an
    awaitable, which is never awaited, so its truth says nothing (a coroutine is always true: a
    plain function returning an async function's coroutine would say yes to everything).

    Args:
        answer: What the predicate returned.
        predicate: The predicate, as its config names it (``"CircuitBreakerConfig.record_result"``).
        name: The instance that asked it (a breaker's name), for the message; ``None``: not known.

    Raises:
        TypeError: ``answer`` is awaitable, or has no truth value (its ``__bool__`` raised, as a
            NumPy array's does): ``"<predicate> of '<name>' returned <answer>; ..."`` (a
            coroutine is closed: :func:`discard`; the error ``__bool__`` raised is the cause).
    """
    what = predicate if name is None else f"{predicate} of {name!r}"
    if inspect.isawaitable(answer):
        rule = (
            "a predicate is called, never awaited: it must return a bool, not an awaitable "
            "(give a plain function)"
        )
        raise wrong_return(what, answer, rule)
    try:
        return bool(answer)
    except Exception as error:
        rule = (
            f"its truth value raised {_type_name(error)}: a predicate must return a bool "
            "(reduce an array with .any() or .all())"
        )
        raise wrong_return(what, answer, rule) from error


def fail(
    owner: str, field: str, rule: str, value: object, *, kind: type[Exception] = ValueError
) -> Exception:
    """Build (not raise) the standard validation error; a refused coroutine is closed (:func:`discard`).

    Args:
        owner: The class name, e.g. ``"CircuitBreakerConfig"``.
        field: The field name, e.g. ``"failure_threshold"``.
        rule: What the value must be, e.g. ``">= 1"``.
        value: The value that was given.
        kind: ``ValueError`` (bad value) or ``TypeError`` (bad type).

    Returns:
        The exception, ready to be raised.
    """
    discard(value)
    shown = f"{describe(value)} ({_type_name(value)})" if kind is TypeError else describe(value)
    return kind(f"{owner}.{field} must be {rule}, got {shown}")


def check_int(owner: str, field: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) ``>= minimum`` and ``<=`` :data:`MAX_COUNT`.

    ``maximum`` (at most :data:`MAX_COUNT`) is the field's own upper bound, named in the error
    of any value above it, however large.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(owner, field, "an int", value, kind=TypeError)
    if value < minimum:
        raise fail(owner, field, f">= {minimum}", value)
    if maximum is not None and value > maximum:
        raise fail(owner, field, f"<= {maximum}", value)
    if value > MAX_COUNT:
        raise fail(owner, field, f"<= {MAX_COUNT} (sys.maxsize)", value)
    return value


def check_number(
    owner: str,
    field: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite ``float`` inside the given bounds; raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(owner, field, "a number", value, kind=TypeError)
    number = _as_float(owner, field, value, "a finite number")
    if math.isnan(number) or math.isinf(number):
        raise fail(owner, field, "a finite number", value)
    if minimum is not None and (number < minimum or (not min_inclusive and number == minimum)):
        raise fail(owner, field, f"{'>=' if min_inclusive else '>'} {minimum:g}", value)
    if maximum is not None and (number > maximum or (not max_inclusive and number == maximum)):
        raise fail(owner, field, f"{'<=' if max_inclusive else '<'} {maximum:g}", value)
    return number


def check_duration(owner: str, field: str, value: object, *, allow_zero: bool = False) -> float:
    """Return a duration in seconds (``float`` or ``timedelta``), positive and <= :data:`MAX_DURATION`.

    Args:
        owner: The class name.
        field: The field name.
        value: Seconds as ``int``/``float``, or a ``datetime.timedelta``.
        allow_zero: Whether ``0`` is accepted (e.g. a zero retry delay).

    Returns:
        The duration in seconds as a ``float``: ``value`` itself when it is a positive ``float``
        in range (no copy held per config that checks one again, a step's ``seconds``).
    """
    if type(value) is float:  # the common case, in two tests: held as it is (a zero as 0.0, never -0.0)
        if 0.0 < value <= MAX_DURATION:
            return value
        if value == 0.0 and allow_zero:
            return 0.0
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(owner, field, "a duration in seconds (float or timedelta)", value, kind=TypeError)
    longest = f"<= {MAX_DURATION:.0f} seconds (threading.TIMEOUT_MAX)"
    number = _as_float(owner, field, value, longest)
    if math.isnan(number) or math.isinf(number):
        raise fail(owner, field, "a finite duration", value)
    if allow_zero:
        if number < 0:
            raise fail(owner, field, ">= 0 seconds", value)
    elif number <= 0:
        raise fail(owner, field, "> 0 seconds", value)
    if number > MAX_DURATION:
        raise fail(owner, field, longest, value)
    return number


def check_name(owner: str, field: str, value: object) -> str:
    """Return ``value`` if it is a non-empty ``str`` of at most :data:`MAX_ATTRIBUTE_LENGTH` characters.

    A name becomes a telemetry attribute (``resilience.policy``, ``resilience.name``) as it is
    written: one too long for an attribute is refused here, never cut where it is shown (a cut
    name would differ from the configured one, and two names could become one series).
    """
    if not isinstance(value, str):
        raise fail(owner, field, "a str", value, kind=TypeError)
    if not value.strip():
        raise fail(owner, field, "a non-empty name", value)
    if len(value) > MAX_ATTRIBUTE_LENGTH:
        raise fail(owner, field, _NAME_LENGTH, value)
    if not whole_text(value):  # a lone surrogate: no exporter can send it
        raise fail(owner, field, "a name of whole characters (no lone surrogate: UTF-8 text)", value)
    return value


_NAME_LENGTH: Final = f"a name of at most {MAX_ATTRIBUTE_LENGTH} characters (a telemetry attribute)"


def check_hashable(owner: str, field: str, value: object) -> None:
    """Refuse a ``value`` that cannot be hashed (a key) with a ``TypeError`` naming the field."""
    try:
        hash(value)
    except TypeError:
        raise fail(owner, field, "hashable", value, kind=TypeError) from None


def check_callable(owner: str, field: str, value: object, *, optional: bool = False) -> Any:
    """Return ``value`` if it is callable (or ``None`` when ``optional``); raise ``TypeError`` otherwise.

    The one rule of every field that takes a callable: the message says ``callable or None``
    for an optional one.
    """
    if value is None and optional:
        return None
    if not callable(value):
        raise fail(owner, field, "callable or None" if optional else "callable", value, kind=TypeError)
    return value


def check_called_with(owner: str, field: str, value: Any, *arguments: str, hint: str = "") -> Any:
    """Return ``value`` if it can be called as the library calls it, with ``arguments`` (positional).

    The one rule of a hook's or a predicate's parameters, read from its signature
    (:func:`inspect.signature`; a wrapper's own, ``*args`` taking anything), so that one taking
    other arguments is refused when it is given, not at its first call: often on a failure,
    which its ``TypeError`` would then replace. ``None``, and a callable whose signature cannot be
    read (some builtins), are taken as they are.

    Args:
        owner: The class name.
        field: The field name.
        value: A callable (checked as one already), or ``None``.
        arguments: The names of the arguments it is called with, in order, for the message.
        hint: Appended to the rule, to say what to give instead (``""``: nothing).

    Raises:
        TypeError: ``"<Class>.<field> must be callable as <field>(<arguments>), got <value>"``.
    """
    if value is None or _takes(value, len(arguments)) is not False:
        return value
    rule = f"callable as {field}({', '.join(arguments)}){hint}"
    raise fail(owner, field, rule, value, kind=TypeError)


def _takes(value: Any, count: int) -> bool | None:
    """Whether ``value`` can be called with ``count`` positional arguments; ``None``: not known.

    A plain function (a lambda given inline, made anew on every call) is read from its code, as
    the interpreter binds a call, in a few attribute reads: :func:`inspect.signature` costs about
    15 microseconds, which a one-shot retry with a new hook would pay on every call.
    """
    if type(value) is FunctionType:
        code = value.__code__
        positional = code.co_argcount
        defaults = value.__defaults__
        keyword_defaults = value.__kwdefaults__
        return (
            positional - (len(defaults) if defaults else 0) <= count
            and (count <= positional or bool(code.co_flags & inspect.CO_VARARGS))
            and code.co_kwonlyargcount <= (len(keyword_defaults) if keyword_defaults else 0)
        )
    try:
        signature = inspect.signature(value, follow_wrapped=False)
    except Exception:  # noqa: BLE001 - no signature to read (a builtin, a foreign callable)
        return None
    try:
        signature.bind(*range(count))
    except TypeError:
        return False
    return True


def check_called_first(owner: str, field: str, value: Any, *arguments: str) -> Any:
    """Return ``value`` if it can take ``arguments`` (positional) first, then the protected call's own.

    The rule of a function the library calls with arguments of its own followed by the call's
    (a fallback's ``fallback_function(error, *args, **kwargs)``): what follows is known at each
    call only, so only room for ``arguments`` first is checked (a parameter each, or ``*args``),
    when it is given rather than at a failure, whose error its ``TypeError`` would replace.
    ``None``, and a callable whose signature cannot be read (some builtins), are taken as they are.

    Raises:
        TypeError: ``"<Class>.<field> must be callable as <field>(<arguments>, *args, **kwargs),
            got <value>"``.
    """
    if value is None or _has_room(value, len(arguments)) is not False:
        return value
    rule = f"callable as {field}({', '.join((*arguments, '*args', '**kwargs'))})"
    raise fail(owner, field, rule, value, kind=TypeError)


_POSITIONAL: Final = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
"""The kinds of parameter a positional argument binds to (besides ``*args``)."""


def _has_room(value: Any, count: int) -> bool | None:
    """Whether ``value`` binds ``count`` positional arguments first, whatever else it requires.

    ``None``: not known (no signature to read).
    """
    if type(value) is FunctionType:
        code = value.__code__
        return count <= code.co_argcount or bool(code.co_flags & inspect.CO_VARARGS)
    try:
        signature = inspect.signature(value, follow_wrapped=False)
    except Exception:  # noqa: BLE001 - no signature to read (a builtin, a foreign callable)
        return None
    kinds = [parameter.kind for parameter in signature.parameters.values()]
    return inspect.Parameter.VAR_POSITIONAL in kinds or sum(kind in _POSITIONAL for kind in kinds) >= count


def check_not_generator(owner: str, field: str, value: object, rule: str) -> None:
    """Refuse a generator function (sync or async, a partial of one too) where what a call returns answers.

    So is an object whose ``__call__`` is one (a partial of it too): what a call makes decides.

    The one rule of a function that stands in for the protected one (a fallback's, a hedge's
    action): a generator function returns an iterator at once, before its body runs, so its call
    cannot fail, and what it answers is no result. The protected function itself is refused so
    (:func:`~otel_resilience.engine.protecting.check_protectable`), by the same rule of what a
    call makes (:func:`~otel_resilience.engine.protecting.makes_iterator`).

    Raises:
        TypeError: ``"<Class>.<field> must be <rule>, got <value>"``.
    """
    from otel_resilience.engine.protecting import makes_iterator  # noqa: PLC0415 - imports this module

    if makes_iterator(value):
        raise fail(owner, field, rule, value, kind=TypeError)


def check_sync_callable(
    owner: str, field: str, value: object, *, what: str, hint: str = "", optional: bool = False
) -> Any:
    """Return ``value`` if it is a plain (sync) callable (or ``None`` when ``optional``); raise ``TypeError``.

    The one rule of every callable a pattern calls and never awaits (a predicate, a factory): an
    async one (a coroutine function, or an object whose ``__call__`` is one) returns a coroutine,
    which is never awaited, and is true (a predicate would say yes to everything) or the wrong
    value (a factory's result).

    Args:
        owner: The class name.
        field: The field name.
        value: The callable given.
        what: What the callable is, in the message (``"predicate"``, ``"factory"``).
        hint: Appended to the rule, to say what to give instead (``""``: nothing).
        optional: Whether ``None`` is accepted (and returned).
    """
    from otel_resilience.engine.protecting import is_async_callable  # noqa: PLC0415 - imports this module

    if check_callable(owner, field, value, optional=optional) is not None and is_async_callable(value):
        rule = f"a plain (sync) {what}, not a coroutine function{hint}"
        raise fail(owner, field, rule, value, kind=TypeError)
    return value


def check_predicate(owner: str, field: str, value: object, *arguments: str, optional: bool = False) -> Any:
    """Return ``value`` if it is a plain (sync) predicate (or ``None`` when ``optional``).

    A predicate is called, never awaited: an async one returns a coroutine, which is true, so it
    would say yes to everything (the rule: :func:`check_sync_callable`); so would a generator
    function, sync or async, whose iterator is returned before its body runs
    (:func:`check_not_generator`). A class whose instances
    are callable is refused too: its instance is the predicate (``ChaosSwitch()``, not
    ``ChaosSwitch``), and calling the class makes one (true, or an error when it cannot take the
    argument), never a verdict; a class that answers (``bool``) is a predicate. Given
    ``arguments`` (the names of what it is called with), one that cannot take them is refused
    too (:func:`check_called_with`).
    """
    if isinstance(value, type) and any("__call__" in vars(kind) for kind in value.__mro__):
        rule = "a predicate (a function or an instance), not a class whose instances are predicates"
        raise fail(owner, field, rule, value, kind=TypeError)
    predicate = check_sync_callable(owner, field, value, what="predicate", optional=optional)
    check_not_generator(owner, field, predicate, _PREDICATE_NOT_A_GENERATOR)
    return check_called_with(owner, field, predicate, *arguments) if arguments else predicate


_PREDICATE_NOT_A_GENERATOR: Final = (
    "a predicate that returns a bool, not a generator function (whose iterator, made before its body "
    "runs, is true: it would say yes to everything)"
)


def check_exception_types(
    owner: str, field: str, value: object
) -> tuple[type[BaseException], ...] | Callable[[BaseException], bool]:
    """Normalise an exception selector: a type, a tuple of types, or a predicate (:func:`check_predicate`).

    A predicate is called as ``predicate(error)``: one that cannot take that argument is refused.

    Returns:
        A tuple of exception types, or the predicate unchanged.
    """
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, (tuple, list, frozenset, set)):
        types = tuple(value)
        for item in types:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise fail(owner, field, "exception types or a predicate", value, kind=TypeError)
        return types
    if callable(value):
        check_predicate(owner, field, value, "error")
        return value
    raise fail(owner, field, "exception types or a predicate", value, kind=TypeError)


def check_disjoint(
    owner: str, field: str, covering: tuple[type, ...], *, other: str, covered: tuple[type, ...], verb: str
) -> None:
    """Refuse types ``covering`` (``field``) that take every error of a type of ``covered`` (``other``).

    The one rule of a selector that wins over another (a breaker's ``ignore_exceptions`` over its
    ``record_exceptions``, a retry's ``no_retry_on`` over its ``retry_on``): a type the second names
    whose every error the first takes would be named for nothing, so the pair is refused. A
    narrower type in ``covering`` (a subclass of a type of ``covered``) carves an exception out,
    and is valid.

    Args:
        owner: The configuration class, for the message.
        field: The winning field, for the message.
        covering: Its exception types.
        other: The field it wins over, for the message.
        covered: That field's exception types.
        verb: What ``field`` does to them, for the message (``"ignores the recorded"``).

    Raises:
        ValueError: A type of ``covered`` is a subclass of one of ``covering``.
    """
    hidden = tuple(kind for kind in covered if issubclass(kind, covering))
    if hidden:
        raise fail(owner, field, f"disjoint from {other} (it {verb} {hidden!r})", covering)


@overload
def check_error_selector(
    owner: str, field: str, value: object, never: str, *, predicate: Literal[False]
) -> tuple[type[Exception], ...]: ...


@overload
def check_error_selector(
    owner: str, field: str, value: object, never: str, *, predicate: bool = True
) -> tuple[type[Exception], ...] | Callable[[Exception], bool]: ...


def check_error_selector(
    owner: str, field: str, value: object, never: str, *, predicate: bool = True
) -> tuple[type[Exception], ...] | Callable[[Exception], bool]:
    """Normalise a selector of the errors a pattern acts on: ``Exception`` subclasses or a predicate.

    A ``BaseException`` that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``,
    ``SystemExit``) is never an error a pattern counts, retries, hedges or answers, so naming one
    is a ``ValueError`` (the type is right, the value is not).

    Args:
        owner: The configuration class, for the message.
        field: The field, for the message.
        value: A type, a tuple (or list, set) of types, or a predicate.
        never: What the pattern never does with a cancellation, for the message
            (``"cancellation is never retried"``).
        predicate: Whether a predicate is taken (else exception types only). A predicate is
            called as ``predicate(error)``: one that cannot take that argument is refused here
            (:func:`check_called_with`), not at the first error, whose outcome it would replace.

    Returns:
        A tuple of ``Exception`` subclasses, or the predicate unchanged.

    Raises:
        TypeError: ``value`` is neither exception types nor callable, is a callable where
            ``predicate`` is false, or a predicate that cannot be called with one argument.
        ValueError: A type is a ``BaseException`` that is not an ``Exception``.
    """
    if not predicate and callable(value) and not isinstance(value, type):
        raise fail(owner, field, "exception types", value, kind=TypeError)
    selector = check_exception_types(owner, field, value)  # a predicate: callable as predicate(error)
    if isinstance(selector, tuple) and not all(issubclass(item, Exception) for item in selector):
        raise fail(owner, field, f"Exception subclasses or a predicate ({never})", value)
    return cast("tuple[type[Exception], ...] | Callable[[Exception], bool]", selector)


_ABC_INSTANCE_CHECK: Final[object] = abc.ABCMeta.__instancecheck__
_TYPE_INSTANCE_CHECK: Final[object] = type.__instancecheck__
_TYPE_SUBCLASS_CHECK: Final[object] = type.__subclasscheck__


def _answers_by_class(meta: type) -> bool:
    """Whether ``isinstance(x, C)`` is ``issubclass(type(x), C)`` for a class ``C`` of metaclass ``meta``.

    ``ABCMeta``'s ``__instancecheck__`` asks ``__subclasscheck__`` for the class of the instance,
    whatever it is. ``type``'s reads the class's real hierarchy and never asks it: with it, the two
    agree only while ``__subclasscheck__`` is ``type``'s too (one of a metaclass's own would count
    classes ``isinstance`` does not count).
    """
    check: object = meta.__instancecheck__
    if check is _ABC_INSTANCE_CHECK:
        return True
    subclass_check: object = meta.__subclasscheck__
    return check == _TYPE_INSTANCE_CHECK and subclass_check == _TYPE_SUBCLASS_CHECK


def matched_by_class(types: tuple[type, ...]) -> bool:
    """Whether ``issubclass(type(error), types)`` answers as ``isinstance(error, types)``, the rule.

    A selector of exception types matches an error as ``isinstance`` does (``RetryPolicy.is_retryable``,
    a fallback's ``handle_exceptions``, a breaker's ``record_exceptions``). A step may test the
    error's class instead, cheaper when the answer is usually no (docs/design.md), only when that
    gives the same answer: when no class's metaclass has an ``__instancecheck__`` of its own (one
    that matches instances by their fields, say an HTTP status, matches no class), nor a
    ``__subclasscheck__`` that its ``isinstance`` never asks (:func:`_answers_by_class`). Asked
    once, when the selector is set.
    """
    return all(_answers_by_class(type(kind)) for kind in types)


def file_path(owner: str, path: object, field: str = "path") -> str:
    """Return ``path`` as a ``str``: a ``str``, or an ``os.PathLike`` of one (a ``pathlib.Path``).

    Raises:
        TypeError: Naming ``owner.field``, for anything else (bytes, a number, ``None``).
        ValueError: Naming ``owner.field``, for an empty one or one with a NUL character (it names no
            file).
    """
    try:
        source = os.fspath(path)  # type: ignore[call-overload]
    except TypeError:
        source = None
    if not isinstance(source, str):
        raise fail(owner, field, "a str or an os.PathLike of one", path, kind=TypeError)
    if not source:
        raise fail(owner, field, "a non-empty path", path)
    if "\0" in source:  # no file has such a name: the operating system's call would refuse it unnamed
        raise fail(owner, field, "a path without NUL", path)
    return source


def cannot_write(directory: str | os.PathLike[str], error: OSError) -> str:
    """Say why ``directory`` could not be written: a file in its way, else the system's reason.

    A file in its way is ``directory`` or one of its parents that exists and is no folder: a file,
    or a device (``/dev/null``), whose own error would be "File exists" or "Not a directory".
    """
    return in_the_way(Path(file_path("cannot_write", directory, "directory"))) or str(error)


def in_the_way(folder: Path) -> str | None:
    """What is in the way of ``folder`` (``folder`` or a parent that is no folder), or ``None``."""
    blocker = next((path for path in (folder, *folder.parents) if _no_folder(path)), None)
    if blocker is None:
        return None
    return f"{blocker} is a file, not a folder" if blocker.is_file() else f"{blocker} is not a folder"


def _no_folder(path: Path) -> bool:
    """Whether ``path`` exists and is no folder (a file, a device, a socket; a link to one of them)."""
    try:
        return path.exists() and not path.is_dir()
    except OSError:  # a path the system cannot look at (too long, a loop of links): not the blocker
        return False
