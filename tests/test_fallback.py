"""Tests for otel_resilience.patterns.fallback: every strategy through both drivers, caches, groups, stats."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from forking_support import held_by_another_thread, run_in_child
from support import converted_cancellation, needs_task_cancelling, run_threads, until

from otel_resilience import Retry, RetryPolicy
from otel_resilience.engine.events import Event, FallbackUsed, TelemetrySource
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.errors import CircuitOpenError, OperationTimeoutError
from otel_resilience.patterns.fallback import (
    DEFAULT_HANDLE_EXCEPTIONS,
    MISSING,
    CacheService,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
)
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.timeout import TimeoutHandler
from otel_resilience.testing import FakeClock

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

DEFAULT = FallbackStrategy.DEFAULT_VALUE
ALTERNATIVE = FallbackStrategy.ALTERNATIVE_FUNCTION
CACHED = FallbackStrategy.CACHED_VALUE
MULTIPLE = FallbackStrategy.MULTIPLE_ATTEMPTS

ZERO_STATS = {
    "executions": 0,
    "fallbacks_used": 0,
    "fallback_successes": 0,
    "fallback_failures": 0,
    "cache_hits": 0,
    "cache_misses": 0,
    "cache_errors": 0,
}


def stats(**changes: int) -> dict[str, int]:
    """Return the expected stats: zero except for ``changes``."""
    return {**ZERO_STATS, **changes}


async def run(handler: FallbackHandler, driver: str, fn, *args, **kwargs):
    """Call the sync function ``fn`` through the handler's async or sync driver."""
    if driver == "async":

        async def afn(*a, **kw):
            return fn(*a, **kw)

        return await handler.execute_with_fallback(afn, *args, **kwargs)
    return handler.execute_with_fallback_sync(fn, *args, **kwargs)


class Failing:
    """A function that records its arguments and raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls.append((args, kwargs))
        raise self.error


class MemoryCache:
    """A sync in-memory CacheService returning MISSING on a miss."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.fail_get = False
        self.fail_set = False

    def get(self, key: str) -> object:
        if self.fail_get:
            raise ConnectionError("cache down")
        return self.data.get(key, MISSING)

    def set(self, key: str, value: object) -> None:
        if self.fail_set:
            raise ConnectionError("cache down")
        self.data[key] = value


class AsyncMemoryCache:
    """An async in-memory CacheService returning None on a miss (as redis clients do)."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    async def get(self, key: str) -> object:
        await asyncio.sleep(0)
        return self.data.get(key)

    async def set(self, key: str, value: object) -> None:
        await asyncio.sleep(0)
        self.data[key] = value


async def written(handler: FallbackHandler) -> None:
    """Yield to the loop until the handler's background cache writes have ended (bounded)."""
    for _ in range(100):
        if not handler._core.writer.writes:
            return
        await asyncio.sleep(0)
    raise AssertionError("a cache write did not end")


def cached(cache: object, **kwargs: object) -> FallbackHandler:
    """A CACHED_VALUE handler on ``cache`` under the key ``"last"``."""
    return FallbackHandler(FallbackConfig(CACHED, cache_key="last", cache_service=cache, **kwargs))  # type: ignore[arg-type]


# -- configuration ---------------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    """The documented defaults of FallbackConfig and FallbackHandler do not drift."""
    config = FallbackConfig(DEFAULT)
    assert config.default_value is None
    assert config.fallback_function is None
    assert config.fallback_functions == ()
    assert config.cache_key is None
    assert config.cache_service is None
    assert config.handle_exceptions == (Exception,) == DEFAULT_HANDLE_EXCEPTIONS
    handler = FallbackHandler(config)
    assert handler.name == "fallback"
    assert handler.config is config
    assert handler.get_stats() == ZERO_STATS
    assert [s.value for s in FallbackStrategy] == [
        "default_value",
        "alternative_function",
        "cached_value",
        "multiple_attempts",
    ]
    assert repr(MISSING) == "MISSING"


def _fn(*_: object) -> None:
    """A callable used in bad-config cases."""


