"""The end-of-run figures: what the design document claims, measured in the run.

* **availability**: executions answered (by the dependency or a fallback) over executions that
  ended, calls cancelled by the demo's own shutdown left out (claim: 99.9 %);
* **success rate**: executions the dependency itself answered (first attempt or after retries or
  recovery) over the same total (claim: 99.7 %);
* **recovery time**: for every time a dependency came back from a failing window while its
  breaker was not closed, the time until the breaker closed, from the breaker's state-change
  events, unless the dependency failed again first (then its next recovery is measured)
  (claim: < 5 s). Reported in real (demo) seconds and in production seconds (divided by
  the time scale): the claim is compared with the production figure. A breaker cannot close
  before its ``timeout`` has elapsed and its probes succeeded, so this figure is bounded by
  ``CircuitBreakerConfig.timeout``. Measured as the state changes arrive
  (:class:`~otel_resilience.demo.history.BreakerHistory`): how many, the worst, and those not
  closed by the end are exact however long the run; the first 200 of each dependency are listed;
* **lost calls**: calls that raised something other than a dependency error or a resilience
  error, plus calls the manager did not count (must be 0).

These four, and ``requests``, count the calls of the three dependencies' policies. The keyed
``tenants`` policy is left out: its calls reach no dependency (a no-op behind each tenant's
quota), and the calls of the tenant over its quota are shed on purpose, with no fallback; its
figures are its own, under ``tenants``.

Beside them, what the load-shedding patterns did: each rate limiter's permits (taken at once or
after a wait) and the calls it shed, the previews each tenant's ``previews`` limiter (asked with
``try_acquire()`` alone) granted and refused, and the retries the shared retry budget denied; what
hedging did (hedges started, won by a hedge or by the original, refused and by what); and what
the chaos links injected (every simulated fault, counted as a drill).

:func:`summarize` returns plain JSON-ready data (what ``--summary-json`` writes);
:func:`format_summary` renders the same data as text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from otel_resilience.demo.history import KEPT, BreakerHistory, Recovery, Transition
from otel_resilience.demo.monitor import CallCounters, LatencyHistogram, Monitor
from otel_resilience.demo.options import counted
from otel_resilience.demo.relay import DROP_EVERY, DROP_FOR
from otel_resilience.demo.scenarios import Scenario
from otel_resilience.demo.system import PolicyView

__all__ = ["CLAIMS", "format_summary", "measure_recoveries", "summarize"]

CLAIMS: Final = {
    "availability": 0.999,
    "success_rate": 0.997,
    "recovery_time_s": 5.0,
    "lost_calls": 0,
}
"""The headline figures of the design document."""
_FIRST_ALERTS: Final = 20


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def measure_recoveries(
    scenario: Scenario,
    transitions: Sequence[Transition],
    breakers: Sequence[str],
    *,
    start: float,
    end: float,
    time_scale: float,
) -> list[dict[str, Any]]:
    """Pair every recovery of a dependency with the moment its breaker closed again.

    Args:
        scenario: The schedule (it knows when each failing window ended).
        transitions: Breaker transitions, in time order, timestamped on the monotonic clock.
        breakers: The breakers to measure (named after their dependency).
        start: The run's start (monotonic).
        end: The run's end (monotonic).
        time_scale: Demo seconds per production second.

    A recovery after which the dependency failed again before its breaker closed is not
    measured: the breaker closes after the later recovery, which is measured instead.

    Returns:
        One dict per recovery during which the breaker was not closed (the first 200 of each
        dependency, see :class:`~otel_resilience.demo.history.BreakerHistory`):
        ``dependency``, ``recovered_at_s`` (real seconds since the start),
        ``recovered_at_production_s``, ``closed_at_s`` (``None`` if it had not closed by the
        end), ``recovery_s`` and ``recovery_production_s`` (``None`` likewise).
    """
    history = BreakerHistory(scenario, start=start, time_scale=time_scale)
    for transition in transitions:
        history.add(transition)
    return [_event(r, start, time_scale) for r in history.recoveries(breakers, end=end).events]


def _event(recovery: Recovery, start: float, time_scale: float) -> dict[str, Any]:
    """One recovery, as the summary writes it (real seconds since the start, and production seconds)."""
    at, closed = recovery.at, recovery.closed
    return {
        "dependency": recovery.dependency,
        "recovered_at_s": round(at - start, 3),
        "recovered_at_production_s": round(recovery.recovered, 1),
        "closed_at_s": None if closed is None else round(closed - start, 3),
        "recovery_s": None if closed is None else round(closed - at, 3),
        "recovery_production_s": None if closed is None else round((closed - at) / time_scale, 1),
    }


def _policy(view: PolicyView, calls: CallCounters, time_scale: float) -> dict[str, Any]:
    counted = view.total - view.cancelled
    p95 = calls.latency.quantile(0.95)
    return {
        "total": view.total,
        "successful": view.successful,
        "recovered": view.recovered,
        "fallback": view.fallback,
        "failed": view.failed,
        "rejected": view.rejected,
        "timeouts": view.timeouts,
        "cancelled": view.cancelled,
        "availability": _rate(view.successful + view.fallback, counted),
        "success_rate": _rate(view.successful, counted),
        "retries": calls.retries,
        "budget_denied": calls.budget_denied,
        "fallbacks_used": calls.fallbacks,
        "timeout_events": calls.timeouts,
        "rejections": dict(sorted(calls.rejections.items())),
        "recovery_actions": {"success": calls.recovery_success, "failure": calls.recovery_failure},
        "errors": dict(sorted(calls.errors.items())),
        "chaos": dict(sorted(calls.injected.items())),
        "hedges": dict(sorted(calls.hedges.items())),
        "hedges_denied": dict(sorted(calls.hedges_denied.items())),
        "hedge_wins": dict(sorted(calls.wins.items())),
        "p95_s": p95,
        "p95_production_s": None if p95 is None else p95 / time_scale,
    }


def summarize(
    *,
    scenario: Scenario,
    time_scale: float,
    monitor: Monitor,
    views: Sequence[PolicyView],
    recovery_stats: Mapping[str, Any],
    end: float,
    stopped_by: str,
    budget: Mapping[str, Any] | None = None,
    stop_signal: str | None = None,
) -> dict[str, Any]:
    """Return every figure of the run as JSON-ready data.

    Args:
        scenario: The schedule that ran.
        time_scale: Demo seconds per production second.
        monitor: What the run observed.
        views: The final state of every policy.
        recovery_stats: The recovery system's statistics.
        end: The run's end (monotonic).
        stopped_by: ``"duration"``, ``"signal"`` or ``"stop"`` (the ``stop`` event of
            :func:`~otel_resilience.demo.app.run_demo`).
        budget: The shared retry budget's counts (``DemoSystem.budget_stats``), or ``None``.
        stop_signal: The name of the signal that ended the run (``"SIGINT"``, ``"SIGTERM"``), or
            ``None`` when none did.

    Returns:
        The summary (see the module docstring; ``--summary-json`` writes exactly this).
    """
    start = monitor.start
    totals = dict.fromkeys(
        ("total", "successful", "recovered", "fallback", "failed", "rejected", "timeouts", "cancelled"), 0
    )
    for view in views:
        for key in totals:
            totals[key] += getattr(view, key)
    calls = monitor.calls
    issued = sum(c.issued for c in calls.values())
    answered = sum(c.answered for c in calls.values())
    failed = sum(c.failed for c in calls.values())
    cancelled = sum(c.cancelled for c in calls.values())
    escaped = sum(c.lost for c in calls.values())
    lost_types: dict[str, int] = {}
    for counters in calls.values():
        for name, count in counters.lost_types.items():
            lost_types[name] = lost_types.get(name, 0) + count
    uncounted = abs(issued - totals["total"])
    reconciled = (
        answered == totals["successful"] + totals["fallback"]
        and failed + escaped == totals["failed"]
        and cancelled == totals["cancelled"]
    )
    counted = totals["total"] - totals["cancelled"]
    availability = _rate(totals["successful"] + totals["fallback"], counted)
    success_rate = _rate(totals["successful"], counted)
    breakers = [view.name for view in views if view.breaker is not None]
    recoveries = monitor.recoveries(scenario, breakers, end=end, time_scale=time_scale)
    longest = recoveries.longest
    worst = None if longest is None else round(longest / time_scale, 1)
    latency = _merged_quantiles(calls.values())
    lost = escaped + uncounted
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": scenario.seed,
        "time_scale": time_scale,
        "duration_s": round(end - start, 3),
        "production_seconds": round((end - start) / time_scale, 1),
        "stopped_by": stopped_by,
        "signal": stop_signal,
        "requests": {"issued": issued, "answered": answered, **totals},
        "availability": availability,
        "success_rate": success_rate,
        "lost_calls": lost,
        "lost_by_type": lost_types,
        "uncounted_by_manager": uncounted,
        "reconciled": reconciled,
        "latency": latency
        | {"p95_production_s": None if latency["p95_s"] is None else latency["p95_s"] / time_scale},
        "recovery": {
            "events": [_event(r, start, time_scale) for r in recoveries.events],
            "measured": recoveries.measured,
            "max_s": None if worst is None else round(worst * time_scale, 3),
            "max_production_s": worst,
            "not_closed_by_end": recoveries.not_closed,
        },
        "policies": {view.name: _policy(view, calls[view.name], time_scale) for view in views},
        "breakers": _breakers(views, monitor, start),
        "would_open": dict(sorted(monitor.would_open.items())),
        "bulkheads": {
            view.name: {
                "max_concurrent": view.bulkhead.max_concurrent,
                "max_waiting": view.bulkhead.max_waiting,
                "peak_active": view.bulkhead.peak_active,
                "peak_waiting": view.bulkhead.peak_waiting,
                "rejected": view.bulkhead.rejected,
                "timed_out": view.bulkhead.timed_out,
            }
            for view in views
            if view.bulkhead is not None
        },
        "rate_limiters": _rate_limiters(views),
        "hedging": _hedging(views),
        "retry_budget": None if budget is None else dict(budget),
        "error_recovery": dict(recovery_stats),
        "alerts": {
            "total": sum(monitor.alert_kinds.values()),
            "by_kind": dict(sorted(monitor.alert_kinds.items())),
            "first": [
                {
                    "at_s": round(a.at, 3),
                    "kind": a.kind,
                    "severity": a.severity,
                    "subject": a.subject,
                    "summary": a.summary,
                }
                for a in monitor.alerts[:_FIRST_ALERTS]
            ],
        },
        "claims": {
            "availability": _claim(CLAIMS["availability"], availability, higher_is_better=True),
            "success_rate": _claim(CLAIMS["success_rate"], success_rate, higher_is_better=True),
            "recovery_time_s": _claim(CLAIMS["recovery_time_s"], worst, higher_is_better=False),
            "lost_calls": {"claim": 0, "measured": lost, "met": lost == 0},
        },
    }


def _claim(claim: float, measured: float | None, *, higher_is_better: bool) -> dict[str, Any]:
    if measured is None:
        return {"claim": claim, "measured": None, "met": None}
    met = measured >= claim if higher_is_better else measured < claim
    return {"claim": claim, "measured": measured, "met": met}


def _merged_quantiles(calls: Iterable[CallCounters]) -> dict[str, float | None]:
    """Return p50/p95/p99 of every policy's response times together (real seconds)."""
    merged = LatencyHistogram()
    for counters in calls:
        merged.merge(counters.latency)
    return {"p50_s": merged.quantile(0.5), "p95_s": merged.quantile(0.95), "p99_s": merged.quantile(0.99)}


