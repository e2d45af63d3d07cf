"""Execution and attempt spans: names, nesting, attributes, status rules, sampling, switches."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.engine.events import Outcome, StrategyTelemetry, TelemetrySource
from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.telemetry import instrument
from otel_resilience.telemetry import semconv as sc


def boom() -> None:
    raise ValueError("secret detail")


def ok() -> int:
    return 42


async def test_execution_span_is_internal_child_named_after_operation(otel, scripted, runner, driver):
    """The execution span is INTERNAL, named after the operation, and a child of the caller's span."""
    pipeline = scripted("fetch_user")
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as parent:
        assert await runner(pipeline, driver, ok) == 42
    span = otel.span("fetch_user")
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert dict(span.attributes) == {
        "resilience.policy": "fetch_user",
        "resilience.pattern": "pipeline",
        "resilience.outcome": "success",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope.name == "otel_resilience"
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.44.0"


async def test_user_spans_nest_under_the_execution_span(otel, scripted, runner, driver):
    """The execution span is current while the call runs, so the callee's spans are its children."""
    pipeline = scripted("op")
    tracer = otel.tracer_provider.get_tracer("app")

    def work() -> str:
        with tracer.start_as_current_span("db.query"):
            return "rows"

    assert await runner(pipeline, driver, work) == "rows"
    inner = otel.span("db.query")
    outer = otel.span("op")
    assert inner.parent is not None
    assert inner.parent.span_id == outer.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


@pytest.mark.parametrize(
    ("mode", "fn", "outcome", "error_type"),
    [
        ("pass", ok, "success", None),
        ("recover", ok, "recovered", None),
        ("fallback", boom, "fallback", None),
        ("pass", boom, "failure", "ValueError"),
        ("reject", ok, "rejected", "otel_resilience.errors.CircuitOpenError"),
        ("timeout", ok, "timeout", "otel_resilience.errors.OperationTimeoutError"),
    ],
)
async def test_status_is_error_only_for_failure_rejected_and_timeout(
    otel, scripted, runner, driver, *, mode, fn, outcome, error_type
):
    """Recovered and fallback executions are not errors; failures, rejections and timeouts are."""
    pipeline = scripted("op", mode)
    with contextlib.suppress(Exception):
        await runner(pipeline, driver, fn)
    span = otel.span("op")
    assert span.attributes["resilience.outcome"] == outcome
    assert span.attributes.get("error.type") == error_type
    expected = StatusCode.ERROR if error_type else StatusCode.UNSET
    assert span.status.status_code is expected
    assert span.status.description is None
    assert not span.events


async def test_cancelled_execution_is_not_an_error(otel, scripted):
    """A cancelled execution ends its span with outcome cancelled and status UNSET."""
    pipeline = scripted("op")
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(pipeline.execute(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    span = otel.span("op")
    assert span.attributes["resilience.outcome"] == "cancelled"
    assert "error.type" not in span.attributes
    assert span.status.status_code is StatusCode.UNSET


async def test_exception_message_only_with_record_messages(otel, scripted, runner, driver):
    """The status description carries the exception message only when the user opts in."""
    instrument(otel.tracer_provider, otel.meter_provider, record_messages=True)
    pipeline = scripted("op")
    with pytest.raises(ValueError, match="secret"):
        await runner(pipeline, driver, boom)
    span = otel.span("op")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "secret detail"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() of this error fails")


def _unprintable() -> None:
    raise _Unprintable


async def test_an_error_whose_message_cannot_be_read_still_ends_its_span(otel, scripted, runner, driver):
    """With record_messages, an exception whose str() raises still ends the span as ERROR.

    The failure to read the message is telemetry's own error: counted, never left as an open
    span (which no exporter would ever see).
    """
    listener = instrument(otel.tracer_provider, otel.meter_provider, record_messages=True)
    pipeline = scripted("op")
    with pytest.raises(_Unprintable):
        await runner(pipeline, driver, _unprintable)
    span = otel.span("op")
    assert span.end_time is not None
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"].endswith("_Unprintable")
    assert listener.errors == 1
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_attempt_spans_are_children_with_attempt_number(otel):
    """Attempt scopes become child spans carrying the attempt number; a failed one is ERROR."""
    source = TelemetrySource("retry", "r", "op")
    telemetry = StrategyTelemetry(source)
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("op") as execution:
        failed = telemetry.start_attempt("op", 2)
        telemetry.end_attempt(failed, Outcome.FAILURE, ConnectionError("x"))
        succeeded = telemetry.start_attempt("op", 3)
        telemetry.end_attempt(succeeded, Outcome.SUCCESS, None)
    attempts = otel.spans("op attempt")
    assert [s.attributes["resilience.attempt"] for s in attempts] == [2, 3]
    for span in attempts:
        assert span.parent is not None
        assert span.parent.span_id == execution.get_span_context().span_id
        assert span.kind is SpanKind.INTERNAL
        assert "http.request.resend_count" not in span.attributes
    first, second = attempts
    assert dict(first.attributes) == {
        "resilience.policy": "op",
        "resilience.pattern": "retry",
        "resilience.name": "r",
        "resilience.attempt": 2,
        "resilience.outcome": "failure",
        "error.type": "ConnectionError",
    }
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET
    assert second.attributes["resilience.outcome"] == "success"


async def test_http_resend_count_when_caller_span_is_http_client(otel, scripted, runner, driver):
    """Under an HTTP client span, retried attempt spans carry http.request.resend_count."""
    pipeline = scripted("GET /users")
    telemetry = StrategyTelemetry(TelemetrySource("retry", "r", "GET /users"))
    tracer = otel.tracer_provider.get_tracer("app")

    def call() -> None:
        handle = telemetry.start_attempt("GET /users", 3)
        telemetry.end_attempt(handle, Outcome.SUCCESS, None)

    with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}):
        await runner(pipeline, driver, call)
    with tracer.start_as_current_span(
        "GET", kind=SpanKind.INTERNAL, attributes={"http.request.method": "GET"}
    ):
        await runner(pipeline, driver, call)
    with_client, without = otel.spans("GET /users attempt")
    assert with_client.attributes["http.request.resend_count"] == 2
    assert "http.request.resend_count" not in without.attributes


async def test_an_execution_nested_under_an_http_execution_counts_no_resends(otel, scripted, runner, driver):
    """Only the attempts of the execution the HTTP client span calls are resends of its request.

    An execution nested inside it (a token fetched through a policy of its own) has another
    caller span: its retried attempts are not resends of that request and carry no count.
    """
    outer = scripted("GET /orders")
    inner = scripted("fetch token")
    telemetry = StrategyTelemetry(TelemetrySource("retry", "r", "fetch token"))
    tracer = otel.tracer_provider.get_tracer("app")

    def attempt() -> None:
        telemetry.end_attempt(telemetry.start_attempt("fetch token", 2), Outcome.SUCCESS, None)

    resend = StrategyTelemetry(TelemetrySource("retry", "r", "GET /orders"))

    def send() -> None:
        handle = resend.start_attempt("GET /orders", 2)
        try:
            with tracer.start_as_current_span("auth"):
                inner.execute_sync(attempt)
        finally:
            resend.end_attempt(handle, Outcome.SUCCESS, None)

    with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}):
        await runner(outer, driver, send)
    assert otel.span("GET /orders attempt").attributes["http.request.resend_count"] == 1
    assert "http.request.resend_count" not in otel.span("fetch token attempt").attributes


