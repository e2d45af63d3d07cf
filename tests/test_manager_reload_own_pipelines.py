"""A reload keeps what a key's breaker, bulkhead and rate limiter counted in their own pipelines.

A keyed policy's view hands out the key's instances (``view.rate_limiter``, ...), whose verbs,
``guard()`` and ``protect`` run through the instance's own one-link pipeline, exported in
``resilience.executions`` under the policy's name. A reload reconfigures the instances in place
and rebuilds that pipeline with the new config: the new one must count on where the old one
stopped (and a function decorated before the reload, which keeps the old pipeline, must not be
counted twice), or the exported counter goes down, which a backend reads as a counter reset.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from otel_support import Otel

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.manager.policy import KeyedPolicyView
from otel_resilience.telemetry import semconv as sc

RELOADS: dict[str, tuple[ResilienceConfig, ResilienceConfig, Callable[[KeyedPolicyView], Any]]] = {
    "rate_limiter": (
        ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1000.0, burst=1000)),
        ResilienceConfig(rate_limiter=RateLimiterConfig(rate=500.0, burst=1000)),
        lambda view: view.rate_limiter,
    ),
    "circuit_breaker": (
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5)),
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=6)),
        lambda view: view.circuit_breaker,
    ),
    "bulkhead": (
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=5)),
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=6)),
        lambda view: view.bulkhead,
    ),
}


def executions(otel: Otel, policy: str) -> int:
    """``resilience.executions`` of ``policy``, summed over its series (one collection)."""
    return sum(p.value for p in otel.points(sc.EXECUTIONS) if p.attributes.get(sc.POLICY) == policy)


def noop() -> str:
    return "ok"


@pytest.mark.parametrize("kind", RELOADS)
def test_a_reload_keeps_the_executions_of_a_key_instance_s_own_pipeline(
    otel: Otel, manager: ResilienceManager, kind: str
) -> None:
    """Calls through a key's own instance stay exported after a reload, and go on counting there."""
    name = f"own-pipeline-{kind}"
    first, second, instance_of = RELOADS[kind]
    policy = manager.policy(name, first)
    instance = instance_of(policy.for_key("tenant"))
    protected = instance.protect(noop)  # decorated before the reload: it keeps the old pipeline
    for _ in range(3):
        assert instance.run_sync(noop) == "ok"
    assert protected() == "ok"
    with instance.guard() if kind != "bulkhead" else instance.slot():
        pass
    assert executions(otel, name) == 5

    manager.reconfigure(name, second)
    gc.collect()
    assert instance_of(policy.for_key("tenant")) is instance  # reconfigured in place
    assert executions(otel, name) == 5

    assert instance.run_sync(noop) == "ok"  # the rebuilt pipeline
    assert protected() == "ok"  # the old one, still held by the decorated function
    assert executions(otel, name) == 7
    del protected
    gc.collect()
    assert executions(otel, name) == 7
