"""Protecting a function with a pipeline: the patterns' ``protect`` and their own pipelines.

:func:`protect_with` wraps a function so that every call runs through a pipeline (the driver
chosen once, when it is decorated); :func:`check_protectable` refuses what no driver can run;
:func:`standalone` builds a pattern's own pipeline on its first use, and
:func:`rebuild_standalone` gives it a link built anew when the pattern is reconfigured.
Importable from :mod:`~otel_resilience.engine.pipeline` too, where they were defined before.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any, Final, TypeGuard

from otel_resilience.engine.calling import async_generator_refused, generator_refused
from otel_resilience.engine.forking import fork_safe

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from otel_resilience.engine.pipeline import Pipeline

__all__ = [
    "check_protectable",
    "is_async_callable",
    "keep_metadata",
    "makes_iterator",
    "protect_with",
    "rebuild_standalone",
    "standalone",
]


_STANDALONE_LOCK: Final = fork_safe(threading.Lock())


def standalone(
    owner: object, attribute: str, build: Callable[[], Pipeline], *, config: str | None = None
) -> Pipeline:
    """Return ``owner.<attribute>``, the pattern's own pipeline, building it on first use.

    A pattern instance that only ever runs inside other pipelines (a manager policy) never
    builds one, so it costs no memory and exports no idle execution series. Two threads may
    both build one; the first stored wins and the other is dropped (unused, so never exported).

    A reload (:func:`rebuild_standalone`) that runs while the pipeline is built finds none to
    relink: the pipeline built meanwhile may hold a link on what the reload replaced (a
    breaker's retired core). So when the owner's ``config`` attribute, which a reload replaces
    before it relinks, is no longer the one read before the build, the pipeline is built again.

    Args:
        owner: The pattern instance.
        attribute: The slot that holds the pipeline (``None`` until built).
        build: Builds the pipeline.
        config: The owner's attribute a reload replaces before it calls
            :func:`rebuild_standalone` (``None``: the owner is never reloaded).

    Returns:
        The pipeline stored in ``owner.<attribute>``.
    """
    while True:
        read = None if config is None else getattr(owner, config)
        built = build()
        with _STANDALONE_LOCK:  # ordered with rebuild_standalone's look: one of the two sees the other
            current: Pipeline | None = getattr(owner, attribute)
            if current is not None:
                return current
            if config is None or getattr(owner, config) is read:
                setattr(owner, attribute, built)
                return built


def rebuild_standalone(owner: object, attribute: str, build: Callable[..., Pipeline]) -> None:
    """Make ``owner.<attribute>``, the pattern's own pipeline if built, run a link built anew.

    For a pattern reconfigured in place, whose own pipeline must run a link under the new config:
    ``build(register=False)`` makes a pipeline whose links the built one takes
    (:meth:`~otel_resilience.engine.pipeline.Pipeline.relink`). The pipeline stays the same
    object, so what holds it follows: a function its ``protect`` decorated before, a guard made
    before, run their next calls under the new config (in a breaker's current core). Its
    stats and its place in :data:`~otel_resilience.engine.registry.PIPELINES` stay too, so the
    executions counted before stay exported (as they would not if a new pipeline took its place
    with new counts: a counter reset to a backend). Nothing happens while it is not built (a
    first build that runs meanwhile builds again: see :func:`standalone`).

    Args:
        owner: The pattern instance, its new config already in place.
        attribute: The slot that holds the pipeline (``None`` until built).
        build: Builds the pipeline; takes ``register=False``.
    """
    with _STANDALONE_LOCK:  # see standalone: a first build stored before this look is relinked
        if getattr(owner, attribute) is None:
            return
    built = build(register=False)
    with _STANDALONE_LOCK:  # one relink at a time (an owner reloads a pattern under its own lock)
        pipeline: Pipeline = getattr(owner, attribute)
        pipeline.relink(built)


def is_async_callable(fn: object) -> TypeGuard[Callable[..., Coroutine[Any, Any, Any]]]:
    """Return whether calling ``fn`` makes a coroutine: the rule every decorator picks its driver by.

    A coroutine function (``inspect.iscoroutinefunction``: a ``functools.partial`` of one
    included), or an object whose ``__call__`` is one (a class with ``async def __call__``, or a
    ``functools.partial`` of such an object). Type checkers see the same: such a callable's
    return type is a coroutine, so the decorators' overloads type its wrapper as async.
    """
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(_runs(fn))


def _runs(fn: object) -> object:
    """Return the function a call of ``fn`` runs: ``fn`` (a partial's function), or an object's ``__call__``.

    A function, a method or a class is itself what runs (a class's ``__call__`` is a method of
    its metaclass); any other object runs its ``__call__``. What it is decides what a call makes,
    a coroutine, an iterator or a result (:func:`is_async_callable`, :func:`check_protectable`).
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isroutine(fn) or isinstance(fn, type):
        return fn
    return getattr(fn, "__call__", None)  # noqa: B004 - the method itself is what is asked about


def check_protectable(name: str, fn: object) -> None:
    """Refuse a function that no driver can protect, when it is decorated rather than when called.

    A generator function, async or not, returns an iterator at once, before its body runs (the
    sync driver would count that as a success, the async one cannot await it): both drivers
    refuse it when called, ``protect`` here, before any call; so is an object whose ``__call__``
    is one, or a ``functools.partial`` of either (what a call runs decides, as it decides the
    driver: :func:`is_async_callable`). A ``staticmethod`` or
    ``classmethod`` object (the decorator written below ``@staticmethod``/``@classmethod``) is
    refused too: its wrapper would be a plain function, bound as an instance method.

    Args:
        name: The name of the pattern or pipeline that decorates it (shown in the message).
        fn: The function to decorate.

    Raises:
        TypeError: If ``fn`` is a generator function, an async generator function, or a
            ``staticmethod`` or ``classmethod`` object.
    """
    if isinstance(fn, (staticmethod, classmethod)):
        kind = type(fn).__name__
        msg = (
            f"{name!r}: fn is a {kind} object, which cannot be decorated (its wrapper would be "
            f"bound as an instance method): write @{kind} above the decorator, so that the "
            "decorator gets the function itself"
        )
        raise TypeError(msg)
    if makes_iterator(fn):
        if inspect.isasyncgenfunction(_runs(fn)):
            raise async_generator_refused(repr(name)).as_type_error()
        raise generator_refused(repr(name)).as_type_error()


def makes_iterator(fn: object) -> bool:
    """Return whether calling ``fn`` makes an iterator before its body runs: the rule of what is refused so.

    A generator function, async or not, an object whose ``__call__`` is one, or a
    ``functools.partial`` of either (what a call runs decides, as :func:`is_async_callable`
    decides the driver). Every decorator refuses such a function (:func:`check_protectable`), and
    so do :func:`otel_resilience.testing.fresh_defaults` (its block would end before its body ran),
    the functions that stand in for the protected one
    (:func:`~otel_resilience.engine.validation.check_not_generator`) and the notification
    callbacks (:func:`~otel_resilience.engine.calling.check_notified`).
    """
    runs = _runs(fn)
    return inspect.isgeneratorfunction(runs) or inspect.isasyncgenfunction(runs)


def protect_with(pipeline: Pipeline, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``fn`` so that every call runs through ``pipeline`` (the patterns' ``protect``).

    The driver is chosen once, here: a coroutine function (:func:`is_async_callable`) gets
    :meth:`Pipeline.execute`, anything else :meth:`Pipeline.execute_sync`. ``functools.wraps``
    keeps the metadata; the patterns' typed ``protect`` overloads keep the signature for type
    checkers.

    Args:
        pipeline: The pipeline every call runs through.
        fn: The function to protect (already checked to be callable).

    Returns:
        The wrapper.

    Raises:
        TypeError: If ``fn`` is a generator function, async or not (see :func:`check_protectable`),
            or reading its metadata raises (see :func:`keep_metadata`).
    """
    check_protectable(pipeline.name, fn)
    wrapper: Callable[..., Any]
    if is_async_callable(fn):

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await pipeline.execute_packed(fn, args, kwargs)

        wrapper = async_wrapper
    else:

        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            return pipeline.execute_packed_sync(fn, args, kwargs)

        wrapper = sync_wrapper
    return keep_metadata(pipeline.name, wrapper, fn)


def keep_metadata(name: str, wrapper: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``wrapper`` with ``fn``'s metadata (``functools.update_wrapper``): every decorator's last step.

    Args:
        name: The name of the pattern or policy that decorates ``fn`` (shown in the message).
        wrapper: The wrapper made for ``fn``.
        fn: The decorated function.

    Raises:
        TypeError: Reading ``fn``'s metadata raised (a broken ``__qualname__``, say).
    """
    try:
        return functools.update_wrapper(wrapper, fn)
    except Exception as error:
        msg = (
            f"{name!r}: fn's metadata (__name__, __qualname__, __doc__ ...) cannot be "
            f"read to decorate it: {type(error).__name__}: {error}"
        )
        raise TypeError(msg) from error
