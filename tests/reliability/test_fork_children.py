"""A process forked while the library is in use (gunicorn ``--preload``, a ``fork`` pool): a working child.

Each test forks for real (``os.fork``): the child runs its checks and leaves with ``os._exit``;
a child that hangs is killed and fails the test (``forking_support``). A lock held by another
thread at the fork is held by a thread the child does not have, so the tests hold one on purpose
while they fork: the race a metrics reader's thread or a worker thread makes at random.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from forking_support import held_by_another_thread, run_in_child
from support import until_sync

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CountWindow,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    current_deadline,
    retry_sync,
    time_left,
)
from otel_resilience.engine import counting
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.registry import BULKHEADS, PIPELINES, RATE_LIMITERS
from otel_resilience.manager.watch import ConfigWatch
from otel_resilience.patterns.fallback._step import FallbackCore
from otel_resilience.patterns.retry.stats import RetryStats
from otel_resilience.testing import FakeClock

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")


class _World:
    """A manager policy with every lock-guarded part, a standalone bulkhead and a fallback, all used once."""

    def __init__(self) -> None:
        self.budget = RetryBudget()
        self.manager = ResilienceManager()
        self.policy = self.manager.policy(
            "forked",
            ResilienceConfig(
                bulkhead_config=BulkheadConfig(max_concurrent=2),
                rate_limiter=RateLimiterConfig(rate=1000.0),
                retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, budget=self.budget),
            ),
        )
        self.bulkhead = Bulkhead("forked-bulkhead", BulkheadConfig(max_concurrent=2))
        self.fallback = FallbackHandler(
            FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0), name="forked-fallback"
        )
        self.breaker = CircuitBreaker("forked-breaker", CircuitBreakerConfig(sliding_window=CountWindow(10)))
        self.policy.execute_sync(lambda: 1)
        self.breaker.call_sync(lambda: 1)
        self.bulkhead.run_sync(lambda: 1)
        self.fallback.run_sync(lambda: 1)

    def use(self) -> None:
        """What a worker does first: calls, stats reads, and what a metrics collection reads."""
        assert self.policy.execute_sync(lambda: 2) == 2
        assert self.bulkhead.run_sync(lambda: 3) == 3
        assert self.breaker.call_sync(lambda: 7) == 7
        assert self.breaker.rates() == (0.0, 0.0)
        assert self.fallback.run_sync(lambda: 4) == 4
        assert self.policy.get_stats()["executions"]["total"] == 2
        assert self.bulkhead.get_stats()["completed"] == 2
        assert self.fallback.get_stats()["executions"] == 2
        assert BULKHEADS.items()
        assert PIPELINES.items()
        assert RATE_LIMITERS.items()
        made = self.manager.policy("made-in-child", ResilienceConfig(bulkhead_config=BulkheadConfig()))
        assert made.execute_sync(lambda: 5) == 5
        assert self.manager.execute_with_resilience_sync(lambda: 6, ResilienceConfig(name="ad-hoc")) == 6
        assert self.manager.get_resilience_statistics()


LOCKS: dict[str, Callable[[_World], Any]] = {  # what work other than a call may hold (engine.forking)
    "a registry's (a metrics collection's snapshot)": lambda _: BULKHEADS._lock,
    "a bulkhead's (a reload resizes it)": lambda world: world.bulkhead.stats._lock,
    "the manager's": lambda world: world.manager._lock,
    "the manager's handles'": lambda world: world.manager._handles_lock,
    "a retry budget's (a metrics collection reads it)": lambda world: world.budget._lock,
    "a windowed breaker's (a metrics collection reads its rates)": lambda world: world.breaker._core._lock,
}


@pytest.mark.parametrize("holder", list(LOCKS))
def test_a_child_forked_while_another_thread_holds_a_lock_calls_and_reads(holder: str) -> None:
    """The child finds every lock free: its first calls and reads answer (a held lock would hang it)."""
    world = _World()
    with held_by_another_thread(LOCKS[holder](world)):
        code = run_in_child(world.use)
    assert code == 0
    world.use()  # the parent goes on too, with the lock given back


class _SlowRead(Counter):
    """A counter whose reads pause inside the read lock until told to go (at most 1 s)."""

    __slots__ = ()
    inside = threading.Event()
    go = threading.Event()

    def _drawn_by_reads(self) -> int:
        _SlowRead.inside.set()
        _SlowRead.go.wait(1.0)
        return super()._drawn_by_reads()


def test_a_child_forked_during_a_counter_read_reads_exact_counts() -> None:
    """A fork waits for a counter read under way: the child's read lock is free, its counts exact."""
    counter = _SlowRead()
    for _ in range(5):
        next(counter)
    values: list[int] = []
    reader = threading.Thread(target=lambda: values.append(counter.value))
    reader.start()
    _SlowRead.inside.wait()

    def child() -> None:
        _SlowRead.go.set()  # the child's own reads do not pause
        next(counter)
        assert counter.value == 6
        assert counting.read_all([counter, counter]) == [6, 6]

    try:
        code = run_in_child(child)
    finally:
        _SlowRead.go.set()
        reader.join()
    assert code == 0
    assert values == [5]
    assert counter.value == 5