async def test_no_span_when_parent_is_not_sampled(otel, scripted, runner, driver):
    """A valid but unsampled parent context means no span at all; the histogram is still recorded."""
    parent = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0)))
    token = otel_context.attach(trace.set_span_in_context(parent))
    try:
        assert await runner(scripted("op"), driver, ok) == 42
        assert trace.get_current_span() is parent
    finally:
        otel_context.detach(token)
    assert otel.spans() == []
    assert otel.point("resilience.execution.duration", **_attrs("op", "success")).count == 1


async def test_spans_switched_off_per_policy(otel, scripted, runner, driver):
    """A source with spans=False opens no span but keeps the duration histogram."""
    assert await runner(scripted("quiet", spans=False), driver, ok) == 42
    assert otel.spans() == []
    assert otel.point("resilience.execution.duration", **_attrs("quiet", "success")).count == 1


async def test_nothing_opened_when_spans_and_metrics_are_off(otel, scripted):
    """With spans and metrics both switched off nothing is opened or timed, for its attempts too.

    The execution's handle only holds its switches for what it runs (a retry's attempts report
    through a source of their own) until it ends.
    """
    source = TelemetrySource("pipeline", "off", "off", spans=False, metrics=False)
    retry = TelemetrySource("retry", "off", "off")
    handle = otel.listener.start_execution(source, "off")
    assert handle is not None
    assert handle.span is None
    assert otel.listener.start_attempt(source, "off", 2) is None
    assert otel.listener.start_attempt(retry, "off", 2) is None
    otel.listener.end_execution(handle, Outcome.SUCCESS, 0.001, None)
    attempt = otel.listener.start_attempt(retry, "off", 2)
    assert attempt is not None
    otel.listener.end_attempt(attempt, Outcome.SUCCESS, None)
    assert [s.name for s in otel.spans()] == ["off attempt"]
    assert otel.points("resilience.execution.duration") == []


