"""The ``datacatalog://`` client against a scripted DataCatalog on loopback.

A real gRPC server (Flyte's generated ``DataCatalogServicer``) on 127.0.0.1 holds datasets,
artifacts, tags and reservations in memory with Flyte's codes (ALREADY_EXISTS for an existing
dataset, artifact id or tag; NOT_FOUND for a missing one), records every call, and lets a test
run code just before a given RPC is answered: the races a client must survive (another writer
tagging first) are staged exactly. Each test runs on the sync client and on its async twin.

What the client sends is checked field by field against flytepropeller's datacatalog client:
the call order, dataset id and tag (from ``taskcache.hashing``), metadata keys and values.
The behaviour suite runs the same client against ``taskcache serve``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.datacatalog import datacatalog_pb2 as dc
from flyteidl.datacatalog import datacatalog_pb2_grpc
from flyteidl2.core import identifier_pb2

import taskcache
from builders import int_map, make_identifier, make_interface
from certificates import make_certificate
from taskcache import (
    AlreadyExistsError,
    CacheStatus,
    Client,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    Key,
    Metadata,
    NotFoundError,
    UnavailableError,
    hashing,
)
from twins import BlockingAsyncClient

Hook = Callable[[Any], None]


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> Any:
    context.abort(code, message)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _dataset_key(dataset_id: dc.DatasetID) -> tuple[str, str, str, str]:
    return (dataset_id.project, dataset_id.domain, dataset_id.name, dataset_id.version)


@dataclass
class ScriptedCatalog(datacatalog_pb2_grpc.DataCatalogServicer):
    """An in-memory DataCatalog with Flyte's codes; ``hooks[rpc]`` runs before ``rpc`` is
    answered, ``calls`` lists every (rpc, request) received and ``headers`` its metadata,
    ``now`` stamps artifacts.
    """

    datasets: dict[tuple[str, str, str, str], dc.Dataset] = field(default_factory=dict)
    artifacts: dict[str, dc.Artifact] = field(default_factory=dict)
    tags: dict[tuple[tuple[str, str, str, str], str], str] = field(default_factory=dict)
    reservations: dict[tuple[tuple[str, str, str, str], str], dc.Reservation] = field(
        default_factory=dict
    )
    calls: list[tuple[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    hooks: dict[str, Hook] = field(default_factory=dict)
    now: Callable[[], datetime] = field(default_factory=lambda: _utc_now)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, rpc: str, request: Any, context: grpc.ServicerContext) -> None:
        self.calls.append((rpc, request))
        self.headers.append(dict(context.invocation_metadata()))
        hook = self.hooks.pop(rpc, None)
        if hook is not None:
            hook(request)

    def names(self) -> list[str]:
        return [rpc for rpc, _ in self.calls]

    def CreateDataset(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("CreateDataset", request, context)
        key = _dataset_key(request.dataset.id)
        with self.lock:
            if key in self.datasets:
                return _abort(context, grpc.StatusCode.ALREADY_EXISTS, "dataset exists")
            self.datasets[key] = request.dataset
        return dc.CreateDatasetResponse()

    def GetDataset(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("GetDataset", request, context)
        dataset = self.datasets.get(_dataset_key(request.dataset))
        if dataset is None:
            return _abort(context, grpc.StatusCode.NOT_FOUND, "no dataset")
        return dc.GetDatasetResponse(dataset=dataset)

    def CreateArtifact(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("CreateArtifact", request, context)
        artifact = dc.Artifact()
        artifact.CopyFrom(request.artifact)
        artifact.created_at.FromDatetime(self.now())
        with self.lock:
            if _dataset_key(artifact.dataset) not in self.datasets:
                return _abort(context, grpc.StatusCode.NOT_FOUND, "no dataset")
            if artifact.id in self.artifacts:
                return _abort(context, grpc.StatusCode.ALREADY_EXISTS, "artifact exists")
            self.artifacts[artifact.id] = artifact
        return dc.CreateArtifactResponse()

    def AddTag(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("AddTag", request, context)
        key = (_dataset_key(request.tag.dataset), request.tag.name)
        with self.lock:
            if key in self.tags:
                return _abort(context, grpc.StatusCode.ALREADY_EXISTS, "tag exists")
            self.tags[key] = request.tag.artifact_id
        return dc.AddTagResponse()

    def _tagged(self, dataset: dc.DatasetID, tag: str) -> dc.Artifact | None:
        artifact_id = self.tags.get((_dataset_key(dataset), tag))
        return None if artifact_id is None else self.artifacts[artifact_id]

    def GetArtifact(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("GetArtifact", request, context)
        artifact = self._tagged(request.dataset, request.tag_name)
        if artifact is None:
            return _abort(context, grpc.StatusCode.NOT_FOUND, "no artifact")
        found = dc.Artifact()
        found.CopyFrom(artifact)
        found.tags.add(name=request.tag_name, artifact_id=artifact.id, dataset=request.dataset)
        return dc.GetArtifactResponse(artifact=found)

    def UpdateArtifact(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("UpdateArtifact", request, context)
        with self.lock:
            artifact = self._tagged(request.dataset, request.tag_name)
            if artifact is None:
                return _abort(context, grpc.StatusCode.NOT_FOUND, "no artifact")
            del artifact.data[:]
            artifact.data.extend(request.data)
            artifact.metadata.CopyFrom(request.metadata)
        return dc.UpdateArtifactResponse(artifact_id=artifact.id)

    def GetOrExtendReservation(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("GetOrExtendReservation", request, context)
        rid = request.reservation_id
        key = (_dataset_key(rid.dataset_id), rid.tag_name)
        now = self.now()
        with self.lock:
            held = self.reservations.get(key)
            if (
                held is None
                or held.owner_id == request.owner_id
                or held.expires_at.ToDatetime(tzinfo=UTC) < now
            ):
                held = dc.Reservation(
                    reservation_id=rid,
                    owner_id=request.owner_id,
                    heartbeat_interval=request.heartbeat_interval,
                )
                held.expires_at.FromDatetime(now + 3 * request.heartbeat_interval.ToTimedelta())
                self.reservations[key] = held
        return dc.GetOrExtendReservationResponse(reservation=held)

    def ReleaseReservation(self, request: Any, context: Any) -> Any:  # noqa: N802
        self._enter("ReleaseReservation", request, context)
        rid = request.reservation_id
        key = (_dataset_key(rid.dataset_id), rid.tag_name)
        with self.lock:
            held = self.reservations.get(key)
            if held is not None and held.owner_id == request.owner_id:
                del self.reservations[key]
        return dc.ReleaseReservationResponse()


@dataclass
class Deployment:
    """The scripted catalog and its address; :meth:`client` opens sync or async clients."""

    catalog: ScriptedCatalog
    url: str
    twin: str
    opened: list[Any] = field(default_factory=list)

    def client(self, **options: Any) -> Client:
        if self.twin == "sync":
            client = taskcache.open(self.url, **options)
            self.opened.append(client)
            return client
        blocking = BlockingAsyncClient(lambda: taskcache.open_async(self.url, **options))
        self.opened.append(blocking)
        return blocking  # type: ignore[return-value]  # the same methods, not awaited

    def close(self) -> None:
        for client in self.opened:
            if isinstance(client, BlockingAsyncClient):
                client.shut()
            else:
                client.close()


@pytest.fixture(params=["sync", "async"])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """A scripted catalog on its own loopback server (cheap: one per test)."""
    catalog = ScriptedCatalog()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    datacatalog_pb2_grpc.add_DataCatalogServicer_to_server(catalog, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    deployed = Deployment(catalog, f"datacatalog://127.0.0.1:{port}", str(request.param))
    try:
        yield deployed
    finally:
        deployed.close()
        server.stop(grace=None)


# --- keys and metadata ---------------------------------------------------------------------


def key(x: int = 1, *, cache_version: str = "1.0") -> Key:
    return Key(make_identifier("tests.dc"), cache_version, make_interface("x"), inputs=int_map(x=x))


def task_execution(key: Key) -> identifier_pb2.TaskExecutionIdentifier:
    task_id = identifier_pb2.Identifier()
    task_id.CopyFrom(key.identifier)
    task_id.version = "v7"
    return identifier_pb2.TaskExecutionIdentifier(
        task_id=task_id,
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id="n3",
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                project="ep", domain="ed", name="run-1"
            ),
        ),
        retry_attempt=2,
    )


def expected_dataset_id(key: Key) -> dc.DatasetID:
    """The dataset flytepropeller's GenerateDatasetIDForTask names for ``key``."""
    return dc.DatasetID(
        project="project_1",
        domain="domain_1",
        name="flyte_task-tests.dc",
        version=f"1.0-{hashing.interface_signature_hash(key.typed_interface)}",
    )


