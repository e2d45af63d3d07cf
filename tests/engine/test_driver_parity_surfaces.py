"""The sync and the async driver agree through every public surface (differential property tests).

``test_driver_parity.py`` drives the manager's policies; these drive the other ways in, each
twice, with the same drawn parameters and script, once through the sync surface and once through
the async one, on a fresh fake clock and fresh OpenTelemetry SDK providers:

* guards: ``with breaker.guard():`` / ``async with``, ``bulkhead.slot()``, ``limiter.guard()``;
* the patterns' own verbs: ``Retry.execute_sync`` / ``execute`` (a seeded ``rng``, every jitter,
  ``on_retry``, a budget, ``delay_from``), ``TimeoutHandler.with_timeout_sync`` /
  ``with_timeout``, ``FallbackHandler.execute_with_fallback_sync`` / ``execute_with_fallback``
  and ``Chaos.run_sync`` / ``run``;
* a policy handle and its key views (``execute_sync`` / ``execute``), reconfigured between
  calls, whose function calls another policy of the same manager (nested policies);
* the httpx transports: ``ResilientTransport`` / ``AsyncResilientTransport``.

The two runs must agree on what the caller sees (the result, or the error's type, message and
notes), how often the function ran, the statistics, the spans, the metric points and the log
records. What the drivers do differently by design is left out of the scripts: a deadline that
ends a call inside a policy whose breaker or retry sits between the call and the deadline's
scope (docs/design.md: in a thread the steps between see a failure, in a task a cancellation).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otel_support import Otel, instrumented
from parity_support import FakeTimeLoop, LoopClock, logs_seen, points_seen, shown, spans_seen

from otel_resilience import (
    AlertSystem,
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CountWindow,
    ExecutionRejectedError,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    OperationTimeoutError,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    TimeoutHandler,
)
from otel_resilience.engine.deadline import sleep_sync_within_deadline
from otel_resilience.integrations.http import HttpOptions
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.patterns.circuit_breaker.config import DEFAULT_FAILURE_THRESHOLD
from otel_resilience.retry import retry_after_delay

START = 1000.0
_runs = itertools.count()
SETTINGS = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class FlakyError(ConnectionError):
    """Retried by every drawn retry policy."""


class FatalError(ValueError):
    """Retried only by a policy that retries every ``Exception``."""


class ShedError(ExecutionRejectedError):
    """A rejection the function itself raises (a limit of the dependency's own)."""


def is_bad(result: object) -> bool:
    """The result predicate of every drawn policy."""
    return result == "bad"


def ends(outcome: str, index: int) -> str:
    """Return or raise what a call that takes no time ends with."""
    errors: dict[str, Callable[[str], Exception]] = {
        "retryable": FlakyError,
        "fatal": FatalError,
        "timeout": TimeoutError,
        "rejected": ShedError,
        "limited": lambda message: RateLimitedError(message, retry_after=2.0),
        "own_timeout": lambda message: OperationTimeoutError(message, 1.0),
    }
    if outcome in errors:
        raise errors[outcome](f"call {index}")
    return outcome


class Script:
    """The protected function: each call does the script's next outcome (then ``ok``)."""

    def __init__(self, outcomes: tuple[str, ...], clock: LoopClock) -> None:
        self.outcomes = outcomes
        self.clock = clock
        self.calls = 0

    def next(self) -> tuple[int, str]:
        index = self.calls
        self.calls += 1
        return index, self.outcomes[index] if index < len(self.outcomes) else "ok"

    def __call__(self) -> str:
        index, outcome = self.next()
        if outcome == "slow":  # as long as it may: until the deadline at most, as chaos's delay
            sleep_sync_within_deadline(self.clock, 2.0, "call")
            return "late"
        return ends(outcome, index)

    async def call_async(self) -> str:
        index, outcome = self.next()
        if outcome == "slow":
            await asyncio.sleep(2.0)
            return "late"
        return ends(outcome, index)


def _caught(error: BaseException, name: str) -> tuple[Any, ...]:
    """What the caller sees of an error: its type, message and notes."""
    return (
        "raised",
        type(error).__name__,
        shown(str(error), name),
        shown(getattr(error, "__notes__", []), name),
    )


def _telemetry(otel: Otel, name: str) -> tuple[Any, ...]:
    return spans_seen(otel, name), points_seen(otel, name), logs_seen(otel, name)


def _in_virtual_time(clock: LoopClock, main: Callable[[], Any]) -> None:
    """Run the coroutine ``main()`` makes on an event loop whose waits move ``clock`` on."""
    loop = FakeTimeLoop(clock)
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


# -- guards ---------------------------------------------------------------------------------------

GUARDED = ("ok", "retryable", "fatal", "timeout", "rejected", "slow")


def _guarded(kind: str, variant: int, name: str, clock: LoopClock) -> Any:
    if kind == "breaker":
        return CircuitBreaker(
            name,
            CircuitBreakerConfig(
                failure_threshold=DEFAULT_FAILURE_THRESHOLD if variant & 4 else 1 + variant % 2,
                timeout=5.0,
                ignore_exceptions=(FatalError,) if variant & 2 else (),
                sliding_window=CountWindow(4) if variant & 4 else None,
                minimum_calls=2 if variant & 4 else None,
                slow_call_duration=1.5 if variant & 4 else None,
                max_half_open_wait=1.0 if variant & 8 else None,
            ),
            clock=clock,
        )
    if kind == "bulkhead":
        return Bulkhead(name, BulkheadConfig(max_concurrent=1, max_waiting=0), clock=clock)
    config = RateLimiterConfig(rate=0.5, burst=1 + variant % 2, max_wait=2.5 if variant & 2 else 0.0)
    return RateLimiter(name, config, clock=clock)


def _run_guards(
    driver: str, kind: str, variant: int, script: tuple[str, ...], advances: tuple[float, ...]
) -> Any:
    name = f"Guard{next(_runs)}{driver}"
    clock = LoopClock(START)
    seen: list[Any] = []
    with instrumented() as otel:
        pattern = _guarded(kind, variant, name, clock)

        def guard() -> Any:
            return pattern.slot() if kind == "bulkhead" else pattern.guard()

        def block(outcome: str) -> None:
            if outcome == "slow":
                clock.advance(2.0)  # the block took 2 s
            else:
                ends(outcome, 0)

        async def run_async() -> None:
            for outcome, advance in zip(script, advances, strict=True):
                try:
                    async with guard():
                        block(outcome)
                except Exception as error:
                    seen.append(_caught(error, name))
                else:
                    seen.append(("ran", clock.now()))
                clock.advance(advance)

        if driver == "async":
            _in_virtual_time(clock, run_async)
        else:
            for outcome, advance in zip(script, advances, strict=True):
                try:
                    with guard():
                        block(outcome)
                except Exception as error:
                    seen.append(_caught(error, name))
                else:
                    seen.append(("ran", clock.now()))
                clock.advance(advance)
        return seen, shown(dict(pattern.get_stats()), name), _telemetry(otel, name)


@st.composite
def guarded_runs(draw: st.DrawFn) -> tuple[str, int, tuple[str, ...], tuple[float, ...]]:
    script = tuple(draw(st.lists(st.sampled_from(GUARDED), min_size=1, max_size=8)))
    advances = tuple(
        draw(st.lists(st.sampled_from([0.0, 1.0, 6.0]), min_size=len(script), max_size=len(script)))
    )
    return (
        draw(st.sampled_from(["breaker", "bulkhead", "limiter"])),
        draw(st.integers(0, 15)),
        script,
        advances,
    )


@SETTINGS
@given(guarded_runs())
def test_guards_agree(run: tuple[str, int, tuple[str, ...], tuple[float, ...]]) -> None:
    """``with`` and ``async with`` a guard count, judge and report the same blocks alike."""
    assert _run_guards("sync", *run) == _run_guards("async", *run)


# -- the patterns' own verbs ----------------------------------------------------------------------

CALLED = ("ok", "bad", "retryable", "fatal", "timeout", "rejected", "limited", "own_timeout", "slow")


def _pattern(
    kind: str, parts: dict[str, Any], name: str, clock: LoopClock, hooks: list[Any]
) -> tuple[Any, str]:
    """The pattern ``kind`` made from ``parts``, and its async verb (the sync one is ``<verb>_sync``)."""
    if kind == "retry":
        budget = None if parts["budget"] is None else RetryBudget(*parts["budget"], 10.0, clock=clock)
        policy = RetryPolicy(
            max_attempts=parts["attempts"],
            strategy=parts["strategy"],
            initial_delay=0.5,
            max_delay=parts["max_delay"],
            jitter=parts["jitter"],
            retry_on=parts["retry_on"],
            no_retry_on=parts["no_retry_on"],
            retry_on_result=is_bad if parts["judge"] else None,
            budget=budget,
            delay_from=retry_after_delay if parts["delay_from"] else None,
        )

        def on_retry(attempt: int, error: BaseException | None) -> None:
            hooks.append((attempt, type(error).__name__, clock.now()))

        retry = Retry(name, policy, on_retry=on_retry, clock=clock, rng=random.Random(parts["seed"]))
        return retry, "execute"
    if kind == "timeout":
        default = {"default": "default"} if parts["judge"] else {}
        return TimeoutHandler(parts["seconds"], name=name, clock=clock, **default), "with_timeout"
    if kind == "fallback":
        config = FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE,
            default_value="fallback",
            handle_exceptions=parts["retry_on"],
            handle_result=is_bad if parts["judge"] else None,
        )
        return FallbackHandler(config, name=name, clock=clock), "execute_with_fallback"
    config = ChaosConfig(
        fault_rate=0.4,
        fault=FlakyError,
        outcome_rate=0.3,
        outcome="chaos",
        latency_rate=1.0 if parts["judge"] else 0.0,
        latency=0.5 if parts["judge"] else 0.0,
        seed=parts["seed"],
    )
    return Chaos(name, config, clock=clock), "run"


