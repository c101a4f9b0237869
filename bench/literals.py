"""Python values to Flyte literals, and the payloads the benchmarks store."""

from __future__ import annotations

from typing import Any

from flyteidl2.core import identifier_pb2, literals_pb2

OUTPUT_NAME = "o0"
KIBIBYTE = 1024


def to_literal(value: Any) -> literals_pb2.Literal:
    """Return ``value`` (bool, int, float, str, list or str-keyed dict of those) as a Literal."""
    if isinstance(value, bool):
        primitive = literals_pb2.Primitive(boolean=value)
    elif isinstance(value, int):
        primitive = literals_pb2.Primitive(integer=value)
    elif isinstance(value, float):
        primitive = literals_pb2.Primitive(float_value=value)
    elif isinstance(value, str):
        primitive = literals_pb2.Primitive(string_value=value)
    elif isinstance(value, list):
        return literals_pb2.Literal(
            collection=literals_pb2.LiteralCollection(literals=[to_literal(v) for v in value])
        )
    elif isinstance(value, dict):
        return literals_pb2.Literal(
            map=literals_pb2.LiteralMap(
                literals={name: to_literal(item) for name, item in value.items()}
            )
        )
    else:
        raise TypeError(f"unsupported value {value!r}")
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=primitive))


def literal_map(**values: Any) -> literals_pb2.LiteralMap:
    """Return the LiteralMap of keyword values."""
    return literals_pb2.LiteralMap(
        literals={name: to_literal(value) for name, value in values.items()}
    )


def task_identifier(name: str, *, version: str = "v1") -> identifier_pb2.Identifier:
    """Return a task identifier in the benchmarks' scope."""
    return identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org="bench",
        project="taskcache",
        domain="development",
        name=name,
        version=version,
    )


def kib_text(seed: int = 0) -> str:
    """Return a 1 KiB ASCII string (the benchmarks' typical small output)."""
    unit = f"{seed:08d}-taskcache-benchmark-output-"
    return (unit * (KIBIBYTE // len(unit) + 1))[:KIBIBYTE]


def kib_output(seed: int = 0) -> literals_pb2.LiteralMap:
    """Return the 1 KiB output LiteralMap ``{"o0": <1 KiB string>}``."""
    return literal_map(**{OUTPUT_NAME: kib_text(seed)})
