"""The compiled hashing core against the pure-Python route: Go's vectors walked in C alone, a
differential fuzz over Flyte 1 and Flyte 2 literal maps, wire-format edge cases, the bundled
SHA-256, and route selection (environment variable, run-time switch, hidden extension).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flyteidl2.core import types_pb2
from google.protobuf import descriptor_pb2, struct_pb2, timestamp_pb2, wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_hashing_go_vectors as go_vectors
from hashing_routes import require_compiled, route
from strategies import FLYTE1, FLYTE2, PACKAGES, Flyte, build_literal_map, literal_maps, literals
from taskcache import hashing
from taskcache.errors import InvalidArgumentError
from taskcache.hashing import direct, hashify

pytestmark = pytest.mark.usefixtures("compiled_core")
package_ids = pytest.mark.parametrize("flyte", PACKAGES, ids=lambda flyte: flyte.name)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def compiled_core() -> Any:
    require_compiled()
    from taskcache.hashing import compiled

    return compiled


def _compiled() -> Any:
    from taskcache.hashing import compiled

    return compiled


def _python_text(literal_map: Any, ignore: frozenset[str] = frozenset()) -> str:
    return hashify.literal_map_text(literal_map, ignore)


def assert_walker_agrees(message: Any) -> None:
    """The C walk alone equals the Python route, or refuses where Python raises."""
    compiled = _compiled()
    try:
        walked = compiled.strict_pbhash(message)
    except compiled.Fallback:
        with pytest.raises(InvalidArgumentError):
            direct.pbhash(message)
        return
    assert walked == direct.pbhash(message)
    assert compiled.pbhash(message) == walked


def assert_literal_map_agrees(literal_map: Any, ignore: frozenset[str] = frozenset()) -> None:
    compiled = _compiled()
    try:
        walked = compiled.strict_literal_map_text(literal_map, ignore)
    except compiled.Fallback:
        with pytest.raises(InvalidArgumentError):
            _python_text(literal_map, ignore)
        return
    assert walked == _python_text(literal_map, ignore)
    assert compiled.literal_map_text(literal_map, ignore) == walked


# ---------------------------------------------------------------------------------------------
# Go's vectors, walked in C without the Python fallback


def test_walker_alone_matches_every_go_vector() -> None:
    compiled = _compiled()
    mismatches, walked, refused = [], 0, 0
    for vector in go_vectors._DATA["vectors"]:
        message = go_vectors._message(vector)
        if "error" in vector:
            # Errors are Go's: the walker either raises the same error (from a callback into
            # the Python rules) or hands the message to the Python route, which raises it.
            with pytest.raises((InvalidArgumentError, compiled.Fallback)):
                compiled.strict_pbhash(message)
            refused += 1
            continue
        got = base64.b64encode(compiled.strict_pbhash(message)).decode("ascii")
        walked += 1
        if got != vector["hash_b64"]:
            mismatches.append((vector["id"], vector["hash_b64"], got))
    assert mismatches == []
    assert walked > 1000
    assert refused > 10


# ---------------------------------------------------------------------------------------------
# Differential fuzz: random literal maps, both routes, equal digests


@package_ids
@FUZZ
@given(data=st.data())
def test_fuzzed_literal_maps_hash_alike(flyte: Flyte, data: Any) -> None:
    literal_map = data.draw(literal_maps(flyte, depth=4, max_size=6))
    names = sorted(literal_map.literals)
    ignore = (
        frozenset(data.draw(st.lists(st.sampled_from(names), unique=True)))
        if names
        else frozenset()
    )
    assert_literal_map_agrees(literal_map, ignore)
    assert_walker_agrees(literal_map)


unicode_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def big_collections(draw: st.DrawFn, flyte: Flyte) -> Any:
    """A LiteralMap with one long list of scalars (ints, unicode strings, floats) some of
    which carry a hash override."""
    literal_class = flyte.literals.Literal
    collection = literal_class()
    collection.collection.SetInParent()
    length = draw(st.integers(0, 3000))
    pattern = draw(
        st.lists(
            st.one_of(st.integers(-(2**63), 2**63 - 1), unicode_texts, st.floats()),
            min_size=1,
            max_size=8,
        )
    )
    overrides = draw(st.sets(st.integers(0, max(length - 1, 0)), max_size=5))
    for position in range(length):
        value = pattern[position % len(pattern)]
        element = collection.collection.literals.add()
        primitive = element.scalar.primitive
        if isinstance(value, int):
            primitive.integer = value
        elif isinstance(value, str):
            primitive.string_value = value
        else:
            primitive.float_value = value
        if position in overrides:
            element.hash = f"override-{position}"
    return build_literal_map(flyte, {"xs": collection, draw(unicode_texts): literal_class()})


@package_ids
@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_fuzzed_big_lists_hash_alike(flyte: Flyte, data: Any) -> None:
    literal_map = data.draw(big_collections(flyte))
    assert_literal_map_agrees(literal_map)
    assert_walker_agrees(literal_map)


def _deep(flyte: Flyte, depth: int, leaf: Any) -> Any:
    literal = flyte.literals.Literal()
    if depth == 0:
        literal.CopyFrom(leaf)
    elif depth % 2:
        literal.map.literals[f"level-{depth}-é"].CopyFrom(_deep(flyte, depth - 1, leaf))
        literal.map.literals["sibling"].scalar.primitive.integer = depth
    else:
        literal.collection.literals.add().CopyFrom(_deep(flyte, depth - 1, leaf))
        literal.collection.literals.add().hash = f"h{depth}"
    return literal


@package_ids
@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_fuzzed_deep_nesting_hashes_alike(flyte: Flyte, data: Any) -> None:
    leaf = data.draw(literals(flyte, depth=1))
    depth = data.draw(st.integers(5, 40))
    assert_literal_map_agrees(build_literal_map(flyte, {"deep": _deep(flyte, depth, leaf)}))


# ---------------------------------------------------------------------------------------------
# Wire-format edge cases the plans must describe


def _unknown_field_map(flyte: Flyte) -> Any:
    literal_map = build_literal_map(flyte, {"a": flyte.literals.Literal(hash="x")})
    with_unknown = literal_map.SerializeToString() + bytes([0xF8, 0x06, 0x2A])  # field 111 = 42
    return type(literal_map).FromString(with_unknown)


def _default_map_entry(flyte: Flyte) -> Any:
    literal_map = flyte.literals.LiteralMap()
    literal_map.literals[""].SetInParent()
    return literal_map


EDGE_CASES = {
    "unknown field": _unknown_field_map,
    "map entry with default key and value": _default_map_entry,
    "open enum unknown number": lambda flyte: flyte.types.LiteralType(simple=99),
    "negative int32 enum": lambda flyte: flyte.types.LiteralType(simple=-5),
    "nan, -0.0, inf": lambda flyte: build_literal_map(
        flyte,
        {
            name: flyte.literals.Literal(
                scalar=flyte.literals.Scalar(primitive=flyte.literals.Primitive(float_value=value))
            )
            for name, value in (("nan", float("nan")), ("zero", -0.0), ("inf", float("-inf")))
        },
    ),
    "timestamp out of range (Go wrap-around)": lambda flyte: flyte.literals.Primitive(
        datetime=timestamp_pb2.Timestamp(seconds=2**63 - 1, nanos=999_999_999)
    ),
    "int64 extremes": lambda flyte: flyte.literals.Primitive(integer=-(2**63)),
    "uint64 maximum": lambda flyte: flyte.literals.Literal(
        offloaded_metadata=flyte.literals.LiteralOffloadedMetadata(size_bytes=2**64 - 1)
    ),
}


@package_ids
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_case_hashes_alike(flyte: Flyte, case: str) -> None:
    message = EDGE_CASES[case](flyte)
    assert_walker_agrees(message)
    if type(message).__name__ == "LiteralMap":
        assert_literal_map_agrees(message)


WELL_KNOWN = [
    wrappers_pb2.Int64Value(),
    wrappers_pb2.UInt64Value(value=2**64 - 1),
    wrappers_pb2.FloatValue(value=1.3),
    wrappers_pb2.FloatValue(value=float("nan")),
    wrappers_pb2.DoubleValue(value=-0.0),
    wrappers_pb2.BytesValue(value=b"\x00\xff binary"),
    wrappers_pb2.BoolValue(),
    wrappers_pb2.StringValue(value="ünïcödé"),
    struct_pb2.Struct(),
    struct_pb2.ListValue(),
    struct_pb2.Value(null_value=struct_pb2.NULL_VALUE),
    struct_pb2.Value(),  # no kind: an error on both routes
    struct_pb2.Value(list_value=struct_pb2.ListValue(values=[struct_pb2.Value()])),
]


@pytest.mark.parametrize("message", WELL_KNOWN, ids=lambda m: f"{type(m).__name__}:{m}".strip())
def test_well_known_types_hash_alike(message: Any) -> None:
    assert_walker_agrees(message)


def test_proto2_messages_with_extensions_and_closed_enums_fall_back_correctly() -> None:
    # descriptor.proto is proto2: options are extendable (callback plans), FieldDescriptorProto
    # has closed enums, UninterpretedOption has required fields.
    file_proto = descriptor_pb2.FileDescriptorProto()
    types_pb2.DESCRIPTOR.CopyToProto(file_proto)
    assert_walker_agrees(file_proto)
    field = descriptor_pb2.FieldDescriptorProto(name="f", number=1)
    unknown_enum = type(field).FromString(
        field.SerializeToString() + bytes([0x28, 0x63])
    )  # type=99
    compiled = _compiled()
    with pytest.raises(compiled.Fallback):
        compiled.strict_pbhash(unknown_enum)
    assert compiled.pbhash(unknown_enum) == direct.pbhash(unknown_enum)
    missing_required = descriptor_pb2.UninterpretedOption(
        name=[descriptor_pb2.UninterpretedOption.NamePart()]
    )
    with pytest.raises(InvalidArgumentError):
        compiled.pbhash(missing_required)


def test_invalid_utf8_is_refused_by_both_routes() -> None:
    # proto2 strings may carry invalid UTF-8 on the wire; the walker leaves those to Python,
    # which refuses them as bad input.
    raw = bytes([0x0A, 0x02, 0xC3, 0x28])  # FileDescriptorProto.name = b"\xc3("
    message = descriptor_pb2.FileDescriptorProto.FromString(raw)
    compiled = _compiled()
    with pytest.raises(compiled.Fallback):
        compiled.strict_pbhash(message)
    with pytest.raises(InvalidArgumentError, match="UTF-8"):
        direct.pbhash(message)
    with pytest.raises(InvalidArgumentError, match="UTF-8"):
        compiled.pbhash(message)


# ---------------------------------------------------------------------------------------------
# The bundled SHA-256


def _bundled_paths() -> list[bool]:
    from taskcache.hashing import _core

    try:
        _core.sha256_bundled(b"", True)
    except ValueError:
        return [False]
    return [False, True]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_bundled_sha256_equals_hashlib(data: bytes) -> None:
    from taskcache.hashing import _core

    for sha_ni in _bundled_paths():
        assert _core.sha256_bundled(data, sha_ni) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 100_000])
def test_bundled_sha256_at_block_boundaries(length: int) -> None:
    from taskcache.hashing import _core

    data = (bytes(range(256)) * (length // 256 + 1))[:length]
    for sha_ni in _bundled_paths():
        assert _core.sha256_bundled(data, sha_ni) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("backend", ["sha-ni", "openssl", "portable"])
def test_every_sha256_backend_gives_the_same_keys(backend: str) -> None:
    from taskcache.hashing import _core

    compiled = _compiled()
    chosen = _core.sha256_backend()
    try:
        _core.select_sha256(backend)
    except ValueError:
        pytest.skip(f"{backend} is not available in this build or CPU")
    try:
        assert _core.sha256_backend() == backend
        for vector in go_vectors._DATA["vectors"][::7]:
            if "error" not in vector:
                got = compiled.strict_pbhash(go_vectors._message(vector))
                assert base64.b64encode(got).decode("ascii") == vector["hash_b64"]
        for length in range(0, 300, 7):
            text = wrappers_pb2.StringValue(value="z" * length)
            assert compiled.strict_pbhash(text) == direct.pbhash(text)
    finally:
        _core.select_sha256(chosen)


def _bundled_backends() -> list[str]:
    """The SHA-256 backends of this build and CPU, the one in use left selected."""
    from taskcache.hashing import _core

    chosen = _core.sha256_backend()
    available = []
    try:
        for backend in ("sha-ni", "openssl", "portable"):
            try:
                _core.select_sha256(backend)
            except ValueError:
                continue
            available.append(backend)
    finally:
        _core.select_sha256(chosen)
    return available


@pytest.fixture(params=["sha-ni", "openssl", "portable"])
def sha256_backend(request: pytest.FixtureRequest) -> Any:
    from taskcache.hashing import _core

    if request.param not in _bundled_backends():
        pytest.skip(f"{request.param} is not available in this build or CPU")
    chosen = _core.sha256_backend()
    _core.select_sha256(request.param)
    yield request.param
    _core.select_sha256(chosen)


def test_batched_digests_equal_hashlib(sha256_backend: str) -> None:
    from taskcache.hashing import _core

    # Every padding case (55/56/63/64/119/120 bytes with the tag), a long message in one
    # lane while the other takes short ones, and more digests than one batch holds (2 048),
    # so that the walk's mid-way flush runs too.
    items = [bytes(range(256))[: n % 256] * (1 + n // 256) for n in range(300)]
    items.insert(7, b"\xab" * 100_000)
    items += [str(n).encode() for n in range(5000)]
    expected = [hashlib.sha256(b"u" + item).digest() for item in items]
    assert _core.tagged_digests(b"u", items) == expected
    assert _core.tagged_digests(b"d", [b""]) == [hashlib.sha256(b"d").digest()]
    assert _core.tagged_digests(b"l", []) == []


def test_tagged_digests_refuse_bad_arguments() -> None:
    from taskcache.hashing import _core

    with pytest.raises(TypeError, match="tag"):
        _core.tagged_digests(b"ab", [b""])
    with pytest.raises(TypeError, match="items"):
        _core.tagged_digests(b"u", [b"a", "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="items"):
        _core.tagged_digests(b"u", 3)  # type: ignore[arg-type]


def _integer_list(flyte: Flyte, length: int) -> Any:
    literal = flyte.literals.Literal()
    for value in range(-length // 2, length - length // 2):
        literal.collection.literals.add().scalar.primitive.integer = value * 7919
    return literal


def _nested_maps(flyte: Flyte, depth: int) -> Any:
    literal = flyte.literals.Literal()
    for key in range(4):
        child = literal.map.literals[f"k{key}"]
        if depth > 1:
            child.CopyFrom(_nested_maps(flyte, depth - 1))
        else:
            child.scalar.primitive.float_value = key / 3
    return literal


@package_ids
def test_batched_walk_equals_one_digest_at_a_time(flyte: Flyte, sha256_backend: str) -> None:
    from taskcache.hashing import _core

    compiled = _compiled()
    messages = [
        build_literal_map(flyte, {"xs": _integer_list(flyte, 6000)}),
        build_literal_map(flyte, {"m": _nested_maps(flyte, 4), "n": _integer_list(flyte, 3)}),
        build_literal_map(flyte, {"deep": _deep(flyte, 30, _integer_list(flyte, 2))}),
        build_literal_map(flyte, {}),
    ]
    batched = [compiled.strict_pbhash(message) for message in messages]
    previous = _core.set_batching(False)
    try:
        assert previous is True
        one_at_a_time = [compiled.strict_pbhash(message) for message in messages]
        assert _core.set_batching(False) is False
    finally:
        _core.set_batching(previous)
    assert batched == one_at_a_time
    assert batched == [direct.pbhash(message) for message in messages]
    assert len(set(batched)) == len(batched)


# ---------------------------------------------------------------------------------------------
# Route selection


def test_routes_can_be_switched_at_run_time() -> None:
    literal_map = build_literal_map(FLYTE2, {"a": FLYTE2.literals.Literal(hash="x")})
    previous = hashing.hashing_route()
    try:
        hashing.use_hashing_route("python")
        assert hashing.hashing_route() == "python"
        by_python = hashing.hash_literal_map(literal_map)
        hashing.use_hashing_route("compiled")
        assert hashing.hashing_route() == "compiled"
        assert hashing.hash_literal_map(literal_map) == by_python
        hashing.use_hashing_route("auto")
        assert hashing.hashing_route() == "compiled"
    finally:
        hashing.use_hashing_route(previous)


def test_bad_route_names_are_refused() -> None:
    with pytest.raises(ValueError, match="TASKCACHE_HASHING"):
        hashing.use_hashing_route("fast")
    with pytest.raises(TypeError, match="name"):
        hashing.use_hashing_route(1)  # type: ignore[arg-type]


_PROBE = """
import sys
if sys.argv[1] == "hide":
    sys.modules["taskcache.hashing._core"] = None  # the extension cannot be imported