def _run_pattern(
    driver: str, kind: str, parts: dict[str, Any], script: tuple[str, ...], executions: int
) -> Any:
    name = f"Verb{next(_runs)}{driver}"
    clock = LoopClock(START)
    seen: list[Any] = []
    hooks: list[Any] = []
    calls = Script(script, clock)
    with instrumented() as otel:
        pattern, verb = _pattern(kind, parts, name, clock, hooks)

        async def run_async() -> None:
            for _ in range(executions):
                try:
                    seen.append(("returned", await getattr(pattern, verb)(calls.call_async), clock.now()))
                except Exception as error:
                    seen.append((*_caught(error, name), clock.now()))
                clock.advance(1.0)

        if driver == "async":
            _in_virtual_time(clock, run_async)
        else:
            for _ in range(executions):
                try:
                    seen.append(("returned", getattr(pattern, f"{verb}_sync")(calls), clock.now()))
                except Exception as error:
                    seen.append((*_caught(error, name), clock.now()))
                clock.advance(1.0)
        return seen, calls.calls, hooks, shown(dict(pattern.get_stats()), name), _telemetry(otel, name)


pattern_parts = st.fixed_dictionaries(
    {
        "attempts": st.integers(1, 4),
        # (strategy, jitter) as a policy takes them: RANDOM has no jitter on top, and DECORRELATED
        # replaces any strategy's schedule but the default one
        "schedule": st.sampled_from(
            [(s, "proportional") for s in ("fixed", "linear", "exponential", "random")]
            + [(s, j) for s in ("fixed", "linear", "exponential") for j in ("none", "full")]
            + [("exponential", "decorrelated")]
        ),
        "max_delay": st.sampled_from([2.0, 60.0]),
        "retry_on": st.sampled_from([(FlakyError,), (Exception,), (TimeoutError,)]),
        "no_retry_on": st.sampled_from([(ExecutionRejectedError,), ()]),
        "judge": st.booleans(),
        "budget": st.none() | st.tuples(st.sampled_from([0.0, 0.5]), st.sampled_from([0.0, 1.0])),
        "delay_from": st.booleans(),
        "seconds": st.sampled_from([1.0, 3.0]),
        "seed": st.integers(0, 9),
    }
).map(lambda parts: {**parts, "strategy": parts["schedule"][0], "jitter": parts["schedule"][1]})


