"""The `otel-resilience` command: parsing, defaults, clear errors, and `export`."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import io
import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

import _otel_resilience_cli
from otel_resilience import CircuitBreakerConfig, ResilienceConfig, RetryPolicy
from otel_resilience.__main__ import build_parser, main
from otel_resilience.demo import app
from otel_resilience.demo.options import (
    DEFAULT_HOST,
    DEFAULT_INTERVAL,
    DEFAULT_PORT,
    DEFAULT_SCENARIO,
    DEFAULT_SEED,
    DEFAULT_TIME_SCALE,
    DemoOptions,
)
from otel_resilience.demo.policies import customize_from_file
from otel_resilience.demo.scenarios import build_scenario
from otel_resilience.demo.services import MemoryCache

_SHORT_RUN = ("--duration", "0.3", "--time-scale", "0.01", "--no-metrics-server", "--plain")
"""What makes a demo run that a wrongly accepted option let start end at once."""


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_demo_defaults_are_pinned() -> None:
    """The defaults users read in the help: outage, seed 7, scale 0.05, 127.0.0.1:9464, 1 s lines."""
    assert (DEFAULT_SCENARIO, DEFAULT_SEED, DEFAULT_TIME_SCALE) == ("outage", 7, 0.05)
    assert (DEFAULT_HOST, DEFAULT_PORT, DEFAULT_INTERVAL) == ("127.0.0.1", 9464, 1.0)
    options = DemoOptions()
    assert options.duration is None
    assert options.otlp_endpoint is None
    assert options.summary_json is None
    assert not options.plain
    assert not options.once
    assert options.metrics_url == "http://127.0.0.1:9464/metrics"
    args = build_parser().parse_args(["demo"])
    assert (args.scenario, args.seed, args.duration, args.time_scale) == ("outage", 7, None, 0.05)
    assert (args.host, args.port, args.no_metrics_server) == ("127.0.0.1", 9464, False)


def test_the_seed_help_states_the_range_taken(capsys: pytest.CaptureFixture[str]) -> None:
    """`--seed -1` and `--seed 2**63` are refused: the help says which seeds are taken."""
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed SEED an integer from 0 to 2**63-1, the seed of the fault schedule;" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scenario", "meltdown"], r"--scenario: invalid choice: 'meltdown'"),
        (["--duration", "-5"], r"argument --duration: must be a finite number of seconds > 0, got -5.0"),
        (["--duration", "0"], r"argument --duration: must be a finite number of seconds > 0"),
        (["--duration", "nan"], r"argument --duration: must be a finite number of seconds > 0"),
        (["--duration", "soon"], r"argument --duration: must be a number, got 'soon'"),
        (["--time-scale", "0"], r"argument --time-scale: must be >= 0.005 and <= 1"),
        (["--time-scale", "2"], r"argument --time-scale: must be >= 0.005 and <= 1"),
        (["--time-scale", "1e-7"], r"argument --time-scale: must be >= 0.005 and <= 1"),
        ([*_SHORT_RUN, "--time-scale", "0.004"], r"argument --time-scale: must be >= 0.005 and <= 1"),
        ([*_SHORT_RUN, "--time-scale", "0.001"], r"below 0\.005 the demo cannot keep up"),
        (["--port", "0"], r"argument --port: must be a TCP port from 1 to 65535"),
        (["--port", "70000"], r"argument --port: must be a TCP port from 1 to 65535"),
        (["--port", "http"], r"argument --port: must be an integer, got 'http'"),
        (["--seed", "-1"], r"argument --seed: must be an integer >= 0"),
        # demo.seed is a resource attribute: OTLP encodes it as a 64-bit integer, and a larger one
        # made every OTLP export fail
        ([*_SHORT_RUN, "--seed", str(2**63)], r"argument --seed: must be an integer >= 0 and <= 2\*\*63-1"),
        (
            ["--otlp-endpoint", "localhost:4318"],
            r"argument --otlp-endpoint: must be an http:// or https:// URL",
        ),
        (
            ["--otlp-endpoint", "http://127.0.0.1:99999", *_SHORT_RUN],
            r"argument --otlp-endpoint: must be an http://",
        ),
        (
            ["--otlp-endpoint", "http://127.0.0.1:abc", *_SHORT_RUN],
            r"argument --otlp-endpoint: must be an http://",
        ),
        (["--otlp-endpoint", "http://[::1", *_SHORT_RUN], r"argument --otlp-endpoint: must be an http://"),
        (
            ["--otlp-endpoint", "http://127.0.0.1:4318/v1/traces", *_SHORT_RUN],
            r"argument --otlp-endpoint: must be the receiver's base URL, to which the demo appends",
        ),
        (["--interval", "0"], r"argument --interval: must be a finite number of seconds > 0"),
        # the view refreshes every 0.25 s: a shorter interval would silently become 0.25 s
        ([*_SHORT_RUN, "--interval", "0.1"], r"argument --interval: must be >= 0.25 seconds .*, got 0.1$"),
        (["--duration", "1e300"], r"argument --duration: must be <= \S+ seconds \(threading.TIMEOUT_MAX\)"),
        (["--port", "9000", "--no-metrics-server"], r"not allowed with argument --port"),
        # --host is the address of /metrics: with no /metrics it was ignored without a word
        (
            ["--host", "0.0.0.0", *_SHORT_RUN],
            r"error: --host is the address of /metrics, which --no-metrics-server does not serve: give one of them$",
        ),
        # a host name the resolver cannot encode (an empty label, one over 63 characters) stopped
        # the demo with a UnicodeError traceback when /metrics started
        (
            ["--host", "bad..host", "--port", "9", "--duration", "0.3", "--time-scale", "0.01", "--plain"],
            r"argument --host: must be an IP address or a host name .*got 'bad\.\.host': label empty( or too long)?$",
        ),
        (
            ["--host", f"{'a' * 64}.example", "--port", "9", "--duration", "0.3", "--plain"],
            r"argument --host: must be an IP address or a host name .*\.example': label (empty or )?too long$",
        ),
        (
            ["--otlp-endpoint", "http://bad..host:4318", *_SHORT_RUN],
            r"argument --otlp-endpoint: must be an http://.*got 'http://bad\.\.host:4318': label empty",
        ),
    ],
)
def test_bad_demo_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad option exits with status 2 and a message naming the option and the rule."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", *argv])
    assert caught.value.code == 2
    assert re.search(message, capsys.readouterr().err), message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "scenario",
            "nope",
            r"--scenario must be one of steady, outage, brownout, flapping, surge, got 'nope'",
        ),
        ("duration", -1.0, r"--duration must be a finite number of seconds > 0, got -1.0"),
        ("duration", "3", r"--duration must be a number of seconds, got '3'"),
        ("time_scale", 0.0, r"--time-scale must be >= 0.005 and <= 1 .*, got 0.0"),
        ("time_scale", 0.0049, r"--time-scale must be >= 0.005 and <= 1 .*, got 0.0049"),
        ("port", 0, r"--port must be a TCP port from 1 to 65535, got 0"),
        ("seed", True, r"--seed must be an integer >= 0 and <= 2\*\*63-1 .*, got True"),
        ("seed", 2**63, r"^--seed must be an integer >= 0 and <= 2\*\*63-1 .*, got 9223372036854775808$"),
        ("host", " ", r"--host must be a non-empty address"),
        (
            "host",
            ".",
            r"^--host must be an IP address or a host name .*, got '\.': label empty( or too long)?$",
        ),
        ("host", "\udcff", r"^--host must be an IP address or a host name .*, got '\\udcff': "),
        ("otlp_endpoint", "http://.a:4318", r"^--otlp-endpoint must be .*got 'http://.a:4318': label empty"),
        ("otlp_endpoint", "ftp://x", r"--otlp-endpoint must be an http:// or https:// URL"),
        ("otlp_endpoint", "http://127.0.0.1:99999", r"^--otlp-endpoint must be .*: Port out of range"),
        ("otlp_endpoint", "http://127.0.0.1:abc", r"^--otlp-endpoint must be .*got 'http://127.0.0.1:abc'"),
        ("otlp_endpoint", "http://[::1:4318", r"^--otlp-endpoint must be .*: Invalid IPv6 URL"),
        ("otlp_endpoint", "http://127.0.0.1:0", r"^--otlp-endpoint must be .*got 'http://127.0.0.1:0'$"),
        ("otlp_endpoint", "http://127.0.0.1:4318?x=1", r"^--otlp-endpoint must be .*no query or fragment"),
        ("otlp_endpoint", "http://127.0.0.1:4318#x", r"^--otlp-endpoint must be .*no query or fragment"),
        ("otlp_endpoint", 4318, r"^--otlp-endpoint must be .*got 4318$"),
        # a signal's own URL: the demo appends /v1/metrics and /v1/traces to it, and every export
        # went to .../v1/metrics/v1/metrics (404), the run saying nothing but a failed export
        (
            "otlp_endpoint",
            "http://127.0.0.1:4318/v1/metrics",
            (
                r"^--otlp-endpoint must be the receiver's base URL, to which the demo appends /v1/metrics "
                r"and /v1/traces: got 'http://127.0.0.1:4318/v1/metrics' \(give http://127.0.0.1:4318\)$"
            ),
        ),
        (
            "otlp_endpoint",
            "https://otlp.example.com/collector/v1/traces/",
            r"^--otlp-endpoint must be the receiver's base URL.*\(give https://otlp.example.com/collector\)$",
        ),
        ("interval", float("inf"), r"--interval must be a finite number of seconds > 0, got inf"),
        (
            "interval",
            0.2,
            r"^--interval must be >= 0.25 seconds \(the view refreshes every 0.25 s.*, got 0.2$",
        ),
        ("duration", 10**400, r"--duration must be a finite number of seconds > 0, got 1000"),
        ("interval", 1e300, r"--interval must be <= \S+ seconds \(threading.TIMEOUT_MAX\), got 1e\+300"),
        # an int too large for a float raised OverflowError, naming no option
        pytest.param(
            "time_scale",
            10**400,
            r"^--time-scale must be a finite number, got 1000",
            id="time_scale-huge-int",
        ),
        ("time_scale", float("nan"), r"^--time-scale must be a finite number, got nan$"),
        # a flag given a string was taken as set ("no" is truthy)
        ("plain", "no", r"^--plain must be True or False, got 'no'$"),
        ("once", 1, r"^--once must be True or False, got 1$"),
        ("redis_drops", "yes", r"^--redis-drops must be True or False, got 'yes'$"),
    ],
)
def test_demo_options_validate_every_field(field: str, value: object, message: str) -> None:
    """DemoOptions refuses a bad value with a message naming the option, the rule and the value."""
    with pytest.raises((ValueError, TypeError), match=message):
        DemoOptions(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "host", ["localhost", "::1", "fe80::1%lo", "bücher.example", "example.com.", "0.0.0.0"]
)
def test_demo_options_take_every_address_the_resolver_takes(host: str) -> None:
    """An IP address (IPv6 with a zone too), a host name, an international or fully qualified one."""
    assert DemoOptions(host=host).host == host
    assert DemoOptions(otlp_endpoint=f"http://{f'[{host}]' if ':' in host else host}:4318").otlp_endpoint


@pytest.mark.parametrize(
    "endpoint", ["https://proxy.example/otlp", "http://127.0.0.1:4318/v1", "http://h/v1/metrics-gateway"]
)
def test_an_otlp_endpoint_may_have_a_base_path(endpoint: str) -> None:
    """A receiver behind a path of its own (a proxy's) is taken: only a signal's own path is refused."""
    assert DemoOptions(otlp_endpoint=endpoint).otlp_endpoint == endpoint


def test_help_lists_the_commands_scenarios_and_time_scale(capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --help` explains the scenarios, the compressed time and the options."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    for word in (
        "steady",
        "outage",
        "brownout",
        "flapping",
        "--time-scale",
        "--summary-json",
        "--otlp-endpoint",
        "130 after Ctrl-C (SIGINT), 143 after SIGTERM",
    ):
        assert word in text
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out
    assert "export" in out


def test_version_is_printed() -> None:
    """`--version` prints the package version."""
    code, out, _ = _run("--version")
    assert code == 0
    assert out.startswith("otel-resilience ")


def test_a_missing_demo_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the demo's dependencies the command says which are missing and how to install them."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        return None if name == "rich" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    code, _, err = _run("demo", "--duration", "1", "--no-metrics-server")
    assert code == 1
    assert "missing rich" in err
    assert "pip install 'otel-resilience[demo]'" in err


def test_a_busy_port_fails_clearly(free_port: int) -> None:
    """When the /metrics port is taken the demo stops at once and says what to do."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", free_port))
        taken.listen()
        code, out, err = _run("demo", "--duration", "1", "--port", str(free_port), "--plain")
    assert code == 1
    assert f"cannot serve /metrics on 127.0.0.1:{free_port}" in err
    assert "choose another --port" in err
    assert "summary" not in out


