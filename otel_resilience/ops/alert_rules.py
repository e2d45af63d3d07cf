"""Prometheus recording and alerting rules over the metrics the library exports.

``alerts/rules.yml`` and its unit tests ``alerts/rules_test.yml`` are generated from this
module (``python -m otel_resilience.ops.export --all``). Every series and label is
derived from :mod:`otel_resilience.telemetry.semconv` through :mod:`~otel_resilience.ops.naming`;
the thresholds below are the ones the dashboards draw, from the same constants.

Decisions, in short (``docs/operations.md`` has the long form):

* **The service is the ``job`` label**, set by Prometheus from the scrape job (a service
  scraped directly) or by the Collector's exporters from ``service.name``.
* **Recording rules carry the shared rates**, named ``level:metric:operations``; the alerts and
  the dashboard panels that show the same numbers read them.
* **Ratios have a minimum-traffic guard**: retry, fallback, timeout and bulkhead-rejection ratios
  need at least :data:`MIN_EXECUTION_RATE` executions per second; the recovery rate needs
  :data:`RECOVERY_MIN_ATTEMPTS` actions in its window, so that 1 failure out of 2 never pages.
* **A full bulkhead turns callers away**: more than :data:`BULKHEAD_REJECTION_RATIO` of the
  policy's executions rejected, not "every slot busy" and not a handful of rejections.
* **Recovery is judged per policy**, over :data:`RECOVERY_WINDOW` when actions are many, and as
  "every action of :data:`RECOVERY_SPARSE_WINDOW` failed while the policy's calls fail" when they
  are rare (a hard outage), so that it fires within 5 minutes and resolves within 5 minutes.
* **Rare events count their first occurrence.** An OpenTelemetry counter appears at its first
  increment, already at 1, so ``increase()`` misses that event. The rules for rare events (breaker
  trips, error patterns, recovery actions) add the value of series younger than their window.
  A series that only missed scrapes is not young: one Prometheus saw within
  :data:`SERIES_HISTORY` before the window, no higher than it has been since, counts what it
  gained.
* **Saturation is averaged over the alert's window**: a gauge read once per evaluation catches
  a lull or a peak; the near-saturation alert compares the average over
  :data:`BULKHEAD_NEAR_FOR` with its threshold, once the bulkhead has been reporting that long.
* **Descriptions state what the expression measured**, counts as whole numbers.
* **A team adapts the rules without editing Python**: :class:`RuleOptions` (the runbook URL
  base, the job label, every threshold and ``for``), also as options of
  ``otel-resilience export alerts DIR``.
* **A breaker is "open" when it is open or half-open**, in any instance, so that a breaker that
  keeps failing its probes does not reset the ``for`` clock; ``disabled`` and ``metrics_only``
  let every call through and are not open. Only while it acts on calls (a rejection, or a failed
  probe, within :data:`RATE_WINDOW`): a breaker no call reaches stays half-open once its timeout
  elapsed (only a call moves it on) and rejects nothing. Severity grows with the duration:
  ``warning`` after :data:`BREAKER_OPEN_WARNING_FOR`, ``critical`` after
  :data:`BREAKER_OPEN_CRITICAL_FOR` (Alertmanager mutes the warning then).
* **Flapping is counted per breaker**: each instance's breaker, and each key's of a keyed policy
  whose transitions carry its key, is a breaker of its own (trips in several replicas or keys do
  not add up); a breaker shared over replicas (Redis) is one, each trip of the cluster counted
  once, not once per replica. The value is the most trips any breaker of the name made.
* **A breaker in ``metrics_only`` mode is judged by its would-be trips**, the
  ``metrics_only -> metrics_only`` transitions it reports where it would have opened: they
  respect ``minimum_calls`` and every trip reason, while its failure-rate gauge restarts from an
  empty window after each would-be trip (a saw-tooth that dips below the threshold every time).
* **A retry budget is judged by its denials**, the retries it denied
  (``resilience.retry.exhausted`` with stop reason ``budget``, one per denied retry, each ending
  a run of the retry: a recovery re-run denied again counts again), counting
  the first: a burst of denials is the budget doing its job; denials within every
  :data:`RETRY_BUDGET_WINDOW` for :data:`RETRY_BUDGET_FOR` mean the dependency keeps failing
  enough that retries are being shed. The level gauge (``resilience.retry.budget.available``) is
  for the dashboards: at 0 in one instance it says nothing about the others.
* **A rate limiter is judged by the share of its policy's executions it shed**
  (``resilience.rejections`` with reason ``rate_limited`` over the policy's executions): more
  than :data:`RATE_LIMITED_RATIO` for :data:`RATE_LIMITED_FOR`, under the minimum-traffic
  guard. Shedding a burst is the limiter's job; shedding one call in ten for minutes means a
  caller keeps sending more than the limit allows, or the limit is too low for the real traffic.
  A limiter that runs no execution (``try_acquire``, a keyed limiter used alone) counts no
  rejection: :data:`A_RATE_LIMITER_REFUSING` judges it by the share of the permits asked of it that
  it refused, with the same threshold, ``for`` and minimum traffic (in permit requests per second).
* **A chaos drill is marked, not hidden**: :data:`A_CHAOS_DRILL` (severity ``info``) fires for
  a policy whose chaos links injected anything within :data:`CHAOS_DRILL_WINDOW`, the first
  injection included. It pages nobody; the shipped Alertmanager configuration uses it to mute
  the alerts a drill is expected to cause on that policy (see
  :mod:`~otel_resilience.ops.alertmanager`), and it tells whoever reads the other alerts that
  a drill is on.
* **Series past the SDK's cardinality limit are reported**: the OpenTelemetry SDK records every
  attribute set past its limit per instrument (2 000 by default in Python) in one series marked
  ``otel.metric.overflow=true``, with no other attribute, where no rule that groups by policy,
  breaker or key sees it (the 59th breaker of a process fills the transitions counter: its 34
  transition series are made when it is). :data:`A_TELEMETRY_OVERFLOW` fires while anything
  lands there, per service and metric (a keyed policy's own ``resilience.key="_OTHER"`` series,
  the limit it chose, is left out).
* **A time scale for compressed time.** ``render_rules(time_scale=F)`` multiplies every
  ``for``, range and ``offset`` by ``F`` and keeps everything else (recording rule names,
  thresholds, labels), to watch a demo run with ``--time-scale F`` (one real second stands for
  ``1/F`` production seconds) or an end-to-end test fire and resolve the alerts in seconds. Its
  groups are evaluated every :data:`EVALUATION_INTERVAL` times ``F`` (their ``interval``), so
  that no window is shorter than the time between two evaluations. The committed files are the
  production rules (``F = 1``).
"""

from __future__ import annotations

import math
import re
import shlex
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final
from urllib.parse import urlsplit

from otel_resilience.engine.validation import MAX_COUNT, describe
from otel_resilience.ops import _yaml, checks, naming
from otel_resilience.telemetry import semconv as sc

__all__ = [
    "ALERT_NAMES",
    "A_BREAKER_FLAPPING",
    "A_BREAKER_OPEN",
    "A_BREAKER_WOULD_OPEN",
    "A_BULKHEAD_FULL",
    "A_BULKHEAD_NEAR",
    "A_CHAOS_DRILL",
    "A_CONFIG_STALE",
    "A_ERROR_PATTERN",
    "A_FALLBACK_HIGH",
    "A_RATE_LIMITED",
    "A_RATE_LIMITER_REFUSING",
    "A_RECOVERY_LOW",
    "A_RELOAD_FAILED",
    "A_RETRY_BUDGET",
    "A_RETRY_STORM",
    "A_STORE_DEGRADED",
    "A_STORE_FLAPPING",
    "A_TELEMETRY_OVERFLOW",
    "A_TIMEOUTS",
    "BREAKER_FLAPPING_FOR",
    "BREAKER_FLAPPING_TRIPS",
    "BREAKER_FLAPPING_WINDOW",
    "BREAKER_OPEN_CRITICAL_FOR",
    "BREAKER_OPEN_WARNING_FOR",
    "BREAKER_WOULD_OPEN_FOR",
    "BREAKER_WOULD_OPEN_WINDOW",
    "BULKHEAD_FULL_FOR",
    "BULKHEAD_FULL_SATURATION",
    "BULKHEAD_NEAR_FOR",
    "BULKHEAD_NEAR_SATURATION",
    "BULKHEAD_REJECTION_RATIO",
    "CHAOS_DRILL_WINDOW",
    "CONFIG_STALE_FOR",
    "ERROR_PATTERN_FOR",
    "ERROR_PATTERN_WINDOW",
    "EVALUATION_INTERVAL",
    "FALLBACK_RATIO",
    "MIN_EXECUTION_RATE",
    "MIN_TIME_SCALE",
    "RATE_LIMITED_FOR",
    "RATE_LIMITED_RATIO",
    "RATE_WINDOW",
    "RATIO_ALERT_FOR",
    "RECOVERY_FOR",
    "RECOVERY_MIN_ATTEMPTS",
    "RECOVERY_RATE_THRESHOLD",
    "RECOVERY_SPARSE_WINDOW",
    "RECOVERY_WINDOW",
    "RELOAD_FAILED_WINDOW",
    "RETRY_BUDGET_FOR",
    "RETRY_BUDGET_WINDOW",
    "RETRY_STORM_RATIO",
    "RULES_FILE",
    "RULES_TEST_FILE",
    "RULE_SEVERITIES",
    "RUNBOOK_BASE_URL",
    "R_BREAKER_OPEN",
    "R_BREAKER_TRIPS",
    "R_BREAKER_WOULD_TRIPS",
    "R_BULKHEAD_QUEUE_SATURATION",
    "R_BULKHEAD_REJECTIONS",
    "R_BULKHEAD_REJECTION_RATIO",
    "R_BULKHEAD_SATURATION",
    "R_CHAOS_INJECTIONS",
    "R_CONFIG_STALE",
    "R_ERROR_PATTERNS",
    "R_EXECUTIONS",
    "R_EXECUTIONS_BY_OUTCOME",
    "R_FALLBACKS",
    "R_FALLBACK_RATIO",
    "R_RATE_LIMITED",
    "R_RATE_LIMITED_RATIO",
    "R_RATE_LIMITER_PERMITS",
    "R_RATE_LIMITER_REFUSED_RATIO",
    "R_RECOVERY_ATTEMPTS",
    "R_RECOVERY_RATE",
    "R_RECOVERY_RATE_SPARSE",
    "R_RELOAD_FAILURES",
    "R_RETRIES",
    "R_RETRY_BUDGET_DENIALS",
    "R_RETRY_RATIO",
    "R_STORE_DEGRADED",
    "R_STORE_OUTAGES",
    "R_SUCCESS_RATIO",
    "R_TELEMETRY_OVERFLOW",
    "R_TIMEOUTS",
    "R_TIMEOUT_RATIO",
    "SERIES_HISTORY",
    "STORE_DEGRADED_FOR",
    "STORE_FLAPPING_FOR",
    "STORE_FLAPPING_OUTAGES",
    "STORE_FLAPPING_WINDOW",
    "TELEMETRY_OVERFLOW_WINDOW",
    "TIMEOUT_RATIO",
    "AlertRule",
    "RecordingRule",
    "RuleOptionError",
    "RuleOptions",
    "Rules",
    "TimeScaleError",
    "export_command",
    "render_rules",
    "render_rules_test",
    "rule_groups",
    "rules_document",
    "rules_test_document",
    "scale_duration",
]

RULES_FILE: Final = "rules.yml"
RULES_TEST_FILE: Final = "rules_test.yml"
RUNBOOK_BASE_URL: Final = "https://github.com/otel-resilience/otel-resilience/blob/main/docs/runbooks"
"""Where the runbooks (``docs/runbooks/<AlertName>.md`` in the repository) are browsed."""

EVALUATION_INTERVAL: Final = "1m"
"""How often Prometheus evaluates the production rules (Prometheus' default ``evaluation_interval``,
that of ``collector-config/prometheus.yaml`` and of the promtool unit tests). No range of the
shipped rules is shorter: an event between two windows would go uncounted. A time-scaled file sets its
groups' ``interval`` to this times the scale (see :func:`rules_document`)."""

# --- thresholds: the defaults of RuleOptions (the dashboards draw the same constants) ---------

RATE_WINDOW: Final = "5m"
"""The window of the shared execution, retry, fallback, timeout and rejection rates."""
MIN_EXECUTION_RATE: Final = 0.1
"""Executions per second (over :data:`RATE_WINDOW`) a policy needs before its ratios alert."""
RATIO_ALERT_FOR: Final = "10m"
"""How long a ratio must stay above its threshold (retry storm, fallbacks, timeouts)."""
RETRY_STORM_RATIO: Final = 0.5
"""Retries per execution above which a policy is in a retry storm."""
FALLBACK_RATIO: Final = 0.1
"""Share of executions answered by a fallback above which the fallback rate is high."""
TIMEOUT_RATIO: Final = 0.05
"""Timeouts per execution above which timeouts are rising."""
BREAKER_OPEN_WARNING_FOR: Final = "1m"
"""A breaker not closed for this long raises a warning."""
BREAKER_OPEN_CRITICAL_FOR: Final = "10m"
"""A breaker not closed for this long raises a critical alert (it pages)."""
BREAKER_FLAPPING_WINDOW: Final = "30m"
"""The window in which breaker trips (closed -> open) are counted."""
BREAKER_FLAPPING_TRIPS: Final = 3
"""Trips within :data:`BREAKER_FLAPPING_WINDOW` that make a breaker flapping."""
BREAKER_FLAPPING_FOR: Final = "2m"
BREAKER_WOULD_OPEN_WINDOW: Final = "5m"
"""The window in which the would-be trips of a ``metrics_only`` breaker are counted."""
BREAKER_WOULD_OPEN_FOR: Final = "5m"
"""How long a ``metrics_only`` breaker must keep making would-be trips (at least one within every
:data:`BREAKER_WOULD_OPEN_WINDOW`) before it is reported as one that would be opening."""
BULKHEAD_REJECTION_RATIO: Final = 0.05
"""Share of a policy's executions rejected by its bulkhead (full, or queue timeout) above which
the bulkhead is full. 1 call in 20 turned away is a capacity problem callers notice; below it a
bulkhead sheds short bursts, which is its job (4 queue timeouts in 360 calls, 1.1 %, stay quiet)."""
BULKHEAD_FULL_FOR: Final = "2m"
BULKHEAD_FULL_SATURATION: Final = 1.0
"""Share of the concurrency limit in use that the dashboards draw as "full" (no alert compares
with it: a bulkhead with every slot busy but rejecting nobody is working as designed)."""
BULKHEAD_NEAR_SATURATION: Final = 0.8
"""Share of the concurrency limit in use at which a bulkhead is near saturation."""
BULKHEAD_NEAR_FOR: Final = "10m"
"""How long a bulkhead must be near saturation: the window over which its saturation is averaged
(a lull or a peak read at one evaluation does not decide)."""
RECOVERY_WINDOW: Final = "5m"
"""The window of the recovery rate: short, so the alert resolves within minutes of a return."""
RECOVERY_SPARSE_WINDOW: Final = "1h"
"""The window in which *every* recovery action failing counts as a failure of recovery, for
policies whose actions are too rare for a rate (a hard outage: the breaker rejects almost every
call before the recovery rules see an error)."""
RECOVERY_RATE_THRESHOLD: Final = 0.8
"""A recovery rate below this alerts (SPEC: 80 %; the in-process default too)."""
RECOVERY_MIN_ATTEMPTS: Final = 10
"""Recovery actions within :data:`RECOVERY_WINDOW` before their rate is judged."""
RECOVERY_FOR: Final = "2m"
ERROR_PATTERN_WINDOW: Final = "15m"
"""How long a detected error pattern keeps its alert firing."""
ERROR_PATTERN_FOR: Final = "1m"
RETRY_BUDGET_WINDOW: Final = "5m"
"""The window in which the retries a retry budget denied are counted."""
RETRY_BUDGET_FOR: Final = "10m"
"""How long a retry budget must keep denying retries (at least one within every
:data:`RETRY_BUDGET_WINDOW`) before it is reported as exhausted: denials spread over 5 minutes or
more, with no pause of 5 minutes. A burst of denials, or a few minutes of them, is not."""
RATE_LIMITED_RATIO: Final = 0.1
"""Share of a policy's executions its rate limiter shed (``RateLimitedError``) above which the
shedding is sustained. Twice the bulkhead's 5 %: a limiter sheds by design (a caller's burst
over ``burst`` permits), while one call in ten turned away for minutes is a caller over its
limit, or a limit below the real traffic."""
CHAOS_DRILL_WINDOW: Final = "15m"
"""How long after its last injection a policy counts as under a chaos drill: the drill's retries,
fallbacks, timeouts and recovery actions die down within it, and the ``for`` of the alerts it
would cause (up to 10 minutes) has passed."""
SERIES_HISTORY: Final = "1h"
"""How long before its window a rare-event rule remembers a series that has no sample at the
window's start. Such a series counts its whole value (a series born at its first increment is
already at 1), unless Prometheus saw it within this history at no more than its value in the
window: then it is the same counter after a gap in the scrapes (Prometheus restarting, a target
unreachable for longer than the 5-minute lookback), and counts only what it gained. Seen higher,
its process restarted, and its whole value is new. A gap longer than this, or a long-running
process scraped for the first time, still counts the counter's whole value (the rules cannot
tell it from a new process): each such rule may then fire once, for one window."""
RELOAD_FAILED_WINDOW: Final = "15m"
"""How long after a refused reload of a named policy :data:`A_RELOAD_FAILED` keeps firing: long
enough for the person who changed the file to see it, short enough to resolve soon after the file
is fixed (a successful reload does not end it earlier)."""
CONFIG_STALE_FOR: Final = "15m"
"""How long a watched configuration file must stay refused before :data:`A_CONFIG_STALE` fires:
:data:`A_RELOAD_FAILED` tells of the refusal for :data:`RELOAD_FAILED_WINDOW` after it is counted
(once), and this one takes over when that window has passed, for as long as the file is left so."""
TELEMETRY_OVERFLOW_WINDOW: Final = "15m"
"""How long after the last measurement the SDK folded into its cardinality-limit overflow series
:data:`A_TELEMETRY_OVERFLOW` keeps firing."""
STORE_DEGRADED_FOR: Final = "2m"
"""How long a shared store must stay unreachable before :data:`A_STORE_DEGRADED` fires: a store
reconnects within seconds (its retries back off to 5 s), so two minutes is an outage, not a blip."""
STORE_FLAPPING_WINDOW: Final = "30m"
"""The window in which the outages of a shared store are counted (as a breaker's trips are)."""
STORE_FLAPPING_OUTAGES: Final = 3
"""Outages of a shared store within :data:`STORE_FLAPPING_WINDOW`, in one instance, that make it
flapping: each shorter than :data:`STORE_DEGRADED_FOR`, together they put its shared breakers and
rate limits on local state again and again."""
STORE_FLAPPING_FOR: Final = "2m"
"""How long a shared store must stay at :data:`STORE_FLAPPING_OUTAGES` or more before
:data:`A_STORE_FLAPPING` fires."""
RATE_LIMITED_FOR: Final = "5m"
"""How long the shed share must stay above :data:`RATE_LIMITED_RATIO`: longer than a burst or a
retry wave (a minute or two), short enough to warn while a noisy caller still floods."""

