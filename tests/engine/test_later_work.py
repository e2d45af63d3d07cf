"""The library's thread of later work: what a closed call must not do on the collector's thread.

:func:`~otel_resilience.engine.closing.later` never blocks its caller, runs what it is given in
order on one thread, goes on past a piece that raises (logged), and works in a forked child, even
one forked while another thread was starting the thread.
"""

from __future__ import annotations

import logging
import threading

import pytest
from forking_support import held_by_another_thread, run_in_child

from otel_resilience.engine import closing


def test_later_work_runs_in_order_on_one_thread_of_its_own() -> None:
    ran: list[tuple[int, str]] = []
    for number in range(50):
        closing.later(lambda n: ran.append((n, threading.current_thread().name)), number)
    assert closing.settled(30.0)
    assert [number for number, _ in ran] == list(range(50))
    assert {name for _, name in ran} == {"resilience-later"}


def test_a_piece_that_raises_is_logged_and_the_next_ones_run(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("broken give-back")

    ran: list[str] = []
    with caplog.at_level(logging.ERROR, logger="otel_resilience.engine.closing"):
        closing.later(broken)
        closing.later(ran.append, "after")
        assert closing.settled(30.0)
    assert ran == ["after"]
    [record] = [r for r in caplog.records if r.name == "otel_resilience.engine.closing"]
    assert record.exc_info is not None
    assert "broken give-back" in str(record.exc_info[1])


def test_later_work_never_blocks_its_caller_on_a_lock_the_caller_holds() -> None:
    lock = threading.Lock()
    given_back: list[str] = []

    def release() -> None:
        with lock:
            given_back.append("slot")

    with lock:  # as the collector closing a call inside the library's own lock
        closing.later(release)
        assert given_back == []
    assert closing.settled(30.0)
    assert given_back == ["slot"]


def test_a_forked_child_runs_later_work_on_a_thread_of_its_own() -> None:
    """Even forked while another thread held the lock that starts the thread (free in the child)."""
    assert closing.settled(30.0)  # the parent's thread runs

    def child() -> None:
        ran: list[int] = []
        closing.later(ran.append, 1)
        assert closing.settled(10.0), "no thread of later work in the child"
        assert ran == [1]

    assert run_in_child(child) == 0
    with held_by_another_thread(closing._STARTING):
        assert run_in_child(child) == 0
