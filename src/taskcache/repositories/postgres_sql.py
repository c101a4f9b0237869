"""What the synchronous and asynchronous PostgreSQL repositories share: SQL, parameters, rows.

:mod:`taskcache.repositories.postgres` (psycopg, ``%s`` placeholders) and
:mod:`taskcache.repositories.postgres_async` (asyncpg, the same text with ``$1..$n``: see
:data:`NUMBERED`) run exactly these statements with exactly these parameters and decode the
answers with these functions; only the execution (blocking or awaited) and the driver's
errors differ.

It must not open connections or run statements.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypedDict

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import PoolClosed, PoolTimeout

from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
from taskcache.repositories.base import (
    AccessCursor,
    CatalogStats,
    EntryRow,
    PoolStats,
    ProjectStats,
    Replaceable,
    ReservationRow,
    Scope,
)
from taskcache.repositories.listing import ListingDialect, check_limit
from taskcache.repositories.rows import ENTRY_COLUMN_NAMES, RowCodec

Params = tuple[Any, ...]

# How often a decision that lost a race with a concurrent delete is retried before giving up.
MAX_ATTEMPTS: Final = 100

_MICROSECOND: Final = timedelta(microseconds=1)

ENTRY_COLUMNS: Final = ", ".join(ENTRY_COLUMN_NAMES)
ALL_COLUMNS: Final = f"org, project, domain, key, {ENTRY_COLUMNS}"
RESERVATION_COLUMNS: Final = "owner_id, heartbeat_interval_us, expires_at"
SCOPE_KEY_WHERE: Final = "org = %s AND project = %s AND domain = %s AND key = %s"

CONFIGURE_SESSION: Final = (
    "SELECT set_config('TimeZone', 'UTC', false),"
    " set_config('statement_timeout', coalesce(%s, current_setting('statement_timeout')),"
    " false)"
)
PING: Final = "SELECT 1"
# A call's deadline bounds its statements (see PostgresRepository._prepare).
SET_STATEMENT_TIMEOUT: Final = "SELECT set_config('statement_timeout', %s, false)"
RESET_STATEMENT_TIMEOUT: Final = "RESET statement_timeout"

SELECT_ENTRY: Final = f"SELECT {ENTRY_COLUMNS} FROM cache_entries WHERE {SCOPE_KEY_WHERE}"
SELECT_ENTRY_FOR_UPDATE: Final = f"{SELECT_ENTRY} FOR UPDATE"
INSERT_ENTRY: Final = f"""
    INSERT INTO cache_entries ({ALL_COLUMNS})
    VALUES ({", ".join(["%s"] * (4 + len(ENTRY_COLUMN_NAMES)))})
    ON CONFLICT (org, project, domain, key) DO NOTHING
    RETURNING true
"""
UPDATE_ENTRY: Final = f"""
    UPDATE cache_entries SET
        output_uri = %s,
        output_literals = %s,
        source_identifier = %s,
        key_map = %s,
        created_at = CASE WHEN %s THEN created_at ELSE %s END,
        last_updated_at = %s,
        expires_at = %s,
        blob_bytes = %s,
        last_accessed_at = %s
    WHERE {SCOPE_KEY_WHERE}
"""
# One statement for a batch: the (org, project, domain, key) arrays joined to the primary key.
RECORD_ACCESSES: Final = """
    UPDATE cache_entries AS e SET last_accessed_at = %s
    FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS a(org, project, domain, key)
    WHERE e.org = a.org AND e.project = a.project AND e.domain = a.domain AND e.key = a.key
      AND (e.last_accessed_at IS NULL OR e.last_accessed_at < %s)
"""
DELETE_ENTRY: Final = f"DELETE FROM cache_entries WHERE {SCOPE_KEY_WHERE} RETURNING {ENTRY_COLUMNS}"
DELETE_ENTRY_IF_UNCHANGED: Final = f"""
    DELETE FROM cache_entries
    WHERE {SCOPE_KEY_WHERE}
      AND output_uri IS NOT DISTINCT FROM %s::text
      AND output_literals IS NOT DISTINCT FROM %s::bytea
      AND last_updated_at = %s
