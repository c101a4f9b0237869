"""An :class:`~taskcache.repositories.base.OperatorRepository` backed by SQLite.

One file serves any number of threads and processes: every policy decision is a single
statement or one ``BEGIN IMMEDIATE`` transaction, so SQLite's write lock serialises them.
Times are stored as integer microseconds since the Unix epoch (UTC) so they round-trip exactly.

A repository survives ``os.fork()``: the child closes the connections it inherited and opens
its own; see the notes above :func:`_before_fork`.

Rows only: it must not decide policy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, cast

from taskcache import deadlines
from taskcache.deadlines import Deadline
from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
from taskcache.repositories.base import (
    AccessCursor,
    CatalogStats,
    CreateOutcome,
    EntryCursor,
    EntryFilter,
    EntryRow,
    HitRow,
    PoolStats,
    ProjectStats,
    Replaceable,
    ReservationRow,
    Scope,
)
from taskcache.repositories.listing import ListingDialect, check_limit, list_entries_query
from taskcache.repositories.migrations import pending
from taskcache.repositories.rows import ENTRY_COLUMN_NAMES, HIT_COLUMNS, RowCodec
from taskcache.repositories.rows import ENTRY_COLUMNS as _ENTRY_COLUMNS

__all__ = ["SCHEMA_VERSION", "SqliteRepository", "entry_rowid"]

# The SQL name of entry_rowid, registered on the connection that migrates.
_ROWID_FUNCTION: Final = "taskcache_entry_rowid"
_MIGRATED_COLUMNS: Final = (
    "org, project, domain, key, output_uri, output_literals, source_identifier, key_map,"
    " created_at, last_updated_at, expires_at, blob_bytes, last_accessed_at"
)


def entry_rowid(org: str, project: str, domain: str, key: str) -> int:
    """Return the rowid an entry of this scope and key takes in ``cache_entries`` if free.

    A signed 64-bit hash (BLAKE2b), stable across processes and versions: existing files
    depend on it. Distinct keys may share it; the row still stores and is matched on its
    text, so a shared value costs only speed, never another key's entry. Never raises.
    """
    # Unit separators keep ("a", "bc") and ("ab", "c") apart; surrogatepass accepts any str.
    text = "\x1f".join((org, project, domain, key)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


# Each entry upgrades the schema by one version: MIGRATIONS[0] takes an empty database to
# version 1, MIGRATIONS[1] takes version 1 to 2, and so on. Never edit a
# released entry; append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE cache_entries (
            org TEXT NOT NULL,
            project TEXT NOT NULL,
            domain TEXT NOT NULL,
            key TEXT NOT NULL,
            output_uri TEXT NULL,
            output_literals BLOB NULL,
            source_identifier BLOB NOT NULL,
            key_map TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_updated_at INTEGER NOT NULL,
            PRIMARY KEY (org, project, domain, key),
            CHECK (output_uri IS NOT NULL OR output_literals IS NOT NULL)
        )
        """,
        "CREATE INDEX cache_entries_last_updated_at ON cache_entries (last_updated_at)",
        """
        CREATE TABLE reservations (
            org TEXT NOT NULL,
            project TEXT NOT NULL,
            domain TEXT NOT NULL,
            key TEXT NOT NULL,
            owner_id TEXT NOT NULL,
            heartbeat_interval_us INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (org, project, domain, key)
        )
        """,
        "CREATE INDEX reservations_expires_at ON reservations (expires_at)",
    ),
    (
        # Operator listings run newest first, ties broken by scope then key.
        """
        CREATE INDEX cache_entries_newest_first
            ON cache_entries (last_updated_at DESC, org, project, domain, key)
        """,
    ),
    (
        # Blob deletion asks whether any other entry still references an output URI.
        "CREATE INDEX cache_entries_output_uri ON cache_entries (output_uri)",
    ),
    (
        # Flyte 1's DataCatalog (repositories/datacatalog_sql.py); times in microseconds.
        """
        CREATE TABLE datacatalog_datasets (
            org TEXT NOT NULL,
            project TEXT NOT NULL,
            domain TEXT NOT NULL,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            uuid TEXT NOT NULL UNIQUE,
            metadata BLOB NOT NULL,
            partition_keys TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (org, project, domain, name, version)
        )
        """,
        "CREATE INDEX datacatalog_datasets_created_at ON datacatalog_datasets (created_at)",
        """
        CREATE TABLE datacatalog_artifacts (
            dataset_uuid TEXT NOT NULL,
            artifact_id TEXT NOT NULL,
            metadata BLOB NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (dataset_uuid, artifact_id)
        )
        """,
        "CREATE INDEX datacatalog_artifacts_artifact_id ON datacatalog_artifacts (artifact_id)",
        "CREATE INDEX datacatalog_artifacts_created_at ON datacatalog_artifacts (created_at)",
        """
        CREATE TABLE datacatalog_artifact_data (
            dataset_uuid TEXT NOT NULL,
            artifact_id TEXT NOT NULL,
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            literal BLOB NULL,
            uri TEXT NULL,
            PRIMARY KEY (dataset_uuid, artifact_id, name),
            CHECK (literal IS NOT NULL OR uri IS NOT NULL)
        )
        """,
        """
        CREATE TABLE datacatalog_partitions (
            dataset_uuid TEXT NOT NULL,
            artifact_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (dataset_uuid, artifact_id, key)
        )
        """,
        """
        CREATE TABLE datacatalog_tags (
            dataset_uuid TEXT NOT NULL,
            tag_name TEXT NOT NULL,
            artifact_id TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (dataset_uuid, tag_name)
        )
        """,
        "CREATE INDEX datacatalog_tags_artifact ON datacatalog_tags (dataset_uuid, artifact_id)",
    ),
    (
        # Expiry chosen at write, recorded blob sizes and coalesced last access (eviction);
        # the lease row lets one cleaner at a time run over a shared file.
        "ALTER TABLE cache_entries ADD COLUMN expires_at INTEGER NULL",
        "ALTER TABLE cache_entries ADD COLUMN blob_bytes INTEGER NULL",
        "ALTER TABLE cache_entries ADD COLUMN last_accessed_at INTEGER NULL",
        "UPDATE cache_entries SET last_accessed_at = last_updated_at",
        """
        CREATE INDEX cache_entries_expires_at ON cache_entries (expires_at)
            WHERE expires_at IS NOT NULL
        """,
        """
        CREATE INDEX cache_entries_least_recently_used
            ON cache_entries (last_accessed_at, org, project, domain, key)
        """,
        """
        CREATE TABLE maintenance_leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at INTEGER NOT NULL
        )
        """,
    ),
    (
        # A Get at 10^6 entries descended the text primary-key index and then the rowid
        # table. Now each row's rowid is, where free, a 64-bit hash of its scope and key
        # (entry_rowid), so a hit is one descent of the integer-keyed table, which still
        # stores and compares the text. A row whose hash slot another key holds gets an
        # ordinary rowid and is found through the unique index, as every miss is.
        """
        CREATE TABLE cache_entries_by_rowid (
            id INTEGER PRIMARY KEY,
            org TEXT NOT NULL,
            project TEXT NOT NULL,
            domain TEXT NOT NULL,
            key TEXT NOT NULL,
            output_uri TEXT NULL,
            output_literals BLOB NULL,
            source_identifier BLOB NOT NULL,
            key_map TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_updated_at INTEGER NOT NULL,
            expires_at INTEGER NULL,
            blob_bytes INTEGER NULL,
            last_accessed_at INTEGER NULL,
            UNIQUE (org, project, domain, key),
            CHECK (output_uri IS NOT NULL OR output_literals IS NOT NULL)
        )
        """,
        # Rows whose hash slot is free (all but colliding ones) first; IGNORE skips only a
        # taken slot, since the old table's key was unique already.
        f"""
        INSERT OR IGNORE INTO cache_entries_by_rowid (id, {_MIGRATED_COLUMNS})
        SELECT {_ROWID_FUNCTION}(org, project, domain, key), {_MIGRATED_COLUMNS}
        FROM cache_entries
        """,
        f"""
        INSERT INTO cache_entries_by_rowid ({_MIGRATED_COLUMNS})
        SELECT {_MIGRATED_COLUMNS} FROM cache_entries AS old
        WHERE NOT EXISTS (
            SELECT 1 FROM cache_entries_by_rowid AS new
            WHERE new.org = old.org AND new.project = old.project
              AND new.domain = old.domain AND new.key = old.key
        )
        """,
        "DROP TABLE cache_entries",
        "ALTER TABLE cache_entries_by_rowid RENAME TO cache_entries",
        "CREATE INDEX cache_entries_last_updated_at ON cache_entries (last_updated_at)",
        """
        CREATE INDEX cache_entries_newest_first
            ON cache_entries (last_updated_at DESC, org, project, domain, key)
        """,
        "CREATE INDEX cache_entries_output_uri ON cache_entries (output_uri)",
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

# Memory-mapped reads, per connection, of up to this much of the file (address space, not
# memory: the pages are the OS page cache's, shared by every connection and process). In a
# large catalog a Get touches a few B-tree pages at random (the rowid table's, see schema 6);
# read with pread into SQLite's 2 MiB page cache each is a system call and a copy. Mapping
# removes those (bench/analysis.md, P6). The most SQLite maps by default (its
# SQLITE_MAX_MMAP_SIZE, 2 GiB - 64 KiB), not 1 GiB: a catalog of 10^6 entries is ~1 GiB (more
# after migration 6) and the pages past the mapping went back to pread and the small cache.
_MMAP_BYTES: Final = 0x7FFF0000

# UPSERT (INSERT ... ON CONFLICT DO UPDATE ... WHERE) arrived in 3.24.
_MIN_SQLITE_VERSION: Final = (3, 24, 0)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER_REPLACE: Final = Replaceable()
_MICROSECOND: Final = timedelta(microseconds=1)

# Primary result codes that mean "the store is busy or unreachable; retrying may help".
_UNAVAILABLE_CODES: Final = frozenset(
    {
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        10,  # SQLITE_IOERR
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL (WAL lock race)
    }
)
_UNAVAILABLE_MESSAGES: Final = ("database is locked", "disk i/o error", "unable to open")
# Primary result codes that mean "another connection holds the lock": a call that must not
# wait gives up on these, having applied nothing.
_BUSY_CODES: Final = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
# Commits on the no-wait connections (which never checkpoint themselves) after which a
# checkpoint is due. A reservation commit writes 2-3 pages (the row's table leaf, its
# indexes' leaves), so the log grows 2-3 times past SQLite's own autocheckpoint threshold of
# 1000 pages; more often costs more fallbacks (writes refused while the checkpoint holds the
# write lock: 4-21% at 300 commits, 3-5% at 1000; bench/analysis.md, P2).
_CHECKPOINT_AFTER_COMMITS: Final = 1000
# How long the RESTART checkpoint waits for the writer and for readers of older snapshots.
# It holds the write lock while it waits, so every writer waits with it: short, and a
# checkpoint that gives up leaves the log to the next one.
_RESTART_WAIT_MS: Final = 100

# Keys whose _SELECT_ENTRY parameters a repository keeps; past this many, it starts over.
_MAX_KEYED_PARAMS: Final = 4096
_SCOPE_KEY_WHERE: Final = "org = ? AND project = ? AND domain = ? AND key = ?"


def _select_by_key(columns: str) -> str:
    """Return the statement reading ``columns`` of one entry by scope and key.

    Parameters: entry_rowid, then the scope and key (_keyed). The row at its hash slot first
    (one descent of the rowid table); only if that is another key's or empty, the unique
    index. LIMIT 1 stops a compound SELECT at its first row, so a hit never runs the second.
    """
    return f"""
    SELECT {columns} FROM cache_entries
    WHERE id = ?1 AND org = ?2 AND project = ?3 AND domain = ?4 AND key = ?5
    UNION ALL
    SELECT {columns} FROM cache_entries
    WHERE org = ?2 AND project = ?3 AND domain = ?4 AND key = ?5
    LIMIT 1
"""


# Built once each: one text per statement, so sqlite3's per-connection statement cache
# prepares it once.
_SELECT_ENTRY: Final = _select_by_key(_ENTRY_COLUMNS)
# The same for a hit's outputs: fewer columns to step over and convert.
_SELECT_HIT: Final = _select_by_key(HIT_COLUMNS)
# The rowid a new row takes: its hash slot (first parameter, given twice), or, if any row
# holds that, NULL, which makes SQLite choose an unused rowid. Never another row's rowid.
_FREE_ROWID: Final = (
    "CASE WHEN EXISTS (SELECT 1 FROM cache_entries WHERE id = ?) THEN NULL ELSE ? END"
)
# The same, but a slot held by this very key counts as free (INSERT OR REPLACE replaces it);
# parameters: rowid, scope and key, rowid.
_FREE_OR_OWN_ROWID: Final = f"""
    CASE WHEN EXISTS (
        SELECT 1 FROM cache_entries WHERE id = ? AND NOT ({_SCOPE_KEY_WHERE})
    ) THEN NULL ELSE ? END
"""
_RESERVATION_COLUMNS: Final = "owner_id, heartbeat_interval_us, expires_at"
# Columns named, so a column added by a later migration cannot shift the values.
_ALL_COLUMNS: Final = f"org, project, domain, key, {_ENTRY_COLUMNS}"
_PLACEHOLDERS: Final = ", ".join("?" * (4 + len(ENTRY_COLUMN_NAMES)))
_CLEANUP_LEASE: Final = "cleanup"
_RECORD_ACCESS: Final = f"""
    UPDATE cache_entries SET last_accessed_at = ?
    WHERE {_SCOPE_KEY_WHERE} AND (last_accessed_at IS NULL OR last_accessed_at < ?)
"""
_DELETE_IF_UNCHANGED: Final = f"""
    DELETE FROM cache_entries
    WHERE {_SCOPE_KEY_WHERE}
      AND output_uri IS ? AND output_literals IS ? AND last_updated_at = ?
"""


class _Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot)."""


def _is_busy(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "database is locked" in str(error).lower()


def _is_unavailable(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _UNAVAILABLE_CODES:
        return True
    message = str(error).lower()
    return any(text in message for text in _UNAVAILABLE_MESSAGES)


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Re-raise sqlite errors as taskcache errors, keeping the cause chained."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if _is_unavailable(error):
            raise UnavailableError(f"sqlite database unavailable: {error}") from error
        raise InternalError(f"sqlite error: {error}") from error
    except sqlite3.Error as error:
        raise InternalError(f"sqlite error: {error}") from error


@contextmanager
def _lock_wait_bounded(
    conn: sqlite3.Connection, deadline: Deadline, default_ms: int
) -> Iterator[None]:
    """Within the block, wait for the write lock no longer than ``deadline`` allows, and
    report a busy database once it has passed as DeadlineExceededError.

    The connection's busy timeout is set to the time left and put back afterwards: a
    connection serves one thread, so no other call sees the change.
    """
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.exceeded("the sqlite call")
    with _translate_errors():
        conn.execute(f"PRAGMA busy_timeout = {math.ceil(remaining * 1000):d}")
    try:
        yield
    except UnavailableError as error:
        if deadline.expired:
            raise deadline.exceeded("waiting for the sqlite database lock") from error
        raise
    finally:
        with suppress(sqlite3.Error):
            conn.execute(f"PRAGMA busy_timeout = {default_ms:d}")


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the database to WAL mode, retrying for up to ``timeout`` seconds while busy."""
    # Switching the journal mode needs a brief exclusive lock and SQLite reports SQLITE_BUSY
    # at once, without consulting the busy handler, when another process is opening the same
    # new file; so wait here instead.
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
        except sqlite3.OperationalError as error:
            if not _is_unavailable(error) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        else:
            return


