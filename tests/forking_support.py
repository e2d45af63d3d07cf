"""Run a function in a real ``os.fork()`` child: its exit code, or a failure when it hangs (killed first).

The child runs ``fn`` and leaves with ``os._exit`` (0: ``fn`` returned, 1: it raised, the
traceback on stderr), never through pytest's own exit. The parent waits for it at most
``timeout`` seconds, then kills it and fails the test: no process is ever left behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest


def run_in_child(fn: Callable[[], object], timeout: float = 30.0) -> int:
    """Fork, run ``fn`` in the child; return the child's exit code (fail if it did not end in time)."""
    with warnings.catch_warnings():
        # Python 3.12 on warns of a fork while threads run: these tests fork on purpose then.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child did not end within {timeout:g} s (killed): it hung")


@contextmanager
def held_by_another_thread(lock: threading.Lock | threading.RLock) -> Iterator[None]:
    """Hold ``lock`` in another thread for the block's duration (as a thread caught mid-update would)."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    taken.wait()
    try:
        yield
    finally:
        done.set()
        thread.join()
