"""The simulated dependencies: real asyncio sleeps for their service time, seeded answers.

Each :class:`SimulatedDependency` reads its :class:`~otel_resilience.demo.scenarios.State` at
the moment of the call (production time = elapsed real time / time scale), sleeps for a latency
drawn around the state's median (log-normal, scaled to demo time), and answers. It never fails
by itself: its faults (errors, refused connections) and its heavy tail are injected in front of
it by the policy's chaos links (:mod:`otel_resilience.demo.faults`), from the same schedule, so
that the library's chaos feature marks every one of them as a drill. Randomness comes from one
:class:`random.Random` per dependency, seeded from ``--seed``: the fault *schedule* is
reproduced exactly; which individual call is slow or fails also depends on the order in which
calls arrive.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any, Final

from otel_resilience.demo.scenarios import Condition, Scenario, State

__all__ = [
    "DependencyError",
    "MemoryCache",
    "QueryError",
    "ServiceUnavailableError",
    "SimulatedDependency",
    "TransientServiceError",
]

_MAX_LATENCY_FACTOR: Final = 5.0
"""A drawn latency is at most this many times the median (no absurd outliers)."""


class DependencyError(Exception):
    """Base class of every error a simulated dependency raises."""


class ServiceUnavailableError(DependencyError, ConnectionError):
    """The dependency refused the connection (it is down): injected by a chaos link."""


class TransientServiceError(DependencyError, ConnectionError):
    """The dependency answered 503 or reset the connection (a transient failure): injected by a chaos link."""


class QueryError(DependencyError):
    """The database rejected a query: injected by a chaos link."""


class SimulatedDependency:
    """One simulated dependency, driven by a scenario.

    Args:
        name: The dependency's name in the scenario (``ml_service``, ``database``, ``content_api``).
        scenario: The fault schedule.
        seed: Seed of this dependency's randomness (combined with ``name``).
        time_scale: Demo seconds per production second.
        start: The run's start on ``clock``.
        clock: The monotonic clock (``time.monotonic`` by default).

    Attributes:
        calls: Calls that reached it (the chaos links in front of it let them through).
    """

    __slots__ = ("_clock", "_rng", "_scale", "_scenario", "_start", "calls", "name")

    def __init__(
        self,
        name: str,
        scenario: Scenario,
        *,
        seed: int,
        time_scale: float,
        start: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._scenario = scenario
        self._rng = random.Random(f"{name}:{seed}")  # noqa: S311 - a reproducible simulation, not cryptography
        self._scale = time_scale
        self._start = start
        self._clock = clock
        self.calls = 0

    def production_time(self) -> float:
        """Return the production seconds elapsed since the start of the run."""
        return (self._clock() - self._start) / self._scale

    def state(self) -> State:
        """Return the dependency's state now."""
        return self._scenario.state(self.name, self.production_time())

    def condition(self) -> Condition:
        """Return the dependency's condition now (what its chaos links read)."""
        return self.state().condition

    async def call(self, request: int) -> Any:
        """Answer one request after a simulated service time.

        Args:
            request: The request number (it shapes the answer).

        Returns:
            A small result: a dict for the ML service and the API, a list of rows for the database.
        """
        self.calls += 1
        state = self.state()
        condition = state.condition
        latency = state.latency
        if condition.spread > 0:
            drawn = latency * math.exp(self._rng.gauss(0.0, condition.spread))
            latency = min(drawn, latency * _MAX_LATENCY_FACTOR)
        await asyncio.sleep(latency * self._scale)
        return self._answer(request)

    def _answer(self, request: int) -> Any:
        if self.name == "database":
            return [{"id": request, "row": i} for i in range(3)]
        if self.name == "ml_service":
            return {"label": "relevant" if request % 3 else "other", "score": round(self._rng.random(), 3)}
        return {"similarity": round(self._rng.random(), 3), "quality": round(self._rng.random(), 3)}


class MemoryCache:
    """An in-process :class:`~otel_resilience.CacheService` (``get`` returns ``None`` on a miss)."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """Return the value stored under ``key``, or ``None``."""
        return self._data.get(key)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``."""
        self._data[key] = value
