"""One key of a policy: its breaker, bulkhead, rate limiter and pipeline, built, reloaded, retired.

What a key means for each stage of :data:`~otel_resilience.manager.stages.STAGES`:

* **per key**: the circuit breaker, the bulkhead and the rate limiter: the stages that hold
  state about the dependency (is it failing, how busy is it, how often is it called), which is
  what a key (a host, a tenant) tells apart;
* **per policy**: the retry budget, the hedging delay generator and the fallback's cache service
  (objects of the config, shared by identity), and the recovery system (the manager's). The
  other stages (fallback, timeouts, retry, hedging, chaos, recovery, extra strategies) hold no
  state of their own between calls: every key's pipeline has its own links,
  built from the same config. The chaos links of a policy draw from its random generator
  (:attr:`Spec.draws`, one per seed a live link draws from, kept across reloads): a seeded
  ``fault_rate`` is the share of the policy's runs, whatever their keys, and a key made again
  does not replay its first draws. A ``CACHED_VALUE`` fallback reads and writes under
  ``"<cache_key>:<key>"`` in a key's pipeline (:func:`key_config`): a tenant is never answered
  with another tenant's last value.

The state of one key (:class:`KeyState`) also counts the calls running through it, without a
lock (:meth:`KeyState.enter` / :attr:`KeyState.leave`), so that a key is evicted only while no
call runs in it (see :meth:`KeyState.retire_if_idle`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from otel_resilience.engine.clock import Clock
from otel_resilience.engine.closing import give_back
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import key_attribute
from otel_resilience.engine.facade import Pattern, not_in_use
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import PIPELINES, NamesakeOwner, namesakes_expected
from otel_resilience.engine.shared import shared_key
from otel_resilience.engine.store import InUse
from otel_resilience.manager.ledger import LINK_TOTALS
from otel_resilience.manager.stages import StageInputs, compose, extra_links
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.chaos.rules import SharedDraws
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitState
from otel_resilience.patterns.fallback import FallbackStrategy
from otel_resilience.patterns.rate_limiter import RateLimiter, RateLimiterConfig

C = TypeVar("C")
S = TypeVar("S", bound="_Carried[Any]")
T = TypeVar("T")
OwnedT = TypeVar("OwnedT", bound="Pattern[Any, Any]")

if TYPE_CHECKING:
    from otel_resilience.engine.step import Step
    from otel_resilience.manager.config import ResilienceConfig
    from otel_resilience.manager.ledger import Ledger
    from otel_resilience.patterns.recovery import ErrorRecoverySystem

__all__ = [
    "KeyState",
    "Spec",
    "breaker_holds_state",
    "build",
    "key_config",
    "key_links",
    "limiter_rests",
    "reconfigure",
    "retire",
    "stage_links",
]


@dataclass(frozen=True, slots=True)
class Spec:
    """What a policy's keys are built from: its name and config at one generation, and the manager's parts.

    Attributes:
        name: The policy name.
        config: The policy's config.
        generation: The config's number (1 for the first; each reload adds one).
        clock: The manager's clock.
        recovery: The manager's recovery system.
        breakers: Finds a breaker by name for the recovery rules that isolate one.
        owner: The policy's token, the same at every generation: its keys' instances are
            registered under it (:func:`~otel_resilience.engine.registry.namesakes_expected`),
            so they are no namesakes of each other, but a namesake of anyone else's is warned about.
        draws: The random generators its keys' chaos links share, the same at every generation.
        kept: Whether the policy keeps a key's state now (:meth:`PolicyHandle._keeps`, through a
            weak reference to the policy: asked under none of its locks, by an operator's action
            on a key's breaker whose key looked evicted, :func:`_holding`); ``None`` (no policy
            yet) leaves its keys' breakers unheld.
    """

    name: str
    config: ResilienceConfig
    generation: int
    clock: Clock
    recovery: ErrorRecoverySystem
    breakers: Callable[[str], CircuitBreaker | None]
    owner: NamesakeOwner = dataclasses.field(default_factory=NamesakeOwner, compare=False, repr=False)
    draws: SharedDraws = dataclasses.field(default_factory=SharedDraws, compare=False, repr=False)
    kept: Callable[[KeyState], bool] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def breaker_name(self) -> str:
        """The name of every key's breaker."""
        return self.config.circuit_breaker_name or self.name

    @property
    def bulkhead_name(self) -> str:
        """The name of every key's bulkhead."""
        return self.config.bulkhead_name or self.name


