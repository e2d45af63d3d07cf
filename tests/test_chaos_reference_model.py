"""Chaos against a reference model of its documented rules, over seeded random scenarios.

The model reads ``ChaosConfig``'s docstrings and the README ("Chaos injection", the stage order),
and nothing of the code:

* a run is judged only while the instance is on and ``enabled`` says yes (a predicate is asked
  before any draw); then one draw for the delay (when ``latency_rate > 0``: delayed when it is
  below ``latency_rate``), then one draw shared by fault and result (when either rate is above 0:
  a fault below ``fault_rate``, else a result below ``fault_rate + outcome_rate``), from a
  ``random.Random(seed)``;
* a fault is a new exception each time (the class instantiated, a copy of the instance, what the
  factory returns) with one note saying chaos injected it; a result is the value itself, or what
  the factory returns; the dependency is not called for either;
* the delay comes first, on the link's clock;
* ``get_stats()`` counts runs, faults, latencies and outcomes; each injection is one
  ``CHAOS_INJECTED`` event (kind, error type, delay);
* in a policy the link is innermost: retry retries an injected fault (and a result it retries),
  the breaker counts each attempt, the attempt (or total) timeout cuts an injected delay (sync: the
  thread sleeps until the deadline; async deadlines fire in real time, so only sync runs model
  them on the fake clock), the fallback answers what is left.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from otel_resilience import (
    Chaos,
    ChaosConfig,
    ChaosSwitch,
    CircuitBreakerConfig,
    CircuitOpenError,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    Jitter,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.events import Event
from otel_resilience.testing import EventRecorder, FakeClock

_ids = itertools.count()
NOTE = "injected by chaos"
RATES = (0.0, 0.0, 0.25, 0.5, 1.0)


class Drill(ConnectionError):
    """The injected fault."""


class Down(ConnectionError):
    """A failure of the real dependency."""


SHARED_FAULT = Drill("shared instance")


@dataclass
class Scenario:
    """One random chaos config and what the test does around it."""

    fault_rate: float
    latency_rate: float
    latency: float
    outcome_rate: float
    fault_mode: str  # class, instance or factory
    outcome_mode: str  # value or factory
    gate: str  # always, predicate or switch
    seed: int
    made: list[Any] = field(default_factory=list)  # what the factories made, in order

    def config(self, gate: Any) -> ChaosConfig:
        fault: Any = {"class": Drill, "instance": SHARED_FAULT, "factory": self._make_fault}[self.fault_mode]
        outcome: Any = self._make_outcome if self.outcome_mode == "factory" else OUTCOME
        return ChaosConfig(
            fault_rate=self.fault_rate,
            fault=fault,
            latency_rate=self.latency_rate,
            latency=self.latency,
            outcome_rate=self.outcome_rate,
            outcome=outcome,
            enabled=gate,
            seed=self.seed,
        )

    def _make_fault(self) -> Exception:
        error = Drill(f"made {len(self.made)}")
        self.made.append(error)
        return error

    def _make_outcome(self) -> Any:
        value = {"fake": len(self.made)}
        self.made.append(value)
        return value


OUTCOME = {"fake": "value"}


def random_scenario(rng: random.Random) -> Scenario:
    fault_rate = rng.choice((*RATES, rng.random()))
    outcome_rate = rng.choice((0.0, 0.0, 1.0 - fault_rate, (1.0 - fault_rate) * rng.random()))
    latency_rate = rng.choice((*RATES, rng.random()))
    if fault_rate + latency_rate + outcome_rate == 0:
        fault_rate = 0.5
    return Scenario(
        fault_rate=fault_rate,
        latency_rate=latency_rate,
        latency=rng.choice((0.5, 2.0, 7.0)),
        outcome_rate=outcome_rate,
        fault_mode=rng.choice(("class", "instance", "factory")),
        outcome_mode=rng.choice(("value", "factory")),
        gate=rng.choice(("always", "predicate", "switch", "flaky")),
        seed=rng.randrange(2**32),
    )


class ChaosModel:
    """The documented rule of one chaos instance: what each run gets, and the counts."""

    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.rng = random.Random(scenario.seed)
        self.stats = {"runs": 0, "faults": 0, "latencies": 0, "outcomes": 0}

    def run(self, judged: bool) -> tuple[float, str]:
        """Return the delay and ``fault``, ``outcome`` or ``call`` for one run."""
        s, stats = self.s, self.stats
        stats["runs"] += 1
        if not judged:
            return 0.0, "call"
        delay = 0.0
        if s.latency_rate > 0 and self.rng.random() < s.latency_rate:
            delay = s.latency
            stats["latencies"] += 1
        kind = "call"
        if s.fault_rate > 0 or s.outcome_rate > 0:
            roll = self.rng.random()
            if roll < s.fault_rate:
                kind = "fault"
            elif roll < s.fault_rate + s.outcome_rate:
                kind = "outcome"
        return delay, kind

    def injected(self, kind: str) -> None:
        """Count the fault or result a run drew, once its delay (if any) passed: a timeout may cut it first."""
        if kind != "call":
            self.stats[kind + "s"] += 1


def injected_events(recorder: EventRecorder, name: str) -> list[tuple[str, str | None, float | None]]:
    return [
        (args.kind, args.error_type, args.delay)
        for source, event, args in recorder.events
        if event is Event.CHAOS_INJECTED and source.name == name
    ]


def expected_events(delay: float, kind: str) -> list[tuple[str, str | None, float | None]]:
    events: list[tuple[str, str | None, float | None]] = []
    if delay:
        events.append(("latency", None, delay))
    if kind == "fault":
        events.append(("fault", f"{Drill.__module__}.{Drill.__qualname__}", None))
    elif kind == "outcome":
        events.append(("outcome", None, None))
    return events


def check_fault(error: BaseException, scenario: Scenario, name: str) -> None:
    assert type(error) is Drill
    notes = [note for note in getattr(error, "__notes__", []) if NOTE in note]
    assert len(notes) == 1, notes
    assert f"{NOTE} {name!r}" in notes[0]
    if scenario.fault_mode == "instance":
        assert error is not SHARED_FAULT
        assert error.args == SHARED_FAULT.args
    elif scenario.fault_mode == "factory":
        assert error is scenario.made[-1]


def check_outcome(result: Any, scenario: Scenario) -> None:
    if scenario.outcome_mode == "value":
        assert result is OUTCOME
    else:
        assert result is scenario.made[-1]


async def run_standalone(scenario: Scenario, rng: random.Random, runs: int) -> None:
    """Runs through one ``Chaos`` instance, each compared with the model's."""
    clock = FakeClock(1000.0)
    switch = ChaosSwitch(on=True)
    gate: Any = {
        "always": True,
        "predicate": lambda ctx: ctx.args[0] % 3 != 0,
        "switch": switch,
        "flaky": flaky,
    }[scenario.gate]
    name = f"model-{next(_ids)}"
    chaos = Chaos(name, scenario.config(gate), clock=clock)
    model = ChaosModel(scenario)
    calls: list[int] = []
    errors = 0

    def dependency(i: int) -> str:
        calls.append(i)
        return f"real {i}"

    async def dependency_async(i: int) -> str:
        return dependency(i)

    with EventRecorder() as recorder:
        for i in range(runs):
            if scenario.gate == "switch" and rng.random() < 0.2:
                switch.on = not switch.on
            if rng.random() < 0.1:
                chaos.enabled = not chaos.enabled
            judged = (
                chaos.enabled
                and {
                    "always": True,
                    "predicate": i % 3 != 0,
                    "switch": switch.on,
                    "flaky": i % 5 != 0,
                }[scenario.gate]
            )
            errors += chaos.enabled and scenario.gate == "flaky" and i % 5 == 0
            delay, kind = model.run(judged)
            model.injected(kind)
            before, made = clock.now(), len(scenario.made)
            recorder.events.clear()
            try:
                if rng.random() < 0.5:
                    result = chaos.call_sync(dependency, i)
                else:
                    result = await chaos.call(dependency_async, i)
            except Drill as error:
                assert kind == "fault", (i, delay, kind)
                check_fault(error, scenario, name)
            else:
                if kind == "outcome":
                    check_outcome(result, scenario)
                else:
                    assert kind == "call", (i, kind)
                    assert result == f"real {i}"
            assert (calls[-1:] == [i]) is (kind == "call"), (i, kind)
            assert clock.now() - before == delay, (i, delay)
            made_now = len(scenario.made) - made
            factory_kind = "fault" if scenario.fault_mode == "factory" else None
            outcome_kind = "outcome" if scenario.outcome_mode == "factory" else None
            assert made_now == (1 if kind in {factory_kind, outcome_kind} else 0), (i, kind)
            assert injected_events(recorder, name) == expected_events(delay, kind), (i, delay, kind)
    stats = chaos.get_stats()
    assert {key: stats[key] for key in model.stats} == model.stats
    assert stats["errors"] == errors  # a predicate that raised said no, counted


