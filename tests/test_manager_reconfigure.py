"""Changing a named policy while it runs: in-flight calls keep their config, state carries over, refusals change nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import threading

import pytest
from otel_support import Otel
from support import freed_on_a_closed_loop, until_sync

from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitBreakerConfig,
    CircuitOpenError,
    CountWindow,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    Jitter,
    PolicyHandle,
    RateLimitedError,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    RetryStrategy,
)
from otel_resilience.config import loads
from otel_resilience.engine.events import Event, PolicyReloaded, ReloadFailed
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.step import Step
from otel_resilience.manager.keyed import KeyState
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitState
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder, FakeClock


def fallback(value: str, **more: object) -> ResilienceConfig:
    return ResilienceConfig(
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=value), **more
    )


def boom() -> None:
    raise ConnectionError("down")


async def test_calls_in_flight_finish_under_their_config_and_new_calls_use_the_new_one(
    manager: ResilienceManager,
) -> None:
    """A call that started before the reload is answered by the old fallback, a new one by the new."""
    policy = manager.policy("answers", fallback("old"))
    release = asyncio.Event()

    async def fail_later() -> str:
        await release.wait()
        raise ConnectionError("down")

    keyed = asyncio.create_task(policy.for_key("k").execute(fail_later))
    unkeyed = asyncio.create_task(policy.execute(fail_later))
    await asyncio.sleep(0)
    assert manager.reconfigure("answers", fallback("new")) is policy
    assert policy.generation == 2
    assert policy.config == fallback("new")
    release.set()
    assert await keyed == "old"
    assert await unkeyed == "old"
    assert await policy.for_key("k").execute(fail_later) == "new"
    assert policy.execute_sync(boom) == "new"
    assert policy.get_stats()["executions"]["fallback"] == 4


async def test_a_protected_function_uses_the_config_of_the_moment(manager: ResilienceManager) -> None:
    """protect resolves the policy on every call, so a decorated function follows reloads."""
    policy = manager.policy("decorated", fallback("v1"))

    @policy.for_key("k").protect
    async def call() -> None:
        raise ConnectionError("down")

    assert await call() == "v1"
    manager.reconfigure("decorated", fallback("v2"))
    assert await call() == "v2"


def test_an_open_breaker_stays_open_for_its_period_and_the_new_settings_apply_after(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """OPEN carries over (same breaker instance, callbacks kept); the new timeout applies to the next opening."""
    old = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0))
    policy = manager.policy("breaker", old)
    view = policy.for_key("host")
    breaker = view.circuit_breaker
    changes: list[str] = []
    breaker.on_state_change(lambda change: changes.append(change.new))
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    new = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout=5.0)
    )
    manager.reconfigure("breaker", new)
    assert view.circuit_breaker is breaker
    assert breaker.config == new.circuit_breaker
    assert breaker.state is CircuitState.OPEN
    clock.advance(10.0)  # past the new timeout, not the old period's end
    with pytest.raises(CircuitOpenError):
        view.execute_sync(lambda: "rejected")
    clock.advance(21.0)
    assert view.execute_sync(lambda: "probe") == "probe"  # one success closes it now
    assert breaker.state is CircuitState.CLOSED
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    clock.advance(5.0)  # the new timeout
    assert breaker.state is CircuitState.HALF_OPEN
    assert changes == ["open", "half_open", "closed", "open", "half_open"]
    assert breaker.get_stats()["total_failures"] == 4


def test_the_failure_count_carries_over_unless_the_window_changes(manager: ResilienceManager) -> None:
    """Consecutive failures count on across a reload; a new sliding window starts empty."""
    policy = manager.policy(
        "streak", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3))
    )
    view = policy.for_key("k")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    manager.reconfigure(
        "streak", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=9.0))
    )
    with pytest.raises(ConnectionError):
        view.execute_sync(boom)
    assert view.circuit_breaker.state is CircuitState.OPEN  # 2 + 1: the streak was kept
    view.circuit_breaker.reset()
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    windowed = CircuitBreakerConfig(
        sliding_window=CountWindow(10), minimum_calls=3, failure_rate_threshold=0.5
    )
    manager.reconfigure("streak", ResilienceConfig(circuit_breaker=windowed))
    assert view.circuit_breaker.stats.failure_count == 0
    with pytest.raises(ConnectionError):
        view.execute_sync(boom)
    assert view.circuit_breaker.state is CircuitState.CLOSED  # one call in the new window


def test_a_success_after_a_reload_ends_the_streak_it_carried(manager: ResilienceManager) -> None:
    """The carried streak is a streak: a success (no lock needed before it) resets it."""
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3))
    view = manager.policy("ended", config).for_key("k")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    manager.reconfigure(
        "ended", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=9.0))
    )
    assert view.execute_sync(lambda: "ok") == "ok"
    assert view.circuit_breaker.stats.failure_count == 0
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    assert view.circuit_breaker.state is CircuitState.CLOSED  # 2 after the success, not 4
    assert view.execute_sync(lambda: "ok") == "ok"
    assert view.circuit_breaker.get_stats()["total_successes"] == 2


async def test_a_smaller_max_concurrent_cancels_nothing_and_admits_only_below_it(
    manager: ResilienceManager,
) -> None:
    """Three calls keep running after a reload to one slot; a new call gets in only once all three ended."""
    policy = manager.policy(
        "pool", ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=3, max_waiting=0))
    )
    view = policy.for_key("k")
    gates = [asyncio.Event() for _ in range(3)]
    running = [asyncio.create_task(view.execute(gate.wait)) for gate in gates]
    await asyncio.sleep(0)
    bulkhead = view.bulkhead
    assert bulkhead.stats.active == 3
    manager.reconfigure(
        "pool", ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    )
    assert view.bulkhead is bulkhead
    assert (bulkhead.stats.active, bulkhead.stats.max_concurrent) == (3, 1)
    for gate, task in zip(gates[:2], running[:2], strict=True):
        with pytest.raises(BulkheadFullError):
            await view.execute(asyncio.sleep, 0)
        gate.set()
        await task
    assert bulkhead.stats.active == 1
    with pytest.raises(BulkheadFullError):
        await view.execute(asyncio.sleep, 0)
    gates[2].set()
    await running[2]
    assert await view.execute(asyncio.sleep, 0, "in") == "in"
    assert bulkhead.stats.active == 0
    assert all(not task.cancelled() for task in running)


async def test_a_larger_max_concurrent_hands_the_new_slots_to_the_waiters(manager: ResilienceManager) -> None:
    """Two queued calls start as soon as the reload gives the bulkhead two more slots."""
    policy = manager.policy(
        "grow",
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=5, timeout=60.0)),
    )
    view = policy.for_key("k")
    gate = asyncio.Event()
    started: list[int] = []

    async def hold(n: int) -> None:
        started.append(n)
        await gate.wait()

    tasks = [asyncio.create_task(view.execute(hold, n)) for n in range(3)]
    await asyncio.sleep(0)
    assert started == [0]
    assert view.bulkhead.stats.waiting == 2
    manager.reconfigure(
        "grow",
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=3, max_waiting=5, timeout=60.0)),
    )
    for _ in range(3):
        await asyncio.sleep(0)
    assert started == [0, 1, 2]
    assert (view.bulkhead.stats.active, view.bulkhead.stats.waiting) == (3, 0)
    gate.set()
    await asyncio.gather(*tasks)
    assert view.bulkhead.stats.active == 0


def test_a_rate_limiter_keeps_the_permits_used_and_a_new_algorithm_starts_afresh(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """A larger burst hands out no free permits; another algorithm is a new limiter; no count is lost."""
    policy = manager.policy("limited", ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=2)))
    view = policy.for_key("k")
    for _ in range(2):
        view.execute_sync(lambda: None)
    limiter = view.rate_limiter
    manager.reconfigure("limited", ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=10)))
    assert view.rate_limiter is limiter
    with pytest.raises(RateLimitedError):
        view.execute_sync(lambda: None)
    clock.advance(1.0)
    view.execute_sync(lambda: None)
    sliding = RateLimiterConfig(rate=1.0, burst=3, algorithm="sliding_window")
    manager.reconfigure("limited", ResilienceConfig(rate_limiter=sliding))
    assert view.rate_limiter is not limiter
    for _ in range(3):
        view.execute_sync(lambda: None)
    stats = policy.get_stats()["rate_limiter"]
    assert (stats["admitted"], stats["rejected"]) == (6, 1)


def test_a_reload_that_fails_changes_nothing_and_is_reported(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A factory that raises, a bad config source, a wrong type: same config, a warning, an event, a count."""
    policy = manager.policy("guarded", fallback("kept"))

    def broken_factory(_name: str) -> Step:
        raise RuntimeError("cannot build")

    bad = fallback("never", extra_strategies=(ExtraStrategy(broken_factory, rank=50),))
    with EventRecorder() as recorder, caplog.at_level(logging.WARNING, "otel_resilience.manager"):
        with pytest.raises(RuntimeError, match="cannot build"):
            manager.reconfigure("guarded", bad)
        with pytest.raises(ValueError, match="timeout"):
            manager.reconfigure("guarded", lambda: ResilienceConfig(timeout=-1.0))
        with pytest.raises(TypeError, match=r"ResilienceManager\.reconfigure\.config"):
            manager.reconfigure("guarded", {"timeout": 1.0})  # type: ignore[arg-type]
        with pytest.raises(KeyError, match="no policy named 'missing'"):
            manager.reconfigure("missing", fallback("x"))
    assert policy.generation == 1
    assert policy.config == fallback("kept")
    assert policy.execute_sync(boom) == "kept"
    failures = recorder.of(Event.RELOAD_FAILED)
    assert [f.error_type for f in failures if isinstance(f, ReloadFailed)] == [
        "RuntimeError",
        "ValueError",
        "TypeError",
        "KeyError",
    ]
    assert [s.name for s in recorder.sources(Event.RELOAD_FAILED)] == ["guarded"] * 3 + ["missing"]
    assert recorder.of(Event.POLICY_RELOADED) == []
    assert len([r for r in caplog.records if "refused, nothing changed" in r.getMessage()]) == 4
    assert policy.get_stats()["reloads"] == {"succeeded": 0, "failed": 3}


