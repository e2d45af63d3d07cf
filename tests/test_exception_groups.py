"""Exception groups through the patterns: one error of its own class, as an ``except`` clause sees it.

The rule (docs/design.md, "An exception group is one error, of its own class"): every
classification (``retry_on``, ``record_exceptions``, ``handle_exceptions``, ``hedge_on``, the
recovery rules) matches the error raised, never the members of a group; a group is
an ``Exception``, so a failure like any other; a predicate sees the group and may look inside. A
``BaseExceptionGroup`` holding a cancellation or an interrupt is, like them, never a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable
from typing import Any

import pytest

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    retry_async,
    retry_sync,
)
from otel_resilience.engine import classify_error
from otel_resilience.engine.events import Outcome

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

_ids = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


class Calls:
    """A dependency that raises what ``make`` returns on every call, and counts its calls."""

    def __init__(self, make: Callable[[], BaseException]) -> None:
        self.make = make
        self.count = 0

    def sync(self) -> str:
        self.count += 1
        raise self.make()

    async def run_async(self) -> str:
        return self.sync()


def _group() -> ExceptionGroup[Exception]:
    """What a ``TaskGroup`` raises when two children failed with a connection error."""
    return ExceptionGroup("unhandled errors in a TaskGroup", [ConnectionError("a"), ConnectionError("b")])


async def _call(
    driver: str, sync_call: Callable[[Any], Any], async_call: Callable[[Any], Any], calls: Calls
) -> Any:
    if driver == "sync":
        return sync_call(calls.sync)
    return await async_call(calls.run_async)


def test_a_group_is_a_failure_and_a_group_of_cancellations_or_interrupts_is_not() -> None:
    """The outcome follows the group's class: ``ExceptionGroup`` a failure, ``BaseExceptionGroup`` cancelled."""
    assert classify_error(_group()) is Outcome.FAILURE
    for member in (asyncio.CancelledError(), KeyboardInterrupt()):
        group = BaseExceptionGroup("stopped", [member, ValueError("x")])
        assert type(group) is BaseExceptionGroup
        assert classify_error(group) is Outcome.CANCELLED


async def test_retry_on_matches_the_group_not_its_members(driver: str) -> None:
    """A group of retried errors is not one of them: raised after one attempt."""
    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, retry_on=(ConnectionError,))
    calls = Calls(_group)
    with pytest.raises(ExceptionGroup):
        await _call(
            driver, lambda fn: retry_sync(fn, policy=policy), lambda fn: retry_async(fn, policy=policy), calls
        )
    assert calls.count == 1


async def test_a_group_is_retried_by_default_and_a_predicate_may_look_inside(driver: str) -> None:
    """``retry_on`` left at every ``Exception`` retries it; a predicate gets the group itself."""
    seen: list[BaseException] = []

    def has_connection_errors(error: Exception) -> bool:
        seen.append(error)
        return isinstance(error, ExceptionGroup) and error.subgroup(ConnectionError) is not None

    for retry_on in ((Exception,), has_connection_errors):
        policy = RetryPolicy(max_attempts=3, initial_delay=0.0, retry_on=retry_on)
        calls = Calls(_group)
        with pytest.raises(ExceptionGroup):
            await _call(
                driver,
                lambda fn, p=policy: retry_sync(fn, policy=p),
                lambda fn, p=policy: retry_async(fn, policy=p),
                calls,
            )
        assert calls.count == 3
    assert seen
    assert all(isinstance(error, ExceptionGroup) for error in seen)


async def test_the_breaker_records_the_group_by_its_class(driver: str) -> None:
    """``record_exceptions`` of a member's class does not record the group (a success); the default does."""
    narrow = CircuitBreaker(_name("narrow"), CircuitBreakerConfig(record_exceptions=(ConnectionError,)))
    wide = CircuitBreaker(_name("wide"), CircuitBreakerConfig())
    for breaker in (narrow, wide):
        with pytest.raises(ExceptionGroup):
            await _call(driver, breaker.call_sync, breaker.call, Calls(_group))
    assert narrow.get_stats()["total_failures"] == 0
    assert wide.get_stats()["total_failures"] == 1


async def test_a_fallback_for_a_members_class_does_not_answer_the_group(driver: str) -> None:
    """``handle_exceptions`` of a member's class leaves the group to the caller; the default answers it."""
    narrow = FallbackHandler(
        FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE,
            default_value="stale",
            handle_exceptions=(ConnectionError,),
        )
    )
    wide = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="stale"))
    with pytest.raises(ExceptionGroup):
        await _call(driver, narrow.execute_with_fallback_sync, narrow.execute_with_fallback, Calls(_group))
    assert (
        await _call(driver, wide.execute_with_fallback_sync, wide.execute_with_fallback, Calls(_group))
        == "stale"
    )


async def test_a_recovery_rule_matches_the_groups_class_hierarchy(driver: str) -> None:
    """A rule for a member's class does not cover the group; one for ``ExceptionGroup`` does."""
    by_member = ErrorRecoverySystem(name=_name("by-member"))
    by_member.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=1)
    )
    by_group = ErrorRecoverySystem(name=_name("by-group"))
    by_group.register_recovery_rule(
        ExceptionGroup, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=2)
    )
    with pytest.raises(ExceptionGroup):
        await _call(driver, by_member.execute_sync, by_member.execute, Calls(_group))
    assert await _call(driver, by_group.execute_sync, by_group.execute, Calls(_group)) == 2


async def test_hedge_on_matches_the_group_by_its_class() -> None:
    """A group outside ``hedge_on`` is a definite answer: raised at once, no hedge."""
    calls = Calls(_group)
    hedging = Hedging(
        _name("hedging"), HedgingConfig(mode="fallback", max_attempts=3, hedge_on=(ConnectionError,))
    )
    with pytest.raises(ExceptionGroup):
        await hedging.call(calls.run_async)
    assert calls.count == 1


@pytest.mark.parametrize("member", [asyncio.CancelledError, KeyboardInterrupt])
async def test_a_group_holding_a_cancellation_or_an_interrupt_is_never_a_failure(
    driver: str, member: type[BaseException]
) -> None:
    """Through a whole policy: not retried, not recorded by the breaker, not answered by the fallback,
    counted cancelled, and raised unchanged."""
    manager = ResilienceManager()
    config = ResilienceConfig(
        name=_name("policy"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="stale"),
    )
    group = BaseExceptionGroup("stopped", [member(), ConnectionError("down")])
    calls = Calls(lambda: group)
    with pytest.raises(BaseExceptionGroup) as info:
        await _call(
            driver,
            lambda fn: manager.execute_with_resilience_sync(fn, config),
            lambda fn: manager.execute_with_resilience(fn, config),
            calls,
        )
    assert info.value is group
    assert calls.count == 1
    stats = manager.get_resilience_statistics()
    assert (stats["executions"]["cancelled"], stats["executions"]["failed"]) == (1, 0)
    (breaker,) = stats["circuit_breakers"].values()
    assert (breaker["state"], breaker["total_failures"]) == ("closed", 0)
