"""The task-count script of issue 14's item 5 runs each kind and checks the bulkhead's counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "task_instructions.py"


@pytest.mark.parametrize("kind", ["none", "semaphore", "ours"])
def test_each_kind_runs_its_tasks_to_the_end(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), kind, "200"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_an_unknown_kind_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "threads", "10"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
