"""Memory: rejections retain nothing, tracebacks never grow, successful calls leave nothing behind.

A peer's open breaker retains 1.4 KiB per rejected call (14 MiB for 10 000). Here 10 000
rejections, through each pattern and through the manager, with a telemetry listener registered,
must leave at most ``REJECTION_BUDGET`` bytes traced by ``tracemalloc`` (under 2 bytes per
rejection: counters that grew a digit, caches filled once). Each rejection is a fresh exception
that chains nothing (``__context__`` and ``__cause__`` are ``None``) and whose traceback is as
long on the 500th rejection as on the first.

Then 200 000 successful calls (1 000 000 with ``RUN_SLOW=1``) through the full manager pipeline,
in a loop that never yields to the event loop, must not grow memory: checked with
``tracemalloc`` over a window of ``WINDOW`` calls (at most ``SUCCESS_BUDGET`` bytes) and with the
interpreter's count of allocated blocks over the whole run (at most ``BLOCK_BUDGET`` blocks).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import traceback
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    ExecutionRejectedError,
    FallbackConfig,
    FallbackStrategy,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.events import HUB, Event, EventArgs, TelemetrySource

REJECTIONS = 10_000
REJECTION_BUDGET = 16 * 1024
"""Bytes 10 000 rejections may leave traced (a peer leaves 14 MiB)."""
WINDOW = 20_000
SUCCESS_BUDGET = 16 * 1024
"""Bytes a window of 20 000 successful calls may leave traced."""
BLOCK_BUDGET = 2_000
"""Allocated blocks the whole run of successful calls may add (it makes 200 000 calls or more)."""


class Sink:
    """A telemetry listener that drops every event, so that events are built but not kept."""

    def __init__(self) -> None:
        self.count = 0

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        self.count += 1


@pytest.fixture
def sink() -> Iterator[Sink]:
    listener = Sink()
    HUB.add_listener(listener)
    try:
        yield listener
    finally:
        HUB.remove_listener(listener)


async def ok() -> str:
    return "ok"


def ok_sync() -> str:
    return "ok"


class Rejector:
    """Builds a protection that rejects every call, and a way to call through it."""

    def __init__(self, kind: str, driver: str) -> None:
        self.kind = kind
        self.driver = driver
        self.release = threading.Event()
        self.holder: threading.Thread | None = None
        self.task: asyncio.Task[object] | None = None

    async def setup(self) -> Callable[[], Awaitable[object]]:
        """Return ``reject()``: one call that must raise a rejection."""
        sync = self.driver == "sync"
        if self.kind == "breaker":
            breaker = CircuitBreaker(f"memory-{self.driver}")
            breaker.force_open()
            if sync:
                return self._sync(lambda: breaker.call_sync(ok_sync))
            return lambda: breaker.call(ok)
        if self.kind == "bulkhead":
            bulkhead = Bulkhead(f"memory-{self.driver}", BulkheadConfig(max_concurrent=1, max_waiting=0))
            await self._occupy(bulkhead)
            if sync:
                return self._sync(lambda: bulkhead.execute_sync(ok_sync))
            return lambda: bulkhead.execute(ok)
        manager = ResilienceManager()
        config = ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(),
            retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0),
            bulkhead_config=BulkheadConfig(),
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.DEFAULT_VALUE, default_value=None, handle_exceptions=ConnectionError
            ),
            timeout=30.0,
            name=f"memory-{self.driver}",
        )
        manager.get_circuit_breaker(f"memory-{self.driver}", config.circuit_breaker).force_open()
        if sync:
            return self._sync(lambda: manager.execute_with_resilience_sync(ok_sync, config))
        return lambda: manager.execute_with_resilience(ok, config)

    @staticmethod
    def _sync(call: Callable[[], object]) -> Callable[[], Awaitable[object]]:
        async def wrapper() -> object:
            return call()

        return wrapper

    async def _occupy(self, bulkhead: Bulkhead) -> None:
        """Hold the bulkhead's only slot until teardown."""
        if self.driver == "sync":
            entered = threading.Event()

            def hold() -> None:
                entered.set()
                self.release.wait(timeout=30.0)

            self.holder = threading.Thread(target=bulkhead.execute_sync, args=(hold,))
            self.holder.start()
            assert entered.wait(timeout=5.0)
            return
        gate = asyncio.Event()

        async def hold() -> None:
            await gate.wait()

        self.task = asyncio.create_task(bulkhead.execute(hold))
        await asyncio.sleep(0)
        self.gate = gate

    async def teardown(self) -> None:
        self.release.set()
        if self.holder is not None:
            self.holder.join(timeout=5.0)
        if self.task is not None:
            self.gate.set()
            await self.task


