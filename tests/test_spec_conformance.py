"""The public API that SPEC.md and the issues promise: its names, keyword arguments and error types.

Each pattern's own tests pin its behaviour and defaults; this file pins the contract itself, in
one place, so that a rename, a refused keyword or an error of another type fails here by name.
"""

from __future__ import annotations

import inspect
import io
import json
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import otel_resilience
from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    ErrorRecoverySystem,
    ExecutionRejectedError,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    Jitter,
    OperationTimeoutError,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryEscalatedError,
    RecoveryStrategy,
    RedisStore,
    ResilienceConfig,
    ResilienceError,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    TimeWindow,
    config,
)
from otel_resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parent.parent

# SPEC §1 and §5: every name "exported from otel_resilience unless a module is named".
SPEC_NAMES = (
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitState",
    "CircuitOpenError",
    "RetryPolicy",
    "RetryStrategy",
    "retry_async",
    "FallbackConfig",
    "FallbackStrategy",
    "FallbackHandler",
    "TimeoutHandler",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadFullError",
    "ErrorRecoverySystem",
    "RecoveryAction",
    "RecoveryStrategy",
    "ResilienceConfig",
    "get_resilience_manager",
    "CountWindow",
    "TimeWindow",
    "RateLimiter",
    "RateLimiterConfig",
    "RateLimitedError",
    "RetryBudget",
    "Jitter",
    "Hedging",
    "HedgingConfig",
    "ChaosConfig",
    "RedisStore",
)

# (callable, the keyword arguments SPEC.md or an issue names for it).
SPEC_KEYWORDS = [
    (CircuitBreakerConfig, ("failure_threshold", "success_threshold", "timeout")),
    (
        CircuitBreakerConfig,
        (
            "sliding_window",
            "failure_rate_threshold",
            "minimum_calls",
            "slow_call_duration",
            "slow_call_rate_threshold",
            "record_result",
            "break_duration",
            "max_half_open_wait",
            "store",
        ),
    ),
    (
        RetryPolicy,
        ("max_attempts", "strategy", "initial_delay", "multiplier", "max_delay", "budget", "delay_from"),
    ),
    (otel_resilience.retry_async, ("policy", "on_retry")),
    (FallbackConfig, ("strategy", "default_value", "cache_key", "cache_service")),
    (TimeoutHandler, ("timeout",)),
    (BulkheadConfig, ("max_concurrent", "max_waiting", "timeout")),
    (RecoveryAction, ("strategy", "max_attempts", "delay")),
    (
        ResilienceConfig,
        (
            "circuit_breaker",
            "retry_policy",
            "fallback_config",
            "timeout",
            "bulkhead_config",
            "enable_recovery",
            "rate_limiter",
            "hedging",
            "chaos",
        ),
    ),
    (RateLimiterConfig, ("rate", "burst", "algorithm", "max_wait", "max_waiting", "store")),
    (RetryBudget, ("ratio", "min_retries_per_second", "window")),
    (HedgingConfig, ("delay", "max_attempts", "mode", "actions")),
    (
        ChaosConfig,
        ("fault_rate", "fault", "latency_rate", "latency", "outcome_rate", "outcome", "enabled", "seed"),
    ),
    (CountWindow, ("size",)),
    (TimeWindow, ("seconds", "buckets")),
    (RedisStore.from_url, ("url", "namespace")),
    (ResilienceManager.policy, ("name", "config")),
    (ResilienceManager.reconfigure, ("name", "config")),
    (config.load, ("path",)),
]


def test_every_spec_name_is_exported_from_the_package() -> None:
    """Each name SPEC.md promises is importable from ``otel_resilience`` and listed in ``__all__``."""
    missing = [name for name in SPEC_NAMES if name not in otel_resilience.__all__]
    assert missing == []
    for name in SPEC_NAMES:
        assert getattr(otel_resilience, name) is not None


@pytest.mark.parametrize(("target", "keywords"), SPEC_KEYWORDS, ids=lambda v: getattr(v, "__qualname__", ""))
def test_the_spec_keyword_arguments_are_taken(
    target: Callable[..., object], keywords: tuple[str, ...]
) -> None:
    """Every keyword argument SPEC.md names is a parameter of its callable, under that name."""
    parameters = inspect.signature(target).parameters
    assert [k for k in keywords if k not in parameters] == []