def flaky(ctx: Any) -> bool:
    """A predicate that raises for every fifth call: that run is not injected, and counted in ``errors``."""
    if ctx.args[0] % 5 == 0:
        raise LookupError(ctx.args[0])
    return True


@pytest.mark.parametrize("seed", range(40))
async def test_a_chaos_instance_injects_as_the_model_says(seed: int) -> None:
    """Every run of a random seeded scenario gets the model's delay and injection; the counts agree."""
    rng = random.Random(seed)
    await run_standalone(random_scenario(rng), rng, runs=120)


# --- in a policy -------------------------------------------------------------------------------


@dataclass
class BreakerModel:
    """A consecutive-failure breaker, probes one at a time, ``success_threshold=1``."""

    threshold: int
    timeout: float
    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0
    total_failures: int = 0

    def admits(self, now: float) -> bool:
        if self.state == "open":
            if now < self.opened_at + self.timeout:
                return False
            self.state = "half_open"
        return True

    def record(self, failed: bool, now: float) -> None:
        if failed:
            self.total_failures += 1
            self.failures += 1
            if self.state == "half_open" or self.failures >= self.threshold:
                self.state, self.opened_at, self.failures = "open", now, 0
        else:
            self.state, self.failures = "closed", 0


def policy_config(
    name: str,
    scenario: Scenario,
    *,
    gate: Any,
    max_attempts: int,
    attempt_timeout: float | None,
    total: float | None,
    breaker: BreakerModel,
) -> ResilienceConfig:
    """The policy of a scenario, made anew at each call: equal configs are one policy."""
    return ResilienceConfig(
        name=name,
        timeout=total,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
        retry_policy=RetryPolicy(
            max_attempts=max_attempts,
            initial_delay=0.0,
            jitter=Jitter.NONE,
            attempt_timeout=attempt_timeout,
            retry_on_result=RETRIED,
        ),
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=breaker.threshold, success_threshold=1, timeout=breaker.timeout
        ),
        chaos=scenario.config(gate),
    )


