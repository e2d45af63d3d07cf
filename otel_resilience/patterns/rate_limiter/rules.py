"""The rate limiter's sans-I/O rules: permits, reservations and counts, behind one lock.

A :class:`_Rules` object answers one question, atomically: may a caller that arrives at ``now``
take a permit? It takes one now, or *reserves* the next permit that will be due (the caller then
waits until then, and :meth:`_Rules.claim` records it), or refuses and says when the next permit
is due. It never reads a clock (every method takes ``now``) and never sleeps: the step
(:mod:`.step`) reads the clock and the engine's drivers wait.

Reservations are FIFO: a reservation takes the next permit *after* every earlier one, so the
algorithm's state runs ahead of time (the token bucket goes into debt, the sliding log holds
future times) and a newcomer never overtakes a waiter. A cancelled waiter gives its reservation
back (:meth:`_Rules.abandon`): the latest reservation is rolled back exactly (as if never made);
an earlier one is left in place as a *hole* that the next caller who would wait takes over, so
it waits only until that permit's time. The waiters behind it keep their times, so nobody waits
longer for it. A hole whose time passed with nobody taking it over *lapses* (``_lapsed_locked``):
forgotten, and what the algorithm keeps of it is settled as the algorithm's rule says.

Two algorithms share that frame, each with four operations under the lock: when is the next
permit due (``_due_locked``), take it (``_take_locked``), give the latest back
(``_give_back_locked``), settle a lapsed hole (``_lapsed_locked``):

* :class:`_TokenBucket`: ``tokens`` (a float, negative in debt) refilled at ``rate`` per second
  up to ``burst``; a permit is due when one whole token is there, give or take
  :data:`_TOKEN_ROUNDING` (the rounding of a refill ``(now - stamp) * rate``: after ``1 / 7`` s
  at 7 per second the bucket holds ``0.9999999999999996``, and a caller back at its
  ``retry_after``, or one paced at exactly the rate, must find its permit; a refusal names the
  first reading whose refill gives the token: :meth:`_TokenBucket._retry_after_locked`). Exact
  on a frozen clock: each permit subtracts exactly ``1.0``. A lapsed hole's token stays spent.
* :class:`_SlidingLog`: the sorted times of the last admissions (past ones and reserved future
  ones); a permit is due at ``log[-burst] + burst / rate`` (and not before the latest
  reservation: after a reload to a larger burst or a higher rate), so no window of that length
  ever holds more than ``burst``. The log forgets entries older than the window, and only
  those: a reload to a smaller burst keeps the admissions still in the window (a reload back to
  a larger burst counts them), and a rolled-back reservation never loses the entry that becomes
  ``log[-burst]`` again. A lapsed hole's entry leaves the log: nobody was
  admitted then.

Both round a permit's time the same way (:func:`_due_after`): at a rate beyond the clock's
resolution, a permit not free now is due at the clock's next reading, never now.
"""

from __future__ import annotations

import abc
import math
import threading
from collections import deque
from typing import TYPE_CHECKING, Final, Protocol, TypedDict

from otel_resilience.engine.forking import fork_safe

if TYPE_CHECKING:
    from collections.abc import Callable

    from otel_resilience.engine.clock import Clock
    from otel_resilience.patterns.rate_limiter.config import RateLimiterConfig

__all__ = ["RateLimiterStatsDict", "RemoteRules"]

_INF: Final = math.inf
_TOKEN_ROUNDING: Final = 1e-9
"""How far below a whole token a token bucket still counts one: the floating-point rounding of its
refills (a few units in the last place), never a share of a permit that matters."""
_WHOLE_TOKEN: Final = 1.0 - _TOKEN_ROUNDING


class RateLimiterStatsDict(TypedDict):
    """The snapshot returned by :meth:`RateLimiter.get_stats`."""

    name: str
    algorithm: str
    rate: float
    burst: int
    admitted: int
    rejected: int
    waited: int
    cancelled: int
    waiting: int
    available: float


