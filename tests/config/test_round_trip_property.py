"""Configuration files round trip: a config built in Python, written as a file, loads back equal.

Random valid configs are built with the config classes' own constructors (every section, every
field a file may write), then written from the keys the README documents: as JSON (a YAML 1.2
document), as block YAML and as TOML. Each loads back to an equal config, field by field and type
by type (durations, rates, exception classes by dotted name, enums by value). The account of
``otel-resilience check`` says each value is shown "in a form a file may write that reads back
the same": each policy's line, turned back into file keys, loads to the same config too.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from http.client import HTTPException
from json import JSONDecodeError
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otel_resilience import (
    BulkheadConfig,
    ChaosConfig,
    CircuitBreakerConfig,
    CountWindow,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    Jitter,
    RateLimiterConfig,
    ResilienceConfig,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeWindow,
)
from otel_resilience.config import loads
from otel_resilience.config.fields import POLICY, RETRY_BUDGET, Field, Section
from otel_resilience.config.loader import ConfigFile
from otel_resilience.config.report import MAX_SHOWN, summary
from otel_resilience.config.values import exception_name
from otel_resilience.engine.validation import Derived
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError
from otel_resilience.patterns.hedging.config import MODES
from otel_resilience.patterns.rate_limiter.config import ALGORITHMS

_ERRORS: Final = (
    ConnectionError, TimeoutError, OSError, KeyError, ValueError, OperationTimeoutError, ExecutionRejectedError,
    HTTPException, JSONDecodeError,
)  # fmt: skip
"""Built-ins, and classes a file names by their dotted path (one whose module is not where it is imported from)."""
_DURATIONS: Final = st.one_of(
    st.sampled_from([0.25, 1e-05, 1.0000001, 2.0, 120.0, 5400.0, 0.001, 1234567.5]),
    st.floats(1e-3, 1e5),
)
_TEXT: Final = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
"""Any text a file can hold (no half of a surrogate pair), control and format characters included."""
_VALUES: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
"""What a fallback's default_value or a chaos outcome may be in a file (NaN aside: it equals nothing)."""
_NAMES: Final = st.one_of(
    st.sampled_from(["p", "payments", "ml.service", "on", "null", "10", "1e3", "a b", "C:\\data", "x\ty"]),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6),
)
"""Names as a file may write them: plain words, and words YAML reads as something else unquoted."""


def _exceptions(least: int) -> st.SearchStrategy[tuple[type[BaseException], ...]]:
    return st.lists(st.sampled_from(_ERRORS), min_size=least, max_size=3, unique=True).map(tuple)


def _build(draw: st.DrawFn, build: type, options: dict[str, st.SearchStrategy[Any]], **fixed: Any) -> Any:
    """``build`` called with ``fixed`` and a random subset of ``options``.

    A combination the class refuses (a rule that ties two fields) loses its last options one by one
    until the class takes it; one it never takes is skipped.
    """
    drawn = {name: draw(strategy) for name, strategy in options.items() if draw(st.booleans())}
    while True:
        try:
            return build(**fixed, **drawn)
        except (ValueError, TypeError):
            if not drawn:
                assume(False)
            drawn.popitem()


