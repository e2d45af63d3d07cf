"""ResilienceConfig(chaos=...): innermost, so that every other pattern reacts to it as to the dependency."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from otel_resilience import (
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    ChaosSwitch,
    CircuitBreakerConfig,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    Jitter,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    resilient,
)
from otel_resilience.engine.step import Step
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.testing import FakeClock

_ids = itertools.count()


def retry(attempts: int = 3, **policy: Any) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, initial_delay=0.0, jitter=Jitter.NONE, **policy)


def kinds(manager: ResilienceManager, config: ResilienceConfig) -> list[str]:
    return [kind for kind, _, _ in manager.pipeline_for(config, config.name or "x").describe()]


def chaos_stats(manager: ResilienceManager, config: ResilienceConfig) -> dict[str, Any]:
    """The counts of the policy's chaos link (its innermost link)."""
    link = manager.pipeline_for(config, config.name or "x").strategies[-1]
    assert link.kind == "chaos"
    return dict(link.get_stats())  # type: ignore[attr-defined]


async def run(manager: ResilienceManager, driver: str, config: ResilienceConfig, calls: list[str]) -> Any:
    """One execution of a dependency that records its calls, through either driver."""

    def dependency() -> str:
        calls.append("called")
        return "real"

    if driver == "sync":
        return manager.execute_with_resilience_sync(dependency, config)

    async def dependency_async() -> str:
        return dependency()

    return await manager.execute_with_resilience(dependency_async, config)


def test_chaos_is_innermost_inside_the_attempt_timeout() -> None:
    """Every pattern of the policy sits outside the chaos link; the attempt timeout just outside it."""
    config = ResilienceConfig(
        name=f"order-{next(_ids)}",
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=None),
        timeout=10.0,
        retry_policy=retry(attempt_timeout=1.0),
        circuit_breaker=CircuitBreakerConfig(),
        bulkhead_config=BulkheadConfig(),
        chaos=ChaosConfig(fault_rate=0.1, fault=ConnectionError),
    )
    assert kinds(ResilienceManager(), config) == [
        "fallback",
        "timeout",
        "retry",
        "circuit_breaker",
        "bulkhead",
        "timeout",
        "chaos",
    ]


@pytest.mark.parametrize(
    "chaos",
    [
        ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=False),
        ChaosConfig(fault=ConnectionError),
        ChaosConfig(),
    ],
    ids=["disabled", "rates-zero", "default"],
)
def test_a_config_that_can_never_inject_adds_no_link(chaos: ChaosConfig) -> None:
    """Zero cost when chaos cannot happen: the policy has no chaos link at all."""
    config = ResilienceConfig(name=f"quiet-{next(_ids)}", retry_policy=retry(), chaos=chaos)
    assert kinds(ResilienceManager(), config) == ["retry"]


def test_a_switched_off_config_keeps_its_link_to_be_switched_on() -> None:
    """A switch (or predicate) may turn on later: the link is there, idle."""
    config = ResilienceConfig(
        name=f"idle-{next(_ids)}", chaos=ChaosConfig(fault_rate=1.0, fault=OSError, enabled=ChaosSwitch())
    )
    assert kinds(ResilienceManager(), config) == ["chaos"]


async def test_a_chaos_instance_placed_outside_the_retry_injects_a_fault_that_is_not_retried(
    driver: str,
) -> None:
    """``ExtraStrategy(chaos.as_strategy, outside="retry")``: one injection per execution, not retried."""
    manager, calls = ResilienceManager(), []
    chaos = Chaos(f"outer-{next(_ids)}", ChaosConfig(fault_rate=1.0, fault=ConnectionError))
    config = ResilienceConfig(
        name=f"placed-{next(_ids)}",
        retry_policy=retry(3),
        extra_strategies=(ExtraStrategy(chaos.as_strategy, outside="retry"),),
    )
    assert kinds(manager, config) == ["chaos", "retry"]
    with pytest.raises(ConnectionError):
        await run(manager, driver, config, calls)
    assert calls == []
    stats = chaos.get_stats()
    assert (stats["runs"], stats["faults"]) == (1, 1)


async def test_an_injected_fault_is_retried_counted_by_the_breaker_and_answered_by_the_fallback(
    driver: str,
) -> None:
    """Every attempt fails by chaos: retry tries 3 times, the breaker counts 3 failures, the fallback answers."""
    manager, calls = ResilienceManager(), []
    config = ResilienceConfig(
        name=f"drilled-{next(_ids)}",
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
        retry_policy=retry(3),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError),
    )
    assert await run(manager, driver, config, calls) == "degraded"
    assert calls == []
    breaker = manager.get_circuit_breaker(config.name or "")
    assert breaker.get_stats()["total_failures"] == 3
    assert chaos_stats(manager, config)["faults"] == 3
    assert manager.get_resilience_statistics()["policies"][config.name]["fallback"] == 1


