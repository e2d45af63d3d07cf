"""Every HTTP client integration refuses a ``manager`` that is not one, naming the argument."""

from __future__ import annotations

from typing import Any

import pytest

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

CLIENTS = pytest.mark.parametrize(
    "client", [ResilientTransport, AsyncResilientTransport, ResilientAdapter, ResilientMiddleware]
)


@CLIENTS
def test_a_manager_that_is_not_one_is_a_type_error(client: Any) -> None:
    """With a config: a TypeError naming ``HttpPolicy.manager``, not an AttributeError from inside."""
    with pytest.raises(TypeError, match=r"HttpPolicy\.manager must be a ResilienceManager or None"):
        client(ResilienceConfig(name="inventory"), manager="inventory")


@CLIENTS
def test_a_manager_that_is_not_one_is_refused_beside_a_handle_too(client: Any) -> None:
    """With a handle the manager is not used, but a wrong one is still refused, not ignored."""
    handle = ResilienceManager().policy("inventory", ResilienceConfig(), adapt=http_config)
    with pytest.raises(TypeError, match=r"HttpPolicy\.manager"):
        client(handle, manager={"name": "inventory"})


@pytest.mark.parametrize("client", [ResilientTransport, AsyncResilientTransport, ResilientMiddleware])
def test_a_keyword_the_client_does_not_take_is_named(client: Any) -> None:
    """A misspelt keyword is named as Python names one (the middleware said ``object.__init__()``)."""
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'optoins'"):
        client(ResilienceConfig(name="inventory"), optoins=None)
