"""A :class:`~taskcache.repositories.base.Repository` backed by PostgreSQL (psycopg 3).

Any number of threads, processes and replicas may share one database: every policy decision
is a single statement or one short transaction that locks the row it decides on, so
PostgreSQL's row locks and unique index serialise them. Connections come from a
``psycopg_pool.ConnectionPool``; a connection is checked before each use, so after the
server restarts the next call gets a fresh one. Times are ``timestamptz`` (microsecond
precision, exact) and always the ``now`` the manager passes in, never the database clock.

The schema is versioned in ``taskcache_schema_version``; :func:`migrate` (also run by
``PostgresRepository(..., migrate=True)``) applies missing versions under a transaction-level
advisory lock, so replicas starting together migrate once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
from taskcache.repositories.base import (
    CatalogStats,
    CreateOutcome,
    EntryCursor,
    EntryFilter,
    EntryRow,
    PoolStats,
    ProjectStats,
    ReservationRow,
    Scope,
)

__all__ = ["SCHEMA_VERSION", "PostgresRepository", "migrate"]

Connection = psycopg.Connection[TupleRow]

# Each entry upgrades the schema by one version: MIGRATIONS[0] takes an empty database to
# version 1, MIGRATIONS[1] (when added) takes version 1 to 2, and so on. Never edit a
# released entry; append a new one. Text columns of the key use the "C" collation so that
# ordering (listings, cursors) is by code point, as in SQLite, whatever the database locale.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE cache_entries (
            org text COLLATE "C" NOT NULL,
            project text COLLATE "C" NOT NULL,
            domain text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            output_uri text NULL,
            output_literals bytea NULL,
            source_identifier bytea NOT NULL,
            key_map jsonb NOT NULL,
            created_at timestamptz NOT NULL,
            last_updated_at timestamptz NOT NULL,
            PRIMARY KEY (org, project, domain, key),
            CONSTRAINT cache_entries_has_output
                CHECK (output_uri IS NOT NULL OR output_literals IS NOT NULL)
        )
        """,
        "CREATE INDEX cache_entries_last_updated_at ON cache_entries (last_updated_at)",
        # Operator listings run newest first, ties broken by scope then key.
        """
        CREATE INDEX cache_entries_newest_first
            ON cache_entries (last_updated_at DESC, org, project, domain, key)
        """,
        """
        CREATE TABLE reservations (
            org text COLLATE "C" NOT NULL,
            project text COLLATE "C" NOT NULL,
            domain text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            owner_id text NOT NULL,
            heartbeat_interval_us bigint NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (org, project, domain, key)
        )
        """,
        "CREATE INDEX reservations_expires_at ON reservations (expires_at)",
    ),
)

SCHEMA_VERSION: Final[int] = len(MIGRATIONS)

SCHEMA_VERSION_TABLE: Final = "taskcache_schema_version"

# pg_advisory_xact_lock key that serialises migrations: b"taskcach" as a big-endian int64.
MIGRATION_LOCK_ID: Final = 0x7461736B63616368

# How often a decision that lost a race with a concurrent delete is retried before giving up.
_MAX_ATTEMPTS: Final = 100

_MICROSECOND: Final = timedelta(microseconds=1)

_ENTRY_COLUMNS: Final = (
    "output_uri, output_literals, source_identifier, key_map, created_at, last_updated_at"
)
_RESERVATION_COLUMNS: Final = "owner_id, heartbeat_interval_us, expires_at"
_SCOPE_KEY_WHERE: Final = "org = %s AND project = %s AND domain = %s AND key = %s"

_SELECT_ENTRY: Final = f"SELECT {_ENTRY_COLUMNS} FROM cache_entries WHERE {_SCOPE_KEY_WHERE}"
_INSERT_ENTRY: Final = f"""
    INSERT INTO cache_entries (org, project, domain, key, {_ENTRY_COLUMNS})
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (org, project, domain, key) DO NOTHING
    RETURNING true
"""
_UPDATE_ENTRY: Final = f"""
    UPDATE cache_entries SET
        output_uri = %s,
        output_literals = %s,
        source_identifier = %s,
        key_map = %s,
        created_at = CASE WHEN %s THEN created_at ELSE %s END,
        last_updated_at = %s
    WHERE {_SCOPE_KEY_WHERE}
"""


