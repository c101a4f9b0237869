"""``cache_entries`` and ``reservations`` rows to and from
:class:`~taskcache.repositories.base.EntryRow` and
:class:`~taskcache.repositories.base.ReservationRow`, one way for both SQL backends: the column
order lives here, the backend supplies how it decodes times and the key map. It must not run
SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from taskcache.repositories.base import EntryRow, ReservationRow, Scope


@dataclass(frozen=True)
class RowCodec:
    """Encodes and decodes the entry columns ``output_uri, output_literals,
    source_identifier, key_map, created_at, last_updated_at`` with the backend's codecs:
    ``time``/``key_map`` decode (InternalError for a corrupt value), ``encode_time`` (given
    the field name; InvalidArgumentError for a naive datetime) and ``encode_key_map`` encode.
    """

    time: Callable[[Any], datetime]
    key_map: Callable[[Any], dict[str, str]]
    encode_time: Callable[[datetime, str], Any]
    encode_key_map: Callable[[dict[str, str]], Any]

    def values(self, row: EntryRow) -> tuple[Any, ...]:
        """Return the entry columns of ``row``, encoded, in the order above."""
        return (
            row.output_uri,
            row.output_literals,
            row.source_identifier,
            self.encode_key_map(row.key_map),
            self.encode_time(row.created_at, "created_at"),
            self.encode_time(row.last_updated_at, "last_updated_at"),
        )

    def entry(self, scope: Scope, key: str, row: Sequence[Any]) -> EntryRow:
        """Return the entry ``key`` of ``scope`` from its entry columns."""
        output_uri, output_literals, source_identifier, key_map, created_at, last_updated_at = row
        return EntryRow(
            scope=scope,
            key=key,
            output_uri=output_uri,
            output_literals=None if output_literals is None else bytes(output_literals),
            source_identifier=bytes(source_identifier),
            key_map=self.key_map(key_map),
            created_at=self.time(created_at),
            last_updated_at=self.time(last_updated_at),
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
