"""The breaker's side of shared state: what a store may do to a breaker's core, and nothing else.

A store that shares a breaker across replicas (``otel_resilience.store.RedisStore``) never
decides a state: it feeds the core's one rule of opening (``_BreakerCore._decide_locked``) with
the counts of the other replicas, and makes the core take a state another replica decided. Four
operations, each under the core's lock, none waiting on the network:

* :func:`attach` gives the core a :class:`~otel_resilience.engine.shared.PeerCounts`: from then
  on each judged outcome is judged on the merged counts (local + peers);
* :func:`reconsider` judges the current counts again (the peers' counts changed): a breaker
  whose peers' failures bring the cluster to its threshold opens without a call of its own, and
  a HALF_OPEN one whose peers' probe successes bring the cluster's to ``success_threshold``
  closes, or re-opens when too many of the cluster's probes were slow
  (``_BreakerCore._close_if_probed_locked``, the one rule of closing);
* :func:`adopt` takes a state published by another replica (OPEN for ``open_for`` seconds,
  CLOSED, ...), reported as a state change like any other; an OPEN breaker only moves its timer;
* :func:`set_probe_limit` sets how many HALF_OPEN probes this replica may run now: the probe
  leases it holds in the cluster (0 while it holds none), or ``half_open_max_calls`` when the
  store is unreachable and the breaker runs on its own.

And in a process forked from a replica (a pre-fork worker), :func:`forget_counts` starts the
child's counts of the current period from none: they are the parent's, which reports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from otel_resilience.patterns.circuit_breaker.state import (
    _CLOSED,
    _HALF_OPEN,
    _METRICS_ONLY,
    _OPEN,
    CircuitState,
)

if TYPE_CHECKING:
    from otel_resilience.engine.shared import PeerCounts
    from otel_resilience.patterns.circuit_breaker.core import _BreakerCore

__all__ = ["adopt", "attach", "forget_counts", "local_counts", "reconsider", "set_probe_limit"]


def attach(core: _BreakerCore, peers: PeerCounts | None) -> None:
    """Judge ``core``'s outcomes on the counts merged with ``peers`` (``None``: local only)."""
    with core._lock or core._make_lock():
        core._shared = peers


def local_counts(core: _BreakerCore) -> tuple[int, int, int]:
    """Return this replica's ``(calls, failures, slow)`` in the current period (what it reports).

    Without a sliding window: ``(0, consecutive failures, 0)``; with one: the window's totals.
    """
    with core._lock or core._make_lock():
        return core._counts_locked()


def forget_counts(core: _BreakerCore) -> None:
    """Clear this replica's counts of the current period (failures, window, probe successes), not its state.

    For a forked child, a replica of its own: the counts it was born with are its parent's, which
    goes on reporting them. Kept, each child reported them again as its own, so a breaker that
    failed ``n`` times before the fork counted ``n`` once per worker as well, and a pre-fork
    server with a few workers opened it cluster-wide without one failure more.
    """
    with core._lock or core._make_lock():
        core.stats.failure_count = core.stats.success_count = 0
        if core._permit.slow_probes:  # HALF_OPEN's own period (the first one, shared, has none)
            core._permit.slow_probes = 0
        if core.window is not None:
            core.window.clear()
        core._update_lock_free_locked()  # the streak changed


def reconsider(core: _BreakerCore) -> None:
    """Judge the merged counts again now: open (CLOSED), close or re-open (HALF_OPEN) as the rules say."""
    with core._lock or core._make_lock():
        state = core._permit.state
        shared = core._shared
        if core._permit.retired or shared is None:
            return
        if state is _HALF_OPEN:
            change = core._close_if_probed_locked()
        elif state is _CLOSED or state is _METRICS_ONLY:
            change = core._decide_locked(state, *shared.merged(core._counts_locked()))
        else:
            return
    core._emit(change)


def adopt(
    core: _BreakerCore, by: PeerCounts, state: CircuitState, open_for: float | None, reason: str
) -> bool:
    """Take ``state``, published by another replica (OPEN for ``open_for`` seconds), if ``by`` feeds ``core``.

    An OPEN breaker adopting OPEN only moves its timer (no state change is reported); any other
    change is a transition, reported with ``reason``. A store whose link was detached since (a
    reload gave the breaker another store, or none) changes nothing.

    Returns:
        Whether the state changed.
    """
    with core._lock or core._make_lock():
        if core._permit.retired or core._shared is not by:
            return False
        current = core._permit.state
        if state is _OPEN and current is _OPEN:
            core._permit.opened_until = core._clock.now() + (
                open_for if open_for is not None else core.settings.timeout
            )
            return False
        if state is current:
            return False
        change = core._transition_locked(state, reason, open_for if state is _OPEN else None)
    core._emit(change)
    return True


def set_probe_limit(core: _BreakerCore, by: PeerCounts, probes: int) -> None:
    """Let this replica run at most ``probes`` HALF_OPEN probes at once (0: reject every probe).

    Nothing changes unless ``by`` is the store's link that feeds ``core`` now.
    """
    with core._lock or core._make_lock():
        if core._shared is by:
            core.settings = core.settings.with_probes(probes)
