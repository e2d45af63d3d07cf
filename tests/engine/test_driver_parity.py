"""The sync and the async driver decide everything the same way (a differential property test).

A policy is drawn (any subset of fallback, rate limiter, total timeout, recovery rules, retry with
``retry_on`` and ``retry_on_result``, hedging, breaker with its thresholds and windows, bulkhead,
attempt timeout, chaos, and a link of the user's own whose hooks decide every action the engine
has) with a script of what each call of the protected function does. The same script runs
through :meth:`ResilienceManager.execute_with_resilience_sync` and
:meth:`ResilienceManager.execute_with_resilience`, each with a fresh manager on a fresh fake
clock (no real time passes) and fresh OpenTelemetry SDK providers, and the two runs must agree
on what the caller sees (the result, or the error's type, message, notes and chaining), how
often the function ran, every count of ``get_resilience_statistics()`` and of each link, the
hooks the links were asked, and the telemetry: spans (names, statuses, attributes, events),
metric points and log records. Some runs have no SDK at all (the engine's shortcuts for a quiet
hub): they are compared on everything but the telemetry.

The async runs use an event loop on the fake clock that moves it on to the next timer when
nothing is ready (virtual time): a deadline's timer fires while a call sleeps. A slow sync call
sleeps until the deadline at most, as the library's own injected delay does (docs/design.md,
``sleep_sync_within_deadline``), so that both drivers end it at the same time.

What the drivers do differently by design is encoded rather than compared:

* hedging is async only: the sync API raises ``TypeError`` and the function never runs (README,
  "Hedging": "**Async only**: the sync API (`run_sync`, `execute_with_resilience_sync`, ...)
  raises `TypeError`"); the refusal is the hedging link's, inside the rate limiter, which sheds
  load before anything else runs (``manager/stages.py``), so a refused call takes a permit;
* an attempt's duration is wall-clock time (docs/telemetry.md, ``resilience.attempt.duration``):
  only how many were recorded is compared;
* a deadline that ends a call is a cancellation in a task and, in a thread, an error the steps
  between the call and the deadline's scope see as a failure (``DeadlineReachedError``: "The
  steps between see it as a failure, as they would see the timeout of a callee that honoured
  current_deadline"). So once an execution reached its total deadline, the steps inside count
  it differently and only what the caller saw up to it is compared; and a link of the user's own
  is placed outside the attempt timeout when there is one. A value that comes back after the
  deadline because a plain hook blocked the loop is handed on by the async scope, which cuts
  only by cancelling, and dropped for the timeout by the sync one (README, "Timeout
  management": "Sync code cannot be pre-empted").
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from otel_support import instrumented
from parity_support import FakeTimeLoop, LoopClock, error_shown, logs_seen, points_seen, shown, spans_seen

from otel_resilience import (
    BulkheadConfig,
    ChaosConfig,
    CircuitBreakerConfig,
    CountWindow,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
    TimeWindow,
)
from otel_resilience.engine.deadline import passes_to_its_scope, sleep_sync_within_deadline
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.step import Action, Answer, Call, Rejected, Step, Wait
from otel_resilience.engine.step import Retry as RunAgain
from otel_resilience.errors import ExecutionRejectedError
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.circuit_breaker.config import DEFAULT_FAILURE_THRESHOLD
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.telemetry import current_listener, install_default, uninstrument
from otel_resilience.testing import FakeClock

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

OUTCOMES = ("ok", "bad", "boom", "retryable", "fatal", "rejected", "timeout", "interrupt")
"""What one call does: return a value, return one every result predicate rejects, return one every
result predicate raises on, raise a retried error, raise one only ``retry_on=(Exception,)``
retries, raise a rejection of a limit of the dependency's own, raise the builtin ``TimeoutError``
(an error of the dependency, not a deadline of ours), raise a ``BaseException`` that is no
``Exception`` (an interrupt: never a failure)."""
DURATIONS = {"slow": 2.0, "slower": 3.0}
"""Calls that take time (seconds), then return ``"bad"``: an attempt timeout (2.5 s) cuts the slower one."""

START = 1000.0
_examples = itertools.count()


class FlakyError(ConnectionError):
    """Retried by every drawn retry policy."""


class FatalError(ValueError):
    """Retried only by a policy that retries every ``Exception``."""


class ShedError(ExecutionRejectedError):
    """A rejection the function itself raises (a limit of the dependency's own)."""


class Interrupt(BaseException):
    """An interrupt: neither a success nor a failure of the dependency."""


class PredicateError(Exception):
    """Raised by a result predicate (``"boom"``), by the alternative function and by the cache."""


def is_bad(result: object) -> bool:
    """The result predicate of every drawn policy: ``"bad"`` is a failed result; it raises on ``"boom"``."""
    if result == "boom":
        raise PredicateError(result)
    return result == "bad"


def alternative(error: Exception, *args: object, **kwargs: object) -> str:
    """The ``ALTERNATIVE_FUNCTION`` fallback (sync: both drivers call it); it fails for a ``TimeoutError``."""
    if isinstance(error, TimeoutError):
        raise PredicateError("no alternative")
    return f"alt:{type(error).__name__}:{args}:{sorted(kwargs)}"


def first_alternative(*_: object, **__: object) -> str:
    """The first ``MULTIPLE_ATTEMPTS`` function: it fails."""
    raise FatalError("first alternative")


def second_alternative(*_: object, **__: object) -> str:
    """The second ``MULTIPLE_ATTEMPTS`` function: it answers."""
    return "second alternative"


def recovered_value(*_: object, **__: object) -> str:
    """A recovery FALLBACK rule's function (sync: both drivers call it)."""
    return "recovered-by-function"


def asked_delay(outcome: object) -> float | None:
    """``RetryPolicy.delay_from``: a rejection asks for 0.5 s, anything else takes the strategy's."""
    return 0.5 if isinstance(outcome, ExecutionRejectedError) else None


class DictCache:
    """A sync cache service for ``CACHED_VALUE``: both drivers read and write it inline; every third read fails."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.reads = 0

    def get(self, key: str) -> Any:
        self.reads += 1
        if self.reads % 3 == 0:
            raise PredicateError("cache down")
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


class _ScriptedWait(Wait):
    """What a :class:`ScriptedStep` admits with: a token to wait for, an injected :class:`Answer` or a rejection."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: object) -> None:
        self.outcome = outcome

    async def wait(self) -> Any:
        return self.wait_sync()

    def wait_sync(self) -> Any:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _called(value: object) -> str:
    """What a :class:`ScriptedStep`'s ``Call`` calls: it fails for a ``FatalError``."""
    if isinstance(value, FatalError):
        raise PredicateError("call refused")
    return f"called:{type(value).__name__}"


class ScriptedStep(Step):
    """A link of the user's own (``ExtraStrategy``) whose hooks decide every kind of action the engine has.

    Its parts say what each hook does; every hook call is logged, with its token, so that the two
    drivers' calls of the hooks are compared too.
    """

    kind: ClassVar[str] = "scripted"

    def __init__(self, parts: dict[str, Any], log: list[Any], clock: FakeClock) -> None:
        super().__init__()
        self.parts = parts
        self.log = log
        self.clock = clock
        self.admitted = 0

    def _hook(self) -> Callable[[], None] | None:
        blocks = self.parts["hook"]
        if blocks is None:
            return None

        def hook() -> None:
            self.log.append(("hook", self.clock.now()))
            self.clock.sleep_sync(blocks)  # a plain hook: it blocks the thread, or the loop

        return hook

    def admit(self, ctx: ExecutionContext) -> Any:
        self.admitted += 1
        number, mode = self.admitted, self.parts["admit"]
        self.log.append(("admit", number, ctx.attempt))
        if mode == "wait":
            return _ScriptedWait(number)
        if mode == "answer" and number % 3 == 0:
            return _ScriptedWait(Answer("injected"))
        if mode == "reject" and number % 3 == 0:
            return Rejected(ShedError("scripted"))
        return number

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> Action:
        self.log.append(("success", token, result))
        mode = self.parts["on_success"]
        if mode == "retry" and result == "bad" and type(token) is not tuple:
            return RunAgain(0.5, ("again", token), self._hook(), "scripted hook")
        if mode == "call":
            return Call(_called, (result,), {}, self._then, state="success", what="scripted call")
        return None

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Action:
        self.log.append(("failure", token, type(error).__name__))
        mode = self.parts["on_failure"]
        if passes_to_its_scope(
            error
        ):  # an enclosing deadline, reached: its scope answers it (as a fallback does)
            return None
        if mode == "answer":
            return Answer(f"answered:{type(error).__name__}")
        if mode == "retry" and type(token) is not tuple:
            return RunAgain(1.0, ("again", token), self._hook(), "scripted hook")
        if mode == "call":
            return Call(_called, (error,), {}, self._then, state="failure", what="scripted call")
        return None

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self.log.append(("cancel", token, running))

    def _then(self, ctx: ExecutionContext, state: str, value: Any, error: Exception | None) -> Action:
        self.log.append(("then", state, value, None if error is None else type(error).__name__))
        if error is not None:
            raise error
        return Answer(f"{state}:{value}")


@dataclass(frozen=True)
class Plan:
    """One drawn policy, as parts each run turns into config objects of its own, and its script."""

    retry: dict[str, Any] | None
    breaker: dict[str, Any] | None
    bulkhead: tuple[int, int] | None
    fallback: tuple[str, tuple[type[Exception], ...], bool] | None
    timeout: float | None
    max_attempts_total: int | None
    rate_limiter: tuple[float, int, float, str] | None
    chaos: tuple[float, float, float, int] | None
    hedging: bool
    rules: tuple[tuple[type[Exception], str, int, float, float], ...]
    extra: dict[str, Any] | None
    patterns: int
    spans: bool
    durations: bool
    telemetry: bool
    script: tuple[str, ...]
    advances: tuple[float, ...]


@dataclass
class Observed:
    """What one run showed: per execution, then in the statistics and the telemetry."""

    executions: list[tuple[Any, ...]] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    links: list[Any] = field(default_factory=list)
    hooks: list[Any] = field(default_factory=list)
    restarts: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    spans: list[Any] = field(default_factory=list)
    metrics: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = field(default_factory=dict)
    logs: list[Any] = field(default_factory=list)


retry_parts = st.fixed_dictionaries(
    {
        "max_attempts": st.integers(1, 4),
        "strategy": st.sampled_from(["fixed", "linear", "exponential"]),
        "initial_delay": st.sampled_from([0.0, 1.0, 4.0]),
        "retry_on": st.sampled_from([(FlakyError,), (Exception,)]),
        "no_retry_on": st.sampled_from([(ExecutionRejectedError,), ()]),
        "retry_on_result": st.booleans(),
        "attempt_timeout": st.sampled_from([None, 2.5]),
        "budget": st.none() | st.tuples(st.sampled_from([0.0, 0.5]), st.sampled_from([0.0, 1.0])),
        "delay_from": st.booleans(),
    }
)
breaker_parts = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(1, 3),
        "success_threshold": st.integers(1, 2),
        "half_open_max_calls": st.integers(1, 2),
        "ignore_fatal": st.booleans(),
        "record_result": st.booleans(),
        "window": st.sampled_from([None, "count", "time"]),
        "record": st.sampled_from(["types", "predicate"]),
        "break_duration": st.booleans(),
        "slow_call": st.booleans(),
        "max_half_open_wait": st.sampled_from([None, 1.0]),
    }
)
STAGE_NAMES = ("fallback", "total_timeout", "recovery", "retry", "circuit_breaker", "bulkhead", "chaos")
extra_parts = st.fixed_dictionaries(
    {
        "admit": st.sampled_from(["plain", "wait", "answer", "reject"]),
        "on_success": st.sampled_from(["pass", "retry", "call"]),
        "on_failure": st.sampled_from(["pass", "answer", "retry", "call"]),
        "hook": st.sampled_from([None, 0.0, 2.0]),
    }
)
rule_parts = st.tuples(
    st.sampled_from([FlakyError, FatalError, ConnectionError, TimeoutError]),
    st.sampled_from(["retry", "restart", "fallback", "fallback_function", "isolate", "escalate"]),
    st.integers(1, 2),
    st.sampled_from([0.0, 1.0, 3.0]),
    st.sampled_from([0.0, 2.0]),  # how long a restart hook blocks (the thread, or the loop)
)