class _Reservation:
    """A permit reserved for time :attr:`due`; :attr:`held` while a waiter holds it (no hole, not claimed).

    :attr:`dropped` marks one :meth:`_Rules.drop` left for the next holder of the lock to give back
    (cleared when it is given back: the hole it leaves may be another waiter's reservation next).
    """

    __slots__ = ("dropped", "due", "held", "prior")

    prior: tuple[float, float]
    """A token bucket's reservation: the bucket as it was just before it, ``(time, tokens)`` (see
    :meth:`_TokenBucket._reserve_locked`); unset in the others."""

    def __init__(self, due: float) -> None:
        self.due = due
        self.held = True
        self.dropped = False


class _Rules(abc.ABC):
    """Permits and reservations of one rate limiter, with exact counts, behind one lock.

    Attributes:
        rate: Permits per second.
        burst: The most permits at once (or per window).
        max_wait: The longest a caller may wait for a permit, in seconds.
        max_waiting: The most callers waiting at once.
        admitted: Permits taken (at once or after a wait).
        rejected: Requests refused (by a call or by ``try_acquire``).
        waited: Permits taken after a wait (part of ``admitted``).
        cancelled: Waiters that gave their reservation back.
        waiting: Callers waiting now.
    """

    __slots__ = (
        "_dropped",
        "_holes",
        "_lock",
        "_now",
        "_pending",
        "admitted",
        "burst",
        "cancelled",
        "max_wait",
        "max_waiting",
        "rate",
        "rejected",
        "waited",
        "waiting",
    )

    algorithm: str

    def __init__(self, config: RateLimiterConfig) -> None:
        self.rate = config.rate
        self.burst = config.burst
        self.max_wait = config.max_wait
        self.max_waiting = config.max_waiting
        self.admitted = self.rejected = self.waited = self.cancelled = self.waiting = 0
        self._lock = fork_safe(threading.Lock())
        self._now = -_INF
        self._pending: deque[_Reservation] = deque()
        """Outstanding reservations (held, or holes), in the order of their times."""
        self._holes = 0
        self._dropped = False
        """Whether :meth:`drop` marked a reservation ``dropped`` for the lock's next holder."""

    def acquire(self, now: float, max_wait: float, remaining: float = _INF) -> _Reservation | float | None:
        """Take a permit now, or reserve the next one due, or refuse.

        Args:
            now: The time of the request (a clock reading; an earlier one than already seen
                counts as the latest seen).
            max_wait: The longest the caller may wait (``0.0`` for a permit now or nothing).
            remaining: Seconds before the caller's deadline: a permit due then or later is refused.

        Returns:
            ``None``: a permit was taken now. A :class:`_Reservation`: the caller waits until its
            ``due`` time, then calls :meth:`claim` (or :meth:`abandon` if it gives up). A
            ``float``: refused; the seconds until the next permit is due.
        """
        lock = self._lock
        lock.acquire()  # not `with`: this runs on every call, and `with` costs more
        try:
            if now < self._now:  # noqa: PLR1730 - on every call: a compare, not a call
                now = self._now
            self._now = now
            if self._holes:
                hole = self._hole_locked(now)
                if hole is not None:
                    return self._take_hole_locked(hole, now, max_wait, remaining)
            due = self._due_locked(now)
            if due <= now:
                self._take_locked(now)
                self.admitted += 1
                return None
            if self._dropped:  # given back first, then asked again (off the path of a permit now)
                self._give_back_dropped_locked(now)
            else:
                if self._refuses_locked(due, now, max_wait, remaining):
                    self.rejected += 1
                    return self._retry_after_locked(due, now)
                reservation = self._reserve_locked(due, now)
                self._pending.append(reservation)
                self.waiting += 1
                return reservation
        finally:
            lock.release()
        return self.acquire(now, max_wait, remaining)

    def claim(self, reservation: _Reservation) -> None:
        """Record that a waiter took its reserved permit (its time has come)."""
        with self._lock:
            self._pending.remove(reservation)
            reservation.held = False
            self.waiting -= 1
            self.waited += 1
            self.admitted += 1

    def abandon(self, reservation: _Reservation, now: float) -> None:
        """Give back the reservation of a waiter that gave up (cancelled) before its time.

        The latest reservations, once holes, are rolled back; an earlier one stays a hole for
        the next caller who would wait, until its time passes (then it lapses:
        :meth:`_hole_locked`). Nothing happens for a reservation already claimed (an interrupt
        just after the claim).
        """
        with self._lock:
            self._abandon_locked(reservation, now)

    def drop(self, reservation: _Reservation, now: float) -> None:
        """:meth:`abandon` for a waiter whose coroutine is being closed: never blocks on the lock.

        A task left pending when its event loop closed is freed by the garbage collector, which
        closes its coroutine on whichever thread allocates: maybe one that holds this lock (a
        caller reserving a permit here), which a second acquisition would deadlock. The lock
        is only tried: when it is held, the reservation is given back by the next caller that
        takes it and finds no permit free now (before it is answered), or reads the counts.
        """
        lock = self._lock
        if lock.acquire(blocking=False):
            try:
                self._abandon_locked(reservation, now)
            finally:
                lock.release()
        else:  # two plain stores, in this order: a holder that clears the flag first still finds the mark
            reservation.dropped = True
            self._dropped = True

    def _give_back_dropped_locked(self, now: float) -> None:
        """Give back the reservations :meth:`drop` marked for the lock's next holder, if any."""
        if not self._dropped:
            return
        self._dropped = False  # before the look: a mark made meanwhile sets it again
        for reservation in [r for r in self._pending if r.dropped]:
            self._abandon_locked(reservation, now)  # a no-op for one given back already

    def _abandon_locked(self, reservation: _Reservation, now: float) -> None:
        """:meth:`abandon`, under the lock."""
        if not reservation.held:
            return
        now = max(now, self._now)
        self._now = now
        reservation.held = False
        reservation.dropped = False  # given back: a hole the next waiter may take over, unmarked
        self.waiting -= 1
        self.cancelled += 1
        self._holes += 1
        pending = self._pending
        while pending and not pending[-1].held and pending[-1].due > now:
            self._holes -= 1
            self._give_back_locked(pending.pop(), now)

    def _hole_locked(self, now: float) -> _Reservation | None:
        """Return the earliest hole not yet past (those past lapse: :meth:`_lapsed_locked`), or ``None``.

        Called before the state is brought up to ``now`` (:meth:`_due_locked`,
        :meth:`_available_locked`): by :meth:`acquire`, and by :meth:`_settle_locked` for the
        others, so that a lapsed hole is settled before the window forgets anything at ``now``.
        """
        pending = self._pending
        for reservation in list(pending):
            if reservation.held:
                continue
            if reservation.due >= now:
                return reservation
            pending.remove(reservation)  # its time passed unused: nobody takes that permit now
            self._holes -= 1
            self._lapsed_locked(reservation)
        return None

    def _settle_locked(self, now: float) -> None:
        """Bring the reservations up to ``now`` for a read or a reload (not a request: :meth:`acquire`).

        The reservations :meth:`drop` marked are given back, then the holes whose time passed lapse.
        """
        self._give_back_dropped_locked(now)
        if self._holes:
            self._hole_locked(now)

    def _take_hole_locked(
        self, hole: _Reservation, now: float, max_wait: float, remaining: float
    ) -> _Reservation | float | None:
        """Give a caller the hole's permit: now if it is due, else as its reservation, or refuse."""
        due = hole.due
        if due <= now:
            self._pending.remove(hole)
            self._holes -= 1
            self.admitted += 1
            return None
        if self._refuses_locked(due, now, max_wait, remaining):
            self.rejected += 1
            return due - now
        hole.held = True
        self._holes -= 1
        self.waiting += 1
        return hole

    def _refuses_locked(self, due: float, now: float, max_wait: float, remaining: float) -> bool:
        """Whether a caller at ``now`` may not wait for the permit due at ``due`` (the one rule of a wait).

        Refused when the permit is due later than ``max_wait`` from now, or not before the
        caller's deadline (``remaining`` seconds away), or when ``max_waiting`` callers wait
        already. ``max_wait`` is compared as a time, ``now + max_wait``: a permit due exactly
        that long after now was computed as ``now + max_wait`` too (``1 / rate`` later, say),
        the same float, where the difference ``due - now`` carries the rounding of the clock's
        reading (``1000.1 - 1000.0`` is ``0.10000000000002274``) and would refuse it at most
        readings. And to the clock's step: a caller who may wait (``max_wait > 0``) may wait
        for a permit due at the reading after ``now + max_wait``. The time of a permit rounds
        to that step (``1.2e-10`` s at ``1e6``, a monotonic clock 12 days after boot): a waiter
        woken at its permit's rounded time took its token up to half a step early, which the
        token bucket's debt keeps, so the permit after it is due a step after ``now + 1 / rate``
        at most readings there. A caller that may not wait is never given a reservation.
        """
        if due > now + max_wait and (not max_wait or due > math.nextafter(now + max_wait, _INF)):
            return True
        return due - now >= remaining or self.waiting >= self.max_waiting

    def retune(self, config: RateLimiterConfig, now: float) -> bool:
        """Take ``config``'s rate, burst and waiting limits at ``now``, keeping the permits used.

        The state is brought up to ``now`` at the old rate first; then the token bucket keeps
        its tokens (at most the new ``burst``: a reload never hands out a free burst) and the
        sliding log its admissions (judged over the new window). Reservations keep their times,
        and stay first: the next permit is not due before the latest reservation's, and the
        token bucket's debt ends at that time whatever the new rate (a debt repaid faster at a
        higher rate would let a newcomer overtake the waiters; at a lower one, it would charge
        their permits again at the new rate).

        Returns:
            ``False`` (and nothing changes) when ``config`` names another algorithm, or a shared
            store (its permits are the cluster's: the owner makes a limiter on it).
        """
        if config.algorithm != self.algorithm or config.store is not None:
            return False
        with self._lock:
            now = max(now, self._now)
            self._now = now
            self._settle_locked(now)
            self._due_locked(now)
            self._retuned_locked(config, now)
            self.rate = config.rate
            self.burst = config.burst
            self.max_wait = config.max_wait
            self.max_waiting = config.max_waiting
        return True

    def available(self, now: float) -> float:
        """Return the permits available at ``now`` (negative: reserved ahead of time)."""
        with self._lock:
            now = max(now, self._now)
            self._now = now
            self._settle_locked(now)
            return self._available_locked(now)

    def snapshot(self, name: str, now: float) -> RateLimiterStatsDict:
        """Return every count, read under the lock so that they add up."""
        with self._lock:
            now = max(now, self._now)
            self._now = now
            self._settle_locked(now)
            return {
                "name": name,
                "algorithm": self.algorithm,
                "rate": self.rate,
                "burst": self.burst,
                "admitted": self.admitted,
                "rejected": self.rejected,
                "waited": self.waited,
                "cancelled": self.cancelled,
                "waiting": self.waiting,
                "available": self._available_locked(now),
            }

    @abc.abstractmethod
    def _due_locked(self, now: float) -> float:
        """Return when the next permit is due (``<= now``: at once), bringing the state up to ``now``."""

    def _retry_after_locked(self, due: float, now: float) -> float:
        """Return a refused caller's ``retry_after``: the seconds to a reading that finds the ``due`` permit.

        Called by :meth:`acquire` on a refusal, right after :meth:`_due_locked` brought the state
        to ``now``. The seconds to ``due`` (:func:`_seconds_until`) unless the algorithm's
        arithmetic says otherwise (:meth:`_TokenBucket._retry_after_locked`).
        """
        return _seconds_until(due, now)

    @abc.abstractmethod
    def _take_locked(self, at: float) -> None:
        """Take the next permit, used at time ``at`` (now, or its due time when reserved)."""

    def _reserve_locked(self, due: float, now: float) -> _Reservation:  # noqa: ARG002 - the bucket's
        """Take the permit due at ``due`` for a caller at ``now`` who waits for it; return its reservation."""
        self._take_locked(due)
        return _Reservation(due)

    @abc.abstractmethod
    def _give_back_locked(self, reservation: _Reservation, now: float) -> None:
        """Undo the latest reservation taken (``reservation``, still in the future), at ``now``.

        Called once it has left the pending ones: the next permit is then due as if it had never
        been made.
        """

    @abc.abstractmethod
    def _lapsed_locked(self, reservation: _Reservation) -> None:
        """Settle ``reservation``, a hole whose time passed with nobody taking it over.

        Called once it has left the pending ones, before the state is brought to the time that
        found it lapsed (see :meth:`_hole_locked`). Not a rollback: the reservations after it
        keep their times.
        """

    @abc.abstractmethod
    def _available_locked(self, now: float) -> float:
        """Return the permits available at ``now`` (negative: reserved ahead)."""

    @abc.abstractmethod
    def _retuned_locked(self, config: RateLimiterConfig, now: float) -> None:
        """Adjust the algorithm's own state, up to ``now``, to ``config``'s limits.

        Called by :meth:`retune` once the state is brought up to ``now``, and before it sets the
        new limits: the old ones are still the attributes.
        """


