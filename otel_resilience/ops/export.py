r"""Write (or check) the operations files: the shipped copies, or regenerated ones.

**Layout (single source).** The generators in :mod:`otel_resilience.ops` are the source of the
dashboards, the alert rules and the Collector configs; ``docs/runbooks/*.md`` (written by hand)
is the source of the runbooks. ``--all`` writes every generated file twice, into the
repository's top-level folders (``dashboards/``, ``alerts/``, ``collector-config/``) and into the
package data folder ``otel_resilience/ops/shipped/<folder>/`` that the wheel carries, and copies
the runbooks into ``otel_resilience/ops/shipped/runbooks/``. A test fails when any copy differs
from its source::

    python -m otel_resilience.ops.export --all           # regenerate every copy
    python -m otel_resilience.ops.export --all --check   # exit 1 and list the stale files

``KIND DIR --check`` lists the stale files of ``DIR`` with the command that rewrites ``DIR``
(``KIND DIR``; ``--all --root ROOT`` names its root).

**Export** (also ``otel-resilience export KIND DIR``): without options, the files shipped in
the package are copied, so it works from an installed wheel without the ``ops`` extra and on
every supported Python. With options the alert rules are regenerated, which needs the extra
(PyYAML)::

    python -m otel_resilience.ops.export alerts /tmp/rules
    python -m otel_resilience.ops.export alerts /tmp/rules \\
        --runbook-url-base https://wiki.example.com/runbooks --job-label service \\
        --set retry_storm_ratio=0.7 --set ratio_alert_for=15m

Alert rules for compressed time (a demo run with ``--time-scale 0.05``, an end-to-end test): every
``for``, range and offset multiplied by the scale, recording rule names unchanged. Adapted or
scaled rules leave out the promtool unit tests, which are written for the shipped rules::

    python -m otel_resilience.ops.export alerts /tmp/rules --time-scale 0.05
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from otel_resilience.engine.validation import cannot_write, file_path, in_the_way
from otel_resilience.ops.alert_rules import (
    EVALUATION_INTERVAL,
    MIN_TIME_SCALE,
    RuleOptionError,
    RuleOptions,
    TimeScaleError,
    check_time_scale,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_DIRECTORIES",
    "KINDS",
    "PACKAGE_DATA",
    "REPOSITORY_ROOT",
    "MissingExtraError",
    "add_generator_options",
    "cannot_write",
    "copy_folders",
    "export_artifacts",
    "folder_argument",
    "generator_options",
    "main",
    "number_argument",
    "option_message",
    "packaged",
    "path_argument",
    "render",
    "stale_artifacts",
    "without_option",
]

KINDS: Final = ("dashboards", "alerts", "collector", "runbooks")
"""What can be exported."""
GENERATED_KINDS: Final = ("dashboards", "alerts", "collector")
"""The kinds written by a generator (the runbooks are written by hand)."""
DEFAULT_DIRECTORIES: Final = MappingProxyType(
    {
        "dashboards": "dashboards",
        "alerts": "alerts",
        "collector": "collector-config",
        "runbooks": "docs/runbooks",
    }
)
"""Where each kind lives in the repository (for the runbooks: their source)."""
PACKAGE_DATA: Final = "shipped"
"""The package data folder of :mod:`otel_resilience.ops`: one sub-folder per kind, named after
the last part of its repository folder (``shipped/collector-config``, ``shipped/runbooks``)."""
REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository root, when running from a source checkout."""
_RUNBOOK_SUFFIX: Final = ".md"
COLLECTOR_README: Final = "README.md"
"""The Collector folder's own notes (its variables, the otelcol-contrib it needs, the folder
layout ``prometheus.yaml`` reads): written by hand in ``collector-config/``, shipped and exported
with the configs."""


class MissingExtraError(RuntimeError):
    """Regenerating needs an optional dependency that is not installed (the ``ops`` extra)."""


def _package_folder(kind: str) -> str:
    return DEFAULT_DIRECTORIES[kind].rsplit("/", 1)[-1]