def test_a_reload_that_succeeds_is_reported_and_an_equal_config_changes_nothing(
    manager: ResilienceManager,
) -> None:
    """Each accepted reload reports its generation; an equal config keeps the generation."""
    policy = manager.policy("reported", fallback("a"))
    with EventRecorder() as recorder:
        manager.reconfigure("reported", fallback("b"))
        manager.reconfigure("reported", lambda: fallback("b"))
    reloads = recorder.of(Event.POLICY_RELOADED)
    assert [r.generation for r in reloads if isinstance(r, PolicyReloaded)] == [2, 2]
    assert policy.generation == 2
    assert policy.get_stats()["reloads"] == {"succeeded": 2, "failed": 0}


def test_a_config_naming_its_policy_is_the_same_as_one_naming_nothing(manager: ResilienceManager) -> None:
    """name=None and name=<the policy> are one config of a policy: found, not refused; not reloaded."""
    policy = manager.policy("named", fallback("a"))
    assert manager.policy("named", fallback("a", name="named")) is policy
    manager.reconfigure("named", fallback("a", name="named"))
    loaded = loads("policies:\n  named:\n    fallback: {strategy: default_value, default_value: a}\n")
    assert manager.apply_config(loaded)["named"] is policy  # a file names each policy after its key
    assert (policy.generation, policy.get_stats()["reloads"]["succeeded"]) == (1, 1)
    with pytest.raises(ValueError, match="reconfigure"):
        manager.policy("named", fallback("b", name="named"))  # other settings are another config
    filed = manager.apply_config(loads("policies:\n  filed:\n    timeout: 2s\n"))["filed"]
    assert manager.policy("filed", ResilienceConfig(timeout=2.0)) is filed


