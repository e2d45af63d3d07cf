"""Shared fixtures: a fake clock, an event recorder, the async/sync driver parameter, a quiet global hub,
an alert system of the test's own and a manager on the fake clock."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from otel_support import otel  # noqa: F401 - the fixture, for every directory

from otel_resilience import ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem, default_alert_system
from otel_resilience.testing import EventRecorder, FakeClock


def pytest_addoption(parser: pytest.Parser) -> None:
    """--run-slow: also run the long soaks (tests marked slow); RUN_SLOW=1 does the same."""
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep what the imports and the collection made out of every later garbage collection.

    The modules, the test items and their parameters live until the process ends, and they are
    most of the heap (about 450 000 objects in each process of a full run): each collection,
    the tests' own and the interpreter's, would walk them again, which made a test that collects
    several times per case up to seven times slower in a full run than alone. Only the cyclic
    collector skips them (``gc.freeze``): reference counting frees what it always did, and what
    a test makes after this is collected as before.
    """
    gc.collect()
    gc.freeze()


LONGEST_FIRST = (
    "reliability/test_linearizability.py",
    "ops/test_alert_rules.py",
    "e2e/test_recovery_alert_outage.py",
    "engine/test_driver_parity_surfaces.py",
    "test_wheel.py",
    "test_cancel_every_point.py",
    "e2e/test_prometheus_alertmanager.py",
    "demo/test_subprocess.py",
    "demo/test_run.py",
    "redis/test_store_faults.py",
    "engine/test_driver_parity.py",
    "redis/test_shared_breaker.py",
    "reliability/test_cancellation_sweeps.py",
    "e2e/test_store_flapping_demo.py",
    "demo/test_shared_state.py",
    "reliability/test_linearizability_async.py",
    "redis/test_shared_replicas_model.py",
)
"""The files (under ``tests/``) that take longest in a full run, about 25 s or more each, longest first.

``bash .ci/run`` runs whole files in three processes, each taking the next file as it ends one
(``--dist loadfile --no-loadscope-reorder``: in the order collected). These are collected
first, so that no process starts a long one while the others are done.
"""


REALTIME_HOME = "demo"
"""The folder (under ``tests/``) of every file marked ``realtime``: ``bash .ci/run`` collects only
it for its second run (``-m realtime tests/demo``), so a file marked so elsewhere would be run by
neither."""


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the items of :data:`LONGEST_FIRST` first, in its order; the others keep theirs.

    Raises:
        pytest.UsageError: A file the list names is gone (renamed: the list must follow), or a
            test marked ``realtime`` lives outside :data:`REALTIME_HOME`.
    """
    root = Path(config.rootpath, "tests")
    home = root / REALTIME_HOME
    if astray := sorted(
        {
            str(item.path)
            for item in items
            if item.get_closest_marker("realtime") and home not in Path(item.path).parents
        }
    ):
        raise pytest.UsageError(
            f"tests marked realtime outside tests/{REALTIME_HOME} (bash .ci/run would skip them): {astray}"
        )
    if missing := [name for name in LONGEST_FIRST if not (root / name).is_file()]:
        raise pytest.UsageError(f"tests/conftest.py LONGEST_FIRST names files that are gone: {missing}")
    rank = {root / name: place for place, name in enumerate(LONGEST_FIRST)}
    last = len(rank)
    items.sort(key=lambda item: rank.get(Path(item.path), last))  # stable: the rest as collected


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at t=1000 s."""
    return FakeClock(1000.0)


@pytest.fixture
def recorder():
    """An EventRecorder registered on the global hub for the test's duration."""
    with EventRecorder() as rec:
        yield rec


@pytest.fixture(params=["async", "sync"])
def driver(request: pytest.FixtureRequest) -> str:
    """Run a behaviour test through both the async and the sync driver."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _quiet_global_hub() -> Iterator[None]:
    """Close the process-wide alert system after each test (the first breaker creates it again)."""
    yield
    default_alert_system().close()


@pytest.fixture
def alerts() -> Iterator[AlertSystem]:
    """An alert system of the test's own, closed afterwards (the process-wide one would stay on the hub)."""
    system = AlertSystem(name="test-alerts")
    yield system
    system.close()


@pytest.fixture
def manager(clock: FakeClock, alerts: AlertSystem) -> ResilienceManager:
    """A manager on the fake clock with the test's own alert system."""
    return ResilienceManager(clock=clock, alert_system=alerts)


@pytest.fixture
def unraisable() -> Iterator[list[object]]:
    """What the interpreter reports as ignored meanwhile (a death callback's or a freed coroutine's error)."""
    seen: list[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous


TASK_FACTORIES = ["lazy", "eager"] if sys.version_info >= (3, 12) else ["lazy"]
"""How the loop makes tasks: asyncio's way, and (3.12 on: ``asyncio.eager_task_factory``) eagerly."""


@pytest.fixture(params=TASK_FACTORIES)
async def task_factory(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The loop's tasks as asyncio makes them, or started eagerly (an attempt runs as it starts)."""
    loop = asyncio.get_running_loop()
    if request.param == "eager":
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    yield str(request.param)
    loop.set_task_factory(None)
