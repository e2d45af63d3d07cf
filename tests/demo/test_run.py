"""Every scenario, run in process in fast mode (1 s = 100 s of production), judged by its summary."""

from __future__ import annotations

import asyncio
import io
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from otel_resilience.demo import app
from otel_resilience.demo import view as view_module
from otel_resilience.demo.app import run_demo
from otel_resilience.demo.monitor import CallCounters
from otel_resilience.demo.options import DemoOptions
from otel_resilience.demo.system import TENANT_RATE, BulkheadView, PolicyView
from otel_resilience.demo.view import Frame, PlainView, RichView
from otel_resilience.engine import HUB
from otel_resilience.ops import alert_rules as ar
from otel_resilience.telemetry import current_listener

pytestmark = pytest.mark.realtime  # counts made in real time: bash .ci/run runs these files apart


def _kinds(listeners: tuple[object, ...]) -> list[str]:
    """The listeners' class names: telemetry re-installs a fresh default OtelListener after a run."""
    return sorted(type(listener).__name__ for listener in listeners)


def _accounted(summary: dict[str, Any]) -> None:
    """No call was lost, and the callers' counts match the manager's."""
    assert summary["lost_calls"] == 0
    assert summary["lost_by_type"] == {}
    assert summary["uncounted_by_manager"] == 0
    assert summary["reconciled"] is True
    requests = summary["requests"]
    assert requests["issued"] == requests["total"]
    assert summary["claims"]["lost_calls"]["met"] is True


async def test_outage_opens_the_breaker_and_closes_it_after_the_recovery(run_scenario: Any) -> None:
    """`outage`: ml_service's breaker opens, probes, and closes after the dependency comes back."""
    summary, out = await run_scenario("outage", 6.0)
    _accounted(summary)
    breaker = summary["breakers"]["ml_service"]
    assert breaker["opened"] is True
    assert breaker["closed_after_opening"] is True
    reasons = [(t["old"], t["new"], t["reason"]) for t in breaker["transitions"]]
    assert reasons[0] == ("closed", "open", "failure_threshold")
    assert ("open", "half_open", "timeout_elapsed") in reasons
    # It closes after the outage (a baseline burst of errors may trip it again later in the run).
    closing = reasons.index(("half_open", "closed", "probe_succeeded"))
    assert ("open", "half_open", "timeout_elapsed") in reasons[:closing]
    event = summary["recovery"]["events"][0]
    assert event["dependency"] == "ml_service"
    assert 0 < event["recovery_production_s"] <= 130.0  # bounded by the 120 s breaker timeout + probes
    assert summary["recovery"]["max_production_s"] == event["recovery_production_s"]
    assert 0.5 < summary["availability"] < 1.0
    assert summary["success_rate"] <= summary["availability"]
    assert summary["claims"]["recovery_time_s"]["met"] is False
    assert summary["policies"]["ml_service"]["rejected"] > 0
    kinds = summary["alerts"]["by_kind"]
    episodes = sum(
        1
        for view in summary["breakers"].values()
        for t in view["transitions"]
        if (t["old"], t["new"]) == ("closed", "open")
    )
    assert kinds["circuit_open"] == episodes >= 1, "one circuit_open alert per outage episode"
    assert not any(
        "CircuitOpenError" in alert["summary"] or "BulkheadFullError" in alert["summary"]
        for alert in summary["alerts"]["first"]
    ), "a rejection is never an error pattern"
    lines = out.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if "fault ml_service: now down" in line),
        next(i for i, line in enumerate(lines) if "breaker ml_service: closed -> open" in line),
        next(i for i, line in enumerate(lines) if "fault ml_service: now healthy" in line),
        next(i for i, line in enumerate(lines) if "breaker ml_service: half_open -> closed" in line),
    ]
    assert order == sorted(order)
    assert any("ALERT critical circuit_open" in line for line in lines)
    assert re.search(r"^\[\s+\d+\.\ds t\+\d+s\] \d+ exec/s  ok ", out, re.MULTILINE)
    assert "availability  " in out
    assert "lost calls    0" in out
    assert re.search(r"recovery      ml_service recovered at t\+\d+ s; breaker closed [\d.]+ s later", out)


