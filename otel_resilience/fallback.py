"""Fallback (graceful degradation): answer in place of a call that failed (SPEC §1.3).

::

    handler = FallbackHandler(
        FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"similarity": 0.0})
    )
    result = await handler.execute_with_fallback(analyze_content, data)

The strategies (:class:`FallbackStrategy`):

* ``DEFAULT_VALUE``: return ``default_value``.
* ``ALTERNATIVE_FUNCTION``: return ``fallback_function(error, *args, **kwargs)``: it receives the
  original error and the original arguments. If it raises, *its* error propagates (chained to
  the original through ``__context__``), as Polly and Resilience4j do: the alternative's error
  is the answer.
* ``CACHED_VALUE``: every success of the protected call is written to ``cache_service`` under
  ``cache_key``; on failure the last good value is read back. A miss re-raises the *original*
  error, unchanged.
* ``MULTIPLE_ATTEMPTS``: call each of ``fallback_functions`` in order as drop-in replacements
  (``fn(*args, **kwargs)``); the first that returns answers. If all fail, an
  ``ExceptionGroup`` holding the original error and then every fallback error, in order, is
  raised, so that no cause is lost.

Decisions:

* **What triggers a fallback.** ``handle_exceptions`` (exception types or a predicate; default
  ``(Exception,)``, which includes rejections and timeouts raised by inner patterns). Only
  ``Exception`` is ever caught: ``asyncio.CancelledError``, ``KeyboardInterrupt`` and
  ``SystemExit`` never trigger a fallback and are never swallowed, in the protected call or in a
  fallback function. Naming a non-``Exception`` type is rejected at configuration.
* **Fields the strategy does not use must stay unset.** ``FallbackConfig(strategy=DEFAULT_VALUE,
  cache_key="x")`` raises ``ValueError`` naming ``FallbackConfig.cache_key``: such a field
  would be silently ignored, and is almost always a mistake (a wrong strategy).
* **Cache misses.** :class:`CacheService` ``get`` signals a miss by returning :data:`MISSING`
  *or* ``None``: the common clients (``dict.get``, redis-py, aiocache, cachetools) return
  ``None`` on a miss, and serving that ``None`` as data would hide the failure. The price: a
  cached ``None`` reads as a miss.
* **The cache never fails a call.** A ``set`` that raises is logged (logger
  ``otel_resilience.fallback``) and counted in ``cache_errors``; the successful result is
  returned. A ``get`` that raises is logged, counted, and the original error is re-raised.
* **The cache never delays a success.** The write happens after the call, outside every
  deadline the call ran under (the fallback is the outermost pattern), so the caller is not made
  to wait for it: in the async driver an awaitable ``set`` runs as a task of its own and the
  result is returned at once. A stalled cache cannot turn a call bounded at 0.1 s into a 3 s
  one, and cannot pile up writes either: while one write is in flight, later successes only
  replace the value to write next, so at most one write runs per handler (per running event
  loop) and the last good value is the one written. A failed background write is logged and
  counted like any ``set`` error; one still running when its loop shuts down is cancelled.
  The cost: an async cache holds a success a moment after the call returned. A sync ``set``
  (a plain method) runs inline in both drivers, as any sync call does: give its client a
  timeout.
* **Sync and async.** The async driver accepts sync or async fallback functions and cache
  methods (an awaitable result is awaited). The sync driver cannot await: a coroutine function
  among them is detected when the handler is built and every sync call is refused at once with
  ``TypeError``, before the protected call runs; an awaitable that only shows up at call time
  is closed and reported as that function's failure (for a cache, as a cache error).
* **Outcome.** When a fallback answers, the execution's outcome is
  :attr:`~otel_resilience.engine.events.Outcome.FALLBACK`, and ``fallback_used`` is reported
  with ``result="success"``; when it could not answer, with ``result="failure"``.
* **Counting.** Counts are plain integers. The failure path and the sync driver update them
  under the handler's lock; the async driver counts an execution without a lock (one event loop
  runs on one thread), as the engine's pipeline does.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ClassVar, Final, ParamSpec, Protocol, TypeVar, cast, runtime_checkable

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import (
    Event,
    FallbackUsed,
    Outcome,
    StrategyTelemetry,
    TelemetrySource,
    error_type_name,
)
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder, protect_with, standalone
from otel_resilience.engine.strategy import Strategy
from otel_resilience.engine.validation import check_exception_types, check_name, fail

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = [
    "DEFAULT_HANDLE_EXCEPTIONS",
    "MISSING",
    "CacheService",
    "FallbackConfig",
    "FallbackHandler",
    "FallbackStrategy",
]

P = ParamSpec("P")
R = TypeVar("R")

_LOG: Final = logging.getLogger(__name__)
_KIND: Final = "fallback"
_OWNER: Final = "FallbackConfig"

DEFAULT_HANDLE_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (Exception,)
"""Default ``handle_exceptions``: every ``Exception`` (never cancellation)."""
DEFAULT_NAME: Final = "fallback"
"""Default :class:`FallbackHandler` name."""


class FallbackStrategy(enum.Enum):
    """How a :class:`FallbackHandler` answers in place of a failed call."""

    DEFAULT_VALUE = "default_value"
    """Return ``FallbackConfig.default_value``."""
    ALTERNATIVE_FUNCTION = "alternative_function"
    """Return ``fallback_function(error, *args, **kwargs)``."""
    CACHED_VALUE = "cached_value"
    """Return the last good result, read from ``cache_service`` under ``cache_key``."""
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

    def get(self, key: str) -> Any:
        """Return the value stored under ``key``, or :data:`MISSING` / ``None`` for a miss."""
        ...

    def set(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` (the result, or what it awaits to, is ignored)."""
        ...


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """Settings of a :class:`FallbackHandler`.

    Only the fields of the chosen strategy may be set; the others must keep their defaults.

    Raises:
        ValueError: If a value breaks a rule, or a field the strategy does not use is set.
        TypeError: If a field has the wrong type (e.g. a non-callable fallback function).
    """

    strategy: FallbackStrategy
    """How to answer. Required."""
    default_value: Any = None
    """``DEFAULT_VALUE`` only: the value returned. The default is ``None``."""
    fallback_function: Callable[..., Any] | None = None
    """``ALTERNATIVE_FUNCTION`` only (required there): called as
    ``fallback_function(error, *args, **kwargs)``; sync or async. The default is ``None``."""
    fallback_functions: Sequence[Callable[..., Any]] = ()
    """``MULTIPLE_ATTEMPTS`` only (required there, non-empty): called in order as
    ``fn(*args, **kwargs)``; sync or async. Normalised to a tuple. The default is ``()``."""
    cache_key: str | None = None
    """``CACHED_VALUE`` only (required there): the non-empty key successes are written under.
    The default is ``None``."""
    cache_service: CacheService | None = None
    """``CACHED_VALUE`` only (required there): a :class:`CacheService`. The default is ``None``."""
    handle_exceptions: type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool] = (
        DEFAULT_HANDLE_EXCEPTIONS
    )
    """Which errors trigger the fallback: ``Exception`` subclasses (one or a tuple), or a
    predicate ``(error) -> bool``. The default is ``(Exception,)``."""

    def __post_init__(self) -> None:
        strategy = self.strategy
        if not isinstance(strategy, FallbackStrategy):
            raise fail(_OWNER, "strategy", "a FallbackStrategy", strategy, kind=TypeError)
        functions = self.fallback_functions
        if not isinstance(functions, (list, tuple)):
            rule = "a list or tuple of callables"
            raise fail(_OWNER, "fallback_functions", rule, functions, kind=TypeError)
        object.__setattr__(self, "fallback_functions", tuple(functions))
        object.__setattr__(self, "handle_exceptions", _check_handle_exceptions(self.handle_exceptions))
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
        elif strategy is FallbackStrategy.CACHED_VALUE:
            self._check_cache()
        elif strategy is FallbackStrategy.MULTIPLE_ATTEMPTS:
            if not functions:
                raise fail(_OWNER, "fallback_functions", "non-empty (MULTIPLE_ATTEMPTS needs it)", functions)
            for function in functions:
                if not callable(function):
                    raise fail(_OWNER, "fallback_functions", "callables only", functions, kind=TypeError)

    def _check_unused(self, strategy: FallbackStrategy) -> None:
        """Reject a field that ``strategy`` would silently ignore."""
        unused: tuple[tuple[str, FallbackStrategy, object], ...] = (
            ("default_value", FallbackStrategy.DEFAULT_VALUE, self.default_value),
            ("fallback_function", FallbackStrategy.ALTERNATIVE_FUNCTION, self.fallback_function),
            ("fallback_functions", FallbackStrategy.MULTIPLE_ATTEMPTS, self.fallback_functions or None),
            ("cache_key", FallbackStrategy.CACHED_VALUE, self.cache_key),
            ("cache_service", FallbackStrategy.CACHED_VALUE, self.cache_service),
        )
        for field, owner_strategy, value in unused:
            if value is not None and strategy is not owner_strategy:
                rule = f"unset unless strategy is {owner_strategy.name} (strategy is {strategy.name})"
                raise fail(_OWNER, field, rule, value)

    def _check_cache(self) -> None:
        """Validate ``cache_key`` and ``cache_service`` for ``CACHED_VALUE``."""
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


