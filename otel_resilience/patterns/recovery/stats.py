"""Recovery statistics: attempts and their results, per strategy, as plain integers."""

from __future__ import annotations

from typing import TypedDict

from otel_resilience.patterns.recovery.config import RecoveryStrategy

__all__ = ["RecoveryStats", "RecoveryStatsDict", "StrategyCountsDict"]


class StrategyCountsDict(TypedDict):
    """One strategy's counts in :class:`RecoveryStatsDict` (``by_strategy``)."""

    attempts: int
    successful: int
    failed: int


class RecoveryStatsDict(TypedDict):
    """The snapshot returned by :meth:`ErrorRecoverySystem.get_stats`."""

    attempts: int
    successful_recoveries: int
    failed_recoveries: int
    recovery_rate: float
    by_strategy: dict[str, StrategyCountsDict]
    """Keyed by the strategy's value (``"retry"``, ``"fallback"`` ...)."""
    patterns_detected: int
    escalations: int


class _StrategyCounts:
    """Attempts and results of one strategy."""

    __slots__ = ("attempts", "failed", "successful")

    def __init__(self) -> None:
        self.attempts = 0
        self.successful = 0
        self.failed = 0


class RecoveryStats:
    """Recovery counts of one system, as plain integers.

    A *recovery attempt* is one rule acting on one error. It is *successful* when the action did
    what it stands for: a RETRY/RESTART re-run returned, a FALLBACK answered, an ISOLATE forced
    its breaker open (or found it open longer already; not one an operator's ``disable()`` or
    ``metrics_only()`` keeps from opening). An ESCALATE is an attempt that never succeeds (and
    is also counted in ``escalations``). A re-run or a fallback the effective deadline ended
    failed: the caller got the deadline's timeout; so did a re-run of a function that does not
    fit the driver (the caller got its ``TypeError``). A RETRY/RESTART whose re-run failed with
    an error of another rule failed too, and that rule acting on it is an attempt of its own. An
    error no rule covers is not an attempt.

    Attributes:
        attempts: Recovery attempts that ended (cancelled ones are not counted).
        successful: Attempts that succeeded.
        failed: Attempts that failed.
        escalations: ESCALATE attempts.
        patterns_detected: Error patterns reported.
    """

    __slots__ = ("_by_strategy", "attempts", "escalations", "failed", "patterns_detected", "successful")

    def __init__(self) -> None:
        self.attempts = 0
        self.successful = 0
        self.failed = 0
        self.escalations = 0
        self.patterns_detected = 0
        self._by_strategy = {strategy: _StrategyCounts() for strategy in RecoveryStrategy}

    @property
    def recovery_rate(self) -> float:
        """``successful / attempts``; ``1.0`` with no attempts (nothing failed to recover)."""
        return self.successful / self.attempts if self.attempts else 1.0

    def count(self, strategy: RecoveryStrategy, success: bool) -> None:
        """Count one ended attempt (call under the owner's lock)."""
        counts = self._by_strategy[strategy]
        self.attempts += 1
        counts.attempts += 1
        if success:
            self.successful += 1
            counts.successful += 1
        else:
            self.failed += 1
            counts.failed += 1
        if strategy is RecoveryStrategy.ESCALATE:
            self.escalations += 1

    def as_dict(self) -> RecoveryStatsDict:
        """Return the counts as the ``get_stats()`` dict."""
        return {
            "attempts": self.attempts,
            "successful_recoveries": self.successful,
            "failed_recoveries": self.failed,
            "recovery_rate": self.recovery_rate,
            "by_strategy": {
                strategy.value: {
                    "attempts": counts.attempts,
                    "successful": counts.successful,
                    "failed": counts.failed,
                }
                for strategy, counts in self._by_strategy.items()
            },
            "patterns_detected": self.patterns_detected,
            "escalations": self.escalations,
        }
