"""Chaos soak: many calls through the manager against a dependency that misbehaves in every way.

The dependency injects errors, latency spikes, hangs (only a deadline ends them) and bursts
(stretches of calls where most of them fail, which open the breaker). In CI 20 000 calls run in
bounded time; with ``RUN_SLOW=1`` 120 000 do. Afterwards:

* every call is accounted for, by the caller and by the manager's statistics, per the definition
  in ``get_resilience_statistics``: ``total = successful + fallback + failed + cancelled`` with
  ``rejected`` and ``timeouts`` the parts of ``failed``;
* the OpenTelemetry totals (SDK ``InMemoryMetricReader`` through ``instrument(meter_provider=)``)
  equal those statistics: executions by outcome, the duration histogram's count, breaker calls
  by result, rejections by reason;
* nothing leaked (slots, permits, tasks) and memory is flat over the run: the end holds at most
  ``BLOCK_BUDGET`` allocated blocks more than the larger of two samples, at a quarter and at half
  of the run (one sample alone moves by thousands of blocks with the machine's load, from the
  interpreter's free lists and the loop's timing; a leak of a block every few calls still shows
  between half and end).
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitOpenError,
    ExecutionRejectedError,
    FallbackConfig,
    FallbackStrategy,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.telemetry import semconv as sc

POLICY = "soak"
MOODS = ("calm", "burst", "calm", "spikes", "calm", "hangs")
"""The dependency's moods, 500 calls each, in this order."""
WINDOW = 64
BLOCK_BUDGET = 3_000
"""Allocated blocks the end may hold over the larger of the quarter and half samples."""