def test_the_cli_runs_a_demo_and_writes_the_summary_json(tmp_path: Path) -> None:
    """`demo --summary-json PATH` writes the same figures the plain summary prints."""
    path = tmp_path / "summary.json"
    code, out, err = _run(
        "demo",
        "--scenario",
        "steady",
        "--duration",
        "1.5",
        "--time-scale",
        "0.01",
        "--no-metrics-server",
        "--plain",
        "--seed",
        "3",
        "--summary-json",
        str(path),
    )
    assert code == 0, err
    summary = json.loads(path.read_text(encoding="utf-8"))
    assert summary["scenario"] == "steady"
    assert summary["seed"] == 3
    assert summary["stopped_by"] == "duration"
    assert summary["lost_calls"] == 0
    assert summary["requests"]["issued"] > 100
    assert f"availability  {summary['availability'] * 100:.2f} %" in out
    assert "== otel-resilience demo summary: scenario steady, seed 3 ==" in out
    assert "metrics: not served" in out


def test_a_summary_json_in_a_missing_folder_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The folder of --summary-json is checked before the run starts."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--summary-json", "/no/such/folder/summary.json"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: otel-resilience demo ")
    assert "--summary-json: folder '/no/such/folder' does not exist" in err


@pytest.mark.parametrize("where", ["folder", "unwritable", "under-a-file"])
def test_a_summary_json_that_cannot_be_written_is_a_usage_error_before_the_run(
    tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder, a file that takes no writes, a path under a file: exit 2 at once, naming the option
    (it failed only after the whole run), and the run never starts."""
    target = {
        "folder": tmp_path,
        "unwritable": Path("/proc/version"),  # refuses writes, even to root
        "under-a-file": Path(__file__) / "summary.json",
    }[where]
    out = io.StringIO()
    with pytest.raises(SystemExit) as caught:
        main(["demo", *_SHORT_RUN, "--summary-json", str(target)], out=out)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: otel-resilience demo ")
    assert "error: --summary-json: " in err
    assert str(target) in err
    assert out.getvalue() == ""  # no header: the run did not start
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left behind


def test_a_summary_json_of_a_dash_is_a_usage_error_that_suggests_dev_stdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --summary-json -` wrote a file named '-' after the run. '-' is standard output by
    convention, where the demo writes its view and its summary: the JSON would mix with them, so it
    is refused before the run (exit 2, one line naming the option, suggesting /dev/stdout)."""
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with pytest.raises(SystemExit) as caught:
        main(["demo", *_SHORT_RUN, "--summary-json", "-"], out=out)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: otel-resilience demo ")
    error = err.splitlines()[-1]
    assert error.startswith("otel-resilience demo: error: argument --summary-json: '-' ")
    assert [line for line in err.splitlines() if "error:" in line] == [error]
    assert "/dev/stdout" in error
    assert "./-" in error  # how to name a file called '-'
    assert out.getvalue() == ""  # the run did not start
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "not '-': standard output carries the view and the summary (/dev/stdout appends the JSON" in help_text
    )


