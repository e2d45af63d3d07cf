"""Hedging in the engine: the rest of the chain run as a race of attempts (async driver only).

A step that hedges returns a :class:`Hedge` from :meth:`~otel_resilience.engine.step.Step.admit`.
A ``Hedge`` is a :class:`~otel_resilience.engine.actions.Wait`, which the drivers already look
for in every admitted token of a step that may wait, so a step that never hedges pays no check
more for it. The async driver performs it with :func:`race` in place of its one run of the rest
of the chain; the sync driver refuses it (:meth:`Hedge.wait_sync` raises ``TypeError``):
attempts side by side need tasks, and a thread per attempt is left out on purpose.

The step decides (the ``Hedge`` subclass it returns overrides the hooks below); the driver
starts, waits, cancels and awaits. The race, in order:

1. Attempt 1, the *original*, starts at once, in a context of its own
   (:meth:`Hedge.start` with trigger ``None``: ``ctx.fork(new_attempt=False)`` by default).
2. While no outcome is acceptable, another attempt starts (:meth:`Hedge.start` with the
   trigger): once :meth:`Hedge.delay` seconds passed on the step's clock since the latest
   start (at once when that delay is 0), with ``"parallel"`` when :attr:`Hedge.parallel` is
   set (the hedge starts every attempt at once by design), else ``"delay"``: the hedge's mode
   names the trigger, not the delay's value; with ``"failure"`` at once when an attempt ended
   with an outcome that is not acceptable and :attr:`Hedge.on_failure` is set;
   until :attr:`Hedge.limit` attempts started or :meth:`Hedge.start` refuses one (a budget, the
   execution's cap in total), after which none starts. No attempt starts once the effective
   deadline (:func:`~otel_resilience.engine.deadline.time_left`) is
   reached, and a hedge delay that would end at or past it is not waited: the deadline ends the
   race (its cancellation), not a hedge started too late. Nor does one start after an attempt
   that the chain it runs rejected (an :class:`~otel_resilience.errors.ExecutionRejectedError`
   raised while a step of the rest of the chain admitted it: the policy's own open breaker,
   full bulkhead or rate limiter, :attr:`ExecutionContext.rejected`): every further attempt
   would meet the same step, and a hedge it never starts is asked of no budget. Such an
   attempt, rejected in its first run of the chain, is *turned away* (one rejected only in a
   re-run, by a retry inside it, ran its action before: its rejection is no outcome either and
   ends hedging as well, but the hedge is not told): it never ran its action, the hedge is told so
   (:meth:`Hedge.turned_away`: what it charged for it is given back), and its rejection is no
   outcome to judge (never the answer, whatever :meth:`Hedge.accepts` would say), so the
   attempts in flight go on. A rejection that came out of the function an attempt called (an
   alternative endpoint behind a policy of its own) is an outcome like any other, judged: the
   next attempt starts when it is not acceptable.
   A hedge that was due and does not start or run for one of these two reasons is reported to
   :meth:`Hedge.deny`, once, where the race decides it: :data:`DEADLINE` (the deadline had
   passed when the hedge was due), or :data:`REJECTED` (a hedge turned away, with its own
   trigger; after an original turned away, the trigger of the hedge that would have followed
   it, if one could still start). A hedge delay that would end at or past the deadline
   ends hedging by delay for the rest of the race (a hedge by failure may still start before
   the deadline) and is not a denial: that hedge never came due, and an execution whose
   original answers in time would otherwise count one on every call. A delay the step's clock
   refuses to sleep (its ``sleep`` raises: a fake clock's time past the largest float) ends the
   race with that error, as a delay the hedge refuses does: no hedge starts as if it had passed.
3. Each attempt runs in a task of its own: :meth:`Hedge.enter` (in the task, so a telemetry
   scope it opens is current there), the rest of the chain in the attempt's context,
   :meth:`Hedge.accepts` (is this outcome the answer?), :meth:`Hedge.leave` (won or not).
4. The first acceptable outcome wins. Every other attempt is cancelled **and awaited** before
   the driver returns: no task outlives the race, and each cancelled run gives back what its
   steps took (their ``on_cancel``). The winner's task cancels them as it wins, in that turn of
   the loop: an attempt woken in the same turn (a hedge waiting for the bulkhead slot the
   winner just gave back) meets the cancellation where it waits, and calls nothing after the
   win (so does an attempt that ends the race with an interrupt: 7 and 8). An attempt started
   beside the winner whose task had not run yet when it won never runs (as when tasks start
   eagerly, where none is started after a win); nor does one after an attempt that ended the
   race with an interrupt; nor, with two hedgings in one chain, an attempt of the race a loser
   runs inside it whose task had not run yet: the winner's task stops that race in the same turn
   (:meth:`_Race.stop_nested`, as a cancellation of the caller does), before the loser's own
   cancellation reaches it. Nor does one the end of the race finds still *held back* in a step's
   wait for its admission, having run nothing (the policy's own bulkhead queue, a rate
   limiter's permit; :func:`held_back`, the mark that wait sets,
   :attr:`ExecutionContext.queued`): it is cancelled there. The hedge reads that mark where it
   needs it, on its rare paths (which attempts ran beside a winner, which hedges were sent):
   the race itself treats such an attempt as any loser.
5. When every attempt ended and none was acceptable, the original's outcome is the execution's
   (its error re-raised, its result returned), as in Polly; a result returned so counts as a
   failure (:meth:`ExecutionContext.result_failed`): the hedge judged it unacceptable.
6. The execution's outcome (:attr:`ExecutionContext.outcome`) is that attempt's (the winner's,
   else the original's), ``RECOVERED`` instead of ``SUCCESS`` when an attempt ended
   unacceptably before a win, or when the execution had recovered before the race began (a
   retry around the race runs it again after a race that failed); an attempt that was
   rejected (an :class:`~otel_resilience.errors.ExecutionRejectedError`: a full bulkhead, an
   open breaker inside the hedging) in its first run never called the dependency, so it is no
   failure recovered from (one rejected only in a re-run, a retry inside it retrying a failure
   of its first run, is: :meth:`_Race.lost`).
7. A cancellation of the caller (its own deadline included) cancels and awaits every attempt,
   then propagates. So does a cancellation an attempt raised itself while the race was on (its
   dependency awaited a future cancelled elsewhere: no cancellation of the race's): it is no
   outcome to hedge after, so no attempt starts after it, and it reaches the caller as it was
   raised, as an interrupt an attempt raised does (one its judgment raised, too: no outcome,
   :meth:`Hedge.accepts`). When the effective deadline cancelled the caller, each attempt it
   ended is told so (:meth:`Hedge.leave` gets a
   :class:`~otel_resilience.engine.deadline.DeadlineReachedError`: a ``timeout``, as an attempt
   of a retry the deadline ends), not a cancellation. A cancellation that reaches the caller
   once an attempt won (in that turn, or while the losers end) still propagates, and
   :meth:`Hedge.end` is given that winner with it: the win happened, and its task reported it.
8. A function the driver refused in an attempt (the
   :class:`~otel_resilience.engine.calling.WrongDriver` signal: a plain function given to the
   async API, an action that returns no awaitable) ends the race as an interrupt does: no hedge
   starts after it (a usage error would only be refused again), and the signal reaches the
   pipeline, which raises its ``TypeError``. It is no cancellation: :meth:`Hedge.leave` and
   :meth:`Hedge.end` are given that ``TypeError``, a failed attempt and a failed execution.

A deadline binds the task that set it (:mod:`otel_resilience.engine.context`), so inside an
attempt ``current_deadline()`` knows only the scopes the attempt opens itself; an enclosing
deadline still bounds every attempt, through the cancellation of the race.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import weakref
from typing import TYPE_CHECKING, Any, Final, cast

from otel_resilience.engine.actions import Wait
from otel_resilience.engine.calling import refused
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.deadline import DeadlineReachedError, ended_by_deadline, time_left
from otel_resilience.engine.events import Outcome
from otel_resilience.errors import ExecutionRejectedError

_SUCCESS: Final = Outcome.SUCCESS
_RECOVERED: Final = Outcome.RECOVERED
"""Read on hot paths, bound once: reading a member off its enum class costs ~55 ns (Python 3.11)."""

if TYPE_CHECKING:
    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.engine.step import Step

__all__ = [
    "ATTEMPT_TYPES",
    "DEADLINE",
    "DELAY",
    "DENIALS",
    "FAILURE",
    "HEDGE",
    "ORIGINAL",
    "PARALLEL",
    "REJECTED",
    "TRIGGERS",
    "Hedge",
    "held_back",
    "hold_back_enclosing",
    "race",
]

ORIGINAL: Final = "original"
"""The attempt type of a race's first attempt (an attempt scope's ``attempt_type``)."""
HEDGE: Final = "hedge"
"""The attempt type of every attempt of a race after the original."""
ATTEMPT_TYPES: Final = (ORIGINAL, HEDGE)
"""Every attempt type, as gRPC's ``grpc.attempt_type`` has them."""

