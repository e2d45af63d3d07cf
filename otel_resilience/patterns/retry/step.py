"""The retry's rules: the shared sans-I/O core (decisions, counts) and the pipeline step.

:class:`_RetryCore` decides (is an error retried, how long to back off, when to give up) and
counts; :class:`_RetryStep` is one pipeline link of a retry, a
:class:`~otel_resilience.engine.step.Step` that turns those decisions into actions. The engine's
drivers run the attempts, wait the backoffs, call ``on_retry`` and open the attempt deadline;
nothing here awaits or sleeps.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple, cast

from otel_resilience.engine.actions import Counted
from otel_resilience.engine.admission import UnheardStanding
from otel_resilience.engine.calling import WrongDriver, handled_error, refused
from otel_resilience.engine.cancelling import returned_on_the_way
from otel_resilience.engine.closing import give_back
from otel_resilience.engine.context import NO_RESULT
from otel_resilience.engine.counting import snapshot
from otel_resilience.engine.deadline import passes_to_its_scope, time_left
from otel_resilience.engine.events import (
    Event,
    Outcome,
    RetryExhausted,
    RetryScheduled,
    StrategyTelemetry,
    TimeoutOccurred,
    error_type_name,
)
from otel_resilience.engine.facade import Link
from otel_resilience.engine.notes import add_note, injected
from otel_resilience.engine.pipeline import classify_error
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import BUDGETED_RETRIES
from otel_resilience.engine.rerun import may_run_again
from otel_resilience.engine.stats import attempt_ended
from otel_resilience.engine.step import Call
from otel_resilience.engine.step import Retry as RunAgain
from otel_resilience.engine.validation import matched_by_class, verdict, wrong_return
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.patterns.retry.budget import RetryBudget
from otel_resilience.patterns.retry.delays import seconds_of
from otel_resilience.patterns.retry.policy import RetryPolicy, _constant_delay
from otel_resilience.patterns.retry.stats import RetryStats

_FAILURE: Final = Outcome.FAILURE
_SUCCESS: Final = Outcome.SUCCESS
_CANCELLED: Final = Outcome.CANCELLED
_REJECTED: Final = Outcome.REJECTED
_RETRY_SCHEDULED: Final = Event.RETRY_SCHEDULED
_RETRY_EXHAUSTED: Final = Event.RETRY_EXHAUSTED
_TIMEOUT: Final = Event.TIMEOUT
"""Read on hot paths, bound once: reading a member off its enum class costs ~55 ns (Python 3.11)."""

if TYPE_CHECKING:
    import random

    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.engine.events import TelemetryHub
    from otel_resilience.engine.step import Action
    from otel_resilience.patterns.retry.policy import OnRetry

__all__: list[str] = []

_NOTE_PREFIX: Final = "otel_resilience retry "
_STRATEGY: Final = "strategy"
_OUTCOME: Final = "outcome"
_NOT_RETRYABLE: Final = "not_retryable"


class _Wait(NamedTuple):
    """What follows a failed attempt: why retrying stops (``None``: it goes on) and the backoff."""

    reason: str | None
    delay: float
    remaining: float
    """Seconds left before the deadline (``inf``: none, or not read)."""
    source: str
    """Where the delay came from: ``"strategy"`` or ``"outcome"`` (``delay_from``)."""
    withdrawal: int | None = None
    """The budget's receipt for the retry it allowed (``None``: no budget, or retrying stops)."""


def _rejection(error: Exception | None) -> bool:
    """Whether ``error`` is not the dependency's: the dependency was not called.

    A rejection, by the outcomes' one rule (:func:`classify_error`), or a fault a chaos link
    injected in the dependency's place (:func:`~otel_resilience.engine.notes.injected`).
    """
    return error is not None and (classify_error(error) is _REJECTED or injected(error))


def _told_apart(delay: float, limit: float) -> tuple[str, str]:
    """Format a delay and the limit it broke: ``:g``, or all digits where ``:g`` shows them equal."""
    shown, bound = f"{delay:g}", f"{limit:g}"
    if shown == bound and delay != limit:
        return repr(delay), repr(limit)
    return shown, bound


