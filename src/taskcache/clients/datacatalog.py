"""The ``datacatalog://`` client: Flyte's seven catalog methods over Flyte 1's
``datacatalog.DataCatalog`` gRPC service, called the way flytepropeller's datacatalog client
calls it (``flytepropeller/pkg/controller/nodes/catalog/datacatalog``).

A key becomes a dataset and an artifact tag, both from the Flyte 1 key functions of
:mod:`taskcache.hashing`: ``DatasetID(project, domain, "flyte_task-<task name>",
"<cache version>-<interface signature>")`` and ``"flyte_cached-<inputs hash>"``.

- Get: GetDataset, then GetArtifact by tag. With ``max_cache_age`` an artifact whose
  ``created_at`` is older (on this client's clock) is a miss, as in flytepropeller.
- Put: CreateDataset (an existing one is fine), GetArtifact by tag (a tagged artifact is
  AlreadyExists: nothing is created), CreateArtifact under a new id, AddTag.
- Update: UpdateArtifact by tag; when there is none, a Put (and when that loses the tag to
  another writer, UpdateArtifact again: an update ends with its own outputs stored).
- Reservations: GetOrExtendReservation / ReleaseReservation on ``ReservationID(dataset, tag)``.

Outputs travel as the artifact's data, one literal per output name; the service stores them,
so ``storage`` holds only what ``@taskcache.cached`` writes itself.

The DataCatalog API cannot delete an artifact. A put therefore checks the tag before it
creates anything; only when another writer tags the same inputs between that check and this
put's AddTag is an artifact left behind. The put then raises AlreadyExistsError (another writer
won; its outputs are served) and logs the left-over artifact's id at warning level: it is
untagged, so no Get ever returns it, and ``taskcache artifacts delete`` (or ``artifacts gc``)
on the server's database removes it.
:meth:`DataCatalogClient.delete` is refused for the same reason.

Every call (its requests, the order of its RPCs, how it reads their responses) lives in
:class:`DataCatalogRules` (no I/O), shared by the sync and async clients; the public methods,
sending, the closed-client refusal and the reservation cache are the remote clients' base
(:mod:`taskcache.clients.remote`). The service decides everything else; the only rule
applied here is the client-side max age, with the manager's own test.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta

from flyteidl.core import literals_pb2 as literals_v1
from flyteidl.datacatalog import datacatalog_pb2 as dc
from flyteidl2.core import catalog_pb2, identifier_pb2

from taskcache import hashing, rpcs
from taskcache.clients import transports
from taskcache.clients.base import CheckedWrite
from taskcache.clients.conversation import Exchange, Steps
from taskcache.clients.payload import Outputs, check_outputs, literal_outputs, put_failures
from taskcache.clients.remote import AsyncRemote, SyncRemote, reservation_heartbeat
from taskcache.clients.reservation_cache import ReservationCacheStore
from taskcache.clients.transports import time_left
from taskcache.deadlines import Deadline
from taskcache.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from taskcache.manager import Clock, is_stale, validate_owner
from taskcache.model import CacheStatus, Entry, Key, Metadata, Reservation, Status
from taskcache.outputs import InMemoryOutputReader, decode_literal_map
from taskcache.provenance import (
    as_identifier,
    datacatalog_artifact_key_map,
    datacatalog_dataset_key_map,
    datacatalog_source_key_map,
    source_execution,
)
from taskcache.storage import BlobStore
from taskcache.wiretime import Interval

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a key lives in a DataCatalog: its dataset and its artifact tag."""

    dataset_id: dc.DatasetID
    tag: str

    @property
    def reservation_id(self) -> dc.ReservationID:
        """The ``ReservationID`` of the key: the dataset and the tag."""
        return dc.ReservationID(dataset_id=self.dataset_id, tag_name=self.tag)

    def describe(self) -> str:
        """Return ``tag`` in ``project/domain/name/version`` for messages."""
        dataset = self.dataset_id
        return (
            f"tag {self.tag!r} of dataset "
            f"{dataset.project}/{dataset.domain}/{dataset.name}/{dataset.version}"
        )


