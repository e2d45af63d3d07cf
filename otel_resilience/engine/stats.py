"""Outcome counts of a pipeline: which outcome an ended execution has, counted exactly without a lock."""

from __future__ import annotations

from typing import Final, cast

from otel_resilience.engine.counting import Counter, CounterValue, read_all
from otel_resilience.engine.deadline import ended_by_deadline
from otel_resilience.engine.events import Outcome
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError

__all__ = ["CUT", "OUTCOME_OF", "PipelineStats", "attempt_ended", "classify_error"]

_REJECTED: Final = Outcome.REJECTED
_TIMEOUT: Final = Outcome.TIMEOUT
_FAILURE: Final = Outcome.FAILURE
_CANCELLED: Final = Outcome.CANCELLED
"""Read on every execution that raised, bound once: reading a member off its enum class is slow."""


_MAX_TYPES: Final = 256
"""Exception types whose outcome :data:`OUTCOME_OF` keeps (others are classified every time)."""


def _classify(kind: type[BaseException]) -> Outcome:
    """The outcome of an execution that raised an exception of type ``kind``: the one rule."""
    if issubclass(kind, ExecutionRejectedError):
        return _REJECTED
    if issubclass(kind, OperationTimeoutError):
        return _TIMEOUT
    if issubclass(kind, Exception):
        return _FAILURE
    return _CANCELLED


class _Outcomes(dict[type[BaseException], Outcome]):
    """The outcome of each exception type met, classified on first sight (:func:`_classify`)."""

    __slots__ = ()

    def __missing__(self, kind: type[BaseException]) -> Outcome:
        outcome = _classify(kind)
        if len(self) < _MAX_TYPES:  # bounded: a program that makes classes on the fly stays small
            self[kind] = outcome
        return outcome


OUTCOME_OF: Final = _Outcomes()
"""``OUTCOME_OF[type(error)]``: the outcome of an execution that raised ``error``.

The outcome is a function of the exception's type only, so it is computed once per type: a
pipeline reads it on every execution that raised with one look-up in C, no call of ours. The
look-up raises ``TypeError`` for a class that cannot be hashed: :func:`classify_error` classifies it.
"""


def classify_error(error: BaseException) -> Outcome:
    """Map an exception that escaped an execution to its :class:`Outcome`.

    A class that cannot be hashed (its metaclass defines ``__eq__`` and no ``__hash__``) is
    classified each time: :data:`OUTCOME_OF` cannot key it.
    """
    try:
        return OUTCOME_OF[type(error)]
    except TypeError:
        return _classify(type(error))


CUT: Final[tuple[Outcome, None]] = (_TIMEOUT, None)
"""How an attempt or an execution the effective deadline ended ends (:func:`attempt_ended`): a
``timeout`` with no error of its own (the telemetry names the timeout the caller gets)."""


def attempt_ended(error: BaseException) -> tuple[Outcome, BaseException | None]:
    """How an attempt or an execution that ended in ``error`` (raised, or being handled) ends: outcome, error.

    The one rule of both drivers, for every step that opens attempt scopes (a retry's attempt, a
    recovery's re-run; a hedged attempt is told the deadline's end by its race, whose task the
    deadline binds: :meth:`~otel_resilience.engine.hedge._Race.told`) and for the pipeline's
    executions. One the effective
    deadline ended (:func:`~otel_resilience.engine.deadline.ended_by_deadline`: an enclosing
    scope's timer cancelled it in a task, or its ``DeadlineReachedError`` ended it in a thread,
    a wait's included) is a ``timeout`` with no error of its own, as the caller gets the timeout
    the scope that owns the deadline raises (the telemetry names it so); any other error is
    classified by its type (:func:`classify_error`), a cancellation or an interrupt with no
    error. Called when an attempt did not return, never on a success. A pipeline applies the
    same rule to an execution that raised (:meth:`~otel_resilience.engine.pipeline.Pipeline._failed`),
    asking :func:`~otel_resilience.engine.deadline.ended_by_deadline` only about what its type
    makes a cancellation or a rejection (a wait the deadline cut in a thread is a rejection by
    type), the only outcomes a deadline changes, and keeps any other error for its listeners.
    """
    if ended_by_deadline(error):
        return CUT
    if isinstance(error, Exception):
        return classify_error(error), error
    return _CANCELLED, None