def test_a_summary_json_checked_before_the_run_is_left_as_it_was(tmp_path: Path) -> None:
    """The check writes nothing: a new file is not left behind by a run that ends early; an old one keeps its text."""
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    old.write_text("earlier\n", encoding="utf-8")
    for path in (new, old):
        with pytest.raises(SystemExit):
            main(["demo", "--summary-json", str(path), "--format", "yaml"])  # a usage error after the check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]
    assert old.read_text(encoding="utf-8") == "earlier\n"


def test_a_summary_json_through_a_symbolic_link_keeps_the_link(tmp_path: Path) -> None:
    """The check of a link to a file still to be made removes what it created, not the link (it
    deleted the link and left an empty file where it pointed); the run then writes through it."""
    (tmp_path / "runs").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "runs" / "summary.json")
    with pytest.raises(SystemExit):
        main(["demo", "--summary-json", str(link), "--format", "yaml"])  # a usage error after the check
    assert link.is_symlink()
    assert list((tmp_path / "runs").iterdir()) == []
    code, _, _ = _run("demo", *_SHORT_RUN, "--summary-json", str(link))
    assert code == 0
    assert link.is_symlink()
    assert (
        json.loads((tmp_path / "runs" / "summary.json").read_text(encoding="utf-8"))["stopped_by"]
        == "duration"
    )


