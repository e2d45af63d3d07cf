"""The JSON Schema: shipped as generated, accepts what the loader accepts, and the table matches the classes.

`jsonschema` is not a dependency: a small validator of the keywords the schema uses checks the
sample files against it (and fails on a keyword it does not know, so the schema cannot grow past it).
"""

from __future__ import annotations

import inspect
import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from otel_resilience import CountWindow, FallbackStrategy, Jitter, RetryStrategy, TimeWindow
from otel_resilience.config import ConfigError, json_schema, loads
from otel_resilience.config.fields import SECTIONS, Field, Section
from otel_resilience.config.formats import parse
from otel_resilience.config.schema import generate, render, shipped
from otel_resilience.config.values import DURATION_PATTERN, EXCEPTION_PATTERN, RATE_PATTERN, parse_duration
from otel_resilience.engine.validation import MAX_COUNT, MAX_DURATION

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).with_name("fixtures")

_KNOWN = {
    "$schema", "$id", "$ref", "$defs", "title", "description", "default", "type", "properties",
    "additionalProperties", "required", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "pattern",
    "minLength", "maxLength", "items", "minItems", "anyOf", "oneOf", "allOf", "not", "propertyNames",
    "patternProperties",
}  # fmt: skip
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # JSON Schema's integer is a number whose fractional part is zero (3.0 is one), not a type of its own.
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())
    ),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _errors(node: dict[str, Any], value: Any, root: dict[str, Any], where: str = "") -> list[str]:
    """Every way ``value`` breaks ``node`` (a JSON Schema of the keywords in _KNOWN)."""
    unknown = set(node) - _KNOWN
    assert not unknown, f"the test validator does not know {unknown}"
    if "$ref" in node:
        return _errors(root["$defs"][node["$ref"].removeprefix("#/$defs/")], value, root, where)
    found: list[str] = []
    types = node.get("type")
    if types is not None and not any(
        _TYPES[t](value) for t in ([types] if isinstance(types, str) else types)
    ):
        return [f"{where}: not {types}"]
    if "enum" in node and value not in node["enum"]:
        found.append(f"{where}: not in {node['enum']}")
    if "const" in node and (value != node["const"] or isinstance(value, bool)):
        found.append(f"{where}: not {node['const']}")
    if _TYPES["number"](value):
        if "minimum" in node and value < node["minimum"]:
            found.append(f"{where}: < minimum")
        if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
            found.append(f"{where}: <= exclusiveMinimum")
        if "maximum" in node and value > node["maximum"]:
            found.append(f"{where}: > maximum")
    if isinstance(value, str):
        if "pattern" in node and not re.search(_as_ecmascript(node["pattern"]), value):
            found.append(f"{where}: does not match {node['pattern']}")
        if len(value) < node.get("minLength", 0):
            found.append(f"{where}: too short")
        if len(value) > node.get("maxLength", len(value)):
            found.append(f"{where}: too long")
    if isinstance(value, list) and len(value) < node.get("minItems", 0):
        found.append(f"{where}: too few items")
    if isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            found += _errors(node["items"], item, root, f"{where}[{index}]")
    if isinstance(value, dict):
        found += _object_errors(node, value, root, where)
    for key, test in (("anyOf", lambda n: n >= 1), ("oneOf", lambda n: n == 1)):
        if key in node and not test(sum(not _errors(s, value, root, where) for s in node[key])):
            found.append(f"{where}: fails {key}")
    for sub in node.get("allOf", []):
        found += _errors(sub, value, root, where)
    if "not" in node and not _errors(node["not"], value, root, where):
        found.append(f"{where}: matches not")
    return found


def _object_errors(
    node: dict[str, Any], value: dict[str, Any], root: dict[str, Any], where: str
) -> list[str]:
    found = [f"{where}: misses {key}" for key in node.get("required", []) if key not in value]
    properties = node.get("properties", {})
    for key, item in value.items():
        if "propertyNames" in node:
            found += _errors(node["propertyNames"], key, root, f"{where}.{key} (name)")
        patterned = [
            schema
            for pattern, schema in node.get("patternProperties", {}).items()
            if isinstance(key, str) and re.search(_as_ecmascript(pattern), key)
        ]
        for schema in patterned:
            found += _errors(schema, item, root, f"{where}.{key}")
        if key in properties:
            found += _errors(properties[key], item, root, f"{where}.{key}")
        elif patterned:
            pass  # not an additional property: a pattern matched it
        elif node.get("additionalProperties") is False:
            found.append(f"{where}.{key}: not allowed")
        elif isinstance(node.get("additionalProperties"), dict):
            found += _errors(node["additionalProperties"], item, root, f"{where}.{key}")
    return found


_ECMA_SPACES: Final = "".join(
    c
    for c in map(chr, range(0x10000))
    if c in "\t\n\v\f\r\ufeff\u2028\u2029" or unicodedata.category(c) == "Zs"
)
"""What ECMAScript's ``\\s`` matches (the regular expressions of a JSON Schema's ``pattern``, an editor's)."""


