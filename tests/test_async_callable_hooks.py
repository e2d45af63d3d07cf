"""A hook or fallback function that is an object with an async ``__call__`` is async, as a protected function is.

The one rule (``engine.protecting.is_async_callable``) decides for the functions a pattern calls
too: the sync driver refuses such a part before the protected call runs, as it refuses a
coroutine function, and the async driver awaits it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import warnings
from collections.abc import Callable

import pytest

from otel_resilience import (
    Chaos,
    ChaosConfig,
    CircuitBreakerConfig,
    ExtraStrategy,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
    resilient,
)


class _AsyncHook:
    """An object whose ``__call__`` is a coroutine function."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, *_: object) -> str:
        self.calls += 1
        return "answered"


def _failing(calls: list[int]) -> Callable[[], str]:
    def fail() -> str:
        calls.append(1)
        raise ValueError("down")

    return fail


@pytest.mark.parametrize(
    "wrap", [lambda hook: hook, lambda hook: functools.partial(hook)], ids=["object", "partial"]
)
def test_the_sync_driver_refuses_an_async_object_on_retry_before_the_call(wrap: object) -> None:
    """Refused before ``fn`` runs, with the async hook's message (not after the first failure)."""
    retry = Retry("hooked", RetryPolicy(max_attempts=2, initial_delay=0.0), on_retry=wrap(_AsyncHook()))  # type: ignore[operator]
    calls: list[int] = []
    with pytest.raises(TypeError, match="on_retry is async"):
        retry.execute_sync(_failing(calls))
    assert calls == []


def test_the_sync_driver_refuses_an_async_object_fallback_function_before_the_call() -> None:
    """Refused before ``fn`` runs, as a coroutine fallback function is."""
    handler = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=_AsyncHook()),
        name="async-object",
    )
    calls: list[int] = []
    with pytest.raises(TypeError, match="fallback_function is a coroutine function"):
        handler.run_sync(_failing(calls))
    assert calls == []


async def test_the_async_driver_awaits_an_async_object_hook_and_fallback_function() -> None:
    """The async driver takes both and awaits them."""
    hook, answer = _AsyncHook(), _AsyncHook()
    retry = Retry("hooked-async", RetryPolicy(max_attempts=2, initial_delay=0.0), on_retry=hook)
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("down")
        return "ok"

    assert await retry.execute(flaky) == "ok"
    assert hook.calls == 1
    handler = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=answer),
        name="async-object-awaited",
    )

    async def down() -> str:
        raise ValueError("down")

    assert await handler.execute_with_fallback(down) == "answered"
    assert answer.calls == 1


async def _seconds(*_: object) -> float:
    return 0.5


async def _same_config(*args: object) -> object:
    return args[-1]


CALLED_NOT_AWAITED: dict[str, tuple[str, Callable[[ResilienceManager], object]]] = {
    "retry delay_from": (r"RetryPolicy\.delay_from", lambda _: RetryPolicy(delay_from=_seconds)),
    "breaker break_duration": (
        r"CircuitBreakerConfig\.break_duration",
        lambda _: CircuitBreakerConfig(break_duration=_seconds),
    ),
    "hedging delay": (r"HedgingConfig\.delay", lambda _: HedgingConfig(delay=_seconds)),
    "extra strategy factory": (
        r"ExtraStrategy\.link",
        lambda _: ResilienceConfig(extra_strategies=[ExtraStrategy(_AsyncHook(), rank=0)]),
    ),
    "policy adapt": (
        r"ResilienceManager\.policy\.adapt",
        lambda manager: manager.policy("adapted", ResilienceConfig(), adapt=_same_config),
    ),
    "apply_config customize": (
        r"ResilienceManager\.apply_config\.customize",
        lambda manager: manager.apply_config({"a": ResilienceConfig()}, customize=_same_config),
    ),
    "reconfigure factory": (
        r"ResilienceManager\.reconfigure\.config",
        lambda manager: manager.reconfigure("named", _same_config),
    ),
}


@pytest.mark.parametrize("case", list(CALLED_NOT_AWAITED))
def test_an_async_function_where_a_plain_one_is_called_is_refused_before_it_is_called(
    case: str, manager: ResilienceManager
) -> None:
    """Every function the library calls and never awaits refuses an async one, with a TypeError naming it.

    Its coroutine is no number, step or config: the call failed later, with a misleading message
    and a coroutine never awaited, and a config was built with a delay that failed at each use.
    """
    field, make = CALLED_NOT_AWAITED[case]
    manager.policy("named", ResilienceConfig())
    with pytest.raises(TypeError, match=rf"^{field} must be a plain \(sync\) \w+, not a coroutine function"):
        make(manager)
    assert manager.policy("named").config == ResilienceConfig()
    assert manager.policy("named").generation == 1


def _wrapped_seconds(*_: object) -> object:
    """A plain function that returns an async function's coroutine: it passes as a plain function."""
    return _seconds()


def _down() -> str:
    raise ValueError("down")


async def _adown() -> str:
    raise ValueError("down")


