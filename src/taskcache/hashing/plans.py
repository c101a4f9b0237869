"""The compiled route's plans: per message type, what the C walker needs to hash its wire bytes.

A plan says, per field number, the field's JSON key hash, its value kind, its label (singular,
repeated, map), its enum names and the plan of nested messages. They are built once per
message type from the protobuf descriptors, using the same jsonpb rules
(:mod:`taskcache.hashing.jsonpb_rules`) and the same hashify rule (:mod:`taskcache.hashing.hashify`)
as the Python route, and compiled together into one table for :mod:`taskcache.hashing._core`.

Well-known types with special JSON forms delegate to a field (wrappers, Struct, ListValue,
Value); those the walker does not format itself (Any, Timestamp, Duration, messages with
extensions or groups) become callbacks into the Python route.

Pure: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor

from taskcache.hashing import jsonpb_rules as rules
from taskcache.hashing.direct import hash_message
from taskcache.hashing.hashify import RULE
from taskcache.hashing.jsonpb_rules import ReflectedField
from taskcache.hashing.objecthash import hash_key

ReflectedDescriptor = Any


class Mode(IntEnum):
    """How a message plan hashes (mirrors ``MODE_*`` in ``_core.c``)."""

    FIELDS = 0  # a dict of the present fields
    FIELD_ONE = 1  # the value of field 1 (wrappers, Struct, ListValue)
    ONE_OF = 2  # the value of the one field set (Value); none set is an error
    CALLBACK = 3  # handed to the Python route
    HASHIFY = 4  # Flyte's hashify of a Literal


class Label(IntEnum):
    """A field's shape (mirrors ``LABEL_*`` in ``_core.c``)."""

    SINGULAR = 0
    REPEATED = 1
    MAP = 2


_CALLBACK_TYPES = frozenset({rules.ANY, rules.DURATION, rules.TIMESTAMP})
_FIELD_ONE_TYPES = rules.WRAPPER_TYPES | {rules.STRUCT, rules.LIST_VALUE}


class Root(NamedTuple):
    """Where a root message type's plan sits, and whether it can miss required fields."""

    plan: int
    may_miss_required: bool


def _callback(descriptor: ReflectedDescriptor) -> Callable[[bytes], bytes]:
    message_class = message_factory.GetMessageClass(descriptor)

    def hash_serialized(data: bytes) -> bytes:
        return hash_message(message_class.FromString(data))

    return hash_serialized


def _walkable(descriptor: ReflectedDescriptor) -> bool:
    # Extensions are shown by ListFields() under "[full.name]" keys; groups use wire types the
    # walker does not read. Both are rare enough to leave to the Python route.
    if descriptor.extension_ranges:
        return False
    return all(field.type != FieldDescriptor.TYPE_GROUP for field in descriptor.fields)


