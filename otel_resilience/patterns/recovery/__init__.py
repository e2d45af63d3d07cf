"""Error recovery (auto-healing): rules per error type, pattern detection, recovery statistics.

An :class:`ErrorRecoverySystem` holds *rules*: an exception class and the
:class:`RecoveryAction` to take when an error of that class (or a subclass) reaches it. The rule
that acts is the one of the first class of the error's MRO that has a rule (a subclass's wins
over its base's); when no class of its MRO has one, the first rule, in registration order, whose
class the error is an instance of all the same (``isinstance``: an ABC its class is registered
with). The actions are:

* ``RETRY``: run the operation again, up to ``max_attempts`` times, ``delay`` seconds apart,
  while it keeps failing with an error this rule is the one to act on; when the re-runs run out,
  the *last* error is re-raised unchanged (never wrapped). A re-run's error is judged by the
  rules as the first run's is (fed to the pattern detector, matched by the one rule lookup):
  another rule's ends this recovery as a failed attempt, and that rule acts on it (a FALLBACK
  answers, an ISOLATE isolates, an ESCALATE escalates, another RETRY/RESTART re-runs with its
  own ``delay`` and re-runs), as does a rule registered again for its class with another action
  while it runs; one no rule covers ends it as failed and propagates unchanged. A
  rule makes at most ``max_attempts`` re-runs in one execution, whichever rules acted in
  between, so rules whose errors take turns never re-run forever. Like retry attempts, re-runs
  happen outside the handling of the original error, so a re-run's error (or rejection) does not
  chain it. Each re-run is a new attempt of the execution: it takes the next attempt number
  (:meth:`~otel_resilience.engine.context.ExecutionContext.next_attempt`, shared with retry),
  and is not started once the execution made its cap of attempts in total
  (``ResilienceConfig.max_attempts_total``): like a re-run the deadline leaves no room for, the
  recovery then ends as a *failed* recovery attempt and the last error is re-raised. A re-run
  (or its delay, its hook) that the effective deadline ends is a failed recovery too, in both
  drivers, and the caller gets the deadline's timeout: whether the deadline cancelled it (async)
  or it returned after the deadline in a thread (the timeout scope drops that late result).
* ``RESTART``: the same loop, but each re-run is preceded by ``restart_hook()`` (sync or async)
  that re-creates or re-connects the failing component. A hook that raises ends the recovery
  as a failed attempt, whatever error it raises (even one the rule covers): its error
  propagates unchanged, and neither the hook nor the operation runs again. In the sync driver an
  async hook (a coroutine function) is a ``TypeError`` before the delay, ending the recovery the
  same way; one that only returns an awaitable is refused when it returns it.
* ``FALLBACK``: answer with ``fallback_value``, or with ``fallback_function(*args, **kwargs)``
  called with the operation's own arguments (sync or async). A fallback the effective deadline
  ends is a failed recovery, as a re-run it ends, and the caller gets the deadline's timeout:
  whether the deadline cancelled ``fallback_function`` (async) or the answer came after the
  deadline in a thread (the timeout scope drops it).
* ``ISOLATE``: force the named circuit breaker open for at least ``isolate_duration`` seconds
  (an opening that lasts longer already is kept), then re-raise the original error.
* ``ESCALATE``: raise :class:`~otel_resilience.errors.RecoveryEscalatedError` ``from`` the
  original error: no automatic recovery, a human is needed.

An error no rule covers propagates unchanged and is not a recovery attempt. Cancellation
(``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit``) is never recovered, and is
counted only as the end of a recovery the deadline cut (above); so is an error the operation
raises on its way out of its task's cancellation, which passes through unchanged
(:func:`~otel_resilience.engine.cancelling.cancelled_on_the_way`). A rejection is neither recovered
nor counted (:class:`~otel_resilience.errors.ExecutionRejectedError`: an open breaker, a full
bulkhead, a bulkhead queue timeout): the dependency was never called, so it is not an error of
the dependency. It propagates unchanged, is no recovery attempt and no
occurrence of a pattern, and no rule may be registered for it.

Every other error that reaches the system is fed to a pattern detector: the same fingerprint
(exception type name + operation name) seen ``pattern_threshold`` times within
``pattern_window`` seconds is reported once per window as ``Event.PATTERN_DETECTED``. The
operation is the pipeline's (the policy's) name in a pipeline; used alone (``execute``,
``execute_sync``, ``protect``), the function that failed (its
:func:`~otel_resilience.engine.naming.callable_name`, whatever the system's name: two functions
are two operations); for ``recover_from_error``, the context's (:class:`RecoveryContext`). An
operation named after a function is fingerprinted with that function's module too
(:meth:`~otel_resilience.engine.facade.Link.named_after`): ``users.fetch`` and ``orders.fetch``
are two fingerprints, both reported as ``fetch``, each with its module (``PatternDetected.module``).
An ESCALATE's
:class:`~otel_resilience.errors.RecoveryEscalatedError` names the same operation.

Use it three ways: in a pipeline (:meth:`ErrorRecoverySystem.as_strategy`), around a function
(:meth:`ErrorRecoverySystem.execute`, :meth:`ErrorRecoverySystem.protect`), or on an error you
already caught (:meth:`ErrorRecoverySystem.recover_from_error` with a :class:`RecoveryContext`).

The package's modules: :mod:`~otel_resilience.patterns.recovery.config` (the strategies,
actions, settings and contexts), :mod:`~otel_resilience.patterns.recovery.detector` (error
patterns), :mod:`~otel_resilience.patterns.recovery.stats`,
:mod:`~otel_resilience.patterns.recovery.step` (the rules, as a pipeline step) and
:mod:`~otel_resilience.patterns.recovery.system` (:class:`ErrorRecoverySystem`).
"""

from __future__ import annotations

from otel_resilience.patterns.recovery.config import (
    DEFAULT_DELAY,
    DEFAULT_ISOLATE_DURATION,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_FINGERPRINTS,
    DEFAULT_PATTERN_THRESHOLD,
    DEFAULT_PATTERN_WINDOW,
    BreakerResolver,
    Isolatable,
    RecoveryAction,
    RecoveryConfig,
    RecoveryContext,
    RecoveryStrategy,
)
from otel_resilience.patterns.recovery.stats import RecoveryStats, RecoveryStatsDict, StrategyCountsDict
from otel_resilience.patterns.recovery.system import ErrorRecoverySystem

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
    "RecoveryStatsDict",
    "RecoveryStrategy",
    "StrategyCountsDict",
]
