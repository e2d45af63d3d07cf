"""A lone head: the pipeline makes the call of a step that admits early, calls the function itself
and has no deadline, while its standing token admits; it makes the context only for the driver."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import counting_contexts, listeners_removed, run

import otel_resilience as orr
from otel_resilience.engine import Counted, Standing
from otel_resilience.engine.actions import Retry
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.step import Step


@pytest.fixture(autouse=True)
def _no_listener() -> Iterator[None]:
    """No telemetry listener: the pipeline runs with no execution scope unless a test adds one."""
    with listeners_removed():
        yield


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the execution contexts the pipeline makes."""
    return counting_contexts(monkeypatch)


class _Lone(Step):
    """Admits early with a standing ``Counted`` token; records its hooks and the ``ctx.fn`` they see."""

    kind = "lone"
    admit_waits = False
    admits_early = True

    def __init__(self, *, retries: int = 0) -> None:
        super().__init__()
        self.successes = Counter()
        self.token = Counted(self.successes, "permit")
        self.standing = Standing()
        self.standing.token = self.token
        self.retries = retries
        self.hooks: list[tuple[str, Any]] = []
        self.seen_fn: list[Any] = []

    def admit(self, ctx: ExecutionContext) -> Any:
        return self.token

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self.hooks.append(("success", result))
        self.seen_fn.append(ctx.fn)

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Retry | None:
        self.hooks.append(("failure", type(error)))
        self.seen_fn.append(ctx.fn)
        if self.retries:
            self.retries -= 1
            return Retry(0.0, token)
        return None

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self.hooks.append(("cancel", running))
        self.seen_fn.append(ctx.fn)


def _pipeline(step: Step) -> Pipeline:
    return PipelineBuilder("lone").add(step).build()


def _as_async(fn: Callable[[], Any]) -> Callable[[], Any]:
    async def afn() -> Any:
        return fn()

    return afn


def test_a_counted_success_makes_no_context(driver: str, made: list[int]) -> None:
    step = _Lone()
    pipeline = _pipeline(step)
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert made == [0]
    assert step.successes.value == 2
    assert step.hooks == []
    assert pipeline.stats.succeeded == 2


def test_a_failure_is_judged_with_the_real_function_in_the_context(driver: str, made: list[int]) -> None:
    step = _Lone()
    pipeline = _pipeline(step)
    raised: list[BaseException] = []

    def boom() -> None:
        error = ValueError("boom")
        raised.append(error)
        raise error

    with pytest.raises(ValueError, match="boom") as caught:
        run(driver, pipeline, boom)
    assert caught.value is raised[0]
    assert "boom" in {entry.name for entry in caught.traceback}  # raised where it was raised
    assert made == [1]
    assert step.hooks == [("failure", ValueError)]
    assert step.seen_fn[0] is not None
    assert step.seen_fn[0].__name__ in {"boom", "fn"}  # the protected function, not the replay
    assert pipeline.stats.failed == 1
    assert step.successes.value == 0


def test_a_success_whose_count_was_cleared_meanwhile_is_judged(driver: str, made: list[int]) -> None:
    step = _Lone()
    pipeline = _pipeline(step)

    def clears() -> str:
        step.token.count = None  # a failure streak began while the call ran
        return "ok"

    assert run(driver, pipeline, clears) == "ok"
    assert step.hooks == [("success", "ok")]
    assert step.seen_fn[0].__name__ in {"clears", "fn"}
    assert made == [1]
    assert pipeline.stats.succeeded == 1


def test_a_retry_decided_for_the_made_call_calls_the_function_again(driver: str) -> None:
    step = _Lone(retries=1)
    pipeline = _pipeline(step)
    calls = [0]

    def flaky() -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise ValueError("first")
        return "second"

    assert run(driver, pipeline, flaky) == "second"
    assert calls == [2]
    assert step.hooks == [("failure", ValueError)]
    assert step.successes.value == 1  # the retried run's success, counted by the driver
    assert pipeline.stats.recovered + pipeline.stats.succeeded == 1


