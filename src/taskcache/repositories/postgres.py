"""An :class:`~taskcache.repositories.base.OperatorRepository` backed by PostgreSQL (psycopg 3).

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

import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Unpack

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from taskcache import deadlines
from taskcache.errors import InternalError, UnavailableError
from taskcache.repositories import postgres_sql as sql
from taskcache.repositories import postgres_steps
from taskcache.repositories.base import (
    CreateOutcome,
    EntryRow,
    Replaceable,
    ReservationRow,
    Scope,
)
from taskcache.repositories.listing import list_entries_query
from taskcache.repositories.migrations import pending
from taskcache.repositories.postgres_sql import (
    connect_timeout_setting as _connect_timeout_setting,
)
from taskcache.repositories.postgres_sql import translate_errors as _translate_errors

if TYPE_CHECKING:  # annotations only
    from taskcache.repositories.base import (
        AccessCursor,
        CatalogStats,
        EntryCursor,
        EntryFilter,
        PoolStats,
    )

__all__ = ["SCHEMA_VERSION", "PostgresRepository", "migrate"]

Connection = psycopg.Connection[TupleRow]

# Each entry upgrades the schema by one version: MIGRATIONS[0] takes an empty database to
# version 1, MIGRATIONS[1] takes version 1 to 2, and so on. Never edit a
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
    (
        # Blob deletion asks whether any other entry still references an output URI.
        "CREATE INDEX cache_entries_output_uri ON cache_entries (output_uri)",
    ),
    (
        # Flyte 1's DataCatalog (repositories/datacatalog_sql.py); times in microseconds,
        # as the SQL is shared with SQLite.
        """
        CREATE TABLE datacatalog_datasets (
            org text COLLATE "C" NOT NULL,
            project text COLLATE "C" NOT NULL,
            domain text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            version text COLLATE "C" NOT NULL,
            uuid text COLLATE "C" NOT NULL UNIQUE,
            metadata bytea NOT NULL,
            partition_keys text NOT NULL,
            created_at bigint NOT NULL,
            PRIMARY KEY (org, project, domain, name, version)
        )
        """,
        "CREATE INDEX datacatalog_datasets_created_at ON datacatalog_datasets (created_at)",
        """
        CREATE TABLE datacatalog_artifacts (
            dataset_uuid text COLLATE "C" NOT NULL,
            artifact_id text COLLATE "C" NOT NULL,
            metadata bytea NOT NULL,
            created_at bigint NOT NULL,
            PRIMARY KEY (dataset_uuid, artifact_id)
        )
        """,
        "CREATE INDEX datacatalog_artifacts_artifact_id ON datacatalog_artifacts (artifact_id)",
        "CREATE INDEX datacatalog_artifacts_created_at ON datacatalog_artifacts (created_at)",
        """
        CREATE TABLE datacatalog_artifact_data (
            dataset_uuid text COLLATE "C" NOT NULL,
            artifact_id text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            position integer NOT NULL,
            literal bytea NULL,
            uri text NULL,
            PRIMARY KEY (dataset_uuid, artifact_id, name),
            CONSTRAINT datacatalog_artifact_data_has_value
                CHECK (literal IS NOT NULL OR uri IS NOT NULL)
        )
        """,
        """
        CREATE TABLE datacatalog_partitions (
            dataset_uuid text COLLATE "C" NOT NULL,
            artifact_id text COLLATE "C" NOT NULL,
            position integer NOT NULL,
            key text COLLATE "C" NOT NULL,
            value text COLLATE "C" NOT NULL,
            PRIMARY KEY (dataset_uuid, artifact_id, key)
        )
        """,
        """
        CREATE TABLE datacatalog_tags (
            dataset_uuid text COLLATE "C" NOT NULL,
            tag_name text COLLATE "C" NOT NULL,
            artifact_id text COLLATE "C" NOT NULL,
            created_at bigint NOT NULL,
            PRIMARY KEY (dataset_uuid, tag_name)
        )
        """,
        "CREATE INDEX datacatalog_tags_artifact ON datacatalog_tags (dataset_uuid, artifact_id)",
    ),
    (
        # Expiry chosen at write, recorded blob sizes and coalesced last access (eviction).
        """
        ALTER TABLE cache_entries
            ADD COLUMN expires_at timestamptz NULL,
            ADD COLUMN blob_bytes bigint NULL,
            ADD COLUMN last_accessed_at timestamptz NULL
        """,
        "UPDATE cache_entries SET last_accessed_at = last_updated_at",
        """
        CREATE INDEX cache_entries_expires_at ON cache_entries (expires_at)
            WHERE expires_at IS NOT NULL
        """,
        """
        CREATE INDEX cache_entries_least_recently_used
            ON cache_entries (last_accessed_at, org, project, domain, key)
        """,
    ),
)

SCHEMA_VERSION: Final[int] = len(MIGRATIONS)

SCHEMA_VERSION_TABLE: Final = "taskcache_schema_version"

# pg_advisory_xact_lock key that serialises migrations: b"taskcach" as a big-endian int64.
MIGRATION_LOCK_ID: Final = 0x7461736B63616368


def _configure_session(conn: Connection, statement_timeout: str | None) -> None:
    """Run the session in UTC, with the statement timeout if one is set."""
    conn.execute(sql.CONFIGURE_SESSION, (statement_timeout,))


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
        for target, statements in pending(MIGRATIONS, _read_schema_version(conn)):
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

    A call carrying a deadline (:mod:`taskcache.deadlines`) waits for a connection only
    until the deadline, and runs its statements with a ``statement_timeout`` of the time
    left (never more than the configured one), so a statement waiting on a lock is
    cancelled in the server; either way it raises DeadlineExceededError. Each statement of
    a call gets the time left when the call took its connection.

    Raises UnavailableError if the database cannot be reached, InternalError if its schema
    is newer than this code (or, without ``migrate``, older).
    """

    def __init__(
        self, url: str, *, migrate: bool = True, **options: Unpack[sql.PoolOptions]
    ) -> None:
        settings = sql.PoolSettings.of(options)
        # Schema first, on a direct connection: an unreachable database fails fast, and no
        # pool (with its background threads) is left behind.
        _prepare_schema(url, settings.connect_timeout, migrate=migrate)
        self._pool_timeout = settings.pool_timeout
        self._statement_timeout = settings.statement_timeout
        self._statement_timeout_ms = sql.statement_timeout_ms(settings.statement_timeout)
        # Connections whose statement_timeout a deadline changed: the next call without one
        # puts the configured value back (in the round trip that checks the connection).
        self._deadline_bound: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._closed = False
        self._lock = threading.Lock()

        def configure(conn: Connection) -> None:
            _configure_session(conn, settings.statement_timeout)

        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url, configure=configure, **settings.pool_arguments("taskcache")
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
        call_deadline = deadlines.current()
        try:
            with _translate_errors(), self._checked_out(call_deadline) as conn:
                yield conn
        except UnavailableError as error:
            # A pool wait or a statement cut short by the call's deadline.
            if call_deadline is not None and call_deadline.expired:
                raise call_deadline.exceeded("the postgres call") from error
            raise

    @contextmanager
    def _checked_out(self, call_deadline: deadlines.Deadline | None) -> Iterator[Connection]:
        """Yield a pooled connection checked by a round trip that also sets its
        ``statement_timeout`` for ``call_deadline`` (or back to the configured value).
        """
        pool_wait = self._pool_timeout
        if call_deadline is not None:
            pool_wait = min(pool_wait, call_deadline.remaining())
        deadline = time.monotonic() + pool_wait
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PoolTimeout(f"no working connection after {pool_wait:.2f} sec")
            conn = self._pool.getconn(timeout=remaining)
            try:
                self._prepare(conn, call_deadline)
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

    def _prepare(self, conn: Connection, call_deadline: deadlines.Deadline | None) -> None:
        """Check ``conn`` with one round trip; raise psycopg.Error if it is broken.

        With ``call_deadline`` that round trip sets the ``statement_timeout`` to the time
        left (at most the configured one); the first call without one sets it back.
        Otherwise it is the pool's own check.
        """
        if call_deadline is not None:
            left_ms = max(1, math.ceil(call_deadline.remaining() * 1000))
            if self._statement_timeout_ms is not None:
                left_ms = min(left_ms, self._statement_timeout_ms)
            conn.execute(sql.SET_STATEMENT_TIMEOUT, (f"{left_ms}ms",))
            self._deadline_bound.add(conn)
        elif conn in self._deadline_bound:
            if self._statement_timeout is None:
                conn.execute(sql.RESET_STATEMENT_TIMEOUT)
            else:
                conn.execute(sql.SET_STATEMENT_TIMEOUT, (self._statement_timeout,))
            self._deadline_bound.discard(conn)
        else:
            ConnectionPool.check_connection(conn)

    def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Return the entry, or None. Raises UnavailableError / InternalError on store errors."""
        with self._connection() as conn:
            found = conn.execute(sql.SELECT_ENTRY, sql.scope_key(scope, key)).fetchone()
        return None if found is None else sql.entry_from_row(scope, key, found)

    def create_entry(self, row: EntryRow, replace: Replaceable | None = None) -> CreateOutcome:
        """Insert ``row`` unless a live entry holds its key; see the protocol for the rule.

        Returns whether it wrote and the stale row it replaced, if any (an insert, else a
        locking transaction: see :func:`~taskcache.repositories.postgres_steps.create_entry`).
        """
        writing = postgres_steps.create_entry(row, replace)
        with self._connection() as conn:
            return postgres_steps.run(writing, conn)

    def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """Insert or replace ``row``; return the replaced row, if any.

        With ``keep_created_at`` an existing row's ``created_at`` survives.
        """
        writing = postgres_steps.overwrite_entry(row, keep_created_at)
        with self._connection() as conn:
            outcome = postgres_steps.run(writing, conn)
        return outcome.replaced

    def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Delete the entry; return the deleted row, or None if there was none."""
        with self._connection() as conn:
            found = conn.execute(sql.DELETE_ENTRY, sql.scope_key(scope, key)).fetchone()
        return None if found is None else sql.entry_from_row(scope, key, found)

    def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """Delete the entry only if it still has ``row``'s outputs and ``last_updated_at``.

        Returns whether a row was deleted.
        """
        params = sql.delete_if_unchanged_params(row)
        with self._connection() as conn:
            return conn.execute(sql.DELETE_ENTRY_IF_UNCHANGED, params).rowcount > 0

    def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """Set ``last_accessed_at`` to ``at`` on each of ``entries`` whose value is strictly
        before ``if_before``; return how many rows changed (one statement for the batch).
        """
        params = sql.record_accesses_params(entries, at, if_before)
        if params is None:
            return 0
        with self._connection() as conn:
            return conn.execute(sql.RECORD_ACCESSES, params).rowcount

    def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """Return whether any entry, in any scope, has one of ``uris`` as its ``output_uri``."""
        with self._connection() as conn:
            found = conn.execute(sql.OUTPUT_URI_REFERENCED, (list(uris),)).fetchone()
        return found is not None and bool(found[0])

    def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """Grant ``row`` unless another owner holds an unexpired reservation on the key.

        Returns the reservation in force afterwards: ``row`` if granted, else the holder's
        (one upsert, and a read-back when it cannot name the holder: see
        :func:`~taskcache.repositories.postgres_steps.acquire_reservation`).
        """
        acquiring = postgres_steps.acquire_reservation(row, now)
        with self._connection() as conn:
            return postgres_steps.run(acquiring, conn)

    def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """Delete the reservation if ``owner_id`` holds it; return whether one was deleted."""
        params = sql.release_params(scope, key, owner_id)
        with self._connection() as conn:
            return conn.execute(sql.RELEASE_RESERVATION, params).rowcount > 0

    def get_reservation(self, scope: Scope, key: str) -> ReservationRow | None:
        """Return the reservation row on ``key`` (expired or not), or None."""
        with self._connection() as conn:
            found = conn.execute(sql.SELECT_RESERVATION, sql.scope_key(scope, key)).fetchone()
        return None if found is None else sql.reservation_from_row(scope, key, found)

    def list_entries(
        self, entry_filter: EntryFilter, limit: int, after: EntryCursor | None = None
    ) -> list[EntryRow]:
        """See :meth:`OperatorRepository.list_entries` (keyset pagination on the
        newest-first index; InvalidArgumentError for a negative ``limit``).
        """
        query, params = list_entries_query(
            sql.LISTING, sql.ENTRY_COLUMNS, entry_filter, limit, after
        )
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [sql.scoped_entry_from_row(row) for row in rows]

    def delete_entries_updated_before(
        self, cutoff: datetime, limit: int, *, dry_run: bool = False
    ) -> list[EntryRow]:
        """Delete (or with ``dry_run`` only select) up to ``limit`` entries last updated
        strictly before ``cutoff``, oldest first (ties by scope, then key); return them.

        One statement: the candidates are locked (rows being rewritten right now are
        skipped) and re-checked against ``cutoff`` as they are deleted.
        """
        query, params = sql.delete_updated_before_query(cutoff, limit, dry_run=dry_run)
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return sql.sorted_deleted(rows)

    def delete_entries_if_unchanged(self, rows: Sequence[EntryRow]) -> list[EntryRow]:
        """See :meth:`OperatorRepository.delete_entries_if_unchanged` (one statement, the
        batch sent as arrays).
        """
        if not rows:
            return []
        with self._connection() as conn:
            deleted = conn.execute(
                sql.DELETE_LISTED_IF_UNCHANGED, sql.delete_listed_params(rows)
            ).fetchall()
        gone = {tuple(found) for found in deleted}
        return [row for row in rows if sql.scope_key(row.scope, row.key) in gone]

    def stats(self, now: datetime) -> CatalogStats:
        """Return catalog totals; reservations count as active while ``expires_at > now``.

        ``inline_bytes`` sums the stored output literals; ``blob_entries`` counts entries
        with an output URI. Per-scope figures are ordered by scope. One read snapshot.
        """
        now = sql.aware(now, "now")
        with self._connection() as conn, conn.transaction():
            conn.execute(sql.STATS_SNAPSHOT)
            groups = conn.execute(sql.STATS_BY_SCOPE).fetchall()
            active = conn.execute(sql.STATS_ACTIVE_RESERVATIONS, (now,)).fetchone()
        return sql.catalog_stats(groups, active)

    def delete_expired_entries(self, now: datetime, limit: int) -> list[EntryRow]:
        """See :meth:`OperatorRepository.delete_expired_entries` (one statement; rows being
        rewritten right now are skipped, the rest re-checked as they are deleted).
        """
        params = sql.delete_expired_params(now, limit)
        with self._connection() as conn:
            rows = conn.execute(sql.DELETE_EXPIRED, params).fetchall()
        entries = [sql.scoped_entry_from_row(row) for row in rows]
        # RETURNING has no order.
        entries.sort(key=lambda e: (e.expires_at, *sql.scope_key(e.scope, e.key)))
        return entries

    def list_least_recently_used(
        self, limit: int, after: AccessCursor | None = None
    ) -> list[EntryRow]:
        """See :meth:`OperatorRepository.list_least_recently_used`."""
        query, params = sql.least_recently_used_query(limit, after)
        with self._connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [sql.scoped_entry_from_row(row) for row in rows]

    def stored_bytes(self) -> int:
        """Return the inline bytes plus the recorded blob sizes of every entry."""
        with self._connection() as conn:
            found = conn.execute(sql.STORED_BYTES).fetchone()
        return 0 if found is None else int(found[0])

    @contextmanager
    def maintenance_lock(self, holder: str, now: datetime, lease: timedelta) -> Iterator[bool]:
        """Try ``pg_try_advisory_lock`` on a connection held for the whole ``with`` block;
        yield whether it was taken. The lock is the session's, so a holder that dies loses it
        with its connection; ``holder``, ``now`` and ``lease`` are not needed here.
        """
        with self._connection() as conn:
            found = conn.execute(sql.TRY_CLEANUP_LOCK, (sql.CLEANUP_LOCK_ID,)).fetchone()
            taken = found is not None and bool(found[0])
            try:
                yield taken
            finally:
                if taken:
                    conn.execute(sql.RELEASE_CLEANUP_LOCK, (sql.CLEANUP_LOCK_ID,))

    def pool_stats(self) -> PoolStats | None:
        """Return the pool's open, idle and waiting figures."""
        return sql.pool_stats_from(self._pool.get_stats())

    def ping(self) -> None:
        """Run ``SELECT 1``; raise UnavailableError if the store does not answer (or is closed)."""
        with self._connection() as conn:
            conn.execute(sql.PING).fetchone()

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