async def test_seeded_faults_are_recovered_by_retry(driver: str) -> None:
    """Half the attempts fail by chaos: every execution succeeds, some only after a retry."""
    manager, calls = ResilienceManager(), []
    config = ResilienceConfig(
        name=f"recovering-{next(_ids)}",
        retry_policy=retry(8),
        chaos=ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=2024),
    )
    assert [await run(manager, driver, config, calls) for _ in range(20)] == ["real"] * 20
    counts = manager.get_resilience_statistics()["policies"][config.name]
    stats = chaos_stats(manager, config)
    assert 0 < counts["successful_after_failure"] < 20
    assert stats["runs"] == stats["faults"] + len(calls)
    assert len(calls) == 20


async def test_an_injected_result_is_judged_like_a_real_one(driver: str) -> None:
    """A fake result the retry does not accept is retried; the dependency is never called."""
    manager, calls = ResilienceManager(), []
    config = ResilienceConfig(
        name=f"fake-{next(_ids)}",
        retry_policy=retry(3, retry_on_result=lambda result: result == "fake"),
        chaos=ChaosConfig(outcome_rate=1.0, outcome="fake"),
    )
    assert await run(manager, driver, config, calls) == "fake"
    assert calls == []
    assert chaos_stats(manager, config)["outcomes"] == 3


class GateClock(FakeClock):
    """A fake clock whose async sleep lasts until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.gate = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await self.gate.wait()


async def test_an_injected_delay_holds_the_bulkhead_slot_like_a_slow_call() -> None:
    """During the delay the slot is taken: a second call finds the bulkhead full (and waits)."""
    clock = GateClock()
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name=f"slot-{next(_ids)}",
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=5),
        chaos=ChaosConfig(latency_rate=1.0, latency=30.0),
    )

    async def dependency() -> str:
        return "real"

    first = asyncio.create_task(manager.execute_with_resilience(dependency, config))
    while not clock.sleeps:
        await asyncio.sleep(0)
    bulkhead = manager.get_bulkhead(config.name or "")
    assert (bulkhead.stats.active, bulkhead.stats.waiting) == (1, 0)
    second = asyncio.create_task(manager.execute_with_resilience(dependency, config))
    await asyncio.sleep(0)
    assert bulkhead.stats.waiting == 1
    clock.gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), 10.0) == ["real", "real"]


def test_the_attempt_timeout_cuts_an_injected_delay_in_a_thread(clock: FakeClock) -> None:
    """Each attempt's delay ends at its attempt deadline; the breaker counts the timeouts; retry retries."""
    manager, calls = ResilienceManager(clock=clock), []
    config = ResilienceConfig(
        name=f"cut-{next(_ids)}",
        retry_policy=retry(3, attempt_timeout=1.0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        chaos=ChaosConfig(latency_rate=1.0, latency=60.0),
    )
    with pytest.raises(OperationTimeoutError) as caught:
        manager.execute_with_resilience_sync(lambda: calls.append("called"), config)
    assert (caught.value.scope, caught.value.timeout) == ("attempt", 1.0)
    assert (clock.sleeps, calls) == ([1.0, 1.0, 1.0], [])
    assert manager.get_circuit_breaker(config.name or "").get_stats()["total_failures"] == 3
    assert manager.get_resilience_statistics()["policies"][config.name]["timeouts"] == 1


def test_the_total_timeout_cuts_the_delay_of_the_last_attempt_in_a_thread(clock: FakeClock) -> None:
    """Attempts of 1 s against a 2.5 s total: the third delay ends at the total deadline, which raises."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name=f"total-{next(_ids)}",
        timeout=2.5,
        retry_policy=retry(5, attempt_timeout=1.0),
        chaos=ChaosConfig(latency_rate=1.0, latency=60.0),
    )
    with pytest.raises(OperationTimeoutError) as caught:
        manager.execute_with_resilience_sync(lambda: "real", config)
    assert (caught.value.scope, caught.value.timeout) == ("total", 2.5)
    assert clock.sleeps == [1.0, 1.0, 0.5]
    assert clock.now() == 1002.5


async def test_the_attempt_timeout_cuts_an_injected_delay_on_the_loop() -> None:
    """The async attempt deadline cancels the 60 s delay: two attempts time out within bounds."""
    manager = ResilienceManager()
    config = ResilienceConfig(
        name=f"cut-async-{next(_ids)}",
        retry_policy=retry(2, attempt_timeout=0.05),
        chaos=ChaosConfig(latency_rate=1.0, latency=60.0),
    )

    async def dependency() -> str:
        return "real"

    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as caught:
        await manager.execute_with_resilience(dependency, config)
    assert time.monotonic() - started < 10.0
    assert caught.value.scope == "attempt"
    assert chaos_stats(manager, config)["latencies"] == 2


async def test_a_switch_flips_the_policy_without_rebuilding_it(driver: str) -> None:
    """The same pipeline injects while the switch is on and not while it is off."""
    manager, calls, switch = ResilienceManager(), [], ChaosSwitch()
    config = ResilienceConfig(
        name=f"switched-{next(_ids)}", chaos=ChaosConfig(outcome_rate=1.0, outcome="drill", enabled=switch)
    )
    pipeline = manager.pipeline_for(config, config.name or "")
    assert await run(manager, driver, config, calls) == "real"
    switch.enable()
    assert await run(manager, driver, config, calls) == "drill"
    switch.disable()
    assert await run(manager, driver, config, calls) == "real"
    assert manager.pipeline_for(config, config.name or "") is pipeline
    same = ResilienceConfig(
        name=config.name, chaos=ChaosConfig(outcome_rate=1.0, outcome="drill", enabled=switch)
    )
    assert manager.pipeline_for(same, config.name or "") is pipeline


async def test_resilient_functions_run_chaos_in_both_drivers() -> None:
    """@resilient: the decorated sync and async functions get the injected results."""
    manager = ResilienceManager()
    config = ResilienceConfig(name=f"decorated-{next(_ids)}", chaos=ChaosConfig(outcome_rate=1.0, outcome=7))

    @resilient(config, manager=manager)
    def compute() -> int:
        return 1

    @resilient(config, manager=manager)
    async def compute_async() -> int:
        return 1

    assert (compute(), await compute_async()) == (7, 7)
    assert chaos_stats(manager, config)["outcomes"] == 2


def test_the_field_is_type_checked() -> None:
    with pytest.raises(TypeError, match=r"ResilienceConfig\.chaos must be a ChaosConfig or None"):
        ResilienceConfig(chaos={"fault_rate": 0.1})  # type: ignore[arg-type]


def keyed_outcomes(keys: list[str], seed: int, *, max_keys: int = 1000) -> list[bool]:
    """Whether each call (one per item of ``keys``, in order) failed by chaos, in a fresh manager's keyed policy."""
    manager = ResilienceManager(alert_system=AlertSystem(name=f"chaos-keys-{next(_ids)}"))
    try:
        config = ResilienceConfig(chaos=ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=seed))
        policy = manager.policy(f"keyed-{next(_ids)}", config, max_keys=max_keys)
        failed = []
        for key in keys:
            try:
                policy.for_key(key).execute_sync(lambda: "real")
            except ConnectionError:
                failed.append(True)
            else:
                failed.append(False)
        return failed
    finally:
        manager.alert_system.close()


