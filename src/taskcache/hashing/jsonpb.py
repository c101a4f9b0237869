"""The JSON route: marshal a message to text exactly as golang/protobuf ``jsonpb`` does.

This is the reference implementation of Flyte's ``pbhash`` (marshal, then objecthash the JSON).
:mod:`taskcache.hashing.direct` computes the same hashes without building text; property tests
hold the two equal.

The reference route (tests check the direct route against it); no I/O.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from taskcache.errors import InvalidArgumentError
from taskcache.hashing import jsonpb_rules as rules
from taskcache.hashing.jsonpb_rules import ReflectedField, ReflectedMessage
from taskcache.hashing.objecthash import common_json_hash


def marshal_jsonpb(message: Message) -> str:
    """Return the compact JSON text Go's ``jsonpb.Marshaler{}`` writes for ``message``.

    Raises InvalidArgumentError where Go's marshaller fails (a Value with no kind, out-of-range
    Duration, Timestamp nanos out of range, unresolvable Any, missing proto2 required fields).
    """
    if not message.IsInitialized():
        raise InvalidArgumentError(f"{message.DESCRIPTOR.full_name} misses required fields")
    out: list[str] = []
    _write_message(message, out, type_url="")
    return "".join(out)


def pbhash_via_json(message: Message) -> bytes:
    """Return Flyte's ``pbhash.ComputeHash`` of ``message`` computed through JSON text."""
    return common_json_hash(marshal_jsonpb(message))


def _write_message(message: ReflectedMessage, out: list[str], type_url: str) -> None:
    full_name = message.DESCRIPTOR.full_name
    if full_name in rules.SPECIAL_TYPES:
        _write_special(message, full_name, out)
        return
    parts: list[str] = []
    if type_url:
        parts.append(f'"@type":{json.dumps(type_url)}')
    for field, value in message.ListFields():
        written: list[str] = []
        _write_field_value(field, value, written)
        parts.append(f"{json.dumps(rules.field_json_name(field))}:{''.join(written)}")
    out.append("{" + ",".join(parts) + "}")


def _write_special(message: ReflectedMessage, full_name: str, out: list[str]) -> None:
    descriptor = message.DESCRIPTOR
    if full_name == rules.ANY:
        _write_any(message, out)
    elif full_name == rules.DURATION:
        out.append(json.dumps(rules.format_duration(message.seconds, message.nanos)))
    elif full_name == rules.TIMESTAMP:
        out.append(json.dumps(rules.format_timestamp(message.seconds, message.nanos)))
    elif full_name == rules.VALUE:
        kind = message.WhichOneof("kind")
        if kind is None:
            raise InvalidArgumentError("google.protobuf.Value has no kind set (nil Value)")
        _write_field_value(descriptor.fields_by_name[kind], getattr(message, kind), out)
    else:  # wrappers, Struct and ListValue all delegate to their field number 1
        field = descriptor.fields_by_number[1]
        _write_field_value(field, getattr(message, field.name), out)


def _write_any(message: ReflectedMessage, out: list[str]) -> None:
    type_url, inner = rules.unpack_any(message)
    if inner.DESCRIPTOR.full_name not in rules.ANY_VALUE_FORM:
        _write_message(inner, out, type_url=type_url)
        return
    value: list[str] = []
    _write_message(inner, value, type_url="")
    out.append(f'{{"@type":{json.dumps(type_url)},"value":{"".join(value)}}}')


def _write_field_value(field: ReflectedField, value: Any, out: list[str]) -> None:
    if rules.is_map_field(field):
        value_field = field.message_type.fields_by_name["value"]
        entries = []
        for key in value:
            item: list[str] = []
            _write_singular(value_field, value[key], item)
            entries.append(f"{json.dumps(rules.map_key_text(key))}:{''.join(item)}")
        out.append("{" + ",".join(entries) + "}")
    elif field.is_repeated:
        items = []
        for element in value:
            item = []
            _write_singular(field, element, item)
            items.append("".join(item))
        out.append("[" + ",".join(items) + "]")
    else:
        _write_singular(field, value, out)


def _write_singular(field: ReflectedField, value: Any, out: list[str]) -> None:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        _write_message(value, out, type_url="")
    elif kind == FieldDescriptor.TYPE_ENUM:
        enum_type = field.enum_type
        if enum_type.full_name == rules.NULL_VALUE_ENUM:
            out.append("null")
        elif (named := enum_type.values_by_number.get(value)) is not None:
            out.append(f'"{named.name}"')
        else:
            out.append(str(int(value)))
    elif kind in rules.FLOAT_TYPES:
        special = rules.nonfinite_text(value)
        if special is not None:
            out.append(f'"{special}"')
        elif kind == FieldDescriptor.TYPE_FLOAT:
            out.append(repr(rules.float32_as_json_double(value)))
        else:
            out.append(repr(float(value)))
    elif kind in rules.SIXTY_FOUR_BIT_TYPES:
        out.append(f'"{int(value)}"')
    elif kind == FieldDescriptor.TYPE_BOOL:
        out.append("true" if value else "false")
    elif kind == FieldDescriptor.TYPE_STRING:
        out.append(json.dumps(value, ensure_ascii=False))
    elif kind == FieldDescriptor.TYPE_BYTES:
        out.append(json.dumps(base64.b64encode(value).decode("ascii")))
    else:  # 32-bit integers are plain JSON numbers
        out.append(str(int(value)))
