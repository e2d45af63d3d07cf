"""The resilience manager: one orchestrator that composes every pattern around a call.

The order in which the patterns nest is stated in ONE place, :func:`build_pipeline`::

    caller
      └─ Fallback                      sees every failure, rejections and timeouts included
          └─ Timeout (total)           ResilienceConfig.timeout bounds the WHOLE execution:
              │                        every attempt, every backoff, every recovery re-run
              └─ Recovery              rules per error type (retry/restart/fallback/isolate/escalate)
                  └─ Retry             asks the breaker again on every attempt
                      └─ CircuitBreaker    counts each attempt; ignores rejections from inside
                          └─ Bulkhead      a slot is held only while the dependency is called,
                              │            never during a backoff
                              └─ Timeout (attempt)   RetryPolicy.attempt_timeout; a hung
                                  │                  attempt is a breaker failure
                                  └─ fn

Why this order:

* the fallback is outermost so that it answers whatever happened inside, including an open
  breaker, a full bulkhead and an expired total deadline;
* ``timeout`` is a *total* deadline: it bounds backoffs and recovery re-runs, and retry never
  starts a backoff that would end past it (it gives up early instead);
* retry wraps the breaker, so every attempt asks the breaker for permission and is counted by it
  (Resilience4j's documented order); rejections are not retried by default;
* the bulkhead sits inside the breaker so that an open breaker rejects before queueing, and inside
  retry so that no slot is held while backing off;
* the per-attempt timeout is innermost so that a hung attempt surfaces as a failure the breaker
  counts, not as a cancellation it ignores.

Breakers and bulkheads are kept by name in the manager, so their state survives across calls:
the name comes from ``ResilienceConfig.circuit_breaker_name`` / ``bulkhead_name``, else from
``ResilienceConfig.name``, else from the function's ``__qualname__``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, overload

from otel_resilience.alerts import AlertSystem, default_alert_system
from otel_resilience.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.validation import check_duration, check_name, fail
from otel_resilience.fallback import FallbackConfig, FallbackHandler
from otel_resilience.recovery import ErrorRecoverySystem
from otel_resilience.retry import Retry, RetryPolicy
from otel_resilience.timeout import TimeoutHandler

__all__ = [
    "ResilienceConfig",
    "ResilienceManager",
    "build_pipeline",
    "get_resilience_manager",
    "resilient",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_PIPELINES: Final = 1024
"""How many (policy name, config) pipelines a manager caches before evicting the oldest."""


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """Which patterns protect a call, and how. Every part is optional.

    Attributes:
        circuit_breaker: Breaker settings; ``None`` (default) for no breaker.
        retry_policy: Retry settings; ``None`` (default) for a single attempt. Its
            ``attempt_timeout`` becomes the innermost per-attempt timeout.
        fallback_config: Fallback settings; ``None`` (default) for no fallback.
        timeout: Total deadline in seconds for the whole execution (attempts, backoffs and
            recovery re-runs); ``None`` (default) for none. ``timedelta`` accepted.
        bulkhead_config: Bulkhead settings; ``None`` (default) for no concurrency limit.
        enable_recovery: Run the manager's :class:`ErrorRecoverySystem` rules on errors
            (default ``False``).
        name: The policy (operation) name used in statistics and telemetry; default: the
            protected function's ``__qualname__``.
        circuit_breaker_name: The breaker to use or create; default: ``name``.
        bulkhead_name: The bulkhead to use or create; default: ``name``.
        spans: Open spans for executions under this policy (default ``True``).
        record_duration: Record the execution-duration histogram (default ``True``).
    """

    circuit_breaker: CircuitBreakerConfig | None = None
    retry_policy: RetryPolicy | None = None
    fallback_config: FallbackConfig | None = None
    timeout: float | None = None
    bulkhead_config: BulkheadConfig | None = None
    enable_recovery: bool = False
    name: str | None = None
    circuit_breaker_name: str | None = None
    bulkhead_name: str | None = None
    spans: bool = True
    record_duration: bool = True

    def __post_init__(self) -> None:
        owner = "ResilienceConfig"
        for field, kind in (
            ("circuit_breaker", CircuitBreakerConfig),
            ("retry_policy", RetryPolicy),
            ("fallback_config", FallbackConfig),
            ("bulkhead_config", BulkheadConfig),
        ):
            value = getattr(self, field)
            if value is not None and not isinstance(value, kind):
                raise fail(owner, field, f"a {kind.__name__} or None", value, kind=TypeError)
        if self.timeout is not None:
            object.__setattr__(self, "timeout", check_duration(owner, "timeout", self.timeout))
        for field in ("enable_recovery", "spans", "record_duration"):
            if not isinstance(getattr(self, field), bool):
                raise fail(owner, field, "a bool", getattr(self, field), kind=TypeError)
        for field in ("name", "circuit_breaker_name", "bulkhead_name"):
            if getattr(self, field) is not None:
                check_name(owner, field, getattr(self, field))
        attempt_timeout = self.retry_policy.attempt_timeout if self.retry_policy is not None else None
        if attempt_timeout is not None and self.timeout is not None and attempt_timeout >= self.timeout:
            raise fail(
                owner,
                "retry_policy.attempt_timeout",
                f"< ResilienceConfig.timeout ({self.timeout:g} s), the total deadline",
                attempt_timeout,
            )


def build_pipeline(
    name: str,
    config: ResilienceConfig,
    *,
    breaker: CircuitBreaker | None,
    bulkhead: Bulkhead | None,
    recovery: ErrorRecoverySystem | None,
    clock: Clock = SYSTEM_CLOCK,
    breakers: Callable[[str], CircuitBreaker | None] | None = None,
) -> Pipeline:
    """Compose the patterns of ``config`` into one pipeline, in THE order (see the module doc).

    Args:
        name: The policy name (operation name in telemetry).
        config: What to compose.
        breaker: The shared breaker to use when ``config.circuit_breaker`` is set.
        bulkhead: The shared bulkhead to use when ``config.bulkhead_config`` is set.
        recovery: The recovery system to use when ``config.enable_recovery`` is set.
        clock: The clock for timeouts, backoffs and durations.
        breakers: Finds a breaker by name for the ISOLATE rules of ``recovery`` that name one
            (a manager passes the lookup among its own breakers; default: every live breaker).
            A rule that names none isolates ``breaker``.

    Returns:
        The linked pipeline. ``Pipeline.describe()`` lists its strategies outer to inner.
    """
    builder = PipelineBuilder(
        name,
        clock=clock,
        source=TelemetrySource("pipeline", name, name, spans=config.spans, metrics=config.record_duration),
    )
    if config.fallback_config is not None:
        builder.add(FallbackHandler(config.fallback_config, name=name, clock=clock).as_strategy(name))
    if config.timeout is not None:
        builder.add(TimeoutHandler(config.timeout, name=name, scope="total", clock=clock).as_strategy(name))
    if config.enable_recovery and recovery is not None:
        builder.add(recovery.as_strategy(name, breaker=breaker, breakers=breakers))
    attempt_timeout: float | None = None
    if config.retry_policy is not None:
        policy = config.retry_policy
        attempt_timeout = policy.attempt_timeout
        if attempt_timeout is not None:
            # The per-attempt deadline is applied innermost (below), not around breaker and bulkhead.
            policy = dataclasses.replace(policy, attempt_timeout=None)
        builder.add(Retry(name, policy, clock=clock).as_strategy(name))
    if breaker is not None:
        builder.add(breaker.as_strategy(name))
    if bulkhead is not None:
        builder.add(bulkhead.as_strategy(name))
    if attempt_timeout is not None:
        builder.add(
            TimeoutHandler(attempt_timeout, name=name, scope="attempt", clock=clock).as_strategy(name)
        )
    return builder.build()


class _Entry:
    """A cached pipeline and the config object it was built from (kept alive for the id key).

    ``live`` turns ``False`` (under the manager's lock) when the entry leaves the cache, so a
    holder of the entry (a ``@resilient`` function) knows to look its pipeline up again.
    """

    __slots__ = ("config", "live", "pipeline")

    def __init__(self, config: ResilienceConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.live = True


_GONE: Final = _Entry.__new__(_Entry)
"""A dead entry (never in a cache, no pipeline): what a ``@resilient`` function starts from."""
_GONE.live = False


class ResilienceManager:
    """Runs calls through the patterns a :class:`ResilienceConfig` names, and keeps their state.

    Args:
        recovery_system: The recovery rules used when ``enable_recovery`` is set (default: a new
            :class:`ErrorRecoverySystem`).
        alert_system: Where in-process alerts go (default: the process-wide one).
        clock: The clock for every pattern the manager creates.
        max_pipelines: How many composed pipelines to cache (default 1024).

    Attributes:
        recovery_system: The manager's error recovery system: register rules on it.
        alert_system: The alert system the manager's statistics report.
    """

    def __init__(
        self,
        *,
        recovery_system: ErrorRecoverySystem | None = None,
        alert_system: AlertSystem | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_pipelines: int = DEFAULT_MAX_PIPELINES,
    ) -> None:
        if isinstance(max_pipelines, bool) or not isinstance(max_pipelines, int) or max_pipelines < 1:
            raise fail("ResilienceManager", "max_pipelines", "an int >= 1", max_pipelines)
        self.recovery_system = recovery_system or ErrorRecoverySystem("recovery", clock=clock)
        self.alert_system = alert_system or default_alert_system()
        self._clock = clock
        self._lock = threading.Lock()
        self._max_pipelines = max_pipelines
        self._pipelines: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._by_value: OrderedDict[tuple[str, ResilienceConfig], Pipeline] = OrderedDict()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._bulkheads: dict[str, Bulkhead] = {}

    # ------------------------------------------------------------------ shared instances

    def get_circuit_breaker(self, name: str, config: CircuitBreakerConfig | None = None) -> CircuitBreaker:
        """Return the breaker named ``name``, creating it with ``config`` on first use.

        Raises:
            ValueError: If a breaker of that name exists with a different config.
        """
        with self._lock:
            return self._breaker_locked(name, config)

    def get_bulkhead(self, name: str, config: BulkheadConfig | None = None) -> Bulkhead:
        """Return the bulkhead named ``name``, creating it with ``config`` on first use.

        Raises:
            ValueError: If a bulkhead of that name exists with a different config.
        """
        with self._lock:
            return self._bulkhead_locked(name, config)

    def _breaker_locked(self, name: str, config: CircuitBreakerConfig | None) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, config, clock=self._clock)
            self._breakers[name] = breaker
        elif config is not None and breaker.config != config:
            msg = (
                f"circuit breaker {name!r} already exists with a different config; "
                "give this policy its own circuit_breaker_name"
            )
            raise ValueError(msg)
        return breaker

    def _bulkhead_locked(self, name: str, config: BulkheadConfig | None) -> Bulkhead:
        bulkhead = self._bulkheads.get(name)
        if bulkhead is None:
            bulkhead = Bulkhead(name, config, clock=self._clock)
            self._bulkheads[name] = bulkhead
        elif config is not None and bulkhead.config != config:
            msg = (
                f"bulkhead {name!r} already exists with a different config; "
                "give this policy its own bulkhead_name"
            )
            raise ValueError(msg)
        return bulkhead

    def pipeline_for(self, config: ResilienceConfig, name: str) -> Pipeline:
        """Return the (cached) pipeline that runs calls named ``name`` under ``config``.

        The same config object finds its pipeline by identity (no hashing on the hot path). A
        new config object that is *equal* to one seen before (a config built per call) shares
        that pipeline, so its state and statistics carry on instead of starting afresh.
        """
        return self._entry_for(config, name).pipeline

    def _entry_for(self, config: ResilienceConfig, name: str) -> _Entry:
        """Return the cache entry of :meth:`pipeline_for` (building its pipeline if needed)."""
        key = (name, id(config))
        entry = self._pipelines.get(key)
        if entry is not None and entry.config is config:
            return entry
        if not isinstance(config, ResilienceConfig):
            raise fail("ResilienceManager", "config", "a ResilienceConfig", config, kind=TypeError)
        value_key = _value_key(name, config)
        with self._lock:
            entry = self._pipelines.get(key)
            if entry is not None and entry.config is config:
                return entry
            if entry is not None:  # the id of a config object that is gone, reused
                entry.live = False
            pipeline = self._by_value.get(value_key) if value_key is not None else None
            if pipeline is None:
                pipeline = self._build_locked(config, name)
                if value_key is not None:
                    self._by_value[value_key] = pipeline
                    while len(self._by_value) > self._max_pipelines:
                        self._by_value.popitem(last=False)
            elif value_key is not None:
                self._by_value.move_to_end(value_key)
            entry = self._pipelines[key] = _Entry(config, pipeline)
            while len(self._pipelines) > self._max_pipelines:
                self._pipelines.popitem(last=False)[1].live = False
            return entry

    def _build_locked(self, config: ResilienceConfig, name: str) -> Pipeline:
        """Compose a new pipeline for ``config``, with the shared breaker and bulkhead."""
        breaker = None
        if config.circuit_breaker is not None:
            breaker = self._breaker_locked(config.circuit_breaker_name or name, config.circuit_breaker)
        bulkhead = None
        if config.bulkhead_config is not None:
            bulkhead = self._bulkhead_locked(config.bulkhead_name or name, config.bulkhead_config)
        return build_pipeline(
            name,
            config,
            breaker=breaker,
            bulkhead=bulkhead,
            recovery=self.recovery_system,
            clock=self._clock,
            breakers=self._breakers.get,
        )

    # ------------------------------------------------------------------ execution

    async def execute_with_resilience(
        self,
        fn: Callable[P, Awaitable[R]],
        config: ResilienceConfig,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``await fn(*args, **kwargs)`` under every pattern ``config`` names.

        Args:
            fn: An async function (or any callable returning an awaitable).
            config: Which patterns, and how.
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``.

        Returns:
            ``fn``'s result, or the fallback's answer.

        Raises:
            TypeError: If ``fn`` is not callable or ``config`` is not a ResilienceConfig.
            Exception: The original error when nothing could recover it; a
                :class:`~otel_resilience.errors.CircuitOpenError`,
                :class:`~otel_resilience.errors.BulkheadFullError` or
                :class:`~otel_resilience.errors.OperationTimeoutError` when a pattern refused.
        """
        if not callable(fn):
            raise fail("ResilienceManager.execute_with_resilience", "fn", "callable", fn, kind=TypeError)
        name = config.name if type(config) is ResilienceConfig and config.name else _name_of(fn)
        pipeline = self.pipeline_for(config, name)
        return await pipeline.execute(fn, *args, **kwargs)

    def execute_with_resilience_sync(
        self,
        fn: Callable[P, R],
        config: ResilienceConfig,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``fn(*args, **kwargs)`` in the calling thread under every pattern ``config`` names.

        Sync timeouts cannot pre-empt a thread: deadlines are enforced between attempts and when
        the call returns, and published through
        :func:`otel_resilience.current_deadline` for the callee to honour.

        Raises:
            TypeError: If ``fn`` is not callable or ``config`` is not a ResilienceConfig.
            Exception: As :meth:`execute_with_resilience`.
        """
        if not callable(fn):
            raise fail("ResilienceManager.execute_with_resilience_sync", "fn", "callable", fn, kind=TypeError)
        name = config.name if type(config) is ResilienceConfig and config.name else _name_of(fn)
        pipeline = self.pipeline_for(config, name)
        return pipeline.execute_sync(fn, *args, **kwargs)

    # ------------------------------------------------------------------ statistics

    def get_resilience_statistics(self) -> dict[str, Any]:
        """Return execution, breaker, bulkhead, recovery and alert statistics.

        ``executions`` sums every policy: ``total`` = ``successful`` + ``fallback`` + ``failed``
        + ``cancelled``; ``rejected`` and ``timeouts`` are the parts of ``failed`` that were
        rejections and timeouts; ``success_rate`` = successful / total and ``availability`` =
        (successful + fallback) / total (1.0 before any execution). Configs built per call count
        in one policy as long as they are equal; only when more than ``max_pipelines`` distinct
        (name, config) policies are in use are the oldest evicted, with their counts.
        """
        with self._lock:
            pipelines = [entry.pipeline for entry in self._pipelines.values()]
            pipelines.extend(self._by_value.values())
            breakers = dict(self._breakers)
            bulkheads = dict(self._bulkheads)
        totals = dict.fromkeys(
            ("total", "successful", "recovered", "fallback", "failed", "rejected", "timeouts", "cancelled"), 0
        )
        policies: dict[str, dict[str, int]] = {}
        seen: set[int] = set()
        for pipeline in pipelines:
            stats = pipeline.stats
            if id(stats) in seen:
                continue
            seen.add(id(stats))
            counts = stats.as_dict()
            mine = policies.setdefault(pipeline.name, dict.fromkeys(counts, 0))
            for key, value in counts.items():
                mine[key] += value
            for key in totals:
                totals[key] += counts[key]
        total = totals["total"]
        executions: dict[str, Any] = dict(totals)
        executions["success_rate"] = totals["successful"] / total if total else 1.0
        executions["availability"] = (totals["successful"] + totals["fallback"]) / total if total else 1.0
        return {
            "executions": executions,
            "policies": policies,
            "circuit_breakers": {name: b.get_stats() for name, b in breakers.items()},
            "bulkheads": {name: b.get_stats() for name, b in bulkheads.items()},
            "error_recovery": self.recovery_system.get_stats(),
            "alerts": self.alert_system.get_stats(),
        }


def _value_key(name: str, config: ResilienceConfig) -> tuple[str, ResilienceConfig] | None:
    """Return the key that finds an equal config's pipeline, or ``None`` if ``config`` is unhashable."""
    try:
        hash(config)
    except TypeError:  # e.g. a dict default_value: such configs are cached by identity only
        return None
    return (name, config)


def _name_of(fn: Callable[..., Any]) -> str:
    """Return a bounded operation name for ``fn`` (its qualified name)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(fn).__qualname__


_DEFAULT_LOCK: Final = threading.Lock()
_DEFAULT: list[ResilienceManager] = []


def get_resilience_manager() -> ResilienceManager:
    """Return the process-wide :class:`ResilienceManager`, creating it on first use (thread-safe)."""
    if _DEFAULT:
        return _DEFAULT[0]
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(ResilienceManager())
        return _DEFAULT[0]


@overload
def resilient(
    config: ResilienceConfig, *, manager: ResilienceManager | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


@overload
def resilient(
    config: None = None, *, manager: ResilienceManager | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def resilient(
    config: ResilienceConfig | None = None, *, manager: ResilienceManager | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function so that every call runs under ``config``.

    The driver (async or sync) is chosen once, at decoration time. The policy name defaults to
    the function's ``__qualname__``.

    Args:
        config: The patterns to apply (default: an empty config: telemetry and statistics only).
        manager: The manager to run in (default: :func:`get_resilience_manager` at call time).

    Returns:
        A decorator that keeps the function's signature.
    """
    cfg = config if config is not None else ResilienceConfig()
    if not isinstance(cfg, ResilienceConfig):
        raise fail("resilient", "config", "a ResilienceConfig", cfg, kind=TypeError)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if not callable(fn):
            raise fail("resilient", "fn", "callable", fn, kind=TypeError)
        name = cfg.name or _name_of(fn)
        # The function's cache entry, looked up again only once it has left the manager's cache.
        # The manager cannot change under it: a given one, or the default one, created once.
        entry = _GONE

        def lookup() -> Pipeline:
            nonlocal entry
            entry = (manager or get_resilience_manager())._entry_for(cfg, name)
            return entry.pipeline

        if inspect.iscoroutinefunction(fn):
            async_fn: Callable[..., Awaitable[Any]] = fn

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                pipeline = entry.pipeline if entry.live else lookup()
                return await pipeline.execute(async_fn, *args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            pipeline = entry.pipeline if entry.live else lookup()
            return pipeline.execute_sync(fn, *args, **kwargs)

        return sync_wrapper

    return decorate