def breaker_holds_state(breaker: CircuitBreaker) -> bool:
    """Whether an idle breaker holds state a new one would not: failures or slow calls, or not CLOSED.

    The one rule of what a breaker would lose if evicted, for the manager's breakers and
    policies and for a policy's keys: such a breaker (and what keeps it) is evicted past the cap
    only after the idle ones holding none, and only while more than the cap of them (16 at
    most) are kept (``BoundedStore(holds_state=...)``), so that churn through other names or keys does not
    wipe a failing (or slow: its sliding window's slow calls) dependency's count towards its
    opening, nor the HALF_OPEN probe of a key whose OPEN period is over (made again, it would
    be CLOSED). Read without the breaker's lock, as its
    state is (under the store's lock nothing else is taken): a time window's count is the one of
    its last call or read (a metrics collection reads it).
    """
    return (
        breaker.peek_state() is not CircuitState.CLOSED
        or breaker.stats.failure_count > 0
        or breaker._holds_slow_calls()
    )


def limiter_rests(limiter: RateLimiter) -> bool:
    """Whether ``limiter`` is as a new one would be: nobody waits, and its bucket is full.

    A limiter that gave permits lately is kept (as an OPEN breaker is): a new one would hand out
    a full bucket at once, over the rate. A limiter whose permits a store shares (Redis) keeps
    them there: only its waiters hold it.
    """
    if limiter.waiting:
        return False
    config = limiter.config
    return config.store is not None or limiter.available >= config.burst


def _held_outside_calls(instance: CircuitBreaker | Bulkhead | RateLimiter | Step | None) -> bool:
    """Whether a bulkhead has a slot held or waited for, a limiter a permit waited for, or a breaker a block.

    What holds them outside the policy's calls is a block run with the instance itself (a
    ``view.bulkhead.slot()`` block, a wait in ``view.rate_limiter.guard()``, a
    ``view.circuit_breaker.guard()`` block or call). Such a block also counts itself into the
    key from before it asks for its slot or permit (:func:`_holding`), but the fold of a
    replaced instance does not wait for the key's calls once no pipeline a reload replaced is
    left: such an instance is neither folded while a block holds it (:func:`_fold_replaced`),
    as what the block counts at its end would be lost, nor evicted with its key
    (:meth:`KeyState.idle`). A breaker's blocks hold nothing it counts before they end: its
    hold counts those running (:class:`_Hold`), from before a block looks whether the breaker
    is still the key's.
    """
    if isinstance(instance, Bulkhead):
        stats = instance.stats
        return bool(stats.active or stats.waiting)
    if isinstance(instance, CircuitBreaker):
        hold = instance._holder()
        return isinstance(hold, _Hold) and hold.blocks() > 0
    return isinstance(instance, RateLimiter) and instance.waiting > 0


_RESTING: Final = frozenset((CircuitState.CLOSED, CircuitState.HALF_OPEN))
"""The breaker states a key may be evicted in (:meth:`KeyState.retire_if_idle`)."""


