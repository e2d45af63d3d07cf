"""With ``cache_by_arguments=True`` the CACHED_VALUE fallback answers a failed call only with a
value returned for the same arguments (by default: the last good value, whatever the arguments).

Keys per argument tuple, plain arguments only, the optional ``cache_max_age`` (on a fake clock),
the bounded memory of a handler's keys, stalled async writes of several keys, the manager's path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import threading
import weakref
from datetime import timedelta

import pytest
from support import run_threads

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.fallback import (
    MISSING,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
)
from otel_resilience.patterns.fallback._cache import CACHE_ENTRIES
from otel_resilience.testing import FakeClock

CACHED = FallbackStrategy.CACHED_VALUE


class MemoryCache:
    """A sync in-memory cache service."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def get(self, key: str) -> object:
        return self.data.get(key, MISSING)

    def set(self, key: str, value: object) -> None:
        self.data[key] = value


class Users:
    """A user service that answers ``user_id``'s record while it is up."""

    def __init__(self) -> None:
        self.up = True

    def __call__(self, user_id: object, *, fields: object = "all") -> dict[str, object]:
        if not self.up:
            raise ConnectionError(f"users service down ({user_id!r})")
        return {"user": user_id, "fields": fields}


async def call(handler: FallbackHandler, driver: str, fn, *args, **kwargs):
    """Call the sync ``fn`` through the handler's async or sync driver."""
    if driver == "async":

        async def afn(*a, **kw):
            return fn(*a, **kw)

        return await handler.execute_with_fallback(afn, *args, **kwargs)
    return handler.execute_with_fallback_sync(fn, *args, **kwargs)


def handler_on(cache: object, clock: FakeClock | None = None, **kwargs: object) -> FallbackHandler:
    kwargs.setdefault("cache_by_arguments", True)
    kwargs.setdefault("cache_key", "user")
    config = FallbackConfig(CACHED, cache_service=cache, **kwargs)  # type: ignore[arg-type]
    return FallbackHandler(config, clock=clock or FakeClock())


async def test_a_failed_call_is_never_answered_with_another_arguments_value(driver: str) -> None:
    users = Users()
    handler = handler_on(MemoryCache())
    assert await call(handler, driver, users, "alice") == {"user": "alice", "fields": "all"}
    users.up = False
    with pytest.raises(ConnectionError, match="bob"):
        await call(handler, driver, users, "bob")  # not alice's record
    assert await call(handler, driver, users, "alice") == {"user": "alice", "fields": "all"}
    stats = handler.get_stats()
    assert (stats["cache_hits"], stats["cache_misses"], stats["fallback_failures"]) == (1, 1, 1)


async def test_keyword_arguments_are_part_of_the_key_in_any_order(driver: str) -> None:
    users = Users()
    cache = MemoryCache()
    handler = handler_on(cache)

    def lookup(user_id: object, **kwargs: object) -> object:
        return users(user_id, fields=kwargs)

    first = await call(handler, driver, lookup, "alice", a=1, b=2)
    users.up = False
    assert await call(handler, driver, lookup, "alice", b=2, a=1) == first
    with pytest.raises(ConnectionError):
        await call(handler, driver, lookup, "alice", a=1, b=3)
    with pytest.raises(ConnectionError):
        await call(handler, driver, lookup, "alice")


async def test_equal_values_of_different_types_have_different_keys(driver: str) -> None:
    users = Users()
    cache = MemoryCache()
    handler = handler_on(cache)
    await call(handler, driver, users, 1)
    users.up = False
    for other in (True, 1.0, "1", (1,), b"1"):
        with pytest.raises(ConnectionError):
            await call(handler, driver, users, other)
    assert await call(handler, driver, users, 1) == {"user": 1, "fields": "all"}
    assert len(cache.data) == 1


@pytest.mark.parametrize(
    "argument",
    [["alice"], {"id": 1}, object(), frozenset({1})],
    ids=["a list", "a dict", "an object", "a frozenset"],  # the same in every process
)
async def test_other_arguments_are_neither_written_nor_answered(driver: str, argument: object) -> None:
    users = Users()
    cache = MemoryCache()
    handler = handler_on(cache)
    await call(handler, driver, users, argument)
    assert cache.data == {}
    cache.data["user"] = "a call without arguments"
    users.up = False
    with pytest.raises(ConnectionError):
        await call(handler, driver, users, argument)
    assert handler.get_stats()["cache_misses"] == 1


