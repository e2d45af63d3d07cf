"""The former home of :mod:`otel_resilience.patterns.retry`, kept as an alias of its public names.

``from otel_resilience.retry import X`` keeps working for every name of its ``__all__``; new code
imports from ``otel_resilience`` (every public name) or ``otel_resilience.patterns.retry``. The
attribute ``otel_resilience.retry`` stays the ``retry`` decorator once this module is imported too
(the package's module type keeps it): take names from here with ``from ... import``.
"""

from otel_resilience.patterns.retry import *  # noqa: F403
from otel_resilience.patterns.retry import __all__  # noqa: F401 - the alias's names are its pattern's
