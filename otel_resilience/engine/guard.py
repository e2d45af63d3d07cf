"""Guards: a block of code run under a one-step pipeline, ``with guard:`` or ``async with guard:``.

The context-manager form of a pattern (``breaker.guard()``, ``bulkhead.slot()``,
``limiter.guard()``): the block is admitted by the step's rules and its outcome is counted and
judged as a call's would be, by the same hooks the drivers call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from otel_resilience.engine.cancelling import cancelled_on_the_way
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.stats import attempt_ended
from otel_resilience.engine.step import Answer, Wait, give_back

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from otel_resilience.engine.pipeline import Pipeline

__all__ = ["Guard", "HeldGuard", "guarded_block"]

_BLOCK: Final = 0
"""The one key of :attr:`Guard._held`: the block the guard serves."""


def guarded_block() -> None:
    """The "function" of a :class:`Guard`'s execution (its ``ctx.fn``): the block runs in the caller's frame.

    A block returns no value: its success reaches :meth:`~otel_resilience.engine.step.Step.on_success`
    with ``None``, which a step that judges returned values (a breaker's ``record_result``) must
    not judge; it tells such a success by ``ctx.fn is guarded_block``.
    """


class Guard:
    """A block run under a one-step pipeline: ``with guard:`` or ``async with guard:``.

    Entering runs the step's :meth:`~Step.admit` (waiting when it says :class:`Wait`); leaving
    ends the run with the hook the block's outcome calls for, exactly as the drivers do: no
    exception is a success, an ``Exception`` a failure (unless, in ``async with``, it is the
    block's cancellation on its way out), anything else a cancellation. The
    pipeline counts the execution in its stats (a rejection included, and an entry cancelled or
    interrupted while it waited, as a call's driver counts it); no execution scope (span) is
    opened. Only a step whose rules never decide an action can guard a block (a breaker, a
    bulkhead); one guard serves one block at a time, however many threads (or event loops)
    enter it at once: the others are refused with ``RuntimeError``.
    """

    __slots__ = ("_held", "_pipeline", "_step", "_token")

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._step = pipeline.strategies[0]
        self._held: dict[int, ExecutionContext] = {}
        """The context of the block the guard serves, under :data:`_BLOCK`; empty while it serves none."""
        self._token: Any = None

    def _admit(self, sync: bool) -> Any:
        """Hold the guard for a block, then ask the step to admit it; return the step's token.

        The guard is held in one atomic step (``dict.setdefault`` of the block's context), so
        that of entries made at once, from any threads or event loops, one holds it and the
        others are refused before they change it, or take a slot (a permit, a probe) that its
        holder would leave with, or that no one would give back.

        Raises:
            RuntimeError: If the guard serves a block: the guard is left as it is.
            BaseException: What the step's ``admit`` raises (or an interrupt once the guard is
                held): counted, the guard freed.
        """
        ctx = ExecutionContext(guarded_block, (), {}, self._pipeline.name, None, sync)
        try:
            if self._held.setdefault(_BLOCK, ctx) is not ctx:
                kind, name = self._step.kind, self._pipeline.name
                msg = f"a guard of {kind} {name!r} serves one block at a time; make another"
                raise RuntimeError(msg)  # noqa: TRY301 - the guard is another block's: left as it is
            # The pipeline's step now: a reload of the pattern gives its own pipeline a new one
            # (Pipeline.relink), which a guard made before it, and kept, enters from then on.
            step = self._step = self._pipeline.strategies[0]
            return step.admit(ctx) if step._admits else None
        except BaseException as error:
            if self._held.get(_BLOCK) is ctx:  # held by this entry: counted, and freed
                self._refused(error, asynchronous=not sync)
            raise

    def _admitted(self, token: Any) -> Any:
        """Return the token a :class:`Wait` gave; refuse an :class:`Answer`, which cannot replace a block."""
        if type(token) is Answer:
            step = self._step
            msg = f"{step.kind} {step.name!r} answered in place of the call, which a guarded block cannot do"
            raise RuntimeError(msg)
        return token

    def _refused(self, error: BaseException, *, asynchronous: bool = False) -> None:
        """Count an entry that raised (a rejection, or a cancellation while it waited); free the guard.

        Counted by the pipeline's rule for an execution that raised: a step that refuses the
        driver (:class:`~otel_resilience.engine.calling.WrongDriver`, a hedging step in a thread)
        is a failure, whose ``TypeError`` is raised from here in place of the signal; an async
        wait that found no asyncio event loop (``asynchronous``) raises the error that says what
        the async API runs on (:meth:`Pipeline._failed_async`).
        """
        self._held.clear()
        if asynchronous:
            self._pipeline._failed_async(error)
        else:
            self._pipeline._failed(error)

    def _leave(self, error: BaseException | None, *, cancelled: bool = False) -> None:
        """End the block's run by its outcome: ``error``, or ``None`` for a success.

        ``cancelled``: ``error`` is the block's cancellation on its way out (async only,
        :func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`): counted by its type as
        the pipeline counts it, it ends the run as a cancellation does (``on_cancel``).
        """
        step, token = self._step, self._token
        self._token = None
        ctx = self._held.pop(_BLOCK, None)  # the guard is free from here: another block may enter
        if ctx is None:  # pragma: no cover - the with statement only exits an entered guard
            return
        stats = self._pipeline.stats
        action = None
        if error is None:
            stats.count(ctx.outcome)
            if step._succeeds:
                action = step.on_success(ctx, token, None)
        elif isinstance(error, Exception):
            stats.count(attempt_ended(error)[0])  # by its type, unless the effective deadline ended it
            if cancelled:
                if step._cancels:
                    give_back(step, ctx, token, running=True)
            elif step._fails:
                action = step.on_failure(ctx, token, error)
        else:
            stats.count(attempt_ended(error)[0])  # a cancellation (the deadline's: a timeout) or an interrupt
            if step._cancels:
                give_back(step, ctx, token, running=True)
        if action is not None:
            decided = type(action).__name__
            msg = f"{step.kind} {step.name!r} decided {decided}, which a guarded block cannot do"
            raise RuntimeError(msg)

    def __enter__(self) -> Guard:
        token = self._admit(True)  # noqa: FBT003 - positional: on every entry
        try:
            if issubclass(type(token), Wait):
                token = self._admitted(token.wait_sync())
        except BaseException as error:  # a rejection, or an interrupt while it waited
            self._refused(error)
            raise
        self._token = token
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._leave(exc)

    async def __aenter__(self) -> Guard:
        token = self._admit(False)  # noqa: FBT003 - positional: on every entry
        try:
            if issubclass(type(token), Wait):
                token = self._admitted(await token.wait())
        except BaseException as error:  # a rejection, or a cancellation while it waited
            self._refused(error, asynchronous=True)
            raise
        self._token = token
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._leave(exc, cancelled=isinstance(exc, Exception) and cancelled_on_the_way(exc))


class HeldGuard(Guard):
    """A guard of an owned instance (``Pattern._hold_by``): each block runs within its owner's hold.

    The hold is taken before the block is admitted and let go after its end is counted, so the
    owner keeps the instance in use for the whole block (or refuses the block before it takes
    anything).
    """

    __slots__ = ("_hold", "_holding")

    def __init__(self, pipeline: Pipeline, hold: Callable[[], AbstractContextManager[object]]) -> None:
        super().__init__(pipeline)
        self._hold = hold
        self._holding: AbstractContextManager[object] | None = None

    def _take(self) -> AbstractContextManager[object]:
        hold = self._hold()
        hold.__enter__()
        return hold

    def __enter__(self) -> Guard:
        hold = self._take()
        try:
            Guard.__enter__(self)
        except BaseException:
            hold.__exit__(None, None, None)
            raise
        self._holding = hold
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        hold, self._holding = self._holding, None  # read while the block holds the guard
        try:
            Guard.__exit__(self, exc_type, exc, tb)
        finally:
            if hold is not None:
                hold.__exit__(None, None, None)

    async def __aenter__(self) -> Guard:
        hold = self._take()
        try:
            await Guard.__aenter__(self)
        except BaseException:
            hold.__exit__(None, None, None)
            raise
        self._holding = hold
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        hold, self._holding = self._holding, None
        try:
            await Guard.__aexit__(self, exc_type, exc, tb)
        finally:
            if hold is not None:
                hold.__exit__(None, None, None)
