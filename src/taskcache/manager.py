"""The cache policy: the one place that decides put, overwrite, max age, expiry, access
recording and reservation owners.

Every client (embedded or behind the service) calls a :class:`CacheManager` (or, on the
server's PostgreSQL path, an :class:`AsyncCacheManager`: the same rules, awaited); repositories
only apply the conditions it hands them. Both managers take every decision from one shared
policy (:class:`_CachePolicy`) and differ only in how they call the repository.

It must not do I/O beyond one repository call per decision, nor know transports, blobs or target
strings. The one deferred call is the access record: hits due one are buffered
(:class:`~taskcache.access_buffer.PendingAccesses`) and written many per call, so a hit on a
large catalog of rarely repeated keys stays a read.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Unpack

from taskcache.access_buffer import AccessBatch, PendingAccesses
from taskcache.errors import (
    AlreadyExistsError,
    CacheError,
    InvalidArgumentError,
    NotFoundError,
)
from taskcache.repositories.base import (
    AsyncRepository,
    CreateOutcome,
    EntryRow,
    Replaceable,
    Repository,
    ReservationRow,
    Scope,
    Servable,
)

if TYPE_CHECKING:
    # Imported where the async manager runs: ``import taskcache`` must not load asyncio.
    import asyncio

logger = logging.getLogger("taskcache.manager")

Clock = Callable[[], datetime]
_Repository = TypeVar("_Repository", bound=Repository | AsyncRepository)
# A CacheManager keeps its repository's type, so the embedded client can also run the
# operator queries on an OperatorRepository it serves from.
_SyncRepository = TypeVar("_SyncRepository", bound=Repository)
_T = TypeVar("_T")
# A row the hit rules are applied to: an EntryRow, or a repository's leaner HitRow.
_Row = TypeVar("_Row", bound=Servable)

MAX_KEY_LENGTH = 1024
MAX_OUTPUT_URI_LENGTH = 4096
DEFAULT_MAX_RESERVATION_HEARTBEAT = timedelta(seconds=10)
DEFAULT_HEARTBEAT_GRACE_MULTIPLIER = 3.0
# A hit records its time only if the last recorded access is older than this: at most one
# write per entry per window, so a hot entry's hits stay reads.
DEFAULT_ACCESS_RESOLUTION = timedelta(seconds=60)
# Hits due an access record are written in batches: when this many are waiting, or when the
# oldest has waited this long (and on flush_accesses: close, before eviction).
DEFAULT_ACCESS_FLUSH_SIZE = 128
DEFAULT_ACCESS_FLUSH_INTERVAL = timedelta(seconds=5)


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewEntry:
    """What a caller asks to store; ``created_at`` None means "now" (or "keep" on overwrite).

    ``ttl``: how long the entry is served (None: the catalog's default TTL, if any).
    ``blob_bytes``: the size of the blob at ``output_uri``, when the writer knows it.
    """

    output_uri: str | None
    output_literals: bytes | None
    source_identifier: bytes
    key_map: dict[str, str]
    created_at: datetime | None = None
    ttl: timedelta | None = None
    blob_bytes: int | None = None


class PutOptions(TypedDict, total=False):
    """How a put treats an existing entry: ``overwrite`` replaces any (default False);
    otherwise ``max_age`` lets a create replace one last updated longer ago than that.
    """

    overwrite: bool
    max_age: timedelta | None


@dataclass(frozen=True)
class PutResult:
    """A successful write: the stored row and the row it replaced (for blob clean-up)."""

    stored: EntryRow
    replaced: EntryRow | None


class ManagerOptions(TypedDict, total=False):
    """The keyword options of :class:`CacheManager` and :class:`AsyncCacheManager` (see
    :class:`_CachePolicy` for each one's meaning and default).
    """

    clock: Clock
    max_reservation_heartbeat: timedelta
    heartbeat_grace_multiplier: float
    default_ttl: timedelta | None
    access_resolution: timedelta
    access_flush_size: int
    access_flush_interval: timedelta


class _CachePolicy(Generic[_Repository]):
    """The rules shared by :class:`CacheManager` and :class:`AsyncCacheManager`.

    Pure decisions only, no I/O: the managers validate and plan with these methods, make one
    call on ``repository``, and interpret its answer with them. ``max_reservation_heartbeat``
    caps the heartbeat a caller may ask for; ``heartbeat_grace_multiplier`` sets how many
    heartbeats a reservation outlives its last extension. ``default_ttl`` is the expiry of
    puts that ask for none (None: they never expire). A hit records its time only when the
    last recorded access is older than ``access_resolution``; that record is buffered and
    written with others in one repository call once ``access_flush_size`` hits are waiting
    or the oldest has waited ``access_flush_interval`` (and by ``flush_accesses``). ``clock``
    returns aware UTC datetimes (injectable for tests). Raises InvalidArgumentError for a bad
    option.
    """

    def __init__(
        self,
        repository: _Repository,
        *,
        clock: Clock = utc_now,
        max_reservation_heartbeat: timedelta = DEFAULT_MAX_RESERVATION_HEARTBEAT,
        heartbeat_grace_multiplier: float = DEFAULT_HEARTBEAT_GRACE_MULTIPLIER,
        default_ttl: timedelta | None = None,
        access_resolution: timedelta = DEFAULT_ACCESS_RESOLUTION,
        access_flush_size: int = DEFAULT_ACCESS_FLUSH_SIZE,
        access_flush_interval: timedelta = DEFAULT_ACCESS_FLUSH_INTERVAL,
    ) -> None:
        if max_reservation_heartbeat <= timedelta(0):
            raise InvalidArgumentError("must be positive", field="max_reservation_heartbeat")
        if not (math.isfinite(heartbeat_grace_multiplier) and heartbeat_grace_multiplier > 0):
            raise InvalidArgumentError(
                "must be a positive finite number", field="heartbeat_grace_multiplier"
            )
        validate_ttl(default_ttl, "default_ttl")
        if access_resolution < timedelta(0):
            raise InvalidArgumentError("must not be negative", field="access_resolution")
        if access_flush_size < 1:
            raise InvalidArgumentError("must be at least 1", field="access_flush_size")
        if access_flush_interval < timedelta(0):
            raise InvalidArgumentError("must not be negative", field="access_flush_interval")
        self.repository = repository
        self.clock = clock
        self.max_reservation_heartbeat = max_reservation_heartbeat
        self.heartbeat_grace_multiplier = heartbeat_grace_multiplier
        self.default_ttl = default_ttl
        self.access_resolution = access_resolution
        self._pending_accesses = PendingAccesses(access_flush_size, access_flush_interval)

    # --- get / delete ---------------------------------------------------------------------

    @staticmethod
    def _plan_get(key: str, max_age: timedelta | None) -> None:
        validate_key(key)
        validate_max_age(max_age)

    @staticmethod
    def _check_hit(row: _Row | None, key: str, max_age: timedelta | None, now: datetime) -> _Row:
        """Return ``row`` if it may be served at ``now``; NotFoundError if absent, too old or
        expired.
        """
        if row is None:
            raise NotFoundError(f"no cache entry for key {key!r}")
        if is_stale(row.last_updated_at, now, max_age):
            raise NotFoundError(f"cache entry for key {key!r} is older than {max_age}")
        if is_expired(row.expires_at, now):
            raise NotFoundError(f"cache entry for key {key!r} expired at {row.expires_at}")
        return row

    def _access_cutoff(self, row: Servable, now: datetime) -> datetime | None:
        """Return the ``if_before`` of the access write a hit on ``row`` at ``now`` makes, or
        None when its last recorded access is recent enough that the hit writes nothing.
        """
        cutoff = now - self.access_resolution
        if row.last_accessed_at is not None and row.last_accessed_at >= cutoff:
            return None
        return cutoff

    def _note_hit(self, scope: Scope, key: str, row: Servable, now: datetime) -> AccessBatch | None:
        """Buffer the access record a hit on ``row`` (``key`` in ``scope``) at ``now`` is due,
        if any; return the
        batch to write now, or None (nothing due yet). A hit needing no record still hands
        out a batch that has waited long enough, so hot entries' hits keep the bound.
        """
        if self._access_cutoff(row, now) is None:
            return self._pending_accesses.due(now)
        return self._pending_accesses.add((scope, key), now)

    def _if_before(self, batch: AccessBatch) -> datetime:
        """The condition of ``batch``'s write: an entry's record moves only if it is still
        older than the window at the batch's time (another process may have written it).
        """
        return batch.at - self.access_resolution

    @staticmethod
    def _dropped_accesses(batch: AccessBatch, error: CacheError) -> int:
        # A lost access record only makes an entry look older to size eviction: the hits
        # that were due it have been served already.
        logger.warning("dropped the access records of %d hits: %s", len(batch.entries), error)
        return 0

    @staticmethod
    def _dangling_row(
        scope: Scope, key: str, output_uri: str, last_updated_at: datetime
    ) -> EntryRow:
        """The row a conditional delete compares with: the repository matches its outputs
        (this URI, no inline literals) and ``last_updated_at``, nothing else.
        """
        validate_key(key)
        if not output_uri:
            raise InvalidArgumentError("must not be empty", field="output_uri")
        return EntryRow(
            scope=scope,
            key=key,
            output_uri=output_uri,
            output_literals=None,
            source_identifier=b"",
            key_map={},
            created_at=last_updated_at,
            last_updated_at=last_updated_at,
        )

    @staticmethod
    def _check_deleted(row: EntryRow | None, key: str) -> EntryRow:
        if row is None:
            raise NotFoundError(f"no cache entry for key {key!r}")
        return row

    # --- put ------------------------------------------------------------------------------

    def _plan_put(
        self, scope: Scope, key: str, entry: NewEntry, max_age: timedelta | None
    ) -> tuple[EntryRow, datetime | None]:
        """Validate a put; return the row to write and the create-only replacement cutoff."""
        validate_key(key)
        validate_max_age(max_age)
        if entry.output_uri is None and entry.output_literals is None:
            raise InvalidArgumentError(
                "an output URI or output literals are required", field="output"
            )
        if entry.output_uri is not None:
            validate_output_uri(entry.output_uri, "output_uri")
        if entry.created_at is not None and entry.created_at.utcoffset() is None:
            raise InvalidArgumentError("must be timezone-aware", field="created_at")
        validate_ttl(entry.ttl, "ttl")
        if entry.blob_bytes is not None and entry.blob_bytes < 0:
            raise InvalidArgumentError("must not be negative", field="blob_bytes")
        now = self.clock()
        ttl = entry.ttl if entry.ttl is not None else self.default_ttl
        row = EntryRow(
            scope=scope,
            key=key,
            output_uri=entry.output_uri,
            output_literals=entry.output_literals,
            source_identifier=entry.source_identifier,
            key_map=dict(entry.key_map),
            created_at=entry.created_at if entry.created_at is not None else now,
            last_updated_at=now,
            expires_at=expiry(now, ttl),
            blob_bytes=entry.blob_bytes if entry.output_uri is not None else None,
            last_accessed_at=now,
        )
        return row, replacement_cutoff(now, max_age)

    @staticmethod
    def _keep_created_at(entry: NewEntry) -> bool:
        """Whether an overwrite keeps the replaced entry's ``created_at``."""
        return entry.created_at is None

    @staticmethod
    def _finish_overwrite(row: EntryRow, replaced: EntryRow | None, entry: NewEntry) -> PutResult:
        if replaced is not None and entry.created_at is None:
            row = replace(row, created_at=replaced.created_at)
        return PutResult(stored=row, replaced=replaced)

    @staticmethod
    def _finish_create(row: EntryRow, outcome: CreateOutcome) -> PutResult:
        if not outcome.written:
            raise AlreadyExistsError(f"a cache entry already exists for key {row.key!r}")
        return PutResult(stored=row, replaced=outcome.replaced)

    # --- reservations ---------------------------------------------------------------------

    def effective_heartbeat(self, requested: timedelta) -> timedelta:
        """Return the heartbeat granted for ``requested``: itself if 0 < it < max, else max."""
        if timedelta(0) < requested < self.max_reservation_heartbeat:
            return requested
        return self.max_reservation_heartbeat

    def _plan_reservation(
        self, scope: Scope, key: str, owner_id: str, heartbeat_interval: timedelta
    ) -> tuple[ReservationRow, datetime]:
        """Validate; return the reservation wanted (fresh expiry) and the "now" it uses."""
        validate_key(key)
        validate_owner(owner_id)
        heartbeat = self.effective_heartbeat(heartbeat_interval)
        now = self.clock()
        wanted = ReservationRow(
            scope=scope,
            key=key,
            owner_id=owner_id,
            heartbeat_interval=heartbeat,
            expires_at=now + heartbeat * self.heartbeat_grace_multiplier,
        )
        return wanted, now

    @staticmethod
    def _plan_release(key: str, owner_id: str) -> None:
        validate_key(key)
        validate_owner(owner_id)


class CacheManager(_CachePolicy[_SyncRepository]):
    """Applies the catalog's rules on top of a :class:`Repository`.

    ``max_reservation_heartbeat`` caps the heartbeat a caller may ask for;
    ``heartbeat_grace_multiplier`` sets how many heartbeats a reservation outlives its last
    extension. ``clock`` returns aware UTC datetimes (injectable for tests).
    """

    def get(self, scope: Scope, key: str, max_age: timedelta | None = None) -> EntryRow:
        """Return the entry for ``key``.

        Raises NotFoundError when absent, expired or, with ``max_age``, last updated longer
        ago than that; InvalidArgumentError for a malformed key. A hit whose last recorded
        access is older than ``access_resolution`` is buffered for an access record; the hit
        that completes a batch (``access_flush_size`` waiting, or the oldest waiting
        ``access_flush_interval``) writes it in one repository call, whose failure is logged
        and does not fail the hit.
        """
        return self.serve(self.repository.get_entry, scope, key, max_age)

    def serve(
        self,
        read: Callable[[Scope, str], _Row | None],
        scope: Scope,
        key: str,
        max_age: timedelta | None = None,
    ) -> _Row:
        """Return the row ``read(scope, key)`` returns (the repository's ``get_entry``, or a
        reader of fewer columns such as ``get_hit``) under :meth:`get`'s rules and errors.
        """
        self._plan_get(key, max_age)
        now = self.clock()
        row = self._check_hit(read(scope, key), key, max_age, now)
        due = self._note_hit(scope, key, row, now)
        if due is not None:
            self._write_accesses(due)
        return row

    def flush_accesses(self) -> int:
        """Write the access records of every buffered hit in one repository call; return
        how many entries changed. Call it before this process's size eviction (so the order
        follows every hit) and before closing the repository. Never raises a store error: a
        failed write is logged and its records dropped (0).
        """
        return self._write_accesses(self._pending_accesses.take())

    def _write_accesses(self, batch: AccessBatch | None) -> int:
        if batch is None:
            return 0
        try:
            return self.repository.record_accesses(batch.entries, batch.at, self._if_before(batch))
        except CacheError as error:
            return self._dropped_accesses(batch, error)

    def put(
        self, scope: Scope, key: str, entry: NewEntry, **options: Unpack[PutOptions]
    ) -> PutResult:
        """Store ``entry`` under ``key`` (options: :class:`PutOptions`).

        Without ``overwrite``: raises AlreadyExistsError if an unexpired entry exists that is
        not older than ``max_age`` (any unexpired entry when ``max_age`` is None); the check
        and the write are atomic. With ``overwrite``: replaces any entry, keeping its
        ``created_at`` unless ``entry.created_at`` is set. ``last_updated_at`` is always now;
        the entry expires ``entry.ttl`` (else ``default_ttl``) after now, or never.
        """
        row, cutoff = self._plan_put(scope, key, entry, options.get("max_age"))
        if options.get("overwrite", False):
            replaced = self.repository.overwrite_entry(
                row, keep_created_at=self._keep_created_at(entry)
            )
            return self._finish_overwrite(row, replaced, entry)
        outcome = self.repository.create_entry(
            row, Replaceable(updated_before=cutoff, expired_at=row.last_updated_at)
        )
        return self._finish_create(row, outcome)

    def delete(self, scope: Scope, key: str) -> EntryRow:
        """Delete the entry and return it; NotFoundError if there was none."""
        validate_key(key)
        return self._check_deleted(self.repository.delete_entry(scope, key), key)

    def discard_dangling(
        self, scope: Scope, key: str, output_uri: str, last_updated_at: datetime
    ) -> bool:
        """Delete the entry whose outputs at ``output_uri`` vanished, only if it is still that
        version (same URI, same ``last_updated_at``): a worker may have re-put it meanwhile.
        Returns whether it was deleted.
        """
        return self.repository.delete_entry_if_unchanged(
            self._dangling_row(scope, key, output_uri, last_updated_at)
        )

    def get_or_extend_reservation(
        self, scope: Scope, key: str, owner_id: str, heartbeat_interval: timedelta
    ) -> ReservationRow:
        """Grant or extend ``owner_id``'s reservation on ``key``, or return the holder's.

        The caller gets a fresh expiry (now + heartbeat x grace multiplier) when there is no
        reservation, when it already holds it, or when the holder's expired. Otherwise the
        current holder's reservation is returned unchanged.
        """
        wanted, now = self._plan_reservation(scope, key, owner_id, heartbeat_interval)
        return self.repository.acquire_reservation(wanted, now)

    def release_reservation(self, scope: Scope, key: str, owner_id: str) -> None:
        """Release ``owner_id``'s reservation on ``key``; absent or foreign ones are left alone."""
        self._plan_release(key, owner_id)
        self.repository.release_reservation(scope, key, owner_id)


class AsyncCacheManager(_CachePolicy[AsyncRepository]):
    """:class:`CacheManager`'s rules on top of an :class:`AsyncRepository`, as coroutines.

    Same options and methods as :class:`CacheManager` (see there); every rule comes from the
    shared policy, only the repository calls are awaited. A batch of access records is
    written by a background task, never by the hit: the hit that completes a batch starts
    it, and the first hit buffered after a write starts a timer writing whatever is waiting
    ``access_flush_interval`` later. Await :meth:`flush_accesses` before closing the
    repository.
    """

    def __init__(self, repository: AsyncRepository, **options: Unpack[ManagerOptions]) -> None:
        super().__init__(repository, **options)
        # The task writing what is buffered once the interval passes, while it sleeps.
        self._flush_timer: asyncio.Task[int] | None = None
        # Every background write, held until done (the loop keeps only weak references).
        self._access_writes: set[asyncio.Task[int]] = set()

    async def get(self, scope: Scope, key: str, max_age: timedelta | None = None) -> EntryRow:
        """See :meth:`CacheManager.get` (the access write runs in the background)."""
        return await self.serve(self.repository.get_entry, scope, key, max_age)

    async def serve(
        self,
        read: Callable[[Scope, str], Awaitable[_Row | None]],
        scope: Scope,
        key: str,
        max_age: timedelta | None = None,
    ) -> _Row:
        """See :meth:`CacheManager.serve` (``read`` is awaited; the access write runs in the
        background).
        """
        self._plan_get(key, max_age)
        now = self.clock()
        row = self._check_hit(await read(scope, key), key, max_age, now)
        due = self._note_hit(scope, key, row, now)
        if due is not None:
            self._start_write(self._write_accesses(due))
        if self._flush_timer is None and len(self._pending_accesses):
            self._flush_timer = self._start_write(self._flush_later())
        return row

    async def flush_accesses(self) -> int:
        """See :meth:`CacheManager.flush_accesses`; also waits for the background writes
        in progress (their counts are not included).
        """
        if self._flush_timer is not None:
            # Still asleep (it clears the attribute before it writes): what it would write
            # is written below.
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._access_writes:
            import asyncio  # noqa: PLC0415  (see the module's imports)

            await asyncio.wait(self._access_writes)
        return await self._write_accesses(self._pending_accesses.take())

    def _start_write(self, write: Coroutine[Any, Any, int]) -> asyncio.Task[int]:
        task = _background(write)
        self._access_writes.add(task)
        task.add_done_callback(self._access_writes.discard)
        return task

    async def _flush_later(self) -> int:
        import asyncio  # noqa: PLC0415  (see the module's imports)

        await asyncio.sleep(self._pending_accesses.max_wait.total_seconds())
        # Hits from here on start the next timer, so nothing buffered is left without one.
        self._flush_timer = None
        return await self._write_accesses(self._pending_accesses.take())

    async def _write_accesses(self, batch: AccessBatch | None) -> int:
        if batch is None:
            return 0
        try:
            return await self.repository.record_accesses(
                batch.entries, batch.at, self._if_before(batch)
            )
        except CacheError as error:
            return self._dropped_accesses(batch, error)

    async def put(
        self, scope: Scope, key: str, entry: NewEntry, **options: Unpack[PutOptions]
    ) -> PutResult:
        """See :meth:`CacheManager.put`."""
        row, cutoff = self._plan_put(scope, key, entry, options.get("max_age"))
        if options.get("overwrite", False):
            replaced = await self.repository.overwrite_entry(
                row, keep_created_at=self._keep_created_at(entry)
            )
            return self._finish_overwrite(row, replaced, entry)
        outcome = await self.repository.create_entry(
            row, Replaceable(updated_before=cutoff, expired_at=row.last_updated_at)
        )
        return self._finish_create(row, outcome)

    async def delete(self, scope: Scope, key: str) -> EntryRow:
        """See :meth:`CacheManager.delete`."""
        validate_key(key)
        return self._check_deleted(await self.repository.delete_entry(scope, key), key)

    async def discard_dangling(
        self, scope: Scope, key: str, output_uri: str, last_updated_at: datetime
    ) -> bool:
        """See :meth:`CacheManager.discard_dangling`."""
        return await self.repository.delete_entry_if_unchanged(
            self._dangling_row(scope, key, output_uri, last_updated_at)
        )

    async def get_or_extend_reservation(
        self, scope: Scope, key: str, owner_id: str, heartbeat_interval: timedelta
    ) -> ReservationRow:
        """See :meth:`CacheManager.get_or_extend_reservation`."""
        wanted, now = self._plan_reservation(scope, key, owner_id, heartbeat_interval)
        return await self.repository.acquire_reservation(wanted, now)

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> None:
        """See :meth:`CacheManager.release_reservation`."""
        self._plan_release(key, owner_id)
        await self.repository.release_reservation(scope, key, owner_id)


def _background(coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """Start ``coroutine`` as a task outside the caller's context: a request's deadline
    (:mod:`taskcache.deadlines`) must not bound a write that outlives the request.
    """
    import asyncio  # noqa: PLC0415  (see the module's imports)

    return asyncio.get_running_loop().create_task(coroutine, context=contextvars.Context())


def is_stale(last_updated_at: datetime, now: datetime, max_age: timedelta | None) -> bool:
    """Return whether an entry last updated at ``last_updated_at`` is too old to serve."""
    return max_age is not None and now - last_updated_at > max_age


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Return whether an entry expiring at ``expires_at`` (None: never) is expired at ``now``."""
    return expires_at is not None and expires_at <= now


def expiry(now: datetime, ttl: timedelta | None) -> datetime | None:
    """Return when an entry written at ``now`` with ``ttl`` expires (None: never); a TTL
    reaching past year 9999 never expires.
    """
    if ttl is None:
        return None
    try:
        return now + ttl
    except OverflowError:
        return None


def validate_ttl(ttl: timedelta | None, field: str) -> None:
    """Raise InvalidArgumentError naming ``field`` unless ``ttl`` is None or positive."""
    if ttl is not None and ttl <= timedelta(0):
        raise InvalidArgumentError("must be positive", field=field)


def replacement_cutoff(now: datetime, max_age: timedelta | None) -> datetime | None:
    """Return the time before which an existing entry is old enough for a create to replace
    it (``now - max_age``), or None if none can be: no ``max_age``, or one reaching back
    before year 1 (where ``now - max_age`` would overflow; no entry is that old).
    """
    if max_age is None or max_age > now - datetime.min.replace(tzinfo=now.tzinfo):
        return None
    return now - max_age


def validate_output_uri(uri: str, field: str) -> None:
    """Raise InvalidArgumentError naming ``field`` unless ``uri`` is non-empty and at most
    :data:`MAX_OUTPUT_URI_LENGTH` characters.
    """
    if not uri:
        raise InvalidArgumentError("must not be empty", field=field)
    if len(uri) > MAX_OUTPUT_URI_LENGTH:
        raise InvalidArgumentError(
            f"is {len(uri)} characters long; the limit is {MAX_OUTPUT_URI_LENGTH}", field=field
        )


def validate_key(key: str) -> None:
    """Raise InvalidArgumentError unless ``key`` is non-empty and at most 1 024 characters."""
    if not key:
        raise InvalidArgumentError("must not be empty", field="key")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(
            f"is {len(key)} characters long; the limit is {MAX_KEY_LENGTH}", field="key"
        )


def validate_max_age(max_age: timedelta | None) -> None:
    """Raise InvalidArgumentError if ``max_age`` is negative."""
    if max_age is not None and max_age < timedelta(0):
        raise InvalidArgumentError("must not be negative", field="max_age")


def validate_owner(owner_id: str) -> None:
    """Raise InvalidArgumentError unless ``owner_id`` is non-empty."""
    if not owner_id:
        raise InvalidArgumentError("must not be empty", field="owner_id")