def _aware(value: datetime, field: str) -> datetime:
    """Return ``value`` unchanged; it must be timezone-aware (naive ones are ambiguous)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError("must be a timezone-aware datetime", field=field)
    return value


def _utc(value: datetime) -> datetime:
    """Return a loaded ``timestamptz`` as an aware UTC datetime (sessions run in UTC)."""
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


def _scope_key(scope: Scope, key: str) -> tuple[str, str, str, str]:
    return (scope.org, scope.project, scope.domain, key)


def _entry_from_row(scope: Scope, key: str, row: Sequence[Any]) -> EntryRow:
    output_uri, output_literals, source_identifier, key_map, created_at, last_updated_at = row
    return EntryRow(
        scope=scope,
        key=key,
        output_uri=output_uri,
        output_literals=None if output_literals is None else bytes(output_literals),
        source_identifier=bytes(source_identifier),
        key_map=_decode_key_map(key_map),
        created_at=_utc(created_at),
        last_updated_at=_utc(last_updated_at),
    )


def _scoped_entry_from_row(row: Sequence[Any]) -> EntryRow:
    """Build an entry from ``org, project, domain, key`` followed by the entry columns."""
    org, project, domain, key = row[:4]
    return _entry_from_row(Scope(org, project, domain), key, row[4:])


def _reservation_from_row(scope: Scope, key: str, row: Sequence[Any]) -> ReservationRow:
    owner_id, heartbeat_us, expires_at = row
    return ReservationRow(
        scope=scope,
        key=key,
        owner_id=owner_id,
        heartbeat_interval=timedelta(microseconds=heartbeat_us),
        expires_at=_utc(expires_at),
    )


def _entry_values(row: EntryRow) -> tuple[Any, ...]:
    """The six non-key columns of ``row``, in :data:`_ENTRY_COLUMNS` order."""
    return (
        row.output_uri,
        row.output_literals,
        row.source_identifier,
        Jsonb(row.key_map),
        _aware(row.created_at, "created_at"),
        _aware(row.last_updated_at, "last_updated_at"),
    )


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidArgumentError("must not be negative", field="limit")


@contextmanager
def _translate_errors() -> Iterator[None]:
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


def _statement_timeout_setting(statement_timeout: float | None) -> str | None:
    if statement_timeout is None:
        return None
    if not (math.isfinite(statement_timeout) and statement_timeout > 0):
        raise InvalidArgumentError(
            "must be a positive number of seconds", field="statement_timeout"
        )
    return f"{max(1, round(statement_timeout * 1000))}ms"


def _configure_session(conn: Connection, statement_timeout: str | None) -> None:
    """Run the session in UTC, with the statement timeout if one is set."""
    conn.execute(
        "SELECT set_config('TimeZone', 'UTC', false),"
        " set_config('statement_timeout', coalesce(%s, current_setting('statement_timeout')),"
        " false)",
        (statement_timeout,),
    )


def _connect_timeout_setting(connect_timeout: float) -> int:
    if not (math.isfinite(connect_timeout) and connect_timeout > 0):
        raise InvalidArgumentError("must be a positive number of seconds", field="connect_timeout")
    # libpq takes whole seconds.
    return max(1, math.ceil(connect_timeout))


def _read_schema_version(conn: Connection) -> int:
    """Return the recorded schema version, 0 when the version table does not exist."""
    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_VERSION_TABLE,)).fetchone()
    if found is None or not found[0]:
        return 0
    version = conn.execute(
        f"SELECT coalesce(max(version), 0) FROM {SCHEMA_VERSION_TABLE}"
    ).fetchone()
    return 0 if version is None else int(version[0])


def _migrate(conn: Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION` in one transaction; return it.

    The transaction first takes ``pg_advisory_xact_lock``, so concurrent migrators (replicas
    starting together, ``taskcache migrate``) run one after another and each later one finds
    the work done. A current schema is left alone without any DDL or lock, so a role without
    CREATE privilege can start once the schema is in place. Raises InternalError if the
    database was written by a newer schema.
    """
    if _read_schema_version(conn) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        conn.execute(
            f"""
            CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        version = _read_schema_version(conn)
        if version > SCHEMA_VERSION:
            raise InternalError(
                f"database schema version {version} is newer than this taskcache "
                f"supports ({SCHEMA_VERSION})"
            )
        for target, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"INSERT INTO {SCHEMA_VERSION_TABLE} (version) VALUES (%s)", (target,))
    return SCHEMA_VERSION


def migrate(url: str, *, connect_timeout: float = 5.0) -> int:
    """Create or upgrade the taskcache schema in the database at ``url``; return its version.

    Safe to run concurrently with other migrators and with running repositories. Raises
    UnavailableError if the database cannot be reached, InternalError if its schema is newer
    than this code or a migration fails.
    """
    return _prepare_schema(url, _connect_timeout_setting(connect_timeout), migrate=True)


def _prepare_schema(url: str, connect_timeout: int, *, migrate: bool) -> int:
    """On one direct connection: migrate, or check the schema is current; return its version.

    A direct connection (not the pool, which retries in the background) so that an
    unreachable database fails at once with the connection error as the cause.
    """
    with _translate_errors():
        conn = psycopg.connect(url, autocommit=True, connect_timeout=connect_timeout)
        try:
            _configure_session(conn, None)
            if migrate:
                return _migrate(conn)
            version = _read_schema_version(conn)
        finally:
            conn.close()
    if version != SCHEMA_VERSION:
        raise InternalError(
            f"database schema version {version} does not match this taskcache "
            f"({SCHEMA_VERSION}); run `taskcache migrate`"
        )
    return version


class PostgresRepository:
    """Entries and reservations in a PostgreSQL database at ``url`` (a libpq URL or DSN).

    ``min_size``/``max_size`` bound the connection pool; ``connect_timeout`` limits each
    connection attempt and ``pool_timeout`` how long a call waits for a usable connection
    (then UnavailableError). ``statement_timeout`` (seconds, None for the server's setting)
    caps each statement. With ``migrate`` the schema is created or upgraded on start;
    without it the schema must already be at :data:`SCHEMA_VERSION`.

    Raises UnavailableError if the database cannot be reached, InternalError if its schema
    is newer than this code (or, without ``migrate``, older).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = 30.0,
        migrate: bool = True,
        pool_timeout: float = 10.0,
    ) -> None:
        if min_size < 0 or max_size < max(min_size, 1):
            raise InvalidArgumentError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got {min_size}, {max_size}",
                field="max_size",
            )
        if not (math.isfinite(pool_timeout) and pool_timeout > 0):
            raise InvalidArgumentError("must be a positive number of seconds", field="pool_timeout")
        timeout_setting = _statement_timeout_setting(statement_timeout)
        connect_setting = _connect_timeout_setting(connect_timeout)
        # Schema first, on a direct connection: an unreachable database fails fast, and no
        # pool (with its background threads) is left behind.
        _prepare_schema(url, connect_setting, migrate=migrate)
        self._pool_timeout = pool_timeout
        self._closed = False
        self._lock = threading.Lock()

        def configure(conn: Connection) -> None:
            _configure_session(conn, timeout_setting)

        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_setting,
            },
            min_size=min_size,
            max_size=max_size,
            configure=configure,
            timeout=pool_timeout,
            # A background reconnection gives up after this long; the next call that waits
            # for a connection starts a fresh attempt at once, without the backoff delay.
            reconnect_timeout=pool_timeout,
            name="taskcache",
            open=False,
        )
        with _translate_errors():
            self._pool.open(wait=False)

    def _ensure_open(self) -> None:
        if self._closed:
            raise UnavailableError("the postgres repository is closed")

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """Yield a pooled autocommit connection that just answered, with errors translated.

        Idle connections broken by a server restart fail the check and go back to the pool,
        which replaces them; the next one is tried at once (no backoff sleep), until a good
        one comes or ``pool_timeout`` passes.
        """
        self._ensure_open()
        with _translate_errors():
            deadline = time.monotonic() + self._pool_timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolTimeout(f"no working connection after {self._pool_timeout:.2f} sec")
                conn = self._pool.getconn(timeout=remaining)
                try:
                    ConnectionPool.check_connection(conn)
                except psycopg.Error:
                    # Closed, the pool replaces it with a fresh connection.
                    conn.close()
                    self._pool.putconn(conn)
                    continue
                except BaseException:
                    self._pool.putconn(conn)
                    raise
                break
            try:
                yield conn
            finally:
                self._pool.putconn(conn)

    def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Return the entry, or None. Raises UnavailableError / InternalError on store errors."""
        with self._connection() as conn:
            found = conn.execute(_SELECT_ENTRY, _scope_key(scope, key)).fetchone()
        return None if found is None else _entry_from_row(scope, key, found)

    def _write_entry(
        self, row: EntryRow, *, cutoff: datetime | None, overwrite: bool, keep_created_at: bool
    ) -> CreateOutcome:
        """Insert ``row``, or replace the existing entry when ``overwrite`` or it is stale.

        The insert is one statement (the unique index decides between racing inserters).
        On conflict, one short transaction locks the existing row (``SELECT ... FOR
        UPDATE`` reads its latest committed version), decides, and updates it; the row it
        returns is exactly the one replaced. If the row vanished in between, start over.
        """
        key_params = _scope_key(row.scope, row.key)
        values = _entry_values(row)
        output_uri, output_literals, source_identifier, key_map, created_at, updated_at = values
        update_params = (
            output_uri,
            output_literals,
            source_identifier,
            key_map,
            keep_created_at,
            created_at,
            updated_at,
            *key_params,
        )
        with self._connection() as conn:
            for _ in range(_MAX_ATTEMPTS):
                if conn.execute(_INSERT_ENTRY, (*key_params, *values)).fetchone() is not None:
                    return CreateOutcome(written=True, replaced=None)
                with conn.transaction():
                    found = conn.execute(f"{_SELECT_ENTRY} FOR UPDATE", key_params).fetchone()
                    if found is None:
                        continue  # deleted since the insert saw it; try the insert again
                    existing = _entry_from_row(row.scope, row.key, found)
                    if not overwrite and (cutoff is None or existing.last_updated_at >= cutoff):
                        return CreateOutcome(written=False, replaced=None)
                    conn.execute(_UPDATE_ENTRY, update_params)
                    return CreateOutcome(written=True, replaced=existing)
        raise UnavailableError(  # pragma: no cover - needs a delete racing every attempt
            f"entry {row.key!r} kept changing; gave up after {_MAX_ATTEMPTS} attempts"
        )

    def create_entry(
        self, row: EntryRow, replace_if_updated_before: datetime | None
    ) -> CreateOutcome:
        """Insert ``row`` unless a live entry holds its key; see the protocol for the rule.

        Returns whether it wrote and the stale row it replaced, if any.
        """
        cutoff = (
            None
            if replace_if_updated_before is None
            else _aware(replace_if_updated_before, "replace_if_updated_before")
        )
        return self._write_entry(row, cutoff=cutoff, overwrite=False, keep_created_at=False)

    def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """Insert or replace ``row``; return the replaced row, if any.

        With ``keep_created_at`` an existing row's ``created_at`` survives.
        """
        outcome = self._write_entry(
            row, cutoff=None, overwrite=True, keep_created_at=keep_created_at
        )
        return outcome.replaced

    def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Delete the entry; return the deleted row, or None if there was none."""
        with self._connection() as conn:
            found = conn.execute(
                f"DELETE FROM cache_entries WHERE {_SCOPE_KEY_WHERE} RETURNING {_ENTRY_COLUMNS}",
                _scope_key(scope, key),
            ).fetchone()
        return None if found is None else _entry_from_row(scope, key, found)

    def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """Delete the entry only if it still has ``row``'s outputs and ``last_updated_at``.

        Returns whether a row was deleted.
        """
        last_updated_at = _aware(row.last_updated_at, "last_updated_at")
        with self._connection() as conn:
            cursor = conn.execute(
                f"""
                DELETE FROM cache_entries
                WHERE {_SCOPE_KEY_WHERE}
                  AND output_uri IS NOT DISTINCT FROM %s::text
                  AND output_literals IS NOT DISTINCT FROM %s::bytea
                  AND last_updated_at = %s
                """,
                (
                    *_scope_key(row.scope, row.key),
                    row.output_uri,
                    row.output_literals,
                    last_updated_at,
                ),
            )
            return cursor.rowcount > 0

    def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """Grant ``row`` unless another owner holds an unexpired reservation on the key.

        Returns the reservation in force afterwards: ``row`` if granted, else the holder's.
        The upsert's WHERE decides the grant atomically; when it refuses, the holder is read
        back, and if the holder released in between, the upsert is tried again.
        """
        key_params = _scope_key(row.scope, row.key)
        heartbeat_us = row.heartbeat_interval // _MICROSECOND
        expires_at = _aware(row.expires_at, "expires_at")
        now = _aware(now, "now")
        with self._connection() as conn:
            for _ in range(_MAX_ATTEMPTS):
                granted = conn.execute(
                    f"""
                    WITH previous AS (
                        SELECT owner_id FROM reservations WHERE {_SCOPE_KEY_WHERE}
                    )
                    INSERT INTO reservations
                        (org, project, domain, key, owner_id, heartbeat_interval_us, expires_at)
                    VALUES (%s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (org, project, domain, key) DO UPDATE SET
                        owner_id = EXCLUDED.owner_id,
                        heartbeat_interval_us = EXCLUDED.heartbeat_interval_us,
                        expires_at = EXCLUDED.expires_at
                    WHERE reservations.owner_id = EXCLUDED.owner_id
                       OR reservations.expires_at <= %s
                    RETURNING {_RESERVATION_COLUMNS}, (SELECT owner_id FROM previous)
                    """,
                    (*key_params, *key_params, row.owner_id, heartbeat_us, expires_at, now),
                ).fetchone()
                if granted is not None:
                    result = _reservation_from_row(row.scope, row.key, granted[:-1])
                    # The CTE sees the row as the statement began: who held it before us.
                    previous_owner = granted[-1]
                    if previous_owner is not None and previous_owner != row.owner_id:
                        result = replace(result, taken_over_from=previous_owner)
                    return result
                holder = conn.execute(
                    f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE {_SCOPE_KEY_WHERE}",
                    key_params,
                ).fetchone()
                if holder is not None:
                    return _reservation_from_row(row.scope, row.key, holder)
        raise UnavailableError(  # pragma: no cover - needs a release racing every attempt
            f"reservation on {row.key!r} kept changing; gave up after {_MAX_ATTEMPTS} attempts"
        )

    def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """Delete the reservation if ``owner_id`` holds it; return whether one was deleted."""
        with self._connection() as conn:
            cursor = conn.execute(
                f"DELETE FROM reservations WHERE {_SCOPE_KEY_WHERE} AND owner_id = %s",
                (*_scope_key(scope, key), owner_id),
            )
            return cursor.rowcount > 0

    def get_reservation(self, scope: Scope, key: str) -> ReservationRow | None:
        """Return the reservation row on ``key`` (expired or not), or None."""
        with self._connection() as conn:
            found = conn.execute(
                f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE {_SCOPE_KEY_WHERE}",
                _scope_key(scope, key),
            ).fetchone()
        return None if found is None else _reservation_from_row(scope, key, found)

    def list_entries(
        self, entry_filter: EntryFilter, limit: int, after: EntryCursor | None = None
    ) -> list[EntryRow]:
        """Return up to ``limit`` entries matching ``entry_filter``, newest update first,
        strictly after ``after`` (ties broken by scope, then key, ascending).

        Keyset pagination: pass the last row of a page as ``after`` for the next page.
        Raises InvalidArgumentError for a negative ``limit`` or a naive cursor time.
        """
        _check_limit(limit)
        conditions: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("org", entry_filter.org),
            ("project", entry_filter.project),
            ("domain", entry_filter.domain),
        ):
            if value is not None:
                conditions.append(f"{column} = %s")
                params.append(value)
        if entry_filter.key_prefix:
            # starts_with, not LIKE: % and _ in the prefix are literal. The range bound lets
            # the primary key seek to the prefix.
            conditions.append("key >= %s AND starts_with(key, %s)")
            params.extend([entry_filter.key_prefix] * 2)
        if after is not None:
            cursor_at = _aware(after.last_updated_at, "after.last_updated_at")
            # The first bound lets the newest-first index seek; the second breaks ties.
            conditions.append(
                "last_updated_at <= %s AND (last_updated_at < %s "
                "OR (org, project, domain, key) > (%s, %s, %s, %s))"
            )
            params.extend([cursor_at, cursor_at, *_scope_key(after.scope, after.key)])
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self._connection() as conn:
            rows = conn.execute(
                f"""
                SELECT org, project, domain, key, {_ENTRY_COLUMNS} FROM cache_entries
                {where}
                ORDER BY last_updated_at DESC, org, project, domain, key
                LIMIT %s
                """,
                (*params, limit),
            ).fetchall()
        return [_scoped_entry_from_row(row) for row in rows]

    def delete_entries_updated_before(
        self, cutoff: datetime, limit: int, *, dry_run: bool = False
    ) -> list[EntryRow]:
        """Delete (or with ``dry_run`` only select) up to ``limit`` entries last updated
        strictly before ``cutoff``, oldest first (ties by scope, then key); return them.

        One statement: the candidates are locked (rows being rewritten right now are
        skipped) and re-checked against ``cutoff`` as they are deleted.
        """
        _check_limit(limit)
        cutoff = _aware(cutoff, "cutoff")
        with self._connection() as conn:
            if dry_run:
                rows = conn.execute(
                    f"""
                    SELECT org, project, domain, key, {_ENTRY_COLUMNS} FROM cache_entries
                    WHERE last_updated_at < %s
                    ORDER BY last_updated_at, org, project, domain, key
                    LIMIT %s
                    """,
                    (cutoff, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    """
                    WITH doomed AS (
                        SELECT org, project, domain, key FROM cache_entries
                        WHERE last_updated_at < %s
                        ORDER BY last_updated_at, org, project, domain, key
                        LIMIT %s
                        FOR UPDATE SKIP LOCKED
                    )
                    DELETE FROM cache_entries AS e
                    USING doomed AS d
                    WHERE e.org = d.org AND e.project = d.project AND e.domain = d.domain
                      AND e.key = d.key AND e.last_updated_at < %s
                    RETURNING e.org, e.project, e.domain, e.key,
                        e.output_uri, e.output_literals, e.source_identifier, e.key_map,
                        e.created_at, e.last_updated_at
                    """,
                    (cutoff, limit, cutoff),
                ).fetchall()
        entries = [_scoped_entry_from_row(row) for row in rows]
        # RETURNING has no order; Python's str order is the "C" collation's code point order.
        entries.sort(key=lambda e: (e.last_updated_at, *_scope_key(e.scope, e.key)))
        return entries

    def stats(self, now: datetime) -> CatalogStats:
        """Return catalog totals; reservations count as active while ``expires_at > now``.

        ``inline_bytes`` sums the stored output literals; ``blob_entries`` counts entries
        with an output URI. Per-scope figures are ordered by scope. One read snapshot.
        """
        now = _aware(now, "now")
        with self._connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            groups = conn.execute(
                """
                SELECT org, project, domain, count(*),
                       coalesce(sum(octet_length(output_literals)), 0), count(output_uri)
                FROM cache_entries
                GROUP BY org, project, domain
                ORDER BY org, project, domain
                """
            ).fetchall()
            found = conn.execute(
                "SELECT count(*) FROM reservations WHERE expires_at > %s", (now,)
            ).fetchone()
        by_scope = tuple(
            ProjectStats(
                scope=Scope(org, project, domain), entries=int(count), inline_bytes=int(size)
            )
            for org, project, domain, count, size, _ in groups
        )
        return CatalogStats(
            entries=sum(group.entries for group in by_scope),
            inline_bytes=sum(group.inline_bytes for group in by_scope),
            blob_entries=sum(int(group[5]) for group in groups),
            active_reservations=0 if found is None else int(found[0]),
            by_scope=by_scope,
        )

    def pool_stats(self) -> PoolStats | None:
        """Return the pool's open, idle and waiting figures."""
        stats = self._pool.get_stats()
        return PoolStats(
            size=stats.get("pool_size", 0),
            available=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
        )

    def ping(self) -> None:
        """Run ``SELECT 1``; raise UnavailableError if the store does not answer (or is closed)."""
        with self._connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection pool. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close()

    def __enter__(self) -> PostgresRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
