"""Outcome counts of a pipeline: which outcome an ended execution has, counted exactly without a lock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import Outcome
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError

if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["PipelineStats", "classify_error"]


def classify_error(error: BaseException) -> Outcome:
    """Map an exception that escaped an execution to its :class:`Outcome`."""
    if isinstance(error, ExecutionRejectedError):
        return Outcome.REJECTED
    if isinstance(error, OperationTimeoutError):
        return Outcome.TIMEOUT
    if isinstance(error, Exception):
        return Outcome.FAILURE
    return Outcome.CANCELLED


class PipelineStats:
    """Outcome counts of one pipeline, exact without a lock.

    Every execution ends in exactly one of the disjoint counters: ``succeeded`` (first attempt),
    ``recovered`` (after a failed attempt or a recovery action), ``fallback`` (a fallback
    answered), ``rejected`` (a breaker or bulkhead refused it), ``timeouts`` (a deadline
    expired), ``errors`` (any other error reached the caller) or ``cancelled``. ``failed`` is
    ``errors + rejected + timeouts``. Each counter only grows, so exported totals are monotonic.

    Each counter is an exact lock-free counter (:mod:`otel_resilience.engine.counting`), so the
    sync driver counts exactly from any number of threads without taking a lock.
    """

    __slots__ = (
        "_cancelled",
        "_errors",
        "_fallback",
        "_recovered",
        "_rejected",
        "_succeeded",
        "_timeouts",
        "tally",
    )

    def __init__(self) -> None:
        self._succeeded = Counter()
        self._recovered = Counter()
        self._fallback = Counter()
        self._errors = Counter()
        self._rejected = Counter()
        self._timeouts = Counter()
        self._cancelled = Counter()
        counters = {
            Outcome.SUCCESS: self._succeeded,
            Outcome.RECOVERED: self._recovered,
            Outcome.FALLBACK: self._fallback,
            Outcome.FAILURE: self._errors,
            Outcome.REJECTED: self._rejected,
            Outcome.TIMEOUT: self._timeouts,
            Outcome.CANCELLED: self._cancelled,
        }
        # Keyed by the member's value: an Enum hashes in Python code, a str hashes once.
        self.tally: dict[str, Callable[[], int]] = {o._value_: c.__next__ for o, c in counters.items()}
        """``tally[outcome._value_]()`` counts one execution: :meth:`count` without a call frame
        (the drivers count every returned execution so)."""

    @property
    def succeeded(self) -> int:
        """Executions that returned on their first attempt."""
        return self._succeeded.value

    @property
    def recovered(self) -> int:
        """Executions that returned after a failed attempt or a recovery action."""
        return self._recovered.value

    @property
    def fallback(self) -> int:
        """Executions a fallback answered."""
        return self._fallback.value

    @property
    def errors(self) -> int:
        """Executions that ended with an error other than a rejection or a timeout."""
        return self._errors.value

    @property
    def rejected(self) -> int:
        """Executions a breaker or bulkhead rejected."""
        return self._rejected.value

    @property
    def timeouts(self) -> int:
        """Executions whose deadline expired."""
        return self._timeouts.value

    @property
    def cancelled(self) -> int:
        """Executions the caller cancelled (or interrupted)."""
        return self._cancelled.value

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

    def count(self, outcome: Outcome) -> None:
        """Count one ended execution in the counter of its ``outcome`` (a failure in ``errors``)."""
        self.tally[outcome._value_]()

    def as_dict(self) -> dict[str, int]:
        """Return the counts as a plain dict, each key saying what it counts.

        Returns:
            ``total``; ``successful`` = ``successful_first_attempt`` (:attr:`succeeded`) +
            ``successful_after_failure`` (:attr:`recovered`: the function answered after a
            failed attempt, through a retry or a recovery re-run); ``fallback``; ``failed`` =
            errors + ``rejected`` + ``timeouts``; ``cancelled``.
        """
        succeeded, recovered, fallback = self.succeeded, self.recovered, self.fallback
        errors, rejected, timeouts, cancelled = self.errors, self.rejected, self.timeouts, self.cancelled
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