def _as_ecmascript(pattern: str) -> str:
    """``pattern`` for Python's ``re`` with ECMAScript's ``\\s`` and ``\\S``, which differ from Python's."""
    spaces = re.escape(_ECMA_SPACES)
    return re.sub(
        r"\\\\|\\s|\\S", lambda m: {"\\s": f"[{spaces}]", "\\S": f"[^{spaces}]"}.get(m[0], m[0]), pattern
    )


def _valid(value: Any) -> list[str]:
    root = generate()
    return _errors(root, value, root)


def test_the_shipped_schema_is_the_generated_one() -> None:
    """schema.json is what generate() writes (regenerate: python -m otel_resilience.config.schema)."""
    assert shipped() == render(generate())
    assert json_schema() == generate()


def test_every_reference_resolves_and_every_definition_is_used() -> None:
    """No dangling $ref, no unused $defs."""
    root = generate()
    text = render(root)
    refs = set(re.findall(r'"\$ref": "#/\$defs/(\w+)"', text))
    assert refs == set(root["$defs"])


@pytest.mark.parametrize(
    "path", [ROOT / "resilience.yaml", FIXTURES / "resilience.toml"], ids=lambda p: p.name
)
def test_the_sample_files_validate_against_the_schema(path: Path) -> None:
    """The shipped sample and its TOML twin are valid for an editor as well as for the loader."""
    text = path.read_text(encoding="utf-8")
    data = parse(text, "toml", None)[0] if path.suffix == ".toml" else yaml.safe_load(text)
    assert _valid(data) == []


GOOD = [
    "x-defaults: &d {timeout: 2s}\nx-other: [1, 2]\npolicies: {p: {<<: *d}, q: *d}\n",
    "policies: {p: null, q: {}}\n",
    "version: 1\nretry_budgets: {b: {window: 500ms}}\npolicies: {p: {retry: {budget: b, retry_on: OSError}}}\n",
    "policies: {p: {circuit_breaker: {sliding_window: {kind: count, size: 3}, minimum_calls: 2}}}\n",
    "policies: {p: {chaos: {fault_rate: 0.5, fault: otel_resilience.errors.ResilienceError, outcome: {a: 1}}}}\n",
    "policies: {p: {rate_limiter: {rate: 2.5/s, burst: null}, fallback: {strategy: default_value, default_value: 0}}}\n",
    "policies: {p: {timeout: 1h30m, max_attempts_total: 2, retry: {}, circuit_breaker: {}, circuit_breaker_name: x}}\n",
    # Padded strings: the loader reads them (a quoted or TOML string keeps its spaces), the schema must too.
    "policies: {p: {timeout: ' 2s', retry: {initial_delay: \"250ms\\t\"}, rate_limiter: {rate: '100/m '}}}\n",
]
BAD = [
    "policies: {p: {circuit_breakr: {}}}\n",
    "policies: {p: {retry: {}, retry_policy: {}}}\n",
    "policies: {p: {retry: {strategy: exponentially}}}\n",
    "policies: {p: {timeout: 2 minutes}}\n",
    "policies: {p: {timeout: -1}}\n",
    "policies: {p: {circuit_breaker: {failure_threshold: 0}}}\n",
    "policies: {p: {circuit_breaker: {sliding_window: {size: 3}}}}\n",
    "policies: {p: {circuit_breaker: {sliding_window: {kind: count, seconds: 3}}}}\n",
    "policies: {p: {fallback: {strategy: cached_value}}}\n",
    "policies: {p: {fallback: {default_value: 1}}}\n",
    "policies: {p: {rate_limiter: {burst: 1}}}\n",
    "policies: {p: {rate_limiter: {rate: 100 per minute}}}\n",
    "policies: {p: {retry: {retry_on: [not a name]}}}\n",
    "policies: {p: {retry: {retry_on_result: x}}}\n",
    "policies: {p: {name: q}}\n",
    "policies: {p: {enable_recovery: null}}\n",
    "policies: {p: 5}\n",
    "version: 2\npolicies: {}\n",
    "polices: {}\n",
    "retry_budgets: {}\n",
    "xdefaults: {}\npolicies: {}\n",
    "X-defaults: {}\npolicies: {}\n",
]


@pytest.mark.parametrize("text", GOOD)
def test_what_the_loader_accepts_the_schema_accepts(text: str) -> None:
    """Valid files load and validate."""
    loads(text)
    assert _valid(yaml.safe_load(text)) == []


@pytest.mark.parametrize("text", BAD)
def test_what_the_schema_refuses_the_loader_refuses(text: str) -> None:
    """A file the schema flags is one the loader refuses too (editors warn of real errors)."""
    assert _valid(yaml.safe_load(text)) != []
    with pytest.raises(ConfigError):
        loads(text)


