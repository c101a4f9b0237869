"""Reading request bodies: a body that does not decode is the caller's error.

Both transports decode through here, so a corrupt, truncated, over-deep or wrongly typed body
is an InvalidArgumentError (naming the field where the decoder can tell) on gRPC and Connect
alike, never an INTERNAL error carrying the decoder's exception. It must not know any RPC's
meaning.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from taskcache.errors import InvalidArgumentError

M = TypeVar("M", bound=Message)

# Deeper than the protobuf decoder's own limit (100), so every string it reached is checked.
_MAX_WALK_DEPTH: Final = 128
_MAX_WALK_FIELDS: Final = 100_000
_BAD_UTF8: Final = "UTF-8"  # in upb's reason for a string field that is not UTF-8
_WIRE_VARINT: Final = 0
_WIRE_FIXED64: Final = 1
_WIRE_LENGTH: Final = 2
_WIRE_FIXED32: Final = 5
# Python exception class names ("TypeError: ...") inside a decoder's message say nothing to a
# caller and reveal the implementation.
_EXCEPTION_NAME: Final = re.compile(r"\b[A-Z][A-Za-z]*(?:Error|Exception): ?")
_JSON_FIELD: Final = re.compile(r"Failed to parse (\w+) field: ")
_MAX_REASON: Final = 200
_MAX_PATH: Final = 8


def decode_binary(data: bytes | bytearray | memoryview, message: M) -> M:
    """Parse protobuf binary ``data`` into ``message`` and return it.

    Raises InvalidArgumentError if ``data`` is not a valid encoding of the message: corrupt or
    truncated, nested deeper than the decoder allows, or holding invalid UTF-8 in a string
    field (then the message names the field).
    """
    try:
        message.ParseFromString(bytes(data))
    except DecodeError as error:
        # upb's descriptor is the same class at runtime; its stub is a separate one.
        descriptor = cast(Descriptor, message.DESCRIPTOR)
        raise _binary_error(descriptor, bytes(data), error) from None
    return message


def decode_json(data: bytes | bytearray | memoryview, message: M) -> M:
    """Parse protobuf JSON ``data`` into ``message`` and return it.

    Raises InvalidArgumentError for anything but a JSON object of the message's fields with
    the right types (json_format names the field that failed), including text that is not
    UTF-8 or nests too deep.
    """
    try:
        document = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise InvalidArgumentError("request body is not UTF-8 encoded JSON") from None
    except (ValueError, RecursionError) as error:
        reason = str(error)[:_MAX_REASON] if isinstance(error, ValueError) else "nested too deep"
        raise InvalidArgumentError(f"request body is not JSON: {reason}") from None
    if not isinstance(document, dict):
        raise InvalidArgumentError(
            f"request body must be a JSON object, not {type(document).__name__}"
        )
    try:
        json_format.ParseDict(document, message)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as error:
        raise _json_error(message.DESCRIPTOR.full_name, str(error)) from None
    return message


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # As json_format.Parse does: a field given twice is ambiguous, not "the last one wins".
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise ValueError(f"duplicate key {name!r}")
        document[name] = value
    return document


def _json_error(type_name: str, text: str) -> InvalidArgumentError:
    # json_format nests "Failed to parse <field> field: " once per level, then the reason
    # (and sometimes " at <Type>.<path>."); a 100-level body would give a 3 kB message.
    path = _JSON_FIELD.findall(text)
    reason = _JSON_FIELD.sub("", text).partition(" at ")[0].rstrip(". ")
    reason = _EXCEPTION_NAME.sub("", reason)[:_MAX_REASON] or "malformed JSON"
    if not path:
        return InvalidArgumentError(f"request body is not a valid {type_name} in JSON: {reason}")
    if len(path) > _MAX_PATH:
        path = [*path[:2], f"...({len(path) - 4} levels)...", *path[-2:]]
    return InvalidArgumentError(reason, field=".".join(path))


def _binary_error(descriptor: Descriptor, data: bytes, error: DecodeError) -> InvalidArgumentError:
    # upb's message is "Error parsing message with type '<name>': <reason>".
    reason = str(error).rpartition(": ")[2] or "wire format was corrupt"
    if _BAD_UTF8 in reason:
        field = bad_utf8_field(descriptor, data)
        if field is not None:
            return InvalidArgumentError("string field holds invalid UTF-8", field=field)
    return InvalidArgumentError(
        f"request body is not a valid {descriptor.full_name} in protobuf binary: {reason}"
    )


def bad_utf8_field(descriptor: Descriptor, data: bytes) -> str | None:
    """Return the dotted path of the first string field of ``descriptor`` whose bytes in
    ``data`` are not UTF-8; None if there is none, ``data`` is not well-formed wire data, or
    finding it would take more than :data:`_MAX_WALK_FIELDS` fields (the search must not
    cost more than the decoding it explains).
    """
    return _Utf8Search().find(descriptor, memoryview(data), 0)


class _Utf8Search:
    """One search for an invalid string: a walk over the wire data, its work bounded."""

    def __init__(self) -> None:
        self._fields_left = _MAX_WALK_FIELDS

    def find(self, descriptor: Descriptor, data: memoryview, depth: int) -> str | None:
        """Return the path of the bad string field within ``data`` (a ``descriptor``)."""
        position = 0
        while position < len(data):
            self._fields_left -= 1
            parsed = _read_varint(data, position)
            if parsed is None or self._fields_left < 0:
                return None
            tag, position = parsed
            number, wire = tag >> 3, tag & 7
            if wire == _WIRE_VARINT:
                skipped = _read_varint(data, position)
                if skipped is None:
                    return None
                position = skipped[1]
            elif wire in (_WIRE_FIXED64, _WIRE_FIXED32):
                position += 8 if wire == _WIRE_FIXED64 else 4
            elif wire == _WIRE_LENGTH:
                length = _read_varint(data, position)
                if length is None:
                    return None
                start, position = length[1], length[1] + length[0]
                if position > len(data):
                    return None
                found = self._check(descriptor, number, data[start:position], depth)
                if found is not None:
                    return found
            else:
                return None  # groups and invalid wire types: nothing more to say than "corrupt"
        return None

    def _check(
        self, descriptor: Descriptor, number: int, payload: memoryview, depth: int
    ) -> str | None:
        field = descriptor.fields_by_number.get(number)
        if field is None:
            return None
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                bytes(payload).decode("utf-8")
            except UnicodeDecodeError:
                return field.name
            return None
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and field.message_type is not None
            and depth < _MAX_WALK_DEPTH
        ):
            inner = self.find(field.message_type, payload, depth + 1)
            if inner is not None:
                return f"{field.name}.{inner}"
        return None


def _read_varint(data: memoryview, position: int) -> tuple[int, int] | None:
    """Return the varint at ``position`` and the position after it; None if truncated."""
    value = shift = 0
    while position < len(data) and shift < 64:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
    return None
