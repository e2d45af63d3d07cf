"""The exception hierarchy of otel_resilience.

::

    ResilienceError(Exception)
    ├── ExecutionRejectedError            the dependency was never called
    │   ├── CircuitOpenError              .name, .state, .retry_after, .key
    │   ├── BulkheadFullError             .name, .max_concurrent, .max_waiting, .reason, .key
    │   │   └── BulkheadTimeoutError      waited in the queue longer than the bulkhead's timeout
    │   └── RateLimitedError              .name, .retry_after, .key
    ├── OperationTimeoutError(ResilienceError, TimeoutError)   .timeout, .scope, .operation
    ├── RecoveryEscalatedError            raised by ESCALATE, ``from`` the original error
    └── UnacceptedResultError             .name, .result: a value a fallback's handle_result refused

Structured fields come first; the message is derived from them only when it is shown, so that
raising a rejection formats no string. ``BaseException`` keeps the constructor's arguments as
``args`` (so pickling and ``repr`` rebuild the error from them). The rejections, raised on hot
paths, have no ``__init__`` of their own: their fields are read-only views of ``args`` (the
signature is declared for type checkers only, positional as the builtin constructor takes it),
so making one runs no Python frame; the other errors set their fields in ``__init__``. When
retries run out the *original* exception is re-raised, never wrapped.

A rejection raised by the breaker, bulkhead or rate limiter of one key of a keyed policy
(``manager.policy(...).for_key(key)``) names the key: its ``key`` is ``str(key)``, its last
argument (made by :func:`keyed_rejection`), and its message says
``circuit breaker 'payments' (key 'api.example.com') is open; ...``: a key longer than
``MAX_ATTRIBUTE_LENGTH`` (256) is cut there as its ``resilience.key`` is, ending in a digest of
the whole key, and stays whole in ``key``. Elsewhere ``key`` is ``None`` and the arguments are
the ones they always were.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar, overload

from otel_resilience._text import key_attribute

__all__ = [
    "BulkheadFullError",
    "BulkheadTimeoutError",
    "CircuitOpenError",
    "ExecutionRejectedError",
    "OperationTimeoutError",
    "RateLimitedError",
    "RecoveryEscalatedError",
    "ResilienceError",
    "UnacceptedResultError",
]


_T = TypeVar("_T")
_E = TypeVar("_E", bound="ExecutionRejectedError")
_R = TypeVar("_R", bound=BaseException)


class _Arg(Generic[_T]):
    """A read-only field of an error that is its constructor's argument ``index``, kept in ``args``.

    The rejections are made on hot paths: with their fields read from ``args``, they need no
    ``__init__`` of their own, so making one runs no Python frame (their signature is declared
    for type checkers only).
    """

    def __init__(self, index: int, doc: str) -> None:  # nine of them: no __slots__ (a __doc__ each)
        self._index = index
        self._name = ""
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, error: None, owner: type) -> _Arg[_T]: ...

    @overload
    def __get__(self, error: BaseException, owner: type) -> _T: ...

    def __get__(self, error: BaseException | None, owner: type) -> Any:
        if error is None:
            return self
        try:
            return error.args[self._index]
        except IndexError:  # made with fewer arguments (a message alone): the field was not given
            msg = f"{type(error).__name__}.{self._name}: the error was made without it (args: {error.args!r})"
            raise AttributeError(msg) from None

    def __set__(self, error: BaseException, value: NoReturn) -> NoReturn:  # no value type-checks either
        msg = f"{type(error).__name__}.{self._name} is read-only (it is the argument {self._index} in args)"
        raise AttributeError(msg)


class _KeyArg(_Arg["str | None"]):
    """A rejection's ``key``: its last argument when a key's own instance made it, else ``None``."""

    @overload
    def __get__(self, error: None, owner: type) -> _KeyArg: ...

    @overload
    def __get__(self, error: BaseException, owner: type) -> str | None: ...

    def __get__(self, error: BaseException | None, owner: type) -> Any:
        if error is None:
            return self
        args = error.args
        return args[self._index] if len(args) > self._index else None


_KEY_DOC = "The key of the keyed policy whose own instance rejected the call (``str(key)``), or ``None``."


def _who(what: str, name: str, key: str | None) -> str:
    """The subject of a rejection's message: ``"circuit breaker 'payments' (key 'api.example.com')"``.

    The key is shown as its ``resilience.key`` is written (:func:`~otel_resilience._text.key_attribute`:
    a long one cut, ending in a digest of the whole), so that a message stays bounded; the
    error's ``key`` is whole. Run when the message is shown, never when the error is made.
    """
    return f"{what} {name!r}" if key is None else f"{what} {name!r} (key {key_attribute(key)!r})"


def _shown(message: Callable[[_R], str]) -> Callable[[_R], str]:
    """Make ``message`` an error's ``__str__`` that never raises (a rejection's, a timeout's).

    An error made with arguments of another shape than its signature's (a message alone, as
    ``CircuitOpenError("breaker down")`` in an application's test double; a field of another
    type, as ``OperationTimeoutError("fetch", "1s")``) has no field to format: its ``str`` is then
    ``Exception``'s, its arguments, so that logging or printing it cannot fail.
    """

    def __str__(error: _R) -> str:  # noqa: N807 - it is the method
        try:
            return message(error)
        except (AttributeError, TypeError, ValueError):
            return Exception.__str__(error)

    return functools.update_wrapper(__str__, message)


def keyed_rejection(error_type: Callable[..., _E], key: str | None) -> Callable[..., _E]:
    """Return what makes the rejections of an instance of ``key``: ``error_type(*args, key)``.

    Decided once, when the key's instance or link is made. Without a key (``None``) it is
    ``error_type`` itself: an unkeyed instance's rejections run no Python frame, no test.
    """
    if key is None:
        return error_type

    def make(*args: Any) -> _E:
        return error_type(*args, key)

    return make


class ResilienceError(Exception):
    """Base class of the errors otel_resilience raises in place of a protected call's outcome.

    A rejection, a timeout, an escalation, an unaccepted result: what the library decided. A
    dependency's own error reaches the caller as it is (never wrapped), and a wrong argument or
    configuration is a ``TypeError`` or ``ValueError`` (``config.ConfigError`` for a file), not
    one of these.
    """


class ExecutionRejectedError(ResilienceError):
    """The protected call was rejected: the dependency was never called."""


class CircuitOpenError(ExecutionRejectedError):
    """A circuit breaker rejected the call.

    Attributes:
        name: The breaker's name.
        state: The breaker's state value when it rejected (``"open"`` or ``"half_open"``).
        retry_after: Seconds a caller should wait before it tries again.
            ``"open"``: what is left of the OPEN period, after which a probe is let through
            (``inf`` when the breaker was forced open until ``reset()``; never ``0.0``: 0.001 s
            when the period ended as the call was rejected). ``"half_open"``: how
            long a failed probe would keep the breaker OPEN, the next opening's duration (its
            ``break_duration``, else its ``timeout``; never ``0.0``), or the time left before a
            hung probe is reclaimed when ``max_half_open_wait`` is set. Its probes are in flight
            and it cannot know how long they take; if they fail it stays OPEN that long, so that
            is when a retry is first likely to help, and a caller that honours it does not retry
            at once against a dependency that is still being probed.
        key: The key whose own breaker rejected, in a keyed policy (``str(key)``); else ``None``.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # the arguments are kept in ``args``, read by the fields (_Arg)

        def __init__(self, name: str, state: str, retry_after: float, key: str | None = None, /) -> None: ...

    name = _Arg[str](0, "The breaker's name.")

    state = _Arg[str](1, "The breaker's state value when it rejected.")

    retry_after = _Arg[float](2, "Seconds a caller should wait before it tries again.")

    key = _KeyArg(3, _KEY_DOC)

    @_shown
    def __str__(self) -> str:
        breaker = _who("circuit breaker", self.name, self.key)
        if self.state == "half_open":
            return (
                f"{breaker} is half-open and all probe permits are in use; retry after {self.retry_after:g} s"
            )
        if self.retry_after == math.inf:
            return f"{breaker} is forced open until reset()"
        return f"{breaker} is {self.state}; next probe in {self.retry_after:.3f} s"


