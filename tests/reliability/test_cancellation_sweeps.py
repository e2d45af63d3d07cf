"""Cancellation at every suspension point, pattern by pattern, in guarded blocks and through whole policies.

Each sweep runs one call as a task and cancels it after ``k`` turns of the event loop, for
``k = 0, 1, 2, ...`` until a run completes normally; every run starts from fresh state (a new
manager, a policy of its own name). After each cancelled run:

* the ``CancelledError`` reaches the caller untouched (never a fallback value, a default or a
  timeout), and the task's ``cancelling()`` count is the caller's own (1; Python 3.11+);
* no slot, probe or permit is left taken: the bulkhead has nothing active or waiting and its
  counts add up, a breaker has no half-open probe in flight, a rate limiter has nobody waiting;
* a retry budget holds exactly the retries and hedges that ran;
* every invocation of the dependency (and of the fallback) ended: nothing is orphaned, and no
  task is left on the loop;
* the loop's exception handler saw nothing (no "Task was destroyed but it is pending", no
  "exception was never retrieved");
* the policy's statistics and the metrics the OpenTelemetry SDK collects agree;
* and the next call through the same policy works.

Most sweeps run on a :class:`~otel_resilience.testing.FakeClock`, whose sleeps (backoffs, rate
limiter waits, hedge delays, recovery delays, chaos latency) each take one loop turn, so that a
run is the same sequence of suspension points every time. The timeout sweep uses real deadlines.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
from collections.abc import Callable
from typing import Any

import pytest
from otel_support import Otel

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    KeyedPolicyView,
    PolicyHandle,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.testing import AttemptRecorder, FakeClock

_NAMES = itertools.count()
LIMIT = 400
"""No sweep needs more loop turns than this before its call completes."""


def fresh_name(prefix: str) -> str:
    """A policy name no earlier run used: each run's telemetry series are its own."""
    return f"{prefix}-{next(_NAMES)}"


async def turns(n: int) -> None:
    """Give the loop ``n`` turns."""
    for _ in range(n):
        await asyncio.sleep(0)


class Dependency:
    """An async dependency that takes ``steps`` loop turns per call and fails its first ``failures`` calls.

    ``failures`` holds the exceptions raised by calls 1, 2, ...; later calls return ``"fresh"``.
    Counts how every call ended, so that an orphaned call shows.
    """

    def __init__(self, steps: int = 2, failures: tuple[BaseException, ...] = ()) -> None:
        self.steps = steps
        self.failures = failures
        self.started = 0
        self.ended = 0
        self.cancelled = 0

    async def __call__(self) -> str:
        self.started += 1
        number = self.started
        try:
            await turns(self.steps)
            if number <= len(self.failures):
                raise self.failures[number - 1]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.ended += 1
        return "fresh"

    @property
    def running(self) -> int:
        return self.started - self.ended


class Scenario:
    """One run of a sweep: a fresh policy, its call, and what must hold afterwards.

    Subclasses build ``self.handle`` (a policy of its own name) and ``self.dependency`` in
    :meth:`setup`; the call runs through the key ``"k"``.
    """

    clock: FakeClock | None
    handle: PolicyHandle
    dependency: Dependency
    budget: RetryBudget | None = None
    budget_base = 0.0
    """The budget's retries when the call starts (what the policy's set-up spent)."""
    began = False
    """Whether the call was made (a task cancelled before its first turn never makes it)."""

    def __init__(self, otel: Otel) -> None:
        self.otel = otel
        self.clock = FakeClock(1000.0)
        self.manager = ResilienceManager(clock=self.clock)
        self.name = fresh_name(type(self).__name__)

    async def setup(self) -> None:
        """Build the policy and whatever runs beside the swept call."""
        raise NotImplementedError

    @property
    def view(self) -> KeyedPolicyView:
        return self.handle.for_key("k")

    async def call(self) -> Any:
        """The call the sweep cancels."""
        return await self.view.execute(self.dependency)

    async def settle(self) -> None:
        """Let whatever ran beside the swept call finish."""

    def expected(self) -> object:
        """What the call returns when it completes."""
        return "fresh"

    def budget_spent(self) -> int:
        """The retries and hedges that ran, which the budget must hold (and no more)."""
        return max(0, self.dependency.started - 1)

    def check(self, cancelled: bool) -> None:
        """What must hold after a run, cancelled or not."""
        check_policy(self.otel, self.handle, self.view, cancelled=cancelled and self.began)
        assert self.dependency.running == 0
        if self.budget is not None:
            assert self.budget.get_stats()["retries"] - self.budget_base == self.budget_spent()

    async def next_call_works(self) -> None:
        if self.clock is not None:
            self.clock.advance(60.0)  # past any breaker period, rate limiter wait, budget window
        follow_up = Dependency(steps=0)
        assert await self.view.execute(follow_up) == "fresh"


