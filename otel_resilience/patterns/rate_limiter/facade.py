"""The rate limiter's public face: :class:`RateLimiter`, and :class:`KeyedRateLimiter` (one per key)."""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Final, Generic, ParamSpec, TypedDict, TypeVar, cast

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, check_clock
from otel_resilience.engine.events import StrategyTelemetry, key_attribute
from otel_resilience.engine.facade import Held, Pattern, verb
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.guard import Guard, HeldGuard
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import (
    KEYED_RATE_LIMITERS,
    PIPELINES,
    RATE_LIMITERS,
    NamesakeOwner,
    namesakes_expected,
)
from otel_resilience.engine.shared import shared_key
from otel_resilience.engine.store import BoundedStore, InUse, key_text, weak_callback
from otel_resilience.engine.validation import check_name, fail
from otel_resilience.patterns.rate_limiter.config import KIND, RateLimiterConfig
from otel_resilience.patterns.rate_limiter.rules import RateLimiterStatsDict, new_rules
from otel_resilience.patterns.rate_limiter.step import _ClusterRateLimiterStep, _RateLimiterStep
from otel_resilience.patterns.rate_limiter.totals import KeyTotals

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from typing_extensions import Unpack

__all__ = ["DEFAULT_MAX_KEYS", "KeyedOptions", "KeyedRateLimiter", "RateLimiter"]

DEFAULT_MAX_KEYS: Final = 1024
"""Keys a :class:`KeyedRateLimiter` keeps unless configured otherwise."""

K = TypeVar("K", bound=Hashable)
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class KeyedOptions(TypedDict, total=False):
    """The keyword arguments :meth:`RateLimiter.per_key` passes on to :class:`KeyedRateLimiter`."""

    max_keys: int
    """Keys kept at most (default :data:`DEFAULT_MAX_KEYS`)."""
    clock: Clock
    """The time source of every key's limiter."""


