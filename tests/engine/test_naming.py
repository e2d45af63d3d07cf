"""The one rule that names a user's callable: ``engine.naming.callable_name``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, NoReturn

import pytest

from otel_resilience.engine.naming import callable_module, callable_name


def fetch(url: str, timeout: float = 1.0) -> str:
    return f"{url} {timeout}"


async def fetch_async(url: str) -> str:
    return url


def outer() -> Any:
    def inner() -> None:
        return None

    return inner


class Client:
    def get(self, url: str) -> str:
        return url

    @classmethod
    def create(cls) -> Client:
        return cls()

    @staticmethod
    def parse(text: str) -> str:
        return text


class RateClient:
    def __call__(self, url: str) -> str:
        return url


class UnreadableQualname:
    """A callable whose ``__qualname__`` (and only it: :attr:`unreadable`) raises when read."""

    unreadable = "__qualname__"

    def __getattribute__(self, name: str) -> Any:
        if name == type(self).unreadable:
            raise RuntimeError(name)
        return super().__getattribute__(name)

    def __call__(self) -> str:
        return "ok"


class Unreadable:
    """A callable whose every missing attribute raises something else than AttributeError."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError(name)

    def __call__(self) -> str:
        return "ok"


class _RaisingMeta(type):
    def __getattribute__(cls, name: str) -> Any:
        if name == "__qualname__":
            raise RuntimeError("no qualname")
        return super().__getattribute__(name)


class BrokenClass(metaclass=_RaisingMeta):
    """A callable object whose class's ``__qualname__`` raises when read (its metaclass's doing)."""

    def __call__(self) -> str:
        return "ok"


def _named(value: object, **attributes: object) -> object:
    """``value`` with ``attributes`` set on the instance."""
    for key, item in attributes.items():
        setattr(value, key, item)
    return value


LAMBDA = lambda: 1  # noqa: E731 - the case under test
LAMBDA_LINE = inspect.getsourcelines(LAMBDA)[1]


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        pytest.param(fetch, "fetch", id="function"),
        pytest.param(fetch_async, "fetch_async", id="async function"),
        pytest.param(outer(), "outer.<locals>.inner", id="nested function"),
        pytest.param(Client.get, "Client.get", id="method"),
        pytest.param(Client().get, "Client.get", id="bound method"),
        pytest.param(Client.create, "Client.create", id="classmethod"),
        pytest.param(Client.__dict__["create"], "Client.create", id="classmethod object"),
        pytest.param(Client.parse, "Client.parse", id="staticmethod"),
        pytest.param(Client, "Client", id="class"),
        pytest.param(functools.partial(fetch, "a"), "partial(fetch)", id="partial"),
        pytest.param(
            functools.partial(functools.partial(fetch, "a"), timeout=2), "partial(fetch)", id="nested partial"
        ),
        pytest.param(
            functools.partial(
                _named(functools.partial(fetch, "a"), marked=True)
            ),  # kept nested: it has a __dict__
            "partial(fetch)",
            id="unflattened nested partial",
        ),
        pytest.param(functools.partial(Client().get), "partial(Client.get)", id="partial of a bound method"),
        pytest.param(
            functools.partial(RateClient()), "partial(RateClient)", id="partial of a callable object"
        ),
        pytest.param(RateClient(), "RateClient", id="callable instance"),
        pytest.param(len, "len", id="builtin"),
        pytest.param({}.get, "dict.get", id="builtin method"),
        pytest.param(UnreadableQualname(), "UnreadableQualname", id="__qualname__ raises"),
        pytest.param(Unreadable(), "Unreadable", id="every attribute raises"),
        pytest.param(BrokenClass(), "BrokenClass", id="its class's __qualname__ raises"),
        pytest.param(_named(RateClient(), __qualname__=7), "RateClient", id="__qualname__ not a str"),
        pytest.param(_named(RateClient(), __qualname__="  "), "RateClient", id="blank __qualname__"),
        pytest.param(_named(RateClient(), __name__="rates"), "rates", id="a __name__ only"),
    ],
)
def test_a_callable_is_named_by_what_it_is(fn: object, expected: str) -> None:
    """Each kind of callable gets its documented name, and reading a broken one never raises."""
    assert callable_name(fn) == expected


def test_a_lambda_is_named_after_its_module_and_line() -> None:
    """A lambda's name carries its module and first line, so two lambdas are told apart."""
    assert callable_name(LAMBDA) == f"{__name__}.<lambda>@{LAMBDA_LINE}"
    nested = lambda: 2  # noqa: E731 - the case under test
    line = inspect.getsourcelines(nested)[1]
    expected = f"{__name__}.test_a_lambda_is_named_after_its_module_and_line.<locals>.<lambda>@{line}"
    assert callable_name(nested) == expected
    assert callable_name(functools.partial(nested)) == f"partial({expected})"


class UnreadableModule(UnreadableQualname):
    """A callable whose ``__module__`` (and only it) raises when read."""

    unreadable = "__module__"


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        pytest.param(fetch, __name__, id="function"),
        pytest.param(Client().get, __name__, id="bound method"),
        pytest.param(functools.partial(functools.partial(fetch, "u")), __name__, id="nested partial"),
        pytest.param(RateClient(), __name__, id="callable instance: its class's"),
        pytest.param(len, "builtins", id="builtin"),
        pytest.param(Unreadable(), __name__, id="missing attributes raise: its class's"),
        pytest.param(UnreadableModule(), None, id="__module__ raises"),
        pytest.param(_named(RateClient(), __module__=7), None, id="__module__ not a str"),
    ],
)
def test_a_callables_module_tells_namesakes_apart(fn: object, expected: str | None) -> None:
    """The module a callable's name comes from (a partial's function's), and reading it never raises."""
    assert callable_module(fn) == expected
