"""Whole numbers from bounds computed in floats: one rule for every count a product decides."""

from __future__ import annotations

import math
from typing import Final

__all__ = ["ceil_whole"]

ROUNDING: Final = 1e-12
"""The relative error a product of a few floats may carry (``0.07 * 100`` is ``7.000000000000001``,
``99.9 * 1000 / 100`` is ``999.0000000000001``): a bound that close above a whole number is that
number."""


def ceil_whole(bound: float) -> float:
    """Return the smallest whole number not below ``bound``, ``bound`` taken down by its rounding first.

    ``inf`` stays ``inf`` (a bound too large for a float). The callers: a retry budget's allowance,
    the nearest rank of a percentile.
    """
    bound *= 1.0 - ROUNDING
    return math.ceil(bound) if bound < math.inf else bound