DELAY: Final = "delay"
"""Trigger: the latest attempt took longer than the hedge delay."""
FAILURE: Final = "failure"
"""Trigger: an attempt ended with an outcome that is not acceptable."""
PARALLEL: Final = "parallel"
"""Trigger: a hedge that starts every attempt at once by design (:attr:`Hedge.parallel`)."""
TRIGGERS: Final = (DELAY, FAILURE, PARALLEL)
"""Every reason a hedge starts."""

DEADLINE: Final = "deadline"
"""Denial: the effective deadline had passed when the hedge came due."""
REJECTED: Final = "rejected"
"""Denial: an attempt was rejected by the chain it runs (:attr:`ExecutionContext.rejected`)."""
DENIALS: Final = (DEADLINE, REJECTED)
"""Every reason the race itself gives :meth:`Hedge.deny` (a hedge's own refusals are its own)."""

_FIRST_COMPLETED: Final = asyncio.FIRST_COMPLETED


class Hedge(Wait):
    """A token that says "not one run: a race of attempts" (see the module doc).

    A step returns an instance of a subclass from ``admit`` (one per execution: it may keep the
    execution's state) and overrides the hooks its rules need; the async driver calls them, all
    from the event loop's thread, never two at once.

    Args:
        limit: Attempts at most, the original included (``>= 1``).
        on_failure: Whether an attempt that ended unacceptably starts the next one at once.
        parallel: Whether the hedge starts every attempt at once by design (a parallel mode):
            an attempt started once :meth:`delay` passed then has the trigger
            :data:`PARALLEL`, else :data:`DELAY` (even after a delay of 0). Default: ``False``.

    Attributes:
        limit: Attempts at most, the original included.
        on_failure: Whether an attempt that ended unacceptably starts the next one at once.
        parallel: Whether an attempt started once :meth:`delay` passed is a :data:`PARALLEL`
            start (else a :data:`DELAY` one).
    """

    __slots__ = ("limit", "on_failure", "parallel")

    def __init__(self, limit: int, *, on_failure: bool, parallel: bool = False) -> None:
        self.limit = limit
        self.on_failure = on_failure
        self.parallel = parallel

    def delay(self, started: int) -> float | None:  # noqa: ARG002 - the default never hedges by time
        """Return the seconds after the latest start before attempt ``started + 1`` starts.

        ``0`` starts it at once, ``None`` never by time (only on a failure, when
        :attr:`on_failure` is set).
        """
        return None

    def start(self, ctx: ExecutionContext, trigger: str | None) -> ExecutionContext | None:
        """Return the context of the attempt about to start, or ``None`` to start it and no other.

        Args:
            ctx: The execution's context.
            trigger: ``None`` for the original (which cannot be refused), else why the attempt
                starts: :data:`DELAY`, :data:`FAILURE` or :data:`PARALLEL`.
        """
        return ctx.fork(new_attempt=trigger is not None)

    def deny(self, trigger: str, reason: str) -> None:
        """Called once the race decided that a hedge that was due will not start; must not raise.

        Not called for a refusal of :meth:`start`'s own (it knows it).

        Args:
            trigger: What made it due: :data:`DELAY`, :data:`FAILURE` or :data:`PARALLEL`.
            reason: Why it does not start: :data:`DEADLINE` or :data:`REJECTED`.
        """

    def turned_away(self, attempt: ExecutionContext) -> None:
        """Called in the attempt's task once its chain turned it away, before :meth:`leave`; must not raise.

        A step of the rest of the chain refused it in its first run (:attr:`ExecutionContext.rejected`:
        the policy's own open breaker, full bulkhead or rate limiter), so it never ran its action:
        what it was charged as it started (a hedge's withdrawal from a budget, its place under
        the execution's cap in total: :meth:`ExecutionContext.spare`) is to be given back, and
        it is no attempt that ran beside the winner. Its rejection is never judged
        (:meth:`accepts`): it is not an answer. For a hedge (not the original) the race reports
        the denial (:meth:`deny`, :data:`REJECTED`) after :meth:`leave`. An attempt rejected in
        a later run of its chain (a retry inside it took a number: it may have called) is not
        turned away, and this is not called for it.
        """

    def enter(self, attempt: ExecutionContext) -> Any:  # noqa: ARG002 - the default keeps nothing
        """Called in the attempt's task before it runs; what it returns is handed to :meth:`leave`."""
        return None

    def accepts(self, attempt: ExecutionContext, result: Any, error: Exception | None) -> bool:  # noqa: ARG002
        """Return whether an attempt's outcome is the answer (default: every result, no error).

        What it raises ends the execution with that error (as an accepted outcome); a
        ``BaseException`` (a cancellation, an interrupt) ends the race as the attempt raising it
        would (module doc, 7).
        """
        return error is None

    def leave(
        self,
        attempt: ExecutionContext,
        scope: Any,
        error: BaseException | None,
        *,
        accepted: bool,
        won: bool,
    ) -> None:
        """Called in the attempt's task when it ended; must not raise.

        Args:
            attempt: The attempt's context.
            scope: What :meth:`enter` returned.
            error: What the attempt raised: an ``Exception``, or a ``BaseException`` when it
                was cancelled (a loser) or interrupted; ``None`` when it returned. A function
                the driver refused is given as the ``TypeError`` the caller gets; an attempt the
                effective deadline ended (the race cancelled at the caller's deadline) as a
                :class:`~otel_resilience.engine.deadline.DeadlineReachedError`: a timeout.
            accepted: Whether its outcome was acceptable.
            won: Whether it is the winner (the first acceptable outcome).
        """

    def end(
        self, ctx: ExecutionContext, winner: ExecutionContext | None, error: BaseException | None
    ) -> None:
        """Called once the race is over, every attempt ended, before the driver returns or raises.

        Args:
            ctx: The execution's context.
            winner: The winner's context; ``None`` when no outcome was acceptable, or when the
                race was cancelled before an attempt won (an attempt that won before the
                cancellation reached the race is given with that cancellation as ``error``).
            error: What the driver raises: the winner's (or, without one, the original's)
                error, the cancellation, or ``None`` when it returns a result. A function the
                driver refused is given as the ``TypeError`` the caller gets (an ``Exception``:
                a failed execution, not a cancellation).
        """

    async def wait(self) -> Any:
        """Refuse a block guarded by a hedging step: a hedge runs the rest of the chain itself."""
        msg = f"{type(self).__name__}: a hedge runs the rest of the chain itself; it cannot guard a block"
        raise TypeError(msg)

    def wait_sync(self) -> Any:
        """Refuse the sync driver: hedged attempts run side by side as tasks of an event loop."""
        msg = (
            f"{type(self).__name__}: hedging is async only (attempts run side by side as tasks of "
            "an event loop); the sync driver cannot run it: use the async API"
        )
        raise TypeError(msg)


