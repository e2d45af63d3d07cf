"""Pipelines: strategies linked once, outer to inner, run by an async and a sync driver.

``PipelineBuilder(name).add(a).add(b).build()`` gives a :class:`Pipeline` in which ``a`` wraps
``b`` wraps the protected function (the order of addition runs outer -> inner). The builder
refuses a strategy that is already linked elsewhere and refuses ``add`` after ``build``.

A pipeline is one *logical execution* for telemetry: it opens the execution scope (a span, the
duration histogram) and counts the outcome in plain integers (:class:`PipelineStats`).

A function that does not fit the driver (a plain function given to :meth:`Pipeline.execute`, a
coroutine function given to :meth:`Pipeline.execute_sync`) is refused with ``TypeError``: the
last link raises :class:`~otel_resilience.engine.strategy.WrongDriver`, which no strategy counts
as a failure, retries, recovers or answers with a fallback, and the pipeline raises the
``TypeError`` in its place (counted as a failed execution).
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import Outcome, StrategyTelemetry, TelemetrySource
from otel_resilience.engine.registry import PIPELINES
from otel_resilience.engine.strategy import TERMINAL, Strategy, WrongDriver
from otel_resilience.engine.validation import check_name
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Pipeline", "PipelineBuilder", "PipelineStats", "classify_error"]

P = ParamSpec("P")
R = TypeVar("R")


def classify_error(error: BaseException) -> Outcome:
    """Map an exception that escaped an execution to its :class:`Outcome`."""
    if isinstance(error, ExecutionRejectedError):
        return Outcome.REJECTED
    if isinstance(error, OperationTimeoutError):
        return Outcome.TIMEOUT
    if isinstance(error, Exception):
        return Outcome.FAILURE
    return Outcome.CANCELLED


def _surfaced(error: BaseException) -> BaseException:
    """Return what the caller gets for ``error``: a :class:`WrongDriver` becomes its ``TypeError``."""
    if type(error) is WrongDriver:
        return error.as_type_error()
    return error


class PipelineStats:
    """Outcome counts of one pipeline, as plain integers.

    Every execution ends in exactly one of the disjoint counters: ``succeeded`` (first attempt),
    ``recovered`` (after a failed attempt or a recovery action), ``fallback`` (a fallback
    answered), ``rejected`` (a breaker or bulkhead refused it), ``timeouts`` (a deadline
    expired), ``errors`` (any other error reached the caller) or ``cancelled``. ``failed`` is
    ``errors + rejected + timeouts``. Each counter only grows, so exported totals are monotonic.
    """

    __slots__ = ("cancelled", "errors", "fallback", "recovered", "rejected", "succeeded", "timeouts")

    def __init__(self) -> None:
        self.succeeded = 0
        self.recovered = 0
        self.fallback = 0
        self.errors = 0
        self.rejected = 0
        self.timeouts = 0
        self.cancelled = 0

    @property
    def failed(self) -> int:
        """Executions that ended with an error reaching the caller (rejections and timeouts included)."""
        return self.errors + self.rejected + self.timeouts

    @property
    def successful(self) -> int:
        """Executions the protected function answered (first attempt or recovered)."""
        return self.succeeded + self.recovered

    @property
    def total(self) -> int:
        """Every execution that has ended."""
        return self.succeeded + self.recovered + self.fallback + self.failed + self.cancelled

    def count(self, outcome: Outcome) -> None:
        """Count one ended execution."""
        if outcome is Outcome.SUCCESS:
            self.succeeded += 1
        elif outcome is Outcome.RECOVERED:
            self.recovered += 1
        elif outcome is Outcome.FALLBACK:
            self.fallback += 1
        elif outcome is Outcome.CANCELLED:
            self.cancelled += 1
        elif outcome is Outcome.REJECTED:
            self.rejected += 1
        elif outcome is Outcome.TIMEOUT:
            self.timeouts += 1
        else:
            self.errors += 1

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a plain dict (``total`` and ``successful`` included)."""
        return {
            "total": self.total,
            "successful": self.successful,
            "succeeded": self.succeeded,
            "recovered": self.recovered,
            "fallback": self.fallback,
            "failed": self.failed,
            "rejected": self.rejected,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
        }


