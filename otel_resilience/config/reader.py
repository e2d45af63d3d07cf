"""Read parsed file data into config objects, with the table of :mod:`otel_resilience.config.fields`.

The reader converts what a file writes (durations, rates, exception classes by name, enum
values, windows, budget names), refuses unknown keys and keys that take code, and builds each
config class. A config class's own ``ValueError`` / ``TypeError`` (``"CircuitBreakerConfig.
failure_threshold must be >= 1, got 0"``) becomes a :class:`ConfigError` at the file's path
and line (``policies.payments.circuit_breaker.failure_threshold must be >= 1, got 0``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

from otel_resilience.config.errors import ConfigError, Path, render_path
from otel_resilience.config.fields import (
    EXTENSION_PREFIX,
    FORMAT_VERSION,
    POLICY,
    RETRY_BUDGET,
    Field,
    Section,
)
from otel_resilience.config.values import (
    duration_at_least,
    parse_duration,
    parse_integer,
    parse_rate,
    resolve_exception,
)
from otel_resilience.engine.validation import describe
from otel_resilience.manager.config import ResilienceConfig
from otel_resilience.patterns.retry import RetryBudget

__all__ = ["TOP_KEYS", "Read", "read"]

TOP_KEYS: Final = ("version", "retry_budgets", "policies")
"""The keys of the file's top level, in the order they are read."""
_CLASS_ERROR: Final = re.compile(r"(?P<owner>\w+)\.(?P<fields>\w+(?:\.\w+)*) (?P<reason>.*)", re.DOTALL)
_CLASSES: Final = re.compile(
    r"\((?P<classes>(?:<class '[\w.]+'>, )*<class '[\w.]+'>),?\)|<class '(?P<one>[\w.]+)'>"
)
"""A class's repr (``<class 'ValueError'>``), or a tuple of them, in a class's rule: a file writes the
class by name (its dotted path but for a built-in, as :func:`exception_name`), several in brackets."""
_LEFT_OUT: Final = {"None": "left out"}
"""A class's word for a setting not given, as a file says it: a file writes no ``None`` (TOML has
no null; YAML's and JSON's ``null`` is the key left out)."""
_SETTINGS_LIST: Final = re.compile(
    r"(?<![\w.])(?P<items>\w+(?:, \w+)*) (?P<conjunction>or|and) (?P<last>\w+)(?!\w)"
)
"""A list of words, ``a, b or c``: of settings, in a class's rule (``unless retry_policy, hedging,
enable_recovery or extra_strategies is set``)."""

Read = tuple[dict[str, ResilienceConfig], dict[str, RetryBudget]]
"""What :func:`read` returns: the policies and the retry budgets, by name, in file order."""


def read(
    data: object,
    lines: Mapping[Path, int],
    source: str | None,
    previous_budgets: Mapping[str, RetryBudget] | None = None,
) -> Read:
    """Return the policies and retry budgets a parsed file defines.

    Args:
        data: The parsed document (mappings, lists, scalars).
        lines: The 1-based line of each path the parser could place (empty for TOML).
        source: The file's name for messages, or ``None``.
        previous_budgets: Budgets of an earlier load: one with the same name and the same
            settings is reused, so that an unchanged policy stays equal to its earlier self.

    Raises:
        ConfigError: Anything wrong, with its path and line.
    """
    return _Reader(lines, source, previous_budgets or {}).top(data)


def _classes_as_written(match: re.Match[str]) -> str:
    """A match of :data:`_CLASSES` as a file writes it: ``ValueError``, ``[ValueError, a.B]``."""
    if match["one"] is not None:
        return match["one"]
    return f"[{', '.join(name[len('<class ') + 1 : -2] for name in match['classes'].split(', '))}]"


