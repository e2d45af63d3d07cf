"""The ``otel-resilience`` command (also ``python -m otel_resilience``).

::

    otel-resilience demo [--scenario steady|outage|brownout|flapping|surge] [--seed N] [--duration S]
                         [--time-scale F] [--host ADDR] [--port N | --no-metrics-server]
                         [--otlp-endpoint URL] [--once] [--plain] [--interval S]
                         [--summary-json PATH]
                         [--config PATH [--format yaml|toml] [--watch-interval S]]
                         [--redis-url URL [--replicas N] [--redis-drops]]
    otel-resilience export dashboards|alerts|collector|runbooks DIR
                           [--runbook-url-base URL] [--job-label LABEL] [--set FIELD=VALUE]
                           [--time-scale F]
    otel-resilience check PATH [--format yaml|toml]
    otel-resilience schema
    otel-resilience --version

The demo's dependencies (the ``demo`` extra) are imported only when ``demo`` runs. ``export``
copies the files shipped in the package (no extra needed); its options regenerate the alert
rules, which needs the ``ops`` extra. ``check`` validates a configuration file and lists its
policies (YAML needs the ``config`` extra); ``schema`` prints the file's JSON Schema. ``--help``
works on a bare install.
Exit status: 0 on success, 1 when the command failed (a busy port, a lost call, a missing
module, an invalid configuration file, a closed standard output), 2 for a usage error (no command,
an argument a command does not take: the usage shown is that command's); 130 or 143
(128 + the signal's number) for a ``demo`` run SIGINT or SIGTERM ended. SIGINT or SIGTERM before a
command begins (while its arguments are read; for ``demo``, until its run) stops it with one line
and that status, and so does it while the package loads (the ``otel-resilience``
script loads it under the guard of ``_otel_resilience_cli``; ``python -m otel_resilience``, which
loads the package first, under that module's :func:`~_otel_resilience_cli.guard_package_load`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Final

from _otel_resilience_cli import end_package_guard, signals_interrupt, stopped_by_signal
from otel_resilience import config as config_module
from otel_resilience.config.errors import cannot_read
from otel_resilience.config.formats import Format, UnknownFormatError, file_format
from otel_resilience.config.report import summary as config_summary
from otel_resilience.demo.options import (
    DEFAULT_HOST,
    DEFAULT_INTERVAL,
    DEFAULT_PORT,
    DEFAULT_REPLICAS,
    DEFAULT_SCENARIO,
    DEFAULT_SEED,
    DEFAULT_TIME_SCALE,
    DEFAULT_WATCH_INTERVAL,
    MAX_REPLICAS,
    MAX_SEED,
    MIN_TIME_SCALE,
    REDIS_NAMESPACE,
    SCENARIO_NAMES,
    TICK,
    DemoOptions,
    check_duration_option,
    check_host,
    check_interval,
    check_otlp_endpoint,
    check_port,
    check_replicas,
    check_seed,
    check_summary_json,
    check_time_scale,
)
from otel_resilience.ops import export as export_module

__all__ = ["EXPORT_KINDS", "build_parser", "main"]

EXPORT_KINDS: Final = export_module.KINDS
"""What ``otel-resilience export`` can write."""
_DEMO_MODULES: Final = (
    ("opentelemetry.sdk", "opentelemetry-sdk"),
    ("opentelemetry.exporter.prometheus", "opentelemetry-exporter-prometheus"),
    ("prometheus_client", "prometheus-client"),
    ("rich", "rich"),
)
_OTLP_MODULE: Final = ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http")

_DEMO_EPILOG: Final = """\
scenarios:
  steady    every dependency at its baseline (ML bursts absorbed by retries, a flaky API)
  outage    ml_service goes down at t+60 s for 4-5.5 minutes: its breaker opens, probes, closes
  brownout  database latency climbs from 40 ms to 20 s: timeouts, a saturated bulkhead, fallbacks
  flapping  ml_service goes down and up repeatedly; content_api has error storms
  surge     a noisy caller floods content_api past its rate limit (calls shed, answered by the
            cached fallback); strained dependencies: the shared retry budget denies retries

