"""httpx transports that run every request under a policy (extra ``httpx``).

::

    policy = ResilienceConfig(
        name="payments",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=10.0),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.2, max_delay=5.0),
        timeout=3.0,
    )
    client = httpx.AsyncClient(transport=AsyncResilientTransport(policy))

Each request is one execution of the policy and each send one attempt; see
:mod:`otel_resilience.integrations.http` for which responses are failures, which requests are
retried (mark one with ``extensions={RETRYABLE: True}`` or an ``Idempotency-Key`` header),
``Retry-After``, the deadline passed on as the request's timeout, and the breaker per host.
Each send sets the request extension :data:`~otel_resilience.integrations.http.RESEND_COUNT`;
with the OpenTelemetry httpx instrumentation, pass
:func:`~otel_resilience.integrations.http.resend_count_hook` as its request hook to put
``http.request.resend_count`` on the client spans of retries.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

import httpx

from otel_resilience.integrations.http import (
    RESEND_COUNT,
    RETRYABLE,
    FailedResponseError,
    HttpOptions,
    HttpPolicy,
    PolicyHandleLike,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager

__all__ = ["RETRYABLE", "AsyncResilientTransport", "ResilientTransport"]

T = TypeVar("T")
_PHASES = ("connect", "read", "write", "pool")
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError,)


def _host(url: httpx.URL) -> str:
    """The host key of a request: ``host`` or ``host:port`` when the port is not the default."""
    return url.host if url.port is None else f"{url.host}:{url.port}"


def _judge(http: HttpPolicy, request: httpx.Request) -> bool:
    """Return whether ``request`` may be sent more than once."""
    body_replayable = isinstance(request.stream, httpx.ByteStream)
    return http.replayable(
        request.method, request.headers, request.extensions.get(RETRYABLE), body_replayable
    )


def _prepare(http: HttpPolicy, request: httpx.Request, resend_count: int) -> None:
    """Mark the send's resend count, and cap every timeout phase by what is left of the deadline."""
    extensions: dict[str, Any] = dict(request.extensions)
    extensions[RESEND_COUNT] = resend_count
    left = http.timeout_left()
    if left is not None:
        timeout = extensions.get("timeout") or {}
        extensions["timeout"] = {
            phase: left if timeout.get(phase) is None else min(timeout[phase], left) for phase in _PHASES
        }
    request.extensions = extensions


class _Wrapping(Generic[T]):
    """What both transports hold: the policy's HTTP rules and the transport that sends.

    Args:
        policy: A :class:`~otel_resilience.ResilienceConfig` (or a policy handle).
        transport: The transport that sends (default: a new one of the class's default kind).
        options: How requests are judged (:class:`~otel_resilience.integrations.http.HttpOptions`).
        manager: The manager keeping breakers and bulkheads (default: the process-wide one).

    Raises:
        TypeError: ``policy`` or ``options`` has the wrong type.
    """

    _default: ClassVar[type[Any]]

    def __init__(
        self,
        policy: ResilienceConfig | PolicyHandleLike,
        transport: T | None = None,
        *,
        options: HttpOptions | None = None,
        manager: ResilienceManager | None = None,
    ) -> None:
        self._http = HttpPolicy(policy, options, manager, _TRANSPORT_ERRORS)
        self._transport: T = transport if transport is not None else self._default()


class ResilientTransport(_Wrapping[httpx.BaseTransport], httpx.BaseTransport):
    """An httpx transport that sends each request under ``policy``, through ``transport``.

    Takes ``policy``, ``transport`` (default: a new ``httpx.HTTPTransport()``), ``options`` and
    ``manager``, as described on its base.
    """

    _default = httpx.HTTPTransport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http, transport = self._http, self._transport

        def attempt(resend_count: int) -> httpx.Response:
            _prepare(http, request, resend_count)
            response = transport.handle_request(request)
            if http.is_failure(response.status_code):
                try:
                    response.read()
                finally:
                    response.close()
                raise FailedResponseError(response, response.status_code)
            return response

        return http.send_sync(_host(request.url), _judge(http, request), attempt)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()


class AsyncResilientTransport(_Wrapping[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport):
    """An async httpx transport that sends each request under ``policy``; as :class:`ResilientTransport`.

    Its default ``transport`` is a new ``httpx.AsyncHTTPTransport()``.
    """

    _default = httpx.AsyncHTTPTransport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http, transport = self._http, self._transport

        async def attempt(resend_count: int) -> httpx.Response:
            _prepare(http, request, resend_count)
            response = await transport.handle_async_request(request)
            if http.is_failure(response.status_code):
                try:
                    await response.aread()
                finally:
                    await response.aclose()
                raise FailedResponseError(response, response.status_code)
            return response

        return await http.send(_host(request.url), _judge(http, request), attempt)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()