def _breakers(views: Sequence[PolicyView], monitor: Monitor, start: float) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for view in views:
        if view.breaker is None:
            continue
        record = monitor.breaker(view.name)
        found[view.name] = {
            "state": view.breaker.state,
            "times_opened": view.breaker.times_opened,
            "state_changes": record.changes,
            "opened": record.opened,
            "closed_after_opening": record.closed_after_opening,
            "transitions": [
                {"at_s": round(t.at - start, 3), "old": t.old, "new": t.new, "reason": t.reason}
                for t in record.first
            ],
        }
    return found


def _rate_limiters(views: Sequence[PolicyView]) -> dict[str, Any]:
    """Each rate limiter's rate (production) and counts: admitted, after a wait, shed."""
    return {
        view.name: {
            "rate_per_s": view.limiter.rate,
            "admitted": view.limiter.admitted,
            "waited": view.limiter.waited,
            "shed": view.limiter.rejected,
        }
        for view in views
        if view.limiter is not None
    }


def _hedging(views: Sequence[PolicyView]) -> dict[str, Any]:
    """Each hedging link's delay (production) and counts."""
    return {
        view.name: {
            "delay_production_s": view.hedging.delay,
            "executions": view.hedging.executions,
            "hedges": view.hedging.hedges,
            "denied": view.hedging.denied,
            "hedge_wins": view.hedging.hedge_wins,
            "original_wins": view.hedging.original_wins,
        }
        for view in views
        if view.hedging is not None
    }