def metric_total(metrics: dict[str, Any], name: str, **attributes: str) -> float:
    """The sum of ``name``'s points whose attributes include ``attributes`` (keys with dots as ``__``).

    ``metrics`` is one collection (:meth:`Otel.metrics`): collecting is the costly part.
    """
    wanted = {key.replace("__", "."): value for key, value in attributes.items()}
    metric = metrics.get(name)
    if metric is None:
        return 0.0
    return sum(p.value for p in metric.data.data_points if wanted.items() <= dict(p.attributes).items())


def check_policy(otel: Otel, handle: PolicyHandle, view: KeyedPolicyView, *, cancelled: bool) -> None:
    """Nothing taken, every count adds up, and the exported metrics say what the statistics say."""
    stats = handle.get_stats()
    name = handle.name
    metrics = otel.metrics()
    executions = stats["executions"]
    ended = executions["successful"] + executions["fallback"] + executions["failed"] + executions["cancelled"]
    assert ended == executions["total"], executions
    assert executions["cancelled"] == (1 if cancelled else 0), executions
    for outcome, key in (("cancelled", "cancelled"), ("fallback", "fallback"), ("timeout", "timeouts")):
        exported = metric_total(
            metrics, "resilience.executions", resilience__policy=name, resilience__outcome=outcome
        )
        assert exported == executions[key], (outcome, exported, executions)
    bulkhead = stats["bulkhead"]
    if bulkhead is not None:
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert (
            bulkhead["total"]
            == bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"]
        )
        assert metric_total(metrics, "resilience.bulkhead.active", resilience__name=name) == 0
        assert metric_total(metrics, "resilience.bulkhead.queued", resilience__name=name) == 0
    breaker = view.circuit_breaker
    if breaker is not None:
        counts = breaker.get_stats()
        assert counts["half_open_in_flight"] == 0, counts
        for result, key in (
            ("cancelled", "total_cancelled"),
            ("success", "total_successes"),
            ("failure", "total_failures"),
        ):
            exported = metric_total(
                metrics,
                "resilience.circuit_breaker.calls",
                resilience__name=name,
                resilience__circuit_breaker__call_result=result,
            )
            assert exported == counts[key], (result, exported, counts)
    limiter = stats["rate_limiter"]  # every limiter of the policy, those a reload replaced included
    if limiter is not None:
        assert limiter["waiting"] == 0, limiter
        for result in ("cancelled", "waited", "rejected", "immediate"):
            exported = metric_total(
                metrics,
                "resilience.rate_limiter.permits",
                resilience__name=name,
                resilience__rate_limiter__permit_result=result,
            )
            expected = limiter["admitted"] - limiter["waited"] if result == "immediate" else limiter[result]
            assert exported == expected, (result, exported, limiter)


_CANCELLED = object()


_COUNTED = sys.version_info >= (3, 11)
"""Whether tasks count their cancellations (``Task.cancelling``, Python 3.11+)."""


def _cancelling(task: asyncio.Task[Any]) -> int | None:
    """The task's ``cancelling()`` count; ``None`` before Python 3.11, where tasks count none."""
    return task.cancelling() if sys.version_info >= (3, 11) else None


