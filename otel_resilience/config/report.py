"""A short account of a loaded file: each policy with the settings it changes from the defaults.

What ``otel-resilience check PATH`` prints for the repository's ``resilience.yaml``: its header,
its budget and one of its four policy lines, cut at ``...``::

    resilience.yaml: 4 policies, 1 retry budget (settings that differ from the defaults)
      retry budget shared: ratio=0.2 min_retries_per_second=1 window=60s
      ml_service: circuit_breaker(timeout=120s) retry_policy(initial_delay=2s budget=shared) ...

Each value is shown as loaded, never rounded, in a form a file may write that reads back the same:
durations in seconds, rates per second, minute or hour (``100/m``), exception classes by name (a
list of them in brackets, ``[ConnectionError, TimeoutError]``), any other value (a fallback's
``default_value``, a name) as YAML 1.2 writes it in a flow (``"no"``, ``[null, .nan]``, ``2.0``).
A value longer than :data:`MAX_SHOWN` characters is cut (``...``): one built of shared YAML aliases
would otherwise be exponential in the file's size.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
from decimal import Decimal
from typing import Any, Final

from otel_resilience.config.fields import POLICY, RETRY_BUDGET, Field, Section
from otel_resilience.config.formats import plain_string
from otel_resilience.config.loader import ConfigFile
from otel_resilience.config.values import exception_name, parse_rate
from otel_resilience.engine.validation import Derived, describe
from otel_resilience.patterns.retry import RetryBudget

__all__ = ["MAX_SHOWN", "summary"]

MAX_SHOWN: Final = 4096
"""The longest value the account shows in full (characters); a longer one is cut with ``...``."""


def summary(config: ConfigFile) -> str:
    """Return the account of ``config``: a header line, one line per retry budget and per policy."""
    policies = len(config)
    budgets = len(config.retry_budgets)
    header = f"{config.source or '<text>'}: {policies} polic{'y' if policies == 1 else 'ies'}"
    if budgets:
        header += f", {budgets} retry budget{'' if budgets == 1 else 's'}"
    header += " (settings that differ from the defaults)"
    lines = [header]
    names = {id(budget): _name(name) for name, budget in config.retry_budgets.items()}
    for name, budget in config.retry_budgets.items():
        lines.append(f"  retry budget {_name(name)}: {_settings(RETRY_BUDGET, budget, names) or 'defaults'}")
    for name, policy in config.items():
        lines.append(f"  {_name(name)}: {_settings(POLICY, policy, names) or 'no pattern'}")
    return "\n".join(lines) + "\n"


def _name(name: str) -> str:
    """A policy's or a budget's name as the account shows it: bare when a file may write it so, else quoted.

    A name that a file may write unquoted (:func:`~otel_resilience.config.formats.plain_string`) is
    shown as it is; any other is quoted as a file writes it (:func:`_quoted`): a line break (or another
    character that is not printable) would otherwise let it pass for another line of the account, a
    space for the next setting, and ``null`` or ``10`` would read back as no name or a number.
    """
    return name if plain_string(name) else _quoted(name)


def _settings(section: Section, value: object, budgets: dict[int, str]) -> str:
    """The fields of ``value`` that differ from its class's defaults, ``key=value`` or ``key(...)``.

    A default the class resolves from the other fields (``None`` for a breaker window's
    ``minimum_calls``, a :class:`~otel_resilience.engine.validation.Derived` one for a retry's
    ``max_delay``) is compared as resolved: the field is listed when it holds another value than
    ``value`` would with that field left out.
    """
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(section.build).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    parts: list[str] = []
    for field in section.fields:
        current = getattr(value, field.name)
        if field.name in defaults and _same(current, _left_out(value, field.name, defaults[field.name])):
            continue
        parts.append(_setting(field, current, budgets))
    return " ".join(parts)


def _left_out(value: object, name: str, default: object) -> object:
    """What field ``name`` of ``value`` holds when it is given its ``default`` (the rest as they are)."""
    derived = default is None or isinstance(default, Derived)
    if derived and dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            return getattr(dataclasses.replace(value, **{name: default}), name)
        except (TypeError, ValueError):  # the other fields need it set: it differs
            return _DIFFERS
    return default


_DIFFERS: Final = object()


def _same(current: object, default: object) -> bool:
    try:
        return bool(current == default)
    except Exception:  # noqa: BLE001 - a value whose == raises differs, for a summary
        return False


def _setting(field: Field, value: Any, budgets: dict[int, str]) -> str:
    if field.kind == "section" and field.section is not None and value is not None:
        return f"{field.name}({_settings(field.section, value, budgets)})"
    if field.kind == "window" and value is not None:
        variant = next(v for v in field.variants if type(value) is v.build)
        every = " ".join(f"{f.name}={_text(f, getattr(value, f.name), budgets)}" for f in variant.fields)
        return f"{field.name}={variant.tag}({every})"
    return f"{field.name}={_text(field, value, budgets)}"


def _text(field: Field, value: Any, budgets: dict[int, str]) -> str:  # noqa: PLR0911 - one return per kind of value
    if value is None:
        return "none"
    if isinstance(value, RetryBudget):
        return budgets.get(id(value), describe(value))
    if isinstance(value, enum.Enum):
        return str(value.value)
    if field.kind == "choice" and isinstance(value, str):  # one of the field's choices: a word
        return value
    if field.kind == "name" and isinstance(value, str):
        return _name(value)
    if field.kind == "duration":
        return f"{_plain(value)}s"
    if field.kind == "rate":
        return _rate(value)
    if isinstance(value, type) and issubclass(value, BaseException):
        return exception_name(value)
    if field.kind in ("exceptions", "exception") and isinstance(value, tuple):
        names = [exception_name(item) for item in value]
        return names[0] if len(names) == 1 else f"[{', '.join(names)}]"
    if field.kind == "number" and isinstance(value, float):
        return _plain(value)
    return _shown(value)


def _plain(value: float) -> str:
    """``value`` in full, as a plain decimal that reads back as the same float (``0.00001``, ``60``).

    The shortest digits that give ``value`` back (its ``repr``), without an exponent (a duration or a
    rate string has none) or a trailing ``.0``: never rounded, so that a value shown is the value loaded.
    """
    if not math.isfinite(value):
        return repr(value)
    if value == 0:  # -0.0 too: a duration string refuses the sign
        return "0"
    text = format(Decimal(repr(value)), "f")
    return text.removesuffix(".0") if "." in text else text


def _rate(value: float) -> str:
    """A rate as the shortest of ``<n>/s``, ``<n>/m``, ``<n>/h`` that reads back as ``value`` (``100/m``)."""
    shown = [f"{_plain(value * per)}/{unit}" for unit, per in (("s", 1), ("m", 60), ("h", 3600))]
    exact = [text for text in shown if _reads_back(text, value)]
    return min(exact, key=len) if exact else shown[0]


def _reads_back(text: str, value: float) -> bool:
    try:
        return parse_rate(text) == value
    except ValueError:  # a rate past a float's range: not a way to write it
        return False


def _shown(value: object) -> str:
    """``value`` as :func:`_flow` writes it, or, past :data:`MAX_SHOWN` characters, cut (``...``)."""
    parts: list[str] = []
    try:
        _flow(value, parts, [0])
    except _TooLong:
        return "".join(parts)[:MAX_SHOWN] + "..."
    except _NotWritable:
        return describe(value)
    return "".join(parts)


class _TooLong(Exception):  # noqa: N818 - a signal, not an error
    """The value's text passed :data:`MAX_SHOWN` characters."""