def test_a_summary_json_that_fails_at_the_end_fails_after_showing_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the summary cannot be written after all (a full disk), it is still printed, and the exit status is 1."""
    from otel_resilience.demo import app  # noqa: PLC0415 - the demo extra

    def full(summary: object, path: object, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(app, "write_summary_json", full)
    target = tmp_path / "summary.json"
    code, out, err = _run(
        "demo",
        "--duration",
        "0.5",
        "--time-scale",
        "0.01",
        "--no-metrics-server",
        "--plain",
        "--summary-json",
        str(target),
    )
    assert code == 1
    assert "== otel-resilience demo summary" in out
    assert f"cannot write the summary to {target}" in err
    assert "No space left on device" in err


@pytest.mark.parametrize("through", ["the-same-path", "a-symbolic-link"])
def test_a_summary_json_that_is_the_config_file_is_a_usage_error(
    through: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--summary-json naming the --config file (itself, or through a link) is refused before the
    run, and the file is left as it was: the summary used to replace the configuration."""
    config = tmp_path / "demo.yaml"
    text = (Path(__file__).resolve().parents[2] / "examples" / "demo.yaml").read_text(encoding="utf-8")
    config.write_text(text, encoding="utf-8")
    summary = config
    if through == "a-symbolic-link":  # the summary is written to the file it points to
        summary = tmp_path / "summary.json"
        summary.symlink_to(config)
    with pytest.raises(SystemExit) as caught:
        main(["demo", *_SHORT_RUN, "--config", str(config), "--summary-json", str(summary)])
    assert caught.value.code == 2
    assert re.search(
        rf"error: --summary-json must not be the --config file, got '{re.escape(str(summary))}'",
        capsys.readouterr().err,
    )
    assert config.read_text(encoding="utf-8") == text


