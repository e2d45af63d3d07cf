"""A toy pattern made outside the library, as docs/design.md ("Adding a pattern") says a pattern is made.

``Quota`` grants a fixed number of runs, then rejects. Everything a pattern of the library has
is here and nowhere else: its config (validated with ``engine.validation``), its rejection (an
``ExecutionRejectedError``), an event kind and arguments of its own (an ``EventKind`` subclass
and a slotted dataclass naming its ``ATTRIBUTES``), its step (a ``Link``: the rules, run by the
engine's two drivers) and its face (a ``Pattern`` whose SPEC-style verbs are ``call`` /
``call_sync``). It reports a built-in event too (``call_rejected``), which the binding table
shows; its own kind has no row there (only the library's kinds do).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import CallRejected, Event, EventKind, StrategyTelemetry
from otel_resilience.engine.facade import Link, Pattern, verb
from otel_resilience.engine.step import Rejected
from otel_resilience.engine.validation import check_int
from otel_resilience.errors import ExecutionRejectedError

KIND: Final = "quota"


class QuotaEvent(EventKind):
    """The kinds of event only the quota reports."""

    GRANTED = "quota_granted"


@dataclass(slots=True)
class QuotaGranted:
    """A run was granted; ``left`` are still to grant."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("left",)

    left: int


class QuotaExhaustedError(ExecutionRejectedError):
    """The quota rejected the call: it has granted every run it had."""


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    """How many runs the quota grants (``limit``, ``>= 0``, default 1)."""

    limit: int = 1

    def __post_init__(self) -> None:
        check_int("QuotaConfig", "limit", self.limit, minimum=0)


class _Grants:
    """The quota's state, shared by every link of one instance."""

    __slots__ = ("config", "granted", "lock", "name", "rejected")

    def __init__(self, name: str, config: QuotaConfig) -> None:
        self.name = name
        self.config = config
        self.lock = threading.Lock()
        self.granted = self.rejected = 0


class QuotaStep(Link[QuotaConfig]):
    """The quota's rules: grant while runs are left, else return the rejection."""

    __slots__ = ("_grants",)

    kind: ClassVar[str] = KIND
    admits_early: ClassVar[bool] = True

    def __init__(self, grants: _Grants, clock: Clock, telemetry: StrategyTelemetry) -> None:
        super().__init__(grants.name, grants.config, clock, telemetry)
        self._grants = grants

    def admit(self, ctx: ExecutionContext) -> Any:
        grants = self._grants
        with grants.lock:
            left = grants.config.limit - grants.granted
            if left > 0:
                grants.granted += 1
            else:
                grants.rejected += 1
        telemetry = self._telemetry
        if left <= 0:
            if telemetry.enabled:
                telemetry.report(Event.CALL_REJECTED, CallRejected("quota_exhausted"))
            return Rejected(QuotaExhaustedError(f"quota {grants.name!r} is exhausted"))
        if telemetry.enabled:
            telemetry.report(QuotaEvent.GRANTED, QuotaGranted(left - 1))
        return None

    def get_stats(self) -> dict[str, Any]:
        return _stats(self._grants)


def _stats(grants: _Grants) -> dict[str, Any]:
    with grants.lock:
        return {"name": grants.name, "granted": grants.granted, "rejected": grants.rejected}


class Quota(Pattern[QuotaConfig, QuotaStep], kind=KIND):
    """Grants ``config.limit`` runs, then rejects every call with :class:`QuotaExhaustedError`."""

    __slots__ = ("_grants",)

    def __init__(self, name: str, config: QuotaConfig | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(name, config, clock, default=QuotaConfig())
        self._grants = _Grants(name, self._config)

    call = verb(
        Pattern.run, "Await ``fn`` if the quota grants it.", returns="What ``fn`` returned.", raises=()
    )
    call_sync = verb(
        Pattern.run_sync, "Call ``fn`` if the quota grants it.", returns="What ``fn`` returned.", raises=()
    )

    def _link(self, telemetry: StrategyTelemetry) -> QuotaStep:
        return QuotaStep(self._grants, self._clock, telemetry)

    def get_stats(self) -> dict[str, Any]:
        return _stats(self._grants)
