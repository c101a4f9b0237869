"""Flyte's published cache-key values, reproduced by taskcache.hashing.

Sources: flytepropeller's catalog hashing tests (literal maps, identifiers, dataset versions)
and flytestdlib's pbhash tests (ComputeHash of a small proto3 message).
"""

from __future__ import annotations

import base64

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
)

from strategies import FLYTE1, FLYTE2, PACKAGES, Flyte
from taskcache.errors import InvalidArgumentError
from taskcache.hashing import (
    cache_key,
    compute_hash,
    datacatalog_artifact_tag,
    datacatalog_dataset_version,
    hash_identifier_except_version,
    hash_literal_map,
    interface_signature_hash,
)
from taskcache.hashing.jsonpb import pbhash_via_json
from taskcache.model import Key

EMPTY_HASH = "GKw-c0PwFokMUQ6T-TUmEWnZ4_VlQ2Qpgw-vCTT0-OQ"
INPUTS_1_2_HASH = "GQid5LjHbakcW68DS3P2jp80QLbiF0olFHF2hTh5bg8"
IDENTIFIER_HASH = "+UmrGhEwHv3FesdpA4gliBluF3FUXz4tshmuOlw1FSk="
INPUTS_1_2_SIGNATURE = "UxVtPm0k"
EMPTY_SIGNATURE = "GKw-c0Pw"

package_ids = pytest.mark.parametrize("flyte", PACKAGES, ids=lambda flyte: flyte.name)


def integer_literal(flyte: Flyte, value: int):
    literal = flyte.literals.Literal()
    literal.scalar.primitive.integer = value
    return literal


def integer_map(flyte: Flyte, names: list[str]):
    literal_map = flyte.literals.LiteralMap()
    for name in names:
        literal_map.literals[name].CopyFrom(integer_literal(flyte, int(name)))
    return literal_map


def identifier(flyte: Flyte, version: str):
    return flyte.identifier.Identifier(
        project="project_1", domain="domain_1", name="name_1", version=version, org="org_1"
    )


def integer_variable(flyte: Flyte):
    variable = flyte.interface.Variable()
    variable.type.simple = flyte.types.INTEGER
    return variable


def interface_with_inputs(flyte: Flyte, names: list[str]):
    interface = flyte.interface.TypedInterface()
    interface.inputs.SetInParent()
    for name in names:
        if flyte.is_flyte2:
            interface.inputs.variables.add(key=name).value.CopyFrom(integer_variable(flyte))
        else:
            interface.inputs.variables[name].CopyFrom(integer_variable(flyte))
    return interface


# ---------------------------------------------------------------------------------------------
# HashLiteralMap


@package_ids
def test_literal_map_of_two_integers(flyte: Flyte) -> None:
    assert hash_literal_map(integer_map(flyte, ["1", "2"])) == INPUTS_1_2_HASH


@package_ids
def test_literal_map_ignores_cache_ignore_input_vars(flyte: Flyte) -> None:
    assert hash_literal_map(integer_map(flyte, ["1", "2", "3"]), ["3"]) == INPUTS_1_2_HASH
    assert hash_literal_map(integer_map(flyte, ["3", "1", "2"]), ("3",)) == INPUTS_1_2_HASH


@package_ids
def test_literal_map_insertion_order_is_irrelevant(flyte: Flyte) -> None:
    assert hash_literal_map(integer_map(flyte, ["2", "1"])) == INPUTS_1_2_HASH


@package_ids
def test_literal_map_three_integers_differs_without_ignore(flyte: Flyte) -> None:
    assert hash_literal_map(integer_map(flyte, ["1", "2", "3"])) != INPUTS_1_2_HASH


def test_literal_map_none_hashes_as_empty() -> None:
    assert hash_literal_map(None) == EMPTY_HASH


@package_ids
def test_literal_map_empty(flyte: Flyte) -> None:
    assert hash_literal_map(flyte.literals.LiteralMap()) == EMPTY_HASH


