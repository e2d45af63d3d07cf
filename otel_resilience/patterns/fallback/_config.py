"""The settings of a fallback: :class:`FallbackStrategy`, :class:`FallbackConfig`, the cache protocol."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from otel_resilience.engine.validation import (
    ExceptionTypeCollection,
    check_called_first,
    check_duration,
    check_error_selector,
    check_not_generator,
    check_predicate,
    fail,
)

__all__ = [
    "DEFAULT_HANDLE_EXCEPTIONS",
    "MISSING",
    "CacheService",
    "FallbackConfig",
    "FallbackStrategy",
]

_OWNER: Final = "FallbackConfig"

_NOT_A_GENERATOR: Final = (
    "a function that returns its answer, not a generator function (whose iterator, made before its "
    "body runs, would answer every failure)"
)

DEFAULT_HANDLE_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (Exception,)
"""Default ``handle_exceptions``: every ``Exception`` (never cancellation)."""


class FallbackStrategy(enum.Enum):
    """How a :class:`FallbackHandler` answers in place of a failed call."""

    DEFAULT_VALUE = "default_value"
    """Return ``FallbackConfig.default_value``."""
    ALTERNATIVE_FUNCTION = "alternative_function"
    """Return ``fallback_function(error, *args, **kwargs)``."""
    CACHED_VALUE = "cached_value"
    """Return the last good result of a call with the same arguments, read from ``cache_service``
    under a key made of ``cache_key`` and those arguments."""
    MULTIPLE_ATTEMPTS = "multiple_attempts"
    """Try each of ``fallback_functions(*args, **kwargs)`` in order."""


class _Missing(enum.Enum):
    """The type of :data:`MISSING` (an enum member, so that type checkers narrow on ``is``)."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""What a :class:`CacheService` ``get`` may return for a miss (``None`` is a miss too)."""


