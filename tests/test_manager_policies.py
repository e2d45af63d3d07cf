"""Policies: equal configs share one, default names do not collide, and the manager keeps a bounded number."""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import logging
import threading
import types
from dataclasses import replace
from typing import Any, NamedTuple, cast

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    CircuitOpenError,
    CountWindow,
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    resilient,
)
from otel_resilience.manager import DEFAULT_MAX_POLICIES
from otel_resilience.manager.keys import config_key
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.circuit_breaker import CircuitState


def spec_config(default: Any) -> ResilienceConfig:
    """A per-call config like SPEC's, whose fallback default is a dict or a list (unhashable)."""
    return ResilienceConfig(
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=default),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5),
        name="db_query",
    )


@pytest.mark.parametrize("default", [{"status": "error"}, []])
def test_equal_unhashable_configs_built_per_call_share_one_policy(default: Any, alerts: AlertSystem) -> None:
    """A config rebuilt on every call, holding a dict or list, reaches one pipeline and loses no count."""
    manager = ResilienceManager(alert_system=alerts)

    def ok() -> int:
        return 1

    first = manager.pipeline_for(spec_config(default), "db_query")
    for _ in range(1500):
        assert manager.execute_with_resilience_sync(ok, spec_config(default)) == 1
    assert manager.pipeline_for(spec_config(default), "db_query") is first
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 1500
    assert stats["policies"]["db_query"]["total"] == 1500
    assert stats["limits"]["policies"] == 1


def test_unequal_unhashable_configs_get_their_own_policies(alerts: AlertSystem) -> None:
    """Configs that differ only inside a dict default are different policies."""
    manager = ResilienceManager(alert_system=alerts)
    a = manager.pipeline_for(spec_config({"status": "error"}), "p")
    b = manager.pipeline_for(spec_config({"status": "down"}), "p")
    c = manager.pipeline_for(spec_config([{"status": "error"}]), "p")
    assert len({id(a), id(b), id(c)}) == 3
    reordered = manager.pipeline_for(spec_config({"b": [1], "a": 2}), "p")
    assert manager.pipeline_for(spec_config({"a": 2, "b": [1]}), "p") is reordered


def test_unhashable_configs_that_differ_in_a_hashable_nested_config_get_their_own_policies(
    alerts: AlertSystem,
) -> None:
    """The key keeps a hashable nested config as it is (no copy of its fields): an equal one still
    finds the policy, a different one (another retry policy) makes its own."""
    manager = ResilienceManager(alert_system=alerts)

    def config(attempts: int) -> ResilienceConfig:
        return replace(spec_config({"status": "error"}), retry_policy=RetryPolicy(max_attempts=attempts))

    first = manager.pipeline_for(config(3), "p")
    assert manager.pipeline_for(config(4), "p") is not first
    assert manager.pipeline_for(config(3), "p") is first
    key = cast("tuple[Any, ...]", config_key(config(3)))
    assert hash(key) == hash(config_key(config(3)))
    assert RetryPolicy(max_attempts=3) in key[2]  # kept whole, not frozen field by field


class Point(NamedTuple):
    """A namedtuple: a tuple, equal to a tuple of its items and never to a list."""

    x: int
    y: int


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"at": Point(1, 2)}, {"at": [1, 2]}),  # a namedtuple is a tuple, never a list
        ([collections.OrderedDict(a=1, b=2)], [collections.OrderedDict(b=2, a=1)]),  # order counts
    ],
    ids=["namedtuple-vs-list", "ordered-dicts"],
)
def test_configs_that_compare_unequal_never_share_a_policy(
    first: Any, second: Any, alerts: AlertSystem
) -> None:
    """Two configs whose defaults are not equal get a policy each: each call is answered with its own default."""
    assert first != second
    manager = ResilienceManager(alert_system=alerts)
    assert manager.execute_with_resilience_sync(_charge, spec_config(first), "db") == first
    assert manager.execute_with_resilience_sync(_charge, spec_config(second), "db") == second
    assert manager.get_resilience_statistics()["limits"]["policies"] == 2


