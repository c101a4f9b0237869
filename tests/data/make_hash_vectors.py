"""Regenerate ``tests/data/hash_vectors.json`` from a Go oracle.

Usage::

    .venv/bin/python tests/data/make_hash_vectors.py /path/to/oracle [--out FILE]

The oracle is a small Go program (not kept in this repository; see
``tests/data/README.md`` for how to rebuild it) that computes Flyte's
``pbhash.ComputeHash``: ``github.com/golang/protobuf/jsonpb`` ``Marshaler{}``
followed by ``objecthash.CommonJSONHash``.

This script builds protobuf messages deterministically (a fixed
``random.Random`` seed plus hand-picked edge cases), writes every ``.proto``
file they need into a ``FileDescriptorSet`` for the oracle, sends the
serialized messages to the oracle as JSON lines, and records what the oracle
answered.  It refuses to write anything if the oracle does not reproduce the
hash values published by Flyte.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from flyteidl.core import artifact_id_pb2 as artifact_id_v1
from flyteidl.core import identifier_pb2 as identifier_v1
from flyteidl.core import interface_pb2 as interface_v1
from flyteidl.core import literals_pb2 as literals_v1
from flyteidl.core import types_pb2 as types_v1
from flyteidl2.core import artifact_id_pb2 as artifact_id_v2
from flyteidl2.core import identifier_pb2 as identifier_v2
from flyteidl2.core import interface_pb2 as interface_v2
from flyteidl2.core import literals_pb2 as literals_v2
from flyteidl2.core import types_pb2 as types_v2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
)
from google.protobuf.message import Message

SEED = 20240611
ORACLE_DESCRIPTION = "golang/protobuf jsonpb v1.5.2 (Debian) + objecthash reimplementation, Go 1.19"
GENERATOR = "tests/data/make_hash_vectors.py"

N_LITERAL_MAPS = 200  # per flavour (flyteidl2 and flyteidl)
N_IDENTIFIERS = 50  # per flavour
N_INTERFACES = 50  # per flavour
MAX_DEPTH = 4

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)


@dataclass(frozen=True)
class Flavour:
    """The generated modules of one IDL generation (flyteidl2 or flyteidl)."""

    name: str
    lits: ModuleType  # literals_pb2
    typs: ModuleType  # types_pb2
    ids: ModuleType  # identifier_pb2
    ifaces: ModuleType  # interface_pb2
    arts: ModuleType  # artifact_id_pb2
    v2: bool


V2 = Flavour(
    "flyteidl2",
    literals_v2,
    types_v2,
    identifier_v2,
    interface_v2,
    artifact_id_v2,
    v2=True,
)
V1 = Flavour(
    "flyteidl",
    literals_v1,
    types_v1,
    identifier_v1,
    interface_v1,
    artifact_id_v1,
    v2=False,
)
FLAVOURS = (V2, V1)

# --------------------------------------------------------------------------
# Edge values
# --------------------------------------------------------------------------

INTEGERS = [
    0,
    1,
    -1,
    42,
    INT64_MAX,
    INT64_MIN,
    INT64_MAX - 1,
    INT64_MIN + 1,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    2**31,
    INT32_MIN,
]

FLOATS = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    1.5,
    0.1,
    -0.1,
    1.3,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1e21,
    1e20,
    1e-6,
    1e-7,
    123456789.125,
    3.0,
    2.0**53,
    2.0**53 + 2,
    2.0**64,
    1 / 3,
    math.pi,
    math.nan,
    math.inf,
    -math.inf,
]

STRINGS = [
    "",
    "a",
    "hello world",
    "lets test this",
    "é",
    "e\u0301",  # e + combining acute
    "\u00c5ngstr\u00f6m",
    "A\u030a",  # A + combining ring
    "\U0001f389",  # party popper (non-BMP)
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # ZWJ family
    "\u4e2d\u6587",
    "\u0639\u0631\u0628\u064a",
    "<script>&amp;</script>",
    '"quoted" \\ back\\slash /',
    "line\nbreak\ttab\rcr",
    "\x00\x01\x1f\x7f",
    "\u2028\u2029",
    "\ufeffbom",
    "\uffff\ufffd",
    "\U0010ffff",
    " leading and trailing ",
    "1",
    "-0",
    "NaN",
    "null",
    "true",
    "x" * 300,
]

# (seconds, nanos); all valid for jsonpb (nanos in [0, 1e9)).
TIMESTAMPS = [
    (0, 0),
    (0, 1),
    (0, 1000),
    (0, 1000000),
    (0, 999999999),
    (-1, 0),
    (-1, 999999999),
    (1553860800, 0),  # 2019-03-29T12:00:00Z
    (1553860800, 123456789),
    (1700000000, 120000000),
    (-62135596800, 0),  # 0001-01-01T00:00:00Z
    (-62135596801, 0),  # 0000-12-31T23:59:59Z
    (-62167219200, 0),  # 0000-01-01T00:00:00Z
    (-62167219201, 500),  # -0001-12-31T23:59:59...
    (-100000000000, 0),
    (253402300799, 999999999),  # 9999-12-31T23:59:59.999999999Z
    (253402300800, 0),  # 10000-01-01T00:00:00Z
    (253402300800, 1000),
    (3155760000000, 0),  # year 101972
    (10**15, 0),
    (-(10**15), 1),
    (INT64_MAX, 0),
    (INT64_MIN, 0),
    (INT64_MIN + 62135596800, 0),
]

# (seconds, nanos); all valid for jsonpb.
DURATIONS = [
    (0, 0),
    (1, 0),
    (-1, 0),
    (0, 1),
    (0, -1),
    (0, 500),
    (0, 1000),
    (0, 1000000),
    (0, -999999999),
    (3600, 5),
    (-3600, -5000),
    (86400 * 365, 123000000),
    (315576000000, 999999999),
    (-315576000000, -999999999),
]

BAD_TIMESTAMPS = [(5, -1), (5, 10**9), (0, INT32_MIN), (0, INT32_MAX)]
BAD_DURATIONS = [(1, -1), (-1, 1), (315576000001, 0), (-315576000001, 0), (0, 10**9), (0, -(10**9))]

ENUM_VALUES = [0, 1, 2, 3, 7, 42, -1, INT32_MAX, INT32_MIN]

# --------------------------------------------------------------------------
# Random builders
# --------------------------------------------------------------------------

_CODEPOINT_RANGES = [
    (0x20, 0x7E),
    (0x20, 0x7E),
    (0x20, 0x7E),
    (0x00, 0x1F),
    (0xA0, 0x24F),
    (0x300, 0x36F),  # combining marks
    (0x370, 0x3FF),
    (0x4E00, 0x4FFF),
    (0xE000, 0xE0FF),  # private use
    (0xFFF0, 0xFFFF),
    (0x1F300, 0x1F64F),  # emoji
    (0x10000, 0x10FFFF),
]


def rand_str(rng: random.Random, *, max_len: int = 12) -> str:
    if rng.random() < 0.3:
        return rng.choice(STRINGS)
    n = rng.randint(0, max_len)
    out = []
    for _ in range(n):
        lo, hi = rng.choice(_CODEPOINT_RANGES)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0x41
        out.append(chr(cp))
    return "".join(out)


def rand_ident(rng: random.Random) -> str:
    """A plain-ish identifier (keys, names)."""
    if rng.random() < 0.25:
        return rand_str(rng, max_len=8)
    alphabet = "abcdefghijklmnopqrstuvwxyz_0123456789"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))


def rand_float(rng: random.Random) -> float:
    r = rng.random()
    if r < 0.45:
        return rng.choice(FLOATS)
    if r < 0.6:
        return float(rng.randint(-(10**6), 10**6))
    if r < 0.8:
        return rng.uniform(-1e6, 1e6)
    # any bit pattern (NaN payloads, subnormals and infinities included)
    return float(struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0])


def rand_int(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.4:
        return rng.choice(INTEGERS)
    if r < 0.7:
        return rng.randint(-1000, 1000)
    return rng.randint(INT64_MIN, INT64_MAX)


def rand_bytes(rng: random.Random) -> bytes:
    if rng.random() < 0.2:
        return b""
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 24)))


def rand_enum(rng: random.Random, n_known: int) -> int:
    if rng.random() < 0.8:
        return rng.randrange(n_known)
    return rng.choice(ENUM_VALUES)


def fill_struct_value(rng: random.Random, v: struct_pb2.Value, depth: int) -> None:
    kinds = ["null", "number", "string", "bool"]
    if depth < MAX_DEPTH:
        kinds += ["struct", "list"]
    kind = rng.choice(kinds)
    if kind == "null":
        v.null_value = struct_pb2.NULL_VALUE
    elif kind == "number":
        v.number_value = rand_float(rng)
    elif kind == "string":
        v.string_value = rand_str(rng)
    elif kind == "bool":
        v.bool_value = rng.random() < 0.5
    elif kind == "struct":
        fill_struct(rng, v.struct_value, depth + 1)
    else:
        v.list_value.SetInParent()
        for _ in range(rng.randint(0, 4)):
            fill_struct_value(rng, v.list_value.values.add(), depth + 1)


def fill_struct(rng: random.Random, s: struct_pb2.Struct, depth: int) -> None:
    s.SetInParent()
    for _ in range(rng.randint(0, 4)):
        fill_struct_value(rng, s.fields[rand_ident(rng)], depth + 1)


def rand_blob_type(rng: random.Random, fl: Flavour) -> Message:
    bt = fl.typs.BlobType()
    if rng.random() < 0.8:
        bt.format = rng.choice(["", "csv", "parquet", "PythonPickle", rand_str(rng)])
    bt.dimensionality = rand_enum(rng, 2)
    return bt


def rand_schema_type(rng: random.Random, fl: Flavour) -> Message:
    st = fl.typs.SchemaType()
    for _ in range(rng.randint(0, 3)):
        st.columns.add(name=rand_ident(rng), type=rand_enum(rng, 6))
    return st


def rand_sd_type(rng: random.Random, fl: Flavour, depth: int) -> Message:
    sdt = fl.typs.StructuredDatasetType()
    for _ in range(rng.randint(0, 3)):
        col = sdt.columns.add(name=rand_ident(rng))
        if rng.random() < 0.9:
            col.literal_type.CopyFrom(rand_literal_type(rng, fl, depth + 1))
    if rng.random() < 0.7:
        sdt.format = rng.choice(["parquet", "csv", "", rand_str(rng)])
    if rng.random() < 0.3:
        sdt.external_schema_type = rng.choice(["arrow", rand_str(rng)])
    if rng.random() < 0.3:
        sdt.external_schema_bytes = rand_bytes(rng)
    return sdt


def rand_literal_type(rng: random.Random, fl: Flavour, depth: int) -> Message:
    lt = fl.typs.LiteralType()
    kinds = ["simple", "simple", "simple", "schema", "blob", "enum", "none"]
    if depth < MAX_DEPTH:
        kinds += ["collection", "map", "sd", "union"]
    kind = rng.choice(kinds)
    if kind == "simple":
        lt.simple = rand_enum(rng, 10)
    elif kind == "schema":
        lt.schema.CopyFrom(rand_schema_type(rng, fl))
    elif kind == "blob":
        lt.blob.CopyFrom(rand_blob_type(rng, fl))
    elif kind == "enum":
        lt.enum_type.SetInParent()
        lt.enum_type.values.extend(rand_ident(rng) for _ in range(rng.randint(0, 4)))
    elif kind == "collection":
        lt.collection_type.CopyFrom(rand_literal_type(rng, fl, depth + 1))
    elif kind == "map":
        lt.map_value_type.CopyFrom(rand_literal_type(rng, fl, depth + 1))
    elif kind == "sd":
        lt.structured_dataset_type.CopyFrom(rand_sd_type(rng, fl, depth + 1))
    elif kind == "union":
        lt.union_type.SetInParent()
        for _ in range(rng.randint(0, 3)):
            lt.union_type.variants.add().CopyFrom(rand_literal_type(rng, fl, depth + 1))
    if rng.random() < 0.2:
        fill_struct(rng, lt.metadata, depth + 1)
    if rng.random() < 0.15:
        lt.annotation.SetInParent()
        if rng.random() < 0.8:
            fill_struct(rng, lt.annotation.annotations, depth + 1)
    if rng.random() < 0.15:
        lt.structure.SetInParent()
        if rng.random() < 0.7:
            lt.structure.tag = rand_ident(rng)
        if depth < MAX_DEPTH:
            for _ in range(rng.randint(0, 2)):
                lt.structure.dataclass_type[rand_ident(rng)].CopyFrom(
                    rand_literal_type(rng, fl, depth + 1)
                )
    return lt


def rand_timestamp(rng: random.Random) -> timestamp_pb2.Timestamp:
    if rng.random() < 0.5:
        s, ns = rng.choice(TIMESTAMPS)
    else:
        s = rng.randint(-62135596800, 253402300799)
        ns = rng.choice([0, 0, 1000, 1000000, rng.randrange(10**9)])
    return timestamp_pb2.Timestamp(seconds=s, nanos=ns)


def rand_duration(rng: random.Random) -> duration_pb2.Duration:
    if rng.random() < 0.5:
        s, ns = rng.choice(DURATIONS)
    else:
        s = rng.randint(0, 10**7)
        ns = rng.choice([0, 1000, 1000000, rng.randrange(10**9)])
        if rng.random() < 0.3:
            s, ns = -s, -ns
    return duration_pb2.Duration(seconds=s, nanos=ns)


def rand_primitive(rng: random.Random, fl: Flavour) -> Message:
    p = fl.lits.Primitive()
    kind = rng.choice(["integer", "float", "string", "boolean", "datetime", "duration"])
    if kind == "integer":
        p.integer = rand_int(rng)
    elif kind == "float":
        p.float_value = rand_float(rng)
    elif kind == "string":
        p.string_value = rand_str(rng)
    elif kind == "boolean":
        p.boolean = rng.random() < 0.5
    elif kind == "datetime":
        p.datetime.CopyFrom(rand_timestamp(rng))
    else:
        p.duration.CopyFrom(rand_duration(rng))
    return p


def rand_uri(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return rand_str(rng)
    return rng.choice(["s3://", "gs://", "file:///", "abfs://", ""]) + "/".join(
        rand_ident(rng) for _ in range(rng.randint(0, 4))
    )


def rand_scalar(rng: random.Random, fl: Flavour, depth: int) -> Message:
    sc = fl.lits.Scalar()
    kinds = [
        "primitive",
        "primitive",
        "primitive",
        "blob",
        "binary",
        "schema",
        "none",
        "error",
        "generic",
        "sd",
    ]
    if depth < MAX_DEPTH:
        kinds.append("union")
    kind = rng.choice(kinds)
    if kind == "primitive":
        sc.primitive.CopyFrom(rand_primitive(rng, fl))
    elif kind == "blob":
        sc.blob.SetInParent()
        if rng.random() < 0.9:
            sc.blob.uri = rand_uri(rng)
        if rng.random() < 0.85:
            sc.blob.metadata.SetInParent()
            if rng.random() < 0.9:
                sc.blob.metadata.type.CopyFrom(rand_blob_type(rng, fl))
    elif kind == "binary":
        sc.binary.SetInParent()
        sc.binary.value = rand_bytes(rng)
        if rng.random() < 0.6:
            sc.binary.tag = rng.choice(["msgpack", "", rand_str(rng)])
    elif kind == "schema":
        sc.schema.SetInParent()
        if rng.random() < 0.9:
            sc.schema.uri = rand_uri(rng)
        if rng.random() < 0.8:
            sc.schema.type.CopyFrom(rand_schema_type(rng, fl))
    elif kind == "none":
        sc.none_type.SetInParent()
    elif kind == "error":
        sc.error.SetInParent()
        if rng.random() < 0.8:
            sc.error.failed_node_id = rand_ident(rng)
        if rng.random() < 0.8:
            sc.error.message = rand_str(rng, max_len=40)
    elif kind == "generic":
        fill_struct(rng, sc.generic, depth)
    elif kind == "sd":
        sc.structured_dataset.SetInParent()
        if rng.random() < 0.9:
            sc.structured_dataset.uri = rand_uri(rng)
        if rng.random() < 0.8:
            sc.structured_dataset.metadata.SetInParent()
            if rng.random() < 0.9:
                sc.structured_dataset.metadata.structured_dataset_type.CopyFrom(
                    rand_sd_type(rng, fl, depth + 1)
                )
    else:
        sc.union.SetInParent()
        if rng.random() < 0.9:
            sc.union.value.CopyFrom(rand_literal(rng, fl, depth + 1))
        if rng.random() < 0.9:
            sc.union.type.CopyFrom(rand_literal_type(rng, fl, depth + 1))
    return sc


def rand_artifact_key(rng: random.Random, fl: Flavour) -> Message:
    k = fl.arts.ArtifactKey()
    for f in ("project", "domain", "name", "org"):
        if rng.random() < 0.7:
            setattr(k, f, rand_ident(rng))
    return k


def rand_literal(rng: random.Random, fl: Flavour, depth: int) -> Message:
    lit = fl.lits.Literal()
    kinds = ["scalar"] * 6 + ["offloaded", "empty"]
    if depth < MAX_DEPTH:
        kinds += ["collection", "collection", "map", "map"]
    kind = rng.choice(kinds)
    if kind == "scalar":
        lit.scalar.CopyFrom(rand_scalar(rng, fl, depth))
    elif kind == "collection":
        lit.collection.SetInParent()
        for _ in range(rng.randint(0, 4)):
            lit.collection.literals.add().CopyFrom(rand_literal(rng, fl, depth + 1))
    elif kind == "map":
        lit.map.CopyFrom(rand_literal_map(rng, fl, depth + 1, max_entries=4))
    elif kind == "offloaded":
        om = lit.offloaded_metadata
        om.SetInParent()
        if rng.random() < 0.9:
            om.uri = rand_uri(rng)
        if rng.random() < 0.8:
            om.size_bytes = rng.choice([0, 1, 1024, 2**53 + 1, UINT64_MAX, rng.getrandbits(64)])
        if rng.random() < 0.7:
            om.inferred_type.CopyFrom(rand_literal_type(rng, fl, depth + 1))
    # "empty": no value at all
    if rng.random() < 0.15 or kind == "empty":
        lit.hash = rng.choice(["", "abc", "0" * 64, rand_str(rng)])
    if rng.random() < 0.12:
        for _ in range(rng.randint(0, 3)):
            lit.metadata[rand_ident(rng)] = rand_str(rng)
    if fl.v2 and rng.random() < 0.05:
        lit.artifact_id.SetInParent()
        if rng.random() < 0.8:
            lit.artifact_id.key.CopyFrom(rand_artifact_key(rng, fl))
        if rng.random() < 0.8:
            lit.artifact_id.version = rand_ident(rng)
    return lit


def rand_literal_map(
    rng: random.Random, fl: Flavour, depth: int, *, max_entries: int = 6
) -> Message:
    lm = fl.lits.LiteralMap()
    for _ in range(rng.randint(0, max_entries)):
        lm.literals[rand_ident(rng)].CopyFrom(rand_literal(rng, fl, depth + 1))
    return lm


def rand_identifier(rng: random.Random, fl: Flavour) -> Message:
    ident = fl.ids.Identifier()
    if rng.random() < 0.8:
        ident.resource_type = rand_enum(rng, 5)
    for f in ("project", "domain", "name", "version", "org"):
        r = rng.random()
        if r < 0.6:
            setattr(ident, f, rand_ident(rng))
        elif r < 0.8:
            setattr(ident, f, rand_str(rng))
    return ident


def rand_label_value(rng: random.Random, fl: Flavour) -> Message:
    lv = fl.arts.LabelValue()
    kind = rng.choice(["static", "time", "triggered", "input", "runtime", "empty"])
    if kind == "static":
        lv.static_value = rand_str(rng)
    elif kind == "time":
        lv.time_value.CopyFrom(rand_timestamp(rng))
    elif kind == "triggered":
        tb = lv.triggered_binding
        tb.SetInParent()
        if rng.random() < 0.5:
            tb.partition_key = rand_ident(rng)
        else:
            tb.bind_to_time_partition = rng.random() < 0.5
        if rng.random() < 0.5:
            tb.time_transform.SetInParent()
            tb.time_transform.transform = rand_ident(rng)
            tb.time_transform.op = rand_enum(rng, 2)
    elif kind == "input":
        lv.input_binding.SetInParent()
        if rng.random() < 0.8:
            lv.input_binding.var = rand_ident(rng)
    elif kind == "runtime":
        lv.runtime_binding.SetInParent()
    return lv


def rand_variable(rng: random.Random, fl: Flavour) -> Message:
    var = fl.ifaces.Variable()
    if rng.random() < 0.9:
        var.type.CopyFrom(rand_literal_type(rng, fl, 1))
    if rng.random() < 0.6:
        var.description = rand_str(rng, max_len=30)
    if rng.random() < 0.1:
        ap = var.artifact_partial_id
        ap.SetInParent()
        if rng.random() < 0.8:
            ap.artifact_key.CopyFrom(rand_artifact_key(rng, fl))
        if rng.random() < 0.5:
            ap.version = rand_ident(rng)
        if rng.random() < 0.5:
            ap.partitions.SetInParent()
            for _ in range(rng.randint(0, 3)):
                ap.partitions.value[rand_ident(rng)].CopyFrom(rand_label_value(rng, fl))
        if rng.random() < 0.4:
            tp = ap.time_partition
            tp.SetInParent()
            if rng.random() < 0.7:
                tp.value.CopyFrom(rand_label_value(rng, fl))
            tp.granularity = rand_enum(rng, 5)
            if fl.v2 and rng.random() < 0.5:
                tp.key = rand_ident(rng)
    if rng.random() < 0.08:
        at = var.artifact_tag
        at.SetInParent()
        if rng.random() < 0.8:
            at.artifact_key.CopyFrom(rand_artifact_key(rng, fl))
        if rng.random() < 0.8:
            at.value.CopyFrom(rand_label_value(rng, fl))
    return var


def rand_variable_map(rng: random.Random, fl: Flavour) -> Message:
    vm = fl.ifaces.VariableMap()
    n = rng.randint(0, 5)
    if fl.v2:
        keys = [rand_ident(rng) for _ in range(n)]
        if n >= 2 and rng.random() < 0.15:
            keys[-1] = keys[0]  # duplicate keys survive in a repeated field
        for k in keys:
            entry = vm.variables.add()
            if rng.random() < 0.95:
                entry.key = k
            if rng.random() < 0.95:
                entry.value.CopyFrom(rand_variable(rng, fl))
    else:
        for _ in range(n):
            vm.variables[rand_ident(rng)].CopyFrom(rand_variable(rng, fl))
    return vm


def rand_interface(rng: random.Random, fl: Flavour) -> Message:
    ti = fl.ifaces.TypedInterface()
    if rng.random() < 0.85:
        ti.inputs.CopyFrom(rand_variable_map(rng, fl))
    if rng.random() < 0.85:
        ti.outputs.CopyFrom(rand_variable_map(rng, fl))
    return ti


# --------------------------------------------------------------------------
# Hand-picked vectors
# --------------------------------------------------------------------------


def single(fl: Flavour, lit: Message, key: str = "k") -> Message:
    lm = fl.lits.LiteralMap()
    lm.literals[key].CopyFrom(lit)
    return lm


def prim_lit(fl: Flavour, **kw: Any) -> Message:
    return fl.lits.Literal(scalar=fl.lits.Scalar(primitive=fl.lits.Primitive(**kw)))


def struct_with(value_setter: Callable[[struct_pb2.Value], None]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    value_setter(s.fields["x"])
    return s


def edge_cases(fl: Flavour) -> Iterable[tuple[str, Message]]:  # noqa: PLR0915
    p = f"{fl.name}/edge"
    lits, typs = fl.lits, fl.typs
    for i in INTEGERS:
        yield f"{p}/integer/{i}", single(fl, prim_lit(fl, integer=i))
    for f in FLOATS:
        yield f"{p}/float/{f!r}", single(fl, prim_lit(fl, float_value=f))
    for idx, s in enumerate(STRINGS):
        yield f"{p}/string/{idx}", single(fl, prim_lit(fl, string_value=s))
        yield f"{p}/key/{idx}", single(fl, prim_lit(fl, integer=idx), key=s)
    for b in (True, False):
        yield f"{p}/boolean/{b}", single(fl, prim_lit(fl, boolean=b))
    for s, ns in TIMESTAMPS:
        ts = timestamp_pb2.Timestamp(seconds=s, nanos=ns)
        yield f"{p}/datetime/{s},{ns}", single(fl, prim_lit(fl, datetime=ts))
    for s, ns in DURATIONS:
        d = duration_pb2.Duration(seconds=s, nanos=ns)
        yield f"{p}/duration/{s},{ns}", single(fl, prim_lit(fl, duration=d))
    for s, ns in BAD_TIMESTAMPS:
        ts = timestamp_pb2.Timestamp(seconds=s, nanos=ns)
        yield f"{p}/bad-datetime/{s},{ns}", single(fl, prim_lit(fl, datetime=ts))
    for s, ns in BAD_DURATIONS:
        d = duration_pb2.Duration(seconds=s, nanos=ns)
        yield f"{p}/bad-duration/{s},{ns}", single(fl, prim_lit(fl, duration=d))
    for dim in ENUM_VALUES:
        bt = typs.BlobType(format="csv", dimensionality=dim)
        blob = lits.Blob(uri="s3://b/k", metadata=lits.BlobMetadata(type=bt))
        yield (
            f"{p}/blob-dimensionality/{dim}",
            single(fl, lits.Literal(scalar=lits.Scalar(blob=blob))),
        )
    yield f"{p}/blob/empty", single(fl, lits.Literal(scalar=lits.Scalar(blob=lits.Blob())))
    yield (
        f"{p}/blob/empty-metadata",
        single(fl, lits.Literal(scalar=lits.Scalar(blob=lits.Blob(metadata=lits.BlobMetadata())))),
    )
    for name, val, tag in [
        ("empty", b"", ""),
        ("empty-tagged", b"", "msgpack"),
        ("bytes", b"\x00\xff\xfe<>&", ""),
        ("bytes-tagged", bytes(range(256)), "raw"),
    ]:
        lit = lits.Literal(scalar=lits.Scalar(binary=lits.Binary(value=val, tag=tag)))
        yield f"{p}/binary/{name}", single(fl, lit)
    schema = lits.Schema(uri="s3://x", type=typs.SchemaType())
    for ct in [0, 1, 5, 6, 42, -3]:
        schema.type.columns.add(name=f"c{ct}", type=ct)
    yield f"{p}/schema", single(fl, lits.Literal(scalar=lits.Scalar(schema=schema)))
    yield f"{p}/none", single(fl, lits.Literal(scalar=lits.Scalar(none_type=lits.Void())))
    yield f"{p}/error/empty", single(fl, lits.Literal(scalar=lits.Scalar(error=typs.Error())))
    err = typs.Error(failed_node_id="n0", message="boom \U0001f4a5")
    yield f"{p}/error", single(fl, lits.Literal(scalar=lits.Scalar(error=err)))
    yield (
        f"{p}/generic/empty",
        single(fl, lits.Literal(scalar=lits.Scalar(generic=struct_pb2.Struct()))),
    )
    for f in FLOATS:

        def set_num(v: struct_pb2.Value, f: float = f) -> None:
            v.number_value = f

        lit = lits.Literal(scalar=lits.Scalar(generic=struct_with(set_num)))
        yield f"{p}/generic-number/{f!r}", single(fl, lit)
    for null in (0, 5):

        def set_null(v: struct_pb2.Value, null: int = null) -> None:
            v.null_value = null  # type: ignore[assignment]

        lit = lits.Literal(scalar=lits.Scalar(generic=struct_with(set_null)))
        yield f"{p}/generic-null/{null}", single(fl, lit)
    gen = struct_pb2.Struct()
    gen.update(
        {
            "a": [1, 2.5, "x", None, True, {"b": {"c": []}}],
            "d": {},
            "e": "",
            "f": False,
            "\u00e9": -0.0,
        }
    )
    yield f"{p}/generic/nested", single(fl, lits.Literal(scalar=lits.Scalar(generic=gen)))
    sd = lits.StructuredDataset(uri="s3://sd", metadata=lits.StructuredDatasetMetadata())
    sdt = sd.metadata.structured_dataset_type
    sdt.format = "parquet"
    sdt.columns.add(name="a", literal_type=typs.LiteralType(simple=1))
    sdt.columns.add(name="b", literal_type=typs.LiteralType(simple=99))
    sdt.columns.add(name="c")
    sdt.external_schema_type = "arrow"
    sdt.external_schema_bytes = b"\x00\x01"
    yield (
        f"{p}/structured_dataset",
        single(fl, lits.Literal(scalar=lits.Scalar(structured_dataset=sd))),
    )
    yield (
        f"{p}/structured_dataset/empty",
        single(fl, lits.Literal(scalar=lits.Scalar(structured_dataset=lits.StructuredDataset()))),
    )
    union = lits.Union(value=prim_lit(fl, integer=3), type=typs.LiteralType(simple=1))
    yield f"{p}/union", single(fl, lits.Literal(scalar=lits.Scalar(union=union)))
    yield f"{p}/union/empty", single(fl, lits.Literal(scalar=lits.Scalar(union=lits.Union())))
    yield f"{p}/scalar/empty", single(fl, lits.Literal(scalar=lits.Scalar()))
    yield (
        f"{p}/primitive/empty",
        single(fl, lits.Literal(scalar=lits.Scalar(primitive=lits.Primitive()))),
    )
    yield f"{p}/literal/empty", single(fl, lits.Literal())
    yield f"{p}/literal/hash-only", single(fl, lits.Literal(hash="abc123"))
    yield (
        f"{p}/literal/hash-and-value",
        single(fl, lits.Literal(scalar=lits.Scalar(primitive=lits.Primitive(integer=1)), hash="h")),
    )
    yield f"{p}/literal/metadata-only", single(fl, lits.Literal(metadata={"k": "v", "a": ""}))
    yield f"{p}/collection/empty", single(fl, lits.Literal(collection=lits.LiteralCollection()))
    yield (
        f"{p}/collection/of-empty",
        single(
            fl,
            lits.Literal(
                collection=lits.LiteralCollection(literals=[lits.Literal(), lits.Literal()])
            ),
        ),
    )
    yield f"{p}/map/empty", single(fl, lits.Literal(map=lits.LiteralMap()))
    deep = prim_lit(fl, string_value="deep")
    for i in range(MAX_DEPTH):
        if i % 2:
            deep = lits.Literal(collection=lits.LiteralCollection(literals=[deep]), hash=f"h{i}")
        else:
            deep = single(fl, deep, key=f"level{i}")
            deep = lits.Literal(map=deep)
    yield f"{p}/nested", single(fl, deep)
    for size in [0, 1, UINT64_MAX, 2**53 + 1]:
        om = lits.LiteralOffloadedMetadata(
            uri="s3://off", size_bytes=size, inferred_type=typs.LiteralType(simple=3)
        )
        yield f"{p}/offloaded/{size}", single(fl, lits.Literal(offloaded_metadata=om))
    yield (
        f"{p}/offloaded/empty",
        single(fl, lits.Literal(offloaded_metadata=lits.LiteralOffloadedMetadata())),
    )
    if fl.v2:
        av = fl.arts.ArtifactVersionId(
            key=fl.arts.ArtifactKey(project="p", domain="d", name="n", org="o"), version="v1"
        )
        yield f"{p}/artifact_id", single(fl, lits.Literal(artifact_id=av, hash="x"))
    yield f"{p}/literalmap/empty", lits.LiteralMap()
    # jsonpb errors
    bad = struct_pb2.Struct()
    bad.fields["x"].SetInParent()
    yield f"{p}/bad-generic/unset-value", single(fl, lits.Literal(scalar=lits.Scalar(generic=bad)))
    bad2 = struct_pb2.Struct()
    bad2.fields["ok"].number_value = 1
    bad2.fields["lst"].list_value.values.add().list_value.values.add()
    yield (
        f"{p}/bad-generic/unset-in-list",
        single(fl, lits.Literal(scalar=lits.Scalar(generic=bad2))),
    )
    # identifiers
    ids = fl.ids
    yield f"{fl.name}/edge/identifier/empty", ids.Identifier()
    for rt in ENUM_VALUES:
        yield (
            f"{fl.name}/edge/identifier/resource_type/{rt}",
            ids.Identifier(
                resource_type=rt, project="p", domain="d", name="n", version="v", org="o"
            ),
        )
    yield (
        f"{fl.name}/edge/identifier/unicode",
        ids.Identifier(
            project="\u00e9", domain="\U0001f389", name="e\u0301", version="<&>", org=""
        ),
    )
    # interfaces
    ifaces = fl.ifaces
    yield f"{fl.name}/edge/interface/empty", ifaces.TypedInterface()
    yield (
        f"{fl.name}/edge/interface/empty-maps",
        ifaces.TypedInterface(inputs=ifaces.VariableMap(), outputs=ifaces.VariableMap()),
    )
    ti = ifaces.TypedInterface()
    pairs = [("b", 1), ("a", 3), ("c", 9)]
    if fl.v2:
        for k, st in pairs:
            ti.inputs.variables.add(key=k, value=ifaces.Variable(type=typs.LiteralType(simple=st)))
        # same entries, reversed order -> different hash (a list, not a map)
        ti2 = ifaces.TypedInterface()
        for k, st in reversed(pairs):
            ti2.inputs.variables.add(key=k, value=ifaces.Variable(type=typs.LiteralType(simple=st)))
        yield f"{fl.name}/edge/interface/order-b-a-c", ti
        yield f"{fl.name}/edge/interface/order-c-a-b", ti2
        ti3 = ifaces.TypedInterface()
        ti3.outputs.variables.add()
        yield f"{fl.name}/edge/interface/empty-entry", ti3
    else:
        for k, st in pairs:
            ti.inputs.variables[k].CopyFrom(ifaces.Variable(type=typs.LiteralType(simple=st)))
        yield f"{fl.name}/edge/interface/map", ti


def well_known_cases() -> Iterable[tuple[str, Message]]:
    p = "google.protobuf"
    yield f"{p}/struct/empty", struct_pb2.Struct()
    for f in [0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324]:
        yield f"{p}/value/number/{f!r}", struct_pb2.Value(number_value=f)
    yield f"{p}/value/null", struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    yield f"{p}/value/null-unknown-enum", struct_pb2.Value(null_value=7)  # type: ignore[arg-type]
    yield f"{p}/value/string", struct_pb2.Value(string_value="\U0001f389")
    yield f"{p}/value/bool", struct_pb2.Value(bool_value=False)
    yield f"{p}/value/empty-list", struct_pb2.Value(list_value=struct_pb2.ListValue())
    yield f"{p}/listvalue/empty", struct_pb2.ListValue()
    # jsonpb failures: a Value whose kind oneof is unset ("nil Value")
    yield f"{p}/bad/value-unset", struct_pb2.Value()
    s = struct_pb2.Struct()
    s.fields["a"].SetInParent()
    yield f"{p}/bad/struct-unset-value", s
    s = struct_pb2.Struct()
    s.fields["a"].number_value = 1
    s.fields["b"].struct_value.fields["c"].SetInParent()
    yield f"{p}/bad/struct-nested-unset-value", s
    lv = struct_pb2.ListValue()
    lv.values.add(string_value="ok")
    lv.values.add()
    yield f"{p}/bad/listvalue-unset-value", lv
    v = struct_pb2.Value()
    v.list_value.values.add().struct_value.fields["z"].SetInParent()
    yield f"{p}/bad/value-deep-unset", v


# --------------------------------------------------------------------------
# Flyte's published golden values (flytestdlib/pbhash tests)
# --------------------------------------------------------------------------


def _test_proto_file() -> descriptor_pb2.FileDescriptorProto:
    """The ad-hoc message used by Flyte's pbhash tests, as a proto3 file."""
    fdt = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="oracle/test/test_proto.proto",
        package="oracle.test",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"],
    )
    m = fdp.message_type.add(name="TestProto")
    opt, rep = fdt.LABEL_OPTIONAL, fdt.LABEL_REPEATED
    for name, num, typ, label, type_name, json_name in [
        ("integer", 1, fdt.TYPE_INT64, opt, "", "integer"),
        ("float_value", 2, fdt.TYPE_DOUBLE, opt, "", "floatValue"),
        ("string_value", 3, fdt.TYPE_STRING, opt, "", "stringValue"),
        ("boolean", 4, fdt.TYPE_BOOL, opt, "", "boolean"),
        ("datetime", 5, fdt.TYPE_MESSAGE, opt, ".google.protobuf.Timestamp", "datetime"),
        ("duration", 6, fdt.TYPE_MESSAGE, opt, ".google.protobuf.Duration", "duration"),
        ("map_value", 7, fdt.TYPE_MESSAGE, rep, ".oracle.test.TestProto.MapValueEntry", "mapValue"),
        ("collections", 8, fdt.TYPE_STRING, rep, "", "collections"),
    ]:
        f = m.field.add(name=name, number=num, type=typ, label=label, json_name=json_name)
        if type_name:
            f.type_name = type_name
    e = m.nested_type.add(name="MapValueEntry")
    e.options.map_entry = True
    e.field.add(name="key", number=1, type=fdt.TYPE_STRING, label=opt, json_name="key")
    e.field.add(name="value", number=2, type=fdt.TYPE_STRING, label=opt, json_name="value")
    return fdp


