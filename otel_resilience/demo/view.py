"""The demo's output: a live ``rich`` view on a terminal, plain lines otherwise.

Both views get the same :class:`Frame` a few times a second and the same news (breaker
transitions, alerts, fault changes). The plain view writes one status line every ``interval``
seconds and one line per news item, prefixed with the real seconds since the start, so that a
log or a test can follow a run::

    [   3.1s t+62s] breaker ml_service: closed -> open (failure_threshold)
    [   4.0s t+80s] 158 exec/s  ok 97.5 %  avail 97.5 %  p95 41 ms | ml_service open (down) | ...

Rates (executions per second, success rate, availability, p95) are over the last
:data:`RATE_WINDOW` seconds; the counts are since the start. A policy with a rate limiter shows
the calls it shed (``RateLimitedError``) and the calls that waited for a permit; every policy
shows the retries its retry budget denied, and the status line the shared budget's level (the
``surge`` scenario drives all three). A policy with hedging shows the hedges it started and how
many a hedge won; every policy shows what its chaos links injected (the simulated faults, each a
drill in the telemetry).
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final

from otel_resilience.demo.monitor import CallCounters, News, percentile
from otel_resilience.demo.output import backlogged
from otel_resilience.demo.system import PolicyView

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from otel_resilience.demo.replicas import SharedStateView

__all__ = ["RATE_WINDOW", "Frame", "PlainView", "RichView", "View"]

RATE_WINDOW: Final = 2.0
"""Real seconds the live rates are computed over."""
_NEWS_SHOWN: Final = 10
_STATE_STYLE: Final = {"closed": "green", "half_open": "yellow", "open": "bold red"}
_REPLICA_COLUMNS: Final = ("replica", "store", "outages", "breaker", "sent while down", "rejected", "limiter")


@dataclass(frozen=True, slots=True)
class Frame:
    """What the views show at one moment.

    Attributes:
        elapsed: Real seconds since the start.
        production: Production seconds since the start.
        policies: Every policy's counts and state.
        calls: Caller-side counters, by policy.
        recovery_rate: The recovery system's success rate so far (``None`` before any action).
        alerts: Alerts raised so far.
        time_scale: Demo seconds per production second.
        budget: The shared retry budget's counts (``available`` now, ``denied`` so far), or
            ``None`` when the policies have none.
        shared: Each replica's shared breakers, rate limits and store (``--redis-url``), or
            ``None`` for a run on local state.
        previews: The ``previews`` limiter's counts (``DemoSystem.preview_stats``: ``granted``
            and ``refused`` by tenant), or ``None`` to show none.
    """

    elapsed: float
    production: float
    policies: Sequence[PolicyView]
    calls: dict[str, CallCounters]
    recovery_rate: float | None
    alerts: int
    time_scale: float
    budget: Mapping[str, Any] | None = None
    shared: SharedStateView | None = None
    previews: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Rates:
    """One policy's rates over the last window."""

    per_second: float
    success: float | None
    availability: float | None
    p95: float | None


class _RateTracker:
    """Turns cumulative counts into rates over the last :data:`RATE_WINDOW` seconds."""

    __slots__ = ("_history",)

    def __init__(self) -> None:
        self._history: deque[tuple[float, dict[str, tuple[int, int, int]]]] = deque()

    def update(self, frame: Frame, clock_now: float) -> dict[str, Rates]:
        """Record ``frame``'s counts and return each policy's rates over the window."""
        counts = {p.name: (p.total - p.cancelled, p.successful, p.fallback) for p in frame.policies}
        history = self._history
        history.append((frame.elapsed, counts))
        while len(history) > 1 and frame.elapsed - history[1][0] >= RATE_WINDOW:
            history.popleft()
        then, old = history[0]
        span = frame.elapsed - then
        rates: dict[str, Rates] = {}
        for name, (ended, ok, fallback) in counts.items():
            was = old.get(name, (0, 0, 0))
            done = ended - was[0]
            calls = frame.calls.get(name)
            rates[name] = Rates(
                per_second=done / span if span > 0 else 0.0,
                success=(ok - was[1]) / done if done else None,
                availability=(ok + fallback - was[1] - was[2]) / done if done else None,
                p95=None if calls is None else calls.recent_quantile(clock_now - RATE_WINDOW, 0.95),
            )
        return rates

    @staticmethod
    def overall(rates: dict[str, Rates], frame: Frame, clock_now: float) -> Rates:
        """Return every policy's rates together (success and availability weighted by volume)."""
        per_second = sum(r.per_second for r in rates.values())
        weighted = [(r.per_second, r) for r in rates.values() if r.success is not None]
        volume = sum(weight for weight, _ in weighted)
        success = sum(w * (r.success or 0.0) for w, r in weighted) / volume if volume else None
        availability = sum(w * (r.availability or 0.0) for w, r in weighted) / volume if volume else None
        since = clock_now - RATE_WINDOW
        p95 = percentile(
            (latency for calls in frame.calls.values() for end, latency in calls.recent if end >= since), 0.95
        )
        return Rates(per_second, success, availability, p95)


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value * 100:5.1f} %"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def _previews(frame: Frame) -> str:
    """The ``previews`` limiter in a few words: rendered and refused (empty without one)."""
    if frame.previews is None:
        return ""
    granted = sum(frame.previews["granted"].values())
    refused = sum(frame.previews["refused"].values())
    return f"previews {granted} rendered {refused} refused"