def test_reconfigure_many_changes_every_policy_or_none(manager: ResilienceManager) -> None:
    """One refused config leaves every policy of the batch as it was; a good batch changes them all."""
    first = manager.policy("first", fallback("1"))
    second = manager.policy("second", fallback("2"))
    with pytest.raises(TypeError):
        manager.reconfigure_many({"first": fallback("1b"), "second": "nope"})  # type: ignore[dict-item]
    assert (first.generation, second.generation) == (1, 1)
    handles = manager.reconfigure_many({"first": fallback("1b"), "second": fallback("2b")})
    assert handles == {"first": first, "second": second}
    assert (first.execute_sync(boom), second.execute_sync(boom)) == ("1b", "2b")


def test_a_refused_config_is_named_as_the_method_called_takes_it(manager: ResilienceManager) -> None:
    """reconfigure_many names its configs[name] (was: reconfigure.config, an argument it has not), and
    apply_config its policies[name], for a new policy and a changed one (was: policy.config, reconfigure.config)."""
    manager.policy("first", fallback("1"))

    async def later() -> ResilienceConfig:
        return fallback("1b")

    many = r"^ResilienceManager\.reconfigure_many\.configs\['first'\] must be "
    with pytest.raises(TypeError, match=many + r"a ResilienceConfig, got 'nope' \(str\)$"):
        manager.reconfigure_many({"first": "nope"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=many + r"a plain \(sync\) factory, not a coroutine function"):
        manager.reconfigure_many({"first": later})  # type: ignore[dict-item]
    with pytest.raises(
        ValueError, match=many + r"a ResilienceConfig whose name is None or 'first', got 'other'$"
    ):
        manager.reconfigure_many({"first": fallback("1b", name="other")})
    with pytest.raises(
        TypeError, match=r"^ResilienceManager\.reconfigure\.config must be a ResilienceConfig, got 5"
    ):
        manager.reconfigure("first", 5)  # type: ignore[arg-type]
    for name in ("first", "new"):
        with pytest.raises(
            TypeError,
            match=rf"^ResilienceManager\.apply_config\.policies\['{name}'\] must be a ResilienceConfig, got 5",
        ):
            manager.apply_config({name: 5})  # type: ignore[dict-item]
    assert manager.policy("first").generation == 1
    assert "new" not in manager._handles


@pytest.mark.parametrize(
    ("name", "kind", "rule"),
    [
        (1, TypeError, r"a str, got 1 \(int\)"),
        ("", ValueError, "a non-empty name, got ''"),
        (" ", ValueError, "a non-empty name, got ' '"),
        ("p" * 5000, ValueError, "a name of at most 256 characters"),
    ],
)
def test_a_name_policy_refuses_is_refused_by_a_reload_naming_the_argument_and_never_reported(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture, name: object, kind: type, rule: str
) -> None:
    """reconfigure, reconfigure_many and apply_config refuse a name policy() refuses, by its rule, before
    anything runs (was: a KeyError, or the error reported as a failed reload under that name: a
    5000-character resilience.policy attribute, a series per name given)."""
    manager.policy("payments", fallback("kept"))
    built: list[str] = []

    def build() -> ResilienceConfig:
        built.append("built")
        return fallback("new")

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        built.append(name)
        return config

    with EventRecorder() as recorder, caplog.at_level(logging.WARNING, "otel_resilience.manager"):
        with pytest.raises(kind, match=rf"^ResilienceManager\.reconfigure\.name must be {rule}"):
            manager.reconfigure(name, build)  # type: ignore[arg-type]
        with pytest.raises(kind, match=rf"^ResilienceManager\.reconfigure_many\.configs key must be {rule}"):
            manager.reconfigure_many({"payments": build, name: build})  # type: ignore[dict-item]
        with pytest.raises(kind, match=rf"^ResilienceManager\.apply_config\.policies key must be {rule}"):
            manager.apply_config(
                {"payments": fallback("new"), "other": fallback("new"), name: fallback("new")},  # type: ignore[dict-item]
                customize=customize,
            )
    assert recorder.sources(Event.RELOAD_FAILED) == []
    assert [r for r in caplog.records if "refused" in r.getMessage()] == []
    assert built == []
    assert manager.policy("payments").config == fallback("kept")
    assert manager.policy("payments").get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
    assert "other" not in manager._handles


def test_a_reload_of_a_name_no_policy_has_is_a_key_error_reported_under_that_name(
    manager: ResilienceManager,
) -> None:
    """A name policy() takes, which names no policy, is a refused reload (docs/runbooks/ResilienceReloadFailed.md)."""
    with EventRecorder() as recorder:
        with pytest.raises(KeyError, match="no policy named 'missing'"):
            manager.reconfigure("missing", ResilienceConfig())
    assert [(s.name, s.pipeline) for s in recorder.sources(Event.RELOAD_FAILED)] == [("missing", "missing")]


@pytest.mark.parametrize("name", [None, 1, b"payments", ("payments",)])
def test_a_reload_of_a_name_that_is_no_str_is_a_type_error_naming_the_argument(
    manager: ResilienceManager, name: object
) -> None:
    """reconfigure and reconfigure_many refuse a name of the wrong type as policy() does, never a KeyError."""
    manager.policy("payments", fallback("kept"))
    with pytest.raises(TypeError, match=r"^ResilienceManager\.reconfigure\.name must be a str, got "):
        manager.reconfigure(name, fallback("new"))  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^ResilienceManager\.reconfigure_many\.configs key must be a str, got "
    ):
        manager.reconfigure_many({"payments": fallback("new"), name: fallback("new")})  # type: ignore[dict-item]
    assert manager.policy("payments").config == fallback("kept")


