"""add_note: the same notes, and the same refusals, on every Python version (3.10 has no ``add_note``)."""

from __future__ import annotations

import dataclasses

from otel_resilience.engine.notes import add_note


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """A frozen dataclass: setting ``__notes__`` raises ``FrozenInstanceError``."""

    code: int = 503


class WatchedError(Exception):
    """Records every attribute set on it."""

    def __init__(self) -> None:
        super().__init__("watched")
        self.__dict__["set"] = []

    def __setattr__(self, name: str, value: object) -> None:
        self.__dict__["set"].append(name)
        super().__setattr__(name, value)


def test_a_note_is_added_to_a_list_of_its_own():
    error = ValueError("boom")
    assert add_note(error, "first")
    assert add_note(error, "second")
    assert error.__notes__ == ["first", "second"]


def test_a_frozen_dataclass_takes_no_note():
    """Its ``__setattr__`` refuses ``__notes__``: no note is written behind it, and add_note says so."""
    error = FrozenError()
    assert add_note(error, "note") is False
    assert not hasattr(error, "__notes__")
    assert "__notes__" not in vars(error)


def test_notes_are_set_through_the_errors_setattr():
    """The first note sets ``__notes__`` as an attribute, as ``BaseException.add_note`` does."""
    error = WatchedError()
    assert add_note(error, "note")
    assert error.__dict__["set"] == ["__notes__"]
    assert error.__notes__ == ["note"]


def test_notes_that_are_not_a_list_refuse_a_note():
    error = ValueError("boom")
    error.__notes__ = ("kept",)
    assert add_note(error, "note") is False
    assert error.__notes__ == ("kept",)
    error.__notes__ = None
    assert add_note(error, "note") is False
    assert error.__notes__ is None


def test_replacing_drops_the_earlier_notes_of_that_prefix():
    error = ValueError("boom")
    error.__notes__ = ["user", "lib: 1"]
    assert add_note(error, "lib: 2", replacing="lib:")
    assert error.__notes__ == ["user", "lib: 2"]
