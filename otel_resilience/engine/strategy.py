"""The strategy protocol: one link of a pipeline, with an async and a sync driver.

A strategy wraps "the rest of the chain" (:attr:`Strategy.next`). A pipeline links its
strategies once, at build time, so a call walks ``next`` references and builds no closures.
The last link is :data:`TERMINAL`, which calls the protected function.

A custom pattern is one :class:`Strategy` subclass plus its config; it touches no other pattern.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from types import AsyncGeneratorType, CoroutineType
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

__all__ = [
    "TERMINAL",
    "Strategy",
    "WrongDriver",
    "async_generator_refused",
    "awaitable_in_sync",
    "not_awaitable",
    "not_sync_result",
]


class Strategy(ABC):
    """One link of a pipeline.

    Subclasses set :attr:`kind`, implement :meth:`execute` and :meth:`execute_sync`, and run
    the rest of the chain with ``await self.next.execute(ctx)`` (or ``self.next.execute_sync(ctx)``).

    Attributes:
        kind: The pattern kind (``"circuit_breaker"``, ``"retry"`` …).
        next: The rest of the chain; :data:`TERMINAL` until linked.
    """

    __slots__ = ("next",)

    kind: ClassVar[str] = "strategy"

    def __init__(self) -> None:
        self.next: Strategy = TERMINAL

    @property
    @abstractmethod
    def name(self) -> str:
        """The configured name of the instance this link belongs to."""

    @property
    def config(self) -> object:
        """The configuration this link runs with (for :meth:`Pipeline.describe`)."""
        return None

    @abstractmethod
    async def execute(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain under this strategy (async driver)."""

    @abstractmethod
    def execute_sync(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain under this strategy (sync driver)."""


class _Terminal(Strategy):
    """The last link: calls the protected function with its arguments."""

    __slots__ = ()

    kind: ClassVar[str] = "terminal"

    def __init__(self) -> None:
        self.next = self

    @property
    def name(self) -> str:
        return "terminal"

    async def execute(self, ctx: ExecutionContext) -> Any:
        awaitable = ctx.fn(*ctx.args, **ctx.kwargs)
        if type(awaitable) is not CoroutineType and not inspect.isawaitable(awaitable):
            raise not_awaitable(ctx.operation, awaitable)
        return await awaitable

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        result = ctx.fn(*ctx.args, **ctx.kwargs)
        kind = type(result)
        if kind is CoroutineType or kind is AsyncGeneratorType:
            raise not_sync_result(ctx.operation, result)
        return result


def not_awaitable(operation: str, value: object) -> WrongDriver:
    """Return the signal for a function given to an async driver that returned ``value``.

    A driver that calls the protected function itself raises it when ``value`` is neither a
    coroutine nor awaitable.
    """
    if type(value) is AsyncGeneratorType:
        return async_generator_refused(repr(operation))
    msg = (
        f"{operation!r}: fn must return an awaitable for the async API, got "
        f"{type(value).__name__}; use the *_sync variant for plain functions"
    )
    return WrongDriver(msg)


def not_sync_result(operation: str, result: object) -> WrongDriver:
    """Return the signal for a sync driver's function that returned a coroutine or an async generator.

    A sync driver that calls the protected function itself raises it when ``type(result)`` is
    ``CoroutineType`` (closed here) or ``AsyncGeneratorType``: neither is a result, and passing
    it on would count a call that never ran as a success.
    """
    if type(result) is AsyncGeneratorType:
        return async_generator_refused(repr(operation))
    return awaitable_in_sync(operation, cast("CoroutineType[Any, Any, Any]", result))


def async_generator_refused(where: str) -> WrongDriver:
    """Return the signal for an async generator function, which neither driver can protect.

    Args:
        where: What refuses it, shown first in the message (a quoted operation name).
    """
    msg = (
        f"{where}: fn is an async generator function, which returns an iterator, not a result, "
        "so no call can be protected; protect a coroutine function that consumes it"
    )
    return WrongDriver(msg)


def awaitable_in_sync(operation: str, coroutine: CoroutineType[Any, Any, Any]) -> WrongDriver:
    """Close ``coroutine`` (returned to a sync driver) and return the signal to raise."""
    coroutine.close()
    msg = (
        f"{operation!r}: fn is a coroutine function, which the sync API cannot await; "
        "use the async variant (without _sync) and await it"
    )
    return WrongDriver(msg)


class WrongDriver(BaseException):
    """Signal: the protected function does not fit the driver.

    Raised for a plain function given to the async API, or a coroutine function given to the
    sync API. It is a ``BaseException`` on purpose: a programming error is not an outcome of the
    dependency, so no strategy may count, retry, recover or answer it (they all handle
    ``Exception`` only, and give their permits and slots back on anything else). The pipeline
    turns it into the ``TypeError`` the caller gets.
    """

    def as_type_error(self) -> TypeError:
        """Return the ``TypeError`` to raise in place of this signal."""
        return TypeError(*self.args)


TERMINAL: Final[Strategy] = _Terminal()
"""The shared last link of every chain."""
