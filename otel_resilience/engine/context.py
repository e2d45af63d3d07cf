"""Per-call execution context and deadlines.

Deadlines are absolute times on the pattern's :class:`~otel_resilience.engine.clock.Clock`
(``time.monotonic`` by default), kept in a :class:`contextvars.ContextVar`. A nested scope stores
``min(outer, inner)``, as trio's ``current_effective_deadline()`` does, so an outer deadline
bounds every inner one. Only the scope whose own deadline is the tightest arms a timer: one
timer per call, however many layers.

An async scope raises :class:`~otel_resilience.errors.OperationTimeoutError` only when *its own*
deadline expired; any other cancellation propagates untouched.

Sync code cannot be pre-empted: a sync scope checks the deadline when the call returns (a late
result is a timeout) and publishes it through :func:`current_deadline`, so that the callee can
pass what is left on as a socket timeout.
"""

from __future__ import annotations

import asyncio
import math
import sys
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from otel_resilience.errors import OperationTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from types import TracebackType

    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.events import Outcome

__all__ = [
    "AsyncDeadline",
    "ExecutionContext",
    "SyncDeadline",
    "current_deadline",
    "time_remaining",
]

_NO_DEADLINE: Final = math.inf
_DEADLINE: ContextVar[float] = ContextVar("otel_resilience_deadline", default=_NO_DEADLINE)


def current_deadline() -> float | None:
    """Return the effective absolute deadline (``time.monotonic`` base) of the current call.

    Returns:
        The earliest deadline of every enclosing timeout scope, or ``None`` when there is none.
        A callee can pass ``deadline - time.monotonic()`` on as a socket timeout.
    """
    deadline = _DEADLINE.get()
    return None if deadline == _NO_DEADLINE else deadline


def time_remaining(clock: Clock) -> float:
    """Return the seconds left before the effective deadline (``inf`` when there is none)."""
    deadline = _DEADLINE.get()
    if deadline == _NO_DEADLINE:
        return _NO_DEADLINE
    return deadline - clock.now()


class ExecutionContext:
    """Everything one logical execution carries through the strategy chain.

    Attributes:
        fn: The protected callable.
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        operation: The operation's name (bounded: a configured or function name).
        attempt: The current attempt number, starting at 1 (retry increments it).
        outcome: Set by a strategy that answered in place of the call (fallback) or recovered
            it (recovery); ``None`` means the pipeline derives it from ``attempt``.
        properties: Free slot for custom strategies that pass data down (``None`` by default).
    """

    __slots__ = ("args", "attempt", "fn", "kwargs", "operation", "outcome", "properties")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        operation: str,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.operation = operation
        self.attempt = 1
        self.outcome: Outcome | None = None
        self.properties: dict[str, Any] | None = None


class AsyncDeadline:
    """An async context manager that cancels the task at an absolute deadline.

    ``async with AsyncDeadline(clock, timeout, operation, scope):`` sets the effective deadline to
    ``min(outer, now + timeout)``. If this scope's deadline is the tightest it arms one loop timer;
    when that timer fires the task is cancelled and, on the way out, the cancellation is turned
    into :class:`OperationTimeoutError`. A cancellation that came from elsewhere (an outer scope,
    ``task.cancel()``) propagates as ``CancelledError``.

    Attributes:
        expired: Whether this scope's own deadline fired.
    """

    __slots__ = ("_clock", "_handle", "_operation", "_scope", "_task", "_timeout", "_token", "expired")

    def __init__(self, clock: Clock, timeout: float, operation: str, scope: str = "total") -> None:
        self._clock = clock
        self._timeout = timeout
        self._operation = operation
        self._scope = scope
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None
        self._token: Any = None
        self.expired = False

    async def __aenter__(self) -> AsyncDeadline:
        now = self._clock.now()
        deadline = now + self._timeout
        outer = _DEADLINE.get()
        if deadline < outer:
            self._token = _DEADLINE.set(deadline)
            task = asyncio.current_task()
            if task is None:  # pragma: no cover - always inside a task under asyncio
                msg = "AsyncDeadline must be used inside an asyncio task"
                raise RuntimeError(msg)
            self._task = task
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + self._timeout, self._fire)
        return self

    def _fire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._handle
        if handle is None:
            return
        handle.cancel()
        self._handle = None
        _DEADLINE.reset(self._token)
        if self.expired:
            others_pending = 0
            if sys.version_info >= (3, 11) and self._task is not None:
                others_pending = self._task.uncancel()
            if exc_type is asyncio.CancelledError and others_pending == 0:
                raise OperationTimeoutError(self._operation, self._timeout, self._scope) from None


class SyncDeadline:
    """A context manager that publishes a deadline to sync code and enforces it on return.

    A thread cannot be pre-empted: the callee should read :func:`current_deadline`. When the
    block ends *without* an exception after the deadline, the late result is discarded and
    :class:`OperationTimeoutError` is raised, so that a result reported as a success always met
    its deadline.

    Attributes:
        expired: Whether this scope raised for its own deadline.
    """

    __slots__ = ("_clock", "_deadline", "_operation", "_scope", "_timeout", "_token", "expired")

    def __init__(self, clock: Clock, timeout: float, operation: str, scope: str = "total") -> None:
        self._clock = clock
        self._timeout = timeout
        self._operation = operation
        self._scope = scope
        self._token: Any = None
        self._deadline = _NO_DEADLINE
        self.expired = False

    def __enter__(self) -> SyncDeadline:
        deadline = self._clock.now() + self._timeout
        outer = _DEADLINE.get()
        if deadline < outer:
            self._deadline = deadline
            self._token = _DEADLINE.set(deadline)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is None:
            return
        _DEADLINE.reset(self._token)
        self._token = None
        if exc_type is None and self._clock.now() >= self._deadline:
            self.expired = True
            raise OperationTimeoutError(self._operation, self._timeout, self._scope)
