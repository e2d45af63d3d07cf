"""Property: after a random mix of calls, metrics, statistics, spans and span events agree exactly.

Every pattern runs alone (breaker, windowed breaker, retry with a budget and an attempt timeout,
fallback, timeout, bulkhead with a queue, rate limiter that waits, chaos, hedging, recovery) and
inside manager policies (one per pattern, all of them at once, a policy with spans and durations
off, a keyed policy with ``key_attribute_limit``), through both drivers, on a FakeClock, with the
real SDK and in-memory exporters, its histograms by the SDK or kept in process. Calls succeed,
fail, fail once, return a result the policies reject, run slow, crowd a bulkhead or a limiter,
run in threads side by side, and are cancelled while they run, queue or back off.

Whatever the mix, each count reported in one place equals the same count everywhere else
(docs/telemetry.md): ``resilience.executions`` by outcome = execution spans by outcome = the
duration histogram by outcome and ``error.type`` = the manager's or the pattern's statistics = what
the caller saw (raised, returned, cancelled); each span event (retry scheduled or exhausted,
rejection, fallback, timeout, chaos, hedge started, denied or won, recovery) equals its counter
attribute for attribute; attempt spans equal attempt timings; breaker calls, transitions, state
and rates, bulkhead and limiter rejections and permits equal their ``get_stats()``; a keyed
policy's series fold its keys past the limit into ``_OTHER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otel_support import Otel, instrumented

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    Jitter,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    TimeWindow,
)
from otel_resilience.telemetry import instrument
from otel_resilience.testing import FakeClock

BEHAVIOURS = (
    "ok",
    "ok",
    "fail",
    "flaky",
    "value",
    "slow",
    "bad",
    "crowd",
    "cancel",
    "threads",
    "queue",
    "backoff",
)
ERROR_OUTCOMES = ("failure", "rejected", "timeout")
OUTCOME_STATS = {
    "success": "successful_first_attempt",
    "recovered": "successful_after_failure",
    "fallback": "fallback",
    "rejected": "rejected",
    "timeout": "timeouts",
    "cancelled": "cancelled",
}
_serial = itertools.count()


class DrillError(ConnectionError):
    """The fault chaos injects: retried as the dependency's own errors are, but never named as one."""


def _is_bad(result: Any) -> bool:
    return result == "bad"


def _retry_policy(budget: RetryBudget | None = None, attempt_timeout: float | None = None) -> RetryPolicy:
    return RetryPolicy(
        attempt_timeout=attempt_timeout,
        retry_on_result=_is_bad,
        max_attempts=3,
        strategy=RetryStrategy.FIXED,
        initial_delay=0.01,
        jitter=Jitter.NONE,
        retry_on=(ConnectionError,),
        budget=budget,
    )


