"""Named policies with keys: one breaker, bulkhead and rate limiter per key, bounded, counts never lost."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import gc
import math
import pickle
import sys
import threading
import time
import tracemalloc
import typing
import warnings
from collections.abc import Iterator
from datetime import timedelta

import pytest

from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CountWindow,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    KeyedPolicyView,
    PolicyHandle,
    RateLimitedError,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    resilient,
)
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, key_attribute
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.registry import BREAKERS, PIPELINES
from otel_resilience.engine.step import Step
from otel_resilience.engine.store import HELD_LOOKS
from otel_resilience.manager import DEFAULT_IDLE_TTL, DEFAULT_MAX_KEYS, PolicyStatsDict
from otel_resilience.manager.keyed import KeyState
from otel_resilience.patterns.circuit_breaker import CircuitState, TimeWindow
from otel_resilience.testing import FakeClock

BREAKER = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0))


def boom() -> None:
    raise ConnectionError("down")


def fail_twice(view: KeyedPolicyView | PolicyHandle) -> None:
    for _ in range(2):
        with pytest.raises(ConnectionError):
            view.execute_sync(boom)


def test_each_key_has_its_own_breaker_made_on_first_use(manager: ResilienceManager) -> None:
    """Opening one key's breaker leaves the other keys and the unkeyed calls alone."""
    payments = manager.policy("payments", BREAKER)
    fail_twice(payments.for_key("host-a"))
    with pytest.raises(CircuitOpenError):
        payments.for_key("host-a").execute_sync(lambda: "never")
    assert payments.for_key("host-b").execute_sync(lambda: "b") == "b"
    assert payments.execute_sync(lambda: "unkeyed") == "unkeyed"
    assert payments.for_key("host-a").circuit_breaker.state is CircuitState.OPEN
    assert payments.for_key("host-b").circuit_breaker.state is CircuitState.CLOSED
    assert payments.for_key("host-a").circuit_breaker is not payments.for_key("host-b").circuit_breaker
    assert payments.keys == 2
    stats = payments.get_stats()
    assert stats["circuit_breaker"]["open_keys"] == 1
    assert stats["circuit_breaker"]["total_rejected"] == 1
    assert stats["executions"]["total"] == 5


def test_each_key_has_its_own_bulkhead_and_rate_limiter(manager: ResilienceManager) -> None:
    """A full bulkhead or an empty bucket of one key does not refuse another key's calls."""
    config = ResilienceConfig(
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=2),
    )
    tenants = manager.policy("tenants", config)
    inside: list[object] = []

    def nested() -> str:
        with pytest.raises(BulkheadFullError):
            tenants.for_key("t1").execute_sync(lambda: "second")  # t1's only slot is taken
        inside.append(tenants.for_key("t2").execute_sync(lambda: "t2"))
        return "t1"

    assert tenants.for_key("t1").execute_sync(nested) == "t1"
    assert inside == ["t2"]
    assert tenants.for_key("t2").execute_sync(lambda: "t2") == "t2"
    with pytest.raises(RateLimitedError):
        tenants.for_key("t2").execute_sync(lambda: "no permit left")
    assert tenants.for_key("t3").execute_sync(lambda: "t3") == "t3"
    stats = tenants.get_stats()
    assert stats["bulkhead"]["rejected"] == 1
    assert stats["rate_limiter"]["rejected"] == 1
    assert stats["bulkhead"]["active"] == 0


def test_the_stats_are_what_their_typed_dict_says(manager: ResilienceManager) -> None:
    """``get_stats()`` has the keys and value types of ``PolicyStatsDict``, nested dicts included."""
    full = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(),
        bulkhead_config=BulkheadConfig(),
        rate_limiter=RateLimiterConfig(rate=10.0),
    )
    hints = typing.get_type_hints(PolicyStatsDict)
    for name, config in (("typed-full", full), ("typed-empty", ResilienceConfig())):
        policy = manager.policy(name, config)
        policy.for_key("k").execute_sync(lambda: "ok")
        stats = policy.get_stats()
        assert list(stats) == list(hints)
        for field, value in stats.items():
            union = typing.get_args(hints[field])
            kinds = [kind for kind in union if kind is not type(None)] or [hints[field]]
            if value is None:
                assert type(None) in union, field
            elif typing.is_typeddict(kinds[0]):
                nested = typing.get_type_hints(kinds[0])
                assert list(value) == list(nested), field
                assert all(isinstance(value[name], nested[name]) for name in nested), field
            else:
                assert isinstance(value, tuple(kinds)), field


async def test_keys_share_the_config_of_the_stages_without_state(manager: ResilienceManager) -> None:
    """Retry and fallback act the same for every key (each key's pipeline is built from the config)."""
    config = ResilienceConfig(
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.01),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
    )
    policy = manager.policy("shared", config)
    calls: dict[str, int] = {}

    async def flaky(key: str) -> str:
        calls[key] = calls.get(key, 0) + 1
        raise ConnectionError(key)

    for key in ("a", "b"):
        assert await policy.for_key(key).execute(flaky, key) == "degraded"
    assert calls == {"a": 3, "b": 3}


class DictCache:
    """A synchronous cache service over a dict."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def get(self, key: str) -> object:
        return self.data.get(key)

    def set(self, key: str, value: object) -> None:
        self.data[key] = value


def test_a_cached_fallback_keeps_each_key_value_apart(manager: ResilienceManager) -> None:
    """A tenant whose call fails gets its own last good value, never another tenant's."""
    cache = DictCache()
    config = ResilienceConfig(
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.CACHED_VALUE, cache_key="quote", cache_service=cache
        )
    )
    policy = manager.policy("quotes", config)
    assert policy.for_key("acme").execute_sync(lambda: "acme 101") == "acme 101"
    assert policy.for_key("globex").execute_sync(lambda: "globex 7") == "globex 7"
    assert policy.execute_sync(lambda: "index 5000") == "index 5000"
    assert policy.for_key("acme").execute_sync(boom) == "acme 101"
    assert policy.execute_sync(boom) == "index 5000"
    assert cache.data == {"quote:acme": "acme 101", "quote:globex": "globex 7", "quote": "index 5000"}


def test_a_long_keys_cache_error_names_its_cache_key_cut(
    manager: ResilienceManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A 5,000-character key's failed cache write is logged with its cache key cut, as a ``resilience.key``."""

    class _DownCache(DictCache):
        def set(self, key: str, value: object) -> None:
            raise ConnectionError("cache down")

    config = ResilienceConfig(
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.CACHED_VALUE, cache_key="quote", cache_service=_DownCache()
        )
    )
    key = "t" * 5_000
    with caplog.at_level("WARNING", logger="otel_resilience"):
        assert manager.policy("cached-long", config).for_key(key).execute_sync(lambda: "fresh") == "fresh"
    [message] = [r.getMessage() for r in caplog.records if "cache_service.set" in r.getMessage()]
    assert message == f"fallback 'cached-long': cache_service.set({key_attribute('quote:' + key)!r}) failed"


async def test_protect_runs_each_call_with_the_key_state(manager: ResilienceManager) -> None:
    """A function protected through a view (async or sync) counts its calls in the key's state."""
    policy = manager.policy("protected", BREAKER)

    @policy.for_key("k").protect
    async def fetch(x: int) -> int:
        return x * 2

    @policy.protect
    def unkeyed(x: int) -> int:
        return x + 1

    assert await fetch(4) == 8
    assert unkeyed(1) == 2
    assert fetch.__name__ == "fetch"
    assert policy.for_key("k").circuit_breaker.stats.total_successes == 1
    assert policy.keys == 1


def test_a_key_must_be_hashable_and_not_none(manager: ResilienceManager) -> None:
    """for_key refuses keys it cannot keep, naming the argument."""
    policy = manager.policy("keys", ResilienceConfig())
    with pytest.raises(TypeError, match=r"PolicyHandle\.for_key\.key must be hashable"):
        policy.for_key(["a"])
    with pytest.raises(TypeError, match=r"PolicyHandle\.for_key\.key"):
        policy.for_key(None)
    with pytest.raises(TypeError, match=r"KeyedPolicyView\.execute_sync\.fn must be callable"):
        policy.for_key("k").execute_sync("not callable")  # type: ignore[arg-type]


def test_policy_returns_one_handle_per_name(manager: ResilienceManager) -> None:
    """The same name gives the same handle; another config or options for it are refused."""
    first = manager.policy("api", BREAKER, max_keys=10)
    assert manager.policy("api") is first
    assert manager.policy("api", BREAKER, max_keys=10) is first
    with pytest.raises(ValueError, match="reconfigure"):
        manager.policy("api", ResilienceConfig())
    with pytest.raises(ValueError, match="max_keys=10"):
        manager.policy("api", max_keys=11)
    with pytest.raises(KeyError, match="no policy named 'nope'"):
        manager.policy("nope")
    assert first.max_keys == 10
    assert first.idle_ttl == DEFAULT_IDLE_TTL
    assert manager.policy("defaults", ResilienceConfig()).max_keys == DEFAULT_MAX_KEYS


@pytest.mark.parametrize(
    ("attribute", "value"), [("name", "other"), ("key_attribute_limit", -5), ("max_keys", 3)]
)
def test_a_handle_option_cannot_be_assigned(
    manager: ResilienceManager, attribute: str, value: object
) -> None:
    """A handle's name and options are fixed: assigning one is refused, never taken unchecked."""
    policy = manager.policy("fixed", ResilienceConfig())
    before = getattr(policy, attribute)
    with pytest.raises(AttributeError):
        setattr(policy, attribute, value)
    assert getattr(policy, attribute) == before
    assert manager.policy("fixed") is policy
    assert repr(policy) == "PolicyHandle('fixed', generation=1, keys=0)"


@pytest.mark.parametrize(("attribute", "value"), [("key", "b"), ("policy", None)])
def test_a_key_view_cannot_be_pointed_elsewhere(
    manager: ResilienceManager, attribute: str, value: object
) -> None:
    """A key view's key and policy are fixed: it never shows one key while its calls run under another."""
    policy = manager.policy("views", ResilienceConfig())
    view = policy.for_key("a")
    with pytest.raises(AttributeError):
        setattr(view, attribute, value)
    assert (view.key, view.policy) == ("a", policy)


