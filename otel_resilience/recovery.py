"""Error recovery (auto-healing): rules per error type, pattern detection, recovery statistics.

An :class:`ErrorRecoverySystem` holds *rules*: an exception class and the
:class:`RecoveryAction` to take when an error of that class (or a subclass) reaches it. The
most specific class in the error's MRO wins. The actions are:

* ``RETRY``: run the operation again, up to ``max_attempts`` times, ``delay`` seconds apart,
  while it keeps failing with an error the rule covers; when the re-runs run out, the *last*
  error is re-raised unchanged (never wrapped). Like retry attempts, re-runs happen outside the
  handling of the original error, so a re-run's error (or rejection) does not chain it. Each
  re-run is a new attempt of the execution: it takes the next attempt number
  (:meth:`~otel_resilience.engine.context.ExecutionContext.next_attempt`, shared with retry),
  and is not started once the execution made its cap of attempts in total
  (``ResilienceConfig.max_attempts_total``): like a re-run the deadline leaves no room for, the
  recovery then ends as a *failed* recovery attempt and the last error is re-raised.
* ``RESTART``: the same loop, but each re-run is preceded by ``restart_hook()`` (sync or async)
  that re-creates or re-connects the failing component.
* ``FALLBACK``: answer with ``fallback_value``, or with ``fallback_function(*args, **kwargs)``
  called with the operation's own arguments (sync or async).
* ``ISOLATE``: force the named circuit breaker open for ``isolate_duration`` seconds, then
  re-raise the original error.
* ``ESCALATE``: raise :class:`~otel_resilience.errors.RecoveryEscalatedError` ``from`` the
  original error: no automatic recovery, a human is needed.

An error no rule covers propagates unchanged and is not a recovery attempt. Cancellation
(``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``) is never recovered and never
counted. Neither is a rejection (:class:`~otel_resilience.errors.ExecutionRejectedError`: an open
breaker, a full bulkhead, a bulkhead queue timeout): the dependency was never called, so it is
not an error of the dependency. It propagates unchanged, is no recovery attempt and no
occurrence of a pattern, and no rule may be registered for it.

Every other error that reaches the system is fed to a pattern detector: the same fingerprint
(exception type name + operation name) seen ``pattern_threshold`` times within
``pattern_window`` seconds is reported once per window as ``Event.PATTERN_DETECTED``.

Use it three ways: in a pipeline (:meth:`ErrorRecoverySystem.as_strategy`), around a function
(:meth:`ErrorRecoverySystem.execute`, :meth:`ErrorRecoverySystem.protect`), or on an error you
already caught (:meth:`ErrorRecoverySystem.recover_from_error` with a :class:`RecoveryContext`).
"""

from __future__ import annotations

import enum
import inspect
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import (
    Any,
    ClassVar,
    Final,
    Literal,
    ParamSpec,
    Protocol,
    TypeVar,
    cast,
    overload,
    runtime_checkable,
)

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext, time_remaining
from otel_resilience.engine.events import (
    Event,
    Outcome,
    PatternDetected,
    RecoveryAttempted,
    StrategyTelemetry,
    TelemetrySource,
    error_type_name,
)
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder, protect_with, standalone
from otel_resilience.engine.registry import BREAKERS, RECOVERY_SYSTEMS
from otel_resilience.engine.strategy import TERMINAL, Strategy, WrongDriver
from otel_resilience.engine.validation import (
    check_callable,
    check_duration,
    check_int,
    check_name,
    fail,
)
from otel_resilience.errors import ExecutionRejectedError, RecoveryEscalatedError

__all__ = [
    "DEFAULT_DELAY",
    "DEFAULT_ISOLATE_DURATION",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_FINGERPRINTS",
    "DEFAULT_PATTERN_THRESHOLD",
    "DEFAULT_PATTERN_WINDOW",
    "BreakerResolver",
    "ErrorRecoverySystem",
    "Isolatable",
    "RecoveryAction",
    "RecoveryConfig",
    "RecoveryContext",
    "RecoveryStats",
    "RecoveryStrategy",
]

P = ParamSpec("P")
R = TypeVar("R")

_LOG: Final = logging.getLogger("otel_resilience")

