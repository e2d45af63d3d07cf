"""A returned value can trigger the fallback (``FallbackConfig.handle_result``), as an error does."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otel_resilience import (
    MISSING,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    UnacceptedResultError,
    resilient,
)
from otel_resilience.engine.events import Event, FallbackUsed
from otel_resilience.testing import EventRecorder, FakeClock


def bad(response: dict[str, int]) -> bool:
    return response["status"] >= 500


class Cache:
    """A sync in-memory cache service."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def test_a_value_not_accepted_gets_the_default_and_an_accepted_one_is_kept() -> None:
    handler = FallbackHandler(
        name="status",
        config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"status": 0}, handle_result=bad
        ),
    )
    with EventRecorder() as recorder:
        assert handler.execute_with_fallback_sync(lambda: {"status": 503}) == {"status": 0}
        assert handler.execute_with_fallback_sync(lambda: {"status": 200}) == {"status": 200}
    used = recorder.of(Event.FALLBACK_USED)
    assert len(used) == 1
    assert isinstance(used[0], FallbackUsed)
    assert used[0].error_type == "otel_resilience.errors.UnacceptedResultError"
    stats = handler.get_stats()
    assert (stats["fallback_successes"], stats["fallback_failures"]) == (1, 0)


async def test_the_alternative_function_receives_the_value_in_the_error() -> None:
    seen: list[object] = []

    def alternative(error: Exception, region: str) -> dict[str, int]:
        assert isinstance(error, UnacceptedResultError)
        seen.append(error.result)
        return {"status": 200, "from": 2}

    async def primary(region: str) -> dict[str, int]:
        return {"status": 502}

    handler = FallbackHandler(
        name="alt",
        config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative, handle_result=bad
        ),
    )
    assert await handler.execute_with_fallback(primary, "eu") == {"status": 200, "from": 2}
    assert seen == [{"status": 502}]


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_a_failing_alternative_chains_the_value_not_accepted(driver: str) -> None:
    """As for a handled error, the alternative's own error keeps what it answered for as its
    ``__context__``: the value not accepted, in its UnacceptedResultError."""

    def alternative(error: Exception) -> dict[str, int]:
        raise LookupError("no replica")

    async def primary_async() -> dict[str, int]:
        return {"status": 503}

    handler = FallbackHandler(
        name="alt-fails",
        config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative, handle_result=bad
        ),
    )
    with pytest.raises(LookupError, match="no replica") as caught:
        if driver == "async":
            await handler.execute_with_fallback(primary_async)
        else:
            handler.execute_with_fallback_sync(lambda: {"status": 503})
    context = caught.value.__context__
    assert isinstance(context, UnacceptedResultError)
    assert context.result == {"status": 503}
    assert handler.get_stats()["fallback_failures"] == 1


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_an_alternative_failing_in_its_own_handling_still_chains_the_value_not_accepted(
    driver: str,
) -> None:
    """An alternative whose error has a context of its own (raised while it handled its replica's
    error) keeps it, and the value not accepted ends the chain, where a handled error would be:
    ``RuntimeError -> LookupError -> UnacceptedResultError``, nothing of the chain lost."""
    replica_error = LookupError("no replica")

    def alternative(error: Exception) -> dict[str, int]:
        try:
            raise replica_error
        except LookupError:
            raise RuntimeError("no answer") from None

    async def primary_async() -> dict[str, int]:
        return {"status": 503}

    handler = FallbackHandler(
        name="alt-fails-inside",
        config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative, handle_result=bad
        ),
    )
    with pytest.raises(RuntimeError, match="no answer") as caught:
        if driver == "async":
            await handler.execute_with_fallback(primary_async)
        else:
            handler.execute_with_fallback_sync(lambda: {"status": 503})
    assert caught.value.__context__ is replica_error
    assert caught.value.__suppress_context__  # the alternative's own `from None` is kept
    unaccepted = replica_error.__context__
    assert isinstance(unaccepted, UnacceptedResultError)
    assert unaccepted.result == {"status": 503}
    assert unaccepted.__context__ is None


