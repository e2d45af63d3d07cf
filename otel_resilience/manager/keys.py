"""How the manager keys its policies: a config's value, and the default name of a protected function."""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

from otel_resilience.engine.events import key_attribute
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.naming import callable_module, callable_name
from otel_resilience.engine.registry import POLICIES
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.policy import same_config

__all__ = [
    "ConfigNamesakes",
    "DefaultNames",
    "ManagerNamesakes",
    "PolicyKey",
    "config_changes",
    "config_key",
    "policy_key",
    "policy_name",
]

_LOG: Final = logging.getLogger("otel_resilience")

_IDENTITY: Final = object()
_DICT: Final = object()
_SEQUENCE: Final = object()
_SET: Final = object()
_DATACLASS: Final = object()
_UNSEEN: Final = object()
_ATOMS: Final = frozenset({str, int, float, bool, bytes, type(None)})
"""Types whose values are hashable and compared by value: their own key."""
_DICT_EQ: Final = dict.__eq__
_SEQUENCE_EQ: Final = (list.__eq__, tuple.__eq__)
_SET_EQ: Final = (set.__eq__, frozenset.__eq__)
"""The ``==`` of the containers frozen item by item: a subclass that keeps it compares as they do."""
_COMPARED_FIELDS: Final[dict[type, tuple[str, ...] | None]] = {}
"""The compared fields of each dataclass type met (``None`` for a type that is not one)."""


def config_key(config: ResilienceConfig) -> object:
    """Return a hashable key equal for equal configs: the config itself, or its frozen value.

    A config holding a dict or a list (``default_value={"status": "error"}``, or a
    ``MappingProxyType`` of a dict) is unhashable; its key is built from its fields, so that an
    equal config built per call still finds its policy. A field value that is neither hashable
    nor a container compared by its items (a dict, list, tuple or set, or a subclass that keeps
    their ``==``, such as a ``namedtuple``) nor a dataclass is keyed by identity (the policy
    keeps the config, hence the value, alive).
    """
    return _freeze(config)


def policy_key(name: str, config: ResilienceConfig) -> PolicyKey:
    """Return the key of the policy ``name`` runs under ``config``: its name and :func:`config_key`.

    Keys are compared by :func:`_differ`'s rule: a value whose ``==`` raises (an array's truth)
    differs, so that a lookup in the manager's store never fails a call.
    """
    return PolicyKey((name, _freeze(config)))


class PolicyKey(tuple[object, ...]):
    """A policy's key in the manager's store: ``(name, config_key)``, compared by :func:`_differ`'s rule.

    A ``tuple`` (one object, as a plain key: 8 B more per policy, no wrapper) whose ``==`` does
    not raise: a value of the config whose own ``==`` raises makes two keys differ.
    """

    __slots__ = ()
    __hash__ = tuple.__hash__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, tuple) and not _differ(tuple(self), tuple(other))

    def __ne__(self, other: object) -> bool:
        return not self == other