@dataclass
class World:
    """The patterns and policies of one example, named uniquely so earlier examples never mix in."""

    clock: FakeClock
    tag: str
    alone: dict[str, Any] = field(default_factory=dict)
    policies: dict[str, ResilienceConfig] = field(default_factory=dict)
    manager: ResilienceManager | None = None
    keyed: Any = None

    @classmethod
    def build(cls) -> World:
        clock = FakeClock(1000.0)
        tag = f"agree{next(_serial)}"
        world = cls(clock, tag)
        recovery = ErrorRecoverySystem(f"{tag}-recovery", clock=clock)
        recovery.register_recovery_rule(
            ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
        )
        recovery.register_recovery_rule(
            ValueError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value="recovered")
        )
        world.alone = {
            f"{tag}-cb": CircuitBreaker(
                f"{tag}-cb",
                CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout=1.0),
                clock=clock,
            ),
            f"{tag}-window": CircuitBreaker(
                f"{tag}-window",
                CircuitBreakerConfig(
                    sliding_window=TimeWindow(4.0, buckets=4),
                    failure_rate_threshold=0.5,
                    minimum_calls=4,
                    slow_call_duration=0.3,
                    slow_call_rate_threshold=0.6,
                    timeout=1.0,
                    half_open_max_calls=2,
                ),
                clock=clock,
            ),
            f"{tag}-retry": Retry(
                f"{tag}-retry",
                _retry_policy(
                    RetryBudget(ratio=0.1, min_retries_per_second=0.1, window=10.0), attempt_timeout=0.1
                ),
                clock=clock,
            ),
            f"{tag}-fallback": FallbackHandler(
                FallbackConfig(
                    strategy=FallbackStrategy.DEFAULT_VALUE,
                    default_value="dflt",
                    handle_exceptions=(ConnectionError,),
                    handle_result=_is_bad,
                ),
                name=f"{tag}-fallback",
                clock=clock,
            ),
            f"{tag}-timeout": TimeoutHandler(0.05, name=f"{tag}-timeout", clock=clock),
            f"{tag}-bulkhead": Bulkhead(
                f"{tag}-bulkhead", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.01), clock=clock
            ),
            f"{tag}-limiter": RateLimiter(
                f"{tag}-limiter", RateLimiterConfig(rate=4.0, burst=2, max_wait=0.5), clock=clock
            ),
            f"{tag}-chaos": Chaos(
                f"{tag}-chaos",
                ChaosConfig(
                    fault_rate=0.3,
                    fault=DrillError,
                    latency_rate=0.2,
                    latency=0.5,
                    outcome_rate=0.2,
                    outcome="drill",
                    seed=7,
                ),
                clock=clock,
            ),
            f"{tag}-hedging": Hedging(
                f"{tag}-hedging",
                HedgingConfig(delay=1000.0, max_attempts=3, hedge_on_result=_is_bad),
                clock=clock,
            ),
            f"{tag}-recovery": recovery,
        }
        manager_recovery = ErrorRecoverySystem(f"{tag}-m-recovery", clock=clock)
        manager_recovery.register_recovery_rule(
            ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
        )
        world.manager = ResilienceManager(clock=clock, recovery_system=manager_recovery)
        budget = RetryBudget(ratio=0.1, min_retries_per_second=0.1, window=10.0)
        for config in (
            ResilienceConfig(
                name=f"{tag}-guarded",
                circuit_breaker=CircuitBreakerConfig(failure_threshold=3, success_threshold=1, timeout=1.0),
                retry_policy=_retry_policy(budget),
                fallback_config=FallbackConfig(
                    strategy=FallbackStrategy.DEFAULT_VALUE,
                    default_value="dflt",
                    handle_exceptions=(ValueError,),
                ),
            ),
            ResilienceConfig(name=f"{tag}-timed", timeout=0.05, retry_policy=_retry_policy(budget)),
            ResilienceConfig(
                name=f"{tag}-admitted",
                bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
                rate_limiter=RateLimiterConfig(rate=1.0, burst=2),
            ),
            ResilienceConfig(
                name=f"{tag}-hedged",
                hedging=HedgingConfig(delay=1000.0, max_attempts=3),
                circuit_breaker=CircuitBreakerConfig(failure_threshold=4, success_threshold=1, timeout=1.0),
                bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=0),
            ),
            ResilienceConfig(
                name=f"{tag}-drill",
                chaos=ChaosConfig(fault_rate=0.3, fault=DrillError, seed=11),
                retry_policy=_retry_policy(),
            ),
            ResilienceConfig(name=f"{tag}-recovering", enable_recovery=True),
            ResilienceConfig(
                name=f"{tag}-dark",
                spans=False,
                record_duration=False,
                circuit_breaker=CircuitBreakerConfig(failure_threshold=3, success_threshold=1, timeout=1.0),
                retry_policy=_retry_policy(),
                fallback_config=FallbackConfig(
                    strategy=FallbackStrategy.DEFAULT_VALUE,
                    default_value="dflt",
                    handle_exceptions=(ValueError,),
                ),
                timeout=0.05,
            ),
            ResilienceConfig(
                name=f"{tag}-all-hedged",
                circuit_breaker=CircuitBreakerConfig(failure_threshold=5, success_threshold=1, timeout=1.0),
                retry_policy=_retry_policy(budget),
                fallback_config=FallbackConfig(
                    strategy=FallbackStrategy.DEFAULT_VALUE,
                    default_value="dflt",
                    handle_exceptions=(ValueError,),
                ),
                timeout=0.05,
                bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=0),
                rate_limiter=RateLimiterConfig(rate=2.0, burst=4),
                chaos=ChaosConfig(fault_rate=0.2, fault=DrillError, outcome_rate=0.1, outcome="bad", seed=5),
                hedging=HedgingConfig(delay=1000.0, max_attempts=2, hedge_on_result=_is_bad),
                enable_recovery=True,
                max_attempts_total=4,
            ),
        ):
            assert config.name is not None
            world.policies[config.name] = config
        world.keyed = world.manager.policy(
            f"{tag}-keyed",
            ResilienceConfig(
                circuit_breaker=CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout=1.0),
                bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
                rate_limiter=RateLimiterConfig(rate=1.0, burst=2),
                retry_policy=_retry_policy(),
                fallback_config=FallbackConfig(
                    strategy=FallbackStrategy.DEFAULT_VALUE,
                    default_value="dflt",
                    handle_exceptions=(ValueError,),
                ),
            ),
            key_attribute_limit=2,
        )
        return world

    def targets(self) -> list[str]:
        return [*self.alone, *self.policies, f"{self.tag}-keyed"]

    def call_sync(self, target: str, fn: Callable[[], Any], key: int) -> Any:
        if target in self.alone:
            return self.alone[target].run_sync(fn)
        assert self.manager is not None
        if target in self.policies:
            return self.manager.execute_with_resilience_sync(fn, self.policies[target])
        return self.keyed.for_key(f"k{key % 5}").execute_sync(fn)

    def call(self, target: str, fn: Callable[[], Awaitable[Any]], key: int) -> Awaitable[Any]:
        if target in self.alone:
            return self.alone[target].run(fn)
        assert self.manager is not None
        if target in self.policies:
            return self.manager.execute_with_resilience(fn, self.policies[target])
        return self.keyed.for_key(f"k{key % 5}").execute(fn)