class Ambiguous:
    """A hashable value whose ``==`` raises, as an array's truth or a query expression's does."""

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of this comparison is ambiguous")


@pytest.mark.parametrize("holder", [lambda v: v, lambda v: {"value": v}], ids=["hashable", "in-a-dict"])
def test_configs_whose_values_cannot_be_compared_get_a_policy_each_and_fail_no_call(
    holder: Any, alerts: AlertSystem
) -> None:
    """A value whose ``==`` raises counts as different: the policy lookup never fails a call.

    The second config's lookup compared it with the first's and raised the value's error to the
    caller: a call failed before its function ran.
    """
    manager = ResilienceManager(alert_system=alerts)
    first, second = holder(Ambiguous()), holder(Ambiguous())
    assert manager.execute_with_resilience_sync(_search, spec_config(first), "db") == "db"
    assert manager.execute_with_resilience_sync(_search, spec_config(second), "db") == "db"
    assert manager.get_resilience_statistics()["limits"]["policies"] == 2
    # Another config object holding the same value: one policy where its comparison tells the value
    # by identity (a dataclass's == up to Python 3.12), another from 3.13 (field by field, no identity
    # test first): never a failed call.
    again = spec_config(first)
    assert manager.execute_with_resilience_sync(_search, again, "db") == "db"


@pytest.mark.parametrize(
    "default",
    [
        lambda: types.MappingProxyType({"status": "error"}),  # the immutable dict the fallback advises
        lambda: [Point(1, 2)],
        lambda: {"status": collections.defaultdict(list)},
    ],
    ids=["mapping-proxy", "namedtuple", "defaultdict"],
)
def test_equal_configs_holding_read_only_or_subclassed_containers_share_one_policy(
    default: Any, alerts: AlertSystem
) -> None:
    """A config built per call whose default is a MappingProxyType, a namedtuple or a defaultdict finds one policy."""
    manager = ResilienceManager(alert_system=alerts)
    for _ in range(5):
        manager.execute_with_resilience_sync(_search, spec_config(default()), "db")
    stats = manager.get_resilience_statistics()
    assert stats["limits"]["policies"] == 1
    assert stats["policies"]["db_query"]["total"] == 5


def _charge(service: str) -> str:
    raise ConnectionError(service)


def _search(service: str) -> str:
    return service


def test_partials_of_different_functions_do_not_share_a_breaker(alerts: AlertSystem) -> None:
    """A failing partial opens its own breaker only: another function's partial keeps working."""
    manager = ResilienceManager(alert_system=alerts)
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0))
    payments = functools.partial(_charge, "payments")
    search = functools.partial(_search, "search")
    with pytest.raises(ConnectionError):
        manager.execute_with_resilience_sync(payments, config)
    with pytest.raises(CircuitOpenError):
        manager.execute_with_resilience_sync(payments, config)
    assert manager.execute_with_resilience_sync(search, config) == "search"
    names = set(manager.get_resilience_statistics()["circuit_breakers"])
    assert any("_charge" in name for name in names)
    assert any("_search" in name for name in names)


def test_lambdas_of_different_lines_get_different_policies(alerts: AlertSystem) -> None:
    """Two lambdas defined in one function are named by module and line, so they do not collide."""
    manager = ResilienceManager(alert_system=alerts)
    first = lambda: 1  # noqa: E731 - the case under test
    second = lambda: 2  # noqa: E731 - the case under test
    manager.execute_with_resilience_sync(first, ResilienceConfig())
    manager.execute_with_resilience_sync(second, ResilienceConfig())
    policies = manager.get_resilience_statistics()["policies"]
    lambdas = [name for name in policies if "<lambda>" in name]
    assert len(lambdas) == 2
    assert all(name.startswith(__name__) for name in lambdas)