RETRY_ALL: dict[str, Any] = {
    "max_attempts": 2,
    "strategy": "fixed",
    "initial_delay": 0.0,
    "retry_on": (Exception,),
    "no_retry_on": (ExecutionRejectedError,),
    "retry_on_result": False,
    "attempt_timeout": None,
    "budget": None,
    "delay_from": False,
}
"""Retry parts for the examples: every error retried once, at once."""


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """A policy and the script of its calls."""
    retry = draw(st.none() | retry_parts)
    timeout = draw(st.sampled_from([None, 3.0, 10.0]))
    if retry is not None and retry["attempt_timeout"] is not None and timeout is not None:
        timeout = 10.0  # the attempt timeout must be shorter than the total
    outcomes = (*OUTCOMES, *DURATIONS)
    # An extra link between a call and the attempt timeout would see the call its deadline cuts
    # end differently in each driver, by design (see the module doc): it is placed outside then.
    stages = STAGE_NAMES if retry is None or retry["attempt_timeout"] is None else STAGE_NAMES[:-1]
    places = st.tuples(st.sampled_from(["inside", "outside"]), st.sampled_from(stages))
    executions = draw(st.integers(1, 4))
    hedging = draw(st.integers(0, 9)) == 0
    return Plan(
        retry=retry,
        breaker=draw(st.none() | breaker_parts),
        bulkhead=draw(st.none() | st.tuples(st.integers(1, 2), st.integers(0, 1))),
        fallback=draw(
            st.none()
            | st.tuples(
                st.sampled_from(["default", "function", "cache", "cache by arguments", "multiple"]),
                st.sampled_from([(Exception,), (FatalError,), (ExecutionRejectedError,)]),
                st.booleans(),
            )
        ),
        timeout=timeout,
        max_attempts_total=draw(st.sampled_from([None, 1, 2, 3])),
        rate_limiter=draw(
            st.none()
            | st.tuples(
                st.sampled_from([0.5, 1.0]),
                st.integers(1, 3),
                st.sampled_from([0.0, 1.5]),
                st.sampled_from(["token_bucket", "sliding_window"]),
            )
        ),
        chaos=draw(
            st.none()
            | st.tuples(
                st.sampled_from([0.0, 0.3]),
                st.sampled_from([0.0, 0.3]),
                st.sampled_from([0.0, 0.5]),  # an injected delay
                st.integers(0, 3),
            )
        ),
        hedging=hedging,
        rules=tuple(draw(st.lists(rule_parts, max_size=2, unique_by=lambda rule: rule[0]))),
        patterns=draw(st.sampled_from([2, 5])),
        extra=None if hedging else draw(st.none() | st.builds(dict, extra_parts, place=places)),
        spans=draw(st.integers(0, 4)) > 0,
        durations=draw(st.integers(0, 4)) > 0,
        telemetry=draw(st.integers(0, 3)) > 0,
        script=tuple(draw(st.lists(st.sampled_from(outcomes), max_size=12))),
        advances=tuple(
            draw(st.lists(st.sampled_from([0.0, 0.4, 6.0]), min_size=executions, max_size=executions))
        ),
    )