@runtime_checkable
class CacheService(Protocol):
    """The cache used by ``CACHED_VALUE``: anything with ``get`` and ``set``.

    Each method may be sync or async. In the async driver an awaitable ``get`` is awaited, and
    an awaitable ``set`` runs as a task of its own, so that the caller never waits for a write.
    A miss is signalled by returning :data:`MISSING` or ``None``.
    """

    def get(self, key: str, /) -> Any:
        """Return the value stored under ``key``, or :data:`MISSING` / ``None`` for a miss."""
        ...

    def set(self, key: str, value: Any, /) -> Any:
        """Store ``value`` under ``key`` (the result, or what it awaits to, is ignored)."""
        ...


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """Settings of a :class:`FallbackHandler`.

    Only the fields of the chosen strategy may be set; the others must keep their defaults.

    Raises:
        ValueError: If a value breaks a rule, or a field the strategy does not use is set.
        TypeError: If a field has the wrong type (e.g. a non-callable fallback function), or a
            predicate cannot be called with the one argument it is given
            (``handle_exceptions(error)``, ``handle_result(result)``).
    """

    strategy: FallbackStrategy
    """How to answer. Required."""
    default_value: Any = None
    """``DEFAULT_VALUE`` only: the value returned. The default is ``None``.

    The very object, at every fallback (never a copy: a copy per answer would cost each
    fallback and change what ``is`` says). A caller that changes the answer it got (appends to a
    list, sets a key of a dict) changes every later answer: give an immutable value (a tuple, a
    ``MappingProxyType``, a frozen dataclass), or use ``ALTERNATIVE_FUNCTION`` with a function
    that builds a fresh one."""
    fallback_function: Callable[..., Any] | None = None
    """``ALTERNATIVE_FUNCTION`` only (required there): called as
    ``fallback_function(error, *args, **kwargs)``; sync or async. One with no room for the error
    first (``lambda: value``), or a generator function, is refused with ``TypeError``. The default
    is ``None``."""
    fallback_functions: tuple[Callable[..., Any], ...] = ()
    """``MULTIPLE_ATTEMPTS`` only (required there, non-empty): called in order as
    ``fn(*args, **kwargs)``; sync or async (a generator function is refused with ``TypeError``).
    Normalised to a tuple. The default is ``()``."""
    cache_key: str | None = None
    """``CACHED_VALUE`` only (required there): the non-empty key successes are written under,
    one value for every call (the last good one: never a result the policy judged a failure,
    such as one a retry's ``retry_on_result`` gave up on or a breaker's ``record_result`` counted
    a failure). With ``cache_by_arguments``, a call with plain
    arguments (``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None``, tuples of them; or
    none) under
    ``"<cache_key>:<digest of the arguments>"``, and a failed call is answered only with the
    value of a call with the same arguments (a call with any other argument is neither written
    nor answered from the cache). The value is not copied: an in-process service (a dict) answers
    every failed call with the very object written, so a caller that changes it (the caller whose
    success was written too) changes every later answer; cache immutable values, or use a
    service that stores a copy. The default is ``None``."""
    cache_service: CacheService | None = None
    """``CACHED_VALUE`` only (required there): a :class:`CacheService`. The default is ``None``."""
    handle_exceptions: type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] = (
        DEFAULT_HANDLE_EXCEPTIONS
    )
    """Which errors trigger the fallback: ``Exception`` subclasses (one or a tuple), or a
    predicate ``(error) -> bool`` (sync: a coroutine function is refused). The default is
    ``(Exception,)``. Never asked about an enclosing scope's deadline, reached: that passes to
    its scope unanswered."""
    handle_result: Callable[[Any], bool] | None = None
    """A predicate on what the call returned: ``True`` makes the fallback answer in place of the
    value, as for a handled error, with an
    :class:`~otel_resilience.errors.UnacceptedResultError` carrying it (what
    ``fallback_function`` receives). Sync (a coroutine function is refused with ``TypeError``);
    what it raises reaches the caller. ``None`` (the
    default): every returned value is kept. A value not accepted is never cached; when nothing
    answers in its place (``CACHED_VALUE`` with no value), it is returned, and the execution
    counts as a failure."""
    cache_max_age: float | None = None
    """``CACHED_VALUE`` only: how long (seconds, or a ``timedelta``; > 0) after the call returned
    it a cached value may still answer; older is a miss. With it, the handler answers only from
    the keys it wrote, and remembers the 256 it used last. Normalised to a ``float``. ``None``
    (the default): no age limit, and any value the service holds under a call's key answers."""
    cache_by_arguments: bool = False
    """``CACHED_VALUE`` only: ``True`` keys each value by the call's arguments (see
    ``cache_key``): set it whenever the answer depends on them (``get_user(user_id)``), or a
    failed call is answered with another call's value. ``False`` (the default, the last good
    value under ``cache_key``) keeps one value for every call, whatever its arguments: for a call
    whose answer does not depend on them (a feed, a request number that only counts)."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(  # noqa: PLR0917 - positional, as the dataclass's own __init__
            self,
            strategy: FallbackStrategy,
            default_value: Any = ...,
            fallback_function: Callable[..., Any] | None = ...,
            fallback_functions: tuple[Callable[..., Any], ...] | list[Callable[..., Any]] = ...,
            cache_key: str | None = ...,
            cache_service: CacheService | None = ...,
            handle_exceptions: type[Exception]
            | tuple[type[Exception], ...]
            | ExceptionTypeCollection
            | Callable[[Exception], bool] = ...,
            handle_result: Callable[[Any], bool] | None = ...,
            cache_max_age: float | timedelta | None = ...,
            cache_by_arguments: bool = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        strategy = self.strategy
        if not isinstance(strategy, FallbackStrategy):
            raise fail(_OWNER, "strategy", "a FallbackStrategy", strategy, kind=TypeError)
        functions: object = self.fallback_functions
        if not isinstance(functions, (list, tuple)):
            rule = "a list or tuple of callables"
            raise fail(_OWNER, "fallback_functions", rule, functions, kind=TypeError)
        object.__setattr__(self, "fallback_functions", tuple(functions))
        object.__setattr__(self, "handle_exceptions", _check_handle_exceptions(self.handle_exceptions))
        check_predicate(_OWNER, "handle_result", self.handle_result, "result", optional=True)
        self._check_unused(strategy)
        if strategy is FallbackStrategy.ALTERNATIVE_FUNCTION:
            if not callable(self.fallback_function):
                raise fail(
                    _OWNER,
                    "fallback_function",
                    "callable (ALTERNATIVE_FUNCTION needs it)",
                    self.fallback_function,
                    kind=TypeError,
                )
            check_called_first(_OWNER, "fallback_function", self.fallback_function, "error")
            check_not_generator(_OWNER, "fallback_function", self.fallback_function, _NOT_A_GENERATOR)
        elif strategy is FallbackStrategy.CACHED_VALUE:
            self._check_cache()
        elif strategy is FallbackStrategy.MULTIPLE_ATTEMPTS:
            if not functions:
                raise fail(_OWNER, "fallback_functions", "non-empty (MULTIPLE_ATTEMPTS needs it)", functions)
            for index, function in enumerate(functions):
                if not callable(function):
                    raise fail(_OWNER, "fallback_functions", "callables only", functions, kind=TypeError)
                check_not_generator(_OWNER, f"fallback_functions[{index}]", function, _NOT_A_GENERATOR)

    def _check_unused(self, strategy: FallbackStrategy) -> None:
        """Reject a field that ``strategy`` would silently ignore."""
        if not isinstance(self.cache_by_arguments, bool):
            raise fail(_OWNER, "cache_by_arguments", "a bool", self.cache_by_arguments, kind=TypeError)
        unused: tuple[tuple[str, FallbackStrategy, object], ...] = (
            ("default_value", FallbackStrategy.DEFAULT_VALUE, self.default_value),
            ("fallback_function", FallbackStrategy.ALTERNATIVE_FUNCTION, self.fallback_function),
            ("fallback_functions", FallbackStrategy.MULTIPLE_ATTEMPTS, self.fallback_functions or None),
            ("cache_key", FallbackStrategy.CACHED_VALUE, self.cache_key),
            ("cache_service", FallbackStrategy.CACHED_VALUE, self.cache_service),
            ("cache_max_age", FallbackStrategy.CACHED_VALUE, self.cache_max_age),
            (
                "cache_by_arguments",
                FallbackStrategy.CACHED_VALUE,
                True if self.cache_by_arguments is True else None,
            ),
        )
        for field, owner_strategy, value in unused:
            if value is not None and strategy is not owner_strategy:
                rule = f"unset unless strategy is {owner_strategy.name} (strategy is {strategy.name})"
                raise fail(_OWNER, field, rule, value)

    def _check_cache(self) -> None:
        """Validate ``cache_key``, ``cache_service`` and ``cache_max_age`` for ``CACHED_VALUE``."""
        key = self.cache_key
        if not isinstance(key, str):
            raise fail(_OWNER, "cache_key", "a str (CACHED_VALUE needs it)", key, kind=TypeError)
        if not key.strip():
            raise fail(_OWNER, "cache_key", "a non-empty str", key)
        service = self.cache_service
        if not (callable(getattr(service, "get", None)) and callable(getattr(service, "set", None))):
            raise fail(
                _OWNER,
                "cache_service",
                "an object with callable get and set (CACHED_VALUE needs it)",
                service,
                kind=TypeError,
            )
        if self.cache_max_age is not None:
            max_age = check_duration(_OWNER, "cache_max_age", self.cache_max_age)
            object.__setattr__(self, "cache_max_age", max_age)


def _check_handle_exceptions(
    value: object,
) -> tuple[type[Exception], ...] | Callable[[Exception], bool]:
    """Normalise ``handle_exceptions``: ``Exception`` subclasses (non-empty) or a predicate."""
    never = "cancellation never triggers a fallback"
    selector = check_error_selector(_OWNER, "handle_exceptions", value, never)
    if selector == ():
        raise fail(_OWNER, "handle_exceptions", "non-empty (or nothing would trigger it)", value)
    return selector