class Pipeline:
    """Linked strategies with an async driver (:meth:`execute`) and a sync one (:meth:`execute_sync`).

    Attributes:
        name: The pipeline's (policy's) name: the operation name in telemetry.
        stats: Outcome counts.
        telemetry: The facade the pipeline reports executions through.
    """

    __slots__ = ("__weakref__", "_clock", "_head", "_lock", "_strategies", "name", "stats", "telemetry")

    def __init__(
        self,
        name: str,
        strategies: tuple[Strategy, ...],
        *,
        clock: Clock = SYSTEM_CLOCK,
        source: TelemetrySource | None = None,
    ) -> None:
        self.name = name
        self._strategies = strategies
        self._head: Strategy = strategies[0] if strategies else TERMINAL
        self._clock = clock
        self._lock = threading.Lock()
        self.stats = PipelineStats()
        self.telemetry = StrategyTelemetry(source or TelemetrySource("pipeline", name, name))
        PIPELINES.register(self)

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        """The strategies, outer to inner."""
        return self._strategies

    def describe(self) -> tuple[tuple[str, str, object], ...]:
        """Return ``(kind, name, config)`` for every strategy, outer to inner."""
        return tuple((s.kind, s.name, s.config) for s in self._strategies)

    async def execute(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` through every strategy.

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        ctx = ExecutionContext(fn, args, kwargs, self.name)
        telemetry = self.telemetry
        handles = telemetry.start_execution(self.name)
        if handles is None:
            try:
                result = await self._head.execute(ctx)
            except BaseException as caught:
                error = _surfaced(caught)
                self.stats.count(classify_error(error))
                if error is not caught:
                    raise error from None
                raise
            if ctx.attempt == 1 and ctx.outcome is None:
                self.stats.succeeded += 1
            else:
                self.stats.count(_success_outcome(ctx))
            return result  # type: ignore[no-any-return]
        clock = self._clock
        start = clock.now()
        try:
            result = await self._head.execute(ctx)
        except BaseException as caught:
            error = _surfaced(caught)
            outcome = classify_error(error)
            self.stats.count(outcome)
            telemetry.end_execution(handles, outcome, clock.now() - start, error)
            if error is not caught:
                raise error from None
            raise
        outcome = _success_outcome(ctx)
        self.stats.count(outcome)
        telemetry.end_execution(handles, outcome, clock.now() - start, None)
        return result  # type: ignore[no-any-return]

    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` through every strategy, in the calling thread.

        Raises:
            Exception: Whatever the innermost failure or a strategy raised; see the patterns.
        """
        ctx = ExecutionContext(fn, args, kwargs, self.name)
        telemetry = self.telemetry
        handles = telemetry.start_execution(self.name)
        clock = self._clock
        start = clock.now() if handles is not None else 0.0
        try:
            result = self._head.execute_sync(ctx)
        except BaseException as caught:
            error = _surfaced(caught)
            outcome = classify_error(error)
            with self._lock:
                self.stats.count(outcome)
            if handles is not None:
                telemetry.end_execution(handles, outcome, clock.now() - start, error)
            if error is not caught:
                raise error from None
            raise
        outcome = _success_outcome(ctx)
        with self._lock:
            self.stats.count(outcome)
        if handles is not None:
            telemetry.end_execution(handles, outcome, clock.now() - start, None)
        return result  # type: ignore[no-any-return]


def _success_outcome(ctx: ExecutionContext) -> Outcome:
    """Return the outcome of an execution that returned normally."""
    if ctx.outcome is not None:
        return ctx.outcome
    return Outcome.SUCCESS if ctx.attempt == 1 else Outcome.RECOVERED


class PipelineBuilder:
    """Builds a :class:`Pipeline`: ``add`` outer to inner, then ``build`` once.

    Args:
        name: The pipeline's (policy's) name.
        clock: The clock used for execution durations.
        source: The telemetry source for the execution scope (default: a ``"pipeline"`` source).
    """

    __slots__ = ("_built", "_clock", "_name", "_source", "_strategies")

    def __init__(
        self, name: str, *, clock: Clock = SYSTEM_CLOCK, source: TelemetrySource | None = None
    ) -> None:
        self._name = check_name("PipelineBuilder", "name", name)
        self._clock = clock
        self._source = source
        self._strategies: list[Strategy] = []
        self._built = False

    def add(self, strategy: object) -> PipelineBuilder:
        """Append ``strategy`` inside the ones added before it.

        Raises:
            RuntimeError: After :meth:`build`.
            TypeError: If ``strategy`` is not a :class:`Strategy`.
            ValueError: If ``strategy`` is already linked in a pipeline.
        """
        if self._built:
            msg = f"PipelineBuilder {self._name!r} was already built; create a new builder"
            raise RuntimeError(msg)
        if not isinstance(strategy, Strategy):
            msg = f"PipelineBuilder.add needs a Strategy, got {type(strategy).__name__}"
            raise TypeError(msg)
        if strategy.next is not TERMINAL or any(s is strategy for s in self._strategies):
            msg = f"strategy {strategy.kind}:{strategy.name!r} is already linked into a pipeline"
            raise ValueError(msg)
        self._strategies.append(strategy)
        return self

    def build(self) -> Pipeline:
        """Link the strategies and return the pipeline. The builder cannot be used afterwards."""
        if self._built:
            msg = f"PipelineBuilder {self._name!r} was already built"
            raise RuntimeError(msg)
        self._built = True
        strategies = tuple(self._strategies)
        for outer, inner in itertools.pairwise(strategies):
            outer.next = inner
        return Pipeline(self._name, strategies, clock=self._clock, source=self._source)
