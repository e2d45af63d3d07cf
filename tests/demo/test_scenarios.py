"""The fault schedules and the simulated dependencies: deterministic, seeded, as documented."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.demo.faults import build_faults
from otel_resilience.demo.scenarios import CYCLE, DB_TAIL, DEPENDENCIES, SURGE_LOAD, build_scenario
from otel_resilience.demo.services import (
    MemoryCache,
    QueryError,
    ServiceUnavailableError,
    SimulatedDependency,
    TransientServiceError,
)


def _labels(name: str, seed: int) -> list[tuple[str, str]]:
    scenario = build_scenario(name, seed)
    return [
        (dep, scenario.state(dep, t / 2).condition.label)
        for dep in DEPENDENCIES
        for t in range(int(CYCLE * 2))
    ]


@pytest.mark.parametrize("name", ["steady", "outage", "brownout", "flapping", "surge"])
def test_same_seed_gives_the_same_schedule(name: str) -> None:
    """Building a scenario twice from one seed gives identical windows."""
    first = build_scenario(name, 11)
    second = build_scenario(name, 11)
    assert all(first.windows(dep) == second.windows(dep) for dep in DEPENDENCIES)


def test_another_seed_gives_another_schedule() -> None:
    """The seed moves the fault windows."""
    assert build_scenario("outage", 1).windows("ml_service") != build_scenario("outage", 2).windows(
        "ml_service"
    )
    assert _labels("flapping", 1) != _labels("flapping", 2)


def test_outage_takes_the_ml_service_down_and_back() -> None:
    """In `outage` the ML service is down from t = 60 s for 240-330 s, then healthy again."""
    scenario = build_scenario("outage", 7)
    down = [w for w in scenario.windows("ml_service") if w.condition.down]
    assert len(down) == 1
    window = down[0]
    assert window.start == 60.0
    assert 300.0 <= window.end <= 390.0
    assert scenario.state("ml_service", 59.0).condition.label == "healthy"
    assert scenario.state("ml_service", 61.0).condition.down
    assert not scenario.state("ml_service", window.end + 1).condition.failing
    assert scenario.recoveries("ml_service", CYCLE) == [window.end]
    assert scenario.windows("database") == ()


def test_brownout_latency_climbs_past_the_database_timeout() -> None:
    """In `brownout` the database median latency ramps from 40 ms past 10 s, holds at 20 s, recovers."""
    scenario = build_scenario("brownout", 7)
    ramp, hold = scenario.windows("database")
    assert scenario.state("database", 59.0).latency == pytest.approx(0.04)
    assert scenario.state("database", ramp.start).latency == pytest.approx(0.04)
    assert scenario.state("database", (ramp.start + ramp.end) / 2).latency == pytest.approx(10.02, rel=1e-3)
    assert scenario.state("database", hold.start + 1).latency == 20.0
    assert scenario.state("database", hold.end + 1).condition.label == "healthy"
    assert not any(w.condition.down for w in scenario.windows("ml_service"))


def test_flapping_alternates_faults_and_ends_the_cycle_healthy() -> None:
    """In `flapping` the ML service goes down and up repeatedly and the API has storms."""
    scenario = build_scenario("flapping", 7)
    downs = [w for w in scenario.windows("ml_service") if w.condition.down]
    storms = [w for w in scenario.windows("content_api") if w.condition.label == "storm"]
    assert len(downs) >= 3
    assert len(storms) >= 3
    assert all(w.end <= CYCLE - 60.0 for w in downs + storms)
    assert len(scenario.recoveries("ml_service", CYCLE)) == len(downs)


@pytest.mark.parametrize("seed", [1, 7, 42])
def test_surge_floods_content_api_then_strains_both_budgeted_dependencies(seed: int) -> None:
    """In `surge` a noisy caller adds load to content_api from t = 60 s; both dependencies fail partly, then recover."""
    scenario = build_scenario("surge", seed)
    flooded, strained = scenario.windows("content_api")
    assert (flooded.condition.label, strained.condition.label) == ("flooded", "strained")
    assert flooded.start == 60.0
    assert flooded.end == strained.start
    assert 105.0 <= strained.start <= 135.0
    assert 450.0 <= strained.end <= 510.0
    assert flooded.condition.extra_load == strained.condition.extra_load == SURGE_LOAD
    assert flooded.condition.error_rate < 0.05 < strained.condition.error_rate < 0.5
    (ml,) = [w for w in scenario.windows("ml_service") if w.condition.label == "strained"]
    assert (ml.start, ml.end) == (strained.start, strained.end)
    assert ml.condition.extra_load == 0.0
    assert 0.2 <= ml.condition.error_rate < 0.5  # strained, not down: retries and the budget are what act
    assert not any(
        w.condition.label == "burst" and w.start < ml.end and w.end > ml.start
        for w in scenario.windows("ml_service")
    )
    assert scenario.state("content_api", 59.0).condition.extra_load == 0.0
    assert scenario.state("content_api", strained.end + 1).condition.label == "healthy"
    assert scenario.windows("database") == ()
    for dep in DEPENDENCIES:  # nothing is down or failing: no breaker recovery to measure
        assert scenario.recoveries(dep, CYCLE) == []
    labels = [label for _, label in scenario.changes("content_api", 0.0, CYCLE)]
    assert labels == ["flooded", "strained", "healthy"]
    once = build_scenario("surge", seed, repeat=False)
    assert once.state("content_api", CYCLE + 200.0).condition.extra_load == 0.0
    assert scenario.state("content_api", CYCLE + 200.0).condition.extra_load == SURGE_LOAD


def test_the_docs_give_the_surge_flood_the_length_it_has() -> None:
    """Where the README or the docs say how many minutes `surge` floods content_api, the schedule agrees.

    The flood runs from t = 60 s to the end of the strain, 390 to 450 s later whatever the seed.
    """
    lengths = []
    for seed in range(300):
        _, strained = build_scenario("surge", seed).windows("content_api")
        lengths.append(strained.end - 60.0)
    assert 390.0 <= min(lengths) < 400.0
    assert 440.0 < max(lengths) <= 450.0
    root = Path(__file__).resolve().parents[2]
    stated = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = " ".join(path.read_text(encoding="utf-8").split())
        for found in re.finditer(r"(\d+(?:\.\d+)?)(?:-| to )(\d+(?:\.\d+)?) minutes", text):
            if "surge" in text[max(0, found.start() - 300) : found.start()]:
                stated.append((path.name, float(found.group(1)) * 60, float(found.group(2)) * 60))
    assert stated, "no document gives the surge flood's length in minutes"
    assert [entry for entry in stated if entry[1:] != (390.0, 450.0)] == []


def test_steady_has_only_bursts_that_retries_absorb() -> None:
    """In `steady` nothing is down or failing; the ML service only has short bursts."""
    scenario = build_scenario("steady", 7)
    for dep in DEPENDENCIES:
        assert not any(w.condition.failing for w in scenario.windows(dep))
        assert scenario.recoveries(dep, 10 * CYCLE) == []
    bursts = scenario.windows("ml_service")
    assert bursts
    assert all(w.condition.label == "burst" and w.end - w.start <= 4.0 for w in bursts)


def test_the_schedule_repeats_every_cycle() -> None:
    """The state at t and at t + one cycle are the same, and recoveries repeat."""
    scenario = build_scenario("flapping", 3)
    for t in range(0, int(CYCLE), 7):
        assert scenario.state("ml_service", t) == scenario.state("ml_service", t + CYCLE)
    once = scenario.recoveries("ml_service", CYCLE)
    twice = scenario.recoveries("ml_service", 2 * CYCLE)
    assert twice == once + [t + CYCLE for t in once]


def test_a_scenario_played_once_keeps_only_the_bursts_afterwards() -> None:
    """With repeat=False the faults happen in the first cycle only; the ML bursts go on."""
    once = build_scenario("outage", 7, repeat=False)
    assert once.state("ml_service", 61.0).condition.down
    assert not once.state("ml_service", CYCLE + 61.0).condition.down
    assert len(once.recoveries("ml_service", 3 * CYCLE)) == 1
    later = [label for _, label in once.changes("ml_service", CYCLE, 2 * CYCLE)]
    assert later
    assert set(later) == {"burst", "healthy"}
    brownout = build_scenario("brownout", 7, repeat=False)
    assert brownout.state("database", CYCLE + 250.0).condition.label == "healthy"


@pytest.mark.parametrize(("name", "repeat"), [("flapping", True), ("outage", False), ("steady", True)])
def test_next_recovery_walks_the_recoveries_one_by_one(name: str, repeat: bool) -> None:
    """`next_recovery` gives each recovery `recoveries` lists, in turn, then `None` for good; a
    late `after` reads the schedule at once (the demo's summary walks it as a run goes on)."""
    scenario = build_scenario(name, 3, repeat=repeat)
    for dependency in DEPENDENCIES:
        walked: list[float] = []
        at = scenario.next_recovery(dependency, -1.0)
        while at is not None and at <= 5 * CYCLE:
            walked.append(at)
            at = scenario.next_recovery(dependency, at)
        assert walked == scenario.recoveries(dependency, 5 * CYCLE)
    first = scenario.recoveries("ml_service", CYCLE)
    late = scenario.next_recovery("ml_service", 10_000 * CYCLE)
    assert late == (10_000 * CYCLE + first[0] if repeat and first else None)


def test_changes_report_every_boundary_exactly_once() -> None:
    """`changes` lists each condition change between two polls, even when polled coarsely."""
    scenario = build_scenario("outage", 7)
    fine = [c for t in range(2 * int(CYCLE)) for c in scenario.changes("ml_service", t, t + 1)]
    coarse = scenario.changes("ml_service", 0.0, 2 * CYCLE)
    assert fine == coarse
    labels = [label for _, label in coarse]
    assert labels.count("down") == 2
    assert "healthy" in labels
    assert scenario.changes("ml_service", 100.0, 100.0) == []


def test_an_unknown_scenario_is_refused() -> None:
    """`build_scenario` names the scenarios when given an unknown one."""
    with pytest.raises(ValueError, match=r"unknown scenario 'nope'; choose one of steady, outage"):
        build_scenario("nope", 1)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _through_chaos(name: str, scenario: Any, dependency: SimulatedDependency, scale: float) -> Any:
    """Call ``dependency`` through a policy holding only its chaos links (the demo's faults)."""
    faults = build_faults(name, scenario, dependency.condition, seed=1, time_scale=scale)
    config = ResilienceConfig(name=name, chaos=faults.baseline, extra_strategies=faults.strategies())
    manager = ResilienceManager()

    async def call(request: int) -> Any:
        return await manager.execute_with_resilience(dependency.call, config, request)

    return call


async def test_a_down_dependency_refuses_connections() -> None:
    """While its window says down, its chaos link refuses every call (ServiceUnavailableError, a
    ConnectionError noted as injected); the dependency is not called."""
    clock = _Clock()
    scenario = build_scenario("outage", 7)
    ml = SimulatedDependency("ml_service", scenario, seed=1, time_scale=0.001, start=100.0, clock=clock)
    call = _through_chaos("ml_service", scenario, ml, 0.001)
    answers = [await call(i) for i in range(20)]
    assert all(isinstance(answer, dict) for answer in answers[:10])  # 1 % errors: none in 20 (seeded)
    clock.now = 100.0 + 61.0 * 0.001
    with pytest.raises(ServiceUnavailableError, match="connection refused") as caught:
        await call(21)
    assert isinstance(caught.value, ConnectionError)
    assert any("injected by chaos 'ml_service.down'" in note for note in caught.value.__notes__)
    assert ml.calls == 20


async def test_dependencies_fail_with_their_own_error_types() -> None:
    """The database's chaos injects QueryError and the others' TransientServiceError, at their error rates."""
    clock = _Clock()
    scenario = build_scenario("flapping", 7)
    storm = next(w for w in scenario.windows("content_api") if w.condition.label == "storm")
    clock.now = 100.0 + (storm.start + 1) * 0.0001
    api = SimulatedDependency("content_api", scenario, seed=1, time_scale=0.0001, start=100.0, clock=clock)
    call = _through_chaos("content_api", scenario, api, 0.0001)
    api_errors = await asyncio.gather(*(call(i) for i in range(200)), return_exceptions=True)
    failed = [e for e in api_errors if isinstance(e, Exception)]
    assert all(isinstance(e, TransientServiceError) for e in failed)
    assert 80 <= len(failed) <= 160  # a 60 % storm
    brownout = build_scenario("brownout", 7)
    database = SimulatedDependency("database", brownout, seed=5, time_scale=0.0001, start=100.0, clock=clock)
    query = _through_chaos("database", brownout, database, 0.0001)
    results = await asyncio.gather(*(query(i) for i in range(4000)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors  # 0.2 % of 4000 calls
    assert all(isinstance(e, QueryError) and not isinstance(e, ConnectionError) for e in errors)
    assert all(isinstance(r, list) for r in results if not isinstance(r, Exception))


@pytest.mark.parametrize("name", ["steady", "outage", "brownout", "flapping", "surge"])
def test_exactly_one_chaos_link_of_a_dependency_is_on_at_any_moment(name: str) -> None:
    """Every condition of the schedule maps to one link (the baseline or one named after the condition)."""
    scenario = build_scenario(name, 3)
    now = [0.0]
    for dependency in DEPENDENCIES:

        def condition(dependency: str = dependency) -> Any:
            return scenario.state(dependency, now[0]).condition

        faults = build_faults(dependency, scenario, condition, seed=3, time_scale=1.0)
        assert faults.baseline is not None
        predicates = [faults.baseline.enabled, *(chaos.config.enabled for _, chaos in faults.extra)]
        labels = {label for label, _ in faults.extra}
        assert labels <= {w.condition.label for w in scenario.windows(dependency)}
        for t in range(0, int(2 * CYCLE), 3):
            now[0] = float(t)
            assert sum(bool(p(None)) for p in predicates) == 1, (dependency, t)  # type: ignore[operator]


def test_the_links_inject_what_the_schedule_says() -> None:
    """Rates, faults and delays of each link: the ML service's 1 % / 40 % bursts / refused connections, and
    the database's heavy tail (5 % of calls 1 s slower, scaled) beside its 0.2 % errors."""
    scenario = build_scenario("outage", 7)
    ml = build_faults(
        "ml_service", scenario, lambda: scenario.plans["ml_service"].baseline, seed=7, time_scale=0.5
    )
    assert ml.baseline is not None
    assert (ml.baseline.fault_rate, ml.baseline.latency_rate) == (0.01, 0.0)
    extra = {label: chaos.config for label, chaos in ml.extra}
    assert set(extra) == {"down", "burst"}
    assert (extra["burst"].fault_rate, extra["burst"].fault.__class__) == (0.4, TransientServiceError)
    down = extra["down"]
    assert (down.fault_rate, down.latency_rate, down.latency) == (1.0, 1.0, pytest.approx(0.0025))
    assert isinstance(down.fault, ServiceUnavailableError)
    db = build_faults(
        "database", scenario, lambda: scenario.plans["database"].baseline, seed=7, time_scale=0.5
    )
    assert db.baseline is not None
    assert (db.baseline.fault_rate, db.baseline.latency_rate, db.baseline.latency) == (0.002, DB_TAIL[0], 0.5)
    assert isinstance(db.baseline.fault, QueryError)
    assert db.extra == ()
    again = build_faults(
        "ml_service", scenario, lambda: scenario.plans["ml_service"].baseline, seed=7, time_scale=0.5
    )
    other = build_faults(
        "ml_service", scenario, lambda: scenario.plans["ml_service"].baseline, seed=8, time_scale=0.5
    )
    assert again.baseline is not None
    assert other.baseline is not None
    assert again.baseline.seed == ml.baseline.seed != other.baseline.seed


def test_the_memory_cache_misses_with_none() -> None:
    """The cached fallback's cache returns None on a miss, as the CacheService protocol allows."""
    cache = MemoryCache()
    assert cache.get("k") is None
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
