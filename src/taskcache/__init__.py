"""taskcache: a memoization catalog for workflow tasks, with Flyte-identical cache keys.

``@taskcache.cached`` memoizes plain Python functions (values converted by
:mod:`taskcache.values`). ``taskcache.open()`` returns a :class:`Client` with Flyte's catalog
methods (get, put, update, get_or_extend_reservation, release_reservation,
get_reservation_cache, update_reservation_cache) plus delete and get_or_compute;
``taskcache.open_async()`` its async twin, on an embedded catalog, a ``taskcache serve`` or
a Flyte 1 DataCatalog (``datacatalog://``). On a local or PostgreSQL catalog (not a service
URL) the client is also an :class:`OperatorClient` (:class:`AsyncOperatorClient`):
``entries()``, ``stats()`` and ``clear()`` do from Python what ``taskcache ls``, ``stats`` and
``gc`` do from a shell.

The names exported here are what users construct (keys, metadata, output readers), receive
(entries, statuses, reservations, listing records and totals), catch (every error a client
raises) or type against (the :class:`Client`, :class:`AsyncClient`, :class:`OperatorClient`
and :class:`AsyncOperatorClient` protocols). Clients come only from :func:`open` and
:func:`open_async`: the classes behind them (embedded, Connect, gRPC) need parts that are not
public and are not exported. Cache keys are computed by :mod:`taskcache.hashing`.

It defines nothing itself: it hands on what users catch, construct or call, each name imported
from its module on first access (:data:`_LAZY`). ``import taskcache`` (and so every
``taskcache.<module>`` import, which runs this first) loads none of them: not protobuf and the
Flyte messages, the hashing core, the clients and repositories, nor ``cached`` and ``values``
(mashumaro only on the first dataclass conversion). ``from taskcache import Key`` loads
what ``Key`` needs. A name, once looked up, is an ordinary attribute of the package.
"""

import importlib
from typing import TYPE_CHECKING, Any

from taskcache._version import __version__

if TYPE_CHECKING:
    from taskcache import hashing as hashing  # re-exported, not in __all__ (see _LAZY)
    from taskcache import values
    from taskcache.clients.base import AsyncClient, AsyncOperatorClient, Client, OperatorClient
    from taskcache.decorator import cached
    from taskcache.errors import (
        AlreadyExistsError,
        CacheError,
        DeadlineExceededError,
        FailedPreconditionError,
        InternalError,
        InvalidArgumentError,
        NotFoundError,
        PermissionDeniedError,
        ResourceExhaustedError,
        UnauthenticatedError,
        UnavailableError,
    )
    from taskcache.model import (
        CatalogEntry,
        Entry,
        InputReader,
        Key,
        Metadata,
        Reservation,
        ReservationCache,
    )
    from taskcache.outputs import InMemoryOutputReader, OutputReader, UriOutputReader
    from taskcache.repositories.base import CatalogStats, ProjectStats
    from taskcache.status import CacheStatus, ReservationStatus, Status
    from taskcache.targets import open_async_catalog as open_async
    from taskcache.targets import open_catalog as open


def _names(module: str, names: str) -> dict[str, tuple[str, str | None]]:
    return {name: (module, name) for name in names.split()}


# Public name -> (module, attribute, or None for the module itself), imported on first access.
_LAZY: dict[str, tuple[str, str | None]] = {
    **_names("taskcache.clients.base", "AsyncClient AsyncOperatorClient Client OperatorClient"),
    **_names(
        "taskcache.errors",
        "AlreadyExistsError CacheError DeadlineExceededError FailedPreconditionError InternalError"
        " InvalidArgumentError NotFoundError PermissionDeniedError ResourceExhaustedError"
        " UnauthenticatedError UnavailableError",
    ),
    **_names(
        "taskcache.model",
        "CatalogEntry Entry InputReader Key Metadata Reservation ReservationCache",
    ),
    **_names("taskcache.outputs", "InMemoryOutputReader OutputReader UriOutputReader"),
    **_names("taskcache.repositories.base", "CatalogStats ProjectStats"),
    **_names("taskcache.status", "CacheStatus ReservationStatus Status"),
    "cached": ("taskcache.decorator", "cached"),
    # Not in __all__, but documented as ``taskcache.hashing.<function>`` after ``import
    # taskcache`` (which loaded it when the package imported its clients eagerly).
    "hashing": ("taskcache.hashing", None),
    "open": ("taskcache.targets", "open_catalog"),
    "open_async": ("taskcache.targets", "open_async_catalog"),
    "values": ("taskcache.values", None),
}


def __getattr__(name: str) -> Any:
    """Return the lazily imported public name ``name``; AttributeError for any other."""
    if name not in _LAZY:
        raise AttributeError(f"module 'taskcache' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    found = module if attribute is None else getattr(module, attribute)
    # Cached in the namespace: later look-ups are plain attribute reads.
    globals()[name] = found
    return found


def __dir__() -> list[str]:
    """Return the module's names, the lazily imported ones included."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AlreadyExistsError",
    "AsyncClient",
    "AsyncOperatorClient",
    "CacheError",
    "CacheStatus",
    "CatalogEntry",
    "CatalogStats",
    "Client",
    "DeadlineExceededError",
    "Entry",
    "FailedPreconditionError",
    "InMemoryOutputReader",
    "InputReader",
    "InternalError",
    "InvalidArgumentError",
    "Key",
    "Metadata",
    "NotFoundError",
    "OperatorClient",
    "OutputReader",
    "PermissionDeniedError",
    "ProjectStats",
    "Reservation",
    "ReservationCache",
    "ReservationStatus",
    "ResourceExhaustedError",
    "Status",
    "UnauthenticatedError",
    "UnavailableError",
    "UriOutputReader",
    "__version__",
    "cached",
    "open",
    "open_async",
    "values",
]
