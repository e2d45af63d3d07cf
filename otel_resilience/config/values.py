"""The values a file writes as text: durations, rates and exception classes.

Each parser raises ``ValueError`` with a reason worded to follow a path (``"must be ..., got
..."``); the reader adds the path and the line. The patterns are the ones the JSON Schema
states, so that an editor and the loader accept the same strings.
"""

from __future__ import annotations

import builtins
import functools
import math
import pkgutil
import re
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Final

from otel_resilience.engine.validation import describe

__all__ = [
    "DURATION_PATTERN",
    "EXCEPTION_PATTERN",
    "POSITIVE_DURATION_PATTERN",
    "POSITIVE_RATE_PATTERN",
    "RATE_PATTERN",
    "duration_at_least",
    "exception_name",
    "parse_duration",
    "parse_integer",
    "parse_rate",
    "resolve_exception",
]

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
"""Seconds per unit of a duration string."""
_SPACE: Final = r"[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
"""A space around a duration or a rate: one that Python's ``\\s`` and ECMAScript's (an editor's,
matching the schema's patterns) both match. Not ``\\s`` itself, which differs between them:
Python's matches ``\\x1c``-``\\x1f`` and ``\\x85``, ECMAScript's ``\\ufeff``."""
_PART: Final = r"[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h)"
DURATION_PATTERN: Final = rf"^{_SPACE}*(?:{_PART})+{_SPACE}*$"
"""A duration string: one or more ``<number><unit>`` with unit ``ms``, ``s``, ``m`` or ``h``
(``"250ms"``, ``"2s"``, ``"1.5m"``, ``"1h30m"``), spaces around it allowed."""
RATE_PATTERN: Final = rf"^{_SPACE}*[0-9]+(?:\.[0-9]+)?/(?:s|m|h){_SPACE}*$"
"""A rate string: ``<number>/<unit>``, permits per second, minute or hour (``"100/m"``), spaces
around it allowed."""
_NOT_ZERO: Final = r"(?=[^1-9]*[1-9])"
"""Some digit is not 0: the value of a duration or rate string (only digits, units, dots and
spaces) is above zero."""
POSITIVE_DURATION_PATTERN: Final = f"^{_NOT_ZERO}{DURATION_PATTERN[1:]}"
"""A duration string above zero, for a field that must be ``> 0`` (``"0s"`` and ``"0ms"`` are not)."""
POSITIVE_RATE_PATTERN: Final = f"^{_NOT_ZERO}{RATE_PATTERN[1:]}"
"""A rate string above zero (``"0/s"`` is not)."""
_IDENTIFIER: Final = r"[A-Za-z_][A-Za-z0-9_]*"
EXCEPTION_PATTERN: Final = (
    rf"^{_IDENTIFIER}(?:\.{_IDENTIFIER})*(?::{_IDENTIFIER}(?:\.{_IDENTIFIER})*)?(?!\n)$"
)
"""An exception class by name: a built-in (``"ConnectionError"``) or a dotted path
(``"httpx.ConnectTimeout"``, ``"package.module:Outer.Inner"``). ``(?!\n)`` before ``$``: Python's
``$`` (a validator that matches with ``re.search``) also matches before a final line break,
ECMAScript's (an editor's) does not; neither takes ``"ConnectionError\n"``, which the loader refuses."""


@functools.cache
def duration_at_least(minimum: float) -> str:
    """The pattern of a duration string that reads as at least ``minimum`` seconds (``minimum > 0``).

    For a field whose least value is its own (a retry budget's window: a microsecond per bucket),
    which the schema states for an editor and the loader checks: the same pattern, so that both
    refuse ``"0.009ms"``. A pattern cannot add numbers up, so one part alone must reach the least
    value (``"0.005ms0.005ms"`` is refused, ``"0.01ms"`` and ``"1s0.001ms"`` are not). Each unit's
    least number is the decimal whose seconds, as :func:`parse_duration` computes them, are at least
    ``minimum``: a string the pattern takes is never refused by the class for being short.

    Raises:
        ValueError: ``minimum`` is not a finite number above zero.
    """
    if not (math.isfinite(minimum) and minimum > 0):
        raise ValueError(f"duration_at_least: minimum must be a finite number above zero, got {minimum!r}")
    parts = "|".join(f"{_number_at_least(_least(minimum, unit))}{unit}" for unit in _UNITS)
    return rf"^{_SPACE}*(?:{_PART})*(?:{parts})(?:{_PART})*{_SPACE}*$"