@SETTINGS
@given(
    st.sampled_from(["retry", "timeout", "fallback", "chaos"]),
    pattern_parts,
    st.lists(st.sampled_from(CALLED), max_size=8).map(tuple),
    st.integers(1, 4),
)
def test_pattern_verbs_agree(
    kind: str, parts: dict[str, Any], script: tuple[str, ...], executions: int
) -> None:
    """A pattern's sync verb and its async one tell the caller, the counts and the telemetry the same."""
    assert _run_pattern("sync", kind, parts, script, executions) == _run_pattern(
        "async", kind, parts, script, executions
    )


# -- policy handles, key views, reloads, nested policies -------------------------------------------

KEYED = ("ok", "bad", "retryable", "fatal", "timeout", "rejected", "inner_ok", "inner_failing", "inner_bad")
"""What a call does; an ``inner_`` call runs through the manager's inner policy (nested policies)."""


def _policy(parts: dict[str, Any], name: str) -> ResilienceConfig:
    retry = None
    if parts["attempts"]:
        retry = RetryPolicy(
            max_attempts=parts["attempts"],
            initial_delay=0.0,
            jitter="none",
            retry_on=parts["retry_on"],
            retry_on_result=is_bad if parts["judge"] else None,
        )
    breaker = None
    if parts["threshold"]:
        breaker = CircuitBreakerConfig(
            failure_threshold=DEFAULT_FAILURE_THRESHOLD if parts["window"] else parts["threshold"],
            timeout=5.0,
            record_result=is_bad if parts["record_result"] else None,
            sliding_window=CountWindow(4) if parts["window"] else None,
            minimum_calls=2 if parts["window"] else None,
        )
    fallback = None
    if parts["fallback"] is not None:
        fallback = FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE,
            default_value="fallback",
            handle_exceptions=parts["fallback"],
        )
    return ResilienceConfig(
        name=name,
        retry_policy=retry,
        circuit_breaker=breaker,
        fallback_config=fallback,
        bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=0) if parts["bulkhead"] else None,
        rate_limiter=None
        if not parts["burst"]
        else RateLimiterConfig(rate=1.0, burst=parts["burst"], max_wait=0.0),
        timeout=30.0 if parts["timeout"] else None,
    )


