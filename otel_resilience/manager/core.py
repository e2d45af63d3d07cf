"""The resilience manager: policies, their shared breakers and bulkheads, and statistics.

A *policy* is a name plus a config value; its pipeline nests the patterns in the order of
:data:`~otel_resilience.manager.stages.STAGES` (see :mod:`otel_resilience.manager.stages`).

Breakers and bulkheads are kept by name in the manager, so their state survives across calls:
the name comes from ``ResilienceConfig.circuit_breaker_name`` / ``bulkhead_name``, else from
``ResilienceConfig.name``, else from the function (see :func:`~otel_resilience.engine.naming.
callable_name`: a ``functools.partial`` is named after its function, a lambda after its module and line).

A policy's rate limiter is kept by the policy name (``ResilienceConfig.name``, else the
function's): every policy of one name takes its permits from one bucket, which outlives the
policies (a config built per call that makes a policy of its own, an evicted policy built again).

Equal configs share one policy (pipeline, counts), hashable or not. A config that differs from a
live policy's of its name makes a policy of its own, which shares the name's series and (run by
config) its breaker, bulkhead and rate limiter: a warning says so, once per name, where that
policy is made (:class:`~otel_resilience.manager.keys.ConfigNamesakes`). The manager keeps at most
``max_policies`` idle policies, breakers, bulkheads and rate limiters
(:class:`~otel_resilience.engine.store.BoundedStore`; a CLOSED breaker holding failures, and a
policy using one, go after the idle ones holding none); evicted policies' counts stay in the
``executions`` totals, and in the exported series of their name while it has a policy.
"""

from __future__ import annotations

import functools
import itertools
import threading
import weakref
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    NamedTuple,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
)

from otel_resilience.engine.calling import NeverReturns, SyncCallOfCoroutineFunction, not_callable
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, check_clock
from otel_resilience.engine.events import HUB, key_attribute
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import PIPELINES, RECOVERY_SYSTEMS
from otel_resilience.engine.step import Step
from otel_resilience.engine.store import BoundedStore, check_capacity, weak_callback
from otel_resilience.engine.validation import check_name, fail
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.keyed import breaker_holds_state, limiter_rests
from otel_resilience.manager.keys import (
    ConfigNamesakes,
    DefaultNames,
    ManagerNamesakes,
    PolicyKey,
    policy_key,
    policy_name,
)
from otel_resilience.manager.ledger import fold
from otel_resilience.manager.named import NamedPolicies
from otel_resilience.manager.policy import PolicyHandle
from otel_resilience.manager.stages import StageInputs, compose
from otel_resilience.manager.statistics import (
    EXECUTION_KEYS,
    add_counts,
    executions,
    extra_links,
    policy_counts,
)
from otel_resilience.patterns.alerts import AlertSystem, _ReportedAlerts
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitState
from otel_resilience.patterns.rate_limiter import RateLimiter
from otel_resilience.patterns.recovery import ErrorRecoverySystem

if TYPE_CHECKING:
    from otel_resilience.config import ConfigFile

__all__ = ["DEFAULT_MAX_PIPELINES", "DEFAULT_MAX_POLICIES", "ResilienceManager"]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_PIPELINES: Final = 1024
"""How many config objects a manager's identity fast path remembers."""
DEFAULT_MAX_POLICIES: Final = 256
"""How many live policies (and breakers, bulkheads and rate limiters) a manager keeps while they are idle."""

_BREAKER: Final = "circuit_breaker"
_BULKHEAD: Final = "bulkhead"
_LIMITER: Final = "rate_limiter"
_RECOVERY: Final = "recovery"
_RECOVERY_NAMING: Final = fork_safe(threading.Lock())
"""Held while a default recovery system is named and registered: two managers made at once
never take the same name."""


def _default_recovery_system(clock: Clock) -> ErrorRecoverySystem:
    """Make a manager's default recovery system, named apart from every live recovery system.

    Its name is the first of ``"recovery"``, ``"recovery-2"``, ``"recovery-3"`` … that no live
    :class:`ErrorRecoverySystem` has (it registers itself under that name before the lock is
    released). The name is what its telemetry and the alert systems tell recovery systems apart
    by (recovery rate, low-rate alert, escalation cooldown), so two managers' recoveries never
    merge; it is stable for the system's life and bounded by the number of live managers, a
    name of a system that is gone being given again (and starting clean: the alert systems
    forget the recovery rate and escalation cooldowns they kept of the system that had it).
    """
    with _RECOVERY_NAMING:
        name, number = _RECOVERY, 1
        while RECOVERY_SYSTEMS.get(name) is not None:
            number += 1
            name = f"{_RECOVERY}-{number}"
        return ErrorRecoverySystem(name, clock=clock)


