"""The service core: one class that serves the five cache RPCs of any of the three APIs.

A :class:`CacheService` reads a request through its :class:`Dialect` (where the scope comes
from, how the API's messages map onto flyteidl2's base messages), validates what the manager
does not, calls the :class:`~taskcache.manager.AsyncCacheManager` and builds the response.
Transports call it directly; it calls the manager directly — no layer in between. It knows
nothing of gRPC or Connect, and it decides no cache policy (that is the manager's).

Errors are :class:`~taskcache.errors.CacheError` subclasses; the transports map them to
status codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl2.cacheservice import cacheservice_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as scoped_pb2
from google.protobuf.message import DecodeError, Message

from taskcache.errors import (
    AlreadyExistsError,
    CacheError,
    FailedPreconditionError,
    InternalError,
    NotFoundError,
)
from taskcache.manager import AsyncCacheManager, NewEntry, validate_output_uri
from taskcache.repositories.base import EntryRow, Scope
from taskcache.rpcs import (
    BLOB_BYTES_HEADER,
    DELETE,
    FLYTE1_SERVICE,
    GET,
    GET_OR_EXTEND_RESERVATION,
    IF_UNCHANGED_HEADER,
    PUT,
    RELEASE_RESERVATION,
    TTL_HEADER,
    UNSCOPED_SERVICE,
    EntryVersion,
    Rpc,
    parse_blob_bytes_header,
    parse_ttl_header,
)
from taskcache.server.auth import Authenticator
from taskcache.server.metrics import ServerMetrics
from taskcache.server.scope import UNSCOPED, request_scope
from taskcache.storage import BlobStore
from taskcache.wiretime import duration_to_timedelta, set_timestamp, timestamp_to_datetime

logger = logging.getLogger(__name__)

Headers = Mapping[str, str]


class Dialect(Protocol):
    """How one API's messages map onto flyteidl2's base cache messages and a scope."""

    def unwrap(self, rpc: Rpc, request: Message) -> tuple[Scope, Message]:
        """Return the scope of ``request`` and its flyteidl2 base request; InvalidArgumentError
        naming the field if the scope is malformed.
        """
        ...

    def wrap(self, rpc: Rpc, response: Message) -> Message:
        """Return the flyteidl2 base ``response`` as this API's response message."""
        ...


class ScopedDialect:
    """``flyteidl2.cacheservice.v2``: the scope is the validated ``identifier``; the base
    request is ``base_request``; responses are the base ones.
    """

    def unwrap(self, rpc: Rpc, request: Message) -> tuple[Scope, Message]:
        """Return the identifier's scope and ``request.base_request``."""
        scoped: scoped_pb2.GetCacheRequest = request  # every v2 request has base_request
        base: Message = scoped.base_request
        return request_scope(request), base

    def wrap(self, rpc: Rpc, response: Message) -> Message:
        """Return ``response`` itself (v2 answers with the base responses)."""
        return response


class UnscopedDialect:
    """``flyteidl2.cacheservice``: base messages under the empty scope."""

    def unwrap(self, rpc: Rpc, request: Message) -> tuple[Scope, Message]:
        """Return the empty scope and ``request`` itself."""
        return UNSCOPED, request

    def wrap(self, rpc: Rpc, response: Message) -> Message:
        """Return ``response`` itself."""
        return response


class Flyte1Dialect:
    """``flyteidl.cacheservice`` (Flyte 1), under the empty scope. Its messages are
    wire-identical to flyteidl2's except ``PutCacheRequest.overwrite``, a plain bool.
    """

    def unwrap(self, rpc: Rpc, request: Message) -> tuple[Scope, Message]:
        """Return the empty scope and ``request`` re-read as the flyteidl2 base request."""
        if rpc == PUT:
            return UNSCOPED, _flyte1_put(request)
        return UNSCOPED, _convert(request, UNSCOPED_SERVICE.request_type(rpc))

    def wrap(self, rpc: Rpc, response: Message) -> Message:
        """Return ``response`` re-read as the Flyte 1 response."""
        return _convert(response, FLYTE1_SERVICE.response_type(rpc))


def _convert(message: Message, target: type[Message]) -> Message:
    """Re-read ``message`` as the wire-identical ``target`` type (unknown fields survive)."""
    return target.FromString(message.SerializeToString())


def _flyte1_put(request: Message) -> cacheservice_pb2.PutCacheRequest:
    flyte1: flyte1_pb2.PutCacheRequest = request
    base = cacheservice_pb2.PutCacheRequest(key=flyte1.key)
    if flyte1.HasField("output"):
        base.output.MergeFromString(flyte1.output.SerializeToString())
    base.overwrite.overwrite = flyte1.overwrite
    return base


