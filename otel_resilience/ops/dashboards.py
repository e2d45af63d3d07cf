"""Grafana dashboards for otel_resilience, built with Grafana's ``grafana-foundation-sdk``.

``dashboards/*.json`` is generated from here (``python -m otel_resilience.ops.export dashboards
dashboards``) and imports into Grafana 11 as it is:

* ``otel-resilience-overview.json``: execution rate, success rate, p50/p95/p99 latency by policy
  (with exemplars), breaker states as a state timeline, bulkhead saturation, retry, fallback
  and recovery rates, the firing alerts, and the chaos drills (injections by policy and kind);
* drill-downs for circuit breakers, retries, hedging and timeouts, bulkheads, and recovery and
  error patterns.

Every dashboard has a Prometheus **datasource variable** (no datasource uid is written
anywhere), a ``job`` (service) variable and the variable of its subject (policy, breaker,
bulkhead, recovery system). Every panel has a unit and a description; the panels that show what
an alert watches draw the alert's threshold from the same constant in
:mod:`~otel_resilience.ops.alert_rules`, read its recording rule, and link to its runbook.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import naming
from otel_resilience.telemetry import semconv as sc

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DASHBOARD_TAG",
    "DATASOURCE_UID",
    "DATASOURCE_VARIABLE",
    "GRAFANA_MIN_VERSION",
    "GRAFANA_SCHEMA_VERSION",
    "README_FILE",
    "AlertPanel",
    "alert_panels",
    "dashboard_documents",
    "main",
    "render_dashboards",
    "render_readme",
]

DASHBOARD_TAG: Final = "otel-resilience"
GRAFANA_MIN_VERSION: Final = "11.0"
"""The lowest Grafana version the dashboards support (docs/operations.md, "Grafana versions")."""
GRAFANA_SCHEMA_VERSION: Final = 39
"""The dashboards' ``schemaVersion``: the latest that :data:`GRAFANA_MIN_VERSION` knows (newer
Grafana versions migrate it on import; the SDK's default, 41, is newer than Grafana 11.0)."""
DATASOURCE_VARIABLE: Final = "datasource"
DATASOURCE_UID: Final = "${" + DATASOURCE_VARIABLE + "}"
"""The only datasource uid that appears in the dashboards: the variable."""

_JOB: Final = naming.SERVICE_LABEL
_POLICY: Final = naming.label(sc.POLICY)
_NAME: Final = naming.label(sc.NAME)
_OUTCOME: Final = naming.label(sc.OUTCOME)
_ERROR_TYPE: Final = naming.label(sc.ERROR_TYPE)
_CB_STATE: Final = naming.label(sc.CB_STATE)
_BUCKET: Final = naming.BUCKET_LABEL

_STATE_LEVELS: Final = {state: level for level, state in enumerate(sc.CB_STATE_SEVERITY)}
"""Breaker states as numbers for the state timeline, worst highest (``sc.CB_STATE_SEVERITY``, the
order the in-process state gauge merges namesakes by): across instances the worst one wins."""
_STATE_COLORS: Final = {
    "closed": "green",
    "metrics_only": "blue",
    "disabled": "#8e8e8e",
    "half_open": "yellow",
    "open": "red",
}

_GREEN: Final = "green"
_ORANGE: Final = "orange"
_RED: Final = "red"


@dataclass(frozen=True, slots=True)
class _Query:
    expr: str
    legend: str
    """The legend of its series, without the service, which every legend starts with (:func:`_legend`)."""
    instant: bool = False
    exemplar: bool = False
    table: bool = False
    dashed: bool = False
    """Draw this query's series as a dashed line without fill (a limit beside the values)."""


@dataclass(frozen=True, slots=True)
class _Panel:
    kind: str
    """``timeseries``, ``stat``, ``state`` (state timeline) or ``table``."""
    title: str
    description: str
    unit: str
    queries: tuple[_Query, ...]
    thresholds: tuple[tuple[float | None, str], ...] = ((None, _GREEN),)
    alert: str | None = None
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True, slots=True)
class _Dashboard:
    file: str
    uid: str
    title: str
    description: str
    variables: tuple[str, ...]
    rows: tuple[tuple[str, tuple[_Panel, ...]], ...]


@dataclass(frozen=True, slots=True)
class AlertPanel:
    """A panel that shows what an alert watches.

    Attributes:
        dashboard: The dashboard's uid.
        title: The panel's title.
        alert: The alert's name.
        thresholds: The threshold values the panel draws (those of the alert).
    """

    dashboard: str
    title: str
    alert: str
    thresholds: tuple[float, ...]


# --- query helpers ------------------------------------------------------------------------------


def _m(**matchers: str) -> str:
    """Matchers from ``label=value`` pairs: a value starting with ``~`` is a regex, ``!`` a negation."""
    parts = []
    for key, item in matchers.items():
        label = {"job": _JOB, "policy": _POLICY, "name": _NAME}.get(key, key)
        if item.startswith("~"):
            parts.append(f'{label}=~"{item[1:]}"')
        elif item.startswith("!"):
            parts.append(f'{label}!="{item[1:]}"')
        else:
            parts.append(f'{label}="{item}"')
    return "{" + ", ".join(parts) + "}"


_JOB_SEL: Final = {"job": "~$job"}
_POLICY_SEL: Final = {"job": "~$job", "policy": "~$policy"}
_LIMITER_SEL: Final = {"job": "~$job", "name": "~$rate_limiter"}
"""The rate limiters by name: those used alone (``try_acquire``, keyed) run no execution of a policy."""


def _by(*labels: str) -> str:
    """The grouping of every aggregation of a panel: the service, then ``labels``.

    The ``job`` variable selects every service by default, and two services may name a policy,
    breaker or bulkhead alike: an aggregation that dropped ``job`` would add them up (or take
    the worst of them) under one name.
    """
    return ", ".join((_JOB, *labels))


def _rate(series: str, selector: str, by: Sequence[str]) -> str:
    return f"sum by ({_by(*by)}) (rate({series}{selector}[$__rate_interval]))"


def _increase(series: str, selector: str, by: Sequence[str], window: str = "$__rate_interval") -> str:
    """The increase of a counter over ``window``, counting a series born in the window from 0.

    ``increase()`` alone misses the first event of a series that appears at its first increment
    (already at 1). The library starts every series whose labels are known in advance at 0, but
    not those it cannot know (an alert's subject), nor those of an older version. The rule is the
    recording rules' own (:mod:`~otel_resilience.ops.alert_rules`): a series with no sample
    ``window`` ago counts its whole value, unless it is the same counter after a gap in the
    scrapes (:data:`~otel_resilience.ops.alert_rules.SERIES_HISTORY`).
    """
    return ar._events(f"{series}{selector}", window, (_JOB, *by))  # one rule for the rules and the panels


_SERVICE_SERIES: Final = naming.series(sc.TELEMETRY_ERRORS)
"""The series that puts a service on the dashboards: every instrumented process exports it from its
start, before any policy, breaker or bulkhead exists and before any call (the executions appear with a
pipeline, which a pattern used alone or a policy run by configuration builds at its first call)."""

_NO_VALUE: Final = "none"
"""The value of a zero line's legend label that no series can give it (an error type, a key)."""


def _or_zero(query: _Query) -> _Query:
    """``query``, or one series at 0 (per service) when it has none.

    For panels whose labels cannot be known in advance (an error type, an alert's subject, an
    operation), so that no series can start at 0: "nothing happened" shows as 0, not "No data".
    The zero line is labelled as the query's series (:func:`_zero_line`).
    """
    return replace(query, expr=f"{query.expr}\nor on() {_zero_line(query.legend)}")


def _zero_line(legend: str) -> str:
    """A 0 for each selected service, with every label ``legend`` names: its legend reads as the series'.

    ``job`` is the service's (from :data:`_SERVICE_SERIES`, which every service exports from its
    start); every other label is :data:`_NO_VALUE`, as no series gives it one. A bare ``vector(0)``
    has no label: its legend would read ``" / ..."``.
    """
    line = f"0 * group by ({_JOB}) ({_SERVICE_SERIES}{_m(job='~$job')})"
    for label in dict.fromkeys(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)):
        if label != _JOB:
            line = f'label_replace({line}, "{label}", "{_NO_VALUE}", "", "")'
    return line


def _or_zero_per_policy(expr: str, selector: dict[str, str]) -> str:
    """``expr`` (reading a recording rule), or 0 for each policy with executions that it has no series of.

    For the panels of recording rules over counters whose series appear at their first event (a
    retry, a fallback: their error type cannot be known in advance), so that "none happened"
    shows as 0 for each policy, not "No data". The 0 comes from the executions rule of the same
    rules file: a Prometheus that does not load the rules still shows no data, not a 0 that
    would hide what the rule watches. ``selector`` may only match the job and the policy.
    """
    return f"{expr}\nor on ({_JOB}, {_POLICY})\n0 * {_recorded(ar.R_EXECUTIONS, selector)}"


_RULES_PATH: Final = f"alerts/{ar.RULES_FILE}"


def _rule_note(rule: str) -> str:
    """The description sentence of a panel that reads a recording rule."""
    return (
        f"Recording rule `{rule}` of `{_RULES_PATH}`: the panel has no data unless the Prometheus "
        "this data source reads loads those rules."
    )


def _histogram_rate(instrument: str, part: str, selector: str) -> str:
    """The per-second rate of one series (``bucket``, ``sum`` or ``count``) of a histogram.

    For a histogram that a service may keep in process
    (:data:`~otel_resilience.telemetry.semconv.IN_PROCESS_HISTOGRAMS`): the rate of the SDK
    histogram's series, or else that of the counter that exports the same series in process
    (same labels, ``le`` included), so that a panel shows services in either mode. The one place
    where a panel reads a histogram: aggregate its result (``sum by (...) (...)``).
    """
    rates = [naming.series(instrument, part)]
    in_process = sc.IN_PROCESS_HISTOGRAMS.get(instrument)
    if in_process is not None:
        rates.append(naming.series(in_process[part]))
    return " or ".join(f"rate({series}{selector}[$__rate_interval])" for series in rates)


def _in_process_note(instrument: str, part: str = "bucket", *, exemplars: bool = True) -> str:
    """The description sentence of a panel that reads ``part`` of a histogram kept in process or not."""
    in_process = naming.series(sc.IN_PROCESS_HISTOGRAMS[instrument][part])
    note = (
        "A service that keeps its duration histograms in process "
        f"(`instrument(in_process_histograms=True)`) is read from `{in_process}` instead"
    )
    return f"{note}, which has no exemplars." if exemplars else f"{note}."


def _quantile(q: float, instrument: str, selector: str, by: str) -> str:
    """The ``q`` quantile of a histogram (either form, :func:`_histogram_rate`) by the labels ``by``."""
    rate = _histogram_rate(instrument, "bucket", selector)
    return f"histogram_quantile({q:g}, sum by ({_BUCKET}, {_by(by)}) ({rate}))"


def _quantile_or_zero(q: float, instrument: str, selector: str, by: str, legend: str) -> _Query:
    """The ``q`` quantile of a histogram, 0 for each group with no record in the window, else a zero line.

    For a histogram whose series appear at its first record (a backoff, a permit wait, a hedged
    attempt): once they exist, a window without records makes ``histogram_quantile`` answer NaN (its
    buckets did not move), which Grafana draws as no data. That NaN is dropped (``>= 0``) and the
    group reads 0, from the same buckets summed over ``le``; a service with no such series at all
    reads its zero line (:func:`_or_zero`).
    """
    rate = _histogram_rate(instrument, "bucket", selector)
    buckets = f"sum by ({_BUCKET}, {_by(by)}) ({rate})"
    expr = f"histogram_quantile({q:g}, {buckets}) >= 0\nor 0 * sum without ({_BUCKET}) ({buckets})"
    return _or_zero(_Query(expr, legend, exemplar=True))