def _behaviour(kind: str, clock: FakeClock) -> tuple[Callable[[], Any], Callable[[], Awaitable[Any]]]:
    calls = [0]

    def sync() -> str:
        calls[0] += 1
        if kind in {"fail", "backoff"} or (kind == "flaky" and calls[0] == 1):
            raise ConnectionError("refused")
        if kind == "value":
            raise ValueError("bad")
        if kind == "slow":
            clock.advance(0.5)
        if kind == "bad":
            return "bad"
        return "ok"

    async def run_async() -> str:
        if kind == "queue":
            await asyncio.sleep(0.03)  # hold a place while the calls beside it queue, wait or time out
        if kind in {"crowd", "cancel"}:
            for _ in range(3):
                await asyncio.sleep(0)  # overlap with the calls beside it
            if kind == "cancel":
                await asyncio.Event().wait()  # until cancelled, or a deadline ends it
        return sync()

    return sync, run_async


async def _run_mix(world: World, steps: list[tuple[int, str, bool, float]]) -> Counter[tuple[str, str]]:
    """Run the calls; count by (target, 'returned' or 'raised')."""
    seen: Counter[tuple[str, str]] = Counter()
    targets = world.targets()
    assert world.manager is not None
    for index, kind, use_async, advance in steps:
        target = targets[index % len(targets)]
        index //= len(targets)  # the key of a keyed call
        world.clock.advance(advance)
        sync_fn, async_fn = _behaviour(kind, world.clock)
        use_async = use_async or kind in {"crowd", "cancel", "queue", "backoff"} or target.endswith("hedging")
        if kind == "threads" and not use_async:  # three sync calls side by side, in threads
            for result in await asyncio.to_thread(_in_threads, world, target, index):
                _tally(seen, target, result)
            continue
        if not use_async:
            try:
                result = world.call_sync(target, sync_fn, index)
            except Exception as error:
                result = error
            _tally(seen, target, result)
            continue

        def call(fn: Callable[[], Awaitable[Any]], target: str = target, key: int = index) -> Awaitable[Any]:
            return world.call(target, fn, key)

        if kind == "crowd":  # three calls side by side
            results = await asyncio.gather(
                *(call(_behaviour("crowd", world.clock)[1]) for _ in range(3)), return_exceptions=True
            )
        elif kind == "queue":  # three calls side by side, one of the later two cancelled while it waits
            tasks = [asyncio.ensure_future(call(_behaviour("queue", world.clock)[1])) for _ in range(3)]
            for _ in range(3):
                await asyncio.sleep(0)
            tasks[1 + index % 2].cancel()
            results = []
            for task in tasks:
                try:
                    results.append(await task)
                except asyncio.CancelledError:
                    seen[target, "cancelled"] += 1
                except Exception as error:
                    results.append(error)
        elif kind in {"cancel", "backoff"}:  # cancelled while it runs or waits (a deadline may end it first)
            task = asyncio.ensure_future(call(async_fn))
            for _ in range(8 if kind == "cancel" else 1):
                await asyncio.sleep(0)
            if kind == "backoff" or not target.endswith(
                ("timeout", "timed", "all-hedged", "dark", "retry")
            ):  # a deadline ends it
                task.cancel()
            try:
                results = [await task]
            except asyncio.CancelledError:
                seen[target, "cancelled"] += 1
                continue
            except Exception as error:
                results = [error]
        else:
            results = await asyncio.gather(call(async_fn), return_exceptions=True)
        for result in results:
            _tally(seen, target, result)
    return seen


