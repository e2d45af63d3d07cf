"""Fixtures for telemetry tests: the real SDK with in-memory exporters, injected explicitly."""

from __future__ import annotations

from typing import Any

import pytest

from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import Outcome, TelemetrySource
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.strategy import Strategy
from otel_resilience.errors import CircuitOpenError, OperationTimeoutError


class Scripted(Strategy):
    """A tiny strategy that produces a chosen outcome around the rest of the chain."""

    __slots__ = ("_mode", "_name")

    kind = "scripted"

    def __init__(self, name: str, mode: str) -> None:
        super().__init__()
        self._name = name
        self._mode = mode

    @property
    def name(self) -> str:
        return self._name

    def _before(self, ctx: ExecutionContext) -> None:
        if self._mode == "reject":
            raise CircuitOpenError(self._name, "open", 5.0)
        if self._mode == "timeout":
            raise OperationTimeoutError(ctx.operation, 1.0)
        if self._mode == "recover":
            ctx.next_attempt()  # a second attempt: the execution counts as recovered if it returns

    async def execute(self, ctx: ExecutionContext) -> Any:
        self._before(ctx)
        if self._mode == "fallback":
            try:
                return await self.next.execute(ctx)
            except Exception:
                ctx.outcome = Outcome.FALLBACK
                return "fallback"
        return await self.next.execute(ctx)

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        self._before(ctx)
        if self._mode == "fallback":
            try:
                return self.next.execute_sync(ctx)
            except Exception:
                ctx.outcome = Outcome.FALLBACK
                return "fallback"
        return self.next.execute_sync(ctx)


def scripted_pipeline(name: str, mode: str = "pass", *, spans: bool = True, metrics: bool = True) -> Pipeline:
    """A pipeline named ``name`` (kind ``pipeline``) around one :class:`Scripted` strategy."""
    source = TelemetrySource("pipeline", name, name, spans=spans, metrics=metrics)
    return PipelineBuilder(name, source=source).add(Scripted(name, mode)).build()


async def run(pipeline: Pipeline, driver: str, fn: Any, *args: Any) -> Any:
    """Run ``fn`` (a sync function) through ``pipeline`` with the async or the sync driver."""
    if driver == "sync":
        return pipeline.execute_sync(fn, *args)

    async def call(*a: Any) -> Any:
        return fn(*a)

    return await pipeline.execute(call, *args)


@pytest.fixture
def scripted() -> Any:
    """The :func:`scripted_pipeline` factory."""
    return scripted_pipeline


@pytest.fixture
def runner() -> Any:
    """The :func:`run` helper (async and sync drivers)."""
    return run
