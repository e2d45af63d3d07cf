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
  a key made of ``cache_key`` and the call's arguments; on failure the last good value *of a
  call with the same arguments* is read back, never another's (``get_user("bob")`` is not
  answered with alice's record). A miss re-raises the *original* error, unchanged. A value a
  pattern inside answered in place of the call (a recovery rule's fallback, a timeout's
  default: the execution's outcome is already a fallback) is returned but never written: it
  would replace the last good value.
* ``MULTIPLE_ATTEMPTS``: call each of ``fallback_functions`` in order as drop-in replacements
  (``fn(*args, **kwargs)``); the first that returns answers. If all fail, an
  ``ExceptionGroup`` holding the original error and then every fallback error, in order, is
  raised, so that no cause is lost.

Decisions:

* **What triggers a fallback.** ``handle_exceptions`` (exception types or a predicate; default
  ``(Exception,)``, which includes rejections and timeouts raised by inner patterns). Only
  ``Exception`` is ever caught: ``asyncio.CancelledError``, ``KeyboardInterrupt`` and
  ``SystemExit`` never trigger a fallback and are never swallowed, in the protected call or in a
  fallback function; nor is an error raised on the way out of the task's cancellation
  (:func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`: it passes through, and no
  further ``MULTIPLE_ATTEMPTS`` function runs). Naming a non-``Exception`` type is rejected at
  configuration.
* **Fields the strategy does not use must stay unset.** ``FallbackConfig(strategy=DEFAULT_VALUE,
  cache_key="x")`` raises ``ValueError`` naming ``FallbackConfig.cache_key``: such a field
  would be silently ignored, and is almost always a mistake (a wrong strategy).
* **Cache keys.** By default every call's value is written under ``cache_key``: the last good
  value, whatever the arguments (as the SPEC's ``cache_key="last_analysis"``). That is right for
  a call whose answer does not depend on its arguments, and wrong for ``get_user(user_id)``,
  which would then be answered with another user's record: set ``cache_by_arguments=True``.
  With it, a call whose arguments (positional and keyword; none at all) are all plain values, of
  exactly the types ``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None`` or tuples of them,
  uses ``"<cache_key>:<digest>"``, a digest of their ``repr``: one key per argument tuple (``1``,
  ``1.0``, ``True`` and ``"1"`` are four), the same in every process sharing the service. The
  digest is always there, of one length: a key of a keyed policy (``"<cache_key>:<key>"``) that
  looks like another key followed by a digest still never meets that key's values. A call with
  any other argument (a list, a dict, an object, even a hashable one, whose ``repr`` may be
  shared by unequal values or differ between processes) is neither written nor answered from
  the cache: its failure is a miss; so is a call with tuples nested more than 32 deep, or an
  ``int`` too long for ``repr`` (``sys.get_int_max_str_digits``): making a key never fails the
  call. Pass an identifier, not the object (``get_user(user.id)``).
* **Cache age.** ``cache_max_age`` (seconds) bounds how old an answer may be, counted from
  when the call returned it. The age is known only to the handler that wrote the value: with a
  maximum age, a handler answers only from keys it wrote, and remembers the 256 it used last
  (a small LRU, under a lock of its own); a value written by another process, one forgotten,
  or one too old is a miss. A policy's reload that keeps the cache (the same service,
  ``cache_key`` and ``cache_by_arguments``) keeps that memory, read with the new
  ``cache_max_age``; one that changes the cache, or adds the maximum age, starts with none.
  Without it (the default) any value under a call's key answers, and bounding what the service
  keeps is the service's job (give it a TTL).
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
  replace that key's value to write next, so at most one write runs per handler (per running
  event loop), at most one waits per key (256 keys at most, per loop), and each key's last good
  value is the one written. A policy's reload that keeps the cache service keeps that order: the
  new handler's values wait in the same queue as the old one's, so a value returned before the
  reload never lands after a newer one. A value is written on the loop of the call that returned
  it (an async client belongs to its loop), never by another loop's writer. A value answers only once
  its write ended (its age counted from when the call returned it): a write still waiting never
  makes the older value the service holds look young.
  A failed background write is logged and counted like any ``set`` error; one still running
  when its loop shuts down is cancelled. The cost: an async cache holds a success a moment
  after the call returned. A sync ``set`` (a plain method) runs inline in both drivers, as any
  sync call does: give its client a timeout.
* **Sync and async.** The async driver accepts sync or async fallback functions and cache
  methods (an awaitable result is awaited). The sync driver cannot await: an async one among
  them (a coroutine function, or an object whose ``__call__`` is one) is detected when the
  handler is built and every sync call is refused at once with
  ``TypeError``, before the protected call runs (``protect`` refuses a plain function when it
  decorates it, as retry does for an async ``on_retry``); an awaitable that only shows up at call time
  is closed and reported as that function's failure (for a cache, as a cache error).
* **Outcome.** When a fallback answers, the execution's outcome is
  :attr:`~otel_resilience.engine.events.Outcome.FALLBACK`, and ``fallback_used`` is reported
  with ``result="success"``; when it could not answer, with ``result="failure"``.
* **Counting.** Executions are counted by an exact lock-free counter in both drivers; the other
  counts, which move only on the failure path or on a cache access, under the handler's lock.
* **Layout.** The settings live in ``otel_resilience.patterns.fallback._config``, the cache
  keys, ages and write order in ``._cache``, the rules (a
  :class:`~otel_resilience.engine.step.Step` run by the engine's two drivers) in
  ``otel_resilience.patterns.fallback._step``; this module is the public face and re-exports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import StrategyTelemetry
from otel_resilience.engine.facade import Pattern, verb
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.validation import fail
from otel_resilience.patterns.fallback._config import (
    DEFAULT_HANDLE_EXCEPTIONS,
    MISSING,
    CacheService,
    FallbackConfig,
    FallbackStrategy,
)
from otel_resilience.patterns.fallback._step import KIND, FallbackCore, FallbackStep

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DEFAULT_HANDLE_EXCEPTIONS",
    "MISSING",
    "CacheService",
    "FallbackConfig",
    "FallbackHandler",
    "FallbackStrategy",
]

DEFAULT_NAME: Final = "fallback"
"""Default :class:`FallbackHandler` name."""


class FallbackHandler(Pattern[FallbackConfig, FallbackStep], kind=KIND):
    """Answers in place of a failed call: a default, an alternative, a cached value (SPEC §1.3).

    Args:
        config: The settings (which strategy, and what it needs).
        name: The handler's name in telemetry and logs. Default ``"fallback"``.
        clock: The clock execution durations are measured on.

    Raises:
        TypeError: If ``config`` is not a :class:`FallbackConfig` or ``clock`` is not a clock.
        ValueError: If ``name`` is empty.
    """

    __slots__ = ("_core",)

    def __init__(
        self, config: FallbackConfig, *, name: str = DEFAULT_NAME, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if not isinstance(config, FallbackConfig):
            raise fail("FallbackHandler", "config", "a FallbackConfig", config, kind=TypeError)
        super().__init__(name, config, clock)
        self._core = FallbackCore(name, config, self.clock)

    def _link(self, telemetry: StrategyTelemetry) -> FallbackStep:
        return FallbackStep(self._core, self.clock, telemetry)

    def _check_protectable(self, fn: Callable[..., Any]) -> None:
        """Refuse a sync function while a fallback function or cache method is async (no call could run)."""
        if self._core.sync_blocker is not None and not is_async_callable(fn):
            raise self._core.sync_refused()

    execute_with_fallback = verb(
        Pattern.run,
        "Return ``await fn(*args, **kwargs)``, or the fallback's answer when it fails.",
        more="The fallback functions get the same ``*args`` and ``**kwargs``.",
        returns="``fn``'s result, or the fallback's answer (whose type the caller vouches for).",
        raises=(
            (
                "Exception: ``fn``'s error when it is not handled or a cache missed; a "
                "``fallback_function``'s own error; an ``ExceptionGroup`` when every ``MULTIPLE_ATTEMPTS`` "
                "function failed."
            ),
            "asyncio.CancelledError: Always propagated, never answered by a fallback.",
        ),
    )

    execute_with_fallback_sync = verb(
        Pattern.run_sync,
        "Return ``fn(*args, **kwargs)``, or the fallback's answer when it fails (sync driver).",
        returns="``fn``'s result, or the fallback's answer.",
        refuses="a fallback function or cache method is async (refused before ``fn`` runs).",
        raises=("Exception: As :meth:`execute_with_fallback`.",),
    )

    def get_stats(self) -> dict[str, int]:
        """Return the counts.

        Returns:
            ``executions``; ``fallbacks_used`` (failures the fallback handled) =
            ``fallback_successes`` + ``fallback_failures``; ``cache_hits``, ``cache_misses``
            (failures the cache had no answer for: nothing under the call's key, no key for its
            arguments, or older than ``cache_max_age``) and ``cache_errors`` (``get`` or
            ``set`` raised).
        """
        return self._core.stats()

    def __repr__(self) -> str:
        core = self._core
        return f"FallbackHandler(strategy={core.strategy.name}, name={core.name!r})"
