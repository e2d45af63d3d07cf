"""The rate limiter with the OpenTelemetry SDK: its rejection's span event and counter, its zero series."""

from __future__ import annotations

import pytest

from otel_resilience import ExtraStrategy, RateLimitedError, RateLimiter, RateLimiterConfig, ResilienceConfig
from otel_resilience.manager import ResilienceManager
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock


def _attributes(policy: str, reason: str) -> dict[str, str]:
    """The rejection series of limiter ``api`` in ``policy``, as ``Otel.point`` keyword arguments."""
    return {
        "resilience__policy": policy,
        "resilience__pattern": "rate_limiter",
        "resilience__name": "api",
        "resilience__rejection__reason": reason,
    }


async def test_a_rejection_is_a_span_event_and_a_counted_rejection(otel):
    """Rejected: the execution span's outcome is rejected with the rate_limited event; the counter moves."""
    limiter = RateLimiter("api", RateLimiterConfig(rate=1.0, burst=1), clock=FakeClock())

    async def fetch() -> str:
        return "ok"

    assert await limiter.call(fetch) == "ok"
    with pytest.raises(RateLimitedError):
        await limiter.call(fetch)
    outcomes = {s.attributes["resilience.outcome"]: s for s in otel.spans("api")}
    assert set(outcomes) == {"success", "rejected"}
    [event] = outcomes["rejected"].events
    assert event.name == sc.EV_CALL_REJECTED
    assert dict(event.attributes) == {
        "resilience.pattern": "rate_limiter",
        "resilience.name": "api",
        "resilience.rejection.reason": "rate_limited",
    }
    assert outcomes["success"].events == ()
    assert otel.point(sc.REJECTIONS, **_attributes("api", "rate_limited")).value == 1


async def test_a_policy_with_a_limiter_exports_its_rejection_series_at_zero(otel):
    """The rate_limited series of a policy's limiter exists, at 0, before its first rejection."""
    limiter = RateLimiter("api", RateLimiterConfig(rate=5.0), clock=FakeClock())
    manager = ResilienceManager()
    config = ResilienceConfig(name="search", extra_strategies=(ExtraStrategy(limiter.as_strategy, rank=0),))

    async def search() -> str:
        return "hits"

    assert await manager.execute_with_resilience(search, config) == "hits"
    assert otel.point(sc.REJECTIONS, **_attributes("search", "rate_limited")).value == 0
