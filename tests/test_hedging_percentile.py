"""PercentileDelay's kept latencies: a reference model, and what observing and asking cost.

The reference is as naive as possible: the accepted latencies in a list, the latest ``samples``
of them sorted again with ``sorted()`` each time a delay is asked for, the nearest rank taken,
the floor applied. Hypothesis compares the real delay with it on random sequences of
observations (duplicates, ``0.0`` and ``-0.0``, ints, refused values) and questions.
"""

from __future__ import annotations

import math
import random
import sys
import threading
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_resilience import PercentileDelay
from otel_resilience.engine.rounding import ceil_whole


class Reference:
    """The delay a PercentileDelay must return, computed by brute force."""

    def __init__(
        self, initial: float, percentile: float, samples: int, min_samples: int, minimum: float
    ) -> None:
        self.initial = initial
        self.percentile = percentile
        self.samples = samples
        self.min_samples = min_samples
        self.minimum = minimum
        self.accepted: list[float] = []
        self.delay = initial

    def observe(self, seconds: Any) -> None:
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or seconds > sys.float_info.max  # infinite, or an int no float holds
            or math.isnan(seconds)
            or seconds < 0
        ):
            return
        self.accepted.append(seconds)

    def __call__(self) -> float:
        kept = self.accepted[-self.samples :]
        if len(kept) >= self.min_samples:
            ordered = sorted(kept)
            rank = int(ceil_whole(self.percentile * len(ordered) / 100.0))
            self.delay = max(self.minimum, ordered[max(rank, 1) - 1])
        return self.delay


LATENCIES = st.one_of(
    st.sampled_from([0.0, -0.0, 0.001, 0.002, 0.002, 0.5, 1, 2]),  # duplicates, signed zeros, ints
    st.floats(min_value=0.0, max_value=10.0),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.001, -1, True, False]),  # refused
    st.sampled_from([None, "0.5", 1j, Decimal("NaN"), Decimal("0.5"), Fraction(1, 2), 10**400]),  # refused
)
STEPS = st.lists(st.one_of(LATENCIES, st.just("ask")), max_size=120)


