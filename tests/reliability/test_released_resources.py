"""What a program lets go of is freed: a telemetry listener it removed, a loop it closed.

A long-running service replaces its telemetry (``instrument()`` with new providers, then
``uninstrument()``) and may run calls on loops it closes itself. Nothing the library keeps for its own speed may hold on to what was let go: a breaker
that once rejected a call must not keep the listeners of that moment (and, through an
OpenTelemetry listener, its logger provider and metric reader), and an async state change
callback still running when its loop was closed must not keep that loop and its task forever.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from otel_resilience.engine.events import HUB, Event, EventArgs, StateChanged, TelemetrySource

LOOPS = 5


class Listener:
    """A telemetry listener holding a large buffer, as an exporter's would."""

    def __init__(self) -> None:
        self.buffer = bytearray(1 << 16)
        self.events = 0

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        self.events += 1


async def _ok() -> str:
    return "ok"


def _reject(breaker: CircuitBreaker) -> None:
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(lambda: "never called")


@pytest.mark.usefixtures("collector_off")
def test_a_listener_removed_from_the_hub_is_not_kept_by_a_breaker_that_rejected() -> None:
    """A breaker that reported its rejections to a listener does not keep it once it is removed from the hub."""
    breaker = CircuitBreaker("released-listener")
    breaker.force_open()
    listener = Listener()
    HUB.add_listener(listener)
    try:
        _reject(breaker)
        assert listener.events >= 1, "the rejection was not reported: the route was not read"
    finally:
        HUB.remove_listener(listener)
    removed = weakref.ref(listener)
    del listener
    assert removed() is None, "the removed listener is still alive"
    _reject(breaker)  # the breaker still reports to the listeners there are now
    assert breaker.get_stats()["total_rejected"] == 2


def _abandon_a_callback() -> tuple[weakref.ref[asyncio.AbstractEventLoop], list[StateChanged]]:
    """Open a breaker on a new loop whose async callback then waits; close the loop without cancelling it."""
    started: list[StateChanged] = []
    breaker = CircuitBreaker("closed-loop-callback", CircuitBreakerConfig(failure_threshold=1))

    async def on_change(change: StateChanged) -> None:
        started.append(change)
        await asyncio.Event().wait()  # a notification that hangs (a webhook that never answers)

    breaker.on_state_change(on_change)

    async def trip() -> None:
        breaker.force_open()
        await asyncio.sleep(0)  # the callback's task starts, and waits
        await asyncio.sleep(0)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(trip())
    loop.close()
    return weakref.ref(loop), started


def test_a_loop_closed_while_an_async_callback_ran_is_freed() -> None:
    """A callback task a closed loop never resumes keeps neither the loop nor itself once another loop runs one."""
    closed = []
    for _ in range(LOOPS):
        ref, started = _abandon_a_callback()
        assert [change.new for change in started] == ["open"]
        closed.append(ref)

    # The next loop's callback task: the tasks of the closed loops are let go then.
    seen: list[str] = []
    breaker = CircuitBreaker("next-loop-callback")

    async def on_change(change: StateChanged) -> None:
        seen.append(change.new)

    breaker.on_state_change(on_change)

    async def trip() -> None:
        breaker.force_open()
        await asyncio.sleep(0)

    asyncio.run(trip())
    gc.collect()
    assert seen == ["open"]
    alive = sum(ref() is not None for ref in closed)
    assert alive == 0, f"{alive} of {LOOPS} closed loops are still alive"
