"""Flyte literals as short readable text, for ``taskcache show``.

Scalars print as Python-like values (``42``, ``3.5``, ``'text'``, ``True``, ISO times),
collections as ``[...]`` and maps as ``{...}``, blobs, schemas, structured datasets and
offloaded literals by kind and URI, binaries by tag and size. Long strings, many items and
deep nesting are cut with ``…`` so one output stays on a line or two; ``show --json`` has
the whole value (protobuf JSON).
"""

from __future__ import annotations

from typing import Final

from flyteidl2.core import literals_pb2
from google.protobuf import json_format

__all__ = ["literal_text"]

MAX_STRING: Final = 60
MAX_ITEMS: Final = 8
MAX_DEPTH: Final = 4
MAX_TOTAL: Final = 400
_ELLIPSIS: Final = "…"
_BLOB_DIMENSIONS: Final = {0: "file", 1: "directory"}


def literal_text(literal: literals_pb2.Literal) -> str:
    """Return ``literal`` as one readable line, at most about :data:`MAX_TOTAL` characters."""
    text = _literal(literal, 0)
    return text if len(text) <= MAX_TOTAL else text[: MAX_TOTAL - 1] + _ELLIPSIS


def _cut(text: str, limit: int = MAX_STRING) -> str:
    return text if len(text) <= limit else text[: limit - 1] + _ELLIPSIS


def _literal(literal: literals_pb2.Literal, depth: int) -> str:
    kind = literal.WhichOneof("value")
    if depth >= MAX_DEPTH and kind in ("collection", "map"):
        return "[…]" if kind == "collection" else "{…}"
    if kind == "scalar":
        return _scalar(literal.scalar, depth)
    if kind == "collection":
        items = [_literal(item, depth + 1) for item in literal.collection.literals[:MAX_ITEMS]]
        if len(literal.collection.literals) > MAX_ITEMS:
            items.append(f"… {len(literal.collection.literals) - MAX_ITEMS} more")
        return f"[{', '.join(items)}]"
    if kind == "map":
        names = sorted(literal.map.literals)
        pairs = [
            f"{_cut(name)!r}: {_literal(literal.map.literals[name], depth + 1)}"
            for name in names[:MAX_ITEMS]
        ]
        if len(names) > MAX_ITEMS:
            pairs.append(f"… {len(names) - MAX_ITEMS} more")
        return "{" + ", ".join(pairs) + "}"
    if kind == "offloaded_metadata":
        offloaded = literal.offloaded_metadata
        return f"offloaded literal {offloaded.uri} ({offloaded.size_bytes} bytes)"
    return "(empty literal)"


def _scalar(scalar: literals_pb2.Scalar, depth: int) -> str:
    kind = scalar.WhichOneof("value")
    if kind == "primitive":
        return _primitive(scalar.primitive)
    if kind == "blob":
        blob = scalar.blob
        dimension = _BLOB_DIMENSIONS.get(blob.metadata.type.dimensionality, "blob")
        blob_format = f" ({blob.metadata.type.format})" if blob.metadata.type.format else ""
        return f"{dimension}{blob_format} {blob.uri}"
    if kind == "binary":
        tag = f" {scalar.binary.tag}" if scalar.binary.tag else ""
        return f"binary{tag} ({len(scalar.binary.value)} bytes)"
    if kind == "schema":
        return f"schema {scalar.schema.uri}"
    if kind == "structured_dataset":
        dataset = scalar.structured_dataset
        dataset_format = dataset.metadata.structured_dataset_type.format
        shown_format = f" ({dataset_format})" if dataset_format else ""
        return f"structured dataset{shown_format} {dataset.uri}"
    if kind == "none_type":
        return "None"
    if kind == "error":
        return f"error from {scalar.error.failed_node_id!r}: {_cut(scalar.error.message)!r}"
    if kind == "generic":
        generic = json_format.MessageToJson(scalar.generic, indent=None, sort_keys=True)
        return _cut(generic, MAX_STRING * 2)
    if kind == "union":
        return _literal(scalar.union.value, depth)
    return "(empty scalar)"


def _primitive(primitive: literals_pb2.Primitive) -> str:
    kind = primitive.WhichOneof("value")
    if kind == "integer":
        return str(primitive.integer)
    if kind == "float_value":
        return repr(primitive.float_value)
    if kind == "string_value":
        return repr(_cut(primitive.string_value))
    if kind == "boolean":
        return str(primitive.boolean)
    if kind == "datetime":
        return str(primitive.datetime.ToJsonString())
    if kind == "duration":
        return str(primitive.duration.ToJsonString())
    return "(empty primitive)"
