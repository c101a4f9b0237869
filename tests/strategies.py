"""Hypothesis strategies for Flyte messages in both ``flyteidl`` (Flyte 1) and ``flyteidl2``.

Every strategy takes a :class:`Flyte` bundle (``FLYTE1`` or ``FLYTE2``) naming the generated
modules to build with, so one test can be parametrized over both packages.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from flyteidl.core import identifier_pb2 as identifier_v1
from flyteidl.core import interface_pb2 as interface_v1
from flyteidl.core import literals_pb2 as literals_v1
from flyteidl.core import types_pb2 as types_v1
from flyteidl2.core import identifier_pb2 as identifier_v2
from flyteidl2.core import interface_pb2 as interface_v2
from flyteidl2.core import literals_pb2 as literals_v2
from flyteidl2.core import types_pb2 as types_v2
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st


@dataclass(frozen=True)
class Flyte:
    """The generated modules of one Flyte IDL package."""

    name: str
    literals: ModuleType
    types: ModuleType
    interface: ModuleType
    identifier: ModuleType
    is_flyte2: bool

    def __repr__(self) -> str:  # readable pytest ids and hypothesis reports
        return self.name


FLYTE1 = Flyte("flyteidl", literals_v1, types_v1, interface_v1, identifier_v1, is_flyte2=False)
FLYTE2 = Flyte("flyteidl2", literals_v2, types_v2, interface_v2, identifier_v2, is_flyte2=True)
PACKAGES = (FLYTE1, FLYTE2)

MAX_DEPTH = 4
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1
MAX_DURATION_SECONDS = 315_576_000_000
NANOS = 1_000_000_000

# ---------------------------------------------------------------------------------------------
# Scalars

SPECIAL_INT64S = [0, 1, -1, INT64_MAX, INT64_MIN, INT64_MIN + 1, 2**53, 2**53 + 1, -(2**53) - 1]
int64s = st.one_of(st.sampled_from(SPECIAL_INT64S), st.integers(INT64_MIN, INT64_MAX))

SPECIAL_DOUBLES = [
    0.0,
    -0.0,
    math.nan,
    -math.nan,
    math.inf,
    -math.inf,
    5e-324,  # smallest subnormal
    -5e-324,
    2.225073858507201e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,
    -1.7976931348623157e308,
    1e21,
    1e-7,
    0.1,
    1.3,
    0.5,
    3.0,
    16777217.0,
    9007199254740993.0,
    -23.1234,
]
doubles = st.one_of(
    st.sampled_from(SPECIAL_DOUBLES),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
)

SPECIAL_TEXTS = [
    "",
    " ",
    "NaN",
    "Infinity",
    "e\u0301",  # e + combining acute
    "\u00e9",  # precomposed e-acute (must hash differently: no normalization)
    "\u03d2\u0301",
    "\u03d3",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # ZWJ family emoji
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "\x00",
    '"\\/<>&\b\f\n\r\t',
    "\u2028\u2029",
    "\ufeff",
    "\U0010ffff",
    "日本語テキスト",
    "x" * 200,
]
_characters = st.characters(exclude_categories=("Cs",))  # protobuf strings must be valid UTF-8
texts = st.one_of(st.sampled_from(SPECIAL_TEXTS), st.text(alphabet=_characters, max_size=12))
nonempty_texts = texts.filter(bool)
keys = st.one_of(st.sampled_from(["", "a", "1", "2", "x y", "\u00e9"]), texts)


def enum_numbers(known: list[int]) -> st.SearchStrategy[int]:
    """Known enum numbers, or any int32 (proto3 enums are open; jsonpb writes a number)."""
    return st.one_of(st.sampled_from(known), st.integers(INT32_MIN, INT32_MAX))


SPECIAL_TIMESTAMP_SECONDS = [
    0,
    -1,
    1553860800,  # 2019-03-29T12:00:00Z
    951782400,  # 2000-02-29
    253402300799,  # 9999-12-31T23:59:59Z
    253402300800,  # 10000-01-01T00:00:00Z
    -62135596800,  # 0001-01-01T00:00:00Z
    -62135596801,  # 0000-12-31T23:59:59Z
    -62167219200,  # 0000-01-01T00:00:00Z
    -62167219201,  # -0001-12-31T23:59:59Z
    10**12,
    -(10**12),
]
SPECIAL_NANOS = [0, 1, 1000, 1_000_000, 500_000_000, 123_456_789, 999_999_999]


@st.composite
def timestamps(draw: st.DrawFn) -> timestamp_pb2.Timestamp:
    """Timestamps from about year -29700 to 33700, nanos in [0, 1e9)."""
    seconds = draw(
        st.one_of(st.sampled_from(SPECIAL_TIMESTAMP_SECONDS), st.integers(-(10**12), 10**12))
    )
    nanos = draw(st.one_of(st.sampled_from(SPECIAL_NANOS), st.integers(0, NANOS - 1)))
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@st.composite
def durations(draw: st.DrawFn) -> duration_pb2.Duration:
    """Valid durations: |seconds| <= 315576000000, nanos with the sign of seconds."""
    seconds = draw(
        st.one_of(
            st.sampled_from([0, 1, -1, MAX_DURATION_SECONDS, -MAX_DURATION_SECONDS]),
            st.integers(-MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
        )
    )
    magnitude = draw(st.one_of(st.sampled_from(SPECIAL_NANOS), st.integers(0, NANOS - 1)))
    if seconds > 0:
        nanos = magnitude
    elif seconds < 0:
        nanos = -magnitude
    else:
        nanos = magnitude * draw(st.sampled_from([1, -1]))
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


# ---------------------------------------------------------------------------------------------
# google.protobuf.Struct / Value trees (every Value has its kind set)


@st.composite
def struct_values(draw: st.DrawFn, depth: int = 3) -> struct_pb2.Value:
    """A Value tree: null/number (incl. NaN, inf, -0.0)/string/bool/struct/list."""
    kinds = ["null", "number", "string", "bool"]
    if depth > 0:
        kinds += ["struct", "list"]
    kind = draw(st.sampled_from(kinds))
    value = struct_pb2.Value()
    if kind == "null":
        value.null_value = struct_pb2.NULL_VALUE
    elif kind == "number":
        value.number_value = draw(doubles)
    elif kind == "string":
        value.string_value = draw(texts)
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "struct":
        value.struct_value.SetInParent()
        value.struct_value.MergeFrom(draw(structs(depth - 1)))
    else:
        value.list_value.SetInParent()
        for item in draw(st.lists(struct_values(depth - 1), max_size=3)):
            value.list_value.values.add().CopyFrom(item)
    return value


@st.composite
def structs(draw: st.DrawFn, depth: int = 3) -> struct_pb2.Struct:
    """A Struct whose values are :func:`struct_values` trees."""
    message = struct_pb2.Struct()
    for key, item in draw(st.dictionaries(keys, struct_values(depth), max_size=3)).items():
        message.fields[key].CopyFrom(item)
    return message


# ---------------------------------------------------------------------------------------------
# Types


@st.composite
def blob_types(draw: st.DrawFn, flyte: Flyte) -> Message:
    """BlobType with any format and a known or unknown dimensionality."""
    return flyte.types.BlobType(format=draw(texts), dimensionality=draw(enum_numbers([0, 1])))


@st.composite
def schema_types(draw: st.DrawFn, flyte: Flyte) -> Message:
    schema_type = flyte.types.SchemaType()
    for name, column_type in draw(
        st.lists(st.tuples(texts, enum_numbers([0, 1, 2, 3, 4, 5])), max_size=3)
    ):
        schema_type.columns.add(name=name, type=column_type)
    return schema_type


@st.composite
def structured_dataset_types(draw: st.DrawFn, flyte: Flyte, depth: int = 1) -> Message:
    sd_type = flyte.types.StructuredDatasetType(
        format=draw(texts),
        external_schema_type=draw(texts),
        external_schema_bytes=draw(st.binary(max_size=8)),
    )
    if depth > 0:
        for name, column_type in draw(
            st.lists(st.tuples(texts, literal_types(flyte, depth - 1)), max_size=2)
        ):
            sd_type.columns.add(name=name).literal_type.CopyFrom(column_type)
    return sd_type


@st.composite
def literal_types(draw: st.DrawFn, flyte: Flyte, depth: int = 2) -> Message:
    """LiteralType of every kind, with optional metadata, annotation and structure."""
    types = flyte.types
    literal_type = types.LiteralType()
    kinds = ["simple", "schema", "blob", "enum_type", "structured_dataset_type"]
    if depth > 0:
        kinds += ["collection_type", "map_value_type", "union_type"]
    kind = draw(st.sampled_from(kinds))
    if kind == "simple":
        literal_type.simple = draw(enum_numbers(list(range(10))))
    elif kind == "schema":
        literal_type.schema.SetInParent()
        literal_type.schema.MergeFrom(draw(schema_types(flyte)))
    elif kind == "blob":
        literal_type.blob.SetInParent()
        literal_type.blob.MergeFrom(draw(blob_types(flyte)))
    elif kind == "enum_type":
        literal_type.enum_type.SetInParent()
        literal_type.enum_type.values.extend(draw(st.lists(texts, max_size=3)))
    elif kind == "structured_dataset_type":
        literal_type.structured_dataset_type.SetInParent()
        literal_type.structured_dataset_type.MergeFrom(
            draw(structured_dataset_types(flyte, max(depth - 1, 0)))
        )
    elif kind == "collection_type":
        literal_type.collection_type.CopyFrom(draw(literal_types(flyte, depth - 1)))
    elif kind == "map_value_type":
        literal_type.map_value_type.CopyFrom(draw(literal_types(flyte, depth - 1)))
    else:
        literal_type.union_type.SetInParent()
        for variant in draw(st.lists(literal_types(flyte, depth - 1), max_size=2)):
            literal_type.union_type.variants.add().CopyFrom(variant)
    if draw(st.booleans()):
        literal_type.metadata.SetInParent()
        literal_type.metadata.MergeFrom(draw(structs(1)))
    if draw(st.integers(0, 3)) == 0:
        literal_type.annotation.SetInParent()
        literal_type.annotation.annotations.MergeFrom(draw(structs(1)))
    if draw(st.integers(0, 3)) == 0:
        literal_type.structure.tag = draw(texts)
        if depth > 0:
            for key, item in draw(
                st.dictionaries(keys, literal_types(flyte, depth - 1), max_size=2)
            ).items():
                literal_type.structure.dataclass_type[key].CopyFrom(item)
    return literal_type


# ---------------------------------------------------------------------------------------------
# Literals


@st.composite
def primitives(draw: st.DrawFn, flyte: Flyte) -> Message:
    """A Primitive with exactly one member set (oneof members are present even if zero)."""
    primitive = flyte.literals.Primitive()
    kind = draw(
        st.sampled_from(
            ["integer", "float_value", "string_value", "boolean", "datetime", "duration"]
        )
    )
    if kind == "integer":
        primitive.integer = draw(int64s)
    elif kind == "float_value":
        primitive.float_value = draw(doubles)
    elif kind == "string_value":
        primitive.string_value = draw(texts)
    elif kind == "boolean":
        primitive.boolean = draw(st.booleans())
    elif kind == "datetime":
        primitive.datetime.CopyFrom(draw(timestamps()))
    else:
        primitive.duration.CopyFrom(draw(durations()))
    return primitive


SCALAR_KINDS = [
    "primitive",
    "blob",
    "binary",
    "schema",
    "none_type",
    "error",
    "generic",
    "structured_dataset",
    "union",
]


@st.composite
def scalars(draw: st.DrawFn, flyte: Flyte, depth: int = 1, flyte2_only: bool = True) -> Message:
    """A Scalar of any kind; ``depth`` bounds the literal nested in a Union."""
    scalar = flyte.literals.Scalar()
    kind = draw(st.sampled_from(SCALAR_KINDS))
    member = getattr(scalar, kind)
    member.SetInParent()
    if kind == "primitive":
        member.CopyFrom(draw(primitives(flyte)))
    elif kind == "blob":
        member.uri = draw(texts)
        if draw(st.booleans()):
            member.metadata.SetInParent()
            if draw(st.booleans()):
                member.metadata.type.CopyFrom(draw(blob_types(flyte)))
    elif kind == "binary":
        member.value = draw(st.binary(max_size=16))
        member.tag = draw(texts)
    elif kind == "schema":
        member.uri = draw(texts)
        if draw(st.booleans()):
            member.type.CopyFrom(draw(schema_types(flyte)))
    elif kind == "error":
        member.failed_node_id = draw(texts)
        member.message = draw(texts)
    elif kind == "generic":
        member.MergeFrom(draw(structs()))
    elif kind == "structured_dataset":
        member.uri = draw(texts)
        if draw(st.booleans()):
            member.metadata.SetInParent()
            if draw(st.booleans()):
                member.metadata.structured_dataset_type.CopyFrom(
                    draw(structured_dataset_types(flyte))
                )
    elif kind == "union":
        if draw(st.integers(0, 4)) > 0:
            member.value.CopyFrom(draw(literals(flyte, max(depth - 1, 0), flyte2_only)))
        if draw(st.booleans()):
            member.type.CopyFrom(draw(literal_types(flyte, 1)))
    # none_type: Void has no fields
    return scalar


@st.composite
def literals(
    draw: st.DrawFn, flyte: Flyte, depth: int = MAX_DEPTH, flyte2_only: bool = True
) -> Message:
    """A Literal: scalar, collection, map (nesting bounded by ``depth``), offloaded metadata
    or no value; optionally with ``hash`` and ``metadata`` (and, for Flyte 2 when
    ``flyte2_only``, ``artifact_id``)."""
    literal = flyte.literals.Literal()
    kinds = ["scalar", "scalar", "scalar", "offloaded_metadata", "empty"]
    if depth > 0:
        kinds += ["collection", "map"]
    kind = draw(st.sampled_from(kinds))
    if kind == "scalar":
        literal.scalar.CopyFrom(draw(scalars(flyte, depth, flyte2_only)))
    elif kind == "collection":
        literal.collection.SetInParent()
        for item in draw(st.lists(literals(flyte, depth - 1, flyte2_only), max_size=3)):
            literal.collection.literals.add().CopyFrom(item)
    elif kind == "map":
        literal.map.SetInParent()
        for key, item in draw(
            st.dictionaries(keys, literals(flyte, depth - 1, flyte2_only), max_size=3)
        ).items():
            literal.map.literals[key].CopyFrom(item)
    elif kind == "offloaded_metadata":
        offloaded = literal.offloaded_metadata
        offloaded.SetInParent()
        offloaded.uri = draw(texts)
        offloaded.size_bytes = draw(st.one_of(st.just(UINT64_MAX), st.integers(0, UINT64_MAX)))
        if draw(st.booleans()):
            offloaded.inferred_type.CopyFrom(draw(literal_types(flyte, 1)))
    if draw(st.integers(0, 4)) == 0:
        literal.hash = draw(nonempty_texts)
    for key, item in draw(st.dictionaries(keys, texts, max_size=2)).items():
        literal.metadata[key] = item
    if flyte.is_flyte2 and flyte2_only and draw(st.integers(0, 5)) == 0:
        literal.artifact_id.version = draw(texts)
        literal.artifact_id.key.project = draw(texts)
        literal.artifact_id.key.name = draw(texts)
    return literal


def build_literal_map(flyte: Flyte, entries: dict[str, Message] | list[tuple[str, Message]]):
    """Build a LiteralMap inserting ``entries`` in the given order."""
    literal_map = flyte.literals.LiteralMap()
    items = entries.items() if isinstance(entries, dict) else entries
    for key, item in items:
        literal_map.literals[key].CopyFrom(item)
    return literal_map


def literal_map_entries(
    flyte: Flyte,
    depth: int = MAX_DEPTH,
    flyte2_only: bool = True,
    min_size: int = 0,
    max_size: int = 4,
) -> st.SearchStrategy[dict[str, Message]]:
    """Dicts of name -> Literal (the content of a LiteralMap)."""
    return st.dictionaries(
        keys, literals(flyte, depth - 1, flyte2_only), min_size=min_size, max_size=max_size
    )


def literal_maps(
    flyte: Flyte,
    depth: int = MAX_DEPTH,
    flyte2_only: bool = True,
    min_size: int = 0,
    max_size: int = 4,
) -> st.SearchStrategy[Message]:
    """Random LiteralMaps; collections and maps nest at most ``depth`` levels (counting the
    LiteralMap itself)."""
    return literal_map_entries(flyte, depth, flyte2_only, min_size, max_size).map(
        lambda entries: build_literal_map(flyte, entries)
    )


# ---------------------------------------------------------------------------------------------
# The same value in both packages


def _float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def same_fields(first: Message, second: Message) -> bool:
    """Whether two messages (possibly of different packages) hold the same fields, by number,
    name and value (floats compared bit for bit, maps by key)."""
    first_fields = first.ListFields()
    second_fields = second.ListFields()
    if [(f.number, f.name, f.type) for f, _ in first_fields] != [
        (f.number, f.name, f.type) for f, _ in second_fields
    ]:
        return False
    for (field, a), (_, b) in zip(first_fields, second_fields, strict=True):
        if field.is_repeated:
            message_type = field.message_type
            if message_type is not None and message_type.GetOptions().map_entry:
                value_field = message_type.fields_by_name["value"]
                if set(a) != set(b):
                    return False
                if not all(_same_value(value_field, a[k], b[k]) for k in a):
                    return False
            elif len(a) != len(b) or not all(
                _same_value(field, x, y) for x, y in zip(a, b, strict=True)
            ):
                return False
        elif not _same_value(field, a, b):
            return False
    return True


def _same_value(field: FieldDescriptor, a: Any, b: Any) -> bool:
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        return same_fields(a, b)
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _float_bits(a) == _float_bits(b)
    return bool(a == b) and type(a) is type(b)


def to_flyte1(message: Message, flyte1_class: type[Message]) -> Message:
    """Convert a flyteidl2 message to ``flyte1_class`` through the wire format, checking that
    every field survived with the same number, name and value."""
    converted = flyte1_class.FromString(message.SerializeToString())
    if not same_fields(message, converted):
        raise AssertionError(f"wire formats disagree for {message!r}")
    return converted


@st.composite
def literal_map_pairs(
    draw: st.DrawFn, depth: int = MAX_DEPTH, max_size: int = 4
) -> tuple[Message, Message]:
    """(flyteidl2 LiteralMap, the same value as a flyteidl LiteralMap); no Flyte-2-only fields."""
    flyte2_map = draw(literal_maps(FLYTE2, depth, flyte2_only=False, max_size=max_size))
    return flyte2_map, to_flyte1(flyte2_map, literals_v1.LiteralMap)


# ---------------------------------------------------------------------------------------------
# Identifiers and interfaces


@st.composite
def identifiers(draw: st.DrawFn, flyte: Flyte) -> Message:
    """An Identifier with any resource_type (incl. unknown numbers) and any texts."""
    return flyte.identifier.Identifier(
        resource_type=draw(enum_numbers([0, 1, 2, 3, 4])),
        project=draw(texts),
        domain=draw(texts),
        name=draw(texts),
        version=draw(texts),
        org=draw(texts),
    )


@st.composite
def variables(draw: st.DrawFn, flyte: Flyte) -> Message:
    """A Variable: optional type, description and artifact references."""
    variable = flyte.interface.Variable(description=draw(texts))
    if draw(st.integers(0, 5)) > 0:
        variable.type.CopyFrom(draw(literal_types(flyte, 1)))
    if draw(st.integers(0, 4)) == 0:
        partial = variable.artifact_partial_id
        partial.SetInParent()
        partial.version = draw(texts)
        partial.artifact_key.project = draw(texts)
        partial.artifact_key.name = draw(texts)
        for key, item in draw(st.dictionaries(keys, texts, max_size=2)).items():
            partial.partitions.value[key].static_value = item
    if draw(st.integers(0, 4)) == 0:
        tag = variable.artifact_tag
        tag.SetInParent()
        tag.artifact_key.domain = draw(texts)
        tag.value.time_value.CopyFrom(draw(timestamps()))
    return variable


def variable_entries(
    flyte: Flyte, min_size: int = 0, max_size: int = 4
) -> st.SearchStrategy[list[tuple[str, Message]]]:
    """Lists of (name, Variable); names are unique for Flyte 1 (a map), may repeat for Flyte 2."""
    if flyte.is_flyte2:
        return st.lists(st.tuples(keys, variables(flyte)), min_size=min_size, max_size=max_size)
    return st.lists(
        st.tuples(keys, variables(flyte)),
        min_size=min_size,
        max_size=max_size,
        unique_by=lambda entry: entry[0],
    )


def build_variable_map(flyte: Flyte, entries: list[tuple[str, Message]]) -> Message:
    """A VariableMap holding ``entries`` in order (Flyte 2: repeated VariableEntry; Flyte 1:
    map<string, Variable>)."""
    variable_map = flyte.interface.VariableMap()
    for key, variable in entries:
        if flyte.is_flyte2:
            variable_map.variables.add(key=key).value.CopyFrom(variable)
        else:
            variable_map.variables[key].CopyFrom(variable)
    return variable_map


def variable_maps(flyte: Flyte, min_size: int = 0) -> st.SearchStrategy[Message]:
    return variable_entries(flyte, min_size=min_size).map(
        lambda entries: build_variable_map(flyte, entries)
    )


@st.composite
def typed_interfaces(draw: st.DrawFn, flyte: Flyte) -> Message:
    """A TypedInterface whose inputs and outputs are each absent, set-but-empty or populated."""
    interface = flyte.interface.TypedInterface()
    for which in ("inputs", "outputs"):
        mode = draw(st.sampled_from(["absent", "empty", "populated"]))
        if mode == "empty":
            getattr(interface, which).SetInParent()
        elif mode == "populated":
            getattr(interface, which).CopyFrom(draw(variable_maps(flyte, min_size=1)))
    return interface


# ---------------------------------------------------------------------------------------------
# Helpers over literal trees


LiteralPath = tuple[tuple[str, Any], ...]


def literal_paths(literal_map: Message) -> list[LiteralPath]:
    """Every literal reachable from a LiteralMap through collections and maps (the places
    Flyte's hashify visits), as paths of ("map", key) / ("collection", index) steps."""
    found: list[LiteralPath] = []

    def visit(literal: Message, path: LiteralPath) -> None:
        found.append(path)
        kind = literal.WhichOneof("value")
        if kind == "collection":
            for index, item in enumerate(literal.collection.literals):
                visit(item, (*path, ("collection", index)))
        elif kind == "map":
            for key in literal.map.literals:
                visit(literal.map.literals[key], (*path, ("map", key)))

    for key in literal_map.literals:
        visit(literal_map.literals[key], (("map", key),))
    return found


def literal_at(literal_map: Message, path: LiteralPath) -> Message:
    """The (mutable) literal at ``path`` in ``literal_map``."""
    (_, first), *rest = path
    node = literal_map.literals[first]
    for step, where in rest:
        node = node.collection.literals[where] if step == "collection" else node.map.literals[where]
    return node


def copy_message(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy
