"""A cluster rate limit from coroutines: the store is asked on the event loop, never blocking it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

import pytest
import redis
import redis.asyncio
from redis_support import RedisServer, free_port
from support import collect_quietly, freed_on_a_closed_loop, until_sync
from tcp_proxy import TcpFaultProxy

from otel_resilience import (
    OperationTimeoutError,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    RedisStore,
)
from otel_resilience.engine import SYSTEM_CLOCK, SyncDeadline
from otel_resilience.engine.validation import MAX_DURATION

SLOW = 2.0
"""How late Redis answers behind the proxy: half of it on the way there, half on the way back."""
STALL = 0.5
"""A generous bound on the longest pause of a ticker task while callers await Redis."""


async def _zero() -> int:
    return 0


def _via(proxy: TcpFaultProxy) -> str:
    return f"redis://127.0.0.1:{proxy.port}/0"


async def _ticking(work: Awaitable[list[object]]) -> tuple[list[object], float]:
    """Run ``work`` beside a task ticking every 10 ms; return its results and the longest gap between ticks."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.ensure_future(tick())
    try:
        results = await work
    finally:
        done.set()
        await ticker
    return results, max(gaps)


async def _warm(store: RedisStore, callers: int) -> None:
    """Open the loop's client's connections for ``callers`` at once, while Redis is fast (a new one's handshake is a round trip)."""
    warm = RateLimiter("warm", RateLimiterConfig(rate=1000.0, burst=callers, store=store))
    assert await _calls(warm, [], callers) == [1] * callers


def _calls(limiter: RateLimiter, ran: list[int], count: int) -> Awaitable[list[object]]:
    async def protected() -> int:
        ran.append(1)
        return 1

    return asyncio.gather(*(limiter.call(protected) for _ in range(count)), return_exceptions=True)


async def test_a_slow_redis_does_not_block_the_loop_and_admits_exactly_the_budget(
    proxy: TcpFaultProxy, redis_url: str
) -> None:
    """Redis 2 s slow (within the store's timeout): 12 coroutines wait without stalling the loop; 5 get the 5 permits left."""
    store = RedisStore.from_url(_via(proxy), namespace="rla", timeout=SLOW + 1.5, probe_lease_ttl=11.0)
    other = RedisStore.from_url(redis_url, namespace="rla")
    try:
        config = RateLimiterConfig(rate=0.01, burst=7, store=store)
        limiter = RateLimiter("slow", config)
        assert limiter.try_acquire()  # the sync API (this thread's client) still works from a coroutine
        assert await limiter.call(_zero) == 0
        await _warm(store, 12)
        proxy.set("delay", SLOW / 2)
        ran: list[int] = []
        started = time.monotonic()
        results, stall = await _ticking(_calls(limiter, ran, 12))
        took = time.monotonic() - started
        print(
            f"12 async callers through a {SLOW:g} s Redis: {took:.2f} s, longest loop stall {stall * 1000:.0f} ms"
        )
        assert took >= SLOW * 0.9  # they did wait on Redis
        assert stall < STALL  # a blocking round trip would have stalled it 2 s
        assert len(ran) == 5  # 7 - 2: no permit lost, none doubled
        assert sum(isinstance(r, RateLimitedError) for r in results) == 7
        stats = limiter.get_stats()
        assert (stats["admitted"], stats["rejected"], stats["cancelled"]) == (7, 7, 0)
        assert not store.degraded
        proxy.set("pass")
        later = RateLimiter("slow", RateLimiterConfig(rate=0.01, burst=7, store=other))
        assert not later.try_acquire()  # another replica finds the cluster's budget spent
    finally:
        store.close()
        other.close()


