"""Converters that reproduce the Flyte 2 SDK's literals exactly.

None, bool, int, float, str, datetime, date, timedelta, Enum, ``list[T]``, ``dict[str, T]``
and unions (``Optional[T]``, ``A | B``) give the literal and LiteralType that
``flyte.types.TypeEngine`` gives; each converter's name is the SDK transformer's name, which a
union variant carries as its structure tag.
"""

from __future__ import annotations

import datetime
import enum
import typing
from collections.abc import Callable
from typing import Any, TypeAlias

from flyteidl2.core import literals_pb2, types_pb2

from taskcache.values._engine import (
    NONE_TYPE,
    Converter,
    NoConverterError,
    Options,
    add_builtin,
    find,
    from_literal_of,
    is_union,
    literal_type_of,
    strip_annotated,
    to_literal_of,
    type_name,
)

Literal: TypeAlias = literals_pb2.Literal
LiteralType: TypeAlias = types_pb2.LiteralType


def mismatch(value: object, python_type: Any) -> TypeError:
    """Return the TypeError for a value that is not of the type it is converted as."""
    return TypeError(
        f"expected a value of type {type_name(python_type)}, got {type(value).__qualname__} "
        f"{value!r:.80}"
    )


def unexpected(literal: Literal, python_type: Any) -> TypeError:
    """Return the TypeError for a literal that does not hold a value of ``python_type``."""
    kind = literal.WhichOneof("value")
    if kind == "scalar":
        kind = f"scalar.{literal.scalar.WhichOneof('value')}"
    return TypeError(f"a {kind} literal does not hold a {type_name(python_type)}")


def tagged_binary(data: bytes, tag: str) -> Literal:
    """The literal of a Binary scalar holding ``data`` under ``tag``."""
    return Literal(scalar=literals_pb2.Scalar(binary=literals_pb2.Binary(value=data, tag=tag)))


def binary_value(literal: Literal, tag: str, python_type: Any) -> bytes:
    """The data of a Binary literal tagged ``tag``; TypeError for any other literal."""
    if literal.WhichOneof("value") != "scalar" or literal.scalar.binary.tag != tag:
        raise unexpected(literal, python_type)
    data: bytes = literal.scalar.binary.value
    return data


def _primitive(literal: Literal, field: str, python_type: Any) -> Any:
    # Every Primitive field is in its oneof, and a literal that is not a scalar reads as an
    # empty one: one oneof check covers both (and reads the submessages once).
    primitive = literal.scalar.primitive
    if primitive.WhichOneof("value") != field:
        raise unexpected(literal, python_type)
    return getattr(primitive, field)


def _simple(
    python_type: type,
    simple: int,
    field: str,
    *,
    accepts: Callable[[object], bool] | None = None,
    encode: Callable[[Any], object] = lambda value: value,
    decode: Callable[[Any], object] | None = None,
) -> Converter:
    """A converter for one scalar type, named as the type (the SDK's ``SimpleTransformer``):
    values ``accepts`` takes (default: instances of the type) go ``encode``-d into the
    primitive's ``field`` and come back ``decode``-d (default: as they are).
    """
    name = python_type.__name__
    accepted = accepts if accepts is not None else lambda value: isinstance(value, python_type)

    def to_literal(value: object, _: Any, __: Options) -> Literal:
        if not accepted(value):
            raise mismatch(value, python_type)
        try:
            primitive = literals_pb2.Primitive(**{field: encode(value)})
        except ValueError as error:  # an int past 64 bits, a datetime past year 9999
            raise TypeError(f"{value!r:.80} does not fit a Flyte {name}: {error}") from error
        return Literal(scalar=literals_pb2.Scalar(primitive=primitive))

    def from_literal(literal: Literal, _: Any) -> object:
        value = _primitive(literal, field, python_type)
        return value if decode is None else decode(value)  # None: stored as it is

    return Converter(
        name=name,
        handles=lambda t: t is python_type,
        literal_type=lambda _: LiteralType(simple=simple),
        to_literal=to_literal,
        from_literal=from_literal,
    )


def _utc(timestamp: Any) -> datetime.datetime:
    # The SDK reads every timestamp back as an aware UTC datetime.
    value: datetime.datetime = timestamp.ToDatetime().replace(tzinfo=datetime.UTC)
    return value


def _to_none(value: object, _: Any, __: Options) -> Literal:
    if value is not None:
        raise mismatch(value, NONE_TYPE)
    return Literal(scalar=literals_pb2.Scalar(none_type=literals_pb2.Void()))


