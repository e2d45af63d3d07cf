"""Reloads racing with calls: no slot or permit is leaked or counted twice, whatever the interleaving."""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitOpenError,
    CountWindow,
    ExtraStrategy,
    KeyedPolicyView,
    PolicyHandle,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.engine.events import Event
from otel_resilience.engine.step import Step
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.circuit_breaker.config import DEFAULT_FAILURE_THRESHOLD
from otel_resilience.testing import EventRecorder, FakeClock

KEYS = ("a", "b")
CONFIGS = tuple(
    ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            # a streak's setting: refused beside a window, as a window's setting is without one
            failure_threshold=threshold if window is None else DEFAULT_FAILURE_THRESHOLD,
            half_open_max_calls=probes,
            timeout=timeout,
            sliding_window=window,
            minimum_calls=None if window is None else 2,  # a window's setting: refused without one
        ),
        # a queue's setting: refused without a queue, where no call waits
        bulkhead_config=BulkheadConfig(
            max_concurrent=slots, max_waiting=queue, timeout=600.0 if queue else BulkheadConfig().timeout
        ),
    )
    for threshold, probes, timeout, window, slots, queue in (
        (1, 1, 10.0, None, 1, 0),
        (2, 2, 30.0, None, 2, 2),
        (3, 1, 10.0, CountWindow(4), 3, 1),
        (2, 2, 30.0, CountWindow(4), 1, 2),
        (1, 2, 10.0, None, 3, 0),
    )
)
_names = itertools.count()

_START = st.tuples(st.just("start"), st.sampled_from(KEYS), st.booleans())
OPS = st.lists(
    st.one_of(
        _START,
        _START,
        st.tuples(st.just("finish"), st.integers(0, 30), st.booleans()),
        st.tuples(st.just("reload"), st.integers(0, len(CONFIGS) - 1), st.booleans()),
        st.tuples(st.just("advance"), st.just(31), st.booleans()),
    ),
    max_size=40,
)


@dataclass
class Call:
    """One call through a key's view: released by its gate, raising or returning then."""

    key: str
    fail: bool
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: bool = False
    over_limit: bool = False
    task: asyncio.Task[Any] | None = None
    view: KeyedPolicyView | None = None

    async def work(self) -> str:
        self.entered = True
        assert self.view is not None
        stats = self.view.bulkhead.stats  # admitted just now (the queue was served since the last reload)
        self.over_limit = stats.active > stats.max_concurrent
        await self.gate.wait()
        if self.fail:
            raise ConnectionError(self.key)
        return "ok"


async def settle() -> None:
    for _ in range(6):
        await asyncio.sleep(0)


def check_slots(view: KeyedPolicyView, calls: list[Call]) -> None:
    """The key's bulkhead holds exactly the calls running in it, and queues exactly those waiting."""
    assert not any(c.over_limit for c in calls), "a call was admitted while the bulkhead was at its limit"
    mine = [c for c in calls if c.key == view.key and c.task is not None and not c.task.done()]
    bulkhead = view.bulkhead
    assert bulkhead.stats.active == sum(c.entered for c in mine)
    assert bulkhead.stats.waiting == sum(not c.entered for c in mine)
    breaker = view.circuit_breaker
    assert breaker.get_stats()["half_open_in_flight"] <= breaker.config.half_open_max_calls