async def _afn(*_: object) -> None:
    """A coroutine function used in configuration cases."""


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategy": "default_value"}, TypeError, r"FallbackConfig\.strategy must be a FallbackStrategy"),
        ({"strategy": ALTERNATIVE}, TypeError, r"FallbackConfig\.fallback_function must be callable"),
        (
            {"strategy": ALTERNATIVE, "fallback_function": 42},
            TypeError,
            r"FallbackConfig\.fallback_function must be callable .*got 42 \(int\)",
        ),
        (
            {"strategy": CACHED, "cache_service": MemoryCache()},
            TypeError,
            r"FallbackConfig\.cache_key must be a str",
        ),
        (
            {"strategy": CACHED, "cache_key": " ", "cache_service": MemoryCache()},
            ValueError,
            r"FallbackConfig\.cache_key must be a non-empty str, got ' '",
        ),
        (
            {"strategy": CACHED, "cache_key": "k"},
            TypeError,
            r"FallbackConfig\.cache_service must be an object",
        ),
        (
            {"strategy": CACHED, "cache_key": "k", "cache_service": {}},
            TypeError,
            r"FallbackConfig\.cache_service must be an object with callable get and set",
        ),
        ({"strategy": MULTIPLE}, ValueError, r"FallbackConfig\.fallback_functions must be non-empty"),
        (
            {"strategy": MULTIPLE, "fallback_functions": [_fn, 3]},
            TypeError,
            r"FallbackConfig\.fallback_functions must be callables only",
        ),
        (
            {"strategy": MULTIPLE, "fallback_functions": _fn},
            TypeError,
            r"FallbackConfig\.fallback_functions must be a list or tuple of callables",
        ),
        (
            {"strategy": DEFAULT, "cache_key": "k"},
            ValueError,
            (
                r"FallbackConfig\.cache_key must be unset unless strategy is CACHED_VALUE "
                r"\(strategy is DEFAULT_VALUE\), got 'k'"
            ),
        ),
        (
            {"strategy": DEFAULT, "fallback_function": _fn},
            ValueError,
            r"FallbackConfig\.fallback_function must be unset",
        ),
        (
            {"strategy": ALTERNATIVE, "fallback_function": _fn, "default_value": 0},
            ValueError,
            r"FallbackConfig\.default_value must be unset unless strategy is DEFAULT_VALUE",
        ),
        (
            {
                "strategy": CACHED,
                "cache_key": "k",
                "cache_service": MemoryCache(),
                "fallback_functions": [_fn],
            },
            ValueError,
            r"FallbackConfig\.fallback_functions must be unset",
        ),
        (
            {"strategy": DEFAULT, "handle_exceptions": ()},
            ValueError,
            r"FallbackConfig\.handle_exceptions must be non-empty",
        ),
        (
            {"strategy": DEFAULT, "handle_exceptions": (asyncio.CancelledError,)},
            ValueError,
            r"FallbackConfig\.handle_exceptions must be Exception subclasses",
        ),
        (
            {"strategy": DEFAULT, "handle_exceptions": BaseException},
            ValueError,
            r"FallbackConfig\.handle_exceptions must be Exception subclasses",
        ),
        (
            {"strategy": DEFAULT, "handle_exceptions": "ValueError"},
            TypeError,
            r"FallbackConfig\.handle_exceptions must be exception types or a predicate",
        ),
        (
            {"strategy": DEFAULT, "handle_exceptions": (ValueError, 3)},
            TypeError,
            r"FallbackConfig\.handle_exceptions must be exception types or a predicate",
        ),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Every invalid or contradictory FallbackConfig raises an error naming the class and field."""
    with pytest.raises(error, match=match):
        FallbackConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"handle_exceptions": lambda: True},
            r"FallbackConfig\.handle_exceptions must be callable as handle_exceptions\(error\)",
        ),
        (
            {"handle_exceptions": lambda error, other: True},
            r"FallbackConfig\.handle_exceptions must be callable as",
        ),
        (
            {"handle_result": lambda: True},
            r"FallbackConfig\.handle_result must be callable as handle_result\(result\)",
        ),
        ({"handle_result": lambda *, result: True}, r"FallbackConfig\.handle_result must be callable as"),
    ],
)
def test_predicates_that_cannot_take_their_argument_are_refused_when_given(
    kwargs: dict[str, object], match: str
) -> None:
    """A predicate that cannot be called as the handler calls it is a TypeError at construction, not at
    the first failure (whose error it would replace) or, for ``handle_result``, at every success."""
    with pytest.raises(TypeError, match=match):
        FallbackConfig(DEFAULT, **kwargs)  # type: ignore[arg-type]


def test_predicates_that_take_their_argument_however_declared_are_accepted() -> None:
    """Defaults, ``*args``, callable objects, partials and builtins without a signature are accepted."""
    FallbackConfig(DEFAULT, handle_exceptions=lambda error, *, strict=False: True, handle_result=bool)
    FallbackConfig(DEFAULT, handle_exceptions=lambda *args: True, handle_result=lambda value=None: False)
    FallbackConfig(DEFAULT, handle_exceptions=functools.partial(lambda kind, error: True, KeyError))
    FallbackConfig(DEFAULT, handle_exceptions=KeyError, handle_result=callable)


class _TakesNothing:
    """A callable object whose ``__call__`` takes no argument."""

    def __call__(self) -> str:
        return "never"


@pytest.mark.parametrize(
    "function",
    [
        lambda: "degraded",
        lambda *, error: "degraded",
        _TakesNothing(),
        functools.partial(lambda error: "degraded", KeyError("bound")),
    ],
)
def test_a_fallback_function_that_cannot_take_the_error_is_refused_when_given(function: object) -> None:
    """``fallback_function(error, *args, **kwargs)`` always gets the error first: one with no positional
    parameter left is a TypeError at construction, not a TypeError in place of every answer."""
    with pytest.raises(
        TypeError,
        match=r"FallbackConfig\.fallback_function must be callable as fallback_function\(error, \*args, \*\*kwargs\)",
    ):
        FallbackConfig(ALTERNATIVE, fallback_function=function)  # type: ignore[arg-type]


def test_fallback_functions_that_take_the_error_and_the_calls_arguments_are_accepted(driver: str) -> None:
    """The error first, then the call's own arguments, however declared (more positional parameters,
    ``*args``, keyword-only ones the call passes, builtins without a signature)."""
    for function in (
        lambda error, user_id: ("spare", user_id),
        lambda *args: ("spare", args[1]),
        lambda error, *rest, strict=False: ("spare", rest[0]),
        functools.partial(lambda tag, error, user_id: (tag, user_id), "spare"),
    ):
        handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=function))
        assert asyncio.run(run(handler, driver, Failing(KeyError("down")), 7)) == ("spare", 7)
    FallbackConfig(ALTERNATIVE, fallback_function=repr)
    FallbackConfig(ALTERNATIVE, fallback_function=lambda error, *, user_id: user_id)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((None,), {}, TypeError, r"FallbackHandler\.config must be a FallbackConfig"),
        (
            (FallbackConfig(DEFAULT),),
            {"name": ""},
            ValueError,
            r"FallbackHandler\.name must be a non-empty name",
        ),
        ((FallbackConfig(DEFAULT),), {"clock": "now"}, TypeError, r"FallbackHandler\.clock must be a Clock"),
    ],
)
def test_bad_handler_arguments_are_rejected(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """FallbackHandler validates its config, name and clock."""
    with pytest.raises(error, match=match):
        FallbackHandler(*args, **kwargs)  # type: ignore[arg-type]


def test_config_normalises_sequences_and_single_types() -> None:
    """A list of fallback functions becomes a tuple and a single handled type becomes a 1-tuple."""
    config = FallbackConfig(MULTIPLE, fallback_functions=[_fn, _afn], handle_exceptions=KeyError)
    assert config.fallback_functions == (_fn, _afn)
    assert config.handle_exceptions == (KeyError,)


def test_cache_service_protocol_matches_the_examples() -> None:
    """Both example caches satisfy the documented CacheService protocol."""
    assert isinstance(MemoryCache(), CacheService)
    assert isinstance(AsyncMemoryCache(), CacheService)


# -- the strategies, both drivers --------------------------------------------------------------


async def test_success_is_returned_untouched(driver: str) -> None:
    """A call that succeeds returns its own result and uses no fallback."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="d"))
    assert await run(handler, driver, lambda x, *, y: x + y, 1, y=2) == 3
    assert handler.get_stats() == stats(executions=1)


