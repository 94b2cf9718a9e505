"""Configs are frozen dataclasses filled from YAML files and ``key.sub=value`` CLI overrides.

Unknown keys are errors (a typo must not silently fall back to a default), required fields are the
ones without a default, and values are checked against the field types: bool, int, float, str,
Literal choices, tuples, float arrays, optional values and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

log = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config's dataclass."""


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build ``cls`` from a YAML file (optional) with ``key.sub=value`` overrides applied on top."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
        loaded = _read_yaml(path)
        if loaded is None:  # blank or comments only: most likely a file cut short or not saved
            raise ConfigError(
                f"config file {path} holds no settings (blank or comments only); it would run "
                "every default silently: write '{}' into it to mean that"
            )
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    for item in overrides:
        apply_override(data, item)
    return from_dict(cls, data)  # a ConfigError is the caller's to report (once)


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 64


def _read_yaml(path: Path) -> Any:
    """The YAML in ``path``; ConfigError (one line) for a file that is binary, too large, too
    deeply nested or not YAML."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES} bytes; not a config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start}); pass a YAML file") from None  # fmt: skip
    if "\0" in text:
        raise ConfigError(f"config file {path} holds NUL bytes; pass a YAML text file")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"config file {path} is not valid YAML: {first}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply to be a config") from None
    if _depth(loaded) > MAX_CONFIG_DEPTH:
        raise ConfigError(f"config file {path} nests more than {MAX_CONFIG_DEPTH} deep")
    return loaded


def _depth(value: Any, level: int = 0) -> int:
    """Nesting depth of plain YAML data, stopping once past MAX_CONFIG_DEPTH."""
    if level > MAX_CONFIG_DEPTH or not isinstance(value, dict | list):
        return level
    items = value.values() if isinstance(value, dict) else value
    return max((_depth(v, level + 1) for v in items), default=level + 1)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` in nested ``data``; the value is parsed as YAML (``0.1``, ``[1, 2]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from None


def to_dict(config: object) -> dict[str, Any]:
    """A plain (YAML-ready) dict of a config dataclass; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(config)


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, naming the offending key on any mismatch."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(_join(where, k) for k in unknown)}; "
            f"allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # a dataclass's own __post_init__ checks
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}={value!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        word = {False: "off", True: "on"}.get(value) if isinstance(value, bool) else None
        if word in args:  # YAML 1.1 reads a bare off/on as a boolean: give the word back
            value = word
        if value not in args:
            raise ConfigError(f"{key}={value!r}; allowed: {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must have {len(args)} items, got {len(value)}")
        return tuple(
            _convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r} must be a mapping")
        key_type, value_type = args or (str, Any)
        return {_convert(key_type, k, f"{key} key"): _convert(value_type, v, f"{key}.{k}")
                for k, v in value.items()}  # fmt: skip
    if tp is Any:
        return value
    if tp is np.ndarray:
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} must be a list of numbers") from None
        if arr.ndim != 1 or not np.isfinite(arr).all():
            raise ConfigError(f"{key}={value!r} must be a flat list of finite numbers")
        return arr
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
    raise ConfigError(f"{key}: fields of type {tp} cannot be set from a config file")
