"""FastAPI and Starlette: refusals as HTTP answers, a policy dependency, load shedding (extra ``fastapi``).

::

    app = FastAPI()
    add_exception_handlers(app)  # CircuitOpenError -> 503 + Retry-After, ...
    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=100))

    @app.get("/pay")
    async def pay(policy: Annotated[PolicyHandle, Depends(resilience_policy("payments", config))]):
        return await policy.execute(call_payments)  # or policy.for_key(tenant).execute(...)

Only Starlette is imported (FastAPI is built on it); the handlers work on a plain Starlette app.

=====================================  ======  ===============================================
Error                                  Status  Headers
=====================================  ======  ===============================================
``CircuitOpenError``                   503     ``Retry-After``: the breaker's next probe
``BulkheadFullError``                  503     ``Retry-After``: :data:`BULKHEAD_RETRY_AFTER`
``RateLimitedError``                   429     ``Retry-After``: when the next permit is due
``OperationTimeoutError``              504
=====================================  ======  ===============================================

``Retry-After`` is whole seconds rounded up (at least 1); a breaker forced open (``inf``) gives
none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, TypeAlias

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_resilience.engine.validation import check_name, fail
from otel_resilience.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
    RateLimitedError,
)
from otel_resilience.manager import PolicyHandle, ResilienceConfig, ResilienceManager, get_resilience_manager
from otel_resilience.patterns.bulkhead import BulkheadConfig
from otel_resilience.patterns.rate_limiter import RateLimiterConfig

__all__ = [
    "BULKHEAD_RETRY_AFTER",
    "LoadSheddingMiddleware",
    "Policy",
    "add_exception_handlers",
    "error_response",
    "resilience_policy",
]


BULKHEAD_RETRY_AFTER: Final = 1
"""The ``Retry-After`` (seconds) of a 503 for a full bulkhead, which cannot know when a slot frees."""

_HANDLED: Final = (CircuitOpenError, BulkheadFullError, RateLimitedError, OperationTimeoutError)


def _retry_after(seconds: float | None) -> dict[str, str]:
    if seconds is None or not math.isfinite(seconds):
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_response(error: Exception) -> Response:
    """Return the HTTP answer for a refusal or a timeout (see the module's table).

    Raises:
        TypeError: ``error`` is none of the four handled errors.
    """
    if isinstance(error, CircuitOpenError):
        status, headers = 503, _retry_after(error.retry_after)
    elif isinstance(error, RateLimitedError):
        status, headers = 429, _retry_after(error.retry_after)
    elif isinstance(error, BulkheadFullError):
        status, headers = 503, _retry_after(BULKHEAD_RETRY_AFTER)
    elif isinstance(error, OperationTimeoutError):
        status, headers = 504, {}
    else:
        raise fail("error_response", "error", "a refusal or OperationTimeoutError", error, kind=TypeError)
    return JSONResponse({"detail": str(error), "error": type(error).__name__}, status, headers)


async def _handler(_request: Request, error: Exception) -> Response:
    return error_response(error)


def add_exception_handlers(app: Any) -> None:
    """Register handlers on a FastAPI or Starlette ``app`` turning refusals into 503/429/504 answers."""
    for error_type in _HANDLED:
        app.add_exception_handler(error_type, _handler)


Policy: TypeAlias = PolicyHandle
"""What :func:`resilience_policy` gives a handler: the manager's :class:`~otel_resilience.PolicyHandle`."""


def resilience_policy(
    name: str, config: ResilienceConfig | None = None, *, manager: ResilienceManager | None = None
) -> Callable[[], PolicyHandle]:
    """Return a dependency (``Depends(resilience_policy("payments", config))``) giving the policy handle.

    The handler gets ``manager.policy(name, config)``: ``await policy.execute(fn)`` shares the
    policy's breaker, bulkhead and limiter across requests, ``policy.for_key(tenant)`` gives a
    key its own, and ``manager.reconfigure(name, ...)`` changes it while requests run.

    Args:
        name: The policy name.
        config: The policy's config (default: an empty one, no pattern); its ``name`` must be
            ``None`` or ``name``.
        manager: The manager (default: the process-wide one, looked up per request).

    Raises:
        TypeError: ``config`` is not a ResilienceConfig.
        ValueError: ``name`` is empty, or ``config`` is named otherwise.
    """
    check_name("resilience_policy", "name", name)
    if config is not None and not isinstance(config, ResilienceConfig):
        raise fail("resilience_policy", "config", "a ResilienceConfig or None", config, kind=TypeError)
    if config is not None and config.name not in (None, name):
        raise fail("resilience_policy", "config", f"a ResilienceConfig named None or {name!r}", config.name)
    named = config or ResilienceConfig()
    made: list[tuple[ResilienceManager, PolicyHandle]] = []

    def dependency() -> PolicyHandle:
        current = manager or get_resilience_manager()
        if made and made[0][0] is current:
            return made[0][1]
        handle = current.policy(name, named)
        made[:] = [(current, handle)]
        return handle

    dependency.__name__ = f"resilience_policy_{name}"
    return dependency


class LoadSheddingMiddleware:
    """ASGI middleware that sheds load at the edge: a bulkhead and/or a rate limiter over every request.

    A request refused by either is answered at once (503 or 429, with ``Retry-After``) without
    reaching the app; the bulkhead holds its slot until the response is sent. Lifespan and
    websocket scopes pass through.

    Args:
        app: The ASGI app.
        bulkhead: The concurrency limit (``None``: none).
        rate_limiter: The rate limit (``None``: none).
        name: The policy name in telemetry (default ``"http.server"``).
        manager: The manager (default: the process-wide one).

    Raises:
        ValueError: Neither a bulkhead nor a rate limiter is given.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        bulkhead: BulkheadConfig | None = None,
        rate_limiter: RateLimiterConfig | None = None,
        name: str = "http.server",
        manager: ResilienceManager | None = None,
    ) -> None:
        if bulkhead is None and rate_limiter is None:
            raise fail("LoadSheddingMiddleware", "bulkhead", "given (or rate_limiter)", bulkhead)
        self.app = app
        self.config = ResilienceConfig(
            name=name, bulkhead_config=bulkhead, rate_limiter=rate_limiter, record_duration=False
        )
        self._manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run an HTTP request under the bulkhead and limiter, or answer its refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        manager = self._manager or get_resilience_manager()
        try:
            await manager.execute_with_resilience(self.app, self.config, scope, receive, send)
        except ExecutionRejectedError as error:
            if not isinstance(error, (BulkheadFullError, RateLimitedError)):
                raise
            await error_response(error)(scope, receive, send)