def test_every_field_is_a_keyword_of_its_class_and_every_keyword_is_covered() -> None:
    """The table and the classes cannot drift: each field is a parameter; each parameter a field or refused."""
    for section in SECTIONS:
        parameters = set(inspect.signature(section.build).parameters)
        fields = {f.name for f in section.fields}
        refused = {key for key, _ in section.refused}
        assert fields <= parameters, section.owner
        assert parameters == fields | refused, (section.owner, parameters - fields - refused)
        assert not fields & refused, section.owner
        keys = [key for f in section.fields for key in f.keys]
        assert len(keys) == len(set(keys)), section.owner


def test_choices_cover_their_enums() -> None:
    """Every member of RetryStrategy and Jitter can be written; FallbackStrategy's are written or refused."""
    by_enum = {f.enum: f for s in SECTIONS for f in s.fields if f.enum is not None}
    assert {m.value for m in RetryStrategy} == set(by_enum[RetryStrategy].choices)
    assert {m.value for m in Jitter} == set(by_enum[Jitter].choices)
    fallback = by_enum[FallbackStrategy]
    assert {m.value for m in FallbackStrategy} == set(fallback.choices) | {v for v, _ in fallback.refused}


_BASE: dict[str, dict[str, Any]] = {
    "FallbackConfig": {"strategy": FallbackStrategy.DEFAULT_VALUE},
    "RateLimiterConfig": {"rate": 1.0},
    "HedgingConfig": {"delay": 0.05},
}
_CONTEXT: dict[tuple[str, str], dict[str, Any]] = {
    ("ChaosConfig", "fault_rate"): {"fault": OSError},
    ("ChaosConfig", "latency_rate"): {"latency": 1.0},
    ("RetryPolicy", "max_delay"): {"initial_delay": 0.0},
    ("CircuitBreakerConfig", "failure_rate_threshold"): {"sliding_window": CountWindow()},
    ("CircuitBreakerConfig", "minimum_calls"): {"sliding_window": TimeWindow()},  # no size above it
    ("CircuitBreakerConfig", "slow_call_duration"): {"sliding_window": CountWindow()},
    ("CircuitBreakerConfig", "slow_call_rate_threshold"): {
        "sliding_window": CountWindow(),
        "slow_call_duration": 1.0,
    },
    ("RateLimiterConfig", "max_waiting"): {"max_wait": 1.0},
    ("ResilienceConfig", "max_attempts_total"): {"enable_recovery": True},
}


def _build(section: Section, field: Field, value: float) -> object:
    kwargs = {
        **_BASE.get(section.owner, {}),
        **_CONTEXT.get((section.owner, field.name), {}),
        field.name: value,
    }
    if field.kind == "int":
        kwargs[field.name] = int(value)
    return section.build(**kwargs)


@pytest.mark.parametrize(
    ("section", "field"),
    [(s, f) for s in SECTIONS for f in s.fields if f.minimum is not None or f.maximum is not None],
    ids=lambda x: getattr(x, "owner", None) or getattr(x, "name", ""),
)
def test_each_bound_of_the_table_is_the_class_rule(section: Section, field: Field) -> None:
    """The schema's bounds are the classes': the bound itself (or just inside) passes, just outside fails
    (above a number's maximum, the next float: past the largest, inf)."""
    step = 1 if field.kind == "int" else 1e-3
    if field.minimum is not None:
        inside = field.minimum + (step if field.exclusive_minimum else 0)
        outside = field.minimum if field.exclusive_minimum else field.minimum - step
        _build(section, field, inside)
        with pytest.raises(ValueError, match=f"{section.owner}.{field.name}"):
            _build(section, field, outside)
    if field.maximum is not None:
        _build(section, field, field.maximum)
        above = field.maximum + 1 if field.kind == "int" else math.nextafter(field.maximum, math.inf)
        with pytest.raises(ValueError, match=f"{section.owner}.{field.name}"):
            _build(section, field, above)


