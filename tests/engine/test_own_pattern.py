"""A pattern made outside the library, the documented way, runs alone and in a policy under both drivers."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

import pytest
from own_pattern_support import Quota, QuotaConfig, QuotaEvent, QuotaExhaustedError, QuotaGranted, QuotaStep

from otel_resilience import (
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.events import CallRejected, Event, EventKind, StrategyTelemetry
from otel_resilience.engine.facade import Pattern, verb
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


def test_a_pattern_s_kind_is_a_name_refused_in_its_class_statement() -> None:
    """``kind=`` is ``resilience.pattern`` on every event and span of the pattern: a name, checked when declared."""
    with pytest.raises(TypeError, match=r"Numbered\.kind must be a str, got 7 \(int\)"):

        class Numbered(Quota, kind=7):  # type: ignore[arg-type]
            pass

    with pytest.raises(ValueError, match=r"Blank\.kind must be a non-empty name"):

        class Blank(Quota, kind=" "):
            pass

    with pytest.raises(ValueError, match=r"Long\.kind must be a name of at most 256 characters"):

        class Long(Quota, kind="k" * 257):
            pass

    class Renamed(Quota, kind="renamed_quota"):
        pass

    assert Renamed("renamed").telemetry.source.kind == "renamed_quota"


def test_a_pattern_that_names_no_kind_is_refused_when_made_saying_how() -> None:
    """Not an AttributeError about a private field: the TypeError names the class statement's ``kind=``."""

    class Nameless(Pattern[QuotaConfig, QuotaStep]):
        def _link(self, telemetry: StrategyTelemetry) -> QuotaStep:
            raise AssertionError("unreachable")

        def get_stats(self) -> dict[str, Any]:
            return {}

    with pytest.raises(
        TypeError, match=r"Nameless names no kind: .*class Nameless\(Pattern\[\.\.\.\], kind="
    ):
        Nameless("nameless", QuotaConfig(), SYSTEM_CLOCK)


@pytest.mark.parametrize(
    "method", [Pattern.get_stats, Quota.call, "run"], ids=["get_stats", "a_verb", "a_str"]
)
def test_verb_publishes_run_or_run_sync_only(method: Any) -> None:
    """``verb`` names one of the two run methods: anything else is a TypeError naming its argument, not a KeyError."""
    with pytest.raises(TypeError, match=r"verb\.method must be Pattern\.run or Pattern\.run_sync"):
        verb(method, "Do it.", returns="What it returned.", raises=())


def _patterns(base: type[Pattern[Any, Any]]) -> list[type[Pattern[Any, Any]]]:
    found = [base]
    for sub in base.__subclasses__():
        found += _patterns(sub)
    return found


def test_a_verb_read_from_its_class_declares_its_self_type() -> None:
    """``Pattern.run`` (given to ``verb``) and ``CircuitBreaker.call`` read from the class name their ``self``.

    Left undeclared, a checker that does not infer a generic class's arguments from nothing
    (pyright) types ``Pattern.run`` read from the class as ``Pattern[Unknown, Unknown]``: the
    documented ``call = verb(Pattern.run, ...)`` and every verb read from its class
    (``CircuitBreaker.call_sync(breaker, fn)``) were "partially unknown" errors in strict mode.
    """
    public = [
        cls for cls in _patterns(Pattern) if not cls.__name__.startswith("_")
    ]  # what users read verbs of
    verbs = [(cls, name) for cls in public for name in ("run", "run_sync", *cls._verbs.values())]
    assert {cls.__name__ for cls, _ in verbs} >= {"CircuitBreaker", "Bulkhead", "Hedging", "Quota"}
    undeclared = [
        f"{cls.__name__}.{name}"
        for cls, name in verbs
        if get_type_hints(getattr(cls, name)).get("self") != Pattern[Any, Any]
    ]
    assert undeclared == []
