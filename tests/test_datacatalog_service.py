"""Flyte 1's ``datacatalog.DataCatalog`` served by a live ``taskcache serve``, through the stubs
flyteidl generates (``DataCatalogStub``), on SQLite and on PostgreSQL.

Each test works in datasets of its own, so the module shares one server per backend. The
replica tests run two servers on one PostgreSQL database and race them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.core import literals_pb2
from flyteidl.datacatalog import datacatalog_pb2 as dc
from flyteidl.datacatalog import datacatalog_pb2_grpc as dcg
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from postgres import PostgresServer
from server_process import ServerProcess, running_server

SERVICE = "datacatalog.DataCatalog"
BIG = 100 * 1024  # over the 64 KiB inline limit: stored as a blob under --storage


@dataclass
class Catalog:
    """A server, a DataCatalog stub on it and the server's storage root."""

    server: ServerProcess
    stub: dcg.DataCatalogStub
    channel: grpc.Channel
    storage: Path


def _serve(folder: Path, database: str) -> Iterator[Catalog]:
    storage = folder / "blobs"
    with running_server(folder, database=database, storage=str(storage)) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        try:
            yield Catalog(server, dcg.DataCatalogStub(channel), channel, storage)
        finally:
            channel.close()


@pytest.fixture(scope="module")
def pg_database(postgres_server: PostgresServer) -> Iterator[str]:
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="module")
def pg_catalog(tmp_path_factory: pytest.TempPathFactory, pg_database: str) -> Iterator[Catalog]:
    yield from _serve(tmp_path_factory.mktemp("datacatalog-postgres"), pg_database)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def catalog(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Catalog]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_catalog")
        return
    folder = tmp_path_factory.mktemp("datacatalog-sqlite")
    yield from _serve(folder, str(folder / "catalog.db"))


# --- builders ---------------------------------------------------------------------------------


def new_dataset_id(project: str = "flytesnacks", domain: str = "development") -> dc.DatasetID:
    return dc.DatasetID(
        project=project,
        domain=domain,
        name=f"flyte_task-wf.t{uuid.uuid4().hex[:8]}",
        version=f"1.0-{uuid.uuid4().hex[:6]}",
    )


def integer(value: int) -> literals_pb2.Literal:
    return literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=value))
    )


def text(size: int) -> literals_pb2.Literal:
    return literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value="x" * size))
    )


def metadata(**values: str) -> dc.Metadata:
    return dc.Metadata(key_map=values)


def create_dataset(stub: dcg.DataCatalogStub, *keys: str) -> dc.DatasetID:
    dataset_id = new_dataset_id()
    stub.CreateDataset(
        dc.CreateDatasetRequest(
            dataset=dc.Dataset(
                id=dataset_id, metadata=metadata(**{"task-version": "v1"}), partitionKeys=keys
            )
        )
    )
    return dataset_id


def create_artifact(
    stub: dcg.DataCatalogStub,
    dataset_id: dc.DatasetID,
    artifact_id: str,
    data: dict[str, literals_pb2.Literal],
    *,
    partitions: dict[str, str] | None = None,
    **meta: str,
) -> None:
    stub.CreateArtifact(
        dc.CreateArtifactRequest(
            artifact=dc.Artifact(
                id=artifact_id,
                dataset=dataset_id,
                data=[dc.ArtifactData(name=name, value=value) for name, value in data.items()],
                metadata=metadata(**meta),
                partitions=[
                    dc.Partition(key=key, value=value) for key, value in (partitions or {}).items()
                ],
            )
        )
    )


def add_tag(
    stub: dcg.DataCatalogStub, dataset_id: dc.DatasetID, tag: str, artifact_id: str
) -> None:
    stub.AddTag(dc.AddTagRequest(tag=dc.Tag(name=tag, artifact_id=artifact_id, dataset=dataset_id)))


def by_tag(stub: dcg.DataCatalogStub, dataset_id: dc.DatasetID, tag: str) -> dc.Artifact:
    return stub.GetArtifact(dc.GetArtifactRequest(dataset=dataset_id, tag_name=tag)).artifact


