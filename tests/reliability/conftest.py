"""Shared helpers for the adversarial reliability suite.

Long soaks run only when asked: ``RUN_SLOW=1 python -m pytest tests/reliability`` (or
``--run-slow`` once the option is registered in the root ``tests/conftest.py``). Tests marked
``slow`` are skipped otherwise; nothing else in this folder is ever skipped.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_resilience.engine.events import HUB
from otel_resilience.patterns import alerts
from otel_resilience.telemetry import current_listener

_HERE = Path(__file__).parent


def run_slow(config: pytest.Config) -> bool:
    """Whether the long versions run: ``RUN_SLOW=1`` or ``--run-slow`` (when registered)."""
    if os.environ.get("RUN_SLOW", "") not in {"", "0"}:
        return True
    try:
        return bool(config.getoption("--run-slow"))
    except ValueError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect this folder's ``slow`` tests (the long soaks) unless they were asked for."""
    if run_slow(config):
        return
    slow_items = [
        item
        for item in items
        if item.get_closest_marker("slow") is not None and _HERE in Path(item.path).parents
    ]
    if slow_items:
        config.hook.pytest_deselected(items=slow_items)
        chosen = set(map(id, slow_items))
        items[:] = [item for item in items if id(item) not in chosen]


@pytest.fixture
def slow(request: pytest.FixtureRequest) -> bool:
    """Whether this run asked for the long versions."""
    return run_slow(request.config)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads every microsecond, so that races show up."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.fixture(autouse=True)
def _leave_global_telemetry_as_found() -> Iterator[None]:
    """Undo what a test added to process-wide telemetry: the default alert system, hub listeners.

    A manager built without ``alert_system=`` creates the process-wide alert system, which
    listens on the global hub; later tests elsewhere must not receive its alerts. Listeners a
    test left on the hub are removed too, except the one ``telemetry.instrument`` installed.
    """
    default_before = alerts._DEFAULT
    before = {id(listener) for listener in (*HUB.event_listeners, *HUB.execution_listeners)}
    try:
        yield
    finally:
        default_after = alerts._DEFAULT
        if default_after is not None and default_after is not default_before and not default_after.closed:
            default_after.close()
        keep = current_listener()
        for listener in (*HUB.event_listeners, *HUB.execution_listeners):
            if id(listener) not in before and listener is not keep:
                HUB.remove_listener(listener)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """Run the test with the cyclic garbage collector off: only reference counting frees (on again after)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()
