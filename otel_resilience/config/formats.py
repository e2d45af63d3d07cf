"""Parse YAML (with the line of every key and list item) and TOML into plain data.

YAML is read with PyYAML's safe loader, node by node (``compose``), so that each key and list
item keeps the line it was written on; duplicate keys are refused (a merge key ``<<`` may still
be overridden, as YAML intends). The values are the safe loader's: an alias is its anchor's
value, read once (never a copy per use, which aliases of aliases would make exponential), and a
collection with a tag of its own (``!!set``, ``!!omap``) is built as the safe loader builds it.
But a plain scalar is typed by YAML 1.2's core schema (``_CORE_SCALARS``), as most other YAML
tools read it, not by YAML 1.1's (PyYAML's own): ``no``, ``on``, ``y`` are strings, not booleans;
``010`` is ten, ``1:30`` and ``2024-01-01`` are strings, ``1e-3`` is a number; a document that
declares an older version (``%YAML 1.1``) is refused; a character escaped as a surrogate pair, as
JSON writes one past U+FFFF (two escapes, as ``json.dumps`` does), is that character, and half a pair alone is
refused. A loader class of its own holds these rules: ``yaml.SafeLoader`` is left as it is.
TOML is read with ``tomllib`` (``tomli`` on Python 3.10), which gives no line for a value: only
its syntax errors have one. Both parsers are imported when a file is read, never with the
package: they are the ``config`` extra.
"""

from __future__ import annotations

import errno
import functools
import importlib
import itertools
import math
import os
import pathlib
import re
import stat
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, cast, get_args

from otel_resilience.config.errors import ConfigError, Path
from otel_resilience.engine.validation import describe

if TYPE_CHECKING:
    import yaml

__all__ = [
    "FORMATS", "Format", "UnknownFormatError", "check_format", "file_format", "format_of", "parse",
    "plain_string", "read_file",
]  # fmt: skip

Format = Literal["yaml", "toml"]
"""A file format :func:`parse` reads."""
FORMATS: Final[dict[str, Format]] = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
"""File suffixes and the format each stands for."""
_EXTRA: Final = "pip install 'otel-resilience[config]'"
_TOML_LINE: Final = re.compile(r"at line (\d+)")
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
"""Half of a UTF-16 surrogate pair: no character on its own."""
_DIRECTIVE: Final = re.compile(r"^%YAML[ \t]", re.MULTILINE)
"""A ``%YAML`` directive: at the start of a line, before the document (only comments precede it)."""
_YAML_TAG: Final = "tag:yaml.org,2002:"
_MAP: Final = f"{_YAML_TAG}map"
_SEQ: Final = f"{_YAML_TAG}seq"
_MERGE: Final = f"{_YAML_TAG}merge"

_CORE_SCALARS: Final[dict[str, str]] = {
    "null": r"~|null|Null|NULL|",
    "bool": r"true|True|TRUE|false|False|FALSE",
    "int": r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+",
    "float": (
        r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
    ),
}
"""YAML 1.2's core schema: the plain scalars read as ``null``, a bool, an int and a float, in that
order (``10`` is an int, though the float pattern matches it too); any other plain scalar is a
string. The patterns also judge a value tagged explicitly (``!!int 1:30`` is refused)."""
_CORE: Final = {tag: re.compile(f"(?:{pattern})\\Z") for tag, pattern in _CORE_SCALARS.items()}
_PLAIN_WORD: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
"""A word YAML writes plain, unquoted, in a flow and as a key: letters, digits, ``_``, ``.``, ``-``."""


def plain_string(text: str) -> bool:
    """Whether ``text``, written unquoted in a YAML file (in a flow, or as a key), reads back as that string.

    A word of letters, digits, ``_``, ``.`` and ``-`` that YAML 1.2's core schema does not read as a
    null, a bool or a number (``null``, ``true``, ``10``, ``1e3``, ``.inf`` are not strings there).
    """
    return bool(_PLAIN_WORD.match(text)) and not any(pattern.match(text) for pattern in _CORE.values())


_FIRST: Final = {"null": "~nN", "bool": "tTfF", "int": "-+0123456789", "float": "-+0123456789."}
"""The characters a plain scalar of each type starts with (PyYAML looks its resolvers up by them)."""

