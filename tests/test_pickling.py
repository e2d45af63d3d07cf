"""Configs and errors cross process boundaries whole: pickle, copy, and a ``spawn`` process pool.

``multiprocessing`` (``spawn``, ``forkserver``), ``ProcessPoolExecutor`` and task queues pickle
the configs they send to workers and the errors workers raise: every field must come back,
whichever way the object was built (positional or keyword arguments), and an object that holds
a process's own state (a retry budget's window, a percentile delay's latencies) comes back as a
new one with the same settings.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import multiprocessing
import pickle
from typing import Any

import pytest
from pickling_workers import raise_error, run_policy
from support import add_note

from otel_resilience import (
    HedgingConfig,
    PercentileDelay,
    ResilienceConfig,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.config import ConfigError, loads
from otel_resilience.config.formats import UnknownFormatError
from otel_resilience.engine import SYSTEM_CLOCK
from otel_resilience.engine.counting import Counter
from otel_resilience.errors import (
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitOpenError,
    OperationTimeoutError,
    RateLimitedError,
    RecoveryEscalatedError,
    UnacceptedResultError,
)
from otel_resilience.patterns.recovery import RecoveryContext

FIELDS = ("name", "state", "retry_after", "max_concurrent", "max_waiting", "timeout", "reason")
FIELDS += ("operation", "scope", "error_type", "result", "keys", "path", "line", "source", "fault")

ERRORS = {
    "circuit open": lambda: CircuitOpenError("db", "open", 1.5),
    "bulkhead full": lambda: BulkheadFullError("db", 2, 3),
    "bulkhead timeout": lambda: BulkheadTimeoutError("db", 2, 3, 0.5),
    "rate limited": lambda: RateLimitedError("db", 0.25),
    "timeout, keywords": lambda: OperationTimeoutError(operation="op", timeout=1.0, scope="attempt"),
    "escalated": lambda: RecoveryEscalatedError("ValueError", "op"),
    "escalated, keyword operation": lambda: RecoveryEscalatedError("ValueError", operation="op"),
    "escalated, keywords": lambda: RecoveryEscalatedError(error_type="ValueError", operation="op"),
    "unaccepted": lambda: UnacceptedResultError("fallback", {"a": 1}),
    "unaccepted, keyword result": lambda: UnacceptedResultError("fallback", result=[1]),
    "unaccepted, keywords": lambda: UnacceptedResultError(name="fallback", result=[1]),
    "config": lambda: ConfigError(
        "must be >= 1, got 0", path=("policies", "p", "retries"), line=3, source="f.yaml"
    ),
    "unknown format": lambda: UnknownFormatError("settings.ini"),
}


def _fields(error: BaseException) -> dict[str, Any]:
    return {name: getattr(error, name) for name in FIELDS if hasattr(error, name)}


@pytest.mark.parametrize("make", list(ERRORS))
@pytest.mark.parametrize("way", ["pickle", "copy"])
def test_an_error_comes_back_with_every_field(make: str, way: str) -> None:
    """Its fields, message, type and notes survive a pickle round trip and a copy."""
    error = ERRORS[make]()
    add_note(error, "seen by the worker")
    back = pickle.loads(pickle.dumps(error)) if way == "pickle" else copy.copy(error)
    assert type(back) is type(error)
    assert _fields(back) == _fields(error)
    assert str(back) == str(error)
    assert back.__notes__ == ["seen by the worker"]


def test_a_retry_budget_comes_back_as_a_new_budget_with_its_settings() -> None:
    """Its settings and clock come back; its window is the new process's own (empty)."""
    budget = RetryBudget(ratio=0.2, min_retries_per_second=1.0, window=5.0)
    for _ in range(10):
        budget.deposit()
    back = pickle.loads(pickle.dumps(budget))
    assert (back.ratio, back.min_retries_per_second, back.window) == (0.2, 1.0, 5.0)
    assert back.clock is SYSTEM_CLOCK
    assert back.get_stats()["first_attempts"] == 0
    assert copy.deepcopy(budget).window == 5.0


_COPIES: dict[str, Any] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda instance: pickle.loads(pickle.dumps(instance)),
}


@pytest.mark.parametrize("way", list(_COPIES))
def test_a_counter_comes_back_with_its_value(way: str) -> None:
    """A counter read before (a breaker of no policy copied as any object is) comes back with the
    value it had, not its count of numbers drawn, reads included; and with no warning (3.12 warns
    of copying an ``itertools.count``, which 3.14 refuses)."""
    counter = Counter()
    next(counter)
    assert (counter.value, counter.value) == (1, 1)
    back = _COPIES[way](counter)
    assert type(back) is Counter
    assert back.value == 1
    next(back)
    assert (back.value, counter.value) == (2, 1)


