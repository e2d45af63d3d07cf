"""Every timed scenario, for ours and for each peer where the peer has the feature.

Each builder returns one :class:`~_harness.Group` per driver. The protected function is always
a trivial one (``return 1``), so a row's overhead is the cost of the resilience layer itself.
Peers are configured as close to ours as their API allows; where they differ, the row says so.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final

from _floor import FloorPolicy, floor, traced
from _harness import Contender, Group, async_chunk, sync_chunk
from _peers import Peers

import otel_resilience as orr
from otel_resilience.engine.events import HUB

OURS = "ours"
UNAVAILABLE = "async API needs tornado (not measured)"


class BoomError(Exception):
    """The error the flaky and the tripping functions raise."""


async def af() -> int:
    return 1


def sf() -> int:
    return 1


def _chunk(driver: str, stmt: str, ns: dict[str, Any], setup: str = "") -> Any:
    return (async_chunk if driver == "async" else sync_chunk)(stmt, ns, setup=setup)


def _aw(driver: str) -> str:
    return "await " if driver == "async" else ""


def _fn(driver: str) -> Callable[..., Any]:
    return af if driver == "async" else sf


def baseline(driver: str) -> Any:
    """The bare call every row is compared with: ``await f()`` or ``f()``."""
    return _chunk(driver, f"{_aw(driver)}f()", {"f": _fn(driver)})


def _ours(label: str, chunk: Any, *, primary: bool = False, note: str = "", **kw: Any) -> Contender:
    return Contender(f"otel_resilience: {label}", OURS, chunk, primary=primary, note=note, **kw)


def telemetry_off_hooks() -> tuple[Callable[[], None], Callable[[], None]]:
    """``before``/``after`` hooks that unregister every telemetry listener, then put them back."""
    saved: list[object] = []

    def before() -> None:
        saved.extend(dict.fromkeys((*HUB.event_listeners, *HUB.execution_listeners)))
        for listener in saved:
            HUB.remove_listener(listener)

    def after() -> None:
        for listener in saved:
            HUB.add_listener(listener)
        saved.clear()

    return before, after


def _ours_off(label: str, chunk: Any) -> Contender:
    before, after = telemetry_off_hooks()
    return _ours(
        f"{label}, telemetry off",
        chunk,
        before=before,
        after=after,
        note="every telemetry listener unregistered (the import-time OtelListener included)",
    )


def default_telemetry() -> str:
    """Describe the listeners registered when the benchmark starts (what ``import`` installed)."""
    names = [type(x).__name__ for x in dict.fromkeys((*HUB.event_listeners, *HUB.execution_listeners))]
    return ", ".join(names) if names else "none"


# --------------------------------------------------------------------------------------- bare


def bare(driver: str, peers: Peers) -> Group:
    """The baseline measured against itself: the noise floor of the method."""
    del peers
    aw = _aw(driver)
    chunk = _chunk(driver, f"{aw}f()", {"f": _fn(driver)})
    contender = Contender("bare call vs itself (noise floor)", "baseline", chunk)
    return Group("bare", "Bare call (baseline)", driver, baseline(driver), [contender])


# Circuit breakers ----------------------------------------------------------------------------


def _switch(driver: str) -> tuple[list[bool], Callable[..., Any]]:
    """A function that raises while ``flag[0]`` is set (to trip breakers), else returns 1."""
    flag = [False]
    if driver == "async":

        async def switch_async() -> int:
            if flag[0]:
                raise BoomError
            return 1

        return flag, switch_async

    def switch_sync() -> int:
        if flag[0]:
            raise BoomError
        return 1

    return flag, switch_sync


def _tripper(driver: str, flag: list[bool], chunk: Any) -> Callable[[], Any]:
    """Return a ``prepare`` hook that runs ``chunk`` with the switch on, tripping the breaker."""
    if driver == "async":

        async def trip_async() -> None:
            flag[0] = True
            try:
                await chunk(20)
            finally:
                flag[0] = False

        return trip_async

    def trip_sync() -> None:
        flag[0] = True
        try:
            chunk(20)
        finally:
            flag[0] = False

    return trip_sync


def breaker(driver: str, peers: Peers, *, open_: bool) -> Group:
    """A circuit breaker, closed (the call goes through) or open (the call is rejected)."""
    aw = _aw(driver)
    flag, fn = _switch(driver)
    scenario = "breaker_open" if open_ else "breaker_closed"
    tag = f"bench.{scenario}.{driver}"
    stmt_tpl = f"try:\n    {aw}{{call}}\nexcept Exception:\n    pass" if open_ else f"{aw}{{call}}"
    long = 3600.0
    contenders: list[tuple[Contender, bool]] = []  # each with: does it need tripping?

    def add(contender: Contender) -> None:
        contenders.append((contender, open_))

    ours_cfg = orr.CircuitBreakerConfig(failure_threshold=5, timeout=long)
    ours_a = orr.CircuitBreaker(f"{tag}.protect", ours_cfg)
    g = ours_a.protect(fn)
    add(_ours("breaker.protect(f)", _chunk(driver, stmt_tpl.format(call="g()"), {"g": g}), primary=True))
    add(_ours_off("breaker.protect(f)", _chunk(driver, stmt_tpl.format(call="g()"), {"g": g})))
    for label, window in (
        ("CountWindow(100)", orr.CountWindow(100)),
        ("TimeWindow(60 s, 10 buckets)", orr.TimeWindow(60.0, 10)),
    ):
        windowed_cfg = orr.CircuitBreakerConfig(sliding_window=window, timeout=long)
        windowed = orr.CircuitBreaker(f"{tag}.{type(window).__name__}", windowed_cfg).protect(fn)
        chunk = _chunk(driver, stmt_tpl.format(call="g()"), {"g": windowed})
        add(_ours(f"breaker.protect(f), {label}", chunk, note="failure rate over a sliding window"))
    ours_b = orr.CircuitBreaker(f"{tag}.call", ours_cfg)
    method = "call" if driver == "async" else "call_sync"
    add(
        _ours(
            f"breaker.{method}(f)",
            _chunk(driver, stmt_tpl.format(call=f"b.{method}(f)"), {"b": ours_b, "f": fn}),
        )
    )
    cb = peers.get("circuitbreaker")
    if cb is not None:
        wrapped = cb.CircuitBreaker(failure_threshold=5, recovery_timeout=long, name=f"{tag}.cb")(fn)
        add(
            Contender(
                peers.label("circuitbreaker"),
                "circuitbreaker",
                _chunk(driver, stmt_tpl.format(call="g()"), {"g": wrapped}),
            )
        )
    pb = peers.get("pybreaker")
    if pb is not None and driver == "sync":
        wrapped = pb.CircuitBreaker(fail_max=5, reset_timeout=long)(fn)
        add(
            Contender(
                peers.label("pybreaker"),
                "pybreaker",
                _chunk(driver, stmt_tpl.format(call="g()"), {"g": wrapped}),
            )
        )
    ab = peers.get("aiobreaker")
    if ab is not None:
        wrapped = ab.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=long))(fn)
        add(
            Contender(
                peers.label("aiobreaker"),
                "aiobreaker",
                _chunk(driver, stmt_tpl.format(call="g()"), {"g": wrapped}),
            )
        )
    pg = peers.get("purgatory")
    if pg is not None:
        factory_cls = pg.AsyncCircuitBreakerFactory if driver == "async" else pg.SyncCircuitBreakerFactory
        factory = factory_cls(default_threshold=5, default_ttl=long)
        wrapped = factory(f"{tag}.purgatory")(fn)
        add(
            Contender(
                peers.label("purgatory"),
                "purgatory",
                _chunk(driver, stmt_tpl.format(call="g()"), {"g": wrapped}),
            )
        )
    pr = peers.get("pyresilience")
    if pr is not None:
        config = pr.CircuitBreakerConfig(failure_threshold=5, recovery_timeout=long)
        wrapped = pr.resilient(circuit_breaker=config)(fn)
        label = f"{peers.label('pyresilience')} (@resilient, breaker only)"
        add(Contender(label, "pyresilience", _chunk(driver, stmt_tpl.format(call="g()"), {"g": wrapped})))
    out: list[Contender] = []
    for contender, needs_trip in contenders:
        if needs_trip:
            contender.prepare = _tripper(driver, flag, contender.chunk)
        out.append(contender)
    title = (
        "Circuit breaker, open (rejected call)" if open_ else "Circuit breaker, closed (call goes through)"
    )
    group = Group(scenario, title, driver, baseline(driver), out)
    if pb is not None and driver == "async":
        group.notes.append(f"pybreaker: {UNAVAILABLE}")
    if open_:
        group.notes.append("each rejected call is caught by `try/except Exception` inside the timed loop")
    return group


# --------------------------------------------------------------------------------------- retry


def _flaky(driver: str) -> Callable[..., Any]:
    """A function that fails twice, then succeeds, then fails twice again …"""
    state = [0]
    if driver == "async":

        async def flaky_async() -> int:
            if state[0] < 2:
                state[0] += 1
                raise BoomError
            state[0] = 0
            return 1

        return flaky_async

    def flaky_sync() -> int:
        if state[0] < 2:
            state[0] += 1
            raise BoomError
        state[0] = 0
        return 1

    return flaky_sync


def retry(driver: str, peers: Peers, *, fail_twice: bool) -> Group:
    """Retry around a call that succeeds, or that fails twice then succeeds with zero delay."""
    aw = _aw(driver)
    fn = _flaky(driver) if fail_twice else _fn(driver)
    scenario = "retry_fail_twice" if fail_twice else "retry_success"
    contenders: list[Contender] = []
    if fail_twice:
        policy = orr.RetryPolicy(
            max_attempts=3,
            strategy=orr.RetryStrategy.FIXED,
            initial_delay=0.0,
            max_delay=0.0,
            jitter=orr.Jitter.NONE,
        )
    else:
        policy = orr.RetryPolicy(max_attempts=3)
    g = orr.retry(policy, name=f"bench.{scenario}.{driver}")(fn)
    contenders.append(_ours("@retry(policy)", _chunk(driver, f"{aw}g()", {"g": g}), primary=True))
    if fail_twice:
        contenders.append(_ours_off("@retry(policy)", _chunk(driver, f"{aw}g()", {"g": g})))
    spec = "retry_async" if driver == "async" else "retry_sync"
    contenders.append(
        _ours(
            f"{spec}(f, policy=...)",
            _chunk(driver, f"{aw}{spec}(f, policy=p)", {spec: getattr(orr, spec), "f": fn, "p": policy}),
            note="SPEC one-shot form: reuses the Retry of the same name and policy object",
        )
    )
    tn = peers.get("tenacity")
    if tn is not None:
        wrapped = tn.retry(stop=tn.stop_after_attempt(3), wait=tn.wait_none(), reraise=True)(fn)
        contenders.append(
            Contender(peers.label("tenacity"), "tenacity", _chunk(driver, f"{aw}g()", {"g": wrapped}))
        )
    st = peers.get("stamina")
    if st is not None:
        st.instrumentation.set_on_retry_hooks([])  # no logging/prometheus hooks: we run without telemetry too
        if fail_twice:
            wrapped = st.retry(
                on=BoomError, attempts=3, timeout=None, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0
            )(fn)
        else:
            wrapped = st.retry(on=Exception, attempts=3)(fn)
        contenders.append(
            Contender(
                peers.label("stamina"),
                "stamina",
                _chunk(driver, f"{aw}g()", {"g": wrapped}),
                note="on-retry hooks off",
            )
        )
    bo = peers.get("backoff")
    if bo is not None:
        if fail_twice:
            wrapped = bo.on_exception(bo.constant, BoomError, max_tries=3, interval=0, jitter=None)(fn)
        else:
            wrapped = bo.on_exception(bo.expo, Exception, max_tries=3)(fn)
        contenders.append(
            Contender(peers.label("backoff"), "backoff", _chunk(driver, f"{aw}g()", {"g": wrapped}))
        )
    pr = peers.get("pyresilience")
    if pr is not None:
        config = (
            pr.RetryConfig(max_attempts=3, delay=0.0, jitter=False)
            if fail_twice
            else pr.RetryConfig(max_attempts=3)
        )
        wrapped = pr.resilient(retry=config)(fn)
        label = f"{peers.label('pyresilience')} (@resilient, retry only)"
        contenders.append(Contender(label, "pyresilience", _chunk(driver, f"{aw}g()", {"g": wrapped})))
    title = (
        "Retry, call fails twice then succeeds (zero delay)" if fail_twice else "Retry, call succeeds at once"
    )
    group = Group(scenario, title, driver, baseline(driver), contenders)
    if fail_twice:
        group.notes.append(
            "one row = one logical call = 3 invocations of a function that raises twice; the baseline is "
            "still one bare call, so the shared cost of raising twice is inside every overhead"
        )
        group.notes.append(
            "a zero delay: the peers still sleep(0) per retry (asyncio.sleep(0) / time.sleep(0)); "
            "otel_resilience retries at once, without sleeping"
        )
    return group


# ------------------------------------------------------------------------------------ bulkhead


def bulkhead(driver: str, peers: Peers) -> Group:
    """A bulkhead with free slots: acquire and release around one call."""
    aw = _aw(driver)
    fn = _fn(driver)
    tag = f"bench.bulkhead.{driver}"
    contenders: list[Contender] = []
    bh = orr.Bulkhead(f"{tag}.protect", orr.BulkheadConfig(max_concurrent=10))
    contenders.append(
        _ours("bulkhead.protect(f)", _chunk(driver, f"{aw}g()", {"g": bh.protect(fn)}), primary=True)
    )
    bh2 = orr.Bulkhead(f"{tag}.execute", orr.BulkheadConfig(max_concurrent=10))
    method = "execute" if driver == "async" else "execute_sync"
    contenders.append(
        _ours(f"bulkhead.{method}(f)", _chunk(driver, f"{aw}b.{method}(f)", {"b": bh2, "f": fn}))
    )
    if driver == "async":
        sem: Any = asyncio.Semaphore(10)
        stmt = "async with sem:\n    await f()"
        contenders.append(
            Contender("asyncio.Semaphore (stdlib)", "stdlib", _chunk(driver, stmt, {"sem": sem, "f": fn}))
        )
    else:
        sem = threading.BoundedSemaphore(10)
        stmt = "with sem:\n    f()"
        contenders.append(
            Contender(
                "threading.BoundedSemaphore (stdlib)", "stdlib", _chunk(driver, stmt, {"sem": sem, "f": fn})
            )
        )
    pr = peers.get("pyresilience")
    if pr is not None:
        wrapped = pr.resilient(bulkhead=pr.BulkheadConfig(max_concurrent=10))(fn)
        label = f"{peers.label('pyresilience')} (@resilient, bulkhead only)"
        contenders.append(Contender(label, "pyresilience", _chunk(driver, f"{aw}g()", {"g": wrapped})))
    return Group("bulkhead", "Bulkhead, uncontended (free slots)", driver, baseline(driver), contenders)


def _hold_async(pr_wrapped: Any) -> Callable[[], Any]:
    """A ``prepare`` hook that takes pyresilience's one async slot in the group's loop, for good."""

    async def hold() -> None:
        await pr_wrapped._executor._bulkhead.acquire()

    return hold


def bulkhead_full(driver: str, peers: Peers) -> Group:
    """A full bulkhead (its one slot held, no queue): every call is rejected at once."""
    aw = _aw(driver)
    fn = _fn(driver)
    tag = f"bench.bulkhead_full.{driver}"
    stmt_tpl = f"try:\n    {aw}{{call}}\nexcept Exception:\n    pass"
    full_cfg = orr.BulkheadConfig(max_concurrent=1, max_waiting=0)
    contenders: list[Contender] = []
    bh = orr.Bulkhead(f"{tag}.protect", full_cfg)
    bh.slot().__enter__()  # the one slot, held for good: every call below is rejected
    g = bh.protect(fn)
    contenders.append(
        _ours("bulkhead.protect(f)", _chunk(driver, stmt_tpl.format(call="g()"), {"g": g}), primary=True)
    )
    contenders.append(_ours_off("bulkhead.protect(f)", _chunk(driver, stmt_tpl.format(call="g()"), {"g": g})))
    bh2 = orr.Bulkhead(f"{tag}.execute", full_cfg)
    bh2.slot().__enter__()
    method = "execute" if driver == "async" else "execute_sync"
    chunk = _chunk(driver, stmt_tpl.format(call=f"b.{method}(f)"), {"b": bh2, "f": fn})
    contenders.append(_ours(f"bulkhead.{method}(f)", chunk))
    pr = peers.get("pyresilience")
    if pr is not None:
        wrapped = pr.resilient(bulkhead=pr.BulkheadConfig(max_concurrent=1, max_wait=0.0))(fn)
        label = f"{peers.label('pyresilience')} (@resilient, bulkhead only, max_wait=0)"
        chunk = _chunk(driver, stmt_tpl.format(call="g()"), {"g": wrapped})
        contender = Contender(label, "pyresilience", chunk)
        if driver == "async":  # its async slots live in the running loop's semaphore
            contender.prepare = _hold_async(wrapped)
        else:
            wrapped._executor._bulkhead.acquire()
        contenders.append(contender)
    group = Group(
        "bulkhead_full",
        "Bulkhead, full (one slot, held; no queue): rejected call",
        driver,
        baseline(driver),
        contenders,
    )
    group.notes.append("each rejected call is caught by `try/except Exception` inside the timed loop")
    return group


ADMISSION_LABEL: Final = "limiter.try_acquire(), then f()"
"""The rate limiter's admission row: the one the <= 1 µs target reads."""


