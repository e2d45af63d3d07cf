"""The hand-written floor of the full pipeline (benchmarks/_floor.py) computes what ours does.

Issue 14 measures the full pipeline against five minimal hand-written decorators; the ratio
means something only if both do the same work. Each script below is a sequence of outcomes of
the protected function; both stacks run it call by call, and must agree on every returned value
(results and fallbacks) and on how many times the function was reached (retries and breaker
rejections). Delays are zero so the scripts run at once; the breaker's open duration is long
enough never to end within a test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import otel_resilience as orr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from _floor import FloorPolicy, async_floor, sync_floor

DEFAULT = {"status": "error"}
OK, FAIL = "ok", "fail"

SCRIPTS = {
    "all succeed": [OK] * 6,
    "fail twice, then succeed": [FAIL, FAIL, OK, OK],
    "every attempt fails: fallback": [FAIL] * 3 + [OK],
    "five failures in a row open the breaker: the rest are fallbacks, never calls": [FAIL] * 12,
    "successes between failures keep it closed": [FAIL, OK, FAIL, FAIL, OK, FAIL, OK] * 2,
}


def ours_config(name: str) -> orr.ResilienceConfig:
    return orr.ResilienceConfig(
        circuit_breaker=orr.CircuitBreakerConfig(failure_threshold=5, timeout=600.0),
        retry_policy=orr.RetryPolicy(
            max_attempts=3, initial_delay=0.0, strategy=orr.RetryStrategy.EXPONENTIAL
        ),
        fallback_config=orr.FallbackConfig(
            strategy=orr.FallbackStrategy.DEFAULT_VALUE, default_value=DEFAULT
        ),
        timeout=30.0,
        bulkhead_config=orr.BulkheadConfig(max_concurrent=10),
        name=name,
    )


FLOOR = FloorPolicy(default=DEFAULT, initial_delay=0.0, open_seconds=600.0)


class Dependency:
    """Answers from a script; counts the calls that reached it."""

    def __init__(self, script: list[str]) -> None:
        self.outcomes: Iterator[str] = iter(script * 10)
        self.calls = 0

    def answer(self) -> int:
        self.calls += 1
        if next(self.outcomes) == FAIL:
            raise ConnectionError("down")
        return self.calls


def run_sync(
    build: Callable[[Callable[[], int]], Callable[[], Any]], script: list[str]
) -> tuple[list[Any], int]:
    dependency = Dependency(script)
    protected = build(dependency.answer)
    return [protected() for _ in script], dependency.calls


def run_async(
    build: Callable[[Callable[[], Any]], Callable[[], Any]], script: list[str]
) -> tuple[list[Any], int]:
    dependency = Dependency(script)

    async def answer() -> int:
        return dependency.answer()

    protected = build(answer)

    async def main() -> list[Any]:
        return [await protected() for _ in script]

    return asyncio.run(main()), dependency.calls


@pytest.mark.parametrize("script", list(SCRIPTS.values()), ids=list(SCRIPTS))
def test_the_sync_floor_computes_what_ours_does(script: list[str]) -> None:
    ours = run_sync(
        lambda fn: orr.resilient(ours_config("floor.sync"), manager=orr.ResilienceManager())(fn), script
    )
    floor = run_sync(lambda fn: sync_floor(fn, FLOOR), script)
    assert floor == ours


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="benchmarks/_floor.py's async floor uses asyncio.timeout, new in Python 3.11",
)
@pytest.mark.parametrize("script", list(SCRIPTS.values()), ids=list(SCRIPTS))
def test_the_async_floor_computes_what_ours_does(script: list[str]) -> None:
    ours = run_async(
        lambda fn: orr.resilient(ours_config("floor.async"), manager=orr.ResilienceManager())(fn), script
    )
    floor = run_async(lambda fn: async_floor(fn, FLOOR), script)
    assert floor == ours


def test_the_scripts_exercise_every_layer_that_decides() -> None:
    """The scripts are not vacuous: they see retries, fallbacks and breaker rejections."""
    values, calls = run_sync(lambda fn: sync_floor(fn, FLOOR), SCRIPTS["fail twice, then succeed"])
    assert (values, calls) == ([3, 4, 7, 8], 8)  # two retries, a success, and again
    values, calls = run_sync(lambda fn: sync_floor(fn, FLOOR), SCRIPTS["every attempt fails: fallback"])
    assert values[0] == DEFAULT
    trips = SCRIPTS["five failures in a row open the breaker: the rest are fallbacks, never calls"]
    values, calls = run_sync(lambda fn: sync_floor(fn, FLOOR), trips)
    assert values == [DEFAULT] * 12
    assert calls == 5  # attempts 1-3 of the first call, 1-2 of the second: then open


def test_a_timed_out_sync_call_falls_back_in_both() -> None:
    """The total deadline: a result that arrives after it is discarded for the fallback."""

    def slow() -> int:
        time.sleep(0.05)
        return 1

    config = dataclasses.replace(ours_config("floor.deadline"), timeout=0.01)
    ours = orr.resilient(config, manager=orr.ResilienceManager())(slow)
    floor = sync_floor(slow, dataclasses.replace(FLOOR, total_timeout=0.01))
    assert ours() == floor() == DEFAULT


def test_the_instruction_count_driver_runs_its_workloads_and_refuses_others() -> None:
    """benchmarks/instructions.py (the callgrind driver of docs/benchmarks.md) runs ours, the
    floor, the SDK rows, our breaker rows and our creation row (circuitbreaker's and pybreaker's
    need the bench extra), async and sync, and names a workload it does not know."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "instructions.py"
    for workload in (
        "ssdk",
        "ssdk_inproc",
        "root1_floor",
        "closed_off",
        "sopen",
        "open",
        "sclosed",
        "screate",
        "nope",
    ):
        done = subprocess.run(
            [sys.executable, str(script), workload, "3"], capture_output=True, text=True, check=False
        )
        if workload == "nope":
            assert done.returncode != 0
            assert "unknown workload 'nope'" in done.stderr
        else:
            assert done.returncode == 0, done.stderr
    timed = subprocess.run(
        [sys.executable, str(script), "sdk_inproc", "4", "--wall"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert timed.returncode == 0, timed.stderr
    assert timed.stdout.startswith("sdk_inproc "), timed.stdout
    assert timed.stdout.endswith(" us per call\n"), timed.stdout