def test_the_demo_runs_the_policies_of_a_config_file(tmp_path: Path) -> None:
    """`demo --config examples/demo.yaml`: the file's tenants quota (2/s) replaces the built-in 0.5/s."""
    path = tmp_path / "summary.json"
    example = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
    argv = ["demo", "--scenario", "steady", "--duration", "1.5", "--time-scale", "0.01"]
    code, _, err = _run(
        *argv, "--no-metrics-server", "--plain", "--config", str(example), "--summary-json", str(path)
    )
    assert code == 0, err
    summary = json.loads(path.read_text(encoding="utf-8"))
    assert summary["tenants"]["rate"] == pytest.approx(2.0)
    assert summary["tenants"]["rejections"] == dict.fromkeys(
        ("acme", "globex", "initech", "umbrella", "hooli"), 0
    )
    assert summary["lost_calls"] == 0


def test_the_header_describes_the_policies_of_the_config_file() -> None:
    """With --config, the header shows the file's policies, not the built-in ones it replaced."""
    example = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
    argv = ["demo", "--scenario", "steady", "--duration", "0.3", "--time-scale", "0.01"]
    code, out, err = _run(*argv, "--no-metrics-server", "--plain", "--config", str(example))
    assert code == 0, err
    header = out.split("== otel-resilience demo summary")[0]
    policies = next(line for line in header.splitlines() if line.startswith("policies: "))
    # the file replaces ml_service (breaker 3, no shared budget) and content_api: not described as built in
    assert "ml_service (breaker 5 / 120 s" not in policies
    assert "share a retry budget" not in policies
    assert f"ml_service (from {example})" in policies
    assert "database (timeout 10 s, fallback [], bulkhead 20" in policies  # still the built-in one
    assert "  ml_service: circuit_breaker(failure_threshold=3 timeout=120s)" in header
    assert "  tenants: rate_limiter(rate=2/s burst=4)" in header


