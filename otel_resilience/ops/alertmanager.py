"""An example Alertmanager configuration for the shipped alert rules (``alerts/alertmanager.yml``).

The routing tree sends ``critical`` alerts to a pager receiver and ``warning`` alerts to a chat
receiver, grouped by alert name and service (``job``); ``info`` notices (a chaos drill) go to
chat too. Five inhibition rules keep one incident from paging three times, and a drill from
paging at all:

* a ``critical`` alert mutes the ``warning`` of the same alert for the same service, breaker
  and policy (the circuit breaker's severity ladder; every instance of the service: one
  breaker name is one dependency, whichever replica's breaker opened);
* an open circuit breaker mutes the bulkhead and fallback alerts of the same name in the same
  service: the breaker already rejects the calls that would fill the bulkhead or need the
  fallback (the manager names a policy's breaker, bulkhead and fallback after the policy);
* a full bulkhead mutes its own near-saturation warning;
* an open breaker or a full bulkhead mutes the error patterns of the same policy: while they
  reject calls, the errors that repeat are the dependency's, already reported (our own
  rejections are never patterns). The breaker and bulkhead alerts carry ``resilience_policy``,
  copied from their name (the manager names them after the policy);
* a chaos drill (``ResilienceChaosDrillActive``: the policy's chaos links injected something in
  the last 15 minutes) mutes, on the same policy, the alerts a drill is expected to cause, those of
  the patterns absorbing it (:data:`DRILL_MUTED`: retry storm, fallback rate, timeouts, recovery
  rate, error patterns, retry budget, bulkhead near saturation). The alerts that say callers are
  turned away are kept (an open or flapping breaker, a full bulkhead, a rate limiter shedding):
  a drill that rejects real callers has gone past what it was meant to test, and whoever runs it
  must hear of it (a stop condition). The muted alerts and the drill notice carry
  ``resilience_policy`` (the bulkhead's near-saturation alert copies it from the bulkhead's name).

The receivers are webhooks on loopback addresses, so that the file is valid and harmless as
shipped; replace them with ``pagerduty_configs`` and ``slack_configs`` (see the comments in the
file).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from otel_resilience.ops import _yaml, alert_rules, naming
from otel_resilience.telemetry import semconv as sc

__all__ = [
    "ALERTMANAGER_FILE",
    "CHAT_RECEIVER",
    "DRILL_MUTED",
    "GROUP_BY",
    "PAGER_RECEIVER",
    "ROUTE_CASES",
    "alertmanager_document",
    "inhibit_rules",
    "render_alertmanager",
]

ALERTMANAGER_FILE: Final = "alertmanager.yml"
PAGER_RECEIVER: Final = "pager"
CHAT_RECEIVER: Final = "chat"
GROUP_BY: Final = ("alertname", naming.SERVICE_LABEL)
"""Alerts are grouped by alert name and service."""

_NAME: Final = naming.label(sc.NAME)
_POLICY: Final = naming.label(sc.POLICY)
_SEVERITY: Final = "severity"

DRILL_MUTED: Final = (
    alert_rules.A_RETRY_STORM,
    alert_rules.A_FALLBACK_HIGH,
    alert_rules.A_TIMEOUTS,
    alert_rules.A_RECOVERY_LOW,
    alert_rules.A_ERROR_PATTERN,
    alert_rules.A_RETRY_BUDGET,
    alert_rules.A_BULKHEAD_NEAR,
)
"""The alerts a chaos drill mutes on its policy: those of the patterns that absorb what it injects."""

ROUTE_CASES: Final = (
    (
        {"alertname": alert_rules.A_BREAKER_OPEN, _SEVERITY: "critical", naming.SERVICE_LABEL: "shop"},
        PAGER_RECEIVER,
    ),
    (
        {"alertname": alert_rules.A_BREAKER_OPEN, _SEVERITY: "warning", naming.SERVICE_LABEL: "shop"},
        CHAT_RECEIVER,
    ),
    (
        {"alertname": alert_rules.A_RETRY_STORM, _SEVERITY: "warning", naming.SERVICE_LABEL: "shop"},
        CHAT_RECEIVER,
    ),
    (
        {"alertname": alert_rules.A_CHAOS_DRILL, _SEVERITY: "info", naming.SERVICE_LABEL: "shop"},
        CHAT_RECEIVER,
    ),
    ({"alertname": "SomethingElse", naming.SERVICE_LABEL: "shop"}, CHAT_RECEIVER),
)
"""Label sets and the receiver each must reach (checked with ``amtool config routes test``)."""


def inhibit_rules(job_label: str = naming.SERVICE_LABEL) -> list[dict[str, Any]]:
    """Return the inhibition rules (see the module docstring).

    Args:
        job_label: The label that names the service (``RuleOptions.job_label``).
    """
    muted_by_breaker = (
        f"{alert_rules.A_BULKHEAD_FULL}|{alert_rules.A_BULKHEAD_NEAR}|{alert_rules.A_FALLBACK_HIGH}"
    )
    rejecting = f"{alert_rules.A_BREAKER_OPEN}|{alert_rules.A_BULKHEAD_FULL}"
    return [
        {
            "source_matchers": [f'{_SEVERITY}="critical"'],
            "target_matchers": [f'{_SEVERITY}="warning"'],
            "equal": ["alertname", job_label, _NAME, _POLICY],
        },
        {
            "source_matchers": [f'alertname="{alert_rules.A_BREAKER_OPEN}"'],
            "target_matchers": [f'alertname=~"{muted_by_breaker}"'],
            "equal": [job_label, _NAME],
        },
        {
            "source_matchers": [f'alertname="{alert_rules.A_BULKHEAD_FULL}"'],
            "target_matchers": [f'alertname="{alert_rules.A_BULKHEAD_NEAR}"'],
            "equal": [job_label, _NAME],
        },
        {
            "source_matchers": [f'alertname=~"{rejecting}"'],
            "target_matchers": [f'alertname="{alert_rules.A_ERROR_PATTERN}"'],
            "equal": [job_label, _POLICY],
        },
        {
            "source_matchers": [f'alertname="{alert_rules.A_CHAOS_DRILL}"'],
            "target_matchers": [f'alertname=~"{"|".join(DRILL_MUTED)}"'],
            "equal": [job_label, _POLICY],
        },
    ]


def alertmanager_document(job_label: str = naming.SERVICE_LABEL) -> dict[str, Any]:
    """Return the example Alertmanager configuration as a document.

    Args:
        job_label: The label that names the service (``RuleOptions.job_label``).
    """
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": CHAT_RECEIVER,
            "group_by": ["alertname", job_label],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": [f'{_SEVERITY}="critical"'],
                    "receiver": PAGER_RECEIVER,
                    "repeat_interval": "1h",
                },
                {"matchers": [f'{_SEVERITY}="warning"'], "receiver": CHAT_RECEIVER},
            ],
        },
        "inhibit_rules": inhibit_rules(job_label),
        "receivers": [
            {
                "name": PAGER_RECEIVER,
                "webhook_configs": [{"url": "http://127.0.0.1:9095/pager", "send_resolved": True}],
            },
            {
                "name": CHAT_RECEIVER,
                "webhook_configs": [{"url": "http://127.0.0.1:9095/chat", "send_resolved": True}],
            },
        ],
    }


def render_alertmanager(
    job_label: str | None = None, *, options: alert_rules.RuleOptions | None = None, time_scale: float = 1.0
) -> str:
    """Return the text of ``alerts/alertmanager.yml``, grouped and inhibited by the service label.

    Args:
        job_label: The label that names the service; ``None`` (the default) for that of ``options``.
        options: The options of the rules exported beside it (``None``: the shipped ones); its
            header's export command names every one that differs from the shipped value.
        time_scale: The ``--time-scale`` of the rules exported beside it (1: none), named in that
            command too (the file itself has no duration to scale).
    """
    options = options or alert_rules.RuleOptions()
    if job_label is not None:
        options = replace(options, job_label=job_label)
    return _yaml.dump(
        alertmanager_document(options.job_label),
        _yaml.generated_header(
            "otel_resilience/ops/alertmanager.py",
            "An example Alertmanager configuration for rules.yml: critical -> pager, warning and info\n"
            f"-> chat, grouped by alertname and service (`{options.job_label}`); see docs/operations.md.\n"
            "Check it with `amtool check-config alertmanager.yml`.\n"
            "The receivers are loopback webhooks. For real ones, replace them, e.g.:\n"
            "  - name: pager\n"
            "    pagerduty_configs: [{routing_key: <your integration key>}]\n"
            "  - name: chat\n"
            "    slack_configs: [{api_url: <your webhook URL>, channel: '#alerts'}]",
            command=alert_rules.export_command(time_scale, options.settings),
        ),
    )