Parsed = tuple[object, dict[Path, int]]
"""A parsed document and the 1-based line of each path the parser could place."""
_Pair = tuple["yaml.Node", "yaml.Node"]
"""A key's node and its value's node, in a mapping node."""


def check_format(value: object, field: str = "format") -> Format:
    """Return ``value`` if it names a format :func:`parse` reads (``"yaml"`` or ``"toml"``).

    The one rule of every ``format=`` (:func:`~otel_resilience.config.load`,
    :func:`~otel_resilience.config.loads`, ``manager.watch``): checked before any file is read.

    Raises:
        ValueError: Naming ``field``: ``"format must be 'yaml' or 'toml', got 'ini'"``.
    """
    names: tuple[Format, ...] = get_args(Format)
    if isinstance(value, str) and value in names:
        return cast("Format", str(value))
    allowed = " or ".join(map(repr, names))
    raise ValueError(f"{field} must be {allowed}, got {describe(value)}")


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

    def _remade(self) -> tuple[Callable[..., ConfigError], tuple[object, ...]]:
        return UnknownFormatError, (self.source,)


def file_format(source: str, given: Format | None = None) -> Format:
    """Return the format of the file ``source``: ``given``, else the one its suffix stands for.

    The first look at the file of every reader (:func:`~otel_resilience.config.load`,
    :func:`~otel_resilience.config.from_env`, ``manager.watch``, the commands): a path that is
    not a regular file is refused here, before it is opened, whatever its name or ``given`` (a
    directory has no format to tell; a named pipe nobody writes to, or a device, would never end
    the read).

    Raises:
        ValueError: ``given`` is not ``None`` and names no format (:func:`check_format`).
        IsADirectoryError: ``source`` names a directory (``strerror``: ``"is a directory: name
            a file"``).
        OSError: ``source`` names another thing that is not a regular file (``errno``
            ``EINVAL``; ``strerror`` such as ``"is a named pipe (FIFO), not a regular file"``).
        UnknownFormatError: No format is given and the suffix stands for none.
    """
    checked = None if given is None else check_format(given)
    _refuse_no_regular_file(source)
    if checked is not None:
        return checked
    found = format_of(source)
    if found is None:
        raise UnknownFormatError(source)
    return found


_NO_REGULAR_FILES: Final[tuple[tuple[Callable[[int], bool], str], ...]] = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
"""What a path may name that is no regular file nor directory, by the test of its mode."""


def _refuse_no_regular_file(source: str) -> None:
    """Refuse ``source`` if it names (through links) something that exists and is not a regular file.

    Raises:
        IsADirectoryError: A directory.
        OSError: Any other thing that is not a regular file (``EINVAL``).
    """
    try:
        mode = pathlib.Path(source).stat().st_mode
    except OSError:  # missing, or one the system cannot look at: the read says why
        return
    _refuse_mode(mode, source)


_NONBLOCK: Final[int] = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no named pipe in a folder
_OPEN_TO_READ: Final = os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
"""How :func:`read_file` opens a file: read only, never waiting to open it (a named pipe nobody
writes to is opened at once, and refused), not inherited by a child process, bytes as they are."""