EVERY_YAML = """\
version: 1
retry_budgets:
  shared: {ratio: 0.2, min_retries_per_second: 1, window: 1m}
policies:
  counted:
    circuit_breaker:
      failure_threshold: 5  # its default: another beside a window is refused
      success_threshold: 2
      timeout: 30s
      half_open_max_calls: 2
      record_exceptions: [ConnectionError, TimeoutError]
      ignore_exceptions: KeyError
      sliding_window: {kind: count, size: 50}
      failure_rate_threshold: 0.5
      minimum_calls: 10
      slow_call_duration: 1.5s
      slow_call_rate_threshold: 0.8
      max_half_open_wait: 5s
    retry_policy:
      max_attempts: 3
      strategy: exponential
      initial_delay: 250ms
      multiplier: 3
      max_delay: 10s
      jitter: proportional
      jitter_ratio: 0.2
      attempt_timeout: 800ms
      retry_on: [ConnectionError]
      no_retry_on: [ValueError]
      budget: shared
    fallback_config: {strategy: default_value, default_value: {ok: false}, handle_exceptions: [OSError]}
    timeout: 2m
    bulkhead_config: {max_concurrent: 4, max_waiting: 8, timeout: 1s}
    rate_limiter: {rate: 100/m, burst: 10, algorithm: sliding_window, max_wait: 500ms, max_waiting: 3}
    hedging: {delay: 50ms, max_attempts: 2, mode: latency, hedge_on: [TimeoutError], budget: shared}
    chaos:
      fault_rate: 0.1
      fault: ConnectionError
      latency_rate: 0.2
      latency: 10ms
      outcome_rate: 0.1
      outcome: cached
      enabled: true
      seed: 7
    enable_recovery: true
    max_attempts_total: 5
    circuit_breaker_name: shared_breaker
    bulkhead_name: shared_bulkhead
    spans: false
    record_duration: false
  timed:
    circuit_breaker: {sliding_window: {kind: time, seconds: 1m, buckets: 12}, minimum_calls: 5}
"""
EVERY_TOML = """\
version = 1

[retry_budgets.shared]
ratio = 0.2
min_retries_per_second = 1
window = "1m"

[policies.counted]
timeout = "2m"
enable_recovery = true
max_attempts_total = 5
circuit_breaker_name = "shared_breaker"
bulkhead_name = "shared_bulkhead"
spans = false
record_duration = false
fallback_config = { strategy = "default_value", default_value = { ok = false }, handle_exceptions = ["OSError"] }
bulkhead_config = { max_concurrent = 4, max_waiting = 8, timeout = "1s" }
rate_limiter = { rate = "100/m", burst = 10, algorithm = "sliding_window", max_wait = "500ms", max_waiting = 3 }
hedging = { delay = "50ms", max_attempts = 2, mode = "latency", hedge_on = ["TimeoutError"], budget = "shared" }

[policies.counted.circuit_breaker]
failure_threshold = 5  # its default: another beside a window is refused
success_threshold = 2
timeout = "30s"
half_open_max_calls = 2
record_exceptions = ["ConnectionError", "TimeoutError"]
ignore_exceptions = "KeyError"
sliding_window = { kind = "count", size = 50 }
failure_rate_threshold = 0.5
minimum_calls = 10
slow_call_duration = "1.5s"
slow_call_rate_threshold = 0.8
max_half_open_wait = "5s"

[policies.counted.retry_policy]
max_attempts = 3
strategy = "exponential"
initial_delay = "250ms"
multiplier = 3
max_delay = "10s"
jitter = "proportional"
jitter_ratio = 0.2
attempt_timeout = "800ms"
retry_on = ["ConnectionError"]
no_retry_on = ["ValueError"]
budget = "shared"

[policies.counted.chaos]
fault_rate = 0.1
fault = "ConnectionError"
latency_rate = 0.2
latency = "10ms"
outcome_rate = 0.1
outcome = "cached"
enabled = true
seed = 7

[policies.timed.circuit_breaker]
sliding_window = { kind = "time", seconds = "1m", buckets = 12 }
minimum_calls = 5
"""


def _written(section: Section, value: dict[str, Any], found: dict[str, set[str]]) -> None:
    """Note, per section, the fields ``value`` writes, and walk into its nested sections."""
    for key, item in value.items():
        field = section.field(key)
        assert field is not None, (section.owner, key)
        found.setdefault(section.owner, set()).add(field.name)
        if field.section is not None:
            _written(field.section, item, found)
        for variant in field.variants:
            if item.get("kind") == variant.tag:
                _written(variant, {k: v for k, v in item.items() if k != "kind"}, found)


def test_a_file_with_every_field_loads_in_both_formats_and_validates() -> None:
    """Every key of every section, written once in YAML and once in TOML: the same policies, and valid
    for the schema (the loader's table, the classes' keywords and the schema cannot drift apart)."""
    from otel_resilience.config.fields import POLICY, RETRY_BUDGET  # noqa: PLC0415

    documents = {"yaml": yaml.safe_load(EVERY_YAML), "toml": parse(EVERY_TOML, "toml", None)[0]}
    for data in documents.values():
        assert _valid(data) == []
        found: dict[str, set[str]] = {}
        for settings in data["retry_budgets"].values():
            _written(RETRY_BUDGET, settings, found)
        for settings in data["policies"].values():
            _written(POLICY, settings, found)
        assert found == {s.owner: {f.name for f in s.fields} for s in SECTIONS}
    from_yaml = loads(EVERY_YAML)
    from_toml = loads(EVERY_TOML, "toml", previous=from_yaml)  # the same budget object: equal configs
    assert dict(from_toml) == dict(from_yaml)


