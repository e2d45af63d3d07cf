"""The ``opentelemetry_instrumentor`` entry point (extra ``instrumentation``).

``opentelemetry-instrument`` finds :class:`OtelResilienceInstrumentor` through the
``opentelemetry_instrumentor`` entry point named ``otel_resilience``, lists it, and skips it when
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``otel_resilience``. It only calls
:func:`otel_resilience.telemetry.instrument` / :func:`~otel_resilience.telemetry.uninstrument`,
which keep working without this extra.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience.telemetry import current_listener, instrument, uninstrument

if TYPE_CHECKING:
    from otel_resilience.telemetry.otel import OtelListener

__all__ = ["OtelResilienceInstrumentor"]

_KEYWORDS: Final = tuple(inspect.signature(instrument).parameters)
"""What ``instrument()`` takes: the keywords the instrumentor hands on as they were given."""
_TAKEN: Final = frozenset((*_KEYWORDS, "skip_dep_check", "raise_exception_on_conflict"))
"""Every keyword the instrumentor's ``instrument()`` takes: the function's and the base class's own."""


def _unknown(unknown: list[str]) -> TypeError:
    """The error for keywords ``instrument()`` does not take, naming them and those it takes."""
    plural = "s" if len(unknown) > 1 else ""
    return TypeError(
        f"OtelResilienceInstrumentor.instrument() got unexpected keyword argument{plural} "
        f"{', '.join(map(repr, unknown))} (it takes {', '.join(map(repr, _KEYWORDS))}, "
        "and the base class's own)"
    )


class OtelResilienceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Reports otel_resilience's spans, metrics and logs through the given (or global) providers.

    ``instrument(...)`` takes the keywords of :func:`otel_resilience.telemetry.instrument` and
    hands on those it is given: one not given is read from its ``OTEL_RESILIENCE_*`` switch, as
    ``instrument()`` does. It takes the base class's own too (``skip_dep_check``, which
    ``opentelemetry-instrument`` passes, and ``raise_exception_on_conflict``); any other keyword
    (a misspelt ``tracer_provder=``) raises TypeError naming it, and nothing is registered.

    Its state is the registration itself: it is instrumented while the listener its
    ``instrument()`` registered is the registered one, so after the function ``uninstrument()``
    (or ``instrument()``) it instruments again. ``uninstrument()`` turns telemetry off whoever
    registered the listener (``import otel_resilience`` included), and says it is already
    uninstrumented only when no listener is registered.
    """

    _registered: weakref.ref[OtelListener] | None = None
    """The listener this instrumentor's ``instrument()`` registered."""

    @property
    def _is_instrumented_by_opentelemetry(self) -> bool:
        """Whether the listener this instrumentor registered is still the registered one."""
        listener = None if self._registered is None else self._registered()
        return listener is not None and listener is current_listener()

    @_is_instrumented_by_opentelemetry.setter
    def _is_instrumented_by_opentelemetry(self, value: bool) -> None:
        """The base class's bookkeeping: the state is read from the registration instead."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """No library to instrument: the patterns are this package's own."""
        return ()

    def instrument(self, **kwargs: Any) -> None:
        """Register the listener with the keywords given; refuse one neither this nor the base class takes.

        Raises:
            TypeError: A keyword neither :func:`~otel_resilience.telemetry.instrument` nor the
                base class takes, whether or not it is instrumented already (the base class
                only warns then, and would never see the keyword).
        """
        if unknown := sorted(kwargs.keys() - _TAKEN):
            raise _unknown(unknown)
        super().instrument(**kwargs)

    def uninstrument(self, **kwargs: Any) -> None:
        """Turn telemetry off (:func:`~otel_resilience.telemetry.uninstrument`), whoever turned it on."""
        if current_listener() is not None:
            self._uninstrument(**kwargs)
            return
        super().uninstrument(**kwargs)  # nothing registered: the base class says so

    def _instrument(self, **kwargs: Any) -> None:
        """Register the listener; the base class has taken its own keywords out of ``kwargs``."""
        listener = instrument(**kwargs)
        self._registered = weakref.ref(listener)

    def _uninstrument(self, **kwargs: Any) -> None:  # noqa: ARG002 - the BaseInstrumentor signature
        self._registered = None
        uninstrument()