def _in_threads(world: World, target: str, key: int) -> list[Any]:
    gate = threading.Barrier(3)

    def one() -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            gate.wait(timeout=0.05)  # overlap, however far apart the threads start
        try:
            return world.call_sync(target, lambda: "ok", key)
        except Exception as error:
            return error

    with ThreadPoolExecutor(3) as pool:
        return list(pool.map(lambda _: one(), range(3)))


def _tally(seen: Counter[tuple[str, str]], target: str, result: Any) -> None:
    """A rejected result ("bad") the caller gets may be a failure (retry_on_result, hedge_on_result)."""
    if isinstance(result, BaseException):
        seen[target, "raised"] += 1
        kind = type(result)
        name = (
            kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        )
        seen[target, f"raised:{name}"] += 1
    else:
        seen[target, "returned"] += 1
        if result == "bad":
            seen[target, "bad"] += 1


def _sum(otel_points: list[Any], **where: Any) -> int:
    wanted = {key.replace("__", "."): value for key, value in where.items()}
    found = 0
    for point in otel_points:
        if all(point.attributes.get(key) == value for key, value in wanted.items()):
            found += point.value if hasattr(point, "value") else point.count
    return found


class Exported:
    """One collection of metrics and the finished spans, with counting helpers."""

    def __init__(self, otel: Otel, *, in_process: bool) -> None:
        metrics = otel.metrics()
        self.points = {name: list(metric.data.data_points) for name, metric in metrics.items()}
        self.spans = otel.spans()
        if in_process:  # the histograms' counts, kept in process, read as the SDK's would be
            for histogram in ("execution", "attempt"):
                assert f"resilience.{histogram}.duration" not in self.points
                self.points[f"resilience.{histogram}.duration"] = [
                    SimpleNamespace(attributes=p.attributes, count=p.value)
                    for p in self.points.pop(f"resilience.{histogram}.latency.count", [])
                    if p.value
                ]

    def total(self, name: str, **where: Any) -> int:
        return _sum(self.points.get(name, []), **where)

    def by(self, name: str, key: str, **where: Any) -> Counter[Any]:
        wanted = {k.replace("__", "."): v for k, v in where.items()}
        found: Counter[Any] = Counter()
        for point in self.points.get(name, []):
            if all(point.attributes.get(k) == v for k, v in wanted.items()):
                found[point.attributes.get(key)] += point.value if hasattr(point, "value") else point.count
        return +found

    def execution_spans(self, policy: str) -> list[Any]:
        return [
            s
            for s in self.spans
            if s.attributes.get("resilience.policy") == policy and "resilience.attempt" not in s.attributes
        ]

    def event_attributes(self, policy: str, event: str) -> list[dict[str, Any]]:
        """The attributes of every span event ``event`` on the spans of ``policy``."""
        return [
            dict(e.attributes)
            for s in self.spans
            if s.attributes.get("resilience.policy") == policy
            for e in s.events
            if e.name == event
        ]

    def by_attributes(self, name: str, policy: str) -> Counter[frozenset[tuple[str, Any]]]:
        found: Counter[frozenset[tuple[str, Any]]] = Counter()
        for point in self.points.get(name, []):
            if point.attributes.get("resilience.policy") == policy:
                found[frozenset(point.attributes.items())] += (
                    point.value if hasattr(point, "value") else point.count
                )
        return +found


