"""Early admission: a pipeline admits its first step itself, before it makes the call's context."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import Scopes, counting_contexts, listeners_removed

import otel_resilience as orr
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import HUB, Outcome
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.step import Answer, Step, Wait
from otel_resilience.errors import CircuitOpenError


class _Gate(Step):
    """A step that admits early: a permit while open, a rejection while shut."""

    kind = "gate"
    admit_waits = False
    admits_early = True

    def __init__(self, *, shut: bool = False) -> None:
        super().__init__()
        self.shut = shut
        self.seen: list[bool] = []
        self.hooks: list[tuple[str, Any]] = []
        self.entries = Counter()

    def admit(self, ctx: ExecutionContext) -> Any:
        self.seen.append(ctx.sync)
        if self.shut:
            raise CircuitOpenError("gate", "open", 1.0)
        return "permit"

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self.hooks.append(("success", token))
        assert ctx.fn is not None  # the hooks get the real context

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        self.hooks.append(("failure", token))


class _Inner(Step):
    kind = "inner"


async def _run(pipeline: Pipeline, driver: str, fn: Any = None) -> Any:
    def work() -> str:
        if fn is not None:
            fn()
        return "done"

    async def awork() -> str:
        return work()

    return pipeline.execute_sync(work) if driver == "sync" else await pipeline.execute(awork)


async def test_a_rejection_by_an_early_head_makes_no_context(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate(shut=True)
    pipeline = PipelineBuilder("early-shut").add(gate).add(_Inner()).build()
    made = counting_contexts(monkeypatch)
    with pytest.raises(CircuitOpenError):
        await _run(pipeline, driver)
    assert made == [0]
    assert gate.seen == [driver == "sync"]  # the placeholder says which driver runs the call
    assert (pipeline.stats.rejected, gate.entries.value, gate.hooks) == (1, 0, [])


async def test_an_admitted_call_hands_the_early_token_to_the_driver(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = _Gate()
    pipeline = PipelineBuilder("early-open").add(gate).add(_Inner()).build()
    made = counting_contexts(monkeypatch)
    assert await _run(pipeline, driver) == "done"

    def boom() -> None:
        raise ValueError

    with pytest.raises(ValueError):
        await _run(pipeline, driver, boom)
    assert made == [2]
    assert gate.seen == [driver == "sync"] * 2  # admitted once per call: by the pipeline only
    assert gate.hooks == [("success", "permit"), ("failure", "permit")]
    assert (gate.entries.value, pipeline.stats.succeeded, pipeline.stats.errors) == (2, 1, 1)


class _Nosy(_Gate):
    """Admits early but reads the context's function: the placeholder refuses it."""

    kind = "nosy"

    def admit(self, ctx: ExecutionContext) -> Any:
        return ctx.fn


class _Writer(_Gate):
    kind = "writer"

    def admit(self, ctx: ExecutionContext) -> Any:
        ctx.properties = {"k": 1}
        return None


async def test_the_placeholder_holds_sync_only(driver: str) -> None:
    with pytest.raises(AttributeError, match=r"ExecutionContext\.fn is not set yet.*admits_early"):
        await _run(PipelineBuilder("nosy").add(_Nosy()).build(), driver)
    with pytest.raises(AttributeError, match=r"cannot set ExecutionContext\.properties"):
        await _run(PipelineBuilder("writer").add(_Writer()).build(), driver)


