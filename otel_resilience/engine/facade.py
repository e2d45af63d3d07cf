"""The facade every pattern shares: a named, configured pattern that runs calls through its link.

A pattern is used alone (its SPEC verbs: ``await breaker.call(fn)``, ``handler.with_timeout_sync(fn)``
...), as a decorator (:meth:`Pattern.protect`), as a context manager where it has one, and as a
link of a manager's pipeline (:meth:`Pattern.as_strategy`). Every one of these ways goes through
the same link, built by the pattern's :meth:`Pattern._link`: the verbs and ``protect`` run the
pattern's own one-link pipeline (built on first use from :meth:`Pattern.as_strategy`), a manager
adds a link of its own that shares the pattern's state.

A pattern's public verbs are :meth:`Pattern.run` and :meth:`Pattern.run_sync` under the names its
users know, made with :func:`verb`: the same code under another name and docstring, so that a call
of ``breaker.call`` costs no frame more than ``breaker.run`` would.
"""

from __future__ import annotations

import abc
import functools
import textwrap
import types
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Generic,
    NoReturn,
    ParamSpec,
    Protocol,
    SupportsIndex,
    TypeVar,
    cast,
    overload,
)

from otel_resilience.engine.calling import NeverReturns, SyncCallOfCoroutineFunction, not_callable
from otel_resilience.engine.clock import Clock, check_clock
from otel_resilience.engine.events import StrategyTelemetry, TelemetrySource, key_attribute
from otel_resilience.engine.guard import Guard, HeldGuard
from otel_resilience.engine.naming import callable_name
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.protecting import (
    check_protectable,
    is_async_callable,
    protect_with,
    rebuild_standalone,
    standalone,
)
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.step import Step
from otel_resilience.engine.validation import check_name, fail

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

__all__ = ["Held", "Link", "NotInUseError", "Pattern", "config_or_default", "not_in_use", "verb"]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")
L = TypeVar("L", bound=Step)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class Holder(Protocol):
    """An owner's hold of one of its instances (:meth:`Pattern._hold_by`)."""

    def __call__(self, instance: Pattern[Any, Any], /) -> AbstractContextManager[object]:
        """Keep ``instance`` in use from a block's start to its end (:class:`NotInUseError`: it is not)."""
        ...

    def owner_of(self, instance: Pattern[Any, Any], /) -> str:
        """Say whose ``instance`` is, and where the one in use is taken (read by a refusal only)."""
        ...


_HOLDERS: Final[weakref.WeakKeyDictionary[Pattern[Any, Any], Holder]] = weakref.WeakKeyDictionary()
"""Each owned instance's hold (:meth:`Pattern._hold_by`): kept beside the instances, not in a slot
of every one (a standalone instance has none, and keeps its bytes)."""

_HELD_CLASSES: Final[dict[type[Pattern[Any, Any]], type[Pattern[Any, Any]]]] = {}
"""Each pattern class's :class:`Held` subclass: what an instance of it given a hold becomes."""


class NotInUseError(RuntimeError):
    """What an owned instance's hold raises once its owner no longer uses it (:meth:`Pattern._hold_by`).

    An operator's action, or a call or block run with the instance itself, gets it as a
    ``RuntimeError``; an isolation (a breaker's) is refused by it (nothing isolated).
    """


def not_in_use(what: str, why: str, taken: str) -> NotInUseError:
    """Return the refusal of an owned instance its owner no longer uses (raised by the owner's hold).

    The one wording of every owner's: ``what`` names the instance (``rate limiter 'api' (key
    'a')``), ``why`` says what its owner did, ``taken`` where the one in use is taken again.
    """
    return NotInUseError(
        f"{what} is no longer in use: {why}, and its calls use another; take the one in use again: {taken}"
    )


def config_or_default(owner: str, field: str, value: T | None, default: T) -> T:
    """Return a pattern's configuration: ``value``, or ``default`` when it is ``None``.

    Raises:
        TypeError: ``value`` is neither ``None`` nor of ``default``'s class (the message names
            ``<owner>.<field>``).
    """
    if value is None:
        return default
    if not isinstance(value, type(default)):
        raise fail(owner, field, f"a {type(default).__name__} or None", value, kind=TypeError)
    return value


