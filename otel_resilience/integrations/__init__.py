"""Ready integrations with HTTP clients and servers, each behind an optional extra.

* :mod:`otel_resilience.integrations.http`: what the clients share (which responses are
  failures, which requests may be sent again, ``Retry-After``, the deadline as the timeout, one
  breaker per host); no HTTP library is imported.
* :mod:`otel_resilience.integrations.sending`: the one request path the clients share
  (``HttpPolicy``, and ``HttpIntegration``, their base).
* :mod:`otel_resilience.integrations.httpx`: ``ResilientTransport`` / ``AsyncResilientTransport``
  (extra ``httpx``).
* :mod:`otel_resilience.integrations.requests`: ``ResilientAdapter`` (extra ``requests``).
* :mod:`otel_resilience.integrations.aiohttp`: a client middleware (extra ``aiohttp``).
* :mod:`otel_resilience.integrations.fastapi`: exception handlers, a policy dependency and a
  load-shedding ASGI middleware (extra ``fastapi``).

Import the module of the client you use: this package imports none of them.
"""
