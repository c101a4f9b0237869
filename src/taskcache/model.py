"""The value types of the catalog: keys, metadata, entries, listing records and reservations.

The status types (:class:`CacheStatus`, :class:`ReservationStatus`, :class:`Status`) live in
:mod:`taskcache.status` and are re-exported here. Protobuf messages come from ``flyteidl2``
(primary) and ``flyteidl`` (accepted where a key is built); nothing here re-declares them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias, runtime_checkable

from flyteidl.core import identifier_pb2 as identifier_pb2_v1
from flyteidl.core import interface_pb2 as interface_pb2_v1
from flyteidl.core import literals_pb2 as literals_pb2_v1
from flyteidl2.cacheservice import cacheservice_pb2
from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2
from google.protobuf.message import Message

from taskcache.errors import InvalidArgumentError
from taskcache.status import CacheStatus, ReservationStatus, Status

if TYPE_CHECKING:
    from taskcache.outputs import OutputReader

__all__ = [
    "CacheStatus",
    "CatalogEntry",
    "Entry",
    "InputReader",
    "Key",
    "Metadata",
    "Reservation",
    "ReservationCache",
    "ReservationStatus",
    "Status",
]

TaskIdentifier: TypeAlias = identifier_pb2.Identifier | identifier_pb2_v1.Identifier
TypedInterface: TypeAlias = interface_pb2.TypedInterface | interface_pb2_v1.TypedInterface
LiteralMap: TypeAlias = literals_pb2.LiteralMap | literals_pb2_v1.LiteralMap
LITERAL_MAP_TYPES: Final = (literals_pb2.LiteralMap, literals_pb2_v1.LiteralMap)


def as_literal_map(value: object, source: str) -> LiteralMap:
    """Return ``value`` if it is a LiteralMap of either generation; TypeError naming
    ``source`` otherwise.
    """
    if not isinstance(value, LITERAL_MAP_TYPES):
        raise TypeError(f"{source} must return a LiteralMap, not {type(value).__name__}")
    return value


@runtime_checkable
class InputReader(Protocol):
    """Supplies a task's inputs on demand; ``get`` returns the input LiteralMap."""

    def get(self) -> LiteralMap:
        """Return the inputs."""
        ...


@dataclass(eq=False)
class Key:
    """Identity of one cache entry: task, interface, cache version and inputs.

    ``inputs`` is a LiteralMap (flyteidl2 or flyteidl), an :class:`InputReader` or None; a
    reader is called lazily and at most once, and only when the interface declares inputs
    (Flyte reads nothing otherwise). Anything else (a dict of values, say) is a TypeError
    naming ``inputs``, here and for what a reader returns.
    """

    identifier: TaskIdentifier
    cache_version: str
    typed_interface: TypedInterface
    inputs: LiteralMap | InputReader | None = None
    cache_ignore_input_vars: tuple[str, ...] | list[str] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _read_inputs: LiteralMap | None = field(default=None, init=False, repr=False)
    _inputs_read: bool = field(default=False, init=False, repr=False)
    _computed: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        source = self.inputs
        if source is None or isinstance(source, LITERAL_MAP_TYPES):
            return
        # A Mapping has a ``get`` too, so the InputReader protocol alone would accept a dict.
        if isinstance(source, Message | Mapping) or not isinstance(source, InputReader):
            raise TypeError(
                f"Key inputs must be a LiteralMap or an InputReader, not {type(source).__name__}"
            )

    def read_inputs(self) -> LiteralMap | None:
        """Return the inputs, calling the reader at most once over the key's lifetime."""
        if self._inputs_read:
            return self._read_inputs
        with self._lock:
            if not self._inputs_read:
                source = self.inputs
                # A LiteralMap (either generation) is a Message; checking that first avoids
                # the slow runtime Protocol check on the common path.
                if source is None or isinstance(source, Message):
                    self._read_inputs = source
                else:
                    self._read_inputs = as_literal_map(source.get(), "the InputReader's get()")
                self._inputs_read = True
        return self._read_inputs

    def remember_cache_key(self, value: str) -> None:
        """Memoize the computed cache key string (used by ``hashing.cache_key``)."""
        self._computed = value

    @property
    def remembered_cache_key(self) -> str | None:
        """The memoized cache key string, or None before it was computed."""
        return self._computed

    @property
    def scope(self) -> tuple[str, str, str]:
        """The (org, project, domain) triple an embedded catalog files this entry under."""
        ident = self.identifier
        return (ident.org, ident.project, ident.domain)


