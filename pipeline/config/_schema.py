"""The schema layer of the run configuration: typed reads of a parsed TOML document.

A :class:`Node` is one TOML table at a key path of a config file. Its getters check the type and
range of one value and raise :class:`~pipeline.errors.ConfigError` with one message that names the
file, the key path, what was expected and what was found::

    examples/bbh.toml: endpoints.openai.rpm: expected a number > 0, found "fast"
    examples/bbh.toml: unknown key optimizer.candidate (did you mean candidates?)

TOML booleans are never numbers here (``true`` is not ``1``). Relative paths are resolved against
the config file's directory. The sections that build the library's own frozen values (endpoints,
caps, the simulator) are parsed in :mod:`pipeline.config._sections`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from pipeline.errors import ConfigError

D = TypeVar("D")

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+(?:\[\d+\])?$")  # a TOML bare key, maybe indexed
_SHOWN_CHARS = 80


@dataclass(frozen=True, slots=True)
class Node:
    """A TOML table found at ``path`` (``""`` for the document) in the config file ``file``."""

    file: str
    path: str
    data: Mapping[str, object]

    # --- locations and errors ---------------------------------------------------------------

    def key_path(self, key: str) -> str:
        """The dotted path of ``key`` in this table (``endpoints.openai.rpm``)."""
        name = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
        return f"{self.path}.{name}" if self.path else name

    def error(self, key: str | None, message: str) -> ConfigError:
        """``file: path.key: message`` (the table's own path when ``key`` is None)."""
        where = self.key_path(key) if key is not None else self.path
        return ConfigError(
            f"{self.file}: {where}: {message}" if where else f"{self.file}: {message}"
        )

    def fail(self, key: str | None, expected: str, found: object) -> NoReturn:
        raise self.error(key, f"expected {expected}, found {show(found)}")

    def only(self, allowed: Iterable[str]) -> None:
        """Refuse any key not in ``allowed``, suggesting the closest allowed one."""
        known = list(allowed)
        for key in self.data:
            if key not in known:
                raise ConfigError(f"{self.file}: {unknown_key(self.key_path(key), key, known)}")

    def has(self, key: str) -> bool:
        return key in self.data

    # --- tables -----------------------------------------------------------------------------

    def table(self, key: str) -> Node:
        """The sub-table ``key`` (an empty one when absent)."""
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "a table", value)
        return Node(self.file, self.key_path(key), value)

    def tables(self, key: str) -> list[Node]:
        """The array of tables ``key`` (``[[key]]``), each at path ``key[i]``."""
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, f"an array of tables ([[{key}]])", value)
        return [Node(self.file, f"{self.key_path(key)}[{i}]", v) for i, v in enumerate(value)]

    # --- scalars ----------------------------------------------------------------------------

    def string(self, key: str, default: D, *, empty: bool = True) -> str | D:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str) or (not empty and not value.strip()):
            self.fail(key, "a string" if empty else "a non-empty string", value)
        return value

    def required_string(self, key: str) -> str:
        value = self.string(key, None, empty=False)
        if value is None:
            raise self.error(
                key, "expected a non-empty string, found nothing (the key is required)"
            )
        return value

    def choice(self, key: str, choices: Sequence[str], default: D) -> str | D:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str) or value not in choices:
            self.fail(key, "one of " + ", ".join(choices), value)
        return value

    def integer(self, key: str, default: D, *, minimum: int | None = None) -> int | D:
        if key not in self.data:
            return default
        value = self.data[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or (minimum is not None and value < minimum)
        ):
            self.fail(key, "an integer" + (f" >= {minimum}" if minimum is not None else ""), value)
        return value

    def number(
        self, key: str, default: D, *, minimum: float = 0.0, strict: bool = False
    ) -> float | D:
        """A finite number ``>= minimum`` (``> minimum`` when ``strict``); ints are accepted."""
        if key not in self.data:
            return default
        value = self.data[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        number = float(value) if ok else math.nan  # type: ignore[arg-type]
        if not (math.isfinite(number) and (number > minimum if strict else number >= minimum)):
            self.fail(key, f"a number {'>' if strict else '>='} {minimum:g}", value)
        return number

    def boolean(self, key: str, default: D) -> bool | D:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        """An array of non-empty strings (empty when absent)."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(key, "an array of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(f"{key}[{i}]", "a non-empty string", item)
        return tuple(value)


def _in_range(number: float, minimum: float, strict: bool) -> bool:
    return math.isfinite(number) and (number > minimum if strict else number >= minimum)


def unknown_key(path: str, key: str, known: Sequence[str]) -> str:
    """``unknown key a.b (did you mean c?)``, or the list of known keys when none is close."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"unknown key {path} (did you mean {close[0]}?)"
    listed = ", ".join(known) if known else "none"
    return f"unknown key {path} (expected one of {listed})"


def show(value: object) -> str:
    """A short, TOML-flavoured rendering of a found value for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"
