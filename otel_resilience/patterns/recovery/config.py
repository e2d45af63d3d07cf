"""Recovery's settings: the strategies, a rule's action, the system's config, a caught error's context.

Also which circuit breaker an ISOLATE rule forces open (:class:`Isolatable`, :class:`Isolation`).
The package re-exports the public names (see ``otel_resilience.patterns.recovery.__all__``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from otel_resilience.engine.events import error_type_name
from otel_resilience.engine.readonly import FrozenMapping
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.validation import (
    check_callable,
    check_called_with,
    check_duration,
    check_int,
    check_name,
    check_not_generator,
    describe,
    fail,
)

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
    """Force a circuit breaker open for at least ``isolate_duration``, then re-raise the error."""
    ESCALATE = "escalate"
    """Raise :class:`~otel_resilience.errors.RecoveryEscalatedError` from the error."""


RERUN: Final = frozenset({RecoveryStrategy.RETRY, RecoveryStrategy.RESTART})
"""The strategies that re-run the operation."""

_HOOK_NOT_A_GENERATOR: Final = (
    "a function that restarts when called, not a generator function (whose iterator, made before "
    "its body runs, would restart nothing)"
)
_ANSWER_NOT_A_GENERATOR: Final = (
    "a function that returns its answer, not a generator function (whose iterator, made before "
    "its body runs, would answer every failure)"
)


@dataclass(frozen=True, slots=True)
class RecoveryAction:
    """What to do with an error a rule covers. Validated at construction.

    Fields that only some strategies use must stay at their defaults for the other strategies,
    so that a misplaced option is an error, not a silent no-op: ``max_attempts`` and ``delay``
    (RETRY, RESTART), ``restart_hook`` (RESTART), ``fallback_value`` and ``fallback_function``
    (FALLBACK), ``isolate_breaker`` and ``isolate_duration`` (ISOLATE). A number equal to its
    default (``delay=timedelta(seconds=1)``) is the default, accepted by every strategy.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field is out of range, or contradicts ``strategy``.
    """

    strategy: RecoveryStrategy
    """The recovery strategy (required)."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """RETRY/RESTART: re-runs after the triggering failure, >= 1: the most this rule makes in one
    execution, whichever rules acted on the re-runs' errors in between. Default 3."""
    delay: float = DEFAULT_DELAY
    """RETRY/RESTART: seconds to wait before each re-run, >= 0 (a ``timedelta`` is accepted).
    Default 1.0 s. A re-run whose delay would end past the current deadline is not started."""
    restart_hook: Callable[[], object] | None = None
    """RESTART (required there): called with no arguments before each re-run (one that needs an
    argument, or a generator function, whose body would never run, is refused); may be async."""
    fallback_value: object = None
    """FALLBACK: the value returned in place of the failed call. Default ``None``.

    The very object, at every fallback (never a copy, as ``FallbackConfig.default_value``). A
    caller that changes the answer it got (appends to a list, sets a key of a dict) changes every
    later answer: give an immutable value (a tuple, a ``MappingProxyType``, a frozen dataclass),
    or a ``fallback_function`` that builds a fresh one."""
    fallback_function: Callable[..., object] | None = None
    """FALLBACK: called with the operation's arguments instead; may be async (a generator function,
    whose iterator would answer every failure, is refused). Default ``None``."""
    isolate_breaker: str | None = None
    """ISOLATE: name of the circuit breaker to force open. Default ``None``: the breaker of the
    :class:`RecoveryContext` (or of :meth:`ErrorRecoverySystem.as_strategy`: in a manager, the
    policy's own breaker) is used. The name of that breaker names it (in a keyed policy, the
    breaker of the key the failing call ran under). Any other name is looked up, in a manager
    among that manager's breakers; elsewhere among every live breaker (the most recently created
    of that name)."""
    isolate_duration: float = DEFAULT_ISOLATE_DURATION
    """ISOLATE: seconds the breaker stays forced open at least, > 0 (a ``timedelta`` is accepted).
    An opening that lasts longer already (a trip, an operator's opening until reset) is kept, never
    shortened; a breaker an operator switched to ``disable()`` or ``metrics_only()`` is left so
    (a failed recovery attempt: nothing was isolated). Default 30.0 s."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            strategy: RecoveryStrategy,
            max_attempts: int = ...,
            delay: float | timedelta = ...,
            restart_hook: Callable[[], object] | None = ...,
            fallback_value: object = ...,
            fallback_function: Callable[..., object] | None = ...,
            isolate_breaker: str | None = ...,
            isolate_duration: float | timedelta = ...,
        ) -> None: ...

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
        check_called_with(owner, "restart_hook", self.restart_hook)  # called with no argument
        check_not_generator(owner, "restart_hook", self.restart_hook, _HOOK_NOT_A_GENERATOR)
        check_callable(owner, "fallback_function", self.fallback_function, optional=True)
        check_not_generator(owner, "fallback_function", self.fallback_function, _ANSWER_NOT_A_GENERATOR)
        if self.isolate_breaker is not None:
            check_name(owner, "isolate_breaker", self.isolate_breaker)
        if strategy is RecoveryStrategy.RESTART and self.restart_hook is None:
            raise fail(owner, "restart_hook", "a callable when strategy is RESTART", None)
        for field_name, default, uses in _ONLY:
            value = getattr(self, field_name)
            if strategy not in uses and (value is not None if default is None else value != default):
                kept = "None" if default is None else f"left at {default!r}"
                named = " or ".join(item.name for item in RecoveryStrategy if item in uses)
                raise fail(owner, field_name, f"{kept} unless strategy is {named}", value)
        if self.fallback_value is not None and self.fallback_function is not None:
            raise fail(owner, "fallback_function", "None when fallback_value is set", self.fallback_function)


_ONLY: Final[tuple[tuple[str, object, frozenset[RecoveryStrategy]], ...]] = (
    ("max_attempts", DEFAULT_MAX_ATTEMPTS, RERUN),
    ("delay", DEFAULT_DELAY, RERUN),
    ("restart_hook", None, frozenset({RecoveryStrategy.RESTART})),
    ("fallback_value", None, frozenset({RecoveryStrategy.FALLBACK})),
    ("fallback_function", None, frozenset({RecoveryStrategy.FALLBACK})),
    ("isolate_breaker", None, frozenset({RecoveryStrategy.ISOLATE})),
    ("isolate_duration", DEFAULT_ISOLATE_DURATION, frozenset({RecoveryStrategy.ISOLATE})),
)
"""Each :class:`RecoveryAction` field that some strategies use, its default, and those strategies:
the one table of what applies to which strategy (another strategy must leave it at its default)."""


@dataclass(frozen=True, slots=True)
class RecoveryConfig:
    """Settings of an :class:`ErrorRecoverySystem` itself (its rules are registered separately).

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field is out of range.
    """

    pattern_threshold: int = DEFAULT_PATTERN_THRESHOLD
    """Occurrences of one fingerprint (error type + operation, and the module of a function the
    operation is named after) that make a pattern, >= 2. Default 5."""
    pattern_window: float = DEFAULT_PATTERN_WINDOW
    """Seconds within which they must occur, > 0 (a ``timedelta`` is accepted). Default 60.0 s.
    A fingerprint is reported at most once per window."""
    max_fingerprints: int = DEFAULT_MAX_FINGERPRINTS
    """Fingerprints tracked at most, >= 1; the least recently seen is forgotten first.
    Default 1000."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(
            self,
            pattern_threshold: int = ...,
            pattern_window: float | timedelta = ...,
            max_fingerprints: int = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        owner = "RecoveryConfig"
        check_int(owner, "pattern_threshold", self.pattern_threshold, minimum=2)
        object.__setattr__(
            self, "pattern_window", check_duration(owner, "pattern_window", self.pattern_window)
        )
        check_int(owner, "max_fingerprints", self.max_fingerprints, minimum=1)