def _retry(parts: dict[str, Any], clock: FakeClock) -> RetryPolicy:
    budget = None
    if parts["budget"] is not None:
        ratio, per_second = parts["budget"]
        budget = RetryBudget(ratio, per_second, 10.0, clock=clock)
    return RetryPolicy(
        max_attempts=parts["max_attempts"],
        strategy=parts["strategy"],
        initial_delay=parts["initial_delay"],
        max_delay=60.0,
        jitter="none",
        retry_on=parts["retry_on"],
        no_retry_on=parts["no_retry_on"],
        retry_on_result=is_bad if parts["retry_on_result"] else None,
        attempt_timeout=parts["attempt_timeout"],
        budget=budget,
        delay_from=asked_delay if parts["delay_from"] else None,
    )


def records(error: BaseException) -> bool:
    """``CircuitBreakerConfig.record_exceptions`` as a predicate: a rejection the dependency raised is no failure of it."""
    return not isinstance(error, ShedError)


def growing_break(openings: int) -> float:
    """``CircuitBreakerConfig.break_duration``: 2 s, 4 s, 6 s ... OPEN."""
    return 2.0 * openings


def _breaker(parts: dict[str, Any]) -> CircuitBreakerConfig:
    window = {None: None, "count": CountWindow(4), "time": TimeWindow(8.0, 4)}[parts["window"]]
    return CircuitBreakerConfig(
        failure_threshold=parts["failure_threshold"] if window is None else DEFAULT_FAILURE_THRESHOLD,
        success_threshold=parts["success_threshold"],
        timeout=5.0,
        half_open_max_calls=parts["half_open_max_calls"],
        ignore_exceptions=(FatalError,) if parts["ignore_fatal"] else (),
        record_result=is_bad if parts["record_result"] else None,
        sliding_window=window,
        minimum_calls=2 if window is not None else None,
        slow_call_duration=1.5 if window is not None and parts["slow_call"] else None,
        max_half_open_wait=parts["max_half_open_wait"],
        record_exceptions=records if parts["record"] == "predicate" else (Exception,),
        break_duration=growing_break if parts["break_duration"] else None,
    )


