"""The HTTP rules around a user's retry policy compare by what they wrap, so a reload changes nothing that did not change."""

from __future__ import annotations

import pickle
from typing import Any

import httpx

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.http import HttpRetryOn, HttpRetryOnResult, http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport


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


class Pending:
    """A user's ``retry_on_result`` that retries a 202 and wants to hear of each response dropped."""

    def __init__(self, *, awaited: bool = False) -> None:
        self.awaited = awaited
        self.told: list[tuple[int, bool]] = []

    def __call__(self, response: Any) -> bool:
        return response.status_code == 202

    def dropped(self, response: Any) -> Any:
        self.told.append((response.status_code, response.is_closed))
        if not self.awaited:
            return None

        async def later() -> None:
            self.told.append((0, False))

        return later()


def _jobs(downstream_calls: list[int]) -> Any:
    def downstream(request: httpx.Request) -> httpx.Response:
        downstream_calls.append(1)
        status = 202 if len(downstream_calls) == 1 else 200
        return httpx.Response(status, stream=httpx.ByteStream(b"job"), request=request)  # open until read

    return downstream


def _retrying(predicate: Pending) -> ResilienceConfig:
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, jitter="none", retry_on_result=predicate)
    return ResilienceConfig(name=f"jobs-{id(predicate)}", retry_policy=policy)


def test_a_users_predicate_is_told_of_the_response_a_sync_client_dropped() -> None:
    """Under the HTTP rule, the user's ``retry_on_result.dropped`` still hears of the retried response, open."""
    predicate, calls = Pending(), []
    transport = ResilientTransport(
        _retrying(predicate), httpx.MockTransport(_jobs(calls)), manager=ResilienceManager()
    )
    with httpx.Client(transport=transport) as client:
        assert client.get("http://api.test/job").status_code == 200
    assert predicate.told == [(202, False)]
    assert len(calls) == 2


async def test_a_users_async_predicate_is_told_of_the_response_an_async_client_dropped() -> None:
    """The user's awaitable is awaited beside the close of the response (an async client's)."""
    predicate, calls = Pending(awaited=True), []
    transport = AsyncResilientTransport(
        _retrying(predicate), httpx.MockTransport(_jobs(calls)), manager=ResilienceManager()
    )
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://api.test/job")).status_code == 200
    assert predicate.told == [(202, False), (0, False)]
    assert len(calls) == 2


def _always_pending(downstream_calls: list[int]) -> Any:
    def downstream(request: httpx.Request) -> httpx.Response:
        downstream_calls.append(1)
        return httpx.Response(202, stream=httpx.ByteStream(b"job"), request=request)

    return downstream


def _judged(stats: dict[str, Any]) -> tuple[int, int]:
    executions = stats["executions"]
    return executions["failed"], executions["successful"]


def test_a_response_the_users_predicate_rejects_fails_a_request_sent_once_without_a_resend() -> None:
    """A POST is never sent again, but its response is still judged: the predicate's reject is a failure.

    It is returned to the caller, open, and never told dropped; a GET's is retried as before.
    """
    predicate, calls = Pending(), []
    manager = ResilienceManager()
    config = _retrying(predicate)
    transport = ResilientTransport(config, httpx.MockTransport(_always_pending(calls)), manager=manager)
    with httpx.Client(transport=transport) as client:
        posted = client.post("http://api.test/job")
        assert (posted.status_code, posted.read()) == (202, b"job")
        assert len(calls) == 1
        assert _judged(manager.policy(config.name or "").get_stats()) == (1, 0)
        assert client.get("http://api.test/job").status_code == 202
    assert len(calls) == 3
    assert predicate.told == [(202, False)]  # the GET's first response only
    assert _judged(manager.policy(config.name or "").get_stats()) == (2, 0)


async def test_an_async_client_judges_the_response_of_a_request_sent_once_too() -> None:
    """As the sync client: the POST's rejected response is a failure, sent once, returned."""
    predicate, calls = Pending(), []
    manager = ResilienceManager()
    config = _retrying(predicate)
    transport = AsyncResilientTransport(config, httpx.MockTransport(_always_pending(calls)), manager=manager)
    async with httpx.AsyncClient(transport=transport) as client:
        posted = await client.post("http://api.test/job")
        assert (posted.status_code, await posted.aread()) == (202, b"job")
    assert len(calls) == 1
    assert predicate.told == []
    assert _judged(manager.policy(config.name or "").get_stats()) == (1, 0)
