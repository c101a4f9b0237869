"""Python values to Flyte literals and back, and the payloads the benchmarks store."""

from __future__ import annotations

from typing import Any

from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2, types_pb2

_SIMPLE: dict[type, int] = {
    bool: types_pb2.BOOLEAN,
    int: types_pb2.INTEGER,
    float: types_pb2.FLOAT,
    str: types_pb2.STRING,
}

OUTPUT_NAME = "o0"
KIBIBYTE = 1024


def literal_type(python_type: Any) -> types_pb2.LiteralType:
    """Return the LiteralType of a simple Python annotation (bool, int, float, str)."""
    simple = _SIMPLE.get(python_type)
    if simple is None:
        raise TypeError(f"unsupported annotation {python_type!r}")
    return types_pb2.LiteralType(simple=simple)


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


def from_literal(literal: literals_pb2.Literal) -> Any:
    """Return the Python value of a Literal built by :func:`to_literal`."""
    kind = literal.WhichOneof("value")
    if kind == "scalar":
        primitive = literal.scalar.primitive
        which = primitive.WhichOneof("value")
        return getattr(primitive, which) if which is not None else None
    if kind == "collection":
        return [from_literal(item) for item in literal.collection.literals]
    if kind == "map":
        return {name: from_literal(item) for name, item in literal.map.literals.items()}
    raise TypeError(f"unsupported literal kind {kind!r}")


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


def interface(
    inputs: dict[str, Any], outputs: dict[str, Any] | None = None
) -> interface_pb2.TypedInterface:
    """Return a TypedInterface from name -> Python annotation maps (inputs in order)."""
    typed = interface_pb2.TypedInterface()
    for name, annotation in inputs.items():
        typed.inputs.variables.append(
            interface_pb2.VariableEntry(
                key=name, value=interface_pb2.Variable(type=literal_type(annotation))
            )
        )
    for name, annotation in (outputs or {OUTPUT_NAME: str}).items():
        typed.outputs.variables.append(
            interface_pb2.VariableEntry(
                key=name, value=interface_pb2.Variable(type=literal_type(annotation))
            )
        )
    return typed


def kib_text(seed: int = 0) -> str:
    """Return a 1 KiB ASCII string (the benchmarks' typical small output)."""
    unit = f"{seed:08d}-taskcache-benchmark-output-"
    return (unit * (KIBIBYTE // len(unit) + 1))[:KIBIBYTE]


def kib_output(seed: int = 0) -> literals_pb2.LiteralMap:
    """Return the 1 KiB output LiteralMap ``{"o0": <1 KiB string>}``."""
    return literal_map(**{OUTPUT_NAME: kib_text(seed)})