class Unnameable:
    """A callable whose ``__qualname__`` and ``repr`` raise."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)

    def __repr__(self) -> str:
        raise RuntimeError("repr")

    def __call__(self) -> int:
        return 1


async def test_a_function_whose_name_cannot_be_read_is_named_after_its_class(alerts: AlertSystem) -> None:
    """A callable whose __qualname__ raises runs under a policy named after its class, as any callable object does."""
    manager = ResilienceManager(alert_system=alerts)
    assert manager.execute_with_resilience_sync(Unnameable(), ResilienceConfig()) == 1
    assert "Unnameable" in manager.get_resilience_statistics()["policies"]
    assert manager.execute_with_resilience_sync(Unnameable(), ResilienceConfig(name="named")) == 1


def test_recovery_without_rules_warns_once_per_manager(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem
) -> None:
    """enable_recovery on a manager whose recovery system has no rule logs one warning per manager."""

    def ok() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="otel_resilience.manager"):
        for manager in (ResilienceManager(alert_system=alerts), ResilienceManager(alert_system=alerts)):
            for name in ("a", "b"):
                manager.execute_with_resilience_sync(ok, ResilienceConfig(enable_recovery=True, name=name))
    warnings = [r for r in caplog.records if "no rule" in r.getMessage()]
    assert len(warnings) == 2


def test_a_named_policy_with_recovery_but_no_rule_warns_too(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem
) -> None:
    """A named policy (made with recovery, or reconfigured to it) warns as a config's policy does, once."""

    def ok() -> int:
        return 1

    with caplog.at_level(logging.WARNING, logger="otel_resilience.manager"):
        made = ResilienceManager(alert_system=alerts)
        assert made.policy("made-with", ResilienceConfig(enable_recovery=True)).execute_sync(ok) == 1
        made.policy("made-with-too", ResilienceConfig(enable_recovery=True)).execute_sync(ok)
        reloaded = ResilienceManager(alert_system=alerts)
        handle = reloaded.policy("reloaded-to", ResilienceConfig())
        handle.execute_sync(ok)
        reloaded.reconfigure("reloaded-to", ResilienceConfig(enable_recovery=True))
        handle.execute_sync(ok)
    warnings = [r.getMessage() for r in caplog.records if "no rule" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "'made-with'" in warnings[0]
    assert "'reloaded-to'" in warnings[1]


def test_policy_counts_say_what_they_count(alerts: AlertSystem) -> None:
    """policies and executions split successful into first-attempt and after-failure, with no ambiguous key."""
    manager = ResilienceManager(alert_system=alerts)

    def ok() -> int:
        return 1

    manager.execute_with_resilience_sync(ok, ResilienceConfig(name="keys"))
    stats = manager.get_resilience_statistics()
    for counts in (stats["policies"]["keys"], stats["executions"]):
        assert counts["successful"] == counts["successful_first_attempt"] + counts["successful_after_failure"]
        assert counts["successful_first_attempt"] == 1
        assert not {"succeeded", "recovered"} & set(counts)
    assert {"total", "successful", "failed", "success_rate"} <= set(stats["executions"])
    assert {"recovery_rate", "successful_recoveries"} <= set(stats["error_recovery"])


def test_live_policies_breakers_and_bulkheads_are_capped_and_counts_kept(alerts: AlertSystem) -> None:
    """Past max_policies, idle policies are evicted, and their counts stay in the totals."""
    manager = ResilienceManager(max_policies=10, alert_system=alerts)

    def ok() -> int:
        return 1

    for i in range(100):
        config = ResilienceConfig(
            name=f"tenant-{i}", circuit_breaker=CircuitBreakerConfig(), bulkhead_config=BulkheadConfig()
        )
        manager.execute_with_resilience_sync(ok, config)
        manager.execute_with_resilience_sync(ok, config)
    stats = manager.get_resilience_statistics()
    limits = stats["limits"]
    assert limits["policies"] <= 10
    assert limits["circuit_breakers"] <= 10
    assert limits["bulkheads"] <= 10
    assert limits["evicted_policies"] >= 90
    assert len(stats["circuit_breakers"]) <= 10
    assert stats["executions"]["total"] == 200
    assert stats["executions"]["successful"] == 200


def test_decorated_functions_not_called_again_do_not_pin_evicted_policies(alerts: AlertSystem) -> None:
    """A @resilient function whose policy was evicted holds neither its pipeline nor its breaker.

    It keeps its cache entry until its next call: 300 such functions kept 300 breakers and
    300 bulkheads past max_policies=4 (their pipelines retiring for ever, as if a call ran).
    """
    manager = ResilienceManager(max_policies=4, alert_system=alerts)
    functions = []
    for i in range(40):

        @resilient(
            ResilienceConfig(
                name=f"dep-{i}", circuit_breaker=CircuitBreakerConfig(), bulkhead_config=BulkheadConfig()
            ),
            manager=manager,
        )
        def call() -> int:
            return 1

        functions.append(call)
    for call in functions:
        call()
    for i in range(4):  # new policies: the stores trim what their evicted ones released
        manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name=f"other-{i}"))
    stats = manager.get_resilience_statistics()
    assert stats["limits"]["circuit_breakers"] <= 4
    assert stats["limits"]["bulkheads"] <= 4
    assert stats["executions"]["total"] == 44
    assert [call() for call in functions] == [1] * 40  # an evicted one finds its policy again
    assert manager.get_resilience_statistics()["executions"]["total"] == 84


