"""The retry facade: :class:`Retry`, the :func:`retry` decorator and the one-shot functions."""

from __future__ import annotations

import random
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from types import BuiltinMethodType, FunctionType, MethodType, MethodWrapperType
from typing import Any, Final, ParamSpec, TypeVar, overload

from otel_resilience.engine.calling import NeverReturns, SyncCallOfCoroutineFunction, not_callable
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, check_clock, follow_process_clock
from otel_resilience.engine.counting import snapshot
from otel_resilience.engine.events import StrategyTelemetry, key_attribute
from otel_resilience.engine.facade import Pattern, config_or_default, verb
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.naming import callable_name
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.protecting import check_protectable, is_async_callable, rebuild_standalone
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import PIPELINES
from otel_resilience.engine.validation import check_callable, check_called_with, check_name, fail
from otel_resilience.patterns.retry.policy import _DEFAULT_POLICY, OnRetry, RetryPolicy, _check_rng
from otel_resilience.patterns.retry.stats import RetryStats
from otel_resilience.patterns.retry.step import _RetryCore, _RetryStep

__all__ = ["Retry", "retry", "retry_async", "retry_sync"]

P = ParamSpec("P")
R = TypeVar("R")


_RETURNS: Final = "The first accepted result (or the last result, if results were retried to the end)."
"""What both verbs of a retry return."""
_RAISES: Final = ("Exception: The last error, re-raised as is (with a note) when retrying stopped.",)
"""What both verbs of a retry raise, besides ``TypeError``."""


def _check_options(owner: str, on_retry: object, rng: object) -> None:
    """Refuse an ``on_retry`` not callable as ``on_retry(attempt, error)``, an ``rng`` not a Random.

    The rule of a retry's hook and random source, for :class:`Retry` and the :func:`retry`
    decorator that builds one (the message names ``<owner>.<field>``).
    """
    check_callable(owner, "on_retry", on_retry, optional=True)
    check_called_with(owner, "on_retry", on_retry, "attempt", "error")
    _check_rng(owner, rng)


