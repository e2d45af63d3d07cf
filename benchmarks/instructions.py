"""Run one row's operation N times, for an instruction count under callgrind.

Wall clock on a shared 2-core machine moves by 2-5x from run to run; the number of instructions
an operation executes does not. Count the difference of two runs, so that start-up cancels::

    count() { PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/instructions.py "$1" "$2" 2>&1 | awk '/Collected/ {print $4}'; }
    echo $(( ($(count full 3000) - $(count full 1000)) / 2000 ))   # instructions per call

Workloads (``s`` prefix: the sync driver): ``bare``/``sbare`` (the bare call), ``full``/``sfull``
(``@resilient`` on the full configuration of ``_scenarios.our_full_config``, no SDK),
``floor``/``sfloor`` (the hand-written floor, ``_floor.py``); with the OpenTelemetry SDK, a
sampled parent span and a span exporter: ``sdk``/``ssdk`` (ours, traces and metrics) and
``sdk_floor``/``ssdk_floor`` (the floor in a hand-written span + histogram); the same under 1 %
root sampling and no parent: ``root1``/``sroot1`` and ``root1_floor``/``sroot1_floor``; ours
with the duration histograms kept in process (``in_process_histograms=True``): ``sdk_inproc``/
``ssdk_inproc`` and ``root1_inproc``/``sroot1_inproc``.
The breaker rows, no SDK: ``closed``/``sclosed`` (``CircuitBreaker.protect``, closed),
``open``/``sopen`` (open: every call rejected), each with ``_off`` for telemetry off (every
listener removed from the hub), and circuitbreaker 2.1.3's ``cb_closed``/``scb_closed`` and
``cb_open``/``scb_open`` (``failure_threshold=5, recovery_timeout=3600``). A call that raises
(a rejection) is caught by the loop. Creation (issue 14's item 4), sync only: ``screate`` makes
and keeps one ``CircuitBreaker(name)`` at default config per operation, ``spb_create`` one
pybreaker ``CircuitBreaker(name=name)`` (the bench extra), each under a new name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this tree, even where another is installed
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _floor import FloorPolicy, floor, traced
from _scenarios import our_full_config

import otel_resilience as orr
from otel_resilience.engine.events import HUB

BREAKER_KINDS = frozenset(("closed", "closed_off", "open", "open_off", "cb_closed", "cb_open"))
KINDS = frozenset(
    (
        "bare",
        "full",
        "floor",
        "sdk",
        "sdk_inproc",
        "sdk_floor",
        "root1",
        "root1_inproc",
        "root1_floor",
        *BREAKER_KINDS,
    )
)
"""The async workloads; each with an ``s`` prefix is its sync twin."""
CREATION = frozenset(("screate", "spb_create"))
"""The sync-only workloads that create a breaker per operation."""


async def af() -> int:
    return 1


def sf() -> int:
    return 1


def _listeners_off() -> None:
    """Remove every telemetry listener from the hub (the import-time OtelListener included)."""
    for listener in dict.fromkeys((*HUB.event_listeners, *HUB.execution_listeners)):
        HUB.remove_listener(listener)


def _sdk(root_sampling: bool) -> tuple[Any, Any, Any]:
    """Our listeners out; an SDK tracer and meter provider; the sampled parent made current."""
    from opentelemetry import context, trace  # noqa: PLC0415 - the SDK is optional
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

    _listeners_off()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)) if root_sampling else None)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    if not root_sampling:
        parent = tracer_provider.get_tracer("bench").start_span("parent")
        context.attach(trace.set_span_in_context(parent))
    return tracer_provider, meter_provider, exporter


async def af_fail() -> int:
    raise ValueError


def sf_fail() -> int:
    raise ValueError


def _breaker(kind: str, is_async: bool) -> Callable[[], Any]:
    """A closed or open breaker around the workload's function (ours or circuitbreaker's)."""
    opened = kind.startswith(("open", "cb_open"))
    fn: Callable[[], Any] = (af_fail if is_async else sf_fail) if opened else (af if is_async else sf)
    if kind.startswith("cb_"):
        try:
            import circuitbreaker  # noqa: PLC0415 - a peer, in the bench extra
        except ImportError as error:
            msg = f"workload {kind!r} needs circuitbreaker: pip install -e '.[bench]'"
            raise SystemExit(msg) from error

        operation: Callable[[], Any] = circuitbreaker.CircuitBreaker(
            failure_threshold=5, recovery_timeout=3600
        )(fn)
    else:
        if kind.endswith("_off"):
            _listeners_off()
        config = orr.CircuitBreakerConfig(failure_threshold=5, timeout=3600)
        operation = orr.CircuitBreaker("instructions", config).protect(fn)
    for _ in range(10 if opened else 0):  # ten failures open either breaker
        with contextlib.suppress(Exception):
            asyncio.run(operation()) if is_async else operation()
    return operation


def _creation(workload: str) -> Callable[[], Any]:
    """Make (and keep) one breaker per call, ours or pybreaker's, each under a new name."""
    keep: list[object] = []
    names = (f"create.{i}" for i in itertools.count())
    if workload == "screate":
        return lambda: keep.append(orr.CircuitBreaker(next(names)))
    import pybreaker  # noqa: PLC0415 - the bench extra, for this row only

    return lambda: keep.append(pybreaker.CircuitBreaker(name=next(names)))