def expected_tag(x: int) -> str:
    return "flyte_cached-" + hashing.hash_literal_map(int_map(x=x))


# --- get / put / update --------------------------------------------------------------------


def test_put_then_get_calls_what_propeller_calls_with_flytes_metadata(
    deployment: Deployment,
) -> None:
    catalog = deployment.catalog
    client = deployment.client()
    source = task_execution(key())

    status = client.put(key(), int_map(o0=9), Metadata(task_execution_id=source))

    assert catalog.names() == ["CreateDataset", "GetArtifact", "CreateArtifact", "AddTag"]
    created_dataset = catalog.calls[0][1].dataset
    assert created_dataset.id == expected_dataset_id(key())
    assert dict(created_dataset.metadata.key_map) == {"task-version": "v7"}
    artifact = catalog.calls[2][1].artifact
    assert artifact.dataset == expected_dataset_id(key())
    assert [(datum.name, datum.value.scalar.primitive.integer) for datum in artifact.data] == [
        ("o0", 9)
    ]
    assert dict(artifact.metadata.key_map) == {
        "exec-project": "ep",
        "exec-domain": "ed",
        "execution-name": "run-1",
        "exec-node": "n3",
        "exec-attempt": "2",
    }
    tag = catalog.calls[3][1].tag
    assert (tag.name, tag.artifact_id, tag.dataset) == (
        expected_tag(1),
        artifact.id,
        expected_dataset_id(key()),
    )
    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert status.metadata is not None
    assert status.metadata.dataset_id == identifier_pb2.Identifier(
        resource_type=identifier_pb2.DATASET,
        project="project_1",
        domain="domain_1",
        name="flyte_task-tests.dc",
        version=expected_dataset_id(key()).version,
    )
    assert (status.metadata.artifact_tag.artifact_id, status.metadata.artifact_tag.name) == (
        artifact.id,
        expected_tag(1),
    )
    assert status.metadata.source_task_execution == source

    catalog.calls.clear()
    entry = deployment.client().get(key())

    assert catalog.names() == ["GetDataset", "GetArtifact"]
    assert catalog.calls[1][1].tag_name == expected_tag(1)
    assert entry.outputs.read() == int_map(o0=9)
    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    metadata = entry.status.metadata
    assert metadata is not None
    assert metadata.dataset_id == status.metadata.dataset_id
    assert metadata.artifact_tag == status.metadata.artifact_tag
    rebuilt = metadata.source_task_execution
    assert rebuilt.task_id.version == "v7"  # from the dataset's metadata
    assert rebuilt.node_execution_id.node_id == "n3"
    execution = rebuilt.node_execution_id.execution_id
    # Flyte 1 records no org: the task's own stands in.
    assert (execution.project, execution.domain, execution.name, execution.org) == (
        "ep",
        "ed",
        "run-1",
        "org_1",
    )
    assert rebuilt.retry_attempt == 2