@dataclass(frozen=True)
class DataCatalogRules:
    """The calls both DataCatalog clients run, with their request building and response
    reading (no I/O).

    ``blobs`` is the client's storage (for ``@taskcache.cached`` values; outputs never go
    there); with ``max_cache_age`` artifacts created longer ago than that on ``clock`` miss;
    ``reservations`` remembers the client's reservation attempts.
    """

    blobs: BlobStore
    max_cache_age: timedelta | None
    clock: Clock
    reservations: ReservationCacheStore

    @staticmethod
    def target(key: Key) -> Target:
        """Return the dataset and tag of ``key`` (its inputs read if the interface has any).

        Raises InvalidArgumentError for a missing identifier or interface or an empty cache
        version.
        """
        if key.identifier is None:
            raise InvalidArgumentError("is required", field="identifier")
        if key.typed_interface is None:
            raise InvalidArgumentError("is required", field="typed_interface")
        version = hashing.datacatalog_dataset_version(key.typed_interface, key.cache_version)
        inputs = key.read_inputs() if key.typed_interface.HasField("inputs") else None
        identifier = key.identifier
        dataset_id = dc.DatasetID(
            project=identifier.project,
            domain=identifier.domain,
            name=hashing.datacatalog_dataset_name(identifier),
            version=version,
        )
        return Target(
            dataset_id, hashing.datacatalog_artifact_tag(inputs, key.cache_ignore_input_vars)
        )

    @staticmethod
    def get_artifact_request(target: Target) -> dc.GetArtifactRequest:
        """Return the GetArtifact request for the artifact tagged ``target.tag``."""
        return dc.GetArtifactRequest(dataset=target.dataset_id, tag_name=target.tag)

    def check_fresh(self, target: Target, artifact: dc.Artifact) -> None:
        """Raise NotFoundError if ``artifact`` was created longer ago than ``max_cache_age``."""
        if not artifact.HasField("created_at"):
            return
        created_at = artifact.created_at.ToDatetime(tzinfo=UTC)
        if is_stale(created_at, self.clock(), self.max_cache_age):
            raise NotFoundError(
                f"the artifact of {target.describe()} was created at {created_at.isoformat()}, "
                f"longer ago than max_cache_age {self.max_cache_age}"
            )

    @staticmethod
    def read_hit(key: Key, target: Target, dataset: dc.Dataset, artifact: dc.Artifact) -> Entry:
        """Turn a dataset and its tagged artifact into an Entry (CACHE_HIT).

        The source execution is rebuilt from the artifact's key map and the dataset's task
        version, as flytepropeller does. Raises InvalidArgumentError if the data does not
        decode as literals.
        """
        stored = literals_v1.LiteralMap(
            literals={datum.name: datum.value for datum in artifact.data}
        )
        outputs = decode_literal_map(
            stored.SerializeToString(), source=f"the artifact of {target.describe()}"
        )
        key_map = datacatalog_source_key_map(
            dict(dataset.metadata.key_map), dict(artifact.metadata.key_map)
        )
        source = source_execution(as_identifier(key.identifier), key_map)
        return Entry(
            outputs=InMemoryOutputReader(outputs),
            status=Status(CacheStatus.CACHE_HIT, catalog_metadata(target, artifact.id, source)),
        )

    @staticmethod
    def create_dataset_request(
        target: Target, metadata: Metadata | None
    ) -> dc.CreateDatasetRequest:
        """Return the CreateDataset request, with the task version flytepropeller records."""
        dataset = dc.Dataset(
            id=target.dataset_id,
            metadata=dc.Metadata(key_map=datacatalog_dataset_key_map(metadata)),
        )
        return dc.CreateDatasetRequest(dataset=dataset)

    @staticmethod
    def artifact_data(outputs: Outputs, target: Target) -> list[dc.ArtifactData]:
        """Return ``outputs`` as artifact data: one ``ArtifactData`` per output name, sorted.

        Raises TypeError for outputs that are neither a LiteralMap nor an OutputReader (or a
        reader whose ``read()`` returns something else), NotFoundError when a reader says its
        outputs do not exist.
        """
        literal_map = literal_outputs(outputs, target.tag)
        # Flyte 2 literals share Flyte 1's field numbers: the bytes read as either.
        stored = (
            literal_map
            if isinstance(literal_map, literals_v1.LiteralMap)
            else literals_v1.LiteralMap.FromString(literal_map.SerializeToString())
        )
        return [
            dc.ArtifactData(name=name, value=stored.literals[name])
            for name in sorted(stored.literals)
        ]

    @staticmethod
    def create_artifact_request(
        target: Target, data: list[dc.ArtifactData], metadata: Metadata | None
    ) -> dc.CreateArtifactRequest:
        """Return the CreateArtifact request of a new artifact (a fresh random id)."""
        artifact = dc.Artifact(
            id=str(uuid.uuid4()),
            dataset=target.dataset_id,
            data=data,
            metadata=dc.Metadata(key_map=datacatalog_artifact_key_map(metadata)),
        )
        return dc.CreateArtifactRequest(artifact=artifact)

    @staticmethod
    def add_tag_request(target: Target, artifact_id: str) -> dc.AddTagRequest:
        """Return the AddTag request naming ``artifact_id`` by ``target.tag``."""
        return dc.AddTagRequest(
            tag=dc.Tag(name=target.tag, artifact_id=artifact_id, dataset=target.dataset_id)
        )

    @staticmethod
    def update_request(
        target: Target, data: list[dc.ArtifactData], metadata: Metadata | None
    ) -> dc.UpdateArtifactRequest:
        """Return the UpdateArtifact request replacing the tagged artifact's data and metadata."""
        return dc.UpdateArtifactRequest(
            dataset=target.dataset_id,
            tag_name=target.tag,
            data=data,
            metadata=dc.Metadata(key_map=datacatalog_artifact_key_map(metadata)),
        )

    @staticmethod
    def already_tagged(target: Target) -> AlreadyExistsError:
        """The error of a create-only put whose tag names an artifact already."""
        return AlreadyExistsError(f"an artifact is already cached under {target.describe()}")

    @staticmethod
    def lost_tag(target: Target, artifact_id: str) -> AlreadyExistsError:
        """The error of a put whose AddTag lost to another writer; logs the left-over artifact."""
        _LOG.warning(
            "another writer tagged %s first; artifact %s stays untagged "
            "(the DataCatalog API cannot delete it)",
            target.describe(),
            artifact_id,
        )
        return AlreadyExistsError(
            f"another writer cached {target.describe()} first; "
            f"artifact {artifact_id!r} was left untagged"
        )

    @staticmethod
    def populated_status(target: Target, artifact_id: str, metadata: Metadata | None) -> Status:
        """Return the CACHE_POPULATED status of a put or update of ``artifact_id``."""
        source = metadata.task_execution_id if metadata is not None else None
        return Status(CacheStatus.CACHE_POPULATED, catalog_metadata(target, artifact_id, source))

    def reservation_request(
        self, key: Key, owner_id: str, heartbeat_interval: Interval
    ) -> dc.GetOrExtendReservationRequest:
        """Return the GetOrExtendReservation request on the key's dataset and tag (arguments
        checked by :func:`~taskcache.clients.remote.reservation_heartbeat`).
        """
        heartbeat = reservation_heartbeat(owner_id, heartbeat_interval)
        request = dc.GetOrExtendReservationRequest(
            reservation_id=self.target(key).reservation_id, owner_id=owner_id
        )
        request.heartbeat_interval.FromTimedelta(heartbeat)
        return request

    def release_request(self, key: Key, owner_id: str) -> dc.ReleaseReservationRequest:
        """Return the ReleaseReservation request; InvalidArgumentError for an empty owner."""
        validate_owner(owner_id)
        return dc.ReleaseReservationRequest(
            reservation_id=self.target(key).reservation_id, owner_id=owner_id
        )

    @staticmethod
    def reservation(response: dc.GetOrExtendReservationResponse) -> Reservation:
        """Return the reservation a GetOrExtendReservation answered; its ``key`` is the tag."""
        held = response.reservation
        return Reservation(
            key=held.reservation_id.tag_name,
            owner_id=held.owner_id,
            heartbeat_interval=held.heartbeat_interval.ToTimedelta(),
            expires_at=held.expires_at.ToDatetime(tzinfo=UTC),
        )

    # The calls: each a conversation (see :mod:`taskcache.clients.conversation`).

    def get(self, key: Key) -> Steps[Entry]:
        """The Get of ``key``: the artifact its inputs' tag names in its dataset.

        NotFoundError when the dataset or the tag is absent, and for an artifact created
        longer ago than ``max_cache_age``.
        """
        target = self.target(key)
        found: dc.GetDatasetResponse = yield Exchange(
            rpcs.GET_DATASET, dc.GetDatasetRequest(dataset=target.dataset_id)
        )
        tagged: dc.GetArtifactResponse = yield Exchange(
            rpcs.GET_ARTIFACT, self.get_artifact_request(target)
        )
        self.check_fresh(target, tagged.artifact)
        return self.read_hit(key, target, found.dataset, tagged.artifact)

    def write(self, write: CheckedWrite) -> Steps[Status]:
        """The put or update of ``write`` (see the module docstring); InvalidArgumentError
        for a ``ttl``, which a DataCatalog cannot apply.
        """
        key, metadata = write.key, write.metadata
        check_outputs(write.outputs)
        _refuse_ttl(write.ttl)
        with put_failures(key):
            target = self.target(key)
            data = self.artifact_data(write.outputs, target)
            with contextlib.suppress(AlreadyExistsError):
                yield Exchange(rpcs.CREATE_DATASET, self.create_dataset_request(target, metadata))
            if write.overwrite:
                with contextlib.suppress(NotFoundError):
                    return (yield from self._update(target, data, metadata))
            else:
                yield from self._refuse_tagged(target)
            request = self.create_artifact_request(target, data, metadata)
            artifact_id = request.artifact.id
            yield Exchange(rpcs.CREATE_ARTIFACT, request)
            try:
                yield Exchange(rpcs.ADD_TAG, self.add_tag_request(target, artifact_id))
            except AlreadyExistsError as error:
                lost = self.lost_tag(target, artifact_id)
                if not write.overwrite:
                    raise lost from error
                return (yield from self._update(target, data, metadata))
            return self.populated_status(target, artifact_id, metadata)

    def _update(
        self, target: Target, data: list[dc.ArtifactData], metadata: Metadata | None
    ) -> Steps[Status]:
        request = self.update_request(target, data, metadata)
        response: dc.UpdateArtifactResponse = yield Exchange(rpcs.UPDATE_ARTIFACT, request)
        return self.populated_status(target, response.artifact_id, metadata)

    def _refuse_tagged(self, target: Target) -> Steps[None]:
        """Raise AlreadyExistsError if the tag names an artifact (so no artifact is made)."""
        try:
            yield Exchange(rpcs.GET_ARTIFACT, self.get_artifact_request(target))
        except NotFoundError:
            return
        raise self.already_tagged(target)

    def delete(self, key: Key) -> Steps[None]:
        """Refuse at once (``key`` validated first): the DataCatalog API cannot delete
        artifacts (FailedPreconditionError).
        """
        target = self.target(key)
        raise FailedPreconditionError(
            f"the DataCatalog API cannot delete artifacts ({target.describe()}); "
            "evict entries with taskcache artifacts delete or gc on the server's database"
        )

    def reserve(self, key: Key, owner_id: str, heartbeat_interval: Interval) -> Steps[Reservation]:
        """The GetOrExtendReservation on the key's dataset and tag (arguments checked as by
        :meth:`reservation_request`).
        """
        request = self.reservation_request(key, owner_id, heartbeat_interval)
        response: dc.GetOrExtendReservationResponse = yield Exchange(
            rpcs.GET_OR_EXTEND_RESERVATION, request
        )
        return self.reservation(response)

    def release(self, key: Key, owner_id: str) -> Steps[None]:
        """The ReleaseReservation (InvalidArgumentError for an empty owner)."""
        yield Exchange(rpcs.RELEASE_RESERVATION, self.release_request(key, owner_id))

    @staticmethod
    def rpc_timeouts(timeout: float | None) -> Callable[[], float | None]:
        """Return the timeout of each RPC of a call with ``timeout``: what is left of it (the
        RPCs of a call share its budget; None: each has the client's default).
        """
        if timeout is None:
            return lambda: None
        return functools.partial(time_left, Deadline.after(timeout), "the DataCatalog call")