def _by_reason(counts: Mapping[str, int]) -> str:
    """`` (budget 2, deadline 1)``: what refused the hedges, or nothing when none was refused."""
    return f" ({', '.join(f'{reason} {n}' for reason, n in counts.items())})" if counts else ""


def _drill_lines(summary: Mapping[str, Any]) -> list[str]:
    """The hedging links' lines, and what the chaos links injected."""
    lines = []
    for name, h in summary["hedging"].items():
        policy = summary["policies"][name]
        triggers = ", ".join(f"{t} {n}" for t, n in policy["hedges"].items())
        share = _pct(h["hedges"] / h["executions"]) if h["executions"] else "n/a"
        wins = policy["hedge_wins"]
        lines.append(
            f"hedging       {name}: a hedge after {h['delay_production_s'] * 1000:.0f} ms; {h['hedges']} "
            f"hedges ({triggers or 'none'}) for {h['executions']} executions ({share}); of the raced "
            f"executions, {wins.get('hedge', 0)} won by a hedge, {wins.get('original', 0)} by the original; "
            f"{h['denied']} hedges refused{_by_reason(policy['hedges_denied'])}"
        )
    injected = {
        name: ", ".join(f"{count} {kind}" for kind, count in p["chaos"].items())
        for name, p in summary["policies"].items()
        if p["chaos"]
    }
    total = sum(sum(p["chaos"].values()) for p in summary["policies"].values())
    detail = "; ".join(f"{name} {text}" for name, text in injected.items())
    lines.append(
        f"chaos         {total} injections (the simulated faults, each a drill in the telemetry)"
        + (f": {detail}" if detail else "")
    )
    return lines


