"""``instrumented()``: a listener for a block, then the one registered before it, untouched."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import RetryPolicy, retry_sync
from otel_resilience.engine.events import HUB
from otel_resilience.telemetry import (
    current_listener,
    install_default,
    instrument,
    instrumented,
    uninstrument,
)
from otel_resilience.telemetry import semconv as sc


@pytest.fixture(autouse=True)
def _restore_default() -> Iterator[None]:
    """Leave the process instrumented as the test found it."""
    had_default = current_listener() is not None
    yield
    uninstrument()
    if had_default:
        install_default()


def _retries(reader: InMemoryMetricReader) -> float:
    """The retries the reader's meter counted, over every series."""
    data = reader.get_metrics_data()
    return sum(
        point.value
        for resource in ([] if data is None else data.resource_metrics)
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == sc.RETRIES
        for point in metric.data.data_points
    )


def _retry_once() -> None:
    """One call that fails once and succeeds on its retry."""
    failures = iter([ConnectionError()])

    def flaky() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "ok"

    assert retry_sync(flaky, policy=RetryPolicy(max_attempts=2, initial_delay=0.0)) == "ok"


def test_the_listener_from_before_the_block_reports_again_after_it() -> None:
    """Events of the block reach the block's providers only; after it, the application's listener,
    the same object, still open, reports to its own providers again."""
    mine_reader, block_reader = InMemoryMetricReader(), InMemoryMetricReader()
    mine = instrument(meter_provider=MeterProvider(metric_readers=[mine_reader]))
    with instrumented(meter_provider=MeterProvider(metric_readers=[block_reader])) as block:
        assert current_listener() is block
        assert mine not in HUB.event_listeners
        _retry_once()
    assert current_listener() is mine
    assert mine.active
    assert not block.active
    assert mine in HUB.event_listeners
    assert block not in HUB.event_listeners
    _retry_once()
    assert (_retries(mine_reader), _retries(block_reader)) == (1, 1)


def test_with_no_listener_before_the_block_none_is_left_after_it() -> None:
    """Telemetry turned off before the block is off after it."""
    uninstrument()
    with instrumented(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()])) as block:
        assert current_listener() is block
    assert current_listener() is None
    assert block not in HUB.event_listeners


def test_the_listener_from_before_is_put_back_when_the_block_raises() -> None:
    """An exception out of the block restores the listener all the same, and propagates."""
    mine = instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    with pytest.raises(KeyError), instrumented():
        raise KeyError("out of the block")
    assert current_listener() is mine
    assert mine.active


def test_instrument_inside_the_block_wins() -> None:
    """A listener instrument() registers inside the block stays registered; the one from before is closed."""
    mine = instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    with instrumented():
        later = instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    assert current_listener() is later
    assert later.active
    assert not mine.active
    assert mine not in HUB.event_listeners


def test_overlapping_blocks_ending_in_another_order_put_back_the_listener_before_both() -> None:
    """Two blocks, the first ending first (two runs in process at once): neither block's listener
    stays registered after both, and the application's, closed by no ``instrument()``, is back.

    The first block's end found the second's listener registered and took it for one an
    ``instrument()`` made: it closed the application's listener, and the second block's end put
    back the first block's, which reported to that block's providers from then on.
    """
    mine = instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    first_block, second_block = instrumented(), instrumented()
    first = first_block.__enter__()
    second = second_block.__enter__()
    first_block.__exit__(None, None, None)
    assert current_listener() is second
    assert not first.active
    second_block.__exit__(None, None, None)
    assert current_listener() is mine
    assert mine.active
    assert (first in HUB.event_listeners, second in HUB.event_listeners) == (False, False)


def test_instrument_inside_overlapping_blocks_wins() -> None:
    """An ``instrument()`` inside two overlapping blocks stays registered, whatever order they end
    in; the listener from before them and the blocks' own are closed."""
    mine = instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    first_block, second_block = instrumented(), instrumented()
    first = first_block.__enter__()
    second = second_block.__enter__()
    later = instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))
    first_block.__exit__(None, None, None)
    second_block.__exit__(None, None, None)
    assert current_listener() is later
    assert later.active
    assert not any(listener.active for listener in (mine, first, second))
