"""Steps: a pattern's rules in one sans-I/O object, run by the engine's one async and one sync driver.

A :class:`Step` is one link of a pipeline. It holds what the pattern decides and nothing it
performs: whether a call may start (:meth:`Step.admit`), what an outcome means and what comes
next (:meth:`Step.on_success`, :meth:`Step.on_failure`, :meth:`Step.on_expired`), and what to
give back when a run ends in cancellation (:meth:`Step.on_cancel`). What comes next is an
*action*, returned, never performed by the step:

* ``None``: pass the outcome through (return the result, re-raise the error);
* :class:`Answer`: return a value in place of the outcome (a fallback, a timeout's default);
* :class:`Retry`: wait, optionally call a hook, then run the rest of the chain again;
* :class:`Call`: call a user function (awaited by the async driver, refused by the sync one if it
  returns an awaitable), and hand its value or error to a continuation that returns the next
  action.

``admit`` may return, in place of a plain token, a :class:`Wait` (the driver waits for the real
token first), a :class:`Rejected` (a ``Wait`` whose wait raises the rejection it holds: the
pipeline that admits a call early raises it with no exception handler passed) or a
:class:`Hedge` (a ``Wait`` the async driver performs as a race of attempts of the rest of the
chain, :func:`~otel_resilience.engine.hedge.race`, in place of its one run; the sync driver
refuses it). All three are found by the one ``issubclass(type(token), Wait)`` check every
admitted token of a step that may wait gets (:attr:`Step.admit_waits`) unless it is ``None`` (a
plain admission, never a ``Wait``: no check), so a step that returns neither pays nothing for
them. A ``Wait`` may give an :class:`Answer` in place of the token: the driver returns its value
without running the rest of the chain at all (an injected outcome).

The drivers, :meth:`Step.execute` (async) and :meth:`Step.execute_sync`, are the only code that
sleeps, awaits, opens a deadline scope or calls the protected function. A step class inherits
them and never writes control flow of its own, so nothing in a pattern has a sync twin.

The contract a driver keeps for every step:

* a hook the step class does not override is never called (read once per class);
* for every token :meth:`Step.admit` returned (or :attr:`Step.standing` held), exactly one of
  :meth:`Step.on_success` (for a :class:`Counted` token with its count set: the count),
  :meth:`Step.on_failure` (or ``on_expired``, or, for a sync run that returned after the step's
  own deadline, ``on_late`` when the step overrides it) or :meth:`Step.on_cancel` runs per run of
  the rest of the chain, so a step that takes a permit or a slot gives it back on every path;
* a ``BaseException`` (cancellation, interrupt, the :class:`WrongDriver` signal) is never handed
  to ``on_failure``: it reaches ``on_cancel`` and is re-raised; so does, in the async driver, an
  error the call raised on its way out of its task's cancellation
  (:func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`), unchanged; an ``Exception``
  ``on_cancel`` raises is logged, never raised in its place (:func:`give_back`);
* the last step calls the protected function itself (no frame for the end of the chain), with
  ``fn(*args)`` when there is no keyword argument: ``fn(*args, **kwargs)`` copies even an
  empty ``kwargs`` into a new dict, about 190 instructions per execution.

Exceptions are the failure channel: an error travels up as itself, as the caller will see it.
"""

from __future__ import annotations

import inspect
import logging
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from otel_resilience.engine.actions import Action, Answer, Call, Counted, Rejected, Retry, Wait, _Acted
from otel_resilience.engine.admission import NOT_STANDING, Standing
from otel_resilience.engine.allocation import blank
from otel_resilience.engine.calling import NOT_SYNC, not_awaitable, not_sync_result, refuse_awaitable
from otel_resilience.engine.cancelling import cancelled_on_the_way
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import NO_RESULT
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.deadline import (
    DeadlineIgnored,
    DeadlineReachedError,
    StepDeadline,
    WaitDeadlineReachedError,
    deadline_ignored,
    deadline_reached,
    enforce_binding_deadline,
    passes_to_its_scope,
    publish_deadline,
    time_left,
    wait_sync_within_deadline,
    withdraw_deadline,
)
from otel_resilience.engine.hedge import Hedge, hold_back_enclosing, race
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.validation import check_duration, check_name, describe, discard, fail
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from otel_resilience.engine.context import ExecutionContext

__all__ = [
    "TERMINAL",
    "Action",
    "Answer",
    "Call",
    "Counted",
    "Hedge",
    "Rejected",
    "Retry",
    "Step",
    "Wait",
    "set_up",
]


_LOG: Final = logging.getLogger("otel_resilience")
_new_async_deadline: Final = blank(StepDeadline)
_start_async_deadline: Final = StepDeadline.start
"""A step's async deadline scope, made on every run: allocated in C, then started by its ``start``
(:mod:`~otel_resilience.engine.allocation`), with the step's timeout, checked when the step was
made. The sync scope is no object (:meth:`Step._scoped_sync`)."""


_Plan = list[Any]
"""What :meth:`Step.settle` records, ``[gate, entries, next, run, run_sync, inner, seconds, judges,
standing]``.

``next`` is the next step (``None`` for the last step, which calls the function itself), ``run``
and ``run_sync`` the functions that run it, called ``(next, ctx, None, inner)`` with ``inner`` its
plan: :meth:`Step.execute` and :meth:`Step.execute_sync` themselves (shared by every step: a plan
holds no object of its own), or, for a class with drivers of its own, a function that calls them
with the context only. So a driver reads no field of a step of another class (:meth:`Step.settle`).
A step's plan is one list for its life, filled in place by each ``settle()``: the step before holds it.

``gate`` says what the driver does before the first run: ``0`` nothing (no :meth:`Step.admit`,
or the pipeline admitted the step and its token is plain); ``1`` admit, the token is plain;
``2`` admit, the token may be a :class:`Wait`; ``3`` the pipeline admitted the step
(:attr:`Step.admits_early`) and the token it passed may be a :class:`Wait`. One number, so that
a step with nothing to do there pays one check. At ``1`` and ``2`` a set standing token
(:attr:`Step.standing`) admits the call without ``admit`` and is never checked for a ``Wait``.
"""


