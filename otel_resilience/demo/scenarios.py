"""The fault schedules: when each simulated dependency is healthy, failing, down or slow.

A :class:`Scenario` is pure data built from a name and a seed by :func:`build_scenario`: the
same seed always gives the same schedule. Times are *production* seconds from the start of the
run (the demo multiplies them by its time scale); the schedule repeats every
:attr:`Scenario.cycle` seconds, so a run without ``--duration`` keeps showing faults.

The dependencies and their baselines (every scenario):

* ``ml_service``: an ML inference service, ~0.8 s per call, 1 % errors, and short *bursts*
  (2-4 s at 40 % errors) every 90-180 s that its retries absorb;
* ``database``: ~40 ms per query, 0.2 % errors, and a heavy tail: one query in 20 takes 1 s
  more (a slow replica), which its hedging answers;
* ``content_api``: a flaky remote content-analysis API, ~0.3 s per call, 8 % errors.

The scenarios add, once per 600 s cycle (every cycle, or only the first one when the scenario is
built with ``repeat=False``; the baseline bursts go on either way):

* ``steady``: nothing; the baseline only.
* ``outage``: ``ml_service`` goes down (connection refused) at t = 60 s for 240-330 s, then
  comes back: its breaker opens, probes, and closes after the recovery.
* ``brownout``: ``database`` latency climbs linearly from 40 ms to 20 s over 150-210 s (past the
  10 s timeout, and past what its 20-slot bulkhead can absorb), holds for 90-150 s, then recovers.
* ``flapping``: from t = 60 s ``ml_service`` alternates down (20-60 s) and up (40-120 s), and
  ``content_api`` alternates error storms (60 % errors, 15-40 s) and calm (30-90 s); both are
  healthy for the last 60 s of the cycle.
* ``surge``: from t = 60 s a noisy caller adds 10 requests/s to ``content_api`` (6 times its
  usual 2/s, 3 times its limiter's 4/s) for 390-450 s: the limiter sheds what is over its rate
  (``RateLimitedError``, answered by the cached fallback) and lets a few callers wait for a
  permit. From 45-75 s into the flood the API, strained, fails 12 % of the calls it still gets,
  and ``ml_service`` 30 %: the retries they ask for are more than the shared retry budget
  allows, and it denies the rest. Both recover when the flood ends.

A window's condition may also carry load: :attr:`Condition.extra_load` is the rate a noisy
caller adds to the policy of the same name while the window lasts (the ``surge`` flood).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "CYCLE",
    "DB_TAIL",
    "DEPENDENCIES",
    "SURGE_LOAD",
    "Condition",
    "DependencyPlan",
    "Scenario",
    "State",
    "Window",
    "build_scenario",
]

CYCLE: Final = 600.0
"""Production seconds after which every schedule repeats."""
DEPENDENCIES: Final = ("ml_service", "database", "content_api")
"""The simulated dependencies, in display order."""
_FAULT_START: Final = 60.0
"""Every scenario fault starts one minute into the cycle (a healthy start to compare with)."""
_QUIET_END: Final = 60.0
"""Flapping stops this long before the end of the cycle."""


@dataclass(frozen=True, slots=True)
class Condition:
    """How a dependency behaves during a window.

    Attributes:
        label: A short name shown in the view (``healthy``, ``burst``, ``down``, ``slow``, ``storm``,
            ``flooded``, ``strained``).
        error_rate: Probability (0..1) that a call fails.
        latency: Median latency in production seconds.
        spread: Log-normal sigma of the latency (0 for a constant latency).
        down: Whether the dependency refuses connections: every call fails at once.
        ramp_to: If set, the median latency grows linearly from ``latency`` at the window's
            start to ``ramp_to`` at its end.
        extra_load: Requests per production second a noisy caller adds to the policy named
            after the dependency while the window lasts (0: the usual load only).
        slow_rate: Probability (0..1) that a call is delayed by ``slow_latency`` on top of its
            service time: a heavy tail (a slow replica, a pause), what hedging is for.
        slow_latency: The heavy tail's delay in production seconds.
    """

    label: str
    error_rate: float
    latency: float
    spread: float = 0.3
    down: bool = False
    ramp_to: float | None = None
    extra_load: float = 0.0
    slow_rate: float = 0.0
    slow_latency: float = 0.0

    @property
    def failing(self) -> bool:
        """Whether this is a fault whose end is a *recovery* the summary measures."""
        return self.down or self.error_rate >= 0.5


@dataclass(frozen=True, slots=True)
class Window:
    """A condition between ``start`` (inclusive) and ``end`` (exclusive), in production seconds."""

    start: float
    end: float
    condition: Condition


@dataclass(frozen=True, slots=True)
class State:
    """What a dependency does at one moment: its condition and its median latency then."""

    condition: Condition
    latency: float


@dataclass(frozen=True, slots=True)
class DependencyPlan:
    """The baseline of one dependency and the windows that override it (sorted, disjoint)."""

    name: str
    baseline: Condition
    windows: tuple[Window, ...] = ()

    def bursts_only(self) -> DependencyPlan:
        """Return this plan without its scenario faults (the baseline bursts are kept)."""
        return DependencyPlan(
            self.name, self.baseline, tuple(w for w in self.windows if w.condition.label == "burst")
        )

    def state_at(self, t: float) -> State:
        """Return the state at ``t`` production seconds into the cycle (``0 <= t < CYCLE``)."""
        for window in self.windows:
            if window.start <= t < window.end:
                condition = window.condition
                if condition.ramp_to is None:
                    return State(condition, condition.latency)
                progress = (t - window.start) / (window.end - window.start)
                return State(
                    condition, condition.latency + progress * (condition.ramp_to - condition.latency)
                )
            if window.start > t:
                break
        return State(self.baseline, self.baseline.latency)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named, seeded fault schedule for every dependency.

    Attributes:
        name: The scenario's name.
        seed: The seed it was built from.
        description: One sentence for the view and the summary.
        plans: The plan of each dependency, by name.
        repeat: Whether the faults come back every cycle (else only in the first one).
        cycle: Production seconds after which the schedule repeats.
    """

    name: str
    seed: int
    description: str
    plans: Mapping[str, DependencyPlan]
    repeat: bool = True
    cycle: float = CYCLE

    def plan(self, dependency: str, t: float) -> DependencyPlan:
        """Return the plan of ``dependency`` in force in the cycle that holds ``t``."""
        plan = self.plans[dependency]
        if self.repeat or t < self.cycle:
            return plan
        return plan.bursts_only()

    def state(self, dependency: str, t: float) -> State:
        """Return the state of ``dependency`` at ``t`` production seconds since the start."""
        return self.plan(dependency, t).state_at(t % self.cycle)

    def recoveries(self, dependency: str, until: float) -> list[float]:
        """Return when ``dependency`` recovered from a failing window, up to ``until`` seconds.

        A recovery is the end of a window whose condition is :attr:`Condition.failing` (down,
        or at least 50 % errors), when the next moment is not failing too.
        """
        found: list[float] = []
        cycles = math.ceil(until / self.cycle) if until > 0 else 0
        for k in range(cycles):
            found.extend(at for at in self._recoveries_in(dependency, k) if at <= until)
        return found

    def next_recovery(self, dependency: str, after: float) -> float | None:
        """Return when ``dependency`` next recovers after ``after`` seconds, or ``None``.

        A recovery as :meth:`recoveries` lists them, in production seconds since the start;
        ``None`` when it never recovers again. It reads two cycles at most, however late
        ``after`` is.
        """
        first = math.floor(max(after, 0.0) / self.cycle)
        for k in (first, first + 1):  # the next cycle repeats this one's recoveries, or has none
            for at in self._recoveries_in(dependency, k):
                if at > after:
                    return at
        return None

    def _recoveries_in(self, dependency: str, k: int) -> list[float]:
        """Return the recoveries of ``dependency`` in cycle ``k``, in production seconds since the start."""
        plan = self.plan(dependency, k * self.cycle)
        return [
            k * self.cycle + window.end
            for window in plan.windows
            if window.condition.failing and not plan.state_at(window.end).condition.failing
        ]

    def next_failure(self, dependency: str, after: float) -> float | None:
        """Return when ``dependency`` next starts failing after ``after`` seconds, or ``None``.

        The start of a window whose condition is :attr:`Condition.failing` when the moment
        before is not failing (the counterpart of :meth:`recoveries`), in production seconds
        since the start; ``None`` when it never fails again.
        """
        first = math.floor(max(after, 0.0) / self.cycle)
        for k in (first, first + 1):  # the next cycle repeats this one's failures, or has none
            plan = self.plan(dependency, k * self.cycle)
            for window in plan.windows:
                at = k * self.cycle + window.start
                if (
                    at > after
                    and window.condition.failing
                    and not plan.state_at(window.start - 1e-6).condition.failing
                ):
                    return at
        return None

    def changes(self, dependency: str, after: float, until: float) -> list[tuple[float, str]]:
        """Return ``(time, new label)`` for every change of condition in ``(after, until]``.

        Times are production seconds since the start; a window shorter than the caller's polling
        interval is not missed.
        """
        found: list[tuple[float, str]] = []
        if until <= after:
            return found
        first = math.floor(max(after, 0.0) / self.cycle)
        for k in range(first, math.floor(until / self.cycle) + 1):
            plan = self.plan(dependency, k * self.cycle)
            for bound in sorted({b for w in plan.windows for b in (w.start, w.end)}):
                at = k * self.cycle + bound
                if after < at <= until:
                    label = plan.state_at(bound).condition.label
                    if label != plan.state_at(bound - 1e-6).condition.label:
                        found.append((at, label))
        return found

    def windows(self, dependency: str) -> tuple[Window, ...]:
        """Return the windows of ``dependency`` in one cycle."""
        return self.plans[dependency].windows