def catalog_metadata(
    target: Target,
    artifact_id: str,
    source: identifier_pb2.TaskExecutionIdentifier | None,
) -> catalog_pb2.CatalogMetadata:
    """Return the CatalogMetadata flytepropeller reports for a DataCatalog artifact: the
    dataset as a DATASET identifier, the artifact tag and (when known) the source execution.
    """
    dataset = target.dataset_id
    metadata = catalog_pb2.CatalogMetadata(
        dataset_id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.DATASET,
            project=dataset.project,
            domain=dataset.domain,
            name=dataset.name,
            version=dataset.version,
        ),
        artifact_tag=catalog_pb2.CatalogArtifactTag(artifact_id=artifact_id, name=target.tag),
    )
    if source is not None:
        metadata.source_task_execution.CopyFrom(source)
    return metadata


def _refuse_ttl(ttl: timedelta | None) -> None:
    """Raise InvalidArgumentError for a put's ``ttl``: a DataCatalog cannot expire artifacts."""
    if ttl is not None:
        raise InvalidArgumentError(
            "a DataCatalog keeps artifacts until they are evicted on the server; ttl is for "
            "cache services",
            field="ttl",
        )


class DataCatalogClient(SyncRemote[DataCatalogRules]):
    """A :class:`~taskcache.Client` on a Flyte 1 DataCatalog (see the module docstring).

    A call's ``timeout`` bounds all the RPCs it makes together; without one each RPC has the
    client's default.
    """


class AsyncDataCatalogClient(AsyncRemote[DataCatalogRules]):
    """The asynchronous twin of :class:`DataCatalogClient`."""


def open_datacatalog(
    url: str, options: transports.RemoteOptions, rules: DataCatalogRules
) -> DataCatalogClient:
    """Return a DataCatalogClient for a ``datacatalog(s)://`` URL.

    Raises InvalidArgumentError for another URL.
    """
    return DataCatalogClient(transports.open_datacatalog_transport(url, options), rules)


def open_datacatalog_async(
    url: str, options: transports.RemoteOptions, rules: DataCatalogRules
) -> AsyncDataCatalogClient:
    """Return an AsyncDataCatalogClient for a ``datacatalog(s)://`` URL.

    Raises InvalidArgumentError for another URL.
    """
    return AsyncDataCatalogClient(transports.open_async_datacatalog_transport(url, options), rules)
