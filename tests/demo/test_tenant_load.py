"""The keyed ``tenants`` load: every call that raises is counted for its tenant, and the load goes on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from otel_resilience import CircuitBreakerConfig, RateLimiterConfig, ResilienceConfig, ResilienceManager
from otel_resilience.demo import system as demo_system
from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.policies import TENANTS, tenant_quota
from otel_resilience.demo.scenarios import build_scenario
from otel_resilience.demo.system import POLICIES, TENANT_CYCLE, DemoSystem
from otel_resilience.testing import FakeClock

SCALE = 0.001
"""1 ms of demo per production second: a tenant request every 0.5 ms."""


def _system(tenants: ResilienceConfig) -> DemoSystem:
    """A demo system whose ``tenants`` policy comes from a file: ``tenants``."""
    start = time.monotonic()
    return DemoSystem(
        build_scenario("steady", 7),
        time_scale=SCALE,
        monitor=Monitor(POLICIES, start=start),
        start=start,
        policies={"tenants": tenants},
    )


QUOTA = RateLimiterConfig(rate=1000.0, burst=1000)
"""A quota no tenant reaches."""


@pytest.fixture
def tenants_with_a_breaker() -> Iterator[DemoSystem]:
    """A demo system whose ``tenants`` policy from a file has a breaker beside its quota."""
    system = _system(
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5), rate_limiter=QUOTA)
    )
    yield system
    system.close()


@pytest.fixture
def tenants_with_a_quota() -> Iterator[DemoSystem]:
    """A demo system whose ``tenants`` policy from a file has a quota only."""
    system = _system(ResilienceConfig(rate_limiter=QUOTA))
    yield system
    system.close()


async def _until(condition: Callable[[], bool], load: asyncio.Task[None]) -> None:
    """Wait until ``condition()`` holds or the load ended (bounded far above the few ms it takes)."""
    deadline = time.monotonic() + 10.0
    while not condition() and not load.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)


async def _stopped(load: asyncio.Task[None]) -> None:
    load.cancel()
    await asyncio.gather(load, return_exceptions=True)


async def test_a_breaker_of_a_config_file_rejecting_a_tenant_is_counted_and_the_load_goes_on(
    tenants_with_a_breaker: DemoSystem,
) -> None:
    """``acme``'s breaker is open: its calls are counted as rejections, the other tenants' go on."""
    system = tenants_with_a_breaker
    breaker = system.tenants.for_key("acme").circuit_breaker
    assert breaker is not None
    breaker.force_open()
    load = asyncio.ensure_future(system._tenant_load())
    try:
        await _until(lambda: system.tenant_rejections["acme"] >= 6, load)
        assert not load.done(), load.exception()
    finally:
        await _stopped(load)
    stats = system.tenant_stats()
    assert stats["rejections"]["acme"] >= 6
    assert stats["rejections"]["globex"] == stats["rejections"]["initech"] == 0
    assert stats["failures"] == dict.fromkeys(TENANT_CYCLE, 0)
    assert system.tenants.for_key("globex").circuit_breaker.get_stats()["total_successes"] >= 1


async def test_an_unexpected_error_is_counted_and_logged_and_the_load_goes_on(
    tenants_with_a_quota: DemoSystem, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An error of no policy ends no load: counted as the tenant's failure, logged with its traceback."""
    system = tenants_with_a_quota

    async def broken() -> None:
        raise KeyError("tenant")

    monkeypatch.setattr(demo_system, "_tenant_call", broken)
    load = asyncio.ensure_future(system._tenant_load())
    with caplog.at_level(logging.ERROR, logger="otel_resilience.demo"):
        try:
            # A whole cycle: acme's third call is the cycle's seventh (six calls give it two).
            await _until(lambda: sum(system.tenant_failures.values()) >= len(TENANT_CYCLE), load)
            assert not load.done(), load.exception()
        finally:
            await _stopped(load)
    assert system.tenant_failures["acme"] >= 3
    assert system.tenant_rejections == dict.fromkeys(TENANT_CYCLE, 0)
    logged = [r for r in caplog.records if "raised an unexpected KeyError" in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None


class _Ended(Exception):
    """The simulated load ran its course."""


def _tenant_rejections_after_a_stall(
    monkeypatch: pytest.MonkeyPatch, stall_after: int, stall: float
) -> dict[str, int]:
    """Run the tenants' load on a fake clock, in production time, the loop stalled once.

    The loop is held ``stall`` seconds past its ``stall_after``-th wake-up (a slow frame on a busy
    machine: 3 s of production time is 30 ms at ``--time-scale 0.01``); 100 s in all.
    """
    clock = FakeClock()
    handle = ResilienceManager(clock=clock).policy(TENANTS, tenant_quota(1.0))
    load = SimpleNamespace(
        _scale=1.0,
        _share=1.0,  # the whole load: one replica
        tenants=handle,
        tenant_calls=dict.fromkeys(TENANT_CYCLE, 0),
        tenant_rejections=dict.fromkeys(TENANT_CYCLE, 0),
        tenant_failures=dict.fromkeys(TENANT_CYCLE, 0),
    )
    wake_ups = 0

    async def sleep(delay: float) -> None:
        nonlocal wake_ups
        wake_ups += 1
        clock.advance(delay + (stall if wake_ups == stall_after else 0.0))
        if clock.now() > 100.0:
            raise _Ended

    loop = SimpleNamespace(time=clock.now)
    monkeypatch.setattr(demo_system, "asyncio", SimpleNamespace(get_running_loop=lambda: loop, sleep=sleep))
    with pytest.raises(_Ended):
        asyncio.run(DemoSystem._tenant_load(load))  # type: ignore[arg-type]
    return load.tenant_rejections


def test_without_a_stall_only_the_tenant_over_its_quota_is_shed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``acme`` (0.6/s on a quota of 0.5/s) is shed, one call in six; the others never."""
    rejections = _tenant_rejections_after_a_stall(monkeypatch, stall_after=0, stall=0.0)
    assert {tenant for tenant, count in rejections.items() if count} == {"acme"}
    assert 8 <= rejections["acme"] <= 11  # 0.1/s over 100 s


@pytest.mark.parametrize("stall_after", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("stall", [1.0, 2.6, 3.1, 4.0, 5.5, 8.0, 30.0])
def test_a_stalled_loop_sheds_no_tenant_within_its_quota(
    monkeypatch: pytest.MonkeyPatch, stall_after: int, stall: float
) -> None:
    """After the loop fell behind, the tenants within their quota are still never shed.

    Requests made up at the end of a stall would come closer together than the tenant's schedule
    (its bucket, full at 2 while it waited, refills no faster): ``globex`` was shed after a 3.1 s
    stall.
    """
    rejections = _tenant_rejections_after_a_stall(monkeypatch, stall_after, stall)
    assert {tenant: count for tenant, count in rejections.items() if count and tenant != "acme"} == {}