class PlanTable:
    """Every plan built so far and their compiled table.

    ``table`` is replaced (never mutated) when new message types are added, so a walk holding
    the previous table stays valid.
    """

    def __init__(self, compile_plans: Callable[[tuple[Any, ...]], object]) -> None:
        """Plans are compiled with ``compile_plans`` (``_core.compile``)."""
        self._compile = compile_plans
        self._plans: list[Any] = []
        self._indexes: dict[tuple[Any, str], int] = {}
        self._roots: dict[tuple[Any, str], Root] = {}
        # Per-call lookups, keyed by the descriptor alone.
        self._message_roots: dict[Any, Root] = {}
        self._literal_map_roots: dict[Any, Root] = {}
        self._lock = threading.Lock()
        self.table: object = None

    def message_root(self, descriptor: ReflectedDescriptor) -> Root:
        """Return the plan hashing messages of ``descriptor`` as jsonpb would."""
        root = self._message_roots.get(descriptor)
        if root is None:
            root = self._message_roots[descriptor] = self._root(descriptor, "message")
        return root

    def literal_map_root(self, descriptor: ReflectedDescriptor) -> Root:
        """Return the plan hashing a LiteralMap of ``descriptor`` hashified (inputs' hash)."""
        root = self._literal_map_roots.get(descriptor)
        if root is None:
            root = self._literal_map_roots[descriptor] = self._root(descriptor, "inputs")
        return root

    def _root(self, descriptor: ReflectedDescriptor, variant: str) -> Root:
        root = self._roots.get((descriptor, variant))
        if root is not None:
            return root
        with self._lock:
            root = self._roots.get((descriptor, variant))
            if root is None:
                known = len(self._plans)
                if variant == "message":
                    index = self._message(descriptor)
                elif _is_literal_map(descriptor):
                    index = self._pruned(descriptor, RULE.map_field)
                else:
                    raise TypeError(f"literal_map must be a LiteralMap, not {descriptor.full_name}")
                if len(self._plans) != known:
                    self.table = self._compile(tuple(self._plans))
                root = Root(index, _may_miss_required(descriptor, set()))
                self._roots[(descriptor, variant)] = root
        return root

    def _reserve(self, key: tuple[Any, str]) -> tuple[int, bool]:
        index = self._indexes.get(key)
        if index is not None:
            return index, False
        index = len(self._plans)
        self._plans.append(None)
        self._indexes[key] = index
        return index, True

    def _message(self, descriptor: ReflectedDescriptor) -> int:
        index, new = self._reserve((descriptor, "message"))
        if not new:
            return index
        full_name = descriptor.full_name
        if full_name in _CALLBACK_TYPES or not _walkable(descriptor):
            self._plans[index] = (Mode.CALLBACK, (), _callback(descriptor), None)
        elif full_name in _FIELD_ONE_TYPES:
            field_one = (self._field(descriptor.fields_by_number[1]),)
            self._plans[index] = (Mode.FIELD_ONE, field_one, None, None)
        else:
            mode = Mode.ONE_OF if full_name == rules.VALUE else Mode.FIELDS
            fields = tuple(self._field(field) for field in descriptor.fields)
            self._plans[index] = (mode, fields, None, None)
        return index

    def _hashified(self, descriptor: ReflectedDescriptor) -> int:
        if descriptor.full_name not in RULE.literal_types:
            return self._message(descriptor)
        index, new = self._reserve((descriptor, "hashify"))
        if not new:
            return index
        override = descriptor.fields_by_name[RULE.override]
        pruned = tuple(
            (
                descriptor.fields_by_name[member].number,
                hash_key(rules.field_json_name(descriptor.fields_by_name[member])),
                self._pruned(descriptor.fields_by_name[member].message_type, kept),
            )
            for member, kept in RULE.pruned.items()
        )
        hashify = (
            override.number,
            hash_key(rules.field_json_name(override)),
            pruned,
            self._message(descriptor),
        )
        self._plans[index] = (Mode.HASHIFY, (), None, hashify)
        return index

    def _pruned(self, descriptor: ReflectedDescriptor, kept: str) -> int:
        index, new = self._reserve((descriptor, f"pruned:{kept}"))
        if not new:
            return index
        field = self._field(descriptor.fields_by_name[kept], element=self._hashified)
        self._plans[index] = (Mode.FIELDS, (field,), None, None)
        return index

    def _field(
        self, field: ReflectedField, element: Callable[[ReflectedDescriptor], int] | None = None
    ) -> tuple[Any, ...]:
        plan_of = element or self._message
        if rules.is_map_field(field):
            entry = field.message_type
            value = self._singular(entry.fields_by_name["value"], plan_of)
            return (
                field.number,
                field.type,
                Label.MAP,
                hash_key(rules.field_json_name(field)),
                -1,
                (),
                (),
                False,
                False,
                entry.fields_by_name["key"].type,
                value,
            )
        plan = self._singular(field, plan_of)
        label = Label.REPEATED if field.is_repeated else Label.SINGULAR
        return (plan[0], plan[1], label, *plan[3:])

    def _singular(
        self, field: ReflectedField, plan_of: Callable[[ReflectedDescriptor], int]
    ) -> tuple[Any, ...]:
        sub = -1
        numbers: tuple[int, ...] = ()
        names: tuple[bytes, ...] = ()
        closed = null = False
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = plan_of(field.message_type)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            enum_type = field.enum_type
            null = enum_type.full_name == rules.NULL_VALUE_ENUM
            closed = bool(enum_type.is_closed)
            by_number = sorted(enum_type.values_by_number.items())
            numbers = tuple(number for number, _ in by_number)
            names = tuple(hash_key(value.name) for _, value in by_number)
        return (
            field.number,
            field.type,
            Label.SINGULAR,
            hash_key(rules.field_json_name(field)),
            sub,
            numbers,
            names,
            closed,
            null,
            0,
            None,
        )


def _is_literal_map(descriptor: ReflectedDescriptor) -> bool:
    field = descriptor.fields_by_name.get(RULE.map_field)
    return field is not None and rules.is_map_field(field)


def _may_miss_required(descriptor: ReflectedDescriptor, visited: set[str]) -> bool:
    """Whether a message of this type can fail ``IsInitialized()`` (proto2 required fields)."""
    if descriptor.full_name in visited:
        return False
    visited.add(descriptor.full_name)
    if descriptor.extension_ranges:
        return True
    for field in descriptor.fields:
        if field.is_required:
            return True
        if field.message_type is not None and _may_miss_required(field.message_type, visited):
            return True
    return False