DEFAULT_MAX_ATTEMPTS: Final = 3
"""Re-runs a RETRY or RESTART rule makes after the failure that triggered it."""
DEFAULT_DELAY: Final = 1.0
"""Seconds before each RETRY/RESTART re-run: 3 re-runs 1 s apart stay inside a 5 s recovery."""
DEFAULT_ISOLATE_DURATION: Final = 30.0
"""Seconds an ISOLATE rule keeps the breaker forced open."""
DEFAULT_PATTERN_THRESHOLD: Final = 5
"""Occurrences of one fingerprint within the window that make a pattern."""
DEFAULT_PATTERN_WINDOW: Final = 60.0
"""Seconds within which ``pattern_threshold`` occurrences make a pattern."""
DEFAULT_MAX_FINGERPRINTS: Final = 1000
"""Fingerprints the pattern detector tracks at most (least recently seen evicted first)."""


class RecoveryStrategy(enum.Enum):
    """What a recovery rule does with an error. Values appear in stats and telemetry."""

    RETRY = "retry"
    """Re-run the operation, ``delay`` seconds apart, up to ``max_attempts`` times."""
    RESTART = "restart"
    """Call ``restart_hook``, then re-run; up to ``max_attempts`` times."""
    FALLBACK = "fallback"
    """Answer with ``fallback_value`` or ``fallback_function(*args, **kwargs)``."""
    ISOLATE = "isolate"
    """Force a circuit breaker open for ``isolate_duration``, then re-raise the error."""
    ESCALATE = "escalate"
    """Raise :class:`~otel_resilience.errors.RecoveryEscalatedError` from the error."""


_RERUN: Final = frozenset({RecoveryStrategy.RETRY, RecoveryStrategy.RESTART})


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    """What to do with an error a rule covers. Validated at construction.

    Fields that only one strategy uses (``restart_hook``, ``fallback_value``,
    ``fallback_function``, ``isolate_breaker``) must stay ``None`` for the other strategies, so
    that a misplaced option is an error, not a silent no-op.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field is out of range, or contradicts ``strategy``.
    """

    strategy: RecoveryStrategy
    """The recovery strategy (required)."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """RETRY/RESTART: re-runs after the triggering failure, >= 1. Default 3."""
    delay: float = DEFAULT_DELAY
    """RETRY/RESTART: seconds to wait before each re-run, >= 0 (a ``timedelta`` is accepted).
    Default 1.0 s. A re-run whose delay would end past the current deadline is not started."""
    restart_hook: Callable[[], object] | None = None
    """RESTART (required there): called with no arguments before each re-run; may be async."""
    fallback_value: object = None
    """FALLBACK: the value returned in place of the failed call. Default ``None``."""
    fallback_function: Callable[..., object] | None = None
    """FALLBACK: called with the operation's arguments instead; may be async. Default ``None``."""
    isolate_breaker: str | None = None
    """ISOLATE: name of the circuit breaker to force open. Default ``None``: the breaker of the
    :class:`RecoveryContext` (or of :meth:`ErrorRecoverySystem.as_strategy`: in a manager, the
    policy's own breaker) is used. In a manager the name is looked up among that manager's
    breakers; elsewhere among every live breaker (the most recently created of that name)."""
    isolate_duration: float = DEFAULT_ISOLATE_DURATION
    """ISOLATE: seconds the breaker stays forced open, > 0 (a ``timedelta`` is accepted).
    Default 30.0 s."""

    def __post_init__(self) -> None:
        owner = "RecoveryAction"
        strategy = self.strategy
        if not isinstance(strategy, RecoveryStrategy):
            raise fail(owner, "strategy", "a RecoveryStrategy", strategy, kind=TypeError)
        check_int(owner, "max_attempts", self.max_attempts, minimum=1)
        object.__setattr__(self, "delay", check_duration(owner, "delay", self.delay, allow_zero=True))
        object.__setattr__(
            self, "isolate_duration", check_duration(owner, "isolate_duration", self.isolate_duration)
        )
        check_callable(owner, "restart_hook", self.restart_hook, optional=True)
        check_callable(owner, "fallback_function", self.fallback_function, optional=True)
        if self.isolate_breaker is not None:
            check_name(owner, "isolate_breaker", self.isolate_breaker)
        if strategy is RecoveryStrategy.RESTART and self.restart_hook is None:
            raise fail(owner, "restart_hook", "a callable when strategy is RESTART", None)
        only: tuple[tuple[str, object, RecoveryStrategy], ...] = (
            ("restart_hook", self.restart_hook, RecoveryStrategy.RESTART),
            ("fallback_value", self.fallback_value, RecoveryStrategy.FALLBACK),
            ("fallback_function", self.fallback_function, RecoveryStrategy.FALLBACK),
            ("isolate_breaker", self.isolate_breaker, RecoveryStrategy.ISOLATE),
        )
        for field_name, value, needs in only:
            if value is not None and strategy is not needs:
                raise fail(owner, field_name, f"None unless strategy is {needs.name}", value)
        if self.fallback_value is not None and self.fallback_function is not None:
            raise fail(owner, "fallback_function", "None when fallback_value is set", self.fallback_function)


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """Settings of an :class:`ErrorRecoverySystem` itself (its rules are registered separately).

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field is out of range.
    """

    pattern_threshold: int = DEFAULT_PATTERN_THRESHOLD
    """Occurrences of one fingerprint (error type + operation) that make a pattern, >= 2.
    Default 5."""
    pattern_window: float = DEFAULT_PATTERN_WINDOW
    """Seconds within which they must occur, > 0 (a ``timedelta`` is accepted). Default 60.0 s.
    A fingerprint is reported at most once per window."""
    max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS
    """Fingerprints tracked at most, >= 1; the least recently seen is forgotten first.
    Default 1000."""

    def __post_init__(self) -> None:
        owner = "RecoveryConfig"
        check_int(owner, "pattern_threshold", self.pattern_threshold, minimum=2)
        object.__setattr__(
            self, "pattern_window", check_duration(owner, "pattern_window", self.pattern_window)
        )
        check_int(owner, "max_fingerprints", self.max_fingerprints, minimum=1)


