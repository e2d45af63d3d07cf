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
``ResilienceConfig.name``, else from the function (see :func:`_name_of`: a ``functools.partial``
is named after its function, a lambda after its module and line).

Equal configs share one policy (pipeline, counts), hashable or not. The manager keeps at most
``max_policies`` idle policies, breakers and bulkheads (:class:`~otel_resilience.engine.store.
BoundedStore`); evicted policies' counts stay in the ``executions`` totals.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import logging
import threading
import types
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, overload

from otel_resilience.alerts import AlertSystem, default_alert_system
from otel_resilience.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitState
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder, PipelineStats, check_protectable
from otel_resilience.engine.store import BoundedStore
from otel_resilience.engine.validation import check_duration, check_int, check_name, fail
from otel_resilience.fallback import FallbackConfig, FallbackHandler
from otel_resilience.recovery import ErrorRecoverySystem
from otel_resilience.retry import Retry, RetryPolicy
from otel_resilience.timeout import TimeoutHandler

__all__ = [
    "DEFAULT_MAX_POLICIES",
    "ResilienceConfig",
    "ResilienceManager",
    "build_pipeline",
    "get_resilience_manager",
    "resilient",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_PIPELINES: Final = 1024
"""How many config objects a manager's identity fast path remembers."""
DEFAULT_MAX_POLICIES: Final = 256
"""How many live policies (and breakers, and bulkheads) a manager keeps while they are idle."""

_LOG: Final = logging.getLogger(__name__)
_BREAKER: Final = "circuit_breaker"
_BULKHEAD: Final = "bulkhead"


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
            (default ``False``). The manager's recovery system has no rule by default: register
            rules on ``manager.recovery_system``, or recovery does nothing.
        name: The policy (operation) name used in statistics and telemetry; default: derived
            from the protected function (its ``__qualname__``; a ``functools.partial`` is named
            after its function, a lambda after its module and line).
        circuit_breaker_name: The breaker to use or create; default: ``name``.
        bulkhead_name: The bulkhead to use or create; default: ``name``.
        spans: Open spans for executions under this policy (default ``True``).
        record_duration: Record the execution-duration histogram (default ``True``).
        max_attempts_total: Calls of the dependency one execution may make in total, ``>= 1``,
            counted across retry attempts and recovery re-runs (each of which a breaker counts);
            ``None`` (default) for no cap. Once reached, retry gives up with the original error
            (stop reason ``max_attempts_total``) and recovery re-runs no more (a failed
            recovery). Without it, one execution may call the dependency ``max_attempts x (1 +
            recovery re-runs)`` times.
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
    max_attempts_total: int | None = None

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
        if self.max_attempts_total is not None:
            check_int(owner, "max_attempts_total", self.max_attempts_total, minimum=1)
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
        max_attempts=config.max_attempts_total,
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
    """A config object's way to its policy: the fast path of a ``@resilient`` function.

    ``live`` turns ``False`` (under the manager's lock) when the entry leaves the identity
    cache or its policy is evicted, so a holder of the entry (a ``@resilient`` function) knows
    to look its pipeline up again.
    """

    __slots__ = ("config", "key", "live", "pipeline", "policy")

    live: bool

    def __init__(self, config: ResilienceConfig, key: tuple[str, int], policy: _Policy) -> None:
        self.config = config
        self.key = key
        self.policy = policy
        self.pipeline = policy.pipeline
        self.live = True


class _Policy:
    """One live policy: a (name, config value) pair, its pipeline, and what it holds."""

    __slots__ = ("breaker", "bulkhead", "entries", "name", "pipeline", "seen_total")

    def __init__(
        self, name: str, pipeline: Pipeline, breaker: CircuitBreaker | None, bulkhead: Bulkhead | None
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.entries: set[_Entry] = set()
        self.seen_total = 0


_GONE: Final = _Entry.__new__(_Entry)
"""A dead entry (never in a cache, no pipeline): what a ``@resilient`` function starts from."""
_GONE.live = False

_EXECUTION_KEYS: Final = (
    "total",
    "successful",
    "successful_first_attempt",
    "successful_after_failure",
    "fallback",
    "failed",
    "rejected",
    "timeouts",
    "cancelled",
)
"""The counts of ``executions`` and of each ``policies`` entry (see :meth:`PipelineStats.as_dict`)."""


class ResilienceManager:
    """Runs calls through the patterns a :class:`ResilienceConfig` names, and keeps their state.

    A *policy* is a policy name with one config value: configs that are equal (by value,
    whether or not they are hashable) share one policy, its pipeline and its counts. The
    manager keeps at most ``max_policies`` live policies, and as many breakers and bulkheads;
    past the cap, the least recently created or used **idle** ones are evicted (a policy whose
    breaker is not CLOSED or whose bulkhead holds or queues a call is not idle; neither is a
    breaker or bulkhead a live policy uses). The counts of an evicted policy are folded into
    the ``executions`` totals, so nothing counted is lost. See ``docs/design.md``.

    Args:
        recovery_system: The recovery rules used when ``enable_recovery`` is set (default: a new
            :class:`ErrorRecoverySystem` with **no rule**: register rules on it, or recovery
            does nothing; the manager logs one warning the first time that happens).
        alert_system: Where in-process alerts go (default: the process-wide one).
        clock: The clock for every pattern the manager creates.
        max_pipelines: How many config objects the identity fast path remembers (default 1024).
        max_policies: How many live policies, and how many breakers and bulkheads, the manager
            keeps while they are idle (default :data:`DEFAULT_MAX_POLICIES`).

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
        max_policies: int = DEFAULT_MAX_POLICIES,
    ) -> None:
        if isinstance(max_pipelines, bool) or not isinstance(max_pipelines, int) or max_pipelines < 1:
            raise fail("ResilienceManager", "max_pipelines", "an int >= 1", max_pipelines)
        self.recovery_system = recovery_system or ErrorRecoverySystem("recovery", clock=clock)
        self.alert_system = alert_system or default_alert_system()
        self._clock = clock
        self._lock = threading.Lock()
        self._max_pipelines = max_pipelines
        self._by_id: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._policies: BoundedStore[tuple[str, object], _Policy] = BoundedStore(
            "ResilienceManager",
            "max_policies",
            max_policies,
            is_idle=self._policy_idle,
            on_evict=self._policy_evicted,
        )
        self._breakers: BoundedStore[str, CircuitBreaker] = BoundedStore(
            "ResilienceManager", "max_policies", max_policies, is_idle=self._breaker_idle, revive=True
        )
        self._bulkheads: BoundedStore[str, Bulkhead] = BoundedStore(
            "ResilienceManager", "max_policies", max_policies, is_idle=self._bulkhead_idle, revive=True
        )
        self._users: Counter[tuple[str, str]] = Counter()
        self._retire_ids = itertools.count()
        self._retiring: dict[int, PipelineStats] = {}
        self._dead: deque[int] = deque()
        self._retired = dict.fromkeys(_EXECUTION_KEYS, 0)
        self._recovery_warned = False

    # ------------------------------------------------------------------ shared instances

    def get_circuit_breaker(self, name: str, config: CircuitBreakerConfig | None = None) -> CircuitBreaker:
        """Return the breaker named ``name``, creating it with ``config`` on first use.

        Raises:
            ValueError: If a breaker of that name exists with a different config.
        """
        with self._lock:
            return self._breaker_locked(name, config, evict=True)

    def get_bulkhead(self, name: str, config: BulkheadConfig | None = None) -> Bulkhead:
        """Return the bulkhead named ``name``, creating it with ``config`` on first use.

        Raises:
            ValueError: If a bulkhead of that name exists with a different config.
        """
        with self._lock:
            return self._bulkhead_locked(name, config, evict=True)

    def _breaker_locked(
        self, name: str, config: CircuitBreakerConfig | None, *, evict: bool
    ) -> CircuitBreaker:
        breaker, created = self._breakers.get_or_add(
            name, lambda: CircuitBreaker(name, config, clock=self._clock), evict=evict
        )
        if not created and config is not None and breaker.config != config:
            msg = (
                f"circuit breaker {name!r} already exists with a different config; "
                "give this policy its own circuit_breaker_name"
            )
            raise ValueError(msg)
        return breaker

    def _bulkhead_locked(self, name: str, config: BulkheadConfig | None, *, evict: bool) -> Bulkhead:
        bulkhead, created = self._bulkheads.get_or_add(
            name, lambda: Bulkhead(name, config, clock=self._clock), evict=evict
        )
        if not created and config is not None and bulkhead.config != config:
            msg = (
                f"bulkhead {name!r} already exists with a different config; "
                "give this policy its own bulkhead_name"
            )
            raise ValueError(msg)
        return bulkhead

    # ------------------------------------------------------------------ the bounded stores' rules

    def _breaker_idle(self, breaker: CircuitBreaker) -> bool:
        """A breaker may go when no live policy uses it and it is CLOSED."""
        return (_BREAKER, breaker.name) not in self._users and breaker.state is CircuitState.CLOSED

    def _bulkhead_idle(self, bulkhead: Bulkhead) -> bool:
        """A bulkhead may go when no live policy uses it and it holds and queues no call."""
        stats = bulkhead.stats
        return (_BULKHEAD, bulkhead.name) not in self._users and not stats.active and not stats.waiting

    def _policy_idle(self, policy: _Policy) -> bool:
        """A policy may go when it ran no call since last looked at, and its breaker and bulkhead rest.

        The first look at a policy that ran calls gives it a second chance (it is moved to the
        young end), so a policy in steady use is not evicted although its pipeline is found
        without touching the store.
        """
        total = policy.pipeline.stats.total
        if total != policy.seen_total:
            policy.seen_total = total
            return False
        breaker, bulkhead = policy.breaker, policy.bulkhead
        if breaker is not None and breaker.state is not CircuitState.CLOSED:
            return False
        return bulkhead is None or not (bulkhead.stats.active or bulkhead.stats.waiting)

    def _policy_evicted(self, _key: tuple[str, object], policy: _Policy) -> None:
        """Retire an evicted policy (under the manager's lock): its counts join the totals."""
        for entry in policy.entries:
            entry.live = False
            if self._by_id.get(entry.key) is entry:
                del self._by_id[entry.key]
        policy.entries.clear()
        if policy.breaker is not None:
            self._release((_BREAKER, policy.breaker.name))
        if policy.bulkhead is not None:
            self._release((_BULKHEAD, policy.bulkhead.name))
        # A call may still be running in the evicted pipeline: its stats are read as they are
        # until the pipeline is gone, and only then folded into the retired totals.
        retire_id = next(self._retire_ids)
        self._retiring[retire_id] = policy.pipeline.stats
        weakref.finalize(policy.pipeline, self._dead.append, retire_id).atexit = False
        self._fold_dead_locked()

    def _release(self, user: tuple[str, str]) -> None:
        """One live policy fewer uses the breaker or bulkhead ``user`` names."""
        users = self._users
        users[user] -= 1
        if users[user] <= 0:
            del users[user]

    def _fold_dead_locked(self) -> None:
        """Fold the counts of retired pipelines that are gone into the retired totals."""
        dead, retiring, retired = self._dead, self._retiring, self._retired
        while dead:
            counts = retiring.pop(dead.popleft()).as_dict()
            for key in _EXECUTION_KEYS:
                retired[key] += counts[key]

    # ------------------------------------------------------------------ policies

    def pipeline_for(self, config: ResilienceConfig, name: str) -> Pipeline:
        """Return the pipeline that runs calls named ``name`` under ``config``.

        The same config object finds its pipeline by identity (no hashing on the hot path). A
        new config object that is *equal* to one seen before (a config built per call, even one
        holding a dict or a list) shares that pipeline, so its state and statistics carry on
        instead of starting afresh.
        """
        return self._entry_for(config, name).pipeline

    def _entry_for(self, config: ResilienceConfig, name: str) -> _Entry:
        """Return the cache entry of :meth:`pipeline_for` (building its policy if needed)."""
        key = (name, id(config))
        entry = self._by_id.get(key)
        if entry is not None and entry.config is config and entry.live:
            return entry
        if not isinstance(config, ResilienceConfig):
            raise fail("ResilienceManager", "config", "a ResilienceConfig", config, kind=TypeError)
        value_key = (name, _config_key(config))
        with self._lock:
            entry = self._by_id.get(key)
            if entry is not None and entry.config is config and entry.live:
                return entry
            if entry is not None:  # the id of a config object that is gone, reused
                self._drop_entry_locked(entry)
            policy, created = self._policies.get_or_add(value_key, lambda: self._build_locked(config, name))
            entry = self._by_id[key] = _Entry(config, key, policy)
            policy.entries.add(entry)
            while len(self._by_id) > self._max_pipelines:
                self._drop_entry_locked(next(iter(self._by_id.values())))
            if created:
                self._breakers.trim()
                self._bulkheads.trim()
            return entry

    def _drop_entry_locked(self, entry: _Entry) -> None:
        """Forget an identity-cache entry (its policy stays)."""
        entry.live = False
        del self._by_id[entry.key]
        entry.policy.entries.discard(entry)

    def _build_locked(self, config: ResilienceConfig, name: str) -> _Policy:
        """Compose a new policy for ``config``, with the shared breaker and bulkhead."""
        breaker = None
        if config.circuit_breaker is not None:
            # Not evicted here but by the trim once this policy is stored: the policies it
            # evicts are what makes breakers and bulkheads idle.
            breaker = self._breaker_locked(
                config.circuit_breaker_name or name, config.circuit_breaker, evict=False
            )
        bulkhead = None
        if config.bulkhead_config is not None:
            bulkhead = self._bulkhead_locked(
                config.bulkhead_name or name, config.bulkhead_config, evict=False
            )
        if config.enable_recovery and not self.recovery_system.rules and not self._recovery_warned:
            self._recovery_warned = True
            _LOG.warning(
                "policy %r enables recovery, but the manager's recovery system has no rule: "
                "recovery does nothing until rules are registered on manager.recovery_system",
                name,
            )
        pipeline = build_pipeline(
            name,
            config,
            breaker=breaker,
            bulkhead=bulkhead,
            recovery=self.recovery_system,
            clock=self._clock,
            breakers=self._breakers.get,
        )
        if breaker is not None:
            self._users[(_BREAKER, breaker.name)] += 1
        if bulkhead is not None:
            self._users[(_BULKHEAD, bulkhead.name)] += 1
        return _Policy(name, pipeline, breaker, bulkhead)

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

        ``executions`` sums every policy, evicted ones included: ``total`` = ``successful`` +
        ``fallback`` + ``failed`` + ``cancelled``; ``successful`` = ``successful_first_attempt``
        (the function answered at once) + ``successful_after_failure`` (it answered after a
        failed attempt: a retry or a recovery re-run); ``rejected`` and ``timeouts`` are the
        parts of ``failed`` that were rejections and timeouts; ``success_rate`` = successful /
        total and ``availability`` = (successful + fallback) / total (1.0 before any execution).

        ``policies`` has the same counts for each live policy name; ``circuit_breakers`` and
        ``bulkheads`` each live one's ``get_stats()``; ``error_recovery`` the recovery system's
        (``successful_recoveries`` counts recovery *actions* that worked, a different thing
        from ``successful_after_failure``); ``limits`` the cap and how many were evicted.
        """
        with self._lock:
            self._fold_dead_locked()
            live = [(policy.name, policy.pipeline.stats) for policy in self._policies.values()]
            retiring = list(self._retiring.values())
            totals = dict(self._retired)
            breakers = self._breakers.items()
            bulkheads = self._bulkheads.items()
            limits = {
                "max_policies": self._policies.capacity,
                "policies": len(self._policies),
                "evicted_policies": self._policies.evicted,
                "circuit_breakers": len(self._breakers),
                "evicted_circuit_breakers": self._breakers.evicted,
                "bulkheads": len(self._bulkheads),
                "evicted_bulkheads": self._bulkheads.evicted,
            }
        policies: dict[str, dict[str, int]] = {}
        for name, stats in live:
            counts = stats.as_dict()
            mine = policies.setdefault(name, dict.fromkeys(_EXECUTION_KEYS, 0))
            for key in _EXECUTION_KEYS:
                mine[key] += counts[key]
                totals[key] += counts[key]
        for stats in retiring:
            counts = stats.as_dict()
            for key in _EXECUTION_KEYS:
                totals[key] += counts[key]
        total = totals["total"]
        executions: dict[str, Any] = dict(totals)
        executions["success_rate"] = totals["successful"] / total if total else 1.0
        executions["availability"] = (totals["successful"] + totals["fallback"]) / total if total else 1.0
        return {
            "executions": executions,
            "policies": policies,
            "circuit_breakers": {name: breaker.get_stats() for name, breaker in breakers},
            "bulkheads": {name: bulkhead.get_stats() for name, bulkhead in bulkheads},
            "error_recovery": self.recovery_system.get_stats(),
            "alerts": self.alert_system.get_stats(),
            "limits": limits,
        }


_IDENTITY: Final = object()
_DICT: Final = object()
_SEQUENCE: Final = object()
_SET: Final = object()
_DATACLASS: Final = object()
_UNSEEN: Final = object()
_ATOMS: Final = frozenset({str, int, float, bool, bytes, type(None)})
"""Types whose values are hashable and compared by value: their own key."""
_COMPARED_FIELDS: Final[dict[type, tuple[str, ...] | None]] = {}
"""The compared fields of each dataclass type met (``None`` for a type that is not one)."""


def _config_key(config: ResilienceConfig) -> object:
    """Return a hashable key equal for equal configs: the config itself, or its frozen value.

    A config holding a dict or a list (``default_value={"status": "error"}``) is unhashable;
    its key is built from its fields, so that an equal config built per call still finds its
    policy. A field value that is neither hashable nor a dict, list, set or dataclass is keyed
    by identity (the policy keeps the config, hence the value, alive).
    """
    try:
        hash(config)
    except TypeError:
        return _freeze(config)
    return config


def _freeze(value: object) -> object:  # noqa: PLR0911 - one return per kind of value
    """Return a hashable stand-in for ``value`` that is equal exactly when the values are equal."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    fields = _COMPARED_FIELDS.get(kind, _UNSEEN)
    if fields is _UNSEEN:
        fields = _COMPARED_FIELDS[kind] = (
            tuple(f.name for f in dataclasses.fields(kind) if f.compare)
            if dataclasses.is_dataclass(kind)
            else None
        )
    if isinstance(fields, tuple):
        return (_DATACLASS, kind, tuple(_freeze(getattr(value, name)) for name in fields))
    if isinstance(value, dict):
        return (_DICT, frozenset((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (_SEQUENCE, kind is tuple, tuple(_freeze(item) for item in value))
    if isinstance(value, (set, frozenset)):
        return (_SET, frozenset(_freeze(item) for item in value))
    try:
        hash(value)
    except TypeError:
        return (_IDENTITY, id(value))
    return value


def _name_of(fn: Callable[..., Any]) -> str:
    """Return the default policy name of ``fn``: a bounded name derived from what it is.

    A ``functools.partial`` is named after the function it wraps (``partial(fetch)``), a
    lambda after its module and line (``app.handlers.<lambda>@42``), so that unrelated
    dependencies do not share a policy (and its breaker) by accident; any other function or
    method by its ``__qualname__``; a callable object by its class's qualified name.

    Raises:
        TypeError: If the name cannot be read (a ``__qualname__`` that raises or is not a str):
            give the policy a ``ResilienceConfig.name``.
    """
    try:
        if isinstance(fn, functools.partial):
            return f"partial({_name_of(fn.func)})"
        name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
        if name is None:
            return type(fn).__qualname__
        if not isinstance(name, str):
            msg = f"its __qualname__ is a {type(name).__name__}, not a str"
            raise TypeError(msg)  # noqa: TRY301 - reported below with the one message
        code = getattr(fn, "__code__", None)
        if name.endswith("<lambda>") and isinstance(code, types.CodeType):
            return f"{getattr(fn, '__module__', None) or '?'}.{name}@{code.co_firstlineno}"
    except Exception as error:
        msg = (
            f"ResilienceManager cannot name the {type(fn).__qualname__} it protects "
            f"(reading its name raised {type(error).__name__}); "
            "give the policy a name with ResilienceConfig.name"
        )
        raise TypeError(msg) from error
    return name


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
    one derived from the function (its ``__qualname__``; see ``ResilienceConfig.name``).

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
        check_protectable(name, fn)
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