async def test_default_value_answers_a_failure(driver: str, recorder) -> None:
    """DEFAULT_VALUE returns the default, passes the arguments to fn, and reports a success."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value={"status": "error"}), name="api")
    primary = Failing(ValueError("down"))
    assert await run(handler, driver, primary, 1, k="v") == {"status": "error"}
    assert primary.calls == [((1,), {"k": "v"})]
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_successes=1)
    assert recorder.of(Event.FALLBACK_USED) == [FallbackUsed("default_value", "success", "ValueError")]
    assert recorder.sources(Event.FALLBACK_USED) == [TelemetrySource("fallback", "api", None)]


async def test_alternative_function_gets_the_error_and_the_arguments(driver: str) -> None:
    """ALTERNATIVE_FUNCTION is called as fallback_function(error, *args, **kwargs)."""
    seen: list[tuple[object, ...]] = []

    def alternative(error: Exception, x: int, *, scale: int) -> int:
        seen.append((error, x, scale))
        return -x * scale

    handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=alternative))
    boom = KeyError("k")
    assert await run(handler, driver, Failing(boom), 4, scale=10) == -40
    assert seen == [(boom, 4, 10)]
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_successes=1)


async def test_async_alternative_function_is_awaited() -> None:
    """The async driver awaits an async fallback function."""

    async def alternative(error: Exception, x: int) -> str:
        await asyncio.sleep(0)
        return f"alt:{x}:{type(error).__name__}"

    handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=alternative))
    assert await run(handler, "async", Failing(ValueError()), 7) == "alt:7:ValueError"


async def test_failing_alternative_raises_its_own_error_chained(driver: str, recorder) -> None:
    """When the alternative raises, its error propagates with the original as its __context__."""
    original = ValueError("primary")
    replacement = LookupError("alternative")
    handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=Failing(replacement)))
    with pytest.raises(LookupError) as info:
        await run(handler, driver, Failing(original))
    assert info.value is replacement
    assert info.value.__context__ is original
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_failures=1)
    assert recorder.of(Event.FALLBACK_USED) == [FallbackUsed("alternative_function", "failure", "ValueError")]


async def test_multiple_attempts_tries_functions_in_order(driver: str) -> None:
    """MULTIPLE_ATTEMPTS calls each function as fn(*args, **kwargs) until one returns."""
    first = Failing(ConnectionError("replica 1"))
    second_calls: list[tuple[object, ...]] = []

    def second(x: int, *, tag: str) -> str:
        second_calls.append((x, tag))
        return f"replica2:{x}:{tag}"

    third = Failing(AssertionError("never called"))
    handler = FallbackHandler(FallbackConfig(MULTIPLE, fallback_functions=[first, second, third]))
    assert await run(handler, driver, Failing(ConnectionError("primary")), 3, tag="t") == "replica2:3:t"
    assert first.calls == [((3,), {"tag": "t"})]
    assert second_calls == [(3, "t")]
    assert third.calls == []
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_successes=1)


async def test_multiple_attempts_mixes_sync_and_async_functions() -> None:
    """The async driver accepts sync and async functions among MULTIPLE_ATTEMPTS."""

    async def second(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    handler = FallbackHandler(FallbackConfig(MULTIPLE, fallback_functions=(Failing(OSError()), second)))
    assert await run(handler, "async", Failing(OSError()), 1) == 2


async def test_exception_group_keeps_every_cause_in_order(driver: str, recorder) -> None:
    """When every function fails, an ExceptionGroup holds the original then each fallback error."""
    original = ConnectionError("primary")
    errors = [TimeoutError("a"), ValueError("b"), KeyError("c")]
    handler = FallbackHandler(
        FallbackConfig(MULTIPLE, fallback_functions=[Failing(e) for e in errors]), name="replicas"
    )
    with pytest.raises(ExceptionGroup) as info:
        await run(handler, driver, Failing(original))
    group = info.value
    assert list(group.exceptions) == [original, *errors]
    assert "all 3 fallback functions failed" in str(group)
    assert group.__cause__ is None
    assert group.__suppress_context__
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_failures=1)
    assert recorder.of(Event.FALLBACK_USED) == [
        FallbackUsed("multiple_attempts", "failure", "ConnectionError")
    ]


async def test_exception_group_names_the_function_an_unnamed_handler_ran(driver: str) -> None:
    """Used alone, the group names the function that failed, as every link names its operation."""

    def fetch_replica() -> str:
        raise ConnectionError("primary")

    async def fetch_replica_async() -> str:
        raise ConnectionError("primary")

    handler = FallbackHandler(FallbackConfig(MULTIPLE, fallback_functions=[Failing(KeyError("a"))]))
    pipeline = PipelineBuilder("replicas").add(handler.as_strategy("replicas")).build()
    if driver == "async":
        fn, runners = fetch_replica_async, (handler.execute_with_fallback, pipeline.execute)
    else:
        fn, runners = fetch_replica, (handler.execute_with_fallback_sync, pipeline.execute_sync)
    messages = []
    for runner in runners:
        with pytest.raises(ExceptionGroup) as info:
            outcome = runner(fn)
            if inspect.isawaitable(outcome):
                await outcome
        messages.append(str(info.value))
    assert messages[0].startswith(f"{fn.__qualname__!r} failed and all 1 fallback functions failed")
    assert messages[1].startswith("'replicas' failed")  # in a pipeline: the pipeline's name


# -- cache -------------------------------------------------------------------------------------


async def test_cached_value_writes_successes_and_serves_them(driver: str, recorder) -> None:
    """CACHED_VALUE writes every success under cache_key and answers a failure with the last one."""
    cache = MemoryCache()
    handler = cached(cache)
    assert await run(handler, driver, lambda: "v1") == "v1"
    assert await run(handler, driver, lambda: "v2") == "v2"
    assert cache.data == {"last": "v2"}
    assert await run(handler, driver, Failing(ConnectionError())) == "v2"
    assert cache.data == {"last": "v2"}
    assert handler.get_stats() == stats(executions=3, fallbacks_used=1, fallback_successes=1, cache_hits=1)
    assert recorder.of(Event.FALLBACK_USED) == [FallbackUsed("cached_value", "success", "ConnectionError")]


async def test_an_answer_given_inside_in_place_of_the_call_is_never_cached(
    driver: str, clock: FakeClock
) -> None:
    """What an inner pattern answered in place of the call (a recovery rule's fallback value) is no
    good value of the call: it is returned, never written over the last good value, which still
    answers the next failure."""
    cache = MemoryCache()
    handler = cached(cache)
    recovery = ErrorRecoverySystem("inner-answer", clock=clock)
    recovery.register_recovery_rule(
        KeyError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="degraded")
    )
    pipeline = (
        PipelineBuilder("answered", clock=clock)
        .add(handler.as_strategy("answered"))
        .add(recovery.as_strategy("answered"))
        .build()
    )

    async def through(fn: object) -> object:
        if driver == "async":

            async def afn() -> object:
                return fn()  # type: ignore[operator]

            return await pipeline.execute(afn)
        return pipeline.execute_sync(fn)  # type: ignore[arg-type]

    assert await through(lambda: "good") == "good"
    assert await through(Failing(KeyError("gone"))) == "degraded"  # the recovery's answer
    assert cache.data == {"last": "good"}
    assert await through(Failing(ConnectionError("down"))) == "good"  # the last good value
    assert handler.get_stats()["cache_hits"] == 1


def test_a_timeout_default_is_never_cached(clock: FakeClock) -> None:
    """A timeout's default answer (the outcome of a call cut by its deadline) is not a good value."""
    cache = MemoryCache()
    handler = cached(cache)
    pipeline = (
        PipelineBuilder("late", clock=clock)
        .add(handler.as_strategy("late"))
        .add(TimeoutHandler(1.0, default="stale", name="late", clock=clock).as_strategy("late"))
        .build()
    )

    def late() -> str:
        clock.advance(2.0)  # returns past its deadline: the scope drops it for the default
        return "late"

    assert pipeline.execute_sync(lambda: "good") == "good"
    assert pipeline.execute_sync(late) == "stale"
    assert cache.data == {"last": "good"}


def test_a_value_returned_after_an_inner_answer_was_retried_is_a_good_value(clock: FakeClock) -> None:
    """An inner answer a retry did not accept (a timeout's default its ``retry_on_result`` rejects)
    is not the execution's: the next attempt's value is, written to the cache, and the execution
    recovered (no fallback answered it)."""
    cache = MemoryCache()
    handler = cached(cache)
    retry = Retry(
        "late", RetryPolicy(max_attempts=2, initial_delay=0.0, retry_on_result="stale".__eq__), clock=clock
    )
    pipeline = (
        PipelineBuilder("late", clock=clock)
        .add(handler.as_strategy("late"))
        .add(retry.as_strategy("late"))
        .add(TimeoutHandler(1.0, default="stale", name="late", clock=clock).as_strategy("late"))
        .build()
    )
    calls: list[int] = []

    def late_once() -> str:
        calls.append(1)
        if len(calls) == 1:
            clock.advance(2.0)  # past its deadline: the default answers, which the retry rejects
        return f"value {len(calls)}"

    assert pipeline.execute_sync(late_once) == "value 2"
    assert cache.data == {"last": "value 2"}
    assert (pipeline.stats.recovered, pipeline.stats.fallback) == (1, 0)


async def test_cache_miss_reraises_the_original_error(driver: str, recorder) -> None:
    """A cache miss re-raises the very error the call raised."""
    handler = cached(MemoryCache())
    original = ConnectionError("down")
    with pytest.raises(ConnectionError) as info:
        await run(handler, driver, Failing(original))
    assert info.value is original
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_failures=1, cache_misses=1)
    assert recorder.of(Event.FALLBACK_USED) == [FallbackUsed("cached_value", "failure", "ConnectionError")]