"""
# The CTE sees the row as the statement began: who held it before us (for takeovers).
OUTPUT_URI_REFERENCED: Final = (
    "SELECT EXISTS (SELECT 1 FROM cache_entries WHERE output_uri = ANY(%s::text[]))"
)
# The grant, or else the holder that refused it, in one round trip: the upsert's WHERE
# decides against the key's newest row, ``previous`` reads the statement's snapshot (see
# acquired_reservation for when that snapshot cannot name the holder).
ACQUIRE_RESERVATION: Final = f"""
    WITH previous AS (
        SELECT {RESERVATION_COLUMNS} FROM reservations WHERE {SCOPE_KEY_WHERE}
    ), granted AS (
        INSERT INTO reservations
            (org, project, domain, key, owner_id, heartbeat_interval_us, expires_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (org, project, domain, key) DO UPDATE SET
            owner_id = EXCLUDED.owner_id,
            heartbeat_interval_us = EXCLUDED.heartbeat_interval_us,
            expires_at = EXCLUDED.expires_at
        WHERE reservations.owner_id = EXCLUDED.owner_id
           OR reservations.expires_at <= %s
        RETURNING {RESERVATION_COLUMNS}
    )
    SELECT true, {RESERVATION_COLUMNS}, (SELECT owner_id FROM previous) FROM granted
    UNION ALL
    SELECT false, {RESERVATION_COLUMNS}, NULL FROM previous
    WHERE NOT EXISTS (SELECT FROM granted)
"""
SELECT_RESERVATION: Final = (
    f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE {SCOPE_KEY_WHERE}"
)
RELEASE_RESERVATION: Final = f"DELETE FROM reservations WHERE {SCOPE_KEY_WHERE} AND owner_id = %s"
_RETURNING_ENTRY: Final = ", ".join(
    f"e.{name}" for name in ("org", "project", "domain", "key", *ENTRY_COLUMN_NAMES)
)
SELECT_EXPIRED_CANDIDATES: Final = f"""
    SELECT {ALL_COLUMNS} FROM cache_entries
    WHERE last_updated_at < %s
    ORDER BY last_updated_at, org, project, domain, key
    LIMIT %s
"""


def _delete_batch(selected: str, order: str, still: str) -> str:
    """Return a DELETE of at most a limit of entries matching ``selected``, those first in
    ``order``, that skips rows other transactions hold locked and deletes each only if
    ``still`` (about ``e``, the row being deleted) holds for it. Its parameters are those of
    ``selected``, the limit, then those of ``still``; it returns the deleted rows.
    """
    return f"""
    WITH doomed AS (
        SELECT org, project, domain, key FROM cache_entries
        WHERE {selected}
        ORDER BY {order}, org, project, domain, key
        LIMIT %s
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM cache_entries AS e
    USING doomed AS d
    WHERE e.org = d.org AND e.project = d.project AND e.domain = d.domain
      AND e.key = d.key AND {still}
    RETURNING {_RETURNING_ENTRY}
"""


DELETE_UPDATED_BEFORE: Final = _delete_batch(
    "last_updated_at < %s", "last_updated_at", "e.last_updated_at < %s"
)
DELETE_EXPIRED: Final = _delete_batch(
    "expires_at IS NOT NULL AND expires_at <= %s", "expires_at", "e.expires_at <= %s"
)
LIST_LEAST_RECENTLY_USED: Final = f"""
    SELECT {ALL_COLUMNS} FROM cache_entries
    {{condition}}
    ORDER BY last_accessed_at, org, project, domain, key
    LIMIT %s
"""
LRU_AFTER: Final = "WHERE (last_accessed_at, org, project, domain, key) > (%s, %s, %s, %s, %s)"
STORED_BYTES: Final = (
    "SELECT coalesce(sum(coalesce(octet_length(output_literals), 0)"
    " + coalesce(blob_bytes, 0)), 0) FROM cache_entries"
)
# pg_try_advisory_lock key of the one cleaner at a time: b"tc-clean" as a big-endian int64.
CLEANUP_LOCK_ID: Final = 0x74632D636C65616E
TRY_CLEANUP_LOCK: Final = "SELECT pg_try_advisory_lock(%s)"
RELEASE_CLEANUP_LOCK: Final = "SELECT pg_advisory_unlock(%s)"
# Locks the rows still unchanged in key order (so two concurrent batches cannot deadlock);
# a row being rewritten is waited for and re-checked, so a rewrite survives.
DELETE_LISTED_IF_UNCHANGED: Final = """
    WITH listed AS (
        SELECT * FROM unnest(
            %s::text[], %s::text[], %s::text[], %s::text[],
            %s::text[], %s::bytea[], %s::timestamptz[]
        ) AS l(org, project, domain, key, output_uri, output_literals, last_updated_at)
    ), doomed AS (
        SELECT e.org, e.project, e.domain, e.key
        FROM cache_entries AS e
        JOIN listed AS l
          ON e.org = l.org AND e.project = l.project AND e.domain = l.domain AND e.key = l.key
        WHERE e.output_uri IS NOT DISTINCT FROM l.output_uri
          AND e.output_literals IS NOT DISTINCT FROM l.output_literals
          AND e.last_updated_at = l.last_updated_at
        ORDER BY e.org, e.project, e.domain, e.key
        FOR UPDATE OF e
    )
    DELETE FROM cache_entries AS e
    USING doomed AS d
    WHERE e.org = d.org AND e.project = d.project AND e.domain = d.domain AND e.key = d.key
    RETURNING e.org, e.project, e.domain, e.key
"""
STATS_SNAPSHOT: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
STATS_BY_SCOPE: Final = """
    SELECT org, project, domain, count(*),
           coalesce(sum(octet_length(output_literals)), 0), count(output_uri)
    FROM cache_entries
    GROUP BY org, project, domain
    ORDER BY org, project, domain
"""
STATS_ACTIVE_RESERVATIONS: Final = "SELECT count(*) FROM reservations WHERE expires_at > %s"


def numbered(query: str) -> str:
    """Return ``query`` with its ``%s`` placeholders numbered ``$1``, ``$2``, ... in order:
    the same statement in asyncpg's (the server's own) placeholder form.

    Raises ValueError if ``query`` has any other ``%`` form (``%%``, ``%(name)s``, ``%b``)
    or a ``$`` already, which a mechanical numbering would get wrong.
    """
    pieces = query.split("%s")
    if any("%" in piece or "$" in piece for piece in pieces):
        raise ValueError(f"only plain %s placeholders can be numbered: {query!r}")
    numbered_pieces = [pieces[0]]
    for number, piece in enumerate(pieces[1:], start=1):
        numbered_pieces.append(f"${number}{piece}")
    return "".join(numbered_pieces)


# Every statement the asynchronous repository runs (directly or through postgres_steps),
# numbered once at import.
NUMBERED: Final[Mapping[str, str]] = {
    query: numbered(query)
    for query in (
        PING,
        SELECT_ENTRY,
        SELECT_ENTRY_FOR_UPDATE,
        INSERT_ENTRY,
        UPDATE_ENTRY,
        DELETE_ENTRY,
        DELETE_ENTRY_IF_UNCHANGED,
        RECORD_ACCESSES,
        OUTPUT_URI_REFERENCED,
        ACQUIRE_RESERVATION,
        SELECT_RESERVATION,
        RELEASE_RESERVATION,
    )
}


# --- values in ------------------------------------------------------------------------------


def aware(value: datetime, field: str) -> datetime:
    """Return ``value`` unchanged; it must be timezone-aware (naive ones are ambiguous)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError("must be a timezone-aware datetime", field=field)
    return value


def scope_key(scope: Scope, key: str) -> tuple[str, str, str, str]:
    """Return the primary-key parameters (org, project, domain, key)."""
    return (scope.org, scope.project, scope.domain, key)


def write_entry_params(row: EntryRow, keep_created_at: bool) -> tuple[Params, Params, Params]:
    """Parameters of :data:`SELECT_ENTRY_FOR_UPDATE`, :data:`INSERT_ENTRY` and
    :data:`UPDATE_ENTRY` for writing ``row``.
    """
    key_params = scope_key(row.scope, row.key)
    values = entry_values(row)
    output_uri, output_literals, source_identifier, key_map, created_at, *rest = values
    update_params = (
        output_uri,
        output_literals,
        source_identifier,
        key_map,
        keep_created_at,
        created_at,
        *rest,
        *key_params,
    )
    return key_params, (*key_params, *values), update_params


def create_cutoff(
    replace: Replaceable | None, condition: Literal["updated_before", "expired_at"]
) -> datetime | None:
    """Return the aware time of ``replace``'s ``condition``, or None (that condition never
    holds). Raises InvalidArgumentError for a naive time.
    """
    at = None if replace is None else getattr(replace, condition)
    if at is None:
        return None
    return aware(at, f"replace.{condition}")


def may_replace(
    existing: EntryRow,
    *,
    cutoff: datetime | None,
    overwrite: bool,
    expired_at: datetime | None = None,
) -> bool:
    """Whether a write (create-only with ``cutoff`` and ``expired_at``, or ``overwrite``)
    replaces ``existing``.
    """
    if overwrite or (cutoff is not None and existing.last_updated_at < cutoff):
        return True
    return (
        expired_at is not None
        and existing.expires_at is not None
        and existing.expires_at <= expired_at
    )


def record_accesses_params(
    entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
) -> Params | None:
    """Return the parameters of :data:`RECORD_ACCESSES`, or None for no entries."""
    at, if_before = aware(at, "at"), aware(if_before, "if_before")
    if not entries:
        return None
    # Sorted and deduplicated: two replicas updating overlapping batches then lock the rows
    # in the same (primary key) order and cannot deadlock each other.
    keys = sorted({scope_key(scope, key) for scope, key in entries})
    orgs, projects, domains, names = (list(column) for column in zip(*keys, strict=True))
    return (at, orgs, projects, domains, names, if_before)


def least_recently_used_query(limit: int, after: AccessCursor | None) -> tuple[str, Params]:
    """Return the least-recently-used listing statement and its parameters."""
    check_limit(limit)
    if after is None:
        return LIST_LEAST_RECENTLY_USED.format(condition=""), (limit,)
    params = (
        aware(after.last_accessed_at, "after.last_accessed_at"),
        *scope_key(after.scope, after.key),
        limit,
    )
    return LIST_LEAST_RECENTLY_USED.format(condition=LRU_AFTER), params


def delete_expired_params(now: datetime, limit: int) -> Params:
    """Return the parameters of :data:`DELETE_EXPIRED`."""
    check_limit(limit)
    now = aware(now, "now")
    return (now, limit, now)


def delete_if_unchanged_params(row: EntryRow) -> Params:
    """Return the parameters of the delete-if-unchanged statement for ``row``."""
    return (
        *scope_key(row.scope, row.key),
        row.output_uri,
        row.output_literals,
        aware(row.last_updated_at, "last_updated_at"),
    )


def delete_listed_params(rows: Sequence[EntryRow]) -> Params:
    """Return the parameters of :data:`DELETE_LISTED_IF_UNCHANGED` for non-empty ``rows``:
    one array per column.
    """
    return tuple(
        list(column) for column in zip(*map(delete_if_unchanged_params, rows), strict=True)
    )


def acquire_params(row: ReservationRow, now: datetime) -> Params:
    """Return the parameters of the reservation upsert for ``row`` at ``now``."""
    key_params = scope_key(row.scope, row.key)
    return (
        *key_params,
        *key_params,
        row.owner_id,
        row.heartbeat_interval // _MICROSECOND,
        aware(row.expires_at, "expires_at"),
        aware(now, "now"),
    )


def release_params(scope: Scope, key: str, owner_id: str) -> Params:
    """Return the parameters of the owner-only reservation delete."""
    return (*scope_key(scope, key), owner_id)


# starts_with, not LIKE: % and _ in the prefix are literal. The range bound lets the primary
# key seek to the prefix.
LISTING = ListingDialect(
    marker="%s",
    prefix_condition="key >= ? AND starts_with(key, ?)",
    prefix_arity=2,
    encode_time=aware,
)


def delete_updated_before_query(
    cutoff: datetime, limit: int, *, dry_run: bool
) -> tuple[str, Params]:
    """The garbage-collection statement (or its dry-run select) and its parameters."""
    check_limit(limit)
    cutoff = aware(cutoff, "cutoff")
    if dry_run:
        return SELECT_EXPIRED_CANDIDATES, (cutoff, limit)
    return DELETE_UPDATED_BEFORE, (cutoff, limit, cutoff)


# --- rows out -------------------------------------------------------------------------------


def utc(value: datetime) -> datetime:
    """Return a loaded ``timestamptz`` as an aware UTC datetime (sessions run in UTC)."""
    if value.tzinfo is UTC:
        # asyncpg's: already the answer (a Get decodes one or more of these).
        return value
    if value.utcoffset() == timedelta(0):
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)  # pragma: no cover - the session time zone is UTC