TEST_PROTO_FILE = _test_proto_file()


def _test_proto_class() -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    for fdp in file_closure([timestamp_pb2.DESCRIPTOR, duration_pb2.DESCRIPTOR]):
        pool.Add(fdp)
    pool.Add(TEST_PROTO_FILE)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("oracle.test.TestProto"))


def golden_cases() -> Iterable[tuple[str, Message, str]]:
    """(id, message, expected hash in the encoding Flyte's test used)."""
    for fl in FLAVOURS:
        lits = fl.lits
        lm = lits.LiteralMap()
        lm.literals["1"].CopyFrom(prim_lit(fl, integer=1))
        lm.literals["2"].CopyFrom(prim_lit(fl, integer=2))
        yield (
            f"{fl.name}/golden/literalmap-1-2",
            lm,
            "url:GQid5LjHbakcW68DS3P2jp80QLbiF0olFHF2hTh5bg8",
        )
        yield (
            f"{fl.name}/golden/literalmap-empty",
            lits.LiteralMap(),
            "url:GKw-c0PwFokMUQ6T-TUmEWnZ4_VlQ2Qpgw-vCTT0-OQ",
        )
        ident = fl.ids.Identifier(
            project="project_1", domain="domain_1", name="name_1", org="org_1"
        )
        yield (
            f"{fl.name}/golden/identifier",
            ident,
            "std:+UmrGhEwHv3FesdpA4gliBluF3FUXz4tshmuOlw1FSk=",
        )
    cls = _test_proto_class()
    t1 = cls(integer=18, float_value=1.3, string_value="lets test this", boolean=True)
    yield (
        "oracle.test/golden/test-proto-scalars",
        t1,
        "std:GhPMTKvJfUPHK8U3vEmoi/wdVBx7IQSPqyjGXAZzquI=",
    )
    t2 = cls()
    t2.CopyFrom(t1)
    t2.datetime.FromJsonString("2019-03-29T12:00:00Z")  # type: ignore[attr-defined]
    t2.duration.FromMilliseconds(1)  # type: ignore[attr-defined]
    t2.map_value["z"] = "last"  # type: ignore[attr-defined]
    t2.map_value["a"] = "first"  # type: ignore[attr-defined]
    t2.collections.extend(["1", "2", "3"])  # type: ignore[attr-defined]
    yield (
        "oracle.test/golden/test-proto-all",
        t2,
        "std:YpWyLCP1NW0DVk3Hj64tK70H/9t+5fQlj7yyDK2lSEQ=",
    )


