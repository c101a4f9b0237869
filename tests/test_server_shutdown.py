"""Graceful shutdown: the grace period is a setting, and SIGTERM really drains.

SIGTERM stops both listeners at once (new calls are refused), lets in-flight calls finish
for up to ``--shutdown-grace`` seconds, then exits 0 whether or not they did.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

import taskcache
from builders import int_map, make_key
from locked_postgres import HANG_GUARD, entries_locked, wait_for_blocked_calls
from server_process import ServerProcess
from taskcache import CacheError, CacheStatus, UnavailableError
from taskcache.errors import InvalidArgumentError
from taskcache.server.settings import load_settings


def test_shutdown_grace_defaults_to_ten_seconds_and_parses_units() -> None:
    assert load_settings({}, environ={}).shutdown_grace == 10.0
    assert load_settings({"shutdown_grace": "500ms"}, environ={}).shutdown_grace == 0.5
    assert load_settings({}, environ={"TASKCACHE_SHUTDOWN_GRACE": "2m"}).shutdown_grace == 120.0


@pytest.mark.parametrize("value", ["-1", "0", "soon"])
def test_invalid_shutdown_grace_names_the_option(value: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        load_settings({"shutdown_grace": value}, environ={})
    assert raised.value.field == "shutdown_grace"


def test_server_drains_for_the_configured_grace(tmp_path: Path) -> None:
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        extra_args=["--shutdown-grace", "0.5"],
    ).start()
    assert server.stop() == 0
    assert "draining in-flight calls (up to 0.5 s)" in server.log_text()


# --- draining, for real ------------------------------------------------------------------
#
# A slow in-flight call without any test hook in the server: the test holds an exclusive lock
# on the cache_entries table of the server's PostgreSQL database, so a Put blocks inside the
# server until the test lets go. Reservations live in another table and stay answerable, which
# makes GetOrExtendReservation the probe for "does the server still accept calls".

TRANSPORTS = ("connect", "grpc")


def _target(server: ServerProcess, transport: str) -> str:
    return server.http_url if transport == "connect" else f"grpc://{server.grpc_target}"


def _wait_until_refused(target: str, storage: Path) -> None:
    """Return once a new client's call is refused (the listener is closed)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        with taskcache.open(target, storage=str(storage), max_retries=0, timeout=5) as probe:
            try:
                probe.get_or_extend_reservation(
                    make_key(name="tests.probe"), "probe", timedelta(seconds=1)
                )
            except UnavailableError:
                return
            except CacheError:
                # A probe that arrives while gRPC is stopping is cancelled (CANCELLED); the
                # next one finds the port closed.
                pass
        assert time.monotonic() < deadline, "the server kept accepting calls after SIGTERM"
        time.sleep(0.02)


def _server(tmp_path: Path, database: str, grace: str) -> ServerProcess:
    return ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        database=database,
        extra_args=["--shutdown-grace", grace],
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_drains_an_in_flight_call_and_refuses_new_ones(
    tmp_path: Path, clean_postgres: str, transport: str
) -> None:
    key = make_key(name="tests.drained")
    storage = tmp_path / "blobs"
    with _server(tmp_path, clean_postgres, "60") as server, ThreadPoolExecutor(1) as pool:
        target = _target(server, transport)
        with (
            entries_locked(clean_postgres) as lock,
            taskcache.open(target, storage=str(storage), max_retries=0) as client,
        ):
            in_flight = pool.submit(client.put, key, int_map(o0=1))
            wait_for_blocked_calls(clean_postgres)

            server.send_stop_signal()
            _wait_until_refused(target, storage)
            # Still draining: the blocked call holds the process up (an immediate stop would
            # have exited here, failing the call).
            assert server.is_running(within=1.0), server.log_text()
            assert not in_flight.done()

            lock.commit()
            status = in_flight.result(timeout=HANG_GUARD)
        assert status.cache_status is CacheStatus.CACHE_POPULATED
        # Nothing left to drain: the server exits now, not at the end of its 60 s grace.
        assert not server.is_running(within=HANG_GUARD - 5), server.log_text()
    # The drained Put was committed, not just answered.
    with taskcache.open(clean_postgres, storage=str(storage)) as embedded:
        assert embedded.get(key).outputs.read() == int_map(o0=1)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sigterm_stops_waiting_for_a_call_after_the_grace(
    tmp_path: Path, clean_postgres: str, transport: str
) -> None:
    storage = tmp_path / "blobs"
    with _server(tmp_path, clean_postgres, "1s") as server, ThreadPoolExecutor(1) as pool:
        with (
            entries_locked(clean_postgres),
            taskcache.open(
                _target(server, transport), storage=str(storage), max_retries=0
            ) as client,
        ):
            in_flight = pool.submit(client.put, make_key(name="tests.abandoned"), int_map(o0=1))
            wait_for_blocked_calls(clean_postgres)

            server.send_stop_signal()
            # The lock is held throughout: the process can only exit by giving up on the call
            # once the 1 s grace is over (a drain without a bound would never end).
            assert not server.is_running(within=HANG_GUARD), server.log_text()
            with pytest.raises(CacheError):
                in_flight.result(timeout=HANG_GUARD)
        assert server.stop() == 0, server.log_text()