class _Count(CounterValue):
    """A count of :class:`PipelineStats`: the value of one outcome's counter."""

    def __init__(self, outcome: Outcome, doc: str) -> None:
        super().__init__("tally", doc)
        self._key = outcome

    def counter(self, instance: object) -> Counter:
        """Return the counter of this attribute's outcome."""
        return cast("PipelineStats", instance).tally[self._key]


class PipelineStats:
    """Outcome counts of one pipeline, exact without a lock.

    Every execution ends in exactly one of the disjoint counters: ``succeeded`` (first attempt),
    ``recovered`` (after a failed attempt or a recovery action), ``fallback`` (a fallback
    answered), ``rejected`` (a breaker or bulkhead refused it), ``timeouts`` (a deadline
    expired), ``errors`` (any other error reached the caller, or the result returned was one the
    policy judged a failure: ``retry_on_result``, ``hedge_on_result``, a breaker's
    ``record_result``) or ``cancelled``. ``failed`` is ``errors + rejected + timeouts``. Each
    counter only grows, so exported totals are monotonic.

    Each counter is an exact lock-free counter (:mod:`otel_resilience.engine.counting`), one per
    :class:`Outcome`, so the sync driver counts exactly from any number of threads without
    taking a lock.
    """

    __slots__ = ("tally",)

    def __init__(self) -> None:
        self.tally: dict[Outcome, Counter] = {outcome: Counter() for outcome in Outcome}
        """One counter per outcome, in the order of :class:`Outcome`: ``next(tally[outcome])``
        counts one execution, :meth:`count` without a call frame (a pipeline counts every
        execution it ends so, returned or failed)."""

    succeeded = _Count(Outcome.SUCCESS, "Executions that returned on their first attempt.")
    recovered = _Count(Outcome.RECOVERED, "Executions that returned after a failed attempt or a recovery.")
    fallback = _Count(Outcome.FALLBACK, "Executions a fallback answered.")
    errors = _Count(
        Outcome.FAILURE,
        "Executions ended by an error other than a rejection or a timeout, or by a result judged failed.",
    )
    rejected = _Count(Outcome.REJECTED, "Executions a breaker or bulkhead rejected.")
    timeouts = _Count(Outcome.TIMEOUT, "Executions whose deadline expired.")
    cancelled = _Count(Outcome.CANCELLED, "Executions the caller cancelled (or interrupted).")

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
        return self.successful + self.fallback + self.failed + self.cancelled

    def counts(self) -> list[int]:
        """Return every outcome's count, in the order of :class:`Outcome`'s members, in one read.

        ``counts()[i]`` is the count of ``list(Outcome)[i]`` (``FAILURE``'s is :attr:`errors`).
        """
        return read_all(self.tally.values())

    def count(self, outcome: Outcome) -> None:
        """Count one ended execution in the counter of its ``outcome`` (a failure in ``errors``)."""
        next(self.tally[outcome])

    def absorb(self, other: PipelineStats) -> None:
        """Add every count of ``other`` to this one's (folding a retired pipeline into totals).

        Each count only grows, so totals that absorb what retired pipelines counted stay
        monotonic when those pipelines go.
        """
        for outcome, counter in self.tally.items():
            counter.add(other.tally[outcome].value)

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a plain dict, each key saying what it counts.

        Returns:
            ``total``; ``successful`` = ``successful_first_attempt`` (:attr:`succeeded`) +
            ``successful_after_failure`` (:attr:`recovered`: the function answered after a
            failed attempt, through a retry or a recovery re-run); ``fallback``; ``failed`` =
            errors + ``rejected`` + ``timeouts``; ``cancelled``.
        """
        succeeded, recovered, fallback, errors, rejected, timeouts, cancelled = self.counts()
        failed = errors + rejected + timeouts
        return {
            "total": succeeded + recovered + fallback + failed + cancelled,
            "successful": succeeded + recovered,
            "successful_first_attempt": succeeded,
            "successful_after_failure": recovered,
            "fallback": fallback,
            "failed": failed,
            "rejected": rejected,
            "timeouts": timeouts,
            "cancelled": cancelled,
        }
