"""The retry budget: a cap on the extra load retries add, shared by many retries.

A :class:`RetryBudget` is a token bucket over a sliding window, as Finagle's ``RetryBudget``,
gRPC's retry throttling and failsafe-go's budget: first attempts earn retries, retries spend
them, and a floor lets low traffic retry at all. It is the one object that stops a *retry
storm*: when a dependency fails for everyone, per-call ``max_attempts`` still multiplies its load
(three attempts each is three times the traffic, on a dependency that is already down), while a
budget shared by every caller keeps the total near ``(1 + ratio)`` times the first attempts.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Final, cast

from otel_resilience.engine.clock import Clock, check_clock, follow_process_clock
from otel_resilience.engine.closing import give_back
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.rounding import ceil_whole
from otel_resilience.engine.sliding import SlidingCounts, check_bucket_width
from otel_resilience.engine.validation import MAX_COUNT, check_duration, check_number, fail

__all__ = ["RetryBudget"]

_OWNER: Final = "RetryBudget"
BUDGET_BUCKETS: Final = 10
"""How many buckets a budget's window is divided in: it slides by tenths of ``window``."""


class RetryBudget:
    """A budget of retries shared by many retry policies: at most ``ratio`` extra load, plus a floor.

    Give the same instance to every :class:`~otel_resilience.patterns.retry.RetryPolicy` whose retries
    should share it (``RetryPolicy(budget=budget)``): one per process, or one per dependency.
    It is thread-safe and task-safe (a short lock per operation; nothing in it awaits).

    **The accounting.** Over a sliding window of ``window`` seconds the budget counts the
    executions' first attempts (``first_attempts``: each execution of a retry with this budget
    deposits one when it starts) and the retries it allowed (``retries``). A retry is allowed,
    and counted, if and only if::

        retries < ratio * first_attempts + min_retries_per_second * window

    (as the numbers read: ``ratio=0.07`` and 100 first attempts allow 7, though ``0.07 * 100``
    is ``7.000000000000001`` in floating point); otherwise it is *denied*: the retry gives up at
    once with the error it holds (or returns the last result, when a result was retried), a note
    saying the budget stopped it, and stop reason ``"budget"``. A denied retry spends nothing.
    So the retries a window counts are at most ``ratio`` times its first attempts plus the floor
    ``min_retries_per_second * window`` (the allowance that lets a quiet service, a few calls a
    minute, retry at all), rounded up to a whole retry: ``ratio=0.2`` and 10 first attempts allow
    2 retries (the bound reached), ``ratio=0.25`` and 6 allow 2 (1.5 rounded up). With the
    defaults (``ratio=0.1``, ``min_retries_per_second=10``, ``window=10``) a dependency that fails
    every call receives at most 1.1 times the first attempts, plus 100 retries per window (the
    sum rounded up).

    **The window** is divided in :data:`BUDGET_BUCKETS` buckets of ``window / 10`` seconds and
    slides by whole buckets: it holds between 9/10 of ``window`` and ``window`` of history. A
    deposit or a withdrawal costs O(1) (amortised: each bucket is opened once and expired once)
    and the memory is a fixed 10 buckets, never O(calls).

    Args:
        ratio: Retries allowed per first attempt in the window, finite and ``>= 0`` (0.1: retries
            add at most 10 % load). Default: 0.1.
        min_retries_per_second: The floor, retries per second always allowed whatever the
            traffic, finite and ``>= 0``. Default: 10.0.
        window: The window's length, seconds (or a ``timedelta``), at least 10 microseconds (a
            microsecond per bucket). Default: 10.0 s.
        clock: The time source of the window. Default: the process-wide clock, the process-wide
            manager's (the system clock, or the clock of a
            :func:`~otel_resilience.testing.fresh_defaults` block), followed as it changes: a
            budget made at import counts a test's window on its block's ``FakeClock``, which
            ``advance`` refills. When that clock changes the window starts afresh (the times it
            holds are on the clock before, and mean nothing on the new one); ``denied`` goes on.
            A budget given a clock keeps it, and its window, whatever the process-wide clock.

    Raises:
        ValueError: A value breaks its rule (the message names ``RetryBudget.<field>``).
        TypeError: A value has the wrong type.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_counts",
        "_denied",
        "_follows",
        "_lock",
        "_min_per_second",
        "_ratio",
        "_reserve",
        "_shift",
        "_window",
    )

    def __init__(
        self,
        ratio: float = 0.1,
        min_retries_per_second: float = 10.0,
        window: float | timedelta = 10.0,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._ratio = check_number(_OWNER, "ratio", ratio, minimum=0.0)
        self._min_per_second = check_number(
            _OWNER, "min_retries_per_second", min_retries_per_second, minimum=0.0
        )
        self._window = check_duration(_OWNER, "window", window)
        check_bucket_width(_OWNER, "window", self._window, BUDGET_BUCKETS)
        if clock is not None:
            self._clock = check_clock(_OWNER, clock)
        self._reserve = self._min_per_second * self._window
        self._lock = fork_safe(threading.Lock())
        self._counts = SlidingCounts(self._window, BUDGET_BUCKETS)
        """Every execution's first attempt and every retry allowed, in the window; mark a: a retry."""
        self._denied = 0
        self._shift = 0
        """Added to a bucket's number to make its receipt: raised as the clock changes (_follow_clock)."""
        self._follows = clock is None
        if clock is None:  # on the process-wide clock, moved to each new one (_follow_clock)
            follow_process_clock(self._run_on)

    ratio = ReadOnly[float]("_ratio", "Retries allowed per first attempt in the window.")

    min_retries_per_second = ReadOnly[float](
        "_min_per_second", "The floor: retries per second allowed whatever the traffic."
    )

    window = ReadOnly[float]("_window", "The window's length in seconds.")

    clock = ReadOnly[Clock](
        "_clock", "The window's time source now (the process-wide clock, for a budget given none)."
    )

    def _run_on(self, clock: Clock) -> RetryBudget:
        """Count on ``clock``, the process-wide clock, from the start.

        Called by :func:`~otel_resilience.engine.clock.follow_process_clock` under the lock that
        moves the followers: the budget is told of every later clock.
        """
        self._clock = clock
        return self

    def _follow_clock(self, clock: Clock) -> None:
        """Count on ``clock`` from now on, in a fresh window: the times of this one are on the clock before.

        Told by :func:`~otel_resilience.engine.clock.set_process_clock`. The clock and the window
        change together under the lock, under which every operation reads the time: none counts
        a time of the clock before in the new window (there, as the newest bucket, it would hold
        every later retry until the new clock passed it). ``denied`` goes on.

        Receipts (:meth:`withdraw`) of the window before stay outstanding: the buckets of the
        new one are numbered on from them (:attr:`_shift`), so that a refund of one of them is
        no retry of the new window (its buckets may have the same numbers on the new clock).
        """
        with self._lock:
            counts = self._counts
            newest = counts.newest  # None: nothing counted yet, no receipt given
            top = 0 if newest is None else newest + self._shift + 1  # above every receipt so far
            self._clock = clock
            counts.clear()
            counts.totals(clock.now())  # the new clock's bucket now: none later has a lower number
            self._shift = top - cast("int", counts.newest)

    def deposit(self) -> None:
        """Count one first attempt (a retry calls it when an execution starts)."""
        lock = self._lock
        lock.acquire()  # not `with`: once per execution of a policy with a budget, half the cost
        try:  # the time read under the lock, on the clock the window is on (_follow_clock)
            self._counts.record(False, False, self._clock.now())  # noqa: FBT003
        finally:
            lock.release()

    def try_withdraw(self) -> bool:
        """Take one retry from the budget if it allows one (see the accounting above).

        Returns:
            ``True`` if the retry is allowed (and counted), ``False`` if it is denied.
        """
        return self.withdraw() is not None

    def withdraw(self) -> int | None:
        """Take one retry from the budget if it allows one; return the withdrawal's receipt.

        As :meth:`try_withdraw`, but an allowed retry is named: give the receipt to
        :meth:`refund` if the retry does not run after all (its execution was cancelled during
        the backoff, ``on_retry`` raised, another cap stopped it), however much later.

        Returns:
            The receipt (an opaque ``int`` naming the window's bucket the retry was counted in) if
            the retry is allowed (and counted), ``None`` if it is denied.
        """
        with self._lock:
            now = self._clock.now()  # under the lock, on the clock the window is on (_follow_clock)
            counts = self._counts
            events, retries, _ = counts.totals(now)
            if retries < self._allowance(events - retries):
                counts.record(True, False, now)  # noqa: FBT003
                return counts.newest + self._shift  # type: ignore[operator] # recorded: an int
            self._denied += 1
            return None

    def refund(self, withdrawal: int | None = None) -> None:
        """Give back a retry the budget allowed but that did not run.

        The retry leaves the count of the window's bucket it was counted in, so the budget is
        as if it had never been withdrawn: nothing changes once that bucket has left the window
        (the retry no longer counted), and a bucket is never taken below what it counted. Call
        it once per withdrawal that did not run.

        Args:
            withdrawal: The receipt :meth:`withdraw` returned. ``None`` (what a caller of
                :meth:`try_withdraw` has) gives back a retry withdrawn just before, while the
                window's newest bucket is still the one it was counted in (nothing when that
                bucket counted no retry).

        A refund made as a call's coroutine is closed (a task its closed loop left pending, freed
        by the garbage collector on whichever thread allocates, maybe one that holds the budget's
        lock) never blocks on the lock (:func:`~otel_resilience.engine.closing.give_back`).

        Raises:
            TypeError: ``withdrawal`` is neither ``None`` nor an ``int`` (a ``bool``, such as
                :meth:`try_withdraw`'s answer, is none: it would name the bucket ``0`` or ``1``).
        """
        if withdrawal is not None and type(withdrawal) is not int:
            rule = "a receipt of withdraw() (an int) or None (for the retry try_withdraw() just took)"
            raise fail("RetryBudget.refund", "withdrawal", rule, withdrawal, kind=TypeError)
        give_back(self._lock, self._forget, withdrawal)

    def _forget(self, withdrawal: int | None) -> None:
        """:meth:`refund`, taking the lock."""
        with self._lock:
            if withdrawal is not None:  # a receipt names its bucket on the clock it was given on
                withdrawal -= self._shift
            self._counts.forget(True, False, withdrawal)  # noqa: FBT003

    def get_stats(self) -> dict[str, int]:
        """Return the window's counts now.

        Returns:
            ``first_attempts`` and ``retries`` in the window, ``available`` (how many more
            retries it would allow now, an ``int`` from 0 to ``sys.maxsize``: a budget whose
            ratio or floor allows more than any count shows that) and ``denied`` (retries
            denied since the budget was created).
        """
        with self._lock:
            events, retries, _ = self._counts.totals(self._clock.now())
            denied = self._denied
        firsts = events - retries
        return {
            "first_attempts": firsts,
            "retries": retries,
            "available": max(0, self._allowance(firsts) - retries),
            "denied": denied,
        }

    def _allowance(self, first_attempts: int) -> int:
        """Return how many retries a window with ``first_attempts`` allows (the one rule of the budget).

        The whole numbers below ``ratio * first_attempts + floor``: that bound is computed in
        floats, so it is taken down by its rounding before it is rounded up
        (:func:`~otel_resilience.engine.rounding.ceil_whole`). At most
        :data:`~otel_resilience.engine.validation.MAX_COUNT`: a bound beyond any count (``inf``
        for a floor too large for a float) allows every retry all the same, as no window counts
        that many, and the level (``available``) stays a count, as its 64-bit gauge exports it.
        """
        bound = ceil_whole(self._ratio * first_attempts + self._reserve)
        return int(bound) if bound < MAX_COUNT else MAX_COUNT

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle (and copy) as a new budget with the same settings and an empty window.

        What a budget counted is the state of the process that counts, as a breaker's is: a
        config sent to a worker process (``multiprocessing``, a process pool) gives the worker
        a budget of its own. The policies that share this one share the copy in one pickle. A
        budget given no clock is copied as one given none: the copy follows the process-wide clock.
        """
        clock = None if self._follows else self._clock
        return (_budget, (self._ratio, self._min_per_second, self._window, clock))

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio!r}, min_retries_per_second={self._min_per_second!r}, "
            f"window={self._window!r})"
        )


def _budget(ratio: float, min_retries_per_second: float, window: float, clock: Clock | None) -> RetryBudget:
    """Make an unpickled budget (:meth:`RetryBudget.__reduce__`)."""
    return RetryBudget(ratio, min_retries_per_second, window, clock=clock)
