"""otel_resilience: fault-tolerance patterns for asyncio and threads, native to OpenTelemetry."""

from __future__ import annotations
