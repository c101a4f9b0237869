"""Both hashing routes against hashes computed by Flyte's Go code (see tests/data/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import flyteidl2.core.interface_pb2
import flyteidl2.core.literals_pb2  # noqa: F401 - registers the vector types in the pool
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2  # noqa: F401
from google.protobuf.message import Message

from hashing_routes import require_compiled, route
from taskcache.errors import InvalidArgumentError
from taskcache.hashing import compute_hash
from taskcache.hashing.jsonpb import pbhash_via_json

_VECTORS_FILE = Path(__file__).parent / "data" / "hash_vectors.json"
_DATA: dict[str, Any] = json.loads(_VECTORS_FILE.read_text())


def _register_extra_descriptors() -> None:
    pool = descriptor_pool.Default()
    for encoded in _DATA.get("extra_file_descriptors_b64", []):
        file_proto = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(encoded))
        try:
            pool.FindFileByName(file_proto.name)
        except KeyError:
            pool.Add(file_proto)


_register_extra_descriptors()


def _message(vector: dict[str, Any]) -> Message:
    descriptor = descriptor_pool.Default().FindMessageTypeByName(vector["type"])
    message_class = message_factory.GetMessageClass(descriptor)
    return message_class.FromString(base64.b64decode(vector["b64"]))


# "direct" and "compiled" are compute_hash on the pure-Python and the compiled route.
_ROUTES = {"direct": compute_hash, "compiled": compute_hash, "json": pbhash_via_json}


def test_vector_file_covers_both_flyte_generations_and_errors() -> None:
    vectors = _DATA["vectors"]
    assert len(vectors) > 1000
    types = {vector["type"] for vector in vectors}
    assert {"flyteidl2.core.LiteralMap", "flyteidl.core.LiteralMap"} <= types
    assert any("error" in vector for vector in vectors)


@pytest.mark.parametrize("route_name", sorted(_ROUTES))
def test_every_go_vector_matches(route_name: str) -> None:
    if route_name == "compiled":
        require_compiled()
    with route("python" if route_name == "direct" else "compiled"):
        assert _mismatches(_ROUTES[route_name]) == []


def _mismatches(compute: Any) -> list[tuple[str, str, str]]:
    mismatches = []
    for vector in _DATA["vectors"]:
        message = _message(vector)
        if "error" in vector:
            with pytest.raises(InvalidArgumentError):
                compute(message)
            continue
        got = base64.b64encode(compute(message)).decode("ascii")
        if got != vector["hash_b64"]:
            mismatches.append((vector["id"], vector["hash_b64"], got))
    return mismatches
