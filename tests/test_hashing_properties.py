"""Properties of Flyte's cache-key hashing.

The direct message walk must equal the JSON route (jsonpb text + objecthash) everywhere; the
JSON route must write what Go's jsonpb writes; and the cache-key functions must behave as
Flyte's (hashify, ignore vars, order independence, Flyte 1 == Flyte 2 for the same values).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from hashlib import sha256

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hashing_routes import on_both_routes
from strategies import (
    FLYTE1,
    FLYTE2,
    PACKAGES,
    Flyte,
    build_literal_map,
    build_variable_map,
    copy_message,
    identifiers,
    literal_at,
    literal_map_entries,
    literal_map_pairs,
    literal_maps,
    literal_paths,
    literal_types,
    literals,
    nonempty_texts,
    struct_values,
    structs,
    texts,
    to_flyte1,
    typed_interfaces,
    variable_entries,
    variable_maps,
)
from taskcache import hashing
from taskcache.errors import InvalidArgumentError
from taskcache.hashing.jsonpb import marshal_jsonpb, pbhash_via_json
from taskcache.hashing.jsonpb_rules import float32_as_json_double
from taskcache.hashing.objecthash import (
    EMPTY_DICT_HASH,
    common_json_hash,
    hash_float,
    normalize_float,
)

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
FEW = settings(SETTINGS, max_examples=50)

# Every digest below is computed on the pure-Python route and on the compiled core, which
# must agree; the properties then hold for both.
compute_hash = on_both_routes(hashing.compute_hash)
hash_literal_map = on_both_routes(hashing.hash_literal_map)
datacatalog_artifact_tag = on_both_routes(hashing.datacatalog_artifact_tag)
interface_signature_hash = on_both_routes(hashing.interface_signature_hash)

package_ids = pytest.mark.parametrize("flyte", PACKAGES, ids=lambda flyte: flyte.name)


def urlsafe(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def assert_routes_agree(message) -> bytes:
    direct = compute_hash(message)
    via_json = pbhash_via_json(message)
    assert direct == via_json, marshal_jsonpb(message)
    return direct


def assert_both_routes_reject(message) -> None:
    with pytest.raises(InvalidArgumentError):
        compute_hash(message)
    with pytest.raises(InvalidArgumentError):
        pbhash_via_json(message)
    with pytest.raises(InvalidArgumentError):
        marshal_jsonpb(message)


# ---------------------------------------------------------------------------------------------
# Reference: Flyte's hashify, built as messages, hashed through the JSON route


def hashify(literal):
    """Flyte's ``hashify``: a literal with a hash becomes ``Literal{hash}``; collections and
    maps become a new Literal holding only their hashified children; others stay as they are."""
    literal_class = type(literal)
    if literal.hash:
        return literal_class(hash=literal.hash)
    kind = literal.WhichOneof("value")
    if kind == "collection":
        copy = literal_class()
        copy.collection.SetInParent()
        for item in literal.collection.literals:
            copy.collection.literals.add().CopyFrom(hashify(item))
        return copy
    if kind == "map":
        copy = literal_class()
        copy.map.SetInParent()
        for key in literal.map.literals:
            copy.map.literals[key].CopyFrom(hashify(literal.map.literals[key]))
        return copy
    return literal


def reference_hash_literal_map(literal_map, ignore=()) -> str:
    copy = type(literal_map)()
    for name in literal_map.literals:
        if name not in ignore:
            copy.literals[name].CopyFrom(hashify(literal_map.literals[name]))
    return urlsafe(pbhash_via_json(copy))


# ---------------------------------------------------------------------------------------------
# Direct route == JSON route


@package_ids
@settings(SETTINGS, max_examples=150)
@given(data=st.data())
def test_routes_agree_on_literal_maps(flyte: Flyte, data) -> None:
    assert_routes_agree(data.draw(literal_maps(flyte)))


@package_ids
@SETTINGS
@given(data=st.data())
def test_routes_agree_on_literals(flyte: Flyte, data) -> None:
    assert_routes_agree(data.draw(literals(flyte, depth=2)))


@package_ids
@SETTINGS
@given(data=st.data())
def test_routes_agree_on_identifiers(flyte: Flyte, data) -> None:
    assert_routes_agree(data.draw(identifiers(flyte)))


@package_ids
@SETTINGS
@given(data=st.data())
def test_routes_agree_on_interfaces(flyte: Flyte, data) -> None:
    interface = data.draw(typed_interfaces(flyte))
    assert_routes_agree(interface)
    for which in ("inputs", "outputs"):
        assert_routes_agree(getattr(interface, which))


@package_ids
@FEW
@given(data=st.data())
def test_routes_agree_on_literal_types(flyte: Flyte, data) -> None:
    assert_routes_agree(data.draw(literal_types(flyte)))


@SETTINGS
@given(value=struct_values(depth=4))
def test_routes_agree_on_struct_values(value) -> None:
    assert_routes_agree(value)
    kind = value.WhichOneof("kind")
    if kind in ("struct_value", "list_value"):
        assert_routes_agree(getattr(value, kind))


@SETTINGS
@given(message=structs(depth=4))
def test_routes_agree_on_structs(message) -> None:
    assert_routes_agree(message)


@package_ids
@SETTINGS
@given(data=st.data())
def test_hash_literal_map_equals_hashify_reference(flyte: Flyte, data) -> None:
    literal_map = data.draw(literal_maps(flyte))
    names = sorted(literal_map.literals)
    ignore = data.draw(
        st.lists(st.one_of(st.sampled_from(names), texts) if names else texts, max_size=3)
    )
    assert hash_literal_map(literal_map, ignore) == reference_hash_literal_map(literal_map, ignore)


# ---------------------------------------------------------------------------------------------
# Cache-key properties


@package_ids
@SETTINGS
@given(data=st.data())
def test_literal_map_insertion_order_is_irrelevant(flyte: Flyte, data) -> None:
    entries = list(data.draw(literal_map_entries(flyte, depth=3)).items())
    shuffled = data.draw(st.permutations(entries))
    first = build_literal_map(flyte, entries)
    second = build_literal_map(flyte, shuffled)
    assert hash_literal_map(first) == hash_literal_map(second)
    assert compute_hash(first) == compute_hash(second)


@package_ids
@SETTINGS
@given(data=st.data())
def test_ignoring_vars_equals_removing_them(flyte: Flyte, data) -> None:
    entries = data.draw(literal_map_entries(flyte, depth=3))
    names = sorted(entries)
    ignore = data.draw(
        st.lists(st.one_of(st.sampled_from(names), texts) if names else texts, max_size=4)
    )
    kept = {name: item for name, item in entries.items() if name not in ignore}
    full = build_literal_map(flyte, entries)
    assert hash_literal_map(full, ignore) == hash_literal_map(build_literal_map(flyte, kept))
    assert datacatalog_artifact_tag(full, ignore) == datacatalog_artifact_tag(
        build_literal_map(flyte, kept)
    )


@package_ids
@SETTINGS
@given(data=st.data())
def test_literal_with_hash_hashes_independently_of_its_value(flyte: Flyte, data) -> None:
    literal_map = data.draw(literal_maps(flyte, depth=4, min_size=1))
    path = data.draw(st.sampled_from(literal_paths(literal_map)))
    digest = data.draw(nonempty_texts)
    variants = []
    for _ in range(2):
        variant = copy_message(literal_map)
        node = literal_at(variant, path)
        node.CopyFrom(data.draw(literals(flyte, depth=2)))
        node.hash = digest
        variants.append(variant)
    bare = copy_message(literal_map)
    literal_at(bare, path).CopyFrom(flyte.literals.Literal(hash=digest))
    expected = hash_literal_map(bare)
    assert hash_literal_map(variants[0]) == expected
    assert hash_literal_map(variants[1]) == expected


@SETTINGS
@given(pair=literal_map_pairs())
def test_flyte1_and_flyte2_types_hash_alike(pair) -> None:
    flyte2_map, flyte1_map = pair
    assert hash_literal_map(flyte1_map) == hash_literal_map(flyte2_map)
    assert compute_hash(flyte1_map) == compute_hash(flyte2_map)
    names = sorted(flyte2_map.literals)[:1]
    assert hash_literal_map(flyte1_map, names) == hash_literal_map(flyte2_map, names)


@SETTINGS
@given(data=st.data())
def test_flyte1_and_flyte2_identifiers_hash_alike(data) -> None:
    flyte2_identifier = data.draw(identifiers(FLYTE2))
    flyte1_identifier = to_flyte1(flyte2_identifier, FLYTE1.identifier.Identifier)
    assert compute_hash(flyte1_identifier) == compute_hash(flyte2_identifier)


@SETTINGS
@given(entries=variable_entries(FLYTE2, min_size=2), data=st.data())
def test_flyte2_variable_map_order_matters(entries, data) -> None:
    permuted = data.draw(st.permutations(entries))
    first = FLYTE2.interface.TypedInterface(inputs=build_variable_map(FLYTE2, entries))
    second = FLYTE2.interface.TypedInterface(inputs=build_variable_map(FLYTE2, permuted))

    def entry_hashes(items):
        return [
            compute_hash(FLYTE2.interface.VariableEntry(key=key, value=variable))
            for key, variable in items
        ]

    if entry_hashes(entries) == entry_hashes(permuted):
        assert interface_signature_hash(first) == interface_signature_hash(second)
    else:
        assert interface_signature_hash(first) != interface_signature_hash(second)


@SETTINGS
@given(entries=variable_entries(FLYTE1, min_size=2), data=st.data())
def test_flyte1_variable_map_order_is_irrelevant(entries, data) -> None:
    permuted = data.draw(st.permutations(entries))
    first = FLYTE1.interface.TypedInterface(inputs=build_variable_map(FLYTE1, entries))
    second = FLYTE1.interface.TypedInterface(inputs=build_variable_map(FLYTE1, permuted))
    assert interface_signature_hash(first) == interface_signature_hash(second)


@package_ids
@FEW
@given(data=st.data())
def test_interface_signature_prefixes_are_variable_map_hashes(flyte: Flyte, data) -> None:
    variable_map = data.draw(variable_maps(flyte, min_size=1))
    interface = flyte.interface.TypedInterface(outputs=variable_map)
    assert interface_signature_hash(interface) == (
        f"{urlsafe(EMPTY_DICT_HASH)[:8]}-{urlsafe(compute_hash(variable_map))[:8]}"
    )


def float_literal_map(flyte: Flyte, value: float):
    literal = flyte.literals.Literal()
    literal.scalar.primitive.float_value = value
    return build_literal_map(flyte, {"x": literal})


@package_ids
def test_negative_zero_float_value_hashes_like_zero(flyte: Flyte) -> None:
    negative = flyte.literals.Primitive(float_value=-0.0)
    positive = flyte.literals.Primitive(float_value=0.0)
    assert json.loads(marshal_jsonpb(negative)) == {"floatValue": 0}
    assert json.loads(marshal_jsonpb(positive)) == {"floatValue": 0}
    assert assert_routes_agree(negative) == assert_routes_agree(positive)
    assert compute_hash(positive) != compute_hash(flyte.literals.Primitive())
    assert hash_literal_map(float_literal_map(flyte, -0.0)) == hash_literal_map(
        float_literal_map(flyte, 0.0)
    )


@pytest.mark.parametrize(
    ("number", "text"), [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")]
)
def test_nonfinite_struct_number_hashes_as_string(number: float, text: str) -> None:
    as_number = struct_pb2.Value(number_value=number)
    as_string = struct_pb2.Value(string_value=text)
    assert assert_routes_agree(as_number) == assert_routes_agree(as_string)
    assert compute_hash(as_number) == sha256(b"u" + text.encode()).digest()


@package_ids
def test_struct_nan_inside_literal_map_hashes_as_string(flyte: Flyte) -> None:
    def generic(value: struct_pb2.Value):
        literal = flyte.literals.Literal()
        literal.scalar.generic.fields["n"].CopyFrom(value)
        return build_literal_map(flyte, {"s": literal})

    as_nan = generic(struct_pb2.Value(number_value=math.nan))
    as_text = generic(struct_pb2.Value(string_value="NaN"))
    assert hash_literal_map(as_nan) == hash_literal_map(as_text)


# ---------------------------------------------------------------------------------------------
# JSON route: what Go's jsonpb writes


@package_ids
def test_integer_zero_is_present_as_string(flyte: Flyte) -> None:
    assert marshal_jsonpb(flyte.literals.Primitive(integer=0)) == '{"integer":"0"}'


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (253402300800, 0, "10000-01-01T00:00:00Z"),
        (253402300799, 999_999_999, "9999-12-31T23:59:59.999999999Z"),
        (-62135596800, 0, "0001-01-01T00:00:00Z"),
        (-62135596801, 0, "0000-12-31T23:59:59Z"),
        (-62167219200, 0, "0000-01-01T00:00:00Z"),
        (0, 0, "1970-01-01T00:00:00Z"),
        (0, 1000, "1970-01-01T00:00:00.000001Z"),
        (0, 1_000_000, "1970-01-01T00:00:00.001Z"),
        (0, 1, "1970-01-01T00:00:00.000000001Z"),
        (0, 120_000_000, "1970-01-01T00:00:00.120Z"),
        (1553860800, 0, "2019-03-29T12:00:00Z"),
        (951782400, 0, "2000-02-29T00:00:00Z"),
    ],
)
def test_timestamp_text(seconds: int, nanos: int, text: str) -> None:
    message = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert marshal_jsonpb(message) == json.dumps(text)
    assert assert_routes_agree(message) == sha256(b"u" + text.encode()).digest()


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (-1, -500_000_000, "-1.500s"),
        (1, 500_000_000, "1.500s"),
        (1, 0, "1s"),
        (0, 0, "0s"),
        (0, 1000, "0.000001s"),
        (0, -1, "-0.000000001s"),
        (315_576_000_000, 999_999_999, "315576000000.999999999s"),
        (-315_576_000_000, -999_999_999, "-315576000000.999999999s"),
    ],
)
def test_duration_text(seconds: int, nanos: int, text: str) -> None:
    message = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    assert marshal_jsonpb(message) == json.dumps(text)
    assert assert_routes_agree(message) == sha256(b"u" + text.encode()).digest()


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (315_576_000_001, 0),
        (-315_576_000_001, 0),
        (0, 1_000_000_000),
        (0, -1_000_000_000),
        (1, -1),
        (-1, 1),
    ],
)
def test_invalid_duration_is_rejected_by_both_routes(seconds: int, nanos: int) -> None:
    assert_both_routes_reject(duration_pb2.Duration(seconds=seconds, nanos=nanos))
    for flyte in PACKAGES:
        literal = flyte.literals.Literal()
        literal.scalar.primitive.duration.seconds = seconds
        literal.scalar.primitive.duration.nanos = nanos
        literal_map = build_literal_map(flyte, {"d": literal})
        assert_both_routes_reject(literal_map)
        with pytest.raises(InvalidArgumentError):
            hash_literal_map(literal_map)


@pytest.mark.parametrize("nanos", [-1, 1_000_000_000])
def test_invalid_timestamp_nanos_is_rejected_by_both_routes(nanos: int) -> None:
    assert_both_routes_reject(timestamp_pb2.Timestamp(seconds=0, nanos=nanos))


def test_value_without_kind_is_rejected_by_both_routes() -> None:
    assert_both_routes_reject(struct_pb2.Value())
    in_struct = struct_pb2.Struct()
    in_struct.fields["a"].SetInParent()
    assert_both_routes_reject(in_struct)
    in_list = struct_pb2.ListValue()
    in_list.values.add()
    assert_both_routes_reject(in_list)
    for flyte in PACKAGES:
        literal = flyte.literals.Literal()
        literal.scalar.generic.fields["a"].list_value.values.add()
        literal_map = build_literal_map(flyte, {"g": literal})
        assert_both_routes_reject(literal_map)
        with pytest.raises(InvalidArgumentError):
            hash_literal_map(literal_map)


@package_ids
def test_unknown_enum_number_is_a_json_number(flyte: Flyte) -> None:
    blob_type = flyte.types.BlobType(dimensionality=7)
    assert marshal_jsonpb(blob_type) == '{"dimensionality":7}'
    assert assert_routes_agree(blob_type) == common_json_hash('{"dimensionality":7}')
    literal = flyte.literals.Literal()
    literal.scalar.blob.metadata.type.dimensionality = 7
    assert json.loads(marshal_jsonpb(literal)) == {
        "scalar": {"blob": {"metadata": {"type": {"dimensionality": 7}}}}
    }
    assert_routes_agree(literal)
    known = flyte.types.BlobType(dimensionality=1)
    assert marshal_jsonpb(known) == '{"dimensionality":"MULTIPART"}'


def test_field_mask_is_an_ordinary_message() -> None:
    mask = field_mask_pb2.FieldMask(paths=["a.b", "c_d"])
    assert marshal_jsonpb(mask) == '{"paths":["a.b","c_d"]}'
    assert assert_routes_agree(mask) == common_json_hash('{"paths":["a.b","c_d"]}')


def _any_of(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@pytest.mark.parametrize("flyte", [FLYTE2, FLYTE1], ids=lambda flyte: flyte.name)
def test_any_with_flyte_message_inlines_fields(flyte: Flyte) -> None:
    literal = flyte.literals.Literal(hash="h")
    literal.scalar.primitive.integer = 3
    packed = _any_of(literal)
    expected = {
        "@type": f"type.googleapis.com/{flyte.name}.core.Literal",
        "scalar": {"primitive": {"integer": "3"}},
        "hash": "h",
    }
    assert json.loads(marshal_jsonpb(packed)) == expected
    assert assert_routes_agree(packed) == common_json_hash(json.dumps(expected))


@pytest.mark.parametrize(
    ("inner", "value"),
    [
        (duration_pb2.Duration(seconds=1), "1s"),
        (timestamp_pb2.Timestamp(seconds=0), "1970-01-01T00:00:00Z"),
        (wrappers_pb2.Int64Value(value=5), "5"),
        (wrappers_pb2.DoubleValue(value=math.inf), "Infinity"),
        (empty_pb2.Empty(), {}),
        (struct_pb2.Struct(fields={"a": struct_pb2.Value(bool_value=True)}), {"a": True}),
    ],
    ids=["duration", "timestamp", "int64value", "doublevalue", "empty", "struct"],
)
def test_any_with_well_known_type_uses_value_form(inner, value) -> None:
    packed = _any_of(inner)
    expected = {"@type": packed.type_url, "value": value}
    assert json.loads(marshal_jsonpb(packed)) == expected
    assert assert_routes_agree(packed) == common_json_hash(json.dumps(expected))


def test_any_of_unknown_type_is_rejected_by_both_routes() -> None:
    assert_both_routes_reject(any_pb2.Any(type_url="type.googleapis.com/no.such.Type"))


@package_ids
def test_other_scalar_texts(flyte: Flyte) -> None:
    binary = flyte.literals.Binary(value=b"\xff\x00", tag="t")
    assert marshal_jsonpb(binary) == '{"value":"/wA=","tag":"t"}'
    assert_routes_agree(binary)
    primitive = flyte.literals.Primitive(float_value=math.nan)
    assert marshal_jsonpb(primitive) == '{"floatValue":"NaN"}'
    assert_routes_agree(primitive)
    void = flyte.literals.Literal()
    void.scalar.none_type.SetInParent()
    assert marshal_jsonpb(void) == '{"scalar":{"noneType":{}}}'
    assert_routes_agree(void)
    large = flyte.literals.Primitive(integer=-(2**63))
    assert marshal_jsonpb(large) == '{"integer":"-9223372036854775808"}'


# ---------------------------------------------------------------------------------------------
# objecthash


def test_normalize_float() -> None:
    assert normalize_float(1.0) == "+0:1"
    assert normalize_float(-0.0) == "+0:"
    assert normalize_float(0.0) == "+0:"
    assert normalize_float(0.5) == "+-1:1"
    assert normalize_float(3.0) == "+2:011"
    assert normalize_float(-3.0) == "-2:011"
    assert normalize_float(2.0) == "+1:1"
    assert hash_float(-0.0) == hash_float(0.0)


def test_common_json_integers_are_doubles() -> None:
    assert common_json_hash('{"a":1}') == common_json_hash('{"a":1.0}')
    assert common_json_hash("[1e2]") == common_json_hash("[100]")
    assert common_json_hash("-0") == common_json_hash("0")


@pytest.mark.parametrize(
    "text", ["NaN", "[NaN]", "Infinity", '{"a":-Infinity}', "1e400", "1" + "0" * 400]
)
def test_common_json_hash_rejects_non_json_numbers(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        common_json_hash(text)


def test_common_json_hash_rejects_negative_overflow() -> None:
    with pytest.raises(InvalidArgumentError):
        common_json_hash('{"a":[-1e400]}')


# benlaurie/objecthash common_json.test
@pytest.mark.parametrize(
    ("text", "hex_digest"),
    [
        ("[]", "acac86c0e609ca906f632b0e2dacccb2b77d22b0621f20ebece1a4835b93f6f0"),
        ('["foo"]', "268bc27d4974d9d576222e4cdbb8f7c6bd6791894098645a19eeca9c102d0964"),
        ('["foo", "bar"]', "32ae896c413cfdc79eec68be9139c86ded8b279238467c216cf2bec4d5f1e4a2"),
        ("{}", "18ac3e7343f016890c510e93f935261169d9e3f565436429830faf0934f4f8e4"),
        ('{"foo": "bar"}', "7ef5237c3027d6c58100afadf37796b3d351025cf28038280147d42fdc53b960"),
        (
            '{"foo": ["bar", "baz"], "qux": ["norf"]}',
            "f1a9389f27558538a064f3cc250f8686a0cebb85f1cab7f4d4dcc416ceda3c92",
        ),
        ("true", "7dc96f776c8423e57a2785489a3f9c43fb6e756876d6ad9a9cac4aa4e72ec193"),
        ("false", "c02c0b965e023abee808f2b548d8d5193a8b5229be6f3121a6f16e2d41a449b3"),
        (
            '["foo", {"bar": ["baz", null, 1.0, 1.5, 0.0001, 1000.0, 2.0, -23.1234, 2.0]}]',
            "783a423b094307bcb28d005bc2f026ff44204442ef3513585e7e73b66e3c2213",
        ),
        (
            '["foo", {"bar": ["baz", null, 1, 1.5, 0.0001, 1000, 2, -23.1234, 2]}]',
            "783a423b094307bcb28d005bc2f026ff44204442ef3513585e7e73b66e3c2213",
        ),
        (
            '{"k2": "v2", "k1": "v1", "k3": "v3"}',
            "ddd65f1f7568269a30df7cafc26044537dc2f02a1a0d830da61762fc3e687057",
        ),
    ],
)
def test_objecthash_common_json_vectors(text: str, hex_digest: str) -> None:
    assert common_json_hash(text).hex() == hex_digest


# ---------------------------------------------------------------------------------------------
# float32 fields: Go prints the shortest float32 text, objecthash reads it as a double

_FLOAT_PACKAGE = "taskcache_test_properties"


def _float_message_classes():
    pool = descriptor_pool.DescriptorPool()
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{_FLOAT_PACKAGE}/floats.proto", package=_FLOAT_PACKAGE, syntax="proto3"
    )
    field_type = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("F32", field_type.TYPE_FLOAT), ("F64", field_type.TYPE_DOUBLE)):
        message = file_proto.message_type.add(name=name)
        message.field.add(name="v", number=1, type=kind, label=field_type.LABEL_OPTIONAL)
        message.field.add(name="vs", number=2, type=kind, label=field_type.LABEL_REPEATED)
    pool.Add(file_proto)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_FLOAT_PACKAGE}.{name}"))
        for name in ("F32", "F64")
    )


F32, F64 = _float_message_classes()


def as_float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def float32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def float32_from_bits(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def shortest_float32_decimal(value: float) -> Decimal:
    """Reference: the shortest decimal that rounds to the float32 ``value`` (> 0, finite),
    the closest to it among equally short ones, ties to even (Go's strconv, bitSize 32)."""
    with localcontext() as context:
        context.prec = 400
        bits = struct.unpack("<I", struct.pack("<f", value))[0]
        exact = Decimal(value)
        below = Decimal(float32_from_bits(bits - 1))
        above_float = float32_from_bits(bits + 1)
        above = exact + (exact - below) if math.isinf(above_float) else Decimal(above_float)
        low, high = (exact + below) / 2, (exact + above) / 2
        inclusive = bits % 2 == 0

        def rounds_back(candidate: Decimal) -> bool:
            if inclusive:
                return low <= candidate <= high
            return low < candidate < high

        for digits in range(1, 10):
            found = []
            for exponent in {low.adjusted(), high.adjusted()}:
                quantum = Decimal(1).scaleb(exponent - digits + 1)
                first = int((low / quantum).to_integral_value(rounding=ROUND_FLOOR))
                last = int((high / quantum).to_integral_value(rounding=ROUND_CEILING))
                for count in range(first, last + 1):
                    candidate = count * quantum
                    if (
                        candidate > 0
                        and rounds_back(candidate)
                        and len(candidate.normalize().as_tuple().digits) <= digits
                    ):
                        found.append(candidate)
            if found:
                # Closest to the exact value; an exact tie goes to the even last digit, as
                # Go's strconv rounds the central value half to even.
                return min(
                    found,
                    key=lambda candidate: (
                        abs(candidate - exact),
                        candidate.normalize().as_tuple().digits[-1] % 2,
                    ),
                )
    raise AssertionError(f"no shortest decimal for {value!r}")


@pytest.mark.parametrize(
    ("stored", "expected_double"),
    [
        (1.3, 1.3),
        (0.1, 0.1),
        (-2.5, -2.5),
        (16777217.0, 16777216.0),  # rounds to float32 2**24
        (3.4028235e38, 3.4028235e38),  # float32 max
        (1e-45, 1e-45),  # smallest float32 subnormal
        (1.0 / 3.0, 0.33333334),
        (1e21, 1e21),
        (1e-7, 1e-7),
        (123456789.0, 123456790.0),
        (2124481.75, 2124481.8),  # tie between 2124481.7 and .8: Go rounds half to even
        (2124481.25, 2124481.2),
        (3119.96875, 3119.9688),
        (3e38, 3e38),
        (-3.4028235e38, -3.4028235e38),
        (math.inf, math.inf),
        (-math.inf, -math.inf),
        (math.nan, math.nan),
    ],
)
def test_float32_hashes_like_its_shortest_text_as_double(
    stored: float, expected_double: float
) -> None:
    float_message = F32(v=stored)
    float_message.vs.extend([stored, stored])
    double_message = F64(v=expected_double)
    double_message.vs.extend([expected_double, expected_double])
    assert assert_routes_agree(float_message) == assert_routes_agree(double_message)


def test_float32_text() -> None:
    assert marshal_jsonpb(F32(v=1.3)) == '{"v":1.3}'
    assert F32(v=1.3).v != 1.3  # stored as float32


def test_negative_zero_double_is_present() -> None:
    # proto3 presence is by bit pattern: -0.0 is written, +0.0 is not.
    assert json.loads(marshal_jsonpb(F64(v=-0.0))) == {"v": 0}
    assert marshal_jsonpb(F64(v=0.0)) == "{}"
    assert assert_routes_agree(F64(v=-0.0)) == common_json_hash('{"v":0}')
    assert assert_routes_agree(F32(v=-0.0)) == common_json_hash('{"v":0}')


@settings(SETTINGS, max_examples=300)
@given(
    bits=st.one_of(
        st.integers(1, 0x7F7F_FFFF),  # every positive finite float32
        st.integers(1, 0x7F).map(lambda exponent: exponent << 23),  # powers of two
        st.integers(1, 0x7FFF),  # subnormals
        st.integers(0x7F00_0000, 0x7F7F_FFFF),  # the top binade, up to float32 max
        # k + 0.25 / k + 0.75 with ulp 0.25: two equally close shortest decimals (a tie)
        st.tuples(st.integers(2**21, 2**22 - 1), st.sampled_from([0.25, 0.75])).map(
            lambda pair: float32_bits(pair[0] + pair[1])
        ),
    ),
    negative=st.booleans(),
)
def test_float32_as_json_double_matches_shortest_reference(bits: int, negative: bool) -> None:
    value = float32_from_bits(bits)
    expected = float(shortest_float32_decimal(value))
    assert as_float32(expected) == value
    sign = -1.0 if negative else 1.0
    assert float32_as_json_double(sign * value) == sign * expected
    assert assert_routes_agree(F32(v=sign * value)) == assert_routes_agree(F64(v=sign * expected))


# ---------------------------------------------------------------------------------------------
# Strategy sanity: the generators produce what the properties rely on


@FEW
@given(pair=literal_map_pairs(depth=2))
def test_flyte1_conversion_keeps_every_field(pair) -> None:
    flyte2_map, flyte1_map = pair
    back = FLYTE2.literals.LiteralMap.FromString(flyte1_map.SerializeToString())
    assert back.SerializeToString(deterministic=True) == flyte2_map.SerializeToString(
        deterministic=True
    )


@FEW
@given(value=struct_values(depth=3))
def test_struct_values_always_have_a_kind(value) -> None:
    pending = [value]
    while pending:
        current = pending.pop()
        kind = current.WhichOneof("kind")
        assert kind is not None
        if kind == "struct_value":
            pending.extend(current.struct_value.fields.values())
        elif kind == "list_value":
            pending.extend(current.list_value.values)