def test_policy_refuses_what_a_handle_cannot_run(manager: ResilienceManager) -> None:
    """A Step instance (one pipeline only), another name, a bad option or config are refused."""
    with pytest.raises(ValueError, match=r"extra_strategies\[0\].*factory"):
        manager.policy("steps", ResilienceConfig(extra_strategies=(ExtraStrategy(Step(), rank=50),)))
    with pytest.raises(ValueError, match="whose name is None or 'mine'"):
        manager.policy("mine", ResilienceConfig(name="other"))
    with pytest.raises(TypeError, match=r"ResilienceManager\.policy\.config"):
        manager.policy("typed", {"timeout": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^ResilienceManager\.policy\.max_keys must be >= 1, got 0$"):
        manager.policy("capped", ResilienceConfig(), max_keys=0)
    with pytest.raises(ValueError, match=r"ResilienceManager\.policy\.idle_ttl must be > 0"):
        manager.policy("ttl", ResilienceConfig(), idle_ttl=0)
    with pytest.raises(
        ValueError, match=r"^ResilienceManager\.policy\.key_attribute_limit must be >= 0, got -1$"
    ):
        manager.policy("limit", ResilienceConfig(), key_attribute_limit=-1)
    assert manager.policy(
        "factory", ResilienceConfig(extra_strategies=(ExtraStrategy(lambda _: Step(), rank=50),))
    )


def test_an_adapt_that_returns_no_config_is_refused_naming_it(manager: ResilienceManager) -> None:
    """What ``adapt`` returns is a policy's config: anything else is a TypeError naming ``adapt``,
    at creation and on a reload (it was an AttributeError from deep in the pipeline's build)."""
    message = (
        r"^ResilienceManager\.policy\.adapt returned \{'timeout': 1\.0\}; it must return a ResilienceConfig$"
    )
    with pytest.raises(TypeError, match=message):
        manager.policy("adapted-badly", BREAKER, adapt=lambda _config: {"timeout": 1.0})
    with pytest.raises(KeyError):
        manager.policy("adapted-badly")
    answers: list[object] = [BREAKER]
    handle = manager.policy("adapted-later", BREAKER, adapt=lambda _config: answers[-1])
    answers.append({"timeout": 1.0})
    with pytest.raises(TypeError, match=message):
        manager.reconfigure("adapted-later", ResilienceConfig(timeout=2.0))
    assert handle.config == BREAKER
    assert handle.generation == 1


def test_an_adapt_that_is_not_callable_is_refused_naming_the_field(manager: ResilienceManager) -> None:
    """``adapt=`` is checked as every option is: a TypeError naming it, and no handle made."""
    with pytest.raises(TypeError, match=r"^ResilienceManager\.policy\.adapt must be callable or None"):
        manager.policy("adapted", BREAKER, adapt="retry_on_5xx")  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        manager.policy("adapted")


def test_an_adapt_that_cannot_take_the_config_is_refused_naming_the_field(manager: ResilienceManager) -> None:
    """``adapt`` is called as ``adapt(config)``: one that cannot take it is refused naming the field
    (was: Python's ``<lambda>() takes 0 positional arguments but 1 was given``, naming no argument),
    and no handle made."""
    for adapt in (lambda: BREAKER, lambda config, extra: config):
        with pytest.raises(
            TypeError, match=r"^ResilienceManager\.policy\.adapt must be callable as adapt\(config\)"
        ):
            manager.policy("adapted", BREAKER, adapt=adapt)
    with pytest.raises(KeyError):
        manager.policy("adapted")


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"max_keys": True},
            TypeError,
            r"^ResilienceManager\.policy\.max_keys must be an int, got True \(bool\)$",
        ),
        (
            {"max_keys": 4.0},
            TypeError,
            r"^ResilienceManager\.policy\.max_keys must be an int, got 4\.0 \(float\)$",
        ),
        (
            {"max_keys": None},
            TypeError,
            r"^ResilienceManager\.policy\.max_keys must be an int, got None \(NoneType\)$",
        ),
        (
            {"key_attribute_limit": None},
            TypeError,
            r"^ResilienceManager\.policy\.key_attribute_limit must be an int, got None \(NoneType\)$",
        ),
        (
            {"idle_ttl": "600"},
            TypeError,
            r"^ResilienceManager\.policy\.idle_ttl must be a duration in seconds",
        ),
        (
            {"idle_ttl": math.nan},
            ValueError,
            r"^ResilienceManager\.policy\.idle_ttl must be a finite duration",
        ),
        (
            {"key_attribute_limit": False},
            TypeError,
            r"^ResilienceManager\.policy\.key_attribute_limit must be an int, got False \(bool\)$",
        ),
    ],
)
def test_options_given_for_an_existing_policy_are_judged_as_at_creation(
    manager: ResilienceManager, options: dict[str, object], error: type[Exception], message: str
) -> None:
    """A bool is no count and a string no duration, whether the policy is new or found: never equal to its own.

    Both counts follow the rule of every int field: another type (``None`` too) is a TypeError
    naming the field, an int out of range a ValueError (``max_keys=None`` was a ValueError while
    ``key_attribute_limit=None`` was a TypeError).
    """
    manager.policy("found", ResilienceConfig(), max_keys=1, idle_ttl=600.0, key_attribute_limit=0)
    with pytest.raises(error, match=message):
        manager.policy("found", **options)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        manager.policy("new-" + next(iter(options)), ResilienceConfig(), **options)  # type: ignore[arg-type]
    assert manager.policy("found", max_keys=1, idle_ttl=timedelta(minutes=10), key_attribute_limit=0)


def test_idle_keys_past_max_keys_are_evicted_least_recently_used_first(manager: ResilienceManager) -> None:
    """The oldest idle key goes; a key used since is kept; the evicted key comes back fresh."""
    policy = manager.policy("lru", BREAKER, max_keys=2)
    for key in ("a", "b", "a", "c"):
        policy.for_key(key).execute_sync(lambda: None)
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (2, 1)
    a_breaker = policy._keys.get("a")
    assert a_breaker is not None
    assert policy._keys.get("b") is None
    assert stats["executions"]["total"] == 4  # b's call is still counted
    assert stats["circuit_breaker"]["total_successes"] == 4


@pytest.mark.parametrize("operator", ["disable", "metrics_only"])
def test_a_breaker_an_operator_set_keeps_its_key(manager: ResilienceManager, operator: str) -> None:
    """DISABLED or METRICS_ONLY is an operator's word: the key is not idle, so it is not lost."""
    policy = manager.policy(f"operator-{operator}", BREAKER, max_keys=1)
    breaker = policy.for_key("set").circuit_breaker
    assert breaker is not None
    getattr(breaker, operator)()
    policy.for_key("other").execute_sync(lambda: None)
    assert policy.keys == 2  # over the cap: "set" is kept
    assert policy.for_key("set").circuit_breaker is breaker
    breaker.reset()  # back to normal: the key rests, and may go
    policy.for_key("third").execute_sync(lambda: None)
    assert policy._keys.get("set") is None