@pytest.mark.parametrize("miss", [None, MISSING])
async def test_none_and_missing_both_signal_a_miss(driver: str, miss: object) -> None:
    """A cache get returning None or MISSING is a miss, not a value to serve."""

    class Cache:
        def get(self, key: str) -> object:
            return miss

        def set(self, key: str, value: object) -> None:
            pass

    handler = cached(Cache())
    with pytest.raises(OSError, match="x"):
        await run(handler, driver, Failing(OSError("x")))
    assert handler.get_stats()["cache_misses"] == 1


async def test_async_cache_service_is_awaited() -> None:
    """The async driver runs an async cache's set to its end after a success, and awaits its get on failure."""
    cache = AsyncMemoryCache()
    handler = cached(cache)
    assert await run(handler, "async", lambda: {"a": 1}) == {"a": 1}
    await written(handler)
    assert cache.data == {"last": {"a": 1}}
    assert await run(handler, "async", Failing(ConnectionError())) == {"a": 1}
    assert handler.get_stats() == stats(executions=2, fallbacks_used=1, fallback_successes=1, cache_hits=1)


async def test_failing_cache_set_does_not_fail_the_call(
    driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache whose set raises is logged and counted, and the successful result is returned."""
    cache = MemoryCache()
    cache.fail_set = True
    handler = FallbackHandler(FallbackConfig(CACHED, cache_key="last", cache_service=cache), name="svc")
    with caplog.at_level(logging.WARNING, logger="otel_resilience.fallback"):
        assert await run(handler, driver, lambda: "fresh") == "fresh"
    assert handler.get_stats() == stats(executions=1, cache_errors=1)
    [record] = caplog.records
    assert record.getMessage() == "fallback 'svc': cache_service.set('last') failed"
    assert record.exc_info is not None
    assert record.exc_info[0] is ConnectionError


async def test_failing_cache_get_reraises_the_original_error(
    driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache whose get raises is logged and counted, and the call's own error is re-raised."""
    cache = MemoryCache()
    cache.fail_get = True
    handler = cached(cache)
    original = ValueError("primary")
    with (
        caplog.at_level(logging.WARNING, logger="otel_resilience.fallback"),
        pytest.raises(ValueError) as info,
    ):
        await run(handler, driver, Failing(original))
    assert info.value is original
    assert info.value.__context__ is None  # unchanged: not chained to the cache's error
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_failures=1, cache_errors=1)
    assert "cache_service.get('last') failed" in caplog.text


