"""The retry policy: which failures are retried, how often, and the backoff between attempts.

:class:`RetryPolicy` is a frozen, validated value; :meth:`RetryPolicy.compute_delay` is a pure
function of it (plus a random source): a base delay per :class:`RetryStrategy`, then
:class:`Jitter`, capped by ``max_delay`` (``Jitter.DECORRELATED`` also reads the execution's
previous delay).
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from otel_resilience.engine.forking import fork_reseeded
from otel_resilience.engine.validation import (
    Derived,
    ExceptionTypeCollection,
    check_callable,
    check_called_with,
    check_disjoint,
    check_duration,
    check_error_selector,
    check_int,
    check_not_generator,
    check_number,
    check_predicate,
    check_sync_callable,
    fail,
    verdict,
)
from otel_resilience.errors import ExecutionRejectedError
from otel_resilience.patterns.retry.budget import RetryBudget

OnRetry = Callable[[int, Exception | None], object]
"""``on_retry(attempt, error)``: sync, or (async drivers only) returning an awaitable."""

ErrorSelector = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""Which errors: an exception type, a tuple of types, or a predicate ``(error) -> bool``."""

ResultPredicate = Callable[[Any], bool]
"""``retry_on_result(result) -> bool``: ``True`` means the result is retried."""

DelayFrom = Callable[[Any], float | timedelta | None]
"""``delay_from(outcome) -> seconds | None``: the failed attempt's error (or the retried result)
to the delay it asks for (seconds, or a ``timedelta``), or ``None`` for the strategy's."""


StrategyName = Literal["fixed", "exponential", "linear", "random"]
"""The string values :attr:`RetryPolicy.strategy` also accepts (those of :class:`RetryStrategy`)."""

JitterName = Literal["none", "full", "proportional", "decorrelated"]
"""The string values :attr:`RetryPolicy.jitter` also accepts (those of :class:`Jitter`)."""


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
    """How a computed delay ``d`` is randomised (not applied to ``RetryStrategy.RANDOM``).

    With ``RetryStrategy.RANDOM``, another jitter than the default is refused (it would be ignored).
    """

    NONE = "none"
    """``d`` exactly."""
    FULL = "full"
    """Uniform in ``[0, d]`` (AWS "full jitter")."""
    PROPORTIONAL = "proportional"
    """Uniform in ``[d * (1 - jitter_ratio), d * (1 + jitter_ratio)]``, the part above
    ``max_delay`` left out: a delay at the cap is uniform in ``[max_delay * (1 - jitter_ratio),
    max_delay]``, so that clients backing off at the cap still spread (cut at the cap after the
    draw, half of them would retry at the very same delay)."""
    DECORRELATED = "decorrelated"
    """AWS "decorrelated jitter": ``min(max_delay, uniform(initial_delay, previous * 3))``.

    ``previous`` is this execution's previous backoff (``initial_delay`` before the first; a
    delay taken from the outcome, see :attr:`RetryPolicy.delay_from`, counts too), so
    each delay grows from the one before it, at random, and clients that failed together drift
    apart. It replaces the strategy's schedule (the strategy is not used: another than the
    default, ``EXPONENTIAL``, is refused with it, and ``RANDOM``, a schedule of its own, too).
    The state lives in the execution, never in the shared policy: concurrent executions do not
    disturb each other's sequence."""


DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_STRATEGY: Final = RetryStrategy.EXPONENTIAL
DEFAULT_INITIAL_DELAY: Final = 1.0
DEFAULT_MULTIPLIER: Final = 2.0
DEFAULT_MAX_DELAY: Final = 60.0
DEFAULT_JITTER: Final = Jitter.PROPORTIONAL
DEFAULT_JITTER_RATIO: Final = 0.25

_OWNER: Final = "RetryPolicy"
_NOT_A_GENERATOR: Final = (
    "a function returning seconds or None, not a generator function (whose iterator, made before its "
    "body runs, is no delay)"
)
_COMPUTE: Final = "RetryPolicy.compute_delay"
"""The owner named by an error of :meth:`RetryPolicy.compute_delay`'s arguments."""
_DEFAULT_RNG: Final = fork_reseeded(random.Random())  # noqa: S311 - backoff jitter, not cryptography
"""The default source of jitter: seeded anew in a forked child, so workers forked from one
process do not back off in step (the thundering herd jitter exists to break)."""


