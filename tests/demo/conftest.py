"""Helpers for the demo's tests: run a scenario in process, fast, and find a free port."""

from __future__ import annotations

import io
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from otel_resilience.demo.app import run_demo
from otel_resilience.demo.options import DemoOptions
from otel_resilience.demo.view import PlainView

FAST = 0.01
"""The fast mode: 1 s of demo = 100 s of production time (the 600 s cycle lasts 6 s)."""

Runner = Callable[..., Awaitable[tuple[dict[str, Any], str]]]


@pytest.fixture
def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_scenario() -> Runner:
    """Run one scenario in process in fast mode, without /metrics; return (summary, plain output)."""

    async def run(scenario: str, duration: float, **options: Any) -> tuple[dict[str, Any], str]:
        settings: dict[str, Any] = {"time_scale": FAST, "port": None, "plain": True, "interval": 0.5}
        settings.update(options)
        demo = DemoOptions(scenario=scenario, duration=duration, **settings)
        out = io.StringIO()
        summary = await run_demo(demo, view=PlainView(out, demo.interval), handle_signals=False)
        return summary, out.getvalue()

    return run
