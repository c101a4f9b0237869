"""Structured values as msgpack Binary literals, byte for byte as the Flyte 2 SDK makes them.

Untyped ``dict``, dicts with non-``str`` keys, dataclasses and pydantic models become
``Binary(value=<msgpack>, tag="msgpack")``. Dataclasses and dicts go through mashumaro's
msgpack codec, pydantic models through ``model_dump_json`` with enum fields by name, and the
LiteralTypes carry the same JSON schemas: all as the SDK does it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import sys
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from flyteidl2.core import types_pb2
from google.protobuf import struct_pb2

from taskcache.values._builtin import (
    Literal,
    LiteralType,
    binary_value,
    is_string_keyed_dict,
    mismatch,
    tagged_binary,
)
from taskcache.values._engine import (
    NONE_TYPE,
    Converter,
    Options,
    add_builtin,
    strip_annotated,
)

if TYPE_CHECKING:
    from mashumaro.codecs.msgpack import MessagePackDecoder, MessagePackEncoder

MSGPACK_TAG = "msgpack"


def struct_literal_type(tag: str = "", schema: dict[str, Any] | None = None) -> LiteralType:
    """The SDK's LiteralType of a msgpack-encoded value: STRUCT, marked as msgpack for keys.

    ``tag`` is the structure tag and ``schema`` the JSON schema metadata, where there are.
    """
    annotations = struct_pb2.Struct()
    annotations.update({"cache-key-metadata": {"serialization-format": MSGPACK_TAG}})
    literal_type = LiteralType(
        simple=types_pb2.SimpleType.STRUCT,
        annotation=types_pb2.TypeAnnotation(annotations=annotations),
    )
    if schema is not None:
        literal_type.metadata.update(schema)
    if tag:
        literal_type.structure.CopyFrom(types_pb2.TypeStructure(tag=tag))
    return literal_type


def _unpack(packed: bytes) -> Any:
    return msgpack.unpackb(packed, strict_map_key=False)


# mashumaro is most of what importing the converters costs, and only dataclasses and msgpack
# dicts need it: imported by the first codec built (one per type, cached), as the schema is.
@functools.cache
def _encoder(python_type: Any) -> MessagePackEncoder[Any]:
    from mashumaro.codecs.msgpack import MessagePackEncoder  # noqa: PLC0415

    return MessagePackEncoder(python_type)


@functools.cache
def _decoder(python_type: Any) -> MessagePackDecoder[Any]:
    from mashumaro.codecs.msgpack import MessagePackDecoder  # noqa: PLC0415

    return MessagePackDecoder(python_type, pre_decoder_func=_unpack)


def _encode(value: object, python_type: Any) -> Literal:
    try:
        packed: bytes = _encoder(python_type).encode(value)
    except (TypeError, ValueError, AttributeError, OverflowError) as error:
        raise TypeError(f"{value!r:.80} cannot be encoded as msgpack: {error}") from error
    return tagged_binary(packed, MSGPACK_TAG)


def _decode(literal: Literal, python_type: Any) -> Any:
    packed = binary_value(literal, MSGPACK_TAG, python_type)
    try:
        return _decoder(python_type).decode(packed)
    except (TypeError, ValueError, KeyError) as error:
        raise TypeError(f"msgpack data is not a {python_type!r:.80}: {error}") from error


def _is_msgpack_dict(python_type: Any) -> bool:
    # dict[str, T] is a Flyte map (see _builtin.MAP); every other dict goes through msgpack.
    return (python_type is dict or typing.get_origin(python_type) is dict) and not (
        is_string_keyed_dict(python_type)
    )


def _dict_to_literal(value: object, python_type: Any, _: Options) -> Literal:
    if type(value) is not dict:
        raise mismatch(value, python_type)
    return _encode(value, python_type)


DICT = Converter(
    name="Typed Dict",
    handles=_is_msgpack_dict,
    literal_type=lambda _: struct_literal_type(),
    to_literal=_dict_to_literal,
    from_literal=_decode,
)


def _is_dataclass_type(python_type: Any) -> bool:
    return isinstance(python_type, type) and dataclasses.is_dataclass(python_type)


def _dataclass_to_literal(value: object, python_type: Any, _: Options) -> Literal:
    if not isinstance(value, python_type):
        raise mismatch(value, python_type)
    return _encode(value, python_type)


@functools.cache
def _dataclass_literal_type(python_type: type) -> LiteralType:
    # Costly to import, and only the interface needs it: imported on first use.
    from mashumaro.jsonschema import build_json_schema  # noqa: PLC0415

    try:
        schema = build_json_schema(python_type, plugins=[_pydantic_schema_plugin()]).to_dict()
    except Exception:
        schema = None
    return struct_literal_type("Object-Dataclass-Transformer", schema)


def _pydantic_schema_plugin() -> Any:
    """The SDK's mashumaro plugin: pydantic fields of a dataclass get the pydantic schema."""
    from mashumaro.jsonschema.models import JSONSchema  # noqa: PLC0415
    from mashumaro.jsonschema.plugins import BasePlugin  # noqa: PLC0415

    class PydanticSchemaPlugin(BasePlugin):
        def get_schema(self, instance: Any, ctx: Any, schema: Any = None) -> Any:
            if _is_pydantic_model(instance.type):
                return JSONSchema.from_dict(_pydantic_schema(instance.type))
            return None

    return PydanticSchemaPlugin()


