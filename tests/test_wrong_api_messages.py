"""A function or object given to the wrong API is refused with a message that names the fix."""

from __future__ import annotations

import pytest

from otel_resilience import CircuitBreaker, ResilienceConfig, ResilienceManager
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
