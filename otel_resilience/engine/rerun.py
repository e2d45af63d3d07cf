"""Whether the current execution may run its operation again: the one rule every re-run asks.

A caller that knows its operation must not run twice after some errors says so for the
executions it starts, in :data:`RERUNNABLE` (an HTTP integration: a POST never, a GET only after
an HTTP failure: see :mod:`otel_resilience.integrations.http`). Each way the engine runs an
operation again asks :func:`may_run_again` first: a retry (through the HTTP retry rule its
``retry_on`` carries), a hedge, and a recovery's RETRY or RESTART re-run. Outside such a caller
nothing is restricted.
"""

from __future__ import annotations

import contextvars
from typing import Final

__all__ = ["RERUNNABLE", "may_run_again"]

RERUNNABLE: Final[contextvars.ContextVar[tuple[type[BaseException], ...] | None]] = contextvars.ContextVar(
    "otel_resilience_rerunnable", default=None
)
"""The errors after which the current execution may run its operation again (``()``: never, it
may run once); ``None``: no caller restricted it. Set and reset by the caller around the
execution (a context variable: each task and thread has its own)."""


def may_run_again(error: BaseException | None = None) -> bool:
    """Return whether the current execution may run its operation again after ``error``.

    ``None``: before any error (a hedge starts while the first attempt runs), whether it may run
    more than once at all.
    """
    allowed = RERUNNABLE.get()
    if allowed is None:
        return True
    if error is None:
        return bool(allowed)
    return issubclass(type(error), allowed)
