"""P2: GetOrExtendReservation ops/s under contention: 64 owners on 8 keys.

One driver for every variant: ``owners`` threads, owner ``j`` working on key ``j % keys``,
each calling "get or extend my reservation" in a loop for a fixed window. A 5 ms heartbeat
(15 ms expiry at the default grace multiplier of 3) keeps ownership changing hands, so the
mix holds grants, extensions and refusals.

* ``P2-<db>-grpc`` (the issue's P2): ours = ``taskcache serve`` over gRPC (default
  settings); baseline = the same server stack answering a canned reservation
  (:mod:`bench.ceiling`), over gRPC, driven the same way: what the manager and the
  database add to the transport.
* ``P2-<db>-embedded``: ours = ``CacheManager.get_or_extend_reservation`` in-process;
  baseline = the repository's own statements (the conditional INSERT ... ON CONFLICT DO
  UPDATE ... WHERE with its previous-owner read, plus the read-back: SQLite's in one
  transaction, PostgreSQL's naming the refusing holder in the same statement) on a plain
  connection per thread: no manager, no transport.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from flyteidl2.cacheservice import cacheservice_pb2 as base
from flyteidl2.cacheservice.v2 import cacheservice_pb2, cacheservice_pb2_grpc

from bench.common import LABELS, Result, Tier, alternate, progress
from bench.p1_network import SCOPE
from bench.servers import Server
from taskcache.manager import DEFAULT_HEARTBEAT_GRACE_MULTIPLIER, CacheManager
from taskcache.repositories.base import Repository, Scope
from taskcache.repositories.sqlite import (
    RESERVATION_HOLDER_SQL,
    RESERVATION_SELECT_SQL,
    RESERVATION_UPSERT_SQL,
)

HEARTBEAT = timedelta(milliseconds=5)
VIA = {"grpc": "taskcache serve over gRPC", "embedded": "embedded CacheManager"}
BASELINES = {
    "grpc": "the same server answering a canned reservation",
    "embedded": "bare SQL loop",
}
LIMITS = {"grpc": 0.6, "embedded": 0.5}
_SCOPE = Scope(SCOPE.org, SCOPE.project, SCOPE.domain)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Operation = Callable[[], Any]
# Builds one owner's operation: (owner index, key, owner id) -> operation.
OperationFactory = Callable[[int, str, str], Operation]


def key_name(index: int) -> str:
    return f"bench-p2-key-{index}"


def drive(factory: OperationFactory, tier: Tier) -> float:
    """Run ``tier.p2_owners`` threads of ``factory``'s operations; return total ops/s."""
    owners = tier.p2_owners
    operations = [
        factory(j, key_name(j % tier.p2_keys), f"bench-owner-{j:03d}") for j in range(owners)
    ]
    counts = [0] * owners
    errors: list[BaseException] = []
    window = [0.0, 0.0]

    def open_window() -> None:  # run once, when every owner is ready, before any is released
        window[0] = time.perf_counter()
        window[1] = window[0] + tier.p2_round_seconds

    ready = threading.Barrier(owners, action=open_window)

    def worker(j: int) -> None:
        operation = operations[j]
        try:
            operation()  # connect and warm up
            ready.wait()
            stop = window[1]
            done = 0
            while time.perf_counter() < stop:
                operation()
                done += 1
            counts[j] = done
        except BaseException as error:
            errors.append(error)
            ready.abort()

    threads = [threading.Thread(target=worker, args=(j,), daemon=True) for j in range(owners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=tier.p2_round_seconds + 120)
    elapsed = time.perf_counter() - window[0]
    if errors:
        raise RuntimeError(f"P2 driver failed: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("P2 driver: an owner thread did not finish")
    return sum(counts) / elapsed


# -- ours ------------------------------------------------------------------------------------


def grpc_factory(server: Server) -> tuple[OperationFactory, Callable[[], None]]:
    """Each owner gets its own gRPC channel to ``server``."""
    channels: list[Any] = []

    def factory(_: int, key: str, owner: str) -> Operation:
        channel = grpc.insecure_channel(
            server.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        channels.append(channel)
        stub = cacheservice_pb2_grpc.CacheServiceStub(channel)
        request = cacheservice_pb2.GetOrExtendReservationRequest(
            base_request=base.GetOrExtendReservationRequest(key=key, owner_id=owner),
            identifier=SCOPE,
        )
        request.base_request.heartbeat_interval.FromTimedelta(HEARTBEAT)
        call = stub.GetOrExtendReservation
        return lambda: call(request, timeout=30)

    def close() -> None:
        for channel in channels:
            channel.close()
        channels.clear()

    return factory, close


def embedded_factory(
    open_repository: Callable[[], Repository],
) -> tuple[OperationFactory, Callable[[], None]]:
    """A CacheManager on a repository opened for each round (and closed after it)."""
    opened: list[Repository] = []

    def factory(_: int, key: str, owner: str) -> Operation:
        if not opened:
            opened.append(open_repository())
        manager = CacheManager(opened[0])
        return lambda: manager.get_or_extend_reservation(_SCOPE, key, owner, HEARTBEAT)

    def close() -> None:
        for repository in opened:
            repository.close()
        opened.clear()

    return factory, close


# -- the bare SQL baseline (the repositories' own statements, imported) ----------------------

_HEARTBEAT_US = HEARTBEAT // timedelta(microseconds=1)
_EXPIRY_US = int(_HEARTBEAT_US * DEFAULT_HEARTBEAT_GRACE_MULTIPLIER)
_EXPIRY = HEARTBEAT * DEFAULT_HEARTBEAT_GRACE_MULTIPLIER


def sqlite_sql_factory(path: Path) -> tuple[OperationFactory, Callable[[], None]]:
    """One WAL connection per owner, as the repository opens them; BEGIN IMMEDIATE."""
    connections: list[sqlite3.Connection] = []

    def factory(_: int, key: str, owner: str) -> Operation:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=NORMAL")
        connections.append(conn)
        key_params = (_SCOPE.org, _SCOPE.project, _SCOPE.domain, key)

        def operation() -> Any:
            now_us = time.time_ns() // 1000
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(RESERVATION_HOLDER_SQL, key_params).fetchone()
                conn.execute(
                    RESERVATION_UPSERT_SQL,
                    (*key_params, owner, _HEARTBEAT_US, now_us + _EXPIRY_US, now_us),
                )
                found = conn.execute(RESERVATION_SELECT_SQL, key_params).fetchone()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return found

        return operation

    def close() -> None:
        for conn in connections:
            conn.close()
        connections.clear()

    return factory, close


def postgres_sql_factory(url: str) -> tuple[OperationFactory, Callable[[], None]]:
    """One autocommit connection per owner (session in UTC, as the repository's)."""
    import psycopg  # noqa: PLC0415 - optional (the postgres extra)

    # The repository's own statements, verbatim (imported: they need psycopg's placeholders).
    from taskcache.repositories.postgres_sql import (  # noqa: PLC0415
        ACQUIRE_RESERVATION,
        SELECT_RESERVATION,
    )

    connections: list[Any] = []

    def factory(_: int, key: str, owner: str) -> Operation:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        conn.execute("SET TimeZone = 'UTC'")
        connections.append(conn)
        key_params = (_SCOPE.org, _SCOPE.project, _SCOPE.domain, key)

        def operation() -> Any:
            now = datetime.now(UTC)
            found = conn.execute(
                ACQUIRE_RESERVATION,
                (*key_params, *key_params, owner, _HEARTBEAT_US, now + _EXPIRY, now),
            ).fetchone()
            # The repository reads the holder afresh only when the snapshot cannot name it.
            if found is not None and (found[0] or (found[1] != owner and found[3] > now)):
                return found
            return conn.execute(SELECT_RESERVATION, key_params).fetchone()

        return operation

    def close() -> None:
        for conn in connections:
            conn.close()
        connections.clear()

    return factory, close


def _measure(
    result: Result,
    ours: tuple[OperationFactory, Callable[[], None]],
    baseline: tuple[OperationFactory, Callable[[], None]],
    tier: Tier,
) -> Result:
    ours_factory, ours_close = ours
    baseline_factory, baseline_close = baseline
    baseline_name = "canned" if result.id.endswith("-grpc") else "bare SQL"

    def ours_round() -> float:
        try:
            return drive(ours_factory, tier)
        finally:
            ours_close()

    def baseline_round() -> float:
        try:
            return drive(baseline_factory, tier)
        finally:
            baseline_close()

    result.ours_rounds, result.baseline_rounds = alternate(
        tier.p2_rounds, ours_round, baseline_round
    )
    result.settle()
    progress(
        f"{result.id}: ours {result.ours:.0f} ops/s, {baseline_name} {result.baseline:.0f} ops/s"
    )
    return result


def _result(database: str, via: str, tier: Tier) -> Result:
    return Result(
        id=f"P2-{database}-{via}",
        measure=(
            f"GetOrExtendReservation ops/s, {tier.p2_owners} owners x {tier.p2_keys} keys, "
            f"{LABELS[database]}, ours = {VIA[via]} (vs {BASELINES[via]})"
        ),
        unit="ops/s",
        target=f">= {LIMITS[via]}x",
        direction="higher",
        limit=LIMITS[via],
    )


def run(
    tier: Tier,
    sqlite_path: Path,
    postgres_url: str | None,
    servers: dict[str, Server | None],
    ceiling: Server,
    open_postgres: Callable[[int], Repository] | None,
) -> list[Result]:
    """``sqlite_path``/``postgres_url`` are the databases the ``servers`` use; ``ceiling``
    answers canned reservations.
    """
    from taskcache.repositories.sqlite import SqliteRepository  # noqa: PLC0415

    results: list[Result] = []
    databases: dict[str, tuple[OperationFactory, Callable[[], None]] | None] = {
        "sqlite": sqlite_sql_factory(sqlite_path),
        "postgres": postgres_sql_factory(postgres_url) if postgres_url else None,
    }
    for database, sql in databases.items():
        server = servers.get(database)
        grpc_result = _result(database, "grpc", tier)
        if server is None or sql is None:
            grpc_result.notes = f"not run: no {database} server"
            results.append(grpc_result)
        else:
            results.append(_measure(grpc_result, grpc_factory(server), grpc_factory(ceiling), tier))

        embedded_result = _result(database, "embedded", tier)
        if sql is None:
            embedded_result.notes = f"not run: no {database} server"
            results.append(embedded_result)
            continue
        if database == "sqlite":
            open_repository: Callable[[], Repository] = functools.partial(
                SqliteRepository, sqlite_path
            )
        else:
            assert open_postgres is not None
            open_repository = functools.partial(open_postgres, tier.p2_owners)
        results.append(_measure(embedded_result, embedded_factory(open_repository), sql, tier))
    return results
