"""The command lines as a user meets them: real processes, their exit status, what they print where.

``otel-resilience`` runs as its installed script does (``_otel_resilience_cli.main``); the
``python -m`` tools of the package, of the examples and the benchmarks' runner as documented. A
usage error prints the usage and one ``error:`` line on standard error and exits 2; a failure, one
line on standard error and exit status 1; never a traceback for a user's mistake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = "import sys; from _otel_resilience_cli import main; sys.exit(main())"
"""What the installed ``otel-resilience`` script runs."""


def _env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    env.update(PYTHONPATH=str(ROOT), **changes)
    return env


def _run(
    command: list[str], *, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env or _env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        check=False,
    )


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-c", _SCRIPT, *argv], env=env)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def test_no_command_is_a_usage_error_on_standard_error() -> None:
    """`otel-resilience` alone: the usage and one error line on stderr, nothing on stdout, status 2."""
    result = _cli()
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: otel-resilience [-h] [--version] COMMAND")
    assert (
        lines[-1]
        == "otel-resilience: error: the following arguments are required: COMMAND (--help lists them)"
    )


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["demo", "--bogus"], "demo"),
        (["demo", "--duration", "1", "extra"], "demo"),
        (["export", "alerts", "out", "--bogus"], "export"),
        (["check", "resilience.yaml", "--bogus"], "check"),
        (["schema", "extra"], "schema"),
    ],
)
def test_an_argument_a_command_does_not_know_is_refused_under_that_commands_usage(
    argv: list[str], command: str
) -> None:
    """The usage shown is the command's own (its options), not the top-level one's."""
    result = _cli(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"usage: otel-resilience {command} [-h]")
    unknown = " ".join(argv[-1:])
    assert (
        result.stderr.splitlines()[-1]
        == f"otel-resilience {command}: error: unrecognized arguments: {unknown}"
    )


def test_an_unknown_option_before_the_command_is_the_top_level_ones() -> None:
    result = _cli("--bogus", "schema")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "usage: otel-resilience [-h] [--version] COMMAND ...",
        "otel-resilience: error: unrecognized arguments: --bogus",
    ]


def test_check_under_an_ascii_locale_writes_what_the_locale_lacks_as_escapes(tmp_path: Path) -> None:
    """LC_ALL=C without UTF-8 mode: stdout is ASCII; a policy name read from the file is escaped."""
    path = tmp_path / "policies.yaml"
    path.write_text("policies:\n  café:\n    retry:\n      max_attempts: 3\n", encoding="utf-8")
    env = _env(LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0", PYTHONIOENCODING="ascii:surrogateescape")
    result = _cli("check", str(path), env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert (
        result.stdout
        == f'{path}: 1 policy (settings that differ from the defaults)\n  "caf\\xe9": retry_policy()\n'
    )


def test_an_output_gone_before_the_first_line_is_one_line_and_status_1() -> None:
    """`otel-resilience schema | true`: the reader is gone; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _SCRIPT, "schema"],
            cwd=ROOT,
            env=_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write)
    assert result.returncode == 1
    assert result.stderr == "otel-resilience schema: cannot write to standard output: Broken pipe\n"


