"""Stable encodings of taskcache's own where the Flyte 2 SDK pickles or needs pydantic.

The SDK pickles bytes and sets (pickles differ between Python versions, and a set's pickle
follows its hash-seeded iteration order) and wraps typed tuples in a generated pydantic model.
Here bytes are a Binary tagged ``bytes``, tuples a collection of their elements' literals,
and sets a collection whose elements are ordered by their literals' canonical bytes, so that
equal sets give equal literals whatever their insertion order or hash seed.
"""

from __future__ import annotations

import typing
from typing import Any

from flyteidl2.core import literals_pb2, types_pb2

from taskcache.values._builtin import (
    Literal,
    LiteralType,
    binary_value,
    mismatch,
    tagged_binary,
    type_argument,
    unexpected,
)
from taskcache.values._engine import (
    Converter,
    NoConverterError,
    Options,
    add_builtin,
    from_literal_of,
    literal_type_of,
    to_literal_of,
)

BYTES_TAG = "bytes"


def _bytes_to_literal(value: object, python_type: Any, _: Options) -> Literal:
    if not isinstance(value, bytes):
        raise mismatch(value, python_type)
    return tagged_binary(value, BYTES_TAG)


BYTES = Converter(
    name="bytes",
    handles=lambda t: t is bytes,
    literal_type=lambda _: LiteralType(
        simple=types_pb2.SimpleType.BINARY, structure=types_pb2.TypeStructure(tag=BYTES_TAG)
    ),
    to_literal=_bytes_to_literal,
    from_literal=lambda literal, t: binary_value(literal, BYTES_TAG, t),
)


def _collection(literals: list[Literal]) -> Literal:
    return Literal(collection=literals_pb2.LiteralCollection(literals=literals))


def _elements(literal: Literal, python_type: Any) -> Any:
    if literal.WhichOneof("value") != "collection":
        raise unexpected(literal, python_type)
    return literal.collection.literals


def _tuple_element_types(python_type: Any, length: int | None) -> list[Any]:
    """The element types of a tuple of ``length`` (None: unknown yet) elements."""
    arguments = typing.get_args(python_type)
    if python_type is tuple:
        raise NoConverterError(python_type, "give its element types, e.g. tuple[int, str]")
    if len(arguments) == 2 and arguments[1] is Ellipsis:
        return [arguments[0]] * (length or 0)
    if arguments == ((),):
        # tuple[()] is the empty tuple's type on Python versions that spell it so.
        return []
    return list(arguments)


def _is_variadic(python_type: Any) -> bool:
    arguments = typing.get_args(python_type)
    return len(arguments) == 2 and arguments[1] is Ellipsis


def _tuple_literal_type(python_type: Any) -> LiteralType:
    structure = types_pb2.TypeStructure(tag="tuple")
    if _is_variadic(python_type):
        element = literal_type_of(typing.get_args(python_type)[0])
        return LiteralType(collection_type=element, structure=structure)
    for index, element_type in enumerate(_tuple_element_types(python_type, None)):
        structure.dataclass_type[f"item_{index}"].CopyFrom(literal_type_of(element_type))
    return LiteralType(simple=types_pb2.SimpleType.STRUCT, structure=structure)


def _tuple_to_literal(value: object, python_type: Any, options: Options) -> Literal:
    if not isinstance(value, tuple):
        raise mismatch(value, python_type)
    element_types = _tuple_element_types(python_type, len(value))
    if len(element_types) != len(value):
        raise mismatch(value, python_type)
    items = zip(value, element_types, strict=True)
    return _collection([to_literal_of(item, element, options) for item, element in items])


def _tuple_from_literal(literal: Literal, python_type: Any) -> tuple[Any, ...]:
    elements = _elements(literal, python_type)
    element_types = _tuple_element_types(python_type, len(elements))
    if len(element_types) != len(elements):
        raise unexpected(literal, python_type)
    items = zip(elements, element_types, strict=True)
    return tuple(from_literal_of(item, element) for item, element in items)


TUPLE = Converter(
    name="tuple",
    handles=lambda t: t is tuple or typing.get_origin(t) is tuple,
    literal_type=_tuple_literal_type,
    to_literal=_tuple_to_literal,
    from_literal=_tuple_from_literal,
)


def _set_kind(python_type: Any) -> type:
    kind = typing.get_origin(python_type) or python_type
    return kind if kind in (set, frozenset) else set


def _set_literal_type(python_type: Any) -> LiteralType:
    structure = types_pb2.TypeStructure(tag=_set_kind(python_type).__name__)
    element = literal_type_of(type_argument(python_type))
    return LiteralType(collection_type=element, structure=structure)


def _set_to_literal(value: object, python_type: Any, options: Options) -> Literal:
    if not isinstance(value, set | frozenset):
        raise mismatch(value, python_type)
    element = type_argument(python_type)
    literals = [to_literal_of(item, element, options) for item in value]
    # A set has no order of its own (its iteration order follows the hash seed): order the
    # elements by their literals' canonical bytes, the same in every process.
    literals.sort(key=lambda literal: literal.SerializeToString(deterministic=True))
    return _collection(literals)


def _set_from_literal(literal: Literal, python_type: Any) -> set[Any] | frozenset[Any]:
    element = type_argument(python_type)
    items = (from_literal_of(item, element) for item in _elements(literal, python_type))
    result: set[Any] | frozenset[Any] = _set_kind(python_type)(items)
    return result


SET = Converter(
    name="set",
    handles=lambda t: t in (set, frozenset) or typing.get_origin(t) in (set, frozenset),
    literal_type=_set_literal_type,
    to_literal=_set_to_literal,
    from_literal=_set_from_literal,
)

for _converter in (BYTES, TUPLE, SET):
    add_builtin(_converter)