@pytest.mark.parametrize("fallback", ["open", "closed"])
async def test_redis_slower_than_the_timeout_falls_back_without_blocking_the_loop(
    proxy: TcpFaultProxy, fallback: str
) -> None:
    """Redis 2 s slow, timeout 1 s: coroutines get the fallback's answer after the timeout; the loop never stalls."""
    store = RedisStore.from_url(_via(proxy), namespace="rlb", timeout=1.0)
    try:
        config = RateLimiterConfig(rate=1.0, burst=1, store=store, store_fallback=fallback)  # type: ignore[arg-type]
        limiter = RateLimiter("fallback", config)
        assert await limiter.call(_zero) == 0
        await _warm(store, 8)
        proxy.set("delay", SLOW / 2)
        ran: list[int] = []
        results, stall = await _ticking(_calls(limiter, ran, 8))
        print(f"fallback {fallback!r}: longest loop stall {stall * 1000:.0f} ms")
        assert stall < STALL
        assert store.degraded
        assert store.outages == 1
        if fallback == "open":
            assert len(ran) == 8
            assert store.fallback_permits == limiter._rules.fallback_admitted == 8  # type: ignore[attr-defined]
        else:
            assert ran == []
            assert all(isinstance(r, RateLimitedError) for r in results)
        assert limiter.get_stats()["admitted"] == 1 + len(ran)
    finally:
        store.close()


def test_the_sync_path_still_waits_at_most_the_timeout_in_its_thread(proxy: TcpFaultProxy) -> None:
    """From a thread: one call waits for the timeout, then the fallback answers; later calls do not wait."""
    store = RedisStore.from_url(_via(proxy), namespace="rlc", timeout=0.5)
    try:
        limiter = RateLimiter("sync", RateLimiterConfig(rate=1.0, burst=1, store=store))
        assert limiter.call_sync(int) == 0
        proxy.set("delay", SLOW / 2)
        started = time.monotonic()
        assert limiter.call_sync(int) == 0  # the bucket is empty: only the fallback admits it
        first = time.monotonic() - started
        started = time.monotonic()
        assert limiter.try_acquire()
        second = time.monotonic() - started
        print(
            f"sync: {first * 1000:.0f} ms for the call that met the slow Redis, {second * 1000:.1f} ms after"
        )
        assert 0.4 <= first < SLOW
        assert second < 0.4
        assert store.fallback_permits == 2
    finally:
        store.close()


def test_a_sync_permit_waits_no_longer_than_the_callers_deadline(proxy: TcpFaultProxy) -> None:
    """From a thread, inside a deadline shorter than the store's timeout: the round trip to a slow
    Redis ends at the deadline, which the caller's scope raises as its timeout, not when Redis
    answers. The caller ran out of time, Redis did not fail: the store is not degraded, and the
    asker counts in ``cancelled``, as a coroutine that its deadline cancels does."""
    store = RedisStore.from_url(
        _via(proxy), namespace="rl-deadline", timeout=SLOW + 1.5, probe_lease_ttl=11.0
    )
    try:
        limiter = RateLimiter("deadline", RateLimiterConfig(rate=1.0, burst=5, store=store))
        assert limiter.call_sync(int) == 0  # connected
        proxy.set("delay", SLOW / 2)
        ran: list[int] = []
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError) as raised, SyncDeadline(SYSTEM_CLOCK, 0.1, "caller"):
            limiter.call_sync(ran.append, 1)
        took = time.monotonic() - started
        print(f"sync permit inside a 0.1 s deadline: {took * 1000:.0f} ms (Redis answers in {SLOW:g} s)")
        assert took < SLOW / 2  # the deadline's 0.1 s, not the round trip's 2 s
        assert (raised.value.operation, ran) == ("caller", [])
        assert (store.degraded, store.outages) == (False, 0)
        stats = limiter.get_stats()
        assert (stats["admitted"], stats["cancelled"], stats["waiting"]) == (1, 1, 0)
        assert store.fallback_permits == 0
    finally:
        store.close()


