"""The event stream: exception type names, and what the hub accepts as a listener."""

from __future__ import annotations

import gc
import weakref

import pytest

from otel_resilience.engine.events import TelemetryHub, error_type_name


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
