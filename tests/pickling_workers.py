"""Functions run in ``spawn`` worker processes by ``tests/test_pickling.py`` (importable by name there)."""

from __future__ import annotations

import asyncio

from otel_resilience import ResilienceConfig, ResilienceManager, RetryBudget
from otel_resilience.errors import RecoveryEscalatedError, UnacceptedResultError


def raise_error(kind: str) -> None:
    """Raise an error built with keyword arguments, as an application may."""
    if kind == "escalated":
        raise RecoveryEscalatedError("ValueError", operation="charge")
    raise UnacceptedResultError(name="payments", result={"status": 503})


def run_policy(config: ResilienceConfig) -> tuple[int, bool, dict[str, float]]:
    """Run one call under ``config`` in the worker; return its answer and what its budget looks like."""

    async def answer() -> int:
        return 7

    async def main() -> int:
        result: int = await ResilienceManager().execute_with_resilience(answer, config)
        return result

    result = asyncio.run(main())
    policy = config.retry_policy
    assert policy is not None
    budget = policy.budget
    assert isinstance(budget, RetryBudget)
    return result, config.hedging is not None and config.hedging.budget is budget, budget.get_stats()