def test_sync_cache_returning_an_awaitable_is_a_cache_error(caplog: pytest.LogCaptureFixture) -> None:
    """In the sync driver a cache method that returns an awaitable is closed and counted as an error."""

    class Sneaky:
        def get(self, key: str) -> object:
            return _afn()

        def set(self, key: str, value: object) -> object:
            return _afn()

    handler = cached(Sneaky())
    with caplog.at_level(logging.WARNING, logger="otel_resilience.fallback"):
        assert handler.execute_with_fallback_sync(lambda: 1) == 1
        with pytest.raises(OSError, match="x"):
            handler.execute_with_fallback_sync(Failing(OSError("x")))
    assert handler.get_stats()["cache_errors"] == 2
    assert "cannot await" in caplog.text


# -- what triggers a fallback ----------------------------------------------------------------


async def test_handle_exceptions_types_filter(driver: str) -> None:
    """Only the listed exception types trigger the fallback; others propagate unchanged."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value=0, handle_exceptions=(KeyError, OSError)))
    assert await run(handler, driver, Failing(ConnectionError())) == 0
    other = ValueError("not handled")
    with pytest.raises(ValueError, match="not handled") as info:
        await run(handler, driver, Failing(other))
    assert info.value is other
    assert handler.get_stats() == stats(executions=2, fallbacks_used=1, fallback_successes=1)


async def test_handle_exceptions_predicate_filter(driver: str) -> None:
    """A predicate decides which errors trigger the fallback."""
    handler = FallbackHandler(
        FallbackConfig(DEFAULT, default_value="d", handle_exceptions=lambda e: "retryable" in str(e))
    )
    assert await run(handler, driver, Failing(RuntimeError("retryable"))) == "d"
    with pytest.raises(RuntimeError, match="fatal"):
        await run(handler, driver, Failing(RuntimeError("fatal")))


def test_an_async_handle_exceptions_predicate_is_refused() -> None:
    """The predicate is called, never awaited: an async one returns a coroutine, which is true, so
    every error would trigger the fallback. Refused with TypeError naming the field."""

    async def transient(error: Exception) -> bool:
        return "retryable" in str(error)

    with pytest.raises(TypeError, match=r"FallbackConfig\.handle_exceptions"):
        FallbackConfig(DEFAULT, default_value="d", handle_exceptions=transient)


def _transient_generator(error: Exception) -> Iterator[bool]:
    yield "retryable" in str(error)


async def _transient_async_generator(error: Exception) -> AsyncIterator[bool]:
    yield "retryable" in str(error)


@pytest.mark.parametrize("field", ["handle_exceptions", "handle_result"])
@pytest.mark.parametrize(
    "predicate",
    [_transient_generator, _transient_async_generator, functools.partial(_transient_generator)],
)
def test_a_generator_function_predicate_is_refused(field: str, predicate: Any) -> None:
    """A generator function returns its iterator, which is true, before its body runs: as
    ``handle_exceptions`` every error would trigger the fallback, as ``handle_result`` every
    value, a good one too, would be answered in place of. Refused with TypeError naming the field."""
    with pytest.raises(TypeError, match=rf"FallbackConfig\.{field} must be .*not a generator function"):
        FallbackConfig(DEFAULT, default_value="d", **{field: predicate})


async def test_rejections_and_timeouts_trigger_the_default_fallback(driver: str) -> None:
    """With the default handle_exceptions, rejections and timeouts from inner patterns are answered."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="degraded"))
    assert await run(handler, driver, Failing(CircuitOpenError("ml", "open", 5.0))) == "degraded"
    assert await run(handler, driver, Failing(OperationTimeoutError("ml", 1.0))) == "degraded"


async def test_cancellation_never_triggers_the_fallback(recorder) -> None:
    """Cancelling the primary propagates CancelledError and uses no fallback."""
    started = asyncio.Event()
    alternative_calls: list[object] = []

    async def primary() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=alternative_calls.append))
    task = asyncio.create_task(handler.execute_with_fallback(primary))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert alternative_calls == []
    assert handler.get_stats() == stats(executions=1)
    assert recorder.of(Event.FALLBACK_USED) == []


async def test_cancelled_fallback_function_propagates() -> None:
    """A fallback function that is cancelled propagates CancelledError and is not counted as failed."""
    started = asyncio.Event()

    async def slow_alternative(error: Exception, *_: object) -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=slow_alternative))
    task = asyncio.create_task(handler.execute_with_fallback(_raise_async, OSError()))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert handler.get_stats() == stats(executions=1)


async def _raise_async(error: Exception) -> None:
    await asyncio.sleep(0)
    raise error


def _converting(started: asyncio.Event, *, calls: list[str] | None = None, name: str = "call"):
    """An async function that turns the cancellation of its task into a ConnectionError (a driver's way)."""

    async def converting(*_: object) -> str:
        if calls is not None:
            calls.append(name)
        started.set()
        return await converted_cancellation()

    return converting


@needs_task_cancelling
async def test_an_error_a_cancelled_call_raises_on_its_way_out_is_never_answered(recorder) -> None:
    """The caller's cancellation, turned into an error by the call, is not swallowed by an answer."""
    started = asyncio.Event()
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="degraded"))
    task = asyncio.create_task(handler.execute_with_fallback(_converting(started)))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(ConnectionError, match="connection aborted"):
        await task
    assert handler.get_stats() == stats(executions=1)
    assert recorder.of(Event.FALLBACK_USED) == []


