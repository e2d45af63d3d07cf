"""Engine v2 study: six shapes of a pattern, each run by ONE async and ONE sync driver.

The question (issue "Engine v2", item 1): where do a pattern's decisions live, so that each rule
is written once and the engine alone does the waiting and the calling? This file builds the same
pipeline six times with toy links of its own (it imports none of the library's links)::

    timeout(total) > retry(3 attempts, zero delay) > breaker(consecutive failures)
                   > bulkhead(max_concurrent) > fn

and measures what each shape costs per call over a bare call. The shapes:

* ``A`` (today): every link has ``async def execute`` and ``def execute_sync``; the control
  flow is written twice.
* ``B`` (generator effects): a link's rules are ONE generator function that yields effects
  (``INNER`` = run the rest of the chain, ``Sleep(d)``, ``Deadline(s)`` = run the rest under a
  deadline); one async and one sync interpreter perform them (stamina's one retry iterator
  serving ``for`` and ``async for``, turned inside out).
* ``C`` (permission / step objects): a link is plain methods (``admit``, ``on_success``,
  ``on_failure``, ``on_cancel``) returning tokens and actions; each driver is one loop
  (Resilience4j's ``tryAcquirePermission`` / ``onSuccess`` / ``onError`` / ``releasePermission``).
* ``Co`` (step objects + outcome values): ``C``, but a failure travels up as a ``Failure`` value
  and is raised once at the top (Polly.Core's ``Outcome<T>``).
* ``D`` (hybrid): ``C`` for the per-call links (breaker, bulkhead, timeout), ``B`` for the
  multi-step one (retry).
* ``E`` (one coroutine): every link is ONE ``async def run``; the sync driver steps the same
  coroutine with ``send(None)``, which never suspends because the sync context's sleep, deadline
  and terminal never await anything (Polly.Core: sync execution goes through the one async
  ``ExecuteCore`` and completes synchronously).

The sans-I/O state (breaker counts, bulkhead slots, retry policy) is shared by every shape, so
the figures compare the *shapes*, not the rules. Run::

    python benchmarks/engine_shapes.py                 # 61 paired repeats, ~1 min
    python benchmarks/engine_shapes.py --repeats 101 --with-library --json out.json
    python benchmarks/engine_shapes.py --instructions  # sync, callgrind: noise-free, ~5 min

``--with-library`` also times today's library row of the same name (benchmarks/run.py's
primary contender; only then is ``otel_resilience`` imported) and reports each shape's extra
cost as a share of it, the quantity issue 13's 15 % budget limits.

Scenarios ``full*`` run the four-link pipeline; ``breaker_closed``, ``breaker_open`` and
``retry_fail_twice`` run one link alone, like run.py's rows of those names. Each row is one
shape in one scenario under one driver; the method is benchmarks/_harness.py's
(a bare-call chunk before every contender chunk, contenders in rotating order, medians of
paired overheads). ``X / A`` is the median over repeats of ``overhead(X) / overhead(A)``.
Tests: tests/engine/test_engine_shapes.py runs every shape, both drivers, on the same cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from types import TracebackType
from typing import Any

# ------------------------------------------------------------------------------- shared rules


class RejectedError(Exception):
    """The dependency was never called."""


class CircuitOpenError(RejectedError):
    """The breaker is open."""


class BulkheadFullError(RejectedError):
    """The bulkhead has no free slot."""


class OperationTimeoutError(TimeoutError):
    """Our own deadline expired."""


DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("shapes_deadline", default=None)


def current_deadline() -> float | None:
    """The absolute monotonic deadline of the innermost scope, or None."""
    return DEADLINE.get()


class Retry:
    """Action: wait ``delay``, then run the rest of the chain again with ``token``."""

    __slots__ = ("delay", "token")

    def __init__(self, delay: float, token: Any) -> None:
        self.delay = delay
        self.token = token


class Answer:
    """Action: return ``value`` instead of the outcome (a fallback's answer)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


Action = Retry | Answer | None
"""None passes the outcome through unchanged (return the result, re-raise the error)."""


class Step:
    """The sans-I/O protocol every rule object below speaks (after Resilience4j's permissions).

    ``admit`` returns a token for this run or raises the rejection; ``on_success`` and
    ``on_failure`` read the outcome and return an :data:`Action`; ``on_cancel`` gives back what
    ``admit`` took when the run ends with a ``BaseException`` (cancellation). The defaults admit
    everything and pass every outcome through; the shape C and D drivers skip a hook that a step
    does not override. Shapes A, B and E call the same methods from their link code.
    """

    __slots__ = ()

    seconds: float | None = None

    def admit(self, ctx: Ctx) -> Any:  # noqa: ARG002
        return None

    def on_success(self, token: Any, result: Any) -> Action:  # noqa: ARG002
        return None

    def on_failure(self, token: Any, error: Exception) -> Action:  # noqa: ARG002
        return None

    def on_cancel(self, token: Any) -> None:
        """Give back what ``admit`` took."""


class BreakerCore(Step):
    """Consecutive-failure breaker state (sans-I/O, shared by every shape).

    Closed: counts consecutive failures, opens at ``threshold``. Open: rejects until
    ``reset_after`` seconds have passed, then lets ONE probe through (half-open). A probe's
    success closes; its failure reopens; a rejection from further in (a full bulkhead) or a
    cancellation is not an outcome of the dependency: the permit is given back uncounted.
    """

    __slots__ = ("clock", "failures", "name", "opened_at", "probing", "rejected", "reset_after", "threshold")

    def __init__(self, threshold: int, reset_after: float, clock: Callable[[], float]) -> None:
        self.name = "breaker"
        self.threshold = threshold
        self.reset_after = reset_after
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.rejected = 0

    def admit(self, ctx: Ctx) -> None:  # noqa: ARG002
        if self.opened_at is None:
            return
        if self.probing or self.clock() - self.opened_at < self.reset_after:
            self.rejected += 1
            raise CircuitOpenError(self.name) from None
        self.probing = True

    def on_success(self, token: Any, result: Any) -> Action:  # noqa: ARG002
        self.failures = 0
        if self.opened_at is not None:
            self.opened_at = None
            self.probing = False
        return None

    def on_failure(self, token: Any, error: Exception) -> Action:  # noqa: ARG002
        if isinstance(error, RejectedError):
            self.probing = False
            return None
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self.probing = False
        return None

    def on_cancel(self, token: Any) -> None:  # noqa: ARG002
        self.probing = False

    @property
    def state(self) -> str:
        return "closed" if self.opened_at is None else "open"


class BulkheadCore(Step):
    """A count of busy slots (sans-I/O, shared by every shape); full means rejected."""

    __slots__ = ("active", "max_concurrent", "name")

    def __init__(self, max_concurrent: int) -> None:
        self.name = "bulkhead"
        self.max_concurrent = max_concurrent
        self.active = 0

    def admit(self, ctx: Ctx) -> None:  # noqa: ARG002
        if self.active >= self.max_concurrent:
            raise BulkheadFullError(self.name) from None
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    def on_success(self, token: Any, result: Any) -> Action:  # noqa: ARG002
        self.active -= 1
        return None

    def on_failure(self, token: Any, error: Exception) -> Action:  # noqa: ARG002
        self.active -= 1
        return None

    def on_cancel(self, token: Any) -> None:  # noqa: ARG002
        self.active -= 1


class RetryPolicy(Step):
    """Which failures are retried, and after how long (sans-I/O, shared by every shape)."""

    __slots__ = ("attempts", "delay")

    def __init__(self, attempts: int, delay: float = 0.0) -> None:
        self.attempts = attempts
        self.delay = delay

    def next_delay(self, attempt: int, error: Exception) -> float | None:
        """The wait before attempt ``attempt + 1``, or None to give up (re-raise ``error``).

        A rejection is never retried; a wait that would end past the deadline is not started.
        """
        if attempt >= self.attempts or isinstance(error, RejectedError):
            return None
        deadline = DEADLINE.get()
        if deadline is not None and time.monotonic() + self.delay >= deadline:
            return None
        return self.delay

    def on_failure(self, token: int | None, error: Exception) -> Action:
        attempt = 1 if token is None else token  # the token is the attempt number (None: first)
        delay = self.next_delay(attempt, error)
        return None if delay is None else Retry(delay, attempt + 1)


class TimeoutRule(Step):
    """The total deadline: only a duration; the drivers open the scope."""

    __slots__ = ("seconds",)

    seconds: float

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


if sys.version_info >= (3, 11):
    from asyncio import timeout as _loop_timeout
else:  # the study's async shapes are built on asyncio.timeout (the library's deadlines are not): 3.11+

    def _loop_timeout(delay: float | None) -> Any:
        msg = f"the engine shapes study needs asyncio.timeout (Python 3.11+), not {delay}"
        raise RuntimeError(msg)


class SyncDeadlineScope:
    """Publish ``min(outer, now + seconds)`` while the rest of the chain runs (sync)."""

    __slots__ = ("_token", "seconds")

    _token: contextvars.Token[float | None]

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        deadline = time.monotonic() + self.seconds
        outer = DEADLINE.get()
        self._token = DEADLINE.set(deadline if outer is None or outer > deadline else outer)

    def __exit__(self, *exc: object) -> None:
        DEADLINE.reset(self._token)

    # Shape E runs the same scope under ``async with`` in its sync context: nothing awaits.
    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


class AsyncDeadlineScope:
    """Cancel the rest of the chain at the deadline and raise our own timeout error (async)."""

    __slots__ = ("_cm", "_token", "seconds")

    _cm: Any
    _token: contextvars.Token[float | None]

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self) -> None:
        deadline = time.monotonic() + self.seconds
        outer = DEADLINE.get()
        self._token = DEADLINE.set(deadline if outer is None or outer > deadline else outer)
        self._cm = _loop_timeout(self.seconds)
        await self._cm.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        DEADLINE.reset(self._token)
        try:
            await self._cm.__aexit__(kind, error, tb)
        except TimeoutError:
            if self._cm.expired():
                raise OperationTimeoutError(self.seconds) from None
            raise


