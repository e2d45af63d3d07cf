"""The record of a request's sends: what each got, and closing what the policy dropped."""

from __future__ import annotations

import httpx
import pytest

from otel_resilience.integrations.sending import (
    Sent,
    aclose_dropped,
    aclose_earlier,
    close_dropped,
    record_send,
)


def _responses(count: int) -> list[httpx.Response]:
    """Unread httpx responses, each over a stream of its own (as a transport returns them)."""

    class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b"ok"

        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield b"ok"

    return [httpx.Response(200, stream=Body()) for _ in range(count)]


def test_each_send_is_recorded_with_its_resend_count() -> None:
    """The first send is 0, the next 1...; a send holds None until its response is in."""
    sent = Sent()
    assert [record_send(sent), record_send(sent), record_send(sent)] == [0, 1, 2]
    assert sent == [None, None, None]


def test_the_resend_count_goes_on_from_the_requests_earlier_sends() -> None:
    """A request sent 3 times before (its last send counted 2) is counted 3, 4... in this execution.

    The count it carries is read at the execution's first send only: the later sends' count is
    then their own.
    """
    sent = Sent()
    assert record_send(sent, 2) == 3
    assert record_send(sent, 3) == 4
    assert record_send(sent) == 5
    assert (sent.before, sent) == (3, [None, None, None])


def test_every_response_but_the_kept_one_is_closed() -> None:
    """Sync: dropped responses are closed; the caller's is not; a send with no response is skipped."""
    first, kept = _responses(2)
    close_dropped([first, None, kept], kept)
    assert (first.is_closed, kept.is_closed) == (True, False)


async def test_async_responses_are_closed_with_aclose_or_release() -> None:
    """Async: an httpx response is closed with ``aclose``; an aiohttp-like one is released."""

    class Released:
        released = False

        def release(self) -> None:
            self.released = True

    dropped, kept = _responses(2)
    other = Released()
    await aclose_dropped([dropped, other, None, kept], kept)
    assert (dropped.is_closed, other.released, kept.is_closed) == (True, True, False)


def test_two_clients_with_unnamed_configs_that_differ_are_told_at_construction() -> None:
    """Both would be the manager's policy ``"http"``: the second is refused, naming the cure."""
    from otel_resilience import ResilienceConfig, ResilienceManager  # noqa: PLC0415
    from otel_resilience.integrations.httpx import ResilientTransport  # noqa: PLC0415

    manager = ResilienceManager()
    ResilientTransport(ResilienceConfig(timeout=1.0), manager=manager)
    ResilientTransport(ResilienceConfig(timeout=1.0), manager=manager)  # the same config: shared
    with pytest.raises(ValueError, match=r"need a name each \(ResilienceConfig\(name=\.\.\.\)\)"):
        ResilientTransport(ResilienceConfig(timeout=2.0), manager=manager)
    ResilientTransport(ResilienceConfig(name="other", timeout=2.0), manager=manager)  # named: fine


async def test_only_the_sends_the_retry_dropped_are_closed_when_the_request_is_sent_again() -> None:
    """A retried result marks every send so far dropped; a later send's response is left to the end."""
    earlier, retried, later = _responses(3)
    sent = Sent()
    for response in (earlier, retried):
        sent[record_send(sent)] = response
    sent.drop(retried)
    sent[record_send(sent)] = later
    await aclose_earlier(sent)
    assert (earlier.is_closed, retried.is_closed, later.is_closed) == (True, True, False)
    assert sent == [None, None, later]  # closed once: the end's close_dropped skips them


async def test_a_result_that_is_none_of_the_requests_responses_marks_nothing() -> None:
    """Another policy's result, retried by a retry inside the request, drops none of its sends."""
    [mine] = _responses(1)
    sent = Sent()
    sent[record_send(sent)] = mine
    sent.drop(object())
    await aclose_earlier(sent)
    assert sent.dropped == 0
    assert not mine.is_closed
