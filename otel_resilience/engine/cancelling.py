"""An error a call raised on its way out of a cancellation: the cancellation's end, not a failure to act on.

A dependency may turn the ``CancelledError`` of its task's cancellation into an error of its
own: it raises one in ``except CancelledError:``, or a ``finally`` block or an ``__aexit__``
(a connection given back to its pool) fails while the cancellation passes. What comes out of
the call is then an ``Exception``, but the task is still being cancelled: the caller's
``task.cancel()``, an enclosing ``asyncio.timeout`` or task group asked it to stop. A step that
answered it (a fallback), ran the call again (a retry, a recovery re-run) or counted it as the
dependency's failure (a breaker) would swallow that cancellation: the task would go on past
the timeout that cancelled it.

The one rule, :func:`cancelled_on_the_way`, which the async driver asks about every failure of
the rest of the chain and of a :class:`~otel_resilience.engine.step.Call` before a step acts on
it (and a guarded block's end): such an error ends the run as a cancellation does (the steps'
``on_cancel``), and passes through unchanged, as it would without the library. Threads are not
cancelled: the sync driver never asks.

A dependency may also swallow the ``CancelledError`` and return a value. Returned while the task
still holds the request, a result the policy judges failed is that cancellation's end too:
run again (a retry on the result) or answered (a fallback's function), the call would go on past
the timeout that cancelled it, and a breaker would count the cancellation against the
dependency, as with an error. :func:`returned_on_the_way` is the same rule for it (what the task holds, read
by :func:`_being_cancelled` for both), asked only once a result was judged failed, never on a
success; the sync driver's calls are never one, as it never asks about errors.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from otel_resilience.errors import ResilienceError

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

__all__ = ["cancelled_on_the_way", "returned_on_the_way"]

_CHAIN: Final = 16
"""How many errors of a context chain are looked through for the ``CancelledError`` (a bound:
a chain may be long, or loop)."""

_cancelling: Final = getattr(asyncio.Task, "cancelling", None)
"""``Task.cancelling`` (Python 3.11 on): the task's cancellation requests not taken back; ``None``
before, where no task counts them, and no error is judged one (nothing tells it then)."""


def cancelled_on_the_way(error: Exception) -> bool:
    """Whether ``error`` is how a cancellation of the running task left the call (see the module).

    So it is when it was raised while a ``CancelledError`` was being handled (one is in its
    context chain) and the task still holds a cancellation request (``Task.cancelling()``):
    one that a scope which handles it (an ``asyncio.timeout``, a timeout of ours) has not taken
    back. A task that took its cancellation back, or an error chained to a ``CancelledError``
    that was never its task's (a future cancelled elsewhere), fails as any error does. The
    library's own errors (a timeout a scope raises once it took its cancellation back, a
    rejection) are never one. Free for an error raised outside any handling: its context is
    ``None``.
    """
    context = error.__context__
    if context is None or _cancelling is None or isinstance(error, ResilienceError):
        return False
    for _ in range(_CHAIN):
        if isinstance(context, asyncio.CancelledError):
            return _being_cancelled()
        context = context.__context__
        if context is None:
            return False
    return False


def returned_on_the_way(ctx: ExecutionContext) -> bool:
    """Whether a result the policy judged failed came back while ``ctx``'s task is being cancelled.

    The result of a call that swallowed its task's ``CancelledError`` (an ``except
    CancelledError: return None``): the task still holds the request (``Task.cancelling()``), which
    no scope that handles it has taken back. Run again, the call would outlast the timeout or the
    ``task.cancel()`` that asked it to stop; the result is returned as it is, as it would be
    without the library. The rule of :func:`cancelled_on_the_way`, for a result: no chain to read,
    the task's request is all there is. ``False`` for the sync driver (a sync call run in a task
    cannot swallow the task's cancellation, which waits for its next ``await``), and before
    Python 3.11.
    """
    return not ctx.sync and _being_cancelled()


def _being_cancelled() -> bool:
    """Whether the running task holds a cancellation request not taken back (both rules' reading)."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: a thread, never cancelled
        return False
    return task is not None and _cancelling is not None and _cancelling(task) > 0