class _Attempt:
    """One attempt of a race: its context, when it started (on the step's clock) and how it ended."""

    __slots__ = ("cancelled", "ctx", "error", "result", "started", "trigger")

    def __init__(self, ctx: ExecutionContext, started: float, trigger: str | None) -> None:
        self.ctx = ctx
        self.started = started
        self.trigger = trigger
        """Why it started (:data:`DELAY`, :data:`FAILURE`, :data:`PARALLEL`); ``None`` for the original."""
        self.result: Any = None
        self.error: Exception | None = None
        self.cancelled = False


class _Race:
    """The state of one race: the attempts, their running tasks, and the winner."""

    __slots__ = (
        "__weakref__",
        "attempts",
        "clock",
        "ctx",
        "cut",
        "delay",
        "failed",
        "hedge",
        "latest",
        "loop",
        "more",
        "next",
        "over",
        "recovered",
        "stopped",
        "tasks",
        "timed",
        "winner",
    )

    def __init__(self, step: Step, ctx: ExecutionContext, hedge: Hedge) -> None:
        self.next = step.next
        self.clock: Clock = step.clock
        self.ctx = ctx
        self.hedge = hedge
        self.loop = asyncio.get_running_loop()
        self.attempts: list[_Attempt] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.winner: _Attempt | None = None
        self.cut = False
        """Whether the effective deadline ended the race (:func:`race`): the attempts it cancels then
        are told the deadline's end, not a cancellation (:meth:`told`)."""
        self.over = False
        """Whether the race is decided (an attempt won, or one ended it with an interrupt or a
        cancellation of its own), or being stopped: an attempt whose task first runs after that
        does not run (:meth:`run`), and one cancelled after that is a loser the race cancelled."""
        self.stopped: BaseException | None = None
        """A cancellation an attempt raised itself while the race was on (not a loser's: the race
        cancels attempts only once it is over): it ends the race, raised by :meth:`first_ended`."""
        self.failed = False
        self.recovered = ctx.outcome is _RECOVERED
        """Whether the execution had recovered before the race (a retry around it runs it again)."""
        if ctx.parent is not None:  # run in an attempt of another race, which may stop it (:meth:`stop`)
            ctx.nested = weakref.ref(self)
        self.more = True
        self.latest = 0.0
        self.delay: float | None = None
        self.timed: str | None = PARALLEL if hedge.parallel else DELAY
        """The trigger of a hedge started once the delay passed (the hedge's mode names it, not
        the delay's value); ``None`` once a hedge delay would end at or past the deadline: none starts
        by delay any more."""

    def refuse(self, trigger: str | None, reason: str) -> None:
        """Decide that the hedge due by ``trigger`` does not start, and tell the hedge why.

        The one place where the race refuses a hedge (:meth:`Hedge.deny`, once per decision). No
        attempt starts after it. ``trigger`` ``None``, or an attempt already won (a loser
        rejected as the race was decided): no further hedge was due, so none is reported.
        """
        self.more = False
        if trigger is not None and self.winner is None:
            self.hedge.deny(trigger, reason)

    def launch(self, trigger: str | None) -> None:
        """Start an attempt unless the race is over or the hedge refuses it (then none starts after it).

        Sets :attr:`more` (whether another may start later), :attr:`latest` (when this one
        started) and :attr:`delay` (the hedge's delay before the next, asked once per start).
        """
        hedge = self.hedge
        if trigger is not None:
            if self.over:
                # Won, or ended by an interrupt or a refusal, since this hedge came due: by an
                # attempt that ran as it started (an eager task), or one that ended while the race
                # stopped its timer. Nothing is due any more: nothing asked of the hedge, no denial.
                self.more = False
                return
            if time_left() <= 0.0:
                # The deadline passed: a hedge would start too late (nothing is asked of the hedge).
                self.refuse(trigger, DEADLINE)
                return
        attempt_ctx = hedge.start(self.ctx, trigger)
        if attempt_ctx is None:
            self.more = False
            return
        attempt = _Attempt(attempt_ctx, now := self.clock.now(), trigger)
        self.attempts.append(attempt)
        self.latest = now
        self.more = len(self.attempts) < hedge.limit
        self.delay = hedge.delay(len(self.attempts)) if self.more else None
        # Started last: under an eager task factory (Python 3.12+) the attempt runs at once, up to
        # its first suspension, and may end there: what it decides (:meth:`refuse`) must stand.
        self.tasks.add(self.loop.create_task(self.run(attempt)))

    async def run(self, attempt: _Attempt) -> None:
        """One attempt, in its own task: the rest of the chain, then the hedge's verdict.

        An attempt whose task first runs once the race is over (:attr:`over`: started beside one
        that won or ended the race in the same turn of the loop, before its task ran) ends
        cancelled without running, as a task cancelled before it ran does: the hedge never
        enters it, so it calls nothing and is counted nowhere.
        """
        if self.over:
            attempt.cancelled = True
            raise asyncio.CancelledError
        hedge, ctx = self.hedge, attempt.ctx
        scope = hedge.enter(ctx)
        try:
            attempt.result = await self.next.execute(ctx)
        except Exception as error:  # noqa: BLE001 - the hedge judges it
            attempt.error = error
            if ctx.rejected and isinstance(error, ExecutionRejectedError):
                self.turned_away(attempt, scope)
                return
        except BaseException as error:
            self.interrupted(attempt, scope, error)
            raise
        try:
            accepted = hedge.accepts(ctx, attempt.result, attempt.error)
        except Exception as error:  # noqa: BLE001 - a judgment that raised ends the execution with it
            attempt.error, accepted = error, True
        except BaseException as error:  # the judgment's: as the run's, an interrupt or a cancellation
            self.interrupted(attempt, scope, error)
            raise
        won = accepted and not self.over
        if won:
            self.winner = attempt
            self.over = True
            if len(self.attempts) > 1:
                self.ctx.answered_by(ctx.attempt)  # others took numbers: the latest may be another's
                self.cancel_rivals()
        elif self.ended():
            # Ended once the race was over (another attempt won, or the caller's cancellation or
            # deadline stopped it): it returned or failed in the turn of the loop that decided
            # the race, or caught the cancellation the race gave it. Its outcome answers nothing:
            # it ends as that cancellation ends it (a loser's, or the deadline's: :meth:`told`).
            attempt.cancelled = True
            hedge.leave(ctx, scope, self.told(attempt, asyncio.CancelledError()), accepted=False, won=False)
            return
        elif not accepted:
            self.lost(attempt)  # the race goes on
        hedge.leave(ctx, scope, attempt.error, accepted=accepted, won=won)

    def lost(self, attempt: _Attempt) -> None:
        """Note that ``attempt`` ended unacceptably while the race goes on: a failure a win recovers from.

        The one rule for :attr:`failed` (a win after it is ``RECOVERED``). A rejection in the
        attempt's first run of the chain (:func:`_first_run`) called nothing, whether the chain
        or the function it called rejected it: no failure. One that ended a later run (a retry
        inside the hedging) came after a failure of the dependency, which it retried: a failure.
        """
        if not isinstance(attempt.error, ExecutionRejectedError) or not _first_run(attempt.ctx):
            self.failed = True

    def turned_away(self, attempt: _Attempt, scope: Any) -> None:
        """End ``attempt``, which the chain it runs rejected (:attr:`ExecutionContext.rejected`).

        It never ran its action: the hedge is told so first (:meth:`Hedge.turned_away`). Its
        rejection is no outcome to judge (never an answer, whatever :meth:`Hedge.accepts` would
        say of it) and no failure to recover from. The race goes on with the attempts in flight,
        but starts none after it: every further attempt would meet the same step. A hedge turned
        away is itself the hedge denied (:data:`REJECTED`, its own trigger); an original turned
        away denies the hedge due next, if one may still start. Once the race is over (the
        rejection came in the turn of the loop that decided it) it ends as a loser.

        An attempt rejected in a later run of its chain (a retry inside the hedging, whose first
        run called the dependency: :func:`_first_run`) was not turned away: it called, so the
        hedge is not told (:meth:`Hedge.turned_away`), and it is an attempt that ran, whose
        failure a win recovers from (:meth:`lost`). Its rejection is still no answer and still
        ends hedging: it denies the hedge due next, as an original turned away does.
        """
        hedge, ctx = self.hedge, attempt.ctx
        called = not _first_run(ctx)
        if not called:
            hedge.turned_away(ctx)
        if self.ended():
            attempt.cancelled = True
            hedge.leave(ctx, scope, self.told(attempt, asyncio.CancelledError()), accepted=False, won=False)
            return
        hedge.leave(ctx, scope, attempt.error, accepted=False, won=False)
        if called:
            self.lost(attempt)  # its first run failed: a win after it recovers
        # After the attempt's scope closed: reported on the execution, as every denial.
        if attempt.trigger is not None and not called:
            self.refuse(attempt.trigger, REJECTED)
        elif self.more:
            due = FAILURE if hedge.on_failure else self.timed if self.delay is not None else None
            self.refuse(due, REJECTED)

    def interrupted(self, attempt: _Attempt, scope: Any, error: BaseException) -> None:
        """End ``attempt``, whose run or judgment raised ``error``, no ``Exception``, before it propagates.

        A loser's cancellation (the race is over) ends it cancelled. Otherwise ``error`` ends the
        race: an interrupt or a refusal (:meth:`first_ended` raises it), or a cancellation, which
        is no loser's (the race cancels attempts only once it is over): the attempt raised it
        (its dependency awaited a future cancelled elsewhere, or its judgment raised it), no
        outcome to hedge after, and it reaches the caller as it is (:attr:`stopped`). An attempt
        whose coroutine is closed (the collector freeing a race its closed loop left pending, on
        whichever thread allocates, maybe one that runs no loop, and maybe before the race's own)
        cancels its rivals without asking for the running task, as the race does when closed.
        """
        attempt.cancelled = True
        if not self.over:
            self.over = True
            if isinstance(error, asyncio.CancelledError):
                self.stopped = error
            if type(error) is GeneratorExit:  # closed, maybe where no loop runs: as race() when closed
                _cancel_unawaited(self.tasks)
            else:
                self.cancel_rivals()
        self.hedge.leave(attempt.ctx, scope, self.told(attempt, error), accepted=False, won=False)

    def cancel_rivals(self) -> None:
        """Cancel the task of every attempt but the current one's, which just ended the race: in that turn.

        Called by the attempt that won, or that ended the race with an interrupt, a refusal or a
        cancellation of its own. Not left to :func:`race`, whose task wakes a turn later: an
        attempt woken meanwhile (its wait ended as this one ended: the bulkhead slot it gave back
        was handed to it) would go on, and call the dependency after the race was over. Cancelled
        now, it meets the cancellation where it waits. :func:`race` awaits them.
        """
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.stop_nested()

    def stop_nested(self) -> None:
        """Stop, in this turn of the loop, the race each attempt runs inside it (two hedgings in one chain).

        The cancellation of an attempt's task reaches it a turn later, and the task of its inner
        race's original (started as it entered that race) may be due before: that original would
        run, and call the dependency once this race is over. Stopped now (:meth:`stop`), it never
        runs, and the attempt that ran nothing but an inner race none of whose attempts had run
        is held back (:func:`held_back`): no win over it, no hedge sent. The attempt whose task
        runs this (the winner, or one that ended the race) is done with its own inner race.
        """
        for attempt in self.attempts:
            nested: weakref.ref[_Race] | None = getattr(attempt.ctx, "nested", None)
            inner = None if nested is None else nested()
            if inner is not None:
                inner.stop()

    def stop(self) -> None:
        """Stop this race, run inside an attempt of another that is over (:meth:`stop_nested`).

        It is over (:attr:`over`): an attempt whose task has not run yet never runs, and one
        that ends now is a loser. Every attempt's task is cancelled; those that had not run are
        counted held back in the enclosing attempts (:func:`hold_back_enclosing`), as attempts
        stopped in the wait for their admission are: they ran nothing. A race over already
        (decided, or stopped) cancels its own.
        """
        if self.over:
            return
        self.over = True
        unstarted = 0
        for task in self.tasks:
            coro = task.get_coro()
            if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                unstarted += 1
            task.cancel()
        if unstarted:  # each attempt of this race was forked from its context
            hold_back_enclosing(self.attempts[0].ctx, unstarted)
        self.stop_nested()

    def told(self, attempt: _Attempt, error: BaseException) -> BaseException:
        """What the hedge is told of the ``error`` that ended ``attempt``'s run (being handled, in its task).

        An attempt the race cancelled because the effective deadline ended it (:attr:`cut`) is told
        the deadline's end, as an attempt of a retry is (a ``timeout``:
        :func:`~otel_resilience.engine.stats.attempt_ended`): the
        :class:`~otel_resilience.engine.deadline.DeadlineReachedError` a thread's attempt ends with,
        for the seconds it ran. The deadline binds the caller's task, where the race decided it
        (:func:`~otel_resilience.engine.deadline.ended_by_deadline`), not the attempt's. Anything
        else is told as :func:`_told` says.
        """
        if self.cut and isinstance(error, asyncio.CancelledError):
            return DeadlineReachedError(attempt.ctx.operation, self.clock.now() - attempt.started, "total")
        return _told(error)

    async def contest(self) -> None:
        """Start attempts as the hedge says until one wins, or none runs and none may start."""
        hedge = self.hedge
        self.launch(None)
        while self.winner is None:
            timed = self.timed
            delay = self.delay if self.more and timed is not None else None
            if delay is None and not self.tasks:
                return
            left = None if delay is None else delay - (self.clock.now() - self.latest)
            if left is not None and left > 0 and time_left() <= left:
                # The next hedge by delay would start at or past the deadline: none will. It never
                # comes due, so none is denied (reported only when one is due past the deadline);
                # a hedge by failure may still start before the deadline.
                self.timed = None
                left = None
            if left is None or left > 0:
                ended = await self.first_ended(left)
                if self.decided():
                    return
                if ended:  # unacceptable outcomes (else the delay passed: start the next below)
                    for _ in range(ended if hedge.on_failure else 0):
                        if self.more:
                            self.launch(FAILURE)
                    continue
                if self.clock is SYSTEM_CLOCK and self.tasks:
                    # The delay was waited beside the attempts by the loop's timer (first_ended),
                    # which uvloop's runs up to a millisecond and a half before the system clock
                    # reached the delay's end: what is left of it is read again, and the rest
                    # waited, before the next attempt starts. Only once the delay's wait ended: a
                    # win pays nothing for it. (With none in flight the clock slept it.)
                    continue
            self.launch(cast("str", timed))

    def ended(self) -> bool:
        """Whether the race is over (:attr:`over`), read after an await: other tasks set it meanwhile."""
        return self.over

    def decided(self) -> bool:
        """Whether an attempt won (its task sets :attr:`winner` while the race waits)."""
        return self.winner is not None

    async def first_ended(self, timeout: float | None) -> int:
        """Wait until an attempt ends or ``timeout`` seconds pass; return how many ended.

        Raises:
            BaseException: What an attempt's task ended with other than cancellation (an
                interrupt, the wrong-driver signal), or a cancellation an attempt raised itself
                (:attr:`stopped`): it ends the race.
        """
        tasks, clock = self.tasks, self.clock
        if timeout is None:
            done, _ = await asyncio.wait(tasks, return_when=_FIRST_COMPLETED)
        elif clock is SYSTEM_CLOCK:
            if not tasks:
                await clock.sleep(timeout)  # never ends before its time
                return 0
            done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=_FIRST_COMPLETED)
        else:  # the delay runs on the step's clock (a test's FakeClock)
            timer = self.loop.create_task(clock.sleep(timeout))
            try:
                done, _ = await asyncio.wait({*tasks, timer}, return_when=_FIRST_COMPLETED)
            finally:
                await _cancel_all({timer})
            done.discard(timer)
            if not done and not timer.cancelled() and (refused_sleep := timer.exception()) is not None:
                # The timer alone ended, and the clock could not sleep the delay (a fake clock's
                # time past the largest float): its error ends the race, as a delay function's
                # does; no hedge starts in place of the delay, as if it had passed. (An attempt
                # that ended meanwhile is seen first, below: the next wait asks the clock again.)
                del done, timer
                try:
                    raise refused_sleep
                finally:
                    del refused_sleep  # its traceback holds this frame: not bound here (a cycle)
        if (stopped := self.stopped) is not None:  # its task ended cancelled, and holds it
            # Raised before a task is bound here: the tasks go on in :attr:`tasks`, for the race's end.
            self.stopped = None
            del done
            try:
                raise stopped
            finally:
                del stopped  # its traceback holds this frame: not bound here (a cycle)
        for task in done:
            tasks.discard(task)
            if not task.cancelled() and (raised := task.exception()) is not None:
                del done, task  # the tasks hold their errors, whose tracebacks hold this frame
                try:
                    raise raised
                finally:
                    del raised  # nor the error itself (a cycle)
        return len(done)

    def verdict(self) -> _Attempt | None:
        """Return the attempt whose outcome the execution takes, and set the execution's outcome.

        The winner; without one, the original if it ended, else the first attempt that ended;
        ``None`` when every attempt was cancelled from elsewhere. A success is a recovery when
        an attempt failed before the win, or when the execution had recovered before the race;
        a result returned with no winner (none was acceptable) is a failure.
        """
        chosen, ctx = self.winner, self.ctx
        if chosen is None:
            chosen = next((a for a in self.attempts if not a.cancelled), None)
            if chosen is None:
                return None
            outcome = chosen.ctx.outcome
            ctx.outcome = _RECOVERED if outcome is _SUCCESS and self.recovered else outcome
            ctx.answered_by(chosen.ctx.attempt)  # a hedge may have taken a later number
            if chosen.error is None:  # a result returned that no attempt made acceptable
                ctx.result_failed()
        else:
            outcome = chosen.ctx.outcome
            ctx.outcome = _RECOVERED if outcome is _SUCCESS and (self.recovered or self.failed) else outcome
        if (
            chosen.ctx.rejected
            and ctx.parent is not None
            and isinstance(chosen.error, ExecutionRejectedError)
        ):
            ctx.rejected = True  # a race inside an attempt of another: its chain rejected that attempt
        return chosen