INNER = {
    "attempts": 2,
    "retry_on": (FlakyError,),
    "judge": True,
    "threshold": 2,
    "record_result": True,
    "window": False,
    "fallback": None,
    "bulkhead": False,
    "burst": 0,
    "timeout": True,
}
"""The nested policy a call of the script may go through."""


def _key_counts(view: Any) -> list[Any]:
    """The counts of a key's own breaker, bulkhead and rate limiter (``None`` for one it has not)."""
    parts = (view.circuit_breaker, view.bulkhead, view.rate_limiter)
    return [None if part is None else dict(part.get_stats()) for part in parts]


def _run_keyed(
    driver: str, first: dict[str, Any], second: dict[str, Any], script: tuple[str, ...], steps: Any
) -> Any:
    name = f"Keyed{next(_runs)}{driver}"
    clock = LoopClock(START)
    seen: list[Any] = []
    index = itertools.count()
    with instrumented() as otel:
        alerts = AlertSystem(name=f"{name}-alerts")
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        handle = manager.policy(name, _policy(first, name))
        inner = manager.policy(f"{name}Inner", _policy(INNER, f"{name}Inner"))

        def call() -> str:
            number = next(index)
            outcome = script[number] if number < len(script) else "ok"
            if outcome.startswith("inner_"):
                done = {"inner_ok": "ok", "inner_failing": "retryable", "inner_bad": "bad"}[outcome]
                return inner.execute_sync(ends, done, number)
            return ends(outcome, number)

        async def call_async() -> str:
            number = next(index)
            outcome = script[number] if number < len(script) else "ok"
            if outcome.startswith("inner_"):
                done = {"inner_ok": "ok", "inner_failing": "retryable", "inner_bad": "bad"}[outcome]

                async def inner_call() -> str:
                    return ends(done, number)

                return await inner.execute(inner_call)
            return ends(outcome, number)

        def on(key: str | None) -> Any:
            return handle if key is None else handle.for_key(key)

        async def run_async() -> None:
            for step, key, advance in steps:
                if step == "reload":
                    manager.reconfigure(name, _policy(second, name))
                    continue
                try:
                    seen.append(("returned", await on(key).execute(call_async)))
                except Exception as error:
                    seen.append(_caught(error, name))
                clock.advance(advance)

        try:
            if driver == "async":
                _in_virtual_time(clock, run_async)
            else:
                for step, key, advance in steps:
                    if step == "reload":
                        manager.reconfigure(name, _policy(second, name))
                        continue
                    try:
                        seen.append(("returned", on(key).execute_sync(call)))
                    except Exception as error:
                        seen.append(_caught(error, name))
                    clock.advance(advance)
            statistics = shown(manager.get_resilience_statistics(), name)
            used = sorted({key for step, key, _ in steps if step == "call" and key is not None})
            keys = shown({key: _key_counts(handle.for_key(key)) for key in used}, name)
            return seen, next(index), statistics, keys, _telemetry(otel, name)
        finally:
            alerts.close()


