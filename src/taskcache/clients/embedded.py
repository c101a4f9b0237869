"""The embedded catalog client: the manager in-process, on a local repository and blob store."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from flyteidl2.core import identifier_pb2, literals_pb2

from taskcache import hashing
from taskcache.clients.base import Client, Outputs
from taskcache.errors import CacheError, InternalError, NotFoundError
from taskcache.manager import CacheManager, NewEntry, PutResult
from taskcache.model import (
    CacheStatus,
    Entry,
    Key,
    Metadata,
    Reservation,
    ReservationCache,
    Status,
)
from taskcache.outputs import InMemoryOutputReader, OutputReader, decode_literal_map
from taskcache.provenance import as_identifier, catalog_metadata, key_map_for, source_execution
from taskcache.repositories.base import EntryRow, Scope
from taskcache.reservation_cache import DEFAULT_MAX_OWNERS, ReservationCacheStore
from taskcache.storage import BlobStore, read_blob

DEFAULT_INLINE_MAX_BYTES = 64 * 1024


class EmbeddedClient:
    """A :class:`~taskcache.Client` that runs the cache manager in this process.

    Outputs up to ``inline_max_bytes`` serialized are stored in the catalog itself (0 means
    always a blob); larger ones are written once as ``outputs.pb`` to ``blobs``. Readers that
    already have a URI are stored by reference. With ``max_cache_age``, older entries miss.
    """

    def __init__(
        self,
        manager: CacheManager,
        blobs: BlobStore,
        *,
        max_cache_age: timedelta | None = None,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        reservation_cache_size: int = DEFAULT_MAX_OWNERS,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        if inline_max_bytes < 0:
            raise ValueError("inline_max_bytes must be >= 0")
        self.manager = manager
        self.blobs = blobs
        self.max_cache_age = max_cache_age
        self.inline_max_bytes = inline_max_bytes
        self._reservations = ReservationCacheStore(reservation_cache_size)
        self._on_close = on_close
        self._closed = False
        self._close_lock = threading.Lock()

    def get(self, key: Key) -> Entry:
        """Return the entry for ``key`` with its outputs read into memory.

        Raises NotFoundError on a miss: no entry, one older than ``max_cache_age``, or one whose
        outputs blob vanished (that dangling entry is removed so a later put repopulates it).
        """
        cache_key = hashing.cache_key(key)
        row = self.manager.get(_scope(key), cache_key, max_age=self.max_cache_age)
        outputs = self._read_outputs(row)
        source_identifier = identifier_pb2.Identifier.FromString(row.source_identifier)
        status = Status(
            CacheStatus.CACHE_HIT,
            catalog_metadata(source_identifier, source_execution(source_identifier, row.key_map)),
        )
        return Entry(outputs=InMemoryOutputReader(outputs, uri=row.output_uri), status=status)

    def _read_outputs(self, row: EntryRow) -> literals_pb2.LiteralMap:
        if row.output_literals is not None:
            return decode_literal_map(row.output_literals, source=f"entry {row.key!r}")
        uri = row.output_uri
        if uri is None:
            raise InternalError(f"entry {row.key!r} has neither outputs nor an output URI")
        try:
            data = read_blob(uri)
        except NotFoundError as error:
            self.manager.discard_dangling(row)
            raise NotFoundError(
                f"outputs of entry {row.key!r} vanished from {uri}; the entry was discarded"
            ) from error
        return decode_literal_map(data, source=uri)

    def put(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """Create the entry for ``key``.

        Returns CACHE_POPULATED. Raises AlreadyExistsError if a live entry exists, and any
        error with ``.status`` = CACHE_PUT_FAILURE.
        """
        return self._write(key, outputs, metadata, overwrite=False)

    def update(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """Create or overwrite the entry for ``key``; errors carry a CACHE_PUT_FAILURE status."""
        return self._write(key, outputs, metadata, overwrite=True)

    def _write(
        self, key: Key, outputs: Outputs, metadata: Metadata | None, *, overwrite: bool
    ) -> Status:
        dataset_id = as_identifier(key.identifier) if key.identifier is not None else None
        failure = Status(CacheStatus.CACHE_PUT_FAILURE, catalog_metadata(dataset_id, None))
        written_uri: str | None = None
        try:
            cache_key = hashing.cache_key(key)
            entry, written_uri = self._new_entry(cache_key, outputs, metadata, dataset_id)
            # An entry older than max_cache_age is a miss, so a put may replace it.
            result = self.manager.put(
                _scope(key), cache_key, entry, overwrite=overwrite, max_age=self.max_cache_age
            )
        except CacheError as error:
            self._discard_blob(written_uri)
            error.status = failure
            raise
        except Exception as error:
            self._discard_blob(written_uri)
            raise InternalError(f"put failed: {error}", status=failure) from error
        self._discard_replaced(result)
        source = metadata.task_execution_id if metadata is not None else None
        return Status(CacheStatus.CACHE_POPULATED, catalog_metadata(dataset_id, source))

    def _new_entry(
        self,
        cache_key: str,
        outputs: Outputs,
        metadata: Metadata | None,
        dataset_id: identifier_pb2.Identifier | None,
    ) -> tuple[NewEntry, str | None]:
        """Return the entry to store and the URI of a blob written for it (to undo on failure)."""
        output_uri: str | None = None
        output_literals: bytes | None = None
        written_uri: str | None = None
        if isinstance(outputs, OutputReader):
            if not outputs.exists():
                raise NotFoundError(f"outputs do not exist for {cache_key!r}")
            output_uri = outputs.uri
            literal_map = None if output_uri is not None else outputs.read()
        else:
            literal_map = outputs
        if literal_map is not None:
            data = literal_map.SerializeToString()
            if self.inline_max_bytes > 0 and len(data) <= self.inline_max_bytes:
                output_literals = data
            else:
                written_uri = output_uri = self.blobs.write_outputs(cache_key, data)
        created_at: datetime | None = metadata.created_at if metadata is not None else None
        entry = NewEntry(
            output_uri=output_uri,
            output_literals=output_literals,
            source_identifier=dataset_id.SerializeToString() if dataset_id is not None else b"",
            key_map=key_map_for(metadata),
            created_at=created_at,
        )
        return entry, written_uri

    def _discard_blob(self, uri: str | None) -> None:
        if uri is not None:
            self.blobs.delete(uri)

    def _discard_replaced(self, result: PutResult) -> None:
        replaced = result.replaced
        if replaced is not None and replaced.output_uri not in (None, result.stored.output_uri):
            self._discard_blob(replaced.output_uri)

    def delete(self, key: Key) -> None:
        """Delete the entry (and its blob if this catalog wrote it); NotFoundError if absent."""
        cache_key = hashing.cache_key(key)
        row = self.manager.delete(_scope(key), cache_key)
        self._discard_blob(row.output_uri)

    def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: timedelta
    ) -> Reservation:
        """Acquire or extend ``owner_id``'s reservation on ``key``, or return the holder's."""
        cache_key = hashing.cache_key(key)
        row = self.manager.get_or_extend_reservation(
            _scope(key), cache_key, owner_id, heartbeat_interval
        )
        return Reservation(
            key=row.key,
            owner_id=row.owner_id,
            heartbeat_interval=row.heartbeat_interval,
            expires_at=row.expires_at,
        )

    def release_reservation(self, key: Key, owner_id: str) -> None:
        """Release ``owner_id``'s reservation on ``key``; a no-op if it holds none."""
        cache_key = hashing.cache_key(key)
        self.manager.release_reservation(_scope(key), cache_key, owner_id)

    def get_reservation_cache(self, owner_id: str) -> ReservationCache:
        """Return what this client remembers of ``owner_id``'s last reservation attempt."""
        return self._reservations.get(owner_id)

    def update_reservation_cache(self, owner_id: str, entry: ReservationCache) -> None:
        """Remember ``entry`` for ``owner_id`` (bounded, least recently used forgotten first)."""
        self._reservations.put(owner_id, entry)

    def close(self) -> None:
        """Close the catalog's connections. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.manager.repository.close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEmbeddedClient:
    """The asynchronous twin of :class:`EmbeddedClient`; blocking work runs in worker threads."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def get(self, key: Key) -> Entry:
        """See :meth:`EmbeddedClient.get`."""
        return await asyncio.to_thread(self._client.get, key)

    async def put(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """See :meth:`EmbeddedClient.put`."""
        return await asyncio.to_thread(self._client.put, key, outputs, metadata)

    async def update(self, key: Key, outputs: Outputs, metadata: Metadata | None = None) -> Status:
        """See :meth:`EmbeddedClient.update`."""
        return await asyncio.to_thread(self._client.update, key, outputs, metadata)

    async def delete(self, key: Key) -> None:
        """See :meth:`EmbeddedClient.delete`."""
        await asyncio.to_thread(self._client.delete, key)

    async def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: timedelta
    ) -> Reservation:
        """See :meth:`EmbeddedClient.get_or_extend_reservation`."""
        return await asyncio.to_thread(
            self._client.get_or_extend_reservation, key, owner_id, heartbeat_interval
        )

    async def release_reservation(self, key: Key, owner_id: str) -> None:
        """See :meth:`EmbeddedClient.release_reservation`."""
        await asyncio.to_thread(self._client.release_reservation, key, owner_id)

    async def get_reservation_cache(self, owner_id: str) -> ReservationCache:
        """See :meth:`EmbeddedClient.get_reservation_cache` (in memory; no thread hop)."""
        return self._client.get_reservation_cache(owner_id)

    async def update_reservation_cache(self, owner_id: str, entry: ReservationCache) -> None:
        """See :meth:`EmbeddedClient.update_reservation_cache` (in memory; no thread hop)."""
        self._client.update_reservation_cache(owner_id, entry)

    async def close(self) -> None:
        """Close the underlying client. Idempotent."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _scope(key: Key) -> Scope:
    org, project, domain = key.scope
    return Scope(org=org, project=project, domain=domain)