class _Uncomparable:
    """A value whose ``==`` raises (as a NumPy array's truth does)."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")


def test_a_config_holding_a_value_that_cannot_be_compared_is_another_config(
    manager: ResilienceManager,
) -> None:
    """Such a config is a change: a batch holding it commits whole, and policy() refuses it as any other."""
    first = manager.policy("first", fallback("1"))
    second = manager.policy("second", fallback("2"))
    matrix = _Uncomparable()
    answer = FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=matrix)
    manager.reconfigure_many({"first": fallback("1b"), "second": ResilienceConfig(fallback_config=answer)})
    assert (first.generation, second.generation) == (2, 2)
    assert first.get_stats()["reloads"] == second.get_stats()["reloads"] == {"succeeded": 1, "failed": 0}
    assert second.execute_sync(boom) is matrix
    other = ResilienceConfig(
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=_Uncomparable())
    )
    with pytest.raises(ValueError, match="reconfigure"):
        manager.policy("second", other)
    assert manager.apply_config({"second": other})["second"] is second
    assert second.generation == 3


def test_patterns_a_reload_removes_or_adds_are_retired_or_made(manager: ResilienceManager) -> None:
    """Dropping the breaker folds its counts into the totals; adding a bulkhead gives every key one."""
    policy = manager.policy("shape", ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))
    view = policy.for_key("k")
    view.execute_sync(lambda: None)
    manager.reconfigure("shape", ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1)))
    assert view.circuit_breaker is None
    assert view.bulkhead is not None
    view.execute_sync(lambda: None)
    stats = policy.get_stats()
    assert stats["circuit_breaker"] is None
    assert stats["bulkhead"]["total"] == 1
    assert stats["executions"]["total"] == 2
    manager.reconfigure("shape", ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))
    assert policy.get_stats()["circuit_breaker"]["total_successes"] == 1  # the retired breaker's call


async def test_calls_in_flight_at_a_reload_are_counted_but_judge_nothing(manager: ResilienceManager) -> None:
    """Failures of calls that started under the old config count in the totals, never toward a trip."""
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0))
    policy = manager.policy("in-flight", config)
    view = policy.for_key("k")
    breaker = view.circuit_breaker
    changes: list[str] = []
    breaker.on_state_change(lambda change: changes.append(change.new))
    release = asyncio.Event()

    async def fail_later() -> None:
        await release.wait()
        raise ConnectionError("down")

    running = [asyncio.create_task(view.execute(fail_later)) for _ in range(2)]
    await asyncio.sleep(0)
    manager.reconfigure(
        "in-flight", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2))
    )
    release.set()
    for task in running:
        with pytest.raises(ConnectionError):
            await task
    assert changes == []
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.failure_count == 0
    assert breaker.get_stats()["total_failures"] == 2
    with pytest.raises(ConnectionError):
        await view.execute(fail_later)  # released already: fails at once, under the new config
    assert breaker.state is CircuitState.CLOSED  # one failure of the new period


@pytest.mark.parametrize(
    "reloads",
    [
        pytest.param([(120.0, 4)], id="one-reload"),
        # A reload that leaves the breaker alone keeps its core; a later one that retunes it
        # retires the core every pipeline still running uses, the oldest included.
        pytest.param([(60.0, 5), (120.0, 5)], id="breaker-kept-then-retuned"),
    ],
)
async def test_an_execution_in_flight_at_a_reload_retries_only_while_the_breaker_admits_calls(
    manager: ResilienceManager, reloads: list[tuple[float, int]]
) -> None:
    """Its next attempts are the breaker's to admit as it is now: once the reloaded breaker opens,
    a retry of an execution that started before the reloads is rejected, not sent to the
    dependency (a breaker's thresholds are tuned during an incident, while executions are in
    flight)."""

    def config(timeout: float, attempts: int) -> ResilienceConfig:
        retry = RetryPolicy(
            max_attempts=attempts, strategy=RetryStrategy.FIXED, initial_delay=1.0, jitter=Jitter.NONE
        )
        breaker = CircuitBreakerConfig(failure_threshold=2, timeout=timeout)
        return ResilienceConfig(circuit_breaker=breaker, retry_policy=retry)

    name = f"in-flight-retries-{len(reloads)}"
    policy = manager.policy(name, config(60.0, 4))
    view = policy.for_key("k")
    release = asyncio.Event()
    sent: list[str] = []

    async def slow_then_down() -> None:
        sent.append("in flight")
        await release.wait()
        raise ConnectionError("down")

    async def down() -> None:
        raise ConnectionError("down")

    running = asyncio.create_task(view.execute(slow_then_down))
    await asyncio.sleep(0)
    for timeout, attempts in reloads:
        manager.reconfigure(name, config(timeout, attempts))
    with pytest.raises(CircuitOpenError):
        await view.execute(down)  # two failures open it; its third attempt is rejected
    assert view.circuit_breaker.state is CircuitState.OPEN
    release.set()
    with pytest.raises(CircuitOpenError):
        await running
    assert sent == ["in flight"]
    assert view.circuit_breaker.get_stats()["total_rejected"] == 2


@pytest.mark.parametrize("change", ["renamed", "dropped"])
async def test_a_call_running_in_a_breaker_and_bulkhead_a_reload_replaces_is_counted_once(
    manager: ResilienceManager, change: str
) -> None:
    """A call in flight through a breaker and bulkhead a reload renames (or drops) is counted when it ends."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(),
        bulkhead_config=BulkheadConfig(max_concurrent=2),
        circuit_breaker_name="old-breaker",
        bulkhead_name="old-bulkhead",
    )
    policy = manager.policy("replaced-in-flight", config)
    view = policy.for_key("k")
    release = asyncio.Event()

    async def answer_later() -> str:
        await release.wait()
        return "ok"

    running = asyncio.create_task(view.execute(answer_later))
    await asyncio.sleep(0)
    if change == "renamed":
        new = dataclasses.replace(config, circuit_breaker_name="new-breaker", bulkhead_name="new-bulkhead")
    else:
        new = dataclasses.replace(
            config, circuit_breaker=None, bulkhead_config=None, circuit_breaker_name=None, bulkhead_name=None
        )
    manager.reconfigure("replaced-in-flight", new)
    during = policy.get_stats()
    if change == "renamed":
        assert during["bulkhead"]["active"] == 1  # the old bulkhead's call runs
    release.set()
    assert await running == "ok"
    assert await view.execute(answer_later) == "ok"
    manager.reconfigure("replaced-in-flight", config)  # no call runs now: the replaced ones are folded
    stats = policy.get_stats()
    assert stats["executions"]["total"] == 2
    breaker, bulkhead = stats["circuit_breaker"], stats["bulkhead"]
    assert breaker["total_successes"] == (2 if change == "renamed" else 1)
    assert bulkhead["total"] == bulkhead["completed"] == (2 if change == "renamed" else 1)
    assert bulkhead["active"] == bulkhead["waiting"] == 0