class RateLimiter(Pattern[RateLimiterConfig, _RateLimiterStep], kind=KIND):
    """Admits at most ``rate`` calls per second on average (``burst`` at once), shared by tasks and threads.

    Example::

        limiter = RateLimiter("search_api", RateLimiterConfig(rate=10.0, burst=5, max_wait=1.0))
        result = await limiter.call(search, query)
        result = limiter.call_sync(search_sync, query)       # from a worker thread

    One limiter may be used from the event loop (:meth:`call`), from threads (:meth:`call_sync`),
    as a decorator (:meth:`protect`), around a block (:meth:`guard`) and inside pipelines
    (:meth:`as_strategy`) at the same time: all of them take permits from the same bucket.

    Args:
        name: The limiter's name (bounded: it becomes a telemetry attribute).
        config: Rate, burst, algorithm and waiting. Required (for type checkers too; ``None``
            raises ``TypeError``), as a rate has no safe default.
        clock: The clock permits are timed on and waits sleep on.

    Raises:
        TypeError: ``name``, ``config`` or ``clock`` has the wrong type (``config`` is ``None``).
        ValueError: ``name`` is empty.
    """

    __slots__ = ("_rules",)

    def __init__(self, name: str, config: RateLimiterConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if not isinstance(config, RateLimiterConfig):  # None too: a rate has no default
            raise fail(
                "RateLimiter", "config", "a RateLimiterConfig (its rate is required)", config, kind=TypeError
            )
        super().__init__(name, config, clock)
        self._rules = new_rules(config) if config.store is None else config.store.rate_rules(name, config)
        RATE_LIMITERS.register(self)

    @classmethod
    def per_key(
        cls, name: str, config: RateLimiterConfig, **options: Unpack[KeyedOptions]
    ) -> KeyedRateLimiter[Hashable]:
        """Return ``KeyedRateLimiter(name, config, ...)``: a :class:`RateLimiter` per key (tenant, client).

        ``limiter.for_key(tenant)`` returns the key's limiter, with ``config``'s rate and burst;
        the key is never in telemetry. :class:`KeyedRateLimiter` says how keys are kept and
        evicted, and what each argument must be (it raises ``TypeError``/``ValueError`` naming
        the field).

        Args:
            name: As :class:`KeyedRateLimiter`.
            config: As there.
            **options: As there: ``max_keys`` (default :data:`DEFAULT_MAX_KEYS`), ``clock``.
        """
        return KeyedRateLimiter(name, config, **options)

    def _reconfigure(self, config: RateLimiterConfig) -> bool:
        """Take ``config`` now, keeping the permits used (:meth:`_Rules.retune`), if it can.

        For an owner that rebuilds every link of this limiter afterwards (a manager policy).

        Returns:
            ``False`` (nothing changed) when ``config`` names another algorithm: the owner then
            makes a new limiter.
        """
        if not self._rules.retune(config, self._clock.now()):
            return False
        self._configured(config)
        return True

    def _link(self, telemetry: StrategyTelemetry) -> _RateLimiterStep:
        step = _RateLimiterStep if self._config.store is None else _ClusterRateLimiterStep
        return step(self._name, self._config, self._clock, self._rules, telemetry)

    call = verb(
        Pattern.run,
        "Await ``fn(*args, **kwargs)`` once a permit is taken (waiting for it up to ``config.max_wait``).",
        returns="What ``fn`` returned.",
        raises=(
            (
                "RateLimitedError: No permit is free and none may be waited for (within ``max_wait`` and "
                "before the deadline of an enclosing timeout scope); ``fn`` was not called."
            ),
            "Exception: Whatever ``fn`` raised, unchanged.",
        ),
    )

    call_sync = verb(
        Pattern.run_sync,
        "Call ``fn(*args, **kwargs)`` in this thread once a permit is taken (blocking while it waits).",
        returns="What ``fn`` returned.",
        raises=(
            "RateLimitedError: As :meth:`call`.",
            "Exception: Whatever ``fn`` raised, unchanged.",
        ),
    )

    def guard(self) -> Guard:
        """Return a context manager that takes a permit before a block (sync or async).

        ``async with limiter.guard(): ...`` in coroutines, ``with limiter.guard(): ...`` in
        threads: entering takes a permit as a call does (waiting for it, or raising
        :class:`~otel_resilience.errors.RateLimitedError`); the block counts as an execution of
        the limiter's own pipeline. Use it where the limited work is not one function call.

        Returns:
            A guard that serves one block at a time (each entry takes a permit): keep it for
            block after block, or make one per block that may run beside another.
        """
        return Guard(self._pipeline)

    def try_acquire(self) -> bool:
        """Take a permit now if one is free, without waiting and without running anything.

        A refusal counts in ``rejected`` (no event is reported: no call was rejected).

        A limiter whose permits a store shares (``RateLimiterConfig.store``) asks it in this
        thread, never past the caller's deadline, as a call does: inside a deadline that passes
        before the store answers (or has passed already), it raises, as the wait of a call does.

        Returns:
            ``True`` if a permit was taken.

        Raises:
            WaitDeadlineReachedError: A shared limiter's store did not answer before the caller's
                deadline (counted in ``cancelled``); the scope that owns the deadline raises its
                timeout (:class:`~otel_resilience.errors.OperationTimeoutError`) for it.
        """
        return self._rules.acquire(self._clock.now(), 0.0) is None

    @property
    def available(self) -> float:
        """Permits that could be taken now; negative when permits are reserved ahead for waiters.

        Token bucket: the tokens in the bucket (fractional while it refills). Sliding window:
        ``burst`` minus the admissions in the last window (reservations included). A limiter whose
        permits a store shares reads the cluster's figure from the store, in this thread (one
        round trip, bounded as ``try_acquire``'s), or its fallback's while the store is unreachable.
        """
        return self._rules.available(self._clock.now())

    @property
    def waiting(self) -> int:
        """Callers waiting for a permit now.

        Read as :meth:`get_stats` reads it: a waiter freed unfinished while another held the
        limiter's lock (its reservation left for the lock's next holder) no longer counts.
        """
        return self.get_stats()["waiting"]

    def get_stats(self) -> RateLimiterStatsDict:
        """Return a consistent snapshot of the counts.

        Returns:
            ``name``, ``algorithm``, ``rate``, ``burst``, ``admitted`` (permits taken, at once or
            after a wait), ``rejected`` (calls and ``try_acquire`` refused), ``waited`` (permits
            taken after a wait: part of ``admitted``), ``cancelled`` (waiters that gave their
            reservation back), ``waiting`` (callers waiting now) and ``available`` (see
            :attr:`available`; for a limiter whose permits a store shares, its fallback's figure:
            a snapshot, which a metrics collection reads, asks the store nothing).
        """
        return self._rules.snapshot(self._name, self._clock.now())

    _own_stats = get_stats
    """:meth:`get_stats` of this limiter's own bucket, whatever a subclass's reads: what its exports,
    its fold and its key's eviction read (a key's limiter kept past its key's eviction reads the
    key's limiter in use in :meth:`get_stats`, :attr:`available` and :attr:`waiting`)."""

    def __repr__(self) -> str:
        config = self._config
        return (
            f"RateLimiter({self._name!r}, rate={config.rate:g}/s, burst={config.burst}, {config.algorithm})"
        )


class _HeldRateLimiter(Held, RateLimiter):
    """An owned limiter (a keyed policy's): its calls, blocks and ``try_acquire`` run held.

    Held from before a permit is asked for, so the key is not evicted meanwhile, and a limiter
    the key no longer uses (evicted, or replaced by a reload) gives no permit: the key's calls
    take theirs from the limiter in use, so one of another would be one over the rate
    (``Pattern._hold_by``). A keyed limiter's key limiters route instead (:class:`_HeldKeyLimiter`).
    """

    __slots__ = ()

    call = Held._held_run
    call_sync = Held._held_run_sync
    guard = Held._held_guard

    def try_acquire(self) -> bool:
        with self._held():
            return RateLimiter.try_acquire(self)


class KeyedRateLimiter(Generic[K]):
    """A :class:`RateLimiter` per key (tenant, client, API key), with a bounded number of keys.

    Made by :meth:`RateLimiter.per_key`. Every key's limiter has the same name, configuration and
    clock, so telemetry stays bounded: the key is never a telemetry attribute. A key is its text,
    ``str(key)``, as a manager policy's (:meth:`for_key`); the keys are kept in the engine's
    :class:`~otel_resilience.engine.store.BoundedStore`: past ``max_keys``, the least recently
    used **idle** keys are evicted (a key with a call, block or ``try_acquire`` of its limiter
    running, a link of its limiter (``as_strategy``) alive, or a waiting caller, is not idle),
    and the store shrinks back to ``max_keys`` as keys turn idle.

    **An evicted key starts again with a full bucket** (an empty window), so it may admit up to
    ``burst`` more sooner than its old state would have: give ``max_keys`` room for the keys
    active within ``burst / rate`` seconds. A key's limiter is held as a keyed policy's is
    (``Pattern._hold_by``): its calls, ``protect``-ed calls, ``guard()`` blocks and
    ``try_acquire`` hold the key from their start to their end. A kept limiter follows its key:
    once the key was evicted, its next use makes the key a new limiter, and those of a limiter a
    caller kept (a function it protects, a guard made of it, at each block's entry) run on the
    key's limiter in use, taking their permits from the key's one bucket and counting there,
    never from a second bucket of the key (a keyed limiter's config never changes: any limiter
    of the key serves a call alike), and its :attr:`~RateLimiter.available`,
    :attr:`~RateLimiter.waiting` and :meth:`~RateLimiter.get_stats` read that limiter too. An
    evicted limiter a caller kept keeps its keyed limiter alive, so that it goes on following
    its key; one its key still used when the keyed limiter was dropped is the key's only
    limiter, and runs on its own bucket. It is not copied or pickled (``TypeError``).
    What an evicted key counted stays in ``resilience.rate_limiter.permits``
    (summed under the name), so the exported counter never goes down; so do the executions
    of the keys' :meth:`~RateLimiter.call` and :meth:`~RateLimiter.call_sync` in
    ``resilience.executions``: every key's own pipeline counts into one set of counts, which
    the keyed limiter exports for as long as it lives. From its creation it also exports the
    keys it keeps, its ``max_keys`` and the keys it evicted (``resilience.rate_limiter.keys``,
    ``key_limit`` and ``key_evictions``, read at collection time as :meth:`get_stats` reads them):
    evictions at a steady rate while the keys sit at ``max_keys`` are churn that hands keys full
    buckets again.

    Args:
        name: The name of every key's limiter.
        config: Every key's configuration.
        max_keys: How many keys are kept while idle (an ``int >= 1``).
        clock: The clock of every key's limiter.

    Raises:
        TypeError: ``name``, ``config``, ``max_keys`` or ``clock`` has the wrong type.
        ValueError: ``name`` is empty, or ``max_keys`` is an ``int < 1``.
    """

    __slots__ = ("__weakref__", "_clock", "_config", "_executions", "_keys", "_name", "_owner", "_totals")

    def __init__(
        self,
        name: str,
        config: RateLimiterConfig,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        check_name("KeyedRateLimiter", "name", name)
        if not isinstance(config, RateLimiterConfig):
            raise fail("KeyedRateLimiter", "config", "a RateLimiterConfig", config, kind=TypeError)
        check_clock("KeyedRateLimiter", clock)
        self._name = name
        self._config = config
        self._clock = clock
        self._totals = KeyTotals(name)
        self._owner = NamesakeOwner()  # its keys' limiters share its name on purpose: no warning
        self._executions: Pipeline | None = None  # made by the first key's own pipeline
        self._keys: BoundedStore[str, RateLimiter] = BoundedStore(
            "KeyedRateLimiter",
            "max_keys",
            max_keys,
            is_idle=_retire_if_idle,
            on_evict=weak_callback(self._fold),  # the keyed limiter owns its store: no cycle
        )
        KEYED_RATE_LIMITERS.register(self)  # its keys, max_keys and evictions are exported

    name = ReadOnly[str]("_name", "The name of every key's limiter.")

    config = ReadOnly[RateLimiterConfig]("_config", "Every key's configuration.")

    max_keys = ReadOnly[int]("_keys.capacity", "How many keys are kept while idle.")

    evicted_keys = ReadOnly[int](
        "_keys.evicted", "How many keys were evicted so far (``get_stats()['evicted']``)."
    )

    @property
    def keys(self) -> int:
        """How many keys are kept now (``len(self)``, ``get_stats()['keys']``)."""
        return len(self._keys)

    def for_key(self, key: K) -> RateLimiter:
        """Return the limiter of ``key``, creating it (with a full bucket) if the key is new (or was evicted).

        A limiter kept past its key's eviction follows the key: its calls, blocks,
        ``try_acquire`` and figures (``available``, ``waiting``, ``get_stats()``) are the key's
        limiter in use's (this method's answer then).

        Args:
            key: A ``str``, or any hashable value, known by its text ``str(key)``
                (:func:`~otel_resilience.engine.store.key_text`): keys with one text share one
                limiter and one budget (``1`` and ``"1"``; ``1`` and ``1.0`` are two), with a
                store (which names the budget by the text) or without. Not ``None``.

        Raises:
            TypeError: ``key`` is not hashable, or is ``None``.
        """
        given: object = key  # K narrows to no str: its value does
        text = given if type(given) is str else key_text("KeyedRateLimiter.for_key", given)
        keys = self._keys
        found = keys.use(text)  # a key in use: no builder made for it
        if found is None:
            found, _ = keys.get_or_add(text, functools.partial(self._new, text))
        return found

    def _fold(self, key: str, limiter: RateLimiter) -> None:  # noqa: ARG002 - the store's signature
        """Keep what an evicted key's limiter counted: final, as its hold routes its uses on from now on.

        The limiter keeps this keyed limiter from now on (:meth:`_KeyHold.evicted`): a caller that
        kept it has its uses routed to the key's limiter in use for as long as it keeps it.
        """
        cast("_KeyLimiter", limiter).hold.evicted(self)
        self._totals.fold(limiter)

    def _new(self, key: str) -> RateLimiter:
        """Make ``key``'s limiter (with a store, the key's own budget there, named by its text)."""
        with namesakes_expected(self._owner), shared_key(key):
            return _KeyLimiter(self._name, self._config, self._clock, weakref.ref(self), key)

    def _count_into(self, pipeline: Pipeline) -> None:
        """Make a key's own pipeline (built unregistered) count into the keys' executions.

        The first one built becomes their carrier: registered, and kept by the keyed limiter for
        as long as it lives; every later one counts into its stats. So the series of the keys'
        executions never goes down when a key is evicted and its limiter (and pipeline) freed,
        as it would if each key's pipeline were exported itself.
        """
        carrier = self._executions
        if carrier is None:
            with _CARRIER_LOCK:
                carrier = self._executions
                if carrier is None:
                    self._executions = pipeline
                    PIPELINES.register(pipeline)
                    return
        pipeline.stats = carrier.stats

    def get_stats(self) -> dict[str, int]:
        """Return ``keys`` (kept now), ``max_keys`` and ``evicted`` (keys evicted so far)."""
        keys = self._keys
        return {"keys": len(keys), "max_keys": keys.capacity, "evicted": keys.evicted}

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyedRateLimiter({self._name!r}, keys={len(self._keys)}/{self._keys.capacity})"


_CARRIER_LOCK: Final = fork_safe(threading.Lock())
"""Held while a keyed limiter makes its executions' carrier (once, whichever thread asks first)."""


class _KeyLimiter(RateLimiter):
    """A key's limiter: held by its key (:class:`_KeyHold`); its own pipeline counts into its keyed limiter's.

    It refers to its keyed limiter weakly while its key keeps it (the keyed limiter keeps it: no
    cycle), strongly once evicted (:meth:`_KeyHold.evicted`); one its key still used when its keyed
    limiter was dropped is the key's only limiter, runs on its own bucket and exports its own pipeline.

    Attributes:
        hold: What its calls, blocks and ``try_acquire`` run within (``Pattern._hold_by``), and
            what says whether its key may be evicted (:func:`_retire_if_idle`).
    """

    __slots__ = ("_keyed", "hold")

    def __init__(
        self,
        name: str,
        config: RateLimiterConfig,
        clock: Clock,
        keyed: weakref.ref[KeyedRateLimiter[Any]],
        key: str,
    ) -> None:
        super().__init__(name, config, clock=clock)
        self._keyed = keyed
        self.hold = _KeyHold(self, keyed, key)
        self._hold_by(self.hold)  # a _HeldKeyLimiter from here

    def _build_pipeline(self, *, register: bool = True) -> Pipeline:  # noqa: ARG002 - its owner's rule
        pipeline = super()._build_pipeline(register=False)
        keyed = self._keyed()
        if keyed is None:
            PIPELINES.register(pipeline)
        else:
            keyed._count_into(pipeline)
        return pipeline


class _HeldKeyLimiter(_HeldRateLimiter, _KeyLimiter):
    """A key's limiter as it is given out: its uses and figures are its key's limiter in use's.

    Each takes the key's hold first (:meth:`_KeyHold.take`), which says which limiter it runs on:
    this one while its key keeps it; once the key was evicted, the one ``for_key`` gives the key
    now, so that a limiter a caller kept (a function it protects, a guard made of it) follows its
    key, taking its permits from the key's one bucket and counting there; its ``available``,
    ``waiting`` and ``get_stats()`` read that one the same way (:meth:`_in_use`). A key's limiter keeps
    its configuration for life (a keyed limiter has no reload): any of the key's limiters serves
    the call alike.
    """

    __slots__ = ()

    def _key_run(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """:meth:`Pattern.run` on the key's limiter in use (a non-callable ``fn`` refused at once)."""
        if not callable(fn):
            raise self._not_callable("run", fn)
        return _key_call(self, fn, args, kwargs)

    def _key_run_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """:meth:`Pattern.run_sync` on the key's limiter in use, within its hold."""
        limiter = self.hold.take(self)
        try:
            return Pattern.run_sync(limiter, fn, *args, **kwargs)
        finally:
            limiter.hold.leave()

    run = call = _key_run
    run_sync = call_sync = _key_run_sync

    def _in_use(self, read: Callable[[RateLimiter], T]) -> T:
        """Return ``read(limiter)`` of the key's limiter in use, within its hold, as a use runs there."""
        limiter = self.hold.take(self)
        try:
            return read(limiter)
        finally:
            limiter.hold.leave()

    @property
    def available(self) -> float:
        """As :attr:`RateLimiter.available`, of the key's limiter in use (:meth:`_in_use`)."""
        return self._in_use(_AVAILABLE)

    def get_stats(self) -> RateLimiterStatsDict:
        """As :meth:`RateLimiter.get_stats`, of the key's limiter in use (and so :attr:`waiting`).

        Kept past its key's eviction, the limiter reads the figures of the one its calls run on,
        made for the key if it has none (as a call makes it); its own, final once folded, are
        what its exports and fold read (:attr:`RateLimiter._own_stats`).
        """
        return self._in_use(RateLimiter._own_stats)

    def try_acquire(self) -> bool:
        """As :meth:`RateLimiter.try_acquire`, on the key's limiter in use, within its hold."""
        limiter = self.hold.take(self)
        try:
            return RateLimiter.try_acquire(limiter)
        finally:
            limiter.hold.leave()

    def protect(self, fn: Callable[P, R]) -> Callable[P, R]:
        """:meth:`Pattern.protect`, each call of the wrapper on the key's limiter in use, within its hold."""
        Pattern.protect(self, fn)  # its checks: the wrapper it makes runs this limiter's pipeline only
        if is_async_callable(fn):  # the rule Pattern.protect chose the driver by
            run = cast("Callable[..., Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def key_async(*args: Any, **kwargs: Any) -> Any:
                return await _key_call(self, run, args, kwargs)

            return key_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def key_sync(*args: P.args, **kwargs: P.kwargs) -> R:
            return self._key_run_sync(fn, *args, **kwargs)

        return key_sync

    def guard(self) -> Guard:
        """As :meth:`RateLimiter.guard`; each block, from its entry, on the key's limiter in use then."""
        return _KeyGuard(self)

    def as_strategy(self, pipeline: str | None = None) -> _RateLimiterStep:
        """As :meth:`Pattern.as_strategy`, of the key's limiter in use: the key is kept while the link lives.

        A link takes its permits from its limiter's bucket for as long as it lives, out of any
        hold: its key is kept meanwhile (:meth:`_KeyHold.idle`), so that the key's next
        ``for_key`` never makes a second bucket beside it.
        """
        limiter = self.hold.take(self)
        try:
            link = RateLimiter.as_strategy(limiter, pipeline)
            limiter.hold.keep(link)
        finally:
            limiter.hold.leave()
        return link


async def _key_call(limiter: _KeyLimiter, fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any) -> R:
    """:meth:`Pattern.run` on the key's limiter in use, within its hold (:meth:`_HeldKeyLimiter._key_run`).

    The pipeline's coroutine is made here, once the hold is taken (as ``Held``'s is).
    """
    limiter = limiter.hold.take(limiter)
    try:
        return await Pattern.run(limiter, fn, *args, **kwargs)
    finally:
        limiter.hold.leave()


class _KeyGuard(HeldGuard):
    """A guard of a key's limiter: each block, from its entry, runs on the key's limiter in use then.

    Its entry takes the key's hold (:meth:`_KeyHold.take`) and admits the block through the
    pipeline of the limiter the hold gave. While a block holds the guard, the limiter it holds
    is the key's, so every entry meanwhile is given that one too.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: _KeyLimiter) -> None:
        super().__init__(limiter._pipeline, limiter._held)
        self._limiter = limiter

    def _take(self) -> _KeyHold:
        limiter = self._limiter.hold.take(self._limiter)
        try:
            self._pipeline = limiter._pipeline  # read by the entry once it holds the guard (its step)
        except BaseException:  # its pipeline could not be built: the hold is let go
            limiter.hold.leave()
            raise
        return limiter.hold


class _KeyHold(InUse):
    """The hold of a key's limiter (``Pattern._hold_by``): the key's uses, counted as a keyed policy's calls.

    A call, a ``guard()`` block (from before it asks for its permit to its end) or a
    ``try_acquire`` counts itself into the key (:meth:`take`), so the key is not evicted while it
    runs. The key is evicted only while no use runs and no caller waits in its limiter (a waiter
    of a link of it in a pipeline of one's own). Once it was, a use of the limiter a caller kept
    runs on the key's limiter in use instead (:meth:`take`): never a second bucket for one key.
    """

    __slots__ = ("_keeps", "_keyed", "_limiter", "_links", "key", "name")

    def __init__(self, limiter: RateLimiter, keyed: weakref.ref[KeyedRateLimiter[Any]], key: str) -> None:
        super().__init__()
        self._limiter = weakref.ref(limiter)  # the limiter keeps its hold: no cycle
        self._keyed = keyed
        self._keeps: KeyedRateLimiter[Any] | None = None  # set once the key was evicted (evicted)
        self._links: weakref.WeakSet[_RateLimiterStep] | None = None  # made at the key's first link
        self.name = limiter.name
        self.key = key

    def evicted(self, keyed: KeyedRateLimiter[Any]) -> None:
        """Keep ``keyed`` alive from the key's eviction on, so that the limiter's uses follow the key.

        An evicted limiter a caller kept runs its uses, and reads its figures, on the key's limiter
        in use (:meth:`take`), which only its keyed limiter knows: were the keyed limiter dropped, the
        limiter would run on its old bucket again, beside the key's limiter in use another caller
        kept (two buckets for one key). No cycle: the keyed limiter no longer keeps this limiter. A
        limiter its key still uses when its keyed limiter is dropped is the key's only one, and runs
        on its own bucket.
        """
        self._keeps = keyed

    def keep(self, link: _RateLimiterStep) -> None:
        """Keep the key while ``link``, a link of its limiter (``as_strategy``), lives (:meth:`idle`)."""
        with _LINKS_LOCK:
            links = self._links
            if links is None:
                links = self._links = weakref.WeakSet()
            links.add(link)

    def take(self, limiter: _KeyLimiter) -> _KeyLimiter:
        """Count a use into the key; return the key's limiter it runs on, whose hold it leaves.

        The one rule of where a use of a key's limiter runs: on ``limiter`` (this hold's) while
        the key keeps it; once the key was evicted, on the key's limiter in use now
        (``keyed.for_key(key)``, made anew if none is), counted into that one's hold. The caller
        leaves with ``returned.hold.leave()``.
        """
        if self.enter():
            return limiter
        return self._route(limiter)

    def _route(self, limiter: _KeyLimiter) -> _KeyLimiter:
        """:meth:`take` for a key that looked evicted: kept after all, or the key's limiter in use now."""
        if self.enter_kept(self._kept):  # an eviction was deciding about the key: it kept it
            return limiter
        keyed = self._keyed()
        if keyed is None:  # no store left to evict the key, nor to make it another limiter (an
            # evicted limiter keeps its keyed limiter, evicted(): this one was never evicted)
            self.live = True
            return self.take(limiter)
        current = cast("_KeyLimiter", keyed.for_key(self.key))
        return current.hold.take(current)  # evicted meanwhile too: routed on from there

    def __call__(self, instance: Pattern[Any, Any]) -> _KeyHold:
        """The hold ``Pattern._held`` gives: a use counted in now (:meth:`take`), left at its exit.

        Its block runs within the hold of the key's limiter in use (the instance's, unless
        the key was evicted): the limiter's own verbs run on that limiter (:meth:`take`).
        """
        return self.take(cast("_KeyLimiter", instance)).hold

    def __enter__(self) -> None:
        """Nothing: the use was counted in when the hold was given (:meth:`__call__`, :meth:`take`)."""

    def __exit__(self, *exc: object) -> None:
        self.leave()

    def owner_of(self, instance: Pattern[Any, Any]) -> str:  # noqa: ARG002 - the Holder's signature
        """Say whose limiter it is and where the one in use is taken (a copy's refusal: ``Held``).

        The key is shown as its ``resilience.key`` is written (:func:`key_attribute`: a long one cut).
        """
        shown = key_attribute(self.key)
        whose = f"the limiter of key {shown!r} of keyed rate limiter {self.name!r}"
        return f"{whose}; take the one in use with keyed.for_key({shown!r})"

    def _kept(self) -> bool:
        """Whether the keyed limiter keeps the limiter for its key: an eviction decided (a use of the key)."""
        keyed, limiter = self._keyed(), self._limiter()
        return keyed is not None and limiter is not None and keyed._keys.use(self.key) is limiter

    def idle(self) -> bool:
        """Whether the key may be evicted: no use runs in it, no link of it lives, nobody waits in it."""
        if self.running or self._links:
            return False
        limiter = self._limiter()
        return limiter is None or limiter._own_stats()["waiting"] == 0


_LINKS_LOCK: Final = fork_safe(threading.Lock())
"""Taken to add a link a key keeps (:meth:`_KeyHold.keep`): a rare path, one lock for every key."""


_AVAILABLE: Final = cast("Callable[[RateLimiter], float]", vars(RateLimiter)["available"].fget)
"""What :attr:`RateLimiter.available` reads of a limiter: its own bucket's."""


def _retire_if_idle(limiter: RateLimiter) -> bool:
    """The keyed limiter's ``is_idle``: mark the key evicted if it is idle (:meth:`InUse.retire_if_idle`)."""
    return cast("_KeyLimiter", limiter).hold.retire_if_idle()