_CALLED: Final = (
    "admit",
    "on_success",
    "on_failure",
    "on_expired",
    "on_expired_ignored",
    "on_late",
    "on_cancel",
    "get_stats",
)
"""What is called on a step and never awaited: its hooks (:meth:`Step.__init_subclass__`), and the
``get_stats`` a pipeline's statistics read when the step has one."""
_PLAIN_HOOK: Final = (
    "a plain function (def): a step's hooks and get_stats are called, never awaited (a wait before a "
    "run is a Wait that admit returns, an async call after an outcome a Call)"
)


class Step:
    """One link of a pipeline: a pattern's rules, run by the two drivers it inherits.

    Subclasses set :attr:`kind`, give :attr:`name` and :attr:`config`, and override the hooks
    their pattern needs; the defaults admit every call and pass every outcome through.

    Attributes:
        kind: The pattern kind (``"circuit_breaker"``, ``"retry"`` …).
        next: The rest of the chain; :data:`TERMINAL` until linked.
        seconds: A deadline the driver opens around each run of the rest of the chain, or
            ``None`` (set by :meth:`__init__`) for none; a subclass sets it after.
        scope: The deadline's scope, as :class:`~otel_resilience.errors.OperationTimeoutError`
            reports it (``"total"`` or ``"attempt"``).
        clock: The clock of the deadline and of :class:`Retry` waits.
        entries: A counter the driver bumps once per execution the step admitted, after
            :meth:`admit` (re-runs are not entries), or ``None`` (set by :meth:`__init__`): a
            step that only counts its executions needs no ``admit``.
        judges_first_run: Whether :meth:`on_success` is called for the first run too (the
            default); a step that only cares how a run *it* started again ended (a recovery
            re-run) sets ``False``, and the drivers skip the call on every first success.
        admit_waits: Whether :meth:`admit` may return a :class:`Wait` (or a :class:`Hedge`):
            ``True`` by default; a class whose ``admit`` never does sets ``False``, and the
            drivers do not look at its tokens (a check of every admitted call).
        admits_early: Whether :meth:`admit` reads nothing of its context but
            :attr:`~otel_resilience.engine.context.ExecutionContext.sync` (``False`` by
            default). A pipeline whose first step says ``True`` admits each call itself before
            it makes the execution's context, handing ``admit`` a placeholder that holds only
            ``sync``, and passes the token to the step's driver (the drivers' ``token``
            argument), which waits for it when it is a :class:`Wait`: a call the step rejects
            (an open breaker, a full bulkhead) costs no context and no run of the driver
            (:mod:`~otel_resilience.engine.admission`). A class that overrides the drivers is
            never admitted so.
        standing: The step's standing admission (:class:`~otel_resilience.engine.admission.Standing`;
            ``NOT_STANDING``, set by :meth:`__init__`, for none): set it before it is linked.
        opens_attempts: Whether the step opens an attempt scope for each run of the rest of the
            chain (a retry, a hedging: ``False`` by default). A step outside it that runs the
            chain again (a recovery's re-run, a retry's attempt) leaves the run's scope to it
            (:meth:`scopes_inside`), so that no attempt has two; with none inside, it opens the
            scope itself.
        names_failures: Whether the step names the error of each failed run of the rest of the
            chain as the dependency's last error (a retry: ``False`` by default). A step outside
            it that runs the chain again (a recovery's re-run) leaves the naming to it, and names
            what it saw itself with none inside (``resilience.dependency.error.type``).
    """

    __slots__ = (
        "_admits",
        "_cancels",
        "_early",
        "_expires",
        "_fails",
        "_inner",
        "_judges",
        "_linked",
        "_plan",
        "_succeeds",
        "entries",
        "next",
        "seconds",
        "standing",
    )

    kind: ClassVar[str] = "step"
    scope: str = "total"
    clock: Clock = SYSTEM_CLOCK
    judges_first_run: ClassVar[bool] = True
    admit_waits: ClassVar[bool] = True
    admits_early: ClassVar[bool] = False
    opens_attempts: ClassVar[bool] = False
    names_failures: ClassVar[bool] = False

    _hooks: ClassVar[tuple[bool, bool, bool, bool, bool]] = (False, False, False, False, False)
    """Whether the class overrides admit, on_success, on_failure, on_expired and on_cancel."""
    _hears_late: ClassVar[bool] = False
    """Whether the class overrides :meth:`on_late` (read when a sync run returned late only)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Record once per class which hooks it overrides: the drivers skip the others.

        A hook is called, never awaited: one written ``async def`` (or as an async generator)
        would never run, its coroutine dropped (an ``admit`` that admits every call, an
        ``on_cancel`` that gives nothing back), wherever the class takes it from (its own body, a
        mixin that is no ``Step``, a ``staticmethod``). It is refused here, with ``TypeError`` naming
        ``Class.hook``: a wait before a run is a :class:`Wait` that ``admit`` returns, and an
        async call after an outcome a :class:`Call`. So is an async ``get_stats`` (the
        statistics would show its coroutine).
        """
        super().__init_subclass__(**kwargs)
        for hook in _CALLED:
            fn = getattr(cls, hook, None)  # inherited from a mixin, or unwrapped from a staticmethod
            if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                raise fail(cls.__name__, hook, _PLAIN_HOOK, fn, kind=TypeError)
        cls._hooks = (
            cls.admit is not Step.admit,
            cls.on_success is not Step.on_success,
            cls.on_failure is not Step.on_failure,
            cls.on_expired is not Step.on_expired,
            cls.on_cancel is not Step.on_cancel,
        )
        cls._hears_late = cls.on_late is not Step.on_late

    def __init__(self) -> None:
        self.next: Step = TERMINAL
        self.seconds: float | None = None
        self.entries: Counter | None = None
        # The class's hook flags, copied into slots: the drivers read them on every call, and
        # a slot is read faster than a class attribute through the instance. A step may turn a
        # hook off for an instance that does not need it (after this __init__).
        self._admits, self._succeeds, self._fails, self._expires, self._cancels = type(self)._hooks
        self._judges = self._succeeds and self.judges_first_run
        self._early = False  # set by the pipeline this step heads, when it admits the step's calls
        self._inner = False  # set when a pipeline links it inside another step: never admitted early
        self._linked = False  # set when a pipeline is built with it: it may wrap no other step then
        self._plan: _Plan = []  # filled in place by settle(): the step before this one holds it
        self.standing: Standing = NOT_STANDING

    def scopes_inside(self) -> bool:
        """Whether a step of the rest of the chain opens an attempt scope for each of its runs.

        The one rule by which a step that runs the chain again (a recovery's re-run, a retry's
        attempt) leaves the attempt's scope to a step inside it (:attr:`opens_attempts`: a
        retry, a hedging, whose race opens one for each of its attempts, the original too), so
        that no attempt has two scopes (two attempt spans with one number). Read when the step
        settles, never per call.
        """
        step = self.next
        while step is not TERMINAL and not step.opens_attempts:
            step = step.next
        return step is not TERMINAL

    def settle(self) -> _Plan:
        """Record what the drivers read of this step on every run; return it.

        ``[gate, entries, next, run, run_sync, inner, seconds, judges, standing]`` (:data:`_Plan`),
        read by the drivers in one load: their code is shared by every step class, and a site that
        loads a field from instances of many classes misses the interpreter's per-type cache on
        each (a five-step pipeline paid about 4 000 instructions per call for it). The plan is
        handed on: a driver runs the next step's driver with that step's plan, which it holds in
        its own, so only the first step's driver loads its plan from the step (one class per site).
        :meth:`PipelineBuilder.build` settles every step once it is linked, and a step run before
        that settles itself on its first run. A step that changes :attr:`next`, :attr:`seconds`,
        :attr:`entries`, :attr:`standing` or a hook flag afterwards calls it again.

        :attr:`seconds` is checked here, where the drivers take it, once per settling: a duration
        (``float`` or ``timedelta``, recorded as seconds), finite and ``>= 0``
        (:func:`~otel_resilience.engine.validation.check_duration`, naming ``<its class>.seconds``).

        Raises:
            TypeError: :attr:`seconds` is neither ``None`` nor a duration.
            ValueError: :attr:`seconds` is negative, not finite or above ``MAX_DURATION``.
        """
        seconds = self.seconds
        if seconds is not None:
            seconds = check_duration(type(self).__name__, "seconds", seconds, allow_zero=True)
        nxt = None if self.next is TERMINAL else self.next  # None: this step calls the function
        waits = self.admit_waits
        if not self._admits:
            gate = 0
        elif self._early:
            gate = 3 if waits else 0
        else:
            gate = 2 if waits else 1
        run = run_sync = inner = None
        if nxt is not None:
            cls, inner = type(nxt), nxt._plan
            run = Step.execute if cls.execute is Step.execute else _own_driver
            run_sync = Step.execute_sync if cls.execute_sync is Step.execute_sync else _own_driver_sync
        plan = self._plan
        plan[:] = (gate, self.entries, nxt, run, run_sync, inner, seconds, self._judges, self.standing)
        return plan

    name = ReadOnly[str]("kind", "The configured name of the instance this link belongs to.")

    @property
    def config(self) -> object:
        """The configuration this link runs with (for :meth:`Pipeline.describe`)."""
        return None

    # -- the rules: what a pattern overrides ----------------------------------------------------

    # The hooks take by position what the drivers pass by position: an override names its own.
    def admit(self, ctx: ExecutionContext, /) -> Any:  # noqa: ARG002 - the default admits every call
        """Admit a run of the rest of the chain: return a token for it, or the rejection.

        The token is handed back to the hook that ends the run. A :class:`Wait` makes the driver
        wait for the real token first. A rejection is raised, or returned as a :class:`Rejected`
        by a step whose ``admit`` may return a ``Wait`` (cheaper when its pipeline admits early).
        """
        return None

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any, /) -> Action:  # noqa: ARG002
        """Judge a run that returned ``result``; ``None`` returns it."""
        return None

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception, /) -> Action:  # noqa: ARG002
        """Judge a run that raised ``error``; ``None`` re-raises it. May raise in its place."""
        return None

    def on_expired(self, ctx: ExecutionContext, token: Any, error: OperationTimeoutError, /) -> Action:  # noqa: ARG002
        """Judge a run cut by this step's own deadline (:attr:`seconds`), before :meth:`on_failure`.

        An action decided here ends the run; ``None`` hands ``error`` on to :meth:`on_failure`
        like any other failure (a retry counts the attempt's timeout here and decides there).
        """
        return None

    def on_expired_ignored(self, ctx: ExecutionContext, token: Any, /) -> None:
        """Note that this step's own deadline fired and the run did not end by it.

        The run caught the deadline's cancellation and returned a value, which goes through as
        with ``asyncio.timeout`` (:meth:`on_success` judges it), or raised an error of its own in
        its place, which goes through likewise (:meth:`on_failure` judges it): the deadline still
        expired, for the step to count and report. A sync run cannot catch it: its late result is
        a timeout; an error of its own that it raises at or after the deadline (its socket's
        timeout) goes through, and the sync driver calls this as the async one does
        (:func:`~otel_resilience.engine.deadline.deadline_ignored`).
        """

    def on_late(
        self,
        ctx: ExecutionContext,
        token: Any,
        error: OperationTimeoutError,
        result: Any,  # noqa: ARG002
        /,
    ) -> Action:
        """Judge a sync run that returned ``result`` after this step's own deadline: the timeout ``error``.

        A thread cannot be cut: the sync driver drops such a result, and the run is a timeout
        (:meth:`on_expired` has heard of it and passed it on). A step that overrides this hook
        judges that timeout here, in place of :meth:`on_failure`, told of the result the driver
        drops once the hook returns (a retry lets it go as a retried result:
        ``retry_on_result.dropped``); ``None`` re-raises ``error``. A step that does not override
        it never hears of a late result: :meth:`on_failure` judges the timeout. The async driver
        drops no result: a run that returns after its deadline caught the deadline's
        cancellation, and its result goes through (:meth:`on_expired_ignored`).
        """
        return self.on_failure(ctx, token, error) if self._fails else None

    def on_cancel(self, ctx: ExecutionContext, token: Any, /, *, running: bool) -> None:
        """Give back what :meth:`admit` took: a ``BaseException`` ended the run.

        What ended the run goes on once this returns: an ``Exception`` raised here is logged on
        the ``otel_resilience`` logger, naming the step, and never replaces it (:func:`give_back`).

        Args:
            ctx: The execution.
            token: The run's token.
            running: ``True`` when the rest of the chain was running, ``False`` when the driver
                was waiting (a :class:`Retry` delay) or calling a hook for the step.
        """

    # -- the async driver -------------------------------------------------------------------------

    async def execute(self, ctx: ExecutionContext, token: Any = None, plan: _Plan | None = None) -> Any:
        """Run the rest of the chain under this step's rules (async driver); raise what they pass on.

        ``plan`` is this step's plan as the step before it holds it (:meth:`settle`), or ``None``.
        """
        # judges: the first run's; plan: this step's, handed on by the step before (settle)
        gate, entries, nxt, run, _, inner, seconds, judges, standing = plan or self._plan or self.settle()
        if gate:  # see _Plan
            if gate == 1:
                token = standing.token or self.admit(ctx)  # the step's standing admission, else ask
            elif gate == 3 or (token := standing.token) is None:  # may be a Wait (a standing one is not)
                if gate == 2:
                    token = self.admit(ctx)
                if (
                    token is not None
                    and issubclass(type(token), Wait)
                    and type(token := await self._waiting(ctx, token)) is Answer
                ):
                    return token.value
        if entries is not None:
            next(entries)
        action: Any = None  # a Retry decided by the last run, until its wait and hook are done
        while True:
            try:
                if action is not None:  # a Retry: its wait and hook, inside the try for on_cancel
                    token, judges = action.token, self._succeeds
                    if (action := await self._pause(action)) is not None:  # None: the run below runs
                        break  # the run would start at or past the effective deadline (_overran)
                if seconds is not None:
                    result = await self._scoped(ctx, token, seconds, nxt, run, inner)
                elif nxt is None:  # the last step calls the function: no frame for the end
                    awaitable = ctx.fn(*ctx.args, **ctx.kwargs) if ctx.kwargs else ctx.fn(*ctx.args)
                    if type(awaitable) is not CoroutineType and not inspect.isawaitable(awaitable):
                        raise not_awaitable(ctx.operation, awaitable)  # noqa: TRY301 - reaches on_cancel
                    result = await awaitable
                else:
                    result = await run(nxt, ctx, None, inner)
            except Exception as error:
                if cancelled_on_the_way(error):  # the task's cancellation, turned into an error
                    if self._cancels:
                        give_back(self, ctx, token, running=action is None)
                    raise
                if not self._fails or (action := self.on_failure(ctx, token, error)) is None:
                    raise
                if type(action) is Call:
                    try:
                        action = await self._resolve(ctx, token, action)
                    except BaseException:
                        action = None  # see _resolve: this frame is in the traceback
                        raise
                if type(action) is Answer:
                    return action.value
                if not isinstance(action, Retry):
                    raise _not_an_action(self, action) from error
                continue
            except BaseException:
                if self._cancels:  # not running: a Retry's wait or hook was
                    give_back(self, ctx, token, running=action is None)
                raise
            if seconds is not None and type(result) is _Acted:
                action = result.action
            elif (
                not judges  # a Counted token's success is counted while its count is set (no call):
                or (type(token) is Counted and (c := token.count) is not None and next(c) is not None)
                or (action := self.on_success(ctx, token, result)) is None
            ):
                return result
            if type(action) is Call:
                try:
                    action = await self._resolve(ctx, token, action)
                except BaseException:
                    action = None  # see _resolve: this frame is in the traceback
                    raise
            if type(action) is Answer:
                return action.value
            if not isinstance(action, Retry):
                raise _not_an_action(self, action)
        # The run would start at or past the effective deadline (_pause): as the sync driver does.
        if self._cancels:
            give_back(self, ctx, token, running=False)
        try:
            raise action
        finally:
            action = None  # the error's traceback holds this frame: not bound here (a cycle)

    def _waiting(self, ctx: ExecutionContext, token: Wait) -> Awaitable[Any]:
        """Return what the driver awaits for a :class:`Wait`: the wait itself, or a :class:`Hedge`'s race.

        In an attempt of a race (a forked context: its :attr:`~ExecutionContext.parent` is set)
        the wait is :func:`_attempt_wait`, which marks the attempt rejected by its own chain when
        the wait raises a rejection. An execution's own context (every policy without hedging)
        pays the one ``parent`` check, on this path only.
        """
        if issubclass(type(token), Hedge):
            return self._race(ctx, cast("Hedge", token))
        if ctx.parent is None:
            return token.wait()
        return _attempt_wait(ctx, token)

    async def _race(self, ctx: ExecutionContext, hedge: Hedge) -> Answer:
        """Run a :class:`Hedge`, a race of attempts of the rest of the chain: its outcome is the answer."""
        return Answer(await race(self, ctx, hedge))

    async def _pause(self, action: Retry) -> DeadlineReachedError | None:
        """Wait a :class:`Retry`'s delay, call its hook (awaited if awaitable); ``None`` once done.

        The deadline's timer cancels the wait, or an awaited hook, at the effective deadline. A
        hook that returns at or past it without the timer firing (one that blocked the loop),
        or no wait at all once the deadline passed (a slow ``on_retry`` before a zero backoff),
        ends the execution as in the sync driver (:meth:`_overran`).
        """
        if action.delay > 0:
            await self.clock.sleep(action.delay)
        if action.hook is not None:
            pending = action.hook()
            if inspect.isawaitable(pending):
                await pending
        elif action.delay > 0:
            return None  # waited: the deadline's timer would have cut the wait
        return self._overran(action)

    def _overran(self, action: Retry) -> DeadlineReachedError | None:
        """Both drivers' rule before a :class:`Retry`'s run: the error to end the execution with, or ``None``.

        Read after the hook, or when there was no wait: what ran since the step decided the
        :class:`Retry` (its :class:`Call` actions, such as a retry's ``on_retry``; the hook) may
        have run to or past the effective deadline, using the time the run counted on: that run
        would start too late, and is not started. The error, a
        :class:`~otel_resilience.engine.deadline.WaitDeadlineReachedError`, is what a wait the
        deadline cut ends with: the driver gives the step's ``on_cancel`` (not running), then
        raises it, and the scope that owns the deadline turns it into its own timeout. A wait
        needs no such reading: it ends at the deadline.
        """
        if time_left() > 0.0:
            return None
        clock = self.clock
        return deadline_reached(clock, clock.now(), action.delay, self.name, WaitDeadlineReachedError)

    async def _scoped(  # noqa: PLR0917 - positional: keyword arguments cost every execution
        self,
        ctx: ExecutionContext,
        token: Any,
        seconds: float,
        nxt: Step | None,
        run: Any,
        inner: _Plan | None,
    ) -> Any:
        """Run the rest of the chain under this step's deadline (the task is cancelled at it).

        Returns:
            The result, or an :class:`_Acted` when :meth:`on_expired` answered our own expiry.
        """
        deadline = _new_async_deadline()
        _start_async_deadline(deadline, self.clock, seconds, ctx.operation, self.scope)
        try:
            deadline.enter()  # `async with deadline:` without its two coroutines
            try:
                result = await (self.next.execute(ctx) if nxt is None else run(nxt, ctx, None, inner))
            except BaseException as escaped:
                try:
                    deadline.leave_failed(type(escaped))
                except DeadlineIgnored:
                    # Our timer fired and the run caught its cancellation, then raised an error of
                    # its own: that error goes through, and the deadline that expired is counted.
                    self.on_expired_ignored(ctx, token)
                raise
            deadline.leave(None)
            return result  # noqa: TRY300 - the excepts below are for leave() as well
        except DeadlineIgnored:
            # Our timer fired and the run caught its cancellation, then returned: its value goes
            # through, and the deadline that expired is the step's to count.
            self.on_expired_ignored(ctx, token)
            return result
        except OperationTimeoutError as error:
            # Raised by an inner scope (or the callee) unless our own timer fired.
            if not deadline.expired or not self._expires:
                raise
            if (action := self.on_expired(ctx, token, error)) is None:
                raise
            return _Acted(action)

    async def _resolve(self, ctx: ExecutionContext, token: Any, action: Action) -> Action:
        """Perform :class:`Call` actions until the step decides an :class:`Answer` or a :class:`Retry`.

        A call's value, or its ``Exception``, goes to its continuation (``then``); a call that
        ends in anything else (a cancellation, an interrupt) is :meth:`_call_stopped`, the rule
        the sync driver's :meth:`_resolve_sync` shares, and so is one whose error is its task's
        cancellation on its way out
        (:func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`: no thread is cancelled)
        or an enclosing scope's deadline, reached
        (:func:`~otel_resilience.engine.deadline.passes_to_its_scope`: a sync call that returned
        past it), which passes to its scope as in :meth:`_resolve_sync`.
        The two differ in the call only: here what it returns is awaited when it is awaitable.

        What escapes (a continuation's error, a cancellation) has a traceback that holds this
        frame and the caller's: neither keeps the calls, whose state and arguments often hold the
        failure being handled (a reference cycle through every frame of the failure otherwise).
        """
        call: Call | None = None
        try:
            while type(action) is Call:
                call = action
                try:
                    value = call.fn(*call.args, **call.kwargs)
                    if inspect.isawaitable(value):
                        value = await value
                except Exception as error:
                    # The task's cancellation turned into an error, or the deadline reached in a
                    # sync call's thread (a late return under an async scope): neither is judged.
                    if cancelled_on_the_way(error) or passes_to_its_scope(error):
                        self._call_stopped(ctx, token, call)
                        raise
                    action = call.then(ctx, call.state, None, error)
                except BaseException:
                    self._call_stopped(ctx, token, call)
                    raise
                else:
                    action = call.then(ctx, call.state, value, None)
        except BaseException:
            call = action = value = None
            raise
        # Decided: an error a call raised before may be kept by a later call's state (the errors
        # of MULTIPLE_ATTEMPTS), and its traceback holds this frame: not bound here (a cycle).
        call = None
        return action

    def _call_stopped(self, ctx: ExecutionContext, token: Any, call: Call) -> None:
        """A :class:`Call` ended in a cancellation or an interrupt: both drivers' rule, before re-raising.

        The call's :attr:`~Call.cancelled` hears of it first, then the step's :meth:`on_cancel`
        (not running: the rest of the chain was not).
        """
        if call.cancelled is not None:
            call.cancelled(ctx, call.state)
        if self._cancels:
            give_back(self, ctx, token, running=False)

    # -- the sync driver --------------------------------------------------------------------------

    def execute_sync(self, ctx: ExecutionContext, token: Any = None, plan: _Plan | None = None) -> Any:
        """Run the rest of the chain under this step's rules in this thread (sync driver).

        ``plan`` is this step's plan as the step before it holds it (:meth:`settle`), or ``None``.
        """
        # judges: the first run's; plan: this step's, handed on by the step before (settle)
        gate, entries, nxt, _, run, inner, seconds, judges, standing = plan or self._plan or self.settle()
        if gate:  # see _Plan
            if gate == 1:
                token = standing.token or self.admit(ctx)  # the step's standing admission, else ask
            elif gate == 3 or (token := standing.token) is None:  # may be a Wait (a standing one is not)
                if gate == 2:
                    token = self.admit(ctx)
                if (
                    token is not None
                    and issubclass(type(token), Wait)
                    and type(token := token.wait_sync()) is Answer
                ):
                    return token.value
        if entries is not None:
            next(entries)
        action: Any = None  # a Retry decided by the last run, until its wait and hook are done
        while True:
            try:
                if action is not None:  # a Retry: its wait and hook, inside the try for on_cancel
                    token, judges = action.token, self._succeeds
                    if (action := self._pause_sync(action)) is not None:  # None: the run below runs
                        break  # the effective deadline cut the wait, or passed before the run
                if seconds is not None:
                    result = self._scoped_sync(ctx, token, seconds, nxt, run, inner)
                elif nxt is None:  # the last step calls the function: no frame for the end
                    result = ctx.fn(*ctx.args, **ctx.kwargs) if ctx.kwargs else ctx.fn(*ctx.args)
                    if type(result) in NOT_SYNC:
                        raise not_sync_result(ctx.operation, result)  # noqa: TRY301 - reaches on_cancel
                else:
                    result = run(nxt, ctx, None, inner)
            except Exception as error:
                if not self._fails or (action := self.on_failure(ctx, token, error)) is None:
                    raise
                if type(action) is Call:
                    try:
                        action = self._resolve_sync(ctx, token, action)
                    except BaseException:
                        action = None  # see _resolve_sync: this frame is in the traceback
                        raise
                if type(action) is Answer:
                    return action.value
                if not isinstance(action, Retry):
                    raise _not_an_action(self, action) from error
                continue
            except BaseException:
                if self._cancels:  # not running: a Retry's wait or hook was
                    give_back(self, ctx, token, running=action is None)
                raise
            if seconds is not None and type(result) is _Acted:
                if (action := result.action) is None:  # a late result, for the step to judge (on_late)
                    action = self._late(ctx, token, result)
            elif (
                not judges  # a Counted token's success is counted while its count is set (no call):
                or (type(token) is Counted and (c := token.count) is not None and next(c) is not None)
                or (action := self.on_success(ctx, token, result)) is None
            ):
                return result
            if type(action) is Call:
                try:
                    action = self._resolve_sync(ctx, token, action)
                except BaseException:
                    action = None  # see _resolve_sync: this frame is in the traceback
                    raise
            if type(action) is Answer:
                return action.value
            if not isinstance(action, Retry):
                raise _not_an_action(self, action)
        # The effective deadline cut a Retry's wait or passed before its run (_pause_sync): as the async
        # driver's cancellation.
        if self._cancels:
            give_back(self, ctx, token, running=False)
        try:
            raise action
        finally:
            action = None  # the error's traceback holds this frame: not bound here (a cycle)

    def _pause_sync(self, action: Retry) -> DeadlineReachedError | None:
        """Wait a :class:`Retry`'s delay, call its hook (never awaitable here); ``None`` once done.

        The wait lasts at most until the effective deadline (a slow ``on_retry`` may have used
        the time the retry counted on): then it returns the error to raise, a
        :class:`~otel_resilience.engine.deadline.WaitDeadlineReachedError`, and the hook is
        not called. The driver ends the execution with it as the async driver's wait ends at
        the deadline's cancellation: the step's ``on_cancel`` (not running), then the error,
        which the scope owning the deadline turns into its timeout. A hook that returns at or
        past the deadline (a thread cannot be cut, where the deadline cancels an awaited hook),
        or no wait at all once the deadline passed (a slow ``on_retry`` before a zero backoff),
        ends it the same way (:meth:`_overran`): the run would start too late.
        """
        if action.delay > 0:
            cut = wait_sync_within_deadline(self.clock, action.delay, self.name)
            if cut is not None:
                return cut
        if action.hook is not None:
            refuse_awaitable(action.hook_name, action.hook())
        elif action.delay > 0:
            return None  # waited: the wait ends at the deadline, and nothing ran since
        return self._overran(action)

    def _scoped_sync(  # noqa: PLR0917 - positional: keyword arguments cost every execution
        self,
        ctx: ExecutionContext,
        token: Any,
        seconds: float,
        nxt: Step | None,
        run: Any,
        inner: _Plan | None,
    ) -> Any:
        """Run the rest of the chain with this step's deadline published; a late result is a timeout.

        The scope of :class:`~otel_resilience.engine.deadline.SyncDeadline`, opened by its rules
        (:func:`~otel_resilience.engine.deadline.publish_deadline`, then
        :func:`~otel_resilience.engine.deadline.withdraw_deadline`, or
        :func:`~otel_resilience.engine.deadline.enforce_binding_deadline` where an earlier
        deadline binds the block) without making the object.

        Returns:
            The result, or an :class:`_Acted` when :meth:`on_expired` answered our own expiry.
        """
        clock = self.clock
        deadline, cell, previous = publish_deadline(clock, seconds)
        try:
            result = self.next.execute_sync(ctx) if nxt is None else run(nxt, ctx, None, inner)
        except BaseException as escaped:
            if cell is None:  # an earlier deadline binds the block: its owner judges what escaped
                raise
            if not withdraw_deadline(cell, previous, deadline, clock, type(escaped)):
                if deadline_ignored(clock, deadline, type(escaped)):
                    # An error of the run's own at or after our deadline (its socket's timeout):
                    # it goes through, and the deadline that expired is counted, as in a task.
                    self.on_expired_ignored(ctx, token)
                raise
            result = NO_RESULT  # the chain's engine wait reached our deadline: its error is dropped
        else:
            if cell is None:  # an earlier deadline binds the block: its owner judges it
                if not enforce_binding_deadline(clock, previous, deadline, seconds, ctx.operation):
                    return result
            elif not withdraw_deadline(cell, previous, deadline, clock, None):
                return result
        # Our own deadline passed: what the chain returned is dropped, a timeout; a step that hears
        # of late results (on_late) is handed it, by the driver, outside the run. Never kept by
        # this frame, which the timeout's traceback holds.
        error = OperationTimeoutError(ctx.operation, seconds, self.scope)
        if self._expires and (action := self.on_expired(ctx, token, error)) is not None:
            return _Acted(action)
        if result is not NO_RESULT and self._hears_late:
            return _Acted(None, error, result)
        result = None
        try:
            raise error from None
        finally:
            del error  # its traceback holds this frame: not bound here (a cycle)

    def _late(self, ctx: ExecutionContext, token: Any, late: _Acted) -> Action:
        """Have the step judge a sync run that returned after its own deadline (:meth:`on_late`).

        Called by the sync driver outside the run, as :meth:`on_failure` is for a failed one, so
        that what the hook raises ends the execution and is not judged as the run's outcome.

        Returns:
            The step's action; the timeout is re-raised when it decided none.
        """
        error, result = late.error, late.late
        late.error = late.late = None
        try:
            action = self.on_late(ctx, token, cast("OperationTimeoutError", error), result)
        finally:
            result = None  # dropped: not kept by this frame, which a traceback through it holds
        if action is None:
            try:
                raise cast("OperationTimeoutError", error) from None
            finally:
                error = None  # its traceback holds this frame: not bound here (a cycle)
        return action

    def _resolve_sync(self, ctx: ExecutionContext, token: Any, action: Action) -> Action:
        """Perform :class:`Call` actions in this thread (an awaitable is refused as the call's error).

        The rules of :meth:`_resolve`; what escapes drops the calls, as there. An enclosing
        scope's deadline, reached in the call
        (:func:`~otel_resilience.engine.deadline.passes_to_its_scope`), is this thread's form of
        the cancellation that ends an async call at that deadline: it is :meth:`_call_stopped`
        and passes to its scope, never judged by the continuation (which would answer it, or
        run the next fallback function past the deadline).
        """
        call: Call | None = None
        try:
            while type(action) is Call:
                call = action
                try:
                    value = refuse_awaitable(call.what, call.fn(*call.args, **call.kwargs))
                except Exception as error:
                    if passes_to_its_scope(error):  # the deadline ended the call, as a task's cancellation
                        self._call_stopped(ctx, token, call)
                        raise
                    action = call.then(ctx, call.state, None, error)
                except BaseException:
                    self._call_stopped(ctx, token, call)
                    raise
                else:
                    action = call.then(ctx, call.state, value, None)
        except BaseException:
            call = action = value = None
            raise
        call = None  # see _resolve: a call's state may keep an error whose traceback holds this frame
        return action


