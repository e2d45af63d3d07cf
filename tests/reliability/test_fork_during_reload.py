"""A process forked while a reload runs in another thread (a configuration watch applying a file).

A reload holds the policy handle's lock, and briefly its keys' store's, while it brings every key
to the new config: a child forked then must find them free (its calls to new keys, its stats
reads, its own watch's next apply), as it finds every other lock such work holds.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from forking_support import held_by_another_thread, run_in_child
from support import until_sync

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.manager import keyed
from otel_resilience.manager import policy as policy_module

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

FIRST = "policies:\n  payments:\n    timeout: 2s\n"
SECOND = "policies:\n  payments:\n    timeout: 3s\n"


def _write(path: Path, text: str) -> None:
    """Write ``text`` so that a watch sees a change (size or modification time)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns <= before:  # a coarse clock: move the time on explicitly
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def _answers(fn: object, seconds: float = 5.0) -> bool:
    """Run ``fn`` in a thread of its own; return whether it ended within ``seconds`` (not hung)."""
    thread = threading.Thread(target=fn, daemon=True)  # type: ignore[arg-type]
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_a_child_forked_while_a_watch_reloads_a_policy_works_and_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch's thread is inside the reload at the fork: the child's calls, reads and watch go on."""
    pytest.importorskip("yaml")
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = ResilienceManager()
    watch = manager.watch(path, interval=0.01)
    handle = manager.policy("payments")
    assert handle.for_key("tenant-a").execute_sync(lambda: 1) == 1  # a key the reload brings on
    inside, go = threading.Event(), threading.Event()
    reconfigure = keyed.reconfigure  # the policy module's, which a reload calls

    def held_inside(*args: object) -> None:
        if threading.current_thread() is watch._thread:
            inside.set()
            go.wait(10.0)
        reconfigure(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(policy_module, "reconfigure", held_inside)
    _write(path, SECOND)
    assert inside.wait(10.0), "the watch never applied the file"

    def child() -> None:
        go.set()  # the child's own reload does not pause
        assert _answers(lambda: handle.get_stats())
        assert _answers(lambda: handle.for_key("tenant-b").execute_sync(lambda: 2))
        # the child's watch applies the file the parent's was applying
        until_sync(lambda: manager.policy("payments").config.timeout == 3.0, 10.0)
        watch.stop()

    try:
        code = run_in_child(child)
    finally:
        go.set()
        watch.stop()
    assert code == 0


@pytest.mark.parametrize("holder", ["the handle's", "its keys'"])
def test_a_child_forked_while_a_reload_holds_a_policy_lock_calls_and_reloads(holder: str) -> None:
    """A policy handle's lock, or its keys', held by another thread at the fork is free in the child."""
    manager = ResilienceManager()
    handle = manager.policy("forked-reload", ResilienceConfig(timeout=2.0))
    handle.for_key("tenant-a").execute_sync(lambda: 1)
    lock = handle._lock if holder == "the handle's" else handle._keys._lock

    def child() -> None:
        assert _answers(lambda: handle.get_stats())
        assert _answers(lambda: handle.for_key("tenant-b").execute_sync(lambda: 2))
        assert _answers(lambda: manager.reconfigure("forked-reload", ResilienceConfig(timeout=3.0)))
        assert handle.config.timeout == 3.0

    with held_by_another_thread(lock):
        code = run_in_child(child)
    assert code == 0
