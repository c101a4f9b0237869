"""Shared fixtures: a PostgreSQL server and database per session, clean repositories per test.

See ``tests/postgres.py`` for how the server is found or started. Without one the Postgres
tests are skipped, loudly; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import pytest

from ci_policy import skip_or_fail
from local_s3 import S3, local_s3
from postgres import (
    ENV_URL,
    PostgresNotFoundError,
    PostgresServer,
    resolve_server,
    restart_system_cluster,
    start_private_cluster,
    system_cluster_id,
)

if TYPE_CHECKING:
    from taskcache.repositories.postgres import PostgresRepository


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "postgres_restart: stops and starts a PostgreSQL server (skipped when it cannot; "
        "failed under CI=true)",
    )


def _no_postgres(reason: str) -> NoReturn:
    message = (
        f"PostgreSQL tests cannot run: {reason}. Set {ENV_URL}=postgresql://user@host:port/db, "
        "run a server on 127.0.0.1:5432 (user postgres, trust auth), or install initdb/pg_ctl."
    )
    skip_or_fail(f"NO POSTGRESQL: {message}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The server the Postgres tests use (env URL, the machine's own, or a private one)."""
    try:
        import asyncpg  # noqa: F401
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as error:
        _no_postgres(
            f"a PostgreSQL driver is not installed ({error}); pip install -e '.[postgres]'"
        )
    try:
        server = resolve_server()
    except PostgresNotFoundError as error:
        _no_postgres(str(error))
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated ``taskcache_test_<random>`` database, dropped at session end."""
    from taskcache.repositories.postgres import migrate

    url = postgres_server.create_database()
    try:
        migrate(url)
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def clean_postgres(postgres_url: str) -> str:
    """``postgres_url`` with every taskcache table emptied."""
    import psycopg

    # A new connection each time: a restart test may have restarted the server.
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            "TRUNCATE cache_entries, reservations, datacatalog_datasets, datacatalog_artifacts, "
            "datacatalog_artifact_data, datacatalog_partitions, datacatalog_tags"
        )
    return postgres_url


@pytest.fixture
def postgres_repository(clean_postgres: str) -> Iterator[PostgresRepository]:
    """A PostgresRepository on empty tables, closed after the test."""
    from taskcache.repositories.postgres import PostgresRepository

    repository = PostgresRepository(clean_postgres, min_size=1, max_size=4)
    yield repository
    repository.close()


@dataclass
class RestartableServer:
    """A server the test may stop and start; ``url`` names a migrated database on it."""

    url: str
    _stop: Callable[[], None]
    _start: Callable[[], None]
    stopped: bool = False

    def stop(self) -> None:
        self._stop()
        self.stopped = True

    def start(self) -> None:
        self._start()
        self.stopped = False


@pytest.fixture
def restartable_postgres(request: pytest.FixtureRequest) -> Iterator[RestartableServer]:
    """A PostgreSQL server the test may stop and start (it is running again afterwards).

    A private throwaway cluster when initdb is available (stopping the machine's shared
    server would break anything else using it); otherwise the session's server if it is
    private (pg_ctl) or the machine's own (pg_ctlcluster). Skipped when neither is possible
    (e.g. ``$TASKCACHE_TEST_POSTGRES_URL`` points elsewhere); failed instead under ``CI=true``.
    """
    from taskcache.repositories.postgres import migrate

    try:
        cluster = start_private_cluster()
    except (PostgresNotFoundError, OSError, subprocess.SubprocessError) as error:
        server = _session_server_or_none(request)
        if server is not None and server.cluster is not None:
            restartable = RestartableServer(
                request.getfixturevalue("clean_postgres"),
                server.cluster.stop,
                server.cluster.start,
            )
        elif server is not None and server.kind == "system" and system_cluster_id():
            restartable = RestartableServer(
                request.getfixturevalue("clean_postgres"),
                lambda: restart_system_cluster("stop"),
                lambda: restart_system_cluster("start"),
            )
        else:
            skip_or_fail(f"CANNOT RESTART POSTGRESQL from this test: {error}")
        try:
            yield restartable
        finally:
            if restartable.stopped:
                restartable.start()
        return
    try:
        migrate(cluster.url)
        yield RestartableServer(cluster.url, cluster.stop, cluster.start)
    finally:
        cluster.destroy()


def _session_server_or_none(request: pytest.FixtureRequest) -> PostgresServer | None:
    try:
        server: PostgresServer = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        return None
    return server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """The session's local S3 server (moto on loopback, :mod:`local_s3`)."""
    with local_s3() as server:
        yield server
