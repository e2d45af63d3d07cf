"""Whether the current execution may run its operation again: the one rule every re-run asks.

A caller that knows its operation must not run twice after some errors says so for the
executions it starts, in :data:`RERUNNABLE` (an HTTP integration: a POST never, a GET only after
an HTTP failure: see :mod:`otel_resilience.integrations.http`). Each way the engine runs an
operation again asks :func:`may_run_again` first: a retry (after an error, through the HTTP
retry rule its ``retry_on`` carries; after a result its ``retry_on_result`` rejected, itself:
the result stays a failure, returned when the operation may not run again), a hedge, and a
recovery's RETRY or RESTART re-run. A recovery's re-run also tells the caller, before it waits,
that nothing its operation got so far is the outcome any more (:func:`let_go`). Outside such a
caller nothing is restricted, and neither is an execution started inside the caller's (another
policy's, run by its fallback, its transport, or a thread or task spawned there, which inherit
the context variable): the restriction names the operation it was set for.
"""

from __future__ import annotations

import contextvars
from typing import Final

__all__ = ["RERUNNABLE", "let_go", "may_run_again"]

RERUNNABLE: Final[contextvars.ContextVar[tuple[tuple[type[BaseException], ...], object, object] | None]] = (
    contextvars.ContextVar("otel_resilience_rerunnable", default=None)
)
"""``(errors, operation, record)``: the errors after which the execution of ``operation`` (the
function the caller runs under the policy) may run it again (``()``: never, it may run once);
``None``: no caller restricted it. ``record`` is the caller's own, for its rules to read (an HTTP
integration's record of the request's sends); the engine only calls its ``let_go()``, if it has
one (:func:`let_go`). Set and reset by the
caller around the execution (a context variable: each task and thread has its own, copied into
the ones started inside; one variable, because each set and reset of one costs about 2 000
instructions)."""


def may_run_again(error: BaseException | None = None, operation: object = None) -> bool:
    """Return whether the current execution may run its operation again after ``error``.

    Args:
        error: The error the operation ended with; ``None``: before any error (a hedge starts
            while the first attempt runs), whether it may run more than once at all.
        operation: The function the asking execution protects (``ExecutionContext.fn``): an
            execution of another function than the caller restricted (one nested inside it) is
            not restricted. ``None``: the caller's own policy asks (its retry rule, its hedge
            budget), and the restriction applies.
    """
    found = RERUNNABLE.get()
    if found is None:
        return True
    allowed, restricted, _ = found
    if operation is not None and operation is not restricted:
        return True
    if error is None:
        return bool(allowed)
    return issubclass(type(error), allowed)


def let_go(operation: object) -> object:
    """Tell the caller that restricted the current execution that it runs ``operation`` again.

    A recovery's RETRY or RESTART re-run calls it once it decided to run again, before its delay
    (the driver awaits what it returns, or refuses an awaitable in a thread): the recovery
    encloses the retry and the hedging, so every run of the operation so far is over and nothing
    it got can be the outcome any more. The caller's record (``RERUNNABLE``'s third item) lets
    it go through its ``let_go()`` method, if it has one: an HTTP integration closes the
    responses its sends got, so that the re-run never waits for a connection one of them holds.
    Nothing is done outside such a caller, nor for an execution of another operation (one nested
    inside the caller's).

    Returns:
        What the record's ``let_go()`` returned (an async caller's close to await), else ``None``.
    """
    found = RERUNNABLE.get()
    if found is None or found[1] is not operation:
        return None
    release = getattr(found[2], "let_go", None)
    return None if release is None else release()