class _Entry:
    """A config object's way to its policy: the fast path of a ``@resilient`` function.

    ``live`` turns ``False`` (under the manager's lock) when the entry leaves the identity
    cache or its policy is evicted, so a holder of the entry (a ``@resilient`` function) knows
    to look its pipeline up again. The entry names its policy by its key in the manager's store
    (``policy_key``), not by reference: the policy holds its entries, and a reference back would
    make a cycle that only the cyclic garbage collector frees.
    """

    __slots__ = ("config", "key", "live", "pipeline", "policy_key")

    live: bool
    pipeline: Pipeline | _Moved

    def __init__(
        self, config: ResilienceConfig, key: tuple[str, int], policy_key: PolicyKey, policy: _Policy
    ) -> None:
        self.config = config
        self.key = key
        self.policy_key = policy_key
        self.pipeline = policy.pipeline
        self.live = True

    def die(self, manager: ResilienceManager) -> None:
        """Mark the entry dead (under the manager's lock), and let go of its pipeline.

        A holder keeps a dead entry until its next call (a ``@resilient`` function called no
        more keeps it for ever): holding the pipeline would keep an evicted policy retiring,
        and its breaker and bulkhead in use, past ``max_policies``. ``live`` turns ``False``
        first, so a holder reading ``pipeline`` and then ``live`` sees either the pipeline or
        a dead entry; one that read ``live`` first and ``pipeline`` after gets a
        :class:`_Moved`, which runs the call in the policy found again.
        """
        self.live = False
        self.pipeline = _Moved(manager, self.config, self.key[0])


class _Moved:
    """A dead entry's stand-in for its pipeline: runs each call in its policy, found again.

    It holds its manager weakly: a ``@resilient`` function keeps its dead entry until its next
    call, and a manager that stopped being the process-wide one (a test's block ended) would
    otherwise live on through it, its breakers registered (and exported) beside the next
    manager's namesakes. A call that reaches it once that manager is gone (only a function
    bound by default can, in a race with the end of the block) runs in the process-wide one.
    """

    __slots__ = ("_config", "_manager", "_name")

    def __init__(self, manager: ResilienceManager, config: ResilienceConfig, name: str) -> None:
        self._manager, self._config, self._name = weakref.ref(manager), config, name

    def found(self) -> Pipeline:
        """Return the pipeline of the entry's policy now (building the policy again if evicted)."""
        manager = self._manager()
        if manager is None:
            from otel_resilience.manager.decorator import get_resilience_manager  # noqa: PLC0415 - it imports this module

            manager = get_resilience_manager()
        return manager._pipeline(self._config, self._name)

    async def execute_packed(self, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: Any) -> R:
        return await self.found().execute_packed(fn, args, kwargs)

    def execute_packed_sync(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: Any) -> R:
        return self.found().execute_packed_sync(fn, args, kwargs)


@dataclass(eq=False, slots=True)
class _Policy:
    """One live policy: a (name, config value) pair, its pipeline, and what it holds."""

    name: str
    config: ResilienceConfig
    pipeline: Pipeline
    breaker: CircuitBreaker | None
    bulkhead: Bulkhead | None
    extras: tuple[tuple[int, Step], ...]
    limiter: RateLimiter | None
    entries: set[_Entry] = field(default_factory=set)
    seen_total: int = 0

    def users(self) -> tuple[tuple[str, str], ...]:
        """The shared breaker, bulkhead and rate limiter it uses, as ``ResilienceManager._users`` counts them.

        Made when asked (at its creation and its eviction), not kept: a live policy holds no copy.
        """
        used: list[tuple[str, str]] = []
        if self.breaker is not None:
            used.append((_BREAKER, self.breaker.name))
        if self.bulkhead is not None:
            used.append((_BULKHEAD, self.bulkhead.name))
        if self.limiter is not None:
            used.append((_LIMITER, self.limiter.name))
        return tuple(used)


class _Retiring(NamedTuple):
    """An evicted policy whose pipeline may still run a call: its counts, what it uses, its config."""

    carrier: Pipeline
    """Exported in the pipeline's place from its eviction on: empty, it counts in the pipeline's
    stats (the same object), which a call still running there moves."""
    users: tuple[tuple[str, str], ...]
    """The breaker, bulkhead and rate limiter it uses (as ``_users`` counts them): released once
    it is gone."""
    config: ResilienceConfig
    """Its config: a config of its name still run, which a new policy of the name is checked
    against (:meth:`ResilienceManager._policy_config`) until it is gone."""


class _Configured(Protocol):
    """A shared pattern instance: a breaker or a bulkhead."""

    @property
    def config(self) -> object: ...


S = TypeVar("S", bound=_Configured)