def _check_handle_exceptions(
    value: object,
) -> tuple[type[Exception], ...] | Callable[[Exception], bool]:
    """Normalise ``handle_exceptions``: ``Exception`` subclasses (non-empty) or a predicate."""
    selector = check_exception_types(_OWNER, "handle_exceptions", value)
    if isinstance(selector, tuple):
        if not selector:
            raise fail(_OWNER, "handle_exceptions", "non-empty (or nothing would trigger it)", value)
        for item in selector:
            if not issubclass(item, Exception):
                rule = "Exception subclasses (cancellation never triggers a fallback)"
                raise fail(_OWNER, "handle_exceptions", rule, value)
        return cast("tuple[type[Exception], ...]", selector)
    return cast("Callable[[Exception], bool]", selector)


def _type_name(error: BaseException) -> str:
    """Return the bounded type name of ``error``."""
    return error_type_name(error) or type(error).__name__


def _first_async_part(config: FallbackConfig) -> str | None:
    """Name the first coroutine function the sync driver would have to await, if any."""
    parts: list[tuple[str, object]] = [("fallback_function", config.fallback_function)]
    parts.extend((f"fallback_functions[{i}]", fn) for i, fn in enumerate(config.fallback_functions))
    service = config.cache_service
    if service is not None:
        parts.extend((("cache_service.get", service.get), ("cache_service.set", service.set)))
    for label, part in parts:
        if part is not None and inspect.iscoroutinefunction(part):
            return label
    return None