keyed_parts = st.fixed_dictionaries(
    {
        "attempts": st.sampled_from([0, 2, 3]),
        "retry_on": st.sampled_from([(FlakyError,), (Exception,)]),
        "judge": st.booleans(),
        "threshold": st.sampled_from([0, 1, 2]),
        "record_result": st.booleans(),
        "window": st.booleans(),
        "fallback": st.sampled_from([None, (Exception,), (ExecutionRejectedError,)]),
        "bulkhead": st.booleans(),
        "burst": st.sampled_from([0, 0, 1, 2]),
        "timeout": st.booleans(),
    }
)
keyed_steps = st.lists(
    st.tuples(
        st.sampled_from(["call"] * 6 + ["reload"]),
        st.sampled_from([None, "eu", "us"]),
        st.sampled_from([0.0, 1.0, 6.0]),
    ),
    min_size=1,
    max_size=7,
).map(tuple)


@SETTINGS
@given(keyed_parts, keyed_parts, st.lists(st.sampled_from(KEYED), max_size=10).map(tuple), keyed_steps)
def test_key_views_and_reloads_agree(
    first: dict[str, Any], second: dict[str, Any], script: tuple[str, ...], steps: Any
) -> None:
    """A handle's and its keys' calls, around a reload, with nested policies: both drivers alike."""
    assert _run_keyed("sync", first, second, script, steps) == _run_keyed(
        "async", first, second, script, steps
    )


# -- httpx transports -----------------------------------------------------------------------------

ANSWERS = ("200", "404", "500", "503", "408", "429", "retry_after", "refused", "read_timeout")


def _answer(answer: str, request: httpx.Request) -> httpx.Response:
    if answer == "refused":
        raise httpx.ConnectError("refused", request=request)
    if answer == "read_timeout":
        raise httpx.ReadTimeout("slow", request=request)
    if answer == "retry_after":
        return httpx.Response(503, headers={"Retry-After": "1"})
    return httpx.Response(int(answer), content=b"body")


def _run_http(driver: str, parts: dict[str, Any], answers: tuple[str, ...], requests: Any) -> Any:
    name = f"Http{next(_runs)}{driver}"
    clock = LoopClock(START)
    seen: list[Any] = []
    sent = itertools.count()

    def downstream(request: httpx.Request) -> httpx.Response:
        number = next(sent)
        return _answer(answers[number] if number < len(answers) else "200", request)

    async def downstream_async(request: httpx.Request) -> httpx.Response:
        return downstream(request)

    with instrumented() as otel:
        alerts = AlertSystem(name=f"{name}-alerts")
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        policy = _policy({**parts, "retry_on": (Exception,), "judge": False, "record_result": False}, name)
        options = HttpOptions(raise_on_failure=parts["raise_on_failure"])

        async def run_async() -> None:
            transport = AsyncResilientTransport(
                policy, httpx.MockTransport(downstream_async), manager=manager, options=options
            )
            async with httpx.AsyncClient(transport=transport) as client:
                for method, advance in requests:
                    try:
                        response = await client.request(method, "https://inventory.internal/items")
                        seen.append(("response", response.status_code, await response.aread()))
                    except Exception as error:
                        seen.append(_caught(error, name))
                    clock.advance(advance)

        try:
            if driver == "async":
                _in_virtual_time(clock, run_async)
            else:
                transport = ResilientTransport(
                    policy, httpx.MockTransport(downstream), manager=manager, options=options
                )
                with httpx.Client(transport=transport) as client:
                    for method, advance in requests:
                        try:
                            response = client.request(method, "https://inventory.internal/items")
                            seen.append(("response", response.status_code, response.read()))
                        except Exception as error:
                            seen.append(_caught(error, name))
                        clock.advance(advance)
            statistics = shown(manager.get_resilience_statistics(), name)
            return seen, next(sent), statistics, _telemetry(otel, name)
        finally:
            alerts.close()


http_parts = keyed_parts.map(lambda parts: {**parts, "raise_on_failure": parts["judge"]})
http_requests = st.lists(
    st.tuples(st.sampled_from(["GET", "GET", "POST"]), st.sampled_from([0.0, 1.0, 6.0])),
    min_size=1,
    max_size=4,
).map(tuple)


@SETTINGS
@given(http_parts, st.lists(st.sampled_from(ANSWERS), max_size=8).map(tuple), http_requests)
def test_httpx_transports_agree(parts: dict[str, Any], answers: tuple[str, ...], requests: Any) -> None:
    """The sync and the async httpx transport send, retry, count and report the same requests alike."""
    assert _run_http("sync", parts, answers, requests) == _run_http("async", parts, answers, requests)
