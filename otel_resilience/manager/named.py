"""The manager's named policies: ``manager.policy(name, config)`` and ``manager.reconfigure(name, config)``.

A mixin of :class:`~otel_resilience.ResilienceManager` (kept apart from the policies found by
config identity, :mod:`~otel_resilience.manager.core`): the manager keeps one
:class:`~otel_resilience.manager.policy.PolicyHandle` per name, for its lifetime, as Polly's
``ResiliencePipelineRegistry`` keeps a pipeline per key.
"""

from __future__ import annotations

import enum
import functools
import os
import threading
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from otel_resilience.engine.registry import namesakes_expected
from otel_resilience.engine.store import check_capacity
from otel_resilience.engine.validation import (
    check_called_with,
    check_duration,
    check_name,
    check_sync_callable,
    fail,
)
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.keyed import Spec
from otel_resilience.manager.keys import ConfigNamesakes, ManagerNamesakes
from otel_resilience.manager.policy import (
    DEFAULT_IDLE_TTL,
    DEFAULT_MAX_KEYS,
    Adapt,
    PolicyHandle,
    Staged,
    adapt_config,
    check_config,
    check_key_attribute_limit,
    report_failure,
    same_config,
)
from otel_resilience.manager.stages import StageInputs, compose
from otel_resilience.manager.statistics import add_counts
from otel_resilience.manager.watch import (
    DEFAULT_WATCH_INTERVAL,
    ConfigWatch,
    Customize,
    apply_file,
    started_in_thread,
)

if TYPE_CHECKING:
    from otel_resilience.config import ConfigFile
    from otel_resilience.config.formats import Format
    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.step import Step
    from otel_resilience.manager.policy_stats import PolicyStatsDict
    from otel_resilience.patterns.circuit_breaker import CircuitBreaker
    from otel_resilience.patterns.recovery import ErrorRecoverySystem

__all__ = ["ConfigSource", "NamedPolicies"]

ConfigSource = ResilienceConfig | Callable[[], ResilienceConfig]
"""A new config for :meth:`NamedPolicies.reconfigure`: the config, or a function that builds it
(what it raises, a config that fails validation, is reported as a failed reload)."""


class _Unset(enum.Enum):
    """An option of :meth:`NamedPolicies.policy` not given: the default, or the handle's own."""

    UNSET = "unset"


_KEEP: Final = _Unset.UNSET
_POLICY: Final = "ResilienceManager.policy"
_RECONFIGURE: Final = "ResilienceManager.reconfigure"
_RECONFIGURE_MANY: Final = "ResilienceManager.reconfigure_many"
_APPLY: Final = "ResilienceManager.apply_config"


class _Taken(Exception):  # noqa: N818 - not an error: a batch judged again
    """A policy a batch was to create was created by a call meanwhile: nothing changed, judge it again."""


