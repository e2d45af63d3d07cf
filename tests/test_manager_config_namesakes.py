"""Two live configs under one policy name are warned about, once per name, where the second policy is made."""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Iterable

import pytest

from otel_resilience import (
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    resilient,
)
from otel_resilience.manager.keys import ConfigNamesakes
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.testing import FakeClock

WARNING = "has two live configs"
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_names)}"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def retrying(name: str | None, attempts: int) -> ResilienceConfig:
    return ResilienceConfig(name=name, retry_policy=RetryPolicy(max_attempts=attempts))


def answer() -> str:
    return "ok"


async def async_answer() -> str:
    return "ok"


def test_two_configs_run_under_one_name_are_warned_about_once(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning names the policy, the fields that differ and the way to change a config on purpose."""
    name = unique("payments")
    first = retrying(name, 2)
    second = ResilienceConfig(
        name=name,
        retry_policy=RetryPolicy(max_attempts=5),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="cached"),
    )
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.execute_with_resilience_sync(answer, first)
        assert warnings(caplog) == []
        manager.execute_with_resilience_sync(answer, second)
        manager.execute_with_resilience_sync(answer, retrying(name, 7))  # a third: the name was told
        for config in (first, second):
            manager.execute_with_resilience_sync(answer, config)
    found = warnings(caplog)
    assert len(found) == 1, found
    assert repr(name) in found[0]
    assert "retry_policy, fallback_config" in found[0]
    assert "manager.reconfigure(name, config)" in found[0]
    assert manager.get_resilience_statistics()["executions"]["total"] == 5


async def test_the_async_driver_and_the_decorator_are_warned_about_once_per_name(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """The async driver and ``@resilient`` (sync or async) warn as the sync driver does, once per name."""
    async_name, mixed_name = unique("search"), unique("orders")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        await manager.execute_with_resilience(async_answer, retrying(async_name, 2))
        await manager.execute_with_resilience(async_answer, retrying(async_name, 3))
        await resilient(retrying(async_name, 4), manager=manager)(async_answer)()
        assert len(warnings(caplog)) == 1
        decorated = resilient(retrying(mixed_name, 2), manager=manager)(answer)
        decorated()
        manager.execute_with_resilience_sync(answer, retrying(mixed_name, 3))
        decorated()
    found = warnings(caplog)
    assert len(found) == 2, found
    assert repr(async_name) in found[0]
    assert repr(mixed_name) in found[1]


def test_a_default_name_taken_by_two_configs_is_warned_about(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A config that leaves ``name`` out is named after its function: the same rule."""

    def refund() -> str:
        return "ok"

    refund.__qualname__ = unique("refund")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        resilient(retrying(None, 2), manager=manager)(refund)()
        resilient(retrying(None, 3), manager=manager)(refund)()
    found = warnings(caplog)
    assert len(found) == 1, found
    assert repr(refund.__qualname__) in found[0]


def test_a_named_policy_beside_another_config_of_its_name_is_warned_about(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Whichever is made first: the named policy, or the policy a decorated function runs by config."""
    handle_first, decorator_first = unique("inventory"), unique("ledger")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.policy(handle_first, retrying(None, 2)).execute_sync(answer)
        resilient(retrying(handle_first, 3), manager=manager)(answer)()
        assert len(warnings(caplog)) == 1
        resilient(retrying(decorator_first, 3), manager=manager)(answer)()
        manager.policy(decorator_first, retrying(None, 2)).execute_sync(answer)
        manager.policy(decorator_first).execute_sync(answer)  # found: made nothing
    found = warnings(caplog)
    assert len(found) == 2, found
    assert repr(handle_first) in found[0]
    assert repr(decorator_first) in found[1]
    assert "retry_policy" in found[1]


def test_a_policy_a_configuration_file_creates_is_warned_about(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A named policy a configuration file creates beside a config-run policy of its name is warned about, once."""
    name = unique("shipping")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.execute_with_resilience_sync(answer, retrying(name, 2))
        manager.apply_config({name: retrying(name, 4)})
        manager.apply_config({name: retrying(name, 4)})
    found = warnings(caplog)
    assert len(found) == 1, found
    assert repr(name) in found[0]


def test_equal_configs_are_no_namesakes(manager: ResilienceManager, caplog: pytest.LogCaptureFixture) -> None:
    """Equal configs share a policy, or (keyed apart by identity) are the same settings: nothing differs."""
    shared, apart, named = unique("profile"), unique("ordered"), unique("catalog")

    def ordered() -> ResilienceConfig:  # an OrderedDict is keyed by identity: a policy per object
        fallback = FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=OrderedDict(a=1))
        return ResilienceConfig(name=apart, fallback_config=fallback)

    def fetch() -> str:
        return "ok"

    fetch.__qualname__ = named
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(3):
            manager.execute_with_resilience_sync(answer, retrying(shared, 2))
            manager.execute_with_resilience_sync(answer, ordered())
        manager.policy(shared, retrying(None, 2)).execute_sync(answer)
        manager.policy(named, retrying(named, 2)).execute_sync(answer)
        resilient(retrying(None, 2), manager=manager)(fetch)()  # its name left out, alike
    assert warnings(caplog) == []
    assert manager.get_resilience_statistics()["limits"]["policies"] >= 4  # the OrderedDict's apart


def test_keys_reloads_and_breakers_of_a_named_policy_are_no_namesakes(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A named policy's keys share its name on purpose, and ``reconfigure`` changes its config on purpose."""
    name = unique("tenants")
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(), retry_policy=RetryPolicy())
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        handle = manager.policy(name, config)
        for key in ("a", "b", "c"):
            handle.for_key(key).execute_sync(answer)
        manager.reconfigure(name, retrying(None, 5))
        manager.apply_config({name: retrying(name, 6)})
        manager.reconfigure_many({name: retrying(None, 7)})
        for key in ("a", "d"):
            handle.for_key(key).execute_sync(answer)
        handle.execute_sync(answer)
    assert warnings(caplog) == []


class _Uncomparable:
    """A value whose ``==`` raises (as an array's truth does): unhashable, so keyed by identity."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        raise ValueError("the truth value of an array is ambiguous")


def test_configs_that_cannot_be_compared_are_told_apart_and_their_calls_run(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """The look at a new policy's namesakes never fails the call that made it."""
    name = unique("matrix")

    def config() -> ResilienceConfig:
        fallback = FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=_Uncomparable())
        return ResilienceConfig(name=name, fallback_config=fallback)

    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(3):
            assert manager.execute_with_resilience_sync(answer, config()) == "ok"
    found = warnings(caplog)
    assert len(found) == 1, found
    assert "fallback_config" in found[0]