def _check_executions(exported: Exported, policy: str, seen: Counter[tuple[str, str]]) -> Counter[str]:
    """Executions metric == execution spans == duration histogram, per outcome; the caller agrees."""
    by_metric = exported.by("resilience.executions", "resilience.outcome", resilience__policy=policy)
    calls = seen[policy, "returned"] + seen[policy, "raised"] + seen[policy, "cancelled"]
    assert sum(by_metric.values()) == calls, (policy, by_metric, calls)
    if policy.endswith("-dark"):  # no span, no span event, no duration: the counts only
        assert not [s for s in exported.spans if s.attributes.get("resilience.policy") == policy]
        assert not exported.by(
            "resilience.execution.duration", "resilience.outcome", resilience__policy=policy
        )
        return by_metric
    spans = exported.execution_spans(policy)
    by_span = +Counter(s.attributes["resilience.outcome"] for s in spans)
    by_duration = exported.by(
        "resilience.execution.duration", "resilience.outcome", resilience__policy=policy
    )
    assert by_metric == by_span, (policy, by_metric, by_span)
    assert by_duration == by_metric, (policy, by_duration, by_metric)
    assert by_metric["cancelled"] == seen[policy, "cancelled"], (policy, by_metric, seen)
    errors = sum(by_metric[o] for o in ERROR_OUTCOMES)
    raised = seen[policy, "raised"]
    assert raised <= errors <= raised + seen[policy, "bad"], (policy, by_metric, raised, seen[policy, "bad"])
    by_type = +Counter((s.attributes["resilience.outcome"], s.attributes.get("error.type")) for s in spans)
    duration_points = [
        p
        for p in exported.points.get("resilience.execution.duration", [])
        if p.attributes["resilience.policy"] == policy
    ]
    by_type_metric = +Counter()
    for point in duration_points:
        by_type_metric[point.attributes["resilience.outcome"], point.attributes.get("error.type")] += (
            point.count
        )
    assert by_type == by_type_metric, (policy, by_type, by_type_metric)
    raised_types = +Counter(
        {key.split(":", 1)[1]: count for (name, key), count in seen.items() if name == policy and ":" in key}
    )
    span_types = +Counter(
        s.attributes["error.type"]
        for s in spans
        if s.attributes["resilience.outcome"] in ERROR_OUTCOMES
        and s.attributes["error.type"] != "failed_result"
    )
    assert raised_types == span_types, (policy, raised_types, span_types)
    drill = f"{__name__}.DrillError"
    assert all(s.attributes.get("resilience.dependency.error.type") != drill for s in spans), policy
    for span in spans:
        outcome = span.attributes["resilience.outcome"]
        is_error = span.status.status_code.name == "ERROR"
        assert is_error == (outcome in ERROR_OUTCOMES), (policy, outcome, span.status)
        assert ("error.type" in span.attributes) == (outcome in ERROR_OUTCOMES), (
            policy,
            dict(span.attributes),
        )
    return by_metric


def _check_events(exported: Exported, policy: str) -> None:
    """Each event counted once: span events equal their counters."""
    pairs = (
        ("resilience.retry.scheduled", "resilience.retries"),
        ("resilience.retry.exhausted", "resilience.retry.exhausted"),
        ("resilience.call.rejected", "resilience.rejections"),
        ("resilience.fallback.executed", "resilience.fallback.executions"),
        ("resilience.timeout.expired", "resilience.timeouts"),
        ("resilience.chaos.injected", "resilience.chaos.injections"),
        ("resilience.hedging.started", "resilience.hedging.hedges"),
        ("resilience.hedging.hedge_denied", "resilience.hedging.denied"),
        ("resilience.hedging.won", "resilience.hedging.wins"),
        ("resilience.recovery.attempted", "resilience.recovery.attempts"),
    )
    for event, metric in pairs:
        events = exported.event_attributes(policy, event)
        points = exported.by_attributes(metric, policy)
        shared = {key for attributes in points for key in attributes} & {
            key for attributes in events for key in attributes
        }
        shared -= {"resilience.policy", "resilience.key", "otel.metric.overflow"}
        by_event = +Counter(tuple(sorted((k, v) for k, v in a.items() if k in shared)) for a in events)
        by_metric = +Counter()
        for attributes, count in points.items():
            by_metric[tuple(sorted((k, v) for k, v in attributes if k in shared))] += count
        assert by_event == by_metric, (policy, event, by_event, by_metric)
    assert exported.total("resilience.retry.delay", resilience__policy=policy) == exported.total(
        "resilience.retries", resilience__policy=policy
    )