class KeyState(InUse):
    """One key's breaker, bulkhead, rate limiter and pipeline, and the calls running through them.

    A call counts itself in (:meth:`enter`) and out (:attr:`leave`) as the entry of a store
    (:class:`~otel_resilience.engine.store.InUse`), so that the key is evicted only while
    :meth:`idle` (:meth:`retire_if_idle`, the policy's store's ``is_idle``).

    Attributes:
        key: The key the policy keeps the state under: its text, ``str(key)``
            (:func:`~otel_resilience.engine.store.key_text`; ``None`` for the unkeyed calls).
        text: The key's text, what the key is written as: the span attribute of its executions,
            its rejections' ``key``, its cached fallback value's key, its shared-store name
            (``None`` when unkeyed).
        metric_key: The metric attribute of its executions, where the policy opted in.
        generation: The policy generation its pipeline was built for.
        pipeline: Its pipeline (replaced by a reload; the calls in flight keep theirs).
        extras: The extra links of :attr:`pipeline` (``ResilienceConfig.extra_strategies``),
            with their ranks, outer to inner: what the manager's statistics list.
        breaker: Its circuit breaker, when the config has one.
        bulkhead: Its bulkhead, when the config has one.
        limiter: Its rate limiter, when the config has one.
        replaced: Breakers, bulkheads and rate limiters a reload replaced (dropped, renamed, or
            another algorithm), and the stage links of the pipelines it replaced (:func:`stage_links`),
            that calls may still use: counted in the policy's statistics and
            exported until :func:`_fold_replaced` folds them (when the last call that may use
            them ends, :func:`_fold_when_free`).
        leave: Counts a call out (it returned, raised or was cancelled): the bound ``__next__``
            of the count of ended calls, a call into C with no Python frame; while
            :attr:`replaced` waits for calls to end, a function that also folds it then.
        retired: Weak references to the pipelines reloads replaced, which calls that started
            before may still run in (the dead ones are dropped at each reload).
        live: ``False`` once evicted (a call that finds it so takes the key's new state).
        folded: ``True`` once its counts are in the policy's ledger (:func:`retire`).
        catching_up: The lock of its catch-ups to a reload (made by the first one, under the
            policy's lock): the calls that find the key behind together run the extra
            strategies' factories once for it.
    """

    __slots__ = (
        "__weakref__",  # for the leave that folds what a reload replaced (_folding_leave)
        "breaker",
        "bulkhead",
        "catching_up",
        "extras",
        "folded",
        "generation",
        "key",
        "limiter",
        "metric_key",
        "pipeline",
        "replaced",
        "retired",
        "text",
    )

    pipeline: Pipeline
    extras: tuple[tuple[int, Step], ...]

    def __init__(self, key: Hashable, text: str | None, metric_key: str | None) -> None:
        super().__init__()
        self.key = key
        self.text = text
        self.metric_key = metric_key
        self.generation = 0
        self.breaker: CircuitBreaker | None = None
        self.bulkhead: Bulkhead | None = None
        self.limiter: RateLimiter | None = None
        self.replaced: list[CircuitBreaker | Bulkhead | RateLimiter | Step] = []
        self.retired: Sequence[weakref.ref[Pipeline]] = ()
        self.folded = False
        self.catching_up: threading.Lock | None = None

    def idle(self) -> bool:
        """Whether the key may be evicted: no call runs in it and its breaker is CLOSED or HALF_OPEN.

        A HALF_OPEN breaker with no probe running is idle: its OPEN period is over, and the key
        would come back CLOSED. An OPEN one is not, nor one an operator set DISABLED or
        METRICS_ONLY: the key would come back with a breaker that does what they said no longer
        (every state is read with ``peek_state``: under the store's lock, no callback runs). The
        bulkhead and the rate limiter are idle when no call runs and, besides, no slot is held
        or waited for and no permit waited for outside a call (a ``view.bulkhead.slot()`` block,
        a wait in ``view.rate_limiter.guard()``), in them or in one a reload replaced
        (:func:`_held_outside_calls`): a new bulkhead or limiter for the key would admit calls
        over its limit or its rate, and what the block counts at its end would be counted by
        one no longer the key's, folded. Changes nothing (the ``resilience.policy.keys``
        gauge counts with it: :meth:`~otel_resilience.engine.store.BoundedStore.unexpired`).
        """
        if self.running:
            return False
        breaker = self.breaker
        if _held_outside_calls(self.bulkhead) or _held_outside_calls(self.limiter):
            return False
        if self.replaced and any(_held_outside_calls(instance) for instance in self.replaced):
            return False
        return breaker is None or breaker.peek_state() in _RESTING

    def holds(self) -> bool:
        """Whether the key holds state a new one would not have; changes nothing.

        Its breaker holds failures or is not CLOSED (:func:`breaker_holds_state`), or its rate
        limiter's bucket is not full (:func:`limiter_rests`): made again, the key would count
        its failures from none, or hand out a full burst at once, over its rate. Such an idle
        key is evicted past ``max_keys`` only after the idle keys holding none, and only while
        more than ``max_keys`` of them (16 at most) are kept (``BoundedStore(holds_state=...)``, through
        :meth:`holds_state`; the ``resilience.policy.keys`` gauge counts with this one).
        """
        breaker, limiter = self.breaker, self.limiter
        return (breaker is not None and breaker_holds_state(breaker)) or (
            limiter is not None and not limiter_rests(limiter)
        )

    def holds_state(self) -> bool:
        """Whether the idle key :meth:`holds` state; if so it is kept, so marked live again.

        The store asks it of a key :meth:`retire_if_idle` just marked evicted; a key it keeps
        is evicted later only once the store asks :meth:`retire_if_idle` again.
        """
        if self.holds():
            self.live = True
            return True
        return False


