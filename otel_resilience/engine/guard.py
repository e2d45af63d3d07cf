"""Guards: a block of code run under a one-step pipeline, ``with guard:`` or ``async with guard:``.

The context-manager form of a pattern (``breaker.guard()``, ``bulkhead.slot()``,
``limiter.guard()``): the block is admitted by the step's rules and its outcome is counted and
judged as a call's would be, by the same hooks the drivers call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otel_resilience.engine.cancelling import cancelled_on_the_way
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.stats import attempt_ended
from otel_resilience.engine.step import Answer, Wait

if TYPE_CHECKING:
    from otel_resilience.engine.pipeline import Pipeline

__all__ = ["Guard", "guarded_block"]


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
    bulkhead); one guard serves one block.
    """

    __slots__ = ("_ctx", "_pipeline", "_step", "_token")

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._step = pipeline.strategies[0]
        self._ctx: ExecutionContext | None = None
        self._token: Any = None

    def _admit(self, *, sync: bool) -> Any:
        # The pipeline's step now: a reload of the pattern gives its own pipeline a new one
        # (Pipeline.relink), which a guard made before it, and kept, enters from then on.
        step = self._step = self._pipeline.strategies[0]
        ctx = self._ctx = ExecutionContext(guarded_block, (), {}, self._pipeline.name, None, sync)
        return step.admit(ctx) if step._admits else None

    def _admitted(self, token: Any) -> Any:
        """Return the token a :class:`Wait` gave; refuse an :class:`Answer`, which cannot replace a block."""
        if type(token) is Answer:
            step = self._step
            msg = f"{step.kind} {step.name!r} answered in place of the call, which a guarded block cannot do"
            raise RuntimeError(msg)
        return token

    def _check_unused(self) -> None:
        if self._ctx is not None:
            kind, name = self._step.kind, self._pipeline.name
            msg = f"a guard of {kind} {name!r} serves one block at a time; make another"
            raise RuntimeError(msg)

    def _refused(self, error: BaseException) -> None:
        """Count an entry that raised (a rejection, or a cancellation while it waited); free the guard.

        Counted by the pipeline's rule for an execution that raised: a step that refuses the
        driver (:class:`~otel_resilience.engine.calling.WrongDriver`, a hedging step in a thread)
        is a failure, whose ``TypeError`` is raised from here in place of the signal.
        """
        self._ctx = None
        self._pipeline._failed(error)

    def _leave(self, error: BaseException | None, *, cancelled: bool = False) -> None:
        """End the block's run by its outcome: ``error``, or ``None`` for a success.

        ``cancelled``: ``error`` is the block's cancellation on its way out (async only,
        :func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`): counted by its type as
        the pipeline counts it, it ends the run as a cancellation does (``on_cancel``).
        """
        step, ctx, token = self._step, self._ctx, self._token
        self._ctx = self._token = None
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
                    step.on_cancel(ctx, token, running=True)
            elif step._fails:
                action = step.on_failure(ctx, token, error)
        else:
            stats.count(attempt_ended(error)[0])  # a cancellation (the deadline's: a timeout) or an interrupt
            if step._cancels:
                step.on_cancel(ctx, token, running=True)
        if action is not None:
            decided = type(action).__name__
            msg = f"{step.kind} {step.name!r} decided {decided}, which a guarded block cannot do"
            raise RuntimeError(msg)

    def __enter__(self) -> Guard:
        self._check_unused()
        try:
            token = self._admit(sync=True)
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
        self._check_unused()
        try:
            token = self._admit(sync=False)
            if issubclass(type(token), Wait):
                token = self._admitted(await token.wait())
        except BaseException as error:  # a rejection, or a cancellation while it waited
            self._refused(error)
            raise
        self._token = token
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._leave(exc, cancelled=isinstance(exc, Exception) and cancelled_on_the_way(exc))
