"""The one place that turns a target or ``--database`` string into a location and a repository.

``taskcache.open``/``open_async``, ``taskcache serve``, ``taskcache migrate`` and every operator
command go through :func:`resolve` (or :func:`resolve_database`) and :func:`open_repository`,
so they accept and refuse exactly the same strings with the same messages.

Accepted forms (scheme names are case-insensitive):

- None: the default catalog, ``catalog.db`` in :func:`taskcache.home.default_home`;
- a folder (its ``catalog.db``) or a ``*.db``/``*.sqlite``/``*.sqlite3`` file, ``~`` expanded;
  an ``os.PathLike`` is always such a path;
- ``sqlite:///abs/x.db`` and ``sqlite:////abs/x.db`` (both the absolute file ``/abs/x.db``);
  ``sqlite://rel/x.db`` is ``rel/x.db`` relative to the current directory, as it always was;
- ``memory://``: a private in-process catalog;
- ``postgresql://…`` or ``postgres://…``: a PostgreSQL database;
- ``http(s)://host:port`` (Connect) and ``grpc(s)://host:port`` (gRPC): a running
  ``taskcache serve``; ``datacatalog(s)://host:port``: a Flyte 1 DataCatalog (gRPC; Flyte's
  own or ``taskcache serve``). Only :func:`resolve` accepts these (clients), never
  :func:`resolve_database` (``serve``, ``migrate``, operator commands).

Refused, always with :class:`~taskcache.errors.InvalidArgumentError`: an empty or blank
string, an unknown scheme, ``host:port`` without a scheme (it would otherwise become a folder
of that name; ``./host:port`` still names one), and a ``sqlite://`` URL naming no file.

This module parses and opens; it must not validate client options, build clients or managers,
or touch the filesystem while resolving (only opening a SQLite repository creates its folder).
"""

from __future__ import annotations

import enum
import os
import re
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from taskcache.errors import InvalidArgumentError
from taskcache.extras import requires_extra
from taskcache.home import BLOBS_FOLDER_NAME, DATABASE_FILE_NAME, default_home
from taskcache.repositories.base import AsyncRepository, OperatorRepository

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from taskcache.repositories.datacatalog_base import DatacatalogRepository

__all__ = [
    "DATABASE_FORMS",
    "TARGET_FORMS",
    "Location",
    "LocationKind",
    "migrate",
    "open_async_repository",
    "open_datacatalog_repository",
    "open_repository",
    "redact",
    "resolve",
    "resolve_database",
]

DATABASE_FORMS: Final = (
    "a folder, a *.db/*.sqlite/*.sqlite3 file, sqlite:///abs/path.db, memory:// "
    "or postgresql://user@host/db"
)
TARGET_FORMS: Final = (
    f"{DATABASE_FORMS}, or a running service: http(s)://host:port (Connect), "
    "grpc(s)://host:port (gRPC) or datacatalog(s)://host:port (a Flyte 1 DataCatalog)"
)


class LocationKind(enum.Enum):
    """What a resolved location names."""

    SQLITE_FILE = "sqlite"
    MEMORY = "memory"
    POSTGRES = "postgresql"
    CONNECT = "connect"
    GRPC = "grpc"
    DATACATALOG = "datacatalog"


_SERVICE_KINDS: Final = frozenset(
    {LocationKind.CONNECT, LocationKind.GRPC, LocationKind.DATACATALOG}
)
_SCHEME_KINDS: Final = {
    "postgresql": LocationKind.POSTGRES,
    "postgres": LocationKind.POSTGRES,
    "http": LocationKind.CONNECT,
    "https": LocationKind.CONNECT,
    "grpc": LocationKind.GRPC,
    "grpcs": LocationKind.GRPC,
    "datacatalog": LocationKind.DATACATALOG,
    "datacatalogs": LocationKind.DATACATALOG,
}
_DATABASE_SUFFIXES: Final = (".db", ".sqlite", ".sqlite3")
_MEMORY_ADDRESS: Final = "memory://"
# RFC 3986 scheme syntax; anything else containing "://" is left to be a path.
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# host:port (optionally /path) with no scheme: an IPv4 address, a name or a bracketed IPv6
# address. A path with a separator before the colon (./host:1, /srv/x:1) never matches.
_HOST_PORT: Final = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}(/.*)?$")


@dataclass(frozen=True)
class Location:
    """A parsed target: what it names and where its blobs go by default.

    ``address``: for a SQLite file its path; for ``memory://`` that string; otherwise the URL,
    its scheme lower-cased (libpq and the remote clients match schemes case-sensitively).
    ``blob_root``: the default fsspec root for large outputs — ``blobs/`` beside a SQLite file,
    a private ``memory://taskcache-<uuid>`` for ``memory://``, and ``<home>/blobs`` for
    PostgreSQL and services (whose blobs cannot live in the database).
    """

    kind: LocationKind
    address: str
    blob_root: str

    @property
    def is_service(self) -> bool:
        """Whether this names a running ``taskcache serve`` rather than a database."""
        return self.kind in _SERVICE_KINDS