def _shedding_lines(summary: Mapping[str, Any]) -> list[str]:
    """The rate limiters' and the retry budget's lines of the summary."""
    lines = [
        f"rate limit    {name}: {r['rate_per_s']:g}/s in production time; {r['admitted']} admitted "
        f"({r['waited']} after waiting for a permit), {r['shed']} shed (RateLimitedError)"
        for name, r in summary["rate_limiters"].items()
    ]
    previews = summary.get("previews")
    if previews is not None:
        granted = sum(previews["granted"].values())
        refused = sum(previews["refused"].values())
        by_tenant = ", ".join(f"{tenant} {count}" for tenant, count in previews["refused"].items() if count)
        lines.append(
            f"previews      {previews['rate']:g}/s per tenant (burst {previews['burst']}, try_acquire "
            f"alone), {previews['keys']} tenants: {granted} rendered, {refused} refused"
            + (f" ({by_tenant})" if by_tenant else "")
        )
    budget = summary.get("retry_budget")
    if budget is not None:
        drawing = budget.get("policies", ())
        by_policy = ", ".join(
            f"{name} {p['budget_denied']}" for name, p in summary["policies"].items() if name in drawing
        )
        lines.append(
            f"retry budget  {budget['denied']} retries denied ({by_policy or 'no policy draws on it'}); "
            f"{budget['available']} available at the end"
        )
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f} %"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def _met(claim: Mapping[str, Any]) -> str:
    met = claim["met"]
    return "not measured" if met is None else ("met" if met else "NOT met")


