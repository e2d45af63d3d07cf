"""Circuit breaker: stop calling a dependency that keeps failing, then probe it back to health.

States::

    CLOSED --failure_threshold consecutive failures--> OPEN --timeout elapsed--> HALF_OPEN
    HALF_OPEN --success_threshold probe successes--> CLOSED
    HALF_OPEN --any counted failure--> OPEN (fresh timer)

The state is a sans-I/O core (:class:`_BreakerCore`: the state period, counts and locked
transitions) shared by one step per pipeline (:class:`_BreakerStep`), which speaks the
Resilience4j permission protocol as the engine's hooks: ``admit`` hands out a :class:`Permit`
(or raises the rejection), and the call ends with exactly one of ``on_success``, ``on_failure``
or ``on_cancel`` (the permit given back). The engine's two drivers run it; the user's function
never runs under the core's lock.

An *outage episode* runs from a trip out of CLOSED until the breaker closes again; every
HALF_OPEN -> OPEN in between is a *re-open*, counted in the ``reopens`` of the reported
:class:`~otel_resilience.engine.events.StateChanged` (the alert system raises one alert per
episode from it).

Every permit carries the *generation* of the state period that issued it. Each transition starts
a new generation, so a slow call admitted before a trip can never move the consecutive-failure or
probe counts of a later period; it is still counted in the lifetime totals.

How an exception is classified (first match wins):

0. A function that does not fit the driver (a plain function given to the async API, a coroutine
   function to the sync API): ignored, the permit is given back. It is a programming error, not
   an outcome of the dependency; the caller gets ``TypeError``, which the pipeline counts as a
   failed execution (as it counts every error that reaches the caller).
1. :class:`~otel_resilience.errors.ExecutionRejectedError` from an inner layer (a bulkhead
   rejection, an inner breaker): ignored; the dependency was never called.
2. ``ignore_exceptions``: ignored: neither success nor failure, the probe permit is given back.
3. ``record_exceptions`` (types or a predicate): a failure.
4. Anything else: the dependency answered, so it counts as a success (Resilience4j's rule).

``asyncio.CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` are never caught as
outcomes: the permit is released, nothing is counted but ``total_cancelled``, and the exception
propagates.

Layout: the settings live in ``config``, the states, counts and permits in ``state``, the state
machine in ``core``, the pipeline link in ``step`` and :class:`CircuitBreaker` in ``facade``;
this module is the public face and re-exports them.
"""

from __future__ import annotations

from otel_resilience.patterns.circuit_breaker.config import (
    DEFAULT_FAILURE_THRESHOLD as DEFAULT_FAILURE_THRESHOLD,
)
from otel_resilience.patterns.circuit_breaker.config import (
    DEFAULT_HALF_OPEN_MAX_CALLS as DEFAULT_HALF_OPEN_MAX_CALLS,
)
from otel_resilience.patterns.circuit_breaker.config import (
    DEFAULT_IGNORE_EXCEPTIONS as DEFAULT_IGNORE_EXCEPTIONS,
)
from otel_resilience.patterns.circuit_breaker.config import (
    DEFAULT_RECORD_EXCEPTIONS as DEFAULT_RECORD_EXCEPTIONS,
)
from otel_resilience.patterns.circuit_breaker.config import (
    DEFAULT_SUCCESS_THRESHOLD as DEFAULT_SUCCESS_THRESHOLD,
)
from otel_resilience.patterns.circuit_breaker.config import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from otel_resilience.patterns.circuit_breaker.config import KIND as KIND
from otel_resilience.patterns.circuit_breaker.config import CircuitBreakerConfig as CircuitBreakerConfig
from otel_resilience.patterns.circuit_breaker.config import ExceptionSelector as ExceptionSelector
from otel_resilience.patterns.circuit_breaker.config import ExceptionTypes as ExceptionTypes
from otel_resilience.patterns.circuit_breaker.facade import CircuitBreaker as CircuitBreaker
from otel_resilience.patterns.circuit_breaker.state import CircuitBreakerStats as CircuitBreakerStats
from otel_resilience.patterns.circuit_breaker.state import CircuitBreakerStatsDict as CircuitBreakerStatsDict
from otel_resilience.patterns.circuit_breaker.state import CircuitState as CircuitState
from otel_resilience.patterns.circuit_breaker.state import Permit as Permit
from otel_resilience.patterns.circuit_breaker.window import CountWindow as CountWindow
from otel_resilience.patterns.circuit_breaker.window import TimeWindow as TimeWindow

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_HALF_OPEN_MAX_CALLS",
    "DEFAULT_IGNORE_EXCEPTIONS",
    "DEFAULT_RECORD_EXCEPTIONS",
    "DEFAULT_SUCCESS_THRESHOLD",
    "DEFAULT_TIMEOUT",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerStats",
    "CircuitBreakerStatsDict",
    "CircuitState",
    "CountWindow",
    "Permit",
    "TimeWindow",
]
