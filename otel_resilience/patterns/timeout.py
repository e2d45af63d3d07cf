"""Timeouts: bound how long an operation may take, with an optional default value on expiry.

:class:`TimeoutHandler` puts a deadline on a call::

    timeout_handler = TimeoutHandler(timeout=30.0)
    result = await timeout_handler.with_timeout(slow_operation)

**Async** (:meth:`TimeoutHandler.with_timeout`) is pre-emptive: when the deadline passes the
task is cancelled, the protected coroutine sees ``CancelledError`` at its current ``await``, and
the caller gets :class:`~otel_resilience.errors.OperationTimeoutError` (a ``TimeoutError``), or
the configured ``default``.

**Sync** (:meth:`TimeoutHandler.with_timeout_sync`) cannot be pre-emptive: Python cannot
interrupt a thread. The handler publishes the deadline through
:func:`otel_resilience.engine.context.current_deadline` so that the callee can pass what is left
on (as a socket or lock timeout), and it checks the clock when the call returns: a result that
arrives after the deadline is discarded and treated as a timeout, so that a result reported as a
success always met its deadline. A call that blocks forever still blocks forever; an exception
raised at or after the deadline (the callee's socket timeout, set to what was left) is passed
through unchanged, and the deadline counted as expired, as for an async callee that raises an
error of its own in place of its cancellation (below).

Decisions:

* **Only our own deadline is a timeout.** Deadlines nest (the effective deadline is the minimum
  over every enclosing scope) and only the tightest scope arms a timer (a looser one arms once a
  scope of its task fired, so that a callee that catches that cancellation still meets it). An
  inner 10 s timeout under an outer 0.05 s one raises the *outer's* error; an inner deadline
  that fires first raises the inner's error, which the outer passes through untouched. Any
  other cancellation (``task.cancel()``, a task group) propagates as ``CancelledError``, never
  converted.
* **A deadline binds the task that set it**, as ``asyncio.timeout`` does: a task spawned inside
  the call (or a thread given a copy of its context) has no deadline until it opens its own, so
  its own timeout arms however tight the caller's was (see :mod:`otel_resilience.engine.context`).
* **A default is a fallback.** When ``default`` is configured, a timeout returns it, counts in
  ``defaults_returned`` and marks the execution's outcome as
  :attr:`~otel_resilience.engine.events.Outcome.FALLBACK`; the ``timeout`` event is still
  reported.
* **A callee that swallows its cancellation and returns** gets its value through, as
  ``asyncio.timeout`` does: suppressing cancellation is the callee's decision; one that raises an
  error of its own in its place (its client's) gets that error through unchanged, and so does a
  sync callee that raises one at or after the deadline. The deadline still expired: it counts in
  ``timeouts`` and reports the ``timeout`` event (no default answers it).
* **The error names what timed out.** In a pipeline, the pipeline's (policy's) name; used
  alone, the handler's ``name``, or, when it is left at :data:`DEFAULT_NAME`, the function it
  ran (found when the deadline expires: a call in time pays nothing for it).
* **Counting.** Counts are plain integers. The sync driver updates them under the handler's
  lock; the async driver counts an execution without a lock (one event loop runs on one
  thread), as the engine's pipeline does.

:func:`fail_after` and :func:`move_on_after` are the same deadline as bare async context
managers (trio/anyio style): the first raises, the second swallows its own timeout and exposes
:attr:`MoveOnAfter.expired`. Like ``asyncio.timeout``, each scope is single-use: entering it a
second time raises ``RuntimeError``.

Durations are at most :data:`~otel_resilience.engine.validation.MAX_DURATION`
(``threading.TIMEOUT_MAX``); a longer one is a ``ValueError`` naming the field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, cast

from otel_resilience.engine.allocation import blank
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import AsyncDeadline, ExecutionContext
from otel_resilience.engine.counting import Counts
from otel_resilience.engine.deadline import scope_arguments
from otel_resilience.engine.events import Event, Outcome, StrategyTelemetry, TimeoutOccurred
from otel_resilience.engine.facade import Link, Pattern, verb
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.step import Action, Answer
from otel_resilience.engine.validation import check_duration, fail
from otel_resilience.errors import OperationTimeoutError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "DEFAULT_SCOPE",
    "DEFAULT_TIMEOUT",
    "NO_DEFAULT",
    "SCOPES",
    "MoveOnAfter",
    "TimeoutConfig",
    "TimeoutHandler",
    "fail_after",
    "move_on_after",
]

DEFAULT_TIMEOUT: Final = 30.0
"""Default deadline, in seconds (SPEC: ``TimeoutHandler(timeout=30.0)``)."""
Scope = Literal["total", "attempt"]
"""What a deadline bounds: ``"total"`` (the whole execution) or ``"attempt"`` (one attempt)."""
DEFAULT_SCOPE: Final = "total"
"""Default scope: the deadline bounds the whole execution."""
SCOPES: Final = ("total", "attempt")
"""The accepted scopes: ``"total"`` (the whole execution) or ``"attempt"`` (one attempt)."""
DEFAULT_NAME: Final = "timeout"
"""Default :class:`TimeoutHandler` name. An unnamed handler's errors name the function it runs."""