def packaged(kind: str) -> dict[str, str]:
    """Return the files of one kind shipped in the package: file name -> text.

    Raises:
        ValueError: For an unknown kind.
    """
    _check_kind(kind)
    folder = importlib.resources.files("otel_resilience.ops") / PACKAGE_DATA / _package_folder(kind)
    if not folder.is_dir():
        return {}
    return {
        item.name: item.read_text(encoding="utf-8")
        for item in sorted(folder.iterdir(), key=lambda entry: entry.name)
        if item.is_file()
    }


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        msg = f"kind must be one of {KINDS}, got {kind!r}"
        raise ValueError(msg)


def render(kind: str, *, time_scale: float = 1.0, options: RuleOptions | None = None) -> dict[str, str]:
    """Return the files of one kind as their source produces them: file name -> text.

    Args:
        kind: ``"dashboards"``, ``"alerts"``, ``"collector"`` or ``"runbooks"`` (read from
            ``docs/runbooks`` of a source checkout).
        time_scale: For ``"alerts"`` only: multiplies every ``for``, range and offset of the
            rules (:func:`otel_resilience.ops.alert_rules.render_rules`). Default 1.
        options: For ``"alerts"`` only: :class:`~otel_resilience.ops.alert_rules.RuleOptions`.
            Scaled or adapted rules come without the promtool unit tests (written for the
            shipped rules).

    Raises:
        ValueError: For another kind, a time scale outside ``(0, 1]``, or a time scale or
            options for a kind that has none.
        MissingExtraError: When a generator's optional dependency is missing.
    """
    _check_kind(kind)
    if time_scale != 1.0 and kind != "alerts":
        msg = f"only the alerts have a time scale, got time_scale={time_scale!r} for {kind!r}"
        raise ValueError(msg)
    if options is not None and kind != "alerts":
        msg = f"only the alerts have options, got options for {kind!r}"
        raise ValueError(msg)
    try:
        return _render(kind, time_scale, options)
    except ModuleNotFoundError as error:
        missing = error.name or "a module"
        msg = (
            f"regenerating {kind} needs {missing} (the ops extra: pip install 'otel-resilience[ops]'; "
            "the dashboards need Python >= 3.11)"
        )
        raise MissingExtraError(msg) from error


def _render(kind: str, time_scale: float, options: RuleOptions | None) -> dict[str, str]:
    if kind == "dashboards":
        from otel_resilience.ops.dashboards import render_dashboards  # noqa: PLC0415 - needs the ops extra

        return render_dashboards()
    if kind == "alerts":
        from otel_resilience.ops import alert_rules, alertmanager  # noqa: PLC0415

        adapted = options is not None and not options.is_default
        files = {
            alert_rules.RULES_FILE: alert_rules.render_rules(time_scale, options),
            alertmanager.ALERTMANAGER_FILE: alertmanager.render_alertmanager(
                options=options, time_scale=time_scale
            ),
        }
        if time_scale == 1.0 and not adapted:
            files[alert_rules.RULES_TEST_FILE] = alert_rules.render_rules_test()
        return dict(sorted(files.items()))
    if kind == "collector":
        from otel_resilience.ops.collector import render_collector_configs  # noqa: PLC0415

        files = render_collector_configs()
        readme = REPOSITORY_ROOT / DEFAULT_DIRECTORIES["collector"] / COLLECTOR_README
        if readme.is_file():  # written by hand: shipped beside the configs it explains, as they are
            files[COLLECTOR_README] = readme.read_text(encoding="utf-8")
        return dict(sorted(files.items()))
    source = REPOSITORY_ROOT / DEFAULT_DIRECTORIES["runbooks"]
    return {
        path.name: path.read_text(encoding="utf-8")
        for path in sorted(source.glob(f"*{_RUNBOOK_SUFFIX}"))
        if path.is_file()
    }