_ML_HEALTHY: Final = Condition("healthy", 0.01, 0.8, 0.3)
_ML_BURST: Final = Condition("burst", 0.4, 0.8, 0.3)
_ML_DOWN: Final = Condition("down", 1.0, 0.005, 0.0, down=True)
DB_TAIL: Final = (0.05, 1.0)
"""The database's heavy tail: one call in 20 takes 1 s more (production seconds), in every condition."""
_DB_HEALTHY: Final = Condition("healthy", 0.002, 0.04, 0.3, slow_rate=DB_TAIL[0], slow_latency=DB_TAIL[1])
_API_HEALTHY: Final = Condition("healthy", 0.03, 0.3, 0.4)
_API_STORM: Final = Condition("storm", 0.6, 0.3, 0.4)
SURGE_LOAD: Final = 10.0
"""Requests per production second the ``surge`` scenario's noisy caller adds to ``content_api``."""
_API_FLOODED: Final = Condition("flooded", 0.03, 0.3, 0.4, extra_load=SURGE_LOAD)
_API_STRAINED: Final = Condition("strained", 0.12, 0.3, 0.4, extra_load=SURGE_LOAD)
_ML_STRAINED: Final = Condition("strained", 0.3, 0.8, 0.3)

_DESCRIPTIONS: Final = MappingProxyType(
    {
        "steady": "every dependency at its baseline: ML bursts absorbed by retries, a flaky API",
        "outage": "ml_service goes down (connection refused) at t+60 s and comes back minutes later",
        "brownout": "database latency climbs from 40 ms to 20 s, past its 10 s timeout, then recovers",
        "flapping": "ml_service goes down and up repeatedly; content_api has error storms",
        "surge": "a noisy caller floods content_api past its rate limit; strained dependencies ask for "
        "more retries than the shared budget allows",
    }
)


