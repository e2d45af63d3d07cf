"""Rejected: a rejection returned by admit in place of raised, raised by whoever admitted the call."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import Scopes, counting_contexts, listeners_removed, run

import otel_resilience as orr
from otel_resilience.engine import Rejected, Wait
from otel_resilience.engine.admission import UNSTARTED_SYNC
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import HUB, Outcome
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.step import Step
from otel_resilience.errors import BulkheadFullError, CircuitOpenError


@pytest.fixture(autouse=True)
def _no_listener() -> Iterator[None]:
    """No telemetry listener: the pipeline runs with no execution scope unless a test adds one."""
    with listeners_removed():
        yield


class _Refusing(Step):
    """Rejects every call with a Rejected token; records the hooks called (none should be)."""

    kind = "refusing"

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[str] = []
        self.errors: list[CircuitOpenError] = []

    def admit(self, ctx: ExecutionContext) -> Any:
        error = CircuitOpenError("refusing", "open", 1.0)
        self.errors.append(error)
        return Rejected(error)

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self.hooks.append("success")

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        self.hooks.append("failure")

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self.hooks.append("cancel")


class _Early(_Refusing):
    admits_early = True


class _Inner(_Refusing):
    admits_early = False


def _never() -> str:
    raise AssertionError("a rejected call must not run")


@pytest.mark.parametrize("cls", [_Early, _Inner], ids=["early head", "inner step"])
def test_a_rejected_token_raises_its_error_and_counts_a_rejection(driver: str, cls: type[_Refusing]) -> None:
    step = cls()
    builder = PipelineBuilder("refused")
    if cls is _Inner:
        builder.add(Step())
    pipeline = builder.add(step).build()
    with pytest.raises(CircuitOpenError) as caught:
        run(driver, pipeline, _never)
    assert caught.value is step.errors[0]
    assert pipeline.stats.rejected == 1
    assert pipeline.stats.errors == 0
    assert step.hooks == []  # a rejected call has no outcome to judge


def test_an_early_rejection_makes_no_context(driver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made = counting_contexts(monkeypatch)
    pipeline = PipelineBuilder("refused").add(_Early()).build()
    with pytest.raises(CircuitOpenError):
        run(driver, pipeline, _never)
    assert made == [0]


def test_an_early_rejection_in_a_scope_ends_the_scope_as_rejected(driver: str) -> None:
    scopes = Scopes()
    HUB.add_listener(scopes)
    try:
        pipeline = PipelineBuilder("scoped-refusal").add(_Early()).build()
        with pytest.raises(CircuitOpenError):
            run(driver, pipeline, _never)
    finally:
        HUB.remove_listener(scopes)
    assert scopes.ended == [Outcome.REJECTED]
    assert pipeline.stats.rejected == 1


def test_a_guard_raises_a_rejected_token_and_counts_it() -> None:
    step = _Early()
    pipeline = PipelineBuilder("guarded-refusal").add(step).build()
    with pytest.raises(CircuitOpenError) as caught, Guard(pipeline):
        pytest.fail("a rejected block must not run")
    assert caught.value is step.errors[0]
    assert pipeline.stats.rejected == 1


def test_a_rejected_token_is_a_wait_that_raises_when_waited() -> None:
    error = BulkheadFullError("b", 1, 0)
    assert isinstance(Rejected(error), Wait)
    with pytest.raises(BulkheadFullError) as caught:
        Rejected(error).wait_sync()
    assert caught.value is error
    with pytest.raises(BulkheadFullError):
        asyncio.run(Rejected(error).wait())


def test_a_rejected_token_holds_a_rejection_only() -> None:
    with pytest.raises(TypeError, match="ExecutionRejectedError"):
        Rejected(ValueError("not a rejection"))  # type: ignore[arg-type]


def test_a_rejected_token_is_raised_once() -> None:
    token = Rejected(CircuitOpenError("b", "open", 1.0))
    token.take()
    assert token.error is None
    with pytest.raises(RuntimeError, match="already raised"):
        token.take()


def _open_breaker(name: str) -> tuple[Any, type[Exception]]:
    breaker = orr.CircuitBreaker(name, orr.CircuitBreakerConfig(failure_threshold=1))
    breaker.force_open()
    return breaker, CircuitOpenError


def _full_bulkhead(name: str) -> tuple[Any, type[Exception]]:
    bulkhead = orr.Bulkhead(name, orr.BulkheadConfig(max_concurrent=1, max_waiting=0))
    bulkhead.slot().__enter__()  # the one slot held for the test's life: every call is rejected
    return bulkhead, BulkheadFullError


def _spent_limiter(name: str) -> tuple[Any, type[Exception]]:
    limiter = orr.RateLimiter(name, orr.RateLimiterConfig(rate=0.001, burst=1, max_wait=0.0))
    limiter.call_sync(lambda: None)  # the one permit taken: the next is due in 1 000 s
    return limiter, orr.RateLimitedError


@pytest.mark.parametrize(
    "make",
    [_open_breaker, _full_bulkhead, _spent_limiter],
    ids=["open breaker", "full bulkhead", "rate limiter"],
)
@pytest.mark.parametrize("where", ["alone", "inside another step"])
def test_a_patterns_rejection_is_returned_raised_counted_and_freed(
    driver: str, where: str, make: Callable[[str], tuple[Any, type[Exception]]]
) -> None:
    """Its admit returns a Rejected: raised by the pipeline (early) or the driver, counted, and the
    error freed as soon as the caller drops it, without the garbage collector."""
    pattern, error_type = make(f"rejects-{driver}-{where}")
    assert type(pattern.as_strategy().admit(UNSTARTED_SYNC)) is Rejected
    if where == "alone":
        pipeline = PipelineBuilder(f"alone-{driver}-{where}").add(pattern.as_strategy()).build()
    else:
        pipeline = PipelineBuilder(f"outer-{driver}-{where}").add(Step()).add(pattern.as_strategy()).build()
    refs: list[weakref.ref[BaseException]] = []

    async def afn() -> None:
        raise AssertionError("never runs")

    async def in_a_task() -> None:
        try:
            await pipeline.execute(afn)
        except error_type as error:
            refs.append(weakref.ref(error))

    gc.collect()
    gc.disable()
    try:
        if driver == "sync":
            try:
                pipeline.execute_sync(_never)
            except error_type as error:
                refs.append(weakref.ref(error))
        else:
            asyncio.run(in_a_task())
        assert len(refs) == 1
        assert refs[0]() is None  # no reference cycle through the token
    finally:
        gc.enable()
    assert (pipeline.stats.rejected, pipeline.stats.errors) == (1, 0)