class Chaos:
    """A dependency with moods: calm, bursts of failures, latency spikes, hang storms."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.mood = "calm"
        self.calls = 0
        self.ended: Counter[str] = Counter()

    def next_mood(self, index: int) -> None:
        self.mood = MOODS[index % len(MOODS)]

    async def __call__(self, n: int) -> str:
        self.calls += 1
        roll = self.rng.random()
        try:
            if self.mood == "burst" and roll < 0.8:
                await asyncio.sleep(0)
                raise ConnectionError("burst")
            if self.mood == "spikes" and roll < 0.2:
                await asyncio.sleep(self.rng.uniform(0.002, 0.008))
            elif self.mood == "hangs" and roll < 0.3:
                await asyncio.sleep(10.0)
            elif roll < 0.03:
                raise ConnectionResetError("flaky")
            elif roll < 0.04:
                raise KeyError(n)
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.ended["cancelled"] += 1
            raise
        except Exception:
            self.ended["raised"] += 1
            raise
        self.ended["returned"] += 1
        return "ok"


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    had_default = current_listener() is not None
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)
    try:
        yield metric_reader
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found: list[Any] = []
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def total(found: list[Any], **where: str) -> int:
    """Sum values (or histogram counts) of the points whose attributes include ``where``."""
    wanted = {key.replace("__", "."): value for key, value in where.items()}
    result = 0
    for point in found:
        attributes = dict(point.attributes)
        if all(attributes.get(k) == v for k, v in wanted.items()):
            result += point.value if hasattr(point, "value") else point.count
    return result


async def soak(calls: int, reader: InMemoryMetricReader, seed: int) -> None:
    rng = random.Random(seed)
    chaos = Chaos(rng)
    manager = ResilienceManager()
    config = ResilienceConfig(
        name=POLICY,
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=8, success_threshold=2, timeout=0.02, half_open_max_calls=2
        ),
        retry_policy=RetryPolicy(
            max_attempts=3,
            initial_delay=0.001,
            max_delay=0.003,
            attempt_timeout=0.01,
            no_retry_on=(ExecutionRejectedError, KeyError),
        ),
        bulkhead_config=BulkheadConfig(max_concurrent=16, max_waiting=32, timeout=0.005),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE,
            default_value="fallback",
            handle_exceptions=(ConnectionError, BulkheadFullError),
        ),
        timeout=0.022,
    )
    window = asyncio.Semaphore(WINDOW)
    seen: Counter[str] = Counter()
    tasks: set[asyncio.Task[str]] = set()

    def finished(task: asyncio.Task[str]) -> None:
        window.release()
        tasks.discard(task)
        error = task.exception()
        if error is None:
            seen[task.result()] += 1
        elif isinstance(error, (CircuitOpenError, BulkheadFullError)):
            seen["rejected"] += 1
        elif isinstance(error, OperationTimeoutError):
            seen["timeout"] += 1
        else:
            seen[f"error:{type(error).__name__}"] += 1

    blocks_sampled = 0  # the larger of the samples at a quarter and at half of the run
    started = time.monotonic()
    for n in range(calls):
        if n % 500 == 0:
            chaos.next_mood(n // 500)
        if n in (calls // 4, calls // 2):
            while tasks:
                await asyncio.wait(set(tasks))
            reader.collect()
            gc.collect()
            blocks_sampled = max(blocks_sampled, sys.getallocatedblocks())
        await window.acquire()
        task = asyncio.create_task(manager.execute_with_resilience(chaos, config, n))
        tasks.add(task)
        task.add_done_callback(finished)
    while tasks:
        await asyncio.wait(set(tasks))
    elapsed = time.monotonic() - started
    # Measured as the samples were (one collection, then a full gc), before the checks below hold
    # collected metric data in local variables.
    reader.collect()
    gc.collect()
    grown = sys.getallocatedblocks() - blocks_sampled

    # Every call accounted for, by the caller and by the statistics.
    stats = manager.get_resilience_statistics()
    executions = stats["executions"]
    policy = stats["policies"][POLICY]
    assert sum(seen.values()) == calls == executions["total"]
    assert (
        executions["total"]
        == executions["successful"] + executions["fallback"] + executions["failed"] + executions["cancelled"]
    )
    assert executions["successful"] == seen["ok"]
    assert executions["fallback"] == seen["fallback"]
    assert executions["rejected"] == seen["rejected"]
    assert executions["timeouts"] == seen["timeout"]
    assert executions["failed"] - executions["rejected"] - executions["timeouts"] == seen["error:KeyError"]
    assert executions["cancelled"] == 0
    assert set(seen) <= {"ok", "fallback", "rejected", "timeout", "error:KeyError"}, seen
    # The soak went through every regime.
    assert min(seen["ok"], seen["fallback"], seen["rejected"], seen["timeout"], seen["error:KeyError"]) > 0, (
        seen
    )
    breaker = stats["circuit_breakers"][POLICY]
    bulkhead = stats["bulkheads"][POLICY]
    assert breaker["times_opened"] > 0
    assert breaker["half_open_in_flight"] == 0
    assert bulkhead["active"] == bulkhead["waiting"] == 0
    assert chaos.calls == chaos.ended["returned"] + chaos.ended["raised"] + chaos.ended["cancelled"]
    assert asyncio.all_tasks() == {asyncio.current_task()}

    # Telemetry totals equal the statistics.
    execs = points(reader, sc.EXECUTIONS)
    mine = {"resilience__policy": POLICY, "resilience__pattern": "pipeline"}
    assert total(execs, **mine, resilience__outcome="success") == policy["successful_first_attempt"]
    assert total(execs, **mine, resilience__outcome="recovered") == policy["successful_after_failure"]
    assert total(execs, **mine, resilience__outcome="fallback") == policy["fallback"]
    assert total(execs, **mine, resilience__outcome="rejected") == policy["rejected"]
    assert total(execs, **mine, resilience__outcome="timeout") == policy["timeouts"]
    assert (
        total(execs, **mine, resilience__outcome="failure")
        == policy["failed"] - policy["rejected"] - policy["timeouts"]
    )
    assert total(execs, **mine) == calls
    assert total(points(reader, sc.EXECUTION_DURATION), **mine) == calls
    cb_calls = points(reader, sc.CB_CALLS)
    for result, key in zip(
        sc.CB_CALL_RESULTS,
        ("total_successes", "total_failures", "total_rejected", "total_ignored", "total_cancelled"),
        strict=True,
    ):
        assert (
            total(cb_calls, resilience__name=POLICY, resilience__circuit_breaker__call_result=result)
            == breaker[key]
        ), result
    rejections = points(reader, sc.REJECTIONS)
    assert (
        total(rejections, resilience__policy=POLICY, resilience__pattern="circuit_breaker")
        == breaker["total_rejected"]
    )
    assert (
        total(rejections, resilience__policy=POLICY, resilience__rejection__reason="bulkhead_full")
        == bulkhead["rejected"]
    )
    assert (
        total(rejections, resilience__policy=POLICY, resilience__rejection__reason="queue_timeout")
        == bulkhead["timed_out"]
    )

    # Memory is flat between a quarter of the run and its end.
    assert grown <= BLOCK_BUDGET, f"{grown} allocated blocks more after {calls - calls // 2} more calls"
    return elapsed


@pytest.mark.timeout(60)
async def test_chaos_soak_accounts_for_every_call(reader: InMemoryMetricReader) -> None:
    """20 000 calls against injected errors, spikes, hangs and bursts: all accounted for, telemetry agrees."""
    elapsed = await soak(20_000, reader, seed=11)
    assert elapsed < 20.0


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_long_chaos_soak_accounts_for_every_call(reader: InMemoryMetricReader) -> None:
    """120 000 calls (RUN_SLOW=1 only): the same accounting, telemetry and memory checks."""
    await soak(120_000, reader, seed=12)


async def test_configs_built_per_call_are_all_accounted_for(reader: InMemoryMetricReader) -> None:
    """3 000 calls, each with a new but equal config: one policy, every call counted, telemetry agrees."""
    manager = ResilienceManager()
    calls = 3_000  # more than the manager caches (1024 pipelines)

    async def flaky(n: int) -> str:
        if n % 10 == 0:
            raise ConnectionError(n)
        return "ok"

    results: Counter[str] = Counter()
    for n in range(calls):
        config = ResilienceConfig(
            name="per-call",
            circuit_breaker=CircuitBreakerConfig(failure_threshold=50),
            retry_policy=RetryPolicy(max_attempts=1),
            fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
        )
        results[await manager.execute_with_resilience(flaky, config, n)] += 1
    executions = manager.get_resilience_statistics()["executions"]
    assert executions["total"] == calls
    assert executions["successful"] == results["ok"] == calls - calls // 10
    assert executions["fallback"] == results["fallback"] == calls // 10
    breaker = manager.get_circuit_breaker("per-call").get_stats()
    assert breaker["total_requests"] == calls
    execs = points(reader, sc.EXECUTIONS)
    assert total(execs, resilience__policy="per-call", resilience__pattern="pipeline") == calls