class _Reader:
    """One reading of one document (holds its lines, its source and the budgets read so far)."""

    def __init__(
        self, lines: Mapping[Path, int], source: str | None, previous: Mapping[str, RetryBudget]
    ) -> None:
        self._lines = lines
        self._source = source
        self._previous = previous
        self._budgets: dict[str, RetryBudget] = {}
        self._written: dict[Path, dict[str, str]] = {}
        """For each section read, the key the file wrote for each field (an alias or the name)."""
        self._converters: dict[str, Callable[[Field, object, Path], object]] = {
            "duration": lambda field, value, _path: _duration(field, value),
            "int": lambda _field, value, _path: parse_integer(value),
            "rate": lambda _field, value, _path: parse_rate(value),
            "exception": lambda _field, value, _path: resolve_exception(value),
            "choice": lambda field, value, _path: _choice(field, value),
            "bool": lambda _field, value, _path: _flag(value),
            "exceptions": self.exceptions,
            "section": self.section,
            "window": self.window,
            "budget": self.budget_named,
        }
        """How each kind of value is read (the kinds not here are passed to the class as they are)."""

    def error(self, path: Path, reason: str) -> ConfigError:
        """Build the error at ``path``, on the line of its nearest placed ancestor."""
        line = next((self._lines[path[:n]] for n in range(len(path), 0, -1) if path[:n] in self._lines), None)
        return ConfigError(reason, path=path, line=line, source=self._source)

    def mapping(self, value: object, path: Path, what: str) -> dict[Any, Any]:
        if not isinstance(value, dict):
            subject = "" if path else "the file "
            raise self.error(path, f"{subject}must be {what}, got {describe(value)}")
        return value

    def top(self, data: object) -> Read:
        if data is None:
            raise self.error((), "the file is empty: it must be a mapping with a 'policies' key")
        document = self.mapping(data, (), "a mapping with a 'policies' key")
        for key in document:
            if key not in TOP_KEYS and not (isinstance(key, str) and key.startswith(EXTENSION_PREFIX)):
                raise self.error((key,), _unknown(key, TOP_KEYS, "the file's top level"))
        if "version" in document and (
            document["version"] != FORMAT_VERSION or isinstance(document["version"], bool)
        ):
            raise self.error(("version",), f"must be {FORMAT_VERSION}, got {describe(document['version'])}")
        budgets = document.get("retry_budgets")
        for name, settings in self.named(budgets, ("retry_budgets",)).items():
            self._budgets[name] = self.budget(name, settings)
        if "policies" not in document:
            raise self.error(
                (), "the file must have a 'policies' key: a mapping of policy names to their settings"
            )
        policies: dict[str, ResilienceConfig] = {}
        for name, settings in self.named(document["policies"], ("policies",)).items():
            path = ("policies", name)
            fields = self.section_fields(POLICY, {} if settings is None else settings, path)
            policies[name] = self.construct(POLICY, {**fields, "name": name}, path)
        return policies, dict(self._budgets)

    def named(self, value: object, path: Path) -> dict[str, Any]:
        """Return a mapping of names (non-empty strings) to settings; ``None`` is an empty one."""
        if value is None:
            return {}
        named = self.mapping(value, path, "a mapping of names to settings")
        for name in named:
            if not isinstance(name, str) or not name.strip():
                raise self.error(
                    (*path, name), f"is not a name: keys of {render_path(path)} must be non-empty strings"
                )
        return named

    def budget(self, name: str, settings: object) -> RetryBudget:
        path = ("retry_budgets", name)
        fields = self.section_fields(RETRY_BUDGET, {} if settings is None else settings, path)
        budget = cast("RetryBudget", self.construct(RETRY_BUDGET, fields, path))
        old = self._previous.get(name)
        same = old is not None and (old.ratio, old.min_retries_per_second, old.window) == (
            budget.ratio,
            budget.min_retries_per_second,
            budget.window,
        )
        return old if same and old is not None else budget

    def section_fields(self, section: Section, value: object, path: Path) -> dict[str, Any]:
        """Return the keywords for ``section``'s class from the mapping at ``path``."""
        settings = self.mapping(value, path, "a mapping of settings")
        fields: dict[str, Any] = {}
        written = self._written[path] = {}
        for key, item in settings.items():
            field = section.field(key)
            if field is None:
                refusal = section.refusal(key)
                if refusal is not None:
                    raise self.error((*path, key), refusal)
                known = [k for f in section.fields for k in f.keys]
                raise self.error((*path, key), _unknown(key, known, f"{section.owner} ({render_path(path)})"))
            if field.name in written:
                raise self.error((*path, key), f"repeats {written[field.name]!r}: write one of {field.keys}")
            written[field.name] = key
            fields[field.name] = self.value(field, item, (*path, key))
        for field in section.fields:
            if field.required and field.name not in fields:
                raise self.error(path, f"must set {field.name!r}")
        return fields

    def construct(self, section: Section, fields: dict[str, Any], path: Path) -> Any:
        """Call the section's class; its validation error becomes a :class:`ConfigError` at the path."""
        try:
            return section.build(**fields)
        except (ValueError, TypeError) as error:
            raise self.class_error(section, path, error) from None

    def class_error(self, section: Section, path: Path, error: Exception) -> ConfigError:
        """Map ``Owner.field[.sub] must ...`` to the file path of that field (its written key).

        The reason names the section's other fields and enum members as the file writes them
        (:meth:`as_written`).
        """
        match = _CLASS_ERROR.fullmatch(str(error))
        if match is None or match["owner"] != section.owner:
            return self.error(path, f"is not a valid {section.owner}: {error}")
        first, *rest = match["fields"].split(".")
        reason = self.as_written(section, path, match["reason"])
        if not rest and section.refusal(first) is not None:  # a keyword no file writes (a policy's
            return self.error(path, reason)  # name, its key): the mapping's own error
        return self.error((*path, self.key(section, path, first), *rest), reason)

    def key(self, section: Section, path: Path, name: str) -> str:
        """The key of ``section``'s field ``name`` in the mapping at ``path``.

        As written, else its alias (the key files write, ``retry``), else the name.
        """
        written = self._written.get(path, {}).get(name)
        if written is not None:
            return written
        field = section.field(name)
        return field.aliases[0] if field is not None and field.aliases else name

    def as_written(self, section: Section, path: Path, reason: str) -> str:
        """``reason`` (a class's rule) with the words a file writes otherwise, as it writes them.

        A class names its fields by keyword and its enums by member: ``"None unless retry_policy
        ... is set"``, ``"< ResilienceConfig.timeout"``, ``"unless strategy is EXPONENTIAL"``. A
        field whose key differs (an alias) is named by its key; ``Owner.field``, the section's own
        field, by its path in the file; an enum member by the value a file writes; ``None`` by
        what a file does, ``left out`` (:data:`_LEFT_OUT`). A list of settings leaves out those a
        file cannot set (the section's refused keywords, ``extra_strategies``), unless it names
        nothing else. The value the rule refused (after ``", got "``) is shown as given, but for
        exception classes, which are shown by the names a file writes, as in the rule
        (:data:`_CLASSES`).
        """
        rule, got, value = reason.partition(", got ")  # the value, as given, is left as it is
        unwritable = {name for name, _ in section.refused}
        settings = unwritable | {field.name for field in section.fields}

        def writable(match: re.Match[str]) -> str:
            items = [*match["items"].split(", "), match["last"]]
            kept = [item for item in items if item not in unwritable]
            if not kept or len(kept) == len(items) or not settings.issuperset(items):
                return match[0]  # not a list of settings, or one a file can write all of (or none)
            return f"{', '.join(kept[:-1])} {match['conjunction']} {kept[-1]}" if len(kept) > 1 else kept[0]

        rule = _SETTINGS_LIST.sub(writable, rule)
        words: dict[str, str] = dict(_LEFT_OUT)
        for field in section.fields:
            words[f"{section.owner}.{field.name}"] = render_path((*path, self.key(section, path, field.name)))
            if field.aliases:
                words[field.name] = self.key(section, path, field.name)
            if field.enum is not None:
                words.update({member.name: str(member.value) for member in field.enum})
        changed = {word: key for word, key in words.items() if word != key}
        pattern = "|".join(re.escape(word) for word in sorted(changed, key=len, reverse=True))
        rule = _CLASSES.sub(_classes_as_written, rule)
        if (classes := _CLASSES.fullmatch(value)) is not None:  # a value given is left as it is, but classes
            value = _classes_as_written(classes)
        return re.sub(rf"(?<![\w.])(?:{pattern})(?!\w)", lambda m: changed[m[0]], rule) + got + value

    def value(self, field: Field, value: object, path: Path) -> Any:
        """Convert one value by its field's kind."""
        if value is None:
            if field.nullable:
                return None
            raise self.error(path, "must not be null: leave the key out for the default")
        convert = self._converters.get(field.kind)
        if convert is None:  # number, name, value: the class judges them
            return value
        try:
            return convert(field, value, path)
        except (ValueError, TypeError) as error:
            if isinstance(error, ConfigError):
                raise
            raise self.error(path, str(error)) from None

    def section(self, field: Field, value: object, path: Path) -> object:
        assert field.section is not None  # noqa: S101 - a "section" field names its section
        return self.construct(field.section, self.section_fields(field.section, value, path), path)

    def exceptions(self, _field: Field, value: object, path: Path) -> tuple[type[BaseException], ...]:
        if isinstance(value, str):
            return (resolve_exception(value),)
        if not isinstance(value, list):
            raise TypeError(f"must be an exception class name or a list of them, got {describe(value)}")
        classes: list[type[BaseException]] = []
        for index, name in enumerate(value):
            try:
                classes.append(resolve_exception(name))
            except (ValueError, TypeError) as error:
                raise self.error((*path, index), str(error)) from None
        return tuple(classes)

    def window(self, field: Field, value: object, path: Path) -> object:
        settings = dict(self.mapping(value, path, "a mapping with a 'kind' (count or time)"))
        tags = [variant.tag for variant in field.variants]
        kind = settings.pop("kind", None)
        variant = next((v for v in field.variants if v.tag == kind), None)
        if variant is None:
            allowed = ", ".join(map(repr, tags))
            if kind is None:
                known = ["kind", *dict.fromkeys(k for v in field.variants for f in v.fields for k in f.keys)]
                for key in settings:  # a misspelled kind ("knd") is named, with the key it is close to
                    if key not in known:
                        owners = " or ".join(v.owner for v in field.variants)
                        raise self.error(
                            (*path, key), _unknown(key, known, f"{owners} ({render_path(path)})")
                        )
                raise self.error(path, f"must set kind: one of {allowed}")
            raise self.error((*path, "kind"), f"must be one of {allowed}, got {describe(kind)}")
        return self.construct(variant, self.section_fields(variant, settings, path), path)

    def budget_named(self, _field: Field, value: object, _path: Path) -> RetryBudget:
        if isinstance(value, str) and value in self._budgets:
            return self._budgets[value]
        defined = ", ".join(map(repr, self._budgets)) or "none"
        raise ValueError(f"must name a budget of retry_budgets (defined: {defined}), got {describe(value)}")


