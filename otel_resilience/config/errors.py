"""``ConfigError``: what is wrong in a configuration file, where (its path and line)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Final

__all__ = ["ConfigError", "Path", "cannot_read", "render_path"]

Path = tuple[object, ...]
"""Where a value sits in the file: the keys and list indices from the top, e.g.
``("policies", "payments", "retry", "retry_on", 1)`` (a YAML key may be a number or a bool)."""

_PLAIN_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


def render_path(path: Path) -> str:
    """Return ``path`` as users read it: ``policies.payments.retry.retry_on[1]``.

    A key that is not made of letters, digits, ``_`` and ``-`` only (a policy named
    ``"ml.service"``) is quoted in brackets (its ``repr``): ``policies['ml.service'].timeout``.
    """
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def cannot_read(source: str | os.PathLike[str], error: OSError) -> str:
    """Why the configuration file ``source`` cannot be read, as the commands say it.

    The path always named, the system's reason in words (the error's ``strerror``, such as
    ``"No such file or directory"``, else its text): ``cannot read 'resilience.yaml': No such
    file or directory``, ``cannot read 'pipe.yaml': is a named pipe (FIFO), not a regular file``.
    """
    return f"cannot read {os.fspath(source)!r}: {error.strerror or error}"


class ConfigError(ValueError):
    """A configuration file (or text) that cannot be loaded: what is wrong, at which path, on which line.

    ``str(error)`` reads ``resilience.yaml:12: policies.payments.circuit_breaker.failure_threshold
    must be >= 1, got 0``: the file (when loaded from one), the line (when the format gives one:
    YAML always, TOML only for syntax errors), the dotted path of the value and the reason.

    Args:
        reason: What is wrong, worded to follow the path (``"must be >= 1, got 0"``).
        path: Where, as keys and list indices from the top of the file (``()`` for the file as a
            whole).
        line: The 1-based line, or ``None`` when the format does not give one.
        source: The file's name as given to :func:`~otel_resilience.config.load`, or ``None``
            for text.

    Attributes:
        reason: What is wrong.
        path: Where, as a dotted string (``"policies.payments.circuit_breaker.failure_threshold"``;
            ``""`` for the file as a whole).
        keys: The same path as a tuple of keys and list indices.
        line: The 1-based line, or ``None``.
        source: The file's name, or ``None``.
    """

    def __init__(
        self, reason: str, *, path: Path = (), line: int | None = None, source: str | None = None
    ) -> None:
        self.reason = reason
        self.keys = path
        self.path = render_path(path)
        self.line = line
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        what = f"{self.path} {self.reason}" if self.path else self.reason
        return f"{where}: {what}" if where else what

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle and copy with every field and the notes (``ValueError``'s own keeps its message only)."""
        return (*self._remade(), self.__dict__)

    def _remade(self) -> tuple[Callable[..., ConfigError], tuple[object, ...]]:
        """What makes this error again and its arguments: a subclass with other arguments gives its own."""
        return _rebuild, (self.reason, self.keys, self.line, self.source)


def _rebuild(reason: str, path: Path, line: int | None, source: str | None) -> ConfigError:
    """Rebuild a pickled :class:`ConfigError` (its keyword-only arguments)."""
    return ConfigError(reason, path=path, line=line, source=source)
