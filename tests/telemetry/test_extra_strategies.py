"""A user's own strategy, added through ResilienceConfig.extra_strategies, shows in the execution's telemetry."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from own_pattern_support import Quota as QuotaPattern
from own_pattern_support import QuotaConfig, QuotaEvent, QuotaExhaustedError

from otel_resilience import (
    ExecutionRejectedError,
    ExtraStrategy,
    ResilienceConfig,
    ResilienceManager,
    resilient,
)
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.step import Step
from otel_resilience.patterns.retry import Jitter, RetryPolicy, RetryStrategy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder

_names = itertools.count()


class Chaos(Step):
    """A toy fault injector: the first ``faults`` runs it admits fail before the dependency is called."""

    __slots__ = ("faults", "runs")

    kind = "chaos"

    def __init__(self, faults: int) -> None:
        super().__init__()
        self.faults = faults
        self.runs = 0

    def admit(self, ctx: ExecutionContext) -> None:
        self.runs += 1
        if self.runs <= self.faults:
            raise ConnectionError(f"chaos on attempt {ctx.attempt}")


def _config(name: str, **place: Any) -> ResilienceConfig:
    retry = RetryPolicy(max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=0.0, jitter=Jitter.NONE)
    return ResilienceConfig(
        name=name, retry_policy=retry, extra_strategies=(ExtraStrategy(lambda _name: Chaos(1), **place),)
    )


def _outcomes(otel: Any, name: str) -> dict[str, int]:
    return {
        p.attributes[sc.OUTCOME]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes[sc.POLICY] == name
    }


async def test_a_fault_injected_inside_retry_is_retried_and_traced(otel, clock, driver, alerts):
    """Inside retry, the injected fault is an attempt that failed: retried, timed, and the execution recovered."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    name = f"chaos-inside-{next(_names)}"
    config = _config(name, inside="retry")

    @resilient(config, manager=manager)
    def fetch_sync() -> str:
        return "ok"

    @resilient(config, manager=manager)
    async def fetch() -> str:
        return "ok"

    assert (fetch_sync() if driver == "sync" else await fetch()) == "ok"
    execution = otel.span(name)
    assert execution.attributes[sc.OUTCOME] == "recovered"
    assert [e.attributes[sc.ATTEMPT] for e in execution.events if e.name == sc.EV_RETRY_SCHEDULED] == [1]
    assert [s.attributes[sc.ATTEMPT] for s in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)] == [2]
    assert _outcomes(otel, name)["recovered"] == 1
    durations = {
        p.attributes[sc.OUTCOME]: p.count
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == name
    }
    assert durations == {"failure": 1, "success": 1}
    assert manager.get_resilience_statistics()["extra_strategies"][name] == [
        {"kind": "chaos", "name": "chaos", "rank": 401}
    ]


async def test_a_fault_injected_outside_retry_fails_the_execution_once(otel, clock, driver, alerts):
    """Outside retry, the injected fault is not retried: the execution span and counts say failure."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    name = f"chaos-outside-{next(_names)}"
    config = _config(name, outside="retry")
    calls: list[int] = []

    def dependency() -> str:
        calls.append(1)
        return "ok"

    async def dependency_async() -> str:
        return dependency()

    with pytest.raises(ConnectionError, match="chaos on attempt 1"):
        if driver == "sync":
            manager.execute_with_resilience_sync(dependency, config)
        else:
            await manager.execute_with_resilience(dependency_async, config)
    assert calls == []
    execution = otel.span(name)
    assert execution.attributes[sc.OUTCOME] == "failure"
    assert execution.status.status_code is StatusCode.ERROR
    assert otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX) == []
    assert _outcomes(otel, name)["failure"] == 1


class QuotaOverError(ExecutionRejectedError):
    """A user's own rejection, defined after the library was imported (as a user's always is)."""


class Quota(Step):
    """A user's own step that admits ``left`` runs, then rejects with a rejection class of the user's own."""

    __slots__ = ("left",)

    kind = "quota"

    def __init__(self, name: str, left: int = 2) -> None:
        super().__init__()
        self.left = left

    def admit(self, ctx: ExecutionContext) -> None:
        self.left -= 1
        if self.left < 0:
            raise QuotaOverError("no quota left")


async def test_a_user_s_own_rejection_is_not_named_as_the_dependency_s_error(otel, clock, driver, alerts):
    """The dependency failed twice, then the user's step rejected: the span names ConnectionError as the dependency's error."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    name = f"own-rejection-{next(_names)}"
    retry = RetryPolicy(max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=0.0, jitter=Jitter.NONE)
    config = ResilienceConfig(
        name=name, retry_policy=retry, extra_strategies=(ExtraStrategy(Quota, inside="retry"),)
    )

    def down() -> str:
        raise ConnectionError("down")

    async def down_async() -> str:
        return down()

    with pytest.raises(QuotaOverError):
        if driver == "sync":
            manager.execute_with_resilience_sync(down, config)
        else:
            await manager.execute_with_resilience(down_async, config)
    span = otel.span(name)
    assert span.attributes[sc.ERROR_TYPE] == f"{__name__}.QuotaOverError"
    assert span.attributes[sc.DEPENDENCY_ERROR_TYPE] == "ConnectionError"


async def test_a_pattern_s_own_event_kind_is_left_out_and_its_built_in_events_are_shown(otel, driver):
    """The listener shows the built-in events a pattern of one's own reports; its own kind (no row) costs no failure."""
    quota = QuotaPattern(f"own-kinds-{next(_names)}", QuotaConfig(limit=1))
    errors = otel.listener.total_errors

    async def run() -> str:
        if driver == "sync":
            return quota.call_sync(lambda: "ok")

        async def ok() -> str:
            return "ok"

        return await quota.call(ok)

    with EventRecorder() as recorder:
        assert await run() == "ok"
        with pytest.raises(QuotaExhaustedError):
            await run()
    assert len(recorder.of(QuotaEvent.GRANTED)) == 1  # reported, and heard by a listener that wants it
    assert otel.listener.total_errors == errors
    events = [e for span in otel.spans(quota.name) for e in span.events]
    assert [(e.name, e.attributes[sc.PATTERN], e.attributes[sc.REJECTION_REASON]) for e in events] == [
        (sc.EV_CALL_REJECTED, "quota", "quota_exhausted")
    ]
    own = [
        p for p in otel.points(sc.REJECTIONS) if p.attributes.get(sc.POLICY) == quota.name
    ]  # not others' zeros
    assert [(dict(p.attributes), p.value) for p in own] == [
        (
            {
                sc.POLICY: quota.name,
                sc.PATTERN: "quota",
                sc.NAME: quota.name,
                sc.REJECTION_REASON: "quota_exhausted",
            },
            1,
        )
    ]
