"""Reservations written inline on the event loop when SQLite's write lock is free: the
no-wait attempt, its fallback to the thread pool when the lock is held, the checkpoints
its commits leave to the pool, and exclusivity across server processes on one file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

import taskcache
from builders import make_key
from server_process import running_server
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from test_repository_contract import SCOPE, T0, reservation

LATER = T0 + timedelta(seconds=1)
EXPIRES = T0 + timedelta(seconds=15)


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[SqliteRepository]:
    with SqliteRepository(tmp_path / "cache.db", busy_timeout=5.0) as opened:
        yield opened


@pytest.fixture
def blocker(repository: SqliteRepository) -> Iterator[sqlite3.Connection]:
    """Another connection on the file, ready to take the write lock."""
    assert repository.path is not None
    with closing(sqlite3.connect(repository.path, isolation_level=None)) as conn:
        yield conn


def test_nowait_grants_refuses_and_takes_over_like_the_waiting_call(
    repository: SqliteRepository,
) -> None:
    assert repository.acquire_reservation_nowait(reservation("a", EXPIRES), T0) == reservation(
        "a", EXPIRES
    )
    refused = repository.acquire_reservation_nowait(reservation("b", EXPIRES), LATER)
    assert refused is not None
    assert refused.owner_id == "a"
    after_expiry = EXPIRES + timedelta(seconds=15)
    taken = repository.acquire_reservation_nowait(reservation("b", after_expiry), EXPIRES)
    assert taken is not None
    assert (taken.owner_id, taken.taken_over_from) == ("b", "a")
    assert repository.get_reservation(SCOPE, "key") == reservation("b", after_expiry)


def test_nowait_gives_up_on_a_held_lock_having_applied_nothing(
    repository: SqliteRepository, blocker: sqlite3.Connection
) -> None:
    blocker.execute("BEGIN IMMEDIATE")
    assert repository.acquire_reservation_nowait(reservation("a", EXPIRES), T0) is None
    blocker.execute("ROLLBACK")
    assert repository.get_reservation(SCOPE, "key") is None
    # The attempt left its connection outside any transaction: the next one works.
    assert repository.acquire_reservation_nowait(reservation("a", EXPIRES), T0) is not None


def test_memory_database_is_never_written_inline() -> None:
    with SqliteRepository(None) as memory:
        assert memory.acquire_reservation_nowait(reservation("a", EXPIRES), T0) is None
        assert memory.get_reservation(SCOPE, "key") is None


def test_held_lock_sends_the_reservation_to_the_pool_without_blocking_the_loop(
    repository: SqliteRepository, blocker: sqlite3.Connection
) -> None:
    async def scenario(threaded: ThreadedRepository) -> None:
        blocker.execute("BEGIN IMMEDIATE")
        call = asyncio.create_task(threaded.acquire_reservation(reservation("a", EXPIRES), T0))
        # These ticks run only if the attempt gave up at once instead of waiting on the loop.
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not call.done()  # waiting on the pool for the lock
        blocker.execute("ROLLBACK")
        assert await call == reservation("a", EXPIRES)

    with ThreadPoolExecutor(2) as executor:
        asyncio.run(scenario(ThreadedRepository(repository, executor)))
    assert repository.get_reservation(SCOPE, "key") == reservation("a", EXPIRES)


def _log_frames(path: str) -> int:
    """Frames in the WAL since it last restarted (read by a checkpoint, which it runs)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0
    return int(frames)


def test_inline_commits_leave_the_checkpoint_to_the_pool_and_the_log_restarts(
    repository: SqliteRepository,
) -> None:
    assert repository.path is not None
    wal = Path(repository.path + "-wal")
    page_size = _page_size(repository.path)
    extensions = [reservation("a", EXPIRES + timedelta(microseconds=i)) for i in range(1001)]

    async def extend(threaded: ThreadedRepository, count: int) -> None:
        for row in extensions[:count]:
            assert (await threaded.acquire_reservation(row, T0)).owner_id == "a"

    executor = ThreadPoolExecutor(1)
    threaded = ThreadedRepository(repository, executor)
    asyncio.run(extend(threaded, 999))
    assert not repository.checkpoint_due
    # Well past SQLite's own checkpoint threshold (1000 pages, after which a checkpointing
    # writer restarts the log): the inline commits did not checkpoint themselves.
    assert wal.stat().st_size > 1500 * page_size
    asyncio.run(extend(threaded, 1))  # the 1000th: a checkpoint is due and submitted
    executor.shutdown(wait=True)  # ... and has run
    assert not repository.checkpoint_due
    with ThreadPoolExecutor(1) as fresh:
        asyncio.run(extend(ThreadedRepository(repository, fresh), 1))
    # That write restarted the log: it holds only the last commit's pages.
    assert _log_frames(repository.path) < 10


def _page_size(path: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


@pytest.mark.slow
def test_two_server_processes_on_one_file_grant_one_owner(tmp_path: Path) -> None:
    database = str(tmp_path / "shared.db")
    key = make_key(name="tests.inline_reservations.shared")
    heartbeat = timedelta(seconds=10)
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    with (
        running_server(tmp_path / "a", database=database) as server_a,
        running_server(tmp_path / "b", database=database) as server_b,
    ):
        targets = [server_a.http_url, f"grpc://{server_b.grpc_target}"]
        barrier = threading.Barrier(8)

        def reserve(thread: int) -> None:
            with taskcache.open(targets[thread % 2], timeout=20) as client:
                barrier.wait(timeout=30)
                for call in range(20):
                    owner = f"owner-{thread}-{call}"
                    holder = client.get_or_extend_reservation(key, owner, heartbeat).owner_id
                    with lock:
                        seen.append((owner, holder))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(reserve, range(8)))
    assert len(seen) == 160
    holders = {holder for _, holder in seen}
    assert len(holders) == 1, sorted(holders)[:5]
    assert [owner for owner, holder in seen if owner == holder] == list(holders)


def test_checkpoint_gives_up_on_an_old_reader_instead_of_stopping_writers(
    tmp_path: Path,
) -> None:
    busy_timeout = 20.0
    with (
        SqliteRepository(tmp_path / "cache.db", busy_timeout=busy_timeout) as repository,
        closing(sqlite3.connect(tmp_path / "cache.db", isolation_level=None)) as reader,
    ):
        assert repository.acquire_reservation_nowait(reservation("a", EXPIRES), T0) is not None
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM reservations").fetchone()  # holds this snapshot
        later = reservation("a", EXPIRES + timedelta(seconds=1))
        assert repository.acquire_reservation_nowait(later, T0) is not None
        started = time.monotonic()
        repository.checkpoint()
        # The RESTART pass waited its own short while, not the busy timeout (with the write
        # lock held throughout, which would have stopped every writer that long).
        assert time.monotonic() - started < busy_timeout / 2
        assert repository.acquire_reservation_nowait(reservation("a", EXPIRES), T0) is not None
        reader.execute("COMMIT")