def _enum_member(field: str, enum_cls: type[enum.Enum], value: object) -> Any:
    """Return ``value`` as a member of ``enum_cls`` (its string value is accepted too).

    Raises:
        TypeError: ``value`` is neither a member nor a ``str`` (the wrong type, as every field says).
        ValueError: ``value`` is a ``str`` that is no member's value.
    """
    if isinstance(value, enum_cls):
        return value
    allowed = ", ".join(repr(m.value) for m in enum_cls)
    rule = f"a {enum_cls.__name__} (or one of {allowed})"
    if not isinstance(value, str):
        raise fail(_OWNER, field, rule, value, kind=TypeError)
    for member in enum_cls:
        if member.value == value:
            return member
    raise fail(_OWNER, field, rule, value)


class _DerivedDelay(Derived, float):
    """:attr:`RetryPolicy.initial_delay` or :attr:`RetryPolicy.max_delay` left out: derived from the other."""

    __slots__ = ()
    plain = float


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait in between.

    Every field is validated at construction: a bad value raises ``ValueError`` (or
    ``TypeError`` for a wrong type) naming ``RetryPolicy.<field>``, the rule and the value.
    Durations are seconds (``int``/``float``) or ``datetime.timedelta``, stored as ``float``
    seconds; ``strategy`` and ``jitter`` also accept their string values.

    Raises:
        ValueError: A value breaks its rule, two fields contradict each other, or a field the
            schedule would ignore is not its default (``multiplier`` without ``EXPONENTIAL``,
            ``jitter`` with ``RANDOM``, ``jitter_ratio`` without a proportional jitter,
            ``strategy`` with ``Jitter.DECORRELATED``).
        TypeError: A value has the wrong type, or a function cannot be called with the one
            argument it is given (``retry_on(error)``, ``retry_on_result(result)``, a
            predicate's ``dropped`` method ...).
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Attempts in total, the first included (``>= 1``; 1 means no retry). Default: 3."""
    strategy: RetryStrategy = DEFAULT_STRATEGY
    """How delays grow. Default: ``RetryStrategy.EXPONENTIAL``."""
    initial_delay: float = _DerivedDelay(DEFAULT_INITIAL_DELAY)
    """Seconds (or a ``timedelta``) before the first retry, ``>= 0``. Default: 1.0 s, or a
    ``max_delay`` written shorter (``dataclasses.replace`` derives it again)."""
    multiplier: float = DEFAULT_MULTIPLIER
    """Growth factor of ``EXPONENTIAL``, ``>= 1``. Default: 2.0. Read by ``EXPONENTIAL`` only (and
    not with ``Jitter.DECORRELATED``, which replaces the schedule): elsewhere, another value than
    the default is refused (``ValueError``)."""
    max_delay: float = _DerivedDelay(DEFAULT_MAX_DELAY)
    """Seconds (or a ``timedelta``) that bound every delay, after jitter; ``>= initial_delay``.
    With ``RetryStrategy.RANDOM`` it is the top of the range delays are drawn from, so set it
    there (the default draws up to 60 s). Default: 60.0 s, or an ``initial_delay`` written longer
    (``dataclasses.replace`` derives it again); both written, a shorter one is refused."""
    jitter: Jitter = DEFAULT_JITTER
    """How each delay is randomised. Default: ``Jitter.PROPORTIONAL``. With ``RetryStrategy.RANDOM``
    no jitter is applied: another value than the default is refused (``ValueError``)."""
    jitter_ratio: float = DEFAULT_JITTER_RATIO
    """Spread of ``Jitter.PROPORTIONAL`` as a fraction of the delay, ``0 < r <= 1``. Default: 0.25
    (+/- 25 %). Read by ``Jitter.PROPORTIONAL`` only, and never with ``RetryStrategy.RANDOM`` (no
    jitter is applied to its draws): there, another value than the default is refused
    (``ValueError``)."""
    attempt_timeout: float | None = None
    """Seconds (or a ``timedelta``) one attempt may take, ``> 0``; ``None`` for no limit.
    Default: ``None``."""
    retry_on: ErrorSelector = (Exception,)
    """Errors that are retried: ``Exception`` subclasses or a predicate; empty (``()``) only with
    ``retry_on_result`` (results retried, errors never). A predicate with a ``dropped(error)``
    method is told each error the retry goes on after, as ``retry_on_result``'s is told each
    result (the HTTP integrations close a failed response left open). Default: ``(Exception,)``."""
    no_retry_on: ErrorSelector = (ExecutionRejectedError,)
    """Errors never retried, even if ``retry_on`` matches them: ``Exception`` subclasses or a predicate.
    A type ``retry_on`` names that it excludes whole (a subclass of one of its types) is refused
    (``ValueError``): it would never be retried; to retry rejections, set ``no_retry_on=()``.
    Default: ``(ExecutionRejectedError,)`` (open breaker, full bulkhead)."""
    retry_on_result: ResultPredicate | None = None
    """``(result) -> bool``; ``True`` retries the result, and the last one is returned when
    attempts run out. A predicate with a ``dropped(result)`` method is told each result the
    retry drops (it goes on after it: the result is no one's any more), before ``on_retry`` and
    the backoff, so that it may free what the result holds (the HTTP integrations close the
    response, its connection back in the pool during the backoff); an awaitable it returns is
    awaited (async drivers; the sync driver refuses one), and what it raises ends the execution.
    A sync attempt's result that came after ``attempt_timeout`` is dropped too (the attempt is
    a timeout), whether or not the retry goes on: it is told of it first.
    Default: ``None`` (results are never retried)."""
    budget: RetryBudget | None = None
    """A :class:`~otel_resilience.patterns.retry.RetryBudget` the retries draw from, shared with other
    policies; when it is empty, retrying stops (stop reason ``"budget"``). Default: ``None`` (no
    budget: ``max_attempts`` alone bounds retries)."""
    delay_from: DelayFrom | None = None
    """``(outcome) -> seconds | None``: the delay the failed attempt's outcome asks for (its
    error, or the retried result), e.g. a server's ``Retry-After``
    (:func:`~otel_resilience.patterns.retry.retry_after_delay`); ``None`` from it falls back to the
    strategy. The delay is used as is, without jitter; one over ``max_delay`` or past the
    deadline gives up at once (stop reason ``"max_delay"`` or ``"deadline"``), never clamped: a
    server asking for more than the policy would wait is not retried early. A plain function
    (an async one is refused: ``TypeError``); what it raises propagates. Default: ``None`` (the
    strategy only)."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            max_attempts: int = ...,
            strategy: RetryStrategy | StrategyName = ...,
            initial_delay: float | timedelta = ...,
            multiplier: float = ...,
            max_delay: float | timedelta = ...,
            jitter: Jitter | JitterName = ...,
            jitter_ratio: float = ...,
            attempt_timeout: float | timedelta | None = ...,
            retry_on: ErrorSelector | ExceptionTypeCollection = ...,
            no_retry_on: ErrorSelector | ExceptionTypeCollection = ...,
            retry_on_result: ResultPredicate | None = ...,
            budget: RetryBudget | None = ...,
            delay_from: DelayFrom | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        check_int(_OWNER, "max_attempts", self.max_attempts, minimum=1)
        strategy = _enum_member("strategy", RetryStrategy, self.strategy)
        object.__setattr__(self, "strategy", strategy)
        initial, max_delay = self._delays()
        object.__setattr__(self, "initial_delay", initial)
        object.__setattr__(self, "max_delay", max_delay)
        multiplier = check_number(_OWNER, "multiplier", self.multiplier, minimum=0.0, min_inclusive=False)
        if strategy is RetryStrategy.EXPONENTIAL and multiplier < 1:
            raise fail(_OWNER, "multiplier", ">= 1 when strategy is EXPONENTIAL", self.multiplier)
        object.__setattr__(self, "multiplier", multiplier)
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
        retry_on = check_error_selector(_OWNER, "retry_on", self.retry_on, "cancellation is never retried")
        object.__setattr__(self, "retry_on", retry_on)
        no_retry_on = check_error_selector(
            _OWNER, "no_retry_on", self.no_retry_on, "cancellation is never retried"
        )
        object.__setattr__(self, "no_retry_on", no_retry_on)
        if isinstance(retry_on, tuple) and isinstance(no_retry_on, tuple):
            check_disjoint(
                _OWNER,
                "no_retry_on",
                no_retry_on,
                other="retry_on",
                covered=retry_on,
                verb="excludes the retried",
            )
        check_predicate(_OWNER, "retry_on_result", self.retry_on_result, "result", optional=True)
        if retry_on == () and self.retry_on_result is None:
            rule = (
                "at least one exception type, a predicate, or retry_on_result set (else nothing is retried)"
            )
            raise fail(_OWNER, "retry_on", rule, self.retry_on)
        _check_dropped("retry_on", retry_on, "error")
        _check_dropped("retry_on_result", self.retry_on_result, "result")
        self._check_outcome_fields()
        self._check_read()

    def _delays(self) -> tuple[float, float]:
        """Validate ``initial_delay`` and ``max_delay``; one left to its default gives way to the other.

        The one place their defaults are decided: ``max_delay`` left out is 60 s or the written
        ``initial_delay`` if longer, ``initial_delay`` left out is 1 s or the written ``max_delay``
        if shorter; each marked derived, so that ``dataclasses.replace`` derives it again.
        """
        initial: float | None = None
        if not isinstance(self.initial_delay, _DerivedDelay):
            initial = check_duration(_OWNER, "initial_delay", self.initial_delay, allow_zero=True)
        cap: float | None = None
        if not isinstance(self.max_delay, _DerivedDelay):
            cap = check_duration(_OWNER, "max_delay", self.max_delay, allow_zero=True)
        if initial is None:
            initial = _DerivedDelay(DEFAULT_INITIAL_DELAY if cap is None else min(DEFAULT_INITIAL_DELAY, cap))
        if cap is None:
            cap = _DerivedDelay(max(DEFAULT_MAX_DELAY, initial))
        elif cap < initial:
            raise fail(_OWNER, "max_delay", f">= initial_delay ({initial:g} s)", self.max_delay)
        return initial, cap

    def _check_outcome_fields(self) -> None:
        """Validate ``budget`` and ``delay_from``, and the jitter that reads the execution's delays."""
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise fail(_OWNER, "budget", "a RetryBudget or None", self.budget, kind=TypeError)
        check_sync_callable(_OWNER, "delay_from", self.delay_from, optional=True, what="function")
        check_not_generator(_OWNER, "delay_from", self.delay_from, _NOT_A_GENERATOR)
        check_called_with(_OWNER, "delay_from", self.delay_from, "outcome")

    def _check_read(self) -> None:
        """Refuse a schedule's setting that the delays would never read, unless at its default.

        RANDOM draws its delays as they are (no jitter on top: ``NONE`` says so, and is taken),
        DECORRELATED replaces the
        strategy's schedule, only EXPONENTIAL grows by ``multiplier`` and only a proportional
        jitter spreads by ``jitter_ratio``. A default cannot be told from a value left out, so
        only another value is refused (as a breaker's ``failure_threshold`` beside a window).
        """
        strategy, jitter = self.strategy, self.jitter
        jittered = strategy is not RetryStrategy.RANDOM
        if not jittered and jitter is not DEFAULT_JITTER and jitter is not Jitter.NONE:
            rule = f"{DEFAULT_JITTER.name} (its default) or NONE unless strategy is not RANDOM"
            raise fail(_OWNER, "jitter", rule + " (its draws are the range, with no jitter on top)", jitter)
        if jitter is Jitter.DECORRELATED and strategy is not DEFAULT_STRATEGY:
            rule = f"{DEFAULT_STRATEGY.name} (its default) unless jitter is not DECORRELATED"
            raise fail(_OWNER, "strategy", rule + " (it replaces the schedule)", strategy)
        grows = strategy is RetryStrategy.EXPONENTIAL and jitter is not Jitter.DECORRELATED
        if not grows and self.multiplier != DEFAULT_MULTIPLIER:
            rule = f"{DEFAULT_MULTIPLIER} (its default) unless strategy is EXPONENTIAL and jitter is not"
            raise fail(
                _OWNER, "multiplier", rule + " DECORRELATED (only it grows by a multiplier)", self.multiplier
            )
        spreads = jittered and jitter is Jitter.PROPORTIONAL
        if not spreads and self.jitter_ratio != DEFAULT_JITTER_RATIO:
            rule = f"{DEFAULT_JITTER_RATIO} (its default) unless jitter is PROPORTIONAL and strategy is not"
            raise fail(_OWNER, "jitter_ratio", rule + " RANDOM (no other spread reads it)", self.jitter_ratio)

    def is_retryable(self, error: Exception) -> bool:
        """Return whether ``error`` is retried: it matches ``retry_on`` and not ``no_retry_on``.

        Args:
            error: The exception an attempt raised.

        Returns:
            ``True`` if the policy retries it.

        Raises:
            TypeError: A predicate returned an awaitable (it is never awaited: closed).
        """
        excluded = self.no_retry_on
        if isinstance(excluded, tuple):
            if isinstance(error, excluded):
                return False
        else:
            excluded_now = excluded(error)
            if (
                excluded_now is not False and excluded_now is not True
            ):  # a bool is taken as it is, with no call
                excluded_now = verdict(excluded_now, "RetryPolicy.no_retry_on")
            if excluded_now:
                return False
        included = self.retry_on
        if isinstance(included, tuple):
            return isinstance(error, included)
        retried = included(error)
        if retried is not False and retried is not True:  # a bool is taken as it is, with no call
            retried = verdict(retried, "RetryPolicy.retry_on")
        return retried

    def compute_delay(
        self, attempt: int, rng: random.Random | None = None, previous: float | None = None
    ) -> float:
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
            PROPORTIONAL  uniform(d * (1 - r), min(d * (1 + r), cap))    with r = jitter_ratio
            DECORRELATED  uniform(i, max(i, previous) * 3)      (replaces d; previous: i when None)
            delay = min(jittered, cap)

        Args:
            attempt: The attempt that failed, ``>= 1``.
            rng: The random source for jitter and ``RANDOM`` (default: a module-level one).
                Pass a seeded ``random.Random`` for reproducible delays.
            previous: The execution's previous backoff, read by ``Jitter.DECORRELATED`` only
                (``None``: before the first retry).

        Returns:
            The delay in seconds, ``0 <= delay <= max_delay``.

        Raises:
            ValueError: If ``attempt`` is below 1, or ``previous`` is negative or not finite.
            TypeError: If ``attempt`` is not an ``int``, ``previous`` not a number (nor ``None``),
                or ``rng`` not a ``random.Random`` (nor ``None``).
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise fail(_COMPUTE, "attempt", "an int", attempt, kind=TypeError)
        if attempt < 1:
            raise fail(_COMPUTE, "attempt", ">= 1", attempt)
        if previous is not None:
            previous = check_number(_COMPUTE, "previous", previous, minimum=0.0)
        if rng is not None:
            _check_rng(_COMPUTE, rng)
        source = _DEFAULT_RNG if rng is None else rng
        cap = self.max_delay
        if self.strategy is RetryStrategy.RANDOM:
            return min(source.uniform(self.initial_delay, cap), cap)
        if self.jitter is Jitter.DECORRELATED:
            return _decorrelated(self, source, previous)
        base = _BASE_DELAY[self.strategy](self, attempt)
        return max(0.0, min(_JITTER[self.jitter](self, min(base, cap), source), cap))