async def test_rejection_raises_and_span_records_type_not_message(otel, scripted, runner, driver):
    """A rejection's span carries error.type but never the message (which names the breaker)."""
    with pytest.raises(CircuitOpenError):
        await runner(scripted("op", "reject"), driver, ok)
    span = otel.span("op")
    assert span.status.description is None
    assert all("next probe" not in str(v) for v in span.attributes.values())


def _attrs(policy: str, outcome: str) -> dict[str, str]:
    return {"resilience__policy": policy, "resilience__pattern": "pipeline", "resilience__outcome": outcome}


async def test_concurrent_threads_keep_their_own_span_context(otel, scripted):
    """Threads started together each get their own execution spans under their own parent span."""
    pipeline = scripted("threaded")
    tracer = otel.tracer_provider.get_tracer("app")
    threads_count, calls = 8, 25
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=5)
            with tracer.start_as_current_span(f"worker-{index}"):
                for _ in range(calls):
                    assert pipeline.execute_sync(ok) == 42
            assert trace.get_current_span() is trace.INVALID_SPAN
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not failures
    parents = {s.context.span_id: s.name for s in otel.spans() if s.name.startswith("worker-")}
    executions = otel.spans("threaded")
    assert len(executions) == threads_count * calls
    per_parent: dict[str, int] = {}
    for span in executions:
        name = parents[span.parent.span_id]
        per_parent[name] = per_parent.get(name, 0) + 1
    assert per_parent == {f"worker-{i}": calls for i in range(threads_count)}
    assert (
        otel.point("resilience.execution.duration", **_attrs("threaded", "success")).count
        == threads_count * calls
    )


async def test_a_policy_with_spans_and_durations_off_adds_nothing_to_the_callers_span(otel, driver):
    """A policy's spans=False and record_duration=False hold for everything it runs.

    No attempt span, no span event or attribute on the caller's span (a retry's, a breaker's
    transition, an alert), no attempt duration; an inner policy whose switches are on still
    shows its own, under the caller's span.
    """
    off = {
        "spans": False,
        "record_duration": False,
        "retry_policy": RetryPolicy(max_attempts=3, initial_delay=0.0),
    }
    tripping = ResilienceConfig(
        name=f"quiet-{driver}", circuit_breaker=CircuitBreakerConfig(failure_threshold=3), **off
    )
    nesting = ResilienceConfig(name=f"quiet-nesting-{driver}", **off)
    loud = ResilienceConfig(
        name=f"loud-{driver}", retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0)
    )
    calls = [0]

    def flaky() -> str:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("once")
        return "inner"

    async def flaky_async() -> str:
        return flaky()

    def down() -> None:
        raise ConnectionError("down")

    async def down_async() -> None:
        down()

    with AlertSystem(name="quiet-alerts") as alerts:
        manager = ResilienceManager(alert_system=alerts)

        def outer() -> str:
            return manager.execute_with_resilience_sync(flaky, loud)

        async def outer_async() -> str:
            return await manager.execute_with_resilience(flaky_async, loud)

        with otel.tracer_provider.get_tracer("app").start_as_current_span("request"):
            with pytest.raises(ConnectionError):  # retried, then the breaker opens (with an alert)
                if driver == "sync":
                    manager.execute_with_resilience_sync(down, tripping)
                else:
                    await manager.execute_with_resilience(down_async, tripping)
            if driver == "sync":
                assert manager.execute_with_resilience_sync(outer, nesting) == "inner"
            else:
                assert await manager.execute_with_resilience(outer_async, nesting) == "inner"
        assert alerts.get_stats()["total"] == 1
    request = otel.span("request")
    assert request.events == ()
    assert dict(request.attributes) == {}
    assert sorted(s.name for s in otel.spans()) == [f"loud-{driver}", f"loud-{driver} attempt", "request"]
    loud_span = otel.span(f"loud-{driver}")
    assert loud_span.parent is not None
    assert loud_span.parent.span_id == request.context.span_id
    assert [e.name for e in loud_span.events] == [sc.EV_RETRY_SCHEDULED]
    durations = {
        dict(p.attributes)[sc.POLICY]
        for name in (sc.EXECUTION_DURATION, sc.ATTEMPT_DURATION)
        for p in otel.points(name)
    }
    assert durations == {f"loud-{driver}"}