def _fallback(parts: tuple[str, tuple[type[Exception], ...], bool], cache: DictCache) -> FallbackConfig:
    kind, handled, results = parts
    judged: dict[str, Any] = {"handle_exceptions": handled, "handle_result": is_bad if results else None}
    if kind == "default":
        return FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback", **judged)
    if kind == "function":
        return FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative, **judged
        )
    if kind == "multiple":
        return FallbackConfig(
            strategy=FallbackStrategy.MULTIPLE_ATTEMPTS,
            fallback_functions=(first_alternative, second_alternative),
            **judged,
        )
    return FallbackConfig(
        strategy=FallbackStrategy.CACHED_VALUE,
        cache_key="last",
        cache_service=cache,
        cache_by_arguments=kind == "cache by arguments",
        **judged,
    )


def _config(plan: Plan, name: str, clock: FakeClock, cache: DictCache, log: list[Any]) -> ResilienceConfig:
    """The config of ``plan`` for one run (its own budget, cache and extra link: the runs share nothing)."""
    extras = ()
    if plan.extra is not None:
        parts = plan.extra
        where, stage = parts["place"]
        extras = (ExtraStrategy(lambda _name: ScriptedStep(parts, log, clock), **{where: stage}),)
    chaos = None
    if plan.chaos is not None and any(plan.chaos[:3]):
        fault_rate, outcome_rate, latency, seed = plan.chaos
        chaos = ChaosConfig(
            fault_rate=fault_rate,
            fault=FlakyError if fault_rate else None,
            outcome_rate=outcome_rate,
            outcome="chaos",
            latency_rate=1.0 if latency else 0.0,
            latency=latency,
            seed=seed,
        )
    limiter = None
    if plan.rate_limiter is not None:
        rate, burst, max_wait, algorithm = plan.rate_limiter
        limiter = RateLimiterConfig(rate=rate, burst=burst, max_wait=max_wait, algorithm=algorithm)
    bulkhead = None
    if plan.bulkhead is not None:
        bulkhead = BulkheadConfig(max_concurrent=plan.bulkhead[0], max_waiting=plan.bulkhead[1])
    return ResilienceConfig(
        name=name,
        retry_policy=None if plan.retry is None else _retry(plan.retry, clock),
        circuit_breaker=None if plan.breaker is None else _breaker(plan.breaker),
        bulkhead_config=bulkhead,
        fallback_config=None if plan.fallback is None else _fallback(plan.fallback, cache),
        timeout=plan.timeout,
        # a cap nothing takes further attempts under is refused: drawn, it caps nothing then
        max_attempts_total=plan.max_attempts_total
        if plan.retry is not None or plan.hedging or plan.rules or extras
        else None,
        enable_recovery=bool(plan.rules),
        rate_limiter=limiter,
        chaos=chaos,
        hedging=HedgingConfig(delay=1.0, max_attempts=2) if plan.hedging else None,
        spans=plan.spans,
        record_duration=plan.durations,
        extra_strategies=extras,
    )


