"""What the demo observed: calls and their latencies, pattern events, breaker transitions, alerts.

:class:`Monitor` is a :class:`~otel_resilience.engine.TelemetryListener` on the engine's
:data:`~otel_resilience.engine.HUB` (the same event stream the OpenTelemetry listener reads) and
an alert subscriber. It keeps plain counters, each breaker's state changes reduced as they arrive
(:class:`~otel_resilience.demo.history.BreakerHistory`: the counts and the recovery times the
summary shows, exact in constant memory however long the run), and a queue of *news*
(transitions, alerts, fault changes) that the views print as they happen. Everything runs on the
event loop's thread; a state change reported from another thread is counted under a lock.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from otel_resilience import Alert
from otel_resilience.demo.history import BreakerHistory, BreakerRecord, Recoveries, Transition
from otel_resilience.demo.scenarios import Scenario
from otel_resilience.engine import Event, TelemetrySource
from otel_resilience.engine.events import (
    CallRejected,
    ChaosInjected,
    EventArgs,
    EventKind,
    FallbackUsed,
    HedgeDenied,
    HedgeStarted,
    HedgeWon,
    RecoveryAttempted,
    RetryExhausted,
    StateChanged,
)

__all__ = ["CallCounters", "LatencyHistogram", "Monitor", "News", "Transition", "percentile"]

_RECENT: Final = 8192
"""Latencies kept per policy for the live percentiles."""
_MAX_TRANSITIONS: Final = 10_000
_MAX_NEWS: Final = 1000
_MAX_ALERTS: Final = 1000


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """Return the ``fraction`` quantile (nearest rank) of ``values``, or ``None`` if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class LatencyHistogram:
    """A fixed log-scale histogram (10 % wide buckets from 10 µs to ~10 min) for whole-run quantiles.

    Memory stays constant however long the run; a quantile is exact to within one bucket (10 %).
    """

    __slots__ = ("_bounds", "_counts", "count", "total")

    _LOW: Final = 1e-5
    _GROWTH: Final = 1.1

    def __init__(self) -> None:
        bounds: list[float] = []
        bound = self._LOW
        while bound < 600.0:
            bounds.append(bound)
            bound *= self._GROWTH
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def record(self, seconds: float) -> None:
        """Count one latency, in seconds."""
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add every latency counted by ``other`` to this histogram."""
        for index, count in enumerate(other._counts):
            self._counts[index] += count
        self.count += other.count
        self.total += other.total

    def quantile(self, fraction: float) -> float | None:
        """Return the upper bound of the bucket holding the ``fraction`` quantile (``None`` if empty)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index, count in enumerate(self._counts):
            seen += count
            if seen >= rank:
                return self._bounds[index] if index < len(self._bounds) else math.inf
        return math.inf  # pragma: no cover - the counts add up to self.count


class CallCounters:
    """What the callers of one policy saw, counted on the caller's side.

    Attributes:
        issued: Calls started.
        answered: Calls that returned a value (the dependency's or a fallback's).
        failed: Calls that raised an expected error (a dependency error or a resilience error).
        cancelled: Calls cancelled by the demo's shutdown.
        lost: Calls that raised anything else: an exception that escaped unaccounted.
        errors: Expected errors by exception class name.
        lost_types: Lost calls by exception class name.
        latency: Response times of every ended call (answered or failed), in real seconds.
        recent: ``(end time, response time)`` of the latest calls, for the live percentiles.
        retries: Retries scheduled (``RETRY_SCHEDULED`` events).
        budget_denied: Retries the retry budget denied (executions that gave up with stop
            reason ``budget``).
        waited: Calls that waited for their rate-limiter permit (``PERMIT_WAITED`` events).
        fallbacks: Fallbacks that answered.
        timeouts: Deadlines that expired.
        rejections: Calls rejected, by reason.
        recovery_success: Recovery actions that succeeded.
        recovery_failure: Recovery actions that failed.
        injected: What the policy's chaos links injected, by kind (``fault``, ``latency``,
            ``outcome``): the simulated faults, each marked as a drill.
        hedges: Hedges started, by trigger (``delay``, ``failure``).
        hedges_denied: Hedges that were due but refused, by what refused them (``denied_by``:
            ``budget``, ``max_attempts``, ``deadline``, ``rejected`` ...).
        wins: Raced executions (more than one attempt), by the attempt type that answered
            (``original``, ``hedge``).
    """

    __slots__ = (
        "answered",
        "budget_denied",
        "cancelled",
        "errors",
        "failed",
        "fallbacks",
        "hedges",
        "hedges_denied",
        "injected",
        "issued",
        "latency",
        "lost",
        "lost_types",
        "recent",
        "recovery_failure",
        "recovery_success",
        "rejections",
        "retries",
        "timeouts",
        "waited",
        "wins",
    )

    def __init__(self) -> None:
        self.issued = 0
        self.answered = 0
        self.failed = 0
        self.cancelled = 0
        self.lost = 0
        self.errors: Counter[str] = Counter()
        self.lost_types: Counter[str] = Counter()
        self.latency = LatencyHistogram()
        self.recent: deque[tuple[float, float]] = deque(maxlen=_RECENT)
        self.retries = 0
        self.budget_denied = 0
        self.waited = 0
        self.fallbacks = 0
        self.timeouts = 0
        self.rejections: Counter[str] = Counter()
        self.recovery_success = 0
        self.recovery_failure = 0
        self.injected: Counter[str] = Counter()
        self.hedges: Counter[str] = Counter()
        self.hedges_denied: Counter[str] = Counter()
        self.wins: Counter[str] = Counter()

    @property
    def rejected(self) -> int:
        """Calls rejected (every reason), answered by a fallback or not."""
        return sum(self.rejections.values())

    @property
    def ended(self) -> int:
        """Calls that have ended, however they ended."""
        return self.answered + self.failed + self.cancelled + self.lost

    def recent_quantile(self, since: float, fraction: float) -> float | None:
        """Return the ``fraction`` quantile of the response times of calls ended after ``since``."""
        return percentile((latency for end, latency in self.recent if end >= since), fraction)