def format_summary(summary: Mapping[str, Any]) -> list[str]:
    """Render :func:`summarize`'s data as lines of text."""
    req = summary["requests"]
    claims = summary["claims"]
    recovery = summary["recovery"]
    latency = summary["latency"]
    pad = " " * 14
    lines = [
        f"== otel-resilience demo summary: scenario {summary['scenario']}, seed {summary['seed']} ==",
        (
            f"ran {summary['duration_s']:.1f} s at time scale {summary['time_scale']:g} "
            f"(= {summary['production_seconds']:.0f} s of production time), "
            f"stopped by {summary['stopped_by']}"
            + ("" if summary.get("signal") is None else f" ({summary['signal']})")
        ),
        (
            f"requests      {req['issued']} issued: {req['successful']} answered by the dependency "
            f"({req['recovered']} after a retry or recovery), {req['fallback']} by a fallback, "
            f"{req['failed']} failed ({req['rejected']} rejected, {req['timeouts']} timed out), "
            f"{req['cancelled']} cancelled at shutdown"
        ),
        (
            f"availability  {_pct(summary['availability'])}  (answered incl. fallbacks / ended; "
            f"claim {CLAIMS['availability'] * 100:g} %: {_met(claims['availability'])})"
        ),
        (
            f"success rate  {_pct(summary['success_rate'])}  (answered by the dependency / ended; "
            f"claim {CLAIMS['success_rate'] * 100:g} %: {_met(claims['success_rate'])})"
        ),
    ]
    events = recovery["events"]
    if not events:
        lines.append("recovery      no dependency recovered while its breaker was open")
    for event in events:
        came_back = (
            f"recovery      {event['dependency']} recovered at t+{event['recovered_at_production_s']:.0f} s; "
        )
        if event["recovery_s"] is None:
            lines.append(came_back + "its breaker had not closed by the end of the run")
        else:
            lines.append(
                f"{came_back}breaker closed {event['recovery_production_s']:.1f} s later in production time "
                f"({event['recovery_s']:.2f} s in the demo)"
            )
    listed = sum(1 for event in events if event["recovery_s"] is not None)
    if recovery["measured"] > listed:
        lines.append(
            f"{pad}and {recovery['measured'] - listed} more recoveries measured "
            f"(the first {KEPT} of each dependency are listed)"
        )
    if recovery["max_production_s"] is not None:
        lines.append(
            f"{pad}worst {recovery['max_production_s']:.1f} s; claim < {CLAIMS['recovery_time_s']:g} s: "
            f"{_met(claims['recovery_time_s'])} (a breaker waits its timeout before probing)"
        )
    lost_note = f" {summary['lost_by_type']}" if summary["lost_by_type"] else ""
    lines.append(
        f"lost calls    {summary['lost_calls']}  (exceptions that escaped unaccounted; must be 0: "
        f"{_met(claims['lost_calls'])}){lost_note}"
    )
    lines.append(
        f"latency       p50 {_ms(latency['p50_s'])}, p95 {_ms(latency['p95_s'])}, "
        f"p99 {_ms(latency['p99_s'])} in the demo "
        f"(p95 = {_ms(latency['p95_production_s'])} in production time)"
    )
    lines.append("policy         total      ok  recov fallbk failed reject timeout retries    avail  success")
    for name, p in summary["policies"].items():
        rejected = sum(p["rejections"].values())
        lines.append(
            f"  {name:<11} {p['total']:>6} {p['successful']:>7} {p['recovered']:>6} {p['fallback']:>6} "
            f"{p['failed']:>6} {rejected:>6} {p['timeout_events']:>7} {p['retries']:>7} "
            f"{_pct(p['availability']):>8} {_pct(p['success_rate']):>8}"
        )
    lines.append(
        f"{pad}(reject, timeout: rejections and expired deadlines, answered by a fallback or not; "
        "a call re-run by recovery may count twice)"
    )
    for name, breaker in summary["breakers"].items():
        lines.append(
            f"breaker       {name}: opened {breaker['times_opened']} time(s), now {breaker['state']}"
        )
    for name, b in summary["bulkheads"].items():
        lines.append(
            f"bulkhead      {name}: peak {b['peak_active']}/{b['max_concurrent']} running, "
            f"{b['peak_waiting']}/{b['max_waiting']} queued, {b['rejected']} rejected full, "
            f"{b['timed_out']} timed out in the queue"
        )
    lines.extend(_shedding_lines(summary))
    lines.extend(_drill_lines(summary))
    stats = summary["error_recovery"]
    rate = stats.get("recovery_rate") if stats.get("attempts") else None
    lines.append(
        f"recovery      {stats.get('attempts', 0)} recovery actions, "
        f"{stats.get('successful_recoveries', 0)} successful "
        f"(rate {_pct(rate) if isinstance(rate, float) else 'n/a'}), "
        f"{stats.get('patterns_detected', 0)} error patterns detected"
    )
    alerts = summary["alerts"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in alerts["by_kind"].items()) or "none"
    lines.append(f"alerts        {alerts['total']} ({kinds})")
    lines.extend(_reload_lines(summary.get("reloads")))
    lines.extend(_shared_lines(summary.get("shared_state")))
    return lines


