"""A predicate or selector that cannot take the one argument it is called with is refused when given.

Each pattern's configuration checks its predicates at construction (``check_error_selector``,
``check_predicate``: one rule each), naming the field, so a ``TypeError`` never replaces a
dependency's outcome at the first error or result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from otel_resilience import CircuitBreakerConfig, FallbackConfig, FallbackStrategy, RetryPolicy
from otel_resilience.patterns.hedging import HedgingConfig

NO_ARGUMENT: Callable[[], bool] = lambda: True  # noqa: E731
ONE_ARGUMENT: Callable[[Any], bool] = lambda _value: True  # noqa: E731

MAKERS: dict[str, Callable[[Any], object]] = {
    "CircuitBreakerConfig.record_exceptions": lambda p: CircuitBreakerConfig(record_exceptions=p),
    "CircuitBreakerConfig.record_result": lambda p: CircuitBreakerConfig(record_result=p),
    "HedgingConfig.hedge_on": lambda p: HedgingConfig(delay=1.0, hedge_on=p),
    "HedgingConfig.hedge_on_result": lambda p: HedgingConfig(delay=1.0, hedge_on_result=p),
    "RetryPolicy.retry_on": lambda p: RetryPolicy(retry_on=p),
    "RetryPolicy.retry_on_result": lambda p: RetryPolicy(retry_on_result=p),
    "FallbackConfig.handle_exceptions": lambda p: FallbackConfig(
        strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0, handle_exceptions=p
    ),
    "FallbackConfig.handle_result": lambda p: FallbackConfig(
        strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0, handle_result=p
    ),
}


@pytest.mark.parametrize("field", sorted(MAKERS))
def test_a_predicate_taking_no_argument_is_refused_naming_its_field(field: str) -> None:
    name = field.split(".")[1]
    with pytest.raises(TypeError, match="^" + re.escape(f"{field} must be callable as {name}(")):
        MAKERS[field](NO_ARGUMENT)


@pytest.mark.parametrize("field", sorted(MAKERS))
def test_a_predicate_taking_its_argument_is_taken(field: str) -> None:
    MAKERS[field](ONE_ARGUMENT)


def test_a_breakers_ignored_errors_are_exception_types_only() -> None:
    with pytest.raises(TypeError, match=r"^CircuitBreakerConfig\.ignore_exceptions must be exception types"):
        CircuitBreakerConfig(ignore_exceptions=ONE_ARGUMENT)
    with pytest.raises(TypeError, match=r"^CircuitBreakerConfig\.ignore_exceptions must be exception types"):
        CircuitBreakerConfig(ignore_exceptions=NO_ARGUMENT)
