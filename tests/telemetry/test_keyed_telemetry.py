"""Keys and reloads in telemetry: the key on spans, on metrics only when opted in (with one overflow series), counters that never go down, reloads counted."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Iterator

import pytest

from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

BREAKER = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0))


@pytest.fixture
def manager() -> Iterator[ResilienceManager]:
    """A manager on a fake clock, with an alert system of its own."""
    clock = FakeClock(1000.0)
    alerts = AlertSystem(name="keyed-telemetry-alerts", clock=clock)
    yield ResilienceManager(clock=clock, alert_system=alerts)
    alerts.close()


def boom() -> None:
    raise ConnectionError("down")


def open_key(policy, key: object) -> None:
    """Trip the key's breaker and have one call rejected."""
    with pytest.raises(ConnectionError):
        policy.for_key(key).execute_sync(boom)
    with pytest.raises(CircuitOpenError):
        policy.for_key(key).execute_sync(boom)


def keyed_points(otel, name: str) -> list[dict]:
    return [
        dict(p.attributes)
        for p in otel.points(name)
        if dict(p.attributes).get(sc.POLICY) in {"spans-tenants", "capped"}
    ]


def test_the_key_is_a_span_attribute_and_by_default_on_no_metric(otel, manager: ResilienceManager) -> None:
    """A keyed call's execution span carries resilience.key; its metrics carry the policy only."""
    policy = manager.policy("spans-tenants", BREAKER)
    policy.for_key("acme").execute_sync(lambda: None)
    policy.execute_sync(lambda: None)
    open_key(policy, 42)
    spans = otel.spans("spans-tenants")
    assert [s.attributes.get(sc.KEY) for s in spans] == ["acme", None, "42", "42"]
    for name in (sc.EXECUTIONS, sc.EXECUTION_DURATION, sc.REJECTIONS):
        points = keyed_points(otel, name)
        assert points, name
        assert all(sc.KEY not in attrs and sc.METRIC_OVERFLOW not in attrs for attrs in points), name
    assert (
        otel.point(
            sc.EXECUTIONS,
            resilience__policy="spans-tenants",
            resilience__pattern="pipeline",
            resilience__outcome="success",
        ).value
        == 2
    )


def test_an_opted_in_key_attribute_is_capped_with_one_overflow_series(
    otel, manager: ResilienceManager
) -> None:
    """The first N keys get their own series; every later key shares resilience.key=_OTHER, marked overflow."""
    policy = manager.policy("capped", BREAKER, key_attribute_limit=2)
    for key in ("a", "b", "c", "d"):
        open_key(policy, key)
    rejections = {
        (attrs.get(sc.KEY), attrs.get(sc.METRIC_OVERFLOW), attrs[sc.REJECTION_REASON]): point.value
        for point in otel.points(sc.REJECTIONS)
        if (attrs := dict(point.attributes)).get(sc.POLICY) == "capped"
    }
    assert rejections == {  # each key's series start at 0, for both reasons of a breaker
        ("a", None, "circuit_open"): 1,
        ("b", None, "circuit_open"): 1,
        ("_OTHER", True, "circuit_open"): 2,
        ("a", None, "half_open_full"): 0,
        ("b", None, "half_open_full"): 0,
        ("_OTHER", True, "half_open_full"): 0,
        (None, None, "circuit_open"): 0,  # the policy's unkeyed calls
        (None, None, "half_open_full"): 0,
    }
    executions = {
        (attrs[sc.KEY], attrs[sc.OUTCOME]): point.value
        for point in otel.points(sc.EXECUTIONS)
        if (attrs := dict(point.attributes)).get(sc.POLICY) == "capped" and sc.KEY in attrs
    }
    assert executions[("_OTHER", "rejected")] == 2
    assert executions[("a", "failure")] == 1
    durations = {
        dict(p.attributes).get(sc.KEY)
        for p in otel.points(sc.EXECUTION_DURATION)
        if dict(p.attributes)[sc.POLICY] == "capped"
    }
    assert durations == {"a", "b", "_OTHER"}
    assert {s.attributes[sc.KEY] for s in otel.spans("capped")} == {"a", "b", "c", "d"}  # spans: every key


