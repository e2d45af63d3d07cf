"""The hedging's rules: the shared core (decisions, counts) and the pipeline step.

:class:`_HedgingCore` decides (the delay before a hedge, whether an outcome is the answer, which
function an attempt calls, whether the budget allows a hedge) and counts; :class:`_HedgingStep`
is one pipeline link of a hedging, whose ``admit`` returns a :class:`_Race`: the
:class:`~otel_resilience.engine.hedge.Hedge` token the engine's async driver runs as a race of
attempts. Nothing here awaits, sleeps or starts a task.
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from types import GeneratorType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypedDict, cast

from otel_resilience.engine.calling import WrongDriver
from otel_resilience.engine.counting import Counter, read_all
from otel_resilience.engine.events import (
    Event,
    HedgeDenied,
    HedgeStarted,
    HedgeWon,
    Outcome,
    StrategyTelemetry,
)
from otel_resilience.engine.facade import Link
from otel_resilience.engine.hedge import HEDGE, ORIGINAL, Hedge, held_back
from otel_resilience.engine.naming import callable_name
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.stats import classify_error
from otel_resilience.engine.validation import verdict, wrong_return
from otel_resilience.patterns.hedging.config import (
    KIND,
    HedgingConfig,
    hedge_refusal,
    refund_hedge,
    withdraw_hedge,
)
from otel_resilience.patterns.hedging.latency import _LARGEST, LatencyObserver

_SUCCESS: Final = Outcome.SUCCESS
_FAILURE: Final = Outcome.FAILURE
"""Read on every attempt's end, bound once: a member read off its enum class costs ~55 ns (Python 3.11)."""

if TYPE_CHECKING:
    from collections.abc import Callable

    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.patterns.hedging.config import HedgeBudget

__all__ = ["HedgingCountsDict", "HedgingStatsDict"]


class HedgingCountsDict(TypedDict):
    """A hedging's lifetime counts, those a named policy's statistics sum over its keys.

    The counts of :class:`HedgingStatsDict` (``PolicyHandle.get_stats()["hedging"]``).
    """

    executions: int
    hedges: int
    hedges_denied: int
    original_wins: int
    hedge_wins: int
    failed: int
    cancelled: int


class HedgingStatsDict(HedgingCountsDict):
    """What :meth:`~otel_resilience.patterns.hedging.Hedging.get_stats` returns: counts and settings."""

    name: str
    mode: str
    max_attempts: int