class _TokenBucket(_Rules):
    """``burst`` tokens refilled at ``rate`` per second; one per permit; debt for reservations."""

    __slots__ = ("_stamp", "tokens")

    algorithm = "token_bucket"

    def __init__(self, config: RateLimiterConfig) -> None:
        super().__init__(config)
        self.tokens = float(self.burst)
        """Tokens at :attr:`_stamp`: at most ``burst``, negative while permits are reserved ahead."""
        self._stamp = -_INF

    def _due_locked(self, now: float) -> float:
        stamp = self._stamp
        if now > stamp:
            self._stamp = now
            if stamp != -_INF:
                tokens = self.tokens + (now - stamp) * self.rate
                self.tokens = tokens if tokens < self.burst else float(self.burst)
        tokens = self.tokens
        if tokens >= _WHOLE_TOKEN:
            return now
        return _due_after(now + (1.0 - tokens) / self.rate, now)

    def _take_locked(self, at: float) -> None:  # noqa: ARG002 - the debt says when
        self.tokens -= 1.0

    def _retry_after_locked(self, due: float, now: float) -> float:
        """Return the seconds from ``now`` to the first reading, ``due`` or later, whose refill gives a token.

        ``due``, ``now + (1 - tokens) / rate``, is rounded to the clock's step at ``now``: down
        by up to half of it, whose refill is short of the token by up to half a step times
        ``rate`` (``6e-9`` at ``1e6`` s, a monotonic clock 12 days after boot, and 100 permits a
        second), more than :data:`_TOKEN_ROUNDING`: a caller back then would be refused again,
        told to wait ``1.5e-11`` s. So the time is taken up reading by reading (a step or two,
        on a refusal only) until the refill :meth:`_due_locked` will compute there (the same
        expression, from the same stamp, ``now``) gives the token. A waiter's reservation needs
        no such step: its permit is taken from the debt at its time, no refill is asked for.
        """
        tokens, rate = self.tokens, self.rate  # as _due_locked left them, at now
        while tokens + (due - now) * rate < _WHOLE_TOKEN:
            due = math.nextafter(due, _INF)
        return due - now

    def _reserve_locked(self, due: float, now: float) -> _Reservation:
        reservation = _Reservation(due)
        reservation.prior = (now, self.tokens)  # _due_locked brought the bucket to now
        self.tokens -= 1.0
        return reservation

    def _give_back_locked(self, reservation: _Reservation, now: float) -> None:
        """Put the bucket back as it was just before ``reservation``, refilled up to ``now``."""
        self._due_locked(now)  # its stamp: now
        at, tokens = reservation.prior
        tokens += (now - at) * self.rate
        self.tokens = tokens if tokens < self.burst else float(self.burst)

    def _lapsed_locked(self, reservation: _Reservation) -> None:
        """Nothing: the lapsed hole's token stays spent.

        Its time is past, and so is the refill that paid for it: given back now, the token
        would be added to a bucket that may have filled since, over its size (a bucket of 1
        with a lapsed hole at 1.0, read at 1.9, holds 0.9 tokens: 1.9 with it, admitting at 1.9
        and again at 2.0).
        """

    def _available_locked(self, now: float) -> float:
        self._due_locked(now)
        return self.tokens

    def _retuned_locked(self, config: RateLimiterConfig, now: float) -> None:
        """Keep the tokens (at most the new ``burst``) and the reservations' times, at the new rate.

        Across a reload the reservations' times are what holds, not the tokens they took at the
        old rate: keeping those tokens at a higher rate would let a newcomer overtake the
        waiters, at a lower one charge their permits again. So the debt lasts until the latest
        reservation ahead (:func:`_owed`); and each reservation ahead keeps, as the bucket before
        it (what its rollback restores), the debt until the one before it if that one is ahead
        too, else the bucket before it brought up to ``now`` at the old rate, refilled at the
        new one from then on. A rollback then gives back exactly what the reservation took at
        the new rate: the next permit is one interval of it after the permit before.
        """
        rate, before = config.rate, None
        for reservation in self._pending:
            if reservation.due > now:
                if before is not None and before.due > now:
                    reservation.prior = (now, _owed(before.due, now, rate))
                else:
                    at, tokens = reservation.prior
                    reservation.prior = (now, tokens + (now - at) * self.rate)
            before = reservation
        tokens = self.tokens if before is None or before.due <= now else _owed(before.due, now, rate)
        self.tokens = tokens if tokens < config.burst else float(config.burst)