# Values a file may write for any field, each judged alone (the section otherwise as _SETTLED sets it).
_PROBES: tuple[Any, ...] = (
    -1, 0, 0.5, 1, 2, 2.5, 3.0, 10, 11, "5", "0s", "0ms", "0.0s", " 0s", "1s", "1.5s", "250ms", "PT1S", "1e3s",
    True, False, None, "", [], {}, "ConnectionError", ["ConnectionError"], ["ConnectionError", "OSError"],
    "exponential", "none", "latency", "fallback", "token_bucket", "default_value", "cached_value",
    "100/m", "0/s", "0.0/m", "shared", {"kind": "count", "size": 5}, {"kind": "time", "seconds": "0s"},
    "x" * 256, "x" * 257,  # a name of at most 256 characters
)  # fmt: skip
# What a section needs besides the probed field, so that no rule that ties two fields is met.
# Hedging's delay and mode are tied (a delay in 'latency' mode only): the classes' rule, not the schema's.
# So are a breaker's window and the settings that act only through it (minimum_calls needs one),
# and its slow-call rate and duration.
_TIED: Final = (
    ("HedgingConfig", "delay", None),
    ("HedgingConfig", "mode", "fallback"),
    ("HedgingConfig", "mode", "parallel"),
    ("CircuitBreakerConfig", "sliding_window", None),
)
_SETTLED: dict[str, dict[str, Any]] = {
    "CircuitBreakerConfig": {
        "minimum_calls": 1,
        "sliding_window": {"kind": "count"},
        "slow_call_duration": 1,
    },
    "FallbackConfig": {"strategy": "default_value"},
    "RateLimiterConfig": {"rate": 1},
    "HedgingConfig": {"delay": 0.05},
    "RetryPolicy": {"initial_delay": 0, "max_delay": 60, "jitter": "none", "strategy": "fixed"},
    "ChaosConfig": {"fault": "OSError", "latency": 1, "outcome": 1},
}
# A field probed in another section than _SETTLED's: a breaker's streak (failure_threshold) acts only
# without a window, and is refused beside one unless at its default.
# A limiter's waiting places act only with a wait, and are refused without one unless at their default.
# A retry's schedule reads its multiplier, jitter and jitter_ratio only with some strategies and
# jitters (another value is refused elsewhere): each is probed, and the strategy too, beside the
# defaults of the others.
# A policy's breaker and bulkhead names need the breaker and bulkhead they name; its cap in total
# needs what takes further attempts (a retry here).
_SETTLED_FOR: dict[tuple[str, str], dict[str, Any]] = {
    ("RetryPolicy", "strategy"): {"initial_delay": 0, "max_delay": 60},
    ("RetryPolicy", "multiplier"): {"initial_delay": 0, "max_delay": 60, "jitter": "none"},
    ("RetryPolicy", "jitter"): {"initial_delay": 0, "max_delay": 60},
    ("RetryPolicy", "jitter_ratio"): {"initial_delay": 0, "max_delay": 60, "strategy": "fixed"},
    ("CircuitBreakerConfig", "failure_threshold"): {},
    ("RateLimiterConfig", "max_waiting"): {"rate": 1, "max_wait": 1},
    ("ResilienceConfig", "circuit_breaker_name"): {"circuit_breaker": {}},
    ("ResilienceConfig", "bulkhead_name"): {"bulkhead_config": {}},
    ("ResilienceConfig", "max_attempts_total"): {"retry": {}},
}
_KEY_OF = {
    "CircuitBreakerConfig": "circuit_breaker", "RetryPolicy": "retry_policy", "FallbackConfig": "fallback_config",
    "BulkheadConfig": "bulkhead_config", "RateLimiterConfig": "rate_limiter", "HedgingConfig": "hedging",
    "ChaosConfig": "chaos",
}  # fmt: skip


def _file_with(section: Section, field: Field, value: Any) -> dict[str, Any]:
    """A file whose only doubtful value is ``value``, at ``field`` of ``section``."""
    settled = _SETTLED_FOR.get((section.owner, field.name), _SETTLED.get(section.owner, {}))
    settings = {**settled, field.name: value}
    budgets = {"shared": {}}
    if section.owner == "ResilienceConfig":
        return {"retry_budgets": budgets, "policies": {"p": settings}}
    if section.owner == "RetryBudget":
        return {"retry_budgets": {"shared": settings}, "policies": {}}
    if section.tag is not None:  # a window: in a breaker that needs few calls
        window = {"kind": section.tag, **settings}
        return {"policies": {"p": {"circuit_breaker": {"minimum_calls": 1, "sliding_window": window}}}}
    return {"retry_budgets": budgets, "policies": {"p": {_KEY_OF[section.owner]: settings}}}