def build(spec: Spec, key: Hashable, text: str | None, metric_key: str | None) -> KeyState:
    """Return a new key's state: its instances and pipeline, from ``spec``.

    Raises:
        Exception: What building the pipeline raised (an extra strategy's factory, say).
    """
    state = KeyState(key, text, metric_key)
    config = spec.config
    with namesakes_expected(spec.owner), shared_key(text):
        if config.circuit_breaker is not None:
            state.breaker = _new_breaker(spec, spec.breaker_name, config.circuit_breaker, state)
        if config.bulkhead_config is not None:
            state.bulkhead = _new_bulkhead(spec, spec.bulkhead_name, config.bulkhead_config, state)
        if config.rate_limiter is not None:
            state.limiter = _new_limiter(spec, config.rate_limiter, state)
    state.pipeline, state.extras = _pipeline(spec, state)
    state.generation = spec.generation
    return state


def key_config(config: ResilienceConfig, text: str | None) -> ResilienceConfig:
    """Return the config of a key's pipeline: ``config``, with a cached fallback's key made the key's own."""
    fallback = config.fallback_config
    if text is None or fallback is None or fallback.strategy is not FallbackStrategy.CACHED_VALUE:
        return config
    keyed = dataclasses.replace(fallback, cache_key=f"{fallback.cache_key}:{text}")
    return dataclasses.replace(config, fallback_config=keyed)


def _pipeline(
    spec: Spec,
    state: KeyState,
    *,
    register: bool = True,
    extras: tuple[tuple[int, Step], ...] | None = None,
    previous: Pipeline | None = None,
) -> tuple[Pipeline, tuple[tuple[int, Step], ...]]:
    """Return a pipeline of ``state`` under ``spec``, and its extra links, outer to inner."""
    inputs = StageInputs(
        spec.name,
        key_config(spec.config, state.text),
        spec.clock,
        state.breaker,
        state.bulkhead,
        spec.recovery,
        spec.breakers,
        state.limiter,
        state.text,
        state.metric_key,
        previous=previous,
    )
    return _made(spec, lambda: compose(inputs, register=register, extras=extras))


def key_links(spec: Spec, config: ResilienceConfig) -> tuple[tuple[int, Step], ...]:
    """Return the extra links of one key's pipeline under ``config``, made ahead of it (a reload's).

    Runs the factories of ``config.extra_strategies`` (user code: what they raise is raised
    here) as building the key's pipeline runs them, in :func:`_made`. The links are given to
    :func:`reconfigure` as its ``extras``.
    """
    return _made(spec, lambda: extra_links(spec.name, config))


def _made(spec: Spec, make: Callable[[], T]) -> T:
    """Return ``make()``, run where every link of the policy's keys is made: with its draws shared.

    The one place the policy's :attr:`Spec.draws` are shared (:meth:`SharedDraws.sharing`): a
    chaos link made in it, the chaos stage's or one an extra strategy's factory makes (a
    :class:`~otel_resilience.Chaos` per key), draws from the policy's generator for its seed.
    A key's pipeline (:func:`_pipeline`, with the extra links it makes when given none) and the
    extra links a reload makes ahead of it (:func:`key_links`) are made here.
    """
    with spec.draws.sharing():
        return make()


