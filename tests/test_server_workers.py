"""``taskcache serve --workers N``: real supervisor and worker processes on loopback.

Several workers must answer exactly like one (both transports, SQLite and PostgreSQL),
share both ports so that connections reach every worker, drain every worker on SIGTERM and
exit 0, and never leave a process behind: a worker that dies stops the server (non-zero
exit), a supervisor that dies takes its workers with it.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

import taskcache
from builders import int_map, make_key
from locked_postgres import HANG_GUARD, entries_locked, wait_for_blocked_calls
from scrape import Scrape, scrape
from server_process import ServerProcess
from taskcache import CacheStatus, NotFoundError, UnauthenticatedError
from taskcache.errors import InvalidArgumentError
from taskcache.server.settings import load_settings

TRANSPORTS = ("connect", "grpc")
DATABASES = ("sqlite", "postgres")
# Fresh connections per transport: with SO_REUSEPORT each lands on a worker by hash, so all
# of them reaching one of two workers has a chance of 2**-CONNECTIONS.
CONNECTIONS = 16


def _target(server: ServerProcess, transport: str) -> str:
    return server.http_url if transport == "connect" else f"grpc://{server.grpc_target}"


def _server(tmp_path: Path, name: str, database: str, *extra: str) -> ServerProcess:
    return ServerProcess(
        home=tmp_path / f"{name}-home",
        log_path=tmp_path / f"{name}.log",
        database=database,
        storage=str(tmp_path / "blobs"),
        extra_args=extra,
    )


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here; its parent has yet to reap it.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def _scrape_every_worker(server: ServerProcess) -> dict[int, Scrape]:
    """Scrape ``/metrics`` (each scrape a fresh connection, answered by one worker) until
    every worker has answered; return each worker's latest scrape by pid.
    """
    workers = _children(server.pid)
    scrapes: dict[int, Scrape] = {}
    deadline = time.monotonic() + HANG_GUARD
    while set(scrapes) != workers:
        assert time.monotonic() < deadline, f"only workers {set(scrapes)} of {workers} answered"
        sample = scrape(server.http_url)
        pid = next(
            int(dict(labels)["pid"])
            for name, labels in sample.samples
            if name == "taskcache_worker"
        )
        scrapes[pid] = sample
    return scrapes


def _gets(sample: Scrape, transport: str) -> float:
    return sum(
        value
        for (name, labels), value in sample.samples.items()
        if name == "taskcache_requests_total"
        and dict(labels)["transport"] == transport
        and dict(labels)["method"] == "Get"
    )


def _wait_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes still running: {pids}"
        time.sleep(0.05)


def _database(kind: str, tmp_path: Path, name: str, postgres_url: str) -> str:
    if kind == "sqlite":
        return str(tmp_path / f"{name}.db")
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("TRUNCATE cache_entries, reservations")
    return postgres_url


def _script(server: ServerProcess, storage: Path) -> list[object]:
    """The same calls against any server, each on a fresh client (a fresh connection), and
    what they answered, timestamps left out.
    """
    answers: list[object] = []
    for transport in TRANSPORTS:
        target = _target(server, transport)

        def client(target: str = target) -> taskcache.Client:
            return taskcache.open(target, storage=str(storage), max_retries=0, timeout=10)

        key = make_key(name=f"tests.workers.{transport}")
        with client() as first:
            answers.append(first.put(key, int_map(o0=1)).cache_status)
        for _ in range(CONNECTIONS):
            with client() as reader:
                answers.append(reader.get(key).outputs.read())
        with client() as reader, pytest.raises(NotFoundError):
            reader.get(make_key(name=f"tests.workers.{transport}.absent"))
        answers.append("miss")
        reserved = make_key(name=f"tests.workers.{transport}.reserved")
        heartbeat = timedelta(seconds=5)
        for owner in ("a", "b", "a"):
            with client() as reserver:
                answers.append(reserver.get_or_extend_reservation(reserved, owner, heartbeat))
        with client() as releaser:
            releaser.release_reservation(reserved, "a")
        with client() as reserver:
            answers.append(reserver.get_or_extend_reservation(reserved, "b", heartbeat))
    return [
        (answer.owner_id, answer.heartbeat_interval) if hasattr(answer, "owner_id") else answer
        for answer in answers
    ]


def test_workers_setting_parses_and_refuses_what_processes_cannot_share(tmp_path: Path) -> None:
    assert load_settings({}, environ={}).workers == 1
    assert load_settings({}, environ={"TASKCACHE_WORKERS": "3"}).workers == 3
    database = str(tmp_path / "c.db")
    assert load_settings({"workers": 2, "database": database}, environ={}).workers == 2
    refused = [
        {"workers": 0, "database": database},
        {"workers": 2, "database": "memory://"},
        {"workers": 2, "database": database, "storage": "memory://blobs"},
    ]
    for flags in refused:
        with pytest.raises(InvalidArgumentError) as raised:
            load_settings(flags, environ={})
        assert raised.value.field == "workers"
    # One worker may use memory:// as before.
    assert load_settings({"database": "memory://"}, environ={}).workers == 1


def _one_server_answers() -> list[object]:
    """What one server answers to :func:`_script` (the behaviour suite pins each answer)."""
    heartbeat = timedelta(seconds=5)
    per_transport = [
        CacheStatus.CACHE_POPULATED,
        *[int_map(o0=1)] * CONNECTIONS,
        "miss",
        ("a", heartbeat),  # granted
        ("a", heartbeat),  # b is refused: a holds it
        ("a", heartbeat),  # extended
        ("b", heartbeat),  # granted once a released it
    ]
    return per_transport * len(TRANSPORTS)


@pytest.mark.parametrize("kind", DATABASES)
def test_two_workers_answer_like_one_and_share_both_ports(
    tmp_path: Path, postgres_url: str, kind: str
) -> None:
    database = _database(kind, tmp_path, "two", postgres_url)
    with _server(tmp_path, "two", database, "--workers", "2") as server:
        workers = _children(server.pid)
        assert len(workers) == 2
        _scrape_every_worker(server)  # both listen
        assert _script(server, tmp_path / "blobs") == _one_server_answers()
        scrapes = _scrape_every_worker(server).values()
        for transport in TRANSPORTS:
            calls = [_gets(sample, transport) for sample in scrapes]
            assert sum(calls) == CONNECTIONS + 1  # the hits and the miss
            assert all(calls), f"{transport}: {calls} Get calls per worker"
    _wait_gone(workers)


def test_sigterm_drains_every_worker_and_exits_zero(tmp_path: Path, clean_postgres: str) -> None:
    blocked = 8
    storage = tmp_path / "blobs"
    server = _server(tmp_path, "drain", clean_postgres, "--workers", "2", "--shutdown-grace", "60")
    with server, ThreadPoolExecutor(blocked) as pool:
        workers = _children(server.pid)
        _scrape_every_worker(server)  # both listen, so the calls spread over both
        with entries_locked(clean_postgres) as lock:
            # Connect: one connection per client (gRPC channels to one target share theirs).
            clients = [
                taskcache.open(server.http_url, storage=str(storage), max_retries=0)
                for _ in range(blocked)
            ]
            puts = [
                pool.submit(client.put, make_key(name=f"tests.drain.{index}"), int_map(o0=index))
                for index, client in enumerate(clients)
            ]
            wait_for_blocked_calls(clean_postgres, blocked)
            in_flight = {
                pid: sample.value("taskcache_requests_in_flight")
                for pid, sample in _scrape_every_worker(server).items()
            }
            assert sum(in_flight.values()) == blocked
            server.send_stop_signal()
            # Every worker holding a blocked call waits for it (all of them, but for a
            # 2**-7 chance that the calls all landed on one).
            assert server.is_running(within=1.0), server.log_text()
            assert all(_alive(pid) for pid, calls in in_flight.items() if calls), in_flight
            lock.commit()
            statuses = [put.result(timeout=HANG_GUARD).cache_status for put in puts]
            for client in clients:
                client.close()
        assert statuses == [CacheStatus.CACHE_POPULATED] * blocked
        server.stop_and_check()
    _wait_gone(workers)
    assert server.log_text().count("taskcache server stopped") == 2
    with taskcache.open(clean_postgres, storage=str(storage)) as embedded:
        assert embedded.get(make_key(name="tests.drain.7")).outputs.read() == int_map(o0=7)


def test_a_dead_worker_stops_the_server_with_a_failure(tmp_path: Path) -> None:
    server = _server(tmp_path, "crash", str(tmp_path / "c.db"), "--workers", "2").start()
    try:
        workers = _children(server.pid)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        assert not server.is_running(within=HANG_GUARD), server.log_text()
    finally:
        code = server.stop()
    assert code == 1
    _wait_gone(workers)
    assert f"worker pid {victim} exited with status -9" in server.log_text()


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    server = _server(tmp_path, "orphan", str(tmp_path / "c.db"), "--workers", "2").start()
    workers = _children(server.pid)
    server.send_signal(signal.SIGKILL)
    assert not server.is_running(within=HANG_GUARD)
    assert server.stop() == -signal.SIGKILL
    _wait_gone(workers)
    assert server.log_text().count("supervisor gone: stopping") == 2


def _wait_logged(server: ServerProcess, text: str, count: int) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while server.log_text().count(text) < count:
        assert time.monotonic() < deadline, (
            f"{text!r} not logged {count} times:\n{server.log_text()}"
        )
        time.sleep(0.05)


def test_sighup_makes_every_worker_reread_the_token_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("old-token-0123456789\n")
    server = _server(
        tmp_path, "hup", str(tmp_path / "c.db"), "--workers", "2", "--auth-token-file", str(tokens)
    )
    with server:
        workers = _children(server.pid)
        # Healthy means one worker serves: the other may still be starting, and a signal
        # forwarded then must neither kill it (SIGHUP's default action) nor be lost.
        server.send_signal(signal.SIGHUP)
        _scrape_every_worker(server)  # both serve (a worker reads the file as it starts)
        assert _children(server.pid) == workers
        before = server.log_text().count("reloaded:")
        tokens.write_text("new-token-0123456789\n")
        server.send_signal(signal.SIGHUP)
        _wait_logged(server, "reloaded:", before + 2)  # once per worker
        for index in range(4):
            for token, works in (("new-token-0123456789", True), ("old-token-0123456789", False)):
                with taskcache.open(
                    f"grpc://{server.grpc_target}",
                    storage=str(tmp_path / "blobs"),
                    max_retries=0,
                    token=token,
                ) as client:
                    expected = NotFoundError if works else UnauthenticatedError
                    with pytest.raises(expected):
                        client.get(make_key(name=f"tests.hup.{index}"))
