"""The machinery of a config field: its help text, its allowed values (choices or a range), and the
checks that build a section's dataclass from a TOML table (pipeline/config.py declares the sections)."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


def did_you_mean(word: str, known: typing.Iterable[str]) -> str:
    """The text '; did you mean X?', X the known name closest to a mistyped `word`; '' when none is close."""
    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def option(default: Any, help: str, choices: tuple[str, ...] | None = None, *, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None, min_items: int = 0) -> Any:
    """A config field with its CLI help text, and its allowed values: `choices`, or a range (ge ≥, gt >,
    le ≤, lt <) checked when the config is loaded; a list holds each item once, and at least `min_items`."""
    bounds = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "lt": lt}.items() if v is not None}
    metadata = {"help": help, "choices": choices, "bounds": bounds, "min_items": min_items}
    if isinstance(default, list):  # a list default is built anew for each instance
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


BOUND_TEXT = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
BOUND_OK = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b, "le": lambda v, b: v <= b,
            "lt": lambda v, b: v < b}


def check_bounds(where: str, value: Any, bounds: dict[str, float]) -> None:
    """ConfigError naming the key, its value and the range when `value` is outside `bounds`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not bounds:
        return
    if not all(BOUND_OK[k](value, b) for k, b in bounds.items()):
        allowed = " and ".join(f"{BOUND_TEXT[k]} {b:g}" for k, b in bounds.items())
        raise ConfigError(f"{where} = {value!r}: must be {allowed}")


def check_items(where: str, value: list, min_items: int) -> None:
    """ConfigError when a list names an item twice or holds fewer than `min_items`."""
    twice = sorted({str(v) for v in value if value.count(v) > 1})
    if twice:
        raise ConfigError(f"{where} = {value!r}: {', '.join(twice)} listed more than once")
    if len(value) < min_items:
        raise ConfigError(f"{where} = {value!r}: needs at least {min_items} item(s)")


def check_value(where: str, value: Any, typ: Any) -> Any:
    """Return `value` as `typ` or raise ConfigError naming `where`."""
    ok = False
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif typ is str:
        ok = isinstance(value, str)
    elif typing.get_origin(typ) is list:
        (item,) = typing.get_args(typ)
        if isinstance(value, list):
            return [check_value(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
    elif isinstance(typ, types.UnionType):
        for t in typing.get_args(typ):
            try:
                return check_value(where, value, t)
            except ConfigError:
                pass
    else:  # pragma: no cover - a developer added a field of an unsupported type
        raise TypeError(f"unsupported config type {typ!r} for {where}")
    if not ok:
        name = getattr(typ, "__name__", str(typ))
        raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")
    return value


def build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a section dataclass from a dict, checking keys, types and choices."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, fields)} (known: {known})")
        value = check_value(f"{where} {key}", value, hints[key])
        choices = fields[key].metadata.get("choices")
        for item in value if isinstance(value, list) else [value]:  # a list's choices hold for each item
            if choices and item not in choices:
                raise ConfigError(f"{where} {key}: {item!r} is not one of {', '.join(choices)}")
        check_bounds(f"{where} {key}", value, fields[key].metadata.get("bounds", {}))
        if isinstance(value, list):
            check_items(f"{where} {key}", value, fields[key].metadata.get("min_items", 0))
        kwargs[key] = value
    return cls(**kwargs)
