"""The event stream: exception type names, what the hub accepts as a listener, and a swap of two."""

from __future__ import annotations

import gc
import weakref

import pytest

from otel_resilience.engine.events import (
    AlertRaised,
    Event,
    EventKind,
    RetryScheduled,
    StrategyTelemetry,
    TelemetryHub,
    TelemetrySource,
    error_type_name,
)


def test_type_name_cache_does_not_keep_dynamic_classes_alive() -> None:
    """A class created at run time is named, and freed once nothing else refers to it."""
    dynamic = type("DynamicError", (ConnectionError,), {"__module__": "made.at.runtime"})
    assert error_type_name(dynamic()) == "made.at.runtime.DynamicError"
    assert error_type_name(dynamic()) == "made.at.runtime.DynamicError"
    gone = weakref.ref(dynamic)
    del dynamic
    gc.collect()
    assert gone() is None


class _Half:
    """Opens execution scopes, but lacks the attempt methods of an execution listener."""

    def start_execution(self, source: object, operation: str) -> object:
        return None

    def end_execution(self, handle: object, outcome: object, duration: float, error: object) -> None:
        pass


class _Slotted:
    """An event listener that cannot be referenced weakly."""

    __slots__ = ()

    def on_event(self, source: object, event: object, args: object) -> None:
        pass


@pytest.mark.parametrize("listener", [object(), _Half(), "on_event"], ids=["object", "half", "str"])
def test_add_listener_refuses_what_is_no_listener_naming_the_argument(listener: object) -> None:
    """Something with neither an on_event nor the four scope methods would be ignored for good."""
    hub = TelemetryHub()
    with pytest.raises(TypeError, match=r"TelemetryHub\.add_listener\.listener must be a TelemetryListener"):
        hub.add_listener(listener)
    assert (hub.event_listeners, hub.execution_listeners) == ((), ())


