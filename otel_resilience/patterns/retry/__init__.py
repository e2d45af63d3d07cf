"""Retry with backoff: FIXED, LINEAR, EXPONENTIAL and RANDOM delays, jitter, a timeout per attempt.

Also a budget shared by many retries (:class:`RetryBudget`) and delays taken from the outcome
(:attr:`RetryPolicy.delay_from`, :func:`retry_after_delay`).

Use a :class:`Retry` instance (``await retry.execute(fn)``, ``retry.execute_sync(fn)``,
``@retry.protect``), the :func:`retry` decorator factory, or the one-shot functions
:func:`retry_async` / :func:`retry_sync`. The manager composes a retry with other patterns through
:meth:`Retry.as_strategy`.

How it behaves, and why:

* **Bounded by construction.** :attr:`RetryPolicy.max_attempts` is a finite ``int >= 1``: there is
  no "retry forever" (tenacity's ``stop_never`` is the thing to avoid).
* **The original exception is re-raised** when retries run out, never a wrapper, so that a
  caller's ``except ConnectionError`` keeps working (stamina). A note is attached to it
  (``add_note``; ``__notes__`` on 3.10) saying how many attempts were made and why retrying
  stopped: one per retry (an exception object raised again gets this retry's note replaced; a
  retry nested inside keeps its own), none on an exception that refuses notes. When a *result*
  was being retried (:attr:`RetryPolicy.retry_on_result`) and attempts run out, the last result
  is returned, and the execution counts as a failure.
* **What is retried.** ``Exception`` subclasses only: ``asyncio.CancelledError``,
  ``KeyboardInterrupt`` and ``SystemExit`` are never caught. Rejections
  (:class:`~otel_resilience.errors.ExecutionRejectedError`: an open breaker, a full bulkhead) are
  not retried by default: the dependency was not even called, and retrying a rejection only
  hammers the protection. :attr:`RetryPolicy.no_retry_on` wins over :attr:`RetryPolicy.retry_on`,
  so a type ``retry_on`` names that ``no_retry_on`` excludes whole is refused at construction.
  Nor is what a call hands back on its way out of its task's cancellation: an error raised while
  the ``CancelledError`` was handled
  (:func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`), or a retried result it
  returned after swallowing it (:func:`~otel_resilience.engine.cancelling.returned_on_the_way`):
  the execution is counted ``cancelled`` and it passes through, so that the retry never outlasts
  the timeout or ``task.cancel()`` that stopped the call.
* **Default jitter: proportional, +/- 25 %** (Polly's factor for constant and linear backoffs).
  It de-synchronises clients that failed together (no thundering herd) while every delay stays
  within a quarter of the documented schedule, and a retry never fires at once, as full jitter
  can. ``Jitter.FULL`` (AWS "full jitter", uniform in ``[0, d]``) is there for the widest spread,
  and ``Jitter.DECORRELATED`` (AWS "decorrelated jitter") draws each delay from the execution's
  previous one: ``min(max_delay, uniform(initial_delay, previous * 3))``.
* **A retry budget caps retry storms.** ``max_attempts`` bounds one call, not the load: when a
  dependency fails for everyone, three attempts each triple its traffic. A
  :class:`RetryBudget` shared by the retries of a dependency (``RetryPolicy(budget=...)``)
  allows retries only while they stay under ``ratio`` times the first attempts of its sliding
  window, plus a floor of ``min_retries_per_second``; past that a retry gives up at once, with
  the original error, a note, and stop reason ``"budget"`` (counted in ``retries_denied``).
* **Delays from the outcome.** ``RetryPolicy(delay_from=retry_after_delay)`` waits what the
  failure asks for: an error's ``retry_after`` (an open breaker's, a rate limiter's) or an HTTP
  ``Retry-After`` header of the attached response; ``None`` falls back to the strategy. Such a
  delay is not jittered and never clamped: over ``max_delay`` retrying gives up at once (stop
  reason ``"max_delay"``), past the deadline likewise (``"deadline"``). The default,
  ``delay_from=None``, keeps the strategy's delays.
* **Deadlines are respected.** Before each backoff, if the enclosing deadline
  (:func:`~otel_resilience.engine.deadline.time_left`) leaves no more than the delay, the retry
  gives up at once instead of sleeping past it (tenacity's ``stop_before_delay``).
* **A zero delay retries at once.** When the backoff is 0 (``initial_delay=0``, or
  ``max_delay=0``) no sleep is called at all: ``time.sleep(0)`` would give the core away (tens
  of microseconds) and ``asyncio.sleep(0)`` would cost a loop iteration per retry. An async
  retry with zero delay therefore does not yield to the event loop between attempts; it is
  bounded by ``max_attempts`` like any other. Use a small positive delay to yield.
* **A timeout per attempt** (:attr:`RetryPolicy.attempt_timeout`) runs each attempt under an
  :class:`~otel_resilience.engine.context.AsyncDeadline` with scope ``"attempt"``; a timed-out
  attempt raises :class:`~otel_resilience.errors.OperationTimeoutError`, which is retried by
  default. Sync attempts cannot be pre-empted: a :class:`~otel_resilience.engine.context.SyncDeadline`
  publishes the deadline to the callee and turns a late result into a timeout; that result,
  dropped, is told to ``retry_on_result.dropped`` when the predicate has it.
* **``on_retry(attempt, error)``** runs before each backoff, after the decision to retry;
  ``attempt`` is the number of the attempt that failed, unique in the execution (so the first
  call is ``on_retry(1, error)``) and
  ``error`` is ``None`` when a result was retried. The async drivers accept sync and async
  callbacks; the sync drivers refuse an async callback with ``TypeError`` before anything runs.
  An exception raised by the callback propagates (the execution ends with it): a bug in a
  user's hook must not be hidden.

Telemetry (through the engine's facade; this module never imports OpenTelemetry):

* ``Event.RETRY_SCHEDULED`` (:class:`~otel_resilience.engine.events.RetryScheduled`) before each
  backoff, with the delay's source: ``"strategy"`` or ``"outcome"``.
* ``Event.RETRY_EXHAUSTED`` (:class:`~otel_resilience.engine.events.RetryExhausted`) when a
  *retryable* failure or result is given up on: reason ``"max_attempts"``, ``"deadline"``,
  ``"budget"``, ``"max_delay"`` or ``"max_attempts_total"`` (the execution made its cap of
  attempts in total, see below). An
  error that is not retryable at all is not reported: retry did not give up on it, it was never
  retry's to handle (a rejection is already reported by the breaker or bulkhead that raised it).
* ``Event.TIMEOUT`` (:class:`~otel_resilience.engine.events.TimeoutOccurred`, scope
  ``"attempt"``) when an attempt's own timeout expired.
* An attempt scope around every attempt, the first included, while an awake execution
  listener wants them (the hub's ``attempt_listeners``): the listener times each attempt (the
  attempt duration histogram) and opens a span for every attempt but the execution's first,
  which the execution span covers.

**Attempt numbers are unique per execution.** The execution's first call is attempt 1; each
further attempt takes the next number from the execution
(:meth:`~otel_resilience.engine.context.ExecutionContext.next_attempt`), which recovery re-runs
take theirs from too, so a re-run does not restart the numbering. Attempt scopes, events and
``on_retry`` carry that number. ``max_attempts`` and the backoff schedule count this retry's own
attempts (a recovery re-run starts a new series of them). When the execution has a cap on
attempts in total (``ResilienceConfig.max_attempts_total``) and made them all,
``next_attempt`` refuses the next one: retry gives up with the original error, a note saying
the total cap stopped it, and stop reason ``"max_attempts_total"``.

The hot path (a first attempt that succeeds, no attempt listener, no budget) takes no lock,
formats nothing and allocates nothing but the coroutine frame: one counter is bumped and the
result is returned. A budget adds one deposit (a short lock) per execution.
"""