def test_the_spec_enum_members_exist_with_lower_case_values() -> None:
    """The strategies and states SPEC.md lists are members, their values the lower-case names."""
    members = {
        CircuitState: ("CLOSED", "OPEN", "HALF_OPEN", "DISABLED", "METRICS_ONLY"),
        RetryStrategy: ("FIXED", "EXPONENTIAL", "LINEAR", "RANDOM"),
        FallbackStrategy: ("DEFAULT_VALUE", "ALTERNATIVE_FUNCTION", "CACHED_VALUE", "MULTIPLE_ATTEMPTS"),
        RecoveryStrategy: ("RETRY", "RESTART", "FALLBACK", "ISOLATE", "ESCALATE"),
        Jitter: ("DECORRELATED",),
    }
    for enum, names in members.items():
        for name in names:
            assert enum[name].value == name.lower()


def test_the_spec_examples_construct_with_their_own_arguments() -> None:
    """The SPEC's configs, written as it writes them, hold the values given."""
    breaker = CircuitBreakerConfig(failure_threshold=5, success_threshold=2, timeout=60.0)
    assert (breaker.failure_threshold, breaker.success_threshold, breaker.timeout) == (5, 2, 60.0)
    policy = RetryPolicy(
        max_attempts=3, strategy=RetryStrategy.EXPONENTIAL, initial_delay=1.0, multiplier=2.0, max_delay=60.0
    )
    assert (policy.max_attempts, policy.strategy, policy.initial_delay) == (3, RetryStrategy.EXPONENTIAL, 1.0)
    bulkhead = BulkheadConfig(max_concurrent=10, max_waiting=100, timeout=60.0)
    assert (bulkhead.max_concurrent, bulkhead.max_waiting, bulkhead.timeout) == (10, 100, 60.0)
    action = RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=3, delay=5.0)
    assert (action.max_attempts, action.delay) == (3, 5.0)
    assert TimeoutHandler(timeout=30.0).timeout == 30.0
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=60.0),
        retry_policy=RetryPolicy(max_attempts=3, strategy=RetryStrategy.EXPONENTIAL),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"status": "error"}
        ),
        timeout=30.0,
        bulkhead_config=BulkheadConfig(max_concurrent=10),
        enable_recovery=True,
    )
    assert (config.timeout, config.enable_recovery) == (30.0, True)
    limiter = RateLimiterConfig(rate=10.0, burst=5, algorithm="sliding_window", max_wait=0.5, max_waiting=3)
    assert (limiter.rate, limiter.burst, limiter.algorithm, limiter.max_waiting) == (
        10.0,
        5,
        "sliding_window",
        3,
    )


def test_the_defaults_the_issues_name_are_kept() -> None:
    """The defaults the issues wrote into the promised signatures hold."""
    budget = RetryBudget()
    assert (budget.ratio, budget.min_retries_per_second, budget.window) == (0.1, 10.0, 10.0)
    limiter = RateLimiterConfig(rate=1.0)
    assert (limiter.algorithm, limiter.max_wait) == ("token_bucket", 0.0)
    hedging = HedgingConfig(delay=0.1)
    assert (hedging.max_attempts, hedging.mode, hedging.actions) == (2, "latency", None)
    chaos = ChaosConfig()
    assert (chaos.fault_rate, chaos.fault, chaos.latency_rate, chaos.latency) == (0.0, None, 0.0, 0.0)
    assert (chaos.outcome_rate, chaos.outcome, chaos.enabled, chaos.seed) == (0.0, None, True, None)
    assert CircuitBreakerConfig().sliding_window is None  # consecutive failures stay the default


def test_the_spec_error_types_and_their_fields() -> None:
    """Rejections are ``ExecutionRejectedError``, a timeout is a ``TimeoutError``, each with its fields."""
    for rejection in (CircuitOpenError, BulkheadFullError, RateLimitedError):
        assert issubclass(rejection, ExecutionRejectedError)
        assert issubclass(rejection, ResilienceError)
    assert issubclass(OperationTimeoutError, TimeoutError)
    assert issubclass(RecoveryEscalatedError, ResilienceError)
    clock = FakeClock(0.0)
    breaker = CircuitBreaker(
        "spec-breaker", CircuitBreakerConfig(failure_threshold=1, timeout=7.0), clock=clock
    )
    breaker.force_closed()
    with pytest.raises(ConnectionError):
        breaker.call_sync(_fail)
    with pytest.raises(CircuitOpenError) as rejected:
        breaker.call_sync(_fail)
    assert (rejected.value.name, rejected.value.retry_after) == ("spec-breaker", 7.0)
    assert "spec-breaker" in str(rejected.value)
    assert RateLimitedError("spec-limiter", 1.5).retry_after == 1.5