def test_a_miss_is_not_found_for_a_missing_dataset_or_tag(deployment: Deployment) -> None:
    client = deployment.client()
    with pytest.raises(NotFoundError):
        client.get(key())  # no dataset yet
    client.put(key(1), int_map(o0=1))
    with pytest.raises(NotFoundError):
        client.get(key(2))  # the dataset, but no such tag
    with pytest.raises(NotFoundError):
        client.get(key(1, cache_version="2.0"))  # another dataset version


def test_a_calls_timeout_bounds_all_its_rpcs_together(deployment: Deployment) -> None:
    client = deployment.client()
    slow = 0.3  # each RPC alone fits in the timeout; together they do not
    deployment.catalog.hooks["CreateArtifact"] = lambda _: time.sleep(slow)
    deployment.catalog.hooks["AddTag"] = lambda _: time.sleep(slow)
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        client.put(key(), int_map(o0=1), timeout=slow * 1.5)
    assert time.monotonic() - started < slow * 10
    # The answer stopped at the deadline: the last RPC was sent with only what was left.
    assert deployment.catalog.names()[-1] == "AddTag"


def test_put_over_a_tagged_artifact_creates_nothing(deployment: Deployment) -> None:
    client = deployment.client()
    client.put(key(), int_map(o0=1))
    before = set(deployment.catalog.artifacts)

    with pytest.raises(AlreadyExistsError) as raised:
        client.put(key(), int_map(o0=2))

    assert raised.value.status is not None
    assert raised.value.status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    assert raised.value.status.metadata is not None
    assert raised.value.status.metadata.dataset_id == key().identifier  # Flyte's put failure
    assert set(deployment.catalog.artifacts) == before
    assert client.get(key()).outputs.read() == int_map(o0=1)


