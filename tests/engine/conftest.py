"""Fixtures of the engine's tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def unraisable() -> Iterator[list[object]]:
    """What the interpreter reports as ignored meanwhile (a death callback's or a freed coroutine's error)."""
    seen: list[object] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = previous
