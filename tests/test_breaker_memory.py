"""What a breaker costs to keep: its bytes at default config, and the first period all breakers share."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from otel_resilience.patterns.circuit_breaker.core import _FIRST_PERMIT
from otel_resilience.testing import FakeClock

_MEASURE = """
import gc, sys, tracemalloc
from otel_resilience import CircuitBreaker
class Shape:  # an object laid out as a breaker itself is: a weak reference and six fields
    __slots__ = ("__weakref__", "a", "b", "c", "d", "e", "f")
count = 2_000
names = [f"memory.{i}" for i in range(count)]
keep = [None] * count
CircuitBreaker("warm-up")
gc.collect()
tracemalloc.start()
start = tracemalloc.get_traced_memory()[0]
for i, name in enumerate(names):
    keep[i] = CircuitBreaker(name)
gc.collect()
print((tracemalloc.get_traced_memory()[0] - start) / count, sys.getsizeof(Shape()))
"""

SHAPE_ON_3_11 = 88
"""The bytes of ``Shape`` on CPython 3.11, on which the 600 B were set (docs/benchmarks.md).

CPython 3.12 lays out such an object in 8 B more: the interpreter's, not the breaker's, so the
budget moves by what this interpreter's layout adds to it.
"""


def test_a_breaker_at_default_config_keeps_at_most_600_bytes() -> None:
    # In a new interpreter: in this one, the registry's index already holds the breakers of
    # other tests, and where it grows would move the figure.
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True, timeout=60
    )
    per_breaker, shape = map(float, run.stdout.split())
    assert per_breaker - (shape - SHAPE_ON_3_11) <= 600


def test_the_first_period_every_breaker_shares_is_never_changed() -> None:
    before = dataclasses.astuple(_FIRST_PERMIT)
    clock = FakeClock()
    breaker = CircuitBreaker(
        "first-period",
        CircuitBreakerConfig(failure_threshold=2, timeout=1.0, max_half_open_wait=1.0),
        clock=clock,
    )
    assert breaker._core._permit is _FIRST_PERMIT
    with pytest.raises(ZeroDivisionError):
        breaker.call_sync(lambda: 1 / 0)
    assert breaker.call_sync(lambda: "ok") == "ok"
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            breaker.call_sync(lambda: 1 / 0)
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: "rejected")
    clock.advance(1.0)
    probe = breaker.guard()
    probe.__enter__()  # a HALF_OPEN probe: its period counts it, not the first one
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: "reclaims the probe")
    probe.__exit__(None, None, None)
    breaker._reconfigure(CircuitBreakerConfig(failure_threshold=3))  # retires the core it had
    assert dataclasses.astuple(_FIRST_PERMIT) == before
    assert CircuitBreaker("first-period-2")._core._permit is _FIRST_PERMIT
