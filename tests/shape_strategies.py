"""Hypothesis strategies that build values of any botocore shape: full-shape Rekognition responses.

`shape_values(shape)` walks a botocore `Shape` (structure, list, map, string, enum, float, double,
integer, long, boolean, blob, timestamp) and draws a value the model allows: every structure member
may be present or absent (botocore omits absent members), enums draw from the enum, numbers respect the
shape's min/max, and lists hold at most `max_list` items. Recursion stops at `max_depth` (deeper
structures are empty). Integers are 32-bit, as AWS's `Integer`/`UInteger` are.

Use `response_values(operation)` for a whole output of a Rekognition operation.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import botocore.session
from botocore.model import OperationModel, Shape
from hypothesis import strategies as st

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_service_model = None


def rekognition_model() -> Any:
    """botocore's Rekognition service model (loaded once)."""
    global _service_model  # noqa: PLW0603 - a module-level cache of an expensive, immutable load
    if _service_model is None:
        _service_model = botocore.session.get_session().get_service_model("rekognition")
    return _service_model


def operation_model(operation: str) -> OperationModel:
    return rekognition_model().operation_model(operation)


def _bounds(shape: Shape) -> tuple[Any, Any]:
    return shape.metadata.get("min"), shape.metadata.get("max")


def _string(shape: Shape) -> st.SearchStrategy[str]:
    if getattr(shape, "enum", None):
        return st.sampled_from(shape.enum)
    low, high = _bounds(shape)
    low = low or 0
    high = min(high, max(low, 12)) if high is not None else max(low, 12)
    return st.text(min_size=low, max_size=high)


def _float(shape: Shape) -> st.SearchStrategy[float]:
    low, high = _bounds(shape)
    return st.floats(
        min_value=float(low) if low is not None else -1e6,
        max_value=float(high) if high is not None else 1e6,
        allow_nan=False,
        allow_infinity=False,
    )


def _integer(shape: Shape) -> st.SearchStrategy[int]:
    low, high = _bounds(shape)
    return st.integers(
        min_value=max(low, _INT32_MIN) if low is not None else _INT32_MIN,
        max_value=min(high, _INT32_MAX) if high is not None else _INT32_MAX,
    )


_SCALARS: dict[str, Callable[[Shape], st.SearchStrategy[Any]]] = {
    "string": _string,
    "float": _float,
    "double": _float,
    "integer": _integer,
    "long": _integer,
    "boolean": lambda shape: st.booleans(),
    "blob": lambda shape: st.binary(max_size=16),
    "timestamp": lambda shape: st.datetimes(
        timezones=st.just(UTC), min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
    ),
}


def shape_values(
    shape: Shape, *, max_depth: int = 8, max_list: int = 3, _depth: int = 0
) -> st.SearchStrategy[Any]:
    """A strategy for values of `shape` as botocore would parse them."""
    kind = shape.type_name
    deeper = {"max_depth": max_depth, "max_list": max_list, "_depth": _depth + 1}
    if kind == "structure":
        if _depth >= max_depth:
            return st.just({})
        members = {name: shape_values(m, **deeper) for name, m in shape.members.items()}
        return st.fixed_dictionaries({}, optional=members)
    if kind == "list":
        low, high = _bounds(shape)
        size = min(high if high is not None else max_list, max_list)
        return st.lists(shape_values(shape.member, **deeper), min_size=min(low or 0, size), max_size=size)
    if kind == "map":
        keys, values = shape_values(shape.key, **deeper), shape_values(shape.value, **deeper)
        return st.dictionaries(keys, values, max_size=max_list)
    if kind not in _SCALARS:
        raise NotImplementedError(f"shape {shape.name} of type {kind}")
    return _SCALARS[kind](shape)


def response_values(operation: str, **limits: int) -> st.SearchStrategy[dict[str, Any]]:
    """Full-shape responses of a Rekognition operation (its output shape)."""
    return shape_values(operation_model(operation).output_shape, **limits)