def _duration(field: Field, value: object) -> float:
    """Return the seconds ``value`` says; a string below a field's own least value is refused here.

    A field whose least value is its own (a retry budget's window), written with units, must match
    the pattern the schema states (:func:`~otel_resilience.config.values.duration_at_least`: one
    part alone reaches it), so that an editor and the loader refuse the same strings; a number, and
    a string the pattern takes, are the class's to judge.
    """
    seconds = parse_duration(value)
    if field.minimum and isinstance(value, str) and not re.search(duration_at_least(field.minimum), value):
        raise ValueError(
            f"must be a duration of at least {field.minimum:g} s, one of its parts at least that alone, "
            f"got {value!r}"
        )
    return seconds


def _choice(field: Field, value: object) -> object:
    """Return the enum member (or string) ``value`` names; refuse other values, saying why."""
    if isinstance(value, str) and value in field.choices:
        return field.enum(value) if field.enum is not None else value
    refusal = next((why for choice, why in field.refused if choice == value), None)
    allowed = ", ".join(map(repr, field.choices))
    if refusal is not None:
        raise ValueError(
            f"cannot be {value!r} in a file: that strategy {refusal}, which takes code (set it on the "
            f"loaded config with dataclasses.replace); a file may write {allowed}"
        )
    raise ValueError(f"must be one of {allowed}, got {describe(value)}")


def _flag(value: object) -> bool:
    """Return ``value`` if it is a bool; refuse anything else, a string with how to write a bool.

    A file has two booleans, ``true`` and ``false`` (YAML 1.2, as the file is read, and TOML):
    ``yes``, ``no``, ``on`` and ``off`` are strings, as is a quoted ``'true'``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        raise TypeError(
            f"must be true or false, got the string {value!r}: a file's only booleans are true and "
            "false, unquoted"
        )
    raise TypeError(f"must be true or false, got {describe(value)} ({type(value).__name__})")


def _unknown(key: object, known: list[str] | tuple[str, ...], where: str) -> str:
    """The reason for an unknown key: a close match if there is one, else what is known."""
    close = difflib.get_close_matches(str(key), known, n=1) if isinstance(key, str) else []
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"is not a key of {where}: {hint}"
