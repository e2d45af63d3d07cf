"""Every candidate engine shape in benchmarks/engine_shapes.py keeps the same rules, under both drivers.

The study compares the cost of five shapes of a pattern; the comparison is fair only if each
shape's toy pipeline (timeout > retry > breaker > bulkhead > fn) behaves the same. Every test
runs every shape, and the driver-agnostic ones run under both the async and the sync driver.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support import run

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_shapes.py"
_SPEC = importlib.util.spec_from_file_location("engine_shapes", _PATH)
assert _SPEC is not None
assert _SPEC.loader is not None
shapes = importlib.util.module_from_spec(_SPEC)
sys.modules["engine_shapes"] = shapes
_SPEC.loader.exec_module(shapes)

SHAPES = list(shapes.SHAPES)

_LOOP_TIMEOUT = "the study's async shapes run under asyncio.timeout, new in Python 3.11"
needs_loop_timeout = pytest.mark.skipif(sys.version_info < (3, 11), reason=_LOOP_TIMEOUT)


@pytest.fixture(params=["async", "sync"])
def driver(request: pytest.FixtureRequest) -> str:
    """Both drivers (the shared fixture's), the async one only where the study can run it."""
    if request.param == "async" and sys.version_info < (3, 11):
        pytest.skip(_LOOP_TIMEOUT)
    return str(request.param)


class Boom(Exception):
    """The dependency's failure."""


class Dependency:
    """A sync body that counts its calls and fails the first ``failures`` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise Boom
        return self.calls


@pytest.fixture(params=SHAPES)
def build(request: pytest.FixtureRequest) -> Any:
    return shapes.SHAPES[request.param]


def test_every_candidate_shape_is_studied() -> None:
    """The study covers today's shape, generator effects, step objects, the hybrid and the one coroutine."""
    assert {"A", "B", "C", "D", "E"} <= set(SHAPES)


def test_success_returns_the_result_and_gives_everything_back(build: Any, driver: str) -> None:
    """A successful call returns fn's result, counts no failure and leaves no slot taken."""
    p = build(shapes.Config())
    assert run(driver, p, Dependency()) == 1
    assert p.breaker.failures == 0
    assert p.bulkhead.active == 0


def test_a_failure_is_counted_by_the_breaker(build: Any, driver: str) -> None:
    """A failing call re-raises the original error and counts one breaker failure."""
    p = build(shapes.Config(attempts=1))
    with pytest.raises(Boom):
        run(driver, p, Dependency(failures=1))
    assert p.breaker.failures == 1
    assert p.bulkhead.active == 0


def test_the_breaker_opens_after_threshold_failures(build: Any, driver: str) -> None:
    """After ``threshold`` consecutive failures the next call is rejected without calling fn."""
    p = build(shapes.Config(attempts=1, threshold=3))
    for _ in range(3):
        with pytest.raises(Boom):
            run(driver, p, Dependency(failures=1))
    dep = Dependency()
    with pytest.raises(shapes.CircuitOpenError):
        run(driver, p, dep)
    assert dep.calls == 0
    assert p.breaker.state == "open"


def test_an_open_rejection_is_not_retried(build: Any, driver: str) -> None:
    """Retry gives a CircuitOpenError straight back: one rejection, no further attempt."""
    p = build(shapes.Config(attempts=3, threshold=1))
    dep = Dependency(failures=1)
    with pytest.raises(shapes.CircuitOpenError):
        run(driver, p, dep)  # attempt 1 fails and opens; attempt 2 is rejected and ends the call
    assert dep.calls == 1
    assert p.breaker.rejected == 1
    with pytest.raises(shapes.CircuitOpenError):
        run(driver, p, Dependency())
    assert p.breaker.rejected == 2


def test_retry_succeeds_on_the_third_attempt(build: Any, driver: str) -> None:
    """Two failures then a success return the success; the success resets the breaker's count."""
    p = build(shapes.Config(attempts=3))
    dep = Dependency(failures=2)
    assert run(driver, p, dep) == 3
    assert dep.calls == 3
    assert p.breaker.failures == 0


def test_retry_reraises_the_last_error_when_attempts_run_out(build: Any, driver: str) -> None:
    """Three failures with three attempts re-raise the original error after exactly three calls."""
    p = build(shapes.Config(attempts=3))
    dep = Dependency(failures=5)
    with pytest.raises(Boom):
        run(driver, p, dep)
    assert dep.calls == 3


def test_a_half_open_probe_closes_the_breaker(build: Any, driver: str) -> None:
    """After the open period one probe goes through, and its success closes the breaker."""
    now = [0.0]
    p = build(shapes.Config(attempts=1, threshold=1, reset_after=5.0, clock=lambda: now[0]))
    with pytest.raises(Boom):
        run(driver, p, Dependency(failures=1))
    with pytest.raises(shapes.CircuitOpenError):
        run(driver, p, Dependency())
    now[0] = 5.0
    assert run(driver, p, Dependency()) == 1
    assert p.breaker.state == "closed"


def test_a_full_bulkhead_rejects_and_the_breaker_ignores_it_sync(build: Any) -> None:
    """A call made while the only slot is busy is rejected, not retried and not counted (sync)."""
    p = build(shapes.Config(max_concurrent=1))
    inner = Dependency()

    def holder() -> str:
        with pytest.raises(shapes.BulkheadFullError):
            p.execute_sync(inner)
        return "held"

    assert p.execute_sync(holder) == "held"
    assert inner.calls == 0
    assert p.breaker.failures == 0
    assert p.bulkhead.active == 0


@needs_loop_timeout
async def test_a_full_bulkhead_rejects_and_the_breaker_ignores_it_async(build: Any) -> None:
    """A call made while the only slot is busy is rejected, not retried and not counted (async)."""
    p = build(shapes.Config(max_concurrent=1))
    release = asyncio.Event()
    calls = 0

    async def holder() -> str:
        await release.wait()
        return "held"

    async def inner() -> int:
        nonlocal calls
        calls += 1
        return 1

    task = asyncio.create_task(p.execute(holder))
    await asyncio.sleep(0)
    assert p.bulkhead.active == 1
    with pytest.raises(shapes.BulkheadFullError):
        await p.execute(inner)
    release.set()
    assert await task == "held"
    assert calls == 0
    assert p.breaker.failures == 0
    assert p.bulkhead.active == 0


@needs_loop_timeout
async def test_cancellation_gives_the_bulkhead_slot_back(build: Any) -> None:
    """Cancelling a running call frees its slot, counts no failure and re-raises CancelledError."""
    p = build(shapes.Config(max_concurrent=1, attempts=3))
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(p.execute(hang))
    await started.wait()
    assert p.bulkhead.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.bulkhead.active == 0
    assert p.breaker.failures == 0

    async def ok() -> int:
        return 7

    assert await p.execute(ok) == 7


@needs_loop_timeout
async def test_the_timeout_cancels_the_inner_run_async(build: Any) -> None:
    """In async the total timeout cancels the running attempt and raises our own timeout error."""
    p = build(shapes.Config(timeout=0.05))

    async def hang() -> None:
        await asyncio.sleep(60)

    started = time.monotonic()
    with pytest.raises(shapes.OperationTimeoutError):
        await p.execute(hang)
    assert time.monotonic() - started < 30
    assert p.bulkhead.active == 0
    assert p.breaker.failures == 0
    assert shapes.current_deadline() is None


def test_the_timeout_publishes_its_deadline_sync(build: Any) -> None:
    """In sync the total timeout publishes an absolute deadline the callee can read."""
    p = build(shapes.Config(timeout=30.0))
    before = time.monotonic()
    seen = p.execute_sync(shapes.current_deadline)
    assert seen is not None
    assert before + 30.0 <= seen <= time.monotonic() + 30.0
    assert shapes.current_deadline() is None


def test_retry_starts_no_attempt_past_the_deadline_sync(build: Any) -> None:
    """In sync a retry whose wait would end past the published deadline gives up with the error."""
    p = build(shapes.Config(timeout=30.0, attempts=3))
    dep = Dependency(failures=5)
    policies = _policies(p)  # the one RetryPolicy each shape's retry link reads
    assert len(policies) == 1
    policies[0].delay = 60.0  # a wait that cannot end inside the 30 s deadline
    with pytest.raises(Boom):
        p.execute_sync(dep)
    assert dep.calls == 1


def _policies(p: Any) -> list[Any]:
    """Every RetryPolicy reachable from the pipeline's links."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = [p.head]
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, shapes.RetryPolicy):
            found.append(obj)
            continue
        for name in ("next", "step", "policy", "head"):
            stack.append(getattr(obj, name, None))
    return found


@needs_loop_timeout
def test_the_study_runs_and_reports_ratios_to_today() -> None:
    """A tiny run of the study yields one ratio to shape A per shape, scenario and driver."""
    records = shapes.measure(repeats=1, target_ms=0.05)
    assert {(r["scenario"], r["driver"]) for r in records} == {
        (s, d) for s in shapes.SCENARIOS for d in ("async", "sync")
    }
    assert all(r["vs_A"] == 1.0 for r in records if r["shape"] == "A")
    assert "| full | sync |" in shapes.table(records)


def test_the_instruction_count_loop_runs_every_shape_and_scenario() -> None:
    """The loop that callgrind counts makes its calls for every shape and scenario without failing."""
    for scenario in shapes.SCENARIOS:
        for shape in ["bare", *SHAPES]:
            shapes._loop_sync(shape, scenario, 3)


def test_retry_waits_its_delay_between_attempts(build: Any, driver: str) -> None:
    """A retry with a delay sleeps between attempts (two waits before the third attempt)."""
    p = build(shapes.Config(attempts=3))
    _policies(p)[0].delay = 0.02
    dep = Dependency(failures=2)
    started = time.monotonic()
    assert run(driver, p, dep) == 3
    assert time.monotonic() - started >= 0.04
    assert dep.calls == 3


@needs_loop_timeout
async def test_cancelling_a_backoff_reraises_and_leaks_nothing(build: Any) -> None:
    """A call cancelled while retry waits re-raises CancelledError and holds no slot."""
    p = build(shapes.Config(attempts=3, timeout=120.0))
    _policies(p)[0].delay = 60.0  # fits in the deadline, so retry waits
    failed = asyncio.Event()

    async def fail() -> None:
        failed.set()
        raise Boom

    task = asyncio.create_task(p.execute(fail))
    await failed.wait()
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert p.bulkhead.active == 0
    assert p.breaker.failures == 1