def _quantiles(
    instrument: str, selector: str, by: str, legend: str, *, or_zero: bool = False
) -> tuple[_Query, ...]:
    """p50, p95 and p99 of a histogram; ``or_zero`` for one whose series appear at their first record."""
    if or_zero:
        return tuple(
            _quantile_or_zero(q, instrument, selector, by, f"p{round(q * 100)} {legend}")
            for q in (0.5, 0.95, 0.99)
        )
    return tuple(
        _Query(_quantile(q, instrument, selector, by), f"p{round(q * 100)} {legend}", exemplar=True)
        for q in (0.5, 0.95, 0.99)
    )


def _above(*levels: tuple[float, str]) -> tuple[tuple[float | None, str], ...]:
    """Thresholds for "higher is worse": green below the first level."""
    return ((None, _GREEN), *levels)


def _breaker_state_expr(selector: dict[str, str]) -> str:
    state = naming.series(sc.CB_STATE_METRIC)
    terms = [
        f"{state}{_m(**selector, **{_CB_STATE: naming.value(sc.CB_STATE, name)})} * {level}"
        for name, level in _STATE_LEVELS.items()
        if level
    ]
    return f"max by ({_by(_NAME)}) (\n  " + "\n  or\n  ".join(terms) + "\n)"


def _transitions_annotation(previous: str, state: str) -> str:
    """Breakers that changed from ``previous`` to ``state`` (any reason) within ``$__rate_interval``.

    Not ``$__interval``: Grafana runs an annotation at steps of ``$__interval``, which is the
    scrape interval for ranges of up to hours, and its steps fall between scrapes: a window that
    long holds one sample, and ``increase()`` needs two. Over ``$__rate_interval`` (at least four
    scrapes) a trip is counted at several steps in a row, which Grafana draws as one mark (a
    region from the trip on): it joins the active steps of a series that are a step apart.
    """
    transitions = naming.series(sc.CB_TRANSITIONS)
    selector = _m(
        **_JOB_SEL,
        **{
            naming.label(sc.CB_PREVIOUS_STATE): naming.value(sc.CB_PREVIOUS_STATE, previous),
            _CB_STATE: naming.value(sc.CB_STATE, state),
        },
    )
    return f"{_increase(transitions, selector, (_NAME,))} > 0"


_ANNOTATIONS: Final = (
    ("Circuit breaker trips", "red", ("closed", "open"), "tripped (closed -> open)"),
    (
        "Circuit breaker would-be trips (metrics_only)",
        "blue",
        ("metrics_only", "metrics_only"),
        "would have tripped (metrics_only: no call rejected)",
    ),
)
"""The annotations of every dashboard: name, colour, the transition they mark, and what a mark
says happened to the breaker it names. A trip is any change from closed to open, whatever its
reason (failure threshold, failure or slow-call rate, forced, isolated); a ``metrics_only``
breaker reports the trip it would make as a change to itself."""
_ANNOTATION_TAGS: Final = (_JOB, _NAME)
"""The labels of a mark's series shown as its tags (Grafana's ``tagKeys``)."""


def _annotation_fields(what: str) -> dict[str, str]:
    """What a mark shows: the breaker as its title, breaker and service in its text, both as tags.

    These are the Prometheus data source's annotation fields, templates over the result's labels.
    """
    return {
        "titleFormat": f"{{{{{_NAME}}}}} {what}",
        "textFormat": f"Circuit breaker {{{{{_NAME}}}}} of service {{{{{_JOB}}}}} {what}",
        "tagKeys": ",".join(_ANNOTATION_TAGS),
    }


def _recorded(name: str, selector: dict[str, str]) -> str:
    return f"{name}{_m(**selector)}"


# --- panels shared by several dashboards ----------------------------------------------------


def _breaker_timeline(selector: dict[str, str], width: int = 12) -> _Panel:
    return _Panel(
        "state",
        "Circuit breaker states",
        "State of every circuit breaker over time (the worst state over the service's instances): "
        "closed, metrics_only (every call passes; the trips it would make are only reported), "
        "disabled (every call passes, nothing opens it), half-open (probing) or open (rejecting "
        f"calls at once). From `{naming.series(sc.CB_STATE_METRIC)}`, 1 for the current state.",
        "none",
        (_Query(_breaker_state_expr(selector), f"{{{{{_NAME}}}}}"),),
        thresholds=_above((_STATE_LEVELS["half_open"], _ORANGE), (_STATE_LEVELS["open"], _RED)),
        alert=ar.A_BREAKER_OPEN,
        width=width,
    )


def _breakers_open(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "stat",
        "Breakers open or half-open",
        "Instances in which each breaker is open or half-open now (disabled and metrics_only let "
        f"every call through and count 0). {ar.A_BREAKER_OPEN} warns after "
        f"{ar.BREAKER_OPEN_WARNING_FOR} and pages after {ar.BREAKER_OPEN_CRITICAL_FOR}, while it rejects "
        f"calls or fails probes (a breaker no call reaches stays half-open, rejecting nothing). "
        f"{_rule_note(ar.R_BREAKER_OPEN)}",
        "short",
        (_Query(_recorded(ar.R_BREAKER_OPEN, selector), f"{{{{{_NAME}}}}}"),),
        thresholds=_above((1, _RED)),
        alert=ar.A_BREAKER_OPEN,
        width=8,
    )


def _breaker_rates(selector: dict[str, str]) -> _Panel:
    failure_rate = naming.series(sc.CB_FAILURE_RATE)
    slow_call_rate = naming.series(sc.CB_SLOW_CALL_RATE)
    threshold = naming.series(sc.CB_FAILURE_RATE_THRESHOLD)
    sel = _m(**selector)
    return _Panel(
        "timeseries",
        "Failure and slow-call rates",
        "Share of failed and of slow calls in the sliding window of each breaker that has one (the "
        "highest over the service's instances), and its failure-rate threshold (dashed, the lowest): "
        "once the window holds minimum_calls calls, a closed breaker opens when its failure rate "
        "reaches the dashed line. The window starts again empty at every state change and, in "
        "metrics_only, after every would-be trip: the rates drop to 0 then. Breakers without a "
        "sliding window have no rates; one series at 0 when no breaker has one. From "
        f"`{failure_rate}`, `{slow_call_rate}` and `{threshold}`.",
        "percentunit",
        (
            _or_zero(_Query(f"max by ({_by(_NAME)}) ({failure_rate}{sel})", f"{{{{{_NAME}}}}} failure rate")),
            _Query(f"max by ({_by(_NAME)}) ({slow_call_rate}{sel})", f"{{{{{_NAME}}}}} slow-call rate"),
            _Query(f"min by ({_by(_NAME)}) ({threshold}{sel})", f"{{{{{_NAME}}}}} threshold", dashed=True),
        ),
        min=0,
        max=1,
    )


def _breaker_would_trips(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Would-be trips (metrics_only)",
        "Trips each breaker in metrics_only mode would have made within the last "
        f"{ar.BREAKER_WOULD_OPEN_WINDOW} (its failure rate, slow-call rate or consecutive failures at "
        "their threshold, reported as metrics_only -> metrics_only; no call was rejected), counting "
        f"each breaker's first. {ar.A_BREAKER_WOULD_OPEN} fires when they keep coming for "
        f"{ar.BREAKER_WOULD_OPEN_FOR} while the breaker is metrics_only. "
        f"{_rule_note(ar.R_BREAKER_WOULD_TRIPS)}",
        "short",
        (_Query(_recorded(ar.R_BREAKER_WOULD_TRIPS, selector), f"{{{{{_NAME}}}}}"),),
        thresholds=_above((1, _RED)),
        alert=ar.A_BREAKER_WOULD_OPEN,
        min=0,
    )


def _breaker_trips(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Trips in the flapping window",
        f"Trips (closed -> open) within the last {ar.BREAKER_FLAPPING_WINDOW}, counting each "
        "breaker's first trip, of the breaker of each name that tripped most (each instance's, and "
        "each key's where a keyed policy puts its keys on its metrics; a breaker shared on Redis "
        f"once over the replicas). {ar.A_BREAKER_FLAPPING} fires at {ar.BREAKER_FLAPPING_TRIPS}. "
        f"{_rule_note(ar.R_BREAKER_TRIPS)}",
        "short",
        (_Query(_recorded(ar.R_BREAKER_TRIPS, selector), f"{{{{{_NAME}}}}}"),),
        thresholds=_above((ar.BREAKER_FLAPPING_TRIPS, _RED)),
        alert=ar.A_BREAKER_FLAPPING,
        min=0,
    )


def _breaker_transitions(selector: dict[str, str]) -> _Panel:
    transitions = naming.series(sc.CB_TRANSITIONS)
    previous, state, reason = (
        naming.label(k) for k in (sc.CB_PREVIOUS_STATE, sc.CB_STATE, sc.CB_TRANSITION_REASON)
    )
    return _Panel(
        "timeseries",
        "Transitions by reason",
        "State transitions per interval, by breaker, from -> to state and reason (failure threshold, "
        "failure rate, slow-call rate, timeout elapsed, probe failed, timed out or succeeded, forced, "
        "reset, isolated); metrics_only -> metrics_only is a trip a metrics_only breaker would have "
        f"made. From `{transitions}`.",
        "short",
        (
            _Query(
                _increase(transitions, _m(**selector), (_NAME, previous, state, reason)),
                f"{{{{{_NAME}}}}} {{{{{previous}}}}} -> {{{{{state}}}}} ({{{{{reason}}}}})",
            ),
        ),
        min=0,
    )


def _breaker_calls(selector: dict[str, str]) -> _Panel:
    calls = naming.series(sc.CB_CALLS)
    result = naming.label(sc.CB_CALL_RESULT)
    return _Panel(
        "timeseries",
        "Calls by result",
        "Calls through each breaker per second, by how the breaker counted them "
        f"(success, failure, rejected, ignored, cancelled). From `{calls}`.",
        "ops",
        (_Query(_rate(calls, _m(**selector), (_NAME, result)), f"{{{{{_NAME}}}}} {{{{{result}}}}}"),),
    )


def _breaker_rejections(selector: dict[str, str]) -> _Panel:
    rejections = naming.series(sc.REJECTIONS)
    reasons = naming.one_of(sc.REJECTION_REASON, "circuit_open", "half_open_full")
    reason = naming.label(sc.REJECTION_REASON)
    return _Panel(
        "timeseries",
        "Rejected calls",
        "Calls each breaker rejected per second without calling the dependency, by "
        f"reason (open, or half-open with every probe in flight); one series at 0 when no breaker "
        f"reports any yet (a breaker used alone starts its series at its first call). From `{rejections}`.",
        "ops",
        (
            _or_zero(
                _Query(
                    _rate(rejections, _m(**selector, **{reason: "~" + reasons}), (_NAME, reason)),
                    f"{{{{{_NAME}}}}} {{{{{reason}}}}}",
                )
            ),
        ),
    )


