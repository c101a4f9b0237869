"""PostgreSQL-specific behaviour: migrations, races across processes, restarts, errors.

The behaviour every backend shares is in ``test_repository_contract.py``. Servers and
databases come from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from ci_policy import in_ci, skip_or_fail

if not in_ci():
    pytest.importorskip("psycopg", reason="NO POSTGRESQL: psycopg is not installed")

import psycopg

import taskcache
from builders import int_map, make_key
from postgres import PostgresServer, answers
from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
from taskcache.repositories.base import EntryFilter, Replaceable, ReservationRow
from taskcache.repositories.postgres import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_TABLE,
    PostgresRepository,
    migrate,
)
from test_repository_contract import SCOPE, T0, US, entry, reservation

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """An empty database (no schema at all), dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def _query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def _run_together(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` on ``count`` threads released at once; return results, raise errors."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def _run_processes(count: int, target: Callable[..., None], *args: Any) -> list[Any]:
    """Run ``target(index, barrier, results, *args)`` in ``count`` spawned processes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(index, barrier, results, *args))
        for index in range(count)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
    return outcomes


# --- schema and migrations -------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_idempotent(fresh_database: str) -> None:
    assert migrate(fresh_database) == SCHEMA_VERSION
    assert migrate(fresh_database) == SCHEMA_VERSION
    with PostgresRepository(fresh_database) as repository:  # migrates again: no-op
        repository.ping()
    versions = _query(fresh_database, f"SELECT version FROM {SCHEMA_VERSION_TABLE}")
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    indexes = {
        row[0]
        for row in _query(
            fresh_database,
            "SELECT indexname FROM pg_indexes WHERE tablename IN ('cache_entries', 'reservations')",
        )
    }
    assert {
        "cache_entries_pkey",
        "cache_entries_last_updated_at",
        "cache_entries_newest_first",
        "cache_entries_output_uri",
        "reservations_pkey",
        "reservations_expires_at",
    } <= indexes


def test_concurrent_migrations_run_once(fresh_database: str) -> None:
    def work(index: int) -> int:
        if index % 2:
            return migrate(fresh_database)
        with PostgresRepository(fresh_database) as repository:
            repository.ping()
        return SCHEMA_VERSION

    assert _run_together(4, work) == [SCHEMA_VERSION] * 4
    rows = _query(
        fresh_database, f"SELECT version, count(*) FROM {SCHEMA_VERSION_TABLE} GROUP BY 1"
    )
    # Each step recorded once.
    assert sorted(rows) == [(version, 1) for version in range(1, SCHEMA_VERSION + 1)]


def test_newer_schema_is_refused(fresh_database: str) -> None:
    migrate(fresh_database)
    _query(
        fresh_database,
        f"INSERT INTO {SCHEMA_VERSION_TABLE} (version) VALUES (%s)",
        (SCHEMA_VERSION + 1,),
    )
    with pytest.raises(InternalError, match="newer"):
        migrate(fresh_database)
    with pytest.raises(InternalError, match="newer"):
        PostgresRepository(fresh_database)


def test_without_migrate_the_schema_must_be_current(fresh_database: str) -> None:
    with pytest.raises(InternalError, match="taskcache migrate"):
        PostgresRepository(fresh_database, migrate=False)
    assert _query(fresh_database, "SELECT to_regclass('cache_entries')") == [(None,)]
    migrate(fresh_database)
    with PostgresRepository(fresh_database, migrate=False) as repository:
        assert repository.create_entry(entry(), None).written


def test_role_without_create_privilege_starts_on_a_current_schema(
    fresh_database: str, postgres_server: PostgresServer
) -> None:
    migrate(fresh_database)
    role = f"taskcache_app_{uuid.uuid4().hex[:8]}"
    try:
        _query(postgres_server.admin_url, f"CREATE ROLE {role} LOGIN")
    except psycopg.Error as error:
        skip_or_fail(f"CANNOT CREATE A ROLE on this server: {error}")
    try:
        _query(fresh_database, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        _query(
            fresh_database,
            "GRANT SELECT, INSERT, UPDATE, DELETE ON cache_entries, reservations, "
            f"{SCHEMA_VERSION_TABLE} TO {role}",
        )
        parts = urlsplit(fresh_database)
        app_url = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
        if answers(app_url) is not None:
            skip_or_fail("the server does not let a new role log in without a password")
        with PostgresRepository(app_url) as repository:  # migrate=True: nothing to do
            assert repository.create_entry(entry(), None).written
    finally:
        _query(fresh_database, f"DROP OWNED BY {role}")
        _query(postgres_server.admin_url, f"DROP ROLE {role}")


def test_check_constraint_is_an_internal_error(postgres_repository: PostgresRepository) -> None:
    with pytest.raises(InternalError) as caught:
        postgres_repository.create_entry(entry(output_uri=None, output_literals=None), None)
    assert isinstance(caught.value.__cause__, psycopg.IntegrityError)


def test_sessions_run_in_utc_with_the_statement_timeout(fresh_database: str) -> None:
    # A database whose default time zone is far from UTC must not shift anything.
    name = fresh_database.rsplit("/", 1)[1]
    _query(fresh_database, f"ALTER DATABASE \"{name}\" SET TimeZone = 'Pacific/Chatham'")
    with PostgresRepository(fresh_database, statement_timeout=1.5) as repository:
        with repository._connection() as conn:
            settings = conn.execute(
                "SELECT current_setting('TimeZone'), current_setting('statement_timeout')"
            ).fetchone()
        assert settings == ("UTC", "1500ms")
        repository.create_entry(entry(), None)
        assert repository.get_entry(SCOPE, "key") == entry()
    stored = _query(fresh_database, "SELECT last_updated_at = %s FROM cache_entries", (T0,))
    assert stored == [(True,)]


def test_key_postgres_cannot_store_is_invalid_argument(
    postgres_repository: PostgresRepository,
) -> None:
    with pytest.raises(InvalidArgumentError):
        postgres_repository.create_entry(entry("nul\x00key"), None)
    postgres_repository.ping()


def test_two_repositories_share_one_database(clean_postgres: str) -> None:
    with PostgresRepository(clean_postgres) as first, PostgresRepository(clean_postgres) as second:
        row = entry()
        assert first.create_entry(row, None).written
        assert second.get_entry(SCOPE, "key") == row
        assert second.create_entry(entry(output_uri="s3://other"), None).written is False
        held = reservation("a", T0 + timedelta(seconds=15))
        second.acquire_reservation(held, T0)
        assert first.acquire_reservation(reservation("b", T0), T0) == held
        assert first.list_entries(EntryFilter(), 10) == [row]
        assert second.delete_entries_updated_before(T0 + US, 10) == [row]
        assert first.get_entry(SCOPE, "key") is None


# --- races -----------------------------------------------------------------------------------


def _create_worker(index: int, barrier: Any, results: Any, url: str) -> None:
    try:
        with PostgresRepository(url, min_size=1, max_size=1) as repository:
            barrier.wait(timeout=60)
            plain = repository.create_entry(entry("race", output_uri=f"s3://{index}"), None)
            barrier.wait(timeout=60)
            # "stale" holds a row updated before T0; every process offers a fresh one.
            fresh = entry("stale", output_uri=f"s3://{index}", last_updated_at=T0)
            stale = repository.create_entry(fresh, Replaceable(updated_before=T0))
        results.put((index, plain.written, stale.written, stale.replaced))
    except BaseException as error:
        results.put((index, repr(error), None, None))


@pytest.mark.slow
def test_processes_racing_create_entry_one_wins(
    clean_postgres: str, postgres_repository: PostgresRepository
) -> None:
    old = entry("stale", output_uri="s3://old", last_updated_at=T0 - timedelta(days=1))
    postgres_repository.create_entry(old, None)

    outcomes = _run_processes(8, _create_worker, clean_postgres)

    assert all(isinstance(plain, bool) for _, plain, _, _ in outcomes), outcomes
    winners = [index for index, plain, _, _ in outcomes if plain]
    assert len(winners) == 1
    stored = postgres_repository.get_entry(SCOPE, "race")
    assert stored is not None
    assert stored.output_uri == f"s3://{winners[0]}"

    replacers = [(index, replaced) for index, _, stale, replaced in outcomes if stale]
    assert len(replacers) == 1
    assert replacers[0][1] == old
    assert all(replaced is None for _, _, stale, replaced in outcomes if not stale)
    current = postgres_repository.get_entry(SCOPE, "stale")
    assert current is not None
    assert current.output_uri == f"s3://{replacers[0][0]}"


def _reservation_worker(index: int, barrier: Any, results: Any, url: str) -> None:
    try:
        owners: set[str] = set()
        with PostgresRepository(url, min_size=1, max_size=1) as repository:
            barrier.wait(timeout=60)
            for attempt in range(50):
                wanted = reservation(f"owner-{index}", T0 + timedelta(hours=1))
                owners.add(repository.acquire_reservation(wanted, T0 + attempt * US).owner_id)
        results.put(sorted(owners))
    except BaseException as error:
        results.put([repr(error)])


@pytest.mark.slow
def test_processes_racing_reservations_one_owner(clean_postgres: str) -> None:
    outcomes = _run_processes(8, _reservation_worker, clean_postgres)
    seen = {owner for owners in outcomes for owner in owners}
    assert len(seen) == 1, outcomes
    (owner,) = seen
    assert owner.startswith("owner-")
    with PostgresRepository(clean_postgres) as repository:
        held = repository.get_reservation(SCOPE, "key")
    assert held is not None
    assert held.owner_id == owner


def _acquire_once(url: str, wanted: ReservationRow, now: datetime, driver: str) -> ReservationRow:
    if driver == "sync":
        with PostgresRepository(url, max_size=1) as repository:
            return repository.acquire_reservation(wanted, now)
    from taskcache.repositories.postgres_async import AsyncPostgresRepository

    async def acquire() -> ReservationRow:
        async with await AsyncPostgresRepository.open(url, max_size=1) as repository:
            return await repository.acquire_reservation(wanted, now)

    return asyncio.run(acquire())


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize(
    ("snapshot_owner", "held_for"),
    [("a", timedelta(hours=1)), ("a", timedelta(seconds=1)), ("c", timedelta(seconds=1))],
)
def test_a_refusal_never_names_a_stale_holder(
    clean_postgres: str, driver: str, snapshot_owner: str, held_for: timedelta
) -> None:
    """The key changes hands after the acquire's snapshot but before its upsert decides: the
    refused caller is told the new holder, never a snapshot row that could not have refused
    it (its own, held or expired, or another owner's expired one).
    """
    with PostgresRepository(clean_postgres) as repository:
        repository.acquire_reservation(reservation(snapshot_owner, T0 + held_for), T0)
    later = T0 + timedelta(seconds=2)
    outcome: list[ReservationRow] = []
    with psycopg.connect(clean_postgres) as other:
        other.execute(
            "UPDATE reservations SET owner_id = 'b', expires_at = %s WHERE key = 'key'",
            (T0 + timedelta(hours=1),),
        )
        acquiring = threading.Thread(
            target=lambda: outcome.append(
                _acquire_once(clean_postgres, reservation("a", later), later, driver)
            )
        )
        acquiring.start()
        deadline = time.monotonic() + 30
        while not _query(
            clean_postgres,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND query LIKE '%%INSERT INTO reservations%%'",
        ):
            assert time.monotonic() < deadline, "the acquire never waited for the row lock"
            time.sleep(0.02)
        other.commit()
    acquiring.join(timeout=30)
    assert [(held.owner_id, held.expires_at) for held in outcome] == [
        ("b", T0 + timedelta(hours=1))
    ]


def test_threads_acquiring_and_releasing_never_share_a_reservation(clean_postgres: str) -> None:
    # Releases race the "read back the holder" step: acquire must retry, never fail, and
    # at most one thread may believe it holds the key at any instant.
    holders = 0
    most = 0
    lock = threading.Lock()
    with PostgresRepository(clean_postgres, max_size=8) as repository:

        def work(index: int) -> int:
            nonlocal holders, most
            granted = 0
            for _ in range(40):
                wanted = reservation(f"t{index}", T0 + timedelta(hours=1))
                got = repository.acquire_reservation(wanted, T0)
                if got.owner_id != wanted.owner_id:
                    continue
                granted += 1
                with lock:
                    holders += 1
                    most = max(most, holders)
                time.sleep(0.001)  # hold it for a moment: a second holder would show here
                with lock:
                    holders -= 1
                assert repository.release_reservation(SCOPE, "key", wanted.owner_id)
            return granted

        grants = _run_together(6, work)
    assert most == 1
    assert sum(grants) >= 1


# --- availability ----------------------------------------------------------------------------


def test_unreachable_server_is_unavailable() -> None:
    with pytest.raises(UnavailableError) as caught:
        PostgresRepository(
            "postgresql://postgres@127.0.0.1:9/postgres", connect_timeout=1, pool_timeout=0.5
        )
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    with pytest.raises(UnavailableError):
        migrate("postgresql://postgres@127.0.0.1:9/postgres", connect_timeout=1)


def test_closed_repository_is_unavailable(clean_postgres: str) -> None:
    repository = PostgresRepository(clean_postgres)
    repository.close()
    repository.close()
    with pytest.raises(UnavailableError, match="closed"):
        repository.ping()


@pytest.mark.postgres_restart
def test_repository_survives_a_server_restart(restartable_postgres: Any) -> None:
    server = restartable_postgres
    row = entry()
    repository = PostgresRepository(
        server.url, min_size=2, max_size=4, connect_timeout=1, pool_timeout=3
    )
    try:
        assert repository.create_entry(row, None).written
        repository.ping()

        # Restarted while idle: the pooled connections are dead, the next call still works.
        server.stop()
        server.start()
        assert repository.get_entry(SCOPE, "key") == row

        # Down: calls fail as unavailable (not internal errors).
        server.stop()
        with pytest.raises(UnavailableError) as caught:
            repository.get_entry(SCOPE, "key")
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)

        # Back: the same object answers again.
        server.start()
        assert repository.get_entry(SCOPE, "key") == row
        repository.ping()
        assert repository.create_entry(entry("after"), None).written
    finally:
        repository.close()


def test_async_repository_replaces_connections_the_server_ended(fresh_database: str) -> None:
    """Sessions ended while idle in the pool (as by a restart) are noticed before use: they
    are replaced, and the next calls succeed, with no test query on the quiet ones.
    """
    from taskcache.repositories.postgres_async import AsyncPostgresRepository

    row = entry()

    async def scenario() -> None:
        repository = await AsyncPostgresRepository.open(
            fresh_database, min_size=2, max_size=2, pool_timeout=5
        )
        try:
            assert (await repository.create_entry(row, None)).written
            for _ in range(100):
                stats = repository.pool_stats()
                if stats is not None and stats.size == 2:
                    break
                await asyncio.sleep(0.05)
            ended = _query(
                fresh_database,
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            assert [done for (done,) in ended] == [True, True]
            for _ in range(3):
                assert await repository.get_entry(SCOPE, "key") == row
            assert (await repository.acquire_reservation(reservation("a", T0), T0)).owner_id == "a"
        finally:
            await repository.close()

    asyncio.run(scenario())


# --- targets ---------------------------------------------------------------------------------


def test_open_with_a_postgres_url(clean_postgres: str, tmp_path: Path) -> None:
    with taskcache.open(clean_postgres, storage=str(tmp_path / "blobs")) as client:
        client.put(make_key(3), int_map(o0=9))
        assert client.get(make_key(3)).outputs.read() == int_map(o0=9)
    scheme_alias = clean_postgres.replace("postgresql://", "postgres://", 1)
    with taskcache.open(scheme_alias, storage=str(tmp_path / "blobs")) as client:
        assert client.get(make_key(3)).outputs.read() == int_map(o0=9)


def test_postgres_target_blobs_default_to_the_home_folder(
    clean_postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskcache.resolver import open_repository, resolve

    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path / "home"))
    location = resolve(clean_postgres)
    assert location.blob_root == str(tmp_path / "home" / "blobs")
    repository = open_repository(location)
    try:
        assert isinstance(repository, PostgresRepository)
    finally:
        repository.close()


def test_postgres_target_without_psycopg_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "taskcache.repositories.postgres", None)
    with pytest.raises(InvalidArgumentError, match=r"taskcache\[postgres\]") as caught:
        taskcache.open("postgresql://postgres@127.0.0.1/db")
    assert caught.value.field == "target"