async def race(step: Step, ctx: ExecutionContext, hedge: Hedge) -> Any:
    """Run the rest of ``step``'s chain as the race ``hedge`` describes (see the module doc).

    Returns:
        The winner's result (or, with no acceptable outcome, the original's).

    Raises:
        Exception: The winner's error when an error was acceptable; with no acceptable outcome,
            the original's error.
        asyncio.CancelledError: The caller was cancelled (every attempt was cancelled and
            awaited first), or every attempt was cancelled from elsewhere.
    """
    if step.entries is not None:
        next(step.entries)
    contest = _Race(step, ctx, hedge)
    try:
        await contest.contest()
        if contest.tasks:  # the losers still running, cancelled as the winner won (cancel_rivals)
            await _ended(contest.tasks)
    except BaseException as stopped:
        contest.over = True  # the attempts cancelled now are losers, not cancellations of their own
        contest.cut = ended_by_deadline(stopped)  # read here: the deadline binds this task, not theirs
        try:
            if type(stopped) is GeneratorExit:  # closed, not cancelled: nothing may be awaited now
                _cancel_unawaited(contest.tasks)
            else:
                contest.stop_nested()
                await _cancel_all(contest.tasks)  # re-raises a cancellation that came meanwhile
        finally:
            # Counted whatever ends the wait: a second cancellation while the attempts ended too.
            # An attempt may have won before the cancellation reached this task (in that turn, or
            # while the losers ended): its task reported the win as it happened, and the hedge
            # counts it so.
            winner = contest.winner
            _forget(contest)
            hedge.end(ctx, None if winner is None else winner.ctx, _told(stopped))
        raise
    chosen = contest.verdict()
    error: BaseException | None = asyncio.CancelledError() if chosen is None else chosen.error
    hedge.end(ctx, None if contest.winner is None else contest.winner.ctx, error)
    result = None if chosen is None else chosen.result
    _forget(contest)
    if error is not None:
        try:
            raise error
        finally:
            del error  # no frame of ours keeps the error (and its traceback) alive
    return result


