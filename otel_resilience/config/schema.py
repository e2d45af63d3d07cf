"""The JSON Schema of the configuration file, generated from the table the loader reads.

``otel_resilience/config/schema.json`` is this module's output, shipped in the package (a test
keeps it equal to :func:`generate`); ``otel-resilience schema`` prints it. Regenerate it with
``python -m otel_resilience.config.schema``. Editors validate a file against it: YAML with the
first line ``# yaml-language-server: $schema=<path or URL of the schema>``, TOML (Taplo, Even
Better TOML) with ``#:schema <path or URL>``.

The schema states the shape (keys, types, enums, duration and name patterns) and each class's
bounds as hints (a name's longest length too, and the platform's maxima: a count's ``sys.maxsize``,
a duration's ``threading.TIMEOUT_MAX``, a number's finiteness); the loader remains the judge (rules
that tie two fields together, such as ``max_delay >= initial_delay``, are the config classes'). JSON
Schema cannot refuse NaN (it compares false with every bound) nor bound the seconds of a duration
written with units: the loader refuses them.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from otel_resilience.config.fields import (
    EXTENSION_PREFIX,
    FORMAT_VERSION,
    POLICY,
    RETRY_BUDGET,
    SECTIONS,
    Field,
    Section,
)
from otel_resilience.config.values import (
    DURATION_PATTERN,
    EXCEPTION_PATTERN,
    POSITIVE_DURATION_PATTERN,
    POSITIVE_RATE_PATTERN,
    RATE_PATTERN,
    duration_at_least,
    exception_name,
)
from otel_resilience.engine.validation import MAX_ATTRIBUTE_LENGTH

__all__ = ["SCHEMA_FILE", "SCHEMA_ID", "generate", "main", "render", "shipped"]

SCHEMA_FILE: Final = "schema.json"
"""The schema's file name inside the ``otel_resilience.config`` package."""
SCHEMA_ID: Final = (
    "https://github.com/otel-resilience/otel-resilience/blob/main/otel_resilience/config/schema.json"
)
"""The schema's ``$id``."""
_NOT_SPACE: Final = r"[^\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""A character that is not a space by Python's ``str.isspace`` (a name is blank when ``str.strip``
leaves nothing), written out: an editor reads ``\\S`` by ECMAScript's rules, which call ``\\ufeff``
a space and ``\\x1c``-``\\x1f`` and ``\\x85`` not."""
_NAME: Final = {"type": "string", "minLength": 1, "pattern": _NOT_SPACE}
_ATTRIBUTE_NAME: Final = {**_NAME, "maxLength": MAX_ATTRIBUTE_LENGTH}
"""A name that becomes a telemetry attribute (a policy's, a breaker's): check_name's length too."""
_DEFS: Final = {
    "duration_text": {
        "description": "A duration written with units ms, s, m, h: '250ms', '2s', '2m', '1h30m'.",
        "type": "string",
        "pattern": DURATION_PATTERN,
    },
    "positive_duration_text": {
        "description": "A duration above zero written with units ms, s, m, h: '250ms', '2s', '2m', '1h30m'.",
        "type": "string",
        "pattern": POSITIVE_DURATION_PATTERN,
    },
    "exception": {
        "description": "An exception class: a built-in ('ConnectionError') or a dotted path "
        "('httpx.ConnectTimeout'), imported when the file is loaded.",
        "type": "string",
        "pattern": EXCEPTION_PATTERN,
    },
    "exceptions": {
        "description": "One exception class by name, or a list of them.",
        "anyOf": [{"$ref": "#/$defs/exception"}, {"type": "array", "items": {"$ref": "#/$defs/exception"}}],
    },
    "nonempty_exceptions": {
        "description": "One exception class by name, or a list of at least one.",
        "anyOf": [
            {"$ref": "#/$defs/exception"},
            {"type": "array", "items": {"$ref": "#/$defs/exception"}, "minItems": 1},
        ],
    },
}


def generate() -> dict[str, Any]:
    """Return the JSON Schema of a configuration file (draft 2020-12), from the loader's table."""
    defs: dict[str, Any] = dict(_DEFS)
    for section in SECTIONS:
        defs[section.owner] = _section(section)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "otel_resilience configuration",
        "description": "Named resilience policies, read by otel_resilience.config.load(path).",
        "type": "object",
        "properties": {
            "version": {"description": "The file format's version.", "const": FORMAT_VERSION},
            "retry_budgets": _named(
                RETRY_BUDGET, "Retry budgets by name; a retry policy's budget names one."
            ),
            "policies": _named(
                POLICY, "Policies by name; the name is the policy's name in telemetry.", _ATTRIBUTE_NAME
            ),
        },
        "patternProperties": {
            f"^{EXTENSION_PREFIX}": {"description": "Not read: a place for YAML anchors the policies merge."}
        },
        "required": ["policies"],
        "additionalProperties": False,
        "$defs": defs,
    }