def test_a_value_not_accepted_is_never_cached_and_a_miss_returns_it() -> None:
    cache = Cache()
    config = FallbackConfig(
        strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=cache, handle_result=bad
    )
    handler = FallbackHandler(name="cached", config=config)
    # Nothing cached yet: the value not accepted is returned as it is (as with no fallback).
    assert handler.execute_with_fallback_sync(lambda: {"status": 500}) == {"status": 500}
    assert cache.data == {}
    assert handler.execute_with_fallback_sync(lambda: {"status": 200}) == {"status": 200}
    assert cache.data == {"k": {"status": 200}}
    assert handler.execute_with_fallback_sync(lambda: {"status": 500}) == {"status": 200}  # the hit
    assert cache.data == {"k": {"status": 200}}


def test_a_raising_predicate_reaches_the_caller() -> None:
    def broken(value: object) -> bool:
        raise KeyError("predicate")

    handler = FallbackHandler(
        name="broken",
        config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0, handle_result=broken),
    )
    with pytest.raises(KeyError, match="predicate"):
        handler.execute_with_fallback_sync(lambda: 1)


def test_handle_result_must_be_callable() -> None:
    with pytest.raises(TypeError, match=r"FallbackConfig\.handle_result"):
        FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, handle_result=True)  # type: ignore[arg-type]


def test_an_async_handle_result_is_refused() -> None:
    """The predicate is called, never awaited: an async one would return a coroutine, which is
    true, and every value would be answered by the fallback. Refused at construction."""

    async def judge(value: object) -> bool:
        return value is None

    class Judge:
        async def __call__(self, value: object) -> bool:
            return value is None

    for predicate in (judge, Judge()):
        with pytest.raises(TypeError, match=r"FallbackConfig\.handle_result"):
            FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, handle_result=predicate)


async def test_through_the_manager_the_execution_counts_as_fallback() -> None:
    config = ResilienceConfig(
        name="results",
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"status": 0}, handle_result=bad
        ),
    )

    @resilient(config)
    async def fetch(status: int) -> dict[str, int]:
        return {"status": status}

    assert await fetch(503) == {"status": 0}
    assert await fetch(200) == {"status": 200}


def _pending_or_ready(value: str) -> str:
    return value


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_a_result_the_policys_retry_rejected_is_never_cached_as_the_last_good_one(driver: str) -> None:
    """``CACHED_VALUE`` keeps the last *good* value: a result a retry gave up on (a failure) is not one."""
    cache = Cache()
    manager = ResilienceManager(clock=FakeClock())
    config = ResilienceConfig(
        name=f"cached-judged-{driver}",
        retry_policy=RetryPolicy(
            max_attempts=2, initial_delay=0.0, jitter="none", retry_on_result=lambda r: r == "pending"
        ),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=cache
        ),
    )

    async def run(value: str) -> Any:
        if driver == "sync":
            return manager.execute_with_resilience_sync(_pending_or_ready, config, value)

        async def call(v: str) -> str:
            return v

        return await manager.execute_with_resilience(call, config, value)

    assert await run("pending") == "pending"
    await asyncio.sleep(0)  # an async write runs as a task of its own
    assert cache.data == {}
    assert await run("ready") == "ready"
    await asyncio.sleep(0)
    assert cache.data == {"k": "ready"}
    assert await run("pending") == "pending"
    await asyncio.sleep(0)
    assert cache.data == {"k": "ready"}


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_a_value_not_accepted_that_no_answer_replaces_is_a_failure(driver: str) -> None:
    """``handle_result`` judged the value failed and the cache had nothing: returned, counted failed."""
    manager = ResilienceManager(clock=FakeClock())
    config = ResilienceConfig(
        name=f"unanswered-{driver}",
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=Cache(), handle_result=bad
        ),
    )
    if driver == "sync":
        assert manager.execute_with_resilience_sync(lambda: {"status": 500}, config) == {"status": 500}
    else:

        async def call() -> dict[str, int]:
            return {"status": 500}

        assert await manager.execute_with_resilience(call, config) == {"status": 500}
    counts = manager.get_resilience_statistics()["policies"][config.name]
    assert (counts["failed"], counts["successful"], counts["fallback"]) == (1, 0, 0)