@dataclass(frozen=True)
class Backend:
    """What every API's service core shares: the manager, the server's metrics, the storage
    root (None: ``delete_blob`` is ignored), the thread pool blob deletions run on and the
    token authority (None: requests need no token).
    """

    manager: AsyncCacheManager
    metrics: ServerMetrics
    executor: Executor
    blobs: BlobStore | None = None
    auth: Authenticator | None = None


class CacheService:
    """Serves the five cache RPCs of one API over ``backend``'s manager.

    Each method takes the API's request message and the request's headers (lower-case names)
    and returns the API's response message; it raises CacheError subclasses. With a token
    authority, every method first checks the headers' bearer token against the request's
    scope (UnauthenticatedError, PermissionDeniedError) — here, because only the dialect knows
    the scope, and once for both transports.
    """

    def __init__(self, backend: Backend, dialect: Dialect) -> None:
        self._backend = backend
        self._manager = backend.manager
        self._metrics = backend.metrics
        self._dialect = dialect

    def _unwrap(self, rpc: Rpc, request: Message, headers: Headers) -> tuple[Scope, Message]:
        """Return the dialect's scope and base request, once the caller may use that scope.

        The token is checked before the request is read, so a caller without one learns
        nothing from validation errors.
        """
        auth = self._backend.auth
        grant = None if auth is None else auth.authenticate(headers)
        scope, base = self._dialect.unwrap(rpc, request)
        if grant is not None:
            grant.authorize(scope)
        return scope, base

    async def get(self, request: Message, headers: Headers) -> Message:
        """Return the entry as a GetCacheResponse; NotFoundError on a miss."""
        scope, base = self._unwrap(GET, request, headers)
        get: cacheservice_pb2.GetCacheRequest = base
        try:
            row = await self._manager.get(scope, get.key)
        except NotFoundError:
            self._metrics.misses.inc()
            raise
        self._metrics.hits.inc()
        return self._dialect.wrap(GET, get_response(row))

    async def put(self, request: Message, headers: Headers) -> Message:
        """Store the request's output; AlreadyExistsError if a live entry exists and the
        request neither overwrites nor finds it older than ``overwrite.max_age``. With
        ``overwrite.delete_blob`` the replaced entry's blob is deleted if the storage root
        owns it and no other entry, in any scope, references it. The :data:`TTL_HEADER` and
        :data:`BLOB_BYTES_HEADER` headers set the entry's TTL and recorded blob size
        (InvalidArgumentError naming the header if malformed).
        """
        scope, base = self._unwrap(PUT, request, headers)
        put: cacheservice_pb2.PutCacheRequest = base
        entry = _new_entry(put.output, headers)
        options = put.overwrite
        max_age = (
            duration_to_timedelta(options.max_age, "overwrite.max_age")
            if options.HasField("max_age")
            else None
        )
        try:
            result = await self._manager.put(
                scope, put.key, entry, overwrite=options.overwrite, max_age=max_age
            )
        except AlreadyExistsError:
            self._metrics.put_conflicts.inc()
            raise
        self._metrics.puts.inc()
        replaced = result.replaced
        if (
            options.delete_blob
            and replaced is not None
            and replaced.output_uri
            # Re-putting the same URI must not delete the blob the new entry points at.
            and replaced.output_uri != result.stored.output_uri
        ):
            await self._delete_replaced_blob(replaced.output_uri)
        return self._dialect.wrap(PUT, cacheservice_pb2.PutCacheResponse())

    async def _delete_replaced_blob(self, uri: str) -> None:
        """Delete ``uri`` if it lies under the storage root (symlinks and ``..`` resolved) and
        no entry in any scope still references it; failures are logged, not raised (the put
        already succeeded).
        """
        blobs = self._backend.blobs
        if blobs is None:
            logger.debug("delete_blob ignored for %s: no storage root configured", uri)
            return
        loop = asyncio.get_running_loop()
        executor = self._backend.executor
        spellings = await loop.run_in_executor(executor, blobs.owned_spellings, uri)
        if not spellings:
            logger.info("delete_blob ignored for %s: outside storage root %s", uri, blobs.root)
            return
        try:
            referenced = await self._manager.repository.output_uri_referenced(spellings)
        except CacheError:
            # Unsure means keep: a kept blob is garbage, a deleted one may be another's output.
            logger.warning("delete_blob skipped for %s: reference check failed", uri, exc_info=True)
            return
        if referenced:
            logger.info("delete_blob ignored for %s: another entry still references it", uri)
            return
        try:
            await loop.run_in_executor(executor, blobs.delete, uri)
        except Exception:
            logger.warning("could not delete replaced blob %s", uri, exc_info=True)

    async def delete(self, request: Message, headers: Headers) -> Message:
        """Delete the entry (never its blob); NotFoundError if there was none.

        With the :data:`IF_UNCHANGED_HEADER` header, delete only that version of the entry:
        FailedPreconditionError if the entry has changed since.
        """
        scope, base = self._unwrap(DELETE, request, headers)
        delete: cacheservice_pb2.DeleteCacheRequest = base
        key: str = delete.key
        condition = headers.get(IF_UNCHANGED_HEADER)
        if condition is None:
            await self._manager.delete(scope, key)
        else:
            version = EntryVersion.from_header(condition)
            deleted = await self._manager.discard_dangling(
                scope, key, version.output_uri, version.last_updated_at
            )
            if not deleted:
                raise FailedPreconditionError(
                    f"entry {key!r} is absent or changed since {version.last_updated_at}"
                )
        return self._dialect.wrap(DELETE, cacheservice_pb2.DeleteCacheResponse())

    async def get_or_extend_reservation(self, request: Message, headers: Headers) -> Message:
        """Grant or extend the caller's reservation, or return the current holder's."""
        scope, base = self._unwrap(GET_OR_EXTEND_RESERVATION, request, headers)
        wanted: cacheservice_pb2.GetOrExtendReservationRequest = base
        row = await self._manager.get_or_extend_reservation(
            scope,
            wanted.key,
            wanted.owner_id,
            duration_to_timedelta(wanted.heartbeat_interval, "heartbeat_interval"),
        )
        self._metrics.count_reservation(row, wanted.owner_id)
        response = cacheservice_pb2.GetOrExtendReservationResponse()
        reservation = response.reservation
        reservation.key = wanted.key
        reservation.owner_id = row.owner_id
        reservation.heartbeat_interval.FromTimedelta(row.heartbeat_interval)
        set_timestamp(reservation.expires_at, row.expires_at)
        return self._dialect.wrap(GET_OR_EXTEND_RESERVATION, response)

    async def release_reservation(self, request: Message, headers: Headers) -> Message:
        """Release the caller's reservation; absent or foreign ones are left alone."""
        scope, base = self._unwrap(RELEASE_RESERVATION, request, headers)
        release: cacheservice_pb2.ReleaseReservationRequest = base
        await self._manager.release_reservation(scope, release.key, release.owner_id)
        return self._dialect.wrap(
            RELEASE_RESERVATION, cacheservice_pb2.ReleaseReservationResponse()
        )