def _budget(frame: Frame) -> str:
    """The shared retry budget in a few words (empty without one)."""
    if frame.budget is None:
        return ""
    return f"budget {frame.budget['available']} left, {frame.budget['denied']} denied"


_COLUMNS: Final = (
    "policy",
    "fault",
    "exec/s",
    "success",
    "avail",
    "p95",
    "breaker",
    "bulkhead",
    "queue",
    "retries",
    "denied",
    "fallbk",
    "shed",
    "waited",
    "reject",
    "timeout",
    "hedges",
    "chaos",
)
"""The live table's columns (``reject``, ``timeout``: rejections and expired deadlines, answered
by a fallback or not, as in the summary; ``hedges``: started/won by a hedge; ``chaos``: injections)."""


def _replica_text(shared: SharedStateView) -> str:
    """The replicas' part of the status line: each one's shared breakers and limits, and the store."""
    parts = []
    for replica in shared.replicas:
        items = [
            f"{name} {b.state}{'' if b.shared else ' (local)'} "
            f"sent-while-down {b.down_calls} rejected {b.rejected}"
            for name, b in replica.breakers.items()
        ]
        items.extend(
            f"{name} admitted {lim.admitted} shed {lim.rejected}" for name, lim in replica.limiters.items()
        )
        store = "DEGRADED" if replica.store.degraded else "ok"
        parts.append(f"replica {replica.replica} (store {store}): {', '.join(items)}")
    outages = sum(replica.store.outages for replica in shared.replicas)
    return "; ".join(parts) + f"; store outages {outages}"


def _row(policy: PolicyView, rate: Rates | None, calls: CallCounters | None) -> list[Any]:
    """One policy's cells of the live table, in the order of :data:`_COLUMNS`."""
    from rich.text import Text  # noqa: PLC0415 - rich is an optional dependency

    breaker: Any = "-"
    if policy.breaker is not None:
        state = policy.breaker.state
        breaker = Text(f"{state} ({policy.breaker.times_opened}x)", style=_STATE_STYLE.get(state, ""))
    bulkhead = queue = "-"
    if policy.bulkhead is not None:
        bulkhead = f"{policy.bulkhead.active}/{policy.bulkhead.max_concurrent}"
        queue = f"{policy.bulkhead.waiting}/{policy.bulkhead.max_waiting}"
    hedging = policy.hedging
    return [
        policy.name,
        Text(policy.condition, style="" if policy.condition == "healthy" else "bold yellow"),
        "-" if rate is None else f"{rate.per_second:.0f}",
        "-" if rate is None else _pct(rate.success),
        "-" if rate is None else _pct(rate.availability),
        "-" if rate is None else _ms(rate.p95),
        breaker,
        bulkhead,
        queue,
        str(0 if calls is None else calls.retries),
        str(0 if calls is None else calls.budget_denied),
        str(0 if calls is None else calls.fallbacks),
        "-" if policy.limiter is None else str(policy.limiter.rejected),
        "-" if policy.limiter is None else str(policy.limiter.waited),
        str(0 if calls is None else calls.rejected),
        str(0 if calls is None else calls.timeouts),
        "-" if hedging is None else f"{hedging.hedges}/{hedging.hedge_wins}",
        str(0 if calls is None else sum(calls.injected.values())),
    ]