def _check_breaker_calls(exported: Exported, name: str, stats: Mapping[str, Any]) -> None:
    """A breaker's calls by result equal its statistics' totals."""
    for result, key in (
        ("success", "total_successes"),
        ("failure", "total_failures"),
        ("rejected", "total_rejected"),
        ("ignored", "total_ignored"),
        ("cancelled", "total_cancelled"),
    ):
        exported_calls = exported.total(
            "resilience.circuit_breaker.calls",
            resilience__name=name,
            resilience__circuit_breaker__call_result=result,
        )
        assert exported_calls == stats[key], (name, result, stats)


def _check_alone(exported: Exported, world: World, policy: str, outcomes: Counter[str]) -> None:
    """A pattern used alone: its own statistics equal the metrics."""
    pattern = world.alone[policy]
    stats = pattern.get_stats()
    kind = pattern.kind
    if kind == "circuit_breaker":
        _check_breaker_calls(exported, policy, stats)
        assert (
            exported.total(
                "resilience.circuit_breaker.transitions",
                resilience__name=policy,
                resilience__circuit_breaker__state="open",
            )
            == stats["times_opened"]
        )
        assert exported.total("resilience.rejections", resilience__name=policy) == stats["total_rejected"]
        assert outcomes["rejected"] == stats["total_rejected"]
        _check_breaker_gauges(exported, policy, stats)
    elif kind == "retry":
        assert exported.total("resilience.retries", resilience__name=policy) == stats["retries"], stats
        assert (
            exported.total(
                "resilience.timeouts", resilience__name=policy, resilience__timeout__scope="attempt"
            )
            == stats["attempt_timeouts"]
        ), stats
        assert exported.total("resilience.retry.exhausted", resilience__name=policy) == stats["exhausted"], (
            stats
        )
        assert (
            exported.total(
                "resilience.retry.exhausted", resilience__name=policy, resilience__retry__stop_reason="budget"
            )
            == stats["retries_denied"]
        ), stats
        assert sum(outcomes.values()) == stats["executions"], (outcomes, stats)
        assert outcomes["success"] == stats["first_attempt_successes"], (outcomes, stats)
        assert outcomes["recovered"] == stats["successes_after_retry"], (outcomes, stats)
        assert exported.total("resilience.attempt.duration", resilience__name=policy) == stats["attempts"], (
            stats
        )
        attempt_spans = [s for s in exported.spans if s.attributes.get("resilience.name") == policy]
        assert len(attempt_spans) == stats["attempts"] - stats["executions"], (len(attempt_spans), stats)
    elif kind == "fallback":
        assert (
            exported.total("resilience.fallback.executions", resilience__name=policy)
            == stats["fallbacks_used"]
        )
        assert outcomes["fallback"] == stats["fallback_successes"], (outcomes, stats)
        assert sum(outcomes.values()) == stats["executions"], (outcomes, stats)
    elif kind == "timeout":
        assert exported.total("resilience.timeouts", resilience__name=policy) == stats["timeouts"], stats
        assert outcomes["timeout"] == stats["timeouts"], (outcomes, stats)
        assert sum(outcomes.values()) == stats["executions"], (outcomes, stats)
    elif kind == "bulkhead":
        assert (
            exported.total("resilience.rejections", resilience__name=policy)
            == stats["rejected"] + stats["timed_out"]
        )
        assert outcomes["rejected"] == stats["rejected"] + stats["timed_out"], (outcomes, stats)
        assert sum(outcomes.values()) == stats["total"], (outcomes, stats)
    elif kind == "rate_limiter":
        permits = exported.by(
            "resilience.rate_limiter.permits",
            "resilience.rate_limiter.permit_result",
            resilience__name=policy,
        )
        assert permits["immediate"] + permits["waited"] == stats["admitted"], (permits, stats)
        assert permits["rejected"] == stats["rejected"], (permits, stats)
        assert exported.total("resilience.rejections", resilience__name=policy) == stats["rejected"]
        assert outcomes["rejected"] == stats["rejected"], (outcomes, stats)
    elif kind == "chaos":
        injected = exported.by(
            "resilience.chaos.injections", "resilience.chaos.kind", resilience__name=policy
        )
        assert injected["fault"] == stats["faults"], (injected, stats)
        assert injected["latency"] == stats["latencies"], (injected, stats)
        assert injected["outcome"] == stats["outcomes"], (injected, stats)
        assert sum(outcomes.values()) == stats["runs"], (outcomes, stats)
    elif kind == "hedging":
        assert exported.total("resilience.hedging.hedges", resilience__name=policy) == stats["hedges"], stats
        assert (
            exported.total("resilience.hedging.denied", resilience__name=policy) == stats["hedges_denied"]
        ), stats
        wins = exported.by("resilience.hedging.wins", "resilience.attempt.type", resilience__name=policy)
        # original_wins counts every execution the original answered, the metric only races.
        assert wins["original"] <= stats["original_wins"], (wins, stats)
        assert wins["hedge"] == stats["hedge_wins"], (wins, stats)
        assert sum(outcomes.values()) == stats["executions"], (outcomes, stats)
        assert outcomes["failure"] == stats["failed"], (outcomes, stats)
        attempt_spans = +Counter(
            (
                s.attributes["resilience.outcome"],
                s.attributes.get("error.type"),
                s.attributes["resilience.attempt.type"],
            )
            for s in exported.spans
            if s.attributes.get("resilience.name") == policy and "resilience.attempt" in s.attributes
        )
        timed = +Counter()
        for point in exported.points.get("resilience.attempt.duration", []):
            if point.attributes.get("resilience.name") == policy:
                attributes = point.attributes
                timed[
                    attributes["resilience.outcome"],
                    attributes.get("error.type"),
                    attributes["resilience.attempt.type"],
                ] += point.count
        assert attempt_spans == timed, (attempt_spans, timed)
        assert sum(timed.values()) == stats["executions"] + stats["hedges"], (timed, stats)
    elif kind == "recovery":
        _check_recovery(exported, policy, stats)
        _check_rerun_spans(exported, policy)