def test_an_open_breaker_keeps_its_key_until_its_open_period_ends(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """A key whose breaker is OPEN is not idle; once the period is over it can be evicted.

    HALF_OPEN with no probe is idle but holds state (made again, the key would be CLOSED): it
    goes after the idle keys holding none, and once more than ``max_keys`` keys hold some.
    """
    policy = manager.policy("open-keys", BREAKER, max_keys=1)
    fail_twice(policy.for_key("down"))
    policy.for_key("other").execute_sync(lambda: None)
    assert policy.keys == 2  # over the cap: "down" is OPEN
    assert policy.for_key("down").circuit_breaker.state is CircuitState.OPEN
    clock.advance(31.0)  # its OPEN period is over (HALF_OPEN with no probe is idle)
    policy.for_key("third").execute_sync(lambda: None)
    assert policy._keys.get("other") is None  # it held no state: it went first
    assert policy._keys.get("down") is not None
    with pytest.raises(ConnectionError):
        policy.for_key("third").execute_sync(boom)  # now two keys hold state, one past the cap
    policy.for_key("fourth").execute_sync(lambda: None)
    assert len([key for key in ("down", "third") if policy._keys.get(key) is None]) == 1  # one of them
    assert policy.get_stats()["evicted_keys"] == 2
    assert policy.get_stats()["circuit_breaker"]["total_failures"] == 3


def test_a_new_key_looks_at_a_bounded_number_of_keys_whose_breaker_is_open(
    manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage that opens the breakers of many keys does not make each new key scan them all.

    Each new key asked every key with an OPEN breaker whether it was idle, under the lock every
    call through the policy takes: with 1 200 of them, 7 ms a new key instead of 0.1 ms.
    """
    looks = 0
    retire_if_idle = KeyState.retire_if_idle

    def counted(state: KeyState) -> bool:
        nonlocal looks
        looks += 1
        return retire_if_idle(state)

    monkeypatch.setattr(KeyState, "retire_if_idle", counted)
    policy = manager.policy("outage", BREAKER, max_keys=10)
    down = 300
    for index in range(down):
        fail_twice(policy.for_key(f"down-{index}"))
    looks = 0
    added = 100
    for index in range(added):
        policy.for_key(f"up-{index}").execute_sync(lambda: None)
    assert looks <= added * (HELD_LOOKS + 3)  # before: 30 000 looks
    assert policy.keys <= down + 10 + down // HELD_LOOKS + 2
    assert policy.get_stats()["executions"]["total"] == 2 * down + added


async def test_a_key_with_a_call_running_is_never_evicted(manager: ResilienceManager) -> None:
    """Even past the cap and its TTL, a key in use stays; it goes once its call ended."""
    policy = manager.policy("busy", ResilienceConfig(), max_keys=1)
    release = asyncio.Event()
    running = asyncio.create_task(policy.for_key("slow").execute(release.wait))
    await asyncio.sleep(0)
    await policy.for_key("quick").execute(asyncio.sleep, 0)
    slow_state = policy._keys.get("slow")
    assert slow_state is not None
    assert slow_state.live
    release.set()
    await running
    await policy.for_key("next").execute(asyncio.sleep, 0)
    assert policy._keys.get("slow") is None
    assert policy.get_stats()["executions"]["total"] == 3


async def test_keys_kept_past_max_keys_by_a_burst_go_once_idle_as_calls_go_on(
    manager: ResilienceManager,
) -> None:
    """A burst of keys in use at once keeps them all; once idle, the policy shrinks back to max_keys.

    Eviction only happened when a new key came, so a service whose traffic stayed on the keys of
    the burst kept every one of them, past max_keys, for good (idle_ttl=None).
    """
    policy = manager.policy("burst", BREAKER, max_keys=2, idle_ttl=None)
    release = asyncio.Event()
    burst = [asyncio.create_task(policy.for_key(key).execute(release.wait)) for key in range(6)]
    await asyncio.sleep(0)
    assert policy.keys == 6
    release.set()
    await asyncio.gather(*burst)
    for _ in range(10):
        await policy.for_key(5).execute(asyncio.sleep, 0)
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (2, 4)
    assert stats["executions"]["total"] == 16


def test_keys_expired_while_a_new_key_fails_to_build_are_still_folded(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """A new key whose state cannot be built (a factory raises) does not strand the keys that expired.

    The expired keys left the store before the build raised, and were never folded into the
    policy's totals nor unregistered: kept in memory, listed as leaving, for good. A key whose
    ``str()`` raises is refused by ``for_key``, before the store is reached.
    """

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    failing: list[bool] = []

    def factory(_name: str) -> Step:
        if failing:
            raise RuntimeError("factory down")
        return Step()

    config = ResilienceConfig(
        circuit_breaker=BREAKER.circuit_breaker, extra_strategies=(ExtraStrategy(factory, rank=50),)
    )
    policy = manager.policy("strand", config, idle_ttl=10.0)
    policy.for_key("old").execute_sync(lambda: None)
    clock.advance(11.0)
    with pytest.raises(RuntimeError, match="no text"):
        policy.for_key(Unprintable())
    assert (len(policy._keys), policy._keys.evicted) == (1, 0)  # nothing changed
    failing.append(True)
    with pytest.raises(RuntimeError, match="factory down"):
        policy.for_key("new").execute_sync(lambda: None)
    assert not policy._keys._leaving  # none stranded as leaving (a failed build touches no key)
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (0, 1)
    assert stats["executions"]["total"] == 1
    assert policy._ledger.executions()["total"] == 1


def test_a_key_whose_build_fails_takes_no_metric_attribute(manager: ResilienceManager) -> None:
    """A new key whose pipeline cannot be built gives its ``resilience.key`` place back.

    Else each key that failed to build (an extra strategy's factory raising) would hold one of
    the ``key_attribute_limit`` places for good, and later keys share the overflow value.
    """
    failing: list[bool] = []

    def factory(_name: str) -> Step:
        if failing:
            raise RuntimeError("factory down")
        return Step()

    config = ResilienceConfig(extra_strategies=(ExtraStrategy(factory, rank=50),))
    policy = manager.policy("slots", config, key_attribute_limit=1)
    failing.append(True)
    with pytest.raises(RuntimeError, match="factory down"):
        policy.for_key("broken").execute_sync(lambda: None)
    failing.clear()
    policy.for_key("good").execute_sync(lambda: None)
    policy.for_key("later").execute_sync(lambda: None)
    metric_keys = {state.key: state.metric_key for state in policy._keys.values()}
    assert metric_keys == {"good": "good", "later": "_OTHER"}
    policy.for_key("broken").execute_sync(lambda: None)  # built now: past the limit
    assert {state.key: state.metric_key for state in policy._keys.values()}["broken"] == "_OTHER"


def test_a_new_keys_slow_build_holds_no_call_of_the_keys_kept(manager: ResilienceManager) -> None:
    """A new key's extra strategy factory (user code, maybe slow) runs outside the keys' store lock.

    It ran under it: while one thread built a new key, every call of every other key of the policy
    (each takes that lock to find its key) waited for the factory, as did ``get_stats()``. The
    calls that find one key new at once still build it once.
    """
    building, release = threading.Event(), threading.Event()
    made: list[str] = []

    def factory(_name: str) -> Step:
        made.append(threading.current_thread().name)
        if threading.current_thread().name == "builder":
            building.set()
            release.wait(30.0)
        return Step()

    config = ResilienceConfig(extra_strategies=(ExtraStrategy(factory, rank=50),))
    policy = manager.policy("slow-build", config)
    policy.for_key("kept").execute_sync(lambda: None)
    builders = [
        threading.Thread(target=policy.for_key("new").execute_sync, args=(lambda: None,), name=name)
        for name in ("builder", "second")
    ]
    builders[0].start()
    assert building.wait(10.0)
    builders[1].start()  # finds "new" being built: waits for it, builds nothing
    kept = threading.Thread(target=policy.for_key("kept").execute_sync, args=(lambda: None,))
    kept.start()
    kept.join(10.0)  # generous: it waits for nothing
    blocked = kept.is_alive()
    release.set()
    for thread in (kept, *builders):
        thread.join(10.0)
    assert not blocked
    assert made.count("builder") == 1
    assert "second" not in made
    assert policy.get_stats()["executions"]["total"] == 4


class Strict:
    """A hashable key whose ``==`` refuses any other type (as some value types do)."""

    def __init__(self, number: int) -> None:
        self.number = number

    def __hash__(self) -> int:
        return hash(self.number)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Strict):
            raise TypeError(f"cannot compare a Strict with {type(other).__name__}")
        return self.number == other.number


def test_a_key_whose_equality_refuses_other_types_breaks_no_other_key(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """The store tells its entries apart without asking a key to compare itself with another.

    Its expiry compared every entry it looked at with the key used (and with ``None``): a key
    whose ``==`` raises made every call and stats read that looked at it raise, and the keys
    already taken out of the store by that look were never folded (their counts lost).
    """
    policy = manager.policy("strict", BREAKER, max_keys=2, idle_ttl=10.0)
    strict = Strict(1)
    for key in (strict, "a", "b"):  # b evicts the oldest idle key (strict): a call compares none
        policy.for_key(key).execute_sync(lambda: None)
    policy.for_key(strict).execute_sync(lambda: None)  # made again, evicting a
    clock.advance(5.0)
    policy.for_key(strict).execute_sync(lambda: None)
    clock.advance(6.0)  # b: 11 s unused, strict: 6 s
    policy.for_key(strict).execute_sync(lambda: None)  # looks at b, expired, with strict in use
    clock.advance(11.0)
    policy.for_key("c").execute_sync(lambda: None)  # strict expired, with nothing in use
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (1, 4)
    assert stats["executions"]["total"] == 7
    assert policy._keys.values(evicting=True) == [policy._keys.get("c")]


def test_keys_unused_for_idle_ttl_are_evicted(manager: ResilienceManager, clock: FakeClock) -> None:
    """A key not used for idle_ttl seconds goes at the next call or stats read; one used stays."""
    policy = manager.policy("ttl", BREAKER, idle_ttl=timedelta(seconds=60))
    policy.for_key("old").execute_sync(lambda: None)
    clock.advance(50.0)
    policy.for_key("recent").execute_sync(lambda: None)
    clock.advance(20.0)  # old: 70 s unused; recent: 20 s
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (1, 1)
    assert policy._keys.get("recent") is not None
    assert stats["executions"]["total"] == 2
    forever = manager.policy("no-ttl", BREAKER, idle_ttl=None)
    forever.for_key("k").execute_sync(lambda: None)
    clock.advance(1e6)
    assert forever.get_stats()["keys"] == 1


def test_idle_ttl_evicts_an_unused_key_whatever_state_it_holds(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """Holding state (failures towards opening, a bucket not full) spares a key from max_keys, never from idle_ttl."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=30.0),
        rate_limiter=RateLimiterConfig(rate=0.001, burst=2),
    )
    policy = manager.policy("ttl-held", config, idle_ttl=60.0)
    with pytest.raises(ConnectionError):
        policy.for_key("failing").execute_sync(boom)
    policy.for_key("spent").execute_sync(lambda: None)
    clock.advance(61.0)
    assert policy.keys == 0
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (0, 2)
    assert stats["circuit_breaker"]["total_failures"] == 1
    assert policy.for_key("failing").circuit_breaker.get_stats()["failure_count"] == 0  # back fresh


def test_idle_ttl_keeps_an_open_key_until_its_open_period_ends(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """An OPEN breaker is not idle: idle_ttl shorter than its timeout never hands the key a CLOSED one
    early; once the period is over (HALF_OPEN, no probe) the unused key goes."""
    policy = manager.policy("ttl-open", BREAKER, idle_ttl=10.0)
    fail_twice(policy.for_key("down"))
    clock.advance(11.0)  # unused past idle_ttl, OPEN for 19 s more
    assert policy.keys == 1
    assert policy.get_stats()["evicted_keys"] == 0
    with pytest.raises(CircuitOpenError):
        policy.for_key("down").execute_sync(lambda: "never")
    clock.advance(29.0)  # OPEN period over; unused for 29 s
    assert policy.keys == 0
    assert policy.get_stats()["evicted_keys"] == 1


def test_the_keys_count_leaves_out_expired_keys_and_evicts_nothing(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """``handle.keys`` is what the ``resilience.policy.keys`` gauge reads during a collection, which
    must evict nothing: it leaves out the idle keys unused for idle_ttl (on a policy no call
    reaches, they were counted for ever), and they leave at the next look (a stats read, a call).
    """
    policy = manager.policy("quiet", BREAKER, idle_ttl=60.0)
    for key in ("a", "b", "c"):
        policy.for_key(key).execute_sync(lambda: None)
    assert policy.keys == 3
    clock.advance(30.0)
    policy.for_key("c").execute_sync(lambda: None)
    clock.advance(31.0)  # a and b: 61 s unused; c: 31 s
    assert policy.keys == 1
    clock.advance(30.0)
    assert policy.keys == 0
    assert (len(policy._keys), policy._keys.evicted) == (3, 0)  # nothing evicted by reading
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (0, 3)
    assert stats["executions"]["total"] == 4
    assert policy.keys == 0
    assert "keys=0" in repr(policy)


def test_the_keys_count_keeps_expired_keys_that_are_not_idle(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """A key unused for idle_ttl stays counted while its breaker is OPEN or a call runs in it, as
    an expiry keeps it."""
    policy = manager.policy("quiet-open", BREAKER, idle_ttl=10.0)
    fail_twice(policy.for_key("open"))  # OPEN for 30 s
    policy.for_key("closed").execute_sync(lambda: None)
    clock.advance(11.0)
    assert policy.keys == 1  # the OPEN one

    def counted_while_running() -> int:
        clock.advance(11.0)
        return policy.keys

    assert policy.for_key("busy").execute_sync(counted_while_running) == 2  # OPEN, and running
    clock.advance(20.0)  # the open period is over: HALF_OPEN, idle
    assert policy.keys == 0
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (0, 3)


def test_evicted_keys_leave_the_registries_and_their_counts_stay(manager: ResilienceManager) -> None:
    """An evicted key's breaker and pipeline are no longer exported; the ledger carries their counts."""
    policy = manager.policy("ledger", BREAKER, max_keys=1)
    policy.for_key("a").execute_sync(lambda: None)
    state = policy._keys.get("a")
    assert state is not None
    breaker, pipeline = state.breaker, state.pipeline
    assert breaker in BREAKERS.items()
    assert pipeline in PIPELINES.items()
    policy.for_key("b").execute_sync(lambda: None)
    assert breaker not in BREAKERS.items()
    assert pipeline not in PIPELINES.items()
    named = [b for b in BREAKERS.items() if b.name == "ledger"]
    assert sum(b.stats.total_successes for b in named) == 2  # b's live breaker + the ledger's totals
    assert BREAKERS.get("ledger") is not None
    assert isinstance(BREAKERS.get("ledger"), CircuitBreaker)  # never the ledger's BreakerTotals


def test_the_manager_statistics_list_named_policies_and_count_them(manager: ResilienceManager) -> None:
    """named_policies has each handle's stats; executions totals include them.

    The by-name tables of policies and breakers are those run by config (README): a handle's
    breakers are its own, one per key, listed under named_policies only.
    """
    manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name="plain"))
    policy = manager.policy("named", BREAKER, max_keys=1)
    for key in range(3):
        policy.for_key(key).execute_sync(lambda: None)
    stats = manager.get_resilience_statistics()
    assert stats["executions"]["total"] == 4
    assert stats["named_policies"]["named"]["executions"]["total"] == 3
    assert stats["named_policies"]["named"]["evicted_keys"] == 2
    assert "named" not in stats["policies"]
    assert "named" not in stats["circuit_breakers"]
    assert "plain" in stats["policies"]


def test_keys_are_safe_from_many_threads(manager: ResilienceManager) -> None:
    """Threads cycling through more keys than the cap lose no call and leave no slot taken."""
    policy = manager.policy(
        "threads", ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=4)), max_keys=8
    )
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(300):
                policy.for_key((worker * 7 + n) % 40).execute_sync(lambda: None)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = policy.get_stats()
    assert stats["executions"]["total"] == 1800
    assert stats["bulkhead"]["total"] == stats["bulkhead"]["completed"] == 1800
    assert stats["bulkhead"]["active"] == 0
    assert stats["keys"] <= 8


def test_memory_stays_flat_while_many_keys_cycle(manager: ResilienceManager) -> None:
    """Cycling 10x the cap of keys keeps the kept keys at the cap and frees the evicted ones."""
    policy = manager.policy("cycle", BREAKER, max_keys=100)

    def cycle(start: int, count: int) -> None:
        for key in range(start, start + count):
            policy.for_key(key).execute_sync(lambda: None)

    cycle(0, 300)  # warm up: caches, interned attribute dicts, the cap reached
    gc.collect()
    tracemalloc.start()
    try:
        cycle(300, 500)
        gc.collect()
        first, _ = tracemalloc.get_traced_memory()
        cycle(800, 2000)
        gc.collect()
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert policy.keys == 100
    assert policy.get_stats()["executions"]["total"] == 2800
    # 4x as many keys evicted again: a leak of even 200 bytes a key would add 300 kB.
    assert second - first < 150_000, (first, second)


def test_a_keys_own_rejections_name_the_key(manager: ResilienceManager, clock: FakeClock) -> None:
    """A log or a caller tells which key rejected: the breaker, bulkhead and rate limiter name it."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=3),
    )
    hosts = manager.policy("hosts", config)
    host = hosts.for_key("api.example.com")
    fail_twice(host)
    with pytest.raises(CircuitOpenError) as opened:
        host.execute_sync(lambda: "never")
    assert opened.value.key == "api.example.com"
    assert (opened.value.name, opened.value.state) == ("hosts", "open")
    assert str(opened.value).startswith("circuit breaker 'hosts' (key 'api.example.com') is open; next probe")

    clock.advance(1.0)  # a full bucket again for the next keys
    other = hosts.for_key(42)

    def nested() -> None:
        with pytest.raises(BulkheadFullError) as full:
            other.execute_sync(lambda: "second")
        assert full.value.key == "42"
        assert str(full.value) == "bulkhead 'hosts' (key '42') is full (limits: 1 running, 0 waiting)"

    other.execute_sync(nested)
    other.execute_sync(lambda: None)
    with pytest.raises(RateLimitedError) as limited:
        other.execute_sync(lambda: "no permit left")
    assert limited.value.key == "42"
    assert str(limited.value).startswith("rate limiter 'hosts' (key '42') has no permit free")


def test_a_keys_own_bulkhead_and_limiter_used_directly_name_the_key_in_their_rejections(
    manager: ResilienceManager,
) -> None:
    """A block or call run with a key's bulkhead or limiter itself is the key's: its rejection names it too."""
    config = ResilienceConfig(
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1),
    )
    tenant = manager.policy("direct", config).for_key("t-1")
    bulkhead, limiter = tenant.bulkhead, tenant.rate_limiter
    assert bulkhead is not None
    assert limiter is not None
    with bulkhead.slot(), pytest.raises(BulkheadFullError) as full, bulkhead.slot():
        pass
    assert full.value.key == "t-1"
    assert str(full.value) == "bulkhead 'direct' (key 't-1') is full (limits: 1 running, 0 waiting)"
    limiter.call_sync(lambda: None)
    with pytest.raises(RateLimitedError) as limited:
        limiter.call_sync(lambda: None)
    assert limited.value.key == "t-1"
    assert str(limited.value).startswith("rate limiter 'direct' (key 't-1') has no permit free")


def test_a_long_keys_rejections_cut_it_in_their_messages(manager: ResilienceManager) -> None:
    """A 5,000-character key is shown as its ``resilience.key`` (cut, with a digest), read whole in ``key``."""
    config = ResilienceConfig(
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1),
    )
    key = "/tenants/" + "x" * 4_991
    tenant = manager.policy("long", config).for_key(key)
    bulkhead, limiter = tenant.bulkhead, tenant.rate_limiter
    assert bulkhead is not None
    assert limiter is not None
    shown = repr(key_attribute(key))
    with bulkhead.slot(), pytest.raises(BulkheadFullError) as full, bulkhead.slot():
        pass
    assert full.value.key == key
    assert str(full.value) == f"bulkhead 'long' (key {shown}) is full (limits: 1 running, 0 waiting)"
    limiter.call_sync(lambda: None)
    with pytest.raises(RateLimitedError) as limited:
        limiter.call_sync(lambda: None)
    assert limited.value.key == key
    assert str(limited.value).startswith(f"rate limiter 'long' (key {shown}) has no permit free")
    assert len(str(limited.value)) < MAX_ATTRIBUTE_LENGTH + 100


async def test_a_keys_bulkhead_timeout_names_the_key(manager: ResilienceManager) -> None:
    """A caller that waited for a key's slot in vain is told which key: ``BulkheadTimeoutError.key``.

    A queue's wait is timed in real time (an async deadline is): a short one.
    """
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    tenant = manager.policy("tenants", config).for_key("t-1")
    release = asyncio.Event()
    holder = asyncio.create_task(tenant.execute(release.wait))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(tenant.execute(asyncio.sleep, 0))
    with pytest.raises(BulkheadTimeoutError) as timed_out:
        await asyncio.wait_for(waiter, timeout=10.0)
    release.set()
    await holder
    assert (timed_out.value.name, timed_out.value.key) == ("tenants", "t-1")
    assert str(timed_out.value).startswith("bulkhead 'tenants' (key 't-1'): no slot became free within 0.05")


def test_unkeyed_rejections_of_a_keyed_policy_name_no_key(manager: ResilienceManager) -> None:
    hosts = manager.policy("plain", BREAKER)
    fail_twice(hosts)
    with pytest.raises(CircuitOpenError) as opened:
        hosts.execute_sync(lambda: "never")
    assert opened.value.key is None
    assert opened.value.args == ("plain", "open", 30.0)
    assert str(opened.value) == "circuit breaker 'plain' is open; next probe in 30.000 s"


def test_a_reloaded_keys_breaker_still_names_its_key(manager: ResilienceManager) -> None:
    hosts = manager.policy("reloaded", BREAKER)
    fail_twice(hosts.for_key("h1"))
    manager.reconfigure(
        "reloaded", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=30.0))
    )
    with pytest.raises(CircuitOpenError) as opened:
        hosts.for_key("h1").execute_sync(lambda: "never")
    assert opened.value.key == "h1"
    assert "(key 'h1')" in str(opened.value)


@pytest.mark.parametrize("named", [False, True], ids=["rule-names-none", "rule-names-the-policy"])
async def test_isolate_reaches_the_breaker_of_the_failing_key(
    manager: ResilienceManager, driver: str, named: bool
) -> None:
    """An ISOLATE rule naming a keyed policy's breaker opens the failing key's own, as one naming none does."""
    manager.recovery_system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(
            RecoveryStrategy.ISOLATE, isolate_breaker="isolated" if named else None, isolate_duration=20.0
        ),
    )
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100), enable_recovery=True
    )
    policy = manager.policy("isolated", config)
    host = policy.for_key("host-a")
    with pytest.raises(ConnectionError):
        if driver == "async":

            async def fail() -> None:
                raise ConnectionError("down")

            await host.execute(fail)
        else:
            host.execute_sync(boom)
    assert host.circuit_breaker.state is CircuitState.OPEN
    assert host.circuit_breaker.get_stats()["retry_after"] == 20.0
    assert policy.for_key("host-b").circuit_breaker.state is CircuitState.CLOSED
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["isolate"] == {"attempts": 1, "successful": 1, "failed": 0}


def test_isolate_of_a_key_an_operator_disabled_fails_and_leaves_it(manager: ResilienceManager) -> None:
    """ISOLATE on a key whose breaker an operator disabled opens nothing: a failed attempt, the key served."""
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_duration=20.0)
    )
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100), enable_recovery=True
    )
    host = manager.policy("isolated-off", config).for_key("host-a")
    host.circuit_breaker.disable()
    with pytest.raises(ConnectionError):
        host.execute_sync(boom)
    assert host.circuit_breaker.state is CircuitState.DISABLED
    assert host.execute_sync(lambda: "served") == "served"
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}


def test_a_keys_half_open_rejection_names_the_key(manager: ResilienceManager, clock: FakeClock) -> None:
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0, half_open_max_calls=1)
    )
    host = manager.policy("probed", config).for_key("h2")
    fail_twice(host)
    clock.advance(31.0)
    caught: list[CircuitOpenError] = []

    def probe() -> None:
        with pytest.raises(CircuitOpenError) as rejected:
            host.execute_sync(lambda: "never")  # the only probe permit is this call's
        caught.append(rejected.value)

    host.execute_sync(probe)
    assert (caught[0].state, caught[0].key) == ("half_open", "h2")
    assert str(caught[0]).startswith("circuit breaker 'probed' (key 'h2') is half-open")


def test_keys_with_one_text_are_one_key(manager: ResilienceManager) -> None:
    """A key is its text, ``str(key)``: ``1`` and ``"1"`` share a breaker, ``1`` and ``1.0`` do not.

    Everything a key is written as (its ``resilience.key``, a rejection's ``key``, its cached
    fallback value, its state in a shared store) is its text: two keys with one text kept two
    breakers that an operator saw as one series.
    """
    hosts = manager.policy("texts", BREAKER)
    fail_twice(hosts.for_key(1))
    with pytest.raises(CircuitOpenError) as opened:
        hosts.for_key("1").execute_sync(lambda: "never")
    assert opened.value.key == "1"
    assert hosts.for_key("1").circuit_breaker is hosts.for_key(1).circuit_breaker
    assert hosts.for_key(1.0).execute_sync(lambda: "its own") == "its own"  # "1.0": another key
    hosts.for_key(True).execute_sync(lambda: None)
    assert hosts.for_key("True").circuit_breaker is hosts.for_key(True).circuit_breaker
    assert hosts.keys == 3  # "1", "1.0", "True"
    assert hosts.for_key(1).key == 1  # the view keeps the key it was given
    stats = hosts.get_stats()
    assert (stats["circuit_breaker"]["open_keys"], stats["executions"]["total"]) == (1, 5)


def test_a_key_whose_bucket_is_not_full_outlives_churn_through_other_keys(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """A key is not evicted (and made again with a full bucket) while idle keys with a full one can go.

    Churn through more keys than ``max_keys`` evicted the oldest idle key whatever its bucket
    held, so a key that had spent its burst came back with a full one: over its rate.
    """
    config = ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=5))
    policy = manager.policy("churned-limits", config, max_keys=1, idle_ttl=None)
    spender = policy.for_key("spender")
    for _ in range(5):
        spender.execute_sync(lambda: None)
    with pytest.raises(RateLimitedError):
        spender.execute_sync(lambda: None)
    for other in ("b", "c"):
        policy.for_key(other).execute_sync(lambda: None)
        clock.advance(1.0)  # the other key's bucket is full again; the spender's holds 1, then 2
    admitted = 0
    for _ in range(5):
        try:
            spender.execute_sync(lambda: None)
        except RateLimitedError:
            break
        admitted += 1
    assert admitted == 2  # what 2 s give back at 1/s, not a new burst of 5
    stats = policy.get_stats()
    assert stats["evicted_keys"] == 2  # "b" and "c", whose buckets were full again
    assert stats["executions"]["total"] == 11


def test_a_key_whose_breaker_holds_failures_outlives_churn_through_other_keys(
    manager: ResilienceManager,
) -> None:
    """A key's failures short of the threshold are not lost to churn through keys holding none."""
    policy = manager.policy("churned-failures", BREAKER, max_keys=1, idle_ttl=None)
    with pytest.raises(ConnectionError):
        policy.for_key("flaky").execute_sync(boom)
    for other in ("b", "c", "d"):
        policy.for_key(other).execute_sync(lambda: None)
    with pytest.raises(ConnectionError):
        policy.for_key("flaky").execute_sync(boom)
    assert policy.for_key("flaky").circuit_breaker.state is CircuitState.OPEN  # 2 failures: threshold
    assert policy.get_stats()["evicted_keys"] == 3  # "b", "c" and "d", which held no failure


@pytest.mark.parametrize("window", [CountWindow(10), TimeWindow(60.0)], ids=["count", "time"])
def test_a_key_whose_window_holds_slow_calls_outlives_churn_through_other_keys(
    manager: ResilienceManager, clock: FakeClock, window: CountWindow | TimeWindow
) -> None:
    """A key's slow calls short of the slow-call rate that opens are its count towards opening too."""
    breaker = CircuitBreakerConfig(
        sliding_window=window, minimum_calls=4, slow_call_duration=1.0, slow_call_rate_threshold=0.5
    )
    policy = manager.policy(
        "churned-slow", ResilienceConfig(circuit_breaker=breaker), max_keys=1, idle_ttl=None
    )

    def slow() -> None:
        clock.advance(2.0)

    for _ in range(3):
        policy.for_key("slow").execute_sync(slow)
    for other in ("b", "c", "d"):
        policy.for_key(other).execute_sync(lambda: None)
    policy.for_key("slow").execute_sync(slow)
    assert policy.for_key("slow").circuit_breaker.state is CircuitState.OPEN  # 4 slow calls of 4
    assert policy.get_stats()["evicted_keys"] == 3  # "b", "c" and "d", which held no slow call


def test_keys_that_all_hold_state_stay_bounded_oldest_evicted_first(manager: ResilienceManager) -> None:
    """When every idle key holds state, the oldest go past max_keys (and the one just made): memory stays bounded."""
    policy = manager.policy("all-holding", BREAKER, max_keys=2, idle_ttl=None)
    for key in range(10):
        with pytest.raises(ConnectionError):
            policy.for_key(key).execute_sync(boom)
    assert [key for key, _ in policy._keys.items()] == ["7", "8", "9"]
    stats = policy.get_stats()
    assert (stats["keys"], stats["evicted_keys"]) == (3, 7)
    assert stats["circuit_breaker"]["total_failures"] == 10


def test_protect_refuses_a_sync_function_under_hedging_as_resilient_does(manager: ResilienceManager) -> None:
    """A handle's (or key view's) protect refused nothing, and every call of the sync function failed."""
    hedged = ResilienceConfig(hedging=HedgingConfig(delay=0.1))
    policy = manager.policy("hedged-protect", hedged)

    def sync_call() -> int:
        return 1

    async def async_call() -> int:
        return 1

    with pytest.raises(TypeError, match=r"PolicyHandle\.protect: policy 'hedged-protect' hedges"):
        policy.protect(sync_call)
    with pytest.raises(TypeError, match=r"KeyedPolicyView\.protect: policy 'hedged-protect' hedges"):
        policy.for_key("k").protect(sync_call)
    with pytest.raises(TypeError, match=r"resilient: policy 'hedged-protect' hedges"):
        resilient(dataclasses.replace(hedged, name="hedged-protect"), manager=manager)(sync_call)
    assert policy.protect(async_call) is not None
    assert policy.get_stats()["executions"]["total"] == 0


def test_the_keys_count_counts_the_idle_keys_holding_state_a_trim_keeps(manager: ResilienceManager) -> None:
    """The ``resilience.policy.keys`` gauge reads what an eviction now would keep, keys holding state included.

    It counted the idle keys past ``max_keys`` as gone although those holding state are kept (up
    to ``max_keys`` of them) beside the busy ones: the gauge read fewer keys than the policy kept.
    """
    policy = manager.policy("gauge-holding", BREAKER, max_keys=2, idle_ttl=None)
    for key in ("open-1", "open-2"):
        fail_twice(policy.for_key(key))  # OPEN: not idle
    for key in ("held-1", "held-2", "held-3"):
        with pytest.raises(ConnectionError):
            policy.for_key(key).execute_sync(boom)  # one failure: idle, holding state
    policy.for_key("fresh").execute_sync(lambda: None)  # the youngest: never evicted
    assert len(policy._keys) == 5  # "held-1" went: three held state, one more than max_keys
    assert policy.keys == 5  # the 2 OPEN, "held-2" and "held-3" holding state, and "fresh"
    assert policy._keys.trim() == 0


def test_a_handle_gives_its_unkeyed_breaker_bulkhead_and_limiter_to_operators() -> None:
    """The patterns of the calls made on the handle itself, as a key's view gives the key's."""
    manager = ResilienceManager()
    handle = manager.policy(
        "unkeyed-operators",
        ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(),
            bulkhead_config=BulkheadConfig(max_concurrent=3),
            rate_limiter=RateLimiterConfig(rate=10.0),
        ),
    )
    breaker = handle.circuit_breaker
    assert breaker is not None
    assert breaker is not handle.for_key("a").circuit_breaker
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        handle.execute_sync(lambda: "ok")
    assert handle.for_key("a").execute_sync(lambda: "ok") == "ok"  # a key has its own
    breaker.reset()
    assert handle.execute_sync(lambda: "ok") == "ok"
    assert handle.bulkhead is not None
    assert handle.bulkhead.get_stats()["max_concurrent"] == 3
    assert handle.rate_limiter is not None
    assert manager.policy("plain-unkeyed", ResilienceConfig()).circuit_breaker is None