def test_a_config_file_with_a_policy_the_demo_lacks_fails_clearly(tmp_path: Path) -> None:
    """A policy name the demo does not have, or an invalid file, is an error naming --config."""
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("version: 1\npolicies:\n  payments:\n    timeout: 1s\n", encoding="utf-8")
    code, _, err = _run("demo", "--duration", "1", "--no-metrics-server", "--plain", "--config", str(unknown))
    assert code == 1
    assert "--config:" in err
    assert "names payments, not a policy of the demo (ml_service, database, content_api, tenants)" in err
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("version: 1\npolicies:\n  tenants:\n    timeout: -1\n", encoding="utf-8")
    code, _, err = _run("demo", "--duration", "1", "--no-metrics-server", "--plain", "--config", str(invalid))
    assert code == 1
    assert "invalid.yaml:4" in err


def test_every_duration_of_a_config_file_is_scaled_to_the_demo() -> None:
    """A file's durations are production values: the retries' attempt_timeout and the breaker's
    max_half_open_wait are scaled with the rest (unscaled, 20 s per attempt outlived the scaled 60 s
    deadline, 0.6 s, and the run stopped with a traceback)."""
    fit = customize_from_file(0.01, MemoryCache())
    config = fit(
        "ml_service",
        ResilienceConfig(
            timeout=60.0,
            retry_policy=RetryPolicy(max_attempts=3, initial_delay=2.0, attempt_timeout=20.0),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=120.0, max_half_open_wait=10.0),
        ),
    )
    assert config.timeout == pytest.approx(0.6)
    assert config.retry_policy is not None
    assert config.retry_policy.initial_delay == pytest.approx(0.02)
    assert config.retry_policy.attempt_timeout == pytest.approx(0.2)
    assert config.circuit_breaker is not None
    assert config.circuit_breaker.timeout == pytest.approx(1.2)
    assert config.circuit_breaker.max_half_open_wait == pytest.approx(0.1)


def test_a_config_file_that_sets_the_chaos_of_a_demo_policy_fails_clearly(tmp_path: Path) -> None:
    """The demo's faults are its scenario's chaos links: a file's `chaos` section is refused, not dropped."""
    path = tmp_path / "chaos.yaml"
    path.write_text(
        "version: 1\npolicies:\n  content_api:\n    chaos:\n      fault_rate: 1.0\n      fault: TimeoutError\n",
        encoding="utf-8",
    )
    code, out, err = _run("demo", *_SHORT_RUN, "--config", str(path))
    assert code == 1
    assert f"otel-resilience demo: --config: {path}: policy content_api sets chaos" in err
    assert "summary" not in out


def test_a_config_value_out_of_range_once_scaled_fails_clearly(tmp_path: Path) -> None:
    """A rate `check` accepts (at most sys.maxsize/s) but over the limit once divided by the time
    scale: an error naming --config, the policy and the scaling, exit 1 (it was a traceback)."""
    path = tmp_path / "fast.yaml"
    path.write_text(
        "version: 1\npolicies:\n  tenants:\n    rate_limiter:\n      rate: 9.0e+18\n      burst: 4\n",
        encoding="utf-8",
    )
    assert _run("check", str(path))[0] == 0
    code, out, err = _run("demo", *_SHORT_RUN, "--config", str(path))
    assert code == 1
    assert err.startswith(
        "otel-resilience demo: --config: policy tenants: RateLimiterConfig.rate must be <= 9223372036854775807"
    )
    assert "at the demo's time scale 0.01 (durations multiplied by it, rates divided by it)" in err
    assert "summary" not in out