@st.composite
def _files(draw: st.DrawFn) -> ConfigFile:
    """A ConfigFile of one to two policies built by the constructors, with one shared retry budget."""
    budget = _build(
        draw,
        RetryBudget,
        {"ratio": st.floats(0, 10), "min_retries_per_second": st.floats(0, 100), "window": _DURATIONS},
    )
    windows = (
        st.none()
        | st.builds(CountWindow, size=st.integers(1, 200))
        | st.builds(TimeWindow, seconds=st.floats(1, 1e4), buckets=st.integers(1, 20))
    )
    breaker = _build(
        draw,
        CircuitBreakerConfig,
        {
            "failure_threshold": st.integers(1, 50),
            "success_threshold": st.integers(1, 5),
            "timeout": _DURATIONS,
            "half_open_max_calls": st.integers(1, 5),
            "record_exceptions": _exceptions(1),
            "ignore_exceptions": _exceptions(0),
            "sliding_window": windows,
            "failure_rate_threshold": st.floats(0.01, 1),
            "minimum_calls": st.integers(1, 10),
            "slow_call_duration": _DURATIONS,
            "slow_call_rate_threshold": st.floats(0.01, 1),
            "max_half_open_wait": _DURATIONS,
        },
    )
    retry = _build(
        draw,
        RetryPolicy,
        {
            "max_attempts": st.integers(1, 10),
            "strategy": st.sampled_from(RetryStrategy),
            "initial_delay": st.just(0.0) | _DURATIONS,
            "multiplier": st.floats(1, 10),
            "max_delay": _DURATIONS,
            "jitter": st.sampled_from(Jitter),
            "jitter_ratio": st.floats(0.01, 1),
            "attempt_timeout": _DURATIONS,
            "retry_on": _exceptions(1),
            "no_retry_on": _exceptions(0),
            "budget": st.just(budget),
        },
    )
    fallback = _build(
        draw,
        FallbackConfig,
        {"default_value": _VALUES, "handle_exceptions": _exceptions(1)},
        strategy=FallbackStrategy.DEFAULT_VALUE,
    )
    bulkhead = _build(
        draw,
        BulkheadConfig,
        {"max_concurrent": st.integers(1, 100), "max_waiting": st.integers(0, 100), "timeout": _DURATIONS},
    )
    limiter = _build(
        draw,
        RateLimiterConfig,
        {
            "burst": st.integers(1, 100),
            "algorithm": st.sampled_from(ALGORITHMS),
            "max_wait": st.just(0.0) | _DURATIONS,
            "max_waiting": st.integers(0, 10),
        },
        rate=draw(st.floats(0.01, 1e4) | st.integers(1, 6000).map(lambda n: n / 60)),
    )
    hedging = _build(
        draw,
        HedgingConfig,
        {
            "delay": _DURATIONS,
            "max_attempts": st.integers(1, 10),
            "mode": st.sampled_from(MODES),
            "hedge_on": _exceptions(0),
            "budget": st.just(budget),
        },
    )
    chaos = _build(
        draw,
        ChaosConfig,
        {
            "fault_rate": st.floats(0, 1),
            "fault": st.sampled_from(_ERRORS),
            "latency_rate": st.floats(0, 1),
            "latency": st.just(0.0) | _DURATIONS,
            "outcome_rate": st.floats(0, 1),
            "outcome": _VALUES,
            "enabled": st.booleans(),
            "seed": st.integers(0, 2**64),
        },
    )
    patterns = {
        "circuit_breaker": breaker,
        "retry_policy": retry,
        "fallback_config": fallback,
        "bulkhead_config": bulkhead,
        "rate_limiter": limiter,
        "hedging": hedging,
        "chaos": chaos,
    }
    policies = {}
    for name in draw(st.lists(_NAMES, min_size=1, max_size=2, unique=True)):
        kept = {key: value for key, value in patterns.items() if draw(st.booleans())}
        policies[name] = _build(
            draw,
            ResilienceConfig,
            {
                "timeout": _DURATIONS,
                "enable_recovery": st.booleans(),
                "max_attempts_total": st.integers(1, 20),
                "circuit_breaker_name": _NAMES,
                "bulkhead_name": _NAMES,
                "spans": st.booleans(),
                "record_duration": st.booleans(),
            },
            name=name,
            **kept,
        )
    return ConfigFile(policies, {"shared": budget}, source=None, format="yaml")


# Writing a config as a file, from the table of keys (fields.py) and the README's forms of values.


def _plain(value: float) -> str:
    """A float as a plain decimal (a duration or a rate string has no exponent)."""
    text = format(Decimal(repr(value)), "f")
    return text.removesuffix(".0") if "." in text else text


