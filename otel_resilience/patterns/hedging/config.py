"""The hedging settings: :class:`HedgingConfig`, its modes, and what hedges draw on."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from otel_resilience.engine.validation import (
    Derived,
    ExceptionTypeCollection,
    check_callable,
    check_called_with,
    check_duration,
    check_error_selector,
    check_int,
    check_name,
    check_not_generator,
    check_predicate,
    check_sync_callable,
    fail,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "KIND",
    "MAX_ATTEMPTS_LIMIT",
    "MODES",
    "HedgeBudget",
    "HedgeDelay",
    "HedgingConfig",
    "HedgingMode",
    "hedge_refusal",
    "refund_hedge",
    "withdraw_hedge",
]

KIND: Final = "hedging"
"""The pattern kind in telemetry."""

MODES: Final = ("latency", "parallel", "fallback")
"""The modes a :class:`HedgingConfig` may name."""
DEFAULT_MAX_ATTEMPTS: Final = 2
"""Attempts in total (the original and one hedge) unless configured otherwise."""
MAX_ATTEMPTS_LIMIT: Final = 10
"""The most attempts one execution may race (Polly's bound): each is a call of the dependency."""

HedgingMode = Literal["latency", "parallel", "fallback"]
"""When further attempts start: see :attr:`HedgingConfig.mode`."""

HedgeDelay = float | timedelta | Callable[[], float | timedelta]
"""Seconds (or a ``timedelta``), or a function returning seconds (or a ``timedelta``), called once
per hedge."""

ErrorSelector = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
"""Which errors: an exception type, a tuple of types, or a predicate ``(error) -> bool``."""

_OWNER: Final = "HedgingConfig"
_DELAY_NOT_A_GENERATOR: Final = (
    "a function returning seconds, not a generator function (whose iterator, made before its body "
    "runs, is no delay)"
)
_NOT_A_GENERATOR: Final = "an async function (a generator function makes an iterator, not an awaitable)"


@runtime_checkable
class HedgeBudget(Protocol):
    """What hedges draw on: a :class:`~otel_resilience.patterns.retry.RetryBudget` (or anything with its API).

    One hedge is one retry withdrawn from it; an execution of a hedging step deposits one first
    attempt unless a retry in the same policy already does it for the execution. A budget may
    name why it refused the hedge it just refused (a ``refusal`` attribute: a
    ``resilience.hedging.denied_by`` value, so a name, :func:`hedge_refusal`); without one a
    refusal is ``"budget"``. A budget that
    names its withdrawals as :class:`~otel_resilience.patterns.retry.RetryBudget` does (a
    ``withdraw()`` returning a receipt, ``None`` when denied, and ``refund(receipt)``) gets
    each hedge that never ran back exactly, however long after it was withdrawn.
    """

    def deposit(self) -> None:
        """Count one first attempt."""
        ...

    def try_withdraw(self) -> bool:
        """Take one retry (here: one hedge) if allowed; return whether it was."""
        ...

    def refund(self) -> None:
        """Give back a withdrawal that did not turn into an attempt."""
        ...


def withdraw_hedge(budget: HedgeBudget) -> object:
    """Take one hedge from ``budget``; return what names it for :func:`refund_hedge`, ``None`` if denied.

    A budget that names its withdrawals (a ``withdraw()`` method, as
    :class:`~otel_resilience.patterns.retry.RetryBudget` has) gives its receipt; any other gives
    ``True`` for an allowed hedge.
    """
    withdraw = getattr(budget, "withdraw", None)
    if callable(withdraw):
        return withdraw()
    return True if budget.try_withdraw() else None


def refund_hedge(budget: HedgeBudget, withdrawal: object) -> None:
    """Give ``budget`` back the hedge ``withdrawal`` names (:func:`withdraw_hedge`), which never ran.

    A budget that names its withdrawals gets the receipt back, so the hedge leaves the count it
    was made in however long after; any other is refunded with ``refund()``.
    """
    if callable(getattr(budget, "withdraw", None)):
        budget.refund(withdrawal)  # type: ignore[call-arg] # it names withdrawals: refund(receipt)
    else:
        budget.refund()


def hedge_refusal(budget: HedgeBudget) -> str:
    """Return why ``budget`` refused the hedge it just refused: its ``refusal``, else ``"budget"``.

    The one rule of a budget's refusal: it becomes the ``resilience.hedging.denied_by`` attribute
    of a metric and a span event, so it is a name (a non-empty ``str`` of at most
    :data:`~otel_resilience.engine.validation.MAX_ATTRIBUTE_LENGTH` characters,
    :func:`~otel_resilience.engine.validation.check_name`), never cut or changed. Checked where a
    hedging reads it, once the budget refused (a property, or an attribute set as it refuses, is
    read then), and where :class:`HedgingConfig` takes the budget, for a plain value it holds already.

    Raises:
        TypeError: The refusal is not a ``str`` (the message names ``HedgingConfig.budget.refusal``).
        ValueError: It is empty, blank or longer than a name may be.
    """
    return check_name(_OWNER, "budget.refusal", getattr(budget, "refusal", "budget"))


def _holds_refusal(budget: object) -> bool:
    """Whether ``budget`` holds a ``refusal`` as a plain value, read with no code of its own run.

    A property (or any descriptor: ``HttpHedgeBudget`` names its refusal by the current request)
    says why it refused only once it has: it is read, and checked, then.
    """
    held = inspect.getattr_static(budget, "refusal", None)
    return held is not None and not hasattr(type(held), "__get__")


class _DerivedAttempts(Derived, int):
    """:attr:`HedgingConfig.max_attempts` left out: derived from the ``actions``."""

    __slots__ = ()
    plain = int


@dataclass(frozen=True, slots=True)
class HedgingConfig:
    """When a :class:`~otel_resilience.Hedging` starts further attempts, and which answer wins.

    Example::

        HedgingConfig(delay=0.05)                                    # a 2nd call after 50 ms
        HedgingConfig(delay=PercentileDelay(initial=0.05), max_attempts=3)
        HedgingConfig(mode="fallback", actions=(other_region,))       # on failure, the next
        HedgingConfig(mode="parallel", max_attempts=2, budget=budget)

    **Acceptable outcome.** An attempt's outcome is the answer, and ends the race at once, when
    it is a result that ``hedge_on_result`` does not reject, or an error that ``hedge_on`` does
    not match (a definite answer such as "not found": raised at once, the other attempts
    cancelled). Any other outcome is set aside: in ``"latency"`` and ``"fallback"`` modes it
    starts the next attempt at once. When no attempt's outcome is acceptable, the original's is
    the execution's (its error re-raised, or its result returned), as in Polly; a result so
    returned counts as a failure (the execution's outcome ``failure``).

    **The policy's own rejections end hedging.** An attempt rejected by a link inside the
    hedging in the same pipeline (an open breaker, a full bulkhead, a rate limiter: an
    :class:`~otel_resilience.errors.ExecutionRejectedError` raised while that link admitted it)
    starts no further hedge, by failure or by delay: every hedge would meet the same link. The
    rejection is that attempt's outcome, never the answer (whatever ``hedge_on`` leaves out);
    the attempts in flight go on and may still win, and a hedge never started is never
    withdrawn from ``budget``. A hedge rejected so called nothing: it is given back to
    ``budget`` and counted denied (``rejected``), not as a hedge sent. An original rejected so, with
    nothing else in flight, makes the execution raise the rejection. A rejection that comes out
    of the function an attempt calls (an entry of ``actions`` behind a breaker of its own) is
    set aside like any other error: the next attempt starts. A hedge still waiting for such a
    link's admission (in the bulkhead's queue, for the rate limiter's permit) when the race ends
    called nothing either: cancelled there, it is given back to ``budget`` and counted nowhere
    (nothing refused it), and no attempt a win is reported over.

    Async only: the attempts run side by side as tasks of the event loop; the sync API
    (``Hedging.run_sync``, a sync function under a policy with hedging) raises ``TypeError``
    (:class:`~otel_resilience.Hedging` has no ``call_sync``).

    Args:
        delay: See the attribute.
        max_attempts: See the attribute.
        mode: See the attribute.
        actions: See the attribute; a list is kept as a tuple.
        hedge_on: See the attribute.
        hedge_on_result: See the attribute.
        budget: See the attribute.

    Raises:
        TypeError: A field has the wrong type (the message names ``HedgingConfig.<field>``).
        ValueError: A field is out of range or unused by the mode.
    """

    delay: HedgeDelay | None = None
    """``"latency"`` mode only, and required there: how long the latest attempt may run before
    another starts, seconds ``> 0`` (or a ``timedelta``), or a plain function ``() -> seconds``
    (an async one, or one that cannot be called with no argument, is refused: ``TypeError``)
    asked at each hedge, such as
    :class:`~otel_resilience.patterns.hedging.PercentileDelay` (a function with an
    ``observe(seconds)`` method is told the latency of every accepted result). What the function
    returns must be seconds ``>= 0``; otherwise the execution fails with ``TypeError`` or
    ``ValueError``. No default: a latency figure has no safe one."""
    max_attempts: int = _DerivedAttempts(DEFAULT_MAX_ATTEMPTS)
    """Attempts at most, the original included, ``1 <= max_attempts <= 10`` (1: never hedge).
    Default: 2, or one more than the ``actions`` given (up to 10), so that each runs
    (``dataclasses.replace`` derives it again)."""
    mode: HedgingMode = "latency"
    """``"latency"`` (the default): the original starts; while no acceptable outcome came, another
    attempt starts each time the latest has run ``delay`` seconds, and at once when an attempt
    ends unacceptably, up to ``max_attempts`` in flight. ``"parallel"``: all ``max_attempts``
    start at once. ``"fallback"``: one at a time; an attempt that ends unacceptably starts the
    next at once."""
    actions: tuple[Callable[..., Awaitable[Any]], ...] | None = None
    """What attempts 2, 3, ... call in place of the protected function (a secondary, another
    region): ``actions[0]`` for attempt 2, ``actions[1]`` for attempt 3 ...; attempts past the
    end call the protected function again. Each is an async function called with the protected
    function's arguments, and runs through the links inside the hedging (an attempt timeout
    bounds it; a breaker inside counts it). At most ``max_attempts - 1`` of them (more would
    never run). A generator function is refused here (``TypeError`` naming ``actions[i]``); a
    plain function may return an awaitable, so one that returns anything else is refused when
    its attempt calls it: the execution raises ``TypeError`` naming ``actions[i]``. Default:
    ``None`` (every attempt calls the protected function)."""
    hedge_on: ErrorSelector = (Exception,)
    """Errors that are not the answer: ``Exception`` subclasses or a predicate. An error it does
    not match is accepted and raised at once. ``()`` (every error is the answer) is refused in
    ``"fallback"`` mode unless ``hedge_on_result`` is set: nothing would start a hedge there.
    Default: ``(Exception,)`` (every error)."""
    hedge_on_result: Callable[[Any], bool] | None = None
    """``(result) -> bool``; ``True`` sets the result aside (not the answer). Default: ``None``
    (every result is the answer)."""
    budget: HedgeBudget | None = None
    """A :class:`~otel_resilience.patterns.retry.RetryBudget` the hedges draw on: each hedge withdraws one
    retry, and when it allows none the execution starts no more hedges (the attempts in flight
    go on). Shared with retries, it bounds the extra load of retries and hedges together at
    ``ratio`` times the first attempts (plus the floor). In a ``ResilienceConfig`` whose
    ``retry_policy`` has a budget, hedging uses that one when this is ``None``. Default:
    ``None`` (``max_attempts`` alone bounds the load: up to ``max_attempts`` times)."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds, a list for a tuple), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            delay: HedgeDelay | None = ...,
            max_attempts: int = ...,
            mode: HedgingMode = ...,
            actions: tuple[Callable[..., Awaitable[Any]], ...]
            | list[Callable[..., Awaitable[Any]]]
            | None = ...,
            hedge_on: ErrorSelector | ExceptionTypeCollection = ...,
            hedge_on_result: Callable[[Any], bool] | None = ...,
            budget: HedgeBudget | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        mode: object = self.mode
        if not isinstance(mode, str):
            raise fail(_OWNER, "mode", "'latency', 'parallel' or 'fallback'", mode, kind=TypeError)
        if mode not in MODES:
            raise fail(_OWNER, "mode", "'latency', 'parallel' or 'fallback'", mode)
        derived = isinstance(self.max_attempts, _DerivedAttempts)
        if not derived:
            check_int(_OWNER, "max_attempts", self.max_attempts, minimum=1, maximum=MAX_ATTEMPTS_LIMIT)
        self._check_delay()
        self._check_actions(derived=derived)
        hedge_on = check_error_selector(_OWNER, "hedge_on", self.hedge_on, "cancellation is never hedged")
        object.__setattr__(self, "hedge_on", hedge_on)
        check_predicate(_OWNER, "hedge_on_result", self.hedge_on_result, "result", optional=True)
        if self.mode == "fallback" and hedge_on == () and self.hedge_on_result is None:
            # Only an outcome set aside starts the next attempt in this mode: none ever would.
            rule = (
                "at least one exception type, a predicate, or hedge_on_result set in 'fallback' mode "
                "(else no outcome is set aside, and no attempt after the original ever starts)"
            )
            raise fail(_OWNER, "hedge_on", rule, self.hedge_on)
        budget: object = self.budget
        # A class passes the protocol's check (it has the methods): an instance is wanted.
        if budget is not None and (isinstance(budget, type) or not isinstance(budget, HedgeBudget)):
            rule = "a RetryBudget (deposit, try_withdraw, refund) or None"
            raise fail(_OWNER, "budget", rule, budget, kind=TypeError)
        if budget is not None and _holds_refusal(budget):
            hedge_refusal(budget)

    def _check_delay(self) -> None:
        delay: object = self.delay
        if self.mode != "latency":
            if delay is not None:
                raise fail(_OWNER, "delay", f"None in {self.mode!r} mode (only 'latency' waits)", delay)
            return
        if delay is None:
            raise fail(
                _OWNER, "delay", "seconds > 0 or a function returning seconds in 'latency' mode", delay
            )
        if isinstance(delay, type):  # PercentileDelay for PercentileDelay(0.05): a call makes no seconds
            rule = "seconds > 0 or a function returning seconds (an instance, not a class)"
            raise fail(_OWNER, "delay", rule, delay, kind=TypeError)
        if callable(delay):
            check_sync_callable(_OWNER, "delay", delay, what="function")
            check_not_generator(_OWNER, "delay", delay, _DELAY_NOT_A_GENERATOR)
            check_called_with(_OWNER, "delay", delay)  # called with no argument, before each hedge
            return
        object.__setattr__(self, "delay", check_duration(_OWNER, "delay", delay))

    def _check_actions(self, *, derived: bool) -> None:
        """Validate ``actions``, and decide ``max_attempts`` left out (``derived``): room for each."""
        actions: object = self.actions
        if actions is not None and not isinstance(actions, (tuple, list)):
            raise fail(_OWNER, "actions", "a tuple of async functions or None", actions, kind=TypeError)
        if derived:  # the one place its default is decided
            room = DEFAULT_MAX_ATTEMPTS if actions is None else max(DEFAULT_MAX_ATTEMPTS, len(actions) + 1)
            object.__setattr__(self, "max_attempts", _DerivedAttempts(min(room, MAX_ATTEMPTS_LIMIT)))
        if actions is None:
            return
        for index, action in enumerate(actions):
            check_callable(_OWNER, f"actions[{index}]", action)
            check_not_generator(_OWNER, f"actions[{index}]", action, _NOT_A_GENERATOR)
        if len(actions) > self.max_attempts - 1:
            rule = f"at most max_attempts - 1 ({self.max_attempts - 1}) functions: more would never run"
            raise fail(_OWNER, "actions", rule, actions)
        if type(actions) is not tuple:
            object.__setattr__(self, "actions", tuple(actions))
