"""A pattern made outside the library, the documented way, runs alone and in a policy under both drivers."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from own_pattern_support import Quota, QuotaConfig, QuotaEvent, QuotaExhaustedError, QuotaGranted

from otel_resilience import (
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.engine.events import CallRejected, Event, EventKind
from otel_resilience.patterns.retry import Jitter, RetryPolicy
from otel_resilience.testing import EventRecorder

RETRY_3 = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=Jitter.NONE)


def ok() -> str:
    return "ok"


async def ok_async() -> str:
    return "ok"


async def run_alone(quota: Quota, driver: str) -> Any:
    return quota.call_sync(ok) if driver == "sync" else await quota.call(ok_async)


async def run_policy(manager: ResilienceManager, config: ResilienceConfig, driver: str) -> Any:
    if driver == "sync":
        return manager.execute_with_resilience_sync(ok, config)
    return await manager.execute_with_resilience(ok_async, config)


def test_an_event_kind_of_a_pattern_s_own_is_an_event_kind() -> None:
    """A pattern declares its kinds in its own package: members of an EventKind subclass, like Event's."""
    assert isinstance(QuotaEvent.GRANTED, EventKind)
    assert isinstance(Event.CALL_REJECTED, EventKind)
    assert {QuotaEvent.GRANTED: 1}[QuotaEvent.GRANTED] == 1


async def test_it_runs_alone_and_reports_its_own_and_built_in_events(
    driver: str, recorder: EventRecorder
) -> None:
    """Its verbs run its one-link pipeline; the hub delivers its own kind and a built-in one, from its source."""
    quota = Quota(f"alone-{driver}", QuotaConfig(limit=2))
    assert await run_alone(quota, driver) == "ok"
    assert await run_alone(quota, driver) == "ok"
    with pytest.raises(QuotaExhaustedError, match="exhausted"):
        await run_alone(quota, driver)
    assert recorder.of(QuotaEvent.GRANTED) == [QuotaGranted(1), QuotaGranted(0)]
    assert recorder.of(Event.CALL_REJECTED) == [CallRejected("quota_exhausted")]
    assert {(s.kind, s.name) for s in recorder.sources(QuotaEvent.GRANTED)} == {("quota", quota.name)}
    assert quota.get_stats() == {"name": quota.name, "granted": 2, "rejected": 1}


def test_its_config_refuses_a_bad_value_naming_the_field() -> None:
    """Its config validates with the engine's helpers: a ValueError naming QuotaConfig.limit."""
    with pytest.raises(ValueError, match=r"QuotaConfig\.limit must be >= 0, got -1"):
        QuotaConfig(limit=-1)
    with pytest.raises(TypeError, match=r"Quota\.config must be a QuotaConfig or None"):
        Quota("bad", config=3)  # type: ignore[arg-type]


async def test_in_a_policy_its_rejection_is_not_retried_and_the_fallback_answers_it(
    driver: str, recorder: EventRecorder
) -> None:
    """Placed inside retry, its link is asked once per attempt; its rejection is one: not retried, answered."""
    quota = Quota(f"policy-{driver}", QuotaConfig(limit=1))
    config = ResilienceConfig(
        name=f"quota-policy-{driver}",
        retry_policy=RETRY_3,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
        extra_strategies=(ExtraStrategy(quota.as_strategy, inside="retry"),),
    )
    manager = ResilienceManager()
    assert await run_policy(manager, config, driver) == "ok"
    assert await run_policy(manager, config, driver) == "fallback"
    assert quota.get_stats()["rejected"] == 1  # asked once: the rejection was not retried
    assert [s.pipeline for s in recorder.sources(QuotaEvent.GRANTED)] == [config.name]
    stats = manager.get_resilience_statistics()
    assert stats["extra_strategies"][config.name] == [
        {"kind": "quota", "name": quota.name, "rank": 401, "stats": quota.get_stats()}
    ]
    policy = stats["policies"][config.name]
    assert (policy["successful"], policy["fallback"]) == (1, 1)
    bare = dataclasses.replace(config, name=f"{config.name}-bare", fallback_config=None)
    with pytest.raises(QuotaExhaustedError):
        await run_policy(manager, bare, driver)
    assert manager.get_resilience_statistics()["policies"][bare.name]["rejected"] == 1