def _check_rng(owner: str, rng: object) -> None:
    """Refuse an ``rng`` neither a ``random.Random`` nor ``None``: a ``TypeError`` naming ``<owner>.rng``.

    The rule of a retry's random source, wherever one is given: :class:`Retry`, the
    :func:`retry` decorator, :meth:`RetryPolicy.compute_delay`.
    """
    if rng is not None and not isinstance(rng, random.Random):
        raise fail(owner, "rng", "a random.Random or None", rng, kind=TypeError)


def _check_dropped(field: str, predicate: object, argument: str) -> None:
    """Refuse a predicate's ``dropped`` hook that cannot be called as ``dropped(<argument>)``.

    The retry calls it on a failure path only (each outcome it goes on after): a hook that is
    no callable, or takes other arguments, is refused when the policy is made, naming
    ``RetryPolicy.<field>.dropped``, not at the first retry, whose outcome its ``TypeError``
    would replace.
    """
    dropped = getattr(predicate, "dropped", None)
    if dropped is not None:
        field = f"{field}.dropped"
        check_called_with(_OWNER, field, check_callable(_OWNER, field, dropped), argument)


def _decorrelated(policy: RetryPolicy, source: random.Random, previous: float | None) -> float:
    """``DECORRELATED``: ``min(cap, uniform(i, max(i, previous) * 3))``, ``previous`` ``i`` if ``None``."""
    low = policy.initial_delay
    high = low if previous is None else max(low, previous)
    return max(0.0, min(source.uniform(low, high * 3), policy.max_delay))


