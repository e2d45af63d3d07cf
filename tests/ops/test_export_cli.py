"""`otel-resilience export`: copies the shipped files, regenerates the rules on request, and says what is missing."""

from __future__ import annotations

import io
import re
import sys

import pytest

from otel_resilience.__main__ import main
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import export


def _run(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("kind", export.KINDS)
def test_export_writes_the_shipped_files_and_lists_them(kind, tmp_path):
    """`export KIND DIR` writes the package's files of that kind and names each one."""
    code, out, err = _run("export", kind, str(tmp_path))
    assert code == 0, err
    assert {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()} == export.packaged(kind)
    assert f"exported {kind} to {tmp_path}: {len(export.packaged(kind))} file(s)" in out


def test_export_works_without_the_ops_extra(monkeypatch, tmp_path):
    """With PyYAML and the Grafana SDK unimportable (a bare install, Python 3.10), export still copies the files."""
    for module in ("yaml", "grafana_foundation_sdk", "promql_parser"):
        monkeypatch.setitem(sys.modules, module, None)
    code, _, err = _run("export", "dashboards", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(export.packaged("dashboards"))


def test_options_without_the_ops_extra_name_the_extra(monkeypatch, tmp_path):
    """`export alerts DIR --runbook-url-base URL` without PyYAML exits 1 with a message naming the extra, no traceback."""
    monkeypatch.setitem(sys.modules, "yaml", None)
    code, _, err = _run(
        "export", "alerts", str(tmp_path), "--runbook-url-base", "https://wiki.example.com/rb"
    )
    assert code == 1
    assert "pip install 'otel-resilience[ops]'" in err
    assert "Traceback" not in err
    assert "ModuleNotFoundError" not in err


def test_runbook_url_base_reaches_every_alert(tmp_path):
    """`export alerts DIR --runbook-url-base URL` points every runbook_url at URL/<AlertName>.md."""
    code, _, err = _run(
        "export", "alerts", str(tmp_path), "--runbook-url-base", "https://wiki.example.com/rb/"
    )
    assert code == 0, err
    text = (tmp_path / ar.RULES_FILE).read_text()
    for name in ar.ALERT_NAMES:
        assert f"runbook_url: https://wiki.example.com/rb/{name}.md" in text
    assert ar.RUNBOOK_BASE_URL not in text


def test_export_refuses_an_unknown_kind(capsys):
    """Only the known kinds can be exported: anything else is a usage error."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "grafana", "out"])
    assert caught.value.code == 2
    assert "invalid choice: 'grafana'" in capsys.readouterr().err


def test_a_bad_set_option_prints_the_export_usage(tmp_path, capsys):
    """A usage error of `export` shows the usage of `export`, not of the whole command."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path), "--set", "nope=1"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: otel-resilience export ")
    assert "otel-resilience export: error: RuleOptions has no field 'nope'" in err


def test_options_for_another_kind_are_a_usage_error(tmp_path, capsys):
    """The rule options apply to `export alerts` only."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "dashboards", str(tmp_path), "--set", "retry_storm_ratio=0.7"])
    assert caught.value.code == 2
    assert "apply to `export alerts` only" in capsys.readouterr().err


def test_a_time_scale_under_a_millisecond_per_rule_duration_is_a_usage_error(tmp_path, capsys):
    """`export alerts DIR --time-scale 1e-6` exits 2 naming --time-scale (not the Python parameter,
    time_scale), and writes nothing."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path / "rules"), "--time-scale", "1e-6"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error: --time-scale=1e-06 makes '1m' 0.06 ms: under 1 ms" in err
    assert "; use a --time-scale of at least 1.66667e-05 (1 ms per 1m)" in err
    assert "time_scale" not in err
    assert not (tmp_path / "rules").exists()


def test_the_module_cli_refuses_a_time_scale_under_a_millisecond_per_rule_duration(tmp_path, capsys):
    """`python -m otel_resilience.ops.export alerts DIR --time-scale 1e-6` is a usage error too (exit 2)."""
    with pytest.raises(SystemExit) as caught:
        export.main(["alerts", str(tmp_path / "rules"), "--time-scale", "1e-6"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error: --time-scale=1e-06 makes '1m' 0.06 ms: under 1 ms" in err
    assert "time_scale" not in err
    assert not (tmp_path / "rules").exists()


@pytest.mark.parametrize("value", ["0", "1.5", "nan"])
@pytest.mark.parametrize("command", ["otel-resilience export", "python -m otel_resilience.ops.export"])
def test_a_time_scale_out_of_range_names_the_option_once(command, value, tmp_path, capsys):
    """`export alerts DIR --time-scale 0` said `argument --time-scale: time_scale must be ...`: the
    option typed, then the Python parameter. It names the option alone, as the demo's does."""
    argv = ["alerts", str(tmp_path / "rules"), "--time-scale", value]
    with pytest.raises(SystemExit) as caught:
        main(["export", *argv]) if command == "otel-resilience export" else export.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert (
        f"{command}: error: argument --time-scale: must be > 0 and <= 1 (1 = production timing), got " in err
    )
    assert "time_scale" not in err


def test_export_reports_a_write_error(tmp_path):
    """An OSError while writing is reported with the folder, and exits 1."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = _run("export", "dashboards", str(blocker / "sub"))
    assert code == 1
    assert f"cannot write dashboards to {blocker / 'sub'}" in err


@pytest.mark.parametrize("inside", [False, True])
def test_export_to_a_file_says_a_file_is_in_the_way(tmp_path, inside):
    """DIR naming a file (or a path through one) is reported as such, not as a bare errno."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker / "sub" if inside else blocker
    code, _, err = _run("export", "alerts", str(target))
    assert code == 1
    assert f"cannot write alerts to {target}: {blocker} is a file, not a folder" in err
    assert "Errno" not in err


@pytest.mark.parametrize(
    ("field", "option"),
    [("runbook_url_base", "--runbook-url-base"), ("job_label", "--job-label")],
)
def test_an_option_given_both_ways_is_a_usage_error(field, option, tmp_path, capsys):
    """`--set FIELD=A` and the option of the same field set to B: which was meant? Refused, as
    `--set FIELD` given twice is, never the option silently winning over the `--set`."""
    value = "https://wiki.example.com/rb" if field == "runbook_url_base" else "service"
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path / "out"), "--set", f"{field}={value}", option, "other"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {field} given twice ({value!r} by --set and 'other' by {option}): give it once" in err
    assert not (tmp_path / "out").exists()


def test_a_set_field_given_twice_is_a_usage_error(tmp_path, capsys):
    """`--set FIELD` twice: refused with both values, not the last one taken."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path), "--set", "timeout_ratio=0.1", "--set", "timeout_ratio=0.2"])
    assert caught.value.code == 2
    assert (
        "timeout_ratio given twice ('0.1' by --set and '0.2' by --set): give it once"
        in capsys.readouterr().err
    )


def test_an_empty_directory_is_a_usage_error(tmp_path, monkeypatch, capsys):
    """`export KIND "$UNSET"`: an empty DIR is refused, not taken as the current folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main(["export", "collector", ""])
    assert caught.value.code == 2
    assert "argument DIR: must not be empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_time_scale_that_collapses_an_adapted_ladder_is_a_usage_error(tmp_path, capsys):
    """`export alerts DIR --set ... --time-scale` that rounds the warning and the page to one length exits 2."""
    argv = [
        "export",
        "alerts",
        str(tmp_path / "rules"),
        "--set",
        "breaker_open_warning_for=1m",
        "--set",
        "breaker_open_critical_for=70s",
        "--time-scale",
        str(1 / 60_000),
    ]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "--time-scale=1.6666666666666667e-05 makes breaker_open_warning_for" in err
    assert "use a --time-scale of at least 0.0001" in err
    assert "time_scale" not in err
    assert not (tmp_path / "rules").exists()


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (("--job-label", ""), "--job-label must be a Prometheus label name, got ''"),
        (("--job-label", "instance"), "--job-label must name the service, not 'instance', a label the rules"),
        (("--runbook-url-base", "ftp://wiki"), "--runbook-url-base must be an http(s) URL, got 'ftp://wiki'"),
        (("--runbook-url-base", "https:///"), "--runbook-url-base must be an http(s) URL with a host, got"),
        (
            ("--runbook-url-base", "https://wiki/r?x=1"),
            "--runbook-url-base must be an http(s) URL without a query",
        ),
        (
            ("--runbook-url-base", "https://wiki/#top"),
            "--runbook-url-base must be an http(s) URL without a query",
        ),
        (
            ("--runbook-url-base", "https://wiki/{{"),
            "--runbook-url-base must be an http(s) URL without {{ or }}",
        ),
    ],
)
@pytest.mark.parametrize("command", ["otel-resilience export", "python -m otel_resilience.ops.export"])
def test_a_bad_option_value_names_the_option_typed_not_the_python_field(
    command, typed, message, tmp_path, capsys
):
    """`export alerts DIR --job-label ""`: a usage error (exit 2) whose one line names --job-label,
    the option typed, not RuleOptions.job_label, the field of the Python API; nothing is written."""
    run = main if command == "otel-resilience export" else export.main
    argv = ["alerts", str(tmp_path / "out"), *typed]
    with pytest.raises(SystemExit) as caught:
        run(["export", *argv] if run is main else argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    error = err.splitlines()[-1]
    assert error.startswith(f"{command}: error: {message}")
    assert [line for line in err.splitlines() if "error:" in line] == [error]
    assert "RuleOptions" not in err
    assert not (tmp_path / "out").exists()


def test_a_bad_field_given_by_set_keeps_the_field_name(tmp_path, capsys):
    """`--set job_label=` names the field typed: RuleOptions.job_label, as the Python API does."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path / "out"), "--set", "job_label="])
    assert caught.value.code == 2
    assert (
        "otel-resilience export: error: RuleOptions.job_label must be a Prometheus label name, got ''"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("command", ["otel-resilience export", "python -m otel_resilience.ops.export"])
def test_the_time_scale_help_states_the_smallest_scale_the_rules_take(command, tmp_path, capsys):
    """`export --help` gave `0 < F <= 1`, but 1e-05 was refused: it states the real bound, which the
    rules take and a scale just under it does not."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "--help"]) if command == "otel-resilience export" else export.main(["--help"])
    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    help_text = text[text.index("--time-scale F") :]
    bound = re.search(r"F >= 1/(\d+)", help_text)
    assert bound is not None, help_text
    smallest = 1 / int(bound.group(1))
    assert main(["export", "alerts", str(tmp_path / "ok"), "--time-scale", repr(smallest)]) == 0
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path / "under"), "--time-scale", repr(smallest * 0.99)])
    assert caught.value.code == 2


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("retry_storm_ratio=abc", "RuleOptions.retry_storm_ratio must be a number, got 'abc'"),
        ("breaker_flapping_trips=2.5", "RuleOptions.breaker_flapping_trips must be an integer, got '2.5'"),
    ],
)
def test_a_set_value_that_does_not_parse_says_what_it_must_be_in_words(setting, message, tmp_path, capsys):
    """`--set breaker_flapping_trips=2.5` said `must be int`, a Python type's name, where a value
    that parses but breaks the rule says `must be an integer >= 1`: it says it in words too."""
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path / "out"), "--set", setting])
    assert caught.value.code == 2
    assert f"otel-resilience export: error: {message}\n" in capsys.readouterr().err