def _file_value(field: Field, value: Any, written: dict[int, str], units: bool) -> Any:  # noqa: PLR0911 - one return per kind
    """What a file writes for ``value`` at ``field`` (``units``: durations and rates as strings)."""
    if field.kind == "section" and field.section is not None:
        return _section_data(field.section, value, written, units)
    if field.kind == "window":
        variant = next(v for v in field.variants if type(value) is v.build)
        return {"kind": variant.tag, **_section_data(variant, value, written, units)}
    if field.kind == "budget":
        return written[id(value)]
    if field.kind == "duration":
        return f"{_plain(value)}s" if units else value
    if field.kind == "rate":
        return f"{_plain(value)}/s" if units else value
    if field.kind == "exceptions":
        names = [exception_name(item) for item in value]
        return names[0] if units and len(names) == 1 else names
    if field.kind == "exception":
        return exception_name(value)
    if field.kind == "choice":
        return getattr(value, "value", value)
    return value


def _section_data(section: Section, value: Any, written: dict[int, str], units: bool) -> dict[str, Any]:
    """Every field of ``value`` that is set, by its alias where it has one (``retry``) when ``units``."""
    data = {}
    for field in section.fields:
        item = getattr(value, field.name)
        if item is not None and not (units and isinstance(item, Derived)):  # derived: written or left out
            key = field.keys[-1] if units else field.name
            data[key] = _file_value(field, item, written, units)
    return data


def _document(config: ConfigFile, units: bool) -> dict[str, Any]:
    written = {id(budget): name for name, budget in config.retry_budgets.items()}
    return {
        "version": 1,
        "retry_budgets": {
            name: _section_data(RETRY_BUDGET, budget, written, units)
            for name, budget in config.retry_budgets.items()
        },
        "policies": {name: _section_data(POLICY, policy, written, units) for name, policy in config.items()},
    }


def _yaml(value: Any, indent: str = "") -> str:
    """Block YAML: mappings indented, keys and scalars as JSON writes them (YAML 1.2 reads JSON)."""
    if not (isinstance(value, dict) and value):
        return " " + json.dumps(value) + "\n"
    return "\n" + "".join(
        f"{indent}{json.dumps(key)}:{_yaml(item, indent + '  ')}" for key, item in value.items()
    )


class _NoToml(Exception):
    """A value TOML cannot write (a null, an int past 64 bits)."""