def test_an_entry_read_as_its_policy_is_evicted_still_runs_calls(alerts: AlertSystem) -> None:
    """A cache entry that dies between its look-up and its call runs the call in its policy found again."""
    manager = ResilienceManager(max_policies=1, alert_system=alerts)
    config = ResilienceConfig(name="first", circuit_breaker=CircuitBreakerConfig())
    entry = manager._entry_for(config, "first")
    manager.execute_with_resilience_sync(lambda: 1, config)
    for i in range(3):
        manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name=f"other-{i}"))
    assert not entry.live
    assert entry.pipeline.execute_packed_sync(lambda: 2, (), {}) == 2
    assert asyncio.run(entry.pipeline.execute_packed(asyncio.sleep, (0, 3), {})) == 3
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 6
    assert stats["policies"]["first"]["total"] == 2
    assert manager.pipeline_for(config, "first") is manager._entry_for(config, "first").pipeline


def test_open_breakers_and_busy_bulkheads_are_not_evicted(alerts: AlertSystem) -> None:
    """An OPEN breaker and a bulkhead holding a call survive any number of other policies."""
    manager = ResilienceManager(max_policies=2, alert_system=alerts)
    tripping = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0), name="down"
    )

    def boom() -> None:
        raise ConnectionError

    def ok() -> int:
        return 1

    with pytest.raises(ConnectionError):
        manager.execute_with_resilience_sync(boom, tripping)
    breaker = manager.get_circuit_breaker("down")
    bulkhead = manager.get_bulkhead("busy", BulkheadConfig(max_concurrent=1))
    with bulkhead.slot():
        for i in range(20):
            manager.execute_with_resilience_sync(ok, ResilienceConfig(name=f"other-{i}"))
            manager.get_circuit_breaker(f"cb-{i}")
            manager.get_bulkhead(f"bh-{i}")
        assert manager.get_bulkhead("busy") is bulkhead
    assert manager.get_circuit_breaker("down") is breaker
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        manager.execute_with_resilience_sync(ok, tripping)