def RETRIED(result: Any) -> bool:
    """Retry an injected result."""
    return result is OUTCOME


def SECOND_ATTEMPT_SPARED(ctx: Any) -> bool:
    """Inject on every attempt but the second, in calls whose argument is not 1 modulo 4."""
    return bool(ctx.attempt != 2 and ctx.args[0] % 4 != 1)


async def run_policy(seed: int, driver: str, keyed: bool) -> ChaosModel:
    """Executions of a random policy around a chaos link, each compared with the model's answer."""
    rng = random.Random(seed)
    scenario = random_scenario(rng)
    scenario.gate = rng.choice(("always", "predicate"))  # in a policy: a predicate of the attempt
    scenario.outcome_mode = "value"
    max_attempts = rng.randint(1, 4)
    attempt_timeout = rng.choice((None, 1.0, 5.0)) if driver == "sync" else None
    totals = [t for t in (None, 3.0, 8.0) if t is None or attempt_timeout is None or attempt_timeout < t]
    total = random.Random(seed).choice(totals) if driver == "sync" else None  # async: a real-time deadline
    threshold = rng.randint(2, 6)
    keys = ("a", "b", "c") if keyed else (None,)
    breakers = {key: BreakerModel(threshold=threshold, timeout=30.0) for key in keys}
    real_failure_rate = rng.choice((0.0, 0.3))
    clock = FakeClock(1000.0)
    manager = ResilienceManager(clock=clock)
    gate: Any = True if scenario.gate == "always" else SECOND_ATTEMPT_SPARED
    name = f"policy-model-{next(_ids)}"

    def make() -> ResilienceConfig:
        return policy_config(
            name,
            scenario,
            gate=gate,
            max_attempts=max_attempts,
            attempt_timeout=attempt_timeout,
            total=total,
            breaker=breakers[keys[0]],
        )

    policy = manager.policy(name, make()) if keyed else None
    model = ChaosModel(scenario)
    calls: list[int] = []
    script = random.Random(seed)

    def dependency(i: int) -> str:
        calls.append(i)
        if script.random() < real_failure_rate:
            raise Down(i)
        return f"real {i}"

    async def dependency_async(i: int) -> str:
        return dependency(i)

    expected_calls: list[int] = []
    for i in range(60):
        if rng.random() < 0.15:
            clock.advance(rng.choice((5.0, 31.0)))
        if policy is not None and i == 30:  # a reload: the same seed goes on, another starts its own
            reloaded = random_scenario(rng)
            reloaded.made, reloaded.gate, reloaded.outcome_mode = scenario.made, scenario.gate, "value"
            if rng.random() < 0.5:
                reloaded.seed = scenario.seed
            else:
                model.rng = random.Random(reloaded.seed)
            scenario = model.s = reloaded
            manager.reconfigure(name, make())
        key = rng.choice(keys)
        breaker = breakers[key]
        answer: Any = None
        peek = random.Random()
        peek.setstate(script.getstate())
        now = clock.now()  # the model's time, ahead of the call: each attempt's delay passes on it
        deadline = math.inf if total is None else now + total
        for attempt in range(1, max_attempts + 1):
            if not breaker.admits(now):
                answer = "degraded"  # CircuitOpenError is not retried; the fallback answers it
                break
            delay, kind = model.run(scenario.gate == "always" or (attempt != 2 and i % 4 != 1))
            cut = min(math.inf if attempt_timeout is None else attempt_timeout, deadline - now)
            if delay >= cut:  # the delay cut at the nearer deadline: nothing injected after it
                clock_delay, outcome = cut, "failure"
            elif kind == "fault":
                model.injected(kind)
                clock_delay, outcome = delay, "failure"
            elif kind == "outcome":
                model.injected(kind)
                clock_delay, outcome = delay, "retried result"
            else:
                clock_delay = delay
                expected_calls.append(i)
                outcome = "failure" if peek.random() < real_failure_rate else "success"
            now += clock_delay
            breaker.record(outcome == "failure", now)
            if outcome == "success":
                answer = f"real {i}"
                break
            answer = OUTCOME if outcome == "retried result" else "degraded"
            if now >= deadline:  # the total timeout raised (no retry past it): the fallback answers
                answer = "degraded"
                break
        if policy is not None:
            view = policy.for_key(key)
            if driver == "sync":
                result = view.execute_sync(dependency, i)
            else:
                result = await view.execute(dependency_async, i)
        elif driver == "sync":
            result = manager.execute_with_resilience_sync(dependency, make(), i)
        else:
            result = await manager.execute_with_resilience(dependency_async, make(), i)
        assert result == answer, (i, key, scenario, max_attempts, attempt_timeout, total)
        assert calls == expected_calls, i
        assert clock.now() == now, i
    if policy is not None:
        totals = policy.get_stats()  # each pattern's counts summed over the keys
        chaos = totals["chaos"]
        assert chaos is not None
        assert {key: chaos[key] for key in model.stats} == model.stats  # type: ignore[literal-required]
        assert totals["circuit_breaker"] is not None
        failures = sum(breaker.total_failures for breaker in breakers.values())
        assert totals["circuit_breaker"]["total_failures"] == failures
    else:
        chaos_link = manager.pipeline_for(make(), name).strategies[-1]
        assert chaos_link.kind == "chaos"
        stats = chaos_link.get_stats()  # type: ignore[attr-defined]
        assert {key: stats[key] for key in model.stats} == model.stats
        assert (
            manager.get_circuit_breaker(name).get_stats()["total_failures"] == breakers[None].total_failures
        )
    return model


