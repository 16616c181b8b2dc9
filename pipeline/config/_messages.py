"""Messages of the run configuration: ``file: key.path: expected ..., found ...``.

msgspec validates the TOML document against the tables of :mod:`pipeline.config._schema`. Its
:class:`msgspec.ValidationError` speaks JSON (``Expected `float`, got `str` - at
`$.endpoints[...].rpm```) and, inside a table of free names such as ``[endpoints.NAME]``, does
not say which name. :func:`decode` turns it into one message that names the file, the key path,
what the declared type accepts in TOML words and the value found::

    examples/bbh.toml: endpoints.openai.rpm: expected a number > 0, found "fast"
    examples/bbh.toml: unknown key optimizer.candidate (did you mean candidates?)

A table's ``__post_init__`` raises :class:`Invalid` for a rule between its keys; the checks no
table can make (references between tables, files, API keys) word theirs with :class:`At`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, NoReturn, TypeVar, Union, get_args, get_origin

import msgspec
from msgspec import UNSET

from pipeline.errors import ConfigError

T = TypeVar("T")

_BARE_KEY: Final = re.compile(r"^[A-Za-z0-9_-]+$")
_SHOWN_CHARS: Final = 80
# msgspec's "MESSAGE - at `$.a[0].b`", "MESSAGE - at `key` in `$.a`" (a name), or "MESSAGE" (the
# document); a path steps into a field, an array item, or "[...]": an entry of a table of names.
_PLACE: Final = re.compile(r"^(?P<msg>.*?)(?: - at (?P<in_key>`key` in )?`\$(?P<path>.*)`)?$", re.S)
_STEP: Final = re.compile(r"\.(?P<field>\w+)|\[(?P<index>\d+)\]|\[\.\.\.\]")
_FIELD: Final = re.compile(r"^Object (?P<how>contains unknown|missing required) field `(?P<n>.*)`$")
_BOUNDS: Final = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


class Invalid(ValueError):
    """A rule between a table's keys is broken: ``message`` is about ``key`` (None: the table)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class At:
    """A key path (``""``: the document) in the config file ``file``."""

    file: str
    path: str = ""

    def key(self, key: str | int) -> At:
        """The key ``key`` of this table, or the item ``key`` of this array."""
        if isinstance(key, int):
            return At(self.file, f"{self.path}[{key}]")
        name = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
        return At(self.file, f"{self.path}.{name}" if self.path else name)

    def error(self, message: str) -> ConfigError:
        where = f"{self.path}: " if self.path else ""
        return ConfigError(f"{self.file}: {where}{message}")

    def fail(self, expected: str, found: object) -> NoReturn:
        raise self.error(f"expected {expected}, found {show(found)}")

    def unknown(self, key: str, known: Sequence[str]) -> ConfigError:
        """``unknown key a.b (did you mean c?)``, or the known keys when none is close."""
        path = self.key(key).path
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(known)}"
        return ConfigError(f"{self.file}: unknown key {path} ({hint})")


def decode(raw: dict[str, Any], schema: type[T], at: At) -> T:
    """``raw`` (a parsed TOML document) as ``schema``; one :class:`ConfigError` otherwise."""
    try:
        decoded = msgspec.convert(raw, schema)
    except msgspec.ValidationError as exc:
        raise _explain(exc, _Spot(at, raw, schema)) from None
    _check_finite(raw, at)
    return decoded


