"""The transport-neutral service core: flyteidl2 cache requests in, manager calls, responses out.

The core awaits a :class:`ServiceManager`: on PostgreSQL an
:class:`~taskcache.manager.AsyncCacheManager` on the event loop itself; on SQLite the
synchronous :class:`~taskcache.manager.CacheManager` behind :class:`ThreadedManager`, which
runs each call on the server's thread pool so the event loop keeps serving other requests.
Blob deletion always runs on that thread pool. Errors are
:class:`~taskcache.errors.CacheError` subclasses; transports map them to status codes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, timedelta
from typing import Any, ParamSpec, Protocol, TypeVar

from flyteidl2.cacheservice import cacheservice_pb2
from google.protobuf.message import DecodeError

from taskcache.errors import AlreadyExistsError, InternalError, InvalidArgumentError, NotFoundError
from taskcache.manager import CacheManager, NewEntry, PutResult
from taskcache.repositories.base import EntryRow, ReservationRow, Scope
from taskcache.server.metrics import ServerMetrics
from taskcache.storage import BlobStore

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def run_in_executor(
    executor: Executor, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """Run ``function(*args, **kwargs)`` on ``executor`` and await its result."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(function, *args, **kwargs))


class ServiceManager(Protocol):
    """The manager calls the core awaits (:class:`~taskcache.manager.AsyncCacheManager`'s)."""

    async def get(self, scope: Scope, key: str, max_age: timedelta | None = None) -> EntryRow:
        """See :meth:`CacheManager.get`."""
        ...

    async def put(
        self,
        scope: Scope,
        key: str,
        entry: NewEntry,
        *,
        overwrite: bool = False,
        max_age: timedelta | None = None,
    ) -> PutResult:
        """See :meth:`CacheManager.put`."""
        ...

    async def delete(self, scope: Scope, key: str) -> EntryRow:
        """See :meth:`CacheManager.delete`."""
        ...

    async def get_or_extend_reservation(
        self, scope: Scope, key: str, owner_id: str, heartbeat_interval: timedelta
    ) -> ReservationRow:
        """See :meth:`CacheManager.get_or_extend_reservation`."""
        ...

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> None:
        """See :meth:`CacheManager.release_reservation`."""
        ...


class ThreadedManager:
    """A synchronous :class:`CacheManager` as a :class:`ServiceManager`: each call runs on
    ``executor`` (the SQLite path).
    """

    def __init__(self, manager: CacheManager, executor: Executor) -> None:
        self.manager = manager
        self._executor = executor

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await run_in_executor(self._executor, function, *args, **kwargs)

    async def get(self, scope: Scope, key: str, max_age: timedelta | None = None) -> EntryRow:
        """Run :meth:`CacheManager.get` on the executor."""
        return await self._run(self.manager.get, scope, key, max_age)

    async def put(
        self,
        scope: Scope,
        key: str,
        entry: NewEntry,
        *,
        overwrite: bool = False,
        max_age: timedelta | None = None,
    ) -> PutResult:
        """Run :meth:`CacheManager.put` on the executor."""
        return await self._run(
            self.manager.put, scope, key, entry, overwrite=overwrite, max_age=max_age
        )

    async def delete(self, scope: Scope, key: str) -> EntryRow:
        """Run :meth:`CacheManager.delete` on the executor."""
        return await self._run(self.manager.delete, scope, key)

    async def get_or_extend_reservation(
        self, scope: Scope, key: str, owner_id: str, heartbeat_interval: timedelta
    ) -> ReservationRow:
        """Run :meth:`CacheManager.get_or_extend_reservation` on the executor."""
        return await self._run(
            self.manager.get_or_extend_reservation, scope, key, owner_id, heartbeat_interval
        )

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> None:
        """Run :meth:`CacheManager.release_reservation` on the executor."""
        await self._run(self.manager.release_reservation, scope, key, owner_id)