OPERATOR_ACTIONS = ("force_open", "force_closed", "reset", "disable", "metrics_only")


@pytest.mark.parametrize("action", OPERATOR_ACTIONS)
def test_a_breaker_kept_past_its_keys_eviction_refuses_to_be_set(
    manager: ResilienceManager, action: str
) -> None:
    """An evicted key's breaker, kept by a caller, is no longer the key's: setting it raises, naming
    the key, and changes nothing (the key's calls run on the key's breaker as it is)."""
    policy = manager.policy(f"stale-{action}", BREAKER, max_keys=1)
    kept = policy.for_key("eu-1").circuit_breaker
    assert kept is not None
    policy.for_key("us-1").execute_sync(lambda: None)  # "eu-1" was idle: evicted
    assert policy._keys.get("eu-1") is None
    with pytest.raises(RuntimeError, match=r"circuit breaker 'stale-.*' \(key 'eu-1'\).*evicted") as raised:
        getattr(kept, action)()
    assert "for_key('eu-1').circuit_breaker" in str(raised.value)
    assert kept.state is CircuitState.CLOSED  # left as it was
    assert policy.for_key("eu-1").execute_sync(lambda: "runs") == "runs"
    live = policy.for_key("eu-1").circuit_breaker
    assert live is not None
    assert live is not kept
    getattr(live, action)()  # the key's own breaker takes it
    assert live.state is not CircuitState.CLOSED or action in {"force_closed", "reset"}


