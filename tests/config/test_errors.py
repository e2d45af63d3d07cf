"""Every error of a configuration file names the file, the line (when the format has one) and the path."""

from __future__ import annotations

import gc
import re
from collections.abc import Callable

import pytest

from otel_resilience.config import ConfigError, ConfigFile, loads

POLICY = "policies:\n  p:\n"

# (YAML text, the whole message of the ConfigError) - the source is "f.yaml".
YAML_ERRORS = [
    # A config class's own rule, at the path and line of the value.
    (
        "policies:\n  payments:\n    circuit_breaker:\n      failure_threshold: 0\n",
        "f.yaml:4: policies.payments.circuit_breaker.failure_threshold must be >= 1, got 0",
    ),
    (
        POLICY + "    circuit_breaker: {failure_threshold: '5'}\n",
        "f.yaml:3: policies.p.circuit_breaker.failure_threshold must be an int, got '5' (str)",
    ),
    (
        POLICY + "    retry:\n      initial_delay: 2s\n      max_delay: 1s\n",
        "f.yaml:5: policies.p.retry.max_delay must be >= initial_delay (2 s), got 1.0",
    ),
    (
        POLICY + "    timeout: 1s\n    retry_policy:\n      attempt_timeout: 2s\n",
        (
            "f.yaml:5: policies.p.retry_policy.attempt_timeout must be < policies.p.timeout (1 s), "
            "the total deadline, got 2.0"
        ),
    ),
    (
        POLICY + "    retry:\n      attempt_timeout: 2s\n    timeout: 1s\n",
        "f.yaml:4: policies.p.retry.attempt_timeout must be < policies.p.timeout (1 s), the total deadline, got 2.0",
    ),
    (
        POLICY
        + "    circuit_breaker:\n      sliding_window: {kind: count, size: 5}\n      minimum_calls: 6\n",
        "f.yaml:5: policies.p.circuit_breaker.minimum_calls must be <= sliding_window.size (5), got 6",
    ),
    (  # a retried type the default no_retry_on excludes would never be retried: the default's path
        POLICY + "    retry:\n      retry_on: [otel_resilience.CircuitOpenError]\n",
        (
            "f.yaml:3: policies.p.retry.no_retry_on must be disjoint from retry_on (it excludes the retried "
            "[otel_resilience.errors.CircuitOpenError]), "
            "got [otel_resilience.errors.ExecutionRejectedError]"
        ),
    ),
    (  # classes named as the file names them, several in brackets (was: their reprs, in a tuple)
        POLICY + "    circuit_breaker:\n      record_exceptions: [ValueError, KeyError]\n"
        "      ignore_exceptions: [KeyError, ValueError]\n",
        (
            "f.yaml:5: policies.p.circuit_breaker.ignore_exceptions must be disjoint from record_exceptions "
            "(it ignores the recorded [ValueError, KeyError]), got [KeyError, ValueError]"
        ),
    ),
    (  # a rate setting without a window would be ignored: refused at its own line
        POLICY + "    circuit_breaker:\n      failure_threshold: 3\n      failure_rate_threshold: 0.2\n",
        "f.yaml:5: policies.p.circuit_breaker.failure_rate_threshold must be left out unless sliding_window is set, got 0.2",
    ),
    (
        POLICY + "    circuit_breaker: {minimum_calls: 20}\n",
        "f.yaml:3: policies.p.circuit_breaker.minimum_calls must be left out unless sliding_window is set, got 20",
    ),
    (
        POLICY + "    circuit_breaker:\n      sliding_window: null\n      slow_call_rate_threshold: 0.8\n",
        "f.yaml:5: policies.p.circuit_breaker.slow_call_rate_threshold must be left out unless slow_call_duration is set, got 0.8",
    ),
    (
        POLICY + "    circuit_breaker:\n      sliding_window: {kind: time, buckets: 0}\n",
        "f.yaml:4: policies.p.circuit_breaker.sliding_window.buckets must be >= 1, got 0",
    ),
    (  # a cap in total with nothing that takes a further attempt would be ignored: refused at its line,
        # naming the file's keys (was: retry_policy, the keyword, where a file writes retry)
        POLICY + "    timeout: 2s\n    max_attempts_total: 3\n",
        (
            "f.yaml:4: policies.p.max_attempts_total must be left out unless retry, hedging or "
            "enable_recovery is set (nothing else makes a further call to cap), got 3"
        ),
    ),
    (  # a queue timeout without a queue would be ignored: refused
        POLICY + "    bulkhead_config: {max_concurrent: 2, max_waiting: 0, timeout: 1h}\n",
        (
            "f.yaml:3: policies.p.bulkhead_config.timeout must be 60.0 (its default) unless max_waiting > 0 "
            "(no call waits without a queue), got 3600.0"
        ),
    ),
    (  # a growth factor the schedule never reads would be ignored: refused at its own line
        POLICY + "    retry:\n      strategy: fixed\n      multiplier: 3\n",
        (
            "f.yaml:5: policies.p.retry.multiplier must be 2.0 (its default) unless strategy is exponential "
            "and jitter is not decorrelated (only it grows by a multiplier), got 3.0"
        ),
    ),
    (
        POLICY + "    retry:\n      jitter: full\n      jitter_ratio: 0.5\n",
        (
            "f.yaml:5: policies.p.retry.jitter_ratio must be 0.25 (its default) unless jitter is proportional "
            "and strategy is not random (no other spread reads it), got 0.5"
        ),
    ),
    (  # a waiting limit without a wait would be ignored: refused at its own line
        POLICY + "    rate_limiter:\n      rate: 1\n      max_waiting: 5\n",
        (
            "f.yaml:5: policies.p.rate_limiter.max_waiting must be 100 (its default) unless max_wait > 0 "
            "(no caller waits without it), got 5"
        ),
    ),
    (POLICY + "    timeout: -1\n", "f.yaml:3: policies.p.timeout must be > 0 seconds, got -1.0"),
    (POLICY + "    timeout: 0s\n", "f.yaml:3: policies.p.timeout must be > 0 seconds, got 0.0"),
    (
        POLICY + "    retry: {initial_delay: -1}\n",
        "f.yaml:3: policies.p.retry.initial_delay must be >= 0 seconds, got -1.0",
    ),
    (
        POLICY + "    retry:\n      retry_on: KeyboardInterrupt\n",
        (
            "f.yaml:4: policies.p.retry.retry_on must be Exception subclasses or a predicate (cancellation is "
            "never retried), got [KeyboardInterrupt]"
        ),
    ),
    (
        POLICY + "    chaos: {fault_rate: 0.7, fault: OSError, outcome_rate: 0.5}\n",
        (
            "f.yaml:3: policies.p.chaos.outcome_rate must be <= 1 - fault_rate (0.3): one draw decides fault or "
            "outcome, got 0.5"
        ),
    ),
    (
        "retry_budgets:\n  b:\n    ratio: -1\npolicies: {}\n",
        "f.yaml:3: retry_budgets.b.ratio must be >= 0, got -1",
    ),
    # Durations, rates, enums, exception classes, budgets and windows the reader converts.
    (
        POLICY + "    timeout: 2 minutes\n",
        (
            "f.yaml:3: policies.p.timeout must be a duration: seconds as a number, or a string such as '250ms', "
            "'2s', '2m', '1h30m', got '2 minutes'"
        ),
    ),
    (  # the field's own rule, as for -0.25 (was: "must be a duration >= 0", which 0s breaks too)
        POLICY + "    timeout: -250ms\n",
        "f.yaml:3: policies.p.timeout must be > 0 seconds, got -0.25",
    ),
    (
        POLICY + "    bulkhead: {timeout: -1m}\n",
        "f.yaml:3: policies.p.bulkhead.timeout must be > 0 seconds, got -60.0",
    ),
    (
        POLICY + "    bulkhead: {timeout: '30'}\n",
        (
            "f.yaml:3: policies.p.bulkhead.timeout must be a duration: seconds as a number, or a string such as "
            "'250ms', '2s', '2m', '1h30m', got '30' (write 30 for seconds, or add a unit: '30s')"
        ),
    ),
    (
        POLICY + "    rate_limiter: {rate: 100 per minute}\n",
        (
            "f.yaml:3: policies.p.rate_limiter.rate must be a rate: permits per second as a number, or a string "
            "such as '5/s', '100/m', '1000/h', got '100 per minute'"
        ),
    ),
    (
        POLICY + "    rate_limiter: {rate: 0}\n",
        "f.yaml:3: policies.p.rate_limiter.rate must be > 0, got 0",
    ),
    (
        POLICY + "    retry:\n      strategy: exponentially\n",
        (
            "f.yaml:4: policies.p.retry.strategy must be one of 'fixed', 'exponential', 'linear', 'random', "
            "got 'exponentially'"
        ),
    ),
    (
        POLICY + "    rate_limiter: {rate: 1, algorithm: leaky_bucket}\n",
        (
            "f.yaml:3: policies.p.rate_limiter.algorithm must be one of 'token_bucket', 'sliding_window', "
            "got 'leaky_bucket'"
        ),
    ),
    (
        POLICY + "    retry:\n      retry_on:\n        - ConnectionError\n        - nosuch_module_hf.Error\n",
        (
            "f.yaml:6: policies.p.retry.retry_on[1] must name an importable exception class, got "
            "'nosuch_module_hf.Error': ModuleNotFoundError(\"No module named 'nosuch_module_hf'\")"
        ),
    ),
    (
        POLICY + "    retry:\n      retry_on: [otel_resilience.NoSuchError]\n",
        (
            "f.yaml:4: policies.p.retry.retry_on[0] must name an importable exception class, got "
            "'otel_resilience.NoSuchError': AttributeError(\"module 'otel_resilience' has no attribute 'NoSuchError'\")"
        ),
    ),
    (
        POLICY + "    retry:\n      retry_on: len\n",
        "f.yaml:4: policies.p.retry.retry_on must name an exception class, got 'len', which is <built-in function len>",
    ),
    (
        POLICY + "    retry:\n      retry_on: Declined\n",
        (
            "f.yaml:4: policies.p.retry.retry_on must name a built-in exception or a dotted path "
            "('package.module.Declined'), got 'Declined'"
        ),
    ),
    (
        POLICY + "    circuit_breaker: {record_exceptions: 'not a name'}\n",
        (
            "f.yaml:3: policies.p.circuit_breaker.record_exceptions must be an exception class by name "
            "('ConnectionError', 'httpx.ConnectTimeout'), got 'not a name'"
        ),
    ),
    (
        POLICY + "    fallback: {strategy: default_value, handle_exceptions: 5}\n",
        "f.yaml:3: policies.p.fallback.handle_exceptions must be an exception class name or a list of them, got 5",
    ),
    (
        POLICY + "    chaos: {fault_rate: 0.5, fault: 5}\n",
        "f.yaml:3: policies.p.chaos.fault must be an exception class by name, got 5 (int)",
    ),
    (
        "retry_budgets:\n  b: {}\npolicies:\n  p:\n    retry:\n      budget: c\n",
        "f.yaml:6: policies.p.retry.budget must name a budget of retry_budgets (defined: 'b'), got 'c'",
    ),
    (
        POLICY + "    retry: {budget: c}\n",
        "f.yaml:3: policies.p.retry.budget must name a budget of retry_budgets (defined: none), got 'c'",
    ),
    (
        POLICY + "    circuit_breaker:\n      sliding_window: {size: 5}\n",
        "f.yaml:4: policies.p.circuit_breaker.sliding_window must set kind: one of 'count', 'time'",
    ),
    (  # a misspelled kind is named, with the key it is close to (was: "must set kind", the typo unnamed)
        POLICY + "    circuit_breaker:\n      sliding_window:\n        size: 5\n        knd: count\n",
        (
            "f.yaml:6: policies.p.circuit_breaker.sliding_window.knd is not a key of CountWindow or "
            "TimeWindow (policies.p.circuit_breaker.sliding_window): did you mean 'kind'?"
        ),
    ),
    (
        POLICY + "    circuit_breaker:\n      sliding_window:\n        kind: rolling\n",
        "f.yaml:5: policies.p.circuit_breaker.sliding_window.kind must be one of 'count', 'time', got 'rolling'",
    ),
    (
        POLICY + "    circuit_breaker:\n      sliding_window: {kind: count, seconds: 5}\n",
        (
            "f.yaml:4: policies.p.circuit_breaker.sliding_window.seconds is not a key of CountWindow "
            "(policies.p.circuit_breaker.sliding_window): known keys: size"
        ),
    ),
    # Unknown keys, keys that take code, repeated keys, missing and null values.
    (
        POLICY + "    timeout: 1s\n    circuit_breakr: {}\n",
        (
            "f.yaml:4: policies.p.circuit_breakr is not a key of ResilienceConfig (policies.p): "
            "did you mean 'circuit_breaker'?"
        ),
    ),
    (
        POLICY + "    circuit_breaker:\n      failure_treshold: 3\n",
        (
            "f.yaml:4: policies.p.circuit_breaker.failure_treshold is not a key of CircuitBreakerConfig "
            "(policies.p.circuit_breaker): did you mean 'failure_threshold'?"
        ),
    ),
    (
        POLICY + "    bulkhead: {size: 3}\n",
        (
            "f.yaml:3: policies.p.bulkhead.size is not a key of BulkheadConfig (policies.p.bulkhead): "
            "known keys: max_concurrent, max_waiting, timeout"
        ),
    ),
    ("polices: {}\n", "f.yaml:1: polices is not a key of the file's top level: did you mean 'policies'?"),
    (
        POLICY + "    retry:\n      retry_on_result: is_bad\n",
        (
            "f.yaml:4: policies.p.retry.retry_on_result is a predicate on the result, which a file cannot "
            "express: set it in code on the loaded config (dataclasses.replace)"
        ),
    ),
    (
        POLICY + "    circuit_breaker: {record_result: x}\n",
        (
            "f.yaml:3: policies.p.circuit_breaker.record_result is a predicate on the result, which a file "
            "cannot express: set it in code on the loaded config (dataclasses.replace)"
        ),
    ),
    (
        POLICY + "    fallback: {strategy: default_value, fallback_function: m.f}\n",
        (
            "f.yaml:3: policies.p.fallback.fallback_function is a function, which a file cannot express: set it "
            "in code on the loaded config (dataclasses.replace)"
        ),
    ),
    (
        POLICY + "    extra_strategies: []\n",
        (
            "f.yaml:3: policies.p.extra_strategies is a list of Step links, which a file cannot express: set it "
            "in code on the loaded config (dataclasses.replace)"
        ),
    ),
    (POLICY + "    name: q\n", "f.yaml:3: policies.p.name is the policy's key in the file: rename the key"),
    (
        POLICY + "    fallback:\n      strategy: cached_value\n      cache_key: last\n",
        (
            "f.yaml:4: policies.p.fallback.strategy cannot be 'cached_value' in a file: that strategy needs "
            "cache_service, an object, which takes code (set it on the loaded config with dataclasses.replace); "
            "a file may write 'default_value'"
        ),
    ),
    (
        POLICY + "    fallback: {strategy: alternative_function}\n",
        (
            "f.yaml:3: policies.p.fallback.strategy cannot be 'alternative_function' in a file: that strategy "
            "needs fallback_function, a function, which takes code (set it on the loaded config with "
            "dataclasses.replace); a file may write 'default_value'"
        ),
    ),
    (
        POLICY + "    fallback: {default_value: 1}\n",
        "f.yaml:3: policies.p.fallback must set 'strategy'",
    ),
    (
        POLICY + "    rate_limiter:\n      burst: 3\n",
        "f.yaml:3: policies.p.rate_limiter must set 'rate'",
    ),
    (
        POLICY + "    retry: {max_attempts: 2}\n    retry_policy: {max_attempts: 3}\n",
        "f.yaml:4: policies.p.retry_policy repeats 'retry': write one of ('retry_policy', 'retry')",
    ),
    (
        POLICY + "    timeout: 1s\n    timeout: 2s\n",
        "f.yaml:4: policies.p.timeout is written twice",
    ),
    (
        POLICY + "    enable_recovery: null\n",
        "f.yaml:3: policies.p.enable_recovery must not be null: leave the key out for the default",
    ),
    # A bool is true or false: YAML 1.1's yes, no, on, off are strings (the file is read as YAML 1.2).
    (
        POLICY + "    enable_recovery: 'yes'\n",
        (
            "f.yaml:3: policies.p.enable_recovery must be true or false, got the string 'yes': a file's only "
            "booleans are true and false, unquoted"
        ),
    ),
    (  # (was: True)
        POLICY + "    spans: no\n",
        (
            "f.yaml:3: policies.p.spans must be true or false, got the string 'no': a file's only booleans "
            "are true and false, unquoted"
        ),
    ),
    (  # (was: True, the chaos link switched on)
        POLICY + "    chaos: {fault_rate: 1, enabled: On}\n",
        (
            "f.yaml:3: policies.p.chaos.enabled must be true or false, got the string 'On': a file's only "
            "booleans are true and false, unquoted"
        ),
    ),
    (
        POLICY + "    record_duration: 1\n",
        "f.yaml:3: policies.p.record_duration must be true or false, got 1 (int)",
    ),
    # YAML 1.1's base-60 numbers are strings (were: 1:30 read as 90).
    (
        POLICY + "    timeout: 1:30\n",
        (
            "f.yaml:3: policies.p.timeout must be a duration: seconds as a number, or a string such as "
            "'250ms', '2s', '2m', '1h30m', got '1:30' (write it with units: '1m30s' or '1h30m')"
        ),
    ),
    (
        POLICY + "    circuit_breaker: {failure_threshold: 1:30}\n",
        "f.yaml:3: policies.p.circuit_breaker.failure_threshold must be an int, got '1:30' (str)",
    ),
    (
        POLICY + "    retry: {max_attempts: 1_000}\n",
        "f.yaml:3: policies.p.retry.max_attempts must be an int, got '1_000' (str)",
    ),
    # The file's shape.
    ("", "f.yaml: the file is empty: it must be a mapping with a 'policies' key"),
    ("- a\n- b\n", "f.yaml: the file must be a mapping with a 'policies' key, got ['a', 'b']"),
    (
        "retry_budgets: {}\n",
        "f.yaml: the file must have a 'policies' key: a mapping of policy names to their settings",
    ),
    ("version: 2\npolicies: {}\n", "f.yaml:1: version must be 1, got 2"),
    ("policies: [a]\n", "f.yaml:1: policies must be a mapping of names to settings, got ['a']"),
    (
        POLICY + "    circuit_breaker: 5\n",
        "f.yaml:3: policies.p.circuit_breaker must be a mapping of settings, got 5",
    ),
    ("policies:\n  p: 5\n", "f.yaml:2: policies.p must be a mapping of settings, got 5"),
    (
        "policies:\n  '': {}\n",
        "f.yaml:2: policies[''] is not a name: keys of policies must be non-empty strings",
    ),
    (
        "policies:\n  1: {}\n",
        "f.yaml:2: policies[1] is not a name: keys of policies must be non-empty strings",
    ),
    ("policies:\n  ? [a, b]\n  : {}\n", "f.yaml:2: policies has a key that is not a string"),
    # YAML syntax.
    (
        "policies:\n  p:\n    timeout: [1\n",
        "f.yaml:4: is not valid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    ("policies: {}\n---\npolicies: {}\n", "f.yaml:2: is not valid YAML: but found another document"),
    (  # a tag that names code: refused, as yaml.safe_load refuses it (was: read as a plain mapping)
        "policies: !!python/object:os.system {}\n",
        (
            "f.yaml:1: is not valid YAML: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system'"
        ),
    ),
    (  # a standard tag on a value it cannot read (was: a bare ValueError, without file or line)
        POLICY + "    timeout: !!int 2s\n",
        "f.yaml:3: policies.p.timeout is not valid YAML: '2s' is not a !!int",
    ),
    (  # (was: an AttributeError)
        POLICY + "    chaos: {outcome_rate: 1, outcome: !!timestamp soon}\n",
        "f.yaml:3: policies.p.chaos.outcome is not valid YAML: 'soon' is not a !!timestamp",
    ),
    (  # (was: a KeyError)
        POLICY + "    spans: !!bool maybe\n",
        "f.yaml:3: policies.p.spans is not valid YAML: 'maybe' is not a !!bool",
    ),
    (  # an explicit tag is read by YAML 1.2's rules too (was: True, and 90)
        POLICY + "    spans: !!bool yes\n",
        "f.yaml:3: policies.p.spans is not valid YAML: 'yes' is not a !!bool",
    ),
    (  # a merged mapping of a tag of its own, keyed by a list (was: a bare TypeError)
        POLICY + "    <<: !!set {? [a]}\n",
        "f.yaml:3: policies.p has a key that is not a string",
    ),
    (  # !!null too (was: None, so no timeout at all, without a word)
        POLICY + "    timeout: !!null 5s\n",
        "f.yaml:3: policies.p.timeout is not valid YAML: '5s' is not a !!null",
    ),
    (
        POLICY + "    timeout: !!int 1:30\n",
        "f.yaml:3: policies.p.timeout is not valid YAML: '1:30' is not a !!int",
    ),
    (  # a collection's tag on a scalar (was: a bare ValueError)
        "policies: !!map abc\n",
        "f.yaml:1: is not valid YAML: expected a mapping node, but found scalar",
    ),
    (  # (was: an AttributeError)
        POLICY + "    chaos: {outcome_rate: 1, outcome: !!seq abc}\n",
        "f.yaml:3: is not valid YAML: expected a sequence node, but found scalar",
    ),
    (  # a character YAML refuses anywhere (a pasted terminal colour, a NUL): refused before any node
        POLICY + "    timeout: 1s\x1b[0m\n",
        "f.yaml:3: is not valid YAML: unacceptable character #x001b: special characters are not allowed",
    ),
]


@pytest.mark.parametrize(("text", "message"), YAML_ERRORS, ids=[m.split(" ", 2)[1] for _, m in YAML_ERRORS])
def test_yaml_error_names_file_line_and_path(text: str, message: str) -> None:
    """The exact message: file, line, dotted path (keys as written), the rule and the value."""
    with pytest.raises(ConfigError) as caught:
        loads(text, source="f.yaml")
    assert str(caught.value) == message


def test_error_attributes() -> None:
    """ConfigError carries the path (dotted and as keys), the line, the source and the reason."""
    with pytest.raises(ConfigError) as caught:
        loads("policies:\n  p:\n    retry:\n      retry_on: [OSError, nope.Nope]\n", source="f.yaml")
    error = caught.value
    assert (error.path, error.keys, error.line, error.source) == (
        "policies.p.retry.retry_on[1]",
        ("policies", "p", "retry", "retry_on", 1),
        4,
        "f.yaml",
    )
    assert error.reason.startswith("must name an importable exception class, got 'nope.Nope'")


def test_an_error_from_text_has_no_source() -> None:
    """Without a source, the message starts with the line."""
    with pytest.raises(ConfigError, match=r"^line 3: policies\.p\.timeout must be > 0 seconds, got 0\.0$"):
        loads(POLICY + "    timeout: 0\n")


# TOML: the parser gives no position for a value, only for its syntax errors.
TOML_ERRORS = [
    (
        "[policies.payments.circuit_breaker]\nfailure_threshold = 0\n",
        "f.toml: policies.payments.circuit_breaker.failure_threshold must be >= 1, got 0",
    ),
    (
        "[policies.p]\nretry = { retry_on = ['OSError', 'nope.Nope'] }\n",
        (
            "f.toml: policies.p.retry.retry_on[1] must name an importable exception class, got 'nope.Nope': "
            "ModuleNotFoundError(\"No module named 'nope'\")"
        ),
    ),
    (
        "[policies.p]\ncircuit_breakr = {}\n",
        (
            "f.toml: policies.p.circuit_breakr is not a key of ResilienceConfig (policies.p): did you mean "
            "'circuit_breaker'?"
        ),
    ),
    (
        "[policies.p]\ntimeout = 1\nretry = { attempt_timeout = '2s' }\n",
        (
            "f.toml: policies.p.retry.attempt_timeout must be < policies.p.timeout (1 s), the total deadline, "
            "got 2.0"
        ),
    ),
    (
        "[policies.p]\nspans = 'yes'\n",
        (
            "f.toml: policies.p.spans must be true or false, got the string 'yes': a file's only booleans are "
            "true and false, unquoted"
        ),
    ),
    ("[policies.p]\ntimeout = \n", "f.toml:2: is not valid TOML: Invalid value (at line 2, column 11)"),
    (
        "[policies.p]\ntimeout = 1\ntimeout = 2\n",
        "f.toml:3: is not valid TOML: Cannot overwrite a value (at line 3, column 12)",
    ),
]


@pytest.mark.parametrize(("text", "message"), TOML_ERRORS)
def test_toml_error_names_the_path_and_the_line_of_syntax_errors(text: str, message: str) -> None:
    """TOML errors name the path; only syntax errors have a line (tomllib gives no other)."""
    with pytest.raises(ConfigError) as caught:
        loads(text, "toml", source="f.toml")
    assert str(caught.value) == message
    assert caught.value.line == (None if message.startswith("f.toml: ") else int(message.split(":")[1]))


def test_every_refused_key_is_reported_as_taking_code() -> None:
    """Every keyword of a config class that takes code is refused with the same advice."""
    from otel_resilience.config.fields import SECTIONS  # noqa: PLC0415

    for section in SECTIONS:
        for key, _ in section.refused:
            if key == "name":
                continue
            path = {
                "ResilienceConfig": "",
                "CircuitBreakerConfig": "circuit_breaker",
                "RetryPolicy": "retry",
                "FallbackConfig": "fallback",
                "HedgingConfig": "hedging",
                "RetryBudget": None,
                "RateLimiterConfig": "rate_limiter",
            }[section.owner]
            if path is None:
                text = f"retry_budgets:\n  b:\n    {key}: x\npolicies: {{}}\n"
            elif path:
                text = POLICY + f"    {path}:\n      {key}: x\n"
            else:
                text = POLICY + f"    {key}: x\n"
            with pytest.raises(ConfigError) as caught:
                loads(text)
            assert caught.value.keys[-1] == key
            assert re.search(r"which a file cannot express|takes code", caught.value.reason), (
                caught.value.reason
            )


DEEPER_YAML = "f.yaml: nests deeper than 64 levels (a recursive YAML alias?)"


def _nested(file_format: str, levels: int) -> str:
    """A policy whose fallback value nests lists so that the file nests ``levels`` deep."""
    inner = "[" * (levels - 4) + "1" + "]" * (levels - 4)  # policies, p, fallback: three mappings
    if file_format == "toml":
        return f'[policies.p.fallback]\nstrategy = "default_value"\ndefault_value = {inner}\n'
    return f"policies: {{p: {{fallback: {{strategy: default_value, default_value: {inner}}}}}}}\n"


def _deeper(frames: int, call: Callable[[], object]) -> object:
    return call() if frames == 0 else _deeper(frames - 1, call)


@pytest.mark.parametrize("file_format", ["yaml", "toml"])
@pytest.mark.parametrize("frames", [0, 300])
def test_the_nesting_limit_is_the_same_wherever_the_caller_stands(file_format: str, frames: int) -> None:
    """64 levels load and 65 do not, from a shallow stack or a deep one (a file some hundred levels
    deep loaded, or was refused, by how deep the caller's stack stood); 480 levels alike."""
    loaded = _deeper(frames, lambda: loads(_nested(file_format, 64), file_format))  # type: ignore[arg-type]
    assert isinstance(loaded, ConfigFile)
    for levels in (65, 480):
        with pytest.raises(ConfigError, match=r"nests deeper than 64 levels"):
            _deeper(frames, lambda n=levels: loads(_nested(file_format, n), file_format))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "file_format", "message"),
    [
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "toml", "f.toml: nests deeper than 64 levels"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "yaml", DEEPER_YAML),
        ("a: &a [*a]\npolicies: {}\n", "yaml", DEEPER_YAML),
    ],
    ids=["toml", "yaml", "yaml-recursive-alias"],
)
def test_a_file_that_nests_too_deep_is_a_config_error(text: str, file_format: str, message: str) -> None:
    """Either parser's recursion limit is a ConfigError naming the file (was, in TOML: a RecursionError).

    No cyclic collection runs during the parse: one run at the recursion limit would call the
    finalizers of whatever garbage earlier tests left (a generator's ``finally``, a ``__del__``)
    there, and their own ``RecursionError`` would be an unraisable exception of this test.
    """
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(ConfigError) as caught:
            loads(text, file_format, source=f"f.{file_format}")  # type: ignore[arg-type]
    finally:
        if enabled:
            gc.enable()
    assert str(caught.value) == message