def test_the_breaker_operations_named_in_the_spec() -> None:
    """``disable``, ``metrics_only``, ``force_closed`` and ``on_state_change`` act as SPEC §5 says."""
    breaker = CircuitBreaker("spec-operations", clock=FakeClock(0.0))
    changes: list[tuple[str, str]] = []
    unsubscribe = breaker.on_state_change(lambda change: changes.append((change.old, change.new)))
    breaker.disable()
    breaker.metrics_only()
    breaker.force_closed()
    unsubscribe()
    breaker.disable()
    assert changes == [("closed", "disabled"), ("disabled", "metrics_only"), ("metrics_only", "closed")]
    assert breaker.state is CircuitState.DISABLED


def test_the_get_stats_keys_of_the_spec() -> None:
    """``get_stats()`` and ``get_resilience_statistics()`` carry the keys SPEC.md shows."""
    breaker = CircuitBreaker("spec-stats", clock=FakeClock(0.0))
    assert breaker.call_sync(lambda: "ok") == "ok"
    stats = breaker.get_stats()
    assert {"state", "failure_count", "total_requests", "total_failures", "total_rejected"} <= set(stats)
    assert stats["state"] == "closed"
    manager = ResilienceManager(clock=FakeClock(0.0))
    manager.execute_with_resilience_sync(lambda: "ok", ResilienceConfig(name="spec-statistics"))
    statistics = manager.get_resilience_statistics()
    assert {"executions", "circuit_breakers", "bulkheads", "error_recovery"} <= set(statistics)
    assert {"total", "successful", "failed", "success_rate"} <= set(statistics["executions"])
    assert {"recovery_rate", "successful_recoveries"} <= set(statistics["error_recovery"])


def test_the_runners_take_the_spec_positional_arguments() -> None:
    """The SPEC's call forms: a name then a config, the function then its arguments."""
    bulkhead = Bulkhead("spec-pool", BulkheadConfig(max_concurrent=10, max_waiting=100, timeout=60.0))
    assert bulkhead.execute_sync(lambda doc: len(doc), "doc") == 3
    handler = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0))
    assert handler.execute_with_fallback_sync(_fail, "data") == 0
    recovery = ErrorRecoverySystem(clock=FakeClock(0.0))
    recovery.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value=1)
    )
    assert recovery.recover_from_error_sync(ConnectionError("down"), {"operation": _fail}) == 1
    limiter = RateLimiter("spec-limiter", RateLimiterConfig(rate=1.0, burst=1), clock=FakeClock(0.0))
    assert limiter.call_sync(lambda: "ok") == "ok"
    assert Hedging("spec-hedging", HedgingConfig(delay=0.1)).name == "spec-hedging"


def test_the_modules_the_spec_names() -> None:
    """The configuration loader, the HTTP integrations and the instrumentor entry point exist."""
    from otel_resilience.integrations import aiohttp, fastapi, httpx, requests  # noqa: PLC0415

    assert config.CONFIG_ENV == "OTEL_RESILIENCE_CONFIG"
    assert list(config.load(ROOT / "resilience.yaml"))
    for client in (httpx.ResilientTransport, httpx.AsyncResilientTransport, requests.ResilientAdapter):
        assert isinstance(client, type)
    assert aiohttp.__all__
    assert fastapi.__all__
    names = {point.name for point in entry_points(group="opentelemetry_instrumentor")}
    assert "otel_resilience" in names


def test_the_cli_prints_the_schema_and_checks_a_file() -> None:
    """``otel-resilience schema`` prints the JSON Schema and ``otel-resilience check PATH`` validates."""
    from otel_resilience.__main__ import main  # noqa: PLC0415

    out = io.StringIO()
    assert main(["schema"], out=out, err=io.StringIO()) == 0
    assert json.loads(out.getvalue())["title"]
    assert main(["check", str(ROOT / "resilience.yaml")], out=io.StringIO(), err=io.StringIO()) == 0


def test_importing_the_retry_alias_module_keeps_the_retry_decorator() -> None:
    """``from otel_resilience.retry import ...`` (as the README does) leaves ``otel_resilience.retry`` the decorator."""
    code = (
        "from otel_resilience.retry import retry_after_delay\n"
        "import otel_resilience\n"
        "from otel_resilience import RetryPolicy, retry\n"
        "@retry(RetryPolicy(max_attempts=1))\n"
        "def read() -> str:\n"
        "    return 'read'\n"
        "import otel_resilience.retry\n"
        "print(read(), otel_resilience.retry is retry, callable(retry))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "read True True\n"


def _fail(*args: object) -> object:
    raise ConnectionError("down")