def _schema_can_judge(field: Field, value: Any) -> bool:
    """Whether the schema alone can tell ``value`` right or wrong for ``field``.

    It cannot resolve names: whether a name shaped like a class names an exception (the loader
    imports it), or a budget name one of ``retry_budgets``.
    """
    names = value if isinstance(value, list) else [value]
    if field.kind in ("exception", "exceptions"):
        return not any(
            isinstance(n, str) and re.search(EXCEPTION_PATTERN, n) and n not in ("ConnectionError", "OSError")
            for n in names
        )
    if field.kind == "budget":
        return not (isinstance(value, str) and value.strip() and value != "shared")
    return True


@pytest.mark.parametrize(
    ("section", "field"),
    [(s, f) for s in SECTIONS for f in s.fields if f.kind != "section"],
    ids=lambda x: getattr(x, "owner", None) or getattr(x, "name", ""),
)
def test_the_schema_accepts_a_value_exactly_when_the_loader_does(section: Section, field: Field) -> None:
    """Walk every field with values of every kind: an editor flags exactly the ones the loader refuses
    (a duration or a rate that must be above zero refuses 0 and "0s"; a list of classes that must
    not be empty refuses [])."""
    disagreements = []
    for value in _PROBES:
        if not _schema_can_judge(field, value) or (section.owner, field.name, value) in _TIED:
            continue
        data = _file_with(section, field, value)
        try:
            loads(yaml.safe_dump(data))
            loaded = True
        except ConfigError:
            loaded = False
        if loaded != (_valid(data) == []):
            disagreements.append((value, "loads" if loaded else "refused"))
    assert disagreements == []


@pytest.mark.parametrize(
    ("text", "accepted"),
    [
        ("policies: {%s: {}}\n" % ("p" * 256), True),
        ("policies: {%s: {}}\n" % ("p" * 257), False),  # a policy's name is a telemetry attribute
        ("retry_budgets: {%s: {}}\npolicies: {}\n" % ("b" * 257), True),  # a budget's name is not
        ("retry_budgets: {b: {window: 0.00001}}\npolicies: {}\n", True),
        ("retry_budgets: {b: {window: 0.000009}}\npolicies: {}\n", False),  # a microsecond per bucket
    ],
)
def test_names_and_bounds_the_schema_judges_as_the_loader(text: str, accepted: bool) -> None:
    """A policy's name and a budget's window: the schema's verdict is the loader's."""
    try:
        loads(text)
        loaded = True
    except ConfigError:
        loaded = False
    assert (loaded, _valid(yaml.safe_load(text)) == []) == (accepted, accepted)


@pytest.mark.parametrize(
    ("written", "accepted"),
    [("3", True), ("3.0", True), ("1e1", True), ("-0.0", False), ("3.5", False), ("3.0e-1", False)],
)
def test_an_integer_setting_written_with_a_zero_fraction_is_an_integer_for_the_schema_and_the_loader(
    written: str, accepted: bool
) -> None:
    """JSON Schema calls a number with a zero fractional part an integer (3.0 is one): the loader reads
    it as that int, so an editor and the loader agree (was: the schema passed ``failure_threshold: 3.0``
    and the loader refused it, "must be an int, got 3.0 (float)")."""
    text = f"policies: {{p: {{circuit_breaker: {{failure_threshold: {written}}}}}}}\n"
    try:
        threshold = loads(text)["p"].circuit_breaker.failure_threshold  # type: ignore[union-attr]
        loaded = True
    except ConfigError:
        loaded = False
    data = parse(text, "yaml", None)[0]  # YAML 1.2, as the loader and an editor read it: 1e1 is 10.0
    assert (loaded, _valid(data) == []) == (accepted, accepted)
    if accepted:
        assert type(threshold) is int
        assert threshold == int(float(written))


_TINY_WINDOWS: Final = [
    ("0.009ms", False), ("0.000009s", False), ("0.0000001m", False), ("0.000000001h", False),
    ("0.005ms0.005ms", False),  # every part alone under 10 µs: the schema cannot add them up
    ("0.01ms", True), ("0.00001s", True), ("0.00000017m", True), ("0.000000003h", True),
    ("0.009999999999999999ms", True), ("0.000009999999999999999s", True),  # the class's own bound
    ("0.009999999999999998ms", False), ("0.000009999999999999998s", False),
    ("1ms", True), ("0.001ms1s", True), ("0s0.01ms", True), ("1m", True), (" 10s ", True),
]  # fmt: skip


@pytest.mark.parametrize(("written", "accepted"), _TINY_WINDOWS)
def test_a_budget_window_written_with_units_is_judged_alike_by_the_schema_and_the_loader(
    written: str, accepted: bool
) -> None:
    """A retry budget's window needs a microsecond per bucket (10 µs): written as a string with units,
    as written as a number, the schema refuses what the loader refuses (was: the schema passed
    ``window: 0.009ms``, the loader refused it)."""
    data = {"retry_budgets": {"b": {"window": written}}, "policies": {}}
    try:
        loads(json.dumps(data))
        loaded = True
    except ConfigError:
        loaded = False
    assert (loaded, _valid(data) == []) == (accepted, accepted)


