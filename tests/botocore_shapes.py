"""Validate a parsed boto3 response against botocore's OUTPUT shape for the operation.

Walks the shape: unknown keys, types, enum values, required members, numeric ranges, list lengths, nesting.
`ResponseMetadata` is stripped first. Raises AssertionError naming the path of the first problem.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ServiceModel, Shape


@cache
def rekognition_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("rekognition")


def _range(path: str, shape: Shape, value: float, what: str) -> None:
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    assert lo is None or value >= lo, f"{path}: {what} {value} < min {lo}"
    assert hi is None or value <= hi, f"{path}: {what} {value} > max {hi}"


def _structure(path: str, shape: Shape, value: Any) -> None:
    assert isinstance(value, dict), f"{path}: expected a structure, got {type(value).__name__}"
    unknown = set(value) - set(shape.members)
    assert not unknown, f"{path}: unknown member(s) {sorted(unknown)}"
    for name in shape.required_members:
        assert name in value, f"{path}: missing required {name}"
    for name, item in value.items():
        check(f"{path}.{name}", shape.members[name], item)


def _list(path: str, shape: Shape, value: Any) -> None:
    assert isinstance(value, list), f"{path}: expected a list"
    _range(path, shape, len(value), "length")
    for i, item in enumerate(value):
        check(f"{path}[{i}]", shape.member, item)


def _map(path: str, shape: Shape, value: Any) -> None:
    assert isinstance(value, dict), f"{path}: expected a map"
    for k, v in value.items():
        check(f"{path}.<key>", shape.key, k)
        check(f"{path}.{k}", shape.value, v)


def _string(path: str, shape: Shape, value: Any) -> None:
    assert isinstance(value, str), f"{path}: expected a string, got {value!r}"
    assert not shape.enum or value in shape.enum, f"{path}: {value!r} not in enum {shape.enum}"
    _range(path, shape, len(value), "length")


def _number(types: tuple[type, ...]) -> Any:
    def checker(path: str, shape: Shape, value: Any) -> None:
        assert not isinstance(value, bool), f"{path}: expected a number, got a boolean"
        assert isinstance(value, types), f"{path}: expected {types}, got {value!r}"
        _range(path, shape, value, "value")

    return checker


def _scalar(types: tuple[type, ...]) -> Any:
    def checker(path: str, shape: Shape, value: Any) -> None:
        assert isinstance(value, types), f"{path}: expected {types}, got {value!r}"

    return checker


CHECKERS = {
    "structure": _structure,
    "list": _list,
    "map": _map,
    "string": _string,
    "integer": _number((int,)),
    "long": _number((int,)),
    "float": _number((int, float)),
    "double": _number((int, float)),
    "boolean": _scalar((bool,)),
    "timestamp": _scalar((dt.datetime,)),
    "blob": _scalar((bytes, bytearray)),
}


def check(path: str, shape: Shape, value: Any) -> None:
    checker = CHECKERS.get(shape.type_name)
    assert checker is not None, f"{path}: unhandled shape type {shape.type_name}"
    checker(path, shape, value)


@cache
def service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


def validate_response(
    operation_name: str, parsed_response: dict[str, Any], service: str = "rekognition"
) -> None:
    shape = service_model(service).operation_model(operation_name).output_shape
    body = {k: v for k, v in parsed_response.items() if k != "ResponseMetadata"}
    check(operation_name, shape, body)