async def test_a_breaker_opened_by_a_call_of_an_evicted_policy_stays_open(alerts: AlertSystem) -> None:
    """A policy evicted while its call runs keeps its breaker kept: the call may still open it.

    The policy's breaker was released at once: CLOSED and used by no live policy, it was evicted
    by the next policy's trim, the running call then opened it, and once that call's pipeline was
    gone the OPEN state went with it: the next call went straight to the failing dependency.
    """
    manager = ResilienceManager(max_policies=1, alert_system=alerts)
    tripping = ResilienceConfig(
        name="down", circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
    )
    release = asyncio.Event()

    async def hang_then_fail() -> None:
        await release.wait()
        raise ConnectionError("down")

    async def ok() -> str:
        return "ok"

    running = asyncio.create_task(manager.execute_with_resilience(hang_then_fail, tripping))
    await asyncio.sleep(0)  # the call runs, inside the breaker
    other = ResilienceConfig(name="other", circuit_breaker=CircuitBreakerConfig())
    assert await manager.execute_with_resilience(ok, other) == "ok"  # evicts the idle-looking policy
    assert manager.get_resilience_statistics()["limits"]["evicted_policies"] == 1
    release.set()
    with pytest.raises(ConnectionError):
        await running
    del running
    gc.collect()  # the evicted pipeline is gone
    assert manager.get_circuit_breaker("down").state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await manager.execute_with_resilience(ok, tripping)
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 3
    assert stats["circuit_breakers"]["down"]["state"] == "open"


def _failing_dependency_configs() -> list[CircuitBreakerConfig]:
    """Breakers that hold failures while CLOSED: a consecutive-failure streak, a window's failures."""
    return [
        CircuitBreakerConfig(failure_threshold=3, timeout=60.0),
        CircuitBreakerConfig(
            sliding_window=CountWindow(size=10), minimum_calls=3, failure_rate_threshold=0.5, timeout=60.0
        ),
    ]


@pytest.mark.parametrize("breaker", _failing_dependency_configs(), ids=["streak", "window"])
def test_a_closed_breaker_holding_failures_outlives_idle_breakers_holding_none(
    alerts: AlertSystem, breaker: CircuitBreakerConfig
) -> None:
    """Under name churn past the cap, a failing dependency's breaker keeps its failures and opens.

    Its policy was evicted between its calls, and its CLOSED breaker went with it once idle:
    each call of the name started from a new breaker, holding one failure, so it never opened.
    """
    manager = ResilienceManager(max_policies=2, alert_system=alerts)
    down = ResilienceConfig(name="down", circuit_breaker=breaker)

    def boom() -> None:
        raise ConnectionError

    def ok() -> int:
        return 1

    for round_ in range(3):
        with pytest.raises(ConnectionError):
            manager.execute_with_resilience_sync(boom, down)
        for i in range(5):
            other = ResilienceConfig(name=f"other-{round_}-{i}", circuit_breaker=CircuitBreakerConfig())
            manager.execute_with_resilience_sync(ok, other)
    stats = manager.get_resilience_statistics()
    assert stats["limits"]["evicted_policies"] >= 12  # the churn went past the cap
    assert stats["circuit_breakers"]["down"]["state"] == "open"
    with pytest.raises(CircuitOpenError):
        manager.execute_with_resilience_sync(ok, down)


def test_a_breaker_holding_failures_outlives_its_evicted_policy(alerts: AlertSystem) -> None:
    """A policy evicted among more failing policies than the cap leaves its breaker kept, failures and all."""
    manager = ResilienceManager(max_policies=2, alert_system=alerts)
    breaker = CircuitBreakerConfig(failure_threshold=2, timeout=60.0)
    down = ResilienceConfig(name="down", circuit_breaker=breaker)

    def boom() -> None:
        raise ConnectionError

    def ok() -> int:
        return 1

    for name in ("down", "failing-a", "failing-b"):
        with pytest.raises(ConnectionError):
            manager.execute_with_resilience_sync(boom, replace(down, name=name))
    for i in range(6):
        manager.execute_with_resilience_sync(
            ok, ResilienceConfig(name=f"other-{i}", circuit_breaker=CircuitBreakerConfig())
        )
    stats = manager.get_resilience_statistics()
    assert "down" not in stats["policies"]  # the least recently used of three failing policies
    assert stats["circuit_breakers"]["down"]["failure_count"] == 1
    with pytest.raises(ConnectionError):
        manager.execute_with_resilience_sync(boom, down)
    with pytest.raises(CircuitOpenError):
        manager.execute_with_resilience_sync(ok, down)