def _nested(depth: int) -> tuple[object, ...]:
    value: tuple[object, ...] = ()
    for _ in range(depth):
        value = (value,)
    return value


@pytest.mark.parametrize(
    "argument",
    [10**5000, _nested(100_000)],
    ids=["an int too long for repr", "tuples nested too deep"],
)
async def test_arguments_without_a_key_never_fail_the_call(driver: str, argument: object) -> None:
    """An argument whose key cannot be made is one without a key: the call's own outcome stands."""
    cache = MemoryCache()
    handler = handler_on(cache)
    assert await call(handler, driver, lambda _arg: "v", argument) == "v"
    assert cache.data == {}

    def down(_arg: object) -> object:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await call(handler, driver, down, argument)
    assert handler.get_stats()["cache_misses"] == 1


async def test_a_call_without_arguments_has_a_digest_too(driver: str) -> None:
    """Not the plain ``cache_key``, which the default mode fills with any call's last value."""
    cache = MemoryCache()
    cache.data["user"] = "another call's value"
    handler = handler_on(cache)
    assert await call(handler, driver, lambda: "v") == "v"
    [key] = [key for key in cache.data if key != "user"]
    assert key.startswith("user:")
    assert len(key) == len("user:") + 32


async def test_a_key_that_spells_another_key_and_a_digest_never_meets_its_values(driver: str) -> None:
    """Keyed policies write under ``"<cache_key>:<key>"``: a key made of another key and the digest
    of that key's arguments still has a digest of its own after it, so the two never meet."""
    cache = MemoryCache()
    users = Users()
    victim = handler_on(cache, cache_key="user:alice")  # the key "alice" of a keyed policy
    assert await call(victim, driver, users, "secret") == {"user": "secret", "fields": "all"}
    [written] = cache.data
    crafted = handler_on(cache, cache_key=written)  # a key spelling "alice" and that digest

    def down() -> object:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await call(crafted, driver, down)  # no arguments: never alice's value


async def test_handlers_sharing_a_service_share_each_arguments_value(driver: str) -> None:
    """Without a maximum age, the key is the same in every handler (and process) on the service."""
    users = Users()
    cache = MemoryCache()
    await call(handler_on(cache), driver, users, "alice")
    users.up = False
    other = handler_on(cache)
    assert await call(other, driver, users, "alice") == {"user": "alice", "fields": "all"}
    with pytest.raises(ConnectionError):
        await call(other, driver, users, "bob")


async def test_a_value_older_than_cache_max_age_does_not_answer(driver: str) -> None:
    users = Users()
    clock = FakeClock()
    handler = handler_on(MemoryCache(), clock, cache_max_age=30)
    await call(handler, driver, users, "alice")
    users.up = False
    clock.advance(30)
    assert await call(handler, driver, users, "alice") == {"user": "alice", "fields": "all"}
    clock.advance(0.5)
    with pytest.raises(ConnectionError):
        await call(handler, driver, users, "alice")
    users.up = True
    await call(handler, driver, users, "alice")  # a new success is young again
    users.up = False
    assert await call(handler, driver, users, "alice") == {"user": "alice", "fields": "all"}
    stats = handler.get_stats()
    assert (stats["cache_hits"], stats["cache_misses"]) == (2, 1)


async def test_with_a_max_age_only_values_this_handler_wrote_answer(driver: str) -> None:
    """Another writer's value has no known age: with a maximum age it does not answer."""
    users = Users()
    cache = MemoryCache()
    await call(handler_on(cache), driver, users, "alice")
    handler = handler_on(cache, cache_max_age=timedelta(minutes=1))
    users.up = False
    with pytest.raises(ConnectionError):
        await call(handler, driver, users, "alice")


def test_a_handler_remembers_a_bounded_number_of_keys() -> None:
    users = Users()
    handler = handler_on(MemoryCache(), cache_max_age=60)
    for user in range(CACHE_ENTRIES + 1):
        handler.execute_with_fallback_sync(users, user)
    assert len(handler._core.index) == CACHE_ENTRIES
    users.up = False
    with pytest.raises(ConnectionError):
        handler.execute_with_fallback_sync(users, 0)  # the least recently used, forgotten
    assert handler.execute_with_fallback_sync(users, CACHE_ENTRIES) == {
        "user": CACHE_ENTRIES,
        "fields": "all",
    }


