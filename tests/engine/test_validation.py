"""Validation helpers: one message shape, no clamping."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from otel_resilience.engine.validation import (
    check_callable,
    check_duration,
    check_exception_types,
    check_int,
    check_name,
    check_number,
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
