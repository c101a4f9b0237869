"""The embedded catalog client: the manager in-process, on a local repository and blob store.

It must not decide policy: every put, overwrite and ownership rule is the manager's, and
listing, totals and clearing are :mod:`taskcache.operations`'. A call's ``timeout`` is
carried as the running deadline (:func:`taskcache.deadlines.bounded`), which the repository
reads to bound its lock waits.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, ParamSpec, TypeVar, Unpack

from flyteidl2.core import identifier_pb2, literals_pb2

from taskcache import deadlines, hashing
from taskcache.clients.base import (
    OPERATOR_BATCH_SIZE,
    AsyncWrites,
    CheckedWrite,
    EntrySelection,
    Writes,
)
from taskcache.clients.compute_once import AsyncComputesOnce, ComputesOnce
from taskcache.clients.payload import read_payload, staged_put
from taskcache.clients.reservation_cache import DEFAULT_MAX_OWNERS, ReservationCacheStore
from taskcache.deadlines import Timeout, as_timeout
from taskcache.errors import InvalidArgumentError, NotFoundError
from taskcache.keywords import check_names
from taskcache.lifecycle import AsyncCloseable, Closeable
from taskcache.manager import CacheManager, NewEntry, PutResult
from taskcache.model import Entry, Key, Reservation, ReservationCache, Status
from taskcache.outputs import InMemoryOutputReader
from taskcache.provenance import (
    as_identifier,
    hit_status,
    key_map_for,
    populated_status,
)
from taskcache.repositories.base import (
    CatalogStats,
    EntryFilter,
    HitReader,
    OperatorRepository,
    Scope,
    Servable,
)
from taskcache.storage import BlobStore
from taskcache.wiretime import Interval, as_interval

DEFAULT_INLINE_MAX_BYTES = 64 * 1024
# Scope objects kept per client (see EmbeddedClient._scope); past this many, they start over.
_MAX_SCOPES = 1024

if TYPE_CHECKING:
    from taskcache.model import CatalogEntry


_P = ParamSpec("_P")
_T = TypeVar("_T")


async def _off_loop(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Return ``function(*args, **kwargs)`` run on a worker thread (``asyncio.to_thread``)."""
    # Imported here, not with the module: `import taskcache` stays free of asyncio, and
    # whoever awaits this already runs an event loop, so it is loaded by then.
    import asyncio  # noqa: PLC0415

    return await asyncio.to_thread(function, *args, **kwargs)


