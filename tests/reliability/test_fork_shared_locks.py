"""A child forked while another thread holds a lock shared by many objects, or made on first need.

The namesake warnings', chaos draws', a policy's key builds' and the alert systems' locks: one
held at the fork by a thread the child lacks would hang the child's first namesake, chaos link,
new key or alert.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from forking_support import held_by_another_thread, run_in_child

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.engine import registry
from otel_resilience.patterns.alerts import AlertKind, AlertSystem
from otel_resilience.patterns.alerts import system as alert_system
from otel_resilience.patterns.chaos import ChaosConfig
from otel_resilience.patterns.chaos import rules as chaos_rules
from otel_resilience.testing import FakeClock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


class _World:
    """A keyed policy with a breaker and chaos, and an alert system, each used once."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.manager = ResilienceManager(clock=self.clock)
        self.alerts = AlertSystem(clock=self.clock)
        self.policy = self.manager.policy(
            "forked-shared",
            ResilienceConfig(
                circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
                chaos=ChaosConfig(fault_rate=0.0),
            ),
        )
        self.policy.for_key("tenant-a").execute_sync(lambda: 1)

    def use(self) -> None:
        """A new key, a namesake with chaos, a namesake warning, and a breaker's alert."""
        assert self.policy.for_key("tenant-b").execute_sync(lambda: 2) == 2
        other = ResilienceManager(clock=self.clock)
        made = other.policy("forked-shared", ResilienceConfig(chaos=ChaosConfig(fault_rate=0.0)))
        assert made.execute_sync(lambda: 3) == 3
        assert registry.NamesakeOwner().first_warning("kind", "name")

        def fail() -> None:
            raise OSError("down")

        with pytest.raises(OSError):
            self.policy.for_key("tenant-c").execute_sync(fail)
        with pytest.raises(CircuitOpenError):
            self.policy.for_key("tenant-c").execute_sync(fail)
        assert any(alert.kind is AlertKind.CIRCUIT_OPEN for alert in self.alerts.history)
        assert self.alerts.get_stats()["total"] >= 1


LOCKS: dict[str, Callable[[_World], Any]] = {
    "the namesake warnings'": lambda _: registry._WARNINGS,
    "the chaos draws'": lambda _: chaos_rules._DRAWING,
    "a policy's key builds'": lambda world: world.policy._building,
    "an alert system's": lambda world: world.alerts._lock,
    "the alert systems'": lambda _: alert_system._ALERT_SYSTEMS_LOCK,
}


@pytest.mark.parametrize("holder", list(LOCKS))
def test_a_child_forked_while_a_shared_lock_is_held_works(holder: str) -> None:
    """The child finds the lock free: its new key, chaos link, warning and alert come (none hangs)."""
    world = _World()
    with held_by_another_thread(LOCKS[holder](world)):
        code = run_in_child(world.use, timeout=20.0)
    assert code == 0
