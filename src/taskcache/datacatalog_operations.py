"""Operating Flyte 1 caches: list, show, evict and count the artifacts ``datacatalog.DataCatalog``
stores, selected by project, domain, task and age.

Flyte 1's propeller names each cached task's dataset ``flyte_task-<task name>`` (in the task's
project and domain; the dataset version is the cache version plus the interface hash) and
tags each artifact with the hash of the inputs. Evicting a task's cache, a project's or
everything older than N days is therefore deleting the matching artifacts, with their tags
and the blobs the service wrote for their values (only under the given storage root). The
``taskcache artifacts`` commands are thin layers over these functions.

It must not parse target strings (:mod:`taskcache.resolver` does) nor print (the CLI does).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from flyteidl.datacatalog import datacatalog_pb2 as dc
from google.protobuf.message import DecodeError

from taskcache.arguments import check_positive
from taskcache.errors import InvalidArgumentError, NotFoundError, UnavailableError
from taskcache.repositories.datacatalog_base import (
    ArtifactRef,
    ArtifactRow,
    DatacatalogRepository,
    DatacatalogStats,
    DatasetFilter,
    DatasetKey,
    Page,
)
from taskcache.storage import BlobStore

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "TASK_DATASET_PREFIX",
    "ArtifactRecord",
    "ArtifactSelection",
    "EvictionSummary",
    "artifact_record",
    "artifact_stats",
    "evict_artifact",
    "evict_artifacts",
    "find_artifact",
    "iter_artifacts",
]

# flytepropeller's dataset name for a task: "flyte_task-" + the task's name.
TASK_DATASET_PREFIX: Final = "flyte_task-"
DEFAULT_BATCH_SIZE: Final = 200


@dataclass(frozen=True)
class ArtifactSelection:
    """Which artifacts an operation covers: each set field must match; None matches all.

    ``task`` is a Flyte task name (its dataset is ``flyte_task-<task>``), ``version`` the
    dataset's version; ``older_than`` keeps only artifacts created longer ago than that
    before the operation's ``now``.
    """

    org: str | None = None
    project: str | None = None
    domain: str | None = None
    task: str | None = None
    older_than: timedelta | None = None
    version: str | None = None

    def dataset_filter(self) -> DatasetFilter:
        """Return the repository filter of the datasets this selection covers."""
        return DatasetFilter(
            org=self.org,
            project=self.project,
            domain=self.domain,
            name=None if self.task is None else TASK_DATASET_PREFIX + self.task,
            version=self.version,
        )

    def created_before(self, now: datetime) -> datetime | None:
        """Return the creation cutoff at ``now`` (None: any age); InvalidArgumentError if
        ``older_than`` is not positive or reaches before year 1.
        """
        if self.older_than is None:
            return None
        if self.older_than <= timedelta(0):
            raise InvalidArgumentError("must be positive", field="older_than")
        try:
            return now - self.older_than
        except OverflowError as error:
            raise InvalidArgumentError("reaches before year 1", field="older_than") from error


@dataclass(frozen=True)
class ArtifactRecord:
    """One artifact as operators see it. ``task`` is the task name when the dataset follows
    propeller's ``flyte_task-`` naming, else the dataset name; ``metadata`` the artifact's key
    map (``execution-name``, ``exec-node``, …; empty if it does not decode).
    """

    org: str
    project: str
    domain: str
    task: str
    dataset_name: str
    dataset_version: str
    dataset_uuid: str
    artifact_id: str
    tags: tuple[str, ...]
    created_at: datetime
    values: tuple[str, ...]
    inline_bytes: int
    blob_uris: tuple[str, ...]
    metadata: dict[str, str]


def artifact_record(row: ArtifactRow) -> ArtifactRecord:
    """Return the operator record of ``row``."""
    key = row.dataset.key
    task = key.name.removeprefix(TASK_DATASET_PREFIX)
    metadata = dc.Metadata()
    try:
        metadata.ParseFromString(row.metadata)
    except DecodeError:
        metadata = dc.Metadata()
    return ArtifactRecord(
        org=key.org,
        project=key.project,
        domain=key.domain,
        task=task,
        dataset_name=key.name,
        dataset_version=key.version,
        dataset_uuid=row.dataset.uuid,
        artifact_id=row.artifact_id,
        tags=row.tags,
        created_at=row.created_at,
        values=tuple(datum.name for datum in row.data),
        inline_bytes=sum(len(datum.literal) for datum in row.data if datum.literal is not None),
        blob_uris=tuple(datum.uri for datum in row.data if datum.uri is not None),
        metadata=dict(metadata.key_map),
    )


def iter_artifacts(
    repository: DatacatalogRepository,
    selection: ArtifactSelection,
    now: datetime,
    page_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[list[ArtifactRecord]]:
    """Yield the records of the selected artifacts, newest first, a page at a time.

    Pages are offsets, so an artifact written or evicted meanwhile may shift a page. Raises
    InvalidArgumentError for a bad ``page_size`` or selection (at once), store errors as the
    repository does (when iterated).
    """
    check_positive(page_size, "page_size")
    cutoff = selection.created_before(now)
    return _pages(repository, selection.dataset_filter(), cutoff, page_size)


def _pages(
    repository: DatacatalogRepository,
    dataset_filter: DatasetFilter,
    cutoff: datetime | None,
    page_size: int,
) -> Iterator[list[ArtifactRecord]]:
    offset = 0
    while True:
        rows = repository.list_all_artifacts(
            dataset_filter, cutoff, Page(offset=offset, limit=page_size, descending=True)
        )
        if rows:
            yield [artifact_record(row) for row in rows]
        if len(rows) < page_size:
            return
        offset += len(rows)


def find_artifact(
    repository: DatacatalogRepository, artifact_id: str, dataset: DatasetKey | None = None
) -> ArtifactRecord:
    """Return the artifact ``artifact_id`` of ``dataset`` (None: the newest of that id in any
    dataset). Raises NotFoundError if there is none.
    """
    return artifact_record(_find_row(repository, artifact_id, dataset))


def _find_row(
    repository: DatacatalogRepository, artifact_id: str, dataset: DatasetKey | None
) -> ArtifactRow:
    if dataset is None:
        row = repository.find_artifact(artifact_id)
    else:
        found = repository.get_dataset(dataset)
        row = (
            None if found is None else repository.get_artifact(ArtifactRef(found.uuid, artifact_id))
        )
    if row is None:
        raise NotFoundError(f"no artifact {artifact_id!r}")
    return row


@dataclass(frozen=True)
class EvictionSummary:
    """What an eviction did (in a dry run: would do): artifacts deleted, their inline bytes,
    blobs deleted under the storage root, blobs that failed to delete, and blobs left alone
    (outside the storage root, or no storage root given).
    """

    artifacts: int = 0
    inline_bytes_freed: int = 0
    blobs_deleted: int = 0
    blob_errors: int = 0
    blobs_skipped: int = 0


def evict_artifacts(
    repository: DatacatalogRepository,
    blobs: BlobStore | None,
    selection: ArtifactSelection,
    now: datetime,
    *,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EvictionSummary:
    """Delete the selected artifacts (oldest first, ``batch_size`` per atomic repository
    call), with their tags; with ``blobs``, also the blobs of their values that lie under that
    store's root. The next propeller run of an evicted task is a cache miss.

    ``dry_run`` deletes nothing and reports what would go. Blob failures are counted, not
    raised. Raises InvalidArgumentError for a bad ``batch_size`` or selection; store errors
    as the repository does (batches already deleted stay deleted).
    """
    check_positive(batch_size, "batch_size")
    cutoff = selection.created_before(now)
    dataset_filter = selection.dataset_filter()
    summary = EvictionSummary()
    offset = 0
    while True:
        rows = repository.list_all_artifacts(
            dataset_filter,
            cutoff,
            Page(offset=offset if dry_run else 0, limit=batch_size, descending=False),
        )
        if not rows:
            return summary
        if dry_run:
            offset += len(rows)
            deleted = rows
        else:
            deleted = repository.delete_artifacts(
                [ArtifactRef(row.dataset.uuid, row.artifact_id) for row in rows]
            )
            if not deleted:
                return summary  # someone else evicted the batch meanwhile
        summary = _tally(summary, deleted, blobs, dry_run=dry_run)


def evict_artifact(
    repository: DatacatalogRepository,
    blobs: BlobStore | None,
    artifact_id: str,
    dataset: DatasetKey | None = None,
    *,
    dry_run: bool = False,
) -> EvictionSummary:
    """Delete the one artifact :func:`find_artifact` finds for ``artifact_id`` and
    ``dataset``, with its tags and (with ``blobs``) the blobs of its values under that
    store's root, as :func:`evict_artifacts` does for a selection.

    Raises NotFoundError if there is no such artifact (also when another operator deleted it
    first); store errors as the repository does.
    """
    row = _find_row(repository, artifact_id, dataset)
    deleted = (
        [row]
        if dry_run
        else repository.delete_artifacts([ArtifactRef(row.dataset.uuid, row.artifact_id)])
    )
    if not deleted:
        raise NotFoundError(f"no artifact {artifact_id!r}")
    return _tally(EvictionSummary(), deleted, blobs, dry_run=dry_run)


def _tally(
    summary: EvictionSummary,
    rows: list[ArtifactRow],
    blobs: BlobStore | None,
    *,
    dry_run: bool,
) -> EvictionSummary:
    records = [artifact_record(row) for row in rows]
    deleted = errors = skipped = 0
    for uri in (uri for record in records for uri in record.blob_uris):
        if blobs is None or not blobs.owns(uri):
            skipped += 1
            continue
        if dry_run:
            deleted += 1
            continue
        try:
            # False: already gone; nothing to count.
            if blobs.delete(uri):
                deleted += 1
        except UnavailableError:
            errors += 1
    return EvictionSummary(
        artifacts=summary.artifacts + len(records),
        inline_bytes_freed=summary.inline_bytes_freed + sum(r.inline_bytes for r in records),
        blobs_deleted=summary.blobs_deleted + deleted,
        blob_errors=summary.blob_errors + errors,
        blobs_skipped=summary.blobs_skipped + skipped,
    )


def artifact_stats(repository: DatacatalogRepository) -> DatacatalogStats:
    """Return the DataCatalog totals (datasets, artifacts, tags, inline bytes, blob values).

    Raises store errors as the repository does.
    """
    return repository.datacatalog_stats()