def test_a_breaker_kept_past_its_keys_idle_ttl_refuses_to_be_forced_open(
    manager: ResilienceManager, clock: FakeClock
) -> None:
    """An operator who opens a key's breaker taken before the key expired is told, not ignored."""
    policy = manager.policy("stale-ttl", BREAKER, idle_ttl=60.0)
    kept = policy.for_key("eu-1").circuit_breaker
    assert kept is not None
    clock.advance(61.0)
    assert policy.get_stats()["evicted_keys"] == 1
    with pytest.raises(RuntimeError, match="idle_ttl"):
        kept.force_open()
    assert policy.for_key("eu-1").execute_sync(lambda: "runs") == "runs"


def test_a_live_keys_breaker_kept_by_a_caller_stays_the_keys(manager: ResilienceManager) -> None:
    """While its key is kept, a breaker taken from the view is the key's: forcing it open keeps the
    key (OPEN is not idle) and rejects the key's calls."""
    policy = manager.policy("kept-breaker", BREAKER, max_keys=1)
    kept = policy.for_key("eu-1").circuit_breaker
    assert kept is not None
    kept.force_open()
    policy.for_key("us-1").execute_sync(lambda: None)
    with pytest.raises(CircuitOpenError):
        policy.for_key("eu-1").execute_sync(lambda: "never")
    kept.reset()
    assert policy.for_key("eu-1").execute_sync(lambda: "runs") == "runs"
    assert policy.for_key("eu-1").circuit_breaker is kept


@contextlib.contextmanager
def _churning(policy: PolicyHandle) -> Iterator[None]:
    """Two threads calling through other keys of ``policy`` (max_keys=1) while the block runs: they evict."""
    stop = threading.Event()

    def churn() -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            policy.for_key(f"other-{turn % 3}").execute_sync(lambda: None)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_forcing_a_kept_breaker_while_other_threads_evict_its_key_is_never_lost(
    manager: ResilienceManager,
) -> None:
    """A force races the eviction of its key: it raises (the key was evicted), or the key keeps
    the breaker it forced, OPEN: never a forced breaker the key's calls no longer use."""
    policy = manager.policy("stale-race", BREAKER, max_keys=1)
    refused = forced = 0
    with _churning(policy):
        for turn in range(300):
            key = f"target-{turn}"
            kept = policy.for_key(key).circuit_breaker
            assert kept is not None
            if turn % 2:
                time.sleep(0.001)  # the other threads' calls may evict the key meanwhile
            try:
                kept.force_open()
            except RuntimeError:
                refused += 1
                continue
            forced += 1
            assert policy.for_key(key).circuit_breaker is kept
            assert kept.state is CircuitState.OPEN
            kept.reset()
    assert refused + forced == 300


@pytest.mark.parametrize("change", ["renamed", "dropped"])
def test_a_breaker_a_reload_replaced_refuses_to_be_set(manager: ResilienceManager, change: str) -> None:
    """A breaker a reload renamed or dropped, kept by a caller (a key's or the unkeyed calls'), is
    no longer in use: setting it raises rather than set a breaker no call asks."""
    policy = manager.policy(f"replaced-{change}", BREAKER)
    keyed, unkeyed = policy.for_key("eu-1").circuit_breaker, policy.circuit_breaker
    assert keyed is not None
    assert unkeyed is not None
    if change == "renamed":
        manager.reconfigure(policy.name, dataclasses.replace(BREAKER, circuit_breaker_name="renamed"))
    else:
        manager.reconfigure(policy.name, ResilienceConfig())
    with pytest.raises(RuntimeError, match=r"\(key 'eu-1'\).*a reload of policy .* replaced it") as raised:
        keyed.force_open()
    assert "for_key('eu-1').circuit_breaker" in str(raised.value)
    with pytest.raises(RuntimeError, match=r"unkeyed calls.*a reload of policy .* replaced it"):
        unkeyed.disable()
    assert keyed.state is CircuitState.CLOSED
    assert unkeyed.state is CircuitState.CLOSED
    assert policy.for_key("eu-1").execute_sync(lambda: "runs") == "runs"
    assert policy.execute_sync(lambda: "runs") == "runs"


@pytest.mark.parametrize("change", ["renamed", "dropped"])
def test_an_isolation_of_a_breaker_a_reload_replaced_isolates_nothing(
    manager: ResilienceManager, change: str
) -> None:
    """ISOLATE on a breaker a reload renamed or dropped (a resolver's kept breaker, or a call's own
    in flight at the reload) opens nothing: ``False``, a failed isolation, and the breaker reads
    as it last was, never moving again."""
    policy = manager.policy(f"isolated-{change}", BREAKER)
    keyed, unkeyed = policy.for_key("eu-1").circuit_breaker, policy.circuit_breaker
    assert keyed is not None
    assert unkeyed is not None
    changes: list[object] = []
    keyed.on_state_change(changes.append)
    unkeyed.on_state_change(changes.append)
    if change == "renamed":
        manager.reconfigure(policy.name, dataclasses.replace(BREAKER, circuit_breaker_name="renamed"))
    else:
        manager.reconfigure(policy.name, ResilienceConfig())
    for kept in (keyed, unkeyed):
        assert kept.force_open(5.0, reason="isolated") is False
        assert kept.state is CircuitState.CLOSED
        assert kept.get_stats()["times_opened"] == 0
    assert changes == []