class _HedgingCore:
    """The sans-I/O state shared by a :class:`~otel_resilience.patterns.hedging.Hedging` and its steps."""

    __slots__ = (
        "_hedge_on_types",
        "actions",
        "budget",
        "cancelled",
        "clock",
        "config",
        "denied",
        "deposits",
        "executions",
        "failed",
        "hedge_wins",
        "hedges",
        "max_attempts",
        "name",
        "observer",
        "on_failure",
        "original_wins",
        "parallel",
    )

    def __init__(self, name: str, config: HedgingConfig, clock: Clock, *, deposits: bool) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.budget: HedgeBudget | None = config.budget
        self.max_attempts = int(config.max_attempts)  # a default derived from actions is an int subclass
        self.deposits = deposits and config.budget is not None
        actions = config.actions
        self.actions = None if actions is None else tuple(_action(name, i, a) for i, a in enumerate(actions))
        self.parallel = config.mode == "parallel"
        """Whether every attempt starts at once: the hedges' trigger is ``parallel``, never ``delay``."""
        self.on_failure = not self.parallel
        delay = config.delay
        self.observer: LatencyObserver | None = delay if isinstance(delay, LatencyObserver) else None
        hedge_on = config.hedge_on
        self._hedge_on_types = hedge_on if isinstance(hedge_on, tuple) else None
        self.executions = Counter()
        self.hedges = Counter()
        self.denied = Counter()
        self.original_wins = Counter()
        self.hedge_wins = Counter()
        self.failed = Counter()
        self.cancelled = Counter()

    def delay(self) -> float | None:
        """Return the seconds the latest attempt may run before another starts (``None``: never by time).

        Raises:
            TypeError: A delay function returned no number of seconds.
            ValueError: It returned a negative number, NaN or infinity.
        """
        mode = self.config.mode
        if mode != "latency":
            return 0.0 if mode == "parallel" else None
        delay = self.config.delay
        if isinstance(delay, float):
            return delay
        assert callable(delay)  # noqa: S101 - the config holds seconds or a function
        value: object = delay()
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong_return(f"hedging {self.name!r}: delay", value, "it must return seconds")
        if not 0 <= value <= _LARGEST:  # not NaN, infinity, nor an int no float holds
            rule = "seconds must be finite and >= 0"
            raise wrong_return(f"hedging {self.name!r}: delay", value, rule, kind=ValueError)
        return float(value)

    def accepts(self, result: Any, error: Exception | None) -> bool:
        """Return whether an attempt's outcome is the answer (see ``HedgingConfig``)."""
        if error is not None:
            types = self._hedge_on_types
            if types is not None:
                return not isinstance(error, types)
            predicate = cast("Callable[[Exception], bool]", self.config.hedge_on)
            hedged: object = predicate(error)
            if hedged is not False and hedged is not True:  # a bool is taken as it is, with no call
                hedged = verdict(hedged, "HedgingConfig.hedge_on", self.name)
            return not hedged
        check = self.config.hedge_on_result
        if check is None:
            return True
        rejected: object = check(result)
        if rejected is not False and rejected is not True:  # a bool is taken as it is, with no call
            rejected = verdict(rejected, "HedgingConfig.hedge_on_result", self.name)
        return not rejected

    def withdraw(self) -> object:
        """Take one hedge from the budget; return what names it for :meth:`give_back`, ``None`` if denied."""
        budget = self.budget
        assert budget is not None  # noqa: S101 - only a hedging with a budget withdraws
        return withdraw_hedge(budget)

    def give_back(self, withdrawal: object) -> None:
        """Give the budget back the hedge ``withdrawal`` names (:meth:`withdraw`), which never ran."""
        budget = self.budget
        assert budget is not None  # noqa: S101 - only a hedging with a budget withdraws
        refund_hedge(budget, withdrawal)

    def sync_refusal(self) -> WrongDriver:
        """Build the signal that refuses a hedged execution under the sync driver.

        The :class:`~otel_resilience.engine.calling.WrongDriver` signal, as for any function that
        does not fit its driver: no step counts, retries, recovers or answers it with a fallback,
        and the pipeline raises its ``TypeError`` (:meth:`WrongDriver.as_type_error`).
        """
        return WrongDriver(
            f"hedging {self.name!r} is async only: its attempts run side by side as tasks of an "
            "event loop, which the sync API cannot do; call it from a coroutine (await), or leave "
            "hedging out of the policies a sync function runs under"
        )

    def snapshot(self) -> HedgingStatsDict:
        """Return the counts now."""
        # The ended executions are read before those that entered: an execution is counted when
        # it enters, so no snapshot shows more ended than entered, however many loops run it.
        ended = read_all((self.original_wins, self.hedge_wins, self.failed, self.cancelled))
        original_wins, hedge_wins, failed, cancelled = ended
        return {
            "name": self.name,
            "mode": self.config.mode,
            "max_attempts": self.max_attempts,
            "executions": self.executions.value,
            "hedges": self.hedges.value,
            "hedges_denied": self.denied.value,
            "original_wins": original_wins,
            "hedge_wins": hedge_wins,
            "failed": failed,
            "cancelled": cancelled,
        }


