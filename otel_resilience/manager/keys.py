"""How the manager keys its policies: a config's value, and the default name of a protected function."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Final

from otel_resilience.engine.naming import callable_name
from otel_resilience.manager.config import ResilienceConfig

__all__ = ["config_key", "name_of", "policy_name"]

_IDENTITY: Final = object()
_DICT: Final = object()
_SEQUENCE: Final = object()
_SET: Final = object()
_DATACLASS: Final = object()
_UNSEEN: Final = object()
_ATOMS: Final = frozenset({str, int, float, bool, bytes, type(None)})
"""Types whose values are hashable and compared by value: their own key."""
_COMPARED_FIELDS: Final[dict[type, tuple[str, ...] | None]] = {}
"""The compared fields of each dataclass type met (``None`` for a type that is not one)."""


def config_key(config: ResilienceConfig) -> object:
    """Return a hashable key equal for equal configs: the config itself, or its frozen value.

    A config holding a dict or a list (``default_value={"status": "error"}``) is unhashable;
    its key is built from its fields, so that an equal config built per call still finds its
    policy. A field value that is neither hashable nor a dict, list, set or dataclass is keyed
    by identity (the policy keeps the config, hence the value, alive).
    """
    return _freeze(config)


def _freeze(value: object) -> object:  # noqa: PLR0911 - one return per kind of value
    """Return a hashable stand-in for ``value`` that is equal exactly when the values are equal.

    Dicts, lists, tuples and sets are frozen item by item (a tuple stays apart from a list);
    any other hashable value is its own stand-in, a hashable config included (the key of a
    config holds its hashable parts as they are, and copies only what is not); an unhashable
    dataclass is frozen field by field, and anything else unhashable stands for itself by
    identity.
    """
    kind = type(value)
    if kind in _ATOMS:
        return value
    if isinstance(value, dict):
        return (_DICT, frozenset((key, _freeze(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return (_SEQUENCE, kind is tuple, tuple(_freeze(item) for item in value))
    if isinstance(value, (set, frozenset)):
        return (_SET, frozenset(_freeze(item) for item in value))
    try:
        hash(value)
    except TypeError:
        fields = _compared_fields(kind)
        if fields is None:
            return (_IDENTITY, id(value))
        return (_DATACLASS, kind, tuple(_freeze(getattr(value, name)) for name in fields))
    return value


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


name_of: Final = callable_name
"""The default name of a policy's function (:func:`policy_name`): the one rule of
:func:`~otel_resilience.engine.naming.callable_name`, under the name the manager has exported."""
