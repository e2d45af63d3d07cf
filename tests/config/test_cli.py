"""`otel-resilience check PATH`, `otel-resilience schema` and OTEL_RESILIENCE_CONFIG."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from otel_resilience import OperationTimeoutError
from otel_resilience.__main__ import main
from otel_resilience.config import CONFIG_ENV, ConfigError, from_env, load, loads
from otel_resilience.config.schema import generate
from otel_resilience.config.values import parse_duration, parse_rate
from otel_resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resilience.yaml"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_check_prints_the_policies_of_a_valid_file() -> None:
    """Exit 0; a header, each budget and each policy with the settings that differ from the defaults."""
    code, out, err = _run("check", str(SAMPLE))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"{SAMPLE}: 4 policies, 1 retry budget (settings that differ from the defaults)"
    assert lines[1] == "  retry budget shared: ratio=0.2 min_retries_per_second=1 window=60s"
    assert lines[2] == (
        "  content_analysis: circuit_breaker(failure_threshold=3) retry_policy(max_attempts=2 budget=shared) "
        "timeout=30s bulkhead_config(max_concurrent=5 max_waiting=10) enable_recovery=true"
    )
    assert lines[4] == (
        "  database: fallback_config(strategy=default_value default_value=[]) timeout=10s "
        "bulkhead_config(max_concurrent=20)"
    )
    assert "sliding_window=time(seconds=60s buckets=12)" in lines[5]
    assert "rate_limiter(rate=100/m burst=10 max_wait=0.5s)" in lines[5]
    assert (
        "retry_on=[ConnectionError, TimeoutError, otel_resilience.errors.OperationTimeoutError]" in lines[5]
    )
    assert len(lines) == 6


def test_check_a_toml_file_and_a_policy_without_patterns(tmp_path: Path) -> None:
    """TOML by suffix, --format for another suffix; one policy, no pattern."""
    path = tmp_path / "x.cfg"
    path.write_text("[policies.bare]\n", encoding="utf-8")
    code, out, _ = _run("check", str(path), "--format", "toml")
    assert code == 0
    assert out == f"{path}: 1 policy (settings that differ from the defaults)\n  bare: no pattern\n"


def test_check_lists_no_rate_setting_of_a_window_left_at_its_default(tmp_path: Path) -> None:
    """With a window, a rate setting at its default (left out, or written) is no change to list."""
    path = tmp_path / "w.yaml"
    path.write_text(
        "policies:\n"
        "  unset:\n"
        "    circuit_breaker: {sliding_window: {kind: count, size: 20}}\n"
        "  tuned:\n"
        "    circuit_breaker:\n"
        "      sliding_window: {kind: count, size: 20}\n"
        "      failure_rate_threshold: 0.5\n"
        "      minimum_calls: 5\n",
        encoding="utf-8",
    )
    code, out, err = _run("check", str(path))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "  unset: circuit_breaker(sliding_window=count(size=20))",
        "  tuned: circuit_breaker(sliding_window=count(size=20) minimum_calls=5)",
    ]


def test_check_lists_no_default_derived_from_a_setting_written(tmp_path: Path) -> None:
    """A default the class derives from the fields written (a small window's minimum_calls, a long
    first delay's cap) is no change to list: only what the file wrote is."""
    path = tmp_path / "d.yaml"
    path.write_text(
        "policies:\n"
        "  small:\n"
        "    circuit_breaker: {sliding_window: {kind: count, size: 5}}\n"
        "  slow:\n"
        "    retry: {strategy: fixed, initial_delay: 2m}\n"
        "  quick:\n"
        "    retry: {max_delay: 500ms}\n",
        encoding="utf-8",
    )
    code, out, err = _run("check", str(path))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "  small: circuit_breaker(sliding_window=count(size=5))",
        "  slow: retry_policy(strategy=fixed initial_delay=120s)",
        "  quick: retry_policy(max_delay=0.5s)",
    ]


