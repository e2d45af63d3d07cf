"""The errors: fields, messages, pickling, and rejections made without a Python frame."""

from __future__ import annotations

import math
import pickle
import sys
from types import FrameType
from typing import Any

import pytest

from otel_resilience import RetryPolicy, retry_sync
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, key_attribute
from otel_resilience.errors import (
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
    RateLimitedError,
    keyed_rejection,
)
from otel_resilience.testing import FakeClock

_REJECTIONS: list[tuple[type[ExecutionRejectedError], tuple[Any, ...], dict[str, Any], str]] = [
    (
        CircuitOpenError,
        ("pay", "open", 2.5),
        {"name": "pay", "state": "open", "retry_after": 2.5},
        "circuit breaker 'pay' is open; next probe in 2.500 s",
    ),
    (
        BulkheadFullError,
        ("db", 4, 8),
        {"name": "db", "max_concurrent": 4, "max_waiting": 8, "reason": "full"},
        "bulkhead 'db' is full (limits: 4 running, 8 waiting)",
    ),
    (
        BulkheadTimeoutError,
        ("db", 4, 8, 0.5),
        {"name": "db", "max_concurrent": 4, "max_waiting": 8, "timeout": 0.5, "reason": "queue_timeout"},
        "bulkhead 'db': no slot became free within 0.5 s",
    ),
    (
        RateLimitedError,
        ("api", 0.25),
        {"name": "api", "retry_after": 0.25},
        "rate limiter 'api' has no permit free; the next is due in 0.250 s",
    ),
]


