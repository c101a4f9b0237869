"""Turn the ``--database`` value into a repository: a synchronous
:class:`~taskcache.repositories.base.Repository` (:func:`open_repository`), or for PostgreSQL
on the server an :class:`~taskcache.repositories.base.AsyncRepository`
(:func:`open_async_repository`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from taskcache.errors import InvalidArgumentError
from taskcache.repositories.base import AsyncRepository, OperatorRepository
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.targets import DATABASE_FILE_NAME

_SQLITE_PREFIX: Final = "sqlite://"
_MEMORY_TARGET: Final = "memory://"
_POSTGRES_SCHEMES: Final = ("postgresql", "postgres")
_DATABASE_SUFFIXES: Final = (".db", ".sqlite", ".sqlite3")


def open_repository(database: str, *, pool_size: int = 10) -> OperatorRepository:
    """Return the repository for ``database``.

    Accepts a folder (its ``catalog.db``), a ``*.db``/``*.sqlite`` path, ``sqlite:///path.db``,
    ``memory://`` and ``postgresql://…`` (or ``postgres://…``, with at most ``pool_size``
    connections). Raises InvalidArgumentError (field ``database``) for anything else,
    UnavailableError if the store cannot be opened.
    """
    text = database.strip()
    if not text:
        raise InvalidArgumentError("must not be empty", field="database")
    scheme = _scheme(text)
    if scheme in _POSTGRES_SCHEMES:
        return _open_postgres(text, pool_size)
    if text == _MEMORY_TARGET:
        return SqliteRepository(None)
    if text.startswith(_SQLITE_PREFIX):
        path = Path(text.removeprefix(_SQLITE_PREFIX))
        if not path.name:
            raise InvalidArgumentError(f"{text!r} names no database file", field="database")
        return SqliteRepository(path)
    if scheme:
        raise InvalidArgumentError(
            f"unsupported scheme {scheme!r}; use a folder, sqlite:///path.db, memory:// "
            "or postgresql://…",
            field="database",
        )
    path = Path(text).expanduser()
    if path.suffix in _DATABASE_SUFFIXES:
        return SqliteRepository(path)
    return SqliteRepository(path / DATABASE_FILE_NAME)


def _scheme(text: str) -> str:
    return text.split("://", 1)[0].lower() if "://" in text else ""


def is_postgres(database: str) -> bool:
    """Whether ``database`` names a PostgreSQL database (``postgresql://…``/``postgres://…``)."""
    return _scheme(database.strip()) in _POSTGRES_SCHEMES


def _missing_postgres(error: ImportError) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"PostgreSQL support is not available ({error}); install 'taskcache[postgres]'",
        field="database",
    )


async def open_async_repository(database: str, *, pool_size: int = 10) -> AsyncRepository:
    """Return the asynchronous repository for the PostgreSQL URL ``database`` (at most
    ``pool_size`` connections), its schema migrated.

    Raises InvalidArgumentError (field ``database``) if ``database`` is not a PostgreSQL URL
    or psycopg is missing, UnavailableError if the database cannot be reached.
    """
    text = database.strip()
    if not is_postgres(text):
        raise InvalidArgumentError(f"{text!r} is not a PostgreSQL URL", field="database")
    try:
        from taskcache.repositories.postgres_async import (  # noqa: PLC0415
            AsyncPostgresRepository,
        )
    except ImportError as error:
        raise _missing_postgres(error) from error
    return await AsyncPostgresRepository.open(text, max_size=pool_size)


def _open_postgres(url: str, pool_size: int) -> OperatorRepository:
    # Imported lazily: psycopg is an optional extra and SQLite users never need it.
    try:
        from taskcache.repositories.postgres import PostgresRepository  # noqa: PLC0415
    except ImportError as error:
        raise _missing_postgres(error) from error
    # One connection per worker thread: more could never be used, fewer would make threads wait.
    return PostgresRepository(url, max_size=pool_size)


def redact(database: str) -> str:
    """Return ``database`` with any password in its URL replaced by ``***`` (for logs)."""
    if "://" not in database:
        return database
    parts = urlsplit(database)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return database
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
