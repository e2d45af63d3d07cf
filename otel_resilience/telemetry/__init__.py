"""OpenTelemetry for every pattern: the only package of otel_resilience that imports OpenTelemetry.

Telemetry works with no code: ``import otel_resilience`` calls :func:`install_default`, which
registers an :class:`OtelListener` on the global providers, acquired lazily (a provider set
after the import is honoured). With no SDK configured it costs one cheap check per execution.

To use providers of your own (tests, several SDKs), or to turn telemetry off::

    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from otel_resilience.telemetry import instrument, uninstrument

    tp, mp, lp = TracerProvider(), MeterProvider(), LoggerProvider()  # the application's SDK
    instrument(tracer_provider=tp, meter_provider=mp, logger_provider=lp)
    ...
    uninstrument()

For a block only (a run inside a process instrumented already), :func:`instrumented` registers
a listener and then puts back the one registered before, untouched::

    with instrumented(meter_provider=mp):
        ...

Only ``opentelemetry-api`` is imported; the application chooses (and imports) the SDK.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Final

from otel_resilience.engine.events import HUB
from otel_resilience.engine.forking import fork_safe
from otel_resilience.telemetry import env
from otel_resilience.telemetry.otel import VERSION, OtelListener

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "VERSION",
    "OtelListener",
    "current_listener",
    "install_default",
    "instrument",
    "instrumented",
    "uninstrument",
]

_LOCK: Final = fork_safe(threading.Lock())
_current: OtelListener | None = None
_put_back: dict[OtelListener, OtelListener | None] = {}
"""Each open :func:`instrumented` block's listener, and the listener its end puts back: the one
its start found, or, once a block overlapping it ended, the one that block's start found (a
block's listener is no listener to put back once its block is over)."""


def instrument(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    *,
    record_messages: bool | None = None,
    spans: bool | None = None,
    record_duration: bool | None = None,
    in_process_histograms: bool | None = None,
) -> OtelListener:
    """Report every pattern's telemetry through OpenTelemetry, replacing the current listener.

    Args:
        tracer_provider: Tracer provider; ``None`` (default) for the global one, acquired lazily
            (so is the API's proxy, what ``trace.get_tracer_provider()`` returns while none is
            set: :func:`~otel_resilience.telemetry.providers.given`).
        meter_provider: Meter provider; ``None`` (default) for the global one, acquired lazily
            (the API's proxy too).
        logger_provider: Logger provider for alert and error-pattern log records; ``None``
            (default) for the global one (the API's proxy too).
        record_messages: Whether failed spans carry the exception message as their status
            description (``None``: ``OTEL_RESILIENCE_RECORD_MESSAGES``, false when unset:
            messages may contain user data).
        spans: Whether executions and attempts open spans and add span events (``None``: not
            ``OTEL_RESILIENCE_SPANS_DISABLED``, true when unset).
        record_duration: Whether the execution and attempt duration histograms are recorded
            (``None``: not ``OTEL_RESILIENCE_DURATION_DISABLED``, true when unset).
        in_process_histograms: Whether those two histograms are kept in process, each exported
            at collection through three observable counters (bucket counts by ``le``, sum, count:
            ``resilience.execution.latency.*`` and ``resilience.attempt.latency.*``), rather than
            recorded through the SDK's histogram on every call (``None``:
            ``OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS``, false when unset). About 25 times cheaper
            per record; no exemplars, and other than Prometheus a backend sees counters, not a
            histogram (see :mod:`otel_resilience.telemetry.histograms`).

    A switch is applied once per telemetry source, on top of the policy's own
    (``ResilienceConfig(spans=..., record_duration=...)``): either can turn it off.

    Returns:
        The listener now registered on the engine hub.

    Raises:
        TypeError: A switch keyword is neither a bool nor ``None``, or a provider given is not
            one of its signal (the listener in place is kept).
    """
    listener = _made(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        record_messages=record_messages,
        spans=spans,
        record_duration=record_duration,
        in_process_histograms=in_process_histograms,
    )
    with _LOCK:
        _replace_locked(listener)
    return listener


