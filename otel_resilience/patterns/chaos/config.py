"""The chaos pattern's settings: :class:`ChaosConfig`, and :class:`ChaosSwitch`, its run-time switch."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Union

from otel_resilience.engine.validation import (
    check_called_with,
    check_duration,
    check_not_generator,
    check_number,
    check_predicate,
    check_sync_callable,
    describe,
    fail,
)

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

__all__ = ["KIND", "UNRAISABLE", "ChaosConfig", "ChaosSwitch", "Enabled", "Fault"]

KIND: Final = "chaos"
"""The pattern kind in telemetry."""

_OWNER: Final = "ChaosConfig"
_SUM_TOLERANCE: Final = 1e-9
"""How far ``fault_rate + outcome_rate`` may pass 1 by rounding (``0.7 + 0.3``), never more."""
_INJECT_A_FUNCTION: Final = " (to inject the function itself: lambda: fn)"
"""What the refusal of an async outcome factory adds: how to inject a function as the result."""

UNRAISABLE: Final = StopIteration
"""What no fault may be: an exception a coroutine cannot raise. Python turns a ``StopIteration``
raised in a coroutine into ``RuntimeError`` (PEP 479): an async run would fail with another error
than a sync run, and a fallback or a retry on it would answer the sync drill only. A class or an
instance is refused when the config is made; one a factory returns skips that injection."""
_UNRAISABLE_RULE: Final = (
    "an exception a coroutine can raise, not a StopIteration (Python turns one raised in a coroutine "
    "into RuntimeError)"
)
_FAULT_NOT_A_GENERATOR: Final = (
    "a factory that returns an exception, not a generator function (whose iterator, made before its "
    "body runs, is no exception: no run would be injected)"
)

Fault = Union[Exception, type[Exception], Callable[[], Exception]]  # noqa: UP007 - a runtime alias on 3.10
"""What :attr:`ChaosConfig.fault` accepts: an exception, an exception class, or a factory of one."""
Enabled = Union[bool, "Callable[[ExecutionContext], bool]"]
"""What :attr:`ChaosConfig.enabled` accepts: a bool, or a predicate of the call's context."""