class BulkheadFullError(ExecutionRejectedError):
    """A bulkhead rejected the call: every slot was busy and the wait queue was full.

    Attributes:
        name: The bulkhead's name.
        max_concurrent: Its concurrency limit.
        max_waiting: Its queue limit.
        reason: ``"full"``, or ``"queue_timeout"`` for :class:`BulkheadTimeoutError`.
        key: The key whose own bulkhead rejected, in a keyed policy (``str(key)``); else ``None``.
    """

    __slots__ = ()

    reason = "full"

    if TYPE_CHECKING:  # the arguments are kept in ``args``, read by the fields (_Arg)

        def __init__(
            self, name: str, max_concurrent: int, max_waiting: int, key: str | None = None, /
        ) -> None: ...

    name = _Arg[str](0, "The bulkhead's name.")

    max_concurrent = _Arg[int](1, "Its concurrency limit.")

    max_waiting = _Arg[int](2, "Its queue limit.")

    key = _KeyArg(3, _KEY_DOC)

    @_shown
    def __str__(self) -> str:
        return (
            f"{_who('bulkhead', self.name, self.key)} is full (limits: {self.max_concurrent} running, "
            f"{self.max_waiting} waiting)"
        )


class BulkheadTimeoutError(BulkheadFullError):
    """A bulkhead rejected the call after it waited in the queue longer than the bulkhead's timeout."""

    __slots__ = ()

    reason = "queue_timeout"

    if TYPE_CHECKING:  # the arguments are kept in ``args``, read by the fields (_Arg)

        def __init__(  # the key comes after the timeout
            self,
            name: str,
            max_concurrent: int,
            max_waiting: int,
            timeout: float,
            key: str | None = None,
            /,
        ) -> None: ...

    timeout = _Arg[float](3, "The bulkhead's queue timeout, in seconds, that the call waited.")

    key = _KeyArg(4, _KEY_DOC)

    @_shown
    def __str__(self) -> str:
        return f"{_who('bulkhead', self.name, self.key)}: no slot became free within {self.timeout:g} s"