def _from_none(literal: Literal, _: Any) -> None:
    if literal.WhichOneof("value") != "scalar" or not literal.scalar.HasField("none_type"):
        raise unexpected(literal, NONE_TYPE)


_SIMPLE = types_pb2.SimpleType
NONE = Converter(
    name="none",
    handles=lambda t: t is NONE_TYPE,
    literal_type=lambda _: LiteralType(simple=_SIMPLE.NONE),
    to_literal=_to_none,
    from_literal=_from_none,
)
# bool is an int subclass, but neither the SDK (protobuf refuses it) nor we take True as an int.
INT = _simple(
    int,
    _SIMPLE.INTEGER,
    "integer",
    accepts=lambda v: isinstance(v, int) and not isinstance(v, bool),
)
# An int is a valid float argument (the SDK's float transformer coerces it too).
FLOAT = _simple(
    float,
    _SIMPLE.FLOAT,
    "float_value",
    accepts=lambda v: isinstance(v, float | int) and not isinstance(v, bool),
    encode=float,
)
BOOL = _simple(bool, _SIMPLE.BOOLEAN, "boolean")
STR = _simple(str, _SIMPLE.STRING, "string_value")
# protobuf's Timestamp takes a naive datetime as UTC and converts an aware one to UTC: the
# SDK hands the datetime to it as is, and so do we.
DATETIME = _simple(datetime.datetime, _SIMPLE.DATETIME, "datetime", decode=_utc)
DATE = _simple(
    datetime.date,
    _SIMPLE.DATETIME,
    "datetime",
    encode=lambda day: datetime.datetime.combine(day, datetime.time.min),
    decode=lambda timestamp: _utc(timestamp).date(),
)
TIMEDELTA = _simple(
    datetime.timedelta,
    _SIMPLE.DURATION,
    "duration",
    decode=lambda duration: duration.ToTimedelta(),
)


def _is_enum(python_type: Any) -> bool:
    return isinstance(python_type, type) and issubclass(python_type, enum.Enum)


def _check_enum(python_type: type[enum.Enum]) -> list[str]:
    """The member names of an enum the SDK transports, or NoConverterError (as the SDK)."""
    names = [member.name for member in python_type]
    if not names:
        raise NoConverterError(python_type, "an enum without members")
    # The member's name goes on the wire, so a member must be found again by its name: not
    # so for Flag composites; and the SDK takes only str-valued enums and IntEnum.
    if issubclass(python_type, enum.Flag):
        raise NoConverterError(python_type, "a Flag enum's composites have no name")
    first = next(iter(python_type)).value
    if not isinstance(first, str) and not issubclass(python_type, enum.IntEnum):
        raise NoConverterError(python_type, "only str-valued enums and IntEnum are supported")
    return names


def _enum_literal_type(python_type: type[enum.Enum]) -> LiteralType:
    return LiteralType(enum_type=types_pb2.EnumType(values=_check_enum(python_type)))


def _enum_to_literal(value: object, python_type: type[enum.Enum], _: Options) -> Literal:
    _check_enum(python_type)
    if not isinstance(value, python_type):
        raise mismatch(value, python_type)
    return Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=value.name))
    )


def _enum_from_literal(literal: Literal, python_type: type[enum.Enum]) -> enum.Enum:
    name = _primitive(literal, "string_value", python_type)
    try:
        return python_type[name]
    except KeyError:
        raise TypeError(f"{name!r} is not a member of {type_name(python_type)}") from None


ENUM = Converter(
    name="DefaultEnumTransformer",
    handles=_is_enum,
    literal_type=_enum_literal_type,
    to_literal=_enum_to_literal,
    from_literal=_enum_from_literal,
)


def type_argument(python_type: Any, index: int = 0) -> Any:
    """Return the ``index``-th argument of a generic alias, or raise NoConverterError."""
    arguments = typing.get_args(python_type)
    if len(arguments) <= index:
        raise NoConverterError(python_type, "give its element types, e.g. list[int]")
    return arguments[index]


def _list_to_literal(value: object, python_type: Any, options: Options) -> Literal:
    if type(value) is not list:
        raise mismatch(value, python_type)
    element = type_argument(python_type)
    items = [to_literal_of(item, element, options) for item in value]
    return Literal(collection=literals_pb2.LiteralCollection(literals=items))


