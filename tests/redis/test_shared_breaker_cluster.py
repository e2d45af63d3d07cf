"""Four real worker processes share one breaker through a real redis-server."""

from __future__ import annotations

import os
import signal
import time

from redis_support import RedisServer
from shared_workers import STORE_TIMEOUT, Board, breaker_worker, start, stop, wait_for
from tcp_proxy import TcpFaultProxy

WORKERS = 4
OPTIONS = {"threshold": 5, "timeout": 1.0, "probes": 1, "lease_ttl": 2.0, "latency": 0.01, "pace": 0.005}


def _all(board: Board, state: int) -> bool:
    return all(board.state[i] == state for i in range(WORKERS))


def test_a_dependency_going_down_is_called_about_threshold_times_then_probed_once_then_closed(
    redis_url: str,
) -> None:
    """Cluster-wide: failure_threshold (+ in-flight) failures open every worker; one probe per break; recovery closes all."""
    board = Board.new(WORKERS)
    processes = start(breaker_worker, redis_url, board, OPTIONS, WORKERS)
    try:
        wait_for(lambda: board.calls.value > 40, 10.0, "calls flowing")
        board.up.value = 0
        converged = wait_for(lambda: _all(board, 1), 10.0, "every worker OPEN")
        tripped = board.failures.value
        spread = max(board.seen_open) - min(board.seen_open)
        print(
            f"failures before all OPEN: {tripped}; all OPEN within {spread * 1000:.0f} ms ({converged:.2f} s)"
        )
        # failure_threshold, plus at most one call in flight per worker (and one more each while
        # the opening travels): never the 4 x 5 = 20 of four breakers counting alone.
        assert OPTIONS["threshold"] <= tripped <= OPTIONS["threshold"] + 2 * WORKERS
        assert spread < 1.0
        wait_for(lambda: board.failures.value > tripped, 5.0, "a probe after the break")
        time.sleep(0.5)  # any second probe of this break would have run by now
        assert board.failures.value == tripped + 1  # exactly half_open_max_calls probes, cluster-wide
        wait_for(lambda: _all(board, 1), 5.0, "every worker OPEN again after the failed probe")
        board.up.value = 1
        calls = board.calls.value
        wait_for(lambda: _all(board, 0), 10.0, "every worker CLOSED after a successful probe")
        assert board.calls.value > calls
        assert sum(board.other_errors) == 0
    finally:
        stop(board, processes)


def test_another_worker_probes_once_the_lease_of_a_killed_prober_expires(redis_url: str) -> None:
    """The worker holding the probe lease dies mid-probe: after the lease's TTL another probes and closes all."""
    board = Board.new(WORKERS)
    processes = start(breaker_worker, redis_url, board, OPTIONS, WORKERS)
    try:
        wait_for(lambda: board.calls.value > 20, 10.0, "calls flowing")
        board.up.value = 0
        wait_for(lambda: _all(board, 1), 10.0, "every worker OPEN")
        board.hang.value = 1
        wait_for(lambda: board.prober.value != 0, 5.0, "a probe hangs")
        calls = board.calls.value
        time.sleep(0.5)
        assert board.calls.value == calls  # the lease holds: nobody else probes meanwhile
        prober = board.prober.value
        os.kill(prober, signal.SIGKILL)
        killed = time.monotonic()
        board.hang.value = 0
        board.up.value = 1
        survivors = [i for i, p in enumerate(processes) if p.pid != prober]
        wait_for(lambda: all(board.state[i] == 0 for i in survivors), 10.0, "survivors CLOSED")
        took = time.monotonic() - killed
        print(f"closed {took:.2f} s after the prober was killed (lease TTL {OPTIONS['lease_ttl']} s)")
        assert took >= OPTIONS["lease_ttl"] * 0.5  # not before its lease could have expired
    finally:
        stop(board, processes)


def test_redis_down_or_slow_fails_no_call_and_state_reconverges(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Redis stopped (and one worker behind a 2 s delay): every call still succeeds, fast; then they converge again."""
    proxy = TcpFaultProxy("127.0.0.1", redis_server.port).start()
    board = Board.new(WORKERS)
    urls = [redis_url] * (WORKERS - 1) + [f"redis://127.0.0.1:{proxy.port}/0"]
    processes = start(breaker_worker, urls, board, OPTIONS, WORKERS)
    try:
        wait_for(lambda: board.calls.value > 40, 10.0, "calls flowing")
        before = max(board.slowest)
        for i in range(WORKERS):
            board.slowest[i] = 0.0
            board.waited[i] = 0
        since = board.calls.value
        proxy.set("delay", 2.0)  # Redis slow for the last worker only
        time.sleep(1.5)
        assert board.outages[WORKERS - 1] >= 1  # its store said it is degraded (its ops time out)
        assert board.outages[0] == 0
        redis_server.stop()  # now down for everyone
        calls = board.calls.value
        time.sleep(2.0)
        assert board.calls.value > calls + 100  # calls went on
        made = board.calls.value - since
        assert all(board.outages[i] >= 1 for i in range(WORKERS))
        during, waited = max(board.slowest), sum(board.waited)
        print(
            f"slowest call: {before * 1000:.1f} ms before, {during * 1000:.1f} ms with Redis down/slow; "
            f"{waited} of about {made} calls took a store timeout ({STORE_TIMEOUT} s) or longer"
        )
        # A hot path that waited on the store would make nearly every call that long; a scheduling
        # stall of a loaded machine makes a few.
        assert waited <= 0.05 * made
        assert sum(board.rejected) == 0
        assert sum(board.other_errors) == 0
        redis_server.start()
        proxy.set("pass")
        # Reconnected (after the store's backoff) and resynchronised, every worker: one still local
        # when the dependency goes down would trip on its own failures.
        wait_for(lambda: not any(board.degraded), 20.0, "every store healthy again")
        time.sleep(0.6)  # one resync (resync_interval 0.5 s) after the last reconnection
        board.up.value = 0
        wait_for(lambda: _all(board, 1), 10.0, "every worker OPEN after Redis returned")
        assert board.failures.value <= OPTIONS["threshold"] + 2 * WORKERS
    finally:
        stop(board, processes)
        proxy.stop()
