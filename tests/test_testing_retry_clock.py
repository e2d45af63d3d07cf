"""``fresh_defaults(clock=...)`` and the retries a test's code makes with no clock of its own.

A ``@retry`` function of the application, decorated at import, and ``retry_sync`` /
``retry_async`` called with no ``clock`` wait their backoffs on the process-wide clock: the
block's, so that a test's backoffs take no real time and are recorded on its fake clock.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref

from otel_resilience import RetryPolicy, retry, retry_async, retry_sync
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.patterns.retry.facade import _FOLLOWING
from otel_resilience.testing import FakeClock, fresh_defaults

_POLICY = RetryPolicy(max_attempts=3, initial_delay=30.0, multiplier=2.0, jitter="none")
_DOWN = {"left": 0}


def _flaky() -> str:
    if _DOWN["left"]:
        _DOWN["left"] -= 1
        raise ConnectionError("refused")
    return "ok"


async def _flaky_async() -> str:
    return _flaky()


@retry(_POLICY)
def _fetch() -> str:  # decorated at import, as an application's function is
    return _flaky()


@retry(_POLICY)
async def _fetch_async() -> str:
    return _flaky()


def test_a_retry_decorated_at_import_waits_on_the_blocks_clock() -> None:
    """Its backoffs (30 s, 60 s) pass on the block's fake clock, at once."""
    clock = FakeClock()
    with fresh_defaults(clock=clock):
        _DOWN["left"] = 2
        started = time.monotonic()
        assert _fetch() == "ok"
        assert time.monotonic() - started < 20.0  # not the 90 s of real backoffs
    assert clock.sleeps == [30.0, 60.0]
    assert clock.now() == 90.0


def test_an_async_retry_decorated_at_import_waits_on_the_blocks_clock() -> None:
    clock = FakeClock()

    async def test() -> str:
        _DOWN["left"] = 2
        return await _fetch_async()

    with fresh_defaults(clock=clock):
        assert asyncio.run(test()) == "ok"
    assert clock.sleeps == [30.0, 60.0]


def test_the_one_shot_functions_given_no_clock_wait_on_the_blocks_clock() -> None:
    clock = FakeClock()
    with fresh_defaults(clock=clock):
        _DOWN["left"] = 1
        assert retry_sync(_flaky, policy=_POLICY) == "ok"
        _DOWN["left"] = 1
        assert asyncio.run(retry_async(_flaky_async, policy=_POLICY)) == "ok"
    assert clock.sleeps == [30.0, 30.0]


def test_each_block_has_its_clock_and_the_system_clock_is_back_after_them() -> None:
    first, second = FakeClock(), FakeClock()
    with fresh_defaults(clock=first):
        _DOWN["left"] = 1
        assert _fetch() == "ok"
    with fresh_defaults(clock=second):
        _DOWN["left"] = 2
        assert _fetch() == "ok"
    assert first.sleeps == [30.0]
    assert second.sleeps == [30.0, 60.0]
    assert _FOLLOWING[_fetch].clock is SYSTEM_CLOCK  # the process's again, after the blocks


def test_a_retry_given_its_own_clock_keeps_it() -> None:
    own, blocks = FakeClock(), FakeClock()

    @retry(_POLICY, clock=own)
    def fetch() -> str:
        return _flaky()

    with fresh_defaults(clock=blocks):
        _DOWN["left"] = 1
        assert fetch() == "ok"
    assert own.sleeps == [30.0]
    assert blocks.sleeps == []


def test_a_retry_given_no_clock_is_freed_with_its_function() -> None:
    """Following the process-wide clock keeps no function alive."""

    def fetch() -> str:
        return _flaky()

    decorated = retry(_POLICY)(fetch)
    gone = weakref.ref(decorated)
    followed = weakref.ref(_FOLLOWING[decorated])
    del decorated
    gc.collect()
    assert gone() is None
    assert followed() is None


def test_a_call_in_flight_as_the_block_starts_ends_on_the_clock_it_started_on() -> None:
    """Its backoffs stay on the clock of its start: a deadline is never read on another clock."""
    clock = FakeClock()
    started, release = threading.Event(), threading.Event()
    answers: list[str] = []

    @retry(RetryPolicy(max_attempts=2, initial_delay=0.0, jitter="none", attempt_timeout=5.0))
    def fetch() -> str:
        if not answers:
            answers.append("first")
            started.set()
            release.wait(10)
            raise ConnectionError("refused")
        return "ok"

    with fresh_defaults(clock=FakeClock()):
        worker = threading.Thread(target=lambda: answers.append(fetch()))
        worker.start()
        started.wait(10)
        with fresh_defaults(clock=clock):
            release.set()
            worker.join(10)
    assert answers == ["first", "ok"]


def test_a_block_entered_in_a_running_event_loop_as_an_async_fixture_does() -> None:
    """An async test's own block (an async fixture's ``with``): its retries wait on its clock."""

    async def test() -> list[float]:
        clock = FakeClock()
        with fresh_defaults(clock=clock):
            _DOWN["left"] = 2
            assert await _fetch_async() == "ok"
            _DOWN["left"] = 1
            assert await retry_async(_flaky_async, policy=_POLICY) == "ok"
        return clock.sleeps

    assert asyncio.run(test()) == [30.0, 60.0, 30.0]
