"""The DataCatalog policy: the one place that decides Flyte 1's datacatalog rules.

A dataset, an artifact id (per dataset) and a tag (per dataset) are each created once: a
second create is ALREADY_EXISTS and changes nothing, so a tag names its first artifact for
good. Lookups of what is missing are NOT_FOUND. A (dataset, tag) reservation is a cache
reservation: :class:`DatacatalogManager` maps it onto a scope and key and lets the
:class:`~taskcache.manager.AsyncCacheManager` decide the lease, so there is one reservation rule.

It makes one repository call per decision and must not know protobuf messages, transports or
blobs (the service core reads requests and stores values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final
from urllib.parse import quote

from taskcache.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from taskcache.manager import MAX_KEY_LENGTH, AsyncCacheManager
from taskcache.repositories.base import ReservationRow, Scope
from taskcache.repositories.datacatalog_base import (
    ArtifactDatum,
    ArtifactFilter,
    ArtifactRef,
    ArtifactRow,
    DatasetFilter,
    DatasetKey,
    DatasetRow,
    Page,
    TagOutcome,
    ThreadedDatacatalogRepository,
)

# Reservation keys in the cache's reservations table; no Flyte cache key starts with it.
RESERVATION_KEY_PREFIX: Final = "datacatalog/"


def describe_dataset(key: DatasetKey) -> str:
    """Return ``key`` for messages: ``[org/]project/domain/name/version``."""
    org = f"{key.org}/" if key.org else ""
    return f"{org}{key.project}/{key.domain}/{key.name}/{key.version}"


@dataclass(frozen=True)
class ArtifactHandle:
    """Which artifact a lookup names: by ``artifact_id`` (in ``dataset``, or in any dataset
    when it is None, as Flyte allows) or by ``tag_name`` of ``dataset``. ``dataset_uuid``
    (may be empty) must also match when given.
    """

    dataset: DatasetKey | None
    dataset_uuid: str
    artifact_id: str | None
    tag_name: str | None


@dataclass(frozen=True)
class ReservationTarget:
    """Where a (dataset, tag) reservation lives in the cache's reservations table."""

    scope: Scope
    key: str


def reservation_target(dataset: DatasetKey, tag_name: str) -> ReservationTarget:
    """Return the scope (the dataset's org, project and domain) and key
    (``datacatalog/<name>/<version>/<tag>``, each part percent-encoded) of the reservation on
    (``dataset``, ``tag_name``). InvalidArgumentError naming ``reservation_id`` if the key
    would exceed the reservations table's key limit.
    """
    parts = (dataset.name, dataset.version, tag_name)
    key = RESERVATION_KEY_PREFIX + "/".join(quote(part, safe="") for part in parts)
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(
            f"dataset name, version and tag name are too long together ({len(key)} "
            f"characters encoded; the limit is {MAX_KEY_LENGTH})",
            field="reservation_id",
        )
    return ReservationTarget(Scope(dataset.org, dataset.project, dataset.domain), key)