class Ctx:
    """One execution: the function, its arguments, and which driver runs it."""

    __slots__ = ("args", "fn", "sync")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], *, sync: bool) -> None:
        self.fn = fn
        self.args = args
        self.sync = sync


FULL = ("timeout", "retry", "breaker", "bulkhead")
"""The study's pipeline, outer to inner."""


class Config:
    """The toy pipeline's knobs (the same for every shape); ``links`` picks and orders the links."""

    __slots__ = ("attempts", "clock", "links", "max_concurrent", "reset_after", "threshold", "timeout")

    def __init__(
        self,
        *,
        links: tuple[str, ...] = FULL,
        timeout: float = 30.0,
        attempts: int = 3,
        threshold: int = 5,
        reset_after: float = 30.0,
        max_concurrent: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.links = links
        self.timeout = timeout
        self.attempts = attempts
        self.threshold = threshold
        self.reset_after = reset_after
        self.max_concurrent = max_concurrent
        self.clock = clock


class Pipeline:
    """A linked chain plus the shape's two drivers; ``breaker``/``bulkhead`` expose the state."""

    __slots__ = ("_run_async", "_run_sync", "breaker", "bulkhead", "head")

    def __init__(
        self,
        head: Any,
        run_async: Callable[[Any, Ctx], Awaitable[Any]],
        run_sync: Callable[[Any, Ctx], Any],
        breaker: BreakerCore,
        bulkhead: BulkheadCore,
    ) -> None:
        self.head = head
        self._run_async = run_async
        self._run_sync = run_sync
        self.breaker = breaker
        self.bulkhead = bulkhead

    async def execute(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await self._run_async(self.head, Ctx(fn, args, sync=False))

    def execute_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._run_sync(self.head, Ctx(fn, args, sync=True))


def _cores(cfg: Config) -> tuple[BreakerCore, BulkheadCore, RetryPolicy]:
    return (
        BreakerCore(cfg.threshold, cfg.reset_after, cfg.clock),
        BulkheadCore(cfg.max_concurrent),
        RetryPolicy(cfg.attempts),
    )


def _rules(cfg: Config) -> tuple[dict[str, Any], BreakerCore, BulkheadCore]:
    """The sans-I/O object of each link kind, for one pipeline."""
    breaker, bulkhead, policy = _cores(cfg)
    rules = {"timeout": TimeoutRule(cfg.timeout), "retry": policy, "breaker": breaker, "bulkhead": bulkhead}
    return rules, breaker, bulkhead


# ------------------------------------------------------- A: two methods per link (today's shape)


class ATerminal:
    __slots__ = ()

    def execute(self, ctx: Ctx) -> Awaitable[Any]:
        return ctx.fn(*ctx.args)  # type: ignore[no-any-return]

    def execute_sync(self, ctx: Ctx) -> Any:
        return ctx.fn(*ctx.args)


class ATimeout:
    __slots__ = ("next", "seconds")

    def __init__(self, rule: TimeoutRule, nxt: Any) -> None:
        self.seconds = rule.seconds
        self.next = nxt

    async def execute(self, ctx: Ctx) -> Any:
        async with AsyncDeadlineScope(self.seconds):
            return await self.next.execute(ctx)

    def execute_sync(self, ctx: Ctx) -> Any:
        with SyncDeadlineScope(self.seconds):
            return self.next.execute_sync(ctx)


class ARetry:
    __slots__ = ("next", "policy")

    def __init__(self, policy: RetryPolicy, nxt: Any) -> None:
        self.policy = policy
        self.next = nxt

    async def execute(self, ctx: Ctx) -> Any:
        attempt = 1
        while True:
            try:
                return await self.next.execute(ctx)
            except Exception as error:
                delay = self.policy.next_delay(attempt, error)
                if delay is None:
                    raise
            attempt += 1
            if delay:
                await asyncio.sleep(delay)

    def execute_sync(self, ctx: Ctx) -> Any:
        attempt = 1
        while True:
            try:
                return self.next.execute_sync(ctx)
            except Exception as error:
                delay = self.policy.next_delay(attempt, error)
                if delay is None:
                    raise
            attempt += 1
            if delay:
                time.sleep(delay)


class ABreaker:
    __slots__ = ("core", "next")

    def __init__(self, core: BreakerCore, nxt: Any) -> None:
        self.core = core
        self.next = nxt

    async def execute(self, ctx: Ctx) -> Any:
        core = self.core
        core.admit(ctx)
        try:
            result = await self.next.execute(ctx)
        except Exception as error:
            core.on_failure(None, error)
            raise
        except BaseException:
            core.on_cancel(None)
            raise
        core.on_success(None, result)
        return result

    def execute_sync(self, ctx: Ctx) -> Any:
        core = self.core
        core.admit(ctx)
        try:
            result = self.next.execute_sync(ctx)
        except Exception as error:
            core.on_failure(None, error)
            raise
        except BaseException:
            core.on_cancel(None)
            raise
        core.on_success(None, result)
        return result


class ABulkhead:
    __slots__ = ("core", "next")

    def __init__(self, core: BulkheadCore, nxt: Any) -> None:
        self.core = core
        self.next = nxt

    async def execute(self, ctx: Ctx) -> Any:
        core = self.core
        core.admit(ctx)
        try:
            return await self.next.execute(ctx)
        finally:
            core.release()

    def execute_sync(self, ctx: Ctx) -> Any:
        core = self.core
        core.admit(ctx)
        try:
            return self.next.execute_sync(ctx)
        finally:
            core.release()


def _a_run_async(head: Any, ctx: Ctx) -> Awaitable[Any]:
    return head.execute(ctx)  # type: ignore[no-any-return]


def _a_run_sync(head: Any, ctx: Ctx) -> Any:
    return head.execute_sync(ctx)


A_LINKS = {"timeout": ATimeout, "retry": ARetry, "breaker": ABreaker, "bulkhead": ABulkhead}


def build_a(cfg: Config) -> Pipeline:
    rules, breaker, bulkhead = _rules(cfg)
    head: Any = ATerminal()
    for kind in reversed(cfg.links):
        head = A_LINKS[kind](rules[kind], head)
    return Pipeline(head, _a_run_async, _a_run_sync, breaker, bulkhead)


# ------------------------------------------------------ B: one generator of effects per link


class _Inner:
    """Effect: run the rest of the chain; the driver sends its result or throws its error."""

    __slots__ = ()


INNER = _Inner()


class Sleep:
    """Effect: wait ``seconds`` (``asyncio.sleep`` or ``time.sleep``), then resume."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class Deadline:
    """Effect: run the rest of the chain under a deadline ``seconds`` from now."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


Rules = Generator[Any, Any, Any]


class BLink:
    """A link of shape B: ``rules`` is a generator function; ``next`` is None at the end."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next: BLink | None = None

    def rules(self, ctx: Ctx) -> Rules:
        raise NotImplementedError


class BTimeout(BLink):
    __slots__ = ("effect",)

    def __init__(self, rule: TimeoutRule) -> None:
        super().__init__()
        self.effect = Deadline(rule.seconds)

    def rules(self, ctx: Ctx) -> Rules:  # noqa: ARG002
        return (yield self.effect)


class BRetry(BLink):
    __slots__ = ("policy",)

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__()
        self.policy = policy

    def rules(self, ctx: Ctx) -> Rules:  # noqa: ARG002
        attempt = 1
        while True:
            try:
                return (yield INNER)
            except Exception as error:
                delay = self.policy.next_delay(attempt, error)
                if delay is None:
                    raise
            attempt += 1
            if delay:
                yield Sleep(delay)


class BBreaker(BLink):
    __slots__ = ("core",)

    def __init__(self, core: BreakerCore) -> None:
        super().__init__()
        self.core = core

    def rules(self, ctx: Ctx) -> Rules:
        core = self.core
        core.admit(ctx)
        try:
            result = yield INNER
        except Exception as error:
            core.on_failure(None, error)
            raise
        except BaseException:
            core.on_cancel(None)
            raise
        core.on_success(None, result)
        return result


class BBulkhead(BLink):
    __slots__ = ("core",)

    def __init__(self, core: BulkheadCore) -> None:
        super().__init__()
        self.core = core

    def rules(self, ctx: Ctx) -> Rules:
        core = self.core
        core.admit(ctx)
        try:
            return (yield INNER)
        finally:
            core.release()


async def _b_run_async(link: BLink | None, ctx: Ctx) -> Any:
    """The one async interpreter of shape B."""
    if link is None:
        return await ctx.fn(*ctx.args)
    gen = link.rules(ctx)
    nxt = link.next
    try:
        effect = gen.send(None)
        while True:
            try:
                if effect is INNER:
                    value = await _b_run_async(nxt, ctx)
                elif type(effect) is Deadline:
                    async with AsyncDeadlineScope(effect.seconds):
                        value = await _b_run_async(nxt, ctx)
                else:
                    await asyncio.sleep(effect.seconds)
                    value = None
            except BaseException as error:  # the rules decide; cancellation reaches their finally
                effect = gen.throw(error)
            else:
                effect = gen.send(value)
    except StopIteration as done:
        return done.value


def _b_run_sync(link: BLink | None, ctx: Ctx) -> Any:
    """The one sync interpreter of shape B."""
    if link is None:
        return ctx.fn(*ctx.args)
    gen = link.rules(ctx)
    nxt = link.next
    try:
        effect = gen.send(None)
        while True:
            try:
                if effect is INNER:
                    value = _b_run_sync(nxt, ctx)
                elif type(effect) is Deadline:
                    with SyncDeadlineScope(effect.seconds):
                        value = _b_run_sync(nxt, ctx)
                else:
                    time.sleep(effect.seconds)
                    value = None
            except BaseException as error:
                effect = gen.throw(error)
            else:
                effect = gen.send(value)
    except StopIteration as done:
        return done.value


def _link_b(links: list[BLink]) -> BLink:
    for outer, inner in itertools.pairwise(links):
        outer.next = inner
    return links[0]


B_LINKS = {"timeout": BTimeout, "retry": BRetry, "breaker": BBreaker, "bulkhead": BBulkhead}


def build_b(cfg: Config) -> Pipeline:
    rules, breaker, bulkhead = _rules(cfg)
    head = _link_b([B_LINKS[kind](rules[kind]) for kind in cfg.links])
    return Pipeline(head, _b_run_async, _b_run_sync, breaker, bulkhead)


# ------------------------------------------------ C: permission / step objects, one loop each


class Node:
    """One linked step of shapes C and D; ``step`` is None for the terminal node.

    Linking reads each hook once: a hook the step does not override is stored as None, so the
    drivers skip it instead of calling a method that does nothing.
    """

    __slots__ = ("admit", "last", "next", "on_cancel", "on_failure", "on_success", "seconds", "step")

    def __init__(self, step: Any, nxt: Node | None) -> None:
        self.step = step
        self.next = nxt
        self.last = nxt is not None and nxt.step is None
        self.seconds: float | None = getattr(step, "seconds", None)
        self.admit = _hook(step, "admit")
        self.on_success = _hook(step, "on_success")
        self.on_failure = _hook(step, "on_failure")
        self.on_cancel = _hook(step, "on_cancel")


def _hook(step: Any, name: str) -> Any:
    """``step.<name>``, bound; None when the step keeps :class:`Step`'s default or has none."""
    own = getattr(type(step), name, None)
    return None if own is None or own is getattr(Step, name) else getattr(step, name)


async def _c_run_async(node: Node, ctx: Ctx) -> Any:
    """The one async driver of shape C."""
    step = node.step
    if step is None:
        return await ctx.fn(*ctx.args)
    token = None if node.admit is None else node.admit(ctx)
    nxt = node.next
    delay = 0.0  # the wait before the next run, set by a Retry action
    while True:
        try:
            if delay:  # inside the try: a cancelled wait reaches on_cancel
                await asyncio.sleep(delay)
            if node.seconds is not None:
                async with AsyncDeadlineScope(node.seconds):
                    result = await _c_run_async(nxt, ctx)  # type: ignore[arg-type]
            elif node.last:  # call fn here: no driver frame for the terminal
                result = await ctx.fn(*ctx.args)
            else:
                result = await _c_run_async(nxt, ctx)  # type: ignore[arg-type]
        except Exception as error:
            if node.on_failure is None:
                raise
            action = node.on_failure(token, error)
            if action is None:
                raise
            if type(action) is Retry:
                delay = action.delay
                token = action.token
                continue
            return action.value
        except BaseException:
            if node.on_cancel is not None:
                node.on_cancel(token)
            raise
        if node.on_success is None:
            return result
        action = node.on_success(token, result)
        return result if action is None else action.value


def _c_run_sync(node: Node, ctx: Ctx) -> Any:
    """The one sync driver of shape C."""
    step = node.step
    if step is None:
        return ctx.fn(*ctx.args)
    token = None if node.admit is None else node.admit(ctx)
    nxt = node.next
    delay = 0.0  # the wait before the next run, set by a Retry action
    while True:
        try:
            if delay:  # inside the try: a cancelled wait reaches on_cancel
                time.sleep(delay)
            if node.seconds is not None:
                with SyncDeadlineScope(node.seconds):
                    result = _c_run_sync(nxt, ctx)  # type: ignore[arg-type]
            elif node.last:  # call fn here: no driver frame for the terminal
                result = ctx.fn(*ctx.args)
            else:
                result = _c_run_sync(nxt, ctx)  # type: ignore[arg-type]
        except Exception as error:
            if node.on_failure is None:
                raise
            action = node.on_failure(token, error)
            if action is None:
                raise
            if type(action) is Retry:
                delay = action.delay
                token = action.token
                continue
            return action.value
        except BaseException:
            if node.on_cancel is not None:
                node.on_cancel(token)
            raise
        if node.on_success is None:
            return result
        action = node.on_success(token, result)
        return result if action is None else action.value


def _link_nodes(steps: list[Any]) -> Node:
    node = Node(None, None)
    for step in reversed(steps):
        node = Node(step, node)
    return node


def build_c(cfg: Config) -> Pipeline:
    rules, breaker, bulkhead = _rules(cfg)
    head = _link_nodes([rules[kind] for kind in cfg.links])
    return Pipeline(head, _c_run_async, _c_run_sync, breaker, bulkhead)


# ------------------------- Co: C with outcome values (Polly's Outcome): raise once, at the top


class Failure:
    """An outcome that is an error, passed up the chain as a value instead of re-raised per link."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


async def _o_run_async(node: Node, ctx: Ctx) -> Any:  # noqa: PLR0911
    """Shape Co's async driver: returns the result or a :class:`Failure`; raises only BaseException."""
    if node.step is None:
        try:
            return await ctx.fn(*ctx.args)
        except Exception as error:
            return Failure(error)
    token = None
    if node.admit is not None:
        try:
            token = node.admit(ctx)
        except Exception as error:  # the rejection is an outcome too
            return Failure(error)
    nxt = node.next
    delay = 0.0  # the wait before the next run, set by a Retry action
    while True:
        try:
            if delay:  # inside the try: a cancelled wait reaches on_cancel
                await asyncio.sleep(delay)
            if node.seconds is not None:
                async with AsyncDeadlineScope(node.seconds):
                    outcome = await _o_run_async(nxt, ctx)  # type: ignore[arg-type]
            elif node.last:  # call fn here: no driver frame for the terminal
                try:
                    outcome = await ctx.fn(*ctx.args)
                except Exception as error:
                    outcome = Failure(error)
            else:
                outcome = await _o_run_async(nxt, ctx)  # type: ignore[arg-type]
        except OperationTimeoutError as error:  # our own scope's expiry, raised by asyncio.timeout
            outcome = Failure(error)
        except BaseException:
            if node.on_cancel is not None:
                node.on_cancel(token)
            raise
        if type(outcome) is Failure:
            if node.on_failure is None:
                return outcome
            action = node.on_failure(token, outcome.error)
            if action is None:
                return outcome
            if type(action) is Retry:
                delay = action.delay
                token = action.token
                continue
            return action.value
        if node.on_success is None:
            return outcome
        action = node.on_success(token, outcome)
        return outcome if action is None else action.value


def _o_run_sync(node: Node, ctx: Ctx) -> Any:  # noqa: PLR0911
    """Shape Co's sync driver."""
    if node.step is None:
        try:
            return ctx.fn(*ctx.args)
        except Exception as error:
            return Failure(error)
    token = None
    if node.admit is not None:
        try:
            token = node.admit(ctx)
        except Exception as error:
            return Failure(error)
    nxt = node.next
    delay = 0.0  # the wait before the next run, set by a Retry action
    while True:
        try:
            if delay:  # inside the try: a cancelled wait reaches on_cancel
                time.sleep(delay)
            if node.seconds is not None:
                with SyncDeadlineScope(node.seconds):
                    outcome = _o_run_sync(nxt, ctx)  # type: ignore[arg-type]
            elif node.last:  # call fn here: no driver frame for the terminal
                try:
                    outcome = ctx.fn(*ctx.args)
                except Exception as error:
                    outcome = Failure(error)
            else:
                outcome = _o_run_sync(nxt, ctx)  # type: ignore[arg-type]
        except BaseException:
            if node.on_cancel is not None:
                node.on_cancel(token)
            raise
        if type(outcome) is Failure:
            if node.on_failure is None:
                return outcome
            action = node.on_failure(token, outcome.error)
            if action is None:
                return outcome
            if type(action) is Retry:
                delay = action.delay
                token = action.token
                continue
            return action.value
        if node.on_success is None:
            return outcome
        action = node.on_success(token, outcome)
        return outcome if action is None else action.value


class OutcomePipeline(Pipeline):
    """Shape Co's entry points: the one place a :class:`Failure` becomes a raised error."""

    __slots__ = ()

    async def execute(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        outcome = await _o_run_async(self.head, Ctx(fn, args, sync=False))
        if type(outcome) is Failure:
            error = outcome.error
            del outcome
            raise error
        return outcome

    def execute_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        outcome = _o_run_sync(self.head, Ctx(fn, args, sync=True))
        if type(outcome) is Failure:
            error = outcome.error
            del outcome
            raise error
        return outcome


def build_co(cfg: Config) -> Pipeline:
    rules, breaker, bulkhead = _rules(cfg)
    head = _link_nodes([rules[kind] for kind in cfg.links])
    return OutcomePipeline(head, _o_run_async, _o_run_sync, breaker, bulkhead)


# ------------------------------------ D: hybrid (C for per-call links, B for multi-step ones)


class DRetry:
    """Shape D's retry: a generator of effects, as in B, inside C's drivers."""

    __slots__ = ("policy",)

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    rules = BRetry.rules


async def _d_run_async(node: Node, ctx: Ctx) -> Any:
    """Shape D's async driver: C's loop, or B's interpreter for a step with ``rules``."""
    step = node.step
    if step is None:
        return await ctx.fn(*ctx.args)
    if type(step) is DRetry:
        return await _d_interpret_async(node, ctx)
    token = None if node.admit is None else node.admit(ctx)
    nxt = node.next
    try:
        if node.seconds is not None:
            async with AsyncDeadlineScope(node.seconds):
                result = await _d_run_async(nxt, ctx)  # type: ignore[arg-type]
        elif node.last:  # call fn here: no driver frame for the terminal
            result = await ctx.fn(*ctx.args)
        else:
            result = await _d_run_async(nxt, ctx)  # type: ignore[arg-type]
    except Exception as error:
        if node.on_failure is None:
            raise
        action = node.on_failure(token, error)
        if action is None:
            raise
        return action.value
    except BaseException:
        if node.on_cancel is not None:
            node.on_cancel(token)
        raise
    if node.on_success is None:
        return result
    action = node.on_success(token, result)
    return result if action is None else action.value


async def _d_interpret_async(node: Node, ctx: Ctx) -> Any:
    gen = node.step.rules(ctx)
    nxt = node.next
    try:
        effect = gen.send(None)
        while True:
            try:
                if effect is INNER:
                    value = await _d_run_async(nxt, ctx)  # type: ignore[arg-type]
                else:
                    await asyncio.sleep(effect.seconds)
                    value = None
            except BaseException as error:
                effect = gen.throw(error)
            else:
                effect = gen.send(value)
    except StopIteration as done:
        return done.value


def _d_run_sync(node: Node, ctx: Ctx) -> Any:
    """Shape D's sync driver."""
    step = node.step
    if step is None:
        return ctx.fn(*ctx.args)
    if type(step) is DRetry:
        return _d_interpret_sync(node, ctx)
    token = None if node.admit is None else node.admit(ctx)
    nxt = node.next
    try:
        if node.seconds is not None:
            with SyncDeadlineScope(node.seconds):
                result = _d_run_sync(nxt, ctx)  # type: ignore[arg-type]
        elif node.last:  # call fn here: no driver frame for the terminal
            result = ctx.fn(*ctx.args)
        else:
            result = _d_run_sync(nxt, ctx)  # type: ignore[arg-type]
    except Exception as error:
        if node.on_failure is None:
            raise
        action = node.on_failure(token, error)
        if action is None:
            raise
        return action.value
    except BaseException:
        if node.on_cancel is not None:
            node.on_cancel(token)
        raise
    if node.on_success is None:
        return result
    action = node.on_success(token, result)
    return result if action is None else action.value


def _d_interpret_sync(node: Node, ctx: Ctx) -> Any:
    gen = node.step.rules(ctx)
    nxt = node.next
    try:
        effect = gen.send(None)
        while True:
            try:
                if effect is INNER:
                    value = _d_run_sync(nxt, ctx)  # type: ignore[arg-type]
                else:
                    time.sleep(effect.seconds)
                    value = None
            except BaseException as error:
                effect = gen.throw(error)
            else:
                effect = gen.send(value)
    except StopIteration as done:
        return done.value


def build_d(cfg: Config) -> Pipeline:
    rules, breaker, bulkhead = _rules(cfg)
    rules["retry"] = DRetry(rules["retry"])
    head = _link_nodes([rules[kind] for kind in cfg.links])
    return Pipeline(head, _d_run_async, _d_run_sync, breaker, bulkhead)


# ------------------------------- E: one coroutine per link; the sync driver steps it to the end


async def _sleep_now(seconds: float) -> None:
    """The sync context's sleep: blocks the thread, never suspends the coroutine."""
    time.sleep(seconds)  # noqa: ASYNC251 - the point of shape E, and a lint it has to silence


class ELink:
    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next: Any = None

    async def run(self, ctx: Ctx) -> Any:
        raise NotImplementedError


class ETerminal(ELink):
    __slots__ = ()

    async def run(self, ctx: Ctx) -> Any:
        if ctx.sync:
            return ctx.fn(*ctx.args)
        return await ctx.fn(*ctx.args)


class ETimeout(ELink):
    __slots__ = ("seconds",)

    def __init__(self, rule: TimeoutRule) -> None:
        super().__init__()
        self.seconds = rule.seconds

    async def run(self, ctx: Ctx) -> Any:
        scope = SyncDeadlineScope if ctx.sync else AsyncDeadlineScope
        async with scope(self.seconds):
            return await self.next.run(ctx)


class ERetry(ELink):
    __slots__ = ("policy",)

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__()
        self.policy = policy

    async def run(self, ctx: Ctx) -> Any:
        attempt = 1
        while True:
            try:
                return await self.next.run(ctx)
            except Exception as error:
                delay = self.policy.next_delay(attempt, error)
                if delay is None:
                    raise
            attempt += 1
            if delay:
                await (_sleep_now(delay) if ctx.sync else asyncio.sleep(delay))


class EBreaker(ELink):
    __slots__ = ("core",)

    def __init__(self, core: BreakerCore) -> None:
        super().__init__()
        self.core = core

    async def run(self, ctx: Ctx) -> Any:
        core = self.core
        core.admit(ctx)
        try:
            result = await self.next.run(ctx)
        except Exception as error:
            core.on_failure(None, error)
            raise
        except BaseException:
            core.on_cancel(None)
            raise
        core.on_success(None, result)
        return result


class EBulkhead(ELink):
    __slots__ = ("core",)

    def __init__(self, core: BulkheadCore) -> None:
        super().__init__()
        self.core = core

    async def run(self, ctx: Ctx) -> Any:
        core = self.core
        core.admit(ctx)
        try:
            return await self.next.run(ctx)
        finally:
            core.release()


def _e_run_async(head: ELink, ctx: Ctx) -> Coroutine[Any, Any, Any]:
    return head.run(ctx)


def _e_run_sync(head: ELink, ctx: Ctx) -> Any:
    """The sync driver of shape E: one ``send(None)`` runs the whole coroutine chain."""
    coro = head.run(ctx)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    msg = "a sync execution suspended: a link awaited something real"
    raise RuntimeError(msg)


E_LINKS = {"timeout": ETimeout, "retry": ERetry, "breaker": EBreaker, "bulkhead": EBulkhead}


def build_e(cfg: Config) -> Pipeline:
    rules, breaker, bulkhead = _rules(cfg)
    links: list[ELink] = [E_LINKS[kind](rules[kind]) for kind in cfg.links]
    links.append(ETerminal())
    for outer, inner in itertools.pairwise(links):
        outer.next = inner
    return Pipeline(links[0], _e_run_async, _e_run_sync, breaker, bulkhead)


SHAPES: dict[str, Callable[[Config], Pipeline]] = {
    "A": build_a,
    "B": build_b,
    "C": build_c,
    "Co": build_co,
    "D": build_d,
    "E": build_e,
}
"""Every shape's builder, by letter."""

LABELS = {
    "A": "A two methods per link (today)",
    "B": "B generator of effects",
    "C": "C step objects (permission protocol)",
    "Co": "Co step objects + outcome values",
    "D": "D hybrid: C + generator retry",
    "E": "E one coroutine, sync by send(None)",
}


# ------------------------------------------------------------------------------- measurement


class BoomError(Exception):
    """The failure of the flaky function."""


async def _af() -> int:
    return 1


def _sf() -> int:
    return 1


class FailTwice:
    """Fails on two calls out of three: each operation is 'fail, fail, succeed'."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        self.n += 1
        if self.n % 3:
            raise BoomError
        return 1


class AsyncFailTwice(FailTwice):
    __slots__ = ()

    async def __call__(self) -> int:  # type: ignore[override]
        return super().__call__()


SCENARIOS: dict[str, tuple[tuple[str, ...], str]] = {
    "full": (FULL, "success"),
    "full_breaker_open": (FULL, "breaker_open"),
    "full_retry_fail_twice": (FULL, "retry_fail_twice"),
    "breaker_closed": (("breaker",), "success"),
    "breaker_open": (("breaker",), "breaker_open"),
    "retry_fail_twice": (("retry",), "retry_fail_twice"),
}
"""Scenario -> (links, what the call does). The last three mirror benchmarks/run.py's rows."""

LIBRARY_ROWS = ("full", "breaker_closed", "breaker_open", "retry_fail_twice")
"""Scenarios that also exist in benchmarks/run.py, where ``--with-library`` adds today's row."""


def _harness() -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _harness  # noqa: PLC0415

    return _harness


_LIBRARY_GROUPS: dict[str, list[Any]] = {}


def _library_contender(driver: str, scenario: str) -> Any:
    """The library's own primary row of ``scenario`` in benchmarks/run.py (``--with-library``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _peers import load_peers  # noqa: PLC0415
    from _scenarios import build_groups  # noqa: PLC0415

    if scenario not in _LIBRARY_GROUPS:  # one build per scenario: run.py's names stay unique
        _LIBRARY_GROUPS[scenario] = build_groups(load_peers({"all"}), {scenario})
    group = next(g for g in _LIBRARY_GROUPS[scenario] if g.driver == driver)
    ours = next(c for c in group.contenders if c.primary)
    ours.label, ours.lib, ours.primary = "L today's library (run.py's row)", "L", False
    return ours


def _group(driver: str, scenario: str, with_library: bool) -> Any:
    h = _harness()
    links, what = SCENARIOS[scenario]
    chunk = h.async_chunk if driver == "async" else h.sync_chunk
    aw = "await " if driver == "async" else ""
    verb = "execute" if driver == "async" else "execute_sync"
    f = _af if driver == "async" else _sf
    baseline = chunk(f"{aw}f()", {"f": f})
    contenders = []
    ns: dict[str, Any]
    for letter, build in SHAPES.items():
        p = build(Config(links=links, reset_after=1e9))
        if what == "success":
            stmt, ns = f"{aw}p.{verb}(f)", {"p": p, "f": f}
        elif what == "breaker_open":
            for _ in range(p.breaker.threshold):
                p.breaker.on_failure(None, BoomError())
            stmt = f"try:\n    {aw}p.{verb}(f)\nexcept R:\n    pass"
            ns = {"p": p, "f": f, "R": CircuitOpenError}
        else:
            flaky = AsyncFailTwice() if driver == "async" else FailTwice()
            stmt, ns = f"{aw}p.{verb}(g)", {"p": p, "g": flaky}
        contenders.append(h.Contender(LABELS[letter], letter, chunk(stmt, ns), primary=letter == "A"))
    if with_library and scenario in LIBRARY_ROWS:
        contenders.append(_library_contender(driver, scenario))
    return h.Group(scenario, scenario, driver, baseline, contenders)


def measure(repeats: int, target_ms: float, *, with_library: bool = False) -> list[dict[str, Any]]:
    """Run every scenario under both drivers; return one record per (scenario, driver, shape)."""
    h = _harness()
    settings = h.Settings(repeats=repeats, target_ns=int(target_ms * 1e6))
    out = []
    for scenario in SCENARIOS:
        for driver in ("async", "sync"):
            for row in h.run_group(_group(driver, scenario, with_library), settings):
                # vs_ours = median over repeats of overhead(A) / overhead(X); with an odd number of
                # repeats its reciprocal is exactly the median of overhead(X) / overhead(A).
                ratio = 1.0 if row.primary else (1 / row.vs_ours if row.vs_ours else float("nan"))
                out.append(
                    {
                        "scenario": scenario,
                        "driver": driver,
                        "shape": row.lib,
                        "label": row.label,
                        "overhead_ns": row.overhead_ns,
                        "q1": row.overhead_q1,
                        "q3": row.overhead_q3,
                        "baseline_ns": row.baseline_ns,
                        "vs_A": ratio,
                    }
                )
    return out


def _find(records: list[dict[str, Any]], shape: str, scenario: str, driver: str) -> dict[str, Any] | None:
    for rec in records:
        if rec["shape"] == shape and rec["scenario"] == scenario and rec["driver"] == driver:
            return rec
    return None


def table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per scenario and driver, one column per shape, ratios to A."""
    lines = ["| scenario | driver | " + " | ".join(SHAPES) + " |", "|---|---|" + "---:|" * len(SHAPES)]
    for scenario in SCENARIOS:
        for driver in ("async", "sync"):
            cells = []
            for letter in SHAPES:
                rec = _find(records, letter, scenario, driver)
                cells.append("" if rec is None else f"{rec['vs_A']:.2f}")
            lines.append(f"| {scenario} | {driver} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def library_share(records: list[dict[str, Any]]) -> str:
    """Markdown: each shape's extra overhead over A, as a share of today's library row.

    ``(X / A - 1) * median overhead A / median overhead L``, all from the same group (same
    baseline, interleaved repeats; ``X / A`` is the median of paired ratios, which is steadier
    than a difference of medians): the part of issue 13's 15 % budget a shape would spend on
    that row if the library's links kept today's work and changed only their shape.
    """
    lines = ["| row | driver | " + " | ".join(SHAPES) + " |", "|---|---|" + "---:|" * len(SHAPES)]
    for scenario in LIBRARY_ROWS:
        for driver in ("async", "sync"):
            lib = _find(records, "L", scenario, driver)
            base = _find(records, "A", scenario, driver)
            if lib is None or base is None:
                continue
            cells = []
            for letter in SHAPES:
                rec = _find(records, letter, scenario, driver)
                share = (rec["vs_A"] - 1) * base["overhead_ns"] / lib["overhead_ns"] if rec else float("nan")
                cells.append(f"{share:+.0%}")
            lines.append(f"| {scenario} | {driver} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loop_sync(shape: str, scenario: str, n: int) -> None:
    """Make ``n`` sync calls of ``scenario`` through ``shape`` (``bare``: the bare call)."""
    links, what = SCENARIOS[scenario]
    if shape == "bare":
        for _ in range(n):
            _sf()
        return
    p = SHAPES[shape](Config(links=links, reset_after=1e9))
    if what == "breaker_open":
        for _ in range(p.breaker.threshold):
            p.breaker.on_failure(None, BoomError())
        for _ in range(n):
            with contextlib.suppress(CircuitOpenError):
                p.execute_sync(_sf)
        return
    fn = FailTwice() if what == "retry_fail_twice" else _sf
    for _ in range(n):
        p.execute_sync(fn)


def _instructions(valgrind: str, shape: str, scenario: str, n: int) -> int:
    """Instructions callgrind counts for a process making ``n`` calls (``--_loop``)."""
    done = subprocess.run(  # noqa: PLW1510 - the count is read from stderr either way
        [
            valgrind,
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--_loop",
            shape,
            scenario,
            str(n),
        ],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        msg = f"callgrind gave no count for {shape} {scenario}: {done.stderr[-300:]}"
        raise RuntimeError(msg)
    return int(found.group(1))


def instruction_table(n: int = 4000) -> str:
    """Markdown: sync overhead in instructions per call (callgrind, deterministic), X / A.

    Each cell is ``(I(n calls) - I(start-up)) / n`` minus the same for a bare call, over A's
    (building a pipeline costs a few thousand instructions, under one per call at ``n = 4000``).
    Timing on a shared machine is noisy; instruction counts are not (sync only: the async rows
    count the event loop's own work).
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return "valgrind not found: no instruction counts"
    start = _instructions(valgrind, "bare", "full", 0)
    bare = (_instructions(valgrind, "bare", "full", n) - start) / n
    lines = ["| scenario (sync) | " + " | ".join(SHAPES) + " |", "|---|" + "---:|" * len(SHAPES)]
    for scenario in SCENARIOS:
        per_call = {
            letter: (_instructions(valgrind, letter, scenario, n) - start) / n - bare for letter in SHAPES
        }
        cells = [f"{per_call[letter] / per_call['A']:.2f}" for letter in SHAPES]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=61, help="paired repeats (odd; default 61)")
    parser.add_argument("--target-ms", type=float, default=2.5, help="one timed chunk in ms")
    parser.add_argument("--json", type=Path, help="write the records here")
    parser.add_argument(
        "--with-library",
        action="store_true",
        help="also time today's library on the rows run.py has, to express shapes' costs as its share",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count sync instructions per call with callgrind instead of timing (deterministic)",
    )
    parser.add_argument("--_loop", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._loop:
        shape, scenario, n = args._loop
        _loop_sync(shape, scenario, int(n))
        return 0
    if args.instructions:
        print("Sync overhead in instructions per call (callgrind), X / A:\n")
        print(instruction_table())
        return 0
    repeats = args.repeats | 1
    started = time.perf_counter()
    records = measure(repeats, args.target_ms, with_library=args.with_library)
    print(f"Overhead over a bare call, X / A (median of paired ratios, {repeats} repeats):\n")
    print(table(records))
    if args.with_library:
        print("\nExtra overhead over A, as a share of today's library row (issue 13 allows 15 %):\n")
        print(library_share(records))
    print("\nA's overhead / a bare call's time (how much of each row the shapes share):")
    for rec in records:
        if rec["shape"] == "A":
            print(f"- {rec['scenario']} {rec['driver']}: {rec['overhead_ns'] / rec['baseline_ns']:.1f}")
    print(f"\n{len(records)} rows in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
