"""Smoke test of the benchmark harness: ``benchmarks/run.py --quick`` runs and reports rows.

It asserts that the harness ran, never how fast anything was (timing lives in the benchmark).
Peers are optional: the run excludes one on purpose, to check that a missing peer is skipped with
a visible note while our own rows still run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {
    "bare",
    "breaker_closed",
    "breaker_open",
    "retry_success",
    "retry_fail_twice",
    "bulkhead",
    "bulkhead_contended",
    "timeout",
    "full",
    "full_layers",
    "full_sdk",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--without",
            "tenacity",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    payload = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    return proc, payload


def test_quick_mode_exits_cleanly(quick_run):
    """The quick run exits with status 0 and prints the targets table."""
    proc, _ = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "### Targets" in proc.stdout


def test_quick_mode_measures_our_rows_for_every_scenario_and_driver(quick_run):
    """Every scenario has at least one of our rows, with a number, for both drivers."""
    _, payload = quick_run
    ours = {(r["scenario"], r["driver"]) for r in payload["rows"] if r["lib"] == "ours" and not r["error"]}
    ours |= {(r["scenario"], r["driver"]) for r in payload["rows"] if r["scenario"] == "bare"}
    expected = {(scenario, driver) for scenario in SCENARIOS for driver in ("async", "sync")}
    assert expected <= ours
    assert all(math.isfinite(r["per_call_ns"]) for r in payload["rows"] if r["lib"] == "ours")


def test_missing_peer_is_skipped_with_a_visible_note(quick_run):
    """A peer excluded with --without has no rows and is named in a note; the run still succeeds."""
    proc, payload = quick_run
    assert "peer `tenacity` skipped" in proc.stdout
    assert "tenacity" in payload["missing_peers"]
    assert not [r for r in payload["rows"] if r["lib"] == "tenacity"]


def test_memory_scale_and_targets_are_reported(quick_run):
    """Memory, scale and target rows are produced (their values are not judged here)."""
    _, payload = quick_run
    measures = {m["what"] for m in payload["memory"]}
    assert "bytes per breaker (default config)" in measures
    assert "retained bytes per rejected call" in measures
    assert any("named breakers" in what for what in measures)
    assert any("tasks through one bulkhead" in what for what in measures)
    assert payload["targets"]


def test_breaker_creation_is_timed_in_turns_with_a_ratio_row_per_peer(quick_run):
    """Each library's creation time has, for every peer, a paired ratio row: ours over the peer's."""
    _, payload = quick_run
    creating = [m for m in payload["memory"] if m["what"] == "create one breaker (default config)"]
    times = {m["subject"]: m["value"] for m in creating if m["unit"] == "us"}
    ratios = {m["subject"]: m["value"] for m in creating if m["unit"] == "x"}
    ours = "otel_resilience CircuitBreaker(name)"
    assert ours in times
    peers = set(times) - {ours}  # none without the bench extra
    assert set(ratios) == {f"time, otel_resilience over {peer}" for peer in peers}
    assert all(math.isfinite(value) and value > 0 for value in (*times.values(), *ratios.values()))


def test_paired_creation_times_every_factory_in_each_round_and_pairs_the_ratios():
    """Every factory is timed once per round, names are fresh, and a ratio is the median of the
    rounds' ratios (the first factory over each other one)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _memory import paired_creation_us  # noqa: PLC0415 - the harness's own module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    made: dict[str, list[str]] = {"a": [], "b": []}
    medians, ratios = paired_creation_us(
        [("a", lambda name: made["a"].append(name)), ("b", lambda name: made["b"].append(name))], 50, runs=3
    )
    assert set(medians) == {"a", "b"}
    assert set(ratios) == {"b"}
    assert all(math.isfinite(value) and value > 0 for value in (*medians.values(), *ratios.values()))
    for names in made.values():
        assert len(names) == 150
        assert len(set(names)) == 150  # a new name for every object
