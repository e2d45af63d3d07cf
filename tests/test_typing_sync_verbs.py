"""A coroutine function given to a sync verb is an error for ``mypy --strict``, with a name that says why.

``tests/typing/api.py`` pins each entry's error code (a ``# type: ignore[...]`` that must be
used); here mypy runs on a user's module and the message it prints is read, as the README
describes it: the result is a ``SyncCallOfCoroutineFunction`` that names ``UseTheAsyncVariant``,
and what a sync verb takes (a plain function, one that never returns, one typed ``Any``) is clean.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

USER_MODULE = """
from typing import Any, NoReturn

from otel_resilience import CircuitBreaker, ResilienceConfig, get_resilience_manager, retry_sync


async def fetch(user_id: int) -> str:
    return str(user_id)


def fetch_sync(user_id: int) -> str:
    return str(user_id)


def load(text: str) -> Any:
    return text


def always_fails() -> NoReturn:
    raise ConnectionError


async def wrong() -> str:
    breaker = CircuitBreaker("typing")
    breaker.call_sync(fetch, 1)  # line 24
    await get_resilience_manager().policy("typing", ResilienceConfig()).execute_sync(fetch, 2)  # line 25
    return await retry_sync(fetch, 3)  # line 26


def right() -> str:
    breaker = CircuitBreaker("typing")
    value: str = breaker.call_sync(fetch_sync, 1) + retry_sync(load, "2")
    if not value:
        breaker.call_sync(always_fails)
    return value
"""


def test_mypy_names_the_mistake_and_passes_what_a_sync_verb_takes(tmp_path: Path) -> None:
    """Each wrong call is an error naming ``UseTheAsyncVariant``; the right ones are clean."""
    module = tmp_path / "user_module.py"
    module.write_text(textwrap.dedent(USER_MODULE).lstrip(), encoding="utf-8")
    # Incremental, in the project's cache (.mypy_cache, as `mypy otel_resilience` and bash .ci/run
    # leave it): only the user's module is checked anew, not the whole package (12 s of CPU).
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(module),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error: " in line]
    assert [line.split(":")[1] for line in errors] == ["24", "25", "26"], checked.stdout
    assert all("UseTheAsyncVariant" in line for line in errors), checked.stdout
    assert "[unused-coroutine]" in errors[0]
    assert "[unused-coroutine]" in errors[1]
    assert "[return-value]" in errors[2]