def _due_after(due: float, start: float) -> float:
    """Return ``due``, the end of a wait begun at ``start``, or the clock's next reading after ``start``.

    The one rule of a rate beyond the clock's resolution: a wait shorter than the clock's step at
    ``start`` (a token bucket's ``(1 - tokens) / rate`` from now, a sliding log's window from an
    admission) rounds ``start + wait`` to ``start``; it then ends at the next reading, never at
    ``start``, or one instant would admit past ``burst``.
    """
    return due if due > start else math.nextafter(start, _INF)


def _seconds_until(due: float, now: float) -> float:
    """Return a refused caller's wait: the seconds from ``now`` to the first reading ``now + seconds >= due``.

    The one rule of a ``retry_after``: a caller back then finds the permit due at ``due`` (unless
    others took it first). ``due - now`` rounds, and ``now + (due - now)`` may fall a step short
    of ``due`` (``0.8 + (3.3333333333333335 - 0.8)`` is ``3.333333333333333``: a sliding window
    of 0.3 per second would refuse that caller again, for ``4.4e-16`` s); then the seconds are
    taken up to the first that reaches it (a step or two, on a refusal only).
    """
    seconds = due - now
    while now + seconds < due:
        seconds = math.nextafter(seconds, _INF)
    return seconds


def _owed(due: float, now: float, rate: float) -> float:
    """The tokens at ``now`` of a bucket refilled at ``rate`` whose debt lasts exactly until ``due``.

    The one rule of the debt across a reload: the reservations' times hold (see
    :meth:`_TokenBucket._retuned_locked`).
    """
    return (now - due) * rate


