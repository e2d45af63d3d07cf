"""examples/http_service/downstream.py: an ``/admin/mode`` body is applied whole or not at all."""

from __future__ import annotations

from typing import Any

import pytest

from examples.http_service.downstream import State


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mode": "down", "retry_after": "soon"}, "retry_after"),
        ({"mode": "throttled", "retry_after": -1}, "retry_after"),
        ({"mode": "throttled", "retry_after": 1.5}, "retry_after"),
        ({"mode": "down", "count": "2"}, "count"),
        ({"mode": "down", "count": 0}, "count"),
        ({"mode": "down", "count": True}, "count"),
        ({"mode": "sideways"}, "mode"),
        ({"mode": "down", "cout": 2}, "cout"),  # a typo: never down for good in place of 2 requests
        ({"mode": "throttled", "retry-after": 5}, "retry-after"),
        (["down"], "JSON object"),
    ],
)
def test_a_refused_body_names_its_field_and_changes_nothing(body: Any, field: str) -> None:
    """A body refused (400 on the admin path) leaves the mode as it was; later requests are answered."""
    state = State("inventory")
    with pytest.raises((TypeError, ValueError), match=field):
        state.switch(body)
    assert state.stats()["mode"] == "healthy"
    assert state.answer("GET /items/1") == (200, {})


def test_a_count_switches_back_after_that_many_requests() -> None:
    """``count`` N: the mode answers the next N requests, then the downstream is healthy again."""
    state = State("inventory")
    state.switch({"mode": "throttled", "count": 2, "retry_after": 3})
    assert [state.answer("GET /items/1") for _ in range(3)] == [
        (429, {"Retry-After": "3"}),
        (429, {"Retry-After": "3"}),
        (200, {}),
    ]


def test_a_429_carries_the_retry_after_of_the_mode_that_answered_it() -> None:
    """A switch that lands as a request is answered (another thread's admin call) changes the next answers.

    The answer's mode and its ``Retry-After`` are read together: never a 429 of the old mode with
    the new mode's header.
    """
    state = State("inventory")
    state.switch({"mode": "throttled", "count": 1, "retry_after": 3})
    lock = state.lock
    switched: list[bool] = []

    class SwitchAsReleased:
        """The state's lock; the first release lets an admin switch in, as a second thread would."""

        def __enter__(self) -> None:
            lock.acquire()

        def __exit__(self, *exc: object) -> None:
            lock.release()
            if not switched:
                switched.append(True)
                state.switch({"mode": "throttled", "retry_after": 9})

    state.lock = SwitchAsReleased()  # type: ignore[assignment]
    assert state.answer("GET /items/1") == (429, {"Retry-After": "3"})
    assert switched
    assert state.answer("GET /items/1") == (429, {"Retry-After": "9"})