def _bulkhead_saturation(selector: dict[str, str]) -> _Panel:
    saturation = _recorded(ar.R_BULKHEAD_SATURATION, selector)
    return _Panel(
        "timeseries",
        "Bulkhead saturation",
        "Share of each bulkhead's concurrency limit in use (the most loaded instance; for a keyed "
        f"policy, its most saturated key, from `{naming.series(sc.BULKHEAD_UTILIZATION)}`), and its "
        f"average over the last {ar.BULKHEAD_NEAR_FOR} (dashed): {ar.A_BULKHEAD_NEAR} fires when the "
        f"average reaches {ar.BULKHEAD_NEAR_SATURATION:.0%}. "
        f"{ar.A_BULKHEAD_FULL} fires on rejections, not on saturation (see Share of executions "
        f"rejected). {_rule_note(ar.R_BULKHEAD_SATURATION)}",
        "percentunit",
        (
            _Query(saturation, f"{{{{{_NAME}}}}}"),
            _Query(
                f"avg_over_time({saturation}[{ar.BULKHEAD_NEAR_FOR}])",
                f"{{{{{_NAME}}}}} average over {ar.BULKHEAD_NEAR_FOR}",
                dashed=True,
            ),
        ),
        thresholds=_above((ar.BULKHEAD_NEAR_SATURATION, _ORANGE), (ar.BULKHEAD_FULL_SATURATION, _RED)),
        alert=ar.A_BULKHEAD_NEAR,
        min=0,
        max=1,
    )


def _bulkhead_rejection_share(selector: dict[str, str]) -> _Panel:
    share = _recorded(ar.R_BULKHEAD_REJECTION_RATIO, selector)
    rejections = _recorded(ar.R_BULKHEAD_REJECTIONS, selector)
    return _Panel(
        "timeseries",
        "Share of executions rejected",
        "Share of each policy's executions its bulkhead rejected (full, or queue timeout) over "
        f"{ar.RATE_WINDOW}, by policy and bulkhead. {ar.A_BULKHEAD_FULL} fires above "
        f"{ar.BULKHEAD_REJECTION_RATIO:.0%} for {ar.BULKHEAD_FULL_FOR} (with at least "
        f"{ar.MIN_EXECUTION_RATE:g} executions/s); 0 for a bulkhead that rejected nothing (or whose "
        f"policy has no execution yet). {_rule_note(ar.R_BULKHEAD_REJECTION_RATIO)}",
        "percentunit",
        (
            _Query(
                f"{share}\nor on ({_by(_POLICY, _NAME)})\n0 * {rejections}",
                f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}}",
            ),
        ),
        thresholds=_above((ar.BULKHEAD_REJECTION_RATIO, _RED)),
        alert=ar.A_BULKHEAD_FULL,
        min=0,
    )


def _retry_ratio(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Retry rate (retries per execution)",
        "Retries scheduled per execution, by policy, over "
        f"{ar.RATE_WINDOW}. {ar.A_RETRY_STORM} fires above {ar.RETRY_STORM_RATIO:g} for "
        f"{ar.RATIO_ALERT_FOR} (with at least {ar.MIN_EXECUTION_RATE:g} executions/s); 0 for a "
        f"policy that retried nothing. {_rule_note(ar.R_RETRY_RATIO)}",
        "short",
        (_Query(_or_zero_per_policy(_recorded(ar.R_RETRY_RATIO, selector), selector), f"{{{{{_POLICY}}}}}"),),
        thresholds=_above((ar.RETRY_STORM_RATIO, _RED)),
        alert=ar.A_RETRY_STORM,
        min=0,
    )


def _fallback_ratio(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Fallback rate",
        "Share of executions a fallback ran for (answered, or failed too), by policy, over "
        f"{ar.RATE_WINDOW}. {ar.A_FALLBACK_HIGH} fires above {ar.FALLBACK_RATIO:.0%} for "
        f"{ar.RATIO_ALERT_FOR}; 0 for a policy no fallback ran for. {_rule_note(ar.R_FALLBACK_RATIO)}",
        "percentunit",
        (
            _Query(
                _or_zero_per_policy(_recorded(ar.R_FALLBACK_RATIO, selector), selector),
                f"{{{{{_POLICY}}}}} ({{{{{_NAME}}}}})",
            ),
        ),
        thresholds=_above((ar.FALLBACK_RATIO, _RED)),
        alert=ar.A_FALLBACK_HIGH,
        min=0,
    )


def _recovery_rate_or_one(selector: dict[str, str], rate: str = ar.R_RECOVERY_RATE) -> str:
    """The recorded recovery ``rate``, or 1 for a recovery system that made no action in its window.

    The 1 comes from the actions of the last :data:`~otel_resilience.ops.alert_rules.RECOVERY_WINDOW`
    (at 0 from the moment a policy has recovery), also for a longer window: a rate is missing only
    when no action was made in its window, which holds the shorter one.
    """
    attempts = _recorded(ar.R_RECOVERY_ATTEMPTS, selector)
    return f"{_recorded(rate, selector)}\nor\nsum by ({_by(_POLICY, _NAME)}) ({attempts}) * 0 + 1"


def _recovery_rate(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Recovery rate",
        "Share of recovery actions that succeeded, by policy and recovery system, over "
        f"{ar.RECOVERY_WINDOW}. {ar.A_RECOVERY_LOW} fires below {ar.RECOVERY_RATE_THRESHOLD:.0%} "
        f"for {ar.RECOVERY_FOR} once {ar.RECOVERY_MIN_ATTEMPTS} actions were made in the window, or when "
        f"every action of the last {ar.RECOVERY_SPARSE_WINDOW} failed while the policy is failing "
        f"(dashed: the share over {ar.RECOVERY_SPARSE_WINDOW}, from `{ar.R_RECOVERY_RATE_SPARSE}`). "
        f"1 while no action was made in the window: nothing failed to recover (a share of no action "
        f"is not 0 %, which would read as every recovery failing). {_rule_note(ar.R_RECOVERY_RATE)}",
        "percentunit",
        (
            _Query(_recovery_rate_or_one(selector), f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}}"),
            _Query(
                _recovery_rate_or_one(selector, ar.R_RECOVERY_RATE_SPARSE),
                f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}} over {ar.RECOVERY_SPARSE_WINDOW}",
                dashed=True,
            ),
        ),
        thresholds=((None, _RED), (ar.RECOVERY_RATE_THRESHOLD, _GREEN)),
        alert=ar.A_RECOVERY_LOW,
        min=0,
        max=1,
    )


_NOT_REJECTED: Final = {_OUTCOME: "!" + naming.value(sc.OUTCOME, "rejected")}
"""Executions that were not rejected: a rejection returns at once, without calling anything."""


def _latency(selector: dict[str, str], width: int = 12) -> _Panel:
    return _Panel(
        "timeseries",
        "Latency p50 / p95 / p99 by policy",
        "Duration of whole executions (all attempts, backoffs and fallbacks), by policy, "
        "rejections left out: a rejected call returns at once, so counting it would pull the "
        'percentiles down during an outage (see "Latency p95 by outcome"). Exemplars (dots) link '
        "to the trace of a slow execution when the data source has exemplars and a trace data "
        f"source configured. {_in_process_note(sc.EXECUTION_DURATION)}",
        "s",
        _quantiles(sc.EXECUTION_DURATION, _m(**selector, **_NOT_REJECTED), _POLICY, f"{{{{{_POLICY}}}}}"),
        width=width,
    )


def _latency_by_outcome(selector: dict[str, str], width: int = 12) -> _Panel:
    return _Panel(
        "timeseries",
        "Latency p95 by outcome",
        "95th percentile of the execution duration by policy and outcome, so that fast "
        "rejections (an open breaker, a full bulkhead) show apart from calls that reached the "
        f"dependency, and slow failures apart from successes. {_in_process_note(sc.EXECUTION_DURATION)}",
        "s",
        (
            _Query(
                _quantile(0.95, sc.EXECUTION_DURATION, _m(**selector), f"{_POLICY}, {_OUTCOME}"),
                f"{{{{{_POLICY}}}}} {{{{{_OUTCOME}}}}}",
                exemplar=True,
            ),
        ),
        width=width,
    )


def _timeout_ratio(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Timeouts per execution",
        f"Deadlines that expired per execution, by policy, over {ar.RATE_WINDOW}. {ar.A_TIMEOUTS} "
        f"fires above {ar.TIMEOUT_RATIO:.0%} for {ar.RATIO_ALERT_FOR}; 0 for a policy with no "
        f"expired deadline (or no execution yet). {_rule_note(ar.R_TIMEOUT_RATIO)}",
        "percentunit",
        (
            _Query(
                _or_zero_per_policy(_recorded(ar.R_TIMEOUT_RATIO, selector), selector), f"{{{{{_POLICY}}}}}"
            ),
        ),
        thresholds=_above((ar.TIMEOUT_RATIO, _RED)),
        alert=ar.A_TIMEOUTS,
        min=0,
    )


def _retry_budget_traffic(selector: dict[str, str]) -> _Panel:
    retries = naming.series(sc.RETRIES)
    exhausted = naming.series(sc.RETRY_EXHAUSTED)
    budget = {naming.label(sc.RETRY_STOP_REASON): naming.value(sc.RETRY_STOP_REASON, "budget")}
    return _Panel(
        "timeseries",
        "Retries scheduled and denied by the budget",
        "Retries scheduled per second, by policy, beside the retries its retry budget denied per "
        "second (each denial ends its execution's retries: the execution gives up with the error it "
        "holds). Denied retries start at 0 for every retry with a budget; when they climb while the "
        f"scheduled ones stay flat, the budget is capping the extra load. Each shows one series at "
        f"0 when none happened. From `{retries}` and `{exhausted}` (stop reason budget).",
        "ops",
        (
            _or_zero(_Query(_rate(retries, _m(**selector), (_POLICY,)), f"{{{{{_POLICY}}}}} scheduled")),
            _or_zero(
                _Query(_rate(exhausted, _m(**selector, **budget), (_POLICY,)), f"{{{{{_POLICY}}}}} denied")
            ),
        ),
        width=8,
        min=0,
    )


def _retry_budget_denials(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Retries denied by the budget",
        f"Retries each retry budget denied within the last {ar.RETRY_BUDGET_WINDOW}, by policy and "
        f"retry, counting each series' first. {ar.A_RETRY_BUDGET} fires when denials keep coming "
        f"(at least one within every {ar.RETRY_BUDGET_WINDOW}) for {ar.RETRY_BUDGET_FOR}; 0 for a policy "
        f"whose retries have no budget. {_rule_note(ar.R_RETRY_BUDGET_DENIALS)}",
        "short",
        (
            _Query(
                _or_zero_per_policy(_recorded(ar.R_RETRY_BUDGET_DENIALS, selector), selector),
                f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}}",
            ),
        ),
        thresholds=_above((1, _RED)),
        alert=ar.A_RETRY_BUDGET,
        width=8,
        min=0,
    )


def _rate_limited(selector: dict[str, str]) -> _Panel:
    rejections = naming.series(sc.REJECTIONS)
    limited = {naming.label(sc.REJECTION_REASON): naming.value(sc.REJECTION_REASON, "rate_limited")}
    return _Panel(
        "timeseries",
        "Calls shed by rate limiters",
        "Calls each policy's rate limiter rejected per second (RateLimitedError: no permit free, "
        "and none due within max_wait or before the call's deadline). They start at 0 for every "
        "policy with a rate limiter; a shed call never reached the dependency, and a fallback may "
        f"have answered it. From `{rejections}` (reason rate_limited).",
        "ops",
        (
            _Query(
                _rate(rejections, _m(**selector, **limited), (_POLICY, _NAME)),
                f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}}",
            ),
        ),
        width=8,
        min=0,
    )