def check_totals(view: KeyedPolicyView, calls: list[Call]) -> None:
    """Once every call ended, each was counted exactly once, by its outcome, and nothing is held."""
    outcomes = Counter()
    for call in (c for c in calls if c.key == view.key):
        assert call.task is not None
        error = call.task.exception()
        outcomes[type(error).__name__ if error is not None else "ok"] += 1
    assert set(outcomes) <= {"ok", "ConnectionError", "CircuitOpenError", "BulkheadFullError"}
    bulkhead = view.bulkhead.get_stats()
    assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0)
    assert bulkhead["total"] == bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"]
    assert bulkhead["rejected"] == outcomes["BulkheadFullError"]
    breaker = view.circuit_breaker.get_stats()
    assert breaker["half_open_in_flight"] == 0
    assert breaker["total_successes"] == outcomes["ok"]
    assert breaker["total_failures"] == outcomes["ConnectionError"]
    assert breaker["total_rejected"] == outcomes["CircuitOpenError"]
    assert breaker["total_ignored"] == outcomes["BulkheadFullError"]  # the bulkhead is inside the breaker
    assert breaker["total_cancelled"] == 0


async def interleave(ops: list[tuple[str, Any, bool]]) -> None:
    clock = FakeClock(1000.0)
    alerts = AlertSystem(name="races-alerts", clock=clock)
    try:
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        policy = manager.policy(f"races-{next(_names)}", CONFIGS[1])
        calls: list[Call] = []
        for op, arg, flag in ops:
            if op == "start":
                call = Call(arg, flag, view=policy.for_key(arg))
                call.task = asyncio.create_task(policy.for_key(arg).execute(call.work))
                calls.append(call)
            elif op == "finish" and calls:
                calls[arg % len(calls)].gate.set()
            elif op == "reload":
                manager.reconfigure(policy.name, CONFIGS[arg])
            elif op == "advance":
                clock.advance(arg)
            await settle()
            for key in KEYS:
                check_slots(policy.for_key(key), calls)
        for call in calls:
            call.gate.set()
        await asyncio.gather(*(c.task for c in calls if c.task is not None), return_exceptions=True)
        for key in KEYS:
            check_totals(policy.for_key(key), calls)
        assert policy.get_stats()["executions"]["total"] == len(calls)
    finally:
        alerts.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
@example(
    [("start", "a", False)] * 3 + [("reload", 0, False), ("finish", 0, False)]
)  # shrink, then a slot frees
def test_calls_and_reloads_interleaved_leak_and_double_no_slot_or_permit(
    ops: list[tuple[str, Any, bool]],
) -> None:
    """Any interleaving of calls, their ends, reloads and time leaves every slot accounted for."""
    asyncio.run(interleave(ops))