def rate_limiter(driver: str, peers: Peers) -> Group:
    """A rate limiter with permits to spare: one admission around one call (token bucket)."""
    aw = _aw(driver)
    fn = _fn(driver)
    tag = f"bench.rate_limiter.{driver}"
    plenty = orr.RateLimiterConfig(rate=1e7, burst=10_000_000)
    contenders: list[Contender] = []
    limiter = orr.RateLimiter(f"{tag}.protect", plenty)
    contenders.append(
        _ours("limiter.protect(f)", _chunk(driver, f"{aw}g()", {"g": limiter.protect(fn)}), primary=True)
    )
    limiter_t = orr.RateLimiter(f"{tag}.try_acquire", plenty)
    contenders.append(
        _ours(
            ADMISSION_LABEL,
            _chunk(driver, f"if t():\n    {aw}f()", {"t": limiter_t.try_acquire, "f": fn}),
            note="the permit alone (what aiolimiter's `async with` and limits' `hit` do): no pipeline",
        )
    )
    method = "call" if driver == "async" else "call_sync"
    limiter_b = orr.RateLimiter(f"{tag}.call", plenty)
    contenders.append(
        _ours(f"limiter.{method}(f)", _chunk(driver, f"{aw}b.{method}(f)", {"b": limiter_b, "f": fn}))
    )
    al = peers.get("aiolimiter")
    if al is not None and driver == "async":
        lim = al.AsyncLimiter(1e7, 1.0)
        stmt = "async with lim:\n    await f()"
        contenders.append(
            Contender(peers.label("aiolimiter"), "aiolimiter", _chunk(driver, stmt, {"lim": lim, "f": fn}))
        )
    lm = peers.get("limits")
    if lm is not None:
        item = lm.RateLimitItemPerSecond(10_000_000)
        if driver == "async":
            import limits.aio  # noqa: PLC0415 - only with the peer installed

            hit = limits.aio.strategies.SlidingWindowCounterRateLimiter(
                limits.aio.storage.MemoryStorage()
            ).hit
            stmt = "if await hit(item):\n    await f()"
        else:
            hit = lm.strategies.SlidingWindowCounterRateLimiter(lm.storage.MemoryStorage()).hit
            stmt = "if hit(item):\n    f()"
        label = f"{peers.label('limits')} (sliding window counter, memory storage)"
        contenders.append(
            Contender(label, "limits", _chunk(driver, stmt, {"hit": hit, "item": item, "f": fn}))
        )
    return Group("rate_limiter", "Rate limiter, permits to spare", driver, baseline(driver), contenders)