def resolve(target: str | os.PathLike[str] | None, *, field: str = "target") -> Location:
    """Return the location ``target`` names, databases and running services alike.

    See the module docstring for the accepted forms. Nothing is opened or created. Raises
    InvalidArgumentError (with ``field``) for an empty string, an unknown scheme,
    ``host:port`` without a scheme, or a ``sqlite://`` URL naming no file.
    """
    return _parse(target, field, services=True)


def resolve_database(
    database: str | os.PathLike[str] | None, *, field: str = "database"
) -> Location:
    """Like :func:`resolve`, for the entry points that take a database (``serve``,
    ``migrate``, operator commands): also raises InvalidArgumentError for a service URL.
    """
    return _parse(database, field, services=False)


def _parse(target: str | os.PathLike[str] | None, field: str, *, services: bool) -> Location:
    if target is None:
        return _file(default_home() / DATABASE_FILE_NAME)
    if not isinstance(target, str):
        return _path(Path(os.fspath(target)).expanduser())
    forms = TARGET_FORMS if services else DATABASE_FORMS
    text = target.strip()
    if not text:
        fix = (
            "for a running service use http://host:8094 for Connect or grpc://host:8095 for "
            f"gRPC; for the default catalog pass None; otherwise {DATABASE_FORMS}"
            if services
            else f"expected {forms}"
        )
        raise InvalidArgumentError(f"must not be empty: {fix}", field=field)
    match = _SCHEME.match(text)
    if match is None:
        if _HOST_PORT.match(text):
            raise InvalidArgumentError(_host_port_hint(text, services=services), field=field)
        return _path(Path(text).expanduser())
    scheme, rest = match.group(1).lower(), text[match.end() :]
    if scheme == "sqlite":
        return _sqlite_url(rest, text, field)
    if scheme == "memory":
        if rest:
            raise InvalidArgumentError(f"{text!r}: memory:// takes no path", field=field)
        return Location(
            LocationKind.MEMORY, _MEMORY_ADDRESS, f"memory://taskcache-{uuid.uuid4().hex}"
        )
    kind = _SCHEME_KINDS.get(scheme)
    if kind is None:
        raise InvalidArgumentError(f"unsupported scheme {scheme!r}; expected {forms}", field=field)
    url = f"{scheme}://{rest}"
    if kind in _SERVICE_KINDS:
        if not services:
            raise InvalidArgumentError(
                f"{text!r} names a running service; --database takes a database: "
                f"{DATABASE_FORMS} (clients reach a service with taskcache.open({text!r}))",
                field=field,
            )
        if not urlsplit(url).netloc:
            raise InvalidArgumentError(f"{text!r} names no host", field=field)
    return Location(kind, url, str(default_home() / BLOBS_FOLDER_NAME))


def _host_port_hint(text: str, *, services: bool) -> str:
    service = (
        f"http://{text} (Connect) or grpc://{text} (gRPC) for a running service, "
        if services
        else ""
    )
    database = text if "/" in text else f"{text}/DBNAME"
    return (
        f"{text!r} looks like host:port without a scheme; write {service}"
        f"postgresql://{database} for a PostgreSQL database, or ./{text} for a folder of that name"
    )


def _sqlite_url(rest: str, text: str, field: str) -> Location:
    # sqlite:///abs/x.db and sqlite:////abs/x.db both name /abs/x.db; without a leading slash
    # the path is relative to the current directory.
    path = Path("/" + rest.lstrip("/")) if rest.startswith("/") else Path(rest).expanduser()
    if not path.name or rest.endswith("/") or path.name in (".", ".."):
        raise InvalidArgumentError(f"{text!r} names no database file", field=field)
    return _file(path)


def _path(path: Path) -> Location:
    return _file(path if path.suffix in _DATABASE_SUFFIXES else path / DATABASE_FILE_NAME)


def _file(database: Path) -> Location:
    return Location(
        LocationKind.SQLITE_FILE, str(database), str(database.parent / BLOBS_FOLDER_NAME)
    )


def _database_location(database: Location | str | os.PathLike[str] | None, field: str) -> Location:
    """Return ``database`` resolved (if text) and checked to name a database, not a service."""
    if not isinstance(database, Location):
        return resolve_database(database, field=field)
    if database.is_service:
        raise InvalidArgumentError(
            f"{database.address!r} names a running service, not a database", field=field
        )
    return database


def _sqlite_file(location: Location) -> Path | None:
    """Return the database file of a SQLite ``location``; None for ``memory://`` (a private
    in-memory database, as the SQLite repositories take it).
    """
    return None if location.kind is LocationKind.MEMORY else Path(location.address)


def _postgres_extra(field: str) -> AbstractContextManager[None]:
    """The block importing a PostgreSQL repository: psycopg missing is InvalidArgumentError."""
    return requires_extra("a PostgreSQL database", "postgres", field=field)