@needs_task_cancelling
async def test_an_enclosing_timeout_is_not_overrun_by_a_fallback() -> None:
    """asyncio.timeout around the handler ends the block there: the fallback does not answer and go on."""
    started = asyncio.Event()
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="degraded"))
    went_on = False
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(None) as scope:
            call = asyncio.ensure_future(handler.execute_with_fallback(_converting(started)))
            await asyncio.wait_for(started.wait(), 2.0)
            scope.reschedule(asyncio.get_running_loop().time())  # due now: cancels this task
            await call
            went_on = True
    assert not went_on


@needs_task_cancelling
async def test_a_fallback_function_cancelled_on_its_way_out_starts_no_other() -> None:
    """MULTIPLE_ATTEMPTS: a function that turns the caller's cancellation into an error ends the fallback."""
    started = asyncio.Event()
    calls: list[str] = []
    handler = FallbackHandler(
        FallbackConfig(
            MULTIPLE,
            fallback_functions=(
                _converting(started, calls=calls, name="first"),
                lambda *_: calls.append("second"),
            ),
        )
    )
    task = asyncio.create_task(handler.execute_with_fallback(_raise_async, OSError()))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(ConnectionError):
        await task
    assert calls == ["first"]
    assert handler.get_stats() == stats(executions=1)


@needs_task_cancelling
async def test_a_value_not_accepted_that_a_cancelled_call_returned_is_not_answered(recorder) -> None:
    """The call swallowed the caller's cancellation and returned a value handle_result refuses: no fallback runs."""
    started = asyncio.Event()
    answered: list[object] = []

    async def swallowing() -> str | None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return None
        return "unreachable"

    async def alternative(*_: object) -> str:
        answered.append("ran")
        return "degraded"

    handler = FallbackHandler(
        FallbackConfig(ALTERNATIVE, fallback_function=alternative, handle_result=lambda value: value is None)
    )
    task = asyncio.create_task(handler.execute_with_fallback(swallowing))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    assert await task is None  # what the call returned, as without the library
    assert answered == []
    assert recorder.of(Event.FALLBACK_USED) == []
    assert handler._pipeline.stats.errors == 1  # a value the policy judged failed


async def test_an_error_after_a_cancellation_the_task_took_back_is_answered() -> None:
    """Once the task's cancellation was taken back (uncancel), an error chained to it is a failure again."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="degraded"))

    async def cancelled_then_failed() -> str:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            task.uncancel()  # handled here, as asyncio.timeout does
            raise ConnectionError("failed while handling it") from None
        return "never"

    assert await handler.execute_with_fallback(cancelled_then_failed) == "degraded"


class Stop(BaseException):
    """A BaseException that is not an Exception (like KeyboardInterrupt)."""


async def test_base_exceptions_are_never_answered(driver: str) -> None:
    """A BaseException that is not an Exception propagates through the fallback untouched."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="d"))
    with pytest.raises(Stop):
        await run(handler, driver, Failing(Stop()))
    assert handler.get_stats() == stats(executions=1)


# -- sync driver and async parts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "part"),
    [
        (FallbackConfig(ALTERNATIVE, fallback_function=_afn), "fallback_function"),
        (FallbackConfig(MULTIPLE, fallback_functions=[_fn, _afn]), r"fallback_functions\[1\]"),
        (FallbackConfig(CACHED, cache_key="k", cache_service=AsyncMemoryCache()), r"cache_service\.get"),
    ],
)
def test_sync_driver_refuses_async_parts_before_calling(config: FallbackConfig, part: str) -> None:
    """The sync driver refuses a coroutine fallback part with TypeError before fn runs."""
    handler = FallbackHandler(config)
    primary = Failing(OSError())
    with pytest.raises(TypeError, match=rf"{part} is a coroutine function"):
        handler.execute_with_fallback_sync(primary)
    assert primary.calls == []
    assert handler.get_stats() == ZERO_STATS


@pytest.mark.parametrize(
    ("config", "part"),
    [
        (FallbackConfig(ALTERNATIVE, fallback_function=_afn), "fallback_function"),
        (FallbackConfig(CACHED, cache_key="k", cache_service=AsyncMemoryCache()), r"cache_service\.get"),
    ],
)
async def test_protect_refuses_a_sync_function_when_a_part_is_async(
    config: FallbackConfig, part: str
) -> None:
    """``protect`` refuses, when it decorates, a plain function that no call could run, as retry does.

    It was accepted, and every call of the wrapper then raised the same TypeError; an async
    function is still protected.
    """
    handler = FallbackHandler(config)
    primary = Failing(OSError())
    with pytest.raises(TypeError, match=rf"{part} is a coroutine function"):
        handler.protect(primary)
    assert handler.get_stats() == ZERO_STATS

    async def fetch() -> str:
        return "ok"

    assert await handler.protect(fetch)() == "ok"


def test_sync_fallback_returning_an_awaitable_is_a_fallback_failure() -> None:
    """In the sync driver a fallback that returns an awaitable fails with TypeError (chained)."""
    original = OSError("primary")
    handler = FallbackHandler(FallbackConfig(ALTERNATIVE, fallback_function=lambda error: _afn()))
    with pytest.raises(TypeError, match="fallback_function returned an awaitable") as info:
        handler.execute_with_fallback_sync(Failing(original))
    assert info.value.__context__ is original
    assert handler.get_stats() == stats(executions=1, fallbacks_used=1, fallback_failures=1)


def test_sync_multiple_attempts_skips_an_awaitable_result() -> None:
    """In the sync driver a MULTIPLE_ATTEMPTS function returning an awaitable counts as failed."""
    handler = FallbackHandler(FallbackConfig(MULTIPLE, fallback_functions=[lambda: _afn(), lambda: "ok"]))
    assert handler.execute_with_fallback_sync(Failing(OSError())) == "ok"


