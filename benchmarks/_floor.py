"""The hand-written floor of the full pipeline: five minimal decorators doing the same work.

Issue 14 measures the full pipeline (fallback > timeout > retry > breaker > bulkhead) against
what a careful programmer would write by hand for the same policy, with no telemetry, no
statistics and no configurability: a plain stack of five decorators, each the least code that
keeps its promise. ``tests/test_benchmarks_floor.py`` checks that the stack and ours compute
the same results (values, fallbacks, calls that reach the function, breaker trips) on the same
scripts, so the ratio compares equal work.

What each layer does, as ours does for :func:`_scenarios.our_full_config`:

- fallback: any exception (rejections included) becomes ``default``;
- timeout: one deadline for the whole execution (``asyncio.timeout`` in async; in sync, checked
  before each attempt and after each call, as the sync driver does for a call it cannot cancel);
- retry: ``attempts`` attempts on any exception but a rejection, exponential delays
  (``initial_delay * 2 ** (attempt - 1)``, full jitter), no sleep after the last one;
- breaker: opens after ``failure_threshold`` consecutive failures for ``open_seconds``, then
  lets one probe through (thread-safe: a lock on the failure path, the success path lock-free);
- bulkhead: ``max_concurrent`` at once, callers wait for a slot (a semaphore).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class FloorPolicy:
    """What both floors do; the defaults are those of ``_scenarios.our_full_config``."""

    default: Any = field(default_factory=lambda: {"status": "error"})
    """What the fallback answers."""
    total_timeout: float = 30.0
    attempts: int = 3
    initial_delay: float = 1.0
    failure_threshold: int = 5
    open_seconds: float = 60.0
    max_concurrent: int = 10


def floor(fn: Callable[[], Any], policy: FloorPolicy, *, is_async: bool) -> Callable[[], Any]:
    """``fn`` under the async or the sync floor."""
    return async_floor(fn, policy) if is_async else sync_floor(fn, policy)


class RejectedError(Exception):
    """A call the breaker refused (never retried, as ours does not retry a rejection)."""


class _Breaker:
    """Consecutive failures; the rule shared by both stacks' breaker decorators."""

    def __init__(self, failure_threshold: int, open_seconds: float) -> None:
        self.threshold = failure_threshold
        self.open_seconds = open_seconds
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        self.lock = threading.Lock()

    def admit(self) -> None:
        if self.open_until:
            with self.lock:
                if self.probing or time.monotonic() < self.open_until:
                    raise RejectedError
                self.probing = True

    def succeeded(self) -> None:
        if self.failures or self.open_until:
            with self.lock:
                self.failures = 0
                self.open_until = 0.0
                self.probing = False

    def failed(self) -> None:
        with self.lock:
            self.failures += 1
            if self.probing or self.failures >= self.threshold:
                self.open_until = time.monotonic() + self.open_seconds
                self.probing = False


def _delay(initial: float, attempt: int) -> float:
    return random.uniform(0.0, initial * 2 ** (attempt - 1)) if initial else 0.0


def async_floor(fn: Callable[[], Awaitable[T]], policy: FloorPolicy) -> Callable[[], Awaitable[Any]]:
    """``fn`` under the five hand-written async decorators, outermost first."""
    breaker = _Breaker(policy.failure_threshold, policy.open_seconds)
    slots = asyncio.Semaphore(policy.max_concurrent)

    def bulkhead(f: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        @wraps(f)
        async def wrapper() -> T:
            async with slots:
                return await f()

        return wrapper

    def circuit(f: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        @wraps(f)
        async def wrapper() -> T:
            breaker.admit()
            try:
                result = await f()
            except Exception:
                breaker.failed()
                raise
            breaker.succeeded()
            return result

        return wrapper

    def retry(f: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        @wraps(f)
        async def wrapper() -> T:
            attempt = 1
            while True:
                try:
                    return await f()
                except RejectedError:
                    raise
                except Exception:
                    if attempt >= policy.attempts:
                        raise
                await asyncio.sleep(_delay(policy.initial_delay, attempt))
                attempt += 1

        return wrapper

    def timeout(f: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        @wraps(f)
        async def wrapper() -> T:
            async with asyncio.timeout(policy.total_timeout):
                return await f()

        return wrapper

    def fallback(f: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[Any]]:
        @wraps(f)
        async def wrapper() -> Any:
            try:
                return await f()
            except Exception:
                return policy.default

        return wrapper

    return fallback(timeout(retry(circuit(bulkhead(fn)))))


def sync_floor(fn: Callable[[], T], policy: FloorPolicy) -> Callable[[], Any]:
    """``fn`` under the five hand-written sync decorators, outermost first."""
    breaker = _Breaker(policy.failure_threshold, policy.open_seconds)
    slots = threading.BoundedSemaphore(policy.max_concurrent)
    deadline = threading.local()

    def expired() -> bool:
        return time.monotonic() >= deadline.at

    def bulkhead(f: Callable[[], T]) -> Callable[[], T]:
        @wraps(f)
        def wrapper() -> T:
            if not slots.acquire(timeout=max(0.0, deadline.at - time.monotonic())):
                raise RejectedError
            try:
                return f()
            finally:
                slots.release()

        return wrapper

    def circuit(f: Callable[[], T]) -> Callable[[], T]:
        @wraps(f)
        def wrapper() -> T:
            breaker.admit()
            try:
                result = f()
            except Exception:
                breaker.failed()
                raise
            breaker.succeeded()
            return result

        return wrapper

    def retry(f: Callable[[], T]) -> Callable[[], T]:
        @wraps(f)
        def wrapper() -> T:
            attempt = 1
            while True:
                try:
                    return f()
                except RejectedError:
                    raise
                except Exception:
                    if attempt >= policy.attempts or expired():
                        raise
                time.sleep(_delay(policy.initial_delay, attempt))
                attempt += 1

        return wrapper

    def timeout(f: Callable[[], T]) -> Callable[[], T]:
        @wraps(f)
        def wrapper() -> T:
            deadline.at = time.monotonic() + policy.total_timeout
            result = f()
            if expired():
                raise TimeoutError
            return result

        return wrapper

    def fallback(f: Callable[[], T]) -> Callable[[], Any]:
        @wraps(f)
        def wrapper() -> Any:
            try:
                return f()
            except Exception:
                return policy.default

        return wrapper

    return fallback(timeout(retry(circuit(bulkhead(fn)))))


def traced(
    fn: Callable[[], Any], tracer: Any, histogram: Any, *, name: str, is_async: bool
) -> Callable[[], Any]:
    """``fn`` in a hand-written span and duration histogram: what a user writes without us.

    The span is the current span around the call (``start_as_current_span``), an error sets
    its status; the histogram records the duration in seconds with the same attributes the span
    carries (computed once, as a careful hand would).
    """
    attributes = {"resilience.name": name, "resilience.operation": fn.__name__}

    if is_async:

        @wraps(fn)
        async def async_wrapper() -> Any:
            start = time.perf_counter()
            try:
                with tracer.start_as_current_span(name, attributes=attributes):
                    return await fn()
            finally:
                histogram.record(time.perf_counter() - start, attributes)

        return async_wrapper

    @wraps(fn)
    def wrapper() -> Any:
        start = time.perf_counter()
        try:
            with tracer.start_as_current_span(name, attributes=attributes):
                return fn()
        finally:
            histogram.record(time.perf_counter() - start, attributes)

    return wrapper