@pytest.mark.parametrize(
    ("value", "error", "rule"),
    [
        (0, ValueError, "> 0 seconds"),
        (-1.0, ValueError, "> 0 seconds"),
        (float("nan"), ValueError, "a finite duration"),
        (float("inf"), ValueError, "a finite duration"),
        (timedelta(0), ValueError, "> 0 seconds"),
        ("60", TypeError, "a duration in seconds"),
        (True, TypeError, "a duration in seconds"),
    ],
)
def test_a_bad_cache_max_age_is_refused_naming_the_field(value: object, error: type, rule: str) -> None:
    with pytest.raises(error, match=rf"^FallbackConfig\.cache_max_age must be {rule}"):
        FallbackConfig(CACHED, cache_key="k", cache_service=MemoryCache(), cache_max_age=value)  # type: ignore[arg-type]


def test_cache_max_age_is_normalised_and_only_for_the_cached_strategy() -> None:
    config = FallbackConfig(
        CACHED, cache_key="k", cache_service=MemoryCache(), cache_max_age=timedelta(minutes=2)
    )
    assert config.cache_max_age == 120.0
    assert FallbackConfig(CACHED, cache_key="k", cache_service=MemoryCache()).cache_max_age is None
    with pytest.raises(
        ValueError, match=r"^FallbackConfig\.cache_max_age must be unset unless strategy is CACHED"
    ):
        FallbackConfig(FallbackStrategy.DEFAULT_VALUE, cache_max_age=5)


class GatedCache:
    """An async cache whose writes wait for :attr:`gate`."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.gate = asyncio.Event()
        self.writes: list[str] = []

    async def get(self, key: str) -> object:
        return self.data.get(key)

    async def set(self, key: str, value: object) -> None:
        await self.gate.wait()
        self.writes.append(key)
        self.data[key] = value


async def test_a_stalled_async_cache_still_writes_each_arguments_newest_value() -> None:
    cache = GatedCache()
    handler = handler_on(cache)
    users = Users()

    async def fetch(user_id: object) -> object:
        return users(user_id)

    for user in ("alice", "bob", "alice", "bob", "carol", "alice", "bob"):
        await handler.execute_with_fallback(fetch, user)
    cache.gate.set()
    for _ in range(100):
        if not handler._core.writer.writes:
            break
        await asyncio.sleep(0)
    # The first write (alice) was in flight; then one waiting write per key, none lost.
    assert len(cache.writes) == 4
    assert len(set(cache.writes[1:])) == 3
    users.up = False
    for user in ("alice", "bob", "carol"):
        assert await handler.execute_with_fallback(fetch, user) == {"user": user, "fields": "all"}


async def test_the_age_of_a_value_is_that_of_the_value_the_service_holds() -> None:
    """A newer value still being written does not make the older one in the service young."""
    cache = GatedCache()
    clock = FakeClock()
    handler = handler_on(cache, clock, cache_max_age=60)
    users = Users()

    async def fetch(user_id: object) -> object:
        return users(user_id)

    cache.gate.set()
    await handler.execute_with_fallback(fetch, "alice")
    for _ in range(10):
        await asyncio.sleep(0)
    assert handler._core.writer.writes == set()
    cache.gate.clear()
    clock.advance(100)
    await handler.execute_with_fallback(fetch, "alice")  # its write stalls
    users.up = False
    clock.advance(1)
    with pytest.raises(ConnectionError):
        await handler.execute_with_fallback(fetch, "alice")  # the service holds a 101 s old value
    cache.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert await handler.execute_with_fallback(fetch, "alice") == {"user": "alice", "fields": "all"}


class EncodingCache:
    """A cache whose plain ``set`` encodes the value, then returns the async client's awaitable:
    a value it cannot encode fails at once, before anything runs on the loop."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.gate = asyncio.Event()

    def get(self, key: str) -> object:
        return self.data.get(key)

    def set(self, key: str, value: object) -> object:
        if value == "unencodable":
            raise TypeError("cannot encode the value")

        async def write() -> None:
            await self.gate.wait()
            self.data[key] = value

        return write()


