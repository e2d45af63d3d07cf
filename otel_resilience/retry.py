"""Retry with backoff: FIXED, LINEAR, EXPONENTIAL and RANDOM delays, jitter, a timeout per attempt.

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
  stopped. When a *result* was being retried (:attr:`RetryPolicy.retry_on_result`) and attempts
  run out, the last result is returned.
* **What is retried.** ``Exception`` subclasses only: ``asyncio.CancelledError``,
  ``KeyboardInterrupt`` and ``SystemExit`` are never caught. Rejections
  (:class:`~otel_resilience.errors.ExecutionRejectedError`: an open breaker, a full bulkhead) are
  not retried by default: the dependency was not even called, and retrying a rejection only
  hammers the protection. :attr:`RetryPolicy.no_retry_on` wins over :attr:`RetryPolicy.retry_on`.
* **Default jitter: proportional, +/- 25 %** (Polly's factor for constant and linear backoffs).
  It de-synchronises clients that failed together (no thundering herd) while every delay stays
  within a quarter of the documented schedule, and a retry never fires at once, as full jitter
  can. ``Jitter.FULL`` (AWS "full jitter", uniform in ``[0, d]``) is there for the widest spread.
* **Deadlines are respected.** Before each backoff, if the enclosing deadline
  (:func:`~otel_resilience.engine.context.time_remaining`) leaves no more than the delay, the retry
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
  publishes the deadline to the callee and turns a late result into a timeout.
* **``on_retry(attempt, error)``** runs before each backoff, after the decision to retry;
  ``attempt`` is the number of the attempt that failed, unique in the execution (so the first
  call is ``on_retry(1, error)``) and
  ``error`` is ``None`` when a result was retried. The async drivers accept sync and async
  callbacks; the sync drivers refuse an async callback with ``TypeError`` before anything runs.
  An exception raised by the callback propagates (the execution ends with it): a bug in a
  user's hook must not be hidden.

Telemetry (through the engine's facade; this module never imports OpenTelemetry):

* ``Event.RETRY_SCHEDULED`` (:class:`~otel_resilience.engine.events.RetryScheduled`) before each
  backoff.
* ``Event.RETRY_EXHAUSTED`` (:class:`~otel_resilience.engine.events.RetryExhausted`) when a
  *retryable* failure or result is given up on: reason ``"max_attempts"``, ``"deadline"`` or
  ``"max_attempts_total"`` (the execution made its cap of attempts in total, see below). An
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

The hot path (a first attempt that succeeds, no attempt listener) takes no lock, formats
nothing and allocates nothing but the coroutine frame: one counter is bumped and the result is
returned.
"""

from __future__ import annotations

import enum
import inspect
import math
import random
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Final, ParamSpec, TypeVar, overload

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import (
    AsyncDeadline,
    ExecutionContext,
    SyncDeadline,
    time_remaining,
)
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import (
    Event,
    Outcome,
    RetryExhausted,
    RetryScheduled,
    StrategyTelemetry,
    TelemetrySource,
    TimeoutOccurred,
    error_type_name,
)
from otel_resilience.engine.pipeline import (
    Pipeline,
    PipelineBuilder,
    check_protectable,
    classify_error,
    protect_with,
    standalone,
)
from otel_resilience.engine.strategy import Strategy
from otel_resilience.engine.validation import (
    check_callable,
    check_duration,
    check_exception_types,
    check_int,
    check_name,
    check_number,
    describe,
    fail,
)
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError

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
    "RetryPolicy",
    "RetryStats",
    "RetryStrategy",
    "retry",
    "retry_async",
    "retry_sync",
]

P = ParamSpec("P")
R = TypeVar("R")

OnRetry = Callable[[int, Exception | None], object]
"""``on_retry(attempt, error)``: sync, or (async drivers only) returning an awaitable."""

