"""Two engine mechanisms: a Wait that ends with an Answer, and a sync sleep the deadline cuts short."""

from __future__ import annotations

from typing import Any

import pytest

from otel_resilience.engine.context import (
    DeadlineReachedError,
    ExecutionContext,
    SyncDeadline,
    sleep_sync_within_deadline,
)
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.step import Answer, Step, Wait
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.testing import FakeClock

# --- a Wait that answers ----------------------------------------------------------------------


class _Gives(Wait):
    """A wait that gives ``value``: a token, or an Answer."""

    def __init__(self, value: Any) -> None:
        self.value = value

    async def wait(self) -> Any:
        return self.value

    def wait_sync(self) -> Any:
        return self.value


class _Answering(Step):
    """A step whose admit returns a wait giving ``value``, and which records every hook called."""

    kind = "answering"

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.hooks: list[str] = []
        self.entries = Counter()

    def admit(self, ctx: ExecutionContext) -> Any:
        return _Gives(self.value)

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self.hooks.append(f"success {token!r} {result!r}")

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        self.hooks.append("failure")

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self.hooks.append("cancel")


class _Inner(Step):
    """A step after the answering one: records that it ran."""

    kind = "inner"

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def admit(self, ctx: ExecutionContext) -> None:
        self.runs += 1


async def _run(pipeline: Any, driver: str, calls: list[str]) -> Any:
    def fn() -> str:
        calls.append("called")
        return "real"

    async def afn() -> str:
        return fn()

    return pipeline.execute_sync(fn) if driver == "sync" else await pipeline.execute(afn)


async def test_a_wait_that_answers_ends_the_step_with_its_value_and_runs_nothing_inside(driver: str) -> None:
    """The driver returns the Answer's value: no inner step, no function, no hook, no entry counted."""
    step, inner, calls = _Answering(Answer("injected")), _Inner(), []
    pipeline = PipelineBuilder("answered").add(step).add(inner).build()
    assert await _run(pipeline, driver, calls) == "injected"
    assert (calls, inner.runs, step.hooks, step.entries.value) == ([], 0, [], 0)
    assert pipeline.stats.succeeded == 1


async def test_a_wait_that_gives_a_token_runs_the_rest_with_it(driver: str) -> None:
    """Anything but an Answer is the token: the rest of the chain runs and the hooks see it."""
    step, inner, calls = _Answering("token"), _Inner(), []
    pipeline = PipelineBuilder("tokened").add(step).add(inner).build()
    assert await _run(pipeline, driver, calls) == "real"
    assert (calls, inner.runs, step.hooks, step.entries.value) == (
        ["called"],
        1,
        ["success 'token' 'real'"],
        1,
    )


class _NeverWaits(_Answering):
    """The same step, declaring that its admit never returns a Wait."""

    kind = "never_waits"
    admit_waits = False


async def test_a_step_that_declares_it_never_waits_has_its_token_passed_as_it_is(driver: str) -> None:
    """``admit_waits = False``: the drivers do not look at the token (no wait, no Answer taken)."""
    step, calls = _NeverWaits(Answer("ignored")), []
    pipeline = PipelineBuilder("never-waits").add(step).build()
    assert await _run(pipeline, driver, calls) == "real"
    assert calls == ["called"]
    [hook] = step.hooks  # on_success saw the Wait itself as the token
    assert hook.startswith("success <")
    assert "_Gives object" in hook


def test_the_built_in_steps_that_never_wait_say_so_and_the_others_do_not() -> None:
    """Retry and fallback admit plain tokens; bulkhead, rate limiter, chaos and hedging wait, and a
    breaker's rejection is a Rejected token (a Wait)."""
    from otel_resilience.patterns.bulkhead._link import _BulkheadStep  # noqa: PLC0415
    from otel_resilience.patterns.chaos.step import _ChaosStep  # noqa: PLC0415
    from otel_resilience.patterns.circuit_breaker.step import _BreakerStep  # noqa: PLC0415
    from otel_resilience.patterns.fallback._step import FallbackStep  # noqa: PLC0415
    from otel_resilience.patterns.hedging.step import _HedgingStep  # noqa: PLC0415
    from otel_resilience.patterns.rate_limiter.step import _ClusterRateLimiterStep, _RateLimiterStep  # noqa: PLC0415
    from otel_resilience.patterns.retry.step import _RetryStep  # noqa: PLC0415

    never = (_RetryStep, FallbackStep)
    may = (
        _BreakerStep,
        _BulkheadStep,
        _ChaosStep,
        _HedgingStep,
        _RateLimiterStep,
        _ClusterRateLimiterStep,
        Step,
    )
    assert not any(cls.admit_waits for cls in never)
    assert all(cls.admit_waits for cls in may)