def _replica_table(shared: SharedStateView) -> Any:
    """The live view's shared-state panel: a row per replica (its store, breakers and limits)."""
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title="replicas, sharing state through Redis", expand=False)
    for column in _REPLICA_COLUMNS:
        table.add_column(column, justify="left" if column in {"store", "breaker", "limiter"} else "right")
    for replica in shared.replicas:
        store = (
            Text("DEGRADED (local state)", style="bold red")
            if replica.store.degraded
            else Text("ok", style="green")
        )
        breakers = replica.breakers.items()
        table.add_row(
            str(replica.replica),
            store,
            str(replica.store.outages),
            Text(", ".join(f"{name} {b.state}" for name, b in breakers)),
            ", ".join(str(b.down_calls) for _, b in breakers),
            ", ".join(str(b.rejected) for _, b in breakers),
            ", ".join(
                f"{name} {lim.admitted} admitted, {lim.rejected} shed"
                for name, lim in replica.limiters.items()
            ),
        )
    return table


class View(abc.ABC):
    """The interface both views implement."""

    @abc.abstractmethod
    def begin(self, header: Sequence[str]) -> None:
        """Show the run's header lines."""

    @abc.abstractmethod
    def update(self, frame: Frame, news: Sequence[News], clock_now: float) -> None:
        """Show a new frame and the news since the last one."""

    @abc.abstractmethod
    def end(self, summary: Sequence[str]) -> None:
        """Stop the live display and show the summary lines."""

    def close(self) -> None:  # noqa: B027 - optional hook: a view with nothing to stop keeps it
        """Stop the live display if it still runs (after an error); idempotent."""


class PlainView(View):
    """Line-based output: a status line every ``interval`` seconds, one line per news item.

    Args:
        out: Where to write (``sys.stdout`` in the CLI).
        interval: Real seconds between two status lines.
    """

    def __init__(self, out: IO[str], interval: float) -> None:
        self._out = out
        self._interval = interval
        self._next = interval
        self._rates = _RateTracker()
        self._skipped = 0

    def _write(self, line: str, *, live: bool = False) -> None:
        """Write ``line``; a ``live`` one (news, status) is skipped while the output is backlogged."""
        if live and backlogged(self._out):
            self._skipped += 1
            return
        if self._skipped:
            skipped, self._skipped = self._skipped, 0
            self._out.write(f"({skipped} line(s) not shown: standard output was not read)\n")
        self._out.write(line + "\n")
        self._out.flush()

    def begin(self, header: Sequence[str]) -> None:
        """Write the header lines."""
        for line in header:
            self._write(line)

    def update(self, frame: Frame, news: Sequence[News], clock_now: float) -> None:
        """Write the news, and a status line when one is due."""
        for item in news:
            self._write(f"[{item.at:7.1f}s t+{item.at / frame.time_scale:.0f}s] {item.text}", live=True)
        rates = self._rates.update(frame, clock_now)
        if frame.elapsed + 1e-9 < self._next:
            return
        while self._next <= frame.elapsed + 1e-9:
            self._next += self._interval
        overall = _RateTracker.overall(rates, frame, clock_now)
        parts = [
            (
                f"[{frame.elapsed:7.1f}s t+{frame.production:.0f}s] {overall.per_second:.0f} exec/s  "
                f"ok {_pct(overall.success).strip()}  avail {_pct(overall.availability).strip()}  "
                f"p95 {_ms(overall.p95)}"
            )
        ]
        parts.extend(self._policy_text(policy) for policy in frame.policies)
        retries = sum(c.retries for c in frame.calls.values())
        denied = sum(c.budget_denied for c in frame.calls.values())
        fallbacks = sum(c.fallbacks for c in frame.calls.values())
        rate = "n/a" if frame.recovery_rate is None else f"{frame.recovery_rate * 100:.0f} %"
        budget = f" ({_budget(frame)})" if frame.budget is not None else ""
        injected = sum(sum(c.injected.values()) for c in frame.calls.values())
        parts.append(
            f"retries {retries} denied {denied}{budget} fallbacks {fallbacks} recovery {rate} "
            f"alerts {frame.alerts} chaos {injected} injected"
            + (f" {_previews(frame)}" if frame.previews is not None else "")
        )
        if frame.shared is not None:
            parts.append(_replica_text(frame.shared))
        self._write(" | ".join(parts), live=True)

    @staticmethod
    def _policy_text(policy: PolicyView) -> str:
        """One policy's part of the status line: breaker, bulkhead, limiter, dependency condition."""
        text = f"{policy.name}"
        if policy.breaker is not None:
            text += f" {policy.breaker.state}"
        if policy.bulkhead is not None:
            bulkhead = policy.bulkhead
            text += (
                f" bulkhead {bulkhead.active}/{bulkhead.max_concurrent}"
                f" queue {bulkhead.waiting}/{bulkhead.max_waiting}"
            )
        if policy.limiter is not None:
            text += f" limiter shed {policy.limiter.rejected} waited {policy.limiter.waited}"
        if policy.hedging is not None:
            text += f" hedges {policy.hedging.hedges} won {policy.hedging.hedge_wins}"
        if policy.condition != "healthy":
            text += f" ({policy.condition})"
        return text

    def end(self, summary: Sequence[str]) -> None:
        """Write the summary lines."""
        for line in summary:
            self._write(line)