def open_repository(
    database: Location | str | os.PathLike[str] | None,
    *,
    pool_size: int = 10,
    field: str = "database",
) -> OperatorRepository:
    """Open and return the synchronous repository of ``database`` (its schema migrated).

    ``database`` is a :class:`Location` or anything :func:`resolve_database` takes.
    PostgreSQL gets a pool of at most ``pool_size`` connections; SQLite ignores it. Raises
    InvalidArgumentError (with ``field``) for an unusable value, a service URL or PostgreSQL
    without psycopg installed; UnavailableError if the database cannot be opened;
    InternalError if its schema is newer than this taskcache.
    """
    location = _database_location(database, field)
    if location.kind is LocationKind.POSTGRES:
        # Imported here: psycopg is an optional extra that SQLite users never need.
        with _postgres_extra(field):
            from taskcache.repositories.postgres import PostgresRepository  # noqa: PLC0415
        return PostgresRepository(location.address, max_size=pool_size)
    # Imported on first open: `import taskcache` need not load sqlite3 and the SQLite schema.
    from taskcache.repositories.sqlite import SqliteRepository  # noqa: PLC0415

    return SqliteRepository(_sqlite_file(location))


def open_datacatalog_repository(
    database: Location | str | os.PathLike[str] | None,
    *,
    pool_size: int = 10,
    field: str = "database",
) -> DatacatalogRepository:
    """Open and return the DataCatalog repository of ``database`` (its schema migrated):
    the datasets, artifacts and tags Flyte 1's DataCatalog service stores there.

    Takes and raises what :func:`open_repository` does. A ``memory://`` database is private
    to the returned object, as every ``memory://`` repository is.
    """
    # Imported here: only the server and the artifacts commands need them, and
    # `import taskcache` must not pay for them (nor for the asyncio they import).
    from taskcache.repositories.datacatalog_sqlite import (  # noqa: PLC0415
        SqliteDatacatalogRepository,
    )

    location = _database_location(database, field)
    if location.kind is LocationKind.POSTGRES:
        with _postgres_extra(field):
            from taskcache.repositories.datacatalog_postgres import (  # noqa: PLC0415
                PostgresDatacatalogRepository,
            )
        return PostgresDatacatalogRepository(location.address, max_size=pool_size)
    return SqliteDatacatalogRepository(_sqlite_file(location))


async def open_async_repository(
    database: Location | str | os.PathLike[str] | None,
    *,
    executor: Executor,
    pool_size: int = 10,
    field: str = "database",
) -> AsyncRepository:
    """Open and return the asynchronous repository of ``database`` (its schema migrated).

    PostgreSQL: asyncpg sessions, at most ``pool_size``, on the running loop.
    SQLite (a file or ``memory://``): the synchronous repository, its calls run on
    ``executor``'s threads (:class:`~taskcache.repositories.threaded.ThreadedRepository`).
    Raises InvalidArgumentError (with ``field``) for an unusable value, a service URL, or
    PostgreSQL without its drivers; UnavailableError if the database cannot be reached;
    InternalError if its schema is newer than this taskcache.
    """
    location = _database_location(database, field)
    if location.kind is LocationKind.POSTGRES:
        with _postgres_extra(field):
            from taskcache.repositories.postgres_async import (  # noqa: PLC0415
                AsyncPostgresRepository,
            )
        return await AsyncPostgresRepository.open(location.address, max_size=pool_size)
    # Imported here, where a loop runs, not with this module: `import taskcache` needs neither.
    import asyncio  # noqa: PLC0415

    from taskcache.repositories.threaded import ThreadedRepository  # noqa: PLC0415

    # Opening SQLite creates and migrates the file: off the event loop.
    repository = await asyncio.to_thread(open_repository, location, pool_size=pool_size)
    return ThreadedRepository(repository, executor)


def migrate(database: Location | str | os.PathLike[str] | None, *, field: str = "database") -> int:
    """Create or upgrade the schema of ``database``; return the schema version afterwards.

    PostgreSQL goes through :func:`taskcache.repositories.postgres.migrate` (one connection,
    under an advisory lock); SQLite migrates by being opened. Idempotent. Raises like
    :func:`open_repository`.
    """
    location = _database_location(database, field)
    if location.kind is LocationKind.POSTGRES:
        with _postgres_extra(field):
            from taskcache.repositories.postgres import migrate as migrate_postgres  # noqa: PLC0415
        return migrate_postgres(location.address)
    # Opening applies any missing migration, and raises if the file is at another version.
    open_repository(location, field=field).close()
    from taskcache.repositories.sqlite import SCHEMA_VERSION  # noqa: PLC0415

    return SCHEMA_VERSION


# scheme://user:password@host...: the password runs to the last "@" before the path.
_PASSWORD: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#]*@")


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and messages).

    Text without ``scheme://user:password@`` comes back unchanged. Never raises.
    """
    return _PASSWORD.sub(r"\1:***@", url, count=1)