_FIELDS: Final = [(s, f) for s in SECTIONS for f in s.fields if f.kind != "section"]
_WORDS: Final = sorted(
    {c for s in SECTIONS for f in s.fields for c in f.choices} | {"ConnectionError", "shared"}
)
_VALUES: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    # The loader's largest values and the next ones (JSON writes no inf: test_a_number_past_... has it).
    st.sampled_from(
        [MAX_COUNT, MAX_COUNT + 1, 10**400, MAX_DURATION, math.nextafter(MAX_DURATION, math.inf)]
    ),
    st.floats(-2, 2),
    st.text(alphabet="0123456789.smh/ -", max_size=7),
    st.sampled_from(_WORDS),
    st.lists(st.sampled_from(["ConnectionError", "OSError", "not a name", 3]), max_size=3),
)


def _judged_alone(section: Section, field: Field, value: Any) -> bool:
    """Whether the schema can judge ``value`` at ``field`` in the file of :func:`_file_with`.

    Besides :func:`_schema_can_judge` and :data:`_TIED`: a duration written with units past
    ``threading.TIMEOUT_MAX`` (a pattern cannot bound the seconds it reads as; as a number, the schema
    bounds it), and the bounds that tie the value to a setting of :data:`_SETTLED` or to a default (a
    breaker's ``minimum_calls`` within its window, a retry's delays, a window's microsecond per bucket).
    """
    if not _schema_can_judge(field, value) or (section.owner, field.name, value) in _TIED:
        return False
    written = value
    if field.kind == "duration" and isinstance(value, str):
        try:  # a duration written with units ties its section's delays as its seconds do
            value = parse_duration(value)
        except ValueError:
            return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    tied = {
        ("CircuitBreakerConfig", "minimum_calls"): value > CountWindow().size,
        ("RetryPolicy", "initial_delay"): value > _SETTLED["RetryPolicy"]["max_delay"],
        ("TimeWindow", "seconds"): 0 < value < 1e-5,
    }
    if tied.get((section.owner, field.name), False):
        return False
    return not isinstance(written, str) or value <= MAX_DURATION


@examples(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_FIELDS), _VALUES)
def test_the_schema_accepts_any_value_exactly_when_the_loader_does(
    field_of: tuple[Section, Field], value: Any
) -> None:
    """The table-driven test above, with values drawn at random: any number, short text of the
    characters of durations and rates, enum values, lists of names. The file is written as JSON (a
    YAML 1.2 document), so that the loader reads the very values the schema judges."""
    section, field = field_of
    if not _judged_alone(section, field, value):
        return
    data = _file_with(section, field, value)
    try:
        loads(json.dumps(data))
        loaded = True
    except ConfigError:
        loaded = False
    assert loaded == (_valid(data) == []), (section.owner, field.name, value)


def _ecma_space(char: str) -> bool:
    """Whether ECMAScript's ``\\s`` (the regular expressions of a JSON Schema's ``pattern``) matches ``char``."""
    return char in _ECMA_SPACES


@pytest.mark.parametrize("kind", ["duration", "rate"])
def test_the_spaces_around_a_duration_or_a_rate_are_the_same_for_the_schema_and_the_loader(kind: str) -> None:
    """An editor matches the schema's patterns by ECMAScript's rules, the loader by Python's: a space
    around a value is one both call a space (was: the loader took "\\x1c2s" and refused "\\ufeff2s",
    an editor the other way round)."""
    text = "2s" if kind == "duration" else "2/s"
    pattern = DURATION_PATTERN if kind == "duration" else RATE_PATTERN
    field = "timeout" if kind == "duration" else "rate_limiter"
    disagreements = []
    for code in range(0x10000):
        char = chr(code)
        if not (char.isspace() or _ecma_space(char)):
            continue
        both = char.isspace() and _ecma_space(char)
        value = char + text
        try:
            loads(json.dumps({"policies": {"p": {field: value if kind == "duration" else {"rate": value}}}}))
            loaded = True
        except ConfigError:
            loaded = False
        if (loaded, bool(re.search(pattern, value))) != (both, both):
            disagreements.append(char)
    assert disagreements == []


@pytest.mark.parametrize("where", ["policy", "budget", "circuit_breaker_name"])
def test_a_blank_name_is_the_same_for_the_schema_and_the_loader(where: str) -> None:
    """A name must hold a character that is not a space: the loader judges it by Python's
    ``str.isspace``, an editor by the schema's pattern under ECMAScript's rules (was: a policy named
    "\\x1c" or "\\x85" passed the schema and was refused, one named "\\ufeff" the other way round)."""
    disagreements = []
    for char in map(chr, range(0x10000)):
        if not (char.isspace() or char in _ECMA_SPACES or char == "x"):  # and one name that is not blank
            continue
        name = f"{char}{char}"
        data: dict[str, Any] = {
            "policy": {"policies": {name: {}}},
            "budget": {"retry_budgets": {name: {}}, "policies": {}},
            "circuit_breaker_name": {
                "policies": {"p": {"circuit_breaker": {}, "circuit_breaker_name": name}}
            },
        }[where]
        try:
            loads(json.dumps(data))
            loaded = True
        except ConfigError:
            loaded = False
        if loaded != (_valid(data) == []) or loaded == char.isspace():
            disagreements.append(char)
    assert disagreements == []


