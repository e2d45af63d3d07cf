"""Rate limiter: at most ``rate`` calls per second (``burst`` at once), shared by asyncio and threads.

::

    limiter = RateLimiter("search_api", RateLimiterConfig(rate=10.0, burst=5, max_wait=1.0))
    result = await limiter.call(search, query)
    result = limiter.call_sync(search_sync, query)      # from a worker thread
    per_tenant = RateLimiter.per_key("tenant_api", RateLimiterConfig(rate=2.0))
    await per_tenant.for_key(tenant_id).call(handle, request)

A call that finds no permit is rejected at once with
:class:`~otel_resilience.errors.RateLimitedError` (an ``ExecutionRejectedError``: retry does not
retry it, a fallback answers it, a breaker ignores it), whose ``retry_after`` says when the next
permit is due; with ``max_wait > 0`` it may wait for one instead.

Design:

* **Rules, a step, a face.** The permits live in one sans-I/O rules object (:mod:`.rules`, a
  token bucket or an exact sliding log) behind one ``threading.Lock``, so the limit is exact
  under contention from threads, tasks and several event loops at once. The step (:mod:`.step`)
  has one hook, ``admit``: it takes a permit, or returns a ``Wait`` the engine's drivers perform
  (``await clock.sleep(d)`` or ``clock.sleep_sync(d)``), or raises. A permit is spent when the
  call starts: nothing is given back when it ends. The face, :class:`RateLimiter`, is a
  ``Pattern``: its verbs, ``protect``, ``guard()`` and ``as_strategy`` all go through that step.
* **Reservation.** A caller that may wait *reserves* the next permit that will be due, at once
  and under the lock, and then only sleeps until that time: the bucket goes into debt (the
  sliding log holds future times), as in Guava's and Polly's limiters. There is no queue to
  wake: each waiter knows its time, and no caller waits longer than its permit needs.
* **FIFO.** Each reservation takes the permit after every earlier one, so permits are handed out
  in the order they were asked for, and a newcomer never overtakes a waiter (while any caller
  waits, no permit is free now).
* **Rejected at once, never after a wait.** A caller is rejected when its permit would be due
  later than ``max_wait``, or not before the deadline of an enclosing timeout
  (:func:`~otel_resilience.engine.deadline.time_left`: a wait that would outlast the call's
  time budget is useless), or when ``max_waiting`` callers already wait. ``retry_after`` is the
  time until the permit it would have had, at most ``MAX_DURATION`` (a permit due later, behind
  the waiters of a long period, reads ``MAX_DURATION``: a duration any sleep takes).
* **Cancellation gives the permit back.** A waiter cancelled (or timed out by its task's deadline)
  before its time gives its reservation back: the latest reservation is rolled back exactly; an
  earlier one is handed to the next caller who would wait, who waits only until that permit's
  time. Either way the callers after it are not delayed by it.
* **Keys.** :meth:`RateLimiter.per_key` gives each key its own limiter, kept in the engine's
  bounded, evicting store (idle keys go first; a key with a waiter is not idle); the key never
  reaches telemetry.
* **Telemetry:** a rejection reports ``Event.CALL_REJECTED`` with
  ``CallRejected(reason="rate_limited")`` (the ``resilience.rejections`` counter and the
  ``resilience.call.rejected`` span event); counts are in :meth:`RateLimiter.get_stats`.
"""

from __future__ import annotations

from otel_resilience.patterns.rate_limiter.config import (
    ALGORITHMS,
    DEFAULT_MAX_WAITING,
    Algorithm,
    RateLimiterConfig,
)
from otel_resilience.patterns.rate_limiter.facade import DEFAULT_MAX_KEYS, KeyedRateLimiter, RateLimiter
from otel_resilience.patterns.rate_limiter.rules import RateLimiterStatsDict

__all__ = [
    "ALGORITHMS",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_MAX_WAITING",
    "Algorithm",
    "KeyedRateLimiter",
    "RateLimiter",
    "RateLimiterConfig",
    "RateLimiterStatsDict",
]