class Link(Step, Generic[C]):
    """A pattern's link: a :class:`Step` that carries its instance's name, configuration and clock.

    Args:
        name: The instance's name.
        config: The instance's configuration.
        clock: The clock of the link's deadlines and waits.
        telemetry: What the link reports through (the instance's own, or one for a pipeline).
    """

    __slots__ = ("_hold", "_telemetry", "clock", "config", "name")

    name: str
    config: C
    _hold: Callable[[], AbstractContextManager[object]]
    """Set on a link of an owned instance only (:meth:`Held.as_strategy`): its owner's hold."""

    def __init__(self, name: str, config: C, clock: Clock, telemetry: StrategyTelemetry) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.clock = clock
        self._telemetry = telemetry

    def operation(self, ctx: ExecutionContext) -> str:
        """Return what an execution of this link ran, as the operation its errors and events name.

        The one rule of every link that names its operation. In a pipeline (a manager's policy,
        a builder's), the pipeline's name (``ctx.operation``). Used alone (the instance's verbs,
        :meth:`Pattern.protect`), the instance runs its own one-link pipeline, named after the
        instance, whatever function it runs: there the function the execution ran names it
        (:func:`~otel_resilience.engine.naming.callable_name` of ``ctx.fn``), so that two
        functions are not one operation; a name longer than a telemetry attribute is cut by the
        rule of a name taken from a function (:func:`~otel_resilience.engine.events.key_attribute`:
        it cannot be refused as a configured name is). A link may run alone when its telemetry names no
        pipeline; that and the name are found only when asked, on a failure path: a call that
        succeeds pays nothing for it, and a link keeps no field for it.
        """
        fn = self.named_after(ctx)
        return ctx.operation if fn is None else key_attribute(callable_name(fn))

    def named_after(self, ctx: ExecutionContext) -> object | None:
        """Return the function the :meth:`operation` of an execution is named after, or ``None``.

        Used alone, the function the execution ran (``ctx.fn``); in a pipeline, ``None``: its
        operation is the pipeline's name. Two functions of two modules may share a name
        (``users.fetch`` and ``orders.fetch`` are both ``fetch``): what keeps a state per
        operation tells them apart by this function's module
        (:func:`~otel_resilience.engine.naming.callable_module`), while both keep the one name in
        telemetry. Asked only on a failure path, as :meth:`operation` is.
        """
        if ctx.operation == self.name and self._telemetry.source.pipeline is None:
            return ctx.fn
        return None