class RateLimitedError(ExecutionRejectedError):
    """A rate limiter rejected the call: no permit was free, and none could be waited for.

    A call is rejected at once (never after waiting) when the next permit is due later than the
    limiter's ``max_wait``, or later than the deadline of an enclosing timeout, or when
    ``max_waiting`` callers already wait.

    Attributes:
        name: The rate limiter's name.
        retry_after: Seconds until the next permit is due, ``> 0``: a caller that comes back
            then finds one, unless others took it first (a permit a cancelled waiter left due
            then is another caller's only at that time: it lapses once its time passed, and a
            caller back later waits for the next one). At most
            :data:`~otel_resilience.engine.validation.MAX_DURATION`, as every duration: a permit
            due later (a caller refused behind the waiters of a limiter with a long period, each
            up to ``max_wait`` away) reads ``MAX_DURATION``, which any sleep takes.
        key: The key whose own rate limiter rejected, in a keyed policy (``str(key)``); else ``None``.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # the arguments are kept in ``args``, read by the fields (_Arg)

        def __init__(self, name: str, retry_after: float, key: str | None = None, /) -> None: ...

    name = _Arg[str](0, "The rate limiter's name.")

    retry_after = _Arg[float](1, "Seconds until the next permit is due.")

    key = _KeyArg(2, _KEY_DOC)

    @_shown
    def __str__(self) -> str:
        limiter = _who("rate limiter", self.name, self.key)
        return f"{limiter} has no permit free; the next is due in {self.retry_after:.3f} s"


if sys.version_info >= (3, 11):
    _TimeoutError = TimeoutError
else:  # pragma: no cover - Python 3.10
    import asyncio

    class _TimeoutError(TimeoutError, asyncio.TimeoutError):
        """Python 3.10: the builtin ``TimeoutError`` and ``asyncio.TimeoutError``, two classes there.

        From 3.11 on they are one class; before, code written for asyncio (``except
        asyncio.TimeoutError``, aiohttp passing such an error through unwrapped) would miss a
        deadline of ours.
        """

        __slots__ = ()


class OperationTimeoutError(ResilienceError, _TimeoutError):
    """The operation did not finish within its deadline.

    It subclasses the builtin ``TimeoutError``, so ``except TimeoutError`` keeps working, and
    ``asyncio.TimeoutError`` (the same class from Python 3.11; one more base on 3.10).

    Attributes:
        timeout: The limit in seconds that expired.
        scope: ``"total"`` (the whole execution) or ``"attempt"`` (one attempt).
        operation: The operation's name.
    """

    __slots__ = ("operation", "scope", "timeout")

    def __init__(self, operation: str, timeout: float, scope: str = "total") -> None:
        super().__init__(operation, timeout, scope)  # OSError keeps its args in __init__
        self.args = (operation, timeout, scope)  # all three (OSError left out the third, a file name)
        # No operating system's error: OSError's own fields say so. (OSError took the three
        # arguments as errno, strerror and filename; a client that wraps an OSError it did not
        # raise, such as aiohttp, passes a TimeoutError without an errno through as it is.)
        self.errno = self.strerror = self.filename = None
        self.operation = operation
        self.timeout = timeout
        self.scope = scope

    def __reduce__(self) -> tuple[type[OperationTimeoutError], tuple[str, float, str], dict[str, Any] | None]:
        """Pickle and copy with every field and the notes (OSError's own reduce keeps only some args)."""
        return (type(self), (self.operation, self.timeout, self.scope), self.__dict__ or None)

    @_shown
    def __str__(self) -> str:
        what = "attempt of " if self.scope == "attempt" else ""
        return f"{what}operation {self.operation!r} timed out after {self.timeout:g} s"


class RecoveryEscalatedError(ResilienceError):
    """An ESCALATE recovery rule refused to recover; raised ``from`` the original error.

    Attributes:
        error_type: The original exception's class name.
        operation: The operation's name, if known.
    """

    __slots__ = ("error_type", "operation")

    def __init__(self, error_type: str, operation: str | None = None) -> None:
        super().__init__(error_type, operation)  # every field in ``args``: pickled and copied whole
        self.error_type = error_type
        self.operation = operation

    def __str__(self) -> str:
        where = f" in {self.operation!r}" if self.operation else ""
        return f"{self.error_type}{where} was escalated: no automatic recovery"


class UnacceptedResultError(ResilienceError):
    """A returned value a fallback's ``handle_result`` predicate did not accept.

    The fallback answers for it as for a handled error: ``fallback_function`` receives this
    error first (its :attr:`result` is the value). When the fallback has no answer (a cache
    miss), the value itself is returned, as if no fallback were configured.

    Attributes:
        name: The fallback's name.
        result: The value the call returned.
    """

    __slots__ = ("name", "result")

    def __init__(self, name: str, result: object) -> None:
        super().__init__(name, result)  # every field in ``args``: pickled and copied whole
        self.name = name
        self.result = result

    def __str__(self) -> str:
        return f"fallback {self.name!r}: the returned value was not accepted ({type(self.result).__name__})"
