"""SQLite-specific behaviour of SqliteRepository: files, WAL, migrations, locking.

The behaviour every backend shares is in ``test_repository_contract.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from taskcache.errors import InternalError, UnavailableError
from taskcache.repositories.base import EntryCursor, EntryFilter
from taskcache.repositories.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteRepository
from test_repository_contract import SCOPE, T0, entry, reservation


def test_memory_databases_are_private() -> None:
    with SqliteRepository(None) as first, SqliteRepository(None) as second:
        first.create_entry(entry(), None)
        assert second.get_entry(SCOPE, "key") is None


def test_file_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    SqliteRepository(path).close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {
        "cache_entries",
        "reservations",
        "cache_entries_last_updated_at",
        "cache_entries_newest_first",
        "cache_entries_output_uri",
        "reservations_expires_at",
    } <= names


def test_version_1_file_is_upgraded_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    with closing(sqlite3.connect(path)) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO cache_entries VALUES "
            "('org', 'project', 'domain', 'key', 's3://x', NULL, x'0a', '{}', 1, 2)"
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    with SqliteRepository(path) as repository:
        stored = repository.get_entry(SCOPE, "key")
        assert stored is not None
        assert stored.output_uri == "s3://x"
        assert repository.list_entries(EntryFilter(), 10) == [stored]
        assert repository.output_uri_referenced(["s3://x"])
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"cache_entries_newest_first", "cache_entries_output_uri"} <= indexes


def test_listing_pages_walk_the_newest_first_index(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    SqliteRepository(path).close()
    cursor = EntryCursor(T0, SCOPE, "key")
    with closing(sqlite3.connect(path)) as conn:
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                """
                EXPLAIN QUERY PLAN
                SELECT * FROM cache_entries
                WHERE last_updated_at <= ? AND (last_updated_at < ?
                      OR (org, project, domain, key) > (?, ?, ?, ?))
                ORDER BY last_updated_at DESC, org, project, domain, key LIMIT 10
                """,
                (1, 1, *(cursor.scope.org, cursor.scope.project, cursor.scope.domain), "key"),
            )
        )
    assert "cache_entries_newest_first" in plan
    assert "TEMP B-TREE" not in plan


def test_reopening_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    row = entry()
    held = reservation("a", T0 + timedelta(seconds=15))
    with SqliteRepository(path) as first:
        first.create_entry(row, None)
        first.acquire_reservation(held, T0)
    with SqliteRepository(str(path)) as second:
        assert second.get_entry(SCOPE, "key") == row
        assert second.acquire_reservation(reservation("b", T0), T0) == held


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    SqliteRepository(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(InternalError, match="newer"):
        SqliteRepository(path)


def test_two_objects_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    with SqliteRepository(path) as first, SqliteRepository(path) as second:
        row = entry()
        assert first.create_entry(row, None).written
        assert second.get_entry(SCOPE, "key") == row
        assert second.create_entry(entry(output_uri="s3://other"), None).written is False
        held = reservation("a", T0 + timedelta(seconds=15))
        second.acquire_reservation(held, T0)
        assert first.acquire_reservation(reservation("b", T0), T0) == held
        assert second.delete_entry(SCOPE, "key") == row
        assert first.get_entry(SCOPE, "key") is None


def test_file_repository_serves_many_threads(tmp_path: Path) -> None:
    repository = SqliteRepository(tmp_path / "cache.db")
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            repository.create_entry(entry(f"key-{index}"), None)
            assert repository.get_entry(SCOPE, f"key-{index}") == entry(f"key-{index}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    repository.close()
    # Every thread's connection was closed, whichever thread opened it.
    with pytest.raises(UnavailableError):
        repository.get_entry(SCOPE, "key-0")


# --- error mapping -------------------------------------------------------------------------


def test_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    repository = SqliteRepository(path, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(UnavailableError) as caught:
            repository.create_entry(entry(), None)
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The failed transaction was rolled back: the connection is usable again.
    assert repository.create_entry(entry(), None).written
    repository.close()


def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(UnavailableError) as caught:
        SqliteRepository(directory)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


def test_uncreatable_parent_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UnavailableError):
        SqliteRepository(blocker / "cache.db")


def test_corrupt_file_is_internal_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    path.write_bytes(b"this is not a sqlite database, not even close" * 100)
    with pytest.raises(InternalError) as caught:
        SqliteRepository(path)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


# --- concurrent opening of a new file -------------------------------------------------------


def _open_worker(path: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=60)
        with SqliteRepository(path) as repository:
            repository.ping()
        results.put("ok")
    except BaseException as error:
        results.put(repr(error))


def test_processes_opening_a_new_file_together_migrate_once(tmp_path: Path) -> None:
    path = tmp_path / "new" / "cache.db"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    results = context.Queue()
    processes = [
        context.Process(target=_open_worker, args=(str(path), barrier, results)) for _ in range(8)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["ok"] * 8
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --- fork safety ---------------------------------------------------------------------------

FORKS = ["os.fork", "multiprocessing"]
MARK = "parent_connection"


def _connection(repository: SqliteRepository) -> sqlite3.Connection:
    """This thread's connection of ``repository`` (opened on first use)."""
    with repository._session() as conn:
        return conn