def held_back(attempt: ExecutionContext) -> bool:
    """Whether ``attempt`` waits for a step's admission, or was stopped there, having run nothing yet.

    The mark a step's wait sets on an attempt of a race (:attr:`ExecutionContext.queued`: the
    policy's own bulkhead queue, a rate limiter's permit; unset when the attempt never waited),
    in the attempt's first run: its outcome is still the fork's (a re-run inside the attempt, a
    retry after a failure, takes a number first, :meth:`ExecutionContext.next_attempt`, and may
    have called the dependency, or may call it after a wait its own timeout cut). An attempt
    the race ends while it is held back (another won, the caller was cancelled) never ran its
    action: it is no attempt that ran beside the winner, and no hedge sent. Read on a hedge's
    rare paths only (a win once more than one attempt started, the end of a race that started a
    hedge): an execution that started no hedge never reads it. An attempt that runs a race of
    its own (two hedgings in one chain) is held back while every attempt run inside it is
    (:attr:`ExecutionContext.held` of :attr:`ExecutionContext.branches`: that race's original
    and each hedge it started, the wait counting every enclosing attempt,
    :func:`hold_back_enclosing`), and stays so when they are stopped there or turned away, or
    stopped before their tasks ran (:meth:`_Race.stop`): a hedge started inside it is no re-run of it
    (:meth:`ExecutionContext.fork`). An attempt turned away itself
    (:attr:`ExecutionContext.rejected`) is not held back: the race tells the hedge so
    (:meth:`Hedge.turned_away`).
    """
    if attempt.rejected or not _first_run(attempt):  # turned away: told so, not held back
        return False
    held: int = getattr(attempt, "held", 0)
    if held:
        return held >= getattr(attempt, "branches", 1)
    return getattr(attempt, "queued", False) is True


