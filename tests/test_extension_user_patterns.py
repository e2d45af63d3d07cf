"""Two patterns written from scratch the documented way (a cache and a single-flight), run alone and in policies."""

from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import pytest

from otel_resilience import ExtraStrategy, ResilienceConfig, ResilienceManager
from otel_resilience.engine import Answer, EventKind, ExecutionContext, StrategyTelemetry, Wait
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.facade import Link, Pattern, verb
from otel_resilience.engine.validation import check_duration
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder

_names = itertools.count()

# -- (a) a cache ---------------------------------------------------------------------------------

CACHE: Final = "user_cache"


class CacheEvent(EventKind):
    """What the cache reports."""

    HIT = "user_cache_hit"
    MISS = "user_cache_miss"


@dataclass(slots=True)
class CacheLookup:
    """A lookup of ``key``."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("key",)

    key: str


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """How long an entry is fresh (``ttl`` seconds, default 60)."""

    ttl: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl", check_duration("CacheConfig", "ttl", self.ttl))


class _Entries:
    __slots__ = ("entries", "hits", "lock", "misses")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[Any, tuple[float, Any]] = {}
        self.hits = self.misses = 0


class _Hit(Wait):
    """The cached value: the driver returns it without running the rest of the chain."""

    __slots__ = ("answer",)

    def __init__(self, value: Any) -> None:
        self.answer = Answer(value)

    async def wait(self) -> Any:
        return self.answer

    def wait_sync(self) -> Any:
        return self.answer


class CacheStep(Link[CacheConfig]):
    """Answers a fresh entry for the call's arguments, else runs the call and keeps what it returned."""

    __slots__ = ("_state",)

    kind: ClassVar[str] = CACHE

    def __init__(
        self, name: str, config: CacheConfig, clock: Clock, telemetry: StrategyTelemetry, state: _Entries
    ) -> None:
        super().__init__(name, config, clock, telemetry)
        self._state = state

    def admit(self, ctx: ExecutionContext) -> Any:
        key = (ctx.args, tuple(sorted(ctx.kwargs.items())))
        state = self._state
        now = self.clock.now()
        with state.lock:
            entry = state.entries.get(key)
            hit = entry is not None and entry[0] > now
            if hit:
                state.hits += 1
            else:
                state.misses += 1
        if self._telemetry.enabled:
            self._telemetry.report(CacheEvent.HIT if hit else CacheEvent.MISS, CacheLookup(repr(key)))
        if hit:
            assert entry is not None
            return _Hit(entry[1])
        return key

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        with self._state.lock:
            self._state.entries[token] = (self.clock.now() + self.config.ttl, result)

    def get_stats(self) -> dict[str, Any]:
        return _cache_stats(self.name, self._state)


def _cache_stats(name: str, state: _Entries) -> dict[str, Any]:
    with state.lock:
        return {"name": name, "hits": state.hits, "misses": state.misses, "size": len(state.entries)}