def read_file(source: str) -> bytes:
    """Return the bytes of the regular file ``source``, refusing what is not one by what was opened.

    The one read of every reader of a configuration file (:func:`~otel_resilience.config.load`,
    and ``manager.watch`` and :func:`~otel_resilience.config.from_env`, which read it at each
    look): :func:`file_format` refuses a path that is no regular file before it is opened, but
    the path may name another thing by the time it is read (a named pipe moved over a watched
    file). So the file is opened without waiting (``O_NONBLOCK``) and what was opened is judged
    by the same rule before a byte is read: a named pipe, a device or a directory is refused as
    :func:`file_format` refuses it, never waited on; a regular file is read in blocking mode.

    Raises:
        IsADirectoryError: ``source`` names a directory.
        OSError: ``source`` names another thing that is not a regular file (``EINVAL``), or
            cannot be opened or read (its own error).
    """
    descriptor = os.open(source, _OPEN_TO_READ)
    try:
        _refuse_mode(os.fstat(descriptor).st_mode, source)
        if _NONBLOCK:  # a regular file: read as any file is (some network file systems honour the flag)
            os.set_blocking(descriptor, True)
        chunks = []
        while chunk := os.read(descriptor, _CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(descriptor)


_CHUNK: Final = 1 << 16
"""The bytes :func:`read_file` asks for at a time (a configuration file is usually one read)."""


def _refuse_mode(mode: int, source: str) -> None:
    """Refuse ``source``, whose mode is ``mode``, unless it is a regular file (the one rule of both looks).

    Raises:
        IsADirectoryError: A directory.
        OSError: Any other thing that is not a regular file (``EINVAL``).
    """
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory: name a file", source)
    if not stat.S_ISREG(mode):
        kind = next((f"is {name}, " for is_kind, name in _NO_REGULAR_FILES if is_kind(mode)), "is ")
        raise OSError(errno.EINVAL, f"{kind}not a regular file", source)


def parse(text: str, file_format: Format, source: str | None) -> Parsed:
    """Parse ``text`` as ``file_format`` (a leading byte order mark is ignored).

    Raises:
        ConfigError: The text is not valid in its format (with the line where the parser
            stopped, when it says).
        ImportError: The parser is not installed (the message names the ``config`` extra).
    """
    text = text.removeprefix("\ufeff")  # a byte order mark some editors write: not part of either format
    hint = " (a recursive YAML alias?)" if file_format == "yaml" else ""
    too_deep = f"nests deeper than {MAX_NESTING} levels{hint}"
    try:
        parsed = _parse_toml(text, source) if file_format == "toml" else _parse_yaml(text, source)
    except RecursionError:  # either parser (or the reading of YAML nodes) past Python's recursion limit
        raise ConfigError(too_deep, source=source) from None
    if _nests_too_deep(parsed[0]):  # the same answer wherever the caller's stack stands
        raise ConfigError(too_deep, source=source)
    return parsed


MAX_NESTING: Final = 64
"""The most lists and mappings a file may nest in one another (a policy's settings take five).

A file nested deeper is refused whoever reads it: without this limit, one nested some hundred
levels deep loaded or failed by how deep the caller's own stack stood (the parsers recurse)."""


_CONTAINERS: Final = (dict, list, tuple, set, frozenset)
"""What a parsed file nests: the mappings and lists of YAML and TOML (sets and tuples of YAML's tags)."""


def _nests_too_deep(data: object) -> bool:
    """Whether ``data`` nests lists and mappings more than :data:`MAX_NESTING` deep, or in a cycle.

    Walked without recursion, each container once (the heights of those reached again through
    YAML aliases are kept: a file of aliases of aliases is not walked exponentially).
    """
    if not isinstance(data, _CONTAINERS):
        return False
    heights: dict[int, int] = {}
    on_path = {id(data)}
    stack: list[tuple[object, Iterator[object], list[int]]] = [(data, _members(data), [0])]
    while stack:
        node, members, tallest = stack[-1]
        for member in members:
            if not isinstance(member, _CONTAINERS):
                continue
            if id(member) in on_path:  # a container inside itself: endless
                return True
            height = heights.get(id(member))
            if height is None:
                if len(stack) >= MAX_NESTING:  # one more level is past the limit
                    return True
                on_path.add(id(member))
                stack.append((member, _members(member), [0]))
                break
            tallest[0] = max(tallest[0], height)
        else:
            stack.pop()
            on_path.discard(id(node))
            heights[id(node)] = height = tallest[0] + 1
            if stack:
                stack[-1][2][0] = max(stack[-1][2][0], height)
            elif height > MAX_NESTING:
                return True
    return False


def _members(container: object) -> Iterator[object]:
    """The keys and values of a mapping, the items of any other container."""
    if isinstance(container, dict):
        return itertools.chain(container.keys(), container.values())
    return iter(cast("list[object]", container))


def _yaml() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError as error:
        raise ImportError(f"reading YAML needs PyYAML: {_EXTRA}") from error


def _toml_loads() -> Callable[[str], dict[str, Any]]:
    if sys.version_info >= (3, 11):
        import tomllib  # noqa: PLC0415 - the standard library's, 3.11+

        return tomllib.loads
    else:  # noqa: RET505 - mypy checks the branch of its version
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


def _core_value(tag: str, text: str) -> object:
    """The value of a scalar of the core schema's ``tag`` (``"int"`` ...), by that schema's rules.

    Raises:
        ValueError: ``text`` is not written as the core schema writes a ``tag``.
    """
    if not _CORE[tag].match(text):
        raise ValueError(f"{text!r} is not a YAML 1.2 {tag}")
    if tag == "null":
        return None
    if tag == "bool":
        return text.lower() == "true"
    if tag == "int":
        base = {"0o": 8, "0x": 16}.get(text[:2], 10)
        return int(text[2:] if base != 10 else text, base)
    special = text.lower().lstrip("+-")
    if special in (".inf", ".nan"):
        value = math.inf if special == ".inf" else math.nan
        return -value if text.startswith("-") else value
    return float(text)


@functools.cache
def _core_loader(module: Any) -> type[yaml.SafeLoader]:
    """A ``SafeLoader`` of ``module`` (PyYAML) that types plain scalars by ``_CORE_SCALARS``.

    Its resolver table is its own (a class attribute set here, never ``yaml.SafeLoader``'s, which
    ``yaml.safe_load`` goes on using unchanged): the core schema's four types, and the merge key
    ``<<``, which YAML 1.2 dropped but files use (``<<: *defaults``).
    """

    class CoreLoader(module.SafeLoader):  # type: ignore[misc]
        yaml_implicit_resolvers: ClassVar[dict[str | None, list[tuple[str, re.Pattern[str]]]]] = {}

    def construct(tag: str) -> Callable[[yaml.SafeLoader, yaml.ScalarNode], object]:
        return lambda loader, node: _core_value(tag, loader.construct_scalar(node))

    for tag, pattern in _CORE.items():
        full_tag = f"{_YAML_TAG}{tag}"
        first = [*_FIRST[tag], ""] if tag == "null" else list(_FIRST[tag])
        CoreLoader.add_implicit_resolver(full_tag, pattern, first)
        CoreLoader.add_constructor(full_tag, construct(tag))
    CoreLoader.add_implicit_resolver(_MERGE, re.compile(r"<<\Z"), ["<"])
    return cast("type[yaml.SafeLoader]", CoreLoader)


def _parse_yaml(text: str, source: str | None) -> Parsed:
    module = _yaml()
    try:
        loader = _core_loader(module)(text)  # refuses a character YAML does not allow, before any node
    except module.reader.ReaderError as error:
        reason = f"is not valid YAML: unacceptable character #x{error.character:04x}: {error.reason}"
        at = text.count("\n", 0, error.position) + 1
        raise ConfigError(reason, line=at, source=source) from None
    lines: dict[Path, int] = {}
    try:
        node = loader.get_single_node()
        _check_version(loader.yaml_version, text, source)
        data = None if node is None else _YamlNodes(loader, lines, source).read(node)
    except module.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else mark.line + 1
        problem = error.problem or error.context or "invalid"
        raise ConfigError(f"is not valid YAML: {problem}", line=line, source=source) from None
    except module.YAMLError as error:
        raise ConfigError(f"is not valid YAML: {error}", source=source) from None
    finally:
        loader.dispose()
    return data, lines


def _check_version(version: tuple[int, int] | None, text: str, source: str | None) -> None:
    """Refuse a document whose ``%YAML`` directive names a version before 1.2, the one it is read as.

    YAML 1.1's booleans and numbers differ from 1.2's (``yes`` is true and ``010`` is 8 there, the
    string ``"yes"`` and 10 here): a file that says it is 1.1 is not read by other rules silently.
    """
    if version is None or version >= (1, 2):
        return
    written = f"{version[0]}.{version[1]}"
    directive = _DIRECTIVE.search(text)
    line = None if directive is None else text.count("\n", 0, directive.start()) + 1
    raise ConfigError(
        f"declares YAML {written} (%YAML {written}), whose booleans and numbers are not YAML 1.2's, "
        "which the file is read as: remove the directive, or write %YAML 1.2",
        line=line,
        source=source,
    )


class _YamlNodes:
    """Turns a composed YAML node tree into plain data, noting each key's and item's line.

    Each mapping and list is read once: an alias gives its anchor's value again (as the safe
    loader does), whose keys and items keep the lines of the anchor.
    """

    def __init__(self, loader: yaml.SafeLoader, lines: dict[Path, int], source: str | None) -> None:
        self._loader = loader
        self._lines = lines
        self._source = source
        self._read: dict[int, tuple[yaml.Node, object]] = {}
        """Each mapping and list read so far, by the identity of its node (kept alive here)."""
        self._pairs: dict[int, tuple[yaml.Node, dict[object, _Pair]]] = {}
        """Each mapping's pairs with its merge keys resolved, by the identity of its node (kept alive)."""

    def read(self, node: yaml.Node) -> object:
        """The document's data, its keys and text checked first (before merge keys are resolved)."""
        self._check_keys(node, (), set())
        return self.convert(node, ())

    def _check_keys(self, node: yaml.Node, path: Path, seen: set[int]) -> None:
        """Refuse a key written twice in one mapping, or one that is a list or a mapping; each node once.

        Done on the tree as written: a key of a merged mapping (``<<``) that the mapping writes
        too is an override, not a mistake; the merge key written twice is (one key, a list of
        mappings, merges several). Each scalar's text is read on the way (:meth:`_text`).
        """
        if id(node) in seen:
            return
        seen.add(id(node))
        kind = _collection(node)
        if kind is None:  # a scalar, or a collection with a tag of its own (!!set): the text it holds
            if isinstance(node.value, str):
                node.value = self._text(node, path)
            else:
                for child in _children(node):
                    self._check_keys(child, path, seen)
            return
        if kind == _SEQ:
            for index, item in enumerate(node.value):
                self._check_keys(item, (*path, index), seen)
            return
        written: set[object] = set()
        merges = 0
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges += 1
                if merges > 1:  # a key as any other: one merge key, whose list merges several mappings
                    raise ConfigError(
                        "is written twice: merge several mappings with one key, <<: [*first, *second]",
                        path=(*path, "<<"),
                        line=key_node.start_mark.line + 1,
                        source=self._source,
                    )
                self._check_keys(value_node, path, seen)
                continue
            self._check_keys(key_node, path, seen)
            key = self._key(key_node, path)
            if key in written:
                line = key_node.start_mark.line + 1
                raise ConfigError("is written twice", path=(*path, key), line=line, source=self._source)
            written.add(key)
            self._check_keys(value_node, (*path, key), seen)

    def _text(self, node: yaml.Node, path: Path) -> str:
        r"""A scalar's text with each surrogate pair joined into its character; half of one alone is refused.

        JSON, and so YAML 1.2, writes a character past U+FFFF as two escapes (``"\ud83d\ude00"``,
        as ``json.dumps`` does), which PyYAML leaves as two lone surrogates: no character, and
        no telemetry exporter can encode them. TOML refuses half of a pair; so does this.
        """
        text: str = node.value
        if _SURROGATE.search(text) is None:
            return text
        joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        lone = _SURROGATE.search(joined)
        if lone is not None:
            raise ConfigError(
                f"is not valid YAML: {text!r} holds half of a surrogate pair ({lone[0]!r}) without the other "
                "half, which is no character",
                path=path,
                line=node.start_mark.line + 1,
                source=self._source,
            )
        return joined

    def convert(self, node: yaml.Node, path: Path) -> object:
        kind = _collection(node)
        if kind is None:  # a scalar, or a collection of its own tag (!!set, !!omap): the safe loader's
            return self._construct(node, path)
        done = self._read.get(id(node))
        if done is not None:  # an alias of a mapping or list read already: its value, not a copy
            return done[1]
        value: object
        if kind == _MAP:
            value = self._mapping(cast("yaml.MappingNode", node), path)
        else:
            items: list[object] = []
            for index, item in enumerate(node.value):
                here = (*path, index)
                self._lines[here] = item.start_mark.line + 1
                items.append(self.convert(item, here))
            value = items
        self._read[id(node)] = (node, value)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[object, object]:
        result: dict[object, object] = {}
        for key, (key_node, value_node) in self._resolved(node, path).items():
            here = (*path, key)
            self._lines[here] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node, here)
        return result

    def _resolved(self, node: yaml.MappingNode, path: Path) -> dict[object, _Pair]:
        """The key and value nodes of a mapping, by key, its merge keys (``<<``) resolved as YAML says.

        A merged mapping gives the keys the mapping does not write itself, and of a list of them
        (``<<: [*a, *b]``) the earlier gives a key both have. The merged keys come first, in the
        order of their mappings. Each mapping is resolved once (a merge of merges of the same
        anchors stays linear), and no node is changed (unlike ``flatten_mapping``, which also takes
        a key from the later mapping of a list).
        """
        done = self._pairs.get(id(node))
        if done is not None:
            return done[1]
        merged: list[yaml.MappingNode] = []
        own: list[_Pair] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged += _merged_mappings(node, value_node)
            else:
                own.append((key_node, value_node))
        pairs: dict[object, _Pair] = {}
        for source in merged:
            for key, pair in self._resolved(source, path).items():
                pairs.setdefault(key, pair)
        for key_node, value_node in own:  # a key the mapping writes overrides a merged one, in its place
            pairs[self._key(key_node, path)] = (key_node, value_node)
        self._pairs[id(node)] = (node, pairs)
        return pairs

    def _key(self, node: yaml.Node, path: Path) -> object:
        """The value of a mapping's key node, which must be hashable (not a list or a mapping)."""
        key = self._construct(node, path)
        try:
            hash(key)
        except TypeError:  # a list or a mapping used as a key
            line = node.start_mark.line + 1
            raise ConfigError(
                "has a key that is not a string", path=path, line=line, source=self._source
            ) from None
        return key

    def _construct(self, node: yaml.Node, path: Path) -> object:
        """The safe loader's value of ``node``; a value its tag cannot read is an error at ``path``."""
        import yaml  # noqa: PLC0415 - imported by _yaml() already; the extra is optional

        try:
            return self._loader.construct_object(node, deep=True)
        except (yaml.MarkedYAMLError, RecursionError):
            raise
        except Exception:  # noqa: BLE001 - what a standard tag's constructor raises (`!!int 2s`)
            tag = node.tag.replace(_YAML_TAG, "!!")
            what = repr(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            raise ConfigError(
                f"is not valid YAML: {what} is not a {tag}",
                path=path,
                line=node.start_mark.line + 1,
                source=self._source,
            ) from None


def _merged_mappings(node: yaml.MappingNode, value: yaml.Node) -> list[yaml.MappingNode]:
    """The mappings a merge key's value names: one mapping, or a list of them (in their order).

    Raises:
        yaml.constructor.ConstructorError: Anything else (a scalar, a list holding one), with
            PyYAML's own words.
    """
    import yaml  # noqa: PLC0415 - imported by _yaml() already; the extra is optional

    if isinstance(value, yaml.MappingNode):
        return [value]
    if not isinstance(value, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            "while constructing a mapping",
            node.start_mark,
            f"expected a mapping or list of mappings for merging, but found {_node_kind(value)}",
            value.start_mark,
        )
    for item in value.value:
        if not isinstance(item, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"expected a mapping for merging, but found {_node_kind(item)}",
                item.start_mark,
            )
    return list(value.value)


def _children(node: yaml.Node) -> list[yaml.Node]:
    """The nodes a mapping or a list holds: its keys and values, or its items."""
    children: list[yaml.Node] = []
    for item in node.value:
        children += item if isinstance(item, tuple) else [item]
    return children


def _node_kind(node: yaml.Node) -> str:
    """What a node is, as PyYAML's messages say it: ``"scalar"``, ``"sequence"``, ``"mapping"``."""
    return str(getattr(node, "id", type(node).__name__))


def _collection(node: yaml.Node) -> str | None:
    """The tag of a plain mapping or list (``!!map``, ``!!seq``), or ``None`` for any other node.

    Any other: a scalar, a collection with a tag of its own (``!!set``), or a tag on a node of
    another kind (``!!map abc``), which the safe loader refuses.
    """
    import yaml  # noqa: PLC0415 - imported by _yaml() already; the extra is optional

    if isinstance(node, yaml.MappingNode) and node.tag == _MAP:
        return _MAP
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
        return _SEQ
    return None