def test_the_help_of_the_alert_options_states_the_values_they_take(capsys):
    """`--job-label ""` and `--runbook-url-base ftp://...` are refused: the help says what is taken."""
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--runbook-url-base URL alerts only: an http:// or https:// URL," in text
    assert "--job-label LABEL alerts only: a Prometheus label name," in text


def test_the_shared_store_and_stale_configuration_options_are_set_on_the_command_line(tmp_path):
    """`export alerts DIR --set store_flapping_outages=5 --set store_degraded_for=5m ...` writes rules with
    those values (scaled by --time-scale as every `for` is); `--help` lists the fields; a bad count exits 2."""
    settings = (
        "store_degraded_for=5m",
        "store_flapping_outages=5",
        "store_flapping_for=4m",
        "config_stale_for=30m",
    )
    code, _, err = _run(
        "export", "alerts", str(tmp_path), "--time-scale", "0.05", *(f"--set={item}" for item in settings)
    )
    assert code == 0, err
    text = (tmp_path / ar.RULES_FILE).read_text(encoding="utf-8")
    assert f"expr: {ar.R_STORE_OUTAGES} >= 5\n        for: 12s\n" in text
    assert "expr: job_name:resilience_store_degraded:sum > 0\n        for: 15s\n" in text
    assert "expr: job_file:resilience_config_stale:sum > 0\n        for: 90s\n" in text
    assert not (tmp_path / ar.RULES_TEST_FILE).exists()
    with pytest.raises(SystemExit) as caught:
        main(["export", "alerts", str(tmp_path / "out"), "--set", "store_flapping_outages=0"])
    assert caught.value.code == 2