Time is compressed: every duration of the system (timeouts, backoffs, breaker timeouts, latencies,
the schedule) is multiplied by --time-scale and every request rate divided by it; t+N in the output
is production time. --duration and --interval are real seconds. The schedule repeats every 600 s of
production time (30 s at the default scale).

exit status: 0 when --duration ended the run; 130 after Ctrl-C (SIGINT), 143 after SIGTERM (the
summary printed first); 1 on a failure (a lost call, a busy port, a --config or --summary-json
file that failed); 2 on a usage error.

examples:
  otel-resilience demo                                   outage, live view, metrics on :9464
  otel-resilience demo --scenario brownout --duration 40 --plain
  otel-resilience demo --time-scale 0.01 --duration 8 --summary-json out.json   (fast mode)
  otel-resilience demo --otlp-endpoint http://127.0.0.1:4318
  otel-resilience demo --redis-url redis://127.0.0.1:6379/0   2 replicas sharing breakers and limits
"""


_without_option: Final = export_module.without_option
_arg: Final = export_module.number_argument


def _int_arg(check: Callable[[int], int]) -> Callable[[str], int]:
    """Return an argparse ``type`` that parses an integer and validates it with ``check``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(_without_option(error)) from None

    return convert


def _text_arg(check: Callable[[str], str]) -> Callable[[str], str]:
    """Return an argparse ``type`` that validates a text with ``check`` (a ``ValueError``: a usage error)."""

    def convert(text: str) -> str:
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(_without_option(error)) from None

    return convert


def _summary_json_argument(text: str) -> Path:
    """The argparse ``type`` of ``--summary-json``: a path, not ``-`` (standard output by convention).

    Standard output carries the demo's view and its summary, which the JSON would be mixed into:
    ``/dev/stdout`` says so on purpose, and ``./-`` names a file called ``-``.
    """
    if text == "-":
        msg = (
            "'-' (standard output) is refused: the demo writes its view and its summary there, and the "
            "JSON would be mixed into them; give /dev/stdout to append the JSON after the summary, or "
            "./- for a file named '-'"
        )
        raise argparse.ArgumentTypeError(msg)
    return export_module.path_argument(text)


