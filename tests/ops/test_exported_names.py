"""Every series and label the dashboards, rules and runbooks query exists in a real scrape.

The library runs real calls (a manager policy with every pattern, a recovery system that detects
a pattern, a full bulkhead, a timeout, in-process alerts, a hedged call) with a MeterProvider whose reader is the
OpenTelemetry Prometheus exporter; the scrape text (prometheus_client's exposition) is then
compared with what the shipped files query.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis_support import free_port

from otel_resilience import (
    AlertSystem,
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CountWindow,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    OperationTimeoutError,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    RedisStore,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
    retry_sync,
)
from otel_resilience.manager.watch import ConfigWatch
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks, naming
from otel_resilience.patterns.retry import Jitter
from otel_resilience.telemetry import current_listener, install_default, instrument, semconv, uninstrument
from otel_resilience.testing import FakeClock

_unique = itertools.count()


async def exercise(clock: FakeClock, alerts: AlertSystem) -> list[object]:
    """Run calls that move every instrument; return the objects that must stay alive until the scrape."""
    suffix = next(_unique)
    recovery = ErrorRecoverySystem(f"ops-recovery-{suffix}", clock=clock, pattern_threshold=2)
    recovery.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    manager = ResilienceManager(clock=clock, recovery_system=recovery, alert_system=alerts)
    full = ResilienceConfig(
        name=f"ops-checkout-{suffix}",
        # 6: two calls' ConnectionErrors reach recovery (an error pattern) before the breaker opens;
        # its rejections afterwards are neither patterns nor recovery attempts.
        circuit_breaker=CircuitBreakerConfig(failure_threshold=6, timeout=60.0),
        # A budget of one retry (no floor, 1 per first attempt until the first is spent): the first
        # broken call retries, the others are denied (the level gauge, exhausted{stop_reason=budget}).
        retry_policy=RetryPolicy(
            max_attempts=2,
            initial_delay=0.5,
            jitter=Jitter.NONE,
            budget=RetryBudget(ratio=0.2, min_retries_per_second=0.0, window=600.0, clock=clock),
        ),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
        timeout=30.0,
        bulkhead_config=BulkheadConfig(max_concurrent=2),
        enable_recovery=True,
    )
    assert manager.execute_with_resilience_sync(lambda: "ok", full) == "ok"

    def broken() -> str:
        raise ConnectionError("down")

    for _ in range(4):
        assert manager.execute_with_resilience_sync(broken, full) == "degraded"

    # A chaos drill: every call gets an injected result (its injections counter, kind outcome).
    drill = ResilienceConfig(name=f"ops-drill-{suffix}", chaos=ChaosConfig(outcome_rate=1.0, outcome="fake"))
    assert manager.execute_with_resilience_sync(lambda: "real", drill) == "fake"

    slow = ResilienceConfig(name=f"ops-slow-{suffix}", timeout=1.0)
    with pytest.raises(OperationTimeoutError):
        manager.execute_with_resilience_sync(lambda: clock.advance(5.0), slow)

    pool = Bulkhead(f"ops-pool-{suffix}", BulkheadConfig(max_concurrent=1, max_waiting=0), clock=clock)
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(pool.execute(hold))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await pool.execute(hold)
    release.set()
    await holder

    # A breaker on trial: a sliding window (the rate gauges) in metrics_only mode (a would-be trip).
    window = CircuitBreakerConfig(sliding_window=CountWindow(4), minimum_calls=2, slow_call_duration=1.0)
    shadow = CircuitBreaker(f"ops-shadow-{suffix}", window, clock=clock)
    shadow.metrics_only()
    for _ in range(2):
        with pytest.raises(ConnectionError):
            shadow.call_sync(broken)
    # A limiter of one permit a second that lets a caller wait: one permit at once, one after a
    # wait (the wait histogram), one refused (try_acquire does not wait).
    limiter = RateLimiter(
        f"ops-limiter-{suffix}", RateLimiterConfig(rate=1.0, burst=1, max_wait=2.0), clock=clock
    )
    assert [limiter.call_sync(str, n) for n in range(2)] == ["0", "1"]
    assert not limiter.try_acquire()
    # A keyed limiter of one key that a second key evicts (its keys, key limit and evictions).
    keyed = RateLimiter.per_key(f"ops-keyed-{suffix}", RateLimiterConfig(rate=1.0), max_keys=1, clock=clock)
    for tenant in ("tenant-a", "tenant-b"):
        assert keyed.for_key(tenant).try_acquire()

    calls = 0

    async def slow_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:  # the original hangs: a hedge answers, and the original is cancelled
            await asyncio.Event().wait()
        return "fast"

    hedged = ResilienceConfig(name=f"ops-hedged-{suffix}", hedging=HedgingConfig(delay=0.05))
    assert await manager.execute_with_resilience(slow_once, hedged) == "fast"

    # A named policy with a key on its metrics (its keys gauge), the key rejected once by its
    # quota (resilience.key on the rejections), reloaded once, and refused once (resilience.reload).
    quota = RateLimiterConfig(rate=0.001, burst=1)
    tenants = manager.policy(
        f"ops-tenants-{suffix}",
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(), rate_limiter=quota),
        key_attribute_limit=5,
    )
    assert tenants.for_key("tenant-a").execute_sync(lambda: "ok") == "ok"
    with pytest.raises(RateLimitedError):
        tenants.for_key("tenant-a").execute_sync(lambda: "ok")
    manager.reconfigure(
        tenants.name,
        ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=3), rate_limiter=quota),
    )
    with pytest.raises(TypeError):
        manager.reconfigure(tenants.name, "not a config")  # type: ignore[arg-type]
    # A watched configuration file left refused (its stale gauge at 1).
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / "resilience.yaml"
    path.write_text(f"policies:\n  ops-watched-{suffix}:\n    timeout: 1s\n")
    watch = manager.watch(path, interval=3600)
    path.write_text("policies: [")  # no YAML: refused once two looks find it the same
    watch.check()
    watch.check()
    assert watch.stale
    # A breaker sharing its state through a store that cannot be reached: the store's health
    # series (degraded, one outage, its failed operations) and the breaker's shared gauge at 0.
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", namespace=f"ops-store-{suffix}", timeout=0.1
    )
    shared = CircuitBreaker(f"ops-shared-{suffix}", CircuitBreakerConfig(store=store), clock=clock)
    while not store.degraded:
        await asyncio.sleep(0.01)
    # A retry used alone, of another error: a second retries series, so that past a cardinality
    # limit of 1 the retries counter has a series to fold into the SDK's overflow series too.
    failed_once = iter((TimeoutError,))

    def flaky() -> str:
        error = next(failed_once, None)
        if error is not None:
            raise error
        return "ok"

    once = RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=Jitter.NONE)
    assert retry_sync(flaky, policy=once) == "ok"
    return [manager, recovery, pool, shadow, limiter, keyed, tenants, store, shared, watch, folder]


@pytest.fixture
async def scrape() -> list[str]:
    """Run the calls twice, the duration histograms recorded through the SDK and kept in process
    (``in_process_histograms``), each under the Prometheus exporter's reader: the two scrapes."""
    texts = []
    for in_process in (False, True):
        async with _scraped(in_process=in_process) as text:
            texts.append(text)
    return texts


