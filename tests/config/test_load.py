"""otel_resilience.config: YAML and TOML files to named ResilienceConfig policies."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from otel_resilience import (
    BulkheadConfig,
    ChaosConfig,
    CircuitBreakerConfig,
    CountWindow,
    FallbackConfig,
    FallbackStrategy,
    Jitter,
    OperationTimeoutError,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeWindow,
    resilient,
)
from otel_resilience.config import (
    ConfigError,
    ConfigFile,
    formats,
    from_env,
    load,
    loader,
    loads,
    parse_duration,
)
from otel_resilience.config.errors import cannot_read
from otel_resilience.config.formats import UnknownFormatError, read_file
from otel_resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resilience.yaml"
TOML_TWIN = Path(__file__).with_name("fixtures") / "resilience.toml"


def test_the_issue_example_loads_into_named_policies() -> None:
    """The example of the issue: circuit_breaker, retry and timeout, keys as written there."""
    policies = loads(
        "policies:\n"
        "  payments:\n"
        "    circuit_breaker: {failure_threshold: 3, timeout: 30s}\n"
        "    retry: {max_attempts: 4, strategy: linear, initial_delay: 250ms}\n"
        "    timeout: 2.0\n"
    )
    assert list(policies) == ["payments"]
    assert policies["payments"] == ResilienceConfig(
        name="payments",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=30.0),
        retry_policy=RetryPolicy(max_attempts=4, strategy=RetryStrategy.LINEAR, initial_delay=0.25),
        timeout=2.0,
    )


def test_the_sample_file_loads_with_the_typical_configurations() -> None:
    """resilience.yaml at the repository root holds the SPEC's typical configurations."""
    policies = load(SAMPLE)
    assert list(policies) == ["content_analysis", "ml_service", "database", "payments"]
    content = policies["content_analysis"]
    assert content.circuit_breaker is not None
    assert content.circuit_breaker.failure_threshold == 3
    assert content.retry_policy is not None
    assert content.retry_policy.max_attempts == 2
    assert (content.timeout, content.bulkhead_config) == (
        30.0,
        BulkheadConfig(max_concurrent=5, max_waiting=10),
    )
    ml = policies["ml_service"]
    assert ml.circuit_breaker == CircuitBreakerConfig(failure_threshold=5, timeout=120.0)
    assert ml.retry_policy is not None
    assert (ml.retry_policy.max_attempts, ml.retry_policy.strategy, ml.retry_policy.initial_delay) == (
        3,
        RetryStrategy.EXPONENTIAL,
        2.0,
    )
    assert ml.timeout == 60.0
    database = policies["database"]
    assert database.timeout == 10.0
    assert database.fallback_config == FallbackConfig(
        strategy=FallbackStrategy.DEFAULT_VALUE, default_value=[]
    )
    assert database.bulkhead_config == BulkheadConfig(max_concurrent=20)
    budget = policies.retry_budgets["shared"]
    assert (budget.ratio, budget.min_retries_per_second, budget.window) == (0.2, 1.0, 60.0)
    assert content.retry_policy.budget is budget
    assert ml.retry_policy.budget is budget


def test_the_toml_twin_loads_to_the_same_policies() -> None:
    """The TOML fixture says what resilience.yaml says: equal policies, in the same order."""
    yaml_file = load(SAMPLE)
    toml_file = load(TOML_TWIN, previous=yaml_file)  # the same budget object, so configs compare equal
    assert toml_file.format == "toml"
    assert yaml_file.format == "yaml"
    assert list(toml_file) == list(yaml_file)
    for name in yaml_file:
        assert toml_file[name] == yaml_file[name], name


def test_every_section_and_kind_of_value() -> None:
    """Each config class, each kind of value: windows, enums, exceptions by name, rates, chaos."""
    policies = loads(
        "retry_budgets:\n"
        "  b: {ratio: 0.5, min_retries_per_second: 2, window: 30s}\n"
        "policies:\n"
        "  all:\n"
        "    circuit_breaker:\n"
        "      sliding_window: {kind: count, size: 50}\n"
        "      minimum_calls: 5\n"
        "      ignore_exceptions: KeyError\n"
        "      max_half_open_wait: 1m30s\n"
        "    retry_policy:\n"
        "      strategy: exponential\n"
        "      jitter: decorrelated\n"
        "      no_retry_on: [otel_resilience.errors.CircuitOpenError]\n"
        "      budget: b\n"
        "    fallback_config: {strategy: default_value, default_value: {status: degraded}, handle_exceptions: OSError}\n"
        "    bulkhead_config: {max_concurrent: 2, max_waiting: 1, timeout: 1h}\n"
        "    rate_limiter: {rate: 5, algorithm: sliding_window}\n"
        "    chaos: {fault_rate: 0.1, fault: ConnectionError, latency_rate: 0.5, latency: 20ms, seed: 7, enabled: false}\n"
        "    enable_recovery: true\n"
        "    circuit_breaker_name: shared-breaker\n"
        "    bulkhead_name: shared-pool\n"
        "    spans: false\n"
        "    record_duration: false\n"
        "    max_attempts_total: 5\n"
    )
    config = policies["all"]
    budget = policies.retry_budgets["b"]
    assert config == ResilienceConfig(
        name="all",
        circuit_breaker=CircuitBreakerConfig(
            sliding_window=CountWindow(50),
            minimum_calls=5,
            ignore_exceptions=(KeyError,),
            max_half_open_wait=90.0,
        ),
        retry_policy=RetryPolicy(
            strategy=RetryStrategy.EXPONENTIAL,  # DECORRELATED replaces any other's schedule: refused
            jitter=Jitter.DECORRELATED,
            no_retry_on=(__import__("otel_resilience").CircuitOpenError,),
            budget=budget,
        ),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE,
            default_value={"status": "degraded"},
            handle_exceptions=(OSError,),
        ),
        bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=1, timeout=3600.0),
        rate_limiter=RateLimiterConfig(rate=5.0, algorithm="sliding_window"),
        chaos=ChaosConfig(
            fault_rate=0.1, fault=ConnectionError, latency_rate=0.5, latency=0.02, seed=7, enabled=False
        ),
        enable_recovery=True,
        circuit_breaker_name="shared-breaker",
        bulkhead_name="shared-pool",
        spans=False,
        record_duration=False,
        max_attempts_total=5,
    )
    assert (budget.ratio, budget.min_retries_per_second, budget.window) == (0.5, 2.0, 30.0)


