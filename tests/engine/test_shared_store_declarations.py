"""SharedStore declares its attributes where introspection sees them, and nothing more at run time."""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Collection
from typing import Any

import pytest

from otel_resilience.engine.shared import STORE_COUNTS, SharedStore
from otel_resilience.store import RedisStore

DECLARED = {
    "name": str,
    "degraded": bool,
    "outages": int,
    "errors": int,
    "ops": int,
    "fallback_permits": int,
}


def test_get_type_hints_gives_the_attributes_a_store_declares() -> None:
    """typing.get_type_hints and inspect.get_annotations name each attribute, with its type."""
    assert typing.get_type_hints(SharedStore) == DECLARED
    assert set(inspect.get_annotations(SharedStore)) == set(DECLARED)
    assert set(STORE_COUNTS) <= set(DECLARED)
    hints = typing.get_type_hints(RedisStore)  # a store inherits them
    assert {name: hints[name] for name in DECLARED} == DECLARED


def test_the_hints_are_the_properties_type_checkers_read() -> None:
    """The run-time declarations and the read-only properties a type checker sees say the same."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(SharedStore)))
    properties = {
        node.name: ast.unparse(node.returns)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and node.returns is not None
        and any(ast.unparse(d) == "property" for d in node.decorator_list)
        and node.name != "local_only"  # a property of its own, defined at run time
    }
    assert properties == {name: kind.__name__ for name, kind in DECLARED.items()}


def test_the_docstring_lists_the_declared_attributes() -> None:
    """The class's Attributes section names the declared attributes, in order."""
    doc = inspect.getdoc(SharedStore) or ""
    section = doc.split("Attributes:", 1)[1]
    listed = [line.split(":", 1)[0].strip() for line in section.splitlines() if line.startswith("    ")]
    assert listed == list(DECLARED)


class _Store(SharedStore):
    """A store of a user's own, which sets its attributes as plain instance attributes."""

    name: str
    degraded: bool
    outages: int
    errors: int
    ops: int
    fallback_permits: int

    def __init__(self) -> None:
        self.name = "own"
        self.degraded = False
        self.outages = self.errors = self.ops = self.fallback_permits = 0

    def share_breaker(self, breaker: Any) -> None:
        """Share nothing."""

    def unshare_breaker(self, breaker: Any) -> None:
        """Share nothing."""

    def rate_rules(self, name: str, config: Any) -> Any:
        """Rules of none."""

    def local_breakers(self) -> Collection[Any]:
        """None."""
        return ()


@pytest.mark.parametrize("name", list(DECLARED))
def test_the_declarations_add_no_class_attribute(name: str) -> None:
    """Declared, not defined: the class has no such attribute, and a store of one's own sets its own."""
    assert SharedStore.__slots__ == ()
    assert name not in vars(SharedStore)
    with pytest.raises(AttributeError):
        getattr(SharedStore, name)
    store = _Store()
    setattr(store, name, getattr(store, name))
    assert store.local_only is False
