"""The former name of :mod:`otel_resilience.engine.step`, kept for code written against it.

``Strategy`` is :class:`~otel_resilience.engine.step.Step`: a custom link written as a
``Strategy`` subclass with its own ``execute`` / ``execute_sync`` keeps working, and a new one
overrides the step's hooks instead (see "Adding a pattern" in docs/design.md).
"""

from __future__ import annotations

from otel_resilience.engine.calling import (
    WrongDriver,
    async_generator_refused,
    awaitable_in_sync,
    not_awaitable,
    not_sync_result,
)
from otel_resilience.engine.step import TERMINAL, Step

Strategy = Step
"""The documented alias of :class:`~otel_resilience.engine.step.Step`."""

__all__ = [
    "TERMINAL",
    "Strategy",
    "WrongDriver",
    "async_generator_refused",
    "awaitable_in_sync",
    "not_awaitable",
    "not_sync_result",
]