def test_time_window_rates_and_null_values() -> None:
    """A time window; a rate per minute; null gives None to the class (and an empty section defaults)."""
    policies = loads(
        "policies:\n"
        "  p:\n"
        "    circuit_breaker: {sliding_window: {kind: time, seconds: 2m, buckets: 4}, slow_call_duration: 1s}\n"
        "    rate_limiter: {rate: 120/m, burst: null}\n"
        "    retry: {}\n"
        "    fallback: null\n"
        "    timeout: null\n"
        "  empty:\n"
    )
    config = policies["p"]
    assert config.circuit_breaker is not None
    assert config.circuit_breaker.sliding_window == TimeWindow(seconds=120.0, buckets=4)
    assert config.circuit_breaker.slow_call_duration == 1.0
    assert config.rate_limiter == RateLimiterConfig(rate=2.0)
    assert config.rate_limiter.burst == 2
    assert config.retry_policy == RetryPolicy()
    assert (config.fallback_config, config.timeout) == (None, None)
    assert policies["empty"] == ResilienceConfig(name="empty")


def test_rate_settings_left_out_or_null_take_their_defaults_with_a_window() -> None:
    """With a window, a rate setting left out or written null is its default, as in code."""
    policies = loads(
        "policies:\n"
        "  unset:\n"
        "    circuit_breaker: {sliding_window: {kind: count, size: 20}}\n"
        "  nulls:\n"
        "    circuit_breaker:\n"
        "      sliding_window: {kind: count, size: 20}\n"
        "      failure_rate_threshold: null\n"
        "      minimum_calls: null\n"
        "      slow_call_rate_threshold: null\n"
        "  written:\n"
        "    circuit_breaker:\n"
        "      sliding_window: {kind: count, size: 20}\n"
        "      failure_rate_threshold: 0.5\n"
        "      minimum_calls: 10\n"
        "  plain:\n"
        "    circuit_breaker: {failure_threshold: 3, minimum_calls: null}\n"
    )
    expected = CircuitBreakerConfig(sliding_window=CountWindow(20))
    for name in ("unset", "nulls", "written"):
        assert policies[name].circuit_breaker == expected
    breaker = policies["unset"].circuit_breaker
    assert breaker is not None
    assert (breaker.failure_rate_threshold, breaker.minimum_calls, breaker.slow_call_rate_threshold) == (
        0.5,
        10,
        None,  # it acts through slow_call_duration, which is not set
    )
    assert policies["plain"].circuit_breaker == CircuitBreakerConfig(failure_threshold=3)


def test_a_small_count_window_left_without_minimum_calls_loads() -> None:
    """A count window smaller than ``minimum_calls``' default caps it there, as in code."""
    policies = loads("policies:\n  p:\n    circuit_breaker: {sliding_window: {kind: count, size: 5}}\n")
    breaker = policies["p"].circuit_breaker
    assert breaker == CircuitBreakerConfig(sliding_window=CountWindow(5))
    assert breaker is not None
    assert breaker.minimum_calls == 5