async def _caller(scenario: Scenario) -> tuple[object, int | None]:
    """Make the scenario's call as a caller does; return its result (or ``_CANCELLED``) and the task's cancelling() count."""
    task = asyncio.current_task()
    assert task is not None
    scenario.began = True
    try:
        result = await scenario.call()
    except asyncio.CancelledError:
        return _CANCELLED, _cancelling(task)
    return result, _cancelling(task)


async def cancel_at_each_point(make: Callable[[], Scenario], *, limit: int = LIMIT) -> int:
    """Run the scenario's call cancelled after k loop turns, k = 0, 1, ...; return the k at which it completed."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        for k in range(limit):
            scenario = make()
            await scenario.setup()
            if scenario.budget is not None:
                scenario.budget_base = scenario.budget.get_stats()["retries"]
            task = asyncio.create_task(_caller(scenario))
            await turns(k)
            completed = task.done()
            if not completed:
                task.cancel()
            try:
                result, cancelling = await task
            except asyncio.CancelledError:  # cancelled before the caller ran at all (k = 0)
                assert k == 0
                result, cancelling = _CANCELLED, (1 if _COUNTED else None)
            await scenario.settle()
            if completed:
                assert result == scenario.expected(), k
                assert cancelling == (0 if _COUNTED else None)
            else:
                assert result is _CANCELLED, (
                    f"k={k}: the cancellation was swallowed, the caller got {result!r}"
                )
                assert cancelling == (1 if _COUNTED else None), (
                    f"k={k}: the caller's cancelling() count is {cancelling}"
                )
            scenario.check(cancelled=not completed)
            await scenario.next_call_works()
            await turns(2)
            assert asyncio.all_tasks() == {asyncio.current_task()}, k
            assert not reported, (k, reported)
            if completed:
                gc.collect()  # a task dropped while pending, a future's error never retrieved: reported now
                assert not reported, reported
                return k
    finally:
        loop.set_exception_handler(previous)
    raise AssertionError(f"the call never completed within {limit} loop turns")


# -- the patterns, one at a time -------------------------------------------------------------------


class BulkheadQueued(Scenario):
    """The call queues behind a running one for the only slot, then runs."""

    async def setup(self) -> None:
        self.handle = self.manager.policy(
            self.name,
            ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=30.0)),
        )
        self.dependency = Dependency(steps=2)
        self.holder = asyncio.create_task(self.view.execute(Dependency(steps=3)))
        await asyncio.sleep(0)
        assert self.view.bulkhead is not None
        assert self.view.bulkhead.get_stats()["active"] == 1

    async def settle(self) -> None:
        assert await self.holder == "fresh"


class RetryBackoff(Scenario):
    """Two failed attempts, each followed by a backoff, then a success; the retries draw on a budget."""

    async def setup(self) -> None:
        assert self.clock is not None
        self.budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10.0, clock=self.clock)
        config = ResilienceConfig(
            retry_policy=RetryPolicy(max_attempts=3, initial_delay=1.0, budget=self.budget),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        )
        self.handle = self.manager.policy(self.name, config)
        for _ in range(3):  # first attempts, so that the budget allows retries
            await self.view.execute(Dependency(steps=0))
        self.dependency = Dependency(steps=1, failures=(ConnectionError("down"), ConnectionError("down")))

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.budget is not None
        assert self.budget.get_stats()["first_attempts"] == 4 - (self.dependency.started == 0)


class Hedged(Scenario):
    """A hedged call: attempts race, the losers are cancelled and awaited; hedges draw on a budget."""

    def __init__(self, otel: Otel, mode: str) -> None:
        super().__init__(otel)
        self.mode = mode

    async def setup(self) -> None:
        assert self.clock is not None
        self.budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10.0, clock=self.clock)
        delay = 0.5 if self.mode == "latency" else None
        config = ResilienceConfig(
            hedging=HedgingConfig(mode=self.mode, delay=delay, max_attempts=3, budget=self.budget),
        )
        self.handle = self.manager.policy(self.name, config)
        for _ in range(3):
            await self.view.execute(Dependency(steps=0))
        # The original fails in fallback mode (so a hedge starts); every attempt takes a few turns.
        failures = (ConnectionError("down"),) if self.mode == "fallback" else ()
        self.dependency = Dependency(steps=3, failures=failures)


class TimeoutScopes(Scenario):
    """Real deadlines, so short that each expires within a loop turn or two; a fallback answers the timeout.

    ``scope="attempt"``: each of two attempts is cut by its own timeout; ``"total"``: the policy's
    deadline cuts the only attempt.
    """

    def __init__(self, otel: Otel, scope: str) -> None:
        super().__init__(otel)
        self.scope = scope

    async def setup(self) -> None:
        self.clock = None
        self.manager = ResilienceManager()
        short = 0.000_01
        config = ResilienceConfig(
            timeout=short if self.scope == "total" else 5.0,
            retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, attempt_timeout=short)
            if self.scope == "attempt"
            else None,
            fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="default"),
        )
        self.handle = self.manager.policy(self.name, config)
        self.dependency = Dependency(steps=10_000)  # only its deadline ends it

    def expected(self) -> object:
        return "default"


class FallbackRunning(Scenario):
    """The call fails; an async fallback function takes a few turns to answer."""

    async def setup(self) -> None:
        self.fallback = Dependency(steps=3)

        async def alternative(error: Exception) -> str:
            return await self.fallback() + " fallback"

        config = ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative
            ),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        )
        self.handle = self.manager.policy(self.name, config)
        self.dependency = Dependency(steps=1, failures=(ConnectionError("down"),))

    def expected(self) -> object:
        return "fresh fallback"

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.fallback.running == 0


class CachedFallback(Scenario):
    """A cached-value fallback whose cache service is async and slow: cancelled while it reads or writes."""

    class SlowCache:
        def __init__(self) -> None:
            self.data: dict[str, object] = {"answer:k": "cached"}
            self.busy = 0

        async def get(self, key: str) -> object:
            self.busy += 1
            try:
                await turns(2)
                return self.data.get(key)
            finally:
                self.busy -= 1

        async def set(self, key: str, value: object) -> None:
            self.busy += 1
            try:
                await turns(2)
                self.data[key] = value
            finally:
                self.busy -= 1

    async def setup(self) -> None:
        self.cache = self.SlowCache()
        config = ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.CACHED_VALUE, cache_key="answer", cache_service=self.cache
            ),
        )
        self.handle = self.manager.policy(self.name, config)
        self.dependency = Dependency(steps=1, failures=(ConnectionError("down"),))

    def expected(self) -> object:
        return "cached"

    async def next_call_works(self) -> None:
        await super().next_call_works()
        # The success is written to the cache after the call, by a task of its own (it never
        # delays the caller): let it finish.
        for _ in range(LIMIT):
            if self.cache.data["answer:k"] == "fresh" and self.cache.busy == 0:
                break
            await asyncio.sleep(0)
        assert self.cache.data["answer:k"] == "fresh"

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.cache.busy == 0


class RecoveryRunning(Scenario):
    """A recovery rule re-runs the call: after a delay (RETRY), or after an async restart hook (RESTART)."""

    def __init__(self, otel: Otel, strategy: RecoveryStrategy) -> None:
        super().__init__(otel)
        self.strategy = strategy

    async def setup(self) -> None:
        self.restarts = Dependency(steps=2)

        async def restart() -> None:
            await self.restarts()

        hook = restart if self.strategy is RecoveryStrategy.RESTART else None
        self.manager.recovery_system.register_recovery_rule(
            ConnectionResetError,
            RecoveryAction(strategy=self.strategy, max_attempts=2, delay=1.0, restart_hook=hook),
        )
        config = ResilienceConfig(
            enable_recovery=True, circuit_breaker=CircuitBreakerConfig(failure_threshold=10)
        )
        self.handle = self.manager.policy(self.name, config)
        self.dependency = Dependency(steps=1, failures=(ConnectionResetError("reset"),))

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.restarts.running == 0
        recovery = self.manager.recovery_system.get_stats()
        assert recovery["attempts"] == recovery["successful_recoveries"] + recovery["failed_recoveries"]
        assert recovery["failed_recoveries"] == 0, "a cancelled recovery is no failed one"


class RateLimited(Scenario):
    """The only permit is taken: the call waits for the next one, then runs."""

    async def setup(self) -> None:
        config = ResilienceConfig(
            rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0, max_waiting=2)
        )
        self.handle = self.manager.policy(self.name, config)
        await self.view.execute(Dependency(steps=0))
        self.dependency = Dependency(steps=1)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        counts = stats["rate_limiter"]
        # Each call that asked took its permit or gave it back, never both, never neither.
        assert counts["admitted"] + counts["cancelled"] == stats["executions"]["total"]


class HalfOpenProbe(Scenario):
    """The call is the probe of a half-open breaker (it moves it there), inside a retry and a bulkhead."""

    async def setup(self) -> None:
        assert self.clock is not None
        config = ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=10.0),
            retry_policy=RetryPolicy(max_attempts=2, initial_delay=1.0, retry_on=(ConnectionResetError,)),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1),
        )
        self.handle = self.manager.policy(self.name, config)
        with pytest.raises(ConnectionError):
            await self.view.execute(Dependency(steps=0, failures=(ConnectionError("down"),)))
        self.clock.advance(10.0)
        self.dependency = Dependency(steps=3)

    async def next_call_works(self) -> None:
        # The probe permit was given back: the next call probes and closes the breaker.
        await super().next_call_works()
        breaker = self.view.circuit_breaker
        assert breaker is not None
        assert breaker.get_stats()["state"] == "closed"


async def test_a_call_queued_in_a_bulkhead(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: BulkheadQueued(otel)) > 3


async def test_a_retry_and_its_backoffs(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: RetryBackoff(otel)) > 4


@pytest.mark.parametrize("mode", ["latency", "parallel", "fallback"])
async def test_a_hedged_call_and_its_attempts(otel: Otel, mode: str) -> None:
    assert await cancel_at_each_point(lambda: Hedged(otel, mode)) > 3


@pytest.mark.parametrize("scope", ["attempt", "total"])
async def test_a_call_under_a_deadline(otel: Otel, scope: str) -> None:
    """The caller's own cancellation is never the scope's timeout (nor the fallback's default)."""
    assert await cancel_at_each_point(lambda: TimeoutScopes(otel, scope)) > 0


async def test_a_fallback_function_running(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: FallbackRunning(otel)) > 3


async def test_a_cached_value_fallback_reading_a_slow_cache(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: CachedFallback(otel)) > 3


@pytest.mark.parametrize("strategy", [RecoveryStrategy.RETRY, RecoveryStrategy.RESTART])
async def test_a_recovery_rule_running(otel: Otel, strategy: RecoveryStrategy) -> None:
    assert await cancel_at_each_point(lambda: RecoveryRunning(otel, strategy)) > 3


async def test_a_call_waiting_for_a_rate_limiter_permit(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: RateLimited(otel)) > 2


async def test_the_probe_of_a_half_open_breaker(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: HalfOpenProbe(otel)) > 3


class Guards(Scenario):
    """A block under ``limiter.guard()``, ``breaker.guard()`` and ``bulkhead.slot()``: it waits for a permit and a slot.

    Each guard counts its block as an execution of its pattern's own pipeline, as a call would
    be: a block cancelled while a guard waited (or inside it) is one cancelled execution there.
    """

    async def setup(self) -> None:
        assert self.clock is not None
        self.limiter = RateLimiter(
            f"{self.name}-limiter", RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0), clock=self.clock
        )
        self.breaker = CircuitBreaker(
            f"{self.name}-breaker",
            CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=1.0),
            clock=self.clock,
        )
        self.bulkhead = Bulkhead(
            f"{self.name}-bulkhead", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30.0)
        )
        assert self.limiter.try_acquire()  # the call waits for the next permit
        with pytest.raises(ConnectionError):  # and probes the half-open breaker
            await self.breaker.call(Dependency(steps=0, failures=(ConnectionError("down"),)))
        self.clock.advance(1.0)
        self.released = asyncio.Event()

        async def hold() -> None:
            async with self.bulkhead.slot():
                await self.released.wait()

        self.holder = asyncio.create_task(hold())
        self.releaser = asyncio.create_task(self.release_after(4))
        await asyncio.sleep(0)
        self.dependency = Dependency(steps=2)
        self.entered: list[str] = []

    async def release_after(self, n: int) -> None:
        await turns(n)
        self.released.set()

    async def call(self) -> Any:
        self.entered.append("limiter")
        async with self.limiter.guard():
            self.entered.append("breaker")
            async with self.breaker.guard():
                self.entered.append("bulkhead")
                async with self.bulkhead.slot():
                    return await self.dependency()

    async def settle(self) -> None:
        await self.releaser
        await self.holder

    def check(self, cancelled: bool) -> None:
        metrics = self.otel.metrics()
        for kind, pattern in (
            ("limiter", self.limiter),
            ("breaker", self.breaker),
            ("bulkhead", self.bulkhead),
        ):
            outcomes = {
                dict(point.attributes)["resilience.outcome"]: point.value
                for point in metrics["resilience.executions"].data.data_points
                if dict(point.attributes).get("resilience.policy") == pattern.name and point.value
            }
            held = 1 if kind == "bulkhead" else 0  # the holder's block
            reached = kind in self.entered
            if reached and cancelled:
                assert outcomes.get("cancelled") == 1, (kind, outcomes)
            assert sum(outcomes.values()) == held + reached + (kind == "breaker"), (kind, outcomes)
        bulkhead = self.bulkhead.get_stats()
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert self.limiter.get_stats()["waiting"] == 0
        assert self.breaker.get_stats()["half_open_in_flight"] == 0
        assert self.dependency.running == 0

    async def next_call_works(self) -> None:
        assert self.clock is not None
        self.clock.advance(60.0)
        self.dependency = Dependency(steps=0)
        self.entered = []
        assert await self.call() == "fresh"
        assert self.breaker.get_stats()["state"] == "closed"