def test_a_breaker_a_reload_kept_stays_the_one_in_use(manager: ResilienceManager) -> None:
    """A reload that keeps the breaker (its name, a new threshold) reconfigures it in place: a
    caller's breaker is still the one the calls use."""
    policy = manager.policy("kept-by-reload", BREAKER)
    keyed, unkeyed = policy.for_key("eu-1").circuit_breaker, policy.circuit_breaker
    assert keyed is not None
    assert unkeyed is not None
    retuned = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=30.0))
    manager.reconfigure(policy.name, retuned)
    keyed.force_open()
    unkeyed.force_open()
    with pytest.raises(CircuitOpenError):
        policy.for_key("eu-1").execute_sync(lambda: "never")
    with pytest.raises(CircuitOpenError):
        policy.execute_sync(lambda: "never")


@pytest.mark.parametrize("evicted_by", ["max_keys", "idle_ttl"])
def test_a_key_whose_bulkhead_slot_is_held_outside_a_call_is_never_evicted(
    manager: ResilienceManager, clock: FakeClock, evicted_by: str
) -> None:
    """A slot taken from the key's bulkhead (``view.bulkhead.slot()``) keeps the key, as a call does:
    a new state for the key would admit a call over the limit, and lose the slot's outcome."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    policy = manager.policy(f"held-slot-{evicted_by}", config, max_keys=1, idle_ttl=60.0)
    bulkhead = policy.for_key("tenant").bulkhead
    assert bulkhead is not None
    with bulkhead.slot():
        if evicted_by == "idle_ttl":
            clock.advance(61.0)
        policy.for_key("other").execute_sync(lambda: None)
        assert policy.get_stats()["evicted_keys"] == 0
        assert policy.for_key("tenant").bulkhead is bulkhead
        with pytest.raises(BulkheadFullError):
            policy.for_key("tenant").execute_sync(lambda: "over the limit")
    policy.for_key("third").execute_sync(lambda: None)  # the slot is free: the key may go
    stats = policy.get_stats()
    assert stats["evicted_keys"] >= 1
    assert policy._keys.get("tenant") is None
    assert stats["bulkhead"]["completed"] == 3  # the slot's, "other"'s and "third"'s
    assert stats["bulkhead"]["rejected"] == 1


def test_a_slot_taken_from_a_key_bulkhead_its_key_lost_meanwhile_is_refused(
    manager: ResilienceManager,
) -> None:
    """A thread reads ``view.bulkhead`` and, before its ``slot()`` takes a slot, another thread's new
    key evicts the key: the slot is refused (its bulkhead is no longer the key's), so no call runs
    beside a call of the key's new bulkhead over its limit, and no block is counted by a folded one."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    policy = manager.policy("slot-after-eviction", config, max_keys=1, idle_ttl=None)
    read, evicted = threading.Event(), threading.Event()
    inside: list[str] = []
    peak: list[int] = []
    outcome: list[object] = []

    def in_slot() -> None:
        bulkhead = policy.for_key("tenant").bulkhead  # what `with view.bulkhead.slot():` reads first
        assert bulkhead is not None
        read.set()
        evicted.wait(10)
        try:
            with bulkhead.slot():
                inside.append("block")
                peak.append(len(inside))
                policy.for_key("tenant").execute_sync(lambda: peak.append(len(inside) + 1))
                inside.remove("block")
        except RuntimeError as error:
            outcome.append(error)

    thread = threading.Thread(target=in_slot)
    thread.start()
    read.wait(10)
    policy.for_key("other").execute_sync(lambda: None)  # evicts "tenant" (idle: nothing taken yet)
    evicted.set()
    thread.join(10)
    assert not thread.is_alive()
    assert max(peak, default=0) <= 1, "a block and a call ran at once in a key limited to one"
    assert len(outcome) == 1
    assert "(key 'tenant')" in str(outcome[0])
    assert "for_key('tenant').bulkhead" in str(outcome[0])
    stats = policy.get_stats()["bulkhead"]
    assert stats is not None
    assert stats["total"] == stats["completed"] == 1  # "other"'s call; the refused block took nothing


async def test_an_async_slot_of_a_key_bulkhead_its_key_lost_meanwhile_is_refused(
    manager: ResilienceManager,
) -> None:
    """As in a thread: ``async with`` a bulkhead read before its key was evicted takes no slot."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    policy = manager.policy("async-slot-after-eviction", config, max_keys=1, idle_ttl=None)
    bulkhead = policy.for_key("tenant").bulkhead
    assert bulkhead is not None
    await policy.for_key("other").execute(asyncio.sleep, 0)  # evicts "tenant"
    with pytest.raises(RuntimeError, match=r"bulkhead .*\(key 'tenant'\).*evicted the key"):
        async with bulkhead.slot():
            pass
    assert bulkhead.get_stats()["total"] == 0


@pytest.mark.parametrize("verb", ["try_acquire", "guard", "call_sync"])
def test_a_permit_of_a_key_limiter_its_key_lost_meanwhile_is_refused(
    manager: ResilienceManager, verb: str
) -> None:
    """A limiter read from ``view.rate_limiter`` before its key was evicted (a thread that read it
    while another thread's new key evicted the key) gives no permit: the key's calls take theirs
    from the key's new, full bucket, so a permit of the old one would be one over the rate, counted
    by a limiter folded into the policy's totals already."""
    config = ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=1))
    policy = manager.policy(f"permit-after-eviction-{verb}", config, max_keys=1, idle_ttl=None)
    limiter = policy.for_key("tenant").rate_limiter
    assert limiter is not None
    policy.for_key("other").execute_sync(lambda: None)  # evicts "tenant" (its bucket full)
    assert policy.for_key("tenant").execute_sync(lambda: "the key's permit") == "the key's permit"
    with pytest.raises(RuntimeError, match=r"rate limiter .*\(key 'tenant'\).*rate_limiter"):
        if verb == "try_acquire":
            limiter.try_acquire()
        elif verb == "guard":
            with limiter.guard():
                pass
        else:
            limiter.call_sync(lambda: None)
    stats = policy.get_stats()["rate_limiter"]
    assert stats is not None
    assert stats["admitted"] == 2  # "other"'s call and the key's new one's; the refused asks took none


def test_a_bulkhead_and_a_limiter_a_reload_replaced_refuse_new_blocks(manager: ResilienceManager) -> None:
    """A bulkhead a reload renamed and a limiter it remade (another algorithm), kept by a caller,
    take no slot and give no permit: begun after the reload, the block would be counted by one
    folded into the policy's totals already, where no count of the policy shows it."""
    config = ResilienceConfig(
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1),
    )
    policy = manager.policy("replaced-blocks", config)
    view = policy.for_key("tenant")
    bulkhead, limiter = view.bulkhead, view.rate_limiter
    assert bulkhead is not None
    assert limiter is not None
    reloaded = dataclasses.replace(
        config,
        bulkhead_name="renamed",
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1, algorithm="sliding_window"),
    )
    manager.reconfigure(policy.name, reloaded)
    with pytest.raises(
        RuntimeError, match=r"a reload of policy .* replaced it.*for_key\('tenant'\)\.bulkhead"
    ):
        with bulkhead.slot():
            pass
    with pytest.raises(RuntimeError, match=r"a reload of policy .* replaced it.*rate_limiter"):
        limiter.try_acquire()
    assert view.execute_sync(lambda: "the key's call") == "the key's call"
    stats = policy.get_stats()
    assert stats["bulkhead"] is not None
    assert stats["rate_limiter"] is not None
    assert stats["bulkhead"]["total"] == 1
    assert stats["rate_limiter"]["admitted"] == 1


async def test_a_key_whose_rate_limiter_has_a_waiter_outside_a_call_is_never_evicted() -> None:
    """A caller waiting on the key's limiter (``view.rate_limiter.guard()``) keeps the key, as a call
    does: a new limiter for the key would hand out a full bucket at once, over the rate, and the
    waiter's permit would be counted by one no longer the key's."""
    manager = ResilienceManager()  # the system clock: the waiter waits (100 s) until cancelled
    config = ResilienceConfig(rate_limiter=RateLimiterConfig(rate=0.01, burst=1, max_wait=1000.0))
    policy = manager.policy("waited-on", config, idle_ttl=0.001)
    view = policy.for_key("tenant")
    limiter = view.rate_limiter
    assert limiter is not None
    await view.execute(asyncio.sleep, 0)  # the burst spent

    async def wait_for_a_permit() -> None:
        async with limiter.guard():
            pass

    waiter = asyncio.create_task(wait_for_a_permit())
    while not limiter.waiting:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # unused past idle_ttl
    try:
        assert policy.get_stats()["evicted_keys"] == 0
        assert view.rate_limiter is limiter  # a new one would have a full bucket
    finally:
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    await asyncio.sleep(0.01)
    stats = policy.get_stats()
    assert stats["evicted_keys"] == 1  # nobody waits now
    assert stats["rate_limiter"]["cancelled"] == 1


def test_the_unkeyed_breaker_of_a_dropped_manager_is_still_set_by_its_holder() -> None:
    """No policy is left to use it, and nothing to tell: an operator's tear-down resets it as before."""
    manager = ResilienceManager()
    breaker = manager.policy("dropped-with-its-manager", BREAKER).circuit_breaker
    assert breaker is not None
    del manager
    gc.collect()
    breaker.force_open()
    assert breaker.state is CircuitState.OPEN
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED


ONE_FAILURE_OPENS = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0))


def _evict_others(policy: PolicyHandle) -> None:
    """Run calls of two other keys: past ``max_keys=1`` every idle key but the last goes."""
    for other in ("other-1", "other-2"):
        policy.for_key(other).execute_sync(lambda: None)


@pytest.mark.parametrize("way", ["guard", "call_sync", "protect"])
def test_a_block_run_with_a_keys_breaker_holds_the_key(manager: ResilienceManager, way: str) -> None:
    """A block (or call) run with ``for_key(k).circuit_breaker`` is a call of the key: the key is
    not evicted while it runs, so its outcome is the key's (failure_threshold=1: OPEN after it)."""
    policy = manager.policy(f"block-{way}", ONE_FAILURE_OPENS, max_keys=1)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None

    def failing_block() -> None:
        _evict_others(policy)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        if way == "guard":
            with breaker.guard():
                failing_block()
        elif way == "call_sync":
            breaker.call_sync(failing_block)
        else:
            breaker.protect(failing_block)()
    assert policy.for_key("a").circuit_breaker is breaker
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats.total_failures == 1


@pytest.mark.parametrize("way", ["guard", "call", "protect"])
async def test_an_async_block_run_with_a_keys_breaker_holds_the_key(
    manager: ResilienceManager, way: str
) -> None:
    """As in threads: the key is held from the block's entry to its exit, across its awaits."""
    policy = manager.policy(f"async-block-{way}", ONE_FAILURE_OPENS, max_keys=1)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None

    async def failing_block() -> None:
        await asyncio.sleep(0)
        _evict_others(policy)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        if way == "guard":
            async with breaker.guard():
                await failing_block()
        elif way == "call":
            await breaker.call(failing_block)
        else:
            await breaker.protect(failing_block)()
    assert policy.for_key("a").circuit_breaker is breaker
    assert breaker.state is CircuitState.OPEN


def test_a_block_of_an_evicted_keys_breaker_is_refused_naming_the_view(manager: ResilienceManager) -> None:
    """The key evicted before the block: its old breaker would count the outcome where no call
    looks; the block is refused as an operator action is, before it runs."""
    policy = manager.policy("evicted-block", ONE_FAILURE_OPENS, max_keys=1)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    _evict_others(policy)
    ran: list[int] = []
    with pytest.raises(RuntimeError, match=r"handle\.for_key\('a'\)\.circuit_breaker"), breaker.guard():
        ran.append(1)
    with pytest.raises(RuntimeError, match="evicted the key"):
        breaker.call_sync(ran.append, 2)
    assert ran == []
    assert breaker.stats.total_requests == 0
    assert policy.for_key("a").circuit_breaker is not breaker