from __future__ import annotations

from otel_resilience.patterns.retry.budget import RetryBudget
from otel_resilience.patterns.retry.delays import parse_retry_after, retry_after_delay
from otel_resilience.patterns.retry.facade import _ONE_SHOT as _ONE_SHOT  # the one-shot cache, read by tests
from otel_resilience.patterns.retry.facade import _ONE_SHOT_MAX as _ONE_SHOT_MAX
from otel_resilience.patterns.retry.facade import Retry, retry, retry_async, retry_sync
from otel_resilience.patterns.retry.policy import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_JITTER,
    DEFAULT_JITTER_RATIO,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    DEFAULT_MULTIPLIER,
    DEFAULT_STRATEGY,
    Jitter,
    OnRetry,
    RetryPolicy,
    RetryStrategy,
)
from otel_resilience.patterns.retry.policy import (
    DelayFrom as DelayFrom,
)
from otel_resilience.patterns.retry.policy import (
    ErrorSelector as ErrorSelector,
)
from otel_resilience.patterns.retry.policy import (
    ResultPredicate as ResultPredicate,
)
from otel_resilience.patterns.retry.stats import RetryStats

__all__ = [
    "DEFAULT_INITIAL_DELAY",
    "DEFAULT_JITTER",
    "DEFAULT_JITTER_RATIO",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MULTIPLIER",
    "DEFAULT_STRATEGY",
    "Jitter",
    "OnRetry",
    "Retry",
    "RetryBudget",
    "RetryPolicy",
    "RetryStats",
    "RetryStrategy",
    "parse_retry_after",
    "retry",
    "retry_after_delay",
    "retry_async",
    "retry_sync",
]
