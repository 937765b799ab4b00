"""Typed YAML, bounded: YAML files (and `key.sub=value` overrides) read into dataclasses, every
key checked against the dataclass's fields and every value against its declared type. The
configs (config.py), the configs stored in checkpoints and the bench's protocol files
(bench/protocol.py) are all read through here.

What is parsed is bounded, so that a small hostile file cannot exhaust memory or time: a file
or override is at most MAX_TEXT bytes of YAML without aliases (`*name`, the "billion laughs"),
a mapping from any source (a checkpoint's stored config included) at most MAX_VALUES values
nested at most MAX_DEPTH deep, and an error message shows at most a short excerpt of a value.
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from pathlib import Path
from typing import Callable, Literal, TypeVar, get_args, get_origin

import yaml

from .errors import ConfigError

# A config file is about 1-2 KB with about 100 values; these bounds are far above any real one.
MAX_TEXT = 64 * 1024
MAX_VALUES = 10_000
MAX_DEPTH = 16
MAX_STRING = 10_000
# libyaml's parser when PyYAML has it (the wheels do): it is iterative and limits nesting,
# where the pure-Python one recurses (and takes about a minute for 60 KB of brackets here).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def show(value, limit: int = 80) -> str:
    """A short excerpt of any value for a message (never the whole of an unbounded one)."""
    text = _REPR.repr(value) if not isinstance(value, str) else repr(value[:limit + 1])
    return text if len(text) <= limit else text[:limit - 3] + "..."


def key_text(k) -> str:
    """A mapping key for a message: short, whatever it is."""
    text = str(k) if isinstance(k, (str, int, float)) else show(k)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# YAML 1.1 (PyYAML) reads these words, unquoted, as booleans; a key whose allowed values hold
# one of them (train.amp: off, data.verify_files: off) takes the boolean back as that word.
_YAML_BOOL_WORDS = {True: ("on", "yes", "true"), False: ("off", "no", "false")}


def _coerce(value, tp, key: str, source: str):
    """Check `value` against the annotation `tp`; return it converted (int -> float only)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {show(value)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {show(value)}")
        return build(tp, value, key + ".", source)
    if origin is Literal:
        if isinstance(value, bool):
            words = [a for a in get_args(tp) if isinstance(a, str) and a.lower() in _YAML_BOOL_WORDS[value]]
            if len(words) != 1:
                raise ConfigError(f"{source}: {key} must be {_type_name(tp)}, got {show(value)} (YAML reads "
                                  f"{'/'.join(_YAML_BOOL_WORDS[value])} unquoted as a boolean)")
            return words[0]
        if value not in get_args(tp):
            raise bad
        return value
    if origin is typing.Union:  # Optional[X]
        args = [a for a in get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], key, source)
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item,) = get_args(tp)
        return [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, vt = get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{key_text(k)}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        if not -2 ** 63 <= value < 2 ** 63:
            raise ConfigError(f"{source}: {key} must be int, got one of {len(str(abs(value)))} digits")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads 1e-4 (no dot) as a string; accept what Python reads as a number.
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        try:
            value = float(value)
        except OverflowError:
            raise bad from None
        if not math.isfinite(value):  # no setting means anything at infinity or NaN
            raise ConfigError(f"{source}: {key} must be a finite number, got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp} for {key}")


def _hints(cls):
    return typing.get_type_hints(cls)


def build(cls, data: dict, prefix: str, source: str):
    hints = _hints(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{key_text(unknown[0])}'")
    obj = cls()
    for k, v in data.items():
        setattr(obj, k, _coerce(v, hints[k], prefix + k, source))
    return obj


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


class NotYAML(ConfigError):
    """Text that does not parse as YAML."""


def parse_yaml(text: str, source: str, what: str = "config"):
    """YAML text -> plain values, refusing what could expand or nest without bound."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"{source}: {len(text):,} characters of YAML, more than a {what}'s limit of {MAX_TEXT:,}")
    try:
        # The events alone cost time linear in the text; aliases are refused before any value exists.
        depth = 0
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{source}: YAML aliases (*{_short(str(event.anchor))}) are not allowed in a {what}")
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(f"{source}: values nested more than {MAX_DEPTH} deep")
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=_LOADER)
    except (yaml.YAMLError, ValueError, OverflowError) as e:  # ValueError: an integer of over 4300 digits
        raise NotYAML(f"{source}: not valid YAML ({_short(str(e).splitlines()[0])})") from None


def check_bounded(data, source: str, limit: int = MAX_VALUES) -> None:
    """Refuse a config (from YAML or a checkpoint, where shared references make a small file
    stand for a huge tree) of more than `limit` values, nested deeper than MAX_DEPTH or
    holding a string longer than MAX_STRING: counted as walked, so the walk itself is bounded."""
    stack, seen = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(f"{source}: more than {limit:,} values (shared references to one list or "
                              "mapping count each time; a config has about 100)")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source}: values nested more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            stack += [(x, depth + 1) for kv in value.items() for x in kv]
        elif isinstance(value, (list, tuple)):
            stack += [(x, depth + 1) for x in value]
        elif isinstance(value, str) and len(value) > MAX_STRING:
            raise ConfigError(f"{source}: a string of {len(value):,} characters (at most {MAX_STRING:,})")


def parse_override(text: str) -> dict:
    """'model.lrn.enabled=false' -> {'model': {'lrn': {'enabled': False}}} (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{_short(text)}' is not key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{_short(text)}' has an empty key")
    if len(key.split(".")) > MAX_DEPTH:
        raise ConfigError(f"override '{_short(text)}' nests more than {MAX_DEPTH} keys")
    try:
        value = parse_yaml(raw, f"override '{_short(text)}'") if raw != "" else ""
    except NotYAML:
        value = raw  # taken as the string it is (the key's type check names it if wrong)
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def read_yaml(path: Path, what: str = "config", chain: tuple[Path, ...] = ()) -> dict:
    """A YAML file's top-level mapping. A file may start from another: `base: other.yaml` (a
    path relative to the file) reads that one first and merges this one's keys over it
    (mappings key by key, anything else replaced)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}" + (f" (base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError(f"{path}: its base chain returns to itself")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_TEXT + 1)
        if len(raw) > MAX_TEXT:
            raise ConfigError(f"{path}: larger than a {what}'s limit of {MAX_TEXT:,} bytes")
        text = raw.decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8); a {what} is YAML text") from None
    loaded = parse_yaml(text, str(path), what)
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file name, got {key_text(base)}")
    return merge(read_yaml(path.parent / base, what, chain + (path.resolve(),)), loaded)


T = TypeVar("T")


def from_dict(cls: type[T], data: dict, source: str, validate: Callable[[T, str], None],
              overrides: list[str] = (), what: str = "config") -> T:
    """`data` (and then each override, in order) read into the dataclass `cls`, checked by
    `validate(obj, source)` (ConfigError when invalid). When the result is invalid, the error
    blames what made it so: the override after the last valid stage, or `source` itself when
    no stage was valid (an override may also repair a file's value)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a {what} must be a mapping, got {show(data)}")
    check_bounded(data, source)
    stages = [(build(cls, data, "", source), source)]
    for ov in overrides:
        where = f"override '{_short(ov)}'"
        stages.append((build(cls, merge(dataclasses.asdict(stages[-1][0]), parse_override(ov)), "", where), where))
    obj = stages[-1][0]
    try:
        validate(obj, source)
    except ConfigError:
        culprit = source
        for (before, _), (_, where) in zip(reversed(stages[:-1]), reversed(stages[1:])):
            if _valid(before, validate):
                culprit = where
                break
        validate(obj, culprit)
    return obj


def _valid(obj, validate) -> bool:
    try:
        validate(obj, "")
    except ConfigError:
        return False
    return True