@settings(max_examples=300, deadline=None)
@given(
    steps=STEPS,
    percentile=st.sampled_from([0.1, 7.0, 14.0, 50.0, 90.0, 95.0, 99.0, 99.9, 99.99]),
    samples=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_percentile_delay_matches_a_sorted_reference(
    steps: list[Any], percentile: float, samples: int, data: st.DataObject
) -> None:
    """Every answer is the reference's, bit for bit (a ``-0.0`` stays ``-0.0``, an int an int)."""
    min_samples = data.draw(st.integers(min_value=1, max_value=samples), label="min_samples")
    minimum = data.draw(st.sampled_from([0.0, 0.001, 0.5]), label="minimum")
    delay = PercentileDelay(
        1.0, percentile=percentile, samples=samples, min_samples=min_samples, minimum=minimum
    )
    reference = Reference(1.0, percentile, samples, min_samples, minimum)
    for step in [*steps, "ask"]:
        if isinstance(step, str):
            got, expected = delay(), reference()
            assert (type(got), repr(got)) == (type(expected), repr(expected))
        else:
            delay.observe(step)
            reference.observe(step)


@pytest.mark.parametrize("samples", [1, 2, 100, 1000])
def test_percentile_delay_matches_the_reference_on_a_long_run(samples: int) -> None:
    """A seeded run many windows long, with many repeated values, asking after every observation."""
    rng = random.Random(samples)
    delay = PercentileDelay(1.0, percentile=95, samples=samples, min_samples=1)
    reference = Reference(1.0, 95.0, samples, 1, 0.0)
    for _ in range(3 * samples + 50):
        seconds = rng.choice([rng.random(), rng.randrange(20) / 1000])
        delay.observe(seconds)
        reference.observe(seconds)
        assert delay() == reference()


class Counted(float):
    """A latency that counts the ``<`` comparisons it takes part in (sorting and bisecting use only ``<``)."""

    comparisons = 0

    def __lt__(self, other: object) -> bool:
        Counted.comparisons += 1
        return float(self) < float(other)  # type: ignore[arg-type]


@pytest.mark.parametrize("samples", [100, 1000])
def test_asking_costs_no_sort_and_observing_a_bisection(samples: int) -> None:
    """A delay asked after each new latency (once per hedged call) costs O(log samples), not a sort.

    Comparisons are counted, not time: asking compares at most once (the floor); observing into
    a full window bisects twice (the latency leaving, the one arriving).
    """
    rng = random.Random(17)
    delay = PercentileDelay(1.0, percentile=95, samples=samples, min_samples=1)
    for _ in range(samples):
        delay.observe(Counted(rng.random()))
    delay()
    bound = 2 * math.ceil(math.log2(samples) + 1)
    for _ in range(20):
        Counted.comparisons = 0
        delay.observe(Counted(rng.random()))
        observed = Counted.comparisons
        Counted.comparisons = 0
        delay()
        assert 1 <= observed <= bound  # kept: a float subclass is a number of seconds
        assert Counted.comparisons <= 1


def test_a_latency_of_a_float_subclass_is_kept_as_a_float_is() -> None:
    """A clock whose ``now()`` gives a ``float`` subclass (as numpy's ``float64`` is) still teaches the delay."""
    delay = PercentileDelay(1.0, percentile=50, samples=3, min_samples=1)
    delay.observe(Counted(0.25))
    assert delay() == 0.25
    delay.observe(Counted(math.nan))  # what a float refuses, a subclass's value too
    delay.observe(Counted(math.inf))
    delay.observe(Counted(-1.0))
    assert delay() == 0.25


def test_threads_observing_and_asking_at_once_keep_both_orders_in_step() -> None:
    """Threads observe and ask together; afterwards the window still holds exactly the latest ``samples``.

    Once the threads are done, ``samples`` known latencies are observed: had a thread's
    insertion or removal been lost, a stale latency would still be among the sorted ones.
    """
    delay = PercentileDelay(1.0, percentile=50, samples=100, min_samples=1)
    errors: list[BaseException] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        def work(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(2_000):
                    delay.observe(rng.choice([rng.random(), 0.5]))
                    delay()
            except BaseException as error:  # a thread's error would not reach the test otherwise
                errors.append(error)
                raise

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    for millis in range(100, 0, -1):
        delay.observe(millis / 1000 + 10)  # above every latency the threads observed
    assert delay() == 50 / 1000 + 10  # the 50th of 10.001 ... 10.100


@pytest.mark.parametrize(
    "seconds",
    [None, "0.5", b"1", 1j, Decimal("NaN"), Decimal("0.5"), Fraction(1, 2), 10**400, object()],
    ids=[
        "none",
        "str",
        "bytes",
        "complex",
        "decimal-nan",
        "decimal",
        "fraction",
        "int-past-floats",
        "object",
    ],
)
def test_percentile_delay_ignores_what_is_no_number_of_seconds(seconds: Any) -> None:
    """``observe`` never raises (the LatencyObserver protocol): what is no int or float, or an int no float
    holds, is ignored, as NaN is; the delay stays one the hedging takes (a ``Fraction`` it refuses)."""
    delay = PercentileDelay(0.5, percentile=99, samples=3, min_samples=1)
    delay.observe(seconds)
    assert repr(delay()) == "0.5"  # initial: nothing kept
    delay.observe(0.2)
    delay.observe(seconds)
    assert repr(delay()) == "0.2"  # the highest kept: only 0.2


@pytest.mark.parametrize(
    ("setting", "value"),
    [("percentile", 150.0), ("min_samples", 0), ("initial", -1.0), ("minimum", "soon")],
)
def test_the_settings_are_read_only_as_every_config_s(setting: str, value: object) -> None:
    """A setting is read, never assigned: an ``AttributeError``, the delay as it was.

    Assigned, it bypassed the constructor's checks: ``percentile = 150`` made the next delay an
    ``IndexError`` raised into the hedged call, and ``initial`` changed nothing (the delay kept
    the cached one) while ``repr`` and a copy showed the new value.
    """
    delay = PercentileDelay(0.05, percentile=50.0, samples=4, min_samples=2, minimum=0.001)
    before = (delay.initial, delay.percentile, delay.samples, delay.min_samples, delay.minimum)
    assert before == (0.05, 50.0, 4, 2, 0.001)
    with pytest.raises(AttributeError):
        setattr(delay, setting, value)
    for seconds in (0.01, 0.02, 0.03):
        delay.observe(seconds)
    assert delay() == 0.02
    assert (delay.initial, delay.percentile, delay.samples, delay.min_samples, delay.minimum) == before
