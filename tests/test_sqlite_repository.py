"""Contract tests for SqliteRepository on an in-memory and a file database."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
from taskcache.repositories.base import EntryRow, ReservationRow, Scope
from taskcache.repositories.sqlite import SCHEMA_VERSION, SqliteRepository

SCOPE = Scope("org", "project", "domain")
# Odd microseconds catch any float rounding on the way through the database.
T0 = datetime(2024, 5, 17, 12, 30, 45, 123457, tzinfo=UTC)
US = timedelta(microseconds=1)


def entry(
    key: str = "key",
    *,
    scope: Scope = SCOPE,
    output_uri: str | None = "s3://bucket/outputs.pb",
    output_literals: bytes | None = b"\x00\x01literals",
    created_at: datetime = T0,
    last_updated_at: datetime = T0,
    source_identifier: bytes = b"\x0asource",
    key_map: dict[str, str] | None = None,
) -> EntryRow:
    return EntryRow(
        scope=scope,
        key=key,
        output_uri=output_uri,
        output_literals=output_literals,
        source_identifier=source_identifier,
        key_map={"a": "1", "ключ": "значение"} if key_map is None else key_map,
        created_at=created_at,
        last_updated_at=last_updated_at,
    )


def reservation(
    owner: str,
    expires_at: datetime,
    *,
    key: str = "key",
    heartbeat: timedelta = timedelta(seconds=5),
) -> ReservationRow:
    return ReservationRow(
        scope=SCOPE, key=key, owner_id=owner, heartbeat_interval=heartbeat, expires_at=expires_at
    )


@pytest.fixture(params=["memory", "file"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteRepository]:
    path = None if request.param == "memory" else tmp_path / "nested" / "cache.db"
    repository = SqliteRepository(path)
    yield repository
    repository.close()


# --- entries -------------------------------------------------------------------------------


def test_get_absent_entry_is_none(repo: SqliteRepository) -> None:
    assert repo.get_entry(SCOPE, "missing") is None


def test_create_inserts_when_absent(repo: SqliteRepository) -> None:
    row = entry()
    outcome = repo.create_entry(row, replace_if_updated_before=None)
    assert outcome.written is True
    assert outcome.replaced is None
    assert repo.get_entry(SCOPE, "key") == row


@pytest.mark.parametrize(
    ("output_uri", "output_literals"), [("s3://only/uri", None), (None, b"only literals")]
)
def test_create_stores_either_output_alone(
    repo: SqliteRepository, output_uri: str | None, output_literals: bytes | None
) -> None:
    row = entry(output_uri=output_uri, output_literals=output_literals)
    repo.create_entry(row, None)
    assert repo.get_entry(SCOPE, "key") == row


def test_create_refuses_existing_without_cutoff(repo: SqliteRepository) -> None:
    old = entry(last_updated_at=T0 - timedelta(days=365))
    repo.create_entry(old, None)
    outcome = repo.create_entry(entry(output_uri="s3://new"), None)
    assert outcome.written is False
    assert outcome.replaced is None
    assert repo.get_entry(SCOPE, "key") == old


def test_create_keeps_entry_updated_exactly_at_cutoff(repo: SqliteRepository) -> None:
    old = entry()
    repo.create_entry(old, None)
    outcome = repo.create_entry(entry(output_uri="s3://new", last_updated_at=T0 + US), T0)
    assert outcome.written is False
    assert repo.get_entry(SCOPE, "key") == old


def test_create_replaces_entry_updated_before_cutoff(repo: SqliteRepository) -> None:
    old = entry()
    repo.create_entry(old, None)
    new = entry(
        output_uri="s3://new", output_literals=None, created_at=T0 + US, last_updated_at=T0 + US
    )
    outcome = repo.create_entry(new, T0 + US)
    assert outcome.written is True
    assert outcome.replaced == old
    assert repo.get_entry(SCOPE, "key") == new


def test_scopes_and_keys_are_independent(repo: SqliteRepository) -> None:
    rows = [
        entry("key", scope=SCOPE),
        entry("key", scope=Scope()),
        entry("key", scope=Scope("org", "project", "other")),
        entry("other", scope=SCOPE),
    ]
    for row in rows:
        assert repo.create_entry(row, None).written
    for row in rows:
        assert repo.get_entry(row.scope, row.key) == row


def test_overwrite_inserts_when_absent(repo: SqliteRepository) -> None:
    row = entry()
    assert repo.overwrite_entry(row, keep_created_at=True) is None
    assert repo.get_entry(SCOPE, "key") == row


def test_overwrite_keeps_created_at_when_asked(repo: SqliteRepository) -> None:
    old = entry()
    repo.create_entry(old, None)
    later = T0 + timedelta(hours=1)
    new = entry(output_uri="s3://new", key_map={"b": "2"}, created_at=later, last_updated_at=later)
    assert repo.overwrite_entry(new, keep_created_at=True) == old
    assert repo.get_entry(SCOPE, "key") == replace(new, created_at=old.created_at)


def test_overwrite_replaces_created_at_otherwise(repo: SqliteRepository) -> None:
    old = entry()
    repo.create_entry(old, None)
    later = T0 + timedelta(hours=1)
    new = entry(output_uri=None, created_at=later, last_updated_at=later)
    assert repo.overwrite_entry(new, keep_created_at=False) == old
    assert repo.get_entry(SCOPE, "key") == new


def test_delete_returns_the_deleted_row(repo: SqliteRepository) -> None:
    row = entry()
    repo.create_entry(row, None)
    assert repo.delete_entry(SCOPE, "key") == row
    assert repo.get_entry(SCOPE, "key") is None
    assert repo.delete_entry(SCOPE, "key") is None


def test_delete_absent_is_none(repo: SqliteRepository) -> None:
    assert repo.delete_entry(SCOPE, "missing") is None


def test_delete_if_unchanged_deletes_unchanged_row(repo: SqliteRepository) -> None:
    row = entry(output_uri=None)  # NULL must match NULL
    repo.create_entry(row, None)
    assert repo.delete_entry_if_unchanged(row) is True
    assert repo.get_entry(SCOPE, "key") is None
    assert repo.delete_entry_if_unchanged(row) is False


@pytest.mark.parametrize(
    "change",
    [
        {"output_uri": "s3://elsewhere"},
        {"output_uri": None},
        {"output_literals": b"other"},
        {"output_literals": None},
        {"output_literals": b""},
        {"last_updated_at": T0 + US},
    ],
)
def test_delete_if_unchanged_keeps_changed_row(
    repo: SqliteRepository, change: dict[str, Any]
) -> None:
    stored = replace(entry(), **change)
    repo.create_entry(stored, None)
    assert repo.delete_entry_if_unchanged(entry()) is False
    assert repo.get_entry(SCOPE, "key") == stored


def test_delete_if_unchanged_ignores_other_scope(repo: SqliteRepository) -> None:
    row = entry()
    repo.create_entry(row, None)
    assert repo.delete_entry_if_unchanged(replace(row, scope=Scope())) is False
    assert repo.get_entry(SCOPE, "key") == row


# --- reservations --------------------------------------------------------------------------


def test_acquire_grants_when_absent(repo: SqliteRepository) -> None:
    wanted = reservation("a", T0 + timedelta(seconds=15))
    assert repo.acquire_reservation(wanted, T0) == wanted


def test_acquire_returns_unexpired_holder_unchanged(repo: SqliteRepository) -> None:
    held = reservation("a", T0 + timedelta(seconds=15))
    repo.acquire_reservation(held, T0)
    now = T0 + timedelta(seconds=15) - US
    other = reservation("b", now + timedelta(seconds=30), heartbeat=timedelta(seconds=10))
    assert repo.acquire_reservation(other, now) == held
    # Still refused: the failed attempt must not have changed anything.
    assert repo.acquire_reservation(other, now) == held


def test_acquire_extends_own_reservation(repo: SqliteRepository) -> None:
    repo.acquire_reservation(reservation("a", T0 + timedelta(seconds=15)), T0)
    extended = reservation("a", T0 + timedelta(seconds=40), heartbeat=timedelta(seconds=7))
    assert repo.acquire_reservation(extended, T0 + timedelta(seconds=10)) == extended
    assert repo.acquire_reservation(reservation("b", T0), T0 + timedelta(seconds=39)) == extended


def test_acquire_takes_over_at_expiry(repo: SqliteRepository) -> None:
    expiry = T0 + timedelta(seconds=15)
    repo.acquire_reservation(reservation("a", expiry), T0)
    takeover = reservation("b", expiry + timedelta(seconds=15))
    assert repo.acquire_reservation(takeover, expiry) == takeover
    assert repo.acquire_reservation(reservation("a", expiry + US), expiry + US) == takeover


def test_reservations_are_per_key(repo: SqliteRepository) -> None:
    first = reservation("a", T0 + timedelta(seconds=15), key="k1")
    second = reservation("b", T0 + timedelta(seconds=15), key="k2")
    assert repo.acquire_reservation(first, T0) == first
    assert repo.acquire_reservation(second, T0) == second


def test_release_own_reservation(repo: SqliteRepository) -> None:
    repo.acquire_reservation(reservation("a", T0 + timedelta(seconds=15)), T0)
    assert repo.release_reservation(SCOPE, "key", "a") is True
    assert repo.release_reservation(SCOPE, "key", "a") is False
    other = reservation("b", T0 + timedelta(seconds=15))
    assert repo.acquire_reservation(other, T0) == other


def test_release_foreign_or_absent_is_noop(repo: SqliteRepository) -> None:
    assert repo.release_reservation(SCOPE, "key", "a") is False
    held = reservation("a", T0 + timedelta(seconds=15))
    repo.acquire_reservation(held, T0)
    assert repo.release_reservation(SCOPE, "key", "b") is False
    assert repo.release_reservation(Scope(), "key", "a") is False
    assert repo.acquire_reservation(reservation("b", T0), T0) == held


# --- time, encoding, lifecycle --------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
    ),
    heartbeat=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)),
)
def test_timestamps_round_trip_to_the_microsecond(moment: datetime, heartbeat: timedelta) -> None:
    with SqliteRepository(None) as repository:
        repository.create_entry(entry(created_at=moment, last_updated_at=moment), None)
        stored = repository.get_entry(SCOPE, "key")
        assert stored is not None
        assert stored.created_at == moment
        assert stored.last_updated_at == moment
        assert stored.created_at.utcoffset() == timedelta(0)
        wanted = reservation("a", moment, heartbeat=heartbeat)
        got = repository.acquire_reservation(wanted, moment - timedelta(days=1))
        assert got == wanted
        assert got.expires_at.utcoffset() == timedelta(0)


def test_naive_datetime_is_rejected(repo: SqliteRepository) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        repo.create_entry(entry(created_at=datetime(2024, 1, 1)), None)
    assert caught.value.field == "created_at"
    assert repo.get_entry(SCOPE, "key") is None


def test_ping_and_close(repo: SqliteRepository) -> None:
    repo.ping()
    repo.close()
    repo.close()  # idempotent
    with pytest.raises(UnavailableError):
        repo.ping()
    with pytest.raises(UnavailableError):
        repo.get_entry(SCOPE, "key")


def test_memory_databases_are_private() -> None:
    with SqliteRepository(None) as first, SqliteRepository(None) as second:
        first.create_entry(entry(), None)
        assert second.get_entry(SCOPE, "key") is None


def test_file_schema_is_versioned(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    SqliteRepository(path).close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {
        "cache_entries",
        "reservations",
        "cache_entries_last_updated_at",
        "reservations_expires_at",
    } <= names


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
