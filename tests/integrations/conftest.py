"""The HTTP integrations' tests share one real local server per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import ScriptedHTTPServer


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    """A real HTTP server on 127.0.0.1 whose answers a test scripts; closed after the test."""
    s = ScriptedHTTPServer()
    try:
        yield s
    finally:
        s.close()
