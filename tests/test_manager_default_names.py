"""Functions of two modules that share a default policy name are warned about, once per name."""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    ResilienceConfig,
    ResilienceManager,
    resilient,
)
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, key_attribute
from otel_resilience.manager.keys import DefaultNames

WARNING = "share this default name"
_names = itertools.count()


def namesake(module: str, qualname: str) -> Callable[[], str]:
    """A function defined (as far as its name tells) in ``module`` as ``qualname``."""

    def fn() -> str:
        return module

    fn.__module__ = module
    fn.__qualname__ = qualname
    return fn


def async_namesake(module: str, qualname: str) -> Callable[[], Any]:
    """An async function defined (as far as its name tells) in ``module`` as ``qualname``."""

    async def fn() -> str:
        return module

    fn.__module__ = module
    fn.__qualname__ = qualname
    return fn


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def unique(prefix: str) -> str:
    return f"{prefix}_{next(_names)}"


def test_the_warning_names_long_modules_cut(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Modules of 5,000 characters (a function's ``__module__`` is the program's to set) are named
    as a long key is (cut, ending in a digest): the warning stays bounded."""
    name = unique("fetch")
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig())
    modules = ("a" * 5_000, "b" * 5_000)
    first, second = (resilient(config, manager=manager)(namesake(module, name)) for module in modules)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        first()
        second()
    [found] = warnings(caplog)
    assert f"{key_attribute(modules[0])!r} and {key_attribute(modules[1])!r}" in found
    assert len(found) < 3 * MAX_ATTRIBUTE_LENGTH + 300


def test_a_second_modules_function_on_a_taken_default_name_is_warned_about_once(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning names the policy and both modules; a third module's namesake adds none."""
    name = unique("fetch")
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(), bulkhead_config=BulkheadConfig())
    first, second, third = (
        resilient(config, manager=manager)(namesake(module, name)) for module in ("app.a", "app.b", "app.c")
    )
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        assert first() == "app.a"
        assert warnings(caplog) == []
        assert second() == "app.b"
        assert third() == "app.c"
        first()
        second()
    found = warnings(caplog)
    assert len(found) == 1, found
    assert repr(name) in found[0]
    assert "'app.a' and 'app.b'" in found[0]
    assert "ResilienceConfig.name" in found[0]
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 5  # one policy for the three: the warning's point


async def test_the_async_driver_and_execute_with_resilience_are_warned_about_too(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A config object new to the manager takes the function's default name, whatever the API."""
    name = unique("load")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        await resilient(manager=manager)(async_namesake("app.a", name))()
        await manager.execute_with_resilience(async_namesake("app.b", name), ResilienceConfig())
    assert len(warnings(caplog)) == 1
    other = unique("load")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.execute_with_resilience_sync(namesake("app.a", other), ResilienceConfig())
        manager.execute_with_resilience_sync(namesake("app.b", other), ResilienceConfig())
    assert len(warnings(caplog)) == 2


def test_functions_of_one_module_and_named_policies_are_no_namesakes(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A function of the same module again (a module reloaded) and a config that names its policy share on purpose."""
    name = unique("save")
    named = ResilienceConfig(name=unique("named"))
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        resilient(manager=manager)(namesake("app.a", name))()
        resilient(manager=manager)(namesake("app.a", name))()
        manager.execute_with_resilience_sync(functools.partial(namesake("app.a", name)), ResilienceConfig())
        resilient(named, manager=manager)(namesake("app.a", name))()
        resilient(named, manager=manager)(namesake("app.b", name))()
    assert warnings(caplog) == []


def test_each_manager_warns_of_its_own_namesakes(caplog: pytest.LogCaptureFixture) -> None:
    """Two managers share no policy: functions of two modules, one per manager, are no namesakes."""
    name = unique("sync")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        resilient(manager=ResilienceManager())(namesake("app.a", name))()
        resilient(manager=ResilienceManager())(namesake("app.b", name))()
    assert warnings(caplog) == []


class _Counting(DefaultNames):
    """Counts the functions that take a default name."""

    __slots__ = ("taken",)

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    def take(self, config: ResilienceConfig, name: str, fn: Callable[..., Any]) -> None:
        self.taken += 1
        super().take(config, name, fn)


def test_a_call_that_finds_its_policy_takes_no_name(manager: ResilienceManager) -> None:
    """The name is taken when a function is bound to its policy, or a config object is new: not per call."""
    counting = manager._default_names = _Counting()
    decorated = resilient(manager=manager)(namesake("app.a", unique("poll")))
    assert counting.taken == 0  # the manager's policy is found at the first call
    for _ in range(3):
        decorated()
    assert counting.taken == 1
    config = ResilienceConfig()
    fn = namesake("app.a", unique("poll"))
    for _ in range(3):
        manager.execute_with_resilience_sync(fn, config)
    assert counting.taken == 2


def test_the_readme_says_one_config_object_run_for_two_modules_is_not_warned_about(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A config object already run for one module's function finds its policy unchecked: the README says so.

    The check is made where a config object is new to the manager (a call that finds its policy
    costs nothing more), so the README must not promise a warning for every namesake.
    """
    name = unique("quote")
    config = ResilienceConfig()
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.execute_with_resilience_sync(namesake("app.a", name), config)
        assert manager.execute_with_resilience_sync(namesake("app.b", name), config) == "app.b"
    assert warnings(caplog) == []  # one policy for both, told apart nowhere
    readme = " ".join(
        (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8").split()
    )
    said = readme.split("Functions of two modules with one qualified name", 1)[1].split(
        " Two configs that differ", 1
    )[0]
    assert "config object" in said, said