async def test_brownout_times_out_saturates_the_bulkhead_and_falls_back(run_scenario: Any) -> None:
    """`brownout`: database calls time out, its bulkhead fills and rejects, and `[]` answers them."""
    summary, out = await run_scenario("brownout", 4.5)
    _accounted(summary)
    database = summary["policies"]["database"]
    assert database["timeout_events"] > 0
    assert database["rejections"].get("bulkhead_full", 0) > 0
    assert database["fallback"] > 0
    assert database["availability"] == 1.0
    # The failure-rate breaker on trial (METRICS_ONLY) would have opened: slow calls, timeouts.
    assert summary["would_open"].get("database_rate", 0) >= 1
    assert "breaker database_rate: metrics_only -> metrics_only" in out
    assert database["success_rate"] < 0.9
    bulkhead = summary["bulkheads"]["database"]
    assert bulkhead["peak_active"] == bulkhead["max_concurrent"] == 20
    assert bulkhead["peak_waiting"] == bulkhead["max_waiting"] == 10
    assert bulkhead["rejected"] > 0
    assert summary["alerts"]["by_kind"]["bulkhead_full"] >= 1
    assert "fault database: now slowing" in out
    assert "ALERT warning bulkhead_full" in out


async def test_flapping_trips_and_recovers_repeatedly(run_scenario: Any) -> None:
    """`flapping`: the ML breaker opens more than once and each recovery is measured."""
    summary, _ = await run_scenario("flapping", 6.0)
    _accounted(summary)
    assert summary["breakers"]["ml_service"]["times_opened"] >= 2
    measured = [e for e in summary["recovery"]["events"] if e["recovery_s"] is not None]
    assert len(measured) >= 2
    assert {e["dependency"] for e in measured} >= {"ml_service"}
    assert summary["policies"]["content_api"]["fallback"] > 0
    assert summary["alerts"]["by_kind"]["circuit_open"] >= 2


async def test_steady_answers_nearly_everything(run_scenario: Any) -> None:
    """`steady`: retries absorb the ML bursts; availability stays at or above 99 %.

    (The ML breaker may still trip on a burst, about once in seven 10-minute cycles, as
    docs/demo.md says: which call meets which injected failure depends on the scheduler.)
    """
    summary, _ = await run_scenario("steady", 2.5)
    _accounted(summary)
    assert summary["availability"] >= 0.99
    assert summary["policies"]["ml_service"]["retries"] >= 0
    assert summary["recovery"]["events"] == []
    assert summary["claims"]["recovery_time_s"]["met"] is None


async def test_the_faults_are_chaos_injections_and_hedging_cuts_the_database_tail(run_scenario: Any) -> None:
    """`steady`: every dependency error is a chaos fault (counted as injected), the database's heavy tail
    is injected latency, and its hedges start after the delay and win; the view and the summary
    show both."""
    summary, out = await run_scenario("steady", 3.0)
    _accounted(summary)
    policies = summary["policies"]
    for name in ("ml_service", "content_api"):
        assert policies[name]["chaos"].get("fault", 0) > 0, name
        assert policies[name]["retries"] > 0, name  # the injected faults were retried
    database = policies["database"]
    assert database["chaos"]["latency"] > 0  # about 5 % of the attempts
    hedging = summary["hedging"]["database"]
    assert hedging["delay_production_s"] == pytest.approx(0.15)
    assert 0 < hedging["hedges"] < 0.1 * hedging["executions"]
    assert database["hedges"]["delay"] > 0
    # Hedges win (most of the races on a quiet machine: the injected tail is far above the delay;
    # on a loaded one the scheduler's stalls, ms at this time scale, hand originals many).
    assert database["hedge_wins"]["hedge"] > 0
    # The budget funds most hedges in steady (0 denied on a quiet machine; a stall of a loaded one
    # bunches slow queries early in the budget's window), unlike brownout, where it refuses most.
    # (A stall also fills the bulkhead: the hedges it turns away are denied as `rejected`.)
    assert database["hedges_denied"].get("budget", 0) < hedging["hedges"], database["hedges_denied"]
    assert sum(database["hedges_denied"].values()) == hedging["denied"]  # each one by what refused it
    # Only an injected fault fails a query by itself (0.2 %). A stall of a loaded machine past the 10 s
    # timeout (100 ms real) times out the queries in flight or fills the bulkhead: the database did not
    # cause those, so they are set apart, and only they.
    stalled = database["timeout_events"] + sum(database["rejections"].values())
    assert database["fallback"] - stalled <= database["chaos"].get("fault", 0)
    assert database["successful"] + stalled > 0.99 * (database["total"] - database["cancelled"])
    assert re.search(r"database bulkhead \d+/20 queue \d+/10 hedges [1-9]\d* won [1-9]\d*", out)
    assert re.search(r"alerts \d+ chaos [1-9]\d* injected", out)
    assert re.search(r"hedging       database: a hedge after 150 ms; [1-9]\d* hedges \(delay", out)
    assert re.search(
        r"chaos         [1-9]\d* injections .*ml_service \d+ fault.*database \d+ fault, \d+ latency", out
    )


