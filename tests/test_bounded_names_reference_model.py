"""The manager's bounded names (``max_policies``) against a small reference model of README's rules.

README ("A manager keeps at most ``max_policies`` ... idle policies, breakers, bulkheads and rate
limiters alive"): past the cap the least recently used idle ones are evicted, but never an OPEN
breaker, nor the breaker of a call still running in an evicted policy (which that call may
open); a CLOSED breaker holding failures goes only after the idle ones holding none, and only
while more than ``max_policies`` of them are kept; the statistics' ``executions`` count every
policy's calls, evicted ones included.

So, while no more than ``max_policies`` names hold failures at once, the outcome of every call
is the one of a breaker per name that is never lost: the model (:class:`NamesModel`) keeps one
per name (consecutive failures, or OPEN until a time), and a name that churns past the cap
comes back with a breaker as a new one would be only when its own held nothing. Random seeded
sequences of calls (``execute_with_resilience``, its sync twin, ``@resilient``; a config object
kept or built anew per call), with many more names than the cap, and clock steps run through
the model and a real manager side by side: each call's outcome and the executions must agree.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import pytest

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    resilient,
)
from otel_resilience.patterns.circuit_breaker import CircuitState
from otel_resilience.testing import FakeClock

THRESHOLD = 2
OPEN_FOR = 30.0
FAILING = ("f0", "f1")
"""The names whose calls may fail: never more of them than the cap hold failures at once."""
CHURN = tuple(f"c{number}" for number in range(10))
"""Names whose calls succeed, churning past the cap."""


def config(name: str) -> ResilienceConfig:
    return ResilienceConfig(
        name=name,
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=THRESHOLD, timeout=OPEN_FOR, success_threshold=1, half_open_max_calls=1
        ),
    )


@dataclass
class Breaker:
    failures: int = 0
    open_until: float | None = None

    def state(self, now: float) -> CircuitState:
        if self.open_until is None:
            return CircuitState.CLOSED
        return CircuitState.OPEN if now < self.open_until else CircuitState.HALF_OPEN


class NamesModel:
    """One breaker per name, never lost while it holds state; the calls counted."""

    def __init__(self) -> None:
        self.breakers: dict[str, Breaker] = {}
        self.calls = 0

    def call(self, name: str, ok: bool, now: float, inner: list[str] | None = None) -> str:
        breaker = self.breakers.setdefault(name, Breaker())
        self.calls += 1
        state = breaker.state(now)
        if state is CircuitState.OPEN:
            return "rejected"
        for other in inner or ():
            self.call(other, True, now)
        if ok:
            breaker.failures, breaker.open_until = 0, None
            return "ok"
        breaker.failures += 1
        if state is CircuitState.HALF_OPEN or breaker.failures >= THRESHOLD:
            breaker.open_until = now + OPEN_FOR
        return "failed"


def _down() -> None:
    raise ConnectionError("down")


def _fine() -> None:
    return None


class Runner:
    """Runs a call of a name through a manager, the way ``how`` says."""

    def __init__(self, manager: ResilienceManager) -> None:
        self.manager = manager
        self.kept = {name: config(name) for name in (*FAILING, *CHURN)}
        self.decorated: dict[tuple[str, bool], Any] = {}

    def config_of(self, name: str, fresh: bool) -> ResilienceConfig:
        return config(name) if fresh else self.kept[name]

    def sync(self, name: str, ok: bool, fresh: bool, body: Any = None) -> str:
        fn = body or ((lambda: None) if ok else _down)
        try:
            self.manager.execute_with_resilience_sync(fn, self.config_of(name, fresh))
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "failed"
        return "ok"

    def decorated_call(self, name: str, ok: bool) -> str:
        function = self.decorated.get((name, ok))
        if function is None:
            function = resilient(self.kept[name], manager=self.manager)(_fine if ok else _down)
            self.decorated[(name, ok)] = function
        try:
            function()
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "failed"
        return "ok"

    async def run_async(self, name: str, ok: bool, fresh: bool) -> str:
        async def fine() -> None:
            return None

        async def down() -> None:
            raise ConnectionError("down")

        try:
            await self.manager.execute_with_resilience(fine if ok else down, self.config_of(name, fresh))
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "failed"
        return "ok"


def _executions(manager: ResilienceManager) -> int:
    return int(manager.get_resilience_statistics()["executions"]["total"])


@pytest.mark.parametrize("seed", range(10))
async def test_calls_agree_with_the_reference_model(clock: FakeClock, seed: int) -> None:
    """Each call's outcome, whatever churned past the cap meanwhile, and the executions, evicted included."""
    draw = random.Random(seed)
    cap = (2, 3, 4)[seed % 3]
    manager = ResilienceManager(clock=clock, max_policies=cap)
    runner = Runner(manager)
    model = NamesModel()
    for number in range(300):
        roll = draw.random()
        now = clock.now()
        if roll < 0.25:
            clock.advance(draw.choice((1.0, 5.0, 12.0, 31.0)))
            continue
        if roll < 0.6:
            name, ok = draw.choice(FAILING), draw.random() < 0.4
        else:
            name, ok = draw.choice(CHURN), True
        how, fresh = draw.choice(("sync", "async", "decorated", "nested")), draw.random() < 0.5
        where = f"seed {seed} step {number} {how} {name} ok={ok} fresh={fresh}"
        if how == "nested":  # other names churn past the cap while this call runs
            inner = draw.sample(CHURN, draw.randint(1, cap + 2))
            expected = model.call(name, ok, now, inner)

            def body(inner: list[str] = inner, ok: bool = ok) -> None:
                for other in inner:  # churn names: their calls succeed
                    assert runner.sync(other, True, fresh=False) == "ok"
                if not ok:
                    raise ConnectionError("down")

            seen = runner.sync(name, ok, fresh, body)
        elif how == "sync":
            expected = model.call(name, ok, now)
            seen = runner.sync(name, ok, fresh)
        elif how == "async":
            expected = model.call(name, ok, now)
            seen = await runner.run_async(name, ok, fresh)
        else:
            expected = model.call(name, ok, now)
            seen = runner.decorated_call(name, ok)
        assert seen == expected, where
        if number % 25 == 0:
            assert _executions(manager) == model.calls, where
    assert _executions(manager) == model.calls
    limits = manager.get_resilience_statistics()["limits"]
    assert limits["evicted_policies"] > 0  # the names did churn past the cap


