"""``cache_entries`` and ``reservations`` rows to and from
:class:`~taskcache.repositories.base.EntryRow` and
:class:`~taskcache.repositories.base.ReservationRow`, one way for both SQL backends: the column
order lives here, the backend supplies how it decodes times and the key map. It must not run
SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from taskcache.repositories.base import EntryRow, HitRow, ReservationRow, Scope

# Every entry column but the key, in the order :class:`RowCodec` encodes and decodes them.
ENTRY_COLUMN_NAMES: Final = (
    "output_uri",
    "output_literals",
    "source_identifier",
    "key_map",
    "created_at",
    "last_updated_at",
    "expires_at",
    "blob_bytes",
    "last_accessed_at",
)
ENTRY_COLUMNS: Final = ", ".join(ENTRY_COLUMN_NAMES)
# The columns a hit's outputs need (a HitRow), in the order :meth:`RowCodec.hit` decodes them.
HIT_COLUMNS: Final = "output_uri, output_literals, last_updated_at, expires_at, last_accessed_at"


@dataclass(frozen=True)
class RowCodec:
    """Encodes and decodes the entry columns (:data:`ENTRY_COLUMNS`, in that order) with the
    backend's codecs:
    ``time``/``key_map`` decode (InternalError for a corrupt value), ``encode_time`` (given
    the field name; InvalidArgumentError for a naive datetime) and ``encode_key_map`` encode.
    """

    time: Callable[[Any], datetime]
    key_map: Callable[[Any], dict[str, str]]
    encode_time: Callable[[datetime, str], Any]
    encode_key_map: Callable[[dict[str, str]], Any]

    def values(self, row: EntryRow) -> tuple[Any, ...]:
        """Return the entry columns of ``row``, encoded, in the order above."""
        accessed = row.last_updated_at if row.last_accessed_at is None else row.last_accessed_at
        return (
            row.output_uri,
            row.output_literals,
            row.source_identifier,
            self.encode_key_map(row.key_map),
            self.encode_time(row.created_at, "created_at"),
            self.encode_time(row.last_updated_at, "last_updated_at"),
            None if row.expires_at is None else self.encode_time(row.expires_at, "expires_at"),
            row.blob_bytes,
            self.encode_time(accessed, "last_accessed_at"),
        )

    def entry(self, scope: Scope, key: str, row: Iterable[Any]) -> EntryRow:
        """Return the entry ``key`` of ``scope`` from its entry columns."""
        (
            output_uri,
            output_literals,
            source_identifier,
            key_map,
            created_at,
            last_updated_at,
            expires_at,
            blob_bytes,
            last_accessed_at,
        ) = row
        time = self.time
        # Equal stored times decode once: a fresh entry's three times are one instant.
        updated = time(last_updated_at)
        # Filled in without the frozen dataclass's ``__init__``: it sets each field through
        # ``object.__setattr__``, which costs a Get hit more than the rest of the decoding,
        # and a row read back from our own database needs no checking. The result is an
        # ordinary, equal, frozen EntryRow.
        entry: EntryRow = object.__new__(EntryRow)
        entry.__dict__.update(
            scope=scope,
            key=key,
            output_uri=output_uri,
            output_literals=None if output_literals is None else bytes(output_literals),
            source_identifier=bytes(source_identifier),
            key_map=self.key_map(key_map),
            created_at=updated if created_at == last_updated_at else time(created_at),
            last_updated_at=updated,
            expires_at=None if expires_at is None else time(expires_at),
            blob_bytes=None if blob_bytes is None else int(blob_bytes),
            last_accessed_at=(
                updated
                if last_accessed_at is None or last_accessed_at == last_updated_at
                else time(last_accessed_at)
            ),
        )
        return entry

    def hit(self, row: Sequence[Any]) -> HitRow:
        """Return the :class:`HitRow` of a row of :data:`HIT_COLUMNS`, decoded as :meth:`entry`
        decodes those columns.
        """
        output_uri, output_literals, last_updated_at, expires_at, last_accessed_at = row
        time = self.time
        updated = time(last_updated_at)
        return HitRow(
            output_uri,
            None if output_literals is None else bytes(output_literals),
            updated,
            None if expires_at is None else time(expires_at),
            (
                updated
                if last_accessed_at is None or last_accessed_at == last_updated_at
                else time(last_accessed_at)
            ),
        )

    def scoped_entry(self, row: Sequence[Any]) -> EntryRow:
        """Return the entry of a row that starts with ``org, project, domain, key``."""
        org, project, domain, key = row[:4]
        return self.entry(Scope(org, project, domain), key, row[4:])

    def reservation(self, scope: Scope, key: str, row: Sequence[Any]) -> ReservationRow:
        """Return the reservation on ``key`` of ``scope`` from ``owner_id,
        heartbeat_interval_us, expires_at``.
        """
        owner_id, heartbeat_us, expires_at = row
        return ReservationRow(
            scope=scope,
            key=key,
            owner_id=owner_id,
            heartbeat_interval=timedelta(microseconds=heartbeat_us),
            expires_at=self.time(expires_at),
        )