def _to_us(value: datetime, field: str) -> int:
    """Return ``value`` as integer microseconds since the epoch; it must be timezone-aware."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError("must be a timezone-aware datetime", field=field)
    # Integer floor division of timedeltas is exact; a float timestamp would round.
    return (value - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    """Return the aware UTC datetime ``value`` microseconds after the epoch."""
    return _EPOCH + timedelta(0, 0, value)  # (days, seconds, microseconds): positional is faster


def _encode_key_map(key_map: dict[str, str]) -> str:
    return json.dumps(key_map, sort_keys=True, separators=(",", ":"))


def _decode_key_map(text: str) -> dict[str, str]:
    if text == "{}":  # what entries without execution metadata store: no JSON parse
        return {}
    try:
        decoded = json.loads(text)
    except ValueError as error:
        raise InternalError(f"stored key_map is not valid JSON: {error}") from error
    if not isinstance(decoded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
    ):
        raise InternalError("stored key_map is not a JSON object of strings")
    return decoded


def _scope_key(scope: Scope, key: str) -> tuple[str, str, str, str]:
    return (scope.org, scope.project, scope.domain, key)


def _unchanged_params(row: EntryRow) -> tuple[Any, ...]:
    """Return the parameters of :data:`_DELETE_IF_UNCHANGED` for ``row``."""
    return (
        *_scope_key(row.scope, row.key),
        row.output_uri,
        row.output_literals,
        _to_us(row.last_updated_at, "last_updated_at"),
    )


def _entry_params(row: EntryRow) -> tuple[Any, ...]:
    return (*_scope_key(row.scope, row.key), *_ROWS.values(row))


_ROWS: Final = RowCodec(
    time=_from_us, key_map=_decode_key_map, encode_time=_to_us, encode_key_map=_encode_key_map
)
_entry_from_row = _ROWS.entry
_scoped_entry_from_row = _ROWS.scoped_entry
_reservation_from_row = _ROWS.reservation


# substr, not LIKE: LIKE ignores ASCII case and treats % and _ as wildcards. The range bound
# lets an index on the key seek to the prefix.
_LISTING: Final = ListingDialect(
    marker="?",
    prefix_condition="key >= ? AND substr(key, 1, length(?)) = ?",
    prefix_arity=3,
    encode_time=_to_us,
)


# Fork safety. SQLite forbids using a connection in a child process that was opened in the
# parent, so a forked child opens connections of its own (diskcache reconnects after fork for
# the same reason). It must also close the inherited ones: SQLite keeps lock bookkeeping per
# process, and while an inherited connection stays open the child's new connections believe
# they share its locks, which only the parent holds (POSIX locks are not inherited); the
# parent's last close then deletes the WAL the child is still writing to, and the child's
# later commits are lost. Closing is safe only for an idle connection, though: closing one
# inside a transaction or a statement rolls back in the WAL index both processes share and
# corrupts the parent's transaction (or hangs on a mutex a vanished thread held). So a fork
# waits until no connection is in use, and the child then closes every inherited one: idle,
# it rolls nothing back, and its checkpoint-on-close needs an exclusive lock that the
# parent's open connections deny.
_REPOSITORIES: weakref.WeakSet[SqliteRepository] = weakref.WeakSet()
# The repositories paused by the fork in progress (so the parent resumes exactly those).
_PAUSED: list[SqliteRepository] = []


def _before_fork() -> None:
    """Pause every repository until its connections are idle (see above)."""
    _PAUSED.extend(_REPOSITORIES)
    for repository in _PAUSED:
        repository._pause_for_fork()


def _after_fork_in_parent() -> None:
    """Let the parent's paused repositories work again."""
    for repository in _PAUSED:
        repository._resume_after_fork()
    _PAUSED.clear()