class _ClosedAfter(io.StringIO):
    """Standard output whose reader goes away (`demo | head -3`) after ``lines`` writes."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self._left = lines

    def write(self, text: str) -> int:
        if self._left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self._left -= 1
        return super().write(text)


def test_a_closed_stdout_ends_the_demo_at_once_and_says_so() -> None:
    """`demo | head`: the run ends when its output goes away, exit 1, with no misleading summary error."""
    out, err = _ClosedAfter(12), io.StringIO()
    started = time.monotonic()
    code = main(
        [
            "demo",
            "--duration",
            "20",
            "--time-scale",
            "0.01",
            "--no-metrics-server",
            "--plain",
            "--interval",
            "0.25",
        ],
        out=out,
        err=err,
    )
    assert time.monotonic() - started < 10  # not the 20 s of --duration: the run stopped with its view
    assert code == 1
    assert "standard output was closed" in err.getvalue()
    assert "summary" not in err.getvalue()


class _FullAfter(io.StringIO):
    """Standard output on a full disk (`demo > /dev/full`): every write fails with ENOSPC after ``lines``."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self._left = lines

    def write(self, text: str) -> int:
        if self._left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= 1
        return super().write(text)


@pytest.mark.parametrize("summary_json", [False, True], ids=["no-summary-json", "summary-json"])
def test_an_output_that_fails_is_named_not_the_summary_file(tmp_path: Path, summary_json: bool) -> None:
    """Standard output failing (a full disk) ends the run with exit 1 and says so; the summary file,
    never written, is not blamed (it was: "cannot write the summary to None")."""
    path = tmp_path / "summary.json"
    extra = ["--summary-json", str(path)] if summary_json else []
    err = io.StringIO()
    code = main(["demo", *_SHORT_RUN, "--interval", "0.25", *extra], out=_FullAfter(3), err=err)
    assert code == 1
    assert "otel-resilience demo: cannot write to standard output: [Errno 28] No space left on device" in (
        err.getvalue()
    )
    assert "summary" not in err.getvalue()
    assert not path.exists()


def test_the_config_file_of_the_demo_may_name_its_format(tmp_path: Path) -> None:
    """`demo --config FILE --format yaml` reads a file whose suffix names no format, as `check --format` does."""
    example = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
    conf = tmp_path / "demo.conf"
    conf.write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    argv = [
        "demo",
        "--scenario",
        "steady",
        "--duration",
        "0.3",
        "--time-scale",
        "0.01",
        "--no-metrics-server",
    ]
    code, _, err = _run(*argv, "--plain", "--config", str(conf))
    assert code == 1
    assert f"otel-resilience demo: --config: {conf}: has no known suffix" in err
    assert "pass --format yaml or --format toml" in err
    code, out, err = _run(*argv, "--plain", "--config", str(conf), "--format", "yaml")
    assert code == 0, err
    assert "  tenants: rate_limiter(rate=2/s burst=4)" in out.split("== otel-resilience demo summary")[0]
    code, _, err = _run(*argv, "--plain", "--config", str(conf), "--format", "toml")
    assert code == 1
    assert "is not valid TOML" in err


def test_the_config_of_the_demo_may_not_be_a_directory(tmp_path: Path) -> None:
    """`demo --config DIR` says it is a directory before the run, with or without --format (was:
    "has no known suffix ...: pass --format", then with --format yaml "Is a directory")."""
    for given in ((), ("--format", "yaml")):
        code, out, err = _run("demo", "--plain", "--no-metrics-server", "--config", str(tmp_path), *given)
        assert (code, out) == (1, "")
        assert (
            err
            == f"otel-resilience demo: --config: cannot read {str(tmp_path)!r}: is a directory: name a file\n"
        )


