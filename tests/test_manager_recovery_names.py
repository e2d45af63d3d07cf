"""Each manager's default recovery system has its own name, so managers' recoveries never merge.

The recovery rate, its low-rate alert and the escalation cooldown of an alert system are kept per
recovery system name (the name is what telemetry carries): two managers' default systems of one
name would count one manager's failed recoveries against the other's rate, and one manager's
escalation would silence the other's.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Iterator

import pytest

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.engine.registry import RECOVERY_SYSTEMS
from otel_resilience.errors import RecoveryEscalatedError
from otel_resilience.patterns.alerts import AlertConfig, AlertKind, AlertSystem
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.testing import FakeClock

_names = itertools.count()


def fresh(prefix: str) -> str:
    """A unique policy name, so tests never share breakers through the process-wide registry."""
    return f"{prefix}-{next(_names)}"


@pytest.fixture
def watching(clock: FakeClock) -> Iterator[AlertSystem]:
    """An alert system on the global hub (where managers report) with a small recovery window."""
    system = AlertSystem(
        AlertConfig(min_recovery_attempts=4, recovery_window=10), clock=clock, name="recovery-names-alerts"
    )
    yield system
    system.close()


def failing_manager(clock: FakeClock, alerts: AlertSystem, strategy: RecoveryStrategy) -> ResilienceManager:
    """A manager whose default recovery system acts on ConnectionError with ``strategy`` (and fails)."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    action = (
        RecoveryAction(strategy=strategy, max_attempts=1, delay=0.0)
        if strategy is RecoveryStrategy.RETRY
        else RecoveryAction(strategy=strategy)  # max_attempts and delay are RETRY's (and RESTART's)
    )
    manager.recovery_system.register_recovery_rule(ConnectionError, action)
    return manager


def down() -> None:
    raise ConnectionError("dependency down")


def fail_recoveries(manager: ResilienceManager, config: ResilienceConfig, times: int) -> None:
    for _ in range(times):
        with pytest.raises((ConnectionError, RecoveryEscalatedError)):
            manager.execute_with_resilience_sync(down, config)


def low_rate_subjects(system: AlertSystem) -> list[str]:
    return [alert.subject for alert in system.history if alert.kind is AlertKind.LOW_RECOVERY_RATE]


def test_live_managers_default_recovery_systems_have_distinct_names(clock: FakeClock) -> None:
    """Three live managers' default recovery systems have three names, each ``recovery[-n]``."""
    managers = [ResilienceManager(clock=clock) for _ in range(3)]
    names = [manager.recovery_system.name for manager in managers]
    assert len(set(names)) == 3, names
    assert all(name == "recovery" or name.startswith("recovery-") for name in names), names


def test_managers_made_at_once_in_threads_take_distinct_names(clock: FakeClock) -> None:
    """Managers made together from several threads never take the same default name."""
    barrier = threading.Barrier(8)
    made: list[ResilienceManager] = []

    def make() -> None:
        barrier.wait()
        made.append(ResilienceManager(clock=clock))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10.0)
    names = [manager.recovery_system.name for manager in made]
    assert len(names) == 8
    assert len(set(names)) == 8, names


def test_a_default_recovery_system_takes_the_first_free_name(clock: FakeClock) -> None:
    """The name is ``"recovery"`` (a manager alone in the process), else the first free ``recovery-n``."""
    gc.collect()
    free = next(
        name
        for name in itertools.chain(["recovery"], (f"recovery-{n}" for n in itertools.count(2)))
        if RECOVERY_SYSTEMS.get(name) is None
    )
    manager = ResilienceManager(clock=clock)
    assert manager.recovery_system.name == free


def test_a_default_name_is_reused_once_its_system_is_gone(clock: FakeClock) -> None:
    """The names stay bounded by the live managers: a dropped manager's name is given again."""
    gc.collect()
    kept = ResilienceManager(clock=clock)
    dropped = ResilienceManager(clock=clock)
    name = dropped.recovery_system.name
    del dropped
    gc.collect()
    again = ResilienceManager(clock=clock)
    assert again.recovery_system.name == name
    assert kept.recovery_system.name != name


def test_a_default_name_avoids_a_live_namesake_made_by_the_application(clock: FakeClock) -> None:
    """A live recovery system of the application named ``"recovery"`` keeps that name to itself."""
    gc.collect()
    own = ErrorRecoverySystem("recovery", clock=clock)
    manager = ResilienceManager(clock=clock)
    assert manager.recovery_system.name != own.name


def test_one_managers_failed_recoveries_do_not_lower_anothers_rate(
    clock: FakeClock, watching: AlertSystem
) -> None:
    """Two failures in each of two managers: neither reaches the minimum of 4 attempts alone."""
    config = ResilienceConfig(name=fresh("orders"), enable_recovery=True)
    first = failing_manager(clock, watching, RecoveryStrategy.RETRY)
    second = failing_manager(clock, watching, RecoveryStrategy.RETRY)
    fail_recoveries(first, config, 2)
    fail_recoveries(second, config, 2)
    assert low_rate_subjects(watching) == []
    fail_recoveries(first, config, 2)
    assert low_rate_subjects(watching) == [first.recovery_system.name]