def _bursts(rng: random.Random, busy: tuple[Window, ...]) -> tuple[Window, ...]:
    """Return the ML service's baseline bursts for one cycle, outside the ``busy`` windows."""
    windows: list[Window] = []
    t = 90.0 + rng.uniform(0.0, 60.0)
    while t < CYCLE - 10.0:
        end = t + rng.uniform(2.0, 4.0)
        if all(end <= w.start or t >= w.end for w in busy):
            windows.append(Window(t, end, _ML_BURST))
        t = end + rng.uniform(90.0, 180.0)
    return tuple(windows)


def _alternating(
    rng: random.Random, bad: Condition, bad_range: tuple[float, float], good_range: tuple[float, float]
) -> tuple[Window, ...]:
    """Return alternating ``bad`` windows between t = 60 s and the quiet end of the cycle."""
    windows: list[Window] = []
    t = _FAULT_START
    limit = CYCLE - _QUIET_END
    while t < limit:
        end = min(t + rng.uniform(*bad_range), limit)
        windows.append(Window(t, end, bad))
        t = end + rng.uniform(*good_range)
    return tuple(windows)


def _merge(*parts: tuple[Window, ...]) -> tuple[Window, ...]:
    """Return the windows of every part, sorted by start (the parts must not overlap)."""
    return tuple(sorted((w for part in parts for w in part), key=lambda w: w.start))