def test_export_into_a_path_that_is_no_folder_names_it(tmp_path: Path) -> None:
    """A pipe (or a device such as /dev/null) where the folder should be: said so, not "File exists"."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (fifo, fifo / "sub"):
        result = _cli("export", "collector", str(target))
        assert result.returncode == 1
        assert (
            result.stderr
            == f"otel-resilience export: cannot write collector to {target}: {fifo} is not a folder\n"
        )


def test_the_telemetry_reference_tool_reports_a_path_it_cannot_use_in_one_line(tmp_path: Path) -> None:
    """`python -m otel_resilience.telemetry.docs [--check] PATH` with a folder or a missing place."""
    tool = [sys.executable, "-m", "otel_resilience.telemetry.docs"]
    prog = "python -m otel_resilience.telemetry.docs"
    cases = [
        ([str(tmp_path)], f"{prog}: cannot write {str(tmp_path)!r}: Is a directory\n"),
        (["--check", str(tmp_path)], f"{prog}: cannot read {str(tmp_path)!r}: Is a directory\n"),
    ]
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    target = blocker / "docs" / "telemetry.md"
    cases.append(
        ([str(target)], f"{prog}: cannot write {str(target)!r}: {blocker} is a file, not a folder\n")
    )
    for argv, message in cases:
        result = _run([*tool, *argv])
        _no_traceback(result)
        assert (result.returncode, result.stderr) == (1, message)


def test_the_schema_generator_takes_help_and_refuses_arguments() -> None:
    """`python -m otel_resilience.config.schema --help` prints its usage and writes nothing."""
    shipped = ROOT / "otel_resilience" / "config" / "schema.json"
    before = shipped.stat().st_mtime_ns
    result = _run([sys.executable, "-m", "otel_resilience.config.schema", "--help"])
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m otel_resilience.config.schema [-h]")
    wrong = _run([sys.executable, "-m", "otel_resilience.config.schema", "schema.json"])
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines()[-1].endswith("error: unrecognized arguments: schema.json")
    assert shipped.stat().st_mtime_ns == before


def test_the_dashboards_readme_generator_takes_help_and_prints_the_readme() -> None:
    """`--help` is its usage, not the README; with no argument it prints dashboards/README.md."""
    tool = [sys.executable, "-m", "otel_resilience.ops.dashboards"]
    result = _run([*tool, "--help"])
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m otel_resilience.ops.dashboards [-h]")
    assert _run([*tool, "--bogus"]).returncode == 2
    readme = _run(tool)
    assert readme.returncode == 0
    assert readme.stdout == (ROOT / "dashboards" / "README.md").read_text(encoding="utf-8")


def test_the_http_example_takes_help_without_starting_anything() -> None:
    """`python -m examples.http_service --help` prints its usage and exits (it used to start serving)."""
    result = _run([sys.executable, "-m", "examples.http_service", "--help"], timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m examples.http_service [-h]")
    wrong = _run([sys.executable, "-m", "examples.http_service", "--port", "8000"], timeout=60)
    assert wrong.returncode == 2
    assert "error: unrecognized arguments: --port 8000" in wrong.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", "breaker_closd"], "--only: no scenario named 'breaker_closd' (see --help)"),
        (["--only", "memory,nope"], "--only: no scenario named 'nope' (see --help)"),
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--target-ms", "-1"], "--target-ms must be > 0, got -1"),
    ],
)
def test_the_benchmark_runner_refuses_what_would_measure_nothing(argv: list[str], message: str) -> None:
    """`python benchmarks/run.py --only TYPO` was a run of nothing with exit status 0."""
    result = _run([sys.executable, "benchmarks/run.py", *argv])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == f"run.py: error: {message}"


def test_the_export_check_reports_a_file_that_is_not_utf8_as_stale(tmp_path: Path) -> None:
    """`python -m otel_resilience.ops.export alerts DIR --check`: a binary rules.yml differs (no traceback)."""
    (tmp_path / "rules.yml").write_bytes(b"\xff\xfe")
    result = _run([sys.executable, "-m", "otel_resilience.ops.export", "alerts", str(tmp_path), "--check"])
    _no_traceback(result)
    assert result.returncode == 1
    again = f"regenerate with python -m otel_resilience.ops.export alerts {tmp_path}"
    assert f"stale: {tmp_path / 'rules.yml'} ({again})\n" in result.stderr


def test_the_export_check_of_a_folder_with_a_file_in_its_way_says_so(tmp_path: Path) -> None:
    """Not a list of "stale" files under a file, whose regeneration could only fail."""
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    for target in (blocker, blocker / "alerts"):
        result = _run([sys.executable, "-m", "otel_resilience.ops.export", "alerts", str(target), "--check"])
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            f"python -m otel_resilience.ops.export: cannot check alerts in {target}: "
            f"{blocker} is a file, not a folder\n"
        )


def test_a_config_file_that_cannot_be_read_is_said_one_way_and_a_pipe_is_never_waited_on(
    tmp_path: Path,
) -> None:
    """`check FILE` and `demo --config FILE`: "cannot read 'FILE': <reason>", status 1 (was: the demo's
    "[Errno 2] ..." and, for a named pipe nobody writes to, both waiting forever)."""
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    missing = tmp_path / "missing.yaml"
    demo = ("demo", "--plain", "--no-metrics-server", "--config")
    cases = [
        (("check", str(fifo)), "check", f"{str(fifo)!r}: is a named pipe (FIFO), not a regular file"),
        ((*demo, str(fifo)), "demo: --config", f"{str(fifo)!r}: is a named pipe (FIFO), not a regular file"),
        ((*demo, str(missing)), "demo: --config", f"{str(missing)!r}: No such file or directory"),
    ]
    for argv, prefix, reason in cases:
        result = _run([sys.executable, "-c", _SCRIPT, *argv], timeout=60)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"otel-resilience {prefix}: cannot read {reason}\n"


def test_a_summary_json_under_a_pipe_says_it_is_not_a_folder(tmp_path: Path) -> None:
    """`demo --summary-json PIPE/summary.json`: a usage error naming what is in the way (was: "is a
    file, not a folder" of a named pipe)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    target = fifo / "summary.json"
    result = _cli("demo", "--plain", "--no-metrics-server", "--summary-json", str(target))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.endswith(
        f"otel-resilience demo: error: --summary-json: cannot write {str(target)!r}: {fifo} is not a folder\n"
    )
