"""An aiohttp client middleware that sends every request under a policy (extra ``aiohttp``, >= 3.12).

::

    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(policy),)) as session:
        async with session.get(url) as response:
            ...

Each request is one execution of the policy and each send one attempt; see
:mod:`otel_resilience.integrations.http` for which responses are failures, which requests are
retried (an ``Idempotency-Key`` header marks one), ``Retry-After`` and the breaker per host. A
body from a stream or an async iterator is never retried. The policy's deadline cancels the
request (asyncio), so it never outlives its policy; aiohttp's own timeouts still apply. aiohttp
wraps what a middleware raises as an ``OSError`` in ``ClientOSError``: a deadline reaches the
caller as ``aiohttp.ClientOSError`` whose ``__cause__`` is the
:class:`~otel_resilience.OperationTimeoutError`.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import payload

from otel_resilience.integrations.http import (
    FailedResponseError,
    HttpOptions,
    HttpPolicy,
    PolicyHandleLike,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager

__all__ = ["ResilientMiddleware"]

_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientConnectionError, asyncio.TimeoutError)
_REPLAYABLE_BODIES = (payload.BytesPayload, payload.StringPayload, payload.JsonBytesPayload)


class ResilientMiddleware:
    """An aiohttp client middleware (``ClientSession(middlewares=(...,))``) running requests under ``policy``.

    Args:
        policy: A :class:`~otel_resilience.ResilienceConfig` (or a policy handle).
        options: How requests are judged (:class:`~otel_resilience.integrations.http.HttpOptions`).
        manager: The manager keeping breakers and bulkheads (default: the process-wide one).

    Raises:
        TypeError: ``policy`` or ``options`` has the wrong type.
    """

    __slots__ = ("_http",)

    def __init__(
        self,
        policy: ResilienceConfig | PolicyHandleLike,
        *,
        options: HttpOptions | None = None,
        manager: ResilienceManager | None = None,
    ) -> None:
        self._http = HttpPolicy(policy, options, manager, _TRANSPORT_ERRORS)

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http = self._http
        body = request.body
        replayable_body = not body or isinstance(body, _REPLAYABLE_BODIES)
        replayable = http.replayable(request.method, request.headers, None, replayable_body)

        async def attempt(_resend_count: int) -> aiohttp.ClientResponse:
            response = await handler(request)
            if http.is_failure(response.status):
                try:
                    await response.read()
                finally:
                    response.release()
                raise FailedResponseError(response, response.status)
            return response

        host = request.url.host or ""
        if not request.url.is_default_port():
            host = f"{host}:{request.url.port}"
        return await http.send(host, replayable, attempt)
