"""The counts of one retry, shared by every pipeline link of it."""

from __future__ import annotations

from otel_resilience.engine.counting import Counter, CounterValue, read_all

__all__ = ["RetryStats"]


class RetryStats:
    """Counts of one :class:`~otel_resilience.Retry` (shared by all of its steps), as plain integers.

    The counts that move on every call (``first_attempt_successes``) and on every retried
    execution (``retries``, ``other_attempts``, ``successes_after_retry``) are exact lock-free
    counters (:mod:`otel_resilience.engine.counting`); the rare ones change under the retry's
    lock. Counts are of things that have *ended*.

    Attributes:
        first_attempt_successes: Executions whose first attempt was accepted.
        successes_after_retry: Executions accepted on attempt 2 or later.
        exhausted: Executions given up on with a retryable error or result left
            (``RETRY_EXHAUSTED``: attempts ran out, the deadline left no room, the delay the
            outcome asked for was over ``max_delay``, the budget was spent, or the execution
            made its cap of attempts in total).
        retries_denied: Executions given up on because the policy's
            :class:`~otel_resilience.patterns.retry.RetryBudget` allowed no retry (also counted in
            ``exhausted``; stop reason ``"budget"``).
        non_retryable: Executions ended by an error the policy does not retry (an error one of its
            functions raised included: ``retry_on``, ``no_retry_on``, ``delay_from`` or
            ``retry_on_result`` judging an attempt, ``on_retry`` or a ``dropped`` hook before a
            retry; it ends the execution as a failure), by a result
            its ``retry_on_result`` rejected of an operation that may run only once (an HTTP
            POST: returned, a failure), or by a function that does not fit the driver (the
            ``TypeError`` the caller gets: a coroutine function given to the sync API, a plain
            function to the async one, a sync call of a policy with hedging).
        cancelled: Executions cancelled (or interrupted) during an attempt or a backoff, or in
            one of the policy's functions or hooks.
        retries: Backoffs scheduled (``RETRY_SCHEDULED``).
        attempt_timeouts: Attempts that hit their own ``attempt_timeout``.
        other_attempts: Attempts that ended other than as a first-attempt success.
    """

    __slots__ = (
        "_first_attempt_successes",
        "_other_attempts",
        "_retries",
        "_successes_after_retry",
        "attempt_timeouts",
        "cancelled",
        "exhausted",
        "non_retryable",
        "retries_denied",
    )

    def __init__(self) -> None:
        self._first_attempt_successes = Counter()
        self._successes_after_retry = Counter()
        self.exhausted = 0
        self.retries_denied = 0
        self.non_retryable = 0
        self.cancelled = 0
        self._retries = Counter()
        self.attempt_timeouts = 0
        self._other_attempts = Counter()

    first_attempt_successes = CounterValue(
        "_first_attempt_successes", "Executions whose first attempt was accepted."
    )
    successes_after_retry = CounterValue(
        "_successes_after_retry", "Executions accepted on attempt 2 or later."
    )
    retries = CounterValue("_retries", "Backoffs scheduled (``RETRY_SCHEDULED``).")
    other_attempts = CounterValue(
        "_other_attempts", "Attempts that ended other than as a first-attempt success."
    )

    @property
    def executions(self) -> int:
        """Executions that ended in one of the outcomes above.

        An execution ended by an exception from one of the policy's functions (a predicate,
        ``delay_from``, ``on_retry``, a ``dropped`` hook) is counted as the pipeline counts it: a
        failure in ``non_retryable``, a cancellation or an interrupt in ``cancelled``.
        """
        return self.as_dict()["executions"]

    @property
    def attempts(self) -> int:
        """Attempts that ended (the first ones included).

        A failed attempt is counted before the policy judges its error, so also when a
        predicate or ``delay_from`` raises; an attempt whose result ``retry_on_result`` raised on
        is counted once it raised (its result is judged on the success path, which counts
        nothing before).
        """
        return self.as_dict()["attempts"]

    @property
    def successes(self) -> int:
        """Executions that returned an accepted result."""
        return self.as_dict()["successes"]

    def as_dict(self) -> dict[str, int]:
        """Return every count (derived ones included) as a plain dict, each under its own name.

        The counters bumped without the lock are read once, together, and the derived counts
        are computed from those reads: read under the retry's lock (``Retry.get_stats``), the
        snapshot adds up however many threads count meanwhile.
        """
        first, after, retries, others = read_all(
            (self._first_attempt_successes, self._successes_after_retry, self._retries, self._other_attempts)
        )
        successes = first + after
        return {
            "executions": successes + self.exhausted + self.non_retryable + self.cancelled,
            "attempts": first + others,
            "retries": retries,
            "successes": successes,
            "first_attempt_successes": first,
            "successes_after_retry": after,
            "exhausted": self.exhausted,
            "retries_denied": self.retries_denied,
            "non_retryable": self.non_retryable,
            "cancelled": self.cancelled,
            "attempt_timeouts": self.attempt_timeouts,
        }
