"""The bound of the text the library writes from a user's value: a telemetry value, a message.

The lowest module of the package (below :mod:`otel_resilience.errors`, whose messages name a
key with :func:`key_attribute`): it imports nothing of the package.
"""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["MAX_ATTRIBUTE_LENGTH", "key_attribute", "whole_text"]

MAX_ATTRIBUTE_LENGTH: Final = 256
"""The longest text the library writes as a telemetry value it builds from a user's value (an
alert's subject or attribute, a keyed policy's ``resilience.key``, an exception class's
``error.type``, the key a rejection's message names); longer ones are cut. A name
(:func:`~otel_resilience.engine.validation.check_name`), which becomes
``resilience.policy`` or ``resilience.name``, is configuration: a longer one is refused."""


def whole_text(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: no lone surrogate, which fails every exporter of an attribute.

    The one rule of a telemetry value's text: a configured name holding one is refused
    (:func:`~otel_resilience.engine.validation.check_name`), a key or a name taken from a
    function is written otherwise (:func:`key_attribute`). A Prometheus scrape that meets one
    fails as a whole (``UnicodeEncodeError``): one such value hid every metric of the process.
    """
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_KEY_DIGEST_SIZE: Final = 8
"""Bytes of the digest that ends a cut key (:func:`key_attribute`): 16 hexadecimal digits."""


def key_attribute(key: str) -> str:
    r"""Return the ``resilience.key`` of a keyed policy's key (its text, ``str(key)``): ``key``, or cut.

    A key longer than :data:`MAX_ATTRIBUTE_LENGTH` is cut to that length, ending in ``...#`` and
    16 hexadecimal digits of a digest of the whole key: two keys that differ only past the cut
    are two keys (a breaker each), so they are two values too, never one series made of two
    states. The one rule of the key's span attribute and of its metric attribute, and of a name
    the library takes from a function (:func:`~otel_resilience.engine.naming.callable_name`: a
    policy or a retry named after the function it runs), which cannot be refused as a configured
    name is, and of an alert's summary (made of such values: two subjects, two summaries), and
    of the key a message names (a rejection of a key's breaker, bulkhead or rate limiter: its
    ``key`` field stays whole). Run once per key's pipeline, per policy built or per alert, or
    when a message is shown, never per call.

    A key holding a lone surrogate (text decoded from a request with ``surrogateescape``, a JSON
    ``"\ud800"``) is written with each one escaped (``\ud800``) and ends in that digest too,
    so that it differs from a key written with those characters: as it is, it would fail every
    export of its attribute (:func:`whole_text`).
    """
    whole = whole_text(key)
    if whole and len(key) <= MAX_ATTRIBUTE_LENGTH:
        return key
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=_KEY_DIGEST_SIZE).hexdigest()
    text = key if whole else key.encode("utf-8", "backslashreplace").decode("utf-8")
    return f"{text[: MAX_ATTRIBUTE_LENGTH - 4 - len(digest)]}...#{digest}"
