"""What an alert is and when one is raised: :class:`Alert`, its kinds and severities, :class:`AlertConfig`."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from otel_resilience.engine.events import IdentityEnum, bounded_text
from otel_resilience.engine.readonly import FrozenMapping
from otel_resilience.engine.validation import check_duration, check_int, check_number, fail

DEFAULT_RECOVERY_RATE_THRESHOLD: Final = 0.8
"""A recovery rate below this fraction raises ``LOW_RECOVERY_RATE`` (SPEC: 80 %)."""
DEFAULT_MIN_RECOVERY_ATTEMPTS: Final = 10
"""Attempts a recovery system must have made before its rate is judged."""
DEFAULT_RECOVERY_WINDOW: Final = 100
"""The recovery rate is computed over this many most recent attempts."""
DEFAULT_BULKHEAD_COOLDOWN: Final = 60.0
"""Seconds between two ``BULKHEAD_FULL`` alerts for the same bulkhead."""
DEFAULT_ESCALATION_COOLDOWN: Final = 60.0
"""Seconds between two ``RECOVERY_ESCALATED`` alerts for the same system and error type."""
DEFAULT_HISTORY_SIZE: Final = 100
"""Recent alerts kept in :attr:`AlertSystem.history`."""
MAX_TRACKED_SUBJECTS: Final = 1024
"""Breakers in an outage, bulkheads, recovery systems and escalations tracked at most, each.