def reconfigure(
    state: KeyState,
    spec: Spec,
    ledger: Ledger,
    lock: threading.Lock,
    extras: tuple[tuple[int, Step], ...] | None = None,
) -> None:
    """Bring ``state`` to ``spec``'s generation (under the policy's ``lock``), carrying what is compatible.

    The breaker, bulkhead and rate limiter are reconfigured in place (see their ``_reconfigure``)
    when the new config still has them under the same name (and, for the rate limiter, the same
    algorithm); one the new config drops, or renames, or whose algorithm changes, is replaced
    (put in :attr:`KeyState.replaced`, its counts folded into ``ledger`` once no call uses it:
    :func:`_fold_when_free`), and one it adds (or renames) is made new. The new pipeline counts
    into the old one's stats (the calls in flight finish in the old pipeline, counted there),
    and takes its place in the registry in one step (:meth:`Registry.replace`): it is made
    unregistered and given those stats first, so a collection finds the stats once, in the old
    pipeline or in the new one, never in both. ``extras``: the key's extra links, made
    beforehand by :func:`key_links` (``None``: their factories run here).
    """
    with namesakes_expected(spec.owner), shared_key(state.text):
        state.breaker = _breaker(state, spec)
        state.bulkhead = _bulkhead(state, spec)
        state.limiter = _limiter(state, spec)
    old = state.pipeline
    if state.breaker is not None:
        # The calls in flight, in ``old`` or in a pipeline an earlier reload replaced (whose
        # breaker link a reload that kept the breaker's config left on the core retired now):
        # their next attempts are the breaker's to admit.
        running = (old, *(p for ref in state.retired if (p := ref()) is not None))
        state.breaker._follow_in_flight(link for pipeline in running for link in pipeline.strategies)
        del running
    pipeline, links = _pipeline(spec, state, register=False, extras=extras, previous=old)
    kept = {id(link) for link in pipeline.strategies}
    state.replaced.extend(link for link in stage_links(state) if id(link) not in kept)
    pipeline.stats = old.stats
    PIPELINES.replace((old,), lambda: pipeline)
    state.pipeline, state.extras = pipeline, links
    state.generation = spec.generation
    state.retired = [*state.retired, weakref.ref(old)]
    # Only a call running in it keeps it now: held here, it would look run in (while a block
    # outside any call holds the key), and every reload's replaced links would wait for that block.
    del old
    _fold_when_free(state, ledger, lock)