def test_a_policy_name_the_class_refuses_is_reported_at_its_key() -> None:
    """A policy's name is its key: a name too long for telemetry is refused at that key, on its line
    (was: at `policies.<name>.name`, a key the file cannot write)."""
    name = "n" * 257
    with pytest.raises(ConfigError) as caught:
        loads(f"policies:\n  ok: {{}}\n  {name}:\n    timeout: 1s\n", source="f.yaml")
    error = caught.value
    assert error.keys == ("policies", name)
    assert error.line == 3
    assert error.reason.startswith("must be a name of at most 256 characters (a telemetry attribute), got ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # nothing written: the key a file writes (the alias), not the keyword
            POLICY + "    max_attempts_total: 3\n",
            (
                "f.yaml:3: policies.p.max_attempts_total must be left out unless retry, hedging or "
                "enable_recovery is set (nothing else makes a further call to cap), got 3"
            ),
        ),
        (  # written with the keyword: the keyword, as written
            POLICY + "    retry_policy: {attempt_timeout: 5s}\n    timeout: 1s\n",
            (
                "f.yaml:3: policies.p.retry_policy.attempt_timeout must be < policies.p.timeout (1 s), the total "
                "deadline, got 5.0"
            ),
        ),
        (
            POLICY + "    bulkhead_name: shared\n",
            "f.yaml:3: policies.p.bulkhead_name must be left out unless bulkhead is set, got 'shared'",
        ),
        (
            POLICY + "    bulkhead_config: {max_concurrent: 2}\n    circuit_breaker_name: shared\n",
            "f.yaml:4: policies.p.circuit_breaker_name must be left out unless circuit_breaker is set, got 'shared'",
        ),
        (  # the value refused is shown as written, though it reads as a keyword
            POLICY + "    bulkhead_name: retry_policy\n",
            "f.yaml:3: policies.p.bulkhead_name must be left out unless bulkhead is set, got 'retry_policy'",
        ),
        (  # an enum by the value a file writes, not by its member's name
            POLICY + "    retry: {strategy: fixed, jitter: none, multiplier: 3}\n",
            (
                "f.yaml:3: policies.p.retry.multiplier must be 2.0 (its default) unless strategy is exponential "
                "and jitter is not decorrelated (only it grows by a multiplier), got 3.0"
            ),
        ),
    ],
    ids=["unwritten-alias", "written-keyword", "bulkhead", "breaker", "value-as-given", "enum-value"],
)
def test_a_class_rule_names_the_other_settings_as_the_file_writes_them(text: str, message: str) -> None:
    """A config class's message names other fields by their keywords and enums by their members'
    names; the file's error names them by the keys and values a file writes (was: "None unless
    retry_policy, hedging ..." where the file writes retry, "unless bulkhead_config is set",
    "< ResilienceConfig.timeout", "unless strategy is EXPONENTIAL")."""
    with pytest.raises(ConfigError) as caught:
        loads(text, source="f.yaml")
    assert str(caught.value) == message