def values(artifact: dc.Artifact) -> dict[str, literals_pb2.Literal]:
    return {datum.name: datum.value for datum in artifact.data}


def reservation_id(dataset_id: dc.DatasetID, tag: str) -> dc.ReservationID:
    return dc.ReservationID(dataset_id=dataset_id, tag_name=tag)


def reserve(
    stub: dcg.DataCatalogStub, dataset_id: dc.DatasetID, tag: str, owner: str, heartbeat: float = 5
) -> dc.Reservation:
    interval = Duration()
    interval.FromNanoseconds(int(heartbeat * 1e9))
    return stub.GetOrExtendReservation(
        dc.GetOrExtendReservationRequest(
            reservation_id=reservation_id(dataset_id, tag),
            owner_id=owner,
            heartbeat_interval=interval,
        )
    ).reservation


def failure(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def code_and_details(call: Callable[[], Any]) -> tuple[str, str]:
    error: Any = failure(call)
    return error.code().name, error.details()


# --- the propeller sequence -------------------------------------------------------------------


def test_propeller_sequence_miss_reserve_put_tag_hit_release(catalog: Catalog) -> None:
    """What flytepropeller's datacatalog client calls for a cached task, in its order."""
    stub = catalog.stub
    dataset_id = new_dataset_id()
    tag = "flyte_cached-abc123"
    dataset = dc.Dataset(id=dataset_id, metadata=metadata(**{"task-version": "v1"}))
    # Get: the dataset is missing at first, then the tag.
    assert (
        code_and_details(lambda: stub.GetDataset(dc.GetDatasetRequest(dataset=dataset_id)))[0]
        == "NOT_FOUND"
    )
    stub.CreateDataset(dc.CreateDatasetRequest(dataset=dataset))
    got = stub.GetDataset(dc.GetDatasetRequest(dataset=dataset_id)).dataset
    assert got.id.name == dataset_id.name and got.id.UUID
    assert dict(got.metadata.key_map) == {"task-version": "v1"}
    assert code_and_details(lambda: by_tag(stub, dataset_id, tag))[0] == "NOT_FOUND"
    # Reserve: the first owner wins, the second sees the holder.
    held = reserve(stub, dataset_id, tag, "exec-a")
    assert held.owner_id == "exec-a"
    assert held.reservation_id == reservation_id(dataset_id, tag)
    assert held.heartbeat_interval.ToTimedelta().total_seconds() == 5
    assert reserve(stub, dataset_id, tag, "exec-b").owner_id == "exec-a"
    # Put: an existing dataset is ALREADY_EXISTS (propeller carries on), then artifact + tag.
    assert (
        code_and_details(lambda: stub.CreateDataset(dc.CreateDatasetRequest(dataset=dataset)))[0]
        == "ALREADY_EXISTS"
    )
    create_artifact(
        stub,
        dataset_id,
        "art-1",
        {"o0": integer(42)},
        **{"execution-name": "e1", "exec-node": "n0"},
    )
    add_tag(stub, dataset_id, tag, "art-1")
    stub.ReleaseReservation(
        dc.ReleaseReservationRequest(
            reservation_id=reservation_id(dataset_id, tag), owner_id="exec-a"
        )
    )
    # Hit: everything written comes back.
    artifact = by_tag(stub, dataset_id, tag)
    assert artifact.id == "art-1"
    assert values(artifact) == {"o0": integer(42)}
    assert dict(artifact.metadata.key_map) == {"execution-name": "e1", "exec-node": "n0"}
    assert [t.name for t in artifact.tags] == [tag]
    assert artifact.dataset.UUID == got.id.UUID
    assert artifact.created_at.seconds > 0
    # Released: the next owner gets it.
    assert reserve(stub, dataset_id, tag, "exec-b").owner_id == "exec-b"


# --- error codes ------------------------------------------------------------------------------


def test_artifact_ids_and_tags_are_created_once(catalog: Catalog) -> None:
    stub = catalog.stub
    dataset_id = create_dataset(stub)
    missing = new_dataset_id()
    code, details = code_and_details(lambda: create_artifact(stub, missing, "a", {"o": integer(1)}))
    assert code == "NOT_FOUND" and "Dataset" in details
    create_artifact(stub, dataset_id, "a", {"o": integer(1)})
    assert (
        code_and_details(lambda: create_artifact(stub, dataset_id, "a", {"o": integer(2)}))[0]
        == "ALREADY_EXISTS"
    )
    create_artifact(stub, dataset_id, "b", {"o": integer(2)})
    add_tag(stub, dataset_id, "t", "a")
    # A tag names one artifact for good: re-tagging (to another artifact or the same) fails.
    assert code_and_details(lambda: add_tag(stub, dataset_id, "t", "b"))[0] == "ALREADY_EXISTS"
    assert code_and_details(lambda: add_tag(stub, dataset_id, "t", "a"))[0] == "ALREADY_EXISTS"
    assert values(by_tag(stub, dataset_id, "t")) == {"o": integer(1)}
    assert code_and_details(lambda: add_tag(stub, dataset_id, "u", "nope"))[0] == "NOT_FOUND"
    assert code_and_details(lambda: add_tag(stub, missing, "u", "a"))[0] == "NOT_FOUND"
    # The first artifact's data survived the refused duplicate.
    first = stub.GetArtifact(dc.GetArtifactRequest(dataset=dataset_id, artifact_id="a")).artifact
    assert values(first) == {"o": integer(1)}
    # By id without a dataset: found across datasets, as in Flyte.
    anywhere = stub.GetArtifact(dc.GetArtifactRequest(artifact_id="b")).artifact
    assert anywhere.dataset.name == dataset_id.name
    for request in (
        dc.GetArtifactRequest(dataset=dataset_id, artifact_id="nope"),
        dc.GetArtifactRequest(dataset=missing, tag_name="t"),
        dc.GetArtifactRequest(dataset=dataset_id, tag_name="nope"),
    ):
        assert code_and_details(lambda r=request: stub.GetArtifact(r))[0] == "NOT_FOUND"


def test_update_artifact_replaces_data_and_metadata(catalog: Catalog) -> None:
    stub = catalog.stub
    dataset_id = create_dataset(stub)
    create_artifact(stub, dataset_id, "a", {"x": integer(1), "y": integer(2)}, first="1")
    add_tag(stub, dataset_id, "t", "a")
    answer = stub.UpdateArtifact(
        dc.UpdateArtifactRequest(
            dataset=dataset_id,
            tag_name="t",
            data=[
                dc.ArtifactData(name="x", value=integer(10)),
                dc.ArtifactData(name="z", value=integer(3)),
            ],
            metadata=metadata(second="2"),
        )
    )
    assert answer.artifact_id == "a"
    artifact = by_tag(stub, dataset_id, "t")
    assert values(artifact) == {"x": integer(10), "z": integer(3)}  # "y" removed
    assert dict(artifact.metadata.key_map) == {"second": "2"}
    stub.UpdateArtifact(
        dc.UpdateArtifactRequest(
            dataset=dataset_id, artifact_id="a", data=[dc.ArtifactData(name="x", value=integer(5))]
        )
    )
    assert values(by_tag(stub, dataset_id, "t")) == {"x": integer(5)}
    for request in (
        dc.UpdateArtifactRequest(
            dataset=dataset_id, tag_name="nope", data=[dc.ArtifactData(name="x")]
        ),
        dc.UpdateArtifactRequest(
            dataset=dataset_id, artifact_id="nope", data=[dc.ArtifactData(name="x")]
        ),
    ):
        assert code_and_details(lambda r=request: stub.UpdateArtifact(r))[0] == "NOT_FOUND"


def _ds(project: str = "p", domain: str = "d", name: str = "n", version: str = "v") -> dc.DatasetID:
    return dc.DatasetID(project=project, domain=domain, name=name, version=version)


def _data() -> list[dc.ArtifactData]:
    return [dc.ArtifactData(name="o", value=integer(1))]


INVALID: list[tuple[str, str, Any]] = [
    ("CreateDataset", "dataset", dc.CreateDatasetRequest()),
    (
        "CreateDataset",
        "dataset.id.project",
        dc.CreateDatasetRequest(dataset=dc.Dataset(id=_ds(project=""))),
    ),
    (
        "CreateDataset",
        "dataset.id.version",
        dc.CreateDatasetRequest(dataset=dc.Dataset(id=_ds(version=""))),
    ),
    (
        "CreateDataset",
        "dataset.partitionKeys",
        dc.CreateDatasetRequest(dataset=dc.Dataset(id=_ds(), partitionKeys=["k", "k"])),
    ),
    ("GetDataset", "dataset.domain", dc.GetDatasetRequest(dataset=_ds(domain=""))),
    ("CreateArtifact", "artifact", dc.CreateArtifactRequest()),
    (
        "CreateArtifact",
        "artifact.dataset",
        dc.CreateArtifactRequest(artifact=dc.Artifact(id="a", data=_data())),
    ),
    (
        "CreateArtifact",
        "artifact.id",
        dc.CreateArtifactRequest(artifact=dc.Artifact(dataset=_ds(), data=_data())),
    ),
    (
        "CreateArtifact",
        "artifact.data",
        dc.CreateArtifactRequest(artifact=dc.Artifact(id="a", dataset=_ds())),
    ),
    ("GetArtifact", "query_handle", dc.GetArtifactRequest(dataset=_ds())),
    ("GetArtifact", "dataset", dc.GetArtifactRequest(tag_name="t")),
    ("GetArtifact", "dataset.name", dc.GetArtifactRequest(dataset=_ds(name=""), artifact_id="a")),
    ("AddTag", "tag", dc.AddTagRequest()),
    ("AddTag", "tag.name", dc.AddTagRequest(tag=dc.Tag(artifact_id="a", dataset=_ds()))),
    ("AddTag", "tag.artifact_id", dc.AddTagRequest(tag=dc.Tag(name="t", dataset=_ds()))),
    ("ListArtifacts", "dataset", dc.ListArtifactsRequest()),
    (
        "ListArtifacts",
        "filter.filters[0]",
        dc.ListArtifactsRequest(
            dataset=_ds(),
            filter=dc.FilterExpression(
                filters=[
                    dc.SinglePropertyFilter(dataset_filter=dc.DatasetPropertyFilter(project="p"))
                ]
            ),
        ),
    ),
    (
        "ListArtifacts",
        "pagination.token",
        dc.ListArtifactsRequest(dataset=_ds(), pagination=dc.PaginationOptions(token="x")),
    ),
    (
        "ListDatasets",
        "pagination.token",
        dc.ListDatasetsRequest(pagination=dc.PaginationOptions(token="-1")),
    ),
    (
        "ListDatasets",
        "pagination.sortOrder",
        dc.ListDatasetsRequest(pagination=dc.PaginationOptions(sortOrder=7)),
    ),  # type: ignore[arg-type]
    (
        "ListDatasets",
        "pagination.sortKey",
        dc.ListDatasetsRequest(pagination=dc.PaginationOptions(sortKey=3)),
    ),  # type: ignore[arg-type]
    (
        "ListDatasets",
        "filter.filters[0]",
        dc.ListDatasetsRequest(
            filter=dc.FilterExpression(
                filters=[dc.SinglePropertyFilter(tag_filter=dc.TagPropertyFilter(tag_name="t"))]
            )
        ),
    ),
    ("UpdateArtifact", "data", dc.UpdateArtifactRequest(dataset=_ds(), tag_name="t")),
    (
        "UpdateArtifact",
        "tag_name",
        dc.UpdateArtifactRequest(dataset=_ds(), tag_name="", data=_data()),
    ),
    (
        "GetOrExtendReservation",
        "reservation_id.dataset_id",
        dc.GetOrExtendReservationRequest(owner_id="o"),
    ),
    (
        "GetOrExtendReservation",
        "reservation_id.tag_name",
        dc.GetOrExtendReservationRequest(
            reservation_id=dc.ReservationID(dataset_id=_ds()), owner_id="o"
        ),
    ),
    (
        "GetOrExtendReservation",
        "owner_id",
        dc.GetOrExtendReservationRequest(
            reservation_id=dc.ReservationID(dataset_id=_ds(), tag_name="t")
        ),
    ),
    (
        "ReleaseReservation",
        "reservation_id.dataset_id.project",
        dc.ReleaseReservationRequest(
            reservation_id=dc.ReservationID(dataset_id=_ds(project=""), tag_name="t"), owner_id="o"
        ),
    ),
]


def test_malformed_requests_are_invalid_argument_naming_the_field(catalog: Catalog) -> None:
    for rpc, field, request in INVALID:
        code, details = code_and_details(lambda r=request, m=rpc: getattr(catalog.stub, m)(r))
        assert (code, details.split(":")[0]) == ("INVALID_ARGUMENT", field), (rpc, details)


def test_partitions_must_match_the_dataset_keys(catalog: Catalog) -> None:
    stub = catalog.stub
    dataset_id = create_dataset(stub, "region", "day")
    for partitions in (
        {},
        {"region": "eu"},
        {"region": "eu", "hour": "1"},
        {"region": "", "day": "1"},
    ):
        code, _ = code_and_details(
            lambda p=partitions: create_artifact(
                stub, dataset_id, "a", {"o": integer(1)}, partitions=p
            )
        )
        assert code == "INVALID_ARGUMENT", partitions
    create_artifact(
        stub, dataset_id, "a", {"o": integer(1)}, partitions={"day": "1", "region": "eu"}
    )
    artifact = stub.GetArtifact(dc.GetArtifactRequest(dataset=dataset_id, artifact_id="a")).artifact
    assert [(p.key, p.value) for p in artifact.partitions] == [("day", "1"), ("region", "eu")]
    dataset = stub.GetDataset(dc.GetDatasetRequest(dataset=dataset_id)).dataset
    assert list(dataset.partitionKeys) == ["region", "day"]


# --- listings ---------------------------------------------------------------------------------


def _filters(*filters: dc.SinglePropertyFilter) -> dc.FilterExpression:
    return dc.FilterExpression(filters=list(filters))


def test_list_artifacts_pages_sorts_and_filters(catalog: Catalog) -> None:
    stub = catalog.stub
    dataset_id = create_dataset(stub, "k")
    for index in range(5):
        create_artifact(
            stub, dataset_id, f"a{index}", {"o": integer(index)}, partitions={"k": str(index % 2)}
        )
    add_tag(stub, dataset_id, "tagged", "a3")

    def listing(**options: Any) -> dc.ListArtifactsResponse:
        return stub.ListArtifacts(dc.ListArtifactsRequest(dataset=dataset_id, **options))

    everything = listing()
    assert [a.id for a in everything.artifacts] == ["a4", "a3", "a2", "a1", "a0"]  # newest first
    assert everything.next_token == "5"
    assert values(everything.artifacts[0]) == {"o": integer(4)}
    pages, token = [], ""
    for _ in range(4):
        page = listing(
            pagination=dc.PaginationOptions(
                limit=2, token=token, sortOrder=dc.PaginationOptions.ASCENDING
            )
        )
        pages.append([a.id for a in page.artifacts])
        token = page.next_token
    # Flyte's token is the offset after the page; past the end it stays put.
    assert pages == [["a0", "a1"], ["a2", "a3"], ["a4"], []]
    assert token == "5"
    partition = dc.SinglePropertyFilter(
        partition_filter=dc.PartitionPropertyFilter(key_val=dc.KeyValuePair(key="k", value="1"))
    )
    assert [a.id for a in listing(filter=_filters(partition)).artifacts] == ["a3", "a1"]
    tag = dc.SinglePropertyFilter(tag_filter=dc.TagPropertyFilter(tag_name="tagged"))
    assert [a.id for a in listing(filter=_filters(partition, tag)).artifacts] == ["a3"]
    assert (
        code_and_details(
            lambda: stub.ListArtifacts(dc.ListArtifactsRequest(dataset=new_dataset_id()))
        )[0]
        == "NOT_FOUND"
    )


def test_list_datasets_filters_and_pages(catalog: Catalog) -> None:
    stub = catalog.stub
    project = f"proj-{uuid.uuid4().hex[:8]}"
    made = []
    for domain in ("development", "staging", "development"):
        dataset_id = new_dataset_id(project=project, domain=domain)
        stub.CreateDataset(dc.CreateDatasetRequest(dataset=dc.Dataset(id=dataset_id)))
        made.append(dataset_id.name)

    def names(*filters: dc.SinglePropertyFilter, **options: Any) -> list[str]:
        response = stub.ListDatasets(dc.ListDatasetsRequest(filter=_filters(*filters), **options))
        return [dataset.id.name for dataset in response.datasets]

    in_project = dc.SinglePropertyFilter(dataset_filter=dc.DatasetPropertyFilter(project=project))
    staging = dc.SinglePropertyFilter(dataset_filter=dc.DatasetPropertyFilter(domain="staging"))
    assert names(in_project) == made[::-1]
    assert names(in_project, staging) == [made[1]]
    ascending = dc.PaginationOptions(limit=2, sortOrder=dc.PaginationOptions.ASCENDING)
    assert names(in_project, pagination=ascending) == made[:2]
    ascending.token = "2"
    assert names(in_project, pagination=ascending) == made[2:]
    other = dc.SinglePropertyFilter(dataset_filter=dc.DatasetPropertyFilter(project="elsewhere"))
    assert names(in_project, other) == []


# --- reservations -----------------------------------------------------------------------------


def test_reservations_extend_expire_and_release_like_the_manager(catalog: Catalog) -> None:
    stub = catalog.stub
    dataset_id = new_dataset_id()
    first = reserve(stub, dataset_id, "t", "a", heartbeat=0.05)
    extended = reserve(stub, dataset_id, "t", "a", heartbeat=0.05)
    assert extended.owner_id == "a"
    assert extended.expires_at.ToDatetime() >= first.expires_at.ToDatetime()
    assert reserve(stub, dataset_id, "t", "b").owner_id == "a"
    # Another tag of the same dataset is another reservation.
    assert reserve(stub, dataset_id, "other", "b").owner_id == "b"
    time.sleep(0.3)  # 3 heartbeats of 50 ms: "a"'s lease has lapsed
    assert reserve(stub, dataset_id, "t", "b").owner_id == "b"
    # Releasing someone else's (or no) reservation is fine and changes nothing.
    stub.ReleaseReservation(
        dc.ReleaseReservationRequest(reservation_id=reservation_id(dataset_id, "t"), owner_id="a")
    )
    assert reserve(stub, dataset_id, "t", "c").owner_id == "b"
    # No heartbeat asked for: the server's maximum (10 s by default).
    no_heartbeat = stub.GetOrExtendReservation(
        dc.GetOrExtendReservationRequest(
            reservation_id=reservation_id(dataset_id, "x"), owner_id="d"
        )
    ).reservation
    assert no_heartbeat.heartbeat_interval.ToTimedelta().total_seconds() == 10


# --- blobs ------------------------------------------------------------------------------------


def test_large_values_are_blobs_under_storage_removed_when_replaced(catalog: Catalog) -> None:
    stub = catalog.stub
    dataset_id = create_dataset(stub)
    before = set(catalog.storage.rglob("*.pb"))
    create_artifact(stub, dataset_id, "big", {"small": integer(1), "large": text(BIG)})
    add_tag(stub, dataset_id, "t", "big")
    written = set(catalog.storage.rglob("*.pb")) - before
    assert len(written) == 1  # only the large value left the database
    artifact = by_tag(stub, dataset_id, "t")
    assert values(artifact) == {"small": integer(1), "large": text(BIG)}
    # Replacing the data removes the blob the service wrote for the value it replaced.
    stub.UpdateArtifact(
        dc.UpdateArtifactRequest(
            dataset=dataset_id,
            tag_name="t",
            data=[dc.ArtifactData(name="large", value=text(BIG + 1))],
        )
    )
    now = set(catalog.storage.rglob("*.pb")) - before
    assert len(now) == 1 and not now & written
    assert values(by_tag(stub, dataset_id, "t")) == {"large": text(BIG + 1)}
    # A refused duplicate leaves no blob behind.
    assert (
        code_and_details(lambda: create_artifact(stub, dataset_id, "big", {"large": text(BIG)}))[0]
        == "ALREADY_EXISTS"
    )
    assert set(catalog.storage.rglob("*.pb")) - before == now
    # A vanished blob makes the artifact a miss, not an error.
    next(iter(now)).unlink()
    assert code_and_details(lambda: by_tag(stub, dataset_id, "t"))[0] == "NOT_FOUND"


# --- health and reflection --------------------------------------------------------------------


def test_health_and_reflection_list_the_datacatalog(catalog: Catalog) -> None:
    health = health_pb2_grpc.HealthStub(catalog.channel)
    response = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(catalog.channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {service.name for reply in replies for service in reply.list_services_response.service}
    assert SERVICE in names


# --- two replicas on one PostgreSQL -----------------------------------------------------------


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, pg_database: str, pg_catalog: Catalog
) -> Iterator[tuple[Catalog, Catalog]]:
    """``pg_catalog`` and a second server on its database."""
    second = _serve(tmp_path_factory.mktemp("replica-b"), pg_database)
    try:
        yield pg_catalog, next(second)
    finally:
        second.close()


RACERS = 8


def test_replicas_racing_one_tag_agree_on_one_winner(replicas: tuple[Catalog, Catalog]) -> None:
    stubs = [replica.stub for replica in replicas]
    dataset_id = new_dataset_id()
    tag = "flyte_cached-race"
    start = threading.Barrier(RACERS)

    def put(index: int) -> str | None:
        stub = stubs[index % 2]
        start.wait()
        try:
            stub.CreateDataset(dc.CreateDatasetRequest(dataset=dc.Dataset(id=dataset_id)))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        create_artifact(stub, dataset_id, f"art-{index}", {"o": integer(index)})
        try:
            add_tag(stub, dataset_id, tag, f"art-{index}")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
            return None
        return f"art-{index}"

    with ThreadPoolExecutor(RACERS) as pool:
        winners = [winner for winner in pool.map(put, range(RACERS)) if winner is not None]
    assert len(winners) == 1
    winner = int(winners[0].split("-")[1])
    for stub in stubs:
        artifact = by_tag(stub, dataset_id, tag)
        assert artifact.id == winners[0]
        assert values(artifact) == {"o": integer(winner)}


def test_replicas_racing_one_reservation_grant_one_owner(replicas: tuple[Catalog, Catalog]) -> None:
    stubs = [replica.stub for replica in replicas]
    dataset_id = new_dataset_id()
    start = threading.Barrier(RACERS)

    def take(index: int) -> str:
        start.wait()
        return reserve(stubs[index % 2], dataset_id, "t", f"owner-{index}").owner_id

    with ThreadPoolExecutor(RACERS) as pool:
        holders = set(pool.map(take, range(RACERS)))
    assert len(holders) == 1
    assert {reserve(stub, dataset_id, "t", "late").owner_id for stub in stubs} == holders


# --- tokens -----------------------------------------------------------------------------------


def test_the_unscoped_datacatalog_needs_an_all_scope_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-admin\ntok-ml acme/ml/*\n")
    args = ["--auth-token-file", str(tokens)]
    with (
        running_server(tmp_path, database=str(tmp_path / "c.db"), extra_args=args) as server,
        grpc.insecure_channel(server.grpc_target) as channel,
    ):
        stub = dcg.DataCatalogStub(channel)
        dataset_id = dc.DatasetID(project="ml", domain="d", name="n", version="v", org="acme")
        request = dc.GetDatasetRequest(dataset=dataset_id)

        def get(token: str | None) -> Any:
            metadata = () if token is None else (("authorization", f"Bearer {token}"),)
            return stub.GetDataset(request, metadata=metadata)

        assert code_and_details(lambda: get(None))[0] == "UNAUTHENTICATED"
        # Even for a dataset in its scope: lookups by id and listings span projects.
        assert code_and_details(lambda: get("tok-ml"))[0] == "PERMISSION_DENIED"
        assert code_and_details(lambda: get("tok-admin"))[0] == "NOT_FOUND"