async def test_guarded_blocks_waiting_for_a_permit_a_probe_and_a_slot(otel: Otel) -> None:
    assert await cancel_at_each_point(lambda: Guards(otel)) > 4


# -- policies: a keyed policy reloaded meanwhile, and every pattern at once ----------------------------


def reloadable(slots: int, algorithm: str, answer: str) -> ResilienceConfig:
    return ResilienceConfig(
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value=answer, handle_exceptions=(KeyError,)
        ),
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0, max_waiting=4, algorithm=algorithm),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=1.0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        bulkhead_config=BulkheadConfig(max_concurrent=slots, max_waiting=4, timeout=30.0),
    )


class ReloadedKey(Scenario):
    """A key's call waits for a permit and a slot while the policy is reloaded (``reload_after`` turns in)."""

    def __init__(self, otel: Otel, reload_after: int, change: str) -> None:
        super().__init__(otel)
        self.reload_after = reload_after
        self.change = change

    async def setup(self) -> None:
        self.handle = self.manager.policy(self.name, reloadable(1, "token_bucket", "old"))
        self.holder = asyncio.create_task(self.view.execute(Dependency(steps=4)))
        await asyncio.sleep(0)
        self.reloader = asyncio.create_task(self.reload())
        self.dependency = Dependency(steps=2)

    async def reload(self) -> None:
        await turns(self.reload_after)
        if self.change == "algorithm":  # a new limiter (the waiter stays on the old one) and more slots
            self.manager.reconfigure(self.name, reloadable(2, "sliding_window", "new"))
        else:
            self.manager.reconfigure(self.name, reloadable(1, "token_bucket", "new"))

    async def settle(self) -> None:
        assert await self.holder == "fresh"
        await self.reloader
        assert self.handle.generation == 2


