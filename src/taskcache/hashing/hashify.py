"""Flyte's ``hashify`` of input literals and ``cache_ignore_input_vars``: the rule, declared once.

Before hashing a task's inputs Flyte rewrites each literal: one carrying a ``hash`` becomes
``Literal{hash}``; a collection or a map becomes a bare Literal holding only its (hashified)
elements, metadata dropped; any other literal stays as it is. Ignored input names are left out
of the top-level map only. :data:`RULE` states this as data; :func:`literal_map_digest` applies it
on the pure-Python route and :mod:`taskcache.hashing.plans` compiles the same rule into the
compiled route's plans, so the two cannot drift apart.

Pure: no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from taskcache.errors import InvalidArgumentError
from taskcache.hashing import jsonpb_rules as rules
from taskcache.hashing.direct import hash_message
from taskcache.hashing.objecthash import (
    EMPTY_DICT_HASH,
    hash_dict,
    hash_key,
    hash_list,
    hash_unicode,
)


@dataclass(frozen=True)
class HashifyRule:
    """Which messages hashify rewrites, and how.

    ``literal_types``: full names of the rewritten message (Flyte 1 and Flyte 2 Literal).
    ``override``: the string field that, when non-empty, replaces the whole literal.
    ``pruned``: oneof member -> the only field its message keeps (its elements hashified).
    ``map_field``: the field of the top-level LiteralMap holding the inputs by name.
    """

    literal_types: frozenset[str]
    override: str
    pruned: Mapping[str, str]
    map_field: str


RULE = HashifyRule(
    literal_types=frozenset({"flyteidl.core.Literal", "flyteidl2.core.Literal"}),
    override="hash",
    pruned={"collection": "literals", "map": "literals"},
    map_field="literals",
)


def hashified_literal_hash(literal: Any) -> bytes:
    """Return the objecthash of ``hashify(literal)`` without building the rewritten copy."""
    override: str = getattr(literal, RULE.override)
    if override:
        key = _key_hash(literal.DESCRIPTOR, RULE.override)
        return hash_dict([key + hash_unicode(override)])
    for member, kept in RULE.pruned.items():
        if literal.HasField(member):
            pruned = pruned_message_hash(getattr(literal, member), kept, ())
            return hash_dict([_key_hash(literal.DESCRIPTOR, member) + pruned])
    return hash_message(literal)


def pruned_message_hash(message: Any, kept: str, ignore: Collection[str]) -> bytes:
    """Return the hash of ``message`` keeping only field ``kept``, its literals hashified.

    ``kept`` is a repeated or map field of Literals; map entries named in ``ignore`` are
    dropped. An empty field is absent, as jsonpb leaves it out.
    """
    field = message.DESCRIPTOR.fields_by_name[kept]
    value = getattr(message, kept)
    if rules.is_map_field(field):
        entries = [
            hash_key(name) + hashified_literal_hash(value[name])
            for name in value
            if name not in ignore
        ]
        if not entries:
            return EMPTY_DICT_HASH
        body = hash_dict(entries)
    else:
        if not value:
            return EMPTY_DICT_HASH
        body = hash_list([hashified_literal_hash(element) for element in value])
    return hash_dict([_key_hash(message.DESCRIPTOR, kept) + body])


def literal_map_digest(literal_map: Any, ignore: Collection[str]) -> bytes:
    """Return the objecthash of Flyte's hashified ``literal_map`` without ``ignore``'d inputs.

    Raises InvalidArgumentError (field ``inputs``) when the map misses required fields,
    TypeError when ``literal_map`` is not a LiteralMap.
    """
    descriptor = getattr(literal_map, "DESCRIPTOR", None)
    if descriptor is None or RULE.map_field not in descriptor.fields_by_name:
        name = getattr(descriptor, "full_name", type(literal_map).__name__)
        raise TypeError(f"literal_map must be a LiteralMap, not {name}")
    if not literal_map.IsInitialized():
        raise InvalidArgumentError("literal map misses required fields", field="inputs")
    return pruned_message_hash(literal_map, RULE.map_field, ignore)


def literal_map_text(literal_map: Any, ignore: Collection[str]) -> str:
    """Return :func:`literal_map_digest` as URL-safe base64 without padding (Flyte's text)."""
    digest = literal_map_digest(literal_map, ignore)
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@lru_cache(maxsize=256)
def _key_hash(descriptor: Any, name: str) -> bytes:
    return hash_key(rules.field_json_name(descriptor.fields_by_name[name]))
