"""A loop closed while timed waits were pending (its tasks never resumed) is freed, quietly.

``loop.close()`` without cancelling the loop's tasks (a hand-run loop, a sync wrapper that runs
one call and closes) leaves a timeout scope's or a queued bulkhead call's entry in the loop's
shared timer. The closed loop, its timer and its tasks must still become garbage once the next
loop makes its timer, or at the next full collection when none does, and the abandoned calls end
without an error printed at collection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from otel_support import Otel

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    HedgingConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    fail_after,
)
from otel_resilience.engine import closing
from otel_resilience.engine import timer as timer_module
from otel_resilience.engine.events import HUB


async def _hang() -> None:
    await asyncio.Event().wait()


def _abandon(start: Callable[[], list[Coroutine[Any, Any, Any]]]) -> weakref.ref[asyncio.AbstractEventLoop]:
    """Run ``start``'s calls on a loop until they wait, then close the loop without cancelling them."""
    loop = asyncio.new_event_loop()
    tasks = [loop.create_task(call) for call in start()]
    loop.run_until_complete(asyncio.sleep(0.01))
    assert not any(task.done() for task in tasks)
    loop.close()
    del tasks
    return weakref.ref(loop)


def _timed_call_on_a_new_loop(manager: ResilienceManager) -> None:
    async def main() -> str:
        return await manager.policy("next-loop", ResilienceConfig(timeout=30.0)).execute(_ok)

    assert asyncio.run(main()) == "ok"


async def _ok() -> str:
    return "ok"


def test_a_loop_closed_with_a_pending_deadline_is_freed(unraisable: list[object]) -> None:
    """A timeout scope left pending on a closed loop keeps neither the loop nor its task."""
    manager = ResilienceManager()
    policy = manager.policy("closed-loop-deadline", ResilienceConfig(timeout=30.0))
    closed = [_abandon(lambda: [policy.execute(_hang)]) for _ in range(3)]
    _timed_call_on_a_new_loop(manager)
    gc.collect()
    assert [ref() for ref in closed] == [None, None, None]
    assert all(not ref().is_closed() for ref, _ in timer_module._TIMERS.values() if ref() is not None)
    assert unraisable == []


def test_a_loop_closed_with_a_queued_bulkhead_call_is_freed(unraisable: list[object]) -> None:
    """A bulkhead waiter left queued on a closed loop keeps neither the loop nor its slot."""
    bulkhead = Bulkhead("closed-loop-queue", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=30.0))
    closed = _abandon(lambda: [bulkhead.run(_hang), bulkhead.run(_hang)])
    gc.collect()
    _timed_call_on_a_new_loop(ResilienceManager())
    gc.collect()
    assert closed() is None
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"]) == (0, 0)
    assert unraisable == []