def _golden_matches(expected: str, hash_b64: str) -> bool:
    raw = base64.b64decode(hash_b64)
    enc, _, value = expected.partition(":")
    if enc == "url":
        return base64.urlsafe_b64encode(raw).decode().rstrip("=") == value
    return base64.b64encode(raw).decode() == value


# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------


def file_closure(files: Iterable[Any]) -> list[descriptor_pb2.FileDescriptorProto]:
    """Every file in ``files`` and their transitive imports, dependencies first."""
    seen: set[str] = set()
    out: list[descriptor_pb2.FileDescriptorProto] = []

    def walk(fd: Any) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            walk(dep)
        fdp = descriptor_pb2.FileDescriptorProto()
        fd.CopyToProto(fdp)
        out.append(fdp)

    for fd in files:
        walk(fd)
    return out


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    roots = [struct_pb2.DESCRIPTOR, timestamp_pb2.DESCRIPTOR, duration_pb2.DESCRIPTOR]
    for fl in FLAVOURS:
        roots += [fl.lits.DESCRIPTOR, fl.ids.DESCRIPTOR, fl.ifaces.DESCRIPTOR]
    fds = descriptor_pb2.FileDescriptorSet()
    fds.file.extend(file_closure(roots))
    fds.file.append(TEST_PROTO_FILE)
    return fds


