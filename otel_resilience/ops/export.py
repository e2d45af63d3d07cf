"""Write (or check) the generated operations files.

The committed files are the generators' output; regenerate them all with::

    python -m otel_resilience.ops.export --all

or check them (exit status 1 and a list of stale files when they differ)::

    python -m otel_resilience.ops.export --all --check

One kind into a directory of your choice (the demo CLI's ``otel-resilience export KIND DIR``
calls :func:`export_artifacts`)::

    python -m otel_resilience.ops.export dashboards /tmp/dashboards

Alert rules for compressed time (a demo run with ``--time-scale 0.05``, an end-to-end test): every
``for``, range and offset multiplied by the scale, recording rule names unchanged; the promtool
unit tests, written for production timing, are left out::

    python -m otel_resilience.ops.export alerts /tmp/rules --time-scale 0.05
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "DEFAULT_DIRECTORIES",
    "KINDS",
    "REPOSITORY_ROOT",
    "export_artifacts",
    "main",
    "render",
    "stale_artifacts",
]

KINDS: Final = ("dashboards", "alerts", "collector")
"""What can be exported."""
DEFAULT_DIRECTORIES: Final = MappingProxyType(
    {"dashboards": "dashboards", "alerts": "alerts", "collector": "collector-config"}
)
"""Where each kind lives in the repository."""
REPOSITORY_ROOT: Final = Path(__file__).resolve().parents[2]
"""The repository root, when running from a source checkout."""


def render(kind: str, *, time_scale: float = 1.0) -> dict[str, str]:
    """Return the generated files of one kind: file name -> text.

    Args:
        kind: ``"dashboards"``, ``"alerts"`` or ``"collector"``.
        time_scale: For ``"alerts"`` only: multiplies every ``for``, range and offset of the
            rules (:func:`otel_resilience.ops.alert_rules.render_rules`); below 1 the promtool
            unit tests (written for production timing) are left out. Default 1.

    Raises:
        ValueError: For another kind, a time scale outside ``(0, 1]``, or a time scale other
            than 1 for a kind that has none.
    """
    if time_scale != 1.0 and kind != "alerts":
        msg = f"only the alerts have a time scale, got time_scale={time_scale!r} for {kind!r}"
        raise ValueError(msg)
    if kind == "dashboards":
        from otel_resilience.ops.dashboards import render_dashboards  # noqa: PLC0415 - needs the ops extra

        return render_dashboards()
    if kind == "alerts":
        from otel_resilience.ops import alert_rules, alertmanager  # noqa: PLC0415

        files = {
            alert_rules.RULES_FILE: alert_rules.render_rules(time_scale),
            alert_rules.RULES_TEST_FILE: alert_rules.render_rules_test(),
            alertmanager.ALERTMANAGER_FILE: alertmanager.render_alertmanager(),
        }
        if time_scale != 1.0:
            del files[alert_rules.RULES_TEST_FILE]
        return files
    if kind == "collector":
        from otel_resilience.ops.collector import render_collector_configs  # noqa: PLC0415

        return render_collector_configs()
    msg = f"kind must be one of {KINDS}, got {kind!r}"
    raise ValueError(msg)


def export_artifacts(kind: str, directory: Path, *, time_scale: float = 1.0) -> list[Path]:
    """Write the generated files of one kind into ``directory`` (created if missing).

    Args:
        kind: ``"dashboards"``, ``"alerts"`` or ``"collector"``.
        directory: Where to write them.
        time_scale: For ``"alerts"`` only, see :func:`render`. Default 1.

    Returns:
        The paths written, sorted.

    Raises:
        ValueError: For an unknown kind, or a time scale :func:`render` refuses.
    """
    files = render(kind, time_scale=time_scale)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(files.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_artifacts(kind: str, directory: Path) -> list[Path]:
    """Return the generated files of one kind whose copy in ``directory`` is missing or differs."""
    stale = []
    for name, text in sorted(render(kind).items()):
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--all`` or ``KIND DIR``, with ``--check`` to compare instead of writing.

    Returns:
        The exit status: 0, or 1 when ``--check`` found stale files.
    """
    parser = argparse.ArgumentParser(
        prog="python -m otel_resilience.ops.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("kind", nargs="?", choices=KINDS, help="what to export")
    parser.add_argument("directory", nargs="?", type=Path, help="where to write it")
    parser.add_argument("--all", action="store_true", help="every kind, into the repository's folders")
    parser.add_argument("--root", type=Path, default=REPOSITORY_ROOT, help="repository root for --all")
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="alerts only: multiply every for, range and offset of the rules by F, 0 < F <= 1, "
        "to match a demo run with --time-scale F (default: 1, the production rules)",
    )
    args = parser.parse_args(argv)
    if args.all == (args.kind is not None) or (args.kind is not None and args.directory is None):
        parser.error("give either --all, or KIND and DIR")
    if args.time_scale != 1.0 and (args.all or args.check or args.kind != "alerts"):
        parser.error("--time-scale applies to `alerts DIR` only (the committed files are at scale 1)")
    if not 0 < args.time_scale <= 1:
        parser.error(f"--time-scale must be > 0 and <= 1, got {args.time_scale:g}")
    targets = (
        [(kind, args.root / DEFAULT_DIRECTORIES[kind]) for kind in KINDS]
        if args.all
        else [(args.kind, args.directory)]
    )
    status = 0
    for kind, directory in targets:
        if args.check:
            for path in stale_artifacts(kind, directory):
                sys.stderr.write(
                    f"stale: {path} (regenerate with python -m otel_resilience.ops.export --all)\n"
                )
                status = 1
        else:
            for path in export_artifacts(kind, directory, time_scale=args.time_scale):
                sys.stdout.write(f"wrote {path}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