@package_ids
def test_literal_map_all_ignored_hashes_as_empty(flyte: Flyte) -> None:
    assert hash_literal_map(integer_map(flyte, ["1", "2"]), ["1", "2"]) == EMPTY_HASH


# ---------------------------------------------------------------------------------------------
# HashIdentifierExceptVersion


@package_ids
def test_identifier_hash(flyte: Flyte) -> None:
    assert hash_identifier_except_version(identifier(flyte, "0")) == IDENTIFIER_HASH


@package_ids
def test_identifier_hash_ignores_version(flyte: Flyte) -> None:
    assert hash_identifier_except_version(identifier(flyte, "1")) == IDENTIFIER_HASH


# ---------------------------------------------------------------------------------------------
# Flyte 1 datacatalog dataset version


@pytest.mark.parametrize(
    "interface",
    [
        FLYTE1.interface.TypedInterface(),
        FLYTE1.interface.TypedInterface(inputs=FLYTE1.interface.VariableMap()),
        FLYTE1.interface.TypedInterface(outputs=FLYTE1.interface.VariableMap()),
        FLYTE1.interface.TypedInterface(
            inputs=FLYTE1.interface.VariableMap(), outputs=FLYTE1.interface.VariableMap()
        ),
    ],
    ids=["nil-both", "empty-inputs", "empty-outputs", "empty-both"],
)
def test_dataset_version_of_empty_interface(interface) -> None:
    assert datacatalog_dataset_version(interface, "1.0.0") == "1.0.0-GKw-c0Pw-GKw-c0Pw"


@pytest.mark.parametrize("names", [["1", "2"], ["2", "1"]], ids=["1-2", "2-1"])
def test_dataset_version_with_two_integer_inputs(names: list[str]) -> None:
    interface = interface_with_inputs(FLYTE1, names)
    assert datacatalog_dataset_version(interface, "1.0.0") == "1.0.0-UxVtPm0k-GKw-c0Pw"


def test_dataset_version_trims_spaces() -> None:
    interface = FLYTE1.interface.TypedInterface()
    assert datacatalog_dataset_version(interface, "  1.0.0  ") == "1.0.0-GKw-c0Pw-GKw-c0Pw"


def test_dataset_version_keeps_tab_and_newline() -> None:
    interface = FLYTE1.interface.TypedInterface()
    assert datacatalog_dataset_version(interface, "\t1.0\n") == "\t1.0\n-GKw-c0Pw-GKw-c0Pw"


def test_dataset_version_rejects_blank_cache_version() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        datacatalog_dataset_version(FLYTE1.interface.TypedInterface(), "   ")
    assert caught.value.field == "cache_version"


def test_dataset_version_rejects_empty_cache_version() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        datacatalog_dataset_version(FLYTE1.interface.TypedInterface(), "")
    assert caught.value.field == "cache_version"


# ---------------------------------------------------------------------------------------------
# pbhash.ComputeHash (flytestdlib's TestProto)

_GOLDEN_PACKAGE = "taskcache_test_golden"