class Ledger:
    """What the workers saw: outcomes per key and the most calls running at once in one key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: Counter[str] = Counter()
        self.peak = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.unexpected: list[BaseException] = []

    def enter(self, key: str) -> None:
        with self.lock:
            self.running[key] += 1
            self.peak = max(self.peak, self.running[key])

    def leave(self, key: str) -> None:
        with self.lock:
            self.running[key] -= 1

    def record(self, key: str, error: BaseException | None) -> None:
        with self.lock:
            if error is None:
                self.outcomes[key, "ok"] += 1
            elif isinstance(error, (ConnectionError, CircuitOpenError, BulkheadFullError)):
                self.outcomes[key, type(error).__name__] += 1
            else:
                self.unexpected.append(error)


RELOADS = tuple(
    ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=threshold, timeout=0.01),
        bulkhead_config=BulkheadConfig(max_concurrent=slots, max_waiting=16, timeout=10.0),
    )
    for threshold, slots in ((3, 1), (5, 4), (4, 2), (6, 3))
)
WORKER_CALLS = 60
KEYS3 = ("x", "y", "z")


class Workers:
    """4 threads and 4 asyncio tasks (in a loop of their own thread) calling the keys of one policy."""

    def __init__(self, policy: PolicyHandle, seen: Ledger) -> None:
        self.policy = policy
        self.seen = seen

    def sync_call(self, key: str, n: int) -> None:
        self.seen.enter(key)
        try:
            time.sleep(0.0005)
            if n % 4 == 0:
                raise ConnectionError(key)
        finally:
            self.seen.leave(key)

    async def async_call(self, key: str, n: int) -> None:
        self.seen.enter(key)
        try:
            await asyncio.sleep(0.0005)
            if n % 4 == 0:
                raise ConnectionError(key)
        finally:
            self.seen.leave(key)

    def thread_worker(self, worker: int) -> None:
        for n in range(WORKER_CALLS):
            key = KEYS3[(worker + n) % 3]
            try:
                self.policy.for_key(key).execute_sync(self.sync_call, key, n)
                self.seen.record(key, None)
            except BaseException as error:
                self.seen.record(key, error)

    async def task_worker(self, worker: int) -> None:
        for n in range(WORKER_CALLS):
            key = KEYS3[(worker + n) % 3]
            try:
                await self.policy.for_key(key).execute(self.async_call, key, n)
                self.seen.record(key, None)
            except BaseException as error:
                self.seen.record(key, error)

    async def tasks(self) -> None:
        await asyncio.gather(*(self.task_worker(w) for w in range(4)))

    def threads(self) -> list[threading.Thread]:
        workers = [threading.Thread(target=self.thread_worker, args=(w,)) for w in range(4)]
        workers.append(threading.Thread(target=asyncio.run, args=(self.tasks(),)))
        return workers


def check_worker_totals(policy: PolicyHandle, seen: Ledger) -> None:
    """Every call the workers made is counted once, by its outcome, and nothing is held."""
    assert seen.unexpected == []
    assert seen.peak <= 4  # never more than the largest max_concurrent of any config
    for key in KEYS3:
        view = policy.for_key(key)
        bulkhead = view.bulkhead.get_stats()
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0)
        assert bulkhead["total"] == bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"]
        breaker = view.circuit_breaker.get_stats()
        assert breaker["total_successes"] == seen.outcomes[key, "ok"]
        assert breaker["total_failures"] == seen.outcomes[key, "ConnectionError"]
        assert breaker["total_rejected"] == seen.outcomes[key, "CircuitOpenError"]
        assert breaker["total_ignored"] == seen.outcomes[key, "BulkheadFullError"]
        assert breaker["half_open_in_flight"] == 0
    assert policy.get_stats()["executions"]["total"] == 8 * WORKER_CALLS


def test_eight_workers_in_threads_and_tasks_while_the_policy_is_reloaded() -> None:
    """4 threads and 4 asyncio tasks call 3 keys while another thread reloads: every call counted once."""
    alerts = AlertSystem(name="workers-alerts")
    manager = ResilienceManager(alert_system=alerts)
    policy = manager.policy("workers", RELOADS[0])
    seen = Ledger()
    done = threading.Event()

    def reloader() -> None:
        rng = random.Random(7)
        while not done.is_set():
            manager.reconfigure("workers", rng.choice(RELOADS))
            time.sleep(0.002)

    workers = Workers(policy, seen).threads()
    reloading = threading.Thread(target=reloader)
    try:
        reloading.start()
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in workers)
    finally:
        done.set()
        reloading.join(10)
        alerts.close()
    assert policy.get_stats()["reloads"]["succeeded"] >= 2
    check_worker_totals(policy, seen)


def test_state_change_callbacks_added_and_removed_while_the_breaker_is_reloaded() -> None:
    """Callbacks subscribed (and some removed) while another thread reloads: exactly the kept ones run."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: between reading the core and changing it
    alerts = AlertSystem(name="watch-alerts")
    try:
        manager = ResilienceManager(clock=FakeClock(0.0), alert_system=alerts)
        configs = [
            ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=n)) for n in (1, 2)
        ]
        policy = manager.policy("watched", configs[0])
        breaker = policy.for_key("k").circuit_breaker
        assert breaker is not None
        ran: list[int] = []
        kept: list[int] = []
        rounds = 2_000

        def subscribe() -> None:
            for i in range(rounds):
                remove = breaker.on_state_change(lambda _change, i=i: ran.append(i))
                if i % 2:
                    remove()
                else:
                    kept.append(i)

        def reload() -> None:
            for i in range(rounds):
                manager.reconfigure("watched", configs[i % 2])

        threads = [threading.Thread(target=subscribe), threading.Thread(target=reload)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        sys.setswitchinterval(previous)
        alerts.close()
    breaker.force_open()
    assert sorted(ran) == kept


def test_overlapping_reconfigure_many_batches_each_take_effect_whole(
    manager: ResilienceManager, monkeypatch: Any
) -> None:
    """Two batches of the same policies from two threads never leave one policy with each batch's config.

    The first batch is held after its first policy took its config, until the second batch, staged
    in full meanwhile, is done (or a short while, if the second must wait to commit): the policies
    end with the configs of one batch.
    """
    first = manager.policy("overlap-first", ResilienceConfig(timeout=1.0))
    second = manager.policy("overlap-second", ResilienceConfig(timeout=1.0))
    commit = PolicyHandle._commit
    stage = PolicyHandle._stage
    held = threading.Event()
    other_staged = threading.Event()
    other_done = threading.Event()
    holder: list[threading.Thread] = []

    def commit_then_hold(handle: PolicyHandle, staged: Any) -> int:
        generation = commit(handle, staged)
        if threading.current_thread() in holder and handle is first and not held.is_set():
            held.set()
            assert other_staged.wait(timeout=10.0)  # the other batch is ready to commit
            other_done.wait(timeout=0.2)  # it cannot commit while this one does
        return generation

    def stage_then_tell(handle: PolicyHandle, config: Any) -> Any:
        staged = stage(handle, config)
        if threading.current_thread() not in holder and handle is second:
            other_staged.set()
        return staged

    monkeypatch.setattr(PolicyHandle, "_commit", commit_then_hold)
    monkeypatch.setattr(PolicyHandle, "_stage", stage_then_tell)
    batch_a = {
        "overlap-first": ResilienceConfig(timeout=2.0),
        "overlap-second": ResilienceConfig(timeout=2.0),
    }
    batch_b = {
        "overlap-first": ResilienceConfig(timeout=3.0),
        "overlap-second": ResilienceConfig(timeout=3.0),
    }

    def run_b() -> None:
        manager.reconfigure_many(batch_b)
        other_done.set()

    thread_a = threading.Thread(target=manager.reconfigure_many, args=(batch_a,))
    thread_b = threading.Thread(target=run_b)
    holder.append(thread_a)
    thread_a.start()
    assert held.wait(timeout=10.0)
    thread_b.start()
    thread_a.join(timeout=10.0)
    thread_b.join(timeout=10.0)
    assert not thread_a.is_alive()
    assert not thread_b.is_alive()
    assert (first.config.timeout, second.config.timeout) in {(2.0, 2.0), (3.0, 3.0)}
    assert (first.generation, second.generation) == (3, 3)


def test_a_reload_staged_as_unchanged_runs_the_factories_if_another_reload_commits_first(
    manager: ResilienceManager,
) -> None:
    """A reload to the policy's current config, staged before another thread's reload commits and
    committed after it, still runs the extra strategies' factories for each live key.

    Staging found the config unchanged and made no links; by its commit the config had changed,
    so the reload took effect with no factory run for the keys (reported as succeeded although
    a factory refused them), leaving each key's next call to fail.
    """
    wait = 10.0  # only reached when the test fails
    broken = [False]

    def factory(_name: str) -> Step:
        if broken[0]:
            raise RuntimeError("cannot build")
        return Step()

    original = ResilienceConfig(timeout=2.0, extra_strategies=(ExtraStrategy(factory, rank=50),))
    other = ResilienceConfig(timeout=3.0)
    policy = manager.policy("racing", original)
    assert policy.for_key("tenant").execute_sync(lambda: "ok") == "ok"
    aside = manager.policy("aside", ResilienceConfig(timeout=1.0))
    holding, release = threading.Event(), threading.Event()

    def hold(_name: str) -> Step:
        if not holding.is_set():  # the batch's second policy, prepared after the first was staged
            holding.set()
            assert release.wait(wait)
        return Step()

    held = ResilienceConfig(timeout=4.0, extra_strategies=(ExtraStrategy(hold, rank=50),))
    errors: list[BaseException] = []

    def batch() -> None:
        try:
            manager.reconfigure_many({"racing": original, "aside": held})
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=batch, daemon=True)
    thread.start()
    assert holding.wait(wait)  # "racing" is staged as unchanged
    manager.reconfigure("racing", other)  # another thread's reload commits meanwhile
    broken[0] = True  # the factory now refuses the keys' links
    release.set()
    thread.join(wait)
    assert not thread.is_alive()
    assert [str(error) for error in errors] == ["cannot build"]
    assert (policy.config, policy.generation) == (other, 2)
    assert aside.generation == 1
    assert policy.for_key("tenant").execute_sync(lambda: "ok") == "ok"
    assert policy.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}