def _action(name: str, index: int, action: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``actions[index]`` as an attempt calls it: itself when it is an async function.

    A callable that is not (a plain function, a lambda) may still return an awaitable; one that
    returns anything else is refused at its call by :class:`_CheckedAction`.
    """
    return action if is_async_callable(action) else _CheckedAction(name, index, action)


class _CheckedAction:
    """An entry of ``HedgingConfig.actions`` that is no async function: refused if it returns no awaitable.

    Refused with the :class:`~otel_resilience.engine.calling.WrongDriver` signal (a programming
    error, no outcome: nothing counts, hedges or answers it), whose ``TypeError`` names the
    field, where the driver's own check would blame the protected function.
    """

    __slots__ = ("action", "index", "name")

    def __init__(self, name: str, index: int, action: Callable[..., Any]) -> None:
        self.name = name
        self.index = index
        self.action = action

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        value = self.action(*args, **kwargs)
        if inspect.isawaitable(value):  # an async generator is not: refused below
            return value
        if isinstance(value, GeneratorType):
            value.close()
        msg = (
            f"hedging {self.name!r}: HedgingConfig.actions[{self.index}] ({callable_name(self.action)}) "
            f"returned {type(value).__name__}, not an awaitable: an attempt awaits what its action "
            "returns (hedging is async only); give an async function"
        )
        raise WrongDriver(msg)


_Entry = tuple["ExecutionContext", object, str, int]
"""A hedge started: its context, its withdrawal from the budget, its trigger, its number."""


class _Scope:
    """What an attempt keeps while it runs: its telemetry scope and when it started."""

    __slots__ = ("handles", "started", "type")

    def __init__(self, handles: Any, started: float, attempt_type: str) -> None:
        self.handles = handles
        self.started = started
        self.type = attempt_type


class _Race(Hedge):
    """One hedged execution's race: the decisions of its link, and which attempt is the original.

    A hedge is *pending* from its start (:meth:`start`: its withdrawal from the budget) until its
    task enters it (:meth:`enter`), then *running*. A race that ends before its task entered it (a
    delay function that raised, a cancellation: its task cancelled before it ran) gives the
    withdrawal back, and the hedge is counted nowhere; so does a hedge the chain it runs turned
    away (:meth:`turned_away`: the policy's own breaker, bulkhead or rate limiter rejected it
    before it ran its action), which the race counts denied instead (``rejected``); and so does a
    hedge the race ended while it was still held back in the wait for its admission (the
    bulkhead's queue, a rate limiter's permit: :func:`~otel_resilience.engine.hedge.held_back`),
    counted nowhere (nothing refused it: the race was over first); neither it nor an original so
    held back is an attempt a win is reported over. None of these hedges takes a call of the
    execution's cap in total (:meth:`_unsent`): the cap counts the calls made. The hedges that
    ran are counted as the race ends (:meth:`end`: ``hedges``, the ``HEDGE_STARTED`` event),
    once no step can turn them away or hold them back any more: what the counts show is what ran.

    An attempt whose judgment raised (``hedge_on`` or ``hedge_on_result``) ends the execution
    with that error, which the race takes as its answer: it answered nothing, so it is no win
    (no ``HEDGE_WON``) and the execution counts in ``failed``, as the pipeline counts its error.
    """

    __slots__ = (
        "_core",
        "_misjudged",
        "_number",
        "_original",
        "_pending",
        "_running",
        "_started",
        "_telemetry",
    )

    def __init__(self, core: _HedgingCore, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.max_attempts, on_failure=core.on_failure, parallel=core.parallel)
        self._core = core
        self._telemetry = telemetry
        self._original: ExecutionContext | None = None
        self._number: int
        """The number the original started with (:meth:`_started_as`), set as it starts."""
        self._misjudged: ExecutionContext | None = None
        """The attempt whose judgment raised (:meth:`accepts`): its error ends the execution."""
        self._started = 1
        """The attempts started, less those turned away (:meth:`turned_away`; none starts after one):
        the original from the start, the race's first start, which is never refused."""
        self._pending: list[_Entry] | None = None
        """The hedges started and not entered yet, with their withdrawals, triggers and the numbers
        they started with (a retry inside an attempt numbers its re-runs on): a list from the
        first hedge's start on, ``None`` when none started."""
        self._running: list[_Entry] | None = None
        """The hedges entered and not turned away: counted as the race ends (:meth:`end`), but
        for those still held back in their admission's wait."""

    def delay(self, started: int) -> float | None:  # noqa: ARG002 - the same before every hedge
        """Return the hedge delay (0 in parallel mode, ``None`` in fallback mode)."""
        return self._core.delay()

    def start(self, ctx: ExecutionContext, trigger: str | None) -> ExecutionContext | None:
        """Start the original; or a hedge, if the budget and the cap in total allow one."""
        core = self._core
        if trigger is None:
            self._number = ctx.attempt
            self._original = ctx.fork(new_attempt=False)
            return self._original
        budget, withdrawal = core.budget, None
        if budget is not None and (withdrawal := core.withdraw()) is None:
            self.deny(trigger, hedge_refusal(budget))
            return None
        attempt = ctx.fork()
        if attempt is None:  # the execution's cap on attempts in total
            if budget is not None:
                core.give_back(withdrawal)
            self.deny(trigger, "max_attempts")
            return None
        if self._pending is None:
            self._pending = []
        self._pending.append((attempt, withdrawal, trigger, attempt.attempt))
        actions, index = core.actions, self._started - 1
        if actions is not None and index < len(actions):
            attempt.fn = actions[index]
        self._started += 1
        return attempt

    def deny(self, trigger: str, reason: str) -> None:
        """Count a hedge that was due but refused, and report why (``denied_by``).

        The one place every refusal is counted: this link's own (the budget, the cap on attempts
        in total) and the race's (the deadline, a rejection by the policy's own chain).
        """
        next(self._core.denied)
        telemetry = self._telemetry
        if telemetry.hub.event_listeners:
            telemetry.report(Event.HEDGE_DENIED, HedgeDenied(trigger, reason))

    def enter(self, attempt: ExecutionContext) -> _Scope | None:
        """Open the attempt's scope (typed original or hedge) when a listener or the delay wants it.

        A pending hedge is no longer pending: it runs (counted as the race ends, unless the chain
        turns it away).
        """
        telemetry, core = self._telemetry, self._core
        if self._pending:
            self._run(attempt)
        listening = telemetry.hub.attempt_listeners
        if not listening and core.observer is None:
            return None
        attempt_type = ORIGINAL if attempt is self._original else HEDGE
        handles = (
            telemetry.start_attempt(attempt.operation, attempt.attempt, attempt_type) if listening else None
        )
        return _Scope(handles, core.clock.now(), attempt_type)

    def _run(self, attempt: ExecutionContext) -> None:
        """Move the pending hedge ``attempt`` to the running ones, now that its task runs it."""
        pending = cast("list[_Entry]", self._pending)
        for index, entry in enumerate(pending):
            if entry[0] is attempt:
                del pending[index]
                if self._running is None:
                    self._running = []
                self._running.append(entry)
                return

    def turned_away(self, attempt: ExecutionContext) -> None:
        """The chain ``attempt`` runs rejected it before it ran its action: it is no attempt that ran.

        It leaves :attr:`_started` (so no win over it is reported), and a hedge gives its
        withdrawal back and is never counted in ``hedges``: it called nothing, and the race
        counts it denied (``rejected``, :meth:`deny`).
        """
        self._started -= 1
        running = self._running
        for index, (hedge, withdrawal, _, _) in enumerate(running or ()):
            if hedge is attempt:
                del running[index]  # type: ignore[union-attr] # found in it: a list
                self._unsent(hedge, withdrawal)
                return

    def _unsent(self, hedge: ExecutionContext, withdrawal: object) -> None:
        """Give back what the hedge ``hedge`` took as it started: it called nothing, it is no hedge sent.

        The one rule for a hedge that never ran its action (its task never ran, the chain turned
        it away, or the race ended while it was held back in its admission's wait): the budget
        gets its withdrawal back, and the execution's cap in total the place its number took
        (:meth:`~otel_resilience.engine.context.ExecutionContext.spare`: attempts are the calls
        made), its number kept.
        """
        if self._core.budget is not None:
            self._core.give_back(withdrawal)
        hedge.spare()

    def accepts(self, attempt: ExecutionContext, result: Any, error: Exception | None) -> bool:
        """Judge the outcome by the config's ``hedge_on`` and ``hedge_on_result``.

        What a judgment raises is re-raised (the race ends the execution with it, unless an
        attempt won already); the first such attempt is remembered as no answer (:meth:`leave`,
        :meth:`end`).
        """
        try:
            return self._core.accepts(result, error)
        except Exception:
            if self._misjudged is None:
                self._misjudged = attempt
            raise

    def leave(
        self,
        attempt: ExecutionContext,
        scope: _Scope | None,
        error: BaseException | None,
        *,
        accepted: bool,
        won: bool,
    ) -> None:
        """Mark the winner of a race, tell the delay the latency of an accepted result, close the scope.

        The winner is marked only when another attempt ran beside it: a hedge still pending (its
        task had not run when the race was won) never runs, and is no attempt it beat; nor is an
        attempt still held back in the wait for its admission (:meth:`_ran_beside`); nor is one
        whose judgment raised (:meth:`accepts`), which answered nothing.
        """
        telemetry, core = self._telemetry, self._core
        if (
            won
            and self._started - len(self._pending or ()) > 1
            and telemetry.hub.event_listeners
            and attempt is not self._misjudged
            and self._ran_beside(attempt)
        ):
            attempt_type = ORIGINAL if attempt is self._original else HEDGE
            telemetry.report(Event.HEDGE_WON, HedgeWon(self._started_as(attempt), attempt_type))
        if scope is None:
            return
        if accepted and error is None and core.observer is not None:
            core.observer.observe(core.clock.now() - scope.started)
        if scope.handles:
            outcome = (_SUCCESS if accepted else _FAILURE) if error is None else classify_error(error)
            telemetry.end_attempt(scope.handles, outcome, error)

    def _started_as(self, attempt: ExecutionContext) -> int:
        """Return the number ``attempt`` started with, which its attempt span carries (read on a win only).

        Its context's :attr:`~otel_resilience.engine.context.ExecutionContext.attempt` is the
        latest number a re-run inside it took (a retry inside the hedging), not the attempt's.
        A hedge's is kept with it as it starts (what ``hedge_started`` names), the original's
        as the race starts.
        """
        if attempt is self._original:
            return self._number
        for hedge, _, _, number in self._running or ():
            if hedge is attempt:
                return number
        return attempt.attempt  # not reached: a hedge that answered ran, and is running until the end

    def _ran_beside(self, winner: ExecutionContext) -> bool:
        """Whether an attempt other than ``winner`` ran its action (asked once more than one started).

        The attempts entered (not pending) and not turned away (:attr:`_started`) ran, but for
        those the win finds still held back in the wait for their admission
        (:func:`~otel_resilience.engine.hedge.held_back`: the bulkhead's queue, a rate
        limiter's permit): cancelled there, they never run.
        """
        attempts = [cast("ExecutionContext", self._original), *(entry[0] for entry in self._running or ())]
        held = sum(1 for attempt in attempts if attempt is not winner and held_back(attempt))
        return self._started - len(self._pending or ()) - held > 1

    def end(
        self,
        ctx: ExecutionContext,  # noqa: ARG002 - the counts are the hedging's, not the execution's
        winner: ExecutionContext | None,
        error: BaseException | None,
    ) -> None:
        """Count how the execution ended and the hedges that ran; give back those withdrawn that never ran."""
        core = self._core
        pending = self._pending
        if pending is not None:  # a hedge started
            self._pending = None
            for hedge, withdrawal, _, _ in pending:
                self._unsent(hedge, withdrawal)
            self._count_run()
        if winner is not None and winner is not self._misjudged:
            next(core.original_wins if winner is self._original else core.hedge_wins)
        elif error is not None and not isinstance(error, Exception):
            next(core.cancelled)
        else:
            next(core.failed)

    def _count_run(self) -> None:
        """Count the hedges that ran (``hedges``, ``HEDGE_STARTED``), in the order they started.

        A hedge the race ended while it was still held back, waiting for its admission
        (:func:`~otel_resilience.engine.hedge.held_back`), never ran its action: it gives its
        withdrawal back and is counted nowhere, as a hedge whose task never ran.
        """
        running, self._running = self._running, None
        if not running:
            return
        core, telemetry = self._core, self._telemetry
        listening = telemetry.hub.event_listeners
        for attempt, withdrawal, trigger, number in running:
            if held_back(attempt):
                self._unsent(attempt, withdrawal)
                continue
            next(core.hedges)
            if listening:
                telemetry.report(Event.HEDGE_STARTED, HedgeStarted(number, trigger))


class _HedgingStep(Link[HedgingConfig]):
    """One hedging link of a pipeline: the shared :class:`_HedgingCore` and this link's telemetry.

    ``admit`` refuses the sync driver, deposits the execution in the budget (when the link
    deposits), and returns the execution's :class:`_Race`, which the async driver runs.
    """

    __slots__ = ("_core",)

    kind: ClassVar[str] = KIND
    opens_attempts: ClassVar[bool] = True  # each attempt of its race, typed

    def __init__(self, core: _HedgingCore, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.name, core.config, core.clock, telemetry)
        self._core = core
        self.entries = core.executions

    def admit(self, ctx: ExecutionContext) -> _Race:
        """Return the execution's race.

        Raises:
            WrongDriver: The sync driver runs the execution (hedging is async only): the pipeline
                raises its ``TypeError``, which no step around the hedging answers.
        """
        core = self._core
        if ctx.sync:
            raise core.sync_refusal()
        if core.deposits:
            core.budget.deposit()  # type: ignore[union-attr] # deposits only with a budget
        return _Race(core, self._telemetry)

    def get_stats(self) -> HedgingStatsDict:
        """Return the hedging's counts (shared by all its links), as :meth:`Hedging.get_stats` does."""
        return self._core.snapshot()
