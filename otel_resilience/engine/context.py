"""Per-call execution context: what one logical execution carries through the strategy chain.

Each execution gets its own :class:`ExecutionContext` (an attempt that runs beside others, a
hedge, gets a fork of it). Deadlines live in :mod:`~otel_resilience.engine.deadline`; their names
are importable from here too, where they were defined before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from otel_resilience.engine.allocation import blank
from otel_resilience.engine.deadline import (
    AsyncDeadline,
    DeadlineReachedError,
    SyncDeadline,
    current_deadline,
    publish_deadline,
    sleep_sync_within_deadline,
    time_remaining,
    withdraw_deadline,
)
from otel_resilience.engine.events import Outcome

if TYPE_CHECKING:
    import weakref
    from collections.abc import Callable, Mapping

__all__ = [
    "NO_RESULT",
    "AsyncDeadline",
    "DeadlineReachedError",
    "ExecutionContext",
    "SyncDeadline",
    "current_deadline",
    "new_context",
    "publish_deadline",
    "sleep_sync_within_deadline",
    "start_context",
    "time_remaining",
    "withdraw_deadline",
]

_SUCCESS: Final = Outcome.SUCCESS
NO_RESULT: Final = object()
"""No result: what a sync run cut by a deadline returned when it raised, or none was handed on."""
_RECOVERED: Final = Outcome.RECOVERED
_FAILURE: Final = Outcome.FAILURE
_FALLBACK: Final = Outcome.FALLBACK


class ExecutionContext:
    """Everything one logical execution carries through the strategy chain.

    **Attempt numbers are unique per execution.** The execution's first call of the chain is
    attempt 1; every further attempt (a retry attempt, a recovery re-run, later a hedge) takes
    the next number with :meth:`next_attempt`, which is also where the execution's cap on
    attempts in total (:attr:`max_attempts`) is checked: the one place both retry and recovery
    ask before they call the dependency again.

    **Attempts that run side by side have contexts of their own.** One attempt at a time runs
    in the execution's context; an attempt started while others run (a hedge) runs in a context
    :meth:`fork` made, with its own :attr:`attempt` and :attr:`outcome`, so the engine and the
    steps serve parallel attempts without change.

    Attributes:
        fn: The protected callable.
        args: Its positional arguments.
        kwargs: Its keyword arguments.
        operation: The operation's name (bounded: a configured or function name).
        attempt: The number of the latest attempt started in this execution, starting at 1
            (the one running, as attempts run one after another). Read it; a strategy that
            starts another attempt takes its number with :meth:`next_attempt`. The number of
            the attempt whose outcome the execution holds, once its run of the chain ended (not
            the latest after a race), is :meth:`answered`.
        max_attempts: Attempts the execution may make in total, counted across retry,
            recovery and hedging (an attempt that called nothing gives its place back:
            :meth:`spare`); ``None`` for no cap (``ResilienceConfig.max_attempts_total``).
        outcome: What the execution counts as if it returns: :attr:`Outcome.SUCCESS` at first,
            :attr:`Outcome.RECOVERED` once a further attempt started (:meth:`next_attempt`),
            :attr:`Outcome.FAILURE` when it returns a result its policy judged a failure
            (:meth:`result_failed`), or what a strategy that answered (fallback) or recovered
            it (recovery, :meth:`recovered`) set.
        nested: On an attempt's context only, and unset until a race runs inside it (two
            hedgings in one chain): a weak reference to the latest such race, which the race
            this attempt belongs to stops in the turn it is over
            (:meth:`~otel_resilience.engine.hedge._Race.stop`).
        parent: The execution's context this attempt's context was forked from
            (:meth:`fork`), or ``None`` for an execution's own.
        properties: Free slot for custom strategies that pass data down (``None`` by default).
        held: On an attempt's context only, and unset until an attempt of a race that runs
            inside it (two hedgings in one chain) first waits for a step's admission: how many
            such attempts wait there now, or were stopped or turned away there (cancelled,
            interrupted, rejected), or were stopped before their tasks ran (their race stopped
            by the one this attempt belongs to); one fewer once a wait admits its attempt or
            raises anything but a rejection. Read with :attr:`branches` by
            :func:`~otel_resilience.engine.hedge.held_back`: every attempt run inside it held
            back, it ran nothing.
        branches: On an attempt's context only, and unset (one) until a race that runs inside it
            starts a hedge (:meth:`fork`): the attempts it runs side by side, its own chain's
            first and one more for each hedge started inside it, at any depth.
        queued: On an attempt's context only, and unset until the attempt first waits for a
            step's admission (:attr:`~otel_resilience.engine.actions.Wait.admission`: a
            bulkhead's queue, a rate limiter's permit): whether it waits there now, or was
            stopped there (cancelled, interrupted); cleared once the wait admits it or raises.
            Read it with :func:`~otel_resilience.engine.hedge.held_back`, which also asks that
            the attempt's chain never ran before: an attempt of a race that the race ends while
            so held back never ran its action.
        rejected: On an attempt's context (:meth:`fork`) only: whether a step of the chain the
            attempt runs rejected it, i.e. an
            :class:`~otel_resilience.errors.ExecutionRejectedError` came out of a step's wait for
            its admission (:meth:`~otel_resilience.engine.step.Step.execute`): the policy's own
            breaker, bulkhead or rate limiter, not a function the attempt called. Hedging starts
            no further hedge after such a rejection (:mod:`~otel_resilience.engine.hedge`).
        sync: Whether the sync driver runs it (a step that cannot serve that driver, an async
            hook say, refuses it in ``admit``, before anything runs).
    """

    __slots__ = (
        "answering",
        "args",
        "attempt",
        "branches",
        "fn",
        "held",
        "kwargs",
        "late",
        "max_attempts",
        "nested",
        "operation",
        "outcome",
        "parent",
        "properties",
        "queued",
        "rejected",
        "spared",
        "sync",
    )

    answering: tuple[int, int]
    """Unset until a race records which attempt answered, on its rare paths (:meth:`answered_by`)."""
    branches: int
    """Unset until a race run in this attempt starts a hedge (:meth:`fork`, on that rare path only)."""
    fn: Callable[..., Any]
    held: int
    """Unset until an attempt run in this attempt waits for its admission (on a nested wait only)."""
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    late: tuple[BaseException, Any]
    """Unset but between :meth:`hand_late` and :meth:`take_late` (never set on a call in time)."""
    operation: str
    attempt: int
    max_attempts: int | None
    nested: weakref.ref[Any]
    """Unset until a race runs in this attempt of another (two hedgings in one chain): that race."""
    outcome: Outcome
    parent: ExecutionContext | None
    properties: dict[str, Any] | None
    queued: bool
    """Unset until an attempt of a race first waits for its admission (never on an execution's own)."""
    rejected: bool
    spared: int
    """Unset until an attempt that called nothing gives its place under the cap back (:meth:`spare`)."""
    sync: bool

    def __init__(  # noqa: PLR0917 - positional: keyword arguments cost every execution
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        operation: str,
        max_attempts: int | None = None,
        sync: bool = False,
    ) -> None:
        """Start an execution: attempt 1, outcome :attr:`Outcome.SUCCESS` (drivers: :func:`start_context`)."""
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.operation = operation
        self.attempt = 1
        self.max_attempts = max_attempts
        self.sync = sync
        self.outcome = _SUCCESS
        self.parent = None
        self.properties = None

    def hand_late(self, error: BaseException, result: Any) -> None:
        """Hand on ``result``, what a sync run returned after a deadline, with its timeout ``error``.

        A timeout step inside a retry (the attempt timeout of a policy) drops the result and
        raises ``error``: the retry outside, which judges ``error``, lets the result go
        (:meth:`take_late`).
        """
        self.late = (error, result)

    def take_late(self, error: BaseException) -> Any:
        """Return the result handed on with ``error`` (:meth:`hand_late`), else :data:`NO_RESULT`.

        What was handed on is forgotten, whichever error it came with.
        """
        handed = getattr(self, "late", None)
        if handed is None:
            return NO_RESULT
        del self.late
        return handed[1] if handed[0] is error else NO_RESULT

    def fork(self, *, new_attempt: bool = True) -> ExecutionContext | None:
        """Start the context of an attempt that runs beside others of this execution (a hedge).

        The attempt takes its number from this execution (:meth:`_take_number`: numbers stay
        unique, the cap is shared, as for the attempts it starts itself) and records its outcome
        in a context of its own, whatever the other attempts do meanwhile. It is no re-run of
        the attempt this context makes: the outcomes of this context and of those it runs in are
        left as they are (a re-run, :meth:`next_attempt`, makes them ``RECOVERED``). Started in an
        attempt of a race (two hedgings in one chain), it is one more attempt run inside that
        attempt and each enclosing one (:attr:`branches`).

        Args:
            new_attempt: ``False`` for the context of the attempt this execution is making now
                (:attr:`attempt`, no new number, never refused): the first of a race of
                attempts, which must not share its context with the attempts started beside it.

        Returns:
            The attempt's context (:attr:`parent` is this one; :attr:`properties` a copy), or
            ``None`` when the cap refuses another attempt.
        """
        if new_attempt:
            number = self._take_number()
            if number is None:
                return None
            enclosing = self
            while enclosing.parent is not None:  # an attempt of a race, up to the execution
                enclosing.branches = getattr(enclosing, "branches", 1) + 1
                enclosing = enclosing.parent
        else:
            number = self.attempt
        child: ExecutionContext = new_context()
        start_context(child, self.fn, self.args, self.kwargs, self.operation, self.max_attempts, self.sync)
        child.attempt = number
        child.parent = self
        child.properties = None if self.properties is None else dict(self.properties)
        child.rejected = False  # set on attempts only: an execution's own context never reads it
        return child

    def next_attempt(self) -> int | None:
        """Take the number of a new attempt (a re-run), or refuse it when the execution's cap is reached.

        Call it before waiting for the attempt (a backoff, a re-run delay), so that a refused
        attempt costs no wait.

        Returns:
            The new attempt's number (:meth:`_take_number`), now :attr:`attempt`; ``None`` when
            the cap refuses it. Taken, it makes this context and those it runs in ``RECOVERED``.
        """
        parent = self.parent
        if parent is not None:  # an attempt of a fork: the execution numbers it
            number = parent.next_attempt()
            if number is None:
                return None
            self.attempt = number
        else:
            number = self._take_number()
            if number is None:
                return None
        # It recovers if a later attempt's result is accepted: whatever the last attempt ended
        # in (a failure, a result judged failed, an inner fallback's answer its policy did not
        # accept) is no longer the execution's.
        self.outcome = _RECOVERED
        return number

    def _take_number(self) -> int | None:
        """Take the number of a new attempt, or refuse it when the execution's cap is reached.

        The one place of the cap in total and of the numbering: the execution (the context at
        the root of :attr:`parent`) numbers every attempt, and each context on the way to it
        takes the number as its :attr:`attempt`. Nothing else changes: :meth:`next_attempt`
        (a re-run) and :meth:`fork` (an attempt beside) call it.

        Returns:
            One more than the latest number; ``None`` when :attr:`max_attempts` attempts were
            already made (not counting those that called nothing and gave their place back,
            :meth:`spare`): no further attempt may start.
        """
        parent = self.parent
        if parent is not None:
            number = parent._take_number()
            if number is None:
                return None
            self.attempt = number
            return number
        limit = self.max_attempts
        if limit is not None and self.attempt - getattr(self, "spared", 0) >= limit:
            return None
        self.attempt += 1
        return self.attempt

    def answered_by(self, number: int) -> None:
        """Record that the outcome the execution now holds is attempt ``number``'s (a race's end).

        A race of attempts ends with one attempt's outcome (the winner's, else the original's),
        while the execution's latest number (:attr:`attempt`) may be another's, started beside
        it (a hedge still running, or turned away). Called by the race on its rare paths only
        (a win once more than one attempt started, an end with no winner): one attempt started
        alone is the latest. Valid until the execution takes another number (:meth:`answered`).
        """
        self.answering = (self.attempt, number)

    def answered(self) -> int:
        """Return the number of the attempt whose outcome the execution holds (a failure's, to retry).

        :attr:`attempt` (the latest), unless a race ended with another attempt's outcome since
        the latest number was taken (:meth:`answered_by`). The one rule by which a step around
        a run of the chain (a retry: its events, ``on_retry``) names the attempt that answered;
        read on failure paths only.
        """
        answering: tuple[int, int] | None = getattr(self, "answering", None)
        if answering is not None and answering[0] == self.attempt:
            return answering[1]
        return self.attempt

    def spare(self) -> None:
        """Give the execution's cap back the place of this attempt, which took a number and called nothing.

        An attempt of a race that never ran its action (a hedge whose task never ran, one the
        chain turned away or the race ended while it was held back in its admission's wait) made
        no call: the cap in total (:attr:`max_attempts`, ``ResilienceConfig.max_attempts_total``)
        counts the calls made, so the execution may make another in its place. Its number stays
        taken: numbers stay unique (its span, its events keep it), and the next attempt takes
        the next one. Called on the attempt's context (:meth:`fork`): the execution that
        numbered it gets the place back, through every race it is nested in. On rare paths only.
        """
        execution = self
        while (parent := execution.parent) is not None:
            execution = parent
        execution.spared = getattr(execution, "spared", 0) + 1

    def result_failed(self) -> None:
        """Count the execution as a failure though it returns: its policy judged the result failed.

        The one rule for a result that no attempt made acceptable: a retry whose
        ``retry_on_result`` still rejects the result when retrying stops, a hedging whose
        ``hedge_on_result`` rejected every attempt's, a breaker whose ``record_result`` counted
        the attempt's result a failure of the dependency. The caller gets the result, but the
        execution is no success and did not recover: its outcome is :attr:`Outcome.FAILURE`
        (an error's, in the metrics, the span's status and the statistics), as is a failed HTTP
        response returned when attempts ran out. A further attempt (:meth:`next_attempt`), or a
        fallback that answers, decides again.
        """
        self.outcome = _FAILURE

    def result_accepted(self) -> bool:
        """Whether the result the execution returns now is accepted: not judged failed.

        Judged failed by :meth:`result_failed`, until a further attempt starts. What a step
        outside the one that judged it reads before it takes the result for a good one: a
        recovery's re-run (:meth:`recovered`), a fallback's last good value (:meth:`result_good`).
        """
        return self.outcome is not _FAILURE

    def result_good(self) -> bool:
        """Whether the result the execution returns now is a good value of the call.

        Accepted (:meth:`result_accepted`) and the call's own: not a value a pattern inside
        answered in its place (its outcome :attr:`Outcome.FALLBACK`: a recovery rule's
        fallback, a timeout's default). What a fallback's cache keeps as the last good value.
        """
        outcome = self.outcome
        return outcome is not _FAILURE and outcome is not _FALLBACK

    def recovered(self) -> bool:
        """Count the execution as recovered (a recovery's re-run returned), unless its result failed.

        A re-run whose result its policy judged a failure (:meth:`result_failed`) is no recovery:
        the execution stays a failure, and so does the recovery that ran it.

        Returns:
            Whether the execution recovered: ``False`` when the result failed.
        """
        if not self.result_accepted():
            return False
        self.outcome = _RECOVERED
        return True


new_context: Final = blank(ExecutionContext)
"""``new_context()``: an execution context not started yet (see :mod:`~otel_resilience.engine.allocation`)."""

start_context: Final = ExecutionContext.__init__
"""``start_context(new_context(), fn, args, kwargs, operation, max_attempts, sync)``: the
drivers' ``ExecutionContext(...)``, every argument given (keyword arguments cost a call)."""
