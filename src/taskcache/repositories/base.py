"""The persistence contract: rows in, rows out, every policy decision one atomic statement.

Two protocols, so a backend implements only what its callers need:

* :class:`Repository` (and its coroutine twin :class:`AsyncRepository`) is the hot path the
  cache manager serves requests from: read, write and delete one entry, take and release a
  reservation, plus health and pool figures.
* :class:`OperatorRepository` adds the operator queries :mod:`taskcache.operations` runs
  (listings, bulk deletion by age, by expiry or of listed rows, the least-recently-used
  listing and stored bytes of the size cap, totals, reading a reservation, the one-cleaner
  lock). The SQLite and synchronous PostgreSQL repositories implement it; the server's
  asynchronous PostgreSQL repository does not.

Repositories never decide policy; the manager tells them the condition (a cutoff, an owner,
"now") and they apply it atomically. Times are timezone-aware UTC datetimes with microsecond
precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol, runtime_checkable


@dataclass(frozen=True)
class Scope:
    """The (org, project, domain) triple entries and reservations are filed under.

    Flyte 1 and unscoped requests use the empty scope ``Scope("", "", "")``.
    """

    org: str = ""
    project: str = ""
    domain: str = ""


@dataclass(frozen=True)
class EntryRow:
    """One stored cache entry.

    At least one of ``output_uri`` and ``output_literals`` (a serialized LiteralMap) is set.
    ``source_identifier`` is a serialized ``flyteidl2.core.Identifier``. ``expires_at``: when
    the entry stops being served (None: never). ``blob_bytes``: the size of the blob at
    ``output_uri`` recorded at put (None: unknown, e.g. outputs stored by reference).
    ``last_accessed_at``: the last recorded hit or write (coalesced, see
    :meth:`Repository.record_accesses`); None on a row about to be written means
    ``last_updated_at``. It is bookkeeping, so it takes no part in equality.
    """

    scope: Scope
    key: str
    output_uri: str | None
    output_literals: bytes | None
    source_identifier: bytes
    key_map: dict[str, str]
    created_at: datetime
    last_updated_at: datetime
    expires_at: datetime | None = None
    blob_bytes: int | None = None
    last_accessed_at: datetime | None = field(default=None, compare=False)

    @property
    def stored_bytes(self) -> int:
        """What the entry counts against a size cap: inline bytes plus the recorded blob size."""
        inline = 0 if self.output_literals is None else len(self.output_literals)
        return inline + (self.blob_bytes or 0)


class Servable(Protocol):
    """What serving a hit reads of a stored entry (an EntryRow or a HitRow): its outputs,
    and the times the manager's hit rules read.
    """

    @property
    def output_uri(self) -> str | None:
        """Where the outputs blob is, if not inline."""
        ...

    @property
    def output_literals(self) -> bytes | None:
        """The inline serialized LiteralMap, if any."""
        ...

    @property
    def last_updated_at(self) -> datetime:
        """When the entry was last written."""
        ...

    @property
    def expires_at(self) -> datetime | None:
        """When it stops being served (None: never)."""
        ...

    @property
    def last_accessed_at(self) -> datetime | None:
        """The last recorded hit or write."""
        ...


class HitRow(NamedTuple):
    """What serving a hit's outputs needs of an entry: its outputs and the times the hit
    rules read, each field as in the entry's :class:`EntryRow`.
    """

    output_uri: str | None
    output_literals: bytes | None
    last_updated_at: datetime
    expires_at: datetime | None
    last_accessed_at: datetime | None


@runtime_checkable
class HitReader(Protocol):
    """A repository that can read just a :class:`HitRow` (fewer columns than ``get_entry``)."""

    def get_hit(self, scope: Scope, key: str) -> HitRow | None:
        """Return the hit columns of the entry, or None; raises as ``get_entry``."""
        ...


@dataclass(frozen=True)
class ReservationRow:
    """One reservation: ``owner_id`` holds ``key`` until ``expires_at``.

    ``taken_over_from`` is set only on a row returned by a grant that replaced another
    owner's expired reservation (for metrics); it takes no part in equality.
    """

    scope: Scope
    key: str
    owner_id: str
    heartbeat_interval: timedelta
    expires_at: datetime
    taken_over_from: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PoolStats:
    """Database connections of a pooled repository: open, idle, and callers waiting."""

    size: int
    available: int
    waiting: int


@dataclass(frozen=True)
class Replaceable:
    """Which live entry a conditional create may replace: one last updated strictly before
    ``updated_before``, or one whose ``expires_at`` is at or before ``expired_at`` (None: that
    condition never holds, so the default replaces nothing).
    """

    updated_before: datetime | None = None
    expired_at: datetime | None = None


@dataclass(frozen=True)
class CreateOutcome:
    """Result of a conditional create: whether it wrote, and the row it replaced, if any."""

    written: bool
    replaced: EntryRow | None


@dataclass(frozen=True)
class EntryFilter:
    """Which entries an operator listing covers; None fields match everything."""

    org: str | None = None
    project: str | None = None
    domain: str | None = None
    key_prefix: str | None = None


@dataclass(frozen=True)
class EntryCursor:
    """Position after the last row of a page (listings run newest first)."""

    last_updated_at: datetime
    scope: Scope
    key: str


@dataclass(frozen=True)
class AccessCursor:
    """Position after the last row of a least-recently-used page."""

    last_accessed_at: datetime
    scope: Scope
    key: str


@dataclass(frozen=True)
class ProjectStats:
    """Entry count, inline bytes and entries with a blob of one (org, project, domain)."""

    scope: Scope
    entries: int
    inline_bytes: int
    blob_entries: int = 0


@dataclass(frozen=True)
class CatalogStats:
    """Totals for operators: entries, inline bytes, per-scope figures, live reservations."""

    entries: int
    inline_bytes: int
    blob_entries: int
    active_reservations: int
    by_scope: tuple[ProjectStats, ...]


class Repository(Protocol):
    """Row storage for entries and reservations: what serving requests needs.

    Every method is atomic on its own.
    """

    def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Return the entry, or None."""
        ...

    def create_entry(self, row: EntryRow, replace: Replaceable | None = None) -> CreateOutcome:
        """Insert ``row`` unless a live entry holds its key.

        An existing entry is replaced only when it is :class:`Replaceable` by ``replace``
        (None: never); otherwise nothing is written and ``written`` is False. Check and write
        are one atomic step.
        """
        ...

    def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """Insert or replace ``row``; return the replaced row, if any.

        With ``keep_created_at`` an existing row's ``created_at`` survives the overwrite.
        """
        ...

    def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """Delete the entry; return the deleted row, or None if there was none."""
        ...

    def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """Delete the entry only if it still has ``row``'s outputs and ``last_updated_at``."""
        ...

    def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """Set ``last_accessed_at`` to ``at`` on each of ``entries`` (scope, key) whose value
        is strictly before ``if_before``; absent entries are skipped. One atomic step for the
        whole batch; returns how many rows changed (0 for no entries, without a round trip).
        """
        ...

    def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """Return whether any entry, in any scope, has one of ``uris`` as its ``output_uri``.

        Blob deletion asks it after removing or replacing the deleting entry: a blob another
        entry still points at must stay.
        """
        ...

    def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """Grant ``row`` unless another owner holds an unexpired reservation on the key.

        Grants (insert, or replace with the new expiry) when there is no reservation, when the
        existing one is ``row.owner_id``'s own, or when it expired (``expires_at <= now``).
        Returns the reservation in force afterwards: ``row`` if granted, else the holder's,
        unchanged. Atomic: at most one unexpired owner at any instant.
        """
        ...

    def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """Delete the reservation if ``owner_id`` holds it; return whether one was deleted."""
        ...

    def pool_stats(self) -> PoolStats | None:
        """Return connection-pool figures, or None for a repository without a pool."""
        ...

    def ping(self) -> None:
        """Raise ``UnavailableError`` if the store does not answer."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class OperatorRepository(Repository, Protocol):
    """A :class:`Repository` that also answers the operator queries of
    :mod:`taskcache.operations` (``taskcache ls``, ``show``, ``gc``, ``stats``).

    Each query is atomic on its own, like the hot-path methods.
    """

    def get_reservation(self, scope: Scope, key: str) -> ReservationRow | None:
        """Return the reservation row on ``key`` (expired or not), or None."""
        ...

    def list_entries(
        self, entry_filter: EntryFilter, limit: int, after: EntryCursor | None = None
    ) -> list[EntryRow]:
        """Return up to ``limit`` entries matching ``entry_filter``, newest update first,
        strictly after ``after`` in that order (ties broken by scope, then key).
        """
        ...

    def delete_entries_updated_before(
        self, cutoff: datetime, limit: int, *, dry_run: bool = False
    ) -> list[EntryRow]:
        """Delete (or with ``dry_run`` only select) up to ``limit`` entries last updated
        strictly before ``cutoff``, oldest first; return those rows.
        """
        ...

    def delete_entries_if_unchanged(self, rows: Sequence[EntryRow]) -> list[EntryRow]:
        """Delete each entry of ``rows`` that still has that row's outputs and
        ``last_updated_at`` (as :meth:`Repository.delete_entry_if_unchanged` does for one);
        return those of ``rows`` that were deleted, in the order given.

        The whole batch is one atomic step; an entry rewritten since it was read survives.
        """
        ...

    def stats(self, now: datetime) -> CatalogStats:
        """Return catalog totals; reservations count as active while ``expires_at > now``."""
        ...

    def delete_expired_entries(self, now: datetime, limit: int) -> list[EntryRow]:
        """Delete up to ``limit`` entries whose ``expires_at`` is at or before ``now``,
        soonest expired first; return those rows. One atomic step, re-checked as it deletes.
        """
        ...

    def list_least_recently_used(
        self, limit: int, after: AccessCursor | None = None
    ) -> list[EntryRow]:
        """Return up to ``limit`` entries, least recently accessed first (ties by scope,
        then key), strictly after ``after`` in that order.
        """
        ...

    def stored_bytes(self) -> int:
        """Return the sum of :attr:`EntryRow.stored_bytes` over every entry."""
        ...

    def maintenance_lock(
        self, holder: str, now: datetime, lease: timedelta
    ) -> AbstractContextManager[bool]:
        """Try to become the one cleaner of this catalog; yield whether it succeeded.

        At most one holder at a time across processes and replicas sharing the database;
        released on exit (and by the database if the holder dies: PostgreSQL when its session
        ends, SQLite once ``lease`` after ``now`` has passed). Never waits for a holder.
        """
        ...


class AsyncRepository(Protocol):
    """:class:`Repository`'s row storage as coroutines (the server's PostgreSQL path).

    Each method means exactly what the :class:`Repository` method of the same name means
    (see there); only ``pool_stats`` stays synchronous (it reads counters, no I/O).
    """

    async def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.get_entry`."""
        ...

    async def create_entry(
        self, row: EntryRow, replace: Replaceable | None = None
    ) -> CreateOutcome:
        """See :meth:`Repository.create_entry`."""
        ...

    async def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """See :meth:`Repository.overwrite_entry`."""
        ...

    async def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.delete_entry`."""
        ...

    async def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """See :meth:`Repository.delete_entry_if_unchanged`."""
        ...

    async def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """See :meth:`Repository.record_accesses`."""
        ...

    async def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """See :meth:`Repository.output_uri_referenced`."""
        ...

    async def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """See :meth:`Repository.acquire_reservation`."""
        ...

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """See :meth:`Repository.release_reservation`."""
        ...

    def pool_stats(self) -> PoolStats | None:
        """See :meth:`Repository.pool_stats` (synchronous: no I/O)."""
        ...

    async def ping(self) -> None:
        """See :meth:`Repository.ping`."""
        ...

    async def close(self) -> None:
        """See :meth:`Repository.close`."""
        ...