def test_a_call_of_a_closed_loop_ends_its_telemetry_quietly(
    otel: Otel, unraisable: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    """Its span ends, and nothing is counted or logged as a telemetry failure when the collector frees it.

    The collector closes the call's coroutine on whatever thread allocates, in that thread's
    context, not in the task's: the context the call's scopes made current went with the task.
    Restoring it there failed: a policy with spans off counted a telemetry error and logged its
    ``ValueError`` (a token of another context), and a traced call had OpenTelemetry log
    "Failed to detach context" with a traceback, once for every such call.
    """
    manager = ResilienceManager()
    traced = manager.policy("closed-loop-traced", ResilienceConfig(timeout=30.0))
    untraced = manager.policy("closed-loop-untraced", ResilienceConfig(timeout=30.0, spans=False))
    _freed_quietly(
        manager, lambda: [traced.execute(_hang), untraced.execute(_hang)], otel, unraisable, caplog
    )
    assert otel.span("closed-loop-traced").attributes["resilience.outcome"] == "cancelled"
    assert not otel.spans("closed-loop-untraced")


def _freed_quietly(
    manager: ResilienceManager,
    calls: Callable[[], list[Coroutine[Any, Any, Any]]],
    otel: Otel,
    unraisable: list[object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Abandon ``calls`` on a closed loop, have the collector free them: nothing reported, nothing logged.

    This thread's own context stays intact (a timed call on a new loop before and after), the
    interpreter reports no ignored error, the hub and the listener count no failure, and neither
    the library nor OpenTelemetry logs a warning (asyncio says the tasks were pending: they were).
    """
    errors = HUB.errors
    with caplog.at_level(logging.WARNING):
        closed = _abandon(calls)
        _timed_call_on_a_new_loop(manager)
        gc.collect()
        assert _timed_call_on_a_new_loop(manager) is None  # this thread's context is intact
        assert closing.settled(30.0)  # their telemetry, ended off the collector's thread
    assert closed() is None
    assert unraisable == []
    assert (HUB.errors, otel.listener.errors) == (errors, 0)
    ours = [
        record for record in caplog.records if record.name.startswith(("otel_resilience", "opentelemetry"))
    ]
    assert [record.getMessage() for record in ours] == []


def _failing_once() -> Callable[[], Coroutine[Any, Any, None]]:
    """A function whose first call fails and whose later ones hang."""
    calls = iter(range(2))

    async def call() -> None:
        if next(calls, 1) == 0:
            raise ConnectionError("refused")
        await _hang()

    return call


@pytest.mark.parametrize("rerun", ["retry", "recovery"])
def test_an_attempt_of_a_closed_loop_ends_its_telemetry_quietly(
    otel: Otel, unraisable: list[object], caplog: pytest.LogCaptureFixture, rerun: str
) -> None:
    """An attempt after the first (a retry's, a recovery's re-run), freed by the collector, ends quietly.

    The step ends the attempt's scope as cancelled when the collector closes the call's coroutine
    on another thread: what the attempt scope made current went with the task, as the
    execution's did. It was restored there all the same: OpenTelemetry logged "Failed to detach
    context" with a traceback, once for every such call.
    """
    manager = ResilienceManager()
    name = f"closed-loop-{rerun}"
    if rerun == "retry":
        config = ResilienceConfig(timeout=30.0, retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0))
    else:
        config = ResilienceConfig(timeout=30.0, enable_recovery=True)
        manager.recovery_system.register_recovery_rule(
            ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
        )
    policy = manager.policy(name, config)
    _freed_quietly(manager, lambda: [policy.execute(_failing_once())], otel, unraisable, caplog)
    attempts = [span for span in otel.spans() if span.attributes.get("resilience.attempt") == 2]
    assert [span.attributes["resilience.outcome"] for span in attempts] == ["cancelled"]


def test_a_call_freed_where_a_lock_of_the_sdk_is_held_ends_its_telemetry_off_that_thread(
    otel: Otel, unraisable: list[object]
) -> None:
    """The collector may free an abandoned call inside the SDK's own code, under one of its locks.

    It runs on whichever thread allocates, maybe one exporting a span or recording a measurement
    under a lock of the SDK's that is not reentrant: ending the call's span or recording its
    duration there took that lock again, and the thread hung for good (the test's timeout, 120 s,
    ended it). The call's telemetry is ended on a thread of the library's own, once the lock is free.
    """
    manager = ResilienceManager()
    policy = manager.policy("closed-under-a-lock", ResilienceConfig(timeout=30.0))
    loop = asyncio.new_event_loop()
    call = policy.execute(_hang)
    task = loop.create_task(call)
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()

    def freed_by_the_collector_under_the_lock() -> None:
        with otel.span_exporter._lock:  # an export under way on this thread
            call.close()

    thread = threading.Thread(target=freed_by_the_collector_under_the_lock, daemon=True)
    thread.start()
    thread.join(30.0)
    assert not thread.is_alive(), "the thread that freed the call hangs on a lock it holds"
    assert closing.settled(30.0)
    assert otel.span("closed-under-a-lock").attributes["resilience.outcome"] == "cancelled"
    [point] = otel.points("resilience.execution.duration")
    assert (dict(point.attributes)["resilience.outcome"], point.count) == ("cancelled", 1)
    assert unraisable == []
    del task


async def _hang_in_a_looser_scope() -> None:
    async with fail_after(300.0):  # held: the policy's earlier deadline binds the block
        await _hang()


@pytest.mark.parametrize("call", [_hang, _hang_in_a_looser_scope], ids=["scope", "held scope"])
def test_a_loop_closed_with_a_slot_holder_and_queued_calls_under_a_deadline_is_freed(
    unraisable: list[object], call: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """A slot held and calls queued under a policy's timeout on a closed loop free the slot.

    Every scope of the closed loop, the holder's and the waiters', was an entry of its timer (a
    held one in its list of held scopes): a queued waiter, which the bulkhead's queue keeps until
    a slot is passed on, kept its scope, that scope the closed loop's timer, and the timer the
    holder's scopes and so its task. The holder was never freed, its slot never given back:
    every later call waited out its queue timeout.
    """
    manager = ResilienceManager()
    config = ResilienceConfig(
        timeout=30.0, bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=10, timeout=30.0)
    )
    policy = manager.policy("closed-loop-holder", config)
    closed = _abandon(lambda: [policy.execute(call), policy.execute(call), policy.execute(call)])
    _timed_call_on_a_new_loop(manager)  # the next loop makes its timer
    gc.collect()
    gc.collect()  # the waiters, dropped from the queue as the holder's slot was given back
    assert closed() is None
    bulkhead = manager.get_resilience_statistics()["named_policies"]["closed-loop-holder"]["bulkhead"]
    assert (bulkhead["active"], bulkhead["waiting"], bulkhead["cancelled"]) == (0, 0, 2)
    assert unraisable == []


def test_a_hedged_call_of_a_closed_loop_whose_hedge_waits_for_a_slot_is_freed(
    unraisable: list[object],
) -> None:
    """A race whose hedge waits for a bulkhead slot, left on a closed loop, gives the slot to the next call.

    The hedge's attempt, queued in the bulkhead, kept its race and so the task of the attempt
    holding the slot: that call was never freed, and a call of a new loop waited out its queue
    timeout. When the collector closed an attempt's coroutine, outside any loop, the race asked
    for the running task to cancel its rivals: ``RuntimeError: no running event loop``, reported
    as ignored, once per attempt.
    """
    manager = ResilienceManager()
    config = ResilienceConfig(
        hedging=HedgingConfig(delay=0.001),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=10, timeout=30.0),
    )
    policy = manager.policy("closed-loop-hedged", config)
    closed = _abandon(lambda: [policy.execute(_hang)])

    def bulkhead() -> dict[str, int]:
        return manager.get_resilience_statistics()["named_policies"]["closed-loop-hedged"]["bulkhead"]

    async def next_call() -> str:
        call = asyncio.create_task(policy.execute(_ok))
        for _ in range(100):  # until it queued: the closed loop's attempt holds the slot
            if bulkhead()["total"] == 3:
                break
            await asyncio.sleep(0)
        gc.collect()  # (what the collector does in time)
        return await asyncio.wait_for(call, 10.0)  # 30 s, its queue timeout, before

    assert asyncio.run(next_call()) == "ok"
    gc.collect()
    assert closed() is None
    assert unraisable == []
    assert (bulkhead()["active"], bulkhead()["waiting"], bulkhead()["cancelled"]) == (0, 0, 1)


def test_an_attempt_of_a_race_on_a_closed_loop_closed_before_its_race_ends_quietly(
    unraisable: list[object],
) -> None:
    """An attempt's coroutine closed first, where no loop runs (as the collector may), raises nothing.

    The collector closes a freed cycle's coroutines in no set order: at interpreter exit an
    attempt's came before its race's. The attempt, ending a race not over yet, cancelled its
    rivals by asking for the running task: ``RuntimeError: no running event loop``, reported as
    ignored, once per attempt.
    """
    manager = ResilienceManager()
    policy = manager.policy("closed-loop-attempt-first", ResilienceConfig(hedging=HedgingConfig(delay=0.001)))
    loop = asyncio.new_event_loop()
    execution = loop.create_task(policy.execute(_hang))
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    attempts = [task for task in asyncio.all_tasks(loop) if task.get_coro().__qualname__ == "_Race.run"]
    assert len(attempts) == 2  # the original and its hedge
    for task in [*attempts, execution]:
        task.get_coro().close()  # what the collector does, the attempts first
    assert unraisable == []
    assert manager.get_resilience_statistics()["executions"]["cancelled"] == 1


@pytest.mark.parametrize("later", ["thread", "loop made before"])
def test_a_slot_held_under_a_deadline_on_a_closed_loop_comes_back_with_no_new_loop(
    unraisable: list[object], later: str
) -> None:
    """A full collection frees a closed loop's call, though no loop makes its timer after it.

    The call's scope, pending in the closed loop's timer, kept its task: only the next loop to
    make its timer dropped that timer. Where none came (the later calls are a thread's, or run
    on a loop that had made its timer before), the call was never freed and its slot never given
    back: every later call waited out its queue timeout, for good.
    """
    manager = ResilienceManager()
    config = ResilienceConfig(
        timeout=30.0, bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=10, timeout=0.05)
    )
    policy = manager.policy(f"closed-loop-no-new-loop-{later}", config)
    before = asyncio.new_event_loop()
    try:
        assert before.run_until_complete(policy.execute(_ok)) == "ok"  # its timer is made now
        closed = _abandon(lambda: [policy.execute(_hang)])
        gc.collect()
        assert closing.settled(30.0)
        assert closed() is None
        if later == "thread":
            assert policy.execute_sync(lambda: "ok") == "ok"
        else:
            assert before.run_until_complete(policy.execute(_ok)) == "ok"
    finally:
        before.close()
    stats = policy.get_stats()["bulkhead"]
    assert (stats["active"], stats["waiting"], stats["completed"]) == (0, 0, 3)
    assert unraisable == []
