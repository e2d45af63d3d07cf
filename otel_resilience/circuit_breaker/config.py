"""The breaker's settings: :class:`CircuitBreakerConfig`, its defaults and its validation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from otel_resilience.engine.validation import check_duration, check_exception_types, check_int, fail

KIND: Final = "circuit_breaker"
"""The pattern kind in telemetry and in :data:`~otel_resilience.engine.registry.BREAKERS`."""

DEFAULT_FAILURE_THRESHOLD: Final = 5
"""Consecutive counted failures that open the breaker."""
DEFAULT_SUCCESS_THRESHOLD: Final = 2
"""Probe successes in HALF_OPEN that close the breaker."""
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds OPEN before a probe is let through."""
DEFAULT_HALF_OPEN_MAX_CALLS: Final = 1
"""Probes allowed in flight at once in HALF_OPEN (bounded: a recovering service is not flooded)."""
DEFAULT_RECORD_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (Exception,)
"""Exceptions counted as failures: every ``Exception``."""
DEFAULT_IGNORE_EXCEPTIONS: Final[tuple[type[Exception], ...]] = ()
"""Exceptions counted as neither success nor failure: none."""

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]
"""One exception class or a tuple of them."""
ExceptionSelector = ExceptionTypes | Callable[[BaseException], bool]
"""Exception classes, or a predicate that returns ``True`` for an error to record."""

_OWNER: Final = "CircuitBreakerConfig"


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """How a :class:`CircuitBreaker` trips and recovers. Validated once, at construction.

    Raises:
        TypeError: A field has the wrong type (the message names ``CircuitBreakerConfig.<field>``).
        ValueError: A field is out of range, or ``ignore_exceptions`` covers a recorded type.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    """Consecutive counted failures in CLOSED that open the breaker; a success resets the
    count. An ``int >= 1``; the default is 5."""
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    """Probe successes in HALF_OPEN that close the breaker. An ``int >= 1``; the default is 2."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds the breaker stays OPEN before it lets a probe through. A finite number ``> 0`` or
    a ``timedelta`` (normalised to ``float`` seconds); the default is 60.0 s."""
    half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS
    """Probes allowed in flight at the same time in HALF_OPEN; the rest are rejected with
    reason ``"half_open_full"``. An ``int >= 1``; the default is 1."""
    record_exceptions: ExceptionSelector = DEFAULT_RECORD_EXCEPTIONS
    """Which errors count as failures: ``Exception`` subclasses (one or a tuple), or a
    predicate ``(error) -> bool``. An error neither recorded nor ignored counts as a success
    (the dependency answered). The default is ``(Exception,)``: every error is a failure."""
    ignore_exceptions: ExceptionTypes = DEFAULT_IGNORE_EXCEPTIONS
    """``Exception`` subclasses that count as neither success nor failure (the probe permit is
    given back); they win over ``record_exceptions``. The default is ``()``.
    :class:`~otel_resilience.errors.ExecutionRejectedError` is always ignored."""

    def __post_init__(self) -> None:
        check_int(_OWNER, "failure_threshold", self.failure_threshold, minimum=1)
        check_int(_OWNER, "success_threshold", self.success_threshold, minimum=1)
        object.__setattr__(self, "timeout", check_duration(_OWNER, "timeout", self.timeout))
        check_int(_OWNER, "half_open_max_calls", self.half_open_max_calls, minimum=1)
        record = _check_selector("record_exceptions", self.record_exceptions)
        object.__setattr__(self, "record_exceptions", record)
        ignore = _check_selector("ignore_exceptions", self.ignore_exceptions)
        if not isinstance(ignore, tuple):
            raise fail(_OWNER, "ignore_exceptions", "exception types", self.ignore_exceptions, kind=TypeError)
        object.__setattr__(self, "ignore_exceptions", ignore)
        if isinstance(record, tuple):
            if not record:
                raise fail(_OWNER, "record_exceptions", "at least one exception type", record)
            covered = tuple(t for t in record if issubclass(t, ignore))
            if covered:
                raise fail(
                    _OWNER,
                    "ignore_exceptions",
                    f"disjoint from record_exceptions (it ignores the recorded {covered!r})",
                    ignore,
                )


def _check_selector(
    field: str, value: object
) -> tuple[type[Exception], ...] | Callable[[BaseException], bool]:
    """Normalise an exception selector; types must be ``Exception`` subclasses."""
    selector = check_exception_types(_OWNER, field, value)
    if isinstance(selector, tuple):
        for item in selector:
            if not issubclass(item, Exception):
                raise fail(
                    _OWNER,
                    field,
                    "Exception subclasses (cancellation and exits are never counted)",
                    value,
                    kind=TypeError,
                )
        return cast("tuple[type[Exception], ...]", selector)
    return selector


_DEFAULT_CONFIG: Final = CircuitBreakerConfig()
"""The configuration of a breaker built without one (a frozen value, shared)."""