def _fixed(policy: RetryPolicy, attempt: int) -> float:  # noqa: ARG001 - the same every time
    """``FIXED``: ``initial_delay``."""
    return policy.initial_delay


def _linear(policy: RetryPolicy, attempt: int) -> float:
    """``LINEAR``: ``initial_delay * attempt``."""
    try:
        return policy.initial_delay * attempt
    except OverflowError:  # an attempt number past the floats
        return _past_the_floats(policy, 1, math.log(attempt))


def _exponential(policy: RetryPolicy, attempt: int) -> float:
    """``EXPONENTIAL``: ``initial_delay * multiplier ** (attempt - 1)``."""
    try:
        return policy.initial_delay * policy.multiplier ** (attempt - 1)
    except OverflowError:  # a power past the floats
        return _past_the_floats(policy, attempt - 1, math.log(policy.multiplier))


def _past_the_floats(policy: RetryPolicy, times: int, log_factor: float) -> float:
    """Return ``initial_delay * factor ** times``, capped, a growth past the floats, by ``log(factor)``.

    The one rule of a base delay whose growth (a power, an attempt number) is no float: the
    product may still be one (``1e-300 * 2.0 ** 1024`` is 1.8e8 s), so it is computed in
    logarithms, and is ``max_delay`` when past it (a growth whose logarithm is no float either
    is past any cap); 0 times any growth is 0, and a factor of 1 grows nothing (``1.0 ** times``
    is no float when ``times`` is not).
    """
    initial, cap = policy.initial_delay, policy.max_delay
    if not initial:
        return 0.0
    if not log_factor:  # a factor of 1, times past the floats: the growth is 1
        return initial
    try:
        exponent = math.log(initial) + times * log_factor
    except OverflowError:  # times past the floats, and a factor > 1
        return cap
    return cap if exponent >= math.log(cap) else math.exp(exponent)


