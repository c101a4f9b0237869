"""The persistence contract of Flyte 1's DataCatalog: datasets, artifacts and tags as rows.

:class:`DatacatalogRepository` stores what ``datacatalog.DataCatalog`` serves (reservations
are not here: they live in the cache's reservations table, decided by the manager).
:class:`ThreadedDatacatalogRepository` runs one on a thread pool for the server.

Rows only, like :mod:`taskcache.repositories.base`: every decision (a dataset, an artifact id
or a tag created at most once) is one atomic conditional step; the caller decides what an
outcome means. Times are timezone-aware UTC datetimes with microsecond precision.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class DatasetKey:
    """What names a dataset: Flyte's DatasetID without its UUID."""

    org: str
    project: str
    domain: str
    name: str
    version: str


@dataclass(frozen=True)
class DatasetRow:
    """One dataset. ``metadata`` is a serialized ``datacatalog.Metadata``."""

    key: DatasetKey
    uuid: str
    metadata: bytes
    partition_keys: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class ArtifactDatum:
    """One named value of an artifact: a serialized ``flyteidl.core.Literal`` stored inline,
    or the URI of the blob holding it. Exactly one of ``literal`` and ``uri`` is set.
    """

    name: str
    literal: bytes | None
    uri: str | None


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact of ``dataset``, with its data, partitions (in the order given), the
    names of the tags pointing at it, and a serialized ``datacatalog.Metadata``.
    """

    dataset: DatasetRow
    artifact_id: str
    metadata: bytes
    partitions: tuple[tuple[str, str], ...]
    data: tuple[ArtifactDatum, ...]
    tags: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class DatasetFilter:
    """Which datasets a listing covers: each set field must equal; None matches all."""

    org: str | None = None
    project: str | None = None
    domain: str | None = None
    name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ArtifactFilter:
    """Which artifacts of a dataset a listing covers; every condition must hold.

    ``partitions``: (key, value) pairs the artifact has; ``tag_names``: tags pointing at it;
    ``artifact_ids``: ids it must equal.
    """

    partitions: tuple[tuple[str, str], ...] = ()
    tag_names: tuple[str, ...] = ()
    artifact_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    """A page of a listing by creation time: skip ``offset`` rows, return ``limit``."""

    offset: int
    limit: int
    descending: bool = True


@dataclass(frozen=True)
class ArtifactRef:
    """What names an artifact in the store: its dataset's UUID and its id."""

    dataset_uuid: str
    artifact_id: str


class TagOutcome(enum.Enum):
    """What :meth:`DatacatalogRepository.add_tag` did."""

    ADDED = "added"
    EXISTS = "exists"  # the tag already names an artifact (perhaps this one): unchanged
    NO_ARTIFACT = "no_artifact"


@dataclass(frozen=True)
class DatacatalogStats:
    """Totals for operators: datasets, artifacts, tags and inline / blob data values."""

    datasets: int
    artifacts: int
    tags: int
    inline_bytes: int
    blob_values: int


class DatacatalogRepository(Protocol):
    """Row storage for DataCatalog datasets, artifacts and tags. Every method is atomic."""

    def create_dataset(self, row: DatasetRow) -> bool:
        """Insert ``row`` unless a dataset with its key (or UUID) exists; return whether it
        was inserted.
        """
        ...

    def get_dataset(self, key: DatasetKey, uuid: str | None = None) -> DatasetRow | None:
        """Return the dataset named ``key`` (and, if given, having ``uuid``), or None."""
        ...

    def list_datasets(self, dataset_filter: DatasetFilter, page: Page) -> list[DatasetRow]:
        """Return one page of the datasets matching ``dataset_filter`` by creation time
        (ties broken by UUID).
        """
        ...

    def create_artifact(self, row: ArtifactRow) -> bool:
        """Insert ``row`` (with its data and partitions; ``tags`` are ignored) unless its
        dataset already has an artifact of that id; return whether it was inserted.
        """
        ...

    def get_artifact(self, ref: ArtifactRef) -> ArtifactRow | None:
        """Return the artifact ``ref`` names, or None."""
        ...

    def find_artifact(self, artifact_id: str) -> ArtifactRow | None:
        """Return the newest artifact with id ``artifact_id`` in any dataset, or None."""
        ...

    def get_tagged_artifact(self, dataset_uuid: str, tag_name: str) -> ArtifactRow | None:
        """Return the artifact the tag ``tag_name`` of the dataset names, or None."""
        ...

    def add_tag(self, ref: ArtifactRef, tag_name: str, created_at: datetime) -> TagOutcome:
        """Point the dataset's tag ``tag_name`` at the artifact ``ref`` unless the tag exists
        (it is never reassigned) or the artifact does not.
        """
        ...

    def list_artifacts(
        self, dataset_uuid: str, artifact_filter: ArtifactFilter, page: Page
    ) -> list[ArtifactRow]:
        """Return one page of the dataset's artifacts matching ``artifact_filter`` by
        creation time (ties broken by id).
        """
        ...

    def update_artifact(
        self, ref: ArtifactRef, metadata: bytes, data: Sequence[ArtifactDatum]
    ) -> tuple[ArtifactDatum, ...] | None:
        """Replace the artifact's metadata and all of its data with ``data``; return the data
        it had before, or None (nothing written) if there is no such artifact.
        """
        ...

    def list_all_artifacts(
        self, dataset_filter: DatasetFilter, created_before: datetime | None, page: Page
    ) -> list[ArtifactRow]:
        """Return one page of the artifacts of every dataset matching ``dataset_filter`` and
        created strictly before ``created_before`` (None: any time), by creation time (ties
        broken by dataset UUID, then id).
        """
        ...

    def delete_artifacts(self, refs: Sequence[ArtifactRef]) -> list[ArtifactRow]:
        """Delete the artifacts ``refs`` name, with their data, partitions and tags; return
        the deleted rows (missing ones are skipped). One atomic step.
        """
        ...

    def datacatalog_stats(self) -> DatacatalogStats:
        """Return operator totals, from one read snapshot."""
        ...

    def close(self) -> None:
        """Release connections. Idempotent."""
        ...


