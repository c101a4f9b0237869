"""The converter table and the dispatch from a Python type to its converter.

A :class:`Converter` turns values of the Python types it handles into Flyte literals and
back, and names their LiteralType. Built-in converters are added by the modules beside this
one when :mod:`taskcache.values` is imported; users add theirs with :func:`register`, which
wins over the built-ins for the registered type and its subclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from flyteidl2.core import literals_pb2, types_pb2

if typing.TYPE_CHECKING:
    from taskcache.storage import BlobStore

NONE_TYPE: type = type(None)


class NoConverterError(TypeError):
    """No converter handles ``python_type``: the value cannot become a Flyte literal.

    ``python_type`` is the offending type (possibly nested inside the type asked for); the
    message names it and the ways out, and stays a sentence that a caller can prefix with
    the parameter it was converting (``f"parameter 'x': {error}"``).
    """

    def __init__(self, python_type: Any, detail: str = "") -> None:
        self.python_type = python_type
        reason = f" ({detail})" if detail else ""
        super().__init__(
            f"no converter for type {type_name(python_type)}{reason}: register one with "
            "taskcache.values.register(...), or leave the parameter out of the cache key "
            "(ignore=...); an output may be pickled instead (pickle_fallback, trusted "
            "catalogs only)"
        )


@dataclasses.dataclass(frozen=True)
class Options:
    """How one top-level :func:`taskcache.values.to_literal` call converts.

    ``store`` receives large data (arrays, frames) when outputs are converted; without one,
    large data is keyed by its content digest only.
    """

    store: BlobStore | None = None


@dataclasses.dataclass(frozen=True)
class Converter:
    """One way between Python values and Flyte literals.

    ``name`` is the structure tag that a union variant of this converter's type carries
    (the Flyte SDK's transformer name, where the SDK has one). ``handles(python_type)``
    says whether this converter is for ``python_type`` (already stripped of ``Annotated``).
    ``literal_type(python_type)``, ``to_literal(value, python_type, options)`` and
    ``from_literal(literal, python_type)`` convert; they raise TypeError (or
    NoConverterError) for values that do not fit the type.
    """

    name: str
    handles: Callable[[Any], bool]
    literal_type: Callable[[Any], types_pb2.LiteralType]
    to_literal: Callable[[Any, Any, Options], literals_pb2.Literal]
    from_literal: Callable[[literals_pb2.Literal, Any], Any]


_BUILTINS: list[Converter] = []
_REGISTERED: dict[type, Converter] = {}
# Which converter handles a type, remembered per type: the dispatch walks every built-in's
# ``handles`` otherwise, on every value converted. Cleared whenever the table changes.
_FOUND: dict[Any, tuple[int, Converter]] = {}
# Bumped on every change of the table, so that callers caching anything derived from a
# conversion (the decorator's per-function keys) know when to drop it.
_version = 0


def registry_version() -> int:
    """Return a counter that grows whenever a converter is added or replaced."""
    return _version


def _changed() -> None:
    global _version  # noqa: PLW0603 - one counter per process, read by registry_version()
    _FOUND.clear()
    _version += 1


def add_builtin(converter: Converter) -> None:
    """Append a built-in converter; earlier ones are asked first."""
    _BUILTINS.append(converter)
    _changed()


def add_registered(python_type: type, converter: Converter) -> None:
    """Make ``converter`` the one for ``python_type`` and its subclasses (replacing any)."""
    _REGISTERED[python_type] = converter
    _changed()


def strip_annotated(python_type: Any) -> Any:
    """Return ``T`` for ``Annotated[T, ...]`` (at the top level), else ``python_type``."""
    if type(python_type) is type:  # a plain class (the common case) is never Annotated
        return python_type
    while typing.get_origin(python_type) is typing.Annotated:
        python_type = typing.get_args(python_type)[0]
    return python_type


def is_union(python_type: Any) -> bool:
    """Return whether ``python_type`` is ``Union[...]``, ``Optional[...]`` or ``A | B``."""
    origin = typing.get_origin(python_type)
    return origin is typing.Union or origin is types.UnionType


def type_name(python_type: Any) -> str:
    """Return a readable name of ``python_type`` for messages (``list[int]``, ``Point``)."""
    if python_type is NONE_TYPE:
        return "None"
    if isinstance(python_type, type) and not typing.get_args(python_type):
        return python_type.__qualname__
    return repr(python_type).replace("typing.", "")


def find(python_type: Any) -> Converter:
    """Return the converter for ``python_type``; NoConverterError if none handles it."""
    version = _version
    try:
        found = _FOUND.get(python_type)
    except TypeError:  # an unhashable annotation: looked up afresh every time
        return _search(python_type)
    # Tagged with the table's version: a registration racing with this lookup cannot leave
    # a stale answer behind.
    if found is not None and found[0] == version:
        return found[1]
    converter = _search(python_type)
    _FOUND[python_type] = (version, converter)
    return converter


def _search(python_type: Any) -> Converter:
    python_type = strip_annotated(python_type)
    if python_type is None:
        python_type = NONE_TYPE
    if _REGISTERED and isinstance(python_type, type):
        # The most specific registration wins: walk the MRO from the type itself upwards.
        for base in python_type.__mro__:
            registered = _REGISTERED.get(base)
            if registered is not None:
                return registered
    for converter in _BUILTINS:
        if converter.handles(python_type):
            return converter
    raise NoConverterError(python_type)


def literal_type_of(python_type: Any) -> types_pb2.LiteralType:
    """Return the LiteralType of ``python_type`` (see :func:`taskcache.values.literal_type`)."""
    return find(python_type).literal_type(strip_annotated(python_type))


def to_literal_of(value: object, python_type: Any, options: Options) -> literals_pb2.Literal:
    """Convert ``value`` as ``python_type`` (see :func:`taskcache.values.to_literal`)."""
    return find(python_type).to_literal(value, strip_annotated(python_type), options)


def from_literal_of(literal: literals_pb2.Literal, python_type: Any) -> Any:
    """Read ``literal`` as ``python_type`` (see :func:`taskcache.values.from_literal`)."""
    return find(python_type).from_literal(literal, strip_annotated(python_type))


def _common_type(types_seen: list[Any]) -> Any:
    """One type for elements of these types: the type, a Union of them, or None if empty.

    A Union lists its types sorted by name, so that it (and the LiteralType an interface
    holds) does not depend on the order of the elements.
    """
    unique = sorted(set(types_seen), key=type_name)
    if not unique:
        # An empty container's literal is the same for every element type; None names one.
        return NONE_TYPE
    if len(unique) == 1:
        return unique[0]
    return typing.Union[tuple(unique)]  # noqa: UP007 -- a Union built from a runtime tuple


def infer_type(value: object) -> Any:
    """Return the Python type that converts ``value`` when no type hint says one.

    Lists, dicts with ``str`` keys, sets and tuples get element types from their elements
    (a ``Union`` of them, sorted by name, when they differ; ``None`` for an empty container,
    whose literal is the same for every element type); a dict with other keys is an untyped
    ``dict``; any other value's type is ``type(value)``. It never raises: whether a converter
    exists is decided when the type is converted.
    """
    if type(value) is list:
        return list[_common_type([infer_type(item) for item in value])]  # type: ignore[misc]
    if type(value) is dict:
        if all(type(key) is str for key in value):
            return dict[str, _common_type([infer_type(item) for item in value.values()])]  # type: ignore[misc]
        return dict
    if type(value) in (set, frozenset):
        element = _common_type([infer_type(item) for item in value])  # type: ignore[attr-defined]
        return type(value)[element]  # type: ignore[index]
    if type(value) is tuple:
        return tuple[tuple(infer_type(item) for item in value)]  # type: ignore[misc]
    return type(value)
