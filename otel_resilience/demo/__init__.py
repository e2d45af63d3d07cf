"""The ``otel-resilience demo``: a simulated system with failing dependencies, live and measured.

Three simulated dependencies (an ML service that fails in bursts, a database with a heavy
latency tail, a flaky remote content-analysis API) are called through one
:class:`~otel_resilience.ResilienceManager` with the typical configurations of the
specification. A scenario (:mod:`otel_resilience.demo.scenarios`) decides, from a seed, when
each dependency is healthy, failing, down or slow; the policies' chaos links inject its faults
(:mod:`otel_resilience.demo.faults`), so that the telemetry marks each one as a drill. The run
exports OpenTelemetry metrics on ``/metrics`` (and over OTLP on request), shows a live view, and
ends with a summary of the figures the design document claims
(:mod:`otel_resilience.demo.summary`).

Nothing here is imported by ``import otel_resilience``: the demo's dependencies (the
OpenTelemetry SDK and exporters, ``prometheus-client``, ``rich``) are the ``demo`` extra.

* :mod:`~otel_resilience.demo.options`: :class:`~otel_resilience.demo.options.DemoOptions`.
* :mod:`~otel_resilience.demo.scenarios`: the fault schedules (pure, seeded).
* :mod:`~otel_resilience.demo.services`: the simulated dependencies (their service time).
* :mod:`~otel_resilience.demo.faults`: their faults, as chaos links on the scenario's clock.
* :mod:`~otel_resilience.demo.policies`: the configurations (hedging on the database).
* :mod:`~otel_resilience.demo.system`: the manager and the load.
* :mod:`~otel_resilience.demo.replicas`: the service as replicas sharing state through Redis
  (``--redis-url``).
* :mod:`~otel_resilience.demo.relay`: a relay in front of Redis that drops out on a schedule
  (``--redis-drops``).
* :mod:`~otel_resilience.demo.monitor`: what the run observed (events, alerts, latencies).
* :mod:`~otel_resilience.demo.history`: the breakers' state changes and recovery times, reduced as
  they arrive (exact, in constant memory).
* :mod:`~otel_resilience.demo.summary`: the end-of-run figures (text and JSON).
* :mod:`~otel_resilience.demo.view`: the live view (``rich``) and the plain line output.
* :mod:`~otel_resilience.demo.otel`: the OpenTelemetry SDK, ``/metrics`` and OTLP.
* :mod:`~otel_resilience.demo.app`: :func:`~otel_resilience.demo.app.run_demo`.
"""

from __future__ import annotations

__all__: list[str] = []
