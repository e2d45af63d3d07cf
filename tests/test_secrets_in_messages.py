"""Errors never show a secret the user gave: a Redis URL's password stays out of every message."""

from __future__ import annotations

import pytest

from otel_resilience import RedisStore

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://app:{SECRET}@cache.internal:not-a-port/0",
        f"redis://:{SECRET}@cache.internal:not-a-port/0",
        f"http://app:{SECRET}@cache.internal:6379/0",
        f"redis://app:{SECRET}:with@signs@cache.internal:not-a-port/0",
        f"redis://cache.internal:not-a-port/0?password={SECRET}&db=0",
        f"app:{SECRET}@cache.internal:6379",
    ],
)
def test_a_refused_redis_url_is_shown_without_its_credentials(url: str) -> None:
    """The ValueError names the field and shows the URL, its user info and password hidden.

    The message (logged by a service that fails to start) carried the URL as given, password
    included.
    """
    with pytest.raises(ValueError, match=r"RedisStore\.from_url\.url must be a Redis URL") as caught:
        RedisStore.from_url(url, namespace="secrets")
    message = str(caught.value)
    assert SECRET not in message
    assert "cache.internal" in message
    assert "***" in message
