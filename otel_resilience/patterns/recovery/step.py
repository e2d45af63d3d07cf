"""The recovery step: what a rule does with a failure, as actions the engine's drivers perform.

:meth:`RecoveryStep.on_failure` observes the failure (the system's pattern detector and rule
lookup) and answers with an action:

* RETRY / RESTART: a :class:`~otel_resilience.engine.step.Retry` (the driver waits ``delay``,
  calls ``restart_hook`` and runs the rest of the chain again, outside the handling of the
  failure), while the deadline leaves room for the delay and the execution may make another
  attempt. Each re-run's token is the :class:`Rerun` of the recovery: its rule, the failure that
  started it, the re-runs left. A re-run's failure comes back to ``on_failure`` with that token
  and is observed and matched as the first run's: an error of the recovery's own rule goes on to
  the next re-run (the last re-run's is raised unchanged, the recovery failed); another rule's
  ends the recovery as a failed attempt and that rule acts on it, a RETRY/RESTART one taking the
  token over (:meth:`Rerun.take`) with the re-runs it has left in the execution; an error no
  rule covers ends it as failed and is raised unchanged. A re-run
  that returns makes it a successful one (:meth:`RecoveryStep.on_success`), unless its result is
  one the policy judged a failure (a retry inside gave up on it): then the recovery failed. A
  ``restart_hook`` that raises (:meth:`Rerun.restart`) ends the recovery as a failed attempt
  whatever the rule covers: its error is raised, with the failure it restarted for as its
  context (when it has none of its own), and no re-run starts after it. A recovery the
  effective deadline ended (:meth:`RecoveryStep._cut_by_deadline`) is a failed one in both
  drivers: the caller gets the deadline's timeout, whether its timer cancelled the re-run
  (async) or the re-run returned after it in a thread, where its scope drops the result.
  Each re-run is an attempt of the execution, with its attempt scope (:class:`Rerun`).
* FALLBACK: an :class:`~otel_resilience.engine.step.Answer` with ``fallback_value``, or a
  :class:`~otel_resilience.engine.step.Call` of ``fallback_function`` with the operation's
  arguments (its own error, raised in the handling of the original, chains it as context). The
  effective deadline ends it as it ends a re-run (:meth:`RecoveryStep._cut_by_deadline`): an
  answer given past it in a thread, or a ``fallback_function`` it cancelled, is a failed recovery.
* ISOLATE: force the breaker open, then pass the error through.
* ESCALATE: raise :class:`~otel_resilience.errors.RecoveryEscalatedError` ``from`` the error.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final

from otel_resilience.engine.calling import (
    coroutine_function_in_sync,
    handled_error,
    refuse_awaitable,
    refused,
)
from otel_resilience.engine.closing import closing
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.deadline import passes_to_its_scope, time_left
from otel_resilience.engine.events import Event, Outcome, RecoveryAttempted, StrategyTelemetry, error_type_key
from otel_resilience.engine.facade import Link
from otel_resilience.engine.notes import chain_failure, injected
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.rerun import let_go, may_run_again
from otel_resilience.engine.stats import CUT, attempt_ended
from otel_resilience.engine.step import TERMINAL, Action, Answer, Call, Retry
from otel_resilience.engine.validation import fail, wrong_return
from otel_resilience.errors import ExecutionRejectedError, RecoveryEscalatedError
from otel_resilience.patterns.recovery.config import (
    RERUN,
    Isolation,
    RecoveryAction,
    RecoveryConfig,
    RecoveryStrategy,
    Rule,
    type_name,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from otel_resilience.patterns.recovery.system import ErrorRecoverySystem

__all__ = ["CaughtErrorStep", "RecoveryStep", "Rerun"]

_LOG: Final = logging.getLogger("otel_resilience")
_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
_CANCELLED: Final = Outcome.CANCELLED


class Rerun:
    """The token of a RETRY/RESTART recovery's re-runs: its rule, the failure it recovers, re-runs left.

    One token serves the execution's re-runs: when a re-run's error is another RETRY/RESTART
    rule's, that rule's recovery takes the token over (:meth:`take`), with the re-runs that rule
    has left in the execution (:attr:`spent`).

    It keeps the failure's type name (what telemetry reports), not the failure: the token lives in
    the frames of the re-runs, which the tracebacks of the re-runs' errors hold, and a token
    holding the failure (its traceback, its frames) would make a reference cycle of them all.
    The one exception is :attr:`failure`, held only from the decision to restart until the hook
    is called (or the wait before it ends otherwise: :meth:`RecoveryStep.on_cancel`).

    Each re-run is an attempt of the execution: when no step inside the recovery opens its
    scope (:attr:`~otel_resilience.engine.step.Step.opens_attempts`: no retry, no hedging), the
    token opens it, once the delay and the ``restart_hook`` are over (:meth:`open`), and the
    recovery's hooks close it (:meth:`end`).

    Attributes:
        covered: The class of the rule whose recovery runs (the rule lookup's answer).
        action: That rule's action.
        error_type: The type name of the failure that started that recovery.
        left: The re-runs that recovery may still make.
        spent: The re-runs each rule (by its class) made in the execution: a rule's
            ``max_attempts`` bounds them all, so rules whose errors take turns never re-run forever.
        ended: Whether the recovery ended (:meth:`RecoveryStep._give_up`): counted once, so a
            cancellation of what follows (another rule's ``fallback_function``) does not count it again.
        restarting: Whether the rule's ``restart_hook`` is running, or raised (:meth:`restart`):
            a failure judged meanwhile is the hook's, not a re-run's.
        telemetry: What opens the re-runs' attempt scopes, or ``None`` when the token opens none.
        handles: The running re-run's attempt scope, or ``None`` when none is open.
        failure: The failure the next ``restart_hook`` call restarts for, until it is called:
            an error the hook raises gets it as its context, so the caller sees what the restart
            was for (:func:`~otel_resilience.engine.notes.chain_failure`).
        hook_name: How error messages name the ``restart_hook`` (the driver's hook name, set
            with :attr:`failure`).
        last: The type name of the dependency's last error the recovery saw (the failure it
            recovers, then each re-run's that is not a rejection, the deadline's timeout, a
            ``restart_hook``'s error or a fault a chaos link injected), or ``None`` when it names
            none (:meth:`RecoveryStep.settle`): reported when the recovery ends, and named on the
            execution span as ``resilience.dependency.error.type``, as a retry names its attempts'.
    """

    __slots__ = (
        "action",
        "covered",
        "ctx",
        "ended",
        "error_type",
        "failure",
        "handles",
        "hook_name",
        "last",
        "left",
        "restarting",
        "spent",
        "sync",
        "telemetry",
    )

    def __init__(
        self,
        covered: type,
        action: RecoveryAction,
        error: Exception,
        ctx: ExecutionContext,
        telemetry: StrategyTelemetry | None,
        *,
        names: bool,
    ) -> None:
        self.spent: dict[type, int] = {}
        self.take(covered, action, error)
        self.last = self.error_type if names and not injected(error) else None
        self.restarting = False
        self.sync = ctx.sync
        self.ctx = ctx
        self.telemetry = telemetry
        self.handles: Any = None
        self.failure: Exception | None = None
        self.hook_name = ""

    def take(self, covered: type, action: RecoveryAction, error: Exception) -> None:
        """Recover ``error`` by the rule of ``covered`` from now on: the first rule, or a re-run's error's.

        Its re-runs left are its ``max_attempts`` less those it made in the execution already.
        """
        self.covered = covered
        self.action = action
        self.error_type = type_name(error)
        self.left = action.max_attempts - self.spent.get(covered, 0)
        self.ended = False

    def restart(self) -> object:
        """Call the rule's ``restart_hook`` before a re-run (the driver's hook of the re-run).

        :attr:`restarting` is set until the hook returned (an awaitable it returns: until that
        ended, in the async driver), so an error it raises is told from the re-run's. An
        awaitable it returns in a thread is refused here, as the sync driver refuses one
        (:func:`~otel_resilience.engine.calling.refuse_awaitable`, named :attr:`hook_name`): the
        hook's failure too. An error the hook raises, that refusal included, has the failure it
        restarts for as its context (:attr:`failure`). Once it returned, the re-run's attempt
        scope opens (:meth:`open`).
        """
        failure, self.failure = self.failure, None
        self.restarting = True
        try:
            value = self.action.restart_hook()  # type: ignore[misc] # a RESTART rule has one
            if inspect.isawaitable(value):
                if self.sync:
                    refuse_awaitable(self.hook_name, value)  # raises: a thread cannot await it
                return self._restarted(value, failure)
        except Exception as error:
            chain_failure(error, failure)
            raise
        finally:
            del failure  # the hook's error's traceback holds this frame: not bound here (a cycle)
        self.restarting = False
        self.open()
        return value

    async def _restarted(self, pending: Awaitable[object], failure: Exception | None) -> None:
        """Await an async ``restart_hook``; once it ended without an error, the re-run is next."""
        try:
            await pending
        except Exception as error:
            chain_failure(error, failure)
            raise
        finally:
            del failure  # as in restart()
        self.restarting = False
        self.open()

    def open(self) -> None:
        """Open the attempt scope of the re-run about to start, if the token opens them."""
        telemetry = self.telemetry
        if telemetry is not None:
            ctx = self.ctx
            self.handles = telemetry.start_attempt(ctx.operation, ctx.attempt)

    def end(self, outcome: Outcome, error: BaseException | None) -> None:
        """Close the running re-run's attempt scope, if one is open, with ``outcome``."""
        handles = self.handles
        if handles:
            self.handles = None
            self.telemetry.end_attempt(handles, outcome, error)  # type: ignore[union-attr] # set: it opened


class RecoveryStep(Link[RecoveryConfig]):
    """The pipeline link: recovers what the rest of the chain raises, by the system's rules."""

    __slots__ = ("_isolation", "_names", "_scopes", "_system")

    kind: ClassVar[str] = "recovery"
    judges_first_run: ClassVar[bool] = False

    def __init__(
        self, system: ErrorRecoverySystem, telemetry: StrategyTelemetry, isolation: Isolation
    ) -> None:
        super().__init__(system.name, system.config, system.clock, telemetry)
        self._system = system
        self._isolation = isolation
        self._scopes = True  # no step inside yet: the re-runs' attempt scopes are this link's (settle)
        self._names = True  # and it names the dependency's errors its re-runs end with (settle)

    def settle(self) -> list[Any]:
        """Record the plan (:meth:`Step.settle`), who opens the re-runs' attempt scopes, and who names errors.

        This link opens them, unless a step inside it opens a scope for each run of the chain
        (:attr:`~otel_resilience.engine.step.Step.opens_attempts`: a retry, a hedging), which
        then opens the re-runs' too: one scope per attempt, read once here, never per call.
        Likewise it names the dependency's last error of a RETRY/RESTART recovery
        (:attr:`Rerun.last`), unless a step inside names each failure itself
        (:attr:`~otel_resilience.engine.step.Step.names_failures`: a retry), which saw the later ones.
        """
        self._scopes = not self.scopes_inside()
        step = self.next
        while step is not TERMINAL and not step.names_failures:
            step = step.next
        self._names = step is TERMINAL
        return super().settle()

    def on_success(self, ctx: ExecutionContext, token: Rerun, result: Any) -> Action:  # noqa: ARG002
        """A re-run returned: the recovery succeeded (a first run's success is not judged).

        Unless it returned too late (:meth:`_cut_by_deadline`): the caller gets the deadline's
        timeout, the recovery failed, and the re-run's attempt scope ends ``timeout``, as one the
        deadline cancelled (:data:`~otel_resilience.engine.stats.CUT`). Nor did it succeed when
        the re-run's result is one its policy judged a failure (a retry inside gave up on it:
        :meth:`~otel_resilience.engine.context.ExecutionContext.recovered` says so, by the one
        rule of a returned result): the result is returned, the recovery counted failed.
        """
        cut = self._cut_by_deadline(ctx, returned=True)
        if token.handles:  # a re-run that came too late ended as the deadline ends one (attempt_ended)
            token.end(*(CUT if cut else (_SUCCESS if ctx.result_accepted() else _FAILURE, None)))
        if cut:
            return self._give_up(token)
        self._settle(token.action.strategy, token.error_type, success=ctx.recovered(), named=token.last)
        return None

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        """A recovery the effective deadline cancelled (its re-run, its delay or hook) failed.

        Any other cancellation (the caller's, an interrupt) is never counted. A running re-run's
        attempt scope ends ``timeout`` when the effective deadline ended it, else ``cancelled``
        (:func:`~otel_resilience.engine.stats.attempt_ended`, the rule of both drivers).

        A re-run ended by a function that does not fit the driver
        (:class:`~otel_resilience.engine.calling.WrongDriver`, being handled by the driver that
        calls this) is no cancellation: a failed re-run, with the ``TypeError`` the caller gets,
        that no rule covers (the recovery failed, and no re-run follows).
        """
        if type(token) is Rerun and not token.ended:  # ended: counted when it ended
            token.failure = None  # a restart that will not be called (its wait ended otherwise)
            if running and (signal := refused()) is not None:
                if token.handles:
                    token.end(_FAILURE, signal.as_type_error())
                self._give_up(token)
                return
            if running:
                token.end(*attempt_ended(handled_error()))
            else:  # its delay or restart hook: the re-run's scope, if opened, never ran
                token.end(_CANCELLED, None)
            if self._cut_by_deadline(ctx, returned=False):
                self._give_up(token)

    def _cut_by_deadline(self, ctx: ExecutionContext, *, returned: bool) -> bool:
        """Whether the effective deadline ended the recovery's run that just ended: then it failed.

        A run is a re-run, or a FALLBACK's answer or ``fallback_function``. The one rule of both
        drivers. Past the deadline (on the step's clock, the deadline's), a run that was
        cancelled or interrupted was ended by it (async: its timer cancels the task; sync: an
        engine wait it cut, :func:`~otel_resilience.engine.deadline.wait_sync_within_deadline`),
        and a run that returned in a thread came too late: the scope that owns the deadline drops
        the result for its timeout (a thread cannot be cut). An async scope cuts only by
        cancelling, and hands on a result that came back before its timer could fire: a success.

        Nor does it cut an async run whose coroutine is being closed (``GeneratorExit``: a task its
        closed loop left pending, freed by the garbage collector on whichever thread allocates):
        the loop's closing ended it, not a deadline, and the deadline read there would be that
        thread's own, not the task's. It is no failed recovery, as a caller's cancellation is
        none, and nothing is counted (no lock taken on a thread that may hold it).
        """
        return (ctx.sync or not (returned or closing())) and time_left() <= 0.0

    def on_failure(self, ctx: ExecutionContext, token: Rerun | None, error: Exception) -> Action:
        """Act on a failure by the rule that covers it, a re-run's as the first run's.

        A re-run's error of the recovery's own rule goes on to its next re-run; another rule's
        ends the recovery as failed, and that rule acts on it (the lookup decides: a subclass's
        rule wins over the running recovery's base class). A rule registered again for the
        recovery's class with another action while it runs is another rule: the new action acts.

        A ``restart_hook``'s failure (:attr:`Rerun.restarting`) ends the recovery as failed,
        whatever the rule covers: re-running would call the failing hook again.

        An enclosing scope's deadline, reached, is neither observed nor acted on: it passes to
        that scope (:func:`~otel_resilience.engine.deadline.passes_to_its_scope`), ending a
        re-run as failed. Nor is a rejection (the dependency was never called): it passes
        through unchanged, and a re-run rejected ends the recovery as failed whatever class the
        rule covers.
        """
        passes = isinstance(error, ExecutionRejectedError) or passes_to_its_scope(error)
        if token is not None:  # a re-run's failure, or its restart hook's, which ends the recovery
            if token.handles:  # the re-run's scope (none for its restart hook's failure)
                token.end(*attempt_ended(error))
            if self._names and not (passes or token.restarting or injected(error)):
                token.last = type_name(error)  # the dependency's, and the latest: named at the end
            if passes or token.restarting:
                return self._give_up(token)
        elif passes:
            return None
        # used alone, the operation is the function that failed, not the system (Link.operation)
        rule = self._system._observe(error, self.operation(ctx), self.named_after(ctx), self._telemetry)
        if token is not None:  # a re-run's error, judged by the rules as the first run's
            # the recovery's own rule: its class, with the action it runs (a rule registered again
            # for that class since, with another action, is another rule from then on)
            if rule is not None and rule[0] is token.covered and rule[1] == token.action:
                return self._rerun(ctx, token, error)
            self._give_up(token)  # not the recovery's rule: it failed, and the error's rule acts
        return None if rule is None else self._act(ctx, token, rule, error)

    def _act(self, ctx: ExecutionContext, token: Rerun | None, rule: Rule, error: Exception) -> Action:
        """Act on ``error`` by ``rule``: the first run's, or a re-run's that another rule covers.

        A RETRY/RESTART rule starts the execution's re-run token, or takes over the one of the
        recovery the re-run's error ended (:meth:`Rerun.take`).
        """
        covered, action = rule
        strategy = action.strategy
        if strategy in RERUN:
            if token is None:
                token = self._start(ctx, covered, action, error)
            else:
                token.take(covered, action, error)
            return self._rerun(ctx, token, error)
        if strategy is RecoveryStrategy.FALLBACK:
            if action.fallback_function is None:
                return self._fell_back(ctx, error, action.fallback_value)
            return self._fallback_call(ctx, action.fallback_function, error)
        if strategy is RecoveryStrategy.ISOLATE:
            self._isolate(action, error)
            return None
        raise self._escalate(error, self.operation(ctx)) from error

    def _start(
        self,
        ctx: ExecutionContext,
        covered: type,
        action: RecoveryAction,
        error: Exception,
    ) -> Rerun:
        """Return the token of a RETRY/RESTART recovery of ``error``.

        It opens its re-runs' attempt scopes when this link does (:meth:`settle`) and an
        attempt listener wants them.
        """
        telemetry = self._telemetry
        opens = self._scopes and telemetry.hub.attempt_listeners
        return Rerun(covered, action, error, ctx, telemetry if opens else None, names=self._names)

    def _rerun(self, ctx: ExecutionContext, rerun: Rerun, error: Exception) -> Action:
        """Run the rest again, unless the re-runs ran out or the deadline, the cap or the caller forbid it.

        The caller forbids it for an operation that must not run again after ``error``
        (:func:`~otel_resilience.engine.rerun.may_run_again`: an HTTP request that may be sent
        once, a POST): the recovery then fails, and the error passes through. Before the delay,
        the caller lets go of what the runs so far got
        (:func:`~otel_resilience.engine.rerun.let_go`, a :class:`~otel_resilience.engine.step.Call`:
        an HTTP request's responses are closed, their connections back in the pool for the re-run).
        """
        action = rerun.action
        delay = action.delay
        if (
            rerun.left > 0  # a replaced rule with fewer re-runs than it made leaves fewer than none
            and may_run_again(error, ctx.fn)
            and self._may_rerun(delay)
            and ctx.next_attempt() is not None
        ):
            if action.restart_hook is not None and ctx.sync and is_async_callable(action.restart_hook):
                # never runs in a thread: refused before its delay is slept (and anything let go) for nothing
                self._give_up(rerun)
                what = self._what("restart_hook")
                raise TypeError(f"{what} is async, which the sync driver cannot await; use the async API")
            spent = rerun.spent
            first = not spent  # the step's token is the first run's, not `rerun`
            rerun.left -= 1
            spent[rerun.covered] = spent.get(rerun.covered, 0) + 1
            if action.restart_hook is None:
                hook = None if rerun.telemetry is None else rerun.open
                retry = Retry(delay, rerun, hook, self._what("restart_hook"))
            else:
                rerun.failure = error  # the context of an error the hook raises (Rerun.restart)
                rerun.hook_name = what = self._what("restart_hook")
                retry = Retry(delay, rerun, rerun.restart, what)
            return Call(
                let_go,
                (ctx.fn,),
                {},
                self._let_go_done,
                state=retry,
                what=self._what("the caller's let_go"),
                cancelled=self._let_go_stopped if first else None,  # else on_cancel gets `rerun`
            )
        return self._give_up(rerun)

    def _let_go_done(
        self,
        ctx: ExecutionContext,  # noqa: ARG002 - a Call's continuation
        retry: Retry,
        value: object,  # noqa: ARG002 - what it returned (or awaited) is not used
        error: Exception | None,
    ) -> Action:
        """The caller let go of what the runs so far got: the re-run's delay and hook are next.

        What letting go raised ends the recovery as failed, and the execution with that error.
        """
        if error is not None:
            self._give_up(retry.token)
            try:
                raise error
            finally:
                del error  # its traceback holds this frame: not bound here (a cycle)
        return retry

    def _let_go_stopped(self, ctx: ExecutionContext, retry: Retry) -> None:
        """A cancellation or an interrupt ended the caller's letting go after the first run: as in the delay.

        The driver gives ``on_cancel`` the first run's token; the re-run's (``retry.token``) is
        given here, as the driver gives it when the delay is cut.
        """
        self.on_cancel(ctx, retry.token, running=False)

    def _give_up(self, rerun: Rerun) -> Action:
        """End a RETRY/RESTART recovery as failed: the last error passes through unchanged."""
        rerun.failure = None
        rerun.ended = True
        self._settle(rerun.action.strategy, rerun.error_type, success=False, named=rerun.last)
        return None

    def _may_rerun(self, delay: float) -> bool:
        """Whether a re-run after ``delay`` seconds still starts before the current deadline."""
        return time_left() > delay

    def _fallback_call(self, ctx: ExecutionContext, function: Callable[..., Any], error: Exception) -> Call:
        """Return the call of ``fallback_function`` with the operation's arguments.

        The driver calls it as it calls every :class:`~otel_resilience.engine.step.Call` (the
        async one awaits what it returns, the sync one refuses an awaitable as its error);
        :meth:`_fallback_done` judges what it returned or raised, :meth:`_fallback_stopped` a
        cancellation or an interrupt that ended it.
        """
        what = self._what("fallback_function")
        return Call(
            function,
            ctx.args,
            ctx.kwargs,
            self._fallback_done,
            state=error,
            what=what,
            cancelled=self._fallback_stopped,
        )

    def _fallback_stopped(self, ctx: ExecutionContext, error: Exception) -> None:
        """A cancellation or an interrupt ended ``fallback_function``: failed, if the deadline cut it.

        As a re-run it cut (:meth:`_cut_by_deadline`), in both drivers; never counted otherwise
        (the caller's cancellation).
        """
        if self._cut_by_deadline(ctx, returned=False):
            self._settle(RecoveryStrategy.FALLBACK, type_name(error), success=False)

    def _fallback_done(
        self, ctx: ExecutionContext, error: Exception, value: Any, failure: Exception | None
    ) -> Action:
        """Judge what ``fallback_function`` returned or raised (its error is raised)."""
        if failure is not None:
            self._settle(RecoveryStrategy.FALLBACK, type_name(error), success=False)
            try:
                raise failure
            finally:
                del error, failure  # the traceback holds this frame: it keeps neither (a cycle)
        return self._fell_back(ctx, error, value)

    def _fell_back(self, ctx: ExecutionContext, error: Exception, value: Any) -> Answer:
        """Answer ``value`` for a FALLBACK recovery of ``error``.

        Unless the answer comes too late (:meth:`_cut_by_deadline`: in a thread, past the
        effective deadline): the scope that owns the deadline drops it for its timeout, as it
        drops a re-run's late result, and the recovery failed.
        """
        if self._cut_by_deadline(ctx, returned=True):
            self._settle(RecoveryStrategy.FALLBACK, type_name(error), success=False)
            return Answer(value)
        self._settle(RecoveryStrategy.FALLBACK, type_name(error), success=True)
        ctx.outcome = Outcome.FALLBACK
        return Answer(value)

    def _isolate(self, action: RecoveryAction, error: Exception) -> None:
        """Force the rule's (or the link's / context's) breaker open and count the attempt.

        Finding the breaker (a resolver's look-up) and forcing it open are the isolation: what
        either raises is logged and makes a failed attempt, and the original error is what the
        caller gets. The resolver and ``force_open`` are called, never awaited (both drivers, and
        outside any loop): an awaitable either returns (a breaker of the user's own with an
        ``async`` one) found or opened nothing, so it is closed and refused the same way, never
        counted as an isolation.
        """
        isolation = self._isolation
        name = action.isolate_breaker
        success = False
        try:
            target = isolation.find(name)
            if inspect.isawaitable(target):  # a resolver returning a coroutine: called, never awaited
                raise wrong_return(  # noqa: TRY301 - logged and counted with what the resolver raises
                    "ErrorRecoverySystem.breakers", target, "it must return a breaker or None, never awaited"
                )
            if target is not None:
                if name is None:
                    name = target.name
                opened = target.force_open(action.isolate_duration, reason="isolated")
                if inspect.isawaitable(opened):
                    raise wrong_return(  # noqa: TRY301 - logged and counted with what force_open raises
                        f"{type(target).__name__}.force_open",
                        opened,
                        "it must open the breaker when called, never awaited",
                    )
                success = opened is not False  # an operator's mode refused it: nothing isolated
        except Exception:  # noqa: BLE001 - logged; the original error is what the caller gets
            shown = isolation.breaker if name is None else name
            _LOG.warning("recovery %r could not isolate breaker %r", self.name, shown, exc_info=True)
        else:
            if target is None and name is None and isolation.breaker is None:
                if self._system._first_unfound(None):
                    _LOG.warning(
                        "recovery %r has no circuit breaker to isolate: the rule names none "
                        "(isolate_breaker) and the call has none (logged once; every failed isolation "
                        "counted in get_stats()['by_strategy']['isolate']['failed'])",
                        self.name,
                    )
            elif target is None:
                shown = name or isolation.breaker
                if self._system._first_unfound(str(shown)):  # a name: the call's own breaker given as one
                    _LOG.warning(
                        "recovery %r found no circuit breaker %r to isolate (logged once per name; every "
                        "failed isolation counted in get_stats()['by_strategy']['isolate']['failed'])",
                        self.name,
                        shown,
                    )
        self._settle(RecoveryStrategy.ISOLATE, type_name(error), success=success)

    def _escalate(self, error: Exception, operation: str) -> RecoveryEscalatedError:
        """Count an escalation and return the error to raise ``from`` the original."""
        error_type = type_name(error)
        self._settle(RecoveryStrategy.ESCALATE, error_type, success=False, key=error_type_key(error))
        return RecoveryEscalatedError(error_type, operation)

    def _settle(
        self,
        strategy: RecoveryStrategy,
        error_type: str,
        *,
        success: bool,
        named: str | None = None,
        key: str | None = None,
    ) -> None:
        """Count one ended attempt (of a failure whose type is named ``error_type``) and report it.

        ``named``: the dependency's last error the attempt saw, to name on the span
        (:attr:`Rerun.last`); ``None`` for none. ``key``: what tells the error's type apart
        (:attr:`RecoveryAttempted.error_type_key`, an escalation's); ``None`` for none.
        """
        system = self._system
        with system._lock:
            system.stats.count(strategy, success)
        telemetry = self._telemetry
        if telemetry.enabled:
            result = "success" if success else "failure"
            telemetry.report(
                Event.RECOVERY_ATTEMPTED, RecoveryAttempted(strategy.value, result, error_type, named, key)
            )

    def _what(self, field_name: str) -> str:
        """How an error message names one of a rule's functions."""
        return f"recovery {self.name!r}: {field_name}"


class CaughtErrorStep(RecoveryStep):
    """The step :meth:`ErrorRecoverySystem.recover_from_error` runs, alone, on an error already caught.

    Its execution's function is :meth:`replay`: the first call raises the caught error, so that
    the rules meet it as any failure; a re-run calls the context's ``operation``.
    """

    __slots__ = ("_error", "_named_after", "_operation")

    def __init__(
        self,
        system: ErrorRecoverySystem,
        isolation: Isolation,
        error: Exception,
        operation: Callable[..., Any] | None,
        named_after: Callable[..., Any] | None,
    ) -> None:
        super().__init__(system, system.telemetry, isolation)
        self._error: Exception | None = error
        self._operation = operation
        self._named_after = named_after

    def operation(self, ctx: ExecutionContext) -> str:
        """Its execution's operation is the context's, already named (the caught error's)."""
        return ctx.operation

    def named_after(self, ctx: ExecutionContext) -> object | None:  # noqa: ARG002 - the link's signature
        """The context's ``operation`` when it named the execution (no ``operation_name``), else ``None``."""
        return self._named_after

    def settle(self) -> list[Any]:
        """As a link's, except that it names no dependency's error: it runs in no execution span of its own.

        The span current where the error was caught is the caller's, whose attributes are its own.
        """
        plan = super().settle()
        self._names = False
        return plan

    def replay(self, *args: Any, **kwargs: Any) -> Any:
        """Raise the caught error the first time, then call the operation."""
        error = self._error
        if error is not None:
            self._error = None
            try:
                raise error
            finally:
                del error  # its traceback holds this frame: not bound here (a cycle)
        operation = self._operation
        if operation is None:  # refused by _start before any re-run
            raise AssertionError("unreachable")
        return operation(*args, **kwargs)

    def _start(self, ctx: ExecutionContext, covered: type, action: RecoveryAction, error: Exception) -> Rerun:
        """Refuse, before any delay or hook, an operation the re-runs could not run.

        None at all, or an async one for the sync API: then the driver's own signal, as when such
        an operation returns its coroutine, raised before a delay is slept for nothing.
        """
        operation = self._operation
        if operation is None:
            rule_name = action.strategy.name
            raise fail("RecoveryContext", "operation", f"a callable for {rule_name}", None, kind=TypeError)
        if ctx.sync and is_async_callable(operation):
            raise coroutine_function_in_sync(ctx.operation)
        return super()._start(ctx, covered, action, error)
