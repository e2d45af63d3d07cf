"""The demo's standard output, written from a thread of its own: an output nobody reads holds up nothing."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_resilience.demo import app
from otel_resilience.demo.app import run_demo
from otel_resilience.demo.options import DemoOptions
from otel_resilience.demo.output import BACKLOG, BackgroundOutput, OutputNotTakenError
from otel_resilience.demo.view import PlainView


class _Stalled(io.StringIO):
    """An output whose reader has stopped reading: every write waits until :attr:`reading` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()

    def write(self, text: str) -> int:
        self.reading.wait()
        return super().write(text)


@pytest.fixture
def stalled() -> Iterator[_Stalled]:
    """A stalled output, let go at the end of the test (its writer thread then ends its writes)."""
    out = _Stalled()
    yield out
    out.reading.set()


def test_the_plain_view_skips_its_live_lines_while_the_output_is_not_read(stalled: _Stalled) -> None:
    """Lines queued past the backlog are not queued: the view says how many it left out, then shows
    the summary whole once the output takes text again."""
    output = BackgroundOutput(stalled)
    view = PlainView(output, 1.0)  # type: ignore[arg-type]  # a text stream
    view.begin(["header"])
    line = "x" * 100
    for _ in range(2 * BACKLOG // len(line)):
        view._write(line, live=True)
    assert output.backlogged
    view.end(["summary line 1", "summary line 2"])
    stalled.reading.set()
    output.drain(30)
    lines = stalled.getvalue().splitlines()
    shown = lines.count(line)
    assert 0 < shown < 2 * BACKLOG // len(line)
    assert lines[0] == "header"
    assert lines[-3:] == [
        f"({2 * BACKLOG // len(line) - shown} line(s) not shown: standard output was not read)",
        "summary line 1",
        "summary line 2",
    ]


@pytest.mark.parametrize(
    "error",
    [BrokenPipeError(errno.EPIPE, "Broken pipe"), ValueError("I/O operation on closed file.")],
    ids=["reader-gone", "closed"],
)
def test_an_error_of_the_output_is_raised_by_the_next_write(error: Exception) -> None:
    """A reader gone (EPIPE) or a stream closed while the thread writes: the wait for the output and
    the next write raise it, for the run to end (no wait for a thread that is gone)."""

    class Failing(io.StringIO):
        def write(self, text: str) -> int:
            raise error

    output = BackgroundOutput(Failing())
    output.write("first\n")
    with pytest.raises(type(error)):
        output.drain(None)
    with pytest.raises(type(error)):
        output.write("second\n")


def _options(tmp_path: Path, duration: float) -> DemoOptions:
    return DemoOptions(
        scenario="steady",
        duration=duration,
        time_scale=0.01,
        port=None,
        plain=True,
        summary_json=tmp_path / "summary.json",
    )


async def test_a_stopped_run_gives_its_output_a_bounded_time_to_take_the_summary(
    stalled: _Stalled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped (as by a signal) with an output nobody reads: the run waits OUTPUT_GRACE for it, then
    ends with OutputNotTakenError; the summary file is written all the same."""
    monkeypatch.setattr(app, "OUTPUT_GRACE", 0.2)
    options = _options(tmp_path, 60)
    output = BackgroundOutput(stalled)
    stop = app.asyncio.Event()
    app.asyncio.get_running_loop().call_later(0.5, stop.set)
    with pytest.raises(OutputNotTakenError, match=r"not taken within 0\.2 s"):
        await run_demo(
            options,
            view=PlainView(output, 1.0),
            stop=stop,
            handle_signals=False,
            output=output,  # type: ignore[arg-type]
        )
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["stopped_by"] == "stop"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_ends_the_wait_for_a_reader_of_the_summary(
    signum: signal.Signals, stalled: _Stalled, tmp_path: Path
) -> None:
    """A run its duration ended waits for its output's reader, as any program writing to a pipe;
    SIGINT or SIGTERM ends that wait (OutputNotTakenError, EINTR), and the summary file is written.

    The signal is handled as a shell's foreground job has it: a test runner's worker may ignore
    SIGINT (pytest-xdist's do), and the run leaves an ignored signal ignored."""
    previous = signal.signal(signum, signal.default_int_handler)
    try:
        await _signal_in_the_wait_for_the_reader(signum, stalled, tmp_path)
    finally:
        signal.signal(signum, previous)


async def _signal_in_the_wait_for_the_reader(
    signum: signal.Signals, stalled: _Stalled, tmp_path: Path
) -> None:
    output = BackgroundOutput(stalled)
    waiting = threading.Event()
    drain = output.drain

    def drain_then_signal(timeout: float | None, interrupted: Callable[[], bool]) -> None:
        assert timeout is None  # the duration ended the run: no bound but a signal
        waiting.set()
        drain(timeout, interrupted)

    output.drain = drain_then_signal  # type: ignore[method-assign]
    done = threading.Event()

    def signal_in_the_wait() -> None:
        while not done.is_set():  # however long a loaded machine takes to reach the wait
            if waiting.wait(0.1):
                if not done.is_set():
                    os.kill(os.getpid(), signum)
                return

    signaller = threading.Thread(target=signal_in_the_wait)
    signaller.start()
    try:
        with pytest.raises(OutputNotTakenError) as raised:
            await run_demo(
                _options(tmp_path, 0.3),
                view=PlainView(output, 1.0),  # type: ignore[arg-type]
                handle_signals=True,
                output=output,
            )
    finally:
        done.set()
        waiting.set()
        signaller.join(60)
    assert raised.value.errno == errno.EINTR
    assert raised.value.strerror == "stopped by a signal before it was taken"
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["stopped_by"] == "duration"


def test_a_wait_for_the_output_ends_once_a_signal_is_said_to_have_come(stalled: _Stalled) -> None:
    """The wait asks whether a signal came at every look, so it ends even when the handler's error
    could not reach it (raised inside a finalizer the collector ran on this thread: ignored)."""
    output = BackgroundOutput(stalled)
    output.write("the summary\n")
    looks = iter([False, False, True])
    with pytest.raises(OutputNotTakenError) as raised:
        output.drain(None, lambda: next(looks))
    assert raised.value.errno == errno.EINTR