KINDS = [(kind, driver) for kind in ("breaker", "bulkhead", "manager") for driver in ("async", "sync")]


async def reject_many(reject: Callable[[], Awaitable[object]], count: int) -> None:
    for _ in range(count):
        try:
            await reject()
        except ExecutionRejectedError:
            pass
        else:
            raise AssertionError("the call was not rejected")


@pytest.mark.parametrize(("kind", "driver"), KINDS)
async def test_ten_thousand_rejections_retain_no_memory(kind: str, driver: str, sink: Sink) -> None:
    """10 000 rejections leave at most 16 KiB traced (a peer retains 1.4 KiB each)."""
    rejector = Rejector(kind, driver)
    reject = await rejector.setup()
    try:
        await reject_many(reject, 1_000)  # warm every cache up
        gc.collect()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            await reject_many(reject, REJECTIONS)
            gc.collect()
            retained = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
    finally:
        await rejector.teardown()
    assert sink.count >= REJECTIONS, "the rejections were not reported: the event path was not exercised"
    assert retained <= REJECTION_BUDGET, f"{REJECTIONS} rejections retained {retained} bytes"


async def collect(reject: Callable[[], Awaitable[object]], at: tuple[int, ...]) -> list[BaseException]:
    kept: list[BaseException] = []
    for n in range(1, max(at) + 1):
        try:
            await reject()
        except ExecutionRejectedError as error:
            if n in at:
                kept.append(error)
    return kept


def tb_length(error: BaseException) -> int:
    return len(traceback.extract_tb(error.__traceback__))


@pytest.mark.parametrize(("kind", "driver"), KINDS)
async def test_rejections_do_not_grow_tracebacks_or_chain_errors(kind: str, driver: str) -> None:
    """Each rejection is a fresh exception with no context, no cause, and a constant traceback."""
    rejector = Rejector(kind, driver)
    reject = await rejector.setup()
    try:
        first, second, later = await collect(reject, (1, 2, 500))
    finally:
        await rejector.teardown()
    assert first is not second is not later
    assert tb_length(first) == tb_length(second) == tb_length(later)
    for error in (first, second, later):
        assert error.__context__ is None
        assert error.__cause__ is None


class Down(ConnectionError):
    """The dependency is down."""


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_a_rejection_after_failures_and_recovery_chains_nothing(driver: str) -> None:
    """A rejection raised by a retry or a recovery re-run after a failure does not hold that failure."""
    manager = ResilienceManager()
    manager.recovery_system.register_recovery_rule(
        Down, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    payload = bytearray(1 << 20)  # a large local in the failing frame: chaining it would retain 1 MiB

    async def down() -> None:
        data = payload
        raise Down(len(data))

    def down_sync() -> None:
        data = payload
        raise Down(len(data))

    for recovery in (False, True):
        # Without recovery, the retry's second attempt is rejected; with it, the re-run is.
        config = ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
            retry_policy=None if recovery else RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0),
            enable_recovery=recovery,
            name=f"chain-{driver}-{recovery}",
        )
        with pytest.raises(CircuitOpenError) as info:
            if driver == "sync":
                manager.execute_with_resilience_sync(down_sync, config)
            else:
                await manager.execute_with_resilience(down, config)
        assert info.value.__context__ is None, (
            f"recovery={recovery}: the rejection chains {info.value.__context__!r}"
        )
        assert info.value.__cause__ is None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_successful_calls_do_not_grow_memory(driver: str, slow: bool) -> None:
    """200 000 (1 000 000 with RUN_SLOW=1) successful calls through the full pipeline grow nothing."""
    calls = 1_000_000 if slow else 200_000
    manager = ResilienceManager()
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(),
        retry_policy=RetryPolicy(attempt_timeout=5.0),
        bulkhead_config=BulkheadConfig(),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
        timeout=10.0,
        name=f"steady-{driver}",
    )

    async def run(count: int) -> None:
        # A tight loop that never yields to the event loop: the adversarial case for timers.
        if driver == "sync":
            for _ in range(count):
                manager.execute_with_resilience_sync(ok_sync, config)
        else:
            for _ in range(count):
                await manager.execute_with_resilience(ok, config)

    await run(5_000)
    gc.collect()
    blocks_before = sys.getallocatedblocks()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        await run(WINDOW)
        gc.collect()
        window_retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    await run(calls - WINDOW)
    gc.collect()
    blocks_grown = sys.getallocatedblocks() - blocks_before
    executions = manager.get_resilience_statistics()["executions"]
    assert executions["successful"] == calls + 5_000
    assert window_retained <= SUCCESS_BUDGET, f"{WINDOW} successful calls retained {window_retained} bytes"
    assert blocks_grown <= BLOCK_BUDGET, f"{calls} successful calls left {blocks_grown} more allocated blocks"
