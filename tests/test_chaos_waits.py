"""An injected delay honours cancellation and deadlines, as a slow dependency would have to."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from support import until

from otel_resilience import Chaos, ChaosConfig, OperationTimeoutError, TimeoutHandler, fail_after

LONG = 60.0
"""An injected delay no test waits for: a test that does not cut it fails on its own bound."""


def slow_chaos(**config: Any) -> Chaos:
    """A chaos instance on the system clock that delays every call by :data:`LONG`."""
    return Chaos("slow", ChaosConfig(latency_rate=1.0, latency=LONG, **config))


async def test_cancelling_a_call_during_an_injected_delay_cancels_it_at_once() -> None:
    """The task is cancelled in the delay: CancelledError, the dependency never runs, the execution is cancelled."""
    chaos, calls = slow_chaos(), []

    async def dependency() -> str:
        calls.append("called")
        return "real"

    task = asyncio.create_task(chaos.call(dependency))
    await until(lambda: chaos.get_stats()["latencies"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10.0)
    assert calls == []
    assert chaos._pipeline.stats.cancelled == 1


async def test_an_enclosing_deadline_cuts_an_injected_delay() -> None:
    """fail_after(0.05) around a 60 s injected delay raises its timeout well before the delay ends."""
    chaos, calls = slow_chaos(fault_rate=1.0, fault=ConnectionError), []

    async def dependency() -> str:
        calls.append("called")
        return "real"

    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as caught:
        async with fail_after(0.05):
            await chaos.call(dependency)
    assert time.monotonic() - started < 10.0
    assert caught.value.timeout == 0.05
    assert calls == []
    assert (chaos.get_stats()["latencies"], chaos.get_stats()["faults"]) == (1, 0)


def test_a_sync_delay_ends_at_the_deadline_and_the_timeout_owning_it_raises(clock: Any) -> None:
    """The thread sleeps until the deadline, not 60 s; the timeout raises as if the call had been late."""
    chaos, calls = Chaos("slow-sync", ChaosConfig(latency_rate=1.0, latency=LONG), clock=clock), []
    handler = TimeoutHandler(1.5, name="bounded", clock=clock)
    with pytest.raises(OperationTimeoutError) as caught:
        handler.with_timeout_sync(chaos.call_sync, lambda: calls.append("called"))
    assert (caught.value.operation, caught.value.timeout, caught.value.scope) == ("bounded", 1.5, "total")
    assert (clock.sleeps, calls) == ([1.5], [])
    assert handler.get_stats()["timeouts"] == 1


def test_a_sync_delay_cut_at_the_deadline_gets_the_timeouts_default(clock: Any) -> None:
    """The owning timeout treats the cut delay as its own expiry: its default answers."""
    chaos = Chaos("slow-default", ChaosConfig(latency_rate=1.0, latency=LONG), clock=clock)
    handler = TimeoutHandler(2.0, default="degraded", clock=clock)
    assert handler.with_timeout_sync(chaos.call_sync, lambda: "real") == "degraded"
    assert clock.now() == 1002.0


def test_a_sync_delay_shorter_than_the_deadline_is_whole_and_the_call_runs(clock: Any) -> None:
    """A delay that fits leaves the deadline alone: the dependency answers after it."""
    chaos = Chaos("fits", ChaosConfig(latency_rate=1.0, latency=0.5), clock=clock)
    handler = TimeoutHandler(2.0, clock=clock)
    assert handler.with_timeout_sync(chaos.call_sync, lambda: "real") == "real"
    assert clock.sleeps == [0.5]


def test_a_sync_delay_that_ends_at_the_deadline_is_cut_there_and_the_call_never_runs(clock: Any) -> None:
    """A delay as long as the time left reaches the deadline: the dependency is not called at it."""
    chaos, calls = Chaos("at-deadline", ChaosConfig(latency_rate=1.0, latency=1.5), clock=clock), []
    handler = TimeoutHandler(1.5, name="bounded", clock=clock)
    with pytest.raises(OperationTimeoutError) as caught:
        handler.with_timeout_sync(chaos.call_sync, lambda: calls.append("called"))
    assert (caught.value.timeout, caught.value.scope) == (1.5, "total")
    assert (clock.sleeps, calls) == ([1.5], [])
