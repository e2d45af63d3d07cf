"""The operations side: generators of the dashboards, alert rules and Collector configs we ship.

Every file in ``dashboards/``, ``alerts/`` and ``collector-config/`` (and its copy in
``otel_resilience/ops/shipped/``) is the output of these modules, and every metric and label
name in them is derived from :mod:`otel_resilience.telemetry.semconv` (never typed by hand):

* :mod:`~otel_resilience.ops.naming`: the Prometheus series and label names of our
  instruments, as the OpenTelemetry Prometheus exporter and the Collector derive them;
* :mod:`~otel_resilience.ops.alert_rules`: recording and alerting rules, their thresholds, and
  the ``promtool test rules`` cases;
* :mod:`~otel_resilience.ops.alertmanager`: an example Alertmanager routing tree;
* :mod:`~otel_resilience.ops.dashboards`: the Grafana dashboards (``grafana-foundation-sdk``);
* :mod:`~otel_resilience.ops.collector`: ``otelcol-contrib`` configurations;
* :mod:`~otel_resilience.ops.checks`: the checks that tie every query back to the registry;
* :mod:`~otel_resilience.ops.export`: writes (or checks) the committed files, and exports the
  copies shipped in the package data folder ``otel_resilience/ops/shipped/`` (dashboards, rules,
  Collector configs and runbooks; no optional dependency needed to copy them).

The optional dependencies (``PyYAML``, ``grafana-foundation-sdk``, ``promql-parser``: the
``ops`` extra) are imported inside the functions that need them, never at import time.
"""

from __future__ import annotations
