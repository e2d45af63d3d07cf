"""The rate limiter with the OpenTelemetry SDK: its rejection's span event and counter, its zero series."""

from __future__ import annotations

import gc

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


async def test_a_wait_is_a_span_event_and_a_histogram_sample(otel):
    """A caller that waits for its permit: the event carries the wait; the histogram records it once."""
    clock = FakeClock()
    limiter = RateLimiter("api", RateLimiterConfig(rate=4.0, burst=1, max_wait=1.0), clock=clock)

    async def fetch() -> str:
        return "ok"

    assert [await limiter.call(fetch) for _ in range(2)] == ["ok", "ok"]
    first, second = otel.spans("api")
    assert first.events == ()
    [event] = second.events
    assert event.name == sc.EV_PERMIT_WAITED
    assert dict(event.attributes) == {
        "resilience.pattern": "rate_limiter",
        "resilience.name": "api",
        "resilience.rate_limiter.wait": pytest.approx(0.25),
    }
    point = otel.point(sc.RL_WAIT_METRIC, resilience__policy="api", resilience__name="api")
    assert point.count == 1
    assert point.sum == pytest.approx(0.25)


def test_permits_are_counted_by_answer_and_summed_over_the_keys_of_a_keyed_limiter(otel):
    """resilience.rate_limiter.permits: immediate, waited, rejected and cancelled, per limiter name."""
    clock = FakeClock()
    # a name of its own: a limiter named alike that an earlier test left for the collector is summed too
    keyed = RateLimiter.per_key(
        "tenants-counted", RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0), clock=clock
    )
    for tenant in ("a", "b"):
        assert keyed.for_key(tenant).call_sync(str, 1) == "1"  # at once
    assert not keyed.for_key("b").try_acquire()  # refused: b's next permit is not due
    assert keyed.for_key("a").call_sync(str, 2) == "2"  # after a wait of a second
    counts = {
        result: otel.point(
            sc.RL_PERMITS, resilience__name="tenants-counted", resilience__rate_limiter__permit_result=result
        ).value
        for result in sc.RL_PERMIT_RESULTS
    }
    assert counts == {"immediate": 2, "waited": 1, "rejected": 1, "cancelled": 0}


def test_evicted_keys_keep_their_permits_in_the_exported_counter_and_a_kept_one_counts_in_its_key_s(otel):
    """A keyed limiter's counter never goes down: an evicted key's permits stay in the sum
    (a backend would read a drop as a counter reset), and a key's limiter a caller kept past its
    eviction takes its permits from the key's new one, counted there once."""
    clock = FakeClock()
    keyed = RateLimiter.per_key("evicting", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)

    def immediate() -> float:
        return otel.point(
            sc.RL_PERMITS, resilience__name="evicting", resilience__rate_limiter__permit_result="immediate"
        ).value

    seen = []
    for tenant in ("a", "b", "c", "d"):  # each new key evicts the one before: it is dropped
        assert keyed.for_key(tenant).try_acquire()
        gc.collect()
        seen.append(immediate())
    assert seen == [1, 2, 3, 4]
    kept = keyed.for_key("e")  # evicts d; e is kept by this caller
    assert kept.try_acquire()
    keyed.for_key("f")  # evicts e, kept alive
    assert immediate() == 5
    clock.advance(1.0)
    assert kept.try_acquire()  # on a new e (f evicted)
    assert immediate() == 6
    assert keyed.for_key("e") is not kept
    assert not keyed.for_key("e").try_acquire()  # the new e's one permit: taken by the kept one
    assert keyed.for_key("f").try_acquire()  # a new f (the old one was dropped)
    gc.collect()
    assert immediate() == 7
    assert keyed.get_stats()["evicted"] == 7


def test_a_keyed_limiter_exports_its_keys_its_key_limit_and_its_evictions_from_its_creation(otel):
    """resilience.rate_limiter.keys, key_limit and key_evictions read get_stats() from the keyed
    limiter's creation (0 keys, 0 evictions), so that churn through more keys than max_keys (each
    evicted key comes back with a full bucket) shows as a steady eviction rate at the limit."""
    keyed = RateLimiter.per_key(
        "churning", RateLimiterConfig(rate=1.0, burst=1), max_keys=2, clock=FakeClock()
    )

    def exported() -> tuple[int, int, int]:
        return tuple(
            otel.point(name, resilience__name="churning").value
            for name in (sc.RL_KEYS, sc.RL_KEY_LIMIT, sc.RL_KEY_EVICTIONS)
        )

    assert exported() == (0, 2, 0)
    for tenant in ("a", "b", "c", "d", "e"):  # three more keys than max_keys: three evictions
        assert keyed.for_key(tenant).try_acquire()
    assert exported() == (2, 2, 3)
    stats = keyed.get_stats()
    assert (stats["keys"], stats["max_keys"], stats["evicted"]) == exported()
    assert (keyed.keys, keyed.max_keys, keyed.evicted_keys) == exported()


def test_the_keys_of_same_named_keyed_limiters_are_summed_and_a_dropped_one_stops_being_reported(otel):
    """Keyed limiters that share a name share one set of key series (summed); one that is
    garbage-collected is no longer reported."""
    config = RateLimiterConfig(rate=1.0, burst=1)
    first = RateLimiter.per_key("shared-keys", config, max_keys=3, clock=FakeClock())
    second = RateLimiter.per_key("shared-keys", config, max_keys=4, clock=FakeClock())
    for tenant in ("a", "b"):
        first.for_key(tenant)
    second.for_key("c")
    assert otel.point(sc.RL_KEYS, resilience__name="shared-keys").value == 3
    assert otel.point(sc.RL_KEY_LIMIT, resilience__name="shared-keys").value == 7
    del first, second
    gc.collect()
    assert [p for p in otel.points(sc.RL_KEYS) if dict(p.attributes) == {sc.NAME: "shared-keys"}] == []