def test_policies_and_breakers_holding_failures_are_still_bounded_by_the_cap(alerts: AlertSystem) -> None:
    """More failing names than the cap: the least recently used of them go, memory stays bounded.

    At most the cap of idle policies, and of idle breakers, are kept: a breaker a live policy uses
    is not idle, so the breakers kept are at most those of the live policies and the cap.
    """
    manager = ResilienceManager(max_policies=3, alert_system=alerts)

    def boom() -> None:
        raise ConnectionError

    for i in range(100):
        config = ResilienceConfig(
            name=f"failing-{i}", circuit_breaker=CircuitBreakerConfig(failure_threshold=5)
        )
        with pytest.raises(ConnectionError):
            manager.execute_with_resilience_sync(boom, config)
    stats = manager.get_resilience_statistics()
    limits = stats["limits"]
    assert limits["policies"] <= 2 * 3
    assert limits["circuit_breakers"] <= limits["policies"] + 3
    assert limits["evicted_policies"] >= 90
    assert limits["evicted_circuit_breakers"] >= 90
    assert {"failing-97", "failing-98", "failing-99"} <= set(stats["circuit_breakers"])
    assert "failing-0" not in stats["circuit_breakers"]


def test_an_evicted_breaker_still_held_is_the_one_found_again(alerts: AlertSystem) -> None:
    """A breaker evicted while the caller still holds it comes back: one instance per name per manager."""
    manager = ResilienceManager(max_policies=1, alert_system=alerts)
    held = manager.get_circuit_breaker("held")
    for i in range(5):
        manager.get_circuit_breaker(f"other-{i}")
    assert manager.get_resilience_statistics()["limits"]["evicted_circuit_breakers"] >= 1
    assert manager.get_circuit_breaker("held") is held


def test_bad_max_policies(alerts: AlertSystem) -> None:
    """max_policies must be an int >= 1, named in the error."""
    with pytest.raises(ValueError, match=r"ResilienceManager\.max_policies"):
        ResilienceManager(max_policies=0, alert_system=alerts)


def test_threads_churning_through_more_names_than_the_cap_lose_no_count(alerts: AlertSystem) -> None:
    """Threads calling many names past the cap: every call is in the totals, however policies are evicted."""
    manager = ResilienceManager(max_policies=5, alert_system=alerts)

    def ok() -> int:
        return 1

    def worker(offset: int) -> None:
        for i in range(400):
            manager.execute_with_resilience_sync(ok, ResilienceConfig(name=f"churn-{(i + offset) % 50}"))

    threads = [threading.Thread(target=worker, args=(n * 7,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 2400
    assert stats["executions"]["successful_first_attempt"] == 2400
    assert stats["limits"]["evicted_policies"] > 0


def test_a_policy_in_steady_use_is_not_evicted(alerts: AlertSystem) -> None:
    """A decorated function called between every new policy keeps its pipeline past the cap."""
    manager = ResilienceManager(max_policies=2, alert_system=alerts)

    @resilient(ResilienceConfig(name="hot"), manager=manager)
    def hot() -> int:
        return 1

    def ok() -> int:
        return 1

    hot()
    pipeline = manager.pipeline_for(ResilienceConfig(name="hot"), "hot")
    for i in range(10):
        manager.execute_with_resilience_sync(ok, ResilienceConfig(name=f"cold-{i}"))
        hot()
    assert manager.pipeline_for(ResilienceConfig(name="hot"), "hot") is pipeline
    stats = manager.get_resilience_statistics()
    assert stats["policies"]["hot"]["total"] == 11
    assert stats["limits"]["evicted_policies"] >= 8


def test_default_cap_on_live_policies_is_pinned() -> None:
    """The default cap on live policies is 256: the bound the collection-time target was measured at."""
    assert DEFAULT_MAX_POLICIES == 256
    assert ResilienceManager().get_resilience_statistics()["limits"]["max_policies"] == 256
