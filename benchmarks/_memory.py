"""Memory (tracemalloc) and scale measurements.

* bytes per breaker at default config: ``count`` breakers are created and kept; the traced
  memory that grew, minus the list that holds them and the names (made beforehand), divided by
  ``count``. Everything a breaker owns counts, registry entries included.
* retained bytes per rejected call: after a warm-up, ``count`` rejected calls are made and
  dropped; the traced memory still held afterwards (after ``gc.collect()``) divided by ``count``.
* 10 000 named breakers: creation time, memory, and the cost of finding one by name.
* 100 000 tasks through one bulkhead: throughput against the same tasks with no bulkhead and
  with an ``asyncio.Semaphore``, peak memory per queued task, and memory retained afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import linecache
import statistics
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _peers import Peers

import otel_resilience as orr
from otel_resilience.engine.registry import BREAKERS

_PKG = str(Path(orr.__file__).resolve().parent)


@dataclass
class MemRow:
    """One memory or scale figure."""

    what: str
    subject: str
    value: float
    unit: str
    note: str = ""
    detail: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the row as plain data (for ``--json``)."""
        return dict(self.__dict__)


def _top_sites(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, count: int, limit: int = 16
) -> list[str]:
    """The allocation sites (file:line) that grew most, per created object."""
    stats = after.compare_to(before, "lineno")
    lines: list[str] = []
    for stat in stats:
        if stat.size_diff <= 0:
            continue
        frame = stat.traceback[0]
        filename = frame.filename
        if filename.startswith(_PKG):
            filename = "otel_resilience" + filename[len(_PKG) :]
        else:
            filename = Path(filename).name
        code = linecache.getline(frame.filename, frame.lineno).strip()[:70]
        if frame.filename == __file__:
            filename, code = "(the object itself, allocated at the call site)", ""
        where = filename if not code else f"{filename}:{frame.lineno}  {code}"
        lines.append(f"{stat.size_diff / count:7.1f} B  {where}")
        if len(lines) >= limit:
            break
    return lines


def bytes_per_object(factory: Callable[[str], object], count: int) -> tuple[float, list[str]]:
    """Return (bytes per object, top allocation sites) for ``count`` objects made by ``factory``."""
    names = [f"mem.{i}" for i in range(count)]
    keep: list[object] = [None] * count  # allocated before the measurement starts
    gc.collect()
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        start = tracemalloc.get_traced_memory()[0]
        for i, name in enumerate(names):
            keep[i] = factory(name)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - start
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    sites = _top_sites(before, after, count)
    del keep
    gc.collect()
    return used / count, sites


def _create_once(factory: Callable[[str], object], count: int, tag: str) -> float:
    """Time one run: ``count`` objects made and kept, each under a new name; µs per object."""
    names = [f"{tag}.{i}" for i in range(count)]
    keep: list[object] = [None] * count
    gc.collect()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        keep[i] = factory(name)
    elapsed = (time.perf_counter() - t0) / count * 1e6
    del keep
    return elapsed


def paired_creation_us(
    factories: list[tuple[str, Callable[[str], object]]], count: int, runs: int = 7
) -> tuple[dict[str, float], dict[str, float]]:
    """Time every factory in the same rounds, taking turns (the first one's place alternates).

    Returns:
        The median µs per object of each factory, and for each factory after the first the
        median of the rounds' ratios ``first / factory``: load that moves within a round moves
        both sides of a ratio alike.
    """
    times: dict[str, list[float]] = {label: [] for label, _ in factories}
    indexed = list(enumerate(factories))
    for run in range(runs):
        for k, (label, factory) in indexed if run % 2 == 0 else indexed[::-1]:
            times[label].append(_create_once(factory, count, f"create.{run}.{k}"))  # short names: hashed
    first = factories[0][0]
    medians = {label: statistics.median(values) for label, values in times.items()}
    ratios = {
        label: statistics.median(a / b for a, b in zip(times[first], times[label], strict=True))
        for label, _ in factories[1:]
    }
    return medians, ratios