def export_artifacts(
    kind: str,
    directory: str | os.PathLike[str],
    *,
    time_scale: float = 1.0,
    options: RuleOptions | None = None,
) -> list[Path]:
    """Write the files of one kind into ``directory`` (created if missing).

    Without a time scale or options, the files shipped in the package are copied (no optional
    dependency needed); otherwise the alert rules are regenerated.

    Args:
        kind: ``"dashboards"``, ``"alerts"``, ``"collector"`` or ``"runbooks"``.
        directory: Where to write them: a ``str`` or an ``os.PathLike`` of one (a ``pathlib.Path``).
        time_scale: For ``"alerts"`` only, see :func:`render`. Default 1.
        options: For ``"alerts"`` only, see :func:`render`.

    Returns:
        The paths written, sorted.

    Raises:
        TypeError: ``directory`` is not a ``str`` or an ``os.PathLike`` of one.
        ValueError: For an unknown kind, an empty ``directory`` (it would be the current folder), or a
            time scale or options :func:`render` refuses.
        MissingExtraError: When regenerating needs the ``ops`` extra and it is missing.
    """
    folder = _folder("export_artifacts", directory)
    _check_kind(kind)
    regenerate = time_scale != 1.0 or (options is not None and not options.is_default)
    files = render(kind, time_scale=time_scale, options=options) if regenerate else packaged(kind)
    if not files:
        files = render(kind)  # a source checkout whose package data was never generated
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "alerts" and regenerate:
        _drop_shipped_rules_test(folder)
    written = []
    for name, text in sorted(files.items()):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _folder(owner: str, directory: object, field: str = "directory") -> Path:
    """``directory`` of ``owner`` as a ``Path``: a ``str`` or an ``os.PathLike`` of one, not empty.

    Raises:
        TypeError: Naming ``owner.field``, for another type (bytes, a number, ``None``).
        ValueError: Naming ``owner.field``, for an empty path (the current folder, unmeant) or one with NUL.
    """
    return Path(file_path(owner, directory, field))


def _drop_shipped_rules_test(directory: Path) -> None:
    """Remove the shipped rules test an earlier plain export left in ``directory``.

    It tests the shipped thresholds and time scale, so it fails against adapted rules, which come
    without one. A rules test of the user's own (any other text) is kept.
    """
    from otel_resilience.ops import alert_rules  # noqa: PLC0415 - regenerating needs the ops extra

    path = directory / alert_rules.RULES_TEST_FILE
    shipped = packaged("alerts").get(alert_rules.RULES_TEST_FILE)
    if shipped is not None and path.is_file() and path.read_text(encoding="utf-8") == shipped:
        path.unlink()


def copy_folders(kind: str, root: str | os.PathLike[str]) -> list[Path]:
    """The folders that hold a copy of ``kind`` in a source checkout rooted at ``root``.

    ``root`` is a ``str`` or an ``os.PathLike`` of one (a ``TypeError`` naming it otherwise).
    """
    checkout = _folder("copy_folders", root, "root")
    package = checkout / "otel_resilience" / "ops" / PACKAGE_DATA / _package_folder(kind)
    return [package] if kind == "runbooks" else [checkout / DEFAULT_DIRECTORIES[kind], package]


def stale_artifacts(kind: str, directory: str | os.PathLike[str]) -> list[Path]:
    """Return the files of one kind whose copy in ``directory`` is missing, differs, or is extra.

    ``directory`` is a ``str`` or an ``os.PathLike`` of one (a ``TypeError`` naming it otherwise).
    """
    differing, extra = _stale(kind, _folder("stale_artifacts", directory))
    return differing + extra


def _stale(kind: str, directory: Path) -> tuple[list[Path], list[Path]]:
    """The files of one kind missing from ``directory`` or differing there, and its extra files."""
    files = render(kind)
    differing = [directory / name for name, text in sorted(files.items()) if _differs(directory / name, text)]
    return differing, _extra_files(directory, files)


def _differs(path: Path, text: str) -> bool:
    """Whether ``path`` is missing, is no file, or holds another text than ``text`` (or no UTF-8 text)."""
    if not path.is_file():
        return True
    try:
        return path.read_text(encoding="utf-8") != text
    except UnicodeDecodeError:
        return True


def path_argument(text: str) -> Path:
    """The argparse ``type`` of a path argument of the commands: an empty one is refused.

    An empty argument (an unset shell variable, ``export alerts "$DIR"``) would otherwise be
    the current folder.

    Raises:
        argparse.ArgumentTypeError: ``text`` is empty.
    """
    if not text:
        msg = "must not be empty"
        raise argparse.ArgumentTypeError(msg)
    return Path(text)