@pytest.mark.parametrize("change", ["algorithm", "fallback"])
@pytest.mark.parametrize("reload_after", [0, 1, 2, 3])
async def test_a_keyed_call_while_its_policy_is_reloaded(otel: Otel, reload_after: int, change: str) -> None:
    assert await cancel_at_each_point(lambda: ReloadedKey(otel, reload_after, change)) > 2


def recorder_into(seen: list[int]) -> AttemptRecorder:
    """A step that records the attempt number of every run it sees into ``seen`` (shared by its policy's keys)."""
    recorder = AttemptRecorder()
    recorder.seen = seen
    return recorder


class FullPolicy(Scenario):
    """Every pattern at once: the call waits for a permit, is retried, hedged, queued, delayed, recovered, answered.

    The dependency always fails with an error that the retry retries, a recovery rule re-runs
    once, and only the fallback answers. Steps of our own count what ran: the recovery's runs,
    the retry's attempts and the attempts of each race the bulkhead admitted (a hedge cancelled
    in its queue never ran), so that the budget can be checked.
    """

    def __init__(self, otel: Otel, mode: str) -> None:
        super().__init__(otel)
        self.mode = mode

    async def setup(self) -> None:
        assert self.clock is not None
        self.budget = RetryBudget(ratio=1.0, min_retries_per_second=1.0, window=30.0, clock=self.clock)
        self.manager.recovery_system.register_recovery_rule(
            KeyError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=1.0)
        )
        self.fallback = Dependency(steps=2)

        async def alternative(error: Exception) -> str:
            return await self.fallback() + " fallback"

        self.runs: list[int] = []
        self.attempts: list[int] = []
        self.raced: list[int] = []
        config = ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.ALTERNATIVE_FUNCTION,
                fallback_function=alternative,
                handle_exceptions=(KeyError,),
            ),
            rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0, max_waiting=3),
            timeout=50.0,
            enable_recovery=True,
            retry_policy=RetryPolicy(
                max_attempts=3, initial_delay=1.0, budget=self.budget, attempt_timeout=40.0
            ),
            hedging=HedgingConfig(
                mode=self.mode, delay=0.5 if self.mode == "latency" else None, max_attempts=2
            ),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=3, timeout=30.0),
            chaos=ChaosConfig(latency_rate=1.0, latency=0.25, seed=1),
            extra_strategies=(
                ExtraStrategy(lambda _policy: recorder_into(self.runs), inside="recovery"),
                ExtraStrategy(lambda _policy: recorder_into(self.attempts), inside="retry"),
                ExtraStrategy(lambda _policy: recorder_into(self.raced), inside="bulkhead"),
            ),
        )
        self.handle = self.manager.policy(self.name, config)
        await self.view.execute(Dependency(steps=0))  # takes the burst: the call waits for a permit
        for seen in (self.runs, self.attempts, self.raced):
            seen.clear()
        wrong = KeyError("wrong")
        self.dependency = Dependency(steps=2, failures=(wrong,) * 1000)

    def expected(self) -> object:
        return "fresh fallback"

    def budget_spent(self) -> int:
        # The retries that ran (attempts after the first of each run of the retry) and the hedges
        # that ran (attempts of a race past the bulkhead that are not the attempt the race was run
        # for: a hedge cancelled in the bulkhead's queue never ran, and is given back).
        retries = sum(1 for attempt in self.attempts if attempt not in self.runs)
        hedges = sum(1 for attempt in self.raced if attempt not in self.attempts)
        return retries + hedges

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.fallback.running == 0


@pytest.mark.parametrize("mode", ["latency", "parallel", "fallback"])
async def test_a_policy_with_every_pattern(otel: Otel, mode: str) -> None:
    assert await cancel_at_each_point(lambda: FullPolicy(otel, mode)) > 10


async def test_the_sweep_notices_a_swallowed_cancellation(otel: Otel) -> None:
    """The sweep itself: a dependency that swallows its cancellation and returns is caught out."""

    class Swallowing(Scenario):
        async def setup(self) -> None:
            self.handle = self.manager.policy(self.name, ResilienceConfig())
            self.dependency = Dependency(steps=0)

        async def call(self) -> Any:
            async def swallow() -> str:
                try:
                    await turns(3)
                except asyncio.CancelledError:
                    return "swallowed"
                return "fresh"

            return await self.view.execute(swallow)

    with pytest.raises(AssertionError, match="swallowed"):
        await cancel_at_each_point(lambda: Swallowing(otel))
