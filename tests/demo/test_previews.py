"""The ``previews`` limiter: one rate limiter per tenant (``RateLimiter.per_key``), asked with
``try_acquire()`` alone, one permit per ``content_api`` request; the ``surge`` flood is ``acme``'s."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from otel_resilience import RateLimiter
from otel_resilience.demo import system as demo_system
from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.policies import NOISY_TENANT, PREVIEWS, preview_quota
from otel_resilience.demo.scenarios import SURGE_LOAD, build_scenario
from otel_resilience.demo.system import POLICIES, PREVIEWED, RATES, TENANT_CYCLE, DemoSystem
from otel_resilience.demo.view import Frame, PlainView, RichView
from otel_resilience.ops import alert_rules as ar
from otel_resilience.testing import FakeClock

RUN = 400.0
"""Production seconds of the simulated load: the surge's flood (from t = 60 s) runs to its end."""


class _Ended(Exception):
    """The simulated load ran its course."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _system(scenario: str, clock: FakeClock) -> DemoSystem:
    """A demo system in production time (scale 1) on ``clock``, its previews limiter on it too."""
    return DemoSystem(
        build_scenario(scenario, 7),
        time_scale=1.0,
        monitor=Monitor(POLICIES, start=0.0, clock=clock.now),
        start=0.0,
        clock=clock.now,
        previews=RateLimiter.per_key(PREVIEWS, preview_quota(1.0), clock=clock),
    )


@pytest.fixture
def steady(clock: FakeClock) -> Iterator[DemoSystem]:
    system = _system("steady", clock)
    yield system
    system.close()


@pytest.fixture
def surge(clock: FakeClock) -> Iterator[DemoSystem]:
    system = _system("surge", clock)
    yield system
    system.close()


def _run_content_api_load(system: DemoSystem, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run ``content_api``'s load generator for :data:`RUN` production seconds on ``clock``.

    No call is made (the requests are only counted); returns the load's condition at each request.
    """
    conditions: list[str] = []

    def spawn(name: str) -> None:
        assert name == PREVIEWED
        conditions.append(system.dependencies[name].state().condition.label)

    async def sleep(delay: float) -> None:
        clock.advance(delay)
        if clock.now() > RUN:
            raise _Ended

    monkeypatch.setattr(system, "_spawn", spawn)
    loop = SimpleNamespace(time=clock.now)
    monkeypatch.setattr(demo_system, "asyncio", SimpleNamespace(get_running_loop=lambda: loop, sleep=sleep))
    with pytest.raises(_Ended):
        asyncio.run(system._generate(PREVIEWED))
    return conditions


def test_every_tenant_stays_within_its_preview_quota_in_steady(
    steady: DemoSystem, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each content_api request asks its tenant for a preview; no tenant is refused one (acme sends
    0.6/s, the most, against 1/s), so ResilienceRateLimiterRefusing has nothing to see."""
    requests = _run_content_api_load(steady, clock, monkeypatch)
    stats = steady.preview_stats()
    assert stats["rate"] == pytest.approx(1.0)
    assert stats["burst"] == 5
    assert stats["keys"] == len(set(TENANT_CYCLE))
    assert stats["refused"] == dict.fromkeys(TENANT_CYCLE, 0)
    granted = stats["granted"]
    assert sum(granted.values()) == len(requests) == pytest.approx(RATES[PREVIEWED] * RUN, abs=2)
    for tenant in set(TENANT_CYCLE):  # the usual load's tenants take turns
        share = TENANT_CYCLE.count(tenant) / len(TENANT_CYCLE)
        assert granted[tenant] == pytest.approx(share * len(requests), abs=1)


def test_the_surge_flood_is_the_noisy_tenants_and_its_quota_refuses_most_of_it(
    surge: DemoSystem, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In surge the noisy caller's 10/s are acme's: its preview quota (1/s) refuses 9 in 10 of them,
    far past ResilienceRateLimiterRefusing's share (10 %), while the other tenants keep theirs."""
    requests = _run_content_api_load(surge, clock, monkeypatch)
    flooded = sum(1 for label in requests if label in {"flooded", "strained"})
    assert flooded > 0.8 * (RATES[PREVIEWED] + SURGE_LOAD) * (RUN - 60.0)
    stats = surge.preview_stats()
    refused, granted = stats["refused"], stats["granted"]
    assert {tenant for tenant, count in refused.items() if count} == {NOISY_TENANT}
    usual = len(requests) - SURGE_LOAD / (RATES[PREVIEWED] + SURGE_LOAD) * flooded
    for tenant in set(TENANT_CYCLE) - {NOISY_TENANT}:
        share = TENANT_CYCLE.count(tenant) / len(TENANT_CYCLE)
        assert granted[tenant] == pytest.approx(share * usual, rel=0.02)
    # acme takes 1/s (its quota) and the burst while flooded, and its usual share before.
    assert granted[NOISY_TENANT] == pytest.approx(0.6 * 60.0 + 1.0 * (RUN - 60.0) + 5, rel=0.05)
    asked = sum(refused.values()) + sum(granted.values())
    assert sum(refused.values()) / asked > 0.5 > ar.RATE_LIMITED_RATIO


async def test_a_surge_run_shows_the_previews_refused_in_the_view_and_the_summary(run_scenario: Any) -> None:
    """A fast surge run: the previews limiter refuses acme's flood (the summary's ``previews``, its
    line, the status lines), and the other tenants hardly ever (only a stalled loop's catch-up)."""
    summary, out = await run_scenario("surge", 5.0)
    previews = summary["previews"]
    assert previews["rate"] == pytest.approx(1.0)
    assert previews["keys"] == len(set(TENANT_CYCLE))
    refused = previews["refused"]
    asked = sum(refused.values()) + sum(previews["granted"].values())
    assert sum(refused.values()) > ar.RATE_LIMITED_RATIO * asked  # what the alert fires on
    assert refused[NOISY_TENANT] > 0.8 * sum(refused.values())
    assert re.search(
        rf"previews      1/s per tenant \(burst 5, try_acquire alone\), 5 tenants: \d+ rendered, "
        rf"{sum(refused.values())} refused \(acme {refused[NOISY_TENANT]}",
        out,
    )
    status = [line for line in out.splitlines() if "exec/s" in line]
    assert re.search(r"previews \d+ rendered [1-9]\d* refused", status[-1])


@pytest.mark.parametrize("view_kind", ["rich", "plain"])
def test_both_views_show_the_previews_rendered_and_refused(view_kind: str) -> None:
    """The live view's status line and the plain status line count the previews, refused ones too."""
    frame = Frame(
        elapsed=1.0,
        production=100.0,
        policies=[],
        calls={},
        recovery_rate=None,
        alerts=0,
        time_scale=0.01,
        previews={"granted": {"acme": 7, "globex": 5}, "refused": {"acme": 41, "globex": 0}},
    )
    buffer = io.StringIO()
    view: RichView | PlainView
    if view_kind == "rich":
        view = RichView(Console(file=buffer, width=200, force_terminal=True, color_system=None))
    else:
        view = PlainView(buffer, 1.0)
    view.begin(["header"])
    view.update(frame, [], 1.0)
    view.close()
    assert "previews 12 rendered 41 refused" in buffer.getvalue(), buffer.getvalue()
