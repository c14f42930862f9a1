"""Helpers shared by the analysis modules: reading response members into row values, and checking
settings read from the config.

Responses are read defensively: botocore omits absent members rather than sending null, and every
output member is optional in the model, so every read here tolerates a missing key. An absent list
becomes null (not []), so "not returned" stays distinguishable from "returned empty".
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from batch.core.errors import ConfigError

# ---------------------------------------------------------------------------------------------------
# Rows


def member(obj: Mapping[str, Any] | None, *path: str) -> Any:
    """The value at `path` in nested response dicts, or None if any step is missing."""
    value: Any = obj
    for name in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def names(items: Iterable[Mapping[str, Any]] | None) -> list[str | None] | None:
    """The `Name` of each item of a list such as `Parents`, `Aliases`, `Categories`; None when absent."""
    if items is None:
        return None
    return [item.get("Name") for item in items]


def flag_columns(prefix: str, attribute: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{prefix}` and `{prefix}_confidence` from a `{Value, Confidence}` attribute (Smile, Beard, ...)."""
    return {prefix: member(attribute, "Value"), f"{prefix}_confidence": member(attribute, "Confidence")}


# ---------------------------------------------------------------------------------------------------
# Settings

S = TypeVar("S")

#: A check takes (the full config key, the raw value) and returns the value to store or raises ConfigError.
Check = Callable[[str, Any], Any]


def parse_settings(cls: type[S], mapping: Mapping[str, Any], where: str, checks: Mapping[str, Check]) -> S:
    """Build the frozen settings dataclass `cls` from a config mapping.

    Keys missing from `mapping` keep the dataclass default; unknown keys and bad values raise a
    ConfigError naming `f"{where}.{key}"`. `checks` has one entry per dataclass field.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: must be a table of settings, got {type(mapping).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert fields == set(checks), f"checks of {cls.__name__} do not match its fields"
    for key in mapping:
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"{where}.{key}: unknown setting (known: {known})")
    values = {key: checks[key](f"{where}.{key}", value) for key, value in mapping.items()}
    return cls(**values)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def number(low: float | None = None, high: float | None = None) -> Check:
    """A finite int or float within [low, high] (bounds from the botocore input shape), stored as float."""

    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{key}: must be a number, got {_describe(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
        return float(value)

    return check


def integer(low: int | None = None, high: int | None = None) -> Check:
    """An int within [low, high] (bounds from the botocore input shape)."""

    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {_describe(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
        return value

    return check


def boolean() -> Check:
    """true or false (not 0/1, not a string)."""

    def check(key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {_describe(value)}")
        return value

    return check


def strings(
    *,
    max_items: int | None = None,
    max_length: int | None = None,
    pattern: str | None = None,
    choices: Iterable[str] | None = None,
) -> Check:
    """A list of strings, stored as a tuple; each at most `max_length` long, matching the whole of
    `pattern` (a botocore shape's regular expression) and one of `choices`, when given."""
    allowed = tuple(choices) if choices is not None else None
    compiled = re.compile(pattern) if pattern is not None else None

    def check(key: str, value: Any) -> tuple[str, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: must be a list of strings, got {_describe(value)}")
        if max_items is not None and len(value) > max_items:
            raise ConfigError(f"{key}: at most {max_items} items, got {len(value)}")
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{key}: must be a list of strings, got an item {_describe(item)}")
            if max_length is not None and len(item) > max_length:
                raise ConfigError(f"{key}: each item at most {max_length} characters, got {item!r}")
            if compiled is not None and not compiled.fullmatch(item):
                raise ConfigError(f"{key}: {item!r} does not match the pattern {pattern}")
            if allowed is not None and item not in allowed:
                raise ConfigError(f"{key}: {item!r} is not one of {', '.join(allowed)}")
        return tuple(value)

    return check


def optional(inner: Check) -> Check:
    """`inner`, or None (TOML has no null; this lets flags and code unset a value)."""

    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check
