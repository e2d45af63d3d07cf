"""What sharing a breaker through Redis costs: the hot path, Redis operations per call, convergence.

Starts its own redis-server (``.ci/install-tools`` puts one in ``.tools/``) on a free port, then:

* **hot path**: ``breaker.call_sync(int)`` on a CLOSED breaker, local vs with a ``RedisStore``
  (consecutive and ``CountWindow(100)``), best of ``--repeats`` runs of ``--calls`` calls each;
* **Redis operations per 1 000 calls**, read from ``store.ops`` while calls run at ``--rate`` per
  second for 2 s: all succeeding, a windowed breaker (its counts move with every call), and a
  dependency that fails (until the breaker opens, then rejections); a cluster rate limit costs one
  operation per permit by design;
* **convergence**: one replica trips, how long until another (its own store) is OPEN, ``--trips``
  times;
* **cluster permits**: ``--permits`` permits of a cluster rate limiter taken one after another
  from a thread (``call_sync``) and from a coroutine (``await call``: ``redis.asyncio`` on the
  loop), and by 50 coroutines at once (the loop overlaps their round trips).

Run::

    python benchmarks/shared_store.py                 # ~20 s
    python benchmarks/shared_store.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent / "tests"))  # redis_support: the tests' redis-server runner
try:
    import otel_resilience  # noqa: F401 - installed (editable) or not
except ImportError:
    sys.path.insert(0, str(_HERE.parent))

from redis_support import RedisServer  # noqa: E402

from otel_resilience import (  # noqa: E402
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    CountWindow,
    RateLimiter,
    RateLimiterConfig,
    RedisStore,
)
from otel_resilience.engine.registry import namesakes_expected  # noqa: E402


def _hot_path(breaker: CircuitBreaker, calls: int, repeats: int) -> float:
    """Best time per call (µs) of ``breaker.call_sync(int)``."""
    call = breaker.call_sync
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            call(int)
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def hot_path(url: str, calls: int, repeats: int) -> list[dict[str, Any]]:
    """Local vs shared, consecutive and windowed: µs per call and the ratio."""
    store = RedisStore.from_url(url, namespace="bench")
    rows = []
    try:
        for label, options in (
            ("consecutive", {}),
            ("CountWindow(100)", {"sliding_window": CountWindow(100)}),
        ):
            with namesakes_expected():
                local = CircuitBreaker(f"hot-{label}", CircuitBreakerConfig(**options))  # type: ignore[arg-type]
                shared = CircuitBreaker(f"hot-{label}", CircuitBreakerConfig(store=store, **options))  # type: ignore[arg-type]
            time.sleep(0.3)
            local_us = _hot_path(local, calls, repeats)
            shared_us = _hot_path(shared, calls, repeats)
            rows.append(
                {
                    "breaker": label,
                    "local_us": local_us,
                    "shared_us": shared_us,
                    "ratio": shared_us / local_us,
                }
            )
    finally:
        store.close()
    return rows


def _paced(call: Any, rate: float, seconds: float) -> int:
    """Call ``call()`` ``rate`` times a second for ``seconds``; return how many calls were made."""
    made, started = 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        if made < elapsed * rate:
            call()
            made += 1
        else:
            time.sleep(0.0005)
    return made


def operations(url: str, rate: float) -> list[dict[str, Any]]:
    """Redis operations per 1 000 calls for three kinds of traffic."""

    def fail() -> None:
        raise RuntimeError

    def failing(breaker: CircuitBreaker) -> None:
        with contextlib.suppress(Exception):  # the failures and rejections are the point
            breaker.call_sync(fail)

    tick = iter(range(10**9))

    def one_in_ten(breaker: CircuitBreaker) -> None:
        if next(tick) % 10:
            breaker.call_sync(int)
        else:
            failing(breaker)

    rows = []
    for label, options, call in (
        ("all succeed, consecutive", {}, lambda b: b.call_sync(int)),
        (
            "all succeed, CountWindow(100)",
            {"sliding_window": CountWindow(100), "minimum_calls": 10},
            lambda b: b.call_sync(int),
        ),
        (
            "1 in 10 fails, CountWindow(100)",
            {"sliding_window": CountWindow(100), "minimum_calls": 10},
            one_in_ten,
        ),
        ("dependency down (trips, then rejections)", {"timeout": 60.0}, failing),
    ):
        store = RedisStore.from_url(url, namespace=f"ops-{len(rows)}")
        with namesakes_expected():
            breaker = CircuitBreaker("ops", CircuitBreakerConfig(store=store, **options))  # type: ignore[arg-type]
        time.sleep(0.3)
        before = store.ops
        made = _paced(lambda b=breaker, c=call: c(b), rate, 2.0)
        time.sleep(0.3)  # the last batch
        rows.append(
            {
                "traffic": label,
                "calls": made,
                "ops": store.ops - before,
                "per_1000": (store.ops - before) / made * 1000,
            }
        )
        store.close()
    return rows


def convergence(url: str, trips: int) -> dict[str, float]:
    """Milliseconds from one replica's trip to another replica being OPEN."""
    one, two = RedisStore.from_url(url, namespace="conv"), RedisStore.from_url(url, namespace="conv")
    delays = []
    try:
        with namesakes_expected():
            a = CircuitBreaker("conv", CircuitBreakerConfig(store=one))
            b = CircuitBreaker("conv", CircuitBreakerConfig(store=two))
        time.sleep(0.3)
        for _ in range(trips):
            started = time.perf_counter()
            a.force_open(30.0)
            while b.state is not CircuitState.OPEN:
                time.sleep(0.0002)
            delays.append((time.perf_counter() - started) * 1000)
            a.reset()
            while b.state is not CircuitState.CLOSED:
                time.sleep(0.0002)
    finally:
        one.close()
        two.close()
    return {"median_ms": statistics.median(delays), "max_ms": max(delays), "trips": trips}


async def _zero() -> int:
    return 0


async def _async_permits(limiter: RateLimiter, permits: int, workers: int) -> float:
    """Seconds for ``workers`` coroutines to take ``permits`` permits together."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await limiter.call(_zero)

    started = time.perf_counter()
    await asyncio.gather(*(worker(permits // workers) for _ in range(workers)))
    return time.perf_counter() - started


def permits(url: str, count: int) -> list[dict[str, Any]]:
    """Microseconds per cluster permit from a thread, a coroutine, and 50 coroutines at once."""
    store = RedisStore.from_url(url, namespace="permits")
    limiter = RateLimiter("permits", RateLimiterConfig(rate=1e6, burst=1000, store=store))
    try:
        limiter.call_sync(int)
        asyncio.run(_async_permits(limiter, 50, 50))  # connect first
        started = time.perf_counter()
        for _ in range(count):
            limiter.call_sync(int)
        sync = time.perf_counter() - started
        one = asyncio.run(_async_permits(limiter, count, 1))
        many = asyncio.run(_async_permits(limiter, count, 50))
    finally:
        store.close()
    return [
        {"caller": "a thread, call_sync", "us_per_permit": sync / count * 1e6},
        {"caller": "a coroutine, await call", "us_per_permit": one / count * 1e6},
        {"caller": "50 coroutines at once", "us_per_permit": many / count * 1e6},
    ]


def main() -> None:
    """Run the three measurements and print (or write) them."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--trips", type=int, default=20)
    parser.add_argument("--permits", type=int, default=5_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        result = {
            "hot_path": hot_path(server.url, args.calls, args.repeats),
            "operations": operations(server.url, args.rate),
            "convergence": convergence(server.url, args.trips),
            "permits": permits(server.url, args.permits),
        }
    finally:
        server.stop()
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