@contextlib.asynccontextmanager
async def _scraped(
    *, in_process: bool, cardinality_limits: dict[type, int] | None = None
) -> AsyncIterator[str]:
    had_default = current_listener() is not None
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry, cardinality_limits=cardinality_limits)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider, in_process_histograms=in_process)
    clock = FakeClock(1000.0)
    alerts = AlertSystem(clock=clock)  # not the process-wide one: other tests count its alerts
    try:
        alive = await exercise(clock, alerts)
        yield generate_latest(registry).decode()
        for item in alive:
            if isinstance(item, RedisStore):
                item.close()  # its thread would retry the missing server until the session ends
            elif isinstance(item, ConfigWatch):
                item.stop()
            elif isinstance(item, tempfile.TemporaryDirectory):
                item.cleanup()
        del alive
    finally:
        alerts.close()
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()


def scraped_labels(texts: list[str]) -> dict[str, set[str]]:
    """Series name -> every label name seen on its samples, in any of the scrapes."""
    found: dict[str, set[str]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, set()).update(sample.labels)
    return found


def shipped_expressions(repo, rules, dashboards) -> list[str]:
    # The telemetry overflow rule reads the SDK's overflow series, which exist only past its
    # cardinality limit: test_past_the_cardinality_limit_... scrapes them.
    overflow = {ar.R_TELEMETRY_OVERFLOW}
    expressions = [
        str(rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("record") not in overflow
    ]
    for dashboard in dashboards.values():
        expressions += checks.dashboard_expressions(dashboard)
    for path in sorted((repo / "docs" / "runbooks").glob("*.md")):
        expressions += checks.markdown_expressions(path.read_text())
    return expressions


def queried(expressions, recorded) -> dict[str, set[str]]:
    """Derived series the expressions select -> the label names they match on."""
    known = checks.known_series(recorded)
    derived = naming.derived_series()
    used: dict[str, set[str]] = {}
    for expr in expressions:
        analysis = checks.analyse(expr, known)
        assert analysis.problems == [], (expr, analysis.problems)
        for name, labels in analysis.matchers.items():
            if name in derived:
                used.setdefault(name, set()).update(labels)
    return used


async def test_every_queried_series_is_in_a_real_scrape(scrape, repo, rules, dashboards, recorded):
    """Each derived series any shipped query selects is exported, with every label the queries match on."""
    scraped = scraped_labels(scrape)
    used = queried(shipped_expressions(repo, rules, dashboards), recorded)
    assert len(used) >= 15
    for name, labels in sorted(used.items()):
        assert name in scraped, (name, sorted(n for n in scraped if n.startswith("resilience")))
        missing = labels - naming.SCRAPE_LABELS - scraped[name]
        assert not missing, (name, missing, scraped[name])


async def test_the_scrape_carries_every_declared_attribute_label(scrape):
    """The labels the checks accept for a series (its instrument's attributes) are the ones exported."""
    scraped = scraped_labels(scrape)
    for spec in semconv.INSTRUMENTS:
        for name in semconv.prometheus_series(spec):
            assert name in scraped, name
            declared = {naming.label(key) for key in spec.attributes}
            assert declared <= scraped[name], (name, declared - scraped[name])


async def test_every_sample_carries_its_instruments_always_present_attributes(scrape):
    """Each sample, not only its family, has a value for every attribute its instrument always sets.

    The exporter writes a label on every sample of a family as soon as one sample has it (``""``
    where the others lack it), and Prometheus drops an empty label: a rule grouping or joining on
    an attribute some samples leave out would silently put them apart.
    """
    always = {
        name: [naming.label(key) for key in spec.attributes]
        for spec in semconv.INSTRUMENTS
        for name in semconv.prometheus_series(spec)
    }
    missing = set()
    for text in scrape:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for label in always.get(sample.name, ()):
                    if not sample.labels.get(label):
                        missing.add((sample.name, label))
    assert missing == set()


async def test_the_scrape_and_the_derivation_agree_exactly(scrape):
    """The exporter publishes exactly the derived series under resilience_* (the two modes together)."""
    exported = {name for name in scraped_labels(scrape) if name.startswith("resilience_")}
    assert exported == naming.derived_series()


def test_a_query_on_a_series_nothing_exports_is_caught(recorded):
    """The check bites: a renamed series fails before any scrape is needed."""
    problems = checks.check_expression(
        "sum(rate(resilience_retry_attempts_total[5m]))", checks.known_series(recorded)
    )
    assert problems


async def test_past_the_cardinality_limit_the_overflow_rule_reads_what_the_sdk_exports(rules, recorded):
    """A reader whose cardinality limit every instrument passes exports each series the telemetry
    overflow rule reads as the rule selects it: the SDK's overflow series, ``otel_metric_overflow="true"``
    and no ``resilience_key`` (the keys past a policy's own limit keep theirs, ``_OTHER``)."""
    (expr,) = [
        str(rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("record") == ar.R_TELEMETRY_OVERFLOW
    ]
    read = checks.analyse(expr, checks.known_series(recorded)).series
    assert len(read) >= 5
    limits: dict[type, int] = dict.fromkeys((Counter, ObservableCounter, Histogram), 1)
    overflowing = set()
    for in_process in (False, True):
        async with _scraped(in_process=in_process, cardinality_limits=limits) as text:
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    labels = sample.labels
                    if labels.get(naming.label(semconv.METRIC_OVERFLOW)) == "true" and not labels.get(
                        naming.label(semconv.KEY)
                    ):
                        overflowing.add(sample.name)
    assert read <= overflowing, sorted(read - overflowing)