@dataclass(frozen=True)
class Metadata:
    """Provenance recorded with an entry; ids are ``flyteidl2.core`` execution identifiers."""

    workflow_execution_id: identifier_pb2.WorkflowExecutionIdentifier | None = None
    node_execution_id: identifier_pb2.NodeExecutionIdentifier | None = None
    task_execution_id: identifier_pb2.TaskExecutionIdentifier | None = None
    created_at: datetime | None = None


class Entry:
    """A cache hit: the outputs (already read into memory) and the hit's status.

    The status is given as ``status``, or as ``status_of``, a function that builds it, called
    at most once, on first access: a caller that reads only the outputs (the decorator) never
    pays for decoding the provenance. Exactly one of the two is required (TypeError
    otherwise). Entries compare equal when their outputs and statuses do; they are read-only.
    """

    __slots__ = ("_status", "_status_of", "outputs")

    outputs: OutputReader
    _status: Status | None
    _status_of: Callable[[], Status] | None

    def __init__(
        self,
        outputs: OutputReader,
        status: Status | None = None,
        *,
        status_of: Callable[[], Status] | None = None,
    ) -> None:
        if (status is None) is (status_of is None):
            raise TypeError("Entry takes exactly one of status and status_of")
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "_status", status)
        object.__setattr__(self, "_status_of", status_of)

    @property
    def status(self) -> Status:
        """The hit's status (built now if it was deferred; a race builds an equal one)."""
        status = self._status
        if status is None:
            assert self._status_of is not None  # one of the two is set (__init__)
            status = self._status_of()
            object.__setattr__(self, "_status", status)
        return status

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Entry is read-only: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Entry):
            return NotImplemented
        return self.outputs == other.outputs and self.status == other.status

    __hash__ = None  # type: ignore[assignment]  # equal by value, and the status is mutable

    def __repr__(self) -> str:
        return f"Entry(outputs={self.outputs!r}, status={self.status!r})"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidArgumentError("datetime must be timezone-aware", field="expires_at")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Reservation:
    """A lease on a key: ``owner_id`` computes the entry until ``expires_at`` (UTC)."""

    key: str
    owner_id: str
    heartbeat_interval: timedelta
    expires_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires_at", _utc(self.expires_at))

    def to_proto(self) -> cacheservice_pb2.Reservation:
        """Return the ``flyteidl2.cacheservice.Reservation`` message (microsecond precision)."""
        message = cacheservice_pb2.Reservation(key=self.key, owner_id=self.owner_id)
        message.heartbeat_interval.FromTimedelta(self.heartbeat_interval)
        message.expires_at.FromDatetime(self.expires_at)
        return message

    @classmethod
    def from_proto(cls, message: cacheservice_pb2.Reservation) -> Reservation:
        """Build from a ``flyteidl2.cacheservice.Reservation`` message."""
        return cls(
            key=message.key,
            owner_id=message.owner_id,
            heartbeat_interval=message.heartbeat_interval.ToTimedelta(),
            expires_at=message.expires_at.ToDatetime(tzinfo=UTC),
        )


@dataclass(frozen=True)
class ReservationCache:
    """What an executor remembers about its last reservation attempt for one owner."""

    timestamp: datetime | None = None
    reservation_status: ReservationStatus = ReservationStatus.RESERVATION_DISABLED


@dataclass(frozen=True)
class CatalogEntry:
    """One entry as a listing shows it: where it is filed, which task wrote it, when, and where
    its outputs are (cheap to build: no reservation look-up, outputs not decoded).

    ``org``, ``project`` and ``domain`` are the scope it is filed under (empty for Flyte 1
    and unscoped entries). ``task`` and ``task_version`` are the name and version of the
    stored source identifier (``source``, decoded; None, and both empty, when it does not
    decode). ``output_uri`` is the outputs blob (None for inline outputs) and
    ``inline_bytes`` the size of inline outputs (None for a blob entry).
    ``source_execution`` is the task execution Flyte is told produced it, when recorded.
    ``expires_at`` is when it stops being served (None: never).
    """

    key: str
    org: str
    project: str
    domain: str
    task: str
    task_version: str
    created_at: datetime
    last_updated_at: datetime
    output_uri: str | None
    inline_bytes: int | None
    source: identifier_pb2.Identifier | None
    source_execution: identifier_pb2.TaskExecutionIdentifier | None
    expires_at: datetime | None = None
