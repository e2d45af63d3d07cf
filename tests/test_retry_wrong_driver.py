"""A function that does not fit the driver, under a retry: a failed call the retry does not retry.

The driver refuses it (a coroutine function given to the sync API, a plain function given to the
async one, a sync call of a policy with hedging) and the pipeline raises a ``TypeError``. For the
retry it is an error it does not retry, counted as ``non_retryable`` (never ``cancelled``), with
the attempt's telemetry saying ``failure`` and ``TypeError``: the same through every entry
(``Retry.execute``/``execute_sync``, ``protect``, the ``retry`` decorator, a pipeline link, a
manager's policy) and both drivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from otel_support import Otel, attempts_ended
from support import refused_unchanged

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.engine.events import Event, RetryExhausted, error_type_name
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.patterns.hedging import Hedging, HedgingConfig
from otel_resilience.patterns.retry import Jitter, Retry, RetryPolicy, retry
from otel_resilience.testing import EventRecorder, FakeClock

POLICY = RetryPolicy(max_attempts=3, initial_delay=1.0, jitter=Jitter.NONE)
COROUTINE_IN_SYNC = "fn returned a coroutine, which the sync API cannot await"
PLAIN_IN_ASYNC = "fn must return an awaitable for the async API"


class Boom(ConnectionError):
    """A retried failure."""


async def coroutine_function() -> str:
    return "never awaited"


def plain_function() -> str:
    return "not awaitable"


def returns_a_coroutine() -> Any:
    """A plain function that returns a coroutine (a plain wrapper of an async function)."""
    return coroutine_function()


def _not_retried(stats: dict[str, int], retries: int = 0) -> None:
    """The execution counted once, as ended by an error the retry does not retry."""
    attempts = retries + 1
    assert (stats["non_retryable"], stats["cancelled"], stats["exhausted"]) == (1, 0, 0), stats
    assert (stats["executions"], stats["attempts"], stats["retries"]) == (1, attempts, retries), stats


async def test_a_coroutine_function_given_to_the_sync_api_is_not_retried_nor_cancelled(
    clock: FakeClock, otel: Otel
) -> None:
    """A coroutine function given to ``execute_sync``: one failed attempt (``TypeError``), not retried, not cancelled."""
    r = Retry("wrong-sync", POLICY, clock=clock)
    with pytest.raises(TypeError) as caught:
        r.execute_sync(coroutine_function)
    refused_unchanged(caught.value, COROUTINE_IN_SYNC)
    assert clock.sleeps == []
    _not_retried(r.get_stats())
    assert attempts_ended(otel, "retry", "wrong-sync") == {("failure", "TypeError"): 1}


async def test_a_plain_function_given_to_the_async_api_is_not_retried_nor_cancelled(
    clock: FakeClock, otel: Otel
) -> None:
    """A plain function given to ``execute``: one failed attempt (``TypeError``), not retried, not cancelled."""
    r = Retry("wrong-async", POLICY, clock=clock)
    with pytest.raises(TypeError) as caught:
        await r.execute(plain_function)  # type: ignore[arg-type]
    refused_unchanged(caught.value, PLAIN_IN_ASYNC)
    assert clock.sleeps == []
    _not_retried(r.get_stats())
    assert attempts_ended(otel, "retry", "wrong-async") == {("failure", "TypeError"): 1}


async def test_protect_and_the_decorator_count_a_plain_wrapper_of_an_async_function_so(
    clock: FakeClock, otel: Otel
) -> None:
    """Both decorate a plain function for the sync driver; the coroutine it returns is refused."""
    r = Retry("protected", POLICY, clock=clock)
    decorated: list[Callable[[], Any]] = [
        r.protect(returns_a_coroutine),
        retry(POLICY, clock=clock, name="decorated")(returns_a_coroutine),
    ]
    for fn in decorated:
        with pytest.raises(TypeError) as caught:
            fn()
        refused_unchanged(caught.value, COROUTINE_IN_SYNC)
    assert clock.sleeps == []
    _not_retried(r.get_stats())
    for name in ("protected", "decorated"):
        assert attempts_ended(otel, "retry", name) == {("failure", "TypeError"): 1}


async def test_a_sync_call_of_a_hedging_link_inside_the_retry_is_not_retried_nor_cancelled(
    clock: FakeClock, otel: Otel
) -> None:
    """A sync call of a pipeline whose hedging is async only: the retry around it counts an error it does not retry."""
    r = Retry("around-hedging", POLICY, clock=clock)
    hedging = Hedging("hedged", HedgingConfig(delay=0.1))
    pipeline = (
        PipelineBuilder("hedged-policy", clock=clock)
        .add(r.as_strategy("hedged-policy"))
        .add(hedging.as_strategy("hedged-policy"))
        .build()
    )
    calls: list[int] = []
    with pytest.raises(TypeError) as caught:
        pipeline.execute_sync(lambda: calls.append(1))
    refused_unchanged(caught.value, "hedging 'hedged' is async only")
    assert (calls, clock.sleeps) == ([], [])
    _not_retried(r.get_stats())
    assert (pipeline.stats.errors, pipeline.stats.cancelled) == (1, 0)
    # The hedging inside opens the scope of each attempt (one per attempt): the retry opens none,
    # and the hedging refused the execution before any attempt of its race started.
    assert attempts_ended(otel, "retry", "around-hedging") == {}
    assert attempts_ended(otel, "hedging", "hedged") == {}


async def test_a_managers_policy_with_hedging_called_sync_counts_its_retry_so(
    manager: ResilienceManager, clock: FakeClock, otel: Otel
) -> None:
    """A manager's policy with hedging called sync: its retry counts the refusal as an error it does not retry."""
    config = ResilienceConfig(name="policy-hedged", hedging=HedgingConfig(delay=0.1), retry_policy=POLICY)
    with pytest.raises(TypeError) as caught:
        manager.execute_with_resilience_sync(plain_function, config)
    refused_unchanged(caught.value, "hedging 'policy-hedged' is async only")
    assert clock.sleeps == []
    (link,) = [s for s in manager.pipeline_for(config, "policy-hedged").strategies if s.kind == "retry"]
    _not_retried(link._core.stats.as_dict())  # type: ignore[attr-defined]
    assert attempts_ended(otel, "retry", "policy-hedged") == {}  # the hedging inside opens the scopes


async def test_a_function_refused_after_a_retry_stops_the_retry_as_not_retryable(
    driver: str, clock: FakeClock, otel: Otel, recorder: EventRecorder
) -> None:
    """Retried once, the function then returns what the driver refuses: retrying stops there."""
    calls: list[int] = []

    def fn() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise Boom
        return coroutine_function() if driver == "sync" else "not awaitable"

    r = Retry("refused-later", POLICY, clock=clock)
    with pytest.raises(TypeError) as caught:
        if driver == "sync":
            r.execute_sync(fn)
        else:
            await r.execute(fn)
    refused_unchanged(caught.value, COROUTINE_IN_SYNC if driver == "sync" else PLAIN_IN_ASYNC)
    assert (len(calls), clock.sleeps) == (2, [1.0])
    _not_retried(r.get_stats(), retries=1)
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(2, "TypeError", "not_retryable", False)]
    boom = error_type_name(Boom())
    assert attempts_ended(otel, "retry", "refused-later") == {
        ("failure", boom): 1,
        ("failure", "TypeError"): 1,
    }