class NamedPolicies:
    """``policy``, ``reconfigure`` and ``reconfigure_many`` of :class:`~otel_resilience.ResilienceManager`."""

    __slots__ = ()

    _clock: Clock
    _recovery_system: ErrorRecoverySystem
    _handles: dict[str, PolicyHandle]
    _handles_lock: threading.Lock
    _commit_lock: threading.Lock
    """Held while a batch of reloads commits: overlapping batches take effect one after the other."""
    _applied_files: dict[str, ConfigFile]
    """The last load of each configuration file applied, by absolute path (its budgets are reused)."""

    _find_breaker: Callable[[str], CircuitBreaker | None]
    """The manager's lookup of a breaker by name (for recovery rules that isolate one)."""
    _namesakes: ConfigNamesakes
    """The policy names warned about for two live configs (once each)."""
    _managers: ManagerNamesakes
    """The policy names warned about for another live manager's policy of the name (once each)."""
    _policy_config: Callable[[str], ResilienceConfig | None]
    """The config of a live policy of a name that runs by config (the manager's), or ``None``."""

    def policy(
        self,
        name: str,
        config: ResilienceConfig | None = None,
        *,
        max_keys: int | _Unset = _KEEP,
        idle_ttl: float | timedelta | _Unset | None = _KEEP,
        key_attribute_limit: int | _Unset = _KEEP,
        adapt: Adapt | None = None,
    ) -> PolicyHandle:
        """Return the policy handle named ``name``, creating it with ``config`` on first use.

        A handle created while a policy run by config (``execute_with_resilience``,
        ``@resilient``) has its name with another config is logged once per name, as a warning
        naming the fields that differ: the two share the name's telemetry series.

        Args:
            name: The policy name (``resilience.policy`` in telemetry; bounded).
            config: Its config; ``None`` to find a handle that exists. A handle's breakers and
                bulkheads are its own (one per key, plus one for its unkeyed calls):
                ``circuit_breaker_name`` / ``bulkhead_name`` only name them.
            max_keys: How many idle keys it keeps (an ``int >= 1``; default
                :data:`~otel_resilience.manager.policy.DEFAULT_MAX_KEYS`).
            idle_ttl: Seconds (or a ``timedelta``) after which an unused idle key is evicted;
                ``None`` for no expiry (default
                :data:`~otel_resilience.manager.policy.DEFAULT_IDLE_TTL`).
            key_attribute_limit: How many keys get their own ``resilience.key`` metric
                attribute (default 0: the key is an attribute of the execution span only); the
                keys past it share the overflow series ``resilience.key="_OTHER"``.
            adapt: Applied to ``config`` and to every config a reload gives the policy (a
                client integration adds its retry rule so that no reload drops it); ``None``
                for none. Only the call that creates the handle sets it.

        Raises:
            KeyError: ``config`` is ``None`` and no handle has that name.
            ValueError: A handle of that name exists with another config or other options (change
                its config with :meth:`reconfigure`), or ``config`` has an extra strategy given as a
                ``Step`` instance (give a factory), or an option is out of range.
            TypeError: ``config`` is not a :class:`ResilienceConfig`, an option has the wrong
                type, or ``adapt`` is not a plain (sync) function callable as ``adapt(config)``
                or returns no :class:`ResilienceConfig`.
        """
        check_name(_POLICY, "name", name)
        check_sync_callable(_POLICY, "adapt", adapt, optional=True, what="function")
        options = {"max_keys": max_keys, "idle_ttl": idle_ttl, "key_attribute_limit": key_attribute_limit}
        with self._handles_lock:
            handle = self._handles.get(name)
            if handle is None:
                if config is None:
                    raise KeyError(f"no policy named {name!r}: create it with manager.policy(name, config)")
                handle = self._handles[name] = self._new_handle(name, config, options, adapt)
                created = True
            else:
                created = False
        if created:
            self._check_namesakes(name, handle)
            return handle
        _same(handle, None if config is None else handle.adapted(check_config(name, config)), options)
        return handle

    def _check_namesakes(self, name: str, handle: PolicyHandle) -> None:
        """Warn, once per name, when a policy run by config has the new handle's name and another config.

        And when another live manager has a policy of its name (:class:`ManagerNamesakes`).
        """
        other = None if self._namesakes.told(name) else self._policy_config(name)
        if other is not None:
            self._namesakes.check(name, handle.config, [other])
        self._managers.check(name)

    def _check_new(self, name: str, config: ResilienceConfig, field: str) -> None:
        """Check that ``policy(name, config)`` would take ``config``, creating nothing; report a refusal.

        As a reload is checked (``PolicyHandle._prepare``): the config (its error names
        ``apply_config``'s ``field``), then a pipeline built from it once and dropped (an extra
        strategy's factory that fails is found here).
        """
        try:
            checked = check_config(name, config, _APPLY, field)
            with namesakes_expected():
                inputs = StageInputs(
                    name, checked, self._clock, None, None, self._recovery_system, self._find_breaker
                )
                compose(inputs, register=False)
        except Exception as error:
            self._refused(name, error)
            raise

    def _refused(self, name: str, error: BaseException) -> None:
        """Report a refused reload of policy ``name`` (counted by its handle, if it has one)."""
        with self._handles_lock:
            handle = self._handles.get(name)
        if handle is None:
            report_failure(name, error, 0)
        else:
            handle._reload_failed(error)

    def _new_handle(
        self, name: str, config: ResilienceConfig, options: dict[str, Any], adapt: Adapt | None
    ) -> PolicyHandle:
        check_called_with(_POLICY, "adapt", adapt, "config")  # creating only: a lookup ignores it
        checked = adapt_config(adapt, check_config(name, config))
        spec = Spec(name, checked, 1, self._clock, self._recovery_system, self._find_breaker)
        max_keys = DEFAULT_MAX_KEYS if options["max_keys"] is _KEEP else options["max_keys"]
        idle_ttl = DEFAULT_IDLE_TTL if options["idle_ttl"] is _KEEP else options["idle_ttl"]
        limit = 0 if options["key_attribute_limit"] is _KEEP else options["key_attribute_limit"]
        return PolicyHandle(
            spec, max_keys=max_keys, idle_ttl=idle_ttl, key_attribute_limit=limit, adapt=adapt
        )

    def reconfigure(self, name: str, config: ConfigSource) -> PolicyHandle:
        """Give the policy ``name`` a new config now, while its calls run.

        Calls in flight finish under the config they started with; new calls (on the handle, its
        key views and its ``protect``-ed functions) use the new one. Each key's breaker, bulkhead
        and rate limiter carry their state over where the new config allows it (see
        docs/design.md, "Changing a policy while it runs"). An equal config changes nothing.

        A config that is refused changes nothing and is reported: a warning on the
        ``otel_resilience.manager`` logger, a ``resilience.policy.reload_failed`` span event (and
        log record) and ``resilience.reload`` with ``resilience.reload.outcome="failed"`` (a
        reload that takes effect counts ``"succeeded"``), as Polly reports ``ReloadFailed``.

        Args:
            name: The policy's name (made with :meth:`policy`).
            config: The new config, or a function that builds it (a config file's loader): what
                it raises is a refused reload too.

        Returns:
            The policy's handle.

        Raises:
            KeyError: No policy has that name (reported).
            TypeError: ``name`` is not a ``str`` (not reported: no policy can have it), or
                ``config`` is not a :class:`ResilienceConfig` (or does not build one: an async
                function is refused before it is called).
            ValueError: ``name`` is a name :meth:`policy` refuses (blank, or longer than a
                telemetry attribute; not reported), ``config`` names another policy, or has an
                extra strategy given as a ``Step`` instance.
            Exception: What building ``config`` (or a pipeline from it) raised.
        """
        check_name(_RECONFIGURE, "name", name)
        return self._reload({name: config}, {}, _RECONFIGURE, "config")[name]

    def reconfigure_many(self, configs: Mapping[str, ConfigSource]) -> dict[str, PolicyHandle]:
        """Give several policies new configs at once: all of them, or (if one is refused) none.

        Everything that can refuse a config runs first, for every policy of the batch: building
        it (a builder), checking it, the policy's ``adapt``, a trial pipeline, and the factory of
        each extra strategy for each key the policy holds (each key's pipeline gets links of
        its own). Only then does each policy take its own config, which runs only the library's
        code on checked configs. A refusal is reported for the policy it concerns (as
        :meth:`reconfigure` says) and raised; the other policies keep their config and report
        nothing. A key a call makes while the batch is applied is built from the config of that
        moment and catches up at its next call. Batches that overlap (from several threads)
        commit one after the other, each whole: the policies end with the configs of the batch
        that committed last, never with some of one batch's and some of another's. A config
        staged while it was its policy's own (no factory ran) is staged again if another batch
        changed that policy before this one commits.

        Args:
            configs: The new config (or its builder) of each policy name.

        Returns:
            The handle of each name.

        Raises:
            KeyError: A name has no policy.
            TypeError: As :meth:`reconfigure` (a key of ``configs`` for its ``name``).
            ValueError: As :meth:`reconfigure`.
            Exception: As :meth:`reconfigure`.
        """
        if not isinstance(configs, Mapping):
            raise fail(_RECONFIGURE_MANY, "configs", "a mapping", configs, kind=TypeError)
        for name in configs:  # before any config is built: no policy can have a name policy() refuses
            check_name(_RECONFIGURE_MANY, "configs key", name)
        return self._reload(configs, {}, _RECONFIGURE_MANY, "configs[{!r}]")

    def _reload(
        self,
        configs: Mapping[str, ConfigSource],
        new: Mapping[str, ResilienceConfig],
        owner: str,
        field: str,
    ) -> dict[str, PolicyHandle]:
        """Reload the policies ``configs`` names and create those ``new`` names: all of them, or none.

        ``owner`` and ``field`` (formatted with a policy's name) name the method called and its
        argument in the error of a config refused. The new policies are created (:meth:`_create_locked`)
        in the commit of the reloads, before any of them takes effect.

        Raises:
            _Taken: A call created a policy of ``new`` since the caller looked (nothing changed).
            Exception: As :meth:`reconfigure_many`.
        """
        prepared = {
            name: self._prepare(name, source, owner, field.format(name)) for name, source in configs.items()
        }
        while True:
            with self._commit_lock:  # one batch at a time: overlapping batches never interleave
                stale = [name for name, (handle, staged) in prepared.items() if handle._stale(staged)]
                if not stale:
                    created, refused = self._create_locked(new)
                    if refused is None:
                        generations = {
                            name: handle._commit(staged) for name, (handle, staged) in prepared.items()
                        }
                    break
            for name in stale:  # another batch changed its config since: its factories run now
                handle, staged = prepared[name]
                prepared[name] = handle, self._staged(handle, staged.config)
        if refused is not None:  # reported outside the commit lock, as a reload is
            self._refused(*refused)
            try:
                raise refused[1]
            finally:
                del refused  # its error's traceback holds this frame: not bound here (a cycle)
        for name, handle in created.items():
            self._check_namesakes(name, handle)
        for name, (handle, _) in prepared.items():
            handle._reloaded(generations[name])
        return {**{name: handle for name, (handle, _) in prepared.items()}, **created}

    def _create_locked(
        self, new: Mapping[str, ResilienceConfig]
    ) -> tuple[dict[str, PolicyHandle], tuple[str, Exception] | None]:
        """Create a policy for each of ``new`` (checked by :meth:`_check_new`), all or none.

        Called under the commit lock: no policy of the batch has changed yet. Every handle is built
        before any is kept, under the handles' lock (as :meth:`policy` builds one), so that no call
        finds a policy of a batch that is refused.

        Returns:
            The handles created, and ``None``; or none and the name and error of the policy whose
            build raised (its factories), for the caller to report and raise once the lock is free.

        Raises:
            _Taken: A policy of ``new`` exists now (a call created it): nothing was created.
        """
        created: dict[str, PolicyHandle] = {}
        if not new:
            return created, None
        options: dict[str, Any] = {"max_keys": _KEEP, "idle_ttl": _KEEP, "key_attribute_limit": _KEEP}
        with self._handles_lock:
            if any(name in self._handles for name in new):
                raise _Taken
            for name, config in new.items():
                try:
                    created[name] = self._new_handle(name, config, options, None)
                except Exception as error:  # noqa: BLE001 - the caller reports and raises it
                    return {}, (name, error)
            self._handles.update(created)
        return created, None

    def _apply(
        self, wanted: Mapping[str, ResilienceConfig], owed: Collection[str] = ()
    ) -> dict[str, PolicyHandle]:
        """Create the policies of ``wanted`` the manager lacks, and reload the changed others: all or none.

        Every new policy's config is checked (:meth:`_check_new`) and every changed one staged
        before anything changes; then the new policies are created and the changed ones take
        their configs in one commit (:meth:`_reload`). A new name a call creates meanwhile (with
        the call's config) is judged again, as a policy that exists: reloaded if its config is
        not the one ``wanted`` gives it. A policy of ``owed`` (a refused reload of it was reported,
        and none taken since) that this batch leaves as it is (``wanted`` gives it the config it
        has, or no longer names it) is reported reloaded (a succeeded reload, its generation
        unchanged): the configuration given is applied, and the refusal is over.

        Returns:
            The handle of every policy ``wanted`` names.

        Raises:
            Exception: A config refused (reported; no policy changed), as :meth:`reconfigure_many`.
        """
        field = "policies[{!r}]"
        while True:
            with self._handles_lock:
                handles = dict(self._handles)
            new = {name: config for name, config in wanted.items() if name not in handles}
            for name, config in new.items():  # what creating it would refuse, before anything changes
                self._check_new(name, config, field.format(name))
            changed = {n: c for n, c in wanted.items() if n in handles and _changes(handles[n], c)}
            try:
                done = self._reload(changed, new, _APPLY, field)
            except _Taken:
                continue  # a call created a new one: judged again, as a policy that exists
            for name in owed:
                if name not in done and name in handles:
                    handles[name]._reloaded(handles[name].generation)
            return {name: done.get(name) or handles[name] for name in wanted}

    def apply_config(
        self, policies: Mapping[str, ResilienceConfig], *, customize: Customize | None = None
    ) -> dict[str, PolicyHandle]:
        """Create the named policies a configuration file defines, and reload those that changed.

        Args:
            policies: Each policy's name and config: a loaded file
                (:func:`otel_resilience.config.load`) or any mapping.
            customize: Called with each name and config; returns the config to use (adds what a
                file cannot express, such as a fallback function). ``None``: as loaded.

        Returns:
            The handle of each name. A policy the mapping does not name is left as it is.

        Raises:
            TypeError: ``policies`` is not a mapping, or a key of it not a ``str``, or ``customize``
                is not a plain (sync) function (nothing changed, nothing reported), or returns no
                :class:`ResilienceConfig`, or a value is not one (a function that builds one
                included, which :meth:`reconfigure` takes): reported, no policy changed.
            ValueError: A key of ``policies`` is a name :meth:`policy` refuses (nothing changed,
                nothing reported).
            Exception: A reload refused (reported; no policy changed), as :meth:`reconfigure_many`.
        """
        return apply_file(self, policies, customize)

    def watch(
        self,
        path: str | os.PathLike[str],
        *,
        interval: float | timedelta = DEFAULT_WATCH_INTERVAL,
        customize: Customize | None = None,
        format: Format | None = None,  # noqa: A002 - load(path, format=...)'s name
    ) -> ConfigWatch:
        """Apply the configuration file ``path`` now, then again whenever it changes.

        The file is polled every ``interval`` seconds in a daemon thread (no extra dependency). A
        change is applied once it is stable: a look that finds the file changed waits for the next
        one, which applies it if its size, times, inode and content are still the same (a save in
        progress is never applied half written; a change applies one to two ``interval`` after it
        is written). The file is applied now under the same rule: at once if it was not written in
        the last 3 s, else once a second look, up to one ``interval`` (at most 3 s) later on the
        manager's clock, finds it the same (a wait of this thread: in a coroutine, use
        :meth:`watch_async`, which leaves the event loop running). A changed file that fails to
        load or whose policies are refused changes nothing and is reported as a failed reload of
        the policies it names (log, span event, ``resilience.reload{outcome="failed"}``); the
        last good configuration stays (a file its ``customize`` refused is tried again at each
        look). A file touched or saved again with the same bytes is unchanged: nothing applied.

        Args:
            path: A YAML or TOML file (see README, "Configuration file").
            interval: Seconds (or a ``timedelta``) between two looks, ``> 0`` and at most
                ``MAX_DURATION`` (``threading.TIMEOUT_MAX``).
            customize: As :meth:`apply_config`.
            format: ``"yaml"`` or ``"toml"``, as for :func:`otel_resilience.config.load`;
                ``None`` (the default) for the one the file's suffix stands for.

        Returns:
            The watch; :meth:`ConfigWatch.stop` ends it.

        Raises:
            otel_resilience.config.ConfigError: The file is not a valid configuration now, or
                ``format`` is ``None`` and its suffix stands for no format.
            OSError: The file cannot be read now (``FileNotFoundError`` when it is missing), as
                :func:`otel_resilience.config.load` raises; later, a file that cannot be read is a
                failed reload.
            ValueError: ``interval`` is not > 0 (or above ``MAX_DURATION``), ``format`` is not
                ``None``, ``"yaml"`` or ``"toml"``, or a policy is refused now.
            TypeError: ``path`` is not a ``str`` or an ``os.PathLike`` of one, ``interval`` is not
                a number of seconds or a ``timedelta``, or ``customize`` is not a plain (sync)
                function.
        """
        return ConfigWatch(self, path, interval=interval, customize=customize, format=format)

    async def watch_async(
        self,
        path: str | os.PathLike[str],
        *,
        interval: float | timedelta = DEFAULT_WATCH_INTERVAL,
        customize: Customize | None = None,
        format: Format | None = None,  # noqa: A002 - load(path, format=...)'s name
    ) -> ConfigWatch:
        """As :meth:`watch`, for a coroutine (an async start-up): the event loop runs on meanwhile.

        :meth:`watch` blocks its thread while its first load waits for a file being saved (up to
        3 s): called on the event loop's thread, it would stall every task. This runs it in a
        worker thread (``asyncio.to_thread``; ``customize`` is called there, as by the watch's
        own thread later) and returns the same watch, the file applied under the same rule.
        Cancelled meanwhile, the watch the thread still makes is stopped as soon as it is made.

        Raises:
            Exception: What :meth:`watch` raises, with its arguments.
        """
        return await started_in_thread(
            functools.partial(self.watch, path, interval=interval, customize=customize, format=format)
        )

    def _prepare(
        self, name: str, source: ConfigSource, owner: str, field: str
    ) -> tuple[PolicyHandle, Staged]:
        """Find the handle, build, check and stage its new config; report and raise a refusal.

        A refusal of ``source`` names ``owner`` and ``field``: the method called and its argument.
        ``source`` is a config, or for ``reconfigure`` and ``reconfigure_many`` a function that
        builds one; ``apply_config`` takes configs only (a function is refused, as for a new name).
        """
        handle = self._handles.get(name)
        if handle is None:
            missing = KeyError(f"no policy named {name!r}: create it with manager.policy(name, config)")
            report_failure(name, missing, 0)
            try:
                raise missing
            finally:
                del missing  # its traceback holds this frame: not bound here (a cycle)
        try:
            config = source
            # A factory (reconfigure's, never apply_config's): called, never awaited.
            if owner != _APPLY and callable(source) and not isinstance(source, ResilienceConfig):
                check_sync_callable(owner, field, source, what="factory")
                config = source()
            checked = handle._prepare(config, owner, field)
        except Exception as error:
            handle._reload_failed(error)
            raise
        return handle, self._staged(handle, checked)

    @staticmethod
    def _staged(handle: PolicyHandle, config: ResilienceConfig) -> Staged:
        """Stage ``config`` (checked by ``handle._prepare``) for ``handle``; report and raise a refusal."""
        try:
            return handle._stage(config)
        except Exception as error:
            handle._reload_failed(error)
            raise

    def _named_links(self) -> list[tuple[str, str | None, tuple[tuple[int, Step], ...]]]:
        """Return each named policy's extra links: ``(name, key, links)``, unkeyed first, then by key."""
        with self._handles_lock:
            handles = dict(self._handles)
        return [
            (name, key, links) for name, handle in handles.items() for key, links in handle._extra_links()
        ]

    def _named_statistics(self, totals: dict[str, int]) -> dict[str, PolicyStatsDict]:
        """Return each named policy's ``get_stats()``, and add its executions to ``totals``."""
        with self._handles_lock:
            handles = dict(self._handles)
        named = {name: handle.get_stats() for name, handle in handles.items()}
        for stats in named.values():
            add_counts(totals, stats["executions"])
        return named