def _least(minimum: float, unit: str) -> Decimal:
    """The least number of ``unit`` (to 17 significant digits) whose seconds are at least ``minimum``.

    Exact where ``minimum / unit`` is a short decimal; rounded up otherwise, then raised by a last
    digit while the product :func:`parse_duration` computes (``float(number) * unit``) falls short.
    """
    factor = _UNITS[unit]
    with localcontext() as context:
        context.prec, context.rounding = 17, ROUND_CEILING
        least = Decimal(repr(minimum)) / Decimal(repr(factor))
        while float(least) * factor < minimum:
            least = least.next_plus(context)
    return least


def _number_at_least(least: Decimal) -> str:
    """The pattern of a plain decimal number (``12`` or ``12.5``) whose value is at least ``least``."""
    whole, _, fraction = format(least, "f").partition(".")
    whole, fraction = whole.lstrip("0"), fraction.rstrip("0")
    digits = len(whole)
    larger = [f"[1-9][0-9]{{{digits},}}"]  # more digits
    for place, digit in enumerate(whole):  # as many digits, the first that differs larger
        if digit != "9":
            rest = digits - place - 1
            larger.append(f"{whole[:place]}[{int(digit) + 1}-9][0-9]{{{rest}}}")
    same = f"0*{whole}" if whole else "0+"
    if not fraction:
        return rf"(?:0*(?:{'|'.join(larger)})(?:\.[0-9]+)?|{same}(?:\.[0-9]+)?)"
    above = [f"{fraction}[0-9]*"]  # the fraction itself, or one larger at its first differing digit
    for place, digit in enumerate(fraction):
        if digit != "9":
            above.append(f"{fraction[:place]}[{int(digit) + 1}-9][0-9]*")
    return rf"(?:0*(?:{'|'.join(larger)})(?:\.[0-9]+)?|{same}\.(?:{'|'.join(above)}))"


_CLOCK: Final = re.compile(r"[0-9]+:[0-5]?[0-9]")
"""``1:30``: minutes and seconds, or hours and minutes (a duration string says which, with units)."""
_DURATION_PARTS: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_RULE: Final = "a duration: seconds as a number, or a string such as '250ms', '2s', '2m', '1h30m'"
_RATE_RULE: Final = "a rate: permits per second as a number, or a string such as '5/s', '100/m', '1000/h'"