async def test_the_brownout_hedges_are_capped_by_their_budget(run_scenario: Any) -> None:
    """`brownout`: every query is slow, so hedging would double the load on the database; its budget
    refuses most hedges (about 10 % of the queries are hedged, not 100 %)."""
    summary, _ = await run_scenario("brownout", 4.5)
    hedging = summary["hedging"]["database"]
    assert summary["policies"]["database"]["hedges_denied"]["budget"] > hedging["hedges"] > 0
    assert hedging["hedges"] < 0.2 * hedging["executions"]


async def test_surge_sheds_the_noisy_caller_and_the_budget_denies_retries(run_scenario: Any) -> None:
    """`surge`: content_api's limiter sheds calls (the cached fallback answers them) and lets some wait;
    the shared retry budget denies retries; the view and the summary show all three."""
    summary, out = await run_scenario("surge", 5.0)
    _accounted(summary)
    limiter = summary["rate_limiters"]["content_api"]
    assert limiter["rate_per_s"] == pytest.approx(4.0)
    assert limiter["shed"] > limiter["admitted"] / 2  # 12/s offered to a limit of 4/s
    assert 0 < limiter["waited"] <= limiter["admitted"]
    content = summary["policies"]["content_api"]
    assert content["rejections"]["rate_limited"] == limiter["shed"]
    assert content["fallback"] >= limiter["shed"]  # the shed calls got the cached analysis
    assert content["availability"] >= 0.99  # (a stalled first call, before any answer is cached, may fail)
    budget = summary["retry_budget"]
    denied = {name: p["budget_denied"] for name, p in summary["policies"].items()}
    assert budget["denied"] == sum(denied.values()) > 0
    assert denied["database"] == 0
    lines = out.splitlines()
    assert any("fault content_api: now flooded" in line for line in lines)
    status = [line for line in lines if "exec/s" in line and "(strained)" in line]
    assert status
    assert re.search(
        r"content_api \w+ bulkhead \d+/5 queue \d+/10 limiter shed [1-9]\d* waited \d+", status[-1]
    )
    assert re.search(r"retries \d+ denied \d+ \(budget \d+ left, \d+ denied\)", status[-1])
    assert re.search(r"rate limit    content_api: 4/s in production time; \d+ admitted \(\d+ after", out)
    assert re.search(
        rf"retry budget  {budget['denied']} retries denied \(ml_service \d+, content_api \d+\)", out
    )


