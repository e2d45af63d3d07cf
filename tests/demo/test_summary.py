"""The summary's measurements: recovery times from breaker transitions, quantiles, strict JSON."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from otel_resilience.demo.app import write_summary_json
from otel_resilience.demo.monitor import LatencyHistogram, Monitor, percentile
from otel_resilience.demo.scenarios import build_scenario
from otel_resilience.demo.summary import format_summary, measure_recoveries, summarize
from otel_resilience.demo.system import BreakerView, HedgingView, PolicyView
from otel_resilience.engine import Event, TelemetrySource
from otel_resilience.engine.event_args import HedgeDenied, RetryExhausted
from otel_resilience.engine.events import StateChanged
from otel_resilience.testing import FakeClock

SCALE = 0.01
START = 1000.0


def _monitor_with(*changes: tuple[float, str, str]) -> Monitor:
    """A monitor that saw the given (production time, old, new) transitions of ml_service."""
    now = [START]
    monitor = Monitor(["ml_service"], start=START, clock=lambda: now[0])
    source = TelemetrySource("circuit_breaker", "ml_service")
    for at, old, new in changes:
        now[0] = START + at * SCALE
        monitor.on_event(source, Event.STATE_CHANGED, StateChanged(old, new, "test"))
    return monitor


def test_recovery_time_runs_from_the_dependency_recovery_to_the_breaker_closing() -> None:
    """A breaker open at the recovery and closed 70 s later gives a 70 s recovery (0.7 s demo)."""
    scenario = build_scenario("outage", 7)
    recovered = scenario.recoveries("ml_service", 600.0)[0]
    monitor = _monitor_with(
        (62.0, "closed", "open"),
        (recovered - 10, "open", "half_open"),
        (recovered - 9, "half_open", "open"),
        (recovered + 69, "open", "half_open"),
        (recovered + 70, "half_open", "closed"),
    )
    found = measure_recoveries(
        scenario, monitor.transitions, ["ml_service"], start=START, end=START + 6.0, time_scale=SCALE
    )
    assert len(found) == 1
    event = found[0]
    assert event["dependency"] == "ml_service"
    assert event["recovered_at_production_s"] == pytest.approx(recovered, abs=0.1)
    assert event["recovery_production_s"] == pytest.approx(70.0, abs=0.1)
    assert event["recovery_s"] == pytest.approx(0.7, abs=1e-3)


def test_a_recovery_while_the_breaker_was_closed_is_not_a_breaker_recovery() -> None:
    """When the breaker never opened during the fault, no recovery time is measured."""
    scenario = build_scenario("outage", 7)
    found = measure_recoveries(
        scenario, _monitor_with().transitions, ["ml_service"], start=START, end=START + 6.0, time_scale=SCALE
    )
    assert found == []


def test_a_breaker_still_open_at_the_end_has_no_recovery_time() -> None:
    """A recovery whose breaker had not closed by the end is reported without a time."""
    scenario = build_scenario("outage", 7)
    monitor = _monitor_with((62.0, "closed", "open"))
    found = measure_recoveries(
        scenario, monitor.transitions, ["ml_service"], start=START, end=START + 5.0, time_scale=SCALE
    )
    assert [(e["recovery_s"], e["closed_at_s"]) for e in found] == [(None, None)]


def test_a_recovery_the_dependency_failed_again_after_is_not_measured_to_a_later_close() -> None:
    """`flapping`: ml_service comes back, fails again before its breaker closed, comes back again;
    the breaker closes 50 s after the second recovery. That is one recovery of 50 s, not also one of
    the whole second outage (the first recovery was paired with the same close: over 120 s, past
    the breaker timeout that bounds a recovery time)."""
    scenario = build_scenario("flapping", 7)
    first, second = scenario.recoveries("ml_service", 600.0)[:2]
    monitor = _monitor_with(
        (61.0, "closed", "open"),
        (second + 49.0, "open", "half_open"),
        (second + 50.0, "half_open", "closed"),
    )
    found = measure_recoveries(
        scenario, monitor.transitions, ["ml_service"], start=START, end=START + 6.0, time_scale=SCALE
    )
    assert [e["recovered_at_production_s"] for e in found] == [pytest.approx(second, abs=0.1)]
    assert found[0]["recovery_production_s"] == pytest.approx(50.0, abs=0.1)
    assert first < second


def test_a_recovery_followed_by_a_failure_before_the_end_is_not_left_open() -> None:
    """A dependency that came back and failed again before the run ended, its breaker open all along,
    has no recovery waiting for a close: the breaker never saw it healthy for long."""
    scenario = build_scenario("flapping", 7)
    first, second = scenario.recoveries("ml_service", 600.0)[:2]
    monitor = _monitor_with((61.0, "closed", "open"))
    end = START + (second - 1.0) * SCALE  # down again, not yet back
    found = measure_recoveries(
        scenario, monitor.transitions, ["ml_service"], start=START, end=end, time_scale=SCALE
    )
    assert found == []
    assert first < second - 1.0


def test_the_monitor_turns_transitions_into_news() -> None:
    """Each breaker transition is recorded with its time and queued as a line for the views."""
    monitor = _monitor_with((62.0, "closed", "open"))
    assert [(t.breaker, t.old, t.new) for t in monitor.transitions] == [("ml_service", "closed", "open")]
    assert [(n.kind, n.severity) for n in monitor.news] == [("breaker", "critical")]
    assert "breaker ml_service: closed -> open" in monitor.news[0].text


def test_the_latency_histogram_quantiles_are_within_one_bucket() -> None:
    """Whole-run quantiles from the fixed histogram are within 10 % of the exact ones."""
    values = [0.001 * (i % 997 + 1) for i in range(10_000)]
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    for fraction in (0.5, 0.95, 0.99):
        exact = percentile(values, fraction)
        assert exact is not None
        measured = histogram.quantile(fraction)
        assert measured is not None
        assert exact <= measured <= exact * 1.1
    assert LatencyHistogram().quantile(0.5) is None
    assert percentile([], 0.5) is None


def test_merged_histograms_count_both() -> None:
    """Merging adds the counts of another histogram."""
    first, second = LatencyHistogram(), LatencyHistogram()
    first.record(0.001)
    second.record(1.0)
    first.merge(second)
    assert first.count == 2
    assert first.quantile(1.0) == pytest.approx(1.0, rel=0.1)


def test_the_summary_json_is_strict(tmp_path: Path) -> None:
    """Non-finite numbers are written as null, so any JSON parser reads the file."""
    path = tmp_path / "summary.json"
    write_summary_json({"a": math.inf, "b": [1.5, math.nan], "c": {"d": "x"}}, path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": None, "b": [1.5, None], "c": {"d": "x"}}


def test_the_summary_json_is_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader of the file (a check polling for it) sees the earlier summary or the new one, never
    a half-written file: it was truncated first, then written in pieces."""
    path = tmp_path / "summary.json"
    path.write_text('{"earlier": true}\n', encoding="utf-8")
    path.chmod(0o640)
    seen: list[str] = []
    dump = json.dump

    def watched(value: Any, handle: Any, **kwargs: Any) -> None:
        handle.write('{"partial": ')
        handle.flush()
        seen.append(path.read_text(encoding="utf-8"))  # what a reader sees in the middle of the write
        handle.seek(0)
        handle.truncate()
        dump(value, handle, **kwargs)

    from otel_resilience.demo import app  # noqa: PLC0415

    monkeypatch.setattr(app.json, "dump", watched)
    write_summary_json({"new": 1}, path)
    assert seen == ['{"earlier": true}\n']
    assert json.loads(path.read_text(encoding="utf-8")) == {"new": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert path.stat().st_mode & 0o777 == 0o640  # the file's permissions kept


def test_a_summary_json_that_fails_to_write_leaves_the_earlier_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (a full disk) leaves the earlier summary as it was and no partial file."""
    path = tmp_path / "summary.json"
    path.write_text('{"earlier": true}\n', encoding="utf-8")

    def full(value: Any, handle: Any, **kwargs: Any) -> None:
        handle.write('{"partial": ')
        raise OSError(28, "No space left on device")

    from otel_resilience.demo import app  # noqa: PLC0415

    monkeypatch.setattr(app.json, "dump", full)
    with pytest.raises(OSError, match="No space left"):
        write_summary_json({"new": 1}, path)
    assert path.read_text(encoding="utf-8") == '{"earlier": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_summary_json_to_a_device_or_a_pipe_is_written_in_place(tmp_path: Path) -> None:
    """A path that is not a regular file (a device, a pipe: ``/dev/stdout`` of ``| jq``) is written
    as it is, not replaced (nor resolved: ``/proc/self/fd/1`` of a pipe names no file)."""
    write_summary_json({"new": 1}, Path("/dev/null"))
    assert Path("/dev/null").is_char_device()
    reader, writer = os.pipe()
    try:
        write_summary_json({"new": 1}, Path(f"/proc/self/fd/{writer}"))
        os.close(writer)
        writer = -1
        with os.fdopen(reader, encoding="utf-8") as handle:
            reader = -1
            assert json.loads(handle.read()) == {"new": 1}
    finally:
        for descriptor in (reader, writer):
            if descriptor >= 0:
                os.close(descriptor)


def test_the_hedging_line_names_what_refused_each_hedge() -> None:
    """A hedge refused by the deadline is not reported as refused by the budget: by reason."""
    now = [START]
    monitor = Monitor(["database"], start=START, clock=lambda: now[0])
    source = TelemetrySource("hedging", "database", "database")
    monitor.on_event(source, Event.HEDGE_DENIED, HedgeDenied("delay", "deadline"))
    monitor.on_event(source, Event.HEDGE_DENIED, HedgeDenied("failure", "rejected"))
    monitor.on_event(source, Event.HEDGE_DENIED, HedgeDenied("delay", "budget"))
    view = PolicyView(
        "database", 0, 0, 0, 0, 0, 0, 0, 0, "healthy", None, None,
        hedging=HedgingView(delay=0.15, executions=4, hedges=1, denied=3, hedge_wins=1, original_wins=0),
    )  # fmt: skip
    summary = summarize(
        scenario=build_scenario("steady", 7),
        time_scale=SCALE,
        monitor=monitor,
        views=[view],
        recovery_stats={"total_attempts": 0, "successful_recoveries": 0, "recovery_rate": None},
        end=START + 1.0,
        stopped_by="duration",
    )
    assert summary["policies"]["database"]["hedges_denied"] == {"budget": 1, "deadline": 1, "rejected": 1}
    (line,) = [line for line in format_summary(summary) if line.startswith("hedging ")]
    assert "by its budget" not in line
    assert line.endswith("3 hedges refused (budget 1, deadline 1, rejected 1)")


def test_the_retry_budget_line_names_the_policies_that_draw_on_it() -> None:
    """The line names the policies that draw on the budget: one it denied every retry it asked for
    (none scheduled) with its denials, not left out as one with no retries; and not a policy whose
    retries have no budget (a --config file's), retries or not."""
    monitor = Monitor(["ml_service", "content_api"], start=START, clock=lambda: START)
    denied = TelemetrySource("retry", "content_api", "content_api")
    for _ in range(3):
        monitor.on_event(denied, Event.RETRY_EXHAUSTED, RetryExhausted(1, "TransientServiceError", "budget"))
    monitor.calls["ml_service"].retries = 2  # retries of its own, outside the budget
    views = [
        PolicyView(name, 0, 0, 0, 0, 0, 0, 0, 0, "healthy", None, None)
        for name in ("ml_service", "content_api")
    ]
    summary = summarize(
        scenario=build_scenario("surge", 7),
        time_scale=SCALE,
        monitor=monitor,
        views=views,
        recovery_stats={"attempts": 0},
        end=START + 1.0,
        stopped_by="duration",
        budget={"first_attempts": 10, "retries": 0, "available": 0, "denied": 3, "policies": ["content_api"]},
    )
    (line,) = [line for line in format_summary(summary) if line.startswith("retry budget ")]
    assert line == "retry budget  3 retries denied (content_api 3); 0 available at the end"


def _summary_json_paragraph() -> str:
    """The paragraph of docs/demo.md that lists what `--summary-json` writes."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "demo.md").read_text(encoding="utf-8")
    start = text.index("* `--summary-json PATH` writes:")
    return text[start : text.index("\n* ", start + 1)]


async def test_every_field_of_the_summary_json_is_documented(run_scenario: Any) -> None:
    """docs/demo.md names every key `--summary-json` writes, down to each policy's, breaker's,
    limiter's and hedging link's (it left out `would_open`, `rate_limiters`, `retry_budget`,
    `tenants`...)."""
    summary, _ = await run_scenario("surge", 0.3)
    documented = set(re.findall(r"`(\w+)`", _summary_json_paragraph()))
    nested = [
        summary,
        summary["requests"],
        summary["latency"],
        summary["recovery"],
        summary["alerts"],
        summary["retry_budget"],
        summary["tenants"],
        *summary["policies"].values(),
        *summary["breakers"].values(),
        *summary["bulkheads"].values(),
        *summary["rate_limiters"].values(),
        *summary["hedging"].values(),
    ]
    written = {key for part in nested for key in part}
    assert sorted(written - documented) == []


def test_would_open_trips_are_all_counted_and_crowd_out_no_state_change() -> None:
    """A `metrics_only` breaker's would-open trips (`metrics_only -> metrics_only`, dozens per
    brownout cycle) are counted, every one, and do not use up the transitions kept for the
    recovery times: a long run stopped counting them at 10,000 and then lost the ML breaker's
    later state changes."""
    trips = 10_001
    now = [START]
    monitor = Monitor(["ml_service"], start=START, clock=lambda: now[0])
    rollout = TelemetrySource("circuit_breaker", "database_rate")
    for _ in range(trips):
        monitor.on_event(
            rollout, Event.STATE_CHANGED, StateChanged("metrics_only", "metrics_only", "failure_rate")
        )
    now[0] = START + 1.0
    breaker = TelemetrySource("circuit_breaker", "ml_service")
    monitor.on_event(breaker, Event.STATE_CHANGED, StateChanged("closed", "open", "failure_threshold"))
    view = PolicyView("ml_service", 0, 0, 0, 0, 0, 0, 0, 0, "down", BreakerView("open", 1), None)
    summary = summarize(
        scenario=build_scenario("outage", 7),
        time_scale=SCALE,
        monitor=monitor,
        views=[view],
        recovery_stats={"attempts": 0},
        end=START + 2.0,
        stopped_by="duration",
    )
    assert summary["would_open"] == {"database_rate": trips}
    assert summary["breakers"]["ml_service"]["opened"] is True
    assert summary["breakers"]["ml_service"]["transitions"] == [
        {"at_s": 1.0, "old": "closed", "new": "open", "reason": "failure_threshold"}
    ]


def _flapping_run(monitor: Monitor, clock: FakeClock, scenario: Any, recoveries: list[float]) -> int:
    """Feed `monitor` the ML breaker's changes around each outage of `recoveries`: it opens a second
    into the outage, fails three probes, and closes 5-24 s after the recovery (33 s after the
    third-to-last); the last outage's breaker is still open at the end. Return the changes made."""
    source = TelemetrySource("circuit_breaker", "ml_service")
    changes = 0

    def change(at: float, old: str, new: str) -> None:
        nonlocal changes
        clock.advance(START + at * SCALE - clock.now())
        monitor.on_event(source, Event.STATE_CHANGED, StateChanged(old, new, "test"))
        changes += 1

    previous = 0.0
    for index, recovered in enumerate(recoveries):
        failed = scenario.next_failure("ml_service", previous)
        change(failed + 1.0, "closed", "open")
        for probe in range(3):
            change(failed + 2.0 + probe, "open", "half_open")
            change(failed + 2.5 + probe, "half_open", "open")
        if index < len(recoveries) - 1:
            took = 33.0 if index == len(recoveries) - 3 else 5.0 + index % 20
            change(recovered + took - 1.0, "open", "half_open")
            change(recovered + took, "half_open", "closed")
        previous = recovered
    return changes


def test_a_long_flapping_run_measures_every_recovery_and_counts_every_state_change() -> None:
    """Past 10,000 state changes (about 2.8 hours of `flapping` at --time-scale 0.01) every recovery
    is still measured and every change counted: the changes were kept in a list capped at 10,000,
    so the later recoveries were not measured, the longest one was missed, and one was reported as
    not closed by the end. The summary lists the first 200 recoveries and counts them all."""
    scenario = build_scenario("flapping", 7)
    horizon = 600.0 * 250
    recoveries = scenario.recoveries("ml_service", horizon)
    clock = FakeClock(START)
    monitor = Monitor(["ml_service"], start=START, clock=clock.now, scenario=scenario, time_scale=SCALE)
    changes = _flapping_run(monitor, clock, scenario, recoveries)
    assert changes > 10_000
    end = START + (recoveries[-1] + 5.0) * SCALE  # the last recovery's breaker has not closed yet
    view = PolicyView(
        "ml_service", 0, 0, 0, 0, 0, 0, 0, 0, "healthy", BreakerView("open", len(recoveries)), None
    )
    summary = summarize(
        scenario=scenario,
        time_scale=SCALE,
        monitor=monitor,
        views=[view],
        recovery_stats={"attempts": 0},
        end=end,
        stopped_by="duration",
    )
    recovery = summary["recovery"]
    assert recovery["measured"] == len(recoveries) - 1
    assert recovery["max_production_s"] == 33.0
    assert recovery["max_s"] == pytest.approx(0.33)
    assert recovery["not_closed_by_end"] == 1
    assert summary["claims"]["recovery_time_s"]["measured"] == 33.0
    events = recovery["events"]
    assert len(events) == 200
    assert [e["recovered_at_production_s"] for e in events] == [round(r, 1) for r in recoveries[:200]]
    assert [e["recovery_production_s"] for e in events[:3]] == [5.0, 6.0, 7.0]
    breaker = summary["breakers"]["ml_service"]
    assert breaker["state_changes"] == changes
    assert breaker["opened"] is True
    assert breaker["closed_after_opening"] is True
    assert len(breaker["transitions"]) == 200
    lines = format_summary(summary)
    assert sum(1 for line in lines if line.startswith("recovery      ml_service recovered")) == 200
    more = f"and {len(recoveries) - 1 - 200} more recoveries measured (the first 200 of each dependency are listed)"
    assert any(line.strip() == more for line in lines)


def test_the_recovery_figures_do_not_change_when_read_again() -> None:
    """Reading the figures (the summary) judges the recoveries up to its end without consuming
    them: a second summary, later, still sees the recovery whose breaker had not closed."""
    scenario = build_scenario("outage", 7)
    recovered = scenario.recoveries("ml_service", 600.0)[0]
    clock = FakeClock(START)
    monitor = Monitor(["ml_service"], start=START, clock=clock.now, scenario=scenario, time_scale=SCALE)
    clock.advance(62.0 * SCALE)
    monitor.on_event(
        TelemetrySource("circuit_breaker", "ml_service"),
        Event.STATE_CHANGED,
        StateChanged("closed", "open", "failure_threshold"),
    )
    first = monitor.recoveries(
        scenario, ["ml_service"], end=START + (recovered + 1) * SCALE, time_scale=SCALE
    )
    again = monitor.recoveries(
        scenario, ["ml_service"], end=START + (recovered + 2) * SCALE, time_scale=SCALE
    )
    assert first.not_closed == again.not_closed == 1
    assert [e.recovered for e in first.events] == [e.recovered for e in again.events] == [recovered]


def test_state_changes_reported_from_several_threads_are_all_counted() -> None:
    """Breakers changing state on several threads at once: every change is counted, none lost."""
    ticks = itertools.count()
    monitor = Monitor(
        ["ml_service"],
        start=START,
        clock=lambda: START + next(ticks) * 0.001,
        scenario=build_scenario("flapping", 7),
        time_scale=SCALE,
    )
    per_thread = 2000
    barrier = threading.Barrier(4)

    def flap(name: str) -> None:
        source = TelemetrySource("circuit_breaker", name)
        barrier.wait()
        for number in range(per_thread):
            old, new = ("closed", "open") if number % 2 == 0 else ("open", "closed")
            monitor.on_event(source, Event.STATE_CHANGED, StateChanged(old, new, "test"))

    names = ["ml_service", "content_api", "other_a", "other_b"]
    threads = [threading.Thread(target=flap, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [monitor.breaker(name).changes for name in names] == [per_thread] * 4
    assert len(monitor.transitions) == 4 * per_thread
    assert all(a.at <= b.at for a, b in zip(monitor.transitions, monitor.transitions[1:], strict=False))


@pytest.mark.parametrize("time_scale", [0.0, -0.01, math.inf, math.nan])
def test_a_monitor_refuses_a_time_scale_that_is_not_positive(time_scale: float) -> None:
    """A time scale the recovery times would be divided by must be a positive finite number."""
    with pytest.raises(ValueError, match="time_scale"):
        Monitor(["ml_service"], start=START, scenario=build_scenario("outage", 7), time_scale=time_scale)


def test_a_summary_json_to_a_pipe_nobody_reads_waits_no_longer_than_its_timeout(tmp_path: Path) -> None:
    """A named pipe with no reader, written with a timeout (after a stop): the write gives up then,
    with ETIMEDOUT, where it waited for a reader for ever."""
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match=r"not written within 0\.2 s of the stop") as raised:
        write_summary_json({"new": 1}, fifo, timeout=0.2)
    assert raised.value.errno == errno.ETIMEDOUT
    with contextlib.suppress(OSError):  # lets the abandoned write end: it opens, writes, and goes
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(reader)