def _list_from_literal(literal: Literal, python_type: Any) -> list[Any]:
    if literal.WhichOneof("value") != "collection":
        raise unexpected(literal, python_type)
    element = type_argument(python_type)
    return [from_literal_of(item, element) for item in literal.collection.literals]


LIST = Converter(
    name="Typed List",
    handles=lambda t: t is list or typing.get_origin(t) is list,
    literal_type=lambda t: LiteralType(collection_type=literal_type_of(type_argument(t))),
    to_literal=_list_to_literal,
    from_literal=_list_from_literal,
)


def is_string_keyed_dict(python_type: Any) -> bool:
    """Return whether ``python_type`` is ``dict[str, T]`` (a Flyte map, not a msgpack blob)."""
    arguments = typing.get_args(python_type)
    return (
        typing.get_origin(python_type) is dict
        and len(arguments) == 2
        and strip_annotated(arguments[0]) is str
    )


def _map_to_literal(value: object, python_type: Any, options: Options) -> Literal:
    if type(value) is not dict:
        raise mismatch(value, python_type)
    element = type_argument(python_type, 1)
    literals: dict[str, Literal] = {}
    for key, item in value.items():
        if type(key) is not str:
            raise TypeError(f"a {type_name(python_type)} has str keys, got {key!r:.80}")
        literals[key] = to_literal_of(item, element, options)
    return Literal(map=literals_pb2.LiteralMap(literals=literals))


def _map_from_literal(literal: Literal, python_type: Any) -> dict[str, Any]:
    if literal.WhichOneof("value") != "map":
        raise unexpected(literal, python_type)
    element = type_argument(python_type, 1)
    return {key: from_literal_of(item, element) for key, item in literal.map.literals.items()}


MAP = Converter(
    name="Typed Dict",
    handles=is_string_keyed_dict,
    literal_type=lambda t: LiteralType(map_value_type=literal_type_of(type_argument(t, 1))),
    to_literal=_map_to_literal,
    from_literal=_map_from_literal,
)


def _tagged(python_type: Any) -> LiteralType:
    """The union variant of ``python_type``: its LiteralType tagged with its converter's name."""
    tagged = LiteralType()
    tagged.CopyFrom(literal_type_of(python_type))
    tagged.structure.CopyFrom(types_pb2.TypeStructure(tag=find(python_type).name))
    return tagged


def _union_to_literal(value: object, python_type: Any, options: Options) -> Literal:
    variants = typing.get_args(python_type)
    # As in the SDK: the variant that is the value's own type first, else the only variant
    # that takes it (two that both take it are ambiguous).
    chosen = [variant for variant in variants if variant is type(value)]
    converted: list[tuple[Any, Literal]] = []
    if chosen:
        converted.append((chosen[0], to_literal_of(value, chosen[0], options)))
    else:
        for variant in variants:
            try:
                converted.append((variant, to_literal_of(value, variant, options)))
            except TypeError:
                continue
    if not converted:
        raise mismatch(value, python_type)
    if len(converted) > 1:
        names = ", ".join(type_name(variant) for variant, _ in converted)
        raise TypeError(
            f"{value!r:.80} fits more than one type of {type_name(python_type)}: {names}"
        )
    variant, literal = converted[0]
    union = literals_pb2.Union(value=literal, type=_tagged(variant))
    return Literal(scalar=literals_pb2.Scalar(union=union))


def _union_from_literal(literal: Literal, python_type: Any) -> Any:
    if literal.WhichOneof("value") != "scalar" or not literal.scalar.HasField("union"):
        raise unexpected(literal, python_type)
    tag = literal.scalar.union.type.structure.tag
    for variant in typing.get_args(python_type):
        if find(variant).name == tag:
            try:
                return from_literal_of(literal.scalar.union.value, variant)
            except TypeError:
                # Two variants may share a converter (two dataclasses): try the next one.
                continue
    raise unexpected(literal, python_type)


UNION = Converter(
    name="Typed Union",
    handles=is_union,
    literal_type=lambda t: LiteralType(
        union_type=types_pb2.UnionType(variants=[_tagged(v) for v in typing.get_args(t)])
    ),
    to_literal=_union_to_literal,
    from_literal=_union_from_literal,
)

for _converter in (NONE, BOOL, INT, FLOAT, STR, DATETIME, DATE, TIMEDELTA, ENUM, LIST, MAP, UNION):
    add_builtin(_converter)