def _decode_key_map(value: Any) -> dict[str, str]:
    decoded = json.loads(value) if isinstance(value, str | bytes) else value
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
    ):
        raise InternalError("stored key_map is not a JSON object of strings")
    return decoded


ROWS: Final = RowCodec(time=utc, key_map=_decode_key_map, encode_time=aware, encode_key_map=Jsonb)
entry_values = ROWS.values
entry_from_row = ROWS.entry
scoped_entry_from_row = ROWS.scoped_entry
reservation_from_row = ROWS.reservation


def acquired_reservation(
    row: ReservationRow, found: Sequence[Any] | None, now: datetime
) -> ReservationRow | None:
    """Decode :data:`ACQUIRE_RESERVATION`'s row for ``row`` at ``now``: the grant (noting a
    takeover), or the holder that refused it.

    Returns None when the answer must be read afresh (:data:`SELECT_RESERVATION`): the
    statement's snapshot had no row (it was inserted since), or its row would not have
    refused ``row`` (the caller's own, or expired: the key changed hands since), so it does
    not name the holder in force when the upsert decided.
    """
    if found is None:
        return None
    granted, owner_id, heartbeat_us, expires_at, previous_owner = found
    columns = (owner_id, heartbeat_us, expires_at)
    if granted:
        result = reservation_from_row(row.scope, row.key, columns)
        if previous_owner is not None and previous_owner != row.owner_id:
            result = replace(result, taken_over_from=previous_owner)
        return result
    holder = reservation_from_row(row.scope, row.key, columns)
    if holder.owner_id == row.owner_id or holder.expires_at <= now:
        return None
    return holder