class _RetryCore:
    """The sans-I/O state shared by a :class:`~otel_resilience.patterns.retry.Retry` and its steps.

    Its policy, its decisions (what is retried, the backoff, when to give up) and its counts.

    It never awaits and never sleeps; the engine's drivers do. It holds no reference to the
    :class:`~otel_resilience.patterns.retry.Retry`, so a short-lived retry is freed by reference counting.
    """

    __slots__ = (
        "_no_retry_types",
        "_retry_types",
        "attempt_timeout",
        "budget",
        "clock",
        "constant_delay",
        "delay_from",
        "dropped",
        "dropped_what",
        "error_dropped",
        "error_dropped_what",
        "hook",
        "hook_is_async",
        "hook_what",
        "lock",
        "max_attempts",
        "name",
        "policy",
        "retry_on_result",
        "rng",
        "stats",
    )

    def __init__(
        self, name: str, policy: RetryPolicy, hook: OnRetry | None, clock: Clock, rng: random.Random | None
    ) -> None:
        self.name = name
        self.policy = policy
        self.hook = hook
        self.hook_is_async = hook is not None and is_async_callable(hook)
        # How an error names each hook: made only for a hook there is (a string per retry otherwise).
        self.hook_what = "" if hook is None else f"retry {name!r}: on_retry"
        self.clock = clock
        self.rng = rng
        self.attempt_timeout = policy.attempt_timeout
        self.max_attempts = policy.max_attempts
        self.retry_on_result = policy.retry_on_result
        # Told each result (or error) the retry drops, before the backoff (see RetryPolicy).
        self.dropped = dropped = getattr(policy.retry_on_result, "dropped", None)
        self.dropped_what = "" if dropped is None else f"retry {name!r}: retry_on_result.dropped"
        self.error_dropped = error_dropped = getattr(policy.retry_on, "dropped", None)
        self.error_dropped_what = "" if error_dropped is None else f"retry {name!r}: retry_on.dropped"
        self.constant_delay = _constant_delay(policy)
        self.budget = policy.budget
        self.delay_from = policy.delay_from
        retry_on, no_retry_on = policy.retry_on, policy.no_retry_on
        # Types the error's class answers for (matched_by_class); else the policy's rule, by isinstance.
        self._retry_types = retry_on if isinstance(retry_on, tuple) and matched_by_class(retry_on) else None
        self._no_retry_types = (
            no_retry_on if isinstance(no_retry_on, tuple) and matched_by_class(no_retry_on) else None
        )
        self.stats = RetryStats()
        self.lock = threading.Lock()  # taken by calls only: see engine.forking

    def is_retryable(self, error: Exception) -> bool:
        """:meth:`RetryPolicy.is_retryable`, with the selectors split once (type tuples or predicates)."""
        retry_types, no_retry_types = self._retry_types, self._no_retry_types
        if retry_types is None or no_retry_types is None:
            return self.policy.is_retryable(error)
        kind = type(error)
        return issubclass(kind, retry_types) and not issubclass(kind, no_retry_types)

    def async_hook_error(self) -> TypeError:
        """Build the error for an async ``on_retry`` used with a sync driver."""
        return TypeError(
            f"retry {self.name!r}: on_retry is async (it returns an awaitable), which the sync "
            "driver cannot await; pass a plain function, or use the async API"
        )

    def schedule(
        self,
        telemetry: StrategyTelemetry,
        ctx: ExecutionContext,
        attempt: int,
        error: Exception | None,
        *,
        result: object = None,
        previous: float | None = None,
        count_stop: bool = True,
    ) -> _Wait | None:
        """Decide what follows a failed ``attempt`` (``error``, or a retried ``result`` when ``None``).

        Counts the ended attempt, reports the event, and attaches the note on a give-up. The
        next attempt's number is taken from ``ctx`` (:meth:`ExecutionContext.next_attempt`),
        which refuses it once the execution made its cap of attempts in total.

        Args:
            telemetry: The node's facade.
            ctx: The execution: the failed attempt's number, the cap in total.
            attempt: How many attempts this retry made (the failed one included), for
                ``max_attempts`` and the backoff schedule.
            error: The failed attempt's error, or ``None`` when its result is retried.
            result: The retried result (when ``error`` is ``None``), for ``delay_from``.
            previous: This execution's previous backoff (``None`` before the first), for
                ``Jitter.DECORRELATED``.
            count_stop: ``False`` to leave a stop's count (the execution's: ``exhausted``,
                ``non_retryable``) to the caller (:meth:`count_stop`), for a stop that still
                calls a hook of the user's, which a cancellation may end (counted so instead).

        A retried result is judged failed whether or not the operation may run again: one
        that may run only once (:func:`~otel_resilience.engine.rerun.may_run_again`: an HTTP
        request such as a POST) is not run again, and stops as an error the policy does not
        retry does (``not_retryable``), its result returned as a failure.

        Returns:
            The wait before the next attempt (its delay, and the budget's receipt for the retry
            when there is a budget), or ``None`` to stop (re-raise ``error``, or return the
            last result, the execution's outcome then a failure:
            :meth:`~otel_resilience.engine.context.ExecutionContext.result_failed`); with
            ``count_stop`` ``False``, a stop not yet counted: a wait whose ``reason`` says why.
        """
        stats = self.stats
        next(stats._other_attempts)  # first: the attempt ended, whatever the policy's functions raise
        if not (may_run_again(None, ctx.fn) if error is None else self.is_retryable(error)):
            self._stopped(telemetry, ctx, attempt, error, count=count_stop)
            return None if count_stop else _Wait(_NOT_RETRYABLE, 0.0, math.inf, _STRATEGY)
        failed = ctx.answered()
        wait = self._next_wait(ctx, attempt, result if error is None else error, previous)
        reason, delay = wait.reason, wait.delay
        if reason is None:
            next(stats._retries)
            if telemetry.hub.event_listeners:
                args = RetryScheduled(failed, delay, error_type_name(error), wait.source, _rejection(error))
                try:
                    telemetry.report(_RETRY_SCHEDULED, args)
                except BaseException:  # a listener interrupted: the retry withdrawn never runs
                    if wait.withdrawal is not None:
                        self.budget.refund(wait.withdrawal)  # type: ignore[union-attr] # a receipt: a budget
                    raise
            return wait
        self._give_up(telemetry, attempt, error, wait, failed, ctx.max_attempts, count=count_stop)
        if error is None:  # the result still retried is returned: the execution failed
            ctx.result_failed()
        return None if count_stop else wait

    def not_retried(
        self, telemetry: StrategyTelemetry, ctx: ExecutionContext, attempt: int, error: Exception | None
    ) -> None:
        """Count an execution ended by what this retry does not retry: ``error``, or a result (``None``).

        An error the policy does not retry, a rejected result of an operation that may run only
        once (its execution then failed), or a function the driver refused
        (:meth:`_RetryStep.on_cancel`): counted in ``non_retryable``, and reported as a stop
        (reason ``"not_retryable"``) after a retry only, with no note on ``error``.

        Args:
            telemetry: The node's facade.
            ctx: The execution.
            attempt: How many attempts this retry made, the one that ended included.
            error: What the attempt raised, or ``None`` for a result.
        """
        next(self.stats._other_attempts)
        self._stopped(telemetry, ctx, attempt, error)

    def _stopped(
        self,
        telemetry: StrategyTelemetry,
        ctx: ExecutionContext,
        attempt: int,
        error: Exception | None,
        *,
        count: bool = True,
    ) -> None:
        """:meth:`not_retried` once the ended attempt is counted (:meth:`schedule` counts it first).

        ``count``: ``False`` leaves the execution's count to the caller (:meth:`count_stop`).
        """
        if count:
            self.count_stop(_NOT_RETRYABLE)
        if attempt > 1 and telemetry.hub.event_listeners:  # stopped after a retry: say why
            name = error_type_name(error)
            stopped = RetryExhausted(ctx.answered(), name, _NOT_RETRYABLE, _rejection(error))
            telemetry.report(_RETRY_EXHAUSTED, stopped)
        if error is None:  # the result is returned, never retried: the execution failed
            ctx.result_failed()

    def _give_up(  # noqa: PLR0917 - the give-up's figures, on a rare path
        self,
        telemetry: StrategyTelemetry,
        attempt: int,
        error: Exception | None,
        wait: _Wait,
        failed: int,
        cap: int | None,
        *,
        count: bool = True,
    ) -> None:
        """Count and report a give-up (``wait.reason``), and note it on ``error``.

        ``failed`` is the number of the attempt that failed (the event's); ``cap`` the execution's
        cap in total, which it made when the cap stopped it (attempts that called nothing gave
        their place back: their numbers are no count of the attempts made). ``count``: ``False``
        leaves the execution's count to the caller (:meth:`count_stop`).
        """
        reason = wait.reason
        assert reason is not None  # noqa: S101 - only a stop is given up on
        if count:
            self.count_stop(reason)
        if telemetry.hub.event_listeners:
            args = RetryExhausted(failed, error_type_name(error), reason, _rejection(error))
            telemetry.report(_RETRY_EXHAUSTED, args)
        if error is not None:
            # Replacing this retry's earlier note (a reused exception object), never another retry's
            # (a retry nested inside this one gave up first); an error that refuses notes has none.
            mine = f"{_NOTE_PREFIX}{self.name!r}:"
            made = cap if cap is not None and wait.reason == "max_attempts_total" else failed
            add_note(error, self._give_up_note(attempt, wait, made), replacing=mine)

    def _next_wait(
        self, ctx: ExecutionContext, attempt: int, outcome: object, previous: float | None
    ) -> _Wait:
        """Return the wait after ``attempt`` and why retrying stops (its ``reason``; ``None``: it goes on).

        The checks run in this order: ``max_attempts``; the delay (from the outcome, else the
        strategy) against ``max_delay`` and the deadline; the budget; the execution's cap in
        total. Takes the next attempt's number from ``ctx`` (and a retry from the budget) only
        when it goes on.
        """
        if attempt >= self.max_attempts:
            return _Wait("max_attempts", 0.0, math.inf, _STRATEGY)
        source, delay = _STRATEGY, None
        if self.delay_from is not None:
            delay = self._delay_from(outcome)
            if delay is not None:
                source = _OUTCOME
                if delay > self.policy.max_delay:
                    return _Wait("max_delay", delay, math.inf, source)
        if delay is None:
            constant = self.constant_delay
            delay = self.policy.compute_delay(attempt, self.rng, previous) if constant is None else constant
        remaining = time_left()
        if remaining <= delay:
            return _Wait("deadline", delay, remaining, source)
        budget = self.budget
        if budget is None:
            withdrawal = None
        elif (withdrawal := budget.withdraw()) is None:
            return _Wait("budget", delay, remaining, source)
        if ctx.next_attempt() is None:
            if budget is not None:
                budget.refund(withdrawal)
            return _Wait("max_attempts_total", delay, remaining, source)
        return _Wait(None, delay, remaining, source, withdrawal)

    def _delay_from(self, outcome: object) -> float | None:
        """Return the delay ``delay_from`` asks for after ``outcome``, in seconds, or ``None``.

        Raises:
            TypeError: It returned neither seconds (a number, a ``timedelta``) nor ``None``.
            ValueError: It returned a negative number or NaN.
        """
        assert self.delay_from is not None  # noqa: S101 - the caller checked
        value = self.delay_from(outcome)
        if value is None:
            return None
        seconds = seconds_of(value)
        if seconds is None:
            rule = "it must return seconds (a number or a timedelta) or None"
            raise wrong_return(f"retry {self.name!r}: delay_from", value, rule)
        if not seconds >= 0:
            rule = "seconds must be >= 0"
            raise wrong_return(f"retry {self.name!r}: delay_from", value, rule, kind=ValueError)
        return seconds

    def count_stop(self, reason: str) -> None:
        """Count an execution this retry stopped, by the stop's ``reason``: the one rule of those counts.

        ``"not_retryable"`` in ``non_retryable``; any other reason (a give-up) in ``exhausted``,
        and ``"budget"`` in ``retries_denied`` too.
        """
        stats = self.stats
        with self.lock:
            if reason == _NOT_RETRYABLE:
                stats.non_retryable += 1
            else:
                stats.exhausted += 1
                if reason == "budget":
                    stats.retries_denied += 1

    def _give_up_note(self, attempt: int, wait: _Wait, made_in_total: int) -> str:
        """Describe why retrying stopped, for the re-raised exception."""
        max_attempts = self.policy.max_attempts
        head = f"{_NOTE_PREFIX}{self.name!r}: gave up after {attempt} of {max_attempts} attempt"
        head += "s" if max_attempts > 1 else ""
        reason = wait.reason
        limit = max(wait.remaining, 0.0) if reason == "deadline" else self.policy.max_delay
        delay, bound = _told_apart(wait.delay, limit)
        if wait.source == _OUTCOME:
            backoff = f"the {delay} s delay the outcome asked for (delay_from)"
        else:
            backoff = f"a {delay} s backoff"
        if reason == "deadline":
            return f"{head}: {backoff} would overrun the deadline ({bound} s left)"
        if reason == "max_delay":
            return f"{head}: {backoff} is over max_delay ({bound} s)"
        if reason == "budget":
            return f"{head}: the retry budget allows no more retries now ({self.budget!r})"
        if reason == "max_attempts_total":
            return (
                f"{head}: the execution made {made_in_total} attempt{'s' if made_in_total > 1 else ''} "
                "in total, its cap (max_attempts_total)"
            )
        return head

    def attempt_timed_out(self, telemetry: StrategyTelemetry, timeout: float) -> None:
        """Count and report an attempt that hit its own timeout."""
        with self.lock:
            self.stats.attempt_timeouts += 1
        if telemetry.enabled:
            telemetry.report(_TIMEOUT, TimeoutOccurred(timeout, "attempt"))

    def cancelled(self, in_attempt: bool) -> None:
        """Count an execution cancelled during an attempt (``in_attempt``) or a backoff.

        Never blocking on the lock while the execution's coroutine is being closed (a task its
        closed loop left pending, freed by the garbage collector on whichever thread allocates,
        maybe one that holds this lock: :func:`~otel_resilience.engine.closing.give_back`).
        """
        give_back(self.lock, self._count_cancelled, in_attempt)

    def _count_cancelled(self, in_attempt: bool) -> None:
        """:meth:`cancelled`, taking the lock."""
        with self.lock:
            if in_attempt:
                next(self.stats._other_attempts)
            self.stats.cancelled += 1

    def accepts(self, result: object, attempt: int) -> bool:
        """Return whether ``result`` of this retry's ``attempt`` (1: the first) ends the execution.

        An accepted result is counted as the execution's success; a retried one is left to
        :meth:`schedule`.
        """
        check = self.retry_on_result
        if check is not None:
            retried: object = check(result)
            if retried is not False and retried is not True:  # a bool is taken as it is, with no call
                retried = verdict(retried, "RetryPolicy.retry_on_result", self.name)
            if retried:
                return False
        if attempt == 1:  # no local: two bytecodes less, for the NOP of on_success's try
            next(self.stats._first_attempt_successes)
        else:
            stats = self.stats
            next(stats._other_attempts)
            next(stats._successes_after_retry)
        return True


