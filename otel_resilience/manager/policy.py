"""Named policies: a handle per name, state per key, and a configuration that can change while calls run.

``manager.policy("payments", config)`` returns a :class:`PolicyHandle`: calls run through it
(:meth:`PolicyHandle.execute`, :meth:`PolicyHandle.protect`), and ``handle.for_key(host)``
(a :class:`KeyedPolicyView`) gives each key its own breaker, bulkhead and rate limiter (see
:mod:`~otel_resilience.manager.keyed` for what a key means to each stage), made on the key's
first call. ``manager.reconfigure("payments", new_config)`` gives the policy a new config
(:meth:`PolicyHandle._prepare`, :meth:`PolicyHandle._stage`, then :meth:`PolicyHandle._commit`;
see docs/design.md, "Changing a policy while it runs").

Keys are kept in the engine's :class:`~otel_resilience.engine.store.BoundedStore`: at most
``max_keys`` idle keys (the least recently used go first), and none unused for ``idle_ttl``
seconds; a key with a call running, a bulkhead slot held, or whose breaker is OPEN, is not idle
(:meth:`KeyState.idle`), and an idle key that holds state a new one would not have
(:meth:`KeyState.holds_state`: a bucket not full, a breaker holding failures) goes past
``max_keys`` only after the idle keys holding none. What an evicted key counted is folded into
the policy's :class:`~otel_resilience.manager.ledger.Ledger`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final, ParamSpec, TypeVar, overload

from otel_resilience.engine.calling import NeverReturns, SyncCallOfCoroutineFunction, not_callable
from otel_resilience.engine.events import (
    Event,
    PolicyReloaded,
    ReloadFailed,
    StrategyTelemetry,
    error_type_name,
)
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.protecting import check_protectable, is_async_callable, keep_metadata
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import POLICIES, namesakes_expected
from otel_resilience.engine.step import Step
from otel_resilience.engine.store import BoundedStore, key_text, weak_callback
from otel_resilience.engine.validation import check_int, fail, wrong_return
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.keyed import KeyState, Spec, build, key_links, reconfigure, retire
from otel_resilience.manager.ledger import Ledger
from otel_resilience.manager.policy_stats import PolicyReloadsDict, PolicyStatsDict, policy_stats
from otel_resilience.manager.stages import StageInputs, compose
from otel_resilience.patterns.bulkhead import Bulkhead
from otel_resilience.patterns.circuit_breaker import CircuitBreaker
from otel_resilience.patterns.fallback._step import first_async_part
from otel_resilience.patterns.rate_limiter import RateLimiter

__all__ = [
    "DEFAULT_IDLE_TTL",
    "DEFAULT_MAX_KEYS",
    "OVERFLOW_KEY",
    "KeyedPolicyView",
    "PolicyHandle",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_KEYS: Final = 1024
"""How many idle keys a policy keeps unless told otherwise (``max_keys``)."""
DEFAULT_IDLE_TTL: Final = 600.0
"""Seconds after which a policy evicts an idle key that was not used (``idle_ttl``)."""
OVERFLOW_KEY: Final = "_OTHER"
"""The ``resilience.key`` metric attribute of every key past a policy's ``key_attribute_limit``."""

_OWNER: Final = "ResilienceManager.policy"
_LOG: Final = logging.getLogger("otel_resilience.manager")


def check_config(name: str, config: object, owner: str = _OWNER, field: str = "config") -> ResilienceConfig:
    """Return ``config`` if a policy handle named ``name`` can run it; raise otherwise.

    ``owner`` and ``field`` are the method called and its argument that gave ``config``, as the
    error names them (``"ResilienceManager.reconfigure_many"``, ``"configs['payments']"``).

    Raises:
        TypeError: ``config`` is not a :class:`ResilienceConfig`.
        ValueError: Its ``name`` is another name, or an extra strategy is a ``Step`` instance
            (a handle builds a pipeline per key and per reload: give a factory).
    """
    if not isinstance(config, ResilienceConfig):
        raise fail(owner, field, "a ResilienceConfig", config, kind=TypeError)
    if config.name is not None and config.name != name:
        raise fail(owner, field, f"a ResilienceConfig whose name is None or {name!r}", config.name)
    for index, extra in enumerate(config.extra_strategies):
        if isinstance(extra.link, Step):
            msg = (
                f"ResilienceConfig.extra_strategies[{index}]: a policy handle builds a pipeline per key "
                "and per reload, and a Step instance serves one pipeline: give a factory (a callable "
                "returning a fresh Step)"
            )
            raise ValueError(msg)  # noqa: TRY004 - a Step is the right type, for one pipeline only
    return config