async def test_a_waiting_write_after_one_that_fails_at_once_is_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A waiting value whose ``set`` fails (or lands) at once does not strand the values behind it,
    nor does a stranded one later overwrite a newer value of its key."""
    cache = EncodingCache()
    handler = handler_on(cache)

    values = {"a": "a1", "b": "unencodable", "c": "c1"}

    async def fetch(key: str) -> object:
        return values[key]

    async def settle() -> None:
        for _ in range(100):
            if not handler._core.writer.writes:
                return
            await asyncio.sleep(0)

    with caplog.at_level("CRITICAL", logger="otel_resilience.fallback"):
        for key in ("a", "b", "c"):  # a's write in flight, b's then c's waiting behind it
            await handler.execute_with_fallback(fetch, key)
        cache.gate.set()
        await settle()
        assert sorted(cache.data.values()) == ["a1", "c1"]
        assert handler.get_stats()["cache_errors"] == 1
        values["c"] = "c2"
        await handler.execute_with_fallback(fetch, "c")
        await settle()
    assert sorted(cache.data.values()) == ["a1", "c2"]


async def test_a_key_updated_while_it_waits_keeps_its_turn() -> None:
    """A newer value replaces its key's waiting one in place: a key that keeps succeeding while a
    slow cache writes other keys is still written in turn, never sent back behind newcomers."""

    class SlowCache:
        def __init__(self) -> None:
            self.data: dict[str, object] = {}
            self.permits = asyncio.Semaphore(0)
            self.written: list[object] = []

        def get(self, key: str) -> object:
            return self.data.get(key)

        async def set(self, key: str, value: object) -> None:
            await self.permits.acquire()
            self.data[key] = value
            self.written.append(value)

    cache = SlowCache()
    handler = handler_on(cache)
    values: dict[str, str] = {}

    async def fetch(key: str) -> object:
        return values[key]

    async def succeed(key: str, value: str) -> None:
        values[key] = value
        await handler.execute_with_fallback(fetch, key)

    for key in ("first", "hot", "other0"):  # first's write in flight, then hot's and other0's waiting
        await succeed(key, f"{key}-0")
    for round_ in range(1, 6):
        cache.permits.release()  # one write lands, the next one starts
        for _ in range(10):
            await asyncio.sleep(0)
        await succeed("hot", f"hot-{round_}")
        await succeed(f"other{round_}", "other")
    assert [value for value in cache.written if str(value).startswith("hot")] == ["hot-0", "hot-2"]
    for task in list(handler._core.writer.writes or ()):
        task.cancel()
    await asyncio.sleep(0)


def test_a_loop_closed_with_a_write_in_flight_is_let_go() -> None:
    """A loop closed (without cancelling its tasks) while its write stalls is forgotten at the next
    write of another loop: neither the loop nor its write task is kept."""

    class StalledCache:
        def get(self, key: str) -> object:
            return None

        async def set(self, key: str, value: object) -> None:
            await asyncio.Event().wait()

    handler = handler_on(StalledCache())

    async def echo(value: object) -> object:
        return value

    closed: list[weakref.ref[asyncio.AbstractEventLoop]] = []
    for round_ in range(3):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(handler.execute_with_fallback(echo, round_))
        loop.run_until_complete(handler.execute_with_fallback(echo, round_ + 100))  # waits
        loop.close()
        closed.append(weakref.ref(loop))
        del loop
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(handler.execute_with_fallback(echo, "last"))
        assert len(handler._core.writer.writes or ()) == 1
        assert list(handler._core.writer.writing or ()) == [loop]
    finally:
        for task in list(handler._core.writer.writes or ()):
            if task.get_loop() is loop:
                task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    gc.collect()
    assert [ref() for ref in closed] == [None, None, None]


def test_each_event_loop_writes_the_values_of_its_own_calls() -> None:
    """An async client belongs to one loop: a success on loop B is never written by loop A's writer."""
    release = threading.Event()
    a_writing = threading.Event()
    b_returned = threading.Event()
    written: list[tuple[object, str]] = []

    class LoopBoundCache:
        def __init__(self) -> None:
            self.data: dict[str, object] = {}

        async def get(self, key: str) -> object:
            return self.data.get(key)

        async def set(self, key: str, value: object) -> None:
            written.append((value, threading.current_thread().name))
            a_writing.set()
            for _ in range(10_000):
                if release.is_set():
                    break
                await asyncio.sleep(0.001)
            self.data[key] = value

    handler = handler_on(LoopBoundCache())

    async def echo(value: object) -> object:
        return value

    async def drain() -> None:
        for _ in range(10_000):
            if not any(not task.done() for task in handler._core.writer.writes or ()):
                return
            await asyncio.sleep(0.001)

    async def on_a() -> None:
        await handler.execute_with_fallback(echo, "a")
        while not b_returned.is_set():
            await asyncio.sleep(0.001)
        release.set()
        await drain()

    async def on_b() -> None:
        await handler.execute_with_fallback(echo, "b")
        b_returned.set()
        await drain()

    a = threading.Thread(target=asyncio.run, args=(on_a(),), name="loop-a", daemon=True)
    a.start()
    assert a_writing.wait(timeout=30)
    b = threading.Thread(target=asyncio.run, args=(on_b(),), name="loop-b", daemon=True)
    b.start()
    for thread in (a, b):
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert sorted(written) == [("a", "loop-a"), ("b", "loop-b")]


