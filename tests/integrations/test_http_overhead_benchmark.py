"""Smoke test of ``benchmarks/http_overhead.py``: it runs against its own local server and reports its rows.

It asserts that the benchmark ran and that its figures are consistent with one another, never how
fast anything was (timing lives in the benchmark).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = {"layer", "sync", "async", "spin sync", "spin async"}
CONTROLS = {"side layer", "side sync"}
FIELDS = {"bare_us", "resilient_us", "overhead_us", "overhead_pct", "cpu_us"}


@pytest.mark.parametrize("controls", [False, True], ids=["default", "controls"])
def test_the_http_benchmark_reports_every_row_with_wall_and_cpu_figures(
    tmp_path: Path, controls: bool
) -> None:
    out = tmp_path / "http.json"
    script = str(ROOT / "benchmarks" / "http_overhead.py")
    flags = ["--controls"] if controls else []
    proc = subprocess.run(
        [sys.executable, script, "--rounds", "2", "--requests", "5", "--json", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text(encoding="utf-8"))
    assert set(rows) == (ROWS | CONTROLS if controls else ROWS)
    for name, row in rows.items():
        assert set(row) == FIELDS, name
        assert row["bare_us"] > 0
        assert row["resilient_us"] > 0
        assert abs(row["overhead_us"] - (row["resilient_us"] - row["bare_us"])) < 0.2
    # Both loopback rows of a driver share one bare client, measured in the same turns.
    assert rows["sync"]["bare_us"] == rows["spin sync"]["bare_us"]
    assert rows["async"]["bare_us"] == rows["spin async"]["bare_us"]
    if controls:  # each control is measured in the same turns as the row it stands beside
        assert rows["side layer"]["bare_us"] == rows["layer"]["bare_us"]
        assert rows["side sync"]["bare_us"] == rows["sync"]["bare_us"]
    assert "spin rows:" in proc.stdout