def _rules(plan: Plan, recovery: ErrorRecoverySystem, restarts: list[int], clock: FakeClock) -> None:
    """Register the plan's recovery rules.

    A RESTART rule's hook counts its calls, blocks for the rule's time (a plain function: in the
    async run it blocks the loop, as a sync hook does) and fails every second time.
    """

    def restarter(seconds: float) -> Callable[[], None]:
        def restart() -> None:
            restarts.append(1)
            if seconds:
                clock.sleep_sync(seconds)
            if len(restarts) % 2 == 0:
                raise PredicateError("restart failed")

        return restart

    for error, strategy, attempts, delay, blocks in plan.rules:
        if strategy == "retry":
            action = RecoveryAction(RecoveryStrategy.RETRY, max_attempts=attempts, delay=delay)
        elif strategy == "restart":
            action = RecoveryAction(
                RecoveryStrategy.RESTART,
                max_attempts=attempts,
                delay=delay,
                restart_hook=restarter(blocks),
            )
        elif strategy == "fallback":
            action = RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="recovered")
        elif strategy == "fallback_function":
            action = RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=recovered_value)
        elif strategy == "isolate":
            action = RecoveryAction(RecoveryStrategy.ISOLATE, isolate_duration=2.0)
        else:
            action = RecoveryAction(RecoveryStrategy.ESCALATE)
        recovery.register_recovery_rule(error, action)


