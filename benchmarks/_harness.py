"""The measuring core: paired repeats of (baseline chunk, contender chunk) in one process.

A *chunk* runs one operation ``n`` times in a tight loop and is timed as a whole with
``time.perf_counter_ns``. Every contender of a :class:`Group` is timed right after a baseline
chunk of the same group, in a rotating order, ``repeats`` times. For each repeat::

    overhead = contender_ns / n_contender - baseline_ns / n_baseline       (ns per call)

and a row reports the median overhead over the repeats with its inter-quartile range. Ratios
between two contenders are taken per repeat (both measured in the same round, next to their own
baselines), then the median of those ratios is reported. The machine is small and noisy, so
medians of paired differences are what stays stable; a single mean is not.

The chunk of a simple operation is compiled from a one-line statement (as ``timeit`` does), so
the measured loop holds exactly ``await stmt`` or ``stmt`` and nothing else.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import statistics
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

SyncChunk = Callable[[int], object]
AsyncChunk = Callable[[int], Awaitable[object]]
Chunk = SyncChunk | AsyncChunk


def async_chunk(stmt: str, namespace: dict[str, Any], *, setup: str = "") -> AsyncChunk:
    """Compile ``async def chunk(n)`` that runs ``stmt`` (which may ``await``) ``n`` times."""
    body = textwrap.indent(textwrap.dedent(stmt).strip("\n"), " " * 8)
    pre = textwrap.indent(textwrap.dedent(setup).strip("\n"), " " * 4) if setup else ""
    src = f"async def _chunk(_n):\n{pre}\n    for _ in _repeat(None, _n):\n{body}\n"
    scope: dict[str, Any] = {"_repeat": itertools.repeat, **namespace}
    exec(compile(src, f"<chunk: {stmt.strip().splitlines()[0][:40]}>", "exec"), scope)
    return scope["_chunk"]  # type: ignore[no-any-return]


def sync_chunk(stmt: str, namespace: dict[str, Any], *, setup: str = "") -> SyncChunk:
    """Compile ``def chunk(n)`` that runs ``stmt`` ``n`` times."""
    body = textwrap.indent(textwrap.dedent(stmt).strip("\n"), " " * 8)
    pre = textwrap.indent(textwrap.dedent(setup).strip("\n"), " " * 4) if setup else ""
    src = f"def _chunk(_n):\n{pre}\n    for _ in _repeat(None, _n):\n{body}\n"
    scope: dict[str, Any] = {"_repeat": itertools.repeat, **namespace}
    exec(compile(src, f"<chunk: {stmt.strip().splitlines()[0][:40]}>", "exec"), scope)
    return scope["_chunk"]  # type: ignore[no-any-return]


@dataclass
class Contender:
    """One way of doing the scenario's operation (ours or a peer's).

    Attributes:
        label: Shown in the table (``"otel_resilience: breaker.protect"``, ``"tenacity 9.2.1"``).
        lib: The library key (``"ours"`` for this project; a peer's distribution name).
        chunk: The chunk function (sync or async, matching the group's driver).
        primary: For ours: the row compared with the peers (one per group).
        before: Called (outside the timing) before each chunk of this contender.
        after: Called (outside the timing) after each chunk of this contender.
        prepare: Called once before anything is timed (may be async), e.g. to trip a breaker.
        note: A short remark shown under the table.
    """

    label: str
    lib: str
    chunk: Chunk
    primary: bool = False
    before: Callable[[], object] | None = None
    after: Callable[[], object] | None = None
    prepare: Callable[[], object] | None = None
    note: str = ""


@dataclass
class Group:
    """One scenario under one driver: a baseline and the contenders measured against it."""

    scenario: str
    title: str
    driver: str  # "async" | "sync"
    baseline: Chunk
    contenders: list[Contender]
    baseline_label: str = "bare call"
    notes: list[str] = field(default_factory=list)
    calls_per_op: int = 1  # logical calls per chunk iteration (documentation only)


@dataclass
class Row:
    """The result for one contender."""

    scenario: str
    driver: str
    label: str
    lib: str
    primary: bool
    per_call_ns: float
    baseline_ns: float
    overhead_ns: float
    overhead_q1: float
    overhead_q3: float
    ratio_to_baseline: float
    vs_ours: float | None = None  # median over repeats of ours_overhead / this_overhead
    n: int = 0
    repeats: int = 0
    note: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Return the row as plain data (for ``--json``)."""
        return dict(self.__dict__)


@dataclass
class Settings:
    """How long chunks are, and how many paired repeats are taken."""

    repeats: int = 61
    target_ns: int = 2_500_000
    max_n: int = 2_000_000
    min_n: int = 4


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    """Return (q1, median, q3) of ``values``."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    if len(values) < 4:
        ordered = sorted(values)
        return ordered[0], statistics.median(ordered), ordered[-1]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


class _Timer:
    """Times chunks of one driver; the async one must be used inside a running loop."""

    def __init__(self, driver: str) -> None:
        self.driver = driver

    async def time(self, chunk: Chunk, n: int) -> int:
        if self.driver == "async":
            t0 = time.perf_counter_ns()
            await chunk(n)  # type: ignore[misc]
            return time.perf_counter_ns() - t0
        t0 = time.perf_counter_ns()
        chunk(n)
        return time.perf_counter_ns() - t0

    async def calibrate(self, chunk: Chunk, settings: Settings) -> int:
        """Return the smallest power-of-two ``n`` whose chunk lasts at least the target."""
        n = settings.min_n
        while n < settings.max_n:
            elapsed = await self.time(chunk, n)
            if elapsed >= settings.target_ns:
                break
            # Jump close to the target once the time is measurable, then round up to a power of 2.
            if elapsed > 50_000:
                wanted = settings.target_ns * n // max(elapsed, 1)
                n = max(n * 2, 1 << (int(wanted) - 1).bit_length())
            else:
                n *= 4
        return min(n, settings.max_n)


async def measure_group(group: Group, settings: Settings) -> list[Row]:
    """Measure every contender of ``group`` against its baseline; return one row each."""
    timer = _Timer(group.driver)
    live: list[Contender] = []
    rows: list[Row] = []
    for contender in group.contenders:
        try:
            if contender.prepare is not None:
                prepared = contender.prepare()
                if inspect.isawaitable(prepared):
                    await prepared
            if contender.before is not None:
                contender.before()
            try:
                await timer.time(contender.chunk, settings.min_n)
            finally:
                if contender.after is not None:
                    contender.after()
        except Exception as error:
            if contender.lib == "ours":
                raise
            rows.append(_failed_row(group, contender, error))
            continue
        live.append(contender)
    await timer.time(group.baseline, settings.min_n)
    n_base = await timer.calibrate(group.baseline, settings)
    sizes: dict[str, int] = {}
    for contender in live:
        if contender.before is not None:
            contender.before()
        try:
            sizes[contender.label] = await timer.calibrate(contender.chunk, settings)
        finally:
            if contender.after is not None:
                contender.after()
    base: dict[str, list[float]] = {c.label: [] for c in live}
    per_call: dict[str, list[float]] = {c.label: [] for c in live}
    for r in range(settings.repeats):
        shift = r % max(len(live), 1)
        for contender in live[shift:] + live[:shift]:
            b = await timer.time(group.baseline, n_base) / n_base
            n = sizes[contender.label]
            if contender.before is not None:
                contender.before()
            try:
                c = await timer.time(contender.chunk, n) / n
            finally:
                if contender.after is not None:
                    contender.after()
            base[contender.label].append(b)
            per_call[contender.label].append(c)
    primary = next((c for c in live if c.primary), None)
    for contender in live:
        label = contender.label
        overheads = [c - b for c, b in zip(per_call[label], base[label], strict=True)]
        q1, med, q3 = _quantiles(overheads)
        ratios = [c / b for c, b in zip(per_call[label], base[label], strict=True) if b > 0]
        vs_ours = None
        if primary is not None and contender is not primary:
            ours = [c - b for c, b in zip(per_call[primary.label], base[primary.label], strict=True)]
            paired = [o / t for o, t in zip(ours, overheads, strict=True) if t > 0]
            vs_ours = statistics.median(paired) if paired else None
        rows.append(
            Row(
                scenario=group.scenario,
                driver=group.driver,
                label=label,
                lib=contender.lib,
                primary=contender.primary,
                per_call_ns=statistics.median(per_call[label]),
                baseline_ns=statistics.median(base[label]),
                overhead_ns=med,
                overhead_q1=q1,
                overhead_q3=q3,
                ratio_to_baseline=statistics.median(ratios) if ratios else float("nan"),
                vs_ours=vs_ours,
                n=sizes[label],
                repeats=settings.repeats,
                note=contender.note,
            )
        )
    order = {c.label: i for i, c in enumerate(group.contenders)}
    rows.sort(key=lambda row: order.get(row.label, 0))
    return rows


def _failed_row(group: Group, contender: Contender, error: Exception) -> Row:
    nan = float("nan")
    return Row(
        scenario=group.scenario,
        driver=group.driver,
        label=contender.label,
        lib=contender.lib,
        primary=False,
        per_call_ns=nan,
        baseline_ns=nan,
        overhead_ns=nan,
        overhead_q1=nan,
        overhead_q3=nan,
        ratio_to_baseline=nan,
        note=contender.note,
        error=f"{type(error).__name__}: {error}"[:160],
    )


def run_group(group: Group, settings: Settings) -> list[Row]:
    """Measure ``group``: async groups in a fresh event loop, sync ones with no loop at all.

    A sync group's coroutine never suspends (its chunks are plain functions), so it is driven to
    completion by one ``send(None)``: the sync chunks run with no event loop in the thread,
    exactly as in a threaded application.
    """
    if group.driver == "async":
        return asyncio.run(measure_group(group, settings))
    coro = measure_group(group, settings)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    msg = f"sync group {group.scenario!r} suspended: a sync chunk awaited something"
    raise RuntimeError(msg)