def hold_back_enclosing(attempt: ExecutionContext, change: int) -> None:
    """Count ``change`` attempts of ``attempt``'s race in or out of those held back in each enclosing attempt.

    An attempt of an outer race that runs a race of its own (two hedgings in one chain) ran
    nothing while every attempt run inside it (:attr:`ExecutionContext.branches`: that race's
    original, and each hedge started in it) is held back: a count of them
    (:attr:`ExecutionContext.held`) in the context ``attempt`` was forked from and each attempt
    that one runs in, up to the execution. One more as ``attempt`` starts waiting for its
    admission (``change`` 1), one fewer once its wait admits it or raises (-1), kept when the
    wait is stopped or rejects it (turned away, it ran nothing either); and one more for each
    attempt of a race whose task had not run when the race was stopped (:meth:`_Race.stop`). An
    outer race decided meanwhile reads it at once (:func:`held_back`): no hedge sent, no win
    over it, before the inner race was even stopped. On these rare paths only.
    """
    outer = cast("ExecutionContext", attempt.parent)
    while outer.parent is not None:  # an attempt of an enclosing race, up to the execution
        outer.held = getattr(outer, "held", 0) + change
        outer = outer.parent


def _first_run(attempt: ExecutionContext) -> bool:
    """Whether ``attempt`` is still in its first run of the chain: nothing in it took another number.

    Its outcome is still the fork's: a re-run inside the attempt (a retry inside the hedging)
    takes a number first (:meth:`ExecutionContext.next_attempt`, which makes it ``RECOVERED``),
    and may have called the dependency before. The one rule by which a race tells whether an
    attempt stopped at an admission (held back, :func:`held_back`; turned away) ran nothing.
    """
    return attempt.outcome is _SUCCESS


