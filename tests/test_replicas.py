"""Two ``taskcache serve`` replicas on one PostgreSQL database, and a replica riding out a
database restart.

Replica A is reached over Connect, replica B over gRPC; both serve the session's database
(``postgres_url``), so every test works on keys of its own. The restart test runs its own
server on a private throwaway cluster (``tests/postgres.py``), never the shared one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest

import taskcache
from builders import int_map, make_key
from ci_policy import skip_or_fail
from postgres import PostgresNotFoundError, PrivateCluster, start_private_cluster
from server_process import http_get, running_server
from taskcache import AlreadyExistsError, CacheStatus, Client, Key, NotFoundError, UnavailableError

pytestmark = pytest.mark.slow

THREADS = 16
CALLS_PER_THREAD = 20
PUT_RACERS = 8
PUT_ROUNDS = 5

T = TypeVar("T")


@dataclass
class Replicas:
    """Two servers on one database: ``a`` reached over Connect, ``b`` over gRPC."""

    a: Client
    b: Client
    a_url: str
    b_url: str

    def alternate(self, index: int) -> Client:
        return self.a if index % 2 == 0 else self.b


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp("replicas")
    storage = str(folder / "blobs")
    with (
        running_server(folder / "a", database=postgres_url) as server_a,
        running_server(folder / "b", database=postgres_url) as server_b,
    ):
        a_url, b_url = server_a.http_url, f"grpc://{server_b.grpc_target}"
        with (
            taskcache.open(a_url, storage=storage, timeout=20) as a,
            taskcache.open(b_url, storage=storage, timeout=20) as b,
        ):
            yield Replicas(a, b, a_url, b_url)


def unique_key(x: int = 1) -> Key:
    return make_key(x, name=f"replicas.{uuid.uuid4().hex}")


def race(workers: int, work: Callable[[int], T]) -> list[T]:
    """Run ``work(i)`` for i in range(workers) on as many threads, released together."""
    barrier = threading.Barrier(workers)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(workers)))


def test_replicas_grant_one_reservation_to_one_owner(replicas: Replicas) -> None:
    key = unique_key()
    heartbeat = timedelta(seconds=10)  # the servers' default maximum: 30 s before expiry

    def reserve(thread: int) -> list[tuple[str, str]]:
        seen = []
        for call in range(CALLS_PER_THREAD):
            client = replicas.alternate(thread + call)
            owner = f"owner-{thread}-{call}"
            reservation = client.get_or_extend_reservation(key, owner, heartbeat)
            seen.append((owner, reservation.owner_id))
        return seen

    results = [pair for thread in race(THREADS, reserve) for pair in thread]

    assert len(results) == THREADS * CALLS_PER_THREAD
    holders = {holder for _, holder in results}
    assert len(holders) == 1, f"{len(holders)} owners granted: {sorted(holders)[:5]}"
    (holder,) = holders
    assert holder in {owner for owner, _ in results}
    granted = [owner for owner, returned in results if owner == returned]
    assert granted == [holder]  # exactly one call was granted the reservation
    for client in (replicas.a, replicas.b):
        assert client.get_or_extend_reservation(key, "late", heartbeat).owner_id == holder


def test_racing_puts_across_replicas_have_one_winner(replicas: Replicas) -> None:
    for _ in range(PUT_ROUNDS):
        key = unique_key()

        def put(index: int, key: Key = key) -> str:
            try:
                status = replicas.alternate(index).put(key, int_map(o0=index))
            except AlreadyExistsError as error:
                assert error.status is not None
                assert error.status.cache_status is CacheStatus.CACHE_PUT_FAILURE
                return "exists"
            assert status.cache_status is CacheStatus.CACHE_POPULATED
            return f"won-{index}"

        outcomes = race(PUT_RACERS, put)

        winners = [outcome for outcome in outcomes if outcome != "exists"]
        assert len(winners) == 1, outcomes
        assert outcomes.count("exists") == PUT_RACERS - 1
        winner = int(winners[0].removeprefix("won-"))
        for client in (replicas.a, replicas.b):
            assert client.get(key).outputs.read() == int_map(o0=winner)


def test_an_entry_put_through_one_replica_hits_through_the_other(replicas: Replicas) -> None:
    through_a, through_b = unique_key(1), unique_key(2)
    with pytest.raises(NotFoundError):
        replicas.b.get(through_a)

    replicas.a.put(through_a, int_map(o0=1))
    replicas.b.put(through_b, int_map(o0=2))

    hit = replicas.b.get(through_a)
    assert hit.status.cache_status is CacheStatus.CACHE_HIT
    assert hit.outputs.read() == int_map(o0=1)
    assert replicas.a.get(through_b).outputs.read() == int_map(o0=2)

    replicas.b.update(through_a, int_map(o0=3))
    assert replicas.a.get(through_a).outputs.read() == int_map(o0=3)
    replicas.a.delete(through_a)
    with pytest.raises(NotFoundError):
        replicas.b.get(through_a)


# --- database restart while serving ------------------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """A throwaway PostgreSQL cluster this test alone may stop and start."""
    try:
        cluster = start_private_cluster()
    except (PostgresNotFoundError, OSError) as error:
        skip_or_fail(f"NO PRIVATE POSTGRESQL CLUSTER (initdb/pg_ctl): {error}")
    try:
        yield cluster
    finally:
        cluster.destroy()


def _healthz(url: str) -> int:
    return http_get(f"{url}/healthz", timeout=15).status


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll ``condition`` until true; return how long it took (fail after ``seconds``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what} not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.postgres_restart
def test_replica_survives_a_database_restart(
    private_cluster: PrivateCluster, tmp_path: Path
) -> None:
    key = unique_key()
    with running_server(tmp_path, database=private_cluster.url) as server:
        target = f"grpc://{server.grpc_target}"
        with taskcache.open(target, storage=str(tmp_path / "blobs"), max_retries=0) as client:
            client.put(key, int_map(o0=1))
            assert client.get(key).outputs.read() == int_map(o0=1)
            assert _healthz(server.http_url) == 200

            private_cluster.stop()
            # A call waits for a database connection (the pool's timeout, 10 s) before it
            # fails; poll /healthz meanwhile.
            failures: list[BaseException | None] = []

            def get_while_down() -> None:
                try:
                    client.get(key)
                except BaseException as error:  # recorded and checked below
                    failures.append(error)
                else:
                    failures.append(None)

            getter = threading.Thread(target=get_while_down)
            getter.start()
            _wait_for(lambda: _healthz(server.http_url) == 503, 15, "/healthz 503")
            getter.join(timeout=30)
            assert not getter.is_alive()
            assert len(failures) == 1
            assert isinstance(failures[0], UnavailableError), failures

            private_cluster.start()

            def hits() -> bool:
                try:
                    return bool(client.get(key).outputs.read() == int_map(o0=1))
                except UnavailableError:
                    return False

            _wait_for(hits, 10, "a hit after the database restart")
            assert _healthz(server.http_url) == 200
            client.put(unique_key(2), int_map(o0=2))  # writes work again too
