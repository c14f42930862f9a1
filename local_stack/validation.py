"""Request validation driven by botocore's service model (the source of truth for Rekognition's input shapes).

`validate_request(shape, params)` walks the operation's input shape and checks what the service checks:
required members, types, enum values, string/list/blob length and numeric min/max, and string patterns.
It returns a copy of the params with blobs base64-decoded. The first violation raises
InvalidParameterException naming the field (e.g. ``MinConfidence``, ``Image.S3Object.Bucket``); an
over-long blob (``Image.Bytes``) raises ImageTooLargeException as Rekognition does.
Pure: no I/O. botocore itself checks only `min` and types before sending, so max/enum errors reach us.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from botocore.model import Shape

from local_stack.errors import ServiceError, invalid_parameter


@lru_cache(maxsize=256)
def _pattern(expr: str) -> re.Pattern[str] | None:
    try:
        return re.compile(expr)
    except re.error:  # a Java-only regex construct: skip the pattern rather than reject valid input
        return None


def _check_range(path: str, shape: Shape, value: float, what: str) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and value < lo:
        raise invalid_parameter(f"{path}: {what} {value} is below the minimum {lo}.")
    if hi is not None and value > hi:
        raise invalid_parameter(f"{path}: {what} {value} is above the maximum {hi}.")


def _expect(path: str, value: Any, types: tuple[type, ...], name: str) -> None:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise invalid_parameter(f"{path}: expected {name}, got {type(value).__name__}.")


def _validate_structure(path: str, shape: Shape, value: Any) -> dict[str, Any]:
    _expect(path, value, (dict,), "an object")
    for member in shape.required_members:
        if value.get(member) is None:
            raise invalid_parameter(f"{_join(path, member)}: missing required member.")
    out = {}
    for key, item in value.items():
        member_shape = shape.members.get(key)
        if member_shape is None:
            raise invalid_parameter(f"{_join(path, key)}: unknown member.")
        if item is not None:
            out[key] = validate_value(_join(path, key), member_shape, item)
    return out


def _validate_string(path: str, shape: Shape, value: Any) -> str:
    _expect(path, value, (str,), "a string")
    if shape.enum and value not in shape.enum:
        raise invalid_parameter(f"{path}: {value!r} is not one of {', '.join(shape.enum)}.")
    _check_range(path, shape, len(value), "length")
    pattern = shape.metadata.get("pattern")
    compiled = _pattern(pattern) if pattern else None
    if compiled is not None and not compiled.fullmatch(value):
        raise invalid_parameter(f"{path}: {value!r} does not match {pattern}.")
    return value


def _validate_blob(path: str, shape: Shape, value: Any) -> bytes:
    _expect(path, value, (str,), "base64 text")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_parameter(f"{path}: not valid base64.") from exc
    hi = shape.metadata.get("max")
    if hi is not None and len(data) > hi:
        raise ServiceError(
            "ImageTooLargeException", f"Image size is too large ({path}: {len(data)} > {hi} bytes)."
        )
    _check_range(path, shape, len(data), "length")
    return data


def _validate_list(path: str, shape: Shape, value: Any) -> list[Any]:
    _expect(path, value, (list,), "a list")
    _check_range(path, shape, len(value), "length")
    return [validate_value(f"{path}[{i}]", shape.member, v) for i, v in enumerate(value)]


def _validate_map(path: str, shape: Shape, value: Any) -> dict[str, Any]:
    _expect(path, value, (dict,), "an object")
    _check_range(path, shape, len(value), "length")
    return {
        validate_value(f"{path}.<key>", shape.key, k): validate_value(f"{path}.{k}", shape.value, v)
        for k, v in value.items()
    }


def _validate_boolean(path: str, shape: Shape, value: Any) -> bool:
    _expect(path, value, (bool,), "a boolean")
    return bool(value)


def _validate_integer(path: str, shape: Shape, value: Any) -> int:
    _expect(path, value, (int,), "an integer")
    _check_range(path, shape, value, "value")
    return int(value)


def _validate_float(path: str, shape: Shape, value: Any) -> float:
    _expect(path, value, (int, float), "a number")
    _check_range(path, shape, value, "value")
    return float(value)


VALIDATORS: dict[str, Callable[[str, Shape, Any], Any]] = {
    "structure": _validate_structure,
    "list": _validate_list,
    "map": _validate_map,
    "string": _validate_string,
    "blob": _validate_blob,
    "boolean": _validate_boolean,
    "integer": _validate_integer,
    "long": _validate_integer,
    "float": _validate_float,
    "double": _validate_float,
}


def validate_value(path: str, shape: Shape, value: Any) -> Any:
    """Validate one value against its shape; timestamps and unknown types are accepted as sent."""
    validator = VALIDATORS.get(shape.type_name)
    return validator(path, shape, value) if validator else value


def validate_request(shape: Shape | None, params: Any) -> dict[str, Any]:
    """Validate a whole request body against the operation's input shape; returns the decoded params."""
    if shape is None:
        return {}
    return _validate_structure("", shape, params)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
