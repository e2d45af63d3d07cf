"""A manager's alert counts across the close of its alert system, with alerts raised on other threads meanwhile.

When the alert system a manager reports is closed, the manager carries its counts on with the
system standing in for the process-wide one (``_ReportedAlerts``). Each breaker opening below is
heard by both systems while both listen; the manager must count it once, whether it was raised
before, during or after the close, and whichever of the two systems a dispatch under way at the
close reaches first. The moments are set by hooks and by a listener between the two systems,
never by timing.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from otel_resilience import ResilienceManager
from otel_resilience.engine.events import (
    HUB,
    Event,
    StateChanged,
    StrategyTelemetry,
    TelemetryHub,
    TelemetrySource,
)
from otel_resilience.errors import BulkheadFullError
from otel_resilience.patterns.alerts import AlertSystem, default_alert_system, subscribe
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.testing import FakeClock


@pytest.fixture(autouse=True)
def _no_process_wide_system() -> Iterator[None]:
    """Each test starts with no alert system on the global hub, and leaves none."""
    default_alert_system().close()
    yield
    default_alert_system().close()


def open_breaker(name: str) -> None:
    """Report breaker ``name`` opening on the global hub: one ``circuit_open`` alert in each system."""
    telemetry = StrategyTelemetry(TelemetrySource("circuit_breaker", name))
    telemetry.report(Event.STATE_CHANGED, StateChanged("closed", "open", "failure_threshold"))


def on_another_thread(action: Callable[[], object]) -> None:
    """Run ``action`` to its end on another thread (its error re-raised here)."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:  # re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    if failures:
        raise failures[0]


def manager_total(manager: ResilienceManager) -> int:
    stats = manager.get_resilience_statistics()["alerts"]
    assert stats["total"] == stats["by_kind"]["circuit_open"]
    return int(stats["total"])


class _ActsOnTheWay:
    """A listener between the alert systems: when breaker ``subject`` opens, another thread runs ``action``.

    The dispatch of that opening waits for the action to end, then goes on to the listeners after
    this one: it reached the systems before this listener before the action, the others after it.
    """

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.action: Callable[[], object] | None = None

    def on_event(self, source: TelemetrySource, event: Event, args: Any) -> None:
        action = self.action
        if event is Event.STATE_CHANGED and source.name == self.subject and action is not None:
            self.action = None
            on_another_thread(action)


@pytest.mark.parametrize("first", ["closed", "successor"])
def test_an_alert_on_its_way_while_the_managers_system_closes_is_counted_once(
    clock: FakeClock, first: str
) -> None:
    """A breaker opening dispatched while another thread closes the manager's system counts once.

    The dispatch reaches one system before the close and the other after it: with the successor
    first, it counted the alert before the close and the closed system then drops it (it was
    lost); with the closed system first, it counted the alert and the successor counted it again
    after the close (it was counted twice).
    """
    between = _ActsOnTheWay("on-its-way")
    systems: list[AlertSystem] = []
    try:
        if first == "successor":
            systems.append(default_alert_system())  # the process-wide one, before the manager's
            HUB.add_listener(between)
            systems.append(own := AlertSystem(clock=clock))
        else:
            systems.append(own := AlertSystem(clock=clock))
            HUB.add_listener(between)
            systems.append(AlertSystem(clock=clock))  # the application's second, which takes over
        manager = ResilienceManager(clock=clock, alert_system=own)
        open_breaker("before")
        between.action = own.close
        open_breaker("on-its-way")
        assert own.closed
        open_breaker("after")
        assert manager_total(manager) == 3
        successor = manager.alert_system
        assert successor is not own
        assert successor in systems
        assert [alert.subject for alert in successor.history] == ["before", "on-its-way", "after"]
    finally:
        HUB.remove_listener(between)
        for system in systems:
            system.close()


