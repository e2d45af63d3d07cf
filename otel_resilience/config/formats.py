"""Parse YAML (with the line of every key and list item) and TOML into plain data.

YAML is read with PyYAML's safe loader, node by node (``compose``), so that each key and list
item keeps the line it was written on; duplicate keys are refused (a merge key ``<<`` may still
be overridden, as YAML intends). TOML is read with ``tomllib`` (``tomli`` on Python 3.10), which
gives no line for a value: only its syntax errors have one. Both parsers are imported when a
file is read, never with the package: they are the ``config`` extra.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from otel_resilience.config.errors import ConfigError, Path

if TYPE_CHECKING:
    import yaml

__all__ = ["FORMATS", "Format", "UnknownFormatError", "file_format", "format_of", "parse"]

Format = Literal["yaml", "toml"]
"""A file format :func:`parse` reads."""
FORMATS: Final[dict[str, Format]] = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
"""File suffixes and the format each stands for."""
_EXTRA: Final = "pip install 'otel-resilience[config]'"
_TOML_LINE: Final = re.compile(r"at line (\d+)")

Parsed = tuple[object, dict[Path, int]]
"""A parsed document and the 1-based line of each path the parser could place."""


def format_of(name: str) -> Format | None:
    """Return the format a file name's suffix stands for, or ``None``."""
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    return FORMATS.get(suffix)


class UnknownFormatError(ConfigError):
    """A file whose format was not given and whose suffix stands for none (:data:`FORMATS`).

    ``str(error)`` ends with the hint of :func:`~otel_resilience.config.load` (``format=``); a
    command words its own from :attr:`fault`.

    Attributes:
        fault: What is wrong, worded to follow the file's name: ``"has no known suffix
            (.yaml, .yml, .toml)"``.
    """

    def __init__(self, source: str) -> None:
        self.fault = f"has no known suffix ({', '.join(FORMATS)})"
        super().__init__(f"{self.fault}: pass format='yaml' or 'toml'", source=source)

    def __reduce__(self) -> tuple[object, ...]:
        return (UnknownFormatError, (self.source,))


def file_format(source: str, given: Format | None = None) -> Format:
    """Return the format of the file ``source``: ``given``, else the one its suffix stands for.

    Raises:
        UnknownFormatError: No format is given and the suffix stands for none.
    """
    found = given or format_of(source)
    if found is None:
        raise UnknownFormatError(source)
    return found


def parse(text: str, file_format: Format, source: str | None) -> Parsed:
    """Parse ``text`` as ``file_format`` (a leading byte order mark is ignored).

    Raises:
        ConfigError: The text is not valid in its format (with the line where the parser
            stopped, when it says).
        ImportError: The parser is not installed (the message names the ``config`` extra).
    """
    text = text.removeprefix("\ufeff")  # a byte order mark some editors write: not part of either format
    if file_format == "toml":
        return _parse_toml(text, source)
    return _parse_yaml(text, source)


def _yaml() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError as error:
        raise ImportError(f"reading YAML needs PyYAML: {_EXTRA}") from error


def _toml_loads() -> Callable[[str], dict[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib  # noqa: PLC0415 - the standard library's, 3.11+

        return tomllib.loads
    try:
        module = importlib.import_module("tomli")
    except ImportError as error:
        raise ImportError(f"reading TOML on Python 3.10 needs tomli: {_EXTRA}") from error
    return cast("Callable[[str], dict[str, Any]]", module.loads)


def _parse_toml(text: str, source: str | None) -> Parsed:
    loads = _toml_loads()
    try:
        return loads(text), {}
    except ValueError as error:  # tomllib.TOMLDecodeError is a ValueError
        found = _TOML_LINE.search(str(error))
        line = int(found[1]) if found else None
        raise ConfigError(f"is not valid TOML: {error}", line=line, source=source) from None


def _parse_yaml(text: str, source: str | None) -> Parsed:
    module = _yaml()
    try:
        loader = module.SafeLoader(text)  # refuses a character YAML does not allow, before any node
    except module.reader.ReaderError as error:
        reason = f"is not valid YAML: unacceptable character #x{error.character:04x}: {error.reason}"
        at = text.count("\n", 0, error.position) + 1
        raise ConfigError(reason, line=at, source=source) from None
    lines: dict[Path, int] = {}
    try:
        node = loader.get_single_node()
        data = None if node is None else _YamlNodes(loader, lines, source).convert(node, ())
    except module.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else mark.line + 1
        problem = error.problem or error.context or "invalid"
        raise ConfigError(f"is not valid YAML: {problem}", line=line, source=source) from None
    except module.YAMLError as error:
        raise ConfigError(f"is not valid YAML: {error}", source=source) from None
    except RecursionError:
        raise ConfigError("nests too deep (a recursive YAML alias?)", source=source) from None
    finally:
        loader.dispose()
    return data, lines


class _YamlNodes:
    """Turns a composed YAML node tree into plain data, noting each key's and item's line."""

    def __init__(self, loader: yaml.SafeLoader, lines: dict[Path, int], source: str | None) -> None:
        self._loader = loader
        self._lines = lines
        self._source = source

    def convert(self, node: yaml.Node, path: Path) -> object:
        import yaml  # noqa: PLC0415 - imported by _yaml() already; the extra is optional

        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            items: list[object] = []
            for index, item in enumerate(node.value):
                here = (*path, index)
                self._lines[here] = item.start_mark.line + 1
                items.append(self.convert(item, here))
            return items
        return self._loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[object, object]:
        own = sum(1 for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge")
        self._loader.flatten_mapping(node)  # resolves `<<: *defaults` merge keys, merged pairs first
        merged = len(node.value) - own
        result: dict[object, object] = {}
        written: set[object] = set()
        for position, (key_node, value_node) in enumerate(node.value):
            key = self._loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:  # a list or a mapping used as a key
                raise ConfigError(
                    "has a key that is not a string", path=path, line=line, source=self._source
                ) from None
            if position >= merged:  # written here, not merged in: a repeat is a mistake
                if key in written:
                    raise ConfigError("is written twice", path=(*path, key), line=line, source=self._source)
                written.add(key)
            here = (*path, key)
            self._lines[here] = line
            result[key] = self.convert(value_node, here)
        return result
