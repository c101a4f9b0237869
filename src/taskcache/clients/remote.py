"""Remote clients: the same Client (and AsyncClient) API, served by ``taskcache serve``.

The key is computed here (Flyte-identical hashing); outputs go inline when small or are
written to this client's storage and sent by URI; hits are read back through fsspec. Request
building and response reading are shared by the sync and async clients; only the I/O differs.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, timedelta
from types import TracebackType
from typing import Any, Protocol, Self

from flyteidl2.cacheservice import cacheservice_pb2 as base
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2

from taskcache import hashing
from taskcache.clients import transports
from taskcache.clients.payload import (
    Outputs,
    Payload,
    abandon_put,
    prepare_payload,
    read_payload,
)
from taskcache.clients.transports import Rpc
from taskcache.errors import NotFoundError, UnavailableError
from taskcache.manager import is_stale, utc_now, validate_owner
from taskcache.model import Entry, Key, Metadata, Reservation, ReservationCache, Status
from taskcache.outputs import InMemoryOutputReader
from taskcache.provenance import (
    as_identifier,
    hit_status,
    key_map_for,
    populated_status,
)
from taskcache.reservation_cache import DEFAULT_MAX_OWNERS, ReservationCacheStore
from taskcache.storage import BlobStore

Scope = tuple[str, str, str]


class SyncTransport(Protocol):
    """What :class:`RemoteClient` needs from a transport."""

    def send(self, rpc: Rpc, request: Any) -> Any:
        """Send one request and return the response."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AsyncTransport(Protocol):
    """What :class:`AsyncRemoteClient` needs from a transport."""

    async def send(self, rpc: Rpc, request: Any) -> Any:
        """Send one request and return the response."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class _RemoteRules:
    """The request building and response reading both remote clients share."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        scope: Scope | None,
        max_cache_age: timedelta | None,
        inline_max_bytes: int,
        reservation_cache_size: int,
    ) -> None:
        self.blobs = blobs
        self.scope = scope
        self.max_cache_age = max_cache_age
        self.inline_max_bytes = inline_max_bytes
        self.reservations = ReservationCacheStore(reservation_cache_size)

    def identifier(self, key: Key) -> v2.Identifier:
        org, project, domain = self.scope if self.scope is not None else key.scope
        return v2.Identifier(org=org, project=project, domain=domain)

    def get_request(self, key: Key) -> v2.GetCacheRequest:
        return v2.GetCacheRequest(
            base_request=base.GetCacheRequest(key=hashing.cache_key(key)),
            identifier=self.identifier(key),
        )

    def check_fresh(self, key: Key, response: base.GetCacheResponse) -> None:
        """Raise NotFoundError if the entry is older than ``max_cache_age``."""
        metadata = response.output.metadata
        if metadata.HasField("last_updated_at") and is_stale(
            metadata.last_updated_at.ToDatetime(tzinfo=UTC), utc_now(), self.max_cache_age
        ):
            raise NotFoundError(f"cache entry for key {hashing.cache_key(key)!r} is too old")

    def read_hit(self, key: Key, response: base.GetCacheResponse) -> Entry:
        """Turn a Get response into an Entry; NotFoundError only if its blob vanished."""
        output = response.output
        metadata = output.metadata
        kind = output.WhichOneof("output")
        literals = output.output_literals.SerializeToString() if kind == "output_literals" else None
        uri = output.output_uri if kind == "output_uri" else None
        outputs = read_payload(literals, uri, key=hashing.cache_key(key))
        return Entry(
            outputs=InMemoryOutputReader(outputs, uri=uri),
            status=hit_status(metadata.source_identifier, dict(metadata.key_map.values)),
        )

    def put_request(
        self, key: Key, payload: Payload, metadata: Metadata | None, *, overwrite: bool
    ) -> v2.PutCacheRequest:
        cached = base.CachedOutput(
            metadata=base.Metadata(
                source_identifier=as_identifier(key.identifier),
                key_map=base.KeyMapMetadata(values=key_map_for(metadata)),
            )
        )
        if payload.output_literals is not None:
            cached.output_literals.ParseFromString(payload.output_literals)
        else:
            cached.output_uri = payload.output_uri or ""
        created_at = metadata.created_at if metadata is not None else None
        cached.metadata.created_at.FromDatetime(created_at or utc_now())
        # The server deletes a replaced blob only if it lies under the storage root it owns,
        # so an update does not leave the previous outputs behind.
        overwrite_output = base.OverwriteOutput(overwrite=overwrite, delete_blob=True)
        if self.max_cache_age is not None and not overwrite:
            # An entry older than max_cache_age misses on get, so a put may replace it.
            overwrite_output.max_age.FromTimedelta(self.max_cache_age)
        return v2.PutCacheRequest(
            base_request=base.PutCacheRequest(
                key=hashing.cache_key(key), output=cached, overwrite=overwrite_output
            ),
            identifier=self.identifier(key),
        )

    def delete_request(self, key: Key) -> v2.DeleteCacheRequest:
        return v2.DeleteCacheRequest(
            base_request=base.DeleteCacheRequest(key=hashing.cache_key(key)),
            identifier=self.identifier(key),
        )

    def reservation_request(
        self, key: Key, owner_id: str, heartbeat_interval: timedelta
    ) -> v2.GetOrExtendReservationRequest:
        validate_owner(owner_id)
        request = v2.GetOrExtendReservationRequest(
            base_request=base.GetOrExtendReservationRequest(
                key=hashing.cache_key(key), owner_id=owner_id
            ),
            identifier=self.identifier(key),
        )
        request.base_request.heartbeat_interval.FromTimedelta(heartbeat_interval)
        return request

    def release_request(self, key: Key, owner_id: str) -> v2.ReleaseReservationRequest:
        validate_owner(owner_id)
        return v2.ReleaseReservationRequest(
            base_request=base.ReleaseReservationRequest(
                key=hashing.cache_key(key), owner_id=owner_id
            ),
            identifier=self.identifier(key),
        )