def breaker_memory(peers: Peers, count: int) -> list[MemRow]:
    """Bytes per circuit breaker at default config, and the time to create one, ours and the peers'.

    Creation is timed for every library in the same rounds, taking turns, and each peer's row
    has a ratio row beside it: ours over the peer's, the median of the rounds' ratios.
    """
    rows: list[MemRow] = []
    ours = "otel_resilience CircuitBreaker(name)"
    per, sites = bytes_per_object(orr.CircuitBreaker, count)
    rows.append(MemRow("bytes per breaker (default config)", ours, per, "B", detail=sites))
    factories: list[tuple[str, Callable[[str], object]]] = [(ours, orr.CircuitBreaker)]
    cb = peers.get("circuitbreaker")
    if cb is not None:
        factories.append((peers.label("circuitbreaker"), lambda name: cb.CircuitBreaker(name=name)))
    pb = peers.get("pybreaker")
    if pb is not None:
        factories.append((peers.label("pybreaker"), lambda name: pb.CircuitBreaker(name=name)))
    ab = peers.get("aiobreaker")
    if ab is not None:
        factories.append((peers.label("aiobreaker"), lambda name: ab.CircuitBreaker(name=name)))
    pr = peers.get("pyresilience")
    if pr is not None:
        from pyresilience._circuit_breaker import CircuitBreaker as PrBreaker  # noqa: PLC0415

        factories.append((peers.label("pyresilience"), lambda _name: PrBreaker(pr.CircuitBreakerConfig())))
    for label, factory in factories[1:]:
        per, _ = bytes_per_object(factory, count)
        rows.append(MemRow("bytes per breaker (default config)", label, per, "B"))
    creating = "create one breaker (default config)"
    medians, ratios = paired_creation_us(factories, count)
    for label, _ in factories:
        rows.append(MemRow(creating, label, medians[label], "us"))
        if label in ratios:
            rows.append(
                MemRow(
                    creating,
                    f"time, otel_resilience over {label}",
                    ratios[label],
                    "x",
                    note="median of the rounds' ratios, the libraries taking turns in each round",
                )
            )
    return rows


async def _rejected_async(call: Callable[[], Any], count: int) -> float:
    for _ in range(200):
        with contextlib.suppress(Exception):
            await call()
    gc.collect()
    tracemalloc.start(1)
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            with contextlib.suppress(Exception):
                await call()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    return retained / count


def _rejected_sync(call: Callable[[], Any], count: int) -> float:
    for _ in range(200):
        with contextlib.suppress(Exception):
            call()
    gc.collect()
    tracemalloc.start(1)
    try:
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(count):
            with contextlib.suppress(Exception):
                call()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    return retained / count


async def _af() -> int:
    return 1


def _sf() -> int:
    return 1


def rejected_call_memory(peers: Peers, count: int) -> list[MemRow]:
    """Bytes retained per rejected call (open breaker, full bulkhead), async and sync."""
    rows: list[MemRow] = []
    what = "retained bytes per rejected call"
    ours = orr.CircuitBreaker("mem.rejected")
    ours.force_open()
    rows.append(
        MemRow(
            what,
            "otel_resilience breaker.call (async)",
            asyncio.run(_rejected_async(lambda: ours.call(_af), count)),
            "B",
        )
    )
    rows.append(
        MemRow(
            what, "otel_resilience breaker.call_sync", _rejected_sync(lambda: ours.call_sync(_sf), count), "B"
        )
    )

    async def bulkhead_rows() -> list[MemRow]:
        bh = orr.Bulkhead("mem.full", orr.BulkheadConfig(max_concurrent=1, max_waiting=0))
        release = asyncio.Event()
        holder = asyncio.ensure_future(bh.execute(release.wait))
        await asyncio.sleep(0)
        out = [
            MemRow(
                what,
                "otel_resilience bulkhead.execute, full (async)",
                await _rejected_async(lambda: bh.execute(_af), count),
                "B",
            ),
            MemRow(
                what,
                "otel_resilience bulkhead.execute_sync, full",
                _rejected_sync(lambda: bh.execute_sync(_sf), count),
                "B",
            ),
        ]
        release.set()
        await holder
        return out

    rows.extend(asyncio.run(bulkhead_rows()))
    cb = peers.get("circuitbreaker")
    if cb is not None:
        breaker = cb.CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name="mem.rejected.cb")

        def boom() -> None:
            raise ValueError

        tripping = breaker(boom)
        with contextlib.suppress(ValueError):
            tripping()
        wrapped = breaker(_sf)
        rows.append(
            MemRow(what, f"{peers.label('circuitbreaker')} (sync)", _rejected_sync(wrapped, count), "B")
        )
    return rows


