"""``ResilienceConfig``: which patterns protect a call, and how."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from otel_resilience.engine.validation import check_duration, check_int, check_name, fail
from otel_resilience.manager.stages import ExtraStrategy
from otel_resilience.patterns.bulkhead import BulkheadConfig
from otel_resilience.patterns.chaos import ChaosConfig
from otel_resilience.patterns.circuit_breaker import CircuitBreakerConfig
from otel_resilience.patterns.fallback import FallbackConfig
from otel_resilience.patterns.hedging import HedgingConfig
from otel_resilience.patterns.rate_limiter import RateLimiterConfig
from otel_resilience.patterns.retry import RetryPolicy

__all__ = ["ResilienceConfig"]

_OWNER = "ResilienceConfig"


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """Which patterns protect a call, and how. Every part is optional.

    Attributes:
        circuit_breaker: Breaker settings; ``None`` (default) for no breaker.
        retry_policy: Retry settings; ``None`` (default) for a single attempt. Its
            ``attempt_timeout`` becomes the per-attempt timeout, inside breaker and bulkhead.
        fallback_config: Fallback settings; ``None`` (default) for no fallback.
        timeout: Total deadline in seconds for the whole execution (attempts, backoffs and
            recovery re-runs); ``None`` (default) for none. ``timedelta`` accepted.
        bulkhead_config: Bulkhead settings; ``None`` (default) for no concurrency limit.
        rate_limiter: Rate limiter settings; ``None`` (default) for no rate limit. The policy's
            limiter sheds load before anything else runs (inside the fallback only): one permit
            per execution, retries included in it.
        hedging: Hedging settings; ``None`` (default) for one attempt at a time. Async only: a
            sync function (``execute_with_resilience_sync``, ``@resilient`` on a sync function)
            under a policy with hedging raises ``TypeError``. Its hedges draw on
            ``retry_policy.budget`` when the hedging config names no budget of its own.
        enable_recovery: Run the manager's :class:`ErrorRecoverySystem` rules on errors
            (default ``False``). The manager's recovery system has no rule by default: register
            rules on ``manager.recovery_system``, or recovery does nothing.
        name: The policy (operation) name used in statistics and telemetry; default: derived
            from the protected function (its ``__qualname__``; a ``functools.partial`` is named
            after its function, a lambda after its module and line).
        circuit_breaker_name: The breaker to use or create; default: ``name``. Only with a
            ``circuit_breaker`` (a name without one is refused: ``ValueError``).
        bulkhead_name: The bulkhead to use or create; default: ``name``. Only with a
            ``bulkhead_config`` (a name without one is refused: ``ValueError``).
        spans: Open spans for executions under this policy (default ``True``); ``False``: no
            execution or attempt span, and no span event for what happens inside it.
        record_duration: Record the duration histograms, the execution's and its attempts'
            (default ``True``).
        max_attempts_total: Calls of the dependency one execution may make in total, ``>= 1``,
            counted across retry attempts, recovery re-runs (each of which a breaker counts) and
            hedges sent (a hedge that called nothing, turned away by the policy's own link or
            still waiting for its admission when its race ended, takes none);
            ``None`` (default) for no cap. Only beside a ``retry_policy``, ``hedging``,
            ``enable_recovery`` or ``extra_strategies`` (an extra link may take attempts:
            ``ExecutionContext.next_attempt``): with none, nothing makes a further call, and a cap
            is refused (``ValueError``). Once reached, retry gives up with the original error
            (stop reason ``max_attempts_total``) and recovery re-runs no more (a failed
            recovery). Without it, one execution may call the dependency ``max_attempts x (1 +
            recovery re-runs)`` times.
        extra_strategies: More links, each an
            :class:`~otel_resilience.manager.stages.ExtraStrategy` that places a ``Step`` (or a
            factory of one) among the stages of the manager's order; default none. A list is
            kept as a tuple. They take part in equality like every field: the same links
            (compared by identity) at the same ranks make equal configs, which share a policy.
        chaos: Chaos settings; ``None`` (default) for none. The policy's chaos link is
            innermost (inside the attempt timeout): what it injects stands for the dependency,
            so every other pattern reacts to it as to the real thing. It is judged on every
            attempt. A config that can never inject (``enabled=False`` or every rate 0) adds no
            link; switch chaos at run time with a :class:`~otel_resilience.patterns.chaos.ChaosSwitch` (or
            a predicate) as ``ChaosConfig.enabled``.
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
    extra_strategies: tuple[ExtraStrategy, ...] = ()
    rate_limiter: RateLimiterConfig | None = None
    chaos: ChaosConfig | None = None
    hedging: HedgingConfig | None = None

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds, a list for a tuple), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            circuit_breaker: CircuitBreakerConfig | None = ...,
            retry_policy: RetryPolicy | None = ...,
            fallback_config: FallbackConfig | None = ...,
            timeout: float | timedelta | None = ...,
            bulkhead_config: BulkheadConfig | None = ...,
            enable_recovery: bool = ...,
            name: str | None = ...,
            circuit_breaker_name: str | None = ...,
            bulkhead_name: str | None = ...,
            spans: bool = ...,
            record_duration: bool = ...,
            max_attempts_total: int | None = ...,
            extra_strategies: tuple[ExtraStrategy, ...] | list[ExtraStrategy] = ...,
            rate_limiter: RateLimiterConfig | None = ...,
            chaos: ChaosConfig | None = ...,
            hedging: HedgingConfig | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        for field, kind in (
            ("circuit_breaker", CircuitBreakerConfig),
            ("retry_policy", RetryPolicy),
            ("fallback_config", FallbackConfig),
            ("bulkhead_config", BulkheadConfig),
            ("rate_limiter", RateLimiterConfig),
            ("chaos", ChaosConfig),
            ("hedging", HedgingConfig),
        ):
            value = getattr(self, field)
            if value is not None and not isinstance(value, kind):
                raise fail(_OWNER, field, f"a {kind.__name__} or None", value, kind=TypeError)
        if self.timeout is not None:
            object.__setattr__(self, "timeout", check_duration(_OWNER, "timeout", self.timeout))
        for field in ("enable_recovery", "spans", "record_duration"):
            if not isinstance(getattr(self, field), bool):
                raise fail(_OWNER, field, "a bool", getattr(self, field), kind=TypeError)
        for field in ("name", "circuit_breaker_name", "bulkhead_name"):
            if getattr(self, field) is not None:
                check_name(_OWNER, field, getattr(self, field))
        for field, needs in (
            ("circuit_breaker_name", "circuit_breaker"),
            ("bulkhead_name", "bulkhead_config"),
        ):
            if getattr(self, field) is not None and getattr(self, needs) is None:
                # It names the policy's own breaker (bulkhead), made from its config: with none
                # the policy has none, and the name would be ignored (no shared one is used).
                raise fail(_OWNER, field, f"None unless {needs} is set", getattr(self, field))
        if self.max_attempts_total is not None:
            check_int(_OWNER, "max_attempts_total", self.max_attempts_total, minimum=1)
            if (
                self.retry_policy is None
                and self.hedging is None
                and not self.enable_recovery
                and not self.extra_strategies
            ):
                # Only these take a further attempt (ExecutionContext.next_attempt, fork): an
                # extra link may, so any keeps the cap; with none, the cap would be ignored.
                rule = (
                    "None unless retry_policy, hedging, enable_recovery or extra_strategies is set "
                    "(nothing else makes a further call to cap)"
                )
                raise fail(_OWNER, "max_attempts_total", rule, self.max_attempts_total)
        attempt_timeout = self.retry_policy.attempt_timeout if self.retry_policy is not None else None
        if attempt_timeout is not None and self.timeout is not None and attempt_timeout >= self.timeout:
            raise fail(
                _OWNER,
                "retry_policy.attempt_timeout",
                f"< ResilienceConfig.timeout ({self.timeout:g} s), the total deadline",
                attempt_timeout,
            )
        if type(self.extra_strategies) is not tuple or self.extra_strategies:
            self._check_extra_strategies()

    def _check_extra_strategies(self) -> None:
        extras: object = self.extra_strategies
        if not isinstance(extras, (tuple, list)):
            raise fail(_OWNER, "extra_strategies", "a tuple of ExtraStrategy", extras, kind=TypeError)
        for index, extra in enumerate(extras):
            if not isinstance(extra, ExtraStrategy):
                rule = "an ExtraStrategy (a link and its place: ExtraStrategy(link, inside='retry'))"
                raise fail(_OWNER, f"extra_strategies[{index}]", rule, extra, kind=TypeError)
        if type(extras) is not tuple:
            object.__setattr__(self, "extra_strategies", tuple(extras))
