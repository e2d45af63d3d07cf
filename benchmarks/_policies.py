"""Many policy names through one manager: memory per policy, statistics and metric collection.

* memory per policy: ``count`` policies are created (the cap raised so that all stay live) and
  kept; the traced memory that grew, divided by ``count``. Everything a policy owns counts: its
  pipeline, breaker and bulkhead, their registry entries, the manager's bookkeeping.
* collection: a real SDK ``MeterProvider`` with an ``InMemoryMetricReader``; ``n`` distinct
  policy names are each called once through one manager, then ``reader.collect()`` is timed
  (median of 3). With the default cap (``DEFAULT_MAX_POLICIES``) idle policies are evicted and
  collection reads the live ones only; with the cap raised to ``n`` every policy stays live,
  which shows the cost per live policy.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator

from _memory import MemRow
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import otel_resilience as orr
from otel_resilience.manager import DEFAULT_MAX_POLICIES
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument


def _ok() -> int:
    return 1


def _plain(name: str) -> orr.ResilienceConfig:
    return orr.ResilienceConfig(name=name)


def _guarded(name: str) -> orr.ResilienceConfig:
    return orr.ResilienceConfig(
        name=name, circuit_breaker=orr.CircuitBreakerConfig(), bulkhead_config=orr.BulkheadConfig()
    )


def _full(name: str) -> orr.ResilienceConfig:
    return orr.ResilienceConfig(
        name=name,
        circuit_breaker=orr.CircuitBreakerConfig(),
        retry_policy=orr.RetryPolicy(max_attempts=3),
        fallback_config=orr.FallbackConfig(
            strategy=orr.FallbackStrategy.DEFAULT_VALUE, default_value={"status": "error"}
        ),
        timeout=30.0,
        bulkhead_config=orr.BulkheadConfig(),
    )


KINDS: dict[str, Callable[[str], orr.ResilienceConfig]] = {
    "plain policy (no breaker, no bulkhead)": _plain,
    "policy with breaker and bulkhead": _guarded,
}
MEMORY_KINDS: dict[str, Callable[[str], orr.ResilienceConfig]] = {
    **KINDS,
    "full policy (fallback, timeout, retry, breaker, bulkhead)": _full,
}


def _fill(
    manager: orr.ResilienceManager, prefix: str, count: int, make: Callable[[str], orr.ResilienceConfig]
) -> None:
    for i in range(count):
        manager.execute_with_resilience_sync(_ok, make(f"{prefix}.{i}"))


def memory_per_policy(count: int) -> list[MemRow]:
    """Bytes per live policy, plain and guarded."""
    rows: list[MemRow] = []
    for label, make in MEMORY_KINDS.items():
        configs = [make(f"mem-policy.{i}") for i in range(count)]  # built before measuring
        gc.collect()
        tracemalloc.start(1)
        try:
            start = tracemalloc.get_traced_memory()[0]
            manager = orr.ResilienceManager(max_policies=count)
            for config in configs:
                manager.execute_with_resilience_sync(_ok, config)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        rows.append(MemRow(f"{count} live policies", f"memory per policy: {label}", used / count, "B"))
        del manager, configs
        gc.collect()
    return rows


def collect_ms(reader: InMemoryMetricReader, repeats: int = 3) -> float:
    """Median milliseconds of one ``reader.collect()`` over ``repeats`` collections."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reader.collect()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


@contextlib.contextmanager
def instrumented_reader() -> Iterator[InMemoryMetricReader]:
    """A real SDK reader whose provider our listener is instrumented on; the default listener back after."""
    had_default = current_listener() is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(None, provider, None)
    try:
        yield reader
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()


def collection(sizes: list[int], *, all_live_up_to: int) -> list[MemRow]:
    """Collection time (real SDK reader) and statistics time after ``n`` policy names."""
    rows: list[MemRow] = []
    with instrumented_reader() as reader:
        for n in sizes:
            for label, make in KINDS.items():
                caps = [DEFAULT_MAX_POLICIES] + (
                    [n] if n <= all_live_up_to and n > DEFAULT_MAX_POLICIES else []
                )
                for cap in caps:
                    gc.collect()
                    manager = orr.ResilienceManager(max_policies=cap)
                    _fill(manager, f"scale-{n}-{cap}", n, make)
                    gc.collect()
                    took_ms = collect_ms(reader)
                    t0 = time.perf_counter()
                    stats = manager.get_resilience_statistics()
                    stats_ms = (time.perf_counter() - t0) * 1e3
                    live = stats["limits"]["policies"]
                    assert stats["executions"]["total"] == n, stats["executions"]
                    what = f"{n} policy names, {label}"
                    cap_note = "default cap" if cap == DEFAULT_MAX_POLICIES else "cap raised: all live"
                    rows.append(
                        MemRow(
                            what,
                            f"one collect() ({cap_note})",
                            took_ms,
                            "ms",
                            note=f"{live} live policies",
                        )
                    )
                    rows.append(MemRow(what, f"get_resilience_statistics() ({cap_note})", stats_ms, "ms"))
                    del manager, stats
                    gc.collect()
    return rows
