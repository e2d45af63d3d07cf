"""The former home of :mod:`otel_resilience.patterns.rate_limiter`, kept as an alias of its public names.

``from otel_resilience.rate_limiter import X`` keeps working for every name of its ``__all__``; new code
imports from ``otel_resilience`` (every public name) or ``otel_resilience.patterns.rate_limiter``.
"""

from otel_resilience.patterns.rate_limiter import *  # noqa: F403
from otel_resilience.patterns.rate_limiter import __all__  # noqa: F401 - the alias's names are its pattern's
