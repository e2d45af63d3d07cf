"""Validation helpers: one message shape, no clamping."""

from __future__ import annotations

import math
import re
import sys
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from otel_resilience import (
    AlertConfig,
    AlertSystem,
    BulkheadConfig,
    ChaosConfig,
    ErrorRecoverySystem,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
    TimeoutHandler,
)
from otel_resilience.engine.validation import (
    MAX_COUNT,
    MAX_DURATION,
    check_callable,
    check_duration,
    check_exception_types,
    check_int,
    check_name,
    check_number,
    check_predicate,
    check_sync_callable,
    describe,
    fail,
)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: check_int("C", "f", 0, minimum=1), ValueError, r"^C\.f must be >= 1, got 0$"),
        (lambda: check_int("C", "f", True, minimum=1), TypeError, r"C\.f must be an int, got True \(bool\)"),
        (lambda: check_int("C", "f", 1.5, minimum=1), TypeError, r"C\.f must be an int"),
        (lambda: check_number("C", "f", math.nan), ValueError, r"C\.f must be a finite number, got nan"),
        (lambda: check_number("C", "f", 2.0, maximum=1.0), ValueError, r"C\.f must be <= 1"),
        (
            lambda: check_number("C", "f", 0.0, minimum=0.0, min_inclusive=False),
            ValueError,
            r"C\.f must be > 0",
        ),
        (lambda: check_number("C", "f", "1"), TypeError, r"C\.f must be a number"),
        (lambda: check_duration("C", "f", -1), ValueError, r"C\.f must be > 0 seconds, got -1"),
        (lambda: check_duration("C", "f", 0), ValueError, r"C\.f must be > 0 seconds"),
        (lambda: check_duration("C", "f", -0.1, allow_zero=True), ValueError, r"C\.f must be >= 0 seconds"),
        (lambda: check_duration("C", "f", math.inf), ValueError, r"C\.f must be a finite duration"),
        (lambda: check_duration("C", "f", "5"), TypeError, r"C\.f must be a duration"),
        (lambda: check_name("C", "f", ""), ValueError, r"C\.f must be a non-empty name"),
        (lambda: check_name("C", "f", None), TypeError, r"C\.f must be a str"),
        (lambda: check_callable("C", "f", 3), TypeError, r"C\.f must be callable"),
        (
            lambda: check_exception_types("C", "f", (ValueError, int)),
            TypeError,
            r"C\.f must be exception types",
        ),
        (lambda: check_exception_types("C", "f", 3), TypeError, r"C\.f must be exception types"),
    ],
)
def test_bad_values_raise_with_class_field_rule_and_value(call, error, message) -> None:
    """Every helper names the class, the field, the rule and the value."""
    with pytest.raises(error, match=message):
        call()


def test_good_values_are_normalised() -> None:
    """Durations become float seconds, timedelta included; selectors become tuples."""
    assert check_duration("C", "f", timedelta(milliseconds=1500)) == 1.5
    assert check_duration("C", "f", 0, allow_zero=True) == 0.0
    assert check_int("C", "f", 3, minimum=1) == 3
    assert check_exception_types("C", "f", KeyError) == (KeyError,)
    assert check_exception_types("C", "f", [KeyError, OSError]) == (KeyError, OSError)
    predicate = callable
    assert check_exception_types("C", "f", predicate) is predicate
    assert check_callable("C", "f", None, optional=True) is None


class UnprintableError(Exception):
    """The error a broken ``__repr__`` raises."""


class Unprintable:
    """A value whose ``repr`` raises."""

    def __repr__(self) -> str:
        raise UnprintableError


def raise_built(error: Exception) -> None:
    """Raise an error that ``fail()`` built."""
    raise error


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: raise_built(fail("C", "f", "a str", Unprintable(), kind=TypeError)),
            TypeError,
            r"C\.f must be a str",
        ),
        (lambda: raise_built(fail("C", "f", ">= 1", Unprintable())), ValueError, r"C\.f must be >= 1"),
        (lambda: check_name("C", "f", Unprintable()), TypeError, r"C\.f must be a str"),
        (lambda: check_callable("C", "f", Unprintable()), TypeError, r"C\.f must be callable"),
        (lambda: check_duration("C", "f", Unprintable()), TypeError, r"C\.f must be a duration"),
        (lambda: check_number("C", "f", Unprintable()), TypeError, r"C\.f must be a number"),
    ],
    ids=["fail-type", "fail-value", "check_name", "check_callable", "check_duration", "check_number"],
)
def test_a_bad_value_whose_repr_raises_still_gets_the_validation_error(call, error, message) -> None:
    """A value whose __repr__ raises is reported by its type and address, not by its repr's error."""
    with pytest.raises(
        error, match=message + r".*, got <.*Unprintable object at 0x[0-9a-f]+> \(its repr raised\)"
    ):
        call()


@pytest.mark.parametrize(
    "too_long",
    [10**400, 10**5000, 1e10, MAX_DURATION * 2, timedelta.max],
    ids=["10**400", "10**5000 (its repr raises)", "1e10", "twice the limit", "timedelta.max"],
)
def test_durations_above_the_platform_limit_are_refused_naming_the_field(too_long: object) -> None:
    """A duration above MAX_DURATION (or too large for a float) is a ValueError naming the field."""
    with pytest.raises(ValueError, match=r"^C\.f must be <= \d+ seconds \(threading\.TIMEOUT_MAX\), got "):
        check_duration("C", "f", too_long)
    with pytest.raises(ValueError, match=r"^C\.f must be <= \d+ seconds"):
        check_duration("C", "f", too_long, allow_zero=True)