def test_check_prints_each_value_as_loaded(tmp_path: Path) -> None:
    """A value the account shows reads back as the value loaded: durations, rates and numbers are not
    rounded (was: ``window: 1.0000001s`` was shown ``window=1s``, ``ratio: 0.1234567`` ``ratio=0.123457``
    and ``rate: 100/m`` ``rate=1.66667/s``, which reads back as 1.66667, not 100/60)."""
    path = tmp_path / "exact.yaml"
    path.write_text(
        "retry_budgets:\n"
        "  b: {ratio: 0.1234567, min_retries_per_second: 2.5, window: 1.0000001s}\n"
        "policies:\n"
        "  p:\n"
        "    retry: {initial_delay: 0.00001, max_delay: 1234567.5s, multiplier: 1.0000001}\n"
        "    timeout: 3h\n"
        "    rate_limiter: {rate: 100/m}\n"
        "    fallback: {strategy: default_value, default_value: 0.1234567}\n"
        "  q:\n"
        "    rate_limiter: {rate: 7/h, max_wait: 1e-7}\n"
        "    retry: {initial_delay: -0.0}\n",
        encoding="utf-8",
    )
    code, out, err = _run("check", str(path))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        "  retry budget b: ratio=0.1234567 min_retries_per_second=2.5 window=1.0000001s",
        (
            "  p: retry_policy(initial_delay=0.00001s multiplier=1.0000001 max_delay=1234567.5s) "
            "fallback_config(strategy=default_value default_value=0.1234567) timeout=10800s "
            "rate_limiter(rate=100/m)"
        ),
        "  q: retry_policy(initial_delay=0s) rate_limiter(rate=7/h max_wait=0.0000001s)",
    ]
    loaded = load(path)
    assert parse_duration("1.0000001s") == loaded.retry_budgets["b"].window
    assert parse_rate("100/m") == loaded["p"].rate_limiter.rate  # type: ignore[union-attr]
    assert parse_rate("7/h") == loaded["q"].rate_limiter.rate  # type: ignore[union-attr]


def test_check_an_invalid_file_exits_1_with_the_error(tmp_path: Path) -> None:
    """Exit 1; the error on stderr with file, line and path; nothing on stdout."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "policies:\n  payments:\n    circuit_breaker:\n      failure_threshold: 0\n", encoding="utf-8"
    )
    code, out, err = _run("check", str(path))
    assert (code, out) == (1, "")
    assert err == (
        f"otel-resilience check: {path}:4: policies.payments.circuit_breaker.failure_threshold must be >= 1, got 0\n"
    )


def test_check_a_file_with_a_control_character_exits_1_with_its_line(tmp_path: Path) -> None:
    """A character YAML refuses (a NUL) is a ConfigError with its line, not a traceback."""
    path = tmp_path / "nul.yaml"
    path.write_text("policies:\n  payments:\n    timeout: 1s\x00\n", encoding="utf-8")
    code, out, err = _run("check", str(path))
    assert (code, out) == (1, "")
    assert err == (
        f"otel-resilience check: {path}:3: is not valid YAML: unacceptable character #x0000: "
        "special characters are not allowed\n"
    )


def test_check_a_missing_file_or_unknown_suffix_exits_1(tmp_path: Path) -> None:
    """A file that cannot be read, or whose format cannot be told, is a failure (1), not a usage error."""
    code, _, err = _run("check", str(tmp_path / "missing.yaml"))
    assert code == 1
    assert (
        err
        == f"otel-resilience check: cannot read {str(tmp_path / 'missing.yaml')!r}: No such file or directory\n"
    )
    (tmp_path / "x.ini").write_text("", encoding="utf-8")
    code, _, err = _run("check", str(tmp_path / "x.ini"))
    assert code == 1
    assert "has no known suffix" in err
    assert "pass --format yaml or --format toml" in err  # the option of the command, not of load()
    assert "format='yaml'" not in err


def test_check_without_pyyaml_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 1 and the extra to install."""
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, _, err = _run("check", str(SAMPLE))
    assert code == 1
    assert err == "otel-resilience check: reading YAML needs PyYAML: pip install 'otel-resilience[config]'\n"


