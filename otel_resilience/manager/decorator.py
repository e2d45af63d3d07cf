"""``@resilient`` and the process-wide manager it runs in by default."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final, ParamSpec, TypeVar, overload

from otel_resilience.engine.calling import not_callable
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, set_process_clock
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.protecting import check_protectable, is_async_callable, keep_metadata
from otel_resilience.engine.validation import fail
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.core import _GONE, ResilienceManager, _Moved
from otel_resilience.manager.keys import policy_name
from otel_resilience.manager.policy import check_drivable

__all__ = [
    "check_manager",
    "get_resilience_manager",
    "new_default_manager",
    "replace_default_manager",
    "resilient",
]

P = ParamSpec("P")
R = TypeVar("R")

_DEFAULT_LOCK: Final = fork_safe(threading.Lock())
_DEFAULT: list[ResilienceManager] = []


def get_resilience_manager() -> ResilienceManager:
    """Return the process-wide :class:`ResilienceManager`, creating it on first use (thread-safe).

    When the environment variable ``OTEL_RESILIENCE_CONFIG`` names a configuration file, the
    manager is created with the named policies it defines (``manager.apply_config``); the file
    is read once, here, once it is stable (a file being saved is waited for, as by a watch's first
    load: :func:`otel_resilience.config.from_env`), and ``manager.watch(path)`` follows its
    changes. In a test suite, :func:`otel_resilience.testing.fresh_defaults` gives each test a
    process-wide manager of its own, made the same way.

    Raises:
        otel_resilience.config.ConfigError: ``OTEL_RESILIENCE_CONFIG`` names a file that cannot
            be loaded (no manager is created: the next call tries again).
    """
    try:
        return _DEFAULT[0]
    except IndexError:  # none yet, or none since a test's block (otel_resilience.testing) ended
        with _DEFAULT_LOCK:
            if not _DEFAULT:
                _DEFAULT.append(new_default_manager())
            return _DEFAULT[0]


def new_default_manager(clock: Clock = SYSTEM_CLOCK) -> ResilienceManager:
    """Make a manager as the process-wide one is made: the policies ``OTEL_RESILIENCE_CONFIG`` names applied.

    Args:
        clock: The clock of the manager and of every pattern it creates.

    Raises:
        otel_resilience.config.ConfigError: ``OTEL_RESILIENCE_CONFIG`` names a file that cannot
            be loaded.
    """
    from otel_resilience.config import from_env  # noqa: PLC0415 - config imports the manager

    manager = ResilienceManager(clock=clock)
    loaded = from_env(clock=clock)  # a file being saved is waited for on the manager's clock
    if loaded is not None:
        manager.apply_config(loaded)
    return manager


def replace_default_manager(manager: ResilienceManager | None) -> ResilienceManager | None:
    """Make ``manager`` the process-wide manager (``None``: none until the next use); return the one before.

    For tests (:func:`otel_resilience.testing.fresh_defaults`). The ``@resilient`` functions bound
    to the manager before (by default or by name) look their policy up again at their next call,
    so that those run by default run in ``manager`` from then on; a call running meanwhile ends
    in the manager it started in. The manager's clock becomes the process-wide clock
    (:func:`~otel_resilience.engine.clock.set_process_clock`; ``None``: the system clock), which
    the retries and the retry budgets given no clock of their own run on
    (:func:`~otel_resilience.retry`, :class:`~otel_resilience.RetryBudget`).
    """
    with _DEFAULT_LOCK:
        before = _DEFAULT[0] if _DEFAULT else None
        if manager is None:
            _DEFAULT.clear()
        elif _DEFAULT:
            _DEFAULT[0] = manager
        else:
            _DEFAULT.append(manager)
        # What follows the process-wide clock (a @retry function given none) runs on its manager's.
        set_process_clock(SYSTEM_CLOCK if manager is None else manager._clock)
    if before is not None and before is not manager:
        before._unbind()
    return before


@overload
def resilient(
    config: ResilienceConfig, *, manager: ResilienceManager | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


@overload
def resilient(
    config: None = None, *, manager: ResilienceManager | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def resilient(
    config: ResilienceConfig | None = None, *, manager: ResilienceManager | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a sync or async function so that every call runs under ``config``.

    The driver (async or sync) is chosen once, at decoration time. The policy name defaults to
    one derived from the function (its ``__qualname__``; see ``ResilienceConfig.name``).

    Args:
        config: The patterns to apply, its extra strategies included (default: an empty config:
            telemetry and statistics only).
        manager: The manager to run in (default: :func:`get_resilience_manager` at call time).

    Returns:
        A decorator that keeps the function's signature.

    Raises:
        TypeError: ``config`` is not a ResilienceConfig or ``manager`` not a ResilienceManager;
            (when decorating) ``fn`` is not callable, is a generator function (async or not), or
            is a sync function and ``config`` hedges (hedging is async only).
    """
    _check_arguments(config, manager)
    cfg = config if config is not None else ResilienceConfig()

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        name = policy_name(cfg, fn)
        check_protectable(name, fn)  # first: a classmethod object is not callable
        if not callable(fn):
            raise not_callable("resilient", fn)
        check_drivable("resilient", name, cfg, fn)
        return _bind(fn, cfg, name, manager)

    return decorate


def check_manager(owner: str, manager: object) -> None:
    """Refuse a ``manager`` argument of ``owner`` that is neither a ResilienceManager nor ``None``.

    Raises:
        TypeError: Naming ``owner.manager``, at construction (not an ``AttributeError`` later).
    """
    if manager is not None and not isinstance(manager, ResilienceManager):
        raise fail(owner, "manager", "a ResilienceManager or None", manager, kind=TypeError)


def _check_arguments(config: object, manager: object) -> None:
    """Refuse a ``config`` or ``manager`` of ``resilient`` that is not one, naming the argument."""
    if config is not None and not isinstance(config, ResilienceConfig):
        rule = "a ResilienceConfig"
        if callable(config):  # @resilient written above a function: the function came as the config
            rule += " (write @resilient() or @resilient(config) above the function)"
        raise fail("resilient", "config", rule, config, kind=TypeError)
    check_manager("resilient", manager)


def _bind(
    fn: Callable[P, R], config: ResilienceConfig, name: str, manager: ResilienceManager | None
) -> Callable[P, R]:
    """Return ``fn`` wrapped to run every call through its policy's pipeline (the driver chosen once)."""
    # The function's cache entry, looked up again only once it has left the manager's cache (its
    # manager drops them all when it stops being the process-wide one: a test's block).
    entry = _GONE

    def lookup() -> Pipeline | _Moved:
        nonlocal entry
        while True:
            owner = manager or get_resilience_manager()
            owner._default_names.take(config, name, fn)  # bound to its policy: not on a call that finds it
            entry = owner._entry_for(config, name)
            # The default manager replaced meanwhile (a test's block, replace_default_manager) may
            # have unbound its functions before this entry was made: look it up in the new one.
            if manager is not None or get_resilience_manager() is owner:
                return entry.pipeline

    if is_async_callable(fn):
        async_fn: Callable[..., Awaitable[Any]] = fn

        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            pipeline = entry.pipeline if entry.live else lookup()
            return await pipeline.execute_packed(async_fn, args, kwargs)

        return keep_metadata(name, async_wrapper, fn)

    def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        pipeline = entry.pipeline if entry.live else lookup()
        return pipeline.execute_packed_sync(fn, args, kwargs)

    return keep_metadata(name, sync_wrapper, fn)
