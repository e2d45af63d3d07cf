"""Benchmarks of otel_resilience against its Python peers, side by side, in one run.

Usage::

    python benchmarks/run.py                  # every scenario, async and sync (a few minutes)
    python benchmarks/run.py --quick          # smoke mode: a few seconds, numbers not meaningful
    python benchmarks/run.py --only breaker_closed,full --markdown out.md --json out.json
    python benchmarks/run.py --without tenacity,stamina      # treat peers as not installed

Peers come from the ``bench`` extra (``pip install -e '.[bench]'``). A peer that is missing is
skipped with a note; our own rows always run. See ``docs/benchmarks.md`` for the method.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
try:
    import otel_resilience  # noqa: F401 - installed (editable) or not
except ImportError:
    sys.path.insert(1, str(_HERE.parent))

from _harness import Row, Settings, run_group  # noqa: E402
from _memory import (  # noqa: E402
    MemRow,
    breaker_memory,
    bulkhead_tasks,
    bulkhead_threads,
    many_breakers,
    rejected_call_memory,
)
from _peers import Peers, load_peers  # noqa: E402
from _policies import collection, memory_per_policy  # noqa: E402
from _scenarios import ADMISSION_LABEL, SCENARIOS, build_groups, default_telemetry  # noqa: E402

FULL = {
    "repeats": 61,
    "target_ns": 2_500_000,
    "mem": 2_000,
    "breakers": 10_000,
    "tasks": 100_000,
    "sync_calls": 40_000,
    "policy_mem": 10_000,
    "all_live_up_to": 10_000,
}
FULL_POLICY_NAMES = [1_000, 10_000, 100_000]
QUICK_POLICY_NAMES = [200]
QUICK = {
    "repeats": 3,
    "target_ns": 150_000,
    "mem": 200,
    "breakers": 500,
    "tasks": 1_000,
    "sync_calls": 400,
    "policy_mem": 200,
    "all_live_up_to": 0,
}


# ------------------------------------------------------------------------------------ formatting


def _us(ns: float) -> str:
    if math.isnan(ns):
        return "n/a"
    us = ns / 1000
    return f"{us:.2f}" if abs(us) < 100 else f"{us:.0f}"


def _ratio(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _cell(row: Row | None) -> tuple[str, str, str]:
    if row is None:
        return "", "", ""
    if row.error:
        return f"failed: {row.error}", "", ""
    overhead = f"{_us(row.overhead_ns)} ({_us(row.overhead_q1)} to {_us(row.overhead_q3)})"
    return overhead, f"{row.ratio_to_baseline:.1f}x", "-" if row.primary else _ratio(row.vs_ours)


def scenario_table(title: str, rows: list[Row], notes: Iterable[str]) -> str:
    """One markdown table per scenario: async and sync side by side."""
    labels: list[str] = []
    by_key: dict[tuple[str, str], Row] = {}
    for row in rows:
        if row.label not in labels:
            labels.append(row.label)
        by_key[row.label, row.driver] = row
    bases = []
    for driver in ("async", "sync"):
        values = [r.baseline_ns for r in rows if r.driver == driver and not math.isnan(r.baseline_ns)]
        if values:
            bases.append(f"{driver} {_us(sorted(values)[len(values) // 2])} µs")
    lines = [
        f"### {title}",
        "",
        f"Baseline per call: {', '.join(bases)}. Overhead = per call minus baseline, median (IQR), µs.",
        "",
        (
            "| contender | async overhead µs | async / base | ours / this "
            "| sync overhead µs | sync / base | ours / this |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        a = _cell(by_key.get((label, "async")))
        s = _cell(by_key.get((label, "sync")))
        name = f"**{label}**" if any(r.primary for r in rows if r.label == label) else label
        lines.append(f"| {name} | {a[0]} | {a[1]} | {a[2]} | {s[0]} | {s[1]} | {s[2]} |")
    row_notes = {f"{r.label}: {r.note}" for r in rows if r.note}
    lines.extend(f"- {note}" for note in [*notes, *sorted(row_notes)])
    lines.append("")
    return "\n".join(lines)


def memory_table(rows: list[MemRow]) -> str:
    """The memory and scale figures as one markdown table (plus allocation sites)."""
    lines = ["| measure | subject | value | note |", "|---|---|---:|---|"]
    for row in rows:
        value = f"{row.value:,.0f}" if abs(row.value) >= 100 else f"{row.value:.2f}"
        lines.append(f"| {row.what} | {row.subject} | {value} {row.unit} | {row.note} |")
    details = [r for r in rows if r.detail]
    for row in details:
        lines.extend(["", f"Top allocation sites, {row.what} / {row.subject} (bytes per object):", "", "```"])
        lines.extend(row.detail)
        lines.append("```")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- targets


def _find(rows: list[Row], scenario: str, driver: str, lib: str) -> Row | None:
    for row in rows:
        if row.scenario == scenario and row.driver == driver and row.lib == lib and not row.error:
            return row
    return None


def evaluate_targets(rows: list[Row], mem: list[MemRow]) -> list[tuple[str, str, str, str]]:
    """Return (target, driver, measured, verdict) for every target of the issue."""
    out: list[tuple[str, str, str, str]] = []

    def peer_ratio(name: str, scenario: str, lib: str, limit: float) -> None:
        for driver in ("async", "sync"):
            row = _find(rows, scenario, driver, lib)
            if row is None or row.vs_ours is None:
                out.append((name, driver, "peer not measured", "n/a"))
                continue
            verdict = "met" if row.vs_ours <= limit else "NOT met"
            measured = f"ours/{lib} = {row.vs_ours:.3f} (limit {limit:g})"
            out.append((name, driver, measured, verdict))

    peer_ratio(
        "Full pipeline, success, no SDK: <= 1/4 of pyresilience all-in-one", "full", "pyresilience", 0.25
    )
    peer_ratio("Full pipeline, success, no SDK: <= 1/10 of tenacity retry alone", "full", "tenacity", 0.10)
    peer_ratio(
        "Full pipeline + SDK metrics: <= pyresilience all-in-one without telemetry",
        "full_sdk",
        "pyresilience",
        1.0,
    )
    peer_ratio("Breaker closed: no slower than circuitbreaker 2.1.3", "breaker_closed", "circuitbreaker", 1.0)
    peer_ratio("Breaker open: no slower than circuitbreaker 2.1.3", "breaker_open", "circuitbreaker", 1.0)
    peer_ratio(
        "Retry, fail twice, zero delay: <= 1/2 of pyresilience", "retry_fail_twice", "pyresilience", 0.5
    )
    peer_ratio("Retry, fail twice, zero delay: <= 1/10 of tenacity", "retry_fail_twice", "tenacity", 0.10)
    for driver in ("async", "sync"):
        admission = next(
            (
                r
                for r in rows
                if r.scenario == "rate_limiter" and r.driver == driver and r.label.endswith(ADMISSION_LABEL)
            ),
            None,
        )
        decorated = next(
            (r for r in rows if r.scenario == "rate_limiter" and r.driver == driver and r.primary), None
        )
        if admission is not None and not admission.error:
            verdict = "met" if admission.overhead_ns <= 1000.0 else "NOT met"
            measured = f"{admission.overhead_ns / 1000:.2f} µs over a bare call (try_acquire)"
            out.append(("Rate limiter admission, token bucket: <= 1 µs", driver, measured, verdict))
        if decorated is not None and not decorated.error:
            measured = f"{decorated.overhead_ns / 1000:.2f} µs over a bare call (protect: the pipeline too)"
            out.append(("Rate limiter through its pipeline (no limit; issue 14)", driver, measured, "-"))
    peer_ratio("Rate limiter: beside aiolimiter (ratio, no limit)", "rate_limiter", "aiolimiter", math.inf)
    peer_ratio("Rate limiter: beside limits (ratio, no limit)", "rate_limiter", "limits", math.inf)
    for row in mem:
        if row.what.startswith("bytes per breaker") and row.subject.startswith("otel_resilience"):
            verdict = "met" if row.value <= 1024 else "NOT met"
            out.append(("Memory: <= 1 KiB per breaker (default config)", "-", f"{row.value:.0f} B", verdict))
        if row.what.startswith("retained bytes per rejected call") and row.subject.startswith(
            "otel_resilience"
        ):
            verdict = "met" if row.value < 1.0 else "NOT met"
            out.append(
                (
                    f"Memory: 0 B retained per rejected call ({row.subject})",
                    "-",
                    f"{row.value:.3f} B",
                    verdict,
                )
            )
    return out


def targets_table(targets: list[tuple[str, str, str, str]]) -> str:
    """The targets as a markdown table."""
    lines = ["| target | driver | measured | verdict |", "|---|---|---|---|"]
    lines.extend(f"| {t} | {d} | {m} | {v} |" for t, d, m, v in targets)
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- machine


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(peers: Peers) -> dict[str, str]:
    """What ran the benchmark."""
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "otel_resilience": _version("otel-resilience"),
        "opentelemetry-api": _version("opentelemetry-api"),
        "opentelemetry-sdk": _version("opentelemetry-sdk"),
        "telemetry listeners at start": default_telemetry(),
    }
    info.update({dist: peers.versions[dist] for dist in sorted(peers.versions)})
    info.update(dict(sorted(peers.missing.items())))
    return info


# ------------------------------------------------------------------------------------------ main


_GROUPS = ("memory", "scale", "policies")
"""The --only names of the memory and scale measurements (beside the timed SCENARIOS)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: tiny chunks, 3 repeats, small scale"
    )
    parser.add_argument("--repeats", type=int, help="paired repeats per row (default 61; quick 3)")
    parser.add_argument("--target-ms", type=float, help="duration of one timed chunk in ms (default 2.5)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {','.join((*SCENARIOS, *_GROUPS))}"
    )
    parser.add_argument(
        "--without", default="", help="comma-separated peers to treat as missing ('all' for every peer)"
    )
    parser.add_argument("--json", type=Path, help="write every row as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the tables as markdown here")
    args = parser.parse_args(argv)
    unknown = sorted({s.strip() for s in args.only.split(",") if s.strip()} - {*SCENARIOS, *_GROUPS})
    if unknown:  # else the run would measure nothing, and say so only in its last line
        parser.error(f"--only: no scenario named {', '.join(map(repr, unknown))} (see --help)")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.target_ms is not None and not args.target_ms > 0:
        parser.error(f"--target-ms must be > 0, got {args.target_ms:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print markdown tables; return the exit code."""
    args = parse_args(argv)
    preset = QUICK if args.quick else FULL
    settings = Settings(
        repeats=args.repeats or preset["repeats"],
        target_ns=int(args.target_ms * 1e6) if args.target_ms else preset["target_ns"],
    )
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    peers = load_peers({s.strip() for s in args.without.split(",") if s.strip()})
    started = time.perf_counter()
    out: list[str] = ["# otel_resilience benchmark run", ""]
    info = machine_info(peers)
    out.extend(["| | |", "|---|---|"])
    out.extend(f"| {key} | {value} |" for key, value in info.items())
    out.append("")
    mode = "quick (smoke; numbers not meaningful)" if args.quick else "full"
    out.append(
        f"Mode: {mode}; {settings.repeats} paired repeats; chunks of ~{settings.target_ns / 1e6:g} ms."
    )
    out.append("")
    for dist, why in sorted(peers.missing.items()):
        out.append(f"> NOTE: peer `{dist}` skipped: {why}.")
    out.append("")
    print("\n".join(out), flush=True)

    # Memory and scale first: a timed group with the SDK (full_sdk) sets global providers for
    # good, and every pattern made after that would also make its metric series in the SDK.
    mem: list[MemRow] = []
    if not only or "memory" in only:
        mem.extend(breaker_memory(peers, preset["mem"]))
        mem.extend(rejected_call_memory(peers, preset["mem"] * 5))
    if not only or "scale" in only:
        mem.extend(many_breakers(preset["breakers"]))
        mem.extend(bulkhead_tasks(preset["tasks"]))
        mem.extend(bulkhead_threads(preset["sync_calls"]))
    if not only or "policies" in only:
        mem.extend(memory_per_policy(preset["policy_mem"]))
        names = QUICK_POLICY_NAMES if args.quick else FULL_POLICY_NAMES
        mem.extend(collection(names, all_live_up_to=preset["all_live_up_to"]))

    rows: list[Row] = []
    groups = build_groups(peers, only & set(SCENARIOS) if only else None)
    by_scenario: dict[str, list[Any]] = {}
    for group in groups:
        by_scenario.setdefault(group.scenario, []).append(group)
    sections: list[str] = []
    for groups_of in by_scenario.values():
        scenario_rows: list[Row] = []
        notes: list[str] = []
        for group in groups_of:
            gc.collect()
            scenario_rows.extend(run_group(group, settings))
            notes.extend(f"{group.driver}: {n}" for n in group.notes)
        rows.extend(scenario_rows)
        text = scenario_table(groups_of[0].title, scenario_rows, notes)
        sections.append(text)
        print(text, flush=True)

    if mem:
        text = "### Memory and scale\n\n" + memory_table(mem)
        sections.append(text)
        print(text, flush=True)

    targets = evaluate_targets(rows, mem)
    text = "### Targets\n\n" + targets_table(targets)
    sections.append(text)
    elapsed = time.perf_counter() - started
    footer = f"Ran {len(rows)} timed rows and {len(mem)} memory/scale rows in {elapsed:.1f} s."
    print(text + "\n" + footer, flush=True)

    if args.markdown:
        args.markdown.write_text("\n".join([*out, *sections, footer, ""]), encoding="utf-8")
    if args.json:
        payload = {
            "machine": info,
            "settings": {"repeats": settings.repeats, "target_ns": settings.target_ns, "quick": args.quick},
            "rows": [r.as_dict() for r in rows],
            "memory": [m.as_dict() for m in mem],
            "targets": [
                dict(zip(("target", "driver", "measured", "verdict"), t, strict=True)) for t in targets
            ],
            "missing_peers": peers.missing,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
