"""A policy's exported counters and ``get_stats()`` totals never go down and never lose a call.

A keyed policy moves counts while it runs: an evicted key's into the policy's ledger, a
reloaded key's pipeline's into its new pipeline, a dropped breaker's into the ledger. At every
instant each count must be in exactly one exported place (and one place ``get_stats`` reads).
These tests stop the thread that moves them at each of its steps (events with bounded waits,
daemon threads: deterministic, no timing) and read the totals there.
"""

from __future__ import annotations

import dataclasses
import gc
import queue
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from types import TracebackType
from typing import Any

import pytest
from otel_support import Otel

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    PolicyHandle,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.engine.registry import BREAKERS, PIPELINES, RATE_LIMITERS, Registry
from otel_resilience.manager.keyed import KeyState, _fold_replaced
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

WAIT = 10.0
"""The longest any thread of these tests waits for another (only reached when a test fails)."""

KEYED = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(),
    bulkhead_config=BulkheadConfig(max_concurrent=2),
    rate_limiter=RateLimiterConfig(rate=1000.0, burst=1000),
)
"""Every pattern that keeps counts per key."""

COUNTERS = (sc.EXECUTIONS, sc.CB_CALLS, sc.RL_PERMITS)
"""The exported counters summed over a policy's keys."""


def noop() -> None:
    return None


def exported(otel: Otel, policy: str) -> dict[str, int]:
    """Collect once; each of :data:`COUNTERS` summed over the series of ``policy``."""
    metrics = otel.metrics()
    totals = dict.fromkeys(COUNTERS, 0)
    for name in COUNTERS:
        metric = metrics.get(name)
        for point in [] if metric is None else metric.data.data_points:
            attributes = point.attributes
            if attributes.get(sc.POLICY, attributes.get(sc.NAME)) == policy:
                totals[name] += point.value
    return totals


def stats_totals(handle: PolicyHandle) -> dict[str, int]:
    """The lifetime totals of ``handle.get_stats()``: executions, breaker calls, bulkhead, limiter."""
    stats = handle.get_stats()
    breaker = stats["circuit_breaker"]
    return {
        "executions": stats["executions"]["total"],
        "breaker": sum(breaker[name] for name in breaker if name.startswith("total_")),
        "bulkhead": stats["bulkhead"]["total"],
        "rate_limiter": stats["rate_limiter"]["admitted"] + stats["rate_limiter"]["rejected"],
    }


def calls(view: Any, count: int) -> None:
    for _ in range(count):
        view.execute_sync(noop)


