"""A connection to a primary demoted under it (``READONLY``) is left: the next operation connects again.

A failover behind the store's endpoint (a DNS name that moves to the new primary, a load balancer,
a proxy) leaves the connections open through it with the old primary, a replica now: it answers
their every write ``READONLY``, and nothing ends them. The store reached Redis again on one of
them at each attempt of its thread (a write: :meth:`~otel_resilience.store.RedisStore._probe`),
so it stayed degraded for good, every breaker and rate limiter on local state, while its endpoint
had led to a primary taking writes since the failover.

:func:`leave_demoted` makes a pool's connections raise such a reply as a :class:`DemotedError`, a
``ConnectionError`` (as redis-py's Sentinel connections raise it): redis-py drops a connection
whose read raised one, sync or async, so the operation after it connects again, through the
endpoint, to whichever server it leads to now; it is the outage a ``READONLY`` was
(:meth:`~otel_resilience.store.RedisStore.answered`). Not a ``ResponseError``, which a pipeline
takes as one command's reply and reads the next one on: from a connection already dropped (an
``AttributeError`` in the store's thread every round, the store never degraded). Only an
error reply pays for it: the parser's ``parse_error``, which redis-py calls for error replies
alone. A store whose URL names a replica connects again at each attempt, and stays degraded.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["leave_demoted"]


@functools.cache
def _demoted_error() -> type[Exception]:
    """The error a ``READONLY`` reply is raised as (made once the ``redis`` package is imported)."""
    from redis.exceptions import ConnectionError as Disconnected  # noqa: PLC0415 - an optional dependency

    class DemotedError(Disconnected):
        """``READONLY``: the server is a replica now; its connection is dropped (redis-py drops it)."""

    return DemotedError


@functools.cache
def _demoting(parser_class: Any) -> Any:
    """``parser_class`` whose ``READONLY`` error replies are :class:`DemotedError` (one class per parser)."""
    from redis.exceptions import ReadOnlyError  # noqa: PLC0415 - an optional dependency

    demoted = _demoted_error()

    class Demoting(parser_class):  # type: ignore[misc]
        @classmethod
        def parse_error(cls, response: Any) -> Any:
            error = super().parse_error(response)
            if not isinstance(error, ReadOnlyError):
                return error
            return demoted(*error.args)

    Demoting.__name__ = Demoting.__qualname__ = f"Demoting{parser_class.__name__}"
    return Demoting


def leave_demoted(pool: Any) -> Any:
    """Have the connections ``pool`` makes from now on dropped once their server answers ``READONLY``.

    Returns:
        ``pool``.
    """
    base = pool.connection_class

    class Leaving(base):  # type: ignore[misc,valid-type]
        """A connection of ``base`` whose parser raises ``READONLY`` as a :class:`DemotedError`."""

        def set_parser(self, parser_class: Any) -> None:
            super().set_parser(_demoting(parser_class))

    Leaving.__name__ = Leaving.__qualname__ = f"Leaving{base.__name__}"
    pool.connection_class = Leaving
    return pool