class _SlidingLog(_Rules):
    """The sorted times of the latest admissions; at most ``burst`` in any ``burst / rate`` seconds."""

    __slots__ = ("_log", "_window")

    algorithm = "sliding_window"

    def __init__(self, config: RateLimiterConfig) -> None:
        super().__init__(config)
        self._window = config.window
        self._log: deque[float] = deque()

    def _forget_locked(self, now: float) -> None:
        """Drop entries no window from ``now`` on contains: only time lets an admission go.

        An entry at ``t`` leaves at ``t + window``, or, when that rounds to ``t`` (a window below
        the clock's step at ``t``), at the next reading after ``t`` (:func:`_due_after`): never
        at the reading that took it. So an entry still here is due to leave after ``now``. The
        log holds more than ``burst`` entries (plus the reservations) only after a reload to a
        smaller burst: those admissions are still in the window, and a reload back to a larger
        burst counts them (dropped, it would hand out free permits).
        """
        log, window = self._log, self._window
        while log and log[0] + window <= now and log[0] < now:
            log.popleft()

    def _due_locked(self, now: float) -> float:
        self._forget_locked(now)
        log = self._log
        pending = self._pending
        if len(log) < self.burst:
            if pending and pending[-1].due > now:
                # FIFO: never before the latest reservation, which a reload to a larger burst or
                # a shorter window would allow (the log then stays sorted, as its reads assume).
                return pending[-1].due
            return now
        oldest = log[-self.burst]  # still in the window: it leaves after now
        due = _due_after(oldest + self._window, oldest)
        return pending[-1].due if pending and pending[-1].due > due else due

    def _take_locked(self, at: float) -> None:
        self._log.append(at)

    def _give_back_locked(self, reservation: _Reservation, now: float) -> None:  # noqa: ARG002 - a log of times
        self._log.pop()

    def _lapsed_locked(self, reservation: _Reservation) -> None:
        """Remove the lapsed hole's entry from the log: nobody was admitted at its time.

        Kept, it would count as an admission in every window holding its time, and refuse
        callers for a window that has room. Any entry at its time will do (equal times are one
        admission each, and the log is sorted); none is left when the window forgot those
        already: nothing to remove then.
        """
        log = self._log
        if reservation.due in log:
            log.remove(reservation.due)

    def _available_locked(self, now: float) -> float:
        """``burst`` minus the admissions in the window; negative only for the permits reserved ahead.

        After a reload to a smaller burst the window may hold more admissions than ``burst``:
        none is available then, never fewer.
        """
        self._forget_locked(now)
        return float(self.burst - min(len(self._log), self.burst + len(self._pending)))

    def _retuned_locked(self, config: RateLimiterConfig, now: float) -> None:  # noqa: ARG002 - a log of times
        self._window = config.window


class RemoteRules(Protocol):
    """What a limiter's rules kept in a shared store add to :class:`_Rules`: an ask from the event loop."""

    def acquire_sync(
        self, now: Callable[[], float], max_wait: float, remaining: float = _INF
    ) -> _Reservation | float | None:
        """As :meth:`_Rules.acquire` at ``now()`` read once the store answered, in this thread.

        An interrupt meanwhile is counted in ``cancelled``, then raised; so is the caller's
        deadline, which ends the wait for the store's answer (a ``WaitDeadlineReachedError``).
        """

    async def acquire_async(
        self, clock: Clock, max_wait: float, remaining: float = _INF
    ) -> _Reservation | float | None:
        """As :meth:`_Rules.acquire` at ``clock.now()`` once the store answered, awaited on the loop.

        A cancellation meanwhile is counted in ``cancelled``, then raised.
        """


def new_rules(config: RateLimiterConfig) -> _Rules:
    """Return the rules of ``config.algorithm``."""
    return _SlidingLog(config) if config.algorithm == "sliding_window" else _TokenBucket(config)