# (the policy's settings in YAML, in TOML, in JSON; the message's path and rule, after the source)
_IN_FILE_TERMS = [
    (
        "max_attempts_total: 3",
        "max_attempts_total = 3",
        '"max_attempts_total": 3',
        (
            "policies.p.max_attempts_total must be left out unless retry, hedging or enable_recovery is set "
            "(nothing else makes a further call to cap), got 3"
        ),
    ),
    (
        "bulkhead_name: shared",
        "bulkhead_name = 'shared'",
        '"bulkhead_name": "shared"',
        "policies.p.bulkhead_name must be left out unless bulkhead is set, got 'shared'",
    ),
    (
        "circuit_breaker: {minimum_calls: 3}",
        "circuit_breaker = { minimum_calls = 3 }",
        '"circuit_breaker": {"minimum_calls": 3}',
        "policies.p.circuit_breaker.minimum_calls must be left out unless sliding_window is set, got 3",
    ),
    (
        "circuit_breaker: {failure_threshold: 3, sliding_window: {kind: count, size: 5}}",
        "circuit_breaker = { failure_threshold = 3, sliding_window = { kind = 'count', size = 5 } }",
        '"circuit_breaker": {"failure_threshold": 3, "sliding_window": {"kind": "count", "size": 5}}',
        (
            "policies.p.circuit_breaker.failure_threshold must be 5 (its default) unless sliding_window is "
            "left out (the window's rates open it), got 3"
        ),
    ),
    (
        "hedging: {mode: parallel, delay: 1s}",
        "hedging = { mode = 'parallel', delay = '1s' }",
        '"hedging": {"mode": "parallel", "delay": "1s"}',
        "policies.p.hedging.delay must be left out in 'parallel' mode (only 'latency' waits), got 1.0",
    ),
]