def same_config(first: object, second: ResilienceConfig) -> bool:
    """Whether ``first`` is the config ``second`` of a policy is: its name written or left out alike.

    A policy's config names the policy or nothing (``None``, :func:`check_config`), so a config
    loaded from a file (named after its key) and the same settings written in code are the same
    config of that policy: neither is "another config", nor a change to reload. What is not a
    config is another one (and refused where it is taken), and so is a config that cannot be
    told equal (a value of it whose ``==`` raises, as a NumPy array's truth does): the answer is
    never an error, as a reload's commit, which asks, must not fail.
    """
    try:
        if first == second:
            return True
        if not isinstance(first, ResilienceConfig) or first.name == second.name:
            return False
        return dataclasses.replace(first, name=None) == dataclasses.replace(second, name=None)
    except Exception:  # noqa: BLE001 - they could not be told equal: another config
        return False


def check_key_attribute_limit(limit: object) -> int:
    """Return ``limit`` if it is an ``int >= 0``: how many keys get their own metric attribute."""
    return check_int(_OWNER, "key_attribute_limit", limit, minimum=0)


Adapt = Callable[[ResilienceConfig], ResilienceConfig]
"""What a policy does to every config it takes, at creation and on each reload (``adapt=``)."""


def adapt_config(adapt: Adapt | None, config: ResilienceConfig) -> ResilienceConfig:
    """Return ``config`` through ``adapt`` (``None``: as it is), at creation and on each reload.

    Raises:
        TypeError: ``adapt`` returned no :class:`ResilienceConfig` (a plain function returning a
            coroutine: closed), which no pipeline could be built of.
        Exception: What ``adapt`` raised.
    """
    if adapt is None:
        return config
    adapted = adapt(config)
    if not isinstance(adapted, ResilienceConfig):
        raise wrong_return("ResilienceManager.policy.adapt", adapted, "it must return a ResilienceConfig")
    return adapted


@dataclasses.dataclass(frozen=True, slots=True)
class Staged:
    """A config :meth:`PolicyHandle._stage` made ready to commit, and each live key's extra links.

    Attributes:
        config: The checked config.
        links: Per live key state, the extra links of its new pipeline. Empty when the config
            has no extra strategies (or is the current one).
        unchanged: Whether ``config`` was the policy's config when staged, so no links were made
            for a config with extra strategies: only a commit that still finds it so may use
            this staging (:meth:`PolicyHandle._stale`).
    """

    config: ResilienceConfig
    links: dict[KeyState, tuple[tuple[int, Step], ...]]
    unchanged: bool = False


class _Adapts:
    """A policy's ``adapt``, then the ones its users added (:meth:`PolicyHandle._adapt_also`)."""

    __slots__ = ("added", "own")

    def __init__(self, own: Adapt | None, added: dict[str, Adapt]) -> None:
        self.own = own
        self.added = added

    def __call__(self, config: ResilienceConfig) -> ResilienceConfig:
        if self.own is not None:
            config = self.own(config)
        for adapt in self.added.values():
            config = adapt(config)
        return config