def _check_breaker_gauges(exported: Exported, name: str, stats: dict[str, Any]) -> None:
    """The state gauge and the window's rates read what get_stats() reads."""
    states = exported.by(
        "resilience.circuit_breaker.state", "resilience.circuit_breaker.state", resilience__name=name
    )
    assert states == Counter({stats["state"]: 1}), (name, states, stats)
    for gauge, key in (
        ("resilience.circuit_breaker.failure_rate", "failure_rate"),
        ("resilience.circuit_breaker.slow_call_rate", "slow_call_rate"),
    ):
        values = [
            p.value for p in exported.points.get(gauge, []) if p.attributes.get("resilience.name") == name
        ]
        expected = [] if stats[key] is None else [stats[key]]
        assert values == expected, (name, gauge, values, stats)


def _check_rerun_spans(exported: Exported, policy: str) -> None:
    """A recovery with no retry inside opens and times each re-run: its spans equal its timings."""
    spans = +Counter(
        (s.attributes["resilience.name"], s.attributes["resilience.outcome"], s.attributes.get("error.type"))
        for s in exported.spans
        if s.attributes.get("resilience.policy") == policy and "resilience.attempt" in s.attributes
    )
    timed = +Counter()
    for point in exported.points.get("resilience.attempt.duration", []):
        attributes = point.attributes
        if attributes.get("resilience.policy") == policy:
            timed[
                attributes["resilience.name"], attributes["resilience.outcome"], attributes.get("error.type")
            ] += point.count
    assert spans == timed, (policy, spans, timed)


def _check_recovery(exported: Exported, name: str, stats: dict[str, Any]) -> None:
    for strategy, counts in stats["by_strategy"].items():
        for result, key in (("success", "successful"), ("failure", "failed")):
            assert (
                exported.total(
                    "resilience.recovery.attempts",
                    resilience__name=name,
                    resilience__recovery__strategy=strategy,
                    resilience__recovery__result=result,
                )
                == counts[key]
            ), (name, strategy, result, stats)
    assert (
        exported.total("resilience.recovery.error_patterns", resilience__name=name)
        == stats["patterns_detected"]
    )