def test_add_listener_refuses_a_weak_flag_that_is_no_bool_or_a_listener_it_cannot_hold_weakly() -> None:
    """``weak="no"`` would be read by truth; a listener with no weak reference cannot be held weakly."""
    hub = TelemetryHub()
    with pytest.raises(TypeError, match=r"TelemetryHub\.add_listener\.weak must be a bool, got 'no'"):
        hub.add_listener(_Slotted(), weak="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"TelemetryHub\.add_listener\.listener must be weakly referenceable"):
        hub.add_listener(_Slotted(), weak=True)
    assert hub.event_listeners == ()
    listener = _Slotted()
    hub.add_listener(listener)
    assert hub.event_listeners == (listener,)


class _Recording:
    """An event and execution listener that records the events it gets."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def on_event(self, source: object, event: object, args: object) -> None:
        self.events.append(event)

    def start_execution(self, source: object, operation: str) -> object:
        return None

    def end_execution(self, handle: object, outcome: object, duration: float, error: object) -> None:
        pass

    def start_attempt(self, source: object, operation: str, attempt: int) -> object:
        return None

    def end_attempt(self, handle: object, outcome: object, error: object) -> None:
        pass


def test_replace_listener_swaps_two_listeners_in_one_change_of_the_hub() -> None:
    """The old one leaves and the new one comes, for events and scopes alike, in one publication:
    no event route, and no state of the hub a reader may see, holds neither of them."""
    hub = TelemetryHub()
    old, new, other = _Recording(), _Recording(), _Recording()
    hub.add_listener(old)
    hub.add_listener(other)
    published: list[tuple[object, ...]] = []

    class _Watching:
        def hear(self, heard: bool) -> None:  # told at every change of the listeners, under its lock
            published.append(hub.event_listeners)

    watching = _Watching()
    hub.follow_attempts(watching)
    published.clear()
    hub.replace_listener(old, new)
    assert published == [(other, new)]
    assert (hub.event_listeners, hub.execution_listeners) == ((other, new), (other, new))
    reporter = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
    reporter.report(Event.RETRY_SCHEDULED, RetryScheduled(1, 0.0, None))
    assert (old.events, new.events) == ([], [Event.RETRY_SCHEDULED])
    hub.replace_listener(old, new)  # old not registered: new stays, no error
    hub.replace_listener(new, new)  # itself: kept
    assert hub.event_listeners == (other, new)


class _Deriving(_Recording):
    """Reports an alert of its own as it hears a retry, as an alert system does."""

    derives_events = True

    def __init__(self, hub: TelemetryHub) -> None:
        super().__init__()
        self._telemetry = StrategyTelemetry(TelemetrySource("alerts", "a"), hub)

    def on_event(self, source: object, event: object, args: object) -> None:
        super().on_event(source, event, args)
        if event is Event.RETRY_SCHEDULED:
            self._telemetry.report(Event.ALERT_RAISED, AlertRaised("k", "warning", "s", "summary"))


def test_a_listener_that_derives_events_hears_each_after_the_others_whenever_it_was_added() -> None:
    """Added first, a listener that reports events as it hears one still hears each event after the
    others: they hear the cause before what it derived from it, held weakly or strongly, after
    another listener came and after it slept and woke."""
    hub = TelemetryHub()
    deriving, first, later = _Deriving(hub), _Recording(), _Recording()
    hub.add_listener(deriving, weak=True)
    hub.add_listener(first)
    reporter = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
    reporter.report(Event.RETRY_SCHEDULED, RetryScheduled(1, 0.0, None))
    assert first.events == [Event.RETRY_SCHEDULED, Event.ALERT_RAISED]
    hub.add_listener(deriving)  # held strongly from now on, in its place
    hub.set_dormant(deriving, dormant=True)
    hub.set_dormant(deriving, dormant=False)
    hub.add_listener(later)
    assert hub.event_listeners == (first, later, deriving)
    reporter.report(Event.RETRY_SCHEDULED, RetryScheduled(2, 0.0, None))
    expected = [Event.RETRY_SCHEDULED, Event.ALERT_RAISED]
    assert (first.events[2:], later.events) == (expected, expected)
    hub.remove_listener(first)
    assert hub.event_listeners == (later, deriving)


def test_add_listener_refuses_a_derives_events_that_is_no_bool_naming_the_argument() -> None:
    """``derives_events = "no"`` would be read by truth, and put the listener last silently."""

    class _Saying(_Recording):
        derives_events = "no"

    hub = TelemetryHub()
    with pytest.raises(
        TypeError, match=r"TelemetryHub\.add_listener\.listener must be a listener whose derives"
    ):
        hub.add_listener(_Saying())
    assert hub.event_listeners == ()


def test_replace_listener_holds_the_new_one_as_add_listener_does_and_names_its_own_arguments() -> None:
    """``weak=True`` holds the new one weakly; what add_listener refuses, it refuses, the old one kept."""
    hub = TelemetryHub()
    old = _Recording()
    hub.add_listener(old)
    with pytest.raises(TypeError, match=r"TelemetryHub\.replace_listener\.new must be a TelemetryListener"):
        hub.replace_listener(old, object())
    with pytest.raises(TypeError, match=r"TelemetryHub\.replace_listener\.weak must be a bool"):
        hub.replace_listener(old, _Recording(), weak="no")  # type: ignore[arg-type]
    assert hub.event_listeners == (old,)
    new = _Recording()
    hub.replace_listener(old, new, weak=True)
    assert hub.listens(new)
    assert not hub.listens(old)
    gone = weakref.ref(new)
    del new
    gc.collect()
    assert gone() is None
    assert hub.event_listeners == ()


def test_a_kind_of_a_pattern_s_own_may_not_take_a_kind_s_name_in_telemetry() -> None:
    """A kind's value is its name in telemetry, unique across every kind: a second owner of one is refused.

    Taken silently, a user's kind named like the library's would reach the OpenTelemetry
    listener as that kind, whose row cannot show its arguments (a telemetry error on every
    report), or would show them as the library's.
    """
    with pytest.raises(
        ValueError, match=r"Taken\.REJECTED's value 'call_rejected' is already the kind Event\.CALL_REJECTED"
    ):

        class Taken(EventKind):
            FINE = "taken_fine_kind"
            REJECTED = "call_rejected"

    class Fine(EventKind):  # the refused class took none of its values
        FINE = "taken_fine_kind"

    with pytest.raises(
        ValueError, match=r"Again\.FINE's value 'taken_fine_kind' is already the kind .*Fine\.FINE"
    ):

        class Again(EventKind):
            FINE = "taken_fine_kind"

    with pytest.raises(TypeError, match=r"Numbered\.ONE must be a str"):

        class Numbered(EventKind):
            ONE = 1

    with pytest.raises(ValueError, match=r"Blank\.EMPTY must be a non-empty name"):

        class Blank(EventKind):
            EMPTY = " "

    assert Fine("taken_fine_kind") is Fine.FINE