class _Counting(ConfigNamesakes):
    """Counts the looks at a name."""

    __slots__ = ("looks",)

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def told(self, name: str) -> bool:
        self.looks += 1
        return super().told(name)

    def check(self, name: str, config: ResilienceConfig, others: Iterable[ResilienceConfig]) -> None:
        self.looks += 1
        super().check(name, config, others)


def test_a_call_that_finds_its_policy_looks_at_no_namesake(manager: ResilienceManager) -> None:
    """Only a call that makes a policy looks: a config object seen before, or equal to one, does not."""
    counting = manager._namesakes = _Counting()
    name = unique("quotes")
    first, second = retrying(name, 2), retrying(name, 3)
    decorated = resilient(first, manager=manager)(answer)
    decorated()
    assert counting.looks == 0  # the first policy of its name
    manager.execute_with_resilience_sync(answer, second)
    made = counting.looks
    assert made > 0
    for _ in range(3):
        decorated()
        manager.execute_with_resilience_sync(answer, second)
        manager.execute_with_resilience_sync(answer, retrying(name, 3))  # equal: finds the policy
    assert counting.looks == made


def _evict_policies_of_others(manager: ResilienceManager, count: int = 4) -> None:
    """Make other policies until the idle ones made before are evicted (past a cap of 1)."""
    for _ in range(count):
        manager.execute_with_resilience_sync(answer, ResilienceConfig(name=unique("other")))


def test_a_policy_beside_a_retiring_one_of_its_name_is_warned_about(
    clock: FakeClock, alerts: AlertSystem, caplog: pytest.LogCaptureFixture
) -> None:
    """An evicted policy whose pipeline still runs (a call running there holds it) is a live config.

    The look found the name's other policy (counted as retiring) but read the configs of the
    live policies only: none differed, and no warning was given, though both configs run.
    """
    manager = ResilienceManager(max_policies=1, clock=clock, alert_system=alerts)
    name = unique("billing")
    config = retrying(name, 2)
    decorated = resilient(config, manager=manager)(answer)
    decorated()
    running = manager.pipeline_for(config, name)  # held, as by a call still running there
    _evict_policies_of_others(manager)
    assert name not in manager.get_resilience_statistics()["policies"]  # evicted, still running
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.execute_with_resilience_sync(answer, retrying(name, 3))
    found = warnings(caplog)
    assert running.execute_sync(answer) == "ok"
    assert len(found) == 1, found
    assert repr(name) in found[0]
    assert "retry_policy" in found[0]


def test_a_named_policy_beside_a_retiring_one_of_its_name_is_warned_about(
    clock: FakeClock, alerts: AlertSystem, caplog: pytest.LogCaptureFixture
) -> None:
    """A named policy made while a policy of its name run by config is retiring is told of it too."""
    manager = ResilienceManager(max_policies=1, clock=clock, alert_system=alerts)
    name = unique("invoices")
    config = retrying(name, 2)
    decorated = resilient(config, manager=manager)(answer)
    decorated()
    running = manager.pipeline_for(config, name)  # held, as by a call still running there
    _evict_policies_of_others(manager)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.policy(name, retrying(None, 3))
        assert len(warnings(caplog)) == 1  # where the second policy is made
        decorated()  # builds its policy again, beside the named one: told already
    found = warnings(caplog)
    assert len(found) == 1, found
    assert repr(name) in found[0]
    assert running.execute_sync(answer) == "ok"
