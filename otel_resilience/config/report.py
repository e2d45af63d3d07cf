"""A short account of a loaded file: each policy with the settings it changes from the defaults.

What ``otel-resilience check PATH`` prints::

    resilience.yaml: 3 policies, 1 retry budget (settings that differ from the defaults)
      retry budget shared: ratio=0.2 min_retries_per_second=1 window=60s
      ml_service: circuit_breaker(timeout=120s) retry_policy(initial_delay=2s budget=shared) timeout=60s
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from typing import Any, Final

from otel_resilience.config.fields import POLICY, RETRY_BUDGET, Field, Section
from otel_resilience.config.loader import ConfigFile
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
        return f"{value:g}s"
    if field.kind == "rate":
        return f"{value:g}/s"
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, tuple) and all(isinstance(item, type) for item in value):
        return "|".join(item.__name__ for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return describe(value)
