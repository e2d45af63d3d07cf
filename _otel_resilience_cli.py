"""The ``otel-resilience`` command's entry point, which runs before the package is loaded.

Loading ``otel_resilience`` takes about a third of a second. A Ctrl-C in that time would print a
traceback, and a SIGTERM would kill the process without a word; this module loads nothing but
the interpreter's own ``sys`` before its guard (its other imports happen under it), so the command
handles both signals from its first instruction, as the demo does until its run begins: one line
on standard error and the exit status of a process the signal stopped (:func:`signal_status`).
``otel_resilience.__main__`` takes :func:`signals_interrupt`, :func:`stopped_by_signal` and
:func:`signal_status` from here for that part of the demo and for its run, and ``python -m
otel_resilience``, which loads the package before any code of the command runs, the guard of that
load (:func:`guard_package_load`).
"""

import sys  # built in: loaded with the interpreter (so no `from __future__ import`, a module of its own)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without loading typing (and re) before the guard
if TYPE_CHECKING:
    from types import TracebackType
    from typing import IO

__all__ = [
    "SignalInterrupt",
    "end_package_guard",
    "guard_package_load",
    "main",
    "signal_status",
    "signals_interrupt",
    "stopped_by_signal",
]


def signal_status(signum: int) -> int:
    """The exit status of a command the signal ``signum`` stopped: 128 + its number.

    It is how a shell reports a process the signal killed: 130 for SIGINT, 143 for SIGTERM.
    """
    return 128 + signum


class SignalInterrupt(KeyboardInterrupt):
    """What SIGTERM raises while :func:`signals_interrupt`'s block runs.

    A ``KeyboardInterrupt`` that names its signal (``signum``).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM's handler while :func:`signals_interrupt`'s block runs."""
    raise SignalInterrupt(signum)


class _SignalsInterrupt:
    """See :func:`signals_interrupt`."""

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        self._previous: object = None

    def __enter__(self) -> None:
        import signal  # noqa: PLC0415 - loaded under the caller's guard
        import threading  # noqa: PLC0415 - loaded under the caller's guard

        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _interrupt)
        self._previous = signal.SIG_DFL

    def __exit__(self, kind: object, error: object, traceback: "TracebackType | None") -> None:
        import signal  # noqa: PLC0415 - loaded already by __enter__

        if self._previous is not None and signal.getsignal(signal.SIGTERM) is _interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def signals_interrupt() -> _SignalsInterrupt:
    """Return a context manager that makes SIGTERM interrupt like Ctrl-C while its block runs.

    SIGINT raises ``KeyboardInterrupt`` already (the interpreter's handler); SIGTERM at its default
    would kill the process, so in the main thread it raises :class:`SignalInterrupt`, a
    ``KeyboardInterrupt`` naming it, and its default is put back after the block. A handler
    installed by the application, or an ignored SIGTERM, is left alone.
    """
    return _SignalsInterrupt()


def stopped_by_signal(command: str, err: "IO[str]", interrupt: "KeyboardInterrupt | int") -> int:
    """Say on ``err`` that ``command`` was stopped by a signal before its work began.

    ``interrupt`` is the signal's number, or what it raised (a plain ``KeyboardInterrupt``: SIGINT).

    Returns:
        The exit status of the signal (:func:`signal_status`), as for a demo run a signal ended.
    """
    import signal  # noqa: PLC0415 - loaded already by the guard that caught the signal

    err.write(f"{command}: stopped by signal\n")
    if isinstance(interrupt, int):
        return signal_status(interrupt)
    return signal_status(getattr(interrupt, "signum", signal.SIGINT))


_COMMAND = "otel-resilience"
_replaced: "list[int]" = []
"""The signals :func:`guard_package_load` gave :func:`_stop` (put back by :func:`end_package_guard`)."""


def _stop(signum: int, _frame: object) -> None:
    """The handler of SIGINT and SIGTERM while ``python -m otel_resilience`` loads the package."""
    raise SystemExit(stopped_by_signal(_COMMAND, sys.stderr, signum))


def guard_package_load(package: str) -> None:
    """Make SIGINT and SIGTERM stop ``python -m <package>`` cleanly while the interpreter loads it.

    The package calls this first. ``python -m`` loads the package before any code of its
    ``__main__`` runs, so no ``try`` of the command can catch a Ctrl-C then; for that command only
    (the interpreter is still locating the module it runs: ``sys.argv[0]`` is ``"-m"``) both
    signals end the process there as they end the script's load, with :func:`stopped_by_signal`'s
    line and status (a ``SystemExit`` out of the import), until :func:`end_package_guard`. A
    handler installed by the application, or an ignored signal, is left alone. An import of the
    package in any other way, ``python -m`` of one of its modules included, changes nothing.
    """
    argv: list[str] = getattr(sys, "argv", [])  # none in an embedded interpreter
    given = sys.orig_argv  # the interpreter's own arguments, then the module's name, then argv[1:]
    if argv[:1] != ["-m"] or len(given) <= len(argv):
        return
    if given[len(given) - len(argv)] not in (package, f"-m{package}"):  # `-m NAME` or `-mNAME`
        return
    import signal  # noqa: PLC0415 - only for `python -m`
    import threading  # noqa: PLC0415 - only for `python -m`

    if threading.current_thread() is not threading.main_thread():
        return
    for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
        if signal.getsignal(signum) is default:
            signal.signal(signum, _stop)
            _replaced.append(signum)


def end_package_guard() -> None:
    """End :func:`guard_package_load`'s guard, once the command is loaded: its own guard takes over.

    Puts back the interpreter's handler of each signal the guard took (unless another was set since).
    """
    import signal  # noqa: PLC0415 - loaded already by the package

    while _replaced:
        signum = _replaced.pop()
        if signal.getsignal(signum) is _stop:
            signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)


def main() -> int:
    """Load ``otel_resilience.__main__`` and run its ``main`` (the ``otel-resilience`` command).

    Returns:
        The command's exit status, or the signal's (:func:`signal_status`) when SIGINT or SIGTERM
        came while it was loading.
    """
    try:
        with signals_interrupt():
            from otel_resilience.__main__ import main as command  # noqa: PLC0415 - loaded under the guard
    except KeyboardInterrupt as interrupt:
        return stopped_by_signal(_COMMAND, sys.stderr, interrupt)
    return command()


if __name__ == "__main__":
    sys.exit(main())