class Script:
    """The protected function's behaviour: each call does the script's next outcome (then ``ok``)."""

    def __init__(self, outcomes: tuple[str, ...], clock: FakeClock) -> None:
        self.outcomes = outcomes
        self.clock = clock
        self.calls = 0

    def start(self) -> tuple[int, str]:
        """Count a call; return its index and outcome."""
        index = self.calls
        self.calls += 1
        return index, self.outcomes[index] if index < len(self.outcomes) else "ok"

    def __call__(self, execution: int, *, mode: str = "plain") -> str:
        """A sync call: a slow one sleeps in the thread until the deadline at most, as chaos's delay does."""
        index, outcome = self.start()
        if outcome in DURATIONS:
            sleep_sync_within_deadline(self.clock, DURATIONS[outcome], "call")
            return "bad"
        return self.end(index, outcome)

    async def call_async(self, execution: int, *, mode: str = "plain") -> str:
        """An async call: a slow one sleeps on the loop (a deadline may cancel it), then returns."""
        index, outcome = self.start()
        if outcome in DURATIONS:
            await asyncio.sleep(DURATIONS[outcome])
            return "bad"
        return self.end(index, outcome)

    @staticmethod
    def end(index: int, outcome: str) -> str:
        """Return or raise what a call that takes no time ends with."""
        if outcome == "retryable":
            raise FlakyError(f"call {index}")
        if outcome == "fatal":
            raise FatalError(f"call {index}")
        if outcome == "rejected":
            raise ShedError(f"call {index}")
        if outcome == "timeout":
            raise TimeoutError(f"call {index}")
        if outcome == "interrupt":
            raise Interrupt(f"call {index}")
        return outcome


@contextmanager
def _no_telemetry() -> Iterator[None]:
    """No listener at all (the hub is quiet: the engine's shortcuts run); the default one put back after."""
    had_default = current_listener() is not None
    uninstrument()
    try:
        yield None
    finally:
        if had_default:
            install_default()