@pytest.mark.parametrize("keyed", [True, False], ids=["key", "unkeyed"])
async def test_a_breaker_a_reload_drops_leaves_the_exported_series_when_its_last_call_ends(
    otel: Otel, manager: ResilienceManager, clock: FakeClock, keyed: bool
) -> None:
    """A dropped breaker that a call in flight still uses is folded when that call ends, not at a later reload.

    Until then it was still exported as a live breaker of the policy: OPEN, then HALF_OPEN for
    ever (the breaker-open alert firing for a policy that has no breaker any more).
    """
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0))
    policy = manager.policy("dropped-open", config)
    runs = policy.for_key("k") if keyed else policy
    release = asyncio.Event()

    async def answer_later() -> str:
        await release.wait()
        return "ok"

    async def fail() -> None:
        raise ConnectionError("down")

    def breakers() -> list[object]:
        return [b for b in BREAKERS.items() if isinstance(b, CircuitBreaker) and b.name == "dropped-open"]

    running = asyncio.create_task(runs.execute(answer_later))
    await asyncio.sleep(0)
    with pytest.raises(ConnectionError):
        await runs.execute(fail)  # opens the breaker the running call holds
    manager.reconfigure("dropped-open", ResilienceConfig())  # drops it while that call runs
    newer = asyncio.create_task(runs.execute(answer_later))  # runs on, without a breaker
    await asyncio.sleep(0)
    assert len(breakers()) == 1  # the running call may still count in it
    release.set()
    assert await running == "ok"
    assert breakers() == []  # no call can use it any more: folded as that call ended
    assert await newer == "ok"
    for _ in range(2):
        assert await runs.execute(answer_later) == "ok"
    clock.advance(60.0)  # past the OPEN period: a breaker left behind would read HALF_OPEN
    states = {
        point.attributes[sc.CB_STATE]: point.value
        for point in otel.points(sc.CB_STATE_METRIC)
        if point.attributes[sc.NAME] == "dropped-open" and point.value
    }
    assert (breakers(), states) == ([], {"closed": 1})
    calls = sum(p.value for p in otel.points(sc.CB_CALLS) if p.attributes.get(sc.NAME) == "dropped-open")
    assert calls == 2  # the failure and the call in flight at the reload: counted once, kept
    assert policy.get_stats()["executions"]["total"] == 5


@pytest.mark.parametrize("keyed", [True, False], ids=["key", "unkeyed"])
@pytest.mark.parametrize("change", ["renamed", "dropped"])
def test_a_slot_held_in_a_bulkhead_a_reload_replaces_is_counted_when_its_block_ends(
    manager: ResilienceManager, keyed: bool, change: str
) -> None:
    """A ``bulkhead.slot()`` block outside any call, in a bulkhead a reload renames or drops, is no
    call of the key: the replaced bulkhead stays in the statistics, running it, until the block
    ends, and is folded with the block counted (not with a slot held for ever, its end lost)."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=2))
    policy = manager.policy("slot-replaced", config)
    runs = policy.for_key("k") if keyed else policy
    new = (
        dataclasses.replace(config, bulkhead_name="slot-renamed")
        if change == "renamed"
        else ResilienceConfig()
    )
    bulkhead = runs.bulkhead
    assert bulkhead is not None
    with bulkhead.slot():
        manager.reconfigure("slot-replaced", new)
        if change == "renamed":
            assert policy.get_stats()["bulkhead"]["active"] == 1  # the block runs in the old one
    assert runs.execute_sync(lambda: "after") == "after"
    manager.reconfigure("slot-replaced", config)  # a bulkhead again, so the statistics show one
    stats = policy.get_stats()["bulkhead"]
    slots = 2 if change == "renamed" else 1  # the block's, and the call's in the renamed one
    assert (stats["total"], stats["completed"], stats["active"]) == (slots, slots, 0)


async def test_a_wait_for_a_permit_of_a_limiter_a_reload_replaces_is_counted_when_it_ends() -> None:
    """A caller waiting in ``rate_limiter.guard()`` outside any call, in a limiter a reload replaces
    (another algorithm), keeps it in the statistics until its wait ends, counted then."""
    manager = ResilienceManager()  # the system clock: the waiter waits (100 s) until cancelled
    limits = RateLimiterConfig(rate=0.01, burst=1, max_wait=1000.0)
    policy = manager.policy("waited-on-replaced", ResilienceConfig(rate_limiter=limits))
    view = policy.for_key("tenant")
    limiter = view.rate_limiter
    assert limiter is not None
    await view.execute(asyncio.sleep, 0)  # the burst spent

    async def wait_for_a_permit() -> None:
        async with limiter.guard():
            pass

    waiter = asyncio.create_task(wait_for_a_permit())
    while not limiter.waiting:
        await asyncio.sleep(0)
    sliding = dataclasses.replace(limits, algorithm="sliding_window")
    manager.reconfigure("waited-on-replaced", ResilienceConfig(rate_limiter=sliding))  # a new limiter
    assert view.rate_limiter is not limiter
    assert policy.get_stats()["rate_limiter"]["waiting"] == 1  # in the replaced one
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await view.execute(asyncio.sleep, 0)  # a call of the key ends: the replaced limiter is folded
    stats = policy.get_stats()["rate_limiter"]
    assert (stats["admitted"], stats["cancelled"], stats["waiting"]) == (2, 1, 0)


def test_a_key_holding_a_slot_of_a_bulkhead_a_reload_replaced_is_not_evicted(
    manager: ResilienceManager,
) -> None:
    """The key stays while a block holds a slot of its replaced bulkhead: evicted then, it would be
    folded with the slot held, and the block's end counted by a bulkhead no one reads."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=2))
    policy = manager.policy("slot-replaced-evict", config, max_keys=1)
    bulkhead = policy.for_key("k").bulkhead
    assert bulkhead is not None
    with bulkhead.slot():
        manager.reconfigure("slot-replaced-evict", dataclasses.replace(config, bulkhead_name="evict-renamed"))
        assert policy.for_key("other").execute_sync(lambda: "other") == "other"  # "k" is busy: kept
        assert policy.get_stats()["evicted_keys"] == 0
    for key in ("k", "other", "third"):  # idle now: evicted, its counts folded
        assert policy.for_key(key).execute_sync(str, key) == key
    assert policy.get_stats()["evicted_keys"] >= 1
    stats = policy.get_stats()["bulkhead"]
    assert (stats["total"], stats["completed"], stats["active"]) == (5, 5, 0)  # the block, 4 calls


