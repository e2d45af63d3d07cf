"""The listener's per-source attribute caches stay bounded whatever the error types seen."""

from __future__ import annotations

import pytest

from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, Outcome, TelemetrySource, error_type_name
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.scopes import MAX_ATTRIBUTE_SETS, SourceInfo


def _info() -> SourceInfo:
    return SourceInfo(TelemetrySource("retry", "flaky", "orders"))


def test_duration_attribute_cache_is_bounded() -> None:
    """One error type per request (a class made at run time) does not grow the cache without end."""
    info = _info()
    for i in range(MAX_ATTRIBUTE_SETS * 3):
        attrs = info.duration(Outcome.FAILURE, f"made.at.runtime.Error{i}")
        assert attrs[sc.ERROR_TYPE] == f"made.at.runtime.Error{i}"
        assert attrs[sc.OUTCOME] == "failure"
        assert attrs[sc.POLICY] == "orders"
    assert len(info.duration_attrs) <= MAX_ATTRIBUTE_SETS


def test_attempt_attribute_cache_is_bounded() -> None:
    info = _info()
    for i in range(MAX_ATTRIBUTE_SETS * 3):
        attrs = info.attempt_metric(Outcome.FAILURE, f"made.at.runtime.Error{i}", "hedge")
        assert attrs[sc.ERROR_TYPE] == f"made.at.runtime.Error{i}"
        assert attrs[sc.ATTEMPT_TYPE] == "hedge"
        assert attrs[sc.NAME] == "flaky"
    assert len(info.attempt_metric_attrs) <= MAX_ATTRIBUTE_SETS


def test_cached_attribute_sets_are_reused_below_the_bound() -> None:
    """The cache still serves a repeated error type with the same dict (nothing built per call)."""
    info = _info()
    first = info.duration(Outcome.TIMEOUT, "TimeoutError")
    assert info.duration(Outcome.TIMEOUT, "TimeoutError") is first
    attempt = info.attempt_metric(Outcome.FAILURE, "KeyError", None)
    assert info.attempt_metric(Outcome.FAILURE, "KeyError", None) is attempt


async def test_failures_of_classes_made_per_call_keep_the_cache_bounded(otel, scripted, runner, driver):
    """Through the listener: each failure is recorded under its own error type, the cache stays bounded."""
    pipeline = scripted("per-request-errors")
    calls = MAX_ATTRIBUTE_SETS + 20
    for i in range(calls):
        error = type(f"Error{i}", (RuntimeError,), {"__module__": "made.at.runtime"})

        def fail(error: type[Exception] = error) -> None:
            raise error

        with pytest.raises(RuntimeError):
            await runner(pipeline, driver, fail)
    info = otel.listener._infos.get(pipeline.telemetry.source)
    assert len(info.duration_attrs) <= MAX_ATTRIBUTE_SETS
    counts = {
        p.attributes.get(sc.ERROR_TYPE): p.count
        for p in otel.points(sc.EXECUTION_DURATION)
        if p.attributes[sc.POLICY] == "per-request-errors"
    }
    assert counts[f"made.at.runtime.Error{calls - 1}"] == 1
    assert sum(counts.values()) == calls


def test_error_type_is_cut_to_the_attribute_length() -> None:
    """A class name longer than MAX_ATTRIBUTE_LENGTH is cut, as every user-made telemetry text is."""
    long = type("E" * (MAX_ATTRIBUTE_LENGTH * 2), (ValueError,), {"__module__": "made.at.runtime"})
    name = error_type_name(long())
    assert name is not None
    assert len(name) == MAX_ATTRIBUTE_LENGTH
    assert name.startswith("made.at.runtime.EEE")
    assert name.endswith("...")