async def test_non_callable_is_rejected_before_anything(driver: str) -> None:
    """A non-callable fn raises TypeError at once and counts nothing."""
    handler = FallbackHandler(FallbackConfig(DEFAULT))
    if driver == "async":
        with pytest.raises(TypeError, match=r"FallbackHandler\.execute_with_fallback\.fn must be callable"):
            await handler.execute_with_fallback("nope")  # type: ignore[arg-type]
    else:
        with pytest.raises(
            TypeError, match=r"FallbackHandler\.execute_with_fallback_sync\.fn must be callable"
        ):
            handler.execute_with_fallback_sync("nope")  # type: ignore[arg-type]
    assert handler.get_stats() == ZERO_STATS


# -- decorator, pipeline, threads ----------------------------------------------------------------


async def test_decorator_keeps_signature_and_picks_the_driver() -> None:
    """protect() wraps async and sync functions with their own driver and keeps their metadata."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value=-1))

    @handler.protect
    async def fetch(x: int) -> int:
        """Fetch x."""
        if x < 0:
            raise ValueError(x)
        return x

    @handler.protect
    def compute(x: int) -> int:
        if x < 0:
            raise ValueError(x)
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(compute)
    assert (fetch.__name__, fetch.__doc__) == ("fetch", "Fetch x.")
    assert await fetch(3) == 3
    assert await fetch(-3) == -1
    assert compute(-3) == -1
    assert handler.get_stats() == stats(executions=3, fallbacks_used=2, fallback_successes=2)
    with pytest.raises(TypeError, match=r"FallbackHandler\.protect\.fn must be callable"):
        handler.protect(1)  # type: ignore[arg-type]


async def test_fallback_outcome_is_counted_by_the_pipeline(driver: str, clock: FakeClock, recorder) -> None:
    """A fallback answer sets the FALLBACK outcome, and a link reports under its pipeline's name."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value="d"), name="fb", clock=clock)
    link = handler.as_strategy("policy")
    assert (link.kind, link.name, link.config) == ("fallback", "fb", handler.config)
    pipeline = PipelineBuilder("policy", clock=clock).add(link).build()
    if driver == "async":
        result = await pipeline.execute(_raise_async, OSError())
    else:
        result = pipeline.execute_sync(Failing(OSError()))
    assert result == "d"
    assert (pipeline.stats.fallback, pipeline.stats.succeeded, pipeline.stats.failed) == (1, 0, 0)
    assert recorder.sources(Event.FALLBACK_USED) == [TelemetrySource("fallback", "fb", "policy")]


def test_sync_counts_are_exact_under_threads() -> None:
    """Concurrent sync calls from many threads are all counted, fallbacks included."""
    handler = FallbackHandler(FallbackConfig(DEFAULT, default_value=-1))
    threads, calls = 8, 200
    barrier = threading.Barrier(threads, timeout=5)
    results: list[list[int]] = []

    def fn(i: int) -> int:
        if i % 4 == 0:
            raise ValueError(i)
        return i

    def worker() -> None:
        barrier.wait()
        results.append([handler.execute_with_fallback_sync(fn, i) for i in range(calls)])

    run_threads(threads, worker)
    assert results == [[-1 if i % 4 == 0 else i for i in range(calls)]] * threads
    used = threads * calls // 4
    assert handler.get_stats() == stats(
        executions=threads * calls, fallbacks_used=used, fallback_successes=used
    )


# -- SPEC examples -----------------------------------------------------------------------------


async def test_spec_example_default_value() -> None:
    """The SPEC's DEFAULT_VALUE example answers a failing analysis with the default scores."""
    fallback = FallbackConfig(
        strategy=FallbackStrategy.DEFAULT_VALUE,
        default_value={"similarity": 0.0, "quality": 0.0},
    )
    handler = FallbackHandler(fallback)

    async def analyze_content(data: str) -> dict[str, float]:
        raise ConnectionError(data)

    result = await handler.execute_with_fallback(analyze_content, "text")
    assert result == {"similarity": 0.0, "quality": 0.0}


async def test_spec_example_cached_value_with_an_in_memory_cache() -> None:
    """The SPEC's CACHED_VALUE example serves the last good analysis when the service fails."""
    cache = MemoryCache()
    config = FallbackConfig(
        strategy=FallbackStrategy.CACHED_VALUE, cache_key="last_analysis", cache_service=cache
    )
    handler = FallbackHandler(config)
    healthy = True

    async def analyze(data: str) -> dict[str, str]:
        if not healthy:
            raise ConnectionError("ml service down")
        return {"analysis": data}

    assert await handler.execute_with_fallback(analyze, "first") == {"analysis": "first"}
    healthy = False
    assert await handler.execute_with_fallback(analyze, "second") == {"analysis": "first"}
    assert cache.data == {"last_analysis": {"analysis": "first"}}


async def _produce() -> AsyncIterator[int]:
    yield 1


def test_async_generator_functions_are_refused() -> None:
    """protect() and the sync driver refuse an async generator function instead of answering with its iterator."""
    handler = FallbackHandler(FallbackConfig(FallbackStrategy.DEFAULT_VALUE, default_value="fallback"))
    with pytest.raises(TypeError, match="async generator function"):
        handler.protect(_produce)
    with pytest.raises(TypeError, match="async generator function"):
        handler.execute_with_fallback_sync(_produce)


def _spare_rows(*args: object) -> object:
    yield "spare"
    raise LookupError("no spare either")  # never runs inside the fallback: it is iterated after it


async def _spare_stream(*args: object) -> AsyncIterator[str]:
    yield "spare"


class _SpareRows:
    def __call__(self, *args: object) -> object:
        yield "spare"


class _SpareStream:
    async def __call__(self, *args: object) -> AsyncIterator[str]:
        yield "spare"