def test_a_breaker_opened_by_a_call_running_in_its_evicted_policy_rejects_the_names_next_calls(
    clock: FakeClock,
) -> None:
    """README: "nor the breaker of a call still running in an evicted policy, which that call may
    open". Names churning past the cap evict the policy while its call runs; the call fails and
    opens the breaker; the name's next calls, in a new policy, find that OPEN breaker: no flood."""
    manager = ResilienceManager(clock=clock, max_policies=2)
    runner = Runner(manager)
    one_failure_opens = ResilienceConfig(
        name="x", circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=OPEN_FOR)
    )

    def body() -> None:
        for name in CHURN[:6]:
            assert runner.sync(name, True, fresh=False) == "ok"
        assert all(key[0] != "x" for key, _ in manager._policies.items())  # evicted while it runs
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        manager.execute_with_resilience_sync(body, one_failure_opens)
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            manager.execute_with_resilience_sync(lambda: "through", dataclasses.replace(one_failure_opens))
    clock.advance(OPEN_FOR)
    assert manager.execute_with_resilience_sync(lambda: "probe", one_failure_opens) == "probe"
    assert _executions(manager) == 1 + 6 + 3 + 1


def test_an_evicted_breaker_a_caller_keeps_is_the_one_its_name_finds_again(clock: FakeClock) -> None:
    """An evicted breaker still held elsewhere comes back when its name does (the breakers' store
    revives it): forced OPEN by its holder after the eviction, it rejects the name's calls."""
    manager = ResilienceManager(clock=clock, max_policies=2)
    runner = Runner(manager)
    named = config("held")
    kept = manager.get_circuit_breaker("held", named.circuit_breaker)
    for name in CHURN[:5]:
        runner.sync(name, True, fresh=False)
    assert manager._breakers.get("held") is None  # evicted: idle and CLOSED
    kept.force_open()
    with pytest.raises(CircuitOpenError):
        manager.execute_with_resilience_sync(lambda: "through", named)
    assert manager.get_circuit_breaker("held") is kept