def _rate_limited_share(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Share of executions shed",
        f"Share of each policy's executions its rate limiter shed over {ar.RATE_WINDOW}. "
        f"{ar.A_RATE_LIMITED} fires above {ar.RATE_LIMITED_RATIO:.0%} for {ar.RATE_LIMITED_FOR} (with "
        f"at least {ar.MIN_EXECUTION_RATE:g} executions/s): a caller keeps sending more than the limit "
        f"allows. 0 for a policy that shed nothing (or has no execution yet). "
        f"{_rule_note(ar.R_RATE_LIMITED_RATIO)}",
        "percentunit",
        (
            _Query(
                _or_zero_per_policy(_recorded(ar.R_RATE_LIMITED_RATIO, selector), selector),
                f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}}",
            ),
        ),
        thresholds=_above((ar.RATE_LIMITED_RATIO, _RED)),
        alert=ar.A_RATE_LIMITED,
        width=8,
        min=0,
    )


def _rate_limiter_refused_share(selector: dict[str, str]) -> _Panel:
    refused = _recorded(ar.R_RATE_LIMITER_REFUSED_RATIO, selector)
    permits = _recorded(ar.R_RATE_LIMITER_PERMITS, selector)
    return _Panel(
        "timeseries",
        "Share of permits refused",
        f"Share of the permits asked of each rate limiter (by name) that it refused over {ar.RATE_WINDOW}: "
        "shed calls and try_acquire refusals. A limiter that runs no execution of a policy (try_acquire, "
        "RateLimiter.per_key used alone) is judged by this share: "
        f"{ar.A_RATE_LIMITER_REFUSING} fires above {ar.RATE_LIMITED_RATIO:.0%} for {ar.RATE_LIMITED_FOR} "
        f"(with at least {ar.MIN_EXECUTION_RATE:g} requests/s); a policy's limiter is judged by the share "
        f"of its executions shed ({ar.A_RATE_LIMITED}). 0 for a limiter that refused nothing (or was "
        f"asked nothing). {_rule_note(ar.R_RATE_LIMITER_REFUSED_RATIO)}",
        "percentunit",
        (_Query(f"{refused}\nor on ({_by(_NAME)})\n0 * {permits}", f"{{{{{_NAME}}}}}"),),
        thresholds=_above((ar.RATE_LIMITED_RATIO, _RED)),
        alert=ar.A_RATE_LIMITER_REFUSING,
        width=12,
        min=0,
    )


def _rate_limiter_permits(selector: dict[str, str]) -> _Panel:
    permits = naming.series(sc.RL_PERMITS)
    result = naming.label(sc.RL_PERMIT_RESULT)
    return _Panel(
        "timeseries",
        "Permits by result",
        "Permit requests per second of each rate limiter, by how it answered: taken at once "
        "(immediate), taken after a wait (waited, with max_wait > 0), refused (rejected: shed calls "
        "and try_acquire refusals) or given back by a waiter that was cancelled or timed out "
        "(cancelled). The rate limiter variable selects the limiters by name, those used alone "
        "(try_acquire, RateLimiter.per_key: no execution of a policy) included, each from its creation "
        "(a keyed one from its first key); a limiter of the manager is named after its policy. Every "
        "result starts at 0. A steady share of waited permits means the limiter is full "
        f"and callers queue. From `{permits}`.",
        "ops",
        (_Query(_rate(permits, _m(**selector), (_NAME, result)), f"{{{{{_NAME}}}}} {{{{{result}}}}}"),),
        width=8,
        min=0,
    )


def _rate_limiter_keys(selector: dict[str, str]) -> _Panel:
    keys = naming.series(sc.RL_KEYS)
    limit = naming.series(sc.RL_KEY_LIMIT)
    return _Panel(
        "timeseries",
        "Rate limiter keys in use",
        "Keys each keyed rate limiter (RateLimiter.per_key, by name) holds a bucket for now, beside "
        "its max_keys (dashed); idle keys past max_keys are evicted. A count at max_keys means new "
        "keys evict idle ones (Rate limiter key evictions). One series at 0 when no keyed limiter "
        "lives; a keyed policy's keys are on the overview (Keys in use). "
        f"From `{keys}` and `{limit}`.",
        "short",
        _keys_queries(keys, limit, _NAME, selector),
        width=12,
        min=0,
    )


def _rate_limiter_key_evictions(selector: dict[str, str]) -> _Panel:
    evictions = naming.series(sc.RL_KEY_EVICTIONS)
    return _Panel(
        "timeseries",
        "Rate limiter key evictions",
        "Keys each keyed rate limiter evicted per second (idle past max_keys): an evicted key's next "
        "call starts it again with a full bucket, so it may admit up to burst more at once. A steady "
        "rate while Rate limiter keys in use sits at max_keys is churn through more keys than "
        "max_keys, which lets the churned keys past their rate; give max_keys room for the keys "
        "active within burst / rate seconds. 0 for every keyed limiter that evicted none; one series "
        f"at 0 when no keyed limiter lives. From `{evictions}`.",
        "ops",
        (_evictions_query(evictions, _NAME, selector),),
        width=12,
        min=0,
    )


def _rate_limiter_wait(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "timeseries",
        "Permit wait p50 / p95 / p99",
        "How long callers waited for the permits they took, by policy (only calls that waited are "
        "recorded: a limiter with max_wait > 0 that had no permit free). 0 when no call waited. "
        "Exemplars link to the waiting call's trace.",
        "s",
        _quantiles(sc.RL_WAIT_METRIC, _m(**selector), _POLICY, f"{{{{{_POLICY}}}}}", or_zero=True),
        width=12,
        min=0,
    )


def _retry_budget_level(selector: dict[str, str]) -> _Panel:
    available = naming.series(sc.RETRY_BUDGET_AVAILABLE)
    return _Panel(
        "timeseries",
        "Retry budget level",
        "Retries each retry budget would allow now, by policy and retry, in the instance with the "
        "fewest left (a budget is per process; one shared by several policies shows under each). At "
        "0 every retry is denied until first attempts earn more or the window slides. From "
        f"`{available}`.",
        "short",
        (
            _Query(
                f"min by ({_by(_POLICY, _NAME)}) ({available}{_m(**selector)})",
                f"{{{{{_POLICY}}}}} / {{{{{_NAME}}}}}",
            ),
        ),
        thresholds=((None, _RED), (1, _GREEN)),
        width=8,
        min=0,
    )


def _chaos_injections(selector: dict[str, str]) -> _Panel:
    injections = naming.series(sc.CHAOS_INJECTIONS)
    kind = naming.label(sc.CHAOS_KIND)
    return _Panel(
        "timeseries",
        "Chaos injections (drills)",
        "Faults, delays and results the chaos links of each policy injected per second, by kind: a "
        "drill, not an incident. Failures, retries, fallbacks and timeouts of a policy at the same time "
        "are (at least partly) the drill's: its injected faults are raised before the dependency is "
        "called, its delays hold slots and time out as a slow dependency would. Every kind starts at 0 "
        f"for every policy with a chaos link. From `{injections}`.",
        "ops",
        (_Query(_rate(injections, _m(**selector), (_POLICY, kind)), f"{{{{{_POLICY}}}}} {{{{{kind}}}}}"),),
        width=16,
        min=0,
    )


def _chaos_drills(selector: dict[str, str]) -> _Panel:
    return _Panel(
        "stat",
        "Policies under a drill",
        f"Chaos injections of each policy within the last {ar.CHAOS_DRILL_WINDOW}, every link and kind "
        f"together, counting each series' first. Above 0, {ar.A_CHAOS_DRILL} (info) fires for the "
        "policy and the shipped Alertmanager configuration mutes the alerts a drill is expected to "
        "cause on it (retry storm, fallback rate, timeouts, recovery rate, error patterns, retry budget, "
        f"bulkhead near saturation), not those of callers turned away. {_rule_note(ar.R_CHAOS_INJECTIONS)}",
        "short",
        (_Query(_recorded(ar.R_CHAOS_INJECTIONS, selector), f"{{{{{_POLICY}}}}}"),),
        thresholds=_above((1, "blue")),
        alert=ar.A_CHAOS_DRILL,
        width=8,
        min=0,
    )


def _hedges(selector: dict[str, str]) -> _Panel:
    hedges = naming.series(sc.HEDGES)
    trigger = naming.label(sc.HEDGE_TRIGGER)
    return _Panel(
        "timeseries",
        "Hedges started by trigger",
        "Hedges (attempts started beside or after the original) per second, by policy and trigger: "
        "the latest attempt ran longer than the hedge delay (delay), an attempt failed (failure), or "
        "every attempt starts at once (parallel mode: parallel). Each hedge is one more call of the "
        "dependency. Every "
        f"trigger starts at 0 for every policy with hedging. From `{hedges}`.",
        "ops",
        (_Query(_rate(hedges, _m(**selector), (_POLICY, trigger)), f"{{{{{_POLICY}}}}} {{{{{trigger}}}}}"),),
        width=8,
        min=0,
    )


def _hedge_wins(selector: dict[str, str]) -> _Panel:
    wins = naming.series(sc.HEDGE_WINS)
    attempt_type = naming.label(sc.ATTEMPT_TYPE)
    return _Panel(
        "timeseries",
        "Hedged executions won, by attempt type",
        "Executions per second in which more than one attempt ran, by the attempt that answered: the "
        "original (the hedge was wasted load) or a hedge (it cut the caller's wait). Both start at 0 for "
        f"every policy with hedging. From `{wins}`.",
        "ops",
        (
            _Query(
                _rate(wins, _m(**selector), (_POLICY, attempt_type)),
                f"{{{{{_POLICY}}}}} {{{{{attempt_type}}}}}",
            ),
        ),
        width=8,
        min=0,
    )


def _hedge_payoff(selector: dict[str, str]) -> _Panel:
    hedges = _rate(naming.series(sc.HEDGES), _m(**selector), (_POLICY,))
    won = {naming.label(sc.ATTEMPT_TYPE): naming.value(sc.ATTEMPT_TYPE, "hedge")}
    wins = _rate(naming.series(sc.HEDGE_WINS), _m(**selector, **won), (_POLICY,))
    return _Panel(
        "timeseries",
        "Hedge payoff (hedge wins per hedge)",
        "Share of the hedges that answered their execution, by policy: near 1, the hedge delay catches "
        "the slow tail and every hedge pays; near 0, the hedges are mostly load (the delay is shorter "
        "than the dependency's usual latency, or the slowness is not per call). 0 while no hedge ran. "
        f"From `{naming.series(sc.HEDGE_WINS)}` (attempt type hedge) over "
        f"`{naming.series(sc.HEDGES)}`.",
        "percentunit",
        (_Query(f"(\n  {wins}\n/\n  ({hedges} > 0)\n)\nor\n{hedges} * 0", f"{{{{{_POLICY}}}}}"),),
        width=8,
        min=0,
        max=1,
    )


def _hedges_denied(selector: dict[str, str]) -> _Panel:
    denied = naming.series(sc.HEDGES_DENIED)
    by = naming.label(sc.HEDGE_DENIED_BY)
    return _Panel(
        "timeseries",
        "Hedges denied",
        "Hedges that were due but refused, per second, by policy and by what refused them: the hedge "
        "budget (budget: the ratio of hedges to first attempts is spent, so a slow dependency is waited "
        "for rather than hedged), the execution's cap on attempts (max_attempts), a request that may be "
        "sent only once (not_replayable), the deadline passed when the hedge came due (deadline), or "
        "the policy's own breaker, bulkhead or rate limiter rejecting an attempt (rejected). Many budget "
        "denials while the dependency is slow mean the budget, not the delay, decides the tail; many "
        "deadline denials, that the hedge delay is too close to the timeout. Starts at 0 for every "
        f"policy with hedging. From `{denied}`.",
        "ops",
        (_Query(_rate(denied, _m(**selector), (_POLICY, by)), f"{{{{{_POLICY}}}}} {{{{{by}}}}}"),),
        width=8,
        min=0,
    )