def _surge(rng: random.Random) -> tuple[tuple[Window, ...], tuple[Window, ...]]:
    """Return the ``surge`` windows of ``content_api`` (flooded, then strained) and ``ml_service``."""
    strain = _FAULT_START + rng.uniform(45.0, 75.0)
    end = _FAULT_START + rng.uniform(390.0, 450.0)
    api = (Window(_FAULT_START, strain, _API_FLOODED), Window(strain, end, _API_STRAINED))
    return api, (Window(strain, end, _ML_STRAINED),)


def build_scenario(name: str, seed: int, *, repeat: bool = True) -> Scenario:
    """Build the schedule of scenario ``name`` from ``seed`` (deterministic).

    Args:
        name: ``steady``, ``outage``, ``brownout``, ``flapping`` or ``surge``.
        seed: Any integer; the same seed gives the same schedule.
        repeat: Whether the faults come back every cycle (default) or only in the first.

    Returns:
        The scenario.

    Raises:
        ValueError: If ``name`` is not a scenario.
    """
    if name not in _DESCRIPTIONS:
        msg = f"unknown scenario {name!r}; choose one of {', '.join(_DESCRIPTIONS)}"
        raise ValueError(msg)
    rng = random.Random(f"{name}:{seed}")  # noqa: S311 - a reproducible simulation, not cryptography
    ml: tuple[Window, ...] = ()
    database: tuple[Window, ...] = ()
    api: tuple[Window, ...] = ()
    if name == "outage":
        ml = (Window(_FAULT_START, _FAULT_START + rng.uniform(240.0, 330.0), _ML_DOWN),)
    elif name == "brownout":
        ramp_end = _FAULT_START + rng.uniform(150.0, 210.0)
        hold_end = ramp_end + rng.uniform(90.0, 150.0)
        database = (
            Window(_FAULT_START, ramp_end, dataclasses.replace(_DB_HEALTHY, label="slowing", ramp_to=20.0)),
            Window(ramp_end, hold_end, dataclasses.replace(_DB_HEALTHY, label="slow", latency=20.0)),
        )
    elif name == "flapping":
        ml = _alternating(rng, _ML_DOWN, (20.0, 60.0), (40.0, 120.0))
        api = _alternating(rng, _API_STORM, (15.0, 40.0), (30.0, 90.0))
    elif name == "surge":
        api, ml = _surge(rng)
    ml = _merge(ml, _bursts(rng, ml))
    plans = {
        "ml_service": DependencyPlan("ml_service", _ML_HEALTHY, ml),
        "database": DependencyPlan("database", _DB_HEALTHY, database),
        "content_api": DependencyPlan("content_api", _API_HEALTHY, api),
    }
    return Scenario(name, seed, _DESCRIPTIONS[name], MappingProxyType(plans), repeat)