def _golden_message_class():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(duration_pb2.DESCRIPTOR.serialized_pb)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=f"{_GOLDEN_PACKAGE}/test_proto.proto",
        package=_GOLDEN_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"],
    )
    message = file_proto.message_type.add(name="TestProto")
    field_type = descriptor_pb2.FieldDescriptorProto
    optional = field_type.LABEL_OPTIONAL
    scalars = [
        ("integer", 1, field_type.TYPE_INT64, ""),
        ("float_value", 2, field_type.TYPE_DOUBLE, ""),
        ("string_value", 3, field_type.TYPE_STRING, ""),
        ("boolean", 4, field_type.TYPE_BOOL, ""),
        ("datetime", 5, field_type.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        ("duration", 6, field_type.TYPE_MESSAGE, ".google.protobuf.Duration"),
    ]
    for name, number, kind, type_name in scalars:
        field = message.field.add(name=name, number=number, type=kind, label=optional)
        if type_name:
            field.type_name = type_name
    entry = message.nested_type.add(name="MapValueEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field_type.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=field_type.TYPE_STRING, label=optional)
    message.field.add(
        name="map_value",
        number=7,
        type=field_type.TYPE_MESSAGE,
        label=field_type.LABEL_REPEATED,
        type_name=f".{_GOLDEN_PACKAGE}.TestProto.MapValueEntry",
    )
    message.field.add(
        name="collections",
        number=8,
        type=field_type.TYPE_STRING,
        label=field_type.LABEL_REPEATED,
    )
    pool.Add(file_proto)
    descriptor = pool.FindMessageTypeByName(f"{_GOLDEN_PACKAGE}.TestProto")
    return message_factory.GetMessageClass(descriptor)


GoldenProto = _golden_message_class()


def _std_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _basic_test_proto():
    return GoldenProto(integer=18, float_value=1.3, string_value="lets test this", boolean=True)


def test_compute_hash_of_scalar_fields() -> None:
    message = _basic_test_proto()
    assert _std_b64(compute_hash(message)) == "GhPMTKvJfUPHK8U3vEmoi/wdVBx7IQSPqyjGXAZzquI="


def test_pbhash_via_json_of_scalar_fields() -> None:
    message = _basic_test_proto()
    assert _std_b64(pbhash_via_json(message)) == "GhPMTKvJfUPHK8U3vEmoi/wdVBx7IQSPqyjGXAZzquI="


def _full_test_proto():
    message = _basic_test_proto()
    message.datetime.seconds = 1553860800  # 2019-03-29T12:00:00Z
    message.duration.nanos = 1_000_000  # 1 ms
    message.map_value["z"] = "last"
    message.map_value["a"] = "first"
    message.collections.extend(["1", "2", "3"])
    return message


def test_compute_hash_of_all_fields() -> None:
    message = _full_test_proto()
    assert _std_b64(compute_hash(message)) == "YpWyLCP1NW0DVk3Hj64tK70H/9t+5fQlj7yyDK2lSEQ="


def test_pbhash_via_json_of_all_fields() -> None:
    message = _full_test_proto()
    assert _std_b64(pbhash_via_json(message)) == "YpWyLCP1NW0DVk3Hj64tK70H/9t+5fQlj7yyDK2lSEQ="


# ---------------------------------------------------------------------------------------------
# Artifact tag and cache key


@package_ids
def test_artifact_tag(flyte: Flyte) -> None:
    assert datacatalog_artifact_tag(integer_map(flyte, ["1", "2"])) == (
        "flyte_cached-" + INPUTS_1_2_HASH
    )
    assert datacatalog_artifact_tag(integer_map(flyte, ["1", "2", "3"]), ["3"]) == (
        "flyte_cached-" + INPUTS_1_2_HASH
    )
    assert datacatalog_artifact_tag(None) == "flyte_cached-" + EMPTY_HASH


class CountingReader:
    """An InputReader that counts its calls."""

    def __init__(self, inputs) -> None:
        self.inputs = inputs
        self.calls = 0

    def get(self):
        self.calls += 1
        return self.inputs


def test_cache_key_of_flyte1_messages_is_fully_determined() -> None:
    key = Key(
        identifier(FLYTE1, "7"),
        "1.0.0",
        interface_with_inputs(FLYTE1, ["1", "2"]),
        inputs=integer_map(FLYTE1, ["1", "2"]),
    )
    assert cache_key(key) == (
        f"{IDENTIFIER_HASH}-{INPUTS_1_2_SIGNATURE}-{EMPTY_SIGNATURE}-{INPUTS_1_2_HASH}-1.0.0"
    )


@package_ids
def test_cache_key_format(flyte: Flyte) -> None:
    interface = interface_with_inputs(flyte, ["1", "2"])
    interface.outputs.CopyFrom(interface.inputs)
    key = Key(identifier(flyte, "3"), "v1", interface, inputs=integer_map(flyte, ["1", "2"]))
    signature = interface_signature_hash(interface)
    in8, out8 = signature.split("-")
    assert len(in8) == len(out8) == 8
    assert in8 == out8
    assert cache_key(key) == f"{IDENTIFIER_HASH}-{in8}-{out8}-{INPUTS_1_2_HASH}-v1"


@package_ids
def test_cache_key_without_inputs_field_never_reads_inputs(flyte: Flyte) -> None:
    reader = CountingReader(integer_map(flyte, ["1", "2"]))
    interface = flyte.interface.TypedInterface()
    interface.outputs.CopyFrom(interface_with_inputs(flyte, ["1"]).inputs)
    key = Key(identifier(flyte, "0"), "v", interface, inputs=reader)
    expected = f"{IDENTIFIER_HASH}-{interface_signature_hash(interface)}-{EMPTY_HASH}-v"
    assert cache_key(key) == expected
    assert cache_key(key) == expected
    assert reader.calls == 0


@package_ids
def test_cache_key_reads_inputs_once_with_empty_inputs_field(flyte: Flyte) -> None:
    reader = CountingReader(integer_map(flyte, ["1", "2"]))
    interface = flyte.interface.TypedInterface()
    interface.inputs.SetInParent()  # present but without variables
    key = Key(identifier(flyte, "0"), "v", interface, inputs=reader)
    expected = f"{IDENTIFIER_HASH}-{EMPTY_SIGNATURE}-{EMPTY_SIGNATURE}-{INPUTS_1_2_HASH}-v"
    assert cache_key(key) == expected
    assert cache_key(key) == expected
    assert cache_key(key) == expected
    assert reader.calls == 1


@package_ids
def test_cache_key_reads_inputs_once(flyte: Flyte) -> None:
    reader = CountingReader(integer_map(flyte, ["1", "2", "3"]))
    interface = interface_with_inputs(flyte, ["1", "2", "3"])
    key = Key(identifier(flyte, "0"), "v", interface, inputs=reader)
    first = cache_key(key)
    assert cache_key(key) == first
    assert reader.calls == 1
    assert first.endswith(f"-{hash_literal_map(integer_map(flyte, ['1', '2', '3']))}-v")


@package_ids
def test_cache_key_applies_cache_ignore_input_vars(flyte: Flyte) -> None:
    interface = interface_with_inputs(flyte, ["1", "2", "3"])
    reader = CountingReader(integer_map(flyte, ["1", "2", "3"]))
    key = Key(identifier(flyte, "0"), "v", interface, inputs=reader, cache_ignore_input_vars=["3"])
    signature = interface_signature_hash(interface)
    assert cache_key(key) == f"{IDENTIFIER_HASH}-{signature}-{INPUTS_1_2_HASH}-v"
    assert reader.calls == 1


@package_ids
def test_cache_key_with_literal_map_inputs_and_none(flyte: Flyte) -> None:
    interface = interface_with_inputs(flyte, ["1", "2"])
    signature = interface_signature_hash(interface)
    with_map = Key(identifier(flyte, "0"), "v", interface, inputs=integer_map(flyte, ["2", "1"]))
    assert cache_key(with_map) == f"{IDENTIFIER_HASH}-{signature}-{INPUTS_1_2_HASH}-v"
    without = Key(identifier(flyte, "0"), "v", interface, inputs=None)
    assert cache_key(without) == f"{IDENTIFIER_HASH}-{signature}-{EMPTY_HASH}-v"


def test_flyte2_signature_of_integer_inputs_differs_from_flyte1() -> None:
    # Flyte 2 VariableMaps are lists of entries, so their JSON (and hash) differ from Flyte 1's.
    flyte1 = interface_signature_hash(interface_with_inputs(FLYTE1, ["1", "2"]))
    flyte2 = interface_signature_hash(interface_with_inputs(FLYTE2, ["1", "2"]))
    assert flyte1 == f"{INPUTS_1_2_SIGNATURE}-{EMPTY_SIGNATURE}"
    assert flyte2 != flyte1