def test_a_put_losing_the_tag_race_is_already_exists_and_serves_the_winner(
    deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = deployment.catalog
    winner, loser = deployment.client(), deployment.client()
    # The loser has checked the tag and created its artifact; the winner tags first.
    catalog.hooks["AddTag"] = lambda _: winner.put(key(), int_map(o0=1))

    with pytest.raises(AlreadyExistsError, match="left untagged") as raised:
        loser.put(key(), int_map(o0=2))

    assert raised.value.status is not None
    assert raised.value.status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    orphan = next(request for rpc, request in catalog.calls if rpc == "CreateArtifact")
    assert orphan.artifact.data[0].value.scalar.primitive.integer == 2
    assert orphan.artifact.id not in catalog.tags.values()  # untagged: no Get returns it
    assert orphan.artifact.id in caplog.text
    assert loser.get(key()).outputs.read() == int_map(o0=1)


def test_update_replaces_by_tag_and_creates_when_absent(deployment: Deployment) -> None:
    catalog = deployment.catalog
    client = deployment.client()

    created = client.update(key(), int_map(o0=1))  # nothing tagged yet: a put

    assert catalog.names() == ["CreateDataset", "UpdateArtifact", "CreateArtifact", "AddTag"]
    assert created.cache_status is CacheStatus.CACHE_POPULATED
    artifact_id = catalog.tags[(_dataset_key(expected_dataset_id(key())), expected_tag(1))]

    catalog.calls.clear()
    source = task_execution(key())
    updated = client.update(key(), int_map(o0=2), Metadata(task_execution_id=source))

    assert catalog.names() == ["CreateDataset", "UpdateArtifact"]
    request = catalog.calls[1][1]
    assert (request.dataset, request.tag_name) == (expected_dataset_id(key()), expected_tag(1))
    assert dict(request.metadata.key_map)["execution-name"] == "run-1"
    assert updated.metadata is not None
    assert updated.metadata.artifact_tag.artifact_id == artifact_id
    assert updated.metadata.source_task_execution == source
    assert client.get(key()).outputs.read() == int_map(o0=2)
    assert len(catalog.artifacts) == 1


def test_an_update_losing_the_tag_race_overwrites_the_winner(deployment: Deployment) -> None:
    catalog = deployment.catalog
    client, other = deployment.client(), deployment.client()
    catalog.hooks["AddTag"] = lambda _: other.put(key(), int_map(o0=1))

    status = client.update(key(), int_map(o0=2))

    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert catalog.names()[-1] == "UpdateArtifact"
    assert client.get(key()).outputs.read() == int_map(o0=2)


def test_max_cache_age_is_measured_on_the_artifacts_created_at(deployment: Deployment) -> None:
    catalog = deployment.catalog
    created = datetime(2026, 1, 1, tzinfo=UTC)
    catalog.now = lambda: created
    deployment.client().put(key(), int_map(o0=1))

    def aged(age: timedelta, max_cache_age: timedelta | None) -> Client:
        return deployment.client(clock=lambda: created + age, max_cache_age=max_cache_age)

    assert aged(timedelta(hours=1), timedelta(hours=2)).get(key()).outputs.read() == int_map(o0=1)
    with pytest.raises(NotFoundError, match="max_cache_age"):
        aged(timedelta(hours=3), timedelta(hours=2)).get(key())
    assert aged(timedelta(days=999), None).get(key()).outputs.read() == int_map(o0=1)
    # An update replaces the data, not created_at: the artifact stays too old (Flyte's rule).
    aged(timedelta(hours=3), timedelta(hours=2)).update(key(), int_map(o0=2))
    with pytest.raises(NotFoundError):
        aged(timedelta(hours=3), timedelta(hours=2)).get(key())


def test_metadata_from_a_node_execution_and_without_metadata(deployment: Deployment) -> None:
    catalog = deployment.catalog
    client = deployment.client()
    node = identifier_pb2.NodeExecutionIdentifier(
        node_id="n9",
        execution_id=identifier_pb2.WorkflowExecutionIdentifier(
            project="ep", domain="ed", name="run-2", org="eo"
        ),
    )
    client.put(key(1), int_map(o0=1), Metadata(node_execution_id=node))
    client.put(key(2), int_map(o0=2))

    first, second = (request.artifact for rpc, request in catalog.calls if rpc == "CreateArtifact")
    assert dict(first.metadata.key_map) == {
        "exec-project": "ep",
        "exec-domain": "ed",
        "execution-name": "run-2",
        "exec-node": "n9",
        "exec-org": "eo",
    }
    assert dict(second.metadata.key_map) == {}
    dataset = catalog.calls[0][1].dataset
    assert dict(dataset.metadata.key_map) == {}  # no task execution, no task version

    rebuilt = client.get(key(1)).status.metadata
    assert rebuilt is not None
    assert rebuilt.source_task_execution.node_execution_id == node
    assert rebuilt.source_task_execution.task_id.version == "unknown"
    unknown = client.get(key(2)).status.metadata
    assert unknown is not None
    assert unknown.source_task_execution.node_execution_id.execution_id.name == "unknown"


def test_reservations_by_dataset_and_tag(deployment: Deployment) -> None:
    catalog = deployment.catalog
    client, other = deployment.client(), deployment.client()

    held = client.get_or_extend_reservation(key(), "A", timedelta(seconds=5))
    request = catalog.calls[-1][1]
    assert request.reservation_id == dc.ReservationID(
        dataset_id=expected_dataset_id(key()), tag_name=expected_tag(1)
    )
    assert request.heartbeat_interval.ToTimedelta() == timedelta(seconds=5)
    assert (held.key, held.owner_id, held.heartbeat_interval) == (
        expected_tag(1),
        "A",
        timedelta(seconds=5),
    )
    assert other.get_or_extend_reservation(key(), "B", timedelta(seconds=5)) == held
    client.release_reservation(key(), "A")
    assert catalog.calls[-1][0] == "ReleaseReservation"
    assert catalog.calls[-1][1].reservation_id == request.reservation_id
    assert other.get_or_extend_reservation(key(), "B", 5).owner_id == "B"
    with pytest.raises(InvalidArgumentError) as raised:
        client.release_reservation(key(), "")
    assert raised.value.field == "owner_id"


def test_get_or_compute_runs_once_over_a_datacatalog(deployment: Deployment) -> None:
    calls: list[int] = []

    def compute() -> Any:
        calls.append(1)
        return int_map(o0=5)

    client = deployment.client()
    if isinstance(client, BlockingAsyncClient):
        first = client.get_or_compute(key(), _coroutine(compute))
        second = client.get_or_compute(key(), _coroutine(compute))
    else:
        first = client.get_or_compute(key(), compute)
        second = client.get_or_compute(key(), compute)
    assert first.status.cache_status is CacheStatus.CACHE_POPULATED
    assert second.status.cache_status is CacheStatus.CACHE_HIT
    assert second.outputs.read() == int_map(o0=5)
    assert calls == [1]
    assert deployment.catalog.reservations == {}  # released


def _coroutine(function: Callable[[], Any]) -> Callable[[], Any]:
    async def run() -> Any:
        return function()

    return run


# --- refusals ------------------------------------------------------------------------------


def test_delete_is_refused_and_bad_keys_are_invalid(deployment: Deployment) -> None:
    client = deployment.client()
    client.put(key(), int_map(o0=1))
    with pytest.raises(FailedPreconditionError, match="cannot delete"):
        client.delete(key())
    assert client.get(key()).outputs.read() == int_map(o0=1)
    with pytest.raises(InvalidArgumentError) as raised:
        client.get(key(cache_version="  "))
    assert raised.value.field == "cache_version"
    with pytest.raises(InvalidArgumentError) as raised:
        client.put(key(cache_version=""), int_map(o0=1))
    assert raised.value.field == "cache_version"
    assert raised.value.status is not None
    assert raised.value.status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    with pytest.raises(TypeError, match="outputs must be a LiteralMap"):
        client.put(key(), {"o0": 1})  # type: ignore[arg-type]


def test_a_closed_client_refuses_calls(deployment: Deployment) -> None:
    client = deployment.client()
    client.put(key(), int_map(o0=1))
    client.close()
    with pytest.raises(UnavailableError):
        client.get(key())
    with pytest.raises(UnavailableError) as raised:
        client.update(key(), int_map(o0=2))
    assert raised.value.status is not None
    client.close()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"outputs": "uri"}, "outputs"),
        ({"inline_max_bytes": 0}, "inline_max_bytes"),
        ({"scope": ("o", "p", "d")}, "scope"),
    ],
)
def test_cache_service_options_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open("datacatalog://127.0.0.1:1", **options)
    assert raised.value.field == field