def _after_fork_in_child() -> None:
    """Close every inherited connection; each repository reconnects on first use."""
    for repository in _PAUSED:
        repository._reset_in_child()
    _PAUSED.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _session_count_lock() -> tuple[threading.Lock, threading.Condition]:
    """Return the lock guarding a repository's session count and the condition built on it
    (a fork waits on it for the count to reach zero; sessions wait on it during a fork).
    """
    lock = threading.Lock()
    return lock, threading.Condition(lock)


class _Session:
    """One operation's use of a repository's connection: entering yields it, leaving ends
    the session and re-raises sqlite errors as taskcache errors (the cause chained).
    ``nowait``: this thread's no-wait connection (see :meth:`SqliteRepository._connect`).
    """

    __slots__ = ("_in_memory", "_nowait", "_repository")

    def __init__(self, repository: SqliteRepository, *, nowait: bool = False) -> None:
        self._repository = repository
        self._nowait = nowait
        self._in_memory = False

    def __enter__(self) -> sqlite3.Connection:
        conn = self._repository._enter_session(nowait=self._nowait)
        self._in_memory = conn is self._repository._memory
        return conn

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        try:
            if isinstance(error, sqlite3.Error):
                with _translate_errors():
                    raise error
        finally:
            self._repository._leave_session(in_memory=self._in_memory)


