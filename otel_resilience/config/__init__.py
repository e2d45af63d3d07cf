"""Declarative configuration: named policies from a YAML or TOML file.

::

    # resilience.yaml
    version: 1
    retry_budgets:
      shared: {ratio: 0.2, window: 60s}
    policies:
      payments:
        circuit_breaker: {failure_threshold: 5, timeout: 30s}
        retry: {max_attempts: 3, initial_delay: 250ms, retry_on: [ConnectionError], budget: shared}
        timeout: 2.0

    from otel_resilience import config, resilient
    policies = config.load("resilience.yaml")      # a ConfigFile: name -> ResilienceConfig
    @resilient(policies["payments"])
    async def charge(order): ...

The keys are the keyword arguments of the config classes (``ResilienceConfig``,
``CircuitBreakerConfig``, ``RetryPolicy``, ``FallbackConfig``, ``BulkheadConfig``,
``RateLimiterConfig``, ``HedgingConfig``, ``ChaosConfig``, ``RetryBudget``), with three
aliases: ``retry`` for ``retry_policy``, ``fallback`` for ``fallback_config``, ``bulkhead`` for
``bulkhead_config``.
A policy's key is its name. Durations are seconds or strings (``"250ms"``, ``"2s"``, ``"2m"``,
``"1h30m"``); a rate limiter's ``rate`` is per second or ``"100/m"``; exception classes are
built-ins or dotted paths, imported when the file is read (a configuration file is trusted like
code); enums are written by value (``strategy: exponential``); a sliding window is
``{kind: count, size: 100}`` or ``{kind: time, seconds: 60s, buckets: 10}``; a retry policy's
(or hedging's) ``budget`` names an entry of the top-level ``retry_budgets`` (one shared
:class:`~otel_resilience.RetryBudget` per name). Settings that take code (predicates,
functions, cache services, switches, extra strategies) cannot be written in a file: an error
says so; set them on the loaded config with ``dataclasses.replace``.

Every error is a :class:`ConfigError` naming the file, the line (YAML; TOML only for syntax
errors: ``tomllib`` gives no position for values) and the path of the wrong value. Unknown keys
are errors. The JSON Schema of the file (:func:`json_schema`, ``otel-resilience schema``) lets an
editor check a file as it is written; ``otel-resilience check PATH`` validates one.

YAML needs PyYAML, TOML on Python 3.10 needs tomli: the ``config`` extra
(``pip install 'otel-resilience[config]'``). Neither is imported until a file is read.
"""

from __future__ import annotations

import json
from typing import Any

from otel_resilience.config.errors import ConfigError
from otel_resilience.config.loader import CONFIG_ENV, ConfigFile, from_env, load, loads
from otel_resilience.config.values import parse_duration

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "ConfigFile",
    "from_env",
    "json_schema",
    "load",
    "loads",
    "parse_duration",
]


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a configuration file (the one shipped as ``schema.json``)."""
    from otel_resilience.config.schema import shipped  # noqa: PLC0415 - read only when asked

    result: dict[str, Any] = json.loads(shipped())
    return result