def _hedge_latency(selector: dict[str, str]) -> _Panel:
    bucket = naming.series(sc.ATTEMPT_DURATION, "bucket")
    attempt_type = naming.label(sc.ATTEMPT_TYPE)
    typed = _m(**selector, **{attempt_type: "~.+"})
    return _Panel(
        "timeseries",
        "Attempt latency p95: originals and hedges",
        "95th percentile of the attempt duration of hedged executions, by policy and attempt type: "
        "a hedge that is as slow as the original it races does not cut the tail (the slowness is the "
        "dependency's, not one call's). An attempt cancelled because the other won ends early, so "
        "the loser's percentile is a floor. One series at 0 while no hedged attempt ended. From "
        f"`{bucket}` ({attempt_type} set). {_in_process_note(sc.ATTEMPT_DURATION)}",
        "s",
        (
            _quantile_or_zero(
                0.95,
                sc.ATTEMPT_DURATION,
                typed,
                f"{_POLICY}, {attempt_type}",
                f"{{{{{_POLICY}}}}} {{{{{attempt_type}}}}}",
            ),
        ),
        width=8,
        min=0,
    )


def _hedge_load(selector: dict[str, str]) -> _Panel:
    sel = _m(**selector)
    executed = _rate(naming.series(sc.EXECUTIONS), sel, (_POLICY,))

    def per_execution(series: str) -> str:
        return f"{_rate(series, sel, (_POLICY,))}\n/ on ({_by(_POLICY)})\n({executed} > 0)"

    # A retry's series appear at its first retry (their error type is not known in advance): 0 for
    # each policy that retried nothing (executions start at 0: also before its first), as on the
    # retry panels.
    retries = f"{per_execution(naming.series(sc.RETRIES))}\nor on ({_by(_POLICY)})\n0 * {executed}"
    # A hedged policy's hedges start at 0 (every trigger): 0 for it while it ran no execution in the
    # window (before its first call, once its calls stop), and no line for a policy without hedging.
    hedged = _rate(naming.series(sc.HEDGES), sel, (_POLICY,))
    hedges = f"{per_execution(naming.series(sc.HEDGES))}\nor on ({_by(_POLICY)})\n0 * {hedged}"
    return _Panel(
        "timeseries",
        "Extra load: hedges and retries per execution",
        "Extra calls of the dependency per execution, by policy: hedges (policies with hedging, 0 for "
        "one that hedged nothing) beside retries (0 for a policy that retried nothing). Hedges and "
        "retries of a policy draw on one retry budget, so that together they stay near its ratio when "
        "the budget is the limit. From "
        f"`{naming.series(sc.HEDGES)}` and `{naming.series(sc.RETRIES)}` over "
        f"`{naming.series(sc.EXECUTIONS)}`.",
        "short",
        (
            _Query(hedges, f"{{{{{_POLICY}}}}} hedges"),
            _Query(retries, f"{{{{{_POLICY}}}}} retries"),
        ),
        width=8,
        min=0,
    )


# --- the dashboards -----------------------------------------------------------------------


def _top_keys(selector: dict[str, str]) -> _Panel:
    rejections = naming.series(sc.REJECTIONS)
    key = naming.label(sc.KEY)
    top = f"topk(10, {_rate(rejections, _m(**selector, **{key: '~.+'}), (_POLICY, key))})"
    return _Panel(
        "timeseries",
        "Top keys by rejections",
        "The 10 keys of keyed policies (manager.policy(...).for_key(key)) whose calls were rejected "
        "most per second (breaker open, bulkhead full, rate limited), by policy and key. Only a policy "
        "created with key_attribute_limit > 0 puts the key on its metrics; the keys past that limit "
        f'share the series {key}="{sc.KEY_OVERFLOW}". One series at 0 when no key was rejected. '
        f"From `{rejections}`.",
        "ops",
        (_or_zero(_Query(top, f"{{{{{_POLICY}}}}} / {{{{{key}}}}}")),),
        width=8,
        min=0,
    )


def _keys_queries(keys: str, limit: str, label: str, selector: dict[str, str]) -> tuple[_Query, ...]:
    """The keys each keeper of keys holds by ``label``, beside its max_keys (dashed).

    Both are one series at 0 when none is keyed (a panel shows 0, not "No data"). A keeper of
    keys is a keyed policy or a keyed rate limiter.
    """
    return (
        _or_zero(_Query(f"sum by ({_by(label)}) ({keys}{_m(**selector)})", f"{{{{{label}}}}}")),
        _or_zero(
            _Query(
                f"sum by ({_by(label)}) ({limit}{_m(**selector)})", f"{{{{{label}}}}} max_keys", dashed=True
            )
        ),
    )


def _evictions_query(evictions: str, label: str, selector: dict[str, str]) -> _Query:
    """The keys a keeper of keys evicted per second, by ``label``, or one series at 0 when none is keyed."""
    return _or_zero(_Query(_rate(evictions, _m(**selector), (label,)), f"{{{{{label}}}}}"))


def _keys_in_use(selector: dict[str, str]) -> _Panel:
    keys = naming.series(sc.POLICY_KEYS)
    limit = naming.series(sc.POLICY_KEY_LIMIT)
    return _Panel(
        "timeseries",
        "Keys in use",
        "Keys each keyed policy holds state for now (a breaker, bulkhead and rate limiter per key; "
        "idle keys past max_keys or idle_ttl are evicted), beside its max_keys (dashed). A count "
        "that keeps growing means keys without a bound (a request id instead of a tenant); a count "
        "at max_keys means new keys evict idle ones (Key evictions). One series at 0 when no policy "
        f"is keyed. A keyed rate limiter used alone (RateLimiter.per_key) is drawn on the retries and "
        f"timeouts dashboard (Rate limiter keys in use). From `{keys}` and `{limit}`.",
        "short",
        _keys_queries(keys, limit, _POLICY, selector),
        width=8,
        min=0,
    )


def _key_evictions(selector: dict[str, str]) -> _Panel:
    evictions = naming.series(sc.POLICY_KEY_EVICTIONS)
    return _Panel(
        "timeseries",
        "Key evictions",
        "Keys each keyed policy evicted per second (idle past max_keys, or unused for idle_ttl): an "
        "evicted key's next call starts it again with a CLOSED breaker and a full rate-limiter "
        "bucket. A steady rate while Keys in use sits at max_keys is churn through more keys than "
        "max_keys: a key that spent its burst, or a failing host's count towards opening, is then "
        "forgotten; give max_keys room for the keys active within a refill time. 0 for every keyed "
        f"policy that evicted none; one series at 0 when no policy is keyed. From `{evictions}`.",
        "ops",
        (_evictions_query(evictions, _POLICY, selector),),
        width=8,
        min=0,
    )


def _reloads(selector: dict[str, str]) -> _Panel:
    reloads = naming.series(sc.RELOAD)
    return _Panel(
        "timeseries",
        "Refused reloads",
        "New configurations each named policy refused in the last "
        f"{ar.RELOAD_FAILED_WINDOW} (a configuration file's reload, reconfigure), by error type: the "
        f"policy kept its previous configuration. {ar.A_RELOAD_FAILED} fires above 0; one series at 0 "
        f"when none was refused. From `{reloads}`. {_rule_note(ar.R_RELOAD_FAILURES)}",
        "short",
        (
            _or_zero(
                _Query(
                    _recorded(ar.R_RELOAD_FAILURES, selector),
                    f"{{{{{_POLICY}}}}} {{{{{_ERROR_TYPE}}}}}",
                )
            ),
        ),
        thresholds=_above((1, _ORANGE)),
        alert=ar.A_RELOAD_FAILED,
        width=12,
        min=0,
    )


def _stale_files(selector: dict[str, str]) -> _Panel:
    stale = naming.series(sc.CONFIG_STALE)
    file = naming.label(sc.CONFIG_FILE)
    return _Panel(
        "timeseries",
        "Configuration files refused",
        "Instances whose watch (manager.watch) refused the last version of a configuration file and "
        "applied none since, by file: their policies run an older configuration than the file on "
        "disk. The refusal is counted once (Refused reloads); this stays up for as long as the file "
        f"is left so. {ar.A_CONFIG_STALE} fires when one stays so for {ar.CONFIG_STALE_FOR}; one "
        f"series at 0 when none is refused. From `{stale}`. {_rule_note(ar.R_CONFIG_STALE)}",
        "short",
        (_or_zero(_Query(_recorded(ar.R_CONFIG_STALE, {"job": selector["job"]}), f"{{{{{file}}}}}")),),
        thresholds=_above((1, _ORANGE)),
        alert=ar.A_CONFIG_STALE,
        width=12,
        min=0,
    )


def _store_health(selector: dict[str, str]) -> _Panel:
    degraded = naming.series(sc.STORE_DEGRADED)
    return _Panel(
        "timeseries",
        "Shared store unreachable",
        "Instances whose shared store (Redis, by namespace) is unreachable or slower than its timeout "
        "now: their shared breakers and rate limits run on local state. "
        f"{ar.A_STORE_DEGRADED} fires when one stays so for {ar.STORE_DEGRADED_FOR}; one series at 0 "
        f"when no service shares state. From `{degraded}`. {_rule_note(ar.R_STORE_DEGRADED)}",
        "short",
        (_or_zero(_Query(_recorded(ar.R_STORE_DEGRADED, {"job": selector["job"]}), f"{{{{{_NAME}}}}}")),),
        thresholds=_above((1, _ORANGE)),
        alert=ar.A_STORE_DEGRADED,
        width=12,
        min=0,
    )


def _store_flapping(selector: dict[str, str]) -> _Panel:
    outages = naming.series(sc.STORE_OUTAGES)
    return _Panel(
        "timeseries",
        "Store outages in the flapping window",
        f"The most times one instance lost each shared store (Redis, by namespace) within "
        f"{ar.STORE_FLAPPING_WINDOW}, each outage counted once, the first of a new series included. "
        f"{ar.A_STORE_FLAPPING} fires at {ar.STORE_FLAPPING_OUTAGES} for {ar.STORE_FLAPPING_FOR}: a store "
        f"that keeps dropping out, each time too briefly for {ar.A_STORE_DEGRADED}, puts its shared "
        "breakers and rate limits on local state again and again. One series at 0 when no service shares "
        f"state. From `{outages}`. {_rule_note(ar.R_STORE_OUTAGES)}",
        "short",
        (_or_zero(_Query(_recorded(ar.R_STORE_OUTAGES, {"job": selector["job"]}), f"{{{{{_NAME}}}}}")),),
        thresholds=_above((ar.STORE_FLAPPING_OUTAGES, _RED)),
        alert=ar.A_STORE_FLAPPING,
        width=12,
        min=0,
    )


def _store_failures(selector: dict[str, str]) -> _Panel:
    errors = naming.series(sc.STORE_ERRORS)
    outages = naming.series(sc.STORE_OUTAGES)
    return _Panel(
        "timeseries",
        "Shared store failures",
        "For each shared store (Redis, by namespace), in each interval: the operations that failed or "
        "timed out (the calls went on, on local state) and the times it became unreachable (each "
        "outage counted once, with a log record). Failed operations while the store answers are "
        "operations the server refused (such as a `WRONGTYPE` key, written by something else). One "
        f"series at 0 when no service shares state. From `{errors}` and `{outages}`.",
        "short",
        (
            _or_zero(
                _Query(
                    _increase(errors, _m(job=selector["job"]), (_NAME,)), f"failed operations {{{{{_NAME}}}}}"
                )
            ),
            _or_zero(
                _Query(_increase(outages, _m(job=selector["job"]), (_NAME,)), f"outages {{{{{_NAME}}}}}")
            ),
        ),
        thresholds=_above((1, _ORANGE)),
        width=12,
        min=0,
    )