def _told(error: BaseException) -> BaseException:
    """What the hedge's hooks are told of ``error``, being handled: a refusal as the caller's ``TypeError``.

    A function the driver refused (:class:`~otel_resilience.engine.calling.WrongDriver`: a
    plain function given to the async API, an action that returns no awaitable) is a failed
    attempt, and a failed execution, not a cancellation or an interrupt; the race ends with it
    (no hedge starts after it: a usage error would be refused again).
    """
    signal = refused()
    return error if signal is None else signal.as_type_error()


def _forget(contest: _Race) -> None:
    """Drop every attempt's error and result: their tracebacks hold frames that hold the attempts."""
    for attempt in contest.attempts:
        attempt.error = attempt.result = None
    contest.winner = contest.stopped = None


def _cancel_unawaited(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` without waiting for them: their race's coroutine, or an attempt's, is being closed.

    As the garbage collector frees a race its closed loop left pending (on whichever thread
    allocates), or as ``close()`` ends one: a coroutine awaits nothing then. A task of a live loop
    is cancelled on its loop (from any thread); one of a closed loop never runs again, and the
    collector frees it too.
    """
    for task in tasks:
        if not task.done():
            with contextlib.suppress(RuntimeError):  # its loop is closed
                task.get_loop().call_soon_threadsafe(task.cancel)
    tasks.clear()


async def _cancel_all(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, as :func:`_ended` does."""
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    await _ended(tasks)


async def _ended(tasks: set[asyncio.Task[Any]]) -> None:
    """Wait until every one of ``tasks`` (cancelled already) has ended, even if we are cancelled meanwhile.

    A cancellation that arrives while they end is re-raised once they all have: no task is left
    behind. Their exceptions are retrieved (the winner's outcome stands), so none is logged as
    "never retrieved". After a cancellation the tasks are looked at before waiting again: an
    anyio cancel scope cancels this task again at every turn of the loop in which it waits, and
    a new wait on tasks that ended already would only end the turn after, cancelled again first.
    """
    interrupted: BaseException | None = None
    while True:
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError as error:
            interrupted = error
            if not all(task.done() for task in tasks):
                continue
        break
    for task in tasks:
        if not task.cancelled():
            task.exception()
    tasks.clear()
    if interrupted is not None:
        try:
            raise interrupted
        finally:
            del interrupted  # its traceback holds this frame: not bound here (a cycle)