FIRST = """\
policies:
  payments:
    timeout: 2s
"""
SECOND = """\
policies:
  payments:
    timeout: 3s
"""


def _write(path: Path, text: str) -> None:
    """Write ``text`` so that a watch sees a change (size or modification time)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:  # a coarse clock: move the time on explicitly
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def test_a_config_watch_goes_on_in_a_forked_child(tmp_path: Path) -> None:
    """A worker forked from a process that watches a file applies the file's changes too."""
    pytest.importorskip("yaml")
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = ResilienceManager()
    watch = manager.watch(path, interval=0.01)
    try:

        def child() -> None:
            assert watch._thread.is_alive()
            _write(path, SECOND)
            until_sync(lambda: watch.applied == 2, 20.0)
            assert manager.policy("payments").config.timeout == 3.0
            watch.stop()

        assert run_in_child(child) == 0
    finally:
        watch.stop()


def test_a_child_forked_while_a_watch_starts_its_thread_watches_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork by another thread once the watch's thread started, before watch() returned (a pool
    forking while a start-up thread makes the watch): the child's copy watches with a thread of its
    own (was: the watch counted as running only after its thread started, so a child forked in
    between had a watch with no thread, its policies never following the file)."""
    pytest.importorskip("yaml")
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    start = ConfigWatch._start
    codes: list[int] = []

    def start_then_fork(watch: ConfigWatch) -> threading.Thread:
        thread = start(watch)
        if not codes:  # once: the child's own start (after the fork) forks nothing
            codes.append(-1)

            def child() -> None:
                restarted = getattr(watch, "_thread", None)
                assert restarted is not None
                assert restarted.is_alive()

            forker = threading.Thread(target=lambda: codes.append(run_in_child(child)))
            forker.start()
            forker.join()
        return thread

    monkeypatch.setattr(ConfigWatch, "_start", start_then_fork)
    watch = ResilienceManager().watch(path, interval=0.01)
    watch.stop()
    assert codes == [-1, 0]


def test_a_stopped_config_watch_stays_stopped_in_a_forked_child(tmp_path: Path) -> None:
    """A watch stopped before the fork starts no thread in the child."""
    pytest.importorskip("yaml")
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    watch = ResilienceManager().watch(path, interval=0.01)
    watch.stop()
    threads = {thread.name for thread in threading.enumerate()}

    def child() -> None:
        assert not watch._thread.is_alive()
        assert {thread.name for thread in threading.enumerate()} <= threads

    assert run_in_child(child) == 0


def test_a_child_forked_inside_a_timed_call_is_not_bound_by_its_deadline() -> None:
    """A worker forked during a call with a timeout (a ``fork`` pool made in a request) has no deadline.

    The deadline belongs to the call, which the child is no part of: nothing in the child ever
    ends at it. The child inherited it as its own, so every wait of every later call in a pool's
    worker was cut at the deadline of the call that happened to start the pool, and once it had
    passed, every call with a timeout or a backoff failed at once.
    """
    seen: list[float | None] = []

    def child() -> None:
        assert current_deadline() is None
        assert time_left() == math.inf
        answers = iter([ConnectionError("refused"), "ok"])

        def fetch() -> str:
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

        clock = FakeClock()  # the backoff takes no real time, and is cut by no deadline
        policy = RetryPolicy(max_attempts=2, initial_delay=30.0, jitter="none")
        assert retry_sync(fetch, policy=policy, clock=clock) == "ok"
        assert clock.sleeps == [30.0]

    def call() -> int:
        seen.append(current_deadline())
        return run_in_child(child)

    timed = ResilienceManager().policy("forks-workers", ResilienceConfig(timeout=10.0))
    assert timed.execute_sync(call) == 0
    assert seen[0] is not None  # the parent's call is bound by its deadline
    assert current_deadline() is None


def test_a_child_keeps_its_parents_open_breaker_keys_and_counts_and_counts_on() -> None:
    """State crosses the fork as the fork found it: an OPEN breaker is open in the child, its counts go on.

    The parent's counts stay the parent's: what the child counts is not seen there.
    """
    clock = FakeClock()
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0))
    policy = ResilienceManager(clock=clock).policy("forked-state", config)
    view = policy.for_key("tenant")

    def boom() -> None:
        raise ConnectionError("down")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)

    def child() -> None:
        assert policy.keys == 1
        assert view.circuit_breaker.state.name == "OPEN"
        with pytest.raises(CircuitOpenError):
            view.execute_sync(boom)
        assert policy.get_stats()["circuit_breaker"]["total_rejected"] == 1
        assert policy.get_stats()["executions"]["total"] == 3
        clock.advance(31.0)  # its period ends in the child as in the parent: a probe closes it
        view.execute_sync(lambda: None)
        assert policy.get_stats()["executions"]["total"] == 4

    assert run_in_child(child) == 0
    stats = policy.get_stats()
    assert (stats["executions"]["total"], stats["circuit_breaker"]["total_rejected"]) == (2, 0)


def _raises_key_error() -> None:
    raise KeyError("not retried")


def _retry() -> tuple[Any, Callable[[], object], type, str]:
    retry = Retry("forked-retry", RetryPolicy(max_attempts=2, retry_on=(ValueError,), initial_delay=0.0))

    def call() -> None:
        with pytest.raises(KeyError):
            retry.run_sync(_raises_key_error)

    return retry, call, RetryStats, "as_dict"


def _fallback() -> tuple[Any, Callable[[], object], type, str]:
    config = FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0)
    fallback = FallbackHandler(config, name="forked-stats-fallback")
    return fallback, lambda: fallback.run_sync(_raises_key_error), FallbackCore, "counts"


# A pattern, a call that takes the lock its get_stats() holds (to count a failure, a fallback
# used), and what that snapshot reads inside the lock (paused there by the test).
STATS_READERS: dict[str, Callable[[], tuple[Any, Callable[[], object], type, str]]] = {
    "a retry's": _retry,
    "a fallback's": _fallback,
}


@pytest.mark.parametrize("pattern", list(STATS_READERS))
def test_a_child_forked_while_another_thread_reads_stats_calls(
    pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``get_stats()`` in another thread at the fork (a health endpoint's) leaves the child's calls free.

    The snapshot's lock is one the pattern's calls take to count: held at the fork by a thread
    the child lacks, the child's first failed call would hang. The snapshot pauses inside it (1 s
    at most) while the test forks.
    """
    instance, call, reads, method = STATS_READERS[pattern]()
    call()
    inside, go = threading.Event(), threading.Event()
    original = getattr(reads, method)

    def paused(self: object) -> object:
        if threading.current_thread() is not threading.main_thread():
            inside.set()
            go.wait(1.0)
        return original(self)

    monkeypatch.setattr(reads, method, paused)
    reader = threading.Thread(target=instance.get_stats, daemon=True)
    reader.start()
    try:
        assert inside.wait(5.0)

        def child() -> None:
            call()
            assert instance.get_stats()["executions"] == 2

        code = run_in_child(child, timeout=10.0)
    finally:
        go.set()
        reader.join(5.0)
    assert code == 0
    call()