class SqliteRepository:
    """Entries and reservations in a SQLite database.

    ``path`` None keeps the database in memory, private to this object, behind one
    lock-guarded connection. A file path (parent directories are created) gets one WAL-mode
    connection per thread, so threads and processes may share the file. ``busy_timeout`` is
    how many seconds a write waits for another writer's lock before UnavailableError; a call
    carrying a deadline (:mod:`taskcache.deadlines`) waits only until the deadline instead,
    then raises DeadlineExceededError, having applied nothing.

    After ``os.fork()`` a file repository keeps working in both processes: the fork waits
    for calls in flight to finish, the child closes the connections it inherited (the
    parent's stay open) and opens its own on first use. An in-memory database cannot be
    shared across processes, and a private copy would silently lose the child's writes, so
    in a forked child an in-memory repository raises UnavailableError on every call.

    Raises UnavailableError if the database cannot be opened, InternalError if its schema is
    newer than this code or the SQLite library is too old.
    """

    def __init__(self, path: str | os.PathLike[str] | None, *, busy_timeout: float = 30.0) -> None:
        if sqlite3.sqlite_version_info < _MIN_SQLITE_VERSION:
            raise InternalError(
                f"SQLite {sqlite3.sqlite_version} is too old; taskcache needs "
                f"{'.'.join(map(str, _MIN_SQLITE_VERSION))} or newer"
            )
        self._busy_timeout = busy_timeout
        self._busy_timeout_ms = math.ceil(busy_timeout * 1000)
        self._closed = False
        self._closed_message = "the sqlite repository is closed"
        # Guards the in-memory connection for a whole operation, and the connection registry.
        self._lock = threading.RLock()
        # File sessions in progress, and whether a fork waits for them to end (see _session).
        self._sessions_lock, self._sessions = _session_count_lock()
        self._in_use = 0
        self._forking = False
        self._local = threading.local()
        # The parameters of _SELECT_ENTRY per (org, project, domain, key), see _keyed.
        self._keyed_params: dict[tuple[str, str, str, str], tuple[int, str, str, str, str]] = {}
        # Weak, so a finished thread's connection is closed when its thread-local goes away.
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._memory: _Connection | None = None
        self._path: str | None = None
        # Commits on no-wait connections since the last checkpoint(). Unlocked: a lost
        # increment only delays a checkpoint by one commit.
        self._nowait_commits = 0
        if path is None:
            self._memory = self._connect(":memory:")
        else:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UnavailableError(
                    f"cannot create the directory for {path}: {error}"
                ) from error
            self._path = os.fspath(path)
        _REPOSITORIES.add(self)
        try:
            with self._session() as conn:
                _migrate(conn)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str | None:
        """The database file, or None for an in-memory database."""
        return self._path

    def _connect(self, target: str, *, nowait: bool = False) -> _Connection:
        """Open a connection to ``target``. ``nowait``: one that never waits for a lock
        (busy timeout zero) and never checkpoints the WAL on commit (a checkpoint fsyncs);
        :meth:`checkpoint` does that, where waiting is allowed.
        """
        with _translate_errors():
            conn = sqlite3.connect(
                target,
                timeout=0.0 if nowait else self._busy_timeout,
                isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
                check_same_thread=False,  # close() may run on another thread
                factory=_Connection,
            )
            try:
                if target != ":memory:":
                    _enable_wal(conn, self._busy_timeout)
                    conn.execute("PRAGMA synchronous=NORMAL")
                    # Reads through the OS page cache without a copy into SQLite's own; see
                    # _MMAP_BYTES.
                    conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES:d}").fetchone()
                    if nowait:
                        conn.execute("PRAGMA wal_autocheckpoint=0").fetchone()
            except BaseException:
                conn.close()
                raise
        return conn

    def _ensure_open(self) -> None:
        if self._closed:
            raise UnavailableError(self._closed_message)

    def _pause_for_fork(self) -> None:
        """Wait until no connection is in use, and keep it so until the fork is done."""
        with self._sessions:
            self._forking = True
            while self._in_use:
                self._sessions.wait()
        # Held across the fork: no in-memory operation or close() runs meanwhile.
        self._lock.acquire()

    def _resume_after_fork(self) -> None:
        """In the parent, after a fork: let calls proceed again."""
        self._lock.release()
        with self._sessions:
            self._forking = False
            self._sessions.notify_all()

    def _reset_in_child(self) -> None:
        """In a forked child: close every inherited (idle) connection and start over.

        A file repository opens new connections on first use; an in-memory one is unusable.
        """
        # Fresh locks: the parent's threads that could have waited on these do not exist here.
        self._lock = threading.RLock()
        self._sessions_lock, self._sessions = _session_count_lock()
        self._in_use = 0
        self._forking = False
        self._local = threading.local()
        inherited = list(self._connections)
        self._connections = weakref.WeakSet()
        if self._memory is not None:
            inherited.append(self._memory)
            self._memory = None
            if not self._closed:
                self._closed = True
                self._closed_message = (
                    "an in-memory sqlite repository cannot be used in a forked child process; "
                    "open a repository on a database file to share a catalog across processes"
                )
        for conn in inherited:
            conn.close()

    def _session(self) -> AbstractContextManager[sqlite3.Connection]:
        """Return a context that yields this thread's connection with sqlite errors
        translated (a class, not a generator, when no deadline applies: it is entered on
        every call); under a call's deadline the lock wait is bounded by it.
        """
        deadline = deadlines.current()
        if deadline is None:
            return _Session(self)
        return self._bounded_session(deadline)

    @contextmanager
    def _bounded_session(self, deadline: Deadline) -> Iterator[sqlite3.Connection]:
        """Yield a session whose write-lock wait ends at ``deadline`` (DeadlineExceededError)."""
        with (
            _Session(self) as conn,
            _lock_wait_bounded(conn, deadline, self._busy_timeout_ms),
            _translate_errors(),
        ):
            yield conn

    def _enter_session(self, *, nowait: bool = False) -> sqlite3.Connection:
        """Start a session (see :class:`_Session`): take the in-memory connection's lock, or
        count a file session and return this thread's connection (opened on first use; with
        ``nowait``, its no-wait one).
        """
        if self._memory is not None:
            self._lock.acquire()
            try:
                self._ensure_open()
            except BaseException:
                self._lock.release()
                raise
            return self._memory
        self._ensure_open()
        # Counted, so that a fork can wait until no connection is in use (see _before_fork).
        # The condition's own lock, taken directly: entering the Condition costs a Python call.
        with self._sessions_lock:
            while self._forking:
                self._sessions.wait()
            self._in_use += 1
        try:
            slot = "nowait_conn" if nowait else "conn"
            conn: _Connection | None = getattr(self._local, slot, None)
            if conn is None:
                assert self._path is not None
                conn = self._connect(self._path, nowait=nowait)
                with self._lock:
                    # close() may have run while this thread was connecting.
                    try:
                        self._ensure_open()
                    except UnavailableError:
                        conn.close()
                        raise
                    self._connections.add(conn)
                setattr(self._local, slot, conn)
        except BaseException:
            self._leave_session(in_memory=False)
            raise
        return conn

    def _leave_session(self, *, in_memory: bool) -> None:
        if in_memory:
            self._lock.release()
            return
        with self._sessions_lock:
            self._in_use -= 1
            # Only a fork waits for the count to reach zero (it sets _forking under this lock
            # first), so without one in progress there is nobody to wake.
            if not self._in_use and self._forking:
                self._sessions.notify_all()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Yield a connection inside ``BEGIN IMMEDIATE``; commit on success, else roll back."""
        # IMMEDIATE takes the write lock up front, so the busy timeout applies and the
        # read-then-write below cannot interleave with another writer.
        with self._session() as conn, _committed(conn, "BEGIN IMMEDIATE"):
            yield conn

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """Yield a connection inside a deferred transaction: its reads see one snapshot and
        it takes no write lock. Commits on success, else rolls back.
        """
        with self._session() as conn, _committed(conn, "BEGIN"):
            yield conn

    def _keyed(self, scope: Scope, key: str) -> tuple[int, str, str, str, str]:
        """Return the parameters of :data:`_SELECT_ENTRY`: the entry's rowid, scope and key."""
        scoped = (scope.org, scope.project, scope.domain, key)
        # Hot keys repeat: the rowid's BLAKE2b costs more than the statement's binding.
        params = self._keyed_params.get(scoped)
        if params is None:
            if len(self._keyed_params) >= _MAX_KEYED_PARAMS:
                self._keyed_params.clear()
            params = self._keyed_params[scoped] = (entry_rowid(*scoped), *scoped)
        return params

    def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Return the entry, or None. Raises UnavailableError / InternalError on store errors."""
        # A plain session even under a deadline: in WAL mode a read never waits for the write
        # lock, so bounding that wait (two PRAGMAs) would be pure cost on the hit path.
        with _Session(self) as conn:
            found = conn.execute(_SELECT_ENTRY, self._keyed(scope, key)).fetchone()
        return None if found is None else _entry_from_row(scope, key, found)

    def get_hit(self, scope: Scope, key: str) -> HitRow | None:
        """Return the entry's :class:`HitRow`, or None; raises as :meth:`get_entry`."""
        with _Session(self) as conn:  # a plain session: see get_entry
            found = conn.execute(_SELECT_HIT, self._keyed(scope, key)).fetchone()
        return None if found is None else _ROWS.hit(found)

    def create_entry(self, row: EntryRow, replace: Replaceable | None = None) -> CreateOutcome:
        """Insert ``row`` unless a live entry holds its key; see the protocol for the rule.

        Returns whether it wrote and the stale row it replaced, if any.
        """
        params = _entry_params(row)
        rowid = entry_rowid(*params[:4])
        replace = replace or _NEVER_REPLACE
        cutoff = (
            None
            if replace.updated_before is None
            else _to_us(replace.updated_before, "replace.updated_before")
        )
        expired_at = (
            None if replace.expired_at is None else _to_us(replace.expired_at, "replace.expired_at")
        )
        with self._transaction() as conn:
            found = conn.execute(
                _SELECT_ENTRY,
                self._keyed(row.scope, row.key),
            ).fetchone()
            if found is not None:
                existing = _entry_from_row(row.scope, row.key, found)
                stale = cutoff is not None and found[5] < cutoff
                expired = expired_at is not None and found[6] is not None and found[6] <= expired_at
                if not (stale or expired):
                    return CreateOutcome(written=False, replaced=None)
                conn.execute(
                    f"INSERT OR REPLACE INTO cache_entries (id, {_ALL_COLUMNS})"
                    f" VALUES ({_FREE_OR_OWN_ROWID}, {_PLACEHOLDERS})",
                    (rowid, *params[:4], rowid, *params),
                )
                return CreateOutcome(written=True, replaced=existing)
            conn.execute(
                f"INSERT INTO cache_entries (id, {_ALL_COLUMNS})"
                f" VALUES ({_FREE_ROWID}, {_PLACEHOLDERS})",
                (rowid, rowid, *params),
            )
        return CreateOutcome(written=True, replaced=None)

    def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """Insert or replace ``row``; return the replaced row, if any.

        With ``keep_created_at`` an existing row's ``created_at`` survives.
        """
        params = _entry_params(row)
        rowid = entry_rowid(*params[:4])
        with self._transaction() as conn:
            found = conn.execute(_SELECT_ENTRY, (rowid, *params[:4])).fetchone()
            # A slot held even by this key's own row yields NULL here: the upsert then
            # conflicts on the key alone and updates that row in place, rowid unchanged.
            conn.execute(
                f"""
                INSERT INTO cache_entries (id, {_ALL_COLUMNS})
                VALUES ({_FREE_ROWID}, {_PLACEHOLDERS})
                ON CONFLICT (org, project, domain, key) DO UPDATE SET
                    output_uri = excluded.output_uri,
                    output_literals = excluded.output_literals,
                    source_identifier = excluded.source_identifier,
                    key_map = excluded.key_map,
                    created_at = CASE WHEN ? THEN cache_entries.created_at
                                      ELSE excluded.created_at END,
                    last_updated_at = excluded.last_updated_at,
                    expires_at = excluded.expires_at,
                    blob_bytes = excluded.blob_bytes,
                    last_accessed_at = excluded.last_accessed_at
                """,
                (rowid, rowid, *params, keep_created_at),
            )
        return None if found is None else _entry_from_row(row.scope, row.key, found)

    def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Delete the entry; return the deleted row, or None if there was none."""
        with self._transaction() as conn:
            found = conn.execute(
                _SELECT_ENTRY,
                self._keyed(scope, key),
            ).fetchone()
            if found is None:
                return None
            conn.execute(
                f"DELETE FROM cache_entries WHERE {_SCOPE_KEY_WHERE}", _scope_key(scope, key)
            )
        return _entry_from_row(scope, key, found)

    def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """Delete the entry only if it still has ``row``'s outputs and ``last_updated_at``.

        Returns whether a row was deleted.
        """
        params = _unchanged_params(row)
        with self._session() as conn:
            return conn.execute(_DELETE_IF_UNCHANGED, params).rowcount > 0

    def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """Set ``last_accessed_at`` to ``at`` on each of ``entries`` whose value is strictly
        before ``if_before``; return how many rows changed (one transaction for the batch).
        """
        at_us, before_us = _to_us(at, "at"), _to_us(if_before, "if_before")
        if not entries:
            return 0
        params = [(at_us, *_scope_key(scope, key), before_us) for scope, key in entries]
        # One transaction: one write lock and one WAL commit for the batch, not one per entry.
        with self._transaction() as conn:
            return conn.executemany(_RECORD_ACCESS, params).rowcount

    def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """Return whether any entry, in any scope, has one of ``uris`` as its ``output_uri``."""
        if not uris:
            return False
        placeholders = ", ".join("?" * len(uris))
        with self._session() as conn:
            found = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM cache_entries WHERE output_uri IN ({placeholders}))",
                tuple(uris),
            ).fetchone()
        return bool(found[0])

    def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """Grant ``row`` unless another owner holds an unexpired reservation on the key.

        Returns the reservation in force afterwards: ``row`` if granted, else the holder's.
        """
        attempt = _ReservationAttempt(row, now)
        with self._session() as conn:
            attempt.run(conn)
        return attempt.result()

    def acquire_reservation_nowait(
        self, row: ReservationRow, now: datetime
    ) -> ReservationRow | None:
        """:meth:`acquire_reservation` if it needs no wait: return None, having applied
        nothing, when another connection holds the write lock (or the database is in memory,
        whose lock a waiting thread may hold); the caller then calls the waiting method.

        It runs on this thread's no-wait connection, whose commits never checkpoint the WAL;
        :attr:`checkpoint_due` says when :meth:`checkpoint` should run (on a thread that may
        wait). Raises as :meth:`acquire_reservation` does for any other error.
        """
        if self._memory is not None:
            return None
        attempt = _ReservationAttempt(row, now)
        with _Session(self, nowait=True) as conn:
            try:
                attempt.run(conn)
            except sqlite3.OperationalError as error:
                if _is_busy(error):
                    return None  # rolled back (or never begun): nothing applied
                raise
        self._nowait_commits += 1
        return attempt.result()

    @property
    def checkpoint_due(self) -> bool:
        """Whether the no-wait connections committed enough since the last
        :meth:`checkpoint` that one should run now. Never raises.
        """
        return self._nowait_commits >= _CHECKPOINT_AFTER_COMMITS

    def checkpoint(self) -> None:
        """Copy the whole WAL back into the database and make the next writer restart the
        log from its beginning, so that it stops growing, on this thread's regular
        connection: a passive checkpoint (no lock; it fsyncs), then a RESTART one, which
        waits up to 100 ms for the writer and for readers of older snapshots and holds the
        write lock while it copies what the first left. One that finds them still busy
        leaves the log to the next checkpoint. Raises UnavailableError if the store is
        closed or unreachable.
        """
        # Reset first: commits made while this runs count towards the next one.
        self._nowait_commits = 0
        with self._session() as conn:
            # The passive pass copies the bulk without stopping writers. It alone is not
            # enough: with no-wait writers committing back to back it never finds the log
            # fully copied when the next write begins, so the log never restarts and grows
            # without bound (bench/analysis.md, P2).
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            conn.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS:d}")
            try:
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms:d}")

    def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """Delete the reservation if ``owner_id`` holds it; return whether one was deleted."""
        with self._session() as conn:
            cursor = conn.execute(
                f"DELETE FROM reservations WHERE {_SCOPE_KEY_WHERE} AND owner_id = ?",
                (*_scope_key(scope, key), owner_id),
            )
            return cursor.rowcount > 0

    def get_reservation(self, scope: Scope, key: str) -> ReservationRow | None:
        """Return the reservation row on ``key`` (expired or not), or None."""
        with self._session() as conn:
            found = conn.execute(RESERVATION_SELECT_SQL, _scope_key(scope, key)).fetchone()
        return None if found is None else _reservation_from_row(scope, key, found)

    def list_entries(
        self, entry_filter: EntryFilter, limit: int, after: EntryCursor | None = None
    ) -> list[EntryRow]:
        """Return up to ``limit`` entries matching ``entry_filter``, newest update first,
        strictly after ``after`` (ties broken by scope, then key, ascending).

        Keyset pagination: pass the last row of a page as ``after`` for the next page.
        Raises InvalidArgumentError for a negative ``limit`` or a naive cursor time.
        """
        statement, params = list_entries_query(_LISTING, _ENTRY_COLUMNS, entry_filter, limit, after)
        with self._session() as conn:
            rows = conn.execute(statement, params).fetchall()
        return [_scoped_entry_from_row(row) for row in rows]

    def delete_entries_updated_before(
        self, cutoff: datetime, limit: int, *, dry_run: bool = False
    ) -> list[EntryRow]:
        """Delete (or with ``dry_run`` only select) up to ``limit`` entries last updated
        strictly before ``cutoff``, oldest first (ties by scope, then key); return them.

        Selection and deletion are one ``BEGIN IMMEDIATE`` transaction.
        """
        check_limit(limit)
        cutoff_us = _to_us(cutoff, "cutoff")
        select = f"""
            SELECT org, project, domain, key, {_ENTRY_COLUMNS} FROM cache_entries
            WHERE last_updated_at < ?
            ORDER BY last_updated_at, org, project, domain, key
            LIMIT ?
        """
        if dry_run:
            with self._session() as conn:
                rows = conn.execute(select, (cutoff_us, limit)).fetchall()
        else:
            with self._transaction() as conn:
                rows = conn.execute(select, (cutoff_us, limit)).fetchall()
                conn.executemany(
                    f"DELETE FROM cache_entries WHERE {_SCOPE_KEY_WHERE}",
                    [tuple(row[:4]) for row in rows],
                )
        return [_scoped_entry_from_row(row) for row in rows]

    def delete_entries_if_unchanged(self, rows: Sequence[EntryRow]) -> list[EntryRow]:
        """Delete each entry of ``rows`` that still has that row's outputs and
        ``last_updated_at``; return those of ``rows`` that were deleted, in the order given.

        One ``BEGIN IMMEDIATE`` transaction. Inside it, one conditional delete per row: the
        database is in-process, so statements cost no round trip, and this works on every
        supported SQLite (``RETURNING``, which one statement for the batch would need to say
        which rows went, arrived only in 3.35).
        """
        if not rows:
            return []  # no write lock for nothing
        params = [_unchanged_params(row) for row in rows]
        with self._transaction() as conn:
            return [
                row
                for row, row_params in zip(rows, params, strict=True)
                if conn.execute(_DELETE_IF_UNCHANGED, row_params).rowcount > 0
            ]

    def stats(self, now: datetime) -> CatalogStats:
        """Return catalog totals; reservations count as active while ``expires_at > now``.

        ``inline_bytes`` sums the stored output literals; ``blob_entries`` counts entries
        with an output URI. Per-scope figures are ordered by scope. One read snapshot.
        """
        now_us = _to_us(now, "now")
        # Both reads see one snapshot.
        with self._snapshot() as conn:
            groups = conn.execute(
                """
                SELECT org, project, domain, count(*),
                       coalesce(sum(length(output_literals)), 0), count(output_uri)
                FROM cache_entries
                GROUP BY org, project, domain
                ORDER BY org, project, domain
                """
            ).fetchall()
            active: int = conn.execute(
                "SELECT count(*) FROM reservations WHERE expires_at > ?", (now_us,)
            ).fetchone()[0]
        by_scope = tuple(
            ProjectStats(
                scope=Scope(org, project, domain),
                entries=count,
                inline_bytes=size,
                blob_entries=blobs,
            )
            for org, project, domain, count, size, blobs in groups
        )
        return CatalogStats(
            entries=sum(group.entries for group in by_scope),
            inline_bytes=sum(group.inline_bytes for group in by_scope),
            blob_entries=sum(group.blob_entries for group in by_scope),
            active_reservations=active,
            by_scope=by_scope,
        )

    def delete_expired_entries(self, now: datetime, limit: int) -> list[EntryRow]:
        """Delete up to ``limit`` entries with ``expires_at`` at or before ``now``, soonest
        expired first (ties by scope, then key); return them. One ``BEGIN IMMEDIATE``.
        """
        check_limit(limit)
        select = f"""
            SELECT {_ALL_COLUMNS} FROM cache_entries
            WHERE expires_at IS NOT NULL AND expires_at <= ?
            ORDER BY expires_at, org, project, domain, key
            LIMIT ?
        """
        with self._transaction() as conn:
            rows = conn.execute(select, (_to_us(now, "now"), limit)).fetchall()
            conn.executemany(
                f"DELETE FROM cache_entries WHERE {_SCOPE_KEY_WHERE}",
                [tuple(row[:4]) for row in rows],
            )
        return [_scoped_entry_from_row(row) for row in rows]

    def list_least_recently_used(
        self, limit: int, after: AccessCursor | None = None
    ) -> list[EntryRow]:
        """Return up to ``limit`` entries, least recently accessed first (ties by scope, then
        key), strictly after ``after``.
        """
        check_limit(limit)
        condition, params = "", cast(tuple[Any, ...], ())
        if after is not None:
            condition = "WHERE (last_accessed_at, org, project, domain, key) > (?, ?, ?, ?, ?)"
            params = (
                _to_us(after.last_accessed_at, "after.last_accessed_at"),
                *_scope_key(after.scope, after.key),
            )
        with self._session() as conn:
            rows = conn.execute(
                f"""
                SELECT {_ALL_COLUMNS} FROM cache_entries {condition}
                ORDER BY last_accessed_at, org, project, domain, key
                LIMIT ?
                """,
                (*params, limit),
            ).fetchall()
        return [_scoped_entry_from_row(row) for row in rows]

    def stored_bytes(self) -> int:
        """Return the inline bytes plus the recorded blob sizes of every entry."""
        with self._session() as conn:
            total: int = conn.execute(
                "SELECT coalesce(sum(coalesce(length(output_literals), 0)"
                " + coalesce(blob_bytes, 0)), 0) FROM cache_entries"
            ).fetchone()[0]
        return total

    @contextmanager
    def maintenance_lock(self, holder: str, now: datetime, lease: timedelta) -> Iterator[bool]:
        """Take the cleanup lease row for ``holder`` unless another holder's lease is still
        running at ``now``; yield whether it was taken, and give it back on exit.

        A holder that dies leaves its lease to expire ``lease`` after ``now``.
        """
        now_us = _to_us(now, "now")
        with self._session() as conn:
            taken = (
                conn.execute(
                    """
                    INSERT INTO maintenance_leases (name, holder, expires_at) VALUES (?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET
                        holder = excluded.holder, expires_at = excluded.expires_at
                    WHERE maintenance_leases.holder = excluded.holder
                       OR maintenance_leases.expires_at <= ?
                    """,
                    (_CLEANUP_LEASE, holder, now_us + lease // _MICROSECOND, now_us),
                ).rowcount
                > 0
            )
        try:
            yield taken
        finally:
            # Closed meanwhile: the lease runs out on its own, as a dead holder's does.
            if taken:
                with suppress(UnavailableError), self._session() as conn:
                    conn.execute(
                        "DELETE FROM maintenance_leases WHERE name = ? AND holder = ?",
                        (_CLEANUP_LEASE, holder),
                    )

    def pool_stats(self) -> PoolStats | None:
        """Return None: SQLite connections are per thread, not pooled."""
        return None

    def ping(self) -> None:
        """Run ``SELECT 1``; raise UnavailableError if the store does not answer (or is closed)."""
        with self._session() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection this object opened. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections)
            self._connections.clear()
            if self._memory is not None:
                connections.append(self._memory)
            # Under the lock, so that a fork never copies a connection half closed.
            for conn in connections:
                conn.close()

    def __enter__(self) -> SqliteRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`, recording it in ``PRAGMA user_version``.

    Raises InternalError if the database was written by a newer schema.
    """
    # Checked and applied under the write lock, so concurrent openers migrate exactly once.
    with _committed(conn, "BEGIN IMMEDIATE"):
        conn.create_function(_ROWID_FUNCTION, 4, entry_rowid, deterministic=True)
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        for target, statements in pending(MIGRATIONS, version):
            for statement in statements:
                conn.execute(statement)
            # PRAGMA does not take bound parameters; target is our own int.
            conn.execute(f"PRAGMA user_version = {target:d}")


@contextmanager
def _committed(conn: sqlite3.Connection, begin: str) -> Iterator[None]:
    """Run the block inside a transaction ``begin`` opens on ``conn``: commit it on success,
    else roll it back and re-raise.
    """
    conn.execute(begin)
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


# A reservation's three statements, in one write transaction: who held the key, the upsert
# whose WHERE decides the grant, and the row that decision left in force. Module constants so
# the benchmark's bare-SQL baseline runs exactly these.
RESERVATION_HOLDER_SQL: Final = f"SELECT owner_id FROM reservations WHERE {_SCOPE_KEY_WHERE}"
RESERVATION_UPSERT_SQL: Final = """
        INSERT INTO reservations
            (org, project, domain, key, owner_id, heartbeat_interval_us, expires_at)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (org, project, domain, key) DO UPDATE SET
            owner_id = excluded.owner_id,
            heartbeat_interval_us = excluded.heartbeat_interval_us,
            expires_at = excluded.expires_at
        WHERE reservations.owner_id = excluded.owner_id
           OR reservations.expires_at <= ?
        """
RESERVATION_SELECT_SQL: Final = (
    f"SELECT {_RESERVATION_COLUMNS} FROM reservations WHERE {_SCOPE_KEY_WHERE}"
)


class _ReservationAttempt:
    """One :meth:`SqliteRepository.acquire_reservation`, split around its write transaction:
    the parameters are built before it and the answer decoded after it, so that the write
    lock (which every other writer of the file waits for) is held for the three statements
    only.
    """

    __slots__ = ("_found", "_key_params", "_previous", "_row", "_upsert")

    def __init__(self, row: ReservationRow, now: datetime) -> None:
        self._row = row
        self._key_params = _scope_key(row.scope, row.key)
        self._upsert = (
            *self._key_params,
            row.owner_id,
            row.heartbeat_interval // _MICROSECOND,
            _to_us(row.expires_at, "expires_at"),
            _to_us(now, "now"),
        )
        self._previous: tuple[str] | None = None
        self._found: tuple[str, int, int] | None = None

    def run(self, conn: sqlite3.Connection) -> None:
        """Run the statements in one ``BEGIN IMMEDIATE`` transaction on ``conn`` and commit
        it; on any error roll it back (nothing applied) and re-raise.
        """
        # Written out rather than through _committed: a generator context manager costs
        # about a microsecond, on the path every reservation takes.
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._previous = conn.execute(RESERVATION_HOLDER_SQL, self._key_params).fetchone()
            # The upsert's WHERE decides the grant; reading back inside the same transaction
            # returns exactly the row that decision left in force.
            conn.execute(RESERVATION_UPSERT_SQL, self._upsert)
            self._found = conn.execute(RESERVATION_SELECT_SQL, self._key_params).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def result(self) -> ReservationRow:
        """Return the reservation in force after :meth:`run` (committed): the one asked for
        when granted, else the holder's, with the previous holder named on a takeover.
        """
        found, row = self._found, self._row
        if found is None:  # pragma: no cover - the upsert always leaves a row
            raise InternalError("reservation vanished inside its own transaction")
        # A grant leaves exactly the values asked for: no need to decode them again (when
        # they are in UTC, as decoded rows are).
        granted = found == self._upsert[4:7] and row.expires_at.tzinfo is UTC
        result = row if granted else _reservation_from_row(row.scope, row.key, found)
        previous = self._previous
        if previous is not None and previous[0] != row.owner_id == result.owner_id:
            result = replace(result, taken_over_from=previous[0])
        return result


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction, keeping the error that caused it as the one raised."""
    # A failed COMMIT can leave the transaction open; the connection must not stay inside it.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