def _not_awaitable(what: str, value: Any) -> Any:
    """Return ``value``; if a sync call returned an awaitable, close it and raise ``TypeError``."""
    if inspect.isawaitable(value):
        if type(value) is CoroutineType:
            value.close()
        msg = f"{what} returned an awaitable, which the sync driver cannot await"
        raise TypeError(msg)
    return value


class _FallbackCore:
    """The shared state of one handler: settings, the handling decision and counts (sans-I/O)."""

    __slots__ = (
        "_executions",
        "cache_errors",
        "cache_hits",
        "cache_key",
        "cache_misses",
        "cache_service",
        "caches",
        "config",
        "default_value",
        "fallback_failures",
        "fallback_function",
        "fallback_functions",
        "fallback_successes",
        "fallbacks_used",
        "lock",
        "name",
        "next_write",
        "predicate",
        "strategy",
        "strategy_value",
        "sync_blocker",
        "types",
        "writes",
        "writing",
    )

    def __init__(self, name: str, config: FallbackConfig) -> None:
        self.name = name
        self.config = config
        self.strategy = config.strategy
        self.strategy_value = config.strategy.value
        self.default_value = config.default_value
        self.fallback_function = config.fallback_function
        self.fallback_functions = tuple(config.fallback_functions)
        self.cache_key = config.cache_key or ""
        self.cache_service = config.cache_service
        self.caches = config.strategy is FallbackStrategy.CACHED_VALUE
        handle = config.handle_exceptions
        self.types: tuple[type[Exception], ...] | None = handle if isinstance(handle, tuple) else None
        self.predicate: Callable[[Exception], bool] | None = (
            None if isinstance(handle, tuple) else cast("Callable[[Exception], bool]", handle)
        )
        self.sync_blocker = _first_async_part(config)
        self.lock = threading.Lock()
        self._executions = Counter()  # bumped on every call by both drivers, no lock
        self.fallbacks_used = 0
        self.fallback_successes = 0
        self.fallback_failures = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.cache_errors = 0
        self.writing: asyncio.Future[Any] | None = None
        """The cache write in flight (async driver), whose end starts the next one."""
        self.next_write: object = MISSING
        """The newest good value waiting for :attr:`writing` to end (:data:`MISSING`: none)."""
        self.writes: set[asyncio.Future[Any]] = set()
        """Every write task still running (kept alive until it ends)."""

    def handles(self, error: Exception) -> bool:
        """Whether ``error`` triggers the fallback."""
        types = self.types
        if types is not None:
            return isinstance(error, types)
        predicate = cast("Callable[[Exception], bool]", self.predicate)
        return bool(predicate(error))

    def answered(self, ctx: ExecutionContext, telemetry: StrategyTelemetry, error: Exception) -> None:
        """Count and report a fallback that answered in place of the call."""
        with self.lock:
            self.fallbacks_used += 1
            self.fallback_successes += 1
        ctx.outcome = Outcome.FALLBACK
        if telemetry.enabled:
            args = FallbackUsed(self.strategy_value, "success", _type_name(error))
            telemetry.report(Event.FALLBACK_USED, args)

    def failed(self, telemetry: StrategyTelemetry, error: Exception) -> None:
        """Count and report a fallback that could not answer."""
        with self.lock:
            self.fallbacks_used += 1
            self.fallback_failures += 1
        if telemetry.enabled:
            args = FallbackUsed(self.strategy_value, "failure", _type_name(error))
            telemetry.report(Event.FALLBACK_USED, args)

    def cache_read(self, value: object) -> object:
        """Count a cache read; return the value, or :data:`MISSING` for a miss."""
        hit = value is not None and value is not MISSING
        with self.lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1
        return value if hit else MISSING

    def cache_failed(self, operation: str, error: BaseException | None = None) -> None:
        """Count and log a cache error: ``error``, or the one being handled when it is ``None``."""
        with self.lock:
            self.cache_errors += 1
        _LOG.warning(
            "fallback %r: cache_service.%s(%r) failed",
            self.name,
            operation,
            self.cache_key,
            exc_info=True if error is None else error,
        )

    def sync_refused(self) -> TypeError:
        """Build the error for a sync call when a fallback part is a coroutine function."""
        return TypeError(
            f"fallback {self.name!r}: {self.sync_blocker} is a coroutine function, which the sync "
            "driver cannot await; use execute_with_fallback (async) or a sync function"
        )

    def group(self, ctx: ExecutionContext, errors: list[Exception]) -> ExceptionGroup[Exception]:
        """Build the group raised when the call and every ``MULTIPLE_ATTEMPTS`` function failed."""
        message = f"{ctx.operation!r} failed and all {len(errors) - 1} fallback functions failed"
        return ExceptionGroup(message, errors)

    def stats(self) -> dict[str, int]:
        """Return a snapshot of the counts."""
        with self.lock:
            return {
                "executions": self._executions.value,
                "fallbacks_used": self.fallbacks_used,
                "fallback_successes": self.fallback_successes,
                "fallback_failures": self.fallback_failures,
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
                "cache_errors": self.cache_errors,
            }


