"""Server metrics count what happened: exact increases for known traffic, and gauge invariants.

One ``taskcache serve`` on the session's PostgreSQL database serves the module; each test
scrapes ``/metrics`` before and after its own traffic (on keys of its own) and checks the
difference, so tests do not depend on each other's counts. No timing is involved: an expired
reservation is made by an embedded client whose clock is an hour behind, and contention uses
the default (long) heartbeat.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl.cacheservice import cacheservice_pb2_grpc as flyte1_grpc
from flyteidl2.cacheservice import cacheservice_pb2 as base_pb2
from flyteidl2.cacheservice import cacheservice_pb2_grpc as unscoped_grpc

import taskcache
from builders import FakeClock, int_map, make_key
from locked_postgres import HANG_GUARD, entries_locked, wait_for_blocked_calls
from scrape import Scrape, scrape
from server_process import ServerProcess, running_server
from taskcache import AlreadyExistsError, Key, NotFoundError

pytestmark = pytest.mark.slow

SCOPED = "flyteidl2.cacheservice.v2.CacheService"  # the service the public clients call
UNSCOPED = "flyteidl2.cacheservice.CacheService"
FLYTE1 = "flyteidl.cacheservice.CacheService"
HEARTBEAT = timedelta(seconds=30)
POOL_SIZE = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("metrics-server")
    with running_server(
        folder, database=postgres_url, extra_args=["--pool-size", str(POOL_SIZE)]
    ) as running:
        yield running


def _target(server: ServerProcess, transport: str) -> str:
    return server.http_url if transport == "connect" else f"grpc://{server.grpc_target}"


def _key(label: str) -> Key:
    return make_key(name=f"tests.metrics.{label}.{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_counters_increase_by_exactly_the_traffic(
    server: ServerProcess, postgres_url: str, tmp_path: Path, transport: str
) -> None:
    storage = str(tmp_path / "blobs")
    entry, held, expired = _key("entry"), _key("held"), _key("expired")
    # An hour behind the server: the reservation it takes has expired for the server.
    with taskcache.open(
        postgres_url, storage=storage, clock=FakeClock(datetime.now(UTC) - timedelta(hours=1))
    ) as past:
        assert past.get_or_extend_reservation(expired, "C", HEARTBEAT).owner_id == "C"

    before = scrape(server.http_url)
    with taskcache.open(_target(server, transport), storage=storage, max_retries=0) as client:
        with pytest.raises(NotFoundError):
            client.get(entry)  # miss
        client.put(entry, int_map(o0=1))  # put
        client.get(entry)  # hit
        client.get(entry)  # hit
        with pytest.raises(AlreadyExistsError):
            client.put(entry, int_map(o0=2))  # conflict
        client.update(entry, int_map(o0=3))  # put (overwrite)
        assert client.get_or_extend_reservation(held, "A", HEARTBEAT).owner_id == "A"  # granted
        assert client.get_or_extend_reservation(held, "B", HEARTBEAT).owner_id == "A"  # contended
        assert client.get_or_extend_reservation(held, "A", HEARTBEAT).owner_id == "A"  # granted
        assert client.get_or_extend_reservation(expired, "D", HEARTBEAT).owner_id == "D"  # taken
        client.release_reservation(held, "A")
        client.delete(entry)
    after = scrape(server.http_url)

    assert after.increase(before, "taskcache_cache_hits_total") == 2
    assert after.increase(before, "taskcache_cache_misses_total") == 1
    assert after.increase(before, "taskcache_puts_total") == 2
    assert after.increase(before, "taskcache_put_conflicts_total") == 1
    for outcome, count in (("granted", 2), ("contended", 1), ("taken_over", 1)):
        increase = after.increase(before, "taskcache_reservations_total", outcome=outcome)
        assert increase == count, outcome

    def requests(method: str, code: str) -> float:
        labels = {"transport": transport, "service": SCOPED, "method": method, "code": code}
        return after.increase(before, "taskcache_requests_total", **labels)

    assert requests("Get", "OK") == 2
    assert requests("Get", "NOT_FOUND") == 1
    assert requests("Put", "OK") == 2
    assert requests("Put", "ALREADY_EXISTS") == 1
    assert requests("GetOrExtendReservation", "OK") == 4
    assert requests("ReleaseReservation", "OK") == 1
    assert requests("Delete", "OK") == 1
    # Nothing was counted under the other transport.
    other = "grpc" if transport == "connect" else "connect"
    assert _total_requests(after, other) == _total_requests(before, other)
    # Every request observed once in the latency histogram too.
    histogram = {"transport": transport, "service": SCOPED, "method": "Get"}
    assert after.increase(before, "taskcache_request_duration_seconds_count", **histogram) == 3


@pytest.mark.parametrize(
    ("service", "stub", "request_type"),
    [
        (UNSCOPED, unscoped_grpc.CacheServiceStub, base_pb2.GetCacheRequest),
        (FLYTE1, flyte1_grpc.CacheServiceStub, flyte1_pb2.GetCacheRequest),
    ],
    ids=["unscoped", "flyte1"],
)
def test_requests_are_counted_under_the_service_called(
    server: ServerProcess, service: str, stub: Any, request_type: Any
) -> None:
    before = scrape(server.http_url)
    with (
        grpc.insecure_channel(server.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        stub(channel).Get(request_type(key=f"metrics-{uuid.uuid4().hex}"), timeout=10)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    after = scrape(server.http_url)

    labels = {"transport": "grpc", "method": "Get", "code": "NOT_FOUND"}
    assert after.increase(before, "taskcache_requests_total", service=service, **labels) == 1
    assert after.increase(before, "taskcache_requests_total", service=SCOPED, **labels) == 0
    assert after.increase(before, "taskcache_cache_misses_total") == 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content-type": "application/grpc"}, 415),
        ({"content-type": "application/proto", "content-encoding": "br"}, 400),
    ],
    ids=["grpc-content-type", "unknown-compression"],
)
def test_requests_refused_before_connect_reads_them_are_counted(
    server: ServerProcess, headers: dict[str, str], status: int
) -> None:
    before = scrape(server.http_url)
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        assert http.post(f"/{SCOPED}/Get", content=b"", headers=headers).status_code == status
        # A method the service does not have is answered alike but is no metric label.
        assert http.post(f"/{SCOPED}/Nope", content=b"", headers=headers).status_code == status
    after = scrape(server.http_url)

    labels = {"transport": "connect", "service": SCOPED, "code": "INVALID_ARGUMENT"}
    assert after.increase(before, "taskcache_requests_total", method="Get", **labels) == 1
    assert after.increase(before, "taskcache_requests_total", method="Nope", **labels) == 0
    assert _total_requests(after, "connect") - _total_requests(before, "connect") == 1


def _total_requests(metrics: Scrape, transport: str) -> float:
    return sum(
        value
        for (name, labels), value in metrics.samples.items()
        if name == "taskcache_requests_total" and ("transport", transport) in labels
    )


def test_database_gauge_is_up(server: ServerProcess) -> None:
    assert scrape(server.http_url).value("taskcache_database_up") == 1


def test_pool_gauges_follow_connections_held_by_calls(
    server: ServerProcess, postgres_url: str, tmp_path: Path
) -> None:
    def pool(metrics: Scrape) -> tuple[float, float, float]:
        size = metrics.value("taskcache_db_pool_connections")
        idle = metrics.value("taskcache_db_pool_idle")
        return size, idle, metrics.value("taskcache_db_pool_waiting")

    quiet = scrape(server.http_url)
    assert quiet.has("taskcache_db_pool_idle") and quiet.has("taskcache_db_pool_waiting")
    size, idle, waiting = pool(quiet)
    assert 1 <= size <= POOL_SIZE
    assert 0 <= idle <= size
    assert waiting == 0

    storage = str(tmp_path / "blobs")
    with contextlib.ExitStack() as stack:
        threads = stack.enter_context(ThreadPoolExecutor(POOL_SIZE + 1))
        clients = [
            stack.enter_context(taskcache.open(server.http_url, storage=storage, max_retries=0))
            for _ in range(POOL_SIZE + 1)
        ]
        lock = stack.enter_context(entries_locked(postgres_url))
        # A Put blocked on the test's table lock holds one pooled connection until released.
        blocked = [threads.submit(clients[0].put, _key("pool"), int_map(o0=1))]
        wait_for_blocked_calls(postgres_url, 1)
        size, idle, waiting = pool(scrape(server.http_url))
        assert 1 <= size <= POOL_SIZE
        assert idle <= size - 1  # the blocked call's connection is not idle
        assert waiting == 0

        # As many more: the pool is exhausted and the last call waits for a connection.
        for client in clients[1:]:
            blocked.append(threads.submit(client.put, _key("pool"), int_map(o0=1)))
        wait_for_blocked_calls(postgres_url, POOL_SIZE)
        deadline = time.monotonic() + HANG_GUARD
        while (exhausted := pool(scrape(server.http_url)))[2] == 0:
            assert time.monotonic() < deadline, f"no call ever waited for a connection: {exhausted}"
            time.sleep(0.05)
        size, idle, waiting = exhausted
        assert (size, idle) == (POOL_SIZE, 0)
        assert waiting >= 1

        lock.commit()
        for call in blocked:
            call.result(timeout=HANG_GUARD)
    # The connection goes back to the pool (polled: it is returned just after the answer).
    deadline = time.monotonic() + HANG_GUARD
    while True:
        size, idle, waiting = pool(scrape(server.http_url))
        if idle == size:
            break
        assert time.monotonic() < deadline, f"a connection never came back: {size=} {idle=}"
        time.sleep(0.05)
