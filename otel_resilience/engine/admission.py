"""Early admission (a call admitted before its context is made) and standing admission (:class:`Standing`).

A step whose :meth:`~otel_resilience.engine.step.Step.admit` reads nothing of its context but
``sync`` says so (:attr:`~otel_resilience.engine.step.Step.admits_early`). A pipeline headed by
such a step admits each call itself before it makes the execution's
:class:`~otel_resilience.engine.context.ExecutionContext` and hands the token to the step's
driver (which waits for it when it is a ``Wait``), so a call the step rejects (an open breaker,
a full bulkhead, a rate limiter out of permits) costs no context and no run of the driver. Its
``admit`` is then given one of the two placeholders below, which hold
:attr:`~otel_resilience.engine.context.ExecutionContext.sync` only: reading any other field, or
writing one, raises ``AttributeError`` naming the rule.
"""

from __future__ import annotations

from typing import Any, Final

from otel_resilience.engine.context import ExecutionContext

__all__ = ["NOT_STANDING", "UNSTARTED", "UNSTARTED_SYNC", "Standing", "UnheardStanding"]


class _Unstarted(ExecutionContext):
    """A context of which only :attr:`sync` is set: what an early admission is given."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:  # called for a field that is not set: all but sync
        msg = (
            f"ExecutionContext.{name} is not set yet: a step that admits early "
            "(Step.admits_early) is admitted before its execution's context is made, and its "
            "admit may read ctx.sync only"
        )
        raise AttributeError(msg)

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"cannot set ExecutionContext.{name} during an early admission (Step.admits_early)"
        raise AttributeError(msg)


def _unstarted(*, sync: bool) -> ExecutionContext:
    placeholder = object.__new__(_Unstarted)
    object.__setattr__(placeholder, "sync", sync)
    return placeholder


UNSTARTED: Final = _unstarted(sync=False)
"""What an async pipeline's early admission is given."""

UNSTARTED_SYNC: Final = _unstarted(sync=True)
"""What a sync pipeline's early admission is given."""


class Standing:
    """A step's standing admission: the token every call is admitted with for now, or ``None``.

    A step whose ``admit`` would return the same token to every call for a while (a closed
    breaker with no failure streak: its period's ``Counted``; a retry's first attempt while
    nobody listens to attempts, :class:`UnheardStanding`) publishes it in
    :attr:`~otel_resilience.engine.step.Step.standing`, a ``Standing`` it owns, and sets or
    clears :attr:`token` under its own rules. While the token is set, the pipeline's early
    admission and the drivers admit the call with it without calling ``admit`` (a Python call
    of about 450 instructions less per call); while it is ``None`` they call ``admit`` (a token
    must be true: a false one may be taken for ``None``). The step's ``admit`` must still return :attr:`token`
    whenever it is set, so that a caller that asks it (a guarded block) gets the same answer:
    the shortcut never changes an admission. A pipeline reads it for the step it admits early, a
    driver for every step it admits. A standing token is a plain token: never a ``Wait`` (nor a
    ``Rejected``), so a driver does not check it for one.
    """

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token: Any = None
        """The token every call is admitted with now, or ``None``: ask ``admit``."""


class UnheardStanding(Standing):
    """A standing admission that stands while nobody listens to attempts.

    For a step whose ``admit`` returns :attr:`unheard` to every call while no attempt listener is
    awake, and opens an attempt scope otherwise (a retry with no budget, admitting its first
    attempt). The step's telemetry hub sets :attr:`token` to :attr:`unheard` or to ``None``
    (:meth:`hear`) at every change of its attempt listeners
    (:meth:`~otel_resilience.engine.events.TelemetryHub.follow_attempts`), so while nobody
    listens the engine admits the step's calls without calling ``admit``.
    """

    __slots__ = ("__weakref__", "unheard")

    def __init__(self, unheard: object) -> None:
        super().__init__()
        self.unheard = unheard
        """The token ``admit`` returns to every call while no attempt listener is awake (true)."""

    def hear(self, heard: bool) -> None:
        """Stand with :attr:`unheard` while nobody listens to attempts (not ``heard``), else not at all."""
        self.token = None if heard else self.unheard


NOT_STANDING: Final = Standing()
"""The standing admission of every step that has none: its token stays ``None`` (never set it)."""
