"""Chaos: inject faults, delays and fake results before the real dependency is called, marked as drills.

::

    chaos = Chaos("payments", ChaosConfig(fault_rate=0.1, fault=ConnectionError))
    result = await chaos.call(charge, order)
    config = ResilienceConfig(retry_policy=..., chaos=ChaosConfig(latency_rate=0.2, latency=3.0,
                                                                  enabled=drill))  # a ChaosSwitch
    drill.enable()

Design (Polly's Simmy model, in one link):

* **Before the call.** A run is judged before the rest of the chain runs: a delay with
  probability ``latency_rate``; then a fault (``fault_rate``) or a result (``outcome_rate``) in
  place of the call, one draw deciding between them so that each rate is its share of all runs.
  The dependency is never called for an injected fault or result.
* **Innermost in a policy** (``ResilienceConfig.chaos``, the ``chaos`` stage, inside the
  attempt timeout): retry retries an injected fault, the breaker counts it, the fallback answers
  it, the bulkhead's slot is held through an injected delay, and the attempt timeout (or the
  total one) cuts that delay, as each would for the real dependency.
* **Rules, a step, a face.** The switch, the seeded random draws and the counts live in one
  rules object (:mod:`.rules`); the step (:mod:`.step`) has one hook, ``admit``: it returns
  ``None`` (no chaos) or an injection, a ``Wait`` the engine's drivers perform (sleep the delay,
  then raise the fault, answer with the result, or run the call). The face, :class:`Chaos`, is a
  ``Pattern``; its links share the rules.
* **When.** ``ChaosConfig.enabled``: ``True``, ``False``, or a predicate of the run's
  ``ExecutionContext`` (a :class:`ChaosSwitch` is one); :meth:`Chaos.enable` /
  :meth:`Chaos.disable` switch an instance. Nothing is rebuilt when either flips; a config that
  can never inject adds no link to a policy.
* **Marked.** Every injection reports ``Event.CHAOS_INJECTED`` with
  ``ChaosInjected(kind=...)``: the ``resilience.chaos.injected`` span event and the
  ``resilience.chaos.injections`` counter (by policy, name and kind, from 0), so an operator
  tells a drill from an incident; an injected exception carries a note saying so.
"""

from __future__ import annotations

from otel_resilience.patterns.chaos.config import ChaosConfig, ChaosSwitch, Enabled, Fault
from otel_resilience.patterns.chaos.facade import Chaos
from otel_resilience.patterns.chaos.rules import ChaosStatsDict

__all__ = ["Chaos", "ChaosConfig", "ChaosStatsDict", "ChaosSwitch", "Enabled", "Fault"]
