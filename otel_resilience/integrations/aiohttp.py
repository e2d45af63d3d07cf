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
:class:`~otel_resilience.OperationTimeoutError`. aiohttp itself sends an idempotent request once
more when its connection was reset or closed without an answer: that is a new request, so a new
execution of the policy (after the policy's attempts ran out, the breaker may have opened: the
caller then sees :class:`~otel_resilience.CircuitOpenError`).
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import payload

from otel_resilience.integrations.http import FailedResponseError
from otel_resilience.integrations.sending import HttpIntegration, Sent, record_send

__all__ = ["ResilientMiddleware"]

_REPLAYABLE_BODIES = (payload.BytesPayload, payload.StringPayload, payload.JsonBytesPayload)


class ResilientMiddleware(HttpIntegration):
    """An aiohttp client middleware (``ClientSession(middlewares=(...,))``) running requests under ``policy``.

    ``ResilientMiddleware(policy, *, options=None, manager=None)``: the arguments of
    :class:`~otel_resilience.integrations.sending.HttpIntegration`.
    """

    transport_errors = (aiohttp.ClientConnectionError, asyncio.TimeoutError)

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        """Send ``request`` under the policy: the last response, or the error that ended it."""
        http, url, body = self._http, request.url, request.body
        replayable = http.replayable(
            request.method, request.headers, None, not body or isinstance(body, _REPLAYABLE_BODIES)
        )
        port = None if url.is_default_port() else url.port
        return await http.send(url.host or "", port, replayable, self._send_once, (request, handler))

    async def _send_once(
        self, exchange: tuple[aiohttp.ClientRequest, aiohttp.ClientHandlerType], sent: Sent
    ) -> aiohttp.ClientResponse:
        """One attempt: pass the request on; a failed response is read, released and raised."""
        request, handler = exchange
        index = record_send(sent)
        sent[index] = response = await handler(request)
        if response.status in self._http.failure_statuses:
            try:
                await response.read()
            finally:
                response.release()
            raise FailedResponseError(response, response.status)
        return response