class _Runs(ABC):
    """The calls a :class:`PolicyHandle` and a :class:`KeyedPolicyView` share.

    Each runs in the state its object enters: the policy's unkeyed breaker, bulkhead and limiter
    for a handle, the key's own for a key's view.
    """

    __slots__ = ()

    _owner: ClassVar[str]
    """The class name a refused ``fn`` is reported under."""

    @abstractmethod
    def _enter_state(self) -> KeyState:
        """Return the state a call runs in, with the call counted in."""

    def _state(self) -> KeyState:
        state = self._enter_state()
        state.leave()
        return state

    @property
    def circuit_breaker(self) -> CircuitBreaker | None:
        """The breaker of the calls made on this object, or ``None`` when the config has none.

        A handle's own (its unkeyed calls'), or the key's for a key's view (made if the key is
        new). For reading and for operators (``force_open``, ``reset``); run calls through the
        handle or the view.
        """
        return self._state().breaker

    @property
    def bulkhead(self) -> Bulkhead | None:
        """The bulkhead of the calls made on this object, or ``None`` (as :attr:`circuit_breaker`)."""
        return self._state().bulkhead

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The rate limiter of the calls made on this object, or ``None`` (as :attr:`circuit_breaker`)."""
        return self._state().limiter

    async def execute(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` under the policy, in this object's state.

        Raises:
            TypeError: ``fn`` is not callable.
            Exception: As :meth:`ResilienceManager.execute_with_resilience`.
        """
        if not callable(fn):
            raise not_callable(f"{self._owner}.execute", fn)
        result: R = await run(self._enter_state(), fn, args, kwargs)
        return result

    @overload
    def execute_sync(
        self, fn: Callable[P, NeverReturns], /, *args: P.args, **kwargs: P.kwargs
    ) -> NeverReturns: ...
    @overload
    def execute_sync(
        self, fn: Callable[P, Coroutine[Any, Any, Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> SyncCallOfCoroutineFunction: ...
    @overload
    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in this thread under the policy, in this object's state.

        Typed as :meth:`Pattern.run_sync <otel_resilience.engine.facade.Pattern.run_sync>` is.

        Raises:
            TypeError: ``fn`` is not callable.
            Exception: As :meth:`ResilienceManager.execute_with_resilience_sync`.
        """
        if not callable(fn):
            raise not_callable(f"{self._owner}.execute_sync", fn)
        result: R = run_sync(self._enter_state(), fn, args, kwargs)
        return result


class PolicyHandle(_Runs):
    """A named policy of a :class:`~otel_resilience.ResilienceManager`: reusable, keyed, reloadable.

    Made by ``manager.policy(name, config)``; the manager keeps it for its lifetime (handles
    are named on purpose, never evicted). Calls made on the handle itself share one breaker,
    bulkhead and rate limiter (the unkeyed state); calls made through :meth:`for_key` get the
    key's own. Its name and options are fixed (read-only attributes).
    """

    __slots__ = (
        "__weakref__",
        "_adapt",
        "_building",
        "_default",
        "_key_attribute_limit",
        "_keys",
        "_ledger",
        "_lock",
        "_metric_keys",
        "_name",
        "_reloads",
        "_spec",
        "_telemetry",
    )

    _owner: ClassVar[str] = "PolicyHandle"

    if TYPE_CHECKING:
        # A property for type checkers, as ``config`` is (the HTTP integrations' ``PolicyHandleLike``
        # asks for both): pyright takes a ReadOnly for a property with no getter, which matches none.
        @property
        def name(self) -> str: ...  # noqa: D102 - documented by the ReadOnly below

    else:
        name = ReadOnly[str]("_name", "The policy name (``resilience.policy`` in telemetry).")

    key_attribute_limit = ReadOnly[int](
        "_key_attribute_limit",
        "How many keys get their own ``resilience.key`` metric attribute (0: none, the default; keys "
        "are a span attribute only).",
    )

    def __init__(
        self,
        spec: Spec,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        idle_ttl: float | timedelta | None = DEFAULT_IDLE_TTL,
        key_attribute_limit: int = 0,
        adapt: Adapt | None = None,
    ) -> None:
        self._name = spec.name
        self._adapt = adapt
        self._key_attribute_limit = check_key_attribute_limit(key_attribute_limit)
        self._spec = spec = dataclasses.replace(spec, kept=_keeps(weakref.ref(self)))
        # Taken by reloads too (a configuration watch's thread applying a file): free in a forked child.
        self._lock = fork_safe(threading.Lock())
        # Held while a new key is built (its extra strategies' factories run), not the store's lock.
        self._building = fork_safe(threading.Lock())
        self._keys: BoundedStore[str, KeyState] = BoundedStore(
            _OWNER,
            "max_keys",
            max_keys,
            is_idle=KeyState.retire_if_idle,
            holds_state=KeyState.holds_state,
            on_evict=weak_callback(self._evicted),  # the handle owns its store: no cycle
            ttl=idle_ttl,
            clock=spec.clock if idle_ttl is not None else None,
            ttl_field="idle_ttl",
        )
        self._metric_keys: dict[str, str] = {}
        self._reloads: PolicyReloadsDict = {"succeeded": 0, "failed": 0}
        self._telemetry = StrategyTelemetry.of("pipeline", spec.name, spec.name)
        self._ledger = Ledger(spec.name, spec.clock)
        self._default = build(spec, None, None, None)
        POLICIES.register(self)

    @property
    def config(self) -> ResilienceConfig:
        """The config new calls run under."""
        # A property, not a ReadOnly: every type checker then takes the handle where a protocol
        # asks for a ``config`` property (the HTTP integrations' ``PolicyHandleLike``).
        return self._spec.config

    generation = ReadOnly[int]("_spec.generation", "The config's number: 1, then one more per reload.")

    max_keys = ReadOnly[int]("_keys.capacity", "How many idle keys the policy keeps.")

    evicted_keys = ReadOnly[int](
        "_keys.evicted", "How many keys the policy evicted so far (``get_stats()['evicted_keys']``)."
    )

    idle_ttl = ReadOnly["float | None"](
        "_keys.ttl", "Seconds an unused idle key is kept (``None``: no expiry)."
    )

    @property
    def keys(self) -> int:
        """How many keys the policy keeps now (the unkeyed state not counted).

        Idle keys unused for ``idle_ttl`` are not counted, nor idle keys past ``max_keys``
        (kept while they were busy), though they are evicted by the policy's next calls (or,
        for the expired ones, :meth:`get_stats`), not here: this is what the
        ``resilience.policy.keys`` gauge reads in the metric reader's collection, which must
        evict nothing (an eviction runs callbacks that reach the telemetry being collected).
        So the gauge of a policy no call reaches drops as its keys expire, and reads at most
        ``max_keys`` once its keys are idle (one more, the youngest, while ``max_keys`` others,
        16 at most, hold state: :meth:`KeyState.holds`), as the store keeps them.
        """
        return self._keys.unexpired(KeyState.idle, KeyState.holds)

    # ------------------------------------------------------------------ calls

    def protect(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or async) so that every call runs under the policy's current config.

        Raises:
            TypeError: ``fn`` is not callable, or is a generator function (async or not), or is
                sync and the policy's config hedges (hedging is async only: a reload that adds
                hedging later fails each of its calls with hedging's ``TypeError``).
        """
        return protect(self.name, self._enter_state, fn, "PolicyHandle.protect", self._spec.config)

    def for_key(self, key: Hashable) -> KeyedPolicyView:
        """Return the view of ``key``: calls through it use the key's own breaker, bulkhead and limiter.

        The view is cheap and holds no state: the key's state is found (or made, or made again
        after an eviction) on each call, so a view may be kept for as long as wanted.

        Args:
            key: A ``str``, or any hashable value (a host, a tenant id), known by its text
                ``str(key)`` (:func:`~otel_resilience.engine.store.key_text`): keys with one
                text are one key (``1`` and ``"1"``; ``1`` and ``1.0`` are two). The text is
                the execution span's ``resilience.key`` attribute: use bounded values that are
                not secrets.

        Raises:
            TypeError: ``key`` is not hashable, or is ``None``.
        """
        return KeyedPolicyView(self, key)

    def _enter_state(self) -> KeyState:
        state = self._default
        state.enter()  # never evicted
        if state.generation != self._spec.generation:
            self._catch_up(state)
        return state

    def _enter(self, key: str) -> KeyState:
        """Return the live state of the key of text ``key`` with this call counted in (made if new)."""
        keys = self._keys
        while True:
            state = keys.use(key)  # a key in use: no builder made for it
            if state is None:
                state = self._add(key)
            if state.enter():
                if state.generation != self._spec.generation:
                    self._catch_up(state)
                return state

    def _add(self, key: str) -> KeyState:
        """Return the state of the key of text ``key``, built now if the store has none.

        The build runs the extra strategies' factories (user code, maybe slow): under the
        policy's build lock, not the store's, which every call takes to find its key. So the
        calls of the keys kept go on meanwhile, and a key is built once: the calls that find it
        new at once wait for the first one's build, then find it.
        """
        keys = self._keys
        with self._building:
            state = keys.use(key)
            if state is None:
                made = self._new_state(key)
                state, _ = keys.get_or_add(key, lambda: made)
            return state

    def _new_state(self, key: str) -> KeyState:
        """Build a new key's state from the current config, under the build lock (:meth:`_add`).

        ``key`` is its text.

        A key takes its own metric attribute (one of the ``key_attribute_limit`` places) only
        once its state is built: a build that raises (an extra strategy's factory) takes none.
        """
        metric_key, new = self._metric_key(key)
        state = build(self._spec, key, key, metric_key)
        if new and metric_key is not None:
            self._metric_keys[key] = metric_key
        return state

    def _metric_key(self, key: str) -> tuple[str | None, bool]:
        """Return the key's metric attribute, and whether it is a place not taken yet (:meth:`_new_state`).

        The attribute is the key's own for the first ``key_attribute_limit`` keys, else
        :data:`OVERFLOW_KEY`; ``None`` when the limit is 0. A key whose text is
        :data:`OVERFLOW_KEY` is counted in the overflow series, whose value it is, and takes no place.
        """
        limit = self._key_attribute_limit
        if not limit:
            return None, False
        found = self._metric_keys.get(key)
        if found is not None:
            return found, False
        if len(self._metric_keys) >= limit or key == OVERFLOW_KEY:
            return OVERFLOW_KEY, False
        return key, True

    def _catch_up(self, state: KeyState) -> None:
        """Bring a state built just before a reload, or made while it was staged, to the current config.

        As :meth:`_stage` does, the extra strategies' factories run first, outside the policy's
        lock (a slow factory holds no other call; it must not call into the manager or the
        policy, :class:`~otel_resilience.manager.stages.ExtraStrategy`); the links they made are
        used if no other reload came meanwhile (else they are made again for the newer config).
        They run under the key's own catch-up lock (:attr:`KeyState.catching_up`): the calls
        that find the key behind at once wait for the first one's catch-up, so the factories run
        once for the key per reload, as a reload runs them once per live key.

        Called with the call counted into ``state`` (:meth:`KeyState.enter`), so the key is not
        evicted meanwhile and :attr:`KeyState.live` is not read here: an eviction in another
        thread marks a key not live for an instant while it looks whether it is idle, and the
        call must not take that for an eviction (it would run under the old config). A call
        that fails here never runs, so it is counted out here (or the key would look busy for ever).

        Raises:
            Exception: What a factory raised, or the refusal of what it returned (the call fails;
                the key's next call tries again).
        """
        try:
            with state.catching_up or self._catching_up(state):
                while True:
                    spec = self._spec
                    if state.generation == spec.generation:
                        return
                    links = key_links(spec, spec.config)
                    with self._lock:
                        if state.generation == self._spec.generation:
                            return
                        if self._spec is spec:
                            reconfigure(state, spec, self._ledger, self._lock, links)
                            return
        except BaseException:
            state.leave()
            raise

    def _catching_up(self, state: KeyState) -> threading.Lock:
        """Return ``state``'s catch-up lock, made now by its first catch-up (once, for all threads)."""
        with self._lock:
            lock = state.catching_up
            if lock is None:  # free again in a forked child: a thread of the parent may hold it
                lock = state.catching_up = fork_safe(threading.Lock())
        return lock

    def _keeps(self, state: KeyState) -> bool:
        """Whether ``state`` is the one the policy keeps for its key now: an eviction decided.

        Looked up under the store's lock, where each eviction decides: a key it keeps is live
        again once the lock is released; one it evicted has left (another state may be there).
        For an operator's action on a key's breaker whose key looked evicted (its state not
        :attr:`~KeyState.live`). A look-up is a use of the key.
        """
        return state.text is not None and self._keys.use(state.text) is state

    def _evicted(self, _key: str, state: KeyState) -> None:
        """Fold an evicted key's counts into the policy's totals (outside the store's lock).

        Until this returns the store still lists the key as evicting (``values(evicting=True)``),
        and :meth:`get_stats` counts it there unless it is folded: no window shows it nowhere.
        """
        with self._lock:
            retire(state, self._ledger)
        breaker = state.breaker
        if breaker is not None and breaker.config.store is not None:
            breaker.config.store.unshare_breaker(breaker)  # it comes back fresh: its counts go

    # ------------------------------------------------------------------ reloads

    def _prepare(self, config: object, owner: str, field: str) -> ResilienceConfig:
        """Check that ``config`` can replace the current one; change nothing.

        Beyond :func:`check_config` (whose errors name ``owner`` and ``field``, the method called
        and its argument), a pipeline is built from it once (and dropped), so that an extra
        strategy's factory that fails is found before anything changes.

        Raises:
            TypeError: As :func:`check_config`.
            ValueError: As :func:`check_config`.
            Exception: What building a pipeline from ``config`` raised.
        """
        checked = self.adapted(check_config(self.name, config, owner, field))
        spec = self._spec
        with namesakes_expected():
            inputs = StageInputs(self.name, checked, spec.clock, None, None, spec.recovery, spec.breakers)
            compose(inputs, register=False)  # a trial: never exported
        return checked

    def adapted(self, config: ResilienceConfig) -> ResilienceConfig:
        """Return ``config`` as the policy takes it: through the ``adapt`` it was created with.

        A reload (``reconfigure``, a configuration file) passes through it too, so what the
        owner of the policy adds to every config (an HTTP client's retry rule) is never lost.
        """
        return adapt_config(self._adapt, config)

    def _adapt_also(self, user: str, adapt: Adapt) -> None:
        """Apply ``adapt`` too, after the policy's own, to every config a reload gives the policy.

        For a user of the policy whose rule its configs must keep (an HTTP client's, which a
        policy made without ``adapt=http_config`` would lose at its first reload): one per
        ``user``, the last given, so that many clients of one policy add one each kind.
        """
        with self._lock:
            current = self._adapt
            own, added = (current.own, current.added) if isinstance(current, _Adapts) else (current, {})
            self._adapt = _Adapts(own, {**added, user: adapt})

    def _stage(self, config: ResilienceConfig) -> Staged:
        """Make what :meth:`_commit` needs to give ``config`` to every live key; change nothing.

        The factories of ``config.extra_strategies`` are the only code of the user's that
        rebuilding a key's pipeline runs: they run here, once per live key, so that what they
        raise refuses the reload before any policy of the batch has changed. Outside the
        policy's lock (a slow factory holds no call; it must not call into the manager or the
        policy, :class:`~otel_resilience.manager.stages.ExtraStrategy`).

        Raises:
            Exception: What a factory raised, or the refusal of what it returned.
        """
        if not config.extra_strategies:
            return Staged(config, {})
        with self._lock:
            spec = self._spec
            if same_config(config, spec.config):
                return Staged(config, {}, unchanged=True)
            states = [state for state in (self._default, *self._keys.values()) if state.live]
        return Staged(config, {state: key_links(spec, config) for state in states})

    def _stale(self, staged: Staged) -> bool:
        """Whether :meth:`_commit` must not take ``staged``: it must be staged again first.

        A config staged as the policy's own (:attr:`Staged.unchanged`: no factory ran) that a
        reload committed since has changed would take effect with no factory run for the live
        keys (what they would refuse is found at each key's next call, failing it, after the
        reload was reported to succeed). Read under the manager's commit lock, as every
        :meth:`_commit` runs: the policy's config cannot change between this and the commit.
        """
        return staged.unchanged and not same_config(staged.config, self._spec.config)

    def _commit(self, staged: Staged) -> int:
        """Make the config :meth:`_stage` staged the policy's; return its generation.

        Every live key is brought to it now (an equal config changes nothing), with the extra
        links staged for it: nothing here runs the user's code, so nothing here can refuse the
        reload. A key made since it was staged is left as it is and catches up at its next call
        (as a key built just before a reload does); a key made later is built from the new config.
        """
        config = staged.config
        extras_needed = bool(config.extra_strategies)
        with self._lock:
            spec = self._spec
            if same_config(config, spec.config):
                return spec.generation
            self._spec = spec = dataclasses.replace(spec, config=config, generation=spec.generation + 1)
            for state in (self._default, *self._keys.values()):
                if not state.live or state.generation == spec.generation:
                    continue
                made = staged.links.get(state)
                if made is not None:
                    reconfigure(state, spec, self._ledger, self._lock, made)
                elif not extras_needed:
                    reconfigure(state, spec, self._ledger, self._lock, ())
            return spec.generation

    def _reloaded(self, generation: int) -> None:
        """Report a reload that took effect."""
        with self._lock:
            self._reloads["succeeded"] += 1
        _LOG.info("policy %r reloaded: configuration %d", self.name, generation)
        telemetry = self._telemetry
        if telemetry.enabled:
            telemetry.report(Event.POLICY_RELOADED, PolicyReloaded(generation))

    def _reload_failed(self, error: BaseException) -> None:
        """Report a reload that was refused (nothing changed)."""
        with self._lock:
            self._reloads["failed"] += 1
        report_failure(self.name, error, self.generation, self._telemetry)

    # ------------------------------------------------------------------ statistics

    def _extra_links(self) -> list[tuple[str | None, tuple[tuple[int, Step], ...]]]:
        """Return the extra links of the unkeyed calls' pipeline and of each live key's: ``(key, links)``.

        The key is ``None`` for the unkeyed calls, else its text; a state without extra links is
        left out. Read under the policy's lock (a reload replaces a key's pipeline and links
        under it); the links' ``get_stats()`` (user code) are read after, by the caller.
        """
        with self._lock:
            states = [self._default, *(state for state in self._keys.values() if state.live)]
            return [(state.text, state.extras) for state in states if state.extras]

    def get_stats(self) -> PolicyStatsDict:
        """Return the policy's counts, evicted keys included: they never go down.

        Returns:
            ``name``, ``generation``, ``keys`` (kept now), ``max_keys``, ``idle_ttl``,
            ``evicted_keys``; ``executions`` (as ``get_resilience_statistics()["executions"]``,
            over every key and the unkeyed calls); ``circuit_breaker`` (the breakers' summed
            ``total_*`` counts and ``times_opened``, and ``open_keys``: how many are OPEN now),
            ``bulkhead`` (``total``, ``completed``, ``rejected``, ``timed_out``, ``cancelled``,
            and ``active`` / ``waiting`` now) and ``rate_limiter`` (``admitted``, ``rejected``,
            ``waited``, ``cancelled``, and ``waiting`` now); ``retry`` (``executions``,
            ``attempts``, ``retries``, ``retries_denied`` (by the retry budget), ``exhausted``,
            ...: as ``Retry.get_stats()``), ``timeout`` (``total_timeouts``: the ``timeout``
            expired, ``attempt_timeouts``: the ``retry_policy.attempt_timeout``), ``hedging``
            (``hedges`` sent, ``original_wins``, ``hedge_wins``, ...: as ``Hedging.get_stats()``),
            ``fallback`` (``fallbacks_used``, ...: as ``FallbackHandler.get_stats()``) and
            ``chaos`` (``runs``, ``faults``, ``latencies``, ``outcomes``, ``errors``), each
            summed over the keys and the unkeyed calls, and each ``None`` when the config has no
            such pattern (``timeout``: neither deadline); ``reloads`` (``succeeded``, ``failed``).
        """
        self._keys.expire()
        with self._lock:
            # Every key is counted once: kept, or evicted and not folded yet (the store hands it
            # over after it left, outside its lock), or folded into the ledger (under this lock).
            states = [self._default, *(s for s in self._keys.values(evicting=True) if not s.folded)]
            stats = policy_stats(self._spec.config, states, self._ledger)
            reloads = self._reloads.copy()
        keys = self._keys
        return {
            "name": self.name,
            "generation": self.generation,
            "keys": len(keys),
            "max_keys": keys.capacity,
            "idle_ttl": keys.ttl,
            "evicted_keys": keys.evicted,
            "executions": stats["executions"],
            "circuit_breaker": stats["circuit_breaker"],
            "bulkhead": stats["bulkhead"],
            "rate_limiter": stats["rate_limiter"],
            "retry": stats["retry"],
            "timeout": stats["timeout"],
            "hedging": stats["hedging"],
            "fallback": stats["fallback"],
            "chaos": stats["chaos"],
            "reloads": reloads,
        }

    def __repr__(self) -> str:
        return f"PolicyHandle({self.name!r}, generation={self.generation}, keys={len(self._keys)})"


class KeyedPolicyView(_Runs):
    """One key of a :class:`PolicyHandle`: calls through it use the key's breaker, bulkhead and limiter.

    Made by :meth:`PolicyHandle.for_key`. It holds no state: each call finds the key's state,
    by the key's text (:func:`~otel_resilience.engine.store.key_text`, taken once, here), so its
    key and policy are fixed (read-only attributes).

    Raises:
        TypeError: ``key`` is not hashable, or is ``None``.
    """

    __slots__ = ("_key", "_policy", "_text")

    _owner: ClassVar[str] = "KeyedPolicyView"

    policy = ReadOnly[PolicyHandle]("_policy", "The policy handle.")

    key = ReadOnly[Hashable]("_key", "The key, as given.")

    def __init__(self, policy: PolicyHandle, key: Hashable) -> None:
        self._policy = policy
        self._key = key
        self._text = key if type(key) is str else key_text("PolicyHandle.for_key", key)

    def protect(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or async) so that every call runs with this key's state.

        Raises:
            TypeError: As :meth:`PolicyHandle.protect`.
        """
        enter = functools.partial(self._policy._enter, self._text)
        return protect(self._policy._name, enter, fn, "KeyedPolicyView.protect", self._policy.config)

    def _enter_state(self) -> KeyState:
        return self._policy._enter(self._text)

    def __repr__(self) -> str:
        return f"KeyedPolicyView({self._policy._name!r}, {self._key!r})"


def _keeps(handle: weakref.ref[PolicyHandle]) -> Callable[[KeyState], bool]:
    """Return :meth:`PolicyHandle._keeps` of ``handle`` while it lives (held by key breakers: no cycle)."""

    def keeps(state: KeyState) -> bool:
        policy = handle()
        return policy is not None and policy._keeps(state)

    return keeps


async def run(state: KeyState, fn: Callable[..., Awaitable[Any]], args: Any, kwargs: Any) -> Any:
    """Await ``fn`` in ``state``'s current pipeline; count the call out of the key at the end."""
    try:
        return await state.pipeline.execute_packed(fn, args, kwargs)
    finally:
        state.leave()


def run_sync(state: KeyState, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Call ``fn`` in ``state``'s current pipeline; count the call out of the key at the end."""
    try:
        return state.pipeline.execute_packed_sync(fn, args, kwargs)
    finally:
        state.leave()


def check_drivable(owner: str, name: str, config: ResilienceConfig, fn: object) -> None:
    """Refuse, when it is decorated, a sync ``fn`` under ``config`` if it hedges or its fallback is async.

    The one rule of ``@resilient`` and of a policy handle's (or key view's) ``protect``: hedging
    is async only (its attempts run side by side as tasks of an event loop), and a fallback with
    an async part (a coroutine ``fallback_function``, an async cache service: see
    :func:`~otel_resilience.patterns.fallback._step.first_async_part`) cannot be awaited by the
    sync driver, so every call of a sync function under it would fail with a ``TypeError`` (a
    ``FallbackHandler``'s own ``protect`` refuses it too). A reload that adds hedging or such a
    fallback to a named policy later is not refused for the sync functions it protects: their
    calls fail then, each with that ``TypeError`` (as ``execute_sync`` under it does).

    Raises:
        TypeError: ``config`` hedges (``"<owner>: policy ... hedges ..."``) or its fallback has an
            async part (``"<owner>: policy ... falls back through ..."``), and ``fn`` is not async.
    """
    fallback = config.fallback_config
    if (config.hedging is None and fallback is None) or is_async_callable(fn):
        return
    if config.hedging is not None:
        msg = (
            f"{owner}: policy {name!r} hedges (ResilienceConfig.hedging), which is async only: "
            "its attempts run side by side as tasks of an event loop; decorate an async function"
        )
        raise TypeError(msg)
    part = None if fallback is None else first_async_part(fallback)
    if part is not None:
        msg = (
            f"{owner}: policy {name!r} falls back through {part}, which is async (a coroutine "
            "function, or an object whose __call__ is one: ResilienceConfig.fallback_config), and "
            "a sync call cannot await it; decorate an async function, or make it sync"
        )
        raise TypeError(msg)


def protect(
    name: str, enter: Callable[[], KeyState], fn: Callable[P, R], owner: str, config: ResilienceConfig
) -> Callable[P, R]:
    """Wrap ``fn`` so that each call enters a state (``enter()``) and runs in its pipeline.

    Raises:
        TypeError: ``fn`` is not callable, is a generator function, or is sync and ``config``
            (the policy's config now) hedges (:func:`check_drivable`).
    """
    check_protectable(name, fn)  # first: a classmethod object is not callable
    if not callable(fn):
        raise not_callable(owner, fn)
    check_drivable(owner, name, config, fn)
    wrapper: Callable[..., Any]
    if is_async_callable(fn):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await run(enter(), fn, args, kwargs)

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return run_sync(enter(), fn, args, kwargs)

        wrapper = sync_wrapper
    return keep_metadata(name, wrapper, fn)


def report_failure(
    name: str, error: BaseException, generation: int, telemetry: StrategyTelemetry | None = None
) -> None:
    """Report a refused reload of policy ``name``: a warning log, a span event and ``resilience.reload``.

    ``name`` is one ``policy()`` takes (a name it refuses is refused before anything is reported).
    """
    kind = error_type_name(error)
    _LOG.warning("reload of policy %r refused, nothing changed: %s: %s", name, kind, error)
    telemetry = telemetry or StrategyTelemetry.of("pipeline", name, name)
    if telemetry.enabled:
        telemetry.report(Event.RELOAD_FAILED, ReloadFailed(kind, generation))