@dataclass(frozen=True, slots=True)
class News:
    """Something worth a line of its own: a breaker transition, an alert or a fault change.

    Attributes:
        at: Real seconds since the start of the run.
        kind: ``"breaker"``, ``"alert"`` or ``"fault"``.
        text: The line to show.
        severity: ``"critical"``, ``"warning"`` or ``"info"``.
    """

    at: float
    kind: str
    text: str
    severity: str = "info"


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as the demo saw it (real seconds since the start)."""

    at: float
    kind: str
    severity: str
    subject: str
    summary: str


class Monitor:
    """Collects what a demo run observes. Register it with ``HUB.add_listener`` and ``subscribe``.

    Args:
        policies: The policy names to count calls for.
        start: The run's start on ``clock``.
        clock: The monotonic clock (``time.monotonic`` by default, as the patterns use).
        scenario: The schedule whose recoveries are measured as the state changes arrive (the
            demo's run passes it); without it :meth:`recoveries` measures from
            :attr:`transitions`, the first 10,000 changes only.
        time_scale: Demo seconds per production second (with ``scenario``).

    Raises:
        ValueError: ``time_scale`` is not a positive finite number.

    Attributes:
        calls: Caller-side counters, by policy.
        transitions: The first 10,000 breaker state changes, in order (every one is counted, and
            each breaker's first 200 kept, by :meth:`breaker`); a ``metrics_only`` breaker's
            would-open trips (``metrics_only -> metrics_only``) are counted in
            :attr:`would_open` instead.
        would_open: The trips each ``metrics_only`` breaker would have made, by breaker name.
        alerts: Every alert, in order (the first 1000).
        alert_kinds: How many alerts of each kind.
        patterns: Error patterns detected.
        news: Lines for the views, oldest first; the views pop them.
    """

    def __init__(
        self,
        policies: Iterable[str],
        *,
        start: float,
        clock: Callable[[], float] = time.monotonic,
        scenario: Scenario | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.start = start
        self._clock = clock
        self._history = BreakerHistory(scenario, start=start, time_scale=time_scale)
        self._lock = threading.Lock()  # the state changes: timestamped and reduced in one step, in order
        self.calls: dict[str, CallCounters] = {name: CallCounters() for name in policies}
        self.transitions: list[Transition] = []
        self.would_open: Counter[str] = Counter()
        self.alerts: list[AlertRecord] = []
        self.alert_kinds: Counter[str] = Counter()
        self.patterns = 0
        self.news: deque[News] = deque(maxlen=_MAX_NEWS)

    def elapsed(self) -> float:
        """Return the real seconds since the start of the run."""
        return self._clock() - self.start

    def add_news(self, kind: str, text: str, severity: str = "info", *, at: float | None = None) -> None:
        """Queue one line for the views (``at``: real seconds since the start; default now)."""
        self.news.append(News(self.elapsed() if at is None else at, kind, text, severity))

    # -- the telemetry listener ---------------------------------------------------------------

    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        """Count one event reported by a pattern (a :class:`TelemetryListener` callback)."""
        if event is Event.STATE_CHANGED and isinstance(args, StateChanged):
            with self._lock:
                if args.old == args.new:  # a metrics_only breaker's would-open trip: no state change
                    self.would_open[source.name] += 1
                else:
                    transition = Transition(self._clock(), source.name, args.old, args.new, args.reason)
                    self._history.add(transition)
                    if len(self.transitions) < _MAX_TRANSITIONS:
                        self.transitions.append(transition)
            severity = "critical" if args.new == "open" else "info"
            self.add_news(
                "breaker", f"breaker {source.name}: {args.old} -> {args.new} ({args.reason})", severity
            )
            return
        counters = self.calls.get(source.pipeline or source.name)
        if event is Event.PATTERN_DETECTED:
            self.patterns += 1
        if counters is None:
            return
        if event is Event.RETRY_SCHEDULED:
            counters.retries += 1
        elif event is Event.RETRY_EXHAUSTED and isinstance(args, RetryExhausted):
            if args.reason == "budget":
                counters.budget_denied += 1
        elif event is Event.PERMIT_WAITED:
            counters.waited += 1
        elif event is Event.FALLBACK_USED and isinstance(args, FallbackUsed):
            if args.result == "success":
                counters.fallbacks += 1
        elif event is Event.TIMEOUT:
            counters.timeouts += 1
        elif event is Event.CALL_REJECTED and isinstance(args, CallRejected):
            counters.rejections[args.reason] += 1
        elif event is Event.RECOVERY_ATTEMPTED and isinstance(args, RecoveryAttempted):
            if args.result == "success":
                counters.recovery_success += 1
            else:
                counters.recovery_failure += 1
        else:
            self._count_drills_and_hedges(counters, event, args)

    @staticmethod
    def _count_drills_and_hedges(counters: CallCounters, event: EventKind, args: EventArgs) -> None:
        if event is Event.CHAOS_INJECTED and isinstance(args, ChaosInjected):
            counters.injected[args.kind] += 1
        elif event is Event.HEDGE_STARTED and isinstance(args, HedgeStarted):
            counters.hedges[args.trigger] += 1
        elif event is Event.HEDGE_DENIED and isinstance(args, HedgeDenied):
            counters.hedges_denied[args.denied_by] += 1
        elif event is Event.HEDGE_WON and isinstance(args, HedgeWon):
            counters.wins[args.attempt_type] += 1

    def breaker(self, name: str) -> BreakerRecord:
        """Return what breaker ``name`` did: its state changes counted, and its first 200."""
        with self._lock:
            return self._history.record(name)

    def recoveries(
        self, scenario: Scenario, breakers: Iterable[str], *, end: float, time_scale: float
    ) -> Recoveries:
        """Return the recovery figures of ``breakers`` at ``end`` (monotonic) on ``scenario``'s schedule.

        Measured as the changes arrived when the monitor was made with this scenario and time
        scale; otherwise measured now from :attr:`transitions` (the first 10,000 changes).
        """
        with self._lock:
            if self._history.measures(scenario, time_scale):
                return self._history.recoveries(breakers, end=end)
            transitions = list(self.transitions)
        replay = BreakerHistory(scenario, start=self.start, time_scale=time_scale)
        for transition in transitions:
            replay.add(transition)
        return replay.recoveries(breakers, end=end)

    # -- the alert subscriber -----------------------------------------------------------------

    def on_alert(self, alert: Alert) -> None:
        """Record one alert (an alert-system subscriber)."""
        kind = alert.kind.value
        severity = alert.severity.value
        self.alert_kinds[kind] += 1
        if len(self.alerts) < _MAX_ALERTS:
            self.alerts.append(AlertRecord(self.elapsed(), kind, severity, alert.subject, alert.summary))
        self.add_news("alert", f"ALERT {severity} {kind}: {alert.summary}", severity)

    # -- the callers ---------------------------------------------------------------------------

    def ended(self, policy: str, started: float, outcome: str, error: BaseException | None = None) -> None:
        """Count one call that ended with ``outcome`` (``answered``, ``failed``, ``lost``, ``cancelled``)."""
        counters = self.calls[policy]
        if outcome == "cancelled":
            counters.cancelled += 1
            return
        end = self._clock()
        latency = end - started
        counters.latency.record(latency)
        counters.recent.append((end, latency))
        if outcome == "answered":
            counters.answered += 1
            return
        name = _type_name(error)
        if outcome == "failed":
            counters.failed += 1
            counters.errors[name] += 1
        else:
            counters.lost += 1
            counters.lost_types[name] += 1


def _type_name(error: BaseException | None) -> str:
    """Return ``module.Qualname`` of ``error``'s class (builtins unqualified)."""
    if error is None:
        return "None"
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
