"""``taskcache.open``/``open_async``: validate the options and build the client.

Which catalog or service a target names is decided by :mod:`taskcache.resolver` alone; this
module only builds an embedded client on the repository it opens, a remote client for a
cache-service URL, or a DataCatalog client for a ``datacatalog(s)://`` URL.

It must not parse target strings (:mod:`taskcache.resolver` does) nor decide policy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypedDict, Unpack

from taskcache.clients.base import AsyncClient, Client
from taskcache.clients.embedded import (
    DEFAULT_INLINE_MAX_BYTES,
    AsyncEmbeddedClient,
    EmbeddedClient,
)
from taskcache.clients.reservation_cache import DEFAULT_MAX_OWNERS, ReservationCacheStore
from taskcache.deadlines import as_timeout
from taskcache.errors import InvalidArgumentError
from taskcache.keywords import check_names
from taskcache.manager import (
    DEFAULT_HEARTBEAT_GRACE_MULTIPLIER,
    DEFAULT_MAX_RESERVATION_HEARTBEAT,
    CacheManager,
    Clock,
    utc_now,
    validate_ttl,
)
from taskcache.resolver import Location, LocationKind, open_repository, resolve
from taskcache.storage import BlobStore

if TYPE_CHECKING:
    from taskcache.clients.datacatalog import DataCatalogRules
    from taskcache.clients.remote import RemoteRules
    from taskcache.clients.transports import RemoteOptions

OutputsMode = Literal["inline", "uri"]
_OUTPUTS_MODES: tuple[OutputsMode, ...] = ("inline", "uri")


def _duration(value: timedelta | float, field: str) -> timedelta:
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise InvalidArgumentError("must not be negative", field=field)
    return delta


@dataclass(frozen=True)
class _Options:
    """Validated options shared by the sync and async openers."""

    storage: str | None
    storage_options: dict[str, Any]
    max_cache_age: timedelta | None
    default_ttl: timedelta | None
    inline_max_bytes: int
    max_reservation_heartbeat: timedelta
    heartbeat_grace_multiplier: float
    reservation_cache_size: int
    clock: Clock
    timeout: float | None
    embedded_timeout: float | None
    max_retries: int
    ca_file: str | None
    client_cert: str | None
    client_key: str | None
    token: str | None
    scope: tuple[str, str, str] | None
    outputs: OutputsMode
    inline_given: bool


class OpenOptions(TypedDict, total=False):
    """Keyword options of :func:`open_catalog` and :func:`open_async_catalog`."""

    storage: str | None
    storage_options: Mapping[str, Any] | None
    max_cache_age: timedelta | float | None
    default_ttl: timedelta | float | None
    inline_max_bytes: int
    max_reservation_heartbeat: timedelta | float
    heartbeat_grace_multiplier: float
    reservation_cache_size: int
    clock: Clock
    timeout: float | timedelta | None
    max_retries: int
    ca_file: str | None
    client_cert: str | None
    client_key: str | None
    token: str | None
    scope: tuple[str, str, str] | None
    outputs: OutputsMode


# The default budget of a remote call (retries included) when ``open`` is given none.
DEFAULT_REMOTE_TIMEOUT = 30.0


def _options(given: OpenOptions) -> _Options:
    check_names(given, OpenOptions, "open()")
    inline_max_bytes = given.get("inline_max_bytes", DEFAULT_INLINE_MAX_BYTES)
    max_retries = given.get("max_retries", 5)
    # Embedded calls are unbounded unless asked (their waits are the store's own bounds), so
    # that the hot path does not pay for a deadline nobody set.
    embedded_timeout = as_timeout(given.get("timeout"))
    timeout = embedded_timeout if "timeout" in given else DEFAULT_REMOTE_TIMEOUT
    scope = given.get("scope")
    max_cache_age = given.get("max_cache_age")
    default_ttl = given.get("default_ttl")
    storage_options = given.get("storage_options")
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(f"storage_options must be a mapping, not {type(storage_options).__name__}")
    if inline_max_bytes < 0:
        raise InvalidArgumentError("must not be negative", field="inline_max_bytes")
    if max_retries < 0:
        raise InvalidArgumentError("must not be negative", field="max_retries")
    client_cert = given.get("client_cert")
    client_key = given.get("client_key")
    if (client_cert is None) != (client_key is None):
        raise InvalidArgumentError("client_cert and client_key go together", field="client_key")
    if scope is not None and (len(scope) != 3 or not all(scope)):
        raise InvalidArgumentError(
            "must be three non-empty names (org, project, domain)", field="scope"
        )
    outputs = given.get("outputs", "inline")
    if not isinstance(outputs, str):
        raise TypeError(f"outputs must be 'inline' or 'uri', not {type(outputs).__name__}")
    if outputs not in _OUTPUTS_MODES:
        raise InvalidArgumentError(f"must be 'inline' or 'uri', not {outputs!r}", field="outputs")
    if outputs == "uri" and inline_max_bytes > 0 and "inline_max_bytes" in given:
        raise InvalidArgumentError(
            "must be 0 (or left out) with outputs='uri': every put sends a URI",
            field="inline_max_bytes",
        )
    ttl = None if default_ttl is None else _duration(default_ttl, "default_ttl")
    validate_ttl(ttl, "default_ttl")
    return _Options(
        storage=given.get("storage"),
        storage_options=dict(storage_options or {}),
        max_cache_age=None if max_cache_age is None else _duration(max_cache_age, "max_cache_age"),
        default_ttl=ttl,
        inline_max_bytes=0 if outputs == "uri" else inline_max_bytes,
        max_reservation_heartbeat=_duration(
            given.get("max_reservation_heartbeat", DEFAULT_MAX_RESERVATION_HEARTBEAT),
            "max_reservation_heartbeat",
        ),
        heartbeat_grace_multiplier=given.get(
            "heartbeat_grace_multiplier", DEFAULT_HEARTBEAT_GRACE_MULTIPLIER
        ),
        reservation_cache_size=given.get("reservation_cache_size", DEFAULT_MAX_OWNERS),
        clock=given.get("clock", utc_now),
        timeout=timeout,
        embedded_timeout=embedded_timeout,
        max_retries=max_retries,
        ca_file=given.get("ca_file"),
        client_cert=client_cert,
        client_key=client_key,
        token=given.get("token"),
        scope=scope,
        outputs=outputs,
        inline_given="inline_max_bytes" in given,
    )


def _open_embedded(location: Location, options: _Options) -> EmbeddedClient:
    repository = open_repository(location, field="target")
    try:
        manager = CacheManager(
            repository,
            clock=options.clock,
            max_reservation_heartbeat=options.max_reservation_heartbeat,
            heartbeat_grace_multiplier=options.heartbeat_grace_multiplier,
            default_ttl=options.default_ttl,
        )
        blobs = _blobs(options, location)
        return EmbeddedClient(
            manager,
            blobs,
            max_cache_age=options.max_cache_age,
            inline_max_bytes=options.inline_max_bytes,
            reservation_cache_size=options.reservation_cache_size,
            scope=options.scope,
            timeout=options.embedded_timeout,
        )
    except BaseException:
        repository.close()
        raise


def _remote_rules(options: _Options, location: Location) -> RemoteRules:
    from taskcache.clients.remote import RemoteRules  # noqa: PLC0415

    if options.outputs == "uri" and options.storage is None:
        raise InvalidArgumentError(
            "outputs='uri' sends every output as a URI: give the storage its readers share "
            "(s3://..., gs://..., file:///shared/...)",
            field="storage",
        )
    return RemoteRules(
        _blobs(options, location),
        scope=options.scope,
        max_cache_age=options.max_cache_age,
        inline_max_bytes=options.inline_max_bytes,
        reservations=ReservationCacheStore(options.reservation_cache_size),
        default_ttl=options.default_ttl,
    )


def _datacatalog_rules(options: _Options, location: Location) -> DataCatalogRules:
    from taskcache.clients.datacatalog import DataCatalogRules  # noqa: PLC0415

    if options.outputs == "uri":
        raise InvalidArgumentError(
            "a DataCatalog stores output literals, not URIs; outputs='uri' is for cache services",
            field="outputs",
        )
    if options.inline_given:
        raise InvalidArgumentError(
            "a DataCatalog stores outputs itself; inline_max_bytes is for cache services",
            field="inline_max_bytes",
        )
    if options.scope is not None:
        raise InvalidArgumentError(
            "a DataCatalog files a task's entries under the task's own project and domain",
            field="scope",
        )
    if options.default_ttl is not None:
        raise InvalidArgumentError(
            "a DataCatalog keeps artifacts until they are evicted on the server; default_ttl "
            "is for catalogs and cache services",
            field="default_ttl",
        )
    return DataCatalogRules(
        _blobs(options, location),
        max_cache_age=options.max_cache_age,
        clock=options.clock,
        reservations=ReservationCacheStore(options.reservation_cache_size),
    )


def _blobs(options: _Options, location: Location) -> BlobStore:
    return BlobStore(options.storage or location.blob_root, **options.storage_options)


def _remote_options(options: _Options) -> RemoteOptions:
    from taskcache.clients.transports import RemoteOptions, RetryPolicy  # noqa: PLC0415

    return RemoteOptions(
        timeout=options.timeout,
        retry=RetryPolicy(max_retries=options.max_retries),
        ca_file=options.ca_file,
        client_cert=options.client_cert,
        client_key=options.client_key,
        token=options.token,
    )


def open_catalog(
    target: str | os.PathLike[str] | None = None, **options: Unpack[OpenOptions]
) -> Client:
    """Open a catalog and return a :class:`~taskcache.Client`.

    ``target`` (parsed by :func:`taskcache.resolver.resolve`, schemes case-insensitive):

    - None: the default embedded catalog (``$TASKCACHE_HOME`` or the platform data dir,
      holding ``catalog.db`` and ``blobs/``); a folder or ``*.db`` path;
      ``"sqlite:///abs/path.db"``; ``"memory://"`` (private, in-process);
    - ``"postgresql://..."``: an embedded client on PostgreSQL (no server);
    - ``"http(s)://host:8094"`` (Connect) or ``"grpc(s)://host:8095"`` (gRPC): a remote client
      of ``taskcache serve``. ``max_retries`` (on Unavailable, DeadlineExceeded and
      ResourceExhausted, with exponential backoff and jitter), ``ca_file`` (TLS),
      ``client_cert`` and ``client_key`` (PEM files, for mutual TLS), ``token`` (bearer) and
      ``scope`` ((org, project, domain); default: the key's) apply;
    - ``"datacatalog(s)://host:port"``: a client of a Flyte 1 DataCatalog (Flyte's own, or
      ``taskcache serve``'s gRPC port), calling it as flytepropeller does (see
      :mod:`taskcache.clients.datacatalog`). The service options but ``scope`` apply, and
      ``clock`` (the max-age check is the client's); outputs travel as literals, so
      ``inline_max_bytes`` and ``outputs`` do not.

    An empty string, an unknown scheme and ``host:port`` without a scheme are refused.

    Options (:class:`OpenOptions`): ``storage`` is the fsspec URL large outputs are written
    under (default: ``blobs/`` beside the database, or in the default home), e.g.
    ``s3://bucket/prefix``; ``storage_options`` what its fsspec filesystem needs (e.g.
    ``{"endpoint_url": ...}``; credentials otherwise come from the backend's environment);
    ``max_cache_age`` (None: never expire); ``default_ttl`` (the expiry of puts that name no
    ``ttl``; None: the catalog's, i.e. never embedded, the server's ``--default-ttl``
    remote); ``inline_max_bytes`` (64 KiB; 0 = always a blob);
    ``outputs`` (``"inline"``, the default: inline up to ``inline_max_bytes``; ``"uri"``:
    every output is written to ``storage``, which must then be given for a service, and sent
    by URI, as Flyte 2's own cache service requires); ``max_reservation_heartbeat`` (10 s);
    ``heartbeat_grace_multiplier`` (3); ``reservation_cache_size`` (10 000 owners);
    ``clock``; ``timeout``; ``max_retries`` (5); ``ca_file``; ``client_cert``;
    ``client_key``; ``token``; ``scope``.

    ``timeout`` (seconds or a timedelta; None: unbounded) is the default budget of every
    call, retries included, which a call's own ``timeout=`` overrides; when it passes the
    call raises DeadlineExceededError. Remote clients default to 30 s; embedded clients to
    none, their waits on database locks then being the store's own bounds (SQLite's 30 s
    busy timeout; PostgreSQL's 10 s pool wait and 30 s statement timeout).
    The embedded-only options ``clock``, ``max_reservation_heartbeat`` and
    ``heartbeat_grace_multiplier`` are the server's own settings for a remote target.
    Durations may be timedelta or seconds. Raises InvalidArgumentError for a bad target or
    option, UnavailableError if the database cannot be opened.
    """
    resolved = _options(options)
    location = resolve(target)
    if not location.is_service:
        return _open_embedded(location, resolved)
    if location.kind is LocationKind.DATACATALOG:
        from taskcache.clients.datacatalog import open_datacatalog  # noqa: PLC0415

        return open_datacatalog(
            location.address, _remote_options(resolved), _datacatalog_rules(resolved, location)
        )
    from taskcache.clients.remote import open_remote  # noqa: PLC0415

    return open_remote(
        location.address, _remote_options(resolved), _remote_rules(resolved, location)
    )


def open_async_catalog(
    target: str | os.PathLike[str] | None = None, **options: Unpack[OpenOptions]
) -> AsyncClient:
    """Like :func:`open_catalog`, returning the :class:`~taskcache.AsyncClient` twin."""
    resolved = _options(options)
    location = resolve(target)
    if not location.is_service:
        return AsyncEmbeddedClient(_open_embedded(location, resolved))
    if location.kind is LocationKind.DATACATALOG:
        from taskcache.clients.datacatalog import open_datacatalog_async  # noqa: PLC0415

        return open_datacatalog_async(
            location.address, _remote_options(resolved), _datacatalog_rules(resolved, location)
        )
    from taskcache.clients.remote import open_remote_async  # noqa: PLC0415

    return open_remote_async(
        location.address, _remote_options(resolved), _remote_rules(resolved, location)
    )