@pytest.mark.parametrize("keyed", [True, False], ids=["key", "unkeyed"])
def test_a_call_in_flight_at_a_reload_freed_after_its_loop_closed_never_blocks_on_the_policy(
    manager: ResilienceManager, keyed: bool
) -> None:
    """A call left running when its loop closed, in a breaker a reload dropped meanwhile, is freed by
    the garbage collector on whichever thread allocates: maybe one that holds the policy's lock (a
    reload allocates under it). Its end must not block on that lock: the dropped breaker, which no
    call can use any more, is folded once the lock is free."""
    policy = manager.policy("freed-in-flight", ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))
    runs = policy.for_key("k") if keyed else policy
    started: list[bool] = []

    async def hang() -> None:
        started.append(True)
        await asyncio.sleep(3600)

    def breakers() -> list[object]:
        return [b for b in BREAKERS.items() if isinstance(b, CircuitBreaker) and b.name == "freed-in-flight"]

    reloaded: list[bool] = []

    def started_then_reloaded() -> bool:
        if started and not reloaded:
            manager.reconfigure("freed-in-flight", ResilienceConfig())  # drops the breaker it runs in
            assert len(breakers()) == 1  # kept while the call in flight may count in it
            reloaded.append(True)
        return bool(reloaded)

    freed_on_a_closed_loop(
        lambda: runs.execute(hang), started_then_reloaded, policy._lock, "the policy's lock"
    )
    until_sync(lambda: not breakers())  # folded once the lock was free
    assert runs.execute_sync(lambda: "after") == "after"
    assert policy.get_stats()["executions"]["total"] == 2


def test_reconfigure_many_changes_nothing_when_a_link_factory_fails_after_the_trial(
    manager: ResilienceManager,
) -> None:
    """A factory that builds the trial's link but not a key's: no policy of the batch has changed."""
    first = manager.policy("first", fallback("1"))
    second = manager.policy("second", fallback("2"))
    assert second.for_key("tenant").execute_sync(boom) == "2"  # a key: its pipeline is rebuilt too
    built: list[Step] = []
    limit = [2]

    def runs_out(_name: str) -> Step:
        if len(built) == limit[0]:
            raise RuntimeError("no more links")
        built.append(Step())
        return built[-1]

    flaky = fallback("2b", extra_strategies=(ExtraStrategy(runs_out, rank=50),))
    with EventRecorder() as recorder, pytest.raises(RuntimeError, match="no more links"):
        manager.reconfigure_many({"first": fallback("1b"), "second": flaky})
    assert (first.generation, second.generation) == (1, 1)
    assert (first.config, second.config) == (fallback("1"), fallback("2"))
    assert first.execute_sync(boom) == "1"
    assert (second.execute_sync(boom), second.for_key("tenant").execute_sync(boom)) == ("2", "2")
    assert recorder.of(Event.POLICY_RELOADED) == []
    assert [s.name for s in recorder.sources(Event.RELOAD_FAILED)] == ["second"]
    assert first.get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
    assert second.get_stats()["reloads"] == {"succeeded": 0, "failed": 1}
    built.clear()
    limit[0] = 3  # enough for the trial, the unkeyed calls and the key: the batch takes effect
    manager.reconfigure_many({"first": fallback("1b"), "second": flaky})
    assert (first.generation, second.generation) == (2, 2)
    assert (second.execute_sync(boom), second.for_key("tenant").execute_sync(boom)) == ("2b", "2b")
    assert len(built) == 3  # the trial's, the unkeyed calls' and the key's


def test_a_key_made_while_a_batch_is_staged_catches_up_at_its_next_call(manager: ResilienceManager) -> None:
    """Staging runs the factories outside the policy's lock; a key a call makes meanwhile is not lost."""
    policy = manager.policy("late", fallback("old"))
    made: list[str] = []

    def factory(_name: str) -> Step:
        made.append(_name)
        if len(made) == 2:  # staging the unkeyed calls' pipeline: a call makes a key now
            assert policy.for_key("newcomer").execute_sync(boom) == "old"
        return Step()

    manager.reconfigure_many({"late": fallback("new", extra_strategies=(ExtraStrategy(factory, rank=50),))})
    assert policy.generation == 2
    assert policy.for_key("newcomer").execute_sync(boom) == "new"
    assert policy.execute_sync(boom) == "new"
    assert len(made) == 3  # the trial, the unkeyed calls' pipeline, the newcomer's at its catch-up