def _store_fallback_permits(selector: dict[str, str]) -> _Panel:
    permits = naming.series(sc.STORE_FALLBACK_PERMITS)
    return _Panel(
        "timeseries",
        "Permits without the shared store",
        "For each shared store (Redis, by namespace), in each interval: the calls its shared rate "
        'limiters admitted without asking it while it was unreachable (`store_fallback="open"`, the '
        "default): permits the cluster's budget did not count, so the cluster may have exceeded its "
        f"limit by this many. The impact of {ar.A_STORE_DEGRADED} on rate limits; one series at 0 when "
        f"no service shares state. From `{permits}`.",
        "short",
        (_or_zero(_Query(_increase(permits, _m(job=selector["job"]), (_NAME,)), f"{{{{{_NAME}}}}}")),),
        thresholds=_above((1, _ORANGE)),
        width=12,
        min=0,
    )


def _breakers_shared(selector: dict[str, str]) -> _Panel:
    shared = naming.series(sc.CB_SHARED)
    operations = naming.series(sc.STORE_OPERATIONS)
    return _Panel(
        "timeseries",
        "Cluster vs local state",
        "For each breaker with a shared store: 1 while its state is the cluster's, 0 while its "
        "instance cannot reach the store and it counts and probes on its own (the lowest of its "
        "instances); beside it, the store's operations per second (its cost). "
        f"From `{shared}` and `{operations}`.",
        "short",
        (
            _or_zero(_Query(f"min by ({_by(_NAME)}) ({shared}{_m(**selector)})", f"{{{{{_NAME}}}}}")),
            _or_zero(
                _Query(
                    _rate(operations, _m(job=selector["job"]), (_NAME,)),
                    f"operations/s {{{{{_NAME}}}}}",
                )
            ),
        ),
        width=12,
        min=0,
    )


def _overview() -> _Dashboard:
    executions = naming.series(sc.EXECUTIONS)
    alerts = "|".join(ar.ALERT_NAMES)
    firing = (
        f"sum by (alertname, severity, {_JOB}, {_POLICY}, {_NAME}) "
        f'({naming.ALERTS_SERIES}{{alertstate="firing", alertname=~"{alerts}", {_JOB}=~"$job"}})'
    )
    return _Dashboard(
        "otel-resilience-overview.json",
        "otel-resilience-overview",
        "Resilience overview",
        "Executions, latency and every pattern of otel_resilience at a glance.",
        ("job", "policy"),
        (
            (
                "Executions",
                (
                    _Panel(
                        "timeseries",
                        "Execution rate by policy and outcome",
                        "Executions that ended per second, by policy and outcome (success, recovered, "
                        f"fallback, failure, rejected, timeout, cancelled). From `{executions}`.",
                        "ops",
                        (
                            _Query(
                                _rate(executions, _m(**_POLICY_SEL), (_POLICY, _OUTCOME)),
                                f"{{{{{_POLICY}}}}} {{{{{_OUTCOME}}}}}",
                            ),
                        ),
                    ),
                    _Panel(
                        "timeseries",
                        "Success rate by policy",
                        "Share of executions the protected function answered (first attempt or "
                        f"after retries) over {ar.RATE_WINDOW}. {_rule_note(ar.R_SUCCESS_RATIO)}",
                        "percentunit",
                        (_Query(_recorded(ar.R_SUCCESS_RATIO, _POLICY_SEL), f"{{{{{_POLICY}}}}}"),),
                        thresholds=((None, _RED), (0.95, _ORANGE), (0.99, _GREEN)),
                        min=0,
                        max=1,
                    ),
                    _latency(_POLICY_SEL),
                    _latency_by_outcome(_POLICY_SEL),
                ),
            ),
            (
                "Patterns",
                (
                    _breaker_timeline(_JOB_SEL),
                    _bulkhead_saturation(_JOB_SEL),
                    _retry_ratio(_POLICY_SEL),
                    _fallback_ratio(_POLICY_SEL),
                    _recovery_rate(_POLICY_SEL),
                    _Panel(
                        "table",
                        "Firing alerts",
                        "otel_resilience alerts firing now (Prometheus' ALERTS series), with their "
                        "severity, service, policy or instance name; one row without labels, of "
                        "value 0, when none fires. Each has a runbook in docs/runbooks/. ALERTS "
                        f"exists only in the Prometheus that evaluates the rules of `{_RULES_PATH}`: "
                        "point this data source at that one.",
                        "short",
                        (_or_zero(_Query(firing, "", instant=True, table=True)),),
                    ),
                ),
            ),
            ("Drills (chaos)", (_chaos_injections(_POLICY_SEL), _chaos_drills(_POLICY_SEL))),
            (
                "Keyed and reloaded policies",
                (
                    _top_keys(_POLICY_SEL),
                    _keys_in_use(_POLICY_SEL),
                    _key_evictions(_POLICY_SEL),
                    _reloads(_POLICY_SEL),
                    _stale_files(_POLICY_SEL),
                ),
            ),
        ),
    )


def _circuit_breakers() -> _Dashboard:
    sel = {"job": "~$job", "name": "~$breaker"}
    return _Dashboard(
        "otel-resilience-circuit-breakers.json",
        "otel-resilience-circuit-breakers",
        "Resilience: circuit breakers",
        "States, sliding-window rates, transitions, trips and calls of every circuit breaker.",
        ("job", "breaker"),
        (
            ("State", (_breaker_timeline(sel, width=16), _breakers_open(sel))),
            ("Sliding window", (_breaker_rates(sel), _breaker_would_trips(sel))),
            ("Transitions", (_breaker_trips(sel), _breaker_transitions(sel))),
            ("Calls", (_breaker_calls(sel), _breaker_rejections(sel))),
            (
                "Shared state (Redis)",
                (
                    _breakers_shared(sel),
                    _store_health(sel),
                    _store_failures(sel),
                    _store_fallback_permits(sel),
                    _store_flapping(sel),
                ),
            ),
        ),
    )


def _retry_panels() -> tuple[_Panel, ...]:
    retries = naming.series(sc.RETRIES)
    exhausted = naming.series(sc.RETRY_EXHAUSTED)
    stop = naming.label(sc.RETRY_STOP_REASON)
    sel = _m(**_POLICY_SEL)
    return (
        _retry_ratio(_POLICY_SEL),
        _Panel(
            "timeseries",
            "Retries per second by policy",
            f"Retries scheduled per second over {ar.RATE_WINDOW}; 0 for a policy that retried nothing. "
            f"{_rule_note(ar.R_RETRIES)}",
            "ops",
            (
                _Query(
                    _or_zero_per_policy(_recorded(ar.R_RETRIES, _POLICY_SEL), _POLICY_SEL),
                    f"{{{{{_POLICY}}}}}",
                ),
            ),
        ),
        _Panel(
            "timeseries",
            "Retries by error type",
            "Retries per second by policy and the error that caused them; one series at 0 when none "
            f"happened. From `{retries}`.",
            "ops",
            (
                _or_zero(
                    _Query(
                        _rate(retries, sel, (_POLICY, _ERROR_TYPE)),
                        f"{{{{{_POLICY}}}}} {{{{{_ERROR_TYPE}}}}}",
                    )
                ),
            ),
        ),
        _Panel(
            "timeseries",
            "Retries exhausted by stop reason",
            "Retries that gave up per second, by why they stopped "
            f"({', '.join(reason.replace('_', ' ') for reason in sc.RETRY_STOP_REASONS)}): "
            "one per run of a retry, so a recovery re-run that gives up "
            "again counts again; the last error was re-raised (or the last result returned, a "
            f"failure). One series at 0 when none happened. From `{exhausted}`.",
            "ops",
            (_or_zero(_Query(_rate(exhausted, sel, (_POLICY, stop)), f"{{{{{_POLICY}}}}} {{{{{stop}}}}}")),),
        ),
        _Panel(
            "timeseries",
            "Backoff delay p50 / p95 / p99",
            "Backoff delays before retries, by policy. Exemplars link to the retried trace. One series "
            "at 0 when no retry was scheduled.",
            "s",
            _quantiles(sc.RETRY_DELAY_METRIC, sel, _POLICY, f"{{{{{_POLICY}}}}}", or_zero=True),
            width=24,
        ),
    )


def _timeout_panels() -> tuple[_Panel, ...]:
    timeouts = naming.series(sc.TIMEOUTS)
    scope = naming.label(sc.TIMEOUT_SCOPE)
    return (
        _timeout_ratio(_POLICY_SEL),
        _Panel(
            "timeseries",
            "Timeouts by scope",
            "Deadlines that expired per second, by policy and scope (total execution, or one attempt). "
            f"From `{timeouts}`.",
            "ops",
            (
                _Query(
                    _rate(timeouts, _m(**_POLICY_SEL), (_POLICY, scope)), f"{{{{{_POLICY}}}}} {{{{{scope}}}}}"
                ),
            ),
        ),
        _latency(_POLICY_SEL),
        _latency_by_outcome(_POLICY_SEL),
    )


def _retries_timeouts() -> _Dashboard:
    return _Dashboard(
        "otel-resilience-retries-timeouts.json",
        "otel-resilience-retries-timeouts",
        "Resilience: retries and timeouts",
        "Retries, backoffs, exhausted retries, retry budgets, rate limits, hedges and expired deadlines, by "
        "policy.",
        ("job", "policy", "rate_limiter"),
        (
            ("Retries", _retry_panels()),
            (
                "Retry budgets",
                (
                    _retry_budget_traffic(_POLICY_SEL),
                    _retry_budget_denials(_POLICY_SEL),
                    _retry_budget_level(_POLICY_SEL),
                ),
            ),
            (
                "Rate limits",
                (
                    _rate_limited_share(_POLICY_SEL),
                    _rate_limited(_POLICY_SEL),
                    _rate_limiter_permits(_LIMITER_SEL),
                    _rate_limiter_wait(_POLICY_SEL),
                    _rate_limiter_refused_share(_LIMITER_SEL),
                    _rate_limiter_keys(_LIMITER_SEL),
                    _rate_limiter_key_evictions(_LIMITER_SEL),
                ),
            ),
            (
                "Hedging",
                (
                    _hedges(_POLICY_SEL),
                    _hedge_wins(_POLICY_SEL),
                    _hedge_payoff(_POLICY_SEL),
                    _hedges_denied(_POLICY_SEL),
                    _hedge_load(_POLICY_SEL),
                    _hedge_latency(_POLICY_SEL),
                ),
            ),
            ("Timeouts", _timeout_panels()),
        ),
    )