class _NotWritable(Exception):  # noqa: N818 - a signal, not an error
    """The value holds something a file cannot write (a YAML timestamp, bytes): shown by its repr."""


def _flow(value: object, parts: list[str], length: list[int]) -> None:
    """Append ``value`` as YAML 1.2 writes it in a flow, which reads back the same value and type.

    ``null``, ``true``, an int, a float as its ``repr`` (``2.0``, ``1e-05``) or ``.nan``, ``.inf``,
    ``-.inf``; a string double-quoted (:func:`_quoted`); a list in brackets, a mapping in braces.

    Raises:
        _TooLong: The text passed :data:`MAX_SHOWN` characters (what was written stays in ``parts``).
        _NotWritable: ``value`` holds a type a file writes only with a tag.
    """
    if isinstance(value, list):
        text = "["
    elif isinstance(value, dict):
        text = "{"
    else:
        text = _scalar(value)
    parts.append(text)
    length[0] += len(text)
    if length[0] > MAX_SHOWN:
        raise _TooLong
    if isinstance(value, list):
        for index, item in enumerate(value):
            if index:
                parts.append(", ")
            _flow(item, parts, length)
        parts.append("]")
    elif isinstance(value, dict):
        for index, (key, item) in enumerate(value.items()):
            if index:
                parts.append(", ")
            _flow(key, parts, length)
            parts.append(": ")
            _flow(item, parts, length)
        parts.append("}")


def _scalar(value: object) -> str:  # noqa: PLR0911 - one return per kind of scalar
    """A scalar as YAML 1.2's core schema reads it back (:func:`_flow`).

    Raises:
        _NotWritable: ``value`` is of a type a file writes only with a tag.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    raise _NotWritable


def _quoted(text: str) -> str:
    r"""``text`` as a YAML double-quoted string, which reads back as ``text``.

    ``\`` and ``"`` escaped; a tab, a line break and any other character that is not printable (a
    control or format character) by its escape: ``\t``, ``\n``, ``\x1c``, ``\u200b``.
    """
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
    out.append('"')
    return "".join(out)


_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
"""The short escapes of YAML's double-quoted strings (and Python's) for the usual control characters."""
