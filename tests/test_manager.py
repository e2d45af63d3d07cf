"""The manager composes the patterns in one documented order, keeps their state, and counts."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any, ClassVar

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    OperationTimeoutError,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    RetryStrategy,
    get_resilience_manager,
    resilient,
)
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.step import Retry, Step
from otel_resilience.patterns.retry import Jitter
from otel_resilience.testing import FakeClock

_names = itertools.count()


def fresh(prefix: str) -> str:
    """A unique policy name, so tests never share breakers through the process-wide registry."""
    return f"{prefix}-{next(_names)}"


def no_jitter(**kwargs: Any) -> RetryPolicy:
    kwargs.setdefault("jitter", Jitter.NONE)
    return RetryPolicy(**kwargs)


async def call(manager: ResilienceManager, driver: str, config: ResilienceConfig, behaviour: Any) -> Any:
    """Run ``behaviour()`` (a plain function) through the async or the sync driver."""
    if driver == "async":

        async def fn() -> Any:
            return behaviour()

        return await manager.execute_with_resilience(fn, config)
    return manager.execute_with_resilience_sync(behaviour, config)


async def test_spec_example_runs_and_reports_statistics(clock: FakeClock) -> None:
    """The SPEC §1.7 example works as written and statistics have the SPEC shape."""
    resilience_config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=60.0),
        retry_policy=RetryPolicy(max_attempts=3, strategy=RetryStrategy.EXPONENTIAL),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"status": "error"}
        ),
        timeout=30.0,
        bulkhead_config=BulkheadConfig(max_concurrent=10),
        enable_recovery=True,
        name=fresh("spec"),
    )
    manager = ResilienceManager(clock=clock)

    async def process_analysis(content: dict[str, str]) -> dict[str, str]:
        return {"status": "ok", **content}

    result = await manager.execute_with_resilience(process_analysis, resilience_config, {"id": "1"})
    assert result == {"status": "ok", "id": "1"}

    async def broken(content: dict[str, str]) -> dict[str, str]:
        raise ConnectionError(content["id"])

    assert await manager.execute_with_resilience(broken, resilience_config, {"id": "2"}) == {
        "status": "error"
    }
    stats = manager.get_resilience_statistics()
    executions = stats["executions"]
    assert executions["total"] == 2
    assert executions["successful"] == 1
    assert executions["fallback"] == 1
    assert executions["failed"] == 0
    assert executions["success_rate"] == 0.5
    assert executions["availability"] == 1.0
    assert set(stats) >= {"executions", "circuit_breakers", "bulkheads", "error_recovery"}
    assert resilience_config.name in stats["circuit_breakers"]
    assert resilience_config.name in stats["bulkheads"]
    assert "recovery_rate" in stats["error_recovery"]


def test_pipeline_order_is_the_documented_one() -> None:
    """build_pipeline nests fallback > total timeout > recovery > retry > breaker > bulkhead > attempt timeout."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(),
        retry_policy=RetryPolicy(attempt_timeout=1.0),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0),
        timeout=10.0,
        bulkhead_config=BulkheadConfig(),
        enable_recovery=True,
    )
    manager = ResilienceManager()
    pipeline = manager.pipeline_for(config, fresh("order"))
    kinds = [kind for kind, _, _ in pipeline.describe()]
    assert kinds == ["fallback", "timeout", "recovery", "retry", "circuit_breaker", "bulkhead", "timeout"]
    timeouts = [cfg for kind, _, cfg in pipeline.describe() if kind == "timeout"]
    assert len(timeouts) == 2


async def test_fallback_answers_rejections(driver: str, clock: FakeClock) -> None:
    """Fallback is outermost: an open breaker's rejection is answered by the fallback."""
    manager = ResilienceManager(clock=clock)
    name = fresh("fb")
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="cached"),
        name=name,
    )
    calls = []

    def boom() -> str:
        calls.append(1)
        raise ConnectionError

    assert await call(manager, driver, config, boom) == "cached"
    assert await call(manager, driver, config, boom) == "cached"
    assert len(calls) == 1
    breaker = manager.get_circuit_breaker(name)
    assert breaker.get_stats()["total_rejected"] == 1