_KEYED_REJECTIONS: list[tuple[type[ExecutionRejectedError], tuple[Any, ...], dict[str, Any], str]] = [
    (
        CircuitOpenError,
        ("pay", "open", 2.5, "api.example.com"),
        {"name": "pay", "state": "open", "retry_after": 2.5, "key": "api.example.com"},
        "circuit breaker 'pay' (key 'api.example.com') is open; next probe in 2.500 s",
    ),
    (
        BulkheadFullError,
        ("db", 4, 8, "t1"),
        {"name": "db", "max_concurrent": 4, "max_waiting": 8, "reason": "full", "key": "t1"},
        "bulkhead 'db' (key 't1') is full (limits: 4 running, 8 waiting)",
    ),
    (
        BulkheadTimeoutError,
        ("db", 4, 8, 0.5, "t1"),
        {"name": "db", "timeout": 0.5, "reason": "queue_timeout", "key": "t1"},
        "bulkhead 'db' (key 't1'): no slot became free within 0.5 s",
    ),
    (
        RateLimitedError,
        ("api", 0.25, "t2"),
        {"name": "api", "retry_after": 0.25, "key": "t2"},
        "rate limiter 'api' (key 't2') has no permit free; the next is due in 0.250 s",
    ),
]


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _REJECTIONS)
def test_a_rejection_without_a_key_has_key_none(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    assert cls(*args).key is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _REJECTIONS + _KEYED_REJECTIONS)
def test_a_rejection_reads_its_fields_from_its_arguments(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    error = cls(*args)
    assert error.args == args
    assert {name: getattr(error, name) for name in fields} == fields
    assert str(error) == message
    assert repr(error) == f"{cls.__name__}{args!r}"
    copy = pickle.loads(pickle.dumps(error))  # rebuilt from args
    assert type(copy) is cls
    assert {name: getattr(copy, name) for name in fields} == fields


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _REJECTIONS)
def test_a_rejections_fields_are_read_only(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    error = cls(*args)
    with pytest.raises(
        AttributeError, match=rf"^{cls.__name__}\.name is read-only \(it is the argument 0 in args\)$"
    ):
        error.name = "other"  # type: ignore[misc]
    assert error.name == args[0]


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _REJECTIONS)
def test_making_a_rejection_runs_no_python_frame(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    """Rejections are made on hot paths (an open breaker): no __init__ of ours runs."""
    frames: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            frames.append(frame.f_code.co_name)  # co_qualname is 3.11+

    sys.setprofile(profile)
    try:
        cls(*args)
    finally:
        sys.setprofile(None)
    assert frames == []


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _KEYED_REJECTIONS)
def test_a_keyed_rejection_is_made_with_the_key_last(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    make = keyed_rejection(cls, args[-1])
    error = make(*args[:-1])
    assert type(error) is cls
    assert error.args == args
    assert str(error) == message


def test_a_forced_open_breakers_message() -> None:
    assert (
        str(CircuitOpenError("pay", "open", math.inf)) == "circuit breaker 'pay' is forced open until reset()"
    )
    half_open = CircuitOpenError("pay", "half_open", 30.0)
    assert (
        str(half_open)
        == "circuit breaker 'pay' is half-open and all probe permits are in use; retry after 30 s"
    )


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _REJECTIONS)
def test_a_rejection_made_with_a_message_alone_still_prints(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    """``str`` of a rejection made with other arguments (a test double's message) never raises."""
    alone = cls("dependency down")
    assert str(alone) == "dependency down"
    assert repr(alone) == f"{cls.__name__}('dependency down')"
    wrong = cls(*args[:-1], "soon")  # a number of seconds or slots given as text
    assert "soon" in str(wrong)
    missing = next(name for name in ("retry_after", "max_concurrent", "state") if name in fields)
    with pytest.raises(AttributeError, match=rf"^{cls.__name__}\.{missing}: the error was made without it"):
        getattr(alone, missing)
    assert getattr(alone, missing, None) is None


@pytest.mark.parametrize(
    "error",
    [
        OperationTimeoutError("fetch", "1s"),  # type: ignore[arg-type]
        OperationTimeoutError("fetch", None, "attempt"),  # type: ignore[arg-type]
        OperationTimeoutError("fetch", [1.0]),  # type: ignore[arg-type]
    ],
    ids=["text", "none", "list"],
)
def test_a_timeout_made_with_fields_of_another_type_still_prints(error: Exception) -> None:
    """``str`` of a timeout never raises, as a rejection's (was: ``str(OperationTimeoutError(
    'fetch', '1s'))`` raised ValueError: Unknown format code 'g', so logging the error failed): what its
    fields cannot format is shown as its arguments."""
    assert str(error) == Exception.__str__(error)
    assert type(error).__name__ in repr(error)


@pytest.mark.parametrize("scope", ["total", "attempt"])
def test_a_timeouts_arguments_and_repr_keep_its_scope(scope: str) -> None:
    """``args`` and ``repr`` hold every field: an attempt's timeout no longer reads as the whole call's.

    ``OSError`` drops its third argument from ``args`` (it takes it for a file name): the scope
    was missing from both, so ``OperationTimeoutError('fetch', 1.0)`` was shown for either.
    """
    error = OperationTimeoutError("fetch", 1.0, scope)
    assert error.args == ("fetch", 1.0, scope)
    assert repr(error) == f"OperationTimeoutError('fetch', 1.0, {scope!r})"
    rebuilt = OperationTimeoutError(*error.args)
    assert (rebuilt.operation, rebuilt.timeout, rebuilt.scope, str(rebuilt)) == (
        "fetch",
        1.0,
        scope,
        str(error),
    )
    assert (error.errno, error.strerror, error.filename) == (None, None, None)


def test_an_attempt_timeout_a_retry_raises_shows_its_scope() -> None:
    """What a retry raises when an attempt overran its ``attempt_timeout`` says so in its ``repr``."""
    clock = FakeClock()

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    policy = RetryPolicy(max_attempts=2, attempt_timeout=1.0, initial_delay=0.0)
    with pytest.raises(OperationTimeoutError) as info:
        retry_sync(slow, policy=policy, clock=clock)
    assert info.value.scope == "attempt"
    assert repr(info.value).endswith(".slow', 1.0, 'attempt')")


_LONG_KEY = "k" * 4_990 + "0123456789"
"""A key of 5,000 characters: a request's path or a tenant's payload used as the key."""


@pytest.mark.parametrize(("cls", "args", "fields", "message"), _KEYED_REJECTIONS)
def test_a_long_key_is_cut_in_the_message_and_whole_in_the_field(
    cls: type[ExecutionRejectedError], args: tuple[Any, ...], fields: dict[str, Any], message: str
) -> None:
    """The message shows the key as its ``resilience.key`` does (cut, with a digest); ``key`` is whole."""
    error = cls(*args[:-1], _LONG_KEY)
    assert error.key == _LONG_KEY  # type: ignore[attr-defined]
    assert error.args[-1] == _LONG_KEY
    shown = key_attribute(_LONG_KEY)
    assert len(shown) == MAX_ATTRIBUTE_LENGTH
    assert str(error) == message.replace(repr(args[-1]), repr(shown))
    assert len(str(error)) < MAX_ATTRIBUTE_LENGTH + 100
    assert str(cls(*args[:-1], _LONG_KEY + "!")) != str(error)  # two keys, two messages
