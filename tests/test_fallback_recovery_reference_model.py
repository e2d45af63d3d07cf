"""Fallback and error recovery against reference models of README's rules, over seeded random sequences.

Fallback (README "Fallback", ``FallbackConfig``): a handled error, or a value ``handle_result``
rejects (as an ``UnacceptedResultError``), is answered by the strategy: ``default_value`` (the
very object), ``fallback_function(error, *args)`` (its own error raised in place, chained to the
call's), the last good value under the call's cache key (``cache_by_arguments``: per plain
arguments; ``cache_max_age``: only keys this handler wrote, no older than that; a miss re-raises
the call's error, or returns the value not accepted), or ``fallback_functions`` in order (all
failing: an ``ExceptionGroup`` of the call's error and each function's). An error
``handle_exceptions`` does not match passes unchanged.

Recovery (README "Error recovery"): the rule of the first class of the error's MRO acts; RETRY and
RESTART re-run after ``delay`` (RESTART calling its hook first) while a re-run's error is the same
rule's, at most ``max_attempts`` re-runs of a rule in one execution; another rule's error ends the
recovery as failed and that rule acts; an error no rule covers passes unchanged; FALLBACK answers
``fallback_value``; ESCALATE raises ``RecoveryEscalatedError`` from the error. Every error
(first run's and re-runs') counts towards its (type, operation) pattern: ``pattern_threshold``
of them within ``pattern_window`` seconds is a pattern, reported at most once per window.
"""

from __future__ import annotations

import asyncio
import functools
import random
import sys
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import pytest