_WINDOWS: Final = (
    RATE_WINDOW,
    BREAKER_FLAPPING_WINDOW,
    BREAKER_WOULD_OPEN_WINDOW,
    RECOVERY_WINDOW,
    RECOVERY_SPARSE_WINDOW,
    RETRY_BUDGET_WINDOW,
    CHAOS_DRILL_WINDOW,
    RELOAD_FAILED_WINDOW,
    STORE_FLAPPING_WINDOW,
    SERIES_HISTORY,
)

_NOT_THE_SERVICE: Final = (
    naming.derived_labels() | {naming.INSTANCE_LABEL, naming.BUCKET_LABEL} | naming.ALERT_SERIES_LABELS
)
"""Labels that cannot name the service (``RuleOptions.job_label``): the rules group, match or set
each with its own meaning, so a service put there would be overwritten or mixed with it."""

_ORDERED_OPTIONS: Final = (
    ("breaker_open_warning_for", "breaker_open_critical_for", "severity grows with duration"),
)
"""The ``for`` pairs that must stay strictly ordered, shorter first, and why: in the options
(:class:`RuleOptions`) and once scaled (:func:`rule_groups`), where rounding to whole
milliseconds may give the two one length."""

_WINDOW_OPTIONS: Final = ("bulkhead_near_for",)
"""The options that are the range of a ``*_over_time`` function as well (a ``for`` may be 0s, a
range may not)."""


class RuleOptionError(ValueError):
    """A value of one field that :class:`RuleOptions` refuses; the message names the field.

    ``str(error)`` reads ``RuleOptions.job_label must be a Prometheus label name, got ''``: the
    field of the Python API. A command line that took the value from an option of its own
    (``otel-resilience export alerts DIR --job-label LABEL``) names that option instead, with
    :attr:`reason`.

    Attributes:
        field: The field's name (``"job_label"``).
        reason: What is wrong, worded to follow the field's name (``"must be ..., got ..."``).
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"RuleOptions.{field} {reason}")
        self.field = field
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy with both fields and the notes (``ValueError``'s own keeps its message only)."""
        return (type(self), (self.field, self.reason), self.__dict__)


def _runbook_base_problem(base: str) -> str | None:
    """What keeps ``base`` from starting each alert's runbook URL (``{base}/{alert}.md``), or ``None``.

    Said as the end of "must be an http(s) URL": empty when it is none.

    It needs a host, and nothing after its path: a query or a fragment would take the alert's
    name into it. No ``{{`` or ``}}`` either: Prometheus reads an annotation as a template.
    """
    if not re.fullmatch(r"https?://\S+", base):
        return ""
    parts = urlsplit(base)
    if not parts.hostname:
        return " with a host"
    if "?" in base or "#" in base:
        return " without a query or a fragment (the alert's page is added to its path)"
    if "{{" in base or "}}" in base:
        return " without {{ or }} (Prometheus reads the annotation as a template)"
    return None


