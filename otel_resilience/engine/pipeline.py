"""Pipelines: strategies linked once, outer to inner, run by an async and a sync driver.

``PipelineBuilder(name).add(a).add(b).build()`` gives a :class:`Pipeline` in which ``a`` wraps
``b`` wraps the protected function (the order of addition runs outer -> inner). The builder
refuses a strategy that is already linked elsewhere (a built pipeline's innermost strategy may
end or head another pipeline, never wrap a strategy there) and refuses ``add`` after ``build``.

A pipeline is one *logical execution* for telemetry: it opens the execution scope (a span, the
duration histogram) and counts the outcome in plain integers (:class:`PipelineStats`). Each
execution gets its own :class:`~otel_resilience.engine.context.ExecutionContext`, which numbers
its attempts and carries the pipeline's cap on attempts in total (``max_attempts``).

A function that does not fit the driver (a plain function given to :meth:`Pipeline.execute`, a
coroutine function given to :meth:`Pipeline.execute_sync`) is refused with ``TypeError``: the
last link raises :class:`~otel_resilience.engine.strategy.WrongDriver`, which no strategy holds
against the dependency, retries, recovers or answers with a fallback (a breaker ignores it, a
retry counts an error it does not retry, a recovery a failed re-run, a hedging a failed
execution, with no hedge after it); the pipeline raises the ``TypeError`` in its place (counted
as a failed execution).

A head the pipeline admits early (:attr:`~otel_resilience.engine.step.Step.admits_early`) has
two shortcuts while no execution scope is open. It is admitted before the pipeline's exception
handler is entered: a :class:`~otel_resilience.engine.actions.Rejected` token it returns is
counted as a rejection and its error raised there, passing no handler (what ``admit`` raises is
counted by :meth:`Pipeline._admit`'s). A *lone* head (it calls the function itself, with no
deadline and no entry count) admitted by its standing token has its call made by the pipeline,
and a success its :class:`~otel_resilience.engine.actions.Counted` token counts needs no context
at all; anything else goes to the head's driver (:class:`~otel_resilience.engine.calling.Replay`).
"""

from __future__ import annotations

import itertools
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Final, NoReturn, ParamSpec, TypeVar, overload

from otel_resilience.engine.actions import Counted, Rejected
from otel_resilience.engine.admission import UNSTARTED, UNSTARTED_SYNC
from otel_resilience.engine.calling import (
    NOT_SYNC,
    NeverReturns,
    Replay,
    SyncCallOfCoroutineFunction,
    WrongDriver,
    awaited,
    handled_error,
    not_on_asyncio,
)
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext, new_context, start_context
from otel_resilience.engine.deadline import ended_by_deadline
from otel_resilience.engine.events import ExecutionListener, Outcome, StrategyTelemetry, TelemetrySource
from otel_resilience.engine.guard import Guard  # its home before engine/guard.py: still importable here
from otel_resilience.engine.protecting import check_protectable, protect_with, standalone  # their home before
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import PIPELINES
from otel_resilience.engine.stats import CUT, OUTCOME_OF, PipelineStats, classify_error
from otel_resilience.engine.step import TERMINAL, Step, set_up
from otel_resilience.engine.validation import check_int, check_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Mapping

    _Fn = Callable[..., Any]
    _Args = tuple[Any, ...]
    _Kwargs = Mapping[str, Any]

__all__ = [
    "ExecutionHandles",
    "Guard",
    "Pipeline",
    "PipelineBuilder",
    "PipelineStats",
    "check_protectable",
    "classify_error",
    "protect_with",
    "standalone",
]

_FAILURE: Final = Outcome.FAILURE
_SUCCESS: Final = Outcome.SUCCESS
_REJECTED: Final = Outcome.REJECTED
_CANCELLED: Final = Outcome.CANCELLED


P = ParamSpec("P")
R = TypeVar("R")

ExecutionHandles = list[tuple[ExecutionListener, object]]
"""What :meth:`StrategyTelemetry.start_execution` returns: the open scopes, to close at the end."""