def _shared(
    store: BoundedStore[str, S],
    kind: Callable[..., S],
    name: str,
    config: object,
    clock: Clock,
    *,
    evict: bool,
) -> S:
    """Return the breaker or bulkhead named ``name`` from ``store``, made on first use with ``config``.

    Raises:
        TypeError: ``name`` is no ``str`` (named after the look-up refused it, so a look-up pays
            nothing for the check: an unhashable one failed as a key, unnamed).
        ValueError: It exists with a different config (the policy must name its own).
    """
    try:
        shared, created = store.get_or_add(name, lambda: kind(name, config, clock=clock), evict=evict)
    except TypeError:
        given: object = name
        if isinstance(given, str):
            raise
    else:
        if not created and config is not None and shared.config != config:
            what, field, _ = _SHARED_NAMES[kind]
            msg = f"{what} {name!r} already exists with a different config; give this policy its own {field}"
            raise ValueError(msg)
        return shared
    check_name(_SHARED_NAMES[kind][2], "name", given)  # raises, unchained
    raise AssertionError("unreachable")


_SHARED_NAMES: Final[dict[object, tuple[str, str, str]]] = {
    CircuitBreaker: ("circuit breaker", "circuit_breaker_name", "ResilienceManager.get_circuit_breaker"),
    Bulkhead: ("bulkhead", "bulkhead_name", "ResilienceManager.get_bulkhead"),
    RateLimiter: ("rate limiter", "name", "ResilienceManager.policy"),
}
"""How an error names each kind of shared instance, the config field that names it, and the
method whose ``name`` a refusal of one that is no ``str`` names."""


def _breaker_idle(users: Counter[tuple[str, str]], breaker: CircuitBreaker) -> bool:
    """A breaker may go when no policy uses it (none in ``users``) and it is CLOSED.

    A policy uses it while it is live, and once evicted until its pipeline is gone.
    """
    return (_BREAKER, breaker.name) not in users and breaker.peek_state() is CircuitState.CLOSED


def _bulkhead_rests(bulkhead: Bulkhead) -> bool:
    """Whether ``bulkhead`` holds and queues no call.

    Read without the bulkhead's lock: ``waiting`` first, as a queued call moves from ``waiting``
    to ``active`` (never back), so a call moving between the two reads is seen in one of them.
    """
    stats = bulkhead.stats
    return not stats.waiting and not stats.active


def _bulkhead_idle(users: Counter[tuple[str, str]], bulkhead: Bulkhead) -> bool:
    """A bulkhead may go when no policy uses it (none in ``users``, as for a breaker) and it rests."""
    return (_BULKHEAD, bulkhead.name) not in users and _bulkhead_rests(bulkhead)


def _limiter_idle(users: Counter[tuple[str, str]], limiter: RateLimiter) -> bool:
    """A rate limiter may go when no policy uses it (none in ``users``, as for a breaker) and it rests."""
    return (_LIMITER, limiter.name) not in users and limiter_rests(limiter)


def _policy_idle(policy: _Policy) -> bool:
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
    if breaker is not None and breaker.peek_state() is not CircuitState.CLOSED:
        return False
    return bulkhead is None or _bulkhead_rests(bulkhead)


def _policy_holds_failures(policy: _Policy) -> bool:
    """Whether an idle policy's breaker holds failures (:func:`breaker_holds_state`).

    Such a policy is evicted past the cap only after the idle policies whose breaker holds none
    (as for the breakers): while it is live its breaker is in use, so kept with it.
    """
    breaker = policy.breaker
    return breaker is not None and breaker_holds_state(breaker)


_GONE: Final = _Entry.__new__(_Entry)
"""A dead entry (never in a cache, no pipeline): what a ``@resilient`` function starts from."""
_GONE.live = False