@pytest.mark.parametrize("moment", ["looking-for-the-successor", "leaving-the-hub"])
def test_an_alert_raised_on_another_thread_while_close_runs_is_counted_once(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """A breaker opening raised (from start to end, on another thread) while close() runs counts once.

    It is raised as close() asks the hub which systems listen (looking for the successor), or
    just after it left the hub: the closed system must either have counted it, or leave it to
    the successor's counts since the close.
    """
    process_wide = default_alert_system()
    own = AlertSystem(clock=clock)
    manager = ResilienceManager(clock=clock, alert_system=own)
    open_breaker("before")
    raised: list[str] = []
    closing = threading.current_thread()

    def raise_once() -> None:
        if threading.current_thread() is closing and not raised:
            raised.append("during-the-close")
            on_another_thread(lambda: open_breaker("during-the-close"))

    if moment == "looking-for-the-successor":
        listens = TelemetryHub.listens

        def asked(hub: TelemetryHub, listener: object) -> bool:
            raise_once()
            return listens(hub, listener)

        monkeypatch.setattr(TelemetryHub, "listens", asked)
    else:
        remove_listener = TelemetryHub.remove_listener

        def removed(hub: TelemetryHub, listener: object) -> None:
            remove_listener(hub, listener)
            raise_once()

        monkeypatch.setattr(TelemetryHub, "remove_listener", removed)
    own.close()
    monkeypatch.undo()
    assert raised == ["during-the-close"]
    open_breaker("after")
    assert manager_total(manager) == 3
    assert manager.alert_system is process_wide
    assert [alert.subject for alert in process_wide.history] == ["before", "during-the-close", "after"]


def test_a_successor_gone_before_the_manager_moved_on_leaves_the_counts_to_the_next_that_listened(
    clock: FakeClock,
) -> None:
    """The system standing in at the close is dropped before the manager reads: the next one counts from the close.

    It listened at the close too and heard the same events since, so the manager counts its
    alerts since the close, not those it raised before (which the closed system counted).
    """
    own = AlertSystem(clock=clock)
    dropped = AlertSystem(clock=clock)  # stands in at own's close
    third = AlertSystem(clock=clock)
    manager = ResilienceManager(clock=clock, alert_system=own)
    try:
        for name in ("first", "second", "third"):
            open_breaker(name)
        assert manager_total(manager) == 3
        own.close()
        gone = weakref.ref(dropped)
        del dropped
        gc.collect()
        assert gone() is None
        open_breaker("after")
        assert manager_total(manager) == 4
        assert manager.alert_system is third
    finally:
        third.close()


def test_an_alert_on_its_way_past_two_closes_is_counted_once_though_the_manager_read_its_counts_meanwhile(
    clock: FakeClock,
) -> None:
    """The successor closed in turn and the manager moved past both while an event was on its way: counted once.

    The opening reaches the process-wide system (counted before the first close), then waits
    while another thread closes the manager's system and the process-wide one, and reads the
    manager's counts; it reaches the closed manager's system after that (which settles it), and
    the third system last. The counts never go down, and end with each opening once.
    """
    totals: list[int] = []
    between = _ActsOnTheWay("on-its-way")
    systems: list[AlertSystem] = []
    try:
        systems.append(process_wide := default_alert_system())
        HUB.add_listener(between)
        systems.append(own := AlertSystem(clock=clock))
        systems.append(third := AlertSystem(clock=clock))
        manager = ResilienceManager(clock=clock, alert_system=own)
        open_breaker("before")
        totals.append(manager_total(manager))

        def close_both_and_read() -> None:
            own.close()
            process_wide.close()
            totals.append(manager_total(manager))

        between.action = close_both_and_read
        open_breaker("on-its-way")
        totals.append(manager_total(manager))
        open_breaker("after")
        totals.append(manager_total(manager))
        assert manager.alert_system is third
        assert totals == [1, 1, 2, 3]
    finally:
        HUB.remove_listener(between)
        for system in systems:
            system.close()


@pytest.mark.parametrize("holder", ["heard-first", "heard-last"])
def test_an_alert_on_its_way_while_the_subscriptions_holder_closes_is_delivered_once(
    clock: FakeClock, holder: str
) -> None:
    """A ``subscribe()`` subscription gets an opening dispatched across its holder's close once.

    The close hands the subscription to the system listening beside the holder. The dispatch
    reaches one of the two before the close and the other after it: with the holder first, it
    delivered the alert there and the successor delivered it again after the close (twice);
    with the successor first (the holder registered on the hub again, after it), the successor
    raised it before the subscription came and the closed holder dropped it (never delivered).
    The counts take one alert for that opening either way: the delivery must match them.
    """
    between = _ActsOnTheWay("on-its-way")
    seen: list[str] = []
    own = AlertSystem(clock=clock)  # the oldest listening: it holds the subscriptions
    unsubscribe = subscribe(lambda alert: seen.append(alert.subject))
    successor = AlertSystem(clock=clock)
    manager = ResilienceManager(clock=clock, alert_system=own)
    try:
        HUB.add_listener(between)
        if holder == "heard-last":
            HUB.remove_listener(own)
            HUB.add_listener(own, weak=True)  # now after the successor and the listener between
        else:
            HUB.remove_listener(successor)
            HUB.add_listener(successor, weak=True)  # after the listener between
        open_breaker("before")
        between.action = own.close
        open_breaker("on-its-way")
        assert own.closed
        open_breaker("after")
        assert seen == ["before", "on-its-way", "after"]
        assert manager_total(manager) == 3
        assert manager.alert_system is successor
    finally:
        unsubscribe()
        HUB.remove_listener(between)
        own.close()
        successor.close()


def test_a_subscriber_error_of_a_delivery_under_way_at_the_close_is_counted_after_the_manager_moved_on(
    clock: FakeClock,
) -> None:
    """A subscriber of the closed system fails after the manager moved on: its error is still counted.

    The alert was raised before the close; its delivery (on another thread) goes on past it, and
    past the manager reading its counts (which moves it on to the successor). The closed system
    counts the error when it happens: the manager's ``callback_errors`` must too.
    """
    own = AlertSystem(clock=clock)
    successor = AlertSystem(clock=clock)
    manager = ResilienceManager(clock=clock, alert_system=own)
    delivering, fail_now = threading.Event(), threading.Event()

    def failing(alert: object) -> None:
        delivering.set()
        assert fail_now.wait(timeout=10)
        raise RuntimeError("subscriber failed")

    own.subscribe(failing)
    raising = threading.Thread(target=lambda: open_breaker("delivered-past-the-close"))
    try:
        raising.start()
        assert delivering.wait(timeout=10)
        own.close()
        assert manager.get_resilience_statistics()["alerts"]["callback_errors"] == 0
        assert manager.alert_system is successor
        fail_now.set()
        raising.join(timeout=10)
        assert not raising.is_alive()
        assert own.get_stats()["callback_errors"] == 1
        stats = manager.get_resilience_statistics()["alerts"]
        assert stats["callback_errors"] == 1
        assert stats["total"] == 1
    finally:
        fail_now.set()
        raising.join(timeout=10)
        own.close()
        successor.close()


def test_two_rejections_of_one_bulkhead_either_side_of_a_close_are_two_alerts(clock: FakeClock) -> None:
    """A bulkhead reports each rejection with the same objects: the next one is not the last one's dispatch.

    The manager's system alerts on the first rejection; it is closed, the system made since
    stands in, and alerts on the second. Both are counted, and the ``subscribe()`` subscription
    handed over at the close gets both.
    """
    own = AlertSystem(clock=clock)
    AlertSystem(clock=clock).close()  # one listened beside it for a moment: it keeps its records
    manager = ResilienceManager(clock=clock, alert_system=own)
    seen: list[str] = []
    unsubscribe = subscribe(lambda alert: seen.append(alert.subject))
    bulkhead = Bulkhead("pool", BulkheadConfig(max_concurrent=1, max_waiting=0), clock=clock)

    def rejected() -> None:  # the inner call finds the outer one's slot taken
        with pytest.raises(BulkheadFullError):
            bulkhead.execute_sync(bulkhead.execute_sync, lambda: None)

    successor = None
    try:
        rejected()
        successor = AlertSystem(clock=clock)
        own.close()
        rejected()
        assert own.get_stats()["total"] == successor.get_stats()["total"] == 1
        assert manager.get_resilience_statistics()["alerts"]["by_kind"]["bulkhead_full"] == 2
        assert seen == ["pool", "pool"]
    finally:
        unsubscribe()
        if successor is not None:
            successor.close()