def _run(driver: str, plan: Plan, name: str) -> Observed:
    """Run ``plan``'s executions through one driver; return what it showed, its names replaced."""
    observed = Observed()
    clock = LoopClock(START)
    cache = DictCache()
    restarts: list[int] = []
    with instrumented() if plan.telemetry else _no_telemetry() as otel:
        alerts = AlertSystem(name=f"{name}-alerts")
        recovery = ErrorRecoverySystem(f"{name}-recovery", clock=clock, pattern_threshold=plan.patterns)
        _rules(plan, recovery, restarts, clock)
        manager = ResilienceManager(clock=clock, alert_system=alerts, recovery_system=recovery)
        config = _config(plan, name, clock, cache, observed.hooks)
        script = Script(plan.script, clock)

        def call_sync(execution: int, **kwargs: str) -> str:
            return script(execution, **kwargs)

        async def call_async(execution: int, **kwargs: str) -> str:
            return await script.call_async(execution, **kwargs)

        def arguments(execution: int) -> dict[str, str]:
            return {"mode": "keyed"} if execution % 2 else {}  # with and without keyword arguments

        def seen(before: int, started: float, result: Any) -> None:
            observed.executions.append((result, script.calls - before, started, clock.now()))

        async def run_async() -> None:
            for execution, advance in enumerate(plan.advances):
                before, started = script.calls, clock.now()
                try:
                    result = await manager.execute_with_resilience(
                        call_async, config, execution % 2, **arguments(execution)
                    )
                except (Exception, Interrupt) as error:
                    seen(before, started, error_shown(error, name))
                else:
                    seen(before, started, ("returned", result))
                clock.advance(advance)

        try:
            if driver == "async":
                loop = FakeTimeLoop(clock)
                try:
                    loop.run_until_complete(run_async())
                finally:
                    loop.close()
            else:
                for execution, advance in enumerate(plan.advances):
                    before, started = script.calls, clock.now()
                    try:
                        result = manager.execute_with_resilience_sync(
                            call_sync, config, execution % 2, **arguments(execution)
                        )
                    except (Exception, Interrupt) as error:
                        seen(before, started, error_shown(error, name))
                    else:
                        seen(before, started, ("returned", result))
                    clock.advance(advance)
            observed.statistics = shown(manager.get_resilience_statistics(), name)
            observed.links = _links(manager.pipeline_for(config, name), name)
            observed.restarts = len(restarts)
            observed.cache = dict(cache.data)
            if otel is not None:
                observed.spans = spans_seen(otel, name)
                observed.metrics = points_seen(otel, name)
                observed.logs = logs_seen(otel, name)
        finally:
            alerts.close()
    return observed


def _links(pipeline: Pipeline, name: str) -> list[Any]:
    """Each link of the policy's pipeline, outer to inner, with its own counts where it keeps any."""
    found = []
    for link in pipeline.strategies:
        core = getattr(link, "_core", None)
        if hasattr(link, "get_stats"):
            counts = link.get_stats()
        elif callable(getattr(core, "stats", None)):
            counts = core.stats()  # a fallback's, a timeout's
        elif hasattr(getattr(core, "stats", None), "as_dict"):
            counts = core.stats.as_dict()  # a retry's
        else:
            counts = None
        found.append((link.kind, shown(counts, name)))
    return found


def _cut_by_total_deadline(plan: Plan, observed: Observed) -> int | None:
    """The first execution that reached its total deadline: during a call, or a hook that blocked.

    No engine wait reaches it (a retry or a recovery does not start a delay that would).
    """
    if plan.timeout is None:
        return None
    for index, (_, _, started, ended) in enumerate(observed.executions):
        if ended - started >= plan.timeout:
            return index
    return None


def _runs_around_the_total_timeout(plan: Plan) -> bool:
    """Whether the plan's own link sits outside the total timeout (it may run what is inside again)."""
    extra = plan.extra
    return extra is not None and extra["place"] in {
        ("outside", "fallback"),
        ("inside", "fallback"),
        ("outside", "total_timeout"),
    }