@pytest.mark.parametrize("file_format", ["yaml", "toml", "json"])
@pytest.mark.parametrize(
    ("yaml", "toml", "json", "message"),
    _IN_FILE_TERMS,
    ids=["max-attempts-total", "bulkhead-name", "window-setting", "window-default", "hedging-delay"],
)
def test_a_class_rule_says_none_and_code_only_settings_in_the_files_terms(
    file_format: str, yaml: str, toml: str, json: str, message: str
) -> None:
    """A class's ``None`` is a setting a file leaves out (it writes no ``None``; TOML has no null),
    and a list of settings leaves out those a file cannot set: the file's error says so, whatever
    the format (was: "must be left out unless retry, hedging, enable_recovery or extra_strategies is
    set", a keyword no file can write)."""
    if file_format == "toml":
        text, parsed_as, prefix = f"[policies.p]\n{toml}\n", "toml", "f.toml: "
    elif file_format == "json":  # JSON is YAML: the YAML reader reads it, with its lines
        text, parsed_as, prefix = f'{{"policies": {{"p": {{{json}}}}}}}\n', "yaml", "f.json:1: "
    else:
        text, parsed_as, prefix = f"policies:\n  p:\n    {yaml}\n", "yaml", "f.yaml:3: "
    with pytest.raises(ConfigError) as caught:
        loads(text, parsed_as, source=f"f.{file_format}")  # type: ignore[arg-type]
    assert str(caught.value) == prefix + message