def many_breakers(count: int) -> list[MemRow]:
    """``count`` named breakers: creation time, memory, and lookup by name."""
    rows: list[MemRow] = []
    names = [f"scale.{i}" for i in range(count)]
    gc.collect()
    t0 = time.perf_counter()
    manager = orr.ResilienceManager(max_policies=count)  # all kept: this measures lookups, not eviction
    breakers = [manager.get_circuit_breaker(name, orr.CircuitBreakerConfig()) for name in names]
    created = time.perf_counter() - t0
    rows.append(
        MemRow(f"{count} named breakers", "create one (through the manager)", created / count * 1e6, "us")
    )
    probes = names[:: max(1, count // 1000)]
    t0 = time.perf_counter()
    for _ in range(10):
        for name in probes:
            manager.get_circuit_breaker(name)
    per = (time.perf_counter() - t0) / (10 * len(probes))
    rows.append(
        MemRow(f"{count} named breakers", "lookup: manager.get_circuit_breaker(name)", per * 1e6, "us")
    )
    few = probes[:50]
    t0 = time.perf_counter()
    for name in few:
        BREAKERS.get(name)
    per = (time.perf_counter() - t0) / len(few)
    live = len(BREAKERS)
    rows.append(
        MemRow(
            f"{count} named breakers",
            "lookup: engine.registry.BREAKERS.get(name)",
            per * 1e6,
            "us",
            note=f"weak name index, {live} live breakers",
        )
    )
    del breakers, manager
    gc.collect()
    per_b, sites = bytes_per_object(orr.CircuitBreaker, count)
    rows.append(
        MemRow(f"{count} named breakers", "memory per breaker (default config)", per_b, "B", detail=sites)
    )
    rows.append(MemRow(f"{count} named breakers", "memory, all of them", per_b * count / 2**20, "MiB"))
    return rows


async def _drive_tasks(count: int, call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(call()) for _ in range(count)]
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


async def _settle() -> None:
    """Let the loop run the done-callbacks that still reference finished tasks, then collect."""
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()


async def _work() -> None:
    await asyncio.sleep(0)


def bulkhead_tasks(count: int) -> list[MemRow]:
    """``count`` tasks through one bulkhead (10 slots): throughput and memory."""
    rows: list[MemRow] = []
    what = f"{count} tasks through one bulkhead (10 slots)"

    def make() -> orr.Bulkhead:
        return orr.Bulkhead(
            f"scale.bulkhead.{time.perf_counter_ns()}",
            orr.BulkheadConfig(max_concurrent=10, max_waiting=count),
        )

    async def timings() -> dict[str, float]:
        bh = make()
        sem = asyncio.Semaphore(10)

        async def with_sem() -> None:
            async with sem:
                await _work()

        contenders = (("none", _work), ("ours", lambda: bh.execute(_work)), ("semaphore", with_sem))
        best: dict[str, float] = {}
        for paused in (False, True):
            for _ in range(3):
                for key, call in contenders:
                    gc.collect()  # each run from a collected heap: none pays for what an earlier one left
                    if paused:  # and no collection inside it
                        gc.disable()
                    try:
                        elapsed = await _drive_tasks(count, call)
                    finally:
                        if paused:  # the collector as it was: on, the harness never turns it off
                            gc.enable()
                    name = f"{key} paused" if paused else key
                    best[name] = min(best.get(name, elapsed), elapsed)
        stats = bh.get_stats()
        if stats["active"] or stats["waiting"] or stats["completed"] != 6 * count:
            msg = f"bulkhead leaked or lost calls: {stats}"
            raise RuntimeError(msg)
        best["peak_waiting"] = stats["peak_waiting"]
        return best

    best = asyncio.run(timings())
    rows.append(
        MemRow(
            what,
            "time, otel_resilience over asyncio.Semaphore(10)",
            best["ours"] / best["semaphore"],
            "x",
            note="best of 3, each run from a collected heap, the collector on",
        )
    )
    rows.append(
        MemRow(
            what,
            "time, otel_resilience over asyncio.Semaphore(10), collector paused",
            best["ours paused"] / best["semaphore paused"],
            "x",
            note="the same with gc.disable() during each run: where the collections fall moves the "
            "row above by up to a fifth",
        )
    )
    rows.append(MemRow(what, "throughput, no bulkhead", count / best["none"], "tasks/s"))
    rows.append(
        MemRow(
            what,
            "throughput, otel_resilience Bulkhead",
            count / best["ours"],
            "tasks/s",
            note=f"peak queue {int(best['peak_waiting'])}",
        )
    )
    rows.append(MemRow(what, "throughput, asyncio.Semaphore(10)", count / best["semaphore"], "tasks/s"))
    rows.append(
        MemRow(what, "overhead per task vs no bulkhead", (best["ours"] - best["none"]) / count * 1e6, "us")
    )

    async def memory() -> tuple[float, float]:
        bh = make()
        await _drive_tasks(min(count, 1000), lambda: bh.execute(_work))  # warm-up
        await _settle()
        tracemalloc.start(1)
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            await _drive_tasks(count, lambda: bh.execute(_work))
            peak = tracemalloc.get_traced_memory()[1] - start
            await _settle()
            retained = tracemalloc.get_traced_memory()[0] - start
        finally:
            tracemalloc.stop()
        return peak, retained

    async def memory_baseline() -> float:
        await _drive_tasks(min(count, 1000), _work)
        await _settle()
        tracemalloc.start(1)
        try:
            start = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            await _drive_tasks(count, _work)
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
        return peak

    peak, retained = asyncio.run(memory())
    base_peak = asyncio.run(memory_baseline())
    rows.append(
        MemRow(
            what,
            "peak memory per task (all queued at once)",
            peak / count,
            "B",
            note=f"no bulkhead: {base_peak / count:.0f} B",
        )
    )
    rows.append(MemRow(what, "memory retained afterwards, per task", retained / count, "B"))
    return rows


def bulkhead_threads(count: int, threads: int = 4) -> list[MemRow]:
    """``count`` sync calls from ``threads`` threads through one bulkhead (2 slots)."""
    what = f"{count} sync calls, {threads} threads, one bulkhead (2 slots)"
    bh = orr.Bulkhead("scale.bulkhead.sync", orr.BulkheadConfig(max_concurrent=2, max_waiting=threads))

    def run(call: Callable[[], Any]) -> float:
        per = count // threads
        barrier = threading.Barrier(threads + 1)

        def worker() -> None:
            barrier.wait()
            for _ in range(per):
                call()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        barrier.wait()
        t0 = time.perf_counter()
        for thread in pool:
            thread.join()
        return time.perf_counter() - t0

    def work() -> None:
        time.sleep(0)

    base = min(run(work) for _ in range(3))
    ours = min(run(lambda: bh.execute_sync(work)) for _ in range(3))
    gc.collect()
    tracemalloc.start(1)
    try:
        start = tracemalloc.get_traced_memory()[0]
        run(lambda: bh.execute_sync(work))
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    return [
        MemRow(what, "throughput, no bulkhead", count / base, "calls/s"),
        MemRow(what, "throughput, otel_resilience Bulkhead", count / ours, "calls/s"),
        MemRow(what, "memory retained afterwards, per call", retained / count, "B"),
    ]