async def test_total_timeout_bounds_backoffs(driver: str, clock: FakeClock) -> None:
    """Retry never starts a backoff that would end past the total deadline: it gives up early."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        retry_policy=no_jitter(
            max_attempts=5, strategy=RetryStrategy.FIXED, initial_delay=10.0, max_delay=10.0
        ),
        timeout=5.0,
        name=fresh("deadline"),
    )
    calls = []

    def boom() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError, match="down"):
        await call(manager, driver, config, boom)
    assert len(calls) == 1
    assert clock.sleeps == []


async def test_retry_asks_the_breaker_on_every_attempt(driver: str, clock: FakeClock) -> None:
    """Each attempt is counted by the breaker; once it opens, the rejection is not retried."""
    manager = ResilienceManager(clock=clock)
    name = fresh("r-cb")
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=60.0),
        retry_policy=no_jitter(
            max_attempts=5, strategy=RetryStrategy.FIXED, initial_delay=0.1, max_delay=0.1
        ),
        name=name,
    )
    calls = []

    def boom() -> None:
        calls.append(1)
        raise ConnectionError

    with pytest.raises(CircuitOpenError):
        await call(manager, driver, config, boom)
    assert len(calls) == 2
    stats = manager.get_circuit_breaker(name).get_stats()
    assert stats["total_failures"] == 2
    assert stats["total_rejected"] == 1


class ProbeClock(FakeClock):
    """A fake clock that records how many bulkhead slots are busy whenever something sleeps."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.active_during_sleep: list[int] = []
        self.probe: Any = None

    async def sleep(self, seconds: float) -> None:
        self.active_during_sleep.append(self.probe())
        await super().sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        self.active_during_sleep.append(self.probe())
        super().sleep_sync(seconds)


async def test_bulkhead_slot_is_not_held_during_backoff(driver: str) -> None:
    """The bulkhead is inside retry: no slot is held while backing off."""
    clock = ProbeClock()
    manager = ResilienceManager(clock=clock)
    name = fresh("bh")
    config = ResilienceConfig(
        retry_policy=no_jitter(
            max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=1.0, max_delay=1.0
        ),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        name=name,
    )
    bulkhead = manager.get_bulkhead(name, config.bulkhead_config)
    clock.probe = lambda: bulkhead.get_stats()["active"]
    attempts = iter([ConnectionError(), ConnectionError(), None])

    def flaky() -> str:
        error = next(attempts)
        if error is not None:
            raise error
        return "ok"

    assert await call(manager, driver, config, flaky) == "ok"
    assert clock.active_during_sleep == [0, 0]
    assert bulkhead.get_stats()["active"] == 0


async def test_hung_attempt_counts_as_breaker_failure() -> None:
    """The per-attempt timeout is innermost, so a hung attempt is a failure the breaker counts."""
    manager = ResilienceManager()
    name = fresh("hung")
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0),
        retry_policy=no_jitter(max_attempts=1, attempt_timeout=0.05),
        name=name,
    )

    async def hang() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(OperationTimeoutError) as info:
        await manager.execute_with_resilience(hang, config)
    assert info.value.scope == "attempt"
    stats = manager.get_circuit_breaker(name).get_stats()
    assert stats["total_failures"] == 1
    assert stats["state"] == "open"


async def test_total_timeout_cancels_a_hung_call() -> None:
    """ResilienceConfig.timeout bounds the whole execution and raises OperationTimeoutError('total')."""
    manager = ResilienceManager()
    config = ResilienceConfig(timeout=0.05, name=fresh("total"))

    async def hang() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(OperationTimeoutError) as info:
        await manager.execute_with_resilience(hang, config)
    assert info.value.scope == "total"
    assert manager.get_resilience_statistics()["executions"]["timeouts"] == 1


async def test_recovery_rules_apply_when_enabled(clock: FakeClock) -> None:
    """With enable_recovery the manager's recovery system retries by rule and counts a recovery."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.5)
    )
    config = ResilienceConfig(enable_recovery=True, name=fresh("rec"))
    outcomes = iter([ConnectionError(), None])

    async def flaky() -> str:
        error = next(outcomes)
        if error is not None:
            raise error
        return "ok"

    assert await manager.execute_with_resilience(flaky, config) == "ok"
    stats = manager.get_resilience_statistics()
    assert stats["error_recovery"]["successful_recoveries"] == 1
    assert stats["executions"]["successful_after_failure"] == 1


def _multiplying(clock: FakeClock, cap: int | None) -> tuple[ResilienceManager, ResilienceConfig]:
    """A manager and config whose request may call the dependency 3 x (1 + 2) times: retry x recovery."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    config = ResilienceConfig(
        name=fresh("multiplied"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=60.0),
        retry_policy=no_jitter(max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=0.0),
        enable_recovery=True,
        max_attempts_total=cap,
    )
    return manager, config