class RegistrySteps:
    """Runs work in a thread that stops before and after each change it makes to an engine registry.

    ``for where in steps.run(work): ...`` runs the loop body while the thread is stopped at
    ``where``, then lets it go on to its next stop. Used as a context manager, so the thread is
    let go whatever the test does.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._thread: threading.Thread | None = None
        self._stopped: queue.Queue[str | None] = queue.Queue()
        self._go = threading.Semaphore(0)
        self._free = threading.Event()
        for method in ("register", "unregister", "replace"):
            real = getattr(Registry, method, None)
            if real is not None:
                monkeypatch.setattr(Registry, method, self._wrap(method, real))

    def _wrap(self, method: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(registry: Registry[Any], *args: Any, **kwargs: Any) -> Any:
            self._stop(f"before {registry.kind}.{method}")
            try:
                return real(registry, *args, **kwargs)
            finally:
                self._stop(f"after {registry.kind}.{method}")

        return wrapper

    def _stop(self, where: str) -> None:
        if threading.current_thread() is not self._thread or self._free.is_set():
            return
        self._stopped.put(where)
        if not self._go.acquire(timeout=WAIT):
            self._free.set()

    def run(self, work: Callable[[], object]) -> Iterator[str]:
        """Yield each stop of ``work`` (run in a daemon thread); raise what it raised."""
        errors: list[BaseException] = []

        def target() -> None:
            try:
                work()
            except BaseException as error:  # raised again in the test's thread
                errors.append(error)
            finally:
                self._stopped.put(None)

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()
        stops = 0
        while (where := self._stopped.get(timeout=WAIT)) is not None:
            stops += 1
            yield where
            self._go.release()
        self._thread.join(WAIT)
        assert stops, "the work changed no registry: nothing was looked at"
        if errors:
            raise errors[0]

    def __enter__(self) -> RegistrySteps:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._free.set()
        self._go.release()
        if self._thread is not None:
            self._thread.join(WAIT)


def exported_at_each_step(
    otel: Otel, policy: str, monkeypatch: pytest.MonkeyPatch, work: Callable[[], object]
) -> dict[str, dict[str, int]]:
    """Run ``work``; collect at each of its registry steps; return what was read, by step."""
    seen: dict[str, dict[str, int]] = {}
    with RegistrySteps(monkeypatch) as steps:
        for index, where in enumerate(steps.run(work)):
            seen[f"{index}: {where}"] = exported(otel, policy)
    return seen


def differing(seen: dict[str, dict[str, int]], expected: dict[str, int]) -> dict[str, dict[str, int]]:
    """The steps at which a counter did not read ``expected``, with the counters that did not."""
    return {
        where: {name: value for name, value in read.items() if value != expected[name]}
        for where, read in seen.items()
        if read != expected
    }


def test_a_reload_never_counts_a_key_s_executions_twice(
    otel: Otel, manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At every registry step of a reload, the exported counters read what was counted, no more.

    Each key gets a new pipeline that counts on in the old one's stats: those stats are
    exported once, by the old pipeline or by the new one, never by both.
    """
    handle = manager.policy("reload-steps", KEYED)
    for key in range(3):
        calls(handle.for_key(key), 10)
    calls(handle, 10)
    before = exported(otel, "reload-steps")
    assert before == dict.fromkeys(COUNTERS, 40)
    wider = dataclasses.replace(KEYED, bulkhead_config=BulkheadConfig(max_concurrent=3))
    seen = exported_at_each_step(
        otel, "reload-steps", monkeypatch, lambda: manager.reconfigure("reload-steps", wider)
    )
    assert differing(seen, before) == {}
    assert handle.generation == 2
    calls(handle.for_key(0), 1)
    assert exported(otel, "reload-steps") == dict.fromkeys(COUNTERS, 41)
    assert handle.get_stats()["executions"]["total"] == 41