def test_event_loops_in_several_threads_share_one_budget(redis_url: str) -> None:
    """Four threads, each with its own event loop (so its own async client), admit exactly the burst together."""
    store = RedisStore.from_url(redis_url, namespace="rld")
    limiter = RateLimiter("loops", RateLimiterConfig(rate=0.01, burst=10, store=store))
    ran: list[int] = []
    errors: list[BaseException] = []
    seen: list[int] = []
    # Each loop waits here (blocking its own thread) once its calls are done, so that all four
    # loops are alive, each with its client, when the clients are counted: a loop that closed
    # is forgotten by the next loop to make a client, and a collected loop by its weak key.
    all_done, all_counted = threading.Barrier(4, timeout=10.0), threading.Barrier(4, timeout=10.0)

    def run(work: Callable[[], Awaitable[list[object]]]) -> None:
        async def main() -> None:
            results = await work()
            errors.extend(r for r in results if isinstance(r, BaseException))
            all_done.wait()
            seen.append(len(store._async_clients))
            all_counted.wait()

        asyncio.run(main())

    try:
        threads = [threading.Thread(target=run, args=(lambda: _calls(limiter, ran, 6),)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10.0)
        assert len(ran) == 10
        assert len(errors) == 14
        assert all(isinstance(e, RateLimitedError) for e in errors)
        assert seen == [4, 4, 4, 4]  # one client per loop

        async def once() -> int:
            await _calls(limiter, ran, 1)
            return len(store._async_clients)  # counted while this loop runs (a closed one may be collected)

        assert asyncio.run(once()) == 1  # a new loop's client: those of the closed loops are dropped
        assert not store.degraded
    finally:
        store.close()


async def test_a_cancelled_asker_is_counted_and_admits_nothing(proxy: TcpFaultProxy) -> None:
    """A coroutine cancelled while Redis answers slowly is counted as cancelled; its call never runs."""
    store = RedisStore.from_url(_via(proxy), namespace="rle", timeout=SLOW + 1.5, probe_lease_ttl=11.0)
    try:
        limiter = RateLimiter("cancel", RateLimiterConfig(rate=1.0, burst=5, store=store))
        assert await limiter.call(_zero) == 0
        proxy.set("delay", SLOW / 2)
        ran: list[int] = []
        task = asyncio.ensure_future(_calls(limiter, ran, 1))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran == []
        assert limiter.get_stats()["cancelled"] == 1
    finally:
        store.close()


async def test_a_cancellation_that_comes_with_the_answer_is_not_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancellation that lands in the loop's turn Redis's answer lands in cancels the caller: its call never runs.

    (Python 3.10's ``asyncio.wait_for`` returned the answer then and dropped the cancellation.)
    """
    store = RedisStore.from_url(redis_url, namespace="rl-cancel-answer")
    try:
        limiter = RateLimiter("cancel-answer", RateLimiterConfig(rate=1.0, burst=5, store=store))
        assert await limiter.call(_zero) == 0
        loop = asyncio.get_running_loop()
        original = redis.asyncio.Redis.eval
        ran: list[int] = []

        async def answered_as_cancelled(self: redis.asyncio.Redis, *args: object) -> object:
            reply = await original(self, *args)
            landed = loop.create_future()
            loop.call_soon(landed.set_result, reply)  # the answer lands...
            loop.call_soon(task.cancel)  # ...and, in the same turn of the loop, a cancellation
            return await landed

        async def protected() -> int:
            ran.append(1)
            return 1

        monkeypatch.setattr(redis.asyncio.Redis, "eval", answered_as_cancelled)
        task = asyncio.ensure_future(limiter.call(protected))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran == []
        assert limiter.get_stats()["cancelled"] == 1
    finally:
        store.close()


async def test_a_cancellation_the_client_swallows_is_not_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that catches the caller's cancellation and returns the reply (redis-py 8 does) cancels
    the caller all the same: its call never runs, and the asker is counted as cancelled."""
    store = RedisStore.from_url(redis_url, namespace="rl-cancel-swallowed")
    try:
        limiter = RateLimiter("cancel-swallowed", RateLimiterConfig(rate=1.0, burst=5, store=store))
        assert await limiter.call(_zero) == 0
        original = redis.asyncio.Redis.eval
        ran: list[int] = []

        async def swallowing(self: redis.asyncio.Redis, *args: object) -> object:
            task.cancel()  # the caller is cancelled while its command runs...
            with contextlib.suppress(asyncio.CancelledError):  # ...and the client goes on with it
                await asyncio.sleep(0)
            return await original(self, *args)

        async def protected() -> int:
            ran.append(1)
            return 1

        monkeypatch.setattr(redis.asyncio.Redis, "eval", swallowing)
        task = asyncio.ensure_future(limiter.call(protected))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran == []
        assert limiter.get_stats()["cancelled"] == 1
    finally:
        store.close()


async def test_a_cancellation_the_client_swallows_before_failing_is_not_lost(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that catches the caller's cancellation and then fails (its connection dropped under
    the cancelled read) cancels the caller all the same: its call never runs on the fallback, the
    store is not degraded by it, and the asker is counted as cancelled. Was: the error taken for
    the store's, the call admitted locally and run, the cancellation lost."""
    store = RedisStore.from_url(redis_url, namespace="rl-cancel-swallowed-failing")
    try:
        limiter = RateLimiter("cancel-swallowed-failing", RateLimiterConfig(rate=1.0, burst=5, store=store))
        assert await limiter.call(_zero) == 0
        ran: list[int] = []

        async def swallowing_then_failing(self: redis.asyncio.Redis, *args: object) -> object:
            task.cancel()  # the caller is cancelled while its command runs...
            with contextlib.suppress(asyncio.CancelledError):  # ...and the client goes on with it
                await asyncio.sleep(0)
            raise redis.ConnectionError("Connection closed by server.")

        async def protected() -> int:
            ran.append(1)
            return 1

        monkeypatch.setattr(redis.asyncio.Redis, "eval", swallowing_then_failing)
        task = asyncio.ensure_future(limiter.call(protected))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ran == []
        assert limiter.get_stats()["cancelled"] == 1
        assert store.errors == 0
    finally:
        store.close()


async def test_a_task_looping_on_cluster_permits_ends_when_cancelled(redis_url: str) -> None:
    """Cancelled at any point of its permits' round trips on the real client, a task that loops on
    them (shedding its rejections) ends cancelled: none goes on running."""
    store = RedisStore.from_url(redis_url, namespace="rl-cancel-loop")
    rng = random.Random(7)
    try:
        limiter = RateLimiter("cancel-loop", RateLimiterConfig(rate=1000.0, burst=5, store=store))

        async def loop() -> None:
            while True:
                with contextlib.suppress(RateLimitedError):
                    await limiter.call(_zero)

        running = 0
        for _ in range(40):
            task = asyncio.ensure_future(loop())
            await asyncio.sleep(rng.uniform(0.0, 0.003))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)  # a generous bound: it ends at its next await
            if not done:
                running += 1
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
            else:
                assert task.cancelled()
        assert running == 0
    finally:
        store.close()


def test_an_asker_freed_after_its_loop_closed_never_blocks_on_the_rules_lock(proxy: TcpFaultProxy) -> None:
    """A coroutine left waiting for Redis's answer when its loop closed is freed by the garbage
    collector, which closes it on whichever thread allocates: maybe one that holds the cluster
    rules' lock (a caller asking allocates there). It gives its waiting place back and is counted
    cancelled once the lock is free, without blocking on it."""
    store = RedisStore.from_url(_via(proxy), namespace="rl-freed", timeout=SLOW + 1.5, probe_lease_ttl=11.0)
    try:
        limiter = RateLimiter("freed", RateLimiterConfig(rate=1.0, burst=5, max_wait=1.0, store=store))
        assert asyncio.run(limiter.call(_zero)) == 0
        proxy.set("delay", SLOW / 2)
        rules = limiter._rules
        asking = lambda: rules._asking == 1  # noqa: E731 - its waiting place taken, Redis asked
        freed_on_a_closed_loop(lambda: limiter.call(_zero), asking, rules._lock, "the cluster rules' lock")
        until_sync(lambda: limiter.get_stats()["cancelled"] == 1)
        assert (rules._asking, limiter.get_stats()["waiting"]) == (0, 0)
    finally:
        store.close()


def test_a_loop_closed_with_a_permit_pending_is_freed_with_its_client(proxy: TcpFaultProxy) -> None:
    """A loop closed while a permit is asked of Redis (``loop.close()``: no ``asyncio.run`` shutdown
    to close the loop's client) is freed by the next full collection, the socket of its client's
    connection closed with it, while the store stays open and no other loop asks it. Was: the
    store's entry for the loop held the client, whose connection held the loop, so that neither was
    ever freed (nor the socket closed) until another loop asked the store or the store closed."""
    store = RedisStore.from_url(
        _via(proxy), namespace="rl-closed-loop", timeout=SLOW + 1.5, probe_lease_ttl=11.0
    )
    try:
        limiter = RateLimiter("closed-loop", RateLimiterConfig(rate=1.0, burst=5, store=store))
        proxy.set("delay", SLOW / 2)
        sockets: list[object] = []

        async def sent() -> None:
            for _ in range(500):
                for client, *_ in store._async_clients._clients.values():
                    for connection in client.connection_pool._in_use_connections:
                        if connection._writer is not None:  # connected, its request on the way
                            sockets.append(connection._writer.get_extra_info("socket"))
                            return
                await asyncio.sleep(0.01)
            raise AssertionError("no connection made")

        gc.disable()  # the collection below is the one that frees the loop
        try:
            loop = asyncio.new_event_loop()
            task = loop.create_task(limiter.call(_zero))
            loop.run_until_complete(sent())
            loop.close()  # the permit's task never runs again, and the loop's client is never closed
            closed = weakref.ref(loop)
            del task, loop
            collect_quietly()  # its transport warns that the loop never closed it
        finally:
            gc.enable()
        assert closed() is None
        assert len(store._async_clients) == 0
        assert sockets[0].fileno() == -1  # type: ignore[attr-defined]
    finally:
        store.close()


async def test_an_async_guard_takes_a_cluster_permit_on_the_loop(redis_url: str) -> None:
    """``async with limiter.guard()`` asks the store as ``await call`` does: the burst, then a refusal."""
    store = RedisStore.from_url(redis_url, namespace="rlf")
    try:
        limiter = RateLimiter("guard", RateLimiterConfig(rate=0.01, burst=2, store=store))
        for _ in range(2):
            async with limiter.guard():
                pass
        with pytest.raises(RateLimitedError):
            async with limiter.guard():
                pass
        assert len(store._async_clients) == 1  # the loop's client asked, not the thread's
        assert limiter.get_stats()["admitted"] == 2
    finally:
        store.close()


def _connections(redis_server: RedisServer) -> int:
    """The clients connected to the session's server, the one asking aside."""
    control = redis.Redis(port=redis_server.port)
    try:
        return len(control.client_list()) - 1
    finally:
        control.close()


async def test_a_thousand_coroutines_share_at_most_max_connections(
    redis_server: RedisServer, redis_url: str
) -> None:
    """1000 coroutines asking at once open at most ``max_connections`` connections; each gets its permit.

    The loop's client opened one connection per coroutine waiting on Redis (1000 here: a server's
    ``maxclients`` or the process' file descriptors ran out before the budget did). The others wait
    for a free connection, well within the timeout on a local server.
    """
    store = RedisStore.from_url(
        redis_url, namespace="pool", timeout=10.0, max_connections=4, probe_lease_ttl=31.0
    )
    try:
        limiter = RateLimiter("many", RateLimiterConfig(rate=1_000_000.0, burst=1000, store=store))
        ran: list[int] = []
        results = await _calls(limiter, ran, 1000)
        assert results == [1] * 1000
        assert (store.degraded, store.errors, store.fallback_permits) == (False, 0, 0)
        opened = _connections(redis_server)
        print(f"1000 coroutines: {opened} connections (the store's thread and subscriber included)")
        assert opened <= 4 + 2  # the loop's client, the store's thread, its subscriber
    finally:
        store.close()


@pytest.mark.parametrize("path", ["async", "sync"])
async def test_a_wait_for_a_connection_past_the_timeout_is_an_outage_not_a_hang(
    redis_url: str, path: str
) -> None:
    """Every connection in use (``max_connections=1``, held): a permit waits for the timeout, then the fallback.

    The store degrades as with a slow Redis (one outage), and no caller waits past the timeout.
    """
    store = RedisStore.from_url(redis_url, namespace=f"pool-{path}", timeout=0.3, max_connections=1)
    try:
        limiter = RateLimiter("full", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        assert await limiter.call(_zero) == 0  # the loop's client and its connection
        assert limiter.try_acquire()  # the thread's client
        client = store._client if path == "sync" else await store._async_clients.client()
        holder = client.client()  # a single-connection client of the same pool: holds its one connection
        try:
            await holder.ping() if path == "async" else holder.ping()
            started = time.monotonic()
            if path == "async":
                assert await limiter.call(_zero) == 0  # store_fallback="open"
            else:
                assert limiter.try_acquire()
            took = time.monotonic() - started
            print(f"{path}: the permit waited {took * 1000:.0f} ms for a connection (timeout 300 ms)")
            assert took < 0.3 + 2.0  # bounded by the timeout, not a hang (generous on a loaded machine)
            assert store.outages == 1  # degraded (until the store's thread reaches Redis again)
            assert store.fallback_permits == 1
        finally:
            await holder.aclose() if path == "async" else holder.close()
    finally:
        store.close()


async def test_callers_asking_at_once_never_wait_beyond_max_waiting(redis_url: str) -> None:
    """Six coroutines ask at once while one may wait: the others are refused, none queues past ``max_waiting``."""
    store = RedisStore.from_url(redis_url, namespace="rlw")
    try:
        config = RateLimiterConfig(rate=20.0, burst=1, max_wait=1.0, max_waiting=1, store=store)
        limiter = RateLimiter("queue", config)
        await _warm(store, 6)
        ran: list[int] = []
        calls = asyncio.ensure_future(_calls(limiter, ran, 6))
        await asyncio.sleep(0.01)
        assert limiter.get_stats()["waiting"] <= 1
        results = await calls
        stats = limiter.get_stats()
        assert stats["waited"] <= 1
        assert stats["waiting"] == 0
        assert sum(isinstance(result, RateLimitedError) for result in results) >= 4
        assert len(ran) == stats["admitted"] <= 2
    finally:
        store.close()


async def test_a_cluster_retry_after_behind_the_waiters_of_a_long_period_is_a_duration(
    redis_url: str,
) -> None:
    """Refused behind cluster waiters past ``MAX_DURATION`` of permits, a caller's ``retry_after`` is at most it."""
    store = RedisStore.from_url(redis_url, namespace="rl-long-period")
    try:
        limiter = RateLimiter(
            "long-period",
            RateLimiterConfig(rate=1e-9, burst=1, max_wait=MAX_DURATION, max_waiting=20, store=store),
        )
        assert limiter.try_acquire()
        waiters = [asyncio.create_task(limiter.call(_zero)) for _ in range(9)]  # due at 1e9 ... 9e9 s
        for _ in range(3000):  # each waiter's round trip to Redis: a generous bound, in real time
            if limiter.waiting == 9:
                break
            await asyncio.sleep(0.01)
        assert limiter.waiting == 9
        with pytest.raises(RateLimitedError) as raised:
            await limiter.call(_zero)  # its permit: 1e10 s away
        assert raised.value.retry_after == MAX_DURATION
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        store.close()


_MADE: dict[str, float] = {"timeout": 0.25, "flush_interval": 0.1, "probe_lease_ttl": 5.0, "key_ttl": 60.0}
"""The settings of a store made with its constructor (from clients)."""


def _made(url: str, **more: object) -> RedisStore:
    """A store made with its constructor, of two sync clients of ``url``."""
    return RedisStore(redis.Redis.from_url(url), redis.Redis.from_url(url), namespace="made", **_MADE, **more)  # type: ignore[arg-type]


def test_a_store_made_of_sync_clients_refuses_an_async_permit_and_stays_shared(redis_url: str) -> None:
    """A store made of sync clients alone has no async client: a permit asked from a coroutine is
    refused with a ``TypeError`` saying so, the store still shared for everyone else (was: an
    ``OSError`` counted as an outage of the store, which degraded it: every caller, the threads'
    too, then ran on ``store_fallback``)."""
    store = _made(redis_url)
    limiter = RateLimiter("made_1", RateLimiterConfig(rate=100.0, store=store, store_fallback="closed"))
    try:
        with pytest.raises(TypeError, match=r"RedisStore 'made' has no async client .*async_client_factory"):
            asyncio.run(limiter.call(_zero))
        assert (store.degraded, store.errors, store.outages) == (False, 0, 0)
        assert limiter.try_acquire()  # asked of Redis from this thread, as before
        assert store.ops >= 1
        assert not store.degraded
    finally:
        store.close()


def test_a_store_made_with_an_async_client_factory_takes_permits_on_each_loop(redis_url: str) -> None:
    """``async_client_factory`` makes each event loop's ``redis.asyncio`` client, as ``from_url``'s
    does: permits asked from two loops (two ``asyncio.run``) share one budget in Redis."""
    made: list[object] = []

    def factory() -> redis.asyncio.Redis:
        client = redis.asyncio.Redis.from_url(redis_url)
        made.append(client)
        return client

    store = _made(redis_url, async_client_factory=factory)
    limiter = RateLimiter("made_2", RateLimiterConfig(rate=0.01, burst=2, store=store, store_fallback="open"))
    try:
        assert asyncio.run(limiter.call(_zero)) == 0
        assert asyncio.run(limiter.call(_zero)) == 0
        with pytest.raises(RateLimitedError):  # the budget is the cluster's: 2 for both loops
            asyncio.run(limiter.call(_zero))
        assert len(made) == 3  # one client per loop
        assert (store.degraded, store.errors, store.fallback_permits) == (False, 0, 0)
        assert not limiter.try_acquire()  # this thread's permits come from the same budget
    finally:
        store.close()


@pytest.mark.parametrize(
    "factory",
    [
        "redis://localhost",  # not callable
        redis.asyncio.Redis.from_url,  # takes a URL: not callable with no argument
    ],
)
def test_the_async_client_factory_is_checked_at_construction(redis_url: str, factory: object) -> None:
    """The factory is refused when it is given, naming the parameter, not at the first async permit."""
    with pytest.raises(TypeError, match=r"^RedisStore\.async_client_factory must be"):
        _made(redis_url, async_client_factory=factory)


def test_an_async_client_factory_that_makes_no_async_client_is_refused_without_degrading(
    redis_url: str,
) -> None:
    """A factory that makes something else (a sync client) is a ``TypeError`` at the permit that made
    it, the store still shared (not an outage)."""
    store = _made(redis_url, async_client_factory=lambda: redis.Redis.from_url(redis_url))
    limiter = RateLimiter("made_3", RateLimiterConfig(rate=100.0, store=store))
    try:
        with pytest.raises(
            TypeError, match=r"^RedisStore\.async_client_factory must make a redis\.asyncio\.Redis"
        ):
            asyncio.run(limiter.call(_zero))
        assert (store.degraded, store.errors) == (False, 0)
    finally:
        store.close()


def test_a_store_made_of_clients_takes_an_unreachable_redis_as_an_outage() -> None:
    """A store made with its constructor knows redis-py's errors as ``from_url``'s does: a permit asked
    while Redis is unreachable takes ``store_fallback`` and degrades the store (was: redis-py's
    ``ConnectionError``, unknown to it, was raised into the caller's call)."""
    store = _made(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RateLimiter("made_4", RateLimiterConfig(rate=100.0, store=store, store_fallback="open"))
    try:
        assert limiter.try_acquire()
        assert store.degraded
        assert store.fallback_permits == 1
    finally:
        store.close()


async def test_a_pooled_connection_the_server_closed_is_no_outage(redis_url: str) -> None:
    """Redis ends the loop's idle connection (a restart, a relay's drop, ``CLIENT KILL``): the next
    permit connects again and is served, no outage counted.

    redis-py 8.1 (the newest on Python 3.10) handed such a connection out of its pool whenever its
    maintenance notifications were ``auto`` (the default), though they never apply to RESP2: the
    permit failed on it, the store counted an outage and degraded (each drop of Redis counted twice).
    """
    store = RedisStore.from_url(redis_url, namespace="killed-idle", timeout=2.0)
    control = redis.Redis.from_url(redis_url)
    try:
        limiter = RateLimiter("killed-idle", RateLimiterConfig(rate=1000.0, burst=100, store=store))
        assert await limiter.call(_zero) == 0
        client = await store._async_clients.client()
        killed = control.client_kill_filter(_id=await client.client_id())
        assert killed == 1
        await asyncio.sleep(0.2)  # the loop reads the connection's end
        assert await limiter.call(_zero) == 0
        assert (store.outages, store.degraded) == (0, False)
    finally:
        store.close()
        control.close()
