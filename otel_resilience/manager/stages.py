"""The manager's order: a declared table of stages, and the links a config adds to it.

The order in which the patterns nest is stated in ONE place, the table :data:`STAGES`, outer
to inner (each stage names the :class:`~otel_resilience.manager.ResilienceConfig` field it
reads, its rank, and the function that builds its link)::

    caller
      └─ Fallback                      sees every failure, rejections and timeouts included
        └─ RateLimiter                 sheds load before anything else runs (one permit per
          │                            execution: retries are not rate-limited, budget them)
          └─ Timeout (total)           ResilienceConfig.timeout bounds the WHOLE execution:
              │                        every attempt, every backoff, every recovery re-run
              └─ Recovery              rules per error type (retry/restart/fallback/isolate/escalate)
                  └─ Retry             asks the breaker again on every attempt
                    └─ Hedging         races attempts (original + hedges) of everything inside;
                      │                one retry attempt is one race; hedges draw on the budget
                      └─ CircuitBreaker    counts each attempt; ignores rejections from inside
                          └─ Bulkhead      a slot is held only while the dependency is called,
                              │            never during a backoff
                              └─ Timeout (attempt)   RetryPolicy.attempt_timeout; a hung
                                  │                  attempt is a breaker failure
                                  └─ Chaos           injects faults, delays and results in
                                      │              place of the dependency (a drill)
                                      └─ fn

Why this order:

* the fallback is outermost so that it answers whatever happened inside, including an open
  breaker, a full bulkhead, a rate limit and an expired total deadline; so the total ``timeout``
  does not bound it: a ``fallback_function`` (or MULTIPLE_ATTEMPTS's functions) and a
  ``CACHED_VALUE`` read on the failure path are bounded only by an enclosing deadline;
* the rate limiter comes next, outside everything that does work (Microsoft's standard
  resilience handler puts it outermost): a call over the limit is shed before a deadline is
  armed, a retry scheduled or a breaker asked, and costs the dependency nothing; it sits inside
  the fallback only so that a shed call can still be answered. Its wait for a permit (``max_wait``)
  is not bounded by the policy's own ``timeout`` (inside it) but by any enclosing deadline;
* ``timeout`` is a *total* deadline: it bounds backoffs and recovery re-runs, and retry never
  starts a backoff that would end past it (it gives up early instead);
* retry wraps the breaker, so every attempt asks the breaker for permission and is counted by it
  (Resilience4j's documented order); rejections are not retried by default;
* hedging sits between retry and the breaker, where Microsoft's standard hedging handler puts it
  (outside the per-endpoint breaker and attempt timeout, inside the total timeout): every
  hedged attempt asks the breaker, holds its own bulkhead slot and has its own attempt
  timeout, the total deadline bounds (and cancels) all of them; a retry around it retries a
  race that produced no acceptable outcome (hedging's own ``"fallback"`` mode already moves on
  after a failure). Its hedges and the retries draw on one budget, ``retry_policy.budget``,
  unless the hedging config names its own, so the two cannot add up to more extra load than
  the budget allows;
* the bulkhead sits inside the breaker so that an open breaker rejects before queueing, and inside
  retry so that no slot is held while backing off;
* the per-attempt timeout is inside them all so that a hung attempt surfaces as a failure the
  breaker counts, not as a cancellation it ignores;
* chaos is innermost, Polly's advice for its chaos strategies: what it injects stands for the
  dependency, so every other pattern reacts to it as to the real thing (retry retries an injected
  fault, the breaker counts it, the fallback answers it, a slot is held through an injected
  delay) and the attempt timeout, just outside it, cuts an injected delay as it would a slow
  call. A config that can never inject adds no link.

More links (a user's own :class:`~otel_resilience.engine.step.Step`, or a pattern the library
adds later) join a policy through ``ResilienceConfig.extra_strategies``: each
:class:`ExtraStrategy` declares its place, inside or outside a named stage or at a rank, and
:func:`build_pipeline` sorts it in among the stages. The manager is not edited for it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.engine.facade import Pattern
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.step import Step, set_up
from otel_resilience.engine.validation import check_sync_callable, fail
from otel_resilience.patterns.bulkhead import Bulkhead
from otel_resilience.patterns.chaos import Chaos
from otel_resilience.patterns.circuit_breaker import CircuitBreaker
from otel_resilience.patterns.fallback import FallbackHandler
from otel_resilience.patterns.hedging import Hedging
from otel_resilience.patterns.rate_limiter import RateLimiter
from otel_resilience.patterns.recovery import ErrorRecoverySystem
from otel_resilience.patterns.retry import Retry
from otel_resilience.patterns.timeout import TimeoutHandler

if TYPE_CHECKING:
    from otel_resilience.manager.config import ResilienceConfig

__all__ = ["STAGES", "ExtraStrategy", "Stage", "StageInputs", "build_pipeline", "compose", "extra_links"]

_LOG: Final = logging.getLogger("otel_resilience.manager")
_WARNED_WITHOUT_RULES: Final[weakref.WeakSet[ErrorRecoverySystem]] = weakref.WeakSet()
"""The recovery systems a policy was built on while they had no rule: each is warned about once."""
_WARNED_LOCK: Final = fork_safe(threading.Lock())


@dataclass(frozen=True, slots=True)
class StageInputs:
    """What a stage builds its link from: one policy's name and config, and the manager's parts.

    Attributes:
        name: The policy name (operation name in telemetry).
        config: The policy's config.
        clock: The clock for timeouts, backoffs and durations.
        breaker: The shared breaker, when ``config.circuit_breaker`` is set.
        bulkhead: The shared bulkhead, when ``config.bulkhead_config`` is set.
        recovery: The recovery system, used when ``config.enable_recovery`` is set.
        breakers: Finds a breaker by name for the recovery rules that isolate one.
        rate_limiter: The rate limiter to use when ``config.rate_limiter`` is set; ``None``: the
            stage makes one for the pipeline (a policy handle passes each key's own).
        key: The key of a keyed policy's pipeline, for its execution spans (``None``: unkeyed).
        metric_key: The key attribute of its metrics, where the policy opted in (else ``None``).
        held: What a stage made that its link does not hold but must live as long as the
            pipeline: the rate limiter behind its link, whose registry entry exports the
            limiter's permits (:func:`compose` keeps them alive with the pipeline).
        previous: The pipeline this one replaces (a reload), whose links' state a stage may
            carry over (the fallback's knowledge of the ages of its cached values); ``None``.
    """

    name: str
    config: ResilienceConfig
    clock: Clock
    breaker: CircuitBreaker | None
    bulkhead: Bulkhead | None
    recovery: ErrorRecoverySystem | None
    breakers: Callable[[str], CircuitBreaker | None] | None
    rate_limiter: RateLimiter | None = None
    key: str | None = None
    metric_key: str | None = None
    held: list[object] = field(default_factory=list)
    previous: Pipeline | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of the manager's order.

    Attributes:
        name: The stage's name, as :class:`ExtraStrategy` places a link against it.
        field: The ``ResilienceConfig`` field it reads (``"retry_policy.attempt_timeout"``).
        rank: Its place, outer (low) to inner (high); the table is in rank order.
        build: Builds the stage's link for one policy, or returns ``None`` when the config
            leaves the stage out.
    """

    name: str
    field: str
    rank: int
    build: Callable[[StageInputs], Step | None]


def _fallback(at: StageInputs) -> Step | None:
    config = at.config.fallback_config
    if config is None:
        return None
    link = FallbackHandler(config, name=at.name, clock=at.clock).as_strategy(at.name)
    if at.previous is not None:
        link.follow(at.previous.strategies)  # a reload: what it knows of the cache carries over
    return link


def _rate_limiter(at: StageInputs) -> Step | None:
    config = at.config.rate_limiter
    if config is None:
        return None
    limiter = at.rate_limiter or RateLimiter(at.name, config, clock=at.clock)
    at.held.append(limiter)  # registered weakly: it exports its permits while the pipeline lives
    return limiter._keyed_link(at.name, at.key)  # a key's own: its rejections name the key


def _total_timeout(at: StageInputs) -> Step | None:
    seconds = at.config.timeout
    if seconds is None:
        return None
    return TimeoutHandler(seconds, name=at.name, scope="total", clock=at.clock).as_strategy(at.name)


def _recovery(at: StageInputs) -> Step | None:
    recovery = at.recovery
    if not at.config.enable_recovery or recovery is None:
        return None
    if not recovery.rules:
        _warn_without_rules(recovery, at.name)
    return recovery.as_strategy(at.name, breaker=at.breaker, breakers=at.breakers)


def _warn_without_rules(recovery: ErrorRecoverySystem, policy: str) -> None:
    """Log, once per recovery system, that policy ``policy`` enables it while it has no rule.

    The one place every policy's recovery link is made (a config's policy, a named one, each
    key's, a reload), so none enables a system without rules unnoticed.
    """
    with _WARNED_LOCK:
        if recovery in _WARNED_WITHOUT_RULES:
            return
        _WARNED_WITHOUT_RULES.add(recovery)
    _LOG.warning(
        "policy %r enables recovery, but its recovery system %r has no rule: recovery does nothing "
        "until rules are registered on it (manager.recovery_system for a manager's policies)",
        policy,
        recovery.name,
    )


def _retry(at: StageInputs) -> Step | None:
    policy = at.config.retry_policy
    if policy is None:
        return None
    if policy.attempt_timeout is not None:
        # The per-attempt deadline is its own stage, innermost, not around breaker and bulkhead.
        policy = dataclasses.replace(policy, attempt_timeout=None)
    return Retry(at.name, policy, clock=at.clock).as_strategy(at.name)


def _hedging(at: StageInputs) -> Step | None:
    config = at.config.hedging
    if config is None:
        return None
    policy = at.config.retry_policy
    budget = None if policy is None else policy.budget
    if config.budget is None and budget is not None:
        config = dataclasses.replace(config, budget=budget)
    # A retry around it deposits once per execution in the budget they share.
    deposit = config.budget is None or config.budget is not budget
    return Hedging(at.name, config, clock=at.clock, deposit=deposit).as_strategy(at.name)


def _breaker(at: StageInputs) -> Step | None:
    # The policy's own link (never held): the breaker's core reports the key, its link none.
    return None if at.breaker is None else at.breaker._keyed_link(at.name, None)


def _bulkhead(at: StageInputs) -> Step | None:
    """A keyed policy's bulkhead is the key's own: its rejections carry the key (an alert per key)."""
    return None if at.bulkhead is None else at.bulkhead._keyed_link(at.name, at.key)


def _attempt_timeout(at: StageInputs) -> Step | None:
    policy = at.config.retry_policy
    seconds = None if policy is None else policy.attempt_timeout
    if seconds is None:
        return None
    link = TimeoutHandler(seconds, name=at.name, scope="attempt", clock=at.clock).as_strategy(at.name)
    link.hands_late = True  # a late sync result goes to the retry, which lets it go (its dropped hook)
    return link


def _chaos(at: StageInputs) -> Step | None:
    config = at.config.chaos
    if config is None or not config.injects:  # never injects: no link, no cost
        return None
    return Chaos(at.name, config, clock=at.clock).as_strategy(at.name)


STAGES: Final[tuple[Stage, ...]] = (
    Stage("fallback", "fallback_config", 100, _fallback),
    Stage("rate_limiter", "rate_limiter", 150, _rate_limiter),
    Stage("total_timeout", "timeout", 200, _total_timeout),
    Stage("recovery", "enable_recovery", 300, _recovery),
    Stage("retry", "retry_policy", 400, _retry),
    Stage("hedging", "hedging", 450, _hedging),
    Stage("circuit_breaker", "circuit_breaker", 500, _breaker),
    Stage("bulkhead", "bulkhead_config", 600, _bulkhead),
    Stage("attempt_timeout", "retry_policy.attempt_timeout", 700, _attempt_timeout),
    Stage("chaos", "chaos", 800, _chaos),
)
"""THE order, outer to inner (see the module doc)."""

_RANKS: Final = {stage.name: stage.rank for stage in STAGES}


@dataclass(frozen=True, slots=True, init=False)
class ExtraStrategy:
    """One more link for a policy, and its place among the :data:`STAGES`.

    Exactly one of ``inside``, ``outside`` and ``rank`` places it: ``inside="retry"`` nests it
    just inside the retry (it sees every attempt), ``outside="retry"`` just outside (it sees the
    execution once), ``rank=`` anywhere (the stages' ranks are 100 to 800, outer to inner). The
    place holds whether or not the named stage is in the config. At one rank, a stage is outside
    the extra links, and extra links nest in the order given.

    Args:
        link: A factory called with the policy name that returns a fresh
            :class:`~otel_resilience.engine.step.Step` for each pipeline: each policy, and each
            key of a named policy besides its unkeyed calls (a ``Step`` subclass whose
            ``__init__`` takes the name, ``lambda name: MyStep()``, a pattern's ``as_strategy``),
            run while the manager or the policy builds a pipeline (it must not call into the
            manager, nor into the policy it builds for: a call it makes could wait for that
            build, or build again); or a ``Step`` instance, which serves ONE pipeline: a link is linked once,
            so give a factory wherever the config may serve a second policy name or be rebuilt
            after its policy is evicted (an instance already linked is refused with
            ``ValueError``).
        inside: The stage just inside which the link goes.
        outside: The stage just outside which the link goes.
        rank: Its rank, outer (low) to inner (high).

    Equality: two are equal when their links are equal (a ``Step`` or a function compares by
    identity) and their ranks are; so a config built per call shares its policy when it reuses
    the same factory, not when it writes a new lambda each time.

    Raises:
        TypeError: ``link`` is neither a ``Step`` nor callable, is an async function (a
            factory is called, never awaited) or a callable that cannot take the policy name
            (a ``Step`` class whose ``__init__`` takes no name: give ``lambda name: MyStep()``),
            is a pattern or a pattern class (give its ``as_strategy``), a place is of the wrong
            type, or not exactly one place is given.
        ValueError: ``inside`` / ``outside`` names no stage.
    """

    link: Step | Callable[[str], Step]
    rank: int

    def __init__(
        self,
        link: Step | Callable[[str], Step],
        *,
        inside: str | None = None,
        outside: str | None = None,
        rank: int | None = None,
    ) -> None:
        if _is_a_pattern(link):
            raise fail("ExtraStrategy", "link", _LINK_OF_A_PATTERN, link, kind=TypeError)
        if not isinstance(link, Step) and not callable(link):
            raise fail("ExtraStrategy", "link", "a Step or a callable returning one", link, kind=TypeError)
        if not isinstance(link, Step):  # a factory: called with the policy name, never awaited
            check_sync_callable("ExtraStrategy", "link", link, what="factory")
            _check_takes_the_name(link)
        if (inside is None) + (outside is None) + (rank is None) != 2:
            msg = "ExtraStrategy needs exactly one place: inside=<stage>, outside=<stage> or rank=<int>"
            raise TypeError(msg)
        if rank is None:
            field, stage, offset = ("inside", inside, 1) if inside is not None else ("outside", outside, -1)
            rank = _stage_rank(field, stage) + offset
        elif isinstance(rank, bool) or not isinstance(rank, int):
            raise fail("ExtraStrategy", "rank", "an int", rank, kind=TypeError)
        object.__setattr__(self, "link", link)
        object.__setattr__(self, "rank", rank)


_LINK_OF_A_PATTERN: Final = (
    "a Step or a callable returning one, not a pattern: give its as_strategy (pattern.as_strategy, "
    "called with the policy name, returns a link sharing the pattern's state)"
)
"""The rule for a pattern given in place of its link: the factory of its links is its ``as_strategy``."""


def _is_a_pattern(link: object) -> bool:
    """Whether ``link`` is a pattern or a pattern class, given in place of its links' factory."""
    return isinstance(link, Pattern) or (isinstance(link, type) and issubclass(link, Pattern))


def _check_takes_the_name(factory: Callable[[str], Step]) -> None:
    """Refuse a factory that cannot be called with the policy name (a ``Step`` class taking no name).

    Checked when the place is declared, not when the first policy is built: a call with the
    name would fail there with an error naming no field. A callable whose signature cannot be
    read (some built-ins) is taken on trust.
    """
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind("policy")
    except TypeError:
        rule = (
            "a factory called with the policy name (a Step class whose __init__ takes it, "
            "or lambda name: MyStep())"
        )
        raise fail("ExtraStrategy", "link", rule, factory, kind=TypeError) from None


def _stage_rank(field: str, stage: object) -> int:
    """Return the rank of the stage named ``stage``, the value of ``ExtraStrategy.<field>``."""
    if not isinstance(stage, str):
        raise fail("ExtraStrategy", field, "a stage name (a str)", stage, kind=TypeError)
    if stage not in _RANKS:
        raise fail("ExtraStrategy", field, f"one of {', '.join(map(repr, _RANKS))}", stage)
    return _RANKS[stage]


def _extra_link(name: str, index: int, extra: ExtraStrategy) -> Step:
    """Return the link ``extra`` gives policy ``name``: its instance, or its factory's fresh one."""
    field = f"extra_strategies[{index}]"
    link = extra.link if isinstance(extra.link, Step) else extra.link(name)
    if not isinstance(link, Step):
        raise fail("ResilienceConfig", field, "a Step, or a factory returning one", link, kind=TypeError)
    if set_up(link)._linked:
        msg = (
            f"ResilienceConfig.{field}: the {link.kind} link {link.name!r} is already linked into a "
            "pipeline; a Step instance serves one policy: give a factory (a callable returning a "
            "fresh Step)"
        )
        raise ValueError(msg)
    return link


def extra_links(name: str, config: ResilienceConfig) -> tuple[tuple[int, Step], ...]:
    """Return the extra links ``config`` gives one pipeline of policy ``name``, with their ranks.

    Runs the factories of ``config.extra_strategies`` (user code): what they raise, or a link
    refused, is raised here, before anything is linked.
    """
    extras = [(extra.rank, _extra_link(name, i, extra)) for i, extra in enumerate(config.extra_strategies)]
    for index, (_, given) in enumerate(extras):
        if any(given is earlier for _, earlier in extras[:index]):  # one Step serves one place
            msg = (
                f"ResilienceConfig.extra_strategies[{index}]: the {given.kind} link {given.name!r} is "
                "given twice; a Step instance serves one place of one policy"
            )
            raise ValueError(msg)
    return tuple(extras)


def compose(
    at: StageInputs,
    *,
    register: bool = True,
    extras: tuple[tuple[int, Step], ...] | None = None,
) -> tuple[Pipeline, tuple[tuple[int, Step], ...]]:
    """Build the pipeline of :func:`build_pipeline`; return it with its extra links, outer to inner.

    The stages' links and the config's extra links are sorted by rank (stably: at one rank the
    stage first, then the extras in the order given) and linked outer to inner. ``register``:
    as :meth:`~otel_resilience.engine.pipeline.PipelineBuilder.build`. ``extras``: the extra
    links :func:`extra_links` made for this pipeline beforehand (``None``: made here).
    """
    config = at.config
    if extras is None:
        extras = extra_links(at.name, config)
    extras = tuple(sorted(extras, key=_rank))
    ranked: list[tuple[int, Step | None]] = [(stage.rank, stage.build(at)) for stage in STAGES]
    ranked.extend(extras)
    ranked.sort(key=_rank)
    builder = PipelineBuilder(
        at.name,
        clock=at.clock,
        source=TelemetrySource(
            "pipeline",
            at.name,
            at.name,
            spans=config.spans,
            metrics=config.record_duration,
            key=at.key,
            metric_key=at.metric_key,
        ),
        max_attempts=config.max_attempts_total,
    )
    for _, link in ranked:
        if link is not None:
            builder.add(link)
    pipeline = builder.build(register=register)
    if at.held:
        _HELD[pipeline] = tuple(at.held)
    return pipeline, extras


_HELD: Final[weakref.WeakKeyDictionary[Pipeline, tuple[object, ...]]] = weakref.WeakKeyDictionary()
"""What each pipeline's stages made and must keep alive for as long as the pipeline lives."""


def _rank(placed: tuple[int, object]) -> int:
    return placed[0]


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
    """Compose the patterns of ``config`` into one pipeline, in the order of :data:`STAGES`.

    Args:
        name: The policy name (operation name in telemetry).
        config: What to compose; its ``extra_strategies`` join at their ranks.
        breaker: The shared breaker to use when ``config.circuit_breaker`` is set.
        bulkhead: The shared bulkhead to use when ``config.bulkhead_config`` is set.
        recovery: The recovery system to use when ``config.enable_recovery`` is set.
        clock: The clock for timeouts, backoffs and durations.
        breakers: Finds a breaker by name for the ISOLATE rules of ``recovery`` that name one
            (a manager passes the lookup among its own breakers; default: every live breaker).
            A rule that names none isolates ``breaker``.

    Returns:
        The linked pipeline. ``Pipeline.describe()`` lists its strategies outer to inner.

    Raises:
        TypeError: ``breaker``, ``bulkhead`` or ``recovery`` is neither ``None`` nor a
            ``CircuitBreaker``, ``Bulkhead`` or ``ErrorRecoverySystem``; an extra strategy's
            factory returned something else than a ``Step``, or a ``Step`` whose class's
            ``__init__`` never called ``Step.__init__``.
        ValueError: ``breaker`` (``bulkhead``) is ``None`` while ``config.circuit_breaker``
            (``config.bulkhead_config``) is set, is given while it is ``None``, or has another
            config than it; ``recovery`` is ``None`` while ``config.enable_recovery`` is set (a
            pattern the config names is never left out, nor one it leaves out run); an extra
            strategy's ``Step`` instance is already linked into a pipeline.
    """
    _check_parts(config, breaker, bulkhead, recovery)
    return compose(StageInputs(name, config, clock, breaker, bulkhead, recovery, breakers))[0]


def _check_parts(config: ResilienceConfig, breaker: object, bulkhead: object, recovery: object) -> None:
    """Refuse a part of :func:`build_pipeline` that is not what ``config`` names (see its Raises)."""
    owner = "build_pipeline"
    shared = (
        ("breaker", breaker, CircuitBreaker, "circuit_breaker", config.circuit_breaker),
        ("bulkhead", bulkhead, Bulkhead, "bulkhead_config", config.bulkhead_config),
    )
    for argument, given, kind, field_name, wanted in shared:
        if given is not None and not isinstance(given, kind):
            raise fail(owner, argument, f"a {kind.__name__} or None", given, kind=TypeError)
        if wanted is None and given is not None:
            raise fail(owner, argument, f"None when config.{field_name} is None", given)
        if wanted is not None and given is None:
            raise fail(owner, argument, f"a {kind.__name__} when config.{field_name} is set", given)
        if given is not None and given.config != wanted:
            rule = f"a {kind.__name__} whose config is config.{field_name}"
            raise fail(owner, argument, rule, given.config)
    if recovery is not None and not isinstance(recovery, ErrorRecoverySystem):
        raise fail(owner, "recovery", "an ErrorRecoverySystem or None", recovery, kind=TypeError)
    if config.enable_recovery and recovery is None:
        raise fail(owner, "recovery", "an ErrorRecoverySystem when config.enable_recovery is set", recovery)