@pytest.mark.parametrize("seed", range(30))
async def test_a_policy_reacts_to_chaos_as_the_model_says(seed: int, driver: str) -> None:
    """Retry, breaker, attempt timeout (sync) and fallback around the chaos link, execution by execution."""
    with EventRecorder() as recorder:
        model = await run_policy(1000 + seed, driver, keyed=False)
    kinds = [args.kind for _, event, args in recorder.events if event is Event.CHAOS_INJECTED]
    assert [kinds.count(kind) for kind in ("fault", "latency", "outcome")] == [
        model.stats["faults"],
        model.stats["latencies"],
        model.stats["outcomes"],
    ]


@pytest.mark.parametrize("seed", range(20))
async def test_a_keyed_policy_draws_from_one_generator_as_the_model_says(seed: int, driver: str) -> None:
    """A key's breaker is its own; the chaos draws are the policy's, whatever the keys."""
    await run_policy(2000 + seed, driver, keyed=True)


def test_the_models_breaker_opens_on_injected_faults() -> None:
    """The scenario the model relies on: injected faults open the breaker, which the fallback answers."""
    clock = FakeClock(1000.0)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name=f"opens-{next(_ids)}",
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0),
        chaos=ChaosConfig(fault_rate=1.0, fault=Drill),
    )
    assert [manager.execute_with_resilience_sync(lambda: "real", config) for _ in range(3)] == [
        "degraded"
    ] * 3
    stats = manager.get_circuit_breaker(config.name or "").get_stats()
    assert (stats["total_failures"], stats["total_rejected"]) == (2, 1)
    direct = ResilienceConfig(
        name=f"direct-{next(_ids)}", circuit_breaker=config.circuit_breaker, chaos=config.chaos
    )
    for _ in range(2):
        with pytest.raises(Drill):
            manager.execute_with_resilience_sync(lambda: "real", direct)
    with pytest.raises(CircuitOpenError):
        manager.execute_with_resilience_sync(lambda: "real", direct)