class _FallbackStrategy(Strategy):
    """One pipeline link that answers in place of the rest of the chain when it fails."""

    __slots__ = ("_core", "_telemetry")

    kind: ClassVar[str] = _KIND

    def __init__(self, core: _FallbackCore, telemetry: StrategyTelemetry) -> None:
        super().__init__()
        self._core = core
        self._telemetry = telemetry

    @property
    def name(self) -> str:
        """The handler's name."""
        return self._core.name

    @property
    def config(self) -> FallbackConfig:
        """The handler's settings."""
        return self._core.config

    # -- async driver ----------------------------------------------------------------------

    async def execute(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain; answer with the fallback when it fails (async driver)."""
        core = self._core
        next(core._executions)
        try:
            result = await self.next.execute(ctx)
        except Exception as error:
            if not core.handles(error):
                raise
            return await self._fallback(ctx, error)
        if core.caches:
            self._store(result)
        return result

    async def _fallback(self, ctx: ExecutionContext, error: Exception) -> Any:
        """Answer for the failed call, or raise (async driver)."""
        core = self._core
        telemetry = self._telemetry
        strategy = core.strategy
        if strategy is FallbackStrategy.DEFAULT_VALUE:
            core.answered(ctx, telemetry, error)
            return core.default_value
        if strategy is FallbackStrategy.ALTERNATIVE_FUNCTION:
            function = cast("Callable[..., Any]", core.fallback_function)
            try:
                value = function(error, *ctx.args, **ctx.kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except Exception:
                core.failed(telemetry, error)
                raise
            core.answered(ctx, telemetry, error)
            return value
        if strategy is FallbackStrategy.CACHED_VALUE:
            cached = await self._load()
            if cached is MISSING:
                core.failed(telemetry, error)
                raise error
            core.answered(ctx, telemetry, error)
            return cached
        errors: list[Exception] = [error]
        for function in core.fallback_functions:
            try:
                value = function(*ctx.args, **ctx.kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as fallback_error:  # noqa: BLE001 - kept, then raised in the ExceptionGroup
                errors.append(fallback_error)
                continue
            core.answered(ctx, telemetry, error)
            return value
        core.failed(telemetry, error)
        raise core.group(ctx, errors) from None

    async def _load(self) -> object:
        """Read the cached value; :data:`MISSING` for a miss or a cache error (async driver)."""
        core = self._core
        service = cast("CacheService", core.cache_service)
        try:
            value = service.get(core.cache_key)
            if inspect.isawaitable(value):
                value = await value
        except Exception:  # noqa: BLE001 - logged and counted by cache_failed
            core.cache_failed("get")
            return MISSING
        return core.cache_read(value)

    def _store(self, result: object) -> None:
        """Write a good result to the cache without making the caller wait (async driver).

        While a write is in flight on a running loop, ``result`` only replaces the value that
        write's end will write next (see the module's "never delays a success").
        """
        core = self._core
        with core.lock:
            writing = core.writing
            if writing is not None and writing.get_loop().is_running():
                core.next_write = result
                return
        self._write(result)

    def _write(self, value: object) -> None:
        """Call ``set``; run an awaitable it returns as a task of its own, not awaited here."""
        core = self._core
        service = cast("CacheService", core.cache_service)
        try:
            pending = service.set(core.cache_key, value)
        except Exception:  # noqa: BLE001 - logged and counted by cache_failed
            core.cache_failed("set")
            return
        if pending is None or not inspect.isawaitable(pending):
            return
        task = asyncio.ensure_future(pending)
        with core.lock:
            core.writing = task
            core.writes.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Future[Any]) -> None:
        """Done callback of a write task: count its error, then write the newest waiting value."""
        core = self._core
        cancelled = task.cancelled()
        if not cancelled and (error := task.exception()) is not None:
            core.cache_failed("set", error)
        with core.lock:
            core.writes.discard(task)
            if core.writing is not task:
                return  # a write on a loop that had stopped: a newer writer took over
            core.writing = None
            value = core.next_write
            core.next_write = MISSING
        if value is not MISSING and not cancelled:
            self._write(value)

    # -- sync driver -----------------------------------------------------------------------

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain; answer with the fallback when it fails (sync driver)."""
        core = self._core
        if core.sync_blocker is not None:
            raise core.sync_refused()
        next(core._executions)
        try:
            result = self.next.execute_sync(ctx)
        except Exception as error:
            if not core.handles(error):
                raise
            return self._fallback_sync(ctx, error)
        if core.caches:
            self._store_sync(result)
        return result

    def _fallback_sync(self, ctx: ExecutionContext, error: Exception) -> Any:
        """Answer for the failed call, or raise (sync driver)."""
        core = self._core
        telemetry = self._telemetry
        strategy = core.strategy
        if strategy is FallbackStrategy.DEFAULT_VALUE:
            core.answered(ctx, telemetry, error)
            return core.default_value
        if strategy is FallbackStrategy.ALTERNATIVE_FUNCTION:
            function = cast("Callable[..., Any]", core.fallback_function)
            try:
                value = _not_awaitable("fallback_function", function(error, *ctx.args, **ctx.kwargs))
            except Exception:
                core.failed(telemetry, error)
                raise
            core.answered(ctx, telemetry, error)
            return value
        if strategy is FallbackStrategy.CACHED_VALUE:
            cached = self._load_sync()
            if cached is MISSING:
                core.failed(telemetry, error)
                raise error
            core.answered(ctx, telemetry, error)
            return cached
        errors: list[Exception] = [error]
        for index, function in enumerate(core.fallback_functions):
            try:
                value = _not_awaitable(f"fallback_functions[{index}]", function(*ctx.args, **ctx.kwargs))
            except Exception as fallback_error:  # noqa: BLE001 - kept, then raised in the ExceptionGroup
                errors.append(fallback_error)
                continue
            core.answered(ctx, telemetry, error)
            return value
        core.failed(telemetry, error)
        raise core.group(ctx, errors) from None

    def _load_sync(self) -> object:
        """Read the cached value; :data:`MISSING` for a miss or a cache error (sync driver)."""
        core = self._core
        service = cast("CacheService", core.cache_service)
        try:
            value = _not_awaitable("cache_service.get", service.get(core.cache_key))
        except Exception:  # noqa: BLE001 - logged and counted by cache_failed
            core.cache_failed("get")
            return MISSING
        return core.cache_read(value)

    def _store_sync(self, result: object) -> None:
        """Write a good result to the cache; a cache error never fails the call (sync driver)."""
        core = self._core
        service = cast("CacheService", core.cache_service)
        try:
            pending = service.set(core.cache_key, result)
            if pending is not None:
                _not_awaitable("cache_service.set", pending)
        except Exception:  # noqa: BLE001 - logged and counted by cache_failed
            core.cache_failed("set")