def folder_argument(text: str) -> Path:
    """The argparse ``type`` of a folder the commands write (``DIR``, ``--root``): a path, not ``-``.

    ``-`` stands for standard output by convention, which takes no folder of files (it made a
    folder named ``-``); ``./-`` names such a folder.

    Raises:
        argparse.ArgumentTypeError: ``text`` is ``-``, or empty (:func:`path_argument`).
    """
    if text == "-":
        msg = "'-' (standard output) is no folder: give ./- for a folder named '-'"
        raise argparse.ArgumentTypeError(msg)
    return path_argument(text)


def _shell_word(path: Path) -> str:
    """``path`` as a shell word a command line reads as that path, not as an option (``./-x``)."""
    text = str(path)
    return shlex.quote(f"./{text}" if text.startswith("-") else text)


def option_message(error: ValueError) -> str:
    """Return the message of ``error`` as the commands show it: naming the option typed.

    A time scale the rules refuse names ``--time-scale``, not the Python parameter ``time_scale``
    (:class:`~otel_resilience.ops.alert_rules.TimeScaleError`); any other message is its own.
    """
    return error.naming("--time-scale") if isinstance(error, TimeScaleError) else str(error)


def without_option(error: ValueError) -> str:
    """Return the message without its leading ``--option`` (argparse names the option itself)."""
    message = option_message(error)
    return message.split(" ", 1)[1] if message.startswith("--") else message


def number_argument(check: Callable[[float], float]) -> Callable[[str], float]:
    """Return an argparse ``type`` that parses a number and validates it with ``check``.

    The commands' one rule of a number option: a text that is no number, or a number ``check``
    refuses (its ``ValueError``), is a usage error naming the option.
    """

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(without_option(error)) from None

    return convert


