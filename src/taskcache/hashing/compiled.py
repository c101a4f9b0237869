"""The compiled route: Flyte's pbhash through the C wire-format walker (``_core``).

A message is serialized once (deterministically) and its bytes walked in C, driven by the plans
of :mod:`taskcache.hashing.plans`. Whatever the walker does not describe it refuses with
``Fallback``; those messages (and any that may miss proto2 required fields) are hashed by the
Python route instead, which returns the same digest or raises the same error.

Importing this module raises ImportError when the extension was not built. No I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from google.protobuf.message import Message

from taskcache.hashing import _core, direct, hashify
from taskcache.hashing._core import Fallback
from taskcache.hashing.jsonpb_rules import float32_as_json_double
from taskcache.hashing.plans import PlanTable

__all__ = [
    "Fallback",
    "literal_map_text",
    "pbhash",
    "sha256_backend",
    "strict_literal_map_text",
    "strict_pbhash",
]

sha256_backend = _core.sha256_backend
_core.configure(float32_as_json_double)
_PLANS = PlanTable(_core.compile)


def pbhash(message: Message) -> bytes:
    """Return Flyte's ``pbhash.ComputeHash`` of ``message`` (32 bytes).

    Raises InvalidArgumentError where Go's jsonpb marshaller would fail.
    """
    root = _PLANS.message_root(message.DESCRIPTOR)
    if root.may_miss_required and not message.IsInitialized():
        return direct.pbhash(message)  # raises the Python route's error
    try:
        return _core.digest(_PLANS.table, root.plan, _serialized(message), None)
    except Fallback:
        return direct.pbhash(message)


def strict_pbhash(message: Message) -> bytes:
    """Return :func:`pbhash` computed by the C walker alone (no Python-route fallback).

    Raises ``Fallback`` where its plans do not describe the message (tests use this to prove
    the walker itself, not the fallback, matches).
    """
    root = _PLANS.message_root(message.DESCRIPTOR)
    return _core.digest(_PLANS.table, root.plan, _serialized(message), None)


def strict_literal_map_text(literal_map: Any, ignore: Collection[str]) -> str:
    """Return :func:`literal_map_text` computed by the C walker alone, as :func:`strict_pbhash`."""
    root = _PLANS.literal_map_root(literal_map.DESCRIPTOR)
    return _core.digest_urlsafe(
        _PLANS.table, root.plan, _serialized(literal_map), _ignore_set(ignore)
    )


# LiteralMap descriptor -> its plan, for types that cannot miss required fields: the
# per-call path of the decorator's keys, kept to one dict lookup.
_WALKABLE_LITERAL_MAPS: dict[Any, int] = {}


def literal_map_text(literal_map: Any, ignore: Collection[str]) -> str:
    """Return :func:`taskcache.hashing.hashify.literal_map_text`, computed in C.

    Raises as that function does (InvalidArgumentError, TypeError for a non-LiteralMap).
    """
    plan = _WALKABLE_LITERAL_MAPS.get(getattr(literal_map, "DESCRIPTOR", None))
    if plan is None:
        return _first_literal_map_text(literal_map, ignore)
    try:
        return _core.digest_urlsafe(
            _PLANS.table,
            plan,
            literal_map.SerializeToString(deterministic=True),
            _ignore_set(ignore) if ignore else None,
        )
    except Fallback:
        return hashify.literal_map_text(literal_map, ignore)


def _first_literal_map_text(literal_map: Any, ignore: Collection[str]) -> str:
    descriptor = getattr(literal_map, "DESCRIPTOR", None)
    if descriptor is None:
        return hashify.literal_map_text(literal_map, ignore)  # raises its TypeError
    root = _PLANS.literal_map_root(descriptor)
    if root.may_miss_required:
        return hashify.literal_map_text(literal_map, ignore)
    _WALKABLE_LITERAL_MAPS[descriptor] = root.plan
    return literal_map_text(literal_map, ignore)


def _serialized(message: Any) -> bytes:
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def _ignore_set(ignore: Collection[str]) -> frozenset[str] | set[str] | None:
    if not ignore:
        return None
    if isinstance(ignore, set | frozenset):
        return ignore
    return frozenset(ignore)
