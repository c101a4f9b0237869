"""Small shared builders for client-level tests: keys, integer literal maps and a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2, types_pb2

from taskcache import InputReader, Key
from taskcache.hashing import hash_literal_map

START = datetime(2024, 5, 17, 12, 0, 0, 123457, tzinfo=UTC)


class FakeClock:
    """A clock returning aware UTC datetimes that only moves when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta | float) -> None:
        self.now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)


def integer_literal(value: int) -> literals_pb2.Literal:
    return literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=value))
    )


def string_literal(value: str) -> literals_pb2.Literal:
    return literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=value))
    )


def input_key(literal: literals_pb2.Literal) -> str:
    """The Flyte 2 inputs hash of a one-input map holding ``literal``."""
    return hash_literal_map(literals_pb2.LiteralMap(literals={"x": literal}))


def int_map(**values: int) -> literals_pb2.LiteralMap:
    """``int_map(a=1)`` is the LiteralMap ``{"a": 1}``."""
    return literals_pb2.LiteralMap(
        literals={name: integer_literal(value) for name, value in values.items()}
    )


def make_identifier(
    name: str = "tests.square", *, version: str = "v1"
) -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org="org_1",
        project="project_1",
        domain="domain_1",
        name=name,
        version=version,
    )


def make_interface(*input_names: str) -> interface_pb2.TypedInterface:
    """An interface with integer inputs ``input_names`` (no ``inputs`` field if none)."""
    integer = interface_pb2.Variable(type=types_pb2.LiteralType(simple=types_pb2.INTEGER))
    interface = interface_pb2.TypedInterface(
        outputs=interface_pb2.VariableMap(
            variables=[interface_pb2.VariableEntry(key="o0", value=integer)]
        )
    )
    if input_names:
        interface.inputs.variables.extend(
            interface_pb2.VariableEntry(key=name, value=integer) for name in input_names
        )
    return interface


def make_key(
    x: int = 1,
    *,
    name: str = "tests.square",
    cache_version: str = "1.0",
    inputs: literals_pb2.LiteralMap | InputReader | None = None,
    identifier: identifier_pb2.Identifier | None = None,
) -> Key:
    """A key for a task with one integer input ``x`` (``inputs`` overrides ``{"x": x}``)."""
    return Key(
        identifier if identifier is not None else make_identifier(name),
        cache_version,
        make_interface("x"),
        inputs=inputs if inputs is not None else int_map(x=x),
    )