def test_an_opted_in_keys_breaker_transitions_carry_its_key(otel, manager: ResilienceManager) -> None:
    """Each key's breaker is a breaker of its own: its transitions say which key tripped (where opted in).

    Without it, the trips of every key add up on one series per instance, and three keys tripping
    once each read as one breaker tripping three times (``ResilienceCircuitBreakerFlapping``).
    """
    policy = manager.policy("capped", BREAKER, key_attribute_limit=1)
    for key in ("a", "b", "c"):
        open_key(policy, key)
    trips = {
        (attrs.get(sc.KEY), attrs.get(sc.METRIC_OVERFLOW)): point.value
        for point in otel.points(sc.CB_TRANSITIONS)
        if (attrs := dict(point.attributes))[sc.NAME] == "capped"
        and attrs[sc.CB_PREVIOUS_STATE] == "closed"
        and attrs[sc.CB_STATE] == "open"
        and point.value
    }
    assert trips == {("a", None): 1, ("_OTHER", True): 2}


def test_a_keys_breaker_transitions_carry_no_key_unless_opted_in(otel, manager: ResilienceManager) -> None:
    """By default a key's transitions are the policy's, as its other metrics: the key stays off them."""
    policy = manager.policy("spans-tenants", BREAKER)
    open_key(policy, "a")
    points = [
        dict(p.attributes)
        for p in otel.points(sc.CB_TRANSITIONS)
        if dict(p.attributes)[sc.NAME] == "spans-tenants"
    ]
    assert points
    assert all(sc.KEY not in attrs and sc.METRIC_OVERFLOW not in attrs for attrs in points)


def test_exported_counts_never_go_down_when_keys_are_evicted(otel, manager: ResilienceManager) -> None:
    """Executions and breaker calls summed over a policy's keys keep what the evicted keys counted."""
    policy = manager.policy("evicted-tenants", BREAKER, max_keys=1)

    def executions() -> int:
        return otel.point(
            sc.EXECUTIONS,
            resilience__policy="evicted-tenants",
            resilience__pattern="pipeline",
            resilience__outcome="success",
        ).value

    def breaker_successes() -> int:
        return otel.point(
            sc.CB_CALLS,
            resilience__name="evicted-tenants",
            resilience__circuit_breaker__call_result="success",
        ).value

    seen: list[tuple[int, int]] = []
    for key in range(5):
        policy.for_key(key).execute_sync(lambda: None)
        seen.append((executions(), breaker_successes()))
    assert seen == [(n, n) for n in range(1, 6)]
    assert policy.get_stats()["evicted_keys"] == 4
    assert otel.point(sc.POLICY_KEYS, resilience__policy="evicted-tenants").value == 1


def test_reloads_are_counted_from_zero_and_a_refusal_is_an_event_and_a_log(
    otel, manager: ResilienceManager
) -> None:
    """resilience.reload starts at 0 for both outcomes; a refusal adds a span event and a WARN log record."""
    policy = manager.policy("reloaded", BREAKER)

    def reloads() -> dict:
        return {k: v for k, v in otel.values(sc.RELOAD).items() if (sc.POLICY, "reloaded") in k}

    assert reloads() == {
        frozenset({(sc.POLICY, "reloaded"), (sc.RELOAD_OUTCOME, outcome)}): 0
        for outcome in ("succeeded", "failed")
    }
    tracer = otel.tracer_provider.get_tracer("admin")
    with tracer.start_as_current_span("reload config"):
        manager.reconfigure(
            "reloaded", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5))
        )
        with pytest.raises(TypeError):
            manager.reconfigure("reloaded", "not a config")  # type: ignore[arg-type]
    assert reloads() == {
        frozenset({(sc.POLICY, "reloaded"), (sc.RELOAD_OUTCOME, "succeeded")}): 1,
        frozenset({(sc.POLICY, "reloaded"), (sc.RELOAD_OUTCOME, "failed")}): 0,
        frozenset({(sc.POLICY, "reloaded"), (sc.RELOAD_OUTCOME, "failed"), (sc.ERROR_TYPE, "TypeError")}): 1,
    }
    events = [(e.name, dict(e.attributes)) for e in otel.span("reload config").events]
    assert events == [
        (
            sc.EV_POLICY_RELOADED,
            {sc.PATTERN: "pipeline", sc.NAME: "reloaded", sc.RELOAD_OUTCOME: "succeeded"},
        ),
        (
            sc.EV_RELOAD_FAILED,
            {
                sc.PATTERN: "pipeline",
                sc.NAME: "reloaded",
                sc.RELOAD_OUTCOME: "failed",
                sc.ERROR_TYPE: "TypeError",
            },
        ),
    ]
    logs = [r for r in otel.logs() if r.event_name == sc.EV_RELOAD_FAILED]
    assert len(logs) == 1
    assert logs[0].severity_text == "WARN"
    assert "TypeError" in str(logs[0].body)
    assert dict(logs[0].attributes)[sc.NAME] == "reloaded"
    assert policy.generation == 2


