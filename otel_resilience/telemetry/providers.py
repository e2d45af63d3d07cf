"""The global tracer, meter and logger providers, found through the public OpenTelemetry API.

The first look at a signal calls the API's getter (``trace.get_tracer_provider()``,
``metrics.get_meter_provider()``, ``get_logger_provider()``), which also loads a provider named
by ``OTEL_PYTHON_TRACER_PROVIDER`` (or its meter and logger twins). Until a provider is set, the
getter returns the API's placeholder, a proxy provider; these functions return ``None`` for it.

While nothing is set, each getter looks up an environment variable on every call (about 1 µs).
So after the first look, the tracer and meter getters are asked again only once the API holds a
provider of their signal (:func:`tracer_unset`, :func:`meter_unset`), so that a process that sets
one of them only does not pay for the other on every execution (the lookup, or the proxy tracer
and no-op tracer the tracer's proxy provider makes on every ``get_tracer``; the meter's keeps
every meter it hands out). A later look at the logger asks the proxy provider kept from the first
look for a logger instead, which reads the API's provider without the lookup (it is asked only
while nothing records).

Providers are *acquired* through those getters only. Until one is set, though, asking them on
every execution costs 3-5 µs a call (the environment lookups; measured against 0.3 µs for the
whole idle listener before), so :func:`nothing_set` first reads whether the API holds any
provider at all: one module attribute per signal, the API's own "not set yet" state
(``trace._TRACER_PROVIDER`` and its meter and logger twins). It only ever answers "still
nothing, skip the getters"; when an attribute is missing (another API version) it answers
``False`` and the getters decide, as they do for everything else.

A proxy is recognised by its class: ``trace.ProxyTracerProvider`` and ``trace.ProxyTracer``
(public names), or, for meters and logs whose proxies have no public name, a class of the API's
own package of that signal (``opentelemetry.metrics``, ``opentelemetry._logs``; an SDK's classes
live in ``opentelemetry.sdk``) that is not its no-op provider. A no-op provider set on purpose
is returned: the listener opens nothing for it and stops looking.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Final, TypeVar

from opentelemetry import _logs, metrics, trace
from opentelemetry._logs import LoggerProvider, NoOpLoggerProvider, get_logger_provider
from opentelemetry._logs import _internal as _logs_state
from opentelemetry.metrics import _internal as _metrics_state

from otel_resilience.telemetry import semconv as sc

__all__ = [
    "VERSION",
    "given",
    "logger_provider",
    "meter_provider",
    "meter_unset",
    "nothing_set",
    "tracer_provider",
    "tracer_unset",
]

_P = TypeVar("_P")


def _package_version() -> str:
    """Return the installed version of otel-resilience (``0.0.0`` when not installed)."""
    try:
        return importlib.metadata.version("otel-resilience")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION: Final = _package_version()
"""The instrumentation scope version every tracer, meter and logger is asked for."""

_METRICS_API: Final = (metrics.__name__, metrics.__name__ + ".")
_LOGS_API: Final = (_logs.__name__, _logs.__name__ + ".")

_tracer_proxy: list[trace.ProxyTracerProvider] = []
"""The tracer proxy provider, once the getter has returned it."""
_logger_proxy: list[LoggerProvider] = []
"""The logger proxy provider, once the getter has returned it."""


def _of_api(cls: type, api: tuple[str, str]) -> bool:
    """Whether ``cls`` is defined in the API package ``api[0]``."""
    module = cls.__module__
    return module == api[0] or module.startswith(api[1])


def _unless_proxy(provider: _P, api: tuple[str, str], noop: type) -> _P | None:
    """Return ``provider``, or ``None`` when it is the proxy of the API package ``api[0]``."""
    cls = type(provider)
    return None if _of_api(cls, api) and not issubclass(cls, noop) else provider


_STATE: Final = (
    (trace, "_TRACER_PROVIDER"),
    (_metrics_state, "_METER_PROVIDER"),
    (_logs_state, "_LOGGER_PROVIDER"),
)


def _unset() -> bool:
    """Whether the API holds no global provider of any signal (its own "not set yet" state)."""
    return (
        trace._TRACER_PROVIDER is None
        and _metrics_state._METER_PROVIDER is None
        and _logs_state._LOGGER_PROVIDER is None
    )


def _unknown() -> bool:
    """Another API version, without those attributes: never "nothing set" (the getters decide)."""
    return False


def _gate(state: tuple[tuple[object, str], ...]) -> Callable[[], bool]:
    """Return :func:`_unset` where the API has every attribute of ``state``, else :func:`_unknown`.

    Chosen once, at import: the check asked on every execution reads the three attributes only.
    """
    return _unset if all(hasattr(module, name) for module, name in state) else _unknown


nothing_set: Final = _gate(_STATE)
"""``nothing_set()``: whether no global provider of any signal is set, so the getters need not be
asked again.