DATACLASS = Converter(
    name="Object-Dataclass-Transformer",
    handles=_is_dataclass_type,
    literal_type=lambda t: _copy(_dataclass_literal_type(t)),
    to_literal=_dataclass_to_literal,
    from_literal=_decode,
)


def _copy(literal_type: LiteralType) -> LiteralType:
    # Cached LiteralTypes are shared: hand out copies, which callers may change.
    copy = LiteralType()
    copy.CopyFrom(literal_type)
    return copy


def _is_pydantic_model(python_type: Any) -> bool:
    # A class can only be a pydantic model once pydantic is imported, so it is never imported
    # here: pydantic stays optional.
    pydantic = sys.modules.get("pydantic")
    return (
        pydantic is not None
        and isinstance(python_type, type)
        and issubclass(python_type, pydantic.BaseModel)
    )


@functools.cache
def _pydantic_schema(python_type: Any) -> dict[str, Any]:
    """The SDK's JSON schema of a model: pydantic's, with enums listing member names."""
    # Only a model's own schema asks for it, so pydantic is installed (and stays optional).
    from pydantic.json_schema import GenerateJsonSchema  # noqa: PLC0415

    class NamedEnumSchema(GenerateJsonSchema):
        def enum_schema(self, schema: Any) -> Any:
            result = super().enum_schema(schema)
            enum_type = schema.get("cls")
            if enum_type and issubclass(enum_type, enum.Enum) and "enum" in result:
                result["enum"] = [member.name for member in enum_type]
            return result

    schema: dict[str, Any] = python_type.model_json_schema(schema_generator=NamedEnumSchema)
    return schema


def _to_name(enum_type: type[enum.Enum], data: Any) -> Any:
    if isinstance(data, str | int | float):
        try:
            return enum_type(data).name
        except ValueError:
            return data
    return data


def _to_member(enum_type: type[enum.Enum], data: Any) -> Any:
    if isinstance(data, str) and data in enum_type.__members__:
        return enum_type[data]
    return data


def _walk_enums(data: Any, python_type: Any, convert: Callable[[type[enum.Enum], Any], Any]) -> Any:
    """Pydantic JSON data with ``convert`` applied to every enum field, as the SDK walks it.

    The SDK writes enum fields of pydantic models by member name (``_to_name``) and reads the
    names back (``_to_member``); it looks through ``Optional[T]``, nested models, lists and
    dicts, and leaves everything else as pydantic dumped it.
    """
    python_type = strip_annotated(python_type)
    if data is None:
        return None
    variants = [v for v in typing.get_args(python_type) if v is not NONE_TYPE]
    # The SDK looks through typing.Optional[E] only: an `E | None` field keeps enum values.
    if typing.get_origin(python_type) is typing.Union and len(variants) == 1:
        python_type = variants[0]
    if isinstance(python_type, type) and issubclass(python_type, enum.Enum):
        return convert(python_type, data)
    if _is_pydantic_model(python_type) and isinstance(data, dict):
        hints = typing.get_type_hints(python_type)
        return {k: _walk_enums(v, hints[k], convert) if k in hints else v for k, v in data.items()}
    origin, arguments = typing.get_origin(python_type), typing.get_args(python_type)
    if origin is list and arguments and isinstance(data, list):
        return [_walk_enums(item, arguments[0], convert) for item in data]
    if origin is dict and len(arguments) == 2 and isinstance(data, dict):
        key_type, value_type = arguments
        return {
            _walk_enums(k, key_type, convert): _walk_enums(v, value_type, convert)
            for k, v in data.items()
        }
    return data


def _model_to_literal(value: Any, python_type: Any, _: Options) -> Literal:
    if not isinstance(value, python_type):
        raise mismatch(value, python_type)
    if value.model_config.get("ser_json_inf_nan", "null") == "null" and _has_non_finite(
        value.model_dump()
    ):
        # pydantic's JSON writes inf, -inf and nan all as null: the literal (and so the
        # cache key) could not tell them apart, and a float field would not read back.
        raise TypeError(
            f"{type(value).__qualname__} holds a non-finite float, which pydantic's JSON "
            "writes as null; set model_config ser_json_inf_nan='constants' to keep it"
        )
    data = _walk_enums(json.loads(value.model_dump_json()), type(value), _to_name)
    return tagged_binary(msgpack.packb(data), MSGPACK_TAG)


def _has_non_finite(data: Any) -> bool:
    """Return whether ``data`` (a model's Python dump) contains inf, -inf or nan."""
    if isinstance(data, float):
        return not math.isfinite(data)
    if isinstance(data, dict):
        return any(_has_non_finite(item) for item in data.values())
    if isinstance(data, list | tuple | set | frozenset):
        return any(_has_non_finite(item) for item in data)
    return False


def _model_from_literal(literal: Literal, python_type: Any) -> Any:
    data = _walk_enums(
        _unpack(binary_value(literal, MSGPACK_TAG, python_type)), python_type, _to_member
    )
    try:
        return python_type.model_validate(data)
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise TypeError(f"msgpack data is not a {python_type.__qualname__}: {error}") from error


PYDANTIC = Converter(
    name="Pydantic Transformer",
    handles=_is_pydantic_model,
    literal_type=lambda t: struct_literal_type("Pydantic Transformer", _pydantic_schema(t)),
    to_literal=_model_to_literal,
    from_literal=_model_from_literal,
)

for _converter in (DICT, DATACLASS, PYDANTIC):
    add_builtin(_converter)