_BASE_DELAY: Final[dict[RetryStrategy, Callable[[RetryPolicy, int], float]]] = {
    RetryStrategy.FIXED: _fixed,
    RetryStrategy.LINEAR: _linear,
    RetryStrategy.EXPONENTIAL: _exponential,
}
"""The base delay after a failed attempt, per strategy (``RANDOM`` draws its delay itself); a growth
past the floats too (:func:`_past_the_floats`), never an ``OverflowError``."""


def _no_jitter(policy: RetryPolicy, delay: float, source: random.Random) -> float:  # noqa: ARG001
    """``NONE``: the delay exactly."""
    return delay


def _full_jitter(policy: RetryPolicy, delay: float, source: random.Random) -> float:  # noqa: ARG001
    """``FULL``: uniform in ``[0, delay]``."""
    return source.uniform(0.0, delay)


def _proportional_jitter(policy: RetryPolicy, delay: float, source: random.Random) -> float:
    """``PROPORTIONAL``: uniform in ``[d * (1 - r), d * (1 + r)]`` (``r`` the jitter ratio), up to the cap.

    ``d`` (``delay``) is at most ``max_delay`` already; the draw never goes above it, so no share of
    the draws lands on the cap itself.
    """
    spread = delay * policy.jitter_ratio
    return source.uniform(delay - spread, min(delay + spread, policy.max_delay))