_EMPTY_KWARGS: Final[Mapping[str, Any]] = FrozenMapping({})


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
    """Its keyword arguments, by name (also passed to a ``fallback_function``). Default empty."""
    operation_name: str | None = None
    """Bounded name of the operation, for fingerprints and telemetry. Default ``None``: the
    name of ``operation`` (its ``__qualname__``, ``partial(fetch)`` for a partial, a callable
    object's class: :func:`~otel_resilience.engine.naming.callable_name`; longer than a
    telemetry attribute, cut with a digest: :func:`~otel_resilience.engine.events.key_attribute`),
    whose fingerprint adds its module (two modules' ``fetch`` are two fingerprints, both named
    ``fetch``), or ``"unknown"`` without one."""
    breaker: str | None = None
    """Circuit breaker an ISOLATE rule without ``isolate_breaker`` forces open. Default ``None``."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # list for the tuple of arguments), while the fields hold the normalised values.
        def __init__(
            self,
            operation: Callable[..., Any] | None = ...,
            args: tuple[Any, ...] | list[Any] = ...,
            kwargs: Mapping[str, Any] = ...,
            operation_name: str | None = ...,
            breaker: str | None = ...,
        ) -> None: ...

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
        for key in self.kwargs:
            if not isinstance(key, str):  # the call would fail, as an error of the operation
                raise fail(
                    owner,
                    "kwargs",
                    f"a mapping of keyword names (str keys; {describe(key)} is not one)",
                    self.kwargs,
                    kind=TypeError,
                )
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

    def force_open(self, duration: float | None = None, /, *, reason: Literal["isolated"] = ...) -> object:
        """Open the breaker for ``duration`` seconds; ``reason="isolated"`` is what recovery passes.

        ``False`` returned says it left the breaker not open (a
        :class:`~otel_resilience.patterns.circuit_breaker.CircuitBreaker` an operator switched to
        ``disable()`` or ``metrics_only()``): the isolation failed. Anything else is an opening.
        """
        ...


BreakerResolver = Callable[[str], Isolatable | None]
"""Finds the circuit breaker an ISOLATE rule names (``None`` when there is none of that name)."""


def any_breaker(name: str) -> Isolatable | None:
    """The default :data:`BreakerResolver`: the most recently created live breaker of that name."""
    found = BREAKERS.get(name)
    return found if isinstance(found, Isolatable) else None


Rule = tuple[type, RecoveryAction]


class Isolation:
    """Which breaker an ISOLATE rule forces open: the call's own, or one it names, found by ``resolve``."""

    __slots__ = ("breaker", "resolve")

    def __init__(self, breaker: str | Isolatable | None, resolve: BreakerResolver) -> None:
        self.breaker = breaker
        self.resolve = resolve

    def find(self, name: str | None) -> Isolatable | None:
        """Return the breaker named ``name`` (a rule's ``isolate_breaker``), else the call's own.

        A ``name`` that is the call's own breaker's names that breaker: the breaker of the key
        the call ran under, in a keyed policy (whose keys' breakers share the name, and which no
        lookup by name finds), and otherwise the one a lookup would find too.
        """
        breaker = self.breaker
        if name is None:
            if breaker is None or not isinstance(breaker, str):
                return breaker
            name = breaker
        elif breaker is not None and not isinstance(breaker, str) and breaker.name == name:
            return breaker
        return self.resolve(name)


def type_name(error: BaseException) -> str:
    """Return the bounded name of an error's type (fingerprints, telemetry), or ``"unknown"``."""
    return error_type_name(error) or "unknown"


def as_context(context: RecoveryContext | Mapping[str, Any] | None) -> RecoveryContext:
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
