"""A named policy's ``get_stats()`` has its retry, timeout, hedging, fallback and chaos counts.

Summed over its kept keys and its unkeyed calls, evicted keys' counts folded in (they never go
down), and carried across a reload that replaces every key's links.
"""

from __future__ import annotations

import asyncio
import dataclasses
import typing
from typing import Any

from otel_resilience import (
    BulkheadConfig,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    PolicyHandle,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.manager import PolicyStatsDict
from otel_resilience.patterns.chaos import ChaosConfig
from otel_resilience.testing import FakeClock

SECTIONS = ("retry", "timeout", "hedging", "fallback", "chaos")

FAILING = ResilienceConfig(
    retry_policy=RetryPolicy(max_attempts=3, attempt_timeout=1.0),
    timeout=5.0,
    fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="default"),
    chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError, seed=1),
)
"""Every attempt fails (chaos): three attempts, then the fallback answers."""


def sections(handle: PolicyHandle) -> dict[str, Any]:
    stats = handle.get_stats()
    return {name: stats[name] for name in SECTIONS}  # type: ignore[literal-required]


def expected(calls: int) -> dict[str, Any]:
    """What :data:`FAILING` counts after ``calls`` calls."""
    return {
        "retry": {
            "executions": calls,
            "attempts": 3 * calls,
            "retries": 2 * calls,
            "successes": 0,
            "first_attempt_successes": 0,
            "successes_after_retry": 0,
            "exhausted": calls,
            "retries_denied": 0,
            "non_retryable": 0,
            "cancelled": 0,
            "attempt_timeouts": 0,
        },
        "timeout": {"total_timeouts": 0, "attempt_timeouts": 0},
        "hedging": None,
        "fallback": {
            "executions": calls,
            "fallbacks_used": calls,
            "fallback_successes": calls,
            "fallback_failures": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "cache_errors": 0,
        },
        "chaos": {"runs": 3 * calls, "faults": 3 * calls, "latencies": 0, "outcomes": 0, "errors": 0},
    }


def test_the_stage_counts_are_summed_over_the_keys_and_the_unkeyed_calls(manager: ResilienceManager) -> None:
    policy = manager.policy("stages-keys", FAILING)
    for key in ("a", "b", "c"):
        assert policy.for_key(key).execute_sync(lambda: "ok") == "default"
    assert policy.execute_sync(lambda: "ok") == "default"
    assert sections(policy) == expected(4)


def test_a_policy_without_a_stage_has_none_for_it(manager: ResilienceManager) -> None:
    policy = manager.policy("stages-none", ResilienceConfig())
    policy.for_key("a").execute_sync(lambda: "ok")
    assert sections(policy) == dict.fromkeys(SECTIONS)


def test_an_attempt_timeout_alone_has_a_timeout_section(manager: ResilienceManager) -> None:
    config = ResilienceConfig(retry_policy=RetryPolicy(max_attempts=2, attempt_timeout=1.0))
    policy = manager.policy("stages-attempt", config)
    policy.for_key("a").execute_sync(lambda: "ok")
    assert policy.get_stats()["timeout"] == {"total_timeouts": 0, "attempt_timeouts": 0}


def test_evicted_keys_stage_counts_are_kept_and_never_go_down(manager: ResilienceManager) -> None:
    policy = manager.policy("stages-evicted", FAILING, max_keys=1)
    seen = []
    for key in range(5):
        policy.for_key(key).execute_sync(lambda: "ok")
        seen.append(sections(policy))
        assert seen[-1] == expected(key + 1)
    assert policy.get_stats()["evicted_keys"] == 4


def test_a_reload_that_replaces_the_links_keeps_their_counts(manager: ResilienceManager) -> None:
    policy = manager.policy("stages-reload", FAILING)
    for key in ("a", "b"):
        policy.for_key(key).execute_sync(lambda: "ok")
    policy.execute_sync(lambda: "ok")
    retry = dataclasses.replace(FAILING.retry_policy, max_attempts=3)  # an equal policy, new links
    manager.reconfigure("stages-reload", dataclasses.replace(FAILING, retry_policy=retry, timeout=6.0))
    assert policy.generation == 2
    assert sections(policy) == expected(3)
    policy.for_key("a").execute_sync(lambda: "ok")  # the key's new links count on
    policy.for_key("c").execute_sync(lambda: "ok")
    assert sections(policy) == expected(5)


