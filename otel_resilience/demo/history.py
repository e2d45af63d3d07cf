"""Breaker state changes, reduced as they arrive: what the summary needs of them, in bounded memory.

A run makes state changes for as long as it lasts (``flapping`` about 30 per 600 s cycle, one a
second at the default time scale: 10,000 in under three hours). :class:`BreakerHistory`
keeps none of them beyond the first :data:`KEPT` of each breaker: it counts them, and measures
each recovery time as soon as the breaker closes. What it holds per breaker is its state, its
counts, the longest recovery, the next recovery due on the schedule, the one recovery waiting for
the breaker to close, and the first :data:`KEPT` changes and recoveries the summary lists; so the
counts and the recovery figures are exact however long the run, in constant memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from otel_resilience.demo.scenarios import Scenario

__all__ = ["KEPT", "BreakerHistory", "BreakerRecord", "Recoveries", "Recovery", "Transition"]

KEPT: Final = 200
"""State changes, and recoveries, kept per breaker for the summary to list (every one is counted)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One circuit breaker state change, timestamped on the monotonic clock."""

    at: float
    breaker: str
    old: str
    new: str
    reason: str


@dataclass(frozen=True, slots=True)
class Recovery:
    """A recovery of a dependency while its breaker was not closed.

    Attributes:
        dependency: The dependency, and its breaker's name.
        recovered: When the dependency recovered, in production seconds since the start.
        at: The same moment on the monotonic clock.
        closed: When its breaker closed next (monotonic), or ``None`` if it had not by the end.
    """

    dependency: str
    recovered: float
    at: float
    closed: float | None


@dataclass(frozen=True, slots=True)
class Recoveries:
    """The recovery figures of a run, exact however many recoveries it had.

    Attributes:
        events: The first :data:`KEPT` recoveries of each dependency, by dependency in the order
            asked, then in time order (the one whose breaker had not closed by the end last).
        measured: The recoveries whose breaker closed, every one.
        longest: The longest of them (``closed - at``, monotonic seconds), or ``None`` if none.
        not_closed: The recoveries whose breaker had not closed by the end (one per dependency
            at most).
    """

    events: tuple[Recovery, ...]
    measured: int
    longest: float | None
    not_closed: int


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """What one breaker did, as the summary shows it.

    Attributes:
        changes: Its state changes, every one.
        opened: Whether it opened.
        closed_after_opening: Whether it closed after it first opened.
        first: Its first :data:`KEPT` state changes, in order.
    """

    changes: int
    opened: bool
    closed_after_opening: bool
    first: tuple[Transition, ...]


class _Log:
    """One breaker's state changes, reduced (see :class:`BreakerHistory`)."""

    __slots__ = (
        "changes",
        "closed_after_opening",
        "due",
        "first",
        "longest",
        "measured",
        "opened",
        "pending",
        "recoveries",
        "state",
    )

    def __init__(self, due: float | None) -> None:
        self.state = "closed"
        self.changes = 0
        self.opened = False
        self.closed_after_opening = False
        self.first: list[Transition] = []
        self.due = due  # the next recovery on the schedule not yet judged (production seconds)
        self.pending: float | None = None  # the recovery waiting for the breaker to close
        self.measured = 0
        self.longest: float | None = None
        self.recoveries: list[Recovery] = []