def test_a_seeded_fault_rate_is_the_share_of_failed_runs_across_keys() -> None:
    """The keys' links draw from the policy's generator: about half of 400 keys fail, not all or none."""
    keys = [f"tenant-{index}" for index in range(400)]
    outcomes = keyed_outcomes(keys, seed=7)
    assert 140 <= sum(outcomes) <= 260  # 0.5 of 400 within 6 standard deviations (10 each)
    assert outcomes == keyed_outcomes(keys, seed=7)  # a seeded drill replays
    assert outcomes != keyed_outcomes(keys, seed=8)


def test_a_key_made_again_after_its_eviction_does_not_replay_its_first_draws() -> None:
    """One key kept: each call evicts the other key and makes its own again, still about half fail."""
    outcomes = keyed_outcomes(["a", "b"] * 100, seed=3, max_keys=1)
    assert 60 <= sum(outcomes) <= 140  # 0.5 of 200 within 6 standard deviations (7 each)


def failures(run: Callable[[], object], runs: int) -> list[bool]:
    """Whether each of ``runs`` calls of ``run`` failed by chaos."""
    failed = []
    for _ in range(runs):
        try:
            run()
        except ConnectionError:
            failed.append(True)
        else:
            failed.append(False)
    return failed


def test_an_extra_strategys_chaos_draws_from_the_policys_generator_after_a_reload_too() -> None:
    """A Chaos an extra strategy's factory makes per key shares the policy's generator when a reload makes it again.

    The drill goes on where it was (the seed's sequence over the policy's runs), as a key's
    first build made it: it does not start the seed's sequence over at the reload.
    """
    drill = ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=13)
    made: list[Chaos] = []

    def per_key(policy: str) -> Step:
        made.append(Chaos(f"{policy}-drill", drill))
        return made[-1].as_strategy(policy)

    manager = ResilienceManager(alert_system=AlertSystem(name=f"chaos-extra-{next(_ids)}"))
    try:
        name = f"extra-chaos-{next(_ids)}"
        config = ResilienceConfig(extra_strategies=(ExtraStrategy(per_key, rank=900),))
        view = manager.policy(name, config).for_key("tenant")
        before = failures(lambda: view.execute_sync(lambda: "real"), 32)
        manager.reconfigure(name, dataclasses.replace(config, record_duration=False))
        after = failures(lambda: view.execute_sync(lambda: "real"), 32)
    finally:
        manager.alert_system.close()
    assert len(made) >= 2  # the key's first build, and the reload's
    alone = Chaos("alone", drill)
    assert before + after == failures(lambda: alone.call_sync(lambda: "real"), 64)


