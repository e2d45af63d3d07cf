"""The engine: the seam every pattern is built on, public for authors of custom strategies.

* :mod:`~otel_resilience.engine.step`: :class:`Step` (alias :class:`Strategy`), a pattern's
  rules with the one async and the one sync driver, and :data:`TERMINAL`.
* :mod:`~otel_resilience.engine.actions`: the actions a step decides (:class:`Answer`,
  :class:`Retry`, :class:`Call`), the :class:`Wait` token, the :class:`Counted` token and the
  :class:`Rejected` token.
* :mod:`~otel_resilience.engine.hedge`: :class:`Hedge`, the token that makes the async driver
  run the rest of the chain as a race of attempts (hedging).
* :mod:`~otel_resilience.engine.calling`: what the drivers accept of the protected function.
* :mod:`~otel_resilience.engine.pipeline`: :class:`PipelineBuilder`, :class:`Pipeline`.
* :mod:`~otel_resilience.engine.protecting`: a pattern's ``protect`` and its own pipeline.
* :mod:`~otel_resilience.engine.naming`: :func:`~otel_resilience.engine.naming.callable_name`,
  the display name of a user's callable (the default name of what is protected).
* :mod:`~otel_resilience.engine.guard`: ``Guard``, a block of code run under a one-step pipeline.
* :mod:`~otel_resilience.engine.admission`: the placeholder context of an early admission, and
  :class:`Standing`, a step's standing admission (:class:`UnheardStanding`: one that stands
  while nobody listens to attempts).
* :mod:`~otel_resilience.engine.stats`: :class:`PipelineStats`, the outcome counts.
* :mod:`~otel_resilience.engine.facade`: the base of every pattern's facade and link.
* :mod:`~otel_resilience.engine.waiting`: FIFO waiting for a slot, sync and async.
* :mod:`~otel_resilience.engine.closing`: giving back what a call held, from an ``on_cancel``
  or a ``finally``, without blocking on a lock while its coroutine is being closed.
* :mod:`~otel_resilience.engine.context`: :class:`ExecutionContext`, deadlines.
* :mod:`~otel_resilience.engine.clock`: the :class:`Clock` protocol and :data:`SYSTEM_CLOCK`.
* :mod:`~otel_resilience.engine.events`: the telemetry seam (events, listeners, facade);
  :class:`EventKind`, the base of a pattern's own kinds of event.
* :mod:`~otel_resilience.engine.registry`: weak registries of named instances.
* :mod:`~otel_resilience.engine.validation`: the helpers every config validates with.

The engine never imports OpenTelemetry and never imports a pattern.
"""

from __future__ import annotations

from otel_resilience.engine.admission import Standing, UnheardStanding
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, SystemClock
from otel_resilience.engine.context import (
    AsyncDeadline,
    ExecutionContext,
    SyncDeadline,
    current_deadline,
    time_remaining,
)
from otel_resilience.engine.deadline import time_left
from otel_resilience.engine.events import (
    HUB,
    Event,
    EventArgs,
    EventKind,
    ExecutionListener,
    Outcome,
    StrategyTelemetry,
    TelemetryHub,
    TelemetryListener,
    TelemetrySource,
    error_type_name,
)
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder, PipelineStats, classify_error
from otel_resilience.engine.registry import BREAKERS, BULKHEADS, PIPELINES, Registry
from otel_resilience.engine.step import TERMINAL, Answer, Call, Counted, Hedge, Rejected, Retry, Step, Wait
from otel_resilience.engine.strategy import Strategy

__all__ = [
    "BREAKERS",
    "BULKHEADS",
    "HUB",
    "PIPELINES",
    "SYSTEM_CLOCK",
    "TERMINAL",
    "Answer",
    "AsyncDeadline",
    "Call",
    "Clock",
    "Counted",
    "Event",
    "EventArgs",
    "EventKind",
    "ExecutionContext",
    "ExecutionListener",
    "Hedge",
    "Outcome",
    "Pipeline",
    "PipelineBuilder",
    "PipelineStats",
    "Registry",
    "Rejected",
    "Retry",
    "Standing",
    "Step",
    "Strategy",
    "StrategyTelemetry",
    "SyncDeadline",
    "SystemClock",
    "TelemetryHub",
    "TelemetryListener",
    "TelemetrySource",
    "UnheardStanding",
    "Wait",
    "classify_error",
    "current_deadline",
    "error_type_name",
    "time_left",
    "time_remaining",
]