def _bulkheads() -> _Dashboard:
    sel = {"job": "~$job", "name": "~$bulkhead"}
    active = naming.series(sc.BULKHEAD_ACTIVE)
    queued = naming.series(sc.BULKHEAD_QUEUED)
    limit = naming.series(sc.BULKHEAD_CONCURRENCY_LIMIT)
    queue_limit = naming.series(sc.BULKHEAD_QUEUE_LIMIT)
    rejections = naming.series(sc.REJECTIONS)
    reason = naming.label(sc.REJECTION_REASON)
    full = naming.one_of(sc.REJECTION_REASON, *sc.REJECTION_REASONS_BY_PATTERN["bulkhead"])
    instance = naming.INSTANCE_LABEL
    return _Dashboard(
        "otel-resilience-bulkheads.json",
        "otel-resilience-bulkheads",
        "Resilience: bulkheads",
        "Concurrency, queues, saturation and rejections of every bulkhead.",
        ("job", "bulkhead"),
        (
            (
                "Saturation",
                (
                    _bulkhead_saturation(sel),
                    _Panel(
                        "timeseries",
                        "Queue saturation",
                        "Share of each bulkhead's wait queue in use (the most loaded instance; for a "
                        f"keyed policy, its most saturated key, from "
                        f"`{naming.series(sc.BULKHEAD_QUEUE_UTILIZATION)}`). "
                        f"{_rule_note(ar.R_BULKHEAD_QUEUE_SATURATION)}",
                        "percentunit",
                        (_Query(_recorded(ar.R_BULKHEAD_QUEUE_SATURATION, sel), f"{{{{{_NAME}}}}}"),),
                        thresholds=_above(
                            (ar.BULKHEAD_NEAR_SATURATION, _ORANGE), (ar.BULKHEAD_FULL_SATURATION, _RED)
                        ),
                        min=0,
                        max=1,
                    ),
                ),
            ),
            (
                "Slots",
                (
                    _Panel(
                        "timeseries",
                        "Running calls and limit",
                        f"Calls holding a slot, and the concurrency limit, per instance (a keyed policy's "
                        f"summed over its keys: see Bulkhead saturation for its most saturated key). From "
                        f"`{active}` and `{limit}`.",
                        "short",
                        (
                            _Query(f"{active}{_m(**sel)}", f"{{{{{_NAME}}}}} {{{{{instance}}}}} running"),
                            _Query(f"{limit}{_m(**sel)}", f"{{{{{_NAME}}}}} {{{{{instance}}}}} limit"),
                        ),
                        min=0,
                    ),
                    _Panel(
                        "timeseries",
                        "Waiting calls and queue limit",
                        f"Calls waiting for a slot, and the queue limit, per instance (a keyed policy's "
                        f"summed over its keys: see Queue saturation for its most saturated key). From "
                        f"`{queued}` and `{queue_limit}`.",
                        "short",
                        (
                            _Query(f"{queued}{_m(**sel)}", f"{{{{{_NAME}}}}} {{{{{instance}}}}} waiting"),
                            _Query(
                                f"{queue_limit}{_m(**sel)}", f"{{{{{_NAME}}}}} {{{{{instance}}}}} queue limit"
                            ),
                        ),
                        min=0,
                    ),
                    _Panel(
                        "timeseries",
                        "Rejections by reason",
                        "Calls each bulkhead rejected per second: full (every slot busy and the queue "
                        f"full) or queue timeout. {ar.A_BULKHEAD_FULL} fires on their share of the "
                        f"policy's executions (see Share of executions rejected). One series at 0 when "
                        f"no bulkhead reports any yet (a bulkhead used alone starts its series at its "
                        f"first call). From `{rejections}`.",
                        "ops",
                        (
                            _or_zero(
                                _Query(
                                    _rate(rejections, _m(**sel, **{reason: "~" + full}), (_NAME, reason)),
                                    f"{{{{{_NAME}}}}} {{{{{reason}}}}}",
                                )
                            ),
                        ),
                        thresholds=_above((0.000001, _RED)),
                    ),
                    _bulkhead_rejection_share(sel),
                ),
            ),
        ),
    )


def _recovery() -> _Dashboard:
    sel = {"job": "~$job", "policy": "~$policy", "name": "~$recovery"}
    attempts = naming.series(sc.RECOVERY_ATTEMPTS)
    fallbacks = naming.series(sc.FALLBACK_EXECUTIONS)
    alerts = naming.series(sc.ALERTS)
    telemetry_errors = naming.series(sc.TELEMETRY_ERRORS)
    count = naming.series(sc.EXECUTION_DURATION, "count")
    strategy = naming.label(sc.RECOVERY_STRATEGY)
    result = naming.label(sc.RECOVERY_RESULT)
    operation = naming.label(sc.OPERATION)
    fb_strategy = naming.label(sc.FALLBACK_STRATEGY)
    fb_result = naming.label(sc.FALLBACK_RESULT)
    kind = naming.label(sc.ALERT_KIND)
    severity = naming.label(sc.ALERT_SEVERITY)
    failure = "~" + naming.one_of(sc.OUTCOME, *sorted(sc.ERROR_OUTCOMES))
    failures = _histogram_rate(sc.EXECUTION_DURATION, "count", _m(**_POLICY_SEL, **{_OUTCOME: failure}))
    # An execution a fallback answered ends "fallback", without error.type: the fallback's counter
    # names the error it replaced (those whose fallback failed too end "failure", counted above).
    answered = _m(**_POLICY_SEL, **{fb_result: naming.value(sc.FALLBACK_RESULT, "success")})
    failures += f" or rate({fallbacks}{answered}[$__rate_interval])"
    return _Dashboard(
        "otel-resilience-recovery.json",
        "otel-resilience-recovery",
        "Resilience: recovery and error patterns",
        "Recovery actions and their success, repeated error patterns, failures by error type, "
        "fallbacks and in-process alerts.",
        ("job", "policy", "recovery"),
        (
            (
                "Recovery",
                (
                    _recovery_rate(sel),
                    _Panel(
                        "timeseries",
                        "Recovery actions by strategy and result",
                        "Recovery actions of the selected policies per second, by recovery system, "
                        "strategy (retry, restart, fallback, isolate, escalate) and result. From "
                        f"`{attempts}`.",
                        "ops",
                        (
                            _Query(
                                _rate(attempts, _m(**sel), (_NAME, strategy, result)),
                                f"{{{{{_NAME}}}}} {{{{{strategy}}}}} {{{{{result}}}}}",
                            ),
                        ),
                    ),
                ),
            ),
            (
                "Errors",
                (
                    _Panel(
                        "timeseries",
                        "Error patterns detected",
                        "Repeated error patterns (the same error type in the same operation; two "
                        "modules' functions of one name are two, each followed by its module) detected "
                        f"within the last {ar.ERROR_PATTERN_WINDOW}, counting each pattern's first "
                        f"detection; one series at 0 when there is none. {ar.A_ERROR_PATTERN} fires above 0. "
                        f"{_rule_note(ar.R_ERROR_PATTERNS)}",
                        "short",
                        (
                            _or_zero(
                                _Query(
                                    _recorded(ar.R_ERROR_PATTERNS, sel),
                                    f"{{{{{_ERROR_TYPE}}}}} in {{{{{operation}}}}} ({{{{{_NAME}}}}}) "
                                    f"{{{{{naming.label(sc.OPERATION_MODULE)}}}}}",
                                )
                            ),
                        ),
                        thresholds=_above((1, _RED)),
                        alert=ar.A_ERROR_PATTERN,
                        min=0,
                    ),
                    _Panel(
                        "timeseries",
                        "Failures by error type",
                        "Executions that ended in an error per second (outcome failure, rejected or "
                        "timeout) or that a fallback answered, by policy and exception class (`error.type`: "
                        "for an answered one, the error the fallback replaced); one series at 0 when none "
                        f"failed. From `{count}` and `{fallbacks}` (result success). "
                        f"{_in_process_note(sc.EXECUTION_DURATION, 'count', exemplars=False)}",
                        "ops",
                        (
                            _or_zero(
                                _Query(
                                    f"sum by ({_by(_POLICY, _ERROR_TYPE)}) ({failures})",
                                    f"{{{{{_POLICY}}}}} {{{{{_ERROR_TYPE}}}}}",
                                )
                            ),
                        ),
                    ),
                    _fallback_ratio(_POLICY_SEL),
                    _Panel(
                        "timeseries",
                        "Fallbacks by strategy and result",
                        "Fallbacks that ran per second, by policy, strategy and whether they answered; "
                        f"one series at 0 when none ran. From `{fallbacks}`.",
                        "ops",
                        (
                            _or_zero(
                                _Query(
                                    _rate(fallbacks, _m(**_POLICY_SEL), (_POLICY, fb_strategy, fb_result)),
                                    f"{{{{{_POLICY}}}}} {{{{{fb_strategy}}}}} {{{{{fb_result}}}}}",
                                )
                            ),
                        ),
                    ),
                ),
            ),
            (
                "In-process alerts",
                (
                    _Panel(
                        "timeseries",
                        "In-process alerts raised",
                        "Alerts the library raised in the process (breaker opened, bulkhead full, low "
                        f"recovery rate, error pattern, escalation), by kind and severity; one series at 0 "
                        f"when none was raised. From `{alerts}`.",
                        "short",
                        (
                            _or_zero(
                                _Query(
                                    _increase(alerts, _m(**_JOB_SEL), (kind, severity)),
                                    f"{{{{{kind}}}}} ({{{{{severity}}}}})",
                                )
                            ),
                        ),
                        min=0,
                    ),
                    _Panel(
                        "timeseries",
                        "Telemetry errors",
                        "Exceptions raised inside telemetry code (swallowed, so the application is "
                        f"never affected): should stay at 0. From `{telemetry_errors}`.",
                        "short",
                        (_Query(_increase(telemetry_errors, _m(**_JOB_SEL), ()), "telemetry errors"),),
                        thresholds=_above((1, _RED)),
                        min=0,
                    ),
                    _Panel(
                        "timeseries",
                        "Telemetry past the SDK's cardinality limit",
                        "How much each series of policies, breakers or keys grew within the last "
                        f"{ar.TELEMETRY_OVERFLOW_WINDOW} in the OpenTelemetry SDK's overflow series "
                        '(otel_metric_overflow="true", with no other label): the instrument has more '
                        "attribute sets than the metric reader's cardinality limit (2000 by default), "
                        "so what the newest ones did is counted under none of them, where no other panel "
                        f"shows it. {ar.A_TELEMETRY_OVERFLOW} fires above 0; one series at 0 when nothing "
                        f"overflowed. {_rule_note(ar.R_TELEMETRY_OVERFLOW)}",
                        "short",
                        (
                            _or_zero(
                                _Query(_recorded(ar.R_TELEMETRY_OVERFLOW, _JOB_SEL), "{{metric}}"),
                            ),
                        ),
                        thresholds=_above((1, _RED)),
                        alert=ar.A_TELEMETRY_OVERFLOW,
                        min=0,
                    ),
                ),
            ),
        ),
    )


def _dashboards() -> tuple[_Dashboard, ...]:
    return (_overview(), _circuit_breakers(), _retries_timeouts(), _bulkheads(), _recovery())


# --- building with the SDK ------------------------------------------------------------------

_VARIABLES: Final = {
    "job": ("Service (job)", _SERVICE_SERIES, _JOB, ""),
    "policy": ("Policy", naming.series(sc.EXECUTIONS), _POLICY, f'{_JOB}=~"$job"'),
    "breaker": ("Circuit breaker", naming.series(sc.CB_STATE_METRIC), _NAME, f'{_JOB}=~"$job"'),
    "bulkhead": ("Bulkhead", naming.series(sc.BULKHEAD_CONCURRENCY_LIMIT), _NAME, f'{_JOB}=~"$job"'),
    # Every limiter's permits, from its creation (a keyed one's from its first key): those used
    # alone (try_acquire, RateLimiter.per_key) run no execution of a policy.
    "rate_limiter": ("Rate limiter", naming.series(sc.RL_PERMITS), _NAME, f'{_JOB}=~"$job"'),
    "recovery": ("Recovery system", naming.series(sc.RECOVERY_ATTEMPTS), _NAME, f'{_JOB}=~"$job"'),
}


