"""State shared by the replicas of a service: :class:`RedisStore` (the ``redis`` extra).

``RedisStore.from_url(url, namespace=...)`` passed as ``store=`` to a
:class:`~otel_resilience.CircuitBreakerConfig` shares the breaker's counts, state and half-open
probes with every replica using the same namespace; passed to a
:class:`~otel_resilience.RateLimiterConfig`, it makes the limit one budget for all of them. The
``redis`` package is imported only when a store is built (:meth:`RedisStore.from_url`).
"""

from __future__ import annotations

from otel_resilience.store.redis_store import RedisStore

__all__ = ["RedisStore"]