from otel_resilience import (
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    RecoveryAction,
    RecoveryContext,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.errors import RecoveryEscalatedError, UnacceptedResultError
from otel_resilience.testing import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

SEEDS = range(150)


def _async(fn: Any) -> Any:
    """``fn`` as an async function of the same name."""

    @functools.wraps(fn)
    async def run(*args: Any) -> Any:
        return fn(*args)

    return run


# --- fallback ------------------------------------------------------------------------------


class DictCache:
    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    def get(self, key: str) -> object:
        return self.data.get(key)

    def set(self, key: str, value: object) -> None:
        self.data[key] = value


def fallback_scenario(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    calls = []
    for index in range(rng.randint(1, 12)):
        calls.append(
            {
                "arg": rng.choice(["a", "b", "c"]),
                "outcome": rng.choice(["ok", "ok", "bad", "conn", "value"]),
                "advance": rng.randint(0, 3),
                "alternatives": [rng.random() < 0.5 for _ in range(3)],  # True: that function fails
                "index": index,
            }
        )
    return {
        "strategy": rng.choice(list(FallbackStrategy)),
        "only_connection_errors": rng.random() < 0.4,
        "reject_bad": rng.random() < 0.6,
        "by_arguments": rng.random() < 0.5,
        "max_age": rng.choice([None, None, 1, 2, 4]),
        "functions": rng.randint(1, 3),
        "calls": calls,
    }


def fallback_model(s: dict[str, Any]) -> tuple[list[tuple[str, Any]], dict[str, int]]:
    """Each call's expected outcome (("value", v) / ("raise", description)) and the handler's counts."""
    strategy: FallbackStrategy = s["strategy"]
    cache: dict[str, object] = {}
    written: dict[str, float] = {}  # the keys this handler wrote, when their value was returned
    counts = dict.fromkeys(("successes", "failures", "hits", "misses"), 0)
    now = 0.0
    outcomes: list[tuple[str, Any]] = []
    for call in s["calls"]:
        now += call["advance"]
        arg, outcome, index = call["arg"], call["outcome"], call["index"]
        key = f"k:{arg}" if s["by_arguments"] else "k"
        value = (outcome, index)
        if outcome == "ok" or (outcome == "bad" and not s["reject_bad"]):
            cache[key], written[key] = value, now
            outcomes.append(("value", value))
            continue
        if outcome == "value" and s["only_connection_errors"]:
            outcomes.append(("raise", ("call", index)))  # not handled: passes unchanged
            continue
        error = ("unaccepted", value) if outcome == "bad" else ("call", index)
        if strategy is FallbackStrategy.DEFAULT_VALUE:
            counts["successes"] += 1
            outcomes.append(("value", "default"))
        elif strategy is FallbackStrategy.ALTERNATIVE_FUNCTION:
            if call["alternatives"][0]:
                counts["failures"] += 1
                outcomes.append(("raise", ("alternative", index, error)))
            else:
                counts["successes"] += 1
                outcomes.append(("value", ("alternative", index, error)))
        elif strategy is FallbackStrategy.MULTIPLE_ATTEMPTS:
            failing = call["alternatives"][: s["functions"]]
            if all(failing):
                counts["failures"] += 1
                outcomes.append(("raise", ("group", index, error, len(failing))))
            else:
                counts["successes"] += 1
                outcomes.append(("value", ("function", failing.index(False), index)))
        else:
            fresh = s["max_age"] is None or (key in written and now - written[key] <= s["max_age"])
            if fresh and key in cache:
                counts["hits"] += 1
                counts["successes"] += 1
                outcomes.append(("value", cache[key]))
            else:
                counts["misses"] += 1
                counts["failures"] += 1
                outcomes.append(("value", value) if outcome == "bad" else ("raise", error))
    return outcomes, counts


def build_handler(s: dict[str, Any], clock: FakeClock, state: dict[str, Any]) -> FallbackHandler:
    strategy: FallbackStrategy = s["strategy"]
    common: dict[str, Any] = {
        "handle_exceptions": (ConnectionError,) if s["only_connection_errors"] else (Exception,),
        "handle_result": (lambda result: result[0] == "bad") if s["reject_bad"] else None,
    }

    def seen(error: Exception) -> tuple[str, Any]:
        if isinstance(error, UnacceptedResultError):
            return ("unaccepted", error.result)
        return ("call", error.args[0])

    if strategy is FallbackStrategy.DEFAULT_VALUE:
        return FallbackHandler(FallbackConfig(strategy, default_value="default", **common), clock=clock)
    if strategy is FallbackStrategy.ALTERNATIVE_FUNCTION:

        def alternative(error: Exception, arg: str) -> object:
            assert arg == state["call"]["arg"]
            answer = ("alternative", state["call"]["index"], seen(error))
            if state["call"]["alternatives"][0]:
                raise LookupError(answer)
            return answer

        return FallbackHandler(FallbackConfig(strategy, fallback_function=alternative, **common), clock=clock)
    if strategy is FallbackStrategy.MULTIPLE_ATTEMPTS:

        def function(position: int) -> Any:
            def attempt(arg: str) -> object:
                assert arg == state["call"]["arg"]
                if state["call"]["alternatives"][position]:
                    raise LookupError(position)
                return ("function", position, state["call"]["index"])

            return attempt

        functions = [function(position) for position in range(s["functions"])]
        return FallbackHandler(FallbackConfig(strategy, fallback_functions=functions, **common), clock=clock)
    return FallbackHandler(
        FallbackConfig(
            strategy,
            cache_key="k",
            cache_service=state["cache"],
            cache_by_arguments=s["by_arguments"],
            cache_max_age=s["max_age"],
            **common,
        ),
        clock=clock,
    )


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_fallback_answers_as_the_model_says(seed: int, driver: str) -> None:
    """Each call's answer or error, what the fallback saw, and the counts, against the model."""
    s = fallback_scenario(seed)
    expected, counts = fallback_model(s)
    clock = FakeClock(0.0)
    state: dict[str, Any] = {"errors": [], "cache": DictCache()}
    handler = build_handler(s, clock, state)

    def dependency(arg: str) -> object:
        call = state["call"]
        assert arg == call["arg"]
        if call["outcome"] in {"conn", "value"}:
            error = ConnectionError(call["index"]) if call["outcome"] == "conn" else ValueError(call["index"])
            state["errors"].append(error)
            raise error
        return (call["outcome"], call["index"])

    for call, (kind, what) in zip(s["calls"], expected, strict=True):
        clock.advance(call["advance"])
        state["call"] = call
        before = len(state["errors"])
        raised: Exception | None = None
        try:
            if driver == "sync":
                answer = handler.execute_with_fallback_sync(dependency, call["arg"])
            else:
                answer = await handler.execute_with_fallback(_async(dependency), call["arg"])
                for _ in range(3):
                    await asyncio.sleep(0)  # a cache write runs beside the caller
        except Exception as error:
            raised = error
        if raised is not None:
            assert kind == "raise", (s["strategy"], call, what, raised)
            _check_raised(raised, what, state["errors"][before:])
        else:
            assert (kind, answer) == ("value", what), (s, call)
    stats = handler.get_stats()
    assert stats["fallback_successes"] == counts["successes"]
    assert stats["fallback_failures"] == counts["failures"]
    assert stats["fallbacks_used"] == counts["successes"] + counts["failures"]
    assert (stats["cache_hits"], stats["cache_misses"]) == (counts["hits"], counts["misses"])


def _check_raised(error: BaseException, what: Any, raised_by_call: list[Exception]) -> None:
    if what[0] == "call":
        assert raised_by_call == [error]  # the call's own error, unchanged
    elif what[0] == "alternative":
        assert isinstance(error, LookupError)
        assert error.args[0] == what
        if raised_by_call:
            assert error.__context__ is raised_by_call[0]  # chained to what it answered for
        else:
            assert isinstance(error.__context__, UnacceptedResultError)
    else:
        _, _, seen, functions = what
        assert isinstance(error, ExceptionGroup)
        first, *rest = error.exceptions
        if seen[0] == "call":
            assert first is raised_by_call[0]
        else:
            assert isinstance(first, UnacceptedResultError)
            assert first.result == seen[1]
        assert [e.args[0] for e in rest] == list(range(functions))


# --- recovery ------------------------------------------------------------------------------


class Base(Exception):
    """Covered by its own rule, or by none."""


class Sub(Base):
    """A subclass: its own rule wins over Base's."""


class Other(Exception):
    """Another rule's class."""


class Stray(Exception):
    """Never covered."""


KINDS = {"base": Base, "sub": Sub, "other": Other, "stray": Stray}
RERUNS = (RecoveryStrategy.RETRY, RecoveryStrategy.RESTART)


def recovery_scenario(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    rules: dict[str, dict[str, Any]] = {}
    for kind in ("base", "sub", "other"):
        if rng.random() < 0.7:
            strategy = rng.choice(
                [
                    RecoveryStrategy.RETRY,
                    RecoveryStrategy.RETRY,
                    RecoveryStrategy.RESTART,
                    RecoveryStrategy.FALLBACK,
                    RecoveryStrategy.ESCALATE,
                ]
            )
            rules[kind] = {
                "strategy": strategy,
                "max_attempts": rng.randint(1, 3),
                "delay": rng.choice([0, 1, 2]),
                "function": rng.random() < 0.5,  # FALLBACK: a fallback_function, else fallback_value
            }
    executions = []
    for _ in range(rng.randint(1, 8)):
        runs = [rng.choice(["ok", "base", "sub", "sub", "other", "stray"]) for _ in range(12)]
        executions.append(
            {
                "advance": rng.randint(0, 6),
                "runs": runs,
                "hooks": [rng.random() < 0.2 for _ in range(12)],  # True: that restart_hook call raises
                "fallback_fails": rng.random() < 0.3,  # a FALLBACK rule's fallback_function raises
            }
        )
    return {
        "rules": rules,
        "threshold": rng.randint(2, 4),
        "window": rng.choice([2, 5, 10]),
        "fingerprints": rng.choice([1, 2, 3, 1000]),
        "executions": executions,
    }


def recovery_model(
    s: dict[str, Any], cap: int | None = None, timeout: float | None = None
) -> tuple[list[Any], dict[str, Any], float]:
    """Each execution's (runs made, outcome), the stats, and the time the clock ends at.

    ``cap``: the calls one execution may make in total (a policy's ``max_attempts_total``): a
    re-run past it is not made, and the recovery fails with the last error. ``timeout``: the
    policy's, from each execution's start: a re-run whose delay would end at or past it is not made.
    """
    rules = {KINDS[kind]: rule for kind, rule in s["rules"].items()}
    counts: dict[str, Any] = {"attempts": 0, "successful": 0, "failed": 0, "patterns": 0, "escalations": 0}
    by_strategy = {strategy.value: [0, 0, 0] for strategy in RecoveryStrategy}
    times: OrderedDict[str, deque[float]] = OrderedDict()  # the least recently seen forgotten first
    reported: dict[str, float] = {}
    now = 0.0
    results: list[Any] = []

    def settle(strategy: RecoveryStrategy, *, success: bool) -> None:
        counts["attempts"] += 1
        counts["successful" if success else "failed"] += 1
        row = by_strategy[strategy.value]
        row[0] += 1
        row[1 if success else 2] += 1
        if strategy is RecoveryStrategy.ESCALATE:
            counts["escalations"] += 1

    def observe(kind: str) -> None:
        if kind not in times and len(times) >= s["fingerprints"]:
            forgotten, _ = times.popitem(last=False)
            reported.pop(forgotten, None)
        seen = times.setdefault(kind, deque(maxlen=s["threshold"]))
        times.move_to_end(kind)
        seen.append(now)
        if len(seen) < s["threshold"] or now - seen[0] > s["window"]:
            return
        if kind in reported and now - reported[kind] < s["window"]:
            return
        reported[kind] = now
        counts["patterns"] += 1

    def lookup(kind: str) -> type | None:
        return next((cls for cls in KINDS[kind].__mro__ if cls in rules), None)

    for execution in s["executions"]:
        now += execution["advance"]
        deadline = None if timeout is None else now + timeout
        runs = iter(execution["runs"])
        made, hooks = 0, 0

        def run(runs: Iterator[str] = runs) -> str:
            nonlocal made
            made += 1
            return next(runs)

        outcome: Any = None
        kind = run()
        if kind != "ok":
            observe(kind)
        spent: dict[type, int] = {}
        while outcome is None:
            if kind == "ok":
                outcome = ("value", made)
                break
            covered = lookup(kind)
            if covered is None:  # no rule: it passes unchanged
                outcome = ("raise", kind)
                break
            rule = rules[covered]
            strategy = rule["strategy"]
            if strategy is RecoveryStrategy.FALLBACK:
                if rule["function"] and execution["fallback_fails"]:
                    settle(strategy, success=False)  # its error is raised (not observed: no re-run's)
                    outcome = ("raise", "fallback_function")
                else:
                    settle(strategy, success=True)
                    outcome = ("value", "function" if rule["function"] else "value")
                break
            if strategy is RecoveryStrategy.ESCALATE:
                settle(strategy, success=False)
                outcome = ("escalate", kind)
                break
            while True:  # RETRY / RESTART: re-run while the re-run's error is this rule's
                ran_out = (
                    spent.get(covered, 0) >= rule["max_attempts"]
                    or (deadline is not None and deadline - now <= rule["delay"])
                    or (cap is not None and made >= cap)
                )
                if ran_out:  # the rule's re-runs, or the execution's calls: the last error passes
                    settle(strategy, success=False)
                    outcome = ("raise", kind)
                    break
                spent[covered] = spent.get(covered, 0) + 1
                now += rule["delay"]
                if strategy is RecoveryStrategy.RESTART:
                    hooks += 1
                    if execution["hooks"][hooks - 1]:  # the hook's error ends the recovery, unchanged
                        settle(strategy, success=False)
                        outcome = ("raise", "restart_hook")
                        break
                kind = run()
                if kind == "ok":
                    settle(strategy, success=True)
                    outcome = ("value", made)
                    break
                observe(kind)
                if lookup(kind) is not covered:  # another rule's (or none's): it acts on it
                    settle(strategy, success=False)
                    break
        results.append((made, hooks, outcome))
    counts["by_strategy"] = by_strategy
    return results, counts, now


@pytest.mark.parametrize("driver", ["sync", "async", "caught-sync", "caught-async"])
@pytest.mark.parametrize("seed", SEEDS)
async def test_a_recovery_system_recovers_as_the_model_says(seed: int, driver: str) -> None:
    """Runs made, restart hooks called, answer or error, stats and patterns, against the model.

    ``caught-*``: the first run's error is caught by the caller and handed to
    ``recover_from_error(_sync)`` with the operation to re-run, as README's example does.
    """
    s = recovery_scenario(seed)
    expected, counts, end = recovery_model(s)
    clock = FakeClock(0.0)
    system = ErrorRecoverySystem(
        f"model-{seed}",
        clock=clock,
        pattern_threshold=s["threshold"],
        pattern_window=s["window"],
        max_fingerprints=s["fingerprints"],
    )
    state: dict[str, Any] = {}
    register(system, s, state)

    def operation() -> object:
        state["made"] += 1
        kind = next(state["runs"])
        if kind == "ok":
            return state["made"]
        raise KINDS[kind](kind)

    for execution, (made, hooks, outcome) in zip(s["executions"], expected, strict=True):
        clock.advance(execution["advance"])
        state.update(runs=iter(execution["runs"]), made=0, hooks=0, execution=execution)
        try:
            if driver == "sync":
                answer: Any = ("value", system.execute_sync(operation))
            elif driver == "async":
                answer = ("value", await system.execute(_async(operation)))
            else:
                answer = ("value", await caught(system, operation, sync=driver == "caught-sync"))
        except RecoveryEscalatedError as error:
            answer = ("escalate", str(error.__cause__))
        except Exception as error:
            answer = ("raise", str(error))
        assert (state["made"], state["hooks"], answer) == (made, hooks, outcome), (s, execution)
    check_recovery_stats(system.get_stats(), counts)
    assert clock.now() == end


async def caught(system: ErrorRecoverySystem, operation: Any, *, sync: bool) -> object:
    """Run ``operation`` once; hand its error, caught, to ``recover_from_error`` with what re-runs it."""
    try:
        return operation()
    except Exception as error:
        if sync:
            return system.recover_from_error_sync(
                error, RecoveryContext(operation=operation, operation_name="op")
            )
        context = RecoveryContext(operation=_async(operation), operation_name="op")
        return await system.recover_from_error(error, context)


def register(system: ErrorRecoverySystem, s: dict[str, Any], state: dict[str, Any]) -> None:
    """Register the scenario's rules; a RESTART hook counts its calls in ``state["hooks"]``."""
    for kind, rule in s["rules"].items():
        strategy = rule["strategy"]
        options: dict[str, Any] = {}
        if strategy in RERUNS:
            options = {"max_attempts": rule["max_attempts"], "delay": rule["delay"]}
        if strategy is RecoveryStrategy.RESTART:
            options["restart_hook"] = functools.partial(restart, state)
        if strategy is RecoveryStrategy.FALLBACK:
            if rule["function"]:
                options["fallback_function"] = functools.partial(fall_back, state)
            else:
                options["fallback_value"] = "value"
        system.register_recovery_rule(KINDS[kind], RecoveryAction(strategy, **options))


def restart(state: dict[str, Any]) -> None:
    state["hooks"] += 1
    if state["execution"]["hooks"][state["hooks"] - 1]:
        raise OSError("restart_hook")


def fall_back(state: dict[str, Any]) -> str:
    if state["execution"]["fallback_fails"]:
        raise LookupError("fallback_function")
    return "function"


def check_recovery_stats(stats: Any, counts: dict[str, Any]) -> None:
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (
        counts["attempts"],
        counts["successful"],
        counts["failed"],
    )
    assert {
        name: [c["attempts"], c["successful"], c["failed"]] for name, c in stats["by_strategy"].items()
    } == (counts["by_strategy"])
    assert (stats["patterns_detected"], stats["escalations"]) == (counts["patterns"], counts["escalations"])


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("seed", range(2000, 2100))
async def test_a_policys_recovery_recovers_as_the_model_says(seed: int, driver: str) -> None:
    """A manager policy with enable_recovery (and maybe a cap on calls in total) against the model."""
    s = recovery_scenario(seed)
    rng = random.Random(-seed)
    cap = rng.choice([None, 1, 2, 3, 5])
    # Read on the fake clock; an async timeout's cancellation comes after as many real seconds,
    # far more than an execution on the fake clock takes.
    timeout = rng.choice([None, None, 1.5, 2.5, 4.5])
    expected, counts, end = recovery_model(s, cap, timeout)
    clock = FakeClock(0.0)
    manager = ResilienceManager(
        clock=clock,
        recovery_system=ErrorRecoverySystem(
            f"policy-model-{seed}",
            clock=clock,
            pattern_threshold=s["threshold"],
            pattern_window=s["window"],
            max_fingerprints=s["fingerprints"],
        ),
    )
    state: dict[str, Any] = {}
    register(manager.recovery_system, s, state)
    config = ResilienceConfig(enable_recovery=True, max_attempts_total=cap, timeout=timeout)
    handle = manager.policy("modelled", config)

    def operation() -> object:
        state["made"] += 1
        kind = next(state["runs"])
        if kind == "ok":
            return state["made"]
        raise KINDS[kind](kind)

    for execution, (made, hooks, outcome) in zip(s["executions"], expected, strict=True):
        clock.advance(execution["advance"])
        state.update(runs=iter(execution["runs"]), made=0, hooks=0, execution=execution)
        try:
            if driver == "sync":
                answer: Any = ("value", handle.execute_sync(operation))
            else:
                answer = ("value", await handle.execute(_async(operation)))
        except RecoveryEscalatedError as error:
            answer = ("escalate", str(error.__cause__))
        except Exception as error:
            answer = ("raise", str(error))
        assert (state["made"], state["hooks"], answer) == (made, hooks, outcome), (cap, timeout, s, execution)
    check_recovery_stats(manager.recovery_system.get_stats(), counts)
    assert clock.now() == end


@pytest.mark.parametrize("seed", range(3))
def test_a_cache_with_a_maximum_age_remembers_its_256_most_recently_used_keys(seed: int) -> None:
    """README: with ``cache_max_age`` the handler answers only from the keys it wrote, and
    remembers its 256 most recently used ones (a write or an answer uses a key)."""
    rng = random.Random(seed)
    cache = DictCache()
    handler = FallbackHandler(
        FallbackConfig(
            FallbackStrategy.CACHED_VALUE,
            cache_key="k",
            cache_service=cache,
            cache_by_arguments=True,
            cache_max_age=1e6,
        ),
        clock=FakeClock(0.0),
    )
    remembered: OrderedDict[str, object] = OrderedDict()
    hits = misses = 0
    for index in range(1500):
        arg = f"a{rng.randint(0, 319)}"
        fails = rng.random() < 0.5

        def dependency(argument: str, fails: bool = fails, index: int = index) -> object:
            if fails:
                raise ConnectionError(argument)
            return (argument, index)

        if not fails:
            assert handler.execute_with_fallback_sync(dependency, arg) == (arg, index)
            remembered[arg] = (arg, index)
            remembered.move_to_end(arg)
            if len(remembered) > 256:
                remembered.popitem(last=False)
            continue
        if arg in remembered:
            remembered.move_to_end(arg)
            hits += 1
            assert handler.execute_with_fallback_sync(dependency, arg) == remembered[arg]
        else:
            misses += 1
            with pytest.raises(ConnectionError):
                handler.execute_with_fallback_sync(dependency, arg)
    stats = handler.get_stats()
    assert (stats["cache_hits"], stats["cache_misses"]) == (hits, misses)
