"""The cache policy: the one place that decides put, overwrite, max age and reservation owners.

Every client (embedded or behind the service) calls a :class:`CacheManager` (or, on the
server's PostgreSQL path, an :class:`AsyncCacheManager`: the same rules, awaited); repositories
only apply the conditions it hands them. Both managers take every decision from one shared
policy (:class:`_CachePolicy`) and differ only in how they call the repository.

It must not do I/O beyond one repository call per decision, nor know transports, blobs or target
strings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Generic, TypedDict, TypeVar, Unpack

from taskcache.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from taskcache.repositories.base import (
    AsyncRepository,
    CreateOutcome,
    EntryRow,
    Repository,
    ReservationRow,
    Scope,
)

Clock = Callable[[], datetime]
_Repository = TypeVar("_Repository", bound=Repository | AsyncRepository)
# A CacheManager keeps its repository's type, so the embedded client can also run the
# operator queries on an OperatorRepository it serves from.
_SyncRepository = TypeVar("_SyncRepository", bound=Repository)

MAX_KEY_LENGTH = 1024
MAX_OUTPUT_URI_LENGTH = 4096
DEFAULT_MAX_RESERVATION_HEARTBEAT = timedelta(seconds=10)
DEFAULT_HEARTBEAT_GRACE_MULTIPLIER = 3.0


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewEntry:
    """What a caller asks to store; ``created_at`` None means "now" (or "keep" on overwrite)."""

    output_uri: str | None
    output_literals: bytes | None
    source_identifier: bytes
    key_map: dict[str, str]
    created_at: datetime | None = None


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


class _CachePolicy(Generic[_Repository]):
    """The rules shared by :class:`CacheManager` and :class:`AsyncCacheManager`.

    Pure decisions only, no I/O: the managers validate and plan with these methods, make one
    call on ``repository``, and interpret its answer with them. ``max_reservation_heartbeat``
    caps the heartbeat a caller may ask for; ``heartbeat_grace_multiplier`` sets how many
    heartbeats a reservation outlives its last extension. ``clock`` returns aware UTC
    datetimes (injectable for tests). Raises InvalidArgumentError for a bad option.
    """

    def __init__(
        self,
        repository: _Repository,
        *,
        clock: Clock = utc_now,
        max_reservation_heartbeat: timedelta = DEFAULT_MAX_RESERVATION_HEARTBEAT,
        heartbeat_grace_multiplier: float = DEFAULT_HEARTBEAT_GRACE_MULTIPLIER,
    ) -> None:
        if max_reservation_heartbeat <= timedelta(0):
            raise InvalidArgumentError("must be positive", field="max_reservation_heartbeat")
        if not (math.isfinite(heartbeat_grace_multiplier) and heartbeat_grace_multiplier > 0):
            raise InvalidArgumentError(
                "must be a positive finite number", field="heartbeat_grace_multiplier"
            )
        self.repository = repository
        self.clock = clock
        self.max_reservation_heartbeat = max_reservation_heartbeat
        self.heartbeat_grace_multiplier = heartbeat_grace_multiplier

    # --- get / delete ---------------------------------------------------------------------

    @staticmethod
    def _plan_get(key: str, max_age: timedelta | None) -> None:
        validate_key(key)
        validate_max_age(max_age)

    def _check_hit(self, row: EntryRow | None, key: str, max_age: timedelta | None) -> EntryRow:
        """Return ``row`` if it may be served; NotFoundError if absent or too old."""
        if row is None:
            raise NotFoundError(f"no cache entry for key {key!r}")
        # The clock is read only when an age limit applies: a hit without one needs no "now".
        if max_age is not None and is_stale(row.last_updated_at, self.clock(), max_age):
            raise NotFoundError(f"cache entry for key {key!r} is older than {max_age}")
        return row

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
        now = self.clock()
        row = EntryRow(
            scope=scope,
            key=key,
            output_uri=entry.output_uri,
            output_literals=entry.output_literals,
            source_identifier=entry.source_identifier,
            key_map=dict(entry.key_map),
            created_at=entry.created_at if entry.created_at is not None else now,
            last_updated_at=now,
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

        Raises NotFoundError when absent or, with ``max_age``, last updated longer ago than
        that; InvalidArgumentError for a malformed key.
        """
        self._plan_get(key, max_age)
        return self._check_hit(self.repository.get_entry(scope, key), key, max_age)

    def put(
        self, scope: Scope, key: str, entry: NewEntry, **options: Unpack[PutOptions]
    ) -> PutResult:
        """Store ``entry`` under ``key`` (options: :class:`PutOptions`).

        Without ``overwrite``: raises AlreadyExistsError if an entry exists that is not older
        than ``max_age`` (any existing entry when ``max_age`` is None); the check and the write
        are atomic. With ``overwrite``: replaces any entry, keeping its ``created_at`` unless
        ``entry.created_at`` is set. ``last_updated_at`` is always now.
        """
        row, cutoff = self._plan_put(scope, key, entry, options.get("max_age"))
        if options.get("overwrite", False):
            replaced = self.repository.overwrite_entry(
                row, keep_created_at=self._keep_created_at(entry)
            )
            return self._finish_overwrite(row, replaced, entry)
        outcome = self.repository.create_entry(row, replace_if_updated_before=cutoff)
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
    shared policy, only the repository calls are awaited.
    """

    async def get(self, scope: Scope, key: str, max_age: timedelta | None = None) -> EntryRow:
        """See :meth:`CacheManager.get`."""
        self._plan_get(key, max_age)
        return self._check_hit(await self.repository.get_entry(scope, key), key, max_age)

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
        outcome = await self.repository.create_entry(row, replace_if_updated_before=cutoff)
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


def is_stale(last_updated_at: datetime, now: datetime, max_age: timedelta | None) -> bool:
    """Return whether an entry last updated at ``last_updated_at`` is too old to serve."""
    return max_age is not None and now - last_updated_at > max_age


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