def sorted_deleted(rows: Sequence[Sequence[Any]]) -> list[EntryRow]:
    """Decode garbage-collected rows, oldest first (ties by scope, then key)."""
    entries = [scoped_entry_from_row(row) for row in rows]
    # RETURNING has no order; Python's str order is the "C" collation's code point order.
    entries.sort(key=lambda e: (e.last_updated_at, *scope_key(e.scope, e.key)))
    return entries


def catalog_stats(groups: Sequence[Sequence[Any]], active: Sequence[Any] | None) -> CatalogStats:
    """Build the totals from :data:`STATS_BY_SCOPE` and :data:`STATS_ACTIVE_RESERVATIONS`."""
    by_scope = tuple(
        ProjectStats(
            scope=Scope(org, project, domain),
            entries=int(count),
            inline_bytes=int(size),
            blob_entries=int(blobs),
        )
        for org, project, domain, count, size, blobs in groups
    )
    return CatalogStats(
        entries=sum(group.entries for group in by_scope),
        inline_bytes=sum(group.inline_bytes for group in by_scope),
        blob_entries=sum(group.blob_entries for group in by_scope),
        active_reservations=0 if active is None else int(active[0]),
        by_scope=by_scope,
    )


def pool_stats_from(stats: Mapping[str, int]) -> PoolStats:
    """Translate a psycopg_pool ``get_stats()`` mapping."""
    return PoolStats(
        size=stats.get("pool_size", 0),
        available=stats.get("pool_available", 0),
        waiting=stats.get("requests_waiting", 0),
    )