async def test_max_attempts_total_caps_the_calls_retry_and_recovery_multiply(
    driver: str, clock: FakeClock
) -> None:
    """One failing request trips a failure_threshold=5 breaker alone (5 calls); max_attempts_total=4 stops at 4."""
    manager, config = _multiplying(clock, None)
    calls = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError(f"down {len(calls)}")

    with pytest.raises(CircuitOpenError):
        await call(manager, driver, config, down)
    assert len(calls) == 5
    assert manager.get_circuit_breaker(config.name or "").state is CircuitState.OPEN

    manager, config = _multiplying(clock, 4)
    calls.clear()
    with pytest.raises(ConnectionError, match="down 4") as info:
        await call(manager, driver, config, down)
    assert len(calls) == 4
    assert any("max_attempts_total" in note for note in info.value.__notes__)
    assert manager.get_circuit_breaker(config.name or "").state is CircuitState.CLOSED
    stats = manager.get_resilience_statistics()
    assert stats["error_recovery"]["failed_recoveries"] == 1
    assert stats["policies"][config.name or ""]["failed"] == 1


async def test_max_attempts_total_counts_hedges_with_retry_attempts(clock: FakeClock) -> None:
    """The cap counts hedges too: 3 retry attempts x 2 hedged attempts stop at max_attempts_total=5."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name=fresh("hedged-cap"),
        hedging=HedgingConfig(max_attempts=2, mode="fallback"),
        retry_policy=no_jitter(max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=0.0),
        max_attempts_total=5,
    )
    calls = []

    async def down() -> None:
        calls.append(1)
        raise ConnectionError(f"down {len(calls)}")

    with pytest.raises(ConnectionError):
        await manager.execute_with_resilience(down, config)
    assert len(calls) == 5
    uncapped = dataclasses.replace(config, name=fresh("hedged-uncapped"), max_attempts_total=None)
    calls.clear()
    with pytest.raises(ConnectionError):
        await manager.execute_with_resilience(down, uncapped)
    assert len(calls) == 6


async def test_breakers_and_bulkheads_are_reused_by_name(clock: FakeClock) -> None:
    """Two configs naming the same breaker share its state; a conflicting config is refused."""
    manager = ResilienceManager(clock=clock)
    shared = fresh("shared")
    a = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1), circuit_breaker_name=shared
    )
    b = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1), circuit_breaker_name=shared
    )

    async def boom() -> None:
        raise ConnectionError

    async def ok() -> str:
        return "ok"

    with pytest.raises(ConnectionError):
        await manager.execute_with_resilience(boom, a)
    with pytest.raises(CircuitOpenError):
        await manager.execute_with_resilience(ok, b)
    conflicting = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=9), circuit_breaker_name=shared
    )
    with pytest.raises(ValueError, match="different config"):
        await manager.execute_with_resilience(ok, conflicting)


async def test_rate_settings_written_at_their_defaults_share_the_windowed_breaker(clock: FakeClock) -> None:
    """Two policies naming one breaker, one writing a window's rate defaults out: the same config."""
    manager = ResilienceManager(clock=clock)
    shared = fresh("windowed")
    unset = CircuitBreakerConfig(sliding_window=CountWindow(20))
    written = CircuitBreakerConfig(
        sliding_window=CountWindow(20),
        failure_rate_threshold=0.5,
        minimum_calls=10,
    )

    async def ok() -> str:
        return "ok"

    for config in (unset, written):
        policy = ResilienceConfig(circuit_breaker=config, circuit_breaker_name=shared)
        assert await manager.execute_with_resilience(ok, policy) == "ok"
    assert manager.get_circuit_breaker(shared).config == unset


async def test_policy_name_defaults_to_function_name() -> None:
    """Without a name, the policy is named after the function's qualified name."""
    manager = ResilienceManager()

    async def fetch_profile() -> int:
        return 1

    await manager.execute_with_resilience(fetch_profile, ResilienceConfig())
    policies = manager.get_resilience_statistics()["policies"]
    assert any(name.endswith("fetch_profile") for name in policies)