def _changes(handle: PolicyHandle, config: ResilienceConfig) -> bool:
    """Whether ``config``, as the policy takes it (its ``adapt``), is not the policy's config now.

    A config its ``adapt`` refuses is a change: reloading it refuses it again, and reports that
    for the policy, as any refused reload, before anything changes.
    """
    try:
        adapted = handle.adapted(config)
    except Exception:  # noqa: BLE001 - refused and reported by the reload, which raises it
        return True
    return not same_config(adapted, handle.config)


def _same(handle: PolicyHandle, config: ResilienceConfig | None, options: dict[str, Any]) -> None:
    """Refuse a second ``policy(name, ...)`` that asks for another config or other options."""
    if config is not None and not same_config(config, handle.config):
        msg = (
            f"policy {handle.name!r} already exists with another config: change it with "
            "manager.reconfigure(name, config)"
        )
        raise ValueError(msg)
    # Judged by the rules a new handle's options are (a bool is no count, "600" no duration).
    max_keys, ttl, limit = options["max_keys"], options["idle_ttl"], options["key_attribute_limit"]
    given = {
        "max_keys": max_keys if max_keys is _KEEP else check_capacity(_POLICY, "max_keys", max_keys),
        "idle_ttl": ttl if ttl is _KEEP or ttl is None else check_duration(_POLICY, "idle_ttl", ttl),
        "key_attribute_limit": limit if limit is _KEEP else check_key_attribute_limit(limit),
    }
    kept = {
        "max_keys": handle.max_keys,
        "idle_ttl": handle.idle_ttl,
        "key_attribute_limit": handle.key_attribute_limit,
    }
    for option, value in given.items():
        if value is not _KEEP and value != kept[option]:
            msg = f"policy {handle.name!r} already exists with {option}={kept[option]!r} (options are fixed)"
            raise ValueError(msg)