def _freeze(value: object) -> object:  # noqa: PLR0911 - one return per kind of value
    """Return a hashable stand-in for ``value`` that is equal exactly when the values are equal.

    Dicts, lists, tuples and sets are frozen item by item (a tuple stays apart from a list), and
    so is a subclass whose ``==`` is theirs (a ``namedtuple`` is a tuple, a ``defaultdict`` a
    dict) and a ``MappingProxyType`` of a dict (it compares as its dict); a container that
    compares otherwise (an ``OrderedDict`` minds the order) is not. Any other hashable value is
    its own stand-in, a hashable config included (the key of a config holds its hashable parts
    as they are, and copies only what is not); an unhashable dataclass is frozen field by
    field, and anything else unhashable stands for itself by identity.
    """
    kind = type(value)
    if kind in _ATOMS:
        return value
    if (isinstance(value, dict) and kind.__eq__ is _DICT_EQ) or (
        isinstance(value, MappingProxyType) and _shows_a_dict(value)
    ):
        return (_DICT, frozenset((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)) and kind.__eq__ in _SEQUENCE_EQ:
        return (_SEQUENCE, isinstance(value, tuple), tuple(_freeze(item) for item in value))
    if isinstance(value, (set, frozenset)) and kind.__eq__ in _SET_EQ:
        return (_SET, frozenset(_freeze(item) for item in value))
    try:
        hash(value)
    except TypeError:
        fields = _compared_fields(kind)
        if fields is None:
            return (_IDENTITY, id(value))
        return (_DATACLASS, kind, tuple(_freeze(getattr(value, name)) for name in fields))
    return value


def _shows_a_dict(proxy: MappingProxyType[Any, Any]) -> bool:
    """Whether a read-only ``proxy`` shows a mapping that compares as a dict does (it compares as that)."""
    try:
        shown = proxy.copy()  # the mapping's own copy(): a mapping that has none is kept apart
    except (AttributeError, TypeError):
        return False
    return type(shown).__eq__ is _DICT_EQ


def _compared_fields(kind: type) -> tuple[str, ...] | None:
    """The fields that ``==`` compares on a dataclass type (``None`` for a type that is not one)."""
    fields = _COMPARED_FIELDS.get(kind, _UNSEEN)
    if fields is _UNSEEN:
        fields = _COMPARED_FIELDS[kind] = (
            tuple(f.name for f in dataclasses.fields(kind) if f.compare)
            if dataclasses.is_dataclass(kind)
            else None
        )
    return fields  # type: ignore[return-value]


def policy_name(config: object, fn: Callable[..., Any]) -> str:
    """Return the name of the policy that runs ``fn`` under ``config``: its ``name``, else ``fn``'s.

    ``fn``'s name is :func:`~otel_resilience.engine.naming.callable_name`'s: a lambda is named
    after its module and line, and a ``functools.partial`` after its function
    (``partial(fetch)``), so that unrelated dependencies do not share a policy (and its breaker)
    by accident.

    The one rule of ``@resilient`` and ``execute_with_resilience``: a config names its policy
    whatever its class (a subclass of ResilienceConfig too). What is not a config (refused by
    the caller, which names the error) names nothing.
    """
    name = config.name if isinstance(config, ResilienceConfig) else None
    return name or callable_name(fn)


class DefaultNames:
    """The module of the function that first took each default policy name of one manager.

    Functions of two modules that share a ``__qualname__`` share a default name
    (:func:`policy_name`), and so one policy, breaker and bulkhead: never silently. The first
    time a function of another module takes a name a function already has, a warning on the
    ``otel_resilience`` logger names both modules (once per name). Read when a function is
    bound to its policy (a ``@resilient`` function's first call) and when a manager first meets
    a config object (``execute_with_resilience``): never on a call that finds its policy.
    """

    __slots__ = ("_lock", "_modules", "_warned")

    def __init__(self) -> None:
        self._modules: dict[str, str | None] = {}
        self._warned: set[str] = set()
        self._lock = fork_safe(threading.Lock())

    def take(self, config: ResilienceConfig, name: str, fn: Callable[..., Any]) -> None:
        """Record that ``fn`` runs under the policy ``name`` of ``config``; warn of another module's namesake.

        A config that names its policy (``ResilienceConfig.name``) shares it on purpose: nothing
        is recorded.
        """
        if config.name:
            return
        module = callable_module(fn)
        if self._modules.get(name, _UNSEEN) == module:  # taken by this module's function already
            return
        with self._lock:
            first = self._modules.setdefault(name, module)
            if first == module or name in self._warned:
                return
            self._warned.add(name)
        _LOG.warning(
            "policy %r: functions of modules %r and %r share this default name (their qualified "
            "name), so they share one policy, breaker and bulkhead; give each its own "
            "ResilienceConfig.name",
            name,
            first if first is None else key_attribute(first),  # a program's to set: a long one cut
            module if module is None else key_attribute(module),
        )


def config_changes(first: ResilienceConfig, second: ResilienceConfig) -> tuple[str, ...]:
    """The fields (but ``name``) in which ``first`` differs from ``second``, another config of its policy.

    What a message shows: whether the two are one config of the policy is
    :func:`~otel_resilience.manager.policy.same_config`'s rule.
    """
    changed: list[str] = []
    for field in dataclasses.fields(ResilienceConfig):
        if field.name == "name":
            continue
        if _differ(getattr(first, field.name), getattr(second, field.name)):
            changed.append(field.name)
    return tuple(changed)


def _differ(first: object, second: object) -> bool:
    """Whether two values differ: a value whose ``==`` raises (an array's) differs."""
    try:
        return not (first is second or first == second)  # as a dataclass compares its fields
    except Exception:  # noqa: BLE001 - they could not be told equal: a policy each
        return True


class ConfigNamesakes:
    """The policy names of one manager that were found with two live configs: warned about once each.

    A config that differs from another of the same name (``ResilienceConfig.name``, or the
    function's) is a policy of its own, which shares the name's telemetry series (and, run by
    config, its breaker, bulkhead and rate limiter) with the other: never silently. Checked
    where a policy is made (a config new to the manager, a named policy created), never on a
    call that finds its policy, nor on a reload (:meth:`ResilienceManager.reconfigure` changes a
    named policy's config on purpose).
    """

    __slots__ = ("_lock", "_warned")

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._lock = fork_safe(threading.Lock())

    def told(self, name: str) -> bool:
        """Whether policy ``name`` was warned about already (nothing more to check)."""
        return name in self._warned

    def check(self, name: str, config: ResilienceConfig, others: Iterable[ResilienceConfig]) -> None:
        """Warn, once per name, if ``config``, just made a policy of ``name``, differs from one of ``others``.

        Args:
            name: The policy name.
            config: The config of the policy just made.
            others: Configs of the name's other live policies.
        """
        if name in self._warned:
            return
        other = next((other for other in others if not same_config(config, other)), None)
        if other is None:
            return
        with self._lock:
            if name in self._warned:
                return
            self._warned.add(name)
        changes = ", ".join(config_changes(config, other)) or "their type"
        _LOG.warning(
            "policy %r has two live configs that differ in %s: each is a policy of its own, and they "
            "share the name's telemetry series (counts combined) and, run by config, its breaker, "
            "bulkhead and rate limiter; give each config its own ResilienceConfig.name, or change a "
            "policy's config on purpose with manager.reconfigure(name, config) on the named policy "
            "(manager.policy(name, config))",
            name,
            changes,
        )


class ManagerNamesakes:
    """The policy names one manager shares with another live manager: warned about once each.

    A named policy whose manager was freed while its caller kept it counts as another manager's.

    Telemetry series are per policy name, not per manager: the policies of one name in two live
    managers share its series (counts summed), and a manager freed takes its counts out of them,
    so the exported counters go down, which a backend reads as a counter reset (a manager's own
    evicted policies never do that: their counts are carried on). That is what sharing a name
    across managers means, so never silent: a warning on the ``otel_resilience`` logger, once
    per manager and name, when a manager makes a policy (run by config, or a named one) whose
    name another live manager has a policy of. Checked where a policy is made, never on a call
    that finds its policy: one look at each other live manager's names.

    Args:
        named: The manager's count of policies run by config, live or retiring, by name.
        handles: The manager's named policies, by name.
    """

    __slots__ = ("__weakref__", "_handles", "_lock", "_named", "_warned")

    _LIVE: ClassVar[weakref.WeakSet[ManagerNamesakes]] = weakref.WeakSet()
    """Those of every live manager (held weakly: they go with their manager)."""
    _LIVE_LOCK: ClassVar[threading.Lock] = fork_safe(threading.Lock())

    def __init__(self, named: Mapping[str, int], handles: Mapping[str, object]) -> None:
        # The manager's own mappings, not the manager: nothing it owns refers back to it.
        self._named = named
        self._handles = handles
        self._warned: set[str] = set()
        self._lock = fork_safe(threading.Lock())
        with self._LIVE_LOCK:
            self._LIVE.add(self)

    def has(self, name: str) -> bool:
        """Whether the manager has a policy named ``name`` (run by config, or a named one)."""
        return name in self._named or name in self._handles

    def _orphan_handle(self, name: str) -> bool:
        """Whether a named policy of ``name`` outlives the manager that made it (its caller kept it).

        It runs, and exports its counts under its name, as a live manager's policy would: its
        series are shared all the same.
        """
        return POLICIES.has_other(name, self._handles.get(name))

    def check(self, name: str) -> None:
        """Warn, once per name, if another live manager has a policy of ``name``, just made here."""
        if name in self._warned:
            return
        with self._LIVE_LOCK:
            others = [other for other in self._LIVE if other is not self]
        if any(other.has(name) for other in others):
            owner = "another live ResilienceManager"
        elif self._orphan_handle(name):
            owner = "a ResilienceManager freed while its caller kept the policy"
        else:
            return
        with self._lock:
            if name in self._warned:
                return
            self._warned.add(name)
        _LOG.warning(
            "policy %r is a policy of %s too: the two share its telemetry "
            "series (counts summed), and when either manager is freed its counts leave them, so the "
            "exported counters go down (a backend reads a counter reset); give each manager's "
            "policies names of their own, or share one manager",
            name,
            owner,
        )