@pytest.mark.parametrize("name", ["ConnectionError", "ConnectionError\n", "http.client:HTTPException\n"])
def test_a_line_break_after_an_exception_name_is_judged_alike_by_python_validators(name: str) -> None:
    """A validator that matches ``pattern`` with Python's ``re.search`` (python-jsonschema) reads ``$``
    as "the end, or before a final line break": the pattern must still refuse what the loader refuses,
    a class name with a line break after it (``retry_on: |`` then the name on its own line; was: the
    schema passed it there, the loader refused it)."""
    try:
        loads(json.dumps({"policies": {"p": {"retry": {"retry_on": name}}}}))
        loaded = True
    except ConfigError:
        loaded = False
    assert bool(re.search(EXCEPTION_PATTERN, name)) == loaded
    assert loaded == (name == "ConnectionError")


_BIG: Final = "9" * 400
_PAST_THE_BOUNDS: Final = [
    "policies: {p: {timeout: .inf}}\n",
    "policies: {p: {timeout: 1e400}}\n",  # a float past the range: inf
    f"policies: {{p: {{timeout: {_BIG}}}}}\n",
    "policies: {p: {timeout: 1e12}}\n",  # past threading.TIMEOUT_MAX
    "policies: {p: {chaos: {latency: .inf}}}\n",
    "policies: {p: {rate_limiter: {rate: 1, max_wait: .inf}}}\n",
    "retry_budgets: {b: {window: .inf}}\npolicies: {}\n",
    f"policies: {{p: {{circuit_breaker: {{failure_threshold: {_BIG}}}}}}}\n",
    f"policies: {{p: {{circuit_breaker: {{failure_threshold: {2**63}}}}}}}\n",  # past sys.maxsize
    f"policies: {{p: {{rate_limiter: {{rate: 1, burst: {_BIG}}}}}}}\n",
    f"policies: {{p: {{bulkhead: {{max_waiting: {2**63}}}}}}}\n",
    f"policies: {{p: {{retry: {{}}, max_attempts_total: {2**63}}}}}\n",
    "retry_budgets: {b: {ratio: .inf}}\npolicies: {}\n",
    f"retry_budgets: {{b: {{min_retries_per_second: {_BIG}}}}}\npolicies: {{}}\n",
    "policies: {p: {retry: {multiplier: .inf}}}\n",
    "policies: {p: {rate_limiter: {rate: .inf}}}\n",
    "policies: {p: {rate_limiter: {rate: 1e19}}}\n",  # past sys.maxsize permits a second
    "policies: {p: {rate_limiter: {rate: 1e-11}}}\n",  # under one permit per threading.TIMEOUT_MAX
]


@pytest.mark.parametrize("text", _PAST_THE_BOUNDS)
def test_a_number_past_the_loaders_bounds_is_refused_by_the_schema_too(text: str) -> None:
    """The longest duration (threading.TIMEOUT_MAX), the largest count (sys.maxsize), a finite number and
    a rate's range are bounds the schema states from the loader's own constants (was: the schema passed
    ``timeout: .inf``, a 400-digit ``failure_threshold`` and ``rate: 1e19``, the loader refused them)."""
    with pytest.raises(ConfigError):
        loads(text)
    assert _valid(parse(text, "yaml", None)[0]) != []


@pytest.mark.parametrize(
    "text",
    [
        "policies: {p: {timeout: 9223372036}}\n",
        f"policies: {{p: {{circuit_breaker: {{failure_threshold: {2**63 - 1}}}}}}}\n",
        f"policies: {{p: {{chaos: {{seed: {_BIG}}}}}}}\n",  # a seed has no bound
        "retry_budgets: {b: {ratio: 1e300}}\npolicies: {}\n",
    ],
)
def test_a_number_at_the_loaders_bounds_is_accepted_by_both(text: str) -> None:
    """The bounds are the loader's own: a value at them (or a seed, which has none) passes both."""
    loads(text)
    assert _valid(parse(text, "yaml", None)[0]) == []


def test_nan_is_refused_by_the_loader_though_the_schema_cannot_refuse_it() -> None:
    """JSON Schema has no keyword that refuses NaN (it compares false with every bound), as the
    README says: the loader does (a YAML ``.nan``)."""
    text = "policies: {p: {timeout: .nan}}\n"
    with pytest.raises(ConfigError, match="finite"):
        loads(text)
    assert _valid(parse(text, "yaml", None)[0]) == []