class Retry(Pattern[RetryPolicy, _RetryStep], kind="retry"):
    """A named retry: a policy, an optional ``on_retry`` hook, and counts.

    Use it on its own (:meth:`execute`, :meth:`execute_sync`, :meth:`protect`) or compose it with
    other patterns through :meth:`as_strategy`. All of them share one policy and one
    :class:`RetryStats`.

    Args:
        name: The retry's name, used in telemetry and in the give-up note (bounded: a
            configured or function name, never user data).
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)``, called before each backoff with the number of
            the attempt that failed (unique in the execution) and its error (``None`` when a
            result was retried). Sync or async; the sync drivers refuse an async one. Its
            exceptions propagate, ending the execution as a failure (``non_retryable``).
        clock: Time source for backoff sleeps and deadlines (inject a ``FakeClock`` in tests:
            a ``Retry`` keeps the clock it is given, the system clock by default, whatever the
            clock of a :func:`~otel_resilience.testing.fresh_defaults` block; the
            :func:`~otel_resilience.retry` decorator given no clock follows that one).
        rng: Random source for jitter and ``RANDOM`` delays (seed one for reproducible delays).

    Raises:
        TypeError: An argument has the wrong type, or ``on_retry`` cannot be called as
            ``on_retry(attempt, error)``.
        ValueError: ``name`` is empty.
    """

    __slots__ = ("_core",)

    def __init__(
        self,
        name: str,
        policy: RetryPolicy | None = None,
        *,
        on_retry: OnRetry | None = None,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        policy = config_or_default("Retry", "policy", policy, _DEFAULT_POLICY)
        _check_options("Retry", on_retry, rng)
        super().__init__(name, policy, clock)
        self._core = _RetryCore(name, policy, on_retry, clock, rng)

    def _link(self, telemetry: StrategyTelemetry) -> _RetryStep:
        return _RetryStep(self._core, telemetry)

    policy = ReadOnly[RetryPolicy]("_config", "The retry's policy (its :attr:`config`).")

    stats = ReadOnly[RetryStats](
        "_core.stats", "The live counters (plain integers; read them, do not write them)."
    )

    def get_stats(self) -> dict[str, int]:
        """Return a consistent snapshot of the counters.

        Returns:
            ``executions``, ``attempts``, ``retries``, ``successes``,
            ``first_attempt_successes``, ``successes_after_retry``, ``exhausted``,
            ``retries_denied``, ``non_retryable``, ``cancelled`` and ``attempt_timeouts``; see
            :class:`RetryStats`.
        """
        core = self._core
        return snapshot(core.lock, core.stats.as_dict)

    def _check_protectable(self, fn: Callable[..., Any]) -> None:
        """Refuse a sync function while ``on_retry`` is async (after an async generator function)."""
        check_protectable(self.name, fn)
        if not is_async_callable(fn) and self._core.hook_is_async:
            raise self._core.async_hook_error()

    execute = verb(
        Pattern.run,
        "Return ``await fn(*args, **kwargs)``, retried per the policy.",
        returns=_RETURNS,
        raises=_RAISES,
    )

    execute_sync = verb(
        Pattern.run_sync,
        "Return ``fn(*args, **kwargs)``, retried per the policy, in the calling thread.",
        more="Backoffs block the thread (``clock.sleep_sync``).",
        refuses="``on_retry`` is async (refused before anything runs).",
        returns=_RETURNS,
        raises=_RAISES,
    )

    def __repr__(self) -> str:
        return f"Retry({self.name!r}, {self.policy!r})"

    def _follow_clock(self, clock: Clock) -> None:
        """Run on ``clock`` from the next call (:func:`~otel_resilience.engine.clock.follow_process_clock`).

        Its own pipeline, if built, runs a link built on ``clock`` (the same object, its counts
        kept: :func:`~otel_resilience.engine.protecting.rebuild_standalone`); a call in flight
        ends in the link, and on the clock, it started with.
        """
        self._clock = self._core.clock = clock
        rebuild_standalone(self, "_standalone", self._build_pipeline)


async def retry_async(
    fn: Callable[..., Awaitable[R]],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> R:
    """Return ``await fn(*args, **kwargs)``, retried per ``policy``.

    Runs ``fn`` with a :class:`Retry` named after it (its ``__qualname__``, as
    :func:`~otel_resilience.engine.naming.callable_name` names a callable), built on the first
    call and reused by later calls with the same name, policy object, hook, clock and random
    source (the same objects: a hook or clock merely equal to another gets its own; a
    :class:`Retry` holds no reference to the function). A hook written in the call
    (``on_retry=lambda attempt, error: ...``) is the same hook at every call when it closes over
    no variable: one with a closure (``self.log`` in a method) gets a :class:`Retry` per call.
    ``policy``, ``on_retry``, ``clock`` and ``rng`` are taken by this function, not passed on.
    So type checkers check what ``fn`` returns, not the arguments it is given: a ``ParamSpec``
    cannot type them beside keyword-only parameters of the function's own (PEP 612); a
    :class:`Retry`'s :meth:`~Retry.execute` checks both.

    Args:
        fn: An async function (or any callable returning an awaitable).
        *args: Its positional arguments.
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)`` before each backoff (sync or async).
        clock: Time source for sleeps and deadlines. Default: the process-wide clock, the
            process-wide manager's (the system clock, or the clock of a
            :func:`~otel_resilience.testing.fresh_defaults` block), followed as it changes.
        rng: Random source for jitter.
        **kwargs: Its keyword arguments.

    Returns:
        The first accepted result (or the last result, if results were retried to the end).

    Raises:
        TypeError: If ``fn`` is not callable (before anything runs).
        Exception: The last error, re-raised as is (with a note) when retrying stopped.
    """
    if not callable(fn):
        raise not_callable("retry_async", fn)
    return await _one_shot(fn, policy, on_retry, clock, rng)._pipeline.execute_packed(fn, args, kwargs)


@overload
def retry_sync(
    fn: Callable[..., NeverReturns],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> NeverReturns: ...
@overload
def retry_sync(
    fn: Callable[..., Coroutine[Any, Any, Any]],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> SyncCallOfCoroutineFunction: ...
@overload
def retry_sync(
    fn: Callable[..., R],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> R: ...
def retry_sync(
    fn: Callable[..., R],
    /,
    *args: Any,
    policy: RetryPolicy | None = None,
    on_retry: OnRetry | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    **kwargs: Any,
) -> R:
    """Return ``fn(*args, **kwargs)``, retried per ``policy``, in the calling thread.

    The sync twin of :func:`retry_async`; ``on_retry`` must be a plain function. Typed as
    :meth:`Pattern.run_sync <otel_resilience.engine.facade.Pattern.run_sync>` is.

    Args:
        fn: A plain function.
        *args: Its positional arguments.
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)`` before each backoff (sync only).
        clock: Time source for sleeps and deadlines. Default: the process-wide clock, the
            process-wide manager's (the system clock, or the clock of a
            :func:`~otel_resilience.testing.fresh_defaults` block), followed as it changes.
        rng: Random source for jitter.
        **kwargs: Its keyword arguments.

    Returns:
        The first accepted result (or the last result, if results were retried to the end).

    Raises:
        TypeError: If ``fn`` is not callable or ``on_retry`` is async (before anything runs).
        Exception: The last error, re-raised as is (with a note) when retrying stopped.
    """
    if not callable(fn):
        raise not_callable("retry_sync", fn)
    return _one_shot(fn, policy, on_retry, clock, rng)._pipeline.execute_packed_sync(fn, args, kwargs)


_ONE_SHOT_MAX: Final = 256
"""How many entries the one-shot cache of :func:`retry_async` / :func:`retry_sync` keeps (a retry
built for a plain function hook has two: its hook's and its twin's, :func:`_hook_twin`)."""
_ONE_SHOT: dict[tuple[object, ...], tuple[RetryPolicy | None, Retry]] = {}
_CARRIERS: Final[dict[str, Pipeline]] = {}
"""The exported executions of the one-shot retries of each name (see :class:`_OneShotRetry`).

One empty pipeline per name, kept for good, as the series it carries is: names are the
functions' (:func:`~otel_resilience.engine.naming.callable_name`), so there are as many as the
program has functions retried this way, whatever the hooks and however many retries are dropped.
"""
_CARRIERS_LOCK: Final = fork_safe(threading.Lock())
"""Held while the carrier of a name is made (once, whichever thread asks first)."""


def _one_shot(
    fn: Callable[..., Any],
    policy: RetryPolicy | None,
    on_retry: OnRetry | None,
    clock: Clock | None,
    rng: random.Random | None,
) -> Retry:
    """Return the :class:`Retry` the one-shot functions run ``fn`` with.

    A :class:`Retry` does not hold the function it runs, so one built for the same name (the
    function's name), policy object, hook, clock and random source is reused: the call builds
    nothing. The hook, clock and random source are the same objects: one that is only equal to
    another (compared by value) is kept under a key that tells it apart by identity
    (:func:`_by_identity`), looked up on this miss path. A hook made anew by each call from the
    same code (``on_retry=lambda ...`` written in the call, as in the SPEC) is the same hook
    when it runs as the first one does
    (:func:`_hook_twin`): the retry built for that one is reused too, found on this miss path
    only. At most :data:`_ONE_SHOT_MAX` entries are kept (the cache is emptied when full). What a
    dropped retry counted stays exported: every retry built here counts its executions into the
    carrier of its name (:class:`_OneShotRetry`). Arguments are validated by :class:`Retry`
    before anything is kept.
    """
    name = callable_name(fn)
    try:
        key: tuple[object, ...] = (name, id(policy), on_retry, clock, rng)
        entry = _ONE_SHOT.get(key)
    except TypeError:  # an unhashable hook or clock: build one for this call
        return _built(_OneShotRetry, key_attribute(name), policy, on_retry, clock, rng)
    if entry is not None and entry[0] is policy:
        return entry[1]
    held = (_by_identity(on_retry), _by_identity(clock), _by_identity(rng))
    if held[0] is not on_retry or held[1] is not clock or held[2] is not rng:  # one is compared by value
        key = (name, id(policy), *held)
        entry = _ONE_SHOT.get(key)
        if entry is not None and entry[0] is policy:
            return entry[1]
    twin = _hook_twin(on_retry)
    if twin is not None:
        twin = (name, id(policy), twin, *held[1:])
        entry = _ONE_SHOT.get(twin)
        if entry is not None and entry[0] is policy:
            return entry[1]
    # Named after the function, cut as a long key is if too long for a name (only when built).
    runner = _built(_OneShotRetry, key_attribute(name), policy, on_retry, clock, rng)
    if len(_ONE_SHOT) >= _ONE_SHOT_MAX - 1:
        _ONE_SHOT.clear()
    _ONE_SHOT[key] = (policy, runner)
    if twin is not None:
        _ONE_SHOT[twin] = (policy, runner)
    return runner


def _built(  # noqa: PLR0917 - a Retry's arguments, on the path that builds one
    kind: type[Retry],
    name: str,
    policy: RetryPolicy | None,
    on_retry: OnRetry | None,
    clock: Clock | None,
    rng: random.Random | None,
) -> Retry:
    """Build a retry of ``kind`` on ``clock``; given none, on the process-wide clock, which it follows.

    The rule of the retries the :func:`retry` decorator and the one-shot functions build: with
    no ``clock``, each runs on the process-wide manager's clock and moves to the next one
    (:func:`~otel_resilience.engine.clock.follow_process_clock`), so that a test's
    :func:`~otel_resilience.testing.fresh_defaults` block's clock takes their backoffs.
    """
    if clock is not None:
        return kind(name, policy, on_retry=on_retry, clock=clock, rng=rng)

    def build(process: Clock) -> Retry:
        retry = kind(name, policy, on_retry=on_retry, clock=process, rng=rng)
        # Its pipeline built on that clock before it can change: every later change relinks it.
        retry._pipeline  # noqa: B018 - built on first read
        return retry

    return follow_process_clock(build)


def _hook_twin(hook: object) -> tuple[object, ...] | None:
    """Return what a plain function that closes over nothing runs as, or ``None`` for any other hook.

    Two such functions with the same code, globals and default values (the same objects) run
    alike whichever is called: what each call of ``on_retry=lambda attempt, error: ...`` makes.
    A function that closes over variables (its cells made per call, their values free to change)
    is no twin of another.
    """
    if type(hook) is not FunctionType or hook.__closure__ is not None:
        return None
    kwdefaults = hook.__kwdefaults__ or {}
    held = (hook.__globals__, *(hook.__defaults__ or ()), *kwdefaults.values())
    return (hook.__code__, tuple(kwdefaults), _SameObjects(held))


_COMPARED_BY_IDENTITY: Final = frozenset({MethodType, BuiltinMethodType, MethodWrapperType})
"""Types with an ``__eq__`` of their own that tells objects apart as identity does (a bound
method: the same function of the same object, by identity, as its hash)."""


def _by_identity(held: object) -> object:
    """Return what stands for ``held`` (a hook, a clock, a random source) in a one-shot key.

    ``held`` itself when its type compares objects by identity (``object``'s ``__eq__``, or one of
    :data:`_COMPARED_BY_IDENTITY`); else, wrapped in :class:`_SameObjects`, so that a hook or a
    clock merely *equal* to another (a frozen dataclass, a class with ``__eq__`` and
    ``__hash__``) never finds the retry built for the other, which would call that other hook or
    sleep on that other clock. Asked on the miss path only.
    """
    kind = type(held)
    if kind.__eq__ is object.__eq__ or kind in _COMPARED_BY_IDENTITY:
        return held
    return _SameObjects((held,))


class _SameObjects:
    """Objects told apart by identity (hashed and compared by it), kept alive by the key that holds them.

    Globals and default values may be unhashable, or equal without being the same (two lists).
    """

    __slots__ = ("_hash", "objects")

    def __init__(self, objects: tuple[object, ...]) -> None:
        self.objects = objects
        self._hash = hash(tuple(map(id, objects)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if type(other) is not _SameObjects or len(other.objects) != len(self.objects):
            return False
        return all(mine is theirs for mine, theirs in zip(self.objects, other.objects, strict=True))


class _OneShotRetry(Retry):
    """A retry of the one-shot functions: its executions count into the carrier of its name.

    The one-shot functions keep a bounded number of retries (and build one per call for a hook
    that cannot be hashed), so the retries they drop are freed, each with its pipeline: a
    pipeline exported itself would take its executions out of ``resilience.executions`` when
    freed (a counter that goes down, which a backend reads as a reset). So a one-shot retry's
    pipeline is never exported; it counts into the stats of the one exported carrier of its
    name (:data:`_CARRIERS`), which a call still running in a dropped retry counts into too.
    """

    __slots__ = ()

    def _build_pipeline(self, *, register: bool = True) -> Pipeline:
        pipeline = super()._build_pipeline(register=False)
        pipeline.stats = _carrier(pipeline).stats
        if register:  # else built for its links only (a move to another clock: Retry._follow_clock)
            PIPELINES.announce(pipeline)  # its series start at 0, as a registered pipeline's do
        return pipeline


def _carrier(pipeline: Pipeline) -> Pipeline:
    """Return the carrier of the executions of the one-shot retries named as ``pipeline`` (made once)."""
    name = pipeline.name
    carrier = _CARRIERS.get(name)
    if carrier is None:
        with _CARRIERS_LOCK:
            carrier = _CARRIERS.get(name)
            if carrier is None:
                carrier = pipeline.carrier()
                PIPELINES.register(carrier, findable=False)
                _CARRIERS[name] = carrier
    return carrier


_FOLLOWING: Final[weakref.WeakKeyDictionary[Callable[..., Any], Retry]] = weakref.WeakKeyDictionary()
"""The retry of each function :func:`retry` decorated with no clock, alive while the function is.

Its wrapper holds only the retry's pipeline: this keeps the retry, which the process-wide clock
moves (:func:`~otel_resilience.engine.clock.follow_process_clock` holds it weakly).
"""


class _RetryDecorator:
    """What :func:`retry` returns: applied to a function, it builds one :class:`Retry` for it."""

    __slots__ = ("_name", "_options")

    def __init__(self, name: str | None, options: dict[str, Any]) -> None:
        self._name = name
        self._options = options  # the keyword arguments of every Retry it builds

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Return ``fn`` protected by a :class:`Retry` of its own, typed as ``fn`` is (as ``protect``)."""
        name = self._name if self._name is not None else key_attribute(callable_name(fn))
        check_protectable(name, fn)  # first: a classmethod object is not callable
        if not callable(fn):
            raise not_callable("retry", fn)
        options = self._options
        retry = _built(Retry, name, options["policy"], options["on_retry"], options["clock"], options["rng"])
        wrapper = retry.protect(fn)
        if options["clock"] is None:  # the retry follows the process-wide clock while it is in use
            _FOLLOWING[wrapper] = retry
        return wrapper


def retry(
    policy: RetryPolicy | None = None,
    *,
    on_retry: OnRetry | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    name: str | None = None,
) -> _RetryDecorator:
    """Return a decorator that retries a sync or async function: ``@retry(RetryPolicy(...))``.

    Each decorated function gets its own :class:`Retry`, built once at decoration time and
    named after the function (its ``__qualname__``, as
    :func:`~otel_resilience.engine.naming.callable_name` names a callable) unless ``name`` is
    given. The async or sync
    driver is chosen then, and the wrapper keeps the function's signature.

    Args:
        policy: What is retried and how (default: ``RetryPolicy()``).
        on_retry: ``on_retry(attempt, error)`` before each backoff (async only for async functions).
        clock: Time source for sleeps and deadlines. Default: the process-wide clock, the
            process-wide manager's (the system clock, or the clock of a
            :func:`~otel_resilience.testing.fresh_defaults` block), followed as it changes: a
            function decorated at import waits a test's backoffs on its block's fake clock.
        rng: Random source for jitter.
        name: The retry's name in telemetry (default: the function's, its ``__qualname__``).

    Returns:
        The decorator.

    Raises:
        TypeError: If ``policy`` is not a ``RetryPolicy`` (e.g. ``@retry`` without parentheses),
            ``on_retry`` cannot be called as ``on_retry(attempt, error)``, ``clock`` is not a
            ``Clock`` or ``rng`` not a ``random.Random``: when the decorator is made, naming
            ``retry.<field>``.
        ValueError: If ``name`` is empty.
    """
    if policy is not None and not isinstance(policy, RetryPolicy):
        raise fail("retry", "policy", "a RetryPolicy or None (use @retry())", policy, kind=TypeError)
    _check_options("retry", on_retry, rng)
    if clock is not None:
        check_clock("retry", clock)
    if name is not None:
        check_name("retry", "name", name)
    return _RetryDecorator(name, {"policy": policy, "on_retry": on_retry, "clock": clock, "rng": rng})