def test_a_demo_format_without_a_config_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--format is the --config file's: alone it is refused, not ignored."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--duration", "0.3", "--no-metrics-server", "--format", "yaml"])
    assert caught.value.code == 2
    assert "--format is the format of the --config file" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"^--format must be 'yaml' or 'toml', got 'json'$"):
        DemoOptions(config=Path("x.json"), config_format="json")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^--format is the format of the --config file"):
        DemoOptions(config_format="yaml")


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["demo", *_SHORT_RUN, "--config", ""], "--config"),
        (["demo", *_SHORT_RUN, "--summary-json", ""], "--summary-json"),
        (["check", ""], "PATH"),
    ],
)
def test_an_empty_path_is_a_usage_error(
    argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty path (an unset shell variable) is refused as such, not read as the current folder."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert f"argument {name}: must not be empty" in capsys.readouterr().err


_SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "endpoint", [f"http://app:{_SECRET}@127.0.0.1:0", f"http://app:{_SECRET}@127.0.0.1:4318?x=1"]
)
def test_a_refused_otlp_endpoint_is_shown_without_its_credentials(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The usage error names --otlp-endpoint and shows the URL with its user info hidden (it showed
    the password the URL carries, for requests to send as basic authentication)."""
    with pytest.raises(SystemExit) as caught:
        main(["demo", "--otlp-endpoint", endpoint])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "argument --otlp-endpoint" in err
    assert _SECRET not in err
    assert "http://***@127.0.0.1" in err


def test_a_run_whose_sdk_is_disabled_says_it_exports_no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_SDK_DISABLED=true turns the SDK's providers into no-ops: the header says that /metrics
    and OTLP get nothing, where it announced the metrics as served and exported none."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    code, out, err = _run("demo", *_SHORT_RUN)
    assert code == 0, err
    assert (
        "telemetry: none: OTEL_SDK_DISABLED=true turns the OpenTelemetry SDK off (no series on "
        "/metrics, no OTLP export); unset it to see the run's telemetry"
    ) in out
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    code, out, err = _run("demo", *_SHORT_RUN)
    assert code == 0, err
    assert "OTEL_SDK_DISABLED" not in out


def test_the_header_shows_the_otlp_endpoint_without_its_credentials() -> None:
    """The run's header names the OTLP receiver, not the password in its URL."""
    options = DemoOptions(otlp_endpoint=f"https://app:{_SECRET}@otlp.example.com:4318/")
    scenario = build_scenario(options.scenario, options.seed, repeat=True)
    header = "\n".join(app._header(options, scenario, None))
    assert _SECRET not in header
    assert "OTLP: https://***@otlp.example.com:4318 (OTLP/HTTP protobuf" in header


@pytest.mark.parametrize(
    ("given", "guarded"),
    [
        (["python", "-m", "otel_resilience", "demo"], True),
        (["python", "-X", "dev", "-motel_resilience", "demo"], True),
        (["python", "-m", "otel_resilience.ops.export", "demo"], False),
        (["python", "-m", "otel_resilience_demo", "demo"], False),
    ],
    ids=["python-m-the-package", "joined-m", "python-m-a-module-of-it", "python-m-another-package"],
)
def test_the_package_load_is_guarded_for_python_m_of_the_package_only(
    monkeypatch: pytest.MonkeyPatch, given: list[str], *, guarded: bool
) -> None:
    """While the interpreter locates `python -m otel_resilience` (argv[0] "-m"), SIGINT and SIGTERM
    stop it cleanly until the command is loaded, then the interpreter's handlers are back; the
    package loaded for any other module keeps the interpreter's handlers."""
    monkeypatch.setattr(sys, "argv", ["-m", "demo"])
    monkeypatch.setattr(sys, "orig_argv", given)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:  # the interpreter's handlers, as a shell starts the command (a test worker may ignore SIGINT)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _otel_resilience_cli.guard_package_load("otel_resilience")
        during = {signum: signal.getsignal(signum) for signum in before}
        _otel_resilience_cli.end_package_guard()
        after = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    stop = _otel_resilience_cli._stop
    assert (during[signal.SIGINT] is stop, during[signal.SIGTERM] is stop) == (guarded, guarded)
    assert after == (signal.default_int_handler, signal.SIG_DFL)


def test_the_package_guard_leaves_an_ignored_signal_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal the command was started ignoring (SIGINT in a script's background job) stays ignored."""
    monkeypatch.setattr(sys, "argv", ["-m"])
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "otel_resilience"])
    before = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _otel_resilience_cli.guard_package_load("otel_resilience")
        during = signal.getsignal(signal.SIGINT)
        _otel_resilience_cli.end_package_guard()
    finally:
        signal.signal(signal.SIGINT, before)
    assert during is signal.SIG_IGN
