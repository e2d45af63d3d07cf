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

from otel_resilience import (
    ChaosConfig,
    ChaosSwitch,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackStrategy,
    RecoveryAction,
    RecoveryStrategy,
    RetryPolicy,
)
from otel_resilience.patterns.hedging import HedgingConfig

NO_ARGUMENT: Callable[[], bool] = lambda: True  # noqa: E731
ONE_ARGUMENT: Callable[[Any], bool] = lambda _value: True  # noqa: E731

MAKERS: dict[str, Callable[[Any], object]] = {
    "ChaosConfig.enabled": lambda p: ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=p),
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


FACTORIES: dict[str, Callable[[Any], object]] = {
    "ChaosConfig.fault": lambda f: ChaosConfig(fault_rate=1.0, fault=f),
    "ChaosConfig.outcome": lambda f: ChaosConfig(outcome_rate=1.0, outcome=f),
    "RecoveryAction.restart_hook": lambda f: RecoveryAction(RecoveryStrategy.RESTART, restart_hook=f),
}
"""The factories and hooks the library calls with no argument."""


@pytest.mark.parametrize("field", sorted(FACTORIES))
def test_a_factory_or_hook_needing_an_argument_is_refused_naming_its_field(field: str) -> None:
    """Taken, a drill injected nothing (each call counted in ``errors``), and a restart raised a TypeError.

    That TypeError replaced the dependency's error at the first recovery.
    """
    name = field.split(".")[1]
    with pytest.raises(TypeError, match="^" + re.escape(f"{field} must be callable as {name}()")):
        FACTORIES[field](lambda _value: ConnectionError())


def test_a_callable_outcome_needing_arguments_says_how_to_inject_it_as_the_value() -> None:
    """An object that is callable but meant as the value (an ASGI response) is a factory: wrap it."""

    class Response:
        def __call__(self, scope: object, receive: object, send: object) -> None: ...

    answer = Response()
    with pytest.raises(TypeError, match=re.escape("(to inject the function itself: lambda: fn)")):
        ChaosConfig(outcome_rate=1.0, outcome=answer)
    assert ChaosConfig(outcome_rate=1.0, outcome=lambda: answer).outcome_rate == 1.0


@pytest.mark.parametrize("field", sorted(FACTORIES))
def test_a_factory_or_hook_taking_no_argument_is_taken(field: str) -> None:
    FACTORIES[field](lambda: ConnectionError())


def test_a_chaos_switch_is_a_predicate_taking_its_argument() -> None:
    ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=ChaosSwitch())


def test_a_breaker_resolver_that_cannot_take_a_name_is_refused() -> None:
    """Taken, every ISOLATE failed: the resolver's TypeError logged, the breaker never found."""
    system = ErrorRecoverySystem("arity-resolver")
    with pytest.raises(
        TypeError, match="^" + re.escape("ErrorRecoverySystem.breakers must be callable as breakers(name)")
    ):
        system.as_strategy(breakers=lambda: None)
    system.as_strategy(breakers=lambda _name: None)
