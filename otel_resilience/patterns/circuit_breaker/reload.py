"""Reconfiguring a breaker in place: a core for the new config that carries the old one's state.

The manager's policies reload their configuration while calls run (``ResilienceManager.
reconfigure``); a breaker's state must not be lost on the way, as it would be if a new breaker
were made (which is what Polly's and Resilience4j's registries do). What carries over:

* **the state and its timer**: CLOSED stays CLOSED, an OPEN breaker stays OPEN until the end of
  the period it is in (the new ``timeout`` / ``break_duration`` apply to the next opening),
  HALF_OPEN stays HALF_OPEN with the probe successes it has (and the slow ones among them);
  DISABLED and METRICS_ONLY stay;
* **the counts**: the lifetime totals (one stats object, one lock for both cores), the
  consecutive failures (a lower ``failure_threshold`` trips at the next counted failure), and
  the sliding window's contents **when the window is the same** (``sliding_window`` equal);
  another window (or none instead of one) starts empty, and so does the failure count;
* **the callbacks** of ``on_state_change`` and ``on_rejection``, and the key a keyed policy's
  breaker reports as and names in its rejections (``report_as``);
* **the shared store's link**, when ``store`` is the same object. With another store (or none),
  the new core starts unshared and local (probes up to its ``half_open_max_calls``), and
  :meth:`CircuitBreaker._reconfigure` hands the breaker from the old store to the new one.

The old core is *retired*: the calls in flight through links built before the reload (a
policy's previous pipeline) finish with it, and their outcomes are counted in the totals but
never move a state (as a call admitted before a transition never does: permits carry their
period); a retired core no longer changes state. The half-open probes in flight are such calls:
the new core admits ``half_open_max_calls`` probes of its own. Their next attempts (a retry, a
hedge) are the live core's to admit: the owner that rebuilt the links makes the retired ones
follow it (:meth:`CircuitBreaker._follow_in_flight`), so an OPEN breaker rejects them too.
"""

from __future__ import annotations

from otel_resilience.patterns.circuit_breaker.config import CircuitBreakerConfig
from otel_resilience.patterns.circuit_breaker.core import _BreakerCore
from otel_resilience.patterns.circuit_breaker.state import Permit

__all__ = ["reconfigured_core_locked"]


def reconfigured_core_locked(old: _BreakerCore, config: CircuitBreakerConfig) -> _BreakerCore:
    """Return a core for ``config`` that carries ``old``'s state, and retire ``old``.

    Called with ``old``'s lock held, which the new core shares: the owner publishes the new
    core before releasing it, so that whoever reads the current core under that lock (to add
    a callback to it) finds the new one, never the retired one after its callbacks were copied.

    Args:
        old: The breaker's current core.
        config: The new configuration (already validated).

    Returns:
        The core to use from now on.
    """
    new = _BreakerCore(old.name, config, old._clock, old._telemetry)
    new._lock = old._lock  # one lock for the totals both cores count into (held by the caller)
    new.stats = stats = old.stats  # the totals and the last failure's type
    period = old._permit  # carried whole but its probes in flight (they end in the old core)
    new._permit = Permit(
        period.generation + 1,
        period.state,
        period.opened_until,
        period.reopens,
        0,
        period.probe_started,
        period.slow_probes,
        open_error=period.open_error,
    )
    new._watchers = old._watchers
    new._reject_watchers = old._reject_watchers
    if config.store is old.config.store:  # the store keeps feeding the breaker (it reads its core)
        new._shared = old._shared
        if old._shared is not None:  # the store grants the probes: keep its limit
            new.settings = new.settings.with_probes(old.settings.half_open_max_calls)
    if config.sliding_window == old.config.sliding_window:
        new.window = old.window
    else:
        stats.failure_count = 0  # the new window starts empty
    new._update_lock_free_locked()
    old._retire_locked()
    old.standing.token = None  # its links ask it every call: a link may follow the live core
    return new
