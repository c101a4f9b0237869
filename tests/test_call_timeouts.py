"""Per-call timeouts and async cancellation on every client, against slow stores the test
makes itself: it holds the lock a call needs (SQLite's write lock, a PostgreSQL table lock)
in the embedded catalog or in the database of a real ``taskcache serve``.

Each timed-out call must raise DeadlineExceededError well before the store's own waits end
(30 s by default), apply nothing (not when answered, nor once the lock is gone), and leave
the client and the server working. Cancelling an async remote call must cancel the RPC:
the server's in-flight count returns to zero and its blocked statement is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taskcache
from builders import int_map, make_key
from locked_postgres import HANG_GUARD, entries_locked, wait_for_blocked_calls
from scrape import scrape
from server_process import ServerProcess, free_port, running_server
from taskcache import DeadlineExceededError, InvalidArgumentError, Key, NotFoundError
from taskcache.deadlines import as_timeout, bounded, current
from taskcache.repositories.base import Scope

pytestmark = pytest.mark.slow

TIMEOUT = 0.15
# Generous, so a loaded machine never fails it, yet far below the 30 s the stores wait by
# default: only a timeout that works ends a call this soon while the lock is held.
ON_TIME = 5.0
TRANSPORTS = ("connect", "grpc")
MODES = ("sync", "async")


@contextlib.contextmanager
def deadline_exceeded_on_time() -> Iterator[None]:
    """Assert the block raises DeadlineExceededError within :data:`ON_TIME` seconds."""
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        yield
    assert time.monotonic() - started < ON_TIME


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {HANG_GUARD} s"
        time.sleep(0.05)


class Calls:
    """The catalog calls of a sync or async client, each run to completion from sync code."""

    def __init__(self, client: Any, mode: str) -> None:
        self.client = client
        self.mode = mode

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, method)(*args, **kwargs)
        if self.mode == "async":
            return asyncio.run(_awaited(result))
        return result


async def _awaited(result: Awaitable[Any]) -> Any:
    return await result


@contextlib.contextmanager
def opened(target: str, mode: str, **options: Any) -> Iterator[Calls]:
    """A client of ``target`` (``mode`` sync or async), closed afterwards."""
    if mode == "sync":
        with taskcache.open(target, **options) as client:
            yield Calls(client, mode)
        return
    # Each async call runs in a loop of its own (asyncio.run): only connection-less clients
    # (embedded) can do that; remote async tests drive one loop themselves.
    client = taskcache.open_async(target, **options)
    try:
        yield Calls(client, mode)
    finally:
        asyncio.run(client.close())


# --- the argument ------------------------------------------------------------------------


def test_timeout_arguments_are_checked_on_every_method(tmp_path: Path) -> None:
    key = make_key(name="tests.timeout.arguments")
    outputs = int_map(o0=1)
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("get", (key,)),
        ("put", (key, outputs)),
        ("update", (key, outputs)),
        ("delete", (key,)),
        ("get_or_extend_reservation", (key, "owner", 5)),
        ("release_reservation", (key, "owner")),
        ("get_reservation_cache", ("owner",)),
        ("get_or_compute", (key, lambda: outputs)),
        ("stats", ()),
    ]
    # A service nobody listens on: the argument is refused before anything is sent.
    nobody = f"grpc://127.0.0.1:{free_port()}"
    catalog = f"datacatalog://127.0.0.1:{free_port()}"
    with (
        taskcache.open("memory://") as embedded,
        taskcache.open(nobody, storage=str(tmp_path), max_retries=0) as remote,
        taskcache.open(catalog, max_retries=0) as datacatalog,
    ):
        for client in (embedded, remote, datacatalog):
            for method, args in calls:
                if not hasattr(client, method):
                    continue  # stats: embedded only
                for wrong_type in (True, "1", [1]):
                    with pytest.raises(TypeError, match=r"^timeout must be seconds"):
                        getattr(client, method)(*args, timeout=wrong_type)
                for wrong_value in (0, -1, math.nan, math.inf, timedelta(seconds=-1)):
                    with pytest.raises(InvalidArgumentError, match=r"^timeout: "):
                        getattr(client, method)(*args, timeout=wrong_value)
    for wrong_type in (True, "30"):
        with pytest.raises(TypeError, match=r"^timeout must be seconds"):
            taskcache.open("memory://", timeout=wrong_type)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"^timeout: "):
        taskcache.open_async("memory://", timeout=-1)


@given(
    st.one_of(
        st.floats(min_value=1e-6, max_value=1e9),
        st.integers(min_value=1, max_value=10**9),
        st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=10**4)),
    )
)
def test_every_positive_finite_timeout_is_its_seconds(value: float | timedelta) -> None:
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    assert as_timeout(value) == seconds


def test_a_nested_call_never_outlives_the_outer_deadline() -> None:
    assert current() is None
    with bounded(10) as outer:
        assert outer is not None and current() is outer
        with bounded(60) as inner:
            assert inner is outer
        with bounded(1) as shorter:
            assert shorter is not None and shorter.expires_at < outer.expires_at
            assert current() is shorter
        assert current() is outer
        with bounded(None) as unchanged:
            assert unchanged is None and current() is outer
    assert current() is None


# --- embedded SQLite ---------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_write_locked(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``database`` (readers still read: WAL)."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.mark.parametrize("mode", MODES)
def test_embedded_sqlite_calls_stop_waiting_for_the_lock_at_their_timeout(
    tmp_path: Path, mode: str
) -> None:
    key, kept = make_key(name="tests.timeout.sqlite"), make_key(name="tests.timeout.kept")
    with opened(str(tmp_path), mode) as call:
        call("put", kept, int_map(o0=1))
        with sqlite_write_locked(tmp_path / "catalog.db"):
            for method, args in (
                ("put", (key, int_map(o0=2))),
                ("update", (kept, int_map(o0=2))),
                ("delete", (kept,)),
                ("get_or_extend_reservation", (key, "owner", timedelta(seconds=30))),
                ("clear", ()),
            ):
                with deadline_exceeded_on_time():
                    call(method, *args, timeout=TIMEOUT)
            with deadline_exceeded_on_time():
                call("get_or_compute", key, lambda: int_map(o0=3), timeout=TIMEOUT)
            # Reads take no lock: a timeout does not get in their way.
            assert call("get", kept, timeout=TIMEOUT * 20).outputs.read() == int_map(o0=1)
        _nothing_was_applied(call, key, kept)


def _nothing_was_applied(call: Calls, key: Key, kept: Key) -> None:
    with pytest.raises(NotFoundError):
        call("get", key)
    assert call("get", kept).outputs.read() == int_map(o0=1)
    # No reservation was granted to the timed-out owner: another one gets it at once.
    assert call("get_or_extend_reservation", key, "other", 30).owner_id == "other"
    call("put", key, int_map(o0=4), timeout=TIMEOUT * 20)
    assert call("get", key).outputs.read() == int_map(o0=4)


def test_the_clients_default_timeout_applies_to_calls_without_one(tmp_path: Path) -> None:
    key = make_key(name="tests.timeout.default")
    with (
        taskcache.open(tmp_path, timeout=TIMEOUT) as client,
        sqlite_write_locked(tmp_path / "catalog.db"),
        deadline_exceeded_on_time(),
    ):
        client.put(key, int_map(o0=1))


def test_get_or_compute_waits_for_another_owner_only_until_its_timeout(tmp_path: Path) -> None:
    key = make_key(name="tests.timeout.owner")
    computed: list[int] = []

    def compute() -> Any:
        computed.append(1)
        return int_map(o0=1)

    with taskcache.open(tmp_path) as client:
        client.get_or_extend_reservation(key, "busy-owner", timedelta(minutes=5))
        with deadline_exceeded_on_time():
            client.get_or_compute(key, compute, timeout=TIMEOUT)
    assert computed == []


# --- embedded PostgreSQL -----------------------------------------------------------------


@contextlib.contextmanager
def tables_locked(url: str) -> Iterator[psycopg.Connection]:
    """Hold ACCESS EXCLUSIVE on both taskcache tables: every call blocks, reads too."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("LOCK TABLE cache_entries, reservations IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.mark.parametrize("mode", MODES)