class _Attempts:
    """The token of one execution of a retry step once it needs one: its attempts and their scope.

    Created at admission when an attempt listener wants the first attempt's scope, else at the
    first retry: the execution whose first attempt is accepted allocates none.

    Attributes:
        count: How many attempts this step made in this execution, the running one included
            (what ``max_attempts`` and the backoff schedule count).
        handles: The running attempt's scope, or ``None`` when none is open.
        previous: This execution's latest backoff, or ``None`` before the first (what
            ``Jitter.DECORRELATED`` grows from: per execution, never in the shared policy).
        withdrawal: The budget's receipt for the retry scheduled last (``None``: no budget),
            given back if that retry does not run (:meth:`_RetryStep.give_back`).
    """

    __slots__ = ("count", "ctx", "handles", "previous", "telemetry", "withdrawal")

    def __init__(self, ctx: ExecutionContext, telemetry: StrategyTelemetry, handles: Any = None) -> None:
        self.count = 1
        self.ctx = ctx
        self.telemetry = telemetry
        self.handles = handles
        self.previous: float | None = None
        self.withdrawal: int | None = None

    def start(self) -> None:
        """Open the scope of the attempt about to run (a :class:`RunAgain` hook: after the wait)."""
        ctx = self.ctx
        self.handles = self.telemetry.start_attempt(ctx.operation, ctx.attempt)

    def end(self, outcome: Outcome, error: BaseException | None) -> None:
        """Close the running attempt's scope, if one is open, with ``outcome``."""
        handles = self.handles
        if handles:
            self.handles = None
            self.telemetry.end_attempt(handles, outcome, error)