def test_a_reload_that_drops_the_breaker_keeps_its_calls_exported(
    otel: Otel, manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At every registry step of a reload that drops the breaker, its calls are exported (by the policy's totals)."""
    handle = manager.policy("drop-steps", KEYED)
    for key in range(3):
        calls(handle.for_key(key), 10)
    calls(handle, 10)
    before = exported(otel, "drop-steps")
    assert before == dict.fromkeys(COUNTERS, 40)
    no_breaker = dataclasses.replace(KEYED, circuit_breaker=None)
    seen = exported_at_each_step(
        otel, "drop-steps", monkeypatch, lambda: manager.reconfigure("drop-steps", no_breaker)
    )
    assert differing(seen, before) == {}
    calls(handle.for_key(0), 1)
    assert exported(otel, "drop-steps") == {sc.EXECUTIONS: 41, sc.CB_CALLS: 40, sc.RL_PERMITS: 41}


def test_an_eviction_never_takes_a_key_s_counts_out_of_the_exported_counters(
    otel: Otel, manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """At every registry step of an eviction, executions, breaker calls and permits read what was counted."""
    handle = manager.policy("evict-steps", KEYED, max_keys=1)
    calls(handle.for_key("a"), 5)
    clock.advance(1.0)  # a's bucket is full again: it holds no state, so it may go
    calls(handle.for_key("b"), 5)  # evicts a: the policy's totals hold counts already
    clock.advance(1.0)
    before = exported(otel, "evict-steps")
    assert before == dict.fromkeys(COUNTERS, 10)
    seen = exported_at_each_step(otel, "evict-steps", monkeypatch, lambda: calls(handle.for_key("c"), 1))
    assert differing(seen, before) == {}  # c is made and b evicted before c's call runs
    assert handle.get_stats()["evicted_keys"] == 2
    assert exported(otel, "evict-steps") == dict.fromkeys(COUNTERS, 11)


def _pipeline_total(pipeline: Any) -> int:
    return int(sum(pipeline.stats.counts()))


def _breaker_total(breaker: Any) -> int:
    stats = breaker.stats
    return int(
        stats.total_successes
        + stats.total_failures
        + stats.total_rejected
        + stats.total_ignored
        + stats.total_cancelled
    )


def _limiter_total(limiter: Any) -> int:
    stats = limiter.get_stats()
    return int(stats["admitted"] + stats["rejected"] + stats["cancelled"])


@pytest.mark.parametrize(
    ("registry", "read"),
    [(PIPELINES, _pipeline_total), (BREAKERS, _breaker_total), (RATE_LIMITERS, _limiter_total)],
    ids=["executions", "breaker-calls", "permits"],
)
def test_a_snapshot_taken_before_an_eviction_reads_the_same_total_after_it(
    manager: ResilienceManager, registry: Registry[Any], read: Callable[[Any], int]
) -> None:
    """A collection reads the counts of its snapshot a little after taking it: a fold meanwhile changes nothing.

    The policy's totals are never changed once exported: a fold puts new ones in their place,
    and the old ones, still in the snapshot, still read what they read.
    """
    name = f"snapshot-{registry.kind}"  # instances of other tests may live on: a name of its own
    handle = manager.policy(name, KEYED, max_keys=1)
    calls(handle.for_key("a"), 5)
    calls(handle.for_key("b"), 5)  # evicts a: the policy's totals hold counts already
    snapshot = [item for item in registry.items() if item.name == name]
    before = sum(read(item) for item in snapshot)
    assert before == 10
    calls(handle.for_key("c"), 1)  # makes c, evicts b: its counts join the totals
    assert sum(read(item) for item in snapshot) == before
    assert sum(read(item) for item in registry.items() if item.name == name) == 11


def test_a_registry_snapshot_holds_what_was_registered_at_its_instant() -> None:
    """What a snapshot saw stays readable even if another thread drops it just after the lock is released."""

    class Item:
        __slots__ = ("__weakref__", "name")

        def __init__(self, name: str) -> None:
            self.name = name

    registry: Registry[Item] = Registry("test")
    held = [Item("totals")]
    registry.register(held[0])
    gone = weakref.ref(held[0])

    class DropsOnRelease:
        """The registry's lock; its release is followed by a replace and a drop elsewhere."""

        def __init__(self) -> None:
            self._lock = threading.Lock()

        def __enter__(self) -> None:
            self._lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self._lock.release()
            held.clear()

    registry._lock = DropsOnRelease()  # type: ignore[assignment]
    assert [item.name for item in registry.items()] == ["totals"]
    assert gone() is None


@pytest.mark.parametrize("folded", [False, True], ids=["before-the-fold", "after-the-fold"])
def test_get_stats_counts_a_key_once_while_it_is_handed_over(
    manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, folded: bool
) -> None:
    """Between the key store letting a key go and its hand-over ending, get_stats counts the key once.

    The store takes the key out under its lock and hands it to the policy after, which folds its
    counts into the policy's totals under its own lock: stopped before that fold, the key is in
    neither place unless the store still lists it; stopped after, in both unless get_stats
    skips it.
    """
    name = f"hand-over-{folded}"
    handle = manager.policy(name, KEYED, max_keys=1)
    calls(handle.for_key("a"), 5)
    calls(handle, 2)
    clock.advance(1.0)  # a's bucket is full again: it holds no state, so it may go
    before = stats_totals(handle)
    assert before == {"executions": 7, "breaker": 7, "bulkhead": 7, "rate_limiter": 7}
    handing_over, go_on = threading.Event(), threading.Event()
    fold = handle._keys._on_evict
    assert fold is not None

    def paused(key: Hashable, state: KeyState) -> None:
        if folded:
            fold(key, state)
        handing_over.set()
        go_on.wait(WAIT)  # the evicting thread is preempted here
        if not folded:
            fold(key, state)

    monkeypatch.setattr(handle._keys, "_on_evict", paused)
    evicting = threading.Thread(target=lambda: calls(handle.for_key("b"), 1), daemon=True)  # evicts a
    evicting.start()
    try:
        assert handing_over.wait(WAIT)
        assert stats_totals(handle) == before
    finally:
        go_on.set()
        evicting.join(WAIT)
    assert stats_totals(handle) == {"executions": 8, "breaker": 8, "bulkhead": 8, "rate_limiter": 8}
    assert handle.get_stats()["evicted_keys"] == 1


def test_a_replaced_limiter_is_folded_once_no_call_can_reach_it() -> None:
    """A limiter a reload replaced stays while a call runs in a pipeline it replaced; then it is folded, once."""
    from otel_resilience import RateLimiter  # noqa: PLC0415

    folded: list[object] = []

    class Ledger:
        def fold_limiter(self, limiter: object) -> None:
            folded.append(limiter)

        def fold_own(self, instance: object) -> None:
            """Its own pipeline: never built here."""

    class OldPipeline:
        """Stands for a replaced pipeline: alive while a call runs in it."""

    limiter = RateLimiter("replaced-limiter", RateLimiterConfig(rate=1.0))  # nobody waits in it
    old = OldPipeline()
    state = KeyState("k", "k", None)
    state.replaced = [limiter]
    state.retired = [weakref.ref(old)]  # type: ignore[list-item]
    assert state.enter()  # a call that started before the reload runs in the old pipeline
    _fold_replaced(state, Ledger())  # type: ignore[arg-type]
    assert (folded, state.replaced) == ([], [limiter])
    del old  # the call ended: nothing can reach the limiter now (another call may run in the key)
    _fold_replaced(state, Ledger())  # type: ignore[arg-type]
    _fold_replaced(state, Ledger())  # type: ignore[arg-type]
    assert (folded, state.replaced, state.retired) == ([limiter], [], ())


@pytest.mark.parametrize(
    ("keyed", "folded_by"),
    [(True, "eviction"), (True, "reload"), (False, "reload")],  # the unkeyed state is never evicted
    ids=["key-evicted", "key-reloaded", "unkeyed-reloaded"],
)
def test_blocks_run_with_a_policy_s_own_instances_stay_exported_once_they_are_folded(
    otel: Otel, manager: ResilienceManager, clock: FakeClock, keyed: bool, folded_by: str
) -> None:
    """What a key's breaker, bulkhead and limiter ran themselves (``guard()``, ``slot()``, their
    verbs) is in the policy's ``resilience.executions``: it stays there once they are folded and
    freed (the key evicted, or a reload dropping them), as the calls through the key do."""
    handle = manager.policy("own-blocks", KEYED, idle_ttl=10.0)
    runs = handle.for_key("a") if keyed else handle
    bulkhead, breaker, limiter = runs.bulkhead, runs.circuit_breaker, runs.rate_limiter
    assert bulkhead is not None
    assert breaker is not None
    assert limiter is not None
    with bulkhead.slot():
        pass
    with breaker.guard():
        pass
    limiter.call_sync(noop)
    del bulkhead, breaker, limiter
    assert exported(otel, "own-blocks")[sc.EXECUTIONS] == 3
    if folded_by == "eviction":
        clock.advance(11.0)
        assert handle.get_stats()["evicted_keys"] == 1  # unused for idle_ttl: evicted
    else:
        manager.reconfigure("own-blocks", ResilienceConfig())  # drops all three
    gc.collect()
    assert exported(otel, "own-blocks")[sc.EXECUTIONS] == 3


def test_a_per_key_limiter_s_permits_never_dip_on_eviction(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RateLimiter.per_key``: an evicted key's permits move into totals, in one registry step.

    A caller keeps key "a"'s limiter; "b" evicts it (its permits folded into the totals), then
    "a" comes back with a new limiter. At every registry step in between, the exported permits
    read what was admitted: 3, then 4; the kept limiter's next permit is the new one's, counted once.
    """
    from otel_resilience import RateLimiter  # noqa: PLC0415

    per_key = RateLimiter.per_key("per-key-steps", RateLimiterConfig(rate=1000.0, burst=1000), max_keys=1)
    kept = per_key.for_key("a")
    for _ in range(3):
        assert kept.try_acquire()

    def evict() -> None:
        assert per_key.for_key("b").try_acquire()  # the 4th permit, in a limiter made after the fold

    seen = exported_at_each_step(otel, "per-key-steps", monkeypatch, evict)
    assert {where: read[sc.RL_PERMITS] for where, read in seen.items() if read[sc.RL_PERMITS] != 3} == {}
    seen = exported_at_each_step(otel, "per-key-steps", monkeypatch, lambda: per_key.for_key("a"))
    assert {where: read[sc.RL_PERMITS] for where, read in seen.items() if read[sc.RL_PERMITS] != 4} == {}
    assert per_key.for_key("a") is not kept
    assert kept.try_acquire()
    assert per_key.for_key("a").get_stats()["admitted"] == 1
    assert kept._own_stats()["admitted"] == 3  # folded: what the totals export
    assert kept.get_stats()["admitted"] == 1  # what it reads is the key's limiter in use
    assert exported(otel, "per-key-steps")[sc.RL_PERMITS] == 5


@pytest.mark.parametrize("kept_as", ["limiter", "protect", "guard"])
def test_an_evicted_key_s_limiter_kept_by_a_caller_counts_in_the_key_s_limiter_in_use(
    otel: Otel, kept_as: str
) -> None:
    """Permits taken through a key's limiter (itself, a function it protects, a guard) stay exported, each once.

    Before the key's eviction they count in its limiter (folded into the totals at the eviction);
    after it, in the key's limiter in use, which the kept one's uses run on.
    """
    from otel_resilience import RateLimiter  # noqa: PLC0415

    name = f"kept-{kept_as}"
    per_key = RateLimiter.per_key(name, RateLimiterConfig(rate=1000.0, burst=1000), max_keys=1)
    limiter = per_key.for_key("a")
    protected, guard = limiter.protect(noop), limiter.guard()

    def use() -> None:
        if kept_as == "limiter":
            assert limiter.try_acquire()
        elif kept_as == "protect":
            protected()
        else:
            with guard:
                pass

    for _ in range(3):
        use()
    if kept_as != "limiter":
        del limiter
    assert per_key.for_key("b").try_acquire()  # evicts "a"
    gc.collect()
    assert exported(otel, name)[sc.RL_PERMITS] == 4
    use()  # on "a"'s new limiter: evicts "b"
    assert per_key.for_key("a").try_acquire()
    assert per_key.for_key("a").get_stats()["admitted"] == 2
    assert exported(otel, name)[sc.RL_PERMITS] == 6
    assert exported(otel, name)[sc.EXECUTIONS] == (0 if kept_as == "limiter" else 4)


def test_a_per_key_limiter_s_permits_taken_while_other_threads_evict_the_key_are_each_counted_once(
    otel: Otel,
) -> None:
    """Permits taken through a kept key's limiter while two threads evict its key: never refused, each exported once.

    Each take holds the key's limiter it runs on (not evicted meanwhile: counted there, folded
    whole at its eviction): the kept one while its key keeps it, else the key's limiter in use.
    """
    from otel_resilience import RateLimiter  # noqa: PLC0415

    name = "racing-keys"
    per_key = RateLimiter.per_key(name, RateLimiterConfig(rate=1e9, burst=10**9), max_keys=1)
    stop = threading.Event()
    taken = [0, 0, 0]
    errors: list[BaseException] = []

    def churn(slot: int) -> None:
        turn = 0
        try:
            while not stop.is_set():
                turn += 1
                taken[slot] += per_key.for_key(f"other-{turn % 3}").try_acquire()
        except BaseException as error:  # reported by the test's thread
            errors.append(error)

    threads = [threading.Thread(target=churn, args=(slot,), daemon=True) for slot in (1, 2)]
    for thread in threads:
        thread.start()
    try:
        for turn in range(1000):
            kept = per_key.for_key(f"target-{turn % 2}")
            for _ in range(3):
                taken[0] += kept.try_acquire()
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert taken[0] == 3000
    gc.collect()
    assert exported(otel, name)[sc.RL_PERMITS] == sum(taken), taken


def test_a_per_key_limiter_s_executions_never_dip_when_an_evicted_key_is_freed(otel: Otel) -> None:
    """Calls through the keys' limiters stay in resilience.executions after their keys are evicted and freed."""
    from otel_resilience import RateLimiter  # noqa: PLC0415

    per_key = RateLimiter.per_key("freed-keys", RateLimiterConfig(rate=1000.0, burst=1000), max_keys=1)
    for _ in range(3):
        per_key.for_key("a").call_sync(noop)
    assert exported(otel, "freed-keys")[sc.EXECUTIONS] == 3
    per_key.for_key("b").call_sync(noop)  # evicts "a", whose limiter nobody holds: freed
    gc.collect()
    assert exported(otel, "freed-keys")[sc.EXECUTIONS] == 4


def per_call_config(name: str) -> ResilienceConfig:
    """A config built per call with a new fallback function: unequal to the last one, so a policy of its own."""
    return ResilienceConfig(
        name=name,
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=lambda _error: 0
        ),
    )


def test_a_managers_evicted_policies_keep_their_executions_in_the_names_series(
    otel: Otel, alerts: AlertSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 calls, each with a config of its own under one name, past a cap of 4 policies: 100 executions exported.

    The evicted policies' pipelines are freed while policies of their name live on, so the
    name's series must keep what they counted; it never goes down at any registry step.
    """
    name = "per-call-configs"
    manager = ResilienceManager(max_policies=4, alert_system=alerts)
    for _ in range(100):
        manager.execute_with_resilience_sync(noop, per_call_config(name))
    gc.collect()
    assert manager.get_resilience_statistics()["executions"]["total"] == 100
    assert exported(otel, name)[sc.EXECUTIONS] == 100

    def more() -> None:
        for _ in range(20):
            manager.execute_with_resilience_sync(noop, per_call_config(name))
            gc.collect()

    seen = [read[sc.EXECUTIONS] for read in exported_at_each_step(otel, name, monkeypatch, more).values()]
    assert seen == sorted(seen), seen
    assert seen[0] >= 100
    assert seen[-1] <= 120
    gc.collect()
    assert exported(otel, name)[sc.EXECUTIONS] == 120


def test_a_managers_carriers_of_evicted_policies_are_bounded_by_its_live_names(alerts: AlertSystem) -> None:
    """200 names called once each, past a cap of 4: the manager exports at most the names it has policies of."""
    manager = ResilienceManager(max_policies=4, alert_system=alerts)
    for index in range(200):
        manager.execute_with_resilience_sync(noop, per_call_config(f"bounded-carriers-{index}"))
    gc.collect()
    manager.get_resilience_statistics()  # folds what is gone
    names = {p.name for p in PIPELINES.items() if p.name.startswith("bounded-carriers-")}  # type: ignore[attr-defined]
    assert len(names) <= 8, sorted(names)
    assert manager.get_resilience_statistics()["executions"]["total"] == 200


def test_a_new_policy_s_series_read_0_from_its_own_pipeline_alone(
    otel: Otel, manager: ResilienceManager
) -> None:
    """Before any key is evicted a policy registers one pipeline per series: its totals are made on first fold.

    Its unkeyed state's pipeline already exports the policy's series at 0 from the start; a
    second, empty one doubled the memory of every policy for nothing.
    """
    handle = manager.policy("fresh-totals", KEYED)
    mine = [p for p in PIPELINES.items() if p.telemetry.source.pipeline == "fresh-totals"]
    assert mine == [handle._default.pipeline]
    assert exported(otel, "fresh-totals") == dict.fromkeys(COUNTERS, 0)
    points = [
        point
        for point in otel.metrics()[sc.EXECUTIONS].data.data_points
        if point.attributes.get(sc.POLICY) == "fresh-totals"
    ]
    assert points
    assert {point.value for point in points} == {0}
    assert handle.get_stats()["executions"]["total"] == 0
