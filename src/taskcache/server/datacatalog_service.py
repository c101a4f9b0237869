"""The DataCatalog service core: Flyte 1's ``datacatalog.DataCatalog``, all ten RPCs.

A :class:`DataCatalogService` checks the caller's token, reads each request through
:mod:`taskcache.server.datacatalog_requests` (Flyte's validation), calls the
:class:`~taskcache.datacatalog_manager.DatacatalogManager` (which decides what exists, and
hands reservations to the cache manager's lease rule) and builds the response. It owns the
values' storage: each is kept inline up to the inline limit, else written as a blob under the
server's storage root, and the blobs it wrote are deleted when their values are replaced or
a create is refused. It knows nothing of gRPC and decides no catalog rule.

Errors are :class:`~taskcache.errors.CacheError` subclasses with Flyte's codes: ALREADY_EXISTS
for a dataset, artifact id or tag that exists, NOT_FOUND for a missing one,
INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta

from flyteidl.core import literals_pb2
from flyteidl.datacatalog import datacatalog_pb2 as dc
from google.protobuf.message import DecodeError, Message

# The limit cache entries are stored inline up to: larger values go to blobs.
from taskcache.clients.embedded import DEFAULT_INLINE_MAX_BYTES
from taskcache.datacatalog_manager import DatacatalogManager
from taskcache.errors import InternalError, InvalidArgumentError
from taskcache.repositories.datacatalog_base import ArtifactDatum, ArtifactRow, DatasetRow
from taskcache.server import datacatalog_requests as read
from taskcache.server.scope import UNSCOPED
from taskcache.server.service import Backend, Headers
from taskcache.storage import read_blob
from taskcache.wiretime import duration_to_timedelta

logger = logging.getLogger(__name__)


def _dataset_id(row: DatasetRow) -> dc.DatasetID:
    key = row.key
    return dc.DatasetID(
        project=key.project,
        domain=key.domain,
        name=key.name,
        version=key.version,
        UUID=row.uuid,
        org=key.org,
    )


def _parse(message: Message, data: bytes, what: str) -> None:
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise InternalError(f"stored {what} cannot be decoded: {error}") from error


class DataCatalogService:
    """Serves ``datacatalog.DataCatalog`` through ``catalog`` (and ``backend``'s blob store,
    executor, metrics and token authority).

    Each method takes the request message and its headers (lower-case names) and returns
    the response message; it raises CacheError subclasses. With a token authority every
    method first requires an all-scope token (the API is unscoped: listings and lookups by
    artifact id span projects). Values whose serialized Literal exceeds ``inline_max_bytes``
    are written under ``backend.blobs`` (without a storage root, every value stays inline).
    """

    def __init__(
        self,
        backend: Backend,
        catalog: DatacatalogManager,
        *,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
    ) -> None:
        self._backend = backend
        self._catalog = catalog
        self._inline_max_bytes = inline_max_bytes

    def _authorize(self, headers: Headers) -> None:
        """Require an all-scope token (when tokens are configured) before reading anything."""
        auth = self._backend.auth
        if auth is not None:
            auth.authenticate(headers).authorize(UNSCOPED)

    # --- datasets ---------------------------------------------------------------------------

    async def create_dataset(self, request: Message, headers: Headers) -> dc.CreateDatasetResponse:
        """Create the dataset; AlreadyExistsError if its id (or given UUID) is taken."""
        self._authorize(headers)
        create: dc.CreateDatasetRequest = request
        read.require_field(create, "dataset")
        dataset = create.dataset
        key = read.dataset_key(dataset.id, "dataset.id", present=dataset.HasField("id"))
        partition_keys = read.unique_partition_keys(dataset.partitionKeys, "dataset.partitionKeys")
        await self._catalog.create_dataset(
            key,
            dataset.id.UUID or str(uuid.uuid4()),
            dataset.metadata.SerializeToString(deterministic=True),
            partition_keys,
        )
        return dc.CreateDatasetResponse()

    async def get_dataset(self, request: Message, headers: Headers) -> dc.GetDatasetResponse:
        """Return the dataset; NotFoundError if there is none."""
        self._authorize(headers)
        get: dc.GetDatasetRequest = request
        key = read.dataset_key(get.dataset, "dataset", present=get.HasField("dataset"))
        row = await self._catalog.get_dataset(key, get.dataset.UUID)
        return dc.GetDatasetResponse(dataset=_dataset_message(row))

    async def list_datasets(self, request: Message, headers: Headers) -> dc.ListDatasetsResponse:
        """Return one page of the datasets the filter matches, newest first by default, with
        Flyte's next token (the offset after this page).
        """
        self._authorize(headers)
        listing: dc.ListDatasetsRequest = request
        page = read.page(listing)
        rows = await self._catalog.list_datasets(read.dataset_filter(listing.filter), page)
        return dc.ListDatasetsResponse(
            datasets=[_dataset_message(row) for row in rows],
            next_token=read.next_token(page, len(rows)),
        )

    # --- artifacts --------------------------------------------------------------------------

    async def _store_values(
        self, dataset: DatasetRow, artifact_id: str, data: Sequence[dc.ArtifactData]
    ) -> list[ArtifactDatum]:
        """Return ``data`` as stored values: inline up to the limit, else written as blobs
        (those already written are deleted if a later write fails).
        """
        stored: list[ArtifactDatum] = []
        blobs = self._backend.blobs
        try:
            for position, datum in enumerate(data):
                literal = datum.value.SerializeToString(deterministic=True)
                if blobs is None or len(literal) <= self._inline_max_bytes:
                    stored.append(ArtifactDatum(datum.name, literal, None))
                    continue
                uri = await asyncio.get_running_loop().run_in_executor(
                    self._backend.executor,
                    blobs.write_file,
                    f"datacatalog/{dataset.uuid}/{artifact_id}",
                    f"value-{position}.pb",
                    literal,
                )
                stored.append(ArtifactDatum(datum.name, None, uri))
        except BaseException:
            await self._delete_blobs(stored)
            raise
        return stored

    async def _delete_blobs(self, values: Sequence[ArtifactDatum]) -> None:
        """Delete the blobs of ``values`` that lie under the storage root; log failures (the
        request's outcome does not depend on them).
        """
        blobs = self._backend.blobs
        uris = [datum.uri for datum in values if datum.uri is not None]
        if blobs is None or not uris:
            return
        loop = asyncio.get_running_loop()
        for uri in uris:
            try:
                await loop.run_in_executor(self._backend.executor, blobs.delete, uri)
            except Exception:
                logger.warning("could not delete artifact blob %s", uri, exc_info=True)

    async def create_artifact(
        self, request: Message, headers: Headers
    ) -> dc.CreateArtifactResponse:
        """Store the artifact (values, partitions, metadata); NotFoundError if its dataset is
        missing, AlreadyExistsError if the dataset has an artifact of that id.
        """
        self._authorize(headers)
        create: dc.CreateArtifactRequest = request
        read.require_field(create, "artifact")
        artifact = create.artifact
        key = read.dataset_key(
            artifact.dataset, "artifact.dataset", present=artifact.HasField("dataset")
        )
        if not artifact.id:
            raise InvalidArgumentError("missing artifactID", field="artifact.id")
        read.data_names(artifact.data, "artifact.data")
        dataset = await self._catalog.get_dataset(key, artifact.dataset.UUID)
        partitions = read.artifact_partitions(
            dataset.partition_keys, artifact.partitions, "artifact.partitions"
        )
        values = await self._store_values(dataset, artifact.id, artifact.data)
        try:
            await self._catalog.create_artifact(
                dataset,
                artifact.id,
                artifact.metadata.SerializeToString(deterministic=True),
                partitions,
                values,
            )
        except BaseException:
            await self._delete_blobs(values)  # refused or failed: nothing references them
            raise
        return dc.CreateArtifactResponse()

    async def _artifact_message(self, row: ArtifactRow) -> dc.Artifact:
        """Return ``row`` as Flyte's Artifact, blob values read back; NotFoundError if a blob
        has vanished (a dangling artifact is a miss, not an error).
        """
        dataset_id = _dataset_id(row.dataset)
        message = dc.Artifact(
            id=row.artifact_id,
            dataset=dataset_id,
            partitions=[dc.Partition(key=key, value=value) for key, value in row.partitions],
            tags=[
                dc.Tag(name=tag, artifact_id=row.artifact_id, dataset=dataset_id)
                for tag in row.tags
            ],
        )
        _parse(message.metadata, row.metadata, "artifact metadata")
        message.created_at.FromDatetime(row.created_at)
        loop = asyncio.get_running_loop()
        for datum in row.data:
            if datum.literal is not None:
                literal = datum.literal
            else:
                assert datum.uri is not None  # the table's CHECK: one of the two is set
                literal = await loop.run_in_executor(self._backend.executor, read_blob, datum.uri)
            value = literals_pb2.Literal()
            _parse(value, literal, f"value {datum.name!r} of artifact {row.artifact_id!r}")
            message.data.add(name=datum.name, value=value)
        return message

    async def get_artifact(self, request: Message, headers: Headers) -> dc.GetArtifactResponse:
        """Return the artifact named by id or by tag; NotFoundError if there is none."""
        self._authorize(headers)
        get: dc.GetArtifactRequest = request
        row = await self._catalog.find_artifact(read.artifact_handle(get))
        return dc.GetArtifactResponse(artifact=await self._artifact_message(row))

    async def add_tag(self, request: Message, headers: Headers) -> dc.AddTagResponse:
        """Tag the artifact; NotFoundError if the dataset or artifact is missing,
        AlreadyExistsError if the tag exists (it keeps naming its first artifact).
        """
        self._authorize(headers)
        add: dc.AddTagRequest = request
        read.require_field(add, "tag")
        tag = add.tag
        key = read.dataset_key(tag.dataset, "tag.dataset", present=tag.HasField("dataset"))
        if not tag.name:
            raise InvalidArgumentError("missing tagName", field="tag.name")
        if not tag.artifact_id:
            raise InvalidArgumentError("missing artifactID", field="tag.artifact_id")
        dataset = await self._catalog.get_dataset(key, tag.dataset.UUID)
        await self._catalog.add_tag(dataset, tag.artifact_id, tag.name)
        return dc.AddTagResponse()

    async def list_artifacts(self, request: Message, headers: Headers) -> dc.ListArtifactsResponse:
        """Return one page of the dataset's artifacts the filter matches, newest first by
        default, with Flyte's next token; NotFoundError if the dataset is missing.
        """
        self._authorize(headers)
        listing: dc.ListArtifactsRequest = request
        key = read.dataset_key(listing.dataset, "dataset", present=listing.HasField("dataset"))
        artifact_filter = read.artifact_filter(listing.filter)
        page = read.page(listing)
        dataset = await self._catalog.get_dataset(key, listing.dataset.UUID)
        rows = await self._catalog.list_artifacts(dataset, artifact_filter, page)
        return dc.ListArtifactsResponse(
            artifacts=[await self._artifact_message(row) for row in rows],
            next_token=read.next_token(page, len(rows)),
        )

    async def update_artifact(
        self, request: Message, headers: Headers
    ) -> dc.UpdateArtifactResponse:
        """Replace the values and metadata of the artifact named by id or tag (values no
        longer present are removed, with the blobs the service wrote for them); NotFoundError
        if it is missing.
        """
        self._authorize(headers)
        update: dc.UpdateArtifactRequest = request
        handle = read.artifact_handle(update)
        read.data_names(update.data, "data")
        found = await self._catalog.find_artifact(handle)
        values = await self._store_values(found.dataset, found.artifact_id, update.data)
        try:
            former = await self._catalog.update_artifact(
                found, update.metadata.SerializeToString(deterministic=True), values
            )
        except BaseException:
            await self._delete_blobs(values)
            raise
        # Each blob is written once under a fresh name, so no new value shares one.
        await self._delete_blobs(former)
        return dc.UpdateArtifactResponse(artifact_id=found.artifact_id)

    # --- reservations -----------------------------------------------------------------------

    async def get_or_extend_reservation(
        self, request: Message, headers: Headers
    ) -> dc.GetOrExtendReservationResponse:
        """Grant or extend the caller's reservation on (dataset, tag), or return the current
        holder's (the cache manager's lease rule).
        """
        self._authorize(headers)
        wanted: dc.GetOrExtendReservationRequest = request
        dataset, tag_name = read.reservation_of(wanted)
        heartbeat = (
            duration_to_timedelta(wanted.heartbeat_interval, "heartbeat_interval")
            if wanted.HasField("heartbeat_interval")
            else timedelta(0)
        )
        row = await self._catalog.get_or_extend_reservation(
            dataset, tag_name, wanted.owner_id, heartbeat
        )
        self._backend.metrics.count_reservation(row, wanted.owner_id)
        response = dc.GetOrExtendReservationResponse()
        reservation = response.reservation
        reservation.reservation_id.CopyFrom(wanted.reservation_id)
        reservation.owner_id = row.owner_id
        reservation.heartbeat_interval.FromTimedelta(row.heartbeat_interval)
        reservation.expires_at.FromDatetime(row.expires_at)
        return response

    async def release_reservation(
        self, request: Message, headers: Headers
    ) -> dc.ReleaseReservationResponse:
        """Release the caller's reservation; absent or foreign ones are left alone (OK)."""
        self._authorize(headers)
        release: dc.ReleaseReservationRequest = request
        dataset, tag_name = read.reservation_of(release)
        await self._catalog.release_reservation(dataset, tag_name, release.owner_id)
        return dc.ReleaseReservationResponse()


def _dataset_message(row: DatasetRow) -> dc.Dataset:
    message = dc.Dataset(id=_dataset_id(row), partitionKeys=list(row.partition_keys))
    _parse(message.metadata, row.metadata, "dataset metadata")
    return message
