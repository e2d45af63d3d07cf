"""A breaker's state changes reach its callbacks in the order they happened, from any thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from forking_support import run_in_child

from otel_resilience import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.patterns.circuit_breaker import core as breaker_core


def _breaker(name: str) -> CircuitBreaker:
    return CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=1, timeout=30.0))


def test_a_change_made_while_another_thread_delivers_is_delivered_after_it() -> None:
    """Thread A opens the breaker and its callback is slow; B resets it meanwhile: OPEN, then CLOSED."""
    breaker = _breaker("ordered")
    inside, release = threading.Event(), threading.Event()
    delivered: list[str] = []

    def slow_on_open(change: Any) -> None:
        if change.new == "open":
            inside.set()
            assert release.wait(10.0)
        delivered.append(change.new)  # recorded as each delivery ends

    breaker.on_state_change(slow_on_open)
    opener = threading.Thread(target=breaker.force_open)
    opener.start()
    assert inside.wait(10.0)
    breaker.reset()  # returns at once: the thread delivering this breaker's changes delivers it
    assert delivered == []
    release.set()
    opener.join(10.0)
    assert delivered == ["open", "closed"]
    assert breaker_core._UNDELIVERED == {}
    assert not breaker_core._DELIVERING


def test_a_change_made_inside_a_callback_is_delivered_after_the_one_being_delivered() -> None:
    """A callback that resets the breaker sees its own change after every callback of the current one."""
    breaker = _breaker("reentered")
    seen: list[tuple[str, str]] = []

    def first(change: Any) -> None:
        seen.append(("first", change.new))
        if change.new == "open":
            breaker.reset()

    breaker.on_state_change(first)
    breaker.on_state_change(lambda change: seen.append(("second", change.new)))
    breaker.force_open()
    assert seen == [("first", "open"), ("second", "open"), ("first", "closed"), ("second", "closed")]


def test_an_interrupted_delivery_keeps_the_later_changes_for_the_next_one() -> None:
    """A KeyboardInterrupt from a callback passes; the changes after it are delivered next time, in order."""
    breaker = _breaker("interrupted")
    seen: list[str] = []

    def interrupting(change: Any) -> None:
        seen.append(f"{change.old}>{change.new}")
        if change.new == "open" and len(seen) == 1:
            breaker.reset()  # queued behind the change being delivered
            raise KeyboardInterrupt

    breaker.on_state_change(interrupting)
    with pytest.raises(KeyboardInterrupt):
        breaker.force_open()
    assert seen == ["closed>open"]
    assert not breaker_core._DELIVERING
    breaker.force_open()
    assert seen == ["closed>open", "open>closed", "closed>open"]
    assert breaker_core._UNDELIVERED == {}


def test_an_interrupted_delivery_of_the_last_change_keeps_nothing() -> None:
    """A KeyboardInterrupt from the callback of the only change leaves no entry behind.

    Nothing is left to deliver, so the breaker's core must not stay in ``_UNDELIVERED`` (held
    for good there, with its window and its callbacks, once the breaker is dropped).
    """
    breaker = _breaker("interrupted-last")
    seen: list[str] = []

    def interrupting(change: Any) -> None:
        seen.append(change.new)
        if len(seen) == 1:
            raise KeyboardInterrupt

    breaker.on_state_change(interrupting)
    with pytest.raises(KeyboardInterrupt):
        breaker.force_open()
    assert breaker_core._UNDELIVERED == {}
    assert not breaker_core._DELIVERING
    breaker.reset()
    assert seen == ["open", "closed"]
    assert breaker_core._UNDELIVERED == {}


def test_a_child_forked_while_another_thread_delivers_delivers_its_own_changes() -> None:
    """The parent's delivering thread does not exist in the child: the child's changes reach its callbacks."""
    breaker = _breaker("forked")
    inside, release = threading.Event(), threading.Event()
    delivered: list[str] = []

    def on_change(change: Any) -> None:
        if change.new == "open" and not inside.is_set():
            inside.set()
            assert release.wait(10.0)
        delivered.append(change.new)

    breaker.on_state_change(on_change)
    opener = threading.Thread(target=breaker.force_open)
    opener.start()
    assert inside.wait(10.0)

    def child() -> None:
        delivered.clear()
        breaker.reset()
        assert delivered == ["closed"], delivered

    try:
        assert run_in_child(child) == 0
    finally:
        release.set()
        opener.join(10.0)
    assert delivered == ["open"]  # the parent's own: the child's reset was the child's
