"""The former home of :mod:`otel_resilience.patterns.circuit_breaker`, kept as an alias of its public names.

``from otel_resilience.circuit_breaker import X`` keeps working for every name of its ``__all__``; new code
imports from ``otel_resilience`` (every public name) or ``otel_resilience.patterns.circuit_breaker``.
"""

from otel_resilience.patterns.circuit_breaker import *  # noqa: F403
from otel_resilience.patterns.circuit_breaker import __all__  # noqa: F401 - the alias's names are its pattern's
