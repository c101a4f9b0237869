"""Find or start a PostgreSQL server for the tests; create and drop per-session databases.

Resolution order (:func:`resolve_server`):

1. ``$TASKCACHE_TEST_POSTGRES_URL`` (a ``postgresql://`` URL; its database is only used to
   create and drop the test databases). Never restarted by the tests.
2. The machine's own server on 127.0.0.1:5432 (user ``postgres``, trust auth) if it answers
   within 2 s.
3. A private throwaway cluster (``initdb`` + ``pg_ctl``) in a temporary directory on a free
   port, run as the ``postgres`` OS user when the tests run as root.

:func:`start_private_cluster` is also used on its own by the restart test, so that stopping
a server never disturbs anything but the test itself.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "TASKCACHE_TEST_POSTGRES_URL"
SYSTEM_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVICE_USER = "postgres"

Kind = Literal["env", "system", "private"]


class PostgresNotFoundError(Exception):
    """No PostgreSQL server could be found or started; the message says what was tried."""


def with_database(url: str, database: str) -> str:
    """Return ``url`` pointing at ``database`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def answers(url: str, timeout: float = 2.0) -> str | None:
    """Return None if ``SELECT 1`` works at ``url`` within ``timeout``, else the error."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip() or type(error).__name__
    return None


def _port_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_bin_dir() -> Path | None:
    """Return the directory holding ``initdb`` and ``pg_ctl`` (newest Debian version first)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _as_service_user(command: list[str]) -> list[str]:
    """Prefix ``command`` to run as the postgres OS user when we are root (initdb refuses)."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", SERVICE_USER, "--", *command]
    return ["su", SERVICE_USER, "-s", "/bin/sh", "-c", " ".join(map(_quote, command))]


def _quote(text: str) -> str:
    return shlex.quote(text)


def _run(command: list[str], timeout: float = 60.0) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise PostgresNotFoundError(
            f"{' '.join(command)} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )


@dataclass
class PrivateCluster:
    """A throwaway cluster: data, socket and log in ``directory``; TCP on 127.0.0.1:port."""

    bin_dir: Path
    directory: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        _run(_as_service_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]))

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        log = self.directory / "server.log"
        self._pg_ctl("-w", "-t", "30", "-l", str(log), "-o", options, "start")

    def stop(self) -> None:
        self._pg_ctl("-w", "-t", "30", "-m", "fast", "stop")

    def destroy(self) -> None:
        with suppress(PostgresNotFoundError):  # already stopped
            self._pg_ctl("-w", "-t", "30", "-m", "immediate", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def start_private_cluster() -> PrivateCluster:
    """initdb and start a cluster in a fresh temporary directory; PostgresNotFoundError if not."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PostgresNotFoundError("no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and not _service_user_exists():
        raise PostgresNotFoundError(f"running as root and there is no {SERVICE_USER!r} OS user")
    # Short path under /tmp: the unix socket path must stay under ~100 bytes, and the
    # service user must be able to reach it (pytest's tmp_path is private to root).
    directory = Path(tempfile.mkdtemp(prefix="taskcache-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(directory, user=SERVICE_USER, group=None)
    cluster = PrivateCluster(bin_dir=bin_dir, directory=directory, port=_free_port())
    try:
        _run(
            _as_service_user(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(cluster.data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ]
            )
        )
        cluster.start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


def _service_user_exists() -> bool:
    import pwd

    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return False
    return True


def system_cluster_id() -> tuple[str, str] | None:
    """Return (version, name) of the machine's Debian cluster if pg_ctlcluster can drive it."""
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    etc = Path("/etc/postgresql")
    versions = sorted(p.name for p in etc.iterdir()) if etc.is_dir() else []
    for version in reversed(versions):
        if (etc / version / "main").is_dir():
            return version, "main"
    return None


def restart_system_cluster(action: Literal["stop", "start"]) -> None:
    found = system_cluster_id()
    if found is None:
        raise PostgresNotFoundError("no pg_ctlcluster-managed cluster")
    version, name = found
    _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action])


@dataclass
class PostgresServer:
    """A server the tests may create databases on (``admin_url`` names a database to use)."""

    kind: Kind
    admin_url: str
    cluster: PrivateCluster | None = None
    databases: list[str] = field(default_factory=list)

    def create_database(self) -> str:
        """Create a fresh ``taskcache_test_<random>`` database and return its URL."""
        import psycopg

        name = f"taskcache_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name is ours: [a-z0-9_]
        self.databases.append(name)
        return with_database(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def shutdown(self) -> None:
        if self.cluster is not None:
            self.cluster.destroy()


def resolve_server() -> PostgresServer:
    """Find a server as described in the module docstring; PostgresNotFoundError says why not."""
    tried: list[str] = []
    configured = os.environ.get(ENV_URL)
    if configured:
        problem = answers(configured, timeout=5.0)
        if problem is None:
            return PostgresServer(kind="env", admin_url=configured)
        raise PostgresNotFoundError(f"${ENV_URL}={configured} does not answer: {problem}")
    if _port_open("127.0.0.1", 5432, timeout=2.0):
        problem = answers(SYSTEM_URL, timeout=2.0)
        if problem is None:
            return PostgresServer(kind="system", admin_url=SYSTEM_URL)
        tried.append(f"{SYSTEM_URL}: {problem}")
    else:
        tried.append("nothing listens on 127.0.0.1:5432")
    try:
        cluster = start_private_cluster()
    except (PostgresNotFoundError, OSError, subprocess.SubprocessError) as error:
        tried.append(f"private cluster: {error}")
        raise PostgresNotFoundError("; ".join(tried)) from error
    deadline = time.monotonic() + 10
    while (problem := answers(cluster.url)) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if problem is not None:
        cluster.destroy()
        raise PostgresNotFoundError(f"private cluster started but does not answer: {problem}")
    return PostgresServer(kind="private", admin_url=cluster.url, cluster=cluster)