def _check_manager(exported: Exported, world: World, outcomes: dict[str, Counter[str]]) -> None:
    assert world.manager is not None
    stats = world.manager.get_resilience_statistics()
    dark = f"{world.tag}-dark"
    assert exported.total("resilience.fallback.executions", resilience__policy=dark) == stats["policies"].get(
        dark, {}
    ).get("fallback", 0)
    assert exported.total("resilience.timeouts", resilience__policy=dark) == stats["policies"].get(
        dark, {}
    ).get("timeouts", 0)
    for policy in world.policies:
        counts = stats["policies"].get(policy)
        if counts is None:
            assert not outcomes[policy], policy
            continue
        expected = {outcome: counts[key] for outcome, key in OUTCOME_STATS.items()}
        expected["failure"] = counts["failed"] - counts["rejected"] - counts["timeouts"]
        assert +Counter(expected) == outcomes[policy], (policy, expected, outcomes[policy])
        assert counts["total"] == sum(outcomes[policy].values())
    for name, cb_stats in stats["circuit_breakers"].items():
        _check_breaker_calls(exported, name, cb_stats)
        assert (
            exported.total(
                "resilience.rejections", resilience__name=name, resilience__pattern="circuit_breaker"
            )
            == (cb_stats["total_rejected"])
        )
        _check_breaker_gauges(exported, name, cb_stats)
    for name, bh_stats in stats["bulkheads"].items():
        assert exported.total(
            "resilience.rejections", resilience__name=name, resilience__pattern="bulkhead"
        ) == (bh_stats["rejected"] + bh_stats["timed_out"]), (name, bh_stats)
    keyed = f"{world.tag}-keyed"
    counts = world.keyed.get_stats()["executions"]
    expected = {outcome: counts[key] for outcome, key in OUTCOME_STATS.items()}
    expected["failure"] = counts["failed"] - counts["rejected"] - counts["timeouts"]
    assert +Counter(expected) == outcomes[keyed], (keyed, expected, outcomes[keyed])
    spans = exported.execution_spans(keyed)
    assert all(span.attributes.get("resilience.key", "").startswith("k") for span in spans), keyed
    by_key = +Counter((s.attributes["resilience.key"], s.attributes["resilience.outcome"]) for s in spans)
    metric_by_key = +Counter()
    for point in exported.points.get("resilience.executions", []):
        if point.attributes["resilience.policy"] == keyed:
            metric_by_key[point.attributes.get("resilience.key"), point.attributes["resilience.outcome"]] += (
                point.value
            )
    shown = {key for key, _ in metric_by_key} - {"_OTHER", None}
    assert len(shown) <= 2, metric_by_key
    folded = +Counter()
    for (key, outcome), count in by_key.items():
        folded[key if key in shown else "_OTHER", outcome] += count
    assert folded == metric_by_key, (folded, metric_by_key)
    _check_rerun_spans(exported, f"{world.tag}-recovering")
    if stats.get("error_recovery"):
        _check_recovery(exported, world.manager.recovery_system.name, stats["error_recovery"])


STEP = st.tuples(
    st.integers(min_value=0, max_value=5 * 19 - 1),
    st.sampled_from(BEHAVIOURS),
    st.booleans(),
    st.sampled_from((0.0, 0.0, 0.0, 0.5, 2.5)),
)


@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=30, max_size=60), in_process=st.booleans())
def test_metrics_statistics_and_spans_agree(
    steps: list[tuple[int, str, bool, float]], in_process: bool
) -> None:
    """Whatever the mix of calls, every count agrees across stats, metrics, spans and span events."""
    with instrumented() as otel:
        if in_process:
            instrument(
                otel.tracer_provider, otel.meter_provider, otel.logger_provider, in_process_histograms=True
            )
        world = World.build()
        seen = asyncio.run(_run_mix(world, steps))
        exported = Exported(otel, in_process=in_process)
        outcomes: dict[str, Counter[str]] = {}
        for policy in world.targets():
            outcomes[policy] = _check_executions(exported, policy, seen)
            if not policy.endswith("-dark"):
                _check_events(exported, policy)
        for policy in world.alone:
            _check_alone(exported, world, policy, outcomes[policy])
        _check_manager(exported, world, outcomes)
