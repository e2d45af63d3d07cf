"""requests' ResilientAdapter: the policy alone sends a request again, never urllib3 inside it."""

from __future__ import annotations

from typing import Any

import pytest
from urllib3.util import Retry

from otel_resilience import ResilienceConfig, ResilienceManager
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