_EMPTY_KWARGS: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RecoveryContext:
    """What :meth:`ErrorRecoverySystem.recover_from_error` needs to act on an error.

    A plain ``Mapping`` with the same keys is accepted in its place.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A name is empty.
    """

    operation: Callable[..., Any] | None = None
    """The callable to re-run (RETRY/RESTART need it; async for the async API). Default ``None``."""
    args: tuple[Any, ...] = ()
    """Its positional arguments (also passed to a ``fallback_function``). Default ``()``."""
    kwargs: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_KWARGS)
    """Its keyword arguments (also passed to a ``fallback_function``). Default empty."""
    operation_name: str | None = None
    """Bounded name of the operation, for fingerprints and telemetry. Default ``None``: the
    callable's ``__qualname__``, else ``"unknown"``."""
    breaker: str | None = None
    """Circuit breaker an ISOLATE rule without ``isolate_breaker`` forces open. Default ``None``."""

    def __post_init__(self) -> None:
        owner = "RecoveryContext"
        check_callable(owner, "operation", self.operation, optional=True)
        args: object = self.args
        if isinstance(args, list):
            object.__setattr__(self, "args", tuple(args))
        elif not isinstance(args, tuple):
            raise fail(owner, "args", "a tuple or a list", args, kind=TypeError)
        if not isinstance(self.kwargs, Mapping):
            raise fail(owner, "kwargs", "a mapping", self.kwargs, kind=TypeError)
        if self.operation_name is not None:
            check_name(owner, "operation_name", self.operation_name)
        if self.breaker is not None:
            check_name(owner, "breaker", self.breaker)


_CONTEXT_KEYS: Final = frozenset(item.name for item in fields(RecoveryContext))
_NO_CONTEXT: Final = RecoveryContext()


@runtime_checkable
class Isolatable(Protocol):
    """A circuit breaker an ISOLATE rule can force open."""

    @property
    def name(self) -> str:
        """The breaker's name."""
        ...

    def force_open(self, duration: float | None = None, *, reason: Literal["isolated"] = ...) -> object:
        """Open the breaker for ``duration`` seconds; ``reason="isolated"`` is what recovery passes."""
        ...


BreakerResolver = Callable[[str], Isolatable | None]
"""Finds the circuit breaker an ISOLATE rule names (``None`` when there is none of that name)."""


def _any_breaker(name: str) -> Isolatable | None:
    """The default :data:`BreakerResolver`: the most recently created live breaker of that name."""
    found = BREAKERS.get(name)
    return found if isinstance(found, Isolatable) else None


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
    its breaker open. An ESCALATE is an attempt that never succeeds (and is also counted in
    ``escalations``). An error no rule covers is not an attempt.

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

    def as_dict(self) -> dict[str, Any]:
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


class _Track:
    """The last ``threshold`` times one fingerprint was seen, and when it was last reported."""

    __slots__ = ("reported_at", "times")

    def __init__(self, threshold: int) -> None:
        self.times: deque[float] = deque(maxlen=threshold)
        self.reported_at: float | None = None