class ChaosSwitch:
    """A switch that turns chaos on and off at run time, shared by any number of configs.

    Give it as :attr:`ChaosConfig.enabled`: it is a predicate (``switch(ctx)`` returns whether it
    is on), so every policy whose config holds it injects while it is on and not at all while it
    is off, and nothing is rebuilt when it flips. It compares by identity, so configs that share
    one switch are equal and share their policy.

    Example::

        drill = ChaosSwitch()                       # off until an operator turns it on
        config = ResilienceConfig(chaos=ChaosConfig(fault_rate=0.05, fault=ConnectionError,
                                                    enabled=drill))
        drill.enable()   # every call through the policy may now fail
        drill.disable()  # and no longer does

    Thread-safe: flipping it is one attribute store, and a call reads it once (a call that read
    it just before it flipped may still inject).

    Args:
        on: Whether the switch starts on (default ``False``: a drill is started on purpose).

    Raises:
        TypeError: ``on`` is not a bool (given here, or assigned to :attr:`on` later).
    """

    __slots__ = ("_on",)

    def __init__(self, on: bool = False) -> None:
        self.on = on

    @property
    def on(self) -> bool:
        """Whether chaos is on now (flip it with :meth:`enable` and :meth:`disable`, or assign a bool)."""
        return self._on

    @on.setter
    def on(self, on: bool) -> None:
        if not isinstance(on, bool):  # a string such as "no" would be true: a drill never stopped
            raise fail("ChaosSwitch", "on", "a bool", on, kind=TypeError)
        self._on = on

    def enable(self) -> None:
        """Turn chaos on."""
        self._on = True

    def disable(self) -> None:
        """Turn chaos off."""
        self._on = False

    def __call__(self, ctx: ExecutionContext) -> bool:  # noqa: ARG002 - the same for every call
        """Return whether chaos is on (the predicate :attr:`ChaosConfig.enabled` calls)."""
        return self._on

    def __repr__(self) -> str:
        return f"ChaosSwitch(on={self._on})"


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """What a :class:`~otel_resilience.patterns.chaos.Chaos` link injects, how often, and when.

    Each run of the rest of the chain through the link (each attempt, inside a policy) is
    judged once, **before** the dependency is called: when :attr:`enabled` says yes, a delay is
    injected with probability :attr:`latency_rate`; then a fault with probability
    :attr:`fault_rate`, or else a result with probability :attr:`outcome_rate` (one draw decides
    between the two, so each rate is its share of all runs); a run that draws neither calls the
    dependency (after the delay, if one was drawn).

    Example::

        ChaosConfig(fault_rate=0.1, fault=ConnectionError)               # 10 % fail at once
        ChaosConfig(latency_rate=0.5, latency=2.0)                       # half wait 2 s first
        ChaosConfig(outcome_rate=0.05, outcome=lambda: {"status": 503})  # 5 % get a fake answer
        ChaosConfig(fault_rate=0.2, fault=TimeoutError, enabled=drill, seed=42)

    A config that can never inject (``enabled=False``, or every rate 0) adds no link to a
    policy: it costs nothing. To switch chaos at run time, give ``enabled`` a
    :class:`ChaosSwitch` or a predicate.

    Args:
        fault_rate: See the attribute.
        fault: See the attribute.
        latency_rate: See the attribute.
        latency: See the attribute; a ``datetime.timedelta`` is accepted and stored as seconds.
        outcome_rate: See the attribute.
        outcome: See the attribute.
        enabled: See the attribute.
        seed: See the attribute.

    Raises:
        TypeError: A field has the wrong type (the message names ``ChaosConfig.<field>``).
        ValueError: A field is out of range, or a rate is set without what it injects.
    """

    fault_rate: float = 0.0
    """The share of runs that fail with :attr:`fault` before the dependency is called, in
    ``[0, 1]``; ``fault_rate + outcome_rate`` is at most 1."""
    fault: Fault | None = None
    """What a fault raises (required when ``fault_rate > 0``): an ``Exception`` instance (a copy
    of it is raised each time, so that concurrent calls never share one traceback), an
    ``Exception`` subclass (instantiated with no argument: a class that needs arguments is
    refused) or a factory (a plain function, not a coroutine function nor a generator function,
    whose iterator is no exception) called with no argument that returns an ``Exception`` (one
    that needs an argument is refused). Each injected
    exception gets a note saying chaos injected it (one: an exception a factory returns again is
    raised anew, with one such note, its traceback that of the latest injection only).
    Cancellation and interrupts (``BaseException``) are not faults, nor is a ``StopIteration``,
    which a coroutine cannot raise (:data:`UNRAISABLE`)."""
    latency_rate: float = 0.0
    """The share of runs delayed by :attr:`latency` before the dependency is called (or before
    the injected fault or result), in ``[0, 1]``, drawn independently of the other two."""
    latency: float = 0.0
    """The injected delay in seconds, ``> 0`` when ``latency_rate > 0``. The delay honours
    cancellation and deadlines: an enclosing timeout cuts it as it would cut a slow dependency
    (async: the task is cancelled at the deadline; sync: the thread sleeps until the deadline
    and the timeout that owns it raises)."""
    outcome_rate: float = 0.0
    """The share of runs answered with :attr:`outcome` without calling the dependency, in
    ``[0, 1]``."""
    outcome: Any = None
    """The injected result: a value (``None`` by default), or a callable, called with no argument
    for each injection (one that needs an argument is refused), whose return value is the result
    (to inject a callable itself, wrap it: ``outcome=lambda: handler``). Neither driver awaits
    it: an awaitable (a coroutine) is refused, given as the value or a coroutine function as the
    factory; one a factory returns is closed and that run is not injected (counted in the
    ``errors`` statistic). A value is the very
    object at every injection (never a copy, as a fallback's ``default_value``): a caller that
    changes the result it got changes every later one; give an immutable value, or a factory
    that builds a fresh one."""
    enabled: Enabled = True
    """Whether the link injects: ``True`` (the default: on whenever the rates say so),
    ``False`` (never; the link is left out), or a predicate called with the run's
    :class:`~otel_resilience.engine.context.ExecutionContext` (a plain function, not a coroutine
    function: it is called, never awaited; its ``operation``, ``attempt``,
    ``args`` and ``kwargs``; context variables of the caller, such as a request's tenant or
    OpenTelemetry baggage, are readable too) that returns whether this run may be injected.
    A :class:`ChaosSwitch` is such a predicate (an instance: the class itself is refused); one
    that cannot take that argument is refused.
    A predicate is asked before any random draw; one that raises counts as ``False`` (logged
    once, for a policy's links once in all, and counted in the ``errors`` statistic). It
    compares by identity: reuse one predicate object (a lambda written per call makes each
    config a policy of its own)."""
    seed: int | None = None
    """Seeds the link's random draws, ``>= 0`` (``random.Random`` would draw for ``-n`` as for
    ``n``): the same seed gives the same injections for the same
    sequence of runs (in one task or thread; concurrent runs draw in the order they reach the
    link). ``None`` (the default) seeds from the operating system, and again in each process
    ``os.fork()`` makes (each worker of a pre-fork server draws its own sequence); a seeded
    generator is copied into a forked child as it is, so every child forked at one point makes
    the same decisions for the same sequence of runs (a replay, as the seed asks). Each
    :class:`~otel_resilience.patterns.chaos.Chaos` has its own generator; the chaos links of a
    policy (one per key of a keyed policy, built again at a reload) share the policy's, so that
    each rate is the share of the policy's runs whatever their keys (links seeded alike would
    fail every key on the same runs)."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            fault_rate: float = ...,
            fault: Fault | None = ...,
            latency_rate: float = ...,
            latency: float | timedelta = ...,
            outcome_rate: float = ...,
            outcome: Any = ...,
            enabled: Enabled = ...,
            seed: int | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        for field in ("fault_rate", "latency_rate", "outcome_rate"):
            rate = check_number(_OWNER, field, getattr(self, field), minimum=0.0, maximum=1.0)
            object.__setattr__(self, field, rate)
        if self.fault_rate + self.outcome_rate > 1.0 + _SUM_TOLERANCE:
            rule = f"<= 1 - fault_rate ({1.0 - self.fault_rate:g}): one draw decides fault or outcome"
            raise fail(_OWNER, "outcome_rate", rule, self.outcome_rate)
        self._check_fault()
        if callable(self.outcome):
            check_sync_callable(_OWNER, "outcome", self.outcome, what="factory", hint=_INJECT_A_FUNCTION)
            check_called_with(_OWNER, "outcome", self.outcome, hint=_INJECT_A_FUNCTION)  # with no argument
        elif inspect.isawaitable(self.outcome):  # no driver awaits it: it would be every result
            rule = "a value or a plain (sync) factory, not an awaitable (the result, never awaited)"
            raise fail(_OWNER, "outcome", rule, self.outcome, kind=TypeError)
        latency = check_duration(_OWNER, "latency", self.latency, allow_zero=True)
        object.__setattr__(self, "latency", latency)
        if self.latency_rate > 0 and latency == 0:
            raise fail(_OWNER, "latency", "> 0 when latency_rate > 0", self.latency)
        enabled: object = self.enabled
        if not isinstance(enabled, bool):
            if not callable(enabled):
                rule = "a bool, a ChaosSwitch or a predicate"
                raise fail(_OWNER, "enabled", rule, enabled, kind=TypeError)
            check_predicate(_OWNER, "enabled", enabled, "ctx")
        seed: object = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise fail(_OWNER, "seed", "an int or None", seed, kind=TypeError)
        if seed is not None and seed < 0:  # random.Random takes abs(seed): -1 would replay 1
            raise fail(_OWNER, "seed", ">= 0 (a negative seed draws as its absolute value)", seed)

    def _check_fault(self) -> None:
        fault: object = self.fault
        if fault is None:
            if self.fault_rate > 0:
                raise fail(_OWNER, "fault", "an exception, its class or a factory when fault_rate > 0", None)
            return
        if isinstance(fault, type):
            if not issubclass(fault, Exception):
                rule = "an Exception subclass (cancellation and interrupts are not faults)"
                raise fail(_OWNER, "fault", rule, fault, kind=TypeError)
            if issubclass(fault, UNRAISABLE):
                raise fail(_OWNER, "fault", _UNRAISABLE_RULE, fault)
            _check_instantiable(fault)
        elif isinstance(fault, BaseException):
            if not isinstance(fault, Exception):
                rule = "an Exception (cancellation and interrupts are not faults)"
                raise fail(_OWNER, "fault", rule, fault, kind=TypeError)
            if isinstance(fault, UNRAISABLE):
                raise fail(_OWNER, "fault", _UNRAISABLE_RULE, fault)
            _check_copyable(fault)
        elif not callable(fault):
            rule = "an Exception, an Exception subclass or a factory returning one"
            raise fail(_OWNER, "fault", rule, fault, kind=TypeError)
        else:
            check_sync_callable(_OWNER, "fault", fault, what="factory")
            check_not_generator(_OWNER, "fault", fault, _FAULT_NOT_A_GENERATOR)
            check_called_with(_OWNER, "fault", fault)  # called with no argument

    @property
    def injects(self) -> bool:
        """Whether this config can ever inject: ``enabled`` is not ``False`` and some rate is above 0."""
        rates = self.fault_rate or self.latency_rate or self.outcome_rate
        return self.enabled is not False and rates > 0


def _check_instantiable(fault: type[Exception]) -> None:
    """Refuse an exception class that cannot be instantiated with no argument (as each injection does)."""
    try:
        fault()
    except Exception as error:
        msg = (
            f"{_OWNER}.fault must be an exception class that can be instantiated with no argument "
            f"(each injection does), got {describe(fault)}, which raised {type(error).__name__}: "
            "give a factory (fault=lambda: MyError(...)) instead"
        )
        raise TypeError(msg) from error


def _check_copyable(fault: Exception) -> None:
    """Refuse an exception instance that cannot be copied (its class needs other arguments)."""
    try:
        twin = copy.copy(fault)
    except Exception as error:
        msg = (
            f"{_OWNER}.fault must be an exception that copy.copy() can copy (a copy is raised each "
            f"time), got {describe(fault)}, whose copy raised {type(error).__name__}: give its "
            "class or a factory (fault=lambda: MyError(...)) instead"
        )
        raise TypeError(msg) from error
    if type(twin) is not type(fault):
        msg = f"{_OWNER}.fault must copy to its own class, got {describe(fault)}: give a factory instead"
        raise TypeError(msg)