def _build(spec: _Dashboard) -> Any:
    """Build one dashboard with the SDK and return its model."""
    from grafana_foundation_sdk.builders import dashboard as db  # noqa: PLC0415 - optional dependency
    from grafana_foundation_sdk.models import dashboard as model  # noqa: PLC0415

    datasource = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
    builder = (
        db.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags([DASHBOARD_TAG])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-3h", "now")
        .refresh("1m")
        .timezone("browser")
        .link(
            db.DashboardLink("Resilience dashboards")
            .type(model.DashboardLinkType(model.DashboardLinkType.DASHBOARDS))
            .tags([DASHBOARD_TAG])
            .as_dropdown(as_dropdown=True)
            .include_vars(include_vars=True)
            .keep_time(keep_time=True)
        )
        .annotations(_annotation_queries(datasource))
        .with_variable(
            db.DatasourceVariable(DATASOURCE_VARIABLE)
            .label("Data source")
            .type("prometheus")
            .description("The Prometheus data source that holds the otel_resilience metrics.")
        )
    )
    for name in spec.variables:
        builder = builder.with_variable(_query_variable(name, datasource))
    panel_id = 0
    for row_title, panels in spec.rows:
        panel_id += 1
        builder = builder.with_row(db.Row(row_title).id(panel_id))
        for panel in panels:
            panel_id += 1
            builder = builder.with_panel(_build_panel(panel, panel_id, datasource))
    dashboard = builder.build()
    dashboard.schema_version = GRAFANA_SCHEMA_VERSION
    return dashboard


def _annotation_queries(datasource: Any) -> list[Any]:
    """The annotations of :data:`_ANNOTATIONS`, enabled, on the data source variable."""
    from grafana_foundation_sdk.builders import dashboard as db  # noqa: PLC0415 - optional dependency

    return [
        db.AnnotationQuery()
        .name(name)
        .datasource(datasource)
        .enable(enable=True)
        .icon_color(color)
        .expr(_transitions_annotation(*transition))
        for name, color, transition, _ in _ANNOTATIONS
    ]


def _query_variable(name: str, datasource: Any) -> Any:
    """The multi-value ``label_values`` variable ``name`` of :data:`_VARIABLES`, "All" by default."""
    from grafana_foundation_sdk.builders import dashboard as db  # noqa: PLC0415 - optional dependency
    from grafana_foundation_sdk.models import dashboard as model  # noqa: PLC0415

    label, series, target, matcher = _VARIABLES[name]
    selector = f"{series}{{{matcher}}}" if matcher else series
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(datasource)
        .query(f"label_values({selector}, {target})")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(multi=True)
        .include_all(include_all=True)
        .all_value(".*")
        .current(model.VariableOption(text="All", value="$__all"))
    )


def _build_panel(panel: _Panel, panel_id: int, datasource: Any) -> Any:
    from grafana_foundation_sdk.builders import dashboard as db  # noqa: PLC0415 - optional dependency
    from grafana_foundation_sdk.models import dashboard as model  # noqa: PLC0415

    builder = (
        _kind_builder(panel)
        .id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .datasource(datasource)
        .unit(panel.unit)
        .span(panel.width)
        .height(panel.height)
        .thresholds(
            db.ThresholdsConfig()
            .mode(model.ThresholdsMode(model.ThresholdsMode.ABSOLUTE))
            .steps([model.Threshold(value=value, color=color) for value, color in panel.thresholds])
        )
    )
    color_mode = (
        model.FieldColorModeId.PALETTE_CLASSIC
        if panel.kind not in {"stat", "state"}
        else model.FieldColorModeId.THRESHOLDS
    )
    builder = builder.color_scheme(db.FieldColor().mode(model.FieldColorModeId(color_mode)))
    if panel.min is not None:
        builder = builder.min(panel.min)
    if panel.max is not None:
        builder = builder.max(panel.max)
    if panel.alert is not None:
        builder = builder.links(
            [
                db.DashboardLink(f"Runbook: {panel.alert}")
                .url(f"{ar.RUNBOOK_BASE_URL}/{panel.alert}.md")
                .target_blank(target_blank=True)
            ]
        )
    return _with_targets(builder, panel, datasource)


def _kind_builder(panel: _Panel) -> Any:
    """The SDK builder of the panel's kind, with the options of that kind."""
    from grafana_foundation_sdk.builders import common, stat, statetimeline, table, timeseries  # noqa: PLC0415
    from grafana_foundation_sdk.models import common as common_model  # noqa: PLC0415
    from grafana_foundation_sdk.models import dashboard as model  # noqa: PLC0415

    if panel.kind == "timeseries":
        return _timeseries_builder(timeseries.Panel(), panel)
    if panel.kind == "stat":
        return (
            stat.Panel()
            .color_mode(common_model.BigValueColorMode(common_model.BigValueColorMode.BACKGROUND))
            .graph_mode(common_model.BigValueGraphMode(common_model.BigValueGraphMode.AREA))
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    if panel.kind == "state":
        mapping = {
            str(level): model.ValueMappingResult(text=state, color=_STATE_COLORS[state], index=level)
            for state, level in _STATE_LEVELS.items()
        }
        return (
            statetimeline.Panel()
            .show_value(common_model.VisibilityMode(common_model.VisibilityMode.NEVER))
            .merge_values(merge_values=True)
            .mappings([model.ValueMap(mapping)])
        )
    if panel.kind == "table":
        return table.Panel()
    msg = f"unknown panel kind {panel.kind!r}"
    raise ValueError(msg)


_DASH: Final = {"fill": "dash", "dash": [10, 10]}
"""Grafana's line style of a dashed series."""


def _timeseries_builder(builder: Any, panel: _Panel) -> Any:
    """A time series: thin lines, dashed thresholds, a legend, and the dashed queries' overrides."""
    from grafana_foundation_sdk.builders import common  # noqa: PLC0415 - optional dependency
    from grafana_foundation_sdk.models import common as common_model  # noqa: PLC0415
    from grafana_foundation_sdk.models import dashboard as model  # noqa: PLC0415

    builder = (
        builder.line_width(1)
        .fill_opacity(10)
        .show_points(common_model.VisibilityMode(common_model.VisibilityMode.NEVER))
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(
                common_model.GraphThresholdsStyleMode(common_model.GraphThresholdsStyleMode.DASHED)
            )
        )
        .legend(
            common.VizLegendOptions()
            .display_mode(common_model.LegendDisplayMode(common_model.LegendDisplayMode.LIST))
            .placement(common_model.LegendPlacement(common_model.LegendPlacement.BOTTOM))
            .show_legend(show_legend=True)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_model.TooltipDisplayMode(common_model.TooltipDisplayMode.MULTI))
            .sort(common_model.SortOrder(common_model.SortOrder.DESCENDING))
        )
    )
    for index, query in enumerate(panel.queries):
        if query.dashed:
            builder = builder.override_by_query(
                _ref_id(index),
                [
                    model.DynamicConfigValue(id_val="custom.lineStyle", value=_DASH),
                    model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                ],
            )
    return builder


def _legend(query: _Query) -> str:
    """The legend of a query's series: its service first (every query keeps ``job``, see :func:`_by`)."""
    if query.table:
        return query.legend or "__auto"
    return f"{{{{{_JOB}}}}} / {query.legend}" if query.legend else f"{{{{{_JOB}}}}}"


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _with_targets(builder: Any, panel: _Panel, datasource: Any) -> Any:
    """``builder`` with one Prometheus target per query of ``panel`` (ref ids A, B, ...)."""
    from grafana_foundation_sdk.builders import prometheus  # noqa: PLC0415 - optional dependency
    from grafana_foundation_sdk.models import prometheus as prom_model  # noqa: PLC0415

    for index, query in enumerate(panel.queries):
        target = (
            prometheus.Dataquery()
            .ref_id(_ref_id(index))
            .datasource(datasource)
            .expr(query.expr)
            .legend_format(_legend(query))
        )
        target = target.instant() if query.instant else target.range()
        if query.table:
            target = target.format(prom_model.PromQueryFormat(prom_model.PromQueryFormat.TABLE))
        if query.exemplar:
            target = target.exemplar(exemplar=True)
        builder = builder.with_target(target)
    return builder


def dashboard_documents() -> dict[str, dict[str, Any]]:
    """Return every dashboard as a JSON-ready document, by file name."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: PLC0415 - optional dependency

    documents: dict[str, dict[str, Any]] = {}
    for spec in _dashboards():
        document = json.loads(json.dumps(_build(spec), cls=JSONEncoder))
        # The SDK's AnnotationQuery has no field for what a Prometheus mark shows: set them here.
        for annotation, (*_, what) in zip(document["annotations"]["list"], _ANNOTATIONS, strict=True):
            annotation.update(_annotation_fields(what))
        documents[spec.file] = document
    return documents


README_FILE: Final = "README.md"
"""The file beside the dashboards that says what each needs from Prometheus."""


def _reads_rules(panel: _Panel) -> list[str]:
    """The recording rules (or ``ALERTS``) the queries of ``panel`` read."""
    records = [
        rule["record"]
        for group in ar.rules_document()["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    return [
        name
        for name in [*records, naming.ALERTS_SERIES]
        if any(re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", q.expr) for q in panel.queries)
    ]


def render_readme() -> str:
    """Return ``dashboards/README.md``: how to import the dashboards and which panels need the rules."""
    lines = [
        "# Grafana dashboards",
        "",
        "Generated by `python -m otel_resilience.ops.dashboards > dashboards/README.md`: do not edit.",
        "",
        (
            "Import each JSON file into Grafana 11 and pick the Prometheus data source that scrapes the "
            "services (the `job` variable lists them). Every panel shows a number on a healthy system: "
            "counters whose labels are known in advance start at 0, and the panels of those that appear "
            "at their first event (a retry, a fallback: their error type is not known in advance) show 0 "
            "until then. A pattern no policy of the service configures (hedging, chaos, error recovery) "
            "has no series at all: its panels show no data, which says it is not in use."
        ),
        "",
        (
            f"The panels below read recording rules, or the `ALERTS` series, of `{_RULES_PATH}`: they show "
            "no data unless the Prometheus the data source points at loads those rules "
            "(`rule_files` in prometheus.yml). Every other panel reads the raw metrics."
        ),
        "",
        "| Dashboard | Panel | Reads |",
        "| --- | --- | --- |",
    ]
    for spec in _dashboards():
        for _, panels in spec.rows:
            for panel in panels:
                needed = _reads_rules(panel)
                if needed:
                    lines.append(f"| {spec.title} | {panel.title} | {', '.join(f'`{n}`' for n in needed)} |")
    return "\n".join(lines) + "\n"


def render_dashboards() -> dict[str, str]:
    """Return the text of every ``dashboards/*.json`` file, by file name."""
    return {
        name: json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, document in dashboard_documents().items()
    }


def alert_panels() -> list[AlertPanel]:
    """Return every panel that shows what an alert watches, with the thresholds it draws."""
    return [
        AlertPanel(spec.uid, panel.title, panel.alert, tuple(v for v, _ in panel.thresholds if v is not None))
        for spec in _dashboards()
        for _, panels in spec.rows
        for panel in panels
        if panel.alert is not None
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print :func:`render_readme` (``python -m otel_resilience.ops.dashboards > dashboards/README.md``).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``): none but ``--help``.

    Returns:
        0 (``--help`` and a usage error exit through ``SystemExit``, 0 and 2).
    """
    import argparse  # noqa: PLC0415 - the command line only

    parser = argparse.ArgumentParser(
        prog="python -m otel_resilience.ops.dashboards",
        description="Print dashboards/README.md (how to import the dashboards, which panels read the "
        "recording rules): python -m otel_resilience.ops.dashboards > dashboards/README.md. The "
        "dashboards themselves: python -m otel_resilience.ops.export dashboards DIR.",
    )
    parser.parse_args(argv)
    sys.stdout.write(render_readme())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
