"""A short account of a loaded file: each policy with the settings it changes from the defaults.

What ``otel-resilience check PATH`` prints for the repository's ``resilience.yaml``: its header,
its budget and one of its four policy lines, cut at ``...``::

    resilience.yaml: 4 policies, 1 retry budget (settings that differ from the defaults)
      retry budget shared: ratio=0.2 min_retries_per_second=1 window=60s
      ml_service: circuit_breaker(timeout=120s) retry_policy(initial_delay=2s budget=shared) ...

Each value is shown as loaded, never rounded, in a form a file may write that reads back the same:
durations in seconds, rates per second, minute or hour (``100/m``), exception classes by name.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
from decimal import Decimal
from typing import Any, Final

from otel_resilience.config.fields import POLICY, RETRY_BUDGET, Field, Section
from otel_resilience.config.loader import ConfigFile
from otel_resilience.config.values import exception_name, parse_rate
from otel_resilience.engine.validation import Derived, describe
from otel_resilience.patterns.retry import RetryBudget

__all__ = ["summary"]


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
    """A policy's or a budget's name as the account shows it, quoted if it is not printable.

    A line break (or another character that is not printable) in a name would otherwise let it
    pass for another line of the account.
    """
    return name if name.isprintable() else repr(name)


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
    if field.kind == "duration":
        return f"{_plain(value)}s"
    if field.kind == "rate":
        return _rate(value)
    if isinstance(value, type) and issubclass(value, BaseException):
        return exception_name(value)
    if isinstance(value, tuple) and all(
        isinstance(item, type) and issubclass(item, BaseException) for item in value
    ):
        return "|".join(exception_name(item) for item in value)
    if isinstance(value, float):
        return _plain(value)
    return describe(value)


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
