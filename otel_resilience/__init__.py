"""otel_resilience: fault-tolerance patterns for asyncio and threads, native to OpenTelemetry.

Circuit breaker, retry with backoff, fallback, timeout, bulkhead, rate limiter, hedging and
rule-based error recovery, composed by one manager, and chaos injection to drill them. Every retry,
trip, rejection, timeout, fallback, recovery, hedge and injected fault is a span event and a
metric. The public API is re-exported here; see each module for details.
"""

from __future__ import annotations

# First, before the imports that take a third of a second: `python -m otel_resilience` loads the
# package before its command's code runs, so a signal then stops it here (the command's guard).
from _otel_resilience_cli import guard_package_load as _guard_package_load

_guard_package_load(__name__)

import sys
import types
from typing import TYPE_CHECKING, Any

from otel_resilience.engine.context import current_deadline
from otel_resilience.engine.deadline import time_left
from otel_resilience.engine.events import Outcome
from otel_resilience.errors import (
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
    RateLimitedError,
    RecoveryEscalatedError,
    ResilienceError,
    UnacceptedResultError,
)
from otel_resilience.manager import (
    ExtraStrategy,
    KeyedPolicyView,
    PolicyHandle,
    ResilienceConfig,
    ResilienceManager,
    build_pipeline,
    get_resilience_manager,
    resilient,
)
from otel_resilience.patterns.alerts import (
    Alert,
    AlertConfig,
    AlertKind,
    AlertSeverity,
    AlertSystem,
    default_alert_system,
    subscribe,
)
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig, BulkheadStats
from otel_resilience.patterns.chaos import Chaos, ChaosConfig, ChaosSwitch
from otel_resilience.patterns.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerStats,
    CircuitState,
    CountWindow,
    TimeWindow,
)
from otel_resilience.patterns.fallback import (
    MISSING,
    CacheService,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
)
from otel_resilience.patterns.hedging import Hedging, HedgingConfig, PercentileDelay
from otel_resilience.patterns.rate_limiter import RateLimiter, RateLimiterConfig
from otel_resilience.patterns.recovery import (
    ErrorRecoverySystem,
    RecoveryAction,
    RecoveryConfig,
    RecoveryContext,
    RecoveryStrategy,
)
from otel_resilience.patterns.retry import (
    Jitter,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    retry,
    retry_async,
    retry_sync,
)
from otel_resilience.patterns.timeout import TimeoutConfig, TimeoutHandler, fail_after, move_on_after
from otel_resilience.store import RedisStore
from otel_resilience.telemetry import install_default as _install_default
from otel_resilience.telemetry.env import instrumentation_disabled as _instrumentation_disabled

__all__ = [
    "MISSING",
    "Alert",
    "AlertConfig",
    "AlertKind",
    "AlertSeverity",
    "AlertSystem",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadFullError",
    "BulkheadStats",
    "BulkheadTimeoutError",
    "CacheService",
    "Chaos",
    "ChaosConfig",
    "ChaosSwitch",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerStats",
    "CircuitOpenError",
    "CircuitState",
    "CountWindow",
    "ErrorRecoverySystem",
    "ExecutionRejectedError",
    "ExtraStrategy",
    "FallbackConfig",
    "FallbackHandler",
    "FallbackStrategy",
    "Hedging",
    "HedgingConfig",
    "Jitter",
    "KeyedPolicyView",
    "OperationTimeoutError",
    "Outcome",
    "PercentileDelay",
    "PolicyHandle",
    "RateLimitedError",
    "RateLimiter",
    "RateLimiterConfig",
    "RecoveryAction",
    "RecoveryConfig",
    "RecoveryContext",
    "RecoveryEscalatedError",
    "RecoveryStrategy",
    "RedisStore",
    "ResilienceConfig",
    "ResilienceError",
    "ResilienceManager",
    "Retry",
    "RetryBudget",
    "RetryPolicy",
    "RetryStrategy",
    "TimeWindow",
    "TimeoutConfig",
    "TimeoutHandler",
    "UnacceptedResultError",
    "__version__",
    "build_pipeline",
    "current_deadline",
    "default_alert_system",
    "fail_after",
    "get_resilience_manager",
    "move_on_after",
    "resilient",
    "retry",
    "retry_async",
    "retry_sync",
    "subscribe",
    "time_left",
]


class _Package(types.ModuleType):
    """The package's module type, which keeps ``otel_resilience.retry`` the ``retry`` decorator.

    The name is also the retry pattern's former path, an alias module users import names from
    (``from otel_resilience.retry import retry_after_delay``). The import system binds a submodule
    it loads as an attribute of its package, which would put that module in the decorator's
    place; this type ignores that one binding, whatever the order of the imports.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name == "retry" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

# Telemetry with no code: an OpenTelemetry listener on the global providers, acquired lazily
# (none when OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names otel_resilience).
if not _instrumentation_disabled():
    _install_default()


__version__: str
"""The installed distribution's version, read from its metadata on first use (``"0.0.0"`` if none)."""

# Hidden from type checkers, which would otherwise type every attribute of the package that
# does not exist (a misspelt ``otel_resilience.CircuitBreakr``) as ``Any``: they see the
# declaration of ``__version__`` above instead.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Resolve ``__version__`` lazily from the installed distribution's metadata."""
        if name == "__version__":
            from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - lazy by design

            try:
                return version("otel-resilience")
            except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
                return "0.0.0"
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