def _named(section: Section, description: str, names: dict[str, Any] = _NAME) -> dict[str, Any]:
    return {
        "description": description,
        "type": ["object", "null"],
        "propertyNames": names,
        "additionalProperties": {"anyOf": [{"$ref": f"#/$defs/{section.owner}"}, {"type": "null"}]},
    }


def _section(section: Section) -> dict[str, Any]:
    defaults = _defaults(section)
    properties: dict[str, Any] = {}
    if section.tag is not None:
        properties["kind"] = {"description": "Which window.", "const": section.tag}
    for field in section.fields:
        schema = {"description": field.doc, **_value(field)}
        if field.nullable:
            schema = {"description": field.doc, "anyOf": [_value(field), {"type": "null"}]}
        if field.name in defaults:
            schema["default"] = defaults[field.name]
        for key in field.keys:
            properties[key] = schema
    result: dict[str, Any] = {
        "description": section.doc,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    required = (["kind"] if section.tag is not None else []) + [f.name for f in section.fields if f.required]
    if required:
        result["required"] = required
    exclusive = [{"not": {"required": list(f.keys)}} for f in section.fields if f.aliases]
    if exclusive:
        result["allOf"] = exclusive
    return result


def _value(field: Field) -> dict[str, Any]:  # noqa: PLR0911 - one return per kind of field
    """The schema of one field's value (without null)."""
    kind = field.kind
    if kind == "section" and field.section is not None:
        return {"$ref": f"#/$defs/{field.section.owner}"}
    if kind == "window":
        return {"oneOf": [{"$ref": f"#/$defs/{v.owner}"} for v in field.variants]}
    if kind == "duration":  # seconds as a number, within the field's bounds, or a string with units
        number = {"type": "number", **_bounds(field)}
        if field.minimum:  # its own least value (a budget's window: a microsecond per bucket)
            return {"anyOf": [number, {"type": "string", "pattern": duration_at_least(field.minimum)}]}
        text = "#/$defs/positive_duration_text" if field.exclusive_minimum else "#/$defs/duration_text"
        return {"anyOf": [number, {"$ref": text}]}
    if kind == "exceptions":
        return {"$ref": "#/$defs/nonempty_exceptions" if field.nonempty else "#/$defs/exceptions"}
    if kind == "exception":
        return {"$ref": "#/$defs/exception"}
    if kind == "choice":
        return {"enum": list(field.choices)}
    if kind == "rate":
        positive = field.exclusive_minimum or (field.minimum or 0) > 0
        pattern = POSITIVE_RATE_PATTERN if positive else RATE_PATTERN
        return {"anyOf": [{"type": "number", **_bounds(field)}, {"type": "string", "pattern": pattern}]}
    if kind == "name":
        return dict(_ATTRIBUTE_NAME)
    if kind == "budget":
        return dict(_NAME)
    if kind == "bool":
        return {"type": "boolean"}
    if kind in ("int", "number"):
        return {"type": "integer" if kind == "int" else "number", **_bounds(field)}
    return {}  # "value": anything the format can write


def _bounds(field: Field) -> dict[str, float]:
    bounds: dict[str, float] = {}
    if field.minimum is not None:
        bounds["exclusiveMinimum" if field.exclusive_minimum else "minimum"] = field.minimum
    if field.maximum is not None:
        bounds["maximum"] = field.maximum
    return bounds


def _defaults(section: Section) -> dict[str, Any]:
    """The class's defaults that a file could write (exception classes by name, enums by value)."""
    defaults: dict[str, Any] = {}
    for name, parameter in inspect.signature(section.build).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            continue
        value = _as_json(parameter.default)
        if value is not _NO_JSON:
            defaults[name] = value
    return defaults


_NO_JSON: Final = object()


def _as_json(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple) and all(
        isinstance(item, type) and issubclass(item, BaseException) for item in value
    ):
        return [exception_name(item) for item in value]
    return _NO_JSON


def render(schema: dict[str, Any]) -> str:
    """Return the schema as the shipped file's text (indented, sorted as generated, a final newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def shipped() -> str:
    """Return the text of the schema shipped in the package."""
    return resources.files("otel_resilience.config").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Write :func:`generate`'s schema to ``otel_resilience/config/schema.json`` (beside this module).

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``): none but ``--help``.

    Returns:
        0 once written (``--help`` and a usage error exit through ``SystemExit``, 0 and 2).
    """
    path = Path(__file__).with_name(SCHEMA_FILE)
    parser = argparse.ArgumentParser(
        prog="python -m otel_resilience.config.schema",
        description=f"Regenerate the JSON Schema of the configuration file: write it to {path} "
        "(the copy shipped in the package; `otel-resilience schema` prints it).",
    )
    parser.parse_args(argv)
    path.write_text(render(generate()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
