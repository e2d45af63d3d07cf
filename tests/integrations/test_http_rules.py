"""The HTTP rules around a user's retry policy compare by what they wrap, so a reload changes nothing that did not change."""

from __future__ import annotations

import pickle
from typing import Any

from otel_resilience import ResilienceConfig, RetryPolicy
from otel_resilience.integrations.http import HttpRetryOn, HttpRetryOnResult, http_config


def is_none(result: Any) -> bool:
    """A user's ``retry_on_result``: retry an empty answer."""
    return result is None


def test_each_rule_equals_the_same_rule_around_an_equal_base() -> None:
    """HttpRetryOn and HttpRetryOnResult: equal and hashed alike for equal bases, never equal to each other."""
    policy = RetryPolicy(max_attempts=3)
    assert HttpRetryOn(policy) == HttpRetryOn(RetryPolicy(max_attempts=3))
    assert hash(HttpRetryOn(policy)) == hash(HttpRetryOn(RetryPolicy(max_attempts=3)))
    assert HttpRetryOn(policy) != HttpRetryOn(RetryPolicy(max_attempts=4))
    assert HttpRetryOnResult(is_none) == HttpRetryOnResult(is_none)
    assert hash(HttpRetryOnResult(is_none)) == hash(HttpRetryOnResult(is_none))
    assert HttpRetryOnResult(is_none) != HttpRetryOnResult(bool)
    assert HttpRetryOn(is_none) != HttpRetryOnResult(is_none)  # type: ignore[arg-type]
    assert HttpRetryOnResult(is_none) != HttpRetryOn(is_none)  # type: ignore[arg-type]
    assert HttpRetryOn(policy) != policy


def test_each_rule_reads_as_its_class_around_its_base() -> None:
    """The repr names the public class and its base; a pickled rule equals the original."""
    policy = RetryPolicy(max_attempts=3)
    assert repr(HttpRetryOn(policy)) == f"HttpRetryOn({policy!r})"
    assert repr(HttpRetryOnResult(is_none)) == f"HttpRetryOnResult({is_none!r})"
    assert pickle.loads(pickle.dumps(HttpRetryOn(policy))) == HttpRetryOn(policy)
    assert pickle.loads(pickle.dumps(HttpRetryOnResult(is_none))) == HttpRetryOnResult(is_none)


def test_http_config_of_equal_configs_gives_equal_configs() -> None:
    """Two HTTP configs made from equal configs are equal: their rules compare by what they wrap."""

    def config() -> ResilienceConfig:
        return ResilienceConfig(name="api", retry_policy=RetryPolicy(max_attempts=3, retry_on_result=is_none))

    first, second = http_config(config()), http_config(config())
    assert first == second
    assert isinstance(first.retry_policy.retry_on, HttpRetryOn)  # type: ignore[union-attr]
    assert isinstance(first.retry_policy.retry_on_result, HttpRetryOnResult)  # type: ignore[union-attr]