Past it, a breaker's new outage forgets the least recently seen one, and a subject whose
cooldown ended makes room (a recovery rate: one back at the threshold, the least recently seen
first); the bulkheads and escalations left without room share one cooldown per kind, the
re-opens of outages not kept one :data:`UNTRACKED_OUTAGE_COOLDOWN`, the recovery systems one rate
window (the alert standing for them has the ``untracked`` attribute): more subjects make no
more alerts."""
UNTRACKED_OUTAGE_COOLDOWN: Final = 60.0
"""Seconds between two ``CIRCUIT_OPEN`` alerts for re-opens of outages not tracked (past
:data:`MAX_TRACKED_SUBJECTS`): one alert stands for all of them, as breakers have no cooldown."""


class AlertKind(IdentityEnum):
    """What an alert is about. Values appear in telemetry and stats."""

    CIRCUIT_OPEN = "circuit_open"
    BULKHEAD_FULL = "bulkhead_full"
    LOW_RECOVERY_RATE = "low_recovery_rate"
    ERROR_PATTERN = "error_pattern"
    RECOVERY_ESCALATED = "recovery_escalated"


class AlertSeverity(enum.Enum):
    """How urgent an alert is (the same labels as the shipped Prometheus rules)."""

    WARNING = "warning"
    CRITICAL = "critical"


SEVERITIES: Final[Mapping[AlertKind, AlertSeverity]] = MappingProxyType(
    {
        AlertKind.CIRCUIT_OPEN: AlertSeverity.CRITICAL,
        AlertKind.BULKHEAD_FULL: AlertSeverity.WARNING,
        AlertKind.LOW_RECOVERY_RATE: AlertSeverity.WARNING,
        AlertKind.ERROR_PATTERN: AlertSeverity.WARNING,
        AlertKind.RECOVERY_ESCALATED: AlertSeverity.CRITICAL,
    }
)
"""The severity of each kind: a dependency taken out of service, or an error no rule can
recover, needs a human now (critical); the others are early warnings."""


_EMPTY: Final[Mapping[str, str]] = FrozenMapping({})


_bounded = bounded_text
"""An alert's subject or attribute value, cut to :data:`MAX_ATTRIBUTE_LENGTH` characters."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One raised alert: a value, hashed and compared by its fields, copied and pickled whole.

    Attributes:
        kind: What it is about.
        severity: How urgent it is.
        subject: The breaker, bulkhead, operation or recovery system concerned.
        summary: One human-readable sentence, at most :data:`MAX_ATTRIBUTE_LENGTH` characters: a
            longer one (made of long names) is cut as a long key is
            (:func:`~otel_resilience.engine.events.key_attribute`, ending in ``...#`` and a
            digest of the whole), so that two alerts about two subjects never read alike.
        timestamp: When it was raised, in seconds on the alert system's clock
            (``time.monotonic`` by default: compare alerts with each other, not with wall time).
        attributes: Bounded strings that detail it (names, exception type names, numbers).
            A ``CIRCUIT_OPEN`` alert has ``old``, ``reason`` and ``reopens`` (the re-opens of
            the outage episode when it was raised; ``"0"`` when it opens the episode). A
            ``BULKHEAD_FULL`` alert has ``reason`` (the rejection that raised it:
            ``"bulkhead_full"``, or ``"queue_timeout"`` for a call that gave up in the queue)
            and ``cooldown``. The
            alert of a keyed policy's breaker or bulkhead (one per key) has ``key`` (its
            ``resilience.key``, a long key cut as there, so two keys are two values): each key's
            outage is an episode of its own, each key's full bulkhead has a cooldown of its own.
            An alert that stands for the subjects of its kind past
            :data:`MAX_TRACKED_SUBJECTS` (their shared cooldown, or rate window) has ``untracked``
            (``"more than 1024 bulkheads"``, ``"... breakers"``, ``"... escalations"`` or ``"...
            recovery systems"``); no other alert has it.
    """

    kind: AlertKind
    severity: AlertSeverity
    subject: str
    summary: str
    timestamp: float
    # Not hashed (a read-only mapping cannot be): an alert is hashed by its other fields and
    # compared by all of them, so that equal alerts hash alike.
    attributes: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)


AlertCallback = Callable[[Alert], object]
"""A subscriber: a function or an async function called with each alert (:meth:`AlertSystem.subscribe`)."""


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """When an :class:`AlertSystem` raises alerts. Validated at construction.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field is out of range, or ``min_recovery_attempts > recovery_window``.
    """

    recovery_rate_threshold: float = DEFAULT_RECOVERY_RATE_THRESHOLD
    """A rate below this fraction (``0 < x <= 1``) raises ``LOW_RECOVERY_RATE``. Default 0.8."""
    min_recovery_attempts: int = DEFAULT_MIN_RECOVERY_ATTEMPTS
    """Attempts seen (in the window) before the rate is judged, >= 1. Default 10."""
    recovery_window: int = DEFAULT_RECOVERY_WINDOW
    """The rate is over this many most recent attempts (a count, not a time), >= 1. Default 100."""
    bulkhead_cooldown: float = DEFAULT_BULKHEAD_COOLDOWN
    """Seconds between two ``BULKHEAD_FULL`` alerts for one bulkhead (of a keyed policy: for one
    key), >= 0 (``timedelta`` accepted). Default 60.0 s."""
    escalation_cooldown: float = DEFAULT_ESCALATION_COOLDOWN
    """Seconds between two ``RECOVERY_ESCALATED`` alerts for one system and error type, >= 0
    (``timedelta`` accepted). Default 60.0 s."""
    history_size: int = DEFAULT_HISTORY_SIZE
    """Recent alerts kept in :attr:`AlertSystem.history`, >= 1. Default 100."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            recovery_rate_threshold: float = ...,
            min_recovery_attempts: int = ...,
            recovery_window: int = ...,
            bulkhead_cooldown: float | timedelta = ...,
            escalation_cooldown: float | timedelta = ...,
            history_size: int = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        owner = "AlertConfig"
        check_number(
            owner,
            "recovery_rate_threshold",
            self.recovery_rate_threshold,
            minimum=0.0,
            maximum=1.0,
            min_inclusive=False,
        )
        object.__setattr__(self, "recovery_rate_threshold", float(self.recovery_rate_threshold))
        check_int(owner, "min_recovery_attempts", self.min_recovery_attempts, minimum=1)
        check_int(owner, "recovery_window", self.recovery_window, minimum=1)
        if self.min_recovery_attempts > self.recovery_window:
            raise fail(
                owner,
                "min_recovery_attempts",
                f"<= recovery_window ({self.recovery_window})",
                self.min_recovery_attempts,
            )
        for name in ("bulkhead_cooldown", "escalation_cooldown"):
            object.__setattr__(self, name, check_duration(owner, name, getattr(self, name), allow_zero=True))
        check_int(owner, "history_size", self.history_size, minimum=1)
