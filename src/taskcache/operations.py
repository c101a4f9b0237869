"""Catalog maintenance for operators: list, show, delete, clear, garbage-collect (by age,
expiry and size), stats, migrate.

Plain functions over an :class:`~taskcache.repositories.base.OperatorRepository` (a
:class:`~taskcache.repositories.base.Repository` with the operator queries; ``delete_entry``
needs only the latter) and, where blobs are involved, a :class:`~taskcache.storage.BlobStore`.
The ``taskcache`` operator commands and the embedded clients' ``entries``, ``stats`` and
``clear`` are thin layers over them, and scripts may call them directly. Times are aware
UTC datetimes.

It must not parse target strings (:mod:`taskcache.resolver` does) nor print (the CLI does).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final
from uuid import uuid4

from flyteidl2.core import identifier_pb2, literals_pb2
from google.protobuf.message import DecodeError

from taskcache import resolver
from taskcache.arguments import check_positive
from taskcache.errors import InvalidArgumentError, NotFoundError, UnavailableError
from taskcache.manager import is_expired
from taskcache.model import CatalogEntry
from taskcache.outputs import decode_literal_map
from taskcache.provenance import source_execution
from taskcache.repositories.base import (
    AccessCursor,
    CatalogStats,
    EntryCursor,
    EntryFilter,
    EntryRow,
    OperatorRepository,
    Repository,
    ReservationRow,
    Scope,
)
from taskcache.storage import BlobStore

__all__ = [
    "ANY_PART",
    "DEFAULT_GC_BATCH_SIZE",
    "DEFAULT_PAGE_SIZE",
    "MAX_CANDIDATES",
    "UNSCOPED",
    "AmbiguousKeyError",
    "CatalogEntry",
    "CleanupSummary",
    "DeleteResult",
    "EntryDetails",
    "GcSummary",
    "Page",
    "catalog_entry",
    "catalog_stats",
    "cleanup",
    "clear",
    "cursor_after",
    "delete_entry",
    "delete_expired",
    "describe_entry",
    "describe_scope",
    "describe_selection",
    "entry_not_found",
    "evict_to_size",
    "find_entry",
    "gc",
    "iter_entries",
    "iter_pages",
    "list_page",
    "migrate_database",
    "parse_duration",
    "parse_scope",
    "parse_size",
    "task_name",
]

DEFAULT_PAGE_SIZE: Final = 50
DEFAULT_GC_BATCH_SIZE: Final = 500
# How an empty scope is written (by describe_scope, so in ls) and read back (parse_scope).
UNSCOPED: Final = "(unscoped)"
# A scope part that matches any value in a --scope pattern.
ANY_PART: Final = "*"
# How many matching entries an ambiguous key prefix reports.
MAX_CANDIDATES: Final = 10

_MICROSECOND: Final = timedelta(microseconds=1)

# Lower-case units only: "M" could be read as months, so it is rejected rather than guessed.
_UNIT_SECONDS: Final = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION: Final = re.compile(r"(?:[0-9]+[wdhms])+")
_DURATION_PART: Final = re.compile(r"([0-9]+)([wdhms])")


def parse_duration(text: str) -> timedelta:
    """Return the duration ``text`` names: integers with a unit ``w``, ``d``, ``h``, ``m``
    or ``s`` (weeks, days, hours, minutes, seconds), optionally combined (``1d12h``).

    Raises InvalidArgumentError for anything else, a zero duration or one too large to
    represent.
    """
    compact = text.strip()
    if not _DURATION.fullmatch(compact):
        raise InvalidArgumentError(
            f"{text!r} is not a duration; use a number and a unit w, d, h, m or s "
            "(e.g. 30d, 12h, 90m, 45s, 1w, 1d12h)"
        )
    seconds = sum(
        int(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(compact)
    )
    if seconds == 0:
        raise InvalidArgumentError(f"{text!r} must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as error:
        raise InvalidArgumentError(f"{text!r} is too long") from error


def parse_scope(text: str) -> EntryFilter:
    """Return the filter ``text`` names, in the form :func:`describe_scope` prints it:
    ``org/project/domain``, or ``(unscoped)`` for the empty (Flyte 1) scope. A part ``*``
    matches any value (``org/*/*``: every entry of ``org``); an empty part is the empty name.

    Raises InvalidArgumentError (field ``scope``) unless ``text`` has exactly three parts.
    Names holding ``/`` cannot be written this way.
    """
    compact = text.strip()
    if compact == UNSCOPED:
        return EntryFilter(org="", project="", domain="")
    parts = compact.split("/")
    if len(parts) != 3:
        raise InvalidArgumentError(
            f"{text!r} is not a scope; write org/project/domain as ls prints it "
            f"(a part may be {ANY_PART} for any), or {UNSCOPED}",
            field="scope",
        )
    org, project, domain = (None if part == ANY_PART else part for part in parts)
    return EntryFilter(org=org, project=project, domain=domain)


def describe_selection(entry_filter: EntryFilter, task: str | None = None) -> str:
    """Return which entries ``entry_filter`` and ``task`` select, for prompts and messages:
    ``every entry``, ``the entries of org/*/* of task t``, ...
    """
    parts = (entry_filter.org, entry_filter.project, entry_filter.domain)
    scoped = parts != (None, None, None)
    if not scoped and task is None and not entry_filter.key_prefix:
        return "every entry"
    words = ["the entries"]
    if scoped:
        words.append(f"of scope {_pattern(entry_filter)}")
    if task is not None:
        words.append(f"of task {task!r}")
    if entry_filter.key_prefix:
        words.append(f"with keys starting {entry_filter.key_prefix!r}")
    return " ".join(words)


def _selects_everything(entry_filter: EntryFilter) -> bool:
    """Return whether ``entry_filter`` matches every entry (any scope, any key)."""
    parts = (entry_filter.org, entry_filter.project, entry_filter.domain)
    return parts == (None, None, None) and not entry_filter.key_prefix


def _in_scope(scope: Scope, entry_filter: EntryFilter) -> bool:
    """Return whether ``scope`` matches ``entry_filter``'s org, project and domain."""
    return all(
        wanted is None or wanted == actual
        for wanted, actual in (
            (entry_filter.org, scope.org),
            (entry_filter.project, scope.project),
            (entry_filter.domain, scope.domain),
        )
    )


# --- listing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of a newest-first listing; ``next_cursor`` is None on the last page."""

    entries: tuple[EntryRow, ...]
    next_cursor: EntryCursor | None


def cursor_after(row: EntryRow) -> EntryCursor:
    """Return the cursor that continues a listing after ``row``."""
    return EntryCursor(last_updated_at=row.last_updated_at, scope=row.scope, key=row.key)


def list_page(
    repository: OperatorRepository,
    entry_filter: EntryFilter,
    limit: int = DEFAULT_PAGE_SIZE,
    after: EntryCursor | None = None,
) -> Page:
    """Return up to ``limit`` entries matching ``entry_filter``, newest update first, after
    ``after``; ``next_cursor`` is set only when more entries follow.

    Raises InvalidArgumentError if ``limit`` < 1, store errors as the repository does.
    """
    check_positive(limit, "limit")
    # One row more than asked tells whether another page exists without a second query.
    rows = repository.list_entries(entry_filter, limit + 1, after)
    entries = tuple(rows[:limit])
    more = len(rows) > limit
    return Page(entries=entries, next_cursor=cursor_after(entries[-1]) if more else None)


def iter_pages(
    repository: OperatorRepository, entry_filter: EntryFilter, page_size: int = DEFAULT_PAGE_SIZE
) -> Iterator[Page]:
    """Yield every page of the listing, newest first, fetching one page at a time.

    Entries written while the listing runs may or may not appear; none appears twice.
    Raises InvalidArgumentError if ``page_size`` < 1.
    """
    check_positive(page_size, "page_size")
    after: EntryCursor | None = None
    while True:
        page = list_page(repository, entry_filter, page_size, after)
        yield page
        if page.next_cursor is None:
            return
        after = page.next_cursor


def catalog_entry(row: EntryRow) -> CatalogEntry:
    """Return the listing record of ``row``; an undecodable source leaves ``source`` None."""
    source, _ = _decode_source(row)
    literals = row.output_literals
    return CatalogEntry(
        key=row.key,
        org=row.scope.org,
        project=row.scope.project,
        domain=row.scope.domain,
        task=source.name if source is not None else "",
        task_version=source.version if source is not None else "",
        created_at=row.created_at,
        last_updated_at=row.last_updated_at,
        output_uri=row.output_uri,
        inline_bytes=None if literals is None else len(literals),
        source=source,
        source_execution=_execution(source, row),
        expires_at=row.expires_at,
    )


def _of_task(rows: tuple[EntryRow, ...], task: str | None) -> list[EntryRow]:
    """Return the ``rows`` whose source identifier names ``task`` (all of them if None)."""
    # The task name sits inside the serialized source identifier, after the variable-length
    # project and domain, so no index or portable SQL can test it exactly (a byte search
    # could match inside another field). Decoding here is exact and cheap: measured on a
    # 50 000-entry SQLite file, fetching a row costs ~14 us, decoding its identifier ~0.8 us.
    if task is None:
        return list(rows)
    return [row for row in rows if _task_name(row) == task]


def _task_name(row: EntryRow) -> str | None:
    """Return the name in ``row``'s source identifier, or None if it does not decode."""
    source, _ = _decode_source(row)
    return None if source is None else source.name


def task_name(row: EntryRow) -> str:
    """Return the name of the task that wrote ``row`` (its source identifier's), or ``""``
    if the identifier does not decode.
    """
    return _task_name(row) or ""


def iter_entries(
    repository: OperatorRepository,
    entry_filter: EntryFilter,
    task: str | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Iterator[list[CatalogEntry]]:
    """Yield the listing records of the entries matching ``entry_filter`` (and, with
    ``task``, written by a task of that name), newest update first, a non-empty list at a
    time: each repository page of ``page_size`` rows, filtered.

    The same guarantees as :func:`iter_pages`. Raises InvalidArgumentError if ``page_size``
    < 1 (at once), store errors as the repository does (when iterated).
    """
    check_positive(page_size, "page_size")
    return _entry_pages(repository, entry_filter, task, page_size)


def _entry_pages(
    repository: OperatorRepository, entry_filter: EntryFilter, task: str | None, page_size: int
) -> Iterator[list[CatalogEntry]]:
    for page in iter_pages(repository, entry_filter, page_size):
        matching = _of_task(page.entries, task)
        if matching:
            yield [catalog_entry(row) for row in matching]


# --- one entry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryDetails:
    """Everything known about one entry, decoded for display.

    ``outputs`` is the decoded inline LiteralMap (None for a blob entry or undecodable bytes);
    ``source`` the decoded source identifier; ``source_execution`` the task execution Flyte
    is told produced the entry (None when the key map records none). ``reservation`` is the
    reservation row on the key, expired or not; ``reservation_active`` whether it is live at
    the ``now`` given. ``problems`` lists what could not be decoded.
    """

    row: EntryRow
    outputs: literals_pb2.LiteralMap | None
    source: identifier_pb2.Identifier | None
    source_execution: identifier_pb2.TaskExecutionIdentifier | None
    reservation: ReservationRow | None
    reservation_active: bool
    problems: tuple[str, ...] = ()

    @property
    def inline_bytes(self) -> int | None:
        """Size of the inline outputs in bytes, or None for a blob entry."""
        literals = self.row.output_literals
        return None if literals is None else len(literals)


def entry_not_found(scope: Scope, key: str) -> NotFoundError:
    """Return the NotFoundError for a missing entry ``key`` in ``scope``."""
    return NotFoundError(f"no entry {key!r} in scope {describe_scope(scope)}")


def describe_scope(scope: Scope) -> str:
    """Return ``scope`` for messages: ``org/project/domain``, or ``(unscoped)`` if empty."""
    if scope == Scope():
        return UNSCOPED
    return "/".join((scope.org, scope.project, scope.domain))


class AmbiguousKeyError(InvalidArgumentError):
    """A key prefix matches more than one entry; ``candidates`` holds up to
    :data:`MAX_CANDIDATES` of them (newest first) and ``more`` whether others match too.
    """

    def __init__(self, prefix: str, candidates: tuple[EntryRow, ...], more: bool) -> None:
        listed = "; ".join(f"{row.key} in {describe_scope(row.scope)}" for row in candidates)
        others = ", and more" if more else ""
        super().__init__(
            f"{prefix!r} matches {len(candidates)}{'+' if more else ''} entries: {listed}{others}; "
            "give more of the key or a --scope",
            field="key",
        )
        self.prefix = prefix
        self.candidates = candidates
        self.more = more


def find_entry(repository: OperatorRepository, entry_filter: EntryFilter, key: str) -> EntryRow:
    """Return the one entry matching ``entry_filter`` whose key is ``key`` or, failing an
    exact match, starts with ``key`` (a unique prefix, such as the head ``ls`` shows).

    ``entry_filter``'s ``key_prefix`` is ignored. Raises InvalidArgumentError (field
    ``key``) for an empty ``key``, NotFoundError if nothing matches, AmbiguousKeyError if
    several entries do (an exact key filed under several scopes, or a shared prefix).
    Store errors as the repository does.
    """
    if not key:
        raise InvalidArgumentError("must not be empty", field="key")
    org, project, domain = entry_filter.org, entry_filter.project, entry_filter.domain
    if org is not None and project is not None and domain is not None:
        found = repository.get_entry(Scope(org, project, domain), key)
        if found is not None:
            return found
    scoped = replace(entry_filter, key_prefix=key)
    rows = repository.list_entries(scoped, MAX_CANDIDATES + 1, None)
    exact = [row for row in rows if row.key == key]
    matches = exact or rows
    if len(matches) == 1:
        return matches[0]
    if not matches:
        where = "any scope" if _pattern(scoped) == "*/*/*" else f"scope {_pattern(scoped)}"
        raise NotFoundError(f"no entry {key!r} (nor a key starting with it) in {where}")
    more = len(matches) > MAX_CANDIDATES
    raise AmbiguousKeyError(key, tuple(matches[:MAX_CANDIDATES]), more)


def _pattern(entry_filter: EntryFilter) -> str:
    """Return ``entry_filter``'s scope as a ``--scope`` pattern (``*/*/*``: any scope)."""
    parts = (entry_filter.org, entry_filter.project, entry_filter.domain)
    if parts == ("", "", ""):
        return UNSCOPED
    return "/".join(ANY_PART if part is None else part for part in parts)


def _decode_source(row: EntryRow) -> tuple[identifier_pb2.Identifier | None, str | None]:
    """Return ``row``'s decoded source identifier, or None and why it does not decode."""
    try:
        return identifier_pb2.Identifier.FromString(row.source_identifier), None
    except DecodeError as error:
        return None, f"source identifier does not decode: {error}"


def _execution(
    source: identifier_pb2.Identifier | None, row: EntryRow
) -> identifier_pb2.TaskExecutionIdentifier | None:
    """Return the task execution ``row``'s key map records, or None if it records none."""
    return source_execution(source, row.key_map) if source is not None and row.key_map else None


def describe_entry(
    repository: OperatorRepository, scope: Scope, key: str, now: datetime
) -> EntryDetails:
    """Return the entry ``key`` in ``scope`` with its outputs, provenance and reservation.

    Undecodable stored bytes are reported in ``problems`` rather than raised, so an operator
    can still inspect (and delete) a damaged entry. Raises NotFoundError if there is no
    entry, store errors as the repository does.
    """
    row = repository.get_entry(scope, key)
    if row is None:
        raise entry_not_found(scope, key)
    problems: list[str] = []
    outputs: literals_pb2.LiteralMap | None = None
    if row.output_literals is not None:
        try:
            outputs = decode_literal_map(row.output_literals, source="inline outputs")
        except InvalidArgumentError as error:
            problems.append(str(error))
    source, problem = _decode_source(row)
    if problem is not None:
        problems.append(problem)
    execution = _execution(source, row)
    reservation = repository.get_reservation(scope, key)
    return EntryDetails(
        row=row,
        outputs=outputs,
        source=source,
        source_execution=execution,
        reservation=reservation,
        reservation_active=reservation is not None and reservation.expires_at > now,
        problems=tuple(problems),
    )


@dataclass(frozen=True)
class DeleteResult:
    """A deleted entry and what became of its blob.

    ``blob_deleted``: the output blob was removed. ``blob_error``: why removing it failed or
    was not attempted (outside the storage root, or another entry still references it), None
    otherwise.
    """

    row: EntryRow
    blob_deleted: bool = False
    blob_error: str | None = None


def _unreferenced_owned(repository: Repository, blobs: BlobStore, uri: str) -> str | None:
    """Return why the blob at ``uri`` must stay (outside the storage root, or still the
    output of an entry in some scope), or None if it may be deleted.

    Call it after the deleting entry is gone, so only other entries count.
    """
    spellings = blobs.owned_spellings(uri)
    if not spellings:
        return f"not under the storage root {blobs.root}; kept"
    if repository.output_uri_referenced(spellings):
        return "still referenced by another entry; kept"
    return None


def delete_entry(
    repository: Repository, scope: Scope, key: str, blobs: BlobStore | None = None
) -> DeleteResult:
    """Delete the entry ``key`` in ``scope``; with ``blobs``, also its output blob if it lies
    under that store's root (symlinks and ``..`` resolved) and no other entry, in any scope,
    references it.

    The row goes first: a blob without a row is harmless garbage, a row without its blob is
    a dangling entry. Returns what was done. Raises NotFoundError if there is no entry.
    """
    row = repository.delete_entry(scope, key)
    if row is None:
        raise entry_not_found(scope, key)
    if blobs is None or row.output_uri is None:
        return DeleteResult(row)
    kept = _unreferenced_owned(repository, blobs, row.output_uri)
    if kept is not None:
        return DeleteResult(row, blob_error=kept)
    try:
        deleted = blobs.delete(row.output_uri)
    except UnavailableError as error:
        return DeleteResult(row, blob_error=str(error))
    return DeleteResult(row, blob_deleted=deleted, blob_error=None if deleted else "already gone")


# --- garbage collection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GcSummary:
    """What a garbage collection or a :func:`clear` did (or, in a dry run, would do).

    ``entries`` deleted; ``blobs_deleted`` output blobs removed (dry run: owned blobs that
    would be removed); ``blob_errors`` blobs the storage failed to delete;
    ``inline_bytes_freed`` inline output bytes of the deleted entries; ``blob_bytes_freed``
    their recorded blob sizes (what a size cap counts, whether or not the blob itself was
    deleted); ``blobs_skipped`` output URIs left alone because they lie outside the storage
    root or (not checked in a dry run, where the entries still exist) another entry still
    references them.
    """

    entries: int = 0
    blobs_deleted: int = 0
    blob_errors: int = 0
    inline_bytes_freed: int = 0
    blobs_skipped: int = 0
    blob_bytes_freed: int = 0

    @property
    def bytes_freed(self) -> int:
        """Inline bytes plus recorded blob sizes of the deleted entries."""
        return self.inline_bytes_freed + self.blob_bytes_freed

    def __add__(self, other: GcSummary) -> GcSummary:
        """Return the field-by-field sum of two summaries."""
        return GcSummary(
            entries=self.entries + other.entries,
            blobs_deleted=self.blobs_deleted + other.blobs_deleted,
            blob_errors=self.blob_errors + other.blob_errors,
            inline_bytes_freed=self.inline_bytes_freed + other.inline_bytes_freed,
            blobs_skipped=self.blobs_skipped + other.blobs_skipped,
            blob_bytes_freed=self.blob_bytes_freed + other.blob_bytes_freed,
        )


GcProgress = Callable[[GcSummary], None]


def gc(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    older_than: timedelta,
    now: datetime,
    dry_run: bool = False,
    delete_blobs: bool = False,
    batch_size: int = DEFAULT_GC_BATCH_SIZE,
    progress_callback: GcProgress | None = None,
    entry_filter: EntryFilter | None = None,
) -> GcSummary:
    """Delete every entry last updated more than ``older_than`` before ``now`` (and, with
    ``entry_filter``, in the scopes it matches; its ``key_prefix`` applies too).

    Rows go in batches of ``batch_size`` (each batch one atomic repository call, oldest
    first). With ``delete_blobs`` each deleted row's ``output_uri`` is removed too, but only
    if ``blobs`` owns it (never anything outside the storage root, symlinks and ``..``
    resolved) and no remaining entry references it; blob failures are
    counted, not raised. ``dry_run`` deletes nothing and reports what would go.
    ``progress_callback`` gets the running totals after each batch.

    Returns the totals. Raises InvalidArgumentError for a non-positive ``older_than`` or
    ``batch_size``, ``delete_blobs`` without ``blobs`` or a cutoff before year 1; store
    errors as the repository does (batches already deleted stay deleted).
    """
    check_positive(batch_size, "batch_size")
    if older_than <= timedelta(0):
        raise InvalidArgumentError("must be positive", field="older_than")
    if delete_blobs and blobs is None:
        raise InvalidArgumentError("deleting blobs needs a storage root", field="storage")
    try:
        cutoff = now - older_than
    except OverflowError as error:
        raise InvalidArgumentError("reaches before year 1", field="older_than") from error
    store = blobs if delete_blobs else None
    selection = entry_filter or EntryFilter()
    if dry_run:
        batches = _dry_run_batches(repository, cutoff, batch_size, selection)
    elif selection == EntryFilter():
        batches = _deleted_batches(repository, cutoff, batch_size)
    else:
        # The batch delete takes no filter: delete the filtered listing's old rows instead,
        # each only if unchanged since it was read (as clear does).
        batches = (
            repository.delete_entries_if_unchanged(list(batch))
            for batch in _dry_run_batches(repository, cutoff, batch_size, selection)
        )
    summary = GcSummary()
    for batch in batches:
        summary = _tally(summary, batch, repository, store, dry_run=dry_run)
        if progress_callback is not None:
            progress_callback(summary)
    return summary


def _deleted_batches(
    repository: OperatorRepository, cutoff: datetime, batch_size: int
) -> Iterator[list[EntryRow]]:
    """Delete and yield batches until none is left."""
    while True:
        # Stop only on an empty batch, not a short one: PostgreSQL skips rows locked by a
        # concurrent write, so a short batch does not mean the old rows are all gone.
        batch = repository.delete_entries_updated_before(cutoff, batch_size)
        if not batch:
            return
        yield batch


def _dry_run_batches(
    repository: OperatorRepository,
    cutoff: datetime,
    batch_size: int,
    entry_filter: EntryFilter,
) -> Iterator[list[EntryRow]]:
    """Yield the rows matching ``entry_filter`` updated before ``cutoff`` page by page,
    deleting nothing.
    """
    # delete_entries_updated_before(dry_run=True) always returns the same oldest batch, so
    # it cannot page; the newest-first listing can. Times have microsecond precision, so
    # "strictly before cutoff" is "at or before cutoff - 1 µs", which is every row after the
    # cursor (cutoff - 1 µs, empty scope, empty key): the only row that cursor skips would
    # have an empty key, which the manager never stores.
    start = EntryCursor(last_updated_at=cutoff - _MICROSECOND, scope=Scope(), key="")
    after: EntryCursor | None = start
    while after is not None:
        page = list_page(repository, entry_filter, batch_size, after)
        if page.entries:
            yield list(page.entries)
        after = page.next_cursor


def _tally(
    summary: GcSummary,
    batch: list[EntryRow],
    repository: Repository,
    blobs: BlobStore | None,
    *,
    dry_run: bool,
) -> GcSummary:
    """Return ``summary`` plus ``batch``, deleting the batch's blobs unless ``dry_run``."""
    deleted = errors = skipped = 0
    if blobs is not None:
        for row in batch:
            if row.output_uri is None:
                continue
            # In a dry run the batch's rows still exist, so only ownership can be judged.
            keep = (
                not blobs.owned_spellings(row.output_uri)
                if dry_run
                else _unreferenced_owned(repository, blobs, row.output_uri) is not None
            )
            if keep:
                skipped += 1
            elif dry_run:
                deleted += 1
            else:
                try:
                    # False: already gone (e.g. removed by hand); nothing to count.
                    if blobs.delete(row.output_uri):
                        deleted += 1
                except UnavailableError:
                    errors += 1
    return summary + GcSummary(
        entries=len(batch),
        blobs_deleted=deleted,
        blob_errors=errors,
        inline_bytes_freed=sum(
            len(row.output_literals) for row in batch if row.output_literals is not None
        ),
        blobs_skipped=skipped,
        blob_bytes_freed=sum(row.blob_bytes or 0 for row in batch),
    )


def clear(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    entry_filter: EntryFilter,
    task: str | None = None,
    batch_size: int = DEFAULT_GC_BATCH_SIZE,
    progress_callback: GcProgress | None = None,
) -> GcSummary:
    """Delete every entry matching ``entry_filter`` and, with ``task``, written by a task of
    that name (its source identifier's name); ``EntryFilter()`` and no task: every entry.

    It walks the listing a page of ``batch_size`` at a time and deletes each page's matches
    in one atomic repository call, each only if unchanged since it was read. Entries that
    exist when it starts and are not rewritten meanwhile are all deleted; one put or updated
    while it runs may survive (one rewritten after it was read always does). With ``blobs``,
    each deleted entry's output blob goes too if ``blobs`` owns it (as :func:`gc` with
    ``delete_blobs``); blob failures are counted, not raised. ``progress_callback`` gets the
    running totals after each batch.

    Returns the totals. Raises InvalidArgumentError if ``batch_size`` < 1; store errors as
    the repository does (batches already deleted stay deleted).
    """
    check_positive(batch_size, "batch_size")
    summary = GcSummary()
    for page in iter_pages(repository, entry_filter, batch_size):
        doomed = _of_task(page.entries, task)
        if not doomed:
            continue
        deleted = repository.delete_entries_if_unchanged(doomed)
        summary = _tally(summary, deleted, repository, blobs, dry_run=False)
        if progress_callback is not None:
            progress_callback(summary)
    return summary


# --- expiry and size eviction --------------------------------------------------------------------

# How long a cleaner's SQLite lease lasts if it dies without giving it back.
DEFAULT_CLEANUP_LEASE: Final = timedelta(minutes=10)


def delete_expired(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    now: datetime,
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_GC_BATCH_SIZE,
    progress_callback: GcProgress | None = None,
) -> GcSummary:
    """Delete every entry whose expiry (chosen at put, see ``ttl``) is at or before ``now``.

    Batches of ``batch_size``, each one atomic repository call, soonest expired first. With
    ``blobs`` each deleted entry's blob goes too if ``blobs`` owns it and no remaining entry
    references it (as :func:`gc` with ``delete_blobs``). ``dry_run`` deletes nothing: it scans
    the listing for what would go. Returns the totals; InvalidArgumentError if
    ``batch_size`` < 1; store errors as the repository does.
    """
    check_positive(batch_size, "batch_size")
    batches: Iterator[list[EntryRow]]
    if dry_run:
        batches = (
            [row for row in page.entries if is_expired(row.expires_at, now)]
            for page in iter_pages(repository, EntryFilter(), batch_size)
        )
    else:
        batches = iter(lambda: repository.delete_expired_entries(now, batch_size), [])
    return _collect(batches, repository, blobs, dry_run, progress_callback)


def evict_to_size(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    max_bytes: int,
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_GC_BATCH_SIZE,
    progress_callback: GcProgress | None = None,
) -> GcSummary:
    """Delete least-recently-used entries until the catalog's stored bytes (inline bytes
    plus recorded blob sizes, :attr:`EntryRow.stored_bytes`) are at most ``max_bytes``.

    The total is measured once at the start; each batch is the fewest least recently
    accessed entries (up to ``batch_size``) that cover what is still over, deleted only if
    unchanged since read (an entry rewritten meanwhile survives, and its rewrite made it
    recent). Blobs as for :func:`delete_expired`. ``dry_run`` deletes nothing and reports
    what would go. Returns the totals; InvalidArgumentError for a negative ``max_bytes`` or
    ``batch_size`` < 1; store errors as the repository does.
    """
    check_positive(batch_size, "batch_size")
    if max_bytes < 0:
        raise InvalidArgumentError("must not be negative", field="max_bytes")
    excess = repository.stored_bytes() - max_bytes
    return _collect(
        _over_size_batches(repository, excess, batch_size, dry_run=dry_run),
        repository,
        blobs,
        dry_run,
        progress_callback,
    )


def _over_size_batches(
    repository: OperatorRepository, excess: int, batch_size: int, *, dry_run: bool
) -> Iterator[list[EntryRow]]:
    """Yield the batches that bring ``excess`` bytes down to zero, deleting them unless
    ``dry_run``.
    """
    after: AccessCursor | None = None
    while excess > 0:
        # Deleted rows leave the listing, so a real run always reads from the start.
        page = repository.list_least_recently_used(batch_size, after if dry_run else None)
        if not page:
            return
        chosen: list[EntryRow] = []
        for row in page:
            if excess <= 0:
                break
            chosen.append(row)
            excess -= row.stored_bytes
        if dry_run:
            last = page[-1]
            after = AccessCursor(
                last_accessed_at=last.last_accessed_at or last.last_updated_at,
                scope=last.scope,
                key=last.key,
            )
            yield chosen
            continue
        deleted = repository.delete_entries_if_unchanged(chosen)
        # Rows rewritten since they were read survive: their bytes still count.
        excess += sum(row.stored_bytes for row in chosen) - sum(row.stored_bytes for row in deleted)
        if not deleted:
            return  # every candidate changed under us; the next run looks again
        yield deleted


def _collect(
    batches: Iterator[list[EntryRow]],
    repository: OperatorRepository,
    blobs: BlobStore | None,
    dry_run: bool,
    progress_callback: GcProgress | None,
) -> GcSummary:
    summary = GcSummary()
    for batch in batches:
        if not batch:
            continue
        summary = _tally(summary, batch, repository, blobs, dry_run=dry_run)
        if progress_callback is not None:
            progress_callback(summary)
    return summary


@dataclass(frozen=True)
class CleanupSummary:
    """What one cleanup run did (or, in a dry run, would do), phase by phase.

    ``older``: entries not updated for ``older_than`` (None when not asked); ``expired``:
    entries past their expiry; ``over_size``: least-recently-used entries evicted to bring the
    catalog under ``max_bytes`` (None when no cap). ``locked_out``: another cleaner held the
    catalog's maintenance lock, so nothing ran.
    """

    expired: GcSummary = GcSummary()
    over_size: GcSummary | None = None
    older: GcSummary | None = None
    locked_out: bool = False

    @property
    def total(self) -> GcSummary:
        """The three phases added up."""
        return self.expired + (self.over_size or GcSummary()) + (self.older or GcSummary())


def cleanup(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    now: datetime,
    *,
    max_bytes: int | None = None,
    older_than: timedelta | None = None,
    dry_run: bool = False,
    holder: str | None = None,
    lease: timedelta = DEFAULT_CLEANUP_LEASE,
    batch_size: int = DEFAULT_GC_BATCH_SIZE,
    progress_callback: GcProgress | None = None,
    entry_filter: EntryFilter | None = None,
) -> CleanupSummary:
    """Run the catalog's eviction policies once: ``older_than`` (as :func:`gc`), then expiry
    (:func:`delete_expired`), then the size cap (:func:`evict_to_size`) if ``max_bytes``.
    With ``entry_filter`` only the ``older_than`` phase runs, on the scopes it matches: expiry
    and the size cap are the whole catalog's (a ``max_bytes`` is then refused).

    A real run first takes the catalog's maintenance lock as ``holder`` (default: unique to
    this call), so several replicas or ``taskcache gc`` beside ``taskcache serve`` never
    clean at once; a run that finds it held does nothing and says ``locked_out``. A dry run
    takes no lock. Blobs go only with ``blobs``, only under its root and only when no other
    entry references them. ``progress_callback`` gets the running total after each batch.

    Raises InvalidArgumentError for a bad option; store errors as the repository does
    (batches already deleted stay deleted).
    """
    check_positive(batch_size, "batch_size")
    if max_bytes is not None and max_bytes < 0:
        raise InvalidArgumentError("must not be negative", field="max_bytes")
    if max_bytes is not None and entry_filter is not None and not _selects_everything(entry_filter):
        raise InvalidArgumentError(
            "the size cap covers the whole catalog; leave out the scope selection",
            field="max_bytes",
        )
    if entry_filter is not None and _selects_everything(entry_filter):
        entry_filter = None
    phases = _Phases(max_bytes, older_than, batch_size, progress_callback, entry_filter)
    if dry_run:
        return _cleanup_phases(repository, blobs, now, phases, dry_run=True)
    name = holder if holder is not None else f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex}"
    with repository.maintenance_lock(name, now, lease) as taken:
        if not taken:
            return CleanupSummary(locked_out=True)
        return _cleanup_phases(repository, blobs, now, phases, dry_run=False)


@dataclass(frozen=True)
class _Phases:
    """What one cleanup run does (see :func:`cleanup`)."""

    max_bytes: int | None
    older_than: timedelta | None
    batch_size: int
    progress_callback: GcProgress | None
    entry_filter: EntryFilter | None


def _cleanup_phases(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    now: datetime,
    phases: _Phases,
    *,
    dry_run: bool,
) -> CleanupSummary:
    max_bytes, older_than, batch_size = phases.max_bytes, phases.older_than, phases.batch_size
    progress_callback = phases.progress_callback
    done = GcSummary()

    def report(phase: GcSummary) -> None:
        if progress_callback is not None:
            progress_callback(done + phase)

    older = None
    if older_than is not None:
        older = gc(
            repository,
            blobs,
            older_than,
            now,
            dry_run=dry_run,
            delete_blobs=blobs is not None,
            batch_size=batch_size,
            progress_callback=report,
            entry_filter=phases.entry_filter,
        )
        done += older
    if phases.entry_filter is not None:
        return CleanupSummary(expired=GcSummary(), over_size=None, older=older)
    expired = delete_expired(
        repository, blobs, now, dry_run=dry_run, batch_size=batch_size, progress_callback=report
    )
    done += expired
    over_size = None
    if max_bytes is not None:
        over_size = evict_to_size(
            repository,
            blobs,
            max_bytes,
            dry_run=dry_run,
            batch_size=batch_size,
            progress_callback=report,
        )
    return CleanupSummary(expired=expired, over_size=over_size, older=older)


_SIZE: Final = re.compile(r"([0-9]+)\s*(?:([KMGT])(I)?)?B?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Return the number of bytes ``text`` names: an integer, optionally with a unit ``B``,
    ``KB``/``MB``/``GB``/``TB`` (powers of 1000) or ``KiB``/``MiB``/``GiB``/``TiB``
    (powers of 1024), case-insensitive (``500MB``, ``2GiB``, ``1000000``).

    Raises InvalidArgumentError for anything else.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InvalidArgumentError(
            f"{text!r} is not a size; use bytes with an optional unit (e.g. 500MB, 2GiB)"
        )
    number, prefix, binary = match.groups()
    if prefix is None:
        return int(number)
    base = 1024 if binary else 1000
    scale: int = base ** ("KMGT".index(prefix.upper()) + 1)
    return int(number) * scale


# --- stats and schema -----------------------------------------------------------------------------


def catalog_stats(
    repository: OperatorRepository, now: datetime, entry_filter: EntryFilter | None = None
) -> CatalogStats:
    """Return the catalog's totals, reservations counting as active while unexpired at
    ``now``; with ``entry_filter``, the totals of the scopes it matches (its ``key_prefix``
    is ignored), ``active_reservations`` still counting the whole catalog's. Raises store
    errors as the repository does.
    """
    stats = repository.stats(now)
    if entry_filter is None:
        return stats
    groups = tuple(group for group in stats.by_scope if _in_scope(group.scope, entry_filter))
    return replace(
        stats,
        entries=sum(group.entries for group in groups),
        inline_bytes=sum(group.inline_bytes for group in groups),
        blob_entries=sum(group.blob_entries for group in groups),
        by_scope=groups,
    )


def migrate_database(database: str) -> int:
    """Create or upgrade the schema of ``database`` (any ``--database`` value); return the
    schema version it is at afterwards.

    The same as :func:`taskcache.resolver.migrate`: PostgreSQL migrates under an advisory
    lock, SQLite catalogs whenever they are opened. Idempotent. Raises InvalidArgumentError
    for an unusable value (or PostgreSQL without psycopg), UnavailableError if the database
    cannot be reached, InternalError if its schema is newer than this taskcache.
    """
    return resolver.migrate(database)