class _Broken(_Gate):
    """Admits early and raises what it is given (a bug of a custom step, or an interrupt)."""

    kind = "broken"

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def admit(self, ctx: ExecutionContext) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "counted"), [(RuntimeError("bug"), "errors"), (KeyboardInterrupt(), "cancelled")]
)
async def test_what_an_early_admit_raises_is_counted_and_passes(
    driver: str, error: BaseException, counted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = PipelineBuilder("broken").add(_Broken(error)).add(_Inner()).build()
    made = counting_contexts(monkeypatch)
    with pytest.raises(type(error)) as raised:
        await _run(pipeline, driver)
    assert raised.value is error
    assert made == [0]
    counts = {
        name: getattr(pipeline.stats, name) for name in ("errors", "cancelled", "rejected", "succeeded")
    }
    assert counts == {"errors": 0, "cancelled": 0, "rejected": 0, "succeeded": 0, counted: 1}


class _Gives(Wait):
    """A wait that gives ``value`` (a token or an Answer), and records that it was waited for."""

    def __init__(self, value: Any, waited: list[str]) -> None:
        self.value, self.waited = value, waited

    async def wait(self) -> Any:
        self.waited.append("async")
        return self.value

    def wait_sync(self) -> Any:
        self.waited.append("sync")
        return self.value


class _Queues(_Gate):
    """Admits early with a wait: the driver waits for it, then runs with the token it gives."""

    kind = "queues"
    admit_waits = True

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.waited: list[str] = []

    def admit(self, ctx: ExecutionContext) -> Any:
        self.seen.append(ctx.sync)
        return _Gives(self.value, self.waited)


async def test_a_wait_admitted_early_is_waited_for_by_the_driver(driver: str) -> None:
    step, ran = _Queues("slot"), []
    pipeline = PipelineBuilder("queues").add(step).build()
    assert await _run(pipeline, driver, lambda: ran.append(1)) == "done"
    assert (step.seen, step.waited, ran) == ([driver == "sync"], [driver], [1])
    assert step.hooks == [("success", "slot")]


async def test_an_answer_from_a_wait_admitted_early_ends_the_call(driver: str) -> None:
    step, ran = _Queues(Answer("injected")), []
    pipeline = PipelineBuilder("answers").add(step).build()
    assert await _run(pipeline, driver, lambda: ran.append(1)) == "injected"
    assert (step.waited, ran, step.hooks, step.entries.value) == ([driver], [], [], 0)


async def test_a_full_bulkhead_rejects_without_a_context(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulkhead = orr.Bulkhead(f"early-bulkhead-{driver}", orr.BulkheadConfig(max_concurrent=1, max_waiting=0))
    made = counting_contexts(monkeypatch)
    with bulkhead.slot():
        with pytest.raises(orr.BulkheadFullError):
            if driver == "sync":
                bulkhead.execute_sync(lambda: 1)
            else:

                async def work() -> int:
                    return 1

                await bulkhead.execute(work)
        assert made == [0]
    assert bulkhead.get_stats()["rejected"] == 1


async def test_a_queued_call_of_an_early_bulkhead_waits_for_its_slot() -> None:
    bulkhead = orr.Bulkhead("early-queue", orr.BulkheadConfig(max_concurrent=1, max_waiting=1))
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "first"

    async def second() -> str:
        return "second"

    first_task = asyncio.create_task(bulkhead.execute(hold))
    await asyncio.sleep(0)
    second_task = asyncio.create_task(bulkhead.execute(second))
    await asyncio.sleep(0)
    assert bulkhead.get_stats()["waiting"] == 1
    release.set()
    assert await asyncio.gather(first_task, second_task) == ["first", "second"]
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["completed"]) == (0, 0, 2)


async def test_a_step_that_is_not_first_is_admitted_by_its_driver(driver: str) -> None:
    inner = _Gate()
    pipeline = PipelineBuilder("second").add(_Inner()).add(inner).build()
    assert await _run(pipeline, driver) == "done"
    assert inner.hooks == [("success", "permit")]
    assert inner._early is False


async def test_a_step_linked_inside_another_is_not_admitted_early_when_it_heads_a_pipeline_too(
    driver: str,
) -> None:
    """The innermost step of one pipeline may head another: both keep asking its admission."""
    gate = _Gate(shut=True)
    inside = PipelineBuilder("inside").add(_Inner()).add(gate).build()
    alone = PipelineBuilder("alone").add(gate).build()
    for pipeline in (inside, alone):
        with pytest.raises(CircuitOpenError):
            await _run(pipeline, driver)
        assert pipeline.stats.rejected == 1
    assert gate._early is False
    assert len(gate.seen) == 2


class _OwnDriver(_Gate):
    """Says it admits early but runs its own async driver, which admits it: never admitted early."""

    kind = "own_driver"

    async def execute(self, ctx: ExecutionContext) -> Any:  # type: ignore[override]
        token = self.admit(ctx)
        self.hooks.append(("own", token))
        return await ctx.fn()


async def test_a_step_that_runs_its_own_driver_is_not_admitted_early() -> None:
    step = _OwnDriver()
    assert await _run(PipelineBuilder("own").add(step).build(), "async") == "done"
    assert (step.seen, step.hooks, step._early) == ([False], [("own", "permit")], False)


def test_a_step_heading_an_early_pipeline_cannot_run_inside_another_step() -> None:
    gate = _Gate()
    PipelineBuilder("first").add(gate).build()
    with pytest.raises(ValueError, match="already linked"):
        PipelineBuilder("second").add(_Inner()).add(gate)


async def test_an_execution_in_a_scope_is_admitted_by_the_pipeline_too(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scopes = Scopes()
    with listeners_removed():
        HUB.add_listener(scopes)
        try:
            gate = _Gate(shut=True)
            pipeline = PipelineBuilder("scoped").add(gate).build()
            made = counting_contexts(monkeypatch)
            with pytest.raises(CircuitOpenError):
                await _run(pipeline, driver)
            gate.shut = False
            assert await _run(pipeline, driver) == "done"
        finally:
            HUB.remove_listener(scopes)
    assert scopes.ended == [Outcome.REJECTED, Outcome.SUCCESS]
    assert made == [2]  # in a scope the context is made first: beside the scope's, it costs nothing
    assert gate.seen == [driver == "sync"] * 2  # still admitted by the pipeline, with the placeholder
    assert gate.hooks == [("success", "permit")]


async def test_an_open_breaker_rejects_without_a_context(
    driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    breaker = orr.CircuitBreaker(f"early-breaker-{driver}")
    breaker.force_open()
    made = counting_contexts(monkeypatch)

    def work() -> int:
        return 1

    async def awork() -> int:
        return 1

    with pytest.raises(CircuitOpenError):
        if driver == "sync":
            breaker.protect(work)()
        else:
            await breaker.protect(awork)()
    assert made == [0]
    assert breaker.get_stats()["total_rejected"] == 1
