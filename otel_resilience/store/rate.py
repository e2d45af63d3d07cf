"""A rate limiter's budget shared by every replica: one atomic script per permit, in Redis.

:class:`ClusterRules` stands in for a limiter's local rules
(:mod:`otel_resilience.patterns.rate_limiter.rules`) with the same methods, so the limiter's
step and drivers do not change: :meth:`ClusterRules.acquire` takes a permit from the cluster's
bucket (``"token_bucket"``: GCRA on one key, its limits on another) or log (``"sliding_window"``),
both on the server's clock, or reserves the next one due (the caller waits for it), or refuses.
A cancelled waiter's cluster permit is not given back: the cluster admits fewer, never more,
than its budget.

While the store is unreachable (or slower than its ``timeout``) the limiter follows its
``store_fallback``: ``"open"`` admits (counted), ``"closed"`` refuses, ``"local"`` takes from a
local bucket of ``rate / expected_replicas``. It asks Redis again from its first call after the
store's thread reached it (the store's one rule of reachability: :attr:`RedisStore.local_only`);
a call the fallback answers tells the store (:meth:`RedisStore.wanted`, as a shared breaker's
failure or transition wakes it), whose thread then tries Redis again every ``flush_interval``
instead of backing off to 5 s, so that the limiter is on Redis again within a round or two of
its return. An error the server answers to one permit's
script (a ``ResponseError`` such as ``WRONGTYPE``: the server is reachable; see
:meth:`RedisStore.answered`) is that call's error: the fallback answers it, the store counts it
in ``errors`` (the first one of a limiter is logged), and the store is not degraded.

Its key names the algorithm (``NAMESPACE:rl:ALGORITHM:NAME``,
:meth:`~otel_resilience.store.RedisStore.rate_rules`): a limiter whose ``algorithm`` changes (a
rolling deploy, a reload) starts a new budget rather than reading the other's key. A reload that
keeps the algorithm keeps the permits used, as a local limiter's does (:meth:`ClusterRules.retune`).

A caller's deadline bounds its wait as a local limiter's rules bound it: the script reserves no
permit due later than what the deadline left when the caller asked, and :meth:`ClusterRules._answer`
refuses one due later than what it leaves once the answer arrived (the round trip took the
rest): the caller is refused at once, rather than sleeping into its deadline (or, in a thread,
past it). That permit stays spent, as a cancelled waiter's does.

The fallback's waiters are the limiter's too: :attr:`ClusterRules.waiting` counts them, and the
``max_waiting`` places are shared by the waiters of both.

Both drivers share the rule: :meth:`ClusterRules._ask` says what to ask, :meth:`ClusterRules._answer`
decides on the reply (or the error, or the store being away); only the round trip differs, in
this thread (:meth:`ClusterRules.acquire`: the sync driver, ``try_acquire``) or awaited on the
running event loop (:meth:`ClusterRules.acquire_async`: the async driver, which therefore never
blocks its loop on Redis).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from otel_resilience.engine.closing import give_back
from otel_resilience.engine.deadline import WaitDeadlineReachedError, time_left
from otel_resilience.engine.events import key_attribute
from otel_resilience.engine.forking import fork_safe
from otel_resilience.patterns.rate_limiter.rules import RateLimiterStatsDict, _Reservation, new_rules
from otel_resilience.store import scripts

if TYPE_CHECKING:
    from collections.abc import Callable

    from otel_resilience.engine.clock import Clock
    from otel_resilience.patterns.rate_limiter.config import RateLimiterConfig
    from otel_resilience.store.redis_store import RedisStore

__all__ = ["ClusterRules"]

_LOG: Final = logging.getLogger("otel_resilience")
_INF: Final = math.inf
_COUNTS: Final = ("admitted", "rejected", "waited", "cancelled")
"""The counts of :meth:`ClusterRules.snapshot` that add the cluster's to the fallback's (and ``waiting``)."""


_PERMIT: Final = 0
""":func:`_script`: the script taking a permit."""
_READ: Final = 1
""":func:`_script`: the script reading the permits left (it takes none)."""


def _script(config: RateLimiterConfig, kind: int) -> tuple[str, float]:
    """The script of ``kind`` for ``config``'s algorithm, and its first argument (ms: a window, a permit)."""
    if config.algorithm == "sliding_window":
        return (scripts.SLIDING_LOG, scripts.LOG_AVAILABLE)[kind], config.window * 1000
    return (scripts.TOKEN_BUCKET, scripts.TOKENS_AVAILABLE)[kind], 1000 / config.rate


