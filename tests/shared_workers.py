"""Worker processes of the shared-state tests: real replicas that share one breaker or one rate limit.

Each worker is a separate Python process (``multiprocessing`` spawn) with its own
:class:`~otel_resilience.RedisStore`. The protected dependency is simulated with shared memory so
that it stays up when Redis goes down: :class:`Dependency` counts every call that reaches it
(cluster-wide), fails while ``up`` is 0, and hangs while ``hang`` is 1 (recording the pid of the
hung caller). Each worker writes what it sees into a :class:`Board` slot.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from dataclasses import dataclass
from typing import Any

STORE_TIMEOUT = 0.25
"""The breaker workers' store timeout: a call that waited on the store takes at least this long."""

STATES = {"closed": 0, "open": 1, "half_open": 2}
"""A breaker state as the integer a worker writes to the board."""

CTX = multiprocessing.get_context("spawn")


class DependencyDown(Exception):
    """The simulated dependency is down."""


@dataclass
class Board:
    """Shared memory between the test and its workers."""

    up: Any
    hang: Any
    calls: Any
    failures: Any
    prober: Any
    admitted: Any
    stop: Any
    state: Any
    seen_open: Any
    rejected: Any
    other_errors: Any
    outages: Any
    slowest: Any
    waited: Any
    degraded: Any
    ready: Any

    @classmethod
    def new(cls, workers: int) -> Board:
        """Return a board for ``workers`` workers (the dependency up)."""
        return cls(
            up=CTX.Value("i", 1),
            hang=CTX.Value("i", 0),
            calls=CTX.Value("i", 0),
            failures=CTX.Value("i", 0),
            prober=CTX.Value("i", 0),
            admitted=CTX.Value("i", 0),
            stop=CTX.Event(),
            state=CTX.Array("i", workers),
            seen_open=CTX.Array("d", workers),
            rejected=CTX.Array("i", workers),
            other_errors=CTX.Array("i", workers),
            outages=CTX.Array("i", workers),
            slowest=CTX.Array("d", workers),
            waited=CTX.Array("i", workers),
            degraded=CTX.Array("i", workers),
            ready=CTX.Array("i", workers),
        )


def dependency(board: Board, latency: float) -> int:
    """The protected call: counted, slow by ``latency``; fails while down, hangs while ``hang``."""
    with board.calls.get_lock():
        board.calls.value += 1
    if board.hang.value:
        board.prober.value = os.getpid()
        time.sleep(60.0)
    time.sleep(latency)
    if not board.up.value:
        with board.failures.get_lock():
            board.failures.value += 1
        raise DependencyDown
    return 1


def breaker_worker(index: int, url: str, board: Board, options: dict[str, Any]) -> None:
    """Call the dependency through a shared breaker until ``stop``; report on the board."""
    from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError, RedisStore  # noqa: PLC0415

    store = RedisStore.from_url(
        url,
        namespace="test",
        timeout=STORE_TIMEOUT,
        probe_lease_ttl=options["lease_ttl"],
        resync_interval=0.5,
    )
    config = CircuitBreakerConfig(
        failure_threshold=options["threshold"],
        success_threshold=1,
        timeout=options["timeout"],
        half_open_max_calls=options["probes"],
        store=store,
    )
    breaker = CircuitBreaker("payments", config)
    latency, pace = options["latency"], options["pace"]
    time.sleep(0.3)  # the store's first resync
    board.ready[index] = 1
    while not board.stop.is_set():
        started = time.monotonic()
        try:
            breaker.call_sync(dependency, board, latency)
        except (CircuitOpenError, DependencyDown) as error:
            if isinstance(error, CircuitOpenError):
                board.rejected[index] += 1
        except Exception:
            board.other_errors[index] += 1
        took = time.monotonic() - started
        if took > board.slowest[index] and not board.hang.value:
            board.slowest[index] = took
        if took >= STORE_TIMEOUT:
            board.waited[index] += 1
        state = STATES.get(breaker.state.value, 9)
        if state == 1 and board.state[index] != 1:
            board.seen_open[index] = time.monotonic()
        board.state[index] = state
        board.outages[index] = store.outages
        board.degraded[index] = int(store.degraded)
        time.sleep(pace)
    store.close()


def limiter_worker(index: int, url: str, board: Board, options: dict[str, Any]) -> None:
    """Try to take permits of a cluster rate limit as fast as ``pace`` allows until ``stop``."""
    from otel_resilience import RateLimitedError, RateLimiter, RateLimiterConfig, RedisStore  # noqa: PLC0415

    store = RedisStore.from_url(url, namespace="test")
    limiter = RateLimiter(
        "search", RateLimiterConfig(rate=options["rate"], burst=options["burst"], store=store)
    )
    board.ready[index] = 1
    while not board.stop.is_set():
        try:
            limiter.call_sync(int)
        except RateLimitedError:
            board.rejected[index] += 1
        else:
            with board.admitted.get_lock():
                board.admitted.value += 1
        time.sleep(options["pace"])
    store.close()


def start(
    target: Any, url: str | list[str], board: Board, options: dict[str, Any], workers: int
) -> list[Any]:
    """Start ``workers`` processes running ``target`` (worker ``i`` uses ``url[i]`` if a list); wait until ready."""
    processes = []
    for index in range(workers):
        address = url[index] if isinstance(url, list) else url
        process = CTX.Process(target=target, args=(index, address, board, options), daemon=True)
        process.start()
        processes.append(process)
    wait_for(lambda: all(board.ready[i] for i in range(workers)), 20.0, "workers ready")
    return processes


def stop(board: Board, processes: list[Any]) -> None:
    """Stop every worker (killing those that do not stop within 5 s)."""
    board.stop.set()
    for process in processes:
        process.join(5.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Poll ``condition`` every 5 ms until true; return the seconds it took; raise if it never is."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            message = f"not within {timeout} s: {what}"
            raise AssertionError(message)
        time.sleep(0.005)
    return time.monotonic() - started


def first_round(store: Any, timeout: float = 5.0) -> None:
    """Wait for the first operation of ``store``'s thread (its subscriber's SUBSCRIBE is one more)."""
    wait_for(lambda: store.ops >= 2, timeout, "the store's first round")


def trip_in_worker(config: Any) -> tuple[str, str]:
    """In a worker process: trip a breaker ``payments`` of ``config`` (which names a store); wait until the cluster has it.

    Returns the namespace of the worker's store and the cluster's state it published.
    """
    import redis  # noqa: PLC0415 - the redis extra, here only

    from otel_resilience import CircuitBreaker  # noqa: PLC0415

    store = config.store
    breaker = CircuitBreaker("payments", config)
    first_round(store)

    def boom() -> None:
        raise DependencyDown

    for _ in range(config.failure_threshold):
        with contextlib.suppress(DependencyDown):
            breaker.call_sync(boom)
    client = redis.Redis(connection_pool=store._client.connection_pool)
    key = f"{store.key_prefix}:cb:payments:state"
    try:
        wait_for(lambda: client.hget(key, "state") == b"open", 10.0, "the worker's trip published")
    finally:
        store.close()
    return store.namespace, breaker.state.value
