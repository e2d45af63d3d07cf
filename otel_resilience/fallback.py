"""The former home of :mod:`otel_resilience.patterns.fallback`, kept as an alias of its public names.

``from otel_resilience.fallback import X`` keeps working for every name of its ``__all__``; new code
imports from ``otel_resilience`` (every public name) or ``otel_resilience.patterns.fallback``.
"""

from otel_resilience.patterns.fallback import *  # noqa: F403
from otel_resilience.patterns.fallback import __all__  # noqa: F401 - the alias's names are its pattern's