def _toml_value(value: Any) -> str:
    if value is None or (isinstance(value, int) and not -(2**63) <= value < 2**63):
        raise _NoToml
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_value, value)) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml_string(text: str) -> str:
    escaped = "".join(
        f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return f'"{escaped}"'


def _toml(document: dict[str, Any]) -> str:
    lines = ["version = 1"]
    for top in ("retry_budgets", "policies"):
        for name, written in document[top].items():
            lines.append(f"[{top}.{_toml_string(name)}]")
            lines += [f"{_toml_string(key)} = {_toml_value(value)}" for key, value in written.items()]
    return "\n".join(lines) + "\n"


def _same(loaded: ConfigFile, config: ConfigFile) -> None:
    assert list(loaded) == list(config)
    for name, policy in config.items():
        assert loaded[name] == policy, name
        assert _type_differences(_types(loaded[name]), _types(policy)) == [], name
    assert loaded.retry_budgets["shared"] is config.retry_budgets["shared"]


def _type_differences(got: Any, expected: Any, where: str = "") -> list[str]:
    """The places where two results of :func:`_types` differ, with the types found and expected."""
    if isinstance(got, tuple) and isinstance(expected, tuple) and got[0] is expected[0]:
        if isinstance(got[1], dict) and isinstance(expected[1], dict):
            return [
                d for k in expected[1] for d in _type_differences(got[1][k], expected[1][k], f"{where}.{k}")
            ]
        if isinstance(got[1], list) and isinstance(expected[1], list) and len(got[1]) == len(expected[1]):
            return [
                d
                for i, (g, e) in enumerate(zip(got[1], expected[1], strict=True))
                for d in _type_differences(g, e, f"{where}[{i}]")
            ]
    return [] if got == expected else [f"{where}: {got} (expected {expected})"]


def _types(value: Any) -> Any:
    """The type of every value a config holds, nested: a float read back as an int is not the same."""
    if isinstance(value, (list, tuple)):
        return (type(value), [_types(item) for item in value])
    if isinstance(value, dict):
        return (dict, [_types(item) for pair in value.items() for item in pair])
    if isinstance(
        value, Derived
    ):  # a default derived from the other fields: shown and read as its plain type
        return type(value).plain
    fields = getattr(value, "__dataclass_fields__", None)
    if fields is not None and not isinstance(value, RetryBudget):
        return (type(value), {name: _types(getattr(value, name)) for name in fields})
    return type(value)


_EXAMPLES: Final = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@_EXAMPLES
@given(_files())
def test_a_config_written_as_a_file_loads_back_equal(config: ConfigFile) -> None:
    """JSON (numbers and names), block YAML and TOML (durations and rates with units, aliases, one
    class as a name alone): each loads back to equal configs of the same types, the budget kept."""
    numbers, units = _document(config, units=False), _document(config, units=True)
    _same(loads(json.dumps(numbers), previous=config), config)
    _same(loads(_yaml(units).lstrip("\n"), previous=config), config)
    try:
        toml = _toml(units)
    except _NoToml:
        return
    _same(loads(toml, "toml", previous=config), config)


# Reading the account of `check` back.


def _split(text: str) -> list[str]:
    """``text`` cut at each space outside brackets and double quotes (the account's settings)."""
    parts, depth, quoted, escaped, start = [], 0, False, False, 0
    for index, char in enumerate(text):
        if quoted:
            escaped, quoted = (not escaped and char == "\\"), quoted and (escaped or char != '"')
        elif char == '"':
            quoted = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == " " and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    return [*parts, text[start:]]


_QUOTED: Final = re.compile(r'"(?:[^"\\]|\\.)*"')
"""A name the account quotes, as YAML's double-quoted strings escape it."""
_SECTION: Final = re.compile(r"(?P<key>\w+)\((?P<inner>.*)\)\Z", re.DOTALL)
_WINDOW: Final = re.compile(r"(?P<key>\w+)=(?P<tag>\w+)\((?P<inner>.*)\)\Z", re.DOTALL)


def _account_yaml(settings: str, indent: str) -> str:
    """The settings of an account's line as block YAML, each value as the account shows it."""
    lines = []
    for part in _split(settings) if settings else []:
        section, window = _SECTION.match(part), _WINDOW.match(part)
        if section is not None:
            inner = _account_yaml(section["inner"], indent + "  ")
            lines.append(f"{indent}{section['key']}:" + (f"\n{inner}" if inner else " {}\n"))
        elif window is not None and window["tag"] in ("count", "time"):
            inner = _account_yaml(window["inner"], indent + "  ")
            lines.append(f"{indent}{window['key']}:\n{indent}  kind: {window['tag']}\n{inner}")
        else:
            key, _, value = part.partition("=")
            lines.append(f"{indent}{key}: {value}\n")
    return "".join(lines)


def _from_account(account: str) -> str:
    """The file an account describes: each budget and policy line back into keys."""
    budgets, policies = [], []
    for line in account.splitlines()[1:]:
        budget = line.startswith("  retry budget ")
        rest = line.removeprefix("  retry budget " if budget else "  ")
        quoted = _QUOTED.match(rest)
        if quoted is not None:
            name, settings = quoted[0], rest[quoted.end() + 2 :]
        else:
            name, _, settings = rest.partition(": ")
        settings = "" if settings in ("defaults", "no pattern") else settings
        block = _account_yaml(settings, "    ")
        (budgets if budget else policies).append(f"  {name}:" + (f"\n{block}" if block else " {}\n"))
    return "retry_budgets:\n" + "".join(budgets) + "policies:\n" + "".join(policies)


@_EXAMPLES
@given(_files())
def test_the_account_of_check_read_back_as_a_file_loads_the_same_config(config: ConfigFile) -> None:
    """Each value of the account is in a form a file may write that reads back the same (README,
    Tools): the account's lines, turned back into file keys, load to equal configs."""
    loaded = loads(json.dumps(_document(config, units=False)), previous=config)
    account = summary(loaded)
    _same(loads(_from_account(account), previous=loaded), config)


_FORTY: Final = ", ".join(map(str, range(40)))
"""A list longer than the 32 items a repr of an error message shows."""


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("retry: {no_retry_on: []}", "retry_policy(no_retry_on=[])"),
        (
            "retry: {retry_on: [ConnectionError, KeyError]}",
            "retry_policy(retry_on=[ConnectionError, KeyError])",
        ),
        ("fallback: {strategy: default_value, default_value: 2.0}", "default_value=2.0)"),
        ("fallback: {strategy: default_value, default_value: 'C:\\data'}", 'default_value="C:\\\\data")'),
        ("fallback: {strategy: default_value, default_value: [null, .nan, .inf]}", "[null, .nan, .inf])"),
        ('fallback: {strategy: default_value, default_value: "a\\tb"}', 'default_value="a\\tb")'),
        (
            f"fallback: {{strategy: default_value, default_value: [{_FORTY}]}}",
            f"default_value=[{_FORTY}])",
        ),
        ("circuit_breaker: {}\n    circuit_breaker_name: 'null'", 'circuit_breaker_name="null"'),
    ],
)
def test_the_account_shows_each_value_as_a_file_writes_it(written: str, shown: str) -> None:
    """Minimal cases of the property above (was: ``no_retry_on=`` empty, which reads back as null;
    ``retry_on=ConnectionError|KeyError``, a name no file may write; ``default_value=2``, an int;
    ``'C:\\\\data'`` with two backslashes, ``[None, nan, inf]`` three strings, ``'a\\tb'`` a backslash
    and a t, a list of 40 cut at 32 with ``...``; ``'null'`` bare, which reads back as no name)."""
    config = loads(f"policies:\n  p:\n    {written}\n")
    line = summary(config).splitlines()[1]
    assert shown in line
    reread = loads(_from_account(summary(config)))
    expected = config["p"]
    if "nan" in written:  # NaN equals nothing: compare its text
        assert repr(reread["p"]) == repr(expected)
    else:
        assert reread["p"] == expected
        assert _types(reread["p"]) == _types(expected)


