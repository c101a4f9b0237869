"""Python values <-> Flyte literals, keyed as the Flyte 2 SDK keys task inputs.

:func:`to_literal` turns a Python value into a ``flyteidl2.core.literals_pb2.Literal``,
:func:`from_literal` turns it back, and :func:`literal_type` and :func:`interface_variable`
describe a Python type in a task interface. For the types the Flyte 2 SDK converts natively
(None, bool, int, float, str, datetime, date, timedelta, Enum, ``list[T]``, ``dict[str, T]``,
unions, untyped ``dict``, dataclasses, pydantic models) the literal is the one
``flyte.types.TypeEngine.to_literal`` makes, so a value hashes as it would as a Flyte task
input. Where the SDK pickles (bytes, sets) or builds a pydantic model (typed tuples), stable
encodings of taskcache's own are used, so that keys do not depend on the Python version, the
hash seed or pydantic. Arrays and data frames
are keyed by a digest of their content and, given a :class:`taskcache.storage.BlobStore`,
written to it.

It owns value conversion only: it must not compute cache keys, call clients or know about
decorators.
"""

from __future__ import annotations

import pickle
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from flyteidl2.core import interface_pb2, literals_pb2, types_pb2

from taskcache.values import _builtin, _data, _msgpack, _stable  # noqa: F401 -- add converters
from taskcache.values._builtin import tagged_binary
from taskcache.values._engine import (
    Converter,
    NoConverterError,
    Options,
    add_registered,
    from_literal_of,
    infer_type,
    literal_type_of,
    registry_version,
    to_literal_of,
    type_name,
)

if typing.TYPE_CHECKING:
    from taskcache.storage import BlobStore

__all__ = [
    "PICKLE_TAG",
    "NoConverterError",
    "from_literal",
    "infer_type",
    "interface_variable",
    "literal_type",
    "register",
    "registry_version",
    "to_literal",
]

T = TypeVar("T")

PICKLE_TAG = "pickle"
"""The Binary tag of a pickled literal (see :func:`to_literal`'s ``pickle_fallback``)."""


def _pickled_type(python_type: Any) -> types_pb2.LiteralType:
    return types_pb2.LiteralType(
        simple=types_pb2.SimpleType.BINARY,
        structure=types_pb2.TypeStructure(tag=PICKLE_TAG),
        metadata={"python_class_name": type_name(python_type)},
    )


def to_literal(
    value: object,
    python_type: Any = None,
    *,
    store: BlobStore | None = None,
    pickle_fallback: bool = False,
) -> literals_pb2.Literal:
    """Return the Flyte literal of ``value`` as a ``python_type``.

    ``python_type`` None means :func:`infer_type` of the value. With ``store``, large data
    (arrays, data frames) is written to it and referenced by URI; without, it is still keyed
    by its content digest (``Literal.hash``), never by a path. With ``pickle_fallback`` a
    value whose type has no converter (at any depth) is pickled whole into a Binary literal
    tagged :data:`PICKLE_TAG`: for outputs of trusted catalogs only, since unpickling runs
    code, and never for keys, since pickles differ between Python versions.

    Raises NoConverterError (a TypeError) when no converter handles the type, TypeError when
    the value does not fit it.
    """
    if python_type is None:
        python_type = infer_type(value)
    try:
        return to_literal_of(value, python_type, Options(store=store))
    except NoConverterError:
        if not pickle_fallback:
            raise
    return tagged_binary(pickle.dumps(value), PICKLE_TAG)


def from_literal(literal: literals_pb2.Literal, python_type: Any) -> object:
    """Return the Python value of ``literal`` read as a ``python_type``.

    Blobs that the literal references (arrays, data frames) are read through fsspec. A Binary
    literal tagged :data:`PICKLE_TAG` is unpickled whatever ``python_type`` says: read such
    literals only from a trusted catalog. Raises NoConverterError when no converter handles
    the type, TypeError when the literal does not hold a value of it, and the storage's errors
    (NotFoundError, UnavailableError) when a blob cannot be read.
    """
    if literal.scalar.binary.tag == PICKLE_TAG:
        return pickle.loads(literal.scalar.binary.value)  # trusted catalogs only, as documented
    return from_literal_of(literal, python_type)


def literal_type(python_type: Any, *, pickle_fallback: bool = False) -> types_pb2.LiteralType:
    """Return the Flyte LiteralType of ``python_type``.

    With ``pickle_fallback`` a type that has no converter is a Binary tagged
    :data:`PICKLE_TAG` (what :func:`to_literal` makes with the same flag). Raises
    NoConverterError otherwise.
    """
    try:
        return literal_type_of(python_type)
    except NoConverterError:
        if not pickle_fallback:
            raise
    return _pickled_type(python_type)


def interface_variable(
    python_type: Any, description: str = "", *, pickle_fallback: bool = False
) -> interface_pb2.Variable:
    """Return the interface Variable of a parameter or output of ``python_type``.

    Its type is :func:`literal_type` (same flag, same errors). The Flyte 2 SDK leaves the
    description empty (and lists a task's variables sorted by name): with the default
    description the Variable is the SDK's.
    """
    variable_type = literal_type(python_type, pickle_fallback=pickle_fallback)
    return interface_pb2.Variable(type=variable_type, description=description)


def register(
    python_type: type[T],
    *,
    to_literal: Callable[[T], literals_pb2.Literal],
    from_literal: Callable[[literals_pb2.Literal, type[T]], T],
    literal_type: types_pb2.LiteralType,
    name: str | None = None,
) -> None:
    """Convert values of ``python_type`` and its subclasses with the given functions.

    ``to_literal(value)`` returns the literal of a value (it may call this module's
    :func:`to_literal` on parts of it); ``from_literal(literal, cls)`` returns the value of
    ``cls`` (the registered type or the subclass asked for); ``literal_type`` is the type's
    LiteralType. ``name`` (default: the type's qualified name) tags the type as a union
    variant. A registration wins over the built-in converters, the most specific one over its
    bases; registering a type again replaces its converter. Raises TypeError if
    ``python_type`` is not a class.
    """
    if not isinstance(python_type, type):
        raise TypeError(f"register() takes a class, got {python_type!r:.80}")
    # Kept serialized, so that neither the caller nor a reader can change it afterwards.
    fixed_type = literal_type.SerializeToString()

    def convert(value: Any, declared: Any, _: Options) -> literals_pb2.Literal:
        if not isinstance(value, declared):
            raise TypeError(f"expected a {type_name(declared)}, got {type(value).__qualname__}")
        return to_literal(value)

    add_registered(
        python_type,
        Converter(
            name=name or python_type.__qualname__,
            handles=lambda t: isinstance(t, type) and issubclass(t, python_type),
            literal_type=lambda _: types_pb2.LiteralType.FromString(fixed_type),
            to_literal=convert,
            from_literal=from_literal,
        ),
    )