def _new_entry(output: cacheservice_pb2.CachedOutput, headers: Headers) -> NewEntry:
    """Translate a CachedOutput and the Put's headers into the manager's NewEntry (outputs
    checked by the manager).
    """
    which = output.WhichOneof("output")
    output_uri: str | None = None
    output_literals: bytes | None = None
    if which == "output_uri":
        output_uri = output.output_uri
        validate_output_uri(output_uri, "output.output_uri")
    elif which == "output_literals":
        output_literals = output.output_literals.SerializeToString()
    metadata = output.metadata
    source = (
        metadata.source_identifier.SerializeToString()
        if metadata.HasField("source_identifier")
        else b""
    )
    created_at = (
        timestamp_to_datetime(metadata.created_at, "output.metadata.created_at")
        if metadata.HasField("created_at")
        else None
    )
    ttl = headers.get(TTL_HEADER)
    blob_bytes = headers.get(BLOB_BYTES_HEADER)
    return NewEntry(
        output_uri=output_uri,
        output_literals=output_literals,
        source_identifier=source,
        key_map=dict(metadata.key_map.values),
        created_at=created_at,
        ttl=None if ttl is None else parse_ttl_header(ttl),
        blob_bytes=None if blob_bytes is None else parse_blob_bytes_header(blob_bytes),
    )


def get_response(row: EntryRow) -> cacheservice_pb2.GetCacheResponse:
    """Return the GetCacheResponse serving ``row``; InternalError if its stored bytes do not
    decode.
    """
    response = cacheservice_pb2.GetCacheResponse()
    output = response.output
    metadata = output.metadata
    try:
        if row.output_literals is not None:
            output.output_literals.ParseFromString(row.output_literals)
        elif row.output_uri is not None:
            output.output_uri = row.output_uri
        if row.source_identifier:
            metadata.source_identifier.ParseFromString(row.source_identifier)
    except DecodeError as error:
        raise InternalError(f"stored entry {row.key!r} cannot be decoded: {error}") from error
    metadata.key_map.values.update(row.key_map)
    set_timestamp(metadata.created_at, row.created_at)
    set_timestamp(metadata.last_updated_at, row.last_updated_at)
    return response