def test_a_new_policy_a_call_makes_while_a_file_is_applied_takes_the_file_config() -> None:
    """A call creates the file's new policy, with another config, while the file is checked: the file
    reloads it with the changed one, all of them taking effect (was: "kept" reloaded, then a
    ValueError "already exists with another config", "new" left with the call's config)."""
    manager = ResilienceManager()
    kept = manager.policy("kept", ResilienceConfig(timeout=1.0))
    made: list[PolicyHandle] = []

    def factory(_name: str) -> Step:
        if not made:  # checking the new policy: another thread's call creates it meanwhile
            thread = threading.Thread(
                target=lambda: made.append(manager.policy("new", ResilienceConfig(timeout=9.0)))
            )
            thread.start()
            thread.join()
        return Step()

    filed = ResilienceConfig(timeout=5.0, extra_strategies=(ExtraStrategy(factory, rank=50),))
    applied = manager.apply_config({"kept": ResilienceConfig(timeout=2.0), "new": filed})
    assert applied == {"kept": kept, "new": made[0]}
    assert (kept.config.timeout, kept.generation) == (2.0, 2)
    assert (made[0].config, made[0].generation) == (filed, 2)
    assert made[0].get_stats()["reloads"] == {"succeeded": 1, "failed": 0}


def test_a_new_policy_that_cannot_be_built_after_its_check_changes_nothing() -> None:
    """Building a new policy fails after its trial passed: no policy is created, none reloaded, and the
    refusal is reported for it (was: "kept" reloaded and "first" created, "second" refused unreported)."""
    manager = ResilienceManager()
    kept = manager.policy("kept", ResilienceConfig(timeout=1.0))
    built: list[str] = []

    def runs_out(name: str) -> Step:
        built.append(name)
        if len(built) == 2:  # the trial's link, then the policy's own: refused
            raise RuntimeError("no more links")
        return Step()

    file = {
        "kept": ResilienceConfig(timeout=2.0),
        "first": ResilienceConfig(timeout=3.0),
        "second": ResilienceConfig(timeout=4.0, extra_strategies=(ExtraStrategy(runs_out, rank=50),)),
    }
    with EventRecorder() as recorder, pytest.raises(RuntimeError, match="no more links"):
        manager.apply_config(file)
    assert (kept.config.timeout, kept.generation) == (1.0, 1)
    assert sorted(manager._handles) == ["kept"]
    assert kept.get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
    assert [source.name for source in recorder.sources(Event.RELOAD_FAILED)] == ["second"]
    assert recorder.of(Event.POLICY_RELOADED) == []
    applied = manager.apply_config(file)  # the factory builds again: the whole file takes effect
    assert sorted(applied) == ["first", "kept", "second"]
    assert (kept.config.timeout, applied["first"].config.timeout, applied["second"].config.timeout) == (
        2.0,
        3.0,
        4.0,
    )