async def test_a_stop_ends_the_run_cleanly_and_cancels_calls_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping with no grace cancels running calls: they count as cancelled, never as lost."""
    monkeypatch.setattr(app, "DRAIN_GRACE", 0.0)
    options = DemoOptions(scenario="brownout", duration=None, time_scale=0.01, port=None, plain=True)
    stop = asyncio.Event()
    out = io.StringIO()
    listeners = HUB.event_listeners
    run = asyncio.create_task(run_demo(options, view=PlainView(out, 1.0), stop=stop, handle_signals=False))
    await asyncio.sleep(2.0)  # t+200 s: database calls take seconds and pile up
    stop.set()
    summary = await asyncio.wait_for(run, timeout=10)
    assert summary["stopped_by"] == "stop"
    assert summary["requests"]["cancelled"] > 0
    _accounted(summary)
    assert "cancelled at shutdown" in out.getvalue()
    assert _kinds(HUB.event_listeners) == _kinds(listeners)


async def test_a_signal_during_the_drain_of_a_run_its_duration_ended_does_not_change_what_stopped_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run ended by --duration reports ``stopped_by: duration`` even when SIGTERM comes while its
    calls drain (it said ``signal``: the handler rewrote what had already stopped the run)."""
    stop_load = app.DemoSystem.stop_load
    signalled = asyncio.Event()

    async def signal_then_stop_load(self: app.DemoSystem, grace: float) -> None:
        signal.raise_signal(signal.SIGTERM)  # routed to the run's handler by the event loop
        await asyncio.sleep(0)
        signalled.set()
        await stop_load(self, grace)

    monkeypatch.setattr(app.DemoSystem, "stop_load", signal_then_stop_load)
    options = DemoOptions(scenario="steady", duration=0.3, time_scale=0.01, port=None, plain=True)
    summary = await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=True)
    assert signalled.is_set()
    assert summary["stopped_by"] == "duration"
    _accounted(summary)


