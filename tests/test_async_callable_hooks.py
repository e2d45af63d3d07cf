"""A hook or fallback function that is an object with an async ``__call__`` is async, as a protected function is.

The one rule (``engine.protecting.is_async_callable``) decides for the functions a pattern calls
too: the sync driver refuses such a part before the protected call runs, as it refuses a
coroutine function, and the async driver awaits it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest

from otel_resilience import FallbackConfig, FallbackHandler, FallbackStrategy, Retry, RetryPolicy


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