def _since(retuned: float) -> float:
    """The ms since ``retuned`` (:attr:`ClusterRules._retuned`), as the script counts it back from its now."""
    return (time.monotonic() - retuned) * 1000


def _reloaded(was: RateLimiterConfig) -> float:
    """The moment (``time.monotonic()``) a reload from ``was`` is taken as of, by the script asked next.

    A token bucket is carried over to the new limits as of now
    (:data:`~otel_resilience.store.scripts.TOKEN_BUCKET`); a sliding log forgets its admissions
    from before ``was``'s window ending now (:data:`~otel_resilience.store.scripts.SLIDING_LOG`),
    as a local log does at its retune.
    """
    now = time.monotonic()
    return now - was.window if was.algorithm == "sliding_window" else now


@dataclasses.dataclass(slots=True, eq=False)
class _Ask:
    """One request for a permit: the script and its arguments, and the caller's limits."""

    script: str
    argv: tuple[float, int, float, float, float]
    max_wait: float
    remaining: float
    local: bool = dataclasses.field(kw_only=True)
    """The store is unreachable now: the fallback answers, Redis is not asked."""
    seat: bool = dataclasses.field(default=False, kw_only=True)
    """It holds one of the ``max_waiting`` places while Redis answers (given back with its answer)."""
    retuned: float = dataclasses.field(default=0.0, kw_only=True)
    """The :attr:`ClusterRules._retuned` it was asked with (its ``argv`` carries the ms since then)."""