def run_oracle(oracle: str, requests: list[dict[str, str]]) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        fds_path = Path(tmp) / "descriptors.pb"
        fds_path.write_bytes(descriptor_set().SerializeToString(deterministic=True))
        stdin = "".join(json.dumps(r) + "\n" for r in requests)
        proc = subprocess.run(
            [oracle, "-descriptors", str(fds_path)],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(answers) != len(requests):
        raise SystemExit(f"oracle answered {len(answers)} of {len(requests)} requests")
    return answers


def build_cases() -> tuple[list[tuple[str, Message]], dict[str, str]]:
    rng = random.Random(SEED)
    cases: list[tuple[str, Message]] = []
    golden: dict[str, str] = {}
    for gid, msg, expected in golden_cases():
        cases.append((gid, msg))
        golden[gid] = expected
    for fl in FLAVOURS:
        cases.extend(edge_cases(fl))
    cases.extend(well_known_cases())
    for fl in FLAVOURS:
        for i in range(N_LITERAL_MAPS):
            cases.append((f"{fl.name}/random/literalmap/{i}", rand_literal_map(rng, fl, 0)))
        for i in range(N_IDENTIFIERS):
            cases.append((f"{fl.name}/random/identifier/{i}", rand_identifier(rng, fl)))
        for i in range(N_INTERFACES):
            cases.append((f"{fl.name}/random/interface/{i}", rand_interface(rng, fl)))
    ids = [c[0] for c in cases]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise SystemExit(f"duplicate vector ids: {sorted(dupes)}")
    return cases, golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("oracle", help="path to the Go oracle binary")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).with_name("hash_vectors.json")),
        help="output file (default: hash_vectors.json beside this script)",
    )
    args = parser.parse_args(argv)

    cases, golden = build_cases()
    requests = []
    for cid, msg in cases:
        requests.append(
            {
                "id": cid,
                "type": msg.DESCRIPTOR.full_name,
                "b64": base64.b64encode(msg.SerializeToString(deterministic=True)).decode(),
            }
        )
    answers = run_oracle(args.oracle, requests)

    vectors = []
    for req, ans in zip(requests, answers, strict=True):
        if ans["id"] != req["id"]:
            raise SystemExit(f"oracle answered {ans['id']!r} for {req['id']!r}")
        vec: dict[str, Any] = dict(req)
        if "error" in ans:
            if ans["error"].startswith("oracle:"):
                raise SystemExit(f"oracle could not process {req['id']}: {ans['error']}")
            vec["error"] = ans["error"]
        else:
            vec["json"] = ans["json"]
            vec["hash_b64"] = ans["hash_b64"]
        if req["id"] in golden:
            expected = golden[req["id"]]
            if "hash_b64" not in vec or not _golden_matches(expected, vec["hash_b64"]):
                raise SystemExit(f"golden mismatch for {req['id']}: {vec} != {expected}")
        vectors.append(vec)

    doc = {
        "generator": f"{GENERATOR} (seed {SEED})",
        "oracle": ORACLE_DESCRIPTION,
        "extra_file_descriptors_b64": [
            base64.b64encode(TEST_PROTO_FILE.SerializeToString(deterministic=True)).decode()
        ],
        "vectors": vectors,
    }
    out = Path(args.out)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    n_err = sum("error" in v for v in vectors)
    print(f"wrote {len(vectors)} vectors ({n_err} errors) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