class BreakerHistory:
    """Every breaker's state changes, reduced as they arrive.

    A recovery of a dependency (the end of a failing window, :meth:`Scenario.recoveries`) is
    measured when the breaker named after it was not closed then: from the recovery to the
    breaker's next ``closed`` transition, unless the dependency failed again before that
    (:meth:`Scenario.next_failure`; its next recovery is measured instead). A recovery is judged
    by the state the breaker was in at that moment, once a later change (or the end) shows it.

    Not thread-safe by itself: :class:`~otel_resilience.demo.monitor.Monitor` adds each change
    under its lock, in time order.

    Args:
        scenario: The schedule whose recoveries are measured; ``None`` measures none.
        start: The run's start, monotonic.
        time_scale: Demo seconds per production second.

    Raises:
        ValueError: ``time_scale`` is not a positive finite number.
    """

    def __init__(
        self, scenario: Scenario | None = None, *, start: float = 0.0, time_scale: float = 1.0
    ) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            msg = f"time_scale must be a positive finite number, got {time_scale!r}"
            raise ValueError(msg)
        self._scenario = scenario
        self._start = start
        self._scale = time_scale
        self._logs: dict[str, _Log] = {}

    def measures(self, scenario: Scenario, time_scale: float) -> bool:
        """Return whether this history measures the recoveries of ``scenario`` at ``time_scale``."""
        return self._scenario is not None and self._scenario == scenario and self._scale == time_scale

    def add(self, transition: Transition) -> None:
        """Count one state change (no earlier than the one before it)."""
        log = self._logs.get(transition.breaker)
        if log is None:
            log = self._logs[transition.breaker] = _Log(self._next_recovery(transition.breaker, -math.inf))
        self._judge_until(log, transition.breaker, transition.at)
        log.changes += 1
        if len(log.first) < KEPT:
            log.first.append(transition)
        if transition.new == "closed":
            if log.opened:
                log.closed_after_opening = True
            if log.pending is not None:
                self._measure(log, transition.breaker, log.pending, transition.at)
                log.pending = None
        elif transition.new == "open":
            log.opened = True
        log.state = transition.new

    def record(self, breaker: str) -> BreakerRecord:
        """Return what ``breaker`` did (nothing for a breaker that never changed state)."""
        log = self._logs.get(breaker)
        if log is None:
            return BreakerRecord(0, opened=False, closed_after_opening=False, first=())
        return BreakerRecord(log.changes, log.opened, log.closed_after_opening, tuple(log.first))

    def recoveries(self, breakers: Iterable[str], *, end: float) -> Recoveries:
        """Return the recovery figures of ``breakers`` at ``end`` (monotonic); changes nothing.

        A breaker not named after a dependency of the scenario has none. The recoveries up to
        ``end`` are judged, and those a state change made after ``end`` judged already.
        """
        events: list[Recovery] = []
        measured = 0
        longest: float | None = None
        not_closed = 0
        for name in breakers:
            log = self._logs.get(name)
            if log is None or self._scenario is None or name not in self._scenario.plans:
                continue  # a breaker that never left closed saw every recovery closed
            kept = list(log.recoveries)
            measured += log.measured
            if log.longest is not None:
                longest = log.longest if longest is None else max(longest, log.longest)
            late = self._not_closed(log, name, end)
            if late is not None:
                not_closed += 1
                if len(kept) < KEPT:
                    kept.append(late)
            events.extend(kept)
        return Recoveries(tuple(events), measured, longest, not_closed)

    def _next_recovery(self, breaker: str, after: float) -> float | None:
        scenario = self._scenario
        if scenario is None or breaker not in scenario.plans:
            return None
        return scenario.next_recovery(breaker, after)

    def _judge_until(self, log: _Log, breaker: str, until: float) -> None:
        """Judge the recoveries due before ``until`` (monotonic) by the breaker's state until then.

        While the breaker is closed no recovery is measured: the schedule is skipped to a
        production second before ``until`` at once (a breaker closed for hours costs no more).
        """
        start, scale = self._start, self._scale
        if log.state == "closed" and log.due is not None:
            near = (until - start) / scale - 1.0
            if log.due < near:
                log.due = self._next_recovery(breaker, near)
        while log.due is not None and start + log.due * scale < until:
            if log.state != "closed":
                log.pending = log.due  # a later recovery: the dependency failed again in between
            log.due = self._next_recovery(breaker, log.due)

    def _relapsed(self, breaker: str, recovered: float, by: float) -> bool:
        """Return whether ``breaker``'s dependency failed again after ``recovered``, by ``by`` (monotonic)."""
        scenario = self._scenario
        relapse = None if scenario is None else scenario.next_failure(breaker, recovered)
        return relapse is not None and self._start + relapse * self._scale <= by

    def _measure(self, log: _Log, breaker: str, recovered: float, closed: float) -> None:
        """Count the recovery at ``recovered`` (production) whose breaker closed at ``closed``."""
        if self._relapsed(breaker, recovered, closed):
            return  # it failed again before its breaker closed: the later recovery is measured
        at = self._start + recovered * self._scale
        log.measured += 1
        took = closed - at
        log.longest = took if log.longest is None else max(log.longest, took)
        if len(log.recoveries) < KEPT:
            log.recoveries.append(Recovery(breaker, recovered, at, closed))

    def _not_closed(self, log: _Log, breaker: str, end: float) -> Recovery | None:
        """Return the recovery whose breaker had not closed by ``end``, if any (``log`` unchanged)."""
        if log.state == "closed":
            return None
        horizon = (end - self._start) / self._scale
        pending, due = log.pending, log.due
        while due is not None and due <= horizon:
            pending = due
            due = self._next_recovery(breaker, due)
        if pending is None or self._relapsed(breaker, pending, end):
            return None
        return Recovery(breaker, pending, self._start + pending * self._scale, None)
