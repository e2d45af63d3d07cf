"""The error recovery system: rules per error type, pattern detection, recovery statistics."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final, ParamSpec, TypeVar, cast

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import (
    Event,
    PatternDetected,
    StrategyTelemetry,
    error_type_key,
    key_attribute,
)
from otel_resilience.engine.facade import Pattern, verb
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.naming import callable_module, callable_name
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import RECOVERY_SYSTEMS
from otel_resilience.engine.strategy import WrongDriver
from otel_resilience.engine.validation import (
    check_called_with,
    check_name,
    check_not_generator,
    check_sync_callable,
    fail,
)
from otel_resilience.errors import ExecutionRejectedError
from otel_resilience.patterns.recovery.config import (
    DEFAULT_MAX_FINGERPRINTS,
    DEFAULT_PATTERN_THRESHOLD,
    DEFAULT_PATTERN_WINDOW,
    BreakerResolver,
    Isolatable,
    Isolation,
    RecoveryAction,
    RecoveryConfig,
    RecoveryContext,
    Rule,
    any_breaker,
    as_context,
    type_name,
)
from otel_resilience.patterns.recovery.detector import PatternDetector
from otel_resilience.patterns.recovery.stats import RecoveryStats, RecoveryStatsDict
from otel_resilience.patterns.recovery.step import CaughtErrorStep, RecoveryStep

__all__ = ["ErrorRecoverySystem"]

P = ParamSpec("P")
R = TypeVar("R")

_RESOLVER_NOT_A_GENERATOR: Final = (
    "a function that returns a breaker or None, not a generator function (whose iterator, made before "
    "its body runs, is no breaker: every ISOLATE would fail)"
)
_MAX_UNFOUND: Final = 256
"""Breaker names an ISOLATE found no breaker of that one system warns of (once each)."""


class ErrorRecoverySystem(Pattern[RecoveryConfig, RecoveryStep], kind="recovery"):
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
            Telemetry series and the alert systems' recovery rates and escalation cooldowns are
            kept by name: give each live system its own (a manager names its default one
            ``"recovery"``, else ``"recovery-2"`` … the first name no live system has).
        clock: The clock for delays and pattern windows.
        pattern_threshold: See :attr:`RecoveryConfig.pattern_threshold`.
        pattern_window: See :attr:`RecoveryConfig.pattern_window`.
        max_fingerprints: See :attr:`RecoveryConfig.max_fingerprints`.

    Raises:
        TypeError: ``name`` is not a string, or a setting has the wrong type.
        ValueError: ``name`` is empty, or a setting is out of range.
    """

    __slots__ = ("_detector", "_lock", "_rules", "_stats", "_unfound")

    def __init__(
        self,
        name: str = "recovery",
        *,
        clock: Clock = SYSTEM_CLOCK,
        pattern_threshold: int = DEFAULT_PATTERN_THRESHOLD,
        pattern_window: float | timedelta = DEFAULT_PATTERN_WINDOW,
        max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS,
    ) -> None:
        config = RecoveryConfig(pattern_threshold, pattern_window, max_fingerprints)
        super().__init__(name, config, clock)
        self._lock = fork_safe(threading.Lock())
        self._rules: Mapping[type, RecoveryAction] = MappingProxyType({})
        self._detector = PatternDetector(config.pattern_threshold, config.pattern_window, max_fingerprints)
        self._stats = RecoveryStats()
        self._unfound: set[str | None] = set()
        RECOVERY_SYSTEMS.register(self)

    def _first_unfound(self, name: str | None) -> bool:
        """Note an ISOLATE that found no breaker ``name`` (``None``: none named); whether to warn of it.

        Warned once per name (an outage fails every call: a line per failure would flood the
        log), each failure still counted (``by_strategy["isolate"]["failed"]``). At most
        :data:`_MAX_UNFOUND` names are remembered: past them, no more are warned of.
        """
        with self._lock:
            unfound = self._unfound
            if name in unfound or len(unfound) >= _MAX_UNFOUND:
                return False
            unfound.add(name)
            return True

    stats = ReadOnly[RecoveryStats](
        "_stats", "The live counters (plain integers; read them, or :meth:`get_stats` for a snapshot)."
    )

    @property
    def rules(self) -> Mapping[type[Exception], RecoveryAction]:
        """A read-only snapshot of the registered rules."""
        return cast("Mapping[type[Exception], RecoveryAction]", self._rules)

    def register_recovery_rule(self, exc_type: type[Exception], action: RecoveryAction) -> None:
        """Act with ``action`` on errors of class ``exc_type`` or a subclass (replacing any rule for it).

        The rule that acts on an error is the one for the first class of the error's MRO
        (``type(error).__mro__``) that has a rule: a subclass's rule wins over its base's. When
        no class of its MRO has one, the first rule, in registration order, whose class the error
        is an instance of (``isinstance``, as a fallback's ``handle_exceptions``: an ABC the
        error's class is registered with, ``ABC.register``) acts. A replaced rule keeps its
        place in that order; a RETRY/RESTART recovery of the replaced action that is running
        ends at its next re-run's error (a failed recovery), which the new action acts on.

        Args:
            exc_type: A subclass of ``Exception`` (cancellation is never recovered), and not a
                rejection (an :class:`~otel_resilience.errors.ExecutionRejectedError`: a
                rejection is never recovered either, the dependency was not called).
            action: What to do.

        Raises:
            TypeError: ``exc_type`` is not an ``Exception`` subclass (or one that cannot be
                hashed) or ``action`` is not a :class:`RecoveryAction`.
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
        try:
            hash(exc_type)
        except TypeError:
            rule = "a hashable class (the metaclass of this one defines __eq__ without __hash__)"
            raise fail("ErrorRecoverySystem", "exc_type", rule, exc_type, kind=TypeError) from None
        with self._lock:
            rules = dict(self._rules)
            rules[exc_type] = action
            self._rules = MappingProxyType(rules)

    def __repr__(self) -> str:
        rules = ", ".join(f"{kind.__name__}: {action.strategy.name}" for kind, action in self._rules.items())
        return f"ErrorRecoverySystem({self.name!r}, rules={{{rules}}})"

    def get_stats(self) -> RecoveryStatsDict:
        """Return a consistent snapshot of the recovery statistics.

        Returns:
            ``{"attempts", "successful_recoveries", "failed_recoveries", "recovery_rate",
            "by_strategy": {strategy: {"attempts", "successful", "failed"}},
            "patterns_detected", "escalations"}``; ``recovery_rate`` is ``1.0`` with no
            attempts.
        """
        with self._lock:
            return self._stats.as_dict()

    def as_strategy(
        self,
        pipeline: str | None = None,
        *,
        breaker: str | Isolatable | None = None,
        breakers: BreakerResolver | None = None,
    ) -> RecoveryStep:
        """Return a new pipeline link that recovers the errors of the rest of the chain.

        Args:
            pipeline: The pipeline's name, for telemetry.
            breaker: The circuit breaker an ISOLATE rule without ``isolate_breaker`` forces open:
                the breaker itself (what the manager passes: the policy's own breaker) or its name.
            breakers: Finds a breaker by name (an ``isolate_breaker``, or ``breaker`` given as a
                name); the manager passes the lookup among its own breakers. Default: every live
                breaker (the most recently created of that name). A plain function (not a generator
                function): it is called with the name, never awaited.

        Returns:
            An unlinked :class:`~otel_resilience.engine.step.Step` sharing this system's
            rules, stats and pattern detector.

        Raises:
            TypeError: ``breaker`` is neither a name nor a breaker, or ``breakers`` is not callable,
                is async (a coroutine function), is a generator function or cannot take the name.
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
        check_sync_callable("ErrorRecoverySystem", "breakers", breakers, optional=True, what="function")
        check_not_generator("ErrorRecoverySystem", "breakers", breakers, _RESOLVER_NOT_A_GENERATOR)
        check_called_with("ErrorRecoverySystem", "breakers", breakers, "name")
        return RecoveryStep(self, self._telemetry_for(pipeline), Isolation(breaker, breakers or any_breaker))

    def _link(self, telemetry: StrategyTelemetry) -> RecoveryStep:
        return RecoveryStep(self, telemetry, Isolation(None, any_breaker))

    execute = verb(
        Pattern.run,
        "Run ``await fn(*args, **kwargs)`` and recover its errors by the rules.",
        returns="What ``fn`` returned (or a recovery's answer).",
        raises=(
            "RecoveryEscalatedError: An ESCALATE rule covered the error.",
            "Exception: The error, when no rule covers it or recovery failed.",
        ),
    )

    execute_sync = verb(
        Pattern.run_sync,
        "Run ``fn(*args, **kwargs)`` in this thread and recover its errors, as :meth:`execute` does.",
        more=(
            "Re-runs, their delays and the rules' hooks run in this thread too (a hook or fallback must be a"
            " plain function here)."
        ),
        returns="As :meth:`execute`.",
        raises=("Exception: As :meth:`execute`.",),
    )

    async def recover_from_error(
        self, error: BaseException, context: RecoveryContext | Mapping[str, Any] | None = None
    ) -> object:
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
        try:
            step, ctx = self._caught(error, context, sync=False)
        finally:
            del error  # raised again through this frame when not recovered: not bound here (a cycle)
        try:
            return await step.execute(ctx)
        except WrongDriver as signal:  # a sync operation given to the async API
            raise signal.as_type_error() from None

    def recover_from_error_sync(
        self, error: BaseException, context: RecoveryContext | Mapping[str, Any] | None = None
    ) -> object:
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
        try:
            step, ctx = self._caught(error, context, sync=True)
        finally:
            del error  # raised again through this frame when not recovered: not bound here (a cycle)
        try:
            return step.execute_sync(ctx)
        except WrongDriver as signal:  # an async operation given to the sync API
            raise signal.as_type_error() from None

    def _caught(
        self, error: BaseException, context: RecoveryContext | Mapping[str, Any] | None, *, sync: bool
    ) -> tuple[CaughtErrorStep, ExecutionContext]:
        """Validate a ``recover_from_error`` call; return the step that recovers it and its execution.

        The execution's function raises ``error`` on its first call (the step observes it and
        finds its rule as for any failure) and runs the context's ``operation`` on re-runs.
        """
        if not isinstance(error, BaseException):
            raise fail("ErrorRecoverySystem", "error", "an exception", error, kind=TypeError)
        rc = as_context(context)
        if not isinstance(error, Exception):
            try:
                raise error
            finally:
                del error  # its traceback holds this frame: not bound here (a cycle)
        # a configured operation_name was checked (check_name); one taken from a function is cut
        named_after = rc.operation if rc.operation_name is None else None
        step = CaughtErrorStep(self, Isolation(rc.breaker, any_breaker), error, rc.operation, named_after)
        operation = rc.operation_name or (
            "unknown" if named_after is None else key_attribute(callable_name(named_after))
        )
        return step, ExecutionContext(step.replay, rc.args, rc.kwargs, operation, sync=sync)

    def _observe(
        self, error: Exception, operation: str, named_after: object | None, telemetry: StrategyTelemetry
    ) -> Rule | None:
        """Feed ``error`` to the pattern detector and return the rule that covers it, if any.

        Its fingerprint (:data:`~otel_resilience.patterns.recovery.detector.Fingerprint`) is the
        error's type (its name; one cut past the attribute limit ends in a digest of the whole,
        :func:`~otel_resilience.engine.events.error_type_key`, while telemetry reports the bounded
        name), ``operation`` and, when the operation is named after a function
        (``named_after``, :meth:`~otel_resilience.engine.facade.Link.named_after`), that function's
        module (``""`` when it has none; cut past the attribute limit with a digest, as the name
        is: :func:`~otel_resilience.engine.events.key_attribute`, so the table stays bounded):
        two modules' functions of one name (``users.fetch``, ``orders.fetch``) are two
        fingerprints, both reported as ``operation``, each with its module.

        The one rule lookup (see :meth:`register_recovery_rule`): the rule of the first class of
        the error's MRO that has one; else the first rule, in registration order, whose class
        the error is an instance of all the same (``isinstance``: an ABC it is registered with).

        A detected pattern is reported through ``telemetry``, the observing step's: so it is
        counted under the policy the call ran in (``resilience.policy``), as that step's
        recovery attempts are. Never asked about a rejection (the step lets it pass: the
        dependency was never called, see the module doc).
        """
        error_type = type_name(error)
        module = None if named_after is None else key_attribute(callable_module(named_after) or "")
        key = error_type_key(error)  # two types whose names are cut alike stay two
        with self._lock:
            detected = self._detector.record_locked((key, operation, module), self._clock.now())
            if detected:
                self._stats.patterns_detected += 1
        if detected and telemetry.enabled:
            config = self._config
            telemetry.report(
                Event.PATTERN_DETECTED,
                PatternDetected(
                    error_type, operation, config.pattern_threshold, config.pattern_window, module
                ),
            )
        rules = self._rules
        if rules:
            for cls in type(error).__mro__:
                try:
                    action = rules.get(cls)
                except TypeError:  # a class that cannot be hashed is no rule's key
                    continue
                if action is not None:
                    return cls, action
            # None in its MRO: the first rule, by registration, of a class it is an instance of
            # all the same (an ABC it is registered with), as isinstance says
            for cls, action in rules.items():
                if isinstance(error, cls):
                    return cls, action
        return None