async def _slow() -> str:
    await asyncio.sleep(0.05)
    return "ok"


def _retry_delay_from_sync() -> None:
    retry = Retry("wrapped-sync", RetryPolicy(max_attempts=2, initial_delay=0.0, delay_from=_wrapped_seconds))
    retry.execute_sync(_down)


def _retry_delay_from_async() -> None:
    retry = Retry(
        "wrapped-async", RetryPolicy(max_attempts=2, initial_delay=0.0, delay_from=_wrapped_seconds)
    )
    asyncio.run(retry.execute(_adown))


def _hedging_delay() -> None:
    asyncio.run(Hedging("wrapped", HedgingConfig(delay=_wrapped_seconds)).run(_slow))


def _break_duration() -> None:
    CircuitBreakerConfig(break_duration=_wrapped_seconds)


def _extra_strategy_factory() -> None:
    ResilienceManager().policy(
        "wrapped", ResilienceConfig(extra_strategies=[ExtraStrategy(_wrapped_seconds, rank=0)])
    )


def _policy_adapt() -> None:
    ResilienceManager().policy("wrapped", ResilienceConfig(), adapt=_wrapped_seconds)


def _chaos_fault_factory() -> None:
    Chaos("wrapped", ChaosConfig(fault_rate=1.0, fault=_wrapped_seconds)).run_sync(lambda: "real")


RETURNS_A_COROUTINE: dict[str, tuple[type[Exception] | None, Callable[[], None]]] = {
    "retry delay_from, sync driver": (TypeError, _retry_delay_from_sync),
    "retry delay_from, async driver": (TypeError, _retry_delay_from_async),
    "hedging delay": (TypeError, _hedging_delay),
    "breaker break_duration": (ValueError, _break_duration),
    "extra strategy factory": (TypeError, _extra_strategy_factory),
    "policy adapt": (TypeError, _policy_adapt),
    "chaos fault factory": (None, _chaos_fault_factory),  # logged: a drill never fails the call
}


def _refusal(case: str) -> str:
    """Run ``case``; return the type of what it raised (its traceback, holding the coroutine, dropped)."""
    _, run = RETURNS_A_COROUTINE[case]
    try:
        run()
    except Exception as error:  # the type is checked by the caller
        return type(error).__name__
    return "nothing"


@pytest.mark.parametrize("case", list(RETURNS_A_COROUTINE))
def test_a_coroutine_returned_by_a_function_called_never_awaited_is_closed_when_refused(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain function that returns a coroutine passes the check made when it is given; what it
    returns is refused when it is called, and the coroutine closed: left open, Python warned that
    it was never awaited, on top of the error."""
    expected, _ = RETURNS_A_COROUTINE[case]
    caplog.set_level(logging.CRITICAL, logger="otel_resilience")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raised = _refusal(case)
        gc.collect()
    assert raised == (expected.__name__ if expected is not None else "nothing")
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == []


class _AsyncCache:
    """A cache service whose ``get`` and ``set`` are async."""

    async def get(self, key: str) -> object:
        return None

    async def set(self, key: str, value: object) -> None:
        return None


ASYNC_FALLBACK_PARTS: dict[str, tuple[str, FallbackConfig]] = {
    "fallback_function": (
        "fallback_function",
        FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=_AsyncHook()),
    ),
    "fallback_functions": (
        r"fallback_functions\[1\]",
        FallbackConfig(strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=[str, _AsyncHook()]),
    ),
    "cache_service": (
        r"cache_service\.get",
        FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=_AsyncCache()),
    ),
}


@pytest.mark.parametrize("part", list(ASYNC_FALLBACK_PARTS))
def test_a_policy_whose_fallback_is_async_refuses_a_sync_function_when_it_decorates(
    manager: ResilienceManager, part: str
) -> None:
    """``@resilient``, a policy handle's and a key view's ``protect`` refuse it, as the fallback's own does.

    No call of it could run: the sync driver refuses each with the fallback's ``TypeError``,
    counted a failed execution. ``FallbackHandler.protect`` refused it when it decorated, and a
    policy that hedges did; a policy whose fallback is async decorated it.
    """
    field, fallback = ASYNC_FALLBACK_PARTS[part]
    with pytest.raises(TypeError, match=rf"^fallback 'fallback': {field} is a coroutine function"):
        FallbackHandler(fallback).protect(_down)
    config = ResilienceConfig(fallback_config=fallback)
    policy = manager.policy(f"async-{part}", config)
    decorators = {
        "resilient": resilient(config, manager=manager),
        "PolicyHandle.protect": policy.protect,
        "KeyedPolicyView.protect": policy.for_key("k").protect,
    }
    for name, decorate in decorators.items():
        with pytest.raises(TypeError, match=rf"policy '[\w-]+' falls back through {field}, which is async"):
            decorate(_down)
            pytest.fail(f"{name} decorated it")
        assert inspect.iscoroutinefunction(decorate(_adown)), name  # an async one is taken
    assert manager.get_resilience_statistics()["executions"]["failed"] == 0