ASYNC_WORKERS = 32
ASYNC_SLOTS = 4
SYNC_WORKERS = 4
SYNC_SLOTS = 2
SYNC_WORK = 40


def _contended_async(call: Callable[[], Any]) -> Any:
    """A chunk: ``ASYNC_WORKERS`` tasks share ``n`` calls of ``call()`` (each yields once)."""

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    async def chunk(n: int) -> None:
        per = max(1, n // ASYNC_WORKERS)
        await asyncio.gather(*(worker(per) for _ in range(ASYNC_WORKERS)))

    return chunk


def _contended_sync(call: Callable[[], Any]) -> Any:
    """A chunk: ``SYNC_WORKERS`` threads share ``n`` calls of ``call()`` (each releases the GIL)."""

    def worker(count: int) -> None:
        for _ in range(count):
            call()

    def chunk(n: int) -> None:
        per = max(1, n // SYNC_WORKERS)
        threads = [threading.Thread(target=worker, args=(per,)) for _ in range(SYNC_WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return chunk


def bulkhead_contended(driver: str, peers: Peers) -> Group:
    """More callers than slots: callers queue, and slots are handed over on release."""
    tag = f"bench.bulkhead_contended.{driver}"
    contenders: list[Contender] = []
    if driver == "async":

        async def work() -> None:
            await asyncio.sleep(0)

        bh = orr.Bulkhead(tag, orr.BulkheadConfig(max_concurrent=ASYNC_SLOTS, max_waiting=10_000))
        contenders.append(_ours("bulkhead.protect(f)", _contended_async(bh.protect(work)), primary=True))
        sem = asyncio.Semaphore(ASYNC_SLOTS)

        async def with_sem() -> None:
            async with sem:
                await work()

        contenders.append(Contender("asyncio.Semaphore (stdlib)", "stdlib", _contended_async(with_sem)))
        pr = peers.get("pyresilience")
        if pr is not None:
            wrapped = pr.resilient(bulkhead=pr.BulkheadConfig(max_concurrent=ASYNC_SLOTS, max_wait=60.0))(
                work
            )
            label = f"{peers.label('pyresilience')} (@resilient, bulkhead only)"
            contenders.append(Contender(label, "pyresilience", _contended_async(wrapped)))
        base = _contended_async(work)
        title = (
            f"Bulkhead, contended ({ASYNC_WORKERS} tasks / {ASYNC_SLOTS} slots, each call yields once; "
            f"{SYNC_WORKERS} threads / {SYNC_SLOTS} slots, each call ~1 µs of Python)"
        )
    else:

        def work_sync() -> None:
            for _ in range(SYNC_WORK):  # holds the GIL for ~1 µs: threads switch every 5 ms
                pass

        bh = orr.Bulkhead(tag, orr.BulkheadConfig(max_concurrent=SYNC_SLOTS, max_waiting=10_000))
        contenders.append(_ours("bulkhead.protect(f)", _contended_sync(bh.protect(work_sync)), primary=True))
        tsem = threading.BoundedSemaphore(SYNC_SLOTS)

        def with_tsem() -> None:
            with tsem:
                work_sync()

        contenders.append(
            Contender("threading.BoundedSemaphore (stdlib)", "stdlib", _contended_sync(with_tsem))
        )
        pr = peers.get("pyresilience")
        if pr is not None:
            wrapped = pr.resilient(bulkhead=pr.BulkheadConfig(max_concurrent=SYNC_SLOTS, max_wait=60.0))(
                work_sync
            )
            label = f"{peers.label('pyresilience')} (@resilient, bulkhead only)"
            contenders.append(Contender(label, "pyresilience", _contended_sync(wrapped)))
        base = _contended_sync(work_sync)
        title = (
            f"Bulkhead, contended ({ASYNC_WORKERS} tasks / {ASYNC_SLOTS} slots, each call yields once; "
            f"{SYNC_WORKERS} threads / {SYNC_SLOTS} slots, each call ~1 µs of Python)"
        )
    group = Group(
        "bulkhead_contended", title, driver, base, contenders, baseline_label="same workers, no bulkhead"
    )
    group.notes.append(
        "the baseline runs the same workers with no bulkhead, so the overhead is queueing + hand-over"
    )
    return group


# ------------------------------------------------------------------------------------- timeout


def timeout(driver: str, peers: Peers) -> Group:
    """A 30 s deadline around a call that returns at once."""
    aw = _aw(driver)
    fn = _fn(driver)
    contenders: list[Contender] = []
    th = orr.TimeoutHandler(30.0, name=f"bench.timeout.{driver}")
    contenders.append(
        _ours("TimeoutHandler.protect(f)", _chunk(driver, f"{aw}g()", {"g": th.protect(fn)}), primary=True)
    )
    method = "with_timeout" if driver == "async" else "with_timeout_sync"
    contenders.append(_ours(f"handler.{method}(f)", _chunk(driver, f"{aw}h.{method}(f)", {"h": th, "f": fn})))
    if driver == "async":
        if hasattr(asyncio, "timeout"):
            stmt = "async with timeout(30.0):\n    await f()"
            contenders.append(
                Contender(
                    "asyncio.timeout (stdlib)",
                    "stdlib",
                    _chunk(driver, stmt, {"timeout": asyncio.timeout, "f": fn}),
                )
            )
        contenders.append(
            Contender(
                "asyncio.wait_for (stdlib)",
                "stdlib",
                _chunk(driver, "await wait_for(f(), 30.0)", {"wait_for": asyncio.wait_for, "f": fn}),
            )
        )
    pr = peers.get("pyresilience")
    if pr is not None:
        wrapped = pr.resilient(timeout=pr.TimeoutConfig(seconds=30.0))(fn)
        label = f"{peers.label('pyresilience')} (@resilient, timeout only)"
        note = "sync timeout runs the call in a thread pool" if driver == "sync" else ""
        contenders.append(
            Contender(label, "pyresilience", _chunk(driver, f"{aw}g()", {"g": wrapped}), note=note)
        )
    group = Group(
        "timeout", "Timeout (30 s) around a call that returns at once", driver, baseline(driver), contenders
    )
    if driver == "sync":
        group.notes.append(
            "our sync timeout publishes the deadline and checks it on return (a thread cannot be pre-empted)"
        )
    return group


# -------------------------------------------------------------------------------- full pipeline


def our_full_config(name: str) -> orr.ResilienceConfig:
    """Breaker + retry + total timeout + bulkhead + fallback, as SPEC section 1.7 writes it."""
    return orr.ResilienceConfig(
        circuit_breaker=orr.CircuitBreakerConfig(failure_threshold=5, timeout=60.0),
        retry_policy=orr.RetryPolicy(max_attempts=3, strategy=orr.RetryStrategy.EXPONENTIAL),
        fallback_config=orr.FallbackConfig(
            strategy=orr.FallbackStrategy.DEFAULT_VALUE, default_value={"status": "error"}
        ),
        timeout=30.0,
        bulkhead_config=orr.BulkheadConfig(max_concurrent=10),
        name=name,
    )


def _pyresilience_all_in_one(pr: Any, fn: Callable[..., Any]) -> Any:
    return pr.resilient(
        retry=pr.RetryConfig(max_attempts=3),
        timeout=pr.TimeoutConfig(seconds=30.0, per_attempt=False),
        circuit_breaker=pr.CircuitBreakerConfig(failure_threshold=5, recovery_timeout=60.0),
        fallback=pr.FallbackConfig(handler={"status": "error"}),
        bulkhead=pr.BulkheadConfig(max_concurrent=10),
    )(fn)


def _listener_hooks(listener: Any, parent: Any = None) -> tuple[Callable[[], None], Callable[[], None]]:
    """``before``/``after`` hooks that put ``listener`` (or, for ``None``, nothing) in place of the
    registered ones, as ``instrument()`` does (and make ``parent`` the current span)."""
    from opentelemetry import context as otel_context  # noqa: PLC0415 - optional dependency
    from opentelemetry import trace  # noqa: PLC0415

    tokens: list[Any] = []
    off_before, off_after = telemetry_off_hooks()

    def before() -> None:
        off_before()
        if listener is not None:
            HUB.add_listener(listener)
        if parent is not None:
            tokens.append(otel_context.attach(trace.set_span_in_context(parent)))

    def after() -> None:
        if listener is not None:
            HUB.remove_listener(listener)
        off_after()
        if tokens:
            otel_context.detach(tokens.pop())

    return before, after


def full_pipeline(driver: str, peers: Peers) -> Group:
    """The five patterns together on a call that succeeds, with no telemetry SDK."""
    aw = _aw(driver)
    fn = _fn(driver)
    contenders: list[Contender] = []
    manager = orr.ResilienceManager()
    config = our_full_config(f"bench.full.{driver}")
    g = orr.resilient(config, manager=manager)(fn)
    contenders.append(_ours("@resilient(config)", _chunk(driver, f"{aw}g()", {"g": g}), primary=True))
    method = "execute_with_resilience" if driver == "async" else "execute_with_resilience_sync"
    contenders.append(
        _ours(
            f"manager.{method}(f, config)",
            _chunk(driver, f"{aw}m.{method}(f, c)", {"m": manager, "f": fn, "c": config}),
        )
    )
    contenders.append(_ours_off("@resilient(config)", _chunk(driver, f"{aw}g()", {"g": g})))
    hand = floor(fn, FloorPolicy(), is_async=driver == "async")
    contenders.append(
        Contender(
            "hand-written floor (five nested minimal decorators, no telemetry)",
            "floor",
            _chunk(driver, f"{aw}g()", {"g": hand}),
            note="benchmarks/_floor.py; tests/test_benchmarks_floor.py checks it computes what ours does",
        )
    )
    pr = peers.get("pyresilience")
    if pr is not None:
        wrapped = _pyresilience_all_in_one(pr, fn)
        label = f"{peers.label('pyresilience')} (@resilient all-in-one)"
        note = "sync timeout runs the call in a thread pool" if driver == "sync" else ""
        contenders.append(
            Contender(label, "pyresilience", _chunk(driver, f"{aw}g()", {"g": wrapped}), note=note)
        )
    tn = peers.get("tenacity")
    if tn is not None:
        wrapped = tn.retry(stop=tn.stop_after_attempt(3), wait=tn.wait_none(), reraise=True)(fn)
        label = f"{peers.label('tenacity')} (retry alone)"
        contenders.append(Contender(label, "tenacity", _chunk(driver, f"{aw}g()", {"g": wrapped})))
    title = "Full pipeline (fallback > timeout > retry > breaker > bulkhead), call succeeds, no SDK"
    return Group("full", title, driver, baseline(driver), contenders)


def full_layers(driver: str, peers: Peers) -> Group:
    """Where the full pipeline's cost goes: the same decorator with one layer at a time."""
    del peers
    aw = _aw(driver)
    fn = _fn(driver)
    full = our_full_config(f"bench.layers.{driver}")
    parts = {
        "circuit_breaker": full.circuit_breaker,
        "retry_policy": full.retry_policy,
        "fallback_config": full.fallback_config,
        "timeout": full.timeout,
        "bulkhead_config": full.bulkhead_config,
    }
    contenders: list[Contender] = []

    def add(label: str, chosen: dict[str, Any], *, primary: bool = False) -> None:
        config = orr.ResilienceConfig(name=f"bench.layers.{driver}.{len(contenders)}", **chosen)
        g = orr.resilient(config, manager=orr.ResilienceManager())(fn)
        contenders.append(_ours(label, _chunk(driver, f"{aw}g()", {"g": g}), primary=primary))

    add("all five layers", parts, primary=True)
    add("no layer (ResilienceConfig())", {})
    for key, value in parts.items():
        add(f"{key} only", {key: value})
    add("all but timeout", {k: v for k, v in parts.items() if k != "timeout"})
    title = "Full pipeline, one layer at a time (where the cost goes)"
    group = Group("full_layers", title, driver, baseline(driver), contenders)
    group.notes.append("'ours / this' here is the full pipeline's overhead over that row's")
    return group


def full_pipeline_sdk(driver: str, peers: Peers) -> Group | None:
    """The full pipeline with the OpenTelemetry SDK: metrics only, then metrics + traces."""
    try:
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: PLC0415

        from otel_resilience.telemetry import OtelListener  # noqa: PLC0415
    except ImportError:
        return None
    del trace
    aw = _aw(driver)
    fn = _fn(driver)
    manager = orr.ResilienceManager()
    config = our_full_config(f"bench.full_sdk.{driver}")
    g = orr.resilient(config, manager=manager)(fn)
    contenders: list[Contender] = []
    metrics_listener = OtelListener(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    before, after = _listener_hooks(metrics_listener)
    contenders.append(
        _ours(
            "@resilient + SDK metrics",
            _chunk(driver, f"{aw}g()", {"g": g}),
            primary=True,
            before=before,
            after=after,
        )
    )
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = tracer_provider.get_tracer("bench").start_span(
        "parent"
    )  # sampled (default ParentBased(ALWAYS_ON))
    tracing_listener = OtelListener(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )
    t_before, t_after = _listener_hooks(tracing_listener, parent)

    def after_tracing() -> None:
        t_after()
        exporter.clear()

    contenders.append(
        _ours(
            "@resilient + SDK metrics + traces (sampled parent)",
            _chunk(driver, f"{aw}g()", {"g": g}),
            before=t_before,
            after=after_tracing,
            note="one span per execution, SimpleSpanProcessor + InMemorySpanExporter",
        )
    )
    contenders.append(_hand_traced(driver, fn, tracer_provider, parent, exporter))
    pr = peers.get("pyresilience")
    if pr is not None:
        wrapped = _pyresilience_all_in_one(pr, fn)
        label = f"{peers.label('pyresilience')} (@resilient all-in-one, no telemetry)"
        contenders.append(Contender(label, "pyresilience", _chunk(driver, f"{aw}g()", {"g": wrapped})))
    title = "Full pipeline, call succeeds, OpenTelemetry SDK installed"
    return Group("full_sdk", title, driver, baseline(driver), contenders)


def _hand_traced(
    driver: str, fn: Callable[..., Any], tracer_provider: Any, parent: Any, exporter: Any
) -> Contender:
    """The floor in a hand-written span + duration histogram, on the same SDK, parent and exporter."""
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - optional dependency
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    meter = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("bench.hand")
    histogram = meter.create_histogram("bench.hand.duration", unit="s")
    hand = floor(fn, FloorPolicy(), is_async=driver == "async")
    name = f"bench.full_sdk.{driver}"
    g = traced(
        hand, tracer_provider.get_tracer("bench.hand"), histogram, name=name, is_async=driver == "async"
    )
    # Our listeners off (the hand-written row records its own telemetry), the parent current.
    before, after = _listener_hooks(None, parent)

    def after_tracing() -> None:
        after()
        exporter.clear()

    return Contender(
        "hand-written floor + span + duration histogram (sampled parent)",
        "floor",
        _chunk(driver, f"{_aw(driver)}g()", {"g": g}),
        before=before,
        after=after_tracing,
        note="benchmarks/_floor.py traced(): start_as_current_span + histogram.record around the floor",
    )


# ------------------------------------------------------------------------------------- catalog


def build_groups(peers: Peers, only: set[str] | None = None) -> list[Group]:
    """Every group, async then sync for each scenario (``only`` filters by scenario id)."""
    builders: list[tuple[str, Callable[[str, Peers], Group | None]]] = [
        ("bare", bare),
        ("breaker_closed", lambda d, p: breaker(d, p, open_=False)),
        ("breaker_open", lambda d, p: breaker(d, p, open_=True)),
        ("retry_success", lambda d, p: retry(d, p, fail_twice=False)),
        ("retry_fail_twice", lambda d, p: retry(d, p, fail_twice=True)),
        ("bulkhead", bulkhead),
        ("bulkhead_full", bulkhead_full),
        ("rate_limiter", rate_limiter),
        ("bulkhead_contended", bulkhead_contended),
        ("timeout", timeout),
        ("full", full_pipeline),
        ("full_layers", full_layers),
        ("full_sdk", full_pipeline_sdk),
    ]
    groups: list[Group] = []
    for scenario, build in builders:
        if only is not None and scenario not in only:
            continue
        for driver in ("async", "sync"):
            group = build(driver, peers)
            if group is not None:
                groups.append(group)
    return groups


SCENARIOS = (
    "bare",
    "breaker_closed",
    "breaker_open",
    "retry_success",
    "retry_fail_twice",
    "bulkhead",
    "bulkhead_full",
    "rate_limiter",
    "bulkhead_contended",
    "timeout",
    "full",
    "full_layers",
    "full_sdk",
)