@pytest.mark.parametrize("argv", [["check"], ["check", "a.yaml", "--format", "ini"], ["schema", "extra"]])
def test_check_and_schema_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing PATH, a bad --format or an extra argument is a usage error (2)."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert "usage: otel-resilience" in capsys.readouterr().err


def test_schema_prints_the_shipped_schema() -> None:
    """`otel-resilience schema` prints JSON equal to the generated schema."""
    code, out, err = _run("schema")
    assert (code, err) == (0, "")
    assert json.loads(out) == generate()
    assert out.endswith("}\n")


def test_the_command_runs_as_a_module() -> None:
    """`python -m otel_resilience check` in a fresh interpreter (the console script's entry point)."""
    done = subprocess.run(
        [sys.executable, "-m", "otel_resilience", "check", str(SAMPLE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "4 policies" in done.stdout


def test_from_env_loads_the_named_file(tmp_path: Path) -> None:
    """OTEL_RESILIENCE_CONFIG names the file; unset or blank means none."""
    assert from_env({}) is None
    assert from_env({CONFIG_ENV: "  "}) is None
    loaded = from_env({CONFIG_ENV: str(SAMPLE)})
    assert loaded is not None
    assert list(loaded) == list(load(SAMPLE))
    assert loaded.source == str(SAMPLE)


def test_from_env_reads_os_environ_and_keeps_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default environment: os.environ; previous= keeps the unchanged budgets."""
    monkeypatch.setenv(CONFIG_ENV, str(SAMPLE))
    first = from_env()
    assert first is not None
    again = from_env(previous=first)
    assert again is not None
    assert again["ml_service"] == first["ml_service"]
    monkeypatch.delenv(CONFIG_ENV)
    assert from_env() is None


def test_from_env_errors_name_the_variable_or_the_file(tmp_path: Path) -> None:
    """A file that cannot be read names the variable; an invalid one names the file and the line."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        from_env({CONFIG_ENV: str(missing)})
    assert (
        str(caught.value)
        == f"{CONFIG_ENV}={str(missing)!r} names a file that cannot be read: No such file or directory"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies:\n  p:\n    timeout: soon\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{bad}:3: policies\.p\.timeout must be a duration"):
        from_env({CONFIG_ENV: str(bad)}, clock=FakeClock())  # just written: its wait takes no time


@pytest.mark.parametrize("value", [None, 5, b"/etc/resilience.yaml"])
def test_from_env_refuses_a_variable_that_is_no_str_naming_it(value: object) -> None:
    """A mapping of the caller's holding no ``str`` for the variable: a TypeError naming it (was an
    AttributeError of ``strip``)."""
    with pytest.raises(TypeError, match=rf"^from_env\.environ\['{CONFIG_ENV}'\] must be a str"):
        from_env({CONFIG_ENV: value})  # type: ignore[dict-item]


class _ClosedOutput(io.StringIO):
    """Standard output whose reader is gone (`otel-resilience schema | true`)."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["check", str(SAMPLE)], "otel-resilience check"),
        (["schema"], "otel-resilience schema"),
        (["--version"], "otel-resilience"),
    ],
    ids=["check", "schema", "version"],
)
def test_a_closed_standard_output_exits_1_and_says_so(argv: list[str], command: str) -> None:
    """The module's promise: exit 1 with one line on stderr (was: a BrokenPipeError traceback)."""
    err = io.StringIO()
    assert main(argv, out=_ClosedOutput(), err=err) == 1
    assert err.getvalue() == f"{command}: cannot write to standard output: Broken pipe\n"


@pytest.mark.parametrize(
    "argv",
    [["schema"], ["demo", "--duration", "0.1", "--time-scale", "0.01", "--no-metrics-server", "--plain"]],
    ids=["schema", "demo"],
)
def test_a_standard_output_closed_at_start_exits_1_and_says_so(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`otel-resilience schema >&-`: Python's sys.stdout is None (was: an AttributeError traceback)."""
    monkeypatch.setattr(sys, "stdout", None)
    err = io.StringIO()
    assert main(argv, err=err) == 1
    assert err.getvalue() == f"otel-resilience {argv[0]}: cannot write to standard output: it is closed\n"


def test_the_command_with_its_reader_gone_exits_1_without_a_traceback() -> None:
    """A real pipe whose reader closed: one line on stderr, status 1, nothing at interpreter exit."""
    import os  # noqa: PLC0415

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "otel_resilience", "check", str(SAMPLE)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.stderr == "otel-resilience check: cannot write to standard output: Broken pipe\n"
    assert done.returncode == 1


def test_from_env_of_a_file_without_a_known_suffix_names_the_variable(tmp_path: Path) -> None:
    """The variable cannot pass format=: the error names it and says what to do (was: "pass format=...")."""
    path = tmp_path / "resilience.conf"
    path.write_text("policies: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        from_env({CONFIG_ENV: str(path)})
    assert str(caught.value) == (
        f"{CONFIG_ENV}={str(path)!r} names a file that has no known suffix (.yaml, .yml, .toml): "
        "rename it with one of them"
    )


def test_check_shows_a_name_that_is_not_printable_quoted(tmp_path: Path) -> None:
    """A policy or budget name with a line break (YAML's "\\n") stays on its line, quoted as a file
    writes it: it cannot pass for another policy's line (was: the name printed as it is, one line
    becoming two), and reads back as itself (was: quoted by its repr, 'b\\nx', which YAML reads as a
    backslash and an n)."""
    path = tmp_path / "names.yaml"
    path.write_text(
        'retry_budgets: {"b\\nx": {}}\n'
        'policies:\n  "a\\n  forged: timeout=1s": {retry: {budget: "b\\nx"}}\n  plain.name: {}\n',
        encoding="utf-8",
    )
    code, out, _ = _run("check", str(path))
    assert code == 0
    assert out.splitlines()[1:] == [
        '  retry budget "b\\nx": defaults',
        '  "a\\n  forged: timeout=1s": retry_policy(budget="b\\nx")',
        "  plain.name: no pattern",
    ]


def test_check_shows_each_exception_class_by_the_name_that_reads_back(tmp_path: Path) -> None:
    """A class that is not a built-in is shown by its dotted path, which loads the same class: the
    account never shows a name a file cannot write, or one that names a built-in of the same name
    (was: ``retry_on=OperationTimeoutError``, ``fault=HTTPException``, ``TimeoutError`` for both)."""
    path = tmp_path / "classes.yaml"
    path.write_text(
        "policies:\n"
        "  p:\n"
        "    retry: {retry_on: [otel_resilience.OperationTimeoutError, TimeoutError]}\n"
        "    chaos: {fault_rate: 1, fault: http.client.HTTPException}\n",
        encoding="utf-8",
    )
    code, out, err = _run("check", str(path))
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == (
        "  p: retry_policy(retry_on=[otel_resilience.errors.OperationTimeoutError, TimeoutError]) "
        "chaos(fault_rate=1 fault=http.client.HTTPException)"
    )
    reread = load(path)["p"]
    assert reread.retry_policy.retry_on == (OperationTimeoutError, TimeoutError)  # type: ignore[union-attr]
    shown = loads(
        "policies:\n  p:\n    retry: {retry_on: [otel_resilience.errors.OperationTimeoutError, TimeoutError]}\n"
        "    chaos: {fault_rate: 1, fault: http.client.HTTPException}\n"
    )["p"]
    assert shown == reread


@pytest.mark.parametrize("given", [(), ("--format", "yaml")])
def test_check_a_directory_says_it_is_one(tmp_path: Path, given: tuple[str, ...]) -> None:
    """One error with or without --format (was: "has no known suffix ...: pass --format yaml",
    then with --format yaml "Is a directory")."""
    code, out, err = _run("check", str(tmp_path), *given)
    assert (code, out) == (1, "")
    assert err == f"otel-resilience check: cannot read {str(tmp_path)!r}: is a directory: name a file\n"