class DatacatalogManager:
    """Applies the DataCatalog rules on ``repository``; reservations go to ``reservations``.

    Creation times come from ``reservations.clock`` (the cache manager's injectable clock),
    so both follow one time source. Every method raises the repository's store errors.
    """

    def __init__(
        self, repository: ThreadedDatacatalogRepository, reservations: AsyncCacheManager
    ) -> None:
        self.repository = repository
        self._reservations = reservations

    # --- datasets ---------------------------------------------------------------------------

    async def create_dataset(
        self, key: DatasetKey, uuid: str, metadata: bytes, partition_keys: tuple[str, ...]
    ) -> DatasetRow:
        """Create the dataset and return it; AlreadyExistsError if its key or ``uuid`` is
        taken (the existing one is unchanged).
        """
        row = DatasetRow(key, uuid, metadata, partition_keys, self._reservations.clock())
        if not await self.repository.create_dataset(row):
            raise AlreadyExistsError(f"dataset {describe_dataset(key)} already exists")
        return row

    async def get_dataset(self, key: DatasetKey, uuid: str = "") -> DatasetRow:
        """Return the dataset named ``key`` (and ``uuid``, if not empty); NotFoundError if
        there is none.
        """
        found = await self.repository.get_dataset(key, uuid or None)
        if found is None:
            raise NotFoundError(f"missing entity of type Dataset: {describe_dataset(key)}")
        return found

    async def list_datasets(
        self, dataset_filter: DatasetFilter | None, page: Page
    ) -> list[DatasetRow]:
        """Return one page of the datasets ``dataset_filter`` matches (None: none match)."""
        if dataset_filter is None:
            return []
        return await self.repository.list_datasets(dataset_filter, page)

    # --- artifacts --------------------------------------------------------------------------

    async def create_artifact(
        self,
        dataset: DatasetRow,
        artifact_id: str,
        metadata: bytes,
        partitions: tuple[tuple[str, str], ...],
        data: Sequence[ArtifactDatum],
    ) -> ArtifactRow:
        """Create the artifact and return it; AlreadyExistsError if ``dataset`` already has
        an artifact ``artifact_id`` (whose data is unchanged).
        """
        row = ArtifactRow(
            dataset=dataset,
            artifact_id=artifact_id,
            metadata=metadata,
            partitions=partitions,
            data=tuple(data),
            tags=(),
            created_at=self._reservations.clock(),
        )
        if not await self.repository.create_artifact(row):
            raise AlreadyExistsError(
                f"artifact {artifact_id!r} already exists in dataset "
                f"{describe_dataset(dataset.key)}"
            )
        return row

    async def find_artifact(self, handle: ArtifactHandle) -> ArtifactRow:
        """Return the artifact ``handle`` names; NotFoundError if it or its dataset (or tag)
        is missing.
        """
        repository = self.repository
        dataset = (
            None
            if handle.dataset is None
            else await repository.get_dataset(handle.dataset, handle.dataset_uuid or None)
        )
        found: ArtifactRow | None = None
        if handle.artifact_id is not None:
            if handle.dataset is None:
                found = await repository.find_artifact(handle.artifact_id)
            elif dataset is not None:
                found = await repository.get_artifact(ArtifactRef(dataset.uuid, handle.artifact_id))
            if found is None:
                raise NotFoundError(
                    f"missing entity of type Artifact with id {handle.artifact_id!r}"
                )
            return found
        if dataset is not None and handle.tag_name is not None:
            found = await repository.get_tagged_artifact(dataset.uuid, handle.tag_name)
        if found is None:
            where = "" if handle.dataset is None else f" in {describe_dataset(handle.dataset)}"
            raise NotFoundError(f"missing entity of type Tag {handle.tag_name!r}{where}")
        return found

    async def add_tag(self, dataset: DatasetRow, artifact_id: str, tag_name: str) -> None:
        """Point the dataset's tag at the artifact. NotFoundError if the artifact is missing;
        AlreadyExistsError if the tag exists (it is never reassigned, even to itself).
        """
        outcome = await self.repository.add_tag(
            ArtifactRef(dataset.uuid, artifact_id), tag_name, self._reservations.clock()
        )
        if outcome is TagOutcome.NO_ARTIFACT:
            raise NotFoundError(f"missing entity of type Artifact with id {artifact_id!r}")
        if outcome is TagOutcome.EXISTS:
            raise AlreadyExistsError(
                f"tag {tag_name!r} already exists in dataset {describe_dataset(dataset.key)}"
            )

    async def list_artifacts(
        self, dataset: DatasetRow, artifact_filter: ArtifactFilter, page: Page
    ) -> list[ArtifactRow]:
        """Return one page of the dataset's artifacts ``artifact_filter`` matches."""
        return await self.repository.list_artifacts(dataset.uuid, artifact_filter, page)

    async def update_artifact(
        self, artifact: ArtifactRow, metadata: bytes, data: Sequence[ArtifactDatum]
    ) -> tuple[ArtifactDatum, ...]:
        """Replace the artifact's metadata and every value with ``data``; return the values
        it had. NotFoundError if it was deleted meanwhile.
        """
        former = await self.repository.update_artifact(
            ArtifactRef(artifact.dataset.uuid, artifact.artifact_id), metadata, data
        )
        if former is None:
            raise NotFoundError(f"missing entity of type Artifact with id {artifact.artifact_id!r}")
        return former

    # --- reservations -----------------------------------------------------------------------

    async def get_or_extend_reservation(
        self, dataset: DatasetKey, tag_name: str, owner_id: str, heartbeat_interval: timedelta
    ) -> ReservationRow:
        """Grant or extend ``owner_id``'s reservation on (``dataset``, ``tag_name``), or
        return the holder's: :meth:`AsyncCacheManager.get_or_extend_reservation`'s rule.
        """
        target = reservation_target(dataset, tag_name)
        return await self._reservations.get_or_extend_reservation(
            target.scope, target.key, owner_id, heartbeat_interval
        )

    async def release_reservation(self, dataset: DatasetKey, tag_name: str, owner_id: str) -> None:
        """Release ``owner_id``'s reservation on (``dataset``, ``tag_name``); absent or foreign
        ones are left alone.
        """
        target = reservation_target(dataset, tag_name)
        await self._reservations.release_reservation(target.scope, target.key, owner_id)