class EmbeddedClient(Writes, ComputesOnce, Closeable):
    """A :class:`~taskcache.Client` that runs the cache manager in this process.

    Outputs up to ``inline_max_bytes`` serialized are stored in the catalog itself (0 means
    always a blob); larger ones are written once as ``outputs.pb`` to ``blobs``. Readers that
    already have a URI are stored by reference. With ``max_cache_age``, older entries miss.
    Entries are filed under the key's (org, project, domain), or under ``scope`` if given.

    Beyond :class:`~taskcache.Client` it is an :class:`~taskcache.OperatorClient`: it lists
    (:meth:`entries`), totals (:meth:`stats`) and clears (:meth:`clear`) its catalog, as the
    ``taskcache ls``, ``stats`` and ``gc`` commands do. Remote clients cannot: the service
    API has no such calls. These ignore ``scope`` and ``max_cache_age``: they see every
    entry, expired or not, in any scope their arguments select.

    ``timeout`` (seconds, None: unbounded) is the default budget of each call; a call's own
    ``timeout`` overrides it. It bounds the waits on the database — SQLite's busy wait for
    the write lock, PostgreSQL's wait for a pooled connection and each statement (lock waits
    included) — and DeadlineExceededError is raised when it passes: a decision the database
    did not make is not applied. Without a timeout those waits are the repository's own
    bounds (``busy_timeout``, ``pool_timeout``, ``statement_timeout``).
    """

    def __init__(
        self,
        manager: CacheManager[OperatorRepository],
        blobs: BlobStore,
        *,
        max_cache_age: timedelta | None = None,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        reservation_cache_size: int = DEFAULT_MAX_OWNERS,
        scope: tuple[str, str, str] | None = None,
        on_close: Callable[[], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        if inline_max_bytes < 0:
            raise InvalidArgumentError("must not be negative", field="inline_max_bytes")
        self.timeout = as_timeout(timeout)
        self.manager = manager
        self.blobs = blobs
        self.max_cache_age = max_cache_age
        self.inline_max_bytes = inline_max_bytes
        self.scope = scope
        self._reservations = ReservationCacheStore(reservation_cache_size)
        self._scopes: dict[tuple[str, str, str], Scope] = {}
        self._on_close = on_close
        # A hit's outputs need only some columns: read just those where the repository can.
        repository = manager.repository
        self._read_hit: Callable[[Scope, str], Servable | None] = (
            repository.get_hit if isinstance(repository, HitReader) else repository.get_entry
        )

    def _budget(self, timeout: Timeout) -> float | None:
        """Return the seconds a call with ``timeout`` may take (None: unbounded)."""
        seconds = as_timeout(timeout)
        return self.timeout if seconds is None else seconds

    def _scope(self, key: Key) -> Scope:
        triple = self.scope if self.scope is not None else key.scope
        # Scopes repeat: built once each (a frozen dataclass costs more than the look-up).
        scope = self._scopes.get(triple)
        if scope is None:
            if len(self._scopes) >= _MAX_SCOPES:
                self._scopes.clear()
            org, project, domain = triple
            scope = self._scopes[triple] = Scope(org=org, project=project, domain=domain)
        return scope

    def get(self, key: Key, *, timeout: Timeout = None) -> Entry:
        """Return the entry for ``key`` with its outputs read into memory.

        Raises NotFoundError on a miss: no entry, an expired one, one older than
        ``max_cache_age``, or one whose outputs blob vanished (that dangling entry is removed
        so a later put repopulates it); DeadlineExceededError once ``timeout`` passes.
        """
        # The hot path: without any timeout, one branch and no deadline to carry.
        if timeout is None and self.timeout is None:
            return self._get(key)
        with deadlines.bounded(self._budget(timeout)):
            return self._get(key)

    def _get(self, key: Key) -> Entry:
        cache_key = hashing.cache_key(key)
        row = self.manager.get(self._scope(key), cache_key, max_age=self.max_cache_age)
        outputs = self._read_outputs(row.scope, cache_key, row)
        return Entry(
            outputs=InMemoryOutputReader(outputs, uri=row.output_uri),
            status_of=functools.partial(_hit_status, row.source_identifier, row.key_map),
        )

    def get_outputs(self, key: Key, *, timeout: Timeout = None) -> literals_pb2.LiteralMap:
        """Return the outputs of the entry for ``key``: ``get(key).outputs.read()`` without
        the hit's status (what ``@cached`` reads). Raises as :meth:`get`.
        """
        if timeout is None and self.timeout is None:
            return self._get_outputs(key)
        with deadlines.bounded(self._budget(timeout)):
            return self._get_outputs(key)

    def _get_outputs(self, key: Key) -> literals_pb2.LiteralMap:
        cache_key = hashing.cache_key(key)
        scope = self._scope(key)
        row = self.manager.serve(self._read_hit, scope, cache_key, max_age=self.max_cache_age)
        return self._read_outputs(scope, cache_key, row)

    def _read_outputs(self, scope: Scope, cache_key: str, row: Servable) -> literals_pb2.LiteralMap:
        """Return the outputs of the hit ``row``; NotFoundError (the entry discarded) if its
        blob vanished.
        """
        try:
            return read_payload(
                row.output_literals, row.output_uri, key=cache_key, blobs=self.blobs
            )
        except NotFoundError as error:
            if row.output_uri is not None:
                self.manager.discard_dangling(scope, cache_key, row.output_uri, row.last_updated_at)
            raise NotFoundError(
                f"outputs of entry {cache_key!r} vanished from {row.output_uri}; "
                "the entry was discarded"
            ) from error

    def _write(self, write: CheckedWrite) -> Status:
        if write.timeout is None and self.timeout is None:
            return self._store(write)
        with deadlines.bounded(self.timeout if write.timeout is None else write.timeout):
            return self._store(write)

    def _store(self, write: CheckedWrite) -> Status:
        key, outputs, metadata = write.key, write.outputs, write.metadata
        with staged_put(key, outputs, self.blobs, self.inline_max_bytes) as (cache_key, payload):
            entry = NewEntry(
                output_uri=payload.output_uri,
                output_literals=payload.output_literals,
                source_identifier=as_identifier(key.identifier).SerializeToString(),
                key_map=key_map_for(metadata),
                created_at=metadata.created_at if metadata is not None else None,
                ttl=write.ttl,
                blob_bytes=payload.blob_bytes,
            )
            # An entry older than max_cache_age is a miss, so a put may replace it.
            result = self.manager.put(
                self._scope(key),
                cache_key,
                entry,
                overwrite=write.overwrite,
                max_age=self.max_cache_age,
            )
        self._discard_replaced(result)
        return populated_status(key.identifier, metadata)

    def _discard_blob(self, uri: str | None) -> None:
        if uri is not None:
            self.blobs.delete(uri)

    def _discard_replaced(self, result: PutResult) -> None:
        replaced = result.replaced
        if replaced is not None and replaced.output_uri not in (None, result.stored.output_uri):
            self._discard_blob(replaced.output_uri)

    def delete(self, key: Key, *, timeout: Timeout = None) -> None:
        """Delete the entry (and its blob if this catalog wrote it); NotFoundError if absent,
        DeadlineExceededError once ``timeout`` passes.
        """
        cache_key = hashing.cache_key(key)
        with deadlines.bounded(self._budget(timeout)):
            row = self.manager.delete(self._scope(key), cache_key)
            self._discard_blob(row.output_uri)

    def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: Interval, *, timeout: Timeout = None
    ) -> Reservation:
        """Acquire or extend ``owner_id``'s reservation on ``key``, or return the holder's.

        ``heartbeat_interval`` is a timedelta or seconds (TypeError otherwise, see
        :func:`~taskcache.wiretime.as_interval`). DeadlineExceededError once ``timeout``
        passes (nothing granted then).
        """
        heartbeat = as_interval(heartbeat_interval, "heartbeat_interval")
        cache_key = hashing.cache_key(key)
        scope = self._scope(key)
        if timeout is None and self.timeout is None:
            row = self.manager.get_or_extend_reservation(scope, cache_key, owner_id, heartbeat)
        else:
            with deadlines.bounded(self._budget(timeout)):
                row = self.manager.get_or_extend_reservation(scope, cache_key, owner_id, heartbeat)
        return Reservation(
            key=row.key,
            owner_id=row.owner_id,
            heartbeat_interval=row.heartbeat_interval,
            expires_at=row.expires_at,
        )

    def release_reservation(self, key: Key, owner_id: str, *, timeout: Timeout = None) -> None:
        """Release ``owner_id``'s reservation on ``key``; a no-op if it holds none.

        DeadlineExceededError once ``timeout`` passes.
        """
        cache_key = hashing.cache_key(key)
        if timeout is None and self.timeout is None:
            self.manager.release_reservation(self._scope(key), cache_key, owner_id)
            return
        with deadlines.bounded(self._budget(timeout)):
            self.manager.release_reservation(self._scope(key), cache_key, owner_id)

    def get_reservation_cache(self, owner_id: str, *, timeout: Timeout = None) -> ReservationCache:
        """Return what this client remembers of ``owner_id``'s last reservation attempt
        (in memory: ``timeout`` is checked, never needed).
        """
        as_timeout(timeout)
        return self._reservations.get(owner_id)

    def update_reservation_cache(
        self, owner_id: str, entry: ReservationCache, *, timeout: Timeout = None
    ) -> None:
        """Remember ``entry`` for ``owner_id`` (bounded, least recently used forgotten first;
        in memory: ``timeout`` is checked, never needed).
        """
        as_timeout(timeout)
        self._reservations.put(owner_id, entry)

    def entries(
        self,
        *,
        page_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> Iterator[CatalogEntry]:
        """Iterate over the catalog's entries, most recently updated first, as
        :class:`~taskcache.CatalogEntry` records.

        ``selection`` (:class:`~taskcache.clients.base.EntrySelection`): scope, ``task`` (the
        stored source identifier's name, ``key.identifier.name`` when the entry was put) and
        ``key_prefix``; TypeError for an unknown name. Rows are fetched ``page_size`` at a
        time as the iteration proceeds; entries written meanwhile may or may not appear, none
        appears twice. Raises InvalidArgumentError if ``page_size`` < 1 (at once); UnavailableError
        once closed or if the store fails, DeadlineExceededError if fetching a page takes
        longer than ``timeout`` (while iterating).
        """
        return itertools.chain.from_iterable(self._entry_pages(selection, page_size, timeout))

    def _entry_pages(
        self, selection: EntrySelection, page_size: int, timeout: Timeout
    ) -> Iterator[list[CatalogEntry]]:
        # Imported here (and in stats and clear): `import taskcache`, and so `taskcache key`,
        # must stay free of the operator code.
        from taskcache import operations  # noqa: PLC0415

        budget = self._budget(timeout)
        entry_filter, task = _selected(selection)
        pages = operations.iter_entries(self.manager.repository, entry_filter, task, page_size)
        return pages if budget is None else _each_page_bounded(pages, budget)

    def stats(self, *, timeout: Timeout = None) -> CatalogStats:
        """Return the catalog's totals: entries, inline bytes, blob entries, unexpired
        reservations (at the client's clock) and per-scope figures (``by_scope``).

        Raises UnavailableError once closed or if the store fails, DeadlineExceededError
        once ``timeout`` passes.
        """
        from taskcache import operations  # noqa: PLC0415

        with deadlines.bounded(self._budget(timeout)):
            return operations.catalog_stats(self.manager.repository, self.manager.clock())

    def clear(
        self,
        *,
        batch_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> int:
        """Delete the entries :meth:`entries` would list with the same ``selection`` (without
        one: every entry); return how many were deleted.

        Each deleted entry's outputs blob is deleted too when it lies under this client's blob
        root (``storage``), the same ownership check as ``taskcache gc --delete-blobs``: blobs
        elsewhere (outputs stored by reference) are never touched; a blob that fails to delete
        is left behind, not raised. Deletes ``batch_size`` entries per atomic step; batches
        already deleted stay deleted if it fails midway. Safe beside concurrent writers:
        entries present when it starts and not rewritten are all deleted, an entry put or
        updated while it runs may survive (it does if rewritten after clear read it), and
        nothing written after it returns is touched.

        Raises InvalidArgumentError if ``batch_size`` < 1; UnavailableError once closed or if
        the store fails; DeadlineExceededError once ``timeout`` (the budget of the whole
        clear) passes, the batches deleted before staying deleted.
        """
        from taskcache import operations  # noqa: PLC0415

        entry_filter, task = _selected(selection)
        with deadlines.bounded(self._budget(timeout)):
            summary = operations.clear(
                self.manager.repository, self.blobs, entry_filter, task, batch_size
            )
        return summary.entries

    def _release(self) -> None:
        self.manager.flush_accesses()
        self.manager.repository.close()
        if self._on_close is not None:
            self._on_close()


class AsyncEmbeddedClient(AsyncWrites, AsyncComputesOnce, AsyncCloseable):
    """The asynchronous twin of :class:`EmbeddedClient`; blocking work runs in worker threads.

    It is an :class:`~taskcache.AsyncOperatorClient`; its :meth:`entries` is an async
    iterator (``async for``) fetching each page in a worker thread.
    """

    def __init__(self, client: EmbeddedClient) -> None:
        self._client = client

    @property
    def blobs(self) -> BlobStore:
        """See :attr:`EmbeddedClient.blobs` (the wrapped client's storage)."""
        return self._client.blobs

    async def get(self, key: Key, *, timeout: Timeout = None) -> Entry:
        """See :meth:`EmbeddedClient.get`."""
        return await _off_loop(functools.partial(self._client.get, key, timeout=timeout))

    async def get_outputs(self, key: Key, *, timeout: Timeout = None) -> literals_pb2.LiteralMap:
        """See :meth:`EmbeddedClient.get_outputs`."""
        return await _off_loop(functools.partial(self._client.get_outputs, key, timeout=timeout))

    async def _write(self, write: CheckedWrite) -> Status:
        return await _off_loop(self._client._write, write)

    async def delete(self, key: Key, *, timeout: Timeout = None) -> None:
        """See :meth:`EmbeddedClient.delete`."""
        await _off_loop(functools.partial(self._client.delete, key, timeout=timeout))

    async def get_or_extend_reservation(
        self, key: Key, owner_id: str, heartbeat_interval: Interval, *, timeout: Timeout = None
    ) -> Reservation:
        """See :meth:`EmbeddedClient.get_or_extend_reservation`."""
        reserve = functools.partial(
            self._client.get_or_extend_reservation,
            key,
            owner_id,
            heartbeat_interval,
            timeout=timeout,
        )
        return await _off_loop(reserve)

    async def release_reservation(
        self, key: Key, owner_id: str, *, timeout: Timeout = None
    ) -> None:
        """See :meth:`EmbeddedClient.release_reservation`."""
        release = functools.partial(
            self._client.release_reservation, key, owner_id, timeout=timeout
        )
        await _off_loop(release)

    async def get_reservation_cache(
        self, owner_id: str, *, timeout: Timeout = None
    ) -> ReservationCache:
        """See :meth:`EmbeddedClient.get_reservation_cache` (in memory; no thread hop)."""
        return self._client.get_reservation_cache(owner_id, timeout=timeout)

    async def update_reservation_cache(
        self, owner_id: str, entry: ReservationCache, *, timeout: Timeout = None
    ) -> None:
        """See :meth:`EmbeddedClient.update_reservation_cache` (in memory; no thread hop)."""
        self._client.update_reservation_cache(owner_id, entry, timeout=timeout)

    def entries(
        self,
        *,
        page_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> AsyncIterator[CatalogEntry]:
        """See :meth:`EmbeddedClient.entries`; iterate with ``async for`` (each page is
        fetched in a worker thread).
        """
        return _each_entry(self._client._entry_pages(selection, page_size, timeout))

    async def stats(self, *, timeout: Timeout = None) -> CatalogStats:
        """See :meth:`EmbeddedClient.stats`."""
        return await _off_loop(functools.partial(self._client.stats, timeout=timeout))

    async def clear(
        self,
        *,
        batch_size: int = OPERATOR_BATCH_SIZE,
        timeout: Timeout = None,
        **selection: Unpack[EntrySelection],
    ) -> int:
        """See :meth:`EmbeddedClient.clear`."""
        clear = functools.partial(
            self._client.clear, batch_size=batch_size, timeout=timeout, **selection
        )
        return await _off_loop(clear)

    async def _release(self) -> None:
        await _off_loop(self._client.close)


def _each_page_bounded(
    pages: Iterator[list[CatalogEntry]], timeout: float
) -> Iterator[list[CatalogEntry]]:
    """Yield the pages of ``pages``, each fetched within ``timeout`` seconds."""
    while True:
        # Carried only while the page is fetched, never across the yield: the consumer's own
        # code between pages is not the call's.
        with deadlines.bounded(timeout):
            page = next(pages, None)
        if page is None:
            return
        yield page


async def _each_entry(pages: Iterator[list[CatalogEntry]]) -> AsyncIterator[CatalogEntry]:
    """Yield the entries of ``pages``, advancing it (one query) in a worker thread."""
    while (page := await _off_loop(next, pages, None)) is not None:
        for entry in page:
            yield entry


def _hit_status(source_identifier: bytes, key_map: dict[str, str]) -> Status:
    """Return the CACHE_HIT status of a stored entry (deferred: a hit's caller may never
    read it).
    """
    return hit_status(identifier_pb2.Identifier.FromString(source_identifier), key_map)


def _selected(selection: EntrySelection) -> tuple[EntryFilter, str | None]:
    """Return the listing filter and task name of ``selection``; TypeError naming an unknown
    selection keyword (mypy catches it statically; this catches it at run time).
    """
    check_names(selection, EntrySelection, "the entry selection")
    scope = selection.get("scope")
    org, project, domain = selection.get("org"), selection.get("project"), selection.get("domain")
    if scope is not None:
        if (org, project, domain) != (None, None, None):
            raise TypeError("the entry selection takes scope or org/project/domain, not both")
        from taskcache.operations import parse_scope  # noqa: PLC0415 -- see _entry_pages

        parsed = parse_scope(scope)
        org, project, domain = parsed.org, parsed.project, parsed.domain
    entry_filter = EntryFilter(
        org=org, project=project, domain=domain, key_prefix=selection.get("key_prefix")
    )
    return entry_filter, selection.get("task")