@dataclass(frozen=True, slots=True)
class RuleOptions:
    """What a team adapts in the generated rules without editing Python.

    Every field defaults to the shipped value (the module constant of the same name in upper
    case). The windows of the recording rules are not options: their names carry them
    (``...:rate5m``) and the dashboards read those names.

    Attributes:
        runbook_url_base: Where ``<AlertName>.md`` runbooks are browsed (``runbook_url``).
        job_label: The label that names the service (``job``; ``service`` if you relabel).
        min_execution_rate: Executions/s a policy needs before its ratios alert (and permit
            requests/s a rate limiter that runs no execution needs).
        ratio_alert_for: ``for`` of the retry-storm, fallback and timeout alerts.
        retry_storm_ratio: Retries per execution of a retry storm.
        fallback_ratio: Share of executions answered by a fallback that alerts.
        timeout_ratio: Timeouts per execution that alert.
        breaker_open_warning_for: ``for`` of the breaker-open warning.
        breaker_open_critical_for: ``for`` of the breaker-open page, longer than the warning's.
        breaker_flapping_trips: Trips in 30 m that make a breaker flapping.
        breaker_flapping_for: ``for`` of the flapping alert.
        breaker_would_open_for: ``for`` of the alert on a ``metrics_only`` breaker's would-be trips.
        bulkhead_rejection_ratio: Share of a policy's executions rejected by its bulkhead that alerts.
        bulkhead_full_for: ``for`` of the bulkhead-full alert.
        bulkhead_near_saturation: Share of the concurrency limit in use that alerts.
        bulkhead_near_for: How long the near-saturation alert averages the saturation over.
        recovery_rate_threshold: Recovery rate below which recovery alerts.
        recovery_min_attempts: Recovery actions in 5 m before their rate is judged.
        recovery_for: ``for`` of the recovery alert.
        error_pattern_for: ``for`` of the error-pattern alert.
        retry_budget_for: ``for`` of the alert on a retry budget that keeps denying retries.
        rate_limited_ratio: Share of a policy's executions its rate limiter shed that alerts (and
            share of the permits asked of a limiter that runs no execution that it refused).
        rate_limited_for: ``for`` of the alerts on sustained shedding by a rate limiter.
        config_stale_for: ``for`` of the alert on a watched configuration file left refused.
        store_degraded_for: ``for`` of the alert on a shared store unreachable.
        store_flapping_outages: Outages of a shared store in 30 m, in one instance, that make it
            flapping.
        store_flapping_for: ``for`` of the alert on a shared store that keeps dropping out.
    """

    runbook_url_base: str = RUNBOOK_BASE_URL
    job_label: str = naming.SERVICE_LABEL
    min_execution_rate: float = MIN_EXECUTION_RATE
    ratio_alert_for: str = RATIO_ALERT_FOR
    retry_storm_ratio: float = RETRY_STORM_RATIO
    fallback_ratio: float = FALLBACK_RATIO
    timeout_ratio: float = TIMEOUT_RATIO
    breaker_open_warning_for: str = BREAKER_OPEN_WARNING_FOR
    breaker_open_critical_for: str = BREAKER_OPEN_CRITICAL_FOR
    breaker_flapping_trips: int = BREAKER_FLAPPING_TRIPS
    breaker_flapping_for: str = BREAKER_FLAPPING_FOR
    breaker_would_open_for: str = BREAKER_WOULD_OPEN_FOR
    bulkhead_rejection_ratio: float = BULKHEAD_REJECTION_RATIO
    bulkhead_full_for: str = BULKHEAD_FULL_FOR
    bulkhead_near_saturation: float = BULKHEAD_NEAR_SATURATION
    bulkhead_near_for: str = BULKHEAD_NEAR_FOR
    recovery_rate_threshold: float = RECOVERY_RATE_THRESHOLD
    recovery_min_attempts: int = RECOVERY_MIN_ATTEMPTS
    recovery_for: str = RECOVERY_FOR
    error_pattern_for: str = ERROR_PATTERN_FOR
    retry_budget_for: str = RETRY_BUDGET_FOR
    rate_limited_ratio: float = RATE_LIMITED_RATIO
    rate_limited_for: str = RATE_LIMITED_FOR
    config_stale_for: str = CONFIG_STALE_FOR
    store_degraded_for: str = STORE_DEGRADED_FOR
    store_flapping_outages: int = STORE_FLAPPING_OUTAGES
    store_flapping_for: str = STORE_FLAPPING_FOR

    def __post_init__(self) -> None:
        for item in fields(self):
            name, value = item.name, getattr(self, item.name)
            where = f"RuleOptions.{name}"
            if item.type == "str":
                if not isinstance(value, str):
                    raise TypeError(f"{where} must be a string, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{where} must be a number, got {value!r}")
            if name.endswith("_for"):
                _check_duration(name, value)
            elif item.type == "int":
                if not isinstance(value, int) or not 1 <= value <= MAX_COUNT:  # a count Prometheus reads
                    raise RuleOptionError(
                        name, f"must be an integer >= 1 and <= {MAX_COUNT}, got {describe(value)}"
                    )
            elif item.type == "float" and not (_finite(value) and value > 0):
                raise RuleOptionError(name, f"must be a finite number > 0, got {describe(value)}")
        for name in (
            "fallback_ratio",
            "bulkhead_near_saturation",
            "recovery_rate_threshold",
            "rate_limited_ratio",
        ):
            if getattr(self, name) > 1:
                raise RuleOptionError(name, f"is a share and must be <= 1, got {getattr(self, name)!r}")
        for name in _WINDOW_OPTIONS:
            if _seconds(getattr(self, name)) == 0:
                raise RuleOptionError(
                    name,
                    f"is the window of an average and must be longer than 0, got {getattr(self, name)!r}",
                )
        for shorter, longer, why in _ORDERED_OPTIONS:
            first, then = getattr(self, shorter), getattr(self, longer)
            if _seconds(then) <= _seconds(first):
                raise RuleOptionError(longer, f"must be longer than {shorter} ({first}), got {then!r}: {why}")
        if (problem := _runbook_base_problem(self.runbook_url_base)) is not None:
            raise RuleOptionError(
                "runbook_url_base", f"must be an http(s) URL{problem}, got {self.runbook_url_base!r}"
            )
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", self.job_label) or self.job_label.startswith("__"):
            raise RuleOptionError("job_label", f"must be a Prometheus label name, got {self.job_label!r}")
        if self.job_label in _NOT_THE_SERVICE:
            raise RuleOptionError(
                "job_label",
                f"must name the service, not {self.job_label!r}, a label the rules and alerts already "
                "carry with another meaning (the process, a histogram bucket, an attribute of the "
                "library's metrics, or the alert's name, state and severity)",
            )
        object.__setattr__(self, "runbook_url_base", self.runbook_url_base.rstrip("/"))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Return the names of the options, in declaration order."""
        return tuple(item.name for item in fields(cls))

    @classmethod
    def from_strings(cls, settings: Mapping[str, str]) -> RuleOptions:
        """Return options parsed from ``field -> text`` pairs (the ``--set FIELD=VALUE`` of export).

        Raises:
            ValueError: For an unknown field or a value that does not parse or validate.
        """
        types = {item.name: item.type for item in fields(cls)}
        values: dict[str, Any] = {}
        for name, text in settings.items():
            kind = types.get(name)
            if kind is None:
                raise ValueError(f"RuleOptions has no field {name!r}; the fields are {', '.join(types)}")
            try:
                values[name] = int(text) if kind == "int" else float(text) if kind == "float" else text
            except ValueError:
                worded = "an integer" if kind == "int" else "a number"
                raise RuleOptionError(name, f"must be {worded}, got {text!r}") from None
        return cls(**values)

    @property
    def is_default(self) -> bool:
        """Whether these are the shipped options (the committed files and their unit tests)."""
        return self == RuleOptions()

    @property
    def settings(self) -> tuple[str, ...]:
        """The ``FIELD=VALUE`` of each option that differs from the shipped one, in declaration order."""
        shipped = RuleOptions()
        return tuple(
            f"{name}={getattr(self, name)}"
            for name in self.field_names()
            if getattr(self, name) != getattr(shipped, name)
        )


def _finite(value: float) -> bool:
    """Whether ``value`` is finite: an ``int`` too large for a float is not (no ``OverflowError``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_duration(name: str, duration: str) -> None:
    if not _is_duration(duration):
        raise RuleOptionError(
            name, f"must be a Prometheus duration such as '5m' (at most 292y), got {duration!r}"
        )


# --- names, all derived ---------------------------------------------------------------------

_JOB: Final = naming.SERVICE_LABEL
_POLICY: Final = naming.label(sc.POLICY)
_NAME: Final = naming.label(sc.NAME)
_OUTCOME: Final = naming.label(sc.OUTCOME)
_PATTERN: Final = naming.label(sc.PATTERN)
_ERROR_TYPE: Final = naming.label(sc.ERROR_TYPE)
_OPERATION: Final = naming.label(sc.OPERATION)
_OPERATION_MODULE: Final = naming.label(sc.OPERATION_MODULE)
_CB_STATE: Final = naming.label(sc.CB_STATE)
_CB_PREVIOUS: Final = naming.label(sc.CB_PREVIOUS_STATE)
_CB_REASON: Final = naming.label(sc.CB_TRANSITION_REASON)
_REJECTION_REASON: Final = naming.label(sc.REJECTION_REASON)
_TIMEOUT_SCOPE: Final = naming.label(sc.TIMEOUT_SCOPE)
_RETRY_STOP_REASON: Final = naming.label(sc.RETRY_STOP_REASON)
_FALLBACK_STRATEGY: Final = naming.label(sc.FALLBACK_STRATEGY)
_FALLBACK_RESULT: Final = naming.label(sc.FALLBACK_RESULT)
_RECOVERY_STRATEGY: Final = naming.label(sc.RECOVERY_STRATEGY)
_RECOVERY_RESULT: Final = naming.label(sc.RECOVERY_RESULT)

_EXECUTIONS: Final = naming.series(sc.EXECUTIONS)
_CB_STATE_SERIES: Final = naming.series(sc.CB_STATE_METRIC)
_CB_SHARED: Final = naming.series(sc.CB_SHARED)
_CB_TRANSITIONS: Final = naming.series(sc.CB_TRANSITIONS)
_REJECTIONS: Final = naming.series(sc.REJECTIONS)
_RL_PERMITS: Final = naming.series(sc.RL_PERMITS)
_RL_PERMIT_RESULT: Final = naming.label(sc.RL_PERMIT_RESULT)
_RETRIES: Final = naming.series(sc.RETRIES)
_RETRY_EXHAUSTED: Final = naming.series(sc.RETRY_EXHAUSTED)
_RETRY_BUDGET: Final = naming.series(sc.RETRY_BUDGET_AVAILABLE)
_TIMEOUTS: Final = naming.series(sc.TIMEOUTS)
_FALLBACKS: Final = naming.series(sc.FALLBACK_EXECUTIONS)
_BULKHEAD_ACTIVE: Final = naming.series(sc.BULKHEAD_ACTIVE)
_BULKHEAD_QUEUED: Final = naming.series(sc.BULKHEAD_QUEUED)
_BULKHEAD_LIMIT: Final = naming.series(sc.BULKHEAD_CONCURRENCY_LIMIT)
_BULKHEAD_QUEUE_LIMIT: Final = naming.series(sc.BULKHEAD_QUEUE_LIMIT)
_BULKHEAD_UTILIZATION: Final = naming.series(sc.BULKHEAD_UTILIZATION)
_BULKHEAD_QUEUE_UTILIZATION: Final = naming.series(sc.BULKHEAD_QUEUE_UTILIZATION)
_RECOVERY_ATTEMPTS: Final = naming.series(sc.RECOVERY_ATTEMPTS)
_ERROR_PATTERNS: Final = naming.series(sc.ERROR_PATTERNS)
_CHAOS_INJECTIONS: Final = naming.series(sc.CHAOS_INJECTIONS)
_STORE_DEGRADED: Final = naming.series(sc.STORE_DEGRADED)
_STORE_OUTAGES: Final = naming.series(sc.STORE_OUTAGES)
_CHAOS_KIND: Final = naming.label(sc.CHAOS_KIND)
_RELOADS: Final = naming.series(sc.RELOAD)
_RELOAD_OUTCOME: Final = naming.label(sc.RELOAD_OUTCOME)
_CONFIG_STALE: Final = naming.series(sc.CONFIG_STALE)
_CONFIG_FILE: Final = naming.label(sc.CONFIG_FILE)
_KEY: Final = naming.label(sc.KEY)
_OVERFLOW: Final = naming.label(sc.METRIC_OVERFLOW)
_METRIC: Final = "metric"
"""The label :data:`R_TELEMETRY_OVERFLOW` names the overflowing series with."""


def _record(level: str, series: str, operation: str, qualifier: str = "") -> str:
    """Name a recording rule ``level:metric:operation`` after the series it reads."""
    return f"{level}:{series.removesuffix('_total')}{qualifier}:{operation}"


# Recording rule names (``level:metric:operations``), read by the alerts and the dashboards.
R_EXECUTIONS_BY_OUTCOME: Final = _record("job_policy_outcome", _EXECUTIONS, f"rate{RATE_WINDOW}")
R_EXECUTIONS: Final = _record("job_policy", _EXECUTIONS, f"rate{RATE_WINDOW}")
R_SUCCESS_RATIO: Final = _record("job_policy", _EXECUTIONS, f"ratio_rate{RATE_WINDOW}", "_success")
R_RETRIES: Final = _record("job_policy", _RETRIES, f"rate{RATE_WINDOW}")
R_RETRY_RATIO: Final = _record("job_policy", _RETRIES, f"ratio_rate{RATE_WINDOW}", "_per_execution")
R_FALLBACKS: Final = _record("job_policy_name", _FALLBACKS, f"rate{RATE_WINDOW}")
R_FALLBACK_RATIO: Final = _record("job_policy_name", _FALLBACKS, f"ratio_rate{RATE_WINDOW}", "_per_execution")
R_TIMEOUTS: Final = _record("job_policy", _TIMEOUTS, f"rate{RATE_WINDOW}")
R_TIMEOUT_RATIO: Final = _record("job_policy", _TIMEOUTS, f"ratio_rate{RATE_WINDOW}", "_per_execution")
R_BREAKER_OPEN: Final = _record("job_name", _CB_STATE_SERIES, "count", "_not_closed")
"""Instances in which a breaker is open or half-open (the name predates ``disabled`` and
``metrics_only``, which are not closed either but let every call through: they count 0)."""
R_BREAKER_TRIPS: Final = _record(
    "job_name", _CB_TRANSITIONS, f"increase{BREAKER_FLAPPING_WINDOW}", "_to_open"
)
R_BREAKER_WOULD_TRIPS: Final = _record(
    "job_name", _CB_TRANSITIONS, f"increase{BREAKER_WOULD_OPEN_WINDOW}", "_would_open"
)
R_BULKHEAD_SATURATION: Final = _record("job_name", _BULKHEAD_ACTIVE, "ratio", "_saturation")
"""A bulkhead's share of its concurrency limit in use in its most loaded instance and key: read
from ``resilience.bulkhead.utilization`` (the most saturated key of a keyed policy, whose
``active`` and ``limit`` are summed over its keys), else (an exporter older than that gauge)
``active`` over ``limit``. Named as it was when it read only those."""
R_BULKHEAD_QUEUE_SATURATION: Final = _record("job_name", _BULKHEAD_QUEUED, "ratio", "_saturation")
"""A bulkhead's share of its queue limit in use in its most loaded instance and key: read from
``resilience.bulkhead.queue_utilization`` (the most saturated key of a keyed policy, whose
``queued`` and queue limit are summed over its keys), else (an exporter older than that gauge)
``queued`` over the queue limit. Named as it was when it read only those."""
R_BULKHEAD_REJECTIONS: Final = _record("job_policy_name", _REJECTIONS, f"rate{RATE_WINDOW}", "_bulkhead")
R_BULKHEAD_REJECTION_RATIO: Final = _record(
    "job_policy_name", _REJECTIONS, f"ratio_rate{RATE_WINDOW}", "_bulkhead_per_execution"
)
R_RECOVERY_ATTEMPTS: Final = _record(
    "job_policy_name_result", _RECOVERY_ATTEMPTS, f"increase{RECOVERY_WINDOW}"
)
R_RECOVERY_RATE: Final = _record(
    "job_policy_name", _RECOVERY_ATTEMPTS, f"ratio_increase{RECOVERY_WINDOW}", "_success"
)
R_RECOVERY_RATE_SPARSE: Final = _record(
    "job_policy_name", _RECOVERY_ATTEMPTS, f"ratio_increase{RECOVERY_SPARSE_WINDOW}", "_success"
)
R_RETRY_BUDGET_DENIALS: Final = _record(
    "job_policy_name", _RETRY_EXHAUSTED, f"increase{RETRY_BUDGET_WINDOW}", "_budget"
)
"""Retries each retry budget denied within :data:`RETRY_BUDGET_WINDOW` (executions given up with
stop reason ``budget``), by service, policy and retry name, each series' first included."""
R_RATE_LIMITED: Final = _record("job_policy_name", _REJECTIONS, f"rate{RATE_WINDOW}", "_rate_limited")
"""Calls each policy's rate limiter shed per second over :data:`RATE_WINDOW`."""
R_RATE_LIMITED_RATIO: Final = _record(
    "job_policy_name", _REJECTIONS, f"ratio_rate{RATE_WINDOW}", "_rate_limited_per_execution"
)
"""The share of each policy's executions its rate limiter shed over :data:`RATE_WINDOW`."""
R_RATE_LIMITER_PERMITS: Final = _record("job_name", _RL_PERMITS, f"rate{RATE_WINDOW}")
"""Permits asked of each rate limiter per second over :data:`RATE_WINDOW`, whatever the answer."""
R_RATE_LIMITER_REFUSED_RATIO: Final = _record(
    "job_name", _RL_PERMITS, f"ratio_rate{RATE_WINDOW}", "_rejected_per_request"
)
"""The share of the permits asked of each rate limiter that it refused over :data:`RATE_WINDOW`
(``try_acquire`` refusals included): the one measure of a limiter that runs no execution."""
R_ERROR_PATTERNS: Final = _record(
    "job_policy_name_operation_error", _ERROR_PATTERNS, f"increase{ERROR_PATTERN_WINDOW}"
)
R_CHAOS_INJECTIONS: Final = _record("job_policy", _CHAOS_INJECTIONS, f"increase{CHAOS_DRILL_WINDOW}")
R_STORE_DEGRADED: Final = _record("job_name", _STORE_DEGRADED, "sum")
"""Instances of each service whose shared store (by namespace) is unreachable now."""
R_STORE_OUTAGES: Final = _record("job_name", _STORE_OUTAGES, f"increase{STORE_FLAPPING_WINDOW}")
"""The most outages of each shared store (by namespace) one instance counted within
:data:`STORE_FLAPPING_WINDOW`, each series' first included."""
R_RELOAD_FAILURES: Final = _record("job_policy_error", _RELOADS, f"increase{RELOAD_FAILED_WINDOW}", "_failed")
"""Refused reloads of each named policy within :data:`RELOAD_FAILED_WINDOW`, by ``error.type``,
each series' first included: above 0, the policy runs an older configuration than its file."""
R_CONFIG_STALE: Final = _record("job_file", _CONFIG_STALE, "sum")
"""Instances of each service whose watch refused the last version of a configuration file (by its
path) and applied none since: above 0, they run an older configuration than the file on disk."""
"""Faults, delays and results the chaos links of each policy injected within
:data:`CHAOS_DRILL_WINDOW`, each series' first included: above 0, the policy is under a drill."""
R_TELEMETRY_OVERFLOW: Final = _record(
    "job_metric", "resilience", f"increase{TELEMETRY_OVERFLOW_WINDOW}", "_series_overflow"
)
"""How much each series grew in the SDK's cardinality-limit overflow series within
:data:`TELEMETRY_OVERFLOW_WINDOW`, by service and series (``metric``), each series' first
included."""

# Alert names; each has a runbook, docs/runbooks/<name>.md.
A_BREAKER_OPEN: Final = "ResilienceCircuitBreakerOpen"
A_BREAKER_FLAPPING: Final = "ResilienceCircuitBreakerFlapping"
A_BREAKER_WOULD_OPEN: Final = "ResilienceCircuitBreakerWouldOpen"
A_BULKHEAD_FULL: Final = "ResilienceBulkheadFull"
A_BULKHEAD_NEAR: Final = "ResilienceBulkheadNearSaturation"
A_RECOVERY_LOW: Final = "ResilienceRecoveryRateLow"
A_ERROR_PATTERN: Final = "ResilienceErrorPatternRepeated"
A_RETRY_STORM: Final = "ResilienceRetryStorm"
A_FALLBACK_HIGH: Final = "ResilienceHighFallbackRate"
A_TIMEOUTS: Final = "ResilienceTimeoutsRising"
A_RETRY_BUDGET: Final = "ResilienceRetryBudgetExhausted"
A_RATE_LIMITED: Final = "ResilienceRateLimitedSustained"
A_RATE_LIMITER_REFUSING: Final = "ResilienceRateLimiterRefusing"
A_CHAOS_DRILL: Final = "ResilienceChaosDrillActive"
A_RELOAD_FAILED: Final = "ResilienceReloadFailed"
A_CONFIG_STALE: Final = "ResilienceConfigStale"
A_STORE_DEGRADED: Final = "ResilienceSharedStoreDegraded"
A_STORE_FLAPPING: Final = "ResilienceSharedStoreFlapping"
A_TELEMETRY_OVERFLOW: Final = "ResilienceTelemetryOverflow"
ALERT_NAMES: Final = (
    A_BREAKER_OPEN,
    A_BREAKER_FLAPPING,
    A_BREAKER_WOULD_OPEN,
    A_BULKHEAD_FULL,
    A_BULKHEAD_NEAR,
    A_RECOVERY_LOW,
    A_ERROR_PATTERN,
    A_RETRY_STORM,
    A_FALLBACK_HIGH,
    A_TIMEOUTS,
    A_RETRY_BUDGET,
    A_RATE_LIMITED,
    A_RATE_LIMITER_REFUSING,
    A_CHAOS_DRILL,
    A_RELOAD_FAILED,
    A_CONFIG_STALE,
    A_STORE_DEGRADED,
    A_STORE_FLAPPING,
    A_TELEMETRY_OVERFLOW,
)
"""Every alert name, in the order of the rules file."""
RULE_SEVERITIES: Final = checks.RULE_SEVERITIES
"""The ``severity`` labels of the rules: ``info`` (a notice, :data:`A_CHAOS_DRILL`), ``warning``
(chat) and ``critical`` (pager), the in-process alerts' two."""


def _sel(series: str, *matchers: str) -> str:
    """A selector ``series{m1,m2}`` (no braces without matchers)."""
    return f"{series}{{{', '.join(matchers)}}}" if matchers else series


def _eq(label: str, item: str) -> str:
    return f'{label}="{item}"'


def _re(label: str, regex: str) -> str:
    return f'{label}=~"{regex}"'


def _events(selector: str, window: str, by: Sequence[str], scale: float = 1.0) -> str:
    """Events counted by ``selector`` within ``window``, including each series' first one.

    A series with a sample ``window`` ago counts its ``increase()``. One without is new to the
    window and counts its whole value (a series born at its first increment is already at 1),
    unless Prometheus saw it in the :data:`SERIES_HISTORY` before the window at no more than its
    lowest value in the window: then it is the same counter after a gap in the scrapes, and counts
    what it gained since. ``scale`` is the rules' time scale (it scales the history).
    """
    history = scale_duration(SERIES_HISTORY, scale)
    new = f"({selector} unless {selector} offset {window})"
    before = f"last_over_time({selector}[{history}] offset {window})"
    restarted = f"min_over_time({selector}[{window}]) < {before}"
    return (
        f"sum by ({', '.join(by)}) (\n    (increase({selector}[{window}]) unless {new})\n"
        f"  or\n    ({new} - {before} unless {restarted})\n  or\n    {new}\n)"
    )


def _exact(value: float) -> str:
    """``value`` as the rules write a threshold: short (``0.5``, ``3``), yet every digit kept.

    ``:g`` alone keeps six significant digits, so an option set to ``0.1234567`` would be
    compared as ``0.123457``.
    """
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _pct(ratio: float) -> str:
    """``ratio`` as a percentage, every digit kept (``0.125`` is ``12.5%``, ``0.001`` is ``0.1%``)."""
    return f"{_exact(round(ratio * 100, 9))}%"


_DURATION: Final = re.compile(r"([0-9]+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "y": 31_536_000}
_PROMETHEUS_DURATION: Final = re.compile(
    r"(?:[0-9]+y)?(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?(?:[0-9]+ms)?"
)
"""What Prometheus reads as a duration (``model.ParseDuration``): each unit at most once, largest first."""


def _seconds(duration: str) -> float:
    """The length of a Prometheus duration (one :func:`_is_duration` accepts), in seconds."""
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(duration))


_UNIT_MILLIS: Final = {unit: round(seconds * 1000) for unit, seconds in _UNIT_SECONDS.items()}
_LONGEST_NANOS: Final = 2**63 - 1
"""Prometheus holds a duration in int64 nanoseconds (about 292 years); a longer one is out of range."""


def _is_duration(text: str) -> bool:
    """Return whether ``text`` is a duration Prometheus accepts (``"5m"``, ``"1h30m"``; not ``"30s5m"``).

    Nor one longer than Prometheus can hold (:data:`_LONGEST_NANOS`, about 292 years).
    """
    if not text or _PROMETHEUS_DURATION.fullmatch(text) is None:
        return False
    return _millis(text) * 1_000_000 <= _LONGEST_NANOS


def _millis(duration: str) -> int:
    """The length of a Prometheus duration (one :data:`_PROMETHEUS_DURATION` matches), in milliseconds."""
    return sum(int(n) * _UNIT_MILLIS[unit] for n, unit in _DURATION.findall(duration))


MIN_TIME_SCALE: Final = 1 / _millis(EVALUATION_INTERVAL)
"""The smallest time scale of the shipped rules, 1/60000: 1 ms per :data:`EVALUATION_INTERVAL`,
which every scaled group is evaluated at, and which no duration of the shipped rules is shorter
than. Below it :func:`scale_duration` refuses a duration scaled under 1 ms; a ``for`` of
:class:`RuleOptions` shorter than a minute raises it (1 ms per that duration)."""


class TimeScaleError(ValueError):
    """A time scale the rules refuse: out of ``(0, 1]``, or one that scales a duration under 1 ms.

    ``str(error)`` names the parameter, ``time_scale``; :meth:`naming` words the message with
    another name: a command line's ``--time-scale``.

    Attributes:
        wording: The message with ``{name}`` where the parameter's name goes.
    """

    _NAME: Final = "{name}"

    def __init__(self, wording: str) -> None:
        super().__init__(wording.replace(self._NAME, "time_scale"))
        self.wording = wording

    def naming(self, name: str) -> str:
        """Return the message with ``name`` for the parameter (``"--time-scale"``)."""
        return self.wording.replace(self._NAME, name)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy with the wording and the notes (``ValueError``'s own keeps its message only)."""
        return (type(self), (self.wording,), self.__dict__)


def check_time_scale(time_scale: float) -> float:
    """Return ``time_scale`` as a float if ``0 < time_scale <= 1``; raise otherwise.

    The one rule of a rules file's time scale: :func:`render_rules` and the ``--time-scale``
    option of ``otel-resilience export alerts`` (:func:`~otel_resilience.ops.export.add_generator_options`).

    Raises:
        TypeError: If ``time_scale`` is not a number.
        TimeScaleError: If it is not in ``(0, 1]``.
    """
    if isinstance(time_scale, bool) or not isinstance(time_scale, (int, float)):
        msg = f"time_scale must be a number, got {time_scale!r}"
        raise TypeError(msg)
    if not math.isfinite(time_scale) or not 0 < time_scale <= 1:
        msg = f"{{name}} must be > 0 and <= 1 (1 = production timing), got {time_scale!r}"
        raise TimeScaleError(msg)
    return float(time_scale)


def scale_duration(duration: str, time_scale: float) -> str:
    """Return the Prometheus ``duration`` multiplied by ``time_scale``.

    ``scale_duration("5m", 0.05) == "15s"``; a result that is not a whole number of seconds is
    written in whole milliseconds (``"1m"`` at ``0.01`` is ``"600ms"``). At ``time_scale == 1``,
    and for a zero duration (``"0s"``: fire at once), the duration is returned unchanged. A
    result under 1 ms, the shortest duration written, is refused rather than raised to 1 ms:
    that would give durations the rules keep apart (a warning's ``for`` and its critical's) one
    length, and fire the page with the warning.

    Args:
        duration: A Prometheus duration such as ``"5m"`` or ``"1h30m"``.
        time_scale: Real seconds per production second, ``0 < time_scale <= 1``.

    Returns:
        The scaled duration, at least ``"1ms"`` unless ``duration`` is zero.

    Raises:
        TypeError: If ``time_scale`` is not a number.
        TimeScaleError: If ``time_scale`` is out of range or would make ``duration`` shorter than
            1 ms.
        ValueError: If ``duration`` is not a duration.
    """
    scale = check_time_scale(time_scale)
    if not _is_duration(duration):
        msg = f"duration must be a Prometheus duration such as '5m', got {duration!r}"
        raise ValueError(msg)
    if scale == 1.0:
        return duration
    production = _millis(duration)
    if production == 0:
        return duration
    scaled = production * scale
    if scaled < 1 and not math.isclose(scaled, 1):
        msg = (
            f"{{name}}={time_scale!r} makes {duration!r} {_under_one(scaled)} ms: under 1 ms, the shortest "
            f"duration the rules write; use a {{name}} of at least {1 / production:.6g} "
            f"(1 ms per {duration})"
        )
        raise TimeScaleError(msg)
    millis = round(scaled)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _under_one(scaled: float) -> str:
    """``scaled`` (below 1) in as few digits as show it below 1 (``:g`` wrote 0.99999999 as ``1``)."""
    return next(text for digits in range(6, 18) if float(text := f"{scaled:.{digits}g}") < 1)


@dataclass(frozen=True, slots=True)
class RecordingRule:
    """One recording rule.

    Attributes:
        record: The recorded series name (``level:metric:operations``).
        expr: Its PromQL.
    """

    record: str
    expr: str

    def as_dict(self) -> dict[str, Any]:
        """Return the rule as it appears in the rules file."""
        return {"record": self.record, "expr": self.expr}


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alerting rule.

    Attributes:
        alert: The alert name (also its runbook's file name).
        expr: Its PromQL.
        for_: How long the expression must hold before the alert fires.
        severity: ``warning`` (chat) or ``critical`` (pager).
        summary: One line; Go template over ``$labels`` and ``$value``.
        description: The details: what the expression measured, with the value and the policy
            (or instance name).
        runbook_url_base: Where the runbook ``<alert>.md`` is browsed.
    """

    alert: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook_url_base: str = RUNBOOK_BASE_URL

    @property
    def runbook_url(self) -> str:
        """The runbook of this alert."""
        return f"{self.runbook_url_base}/{self.alert}.md"

    def as_dict(self) -> dict[str, Any]:
        """Return the rule as it appears in the rules file."""
        return {
            "alert": self.alert,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url,
            },
        }


Rules = tuple[tuple[str, tuple[RecordingRule | AlertRule, ...]], ...]


def _traffic_guard(o: RuleOptions) -> str:
    """The minimum-traffic guard (``and on (job, policy) ...``) of an alert on a share of executions.

    A share of a few calls is noise: the alert judges a policy only while it runs at least
    ``min_execution_rate`` executions per second (:data:`R_EXECUTIONS`).
    """
    return f"and on ({o.job_label}, {_POLICY}) {R_EXECUTIONS} >= {_exact(o.min_execution_rate)}"


def _execution_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    job = o.job_label
    w = scale_duration(RATE_WINDOW, scale)
    ratio_for = scale_duration(o.ratio_alert_for, scale)
    outcome_success = naming.one_of(sc.OUTCOME, "success", "recovered")
    guard = _traffic_guard(o)
    traffic = f"with at least {_exact(o.min_execution_rate)} executions/s"
    return (
        RecordingRule(
            R_EXECUTIONS_BY_OUTCOME, f"sum by ({job}, {_POLICY}, {_OUTCOME}) (rate({_EXECUTIONS}[{w}]))"
        ),
        RecordingRule(R_EXECUTIONS, f"sum by ({job}, {_POLICY}) ({R_EXECUTIONS_BY_OUTCOME})"),
        RecordingRule(
            R_SUCCESS_RATIO,
            f"sum by ({job}, {_POLICY}) ({_sel(R_EXECUTIONS_BY_OUTCOME, _re(_OUTCOME, outcome_success))})\n"
            f"/\n({R_EXECUTIONS} > 0)",
        ),
        RecordingRule(R_RETRIES, f"sum by ({job}, {_POLICY}) (rate({_RETRIES}[{w}]))"),
        RecordingRule(R_RETRY_RATIO, f"{R_RETRIES} / ({R_EXECUTIONS} > 0)"),
        RecordingRule(R_FALLBACKS, f"sum by ({job}, {_POLICY}, {_NAME}) (rate({_FALLBACKS}[{w}]))"),
        RecordingRule(
            R_FALLBACK_RATIO, f"{R_FALLBACKS}\n/ on ({job}, {_POLICY}) group_left ()\n({R_EXECUTIONS} > 0)"
        ),
        RecordingRule(R_TIMEOUTS, f"sum by ({job}, {_POLICY}) (rate({_TIMEOUTS}[{w}]))"),
        RecordingRule(R_TIMEOUT_RATIO, f"{R_TIMEOUTS} / ({R_EXECUTIONS} > 0)"),
        AlertRule(
            A_RETRY_STORM,
            f"{R_RETRY_RATIO} > {_exact(o.retry_storm_ratio)}\n{guard}",
            ratio_for,
            "warning",
            f"Retry storm in policy {{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}}",
            f"Policy {{{{ $labels.resilience_policy }}}} of service {{{{ $labels.{job} }}}} made "
            '{{ printf "%.2f" $value }} retries per execution over the last ' + w + " (above "
            f"{_exact(o.retry_storm_ratio)} for {ratio_for}, {traffic}): retries multiply the load on a "
            "dependency that is already struggling.",
            o.runbook_url_base,
        ),
        AlertRule(
            A_FALLBACK_HIGH,
            f"{R_FALLBACK_RATIO} > {_exact(o.fallback_ratio)}\n{guard}",
            ratio_for,
            "warning",
            f"Fallback rate high in policy {{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}}",
            "Fallback {{ $labels.resilience_name }} ran for {{ $value | humanizePercentage }} of "
            "the executions of policy {{ $labels.resilience_policy }} in service "
            f"{{{{ $labels.{job} }}}} "
            f"over the last {w} (above {_pct(o.fallback_ratio)} for {ratio_for}, {traffic}): "
            "users get degraded answers, or none where the fallback failed too.",
            o.runbook_url_base,
        ),
        AlertRule(
            A_TIMEOUTS,
            f"{R_TIMEOUT_RATIO} > {_exact(o.timeout_ratio)}\n{guard}",
            ratio_for,
            "warning",
            f"Timeouts rising in policy {{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}}",
            "{{ $value | humanizePercentage }} timeouts per execution in policy "
            f"{{{{ $labels.resilience_policy }}}} of service {{{{ $labels.{job} }}}} over the last "
            f"{w} (above {_pct(o.timeout_ratio)} for {ratio_for}, {traffic}): the dependency is "
            "slow or hangs.",
            o.runbook_url_base,
        ),
    )


def _as_policy(expr: str) -> str:
    """Copy ``resilience_name`` into ``resilience_policy``, for Alertmanager's inhibitions.

    The manager names a policy's breaker and bulkhead after the policy, so the copy lets an open
    breaker mute the other alerts of the same policy.
    """
    return f'label_replace(\n  {expr},\n  "{_POLICY}", "$1", "{_NAME}", "(.+)"\n)'


def _transitions(previous: str, state: str) -> str:
    """The transition counter's series from ``previous`` to ``state`` (any reason)."""
    return _sel(
        _CB_TRANSITIONS,
        _eq(_CB_PREVIOUS, naming.value(sc.CB_PREVIOUS_STATE, previous)),
        _eq(_CB_STATE, naming.value(sc.CB_STATE, state)),
    )


def _breaker_acting(job: str, window: str) -> str:
    """Breakers (by service and name) that turned a call away or failed a probe within ``window``.

    Only a call moves a breaker on: one that no call reaches any more stays half-open for good once
    its timeout elapsed (and a keyed policy's key no longer called, beside keys still called, shows
    its half-open state under the breaker's name), rejecting nothing. The rejection reasons are the
    registry's, never typed here.
    """
    reasons = naming.one_of(sc.REJECTION_REASON, *sc.REJECTION_REASONS_BY_PATTERN["circuit_breaker"])
    rejected = _sel(_REJECTIONS, _re(_REJECTION_REASON, reasons))
    probe_failed = _transitions("half_open", "open")
    return (
        f"sum by ({job}, {_NAME}) (\n      rate({rejected}[{window}])\n    or\n"
        f"      rate({probe_failed}[{window}])\n  ) > 0"
    )


def _breaker_trips(trips: str, window: str, job: str, scale: float) -> str:
    """The trips in ``window`` of the breaker of each service and name that tripped most.

    Counted per breaker: per instance (each process's breaker is its own: one trip in each of
    three replicas is three breakers tripping once, not one tripping three times) and per key (a
    keyed policy's keys each have a breaker of their own under the policy's name; their
    transitions carry ``resilience.key`` where the policy puts its keys on its metrics), then the
    most any breaker counted. A breaker whose state is shared (``CircuitBreakerConfig(store=...)``:
    it reports :data:`_CB_SHARED`) is one breaker over the replicas, and every replica takes, and
    reports, each trip of the cluster: the most any instance reported is the cluster's count too
    (a replica that started since, or ran on local state for a while, reports fewer).
    """
    per_breaker = _events(trips, window, (job, naming.INSTANCE_LABEL, _NAME, _KEY), scale)
    return f"max by ({job}, {_NAME}) (\n{textwrap.indent(per_breaker, '  ')}\n)"


def _breaker_open_alert(o: RuleOptions, scale: float, duration: str, severity: str) -> AlertRule:
    job = o.job_label
    duration = scale_duration(duration, scale)
    window = scale_duration(RATE_WINDOW, scale)
    return AlertRule(
        A_BREAKER_OPEN,
        _as_policy(f"{R_BREAKER_OPEN} > 0\n  and on ({job}, {_NAME}) {_breaker_acting(job, window)}"),
        duration,
        severity,
        f"Circuit breaker {{{{ $labels.resilience_name }}}} is open in {{{{ $labels.{job} }}}}",
        f"Circuit breaker {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} has "
        f"not been closed (open or half-open) for more than {duration} in "
        '{{ printf "%.0f" $value }} instance(s), and rejected calls or failed a probe within the last '
        f"{window}: calls to its dependency are rejected at once "
        "(CircuitOpenError) or answered by a fallback.",
        o.runbook_url_base,
    )


def _breaker_would_open_alert(o: RuleOptions, scale: float) -> AlertRule:
    """A ``metrics_only`` breaker that keeps making would-be trips: enforcing, it would be opening."""
    job = o.job_label
    window = scale_duration(BREAKER_WOULD_OPEN_WINDOW, scale)
    would_open_for = scale_duration(o.breaker_would_open_for, scale)
    metrics_only = _sel(_CB_STATE_SERIES, _eq(_CB_STATE, naming.value(sc.CB_STATE, "metrics_only")))
    return AlertRule(
        A_BREAKER_WOULD_OPEN,
        f"{R_BREAKER_WOULD_TRIPS} > 0\nand on ({job}, {_NAME}) {metrics_only} == 1",
        would_open_for,
        "warning",
        f"Circuit breaker {{{{ $labels.resilience_name }}}} would be opening in {{{{ $labels.{job} }}}} "
        "(metrics_only)",
        f"Circuit breaker {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} runs in "
        'metrics_only mode and would have opened {{ printf "%.0f" $value }} time(s) in the last '
        f"{window} (its failure rate, slow-call rate or consecutive failures reached their "
        f"threshold), and has kept doing so for {would_open_for}: enforcing, it would be rejecting "
        "calls with CircuitOpenError. No call was rejected.",
        o.runbook_url_base,
    )


def _breaker_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    job = o.job_label
    flapping_window = scale_duration(BREAKER_FLAPPING_WINDOW, scale)
    not_closed = _sel(_CB_STATE_SERIES, _re(_CB_STATE, naming.one_of(sc.CB_STATE, "open", "half_open")))
    trips = _transitions("closed", "open")
    would_trips = _transitions("metrics_only", "metrics_only")
    would_window = scale_duration(BREAKER_WOULD_OPEN_WINDOW, scale)
    return (
        RecordingRule(R_BREAKER_OPEN, f"sum by ({job}, {_NAME}) ({not_closed})"),
        RecordingRule(R_BREAKER_TRIPS, _breaker_trips(trips, flapping_window, job, scale)),
        RecordingRule(R_BREAKER_WOULD_TRIPS, _events(would_trips, would_window, (job, _NAME), scale)),
        _breaker_open_alert(o, scale, o.breaker_open_warning_for, "warning"),
        _breaker_open_alert(o, scale, o.breaker_open_critical_for, "critical"),
        AlertRule(
            A_BREAKER_FLAPPING,
            f"{R_BREAKER_TRIPS} >= {o.breaker_flapping_trips}",
            scale_duration(o.breaker_flapping_for, scale),
            "warning",
            f"Circuit breaker {{{{ $labels.resilience_name }}}} is flapping in {{{{ $labels.{job} }}}}",
            f"Circuit breaker {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} tripped "
            'from closed to open {{ printf "%.0f" $value }} times in the last '
            f"{flapping_window} (threshold {o.breaker_flapping_trips}), counted per breaker: in one "
            "instance (once over the replicas for a breaker shared on Redis), and per key for a keyed "
            "policy that puts its keys on its metrics: the dependency keeps failing again right after "
            "it recovers.",
            o.runbook_url_base,
        ),
        _breaker_would_open_alert(o, scale),
    )


def _bulkhead_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    job = o.job_label
    w = scale_duration(RATE_WINDOW, scale)
    near_for = scale_duration(o.bulkhead_near_for, scale)
    full_for = scale_duration(o.bulkhead_full_for, scale)
    # Every rejection a bulkhead reports (full, or a queue timeout), as the in-process
    # BULKHEAD_FULL alert counts them: the reasons are the registry's, never typed here.
    full = naming.one_of(sc.REJECTION_REASON, *sc.REJECTION_REASONS_BY_PATTERN["bulkhead"])
    rejections = _sel(_REJECTIONS, _re(_REJECTION_REASON, full))
    return (
        RecordingRule(
            R_BULKHEAD_SATURATION,
            f"max by ({job}, {_NAME}) (\n  {_BULKHEAD_UTILIZATION}\nor\n"
            f"  {_BULKHEAD_ACTIVE} / ({_BULKHEAD_LIMIT} > 0)\n)",
        ),
        RecordingRule(
            R_BULKHEAD_QUEUE_SATURATION,
            f"max by ({job}, {_NAME}) (\n  {_BULKHEAD_QUEUE_UTILIZATION}\nor\n"
            f"  {_BULKHEAD_QUEUED} / ({_BULKHEAD_QUEUE_LIMIT} > 0)\n)",
        ),
        RecordingRule(R_BULKHEAD_REJECTIONS, f"sum by ({job}, {_POLICY}, {_NAME}) (rate({rejections}[{w}]))"),
        RecordingRule(
            R_BULKHEAD_REJECTION_RATIO,
            f"{R_BULKHEAD_REJECTIONS}\n/ on ({job}, {_POLICY}) group_left ()\n({R_EXECUTIONS} > 0)",
        ),
        AlertRule(
            A_BULKHEAD_FULL,
            f"{R_BULKHEAD_REJECTION_RATIO} > {_exact(o.bulkhead_rejection_ratio)}\n{_traffic_guard(o)}",
            full_for,
            "warning",
            f"Bulkhead {{{{ $labels.resilience_name }}}} rejects calls in {{{{ $labels.{job} }}}}",
            f"Bulkhead {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} rejected "
            "{{ $value | humanizePercentage }} of the executions of policy "
            f"{{{{ $labels.resilience_policy }}}} (full, or queue timeout) over the last {w} "
            f"(above {_pct(o.bulkhead_rejection_ratio)} for {full_for}, with at least "
            f"{_exact(o.min_execution_rate)} executions/s): callers get BulkheadFullError, "
            "BulkheadTimeoutError or a fallback.",
            o.runbook_url_base,
        ),
        AlertRule(
            A_BULKHEAD_NEAR,
            _as_policy(
                f"avg_over_time({R_BULKHEAD_SATURATION}[{near_for}]) "
                f">= {_exact(o.bulkhead_near_saturation)}\n"
                f"  and {R_BULKHEAD_SATURATION} offset {near_for}"
            ),
            "0s",
            "warning",
            f"Bulkhead {{{{ $labels.resilience_name }}}} is near saturation in {{{{ $labels.{job} }}}}",
            f"Bulkhead {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} has had "
            "{{ $value | humanizePercentage }} of its concurrency limit in use on average over the "
            f"last {near_for} (at least {_pct(o.bulkhead_near_saturation)}), in its most loaded "
            "instance (for a keyed policy, its most saturated key).",
            o.runbook_url_base,
        ),
    )


def _recovery_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    job = o.job_label
    w = scale_duration(RECOVERY_WINDOW, scale)
    sparse = scale_duration(RECOVERY_SPARSE_WINDOW, scale)
    patterns_window = scale_duration(ERROR_PATTERN_WINDOW, scale)
    by = (job, _POLICY, _NAME)
    on = f"on ({', '.join(by)})"
    success = _eq(_RECOVERY_RESULT, naming.value(sc.RECOVERY_RESULT, "success"))

    def share(succeeded: str, acted: str) -> str:
        return f"(\n  {succeeded}\nor\n  {acted} * 0\n)\n/\n({acted} > 0)"

    def total(actions: str) -> str:
        return f"sum by ({', '.join(by)}) ({actions})"

    # Two modules' functions of one name (users.fetch, orders.fetch) are two patterns of one
    # operation: the module, where the operation is named after a function, tells them apart.
    module = f"{{{{ with $labels.{_OPERATION_MODULE} }}}} (module {{{{ . }}}}){{{{ end }}}}"

    return (
        RecordingRule(R_RECOVERY_ATTEMPTS, _events(_RECOVERY_ATTEMPTS, w, (*by, _RECOVERY_RESULT), scale)),
        RecordingRule(
            R_RECOVERY_RATE,
            share(total(_sel(R_RECOVERY_ATTEMPTS, success)), total(R_RECOVERY_ATTEMPTS)),
        ),
        RecordingRule(
            R_RECOVERY_RATE_SPARSE,
            share(
                _events(_sel(_RECOVERY_ATTEMPTS, success), sparse, by, scale),
                _events(_RECOVERY_ATTEMPTS, sparse, by, scale),
            ),
        ),
        RecordingRule(
            R_ERROR_PATTERNS,
            _events(
                _ERROR_PATTERNS,
                patterns_window,
                (job, _POLICY, _NAME, _OPERATION, _OPERATION_MODULE, _ERROR_TYPE),
                scale,
            ),
        ),
        AlertRule(
            A_RECOVERY_LOW,
            f"(\n    {R_RECOVERY_RATE} < {_exact(o.recovery_rate_threshold)}\n"
            f"  and {on}\n    sum by ({', '.join(by)}) ({R_RECOVERY_ATTEMPTS})"
            f" >= {o.recovery_min_attempts}\n)\n"
            f"or\n(\n    {R_RECOVERY_RATE_SPARSE} == 0\n"
            f"  and on ({job}, {_POLICY})\n    {R_SUCCESS_RATIO} < {_exact(o.recovery_rate_threshold)}\n"
            f"  {_traffic_guard(o)}\n)",
            scale_duration(o.recovery_for, scale),
            "warning",
            f"Recovery failing for policy {{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}}",
            f"The recovery rules ({{{{ $labels.resilience_name }}}}) of policy "
            f"{{{{ $labels.resilience_policy }}}} in service {{{{ $labels.{job} }}}} recovered "
            f"{{{{ $value | humanizePercentage }}}} of the errors they acted on: under "
            f"{_pct(o.recovery_rate_threshold)} of at least {o.recovery_min_attempts} actions in the "
            f"last {w}, or none of the actions of the last {sparse} while under "
            f"{_pct(o.recovery_rate_threshold)} of the policy's executions succeed (with at least "
            f"{_exact(o.min_execution_rate)} executions/s).",
            o.runbook_url_base,
        ),
        AlertRule(
            A_ERROR_PATTERN,
            f"{R_ERROR_PATTERNS} > 0",
            scale_duration(o.error_pattern_for, scale),
            "warning",
            f"Repeated {{{{ $labels.error_type }}}} in {{{{ $labels.resilience_operation }}}}{module} of "
            f"{{{{ $labels.{job} }}}}",
            "{{ $labels.error_type }} keeps repeating in operation {{ $labels.resilience_operation }}"
            f"{module} of policy "
            "{{ $labels.resilience_policy }} (recovery rules {{ $labels.resilience_name }}, "
            f'service {{{{ $labels.{job} }}}}): {{{{ printf "%.0f" $value }}}} pattern(s) detected in '
            f"the last {patterns_window}.",
            o.runbook_url_base,
        ),
    )


def _retry_budget_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    """The denials of each retry budget, and the alert on a budget that keeps denying retries."""
    job = o.job_label
    window = scale_duration(RETRY_BUDGET_WINDOW, scale)
    budget_for = scale_duration(o.retry_budget_for, scale)
    denied = _sel(_RETRY_EXHAUSTED, _eq(_RETRY_STOP_REASON, naming.value(sc.RETRY_STOP_REASON, "budget")))
    return (
        RecordingRule(R_RETRY_BUDGET_DENIALS, _events(denied, window, (job, _POLICY, _NAME), scale)),
        AlertRule(
            A_RETRY_BUDGET,
            f"{R_RETRY_BUDGET_DENIALS} > 0",
            budget_for,
            "warning",
            f"Retry budget exhausted for retry {{{{ $labels.resilience_name }}}} in policy "
            f"{{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}}",
            f"The retry budget of retry {{{{ $labels.resilience_name }}}} in policy "
            f"{{{{ $labels.resilience_policy }}}} of service {{{{ $labels.{job} }}}} denied "
            '{{ printf "%.0f" $value }} retries in the last ' + window + ", and has kept denying "
            f"retries for {budget_for}: the dependency fails often enough that retries are being "
            "shed (they would have multiplied its load): those executions gave up with the error they held.",
            o.runbook_url_base,
        ),
    )


def _rate_limiter_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    """The calls each policy's rate limiter shed, their share, and the alert on sustained shedding.

    Then the permits each limiter refused, their share, and the alert on a limiter that runs no
    execution (``try_acquire``, a keyed limiter used alone) refusing as much: the same share and ``for``.
    """
    job = o.job_label
    w = scale_duration(RATE_WINDOW, scale)
    limited_for = scale_duration(o.rate_limited_for, scale)
    shed = _sel(_REJECTIONS, _eq(_REJECTION_REASON, naming.value(sc.REJECTION_REASON, "rate_limited")))
    refused = _sel(_RL_PERMITS, _eq(_RL_PERMIT_RESULT, naming.value(sc.RL_PERMIT_RESULT, "rejected")))
    return (
        RecordingRule(R_RATE_LIMITED, f"sum by ({job}, {_POLICY}, {_NAME}) (rate({shed}[{w}]))"),
        RecordingRule(
            R_RATE_LIMITED_RATIO,
            f"{R_RATE_LIMITED}\n/ on ({job}, {_POLICY}) group_left ()\n({R_EXECUTIONS} > 0)",
        ),
        AlertRule(
            A_RATE_LIMITED,
            f"{R_RATE_LIMITED_RATIO} > {_exact(o.rate_limited_ratio)}\n{_traffic_guard(o)}",
            limited_for,
            "warning",
            f"Rate limiter {{{{ $labels.resilience_name }}}} keeps shedding calls in {{{{ $labels.{job} }}}}",
            f"Rate limiter {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} shed "
            "{{ $value | humanizePercentage }} of the executions of policy "
            f"{{{{ $labels.resilience_policy }}}} over the last {w} (above {_pct(o.rate_limited_ratio)} "
            f"for {limited_for}, with at least {_exact(o.min_execution_rate)} executions/s): callers get "
            "RateLimitedError or a fallback's answer; a caller sends more than the limit allows, or the "
            "limit is below the real traffic.",
            o.runbook_url_base,
        ),
        RecordingRule(R_RATE_LIMITER_PERMITS, f"sum by ({job}, {_NAME}) (rate({_RL_PERMITS}[{w}]))"),
        RecordingRule(
            R_RATE_LIMITER_REFUSED_RATIO,
            f"sum by ({job}, {_NAME}) (rate({refused}[{w}]))\n/ on ({job}, {_NAME})\n"
            f"({R_RATE_LIMITER_PERMITS} > 0)",
        ),
        AlertRule(
            A_RATE_LIMITER_REFUSING,
            f"{R_RATE_LIMITER_REFUSED_RATIO} > {_exact(o.rate_limited_ratio)}\n"
            f"and on ({job}, {_NAME}) {R_RATE_LIMITER_PERMITS} >= {_exact(o.min_execution_rate)}\n"
            f"unless on ({job}, {_NAME}) {R_RATE_LIMITED}",
            limited_for,
            "warning",
            f"Rate limiter {{{{ $labels.resilience_name }}}} keeps refusing permits in "
            f"{{{{ $labels.{job} }}}}",
            f"Rate limiter {{{{ $labels.resilience_name }}}} of service {{{{ $labels.{job} }}}} refused "
            f"{{{{ $value | humanizePercentage }}}} of the permits asked of it over the last {w} (above "
            f"{_pct(o.rate_limited_ratio)} for {limited_for}, with at least {_exact(o.min_execution_rate)} "
            "requests/s). It runs no execution of a policy (try_acquire, or a keyed limiter used alone), so "
            f"{A_RATE_LIMITED} cannot see it: its callers are refused; a caller asks for more than the limit "
            "allows, or the limit is below the real traffic.",
            o.runbook_url_base,
        ),
    )


def _chaos_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    """The injections of each policy's chaos links, and the notice that a drill is on."""
    job = o.job_label
    window = scale_duration(CHAOS_DRILL_WINDOW, scale)
    return (
        RecordingRule(R_CHAOS_INJECTIONS, _events(_CHAOS_INJECTIONS, window, (job, _POLICY), scale)),
        AlertRule(
            A_CHAOS_DRILL,
            f"{R_CHAOS_INJECTIONS} > 0",
            "0s",
            "info",
            f"Chaos drill on policy {{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}}",
            f"The chaos links of policy {{{{ $labels.resilience_policy }}}} in service "
            f'{{{{ $labels.{job} }}}} injected {{{{ printf "%.0f" $value }}}} fault(s), delay(s) or '
            f"result(s) in the last {window}: a drill is on, or ended less than {window} ago. The "
            "failures, retries, fallbacks and timeouts of this policy may be the drill's, not the "
            "dependency's; Alertmanager mutes the alerts a drill is expected to cause on it (not those "
            "of callers turned away).",
            o.runbook_url_base,
        ),
    )


def _reload_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    """The refused reloads of each named policy, and the alerts that its configuration is stale.

    A refused file is counted once: the refusal alert resolves a window after it though the file
    may still be refused; the watched file's stale gauge keeps the second alert on meanwhile.
    """
    job = o.job_label
    window = scale_duration(RELOAD_FAILED_WINDOW, scale)
    wait = scale_duration(o.config_stale_for, scale)
    failed = _sel(_RELOADS, _eq(_RELOAD_OUTCOME, naming.value(sc.RELOAD_OUTCOME, "failed")))
    return (
        RecordingRule(R_RELOAD_FAILURES, _events(failed, window, (job, _POLICY, _ERROR_TYPE), scale)),
        AlertRule(
            A_RELOAD_FAILED,
            f"{R_RELOAD_FAILURES} > 0",
            "0s",
            "warning",
            f"Reload of policy {{{{ $labels.resilience_policy }}}} of {{{{ $labels.{job} }}}} refused",
            f"Policy {{{{ $labels.resilience_policy }}}} of service {{{{ $labels.{job} }}}} refused "
            f'{{{{ printf "%.0f" $value }}}} new configuration(s) in the last {window} '
            f"({{{{ $labels.error_type }}}}): it kept running its previous configuration, so what runs "
            "is not what the configuration file (or the last reconfigure call) says. The service log "
            "has the refusal's message.",
            o.runbook_url_base,
        ),
        RecordingRule(R_CONFIG_STALE, f"sum by ({job}, {_CONFIG_FILE}) ({_CONFIG_STALE})"),
        AlertRule(
            A_CONFIG_STALE,
            f"{R_CONFIG_STALE} > 0",
            wait,
            "warning",
            f"Configuration file {{{{ $labels.{_CONFIG_FILE} }}}} of {{{{ $labels.{job} }}}} still refused",
            f"The watch of configuration file {{{{ $labels.{_CONFIG_FILE} }}}} refused its last version "
            f'in {{{{ printf "%.0f" $value }}}} instance(s) of service {{{{ $labels.{job} }}}}, and has '
            f"applied none for {wait}: the policies run an older configuration than the file on disk "
            "(the file does not load, is missing, or a policy refused it). The refusal was counted "
            "once; the service log has its message.",
            o.runbook_url_base,
        ),
    )


def _store_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    """The alerts that a shared store (Redis) has been unreachable, or keeps dropping out.

    Either way its replicas run on local state.

    Outages are counted per instance (the most any instance counted), as a breaker's trips are: a
    blip that every replica sees at once is one outage, not one per replica.
    """
    job = o.job_label
    wait = scale_duration(o.store_degraded_for, scale)
    window = scale_duration(STORE_FLAPPING_WINDOW, scale)
    outages = _events(_STORE_OUTAGES, window, (job, naming.INSTANCE_LABEL, _NAME), scale)
    return (
        RecordingRule(R_STORE_DEGRADED, f"sum by ({job}, {_NAME}) ({_STORE_DEGRADED})"),
        AlertRule(
            A_STORE_DEGRADED,
            f"{R_STORE_DEGRADED} > 0",
            wait,
            "warning",
            f"Shared store {{{{ $labels.resilience_name }}}} of {{{{ $labels.{job} }}}} unreachable",
            f"The shared store (Redis) of namespace {{{{ $labels.resilience_name }}}} has been "
            f'unreachable from {{{{ printf "%.0f" $value }}}} instance(s) of service {{{{ $labels.{job} }}}} '
            f"for {wait}: their shared breakers and rate limiters run on local state (each replica "
            "counts failures and probes on its own; rate limits follow their store_fallback).",
            o.runbook_url_base,
        ),
        RecordingRule(R_STORE_OUTAGES, f"max by ({job}, {_NAME}) (\n{textwrap.indent(outages, '  ')}\n)"),
        AlertRule(
            A_STORE_FLAPPING,
            f"{R_STORE_OUTAGES} >= {o.store_flapping_outages}",
            scale_duration(o.store_flapping_for, scale),
            "warning",
            f"Shared store {{{{ $labels.resilience_name }}}} of {{{{ $labels.{job} }}}} keeps dropping out",
            f"The shared store (Redis) of namespace {{{{ $labels.resilience_name }}}} became unreachable "
            f'{{{{ printf "%.0f" $value }}}} times in the last {window} from one instance of service '
            f"{{{{ $labels.{job} }}}} (threshold {o.store_flapping_outages}): each time its shared breakers "
            "and rate limiters ran on local state until it answered again (each replica counting failures "
            "and probes on its own), too briefly each time to be reported as unreachable.",
            o.runbook_url_base,
        ),
    )


def _overflow_series() -> tuple[tuple[str, str], ...]:
    """The series of every instrument the SDK's overflow series can hide a policy, breaker or key in.

    Each as ``(name, selector)``: the instruments whose series are per policy, breaker or key and
    already carry ``otel.metric.overflow`` (a keyed policy's own overflow series, which the
    selector leaves out by its ``resilience.key``); a histogram by its ``_count``. They are the
    series the alerts and dashboards group by policy, breaker and key, and the first to fill up
    (the breaker transitions at 59 breakers, the executions at 285 policies). A duration kept in
    process is read by its count and bucket counters, not its sum of seconds.
    """
    found = []
    for spec in sc.INSTRUMENTS:
        if sc.METRIC_OVERFLOW not in (*spec.attributes, *spec.conditional):
            continue
        if spec.unit == "s" and spec.kind is not sc.InstrumentKind.HISTOGRAM:
            continue  # a sum of seconds kept in process, beside its count
        histogram = spec.kind is sc.InstrumentKind.HISTOGRAM
        series = naming.series(spec.name, "count") if histogram else naming.series(spec.name)
        found.append((series, _sel(series, _eq(_OVERFLOW, "true"), _eq(_KEY, ""))))
    return tuple(found)


def _telemetry_group(o: RuleOptions, scale: float) -> tuple[RecordingRule | AlertRule, ...]:
    """What the SDK folded into its cardinality-limit overflow series, and the alert that says so."""
    job = o.job_label
    window = scale_duration(TELEMETRY_OVERFLOW_WINDOW, scale)
    landed = "\nor\n".join(
        f'label_replace(\n{_events(selector, window, (job,), scale)},\n"{_METRIC}", "{series}", "", "")'
        for series, selector in _overflow_series()
    )
    return (
        RecordingRule(R_TELEMETRY_OVERFLOW, landed),
        AlertRule(
            A_TELEMETRY_OVERFLOW,
            f"{R_TELEMETRY_OVERFLOW} > 0",
            "0s",
            "warning",
            f"{{{{ $labels.{_METRIC} }}}} of {{{{ $labels.{job} }}}} past the SDK's cardinality limit",
            f"In service {{{{ $labels.{job} }}}}, {{{{ $labels.{_METRIC} }}}} grew by "
            f'{{{{ printf "%.0f" $value }}}} in the last {window} in the OpenTelemetry SDK\'s overflow '
            f'series ({_OVERFLOW}="true", with no other label): the instrument has more attribute sets '
            "than the metric reader's cardinality limit (2000 by default), so what the newest "
            "policies, breakers or keys did is counted under none of them, where the other alerts and "
            "the dashboards do not see it. Raise the limit of the service's metric reader.",
            o.runbook_url_base,
        ),
    )


def rule_groups(time_scale: float = 1.0, options: RuleOptions | None = None) -> Rules:
    """Return the rule groups: each group's recording rules, then the alerts that read them.

    Args:
        time_scale: Multiplies every ``for``, range and ``offset`` (see :func:`scale_duration`);
            1 (default) gives the production rules.
        options: Thresholds, ``for`` durations, the job label and the runbook URL base
            (default: :class:`RuleOptions` ``()``, the shipped rules).

    Raises:
        TypeError: If ``time_scale`` is not a number or ``options`` not a :class:`RuleOptions`.
        TimeScaleError: If ``time_scale`` is not in ``(0, 1]``, would make a rule duration shorter
            than 1 ms, or would round the breaker-open warning and its critical to one length.
    """
    scale = check_time_scale(time_scale)
    if options is None:
        options = RuleOptions()
    if not isinstance(options, RuleOptions):  # callers without a type checker
        msg = f"options must be a RuleOptions, got {options!r}"  # type: ignore[unreachable]
        raise TypeError(msg)
    if scale != 1.0:
        _check_scaled_order(options, scale)
    return (
        ("otel_resilience.executions", _execution_group(options, scale)),
        ("otel_resilience.circuit_breakers", _breaker_group(options, scale)),
        ("otel_resilience.bulkheads", _bulkhead_group(options, scale)),
        ("otel_resilience.recovery", _recovery_group(options, scale)),
        ("otel_resilience.retry_budgets", _retry_budget_group(options, scale)),
        ("otel_resilience.rate_limiters", _rate_limiter_group(options, scale)),
        ("otel_resilience.chaos", _chaos_group(options, scale)),
        ("otel_resilience.configuration", _reload_group(options, scale)),
        ("otel_resilience.shared_stores", _store_group(options, scale)),
        ("otel_resilience.telemetry", _telemetry_group(options, scale)),
    )


def _check_scaled_order(options: RuleOptions, scale: float) -> None:
    """Refuse a ``scale`` that rounds a pair of :data:`_ORDERED_OPTIONS` to one length (or reverses it).

    :func:`scale_duration` writes whole milliseconds: two ``for`` durations the options keep
    apart may round to one (``1m`` and ``70s`` at 1/60000 are both ``1ms``), and the page would
    fire with the warning. A scale at which they differ by 1 ms or more before rounding keeps them
    apart, which the message suggests.

    Raises:
        TimeScaleError: Naming ``time_scale``, the pair and the length both round to.
    """
    for shorter, longer, why in _ORDERED_OPTIONS:
        first, then = getattr(options, shorter), getattr(options, longer)
        scaled_first, scaled_then = scale_duration(first, scale), scale_duration(then, scale)
        if _millis(scaled_then) <= _millis(scaled_first):
            least = 1 / (_millis(then) - _millis(first))
            msg = (
                f"{{name}}={scale!r} makes {shorter} ({first!r}) and {longer} ({then!r}) both "
                f"{scaled_first} once rounded to whole milliseconds, which must stay apart ({why}); "
                f"use a {{name}} of at least {least:.6g}"
            )
            raise TimeScaleError(msg)


def rules_document(time_scale: float = 1.0, options: RuleOptions | None = None) -> dict[str, Any]:
    """Return the Prometheus rules file as a document (``alerts/rules.yml`` with the defaults).

    A time-scaled document gives each group its evaluation ``interval``, :data:`EVALUATION_INTERVAL`
    times the scale (``3s`` at 0.05): its windows are scaled, and evaluated at Prometheus' global
    interval (1 minute unless configured) a window of 15 or 45 s would leave most of each minute
    uncounted, and a refused reload, a drill or an error pattern could fall in no window at all.
    """
    scale = check_time_scale(time_scale)
    every = {} if scale == 1.0 else {"interval": scale_duration(EVALUATION_INTERVAL, scale)}
    return {
        "groups": [
            {"name": name, **every, "rules": [rule.as_dict() for rule in rules]}
            for name, rules in rule_groups(scale, options)
        ]
    }


def render_rules(time_scale: float = 1.0, options: RuleOptions | None = None) -> str:
    """Return the text of ``alerts/rules.yml``, or of its time-scaled or adapted variant.

    Args:
        time_scale: Multiplies every ``for``, range and ``offset``; 1 (default) is the
            committed file. The recording rule names keep their production windows, so the
            dashboards read a scaled file unchanged.
        options: See :func:`rule_groups`; the header lists the options that differ from the
            shipped ones.

    Raises:
        TypeError: If ``time_scale`` is not a number.
        TimeScaleError: If ``time_scale`` is not in ``(0, 1]``, or would make a rule duration
            shorter than 1 ms (see :func:`scale_duration`).
    """
    scale = check_time_scale(time_scale)
    every = scale_duration(EVALUATION_INTERVAL, scale)
    scaled = (
        ""
        if scale == 1.0
        else f"\nTIME-SCALED by {_scale_text(scale)}: every `for`, range and offset is the production value "
        f"times {_scale_text(scale)},\nfor a demo run with `--time-scale {_scale_text(scale)}` (1 s here = "
        f"{1 / scale:g} s of production "
        f"time).\nEach group is evaluated every {every} (its `interval`: "
        f"the production {EVALUATION_INTERVAL} times {_scale_text(scale)}).\n"
        "Recording rule names keep their production windows. Not for production use."
    )
    changed = () if options is None else options.settings
    adapted = "\nAdapted with: " + ", ".join(changed) if changed else ""
    return _yaml.dump(
        rules_document(scale, options),
        _yaml.generated_header(
            "otel_resilience/ops/alert_rules.py",
            "Prometheus recording and alerting rules for otel_resilience. Load with\n"
            "`rule_files: [rules.yml]`; check with `promtool check rules --lint=all rules.yml`."
            + scaled
            + adapted,
            command=export_command(scale, changed),
        ),
    )


def export_command(time_scale: float = 1.0, settings: Sequence[str] = ()) -> str | None:
    """Return the ``otel-resilience export alerts`` command that writes a file adapted at export.

    Args:
        time_scale: The ``--time-scale`` of the rules (1: none).
        settings: The ``FIELD=VALUE`` options that differ from the shipped ones.

    Returns:
        The command, or ``None`` for the shipped files (no time scale, no option).
    """
    if time_scale == 1.0 and not settings:
        return None
    scale = f" --time-scale {_scale_text(time_scale)}" if time_scale != 1.0 else ""
    return (
        "otel-resilience export alerts DIR"
        + scale
        + "".join(f" --set {shlex.quote(item)}" for item in settings)
    )


def _scale_text(time_scale: float) -> str:
    """``time_scale`` as a command line gives it: every digit kept (``1/7`` is not ``0.142857``)."""
    return repr(float(time_scale))


# --- promtool unit tests ----------------------------------------------------------------------

_JOB_VALUE: Final = "shop"
_INSTANCE_VALUE: Final = "shop-1:9464"
_TEMPLATE_VALUE: Final = re.compile(r"\{\{[^}]*\$value[^}]*\}\}")
_TEMPLATE_LABEL: Final = re.compile(r"\{\{ \$labels\.(\w+) \}\}")
_TEMPLATE_WITH: Final = re.compile(r"\{\{ with \$labels\.(\w+) \}\}(.*?)\{\{ end \}\}")


@dataclass(frozen=True, slots=True)
class _Firing:
    """One alert expected to fire: the rule, its labels (severity added), its rendered value."""

    rule: AlertRule
    labels: Mapping[str, str]
    value: str

    def as_dict(self) -> dict[str, Any]:
        labels = {**self.labels, "severity": self.rule.severity}
        annotations = {
            "summary": _render(self.rule.summary, labels, self.value),
            "description": _render(self.rule.description, labels, self.value),
            "runbook_url": self.rule.runbook_url,
        }
        return {"exp_labels": labels, "exp_annotations": annotations}


@dataclass(frozen=True, slots=True)
class _Recorded:
    """One recording rule's expected samples at a given time (a ``promql_expr_test``)."""

    at: str
    rule: str
    samples: tuple[tuple[Mapping[str, str], float], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "expr": self.rule,
            "eval_time": self.at,
            "exp_samples": [
                {
                    "labels": self.rule + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
                    "value": value,
                }
                for labels, value in self.samples
            ],
        }


@dataclass(frozen=True, slots=True)
class _Case:
    """One ``promtool`` test group: input series, then checks at given times.

    ``alert`` and ``checks``: an alert expected to fire or not at each time; ``recorded``: the
    samples of recording rules that drive no alert (a dashboard's), at given times.
    """

    name: str
    alert: str
    series: tuple[tuple[str, str], ...]
    checks: tuple[tuple[str, tuple[_Firing, ...]], ...]
    extra: dict[str, Any] = field(default_factory=dict)
    recorded: tuple[_Recorded, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in self.series],
        }
        if self.checks:
            document["alert_rule_test"] = [
                {"eval_time": at, "alertname": self.alert, "exp_alerts": [f.as_dict() for f in firing]}
                for at, firing in self.checks
            ]
        if self.recorded:
            document["promql_expr_test"] = [expected.as_dict() for expected in self.recorded]
        return document


def _render(template: str, labels: Mapping[str, str], value: str) -> str:
    """Render our Go-template annotations the way Prometheus does, for a known value text."""
    text = _TEMPLATE_VALUE.sub(value, template)
    text = _TEMPLATE_WITH.sub(
        lambda m: m.group(2).replace("{{ . }}", labels[m.group(1)]) if labels.get(m.group(1)) else "", text
    )
    return _TEMPLATE_LABEL.sub(lambda m: labels[m.group(1)], text)


def _input(series: str, labels: Mapping[str, str]) -> str:
    items = {_JOB: _JOB_VALUE, naming.INSTANCE_LABEL: _INSTANCE_VALUE, **labels}
    return series + "{" + ", ".join(f'{k}="{v}"' for k, v in items.items()) + "}"


def _number(value: float) -> str:
    return f"{value:g}"


def _compress(samples: Sequence[float | None]) -> str:
    """Encode samples (one per minute; ``None`` = missing) in promtool's expanding notation."""
    parts: list[str] = []
    i = 0
    while i < len(samples):
        first = samples[i]
        if first is None:
            j = i
            while j < len(samples) and samples[j] is None:
                j += 1
            parts.append(f"_x{j - i}")
            i = j
            continue
        j = i
        step: float | None = None
        while j + 1 < len(samples):
            following = samples[j + 1]
            current = samples[j]
            if following is None or current is None or (step is not None and following - current != step):
                break
            step = following - current
            j += 1
        if step is None or (step != 0 and j - i == 1):
            parts.append(_number(first))
            i += 1
            continue
        sign = "+" if step >= 0 else "-"
        parts.append(f"{_number(first)}{sign}{_number(abs(step))}x{j - i}")
        i = j + 1
    return " ".join(parts)


def _counter(*segments: tuple[float, int], start: float = 0.0, missing: int = 0) -> str:
    """A counter: ``missing`` absent minutes, then ``start``, then ``(increase per minute, minutes)``."""
    samples: list[float | None] = [None] * missing
    total = start
    samples.append(total)
    for per_minute, minutes in segments:
        for _ in range(minutes):
            total += per_minute
            samples.append(total)
    return _compress(samples)


def _gauge(*segments: tuple[float, int], missing: int = 0) -> str:
    """A gauge: ``missing`` absent minutes, then ``(value, minutes)`` segments."""
    samples: list[float | None] = [None] * missing
    for item, minutes in segments:
        samples += [item] * minutes
    return _compress(samples)


def _rule(alert: str, severity: str = "warning") -> AlertRule:
    for _, rules in rule_groups():
        for rule in rules:
            if isinstance(rule, AlertRule) and rule.alert == alert and rule.severity == severity:
                return rule
    raise KeyError((alert, severity))


def _job(**labels: str) -> dict[str, str]:
    return {_JOB: _JOB_VALUE, **labels}


def _breaker_states(name: str, *periods: tuple[str, int]) -> list[tuple[str, str]]:
    """The state gauge of breaker ``name``: one series per state, 1 during each period in that state."""
    return [
        (
            _input(_CB_STATE_SERIES, {_NAME: name, _CB_STATE: state}),
            _gauge(*((1.0 if state == current else 0.0, minutes) for current, minutes in periods)),
        )
        for state in sc.CB_STATE_VALUES
    ]


def _breaker_rejections(name: str, *segments: tuple[float, int]) -> tuple[str, str]:
    """Calls breaker ``name`` rejected (it is open), per minute."""
    labels = {_POLICY: name, _PATTERN: "circuit_breaker", _NAME: name, _REJECTION_REASON: "circuit_open"}
    return (_input(_REJECTIONS, labels), _counter(*segments))


def _breaker_open_case() -> _Case:
    warning, critical = _rule(A_BREAKER_OPEN), _rule(A_BREAKER_OPEN, "critical")
    probe_failures = {
        _NAME: "probing",
        _CB_PREVIOUS: "half_open",
        _CB_STATE: "open",
        _CB_REASON: "probe_failed",
    }
    series = [
        *_breaker_states("payments", ("closed", 5), ("open", 20), ("closed", 16)),
        _breaker_rejections("payments", (0, 4), (30, 20), (0, 16)),
        *_breaker_states("search", ("closed", 5), ("open", 1), ("closed", 35)),
        _breaker_rejections("search", (0, 4), (30, 1), (0, 35)),
        *_breaker_states("shadow", ("closed", 5), ("metrics_only", 36)),
        _breaker_rejections("shadow", (0, 40)),
        *_breaker_states("switched-off", ("disabled", 41)),
        _breaker_rejections("switched-off", (0, 40)),
        # Opens as its calls stop: no call comes to probe it, so it stays half-open (its timeout
        # elapsed) for good, rejecting nothing.
        *_breaker_states("idle", ("closed", 5), ("open", 1), ("half_open", 35)),
        _breaker_rejections("idle", (0, 4), (30, 1), (0, 35)),
        # Called about once a minute, as its timeout elapses: every call is a probe, which fails, and
        # no call is rejected; it is not closed all along.
        *_breaker_states("probing", ("closed", 5), ("open", 36)),
        _breaker_rejections("probing", (0, 40)),
        (_input(_CB_TRANSITIONS, probe_failures), _counter((0, 4), (1, 20), (0, 16))),
    ]
    payments = _job(**{_NAME: "payments", _POLICY: "payments"})
    idle = _job(**{_NAME: "idle", _POLICY: "idle"})
    probing = _job(**{_NAME: "probing", _POLICY: "probing"})
    return _Case(
        "circuit breaker open: warning 1m after it opens, critical after 10m, also when every call is a "
        "probe that fails; a 1-minute blip, a metrics_only or a disabled breaker stay silent, and so "
        "does a breaker left half-open once its calls stopped (5m after its last rejection)",
        A_BREAKER_OPEN,
        tuple(series),
        (
            ("5m", ()),
            (
                "6m",
                (
                    _Firing(warning, payments, "1"),
                    _Firing(warning, idle, "1"),
                    _Firing(warning, probing, "1"),
                ),
            ),
            (
                "7m",
                (
                    _Firing(warning, payments, "1"),
                    _Firing(warning, idle, "1"),
                    _Firing(warning, probing, "1"),
                ),
            ),
            ("14m", (_Firing(warning, payments, "1"), _Firing(warning, probing, "1"))),
            (
                "16m",
                (
                    _Firing(warning, payments, "1"),
                    _Firing(critical, payments, "1"),
                    _Firing(warning, probing, "1"),
                    _Firing(critical, probing, "1"),
                ),
            ),
            ("27m", (_Firing(warning, probing, "1"), _Firing(critical, probing, "1"))),
            ("35m", ()),
        ),
    )


def _breaker_flapping_case() -> _Case:
    rule = _rule(A_BREAKER_FLAPPING)
    labels = {_CB_PREVIOUS: "closed", _CB_STATE: "open", _CB_REASON: "failure_threshold"}

    def trips(name: str) -> str:
        return _input(_CB_TRANSITIONS, {_NAME: name, **labels})

    return _Case(
        "circuit breaker flapping: 3 trips in 30m (the first trip counts), 2 trips stay silent",
        A_BREAKER_FLAPPING,
        (
            (trips("payments"), _counter((0, 9), (1, 1), (0, 9), (1, 1), (0, 70), start=1)),
            (trips("search"), _counter((0, 14), (1, 1), (0, 75), start=1)),
            (trips("orders"), _counter((0, 40), (1, 1), (0, 3), (1, 1), (0, 4), (1, 1), (0, 40), start=1)),
        ),
        (
            ("21m", ()),
            ("23m", (_Firing(rule, _job(**{_NAME: "payments"}), "3"),)),
            ("31m", ()),
            ("53m", (_Firing(rule, _job(**{_NAME: "orders"}), "3"),)),
            ("75m", ()),
        ),
    )


def _breaker_flapping_gap_case() -> _Case:
    """Series Prometheus could not scrape for a while: a gap is not a new series, a restart is."""
    rule = _rule(A_BREAKER_FLAPPING)
    labels = {_CB_PREVIOUS: "closed", _CB_STATE: "open", _CB_REASON: "failure_threshold"}
    outage: list[float | None] = [None] * 40  # from t+45m to t+84m: no sample

    def trips(name: str) -> str:
        return _input(_CB_TRANSITIONS, {_NAME: name, **labels})

    # Three trips at t+6m..8m; Prometheus cannot scrape the process from t+45m to t+84m (the
    # same process: its counter is still at 3), then two more trips: only those two are recent.
    legacy: list[float | None] = [0, 0, 0, 0, 0, 0, 1, 2, *[3] * 37, *outage, 3, 4, *[5] * 44]
    # Two trips long ago; the process is down from t+45m to t+84m, and the one that replaces it
    # (its transitions back at 0) trips three times: all three are recent.
    restarted: list[float | None] = [0, 0, 0, 0, 0, 1, *[2] * 39, *outage, 0, 1, 2, *[3] * 43]
    return _Case(
        "circuit breaker flapping across a gap in the scrapes: trips counted before the gap are not "
        "counted again when the series comes back; the trips of a process restarted after the gap are",
        A_BREAKER_FLAPPING,
        ((trips("legacy"), _compress(legacy)), (trips("restarted"), _compress(restarted))),
        (
            ("12m", (_Firing(rule, _job(**{_NAME: "legacy"}), "3"),)),
            ("40m", ()),
            ("91m", (_Firing(rule, _job(**{_NAME: "restarted"}), "3"),)),
            ("120m", ()),
        ),
    )


def _breaker_flapping_shared_case() -> _Case:
    """A breaker whose state is shared (Redis) over three replicas: each reports every trip of the cluster."""
    rule = _rule(A_BREAKER_FLAPPING)
    labels = {_CB_PREVIOUS: "closed", _CB_STATE: "open", _CB_REASON: "failure_threshold"}
    replicas = ("shop-1:9464", "shop-2:9464", "shop-3:9464")
    series: list[tuple[str, str]] = []
    for replica in replicas:
        instance = {naming.INSTANCE_LABEL: replica}
        series += [
            # One trip of the cluster, which every replica takes (and reports).
            (
                _input(_CB_TRANSITIONS, {**instance, _NAME: "inventory", **labels}),
                _counter((0, 4), (1, 1), (0, 54)),
            ),
            (_input(_CB_SHARED, {**instance, _NAME: "inventory"}), _gauge((1, 60))),
            # Three trips of the cluster in 14 minutes.
            (
                _input(_CB_TRANSITIONS, {**instance, _NAME: "catalog", **labels}),
                _counter((0, 4), (1, 1), (0, 6), (1, 1), (0, 6), (1, 1), (0, 40)),
            ),
            (_input(_CB_SHARED, {**instance, _NAME: "catalog"}), _gauge((1, 60))),
        ]
    return _Case(
        "circuit breaker flapping, shared over three replicas: a trip of the cluster, which every replica "
        "reports, counts once; three trips of the cluster fire",
        A_BREAKER_FLAPPING,
        tuple(series),
        (
            ("8m", ()),
            ("22m", (_Firing(rule, _job(**{_NAME: "catalog"}), "3"),)),
            ("36m", ()),
        ),
    )


def _breaker_flapping_replicas_case() -> _Case:
    """Breakers of one name in three replicas, each on local state: three breakers, not one."""
    rule = _rule(A_BREAKER_FLAPPING)
    labels = {_CB_PREVIOUS: "closed", _CB_STATE: "open", _CB_REASON: "failure_threshold"}
    replicas = ("shop-1:9464", "shop-2:9464", "shop-3:9464")

    def trips(replica: str, name: str) -> str:
        return _input(_CB_TRANSITIONS, {naming.INSTANCE_LABEL: replica, _NAME: name, **labels})

    quiet = _gauge((0, 61))
    series: list[tuple[str, str]] = []
    for offset, replica in enumerate(replicas):
        series += [
            # Each replica's breaker trips once, a few minutes apart: 3 trips, 1 a breaker.
            (trips(replica, "payments"), _counter((0, 4 + 3 * offset), (1, 1), (0, 55 - 3 * offset))),
            # Two replicas' breakers trip twice each: 4 trips, 2 a breaker.
            (
                trips(replica, "search"),
                quiet if offset == 2 else _counter((0, 4 + offset), (1, 1), (0, 5), (1, 1), (0, 49 - offset)),
            ),
            # One replica's breaker trips three times in 12 minutes; the others never.
            (
                trips(replica, "orders"),
                _counter((0, 4), (1, 1), (0, 5), (1, 1), (0, 5), (1, 1), (0, 44)) if offset == 1 else quiet,
            ),
        ]
    return _Case(
        "circuit breaker flapping, local breakers in three replicas: each replica's breaker is counted on "
        "its own (one trip each, or two each in two replicas, stay silent); one replica's breaker tripping "
        "three times fires",
        A_BREAKER_FLAPPING,
        tuple(series),
        (
            ("8m", ()),
            ("18m", ()),
            ("20m", (_Firing(rule, _job(**{_NAME: "orders"}), "3"),)),
            ("30m", (_Firing(rule, _job(**{_NAME: "orders"}), "3"),)),
            ("45m", ()),
        ),
    )


def _breaker_flapping_keyed_case() -> _Case:
    """A keyed policy's breakers (one per key, one name), whose transitions carry their key (opted in)."""
    rule = _rule(A_BREAKER_FLAPPING)
    labels = {_CB_PREVIOUS: "closed", _CB_STATE: "open", _CB_REASON: "failure_threshold"}

    def trips(name: str, key: str, replica: str = _INSTANCE_VALUE) -> str:
        keyed = {_KEY: key, **({_OVERFLOW: "true"} if key == "_OTHER" else {})}
        return _input(_CB_TRANSITIONS, {naming.INSTANCE_LABEL: replica, _NAME: name, **labels, **keyed})

    series: list[tuple[str, str]] = []
    for offset, key in enumerate(("a", "b", "c")):
        # Each key of "tenants" trips once (its series born at 1): 3 trips, 1 a breaker.
        series.append(
            (trips("tenants", key), _counter((0, 55 - 3 * offset), start=1, missing=5 + 3 * offset))
        )
        # "accounts" is shared over two replicas (Redis): each replica reports each key's one trip.
        series += [
            (trips("accounts", key, replica), _counter((0, 4 + 3 * offset), (1, 1), (0, 55 - 3 * offset)))
            for replica in ("shop-1:9464", "shop-2:9464")
        ]
    series += [
        (_input(_CB_SHARED, {naming.INSTANCE_LABEL: replica, _NAME: "accounts"}), _gauge((1, 61)))
        for replica in ("shop-1:9464", "shop-2:9464")
    ]
    # One key of "hosts" trips three times in 12 minutes, beside a key that never trips.
    series += [
        (trips("hosts", "flaky"), _counter((0, 4), (1, 1), (0, 5), (1, 1), (0, 5), (1, 1), (0, 44))),
        (trips("hosts", "steady"), _gauge((0, 61))),
    ]
    return _Case(
        "circuit breaker flapping, a keyed policy: each key's breaker is counted on its own, in one instance "
        "and shared over replicas (three keys tripping once each stay silent); one key tripping three times "
        "fires",
        A_BREAKER_FLAPPING,
        tuple(series),
        (
            ("8m", ()),
            ("18m", ()),
            ("20m", (_Firing(rule, _job(**{_NAME: "hosts"}), "3"),)),
            ("30m", (_Firing(rule, _job(**{_NAME: "hosts"}), "3"),)),
            ("45m", ()),
        ),
    )


def _breaker_would_open_case() -> _Case:
    rule = _rule(A_BREAKER_WOULD_OPEN)
    labels = {_CB_PREVIOUS: "metrics_only", _CB_STATE: "metrics_only", _CB_REASON: "failure_rate"}

    def would_trips(name: str) -> str:
        return _input(_CB_TRANSITIONS, {_NAME: name, **labels})

    payments = _Firing(rule, _job(**{_NAME: "payments"}), "5")
    return _Case(
        "circuit breaker would open: a metrics_only breaker that keeps making would-be trips fires after "
        "5m (one every 4 minutes is enough) and resolves once they stop, or at once when it leaves "
        "metrics_only; one would-be trip stays silent",
        A_BREAKER_WOULD_OPEN,
        (
            *_breaker_states("payments", ("metrics_only", 41)),
            (would_trips("payments"), _counter((0, 10), (1, 15), (0, 15))),
            *_breaker_states("search", ("metrics_only", 41)),
            (would_trips("search"), _counter((0, 11), (1, 1), (0, 28))),
            *_breaker_states("orders", ("metrics_only", 22), ("closed", 19)),
            (would_trips("orders"), _counter((0, 10), (1, 11), (0, 19))),
            # One would-be trip every 4 minutes, from t+11m to t+27m.
            *_breaker_states("trickle", ("metrics_only", 41)),
            (would_trips("trickle"), _counter((0, 10), *((1, 1), (0, 3)) * 4, (1, 1), (0, 14))),
        ),
        (
            ("10m", ()),
            ("14m", ()),
            (
                "18m",
                (
                    payments,
                    _Firing(rule, _job(**{_NAME: "orders"}), "5"),
                    _Firing(rule, _job(**{_NAME: "trickle"}), "1"),
                ),
            ),
            ("24m", (payments, _Firing(rule, _job(**{_NAME: "trickle"}), "1"))),
            ("35m", ()),
        ),
    )


def _bulkhead_full_case() -> _Case:
    rule = _rule(A_BULKHEAD_FULL)

    def rejected(policy: str, reason: str) -> str:
        labels = {_POLICY: policy, _PATTERN: "bulkhead", _NAME: policy, _REJECTION_REASON: reason}
        return _input(_REJECTIONS, labels)

    return _Case(
        "bulkhead full: 10 % of the executions rejected for 2m fires, at 0.1 executions/s too; exactly "
        "5 %, 3.3 %, 1.7 % at 1 call/s (a few queue timeouts), or too little traffic, stay silent",
        A_BULKHEAD_FULL,
        (
            _execution_series("db", 60),
            (rejected("db", "bulkhead_full"), _counter((0, 10), (6, 20), (0, 30))),
            _execution_series("steady", 60),
            (rejected("steady", "queue_timeout"), _counter((1, 60))),
            _execution_series("rare", 3),
            (rejected("rare", "bulkhead_full"), _counter((3, 60))),
            _execution_series("limit", 60),
            (rejected("limit", "bulkhead_full"), _counter((3, 60))),
            _execution_series("busy", 60),
            (rejected("busy", "bulkhead_full"), _counter((2, 60))),
            # Exactly the minimum traffic, 0.1 executions/s, half of them rejected from t+12m to t+30m.
            _execution_series("edge", 6),
            (rejected("edge", "bulkhead_full"), _counter((0, 12), (3, 18), (0, 30))),
        ),
        (
            ("10m", ()),
            ("14m", ()),
            (
                "15m",
                (
                    _Firing(rule, _job(**{_POLICY: "db", _NAME: "db"}), "10%"),
                    _Firing(rule, _job(**{_POLICY: "edge", _NAME: "edge"}), "30%"),
                ),
            ),
            ("40m", ()),
        ),
    )


def _bulkhead_near_case() -> _Case:
    rule = _rule(A_BULKHEAD_NEAR)
    series: list[tuple[str, str]] = []
    for name, active in (
        ("cache", _gauge((8, 20), (5, 21))),
        ("pool", _gauge((7, 41))),
        ("burst", _gauge((9, 5), (2, 36))),
    ):
        series += [
            (_input(_BULKHEAD_ACTIVE, {_NAME: name}), active),
            (_input(_BULKHEAD_LIMIT, {_NAME: name}), _gauge((10, 41))),
        ]
    return _Case(
        "bulkhead near saturation: 80 % for 10m; 70 %, or 90 % for 5m, stay silent",
        A_BULKHEAD_NEAR,
        tuple(series),
        (
            ("9m", ()),
            ("11m", (_Firing(rule, _job(**{_NAME: "cache", _POLICY: "cache"}), "80%"),)),
            ("21m", ()),
        ),
    )


def _bulkhead_near_sampled_case() -> _Case:
    """A gauge read once a minute: a lull or a peak caught by one reading does not decide."""
    rule = _rule(A_BULKHEAD_NEAR)
    series: list[tuple[str, str]] = []
    # Every slot busy for 30m, but one reading in four catches a lull (4 of 10): 84 % to 89 % over
    # any 10 minutes. Half the slots busy with a 4-minute peak at 100 %: 68 % at most.
    lulls = [4.0 if minute % 4 == 3 else 10.0 for minute in range(31)] + [2.0] * 20
    peak = [10.0 if 10 <= minute < 14 else 5.0 for minute in range(51)]
    for name, active in (("lulls", lulls), ("peak", peak)):
        series += [
            (_input(_BULKHEAD_ACTIVE, {_NAME: name}), _compress(active)),
            (_input(_BULKHEAD_LIMIT, {_NAME: name}), _gauge((10, 51))),
        ]
    return _Case(
        "bulkhead near saturation, read once a minute: busy slots with a lull in every 4th reading fire, "
        "a 4-minute peak stays silent",
        A_BULKHEAD_NEAR,
        tuple(series),
        (
            ("9m", ()),
            ("12m", (_Firing(rule, _job(**{_NAME: "lulls", _POLICY: "lulls"}), "83.64%"),)),
            ("16m", (_Firing(rule, _job(**{_NAME: "lulls", _POLICY: "lulls"}), "83.64%"),)),
            ("40m", ()),
        ),
    )


def _bulkhead_near_keyed_case() -> _Case:
    """Keyed bulkheads: ``active`` and ``limit`` summed over the keys, the utilization the worst key's."""
    rule = _rule(A_BULKHEAD_NEAR)
    series: list[tuple[str, str]] = []
    # Ten keys of max_concurrent=8 each: one key runs 8 calls while nine are idle (10 % of the
    # sums), then 1 call; or every key runs 4 (50 %): only the first is near saturation.
    for name, active, utilization in (
        ("hosts", _gauge((8, 13), (1, 8)), _gauge((1.0, 13), (0.125, 8))),
        ("tenants", _gauge((40, 21)), _gauge((0.5, 21))),
    ):
        series += [
            (_input(_BULKHEAD_ACTIVE, {_NAME: name}), active),
            (_input(_BULKHEAD_LIMIT, {_NAME: name}), _gauge((80, 21))),
            (_input(_BULKHEAD_UTILIZATION, {_NAME: name}), utilization),
        ]
    return _Case(
        "bulkhead near saturation, keyed: one saturated key among nine idle fires; half of each stays silent",
        A_BULKHEAD_NEAR,
        tuple(series),
        (
            ("9m", ()),
            ("11m", (_Firing(rule, _job(**{_NAME: "hosts", _POLICY: "hosts"}), "100%"),)),
            ("20m", ()),
        ),
    )


def _bulkhead_queue_keyed_case() -> _Case:
    """Keyed bulkheads: ``queued`` and its limit summed over the keys, the queue utilization the worst's."""
    series: list[tuple[str, str]] = []
    # Ten keys of max_waiting=5 each: one key's queue is full while nine are idle (10 % of the
    # sums), then it drains; an exporter older than the gauge still gives queued / limit.
    for name, queued, utilization in (
        ("hosts", _gauge((5, 6), (0, 5)), _gauge((1.0, 6), (0.0, 5))),
        ("legacy", _gauge((3, 11)), None),
    ):
        series += [
            (_input(_BULKHEAD_QUEUED, {_NAME: name}), queued),
            (_input(_BULKHEAD_QUEUE_LIMIT, {_NAME: name}), _gauge((50 if utilization else 10, 11))),
        ]
        if utilization is not None:
            series.append((_input(_BULKHEAD_QUEUE_UTILIZATION, {_NAME: name}), utilization))
    return _Case(
        "bulkhead queue saturation, keyed: one full queue among nine idle reads 100 %; without the "
        "gauge, queued over the queue limit",
        "",
        tuple(series),
        (),
        recorded=(
            _Recorded(
                "5m",
                R_BULKHEAD_QUEUE_SATURATION,
                ((_job(**{_NAME: "hosts"}), 1.0), (_job(**{_NAME: "legacy"}), 0.3)),
            ),
            _Recorded(
                "10m",
                R_BULKHEAD_QUEUE_SATURATION,
                ((_job(**{_NAME: "hosts"}), 0.0), (_job(**{_NAME: "legacy"}), 0.3)),
            ),
        ),
    )


def _recovery_case() -> _Case:
    rule = _rule(A_RECOVERY_LOW)

    def attempts(policy: str, result: str) -> str:
        labels = {
            _POLICY: policy,
            _NAME: "recovery",
            _RECOVERY_STRATEGY: "retry",
            _RECOVERY_RESULT: result,
            _ERROR_TYPE: "ConnectionError",
        }
        return _input(_RECOVERY_ATTEMPTS, labels)

    def executions(policy: str, outcome: str, *segments: tuple[float, int]) -> tuple[str, str]:
        return (
            _input(_EXECUTIONS, {_POLICY: policy, _PATTERN: "pipeline", _OUTCOME: outcome}),
            _counter(*segments),
        )

    return _Case(
        "recovery failing: fires 2m after a sustained failure starts (20 % of many actions, 50 % of 10 "
        "actions in 5m, or 3 failed actions in 11m while the policy fails, or 1 failed action in a 30m "
        "outage) and resolves within 5m of the return; 1 of 2, 5 failed actions in 5m (under the "
        "10-action guard), exactly 80 %, 85 %, one failed action of a healthy policy, one success "
        "among the failed actions of an outage, failed actions while exactly 80 % of the policy's "
        "executions succeed, or the failed call and action of a policy with too little traffic stay silent",
        A_RECOVERY_LOW,
        (
            # Many actions, 20 % recovered from t+10m to t+30m.
            (attempts("db", "success"), _counter((20, 10), (2, 20), (20, 30))),
            (attempts("db", "failure"), _counter((0, 10), (8, 20), (0, 30))),
            _execution_series("db", 60),
            # A hard outage: the breaker rejects almost every call, 3 recovery actions in 11m, all fail.
            (
                attempts("ml", "failure"),
                _counter((0, 6), (1, 1), (0, 4), (1, 1), (0, 39), start=1, missing=10),
            ),
            executions("ml", "success", (60, 10), (0, 20), (60, 30)),
            executions("ml", "rejected", (0, 10), (60, 20), (0, 30)),
            # A long hard outage (t+10m to t+40m) whose only recovery action came at its start.
            (attempts("long", "failure"), _counter((0, 50), start=1, missing=10)),
            executions("long", "success", (60, 10), (0, 30), (60, 20)),
            executions("long", "rejected", (0, 10), (60, 30), (0, 20)),
            # 1 of 2 recovered; 85 % recovered; one failed action of a healthy policy.
            (attempts("rare", "success"), _counter((0, 55), start=1, missing=5)),
            (attempts("rare", "failure"), _counter((0, 53), start=1, missing=7)),
            _execution_series("rare", 60),
            (attempts("healthy", "success"), _counter((17, 60))),
            (attempts("healthy", "failure"), _counter((3, 60))),
            _execution_series("healthy", 60),
            (attempts("blip", "failure"), _counter((0, 55), start=1, missing=5)),
            _execution_series("blip", 60),
            # Exactly the minimum of actions (10 in 5m, from t+5m to t+30m), half of them recovered:
            # judged, from t+10m; 5 in 5m, all failed, are too few to judge.
            (attempts("ten", "success"), _counter((0, 5), (1, 25), (0, 30))),
            (attempts("ten", "failure"), _counter((0, 5), (1, 25), (0, 30))),
            _execution_series("ten", 60),
            (attempts("few", "failure"), _counter((0, 10), (1, 20), (0, 30))),
            _execution_series("few", 60),
            # Exactly 80 % recovered (not under it).
            (attempts("exact", "success"), _counter((4, 60))),
            (attempts("exact", "failure"), _counter((1, 60))),
            _execution_series("exact", 60),
            # An outage (t+10m to t+40m) whose actions all failed but one, at t+5m: not "none succeeded".
            (attempts("sparse", "success"), _counter((0, 55), start=1, missing=5)),
            (attempts("sparse", "failure"), _counter((0, 10), (1, 30), (0, 20))),
            executions("sparse", "success", (60, 10), (0, 30), (60, 20)),
            executions("sparse", "rejected", (0, 10), (60, 30), (0, 20)),
            # Every action failed, but exactly 80 % of the policy's executions succeed (not under it).
            (attempts("partial", "failure"), _counter((0, 48), start=1, missing=12)),
            executions("partial", "success", (60, 10), (48, 50)),
            executions("partial", "rejected", (0, 10), (12, 50)),
            # Too little traffic (a call every 5 minutes): one call fails at t+12m and its one action fails.
            (attempts("trickle", "success"), _counter((0, 60))),
            (attempts("trickle", "failure"), _counter((0, 11), (1, 1), (0, 48))),
            executions("trickle", "success", *(segment for _ in range(12) for segment in ((0, 4), (1, 1)))),
            executions("trickle", "failure", (0, 11), (1, 1), (0, 48)),
        ),
        (
            ("10m", ()),
            ("11m", ()),
            (
                "15m",
                (
                    _Firing(rule, _job(**{_POLICY: "db", _NAME: "recovery"}), "20%"),
                    _Firing(rule, _job(**{_POLICY: "ml", _NAME: "recovery"}), "0%"),
                    _Firing(rule, _job(**{_POLICY: "long", _NAME: "recovery"}), "0%"),
                    _Firing(rule, _job(**{_POLICY: "ten", _NAME: "recovery"}), "50%"),
                ),
            ),
            ("35m", (_Firing(rule, _job(**{_POLICY: "long", _NAME: "recovery"}), "0%"),)),
            ("45m", ()),
            ("55m", ()),
        ),
    )


def _error_pattern_case() -> _Case:
    rule = _rule(A_ERROR_PATTERN)
    labels = {
        _POLICY: "orders",
        _NAME: "orders-recovery",
        _OPERATION: "fetch_orders",
        _ERROR_TYPE: "ConnectionError",
    }
    firing = _Firing(rule, _job(**labels), "1")
    return _Case(
        "error pattern: fires 1m after a new pattern (the first detection counts) and resolves after 15m",
        A_ERROR_PATTERN,
        ((_input(_ERROR_PATTERNS, labels), _counter((0, 29), (1, 1), (0, 30), start=1, missing=10)),),
        (("10m", ()), ("11m", (firing,)), ("26m", ()), ("42m", (firing,)), ("56m", ())),
    )


def _error_pattern_namesakes_case() -> _Case:
    """Two modules' functions of one name (``users.fetch``, ``orders.fetch``): two patterns of ``fetch``."""
    rule = _rule(A_ERROR_PATTERN)
    labels = {_POLICY: "lookups", _NAME: "lookups", _OPERATION: "fetch", _ERROR_TYPE: "ConnectionError"}
    users, orders = ({**labels, _OPERATION_MODULE: module} for module in ("users", "orders"))
    return _Case(
        "error pattern, two modules' functions of one name: two alerts, each naming its module",
        A_ERROR_PATTERN,
        (
            (_input(_ERROR_PATTERNS, users), _counter((0, 30), start=1, missing=10)),
            (_input(_ERROR_PATTERNS, orders), _counter((0, 28), start=1, missing=12)),
        ),
        (
            ("10m", ()),
            ("11m", (_Firing(rule, _job(**users), "1"),)),
            ("14m", (_Firing(rule, _job(**users), "1"), _Firing(rule, _job(**orders), "1"))),
            ("29m", ()),
        ),
    )


def _execution_series(policy: str, per_minute: float, minutes: int = 61) -> tuple[str, str]:
    labels = {_POLICY: policy, _PATTERN: "pipeline", _OUTCOME: "success"}
    return (_input(_EXECUTIONS, labels), _counter((per_minute, minutes - 1)))


def _retry_storm_case() -> _Case:
    rule = _rule(A_RETRY_STORM)

    def retries(policy: str) -> str:
        return _input(_RETRIES, {_POLICY: policy, _NAME: policy})

    return _Case(
        "retry storm: 0.75 retries per execution for 10m fires, at 0.1 executions/s too; exactly 0.5, "
        "0.45, or too little traffic, stay silent",
        A_RETRY_STORM,
        (
            _execution_series("checkout", 60),
            (retries("checkout"), _counter((45, 30), (6, 30))),
            _execution_series("steady", 60),
            (retries("steady"), _counter((27, 60))),
            _execution_series("rare", 3),
            (retries("rare"), _counter((3, 60))),
            _execution_series("limit", 60),
            (retries("limit"), _counter((30, 60))),
            # Exactly the minimum traffic, 0.1 executions/s, each retried once until t+30m.
            _execution_series("edge", 6),
            (retries("edge"), _counter((6, 30), (0, 30))),
        ),
        (
            ("10m", ()),
            ("12m", (_Firing(rule, _job(**{_POLICY: "checkout"}), "0.75"),)),
            (
                "16m",
                (
                    _Firing(rule, _job(**{_POLICY: "checkout"}), "0.75"),
                    _Firing(rule, _job(**{_POLICY: "edge"}), "1.00"),
                ),
            ),
            ("40m", ()),
        ),
    )


def _fallback_case() -> _Case:
    rule = _rule(A_FALLBACK_HIGH)

    def fallbacks(policy: str) -> str:
        return _input(
            _FALLBACKS,
            {
                _POLICY: policy,
                _NAME: policy,
                _FALLBACK_STRATEGY: "default_value",
                _FALLBACK_RESULT: "success",
                _ERROR_TYPE: "TimeoutError",
            },
        )

    return _Case(
        "high fallback rate: 20 % or 13 % of executions for 10m fires, at 0.1 executions/s too; exactly "
        "10 %, 8 %, 5 %, or too little traffic, stay silent",
        A_FALLBACK_HIGH,
        (
            _execution_series("search", 60),
            (fallbacks("search"), _counter((12, 30), (0, 30))),
            _execution_series("steady", 60),
            (fallbacks("steady"), _counter((3, 60))),
            _execution_series("rare", 3),
            (fallbacks("rare"), _counter((3, 60))),
            _execution_series("light", 60),
            (fallbacks("light"), _counter((8, 30), (0, 30))),
            _execution_series("limit", 60),
            (fallbacks("limit"), _counter((6, 60))),
            _execution_series("below", 60),
            (fallbacks("below"), _counter((5, 60))),
            # Exactly the minimum traffic, 0.1 executions/s, half of them answered by the fallback.
            _execution_series("edge", 6),
            (fallbacks("edge"), _counter((3, 30), (0, 30))),
        ),
        (
            ("10m", ()),
            (
                "12m",
                (
                    _Firing(rule, _job(**{_POLICY: "search", _NAME: "search"}), "20%"),
                    _Firing(rule, _job(**{_POLICY: "light", _NAME: "light"}), "13.33%"),
                ),
            ),
            (
                "16m",
                (
                    _Firing(rule, _job(**{_POLICY: "search", _NAME: "search"}), "20%"),
                    _Firing(rule, _job(**{_POLICY: "light", _NAME: "light"}), "13.33%"),
                    _Firing(rule, _job(**{_POLICY: "edge", _NAME: "edge"}), "50%"),
                ),
            ),
            ("40m", ()),
        ),
    )


def _timeouts_case() -> _Case:
    rule = _rule(A_TIMEOUTS)

    def timeouts(policy: str) -> str:
        return _input(
            _TIMEOUTS, {_POLICY: policy, _PATTERN: "timeout", _NAME: policy, _TIMEOUT_SCOPE: "total"}
        )

    return _Case(
        "timeouts rising: 10 % or 6.7 % of executions for 10m fires, at 0.1 executions/s too; exactly "
        "5 %, 3 %, or too little traffic, stay silent",
        A_TIMEOUTS,
        (
            _execution_series("report", 60),
            (timeouts("report"), _counter((6, 30), (0, 30))),
            _execution_series("steady", 60),
            (timeouts("steady"), _counter((2, 60))),
            _execution_series("rare", 3),
            (timeouts("rare"), _counter((3, 60))),
            _execution_series("light", 60),
            (timeouts("light"), _counter((4, 30), (0, 30))),
            _execution_series("limit", 60),
            (timeouts("limit"), _counter((3, 60))),
            # Exactly the minimum traffic, 0.1 executions/s, half of them timed out until t+30m.
            _execution_series("edge", 6),
            (timeouts("edge"), _counter((3, 30), (0, 30))),
        ),
        (
            ("10m", ()),
            (
                "12m",
                (
                    _Firing(rule, _job(**{_POLICY: "report"}), "10%"),
                    _Firing(rule, _job(**{_POLICY: "light"}), "6.667%"),
                ),
            ),
            (
                "16m",
                (
                    _Firing(rule, _job(**{_POLICY: "report"}), "10%"),
                    _Firing(rule, _job(**{_POLICY: "light"}), "6.667%"),
                    _Firing(rule, _job(**{_POLICY: "edge"}), "50%"),
                ),
            ),
            ("40m", ()),
        ),
    )


def _retry_budget_case() -> _Case:
    rule = _rule(A_RETRY_BUDGET)

    def denied(policy: str) -> str:
        labels = {
            _POLICY: policy,
            _NAME: "calls",
            _RETRY_STOP_REASON: "budget",
            _ERROR_TYPE: "ConnectionError",
        }
        return _input(_RETRY_EXHAUSTED, labels)

    def zero(policy: str) -> str:
        return _input(_RETRY_EXHAUSTED, {_POLICY: policy, _NAME: "calls", _RETRY_STOP_REASON: "budget"})

    payments = _job(**{_POLICY: "payments", _NAME: "calls"})
    trickle = _job(**{_POLICY: "trickle", _NAME: "calls"})
    return _Case(
        "retry budget exhausted: denials within every 5m for 10m fire (the first denial counts; one every "
        "4 minutes is enough) and resolve 5m after the last; a burst of denials, or 4 minutes of them, "
        "stay silent",
        A_RETRY_BUDGET,
        (
            # Denials every minute from t+10m to t+25m (the series born at the first, at 1).
            (zero("payments"), _gauge((0, 41))),
            (denied("payments"), _counter((2, 15), (0, 15), start=1, missing=10)),
            # One burst of 20 denials at t+12m.
            (zero("search"), _gauge((0, 41))),
            (denied("search"), _counter((0, 29), start=20, missing=12)),
            # Denials from t+12m to t+16m.
            (denied("orders"), _counter((1, 4), (0, 24), start=1, missing=12)),
            # One denial every 4 minutes, from t+10m to t+26m.
            (zero("trickle"), _gauge((0, 41))),
            (denied("trickle"), _counter(*((0, 3), (1, 1)) * 4, (0, 15), start=1, missing=10)),
        ),
        (
            ("10m", ()),
            ("19m", ()),
            ("21m", (_Firing(rule, payments, "10"), _Firing(rule, trickle, "1"))),
            ("28m", (_Firing(rule, payments, "4"), _Firing(rule, trickle, "1"))),
            ("31m", ()),
        ),
    )


def _rate_limited_case() -> _Case:
    rule = _rule(A_RATE_LIMITED)

    def shed(policy: str) -> str:
        labels = {_POLICY: policy, _PATTERN: "rate_limiter", _NAME: policy, _REJECTION_REASON: "rate_limited"}
        return _input(_REJECTIONS, labels)

    return _Case(
        "rate limited: 20 % or 13 % of the executions shed for 5m fires, at 0.1 executions/s too, and "
        "resolves once the shedding stops; exactly 10 %, 5 %, a 2-minute burst, or too little traffic, "
        "stay silent",
        A_RATE_LIMITED,
        (
            _execution_series("search", 60),
            (shed("search"), _counter((0, 10), (12, 20), (0, 30))),
            _execution_series("steady", 60),
            (shed("steady"), _counter((3, 60))),
            _execution_series("burst", 60),
            (shed("burst"), _counter((0, 40), (20, 2), (0, 18))),
            _execution_series("rare", 3),
            (shed("rare"), _counter((3, 60))),
            _execution_series("light", 60),
            (shed("light"), _counter((0, 10), (8, 20), (0, 30))),
            _execution_series("limit", 60),
            (shed("limit"), _counter((6, 60))),
            # Exactly the minimum traffic, 0.1 executions/s, half of them shed from t+12m to t+30m.
            _execution_series("edge", 6),
            (shed("edge"), _counter((0, 12), (3, 18), (0, 30))),
        ),
        (
            ("12m", ()),
            ("17m", ()),
            (
                "19m",
                (
                    _Firing(rule, _job(**{_POLICY: "search", _NAME: "search"}), "20%"),
                    _Firing(rule, _job(**{_POLICY: "light", _NAME: "light"}), "13.33%"),
                    _Firing(rule, _job(**{_POLICY: "edge", _NAME: "edge"}), "50%"),
                ),
            ),
            ("35m", ()),
            ("47m", ()),
        ),
    )


def _rate_limiter_refusing_case() -> _Case:
    rule = _rule(A_RATE_LIMITER_REFUSING)

    def permits(name: str, result: str) -> str:
        return _input(_RL_PERMITS, {_NAME: name, _RL_PERMIT_RESULT: result})

    def limiter(
        name: str, immediate: tuple[tuple[float, int], ...], refused: tuple[tuple[float, int], ...]
    ) -> tuple[tuple[str, str], tuple[str, str]]:
        return (
            (permits(name, "immediate"), _counter(*immediate)),
            (permits(name, "rejected"), _counter(*refused)),
        )

    shed = {
        _POLICY: "checkout",
        _PATTERN: "rate_limiter",
        _NAME: "checkout",
        _REJECTION_REASON: "rate_limited",
    }
    return _Case(
        "rate limiter refusing: a limiter that runs no execution (try_acquire) refusing 80 % or 20 % of "
        "its permits for 5m fires, and resolves once the refusals stop; 5 %, a one-minute burst (above 10 % "
        "of the window for 4 minutes), too few "
        "requests, or a policy's limiter (its sheds are ResilienceRateLimitedSustained's), stay silent",
        A_RATE_LIMITER_REFUSING,
        (
            *limiter("tenants", ((12, 30), (60, 30)), ((48, 30), (0, 30))),
            *limiter("partners", ((48, 60),), ((12, 60),)),
            *limiter("quiet", ((57, 60),), ((3, 60),)),
            *limiter("burst", ((60, 60),), ((0, 20), (50, 1), (0, 39))),
            *limiter("rare", ((1, 60),), ((2, 60),)),
            *limiter("checkout", ((12, 60),), ((48, 60),)),
            (_input(_REJECTIONS, shed), _counter((48, 60))),
            _execution_series("checkout", 60),
        ),
        (
            ("3m", ()),
            (
                "12m",
                (
                    _Firing(rule, _job(**{_NAME: "tenants"}), "80%"),
                    _Firing(rule, _job(**{_NAME: "partners"}), "20%"),
                ),
            ),
            (
                "26m",
                (
                    _Firing(rule, _job(**{_NAME: "tenants"}), "80%"),
                    _Firing(rule, _job(**{_NAME: "partners"}), "20%"),
                ),
            ),
            ("40m", (_Firing(rule, _job(**{_NAME: "partners"}), "20%"),)),
        ),
    )


def _chaos_drill_case() -> _Case:
    rule = _rule(A_CHAOS_DRILL, "info")

    def injections(policy: str, name: str, kind: str) -> str:
        return _input(_CHAOS_INJECTIONS, {_POLICY: policy, _NAME: name, _CHAOS_KIND: kind})

    payments = _Firing(rule, _job(**{_POLICY: "payments"}), "50")
    return _Case(
        "chaos drill: fires at the first injection (a series born at 1 counts), sums the kinds and links "
        "of the policy, and resolves 15m after the last; a chaos link that injects nothing stays silent",
        A_CHAOS_DRILL,
        (
            # A fault drill from t+10m to t+15m, 10 injections a minute, with delays beside it.
            (injections("payments", "payments", "fault"), _counter((0, 10), (8, 5), (0, 45))),
            (injections("payments", "payments", "latency"), _counter((0, 10), (2, 5), (0, 45))),
            # A second link of the policy whose first injection (its series born at 1) is at t+40m.
            (injections("search", "search.drill", "outcome"), _counter((0, 10), start=1, missing=40)),
            # A switched-off drill: its series exist at 0 and never move.
            (injections("orders", "orders", "fault"), _gauge((0, 61))),
        ),
        (
            ("9m", ()),
            ("12m", (_Firing(rule, _job(**{_POLICY: "payments"}), "20"),)),
            ("20m", (payments,)),
            ("31m", ()),
            ("41m", (_Firing(rule, _job(**{_POLICY: "search"}), "1"),)),
            ("57m", ()),
        ),
    )


def _reload_failed_case() -> _Case:
    rule = _rule(A_RELOAD_FAILED)

    def reloads(policy: str, outcome: str, error: str = "") -> str:
        labels = {_POLICY: policy, _RELOAD_OUTCOME: outcome, **({_ERROR_TYPE: error} if error else {})}
        return _input(_RELOADS, labels)

    payments = _job(**{_POLICY: "payments", _ERROR_TYPE: "ValueError"})
    return _Case(
        "reload failed: fires at the first refused reload (a series born at 1 counts), resolves 15m "
        "after the last; successful reloads and the failed series at 0 stay silent",
        A_RELOAD_FAILED,
        (
            # Both series of each policy start at 0; payments reloads fine, then a bad file at t+10m.
            (reloads("payments", "succeeded"), _counter((0, 5), (1, 1), (0, 54))),
            (reloads("payments", "failed"), _gauge((0, 61))),
            (reloads("payments", "failed", "ValueError"), _counter((0, 50), missing=10, start=1)),
            (reloads("orders", "succeeded"), _counter((1, 60))),
            (reloads("orders", "failed"), _gauge((0, 61))),
        ),
        (
            ("9m", ()),
            ("11m", (_Firing(rule, payments, "1"),)),
            ("24m", (_Firing(rule, payments, "1"),)),
            ("27m", ()),
        ),
    )


def _config_stale_case() -> _Case:
    rule = _rule(A_CONFIG_STALE)
    stale = _job(**{_CONFIG_FILE: "/etc/app/resilience.yaml"})
    return _Case(
        "configuration stale: fires once a watched file has stayed refused 15m, for as long as it "
        "stays so, and resolves once a version applies; a refusal fixed within 15m stays silent",
        A_CONFIG_STALE,
        (
            # Refused at t+5m, left so for 30m, then fixed; the other file refused for 10m only.
            (
                _input(_CONFIG_STALE, {_CONFIG_FILE: "/etc/app/resilience.yaml"}),
                _gauge((0, 5), (1, 30), (0, 11)),
            ),
            (_input(_CONFIG_STALE, {_CONFIG_FILE: "/etc/app/other.yaml"}), _gauge((0, 10), (1, 10), (0, 26))),
        ),
        (
            ("15m", ()),
            ("21m", (_Firing(rule, stale, "1"),)),
            ("34m", (_Firing(rule, stale, "1"),)),
            ("36m", ()),
        ),
    )


def _store_degraded_case() -> _Case:
    rule = _rule(A_STORE_DEGRADED)
    return _Case(
        "shared store degraded: fires after 2m unreachable, resolves when it answers; a 1m blip stays silent",
        A_STORE_DEGRADED,
        (
            (_input(_STORE_DEGRADED, {_NAME: "checkout"}), _gauge((0, 10), (1, 10), (0, 11))),
            (_input(_STORE_DEGRADED, {_NAME: "search"}), _gauge((0, 5), (1, 1), (0, 25))),
        ),
        (
            ("11m", ()),
            ("13m", (_Firing(rule, _job(**{_NAME: "checkout"}), "1"),)),
            ("19m", (_Firing(rule, _job(**{_NAME: "checkout"}), "1"),)),
            ("22m", ()),
        ),
    )


def _store_flapping_case() -> _Case:
    rule = _rule(A_STORE_FLAPPING)

    def store(name: str, instance: str = _INSTANCE_VALUE) -> dict[str, str]:
        return {_NAME: name, naming.INSTANCE_LABEL: instance}

    # checkout drops out for a minute every 3 minutes from t+1m to t+31m (10 outages, the gauge never
    # 1 for two evaluations in a row); search twice in 30 minutes; three replicas once each, together.
    flapping = _counter(*((1, 1), (0, 2)) * 10, (0, 60))
    return _Case(
        "shared store flapping: 3 outages within 30m in one instance fire after 2m (none of them long "
        "enough for the degraded alert), and resolve 30m after the last; 2 outages, or one in each of "
        "3 replicas at once, stay silent",
        A_STORE_FLAPPING,
        (
            (_input(_STORE_DEGRADED, store("checkout")), _gauge((0, 1), *((1, 1), (0, 2)) * 10, (0, 60))),
            (_input(_STORE_OUTAGES, store("checkout")), flapping),
            (_input(_STORE_OUTAGES, store("search")), _counter((0, 5), (1, 1), (0, 10), (1, 1), (0, 74))),
            *(
                (_input(_STORE_OUTAGES, store("orders", f"orders-{i}")), _counter((0, 5), (1, 1), (0, 85)))
                for i in (1, 2, 3)
            ),
        ),
        (
            ("5m", ()),
            ("8m", ()),  # the third outage at t+7m: pending for 2m
            ("9m", (_Firing(rule, _job(**{_NAME: "checkout"}), "3"),)),
            ("30m", (_Firing(rule, _job(**{_NAME: "checkout"}), "10"),)),
            ("70m", ()),
        ),
    )


@dataclass(frozen=True, slots=True)
class _QuietCase:
    """One ``promtool`` test group in which no alert of the file fires at the given times."""

    name: str
    series: tuple[tuple[str, str], ...]
    at: tuple[str, ...]
    recorded: tuple[_Recorded, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in self.series],
            "alert_rule_test": [
                {"eval_time": at, "alertname": alert, "exp_alerts": []}
                for at in self.at
                for alert in ALERT_NAMES
            ],
            "promql_expr_test": [expected.as_dict() for expected in self.recorded],
        }


def _telemetry_overflow_case() -> _Case:
    rule = _rule(A_TELEMETRY_OVERFLOW)
    sdk_overflow = {_OVERFLOW: "true"}
    own_overflow = {
        _POLICY: "tenants",
        _PATTERN: "pipeline",
        _OUTCOME: "success",
        _KEY: "_OTHER",
        **sdk_overflow,
    }

    def firing(series: str, value: str) -> _Firing:
        return _Firing(rule, _job(**{_METRIC: series}), value)

    return _Case(
        "telemetry overflow: fires from the first measurement the SDK folds into its cardinality-limit "
        "overflow series (a series born at 1 counts), names the metric, and resolves 15m after the "
        "last; a keyed policy's own overflow key (resilience_key=_OTHER) fires nothing",
        A_TELEMETRY_OVERFLOW,
        (
            # The 60th breaker trips at t+10m and again at t+11m: only the SDK's overflow series moves.
            (_input(_CB_TRANSITIONS, sdk_overflow), _counter((1, 1), (0, 49), start=1, missing=10)),
            # The executions of policies made past the limit, from t+40m.
            (_input(_EXECUTIONS, sdk_overflow), _counter((3, 20), start=3, missing=40)),
            # The keys past a policy's key_attribute_limit, all along.
            (_input(_EXECUTIONS, own_overflow), _counter((5, 60))),
        ),
        (
            ("9m", ()),
            ("10m", (firing(_CB_TRANSITIONS, "1"),)),
            ("20m", (firing(_CB_TRANSITIONS, "2"),)),
            ("30m", ()),
            ("42m", (firing(_EXECUTIONS, "9"),)),
        ),
    )


def _zero_traffic_case() -> _QuietCase:
    """Every alert at zero traffic: a policy whose calls stopped, and one never called.

    The first policy's 20 unhealthy minutes fire every alert; then its calls stop. Every series stays,
    flat: the rates are 0, the ratios over them have no sample (never NaN), and no alert fires.
    """
    busy, idle = 20, 100
    total = busy + idle + 1

    def stopped(per_minute: float) -> str:
        return _counter((per_minute, busy), (0, idle))

    def flat() -> str:
        return _gauge((0, total))

    series: list[tuple[str, str]] = []
    for policy, counter in (("checkout", stopped), ("unused", lambda _: flat())):
        series += [
            (_input(_EXECUTIONS, {_POLICY: policy, _PATTERN: "pipeline", _OUTCOME: "success"}), counter(30)),
            (_input(_EXECUTIONS, {_POLICY: policy, _PATTERN: "pipeline", _OUTCOME: "failure"}), counter(30)),
            (_input(_RETRIES, {_POLICY: policy, _NAME: policy}), counter(60)),
            (
                _input(
                    _FALLBACKS,
                    {
                        _POLICY: policy,
                        _NAME: policy,
                        _FALLBACK_STRATEGY: "default_value",
                        _FALLBACK_RESULT: "success",
                        _ERROR_TYPE: "TimeoutError",
                    },
                ),
                counter(12),
            ),
            (
                _input(
                    _TIMEOUTS, {_POLICY: policy, _PATTERN: "timeout", _NAME: policy, _TIMEOUT_SCOPE: "total"}
                ),
                counter(6),
            ),
            (
                _input(
                    _REJECTIONS,
                    {
                        _POLICY: policy,
                        _PATTERN: "bulkhead",
                        _NAME: policy,
                        _REJECTION_REASON: "bulkhead_full",
                    },
                ),
                counter(6),
            ),
            (
                _input(
                    _REJECTIONS,
                    {
                        _POLICY: policy,
                        _PATTERN: "rate_limiter",
                        _NAME: policy,
                        _REJECTION_REASON: "rate_limited",
                    },
                ),
                counter(12),
            ),
            (
                _input(
                    _RECOVERY_ATTEMPTS,
                    {
                        _POLICY: policy,
                        _NAME: "recovery",
                        _RECOVERY_STRATEGY: "retry",
                        _RECOVERY_RESULT: "failure",
                    },
                ),
                counter(15),
            ),
            (
                _input(
                    _RECOVERY_ATTEMPTS,
                    {
                        _POLICY: policy,
                        _NAME: "recovery",
                        _RECOVERY_STRATEGY: "retry",
                        _RECOVERY_RESULT: "success",
                    },
                ),
                flat(),
            ),
            (
                _input(
                    _ERROR_PATTERNS,
                    {_POLICY: policy, _NAME: "recovery", _OPERATION: "call", _ERROR_TYPE: "ConnectionError"},
                ),
                counter(1),
            ),
            (
                _input(_RETRY_EXHAUSTED, {_POLICY: policy, _NAME: policy, _RETRY_STOP_REASON: "budget"}),
                counter(2),
            ),
            (_input(_CHAOS_INJECTIONS, {_POLICY: policy, _NAME: policy, _CHAOS_KIND: "fault"}), counter(1)),
            # A limiter that only answers try_acquire (no execution), refusing half of its permits.
            (_input(_RL_PERMITS, {_NAME: f"{policy}-tenants", _RL_PERMIT_RESULT: "immediate"}), counter(12)),
            (_input(_RL_PERMITS, {_NAME: f"{policy}-tenants", _RL_PERMIT_RESULT: "rejected"}), counter(12)),
            (_input(_RELOADS, {_POLICY: policy, _RELOAD_OUTCOME: "failed"}), counter(0.05)),
            (
                _input(_BULKHEAD_ACTIVE, {_NAME: policy}),
                _gauge((10 if counter is stopped else 0, busy), (0, idle + 1)),
            ),
            (_input(_BULKHEAD_LIMIT, {_NAME: policy}), _gauge((10, total))),
            (
                _input(_BULKHEAD_UTILIZATION, {_NAME: policy}),
                _gauge((1 if counter is stopped else 0, busy), (0, idle + 1)),
            ),
            (
                _input(_STORE_DEGRADED, {_NAME: policy}),
                _gauge((1 if counter is stopped else 0, busy), (0, idle + 1)),
            ),
            (_input(_STORE_OUTAGES, {_NAME: policy}), counter(0.25)),
            (
                _input(
                    _CB_TRANSITIONS,
                    {_NAME: policy, _CB_PREVIOUS: "closed", _CB_STATE: "open", _CB_REASON: "failure_rate"},
                ),
                counter(0.25),
            ),
            (
                _input(
                    _CB_TRANSITIONS,
                    {
                        _NAME: policy,
                        _CB_PREVIOUS: "metrics_only",
                        _CB_STATE: "metrics_only",
                        _CB_REASON: "failure_rate",
                    },
                ),
                counter(1),
            ),
        ]
    # The breaker of the stopped policy was open in its last unhealthy minutes; then its calls stopped, and
    # with no call to probe it, it stays half-open (as the library reports it: its timeout elapsed) for good.
    # A metrics_only breaker made would-be trips while it had calls, and stays metrics_only.
    series += _breaker_states("checkout", ("closed", 10), ("open", 10), ("half_open", idle + 1))
    series.append(_breaker_rejections("checkout", (0, 9), (30, 10), (0, idle + 1)))
    series += _breaker_states("unused", ("closed", total))
    series.append(_breaker_rejections("unused", (0, total - 1)))
    # A breaker past the SDK's cardinality limit tripped in those minutes: only its overflow series moved.
    series.append((_input(_CB_TRANSITIONS, {_OVERFLOW: "true"}), stopped(1)))
    # A watched file refused in those minutes, then fixed: the watch of a service that stopped too.
    series.append(
        (_input(_CONFIG_STALE, {_CONFIG_FILE: "/etc/app/resilience.yaml"}), _gauge((1, busy), (0, idle + 1)))
    )
    series += _breaker_states("shadow", ("metrics_only", total))
    series.append(
        (
            _input(
                _CB_TRANSITIONS,
                {
                    _NAME: "shadow",
                    _CB_PREVIOUS: "metrics_only",
                    _CB_STATE: "metrics_only",
                    _CB_REASON: "failure_rate",
                },
            ),
            stopped(1),
        )
    )
    both = ("checkout", "unused")
    return _QuietCase(
        "zero traffic: once a policy's calls stop (after 20 unhealthy minutes), and for a policy never "
        "called, the rates are 0, the ratios over them have no sample (no NaN), and no alert fires",
        tuple(series),
        ("50m", "80m", "100m", "120m"),
        (
            _Recorded("15m", R_RETRY_RATIO, ((_job(**{_POLICY: "checkout"}), 1.0),)),
            _Recorded("60m", R_EXECUTIONS, tuple((_job(**{_POLICY: p}), 0.0) for p in both)),
            *(
                _Recorded("60m", rule, ())
                for rule in (
                    R_SUCCESS_RATIO,
                    R_RETRY_RATIO,
                    R_FALLBACK_RATIO,
                    R_TIMEOUT_RATIO,
                    R_BULKHEAD_REJECTION_RATIO,
                    R_RATE_LIMITED_RATIO,
                    R_RATE_LIMITER_REFUSED_RATIO,
                    R_RECOVERY_RATE,
                )
            ),
        ),
    )


def rules_test_document() -> dict[str, Any]:
    """Return the ``promtool test rules`` file (``alerts/rules_test.yml``).

    For every alert: it fires in its scenario (only after its ``for``), a nearby case stays
    silent (below the threshold, or under the minimum-traffic guard), and it resolves.
    """
    cases = (
        _breaker_open_case(),
        _breaker_flapping_case(),
        _breaker_flapping_gap_case(),
        _breaker_flapping_shared_case(),
        _breaker_flapping_replicas_case(),
        _breaker_flapping_keyed_case(),
        _breaker_would_open_case(),
        _bulkhead_full_case(),
        _bulkhead_near_case(),
        _bulkhead_near_sampled_case(),
        _bulkhead_near_keyed_case(),
        _bulkhead_queue_keyed_case(),
        _recovery_case(),
        _error_pattern_case(),
        _error_pattern_namesakes_case(),
        _retry_storm_case(),
        _fallback_case(),
        _timeouts_case(),
        _retry_budget_case(),
        _rate_limited_case(),
        _rate_limiter_refusing_case(),
        _chaos_drill_case(),
        _reload_failed_case(),
        _config_stale_case(),
        _store_degraded_case(),
        _store_flapping_case(),
        _telemetry_overflow_case(),
        _zero_traffic_case(),
    )
    return {
        "rule_files": [RULES_FILE],
        "evaluation_interval": EVALUATION_INTERVAL,
        "tests": [case.as_dict() for case in cases],
    }


def render_rules_test() -> str:
    """Return the text of ``alerts/rules_test.yml``."""
    return _yaml.dump(
        rules_test_document(),
        _yaml.generated_header(
            "otel_resilience/ops/alert_rules.py",
            "Unit tests of rules.yml: `promtool test rules rules_test.yml`.",
        ),
    )
