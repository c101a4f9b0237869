"""The one resolver: every entry point accepts and refuses the same strings, with one message.

The entry points are ``taskcache.open``/``open_async``, ``taskcache serve`` (its settings and
the runner that opens the database, in process; plus real ``taskcache serve`` subprocesses),
``taskcache migrate`` and the operator commands ``ls``, ``show``, ``delete``, ``gc`` and
``stats`` through click's CliRunner. Unit tests of :func:`taskcache.resolver.resolve` follow.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

import taskcache
from builders import int_map, make_key
from server_process import ServerProcess, http_get
from taskcache.cli import main
from taskcache.errors import InvalidArgumentError
from taskcache.home import default_home
from taskcache.repositories.base import Scope
from taskcache.repositories.sqlite import SCHEMA_VERSION, SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from taskcache.resolver import (
    Location,
    LocationKind,
    migrate,
    open_async_repository,
    open_repository,
    redact,
    resolve,
    resolve_database,
)
from taskcache.server.runner import serve
from taskcache.server.settings import load_settings


@dataclass(frozen=True)
class Places:
    """Where a case runs: an empty working directory, ``~`` and ``$TASKCACHE_HOME``."""

    cwd: Path
    user_home: Path
    taskcache_home: Path
    postgres: Callable[[], str]


@dataclass(frozen=True)
class Case:
    """A target string and what every entry point must do with it.

    ``text`` may name ``{tmp}`` (an absolute folder) and ``{pg}`` (the test database URL
    without its ``postgresql://``). ``file``: the SQLite file an accepting entry point
    creates, relative to the working directory (``~/`` for the user's home). ``refusal``:
    the message fragment every entry point refuses it with (None: accepted). ``service``:
    a running-service URL, which only ``taskcache.open`` accepts.
    """

    id: str
    text: str
    file: str | None = None
    refusal: str | None = None
    service: bool = False


CASES = [
    Case("folder", "cat", file="cat/catalog.db"),
    Case("absolute-folder", "{tmp}/abs", file="{tmp}/abs/catalog.db"),
    Case("tilde-folder", "~/tilde", file="~/tilde/catalog.db"),
    Case("db-file", "mine.db", file="mine.db"),
    Case("sqlite3-file", "mine.sqlite3", file="mine.sqlite3"),
    Case("sqlite-3-slashes", "sqlite://{tmp}/three.db", file="{tmp}/three.db"),
    Case("sqlite-4-slashes", "sqlite:///{tmp}/four.db", file="{tmp}/four.db"),
    Case("sqlite-mixed-case", "SQLite://{tmp}/upper.db", file="{tmp}/upper.db"),
    Case("sqlite-relative", "sqlite://rel.db", file="rel.db"),
    Case("memory", "memory://"),
    Case("memory-upper", "MEMORY://"),
    Case("postgresql", "postgresql://{pg}"),
    Case("postgresql-upper", "POSTGRESQL://{pg}"),
    Case("postgres-alias", "Postgres://{pg}"),
    Case("empty", "", refusal="must not be empty"),
    Case("blank", "   ", refusal="must not be empty"),
    Case("ipv4-host-port", "127.0.0.1:8094", refusal="looks like host:port without a scheme"),
    Case("name-host-port", "localhost:8095", refusal="looks like host:port without a scheme"),
    Case("ipv6-host-port", "[::1]:8095", refusal="looks like host:port without a scheme"),
    Case("ftp", "ftp://host/db", refusal="unsupported scheme 'ftp'"),
    Case("mysql", "mysql://x", refusal="unsupported scheme 'mysql'"),
    Case("sqlite-no-file", "sqlite://", refusal="names no database file"),
    Case("sqlite-root", "sqlite:///", refusal="names no database file"),
    Case("memory-with-path", "memory://x", refusal="memory:// takes no path"),
    Case("http", "http://127.0.0.1:1", service=True),
    Case("https-upper", "HTTPS://127.0.0.1:1", service=True),
    Case("grpc", "grpc://127.0.0.1:1", service=True),
    Case("grpcs-upper", "GRPCS://127.0.0.1:1", service=True),
]


def fill(text: str, places: Places) -> str:
    """Return ``text`` with ``{tmp}`` and ``{pg}`` replaced (the latter only when named)."""
    if "{pg}" in text:
        text = text.replace("{pg}", places.postgres().split("://", 1)[1])
    return text.replace("{tmp}", str(places.cwd.parent / "absolute"))


def created_file(case: Case, places: Places) -> Path:
    assert case.file is not None
    if case.file.startswith("~/"):
        return places.user_home / case.file.removeprefix("~/")
    return places.cwd / fill(case.file, places)


# --- the entry points: each returns None when it accepts, else the refusal's message ---


def via_open(text: str) -> str | None:
    try:
        client = taskcache.open(text)
    except InvalidArgumentError as error:
        return str(error)
    client.close()
    return None


def via_open_async(text: str) -> str | None:
    # Inside a running loop, as async code opens it (gRPC's aio channel needs one).
    async def open_and_close() -> str | None:
        try:
            client = taskcache.open_async(text)
        except InvalidArgumentError as error:
            return str(error)
        await client.close()
        return None

    return asyncio.run(open_and_close())


def via_serve(text: str) -> str | None:
    """What ``taskcache serve --database TEXT`` does, in process: load its settings (where a
    bad value is refused), then serve them until the already-set stop event ends it.
    """
    try:
        settings = load_settings({"database": text, "port": 0, "grpc_port": 0})
    except InvalidArgumentError as error:
        return str(error)

    async def serve_briefly() -> None:
        stop = asyncio.Event()
        stop.set()
        await serve(settings, stop=stop)

    asyncio.run(serve_briefly())
    return None


def via_cli(*command: str) -> Callable[[str], str | None]:
    def run(text: str) -> str | None:
        result = CliRunner().invoke(main, [*command, "--database", text])
        if result.exit_code == 2:
            return result.stderr
        # show and delete of a key that is not there still opened the catalog.
        missing = result.exit_code == 1 and "no entry 'k'" in result.stderr
        assert result.exit_code == 0 or missing, result.output
        return None

    return run


ENTRY_POINTS: dict[str, Callable[[str], str | None]] = {
    "open": via_open,
    "open_async": via_open_async,
    "serve": via_serve,
    "migrate": via_cli("migrate"),
    "ls": via_cli("ls"),
    "show": via_cli("show", "k"),
    "delete": via_cli("delete", "k", "--yes"),
    "gc": via_cli("gc", "--older-than", "30d", "--dry-run"),
    "stats": via_cli("stats"),
    "clear": via_cli("clear", "--yes"),
}


@pytest.fixture
def places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Places:
    cwd, user_home, taskcache_home = tmp_path / "cwd", tmp_path / "user", tmp_path / "home"
    for folder in (cwd, user_home):
        folder.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.setenv("TASKCACHE_HOME", str(taskcache_home))
    for name in ("TASKCACHE_DATABASE", "TASKCACHE_STORAGE", "TASKCACHE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return Places(cwd, user_home, taskcache_home, lambda: request.getfixturevalue("postgres_url"))


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_entry_point_accepts_and_refuses_the_same_strings(
    case: Case, entry: str, places: Places
) -> None:
    text = fill(case.text, places)
    refused = ENTRY_POINTS[entry](text)

    if case.service and entry not in ("open", "open_async"):
        assert refused is not None
        assert "names a running service; --database takes a database" in refused
    elif case.refusal is not None:
        assert refused is not None
        assert case.refusal in refused
        # The resolver's own message, word for word, whichever entry point refused.
        parse = resolve if entry in ("open", "open_async") else resolve_database
        with pytest.raises(InvalidArgumentError) as expected:
            parse(text)
        assert str(expected.value) in refused
        # A refused string creates nothing: no folder named like the host:port, no catalog.
        assert list(places.cwd.iterdir()) == []
        assert not places.taskcache_home.exists()
    else:
        assert refused is None
        if case.file is not None:
            assert created_file(case, places).is_file()


def test_host_port_hints_name_the_right_schemes(places: Places) -> None:
    message = via_open("127.0.0.1:8094")
    assert message is not None
    assert "http://127.0.0.1:8094 (Connect)" in message
    assert "grpc://127.0.0.1:8094 (gRPC)" in message
    assert "postgresql://127.0.0.1:8094/DBNAME" in message
    # Entry points that take a database do not suggest a service they would refuse.
    refused = via_cli("stats")("127.0.0.1:8094")
    assert refused is not None
    assert "postgresql://127.0.0.1:8094/DBNAME" in refused
    assert "http://" not in refused


def test_unknown_scheme_message_lists_what_is_accepted(places: Places) -> None:
    message = via_open("s3://bucket/catalog")
    assert message is not None
    for form in ("a folder", "*.sqlite3", "sqlite:///", "memory://", "postgresql://"):
        assert form in message
    assert "http(s)://host:port (Connect)" in message
    assert "grpc(s)://host:port (gRPC)" in message


def test_one_catalog_through_open_and_the_operator_commands(places: Places) -> None:
    # Different spellings of one file reach one catalog.
    database = places.cwd / "shared.db"
    with taskcache.open(f"SQLITE:///{database}") as client:
        client.put(make_key(), int_map(o0=1))
    result = CliRunner().invoke(main, ["stats", "--json", "--database", f"sqlite://{database}"])
    assert result.exit_code == 0, result.output
    assert '"entries": 1' in result.stdout


# --- real `taskcache serve` subprocesses ---


def test_serve_process_accepts_a_four_slash_sqlite_url(tmp_path: Path) -> None:
    database = tmp_path / "served" / "four.db"
    server = ServerProcess(
        home=tmp_path / "home", log_path=tmp_path / "server.log", database=f"sqlite:///{database}"
    )
    with server:
        assert http_get(f"{server.http_url}/healthz").status == 200
    # Not //tmp/... or a path relative to the server's working directory: the named file.
    assert database.is_file()


def test_serve_process_refuses_host_port_without_a_scheme(tmp_path: Path) -> None:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("TASKCACHE_")
    }
    environment["TASKCACHE_HOME"] = str(tmp_path / "home")
    completed = subprocess.run(
        [sys.executable, "-m", "taskcache", "serve", "--database", "127.0.0.1:8094"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    assert "looks like host:port without a scheme" in completed.stderr
    assert "postgresql://127.0.0.1:8094/DBNAME" in completed.stderr
    assert list(tmp_path.iterdir()) == []


# --- resolve ---


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_none_is_the_default_home_catalog(home: Path) -> None:
    assert resolve(None) == Location(
        LocationKind.SQLITE_FILE, str(home / "catalog.db"), str(home / "blobs")
    )


def test_default_home_reads_the_given_environment(tmp_path: Path) -> None:
    assert default_home({"TASKCACHE_HOME": str(tmp_path)}) == tmp_path
    assert default_home({"TASKCACHE_HOME": "~/x"}) == Path("~/x").expanduser()
    # Unset or empty: the platform's data dir, the same either way.
    assert default_home({}) == default_home({"TASKCACHE_HOME": ""})
    assert default_home({}).name == "taskcache"


@pytest.mark.parametrize(
    ("target", "database"),
    [
        ("/srv/cat", "/srv/cat/catalog.db"),
        ("/srv/cat.db", "/srv/cat.db"),
        ("/srv/cat.sqlite", "/srv/cat.sqlite"),
        ("/srv/cat.sqlite3", "/srv/cat.sqlite3"),
        ("sqlite:///srv/x.db", "/srv/x.db"),
        ("sqlite:////srv/x.db", "/srv/x.db"),
        ("SQLITE:///srv/x.db", "/srv/x.db"),
        ("sqlite://rel/x.db", "rel/x.db"),
        ("  /srv/padded  ", "/srv/padded/catalog.db"),
    ],
)
def test_sqlite_blobs_live_beside_the_file(target: str, database: str) -> None:
    location = resolve(target)
    assert location.kind is LocationKind.SQLITE_FILE
    assert location.address == database
    assert location.blob_root == str(Path(database).parent / "blobs")


def test_tilde_is_expanded_in_paths_and_relative_sqlite_urls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/cat").address == str(tmp_path / "cat" / "catalog.db")
    assert resolve("~/c.db").blob_root == str(tmp_path / "blobs")
    assert resolve("sqlite://~/c.db").address == str(tmp_path / "c.db")
    assert resolve(Path("~/p")).address == str(tmp_path / "p" / "catalog.db")


def test_a_path_object_is_always_a_path() -> None:
    # Even one that would read as host:port as a string.
    assert resolve(Path("127.0.0.1:8094")).address == "127.0.0.1:8094/catalog.db"
    assert resolve("./127.0.0.1:8094").address == "127.0.0.1:8094/catalog.db"


def test_memory_blob_roots_are_private() -> None:
    first, second = resolve("memory://"), resolve("Memory://")
    assert first.kind is second.kind is LocationKind.MEMORY
    assert first.blob_root.startswith("memory://taskcache-")
    assert first.blob_root != second.blob_root


@pytest.mark.parametrize(
    ("target", "kind", "address"),
    [
        ("POSTGRESQL://u@db/cache", LocationKind.POSTGRES, "postgresql://u@db/cache"),
        ("postgres://u@db/cache", LocationKind.POSTGRES, "postgres://u@db/cache"),
        ("HTTP://svc:8094", LocationKind.CONNECT, "http://svc:8094"),
        ("https://svc:8094", LocationKind.CONNECT, "https://svc:8094"),
        ("GrPc://svc:8095", LocationKind.GRPC, "grpc://svc:8095"),
        ("grpcs://svc:8095", LocationKind.GRPC, "grpcs://svc:8095"),
    ],
)
def test_urls_lower_case_their_scheme_and_keep_blobs_in_the_home(
    home: Path, target: str, kind: LocationKind, address: str
) -> None:
    location = resolve(target)
    assert (location.kind, location.address) == (kind, address)
    assert location.blob_root == str(home / "blobs")
    assert location.is_service is (kind is not LocationKind.POSTGRES)


@pytest.mark.parametrize("target", ["http://", "grpc://"])
def test_a_service_url_needs_a_host(target: str) -> None:
    with pytest.raises(InvalidArgumentError, match="names no host") as raised:
        resolve(target)
    assert raised.value.field == "target"


def test_the_field_is_the_callers(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        resolve("", field="catalog")
    assert raised.value.field == "catalog"
    with pytest.raises(InvalidArgumentError) as database:
        resolve_database("grpc://svc:8095")
    assert database.value.field == "database"
    assert resolve_database(str(tmp_path)).kind is LocationKind.SQLITE_FILE


def test_resolving_creates_nothing(tmp_path: Path) -> None:
    resolve(str(tmp_path / "new" / "folder"))
    resolve(f"sqlite:///{tmp_path}/other/x.db")
    assert list(tmp_path.iterdir()) == []


# --- opening and migrating ---


def test_open_repository_opens_sqlite_and_memory(tmp_path: Path) -> None:
    with open_repository(str(tmp_path / "cat")) as repository:
        assert isinstance(repository, SqliteRepository)
    assert (tmp_path / "cat" / "catalog.db").is_file()
    with open_repository(resolve("memory://")) as repository:
        assert isinstance(repository, SqliteRepository)


def test_open_repository_refuses_a_service_location() -> None:
    with pytest.raises(InvalidArgumentError, match="names a running service") as raised:
        open_repository(resolve("http://svc:8094"))
    assert raised.value.field == "database"


def test_open_repository_on_postgres_uses_the_pool_size(postgres_url: str) -> None:
    from taskcache.repositories.postgres import PostgresRepository

    upper = postgres_url.replace("postgresql://", "POSTGRESQL://", 1)
    repository = open_repository(upper, pool_size=3)
    try:
        assert isinstance(repository, PostgresRepository)
        assert repository._pool.max_size == 3
    finally:
        repository.close()


def test_open_async_repository_on_postgres(postgres_url: str) -> None:
    from taskcache.repositories.postgres_async import AsyncPostgresRepository

    async def open_and_close() -> int:
        with ThreadPoolExecutor(1) as executor:
            repository = await open_async_repository(postgres_url, executor=executor, pool_size=2)
            try:
                assert isinstance(repository, AsyncPostgresRepository)
                return repository._pool.max_size
            finally:
                await repository.close()

    assert asyncio.run(open_and_close()) == 2


def test_open_async_repository_runs_sqlite_on_the_executor(tmp_path: Path) -> None:
    async def round_trip() -> tuple[str | None, set[str]]:
        with ThreadPoolExecutor(1, thread_name_prefix="db-pool") as executor:
            repository = await open_async_repository(
                f"sqlite:///{tmp_path}/c.db", executor=executor
            )
            try:
                assert isinstance(repository, ThreadedRepository)
                await repository.ping()
                found = await repository.get_entry(Scope(), "absent")  # inline: no hop
                await repository.release_reservation(Scope(), "absent", "owner")
                return (None if found is None else found.key), {
                    thread.name for thread in threading.enumerate()
                }
            finally:
                await repository.close()

    found, threads = asyncio.run(round_trip())
    assert found is None
    assert any(name.startswith("db-pool") for name in threads)
    assert (tmp_path / "c.db").is_file()


def test_migrate_returns_the_schema_version(tmp_path: Path, postgres_url: str) -> None:
    assert migrate(f"sqlite:///{tmp_path}/m.db") == SCHEMA_VERSION
    assert (tmp_path / "m.db").is_file()
    from taskcache.repositories.postgres import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION

    assert migrate(postgres_url.replace("postgresql", "PostgreSQL", 1)) == POSTGRES_SCHEMA_VERSION


def test_missing_psycopg_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("taskcache.repositories.postgres", "taskcache.repositories.postgres_async"):
        monkeypatch.setitem(sys.modules, module, None)
    url = "postgresql://postgres@127.0.0.1/db"
    attempts: list[Callable[[], object]] = [
        lambda: open_repository(url),
        lambda: asyncio.run(open_async_repository(url, executor=ThreadPoolExecutor(1))),
        lambda: migrate(url),
        lambda: taskcache.open(url),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgumentError, match=r"pip install 'taskcache\[postgres\]'"):
            attempt()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://admin:s3cret@db:5432/c", "postgresql://admin:***@db:5432/c"),
        ("postgresql://a:p@ss@db/c", "postgresql://a:***@db/c"),
        ("postgresql://admin@db/c", "postgresql://admin@db/c"),
        ("postgresql://db:5432/c", "postgresql://db:5432/c"),
        ("/srv/catalog", "/srv/catalog"),
        ("postgresql://a:b@[::1/c", "postgresql://a:***@[::1/c"),
    ],
)
def test_redact_hides_passwords_only(url: str, shown: str) -> None:
    assert redact(url) == shown