def _is_marked(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` is the SQLite connection :func:`_mark` ran on (TEMP tables are private
    to one connection).
    """
    query = "SELECT count(*) FROM sqlite_temp_master WHERE name = ?"
    return bool(conn.execute(query, (MARK,)).fetchone()[0])


def _run_forked(how: str, check: Callable[[], None]) -> int | None:
    """Run ``check`` in a child forked by ``how``; return the child's exit code."""
    if how == "multiprocessing":
        process = multiprocessing.get_context("fork").Process(target=check)
        process.start()
        process.join(timeout=60)
        return process.exitcode
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            check()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[SqliteRepository, list[sqlite3.Connection]]]:
    """A file repository used by this thread and by a second, still running thread.

    Yields the repository and both threads' connections; this thread's is marked.
    """
    repository = SqliteRepository(tmp_path / "cache.db")
    repository.create_entry(entry("parent"), None)
    _connection(repository).execute(f"CREATE TEMP TABLE {MARK} (x)")
    connections = [_connection(repository)]
    opened, stop = threading.Event(), threading.Event()

    def hold_a_connection() -> None:
        connections.append(_connection(repository))
        opened.set()
        stop.wait()

    thread = threading.Thread(target=hold_a_connection)
    thread.start()
    opened.wait()
    try:
        yield repository, connections
    finally:
        stop.set()
        thread.join()
        repository.close()


@pytest.mark.parametrize("how", FORKS)
def test_forked_child_closes_inherited_connections_and_opens_its_own(
    shared: tuple[SqliteRepository, list[sqlite3.Connection]], how: str
) -> None:
    repository, inherited = shared

    def child() -> None:
        for conn in inherited:
            with pytest.raises(sqlite3.ProgrammingError, match="closed"):
                conn.execute("SELECT 1")
        assert repository.get_entry(SCOPE, "parent") == entry("parent")
        own = _connection(repository)
        assert all(own is not conn for conn in inherited)
        assert not _is_marked(own)
        assert repository.create_entry(entry("child"), None).written
        repository.close()

    assert _run_forked(how, child) == 0
    # The child's closes left the parent's connections and the WAL alone.
    assert Path(f"{repository.path}-wal").exists()
    assert _is_marked(_connection(repository))
    assert repository.get_entry(SCOPE, "child") == entry("child")
    assert repository.create_entry(entry("after"), None).written
    listed = repository.list_entries(EntryFilter(), 10)
    assert sorted(row.key for row in listed) == ["after", "child", "parent"]


def test_child_writes_survive_the_parent_closing_first(tmp_path: Path) -> None:
    # A child that kept an inherited connection open would write without locks of its own;
    # the parent's last close would then delete the WAL and lose the child's later commit.
    path = tmp_path / "cache.db"
    repository = SqliteRepository(path)
    repository.create_entry(entry("parent"), None)
    context = multiprocessing.get_context("fork")
    written, parent_closed = context.Event(), context.Event()

    def child() -> None:
        repository.create_entry(entry("child-1"), None)
        written.set()
        assert parent_closed.wait(timeout=30)
        repository.create_entry(entry("child-2"), None)
        repository.close()

    process = context.Process(target=child)
    process.start()
    assert written.wait(timeout=30)
    repository.close()
    parent_closed.set()
    process.join(timeout=60)
    assert process.exitcode == 0
    with SqliteRepository(path) as reopened:
        listed = reopened.list_entries(EntryFilter(), 10)
    assert sorted(row.key for row in listed) == ["child-1", "child-2", "parent"]


def test_fork_waits_for_calls_in_flight(tmp_path: Path) -> None:
    # Closing a connection in the child mid-transaction would roll back in the WAL index the
    # parent shares; so the fork waits until the other thread's transaction has committed.
    repository = SqliteRepository(tmp_path / "cache.db")
    inside = threading.Event()

    def slow_write() -> None:
        with repository._transaction() as conn:
            conn.execute("INSERT INTO reservations VALUES ('o', 'p', 'd', 'k', 'w', 1, 1)")
            inside.set()
            time.sleep(0.5)

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert inside.wait(timeout=30)
    forking_at = time.monotonic()

    def child() -> None:
        assert time.monotonic() - forking_at >= 0.3  # the fork waited for the commit
        assert repository.create_entry(entry("child"), None).written
        repository.close()

    exit_code = _run_forked("os.fork", child)
    writer.join()
    assert exit_code == 0
    assert repository.get_entry(SCOPE, "child") == entry("child")
    with repository._session() as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT owner_id FROM reservations").fetchall() == [("w",)]
    repository.close()


@pytest.mark.parametrize("how", FORKS)
def test_forked_child_cannot_use_an_in_memory_repository(how: str) -> None:
    with SqliteRepository(None) as repository:
        repository.create_entry(entry("parent"), None)

        def child() -> None:
            with pytest.raises(UnavailableError, match="forked child"):
                repository.get_entry(SCOPE, "parent")
            repository.close()

        assert _run_forked(how, child) == 0
        assert repository.get_entry(SCOPE, "parent") == entry("parent")