def test_a_long_key_is_cut_alike_on_its_span_its_metrics_and_after_its_eviction(
    otel, manager: ResilienceManager
) -> None:
    """A key longer than 256 characters is written cut (236, ``...#`` and 16 hex digits of a digest of the
    whole key) everywhere it is a telemetry value."""
    long_key = "tenant-" + "x" * 1000
    digest = hashlib.blake2b(long_key.encode(), digest_size=8).hexdigest()
    cut = f"{long_key[:236]}...#{digest}"
    assert len(cut) == 256
    policy = manager.policy("capped", BREAKER, key_attribute_limit=2, max_keys=1)
    open_key(policy, long_key)
    assert [s.attributes.get(sc.KEY) for s in otel.spans("capped")] == [cut, cut]
    before = [
        point.value for point in otel.points(sc.EXECUTIONS) if dict(point.attributes).get(sc.KEY) == cut
    ]
    assert sum(before) == 2
    policy.for_key("other").execute_sync(lambda: None)  # the long key's state is evicted (max_keys=1)
    rows = [dict(point.attributes).get(sc.KEY) for point in otel.points(sc.EXECUTIONS)]
    assert long_key not in rows
    after = [point.value for point in otel.points(sc.EXECUTIONS) if dict(point.attributes).get(sc.KEY) == cut]
    assert sum(after) == 2  # its counts folded under the same series
    assert all(len(key) <= 256 for key in rows if isinstance(key, str))


def test_one_saturated_key_among_idle_ones_shows_in_the_bulkhead_utilization(
    otel, manager: ResilienceManager
) -> None:
    """Active and limit are summed over a keyed policy's keys; the utilization is its most saturated key's."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=0))
    policy = manager.policy("saturated-hosts", config)
    for key in range(1, 10):  # nine idle keys
        policy.for_key(f"idle-{key}").execute_sync(lambda: None)
    seen: dict[str, float] = {}

    def inner() -> None:
        for name in (sc.BULKHEAD_ACTIVE, sc.BULKHEAD_CONCURRENCY_LIMIT, sc.BULKHEAD_UTILIZATION):
            seen[name] = otel.point(name, resilience__name="saturated-hosts").value

    hot = policy.for_key("hot")
    hot.execute_sync(lambda: hot.execute_sync(inner))  # both of the hot key's slots taken
    assert seen[sc.BULKHEAD_ACTIVE] == 2
    assert seen[sc.BULKHEAD_ACTIVE] / seen[sc.BULKHEAD_CONCURRENCY_LIMIT] <= 0.1  # summed: hidden
    assert seen[sc.BULKHEAD_UTILIZATION] == 1.0
    assert otel.point(sc.BULKHEAD_UTILIZATION, resilience__name="saturated-hosts").value == 0.0


def test_one_full_queue_among_idle_ones_shows_in_the_bulkhead_queue_utilization(
    otel, manager: ResilienceManager
) -> None:
    """Queued and queue limit are summed over a keyed policy's keys; the queue utilization is its fullest key's."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=2))
    policy = manager.policy("queued-hosts", config)
    for key in range(1, 10):  # nine idle keys
        policy.for_key(f"idle-{key}").execute_sync(lambda: None)
    names = (sc.BULKHEAD_QUEUED, sc.BULKHEAD_QUEUE_LIMIT, sc.BULKHEAD_QUEUE_UTILIZATION)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        release = asyncio.Event()
        hot = policy.for_key("hot")
        calls = [asyncio.create_task(hot.execute(release.wait)) for _ in range(3)]  # 1 runs, 2 queue
        for _ in range(100):
            await asyncio.sleep(0)
            if otel.point(sc.BULKHEAD_QUEUED, resilience__name="queued-hosts").value == 2:
                break
        seen.update((name, otel.point(name, resilience__name="queued-hosts").value) for name in names)
        release.set()
        await asyncio.gather(*calls)

    asyncio.run(scenario())
    assert seen[sc.BULKHEAD_QUEUED] == 2
    assert seen[sc.BULKHEAD_QUEUED] / seen[sc.BULKHEAD_QUEUE_LIMIT] <= 0.1  # summed: hidden
    assert seen[sc.BULKHEAD_QUEUE_UTILIZATION] == 1.0
    assert otel.point(sc.BULKHEAD_QUEUE_UTILIZATION, resilience__name="queued-hosts").value == 0.0