def show(value: object) -> str:
    """A short, TOML-flavoured rendering of a found value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 4] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return "nothing" if value is UNSET else f"a {type(value).__name__}"


def expected(declared: Any, path: str = "") -> str:
    """What a declared type accepts, in TOML words (``a number > 0``); ``path`` names tables."""
    options = _options(declared)
    if len(options) > 1:
        return " or ".join(_expected_one(t, path, alone=False) for t in options)
    return _expected_one(options[0], path, alone=True)


# --- from msgspec's error to ours ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spot:
    """A place in the document: its key path, the value there and the type declared for it."""

    at: At
    value: object
    declared: Any

    def step(self, step: re.Match[str]) -> _Spot:
        if step["field"]:
            return self.field(step["field"])
        if step["index"]:
            return self.item(int(step["index"]))
        return self.entry()

    def field(self, name: str) -> _Spot:
        table = _table(self.declared)
        types_ = {f.name: f.type for f in msgspec.structs.fields(table)} if table else {}
        value = self.value.get(name, UNSET) if isinstance(self.value, dict) else UNSET
        return _Spot(self.at.key(name), value, types_.get(name, Any))

    def item(self, index: int) -> _Spot:
        items = self.value if isinstance(self.value, list) else []
        value = items[index] if index < len(items) else UNSET
        return _Spot(self.at.key(index), value, _args(self.declared)[0])

    def entry(self) -> _Spot:
        """The first entry of a table of free names that is invalid (msgspec says ``[...]``)."""
        value_type = _args(self.declared)[1]
        entries = self.value.items() if isinstance(self.value, dict) else ()
        for key, value in entries:
            if not _valid(value, value_type):
                return _Spot(self.at.key(key), value, value_type)
        return self

    def bad_name(self) -> ConfigError:
        """The first key of a table of free names that is not a valid name."""
        key_type = _args(self.declared)[0]
        for key in self.value if isinstance(self.value, dict) else ():
            if not _valid(key, key_type):
                return self.at.key(key).error(f"expected {expected(key_type)}, found {show(key)}")
        return self.error()

    def error(self) -> ConfigError:
        header = _tables_header(self.declared, self.at.path)
        if header and (self.value is UNSET or not self.value):
            return self.at.error(f"expected at least one {header} table, found none")
        what = expected(self.declared, self.at.path)
        if self.value is UNSET:
            return self.at.error(f"expected {what}, found nothing (the key is required)")
        conceal = _core(self.declared)[1].get("extra", {}).get("conceal")
        found = conceal if conceal and isinstance(self.value, str) else show(self.value)
        return self.at.error(f"expected {what}, found {found}")


def _explain(exc: msgspec.ValidationError, root: _Spot) -> ConfigError:
    place = _PLACE.match(str(exc))
    assert place is not None  # the pattern matches any text
    spot = root
    for step in _STEP.finditer(place["path"] or ""):
        spot = spot.step(step)
    cause = exc.__cause__
    if isinstance(cause, Invalid):  # a rule of the table's own __post_init__
        return (spot.at.key(cause.key) if cause.key else spot.at).error(cause.message)
    if place["in_key"]:
        return spot.bad_name()
    field = _FIELD.match(place["msg"])
    if field and field["how"] == "contains unknown":
        table = _table(spot.declared)
        return spot.at.unknown(field["n"], table.__struct_fields__ if table else ())
    return (spot.field(field["n"]) if field else spot).error()


def _check_finite(value: object, at: At) -> None:
    """Refuse inf and nan anywhere: TOML has them, no setting means them."""
    if isinstance(value, float) and not math.isfinite(value):
        at.fail("a finite number", value)
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, at.key(key))
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, at.key(index))


# --- reading declared types ---------------------------------------------------------------------


def _valid(value: object, declared: Any) -> bool:
    try:
        msgspec.convert(value, declared)
    except msgspec.ValidationError:
        return False
    return True


def _unwrap(declared: Any) -> tuple[Any, dict[str, Any]]:
    """``Annotated[T, Meta(...)]`` as ``T`` and the constraints of its ``Meta``."""
    meta: dict[str, Any] = {}
    while get_origin(declared) is Annotated:
        declared, *marks = get_args(declared)
        for mark in marks:
            if isinstance(mark, msgspec.Meta):
                names = ("gt", "ge", "lt", "le", "min_length", "extra")
                meta.update({n: getattr(mark, n) for n in names if getattr(mark, n) is not None})
    return declared, meta


def _options(declared: Any) -> list[Any]:
    """The members of a union, but UNSET and None (which a key is when absent)."""
    if get_origin(declared) in (Union, types.UnionType):
        return [t for t in get_args(declared) if t not in (msgspec.UnsetType, type(None))]
    return [declared]


def _core(declared: Any) -> tuple[Any, dict[str, Any]]:
    """The type of a key when present, and its constraints (none for a union of types)."""
    options = _options(_unwrap(declared)[0])
    return _unwrap(options[0]) if len(options) == 1 else (declared, {})


def _args(declared: Any) -> tuple[Any, ...]:
    """The item type(s) of an array or a table of free names."""
    return get_args(_core(declared)[0]) or (Any, Any)


def _table(declared: Any) -> type[msgspec.Struct] | None:
    """The table type ``declared`` is, or is one of (a union may also allow a string)."""
    core = _unwrap(declared)[0]
    if isinstance(core, type) and issubclass(core, msgspec.Struct):
        return core
    options = _options(core)
    return None if options == [core] else next(filter(None, map(_table, options)), None)


def _tables_header(declared: Any, path: str) -> str | None:
    """``[[jobs]]`` or ``[endpoints.NAME]`` for an array or a table of tables, else None."""
    core = _core(declared)[0]
    args = get_args(core)
    if get_origin(core) is dict and _table(args[1]):
        return f"[{path}.NAME]"
    if get_origin(core) in (list, tuple) and _table(args[0]):
        return f"[[{path}]]"
    return None


def _expected_one(declared: Any, path: str, *, alone: bool) -> str:
    core, meta = _unwrap(declared)
    if "expected" in meta.get("extra", {}):
        return str(meta["extra"]["expected"])
    if get_origin(core) is Literal:
        values = get_args(core)
        if len(values) == 1 and not alone:
            return json.dumps(values[0])
        return "one of " + ", ".join(str(v) for v in values)
    if core is bool:
        return "true or false"
    if core is str:
        return "a non-empty string" if meta.get("min_length") else "a string"
    if core in (int, float):
        return ("an integer" if core is int else "a number") + _range(meta)
    header = _tables_header(core, path)
    if header and header.startswith("[["):
        return f"an array of tables ({header})"
    if _table(core) or get_origin(core) is dict:
        return "a table"
    items = get_args(core)
    count = "" if items[-1:] == (Ellipsis,) else f"{len(items)} "
    noun = "strings" if items and _unwrap(items[0])[0] is str else "values"
    return f"an array of {count}{noun}"


def _range(meta: dict[str, Any]) -> str:
    """`` >= 1``, `` > 0``, `` in 0..2``: the bounds of a number."""
    if "ge" in meta and "le" in meta:
        return f" in {meta['ge']:g}..{meta['le']:g}"
    return " and".join(f" {op} {meta[key]:g}" for key, op in _BOUNDS if key in meta)