class Pipeline:
    """Linked strategies with an async driver (:meth:`execute`) and a sync one (:meth:`execute_sync`).

    A pipeline is exported from the moment it is made: it registers itself in
    :data:`~otel_resilience.engine.registry.PIPELINES`, unless made with ``register=False`` by an
    owner that puts it there itself, in one step with what it replaces
    (:meth:`~otel_resilience.engine.registry.Registry.replace`).

    Attributes:
        name: The pipeline's (policy's) name: the operation name in telemetry.
        stats: Outcome counts.
        telemetry: The facade the pipeline reports executions through.
        max_attempts: Attempts one execution may make in total (retry attempts and recovery
            re-runs together), or ``None`` for no cap.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_early",
        "_head",
        "_lone_head",
        "_strategies",
        "max_attempts",
        "name",
        "stats",
        "telemetry",
    )

    def __init__(
        self,
        name: str,
        strategies: tuple[Step, ...],
        *,
        clock: Clock = SYSTEM_CLOCK,
        source: TelemetrySource | None = None,
        max_attempts: int | None = None,
        register: bool = True,
    ) -> None:
        self.name = name
        self.max_attempts = max_attempts
        self._strategies = strategies
        self._head: Step = strategies[0] if strategies else TERMINAL
        # The pipeline admits its first step's calls itself, before it makes their context,
        # when the step's admission reads nothing of it (a breaker, a bulkhead, a rate limiter):
        # a rejection then costs no context and no run of the step's driver (Step.admits_early).
        # Not a step linked inside another one, nor one whose class runs its own driver.
        head = self._head
        cls = type(head)
        early = (
            head is not TERMINAL
            and head._admits
            and head.admits_early
            and not head._inner
            and cls.execute is Step.execute
            and cls.execute_sync is Step.execute_sync
        )
        self._early: Step | None = head if early else None
        # That head is lone when it calls the function itself with no deadline and no entry
        # count: while its standing token admits, the pipeline makes the call (_lone_sync).
        self._lone_head = early and head.next is TERMINAL and head.seconds is None and head.entries is None
        if early and not head._early:
            head._early = True
            head.settle()
        self._clock = clock
        self.stats = PipelineStats()
        self.telemetry = StrategyTelemetry(source or TelemetrySource("pipeline", name, name))
        if register:
            PIPELINES.register(self)

    strategies = ReadOnly[tuple[Step, ...]]("_strategies", "The strategies, outer to inner.")

    def carrier(self) -> Pipeline:
        """Return an empty, unregistered pipeline exported as this one's series (its name and source).

        For an owner that keeps this pipeline's executions exported beyond its life: the carrier
        counts in this pipeline's stats, or takes its counts, and the owner puts it in the
        registry itself, in one step with what it replaces
        (:meth:`~otel_resilience.engine.registry.Registry.replace`).
        """
        return Pipeline(self.name, (), clock=self._clock, source=self.telemetry.source, register=False)

    def relink(self, built: Pipeline) -> None:
        """Run ``built``'s strategies from now on, in place of this pipeline's: for a pattern's reload.

        A pattern's own pipeline is held by whatever was made on it (the functions its
        ``protect`` decorated, its guards): when the pattern is reconfigured, it stays the same
        object, with its stats and its place in the registry, and runs the links built under
        the new config (:func:`~otel_resilience.engine.protecting.rebuild_standalone`). A call
        in flight ends in the strategies it started with. ``built`` is made for this place (the
        same name and source, unregistered) by the same owner, so its head is admitted early
        exactly when this one's is; it is not used afterwards. Its clock (that of a pattern moved
        to another: :func:`~otel_resilience.engine.clock.follow_process_clock`) times the
        executions from then on.

        Nothing is added to a call: the call reads each attribute once, and they are written so
        that it never pairs a head with a lone flag the head does not have (:attr:`_lone_head`
        is cleared first and ends as both heads' flag: a call that reads one head and then the
        flag finds it ``False`` or true of both).
        """
        lone = self._lone_head and built._lone_head
        self._lone_head = False
        self._clock = built._clock
        self._strategies = built._strategies
        self._head = built._head
        self._early = built._early
        self._lone_head = lone

    def describe(self) -> tuple[tuple[str, str, object], ...]:
        """Return ``(kind, name, config)`` for every strategy, outer to inner."""
        return tuple((s.kind, s.name, s.config) for s in self._strategies)

    def _failed(
        self, caught: BaseException, handles: ExecutionHandles | None = None, start: float = 0.0
    ) -> None:
        """Count an execution that raised ``caught`` and close its scope ``handles``, if any.

        A function that does not fit the driver (:class:`WrongDriver`) is counted as a failure
        and its ``TypeError`` raised from here (:meth:`_refused`), in place of the signal;
        anything else returns, and the driver re-raises it.
        """
        if type(caught) is WrongDriver:
            self._refused(caught, handles, start)
        try:
            outcome = OUTCOME_OF[type(caught)]  # classify_error(caught), with no call
        except TypeError:  # a class that cannot be hashed
            outcome = classify_error(caught)
        error: BaseException | None = caught
        if (outcome is _CANCELLED or outcome is _REJECTED) and ended_by_deadline(caught):
            outcome, error = CUT  # a timeout, in both drivers: the attempts' rule (attempt_ended)
        next(self.stats.tally[outcome])
        if handles:
            self.telemetry.end_execution(handles, outcome, self._clock.now() - start, error)

    def _failed_async(
        self, caught: BaseException, handles: ExecutionHandles | None = None, start: float = 0.0
    ) -> None:
        """:meth:`_failed` for the async driver, which needs asyncio's event loop to wait and cancel.

        Counted as :meth:`_failed` counts it; then, where no asyncio loop runs in this thread
        (trio, another event loop: :func:`~otel_resilience.engine.calling.not_on_asyncio`), the
        ``RuntimeError`` a wait of the chain met is raised from here as the error that says what
        the async API runs on.
        """
        self._failed(caught, handles, start)
        if (error := not_on_asyncio(caught)) is not None:
            try:
                raise error from caught
            finally:
                del error  # its traceback holds this frame: not bound here (a cycle)

    def _refused(self, signal: WrongDriver, handles: ExecutionHandles | None, start: float) -> NoReturn:
        """Count a function that does not fit the driver as a failure and raise its ``TypeError``.

        The error is not left bound to a local (its traceback holds this frame: a cycle).
        """
        error = signal.as_type_error()
        try:
            next(self.stats.tally[_FAILURE])
            if handles:
                self.telemetry.end_execution(handles, _FAILURE, self._clock.now() - start, error)
            raise error from None
        finally:
            del error

    def _admit(self, head: Step, ctx: ExecutionContext) -> Any:
        """Ask the head admitted early for its token; what its ``admit`` raises is counted, then passes."""
        try:
            return head.admit(ctx)
        except BaseException:
            (self._failed if ctx.sync else self._failed_async)(handled_error())
            raise

    def _returned(self, handles: ExecutionHandles, start: float, ctx: ExecutionContext) -> None:
        """Count an execution that returned and close its scope ``handles``."""
        outcome = ctx.outcome
        next(self.stats.tally[outcome])
        self.telemetry.end_execution(handles, outcome, self._clock.now() - start, None)

    async def execute(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` through every strategy.

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        return await self.execute_packed(fn, args, kwargs)

    async def execute_packed(
        self, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> R:
        """:meth:`execute` with the arguments as they are held: one tuple and one mapping.

        What every caller in the library uses: forwarding ``*args, **kwargs`` repacks both at
        each hop, so they are packed once, where the user's call is taken.

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        quiet = self.telemetry.hub.quiet  # read, then called: a call through a slot is not specialised
        if not quiet() and (handles := self.telemetry.start_execution(self.name)):
            return await self.execute_in_scope(handles, fn, args, kwargs)  # type: ignore[no-any-return]
        if (head := self._early) is not None:  # it admits the call before its context is made
            if (token := head.standing.token) is not None and self._lone_head:  # made here
                return await self._lone(head, token, fn, args, kwargs)  # type: ignore[no-any-return]
            if type(token := token or self._admit(head, UNSTARTED)) is Rejected:
                next(self.stats.tally[_REJECTED])  # a rejection by definition
                raise token.take() from None  # here: no exception handler passed
        try:
            start_context(ctx := new_context(), fn, args, kwargs, self.name, self.max_attempts, False)  # noqa: FBT003
            result = await (self._head.execute(ctx) if head is None else head.execute(ctx, token))
        except BaseException:  # not `as`: its clean-up is a second handler the error passes
            self._failed_async(handled_error())
            raise
        next(self.stats.tally[ctx.outcome])
        return result  # type: ignore[no-any-return]

    async def execute_in_scope(self, handles: ExecutionHandles, fn: _Fn, args: _Args, kwargs: _Kwargs) -> Any:
        """Run ``fn(*args, **kwargs)`` through every strategy inside the scope ``handles``, and close it.

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        start = self._clock.now()
        try:  # in a scope the context is made first: beside the scope's, its cost is nothing
            start_context(ctx := new_context(), fn, args, kwargs, self.name, self.max_attempts, False)  # noqa: FBT003
            head = self._early
            result = await (
                self._head.execute(ctx) if head is None else head.execute(ctx, head.admit(UNSTARTED))
            )
        except BaseException:
            self._failed_async(handled_error(), handles, start)
            raise
        self._returned(handles, start, ctx)
        return result

    async def _lone(self, head: Step, token: Any, fn: _Fn, args: _Args, kwargs: _Kwargs) -> Any:
        """The async twin of :meth:`_lone_sync` (raises what the head's driver raises)."""
        try:
            awaitable = fn(*args, **kwargs) if kwargs else fn(*args)
            if type(awaitable) is CoroutineType:  # anything else: the driver checks it and awaits it
                result = await awaitable
                if type(token) is Counted and (count := token.count) is not None:
                    next(count)
                    next(self.stats.tally[_SUCCESS])
                    return result
                awaitable = awaited(result)
        except BaseException as error:  # noqa: BLE001 - the driver raises it
            replay = Replay(fn, None, error)
        else:
            replay = Replay(fn, awaitable, None)
        start_context(ctx := new_context(), replay, args, kwargs, self.name, self.max_attempts, False)  # noqa: FBT003
        replay.ctx = ctx
        try:
            result = await head.execute(ctx, token)
        except BaseException:
            self._failed_async(handled_error())
            raise
        next(self.stats.tally[ctx.outcome])
        return result

    def _lone_sync(self, head: Step, token: Any, fn: _Fn, args: _Args, kwargs: _Kwargs) -> Any:
        """Make the call of a lone head its standing token admitted; make a context only for its driver.

        A success the token counts (a :class:`Counted` whose count is set when the call returns)
        is counted here, with no context and no run of the driver. Anything else (a failure, a
        success the head judges, a result the driver refuses) goes to the head's driver as the
        context's function (:class:`Replay`): every rule that follows is the driver's and the head's.
        The execution's outcome is counted here either way (what the driver raises by :meth:`_failed`).
        """
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as error:  # noqa: BLE001 - the driver raises it
            replay = Replay(fn, None, error)
        else:
            if type(token) is Counted and (count := token.count) is not None and type(result) not in NOT_SYNC:
                next(count)
                next(self.stats.tally[_SUCCESS])
                return result
            replay = Replay(fn, result, None)
        start_context(ctx := new_context(), replay, args, kwargs, self.name, self.max_attempts, True)  # noqa: FBT003
        replay.ctx = ctx
        try:
            result = head.execute_sync(ctx, token)
        except BaseException:
            self._failed(handled_error())
            raise
        next(self.stats.tally[ctx.outcome])
        return result

    @overload
    def execute_sync(
        self, fn: Callable[P, NeverReturns], /, *args: P.args, **kwargs: P.kwargs
    ) -> NeverReturns: ...
    @overload
    def execute_sync(
        self, fn: Callable[P, Coroutine[Any, Any, Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> SyncCallOfCoroutineFunction: ...
    @overload
    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` through every strategy, in the calling thread.

        Typed as :meth:`Pattern.run_sync <otel_resilience.engine.facade.Pattern.run_sync>` is.

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        return self.execute_packed_sync(fn, args, kwargs)

    def execute_packed_sync(
        self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> R:
        """:meth:`execute_sync` with the arguments as they are held (see :meth:`execute_packed`).

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        quiet = self.telemetry.hub.quiet  # read, then called: a call through a slot is not specialised
        if not quiet() and (handles := self.telemetry.start_execution(self.name)):
            return self.execute_in_scope_sync(handles, fn, args, kwargs)  # type: ignore[no-any-return]
        if (head := self._early) is not None:  # it admits the call before its context is made
            if (token := head.standing.token) is not None and self._lone_head:  # made here
                return self._lone_sync(head, token, fn, args, kwargs)  # type: ignore[no-any-return]
            if type(token := token or self._admit(head, UNSTARTED_SYNC)) is Rejected:
                next(self.stats.tally[_REJECTED])  # a rejection by definition
                raise token.take() from None  # here: no exception handler passed
        try:
            start_context(ctx := new_context(), fn, args, kwargs, self.name, self.max_attempts, True)  # noqa: FBT003
            result = self._head.execute_sync(ctx) if head is None else head.execute_sync(ctx, token)
        except BaseException:  # not `as`: its clean-up is a second handler the error passes
            self._failed(handled_error())
            raise
        next(self.stats.tally[ctx.outcome])
        return result  # type: ignore[no-any-return]

    def execute_in_scope_sync(self, handles: ExecutionHandles, fn: _Fn, args: _Args, kwargs: _Kwargs) -> Any:
        """The sync twin of :meth:`execute_in_scope` (raises what it raises)."""
        start = self._clock.now()
        try:  # in a scope the context is made first: beside the scope's, its cost is nothing
            start_context(ctx := new_context(), fn, args, kwargs, self.name, self.max_attempts, True)  # noqa: FBT003
            head = self._early
            result = (
                self._head.execute_sync(ctx)
                if head is None
                else head.execute_sync(ctx, head.admit(UNSTARTED_SYNC))
            )
        except BaseException:
            self._failed(handled_error(), handles, start)
            raise
        self._returned(handles, start, ctx)
        return result


class PipelineBuilder:
    """Builds a :class:`Pipeline`: ``add`` outer to inner, then ``build`` once.

    Args:
        name: The pipeline's (policy's) name.
        clock: The clock used for execution durations.
        source: The telemetry source for the execution scope (default: a ``"pipeline"`` source).
        max_attempts: Attempts one execution may make in total, ``>= 1``, counted across retry
            attempts and recovery re-runs; ``None`` (default) for no cap.

    Raises:
        ValueError: ``name`` is empty or ``max_attempts`` is below 1.
        TypeError: ``max_attempts`` is neither an ``int`` nor ``None``.
    """

    __slots__ = ("_built", "_clock", "_max_attempts", "_name", "_source", "_strategies")

    def __init__(
        self,
        name: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        source: TelemetrySource | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self._name = check_name("PipelineBuilder", "name", name)
        if max_attempts is not None:
            check_int("PipelineBuilder", "max_attempts", max_attempts, minimum=1)
        self._max_attempts = max_attempts
        self._clock = clock
        self._source = source
        self._strategies: list[Step] = []
        self._built = False

    def add(self, strategy: object) -> PipelineBuilder:
        """Append ``strategy`` inside the ones added before it.

        Raises:
            RuntimeError: After :meth:`build`.
            TypeError: If ``strategy`` is not a :class:`Step`, its class's ``__init__`` never
                called ``Step.__init__``, or its ``kind`` or ``name`` is not a ``str``
                (:func:`~otel_resilience.engine.step.set_up`).
            ValueError: If ``strategy`` is already linked in a pipeline, the strategy added
                before it is a built pipeline's innermost one (it cannot wrap another), or its
                ``kind`` or ``name`` is empty or longer than a telemetry attribute.
        """
        if self._built:
            msg = f"PipelineBuilder {self._name!r} was already built; create a new builder"
            raise RuntimeError(msg)
        if not isinstance(strategy, Step):
            msg = f"PipelineBuilder.add needs a Strategy (an engine.step.Step), got {type(strategy).__name__}"
            raise TypeError(msg)
        set_up(strategy)
        # A step that heads a pipeline admitting it early (Step.admits_early) leaves its
        # admission to that pipeline: it cannot run inside another step.
        linked = strategy.next is not TERMINAL or (strategy._early and bool(self._strategies))
        if linked or any(s is strategy for s in self._strategies):
            msg = f"strategy {strategy.kind}:{strategy.name!r} is already linked into a pipeline"
            raise ValueError(msg)
        # A built pipeline's innermost step may end or head another one, never wrap a step: its
        # next would then be this one's in both pipelines, and the first one's calls run here.
        if self._strategies and (outer := self._strategies[-1])._linked:
            msg = (
                f"strategy {outer.kind}:{outer.name!r} is already linked into a pipeline as its "
                f"innermost step: it cannot wrap {strategy.kind}:{strategy.name!r}"
            )
            raise ValueError(msg)
        self._strategies.append(strategy)
        return self

    def build(self, *, register: bool = True) -> Pipeline:
        """Link the strategies and return the pipeline. The builder cannot be used afterwards.

        Args:
            register: ``False`` to leave the pipeline out of the
                :data:`~otel_resilience.engine.registry.PIPELINES` registry, for an owner that puts
                it in itself (:meth:`~otel_resilience.engine.registry.Registry.replace`).
        """
        if self._built:
            msg = f"PipelineBuilder {self._name!r} was already built"
            raise RuntimeError(msg)
        self._built = True
        strategies = tuple(self._strategies)
        for outer, inner in itertools.pairwise(strategies):
            outer.next = inner
            inner._inner = True
        for strategy in strategies:
            strategy._linked = True
            strategy.settle()
        return Pipeline(
            self._name,
            strategies,
            clock=self._clock,
            source=self._source,
            max_attempts=self._max_attempts,
            register=register,
        )