def test_threads_are_each_answered_with_their_own_value() -> None:
    handler = handler_on(MemoryCache(), cache_max_age=60)
    ids = itertools.count()
    wrong: list[object] = []
    lock = threading.Lock()

    def worker() -> None:
        with lock:
            me = next(ids)
        for round_ in range(50):
            assert handler.execute_with_fallback_sync(lambda _id, r=round_: (me, r), me) == (me, round_)

            def down(_id: object) -> object:
                raise ConnectionError

            answer = handler.execute_with_fallback_sync(down, me)
            if answer != (me, round_):
                wrong.append(answer)

    run_threads(8, worker)
    assert wrong == []
    assert handler.get_stats()["cache_hits"] == 8 * 50


async def test_the_managers_cached_fallback_is_keyed_by_arguments_and_ages(
    driver: str, manager: ResilienceManager, clock: FakeClock
) -> None:
    cache = MemoryCache()
    fallback = FallbackConfig(
        CACHED, cache_key="user", cache_service=cache, cache_max_age=30, cache_by_arguments=True
    )
    policy = manager.policy("users", ResilienceConfig(fallback_config=fallback))
    users = Users()

    async def run(user_id: str) -> object:
        if driver == "async":

            async def fetch(uid: str) -> object:
                return users(uid)

            return await policy.execute(fetch, user_id)
        return policy.execute_sync(users, user_id)

    await run("alice")
    users.up = False
    with pytest.raises(ConnectionError, match="bob"):
        await run("bob")
    clock.advance(30)
    assert await run("alice") == {"user": "alice", "fields": "all"}
    clock.advance(1)
    with pytest.raises(ConnectionError, match="alice"):
        await run("alice")


async def test_a_reload_keeps_the_ages_of_the_values_the_policy_wrote(
    driver: str, manager: ResilienceManager, clock: FakeClock
) -> None:
    """A reload that keeps the cache (service, key, keying) keeps what its handlers wrote, each
    value with its age, read with the new ``cache_max_age``; one that changes the cache starts afresh."""
    cache = MemoryCache()
    fallback = FallbackConfig(
        CACHED, cache_key="user", cache_service=cache, cache_max_age=30, cache_by_arguments=True
    )
    config = ResilienceConfig(fallback_config=fallback)
    policy = manager.policy("users", config)
    users = Users()

    async def run(user_id: str, key: str | None = None) -> object:
        target = policy if key is None else policy.for_key(key)
        if driver == "async":

            async def fetch(uid: str) -> object:
                return users(uid)

            return await target.execute(fetch, user_id)
        return target.execute_sync(users, user_id)

    await run("alice")
    await run("bob", "tenant")
    users.up = False
    manager.reconfigure("users", dataclasses.replace(config, spans=False))  # the cache unchanged
    assert await run("alice") == {"user": "alice", "fields": "all"}
    assert await run("bob", "tenant") == {"user": "bob", "fields": "all"}
    longer = dataclasses.replace(fallback, cache_max_age=60)
    manager.reconfigure("users", dataclasses.replace(config, fallback_config=longer))
    clock.advance(60)
    assert await run("alice") == {"user": "alice", "fields": "all"}
    clock.advance(1)
    with pytest.raises(ConnectionError, match="alice"):
        await run("alice")
    users.up = True
    await run("bob", "tenant")
    users.up = False
    renamed = dataclasses.replace(longer, cache_key="person")
    manager.reconfigure("users", dataclasses.replace(config, fallback_config=renamed))
    cache.data = {key.replace("user", "person", 1): value for key, value in cache.data.items()}
    with pytest.raises(ConnectionError, match="bob"):
        await run("bob", "tenant")  # another cache: what this handler wrote is unknown