def test_threads_catching_up_one_key_at_once_run_its_factories_once(
    manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls that reach a stale key together run the extra strategies' factories once for it.

    Each ran them (a factory's side effects, a connection or a registration, made per caller)
    and all but one set of links was dropped.
    """
    wait = 10.0  # only reached when the test fails
    policy = manager.policy("late", fallback("old"))
    made: list[str] = []
    another = threading.Event()

    def factory(name: str) -> Step:
        made.append(name)
        if len(made) == 2:  # staging the unkeyed calls' pipeline: a call makes a key now
            assert policy.for_key("newcomer").execute_sync(boom) == "old"
        elif len(made) == 3:  # the first caller's catch-up: the others, if let in, come meanwhile
            another.wait(0.2)
        elif len(made) > 3:
            another.set()
        return Step()

    manager.reconfigure_many({"late": fallback("new", extra_strategies=(ExtraStrategy(factory, rank=50),))})
    assert len(made) == 2  # the trial, the unkeyed calls' pipeline
    callers = 3
    together = threading.Barrier(callers, timeout=wait)
    catch_up = PolicyHandle._catch_up

    def catch_up_together(handle: PolicyHandle, state: KeyState) -> None:
        together.wait()  # every caller found the key stale before any catches it up
        catch_up(handle, state)

    monkeypatch.setattr(PolicyHandle, "_catch_up", catch_up_together)
    answers: list[object] = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(policy.for_key("newcomer").execute_sync(boom)), daemon=True
        )
        for _ in range(callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(wait)
    assert not any(thread.is_alive() for thread in threads)
    assert answers == ["new"] * callers
    assert len(made) == 3  # the newcomer's, once


def test_a_key_made_while_a_batch_is_staged_catches_up_with_a_factory_that_uses_the_policy(
    manager: ResilienceManager,
) -> None:
    """The catch-up runs the factories outside the policy's lock, as staging does."""
    policy = manager.policy("late", fallback("old"))
    made: list[str] = []

    def factory(name: str) -> Step:
        made.append(name)
        policy.get_stats()  # a factory may use the policy
        if len(made) == 2:  # staging the unkeyed calls' pipeline: a call makes a key now
            assert policy.for_key("newcomer").execute_sync(boom) == "old"
        return Step()

    manager.reconfigure_many({"late": fallback("new", extra_strategies=(ExtraStrategy(factory, rank=50),))})
    answers: list[object] = []
    caller = threading.Thread(target=lambda: answers.append(policy.for_key("newcomer").execute_sync(boom)))
    caller.daemon = True
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "the key's catch-up waits for the policy's lock held by itself"
    assert answers == ["new"]
    assert len(made) == 3  # the trial, the unkeyed calls' pipeline, the newcomer's at its catch-up


def test_a_key_catching_up_while_another_thread_looks_whether_it_is_idle_takes_the_new_config(
    manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call counted into its key is brought to the reloaded config even while an eviction in
    another thread has marked the key not live for an instant (to see whether it is idle).

    The catch-up took that mark for an eviction and returned: the call ran under the old config.
    """
    wait = 10.0  # only reached when the test fails
    policy = manager.policy("late", fallback("old"), max_keys=1, idle_ttl=None)
    made: list[str] = []

    def factory(_name: str) -> Step:
        made.append(_name)
        if len(made) == 2:  # staging the unkeyed calls' pipeline: a call makes a key now
            assert policy.for_key("newcomer").execute_sync(boom) == "old"
        return Step()

    manager.reconfigure_many({"late": fallback("new", extra_strategies=(ExtraStrategy(factory, rank=50),))})
    newcomer = policy._keys.get("newcomer")
    assert newcomer is not None
    assert newcomer.generation == 1  # it catches up at its next call
    entered, looking, answered = threading.Event(), threading.Event(), threading.Event()
    enter, running = KeyState.enter, inspect.getattr_static(KeyState, "running")

    def enter_then_wait(state: KeyState) -> bool:
        counted = enter(state)
        if state is newcomer and threading.current_thread() is caller:
            entered.set()
            looking.wait(wait)  # the evictor has marked it not live and reads its calls
        return counted

    def calls_once_answered(state: KeyState) -> int:
        if state is newcomer and threading.current_thread() is evictor and not looking.is_set():
            looking.set()
            answered.wait(wait)
        return int(running.fget(state))

    monkeypatch.setattr(KeyState, "enter", enter_then_wait)
    monkeypatch.setattr(KeyState, "running", property(calls_once_answered))
    answers: list[object] = []

    def call() -> None:
        try:
            answers.append(policy.for_key("newcomer").execute_sync(boom))
        finally:
            answered.set()

    caller = threading.Thread(target=call, daemon=True)
    evictor = threading.Thread(target=lambda: policy.for_key("other").execute_sync(lambda: None), daemon=True)
    caller.start()
    assert entered.wait(wait)
    evictor.start()  # a new key past max_keys: it looks whether the newcomer is idle
    caller.join(wait)
    evictor.join(wait)
    assert not caller.is_alive()
    assert not evictor.is_alive()
    assert answers == ["new"]
    assert newcomer.generation == 2
    assert policy.get_stats()["executions"]["total"] == 3


def test_a_key_whose_catch_up_fails_is_not_left_busy(manager: ResilienceManager) -> None:
    """A call that fails at its key's catch-up (a factory raised) never ran: it is counted out of
    the key, which stays evictable, and the unkeyed calls' state is not left busy either."""
    policy = manager.policy("late", fallback("old"), max_keys=1, idle_ttl=None)
    made: list[str] = []
    failing = [False]

    def factory(_name: str) -> Step:
        made.append(_name)
        if len(made) == 2:  # staging the unkeyed calls' pipeline: a call makes a key now
            assert policy.for_key("newcomer").execute_sync(boom) == "old"
            failing[0] = True
        if failing[0] and len(made) > 2:
            raise RuntimeError("cannot build")
        return Step()

    manager.reconfigure_many({"late": fallback("new", extra_strategies=(ExtraStrategy(factory, rank=50),))})
    with pytest.raises(RuntimeError, match="cannot build"):
        policy.for_key("newcomer").execute_sync(boom)
    state = policy._keys.use("newcomer")
    assert state is not None
    assert state.running == 0
    failing[0] = False
    assert policy.for_key("newcomer").execute_sync(boom) == "new"
    assert policy.for_key("other").execute_sync(boom) == "new"
    assert policy.keys == 1  # the newcomer, idle, made way
    assert policy.get_stats()["evicted_keys"] == 1


async def test_a_smaller_max_waiting_keeps_the_queued_calls_and_refuses_new_ones_until_below_it(
    manager: ResilienceManager,
) -> None:
    """Three queued calls stay queued after a reload to a queue of one; a new call queues only below it."""

    def pool(queue: int) -> ResilienceConfig:
        return ResilienceConfig(
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=queue, timeout=60.0)
        )

    policy = manager.policy("queue", pool(3))
    view = policy.for_key("k")
    gates = [asyncio.Event() for _ in range(4)]
    tasks = [asyncio.create_task(view.execute(gate.wait)) for gate in gates]
    await asyncio.sleep(0)
    bulkhead = view.bulkhead
    assert (bulkhead.stats.active, bulkhead.stats.waiting) == (1, 3)
    manager.reconfigure("queue", pool(1))
    assert view.bulkhead is bulkhead
    assert (bulkhead.stats.waiting, bulkhead.stats.max_waiting) == (3, 1)
    for held in range(3):  # 3, 2, then 1 queued: none below the new limit of 1
        with pytest.raises(BulkheadFullError):
            await view.execute(asyncio.sleep, 0)
        gates[held].set()
        await tasks[held]
        for _ in range(3):
            await asyncio.sleep(0)
    assert (bulkhead.stats.active, bulkhead.stats.waiting) == (1, 0)
    late = asyncio.create_task(view.execute(asyncio.sleep, 0, "queued"))
    await asyncio.sleep(0)
    assert bulkhead.stats.waiting == 1  # below the new limit: it queues
    gates[3].set()
    assert await late == "queued"
    await asyncio.gather(*tasks)
    assert not any(task.cancelled() for task in tasks)


async def test_a_new_queue_timeout_applies_to_the_calls_that_queue_after_the_reload(
    manager: ResilienceManager,
) -> None:
    """A call queued before the reload keeps its queue timeout; one queued after it has the new one."""

    def pool(timeout: float) -> ResilienceConfig:
        return ResilienceConfig(
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=5, timeout=timeout)
        )

    policy = manager.policy("queue-timeout", pool(60.0))
    gate = asyncio.Event()
    running = asyncio.create_task(policy.execute(gate.wait))
    await asyncio.sleep(0)
    queued_before = asyncio.create_task(policy.execute(asyncio.sleep, 0, "before"))
    await asyncio.sleep(0)
    manager.reconfigure("queue-timeout", pool(0.01))
    with pytest.raises(BulkheadTimeoutError):
        await policy.execute(asyncio.sleep, 0)
    assert not queued_before.done()  # still within its 60 s
    gate.set()
    await running
    assert await queued_before == "before"


def test_a_lower_failure_threshold_trips_at_the_next_counted_failure(manager: ResilienceManager) -> None:
    """Three failures under a threshold of 5, then a reload to 2: the reload opens nothing, the next failure does."""

    def breaker(threshold: int) -> ResilienceConfig:
        return ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold))

    view = manager.policy("lowered", breaker(5)).for_key("k")
    for _ in range(3):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    manager.reconfigure("lowered", breaker(2))
    assert view.circuit_breaker.state is CircuitState.CLOSED
    with pytest.raises(ConnectionError):
        view.execute_sync(boom)
    assert view.circuit_breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        view.execute_sync(boom)