class RichView(View):
    """A live table refreshed in place (``rich``), for a terminal.

    Args:
        console: The ``rich`` console to draw on (default: a new one on stdout).
    """

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich is an optional dependency

        self._console = console or Console()
        self._live: Live | None = None
        self._header: list[str] = []
        self._news: deque[News] = deque(maxlen=_NEWS_SHOWN)
        self._rates = _RateTracker()

    def begin(self, header: Sequence[str]) -> None:
        """Start the live display under the header."""
        from rich.live import Live  # noqa: PLC0415

        self._header = list(header)
        self._live = Live(self._render_header(), console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def _render_header(self) -> RenderableType:
        from rich.text import Text  # noqa: PLC0415

        return Text("\n".join(self._header))

    def update(self, frame: Frame, news: Sequence[News], clock_now: float) -> None:
        """Redraw the table with ``frame`` and the latest news."""
        self._news.extend(news)
        rates = self._rates.update(frame, clock_now)
        if self._live is not None and not backlogged(self._console.file):
            self._live.update(self._render(frame, rates, clock_now), refresh=True)

    def _render(self, frame: Frame, rates: dict[str, Rates], clock_now: float) -> RenderableType:
        from rich.console import Group  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        overall = _RateTracker.overall(rates, frame, clock_now)
        recovery = "n/a" if frame.recovery_rate is None else f"{frame.recovery_rate * 100:.0f} %"
        status = Text(
            f"{frame.elapsed:.1f} s (t+{frame.production:.0f} s production)   "
            f"{overall.per_second:.0f} exec/s   success {_pct(overall.success).strip()}   "
            f"availability {_pct(overall.availability).strip()}   p95 {_ms(overall.p95)}   "
            f"recovery rate {recovery}   alerts {frame.alerts}"
            + (f"   retry {_budget(frame)}" if frame.budget is not None else "")
            + (f"   {_previews(frame)}" if frame.previews is not None else ""),
            style="bold",
        )
        table = Table(expand=False, title=f"last {RATE_WINDOW:g} s; counts since the start")
        for column in _COLUMNS:
            table.add_column(column, justify="left" if column in {"policy", "fault", "breaker"} else "right")
        for policy in frame.policies:
            table.add_row(*_row(policy, rates.get(policy.name), frame.calls.get(policy.name)))
        events = Table(title="breakers, alerts and faults as they happen", expand=False, show_header=False)
        events.add_column("at", justify="right")
        events.add_column("what")
        styles = {"critical": "bold red", "warning": "yellow", "info": ""}
        for item in self._news:
            events.add_row(f"{item.at:.1f} s", Text(item.text, style=styles.get(item.severity, "")))
        if frame.shared is None:
            return Group(self._render_header(), status, table, events)
        return Group(self._render_header(), status, table, _replica_table(frame.shared), events)

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def end(self, summary: Sequence[str]) -> None:
        """Stop the live display and print the summary."""
        self.close()
        for line in summary:
            self._console.print(line, markup=False, highlight=False, soft_wrap=True)