def parse_duration(value: object) -> float:
    """Return a duration in seconds: a number as is, or a string with units.

    A string is one or more ``<number><unit>`` (units ``ms``, ``s``, ``m``, ``h``): ``"250ms"``
    is 0.25, ``"2m"`` 120.0, ``"1h30m"`` 5400.0. A number is seconds, returned as a ``float``
    whatever its sign, and a duration string after a minus sign as its negative (the config class
    judges the range, with its own rule: ``> 0`` or ``>= 0``).

    Args:
        value: What the file holds.

    Returns:
        Seconds.

    Raises:
        ValueError: ``value`` is a string that is not a duration (a bare number in quotes, an
            unknown unit ...).
        TypeError: ``value`` is neither a number nor a string (a bool, a list ...).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"must be {_DURATION_RULE}, got {describe(value)} (too large)") from None
    if not isinstance(value, str):
        raise TypeError(f"must be {_DURATION_RULE}, got {describe(value)} ({type(value).__name__})")
    if not re.fullmatch(DURATION_PATTERN[1:-1], value):
        text = value.strip()
        negative = text.startswith("-") and re.fullmatch(DURATION_PATTERN[1:-1], text[1:])
        if negative and (seconds := parse_duration(text[1:])):  # its field's own rule refuses it
            return -seconds
        plain = _plain_number(text)
        hint = f" (write {plain} for seconds, or add a unit: '{plain}s')" if plain is not None else ""
        if _CLOCK.fullmatch(text):  # 90 s in YAML 1.1 (base 60): the writer says which units
            minutes, hours = text.replace(":", "m") + "s", text.replace(":", "h") + "m"
            hint = f" (write it with units: '{minutes}' or '{hours}')"
        raise ValueError(f"must be {_DURATION_RULE}, got {value!r}{hint}")
    seconds = sum(float(number) * _UNITS[unit] for number, unit in _DURATION_PARTS.findall(value))
    if math.isinf(seconds):
        raise ValueError(f"must be a finite duration, got {value!r}")
    return seconds


def parse_rate(value: object) -> object:
    """Return a rate in permits per second from ``"<number>/<unit>"``; anything else unchanged.

    ``"100/m"`` is ``100 / 60``; units ``s``, ``m`` and ``h``. A number (or any value that is
    not a string) is returned unchanged: the config class judges it, with its own message.

    Raises:
        ValueError: ``value`` is a string that is not a rate.
    """
    if not isinstance(value, str):
        return value
    if not re.fullmatch(RATE_PATTERN[1:-1], value):
        raise ValueError(f"must be {_RATE_RULE}, got {value!r}")
    number, unit = value.strip().split("/")
    return float(number) / _UNITS[unit]


def parse_integer(value: object) -> object:
    """Return a number with a zero fractional part (``3.0``, ``1e1``) as that ``int``, else ``value``.

    JSON Schema calls such a number an integer (JSON, and an editor that validates YAML or TOML
    against the schema, do not tell ``3.0`` from ``3``), so a file may write an integer setting
    either way. Anything else (``3.5``, a string, ``inf``) is returned unchanged: the config class
    judges it, with its own message.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def resolve_exception(name: object) -> type[BaseException]:
    """Return the exception class ``name`` names: a built-in, or a dotted path that is imported.

    ``"ConnectionError"`` is the built-in; ``"httpx.ConnectTimeout"`` imports ``httpx`` and
    reads ``ConnectTimeout``; ``"package.module:Outer.Inner"`` marks where the module ends (as
    ``pkgutil.resolve_name`` reads it). Naming a module imports it: a configuration file is
    trusted like code.

    Raises:
        ValueError: ``name`` is not a string of that shape, or cannot be imported.
        TypeError: ``name`` is not a string, or names something that is not an exception class.
    """
    if not isinstance(name, str):
        raise TypeError(f"must be an exception class by name, got {describe(name)} ({type(name).__name__})")
    if not re.fullmatch(EXCEPTION_PATTERN[1:-1], name):
        rule = "an exception class by name ('ConnectionError', 'httpx.ConnectTimeout')"
        raise ValueError(f"must be {rule}, got {name!r}")
    if "." not in name and ":" not in name:
        found = getattr(builtins, name, None)
        if found is None:
            raise ValueError(
                f"must name a built-in exception or a dotted path ('package.module.{name}'), got {name!r}"
            )
    else:
        try:
            found = pkgutil.resolve_name(name)
        except Exception as error:  # noqa: BLE001 - whatever importing the named module raised
            raise ValueError(f"must name an importable exception class, got {name!r}: {error!r}") from None
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise TypeError(f"must name an exception class, got {name!r}, which is {describe(found)}")
    return found


def exception_name(cls: type[BaseException]) -> str:
    """Return the name a file writes for the exception class ``cls`` (:func:`resolve_exception` reads it).

    A built-in by its name (``"ConnectionError"``), any other class by its dotted path
    (``"otel_resilience.errors.OperationTimeoutError"``): never a bare name that a file cannot write,
    or that names a built-in of the same name.
    """
    if cls.__module__ == "builtins":
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain_number(text: str) -> str | None:
    """``text`` as a plain decimal if it is a finite number (a duration without its unit), else ``None``.

    Plain, because a duration string has no exponent (``"1e-3s"`` is refused), and a quoted
    ``"1e-3"`` is a string: the hint must be something that works when written.
    """
    try:
        if not math.isfinite(float(text)):
            return None
        return format(Decimal(text), "f")
    except (ValueError, ArithmeticError):
        return None