def test_the_generators_of_the_seeds_reloads_left_behind_are_released() -> None:
    """1000 reloads, each with a seed of its own: the policy keeps the generator of the seed in use only.

    The seed in use goes on drawing where it was: the same runs fail as in a policy that was
    never reloaded.
    """
    manager = ResilienceManager(alert_system=AlertSystem(name=f"chaos-reseeded-{next(_ids)}"))
    try:
        name = f"reseeded-{next(_ids)}"
        policy = manager.policy(
            name, ResilienceConfig(chaos=ChaosConfig(fault_rate=0.5, fault=ConnectionError))
        )
        view = policy.for_key("tenant")
        for seed in range(1000):
            manager.reconfigure(
                name, ResilienceConfig(chaos=ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=seed))
            )
            failures(lambda: view.execute_sync(lambda: "real"), 1)
        gc.collect()
        assert len(policy._spec.draws._draws) == 1  # type: ignore[attr-defined]
        kept = failures(lambda: view.execute_sync(lambda: "real"), 32)
    finally:
        manager.alert_system.close()
    alone = Chaos("alone", ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=999))
    # Its first run is the loop's last one.
    assert failures(lambda: alone.call_sync(lambda: "real"), 33)[1:] == kept


def test_the_generators_of_evicted_keys_with_seeds_of_their_own_are_released() -> None:
    """An extra strategy that seeds each key's Chaos anew: 1000 keys through 4 slots keep a few generators."""
    seeds = itertools.count()

    def per_key(policy: str) -> Step:
        return Chaos(
            f"{policy}-drill", ChaosConfig(fault_rate=0.5, fault=ConnectionError, seed=next(seeds))
        ).as_strategy(policy)

    manager = ResilienceManager(alert_system=AlertSystem(name=f"chaos-key-seeds-{next(_ids)}"))
    try:
        config = ResilienceConfig(extra_strategies=(ExtraStrategy(per_key, rank=900),))
        policy = manager.policy(f"key-seeds-{next(_ids)}", config, max_keys=4)
        for key in range(1000):
            failures(lambda key=key: policy.for_key(f"tenant-{key}").execute_sync(lambda: "real"), 1)
        gc.collect()
        assert next(seeds) > 1000  # a Chaos (and a seed) per key
        assert len(policy._spec.draws._draws) <= 8  # type: ignore[attr-defined]
    finally:
        manager.alert_system.close()


def test_a_broken_drill_is_logged_once_per_policy_not_once_per_key(caplog: pytest.LogCaptureFixture) -> None:
    """Each key's chaos link is made anew (and again when evicted): they share the policy's one warning.

    A predicate that raises, in a policy whose 300 keys cycle through 4 slots, logged a warning
    with its traceback for every key made (301 of them), each saying it was logged once.
    """

    def broken(ctx: Any) -> bool:
        raise RuntimeError("bug in the drill's predicate")

    manager = ResilienceManager(alert_system=AlertSystem(name=f"chaos-broken-{next(_ids)}"))
    try:
        config = ResilienceConfig(chaos=ChaosConfig(fault_rate=0.5, fault=ConnectionError, enabled=broken))
        policy = manager.policy(f"broken-drill-{next(_ids)}", config, max_keys=4)
        with caplog.at_level(logging.WARNING, logger="otel_resilience.chaos"):
            for key in range(300):
                assert policy.for_key(f"tenant-{key}").execute_sync(lambda: "real") == "real"
            assert policy.execute_sync(lambda: "real") == "real"
    finally:
        manager.alert_system.close()
    logged = [record for record in caplog.records if "enabled predicate failed" in record.getMessage()]
    assert len(logged) == 1