class ClusterRules:
    """Permits of a cluster-wide rate limiter (see the module); counts are this replica's.

    Attributes:
        admitted: Permits this replica took (from the cluster, or by its fallback).
        rejected: Requests this replica refused.
        waited: Permits taken after a wait.
        cancelled: Waiters that gave up (their cluster permit stays spent).
        fallback_admitted: Calls admitted by the fallback while the store was unreachable.
    """

    __slots__ = (
        "_asking",
        "_config",
        "_dropped",
        "_key",
        "_keys",
        "_local",
        "_lock",
        "_name",
        "_retuned",
        "_store",
        "_waiting",
        "_warned",
        "admitted",
        "cancelled",
        "fallback_admitted",
        "rejected",
        "waited",
    )

    def __init__(
        self, store: RedisStore, keys: tuple[str, ...], config: RateLimiterConfig, name: str
    ) -> None:
        self._store = store
        self._keys = keys
        """The script's keys: the budget's (named in a warning), then any the algorithm keeps beside it."""
        self._key = keys[0]
        self._name = name
        """The limiter's name: the operation of a round trip its caller's deadline ended."""
        self._config = config
        self._retuned = 0.0
        """The moment (``time.monotonic()``) this replica's last reload to other limits is taken as
        of (:func:`_reloaded`), until a permit's script answered after it (``0.0``: none): the asks
        pass the ms since, so that the script takes the reload as of its moment, as a local
        limiter's retune does, never as of an asker's own later call (:meth:`retune`)."""
        self._local = new_rules(config.local_share())
        self._lock = fork_safe(threading.Lock())
        self.admitted = self.rejected = self.waited = self.cancelled = 0
        self._waiting = 0
        """Callers waiting for a cluster permit (:attr:`waiting` adds the fallback's)."""
        self.fallback_admitted = 0
        self._asking = 0
        """Callers allowed to wait whose ask is with the store now: they count against ``max_waiting``."""
        self._dropped: deque[_Reservation] = deque()
        """Cluster reservations :meth:`drop` found the lock held for: given up by the lock's next
        holder that needs the waiting count (a caller finding every waiting place taken, a snapshot)."""
        self._warned = False
        store._start()

    @property
    def max_wait(self) -> float:
        """The longest a caller may wait for a permit, in seconds."""
        return self._config.max_wait

    @property
    def waiting(self) -> int:
        """Callers waiting now: for a cluster permit, and for one of the fallback (the store away)."""
        return self._waiting + self._local.waiting

    def acquire(self, now: float, max_wait: float, remaining: float = _INF) -> _Reservation | float | None:
        """Take a cluster permit now (``None``), reserve one (a reservation), or refuse (seconds to wait).

        Asks the store in this thread (at most its ``timeout``, and never past the caller's
        deadline: :meth:`acquire_sync`); while it is unreachable, the fallback answers.
        ``try_acquire`` uses it (it never waits); the sync driver uses :meth:`acquire_sync`, which
        reads the time once the store replied.
        """
        return self.acquire_sync(lambda: now, max_wait, remaining)

    def acquire_sync(
        self, now: Callable[[], float], max_wait: float, remaining: float = _INF
    ) -> _Reservation | float | None:
        """As :meth:`acquire`, answered at ``now()`` read once the store replied (the sync driver).

        A wait the store gives is counted from when its reply arrived, as :meth:`acquire_async`
        counts it: counted from before the round trip, a waiter on a slow link would take its
        permit up to the request's latency before the server made it due. The round trip ends at
        the caller's deadline when that comes before the store's ``timeout`` (:meth:`_round_trip`),
        as an async caller's is cancelled by its deadline.

        Raises:
            WaitDeadlineReachedError: The caller's deadline came before the store's answer
                (counted in ``cancelled``; the scope that owns the deadline raises its timeout).
        """
        left = time_left()  # the caller's deadline: inf when there is none
        ask = self._ask(max_wait, remaining)
        try:
            reply = None if ask.local else self._round_trip(ask, left)
        except BaseException as error:
            self._gave_up(ask, error)
            raise
        return self._answer(now(), ask, reply)

    def _round_trip(self, ask: _Ask, left: float) -> Any:
        """Run ``ask``'s script in this thread within the store's ``timeout`` and ``left`` seconds.

        A thread cannot be cancelled: the caller's deadline bounds the operation as the store's
        ``timeout`` does (:func:`~otel_resilience.store.deadlines.within`), whichever is sooner.
        A round trip that the deadline ended is the caller's timeout, never a failure of the
        store, which a caller with a short deadline would otherwise degrade for every caller.

        Returns:
            The script's reply, or the error of an operation that failed (the store's to judge).

        Raises:
            WaitDeadlineReachedError: The deadline passed before the store answered (or before
                it was asked: it is not asked then).
        """
        store = self._store
        if left >= store._timeout:  # no deadline, or a later one: the store's timeout bounds it
            return store._run_script(ask.script, self._keys, ask.argv, store._timeout)
        started = time.monotonic()
        if left > 0.0:
            reply = store._run_script(ask.script, self._keys, ask.argv, left)
            if not isinstance(reply, BaseException) or time.monotonic() - started < left:
                return reply  # answered, or failed before the deadline: the store's to judge
        raise WaitDeadlineReachedError(self._name, time.monotonic() - started, "total")

    async def acquire_async(
        self, clock: Clock, max_wait: float, remaining: float = _INF
    ) -> _Reservation | float | None:
        """As :meth:`acquire`, asking the store from the running event loop without blocking it."""
        ask = self._ask(max_wait, remaining)
        store = self._store
        try:
            reply = None if ask.local else await store._run_script_async(ask.script, self._keys, ask.argv)
        except BaseException as error:
            self._gave_up(ask, error)
            raise
        return self._answer(clock.now(), ask, reply)

    def _ask(self, max_wait: float, remaining: float) -> _Ask:
        """What to ask the store for one permit (marked ``local`` while it is unreachable).

        A caller that may wait takes one of the ``max_waiting`` places before it asks (a ``seat``),
        so that callers asking at once (threads, tasks) never reserve more waits than that: a
        caller finding them all taken (waiting for a permit of the cluster or of the fallback,
        or asking) asks for a permit now only.
        """
        seat = False
        with self._lock:
            config, retuned = self._config, self._retuned  # one reload's: its limits, its moment
            if self._taken_locked() >= config.max_waiting and self._full_after_drops_locked():
                max_wait = 0.0
            elif max_wait > 0:
                seat = True
                self._asking += 1
        deadline_ms = -1.0 if remaining == _INF else max(0.0, remaining * 1000)  # -1: no deadline
        script, per = _script(config, _PERMIT)
        argv = (per, config.burst, max_wait * 1000, deadline_ms, _since(retuned) if retuned else 0.0)
        return _Ask(
            script, argv, max_wait, remaining, local=self._store.local_only, seat=seat, retuned=retuned
        )

    def _full_after_drops_locked(self) -> bool:
        """Under the lock, every waiting place taken: whether they still are once dropped waiters left.

        Off the path of a caller that finds a place free: :meth:`drop` leaves a waiter for the
        lock's next holder, and only a caller finding no place (or a snapshot) needs the count.
        """
        if not self._dropped:
            return True
        self._give_back_dropped_locked()
        return self._taken_locked() >= self._config.max_waiting

    def _taken_locked(self) -> int:
        """Under the lock: the ``max_waiting`` places taken (by the waiters of both, and the askers).

        The fallback's waiters are read without its lock: one that leaves meanwhile frees its place
        for the next caller; none comes meanwhile (a caller of the fallback holds its place, asking).
        """
        return self._waiting + self._asking + self._local.waiting

    def _give_back_dropped_locked(self) -> None:
        """Under the lock: give up the waiters :meth:`drop` left for the lock's next holder."""
        dropped = self._dropped
        while dropped:  # one dropped meanwhile (a collection in this very loop) is taken too
            self._abandon_locked(dropped.popleft())

    def _unseat(self, ask: _Ask) -> None:
        """Give back the waiting place ``ask`` held while the store answered (if it held one)."""
        if ask.seat:
            with self._lock:
                self._vacate(ask)

    def _vacate(self, ask: _Ask) -> None:
        """Under the lock: give back the waiting place ``ask`` holds (if it holds one)."""
        if ask.seat:
            ask.seat = False
            self._asking -= 1

    def _answer(self, now: float, ask: _Ask, reply: Any) -> _Reservation | float | None:
        """The one rule of a cluster permit, for both paths: the script's reply, or the fallback.

        ``reply`` is the script's answer (the ms to wait for the permit, ``0`` for now, ``-ms``
        refused), or the error the store raised (counted; the store is degraded, unless the
        server answered it: then it is this call's error only), or ``None`` when the store was
        not asked (degraded already). A caller answered by the fallback holds its waiting place
        until the fallback answered it (a waiter of the fallback then holds one of its own).

        A wait that ends at or after the caller's deadline, as it is once the answer arrived
        (the round trip took some of what it left when the caller asked), is refused: the
        permit the server reserved for it stays spent. A caller that may not wait (``max_wait``
        0) is never given a reservation: a wait the script answered it (a permit due within
        the clock's microsecond, rounded up to 1 ms) is its permit now.
        """
        if ask.local or isinstance(reply, BaseException):
            if isinstance(reply, BaseException):
                self._failed(reply)
            else:  # not asked: the store is away, and this call wants it back
                self._store.wanted()
            try:
                return self._fallback(now, ask.max_wait, ask.remaining)
            finally:
                self._unseat(ask)
        wait_ms = int(reply)
        late = wait_ms > 0 and ask.remaining < _INF and wait_ms / 1000 >= min(ask.remaining, time_left())
        with self._lock:
            self._vacate(ask)  # in the same step as a wait is counted: never both free at once
            if ask.retuned and ask.retuned == self._retuned:  # the script took the reload's limits
                self._retuned = 0.0
            if wait_ms < 0 or late:
                self.rejected += 1
                return abs(wait_ms) / 1000
            if wait_ms == 0 or not ask.max_wait:
                # Now, or a wait answered to a caller that may not wait (try_acquire, or every
                # waiting place taken): the script took a permit due within the clock's microsecond
                # of max_wait 0 and rounded the wait up to 1 ms. It is the caller's now: as a
                # reservation, try_acquire would refuse it (spent) and hold a waiting place for ever.
                self.admitted += 1
                return None
            self._waiting += 1
        return _Reservation(now + wait_ms / 1000)

    def _failed(self, error: BaseException) -> None:
        """Count a failed permit: an outage of the store, or an error the server answered (logged once)."""
        store = self._store
        if not store.answered(error):
            store.failed(error)
            return
        store.refused()
        with self._lock:
            first, self._warned = not self._warned, True
        if first:
            _LOG.warning(
                "shared store %r refused rate limiter key %r (%s: %s): its calls take store_fallback",
                store.namespace,
                key_attribute(self._key),  # a long one cut, as a resilience.key is
                type(error).__name__,
                error,
            )

    def _fallback(self, now: float, max_wait: float, remaining: float) -> _Reservation | float | None:
        """The answer of ``store_fallback`` while the store is unreachable (or refused the call)."""
        fallback = self._config.store_fallback
        with self._lock:
            if fallback == "open":
                self.admitted += 1
                self.fallback_admitted += 1
                next(self._store._fallbacks)
                return None
            if fallback == "closed":
                self.rejected += 1
                return 1 / self._config.rate
        return self._local.acquire(now, max_wait, remaining)

    def _gave_up(self, ask: _Ask, error: BaseException) -> None:
        """End ``ask``, whose round trip raised ``error``: give back the waiting place it held.

        The one rule of both paths: a caller cancelled (or, in a thread, interrupted, or ended by
        its deadline: :meth:`_round_trip`) while the store answered counts in ``cancelled``, and
        its permit, if the server took one, stays spent; an error of the store's own code
        (raised, not answered) counts nothing. A caller
        whose coroutine is being closed (a task its closed loop left pending, freed by the garbage
        collector on whichever thread allocates, maybe one that holds this lock) never blocks on
        the lock (:func:`~otel_resilience.engine.closing.give_back`).
        """
        give_back(self._lock, self._give_up, ask, error)

    def _give_up(self, ask: _Ask, error: BaseException) -> None:
        """:meth:`_gave_up`, taking the lock."""
        with self._lock:
            self._vacate(ask)
            if not isinstance(error, Exception) or isinstance(error, WaitDeadlineReachedError):
                self.cancelled += 1

    def claim(self, reservation: _Reservation) -> None:
        """Record that a waiter took its reserved permit."""
        if reservation in self._local._pending:
            self._local.claim(reservation)
            return
        with self._lock:
            reservation.held = False
            self._waiting -= 1
            self.waited += 1
            self.admitted += 1

    def drop(self, reservation: _Reservation, now: float) -> None:
        """:meth:`abandon` for a waiter whose coroutine is being closed: never blocks on a lock.

        The garbage collector closes a task's coroutine left pending when its loop closed on
        whichever thread allocates: maybe one holding the lock here (a caller asking for a
        permit) or the fallback's. A reservation of the local fallback is its rules' to drop
        (:meth:`_Rules.drop`); a cluster permit's waiter is given up now if the lock is free,
        else queued (a ``deque`` append takes no lock) for the lock's next holder that needs
        the waiting count (:meth:`_full_after_drops_locked`, :meth:`snapshot`).
        """
        if reservation in self._local._pending:
            self._local.drop(reservation, now)
            return
        lock = self._lock
        if lock.acquire(blocking=False):
            try:
                self._abandon_locked(reservation)
            finally:
                lock.release()
        else:
            self._dropped.append(reservation)

    def abandon(self, reservation: _Reservation, now: float) -> None:
        """A waiter gave up: its cluster permit stays spent (the cluster never admits more)."""
        if reservation in self._local._pending:
            self._local.abandon(reservation, now)
            return
        with self._lock:
            self._abandon_locked(reservation)

    def _abandon_locked(self, reservation: _Reservation) -> None:
        """:meth:`abandon` of a cluster permit's waiter, under the lock (nothing for one claimed or gone)."""
        if not reservation.held:
            return
        reservation.held = False
        self._waiting -= 1
        self.cancelled += 1

    def retune(self, config: RateLimiterConfig, now: float) -> bool:
        """Take ``config``'s limits (the same algorithm and store only); ``False`` otherwise.

        The cluster's permits used are kept: its next permit is asked with the new limits, and
        the script carries its bucket over to them (:data:`~otel_resilience.store.scripts.TOKEN_BUCKET`:
        tokens kept, at most the new burst; a debt still ends when it did) as of now, this
        reload's moment (:attr:`_retuned`, which the asks pass as the ms since: no round trip
        here), as :meth:`~otel_resilience.patterns.rate_limiter.rules._Rules.retune` does a local
        bucket's; a sliding log's admissions are judged over the new window, as a local log's are,
        but for those its old window had left by now: forgotten (:func:`_reloaded`).
        The fallback's rules are retuned, not made again: a reload during an outage keeps their
        permits used and their waiters (whose permits are then taken from them), with no new burst.
        """
        if config.algorithm != self._config.algorithm or config.store is not self._store:
            return False
        self._local.retune(config.local_share(), now)  # the same algorithm, no store: always taken
        with self._lock:
            was, self._config = self._config, config
            if (config.rate, config.burst) != (was.rate, was.burst):
                self._retuned = _reloaded(was)
        return True

    def available(self, now: float) -> float:
        """Permits that could be taken now: the cluster's, read from the store (the fallback's while away).

        One round trip in this thread, bounded as a permit's (:meth:`_round_trip`: the store's
        ``timeout``, and the caller's deadline), that takes nothing. A read that fails counts as
        a permit that failed (:meth:`_failed`: the store degrades, or the server refused the
        key), and the fallback's figure answers it, as the fallback answers the calls meanwhile.
        (:meth:`snapshot`, which a metrics collection reads, asks the store nothing: its
        ``available`` is the fallback's.)

        Raises:
            WaitDeadlineReachedError: The caller's deadline came before the store's answer.
        """
        if not self._store.local_only:
            with self._lock:
                config, retuned = self._config, self._retuned
            script, per = _script(config, _READ)
            since = _since(retuned) if retuned else 0.0  # the read writes nothing: the stamp stays
            ask = _Ask(script, (per, config.burst, 0.0, -1.0, since), 0.0, _INF, local=False)
            reply = self._round_trip(ask, time_left())
            if not isinstance(reply, BaseException):
                return float(reply)
            self._failed(reply)
        return self._local.available(now)

    def snapshot(self, name: str, now: float) -> RateLimiterStatsDict:
        """Return this replica's counts (as a local limiter's ``get_stats``), fallback included."""
        stats = self._local.snapshot(name, now)
        stats["rate"], stats["burst"] = self._config.rate, self._config.burst
        with self._lock:
            self._give_back_dropped_locked()
            for field in _COUNTS:
                stats[field] += getattr(self, field)
            stats["waiting"] += self._waiting
        return stats