def build(workload: str) -> tuple[Callable[[], Any], bool, Any]:
    """Return the operation, whether it is async, and the span exporter to clear (or ``None``)."""
    is_async = workload in KINDS
    kind = workload if is_async else workload[1:]
    if kind not in KINDS:
        raise SystemExit(f"unknown workload {workload!r}; see the module docstring")
    fn: Callable[[], Any] = af if is_async else sf
    hand = floor(fn, FloorPolicy(), is_async=is_async)
    if kind == "bare":
        return fn, is_async, None
    if kind == "full":
        return orr.resilient(our_full_config("instructions"))(fn), is_async, None
    if kind == "floor":
        return hand, is_async, None
    if kind in BREAKER_KINDS:
        return _breaker(kind, is_async), is_async, None
    from otel_resilience.telemetry import OtelListener  # noqa: PLC0415

    tracer_provider, meter_provider, exporter = _sdk(root_sampling=kind.startswith("root1"))
    if not kind.endswith("floor"):
        in_process = kind.endswith("_inproc")  # the duration histograms kept in process
        HUB.add_listener(
            OtelListener(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                in_process_histograms=in_process,
            )
        )
        return orr.resilient(our_full_config("instructions"))(fn), is_async, exporter
    histogram = meter_provider.get_meter("bench.hand").create_histogram("bench.hand.duration", unit="s")
    tracer = tracer_provider.get_tracer("bench.hand")
    return (
        traced(hand, tracer, histogram, name="instructions", is_async=is_async),
        is_async,
        exporter,
    )


def main() -> None:
    """``instructions.py WORKLOAD CALLS [--wall]``: run the workload's operation CALLS times.

    With ``--wall``, the calls are timed (``time.perf_counter``) in 7 chunks of CALLS after a
    warm-up of CALLS / 4, and the median microseconds per call is printed: run rows in turns, each
    in its own process, to compare them by wall clock.
    """
    workload, calls = sys.argv[1], int(sys.argv[2])
    wall = "--wall" in sys.argv[3:]
    operation, is_async, exporter = (
        (_creation(workload), False, None) if workload in CREATION else build(workload)
    )

    async def run_async(count: int) -> None:
        for i in range(count):
            try:  # noqa: SIM105 - a with statement would cost two calls per operation
                await operation()
            except Exception:  # the open rows' rejections
                pass
            if exporter is not None and i % 500 == 0:
                exporter.clear()

    def run_sync(count: int) -> None:
        for i in range(count):
            try:  # noqa: SIM105 - a with statement would cost two calls per operation
                operation()
            except Exception:  # the open rows' rejections
                pass
            if exporter is not None and i % 500 == 0:
                exporter.clear()

    def run(count: int) -> float:
        start = time.perf_counter()
        asyncio.run(run_async(count)) if is_async else run_sync(count)
        return time.perf_counter() - start

    if not wall:
        run(calls)
        return
    run(max(1, calls // 4))
    print(f"{workload} {statistics.median(run(calls) for _ in range(7)) / calls * 1e6:.2f} us per call")


if __name__ == "__main__":
    main()