@contextlib.contextmanager
def instrumented(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    *,
    record_messages: bool | None = None,
    spans: bool | None = None,
    record_duration: bool | None = None,
    in_process_histograms: bool | None = None,
) -> Iterator[OtelListener]:
    """Report through a listener of these providers for the block, then through the one before.

    As :func:`instrument` (same arguments and errors), except that the listener registered
    before the block (by ``import otel_resilience``, or an ``instrument(...)`` of the
    application) is not closed: it stops receiving events during the block and is registered
    again after it, as it was (its providers, its switches, its counts), or none if there was
    none. An :func:`instrument` or :func:`uninstrument` called inside the block wins: what it
    left registered stays, and the listener from before the block is closed. Blocks nest (each
    puts back the listener its own start found); of overlapping ones that end in another order,
    the one that ends last puts back the listener from before the first (a block's own listener
    is never put back once its block is over).

    Yields:
        The listener registered for the block (closed after it).
    """
    listener = _made(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        record_messages=record_messages,
        spans=spans,
        record_duration=record_duration,
        in_process_histograms=in_process_histograms,
    )
    with _LOCK:
        _put_back[listener] = _replace_locked(listener, close_previous=False)
    try:
        yield listener
    finally:
        with _LOCK:
            previous = _put_back.pop(listener)
            if _current is listener:
                _replace_locked(previous)
            else:
                _left_replaced_locked(listener, previous)


def _left_replaced_locked(listener: OtelListener, previous: OtelListener | None) -> None:
    """End a block whose ``listener`` another registration replaced inside it.

    A block started since (overlapping it) unregistered it without closing it, to put it back:
    that block puts back ``previous`` instead, and the listener is closed. Else an
    :func:`instrument` or :func:`uninstrument` replaced it (and closed it): it wins, and
    ``previous``, which no block puts back, is closed.
    """
    for block, found in _put_back.items():
        if found is listener:
            _put_back[block] = previous
            listener.close(successor=_current)
            return
    if previous is not None:
        previous.close()


def _made(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
    record_messages: bool | None = None,
    spans: bool | None = None,
    record_duration: bool | None = None,
    in_process_histograms: bool | None = None,
) -> OtelListener:
    """Make (not register) the listener :func:`instrument` registers, its switches resolved."""
    return OtelListener(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        record_messages=env.resolve(env.RECORD_MESSAGES, record_messages),
        spans=env.resolve(env.SPANS_DISABLED, spans),
        record_duration=env.resolve(env.DURATION_DISABLED, record_duration),
        in_process_histograms=env.resolve(env.IN_PROCESS_HISTOGRAMS, in_process_histograms),
    )


def _replace_locked(listener: OtelListener | None, *, close_previous: bool = True) -> OtelListener | None:
    """Register ``listener`` (``None``: none) in place of the current one, which is closed.

    With ``close_previous`` false the current one is only unregistered, to be registered again
    (:func:`instrumented`); it is returned.

    The hub swaps them in one change (:meth:`~otel_resilience.engine.events.TelemetryHub.replace_listener`):
    every event reaches one of them, none is reported while neither is registered. The previous
    one is closed after, handing what still reaches it to the new one (a report that read the
    hub's routes before the swap: no lock on the report path, so it may reach the previous one
    once closed), and the registered listener takes its meter's observable instruments
    then: a listener made meanwhile (by an overlapping ``instrument()``, or the previous one
    acquiring its meter late) may have taken them, and would leave them reporting nothing.
    """
    global _current  # noqa: PLW0603 - one process-wide registration
    previous = _current
    _current = listener
    if listener is not None:
        HUB.replace_listener(previous, listener)
    elif previous is not None:
        HUB.remove_listener(previous)
    if previous is not None and close_previous:
        previous.close(successor=listener)
    if listener is not None:
        listener.take_observables()
    return previous


def uninstrument() -> None:
    """Stop reporting through OpenTelemetry (the current listener is removed and closed).

    Instruments already created on a meter cannot be deleted (the API has no such call); their
    callbacks report nothing from now on.
    """
    with _LOCK:
        _replace_locked(None)


def install_default() -> OtelListener:
    """Register a listener on the global providers unless one is registered already.

    Called by ``import otel_resilience``; calling it again is a no-op.

    The listener is made outside the registration lock (as :func:`instrument` makes its own),
    and registered only if there is still none once the lock is held: a listener an overlapping
    :func:`instrument` registered meanwhile is kept, and the one made here is closed unused (the
    registered one takes its meter's observables back, should the one made here have taken them).

    Returns:
        The registered listener.
    """
    current = _current
    if current is not None:
        return current
    listener = _made()
    with _LOCK:
        current = _current
        if current is None:
            _replace_locked(listener)
            return listener
        listener.close()
        current.take_observables()
    return current


def current_listener() -> OtelListener | None:
    """Return the listener registered by :func:`instrument` / :func:`install_default`, if any."""
    return _current
