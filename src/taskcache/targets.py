"""``taskcache.open``: turn a target (a folder, ``sqlite:///…``, ``memory://``) into a client."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import platformdirs

from taskcache.clients.base import AsyncClient, Client
from taskcache.clients.embedded import (
    DEFAULT_INLINE_MAX_BYTES,
    AsyncEmbeddedClient,
    EmbeddedClient,
)
from taskcache.errors import InvalidArgumentError
from taskcache.manager import (
    DEFAULT_HEARTBEAT_GRACE_MULTIPLIER,
    DEFAULT_MAX_RESERVATION_HEARTBEAT,
    CacheManager,
    Clock,
    utc_now,
)
from taskcache.repositories.base import Repository
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.reservation_cache import DEFAULT_MAX_OWNERS
from taskcache.storage import BlobStore

HOME_ENVIRONMENT_VARIABLE = "TASKCACHE_HOME"
DATABASE_FILE_NAME = "catalog.db"
BLOBS_FOLDER_NAME = "blobs"
_SQLITE_PREFIX = "sqlite://"
_MEMORY_TARGET = "memory://"
_DATABASE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def default_home() -> Path:
    """Return the embedded catalog's folder: ``$TASKCACHE_HOME``, else the user data dir."""
    configured = os.environ.get(HOME_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("taskcache"))


def _duration(value: timedelta | float, field: str) -> timedelta:
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise InvalidArgumentError("must not be negative", field=field)
    return delta


def _local_catalog(target: str | os.PathLike[str] | None) -> tuple[Repository, str]:
    """Return the repository for a local target and its default blob root."""
    if target is None:
        home = default_home()
        return SqliteRepository(home / DATABASE_FILE_NAME), str(home / BLOBS_FOLDER_NAME)
    text = os.fspath(target)
    if text == _MEMORY_TARGET:
        return SqliteRepository(None), f"memory://taskcache-{uuid.uuid4().hex}"
    if text.startswith(_SQLITE_PREFIX):
        database = Path(text.removeprefix(_SQLITE_PREFIX))
        if not database.name:
            raise InvalidArgumentError("names no database file", field="target")
        return SqliteRepository(database), str(database.parent / BLOBS_FOLDER_NAME)
    if text.startswith(("postgresql://", "postgres://")):
        # Imported here so that taskcache works without the postgres extra installed.
        try:
            from taskcache.repositories.postgres import PostgresRepository  # noqa: PLC0415
        except ImportError as error:
            raise InvalidArgumentError(
                "names a PostgreSQL database, but psycopg is not installed; "
                "install it with: pip install 'taskcache[postgres]'",
                field="target",
            ) from error
        # Blobs cannot live in the database: they default to the home folder's blobs/, and
        # callers normally pass storage=.
        return PostgresRepository(text), str(default_home() / BLOBS_FOLDER_NAME)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise InvalidArgumentError(
            f"unsupported scheme {scheme!r}; use a folder, sqlite:///path.db, "
            "postgresql://... or memory://",
            field="target",
        )
    path = Path(text).expanduser()
    if path.suffix in _DATABASE_SUFFIXES:
        return SqliteRepository(path), str(path.parent / BLOBS_FOLDER_NAME)
    return SqliteRepository(path / DATABASE_FILE_NAME), str(path / BLOBS_FOLDER_NAME)


def open_catalog(
    target: str | os.PathLike[str] | None = None,
    *,
    storage: str | None = None,
    max_cache_age: timedelta | float | None = None,
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
    max_reservation_heartbeat: timedelta | float = DEFAULT_MAX_RESERVATION_HEARTBEAT,
    heartbeat_grace_multiplier: float = DEFAULT_HEARTBEAT_GRACE_MULTIPLIER,
    reservation_cache_size: int = DEFAULT_MAX_OWNERS,
    clock: Clock = utc_now,
) -> Client:
    """Open a catalog and return a :class:`~taskcache.Client`.

    ``target``: None for the default embedded catalog (``$TASKCACHE_HOME`` or the platform
    data dir, holding ``catalog.db`` and ``blobs/``); ``"sqlite:///abs/path.db"``; a folder or
    ``*.db`` path; ``"memory://"`` for a private in-process catalog. ``storage`` is the fsspec
    URL large outputs are written under (default: ``blobs/`` beside the database). Durations
    may be given as timedelta or seconds. Raises InvalidArgumentError for a bad target or
    option, UnavailableError if the database cannot be opened.
    """
    if inline_max_bytes < 0:
        raise InvalidArgumentError("must not be negative", field="inline_max_bytes")
    max_age = None if max_cache_age is None else _duration(max_cache_age, "max_cache_age")
    heartbeat = _duration(max_reservation_heartbeat, "max_reservation_heartbeat")
    repository, default_storage = _local_catalog(target)
    try:
        manager = CacheManager(
            repository,
            clock=clock,
            max_reservation_heartbeat=heartbeat,
            heartbeat_grace_multiplier=heartbeat_grace_multiplier,
        )
        blobs = BlobStore(storage or default_storage)
        return EmbeddedClient(
            manager,
            blobs,
            max_cache_age=max_age,
            inline_max_bytes=inline_max_bytes,
            reservation_cache_size=reservation_cache_size,
        )
    except BaseException:
        repository.close()
        raise


def open_async_catalog(
    target: str | os.PathLike[str] | None = None,
    *,
    storage: str | None = None,
    max_cache_age: timedelta | float | None = None,
    inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
    max_reservation_heartbeat: timedelta | float = DEFAULT_MAX_RESERVATION_HEARTBEAT,
    heartbeat_grace_multiplier: float = DEFAULT_HEARTBEAT_GRACE_MULTIPLIER,
    reservation_cache_size: int = DEFAULT_MAX_OWNERS,
    clock: Clock = utc_now,
) -> AsyncClient:
    """Like :func:`open_catalog`, returning the :class:`~taskcache.AsyncClient` twin."""
    return AsyncEmbeddedClient(
        open_catalog(
            target,
            storage=storage,
            max_cache_age=max_cache_age,
            inline_max_bytes=inline_max_bytes,
            max_reservation_heartbeat=max_reservation_heartbeat,
            heartbeat_grace_multiplier=heartbeat_grace_multiplier,
            reservation_cache_size=reservation_cache_size,
            clock=clock,
        )
    )
