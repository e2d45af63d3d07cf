"""The demo's standard output, written from a thread of its own so that the event loop never waits for it.

A pipe nobody reads (``otel-resilience demo | (sleep 1000)``, a parent that never reads the
child's output) or a terminal stopped with Ctrl-S takes no more text once its buffer is full: a
write from the event loop would then wait there, and the stop that SIGINT or SIGTERM hands to the
loop would never run. :class:`BackgroundOutput` queues the text and a daemon thread writes it; the
views skip their frames while the output is :func:`backlogged` (the summary is always queued),
and :meth:`BackgroundOutput.drain` waits for the queued text with a bound.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Final

__all__ = ["BACKLOG", "BackgroundOutput", "OutputNotTakenError", "backlogged", "interrupted_wait"]

BACKLOG: Final = 16 * 1024
"""Characters queued and not yet taken by the output past which the live view skips its frames."""


_POLL: Final = 0.1
"""Real seconds between two looks at the signals while :meth:`BackgroundOutput.drain` waits."""


class OutputNotTakenError(OSError):
    """The output did not take the queued text (the summary) in the time it was given."""


def interrupted_wait() -> OutputNotTakenError:
    """The error of a wait for the output that a signal ended (``EINTR``)."""
    return OutputNotTakenError(errno.EINTR, "stopped by a signal before it was taken")


def _never() -> bool:
    return False


class BackgroundOutput:
    """A text stream whose writes are queued and written to ``out`` by a daemon thread.

    A write never waits for ``out``; an error of ``out`` (a reader gone, a full disk) is raised by
    the next :meth:`write`, :meth:`flush` or :meth:`drain`, in the caller's thread. A stream with a file
    descriptor is written with ``os.write`` on it, never through its buffer, so that a thread left
    waiting for a reader holds no lock the interpreter takes at exit.

    Args:
        out: The stream to write (``sys.stdout`` in the command).
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._descriptor: int | None = None
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            self._descriptor = out.fileno()
        self.encoding: str = getattr(out, "encoding", None) or "utf-8"
        self._queue: deque[str] = deque()
        self._pending = 0
        self._error: Exception | None = None
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        """Start the writer thread (on the first write)."""
        self._thread = threading.Thread(target=self._run, name="otel-resilience-demo-output", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        condition = self._condition
        while True:
            with condition:
                while not self._queue:
                    condition.wait()
                text = self._queue[0]
            try:
                self._put(text)
            except Exception as error:  # noqa: BLE001 - raised again by the next write: nothing is lost
                with condition:
                    self._error = error
                    self._queue.clear()
                    self._pending = 0
                    condition.notify_all()
                return
            with condition:
                self._queue.popleft()
                self._pending -= len(text)
                condition.notify_all()

    def _put(self, text: str) -> None:
        """Write ``text`` to the output, waiting as long as the output makes it wait."""
        if self._descriptor is None:
            self._out.write(text)
            self._out.flush()
            return
        data = memoryview(text.encode(self.encoding, "replace"))
        while data:
            data = data[os.write(self._descriptor, data) :]

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, text: str) -> int:
        """Queue ``text``; raise the error that ended the writing, if any."""
        with self._condition:
            self._raise_error()
            if self._thread is None:
                self._start()
            self._queue.append(text)
            self._pending += len(text)
            self._condition.notify_all()
        return len(text)

    def flush(self) -> None:
        """Nothing to do (the thread writes as soon as it can); raise the error that ended the writing."""
        with self._condition:
            self._raise_error()

    @property
    def backlogged(self) -> bool:
        """Whether more than :data:`BACKLOG` characters wait for the output to take them."""
        return self._pending > BACKLOG

    def drain(self, timeout: float | None, interrupted: Callable[[], bool] = _never) -> None:
        """Wait until the output has taken everything queued (``timeout``: seconds at most, or ``None``).

        ``interrupted`` is asked at every look (each :data:`_POLL` at most): once it says a signal
        came, the wait ends, whether or not the signal's handler could raise here (a handler run
        inside a finalizer the collector ran on this thread has its error ignored).

        Raises:
            OutputNotTakenError: The output did not take all of it in time, or ``interrupted``
                said a signal came (``EINTR``: :func:`interrupted_wait`).
            OSError: Writing failed (a reader gone, a full disk).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._queue and self._error is None:
                if interrupted():
                    raise interrupted_wait()
                left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
                if left <= 0:
                    msg = f"{self._pending} characters were not taken within {timeout:g} s"
                    raise OutputNotTakenError(msg)
                # Woken up now and then: a signal the kernel gave another thread (the writer, blocked
                # in its write) runs its Python handler only when this thread runs again.
                self._condition.wait(left)
            self._raise_error()

    def isatty(self) -> bool:
        """Whether the output is a terminal."""
        return self._out.isatty()

    def fileno(self) -> int:
        """The output's file descriptor (``OSError`` when it has none)."""
        if self._descriptor is None:
            raise io.UnsupportedOperation("fileno")
        return self._descriptor


def backlogged(out: object) -> bool:
    """Whether ``out`` is a :class:`BackgroundOutput` whose reader is behind: a live frame is then skipped."""
    return isinstance(out, BackgroundOutput) and out.backlogged