# --- settings and errors --------------------------------------------------------------------


class PoolOptions(TypedDict, total=False):
    """Connection options of both PostgreSQL repositories (see ``PostgresRepository``)."""

    min_size: int
    max_size: int
    connect_timeout: float
    statement_timeout: float | None
    pool_timeout: float


@dataclass(frozen=True)
class PoolSettings:
    """:class:`PoolOptions`, defaulted and validated: libpq's whole-second connect timeout,
    the session's ``statement_timeout`` value (None: the server's), the pool's bounds.
    """

    min_size: int
    max_size: int
    connect_timeout: int
    statement_timeout: str | None
    pool_timeout: float

    @classmethod
    def of(cls, options: PoolOptions) -> PoolSettings:
        """Return the settings for ``options``; InvalidArgumentError naming a bad option."""
        min_size = options.get("min_size", 1)
        max_size = options.get("max_size", 10)
        pool_timeout = options.get("pool_timeout", 10.0)
        check_pool_options(min_size, max_size, pool_timeout)
        return cls(
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout_setting(options.get("connect_timeout", 5.0)),
            statement_timeout=statement_timeout_setting(options.get("statement_timeout", 30.0)),
            pool_timeout=pool_timeout,
        )

    def pool_arguments(self, name: str) -> dict[str, Any]:
        """Keyword arguments of the synchronous repository's ``ConnectionPool`` (not yet
        open); the asynchronous one sizes its own pool from the same settings.
        """
        return {
            "kwargs": {"autocommit": True, "connect_timeout": self.connect_timeout},
            "min_size": self.min_size,
            "max_size": self.max_size,
            "timeout": self.pool_timeout,
            # A background reconnection gives up after this long; the next call that waits
            # for a connection starts a fresh attempt at once, without the backoff delay.
            "reconnect_timeout": self.pool_timeout,
            "name": name,
            "open": False,
        }