class FallbackHandler:
    """Answers in place of a failed call: a default, an alternative, a cached value (SPEC §1.3).

    Args:
        config: The settings (which strategy, and what it needs).
        name: The handler's name in telemetry and logs. Default ``"fallback"``.
        clock: The clock execution durations are measured on.

    Raises:
        TypeError: If ``config`` is not a :class:`FallbackConfig` or ``clock`` is not a clock.
        ValueError: If ``name`` is empty.
    """

    __slots__ = ("_clock", "_core", "_standalone", "_telemetry")

    kind: ClassVar[str] = _KIND

    def __init__(
        self, config: FallbackConfig, *, name: str = DEFAULT_NAME, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        owner = "FallbackHandler"
        if not isinstance(config, FallbackConfig):
            raise fail(owner, "config", "a FallbackConfig", config, kind=TypeError)
        name = check_name(owner, "name", name)
        if not isinstance(clock, Clock):
            raise fail(owner, "clock", "a Clock", clock, kind=TypeError)
        self._core = _FallbackCore(name, config)
        self._telemetry = StrategyTelemetry(TelemetrySource(_KIND, name))
        self._clock = clock
        self._standalone: Pipeline | None = None

    @property
    def _pipeline(self) -> Pipeline:
        """The instance's own one-link pipeline, built on first use."""
        pipeline = self._standalone
        return pipeline if pipeline is not None else standalone(self, "_standalone", self._build_pipeline)

    def _build_pipeline(self) -> Pipeline:
        name = self._core.name
        return (
            PipelineBuilder(name, clock=self._clock, source=TelemetrySource(_KIND, name))
            .add(self.as_strategy())
            .build()
        )

    @property
    def name(self) -> str:
        """The handler's name."""
        return self._core.name

    @property
    def config(self) -> FallbackConfig:
        """The handler's settings."""
        return self._core.config

    def as_strategy(self, pipeline: str | None = None) -> Strategy:
        """Return a new, unlinked pipeline link that shares this handler's settings and counts.

        Args:
            pipeline: The name of the pipeline (policy) the link runs in, for telemetry.

        Returns:
            A :class:`~otel_resilience.engine.strategy.Strategy` of kind ``"fallback"``.
        """
        if pipeline is None:
            telemetry = self._telemetry
        else:
            telemetry = StrategyTelemetry(TelemetrySource(_KIND, self._core.name, pipeline))
        return _FallbackStrategy(self._core, telemetry)

    async def execute_with_fallback(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Return ``await fn(*args, **kwargs)``, or the fallback's answer when it fails.

        Args:
            fn: A coroutine function (or any function returning an awaitable).
            *args: Positional arguments for ``fn`` (and for the fallback functions).
            **kwargs: Keyword arguments for ``fn`` (and for the fallback functions).

        Returns:
            ``fn``'s result, or the fallback's answer (whose type the caller vouches for).

        Raises:
            Exception: ``fn``'s error when it is not handled or a cache missed; a
                ``fallback_function``'s own error; an ``ExceptionGroup`` when every
                ``MULTIPLE_ATTEMPTS`` function failed.
            TypeError: If ``fn`` is not callable or does not return an awaitable.
            asyncio.CancelledError: Always propagated, never answered by a fallback.
        """
        if not callable(fn):
            raise fail("FallbackHandler.execute_with_fallback", "fn", "callable", fn, kind=TypeError)
        return await self._pipeline.execute(fn, *args, **kwargs)

    def execute_with_fallback_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Return ``fn(*args, **kwargs)``, or the fallback's answer when it fails (sync driver).

        Args:
            fn: A plain function.
            *args: Positional arguments for ``fn`` (and for the fallback functions).
            **kwargs: Keyword arguments for ``fn`` (and for the fallback functions).

        Returns:
            ``fn``'s result, or the fallback's answer.

        Raises:
            Exception: As :meth:`execute_with_fallback`.
            TypeError: If ``fn`` is not callable, or a fallback function or cache method is a
                coroutine function (refused before ``fn`` runs).
        """
        if not callable(fn):
            raise fail("FallbackHandler.execute_with_fallback_sync", "fn", "callable", fn, kind=TypeError)
        return self._pipeline.execute_sync(fn, *args, **kwargs)

    def protect(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so that every call falls back on failure.

        The async or sync driver is chosen once, here, from ``fn`` itself.

        Args:
            fn: A coroutine function or a plain function.

        Returns:
            A wrapper with ``fn``'s signature.

        Raises:
            TypeError: If ``fn`` is not callable or is an async generator function.
        """
        if not callable(fn):
            raise fail("FallbackHandler.protect", "fn", "callable", fn, kind=TypeError)
        return cast("Callable[P, R]", protect_with(self._pipeline, fn))

    def get_stats(self) -> dict[str, int]:
        """Return the counts.

        Returns:
            ``executions``; ``fallbacks_used`` (failures the fallback handled) =
            ``fallback_successes`` + ``fallback_failures``; ``cache_hits``, ``cache_misses``
            (reads on failure) and ``cache_errors`` (``get`` or ``set`` raised).
        """
        return self._core.stats()

    def __repr__(self) -> str:
        core = self._core
        return f"FallbackHandler(strategy={core.strategy.name}, name={core.name!r})"