class _Unscoped:
    """Attempt listeners of none: what a retry link reads when a step inside it opens its attempts' scopes."""

    __slots__ = ()

    attempt_listeners: Final = ()


_UNSCOPED: Final = _Unscoped()


class _RetryStep(Link[RetryPolicy]):
    """One retry link of a pipeline: the shared :class:`_RetryCore` and this link's telemetry.

    The driver runs each attempt (under the attempt timeout, when the policy sets one), waits the
    backoffs and calls ``on_retry``; this step says what follows each attempt. A link whose
    policy has a retry budget registers in
    :data:`~otel_resilience.engine.registry.BUDGETED_RETRIES`, where the telemetry reads the
    budget's level for as long as the link lives.
    """

    __slots__ = ("__weakref__", "_budget", "_core", "_first", "_hook_is_async", "_listening", "seconds")

    kind: ClassVar[str] = "retry"
    admit_waits: ClassVar[bool] = False  # admit returns a plain token
    opens_attempts: ClassVar[bool] = True  # each run's scope, a recovery's re-run's included
    names_failures: ClassVar[bool] = True  # its events name each failed attempt's error
    scope: str = "attempt"

    def __init__(self, core: _RetryCore, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.name, core.policy, core.clock, telemetry)
        self._core = core
        self._hook_is_async = core.hook_is_async
        self._budget = core.budget
        self.seconds = core.attempt_timeout
        self._listening: TelemetryHub | _Unscoped = telemetry.hub
        """Whose attempt listeners this link opens its attempts' scopes for (:meth:`settle`)."""
        # Attempt 1's token when no scope is open: a Counted when no result is judged (its success
        # is only counted, by the drivers: _RetryCore.accepts); the hooks take it for None.
        counts = core.stats._first_attempt_successes
        self._first = None if core.retry_on_result is not None else Counted(counts, None)
        if self._budget is not None:
            BUDGETED_RETRIES.register(self)
        elif self._first is not None and not self._hook_is_async:
            # admit then returns _first to every call while nobody listens to attempts (no
            # budget to deposit in, no hook the sync driver must refuse): the engine admits
            # with it unasked meanwhile, a call of admit less per execution
            self.standing = UnheardStanding(self._first)
            telemetry.hub.follow_attempts(self.standing)

    budget = ReadOnly[RetryBudget | None]("_budget", "The retry budget of the link's policy, or ``None``.")

    def settle(self) -> list[Any]:
        """Record the plan (:meth:`Step.settle`), and who opens the scope of each attempt.

        This link opens them, unless a step inside it opens a scope for each run of the chain
        (:meth:`~otel_resilience.engine.step.Step.scopes_inside`: a hedging, whose race opens
        one for each of its attempts, the original too): that attempt's scope then is its, and
        this link opens none (no attempt has two spans with one number). Read once here, never
        per call: the link then reads attempt listeners of none (:data:`_UNSCOPED`).
        """
        self._listening = _UNSCOPED if self.scopes_inside() else self._telemetry.hub
        return super().settle()

    def get_stats(self) -> dict[str, int]:
        """Return the retry's counts (shared by all its links), as :meth:`Retry.get_stats` does."""
        core = self._core
        return snapshot(core.lock, core.stats.as_dict)

    @property
    def policy_name(self) -> str:
        """The policy (pipeline) the link runs in: its own name when the retry runs alone."""
        source = self._telemetry.source
        return source.pipeline or source.name

    def admit(self, ctx: ExecutionContext) -> _Attempts | Counted | None:
        """Refuse an async ``on_retry`` under the sync driver; deposit in the budget; open attempt 1's scope.

        The scope is opened when an attempt listener wants it; the budget (when the policy has
        one) counts the execution's first attempt (once: a recovery's re-run admits the retry
        again, as attempt 2 or later, and deposits nothing). With no scope, the token is the link's
        ``Counted`` when no result is judged (a first success is only counted), else ``None``.

        Raises:
            TypeError: ``on_retry`` is async and the sync driver runs the execution.
        """
        if self._hook_is_async and ctx.sync:
            raise self._core.async_hook_error()
        if self._budget is not None and ctx.attempt == 1:  # once per execution: not on a re-run
            self._budget.deposit()
        if self._listening.attempt_listeners:
            handles = self._telemetry.start_attempt(ctx.operation, ctx.attempt)
            return _Attempts(ctx, self._telemetry, handles) if handles else self._first
        return self._first

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> Action:
        """Return the accepted result; retry a result the policy retries, or return it when retrying stops.

        A retried result that came back while the task is being cancelled (the call swallowed
        its ``CancelledError``: :func:`~otel_resilience.engine.cancelling.returned_on_the_way`)
        is not run again: :meth:`_returned_cancelled`. What ``retry_on_result`` raises ends the
        execution as a failure: :meth:`_misjudged`.
        """
        if type(token) is not _Attempts:  # attempt 1, no scope: None or the link's Counted (admit)
            try:
                if self._core.accepts(result, 1):
                    return None
            except BaseException as error:
                self._misjudged(error, counted=False)
                raise
            if returned_on_the_way(ctx):
                self._returned_cancelled(ctx)
                return None
            return self._after(ctx, None, None, result)
        outcome = _FAILURE
        try:
            if self._core.accepts(result, token.count):
                outcome = _SUCCESS
                return None
        except BaseException as error:
            self._misjudged(error, counted=False)
            raise
        finally:
            token.end(outcome, None)
        if returned_on_the_way(ctx):
            self._returned_cancelled(ctx)
            return None
        return self._after(ctx, token, None, result)

    def _returned_cancelled(self, ctx: ExecutionContext) -> None:
        """End an execution whose retried result came back while its task is being cancelled: no retry.

        As an error on its way out of the cancellation ends it (:meth:`on_cancel`: the driver
        asks :func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`), it is counted
        cancelled, and nothing is scheduled (no backoff, no ``on_retry``, nothing withdrawn from
        the budget). The result is returned as the call returned it, a result the policy judged
        failed: the execution's outcome is a failure.
        """
        self._core.cancelled(in_attempt=True)
        ctx.result_failed()

    def on_failure(
        self, ctx: ExecutionContext, token: Any, error: Exception, late: object = NO_RESULT
    ) -> Action:
        """Retry ``error`` (after ``on_retry``); re-raise it, with the give-up note, when retrying stops.

        An enclosing scope's deadline, reached in a thread, is not judged: it passes to that
        scope (:func:`~otel_resilience.engine.deadline.passes_to_its_scope`), the attempt ended
        as that deadline's cancellation ends it in a task (:meth:`on_cancel`). ``late`` is the
        result of a sync attempt that returned after its own timeout (:meth:`on_late`); for a
        timeout of a step inside (the attempt timeout of a policy), the result that step handed
        on with it (:meth:`~otel_resilience.engine.context.ExecutionContext.take_late`).
        """
        if passes_to_its_scope(error):
            self.on_cancel(ctx, token, running=True)
            return None
        if type(token) is not _Attempts:  # attempt 1, no scope: None or the link's Counted (admit)
            token = None
        elif token.handles:
            token.end(classify_error(error), error)
        if late is NO_RESULT and type(error) is OperationTimeoutError:  # a timeout step's, inside?
            late = ctx.take_late(error)  # what it dropped, handed on (ExecutionContext.hand_late)
        return self._after(ctx, token, error, late=late)

    def on_late(self, ctx: ExecutionContext, token: Any, error: OperationTimeoutError, result: Any) -> Action:
        """Judge a sync attempt that returned ``result`` after its own timeout: the timeout ``error``.

        It is judged as any timed-out attempt (:meth:`on_failure`); its result, which the
        driver drops, is let go as a retried result is (:meth:`_after`: ``retry_on_result.dropped``
        hears of it first), whether or not the retry goes on.
        """
        return self.on_failure(ctx, token, error, result)

    def on_expired(
        self,
        ctx: ExecutionContext,  # noqa: ARG002 - only the error's timeout is reported
        token: Any,  # noqa: ARG002
        error: OperationTimeoutError,
    ) -> Action:
        """Count and report an attempt cut by its own timeout.

        The driver then hands ``error`` to :meth:`on_failure`, which decides as for any failure
        (a timed-out attempt is retried by default).
        """
        self._core.attempt_timed_out(self._telemetry, error.timeout)
        return None

    def on_expired_ignored(self, ctx: ExecutionContext, token: Any) -> None:  # noqa: ARG002
        """Count and report an attempt cut by its own timeout that caught it and returned (or raised)."""
        self._core.attempt_timed_out(self._telemetry, cast("float", self.seconds))

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        """Count the cancelled execution; close the running attempt's scope as it ended.

        Cancelled while not running (during a backoff, or ``on_retry``), the retry scheduled
        last never runs: its withdrawal goes back to the budget. A running attempt ends
        ``cancelled``, or ``timeout`` when the effective deadline ended it
        (:func:`~otel_resilience.engine.stats.attempt_ended`).

        A running attempt ended by a function that does not fit the driver
        (:class:`~otel_resilience.engine.calling.WrongDriver`, being handled by the driver that
        calls this) is no cancellation: a failed attempt the retry does not retry
        (:meth:`_refused`).
        """
        if running and (signal := refused()) is not None:
            self._refused(ctx, token, signal)
            return
        self._core.cancelled(in_attempt=running)
        if type(token) is _Attempts:  # else attempt 1, no scope: None or the link's Counted (admit)
            if running:
                token.end(*attempt_ended(handled_error()))
            else:
                self.give_back(token)
                token.end(_CANCELLED, None)

    def _refused(self, ctx: ExecutionContext, token: Any, signal: WrongDriver) -> None:
        """End an attempt the driver refused as the failure the caller gets, its ``TypeError``: not retried.

        The attempt's scope ends as a failure with that error's type, and the execution is
        counted as one ended by an error the retry does not retry (:meth:`_RetryCore.not_retried`).
        """
        error = signal.as_type_error()
        if type(token) is _Attempts:  # else attempt 1, no scope: None or the link's Counted (admit)
            token.end(_FAILURE, error)
            attempt = token.count
        else:
            attempt = 1
        self._core.not_retried(self._telemetry, ctx, attempt, error)

    def give_back(self, token: _Attempts) -> None:
        """Give the budget back the retry ``token`` scheduled last, which did not run (once)."""
        withdrawal = token.withdrawal
        if withdrawal is not None:
            token.withdrawal = None
            self._budget.refund(withdrawal)  # type: ignore[union-attr] # a receipt: a budget

    def _retry_stopped(self, ctx: ExecutionContext, retry: RunAgain) -> None:  # noqa: ARG002 - a Call's hook
        """A cancellation or an interrupt ended a hook called before ``retry``: it never runs, given back.

        The ``cancelled`` hook of the calls the retry makes between scheduling a retry and its
        backoff (``on_retry`` for a retry withdrawn from the budget, a ``dropped`` hook):
        the driver's :meth:`on_cancel` is given the token of the attempt that failed, which, after a
        first attempt with no scope of its own, is not the one the retry was scheduled on.
        """
        self.give_back(retry.token)

    def _misjudged(self, error: BaseException, *, counted: bool) -> None:
        """A policy function raised ``error`` judging an attempt: the execution ends, as the pipeline counts.

        An ``Exception`` ends it as a failure (:meth:`_ended_by_callback`); a cancellation or an
        interrupt as a cancelled execution (as :meth:`on_cancel` counts one). ``counted``: whether
        the attempt was counted as ended before the function ran (a failed one:
        :meth:`_RetryCore.schedule` counts it first); a result's (``retry_on_result``) is counted
        here, on the failure path, as a success counts nothing before
        :meth:`_RetryCore.accepts` returns.
        """
        core = self._core
        if not isinstance(error, Exception):
            core.cancelled(in_attempt=not counted)
            return
        if not counted:
            next(core.stats._other_attempts)
        self._ended_by_callback(None)

    def _ended_by_callback(self, retry: RunAgain | None) -> None:
        """A function of the user raised: the execution ends as a failure (the pipeline's count).

        A policy function judging an attempt (``retry_on``, ``no_retry_on``, ``delay_from``,
        ``retry_on_result``; ``retry`` ``None``), or a hook called before ``retry`` (``on_retry``,
        a ``dropped`` hook): the retry scheduled is given back, and the execution counted in
        ``non_retryable``, the error being one this retry does not retry.
        """
        if retry is not None:
            self.give_back(retry.token)
        core = self._core
        with core.lock:
            core.stats.non_retryable += 1

    def _after_hook(
        self,
        ctx: ExecutionContext,  # noqa: ARG002 - a Call's continuation
        retry: RunAgain,
        value: object,  # noqa: ARG002
        error: Exception | None,
    ) -> Action:
        """Continue after ``on_retry``: the scheduled retry, or the hook's error, which ends the execution.

        The error ends it as a failure (:meth:`_ended_by_callback`).
        """
        if error is None:
            return retry
        self._ended_by_callback(retry)
        try:
            raise error
        finally:
            del error  # its traceback holds this frame: not bound here (a cycle)

    def _after(
        self,
        ctx: ExecutionContext,
        token: _Attempts | None,
        error: Exception | None,
        result: object = None,
        late: object = NO_RESULT,
    ) -> Action:
        """Decide what follows a failed attempt (``error``, or a retried ``result`` when ``None``).

        ``late`` is the result of a sync attempt that returned after its own timeout (``error``),
        which the driver drops: ``retry_on_result.dropped`` hears of it first, as of a retried
        result, whether or not the retry goes on.

        Returns:
            ``None`` when retrying stops (after a late result with ``retry_on_result.dropped``:
            a :class:`~otel_resilience.engine.step.Call` of it, then ``error`` re-raised); else a
            :class:`RunAgain` after the backoff, preceded by a ``Call`` of ``on_retry`` when there
            is one, and first by one of ``retry_on_result.dropped`` for a retried result, or of
            ``retry_on.dropped`` for a retried error, when the predicate has that method
            (:attr:`RetryPolicy.retry_on_result`, :attr:`RetryPolicy.retry_on`), and of
            ``retry_on_result.dropped`` for a late result before them.
        """
        core = self._core
        failed = ctx.answered()
        if token is not None:
            token.withdrawal = None  # its retry ran (this attempt): never given back once it ran
        # A stop after a late result is counted once the result is let go: a cancellation may end
        # that hook, and counts the execution cancelled (on_cancel), never both.
        counts_stop = late is NO_RESULT or core.dropped is None
        try:
            if token is None:
                wait = core.schedule(self._telemetry, ctx, 1, error, result=result, count_stop=counts_stop)
            else:
                wait = core.schedule(
                    self._telemetry,
                    ctx,
                    token.count,
                    error,
                    result=result,
                    previous=token.previous,
                    count_stop=counts_stop,
                )
        except BaseException as raised:  # a policy function (retry_on, no_retry_on, delay_from) raised
            self._misjudged(raised, counted=True)
            raise
        if wait is None:
            return None
        if wait.reason is not None:  # a stop, counted once retry_on_result.dropped let the late result go
            assert error is not None  # noqa: S101 - a late result comes with its timeout
            return self._dropping(core.dropped, core.dropped_what, late, None, error, stop=wait.reason)
        if token is None:
            token = _Attempts(ctx, self._telemetry)
        token.count += 1
        token.previous = delay = wait.delay
        token.withdrawal = wait.withdrawal
        retry = RunAgain(delay, token, token.start if self._listening.attempt_listeners else None)
        action: Action
        if core.hook is None:
            action = retry
        elif wait.withdrawal is None:
            action = Call(core.hook, (failed, error), {}, self._after_hook, state=retry, what=core.hook_what)
        else:
            action = Call(
                core.hook,
                (failed, error),
                {},
                self._after_hook,
                state=retry,
                what=core.hook_what,
                cancelled=self._retry_stopped,
            )
        if error is None:
            dropped, what, outcome = core.dropped, core.dropped_what, result
        else:
            dropped, what, outcome = core.error_dropped, core.error_dropped_what, error
        if dropped is not None:  # the retried result or error, let go before the backoff
            action = self._dropping(dropped, what, outcome, retry, action)
        return action if late is NO_RESULT else self._let_go_late(late, retry, action)

    def _let_go_late(self, late: object, retry: RunAgain, then: Action) -> Action:
        """Have ``retry_on_result.dropped`` (if the predicate has it) let ``late`` go, then ``then``.

        ``late`` is a sync attempt's result that came after its own timeout; ``then`` what follows
        (``retry``'s actions). When retrying stops, :meth:`_after` has it let go itself.
        """
        core = self._core
        if core.dropped is not None:
            return self._dropping(core.dropped, core.dropped_what, late, retry, then)
        return then

    def _dropping(  # noqa: PLR0917 - a Call's figures, on a failure path
        self,
        dropped: Any,
        what: str,
        outcome: object,
        retry: RunAgain | None,
        then: Action | Exception,
        stop: str | None = None,
    ) -> Call:
        """Return the ``Call`` of a ``dropped`` hook told of ``outcome``, then ``then``.

        ``stop``: when retrying stopped (``retry`` ``None``), the reason whose count
        (:meth:`_RetryCore.count_stop`) waits for the hook to end, unless a cancellation ends it.
        """
        return Call(
            dropped,
            (outcome,),
            {},
            self._after_dropped,
            state=(retry, then, stop),
            what=what,
            cancelled=self._dropped_stopped,
        )

    def _dropped_stopped(
        self, ctx: ExecutionContext, state: tuple[RunAgain | None, Action | Exception, str | None]
    ) -> None:
        """A cancellation or an interrupt ended a ``dropped`` hook: as :meth:`_retry_stopped`.

        After a stop (``retry`` ``None``: a late result let go) nothing was scheduled, and the
        stop was not counted: :meth:`on_cancel` counts the execution cancelled.
        """
        if state[0] is not None:
            self._retry_stopped(ctx, state[0])

    def _after_dropped(
        self,
        ctx: ExecutionContext,  # noqa: ARG002 - a Call's continuation
        state: tuple[RunAgain | None, Action | Exception, str | None],
        value: object,  # noqa: ARG002 - what it returned (or awaited) is not used
        error: Exception | None,
    ) -> Action:
        """Continue once a ``dropped`` hook let the retried result (or error) go: ``on_retry``, the backoff.

        What it raised ends the execution, as an error of ``on_retry`` does (:meth:`_ended_by_callback`;
        counted as the stop when the retry had stopped, as it is when the hook returns). After a
        late result the retry stopped on, the timeout is re-raised.
        """
        retry, then, stop = state
        if stop is not None:  # retrying stopped: counted now that the hook ended (raising or not)
            self._core.count_stop(stop)
        if error is not None:
            if retry is not None:
                self._ended_by_callback(retry)
            try:
                raise error
            finally:
                del error  # its traceback holds this frame: not bound here (a cycle)
        if isinstance(then, Exception):  # retrying stopped after a late result: its timeout
            try:
                raise then from None
            finally:
                del then, state  # its traceback holds this frame: not bound here (a cycle)
        return then