_KIND: Final = "timeout"


class _NoDefault(enum.Enum):
    """The type of :data:`NO_DEFAULT` (an enum member, so that type checkers narrow on ``is``)."""

    NO_DEFAULT = "NO_DEFAULT"

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault.NO_DEFAULT
"""Sentinel for "no default value": a timeout raises :class:`OperationTimeoutError`."""


def _check_timeout(owner: str, timeout: object) -> float:
    """Validate a timeout (seconds or ``timedelta``; > 0 and <= ``MAX_DURATION``); return seconds."""
    return check_duration(owner, "timeout", timeout)


def _check_scope(owner: str, scope: object) -> Scope:
    """Validate a scope name."""
    if not isinstance(scope, str):
        raise fail(owner, "scope", "a str", scope, kind=TypeError)
    if scope not in SCOPES:
        raise fail(owner, "scope", "'total' or 'attempt'", scope)
    return cast("Scope", scope)


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Settings of a :class:`TimeoutHandler`.

    Raises:
        ValueError: If ``timeout`` is not > 0 and <= ``MAX_DURATION``, or ``scope`` is unknown.
        TypeError: If a field has the wrong type.
    """

    timeout: float = DEFAULT_TIMEOUT
    """Deadline in seconds, > 0 and at most ``MAX_DURATION`` (``threading.TIMEOUT_MAX``); a
    ``timedelta`` is accepted and normalised. The default is 30.0 s."""
    default: object = NO_DEFAULT
    """Value returned when the deadline expires, instead of raising
    :class:`~otel_resilience.errors.OperationTimeoutError`. The default is :data:`NO_DEFAULT`
    (raise)."""
    scope: Scope = DEFAULT_SCOPE
    """``"total"`` (the deadline bounds the whole execution) or ``"attempt"`` (one attempt);
    reported in the error and in telemetry. The default is ``"total"``."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(
            self,
            timeout: float | timedelta = ...,
            default: object = ...,
            scope: Scope = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout", _check_timeout("TimeoutConfig", self.timeout))
        _check_scope("TimeoutConfig", self.scope)

    @property
    def has_default(self) -> bool:
        """Whether a timeout returns :attr:`default` instead of raising."""
        return self.default is not NO_DEFAULT


class _TimeoutCore(Counts):
    """The shared state of one handler: settings and counts (sans-I/O)."""

    __slots__ = (
        "clock",
        "config",
        "default",
        "defaults_returned",
        "has_default",
        "name",
        "scope",
        "timeout",
        "timeouts",
    )

    def __init__(self, name: str, config: TimeoutConfig, clock: Clock) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.timeout = config.timeout
        self.scope = config.scope
        self.default = config.default
        self.has_default = config.has_default
        self.clock = clock
        self.timeouts = 0
        self.defaults_returned = 0

    def timed_out(self, ctx: ExecutionContext, telemetry: StrategyTelemetry) -> bool:
        """Count and report our own deadline's expiry; return whether the default answers."""
        self.expired(telemetry, answered=self.has_default)
        if self.has_default:
            ctx.outcome = Outcome.FALLBACK
            return True
        return False

    def expired(self, telemetry: StrategyTelemetry, *, answered: bool) -> None:
        """Count and report that our own deadline expired (``answered``: the default answers it)."""
        with self.lock:
            self.timeouts += 1
            if answered:
                self.defaults_returned += 1
        if telemetry.enabled:
            telemetry.report(Event.TIMEOUT, TimeoutOccurred(self.timeout, self.scope))

    def counts(self) -> dict[str, int]:
        return {"timeouts": self.timeouts, "defaults_returned": self.defaults_returned}


