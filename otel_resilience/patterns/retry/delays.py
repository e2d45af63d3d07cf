"""Delays taken from the outcome: an error's ``retry_after``, an HTTP ``Retry-After`` header.

:func:`retry_after_delay` is a ready ``delay_from`` for :class:`~otel_resilience.patterns.retry.RetryPolicy`;
:func:`parse_retry_after` reads one ``Retry-After`` value. Neither imports an HTTP client: the
objects are read by their attributes only.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final

from otel_resilience.engine.validation import fail

__all__ = ["parse_retry_after", "retry_after_delay"]

_HEADER: Final = "Retry-After"
_PARSE: Final = "parse_retry_after"
_DELTA_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
"""delta-seconds: ASCII digits, a decimal fraction allowed (no sign, exponent, ``_`` or other digits)."""


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """Return the seconds an HTTP ``Retry-After`` value asks to wait, or ``None`` if it is not one.

    The value is delta-seconds (``"120"``; a decimal such as ``"1.5"`` is accepted too; ASCII
    digits only: ``"-1"``, ``"+5"``, ``"1e3"`` or ``"1_0"`` is none) or an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``, read with :func:`email.utils.parsedate_to_datetime`; a
    date without a zone is taken as UTC). A date in the past asks for no wait: 0.0. A value
    with more than one comma is none: an HTTP date has one at most, and values joined (a field
    sent more than once, ``"<date>, <date>"``) are no value, though the date parser reads the
    first date of them.

    Args:
        value: The header's value.
        now: The current time for a date (default: the system's UTC time); without a zone, UTC
            (as a date without one).

    Returns:
        Seconds ``>= 0``, or ``None`` when the value is neither form (or a negative number, or
        ``inf``/``nan``). Delta-seconds too many digits for a float are ``inf``: longer than any
        ``max_delay``, so retrying gives up, as for any value over it.

    Raises:
        TypeError: ``value`` is not a ``str``, or ``now`` neither a ``datetime`` nor ``None``
            (whether or not the value is a date).
    """
    if not isinstance(value, str):
        raise fail(_PARSE, "value", "a str", value, kind=TypeError)
    if now is not None and not isinstance(now, datetime):
        raise fail(_PARSE, "now", "a datetime or None", now, kind=TypeError)
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else math.inf  # past the float range: still valid
    if text.count(",") > 1:  # joined values: parsedate_to_datetime would read the first date
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    current = datetime.now(timezone.utc) if now is None else _utc(now)
    return max(0.0, (_utc(when) - current).total_seconds())


def _utc(moment: datetime) -> datetime:
    """Return ``moment``, taken as UTC when it has no zone (a ``Retry-After`` date, a ``now``)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def seconds_of(value: object) -> float | None:
    """Return a number (not a ``bool``) or a ``timedelta`` as float seconds; ``None`` for anything else.

    The one rule of a delay given as a value (an outcome's ``retry_after``, what ``delay_from``
    returned). An ``int`` too large for a float is ``inf`` (``-inf`` when negative), as
    delta-seconds with too many digits are: longer than any ``max_delay``, never an
    ``OverflowError`` and never no delay at all. The sign and NaN are left to the caller.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, timedelta):
        return value.total_seconds()
    return None


def _seconds(value: object) -> float | None:
    """Return ``value`` as seconds ``>= 0`` (a number, a ``timedelta`` or a header string), else ``None``."""
    seconds = parse_retry_after(value) if isinstance(value, str) else seconds_of(value)
    return seconds if seconds is not None and seconds >= 0 else None  # NaN is not >= 0


def _header(headers: object) -> object:
    """Return the ``Retry-After`` value of a headers mapping (case-insensitive or not), or ``None``.

    A field sent more than once is read as every client that joins repeated fields gives it
    (httpx's and requests' headers): its values in one, comma-separated, which is no
    ``Retry-After`` value (a singleton field given twice), whatever the mapping. A multi-valued
    one (aiohttp's ``CIMultiDict``, ``getall``; an ``email.message.Message``, ``get_all``) would
    otherwise give its first value alone.
    """
    every = getattr(headers, "getall", None) or getattr(headers, "get_all", None)
    if every is not None:
        values = every(_HEADER, None)
        return None if not values else ", ".join(values)
    get = getattr(headers, "get", None)
    if get is None:
        return None
    value = get(_HEADER)
    if value is None:
        value = get(_HEADER.lower())
    return value


def retry_after_delay(outcome: Any) -> float | None:
    """Return the delay an error (or a retried result) asks for: its ``retry_after``, or ``Retry-After``.

    A ready :attr:`RetryPolicy.delay_from <otel_resilience.patterns.retry.RetryPolicy.delay_from>`. It is
    **not** the default (``delay_from=None`` keeps the strategy's delays); pass it to honour what
    the other side says::

        RetryPolicy(delay_from=retry_after_delay, max_delay=30.0)

    It reads, in order, and returns the first that gives seconds:

    1. ``outcome.retry_after``: seconds (a number, a ``timedelta`` or a header string), as our
       :class:`~otel_resilience.errors.CircuitOpenError` carries (``inf`` while forced open:
       over any ``max_delay``, so retrying gives up) and as a rate limiter's rejection does;
    2. the ``Retry-After`` header of ``outcome.response.headers``: the response attached to an
       ``httpx.HTTPStatusError`` or a ``requests.HTTPError``;
    3. the ``Retry-After`` header of ``outcome.headers``: aiohttp's ``ClientResponseError``, or
       a retried response object itself (``retry_on_result``).

    A header sent more than once is no value (a singleton field: its values joined, as httpx
    and requests give them, whatever the headers object).

    No HTTP client is imported: these are read as attributes, and anything that fails to read
    (a missing attribute, a property that raises, a value in no known form) counts as absent.

    Args:
        outcome: The failed attempt's error, or the retried result.

    Returns:
        Seconds ``>= 0`` (possibly ``inf``), or ``None`` to fall back to the policy's strategy.
    """
    try:
        seconds = _seconds(getattr(outcome, "retry_after", None))
        if seconds is not None:
            return seconds
        response = getattr(outcome, "response", None)
        if response is not None:
            seconds = _seconds(_header(getattr(response, "headers", None)))
            if seconds is not None:
                return seconds
        return _seconds(_header(getattr(outcome, "headers", None)))
    except Exception:  # noqa: BLE001 - a foreign object that cannot be read asks for nothing
        return None