class Pattern(abc.ABC, Generic[C, L]):
    """A named pattern instance with a configuration (``C``) and a pipeline link (``L``).

    A subclass names its kind in its class statement (``class Bulkhead(Pattern[...], kind="bulkhead")``),
    builds its link in :meth:`_link`, and names :meth:`run` and :meth:`run_sync` after its SPEC
    verbs with :func:`verb`.

    Args:
        name: The instance's name (bounded: it becomes a telemetry attribute).
        config: Its configuration, already validated; or, with ``default``, ``None`` for it.
        clock: The clock its pipeline (and usually its link) runs on.
        default: The configuration ``None`` stands for, when the pattern has one: ``config`` is
            then checked to be ``None`` or of ``default``'s class.

    Raises:
        TypeError: ``name`` is not a string, ``clock`` is not a :class:`Clock`, ``config`` is
            not of ``default``'s class, or no class of the instance's names its ``kind``.
        ValueError: ``name`` is empty.
    """

    __slots__ = ("__weakref__", "_clock", "_config", "_name", "_standalone", "_telemetry")

    kind: ClassVar[str]
    """The pattern kind, in telemetry (the class statement's ``kind``)."""
    _owner: ClassVar[str]
    """The public class name error messages start with (``"CircuitBreaker"``): the declaring class's."""
    _verbs: ClassVar[Mapping[str, str]] = {}
    """The public name of each of :meth:`run` and :meth:`run_sync` (filled by :func:`verb`)."""

    def __init_subclass__(cls, *, kind: str | None = None, **kwargs: Any) -> None:
        """Declare a pattern: ``kind`` names it in telemetry, and its errors name the class.

        A subclass that gives no ``kind`` (a user's subclass of a pattern) keeps its base's
        kind and error names. A ``kind`` is shown as ``resilience.pattern``: one that is no name
        (:func:`~otel_resilience.engine.validation.check_name`) is refused here, naming
        ``<the class>.kind``.
        """
        super().__init_subclass__(**kwargs)
        if kind is not None:
            cls.kind = check_name(cls.__name__, "kind", kind)
            cls._owner = cls.__name__

    def __init__(self, name: str, config: C | None, clock: Clock, *, default: C | None = None) -> None:
        owner = getattr(type(self), "_owner", None)
        if owner is None:  # no class of its MRO named its kind (__init_subclass__)
            cls = type(self).__name__
            msg = (
                f"{cls} names no kind: a Pattern subclass names it in its class statement "
                f'(class {cls}(Pattern[...], kind="...")), its resilience.pattern in telemetry'
            )
            raise TypeError(msg)
        if default is not None:
            config = config_or_default(owner, "config", config, default)
        check_name(owner, "name", name)
        check_clock(owner, clock)
        self._name = name
        self._config: C = config  # type: ignore[assignment] # C itself where there is no default
        self._clock = clock
        # Made at first use (telemetry); until then None, or a keyed policy's key (_report_as).
        self._telemetry: StrategyTelemetry | TelemetrySource | str | None = None
        self._standalone: Pipeline | None = None

    if TYPE_CHECKING:
        # A property for type checkers, as protocols ask for one (recovery's ``Isolatable``):
        # pyright takes a ReadOnly for a property with no getter, which matches none.
        @property
        def name(self) -> str: ...  # noqa: D102 - documented by the ReadOnly below

    else:
        name = ReadOnly[str]("_name", "The instance's name.")

    @property
    def _pipeline(self) -> Pipeline:
        """The instance's own one-link pipeline, built on first use.

        An instance that only runs in other pipelines (a manager's) never builds one, so it
        exports no idle execution series.
        """
        pipeline = self._standalone
        if pipeline is not None:
            return pipeline
        return standalone(self, "_standalone", self._build_pipeline, config="_config")

    def _build_pipeline(self, *, register: bool = True) -> Pipeline:
        """Build the instance's own one-link pipeline (``register=False``: left out of the exports).

        Its link is made as :meth:`as_strategy`'s is, not by it: a pattern may keep track of the
        links it gives out there (a keyed rate limiter's key, kept while one lives).
        """
        telemetry = self.telemetry
        builder = PipelineBuilder(self._name, clock=self._clock, source=telemetry.source)
        return builder.add(self._link(telemetry)).build(register=register)

    config = ReadOnly[C]("_config", "The instance's configuration.")

    def _configured(self, config: C) -> None:
        """Take ``config`` as the instance's, for an owner that reconfigured its state in place.

        The instance's own pipeline, if it was built, runs a link built under ``config`` from
        now on; it stays the same object, with its stats and its place among the exported
        pipelines (:func:`~otel_resilience.engine.protecting.rebuild_standalone`). So a function
        :meth:`protect` decorated before the reload, and a guard made before it, follow it (a
        breaker's calls are judged by its current core), and the executions counted before the
        reload stay exported. The one rule of every pattern's ``_reconfigure``.
        """
        self._config = config
        rebuild_standalone(self, "_standalone", self._build_pipeline)

    @abc.abstractmethod
    def _link(self, telemetry: StrategyTelemetry) -> L:
        """Return a new, unlinked link of this instance that reports through ``telemetry``."""

    def as_strategy(self, pipeline: str | None = None) -> L:
        """Return a new, unlinked pipeline link that shares this instance's state and counts.

        Args:
            pipeline: The name of the pipeline (policy) the link will run in, for telemetry.

        Returns:
            A :class:`~otel_resilience.engine.step.Step` to add to a
            :class:`~otel_resilience.engine.pipeline.PipelineBuilder`.

        Raises:
            TypeError: ``pipeline`` is neither ``None`` nor a ``str``.
            ValueError: ``pipeline`` is empty.
        """
        return self._link(self._telemetry_for(pipeline))

    def _keyed_link(self, pipeline: str, key: str | None) -> L:
        """Return a link in the pipeline of a keyed policy's ``key`` (its own instance per key).

        Its events carry the key (``TelemetrySource.key``), so that what they raise (a full
        bulkhead's alert) tells the keys of one policy apart; ``None``: the link
        :meth:`Pattern.as_strategy` gives (a breaker's, whose core reports the key itself). The
        owner's own link: never held, as an owned instance's :meth:`as_strategy` is
        (:meth:`Held.as_strategy`), so a policy's calls pay nothing for a hold.
        """
        if key is None:
            return Pattern.as_strategy(self, pipeline)
        check_name(f"{self._owner}.as_strategy", "pipeline", pipeline)
        return self._link(StrategyTelemetry(TelemetrySource(self.kind, self._name, pipeline, key=key)))

    def _telemetry_for(self, pipeline: str | None) -> StrategyTelemetry:
        """Return the telemetry a link in ``pipeline`` reports through (the instance's own for ``None``)."""
        if pipeline is None:
            return self.telemetry
        check_name(f"{self._owner}.as_strategy", "pipeline", pipeline)
        return StrategyTelemetry.of(self.kind, self._name, pipeline)

    @property
    def telemetry(self) -> StrategyTelemetry:
        """What the instance reports its own events through (source without a pipeline).

        Made at first use: most instances run only in a manager's pipelines, whose links report
        through telemetry of their own, and never report an event of the instance's own.
        """
        telemetry = self._telemetry
        if isinstance(telemetry, StrategyTelemetry):
            return telemetry
        return self._own_telemetry()

    def _own_telemetry(self) -> StrategyTelemetry:
        """Make the instance's own telemetry and keep it (racing threads may each make one, alike).

        Of the source :meth:`_report_as` gave, if any. A pattern whose core reports events
        returns the core's instead (the breaker).
        """
        held = self._telemetry
        if isinstance(held, StrategyTelemetry):  # made meanwhile by another thread
            return held
        source = (
            held if isinstance(held, TelemetrySource) else TelemetrySource(self.kind, self._name, key=held)
        )
        telemetry = self._telemetry = StrategyTelemetry(source)
        return telemetry

    def _report_as(self, key: str, metric_key: str | None = None) -> None:
        """Report the instance's own events and executions as a keyed policy's ``key`` (its instance per key).

        Called once, when the key's instance is made, before it is given out: the links of its
        own (its verbs, ``protect``, ``guard()`` / ``slot()`` blocks, :meth:`as_strategy`) then
        name the key in their rejections and carry it on their spans (``TelemetrySource.key``),
        and on their metrics where the policy opted in (``metric_key``). A pattern whose core
        reports events sets the core's instead (the breaker). The telemetry is still made at
        first use (:attr:`telemetry`): until then only the key is kept (its source, where it has
        a metric attribute), at no cost per key.
        """
        self._telemetry = (
            key
            if metric_key is None
            else TelemetrySource(self.kind, self._name, key=key, metric_key=metric_key)
        )

    def _hold_by(self, holder: Holder) -> None:
        """Run the calls and blocks made with the instance itself within ``holder(self)``.

        For an owner that may stop using the instance (a named policy: its key evicted, or a
        reload that replaced it): ``holder(instance)`` raises when it no longer does
        (:class:`NotInUseError`), and keeps it in use from the start of a call or block to its
        end. Set once, before the instance is given out. The instance becomes its class's
        :class:`Held` subclass, whose verbs, ``protect``, guards (and the pattern's other
        actions that say so) take the hold first, so that a standalone instance's calls pay
        nothing for it; the owner's own calls (its pipelines' links) never look at it.
        """
        _HOLDERS[self] = holder
        held = _HELD_CLASSES.get(type(self))
        if held is not None:
            self.__class__ = held

    def _holder(self) -> Holder | None:
        """The owner's hold of the instance (:meth:`_hold_by`), or ``None``: read on rare paths only."""
        return _HOLDERS.get(self)

    def _held(self) -> AbstractContextManager[object]:
        """What a call, a block or an operator action runs within: the owner's hold, or nothing."""
        holder = _HOLDERS.get(self)
        return nullcontext() if holder is None else holder(self)

    @abc.abstractmethod
    def get_stats(self) -> Mapping[str, Any]:
        """Return a snapshot of the instance's counts (each pattern documents its keys)."""

    clock = ReadOnly[Clock]("_clock", "The clock the instance reads time from.")

    def _not_callable(self, verb: str, fn: object) -> TypeError:
        """Build the error for a non-callable ``fn`` given to ``verb`` (a base name, or ``"protect"``)."""
        public = self._verbs.get(verb, verb)
        return not_callable(f"{self._owner}.{public}", fn)

    # ``self`` is declared on the two verbs: read from a class (``Pattern.run`` given to :func:`verb`,
    # ``CircuitBreaker.call``), an undeclared one leaves the class's type arguments unknown to pyright.
    def run(
        self: Pattern[Any, Any], fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """Await ``fn(*args, **kwargs)`` through this instance's link.

        A plain function that returns the pipeline's coroutine (await it, or hand it to
        ``asyncio.create_task``): a coroutine of its own would add a frame to every call. A
        non-callable ``fn`` is therefore refused when the verb is called, before any await.

        Raises:
            TypeError: ``fn`` is not callable (or does not return an awaitable).
            Exception: The pattern's rejection, or what ``fn`` raised and the pattern passed on.
        """
        if not callable(fn):
            raise self._not_callable("run", fn)
        return (self._standalone or self._pipeline).execute_packed(fn, args, kwargs)

    @overload
    def run_sync(
        self: Pattern[Any, Any], fn: Callable[P, NeverReturns], /, *args: P.args, **kwargs: P.kwargs
    ) -> NeverReturns: ...
    @overload
    def run_sync(
        self: Pattern[Any, Any],
        fn: Callable[P, Coroutine[Any, Any, Any]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> SyncCallOfCoroutineFunction: ...
    @overload
    def run_sync(self: Pattern[Any, Any], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    def run_sync(self: Pattern[Any, Any], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` in this thread through this instance's link.

        For type checkers, a coroutine function's call returns
        :data:`~otel_resilience.engine.calling.SyncCallOfCoroutineFunction` (it raises
        ``TypeError``), a function that never returns keeps its ``NoReturn``.

        Raises:
            TypeError: ``fn`` is not callable (or is a coroutine function).
            Exception: The pattern's rejection, or what ``fn`` raised and the pattern passed on.
        """
        if not callable(fn):
            raise self._not_callable("run_sync", fn)
        return (self._standalone or self._pipeline).execute_packed_sync(fn, args, kwargs)

    def _check_protectable(self, fn: Callable[..., Any]) -> None:
        """Refuse, when it is decorated, a function this instance could never run (default: none)."""

    def protect(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so that every call runs through this instance's link.

        The async or sync driver is chosen once, here
        (:func:`~otel_resilience.engine.protecting.is_async_callable`). For type checkers the
        wrapper is ``fn``'s type: an async function's returns its coroutine, and a generic
        function stays generic (an overload for coroutine functions would claim a sync
        ``def f(x: T) -> T`` too, typing its wrapper as async).

        Args:
            fn: The function to protect (async or sync).

        Returns:
            A wrapper with ``fn``'s signature and metadata (``functools.wraps``).

        Raises:
            TypeError: ``fn`` is not callable, is a generator function (async or not) or a
                ``staticmethod``/``classmethod`` object (or the pattern refuses it: see its
                ``protect`` notes).
        """
        check_protectable(self._name, fn)  # first: a classmethod object is not callable
        if not callable(fn):
            raise self._not_callable("protect", fn)
        self._check_protectable(fn)
        return protect_with(self._pipeline, fn)


class Held(Pattern[Any, Any]):
    """The verbs of an owned instance (:meth:`Pattern._hold_by`), each run within its owner's hold.

    A call, a decorated function's call or a block made with the instance itself, rather than
    through its owner, is one of the owner's (a keyed policy's key) all the same: held, the key
    is not evicted while it runs, so what it takes (a slot, a permit, a probe) and counts is the
    key's; once the key was evicted (or a reload replaced the instance), it is refused before it
    runs (a keyed rate limiter's keys, never reloaded, run it on the key's limiter in use
    instead: their held class's verbs take the hold themselves). A pattern declares its held
    class as ``class _HeldBulkhead(Held, Bulkhead)`` and names its verbs after
    :meth:`_held_run`, :meth:`_held_run_sync` and :meth:`_held_guard`; never made directly, its
    layout is its pattern's. It is never copied (:meth:`__reduce_ex__`).
    """

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _HELD_CLASSES[cls.__bases__[-1]] = cls

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        """Refuse a copy of an owned instance: ``copy.copy``, ``copy.deepcopy`` and a pickle.

        The copy would have no hold: its calls, blocks and actions would run on once the owner
        no longer uses the instance (a key evicted, a reload that replaced it), beside the one
        the owner's calls use (a shallow copy shares the instance's slots, permits and state),
        and count where no one looks. An instance of no owner is copied as any object is.

        Raises:
            TypeError: Always, naming the instance, its owner and where the one in use is taken.
        """
        holder = _HOLDERS.get(self)
        whose = "" if holder is None else f" It is {holder.owner_of(self)}."
        msg = (
            f"{self._owner} {self._name!r} cannot be copied or pickled: its calls, blocks and actions "
            "run within its owner's hold, refused once the owner no longer uses it, and a copy would "
            f"run outside that hold.{whose} For one of your own, make a new {self._owner} of its config"
        )
        raise TypeError(msg)

    def _held_run(
        self: Pattern[Any, Any], fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        """:meth:`Pattern.run` within the hold (refusing a non-callable ``fn`` before any await)."""
        if not callable(fn):
            raise self._not_callable("run", fn)
        return _held_call(self, fn, args, kwargs)

    def _held_run_sync(
        self: Pattern[Any, Any], fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """:meth:`Pattern.run_sync` within the hold."""
        with self._held():
            return Pattern.run_sync(self, fn, *args, **kwargs)

    # The base verbs, public in every pattern beside the names its users know (``call``,
    # ``execute``), are the instance's own calls too: held as those are.
    run = _held_run
    run_sync = _held_run_sync

    def protect(self, fn: Callable[P, R]) -> Callable[P, R]:
        """:meth:`Pattern.protect`, each call of the wrapper within the hold."""
        protected = super().protect(fn)
        held = self._held
        if is_async_callable(fn):  # the rule Pattern.protect chose the driver by
            run = cast("Callable[..., Awaitable[Any]]", protected)

            @functools.wraps(fn)
            async def held_async(*args: Any, **kwargs: Any) -> Any:
                with held():
                    return await run(*args, **kwargs)

            return held_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def held_sync(*args: P.args, **kwargs: P.kwargs) -> R:
            with held():
                return protected(*args, **kwargs)

        return held_sync

    def _held_guard(self) -> Guard:
        """A guard of the instance's own pipeline whose blocks each run within the hold, entry to exit."""
        return HeldGuard(self._pipeline, self._held)

    def as_strategy(self, pipeline: str | None = None) -> Any:
        """:meth:`Pattern.as_strategy`, each execution of the link within the hold.

        A link given out runs calls made with the instance as its verbs do, in a pipeline of the
        caller's own: each execution of it takes the hold first (from before it asks for a slot,
        a permit or a probe to its end), so the key is not evicted meanwhile, and once the owner
        no longer uses the instance (its key evicted, or a reload that replaced it) it is refused
        with :class:`NotInUseError` before it takes anything, as the instance's own calls are. The
        link is its pattern's, of its held class (:func:`_held_link`), whose drivers take the
        hold; the owner's own links (:meth:`_keyed_link`) are never held. (A keyed rate limiter's
        key limiters keep their key while a link lives instead, and so never refuse one.)
        """
        link = Pattern.as_strategy(self, pipeline)
        link._hold = self._held
        link.__class__ = _held_link(type(link))
        return link


_HELD_LINKS: Final[dict[type[Link[Any]], type[Link[Any]]]] = {}
"""Each link class's held subclass (:func:`_held_link`), made at its first held link."""


class _HeldLink(Link[Any]):
    """The drivers of a link of an owned instance (:meth:`Held.as_strategy`): each run within its hold.

    A class with drivers of its own is never admitted early by its pipeline
    (:attr:`~otel_resilience.engine.step.Step.admits_early`): its admission, a standing one
    too, is made by its driver, within the hold.
    """

    __slots__ = ()

    async def execute(self, ctx: ExecutionContext, token: Any = None, plan: Any = None) -> Any:  # noqa: ARG002 - never admitted early
        hold = self._hold()
        hold.__enter__()
        try:
            return await super().execute(ctx)
        finally:
            hold.__exit__(None, None, None)

    def execute_sync(self, ctx: ExecutionContext, token: Any = None, plan: Any = None) -> Any:  # noqa: ARG002 - never admitted early
        with self._hold():
            return super().execute_sync(ctx)


def _held_link(cls: type[Link[Any]]) -> type[Link[Any]]:
    """Return ``cls``'s held subclass (:class:`_HeldLink` first): its layout is ``cls``'s."""
    held = _HELD_LINKS.get(cls)
    if held is None:
        held = _HELD_LINKS.setdefault(cls, type(cls.__name__, (_HeldLink, cls), {"__slots__": ()}))
    return held


async def _held_call(
    pattern: Pattern[Any, Any], fn: Callable[..., Awaitable[R]], args: Any, kwargs: Any
) -> R:
    """Run :meth:`Pattern.run` within ``pattern``'s hold (:meth:`Held._held_run`).

    The pipeline's coroutine is made here, once the hold is taken: made by the verb, it would be
    left never awaited by a task cancelled before it ran, or a call closed unawaited.
    """
    hold = pattern._held()
    hold.__enter__()
    try:
        return await Pattern.run(pattern, fn, *args, **kwargs)
    finally:
        hold.__exit__(None, None, None)


class _Verb:
    """What :func:`verb` returns: named in a class body, it puts its copy of the method there."""

    __slots__ = ("_doc", "_method")

    def __init__(self, method: Callable[..., Any], doc: str) -> None:
        self._method = method
        self._doc = doc

    def __set_name__(self, owner: type[Pattern[Any, Any]], name: str) -> None:
        method = cast("types.FunctionType", self._method)
        copy = types.FunctionType(
            method.__code__, method.__globals__, name, method.__defaults__, method.__closure__
        )
        copy.__qualname__ = f"{owner.__qualname__}.{name}"
        copy.__module__ = owner.__module__
        copy.__doc__ = self._doc
        copy.__annotations__ = dict(method.__annotations__)
        copy.__kwdefaults__ = method.__kwdefaults__
        setattr(owner, name, copy)
        owner._verbs = {**owner._verbs, method.__name__: name}


_FN: Final = {
    "run": "An async function (or any callable returning an awaitable).",
    "run_sync": "A plain (non-async) function.",
}
_NOT_CALLABLE: Final = {
    "run": "``fn`` is not callable, or does not return an awaitable.",
    "run_sync": "``fn`` is not callable, or is a coroutine function.",
}


def _section(title: str, entries: tuple[str, ...]) -> str:
    """Return a Google-style docstring section, each entry wrapped and indented under ``title``."""
    wrapped = (
        textwrap.fill(entry, 100, initial_indent="    ", subsequent_indent="        ") for entry in entries
    )
    return "\n".join((f"{title}:", *wrapped))


def verb(
    method: F, summary: str, *, returns: str, raises: tuple[str, ...], more: str = "", refuses: str = ""
) -> F:
    """Give ``method`` (:meth:`Pattern.run` or :meth:`Pattern.run_sync`) a pattern's public name.

    ``call = verb(Pattern.run, "Await ...", returns=..., raises=(...))`` in a :class:`Pattern`
    subclass's body defines ``call``: a copy of ``run`` (the same code, so no frame more per call)
    with its own name and docstring; ``run``'s error for a non-callable ``fn`` then names ``call``.
    The docstring is written here once for every verb: the summary, ``more``, the arguments
    every verb takes, ``returns``, and a ``TypeError`` for a ``fn`` the driver cannot run
    followed by the pattern's own ``raises``.

    Args:
        method: The method to publish.
        summary: The docstring's first line.
        returns: What the verb returns.
        raises: The pattern's own errors, each ``"Name: when."``.
        more: A paragraph after the summary (``""`` for none).
        refuses: What else the verb refuses with ``TypeError`` before ``fn`` runs (``""``: nothing).

    Returns:
        The verb (typed as ``method``).

    Raises:
        TypeError: ``method`` is neither :meth:`Pattern.run` nor :meth:`Pattern.run_sync`.
    """
    if method is not Pattern.run and method is not Pattern.run_sync:
        raise fail("verb", "method", "Pattern.run or Pattern.run_sync", method, kind=TypeError)
    kind = method.__name__
    fn = (f"fn: {_FN[kind]}", "*args: Its positional arguments.", "**kwargs: Its keyword arguments.")
    parts = [summary, more] if more else [summary]
    parts += [
        _section("Args", fn),
        _section("Returns", (returns,)),
        _section("Raises", (f"TypeError: {_NOT_CALLABLE[kind]}{refuses and f' Also: {refuses}'}", *raises)),
    ]
    return cast("F", _Verb(method, "\n\n".join(parts)))
