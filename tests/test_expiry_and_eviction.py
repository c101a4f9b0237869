"""Expiry chosen at write (catalog default TTL and per-put ``ttl``), the least-recently-used
size cap, coalesced access recording, and one cleaner at a time — embedded on SQLite and
PostgreSQL with a fake clock, through the service core for the wire headers, and through
real ``taskcache serve`` processes (remote TTLs, background cleanup on two replicas sharing
one PostgreSQL database).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flyteidl2.cacheservice import cacheservice_pb2 as base_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

import taskcache
from builders import FakeClock, int_map, make_key
from scrape import scrape
from server_process import running_server
from taskcache import InvalidArgumentError, NotFoundError
from taskcache.cli import main
from taskcache.errors import AlreadyExistsError, UnavailableError
from taskcache.manager import AsyncCacheManager, CacheManager, NewEntry
from taskcache.operations import cleanup, evict_to_size
from taskcache.repositories.base import OperatorRepository, Scope
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from taskcache.rpcs import BLOB_BYTES_HEADER, TTL_HEADER, parse_ttl_header, ttl_header_value
from taskcache.server.cleanup import Cleaner
from taskcache.server.metrics import ServerMetrics
from taskcache.server.service import Backend, CacheService, ScopedDialect
from taskcache.server.settings import load_settings
from taskcache.storage import BlobStore

SCOPE = Scope("acme", "ml", "dev")
T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    url: str = request.getfixturevalue("clean_postgres")
    return url


def open_repository(database: str) -> OperatorRepository:
    from taskcache.resolver import open_repository as resolve_and_open

    return resolve_and_open(database, pool_size=3)


def inline(size: int = 100, ttl: timedelta | None = None) -> NewEntry:
    return NewEntry(
        output_uri=None, output_literals=b"x" * size, source_identifier=b"", key_map={}, ttl=ttl
    )


# --- TTL, embedded ----------------------------------------------------------------------------


def test_default_and_per_put_ttl_make_misses_that_a_create_replaces(
    database: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    with taskcache.open(
        database, storage=str(tmp_path / "blobs"), clock=clock, default_ttl=60
    ) as client:
        by_default, short, long = (make_key(x, name="ttl.embedded") for x in range(3))
        client.put(by_default, int_map(y=1))
        client.put(short, int_map(y=2), ttl=timedelta(seconds=10))
        client.put(long, int_map(y=3), ttl=3600.0)
        clock.advance(10)
        assert client.get(by_default).outputs.read() == int_map(y=1)
        with pytest.raises(NotFoundError, match="expired"):
            client.get(short)  # exactly at its expiry: expired
        clock.advance(51)
        with pytest.raises(NotFoundError, match="expired"):
            client.get(by_default)
        assert client.get(long).outputs.read() == int_map(y=3)
        expiries = {entry.key: entry.expires_at for entry in client.entries()}  # type: ignore[attr-defined]
        assert sorted(expiries.values()) == [
            T0 + timedelta(seconds=10),
            T0 + timedelta(seconds=60),
            T0 + timedelta(seconds=3600),
        ]
        # An expired entry does not block a create-only put (as one older than max age).
        client.put(by_default, int_map(y=10))
        assert client.get(by_default).outputs.read() == int_map(y=10)
        with pytest.raises(AlreadyExistsError):
            client.put(long, int_map(y=4))
        # update sets a new expiry too.
        client.update(long, int_map(y=5), ttl=1)
        clock.advance(2)
        with pytest.raises(NotFoundError):
            client.get(long)


def test_ttl_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="default_ttl"):
        taskcache.open(tmp_path / "a.db", default_ttl=0)
    with taskcache.open(tmp_path / "b.db") as client:
        key = make_key(1, name="ttl.arguments")
        with pytest.raises(TypeError, match="ttl"):
            client.put(key, int_map(y=1), ttl="1h")  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="ttl"):
            client.put(key, int_map(y=1), ttl=-5)
        with pytest.raises(NotFoundError):
            client.get(key)  # nothing was written


def test_async_clients_take_ttl(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock(T0)
        async with taskcache.open_async(tmp_path / "c.db", clock=clock) as client:
            key = make_key(1, name="ttl.async")
            await client.put(key, int_map(y=1), ttl=5)
            clock.advance(6)
            with pytest.raises(NotFoundError):
                await client.get(key)

    asyncio.run(scenario())


# --- TTL and blob size on the wire, through the service core ------------------------------------


def put_request(key: str, uri: str | None = None) -> v2_pb2.PutCacheRequest:
    output = base_pb2.CachedOutput()
    if uri is None:
        output.output_literals.CopyFrom(int_map(y=1))
    else:
        output.output_uri = uri
    return v2_pb2.PutCacheRequest(
        base_request=base_pb2.PutCacheRequest(key=key, output=output),
        identifier=v2_pb2.Identifier(org=SCOPE.org, project=SCOPE.project, domain=SCOPE.domain),
    )


def test_the_put_headers_set_expiry_and_blob_size_and_are_validated() -> None:
    repository = SqliteRepository(None)
    executor = ThreadPoolExecutor(max_workers=1)
    manager = AsyncCacheManager(ThreadedRepository(repository, executor))
    service = CacheService(Backend(manager, ServerMetrics(), executor), ScopedDialect())
    loop = asyncio.new_event_loop()
    try:
        before = datetime.now(UTC)
        loop.run_until_complete(
            service.put(put_request("k", "s3://b/x"), {TTL_HEADER: "90.5", BLOB_BYTES_HEADER: "7"})
        )
        row = repository.get_entry(SCOPE, "k")
        assert row is not None and row.expires_at is not None
        assert before + timedelta(seconds=90.5) <= row.expires_at
        assert row.expires_at <= datetime.now(UTC) + timedelta(seconds=90.5)
        assert row.blob_bytes == 7
        for headers, field in (
            ({TTL_HEADER: "0"}, TTL_HEADER),
            ({TTL_HEADER: "-1"}, TTL_HEADER),
            ({TTL_HEADER: "1h"}, TTL_HEADER),
            ({BLOB_BYTES_HEADER: "-3"}, BLOB_BYTES_HEADER),
            ({BLOB_BYTES_HEADER: "9" * 30}, BLOB_BYTES_HEADER),
        ):
            with pytest.raises(InvalidArgumentError) as raised:
                loop.run_until_complete(service.put(put_request("bad"), headers))
            assert raised.value.field == field
        assert repository.get_entry(SCOPE, "bad") is None
    finally:
        loop.close()
        executor.shutdown()
        repository.close()


# --- TTL remote, and background cleanup on real servers -----------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def misses(client: taskcache.Client, key: taskcache.Key) -> bool:
    try:
        client.get(key)
    except NotFoundError:
        return True
    return False


@pytest.mark.slow
def test_remote_ttls_and_two_replicas_cleaning_one_postgres_database(
    clean_postgres: str, tmp_path: Path
) -> None:
    # Remote TTLs over both transports (SQLite behind the same service core is covered by
    # test_the_put_headers_set_expiry_and_blob_size_and_are_validated), and the background
    # cleanup of two replicas racing on one database: every expired entry and blob goes once.
    storage = tmp_path / "blobs"
    flags = ["--gc-interval", "0.2", "--default-ttl", "1"]
    count = 4
    with (
        running_server(
            tmp_path / "a", database=clean_postgres, storage=str(storage), extra_args=flags
        ) as a,
        running_server(
            tmp_path / "b", database=clean_postgres, storage=str(storage), extra_args=flags
        ) as b,
        taskcache.open(a.http_url, storage=str(storage), inline_max_bytes=0) as client,
        taskcache.open(
            f"grpc://{b.grpc_target}", storage=str(storage), default_ttl=3600
        ) as keeping,
    ):
        keys = [make_key(x, name="cleanup.replicas") for x in range(count)]
        for key in keys:
            client.put(key, int_map(y=1))  # the servers' --default-ttl: 1 s
        short = make_key(count, name="cleanup.replicas")
        client.put(short, int_map(y=2), ttl=0.2)
        kept = make_key(count + 1, name="cleanup.replicas")
        keeping.put(kept, int_map(y=3))  # the client's default TTL, sent with the put
        wait_until(lambda: misses(keeping, short))

        def evicted() -> float:
            return sum(
                scrape(server.http_url).value("taskcache_evicted_entries_total", reason="expired")
                for server in (a, b)
            )

        wait_until(lambda: evicted() >= count + 1)
        time.sleep(0.5)  # a few more runs: nothing more to delete, nothing deleted twice
        scrapes = [scrape(server.http_url) for server in (a, b)]
        assert evicted() == count + 1
        assert sum(s.value("taskcache_evicted_blobs_total") for s in scrapes) == count + 1
        assert list(storage.rglob("outputs.pb")) == []
        assert all(s.value("taskcache_cleanup_runs_total", outcome="failed") == 0 for s in scrapes)
        assert all(misses(client, key) for key in keys)
        assert keeping.get(kept).outputs.read() == int_map(y=3)
        client.put(short, int_map(y=20))  # expired and cleaned: a create succeeds
        assert client.get(short).outputs.read() == int_map(y=20)
    logs = a.log_path.read_text() + b.log_path.read_text()
    assert "cleanup: " in logs and "background cleanup every 0.2 s" in logs


# --- size cap, least recently used first -------------------------------------------------------


def test_size_cap_evicts_least_recently_used_first(database: str) -> None:
    clock = FakeClock(T0)
    repository = open_repository(database)
    try:
        manager = CacheManager(repository, clock=clock)
        for name in ("a", "b", "c", "d", "e"):
            manager.put(SCOPE, name, inline())
            clock.advance(120)
        manager.get(SCOPE, "a")  # a becomes the most recently used
        blob = NewEntry(
            output_uri="s3://bucket/x",
            output_literals=None,
            source_identifier=b"",
            key_map={},
            blob_bytes=250,
        )
        clock.advance(120)
        manager.put(SCOPE, "f", blob)
        assert manager.flush_accesses() == 1  # a's hit, before the eviction reads the order
        assert repository.stored_bytes() == 5 * 100 + 250
        summary = evict_to_size(repository, None, max_bytes=500, batch_size=1)
        # Over by 250: b, c and d (least recently used) go; a (hit) and e survive.
        assert summary.entries == 3
        assert summary.bytes_freed == 300
        left = sorted(row.key for row in repository.list_least_recently_used(10))
        assert left == ["a", "e", "f"]
        assert repository.stored_bytes() == 450
        dry = evict_to_size(repository, None, max_bytes=100, dry_run=True)
        assert (dry.entries, dry.bytes_freed) == (3, 450)  # e, a, then f
        assert repository.stored_bytes() == 450
    finally:
        repository.close()


def test_the_embedded_client_records_blob_sizes(tmp_path: Path) -> None:
    with taskcache.open(tmp_path / "c.db", inline_max_bytes=0) as client:
        client.put(make_key(1, name="sizes"), int_map(y=1))
        [entry] = client.entries()
        assert entry.output_uri is not None
        size = Path(entry.output_uri).stat().st_size
        repository = client.manager.repository  # type: ignore[attr-defined]
        assert repository.stored_bytes() == size > 0


# --- coalesced access writes -------------------------------------------------------------------


class CountingRepository:
    """Forwards to a repository, recording each ``record_accesses`` batch (entries, at)."""

    def __init__(self, inner: OperatorRepository) -> None:
        self.inner = inner
        self.batches: list[tuple[list[tuple[Scope, str]], datetime]] = []

    @property
    def access_writes(self) -> int:
        return len(self.batches)

    def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        self.batches.append((list(entries), at))
        return self.inner.record_accesses(entries, at, if_before)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FailingAccessRepository(CountingRepository):
    """Serves reads, but every access write fails as a lost database would."""

    def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        self.batches.append((list(entries), at))
        raise UnavailableError("database went away")


def last_access(repository: OperatorRepository, key: str) -> datetime | None:
    row = repository.get_entry(SCOPE, key)
    assert row is not None
    return row.last_accessed_at


def test_hits_within_a_minute_write_nothing(database: str) -> None:
    clock = FakeClock(T0)
    inner = open_repository(database)
    repository = CountingRepository(inner)
    try:
        manager = CacheManager(repository, clock=clock)  # type: ignore[type-var]
        manager.put(SCOPE, "k", inline())
        for _ in range(5):
            clock.advance(10)
            manager.get(SCOPE, "k")
        assert manager.flush_accesses() == 0
        assert repository.access_writes == 0  # within the minute: reads only
        assert last_access(inner, "k") == T0
        clock.advance(11)  # 61 s after the put
        manager.get(SCOPE, "k")
        assert repository.access_writes == 0  # buffered, not written by the hit
        assert manager.flush_accesses() == 1
        assert repository.batches == [([(SCOPE, "k")], T0 + timedelta(seconds=61))]
        assert last_access(inner, "k") == T0 + timedelta(seconds=61)
        clock.advance(59)
        manager.get(SCOPE, "k")
        assert manager.flush_accesses() == 0
        assert repository.access_writes == 1
        assert last_access(inner, "k") == T0 + timedelta(seconds=61)
    finally:
        inner.close()


def test_hits_are_written_in_batches_of_the_flush_size(database: str) -> None:
    clock = FakeClock(T0)
    inner = open_repository(database)
    repository = CountingRepository(inner)
    try:
        manager = CacheManager(repository, clock=clock, access_flush_size=3)  # type: ignore[type-var]
        for name in "abcd":
            manager.put(SCOPE, name, inline())
        clock.advance(120)
        for name in "aab":  # a's second hit, still buffered, is not held twice
            manager.get(SCOPE, name)
        assert repository.access_writes == 0
        assert last_access(inner, "a") == T0
        clock.advance(1)
        manager.get(SCOPE, "c")  # the third entry completes the batch: one call for three
        at = T0 + timedelta(seconds=121)
        assert repository.batches == [([(SCOPE, "a"), (SCOPE, "b"), (SCOPE, "c")], at)]
        assert [last_access(inner, name) for name in "abcd"] == [at, at, at, T0]
        manager.get(SCOPE, "a")  # recorded at 121 s: inside the window, nothing buffered
        assert manager.flush_accesses() == 0
    finally:
        inner.close()


def test_a_batch_is_written_once_its_oldest_hit_has_waited_the_interval(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with SqliteRepository(tmp_path / "c.db") as inner:
        repository = CountingRepository(inner)
        manager = CacheManager(  # type: ignore[type-var]
            repository, clock=clock, access_flush_interval=timedelta(seconds=5)
        )
        for name in "abc":
            manager.put(SCOPE, name, inline())
        clock.advance(100)
        manager.get(SCOPE, "a")
        clock.advance(4)
        manager.get(SCOPE, "b")
        assert repository.access_writes == 0
        clock.advance(1)
        manager.get(SCOPE, "c")  # a waited 5 s: a and b go, at b's hit; c waits
        b_hit = T0 + timedelta(seconds=104)
        assert repository.batches == [([(SCOPE, "a"), (SCOPE, "b")], b_hit)]
        assert last_access(inner, "c") == T0
        clock.advance(5)
        manager.get(SCOPE, "a")  # needs no record itself, but hands out c, waiting 5 s
        assert repository.batches[1:] == [([(SCOPE, "c")], T0 + timedelta(seconds=105))]
        assert last_access(inner, "c") == T0 + timedelta(seconds=105)
        assert manager.flush_accesses() == 0


def test_a_forked_child_leaves_the_buffered_records_to_the_parent(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with SqliteRepository(tmp_path / "c.db") as repository:
        manager = CacheManager(repository, clock=clock)
        manager.put(SCOPE, "k", inline())
        clock.advance(120)
        manager.get(SCOPE, "k")
        child = os.fork()
        if child == 0:  # pragma: no cover - the child's outcome is its exit status
            os._exit(10 + manager.flush_accesses())
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 10  # the child wrote nothing
        assert manager.flush_accesses() == 1
        assert last_access(repository, "k") == T0 + timedelta(seconds=120)


def test_a_failing_access_write_does_not_fail_the_hit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0)
    with SqliteRepository(tmp_path / "c.db") as inner:
        repository = FailingAccessRepository(inner)
        manager = CacheManager(repository, clock=clock, access_flush_size=1)  # type: ignore[type-var]
        manager.put(SCOPE, "k", inline())
        clock.advance(120)
        with caplog.at_level("WARNING", logger="taskcache.manager"):
            assert manager.get(SCOPE, "k").key == "k"  # its write failed, the hit did not
        assert repository.access_writes == 1
        assert "dropped the access records of 1 hits: database went away" in caplog.text
        assert manager.flush_accesses() == 0  # dropped, not retried
        assert last_access(inner, "k") == T0

        async def hit_async(executor: ThreadPoolExecutor) -> None:
            threaded = ThreadedRepository(repository, executor)  # type: ignore[arg-type]
            async_manager = AsyncCacheManager(threaded, clock=clock, access_flush_size=1)
            assert (await async_manager.get(SCOPE, "k")).key == "k"
            assert await async_manager.flush_accesses() == 0

        with ThreadPoolExecutor(1) as executor:
            asyncio.run(hit_async(executor))
        assert repository.access_writes == 2


def test_lru_eviction_follows_hits_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    clock = FakeClock(T0)
    with taskcache.open(path, clock=clock) as client:
        keys = [make_key(x, name="lru.close") for x in range(3)]
        for key in keys:
            client.put(key, int_map(y=1))
            clock.advance(120)
        client.get(keys[0])  # buffered until the client closes
    with SqliteRepository(path) as repository:
        oldest_first = [row.last_accessed_at for row in repository.list_least_recently_used(3)]
        assert oldest_first == [T0 + timedelta(seconds=s) for s in (120, 240, 360)]
        entry = next(iter(repository.list_least_recently_used(1)))
        evict_to_size(repository, None, max_bytes=repository.stored_bytes() - 1)
        assert repository.get_entry(entry.scope, entry.key) is None  # the second put went
        assert len(repository.list_least_recently_used(3)) == 2


@pytest.mark.slow
def test_a_server_records_the_accesses_of_its_hits_by_the_time_it_stops(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    key = make_key(1, name="access.server")
    with taskcache.open(path, clock=FakeClock(an_hour_ago)) as writer:
        writer.put(key, int_map(y=1))
    with SqliteRepository(path) as repository:
        [row] = repository.list_least_recently_used(1)
    assert row.last_accessed_at == an_hour_ago
    started = datetime.now(UTC)
    with (
        running_server(tmp_path / "server", database=str(path)) as server,
        taskcache.open(server.http_url) as client,
    ):
        assert client.get(key).outputs.read() == int_map(y=1)
    with SqliteRepository(path) as repository:
        recorded = repository.get_entry(row.scope, row.key)
    assert recorded is not None and recorded.last_accessed_at is not None
    assert recorded.last_accessed_at >= started


def test_the_async_manager_writes_hits_in_the_background_and_before_cleanup(
    tmp_path: Path,
) -> None:
    clock = FakeClock(T0)

    async def scenario(repository: SqliteRepository, executor: ThreadPoolExecutor) -> None:
        counting = CountingRepository(repository)
        threaded = ThreadedRepository(counting, executor)  # type: ignore[arg-type]
        manager = AsyncCacheManager(
            threaded, clock=clock, access_flush_interval=timedelta(milliseconds=50)
        )
        for name in "abc":
            await manager.put(SCOPE, name, inline(100))
            clock.advance(120)
        await manager.get(SCOPE, "a")
        assert counting.access_writes == 0  # the hit returned before any write
        await asyncio.sleep(0.5)  # the timer's write, 50 ms after the hit
        assert counting.batches == [([(SCOPE, "a")], T0 + timedelta(seconds=360))]
        clock.advance(120)
        await manager.get(SCOPE, "b")  # buffered: the cleaner must write it before evicting
        cleaner = Cleaner(
            repository,
            None,
            ServerMetrics(),
            interval=3600,
            max_bytes=200,
            clock=clock,
            flush_accesses=manager.flush_accesses,
        )
        summary = await cleaner.run_once()
        assert summary is not None and summary.over_size is not None
        assert summary.over_size.entries == 1
        assert repository.get_entry(SCOPE, "c") is None  # c, never hit, was least recent
        assert repository.get_entry(SCOPE, "a") is not None
        assert repository.get_entry(SCOPE, "b") is not None
        assert await manager.flush_accesses() == 0

    with (
        SqliteRepository(tmp_path / "c.db") as repository,
        ThreadPoolExecutor(2) as executor,
    ):
        asyncio.run(scenario(repository, executor))


@settings(max_examples=60, deadline=None)
@given(
    flush_size=st.integers(min_value=1, max_value=4),
    hits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.integers(min_value=0, max_value=90)),
        max_size=30,
    ),
)
def test_an_entry_is_written_at_most_once_per_window(
    flush_size: int, hits: list[tuple[int, int]]
) -> None:
    clock = FakeClock(T0)
    resolution = timedelta(seconds=60)
    with SqliteRepository(None) as inner:
        repository = CountingRepository(inner)
        manager = CacheManager(  # type: ignore[type-var]
            repository, clock=clock, access_resolution=resolution, access_flush_size=flush_size
        )
        for index in range(4):
            manager.put(SCOPE, f"k{index}", inline())
        hit_times: dict[str, list[datetime]] = {}
        for index, seconds in hits:
            clock.advance(seconds)
            manager.get(SCOPE, f"k{index}")
            hit_times.setdefault(f"k{index}", []).append(clock())
        manager.flush_accesses()
        written: dict[str, list[datetime]] = {}
        for entries, at in repository.batches:
            assert len(entries) == len(set(entries)) <= flush_size
            for _, key in entries:
                written.setdefault(key, []).append(at)
        for key, times in written.items():
            # Each write lies more than a window after the one before...
            assert all(later - earlier > resolution for earlier, later in itertools.pairwise(times))
            # ...is no earlier than a hit on the entry nor a flush interval or more after it...
            assert all(
                any(timedelta(0) <= at - hit < timedelta(seconds=5) for hit in hit_times[key])
                for at in times
            )
            # ...and the last one is what the catalog holds.
            assert last_access(inner, key) == times[-1]
        for index in range(4):
            key = f"k{index}"
            if key not in written:
                assert last_access(inner, key) == T0


# --- one cleaner at a time ---------------------------------------------------------------------


def test_sqlite_cleanup_lease_admits_one_holder_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    lease = timedelta(minutes=10)
    with SqliteRepository(path) as first, SqliteRepository(path) as second:
        with first.maintenance_lock("a", T0, lease) as taken:
            assert taken
            with second.maintenance_lock("b", T0 + timedelta(minutes=9), lease) as other:
                assert not other
        with second.maintenance_lock("b", T0, lease) as taken:
            assert taken  # given back on exit
        # A holder that died keeps its lease only until it runs out.
        dead = first.maintenance_lock("dead", T0, lease)
        assert dead.__enter__()  # never exited
        with second.maintenance_lock("b", T0 + timedelta(minutes=9), lease) as taken:
            assert not taken
        with second.maintenance_lock("b", T0 + timedelta(minutes=10), lease) as taken:
            assert taken


def test_two_replicas_cleaning_one_postgres_at_once_one_wins(
    clean_postgres: str, tmp_path: Path
) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    count = 5
    a, b = open_repository(clean_postgres), open_repository(clean_postgres)
    try:
        manager = CacheManager(a, clock=FakeClock(T0))
        for x in range(count):
            uri = blobs.write_outputs(f"k{x}", b"outputs")
            entry = NewEntry(
                output_uri=uri,
                output_literals=None,
                source_identifier=b"",
                key_map={},
                ttl=timedelta(seconds=1),
                blob_bytes=7,
            )
            manager.put(SCOPE, f"k{x}", entry)
        later = T0 + timedelta(seconds=1)
        rival: list[Any] = []

        def meanwhile(_: Any) -> None:
            # Replica b tries while replica a is mid-run, holding the lock.
            if not rival:
                rival.append(cleanup(b, blobs, later, holder="b"))

        won = cleanup(a, blobs, later, holder="a", batch_size=2, progress_callback=meanwhile)
        [lost] = rival
        assert lost.locked_out and lost.total.entries == 0
        assert not won.locked_out
        assert (won.expired.entries, won.expired.blobs_deleted) == (count, count)
        assert won.expired.blob_errors == 0 and won.expired.blob_bytes_freed == 7 * count
        assert list((tmp_path / "blobs").rglob("outputs.pb")) == []
        assert not cleanup(b, blobs, later, holder="b").locked_out  # released after the run
    finally:
        a.close()
        b.close()


def test_cleanup_keeps_a_blob_another_entry_references(tmp_path: Path) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    with SqliteRepository(tmp_path / "c.db") as repository:
        manager = CacheManager(repository, clock=FakeClock(T0))
        uri = blobs.write_outputs("shared", b"outputs")
        for key, ttl in (("old", timedelta(seconds=1)), ("live", None)):
            manager.put(
                SCOPE,
                key,
                NewEntry(
                    output_uri=uri,
                    output_literals=None,
                    source_identifier=b"",
                    key_map={},
                    ttl=ttl,
                ),
            )
        summary = cleanup(repository, blobs, T0 + timedelta(hours=1))
        assert (summary.expired.entries, summary.expired.blobs_skipped) == (1, 1)
        assert blobs.read(uri) == b"outputs"


def test_the_server_cleaner_counts_its_runs(tmp_path: Path) -> None:
    with (
        SqliteRepository(tmp_path / "c.db") as repository,
        SqliteRepository(tmp_path / "c.db") as other,
    ):
        manager = CacheManager(repository, clock=FakeClock(T0))
        for x in range(3):
            manager.put(SCOPE, str(x), inline(10, ttl=timedelta(days=1)))
        manager.put(SCOPE, "big", inline(1000))
        metrics = ServerMetrics()
        cleaner = Cleaner(
            repository,
            None,
            metrics,
            interval=60,
            max_bytes=500,
            clock=lambda: T0 + timedelta(days=2),
        )
        with other.maintenance_lock("someone", T0 + timedelta(days=2), timedelta(hours=1)):
            assert asyncio.run(cleaner.run_once()).locked_out  # type: ignore[union-attr]
        summary = asyncio.run(cleaner.run_once())
        assert summary is not None and summary.over_size is not None
        assert (summary.expired.entries, summary.over_size.entries) == (3, 1)
        text = metrics.render().decode()
        assert 'taskcache_evicted_entries_total{reason="expired"} 3.0' in text
        assert 'taskcache_evicted_entries_total{reason="size"} 1.0' in text
        assert 'taskcache_evicted_bytes_total{reason="size"} 1000.0' in text
        assert 'taskcache_cleanup_runs_total{outcome="locked_out"} 1.0' in text
        assert 'taskcache_cleanup_runs_total{outcome="completed"} 1.0' in text


# --- the gc command and serve's settings -------------------------------------------------------


@pytest.fixture
def sized_catalog(tmp_path: Path) -> Iterator[tuple[str, list[taskcache.Key]]]:
    path = str(tmp_path / "catalog.db")
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    keys = [make_key(x, name="gc.size") for x in range(4)]
    with taskcache.open(path, clock=clock) as client:
        for key in keys:
            client.put(key, int_map(y=1))
            clock.advance(120)
        client.get(keys[0])
    yield path, keys


def test_gc_max_bytes_evicts_the_least_recently_used(
    sized_catalog: tuple[str, list[taskcache.Key]],
) -> None:
    path, _ = sized_catalog
    runner = CliRunner()
    result = runner.invoke(main, ["gc", "--database", path, "--max-bytes", "1B", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["max_bytes"] == 1
    assert document["phases"]["over_size"]["entries"] == 4
    assert document["phases"]["expired"]["entries"] == 0
    assert document["entries"] == 4
    result = runner.invoke(main, ["gc", "--database", path, "--max-bytes", "lots"])
    assert result.exit_code == 2 and "not a size" in result.output


def test_gc_exits_1_while_another_cleaner_holds_the_lock(
    sized_catalog: tuple[str, list[taskcache.Key]],
) -> None:
    path, _ = sized_catalog
    with SqliteRepository(path) as holder:
        with holder.maintenance_lock("serve", datetime.now(UTC), timedelta(hours=1)):
            result = CliRunner().invoke(main, ["gc", "--database", path])
        assert result.exit_code == 1
        assert "cleanup lock" in result.output
        assert CliRunner().invoke(main, ["gc", "--database", path]).exit_code == 0


def test_serve_settings_for_storage_options_and_eviction() -> None:
    settings = load_settings(
        {
            "database": "memory://",
            "storage_options": '{"endpoint_url": "http://127.0.0.1:9000", "anon": true}',
            "default_ttl": "1d",
            "max_bytes": "2GiB",
        },
        environ={},
    )
    assert settings.storage_options == {"endpoint_url": "http://127.0.0.1:9000", "anon": True}
    assert settings.default_ttl == 86400
    assert settings.max_bytes == 2 * 1024**3
    assert settings.cleanup_interval == 600  # a policy without an interval: the default
    assert load_settings({"database": "memory://"}, environ={}).cleanup_interval is None
    environ = {"TASKCACHE_GC_INTERVAL": "30s", "TASKCACHE_MAX_BYTES": "1000"}
    from_env = load_settings({"database": "memory://"}, environ=environ)
    assert (from_env.cleanup_interval, from_env.max_bytes) == (30, 1000)
    for name, value in (
        ("storage_options", "{not json"),
        ("storage_options", "[1, 2]"),
        ("max_bytes", "0"),
        ("max_bytes", "12 parsecs"),
        ("default_ttl", "-1"),
        ("gc_interval", "soon"),
    ):
        with pytest.raises(InvalidArgumentError) as raised:
            load_settings({"database": "memory://", name: value}, environ={})
        assert raised.value.field == name


def test_a_cleanup_thread_and_hits_share_a_sqlite_file(tmp_path: Path) -> None:
    # Cleanup takes SQLite's write lock in batches; hits keep being served meanwhile.
    path = tmp_path / "catalog.db"
    clock = FakeClock(T0)
    with SqliteRepository(path) as repository:
        manager = CacheManager(repository, clock=clock)
        for x in range(200):
            manager.put(SCOPE, f"k{x}", inline(ttl=timedelta(days=1)))
        manager.put(SCOPE, "live", inline())
        done = threading.Event()
        hits = 0

        def serve() -> None:
            nonlocal hits
            while not done.is_set():
                manager.get(SCOPE, "live")
                hits += 1

        reader = threading.Thread(target=serve)
        reader.start()
        try:
            summary = cleanup(repository, None, T0 + timedelta(days=2), batch_size=10)
        finally:
            done.set()
            reader.join()
        assert summary.expired.entries == 200 and hits > 0
        assert repository.get_entry(SCOPE, "live") is not None


def test_cached_and_get_or_compute_store_with_a_ttl(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with taskcache.open(tmp_path / "c.db", clock=clock) as client:
        calls: list[int] = []

        @taskcache.cached(catalog=client, ttl=timedelta(minutes=5))
        def square(x: int) -> int:
            calls.append(x)
            return x * x

        assert square(3) == 9 and square(3) == 9
        assert calls == [3]
        clock.advance(timedelta(minutes=5))
        assert square(3) == 9  # expired: computed again
        assert calls == [3, 3]
        key = make_key(1, name="ttl.compute")
        client.get_or_compute(key, lambda: int_map(y=1), ttl=10)
        clock.advance(10)
        with pytest.raises(NotFoundError, match="expired"):
            client.get(key)
    with pytest.raises(TypeError, match="ttl"):
        taskcache.cached(ttl="5m")(lambda: 1)  # type: ignore[call-overload]


# --- invariants --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=12),
    hits=st.lists(st.integers(min_value=0, max_value=11), max_size=12),
    cap=st.integers(min_value=0, max_value=3000),
)
def test_eviction_keeps_the_most_recently_used_under_the_cap(
    sizes: list[int], hits: list[int], cap: int
) -> None:
    clock = FakeClock(T0)
    with SqliteRepository(None) as repository:
        manager = CacheManager(repository, clock=clock)
        for index, size in enumerate(sizes):
            manager.put(SCOPE, f"k{index}", inline(size))
            clock.advance(61)
        for index in hits:
            if index < len(sizes):
                manager.get(SCOPE, f"k{index}")
                clock.advance(61)
        manager.flush_accesses()
        before = {row.key: row for row in repository.list_least_recently_used(100)}
        evict_to_size(repository, None, cap, batch_size=3)
        after = {row.key for row in repository.list_least_recently_used(100)}
        assert repository.stored_bytes() <= cap
        gone = set(before) - after
        # Only least recently used entries went: none outlived by an older one...
        if gone and after:
            newest_gone = max(before[key].last_accessed_at for key in gone)  # type: ignore[type-var]
            oldest_kept = min(before[key].last_accessed_at for key in after)  # type: ignore[type-var]
            assert newest_gone <= oldest_kept
        # ...and no more than needed: putting back the last one evicted would exceed the cap.
        if gone:
            last = max(gone, key=lambda key: before[key].last_accessed_at)  # type: ignore[arg-type,return-value]
            assert (
                repository.stored_bytes() + before[last].stored_bytes > cap
                or not before[last].stored_bytes
            )


@given(ttl=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=10**5)))
def test_the_ttl_header_round_trips(ttl: timedelta) -> None:
    assert parse_ttl_header(ttl_header_value(ttl)) == ttl