def add_generator_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--time-scale``, ``--runbook-url-base``, ``--job-label`` and ``--set`` to ``parser``."""
    parser.add_argument(
        "--time-scale",
        type=number_argument(check_time_scale),
        default=1.0,
        metavar="F",
        help="alerts only: multiply every for, range and offset of the rules by F, to match a demo run "
        "with --time-scale F; 0 < F <= 1, and no scaled duration under 1 ms: "
        f"F >= 1/{round(1 / MIN_TIME_SCALE)} for the shipped rules (1 ms per {EVALUATION_INTERVAL}, "
        f"their shortest duration), more with a --set duration under {EVALUATION_INTERVAL} "
        "(default: 1, the production rules)",
    )
    parser.add_argument(
        "--runbook-url-base",
        metavar="URL",
        default=None,
        help="alerts only: an http:// or https:// URL, where the runbooks <AlertName>.md are browsed "
        "(runbook_url of every alert: URL/<AlertName>.md, so a host and no query, fragment, {{ or }}; "
        "default: the project's repository)",
    )
    parser.add_argument(
        "--job-label",
        metavar="LABEL",
        default=None,
        help="alerts only: a Prometheus label name, the label that names the service in rules and "
        "routing; not one the rules give another meaning, such as instance or severity (default: job)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="alerts only: change a threshold or a `for` duration, e.g. retry_storm_ratio=0.7 or "
        f"ratio_alert_for=15m; repeatable. Fields: {', '.join(RuleOptions.field_names())}",
    )


def generator_options(args: argparse.Namespace) -> RuleOptions | None:
    """Return the :class:`RuleOptions` the parsed arguments ask for, or ``None`` for the shipped rules.

    Raises:
        ValueError: For a malformed ``--set``, an unknown field or a value that does not validate;
            the message names what was typed: ``--job-label`` or ``--runbook-url-base`` for a
            value of that option, the field (``RuleOptions.retry_storm_ratio``) for one of ``--set``.
    """
    given: list[tuple[str, str, str]] = []  # (field, value, the option that gave it)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            msg = f"--set expects FIELD=VALUE, got {item!r}"
            raise ValueError(msg)
        given.append((name.strip(), value.strip(), "--set"))
    if args.runbook_url_base is not None:
        given.append(("runbook_url_base", args.runbook_url_base, "--runbook-url-base"))
    if args.job_label is not None:
        given.append(("job_label", args.job_label, "--job-label"))
    settings: dict[str, str] = {}
    by: dict[str, str] = {}
    for field, value, option in given:
        if field in settings:  # which one was meant? never the last silently
            msg = (
                f"{field} given twice ({settings[field]!r} by {by[field]} and {value!r} by {option}): "
                "give it once"
            )
            raise ValueError(msg)
        settings[field] = value
        by[field] = option
    if not settings:
        return None
    try:
        return RuleOptions.from_strings(settings)
    except RuleOptionError as error:
        option = by.get(error.field, "--set")
        if option == "--set":  # the field was typed: its name is the one to read
            raise
        raise ValueError(f"{option} {error.reason}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--all`` or ``KIND DIR``, with ``--check`` to compare instead of writing.

    Returns:
        The exit status: 0, or 1 when ``--check`` found stale files or an extra is missing.
    """
    parser = argparse.ArgumentParser(
        prog="python -m otel_resilience.ops.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("kind", nargs="?", choices=KINDS, help="what to export")
    parser.add_argument("directory", nargs="?", type=folder_argument, help="where to write it")
    parser.add_argument(
        "--all", action="store_true", help="every kind, into the repository's folders and the package data"
    )
    parser.add_argument(
        "--root",
        type=folder_argument,
        default=None,
        help="repository root for --all (default: this checkout)",
    )
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    add_generator_options(parser)
    args = parser.parse_args(argv)
    if args.all == (args.kind is not None) or (args.kind is not None and args.directory is None):
        parser.error("give either --all, or KIND and DIR")
    if args.root is not None and not args.all:
        parser.error("--root is the repository of --all: give --all, or leave --root out")
    try:
        options = generator_options(args)
    except ValueError as error:
        parser.error(str(error))
    if (args.time_scale != 1.0 or options is not None) and (args.all or args.check or args.kind != "alerts"):
        parser.error(
            "--time-scale, --runbook-url-base, --job-label and --set apply to `alerts DIR` only "
            "(the committed files are the shipped rules)"
        )
    if args.all:
        targets = [
            (kind, path) for kind in KINDS for path in copy_folders(kind, args.root or REPOSITORY_ROOT)
        ]
    else:
        targets = [(args.kind, args.directory)]
    status = 0
    try:
        for kind, directory in targets:
            if args.check:
                blocked = in_the_way(directory)
                if blocked is not None:  # a file where the folder should be: nothing to compare
                    sys.stderr.write(f"{parser.prog}: cannot check {kind} in {directory}: {blocked}\n")
                    status = 1
                    continue
                differing, extra = _stale(kind, directory)
                # the command that rewrites this folder: --all (of its root) removes an extra file too
                again = f"regenerate with {parser.prog} " + (
                    "--all" + ("" if args.root is None else f" --root {_shell_word(args.root)}")
                    if args.all
                    else f"{kind} {_shell_word(directory)}"
                )
                for path in differing:
                    sys.stderr.write(f"stale: {path} ({again})\n")
                for path in extra:
                    fix = again if args.all else f"no {kind} file has this name: remove it"
                    sys.stderr.write(f"stale: {path} ({fix})\n")
                status = 1 if differing or extra else status
            elif args.all:
                _write(directory, render(kind))
            else:
                try:
                    paths = export_artifacts(kind, directory, time_scale=args.time_scale, options=options)
                except ValueError as error:  # a time scale the rules refuse (checked before any write)
                    parser.error(option_message(error))
                for path in paths:
                    sys.stdout.write(f"wrote {path}\n")
    except MissingExtraError as error:
        sys.stderr.write(f"{parser.prog}: {error}\n")
        return 1
    except OSError as error:
        sys.stderr.write(
            f"{parser.prog}: cannot write {kind} to {directory}: {cannot_write(directory, error)}\n"
        )
        return 1
    return status


def _write(directory: Path, files: dict[str, str]) -> None:
    """Write ``files`` into ``directory``, removing generated files that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in _extra_files(directory, files):
        path.unlink()
    for name, text in sorted(files.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {path}\n")


def _extra_files(directory: Path, files: dict[str, str]) -> list[Path]:
    """Return the generated-looking files in ``directory`` that ``files`` does not contain."""
    if not directory.is_dir():
        return []
    return [
        path
        for path in sorted(directory.iterdir())
        if path.suffix in {".json", ".yml", ".yaml", _RUNBOOK_SUFFIX}
        and path.name not in files
        and path.name != "README.md"
    ]


if __name__ == "__main__":
    raise SystemExit(main())
