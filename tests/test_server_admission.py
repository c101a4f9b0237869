"""The call gate through a real ``taskcache serve`` on PostgreSQL: a stopped database is
answered UNAVAILABLE at once (circuit breaker) and recovers unaided, calls beyond
``--max-in-flight`` are RESOURCE_EXHAUSTED, and a caller's deadline stops a call blocked in
the database without the blocked statement applying later.

Slow calls come from a table lock (tests/locked_postgres.py), never from a test hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import taskcache
from builders import int_map, make_key
from locked_postgres import HANG_GUARD, entries_locked, wait_for_blocked_calls
from scrape import scrape
from server_process import ServerProcess, running_server
from taskcache import CacheStatus, DeadlineExceededError, NotFoundError, UnavailableError
from taskcache.errors import ResourceExhaustedError

pytestmark = pytest.mark.slow

TRANSPORTS = ("connect", "grpc")
# The repository's default wait for a pooled connection (sql.PoolSettings): what every call
# waited before UNAVAILABLE when the database was down, before the breaker.
POOL_TIMEOUT = 10.0


def _target(server: ServerProcess, transport: str) -> str:
    return server.http_url if transport == "connect" else f"grpc://{server.grpc_target}"


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {HANG_GUARD} s"
        time.sleep(0.1)


@pytest.mark.postgres_restart
def test_a_stopped_database_is_answered_unavailable_at_once_and_recovers(
    restartable_postgres: Any, tmp_path: Path
) -> None:
    key = make_key(name="tests.breaker")
    # A cooldown longer than the test: while the database is down no call probes it, so
    # every refusal below is the breaker's; recovery comes from the health ping alone.
    with running_server(
        tmp_path, database=restartable_postgres.url, extra_args=["--breaker-cooldown", "10m"]
    ) as server:
        target = f"grpc://{server.grpc_target}"
        storage = str(tmp_path / "blobs")
        with taskcache.open(target, storage=storage, max_retries=0, timeout=30) as client:
            client.put(key, int_map(o0=1))

            restartable_postgres.stop()
            with pytest.raises(UnavailableError):
                client.get(key)  # the first failure: a pool timeout, or the ping already failed
            assert scrape(server.http_url).value("taskcache_database_breaker_open") == 1

            calls = 5
            started = time.monotonic()
            for _ in range(calls):
                with pytest.raises(UnavailableError):
                    client.get(key)
            # Without the breaker each call waits the whole pool timeout.
            assert time.monotonic() - started < POOL_TIMEOUT / 2

            restartable_postgres.start()

            # No server restart: the health ping closes the breaker once the database answers.
            _wait_for(
                lambda: scrape(server.http_url).value("taskcache_database_breaker_open") == 0,
                "the breaker closed after the database restart",
            )
            assert client.get(key).outputs.read() == int_map(o0=1)
            client.put(make_key(name="tests.breaker.after"), int_map(o0=2))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_calls_beyond_max_in_flight_are_resource_exhausted(
    tmp_path: Path, clean_postgres: str, transport: str
) -> None:
    keys = [make_key(name=f"tests.bounded.{index}") for index in range(2)]
    with (
        running_server(
            tmp_path, database=clean_postgres, extra_args=["--max-in-flight", "2"]
        ) as server,
        ThreadPoolExecutor(2) as pool,
        taskcache.open(
            _target(server, transport), storage=str(tmp_path / "blobs"), max_retries=0
        ) as client,
    ):
        with entries_locked(clean_postgres) as lock:
            blocked = [pool.submit(client.put, key, int_map(o0=1)) for key in keys]
            wait_for_blocked_calls(clean_postgres, 2)
            # Reservations are not locked: only the bound can refuse this call.
            with pytest.raises(ResourceExhaustedError):
                client.get_or_extend_reservation(
                    make_key(name="tests.bounded.third"), "third", timedelta(seconds=5)
                )
            assert scrape(server.http_url).value("taskcache_requests_in_flight") == 2
            lock.commit()
        for call in blocked:
            assert call.result(timeout=HANG_GUARD).cache_status is CacheStatus.CACHE_POPULATED
        client.get_or_extend_reservation(
            make_key(name="tests.bounded.after"), "after", timedelta(seconds=5)
        )
        metrics = scrape(server.http_url)
        assert (
            metrics.value(
                "taskcache_requests_total",
                transport=transport,
                service="flyteidl2.cacheservice.v2.CacheService",
                method="GetOrExtendReservation",
                code="RESOURCE_EXHAUSTED",
            )
            == 1
        )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_deadline_passing_in_the_database_stops_the_call_without_applying_it(
    tmp_path: Path, clean_postgres: str, transport: str
) -> None:
    key = make_key(name="tests.deadline")
    storage = str(tmp_path / "blobs")
    with running_server(tmp_path, database=clean_postgres) as server:
        with (
            entries_locked(clean_postgres) as lock,
            taskcache.open(
                _target(server, transport), storage=storage, max_retries=0, timeout=1
            ) as client,
        ):
            with pytest.raises(DeadlineExceededError):
                client.put(key, int_map(o0=1))
            # The server stopped the call: nothing is in flight and the statement that waited
            # on the lock was cancelled in PostgreSQL (no session waits on the lock any more).
            _wait_for(
                lambda: scrape(server.http_url).value("taskcache_requests_in_flight") == 0,
                "the in-flight count back to zero",
            )
            wait_for_blocked_calls(clean_postgres, 0)
            lock.commit()
        # The put never applied: not when answered, nor once the lock was gone.
        with (
            taskcache.open(clean_postgres, storage=storage) as embedded,
            pytest.raises(NotFoundError),
        ):
            embedded.get(key)