def test_a_reload_that_drops_a_stage_keeps_its_counts_for_when_it_comes_back(
    manager: ResilienceManager,
) -> None:
    policy = manager.policy("stages-dropped", FAILING)
    policy.for_key("a").execute_sync(lambda: "ok")
    manager.reconfigure("stages-dropped", dataclasses.replace(FAILING, chaos=None))
    assert policy.get_stats()["chaos"] is None
    manager.reconfigure("stages-dropped", FAILING)
    assert policy.get_stats()["chaos"] == expected(1)["chaos"]


async def test_the_hedging_counts_are_summed_over_the_keys(
    clock: FakeClock, manager: ResilienceManager
) -> None:
    policy = manager.policy("stages-hedging", ResilienceConfig(hedging=HedgingConfig(delay=10.0)))

    async def answer() -> str:
        return "ok"

    for key in ("a", "b"):
        assert await policy.for_key(key).execute(answer) == "ok"
    assert await policy.execute(answer) == "ok"
    hedging = policy.get_stats()["hedging"]
    assert hedging is not None
    assert (hedging["executions"], hedging["original_wins"], hedging["hedges"]) == (3, 3, 0)


def test_the_stage_sections_are_what_their_typed_dicts_say(manager: ResilienceManager) -> None:
    config = dataclasses.replace(FAILING, hedging=HedgingConfig(delay=10.0))
    policy = manager.policy("stages-typed", config)
    hints = typing.get_type_hints(PolicyStatsDict)
    stats = policy.get_stats()
    for name in SECTIONS:
        section = typing.get_args(hints[name])[0]
        nested = typing.get_type_hints(section)
        value = stats[name]  # type: ignore[literal-required]
        assert list(value) == list(nested), name
        assert all(isinstance(value[field], nested[field]) for field in nested), name


async def test_a_call_running_through_a_reload_is_counted_once_in_the_replaced_links(
    manager: ResilienceManager,
) -> None:
    config = ResilienceConfig(retry_policy=RetryPolicy(max_attempts=2))
    policy = manager.policy("stages-in-flight", config)
    view = policy.for_key("a")
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        started.set()
        await release.wait()
        return "ok"

    running = asyncio.create_task(view.execute(slow))
    await started.wait()
    manager.reconfigure("stages-in-flight", ResilienceConfig(retry_policy=RetryPolicy(max_attempts=3)))
    state = policy._keys.get("a")
    assert state is not None
    assert [link.kind for link in state.replaced] == ["retry"]  # kept until the call ends
    release.set()
    assert await running == "ok"
    retry = policy.get_stats()["retry"]
    assert retry is not None
    assert (retry["executions"], retry["first_attempt_successes"]) == (1, 1)
    assert state.replaced == []
    await view.execute(slow)
    retry = policy.get_stats()["retry"]
    assert retry is not None
    assert retry["executions"] == 2


def test_the_links_reloads_replace_while_a_slot_is_held_outside_any_call_are_folded_at_once(
    manager: ResilienceManager,
) -> None:
    """A block run with the key's bulkhead (``view.bulkhead.slot()``) keeps the key, but runs in
    no pipeline: the links each reload replaces meanwhile are used by no call, and are folded at
    the reload (300 reloads during one block kept 1,196 of them, read by every ``get_stats()``)."""
    config = dataclasses.replace(FAILING, bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=0))
    policy = manager.policy("stages-held-slot", config)
    view = policy.for_key("a")
    view.execute_sync(lambda: "ok")
    bulkhead = view.bulkhead
    assert bulkhead is not None
    state = policy._keys.get("a")
    assert state is not None
    with bulkhead.slot():
        for reload in range(20):
            manager.reconfigure("stages-held-slot", dataclasses.replace(config, timeout=6.0 + reload % 2))
            assert state.replaced == []
        assert sections(policy) == expected(1)
    view.execute_sync(lambda: "ok")
    assert sections(policy) == expected(2)