class ResilienceManager(NamedPolicies):
    """Runs calls through the patterns a :class:`ResilienceConfig` names, and keeps their state.

    A *policy* is a policy name with one config value: configs that are equal (by value,
    whether or not they are hashable) share one policy, its pipeline and its counts. The
    manager keeps at most ``max_policies`` live policies, and as many breakers, bulkheads and
    rate limiters; past the cap, the least recently created or used **idle** ones are evicted
    (a policy whose breaker is not CLOSED or whose bulkhead holds or queues a call is not idle;
    neither is a rate limiter whose bucket is not full or that has a waiter, nor a breaker,
    bulkhead or limiter a live policy uses, nor one an evicted policy's pipeline, not gone yet,
    uses: a call may still run in it). A CLOSED breaker holding failures, and a policy whose
    breaker holds some, go only after the idle ones holding none, and only while more than
    ``max_policies`` of them (16 at most, :data:`~otel_resilience.engine.store.HELD_LOOKS`)
    are kept. The counts of an evicted policy are folded into the
    ``executions`` totals, so nothing counted is lost. A policy's rate limiter is kept by the
    policy's name, as its breaker and bulkhead are: the policies of one name share its permits.
    Two live configs that differ under one policy name (or a named policy beside another config
    of its name) are logged once per name, as a warning naming the fields that differ, when the
    second policy is made; so is a policy whose name another live manager has a policy of (the
    two share its telemetry series, whose counters go down when either manager is freed). See
    ``docs/design.md``.

    Named policies (:meth:`policy`, :meth:`reconfigure`) are the other way in: a handle per
    name, with state per key and a config that can change while calls run.

    Args:
        recovery_system: The recovery rules used when ``enable_recovery`` is set (default: a new
            :class:`ErrorRecoverySystem` with **no rule**: register rules on it, or recovery
            does nothing; one warning is logged the first time a policy, of any kind, enables
            it without a rule). One given must run on ``clock``. The default one is named
            ``"recovery"``, or ``"recovery-2"``, ``"recovery-3"`` … when a live recovery system
            already has that name (another manager's): the first name no live one has, so that
            managers' recovery rates, their alerts and escalation cooldowns, which are kept by
            name, never merge. Give one of your own to choose the name.
        alert_system: The alert system whose counts :meth:`get_resilience_statistics` reports
            (default: the process-wide one, :func:`~otel_resilience.default_alert_system`; an
            alert system of the application listening on the global hub stands in for it, so
            that no second one reports every alert twice). An alert system hears every pattern
            that reports on its hub, this manager's and any other's: its alerts are not only
            this manager's. Closed later (:meth:`AlertSystem.close`), it stops hearing them: the
            manager then reports the alert system that stands in for the process-wide one (made
            if none listens), and its ``alerts`` counts carry on from the closed one's, none lost
            or counted twice; leaving the alert system given is logged once, as a warning.
        clock: The clock for every pattern the manager creates.
        max_pipelines: How many config objects the identity fast path remembers (default 1024).
        max_policies: How many live policies, and how many breakers, bulkheads and rate
            limiters, the manager keeps while they are idle (default :data:`DEFAULT_MAX_POLICIES`).

    Attributes:
        recovery_system: The manager's error recovery system: register rules on it (read-only:
            the one given, checked here, or the manager's own).
        alert_system: The alert system the manager's statistics report now (read-only: the
            one given, or its successor once it was closed).

    Raises:
        ValueError: ``max_pipelines`` or ``max_policies`` is an int < 1.
        TypeError: ``max_pipelines`` or ``max_policies`` is not an int; ``recovery_system``,
            ``alert_system`` or ``clock`` is not one (the message names
            ``ResilienceManager.<field>``).
        ValueError: ``recovery_system`` runs on another clock than ``clock`` (its re-runs' delays
            and their room before a policy's deadline are read on its clock); ``alert_system``
            does not listen on the global hub (closed, or made with another ``hub``), where the
            manager's patterns report.
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
        check_capacity("ResilienceManager", "max_pipelines", max_pipelines)
        check_clock("ResilienceManager", clock)
        for part, value, kind in (
            ("recovery_system", recovery_system, ErrorRecoverySystem),
            ("alert_system", alert_system, AlertSystem),
        ):
            if value is not None and not isinstance(value, kind):
                raise fail("ResilienceManager", part, f"an {kind.__name__} or None", value, kind=TypeError)
        if alert_system is not None and not HUB.listens(alert_system):
            # Its counts are the statistics' alerts: one that hears none of the manager's
            # patterns (they report on the global hub) would report 0 alerts for ever.
            rule = "an AlertSystem listening on the global hub (not closed, made with the default hub)"
            raise fail("ResilienceManager", "alert_system", rule, alert_system)
        if recovery_system is not None and recovery_system.clock is not clock:
            # Its re-runs wait and measure their room before the policy's deadline on its clock.
            rule = "an ErrorRecoverySystem on the manager's clock (ErrorRecoverySystem(clock=...))"
            raise fail("ResilienceManager", "recovery_system", rule, recovery_system)
        self._recovery_system = (
            recovery_system if recovery_system is not None else _default_recovery_system(clock)
        )
        self._alerts = _ReportedAlerts(alert_system)
        self._clock = clock
        self._lock = fork_safe(threading.Lock())
        self._max_pipelines = max_pipelines
        self._by_id: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        # What the manager owns refers back to it weakly or not at all (its stores' rules get
        # what they read, not the manager), so a manager dropped is freed at once, by reference
        # counting: its breakers and bulkheads leave the registries with it.
        self._users: Counter[tuple[str, str]] = Counter()
        self._policies: BoundedStore[PolicyKey, _Policy] = BoundedStore(
            "ResilienceManager",
            "max_policies",
            max_policies,
            is_idle=_policy_idle,
            holds_state=_policy_holds_failures,
            on_evict=weak_callback(self._policy_evicted),
        )
        self._breakers: BoundedStore[str, CircuitBreaker] = BoundedStore(
            "ResilienceManager",
            "max_policies",
            max_policies,
            is_idle=functools.partial(_breaker_idle, self._users),
            holds_state=breaker_holds_state,
            revive=True,
        )
        self._bulkheads: BoundedStore[str, Bulkhead] = BoundedStore(
            "ResilienceManager",
            "max_policies",
            max_policies,
            is_idle=functools.partial(_bulkhead_idle, self._users),
            revive=True,
        )
        self._limiters: BoundedStore[str, RateLimiter] = BoundedStore(
            "ResilienceManager",
            "max_policies",
            max_policies,
            is_idle=functools.partial(_limiter_idle, self._users),
        )
        self._find_breaker = self._breakers.get
        self._retire_ids = itertools.count()
        self._retiring: dict[int, _Retiring] = {}
        self._dead: deque[int] = deque()
        self._retired = dict.fromkeys(EXECUTION_KEYS, 0)
        self._named: Counter[str] = Counter()  # the policies of each name, live or retiring
        self._exported: dict[str, Pipeline] = {}  # the gone policies' executions, by name
        self._handles: dict[str, PolicyHandle] = {}
        self._handles_lock = fork_safe(threading.Lock())
        self._commit_lock = fork_safe(threading.Lock())
        self._applied_files: dict[str, ConfigFile] = {}
        self._default_names = DefaultNames()
        self._namesakes = ConfigNamesakes()
        self._managers = ManagerNamesakes(self._named, self._handles)

    recovery_system = ReadOnly[ErrorRecoverySystem](
        "_recovery_system", "The manager's error recovery system (register rules on it); read-only."
    )

    @property
    def alert_system(self) -> AlertSystem:
        """The alert system whose counts :meth:`get_resilience_statistics` reports now.

        The one given (or the process-wide one) while it listens; once it is closed, the one
        that stands in for the process-wide system, the counts carried on (see ``alert_system``
        in the class docstring).
        """
        return self._alerts.system()

    # ------------------------------------------------------------------ shared instances

    def get_circuit_breaker(self, name: str, config: CircuitBreakerConfig | None = None) -> CircuitBreaker:
        """Return the breaker named ``name``, creating it with ``config`` on first use.

        Raises:
            TypeError: ``name`` is not a ``str`` (an unhashable one too, which fails as a key:
                named after the refusal, so a lookup pays nothing for it).
            ValueError: If a breaker of that name exists with a different config.
        """
        with self._lock:
            return self._breaker_locked(name, config, evict=True)

    def get_bulkhead(self, name: str, config: BulkheadConfig | None = None) -> Bulkhead:
        """Return the bulkhead named ``name``, creating it with ``config`` on first use.

        Raises:
            TypeError: ``name`` is not a ``str`` (an unhashable one too, which fails as a key:
                named after the refusal, so a lookup pays nothing for it).
            ValueError: If a bulkhead of that name exists with a different config.
        """
        with self._lock:
            return self._bulkhead_locked(name, config, evict=True)

    def _breaker_locked(
        self, name: str, config: CircuitBreakerConfig | None, *, evict: bool
    ) -> CircuitBreaker:
        return _shared(self._breakers, CircuitBreaker, name, config, self._clock, evict=evict)

    def _bulkhead_locked(self, name: str, config: BulkheadConfig | None, *, evict: bool) -> Bulkhead:
        return _shared(self._bulkheads, Bulkhead, name, config, self._clock, evict=evict)

    # ------------------------------------------------------------------ the bounded stores' rules

    def _policy_evicted(self, _key: PolicyKey, policy: _Policy) -> None:
        """Retire an evicted policy (under the manager's lock): its counts join the totals.

        A call may still be running in the evicted pipeline (a policy with no bulkhead looks
        idle while its call runs): its stats are read as they are until the pipeline is gone,
        and only then folded into the retired totals; until then the pipeline still uses its
        breaker and bulkhead, so they are released only then too (a breaker that call opens
        is kept, as any OPEN breaker). In telemetry, a carrier that counts in those stats takes
        the pipeline's place at once (:meth:`_fold_dead_locked` says why).
        """
        for entry in policy.entries:
            entry.die(self)
            if self._by_id.get(entry.key) is entry:
                del self._by_id[entry.key]
        policy.entries.clear()
        pipeline = policy.pipeline
        carrier = pipeline.carrier()
        carrier.stats = pipeline.stats
        PIPELINES.replace((pipeline,), lambda: carrier, findable=False, announce=False)
        retire_id = next(self._retire_ids)
        self._retiring[retire_id] = _Retiring(carrier, policy.users(), policy.config)
        weakref.finalize(pipeline, self._dead.append, retire_id).atexit = False
        self._fold_dead_locked()

    def _release(self, user: tuple[str, str]) -> None:
        """One policy fewer uses the breaker or bulkhead ``user`` names."""
        users = self._users
        users[user] -= 1
        if users[user] <= 0:
            del users[user]

    def _fold_dead_locked(self) -> None:
        """Fold the counts of retired pipelines that are gone into the retired totals.

        The breakers and bulkheads they used are released then (:meth:`_policy_evicted`).
        """
        dead, retiring, retired = self._dead, self._retiring, self._retired
        while dead:
            gone = retiring.pop(dead.popleft())
            add_counts(retired, gone.carrier.stats.as_dict())
            self._fold_exported_locked(gone.carrier)
            for user in gone.users:
                self._release(user)

    def _fold_exported_locked(self, retired: Pipeline) -> None:
        """Move a gone policy's exported executions into the carrier of its name, in one step.

        Policies of one name share its ``resilience.executions`` series (configs built per call
        that differ, a new fallback function each, make a policy each): a gone one's counts must
        stay in it while the name has a policy, live or retiring, or the series would go down
        (a counter reset to a backend). So ``retired`` (:meth:`_policy_evicted`'s carrier, whose
        counts are final now) and the name's carrier leave the registry, and a new carrier
        holding both enters it, in one step (:func:`~otel_resilience.manager.ledger.fold`).
        Once the name has no policy left, that carrier is let go too: its series ends (used
        again, the name starts from zero), so the manager keeps a carrier per name it has a
        policy of, within its cap.
        """
        name = retired.name
        self._named[name] -= 1
        old = self._exported.get(name)
        carrier = retired.carrier()

        def fill() -> None:
            carrier.stats.absorb(retired.stats)
            if old is not None:
                carrier.stats.absorb(old.stats)

        fold(PIPELINES, retired, old, carrier, fill)
        if self._named[name] > 0:
            self._exported[name] = carrier
            return
        del self._named[name]
        self._exported.pop(name, None)
        PIPELINES.unregister(carrier)

    # ------------------------------------------------------------------ policies

    def pipeline_for(self, config: ResilienceConfig, name: str) -> Pipeline:
        """Return the pipeline that runs calls named ``name`` under ``config``.

        The same config object finds its pipeline by identity (no hashing on the hot path). A
        new config object that is *equal* to one seen before (a config built per call, even one
        holding a dict or a list) shares that pipeline, so its state and statistics carry on
        instead of starting afresh.

        Raises:
            TypeError: ``config`` is not a ResilienceConfig, or ``name`` not a ``str``.
            ValueError: ``name`` is empty or blank, or longer than a telemetry attribute
                (``"ResilienceManager.pipeline_for.name must be ..."``): the rule of every
                name given (:func:`~otel_resilience.engine.validation.check_name`).
        """
        check_name("ResilienceManager.pipeline_for", "name", name)
        return self._pipeline(config, name)

    def _pipeline(self, config: ResilienceConfig, name: str) -> Pipeline:
        """Return the pipeline of the cache entry of ``config`` and ``name`` (``name`` unchecked)."""
        while True:
            pipeline = self._entry_for(config, name).pipeline
            if not isinstance(pipeline, _Moved):  # else its entry died as it was read: find it again
                return pipeline

    def _entry_for(self, config: ResilienceConfig, name: str, fn: Callable[..., Any] | None = None) -> _Entry:
        """Return the cache entry of :meth:`pipeline_for` (building its policy if needed).

        ``fn``, the function a call runs, is given by a call that named the policy after it:
        once the config object is new to the cache, the function takes its default name
        (:class:`~otel_resilience.manager.keys.DefaultNames`). A policy built here while its name
        has another (a different config, or the named policy of that name) is checked against
        it (:class:`~otel_resilience.manager.keys.ConfigNamesakes`); a config found is not.
        """
        key = (name, id(config))
        entry = self._by_id.get(key)
        if entry is not None and entry.config is config and entry.live:
            return entry
        if not isinstance(config, ResilienceConfig):
            raise _not_a_config(config)
        # The policy's own name: a function's (a config without one) may be too long for one, and
        # is cut by a long key's rule; a configured name never is (refused past the limit). Here,
        # past the look-up, a call that finds its policy pays nothing for it.
        name = key_attribute(name)
        if fn is not None:
            self._default_names.take(config, name, fn)
        value_key = policy_key(name, config)
        with self._lock:
            entry = self._by_id.get(key)
            if entry is not None and entry.config is config and entry.live:
                return entry
            if entry is not None:  # the id of a config object that is gone, reused
                self._drop_entry_locked(entry)
            policy, created = self._policies.get_or_add(value_key, lambda: self._build_locked(config, name))
            entry = self._by_id[key] = _Entry(config, key, value_key, policy)
            policy.entries.add(entry)
            while len(self._by_id) > self._max_pipelines:
                self._drop_entry_locked(next(iter(self._by_id.values())))
            if not created:
                return entry
            self._fold_dead_locked()  # the pipelines it evicted are gone: their users too
            self._breakers.trim()
            self._bulkheads.trim()
            self._limiters.trim()
            namesakes = self._named[name] > 1 or name in self._handles
        if namesakes and not self._namesakes.told(name):  # another policy has its name
            handle = self._handles.get(name)
            others = (self._policy_config(name, besides=config), None if handle is None else handle.config)
            self._namesakes.check(name, config, [other for other in others if other is not None])
        self._managers.check(name)
        return entry

    def _policy_config(self, name: str, besides: ResilienceConfig | None = None) -> ResilienceConfig | None:
        """The config of a policy named ``name`` that runs by config (not ``besides``), or ``None``.

        A live policy's, else a retiring one's (evicted, its pipeline not gone: a call may still
        run under its config), as ``_named`` counts them. Any one will do: until the name is
        warned about (:class:`ConfigNamesakes`), every such policy of the name has one config, as
        each was checked against the others when it was made.
        """
        if not self._named.get(name):
            return None
        for policy in self._policies.values():
            if policy.name == name and policy.config is not besides:
                return policy.config
        with self._lock:
            self._fold_dead_locked()  # a pipeline gone runs no call: its config is no longer run
            for gone in self._retiring.values():
                if gone.carrier.name == name and gone.config is not besides:
                    return gone.config
        return None

    def _unbind(self) -> None:
        """Forget every identity-cache entry (the policies stay): each holder looks its policy up again.

        When the manager stops being the process-wide one, the ``@resilient`` functions bound to
        it by default then run in the one that takes its place from their next call.
        """
        with self._lock:
            for entry in list(self._by_id.values()):
                self._drop_entry_locked(entry)

    def _drop_entry_locked(self, entry: _Entry) -> None:
        """Forget an identity-cache entry (its policy stays)."""
        entry.die(self)
        del self._by_id[entry.key]
        policy = self._policies.get(entry.policy_key)  # kept while its entries are cached
        if policy is not None:
            policy.entries.discard(entry)

    def _build_locked(self, config: ResilienceConfig, name: str) -> _Policy:
        """Compose a new policy for ``config``, with the shared breaker, bulkhead and rate limiter."""
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
        limiter = None
        if config.rate_limiter is not None:
            limiter = _shared(
                self._limiters, RateLimiter, name, config.rate_limiter, self._clock, evict=False
            )
        recovery, breakers = self._recovery_system, self._find_breaker
        pipeline, extras = compose(
            StageInputs(name, config, self._clock, breaker, bulkhead, recovery, breakers, limiter)
        )
        policy = _Policy(name, config, pipeline, breaker, bulkhead, extras, limiter)
        self._users.update(policy.users())
        self._named[pipeline.name] += 1
        return policy

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
                :class:`~otel_resilience.errors.BulkheadFullError`,
                :class:`~otel_resilience.errors.RateLimitedError` or
                :class:`~otel_resilience.errors.OperationTimeoutError` when a pattern refused;
                :class:`~otel_resilience.errors.RecoveryEscalatedError` when an ESCALATE
                recovery rule covered the error.
        """
        if not callable(fn):
            raise not_callable("ResilienceManager.execute_with_resilience", fn)
        pipeline = self._entry_for(config, policy_name(config, fn), fn).pipeline
        return await pipeline.execute_packed(fn, args, kwargs)

    @overload
    def execute_with_resilience_sync(
        self, fn: Callable[P, NeverReturns], config: ResilienceConfig, /, *args: P.args, **kwargs: P.kwargs
    ) -> NeverReturns: ...
    @overload
    def execute_with_resilience_sync(
        self,
        fn: Callable[P, Coroutine[Any, Any, Any]],
        config: ResilienceConfig,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> SyncCallOfCoroutineFunction: ...
    @overload
    def execute_with_resilience_sync(
        self, fn: Callable[P, R], config: ResilienceConfig, /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    def execute_with_resilience_sync(
        self,
        fn: Callable[P, R],
        config: ResilienceConfig,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run ``fn(*args, **kwargs)`` in the calling thread under every pattern ``config`` names.

        Typed as :meth:`Pattern.run_sync <otel_resilience.engine.facade.Pattern.run_sync>` is.

        Sync timeouts cannot pre-empt a thread: deadlines are enforced between attempts and when
        the call returns, and published through
        :func:`otel_resilience.current_deadline` for the callee to honour.

        Raises:
            TypeError: If ``fn`` is not callable, ``config`` is not a ResilienceConfig, or
                ``config`` hedges (hedging is async only).
            Exception: As :meth:`execute_with_resilience`.
        """
        if not callable(fn):
            raise not_callable("ResilienceManager.execute_with_resilience_sync", fn)
        pipeline = self._entry_for(config, policy_name(config, fn), fn).pipeline
        return pipeline.execute_packed_sync(fn, args, kwargs)

    # ------------------------------------------------------------------ statistics

    def get_resilience_statistics(self) -> dict[str, Any]:
        """Return execution, breaker, bulkhead, rate limiter, extra link, recovery and alert statistics.

        ``executions`` sums every policy, evicted ones included: ``total`` = ``successful`` +
        ``fallback`` + ``failed`` + ``cancelled``; ``successful`` = ``successful_first_attempt``
        (the function answered at once) + ``successful_after_failure`` (it answered after a
        failed attempt: a retry or a recovery re-run); ``rejected`` and ``timeouts`` are the
        parts of ``failed`` that were rejections and timeouts; ``success_rate`` = successful /
        total and ``availability`` = (successful + fallback) / total (1.0 before any execution).

        ``policies`` has the same counts for each live policy name; ``circuit_breakers``,
        ``bulkheads`` and ``rate_limiters`` each live one's ``get_stats()`` by its name (a
        limiter's is its policy's); ``extra_strategies`` the links that
        ``ResilienceConfig.extra_strategies`` added to each live policy name, outer to inner,
        as ``{"kind", "name", "rank"}`` plus ``"stats"``, the link's ``get_stats()``, when it
        has one (``"stats_error"`` in its place, the error's repr, when that raised: logged,
        never raised here), a named policy's too: the links of its unkeyed calls, then of
        each live key, each entry with a ``"key"`` (``None`` for the unkeyed calls, else the
        key's text); ``error_recovery`` the recovery system's
        (``successful_recoveries`` counts recovery *actions* that worked, a different thing
        from ``successful_after_failure``);
        ``limits`` the cap, and how many policies, breakers, bulkheads and rate limiters are kept
        and were evicted; ``named_policies`` each named policy's
        ``get_stats()`` (see :meth:`PolicyHandle.get_stats`), whose executions are in
        ``executions`` too.
        """
        with self._lock:
            self._fold_dead_locked()
            live = list(self._policies.values())
            retiring = [gone.carrier.stats for gone in self._retiring.values()]
            totals = dict(self._retired)
            breakers = self._breakers.items()
            bulkheads = self._bulkheads.items()
            limiters = self._limiters.items()
            limits = {
                "max_policies": self._policies.capacity,
                "policies": len(self._policies),
                "evicted_policies": self._policies.evicted,
                "circuit_breakers": len(self._breakers),
                "evicted_circuit_breakers": self._breakers.evicted,
                "bulkheads": len(self._bulkheads),
                "evicted_bulkheads": self._bulkheads.evicted,
                "rate_limiters": len(self._limiters),
                "evicted_rate_limiters": self._limiters.evicted,
            }
        policies = policy_counts(live, totals)
        named = self._named_statistics(totals)
        return {
            "executions": executions(retiring, totals),
            "policies": policies,
            "circuit_breakers": {name: breaker.get_stats() for name, breaker in breakers},
            "bulkheads": {name: bulkhead.get_stats() for name, bulkhead in bulkheads},
            "rate_limiters": {name: limiter.get_stats() for name, limiter in limiters},
            "extra_strategies": extra_links(live, self._named_links()),
            "error_recovery": self._recovery_system.get_stats(),
            "alerts": self._alerts.get_stats(),
            "limits": limits,
            "named_policies": named,
        }

    def __repr__(self) -> str:
        policies = self._policies
        return (
            f"ResilienceManager(policies={len(policies)}/{policies.capacity}, "
            f"named_policies={len(self._handles)}, circuit_breakers={len(self._breakers)}, "
            f"bulkheads={len(self._bulkheads)})"
        )


def _not_a_config(config: object) -> TypeError:
    """Build the error for a ``config`` that is not a ResilienceConfig (the fix, for a policy handle)."""
    rule = "a ResilienceConfig"
    if isinstance(config, PolicyHandle):
        rule += " (a policy handle runs calls itself: handle.execute(fn, ...), execute_sync)"
    return cast("TypeError", fail("ResilienceManager", "config", rule, config, kind=TypeError))
