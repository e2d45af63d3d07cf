"""Names become telemetry attributes: a configured name is refused past the attribute limit, never cut.

A key is data a call brings (it cannot be refused), so a long one is cut with a digest; a name is
configuration, so a name too long for an attribute is a ``ValueError`` naming its field, and a
name the library derives from code (a function's) is cut by the key's rule.
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    retry,
    retry_sync,
)
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, Event, key_attribute
from otel_resilience.engine.naming import callable_name
from otel_resilience.errors import RecoveryEscalatedError
from otel_resilience.patterns.recovery import (
    ErrorRecoverySystem,
    RecoveryAction,
    RecoveryContext,
    RecoveryStrategy,
)
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder

LONGEST = "n" * MAX_ATTRIBUTE_LENGTH
TOO_LONG = "n" * (MAX_ATTRIBUTE_LENGTH + 1)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda name: CircuitBreaker(name, CircuitBreakerConfig()), r"CircuitBreaker\.name"),
        (lambda name: Bulkhead(name, BulkheadConfig()), r"Bulkhead\.name"),
        (lambda name: ResilienceConfig(name=name), r"ResilienceConfig\.name"),
        (
            lambda name: ResilienceConfig(circuit_breaker=CircuitBreakerConfig(), circuit_breaker_name=name),
            r"ResilienceConfig\.circuit_breaker_name",
        ),
        (lambda name: ResilienceManager().policy(name, ResilienceConfig()), r"name"),
    ],
)
def test_a_name_longer_than_an_attribute_may_be_is_refused_naming_its_field(make: Any, field: str) -> None:
    """257 characters: a ValueError naming the field and the limit; 256 is taken as it is."""
    with pytest.raises(
        ValueError, match=rf"{field} must be a name of at most {MAX_ATTRIBUTE_LENGTH} characters"
    ):
        make(TOO_LONG)
    make(LONGEST)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda name: CircuitBreaker(name, CircuitBreakerConfig()), r"CircuitBreaker\.name"),
        (lambda name: ResilienceConfig(name=name), r"ResilienceConfig\.name"),
        (lambda name: ResilienceManager().policy(name, ResilienceConfig()), r"name"),
    ],
)
def test_a_name_with_a_lone_surrogate_is_refused_naming_its_field(make: Any, field: str) -> None:
    """A lone surrogate cannot be encoded: taken, one call made every Prometheus scrape of the
    process fail (``UnicodeEncodeError``); other text is taken."""
    with pytest.raises(ValueError, match=rf"{field} must be a name of whole characters"):
        make("caf\ud83d")
    make("caf\U0001f600 \u00e9")


def test_a_retry_named_after_a_function_with_a_long_name_is_cut_by_the_keys_rule(otel: Any) -> None:
    """``@retry`` and ``retry_sync`` name a Retry after the function: too long, it is cut with a digest."""
    long = "f" * 400

    def fn() -> str:
        return "ok"

    fn.__qualname__ = long
    assert callable_name(fn) == long  # the function's name, as it is
    assert retry(RetryPolicy(max_attempts=1))(fn)() == "ok"
    assert retry_sync(fn, policy=RetryPolicy(max_attempts=1)) == "ok"  # the one-shot function too
    shown = {p.attributes[sc.POLICY] for p in otel.points(sc.EXECUTION_DURATION)}
    assert shown == {key_attribute(long)}
    assert len(key_attribute(long)) == MAX_ATTRIBUTE_LENGTH


def test_a_function_with_a_long_name_still_runs_under_a_default_policy(otel: Any) -> None:
    """The manager names a policy after its function: a long function name never fails the call."""

    def fn() -> str:
        return "ok"

    fn.__qualname__ = "q" * 400
    manager = ResilienceManager()
    assert manager.execute_with_resilience_sync(fn, ResilienceConfig()) == "ok"
    (point,) = [p for p in otel.points(sc.EXECUTION_DURATION) if p.attributes[sc.POLICY].startswith("qqq")]
    assert point.attributes[sc.POLICY] == key_attribute("q" * 400)


def _long_named(name: str, *, is_async: bool) -> Any:
    """A function named ``name`` (its ``__qualname__``) that raises ``ValueError``."""
    if is_async:

        async def failing_async() -> str:
            raise ValueError(name[:10])

        failing_async.__qualname__ = name
        return failing_async

    def failing() -> str:
        raise ValueError(name[:10])

    failing.__qualname__ = name
    return failing


async def test_a_recovery_names_a_long_named_function_by_the_keys_rule(driver: str) -> None:
    """Used alone, recovery names the operation after the function: cut with a digest, in its events and errors."""
    long = "r" * 400
    system = ErrorRecoverySystem(f"long-{driver}", pattern_threshold=2)
    system.register_recovery_rule(ValueError, RecoveryAction(strategy=RecoveryStrategy.ESCALATE))
    fn = _long_named(long, is_async=driver == "async")
    operations = []
    with EventRecorder() as recorder:
        for _ in range(2):
            with pytest.raises(RecoveryEscalatedError) as caught:
                if driver == "sync":
                    system.execute_sync(fn)
                else:
                    await system.execute(fn)
            operations.append(caught.value.operation)
    assert operations == [key_attribute(long)] * 2
    detected = [args.operation for args in recorder.of(Event.PATTERN_DETECTED)]
    assert detected == [key_attribute(long)]


async def test_recover_from_error_names_a_long_named_operation_by_the_keys_rule(driver: str) -> None:
    """``recover_from_error`` names its context's operation after the function: cut as a policy's name is."""
    long = "o" * 400
    system = ErrorRecoverySystem(f"long-caught-{driver}")
    system.register_recovery_rule(ValueError, RecoveryAction(strategy=RecoveryStrategy.ESCALATE))
    context = RecoveryContext(operation=_long_named(long, is_async=driver == "async"))
    with pytest.raises(RecoveryEscalatedError) as caught:
        if driver == "sync":
            system.recover_from_error_sync(ValueError("x"), context)
        else:
            await system.recover_from_error(ValueError("x"), context)
    assert caught.value.operation == key_attribute(long)