def test_a_cancellation_reaches_on_cancel_as_running(driver: str) -> None:
    step = _Lone()
    pipeline = _pipeline(step)
    stop = KeyboardInterrupt if driver == "sync" else asyncio.CancelledError

    def cancelled() -> None:
        raise stop

    with pytest.raises(stop):
        run(driver, pipeline, cancelled)
    assert step.hooks == [("cancel", True)]
    assert pipeline.stats.succeeded == 0


def test_a_coroutine_returned_to_the_sync_driver_is_refused_and_closed(made: list[int]) -> None:
    step = _Lone()
    pipeline = _pipeline(step)
    coroutines: list[Any] = []

    async def work() -> str:
        return "never"

    def returns_coroutine() -> Any:
        coroutines.append(work())
        return coroutines[0]

    with pytest.raises(TypeError, match="coroutine"):
        pipeline.execute_sync(returns_coroutine)
    assert coroutines[0].cr_frame is None  # closed: never awaited, no warning
    assert step.successes.value == 0
    assert made == [1]
    assert pipeline.stats.failed == 1


def test_an_awaitable_that_is_not_a_coroutine_is_awaited_by_the_driver(made: list[int]) -> None:
    step = _Lone()
    pipeline = _pipeline(step)

    async def main() -> Any:
        future = asyncio.get_running_loop().create_future()
        future.set_result("done")
        return await pipeline.execute(lambda: future)

    assert asyncio.run(main()) == "done"
    assert made == [1]
    assert step.successes.value == 1  # counted by the driver, no call of on_success
    assert step.hooks == []


def test_a_function_that_is_not_async_is_refused_by_the_async_driver() -> None:
    step = _Lone()
    pipeline = _pipeline(step)
    with pytest.raises(TypeError):
        asyncio.run(pipeline.execute(lambda: "plain"))  # type: ignore[arg-type,return-value]
    assert step.successes.value == 0
    assert pipeline.stats.failed == 1


def test_a_failure_leaves_no_reference_cycle(driver: str) -> None:
    """The made call's error is dropped by the replay once raised: freed without the collector."""
    pipeline = _pipeline(_Lone())

    class Boom(Exception):
        pass

    refs: list[weakref.ref[Boom]] = []

    def boom() -> None:
        error = Boom()
        refs.append(weakref.ref(error))
        try:
            raise error
        finally:
            del error  # a local holding it would make a cycle of this test's own

    async def caught_in_a_task() -> None:  # an error that ends a task is kept by the task
        try:
            await pipeline.execute(_as_async(boom))
        except Boom:
            return
        pytest.fail("Boom was not raised")

    gc.collect()
    gc.disable()
    try:
        if driver == "sync":
            with pytest.raises(Boom):
                pipeline.execute_sync(boom)
        else:
            asyncio.run(caught_in_a_task())
        assert refs[0]() is None
    finally:
        gc.enable()


def test_a_head_with_a_step_inside_it_is_not_lone(driver: str, made: list[int]) -> None:
    step = _Lone()
    pipeline = PipelineBuilder("two").add(step).add(Step()).build()
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert made == [1]
    assert step.successes.value == 1


def test_a_breaker_heads_its_own_pipeline_alone_with_nothing_listening(driver: str, made: list[int]) -> None:
    """A closed breaker's calls made by the pipeline are counted, and its failures still trip it."""
    breaker = orr.CircuitBreaker(
        f"lone-breaker-{driver}", orr.CircuitBreakerConfig(failure_threshold=2, timeout=60.0)
    )

    def boom() -> None:
        raise ValueError("boom")

    def call(fn: Callable[[], Any]) -> Any:
        if driver == "sync":
            return breaker.call_sync(fn)
        return asyncio.run(breaker.call(_as_async(fn)))

    assert call(lambda: 1) == 1
    assert made == [0]  # counted by the pipeline: no context
    with pytest.raises(ValueError, match="boom"):
        call(boom)
    assert breaker.get_stats()["failure_count"] == 1
    assert call(lambda: 2) == 2  # the success ends the streak
    assert breaker.get_stats()["failure_count"] == 0
    for _ in range(2):
        with pytest.raises(ValueError, match="boom"):
            call(boom)
    assert breaker.get_stats()["state"] == "open"
    with pytest.raises(orr.CircuitOpenError):
        call(lambda: 3)
    assert breaker.get_stats()["total_successes"] == 2
