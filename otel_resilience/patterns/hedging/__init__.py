"""Hedging: more attempts of a slow (or failed) call, side by side; the first acceptable answer wins.

::

    hedging = Hedging("search", HedgingConfig(delay=0.05))          # latency mode
    result = await hedging.call(search, query)

    HedgingConfig(delay=PercentileDelay(initial=0.05, percentile=95))  # follows the latency
    HedgingConfig(mode="fallback", actions=(search_other_region,))   # on failure, the next
    ResilienceConfig(hedging=HedgingConfig(delay=0.05), retry_policy=RetryPolicy(budget=budget))

A dependency whose latency has a heavy tail (most calls fast, a few very slow) makes the slow
few the callers' p99; a second attempt started when the first has taken longer than usual
answers those callers in "delay + a usual call" instead. The price is load: every hedge is a
call, so hedges draw on a :class:`~otel_resilience.patterns.retry.RetryBudget` when one is configured.

Design:

* **Rules, a step, a face**, as every pattern: the decisions live in the step (:mod:`.step`:
  the delay, what is acceptable, which function an attempt calls, the budget); the engine's
  async driver runs the race (:mod:`otel_resilience.engine.hedge`): it starts the attempts as
  tasks, waits, cancels the losers **and awaits them**, so no task outlives an execution.
* **Modes** (:attr:`HedgingConfig.mode`): ``"latency"`` hedges after ``delay`` (a number or a
  function such as :class:`PercentileDelay`), and at once after a failure; ``"parallel"``
  starts every attempt at once; ``"fallback"`` starts the next only after a failure.
* **Acceptable outcome**: a result ``hedge_on_result`` does not reject, or an error ``hedge_on``
  does not match. With none, the original's outcome is the execution's (a result it returned
  counts as a failure). A rejection by a link of the same pipeline inside the hedging (its
  breaker, bulkhead, rate limiter) starts no further hedge (:class:`HedgingConfig`).
* **Async only**; the sync API raises ``TypeError``.
* **Telemetry**: each attempt of a hedged execution is an attempt scope typed ``original`` or
  ``hedge`` (an attempt span with ``resilience.attempt.type``, losers ended ``cancelled``);
  ``Event.HEDGE_STARTED`` (``resilience.hedging.hedges``) for each hedge that ran, as the race
  ends (not one the policy's own link rejected: a ``HEDGE_DENIED``, ``rejected``; nor one
  still waiting in its queue or for its permit when the race ended: reported nowhere), and
  ``Event.HEDGE_WON`` (``resilience.hedging.wins``, a span event on the winner's span) when
  more than one attempt ran.
"""

from __future__ import annotations

from otel_resilience.patterns.hedging.config import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_ATTEMPTS_LIMIT,
    MODES,
    HedgeBudget,
    HedgeDelay,
    HedgingConfig,
    HedgingMode,
)
from otel_resilience.patterns.hedging.facade import Hedging
from otel_resilience.patterns.hedging.latency import MAX_SAMPLES, LatencyObserver, PercentileDelay
from otel_resilience.patterns.hedging.step import HedgingStatsDict

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_ATTEMPTS_LIMIT",
    "MAX_SAMPLES",
    "MODES",
    "HedgeBudget",
    "HedgeDelay",
    "Hedging",
    "HedgingConfig",
    "HedgingMode",
    "HedgingStatsDict",
    "LatencyObserver",
    "PercentileDelay",
]