Asked only once the getters have looked (the first look always asks them, so that a provider
named by an ``OTEL_PYTHON_*_PROVIDER`` variable loads then).
"""


def _tracer_unset() -> bool:
    """Whether the API holds no global tracer provider (its own "not set yet" state)."""
    return trace._TRACER_PROVIDER is None


def _proxy_hands_out_proxies() -> bool:
    """Another API version: whether the proxy provider kept from the first look still hands out a proxy."""
    return isinstance(_tracer_proxy[0].get_tracer(sc.SCOPE_NAME), trace.ProxyTracer)


tracer_unset: Final = _tracer_unset if hasattr(trace, "_TRACER_PROVIDER") else _proxy_hands_out_proxies
"""``tracer_unset()``, once the getter has returned the proxy provider: whether no global tracer
provider is set, so the getter need not be asked again (on another API version, asked of the proxy
provider kept from the first look)."""


def _meter_unset() -> bool:
    """Whether the API holds no global meter provider (its own "not set yet" state)."""
    return _metrics_state._METER_PROVIDER is None


meter_unset: Final = _meter_unset if hasattr(_metrics_state, "_METER_PROVIDER") else _unknown
"""``meter_unset()``: whether no global meter provider is set, so the meter getter need not be
asked again (:func:`_unknown`, never, on another API version)."""

_meter_looked: list[bool] = []
"""Holds ``True`` once the meter getter has been asked (and has loaded a provider named by
``OTEL_PYTHON_METER_PROVIDER``, if any)."""


def given(provider: _P) -> _P | None:
    """Return a provider given to the listener, or ``None`` when it is the API's proxy of its signal.

    The proxy is what a getter returns while no provider is set (``instrument(
    trace.get_tracer_provider())`` before the SDK is configured): it stands for the global
    provider, so it is acquired as the global one is, when set. Used as a provider of its own, it
    would open spans and contexts for nothing until then, and the counter series started at 0 on
    its meter before the SDK existed would be lost.
    """
    if isinstance(provider, trace.ProxyTracerProvider):
        return None
    cls = type(provider)
    if _of_api(cls, _METRICS_API):
        return _unless_proxy(provider, _METRICS_API, metrics.NoOpMeterProvider)
    return _unless_proxy(provider, _LOGS_API, NoOpLoggerProvider)


def tracer_provider() -> trace.TracerProvider | None:
    """Return the global tracer provider, or ``None`` while none is set."""
    if _tracer_proxy and tracer_unset():
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        _tracer_proxy[:] = [provider]
        return None
    return provider


def meter_provider() -> metrics.MeterProvider | None:
    """Return the global meter provider, or ``None`` while none is set."""
    if _meter_looked and meter_unset():
        return None
    provider = metrics.get_meter_provider()
    _meter_looked[:] = [True]
    return _unless_proxy(provider, _METRICS_API, metrics.NoOpMeterProvider)


def logger_provider() -> LoggerProvider | None:
    """Return the global logger provider, or ``None`` while none is set.

    A no-op provider set after the first look reads as none (it would log nothing anyway).
    """
    if _logger_proxy and _of_api(type(_logger_proxy[0].get_logger(sc.SCOPE_NAME)), _LOGS_API):
        return None
    provider = get_logger_provider()
    if _unless_proxy(provider, _LOGS_API, NoOpLoggerProvider) is None:
        _logger_proxy[:] = [provider]
        return None
    return provider