def check_pool_options(min_size: int, max_size: int, pool_timeout: float) -> None:
    """Raise InvalidArgumentError naming the first invalid pool option."""
    if min_size < 0 or max_size < max(min_size, 1):
        raise InvalidArgumentError(
            f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}",
            field="max_size",
        )
    if not (math.isfinite(pool_timeout) and pool_timeout > 0):
        raise InvalidArgumentError("must be a positive number of seconds", field="pool_timeout")


def statement_timeout_setting(statement_timeout: float | None) -> str | None:
    """Return the ``statement_timeout`` session value in ms, or None to leave it unset."""
    if statement_timeout is None:
        return None
    if not (math.isfinite(statement_timeout) and statement_timeout > 0):
        raise InvalidArgumentError(
            "must be a positive number of seconds", field="statement_timeout"
        )
    return f"{max(1, round(statement_timeout * 1000))}ms"


def statement_timeout_ms(setting: str | None) -> int | None:
    """Return the milliseconds of a :func:`statement_timeout_setting` value (None stays)."""
    return None if setting is None else int(setting.removesuffix("ms"))


def connect_timeout_setting(connect_timeout: float) -> int:
    """Return libpq's whole-second ``connect_timeout`` (at least 1)."""
    if not (math.isfinite(connect_timeout) and connect_timeout > 0):
        raise InvalidArgumentError("must be a positive number of seconds", field="connect_timeout")
    # libpq takes whole seconds.
    return max(1, math.ceil(connect_timeout))


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise psycopg errors as taskcache errors, keeping the cause chained.

    Operational errors (connection failures, server shutdown, pool timeouts, statement
    timeouts, serialisation failures) may succeed on retry: UnavailableError. Values
    PostgreSQL cannot store (a NUL character in text): InvalidArgumentError. Anything
    else: InternalError.
    """
    try:
        yield
    except PoolClosed as error:
        raise UnavailableError("the postgres repository is closed") from error
    except PoolTimeout as error:
        raise UnavailableError(f"no postgres connection available: {error}") from error
    except psycopg.OperationalError as error:
        raise UnavailableError(f"postgres database unavailable: {error}") from error
    except psycopg.DataError as error:
        raise InvalidArgumentError(f"value rejected by postgres: {error}") from error
    except psycopg.Error as error:
        raise InternalError(f"postgres error: {error}") from error