class ThreadedDatacatalogRepository:
    """Runs every call of ``repository`` on ``executor`` and awaits it (the server's path).

    Each coroutine means what the :class:`DatacatalogRepository` method of the same name
    means; errors are the repository's own. Closing closes the wrapped repository.
    """

    def __init__(self, repository: DatacatalogRepository, executor: Executor) -> None:
        self.repository = repository
        self._executor = executor

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(function, *args, **kwargs)
        )

    async def create_dataset(self, row: DatasetRow) -> bool:
        """See :meth:`DatacatalogRepository.create_dataset`."""
        return await self._run(self.repository.create_dataset, row)

    async def get_dataset(self, key: DatasetKey, uuid: str | None = None) -> DatasetRow | None:
        """See :meth:`DatacatalogRepository.get_dataset`."""
        return await self._run(self.repository.get_dataset, key, uuid)

    async def list_datasets(self, dataset_filter: DatasetFilter, page: Page) -> list[DatasetRow]:
        """See :meth:`DatacatalogRepository.list_datasets`."""
        return await self._run(self.repository.list_datasets, dataset_filter, page)

    async def create_artifact(self, row: ArtifactRow) -> bool:
        """See :meth:`DatacatalogRepository.create_artifact`."""
        return await self._run(self.repository.create_artifact, row)

    async def get_artifact(self, ref: ArtifactRef) -> ArtifactRow | None:
        """See :meth:`DatacatalogRepository.get_artifact`."""
        return await self._run(self.repository.get_artifact, ref)

    async def find_artifact(self, artifact_id: str) -> ArtifactRow | None:
        """See :meth:`DatacatalogRepository.find_artifact`."""
        return await self._run(self.repository.find_artifact, artifact_id)

    async def get_tagged_artifact(self, dataset_uuid: str, tag_name: str) -> ArtifactRow | None:
        """See :meth:`DatacatalogRepository.get_tagged_artifact`."""
        return await self._run(self.repository.get_tagged_artifact, dataset_uuid, tag_name)

    async def add_tag(self, ref: ArtifactRef, tag_name: str, created_at: datetime) -> TagOutcome:
        """See :meth:`DatacatalogRepository.add_tag`."""
        return await self._run(self.repository.add_tag, ref, tag_name, created_at)

    async def list_artifacts(
        self, dataset_uuid: str, artifact_filter: ArtifactFilter, page: Page
    ) -> list[ArtifactRow]:
        """See :meth:`DatacatalogRepository.list_artifacts`."""
        return await self._run(self.repository.list_artifacts, dataset_uuid, artifact_filter, page)

    async def update_artifact(
        self, ref: ArtifactRef, metadata: bytes, data: Sequence[ArtifactDatum]
    ) -> tuple[ArtifactDatum, ...] | None:
        """See :meth:`DatacatalogRepository.update_artifact`."""
        return await self._run(self.repository.update_artifact, ref, metadata, data)

    async def close(self) -> None:
        """Close the wrapped repository (off the event loop)."""
        await self._run(self.repository.close)