async def test_resilient_decorator_on_async_and_sync(clock: FakeClock) -> None:
    """@resilient picks the driver at decoration time and keeps the function usable."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=-1),
        name=fresh("deco"),
    )

    @resilient(config, manager=manager)
    async def divide(a: int, b: int) -> float:
        return a / b

    @resilient(config, manager=manager)
    def divide_sync(a: int, b: int) -> float:
        return a / b

    assert await divide(6, 3) == 2
    assert await divide(1, 0) == -1
    assert divide_sync(6, 3) == 2
    assert divide_sync(1, 0) == -1
    assert divide.__name__ == "divide"


def test_process_wide_manager_is_a_singleton() -> None:
    """get_resilience_manager returns the same instance every time."""
    assert get_resilience_manager() is get_resilience_manager()


async def test_identity_cache_is_bounded_and_equal_configs_share_one_policy() -> None:
    """Configs built per call stay within the identity cache's limit and count in one policy."""
    manager = ResilienceManager(max_pipelines=4)

    async def ok() -> int:
        return 1

    for _ in range(20):
        await manager.execute_with_resilience(ok, ResilienceConfig(name="same"))
    assert len(manager._by_id) <= 4
    assert manager.get_resilience_statistics()["policies"]["same"]["total"] == 20


async def test_non_callable_and_bad_config_are_type_errors() -> None:
    """A non-callable target or a non-config is refused before anything runs."""
    manager = ResilienceManager()
    with pytest.raises(TypeError, match="fn must be callable"):
        await manager.execute_with_resilience(3, ResilienceConfig())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="config must be a ResilienceConfig"):

        async def ok() -> int:
            return 1

        await manager.execute_with_resilience(ok, {"timeout": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn must be callable"):
        manager.execute_with_resilience_sync(None, ResilienceConfig())  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"timeout": "30"}, TypeError, "timeout"),
        ({"circuit_breaker": {"failure_threshold": 5}}, TypeError, "circuit_breaker"),
        ({"retry_policy": 3}, TypeError, "retry_policy"),
        ({"fallback_config": "default"}, TypeError, "fallback_config"),
        ({"bulkhead_config": 10}, TypeError, "bulkhead_config"),
        ({"enable_recovery": 1}, TypeError, "enable_recovery"),
        ({"name": ""}, ValueError, "name"),
        ({"circuit_breaker_name": 5}, TypeError, "circuit_breaker_name"),
        ({"spans": "yes"}, TypeError, "spans"),
        ({"max_attempts_total": 0}, ValueError, "max_attempts_total"),
        ({"max_attempts_total": -3}, ValueError, "max_attempts_total"),
        ({"max_attempts_total": 2.0}, TypeError, "max_attempts_total"),
        ({"max_attempts_total": True}, TypeError, "max_attempts_total"),
        (
            {"timeout": 1.0, "retry_policy": RetryPolicy(attempt_timeout=2.0)},
            ValueError,
            "retry_policy.attempt_timeout",
        ),
    ],
)
def test_bad_resilience_config(kwargs: dict[str, Any], error: type[Exception], field: str) -> None:
    """Every bad ResilienceConfig field raises at construction, naming the field."""
    with pytest.raises(error, match=rf"ResilienceConfig\.{field}"):
        ResilienceConfig(**kwargs)


@pytest.mark.parametrize(
    ("name_field", "pattern_field", "pattern"),
    [
        ("circuit_breaker_name", "circuit_breaker", CircuitBreakerConfig()),
        ("bulkhead_name", "bulkhead_config", BulkheadConfig()),
    ],
)
def test_a_breaker_or_bulkhead_name_without_its_pattern_is_refused(
    name_field: str, pattern_field: str, pattern: object
) -> None:
    """A name for a breaker (bulkhead) the config does not have would be ignored: refused, naming it.

    ``ResilienceConfig(name="orders", circuit_breaker_name="db")`` was taken, and its calls went
    through while the ``"db"`` breaker another policy shares was OPEN: the policy had no breaker.
    """
    rule = rf"ResilienceConfig\.{name_field} must be None unless {pattern_field} is set, got 'db'"
    with pytest.raises(ValueError, match=rule):
        ResilienceConfig(name="orders", **{name_field: "db"})
    config = ResilienceConfig(name="users", **{name_field: "db", pattern_field: pattern})
    with pytest.raises(ValueError, match=rule):
        dataclasses.replace(config, **{pattern_field: None})
    assert ResilienceManager().execute_with_resilience_sync(lambda: "ok", config) == "ok"


class _RerunsWhileTheCapAllows(Step):
    """An extra link that re-runs a failed call while the execution's cap in total allows another."""

    kind: ClassVar[str] = "reruns"

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Any:
        return Retry(0.0, token) if ctx.next_attempt() is not None else None


