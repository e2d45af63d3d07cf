"""``fresh_defaults(clock=...)`` and a retry budget a test's code makes with no clock of its own.

A ``RetryBudget`` in a module-level ``@resilient`` config counts its window on the process-wide
clock: the block's, so that advancing the block's fake clock refills it, and a block on a new
clock starts its window afresh (its times on the clock before mean nothing on the new one).
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import threading
import weakref

import pytest

from otel_resilience import ResilienceConfig, RetryBudget, RetryPolicy, resilient, retry
from otel_resilience.engine.clock import SYSTEM_CLOCK, set_process_clock
from otel_resilience.testing import FakeClock, fresh_defaults

# A floor of one retry per window, no ratio: the second retry of a window is denied.
_BUDGET = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0)
_POLICY = RetryPolicy(max_attempts=2, initial_delay=1.0, jitter="none", budget=_BUDGET)
_CALLS = {"made": 0, "down": 0}


def _call() -> str:
    _CALLS["made"] += 1
    if _CALLS["down"]:
        _CALLS["down"] -= 1
        raise ConnectionError("refused")
    return "done"


# Decorated at import, as an application's functions are; both draw on the one budget.
_charge = resilient(ResilienceConfig(name="budgeted_charge", retry_policy=_POLICY))(_call)
_refund = retry(_POLICY, name="budgeted_refund")(_call)


def _attempts(call: object) -> int:
    """The attempts of one call that fails once, then succeeds if retried."""
    _CALLS.update(made=0, down=1)
    with contextlib.suppress(ConnectionError):
        call()  # type: ignore[operator]
    return _CALLS["made"]


def test_a_budget_made_at_import_starts_afresh_in_each_block_on_its_clock() -> None:
    """Two tests, each in its block on a fake clock of its own: each gets the floor's retry."""
    denied = _BUDGET.get_stats()["denied"]
    with fresh_defaults(clock=FakeClock()):  # test 1
        assert _attempts(_charge) == 2
    with fresh_defaults(clock=FakeClock()):  # test 2: the window of test 1 is not its
        assert _attempts(_charge) == 2
        assert _BUDGET.get_stats()["retries"] == 1
    assert _BUDGET.get_stats()["denied"] == denied


def test_advancing_the_blocks_clock_refills_a_budget_made_at_import() -> None:
    clock = FakeClock()
    with fresh_defaults(clock=clock):
        assert _attempts(_charge) == 2
        assert _attempts(_charge) == 1  # the floor's one retry of this window is spent
        assert _BUDGET.get_stats()["available"] == 0
        clock.advance(10.0)  # a whole window later
        assert _BUDGET.get_stats()["available"] == 1
        assert _attempts(_refund) == 2
    assert _BUDGET.clock is SYSTEM_CLOCK  # the process's again, after the block


def test_a_budget_given_its_own_clock_keeps_it_and_its_window() -> None:
    own = FakeClock()
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0, clock=own)
    assert budget.try_withdraw()
    with fresh_defaults(clock=FakeClock()):
        assert budget.clock is own
        assert not budget.try_withdraw()
    assert budget.get_stats()["retries"] == 1


def test_a_budget_following_the_process_clock_is_freed_with_its_last_holder() -> None:
    budget = RetryBudget()
    gone = weakref.ref(budget)
    del budget
    gc.collect()
    assert gone() is None


def test_a_copy_of_a_budget_following_the_process_clock_follows_it_too() -> None:
    clock = FakeClock()
    copy = pickle.loads(pickle.dumps(_BUDGET))
    assert copy is not _BUDGET
    with fresh_defaults(clock=clock):
        assert copy.clock is clock
    assert copy.clock is SYSTEM_CLOCK


def test_a_budget_following_the_process_clock_refuses_a_clock_that_is_not_one() -> None:
    with pytest.raises(TypeError, match=r"RetryBudget\.clock"):
        RetryBudget(clock="system")  # type: ignore[arg-type]


class _HeldClock(FakeClock):
    """A fake clock whose reading waits, once, until the test lets it go."""

    __slots__ = ("held", "reading", "release")

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.held = False
        self.reading, self.release = threading.Event(), threading.Event()

    def now(self) -> float:
        if self.held:
            self.held = False
            self.reading.set()
            self.release.wait(10)
        return super().now()


def test_a_withdrawal_reading_the_clock_before_as_it_changes_leaves_the_new_window_its_own() -> None:
    """A reading of the clock before (time 1000) is never counted in the window on the new clock.

    Counted there, it would be the newest bucket of a window whose time is 0: every retry after
    it counts in it until the new clock passes 1010, so no advance of a window refills it.
    """
    before, after = _HeldClock(1000.0), FakeClock()
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0)
    set_process_clock(before)
    try:
        before.held = True
        withdrawing = threading.Thread(target=budget.try_withdraw)
        withdrawing.start()
        before.reading.wait(10)
        moving = threading.Thread(target=set_process_clock, args=(after,))
        moving.start()
        moving.join(0.5)  # it waits for the withdrawal in flight, if that holds the budget
        before.release.set()
        withdrawing.join(10)
        moving.join(10)
        assert budget.clock is after
        assert budget.get_stats()["retries"] == 0  # counted in the window before, gone with it
        assert budget.try_withdraw()
        after.advance(10.0)  # a whole window later on the new clock
        assert budget.try_withdraw()
    finally:
        set_process_clock(SYSTEM_CLOCK)


def test_a_refund_of_a_withdrawal_made_on_the_clock_before_leaves_the_new_window_as_it_is() -> None:
    """A retry withdrawn in one block and given back in the next is no retry of the new window.

    Both fake clocks start at 0, so the two windows' buckets have the same numbers: taken off
    the new window, the refund gave back the retry it had allowed, and its floor of one retry
    per window allowed two.
    """
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0)
    with fresh_defaults(clock=FakeClock()):
        before = budget.withdraw()
        assert before is not None
    with fresh_defaults(clock=FakeClock()):
        assert budget.withdraw() is not None
        budget.refund(before)  # the retry of the block before did not run after all
        assert budget.get_stats()["retries"] == 1
        assert budget.withdraw() is None
    with fresh_defaults(clock=FakeClock()):  # and a receipt of this window is still its own
        receipt = budget.withdraw()
        assert receipt is not None
        budget.refund(receipt)
        assert budget.get_stats()["retries"] == 0