def give_back(step: Step, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
    """Call ``step``'s :meth:`Step.on_cancel`: every caller's rule (both drivers, a guarded block).

    Called where a ``BaseException`` (a cancellation, an interrupt) or the effective deadline
    ends a run, which goes on once the hook returns. An ``Exception`` the hook raises would take
    its place (an enclosing ``asyncio.timeout`` would not see its cancellation, a cancelled task
    would end with an error, an interrupt would be lost): it is logged, with its traceback, on
    the ``otel_resilience`` logger naming the step, and what ended the run goes on unchanged. A
    ``BaseException`` the hook raises goes through (a cancellation or an interrupt of its own).
    A failure path only: a run that ends normally never comes here.
    """
    try:
        step.on_cancel(ctx, token, running=running)
    except Exception:  # noqa: BLE001 - the cancellation goes on: the hook's error is logged
        _LOG.warning(
            "%s %r: on_cancel raised (ignored: what ended the run goes on)",
            step.kind,
            step.name,
            exc_info=True,
        )


def _not_an_action(step: Step, decided: object) -> TypeError:
    """Return the error for a decision that is no action: both drivers' rule, after an outcome.

    :meth:`Step.on_success`, :meth:`Step.on_failure` and :meth:`Step.on_expired` return ``None``,
    an :class:`Answer`, a :class:`Retry` or a :class:`Call`, and a ``Call``'s continuation one of
    the last three. Anything else (``True`` for "handled", the result itself, a continuation's
    ``None``) would run the chain again with nothing decided (a loop when the step decides it
    again), so the drivers refuse it once ``None``, ``Answer`` and ``Call`` are ruled out: a
    check only where a step decided something. A coroutine decided (an ``async def`` helper's,
    or continuation's) is closed (:func:`~otel_resilience.engine.validation.discard`): it never runs.
    """
    discard(decided)
    msg = (
        f"{type(step).__name__}({step.name!r}) decided {describe(decided)}: a step's hook returns None, "
        "an Answer, a Retry or a Call (and a Call's continuation an Answer, a Retry or another Call)"
    )
    return TypeError(msg)


def set_up(step: Step) -> Step:
    """Return ``step`` if it is ready to be linked; raise naming the fix otherwise.

    A subclass whose ``__init__`` forgets ``super().__init__()`` has none of the fields the
    drivers and the builder read: said here, where it is linked, rather than as an
    ``AttributeError`` about a private field (a ``TypeError``). Its :attr:`Step.kind` and
    :attr:`Step.name` are shown as names (the statistics of its pipeline, error messages, and the
    telemetry it reports as ``resilience.pattern`` and ``resilience.name``): each must be a name
    (:func:`~otel_resilience.engine.validation.check_name`, a ``TypeError`` or ``ValueError``
    naming ``<its class>.kind`` or ``.name``). The one check of every step, a library pattern's
    or a user's, once per link, never per call.
    """
    try:
        step._linked  # noqa: B018 - the read is the check: set by Step.__init__ only
    except AttributeError:
        msg = (
            f"{type(step).__name__} was never set up as a Step: its __init__ must call "
            "super().__init__() (Step.__init__ sets what the drivers read)"
        )
        raise TypeError(msg) from None
    owner = type(step).__name__
    check_name(owner, "kind", step.kind)
    check_name(owner, "name", step.name)
    return step


def _own_driver(step: Step, ctx: ExecutionContext, _token: None, _plan: object) -> Awaitable[Any]:
    """Run a next step whose class has an async driver of its own: with the context only.

    The drivers run a next step as ``run(step, ctx, None, plan)`` (:meth:`Step.settle`); a class's
    own ``execute`` is called as it was written to be called.
    """
    return step.execute(ctx)


def _own_driver_sync(step: Step, ctx: ExecutionContext, _token: None, _plan: object) -> Any:
    """Run a next step whose class has a sync driver of its own: with the context only."""
    return step.execute_sync(ctx)


async def _attempt_wait(ctx: ExecutionContext, token: Wait) -> Any:
    """Wait for a step's admission in an attempt of a race; a rejection marks the attempt rejected.

    A rejection raised here comes from a step of the chain the attempt runs (the policy's own
    breaker, bulkhead, rate limiter), never from a function the attempt called (a policy of its
    own, around an alternative endpoint, rejects in a context of its own): the race reads the
    mark (:attr:`ExecutionContext.rejected`) to start no further hedge for it.

    While it waits for an admission (:attr:`Wait.admission`: a queue, a permit) the attempt is
    marked (:attr:`ExecutionContext.queued`), and stays so when the wait is stopped (cancelled,
    interrupted): a race that ends meanwhile reads that it never ran its action
    (:func:`~otel_resilience.engine.hedge.held_back`, which also tells whether the chain ran
    before). Set here only, on a wait: an attempt admitted at once pays nothing for it. An
    attempt of a race that runs inside an attempt of another (two hedgings in one chain) is
    counted held back in the enclosing attempts too
    (:func:`~otel_resilience.engine.hedge.hold_back_enclosing`).
    """
    held = ctx.queued = token.admission
    nested = held and cast("ExecutionContext", ctx.parent).parent is not None
    if nested:
        hold_back_enclosing(ctx, 1)
    try:
        admitted = await token.wait()
    except Exception as error:
        ctx.queued = False
        if isinstance(error, ExecutionRejectedError):
            ctx.rejected = True  # turned away: it ran nothing, and stays counted so in the enclosing ones
        elif nested:
            hold_back_enclosing(ctx, -1)
        raise
    ctx.queued = False
    if nested:
        hold_back_enclosing(ctx, -1)
    return admitted


class _Terminal(Step):
    """The end of every chain: calls the protected function (when no step before it does)."""

    __slots__ = ()

    kind: ClassVar[str] = "terminal"

    def __init__(self) -> None:
        self.next = self

    async def execute(self, ctx: ExecutionContext, token: Any = None, plan: Any = None) -> Any:  # noqa: ARG002 - never admits
        awaitable = ctx.fn(*ctx.args, **ctx.kwargs) if ctx.kwargs else ctx.fn(*ctx.args)
        if type(awaitable) is not CoroutineType and not inspect.isawaitable(awaitable):
            raise not_awaitable(ctx.operation, awaitable)
        return await awaitable

    def execute_sync(self, ctx: ExecutionContext, token: Any = None, plan: Any = None) -> Any:  # noqa: ARG002 - never admits
        result = ctx.fn(*ctx.args, **ctx.kwargs) if ctx.kwargs else ctx.fn(*ctx.args)
        if type(result) in NOT_SYNC:
            raise not_sync_result(ctx.operation, result)
        return result


TERMINAL: Final[Step] = _Terminal()
"""The shared end of every chain."""