def test_a_budget_or_policy_name_yaml_reads_otherwise_is_quoted_in_the_account() -> None:
    """A name that YAML reads as a null, a bool or a number when unquoted, or that holds a space, is
    shown quoted (was: ``budget=null``, which reads back as no budget; ``10: no pattern``, a number)."""
    text = "retry_budgets: {'null': {}, 'a b': {}}\npolicies: {'10': {retry: {budget: 'null'}}, ok: {}}\n"
    config = loads(text)
    assert summary(config).splitlines()[1:] == [
        '  retry budget "null": defaults',
        '  retry budget "a b": defaults',
        '  "10": retry_policy(budget="null")',
        "  ok: no pattern",
    ]
    reread = loads(_from_account(summary(config)), previous=config)
    assert dict(reread) == dict(config)


def test_a_value_too_long_to_show_is_cut() -> None:
    """A value past MAX_SHOWN characters is cut with ``...``: one made of shared YAML aliases (4 ** 12
    items here, read once each) would otherwise take exponential time and room to show."""
    levels = ["&l0 [x, x, x, x]"] + [
        f"&l{n} [*l{n - 1}, *l{n - 1}, *l{n - 1}, *l{n - 1}]" for n in range(1, 13)
    ]
    config = loads(
        "policies:\n  p:\n    fallback:\n      strategy: default_value\n"
        f"      default_value: [{', '.join(levels)}]\n"
    )
    line = summary(config).splitlines()[1]
    assert line.endswith("...)")
    assert len(line) < 2 * MAX_SHOWN
