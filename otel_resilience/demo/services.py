"""The simulated dependencies: real asyncio sleeps for latency, faults from a seeded schedule.

Each :class:`SimulatedDependency` reads its :class:`~otel_resilience.demo.scenarios.State` at
the moment of the call (production time = elapsed real time / time scale), sleeps for a latency
drawn around the state's median (log-normal, scaled to demo time), and then answers or raises
one of the errors below. Randomness comes from one :class:`random.Random` per dependency,
seeded from ``--seed``: the fault *schedule* is reproduced exactly; which individual call fails
also depends on the order in which calls arrive.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any, Final

from otel_resilience.demo.scenarios import Scenario, State

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
    """The dependency refused the connection (it is down)."""


class TransientServiceError(DependencyError, ConnectionError):
    """The dependency answered 503 or reset the connection (a transient failure)."""


class QueryError(DependencyError):
    """The database rejected a query."""


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
        calls: Calls received.
        failures: Calls that raised.
    """

    __slots__ = ("_clock", "_error", "_rng", "_scale", "_scenario", "_start", "calls", "failures", "name")

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
        self._error: type[DependencyError] = QueryError if name == "database" else TransientServiceError
        self.calls = 0
        self.failures = 0

    def production_time(self) -> float:
        """Return the production seconds elapsed since the start of the run."""
        return (self._clock() - self._start) / self._scale

    def state(self) -> State:
        """Return the dependency's state now."""
        return self._scenario.state(self.name, self.production_time())

    async def call(self, request: int) -> Any:
        """Answer one request after a simulated latency, or raise a simulated error.

        Args:
            request: The request number (it shapes the answer).

        Returns:
            A small result: a dict for the ML service and the API, a list of rows for the database.

        Raises:
            ServiceUnavailableError: The dependency is down.
            TransientServiceError: A transient failure of the ML service or the API.
            QueryError: A failed database query.
        """
        self.calls += 1
        state = self.state()
        condition = state.condition
        rng = self._rng
        latency = state.latency
        if condition.spread > 0:
            latency = min(latency * math.exp(rng.gauss(0.0, condition.spread)), latency * _MAX_LATENCY_FACTOR)
        fails = condition.down or rng.random() < condition.error_rate
        await asyncio.sleep(latency * self._scale)
        if fails:
            self.failures += 1
            if condition.down:
                raise ServiceUnavailableError(f"{self.name}: connection refused")
            raise self._error(f"{self.name}: transient failure")
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
