"""The public test helpers refuse bad input as the library's own classes do: naming the field."""

from __future__ import annotations

import math

import pytest

from otel_resilience.testing import FakeClock


@pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf])
def test_a_fake_clock_refuses_a_start_that_is_not_finite(start: float) -> None:
    """``FakeClock(nan)`` was kept as the time: every deadline and backoff read from it then compared false."""
    with pytest.raises(ValueError, match=r"FakeClock\.start must be a finite number"):
        FakeClock(start)


@pytest.mark.parametrize("start", ["3", True, None], ids=["str", "bool", "None"])
def test_a_fake_clock_refuses_a_start_that_is_not_a_number(start: object) -> None:
    """``FakeClock("3")`` and ``FakeClock(True)`` were converted with float(); ``None`` failed inside it."""
    with pytest.raises(TypeError, match=r"FakeClock\.start must be a number"):
        FakeClock(start)  # type: ignore[arg-type]


def test_a_fake_clock_takes_any_finite_start() -> None:
    """A start of any finite number, negative included, is the clock's time."""
    assert FakeClock(-5).now() == -5.0
    assert FakeClock(1000).now() == 1000.0


@pytest.mark.parametrize("seconds", ["1", True], ids=["str", "bool"])
def test_advance_refuses_seconds_that_are_not_a_number(seconds: object) -> None:
    """``advance(True)`` moved the time by a second; ``advance("1")`` failed comparing str with int."""
    clock = FakeClock()
    with pytest.raises(TypeError, match=r"FakeClock\.advance\.seconds must be a number"):
        clock.advance(seconds)  # type: ignore[arg-type]
    assert clock.now() == 0.0


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_advance_refuses_negative_or_infinite_seconds(seconds: float) -> None:
    """The time only moves forward, by a finite amount."""
    clock = FakeClock()
    with pytest.raises(ValueError, match=r"FakeClock\.advance\.seconds must be"):
        clock.advance(seconds)
    assert clock.now() == 0.0


def test_a_fake_clock_shows_its_time_in_its_repr() -> None:
    """A failed assertion on a clock shows where it stands and how often it slept."""
    clock = FakeClock(10)
    clock.sleep_sync(2.5)
    assert repr(clock) == "FakeClock(now=12.5, sleeps=1)"
