"""Early admission: what a step is given when it admits a call before the call's context is made.

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

__all__ = ["UNSTARTED", "UNSTARTED_SYNC"]


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