class _PatternDetector:
    """Sans-I/O: the same fingerprint ``threshold`` times within ``window`` seconds is a pattern.

    Each fingerprint keeps only its last ``threshold`` timestamps (a bounded deque): it is a
    pattern when the oldest of them is at most ``window`` seconds old. At most
    ``max_fingerprints`` fingerprints are kept, least recently seen evicted first.
    """

    __slots__ = ("_max", "_threshold", "_tracks", "_window")

    def __init__(self, threshold: int, window: float, max_fingerprints: int) -> None:
        self._threshold = threshold
        self._window = window
        self._max = max_fingerprints
        self._tracks: OrderedDict[tuple[str, str], _Track] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tracks)

    def record_locked(self, key: tuple[str, str], now: float) -> bool:
        """Record one occurrence; return whether it completes a pattern not yet reported."""
        tracks = self._tracks
        track = tracks.get(key)
        if track is None:
            if len(tracks) >= self._max:
                tracks.popitem(last=False)
            track = tracks[key] = _Track(self._threshold)
        else:
            tracks.move_to_end(key)
        times = track.times
        times.append(now)
        if len(times) < self._threshold or now - times[0] > self._window:
            return False
        if track.reported_at is not None and now - track.reported_at < self._window:
            return False
        track.reported_at = now
        return True


_Rule = tuple[type, RecoveryAction]


class _Isolation:
    """Which breaker an ISOLATE rule forces open: the call's own, or one it names, found by ``resolve``."""

    __slots__ = ("breaker", "resolve")

    def __init__(self, breaker: str | Isolatable | None, resolve: BreakerResolver) -> None:
        self.breaker = breaker
        self.resolve = resolve

    def find(self, name: str | None) -> Isolatable | None:
        """Return the breaker named ``name`` (a rule's ``isolate_breaker``), else the call's own."""
        if name is None:
            breaker = self.breaker
            if breaker is None or not isinstance(breaker, str):
                return breaker
            name = breaker
        return self.resolve(name)


def _callable_name(fn: object) -> str:
    """Return a bounded name for a callable (its ``__qualname__``), or ``"unknown"``."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) and name else "unknown"


def _type_name(error: BaseException) -> str:
    return error_type_name(error) or "unknown"


def _missing_operation(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("unreachable")  # pragma: no cover - only FALLBACK/ISOLATE/ESCALATE run it


def _no_awaitable(value: object, what: str) -> object:
    """Return ``value``; raise ``TypeError`` if a sync path got an awaitable."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        msg = f"the sync recovery API got an awaitable from {what}; use the async API"
        raise TypeError(msg)
    return value


