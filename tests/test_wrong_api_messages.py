"""A function or object given to the wrong API is refused with a message that names the fix."""

from __future__ import annotations

import inspect

import pytest

from otel_resilience import (
    CircuitBreaker,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    resilient,
    retry,
    retry_async,
    retry_sync,
)
from otel_resilience.testing import FakeClock


async def answer() -> int:
    return 42


def test_a_sync_wrapper_of_a_coroutine_says_how_to_make_it_async(clock: FakeClock) -> None:
    # A lambda is no coroutine function: the decorator picks the sync driver, which gets a coroutine.
    protected = CircuitBreaker("lambda-coroutine", clock=clock).protect(lambda: answer())
    with pytest.raises(TypeError, match=r"without _sync.*a decorator picks the async one for an async def"):
        protected()


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_a_policy_handle_given_as_a_config_says_to_call_through_the_handle(
    manager: ResilienceManager, sync: bool
) -> None:
    handle = manager.policy("handle-as-config", ResilienceConfig())
    with pytest.raises(TypeError, match=r"a policy handle runs calls itself: handle\.execute\(fn, \.\.\.\)"):
        if sync:
            manager.execute_with_resilience_sync(lambda: 1, handle)  # type: ignore[arg-type]
        else:
            await manager.execute_with_resilience(answer, handle)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be a ResilienceConfig, got \{\}"):
        manager.execute_with_resilience_sync(lambda: 1, {})  # type: ignore[arg-type]


async def test_a_generator_function_given_to_the_async_api_is_refused_as_a_generator(
    manager: ResilienceManager,
) -> None:
    """The async API refuses a generator function as the sync one does, without sending it there.

    It said "use the *_sync variant for plain functions", which refuses a generator function too.
    """
    consumed: list[int] = []

    def rows() -> object:
        consumed.append(1)
        yield 1

    handle = manager.policy("rows", ResilienceConfig())
    with pytest.raises(TypeError, match=r"rows': fn is a generator function") as direct:
        await manager.execute_with_resilience(rows, ResilienceConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"rows': fn is a generator function") as through:
        await handle.execute(rows)  # type: ignore[arg-type]
    assert "_sync" not in str(direct.value) + str(through.value)
    assert consumed == []


async def fetch() -> int:
    return 1


@pytest.mark.parametrize(
    "run",
    [
        "manager.execute_with_resilience",
        "manager.execute_with_resilience_sync",
        "handle.execute",
        "view.execute_sync",
        "handle.protect",
        "resilient",
        "breaker.call",
        "retry_async",
        "retry_sync",
        "Retry.execute",
        "retry",
    ],
)
async def test_a_coroutine_given_for_its_function_says_to_pass_the_function(
    manager: ResilienceManager, clock: FakeClock, run: str
) -> None:
    """``execute(fetch())`` names the fix (pass ``fetch``) and closes the coroutine it will never run.

    The message said only "fn must be callable" (the retry forms: "needs a callable fn"), and the
    coroutine was left to warn that it was never awaited.
    """
    handle = manager.policy("coroutine-given", ResilienceConfig())
    calls = {
        "manager.execute_with_resilience": lambda c: manager.execute_with_resilience(c, ResilienceConfig()),
        "manager.execute_with_resilience_sync": lambda c: manager.execute_with_resilience_sync(
            c, ResilienceConfig()
        ),
        "handle.execute": handle.execute,
        "view.execute_sync": handle.for_key("k").execute_sync,
        "handle.protect": handle.protect,
        "resilient": resilient(ResilienceConfig(), manager=manager),
        "breaker.call": CircuitBreaker(f"coroutine-given-{run}", clock=clock).call,
        "retry_async": lambda c: retry_async(c, clock=clock),
        "retry_sync": lambda c: retry_sync(c, clock=clock),
        "Retry.execute": Retry(f"coroutine-given-{run}", clock=clock).execute,
        "retry": retry(clock=clock),
    }
    coroutine = fetch()
    with pytest.raises(TypeError, match=r"fn must be callable \(pass fetch, not fetch\(\): the function"):
        outcome = calls[run](coroutine)
        if inspect.isawaitable(outcome):
            await outcome
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