ErrorSelector = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""Which errors: an exception type, a tuple of types, or a predicate ``(error) -> bool``."""

ResultPredicate = Callable[[Any], bool]
"""``retry_on_result(result) -> bool``: ``True`` means the result is retried."""


class RetryStrategy(enum.Enum):
    """How the delay grows from one retry to the next (see :meth:`RetryPolicy.compute_delay`)."""

    FIXED = "fixed"
    """The same delay every time: ``initial_delay``."""
    EXPONENTIAL = "exponential"
    """``initial_delay * multiplier ** (attempt - 1)``."""
    LINEAR = "linear"
    """``initial_delay * attempt``."""
    RANDOM = "random"
    """Uniform in ``[initial_delay, max_delay]``: both bounds are the range, so set both.

    ``max_delay``'s default (60 s) is sized as a cap for the growing strategies; with the
    defaults a RANDOM backoff draws in ``[1, 60]`` s, 30 s on average. A range such as
    ``initial_delay=0.5, max_delay=2.0`` spreads retries without waiting long."""


class Jitter(enum.Enum):
    """How a computed delay ``d`` is randomised (not applied to ``RetryStrategy.RANDOM``)."""

    NONE = "none"
    """``d`` exactly."""
    FULL = "full"
    """Uniform in ``[0, d]`` (AWS "full jitter")."""
    PROPORTIONAL = "proportional"
    """Uniform in ``[d * (1 - jitter_ratio), d * (1 + jitter_ratio)]``."""


DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_STRATEGY: Final = RetryStrategy.EXPONENTIAL
DEFAULT_INITIAL_DELAY: Final = 1.0
DEFAULT_MULTIPLIER: Final = 2.0
DEFAULT_MAX_DELAY: Final = 60.0
DEFAULT_JITTER: Final = Jitter.PROPORTIONAL
DEFAULT_JITTER_RATIO: Final = 0.25

_OWNER: Final = "RetryPolicy"
_NOTE_PREFIX: Final = "otel_resilience retry "
_DEFAULT_RNG: Final = random.Random()  # noqa: S311 - backoff jitter, not cryptography


def _enum_member(field: str, enum_cls: type[enum.Enum], value: object) -> Any:
    """Return ``value`` as a member of ``enum_cls`` (its string value is accepted too)."""
    if isinstance(value, enum_cls):
        return value
    for member in enum_cls:
        if member.value == value:
            return member
    allowed = ", ".join(repr(m.value) for m in enum_cls)
    raise fail(_OWNER, field, f"a {enum_cls.__name__} (or one of {allowed})", value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait in between.

    Every field is validated at construction: a bad value raises ``ValueError`` (or
    ``TypeError`` for a wrong type) naming ``RetryPolicy.<field>``, the rule and the value.
    Durations are seconds (``int``/``float``) or ``datetime.timedelta``, stored as ``float``
    seconds; ``strategy`` and ``jitter`` also accept their string values.

    Raises:
        ValueError: A value breaks its rule, or two fields contradict each other.
        TypeError: A value has the wrong type.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Attempts in total, the first included (``>= 1``; 1 means no retry). Default: 3."""
    strategy: RetryStrategy = DEFAULT_STRATEGY
    """How delays grow. Default: ``RetryStrategy.EXPONENTIAL``."""
    initial_delay: float = DEFAULT_INITIAL_DELAY
    """Seconds (or a ``timedelta``) before the first retry, ``>= 0``. Default: 1.0 s."""
    multiplier: float = DEFAULT_MULTIPLIER
    """Growth factor of ``EXPONENTIAL`` (``>= 1`` there; ``> 0`` and unused otherwise). Default: 2.0."""
    max_delay: float = DEFAULT_MAX_DELAY
    """Seconds (or a ``timedelta``) that bound every delay, after jitter; ``>= initial_delay``.
    With ``RetryStrategy.RANDOM`` it is the top of the range delays are drawn from, so set it
    there (the default draws up to 60 s). Default: 60.0 s."""
    jitter: Jitter = DEFAULT_JITTER
    """How each delay is randomised. Default: ``Jitter.PROPORTIONAL``."""
    jitter_ratio: float = DEFAULT_JITTER_RATIO
    """Spread of ``Jitter.PROPORTIONAL`` as a fraction of the delay (``0 < r <= 1`` there,
    ``0 <= r <= 1`` otherwise). Default: 0.25 (+/- 25 %)."""
    attempt_timeout: float | None = None
    """Seconds (or a ``timedelta``) one attempt may take, ``> 0``; ``None`` for no limit.
    Default: ``None``."""
    retry_on: ErrorSelector = (Exception,)
    """Errors that are retried: ``Exception`` subclasses or a predicate. Default: ``(Exception,)``."""
    no_retry_on: ErrorSelector = (ExecutionRejectedError,)
    """Errors never retried, even if ``retry_on`` matches them: types or a predicate.
    Default: ``(ExecutionRejectedError,)`` (open breaker, full bulkhead)."""
    retry_on_result: ResultPredicate | None = None
    """``(result) -> bool``; ``True`` retries the result, and the last one is returned when
    attempts run out. Default: ``None`` (results are never retried)."""

    def __post_init__(self) -> None:
        check_int(_OWNER, "max_attempts", self.max_attempts, minimum=1)
        strategy = _enum_member("strategy", RetryStrategy, self.strategy)
        object.__setattr__(self, "strategy", strategy)
        initial = check_duration(_OWNER, "initial_delay", self.initial_delay, allow_zero=True)
        object.__setattr__(self, "initial_delay", initial)
        multiplier = check_number(_OWNER, "multiplier", self.multiplier, minimum=0.0, min_inclusive=False)
        if strategy is RetryStrategy.EXPONENTIAL and multiplier < 1:
            raise fail(_OWNER, "multiplier", ">= 1 when strategy is EXPONENTIAL", self.multiplier)
        object.__setattr__(self, "multiplier", multiplier)
        max_delay = check_duration(_OWNER, "max_delay", self.max_delay, allow_zero=True)
        if max_delay < initial:
            raise fail(_OWNER, "max_delay", f">= initial_delay ({initial:g} s)", self.max_delay)
        object.__setattr__(self, "max_delay", max_delay)
        jitter = _enum_member("jitter", Jitter, self.jitter)
        object.__setattr__(self, "jitter", jitter)
        if jitter is Jitter.PROPORTIONAL:
            ratio = check_number(
                _OWNER, "jitter_ratio", self.jitter_ratio, minimum=0.0, maximum=1.0, min_inclusive=False
            )
        else:
            ratio = check_number(_OWNER, "jitter_ratio", self.jitter_ratio, minimum=0.0, maximum=1.0)
        object.__setattr__(self, "jitter_ratio", ratio)
        if self.attempt_timeout is not None:
            timeout = check_duration(_OWNER, "attempt_timeout", self.attempt_timeout)
            object.__setattr__(self, "attempt_timeout", timeout)
        retry_on = check_exception_types(_OWNER, "retry_on", self.retry_on)
        if isinstance(retry_on, tuple):
            for error_type in retry_on:
                if not issubclass(error_type, Exception):
                    rule = "Exception subclasses or a predicate (cancellation is never retried)"
                    raise fail(_OWNER, "retry_on", rule, self.retry_on)
        object.__setattr__(self, "retry_on", retry_on)
        no_retry_on = check_exception_types(_OWNER, "no_retry_on", self.no_retry_on)
        object.__setattr__(self, "no_retry_on", no_retry_on)
        check_callable(_OWNER, "retry_on_result", self.retry_on_result, optional=True)

    def is_retryable(self, error: Exception) -> bool:
        """Return whether ``error`` is retried: it matches ``retry_on`` and not ``no_retry_on``.

        Args:
            error: The exception an attempt raised.

        Returns:
            ``True`` if the policy retries it.
        """
        excluded = self.no_retry_on
        if isinstance(excluded, tuple) and isinstance(error, excluded):
            return False
        if not isinstance(excluded, tuple) and excluded(error):
            return False
        included = self.retry_on
        if isinstance(included, tuple):
            return isinstance(error, included)
        return bool(included(error))

    def compute_delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the backoff in seconds after ``attempt`` failed (a pure function of the policy).

        With ``a`` the failed attempt (1-based), ``i`` = ``initial_delay``, ``m`` =
        ``multiplier`` and ``cap`` = ``max_delay``, the base delay is::

            FIXED        d = min(i, cap)
            LINEAR       d = min(i * a, cap)
            EXPONENTIAL  d = min(i * m ** (a - 1), cap)
            RANDOM       uniform(i, cap)          (already random: jitter is not applied)

        then jitter is applied and the result capped again, so ``max_delay`` bounds the final
        delay::

            NONE          d
            FULL          uniform(0, d)
            PROPORTIONAL  uniform(d * (1 - r), d * (1 + r))    with r = jitter_ratio
            delay = min(jittered, cap)

        Args:
            attempt: The attempt that failed, ``>= 1``.
            rng: The random source for jitter and ``RANDOM`` (default: a module-level one).
                Pass a seeded ``random.Random`` for reproducible delays.

        Returns:
            The delay in seconds, ``0 <= delay <= max_delay``.

        Raises:
            ValueError: If ``attempt`` is below 1.
        """
        if attempt < 1:
            msg = f"RetryPolicy.compute_delay: attempt must be >= 1, got {attempt!r}"
            raise ValueError(msg)
        source = _DEFAULT_RNG if rng is None else rng
        initial = self.initial_delay
        cap = self.max_delay
        strategy = self.strategy
        if strategy is RetryStrategy.RANDOM:
            return min(source.uniform(initial, cap), cap)
        if strategy is RetryStrategy.FIXED:
            base = initial
        else:
            try:
                if strategy is RetryStrategy.LINEAR:
                    base = initial * attempt
                else:
                    base = initial * self.multiplier ** (attempt - 1)
            except OverflowError:
                base = cap
        delay = min(base, cap)
        jitter = self.jitter
        if jitter is Jitter.FULL:
            delay = source.uniform(0.0, delay)
        elif jitter is Jitter.PROPORTIONAL:
            spread = delay * self.jitter_ratio
            delay = source.uniform(delay - spread, delay + spread)
        return max(0.0, min(delay, cap))


_DEFAULT_POLICY: Final = RetryPolicy()
"""The policy of a :class:`Retry` built without one (a frozen value, safe to share)."""


class RetryStats:
    """Counts of one :class:`Retry` (shared by all of its strategy nodes), as plain integers.

    The counts that move on every call (``first_attempt_successes``) and on every retried
    execution (``retries``, ``other_attempts``, ``successes_after_retry``) are exact lock-free
    counters (:mod:`otel_resilience.engine.counting`); the rare ones change under the retry's
    lock. Counts are of things that have *ended*.

    Attributes:
        first_attempt_successes: Executions whose first attempt was accepted.
        successes_after_retry: Executions accepted on attempt 2 or later.
        exhausted: Executions given up on with a retryable error or result left
            (``RETRY_EXHAUSTED``: attempts ran out, the deadline left no room, or the execution
            made its cap of attempts in total).
        non_retryable: Executions ended by an error the policy does not retry.
        cancelled: Executions cancelled (or interrupted) during an attempt or a backoff.
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
    )

    def __init__(self) -> None:
        self._first_attempt_successes = Counter()
        self._successes_after_retry = Counter()
        self.exhausted = 0
        self.non_retryable = 0
        self.cancelled = 0
        self._retries = Counter()
        self.attempt_timeouts = 0
        self._other_attempts = Counter()

    @property
    def first_attempt_successes(self) -> int:
        """Executions whose first attempt was accepted."""
        return self._first_attempt_successes.value

    @property
    def successes_after_retry(self) -> int:
        """Executions accepted on attempt 2 or later."""
        return self._successes_after_retry.value

    @property
    def retries(self) -> int:
        """Backoffs scheduled (``RETRY_SCHEDULED``)."""
        return self._retries.value

    @property
    def other_attempts(self) -> int:
        """Attempts that ended other than as a first-attempt success."""
        return self._other_attempts.value

    @property
    def executions(self) -> int:
        """Executions that ended in one of the outcomes above.

        An execution ended by an exception from a user callback (``on_retry`` or a predicate)
        is not counted.
        """
        return (
            self.first_attempt_successes
            + self.successes_after_retry
            + self.exhausted
            + self.non_retryable
            + self.cancelled
        )

    @property
    def attempts(self) -> int:
        """Attempts that ended (the first ones included)."""
        return self.first_attempt_successes + self.other_attempts

    @property
    def successes(self) -> int:
        """Executions that returned an accepted result."""
        return self.first_attempt_successes + self.successes_after_retry

    def as_dict(self) -> dict[str, int]:
        """Return every count (derived ones included) as a plain dict."""
        return {
            "executions": self.executions,
            "attempts": self.attempts,
            "retries": self.retries,
            "successes": self.successes,
            "first_attempt_successes": self.first_attempt_successes,
            "successes_after_retry": self.successes_after_retry,
            "exhausted": self.exhausted,
            "non_retryable": self.non_retryable,
            "cancelled": self.cancelled,
            "attempt_timeouts": self.attempt_timeouts,
        }


