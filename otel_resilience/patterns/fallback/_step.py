"""The fallback's rules: the shared state of one handler and its pipeline link (a :class:`Step`)."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from otel_resilience.engine.cancelling import returned_on_the_way
from otel_resilience.engine.counting import Counts
from otel_resilience.engine.deadline import passes_to_its_scope
from otel_resilience.engine.events import Event, FallbackUsed, Outcome, error_type_name, key_attribute
from otel_resilience.engine.facade import Link
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.notes import chain_failure
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.step import Answer, Call
from otel_resilience.engine.validation import verdict
from otel_resilience.errors import UnacceptedResultError
from otel_resilience.patterns.fallback._cache import NO_AGE_LIMIT, CacheWrites, LastGoodIndex, argument_key
from otel_resilience.patterns.fallback._config import MISSING, CacheService, FallbackConfig, FallbackStrategy

_FALLBACK: Final = Outcome.FALLBACK
_FALLBACK_USED: Final = Event.FALLBACK_USED
"""Read on hot paths, bound once: reading a member off its enum class costs ~55 ns (Python 3.11)."""

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import ExceptionGroup  # type: ignore[import-not-found, unused-ignore]

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.engine.events import StrategyTelemetry
    from otel_resilience.engine.step import Action, Step

__all__: list[str] = []

_LOG: Final = logging.getLogger("otel_resilience.fallback")
KIND: Final = "fallback"


def _type_name(error: BaseException) -> str:
    """Return the bounded type name of ``error``."""
    return error_type_name(error) or type(error).__name__


def first_async_part(config: FallbackConfig) -> str | None:
    """Name the first async part (:func:`is_async_callable`) the sync driver would have to await, if any.

    The one rule of a fallback that no sync call can run under: its handler's ``protect`` and a
    manager policy's decorators (``manager.policy.check_drivable``) refuse a sync function then.
    """
    parts: list[tuple[str, object]] = [("fallback_function", config.fallback_function)]
    parts.extend((f"fallback_functions[{i}]", fn) for i, fn in enumerate(config.fallback_functions))
    service = config.cache_service
    if service is not None:
        parts.extend((("cache_service.get", service.get), ("cache_service.set", service.set)))
    for label, part in parts:
        if part is not None and is_async_callable(part):
            return label
    return None


class FallbackCore(Counts):
    """The shared state of one handler: settings, the handling decision, counts, cache reads and writes."""

    __slots__ = (
        "by_arguments",
        "cache_errors",
        "cache_hits",
        "cache_key",
        "cache_misses",
        "cache_service",
        "caches",
        "clock",
        "config",
        "default_value",
        "fallback_failures",
        "fallback_function",
        "fallback_functions",
        "fallback_successes",
        "index",
        "judge_result",
        "name",
        "predicate",
        "strategy",
        "strategy_value",
        "sync_blocker",
        "types",
        "writer",
    )

    def __init__(self, name: str, config: FallbackConfig, clock: Clock) -> None:
        super().__init__()
        self.name = name
        self.config = config
        self.clock = clock
        self.strategy = config.strategy
        self.strategy_value = config.strategy.value
        self.default_value = config.default_value
        self.fallback_function = config.fallback_function
        self.fallback_functions = tuple(config.fallback_functions)
        self.cache_key = config.cache_key or ""
        self.cache_service = config.cache_service
        self.caches = config.strategy is FallbackStrategy.CACHED_VALUE
        self.judge_result = config.handle_result
        handle = config.handle_exceptions
        self.types: tuple[type[Exception], ...] | None = handle if isinstance(handle, tuple) else None
        self.predicate: Callable[[Exception], bool] | None = (
            None if isinstance(handle, tuple) else cast("Callable[[Exception], bool]", handle)
        )
        self.sync_blocker = first_async_part(config)
        self.fallback_successes = 0
        self.fallback_failures = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.cache_errors = 0
        self.by_arguments = config.cache_by_arguments
        max_age = config.cache_max_age
        self.index = NO_AGE_LIMIT if max_age is None else LastGoodIndex(max_age)
        """The keys this handler (or the one it replaced: :meth:`follow`) wrote, and when their
        values were returned."""
        self.writer: CacheWrites | None = None
        """The order of the writes to ``cache_service``, shared with the handler this one replaces
        in a reload (:meth:`follow`); ``CACHED_VALUE`` only."""
        if self.caches:
            self.writer = CacheWrites(cast("CacheService", self.cache_service))
            # A background write's end counts its error under this lock after the call returned:
            # made free in a forked child, as every lock that work other than a call takes.
            fork_safe(self.lock)

    def handles(self, error: Exception) -> bool:
        """Whether ``error`` triggers the fallback."""
        types = self.types
        if types is not None:
            return isinstance(error, types)
        predicate = cast("Callable[[Exception], bool]", self.predicate)
        handled: object = predicate(error)
        if handled is not False and handled is not True:  # a bool is taken as it is, with no call
            handled = verdict(handled, "FallbackConfig.handle_exceptions", self.name)
        return handled

    def label(self, part: str) -> str:
        """Name a configured part in an error message: ``"fallback 'x': fallback_function"``."""
        return f"fallback {self.name!r}: {part}"

    def answered(self, ctx: ExecutionContext, telemetry: StrategyTelemetry, error: Exception) -> None:
        """Count and report a fallback that answered in place of the call."""
        with self.lock:
            self.fallback_successes += 1
        ctx.outcome = _FALLBACK
        if telemetry.hub.event_listeners:
            args = FallbackUsed(self.strategy_value, "success", _type_name(error))
            telemetry.report(_FALLBACK_USED, args)

    def failed(self, telemetry: StrategyTelemetry, error: Exception) -> None:
        """Count and report a fallback that could not answer."""
        with self.lock:
            self.fallback_failures += 1
        if telemetry.enabled:
            args = FallbackUsed(self.strategy_value, "failure", _type_name(error))
            telemetry.report(_FALLBACK_USED, args)

    def key_of(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        """Return the cache key of a call's value (:func:`argument_key`); ``None``: it has none."""
        if not self.by_arguments:
            return self.cache_key
        return argument_key(self.cache_key, args, kwargs)

    def lookup(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        """Return the key to read a failed call's answer from, or ``None`` (counted as a miss).

        Only a value returned by a call with the same arguments (:meth:`key_of`) may answer;
        with a ``cache_max_age``, one this handler wrote and still remembers, young enough
        (:class:`LastGoodIndex`).
        """
        key = self.key_of(args, kwargs)
        if key is not None and self.index.fresh(key, self.clock.now()):
            return key
        with self.lock:
            self.cache_misses += 1
        return None

    def follow(self, old: FallbackCore) -> None:
        """Read on with what ``old``, the handler this one replaces in a reload, knows of the cache.

        With the same service, this handler writes in ``old``'s order (:class:`CacheWrites`):
        a value ``old``'s calls left waiting, or still return, takes its key's place in one
        queue with the new handler's, so the newest value is the one the service keeps.
        With the same cache (service, ``cache_key`` and keying), the keys ``old`` wrote keep
        answering, each value with the age it has, read with this handler's ``cache_max_age``;
        the two share that memory, so that what ``old``'s calls still running write counts too.
        Otherwise (another cache, or either handler without a ``cache_max_age``: no ages known)
        this handler starts with none.
        """
        writer = old.writer
        if self.writer is not None and writer is not None and writer.service is self.cache_service:
            self.writer = writer
        max_age = self.config.cache_max_age
        if (
            max_age is None  # a maximum age is CACHED_VALUE's only: both handlers then cache
            or old.index is NO_AGE_LIMIT
            or old.cache_service is not self.cache_service
            or old.cache_key != self.cache_key
            or old.by_arguments != self.by_arguments
        ):
            return
        self.index = old.index.aged(max_age)

    def cache_read(self, value: object) -> object:
        """Count a cache read; return the value, or :data:`MISSING` for a miss."""
        hit = value is not None and value is not MISSING
        with self.lock:
            if hit:
                self.cache_hits += 1
            else:
                self.cache_misses += 1
        return value if hit else MISSING

    def cache_failed(self, operation: str, key: str, error: BaseException | None = None) -> None:
        """Count and log a cache error: ``error``, or the one being handled when it is ``None``."""
        with self.lock:
            self.cache_errors += 1
        _LOG.warning(
            "fallback %r: cache_service.%s(%r) failed",
            self.name,
            operation,
            key_attribute(key),  # a keyed policy's key in it: a long one cut, as a resilience.key is
            exc_info=True if error is None else error,
        )

    def store(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], value: object, *, inline: bool) -> None:
        """Write a good result to the cache under its arguments' key; errors are logged and counted.

        A call whose arguments have no key (:meth:`key_of`) writes nothing. Inline (the
        sync driver), ``set`` must not return an awaitable.
        """
        key = self.key_of(args, kwargs)
        if key is not None:
            # Without an age limit no age is kept (NO_AGE_LIMIT never changes): no clock read.
            returned_at = 0.0 if self.index is NO_AGE_LIMIT else self.clock.now()
            loop = None if inline else asyncio.get_running_loop()
            self.writer.write(self, key, value, returned_at, loop)  # type: ignore[union-attr] # CACHED_VALUE: made

    def sync_refused(self) -> TypeError:
        """Build the error for a sync call when a fallback part is async."""
        return TypeError(
            f"fallback {self.name!r}: {self.sync_blocker} is a coroutine function (or an object whose "
            "__call__ is one), which the sync driver cannot await; use execute_with_fallback (async) "
            "or a sync function"
        )

    def group(self, operation: str, errors: list[Exception]) -> ExceptionGroup[Exception]:
        """Build the group raised when ``operation`` and every ``MULTIPLE_ATTEMPTS`` function failed."""
        message = f"{operation!r} failed and all {len(errors) - 1} fallback functions failed"
        return ExceptionGroup(message, errors)

    def counts(self) -> dict[str, int]:
        """``fallbacks_used`` is every handled failure, answered or not."""
        successes, failures = self.fallback_successes, self.fallback_failures
        return {
            "fallbacks_used": successes + failures,
            "fallback_successes": successes,
            "fallback_failures": failures,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_errors": self.cache_errors,
        }