def test_aliases_and_field_names_load_alike() -> None:
    """retry/retry_policy, fallback/fallback_config, bulkhead/bulkhead_config are the same keys."""
    short = loads(
        "policies:\n  p:\n    retry: {max_attempts: 2}\n    fallback: {strategy: default_value}\n"
        "    bulkhead: {max_concurrent: 3}\n"
    )
    long = loads(
        "policies:\n  p:\n    retry_policy: {max_attempts: 2}\n    fallback_config: {strategy: default_value}\n"
        "    bulkhead_config: {max_concurrent: 3}\n"
    )
    assert short["p"] == long["p"]
    assert short["p"].bulkhead_config == BulkheadConfig(max_concurrent=3)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (2, 2.0),
        (0.5, 0.5),
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1m0.5s", 60.5),
        (" 3s ", 3.0),
        ("0s", 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    """Numbers are seconds; strings carry units ms, s, m, h, one or several."""
    assert parse_duration(text) == seconds


def test_a_negative_duration_string_is_its_negative_for_the_field_to_judge() -> None:
    """``-5s`` is -5.0: refused by its field's own rule (``> 0`` or ``>= 0``), not by another."""
    assert parse_duration("-5s") == parse_duration("-5000ms") == -5.0
    assert parse_duration("-1h30m") == -5400.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-0s", "got '-0s'"),  # no negative zero: the schema refuses it too
        ("2", "(write 2 for seconds, or add a unit: '2s')"),
        ("2 minutes", "got '2 minutes'"),
        ("2d", "got '2d'"),
        ("s", "got 's'"),
        ("", "got ''"),
        (True, "got True (bool)"),
        ([1], "got [1] (list)"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    """Negative zero, strings without a unit, unknown units and other types are refused."""
    with pytest.raises((ValueError, TypeError), match="must be") as caught:
        parse_duration(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(("written", "seconds"), [("'1e-3'", 0.001), ("'1e3'", 1000.0), ("'2.5'", 2.5)])
def test_the_hint_for_a_duration_without_a_unit_works_when_written(written: str, seconds: float) -> None:
    """A quoted '1e-3' is a string: the hint offers what loads (0.001, '0.001s'), never 1e-3 again."""
    with pytest.raises(ConfigError) as caught:
        loads(f"policies:\n  p:\n    timeout: {written}\n")
    hint = re.search(r"\(write (\S+) for seconds, or add a unit: '(\S+)'\)$", str(caught.value))
    assert hint is not None, str(caught.value)
    for fixed in (hint[1], f"'{hint[2]}'"):
        assert loads(f"policies:\n  p:\n    timeout: {fixed}\n")["p"].timeout == seconds
    with pytest.raises(ValueError, match=r"got 'inf'$"):  # no hint to write what is refused anyway
        parse_duration("inf")


def test_a_policy_from_a_file_runs_under_its_name() -> None:
    """The loaded config works as any: @resilient runs it, retries per the file, named by its key."""
    policies = loads(
        "policies:\n  flaky:\n    retry: {max_attempts: 3, initial_delay: 0, retry_on: KeyError}\n"
    )
    calls: list[int] = []

    @resilient(policies["flaky"])
    def fetch() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("missing")
        return "ok"

    assert fetch() == "ok"
    assert len(calls) == 3
    assert policies["flaky"].name == "flaky"


def test_config_file_is_a_read_only_mapping_in_file_order() -> None:
    """ConfigFile: a Mapping (file order, read-only), its budgets, source and format, a repr."""
    config = loads("policies:\n  z: {}\n  a: {}\n  m: {}\n", source="x.yaml")
    assert isinstance(config, ConfigFile)
    assert list(config) == ["z", "a", "m"]
    assert list(config.policies) == ["z", "a", "m"]
    assert len(config) == 3
    assert "a" in config
    assert (config.source, config.format) == ("x.yaml", "yaml")
    assert repr(config) == "ConfigFile(source='x.yaml', policies=['z', 'a', 'm'])"
    with pytest.raises(TypeError):
        config.policies["n"] = ResilienceConfig()  # type: ignore[index]
    assert dict(config.retry_budgets) == {}


def test_a_config_files_attributes_are_read_only() -> None:
    """Its source, format, budgets and policies cannot be assigned (was: source, format and retry_budgets
    could: a manager keys the budgets it keeps by a file's source, and load(previous=) reads its budgets)."""
    config = loads("retry_budgets:\n  shared: {}\npolicies:\n  a: {}\n", source="x.yaml")
    budgets = dict(config.retry_budgets)
    for name, value in [("source", "y.yaml"), ("format", "toml"), ("retry_budgets", {}), ("policies", {})]:
        with pytest.raises(AttributeError):
            setattr(config, name, value)
        with pytest.raises(AttributeError):
            delattr(config, name)
    assert (config.source, config.format, dict(config.retry_budgets)) == ("x.yaml", "yaml", budgets)
    assert list(budgets) == ["shared"]


def test_previous_keeps_unchanged_budgets_and_only_those() -> None:
    """A reload with previous= reuses a budget whose settings did not change: the configs stay equal."""
    text = "retry_budgets:\n  b: {ratio: 0.1}\n  c: {ratio: 0.3}\npolicies:\n  p: {retry: {budget: b}}\n"
    first = loads(text)
    again = loads(text)
    assert again["p"] != first["p"]  # a new RetryBudget is another budget
    reloaded = loads(text.replace("ratio: 0.3", "ratio: 0.4"), previous=first)
    assert reloaded["p"] == first["p"]
    assert reloaded.retry_budgets["b"] is first.retry_budgets["b"]
    assert reloaded.retry_budgets["c"] is not first.retry_budgets["c"]
    assert reloaded.retry_budgets["c"].ratio == 0.4
    assert isinstance(reloaded.retry_budgets["c"], RetryBudget)


def test_yaml_anchors_and_merge_keys_share_settings() -> None:
    """YAML's own sharing works: an anchor, and a merge key whose values a policy overrides."""
    policies = loads(
        "policies:\n"
        "  a: &defaults\n"
        "    timeout: 5s\n"
        "    retry: {max_attempts: 2}\n"
        "  b:\n"
        "    <<: *defaults\n"
        "    timeout: 9s\n"
        "  c: *defaults\n"
    )
    assert policies["a"].timeout == 5.0
    assert policies["b"].timeout == 9.0
    assert policies["b"].retry_policy == policies["a"].retry_policy == RetryPolicy(max_attempts=2)
    assert policies["c"] == dataclasses.replace(policies["a"], name="c")


def test_a_top_level_key_starting_with_x_dash_holds_anchors_and_is_not_read() -> None:
    """Shared settings live under an ``x-`` key (not a policy of their own) and are merged from there."""
    policies = loads(
        "x-defaults: &defaults\n"
        "  timeout: 5s\n"
        "  retry: {max_attempts: 2}\n"
        "x-notes: anything at all, [not, read]\n"
        "policies:\n"
        "  a: *defaults\n"
        "  b:\n"
        "    <<: *defaults\n"
        "    timeout: 9s\n"
    )
    assert list(policies) == ["a", "b"]
    assert (policies["a"].timeout, policies["b"].timeout) == (5.0, 9.0)
    assert policies["b"].retry_policy == RetryPolicy(max_attempts=2)
    with pytest.raises(ConfigError, match="defaults is not a key of the file's top level"):
        loads("defaults: {timeout: 5s}\npolicies: {}\n")


def test_dotted_exception_names_import_their_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dotted name imports the module it names (here one of the test's), module:attr too."""
    (tmp_path / "hf_config_errors.py").write_text(
        "class Declined(Exception):\n    class Soft(Exception):\n        pass\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    policies = loads(
        "policies:\n  p:\n    retry: {retry_on: [hf_config_errors.Declined, 'hf_config_errors:Declined.Soft']}\n"
    )
    module = sys.modules["hf_config_errors"]
    assert policies["p"].retry_policy is not None
    assert policies["p"].retry_policy.retry_on == (module.Declined, module.Declined.Soft)
    assert OperationTimeoutError in load(SAMPLE)["payments"].retry_policy.retry_on  # type: ignore[union-attr]


def test_format_by_suffix_or_argument(tmp_path: Path) -> None:
    """The suffix picks the format (.yaml, .yml, .toml); format= overrides; an unknown suffix is an error."""
    for name, text in (
        ("a.yml", "policies: {p: {timeout: 1s}}\n"),
        ("a.toml", "[policies.p]\ntimeout = '1s'\n"),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert load(tmp_path / name)["p"].timeout == 1.0
    (tmp_path / "a.conf").write_text("[policies.p]\ntimeout = '1s'\n", encoding="utf-8")
    assert load(tmp_path / "a.conf", format="toml")["p"].timeout == 1.0
    with pytest.raises(ConfigError, match=r"a\.conf: has no known suffix \(\.yaml, \.yml, \.toml\)"):
        load(tmp_path / "a.conf")
    with pytest.raises(ValueError, match="format must be 'yaml' or 'toml', got 'ini'"):
        loads("", "ini")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.yaml")


@pytest.mark.parametrize("value", ["ini", "", "YAML", 5])
def test_a_format_the_loader_does_not_read_is_refused_before_the_file_is(
    tmp_path: Path, value: object
) -> None:
    """format= is checked first: a ValueError naming it (not the file's error, not the suffix's format)."""
    (tmp_path / "a.yaml").write_text("policies: {p: {timeout: 1s}}\n", encoding="utf-8")
    for path in (tmp_path / "a.yaml", tmp_path / "missing.yaml"):
        with pytest.raises(ValueError, match=r"^format must be 'yaml' or 'toml', got "):
            load(path, format=value)  # type: ignore[arg-type]


def test_arguments_of_the_wrong_type_are_refused_naming_them(tmp_path: Path) -> None:
    """Bytes for text or path, a previous that is no earlier load, an environment that is no mapping:
    a TypeError naming the argument, before any file is read (was: "a bytes-like object is required,
    not 'str'" for bytes, the reverse of the fault, or an AttributeError from deep inside)."""
    path = tmp_path / "a.yaml"
    path.write_text("policies: {p: {timeout: 1s}}\n", encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    with pytest.raises(TypeError, match=r"^loads\.text must be a str, got b'policies.*' \(bytes\)"):
        loads(text.encode())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^loads\.text must be a str, got None \(NoneType\)"):
        loads(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^load\.path must be a str or an os\.PathLike of one, got b'"):
        load(str(path).encode())  # type: ignore[arg-type]
    for earlier in ({}, {"p": ResilienceConfig()}):
        with pytest.raises(
            TypeError, match=r"^loads\.previous must be a ConfigFile \(an earlier load\) or None"
        ):
            loads(text, previous=earlier)  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match=r"^load\.previous must be a ConfigFile \(an earlier load\) or None"
        ):
            load(tmp_path / "missing.yaml", previous=earlier)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^from_env\.previous must be a ConfigFile"):
            from_env({}, previous=earlier)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^from_env\.environ must be a mapping of names to values"):
        from_env([("OTEL_RESILIENCE_CONFIG", str(path))])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^from_env\.clock "):
        from_env({"OTEL_RESILIENCE_CONFIG": str(path)}, clock=FakeClock)  # type: ignore[arg-type]
    earlier_load = load(path)
    assert load(path, previous=earlier_load) == loads(text, previous=earlier_load) == earlier_load
    just_written = FakeClock()  # its wait for a stable file takes no time
    assert (
        from_env({"OTEL_RESILIENCE_CONFIG": str(path)}, previous=earlier_load, clock=just_written)
        == earlier_load
    )


def test_a_source_or_path_of_the_wrong_type_is_refused_naming_it() -> None:
    """A source that is no name (it names the file applied to a manager) and a path that is none
    are refused at once, naming the argument (was: a ConfigFile with ``source=1``, whose
    ``apply_config`` created its policies, then raised a TypeError from ``os.path``)."""
    text = "policies: {p: {timeout: 1s}}\n"
    for source in (1, b"resilience.yaml"):
        with pytest.raises(TypeError, match=r"^loads\.source must be a str or None, got "):
            loads(text, source=source)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^load\.path must be a str or an os\.PathLike of one, got 1 \(int\)"
    ):
        load(1)  # type: ignore[arg-type]
    assert loads(text, source="resilience.yaml").source == "resilience.yaml"


def test_an_empty_source_or_path_is_refused_naming_it() -> None:
    """An empty source names no file: refused as an empty name is (was: a ConfigFile with
    ``source=""``, whose errors named no file and which ``apply_config`` recorded as the file at
    ``os.path.abspath("")``, the current directory); an empty path is refused before any read
    (was: "has no known suffix", or with a format the directory ``.`` read as a file)."""
    text = "policies: {p: {timeout: 1s}}\n"
    with pytest.raises(ValueError, match=r"^loads\.source must be a non-empty name or None, got ''"):
        loads(text, source="")
    with pytest.raises(ValueError, match=r"^load\.path must be a non-empty path, got ''"):
        load("", format="yaml")
    assert loads(text, source=None).source is None


def test_an_unknown_suffix_raises_the_error_a_command_words_its_hint_from(tmp_path: Path) -> None:
    """load() raises UnknownFormatError, a ConfigError carrying the fault apart from load()'s hint; it pickles."""
    with pytest.raises(UnknownFormatError) as caught:
        load(tmp_path / "a.conf")
    error = caught.value
    assert isinstance(error, ConfigError)
    assert (error.source, error.fault) == (
        str(tmp_path / "a.conf"),
        "has no known suffix (.yaml, .yml, .toml)",
    )
    assert (
        str(error)
        == f"{tmp_path / 'a.conf'}: has no known suffix (.yaml, .yml, .toml): pass format='yaml' or 'toml'"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.fault, str(copy)) == (UnknownFormatError, error.fault, str(error))


def test_missing_pyyaml_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PyYAML, reading YAML says which extra to install; the package imports no parser itself."""
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(
        ImportError, match=r"reading YAML needs PyYAML: pip install 'otel-resilience\[config\]'"
    ):
        loads("policies: {}\n")
    assert loads("[policies.p]\n", "toml")["p"] == ResilienceConfig(name="p")


def test_config_error_pickles_and_keeps_its_parts() -> None:
    """ConfigError is a ValueError with path, keys, line, source and reason; it survives pickling."""
    error = ConfigError(
        "must be >= 1, got 0", path=("policies", "p", "retry", "retry_on", 1), line=3, source="f.yaml"
    )
    assert isinstance(error, ValueError)
    assert str(error) == "f.yaml:3: policies.p.retry.retry_on[1] must be >= 1, got 0"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.keys, copy.line, copy.source, copy.reason, str(copy)) == (
        error.path,
        error.keys,
        3,
        "f.yaml",
        error.reason,
        str(error),
    )
    assert str(ConfigError("bad", line=2)) == "line 2: bad"
    assert str(ConfigError("bad", path=("policies", "a.b"))) == "policies['a.b'] bad"


def test_importing_the_config_package_imports_no_parser() -> None:
    """`import otel_resilience.config` (and the command's module) loads neither PyYAML nor a TOML parser."""
    code = (
        "import sys, otel_resilience.config, otel_resilience.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'yaml', 'tomllib', 'tomli'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_the_readme_configuration_example_loads() -> None:
    """The YAML example of the README's "Configuration file" section is a valid file."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    policies = loads(block)
    assert list(policies) == ["ml_service", "payments"]
    assert policies["payments"].rate_limiter == RateLimiterConfig(rate=100 / 60, burst=10)


@pytest.mark.parametrize("file_format", ["toml", "yaml"])
def test_a_byte_order_mark_is_ignored_in_either_format(file_format: str, tmp_path: Path) -> None:
    """Some editors start a UTF-8 file with a byte order mark: the file reads as it would without one."""
    text = (
        '[policies.payments]\ntimeout = "2s"\n'
        if file_format == "toml"
        else "policies:\n  payments:\n    timeout: 2s\n"
    )
    path = tmp_path / f"resilience.{file_format}"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load(path)["payments"] == loads(text, file_format)["payments"]
    assert loads("\ufeff" + text, file_format)["payments"].timeout == 2.0


def test_an_alias_of_a_mapping_that_overrides_a_merged_key_loads() -> None:
    """`b: *a` where `a` merges defaults and overrides one: `b` is `a` (was: "timeout is written twice")."""
    text = (
        "policies:\n"
        "  base: &base\n"
        "    timeout: 1s\n"
        "    spans: false\n"
        "  a: &a\n"
        "    <<: *base\n"
        "    timeout: 2s\n"
        "  b: *a\n"
        "  c:\n"
        "    <<: &inline {<<: *base, timeout: 3s}\n"
        "  d: *inline\n"
    )
    policies = loads(text)
    assert policies["a"] == ResilienceConfig(name="a", timeout=2.0, spans=False)
    assert policies["b"] == dataclasses.replace(policies["a"], name="b")
    assert policies["c"] == ResilienceConfig(name="c", timeout=3.0, spans=False)
    assert policies["d"] == dataclasses.replace(policies["c"], name="d")


def test_a_merge_of_a_list_of_mappings_takes_each_key_from_the_earliest() -> None:
    """`<<: [*a, *b]`: a key of `a` wins over the same key of `b`, and the mapping's own keys over both.

    YAML's merge key says so ("keys in mapping nodes earlier in the sequence override keys specified
    in later mapping nodes"); the last mapping's value was taken (`timeout` 2 s below, not 1 s).
    """
    text = (
        "policies:\n"
        "  a: &a {timeout: 1s, spans: false}\n"
        "  b: &b {timeout: 2s, record_duration: false, retry: {max_attempts: 4}}\n"
        "  c: &c {<<: *a, timeout: 3s}\n"
        "  merged: {<<: [*a, *b]}\n"
        "  inline: {<<: [{timeout: 5s}, {timeout: 6s, spans: false}]}\n"
        "  own: {<<: [*a, *b], timeout: 7s}\n"
        "  nested: {<<: [*c, *a]}\n"
        "  twice: {<<: [*a, *a, *b]}\n"
    )
    policies = loads(text)
    assert policies["merged"] == ResilienceConfig(
        name="merged",
        timeout=1.0,
        spans=False,
        record_duration=False,
        retry_policy=RetryPolicy(max_attempts=4),
    )
    assert policies["inline"] == ResilienceConfig(name="inline", timeout=5.0, spans=False)
    assert policies["own"].timeout == 7.0
    assert policies["nested"] == ResilienceConfig(name="nested", timeout=3.0, spans=False)
    assert policies["twice"] == dataclasses.replace(policies["merged"], name="twice")


def test_two_merge_keys_in_one_mapping_are_a_key_written_twice() -> None:
    """`<<: *a` then `<<: *b` in one mapping writes the key `<<` twice, as any other key written twice:
    refused, with how to merge both (was: merged silently, `a`'s timeout taken where PyYAML takes `b`'s)."""
    text = (
        "policies:\n"
        "  a: &a {timeout: 1s}\n"
        "  b: &b {timeout: 2s, spans: false}\n"
        "  p:\n"
        "    <<: *a\n"
        "    <<: *b\n"
    )
    with pytest.raises(ConfigError) as caught:
        loads(text, source="f.yaml")
    assert str(caught.value) == (
        "f.yaml:6: policies.p['<<'] is written twice: merge several mappings with one key, <<: [*first, *second]"
    )
    assert loads(text.replace("<<: *a\n    <<: *b", "<<: [*a, *b]"))["p"].timeout == 1.0


def test_a_character_escaped_as_a_surrogate_pair_is_that_character() -> None:
    """JSON (so YAML 1.2) writes a character past U+FFFF as two escapes, `\\ud83d\\ude00` for U+1F600, as
    json.dumps does: it is that one character (was: two lone surrogates, a policy name that no
    telemetry exporter can encode, so that a Prometheus scrape failed as a whole)."""
    data = {
        "policies": {
            "caf\U0001f600": {
                "circuit_breaker": {},
                "circuit_breaker_name": "b\U0001f600",
                "fallback": {
                    "strategy": "default_value",
                    "default_value": ["x\U0001f600", {"\U0001f600": 1}],
                },
            }
        }
    }
    text = json.dumps(data)
    assert "\\ud83d\\ude00" in text
    policies = loads(text)
    assert list(policies) == ["caf\U0001f600"]
    policy = policies["caf\U0001f600"]
    assert policy.circuit_breaker_name == "b\U0001f600"
    assert policy.fallback_config.default_value == ["x\U0001f600", {"\U0001f600": 1}]  # type: ignore[union-attr]
    tagged = loads('policies: {p: {chaos: {outcome_rate: 1, outcome: !!set {"\\ud83d\\ude00"}}}}')
    assert tagged["p"].chaos.outcome == {"\U0001f600"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'policies:\n  p:\n    circuit_breaker_name: "b\\ud800"\n',
            (
                "f.yaml:3: policies.p.circuit_breaker_name is not valid YAML: 'b\\ud800' holds half of a "
                "surrogate pair ('\\ud800') without the other half, which is no character"
            ),
        ),
        (
            'policies:\n  "\\ude00\\ud83d": {}\n',  # the halves in the wrong order
            (
                "f.yaml:2: policies is not valid YAML: '\\ude00\\ud83d' holds half of a surrogate pair "
                "('\\ude00') without the other half, which is no character"
            ),
        ),
    ],
)
def test_a_lone_surrogate_is_refused(text: str, message: str) -> None:
    """Half a surrogate pair escaped alone is no character (TOML refuses it too): refused at its path."""
    with pytest.raises(ConfigError) as caught:
        loads(text, source="f.yaml")
    assert str(caught.value) == message


def test_an_alias_is_the_value_of_its_anchor_read_once() -> None:
    """An alias is its anchor's value, as yaml.safe_load gives it, not a copy made at each use.

    Copies made at each use grow exponentially with aliases of aliases: a file of a few lines
    whose lists nest nine times so (a "billion laughs") kept `load` and `otel-resilience check`
    busy for hours.
    """
    levels = ["        - &l0 [x, x, x, x, x, x, x, x, x, x]\n"]
    levels += [f"        - &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 5)]
    head = "policies:\n  p:\n    fallback:\n      strategy: default_value\n      default_value:\n"
    text = head + "".join(levels)
    value = loads(text)["p"].fallback_config.default_value  # type: ignore[union-attr]
    assert len(value) == 5
    for n in range(1, 5):
        assert all(item is value[n - 1] for item in value[n])


def test_a_collection_with_a_tag_of_its_own_is_read_as_yaml_reads_it() -> None:
    """`!!set` is a set and `!!omap` a list of pairs, as yaml.safe_load reads them (were: a dict, dicts)."""
    text = (
        "policies:\n  p:\n"
        "    fallback: {strategy: default_value, default_value: !!set {a, b}}\n"
        "    chaos: {outcome_rate: 1, outcome: !!omap [x: 1, y: 2]}\n"
    )
    policy = loads(text)["p"]
    assert policy.fallback_config.default_value == {"a", "b"}  # type: ignore[union-attr]
    assert policy.chaos.outcome == [("x", 1), ("y", 2)]  # type: ignore[union-attr]


_FALLBACK = "policies:\n  p:\n    fallback:\n      strategy: default_value\n      default_value: {}\n"


@pytest.mark.parametrize(
    "word", ["no", "No", "NO", "n", "N", "off", "Off", "yes", "YES", "y", "on", "On", "ON"]
)
def test_yaml_1_1_booleans_are_strings(word: str) -> None:
    """Only true and false are booleans, as in YAML 1.2 (were: yes, on, y True; no, off, n False)."""
    text = (
        _FALLBACK.format(word) + f"  {word}:\n    circuit_breaker: {{}}\n    circuit_breaker_name: {word}\n"
    )
    policies = loads(text)
    assert policies["p"].fallback_config.default_value == word  # type: ignore[union-attr]
    assert policies[word] == ResilienceConfig(
        name=word, circuit_breaker=CircuitBreakerConfig(), circuit_breaker_name=word
    )
    budgets = loads(f"retry_budgets:\n  {word}: {{}}\npolicies:\n  q:\n    retry: {{budget: {word}}}\n")
    assert list(budgets.retry_budgets) == [word]


@pytest.mark.parametrize(
    ("written", "flag"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False), ("FALSE", False)],
)
def test_yaml_1_2_booleans_load(written: str, flag: bool) -> None:
    """The six spellings of YAML 1.2's core schema are booleans."""
    policy = loads(f"policies:\n  p:\n    spans: {written}\n    chaos: {{enabled: {written}}}\n")["p"]
    assert (policy.spans, policy.chaos.enabled) == (flag, flag)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("010", 10),  # YAML 1.1: octal 8
        ("-010", -10),
        ("+12", 12),
        ("0o10", 8),  # YAML 1.1: a string
        ("0x1F", 31),
        ("1e-3", 0.001),  # YAML 1.1: a string
        ("1E3", 1000.0),
        (".5", 0.5),
        ("1.", 1.0),
        ("-.inf", float("-inf")),
        ("1:30", "1:30"),  # YAML 1.1: 90
        ("1:30.5", "1:30.5"),  # YAML 1.1: 90.5
        ("0b101", "0b101"),  # YAML 1.1: 5
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("1_0.5", "1_0.5"),  # YAML 1.1: 10.5
        ("2024-01-01", "2024-01-01"),  # YAML 1.1: a date
        ("=", "="),  # YAML 1.1: a "value" tag no safe constructor reads (was: an error)
        ("~", None),
        ("Null", None),
    ],
)
def test_yaml_scalars_are_typed_by_the_yaml_1_2_core_schema(written: str, value: object) -> None:
    """Numbers as YAML 1.2 writes them; what YAML 1.1 alone reads as a number or a date is a string."""
    loaded = loads(_FALLBACK.format(written))["p"].fallback_config.default_value  # type: ignore[union-attr]
    assert (type(loaded), loaded) == (type(value), value)


def test_yaml_nan_is_a_float() -> None:
    """`.nan` (and `.NaN`, `.NAN`) is the float NaN, as in both YAML versions."""
    for written in (".nan", ".NaN", ".NAN"):
        loaded = loads(_FALLBACK.format(written))["p"].fallback_config.default_value  # type: ignore[union-attr]
        assert isinstance(loaded, float)
        assert math.isnan(loaded)


def test_a_duration_of_yaml_1_1_numbers_is_not_read_silently() -> None:
    """`timeout: 1:30` was 90 seconds and `timeout: 010` 8: now an error naming the field, and 10."""
    with pytest.raises(ConfigError, match=r"^line 3: policies\.p\.timeout must be a duration.*got '1:30'"):
        loads("policies:\n  p:\n    timeout: 1:30\n")
    assert loads("policies:\n  p:\n    timeout: 010\n")["p"].timeout == 10.0
    assert loads("policies:\n  p:\n    rate_limiter: {rate: 1e3}\n")["p"].rate_limiter == RateLimiterConfig(
        rate=1000.0
    )


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_file_that_declares_an_older_yaml_is_refused_not_read_otherwise(version: str) -> None:
    """A file that says `%YAML 1.1` means `yes` to be true and `010` to be 8: read as YAML 1.2, it
    would be the string 'yes' and 10 (was: loaded so, silently). It is refused, saying why."""
    text = (
        f"# resilience settings\n%YAML {version}\n---\npolicies:\n  p:\n"
        "    fallback: {strategy: default_value, default_value: yes}\n"
        "    circuit_breaker: {failure_threshold: 010}\n"
    )
    with pytest.raises(ConfigError) as caught:
        loads(text, source="resilience.yaml")
    assert str(caught.value) == (
        f"resilience.yaml:2: declares YAML {version} (%YAML {version}), whose booleans and numbers are not "
        "YAML 1.2's, which the file is read as: remove the directive, or write %YAML 1.2"
    )


def test_a_file_that_declares_yaml_1_2_loads() -> None:
    """`%YAML 1.2` (the version the file is read as) changes nothing."""
    policies = loads("%YAML 1.2\n---\npolicies:\n  p: {circuit_breaker: {failure_threshold: 010}}\n")
    assert policies["p"].circuit_breaker.failure_threshold == 10  # type: ignore[union-attr]


def test_the_loader_leaves_yaml_safe_load_as_it_is() -> None:
    """The loader's YAML 1.2 rules are its own class's: yaml.safe_load still reads YAML 1.1 after a load."""
    code = (
        "import yaml\n"
        "before = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}\n"
        "constructors = dict(yaml.SafeLoader.yaml_constructors)\n"
        "from otel_resilience.config import loads\n"
        "assert loads('policies:\\n  on: {spans: false}\\n')['on'].spans is False\n"
        "assert {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()} == before\n"
        "assert yaml.SafeLoader.yaml_constructors == constructors\n"
        "print(yaml.safe_load('a: no\\nb: 1:30\\nc: 010\\non: 1'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "{'a': False, 'b': 90, 'c': 8, True: 1}"


def test_toml_values_are_read_as_toml_writes_them() -> None:
    """TOML has its own types: a key `on`, strings 'no' and '1:30', true and false."""
    text = (
        "[policies.on]\nspans = false\n"
        "[policies.p.fallback]\nstrategy = 'default_value'\ndefault_value = 'no'\n"
        "[policies.p.chaos]\nenabled = true\noutcome = '1:30'\n"
    )
    policies = loads(text, "toml")
    assert policies["on"] == ResilienceConfig(name="on", spans=False)
    assert policies["p"].fallback_config.default_value == "no"  # type: ignore[union-attr]
    assert (policies["p"].chaos.enabled, policies["p"].chaos.outcome) == (True, "1:30")  # type: ignore[union-attr]


@pytest.mark.parametrize("file_format", ["toml", "yaml"])
def test_an_integer_setting_written_as_a_float_without_fraction_is_that_int(file_format: str) -> None:
    """``max_attempts = 3.0`` (a TOML or YAML float) is 3, as JSON Schema counts it; ``3.5`` is refused."""
    sep = " =" if file_format == "toml" else ":"
    head = "[policies.p.retry]\n" if file_format == "toml" else "policies:\n  p:\n    retry:\n      "
    policy = loads(f"{head}max_attempts{sep} 3.0\n", file_format)["p"]  # type: ignore[arg-type]
    assert policy == ResilienceConfig(name="p", retry_policy=RetryPolicy(max_attempts=3))
    assert type(policy.retry_policy.max_attempts) is int  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"max_attempts must be an int, got 3\.5 \(float\)"):
        loads(f"{head}max_attempts{sep} 3.5\n", file_format)  # type: ignore[arg-type]


def test_a_device_is_refused_before_it_is_read_by_every_reader() -> None:
    """load, from_env and watch refuse a path that is no regular file before opening it (was: a
    device read as an empty file; a named pipe nobody writes to, a read that never ends)."""
    device = "/dev/null"
    with pytest.raises(OSError) as caught:
        load(device, format="yaml")
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        errno.EINVAL,
        "is a character device, not a regular file",
        device,
    )
    assert cannot_read(device, caught.value) == (
        "cannot read '/dev/null': is a character device, not a regular file"
    )
    with pytest.raises(ConfigError, match="names a file that cannot be read: is a character device"):
        from_env({"OTEL_RESILIENCE_CONFIG": device})
    with pytest.raises(OSError, match="is a character device, not a regular file"):
        ResilienceManager(clock=FakeClock()).watch(device, format="yaml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_file_replaced_by_a_named_pipe_after_the_first_look_is_refused_by_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load(): a regular file when its format is told, a named pipe nobody writes to when it is
    read (moved over it in between) is refused by the read as the first look refuses one, at once
    (was: the read waited on the pipe for good)."""
    path = tmp_path / "policies.yaml"
    path.write_text("policies:\n  p: {timeout: 1s}\n")

    def look_then_swap(source: str, given: Literal["yaml", "toml"] | None = None) -> str:
        found = formats.file_format(source, given)
        path.unlink()
        os.mkfifo(path)
        return found

    monkeypatch.setattr(loader, "file_format", look_then_swap)
    with pytest.raises(OSError) as caught:
        load(path)
    assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
        errno.EINVAL,
        "is a named pipe (FIFO), not a regular file",
        str(path),
    )


def test_the_read_of_a_config_file_refuses_what_it_opened_unless_a_regular_file(tmp_path: Path) -> None:
    """``read_file``, the one read of every reader: a regular file's bytes as they are; a directory,
    a device and (POSIX) a named pipe nobody writes to refused with the first look's errors, at once."""
    regular = tmp_path / "policies.yaml"
    regular.write_bytes(b"policies: {}\r\n\xef")
    assert read_file(str(regular)) == b"policies: {}\r\n\xef"
    with pytest.raises(IsADirectoryError, match="is a directory: name a file"):
        read_file(str(tmp_path))
    refused = [("/dev/null", "is a character device, not a regular file")]
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.yaml")
        refused.append((str(tmp_path / "pipe.yaml"), "is a named pipe (FIFO), not a regular file"))
    for source, reason in refused:
        with pytest.raises(OSError) as caught:
            read_file(source)
        assert (caught.value.errno, caught.value.strerror, caught.value.filename) == (
            errno.EINVAL,
            reason,
            source,
        )
    with pytest.raises(FileNotFoundError):
        read_file(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("name", ["policies", "policies.yaml"])
@pytest.mark.parametrize("given", [None, "yaml"])
def test_a_directory_is_refused_as_a_directory_whatever_its_suffix_or_format(
    tmp_path: Path, name: str, given: Literal["yaml"] | None
) -> None:
    """load(DIR) says it is a directory (was: "has no known suffix: pass format=", then with
    format= an IsADirectoryError): one error, an OSError as for any file that cannot be read."""
    directory = tmp_path / name
    directory.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        load(directory, format=given)
    assert (caught.value.strerror, caught.value.filename) == ("is a directory: name a file", str(directory))
    with pytest.raises(ConfigError) as named:
        from_env({"OTEL_RESILIENCE_CONFIG": str(directory)})
    assert str(named.value) == (
        f"OTEL_RESILIENCE_CONFIG={str(directory)!r} names a file that cannot be read: is a directory: name a file"
    )
    with pytest.raises(IsADirectoryError, match="is a directory: name a file"):
        ResilienceManager(clock=FakeClock()).watch(directory, format=given)
