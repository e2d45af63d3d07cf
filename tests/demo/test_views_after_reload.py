"""The view's hedging and limiter counts are the policy's: a reload that replaces its links loses none."""

from __future__ import annotations

import dataclasses
import time

from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.scenarios import build_scenario
from otel_resilience.demo.system import POLICIES, DemoSystem, HedgingView, LimiterView

SCALE = 0.001


async def answer() -> str:
    return "ok"


def _hedging(system: DemoSystem) -> HedgingView:
    hedging = next(view for view in system.views() if view.name == "database").hedging
    assert hedging is not None
    return hedging


def _limiter(system: DemoSystem) -> LimiterView:
    limiter = next(view for view in system.views() if view.name == "content_api").limiter
    assert limiter is not None
    return limiter


async def test_the_hedging_and_limiter_counts_never_go_down_across_a_reload() -> None:
    start = time.monotonic()
    system = DemoSystem(
        build_scenario("steady", 7), time_scale=SCALE, monitor=Monitor(POLICIES, start=start), start=start
    )
    try:
        database, content = system.handles["database"], system.handles["content_api"]
        for _ in range(3):
            assert await database.execute(answer) == "ok"
            assert await content.execute(answer) == "ok"
        hedging, limiter = _hedging(system), _limiter(system)
        assert (hedging.executions, limiter.admitted) == (3, 3)
        config = database.config
        assert config.hedging is not None
        retuned = dataclasses.replace(config, hedging=dataclasses.replace(config.hedging, max_attempts=3))
        system.manager.reconfigure("database", retuned)
        after = _hedging(system)
        assert after.executions == 3
        assert after.hedges + after.denied == hedging.hedges + hedging.denied
        assert _limiter(system) == limiter
    finally:
        system.close()
