"""What a predicate the library calls (and never awaits) returns: a bool, or any value by its truth, never an awaitable.

A plain function that returns an async function's coroutine passes the check made when it is
given (it is no coroutine function); its coroutine is true, so it said yes to every result or
error, and was never awaited (Python warned so). It is refused when it answers: a ``TypeError``
naming the predicate, the coroutine closed.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from otel_resilience import (
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    Retry,
    RetryPolicy,
)

Made = list[Coroutine[Any, Any, bool]]


def answers_later(made: Made) -> Callable[..., Any]:
    """A plain function returning an async function's coroutine (each one kept in ``made``)."""

    async def verdict() -> bool:
        return False

    def predicate(*_: object) -> object:
        made.append(verdict())
        return made[-1]

    return predicate


def down() -> str:
    raise ConnectionError("down")


async def adown() -> str:
    raise ConnectionError("down")


async def afine() -> str:
    return "fine"


def _breaker_record_result_sync(predicate: Callable[..., Any]) -> object:
    breaker = CircuitBreaker("verdicts", CircuitBreakerConfig(record_result=predicate))
    return breaker.call_sync(lambda: "fine")


def _breaker_record_result_async(predicate: Callable[..., Any]) -> object:
    breaker = CircuitBreaker("verdicts", CircuitBreakerConfig(record_result=predicate))
    return asyncio.run(breaker.call(afine))


def _breaker_record_exceptions(predicate: Callable[..., Any]) -> object:
    breaker = CircuitBreaker("verdicts", CircuitBreakerConfig(record_exceptions=predicate))
    return breaker.call_sync(down)


def _retry_on(predicate: Callable[..., Any]) -> object:
    retry = Retry("verdicts", RetryPolicy(max_attempts=2, initial_delay=0.0, retry_on=predicate))
    return retry.execute_sync(down)


def _retry_no_retry_on(predicate: Callable[..., Any]) -> object:
    retry = Retry("verdicts", RetryPolicy(max_attempts=2, initial_delay=0.0, no_retry_on=predicate))
    return retry.execute_sync(down)


def _retry_on_result(predicate: Callable[..., Any]) -> object:
    retry = Retry("verdicts", RetryPolicy(max_attempts=2, initial_delay=0.0, retry_on_result=predicate))
    return asyncio.run(retry.execute(afine))


def _fallback(**more: Any) -> FallbackHandler:
    return FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="default", **more),
        name="verdicts",
    )


def _fallback_handle_exceptions(predicate: Callable[..., Any]) -> object:
    return _fallback(handle_exceptions=predicate).run_sync(down)


def _fallback_handle_result(predicate: Callable[..., Any]) -> object:
    return _fallback(handle_result=predicate).run_sync(lambda: "fine")


def _hedge_on(predicate: Callable[..., Any]) -> object:
    return asyncio.run(Hedging("verdicts", HedgingConfig(delay=10.0, hedge_on=predicate)).run(adown))


def _hedge_on_result(predicate: Callable[..., Any]) -> object:
    return asyncio.run(Hedging("verdicts", HedgingConfig(delay=10.0, hedge_on_result=predicate)).run(afine))


REFUSED: dict[str, tuple[str, Callable[[Callable[..., Any]], object]]] = {
    "breaker record_result, sync driver": (
        "CircuitBreakerConfig.record_result of 'verdicts'",
        _breaker_record_result_sync,
    ),
    "breaker record_result, async driver": (
        "CircuitBreakerConfig.record_result of 'verdicts'",
        _breaker_record_result_async,
    ),
    "breaker record_exceptions": (
        "CircuitBreakerConfig.record_exceptions of 'verdicts'",
        _breaker_record_exceptions,
    ),
    "retry retry_on": ("RetryPolicy.retry_on", _retry_on),  # a policy's rule: the policy has no name
    "retry no_retry_on": ("RetryPolicy.no_retry_on", _retry_no_retry_on),
    "retry retry_on_result": ("RetryPolicy.retry_on_result of 'verdicts'", _retry_on_result),
    "fallback handle_exceptions": (
        "FallbackConfig.handle_exceptions of 'verdicts'",
        _fallback_handle_exceptions,
    ),
    "fallback handle_result": ("FallbackConfig.handle_result of 'verdicts'", _fallback_handle_result),
    "hedging hedge_on": ("HedgingConfig.hedge_on of 'verdicts'", _hedge_on),
    "hedging hedge_on_result": ("HedgingConfig.hedge_on_result of 'verdicts'", _hedge_on_result),
}


