"""Worker processes that start while Redis is down: they run alone, then act as one cluster once it is up."""

from __future__ import annotations

from redis_support import RedisServer
from shared_workers import Board, breaker_worker, start, stop, wait_for

WORKERS = 3
OPTIONS = {"threshold": 5, "timeout": 30.0, "probes": 1, "lease_ttl": 2.0, "latency": 0.01, "pace": 0.005}


def test_replicas_started_while_redis_is_down_share_a_trip_as_soon_as_it_is_up(
    redis_server: RedisServer, redis_url: str
) -> None:
    """Three processes start with Redis stopped: no call fails; once their stores are back, one trip opens all.

    Each store starts degraded (its first operations are refused) and its breaker runs alone;
    once Redis is up, each reconnects, publishes nothing it did not decide, listens again and
    counts with the others: the dependency going down is called about ``failure_threshold``
    times in the whole cluster, with no wait for a resync.
    """
    assert redis_url
    redis_server.stop()
    board = Board.new(WORKERS)
    processes = start(breaker_worker, redis_url, board, OPTIONS, WORKERS)
    try:
        wait_for(lambda: all(board.degraded[i] for i in range(WORKERS)), 10.0, "every store degraded")
        calls = board.calls.value
        wait_for(lambda: board.calls.value > calls + 30, 10.0, "calls flowing without Redis")
        redis_server.start()
        back = wait_for(lambda: not any(board.degraded), 15.0, "every store back")
        assert sum(board.other_errors) == 0
        assert sum(board.rejected) == 0
        board.up.value = 0  # at once: no resync needed to have heard of the others' trips
        spread = wait_for(lambda: all(board.state[i] == 1 for i in range(WORKERS)), 10.0, "every worker OPEN")
        failures = board.failures.value
        print(
            f"stores back {back:.2f} s after Redis started; {failures} failures before all OPEN ({spread:.2f} s)"
        )
        assert failures <= OPTIONS["threshold"] + 2 * WORKERS
    finally:
        stop(board, processes)