_JITTER: Final[dict[Jitter, Callable[[RetryPolicy, float, random.Random], float]]] = {
    Jitter.NONE: _no_jitter,
    Jitter.FULL: _full_jitter,
    Jitter.PROPORTIONAL: _proportional_jitter,
}
"""How a base delay is randomised, per jitter kind (``DECORRELATED`` draws its delay itself)."""


_DEFAULT_POLICY: Final = RetryPolicy()
"""The policy of a :class:`~otel_resilience.Retry` built without one (a frozen value, safe to share)."""


def _constant_delay(policy: RetryPolicy) -> float | None:
    """Return the delay every backoff of ``policy`` has, or ``None`` when it varies.

    A zero delay is constant whatever the strategy (except ``RANDOM`` with a non-zero cap) and
    the jitter: jittering zero gives zero. Except ``Jitter.DECORRELATED`` with a ``delay_from``:
    a delay the outcome asked for is the previous backoff its next draw grows from.
    """
    cap = policy.max_delay
    strategy = policy.strategy
    grows = policy.jitter is Jitter.DECORRELATED and policy.delay_from is not None
    if cap == 0.0 or (policy.initial_delay == 0.0 and strategy is not RetryStrategy.RANDOM and not grows):
        return 0.0
    if strategy is RetryStrategy.FIXED and policy.jitter is Jitter.NONE:
        return min(policy.initial_delay, cap)
    return None