class _TimeoutStep(Link[TimeoutConfig]):
    """One pipeline link whose deadline (:attr:`seconds`) the driver opens around the rest of the chain.

    The operation its error names is the execution's (the pipeline's name), except in the link of
    an unnamed handler used alone (its verbs, :meth:`~TimeoutHandler.protect`): there the
    pipeline is the handler's own, named :data:`DEFAULT_NAME`, and the error names the function
    it ran instead, by the rule of every link (:meth:`~otel_resilience.engine.facade.Link.operation`,
    read only when the deadline expires). A named handler's error names the handler.
    """

    __slots__ = ("_core", "_names_function", "hands_late", "scope")

    kind: ClassVar[str] = _KIND

    def __init__(self, core: _TimeoutCore, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.name, core.config, core.clock, telemetry)
        self.seconds: float | None = core.timeout
        self.scope = core.scope
        self._core = core
        self.entries = core.executions  # the driver counts the executions, exactly and lock-free
        self._names_function = core.name == DEFAULT_NAME
        # Whether a late sync result is handed on to the retry outside (the attempt timeout of a
        # policy: manager.stages), rather than dropped here unheard (on_late).
        self.hands_late = False

    def get_stats(self) -> dict[str, int]:
        """Return the handler's counts (shared by all its links), as :meth:`TimeoutHandler.get_stats` does."""
        return self._core.stats()

    def on_expired(self, ctx: ExecutionContext, token: Any, error: OperationTimeoutError) -> Action:  # noqa: ARG002
        """Count and report our own deadline's expiry; answer with the default when one is set."""
        core = self._core
        if self._names_function and error.operation == DEFAULT_NAME:  # not an inner one's, named already
            _name_after(error, self.operation(ctx))
        if core.timed_out(ctx, self._telemetry):
            return Answer(core.default)
        return None

    def on_expired_ignored(self, ctx: ExecutionContext, token: Any) -> None:  # noqa: ARG002
        """Count and report our own deadline's expiry, which the call ignored: it returned, or raised."""
        self._core.expired(self._telemetry, answered=False)

    def on_late(self, ctx: ExecutionContext, token: Any, error: OperationTimeoutError, result: Any) -> Action:  # noqa: ARG002
        """Raise the timeout a sync run that returned ``result`` after our deadline is; hand the result on.

        The result is dropped here: for the retry outside when the link :attr:`hands_late` (the
        attempt timeout of a policy), which lets it go as a result it retries
        (``retry_on_result.dropped``), with the timeout it judges
        (:meth:`~otel_resilience.engine.context.ExecutionContext.hand_late`).
        """
        if self.hands_late:
            ctx.hand_late(error, result)
        return None


def _name_after(error: OperationTimeoutError, name: str) -> None:
    """Make ``error`` name ``name`` as the operation that timed out."""
    error.operation = name
    error.args = (name, *error.args[1:])