async def test_cancelling_the_run_leaves_no_listener_task_or_telemetry_behind() -> None:
    """Cancelling run_demo itself stops the load and removes its listeners before re-raising."""
    before = current_listener()
    listeners = HUB.event_listeners
    options = DemoOptions(scenario="outage", time_scale=0.01, port=None, plain=True)
    run = asyncio.create_task(run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=False))
    await asyncio.sleep(0.5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert _kinds(HUB.event_listeners) == _kinds(listeners)
    assert "Monitor" not in _kinds(HUB.event_listeners)
    assert (current_listener() is None) == (before is None)
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert others == []


async def test_the_live_view_draws_the_table_and_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the rich view shows every policy, breaker states, news and then the summary.

    The view shows the latest news items; on a loaded machine its redraws come further apart, and
    the alerts of a full bulkhead could push the breaker's news out before any redraw: it keeps
    them all here.
    """
    monkeypatch.setattr(view_module, "_NEWS_SHOWN", 1000)
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, force_terminal=True, color_system=None)
    options = DemoOptions(scenario="outage", duration=1.5, time_scale=0.01, port=None)
    summary = await run_demo(options, view=RichView(console), handle_signals=False)
    text = buffer.getvalue()
    for word in (
        "policy",
        "exec/s",
        "ml_service",
        "database",
        "content_api",
        "breaker",
        "queue",
        "0/20",
        "hedges",
        "chaos",
    ):
        assert word in text, word
    assert "breaker ml_service: closed -> open" in text
    assert "fault ml_service: now down" in text
    assert "== otel-resilience demo summary: scenario outage, seed 7 ==" in text
    assert summary["lost_calls"] == 0


async def test_the_live_view_shows_shed_calls_waits_and_denied_retries() -> None:
    """In `surge` the rich view's table has the shed, waited and denied columns, filled, and the budget's level."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=True, color_system=None)
    options = DemoOptions(scenario="surge", duration=3.0, time_scale=0.01, port=None)
    summary = await run_demo(options, view=RichView(console), handle_signals=False)
    text = buffer.getvalue()
    for word in ("shed", "waited", "denied", "flooded", "retry budget"):
        assert word in text, word
    shed = summary["rate_limiters"]["content_api"]["shed"]
    assert shed > 0
    assert re.search(rf"│ content_api [^\n]*│ +{shed} │", text)  # the last frame's row has the final count
    assert re.search(r"retry budget \d+ left, \d+ denied", text)


def test_the_live_table_counts_rejections_and_timeouts_a_fallback_answered() -> None:
    """The table's reject and timeout columns count what the summary's do: every rejection and
    expired deadline, answered by a fallback or not. In `brownout` the database's full bulkhead
    and its timeouts showed 0 there (only those that reached the caller were counted), while the
    summary said hundreds."""
    calls = CallCounters()
    calls.rejections["bulkhead_full"] = 4
    calls.timeouts = 3
    database = PolicyView(
        name="database",
        total=10,
        successful=3,
        recovered=0,
        fallback=7,
        failed=0,
        rejected=0,
        timeouts=0,
        cancelled=0,
        condition="slow",
        breaker=None,
        bulkhead=BulkheadView(20, 20, 10, 10, 20, 10, 4, 0),
    )
    frame = Frame(
        elapsed=1.0,
        production=20.0,
        policies=[database],
        calls={"database": calls},
        recovery_rate=None,
        alerts=0,
        time_scale=0.05,
    )
    buffer = io.StringIO()
    view = RichView(Console(file=buffer, width=200, force_terminal=True, color_system=None))
    view.begin(["header"])
    view.update(frame, [], 1.0)
    view.close()
    # ... shed │ waited │ reject │ timeout │ hedges │ chaos │
    assert re.search(r"│ database [^\n]*│ +- │ +- │ +4 │ +3 │ +- │ +0 │", buffer.getvalue()), (
        buffer.getvalue()
    )


def test_the_cli_picks_the_view_from_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """`app.main` draws the live view on a terminal and plain lines otherwise, or with --plain."""
    chosen: list[str] = []

    async def fake_run(options: DemoOptions, *, view: object, **_: object) -> dict[str, Any]:
        chosen.append(type(view).__name__)
        return {"lost_calls": 0, "lost_by_type": {}, "signal": None}

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(app, "run_demo", fake_run)
    assert app.main(DemoOptions(port=None), out=Terminal()) == 0
    assert app.main(DemoOptions(port=None, plain=True), out=Terminal()) == 0
    assert app.main(DemoOptions(port=None), out=io.StringIO()) == 0
    assert chosen == ["RichView", "PlainView", "PlainView"]


def test_a_lost_call_makes_the_exit_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that lost a call reports it on stderr and exits 1."""

    async def fake_run(options: DemoOptions, *, view: object, **_: object) -> dict[str, Any]:
        return {"lost_calls": 2, "lost_by_type": {"builtins.KeyError": 2}, "signal": None}

    monkeypatch.setattr(app, "run_demo", fake_run)
    err = io.StringIO()
    assert app.main(DemoOptions(port=None, plain=True), out=io.StringIO(), err=err) == 1
    assert "2 call(s) lost" in err.getvalue()


@pytest.mark.parametrize(("stop_signal", "status"), [("SIGINT", 130), ("SIGTERM", 143), (None, 0)])
def test_a_run_a_signal_ended_exits_with_the_signals_status(
    monkeypatch: pytest.MonkeyPatch, stop_signal: str | None, status: int
) -> None:
    """A run SIGINT or SIGTERM ended exits 128 + the signal's number, as a shell reports a process
    the signal stopped (it exited 0); a lost call still makes it 1."""
    lost = 0

    async def fake_run(options: DemoOptions, *, view: object, **_: object) -> dict[str, Any]:
        return {"lost_calls": lost, "lost_by_type": {"builtins.KeyError": lost}, "signal": stop_signal}

    monkeypatch.setattr(app, "run_demo", fake_run)
    assert app.main(DemoOptions(port=None, plain=True), out=io.StringIO(), err=io.StringIO()) == status
    lost = 1
    assert app.main(DemoOptions(port=None, plain=True), out=io.StringIO(), err=io.StringIO()) == 1


async def test_the_keyed_tenants_policy_sheds_the_tenant_over_its_quota(run_scenario: Any) -> None:
    """`tenants`: one quota per tenant; acme sends more than its quota, the others less. What is shed
    stays under the share of the policy's executions at which ResilienceRateLimitedSustained fires
    (10 %): the steady state pages nobody. A stalled loop makes up none of a tenant's requests, so
    on a busy machine acme may send no more than its quota lets through: what its quota must shed
    is what it sent past the bucket (burst 2) and the refill of the run's production seconds."""
    summary, _ = await run_scenario("steady", 2.0)
    tenants = summary["tenants"]
    assert tenants["keys"] == 5
    assert tenants["rate"] == pytest.approx(0.5)
    calls, shed = tenants["calls"], tenants["rejections"]
    assert calls["acme"] > calls["globex"] > 0  # acme sends more than any other
    passed = 2 + tenants["rate"] * summary["production_seconds"] + 1  # the burst, the refill, a clock tick
    assert calls["acme"] - shed["acme"] <= passed, (calls, shed, passed)
    assert {tenant: n for tenant, n in tenants["rejections"].items() if tenant != "acme"} == dict.fromkeys(
        ("globex", "initech", "umbrella", "hooli"), 0
    )
    executions = TENANT_RATE * summary["production_seconds"]
    assert tenants["rejections"]["acme"] < ar.RATE_LIMITED_RATIO * executions, (tenants, executions)


async def test_a_retry_budget_no_policy_draws_on_is_not_shown(run_scenario: Any) -> None:
    """With --config examples/demo.yaml both budgeted policies come from the file, whose retries have
    no budget: the status lines and the summary show no retry budget (they showed the demo's, unused,
    as if it had let every retry through)."""
    example = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
    summary, out = await run_scenario("steady", 1.0, config=example)
    assert summary["retry_budget"] is None
    status = [line for line in out.splitlines() if "exec/s" in line]
    assert status
    assert not any("budget" in line for line in status)
    assert "retry budget  " not in out
    _accounted(summary)


async def test_a_run_in_process_puts_back_the_listener_registered_before_it() -> None:
    """A listener of the caller's own, registered with instrument(...), is registered again after a run,
    still reporting to the caller's providers (the run used to leave the default listener in its place)."""
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    from otel_resilience import RetryPolicy, retry_sync  # noqa: PLC0415
    from otel_resilience.telemetry import install_default, instrument, uninstrument  # noqa: PLC0415

    had_default = current_listener() is not None
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    mine = instrument(meter_provider=meter_provider)
    try:
        options = DemoOptions(scenario="steady", duration=0.3, time_scale=0.01, port=None, plain=True)
        await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=False)
        assert current_listener() is mine
        assert mine.active
        assert mine in HUB.event_listeners
        attempts = 0

        def flaky() -> str:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise ConnectionError
            return "ok"

        assert retry_sync(flaky, policy=RetryPolicy(max_attempts=2, initial_delay=0.0)) == "ok"
        data = reader.get_metrics_data()
        names = {
            metric.name
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        assert "resilience.retries" in names
    finally:
        uninstrument()
        if had_default:
            install_default()
        meter_provider.shutdown()


async def test_a_signal_the_process_ignores_stays_ignored_by_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started with SIGINT and SIGTERM ignored (a background job of a script: ``demo &``, which
    a Ctrl-C meant for the foreground must not stop) keeps ignoring them during the run, as it did
    before it (the run made them stop it, then put SIG_IGN back)."""
    start_load = app.DemoSystem.start_load

    def signal_then_start_load(self: app.DemoSystem) -> None:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        start_load(self)

    monkeypatch.setattr(app.DemoSystem, "start_load", signal_then_start_load)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    options = DemoOptions(scenario="steady", duration=0.3, time_scale=0.01, port=None, plain=True)
    try:
        summary = await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=True)
        assert {sig: signal.getsignal(sig) for sig in previous} == dict.fromkeys(previous, signal.SIG_IGN)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert summary["stopped_by"] == "duration"
    _accounted(summary)


async def test_a_run_that_handles_signals_puts_back_the_handlers_it_found() -> None:
    """After a run that routed SIGINT and SIGTERM to its stop, the caller's handlers are in place again:
    a Python handler and one of the event loop's (the run used to leave SIGTERM at SIG_DFL, killing the
    caller's process at the next SIGTERM, and SIGINT at Python's default)."""
    loop = asyncio.get_running_loop()
    received: list[str] = []

    def mine(signum: int, frame: object) -> None:
        received.append("python")

    sigint = signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, mine)
    options = DemoOptions(scenario="steady", duration=0.3, time_scale=0.01, port=None, plain=True)
    try:
        await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=True)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is sigint
        loop.add_signal_handler(signal.SIGTERM, lambda: received.append("loop"))
        try:
            await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=True)
            signal.raise_signal(signal.SIGTERM)
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
        assert received == ["loop"]
    finally:
        signal.signal(signal.SIGTERM, previous)