def test_a_cap_in_total_nothing_can_read_is_refused() -> None:
    """``max_attempts_total`` caps the further calls of retry, hedging, recovery (and of an extra
    link, which may take attempts through ``ctx.next_attempt()``): with none of them it was
    taken and ignored, the execution making its one call whatever the cap. Refused, naming it;
    an extra link that reads it keeps it (its re-runs stop at the cap)."""
    rule = (
        r"ResilienceConfig\.max_attempts_total must be None unless retry_policy, hedging, "
        r"enable_recovery or extra_strategies is set .*, got 3"
    )
    with pytest.raises(ValueError, match=rule):
        ResilienceConfig(name="capped", max_attempts_total=3, circuit_breaker=CircuitBreakerConfig())
    retried = ResilienceConfig(name="capped", max_attempts_total=3, retry_policy=RetryPolicy(max_attempts=2))
    with pytest.raises(ValueError, match=rule):
        dataclasses.replace(retried, retry_policy=None)
    for readers in (
        {"hedging": HedgingConfig(max_attempts=2, mode="fallback")},
        {"enable_recovery": True},
        {"extra_strategies": [ExtraStrategy(lambda _: _RerunsWhileTheCapAllows(), inside="fallback")]},
    ):
        assert ResilienceConfig(max_attempts_total=3, **readers).max_attempts_total == 3
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise ConnectionError(f"down {len(calls)}")

    config = ResilienceConfig(
        name=fresh("capped-extra"),
        max_attempts_total=3,
        extra_strategies=[ExtraStrategy(lambda _: _RerunsWhileTheCapAllows(), inside="fallback")],
    )
    with pytest.raises(ConnectionError, match="down 3"):
        ResilienceManager().execute_with_resilience_sync(down, config)
    assert len(calls) == 3


def test_bad_manager_argument() -> None:
    """max_pipelines must be a positive int."""
    with pytest.raises(ValueError, match=r"ResilienceManager\.max_pipelines"):
        ResilienceManager(max_pipelines=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"recovery_system": "rules"}, "recovery_system"),
        ({"alert_system": 1}, "alert_system"),
        ({"clock": "now"}, "clock"),
    ],
)
def test_bad_manager_parts_are_refused_at_construction_naming_the_field(
    kwargs: dict[str, Any], field: str
) -> None:
    """A recovery system, alert system or clock of the wrong type is a TypeError naming the field.

    A wrong recovery or alert system was taken silently and failed later, with an AttributeError
    from the first call or statistics read; a wrong clock was reported as ErrorRecoverySystem's.
    """
    with pytest.raises(TypeError, match=rf"^ResilienceManager\.{field} must be"):
        ResilienceManager(**kwargs)


@pytest.mark.parametrize(
    ("name", "error"),
    [("", ValueError), ("   ", ValueError), ("x" * 300, ValueError), (None, TypeError), (3, TypeError)],
)
def test_pipeline_for_refuses_a_bad_name_naming_its_argument(name: object, error: type[Exception]) -> None:
    """An empty name was refused naming ``PipelineBuilder.name``, an internal class; a long one was cut."""
    manager = ResilienceManager()
    with pytest.raises(error, match=r"^ResilienceManager\.pipeline_for\.name must be"):
        manager.pipeline_for(ResilienceConfig(), name)  # type: ignore[arg-type]
    assert manager.get_resilience_statistics()["limits"]["policies"] == 0


def test_resilient_refuses_a_manager_that_is_not_one_when_it_decorates() -> None:
    """``manager=`` is checked at decoration, not at the first call (an AttributeError there)."""
    with pytest.raises(TypeError, match=r"^resilient\.manager must be a ResilienceManager or None"):
        resilient(ResilienceConfig(), manager="default")  # type: ignore[arg-type]


def test_resilient_written_without_parentheses_says_how_to_write_it() -> None:
    """``@resilient`` above a function (no call) says to write ``@resilient()``."""

    def fetch() -> int:
        return 1

    with pytest.raises(TypeError, match=r"resilient\.config must be a ResilienceConfig.*@resilient\(\)"):
        resilient(fetch)  # type: ignore[arg-type]