class TimeoutHandler(Pattern[TimeoutConfig, _TimeoutStep], kind=_KIND):
    """Puts a deadline on calls; raises or returns a default when it expires (SPEC §1.4).

    Args:
        timeout: Deadline in seconds (or a ``timedelta``), > 0 and at most ``MAX_DURATION``
            (``threading.TIMEOUT_MAX``). Default 30.0 s.
        default: Returned instead of raising when the deadline expires. Default
            :data:`NO_DEFAULT`: raise :class:`~otel_resilience.errors.OperationTimeoutError`.
        name: The handler's name in errors and telemetry. Default ``"timeout"``: then its
            errors name the function it runs (:meth:`with_timeout`, :meth:`with_timeout_sync`,
            :meth:`protect`: its ``__qualname__``, ``partial(fetch)`` for a partial, a callable
            object's class; see :func:`~otel_resilience.engine.naming.callable_name`), and in a
            pipeline, as a named handler's do, the pipeline's name (:meth:`as_strategy`).
        scope: ``"total"`` or ``"attempt"``: what the deadline bounds, as reported in the error
            and in telemetry. Default ``"total"``.
        clock: The clock that deadlines are measured on.

    Raises:
        ValueError: If ``timeout`` is not > 0 and <= ``MAX_DURATION``, ``scope`` is unknown or
            ``name`` is empty.
        TypeError: If an argument has the wrong type.
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        *,
        default: object = NO_DEFAULT,
        name: str = DEFAULT_NAME,
        scope: Scope = DEFAULT_SCOPE,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        seconds = _check_timeout("TimeoutHandler", timeout)
        scope = _check_scope("TimeoutHandler", scope)
        config = TimeoutConfig(seconds, default, scope)
        super().__init__(name, config, clock)
        self._core = _TimeoutCore(name, config, clock)

    @classmethod
    def from_config(
        cls, config: TimeoutConfig, *, name: str = DEFAULT_NAME, clock: Clock = SYSTEM_CLOCK
    ) -> TimeoutHandler:
        """Build a handler from a :class:`TimeoutConfig`.

        Args:
            config: The settings.
            name: The handler's name.
            clock: The clock that deadlines are measured on.

        Returns:
            A new handler.

        Raises:
            TypeError: If ``config`` is not a :class:`TimeoutConfig`.
        """
        if not isinstance(config, TimeoutConfig):
            raise fail("TimeoutHandler", "config", "a TimeoutConfig", config, kind=TypeError)
        return cls(config.timeout, default=config.default, name=name, scope=config.scope, clock=clock)

    def _link(self, telemetry: StrategyTelemetry) -> _TimeoutStep:
        return _TimeoutStep(self._core, telemetry)

    timeout = ReadOnly[float]("_core.timeout", "The deadline in seconds.")

    with_timeout = verb(
        Pattern.run,
        "Return ``await fn(*args, **kwargs)``, cancelled when the deadline passes.",
        returns="``fn``'s result, or the configured default when the deadline passed.",
        raises=(
            "OperationTimeoutError: When this handler's deadline passed and no default is set.",
            "asyncio.CancelledError: When the caller (or an outer scope) cancelled.",
        ),
    )

    with_timeout_sync = verb(
        Pattern.run_sync,
        "Return ``fn(*args, **kwargs)``; a result that arrives after the deadline is a timeout.",
        more=(
            "The thread is never interrupted: the callee should read "
            ":func:`~otel_resilience.engine.context.current_deadline`."
        ),
        returns="``fn``'s result, or the configured default when the result came too late.",
        raises=("OperationTimeoutError: When the result came after the deadline and no default is set.",),
    )

    def get_stats(self) -> dict[str, int]:
        """Return the counts.

        Returns:
            ``executions`` (calls that entered the handler), ``timeouts`` (this handler's own
            deadline expired) and ``defaults_returned`` (timeouts answered by the default).
        """
        return self._core.stats()

    def __repr__(self) -> str:
        core = self._core
        return f"TimeoutHandler(timeout={core.timeout!r}, name={core.name!r}, scope={core.scope!r})"


def fail_after(
    seconds: float | timedelta, *, clock: Clock = SYSTEM_CLOCK, operation: str = "fail_after"
) -> AsyncDeadline:
    """Return an async context manager that raises when its block runs longer than ``seconds``.

    ::

        async with fail_after(5.0):
            await fetch()

    Args:
        seconds: The budget in seconds (or a ``timedelta``), >= 0 and at most ``MAX_DURATION``.
        clock: The clock the deadline is recorded on (for :func:`current_deadline`).
        operation: The name shown in the error.

    Returns:
        The deadline scope (single-use); its ``expired`` attribute tells whether it fired.

    Raises:
        ValueError: If ``seconds`` is negative or above ``MAX_DURATION``, or ``operation`` is empty.
        TypeError: If ``clock`` is not a clock or ``operation`` not a ``str``.
        OperationTimeoutError: On exit from the block, when its own deadline passed.
        RuntimeError: When the returned scope is entered a second time.
    """
    return _scope("fail_after", seconds, clock, operation)


_new_scope: Final = blank(AsyncDeadline)
"""A scope of :func:`fail_after` or :func:`move_on_after`: allocated, then started with the arguments
:func:`_scope` checked (not checked again by ``AsyncDeadline.__init__``)."""


def _scope(owner: str, seconds: object, clock: object, operation: object) -> AsyncDeadline:
    """Return the deadline of ``owner`` (fail_after or move_on_after), its arguments checked."""
    checked_clock, budget, name = scope_arguments(owner, clock, seconds, operation, "seconds")
    scope = _new_scope()
    scope.start(checked_clock, budget, name, "total")
    return scope


class MoveOnAfter:
    """An async context manager that abandons its block when its deadline passes.

    Made by :func:`move_on_after`. The block is cancelled at the deadline and execution goes on
    after the ``async with``; :attr:`expired` tells whether that happened. Cancellation from
    anywhere else propagates.
    """

    __slots__ = ("_deadline",)

    def __init__(self, deadline: AsyncDeadline) -> None:
        self._deadline = deadline

    expired = ReadOnly[bool]("_deadline.expired", "Whether the deadline passed and the block was abandoned.")

    async def __aenter__(self) -> MoveOnAfter:
        await self._deadline.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            await self._deadline.__aexit__(exc_type, exc, tb)
        except OperationTimeoutError:
            # The deadline's exit raises only for its own expiry: swallow it.
            return True
        return False


def move_on_after(
    seconds: float | timedelta, *, clock: Clock = SYSTEM_CLOCK, operation: str = "move_on_after"
) -> MoveOnAfter:
    """Return an async context manager that silently abandons its block after ``seconds``.

    ::

        async with move_on_after(1.0) as scope:
            await refresh_cache()
        if scope.expired:
            ...

    Args:
        seconds: The budget in seconds (or a ``timedelta``), >= 0 and at most ``MAX_DURATION``.
        clock: The clock the deadline is recorded on (for :func:`current_deadline`).
        operation: The scope's name.

    Returns:
        The scope (single-use); read :attr:`MoveOnAfter.expired` after the block.

    Raises:
        ValueError: If ``seconds`` is negative or above ``MAX_DURATION``, or ``operation`` is empty.
        TypeError: If ``clock`` is not a clock or ``operation`` not a ``str``.
        RuntimeError: When the returned scope is entered a second time.
    """
    return MoveOnAfter(_scope("move_on_after", seconds, clock, operation))