def _late_result_handed_on(in_async: tuple[Any, ...], in_sync: tuple[Any, ...]) -> bool:
    """Whether the async scope handed on a result that came back after the deadline, which the sync one dropped.

    A hook that blocked the loop past the deadline (its timer could not fire) lets a value come
    back late: an async scope cuts only by cancelling and hands it on (``RecoveryStep._cut_by_deadline``),
    a sync scope treats a result that arrives after the deadline as its timeout (README, "Timeout
    management").
    """
    (seen_async, calls_async, *times_async), (seen_sync, calls_sync, *times_sync) = in_async, in_sync
    return (
        seen_async[0] == "returned"
        and seen_sync[:2] == ("raised", "OperationTimeoutError")
        and (calls_async, times_async) == (calls_sync, times_sync)
    )


def _check_hedging_refused(plan: Plan) -> None:
    """Hedging is async only: the sync API raises ``TypeError`` (README, Hedging), the function never runs.

    The refusal is the hedging link's, inside the rate limiter, which sheds load before anything
    else runs (``manager/stages.py``): a refused call takes a permit, so a later call may be shed
    (and answered by the fallback) rather than refused.
    """
    sync = _run("sync", plan, f"Parity{next(_examples)}Sync")
    seen = [result for result, _, _, _ in sync.executions]
    refused = [result[:2] == ("raised", "TypeError") for result in seen]
    assert refused[0], seen
    if plan.rate_limiter is None:
        assert all(refused), seen
    else:
        shed = [result[:2] == ("raised", "RateLimitedError") or result[0] == "returned" for result in seen]
        assert all(map(bool.__or__, refused, shed)), seen
    assert all(calls == 0 for _, calls, _, _ in sync.executions), sync.executions


def _plan(**parts: Any) -> Plan:
    """A plan with only ``parts`` (one execution, telemetry on): for the examples always tried."""
    empty = dict.fromkeys(("retry", "breaker", "bulkhead", "fallback", "timeout", "max_attempts_total"))
    empty.update(rate_limiter=None, chaos=None, hedging=False, rules=(), extra=None, patterns=5)
    empty.update(spans=True, durations=True, telemetry=True, script=(), advances=(0.0,))
    return Plan(**{**empty, **parts})


@example(  # the hedging link's refusal of the sync driver was answered by the fallback around it
    _plan(hedging=True, fallback=("default", (Exception,), False), retry=RETRY_ALL)
)
@example(  # a plain restart hook that blocked the loop past the deadline: the re-run started after it
    _plan(timeout=3.0, rules=((FatalError, "restart", 1, 1.0, 2.0),), script=("fatal",))
)
@example(  # an injected delay that ended at the deadline: the sync driver called the function at it
    _plan(
        timeout=3.0, retry={**RETRY_ALL, "retry_on_result": True}, chaos=(0.0, 0.0, 0.5, 0), script=("slow",)
    )
)
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plans())
def test_sync_and_async_drivers_agree(plan: Plan) -> None:
    """Both drivers tell the caller, the statistics and the telemetry the same story for one script."""
    if plan.hedging:
        _check_hedging_refused(plan)
        return
    number = next(_examples)
    in_async = _run("async", plan, f"Parity{number}Async")
    in_sync = _run("sync", plan, f"Parity{number}Sync")
    cut = _cut_by_total_deadline(plan, in_async)
    assert cut == _cut_by_total_deadline(plan, in_sync), (in_async.executions, in_sync.executions)
    if cut is not None:
        # The caller sees the same up to the execution that reached its total deadline, and in it
        # unless a link of the user's own around the total timeout runs the policy again: the
        # steps inside count what the deadline cut differently, by design (see the module doc).
        assert in_sync.executions[:cut] == in_async.executions[:cut]
        if not _runs_around_the_total_timeout(plan):
            assert in_sync.executions[cut] == in_async.executions[cut] or _late_result_handed_on(
                in_async.executions[cut], in_sync.executions[cut]
            ), (in_async.executions[cut], in_sync.executions[cut])
        return
    assert in_sync.executions == in_async.executions
    assert in_sync.links == in_async.links
    assert in_sync.hooks == in_async.hooks
    assert in_sync.restarts == in_async.restarts
    assert in_sync.cache == in_async.cache
    assert in_sync.statistics == in_async.statistics
    assert in_sync.spans == in_async.spans
    assert in_sync.metrics == in_async.metrics
    assert in_sync.logs == in_async.logs