def test_a_block_of_a_keys_breaker_that_succeeds_lets_the_key_go_after_it(manager: ResilienceManager) -> None:
    """The hold ends with the block: an idle key with nothing to keep is evicted as before; a
    standalone breaker is not held by anyone."""
    policy = manager.policy("block-ends", ONE_FAILURE_OPENS, max_keys=1)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    guard = breaker.guard()
    for _ in range(2):  # one guard, block after block
        with guard:
            pass
    assert breaker.stats.total_successes == 2
    _evict_others(policy)
    assert policy._keys.get("a") is None
    assert type(CircuitBreaker("standalone-block")) is CircuitBreaker


def test_a_block_of_a_keys_breaker_a_reload_replaced_meanwhile_is_counted_in_the_policy(
    manager: ResilienceManager,
) -> None:
    """A reload that renames the breaker while a block runs with it folds it once the block ends:
    the block's failure is in the policy's totals, never counted after the fold and lost."""
    policy = manager.policy("reloaded-block", BREAKER)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    renamed = dataclasses.replace(BREAKER, circuit_breaker_name="reloaded-block-2")
    with pytest.raises(ConnectionError), breaker.guard():
        manager.reconfigure("reloaded-block", renamed)
        raise ConnectionError("down")
    assert policy.get_stats()["circuit_breaker"]["total_failures"] == 1
    with pytest.raises(RuntimeError, match="a reload of policy 'reloaded-block' replaced it"):
        breaker.call_sync(lambda: None)


def test_a_block_of_a_replaced_breaker_is_counted_though_a_call_of_the_key_ends_meanwhile(
    manager: ResilienceManager,
) -> None:
    """A call of the key that ends while the block still runs with the breaker a reload replaced
    does not fold that breaker under the block: the block's failure was counted after the fold
    and lost (``total_failures`` 0 where the block failed once)."""
    policy = manager.policy("reloaded-block-call", BREAKER)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    renamed = dataclasses.replace(BREAKER, circuit_breaker_name="reloaded-block-call-2")
    with pytest.raises(ConnectionError), breaker.guard():
        manager.reconfigure("reloaded-block-call", renamed)
        assert policy.for_key("a").execute_sync(lambda: "ok") == "ok"  # ends while the block runs
        raise ConnectionError("down")
    stats = policy.get_stats()["circuit_breaker"]
    assert stats is not None
    assert stats["total_failures"] == 1
    assert stats["total_successes"] == 1
    state = policy._keys.get("a")
    assert state is not None
    assert state.replaced == []  # folded once the block ended


async def test_a_cancelled_block_of_a_keys_breaker_lets_the_key_go(manager: ResilienceManager) -> None:
    """A block or call cancelled while it runs gives the key back (counted cancelled), as a call's end does."""
    policy = manager.policy("cancelled-block", ONE_FAILURE_OPENS, max_keys=1)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    entered = asyncio.Event()

    async def in_a_block() -> None:
        async with breaker.guard():
            entered.set()
            await asyncio.sleep(3600)

    async def in_a_call() -> None:
        entered.set()
        await asyncio.sleep(3600)

    for runs in (in_a_block(), breaker.call(in_a_call)):
        entered.clear()
        task = asyncio.ensure_future(runs)
        await entered.wait()
        state = policy._keys.get("a")
        assert state is not None
        assert state.running == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert state.running == 0
    assert breaker.stats.total_cancelled == 2
    _evict_others(policy)
    assert policy._keys.get("a") is None


@pytest.mark.parametrize("whose", ["standalone", "handle", "key"])
async def test_a_breaker_call_cancelled_before_it_starts_leaves_no_coroutine_unawaited(
    manager: ResilienceManager, whose: str
) -> None:
    """A policy's breaker's call, cancelled before its task ran or closed unawaited, is a standalone
    breaker's call: nothing runs, nothing is counted, and no coroutine is left never awaited."""
    policy = manager.policy(f"unstarted-{whose}", ONE_FAILURE_OPENS)
    breakers = {
        "standalone": CircuitBreaker(f"unstarted-{whose}-alone"),
        "handle": policy.circuit_breaker,
        "key": policy.for_key("a").circuit_breaker,
    }
    breaker = breakers[whose]
    assert breaker is not None
    ran: list[int] = []

    async def call() -> None:
        ran.append(1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task = asyncio.ensure_future(breaker.call(call))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        breaker.call(call).close()
        del task
        gc.collect()
    assert [str(warning.message) for warning in caught] == []
    assert ran == []
    assert breaker.stats.total_requests == 0
    state = policy._keys.get("a")
    assert state is None or state.running == 0


def test_blocks_of_keys_breakers_racing_evictions_are_counted_in_the_key_or_refused(
    manager: ResilienceManager,
) -> None:
    """Under other threads' churn through the keys, a failing block run with a key's breaker either
    is refused (the key went before it) or opens the breaker its key keeps: never one no call uses."""
    policy = manager.policy("block-race", ONE_FAILURE_OPENS, max_keys=1)
    refused = counted = 0
    with _churning(policy):
        for turn in range(200):
            key = f"target-{turn}"
            kept = policy.for_key(key).circuit_breaker
            assert kept is not None
            try:
                with kept.guard():
                    time.sleep(0.001 * (turn % 2))  # the other threads' calls run meanwhile
                    raise ConnectionError("down")
            except RuntimeError:
                refused += 1
                continue
            except ConnectionError:
                counted += 1
            assert policy.for_key(key).circuit_breaker is kept
            assert kept.state is CircuitState.OPEN
            kept.reset()
    assert refused + counted == 200


def test_a_subscription_on_a_keys_breaker_hears_it_until_the_key_is_evicted(
    manager: ResilienceManager,
) -> None:
    """``on_state_change`` and ``on_rejection`` on ``for_key(k).circuit_breaker`` hear what the
    key's calls through the policy do to it (an opening, a rejection naming the key, a reset);
    once the key is evicted its next calls use a new breaker, which they do not hear."""
    policy = manager.policy("subscribed", BREAKER, max_keys=1, idle_ttl=None)
    view = policy.for_key("eu-1")
    breaker = view.circuit_breaker
    assert breaker is not None
    changes: list[tuple[str, str]] = []
    rejections: list[CircuitOpenError] = []
    breaker.on_state_change(lambda change: changes.append((str(change.old), str(change.new))))
    breaker.on_rejection(rejections.append)
    fail_twice(view)
    with pytest.raises(CircuitOpenError):
        view.execute_sync(lambda: "never")
    assert changes == [("closed", "open")]
    assert [(error.name, error.key) for error in rejections] == [("subscribed", "eu-1")]
    breaker.reset()
    assert changes == [("closed", "open"), ("open", "closed")]
    policy.for_key("eu-2").execute_sync(lambda: None)  # evicts "eu-1", idle and closed
    assert policy.for_key("eu-1").circuit_breaker is not breaker
    fail_twice(policy.for_key("eu-1"))
    with pytest.raises(CircuitOpenError):
        policy.for_key("eu-1").execute_sync(lambda: "never")
    assert changes == [("closed", "open"), ("open", "closed")]
    assert len(rejections) == 1


_COPIES: dict[str, typing.Callable[[object], object]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda instance: pickle.loads(pickle.dumps(instance)),
}


@pytest.mark.parametrize("way", list(_COPIES))
@pytest.mark.parametrize("instance", ["circuit_breaker", "bulkhead", "rate_limiter"])
def test_a_policys_instance_refuses_to_be_copied_naming_the_one_in_use(
    manager: ResilienceManager, instance: str, way: str
) -> None:
    """A copy of a key's (or the unkeyed calls') breaker, bulkhead or limiter would run outside
    the hold: its calls went on after the key was evicted, beside the key's new instance (a
    shallow copy shares the evicted bulkhead's slots). It is refused, naming where the one in
    use is taken; an instance of no policy copies as before."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1000.0, burst=100),
    )
    policy = manager.policy(f"copied-{instance}-{way}", config, max_keys=1, idle_ttl=None)
    for owned, where in (
        (getattr(policy.for_key("tenant"), instance), "handle.for_key('tenant')"),
        (getattr(policy, instance), "handle"),
    ):
        with pytest.raises(TypeError, match=r"cannot be copied or pickled") as raised:
            _COPIES[way](owned)
        assert f"{where}.{instance}" in str(raised.value)
        assert policy.name in str(raised.value)
    alone = CircuitBreaker("alone")
    assert type(_COPIES[way](alone)) is CircuitBreaker


@pytest.mark.parametrize("instance", ["circuit_breaker", "bulkhead", "rate_limiter"])
def test_a_long_keys_instance_refused_a_copy_names_the_key_cut(
    manager: ResilienceManager, instance: str
) -> None:
    """A 5,000-character key is named in a copy's refusal as its ``resilience.key`` is: cut, bounded."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1000.0, burst=100),
    )
    key = "t" * 5_000
    owned = getattr(manager.policy(f"long-{instance}", config).for_key(key), instance)
    with pytest.raises(TypeError, match=r"cannot be copied or pickled") as raised:
        copy.copy(owned)
    shown = repr(key_attribute(key))
    assert f"(key {shown})" in str(raised.value)
    assert f"handle.for_key({shown}).{instance}" in str(raised.value)
    assert len(str(raised.value)) < 3 * MAX_ATTRIBUTE_LENGTH + 400


@pytest.mark.parametrize("instance", ["circuit_breaker", "bulkhead", "rate_limiter"])
async def test_the_base_verbs_of_an_evicted_keys_instance_are_refused(
    manager: ResilienceManager, instance: str
) -> None:
    """``run`` and ``run_sync``, the verbs every pattern has under its own names too, run within
    the key's hold as ``call``/``execute`` do: an evicted key's bulkhead gave a slot beside the
    key's new one (two calls at once in a key of ``max_concurrent=1``), its limiter a permit."""
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1),
    )
    policy = manager.policy(f"base-verbs-{instance}", config, max_keys=1, idle_ttl=None)
    held = getattr(policy.for_key("tenant"), instance)
    assert held is not None
    policy.for_key("other").execute_sync(lambda: None)  # evicts "tenant"
    ran: list[str] = []
    with pytest.raises(RuntimeError, match=r"evicted the key"):
        held.run_sync(lambda: ran.append("sync"))
    with pytest.raises(RuntimeError, match=r"evicted the key"):
        await held.run(asyncio.sleep, 0, "async")
    assert ran == []
    if instance == "bulkhead":
        assert held.get_stats()["total"] == 0
    if instance == "rate_limiter":
        assert held.get_stats()["admitted"] == 0