class RemoteClient:
    """A :class:`~taskcache.Client` talking to a cache service over Connect or gRPC."""

    def __init__(self, transport: SyncTransport, rules: _RemoteRules) -> None:
        self._transport = transport
        self._rules = rules
        self._closed = False
        self._lock = threading.Lock()

    def _send(self, rpc: Rpc, request: Any) -> Any:
        # A closed transport would raise its own error type (gRPC) or quietly reconnect
        # (Connect); every client refuses calls once closed, with a CacheError.
        if self._closed:
            raise UnavailableError("the client is closed")
        return self._transport.send(rpc, request)

    def get(self, key: Key) -> Entry:
        """Return the entry for ``key``; NotFoundError on a miss, on an entry older than
        ``max_cache_age`` and on one whose blob vanished (that entry is deleted).
        """
        response = self._send(transports.GET, self._rules.get_request(key))
        self._rules.check_fresh(key, response)
        try:
            return self._rules.read_hit(key, response)
        except NotFoundError:
            self._forget_dangling(key)
            raise

    def _forget_dangling(self, key: Key) -> None:
        with contextlib.suppress(NotFoundError):
            self._send(transports.DELETE, self._rules.delete_request(key))

    def put(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """Create the entry; AlreadyExistsError if a live one exists (errors carry a
        CACHE_PUT_FAILURE status).
        """
        return self._write(key, outputs, metadata, overwrite=False)

    def update(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """Create or overwrite the entry (errors carry a CACHE_PUT_FAILURE status)."""
        return self._write(key, outputs, metadata, overwrite=True)

    def _write(
        self, key: Key, outputs: Outputs, metadata: Metadata | None, *, overwrite: bool
    ) -> Status:
        payload: Payload | None = None
        try:
            cache_key = hashing.cache_key(key)
            payload = prepare_payload(
                cache_key, outputs, self._rules.blobs, self._rules.inline_max_bytes
            )
            request = self._rules.put_request(key, payload, metadata, overwrite=overwrite)
            self._send(transports.PUT, request)
        except Exception as error:
            abandon_put(key, payload, self._rules.blobs, error)
        return populated_status(key.identifier, metadata)

    def delete(self, key: Key) -> None:
        """Delete the entry; NotFoundError if absent."""
        self._send(transports.DELETE, self._rules.delete_request(key))

    def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: timedelta
    ) -> Reservation:
        """Acquire or extend ``owner_id``'s reservation, or return the current holder's."""
        request = self._rules.reservation_request(key, owner_id, heartbeat_interval)
        response = self._send(transports.GET_OR_EXTEND_RESERVATION, request)
        return Reservation.from_proto(response.reservation)

    def release_reservation(self, key: Key, owner_id: str) -> None:
        """Release ``owner_id``'s reservation; a no-op if it holds none."""
        self._send(transports.RELEASE_RESERVATION, self._rules.release_request(key, owner_id))

    def get_reservation_cache(self, owner_id: str) -> ReservationCache:
        """Return what this client remembers of ``owner_id``'s last reservation attempt."""
        return self._rules.reservations.get(owner_id)

    def update_reservation_cache(self, owner_id: str, entry: ReservationCache) -> None:
        """Remember ``entry`` for ``owner_id`` (bounded, least recently used forgotten first)."""
        self._rules.reservations.put(owner_id, entry)

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRemoteClient:
    """The asynchronous twin of :class:`RemoteClient`."""

    def __init__(self, transport: AsyncTransport, rules: _RemoteRules) -> None:
        self._transport = transport
        self._rules = rules
        self._closed = False

    async def _send(self, rpc: Rpc, request: Any) -> Any:
        # See RemoteClient._send.
        if self._closed:
            raise UnavailableError("the client is closed")
        return await self._transport.send(rpc, request)

    async def get(self, key: Key) -> Entry:
        """See :meth:`RemoteClient.get`."""
        response = await self._send(transports.GET, self._rules.get_request(key))
        self._rules.check_fresh(key, response)
        try:
            return self._rules.read_hit(key, response)
        except NotFoundError:
            await self._forget_dangling(key)
            raise

    async def _forget_dangling(self, key: Key) -> None:
        with contextlib.suppress(NotFoundError):
            await self._send(transports.DELETE, self._rules.delete_request(key))

    async def put(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """See :meth:`RemoteClient.put`."""
        return await self._write(key, outputs, metadata, overwrite=False)

    async def update(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """See :meth:`RemoteClient.update`."""
        return await self._write(key, outputs, metadata, overwrite=True)

    async def _write(
        self, key: Key, outputs: Outputs, metadata: Metadata | None, *, overwrite: bool
    ) -> Status:
        payload: Payload | None = None
        try:
            cache_key = hashing.cache_key(key)
            payload = prepare_payload(
                cache_key, outputs, self._rules.blobs, self._rules.inline_max_bytes
            )
            request = self._rules.put_request(key, payload, metadata, overwrite=overwrite)
            await self._send(transports.PUT, request)
        except Exception as error:
            abandon_put(key, payload, self._rules.blobs, error)
        return populated_status(key.identifier, metadata)

    async def delete(self, key: Key) -> None:
        """See :meth:`RemoteClient.delete`."""
        await self._send(transports.DELETE, self._rules.delete_request(key))

    async def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: timedelta
    ) -> Reservation:
        """See :meth:`RemoteClient.get_or_extend_reservation`."""
        request = self._rules.reservation_request(key, owner_id, heartbeat_interval)
        response = await self._send(transports.GET_OR_EXTEND_RESERVATION, request)
        return Reservation.from_proto(response.reservation)

    async def release_reservation(self, key: Key, owner_id: str) -> None:
        """See :meth:`RemoteClient.release_reservation`."""
        await self._send(transports.RELEASE_RESERVATION, self._rules.release_request(key, owner_id))

    async def get_reservation_cache(self, owner_id: str) -> ReservationCache:
        """See :meth:`RemoteClient.get_reservation_cache`."""
        return self._rules.reservations.get(owner_id)

    async def update_reservation_cache(self, owner_id: str, entry: ReservationCache) -> None:
        """See :meth:`RemoteClient.update_reservation_cache`."""
        self._rules.reservations.put(owner_id, entry)

    async def close(self) -> None:
        """Close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _rules(
    storage: str,
    scope: Scope | None,
    max_cache_age: timedelta | None,
    inline_max_bytes: int,
    reservation_cache_size: int,
) -> _RemoteRules:
    return _RemoteRules(
        BlobStore(storage),
        scope=scope,
        max_cache_age=max_cache_age,
        inline_max_bytes=inline_max_bytes,
        reservation_cache_size=reservation_cache_size,
    )


def open_remote(
    url: str,
    *,
    storage: str,
    options: transports.RemoteOptions,
    scope: Scope | None = None,
    max_cache_age: timedelta | None = None,
    inline_max_bytes: int,
    reservation_cache_size: int = DEFAULT_MAX_OWNERS,
) -> RemoteClient:
    """Return a RemoteClient for an ``http(s)://`` (Connect) or ``grpc(s)://`` URL."""
    transport: SyncTransport = (
        transports.GrpcTransport(url, options)
        if url.split("://", 1)[0] in transports.GRPC_SCHEMES
        else transports.ConnectTransport(url, options)
    )
    return RemoteClient(
        transport, _rules(storage, scope, max_cache_age, inline_max_bytes, reservation_cache_size)
    )


def open_remote_async(
    url: str,
    *,
    storage: str,
    options: transports.RemoteOptions,
    scope: Scope | None = None,
    max_cache_age: timedelta | None = None,
    inline_max_bytes: int,
    reservation_cache_size: int = DEFAULT_MAX_OWNERS,
) -> AsyncRemoteClient:
    """Return an AsyncRemoteClient for an ``http(s)://`` or ``grpc(s)://`` URL."""
    transport: AsyncTransport = (
        transports.AsyncGrpcTransport(url, options)
        if url.split("://", 1)[0] in transports.GRPC_SCHEMES
        else transports.AsyncConnectTransport(url, options)
    )
    return AsyncRemoteClient(
        transport, _rules(storage, scope, max_cache_age, inline_max_bytes, reservation_cache_size)
    )