class Cache(Pattern[CacheConfig, CacheStep], kind=CACHE):
    """A cache of results keyed by the call's arguments."""

    __slots__ = ("_state",)

    def __init__(self, name: str, config: CacheConfig | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(name, config, clock, default=CacheConfig())
        self._state = _Entries()

    call = verb(Pattern.run, "Await ``fn`` unless cached.", returns="The result.", raises=())
    call_sync = verb(Pattern.run_sync, "Call ``fn`` unless cached.", returns="The result.", raises=())

    def _link(self, telemetry: StrategyTelemetry) -> CacheStep:
        return CacheStep(self.name, self.config, self.clock, telemetry, self._state)

    def get_stats(self) -> dict[str, Any]:
        return _cache_stats(self.name, self._state)


# -- (b) single flight ---------------------------------------------------------------------------

SINGLE_FLIGHT: Final = "user_single_flight"


class FlightEvent(EventKind):
    """What the single-flight reports."""

    JOINED = "user_flight_joined"


@dataclass(slots=True)
class FlightJoined:
    """A call joined the flight of ``key``."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("key",)

    key: str


class _Flight:
    """One call in flight, for the calls that join it (sync: an event; async: a future)."""

    __slots__ = ("done", "error", "future", "result")

    def __init__(self, sync: bool) -> None:
        self.done = threading.Event() if sync else None
        self.future: asyncio.Future[Any] | None = None if sync else asyncio.get_running_loop().create_future()
        self.result: Any = None
        self.error: BaseException | None = None


class _Join(Wait):
    """Wait for the leader's outcome; its result is the answer, its error is raised."""

    __slots__ = ("flight",)

    def __init__(self, flight: _Flight) -> None:
        self.flight = flight

    async def wait(self) -> Any:
        assert self.flight.future is not None
        outcome = await asyncio.shield(self.flight.future)
        return self._outcome(outcome)

    def wait_sync(self) -> Any:
        assert self.flight.done is not None
        self.flight.done.wait()
        return self._outcome(None)

    def _outcome(self, _: Any) -> Any:
        flight = self.flight
        if flight.error is None:
            return Answer(flight.result)
        if not isinstance(flight.error, Exception):  # the leader was cancelled: run this call itself
            return None
        raise flight.error


class SingleFlightStep(Link[None]):
    """Coalesces concurrent calls with equal arguments into one run; the others get its outcome."""

    __slots__ = ("_flights", "_lock", "joined")

    kind: ClassVar[str] = SINGLE_FLIGHT

    def __init__(self, name: str, clock: Clock, telemetry: StrategyTelemetry) -> None:
        super().__init__(name, None, clock, telemetry)
        self._lock = threading.Lock()
        self._flights: dict[Any, _Flight] = {}
        self.joined = 0

    def admit(self, ctx: ExecutionContext) -> Any:
        key = (ctx.sync, ctx.args)
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                self._flights[key] = _Flight(ctx.sync)
                return key
            self.joined += 1
        if self._telemetry.enabled:
            self._telemetry.report(FlightEvent.JOINED, FlightJoined(repr(ctx.args)))
        return _Join(flight)

    def _land(self, token: Any, result: Any, error: BaseException | None) -> None:
        if token is None:  # ran on its own after its leader was cancelled
            return
        with self._lock:
            flight = self._flights.pop(token)
        flight.result, flight.error = result, error
        if flight.done is not None:
            flight.done.set()
        elif flight.future is not None:
            flight.future.set_result(None)

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self._land(token, result, None)

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        self._land(token, None, error)

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self._land(token, None, asyncio.CancelledError())

    def get_stats(self) -> dict[str, Any]:
        with self._lock:
            return {"name": self.name, "in_flight": len(self._flights), "joined": self.joined}


# -- the tests -----------------------------------------------------------------------------------


def _policy(name: str, factory: Any, **config: Any) -> ResilienceConfig:
    return ResilienceConfig(name=name, extra_strategies=(ExtraStrategy(factory, outside="retry"),), **config)


def _flights(policy: str) -> SingleFlightStep:
    return SingleFlightStep("coalesce", SYSTEM_CLOCK, StrategyTelemetry.of(SINGLE_FLIGHT, "coalesce", policy))


async def _run(manager: ResilienceManager, config: ResilienceConfig, driver: str, fn: Any, *args: Any) -> Any:
    if driver == "sync":
        return manager.execute_with_resilience_sync(fn, config, *args)

    async def call(*args: Any) -> Any:
        return fn(*args)

    return await manager.execute_with_resilience(call, config, *args)


async def test_a_cache_in_a_policy_answers_a_fresh_entry_without_running_the_call(
    otel, manager, clock, driver
):
    """A cached answer skips the call; it expires after ttl; events, spans, counts and stats show each call."""
    name = f"cached-{next(_names)}"
    cache = Cache(name, CacheConfig(ttl=10.0), clock=clock)
    config = _policy(name, cache.as_strategy)
    calls: list[int] = []

    def price(item: int) -> int:
        calls.append(item)
        return item * 2

    with EventRecorder() as recorder:
        assert [await _run(manager, config, driver, price, 7) for _ in range(2)] == [14, 14]
        clock.advance(10.0)
        assert await _run(manager, config, driver, price, 7) == 14
    assert calls == [7, 7]
    assert [(s.name, s.pipeline) for s in recorder.sources(CacheEvent.HIT)] == [(name, name)]
    assert len(recorder.of(CacheEvent.MISS)) == 2
    assert [s.attributes[sc.OUTCOME] for s in otel.spans(name)] == ["success"] * 3
    assert [e.name for s in otel.spans(name) for e in s.events] == []  # its own kinds: no row, not shown
    assert (
        otel.point(
            sc.EXECUTIONS,
            resilience__policy=name,
            resilience__pattern="pipeline",
            resilience__outcome="success",
        ).value
        == 3
    )
    assert manager.get_resilience_statistics()["extra_strategies"][name] == [
        {"kind": CACHE, "name": name, "rank": 399, "stats": {"name": name, "hits": 1, "misses": 2, "size": 1}}
    ]


async def test_a_cache_alone_serves_both_drivers_through_its_verbs(clock):
    """Used alone, the cache's call and call_sync run the same link and share its entries."""
    cache = Cache(f"alone-{next(_names)}", clock=clock)

    async def double(x: int) -> int:
        return x * 2

    assert await cache.call(double, 2) == 4
    assert cache.call_sync(lambda x: x * 3, 2) == 4  # the same arguments: answered from the cache
    assert cache.get_stats()["hits"] == 1


async def test_single_flight_runs_concurrent_equal_async_calls_once(otel, recorder):
    """Three concurrent calls with equal arguments run the function once; all get its result."""
    name = f"coalesced-{next(_names)}"
    manager = ResilienceManager()
    config = _policy(name, _flights)
    gate, calls = asyncio.Event(), []

    async def fetch(x: int) -> int:
        calls.append(x)
        await gate.wait()
        return x * 3

    tasks = [asyncio.create_task(manager.execute_with_resilience(fetch, config, 8)) for _ in range(3)]
    while len(recorder.of(FlightEvent.JOINED)) < 2:
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [24, 24, 24]
    assert calls == [8]
    assert [s.attributes[sc.OUTCOME] for s in otel.spans(name)] == ["success"] * 3
    [entry] = manager.get_resilience_statistics()["extra_strategies"][name]
    assert entry["stats"] == {"name": "coalesce", "in_flight": 0, "joined": 2}


def test_single_flight_runs_concurrent_equal_threads_once(recorder):
    """Three threads with equal arguments run the function once, in the first thread; all get its result."""
    manager = ResilienceManager()
    config = _policy(f"coalesced-sync-{next(_names)}", _flights)
    entered, release, calls, results = threading.Event(), threading.Event(), [], []

    def fetch(x: int) -> int:
        calls.append(x)
        entered.set()
        assert release.wait(30)
        return x * 2

    def run() -> None:
        results.append(manager.execute_with_resilience_sync(fetch, config, 4))

    threads = [threading.Thread(target=run) for _ in range(3)]
    threads[0].start()
    assert entered.wait(30)
    for thread in threads[1:]:
        thread.start()
    for _ in range(30_000):  # the followers joined the flight (no timing assumption: a bound)
        if len(recorder.of(FlightEvent.JOINED)) == 2:
            break
        threading.Event().wait(0.001)
    release.set()
    for thread in threads:
        thread.join(30)
    assert (results, calls) == ([8, 8, 8], [4])


async def test_single_flight_shares_the_leader_s_failure_and_a_cancelled_leader_s_followers_run(otel):
    """Followers get the leader's error; when the leader is cancelled, they run the call themselves."""
    name = f"coalesced-failing-{next(_names)}"
    manager = ResilienceManager()
    config = _policy(name, _flights)
    gate, calls = asyncio.Event(), []

    async def down(x: int) -> int:
        calls.append(x)
        await gate.wait()
        raise ConnectionError("down")

    tasks = [asyncio.create_task(manager.execute_with_resilience(down, config, 1)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    assert [type(e) for e in await asyncio.gather(*tasks, return_exceptions=True)] == [ConnectionError] * 3
    assert calls == [1]
    assert [s.attributes[sc.ERROR_TYPE] for s in otel.spans(name)] == ["ConnectionError"] * 3

    gate.clear()
    calls.clear()

    async def slow(x: int) -> int:
        calls.append(x)
        await gate.wait()
        return x

    leader = asyncio.create_task(manager.execute_with_resilience(slow, config, 2))
    await asyncio.sleep(0)
    followers = [asyncio.create_task(manager.execute_with_resilience(slow, config, 2)) for _ in range(2)]
    await asyncio.sleep(0)
    leader.cancel()
    while len(calls) < 3:
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*followers) == [2, 2]
    assert leader.cancelled()


@pytest.mark.parametrize("given", ["instance", "class"])
def test_a_pattern_given_as_an_extra_strategy_is_refused_naming_its_as_strategy(given):
    """A pattern (or its class) in place of its link is refused when the place is made, pointing at as_strategy."""
    link = Cache(f"refused-{next(_names)}") if given == "instance" else Cache
    with pytest.raises(TypeError, match=r"^ExtraStrategy\.link must be .*give its as_strategy"):
        ExtraStrategy(link, outside="retry")


def test_an_extra_strategy_s_factory_makes_a_link_for_each_key_of_a_named_policy(manager):
    """A named policy's unkeyed calls and each of its keys get a link of their own from the factory."""
    made: list[str] = []

    def factory(policy: str) -> SingleFlightStep:
        made.append(policy)
        return _flights(policy)

    name = f"keyed-{next(_names)}"
    handle = manager.policy(
        name, ResilienceConfig(extra_strategies=(ExtraStrategy(factory, outside="retry"),))
    )
    for key in ("a", "b", "a"):
        assert handle.for_key(key).execute_sync(lambda: "ok") == "ok"
    assert handle.execute_sync(lambda: "ok") == "ok"
    assert made == [name] * 3
    links = manager.get_resilience_statistics()["extra_strategies"][name]
    assert sorted(str(link["key"]) for link in links) == ["None", "a", "b"]