def test_a_held_call_of_a_key_in_use_makes_nothing_for_an_eviction(
    manager: ResilienceManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key's own instance used while its key is in use asks nothing of an eviction.

    Only a use that finds its key marked evicted asks the policy whether it keeps the key: the
    question (a ``functools.partial``) was made on every held call, the successful ones too.
    """
    policy = manager.policy("held-in-use", BREAKER)
    breaker = policy.for_key("k").circuit_breaker
    assert breaker is not None

    class _NoQuestion:
        @staticmethod
        def partial(*args: object, **kwargs: object) -> typing.NoReturn:
            raise AssertionError("the eviction's question was made for a key in use")

    monkeypatch.setattr("otel_resilience.manager.keyed.functools", _NoQuestion)
    assert breaker.call_sync(lambda: "ran") == "ran"
    with breaker.guard():
        pass


HELD_INSTANCES = ("circuit_breaker", "bulkhead", "rate_limiter")
ONE_OF_EACH = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0),
    bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
    rate_limiter=RateLimiterConfig(rate=1.0, burst=1),
)


def _own_pipeline(link: Step) -> Pipeline:
    """A pipeline of one's own around ``link`` (a key's instance's ``as_strategy()``)."""
    return PipelineBuilder(f"own-{link.kind}").add(link).build(register=False)


@pytest.mark.parametrize("instance", HELD_INSTANCES)
@pytest.mark.parametrize("eviction", ["max_keys", "idle_ttl"])
async def test_a_link_of_an_evicted_keys_instance_is_refused(
    manager: ResilienceManager, clock: FakeClock, instance: str, eviction: str
) -> None:
    """A link of a key's breaker, bulkhead or limiter (``as_strategy()``, in a pipeline of one's
    own) follows its instance's hold: kept past the key's eviction, it ran on the evicted state (a
    breaker the key's calls no longer see opened, a slot or permit taken beside the key's new
    one's); now it is refused, as a call of the instance itself is, before it takes anything."""
    policy = manager.policy(f"link-evicted-{instance}-{eviction}", ONE_OF_EACH, max_keys=1, idle_ttl=60.0)
    held = getattr(policy.for_key("tenant"), instance)
    own = _own_pipeline(held.as_strategy("own"))
    if eviction == "max_keys":
        policy.for_key("other").execute_sync(lambda: None)
    else:
        clock.advance(61.0)
        assert policy.get_stats()["evicted_keys"] == 1
    assert policy._keys.get("tenant") is None
    ran: list[str] = []
    with pytest.raises(
        RuntimeError, match=r"\(key 'tenant'\) is no longer in use: .*evicted the key"
    ) as raised:
        own.execute_sync(ran.append, "sync")
    assert f"for_key('tenant').{instance}" in str(raised.value)
    with pytest.raises(RuntimeError, match="evicted the key"):
        await own.execute(asyncio.sleep, 0)
    assert ran == []
    counted = {"circuit_breaker": "total_requests", "bulkhead": "total", "rate_limiter": "admitted"}
    assert held.get_stats()[counted[instance]] == 0
    live = getattr(policy.for_key("tenant"), instance)
    assert live is not held
    assert policy.for_key("tenant").execute_sync(lambda: "the key's") == "the key's"


def test_a_link_of_a_keys_breaker_holds_the_key_while_it_runs(manager: ResilienceManager) -> None:
    """An execution of a key's breaker's link is a call of the key: the key is not evicted while it
    runs (other keys' calls meanwhile evict nothing), and its failure opens the key's breaker."""
    policy = manager.policy("link-holds", ONE_FAILURE_OPENS, max_keys=1)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    own = _own_pipeline(breaker.as_strategy("own"))

    def fails_while_others_run() -> None:
        _evict_others(policy)
        assert policy._keys.get("a") is not None  # held by the execution
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        own.execute_sync(fails_while_others_run)
    assert policy.for_key("a").circuit_breaker is breaker
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError, match=r"\(key 'a'\)"):
        policy.for_key("a").execute_sync(lambda: None)


def test_a_link_of_a_breaker_a_reload_replaced_is_refused(manager: ResilienceManager) -> None:
    """A link of a breaker a reload renamed is refused, as the breaker's own calls are."""
    policy = manager.policy("link-reloaded", ONE_FAILURE_OPENS)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    own = _own_pipeline(breaker.as_strategy("own"))
    manager.reconfigure(policy.name, dataclasses.replace(ONE_FAILURE_OPENS, circuit_breaker_name="renamed"))
    with pytest.raises(RuntimeError, match="a reload of policy 'link-reloaded' replaced it"):
        own.execute_sync(boom)
    assert breaker.stats.total_requests == 0


def test_the_policys_own_links_are_not_held(manager: ResilienceManager) -> None:
    """The policy's pipelines link its keys' instances as they are: a call of the policy pays
    nothing for the hold of a link given out by ``as_strategy()``."""
    policy = manager.policy("own-links", ONE_OF_EACH)
    policy.for_key("a").execute_sync(lambda: None)
    policy.execute_sync(lambda: None)
    for state in (policy._keys.get("a"), policy._state()):
        assert state is not None
        for link in state.pipeline.strategies:
            assert type(link).execute is Step.execute
            assert type(link).execute_sync is Step.execute_sync


async def test_a_cancelled_execution_of_a_keys_bulkhead_link_lets_the_key_go(
    manager: ResilienceManager,
) -> None:
    """An async execution of a key's bulkhead's link holds the key (and its slot) while it runs;
    cancelled, it gives both back: the key, idle again, is evicted by the next new key."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    policy = manager.policy("link-cancelled", config, max_keys=1)
    bulkhead = policy.for_key("a").bulkhead
    assert bulkhead is not None
    own = _own_pipeline(bulkhead.as_strategy("own"))
    started, never = asyncio.Event(), asyncio.Event()

    async def runs() -> None:
        started.set()
        await never.wait()

    task = asyncio.create_task(own.execute(runs))
    await started.wait()
    _evict_others(policy)
    assert policy._keys.get("a") is not None  # held by the execution
    assert bulkhead.get_stats()["active"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.get_stats()["active"] == 0
    _evict_others(policy)
    assert policy._keys.get("a") is None
    with pytest.raises(RuntimeError, match="evicted the key"):
        await own.execute(asyncio.sleep, 0)


async def test_a_link_of_a_keys_breaker_follows_a_reload_that_keeps_the_breaker(
    manager: ResilienceManager,
) -> None:
    """A reload that keeps a key's breaker (reconfigured in place) retires its core: a link given out
    before the reload ran on the retired one for good, admitting calls while the breaker was forced
    OPEN, its failures judging nothing (3 at ``failure_threshold=1`` left it CLOSED). It runs on
    the breaker as it is now, as the breaker's own calls do."""
    policy = manager.policy("link-reload-kept", BREAKER)  # failure_threshold=2
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    own = _own_pipeline(breaker.as_strategy("own"))
    manager.reconfigure(policy.name, ONE_FAILURE_OPENS)  # the same name: the breaker is kept
    assert policy.for_key("a").circuit_breaker is breaker
    with pytest.raises(ConnectionError):
        own.execute_sync(boom)
    assert breaker.state is CircuitState.OPEN
    breaker.reset()
    breaker.force_open()
    with pytest.raises(CircuitOpenError, match=r"\(key 'a'\)"):
        own.execute_sync(lambda: None)
    with pytest.raises(CircuitOpenError):
        await own.execute(asyncio.sleep, 0)
    breaker.reset()
    assert own.execute_sync(lambda: "closed") == "closed"
    assert breaker.stats.total_successes == 1


def test_links_of_keys_breakers_racing_evictions_are_counted_in_the_key_or_refused(
    manager: ResilienceManager,
) -> None:
    """Under other threads' churn through the keys, a failing execution of a key's breaker's link
    either is refused (the key went before it) or opens the breaker its key keeps."""
    policy = manager.policy("link-race", ONE_FAILURE_OPENS, max_keys=1)
    refused = counted = 0
    with _churning(policy):
        for turn in range(200):
            key = f"target-{turn}"
            kept = policy.for_key(key).circuit_breaker
            assert kept is not None
            own = _own_pipeline(kept.as_strategy("own"))

            def fails(turn: int = turn) -> None:
                time.sleep(0.001 * (turn % 2))  # the other threads' calls run meanwhile
                raise ConnectionError("down")

            try:
                own.execute_sync(fails)
            except RuntimeError:
                refused += 1
                continue
            except ConnectionError:
                counted += 1
            assert policy.for_key(key).circuit_breaker is kept
            assert kept.state is CircuitState.OPEN
            kept.reset()
    assert refused + counted == 200


@pytest.mark.parametrize("timed_before", [False, True])
async def test_a_call_in_flight_through_a_link_of_a_keys_breaker_ends_across_a_reload_that_times_calls(
    manager: ResilienceManager, timed_before: bool
) -> None:
    """A call admitted by a link given out before a reload that keeps the breaker but adds (or drops)
    ``slow_call_duration`` ends with its own answer, counted: the link moved to the new core while
    it ran, and read the call's token by the new core's shape (a plain permit taken for a permit and
    its start time, or the reverse): the caller got a ``TypeError`` (an ``AttributeError``) for a
    call that succeeded."""
    timed = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            timeout=30.0, sliding_window=CountWindow(size=10), slow_call_duration=5.0
        )
    )
    before, after = (timed, BREAKER) if timed_before else (BREAKER, timed)
    policy = manager.policy("link-in-flight", before)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    own = _own_pipeline(breaker.as_strategy("own"))
    with pytest.raises(ConnectionError):  # a streak: the next call takes a permit of its own
        own.execute_sync(boom)
    started, release = asyncio.Event(), asyncio.Event()

    async def call() -> str:
        started.set()
        await release.wait()
        return "answer"

    task = asyncio.ensure_future(own.execute(call))
    await started.wait()
    manager.reconfigure(policy.name, after)  # the same name: the breaker is kept
    assert policy.for_key("a").circuit_breaker is breaker
    release.set()
    assert await task == "answer"
    assert breaker.state is CircuitState.CLOSED
    assert own.execute_sync(lambda: "next") == "next"


@pytest.mark.parametrize("timed_first", [False, True])
def test_a_call_ending_through_a_reshaped_link_as_another_thread_reloads_ends_with_its_answer(
    manager: ResilienceManager, timed_first: bool
) -> None:
    """A link reshaped by a reload (:class:`_ReshapedStep`) ends a call as another thread reloads
    the breaker again, turning slow-call timing back: the reload lands between the link reading
    the call's token and counting it (as a thread switch may put it; run there by a trace hook).
    The token was read by the shape of before and counted by the shape of after: a ``TypeError``
    (an ``AttributeError``) for a call that succeeded."""
    timed = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            timeout=30.0, sliding_window=CountWindow(size=10), slow_call_duration=5.0
        )
    )
    first, second = (BREAKER, timed) if timed_first else (timed, BREAKER)
    policy = manager.policy("reshaped-race", first)
    breaker = policy.for_key("a").circuit_breaker
    assert breaker is not None
    own = _own_pipeline(breaker.as_strategy("own"))
    with pytest.raises(ConnectionError):  # a streak: the next call takes a permit of its own
        own.execute_sync(boom)
    manager.reconfigure(policy.name, second)  # the link is reshaped
    with pytest.raises(ConnectionError):
        own.execute_sync(boom)
    ends = {
        getattr(step_class, name).__code__
        for step_class in type(own.strategies[0]).__mro__
        if step_class.__name__ == "_BreakerStep"
        for name in ("on_success", "_judge_returned")
    }
    reloaded = []

    def hook(frame: typing.Any, event: str, arg: typing.Any) -> None:
        if event == "call" and frame.f_code in ends and not reloaded:
            reloaded.append(True)
            manager.reconfigure(policy.name, first)  # another thread's reload, at this moment

    sys.setprofile(hook)
    try:
        answer = own.execute_sync(lambda: "answer")
    finally:
        sys.setprofile(None)
    assert reloaded
    assert answer == "answer"
    assert own.execute_sync(lambda: "next") == "next"
