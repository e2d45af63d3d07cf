"""requests' ResilientAdapter: the policy alone sends a request again, never urllib3 inside it."""

from __future__ import annotations

import pickle
from typing import Any

import httpx
import pytest
import requests
from support import ScriptedHTTPServer
from urllib3.util import Retry

from otel_resilience import HedgingConfig, ResilienceConfig, ResilienceManager
from otel_resilience.integrations.http import http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter


@pytest.mark.parametrize(
    "retries",
    [3, True, None, Retry(total=3, status_forcelist=[503], allowed_methods=None), Retry(0)],
)
def test_max_retries_other_than_zero_is_refused(retries: Any) -> None:
    """urllib3's retries would send a POST again inside one attempt: refused at construction."""
    with pytest.raises(ValueError, match=r"ResilientAdapter\.max_retries"):
        ResilientAdapter(
            ResilienceConfig(name="downstream"), manager=ResilienceManager(), max_retries=retries
        )


def test_max_retries_zero_and_other_adapter_options_are_passed_on() -> None:
    """0 (HTTPAdapter's default) is accepted; the pool options reach HTTPAdapter."""
    adapter = ResilientAdapter(
        ResilienceConfig(name="downstream"), manager=ResilienceManager(), max_retries=0, pool_maxsize=3
    )
    assert adapter.max_retries.total == 0
    assert adapter._pool_maxsize == 3


@pytest.mark.parametrize("make", [ResilientAdapter, ResilientTransport])
def test_a_sync_client_refuses_a_policy_that_hedges_at_construction(make: Any) -> None:
    """Hedging is async only: a sync client says so when it is made, not at its first request."""
    config = ResilienceConfig(name=f"hedged-{make.__name__}", hedging=HedgingConfig(delay=0.1))
    with pytest.raises(ValueError, match="hedging is async only"):
        make(config, manager=ResilienceManager())
    handle = ResilienceManager().policy(f"hedged-{make.__name__}", config, adapt=http_config)
    with pytest.raises(ValueError, match="hedging is async only"):
        make(handle)
    AsyncResilientTransport(
        config, httpx.MockTransport(lambda _: httpx.Response(200)), manager=ResilienceManager()
    )


@pytest.mark.parametrize(
    ("option", "value", "kind"),
    [
        ("pool_maxsize", 2.5, TypeError),  # every request failed: range() takes no float
        ("pool_maxsize", float("nan"), TypeError),
        ("pool_maxsize", True, TypeError),
        ("pool_maxsize", "3", TypeError),
        ("pool_maxsize", 0, ValueError),  # with pool_block=True every request waited until its deadline
        ("pool_maxsize", -1, ValueError),
        ("pool_maxsize", 10**30, ValueError),
        ("pool_connections", float("nan"), TypeError),
        ("pool_connections", False, TypeError),
        ("pool_connections", 0, ValueError),
        ("pool_block", "no", TypeError),  # true: the pools would block
        ("pool_block", 1, TypeError),
        ("pool_block", None, TypeError),
    ],
)
def test_a_pool_option_of_the_wrong_type_or_value_is_refused_naming_it(
    option: str, value: Any, kind: type[Exception]
) -> None:
    """HTTPAdapter checks none of its pool options: a float pool size failed every request with
    urllib3's ``TypeError``, a size of 0 under ``pool_block=True`` made every request wait until
    its deadline, and a string ``pool_block`` was read by its truth. Refused when the adapter is
    made, naming the option."""
    with pytest.raises(kind, match=rf"ResilientAdapter\.{option} must be"):
        ResilientAdapter(ResilienceConfig(name="downstream"), manager=ResilienceManager(), **{option: value})


def test_valid_pool_options_are_passed_on() -> None:
    adapter = ResilientAdapter(
        ResilienceConfig(name="downstream"),
        manager=ResilienceManager(),
        pool_connections=1,
        pool_maxsize=1,
        pool_block=True,
    )
    assert (adapter._pool_connections, adapter._pool_maxsize, adapter._pool_block) == (1, 1, True)


@pytest.mark.parametrize(
    "retries", [3, True, None, Retry(total=3, status_forcelist=[503], allowed_methods=None), Retry(0)]
)
def test_max_retries_set_after_construction_is_refused_too(retries: Any, server: ScriptedHTTPServer) -> None:
    """``adapter.max_retries = Retry(...)`` (requests' other idiom) would have urllib3 send a POST
    4 times in one attempt: refused as at construction, naming it, the adapter's retries left at 0."""
    adapter = ResilientAdapter(ResilienceConfig(name="downstream"), manager=ResilienceManager())
    with pytest.raises(ValueError, match=r"ResilientAdapter\.max_retries"):
        adapter.max_retries = retries
    assert (adapter.max_retries.total, adapter.max_retries.read) == (0, False)
    server.script("/orders", *[(503, {})] * 4)
    with requests.Session() as session:
        session.mount("http://", adapter)
        assert session.post(f"{server.url}/orders", data=b"{}").status_code == 503
    assert server.count("/orders") == 1


def test_max_retries_set_to_zero_after_construction_keeps_the_adapters_own() -> None:
    """0 is what the adapter has: it keeps requests' own ``Retry(0, read=False)``; a copy keeps it too."""
    adapter = ResilientAdapter(ResilienceConfig(name="downstream"))  # no manager: it pickles
    own = adapter.max_retries
    adapter.max_retries = 0
    assert adapter.max_retries is own
    copied = pickle.loads(pickle.dumps(adapter))
    assert (copied.max_retries.total, copied.max_retries.read) == (0, False)