async def test_a_config_subclass_names_its_policy_in_every_way_to_run_a_call() -> None:
    """A subclass of ResilienceConfig names its policy with ``name`` for the manager as for @resilient.

    ``execute_with_resilience`` (and its sync twin) read ``name`` only from a ResilienceConfig
    itself, and named a subclass's policy after the function.
    """

    @dataclasses.dataclass(frozen=True, slots=True)
    class ServiceConfig(ResilienceConfig):
        pass

    manager = ResilienceManager()
    config = ServiceConfig(name="inventory")

    async def stock() -> int:
        return 7

    def stock_sync() -> int:
        return 7

    assert await manager.execute_with_resilience(stock, config) == 7
    assert manager.execute_with_resilience_sync(stock_sync, config) == 7
    assert resilient(config, manager=manager)(stock_sync)() == 7
    assert list(manager.get_resilience_statistics()["policies"]) == ["inventory"]
    assert manager.get_resilience_statistics()["policies"]["inventory"]["total"] == 3


async def test_resilient_finds_its_pipeline_again_after_eviction(driver: str) -> None:
    """A decorated function whose policy was evicted runs in a new one, and no count is lost."""
    manager = ResilienceManager(max_policies=1)

    def one() -> int:
        return 1

    async def one_async() -> int:
        return 1

    first_sync = resilient(ResilienceConfig(name="first"), manager=manager)(one)
    first_async = resilient(ResilienceConfig(name="first"), manager=manager)(one_async)

    async def first() -> int:
        return first_sync() if driver == "sync" else await first_async()

    assert await first() == 1
    assert await first() == 1
    old = manager.pipeline_for(ResilienceConfig(name="first"), "first")
    for other in ("second", "third"):  # the first look spares a used policy once; the second evicts it
        manager.execute_with_resilience_sync(one, ResilienceConfig(name=other))
    assert manager.get_resilience_statistics()["limits"]["evicted_policies"] >= 1
    assert await first() == 1
    assert manager.pipeline_for(ResilienceConfig(name="first"), "first") is not old
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 5
    assert await first() == 1
    assert manager.get_resilience_statistics()["executions"]["total"] == 6


def test_resilient_refuses_an_async_generator_function_when_it_decorates() -> None:
    """@resilient refuses an async generator function at decoration, before any call could count it."""

    async def stream() -> Any:
        yield 1

    with pytest.raises(TypeError, match="async generator"):
        resilient(ResilienceConfig(name="stream"))(stream)


def test_a_manager_s_repr_says_what_it_keeps() -> None:
    """The repr counts the live policies against the cap, the named ones, breakers and bulkheads."""
    manager = ResilienceManager(max_policies=8)
    assert (
        repr(manager) == "ResilienceManager(policies=0/8, named_policies=0, circuit_breakers=0, bulkheads=0)"
    )
    config = ResilienceConfig(
        name="repr", circuit_breaker=CircuitBreakerConfig(), bulkhead_config=BulkheadConfig(max_concurrent=1)
    )
    manager.execute_with_resilience_sync(lambda: 1, config)
    manager.policy("named", ResilienceConfig())
    assert (
        repr(manager) == "ResilienceManager(policies=1/8, named_policies=1, circuit_breakers=1, bulkheads=1)"
    )


class _ClaimedBetweenReads:
    """A bulkhead's counts where one queued call takes its slot right after the first count read:
    ``waiting`` 1 -> 0 and ``active`` 0 -> 1, as a waiter's claim does under the bulkhead's lock."""

    def __init__(self) -> None:
        self._counts = {"waiting": 1, "active": 0}
        self._read = False

    def __getattr__(self, name: str) -> int:
        value = self._counts[name]
        if not self._read:
            self._read = True
            self._counts = {"waiting": 0, "active": 1}
        return value


def test_a_bulkhead_whose_queued_call_takes_its_slot_while_looked_at_is_not_idle() -> None:
    """The manager reads a bulkhead's counts without its lock: a queued call that moves from
    ``waiting`` to ``active`` between the two reads is seen in one of them (never evicted busy)."""
    from collections import Counter  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from otel_resilience.manager import core as manager_core  # noqa: PLC0415

    bulkhead = SimpleNamespace(name="busy", stats=_ClaimedBetweenReads())
    assert not manager_core._bulkhead_idle(Counter(), bulkhead)  # type: ignore[arg-type]
    policy = SimpleNamespace(
        pipeline=SimpleNamespace(stats=SimpleNamespace(total=0)),
        seen_total=0,
        breaker=None,
        bulkhead=SimpleNamespace(stats=_ClaimedBetweenReads()),
    )
    assert not manager_core._policy_idle(policy)  # type: ignore[arg-type]
