"""Remote clients: the same Client (and AsyncClient) API, served by ``taskcache serve``.

The key is computed here (Flyte-identical hashing); outputs go inline when small or are
written to this client's storage and sent by URI; hits are read back through fsspec. Every
call (its requests, the order of its RPCs, how it reads their responses) is written once, in
:class:`RemoteRules`, as a conversation (:mod:`taskcache.clients.conversation`) that the sync
and async clients run; only the I/O differs.

It also owns what every remote client shares, whatever service it speaks: the public methods,
each running its rules' call on the transport, the closed-client refusal and the client-side
reservation cache (:class:`SyncRemote`, :class:`AsyncRemote`; the DataCatalog client is
the same with its own rules).

The service's manager decides policy, never this client; the wire is the transports' business.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Generic, Protocol, TypeVar

from flyteidl2.cacheservice import cacheservice_pb2 as base
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2
from google.protobuf.message import Message

from taskcache import hashing, rpcs
from taskcache.clients import transports
from taskcache.clients.base import AsyncWrites, CheckedWrite, Writes
from taskcache.clients.compute_once import AsyncComputesOnce, ComputesOnce
from taskcache.clients.conversation import Exchange, Steps, converse, converse_async
from taskcache.clients.payload import Payload, read_payload, staged_put
from taskcache.clients.reservation_cache import ReservationCacheStore
from taskcache.clients.transports import AsyncTransport, RemoteOptions, SyncTransport
from taskcache.deadlines import Timeout, as_timeout
from taskcache.errors import FailedPreconditionError, NotFoundError, UnavailableError
from taskcache.lifecycle import AsyncCloseable, Closeable
from taskcache.manager import is_stale, utc_now, validate_owner
from taskcache.model import Entry, Key, Metadata, Reservation, ReservationCache, Status
from taskcache.outputs import InMemoryOutputReader
from taskcache.provenance import (
    as_identifier,
    hit_status,
    key_map_for,
    populated_status,
)
from taskcache.rpcs import BLOB_BYTES_HEADER, IF_UNCHANGED_HEADER, TTL_HEADER, EntryVersion
from taskcache.storage import BlobStore
from taskcache.wiretime import Interval, as_interval

Scope = tuple[str, str, str]
_Transport = TypeVar("_Transport", bound=SyncTransport | AsyncTransport)


@dataclass(frozen=True)
class RemoteRules:
    """The calls both remote clients run, with their request building and response reading
    (no network I/O; a put stages outputs too large to send inline in ``blobs``).

    ``blobs`` receives outputs too large to send inline; entries are filed under ``scope``
    or, if None, the key's own; with ``max_cache_age`` older entries miss; ``reservations``
    remembers the client's reservation attempts; ``default_ttl`` is sent with puts that name
    no TTL of their own (None: the server's default applies).
    """

    blobs: BlobStore
    scope: Scope | None
    max_cache_age: timedelta | None
    inline_max_bytes: int
    reservations: ReservationCacheStore
    default_ttl: timedelta | None = None

    def identifier(self, key: Key) -> v2.Identifier:
        """Return the v2 identifier (scope) a request for ``key`` is filed under."""
        org, project, domain = self.scope if self.scope is not None else key.scope
        return v2.Identifier(org=org, project=project, domain=domain)

    def get_request(self, key: Key) -> v2.GetCacheRequest:
        """Return the Get request for ``key``."""
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

    def dangling_version(self, response: base.GetCacheResponse) -> EntryVersion | None:
        """Return the version of a hit whose blob vanished, for a conditional delete (None if
        the response has no URI or no update time to compare with).
        """
        output = response.output
        if output.WhichOneof("output") != "output_uri" or not output.metadata.HasField(
            "last_updated_at"
        ):
            return None
        return EntryVersion(
            output_uri=output.output_uri,
            last_updated_at=output.metadata.last_updated_at.ToDatetime(tzinfo=UTC),
        )

    def read_hit(self, key: Key, response: base.GetCacheResponse) -> Entry:
        """Turn a Get response into an Entry; NotFoundError only if its blob vanished."""
        output = response.output
        metadata = output.metadata
        kind = output.WhichOneof("output")
        literals = output.output_literals.SerializeToString() if kind == "output_literals" else None
        uri = output.output_uri if kind == "output_uri" else None
        outputs = read_payload(literals, uri, key=hashing.cache_key(key), blobs=self.blobs)
        return Entry(
            outputs=InMemoryOutputReader(outputs, uri=uri),
            status=hit_status(metadata.source_identifier, dict(metadata.key_map.values)),
        )

    def put_request(
        self, key: Key, payload: Payload, metadata: Metadata | None, *, overwrite: bool
    ) -> v2.PutCacheRequest:
        """Return the Put request storing ``payload`` for ``key`` (overwriting if asked)."""
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

    def put_headers(self, payload: Payload, ttl: timedelta | None) -> dict[str, str]:
        """Return the headers of a Put of ``payload``: its TTL (``ttl``, else
        ``default_ttl``) and the size of a blob this client wrote.
        """
        headers: dict[str, str] = {}
        chosen = ttl if ttl is not None else self.default_ttl
        if chosen is not None:
            headers[TTL_HEADER] = rpcs.ttl_header_value(chosen)
        if payload.blob_bytes is not None:
            headers[BLOB_BYTES_HEADER] = str(payload.blob_bytes)
        return headers

    def delete_request(self, key: Key) -> v2.DeleteCacheRequest:
        """Return the Delete request for ``key``."""
        return v2.DeleteCacheRequest(
            base_request=base.DeleteCacheRequest(key=hashing.cache_key(key)),
            identifier=self.identifier(key),
        )

    def reservation_request(
        self, key: Key, owner_id: str, heartbeat_interval: Interval
    ) -> v2.GetOrExtendReservationRequest:
        """Return the GetOrExtendReservation request (arguments checked by
        :func:`reservation_heartbeat`).
        """
        heartbeat = reservation_heartbeat(owner_id, heartbeat_interval)
        request = v2.GetOrExtendReservationRequest(
            base_request=base.GetOrExtendReservationRequest(
                key=hashing.cache_key(key), owner_id=owner_id
            ),
            identifier=self.identifier(key),
        )
        request.base_request.heartbeat_interval.FromTimedelta(heartbeat)
        return request

    def release_request(self, key: Key, owner_id: str) -> v2.ReleaseReservationRequest:
        """Return the ReleaseReservation request; InvalidArgumentError for an empty owner."""
        validate_owner(owner_id)
        return v2.ReleaseReservationRequest(
            base_request=base.ReleaseReservationRequest(
                key=hashing.cache_key(key), owner_id=owner_id
            ),
            identifier=self.identifier(key),
        )

    # The calls: each a conversation (see :mod:`taskcache.clients.conversation`).

    def get(self, key: Key) -> Steps[Entry]:
        """The Get of ``key``: NotFoundError on a miss, on an entry older than
        ``max_cache_age`` and on one whose blob vanished (that entry is deleted if unchanged).
        """
        response: base.GetCacheResponse = yield Exchange(rpcs.GET, self.get_request(key))
        self.check_fresh(key, response)
        try:
            return self.read_hit(key, response)
        except NotFoundError:
            version = self.dangling_version(response)
            if version is not None:
                yield from self._forget_dangling(key, version)
            raise

    def _forget_dangling(self, key: Key, version: EntryVersion) -> Steps[None]:
        """Delete the dangling entry only if it is still ``version`` (a worker may have
        re-put it since the Get): the service compares and deletes in one statement.
        """
        headers = {IF_UNCHANGED_HEADER: version.header_value()}
        with contextlib.suppress(NotFoundError, FailedPreconditionError):
            yield Exchange(rpcs.DELETE, self.delete_request(key), headers)

    def write(self, write: CheckedWrite) -> Steps[Status]:
        """The Put of ``write``, its outputs inline or staged as a blob (removed if it fails)."""
        key, metadata = write.key, write.metadata
        with staged_put(key, write.outputs, self.blobs, self.inline_max_bytes) as (_, payload):
            request = self.put_request(key, payload, metadata, overwrite=write.overwrite)
            yield Exchange(rpcs.PUT, request, self.put_headers(payload, write.ttl))
        return populated_status(key.identifier, metadata)

    def delete(self, key: Key) -> Steps[None]:
        """The Delete of ``key``: NotFoundError if absent."""
        yield Exchange(rpcs.DELETE, self.delete_request(key))

    def reserve(self, key: Key, owner_id: str, heartbeat_interval: Interval) -> Steps[Reservation]:
        """The GetOrExtendReservation (arguments checked as by :meth:`reservation_request`)."""
        request = self.reservation_request(key, owner_id, heartbeat_interval)
        response: base.GetOrExtendReservationResponse = yield Exchange(
            rpcs.GET_OR_EXTEND_RESERVATION, request
        )
        return Reservation.from_proto(response.reservation)

    def release(self, key: Key, owner_id: str) -> Steps[None]:
        """The ReleaseReservation (InvalidArgumentError for an empty owner)."""
        yield Exchange(rpcs.RELEASE_RESERVATION, self.release_request(key, owner_id))

    @staticmethod
    def rpc_timeouts(timeout: float | None) -> Callable[[], float | None]:
        """Return the timeout of each RPC of a call with ``timeout``: all of it (a Get's
        clean-up Delete has its own budget, not what the Get left).
        """
        return lambda: timeout


def reservation_heartbeat(owner_id: str, heartbeat_interval: Interval) -> timedelta:
    """Return the heartbeat of ``owner_id``'s GetOrExtendReservation as a timedelta.

    Raises TypeError for a heartbeat that is neither a timedelta nor seconds (see
    :func:`~taskcache.wiretime.as_interval`), InvalidArgumentError for an empty owner.
    """
    heartbeat = as_interval(heartbeat_interval, "heartbeat_interval")
    validate_owner(owner_id)
    return heartbeat


class SharedRules(Protocol):
    """What every remote client's rules provide: the blob store, the reservation cache, and
    each call of :class:`~taskcache.Client` as a conversation.
    """

    @property
    def blobs(self) -> BlobStore:
        """Where this client writes large outputs (and ``@cached`` its values)."""
        ...

    @property
    def reservations(self) -> ReservationCacheStore:
        """What the client remembers of its reservation attempts."""
        ...

    def get(self, key: Key) -> Steps[Entry]:
        """The call of :meth:`~taskcache.Client.get`."""
        ...

    def write(self, write: CheckedWrite) -> Steps[Status]:
        """The call of a put or update."""
        ...

    def delete(self, key: Key) -> Steps[None]:
        """The call of :meth:`~taskcache.Client.delete` (it may refuse before any RPC)."""
        ...

    def reserve(self, key: Key, owner_id: str, heartbeat_interval: Interval) -> Steps[Reservation]:
        """The call of :meth:`~taskcache.Client.get_or_extend_reservation`."""
        ...

    def release(self, key: Key, owner_id: str) -> Steps[None]:
        """The call of :meth:`~taskcache.Client.release_reservation`."""
        ...

    def rpc_timeouts(self, timeout: float | None) -> Callable[[], float | None]:
        """Return what gives each RPC of a call with ``timeout`` (None: the transport's
        default) its own timeout; it may raise DeadlineExceededError.
        """
        ...


_Rules = TypeVar("_Rules", bound=SharedRules)
_Result = TypeVar("_Result")


class _Remote(Generic[_Transport, _Rules]):
    """What every remote client holds: a transport and its request rules."""

    def __init__(self, transport: _Transport, rules: _Rules) -> None:
        self._transport: _Transport = transport
        self._rules: _Rules = rules

    @property
    def blobs(self) -> BlobStore:
        """The storage this client writes large outputs to (and ``@cached`` its values)."""
        return self._rules.blobs


class SyncRemote(Writes, ComputesOnce, _Remote[SyncTransport, _Rules], Closeable):
    """A synchronous remote client: each call its rules' conversation, sent on the transport
    (refused once closed), and the client-side reservation cache.
    """

    def get(self, key: Key, *, timeout: Timeout = None) -> Entry:
        """Return the entry for ``key``; NotFoundError on a miss (and, as the service the
        client speaks defines it, on an entry too old); DeadlineExceededError once ``timeout``
        passes.
        """
        return self._run(self._rules.get(key), as_timeout(timeout))

    def _write(self, write: CheckedWrite) -> Status:
        return self._run(self._rules.write(write), write.timeout)

    def delete(self, key: Key, *, timeout: Timeout = None) -> None:
        """Delete the entry; NotFoundError if absent, DeadlineExceededError once ``timeout``
        passes (a DataCatalog refuses: FailedPreconditionError).
        """
        seconds = as_timeout(timeout)
        self._run(self._rules.delete(key), seconds)

    def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: Interval, *, timeout: Timeout = None
    ) -> Reservation:
        """Acquire or extend ``owner_id``'s reservation (on a DataCatalog: on the key's
        dataset and tag), or return the current holder's; DeadlineExceededError once
        ``timeout`` passes.
        """
        steps = self._rules.reserve(key, owner_id, heartbeat_interval)
        return self._run(steps, as_timeout(timeout))

    def release_reservation(self, key: Key, owner_id: str, *, timeout: Timeout = None) -> None:
        """Release ``owner_id``'s reservation; a no-op if it holds none. DeadlineExceededError
        once ``timeout`` passes.
        """
        self._run(self._rules.release(key, owner_id), as_timeout(timeout))

    def get_reservation_cache(self, owner_id: str, *, timeout: Timeout = None) -> ReservationCache:
        """Return what this client remembers of ``owner_id``'s last reservation attempt (in
        memory: ``timeout`` is checked, never needed).
        """
        as_timeout(timeout)
        return self._rules.reservations.get(owner_id)

    def update_reservation_cache(
        self, owner_id: str, entry: ReservationCache, *, timeout: Timeout = None
    ) -> None:
        """Remember ``entry`` for ``owner_id`` (bounded, least recently used forgotten first;
        in memory: ``timeout`` is checked, never needed).
        """
        as_timeout(timeout)
        self._rules.reservations.put(owner_id, entry)

    def _run(self, steps: Steps[_Result], timeout: float | None) -> _Result:
        rpc_timeout = self._rules.rpc_timeouts(timeout)
        return converse(steps, lambda exchange: self._send(exchange, rpc_timeout()))

    def _send(self, exchange: Exchange, timeout: float | None) -> Message:
        # A closed transport fails in its own ways (gRPC raises ValueError, Connect quietly
        # reconnects); a closed client refuses every call the same way.
        if self.closed:
            raise UnavailableError("the client is closed")
        rpc, request, headers = exchange.rpc, exchange.request, exchange.headers
        return self._transport.send(rpc, request, headers, timeout=timeout)

    def _release(self) -> None:
        self._transport.close()


class AsyncRemote(AsyncWrites, AsyncComputesOnce, _Remote[AsyncTransport, _Rules], AsyncCloseable):
    """The asynchronous twin of :class:`SyncRemote`."""

    async def get(self, key: Key, *, timeout: Timeout = None) -> Entry:
        """See :meth:`SyncRemote.get`."""
        return await self._run(self._rules.get(key), as_timeout(timeout))

    async def _write(self, write: CheckedWrite) -> Status:
        return await self._run(self._rules.write(write), write.timeout)

    async def delete(self, key: Key, *, timeout: Timeout = None) -> None:
        """See :meth:`SyncRemote.delete`."""
        seconds = as_timeout(timeout)
        await self._run(self._rules.delete(key), seconds)

    async def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: Interval, *, timeout: Timeout = None
    ) -> Reservation:
        """See :meth:`SyncRemote.get_or_extend_reservation`."""
        steps = self._rules.reserve(key, owner_id, heartbeat_interval)
        return await self._run(steps, as_timeout(timeout))

    async def release_reservation(
        self, key: Key, owner_id: str, *, timeout: Timeout = None
    ) -> None:
        """See :meth:`SyncRemote.release_reservation`."""
        await self._run(self._rules.release(key, owner_id), as_timeout(timeout))

    async def get_reservation_cache(
        self, owner_id: str, *, timeout: Timeout = None
    ) -> ReservationCache:
        """See :meth:`SyncRemote.get_reservation_cache`."""
        as_timeout(timeout)
        return self._rules.reservations.get(owner_id)

    async def update_reservation_cache(
        self, owner_id: str, entry: ReservationCache, *, timeout: Timeout = None
    ) -> None:
        """See :meth:`SyncRemote.update_reservation_cache`."""
        as_timeout(timeout)
        self._rules.reservations.put(owner_id, entry)

    async def _run(self, steps: Steps[_Result], timeout: float | None) -> _Result:
        rpc_timeout = self._rules.rpc_timeouts(timeout)
        return await converse_async(steps, lambda exchange: self._send(exchange, rpc_timeout()))

    async def _send(self, exchange: Exchange, timeout: float | None) -> Message:
        if self.closed:
            raise UnavailableError("the client is closed")
        rpc, request, headers = exchange.rpc, exchange.request, exchange.headers
        return await self._transport.send(rpc, request, headers, timeout=timeout)

    async def _release(self) -> None:
        await self._transport.close()


class RemoteClient(SyncRemote[RemoteRules]):
    """A :class:`~taskcache.Client` talking to a cache service over Connect or gRPC."""


class AsyncRemoteClient(AsyncRemote[RemoteRules]):
    """The asynchronous twin of :class:`RemoteClient`."""


def open_remote(url: str, options: RemoteOptions, rules: RemoteRules) -> RemoteClient:
    """Return a RemoteClient for an ``http(s)://`` (Connect) or ``grpc(s)://`` URL.

    Raises InvalidArgumentError for another URL.
    """
    return RemoteClient(transports.open_transport(url, options), rules)


def open_remote_async(url: str, options: RemoteOptions, rules: RemoteRules) -> AsyncRemoteClient:
    """Return an AsyncRemoteClient for an ``http(s)://`` or ``grpc(s)://`` URL (see
    :func:`open_remote`).
    """
    return AsyncRemoteClient(transports.open_async_transport(url, options), rules)