def test_the_platform_limit_itself_is_a_valid_duration() -> None:
    """MAX_DURATION is threading.TIMEOUT_MAX and is accepted as it is, with nothing clamped."""
    assert MAX_DURATION == threading.TIMEOUT_MAX
    assert check_duration("C", "f", MAX_DURATION) == MAX_DURATION
    assert check_duration("C", "f", timedelta(days=365)) == 365 * 86400.0


def test_a_number_too_large_for_a_float_is_a_value_error_naming_the_field() -> None:
    """check_number refuses an int too large for a float with a ValueError, not an OverflowError."""
    with pytest.raises(ValueError, match=r"^C\.f must be a finite number, got "):
        check_number("C", "f", 10**400)


@pytest.mark.parametrize(
    "too_many", [sys.maxsize + 1, 10**400, 10**5000], ids=["maxsize+1", "10**400", "10**5000"]
)
def test_counts_above_the_platform_limit_are_refused_naming_the_field(too_many: int) -> None:
    """A count above MAX_COUNT (sys.maxsize) is a ValueError naming the field; MAX_COUNT itself passes."""
    with pytest.raises(ValueError, match=r"^C\.f must be <= \d+ \(sys\.maxsize\), got "):
        check_int("C", "f", too_many, minimum=0)
    assert sys.maxsize == MAX_COUNT
    assert check_int("C", "f", MAX_COUNT, minimum=1) == MAX_COUNT


COUNTS_IN_USE: list[tuple[Callable[[int], object], str]] = [
    (lambda n: AlertSystem(AlertConfig(history_size=n)), "AlertConfig.history_size"),
    (lambda n: AlertConfig(recovery_window=n), "AlertConfig.recovery_window"),
    (lambda n: ErrorRecoverySystem(pattern_threshold=n), "RecoveryConfig.pattern_threshold"),
    (lambda n: RateLimiterConfig(rate=1.0, burst=n), "RateLimiterConfig.burst"),
    (lambda n: BulkheadConfig(max_concurrent=n), "BulkheadConfig.max_concurrent"),
]


@pytest.mark.parametrize(("make", "field"), COUNTS_IN_USE, ids=[field for _, field in COUNTS_IN_USE])
def test_a_count_too_large_to_use_is_refused_at_construction(
    make: Callable[[int], object], field: str
) -> None:
    """A count that would overflow where it is used (a deque, a float) is refused when the config is made."""
    with pytest.raises(ValueError, match=rf"^{re.escape(field)} must be <= \d+ \(sys\.maxsize\)"):
        make(10**30)


def test_a_negative_zero_is_held_as_zero() -> None:
    """-0.0 is accepted where 0 is, and held as 0.0: no config shows a negative zero."""
    for value in (
        check_duration("C", "f", -0.0, allow_zero=True),
        check_number("C", "f", -0.0, minimum=0.0),
        RetryPolicy(initial_delay=-0.0).initial_delay,
        ChaosConfig(fault_rate=-0.0).fault_rate,
    ):
        assert value == 0.0
        assert math.copysign(1.0, value) == 1.0
    with pytest.raises(ValueError, match=r"^C\.f must be > 0 seconds, got -0\.0$"):
        check_duration("C", "f", -0.0)


async def _coroutine_function() -> bool:
    return True


def test_a_callable_called_and_never_awaited_must_be_sync() -> None:
    """One rule for predicates and factories: an async one is refused, the message says which it is."""
    plain = callable
    assert check_predicate("C", "f", plain) is plain
    assert check_predicate("C", "f", None, optional=True) is None
    assert check_sync_callable("C", "f", plain, what="factory") is plain
    with pytest.raises(
        TypeError, match=r"^C\.f must be a plain \(sync\) predicate, not a coroutine function, got"
    ):
        check_predicate("C", "f", _coroutine_function)
    with pytest.raises(
        TypeError, match=r"^C\.f must be a plain \(sync\) factory, not a coroutine function \(hint\), got"
    ):
        check_sync_callable("C", "f", _coroutine_function, what="factory", hint=" (hint)")
    with pytest.raises(TypeError, match=r"^C\.f must be callable, got 3"):
        check_sync_callable("C", "f", 3, what="factory")


def test_a_value_of_shared_parts_is_described_at_once() -> None:
    """A value whose full repr is exponential (a config file's nested aliases) is described, bounded."""
    value: list[object] = []
    for _ in range(60):  # 2**60 leaves in its full repr
        value = [value, value]
    text = describe(value)
    assert text.startswith("[[[[")
    assert "..." in text
    assert len(text) < 2_000
    with pytest.raises(TypeError, match=r"TimeoutHandler\.timeout") as refused:
        TimeoutHandler(timeout=value)  # type: ignore[arg-type]
    assert len(str(refused.value)) < 2_000


@pytest.mark.parametrize(
    ("refused", "field"),
    [
        (lambda: check_callable("C", "f", 3, optional=True), r"C\.f"),
        (lambda: Retry("r", on_retry=3), r"Retry\.on_retry"),  # type: ignore[arg-type]
        (lambda: RetryPolicy(delay_from=3), r"RetryPolicy\.delay_from"),  # type: ignore[arg-type]
        (
            lambda: ResilienceManager().policy("p", ResilienceConfig(), adapt=3),  # type: ignore[arg-type]
            r"ResilienceManager\.policy\.adapt",
        ),
        (
            lambda: ResilienceManager().apply_config({}, customize=3),  # type: ignore[arg-type]
            r"ResilienceManager\.apply_config\.customize",
        ),
    ],
)
def test_an_optional_callable_is_refused_with_one_message(refused: Callable[[], object], field: str) -> None:
    """Every field that takes a callable or None says so, by the one rule (check_callable)."""
    with pytest.raises(TypeError, match=rf"^{field} must be callable or None, got 3"):
        refused()