def test_a_percentile_delay_comes_back_with_its_settings_and_no_latency() -> None:
    """Its settings come back; it starts again at ``initial``."""
    delay = PercentileDelay(0.05, percentile=90, samples=20, min_samples=2, minimum=0.01)
    for seconds in (1.0, 2.0, 3.0):
        delay.observe(seconds)
    assert delay() > 0.05
    back = pickle.loads(pickle.dumps(delay))
    assert repr(back) == repr(delay)
    assert back() == 0.05


@pytest.mark.parametrize("way", ["pickle", "deepcopy"])
def test_a_loaded_configuration_file_comes_back_whole(way: str) -> None:
    """Its policies, source and format come back; the policies that share a budget share its copy."""
    loaded = loads(
        "retry_budgets:\n  shared: {ratio: 0.2}\npolicies:\n"
        "  a: {retry: {budget: shared}}\n  b: {retry: {budget: shared}}\n  c: {timeout: 2s}\n",
        source="resilience.yaml",
    )
    back = pickle.loads(pickle.dumps(loaded)) if way == "pickle" else copy.deepcopy(loaded)
    assert (list(back), back.source, back.format) == (["a", "b", "c"], "resilience.yaml", "yaml")
    assert back["c"] == loaded["c"]
    budget = back.retry_budgets["shared"]
    assert budget.ratio == 0.2
    for name in ("a", "b"):
        policy = back[name].retry_policy
        assert policy is not None
        assert policy.budget is budget
        assert dataclasses.replace(back[name], retry_policy=None) == dataclasses.replace(
            loaded[name], retry_policy=None
        )


def test_the_system_clock_comes_back_as_itself() -> None:
    """Code that tells the real clock by identity (a hedge's fast path) still recognises it."""
    assert pickle.loads(pickle.dumps(SYSTEM_CLOCK)) is SYSTEM_CLOCK
    assert copy.deepcopy(SYSTEM_CLOCK) is SYSTEM_CLOCK


# The start methods that make a new interpreter (forkserver is POSIX only): each this machine has.
_NEW_INTERPRETERS = [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


@pytest.mark.parametrize("method", _NEW_INTERPRETERS)
def test_configs_and_errors_cross_a_process_pool(method: str) -> None:
    """A worker runs a config that holds a shared budget; its errors reach the parent whole."""
    budget = RetryBudget(ratio=0.5)
    config = ResilienceConfig(
        name="remote",
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, budget=budget),
        hedging=HedgingConfig(delay=PercentileDelay(0.05), budget=budget),
    )
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        result, shared, stats = pool.submit(run_policy, config).result(timeout=120)
        assert (result, shared, stats["first_attempts"]) == (7, True, 1)
        with pytest.raises(RecoveryEscalatedError) as escalated:
            pool.submit(raise_error, "escalated").result(timeout=120)
        assert (escalated.value.error_type, escalated.value.operation) == ("ValueError", "charge")
        with pytest.raises(UnacceptedResultError) as unaccepted:
            pool.submit(raise_error, "unaccepted").result(timeout=120)
        assert (unaccepted.value.name, unaccepted.value.result) == ("payments", {"status": 503})


@pytest.mark.parametrize("client", ["httpx", "requests"])
@pytest.mark.parametrize("way", ["pickle", "copy"])
def test_a_failed_response_error_comes_back_with_its_response(client: str, way: str) -> None:
    """``raise_on_failure``'s error crosses a process boundary: its status, body and notes, no replay."""
    import httpx  # noqa: PLC0415 - optional extras
    import requests  # noqa: PLC0415

    from otel_resilience.integrations.http import FailedResponseError  # noqa: PLC0415

    if client == "httpx":
        response: Any = httpx.Response(503, content=b"busy")
    else:
        response = requests.Response()
        response.status_code, response._content = 503, b"busy"
    error = FailedResponseError(response, 503, replay=lambda: response)
    add_note(error, "seen by the worker")
    back = pickle.loads(pickle.dumps(error)) if way == "pickle" else copy.copy(error)
    assert type(back) is FailedResponseError
    assert (back.status_code, back.response.status_code, back.response.content) == (503, 503, b"busy")
    assert back.replay is None
    assert str(back) == str(error)
    assert back.__notes__ == ["seen by the worker"]


@pytest.mark.parametrize("way", ["pickle", "deepcopy", "asdict"])
def test_a_recovery_context_comes_back_whole(way: str) -> None:
    """A context made with its defaults (no keyword arguments) pickles, deep-copies, and turns into a dict."""
    context = RecoveryContext(args=(1,), operation_name="op")
    if way == "asdict":
        assert dataclasses.asdict(context)["kwargs"] == {}
        return
    back = pickle.loads(pickle.dumps(context)) if way == "pickle" else copy.deepcopy(context)
    assert back == context
    assert dict(back.kwargs) == {}
    with pytest.raises(TypeError):
        back.kwargs["a"] = 1  # type: ignore[index]
