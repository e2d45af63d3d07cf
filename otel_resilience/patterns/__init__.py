"""The resilience patterns: one package per pattern (the timeout is one module).

Each pattern is a public face (an :class:`~otel_resilience.engine.facade.Pattern`) over its
settings, its sans-I/O state and its :class:`~otel_resilience.engine.step.Step`, and sits
between the manager and the engine (the import contracts in ``pyproject.toml`` name this one
package). Every public name is importable from ``otel_resilience``; each pattern's former path
(``otel_resilience.retry``, ``otel_resilience.circuit_breaker``, ...) stays as an alias module of
its public names.

* :mod:`~otel_resilience.patterns.circuit_breaker`, :mod:`~otel_resilience.patterns.retry`,
  :mod:`~otel_resilience.patterns.fallback`, :mod:`~otel_resilience.patterns.timeout`,
  :mod:`~otel_resilience.patterns.bulkhead`, :mod:`~otel_resilience.patterns.rate_limiter`,
  :mod:`~otel_resilience.patterns.hedging`, :mod:`~otel_resilience.patterns.chaos`: the
  strategies a pipeline runs.
* :mod:`~otel_resilience.patterns.recovery` (rule-based error recovery) and
  :mod:`~otel_resilience.patterns.alerts` (in-process alerts).
"""