class _CommandParser(argparse.ArgumentParser):
    """The parser of a command (``demo``, ``export``, ...): it refuses the arguments it does not know.

    The top-level parser hands a command the arguments after its name and, left to itself, would
    report those the command does not know under its own usage (``otel-resilience [-h] [--version]
    COMMAND ...``, no option of the command); the command's usage names them.
    """

    def parse_known_args(  # type: ignore[override]  # the signature differs across Python versions
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``otel-resilience`` command."""
    parser = argparse.ArgumentParser(
        prog="otel-resilience",
        description="Fault-tolerance patterns for asyncio and threads, native to OpenTelemetry: "
        "run the demo, export the operations artifacts, or check a configuration file.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    demo = commands.add_parser(
        "demo",
        help="run a simulated system with failing dependencies (needs the 'demo' extra)",
        description="Run a simulated system in process: an ML service that fails in bursts, a slow "
        "database and a flaky remote API, each called through the ResilienceManager with the "
        "typical configurations. Shows a live view (plain lines when stdout is not a terminal), "
        "serves OpenTelemetry metrics on /metrics, and prints a summary of the measured availability, "
        "success rate, recovery time and lost calls at the end (Ctrl-C or SIGTERM end it cleanly).",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.set_defaults(command_parser=demo)  # its usage errors print its own usage
    demo.add_argument(
        "--scenario",
        choices=SCENARIO_NAMES,
        default=DEFAULT_SCENARIO,
        help=f"what goes wrong (default: {DEFAULT_SCENARIO})",
    )
    demo.add_argument(
        "--seed",
        type=_int_arg(check_seed),
        default=DEFAULT_SEED,
        help=f"an integer from 0 to 2**{MAX_SEED.bit_length()}-1, the seed of the fault schedule; the same "
        f"seed gives the same schedule (default: {DEFAULT_SEED})",
    )
    demo.add_argument(
        "--duration",
        type=_arg(lambda v: check_duration_option("--duration", v)),
        default=None,
        metavar="SECONDS",
        help="real seconds to run (default: until Ctrl-C or SIGTERM)",
    )
    demo.add_argument(
        "--time-scale",
        type=_arg(check_time_scale),
        default=DEFAULT_TIME_SCALE,
        metavar="F",
        help=f"demo seconds per production second, {MIN_TIME_SCALE:g} <= F <= 1 "
        f"(default: {DEFAULT_TIME_SCALE:g}, i.e. 20x faster; 0.01 is the fast mode of the tests; "
        "1 is production timing)",
    )
    demo.add_argument(
        "--host",
        type=_text_arg(check_host),
        default=DEFAULT_HOST,
        metavar="ADDR",
        help=f"address of /metrics, not with --no-metrics-server (default: {DEFAULT_HOST})",
    )
    metrics = demo.add_mutually_exclusive_group()
    metrics.add_argument(
        "--port",
        type=_int_arg(check_port),
        default=DEFAULT_PORT,
        help=f"port of /metrics, 1-65535; a busy port is an error (default: {DEFAULT_PORT})",
    )
    metrics.add_argument(
        "--no-metrics-server",
        action="store_true",
        help="do not serve /metrics (the metrics are still collected)",
    )
    demo.add_argument(
        "--otlp-endpoint",
        type=_text_arg(check_otlp_endpoint),
        default=None,
        metavar="URL",
        help="also export metrics and traces over OTLP/HTTP (protobuf) to URL/v1/metrics and "
        "URL/v1/traces: URL is the receiver's base URL, e.g. http://127.0.0.1:4318 (needs "
        "opentelemetry-exporter-otlp-proto-http)",
    )
    demo.add_argument(
        "--once",
        action="store_true",
        help="play the scenario's faults once, then keep the dependencies at their baseline "
        "(default: the faults repeat every 600 s of production time)",
    )
    demo.add_argument("--plain", action="store_true", help="plain line output even on a terminal")
    demo.add_argument(
        "--interval",
        type=_arg(check_interval),
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"real seconds between status lines of the plain output, at least {TICK:g} "
        f"(default: {DEFAULT_INTERVAL:g})",
    )
    demo.add_argument(
        "--config",
        type=export_module.path_argument,
        default=None,
        metavar="PATH",
        help="a configuration file (YAML or TOML, production values) whose policies replace the "
        "demo's of the same names: content_api, ml_service, database, tenants (e.g. examples/demo.yaml); "
        "watched during the run: an edit saved applies live",
    )
    demo.add_argument(
        "--format",
        choices=("yaml", "toml"),
        default=None,
        help="the --config file's format (default: from its suffix)",
    )
    demo.add_argument(
        "--watch-interval",
        type=_arg(lambda v: check_duration_option("--watch-interval", v)),
        default=None,
        metavar="SECONDS",
        help="real seconds between two looks at the --config file, watched during the run: an edit "
        f"saved applies live, one to two intervals later (default: {DEFAULT_WATCH_INTERVAL:g})",
    )
    demo.add_argument(
        "--summary-json",
        type=_summary_json_argument,
        default=None,
        metavar="PATH",
        help="also write the summary to PATH as JSON, at the end of the run; not '-': standard output "
        "carries the view and the summary (/dev/stdout appends the JSON after them)",
    )
    demo.add_argument(
        "--redis-url",
        default=None,
        metavar="URL",
        help="run the service as replicas (--replicas) that share their breakers and rate limits "
        f"through this Redis server, namespace '{REDIS_NAMESPACE}:<run id>' (e.g. redis://127.0.0.1:6379/0; "
        "needs the redis extra); if Redis goes away the replicas go on, on local state "
        "(default: one process on local state, no external service)",
    )
    demo.add_argument(
        "--replicas",
        type=_int_arg(check_replicas),
        default=None,
        metavar="N",
        help=f"with --redis-url: replicas of the service, each with its own manager and store, the "
        f"load split between them, 1-{MAX_REPLICAS} (default: {DEFAULT_REPLICAS})",
    )
    demo.add_argument(
        "--redis-drops",
        action="store_true",
        help="with a redis:// --redis-url: Redis drops out for 0.5 s every 3 s (real seconds), "
        "through a relay on 127.0.0.1 in front of it: each drop is an outage of every store "
        "(ResilienceSharedStoreFlapping)",
    )

    export = commands.add_parser(
        "export",
        help="write the Grafana dashboards, the Prometheus alert rules, the Collector config or the "
        "runbooks to a folder",
        description="Write the operations artifacts shipped with the package to DIR. Without options "
        "the shipped files are copied; the alert options below regenerate the rules (Prometheus "
        "rules, Alertmanager example), which needs the ops extra: pip install 'otel-resilience[ops]'.",
    )
    export.add_argument("kind", choices=EXPORT_KINDS, help="what to export")
    export.add_argument(
        "directory",
        type=export_module.folder_argument,
        metavar="DIR",
        help="the folder to write to (created if missing; not '-': ./- names a folder '-')",
    )
    export_module.add_generator_options(export)
    export.set_defaults(command_parser=export)  # its usage errors print its own usage
    _add_config_commands(commands)
    return parser


def _add_config_commands(commands: argparse._SubParsersAction[_CommandParser]) -> None:
    """Add ``check`` and ``schema``, the configuration file's commands."""
    check = commands.add_parser(
        "check",
        help="validate a configuration file (YAML or TOML) and print the policies it defines",
        description="Load a configuration file as otel_resilience.config.load(PATH) does and print "
        "its policies with the settings that differ from the defaults; on an error, print it with "
        "the file, line and path of the wrong value, and exit 1. YAML needs the config extra: "
        "pip install 'otel-resilience[config]'.",
    )
    check.add_argument(
        "path", type=export_module.path_argument, metavar="PATH", help="the configuration file"
    )
    check.add_argument(
        "--format",
        choices=("yaml", "toml"),
        default=None,
        help="the file's format (default: from its suffix)",
    )
    commands.add_parser(
        "schema",
        help="print the JSON Schema of the configuration file",
        description="Print the JSON Schema of the configuration file (shipped in the package), for "
        "editors: save it and point a YAML file at it with a first line "
        "'# yaml-language-server: $schema=<path>', or a TOML file with '#:schema <path>'.",
    )


def _missing(modules: Iterable[tuple[str, str]]) -> list[str]:
    """Return the distributions whose module cannot be found."""
    missing: list[str] = []
    for module, distribution in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(distribution)
    return missing


def _format_hint(error: UnknownFormatError) -> str:
    """The loader's error on a file whose format is unknown, with the command's option as the hint."""
    return f"{error.source}: {error.fault}: pass --format yaml or --format toml"


def _unknown_format(path: Path, given: Format | None) -> str | None:
    """Why the loader cannot read ``path`` (not a regular file), or not without ``--format``, or ``None``."""
    try:
        file_format(str(path), given)
    except UnknownFormatError as error:
        return _format_hint(error)
    except OSError as error:  # a directory, a named pipe, a device: refused before it is opened
        return cannot_read(path, error)
    return None


def _run_demo(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: IO[str] | None, err: IO[str]
) -> int:
    """Run ``otel-resilience demo``; a signal before its run stops it with one line.

    The run routes SIGINT and SIGTERM to its own stop; before it (the checks, the imports of the
    ``demo`` extra, the setup) either ends the command with :func:`stopped_by_signal`.
    """
    try:
        with signals_interrupt():
            return _start_demo(args, parser, out, err)
    except KeyboardInterrupt as interrupt:  # before the run routes SIGINT and SIGTERM to its own stop
        return stopped_by_signal("otel-resilience demo", err, interrupt)


def _start_demo(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: IO[str] | None, err: IO[str]
) -> int:
    if out is None:  # started with standard output closed: nothing could show the run
        raise _OutputError("it is closed")
    if args.summary_json is not None:  # before the run: not a failure after the whole of it
        try:
            check_summary_json(args.summary_json)
        except ValueError as error:
            parser.error(str(error))
    try:
        options = _demo_options(args)
    except ValueError as error:
        parser.error(str(error))
    problem = None if options.config is None else _unknown_format(options.config, options.config_format)
    if problem is not None:
        err.write(f"otel-resilience demo: --config: {problem}\n")
        return 1
    needed = list(_DEMO_MODULES)
    if options.otlp_endpoint is not None:
        needed.append(_OTLP_MODULE)
    missing = _missing(needed)
    if missing:
        err.write(
            f"otel-resilience demo: missing {', '.join(missing)}; "
            "install the demo extra: pip install 'otel-resilience[demo]'\n"
        )
        return 1
    from otel_resilience.demo import app  # noqa: PLC0415 - imports the demo's optional dependencies

    return app.main(options, out=out, err=err)


def _demo_options(args: argparse.Namespace) -> DemoOptions:
    """The demo's options from its arguments (``ValueError``: a rule of :class:`DemoOptions` broken)."""
    return DemoOptions(
        scenario=args.scenario,
        seed=args.seed,
        duration=args.duration,
        time_scale=args.time_scale,
        host=args.host,
        port=None if args.no_metrics_server else args.port,
        otlp_endpoint=args.otlp_endpoint,
        plain=args.plain,
        summary_json=args.summary_json,
        interval=args.interval,
        once=args.once,
        config=args.config,
        config_format=args.format,
        watch_interval=args.watch_interval,
        redis_url=args.redis_url,
        replicas=args.replicas,
        redis_drops=args.redis_drops,
    )


def _run_export(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: IO[str] | None, err: IO[str]
) -> int:
    kind: str = args.kind
    directory: Path = args.directory
    try:
        options = export_module.generator_options(args)
    except ValueError as error:
        parser.error(str(error))
    if (args.time_scale != 1.0 or options is not None) and kind != "alerts":
        parser.error("--time-scale, --runbook-url-base, --job-label and --set apply to `export alerts` only")
    try:
        written = export_module.export_artifacts(kind, directory, time_scale=args.time_scale, options=options)
    except ValueError as error:  # a time scale the rules refuse (rendered before anything is written)
        parser.error(export_module.option_message(error))
    except export_module.MissingExtraError as error:
        err.write(f"otel-resilience export: {error}\n")
        return 1
    except OSError as error:
        err.write(
            f"otel-resilience export: cannot write {kind} to {directory}: "
            f"{export_module.cannot_write(directory, error)}\n"
        )
        return 1
    listing = "".join(f"  {path}\n" for path in written)
    _emit(out, f"exported {kind} to {directory}: {len(written)} file(s)\n{listing}")
    return 0


def _run_check(args: argparse.Namespace, out: IO[str] | None, err: IO[str]) -> int:
    path: Path = args.path
    try:
        loaded = config_module.load(path, format=args.format)
    except UnknownFormatError as error:
        err.write(f"otel-resilience check: {_format_hint(error)}\n")
        return 1
    except config_module.ConfigError as error:
        err.write(f"otel-resilience check: {error}\n")
        return 1
    except OSError as error:
        err.write(f"otel-resilience check: {cannot_read(path, error)}\n")
        return 1
    except ImportError as error:
        err.write(f"otel-resilience check: {error}\n")
        return 1
    _emit(out, config_summary(loaded))
    return 0


class _OutputError(Exception):
    """Standard output cannot take a command's output: closed, its reader gone (``| true``), a full disk."""


def _emit(out: IO[str] | None, text: str) -> None:
    """Write a command's output and flush it.

    Raises:
        _OutputError: Standard output could not take it (with the reason).
    """
    if out is None:  # started with standard output closed (`>&-`): Python's sys.stdout is None
        raise _OutputError("it is closed")
    try:
        try:
            out.write(text)
        except UnicodeEncodeError:  # a locale whose encoding lacks a character (LC_ALL=C: ASCII)
            out.write(_encodable(text, out))
        out.flush()
    except (OSError, ValueError) as error:  # ValueError: a file object closed already
        raise _OutputError(getattr(error, "strerror", None) or str(error)) from None


def _encodable(text: str, out: IO[str]) -> str:
    r"""``text`` with each character that ``out``'s encoding lacks as a backslash escape.

    As standard error writes it: a name read from a configuration file (``café``) is written
    ``caf\xe9`` under ``LC_ALL=C``, not refused. A character the stream writes as it is (a path's
    undecodable byte, which the C locale's ``surrogateescape`` writes back) stays.
    """
    encoding: str = getattr(out, "encoding", None) or "utf-8"
    errors: str = getattr(out, "errors", None) or "strict"

    def escaped(char: str) -> str:
        try:
            char.encode(encoding, errors)
        except UnicodeEncodeError:
            return char.encode("ascii", "backslashreplace").decode("ascii")
        return char

    return "".join(char if char.isascii() else escaped(char) for char in text)


def _drop_stdout(out: IO[str] | None) -> None:
    """Send what the process's standard output still buffers to the null device, once writing it failed.

    The interpreter flushes ``sys.stdout`` at exit: on the same failed output it would report the
    failure again, as a traceback, and exit with status 120 instead of 1.
    """
    if out is None or out is not sys.stdout:
        return
    with contextlib.suppress(OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, out.fileno())
        os.close(null)


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the ``otel-resilience`` command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        out: Standard output (default ``sys.stdout``).
        err: Standard error (default ``sys.stderr``).

    Returns:
        The exit status: 0 success, 1 failure, 128 + the signal's number when SIGINT or SIGTERM
        stopped it (a demo run, or a command before it began).

    Raises:
        SystemExit: With status 2 on a usage error, or 0 after ``--help`` (argparse).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        with signals_interrupt():  # no command has begun: a signal stops it, as while it loads
            parser = build_parser()
            args = parser.parse_args(argv)
    except KeyboardInterrupt as interrupt:
        return stopped_by_signal("otel-resilience", err, interrupt)
    try:
        return _run(args, parser, out, err)
    except _OutputError as error:
        _drop_stdout(out)
        command = f"{parser.prog} {args.command}" if args.command else parser.prog
        err.write(f"{command}: cannot write to standard output: {error}\n")
        return 1


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, out: IO[str] | None, err: IO[str]) -> int:
    """Run the command ``args`` names (:func:`main` after parsing)."""
    if args.version:
        from otel_resilience import __version__  # noqa: PLC0415 - resolved lazily by the package

        _emit(out, f"otel-resilience {__version__}\n")
        return 0
    if args.command == "demo":
        return _run_demo(args, args.command_parser, out, err)
    if args.command == "export":
        return _run_export(args, args.command_parser, out, err)
    if args.command == "check":
        return _run_check(args, out, err)
    if args.command == "schema":
        from otel_resilience.config.schema import shipped  # noqa: PLC0415 - read only when asked

        _emit(out, shipped())
        return 0
    return parser.error("the following arguments are required: COMMAND (--help lists them)")  # exits: 2


if __name__ == "__main__":  # python -m otel_resilience: loaded under the package's guard, which ends here
    end_package_guard()
    sys.exit(main())
