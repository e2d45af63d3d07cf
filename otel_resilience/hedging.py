"""The former home of :mod:`otel_resilience.patterns.hedging`, kept as an alias of its public names.

``from otel_resilience.hedging import X`` keeps working for every name of its ``__all__``; new code
imports from ``otel_resilience`` (every public name) or ``otel_resilience.patterns.hedging``.
"""

from otel_resilience.patterns.hedging import *  # noqa: F403
from otel_resilience.patterns.hedging import __all__  # noqa: F401 - the alias's names are its pattern's