@pytest.mark.parametrize("seed", range(20))
async def test_a_chaos_instance_inside_the_policys_chaos_is_reached_only_through_it(
    seed: int, driver: str
) -> None:
    """Two links in series (``ExtraStrategy(chaos.as_strategy, inside="chaos")``): each draws from its own
    generator, and the inner one judges only the runs the outer one let through to the call."""
    rng = random.Random(3000 + seed)
    outer, inner = random_scenario(rng), random_scenario(rng)
    outer.gate = inner.gate = "always"
    clock = FakeClock(1000.0)
    manager = ResilienceManager(clock=clock)
    condition = Chaos(f"condition-{next(_ids)}", inner.config(True), clock=clock)
    config = ResilienceConfig(
        name=f"series-{next(_ids)}",
        chaos=outer.config(True),
        extra_strategies=(ExtraStrategy(condition.as_strategy, inside="chaos"),),
    )
    outer_model, inner_model = ChaosModel(outer), ChaosModel(inner)
    calls: list[int] = []

    def dependency(i: int) -> str:
        calls.append(i)
        return f"real {i}"

    async def dependency_async(i: int) -> str:
        return dependency(i)

    for i in range(80):
        delay, kind = outer_model.run(judged=True)
        outer_model.injected(kind)
        injecting = outer
        if kind == "call":
            inner_delay, kind = inner_model.run(judged=True)
            inner_model.injected(kind)
            delay += inner_delay
            injecting = inner
        start = clock.now()
        try:
            if driver == "sync":
                result = manager.execute_with_resilience_sync(dependency, config, i)
            else:
                result = await manager.execute_with_resilience(dependency_async, config, i)
        except Drill as error:
            assert kind == "fault", i
            check_fault(error, injecting, condition.name if injecting is inner else config.name or "")
        else:
            if kind == "outcome":
                check_outcome(result, injecting)
            else:
                assert (kind, result) == ("call", f"real {i}"), i
        assert (calls[-1:] == [i]) is (kind == "call"), i
        assert clock.now() - start == delay, i
    stats = condition.get_stats()
    assert {key: stats[key] for key in inner_model.stats} == inner_model.stats