def test_a_bulkhead_without_a_queue_reports_no_queue_utilization(otel, manager: ResilienceManager) -> None:
    """``max_waiting=0``: no queue to share, so no series (never a division by zero)."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=0))
    manager.policy("no-queue", config).for_key("a").execute_sync(lambda: None)
    assert otel.point(sc.BULKHEAD_UTILIZATION, resilience__name="no-queue").value == 0.0
    assert [
        p for p in otel.points(sc.BULKHEAD_QUEUE_UTILIZATION) if dict(p.attributes) == {sc.NAME: "no-queue"}
    ] == []


def test_the_key_limit_and_the_key_evictions_are_exported(otel, manager: ResilienceManager) -> None:
    """A keyed policy's max_keys and the keys it evicted (as get_stats() counts them) are exported
    from its creation, so that a count of keys at its limit reads as churn or as a steady set."""
    policy = manager.policy("churned-tenants", BREAKER, max_keys=2)

    def limit() -> int:
        return otel.point(sc.POLICY_KEY_LIMIT, resilience__policy="churned-tenants").value

    def evictions() -> int:
        return otel.point(sc.POLICY_KEY_EVICTIONS, resilience__policy="churned-tenants").value

    assert (limit(), evictions()) == (2, 0)
    for key in range(5):
        policy.for_key(key).execute_sync(lambda: None)
    assert (limit(), evictions()) == (2, 3)
    assert policy.get_stats()["evicted_keys"] == 3
    assert otel.point(sc.POLICY_KEYS, resilience__policy="churned-tenants").value == 2


def test_same_named_policies_in_two_managers_export_their_keys_summed(otel) -> None:
    """resilience.policy.keys of a name two managers use is the sum of their keys, not one of them."""
    clock = FakeClock(1000.0)
    alerts = AlertSystem(name="keys-summed-alerts", clock=clock)
    first = ResilienceManager(clock=clock, alert_system=alerts)
    second = ResilienceManager(clock=clock, alert_system=alerts)
    try:
        one = first.policy("tenants-everywhere", BREAKER)
        other = second.policy("tenants-everywhere", ResilienceConfig(bulkhead_config=BulkheadConfig()))
        for key in ("a", "b", "c"):
            one.for_key(key).execute_sync(lambda: None)
        for key in ("d", "e"):
            other.for_key(key).execute_sync(lambda: None)
        assert (one.keys, other.keys) == (3, 2)
        assert otel.point(sc.POLICY_KEYS, resilience__policy="tenants-everywhere").value == 5
    finally:
        alerts.close()


def test_the_keys_gauge_of_a_quiet_policy_leaves_out_expired_keys(otel) -> None:
    """resilience.policy.keys reads 0 from a policy's creation, and leaves out the keys unused for
    idle_ttl even when no call or stats read came to evict them (the collection evicts nothing)."""
    clock = FakeClock(1000.0)
    alerts = AlertSystem(name="quiet-keys-alerts", clock=clock)
    try:
        policy = ResilienceManager(clock=clock, alert_system=alerts).policy(
            "quiet-tenants", BREAKER, idle_ttl=60.0
        )
        assert otel.point(sc.POLICY_KEYS, resilience__policy="quiet-tenants").value == 0
        for key in ("a", "b"):
            policy.for_key(key).execute_sync(lambda: None)
        assert otel.point(sc.POLICY_KEYS, resilience__policy="quiet-tenants").value == 2
        clock.advance(61.0)
        assert otel.point(sc.POLICY_KEYS, resilience__policy="quiet-tenants").value == 0
        assert policy._keys.evicted == 0
    finally:
        alerts.close()


async def test_the_keys_gauge_counts_no_idle_key_past_max_keys(otel, manager: ResilienceManager) -> None:
    """Keys made while every kept key was busy stay past max_keys until later calls look at them;
    once idle, resilience.policy.keys (and ``keys``) no longer counts them: at most max_keys while
    they are idle, whether or not a call came to evict them (the collection evicts nothing)."""
    policy = manager.policy("burst-tenants", BREAKER, max_keys=2)
    release = asyncio.Event()
    running: list[str] = []

    async def held(key: str) -> None:
        async def call() -> None:
            running.append(key)
            await release.wait()

        await policy.for_key(key).execute(call)

    calls = [asyncio.ensure_future(held(key)) for key in ("a", "b", "c")]
    while len(running) < 3:
        await asyncio.sleep(0)
    assert otel.point(sc.POLICY_KEYS, resilience__policy="burst-tenants").value == 3  # all busy
    release.set()
    await asyncio.gather(*calls)
    assert otel.point(sc.POLICY_KEYS, resilience__policy="burst-tenants").value == 2
    assert policy.keys == 2
    assert policy._keys.evicted == 0  # kept until a call looks at them


def test_keys_with_one_text_are_one_state_and_one_series(otel, manager: ResilienceManager) -> None:
    """``1`` and ``"1"`` are one key: the state the calls share is the one series they are counted in."""
    policy = manager.policy("one-text", BREAKER, key_attribute_limit=2)
    with pytest.raises(ConnectionError):
        policy.for_key(1).execute_sync(boom)
    with pytest.raises(CircuitOpenError):  # the breaker "1" opened is this key's
        policy.for_key("1").execute_sync(boom)
    policy.for_key("b").execute_sync(lambda: None)  # a place of its own: "1" took one only
    executions = {
        (attrs[sc.KEY], attrs.get(sc.METRIC_OVERFLOW), attrs[sc.OUTCOME]): point.value
        for point in otel.points(sc.EXECUTIONS)
        if (attrs := dict(point.attributes)).get(sc.POLICY) == "one-text" and point.value
    }
    assert executions == {("1", None, "failure"): 1, ("1", None, "rejected"): 1, ("b", None, "success"): 1}
    assert policy.keys == 2


def test_two_long_keys_cut_alike_keep_two_series(otel, manager: ResilienceManager) -> None:
    """Two keys that differ past the 256th character are two keys: their cut attributes differ too."""
    first, second = "tenant-" + "x" * 1000 + "-1", "tenant-" + "x" * 1000 + "-2"
    policy = manager.policy("long-keys", BREAKER, key_attribute_limit=4)
    open_key(policy, first)
    policy.for_key(second).execute_sync(lambda: None)
    spans = {s.attributes.get(sc.KEY) for s in otel.spans("long-keys")}
    assert len(spans) == 2
    assert all(len(key) <= 256 and key.startswith("tenant-xxx") for key in spans)
    series = {
        (attrs[sc.KEY], attrs[sc.OUTCOME]): point.value
        for point in otel.points(sc.EXECUTIONS)
        if (attrs := dict(point.attributes)).get(sc.POLICY) == "long-keys" and point.value
    }
    assert sorted(series.values()) == [1, 1, 1]  # first: a failure, a rejection; second: a success
    assert {key for key, _ in series} == spans


def test_a_key_named_like_the_overflow_series_takes_no_place_of_its_own(
    otel, manager: ResilienceManager
) -> None:
    """A key whose text is ``_OTHER`` is counted in the overflow series, and leaves the N places to others."""
    policy = manager.policy("overflow-named", BREAKER, key_attribute_limit=1)
    policy.for_key("_OTHER").execute_sync(lambda: None)
    policy.for_key("a").execute_sync(lambda: None)
    executions = {
        (attrs[sc.KEY], attrs.get(sc.METRIC_OVERFLOW), attrs[sc.OUTCOME]): point.value
        for point in otel.points(sc.EXECUTIONS)
        if (attrs := dict(point.attributes)).get(sc.POLICY) == "overflow-named" and point.value
    }
    assert executions == {("_OTHER", True, "success"): 1, ("a", None, "success"): 1}


def test_a_key_with_its_own_series_keeps_it_after_its_eviction(otel, manager: ResilienceManager) -> None:
    """The first N keys keep their own ``resilience.key`` value for the handle's life, evicted or not.

    An eviction frees no place: a later key still goes to the overflow series, and the evicted
    key, back, counts in its own series again.
    """
    policy = manager.policy("kept-places", ResilienceConfig(), max_keys=1, key_attribute_limit=1)
    for key in ("first", "second", "first", "third"):
        policy.for_key(key).execute_sync(lambda: None)
    assert policy.get_stats()["evicted_keys"] >= 2
    executions: dict[str, int] = {}
    for point in otel.points(sc.EXECUTIONS):
        attrs = dict(point.attributes)
        if attrs.get(sc.POLICY) == "kept-places" and sc.KEY in attrs:
            executions[attrs[sc.KEY]] = executions.get(attrs[sc.KEY], 0) + point.value
    assert executions == {"first": 2, "_OTHER": 2}


def key_trips(otel, name: str) -> dict[tuple[str | None, str, str], int]:
    """The transitions of breakers named ``name`` that happened: by key, new state and reason."""
    return {
        (attrs.get(sc.KEY), attrs[sc.CB_STATE], attrs[sc.CB_TRANSITION_REASON]): point.value
        for point in otel.points(sc.CB_TRANSITIONS)
        if (attrs := dict(point.attributes))[sc.NAME] == name and point.value
    }


def test_an_opted_in_keys_breaker_says_its_key_on_transitions_made_outside_its_calls(
    otel, manager: ResilienceManager
) -> None:
    """An operator's action or a block run with a key's breaker itself is that key's breaker's transition too."""
    policy = manager.policy("operated", BREAKER, key_attribute_limit=1)
    policy.for_key("a").circuit_breaker.force_open()
    policy.for_key("a").circuit_breaker.reset()
    with pytest.raises(ConnectionError), policy.for_key("b").circuit_breaker.guard():
        boom()
    assert key_trips(otel, "operated") == {
        ("a", "open", "forced"): 1,
        ("a", "closed", "reset"): 1,
        ("_OTHER", "open", "failure_threshold"): 1,
    }


def test_an_opted_in_keys_breaker_of_its_own_name_says_its_key_on_transitions(
    otel, manager: ResilienceManager
) -> None:
    """A policy's breakers named otherwise (``circuit_breaker_name``) still say which key tripped."""
    config = dataclasses.replace(BREAKER, circuit_breaker_name="payments-breaker")
    policy = manager.policy("renamed", config, key_attribute_limit=1)
    for key in ("a", "b"):
        open_key(policy, key)
    assert key_trips(otel, "payments-breaker") == {
        ("a", "open", "failure_threshold"): 1,
        ("_OTHER", "open", "failure_threshold"): 1,
    }


def test_the_blocks_run_with_an_opted_in_keys_own_instances_carry_its_key(
    otel, manager: ResilienceManager
) -> None:
    """A ``slot()`` block of a key's bulkhead is the key's: its execution and its rejection say which key."""
    config = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    bulkhead = manager.policy("slots", config, key_attribute_limit=1).for_key("a").bulkhead
    assert bulkhead is not None
    with bulkhead.slot(), pytest.raises(BulkheadFullError), bulkhead.slot():
        pass
    for name in (sc.EXECUTIONS, sc.REJECTIONS):
        keys = {
            dict(point.attributes).get(sc.KEY)
            for point in otel.points(name)
            if dict(point.attributes)[sc.PATTERN] == "bulkhead" and point.value
        }
        assert keys == {"a"}, name
