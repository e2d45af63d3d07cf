"""The simulated dependencies' faults, injected by the library's chaos links, on the scenario's clock.

Every error a dependency raises, every refused connection and the database's heavy tail come
from :class:`~otel_resilience.ChaosConfig` links in the dependency's policy, innermost (inside
the attempt timeout, in front of the dependency), so that the real chaos feature injects them and
marks each one as a drill: the ``resilience.chaos.injected`` span event, the
``resilience_chaos_injections_total`` series, the note on the injected exception.

A chaos link injects at fixed rates, while a dependency's error rate changes with the schedule
(1 % for the ML service, 40 % in a burst, 100 % when it is down ...). So each distinct fault
behaviour of a dependency in the scenario is one link, with that behaviour's rates, switched on
by a predicate of the scenario clock while the dependency is in it (:class:`While`):

* the **baseline** behaviour (the dependency's own 1 %, 3 % or 0.2 % errors, and the database's
  heavy tail) is the policy's own link, ``ResilienceConfig(chaos=...)``, named after the policy;
* every other behaviour of the schedule (``burst``, ``down``, ``storm``, ``strained``) is a
  :class:`~otel_resilience.Chaos` of its own, named ``<policy>.<condition>`` and placed just
  inside the chaos stage with an :class:`~otel_resilience.ExtraStrategy`.

At any moment exactly one link of a dependency is on. A condition that differs from another only
in what the simulated dependency does itself (its service time: the brownout's climbing median,
the surge's extra load) shares that condition's link. Each link draws from its own generator,
seeded from ``--seed`` and its name.

What a link injects, by behaviour: ``error_rate`` -> ``fault_rate`` (``QueryError`` for the
database, ``TransientServiceError`` for the others: an injected fault fails at once, like a 503
from a load balancer, without the dependency's latency); ``down`` -> every call refused
(``ServiceUnavailableError``) after the refusal's delay (``latency``); ``slow_rate`` and
``slow_latency`` -> ``latency_rate`` and ``latency`` (a delay before the call, that the attempt or
total timeout cuts as it would a slow dependency).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from otel_resilience import Chaos, ChaosConfig, ExtraStrategy
from otel_resilience.demo.services import (
    DependencyError,
    QueryError,
    ServiceUnavailableError,
    TransientServiceError,
)

if TYPE_CHECKING:
    from otel_resilience.demo.scenarios import Condition, Scenario
    from otel_resilience.engine.context import ExecutionContext

__all__ = ["DependencyFaults", "FaultKey", "While", "build_faults", "fault_key"]

_CHAOS_STAGE: Final = "chaos"
"""The manager's stage the extra links go just inside (next to the policy's own chaos link)."""

FaultKey = tuple[float, bool, float, float, float]
"""What a chaos link injects for a condition: error rate, down, slow rate, slow latency, and the
refusal's delay when down (production seconds)."""


def fault_key(condition: Condition) -> FaultKey:
    """Return what a chaos link must inject for ``condition`` (conditions with one key share a link)."""
    refusal = condition.latency if condition.down else 0.0
    return (condition.error_rate, condition.down, condition.slow_rate, condition.slow_latency, refusal)


class While:
    """A chaos predicate: whether a dependency is in a condition with this fault key now.

    Args:
        condition: Returns the dependency's current condition (its ``state().condition``).
        key: The fault key of the link it switches.
    """

    __slots__ = ("_condition", "key")

    def __init__(self, condition: Callable[[], Condition], key: FaultKey) -> None:
        self._condition = condition
        self.key = key

    def __call__(self, ctx: ExecutionContext) -> bool:  # noqa: ARG002 - the schedule decides, not the call
        """Return whether the dependency's condition has this link's fault key."""
        return fault_key(self._condition()) == self.key


@dataclass(frozen=True, slots=True)
class DependencyFaults:
    """The chaos links of one dependency's policy.

    Attributes:
        policy: The policy (and dependency) name.
        baseline: The policy's own chaos config (``ResilienceConfig.chaos``), or ``None`` when its
            baseline injects nothing.
        extra: The other behaviours' chaos instances, by condition label.
    """

    policy: str
    baseline: ChaosConfig | None
    extra: tuple[tuple[str, Chaos], ...] = ()

    def strategies(self) -> tuple[ExtraStrategy, ...]:
        """Return the extra links, each placed just inside the policy's chaos stage."""
        return tuple(ExtraStrategy(chaos.as_strategy, inside=_CHAOS_STAGE) for _, chaos in self.extra)


def _seed(name: str, seed: int) -> int:
    """A link's seed, from the run's ``--seed`` and the link's name."""
    return zlib.crc32(f"{name}:{seed}".encode())


def _config(
    policy: str, condition: Condition, predicate: While, *, name: str, seed: int, time_scale: float
) -> ChaosConfig | None:
    """The chaos config that injects what ``condition`` says (``None`` when it injects nothing)."""
    error: DependencyError
    if condition.down:
        error = ServiceUnavailableError(f"{policy}: connection refused")
        fault_rate, latency_rate, delay = 1.0, 1.0 if condition.latency > 0 else 0.0, condition.latency
    else:
        kind = QueryError if policy == "database" else TransientServiceError
        error = kind(f"{policy}: transient failure")
        fault_rate, latency_rate, delay = condition.error_rate, condition.slow_rate, condition.slow_latency
    if not fault_rate and not latency_rate:
        return None
    return ChaosConfig(
        fault_rate=fault_rate,
        fault=error if fault_rate else None,
        latency_rate=latency_rate,
        latency=delay * time_scale if latency_rate else 0.0,
        enabled=predicate,
        seed=_seed(name, seed),
    )


def build_faults(
    policy: str, scenario: Scenario, condition: Callable[[], Condition], *, seed: int, time_scale: float
) -> DependencyFaults:
    """Return the chaos links that inject the faults of ``policy``'s dependency in ``scenario``.

    Args:
        policy: The dependency, and its policy's name.
        scenario: The schedule (its plan of the dependency lists every condition it can be in).
        condition: Returns the dependency's condition now (on the scenario clock).
        seed: The run's seed.
        time_scale: Demo seconds per production second (the injected delays are scaled by it).

    Returns:
        The baseline link's config and the other behaviours' chaos instances.
    """
    plan = scenario.plans[policy]
    baseline_key = fault_key(plan.baseline)
    baseline = _config(
        policy,
        plan.baseline,
        While(condition, baseline_key),
        name=policy,
        seed=seed,
        time_scale=time_scale,
    )
    extra: list[tuple[str, Chaos]] = []
    seen = {baseline_key}
    for window in plan.windows:
        key = fault_key(window.condition)
        if key in seen:
            continue
        seen.add(key)
        name = f"{policy}.{window.condition.label}"
        config = _config(
            policy, window.condition, While(condition, key), name=name, seed=seed, time_scale=time_scale
        )
        if config is not None:
            extra.append((window.condition.label, Chaos(name, config)))
    return DependencyFaults(policy, baseline, tuple(extra))