@pytest.mark.parametrize(
    "function",
    [
        _spare_rows,
        _spare_stream,
        functools.partial(_spare_rows, "tag"),
        _SpareRows(),
        _SpareStream(),
        functools.partial(_SpareRows(), "tag"),
    ],
    ids=["generator", "async generator", "partial", "object", "async object", "partial of object"],
)
@pytest.mark.parametrize("strategy", [ALTERNATIVE, MULTIPLE])
def test_generator_fallback_functions_are_refused_when_given(
    function: object, strategy: FallbackStrategy
) -> None:
    """A generator function (sync or async) makes an iterator before its body runs: it would answer
    every failure with that iterator, a success that cannot fail (a MULTIPLE_ATTEMPTS function after it
    never runs), as the protected function itself is refused for. So does an object whose
    ``__call__`` is one (it was taken, and answered every failure with a generator object)."""
    field = r"fallback_function" if strategy is ALTERNATIVE else r"fallback_functions\[1\]"
    kwargs = (
        {"fallback_function": function}
        if strategy is ALTERNATIVE
        else {"fallback_functions": (lambda *args: "first", function)}
    )
    with pytest.raises(
        TypeError, match=rf"FallbackConfig\.{field} must be a function that returns its answer"
    ):
        FallbackConfig(strategy, **kwargs)  # type: ignore[arg-type]


class StalledCache:
    """An async CacheService whose writes wait until ``release`` is set."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.release = asyncio.Event()
        self.writes: list[object] = []
        self.fail = False

    async def get(self, key: str) -> object:
        return self.data.get(key)

    async def set(self, key: str, value: object) -> None:
        self.writes.append(value)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("cache down")
        self.data[key] = value


async def test_a_stalled_cache_write_does_not_delay_the_result() -> None:
    """A success under a 0.1 s total timeout returns while the cache write is still stalled."""
    cache = StalledCache()
    handler = cached(cache)
    pipeline = (
        PipelineBuilder("bounded")
        .add(handler.as_strategy("bounded"))
        .add(TimeoutHandler(0.1, name="bounded").as_strategy("bounded"))
        .build()
    )

    async def fast() -> str:
        return "fresh"

    assert await asyncio.wait_for(pipeline.execute(fast), 5) == "fresh"
    await until(lambda: cache.writes)  # the write's task starts once the loop runs it
    assert cache.writes == ["fresh"]
    assert cache.data == {}  # the write is still in flight
    cache.release.set()
    await written(handler)
    assert cache.data == {"last": "fresh"}
    assert handler.get_stats()["cache_errors"] == 0


async def test_successes_during_a_stalled_write_write_only_the_newest_value() -> None:
    """While a write is in flight later successes do not pile up writes; the newest value is written next."""
    cache = StalledCache()
    handler = cached(cache)
    for value in range(5):
        assert await asyncio.wait_for(run(handler, "async", lambda v=value: v), 5) == value
    await until(lambda: cache.writes)  # the first write's task starts once the loop runs it
    assert cache.writes == [0]
    assert len(handler._core.writer.writes) == 1
    cache.release.set()
    await written(handler)
    assert cache.writes == [0, 4]
    assert cache.data == {"last": 4}


async def test_a_failed_background_write_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    """An async set that raises after the caller got its result is logged with its error and counted."""
    cache = StalledCache()
    cache.fail = True
    handler = FallbackHandler(FallbackConfig(CACHED, cache_key="last", cache_service=cache), name="svc")
    with caplog.at_level(logging.WARNING, logger="otel_resilience.fallback"):
        assert await asyncio.wait_for(run(handler, "async", lambda: "fresh"), 5) == "fresh"
        cache.release.set()
        await written(handler)
    assert handler.get_stats() == stats(executions=1, cache_errors=1)
    [record] = caplog.records
    assert record.getMessage() == "fallback 'svc': cache_service.set('last') failed"
    assert record.exc_info is not None
    assert record.exc_info[0] is ConnectionError


class LoopStalledCache:
    """An async CacheService whose write of ``"stalled"`` waits until the test ends."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {}
        self.stalled: asyncio.Event | None = None

    async def get(self, key: str) -> object:
        return self.data.get(key)

    async def set(self, key: str, value: object) -> None:
        if value == "stalled":
            self.stalled = asyncio.Event()
            await self.stalled.wait()
        self.data[key] = value


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
@pytest.mark.parametrize("holder", ["counts", "writes"])
def test_a_child_forked_during_a_background_write_writes_and_reads_the_cache(holder: str) -> None:
    """A write in flight on a loop thread ends in a callback that takes the handler's locks; a fork
    at that moment leaves the child with those locks free: its calls write and read the cache."""
    cache = LoopStalledCache()
    handler = cached(cache)
    core = handler._core
    lock = core.lock if holder == "counts" else core.writer.lock

    async def answer(value: str) -> str:
        return value

    async def down() -> str:
        raise ConnectionError("down")

    def child() -> None:
        async def main() -> None:
            assert await handler.execute_with_fallback(answer, "fresh") == "fresh"
            for _ in range(100):
                if cache.data.get("last") == "fresh":
                    break
                await asyncio.sleep(0)
            assert await handler.execute_with_fallback(down) == "fresh"

        asyncio.run(main())
        assert handler.get_stats()["cache_hits"] == 1

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        ran = asyncio.run_coroutine_threadsafe(handler.execute_with_fallback(answer, "stalled"), loop)
        assert ran.result(timeout=10) == "stalled"
        with held_by_another_thread(lock):
            code = run_in_child(child, timeout=10)
        assert code == 0
    finally:
        asyncio.run_coroutine_threadsafe(_release(cache), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    assert cache.data == {"last": "stalled"}


async def _release(cache: LoopStalledCache) -> None:
    """Let the stalled write land (on its own loop), then let its callback run."""
    for _ in range(100):
        if cache.stalled is not None:
            break
        await asyncio.sleep(0)
    assert cache.stalled is not None
    cache.stalled.set()
    for _ in range(100):
        if cache.data:
            break
        await asyncio.sleep(0)


def test_a_default_value_is_the_very_object_at_every_fallback() -> None:
    """DEFAULT_VALUE answers with the configured object itself, never a copy (as documented)."""
    answer: dict[str, str] = {"status": "error"}
    handler = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=answer))

    def fails() -> dict[str, str]:
        raise ConnectionError

    first = handler.execute_with_fallback_sync(fails)
    second = handler.execute_with_fallback_sync(fails)
    assert first is answer
    assert second is answer