from taskcache import hashing  # the route is built on the first digest, not here
from flyteidl2.core import literals_pb2
literal_map = literals_pb2.LiteralMap()
literal_map.literals["a"].scalar.primitive.integer = 7
try:
    text = hashing.hash_literal_map(literal_map)
except RuntimeError as error:
    print("error:", error)
    raise SystemExit(0)
print(hashing.hashing_route(), text)
"""


def _probe(hide: bool, route_variable: str | None) -> str:
    environment = dict(os.environ)
    environment.pop("TASKCACHE_HASHING", None)
    if route_variable is not None:
        environment["TASKCACHE_HASHING"] = route_variable
    completed = subprocess.run(
        [sys.executable, "-c", _PROBE, "hide" if hide else "keep"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=Path(__file__).parent,
        timeout=120,
        check=True,
    )
    return completed.stdout.strip()


def test_the_python_route_is_used_when_the_extension_is_hidden() -> None:
    expected = build_literal_map(FLYTE2, {})
    expected.literals["a"].scalar.primitive.integer = 7
    key = _python_text(expected)
    assert _probe(hide=False, route_variable=None) == f"compiled {key}"
    assert _probe(hide=True, route_variable=None) == f"python {key}"
    assert _probe(hide=False, route_variable="python") == f"python {key}"
    refused = _probe(hide=True, route_variable="compiled")
    assert refused.startswith("error: TASKCACHE_HASHING=compiled, but the compiled hashing core")


def test_a_bad_route_variable_fails_at_import() -> None:
    environment = dict(os.environ, TASKCACHE_HASHING="fast")
    completed = subprocess.run(
        [sys.executable, "-c", "from taskcache import hashing"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 1
    assert "ValueError: TASKCACHE_HASHING must be 'python', 'compiled' or 'auto'" in (
        completed.stderr
    )


def test_flyte1_and_flyte2_keys_agree_on_the_compiled_route() -> None:
    flyte1 = build_literal_map(FLYTE1, {"a": FLYTE1.literals.Literal(hash="x")})
    flyte2 = build_literal_map(FLYTE2, {"a": FLYTE2.literals.Literal(hash="x")})
    compiled = _compiled()
    assert compiled.strict_literal_map_text(flyte1, ()) == compiled.strict_literal_map_text(
        flyte2, ()
    )


@pytest.mark.parametrize("route_name", ["python", "compiled"])
@pytest.mark.parametrize("not_a_map", [FLYTE2.literals.Literal(), "literals", None])
def test_hash_literal_map_of_a_non_map_is_a_type_error(route_name: str, not_a_map: Any) -> None:
    if not_a_map is None:
        assert hashing.hash_literal_map(None) == _python_text(FLYTE2.literals.LiteralMap())
        return
    with route(route_name), pytest.raises(TypeError, match="literal_map"):
        hashing.hash_literal_map(not_a_map)


def test_node_digests_of_every_length_up_to_several_blocks() -> None:
    # One node digest per string: tag + 0..299 bytes covers the one-block, two-block and
    # streamed paths of the walker's SHA-256, on whichever backend is in use.
    for length in range(300):
        assert_walker_agrees(
            wrappers_pb2.StringValue(value="é" * (length // 2) + "x" * (length % 2))
        )
        assert_walker_agrees(wrappers_pb2.BytesValue(value=bytes(range(256))[: length % 256] * 2))