def test_embedded_postgres_calls_stop_waiting_for_a_lock_at_their_timeout(
    clean_postgres: str, tmp_path: Path, mode: str
) -> None:
    key, kept = make_key(name="tests.timeout.pg"), make_key(name="tests.timeout.pg.kept")
    with opened(clean_postgres, mode, storage=str(tmp_path)) as call:
        call("put", kept, int_map(o0=1))
        with tables_locked(clean_postgres):
            for method, args in (
                ("get", (kept,)),
                ("put", (key, int_map(o0=2))),
                ("update", (kept, int_map(o0=2))),
                ("delete", (kept,)),
                ("get_or_extend_reservation", (key, "owner", timedelta(seconds=30))),
                ("stats", ()),
            ):
                with deadline_exceeded_on_time():
                    call(method, *args, timeout=TIMEOUT)
            # The statements were cancelled in the server, not left waiting.
            wait_for_blocked_calls(clean_postgres, 0)
        _nothing_was_applied(call, key, kept)


def test_a_postgres_connection_used_with_a_timeout_gets_the_usual_one_back(
    clean_postgres: str,
) -> None:
    from taskcache.repositories.postgres import PostgresRepository

    scope = Scope("tests", "timeout", "restored")
    # One connection: the call without a timeout must get the very one the deadline changed.
    repository = PostgresRepository(clean_postgres, min_size=1, max_size=1)
    try:
        with ThreadPoolExecutor(1) as pool, entries_locked(clean_postgres) as lock:
            with bounded(TIMEOUT), deadline_exceeded_on_time():
                repository.get_entry(scope, "key")
            waiting = pool.submit(repository.get_entry, scope, "key")  # the usual 30 s cap
            wait_for_blocked_calls(clean_postgres, 1)
            time.sleep(TIMEOUT * 3)  # longer than the statement_timeout the deadline had set
            lock.commit()
            assert waiting.result(timeout=HANG_GUARD) is None
        stats = repository.pool_stats()
        assert stats is not None and stats.size == 1
    finally:
        repository.close()