def _constant_delay(policy: RetryPolicy) -> float | None:
    """Return the delay every backoff of ``policy`` has, or ``None`` when it varies.

    A zero delay is constant whatever the strategy (except ``RANDOM`` with a non-zero cap) and
    the jitter: jittering zero gives zero.
    """
    cap = policy.max_delay
    strategy = policy.strategy
    if cap == 0.0 or (policy.initial_delay == 0.0 and strategy is not RetryStrategy.RANDOM):
        return 0.0
    if strategy is RetryStrategy.FIXED and policy.jitter is Jitter.NONE:
        return min(policy.initial_delay, cap)
    return None


def _attach_note(error: BaseException, note: str) -> None:
    """Attach ``note`` to ``error``, replacing an earlier retry note (reused exception objects)."""
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        notes[:] = [n for n in notes if not (isinstance(n, str) and n.startswith(_NOTE_PREFIX))]
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        error.__dict__.setdefault("__notes__", []).append(note)


class _RetryCore:
    """The sans-I/O state shared by a :class:`Retry` and its nodes: policy, decisions, counts.

    It never awaits and never sleeps; the drivers in :class:`_RetryNode` do. It holds no
    reference to the :class:`Retry`, so a short-lived retry is freed by reference counting.
    """

    __slots__ = (
        "_no_retry_types",
        "_retry_types",
        "attempt_timeout",
        "clock",
        "constant_delay",
        "hook",
        "hook_is_async",
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
        self.hook_is_async = hook is not None and inspect.iscoroutinefunction(hook)
        self.clock = clock
        self.rng = rng
        self.attempt_timeout = policy.attempt_timeout
        self.max_attempts = policy.max_attempts
        self.retry_on_result = policy.retry_on_result
        self.constant_delay = _constant_delay(policy)
        retry_on, no_retry_on = policy.retry_on, policy.no_retry_on
        self._retry_types = retry_on if isinstance(retry_on, tuple) else None
        self._no_retry_types = no_retry_on if isinstance(no_retry_on, tuple) else None
        self.stats = RetryStats()
        self.lock = threading.Lock()

    def is_retryable(self, error: Exception) -> bool:
        """:meth:`RetryPolicy.is_retryable`, with the selectors split once (type tuples or predicates)."""
        retry_types, no_retry_types = self._retry_types, self._no_retry_types
        if retry_types is None or no_retry_types is None:
            return self.policy.is_retryable(error)
        return isinstance(error, retry_types) and not isinstance(error, no_retry_types)

    def async_hook_error(self) -> TypeError:
        """Build the error for an async ``on_retry`` used with a sync driver."""
        return TypeError(
            f"retry {self.name!r}: on_retry is async (it returns an awaitable), which the sync "
            "driver cannot await; pass a plain function, or use the async API"
        )

    def schedule(
        self, telemetry: StrategyTelemetry, ctx: ExecutionContext, attempt: int, error: Exception | None
    ) -> float | None:
        """Decide what follows a failed ``attempt`` (``error``, or a retried result when ``None``).

        Counts the ended attempt, reports the event, and attaches the note on a give-up. The
        next attempt's number is taken from ``ctx`` (:meth:`ExecutionContext.next_attempt`),
        which refuses it once the execution made its cap of attempts in total.

        Args:
            telemetry: The node's facade.
            ctx: The execution: the failed attempt's number, the cap in total.
            attempt: How many attempts this retry made (the failed one included), for
                ``max_attempts`` and the backoff schedule.
            error: The failed attempt's error, or ``None`` when its result is retried.

        Returns:
            The delay before the next attempt, or ``None`` to stop (re-raise ``error``, or
            return the last result).
        """
        stats = self.stats
        if error is not None and not self.is_retryable(error):
            next(stats._other_attempts)
            with self.lock:
                stats.non_retryable += 1
            return None
        failed = ctx.attempt
        reason, delay, remaining = self._next_wait(ctx, attempt)
        next(stats._other_attempts)
        if reason is None:
            next(stats._retries)
        else:
            with self.lock:
                stats.exhausted += 1
        if reason is None:
            if telemetry._hub.event_listeners:
                args = RetryScheduled(failed, delay, error_type_name(error))
                telemetry.report(Event.RETRY_SCHEDULED, args)
            return delay
        if telemetry._hub.event_listeners:
            telemetry.report(Event.RETRY_EXHAUSTED, RetryExhausted(failed, error_type_name(error), reason))
        if error is not None:
            _attach_note(error, self._give_up_note(attempt, reason, delay, remaining, failed))
        return None

    def _next_wait(self, ctx: ExecutionContext, attempt: int) -> tuple[str | None, float, float]:
        """Return why retrying stops after ``attempt`` (``None``: it goes on), the backoff, the time left.

        Takes the next attempt's number from ``ctx`` when it goes on.
        """
        if attempt >= self.max_attempts:
            return "max_attempts", 0.0, math.inf
        constant = self.constant_delay
        delay = self.policy.compute_delay(attempt, self.rng) if constant is None else constant
        remaining = time_remaining(self.clock)
        if remaining <= delay:
            return "deadline", delay, remaining
        if ctx.next_attempt() is None:
            return "max_attempts_total", delay, remaining
        return None, delay, remaining

    def _give_up_note(
        self, attempt: int, reason: str, delay: float, remaining: float, made_in_total: int
    ) -> str:
        """Describe why retrying stopped, for the re-raised exception."""
        made = f"{attempt} of {self.policy.max_attempts} attempt{'s' if self.policy.max_attempts > 1 else ''}"
        if reason == "deadline":
            return (
                f"{_NOTE_PREFIX}{self.name!r}: gave up after {made}: a {delay:g} s backoff would "
                f"overrun the deadline ({max(remaining, 0.0):g} s left)"
            )
        if reason == "max_attempts_total":
            return (
                f"{_NOTE_PREFIX}{self.name!r}: gave up after {made}: the execution made "
                f"{made_in_total} attempt{'s' if made_in_total > 1 else ''} in total, its cap "
                "(max_attempts_total)"
            )
        return f"{_NOTE_PREFIX}{self.name!r}: gave up after {made}"

    def attempt_timed_out(self, telemetry: StrategyTelemetry, timeout: float) -> None:
        """Count and report an attempt that hit its own timeout."""
        with self.lock:
            self.stats.attempt_timeouts += 1
        if telemetry.enabled:
            telemetry.report(Event.TIMEOUT, TimeoutOccurred(timeout, "attempt"))

    def cancelled(self, in_attempt: bool) -> None:
        """Count an execution cancelled during an attempt (``in_attempt``) or a backoff."""
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
        if check is not None and check(result):
            return False
        stats = self.stats
        if attempt == 1:
            next(stats._first_attempt_successes)
        else:
            next(stats._other_attempts)
            next(stats._successes_after_retry)
        return True


class _RetryNode(Strategy):
    """One retry link of a pipeline, bound to the shared :class:`_RetryCore`."""

    __slots__ = ("_core", "_telemetry")

    kind: ClassVar[str] = "retry"

    def __init__(self, core: _RetryCore, telemetry: StrategyTelemetry) -> None:
        super().__init__()
        self._core = core
        self._telemetry = telemetry

    @property
    def name(self) -> str:
        """The retry's name."""
        return self._core.name

    @property
    def config(self) -> RetryPolicy:
        """The retry's policy."""
        return self._core.policy

    # -- async driver -------------------------------------------------------------------------

    async def execute(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain, retrying per the policy (async driver)."""
        core = self._core
        if self._telemetry._hub.attempt_listeners:
            return await self._attempts(ctx, 0, None, None)  # every attempt in a scope
        error: Exception | None = None
        try:
            if core.attempt_timeout is None:
                result = await self.next.execute(ctx)
            else:
                result = await self._timed_attempt(ctx, core.attempt_timeout)
        except Exception as exc:  # noqa: BLE001 - the policy decides which errors are retried
            error = exc
            result = None
        except BaseException:
            core.cancelled(in_attempt=True)
            raise
        else:
            if core.accepts(result, 1):
                return result
        return await self._attempts(ctx, 1, error, result)

    async def _timed_attempt(self, ctx: ExecutionContext, timeout: float) -> Any:
        """Run one attempt under its own deadline."""
        deadline = AsyncDeadline(self._core.clock, timeout, ctx.operation, "attempt")
        try:
            async with deadline:
                return await self.next.execute(ctx)
        except OperationTimeoutError:
            if deadline.expired:
                self._core.attempt_timed_out(self._telemetry, timeout)
            raise

    async def _attempts(
        self, ctx: ExecutionContext, attempt: int, error: Exception | None, result: Any
    ) -> Any:
        """Run attempts, each in an attempt scope when a listener wants one (the slow path).

        ``attempt`` is how many attempts this retry made so far: 0 when none ran yet (a listener
        wants every attempt timed, the first included), else the last one failed with ``error``
        (or returned the retried ``result``) and the next one comes after a backoff.
        """
        core = self._core
        telemetry = self._telemetry
        while True:
            if attempt:
                failed = ctx.attempt
                delay = core.schedule(telemetry, ctx, attempt, error)
                if delay is None:
                    if error is None:
                        return result
                    raise error
                await self._back_off(failed, error, delay)
            attempt += 1
            handles = None
            if telemetry._hub.attempt_listeners:
                handles = telemetry.start_attempt(ctx.operation, ctx.attempt)
            outcome = Outcome.FAILURE
            error = None
            try:
                if core.attempt_timeout is None:
                    result = await self.next.execute(ctx)
                else:
                    result = await self._timed_attempt(ctx, core.attempt_timeout)
            except Exception as exc:  # noqa: BLE001 - the policy decides which errors are retried
                error = exc
                result = None
                if handles:
                    outcome = classify_error(exc)
            except BaseException:
                outcome = Outcome.CANCELLED
                core.cancelled(in_attempt=True)
                raise
            else:
                if core.accepts(result, attempt):
                    outcome = Outcome.SUCCESS
                    return result
            finally:
                if handles:
                    telemetry.end_attempt(handles, outcome, error)

    async def _back_off(self, failed: int, error: Exception | None, delay: float) -> None:
        """Call ``on_retry`` for attempt ``failed``, then wait ``delay`` (a cancellation is counted)."""
        core = self._core
        try:
            hook = core.hook
            if hook is not None:
                pending = hook(failed, error)
                if inspect.isawaitable(pending):
                    await pending
            if delay > 0:
                await core.clock.sleep(delay)
        except Exception:
            raise
        except BaseException:
            core.cancelled(in_attempt=False)
            raise

    # -- sync driver --------------------------------------------------------------------------

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain, retrying per the policy (sync driver)."""
        core = self._core
        if core.hook_is_async:
            raise core.async_hook_error()
        if self._telemetry._hub.attempt_listeners:
            return self._attempts_sync(ctx, 0, None, None)  # every attempt in a scope
        error: Exception | None = None
        try:
            if core.attempt_timeout is None:
                result = self.next.execute_sync(ctx)
            else:
                result = self._timed_attempt_sync(ctx, core.attempt_timeout)
        except Exception as exc:  # noqa: BLE001 - the policy decides which errors are retried
            error = exc
            result = None
        except BaseException:
            core.cancelled(in_attempt=True)
            raise
        else:
            if core.accepts(result, 1):
                return result
        return self._attempts_sync(ctx, 1, error, result)

    def _timed_attempt_sync(self, ctx: ExecutionContext, timeout: float) -> Any:
        """Run one attempt under its own (published, checked-on-return) deadline."""
        returned = False
        try:
            with SyncDeadline(self._core.clock, timeout, ctx.operation, "attempt"):
                result = self.next.execute_sync(ctx)
                returned = True
        except OperationTimeoutError:
            if returned:
                self._core.attempt_timed_out(self._telemetry, timeout)
            raise
        return result

    def _back_off_sync(self, failed: int, error: Exception | None, delay: float) -> None:
        """The sync twin of :meth:`_back_off`."""
        core = self._core
        try:
            hook = core.hook
            if hook is not None:
                _call_sync_hook(core, hook, failed, error)
            if delay > 0:
                core.clock.sleep_sync(delay)
        except Exception:
            raise
        except BaseException:
            core.cancelled(in_attempt=False)
            raise

    def _attempts_sync(
        self, ctx: ExecutionContext, attempt: int, error: Exception | None, result: Any
    ) -> Any:
        """The sync twin of :meth:`_attempts`."""
        core = self._core
        telemetry = self._telemetry
        while True:
            if attempt:
                failed = ctx.attempt
                delay = core.schedule(telemetry, ctx, attempt, error)
                if delay is None:
                    if error is None:
                        return result
                    raise error
                self._back_off_sync(failed, error, delay)
            attempt += 1
            handles = None
            if telemetry._hub.attempt_listeners:
                handles = telemetry.start_attempt(ctx.operation, ctx.attempt)
            outcome = Outcome.FAILURE
            error = None
            try:
                if core.attempt_timeout is None:
                    result = self.next.execute_sync(ctx)
                else:
                    result = self._timed_attempt_sync(ctx, core.attempt_timeout)
            except Exception as exc:  # noqa: BLE001 - the policy decides which errors are retried
                error = exc
                result = None
                if handles:
                    outcome = classify_error(exc)
            except BaseException:
                outcome = Outcome.CANCELLED
                core.cancelled(in_attempt=True)
                raise
            else:
                if core.accepts(result, attempt):
                    outcome = Outcome.SUCCESS
                    return result
            finally:
                if handles:
                    telemetry.end_attempt(handles, outcome, error)


def _call_sync_hook(core: _RetryCore, hook: OnRetry, attempt: int, error: Exception | None) -> None:
    """Call ``on_retry`` from the sync driver; an awaitable it returns cannot be awaited there."""
    pending = hook(attempt, error)
    if inspect.isawaitable(pending):
        if inspect.iscoroutine(pending):
            pending.close()
        raise core.async_hook_error()


def _name_of(fn: Callable[..., Any]) -> str:
    """Return a bounded name for ``fn``: its qualified name, else its type's (also when reading it raises)."""
    try:
        name = getattr(fn, "__qualname__", None)
    except Exception:  # noqa: BLE001 - a broken attribute of a callable: name it after its type
        name = None
    if isinstance(name, str) and name.strip():
        return name
    return type(fn).__qualname__


def _not_callable(owner: str, fn: object) -> TypeError:
    """Build the error for a non-callable ``fn``."""
    return TypeError(f"{owner} needs a callable fn, got {describe(fn)} ({type(fn).__name__})")


class Retry:
    """A named retry: a policy, an optional ``on_retry`` hook, and counts.

    Use it on its own (:meth:`execute`, :meth:`execute_sync`, :meth:`protect`) or compose it with
    other patterns through :meth:`as_strategy`. All of them share one policy and one
    :class:`RetryStats`.

    Args:
        name: The retry's name, used in telemetry and in the give-up note (bounded: a
            configured or function name, never user data).
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)``, called before each backoff with the number of
            the attempt that failed (unique in the execution) and its error (``None`` when a
            result was retried). Sync or async; the sync drivers refuse an async one. Its
            exceptions propagate.
        clock: Time source for backoff sleeps and deadlines (inject a ``FakeClock`` in tests).
        rng: Random source for jitter and ``RANDOM`` delays (seed one for reproducible delays).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``name`` is empty.
    """

    __slots__ = ("__weakref__", "_core", "_standalone", "_telemetry")

    kind: ClassVar[str] = "retry"

    def __init__(
        self,
        name: str,
        policy: RetryPolicy | None = None,
        *,
        on_retry: OnRetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        check_name("Retry", "name", name)
        if policy is None:
            policy = _DEFAULT_POLICY
        elif not isinstance(policy, RetryPolicy):
            raise fail("Retry", "policy", "a RetryPolicy or None", policy, kind=TypeError)
        check_callable("Retry", "on_retry", on_retry, optional=True)
        if clock is not SYSTEM_CLOCK and not isinstance(clock, Clock):
            raise fail("Retry", "clock", "a Clock (now, sleep, sleep_sync)", clock, kind=TypeError)
        if rng is not None and not isinstance(rng, random.Random):
            raise fail("Retry", "rng", "a random.Random or None", rng, kind=TypeError)
        self._core = _RetryCore(name, policy, on_retry, clock, rng)
        source = TelemetrySource(self.kind, name)
        self._telemetry = StrategyTelemetry(source)
        self._standalone: Pipeline | None = None

    @property
    def _pipeline(self) -> Pipeline:
        """The instance's own one-link pipeline, built on first use."""
        pipeline = self._standalone
        return pipeline if pipeline is not None else standalone(self, "_standalone", self._build_pipeline)

    def _build_pipeline(self) -> Pipeline:
        core = self._core
        node = _RetryNode(core, self._telemetry)
        return PipelineBuilder(core.name, clock=core.clock, source=self._telemetry.source).add(node).build()

    @property
    def name(self) -> str:
        """The retry's name."""
        return self._core.name

    @property
    def policy(self) -> RetryPolicy:
        """The retry's policy."""
        return self._core.policy

    @property
    def config(self) -> RetryPolicy:
        """The retry's policy (the name every pattern uses for its configuration)."""
        return self._core.policy

    @property
    def stats(self) -> RetryStats:
        """The live counters (plain integers; read them, do not write them)."""
        return self._core.stats

    def get_stats(self) -> dict[str, int]:
        """Return a consistent snapshot of the counters.

        Returns:
            ``executions``, ``attempts``, ``retries``, ``successes``,
            ``first_attempt_successes``, ``successes_after_retry``, ``exhausted``,
            ``non_retryable``, ``cancelled`` and ``attempt_timeouts``; see :class:`RetryStats`.
        """
        with self._core.lock:
            return self._core.stats.as_dict()

    def as_strategy(self, pipeline: str | None = None) -> Strategy:
        """Return a new, unlinked pipeline node that retries with this instance's policy and counts.

        Args:
            pipeline: The name of the pipeline (policy) the node will run in, for telemetry.

        Returns:
            A :class:`~otel_resilience.engine.strategy.Strategy` of kind ``"retry"``.
        """
        return _RetryNode(self._core, StrategyTelemetry(TelemetrySource(self.kind, self.name, pipeline)))

    async def execute(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Return ``await fn(*args, **kwargs)``, retried per the policy.

        Args:
            fn: An async function (or any callable returning an awaitable).
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            The first accepted result (or the last result, if results were retried to the end).

        Raises:
            TypeError: If ``fn`` is not callable (before anything runs).
            Exception: The last error, re-raised as is (with a note) when retrying stopped.
        """
        if not callable(fn):
            raise _not_callable("Retry.execute", fn)
        return await self._pipeline.execute(fn, *args, **kwargs)

    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Return ``fn(*args, **kwargs)``, retried per the policy, in the calling thread.

        Backoffs block the thread (``clock.sleep_sync``).

        Args:
            fn: A plain function.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            The first accepted result (or the last result, if results were retried to the end).

        Raises:
            TypeError: If ``fn`` is not callable, or ``on_retry`` is async (before anything runs).
            Exception: The last error, re-raised as is (with a note) when retrying stopped.
        """
        if not callable(fn):
            raise _not_callable("Retry.execute_sync", fn)
        if self._core.hook_is_async:
            raise self._core.async_hook_error()
        return self._pipeline.execute_sync(fn, *args, **kwargs)

    @overload
    def protect(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def protect(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def protect(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn`` so that every call is retried; the signature is kept.

        The async or sync driver is chosen once, here, with ``inspect.iscoroutinefunction``.

        Args:
            fn: The function to protect.

        Returns:
            A wrapper with ``fn``'s signature and metadata (``functools.wraps``).

        Raises:
            TypeError: If ``fn`` is not callable, is an async generator function, or is sync
                while ``on_retry`` is async.
        """
        if not callable(fn):
            raise _not_callable("Retry.protect", fn)
        check_protectable(self.name, fn)
        if not inspect.iscoroutinefunction(fn) and self._core.hook_is_async:
            raise self._core.async_hook_error()
        return protect_with(self._pipeline, fn)

    def __repr__(self) -> str:
        return f"Retry({self.name!r}, {self.policy!r})"


async def retry_async(
    fn: Callable[..., Awaitable[R]],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> R:
    """Return ``await fn(*args, **kwargs)``, retried per ``policy``.

    Runs ``fn`` with a :class:`Retry` named after it (its ``__qualname__``), built on the first
    call and reused by later calls with the same name, policy object, hook, clock and random
    source (a :class:`Retry` holds no reference to the function).
    ``policy``, ``on_retry``, ``clock`` and ``rng`` are taken by this function, not passed on.

    Args:
        fn: An async function (or any callable returning an awaitable).
        *args: Its positional arguments.
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)`` before each backoff (sync or async).
        clock: Time source for sleeps and deadlines.
        rng: Random source for jitter.
        **kwargs: Its keyword arguments.

    Returns:
        The first accepted result (or the last result, if results were retried to the end).

    Raises:
        TypeError: If ``fn`` is not callable (before anything runs).
        Exception: The last error, re-raised as is (with a note) when retrying stopped.
    """
    if not callable(fn):
        raise _not_callable("retry_async", fn)
    runner = _one_shot(fn, policy, on_retry, clock, rng)
    return await runner._pipeline.execute(fn, *args, **kwargs)


def retry_sync(
    fn: Callable[..., R],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> R:
    """Return ``fn(*args, **kwargs)``, retried per ``policy``, in the calling thread.

    The sync twin of :func:`retry_async`; ``on_retry`` must be a plain function.

    Args:
        fn: A plain function.
        *args: Its positional arguments.
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)`` before each backoff (sync only).
        clock: Time source for sleeps and deadlines.
        rng: Random source for jitter.
        **kwargs: Its keyword arguments.

    Returns:
        The first accepted result (or the last result, if results were retried to the end).

    Raises:
        TypeError: If ``fn`` is not callable or ``on_retry`` is async (before anything runs).
        Exception: The last error, re-raised as is (with a note) when retrying stopped.
    """
    if not callable(fn):
        raise _not_callable("retry_sync", fn)
    runner = _one_shot(fn, policy, on_retry, clock, rng)
    if runner._core.hook_is_async:
        raise runner._core.async_hook_error()
    return runner._pipeline.execute_sync(fn, *args, **kwargs)


_ONE_SHOT_MAX: Final = 256
"""How many one-shot retries :func:`retry_async` / :func:`retry_sync` keep for reuse."""
_ONE_SHOT: dict[tuple[object, ...], tuple[RetryPolicy | None, Retry]] = {}


def _one_shot(
    fn: Callable[..., Any],
    policy: RetryPolicy | None,
    on_retry: OnRetry | None,
    clock: Clock,
    rng: random.Random | None,
) -> Retry:
    """Return the :class:`Retry` the one-shot functions run ``fn`` with.

    A :class:`Retry` does not hold the function it runs, so one built for the same name (the
    function's qualified name), policy object, hook, clock and random source is reused: the
    call builds nothing, and the retry's execution counts stay monotonic in telemetry. At most
    :data:`_ONE_SHOT_MAX` are kept (the cache is emptied when full). Arguments are validated by
    :class:`Retry` before anything is kept.
    """
    try:
        key = (_name_of(fn), id(policy), on_retry, clock, rng)
        entry = _ONE_SHOT.get(key)
    except TypeError:  # an unhashable hook or clock: build one for this call
        return Retry(_name_of(fn), policy, on_retry=on_retry, clock=clock, rng=rng)
    if entry is not None and entry[0] is policy:
        return entry[1]
    runner = Retry(key[0], policy, on_retry=on_retry, clock=clock, rng=rng)
    if len(_ONE_SHOT) >= _ONE_SHOT_MAX:
        _ONE_SHOT.clear()
    _ONE_SHOT[key] = (policy, runner)
    return runner


class _RetryDecorator:
    """What :func:`retry` returns: applied to a function, it builds one :class:`Retry` for it."""

    __slots__ = ("_clock", "_name", "_on_retry", "_policy", "_rng")

    def __init__(
        self,
        policy: RetryPolicy | None,
        on_retry: OnRetry | None,
        clock: Clock,
        rng: random.Random | None,
        name: str | None,
    ) -> None:
        self._policy = policy
        self._on_retry = on_retry
        self._clock = clock
        self._rng = rng
        self._name = name

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        if not callable(fn):
            raise _not_callable("retry", fn)
        name = self._name if self._name is not None else _name_of(fn)
        runner = Retry(name, self._policy, on_retry=self._on_retry, clock=self._clock, rng=self._rng)
        return runner.protect(fn)


def retry(
    policy: RetryPolicy | None = None,
    *,
    on_retry: OnRetry | None = None,
    clock: Clock = SYSTEM_CLOCK,
    rng: random.Random | None = None,
    name: str | None = None,
) -> _RetryDecorator:
    """Return a decorator that retries a sync or async function: ``@retry(RetryPolicy(...))``.

    Each decorated function gets its own :class:`Retry`, built once at decoration time and
    named after the function (``__qualname__``) unless ``name`` is given. The async or sync
    driver is chosen then, and the wrapper keeps the function's signature.

    Args:
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)`` before each backoff (async only for async functions).
        clock: Time source for sleeps and deadlines.
        rng: Random source for jitter.
        name: The retry's name in telemetry (default: the function's qualified name).

    Returns:
        The decorator.

    Raises:
        TypeError: If ``policy`` is not a ``RetryPolicy`` (e.g. ``@retry`` without parentheses).
    """
    if policy is not None and not isinstance(policy, RetryPolicy):
        raise fail("retry", "policy", "a RetryPolicy or None (use @retry())", policy, kind=TypeError)
    if name is not None:
        check_name("retry", "name", name)
    return _RetryDecorator(policy, on_retry, clock, rng, name)
