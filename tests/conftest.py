"""Shared fixtures: a fake clock, an event recorder, the async/sync driver parameter, a quiet global hub,
an alert system of the test's own and a manager on the fake clock."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from otel_support import otel  # noqa: F401 - the fixture, for every directory

from otel_resilience import ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem, default_alert_system
from otel_resilience.testing import EventRecorder, FakeClock


def pytest_addoption(parser: pytest.Parser) -> None:
    """--run-slow: also run the long soaks (tests marked slow); RUN_SLOW=1 does the same."""
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


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