def _raised(run: Callable[[Callable[..., Any]], object], predicate: Callable[..., Any]) -> str:
    """Run; return what it raised as ``"Type: message"`` (its traceback, holding the coroutine, dropped)."""
    try:
        run(predicate)
    except Exception as error:  # checked by the caller
        return f"{type(error).__name__}: {error}"
    return "nothing"


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_predicate_returning_a_coroutine_is_refused_naming_it_and_the_coroutine_closed(case: str) -> None:
    """The verdict is a TypeError naming the predicate, not a yes; no coroutine is left unawaited."""
    field, run = REFUSED[case]
    made: Made = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised = _raised(run, answers_later(made))
        gc.collect()
    assert raised.startswith(f"TypeError: {field} returned <coroutine object ")
    assert raised.endswith("never awaited: it must return a bool, not an awaitable (give a plain function)")
    assert made
    assert all(inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED for coroutine in made)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_a_chaos_switch_returning_a_coroutine_injects_nothing_and_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drill never fails the real call: the switch that answers with a coroutine says no (logged)."""
    made: Made = []
    caplog.set_level(logging.WARNING, logger="otel_resilience")
    chaos = Chaos("verdicts", ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=answers_later(made)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert chaos.run_sync(lambda: "real") == "real"
        gc.collect()
    assert made
    assert all(inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED for coroutine in made)
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert "ChaosConfig.enabled" in caplog.text


def test_a_predicate_returning_another_value_is_judged_by_its_truth() -> None:
    """``None``, a string or a number is no bool, and answers by its truth as before."""
    breaker = CircuitBreaker(
        "verdicts-truth", CircuitBreakerConfig(failure_threshold=1, record_result=lambda r: r.get("error"))
    )
    assert breaker.call_sync(lambda: {"error": None}) == {"error": None}
    assert breaker.get_stats()["state"] == "closed"
    assert breaker.call_sync(lambda: {"error": "bad gateway"}) == {"error": "bad gateway"}
    assert breaker.get_stats()["state"] == "open"
    retry = Retry("verdicts-truth", RetryPolicy(max_attempts=3, initial_delay=0.0, retry_on_result=len))
    answers = iter(["", "again", ""])
    assert retry.execute_sync(lambda: next(answers)) == ""  # the first: len 0, accepted


class _Ambiguous:
    """An answer with no truth value, as a NumPy array of several items: its ``__bool__`` raises."""

    def __bool__(self) -> bool:
        msg = "The truth value of an array with more than one element is ambiguous"
        raise ValueError(msg)

    def __repr__(self) -> str:
        return "array([True, False])"


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_predicate_answer_without_a_truth_value_is_refused_naming_the_predicate(case: str) -> None:
    """An answer whose truth value raises is a TypeError naming the predicate (and its owner), not a bare error."""
    field, run = REFUSED[case]
    with pytest.raises(TypeError) as raised:
        run(lambda *_: _Ambiguous())
    assert str(raised.value).startswith(
        f"{field} returned array([True, False]); its truth value raised ValueError"
    )
    assert isinstance(raised.value.__cause__, ValueError)


def test_a_chaos_switch_answer_without_a_truth_value_injects_nothing_and_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drill never fails the real call: the switch's answer is refused by name in the log, counted in errors."""
    caplog.set_level(logging.WARNING, logger="otel_resilience")
    chaos = Chaos(
        "ambiguous", ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=lambda _: _Ambiguous())
    )
    assert chaos.run_sync(lambda: "real") == "real"
    assert chaos.get_stats()["errors"] == 1
    assert "ChaosConfig.enabled of 'ambiguous' returned array([True, False])" in caplog.text