def test_a_guard_refuses_a_wait_that_answers() -> None:
    """A block cannot be replaced by a value: the guard says so instead of running it."""
    pipeline = PipelineBuilder("guarded").add(_Answering(Answer(1))).build()
    with pytest.raises(RuntimeError, match="answered in place of the call"), Guard(pipeline):
        pytest.fail("the block must not run")


async def test_an_async_guard_refuses_a_wait_that_answers() -> None:
    """The same in ``async with``."""
    pipeline = PipelineBuilder("guarded-async").add(_Answering(Answer(1))).build()
    with pytest.raises(RuntimeError, match="answered in place of the call"):
        async with Guard(pipeline):
            pytest.fail("the block must not run")


# --- a sync sleep within the deadline ---------------------------------------------------------


def test_with_no_deadline_the_sleep_lasts_its_seconds() -> None:
    """No enclosing scope: one sleep of the full length, nothing raised."""
    clock = FakeClock(100.0)
    sleep_sync_within_deadline(clock, 5.0, "op")
    assert (clock.sleeps, clock.now()) == ([5.0], 105.0)


def test_a_deadline_later_than_the_sleep_leaves_it_whole() -> None:
    """A deadline after the sleep's end does not shorten it."""
    clock = FakeClock(100.0)
    with SyncDeadline(clock, 10.0, "op"):
        sleep_sync_within_deadline(clock, 5.0, "op")
    assert clock.sleeps == [5.0]


def test_the_owning_scope_turns_a_cut_sleep_into_its_own_timeout() -> None:
    """The sleep stops at the deadline; the scope raises its own timeout (limit, scope) and is expired."""
    clock = FakeClock(100.0)
    scope = SyncDeadline(clock, 1.5, "op", "attempt")
    with pytest.raises(OperationTimeoutError) as caught, scope:
        sleep_sync_within_deadline(clock, 60.0, "op")
    assert type(caught.value) is OperationTimeoutError
    assert (caught.value.timeout, caught.value.scope) == (1.5, "attempt")
    assert caught.value.__suppress_context__
    assert scope.expired
    assert (clock.sleeps, clock.now()) == ([1.5], 101.5)


def test_a_looser_inner_scope_lets_the_outer_owner_convert_it() -> None:
    """The tightest deadline's scope converts it, however many looser scopes lie in between."""
    clock = FakeClock(0.0)
    outer, inner = SyncDeadline(clock, 2.0, "outer", "total"), SyncDeadline(clock, 10.0, "inner", "attempt")
    with pytest.raises(OperationTimeoutError) as caught, outer, inner:
        sleep_sync_within_deadline(clock, 60.0, "inner")
    assert (caught.value.operation, caught.value.scope, outer.expired, inner.expired) == (
        "outer",
        "total",
        True,
        False,
    )
    assert clock.now() == 2.0


def test_a_tighter_inner_scope_converts_and_the_outer_does_not() -> None:
    """The inner attempt deadline is the tightest: it expires, the outer total does not."""
    clock = FakeClock(0.0)
    outer, inner = SyncDeadline(clock, 10.0, "op", "total"), SyncDeadline(clock, 1.0, "op", "attempt")
    with pytest.raises(OperationTimeoutError) as caught, outer:
        with inner:
            sleep_sync_within_deadline(clock, 60.0, "op")
    assert (caught.value.scope, inner.expired, outer.expired) == ("attempt", True, False)


def test_without_an_owning_sync_scope_it_stays_a_timeout_error() -> None:
    """Raised by hand before any deadline passed, it is not converted: it is an OperationTimeoutError."""
    clock = FakeClock(0.0)
    scope = SyncDeadline(clock, 10.0, "op")
    with pytest.raises(DeadlineReachedError) as caught, scope:
        raise DeadlineReachedError("op", 1.0, "total")
    assert isinstance(caught.value, OperationTimeoutError)
    assert not scope.expired