class ErrorRecoverySystem:
    """Recovers from errors by rules per exception type, detects error patterns, keeps stats.

    Example::

        recovery_system = ErrorRecoverySystem()
        recovery_system.register_recovery_rule(
            ConnectionError,
            RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=3, delay=5.0),
        )
        result = await recovery_system.recover_from_error(
            error, RecoveryContext(operation=fetch, args=(url,))
        )

    Args:
        name: The system's name (telemetry source name, alert subject). Default ``"recovery"``.
        clock: The clock for delays and pattern windows.
        pattern_threshold: See :attr:`RecoveryConfig.pattern_threshold`.
        pattern_window: See :attr:`RecoveryConfig.pattern_window`.
        max_fingerprints: See :attr:`RecoveryConfig.max_fingerprints`.

    Raises:
        TypeError: ``name`` is not a string, or a setting has the wrong type.
        ValueError: ``name`` is empty, or a setting is out of range.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_config",
        "_detector",
        "_lock",
        "_name",
        "_rules",
        "_standalone",
        "_telemetry",
        "stats",
    )

    kind: ClassVar[str] = "recovery"

    def __init__(
        self,
        name: str = "recovery",
        *,
        clock: Clock = SYSTEM_CLOCK,
        pattern_threshold: int = DEFAULT_PATTERN_THRESHOLD,
        pattern_window: float = DEFAULT_PATTERN_WINDOW,
        max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
    ) -> None:
        self._name = check_name("ErrorRecoverySystem", "name", name)
        self._config = RecoveryConfig(pattern_threshold, pattern_window, max_fingerprints)
        self._clock = clock
        self._lock = threading.Lock()
        self._rules: Mapping[type, RecoveryAction] = MappingProxyType({})
        self._detector = _PatternDetector(
            self._config.pattern_threshold, self._config.pattern_window, max_fingerprints
        )
        self.stats = RecoveryStats()
        self._telemetry = StrategyTelemetry(TelemetrySource(self.kind, name))
        self._standalone: Pipeline | None = None
        RECOVERY_SYSTEMS.register(self)

    @property
    def _pipeline(self) -> Pipeline:
        """The instance's own one-link pipeline, built on first use."""
        pipeline = self._standalone
        return pipeline if pipeline is not None else standalone(self, "_standalone", self._build_pipeline)

    def _build_pipeline(self) -> Pipeline:
        return (
            PipelineBuilder(self._name, clock=self._clock, source=TelemetrySource(self.kind, self._name))
            .add(self.as_strategy())
            .build()
        )

    @property
    def name(self) -> str:
        """The system's name."""
        return self._name

    @property
    def config(self) -> RecoveryConfig:
        """The pattern-detection settings."""
        return self._config

    @property
    def rules(self) -> Mapping[type[Exception], RecoveryAction]:
        """A read-only snapshot of the registered rules."""
        return cast("Mapping[type[Exception], RecoveryAction]", self._rules)

    def register_recovery_rule(self, exc_type: type[Exception], action: RecoveryAction) -> None:
        """Act with ``action`` on errors of class ``exc_type`` or a subclass (replacing any rule for it).

        When several rules cover an error, the one for the most specific class in the error's
        MRO wins.

        Args:
            exc_type: A subclass of ``Exception`` (cancellation is never recovered), and not a
                rejection (an :class:`~otel_resilience.errors.ExecutionRejectedError`: a
                rejection is never recovered either, the dependency was not called).
            action: What to do.

        Raises:
            TypeError: ``exc_type`` is not an ``Exception`` subclass or ``action`` is not a
                :class:`RecoveryAction`.
            ValueError: ``exc_type`` is a rejection.
        """
        if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
            raise fail("ErrorRecoverySystem", "exc_type", "an Exception subclass", exc_type, kind=TypeError)
        if issubclass(exc_type, ExecutionRejectedError):
            raise fail(
                "ErrorRecoverySystem",
                "exc_type",
                "an error of the dependency, not a rejection (ExecutionRejectedError: the "
                "dependency was never called)",
                exc_type,
            )
        if not isinstance(action, RecoveryAction):
            raise fail("ErrorRecoverySystem", "action", "a RecoveryAction", action, kind=TypeError)
        with self._lock:
            rules = dict(self._rules)
            rules[exc_type] = action
            self._rules = MappingProxyType(rules)

    def get_stats(self) -> dict[str, Any]:
        """Return a consistent snapshot of the recovery statistics.

        Returns:
            ``{"attempts", "successful_recoveries", "failed_recoveries", "recovery_rate",
            "by_strategy": {strategy: {"attempts", "successful", "failed"}},
            "patterns_detected", "escalations"}``; ``recovery_rate`` is ``1.0`` with no
            attempts.
        """
        with self._lock:
            return self.stats.as_dict()

    def as_strategy(
        self,
        pipeline: str | None = None,
        *,
        breaker: str | Isolatable | None = None,
        breakers: BreakerResolver | None = None,
    ) -> Strategy:
        """Return a new pipeline link that recovers the errors of the rest of the chain.

        Args:
            pipeline: The pipeline's name, for telemetry.
            breaker: The circuit breaker an ISOLATE rule without ``isolate_breaker`` forces open:
                the breaker itself (what the manager passes: the policy's own breaker) or its name.
            breakers: Finds a breaker by name (an ``isolate_breaker``, or ``breaker`` given as a
                name); the manager passes the lookup among its own breakers. Default: every live
                breaker (the most recently created of that name).

        Returns:
            An unlinked :class:`~otel_resilience.engine.strategy.Strategy` sharing this system's
            rules, stats and pattern detector.

        Raises:
            TypeError: ``breaker`` is neither a name nor a breaker, or ``breakers`` is not callable.
            ValueError: ``breaker`` is an empty name.
        """
        if isinstance(breaker, str):
            check_name("ErrorRecoverySystem", "breaker", breaker)
        elif breaker is not None and not isinstance(breaker, Isolatable):
            raise fail(
                "ErrorRecoverySystem",
                "breaker",
                "a breaker name or a circuit breaker",
                breaker,
                kind=TypeError,
            )
        check_callable("ErrorRecoverySystem", "breakers", breakers, optional=True)
        return _RecoveryStrategyLink(
            self,
            StrategyTelemetry(TelemetrySource(self.kind, self._name, pipeline)),
            _Isolation(breaker, breakers or _any_breaker),
        )

    async def execute(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` and recover its errors by the rules.

        Raises:
            TypeError: ``fn`` is not callable.
            RecoveryEscalatedError: An ESCALATE rule covered the error.
            Exception: The error, when no rule covers it or recovery failed.
        """
        if not callable(fn):
            raise fail("ErrorRecoverySystem.execute", "fn", "callable", fn, kind=TypeError)
        return await self._pipeline.execute(fn, *args, **kwargs)

    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in this thread and recover its errors by the rules.

        Raises:
            TypeError: ``fn`` is not callable.
            RecoveryEscalatedError: An ESCALATE rule covered the error.
            Exception: The error, when no rule covers it or recovery failed.
        """
        if not callable(fn):
            raise fail("ErrorRecoverySystem.execute_sync", "fn", "callable", fn, kind=TypeError)
        return self._pipeline.execute_sync(fn, *args, **kwargs)

    @overload
    def protect(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def protect(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def protect(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn`` so that its errors are recovered (async or sync, chosen once, here).

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            raise fail("ErrorRecoverySystem.protect", "fn", "callable", fn, kind=TypeError)
        return protect_with(self._pipeline, fn)

    async def recover_from_error(
        self, error: BaseException, context: RecoveryContext | Mapping[str, Any] | None = None
    ) -> Any:
        """Recover from an error that was already caught.

        Args:
            error: The error.
            context: What to re-run and how to name it (a :class:`RecoveryContext` or a mapping
                with its keys); RETRY/RESTART need ``operation`` (an async callable here).

        Returns:
            The recovered result (a re-run's or the fallback's).

        Raises:
            TypeError: ``error`` is not an exception, ``context`` is malformed, a RETRY/RESTART
                rule covers the error and ``context`` has no ``operation``, or the ``operation``
                is a plain function (it must return an awaitable here).
            RecoveryEscalatedError: An ESCALATE rule covered the error (``from`` it).
            BaseException: ``error`` itself when no rule covers it, it is a rejection, ISOLATE
                acted, or it is a cancellation; the last re-run error when RETRY/RESTART ran out.
        """
        failure, rule, ctx, isolation = self._prepare(error, context)
        try:
            return await self._recover(
                failure,
                rule,
                ctx,
                rest=TERMINAL,
                telemetry=self._telemetry,
                isolation=isolation,
            )
        except WrongDriver as signal:  # a sync operation given to the async API
            raise signal.as_type_error() from None

    def recover_from_error_sync(
        self, error: BaseException, context: RecoveryContext | Mapping[str, Any] | None = None
    ) -> Any:
        """Recover from an error that was already caught, in this thread.

        The same as :meth:`recover_from_error`, with a sync ``operation``, hook and fallback.

        Args:
            error: The error.
            context: What to re-run and how to name it.

        Returns:
            The recovered result.

        Raises:
            TypeError: As :meth:`recover_from_error`; here the ``operation`` must not be a
                coroutine function.
            RecoveryEscalatedError: An ESCALATE rule covered the error (``from`` it).
            BaseException: As :meth:`recover_from_error`.
        """
        failure, rule, ctx, isolation = self._prepare(error, context)
        try:
            return self._recover_sync(
                failure,
                rule,
                ctx,
                rest=TERMINAL,
                telemetry=self._telemetry,
                isolation=isolation,
            )
        except WrongDriver as signal:  # an async operation given to the sync API
            raise signal.as_type_error() from None

    # -- the sans-I/O core ---------------------------------------------------------------------

    def _prepare(
        self, error: BaseException, context: RecoveryContext | Mapping[str, Any] | None
    ) -> tuple[Exception, _Rule, ExecutionContext, _Isolation]:
        """Validate a ``recover_from_error`` call, observe the error, and find its rule."""
        if not isinstance(error, BaseException):
            raise fail("ErrorRecoverySystem", "error", "an exception", error, kind=TypeError)
        rc = _as_context(context)
        if not isinstance(error, Exception):
            raise error
        operation = rc.operation_name or _callable_name(rc.operation)
        rule = self._observe(error, operation)
        if rule is None:
            raise error
        if rule[1].strategy in _RERUN and rc.operation is None:
            rule_name = rule[1].strategy.name
            raise fail("RecoveryContext", "operation", f"a callable for {rule_name}", None, kind=TypeError)
        ctx = ExecutionContext(rc.operation or _missing_operation, rc.args, rc.kwargs, operation)
        return error, rule, ctx, _Isolation(rc.breaker, _any_breaker)

    def _observe(self, error: Exception, operation: str) -> _Rule | None:
        """Feed ``error`` to the pattern detector and return the rule that covers it, if any.

        A rejection is neither: the dependency was never called (see the module doc).
        """
        if isinstance(error, ExecutionRejectedError):
            return None
        error_type = _type_name(error)
        with self._lock:
            detected = self._detector.record_locked((error_type, operation), self._clock.now())
            if detected:
                self.stats.patterns_detected += 1
        if detected and self._telemetry.enabled:
            config = self._config
            self._telemetry.report(
                Event.PATTERN_DETECTED,
                PatternDetected(error_type, operation, config.pattern_threshold, config.pattern_window),
            )
        rules = self._rules
        if rules:
            for cls in type(error).__mro__:
                action = rules.get(cls)
                if action is not None:
                    return cls, action
        return None

    def _settle(
        self, telemetry: StrategyTelemetry, strategy: RecoveryStrategy, error: Exception, *, success: bool
    ) -> None:
        """Count one ended attempt and report it."""
        with self._lock:
            self.stats.count(strategy, success)
        if telemetry.enabled:
            telemetry.report(
                Event.RECOVERY_ATTEMPTED,
                RecoveryAttempted(strategy.value, "success" if success else "failure", _type_name(error)),
            )

    def _may_rerun(self, delay: float) -> bool:
        """Whether a re-run after ``delay`` seconds still starts before the current deadline."""
        return time_remaining(self._clock) > delay

    def _isolate(
        self, action: RecoveryAction, error: Exception, isolation: _Isolation, telemetry: StrategyTelemetry
    ) -> None:
        """Force the rule's (or the link's / context's) breaker open and count the attempt."""
        name = action.isolate_breaker
        target = isolation.find(name)
        if name is None and target is not None:
            name = target.name
        success = False
        if target is not None:
            try:
                target.force_open(action.isolate_duration, reason="isolated")
            except Exception:  # noqa: BLE001 - logged; the original error is what the caller gets
                _LOG.warning("recovery %r could not isolate breaker %r", self._name, name, exc_info=True)
            else:
                success = True
        elif name is None and isolation.breaker is None:
            _LOG.warning(
                "recovery %r has no circuit breaker to isolate: the rule names none (isolate_breaker) "
                "and the call has none",
                self._name,
            )
        else:
            _LOG.warning(
                "recovery %r found no circuit breaker %r to isolate", self._name, name or isolation.breaker
            )
        self._settle(telemetry, RecoveryStrategy.ISOLATE, error, success=success)

    def _escalate(
        self, error: Exception, operation: str, telemetry: StrategyTelemetry
    ) -> RecoveryEscalatedError:
        """Count an escalation and return the error to raise ``from`` the original."""
        self._settle(telemetry, RecoveryStrategy.ESCALATE, error, success=False)
        return RecoveryEscalatedError(_type_name(error), operation)

    # -- the drivers ---------------------------------------------------------------------------

    async def _recover(
        self,
        error: Exception,
        rule: _Rule,
        ctx: ExecutionContext,
        *,
        rest: Strategy,
        telemetry: StrategyTelemetry,
        isolation: _Isolation,
    ) -> Any:
        """Act on ``error`` by ``rule`` (async driver)."""
        covered, action = rule
        strategy = action.strategy
        if strategy in _RERUN:
            last: Exception = error
            hook = action.restart_hook
            delay = action.delay
            for _ in range(action.max_attempts):
                if not self._may_rerun(delay) or ctx.next_attempt() is None:
                    break  # the deadline leaves no room, or the execution made its attempts in total
                if delay:
                    await self._clock.sleep(delay)
                try:
                    if hook is not None:
                        done = hook()
                        if inspect.isawaitable(done):
                            await done
                    result = await rest.execute(ctx)
                except Exception as exc:  # noqa: BLE001 - kept and re-raised below when recovery ends
                    last = exc
                    if isinstance(exc, covered):
                        continue
                    break
                self._settle(telemetry, strategy, error, success=True)
                ctx.outcome = Outcome.RECOVERED
                return result
            self._settle(telemetry, strategy, error, success=False)
            raise last
        if strategy is RecoveryStrategy.FALLBACK:
            function = action.fallback_function
            try:
                if function is None:
                    result = action.fallback_value
                else:
                    result = function(*ctx.args, **ctx.kwargs)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception:
                self._settle(telemetry, strategy, error, success=False)
                raise
            self._settle(telemetry, strategy, error, success=True)
            ctx.outcome = Outcome.FALLBACK
            return result
        if strategy is RecoveryStrategy.ISOLATE:
            self._isolate(action, error, isolation, telemetry)
            raise error
        raise self._escalate(error, ctx.operation, telemetry) from error

    def _recover_sync(
        self,
        error: Exception,
        rule: _Rule,
        ctx: ExecutionContext,
        *,
        rest: Strategy,
        telemetry: StrategyTelemetry,
        isolation: _Isolation,
    ) -> Any:
        """Act on ``error`` by ``rule`` (sync driver)."""
        covered, action = rule
        strategy = action.strategy
        if strategy in _RERUN:
            last: Exception = error
            hook = action.restart_hook
            delay = action.delay
            for _ in range(action.max_attempts):
                if not self._may_rerun(delay) or ctx.next_attempt() is None:
                    break  # the deadline leaves no room, or the execution made its attempts in total
                if delay:
                    self._clock.sleep_sync(delay)
                try:
                    if hook is not None:
                        _no_awaitable(hook(), "restart_hook")
                    result = rest.execute_sync(ctx)
                except Exception as exc:  # noqa: BLE001 - kept and re-raised below when recovery ends
                    last = exc
                    if isinstance(exc, covered):
                        continue
                    break
                self._settle(telemetry, strategy, error, success=True)
                ctx.outcome = Outcome.RECOVERED
                return result
            self._settle(telemetry, strategy, error, success=False)
            raise last
        if strategy is RecoveryStrategy.FALLBACK:
            function = action.fallback_function
            try:
                if function is None:
                    result = action.fallback_value
                else:
                    result = _no_awaitable(function(*ctx.args, **ctx.kwargs), "fallback_function")
            except Exception:
                self._settle(telemetry, strategy, error, success=False)
                raise
            self._settle(telemetry, strategy, error, success=True)
            ctx.outcome = Outcome.FALLBACK
            return result
        if strategy is RecoveryStrategy.ISOLATE:
            self._isolate(action, error, isolation, telemetry)
            raise error
        raise self._escalate(error, ctx.operation, telemetry) from error


def _as_context(context: RecoveryContext | Mapping[str, Any] | None) -> RecoveryContext:
    """Normalise the ``context`` argument of ``recover_from_error``."""
    if context is None:
        return _NO_CONTEXT
    if isinstance(context, RecoveryContext):
        return context
    if isinstance(context, Mapping):
        unknown = sorted(str(key) for key in context if key not in _CONTEXT_KEYS)
        if unknown:
            raise fail("RecoveryContext", unknown[0], f"one of {sorted(_CONTEXT_KEYS)}", unknown[0])
        return RecoveryContext(**context)
    raise fail("ErrorRecoverySystem", "context", "a RecoveryContext or a mapping", context, kind=TypeError)


class _RecoveryStrategyLink(Strategy):
    """The pipeline link: runs the rest of the chain and recovers what it raises."""

    __slots__ = ("_isolation", "_system", "_telemetry")

    kind: ClassVar[str] = "recovery"

    def __init__(
        self, system: ErrorRecoverySystem, telemetry: StrategyTelemetry, isolation: _Isolation
    ) -> None:
        super().__init__()
        self._system = system
        self._telemetry = telemetry
        self._isolation = isolation

    @property
    def name(self) -> str:
        return self._system.name

    @property
    def config(self) -> RecoveryConfig:
        return self._system.config

    async def execute(self, ctx: ExecutionContext) -> Any:
        system = self._system
        try:
            return await self.next.execute(ctx)
        except Exception as exc:
            rule = system._observe(exc, ctx.operation)
            if rule is None:
                raise
            if rule[1].strategy not in _RERUN:
                # A fallback function's own error chains the original (``__context__``).
                return await system._recover(
                    exc,
                    rule,
                    ctx,
                    rest=self.next,
                    telemetry=self._telemetry,
                    isolation=self._isolation,
                )
            error = exc
        # Re-runs happen outside the ``except`` block, as retry attempts do, so that an error (or
        # a rejection) raised by a re-run does not chain the original failure and keep its
        # frames alive.
        return await system._recover(
            error,
            rule,
            ctx,
            rest=self.next,
            telemetry=self._telemetry,
            isolation=self._isolation,
        )

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        system = self._system
        try:
            return self.next.execute_sync(ctx)
        except Exception as exc:
            rule = system._observe(exc, ctx.operation)
            if rule is None:
                raise
            if rule[1].strategy not in _RERUN:
                return system._recover_sync(
                    exc,
                    rule,
                    ctx,
                    rest=self.next,
                    telemetry=self._telemetry,
                    isolation=self._isolation,
                )
            error = exc
        # Re-runs happen outside the ``except`` block: see :meth:`execute`.
        return system._recover_sync(
            error,
            rule,
            ctx,
            rest=self.next,
            telemetry=self._telemetry,
            isolation=self._isolation,
        )