class CacheServiceCore:
    """Serves the five cache RPCs for any scope on top of a :class:`ServiceManager`.

    A synchronous :class:`CacheManager` is accepted too and wrapped in
    :class:`ThreadedManager` on ``executor``. ``blobs`` is the configured storage root; a put
    with ``delete_blob`` deletes the replaced entry's ``output_uri`` only when ``blobs`` owns
    it (never when ``blobs`` is None). The server never reads blobs.
    """

    def __init__(
        self,
        manager: ServiceManager | CacheManager,
        *,
        executor: Executor,
        metrics: ServerMetrics,
        blobs: BlobStore | None = None,
    ) -> None:
        self.manager: ServiceManager = (
            ThreadedManager(manager, executor) if isinstance(manager, CacheManager) else manager
        )
        self.blobs = blobs
        self._executor = executor
        self._metrics = metrics

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await run_in_executor(self._executor, function, *args, **kwargs)

    async def get(
        self, scope: Scope, request: cacheservice_pb2.GetCacheRequest
    ) -> cacheservice_pb2.GetCacheResponse:
        """Return the entry as a GetCacheResponse; NotFoundError on a miss."""
        try:
            row = await self.manager.get(scope, request.key)
        except NotFoundError:
            self._metrics.misses.inc()
            raise
        self._metrics.hits.inc()
        return _get_response(row)

    async def put(
        self, scope: Scope, request: cacheservice_pb2.PutCacheRequest
    ) -> cacheservice_pb2.PutCacheResponse:
        """Store the request's output; AlreadyExistsError if a live entry exists and the
        request neither overwrites nor finds it older than ``overwrite.max_age``.
        """
        entry = _new_entry(request.output)
        options = request.overwrite
        max_age = options.max_age.ToTimedelta() if options.HasField("max_age") else None
        try:
            result = await self.manager.put(
                scope, request.key, entry, overwrite=options.overwrite, max_age=max_age
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
            await self._run(self._delete_replaced_blob, replaced.output_uri)
        return cacheservice_pb2.PutCacheResponse()

    def _delete_replaced_blob(self, uri: str) -> None:
        """Delete ``uri`` if it lies under the storage root; failures are logged, not raised
        (the put already succeeded).
        """
        if self.blobs is None:
            logger.debug("delete_blob ignored for %s: no storage root configured", uri)
            return
        try:
            owned = self.blobs.owns(uri)
        except Exception:  # an unknown fsspec protocol or malformed URI is simply not ours
            owned = False
        if not owned:
            logger.info("delete_blob ignored for %s: outside storage root %s", uri, self.blobs.root)
            return
        try:
            self.blobs.delete(uri)
        except Exception:
            logger.warning("could not delete replaced blob %s", uri, exc_info=True)

    async def delete(
        self, scope: Scope, request: cacheservice_pb2.DeleteCacheRequest
    ) -> cacheservice_pb2.DeleteCacheResponse:
        """Delete the entry (never its blob); NotFoundError if there was none."""
        await self.manager.delete(scope, request.key)
        return cacheservice_pb2.DeleteCacheResponse()

    async def get_or_extend_reservation(
        self, scope: Scope, request: cacheservice_pb2.GetOrExtendReservationRequest
    ) -> cacheservice_pb2.GetOrExtendReservationResponse:
        """Grant or extend the caller's reservation, or return the current holder's."""
        row = await self.manager.get_or_extend_reservation(
            scope, request.key, request.owner_id, request.heartbeat_interval.ToTimedelta()
        )
        if row.owner_id != request.owner_id:
            outcome = "contended"
        elif row.taken_over_from is not None:
            outcome = "taken_over"
        else:
            outcome = "granted"
        self._metrics.reservations.labels(outcome=outcome).inc()
        response = cacheservice_pb2.GetOrExtendReservationResponse()
        reservation = response.reservation
        reservation.key = request.key
        reservation.owner_id = row.owner_id
        reservation.heartbeat_interval.FromTimedelta(row.heartbeat_interval)
        reservation.expires_at.FromDatetime(row.expires_at)
        return response

    async def release_reservation(
        self, scope: Scope, request: cacheservice_pb2.ReleaseReservationRequest
    ) -> cacheservice_pb2.ReleaseReservationResponse:
        """Release the caller's reservation; absent or foreign ones are left alone."""
        await self.manager.release_reservation(scope, request.key, request.owner_id)
        return cacheservice_pb2.ReleaseReservationResponse()


def _new_entry(output: Any) -> NewEntry:
    """Translate a CachedOutput into the manager's NewEntry (outputs checked by the manager)."""
    which = output.WhichOneof("output")
    output_uri: str | None = None
    output_literals: bytes | None = None
    if which == "output_uri":
        if not output.output_uri:
            raise InvalidArgumentError("must not be empty", field="output.output_uri")
        output_uri = output.output_uri
    elif which == "output_literals":
        output_literals = output.output_literals.SerializeToString()
    metadata = output.metadata
    source = (
        metadata.source_identifier.SerializeToString()
        if metadata.HasField("source_identifier")
        else b""
    )
    created_at = (
        metadata.created_at.ToDatetime(tzinfo=UTC) if metadata.HasField("created_at") else None
    )
    return NewEntry(
        output_uri=output_uri,
        output_literals=output_literals,
        source_identifier=source,
        key_map=dict(metadata.key_map.values),
        created_at=created_at,
    )


def _get_response(row: EntryRow) -> cacheservice_pb2.GetCacheResponse:
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
    metadata.created_at.FromDatetime(row.created_at)
    metadata.last_updated_at.FromDatetime(row.last_updated_at)
    return response