def test_the_window_contents_carry_over_when_the_window_is_unchanged(manager: ResilienceManager) -> None:
    """Two failures and a success in a count window, a reload of the timeout: one more failure opens it."""

    def breaker(timeout: float) -> ResilienceConfig:
        window = CountWindow(10)
        return ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(
                sliding_window=window, minimum_calls=4, failure_rate_threshold=0.5, timeout=timeout
            )
        )

    view = manager.policy("windowed", breaker(5.0)).for_key("k")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)
    view.execute_sync(lambda: None)
    manager.reconfigure("windowed", breaker(9.0))
    with pytest.raises(ConnectionError):
        view.execute_sync(boom)  # the fourth call in the window: 3 of 4 failed
    assert view.circuit_breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_a_rate_limiter_reload_counts_the_time_before_it_at_the_old_rate(
    manager: ResilienceManager, clock: FakeClock, algorithm: str
) -> None:
    """Five seconds at 1 permit/s, then a reload to 100/s: the bucket holds five permits, not a full burst.

    A sliding window judges its admissions over the new window (burst / rate = 0.1 s): the ten
    of five seconds ago have left it.
    """

    def limited(rate: float) -> ResilienceConfig:
        return ResilienceConfig(rate_limiter=RateLimiterConfig(rate=rate, burst=10, algorithm=algorithm))

    view = manager.policy(f"paced-{algorithm}", limited(1.0)).for_key("k")
    for _ in range(10):
        view.execute_sync(lambda: None)
    clock.advance(5.0)
    manager.reconfigure(f"paced-{algorithm}", limited(100.0))
    admitted = 0
    while admitted < 20:
        try:
            view.execute_sync(lambda: None)
        except RateLimitedError:
            break
        admitted += 1
    assert admitted == (5 if algorithm == "token_bucket" else 10)


def test_the_probe_successes_of_a_half_open_breaker_carry_over(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """Two of three probe successes before a reload, one after: the breaker closes (its count was kept)."""

    def breaker(probes: int) -> ResilienceConfig:
        return ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(
                failure_threshold=1, timeout=10.0, success_threshold=3, half_open_max_calls=probes
            )
        )

    view = manager.policy("probing", breaker(1)).for_key("k")
    with pytest.raises(ConnectionError):
        view.execute_sync(boom)
    clock.advance(11.0)
    for _ in range(2):
        view.execute_sync(lambda: None)
    assert view.circuit_breaker.state is CircuitState.HALF_OPEN
    manager.reconfigure("probing", breaker(2))
    assert view.circuit_breaker.state is CircuitState.HALF_OPEN
    view.execute_sync(lambda: None)
    assert view.circuit_breaker.state is CircuitState.CLOSED