def test_one_managers_escalation_does_not_silence_anothers(clock: FakeClock, watching: AlertSystem) -> None:
    """Within the escalation cooldown, a second manager's escalation of the same error still alerts."""
    config = ResilienceConfig(name=fresh("payments"), enable_recovery=True)
    first = failing_manager(clock, watching, RecoveryStrategy.ESCALATE)
    second = failing_manager(clock, watching, RecoveryStrategy.ESCALATE)
    fail_recoveries(first, config, 1)
    fail_recoveries(second, config, 1)
    escalated = [alert.subject for alert in watching.history if alert.kind is AlertKind.RECOVERY_ESCALATED]
    assert escalated == [first.recovery_system.name, second.recovery_system.name]
    assert escalated[0] != escalated[1]


def freed(name: str) -> str:
    """Collect what is gone and check that no live recovery system holds ``name`` any more."""
    gc.collect()
    assert RECOVERY_SYSTEMS.get(name) is None
    return name


def test_a_reused_name_does_not_inherit_the_gone_systems_recovery_rate(
    clock: FakeClock, watching: AlertSystem
) -> None:
    """A new manager that takes a freed name starts with an empty recovery window in every alert system."""
    config = ResilienceConfig(name=fresh("ledger"), enable_recovery=True)
    gc.collect()
    first = failing_manager(clock, watching, RecoveryStrategy.RETRY)
    fail_recoveries(first, config, 3)  # one short of min_recovery_attempts
    name = first.recovery_system.name
    del first
    freed(name)
    second = failing_manager(clock, watching, RecoveryStrategy.RETRY)
    assert second.recovery_system.name == name
    fail_recoveries(second, config, 1)
    assert low_rate_subjects(watching) == []
    fail_recoveries(second, config, 3)
    assert low_rate_subjects(watching) == [name]


def test_a_reused_name_does_not_inherit_the_gone_systems_escalation_cooldown(
    clock: FakeClock, watching: AlertSystem
) -> None:
    """Within the escalation cooldown, the first escalation of a new manager with a freed name still alerts."""
    config = ResilienceConfig(name=fresh("refunds"), enable_recovery=True)
    gc.collect()
    first = failing_manager(clock, watching, RecoveryStrategy.ESCALATE)
    fail_recoveries(first, config, 1)
    name = first.recovery_system.name
    del first
    freed(name)
    second = failing_manager(clock, watching, RecoveryStrategy.ESCALATE)
    assert second.recovery_system.name == name
    fail_recoveries(second, config, 1)
    escalated = [alert.subject for alert in watching.history if alert.kind is AlertKind.RECOVERY_ESCALATED]
    assert escalated == [name, name]


def test_a_live_namesake_keeps_the_alert_state_of_its_name(clock: FakeClock, watching: AlertSystem) -> None:
    """A second live system of one name shares its namesake's series: the escalation cooldown stays."""
    config = ResilienceConfig(name=fresh("claims"), enable_recovery=True)
    first = failing_manager(clock, watching, RecoveryStrategy.ESCALATE)
    fail_recoveries(first, config, 1)
    namesake = ErrorRecoverySystem(first.recovery_system.name, clock=clock)
    namesake.register_recovery_rule(ConnectionError, RecoveryAction(strategy=RecoveryStrategy.ESCALATE))
    with pytest.raises(RecoveryEscalatedError):
        namesake.recover_from_error_sync(ConnectionError("down"))
    escalated = [alert.subject for alert in watching.history if alert.kind is AlertKind.RECOVERY_ESCALATED]
    assert escalated == [first.recovery_system.name]


def test_the_managers_recovery_system_is_read_only_as_its_alert_system(clock: FakeClock) -> None:
    """``manager.recovery_system`` is read (to register rules on it), never assigned: an ``AttributeError``.

    Assigned, it skipped what the constructor checks: ``None`` made every later recovery raise
    an ``AttributeError`` into the call and ``get_resilience_statistics()`` fail, and a system on
    another clock (refused by the constructor) measured its re-runs' room on the wrong clock.
    """
    manager = ResilienceManager(clock=clock)
    own = manager.recovery_system
    own.register_recovery_rule(
        ValueError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value="recovered")
    )
    for replacement in (None, ErrorRecoverySystem(fresh("elsewhere"))):
        with pytest.raises(AttributeError):
            manager.recovery_system = replacement  # type: ignore[assignment]
        assert manager.recovery_system is own

    def down() -> str:
        raise ValueError("down")

    assert manager.execute_with_resilience_sync(
        down, ResilienceConfig(name=fresh("ro"), enable_recovery=True)
    ) == ("recovered")
    assert manager.get_resilience_statistics()["error_recovery"]["successful_recoveries"] == 1