async def test_by_default_one_value_answers_every_call(driver: str) -> None:
    """The default (the SPEC's last good value under ``cache_key``), for a call whose answer does
    not depend on its arguments (a request number): any failed call gets the last good value."""
    cache = MemoryCache()
    handler = FallbackHandler(
        FallbackConfig(CACHED, cache_key="user", cache_service=cache), clock=FakeClock()
    )
    users = Users()
    await call(handler, driver, users, 1)
    assert list(cache.data) == ["user"]
    users.up = False
    assert await call(handler, driver, users, 2) == {"user": 1, "fields": "all"}
    assert await call(handler, driver, users, [3]) == {"user": 1, "fields": "all"}


def test_cache_by_arguments_is_checked() -> None:
    with pytest.raises(TypeError, match=r"^FallbackConfig\.cache_by_arguments must be a bool"):
        FallbackConfig(CACHED, cache_key="k", cache_service=MemoryCache(), cache_by_arguments=0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"^FallbackConfig\.cache_by_arguments must be unset unless strategy"
    ):
        FallbackConfig(FallbackStrategy.DEFAULT_VALUE, cache_by_arguments=True)
    assert FallbackConfig(FallbackStrategy.DEFAULT_VALUE).cache_by_arguments is False


async def test_by_default_the_one_value_ages_too(driver: str) -> None:
    """``cache_max_age`` bounds the one value of the default mode as it does each key's."""
    clock = FakeClock()
    cache = MemoryCache()
    config = FallbackConfig(CACHED, cache_key="feed", cache_service=cache, cache_max_age=10)
    handler = FallbackHandler(config, clock=clock)
    users = Users()
    await call(handler, driver, users, 1)
    users.up = False
    clock.advance(10)
    assert await call(handler, driver, users, 2) == {"user": 1, "fields": "all"}
    clock.advance(1)
    with pytest.raises(ConnectionError):
        await call(handler, driver, users, 3)


class OrderedGateCache:
    """An async cache whose writes wait for ``gate``; ``values`` lists each value as it lands."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.values: list[object] = []
        self.gate = asyncio.Event()

    async def get(self, key: str) -> object:
        return self.data.get(key)

    async def set(self, key: str, value: object) -> None:
        await self.gate.wait()
        self.data[key] = value
        self.values.append(value)


async def test_a_reload_keeps_the_order_of_the_writes_so_the_newest_value_wins(
    manager: ResilienceManager,
) -> None:
    """A value the old handler still had waiting to be written never lands after a newer one the
    reloaded policy returned: the two handlers write the cache in one order (per key, per loop)."""
    cache = OrderedGateCache()
    fallback = FallbackConfig(CACHED, cache_key="feed", cache_service=cache)
    config = ResilienceConfig(fallback_config=fallback)
    policy = manager.policy("feed", config)

    async def answer(value: str) -> str:
        return value

    await policy.execute(answer, "old-1")  # its write in flight
    await policy.execute(answer, "old-2")  # waiting behind it
    manager.reconfigure("feed", dataclasses.replace(config, spans=False))  # the same cache
    await policy.execute(answer, "new")
    cache.gate.set()
    for _ in range(100):
        await asyncio.sleep(0)
    assert cache.data == {"feed": "new"}
    assert cache.values == ["old-1", "new"]  # the newer value took the waiting one's place

    async def down(value: str) -> str:
        raise ConnectionError(value)

    assert await policy.execute(down, "x") == "new"
