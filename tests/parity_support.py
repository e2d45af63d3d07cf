"""What the differential tests of the two drivers observe of a run, and the virtual time they run in.

A run's names are replaced by ``NAME`` (:func:`shown`) so that two runs, named apart, compare
equal; :class:`FakeTimeLoop` is an event loop on a :class:`~otel_resilience.testing.FakeClock`
whose waits move the clock on (virtual time), and :class:`LoopClock` a fake clock whose async
sleep waits on that loop, so that a deadline's timer due first cuts it.
"""

from __future__ import annotations

import asyncio
import selectors
from typing import Any

from otel_support import Otel

from otel_resilience.testing import FakeClock

WALL_CLOCK_HISTOGRAMS = frozenset({"resilience.attempt.duration"})
"""Histograms of wall-clock durations: only their counts are compared."""


class LoopClock(FakeClock):
    """The fake clock whose async sleep waits on the (fake-time) loop: a deadline's timer due first cuts it."""

    __slots__ = ()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(seconds)


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on the fake clock: when nothing is ready, time moves on to the next timer (virtual time)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(_FakeTimeSelector(clock))
        self._fake = clock

    def time(self) -> float:
        return self._fake.now()


class _FakeTimeSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """A selector that, asked to wait, moves the fake clock on by the wait instead (no I/O is awaited)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._fake = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(timeout if timeout is None else 0)
        if not ready and timeout is not None and timeout > 0:
            self._fake.advance(timeout)
        return ready


def shown(value: object, name: str) -> Any:
    """``value`` with the run's own names replaced by ``NAME`` (the two runs are named apart)."""
    if isinstance(value, str):
        return value.replace(name, "NAME")
    if isinstance(value, dict):
        return {shown(k, name): shown(v, name) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(shown(v, name) for v in value)
    return value


def error_shown(error: BaseException, name: str) -> tuple[Any, ...]:
    """What the caller sees of an error: its type, message and notes, and the types it chains."""
    cause = None if error.__cause__ is None else type(error.__cause__).__name__
    chained = error.__context__ if not error.__suppress_context__ else None
    context = None if chained is None else type(chained).__name__
    notes = tuple(getattr(error, "__notes__", ()))
    return ("raised", type(error).__name__, shown(str(error), name), shown(notes, name), cause, context)


def spans_seen(otel: Otel, name: str) -> list[Any]:
    """Every finished span, in the order they ended: name, status, attributes, events, has a parent."""
    return [
        (
            shown(span.name, name),
            span.status.status_code.name,
            shown(span.status.description, name),
            shown(dict(span.attributes or {}), name),
            [(event.name, shown(dict(event.attributes or {}), name)) for event in span.events],
            span.parent is not None,
        )
        for span in otel.span_exporter.get_finished_spans()
    ]


def logs_seen(otel: Otel, name: str) -> list[Any]:
    """Every log record emitted through the SDK: severity, body and attributes."""
    return [
        (record.severity_text, shown(str(record.body), name), shown(dict(record.attributes or {}), name))
        for record in otel.logs()
    ]


def points_seen(otel: Otel, name: str) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
    """Every metric point of this run (an attribute names it), by metric name and attributes."""
    found: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
    for metric_name, metric in otel.metrics().items():
        for point in metric.data.data_points:
            attributes = dict(point.attributes)
            if not any(isinstance(value, str) and name in value for value in attributes.values()):
                continue
            key = (metric_name, frozenset(shown(attributes, name).items()))
            if hasattr(point, "value"):
                found[key] = point.value
            elif metric_name in WALL_CLOCK_HISTOGRAMS:
                found[key] = point.count
            else:
                found[key] = (point.count, point.sum, tuple(point.bucket_counts))
    return found
