"""The exception type names of the event stream."""

from __future__ import annotations

import gc
import weakref

from otel_resilience.engine.events import error_type_name


def test_type_name_cache_does_not_keep_dynamic_classes_alive() -> None:
    """A class created at run time is named, and freed once nothing else refers to it."""
    dynamic = type("DynamicError", (ConnectionError,), {"__module__": "made.at.runtime"})
    assert error_type_name(dynamic()) == "made.at.runtime.DynamicError"
    assert error_type_name(dynamic()) == "made.at.runtime.DynamicError"
    gone = weakref.ref(dynamic)
    del dynamic
    gc.collect()
    assert gone() is None