# --- remote, against a real server on PostgreSQL ---------------------------------------


@pytest.fixture(scope="module")
def pg_server(
    postgres_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    """One ``taskcache serve`` on a database of its own, for this module's remote tests."""
    from taskcache.repositories.postgres import migrate

    url = postgres_server.create_database()
    try:
        migrate(url)
        with running_server(tmp_path_factory.mktemp("server"), database=url) as server:
            yield server, url
    finally:
        postgres_server.drop_database(url)


def _target(server: ServerProcess, transport: str) -> str:
    return server.http_url if transport == "connect" else f"grpc://{server.grpc_target}"


def _in_flight(server: ServerProcess) -> float:
    return scrape(server.http_url).value("taskcache_requests_in_flight")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_remote_calls_raise_deadline_exceeded_at_their_timeout(
    pg_server: tuple[ServerProcess, str], tmp_path: Path, transport: str, mode: str
) -> None:
    server, url = pg_server
    key = make_key(name=f"tests.timeout.remote.{transport}.{mode}")
    # The default retries stay on: the timeout is the budget of the call, retries included.
    options: dict[str, Any] = {"storage": str(tmp_path), "timeout": 30}
    target = _target(server, transport)

    async def timed_out_async() -> None:
        async with taskcache.open_async(target, **options) as client:
            with entries_locked(url):
                with deadline_exceeded_on_time():
                    await client.put(key, int_map(o0=1), timeout=TIMEOUT)
                with deadline_exceeded_on_time():
                    await client.get(key, timeout=timedelta(seconds=TIMEOUT))

    if mode == "async":
        asyncio.run(timed_out_async())
    else:
        with taskcache.open(target, **options) as client, entries_locked(url):
            with deadline_exceeded_on_time():
                client.put(key, int_map(o0=1), timeout=TIMEOUT)
            with deadline_exceeded_on_time():
                client.get(key, timeout=timedelta(seconds=TIMEOUT))
    _wait_for(lambda: _in_flight(server) == 0, "the in-flight count back to zero")
    wait_for_blocked_calls(url, 0)
    with taskcache.open(target, **options) as client:
        with pytest.raises(NotFoundError):
            client.get(key)
        client.put(key, int_map(o0=2), timeout=TIMEOUT * 20)
        assert client.get(key).outputs.read() == int_map(o0=2)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancelling_an_async_call_cancels_the_rpc_in_the_server(
    pg_server: tuple[ServerProcess, str], tmp_path: Path, transport: str
) -> None:
    server, url = pg_server
    key = make_key(name=f"tests.timeout.cancelled.{transport}")

    async def scenario() -> None:
        target = _target(server, transport)
        async with taskcache.open_async(target, storage=str(tmp_path)) as client:
            with entries_locked(url):
                call = asyncio.create_task(client.put(key, int_map(o0=1)))
                await asyncio.to_thread(wait_for_blocked_calls, url, 1)
                assert await asyncio.to_thread(_in_flight, server) == 1
                call.cancel()
                # The caller sees its own cancellation, not an error the library made of it.
                with pytest.raises(asyncio.CancelledError):
                    await call
                # The server stopped the call while the lock is still held: the count drops
                # and PostgreSQL no longer runs the blocked statement.
                await asyncio.to_thread(
                    _wait_for, lambda: _in_flight(server) == 0, "the in-flight count at zero"
                )
                await asyncio.to_thread(wait_for_blocked_calls, url, 0)
            with pytest.raises(NotFoundError):
                await client.get(key)
            await client.put(key, int_map(o0=2))

    asyncio.run(scenario())


# --- remote, against a real server on SQLite ---------------------------------------------


def test_a_sqlite_server_stops_waiting_for_the_lock_at_the_callers_deadline(
    tmp_path: Path,
) -> None:
    database = tmp_path / "served.db"
    key = make_key(name="tests.timeout.served")
    with (
        running_server(tmp_path, database=str(database)) as server,
        taskcache.open(f"grpc://{server.grpc_target}", storage=str(tmp_path / "blobs")) as client,
    ):
        client.put(make_key(name="tests.timeout.served.warm"), int_map(o0=1))
        with sqlite_write_locked(database):
            with deadline_exceeded_on_time():
                client.put(key, int_map(o0=1), timeout=TIMEOUT)
            # Past the deadline the server's own thread has given up too. Without the deadline
            # it would still wait (30 s busy timeout) and store the entry once the lock goes.
            time.sleep(TIMEOUT * 2)
        time.sleep(TIMEOUT * 2)  # room for a thread still waiting to apply the put
        with pytest.raises(NotFoundError):
            client.get(key)
        client.put(key, int_map(o0=2), timeout=TIMEOUT * 20)
        assert client.get(key).outputs.read() == int_map(o0=2)
