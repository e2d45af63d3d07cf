"""The weak registry: one reference per instance, found by name, gone with the instance."""

from __future__ import annotations

import gc

import pytest

from otel_resilience.engine.registry import NamesakeOwner, Registry, namesakes_expected


class Thing:
    """A named instance (weakly referenceable, hashed by identity)."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_the_newest_namesake_is_found_and_the_older_one_after_it_dies(unraisable: list[object]) -> None:
    registry: Registry[Thing] = Registry("thing")
    older, newer = Thing("a"), Thing("a")
    with namesakes_expected():
        registry.register(older)
        registry.register(newer)
    assert registry.get("a") is newer
    assert len(registry) == 2
    del newer
    gc.collect()
    assert registry.get("a") is older
    assert registry.items() == [older]
    del older
    gc.collect()
    assert registry.get("a") is None
    assert len(registry) == 0
    assert unraisable == []


def test_an_unfindable_instance_is_exported_but_never_found(unraisable: list[object]) -> None:
    registry: Registry[Thing] = Registry("thing")
    hidden, shown = Thing("a"), Thing("b")
    registry.register(hidden, findable=False)
    registry.register(shown)
    assert registry.get("a") is None
    assert set(map(id, registry.items())) == {id(hidden), id(shown)}
    del hidden, shown
    gc.collect()
    assert registry.items() == []
    assert unraisable == []


def test_unregister_takes_an_instance_out_of_both_places() -> None:
    registry: Registry[Thing] = Registry("thing")
    older, newer = Thing("a"), Thing("a")
    with namesakes_expected():
        registry.register(older)
        registry.register(newer)
    registry.unregister(older)
    assert registry.items() == [newer]
    registry.unregister(newer)
    assert registry.get("a") is None
    assert registry.items() == []


def test_registering_an_instance_twice_keeps_one_entry() -> None:
    registry: Registry[Thing] = Registry("thing", warn_namesakes=True)
    thing = Thing("a")
    registry.register(thing)
    registry.register(thing)
    assert registry.items() == [thing]
    assert len(registry) == 1


def test_a_live_namesake_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    registry: Registry[Thing] = Registry("thing", warn_namesakes=True)
    first, second = Thing("a"), Thing("a")
    registry.register(first)
    registry.register(second)
    assert "a second live thing is named 'a'" in caplog.text
    assert registry.get("a") is second


def test_an_owners_namesakes_are_expected_and_anyone_elses_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under an owner's token, its own namesakes are silent; another's is warned about once per name."""
    registry: Registry[Thing] = Registry("thing", warn_namesakes=True)
    owner, other = NamesakeOwner(), NamesakeOwner()
    things = [Thing("a") for _ in range(5)]
    registry.register(things[0])  # a standalone one
    with namesakes_expected(owner):
        registry.register(things[1])  # displaces the standalone one: warned
        registry.register(things[2])  # its own: silent
    with namesakes_expected(other):
        registry.register(things[3])  # displaces the owner's: warned
    with namesakes_expected(owner):
        registry.register(things[4])  # displaces the other's again: told already
    assert caplog.text.count("a second live thing is named 'a'") == 2
    assert registry.get("a") is things[4]