class _Carried(Protocol[C]):
    """A breaker or bulkhead whose state a reload carries over: its name, config and reconfigure."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> C: ...

    def _reconfigure(self, config: C, /) -> None: ...


def _carry(
    instance: S | None,
    config: C | None,
    name: str,
    make: Callable[[str, C], S],
    replaced: list[Any],
) -> S | None:
    """Keep ``instance`` (reconfigured when its config changed), or make it, or replace it.

    An instance whose stage the new config leaves out, or whose name it changes, is put in
    ``replaced`` (folded into the ledger once no call uses it: :func:`_fold_replaced`).
    """
    if instance is not None and (config is None or instance.name != name):
        replaced.append(instance)
        instance = None
    if config is None:
        return None
    if instance is None:
        return make(name, config)
    if instance.config != config:
        instance._reconfigure(config)
    return instance


def _new_breaker(spec: Spec, name: str, config: CircuitBreakerConfig, state: KeyState) -> CircuitBreaker:
    """A key's new breaker (or the unkeyed calls'), whose own events (state changes) carry the key.

    The breaker is in use only while the policy keeps the key and no reload replaced it: its
    operator actions (``force_open``, ``reset``, ...) and the calls and blocks run with it
    (``call``, ``call_sync``, ``protect``, ``guard()``) run with the key held, and raise once it
    is no longer (:func:`_holding`).
    """
    return _held_by_key(spec, CircuitBreaker(name, config, clock=spec.clock), state)


def _new_bulkhead(spec: Spec, name: str, config: BulkheadConfig, state: KeyState) -> Bulkhead:
    """A key's new bulkhead (or the unkeyed calls'): its own calls and ``slot()`` blocks hold the key."""
    return _held_by_key(spec, Bulkhead(name, config, clock=spec.clock), state)


def _new_limiter(spec: Spec, config: RateLimiterConfig, state: KeyState) -> RateLimiter:
    """A key's new limiter (or the unkeyed calls'): its calls, blocks and ``try_acquire`` hold the key."""
    return _held_by_key(spec, RateLimiter(spec.name, config, clock=spec.clock), state)


def _held_by_key(spec: Spec, instance: OwnedT, state: KeyState) -> OwnedT:
    """Give a key's new breaker, bulkhead or limiter its key and its hold (:func:`_holding`); return it.

    Its own events, rejections and executions (those of the calls and blocks run with it, and
    a breaker's state changes, whoever moved it) name the key (``Pattern._report_as``), as the
    key's pipeline's do: with the key's metric attribute where the policy opted in.

    The one rule of what a key's instances do when used directly, rather than through the
    policy: each call, block or action holds the key from its start to its end (so the key is
    not evicted meanwhile, and what it takes and counts is the key's), and is refused before it
    runs once the key was evicted or a reload replaced the instance: it would take a slot, a
    permit or a probe the key's calls never see, over their limit, and count into an instance
    already folded into the policy's totals.
    """
    text = state.text
    if text is not None:
        instance._report_as(text, state.metric_key)
    if spec.kept is not None:
        counted = isinstance(instance, CircuitBreaker)  # the one whose blocks hold nothing of it
        instance._hold_by(_Hold(weakref.ref(state), spec.kept, spec.name, state.text, counted=counted))
    return instance


_UNCOUNTED: Final = Counter()
"""Where the holds of a bulkhead and a limiter count their blocks: never read (they count their own)."""


class _Hold:
    """What an owned instance's operator actions and own calls run within (``Pattern._hold_by``).

    A small object per key's breaker, bulkhead and limiter, holding its key's state weakly (no
    cycle: a key's state holds its instances).
    """

    __slots__ = ("_in", "_out", "kept", "policy", "state", "text")

    def __init__(
        self,
        state: weakref.ref[KeyState],
        kept: Callable[[KeyState], bool],
        policy: str,
        text: str | None,
        *,
        counted: bool,
    ) -> None:
        self.state = state
        self.kept = kept
        self.policy = policy
        self.text = text
        # The blocks and calls that took the hold (:func:`_holding`), and those that let it go:
        # read for a breaker only (:func:`_held_outside_calls`); the others' go where none looks.
        self._in = Counter() if counted else _UNCOUNTED
        self._out = Counter() if counted else _UNCOUNTED

    def __call__(self, instance: Pattern[Any, Any]) -> AbstractContextManager[object]:
        return _holding(self, instance)

    def owner_of(self, instance: Pattern[Any, Any]) -> str:
        """Say whose ``instance`` is and where the one in use is taken (a copy's refusal: ``Held``)."""
        what, taken = self._in_use(instance)
        return f"policy {self.policy!r}'s {what}; take the one in use with {taken}"

    def _in_use(self, instance: Pattern[Any, Any]) -> tuple[str, str]:
        """Name ``instance`` as its key's (``bulkhead 'p' (key 'k')``); what gives the one in use.

        The key is shown as its ``resilience.key`` is written (:func:`key_attribute`: a long one
        cut), so that a refusal stays bounded.
        """
        what, attribute = _IN_USE[instance.kind]
        text = None if self.text is None else key_attribute(self.text)
        subject = "(its unkeyed calls)" if text is None else f"(key {text!r})"
        where = "handle" if text is None else f"handle.for_key({text!r})"
        return f"{what} {instance.name!r} {subject}", f"{where}.{attribute}"

    def blocks(self) -> int:
        """The blocks and calls running with the instance now (read without a lock; the ends first)."""
        out = self._out.value
        return self._in.value - out


@contextlib.contextmanager
def _holding(hold: _Hold, instance: Pattern[Any, Any]) -> Iterator[None]:
    """Hold the key ``text`` (``None``: the unkeyed calls) while one of its instances is used directly.

    An operator's action on the breaker, or a call or block run with the instance itself
    (``breaker.guard()``, ``bulkhead.slot()``, ``limiter.guard()``, their verbs and ``protect``,
    ``limiter.try_acquire()``).

    The action (or call) is counted in the key as a call is (:meth:`KeyState.enter`), so the key
    is not evicted while it runs, and what a call takes (a slot, a permit, a probe) and counts is
    the key's; once set, the breaker keeps the key (OPEN, DISABLED, METRICS_ONLY are not idle) or
    lets it go (CLOSED). A key an eviction is deciding about looks evicted for an instant: the
    policy is asked (``kept``) whether it keeps the key's state, and the key entered again if so.
    An evicted key's calls use the instances its next call made, and an instance a reload
    replaced (renamed, dropped, or a limiter of another algorithm) is used by no new call: a
    breaker set, a slot or a permit taken there would change nothing the calls see (admitting
    a block beside them over their limit or their rate) and be counted where no call looks, so
    it raises before anything is taken. An action racing a reload is set before it: the reload's
    word is the later one, as for a breaker it replaces after an operator set it. The unkeyed
    calls' instances of a policy gone (its manager dropped) are used as instances of no one.

    Raises:
        NotInUseError: (a ``RuntimeError``) The key was evicted (idle past ``max_keys``, or unused
            for ``idle_ttl``), or a reload replaced the instance.
    """
    state, policy, text = hold.state(), hold.policy, hold.text
    if state is not None and not state.enter() and not state.enter_kept(functools.partial(hold.kept, state)):
        state = None  # evicted (kept is False too once the policy is gone): asked once enter() fails only
    if state is None and text is None:  # the policy is gone: no call can use the instance again
        yield
        return
    if state is not None:
        # Counted before the look below: a reload that replaces the instance meanwhile does not
        # fold it under the block (:func:`_held_outside_calls`), which then finds it replaced.
        next(hold._in)
    if state is None:
        why = f"policy {policy!r} evicted the key (idle past max_keys, or unused for idle_ttl)"
    elif instance is not state.breaker and instance is not state.bulkhead and instance is not state.limiter:
        next(hold._out)
        state.leave()
        why = f"a reload of policy {policy!r} replaced it (renamed, dropped, or remade)"
    else:
        try:
            yield
        finally:
            next(hold._out)  # before the key's count-out, which may fold the instance
            state.leave()
        return
    what, taken = hold._in_use(instance)
    raise not_in_use(what, why, taken)


_IN_USE: Final = {
    CircuitBreaker.kind: ("circuit breaker", "circuit_breaker"),
    Bulkhead.kind: ("bulkhead", "bulkhead"),
    RateLimiter.kind: ("rate limiter", "rate_limiter"),
}
"""How :func:`_holding`'s refusal names each kind of instance, and the attribute that gives the one in use."""


def _breaker(state: KeyState, spec: Spec) -> CircuitBreaker | None:
    config = spec.config.circuit_breaker
    make = lambda name, cfg: _new_breaker(spec, name, cfg, state)  # noqa: E731
    return _carry(state.breaker, config, spec.breaker_name, make, state.replaced)


def _bulkhead(state: KeyState, spec: Spec) -> Bulkhead | None:
    config = spec.config.bulkhead_config
    make = lambda name, cfg: _new_bulkhead(spec, name, cfg, state)  # noqa: E731
    return _carry(state.bulkhead, config, spec.bulkhead_name, make, state.replaced)


def _limiter(state: KeyState, spec: Spec) -> RateLimiter | None:
    """Return the key's limiter for ``spec``: its own retuned, or a new one (the old one replaced)."""
    limiter, config = state.limiter, spec.config.rate_limiter
    if (
        limiter is not None
        and config != limiter.config
        and (config is None or not limiter._reconfigure(config))
    ):
        state.replaced.append(limiter)
        limiter = None
    if limiter is None and config is not None:
        limiter = _new_limiter(spec, config, state)
    return limiter


def _fold_replaced(state: KeyState, ledger: Ledger) -> None:
    """Fold the replaced instances once no call can use them any more: their counts are final then.

    A call that started before a reload runs in a pipeline it replaced, which uses them: a
    breaker and a bulkhead count the call when it ends, a rate limiter when the call reaches it
    (it may not have yet, or it waits there). Such a pipeline lives as long as a call runs in
    it. So the instances are folded when no call runs in the key, or when every replaced
    pipeline is gone; but not a bulkhead or limiter a block outside any call still holds or
    waits in (:func:`_held_outside_calls`), which waits for a later try (the key, not idle
    meanwhile, is not evicted). Called after the key's pipeline was replaced (a call that
    starts later runs in the new one), and when a call of the key ends while instances wait
    (:func:`_fold_when_free`).
    """
    retired = [ref for ref in state.retired if ref() is not None]
    if not retired or not state.running:
        retired = []
        kept: list[CircuitBreaker | Bulkhead | RateLimiter | Step] = []
        for instance in state.replaced:
            if _held_outside_calls(instance):
                kept.append(instance)  # a block outside any call runs (or waits) in it
            else:
                _fold(ledger, instance)
        state.replaced = kept
    state.retired = retired or ()


def _fold_when_free(state: KeyState, ledger: Ledger, lock: threading.Lock) -> None:
    """Fold ``state``'s replaced instances now if no call can use them, else when a later call ends.

    Under the policy's ``lock``. What waits is folded by the first call of the key to end once
    none can use it (:func:`_fold_replaced` decides): the key's :attr:`KeyState.leave` does it
    then, under ``lock``, and is the plain count again once nothing waits. Otherwise a dropped
    breaker left OPEN would be exported as one of the policy's (OPEN, then HALF_OPEN) until the
    next reload or eviction, which a key in steady use, or the unkeyed calls, may never see.
    """
    _fold_replaced(state, ledger)
    state.leave = _folding_leave(state, ledger, lock) if state.replaced else state._ended.__next__


def _folding_leave(state: KeyState, ledger: Ledger, lock: threading.Lock) -> Callable[[], object]:
    """Return a :attr:`KeyState.leave` that counts a call out, then tries the fold (:func:`_fold_when_free`).

    It holds ``state`` weakly (it is an attribute of ``state``: no reference cycle), and folds
    only while it is the state's ``leave``: a reload or an eviction that folded meanwhile (and
    put another in its place) leaves it nothing to do. Called when a call has ended, holding no
    lock of the library, so it may wait for ``lock``; but not when the call's coroutine is being
    closed (a task its closed loop left pending, freed by the garbage collector on whichever
    thread allocates, maybe one that holds ``lock``), which never blocks on it
    (:func:`~otel_resilience.engine.closing.give_back`).
    """
    return _FoldingLeave(state, ledger, lock)


class _FoldingLeave:
    """A key's count-out while replaced instances wait for its calls to end (:func:`_folding_leave`).

    An object, not a closure: a closure that compares the state's ``leave`` with itself refers
    to itself, a cycle that, once replaced, would keep the policy's ledger (and what it has
    registered, exported under the policy's name) until the cyclic garbage collector runs.
    """

    __slots__ = ("_count_out", "_held", "_ledger", "_lock")

    def __init__(self, state: KeyState, ledger: Ledger, lock: threading.Lock) -> None:
        self._count_out = state._ended.__next__
        self._held = weakref.ref(state)
        self._ledger = ledger
        self._lock = lock

    def __call__(self) -> None:
        self._count_out()
        give_back(self._lock, self._fold)

    def _fold(self) -> None:
        with self._lock:
            current = self._held()
            if current is not None and current.leave is self:
                _fold_when_free(current, self._ledger, self._lock)


def stage_links(state: KeyState) -> list[Step]:
    """Return the links of ``state``'s pipeline that count for the policy's statistics (its stages').

    What the policy's statistics count of its retry, timeouts, hedging, fallback and chaos
    (:data:`~otel_resilience.manager.ledger.LINK_TOTALS`): the extra links are the user's, who
    reads them (the manager's statistics list them).
    """
    extras = {id(link) for _, link in state.extras}
    return [link for link in state.pipeline.strategies if link.kind in LINK_TOTALS and id(link) not in extras]


def _fold(ledger: Ledger, instance: CircuitBreaker | Bulkhead | RateLimiter | Step | None) -> None:
    """Fold what ``instance`` counted into ``ledger``, its own pipeline's too (nothing for ``None``).

    A replaced stage link (:func:`stage_links`) adds its counts to the ledger's.
    """
    if isinstance(instance, CircuitBreaker):
        ledger.fold_breaker(instance)
    elif isinstance(instance, Bulkhead):
        ledger.fold_bulkhead(instance)
    elif isinstance(instance, RateLimiter):
        ledger.fold_limiter(instance)
    else:
        if instance is not None:
            ledger.fold_links((instance,))
        return
    ledger.fold_own(instance)


def retire(state: KeyState, ledger: Ledger) -> None:
    """Fold an evicted key's counts into ``ledger`` (under the policy's lock): no call runs in it.

    Marks it :attr:`KeyState.folded`, in the same hold of the lock: a reader of the policy's
    statistics, under that lock, counts an evicted key the store still lists (its hand-over not
    over) unless it is folded, and so counts it once.
    """
    if state.folded:
        return
    state.folded = True
    ledger.fold_pipeline(state.pipeline, state.metric_key)
    ledger.fold_links(stage_links(state))
    for instance in (state.breaker, state.bulkhead, state.limiter, *state.replaced):
        _fold(ledger, instance)
    state.replaced = []
    state.leave = state._ended.__next__  # nothing waits for a call to end
