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