def test_datacatalog_urls_resolve_as_services_in_any_case() -> None:
    from taskcache.clients import transports
    from taskcache.resolver import LocationKind, resolve

    for url in ("datacatalog://h:8089", "DataCatalogs://h:8089"):
        location = resolve(url)
        assert location.kind is LocationKind.DATACATALOG
        assert location.is_service
        assert location.address == url.lower()
    with pytest.raises(InvalidArgumentError):
        transports.open_datacatalog_transport("grpc://h:1", transports.RemoteOptions())
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open("datacatalog://")
    assert raised.value.field == "target"


def test_datacatalogs_with_the_ca_file_and_a_token(tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path)
    catalog = ScriptedCatalog()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    datacatalog_pb2_grpc.add_DataCatalogServicer_to_server(catalog, server)
    credentials = grpc.ssl_server_credentials(
        [(certificate.key.read_bytes(), certificate.cert.read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        target = f"datacatalogs://localhost:{port}"
        with taskcache.open(target, ca_file=str(certificate.cert), token="tok") as client:
            client.put(key(), int_map(o0=1))
            assert client.get(key()).outputs.read() == int_map(o0=1)
        assert {headers.get("authorization") for headers in catalog.headers} == {"Bearer tok"}
        with (
            taskcache.open(target, timeout=5, max_retries=0) as untrusted,
            pytest.raises(UnavailableError),
        ):
            untrusted.get(key())  # the system's roots do not trust the test certificate
    finally:
        server.stop(grace=None)