class FallbackStep(Link[FallbackConfig]):
    """One pipeline link that answers in place of the rest of the chain when it fails.

    Its rules decide and never perform: a fallback function or a cache read is a :class:`Call`
    the driver makes (awaiting it, or refusing an awaitable in the sync driver), and the
    continuation judges what it gave.
    """

    __slots__ = ("_core",)

    kind: ClassVar[str] = KIND
    admit_waits: ClassVar[bool] = False  # admit returns a plain token

    def __init__(self, core: FallbackCore, clock: Clock, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.name, core.config, clock, telemetry)
        self._core = core
        self.entries = core.executions  # the driver counts the executions, exactly and lock-free
        self._admits = core.sync_blocker is not None  # only an async part needs admit
        # Only CACHED_VALUE (a write) and handle_result (a judgement) need to see a success.
        self._succeeds = self._judges = core.caches or core.judge_result is not None

    def get_stats(self) -> dict[str, int]:
        """Return the handler's counts (shared by all its links), as ``FallbackHandler.get_stats`` does."""
        return self._core.stats()

    def follow(self, links: Iterable[Step]) -> None:
        """Read on with what the fallback of ``links`` (the pipeline this one replaces) knows of the cache.

        That fallback is the first of ``links`` of the same name (:meth:`FallbackCore.follow`).
        Called before this link runs a call.
        """
        for link in links:
            if type(link) is FallbackStep and link.name == self.name:
                self._core.follow(link._core)
                return

    def admit(self, ctx: ExecutionContext) -> None:
        """Refuse the sync driver: a configured part is async (asked only then).

        Raises:
            TypeError: The sync driver runs (before ``fn`` runs).
        """
        if ctx.sync:
            raise self._core.sync_refused()

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> Action:  # noqa: ARG002
        """Answer for a value ``handle_result`` does not accept; write an accepted one to the cache.

        The cache write (``CACHED_VALUE``) runs inline in the sync driver, in the background in
        the async one. Only a good value of the call is written
        (:meth:`~otel_resilience.engine.context.ExecutionContext.result_good`): never a result a
        step inside judged a failure (a retry's ``retry_on_result`` gave up on it, a breaker's
        ``record_result`` counted it a failure), nor a value a pattern inside answered in place
        of the call (a recovery rule's fallback, a timeout's default). A value not accepted that
        came back while the task is being cancelled (the call swallowed its ``CancelledError``:
        :func:`~otel_resilience.engine.cancelling.returned_on_the_way`) is not answered, as an
        error on its way out of the cancellation is not: it is returned, a failed result.
        """
        core = self._core
        judge = core.judge_result
        if judge is not None:
            refused: object = judge(result)
            if refused is not False and refused is not True:  # a bool is taken as it is, with no call
                refused = verdict(refused, "FallbackConfig.handle_result", core.name)
            if refused:
                if returned_on_the_way(ctx):  # the call swallowed its task's cancellation: not answered
                    ctx.result_failed()
                    return None
                return self._fall_back(ctx, UnacceptedResultError(core.name, result))
        if core.caches and ctx.result_good():
            core.store(ctx.args, ctx.kwargs, result, inline=ctx.sync)
        return None

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Action:  # noqa: ARG002
        """Answer for a handled failure: the default, or a :class:`Call` of what answers.

        An enclosing scope's deadline, reached, passes to that scope unanswered
        (:func:`~otel_resilience.engine.deadline.passes_to_its_scope`), before anything is asked
        about it: a ``handle_exceptions`` predicate never sees it (it would be judged by rules
        written for the dependency's errors, and what it raised would replace that timeout).
        """
        if passes_to_its_scope(error) or not self._core.handles(error):
            return None
        return self._fall_back(ctx, error)

    def _fall_back(self, ctx: ExecutionContext, error: Exception) -> Action:
        """Answer for ``error`` (a handled failure, or a value not accepted) with the strategy."""
        core = self._core
        strategy = core.strategy
        if strategy is FallbackStrategy.DEFAULT_VALUE:
            return self._answer(ctx, error, core.default_value)
        if strategy is FallbackStrategy.ALTERNATIVE_FUNCTION:
            function = cast("Callable[..., Any]", core.fallback_function)
            what = core.label("fallback_function")
            return Call(function, (error, *ctx.args), ctx.kwargs, self._alternative, state=error, what=what)
        if strategy is FallbackStrategy.CACHED_VALUE:
            key = core.lookup(ctx.args, ctx.kwargs)
            if key is None:
                try:
                    return self._missed(ctx, error)
                finally:
                    del error  # raised through this frame, whose traceback must not hold it (a cycle)
            get = cast("CacheService", core.cache_service).get
            what = core.label("cache_service.get")
            return Call(get, (key,), {}, self._cached, state=(key, error), what=what)
        return self._attempt(ctx, 0, [error])

    def _answer(self, ctx: ExecutionContext, error: Exception, value: object) -> Answer:
        """Count and report the fallback's answer ``value`` for ``error``."""
        self._core.answered(ctx, self._telemetry, error)
        return Answer(value)

    def _alternative(
        self, ctx: ExecutionContext, error: Exception, value: object, failure: Exception | None
    ) -> Answer:
        """Judge ``fallback_function``: its value answers, its own error is raised in place of ``error``."""
        if failure is not None:
            self._core.failed(self._telemetry, error)
            # A value not accepted was never raised, so no handling chained it: chain it here,
            # as a handled error is, so that the caller sees what the alternative answered for.
            chain_failure(failure, error)
            try:
                raise failure
            finally:
                del error, failure  # the traceback holds this frame: it keeps neither (a cycle)
        return self._answer(ctx, error, value)

    def _cached(
        self, ctx: ExecutionContext, state: tuple[str, Exception], value: object, failure: Exception | None
    ) -> Action:
        """Judge the cache read: a hit answers; a miss or a cache error re-raises ``error``."""
        core = self._core
        key, error = state
        del state
        if failure is not None:
            # Logged and counted by a Call of its own, so that ``error`` is raised once the
            # handling of the cache's error has ended: its ``__context__`` stays unchanged.
            return Call(core.cache_failed, ("get", key, failure), {}, self._missed, state=error)
        cached = core.cache_read(value)
        if cached is MISSING:
            try:
                return self._missed(ctx, error)
            finally:
                del error  # raised through this frame, whose traceback must not hold it (a cycle)
        return self._answer(ctx, error, cached)

    def _missed(self, ctx: ExecutionContext, error: Exception, *_: object) -> Answer:
        """The cache had nothing to answer with: re-raise the call's own ``error``, unchanged.

        For a value ``handle_result`` did not accept, the value is returned, as without a
        fallback, and the execution counts as a failure
        (:meth:`~otel_resilience.engine.context.ExecutionContext.result_failed`): the policy
        judged the value failed and nothing answered in its place.
        """
        self._core.failed(self._telemetry, error)
        if type(error) is UnacceptedResultError:
            ctx.result_failed()
            return Answer(error.result)
        try:
            raise error
        finally:
            del error  # its traceback holds this frame: not bound here (a cycle)

    def _attempt(self, ctx: ExecutionContext, index: int, errors: list[Exception]) -> Call:
        """Call ``MULTIPLE_ATTEMPTS`` function ``index``; raise the group when none is left.

        Args:
            ctx: The execution.
            index: The function to call next.
            errors: The call's error, then the error of every function tried so far.
        """
        core = self._core
        functions = core.fallback_functions
        if index == len(functions):
            core.failed(self._telemetry, errors[0])
            # Named by the rule of every link (Link.operation): used alone, the function it ran.
            raise core.group(self.operation(ctx), errors) from None
        what = core.label(f"fallback_functions[{index}]")
        return Call(functions[index], ctx.args, ctx.kwargs, self._attempted, state=(index, errors), what=what)

    def _attempted(
        self,
        ctx: ExecutionContext,
        state: tuple[int, list[Exception]],
        value: object,
        failure: Exception | None,
    ) -> Action:
        """Judge ``MULTIPLE_ATTEMPTS`` function ``index``: its value answers, else try the next one."""
        index, errors = state
        if failure is None:
            return self._answer(ctx, errors[0], value)
        errors.append(failure)
        return self._attempt(ctx, index + 1, errors)
