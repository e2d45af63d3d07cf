"""``load``, ``loads`` and ``from_env``: a configuration file to a :class:`ConfigFile` of named policies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

from otel_resilience.config.errors import ConfigError
from otel_resilience.config.formats import (
    Format,
    UnknownFormatError,
    check_format,
    file_format,
    parse,
    read_file,
)
from otel_resilience.config.reader import read
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, check_clock
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.validation import fail, file_path
from otel_resilience.environment_variables import OTEL_RESILIENCE_CONFIG
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.manager.watch import read_settled
from otel_resilience.patterns.retry import RetryBudget

__all__ = ["CONFIG_ENV", "ConfigFile", "from_env", "load", "loads"]

CONFIG_ENV: Final = OTEL_RESILIENCE_CONFIG
"""The environment variable that names the configuration file read at start-up (:func:`from_env`);
its name is defined in :mod:`otel_resilience.environment_variables` (an option of
``opentelemetry-instrument``: ``--resilience_config``)."""


class ConfigFile(Mapping[str, ResilienceConfig]):
    """The policies a configuration file defines: a read-only mapping, name -> ``ResilienceConfig``.

    It iterates in file order. Each config's ``name`` is its key, so ``@resilient(file["payments"])``
    and ``manager.execute_with_resilience(fn, file["payments"])`` run under the policy
    ``payments``. Two loads of an unchanged file give equal configs (a retry budget is compared
    by identity: pass ``previous=`` to :func:`load` to keep the budgets of an earlier load).

    Attributes (read-only):
        retry_budgets: The retry budgets of the file's ``retry_budgets``, by name: one
            :class:`~otel_resilience.RetryBudget` per name, shared by every policy naming it.
        source: The file's name as given to :func:`load`, or ``None`` for text.
        format: ``"yaml"`` or ``"toml"``.
    """

    __slots__ = ("_format", "_policies", "_retry_budgets", "_source")

    retry_budgets = ReadOnly[Mapping[str, RetryBudget]](
        "_retry_budgets", "The retry budgets of the file's ``retry_budgets``, by name (read-only)."
    )
    source = ReadOnly["str | None"](
        "_source", "The file's name as given to :func:`load`, or ``None`` for text."
    )
    format = ReadOnly[Format]("_format", '``"yaml"`` or ``"toml"``.')

    def __init__(
        self,
        policies: Mapping[str, ResilienceConfig],
        retry_budgets: Mapping[str, RetryBudget],
        *,
        source: str | None,
        format: Format,  # noqa: A002 - the name users read in load(path, format=...)
    ) -> None:
        self._policies = MappingProxyType(dict(policies))
        self._retry_budgets: Mapping[str, RetryBudget] = MappingProxyType(dict(retry_budgets))
        self._source = source
        self._format: Format = format

    @property
    def policies(self) -> Mapping[str, ResilienceConfig]:
        """The policies by name, in file order (read-only)."""
        return self._policies

    def __getitem__(self, name: str) -> ResilienceConfig:
        return self._policies[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def __repr__(self) -> str:
        return f"ConfigFile(source={self.source!r}, policies={list(self._policies)!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (a spawn worker's argument) and copied whole: one pickle keeps the budgets that
        # its policies share shared, as the file says (each a new budget of the same settings).
        return (_rebuild, (dict(self._policies), dict(self.retry_budgets), self.source, self.format))


def _rebuild(
    policies: dict[str, ResilienceConfig],
    retry_budgets: dict[str, RetryBudget],
    source: str | None,
    file_format: Format,
) -> ConfigFile:
    """Rebuild a pickled :class:`ConfigFile` (its keyword-only arguments)."""
    return ConfigFile(policies, retry_budgets, source=source, format=file_format)


def loads(
    text: str,
    format: Format = "yaml",  # noqa: A002 - mirrors load(path, format=...)
    *,
    source: str | None = None,
    previous: ConfigFile | None = None,
) -> ConfigFile:
    """Read configuration text: the policies and retry budgets it defines.

    Args:
        text: The file's content.
        format: ``"yaml"`` (the default) or ``"toml"``.
        source: A name for messages (``"resilience.yaml"``), or ``None``; never empty.
        previous: An earlier load of the same file: a retry budget with the same name and the
            same settings is taken from it, so that its counts carry over and an unchanged
            policy stays equal to its earlier config (a reload changes nothing that did not
            change).

    Returns:
        The policies, in file order.

    Raises:
        ConfigError: The text is not valid, with the path of the wrong value and its line
            (YAML; TOML gives lines for syntax errors only).
        ImportError: The format's parser is missing (PyYAML; tomli on 3.10): install the
            ``config`` extra.
        ValueError: ``format`` is not ``"yaml"`` or ``"toml"``, or ``source`` is empty.
        TypeError: ``text`` is not a ``str`` (bytes: decode them, or :func:`load` the file),
            ``source`` is not a ``str`` or ``None``, or ``previous`` is not a :class:`ConfigFile`
            or ``None``.
    """
    if not isinstance(text, str):
        raise fail("loads", "text", "a str", text, kind=TypeError)
    if source is not None:  # it names the file a manager applied
        if not isinstance(source, str):
            raise fail("loads", "source", "a str or None", source, kind=TypeError)
        if not source:
            raise fail("loads", "source", "a non-empty name or None", source)
    _check_previous("loads", previous)
    format = check_format(format)  # noqa: A001 - the argument's own name
    data, lines = parse(text, format, source)
    budgets = None if previous is None else previous.retry_budgets
    policies, retry_budgets = read(data, lines, source, budgets)
    return ConfigFile(policies, retry_budgets, source=source, format=format)


def load(
    path: str | os.PathLike[str],
    *,
    format: Format | None = None,  # noqa: A002 - the file's format, as users name it
    previous: ConfigFile | None = None,
) -> ConfigFile:
    """Read a configuration file (YAML or TOML) into its named policies.

    Args:
        path: The file. Its suffix gives the format (``.yaml``, ``.yml``, ``.toml``) unless
            ``format`` says.
        format: ``"yaml"`` or ``"toml"``; ``None`` (the default) for the suffix's.
        previous: An earlier load of the file, whose retry budgets are kept where unchanged
            (see :func:`loads`).

    Returns:
        The policies, in file order.

    Raises:
        ConfigError: The file is not valid (``str(error)`` reads ``resilience.yaml:12:
            policies.payments.circuit_breaker.failure_threshold must be >= 1, got 0``), is not
            UTF-8 text, or its format cannot be told from its name.
        OSError: The file cannot be read; a directory, whatever its name or ``format``, raises
            ``IsADirectoryError`` (``strerror`` ``"is a directory: name a file"``) before its
            suffix is looked at, and any other path that is not a regular file (a named pipe, a
            device) an ``OSError`` (``EINVAL``) before it is opened, or once opened when it
            became one since (never waited on: ``config.formats.read_file``).
        ImportError: The format's parser is missing: install the ``config`` extra.
        ValueError: ``format`` is not ``None``, ``"yaml"`` or ``"toml"``, or ``path`` is empty or
            holds a NUL character (before the file is read).
        TypeError: ``path`` is not a ``str`` or an ``os.PathLike`` of one, or ``previous`` is not a
            :class:`ConfigFile` or ``None`` (before the file is read).
    """
    return _load(path, format, previous, read_file)


def _load(
    path: str | os.PathLike[str],
    format: Format | None,  # noqa: A002 - load()'s name
    previous: ConfigFile | None,
    read_file: Callable[[str], bytes],
) -> ConfigFile:
    """:func:`load`, the file's bytes read by ``read_file`` (:func:`from_env`'s waits for a stable file)."""
    source = file_path("load", path)
    _check_previous("load", previous)
    found = file_format(source, format)
    return load_content(read_file(source), source, found, previous=previous)


def load_content(
    content: bytes,
    source: str,
    format: Format,  # noqa: A002 - load(path, format=...)'s name
    *,
    previous: ConfigFile | None = None,
) -> ConfigFile:
    """Read the bytes read from the file ``source``, as :func:`load` reads the file.

    For a reader that must parse exactly the bytes it looked at (a watch compares them between
    two looks). Line ends are read as :func:`load` reads them (universal newlines: CR LF and CR are LF).

    Raises:
        ConfigError: As :func:`load`; bytes that are not UTF-8 name the offset of the first wrong one.
        ImportError: As :func:`load`.
    """
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        reason = f"is not UTF-8 text: byte {error.object[error.start]:#04x} at offset {error.start}"
        raise ConfigError(reason, source=source) from error
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines, as a text file's read
    return loads(text, format, source=source, previous=previous)


def from_env(
    environ: Mapping[str, str] | None = None,
    *,
    previous: ConfigFile | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> ConfigFile | None:
    """Load the file named by ``OTEL_RESILIENCE_CONFIG``, the configuration read at start-up.

    Call it once when the service starts (and give its policies to the manager, or to
    ``@resilient``); an unset or empty variable means no file. The file is read once it is
    stable, as a watch's first load reads it (``manager.watch``): a service started while it is
    being saved neither starts on its first chunk nor fails on it. A file written in the last 3 s
    is read again 0.1 s later (``START_UP_LOOK_INTERVAL``; again while it changes, but no later
    than 3 s after it was written), and loaded once two reads find it the same.

    Args:
        environ: The environment (default ``os.environ``).
        previous: As for :func:`load`.
        clock: The clock of that wait (a test's ``FakeClock`` takes no time).

    Returns:
        The file's policies, or ``None`` when the variable is unset or empty.

    Raises:
        ConfigError: The file is not valid, or cannot be read (a directory included), or its name
            has no known suffix (the message names the variable).
        ImportError: The format's parser is missing: install the ``config`` extra.
        TypeError: ``environ`` is not a mapping or ``None`` (or its variable is no ``str``),
            ``previous`` is not a :class:`ConfigFile` or ``None``, or ``clock`` is not a clock.
    """
    if environ is not None and not isinstance(environ, Mapping):
        raise fail(
            "from_env",
            "environ",
            "a mapping of names to values (os.environ) or None",
            environ,
            kind=TypeError,
        )
    _check_previous("from_env", previous)
    check_clock("from_env", clock)
    value = (os.environ if environ is None else environ).get(CONFIG_ENV, "")
    if not isinstance(value, str):  # os.environ's are; a mapping of the caller's may hold anything
        raise fail("from_env", f"environ[{CONFIG_ENV!r}]", "a str (a file's path)", value, kind=TypeError)
    path = value.strip()
    if not path:
        return None
    try:
        return _load(path, None, previous, lambda source: read_settled(source, clock))
    except UnknownFormatError as error:  # the variable has no format= to pass: the name must say it
        reason = f"{CONFIG_ENV}={path!r} names a file that {error.fault}: rename it with one of them"
        raise ConfigError(reason) from None
    except OSError as error:
        reason = f"{CONFIG_ENV}={path!r} names a file that cannot be read: {error.strerror or error}"
        raise ConfigError(reason) from error


def _check_previous(owner: str, previous: object) -> None:
    """Refuse a ``previous=`` of ``owner`` that is not an earlier load (a :class:`ConfigFile`) or ``None``.

    Raises:
        TypeError: Naming ``owner.previous``, before any file is read.
    """
    if previous is not None and not isinstance(previous, ConfigFile):
        raise fail(owner, "previous", "a ConfigFile (an earlier load) or None", previous, kind=TypeError)