def _shared_lines(shared: Mapping[str, Any] | None) -> list[str]:
    """The replicas' shared state (``--redis-url``; none without it): what sharing bought."""
    if shared is None:
        return []
    store = shared["store"]
    health = (
        "degraded now (local state)"
        if store["degraded"]
        else (
            "degraded during the run, shared again" if store["degraded_during_run"] else "reached throughout"
        )
    )
    lines = [
        (
            f"shared state  {counted(shared['replicas'], 'replica')} on {shared['redis_url']} (namespace "
            f"{shared['namespace']}): store {health}; {store['outages']} outage(s), {store['errors']} "
            f"failed operation(s), {counted(store['operations'], 'operation')}, {store['fallback_permits']} "
            "permits admitted past the cluster's budget (store_fallback open; the replicas' limiters "
            "take rate / N each while Redis is away)"
        )
    ]
    pad = " " * 14
    if shared.get("redis_drops") is not None:
        lines.append(
            f"{pad}Redis dropped out {shared['redis_drops']} time(s) (--redis-drops: "
            f"{DROP_FOR:g} s every {DROP_EVERY:g} s): each an outage of every store"
        )
    for replica in shared["per_replica"]:
        items = [
            f"{name} {b['down_calls']} call(s) sent while down, {b['failures']} failure(s), "
            f"opened {b['times_opened']} time(s), {b['rejected']} rejected"
            for name, b in replica["breakers"].items()
        ]
        items.extend(
            f"{name} {r['admitted']} admitted, {r['shed']} shed"
            for name, r in replica["rate_limiters"].items()
        )
        lines.append(f"{pad}replica {replica['replica']}: {'; '.join(items)}")
    for name, b in shared["breakers"].items():
        if b["opened_by_others"] is None:  # the scenario never takes it down
            continue
        others = ", ".join(str(n) for n in b["opened_by_others"]) or "none"
        lines.append(
            f"{pad}{name}: {b['down_calls']} call(s) to the down dependency in all (each replica alone "
            f"pays {counted(b['failure_threshold'], 'failure')} before it opens); replicas opened by "
            f"another's failures: {others}"
        )
    for name, r in shared["rate_limiters"].items():
        within = "within it" if r["within_limit"] else "OVER it"
        lines.append(
            f"{pad}{name}: {r['admitted']} permits admitted by all the replicas ({r['shed']} shed); the "
            f"cluster's limit ({r['rate_per_s']:g}/s, burst {r['burst']}) allows {r['limit']:g} in the run: "
            f"{within}"
        )
    return lines


def _reload_lines(reloads: Mapping[str, Any] | None) -> list[str]:
    """The ``--config`` file's reloads during the run (none without ``--config``)."""
    if reloads is None:
        return []
    policies = reloads["policies"].items()
    reloaded = ", ".join(f"{name} {count['succeeded']}" for name, count in policies if count["succeeded"])
    refused = ", ".join(f"{name} {count['failed']}" for name, count in policies if count["failed"])
    now = (
        f"refused now, the last good configuration runs ({reloads['last_error']})"
        if reloads["stale"]
        else "the file's configuration runs"
    )
    return [
        (
            f"reloads       {reloads['file']} (looked at every {reloads['interval_s']:g} s): "
            f"{reloads['applied']} applied ({reloaded or 'no policy reloaded'}), "
            f"{reloads['refused']} refused ({refused or 'no policy'}); {now}"
        )
    ]
