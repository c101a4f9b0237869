"""The core client rules, one suite over every deployment.

The same tests run against six deployments of the catalog:

* ``embedded-sqlite``: ``taskcache.open("sqlite:///<tmp>/c.db")``;
* ``embedded-postgres``: ``taskcache.open(postgres_url, storage=<tmp>/blobs)``;
* ``remote-connect-sqlite``: a ``taskcache serve`` subprocess on a SQLite file, reached over
  Connect (``http://``);
* ``remote-grpc-postgres``: a ``taskcache serve`` subprocess on the session's PostgreSQL
  database, reached over gRPC (``grpc://``);
* ``datacatalog-sqlite`` and ``datacatalog-postgres``: the two servers' Flyte 1 DataCatalog,
  reached with ``datacatalog://`` (keys become datasets and tags, as flytepropeller files them).

Tests of what only a cache service has (deleting, blob outputs, the cache-key string, entries
written by an embedded client with its clock behind) run on the first four
(:data:`CACHE_SERVICES_ONLY`); the DataCatalog's own rules are tested at the end.

Servers start once per module and share their database between tests, so every test works on
task names of its own (the ``keys`` fixture). Every deployment grants heartbeats of at most
:data:`MAX_HEARTBEAT` with the default grace multiplier.

Nothing here waits for time to pass: an old entry or an expired reservation is written by
:meth:`Catalog.aged`, an embedded client on the deployment's own database whose clock runs
behind. Tests of options and methods that the async twins implement on their own take a
``twin`` parameter and run on the sync client and on its async twin alike.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from flyteidl.datacatalog import datacatalog_pb2 as dc
from flyteidl.datacatalog import datacatalog_pb2_grpc
from flyteidl2.core import identifier_pb2, literals_pb2
from fsspec.core import url_to_fs

import taskcache
from builders import int_map, make_identifier, make_interface
from server_process import running_server
from taskcache import (
    AlreadyExistsError,
    AsyncClient,
    CacheError,
    CacheStatus,
    Client,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    Key,
    Metadata,
    NotFoundError,
    ReservationCache,
    ReservationStatus,
    UnavailableError,
    UriOutputReader,
    hashing,
    rpcs,
)
from taskcache.repositories.base import Scope
from taskcache.rpcs import Rpc
from twins import BlockingAsyncClient

pytestmark = pytest.mark.slow

EMBEDDED_SQLITE = "embedded-sqlite"
EMBEDDED_POSTGRES = "embedded-postgres"
REMOTE_CONNECT_SQLITE = "remote-connect-sqlite"
REMOTE_GRPC_POSTGRES = "remote-grpc-postgres"
DATACATALOG_SQLITE = "datacatalog-sqlite"
DATACATALOG_POSTGRES = "datacatalog-postgres"
CACHE_DEPLOYMENTS = (
    EMBEDDED_SQLITE,
    EMBEDDED_POSTGRES,
    REMOTE_CONNECT_SQLITE,
    REMOTE_GRPC_POSTGRES,
)
DATACATALOG_DEPLOYMENTS = (DATACATALOG_SQLITE, DATACATALOG_POSTGRES)
DEPLOYMENTS = (*CACHE_DEPLOYMENTS, *DATACATALOG_DEPLOYMENTS)
REMOTE_DEPLOYMENTS = (REMOTE_CONNECT_SQLITE, REMOTE_GRPC_POSTGRES)
# A DataCatalog cannot delete, stores outputs as literals (no blobs, no URIs), files a key
# under a dataset and tag (no cache-key string) and keeps its own tables, which an embedded
# client cannot age: tests of those run on the cache-service deployments only.
CACHE_SERVICES_ONLY = pytest.mark.parametrize("catalog", CACHE_DEPLOYMENTS, indirect=True)

# Long enough that no contention check here can outlive a reservation on a slow machine.
MAX_HEARTBEAT = timedelta(seconds=30)
GRACE_MULTIPLIER = 3  # the default, on every deployment
DEFAULT_INLINE_MAX_BYTES = 64 * 1024
# Reservation expiries come from the server's clock (or the embedded manager's), read around
# the call here; allow for the clock resolution and timestamp rounding.
CLOCK_SLACK = timedelta(milliseconds=50)


# --- servers (one of each per module) ----------------------------------------------------


def _server_args(heartbeat: timedelta, grace: float) -> list[str]:
    return [
        "--max-reservation-heartbeat",
        f"{heartbeat.total_seconds() * 1000:g}ms",
        "--heartbeat-grace-multiplier",
        f"{grace:g}",
    ]


@dataclass(frozen=True)
class Endpoints:
    """Where a module's server listens (Connect URL, ``grpc://`` and ``datacatalog://`` URLs)
    and its database.
    """

    http_url: str
    grpc_url: str
    datacatalog_url: str
    database: str


def _serve(folder: Path, database: str, heartbeat: timedelta, grace: float) -> Iterator[Endpoints]:
    """Run a server for the module (stopped with SIGTERM and checked to exit 0 afterwards)."""
    with running_server(
        folder, database=database, extra_args=_server_args(heartbeat, grace)
    ) as server:
        yield Endpoints(
            server.http_url,
            f"grpc://{server.grpc_target}",
            f"datacatalog://{server.grpc_target}",
            database,
        )


@pytest.fixture(scope="module")
def serve_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    folder = tmp_path_factory.mktemp("suite-sqlite-server")
    yield from _serve(folder, f"sqlite:///{folder}/db/catalog.db", MAX_HEARTBEAT, GRACE_MULTIPLIER)


@pytest.fixture(scope="module")
def serve_postgres(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> Iterator[Endpoints]:
    folder = tmp_path_factory.mktemp("suite-postgres-server")
    yield from _serve(folder, postgres_url, MAX_HEARTBEAT, GRACE_MULTIPLIER)


# --- the catalog factory -----------------------------------------------------------------


@dataclass
class Catalog:
    """Opens clients of one deployment: ``catalog(**options)`` (sync), :meth:`twin` (sync or
    async) or :meth:`open_async`; every client opened, except by ``open_async``, is closed
    after the test.

    ``storage`` is this test's blob root (a fresh folder); ``embedded_options`` are the
    manager settings an embedded client needs to behave like the deployment's server;
    ``database`` is the deployment's database (the target itself when embedded).
    """

    deployment: str
    target: str
    database: str
    storage: Path
    embedded_options: dict[str, Any]
    clients: list[Client] = field(default_factory=list)
    async_clients: list[BlockingAsyncClient] = field(default_factory=list)

    @property
    def remote(self) -> bool:
        return self.deployment in (*REMOTE_DEPLOYMENTS, *DATACATALOG_DEPLOYMENTS)

    @property
    def datacatalog(self) -> bool:
        return self.deployment in DATACATALOG_DEPLOYMENTS

    def dataset_id(self, key: Key) -> identifier_pb2.Identifier:
        """The dataset id a populated or hit status reports: the key's task identifier, or
        for a DataCatalog the DATASET identifier of its dataset (as flytepropeller reports).
        """
        if not self.datacatalog:
            return key.identifier  # type: ignore[return-value]  # flyteidl2 in these tests
        return identifier_pb2.Identifier(
            resource_type=identifier_pb2.DATASET,
            project=key.identifier.project,
            domain=key.identifier.domain,
            name=hashing.datacatalog_dataset_name(key.identifier),
            version=hashing.datacatalog_dataset_version(key.typed_interface, key.cache_version),
        )

    def reservation_key(self, key: Key) -> str:
        """The ``key`` of a reservation on ``key``: its cache key, or its DataCatalog tag."""
        if not self.datacatalog:
            return hashing.cache_key(key)
        return hashing.datacatalog_artifact_tag(key.read_inputs())

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        merged = dict(self.embedded_options) if not self.remote else {}
        if self.deployment != EMBEDDED_SQLITE:  # sqlite's default is <tmp>/blobs already
            merged["storage"] = str(self.storage)
        merged.update(options)
        return merged

    def __call__(self, **options: Any) -> Client:
        client = taskcache.open(self.target, **self._options(options))
        self.clients.append(client)
        return client

    def twin(self, twin: str, **options: Any) -> Client:
        """A sync client (``twin="sync"``) or its async twin behind the sync interface."""
        if twin == "sync":
            return self(**options)
        blocking = BlockingAsyncClient(lambda: self.open_async(**options))
        self.async_clients.append(blocking)
        return blocking  # type: ignore[return-value]  # the same methods, not awaited

    def open_async(self, **options: Any) -> AsyncClient:
        """Return an async client; the caller closes it (it belongs to the caller's loop)."""
        return taskcache.open_async(self.target, **self._options(options))

    def aged(self, age: timedelta) -> Client:
        """An embedded client on this deployment's database whose clock is ``age`` behind:
        what it writes is that old (entries) or expired that long ago (short reservations)
        for every other client and server.
        """
        past = datetime.now(UTC) - age
        client = taskcache.open(
            self.database,
            storage=str(self.storage),
            **self.embedded_options,
            clock=lambda: past,
        )
        self.clients.append(client)
        return client

    def close(self) -> None:
        for blocking in self.async_clients:
            blocking.shut()
        for client in self.clients:
            client.close()


def _make_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    deployment: str = request.param
    embedded_options: dict[str, Any] = {
        "max_reservation_heartbeat": MAX_HEARTBEAT,
        "heartbeat_grace_multiplier": GRACE_MULTIPLIER,
    }
    if deployment == EMBEDDED_SQLITE:
        target = database = f"sqlite:///{tmp_path}/c.db"
    elif deployment == EMBEDDED_POSTGRES:
        target = database = request.getfixturevalue("postgres_url")
    else:
        on_postgres = deployment in (REMOTE_GRPC_POSTGRES, DATACATALOG_POSTGRES)
        fixture = "serve_postgres" if on_postgres else "serve_sqlite"
        endpoints: Endpoints = request.getfixturevalue(fixture)
        target = {
            REMOTE_CONNECT_SQLITE: endpoints.http_url,
            REMOTE_GRPC_POSTGRES: endpoints.grpc_url,
            DATACATALOG_SQLITE: endpoints.datacatalog_url,
            DATACATALOG_POSTGRES: endpoints.datacatalog_url,
        }[deployment]
        database = endpoints.database
    catalog = Catalog(deployment, target, database, tmp_path / "blobs", embedded_options)
    try:
        yield catalog
    finally:
        catalog.close()


@pytest.fixture(params=DEPLOYMENTS)
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """A factory of clients of one deployment (max heartbeat 30 s, grace multiplier 3)."""
    yield from _make_catalog(request, tmp_path)


@pytest.fixture(params=REMOTE_DEPLOYMENTS)
def remote_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    """Like ``catalog``, for the remote deployments only."""
    yield from _make_catalog(request, tmp_path)


@pytest.fixture(params=["sync", "async"])
def twin(request: pytest.FixtureRequest) -> str:
    """Which client of a pair a test runs on: the sync one or its async twin."""
    return str(request.param)


# --- keys --------------------------------------------------------------------------------


class Keys:
    """Keys on task names no other test uses: ``keys(x)`` has the integer input ``x``."""

    def __init__(self) -> None:
        self.task = f"suite.{uuid.uuid4().hex[:16]}"

    def identifier(self, *, project: str = "project_1") -> identifier_pb2.Identifier:
        identifier = make_identifier(self.task)
        identifier.project = project
        return identifier

    def __call__(self, x: int = 1, *, project: str = "project_1") -> Key:
        return Key(
            self.identifier(project=project), "1.0", make_interface("x"), inputs=int_map(x=x)
        )


@pytest.fixture
def keys() -> Keys:
    return Keys()


# --- helpers -----------------------------------------------------------------------------


def normalized(path: str | Path) -> Path:
    """``path`` without a doubled leading slash (``sqlite:////tmp/c.db`` keeps ``//tmp``)."""
    return Path("/" + str(path).lstrip("/"))


def files_under(root: Path) -> set[Path]:
    if not root.exists():
        return set()
    return {normalized(path) for path in root.rglob("*") if path.is_file()}


def remove_blob(uri: str) -> None:
    fs, path = url_to_fs(uri)
    fs.rm_file(path)


def task_execution_id(key: Key) -> identifier_pb2.TaskExecutionIdentifier:
    task_id = identifier_pb2.Identifier()
    task_id.CopyFrom(key.identifier)
    task_id.version = "v7"
    return identifier_pb2.TaskExecutionIdentifier(
        task_id=task_id,
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id="n3",
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                project="exec-project", domain="exec-domain", name="exec-name", org="exec-org"
            ),
        ),
        retry_attempt=2,
    )


def big_string_map(length: int) -> literals_pb2.LiteralMap:
    literal = literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value="s" * length))
    )
    return literals_pb2.LiteralMap(literals={"o0": literal})


def assert_put_failure(error: CacheError, key: Key) -> None:
    status = error.status
    assert status is not None, f"{type(error).__name__} carries no status"
    assert status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    assert status.metadata is not None
    assert status.metadata.dataset_id == key.identifier  # every client, as Flyte's


def around(before: datetime, after: datetime, delta: timedelta) -> Callable[[datetime], bool]:
    """A check that a timestamp lies in ``[before + delta, after + delta]`` (with slack)."""

    def check(value: datetime) -> bool:
        return before + delta - CLOCK_SLACK <= value <= after + delta + CLOCK_SLACK

    return check


# --- get / put / update ------------------------------------------------------------------


def test_miss_is_not_found(catalog: Catalog, keys: Keys) -> None:
    with pytest.raises(NotFoundError):
        catalog().get(keys())


def test_put_then_hit_returns_outputs_and_provenance(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    key = keys(3)
    source = task_execution_id(key)
    outputs = int_map(o0=9, o1=-4)

    status = catalog.twin(twin).put(key, outputs, Metadata(task_execution_id=source))

    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert status.metadata is not None
    assert status.metadata.dataset_id == catalog.dataset_id(key)
    assert status.metadata.source_task_execution == source

    entry = catalog.twin(twin).get(keys(3))  # another client, a fresh but equal key
    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    assert entry.outputs.read() == outputs
    assert entry.outputs.exists()
    metadata = entry.status.metadata
    assert metadata is not None
    assert metadata.dataset_id == catalog.dataset_id(key)
    assert metadata.source_task_execution == source  # rebuilt from the stored key map
    with pytest.raises(NotFoundError):
        catalog.twin(twin).get(keys(4))


def test_hit_rebuilds_the_source_from_a_node_execution(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    key = keys()
    node = identifier_pb2.NodeExecutionIdentifier(
        node_id="n9",
        execution_id=identifier_pb2.WorkflowExecutionIdentifier(
            project="ep", domain="ed", name="run-1", org="eo"
        ),
    )
    client = catalog.twin(twin)
    client.put(key, int_map(o0=1), Metadata(node_execution_id=node))

    metadata = client.get(key).status.metadata
    assert metadata is not None
    rebuilt = metadata.source_task_execution
    assert rebuilt.node_execution_id == node
    assert rebuilt.task_id.version == "unknown"
    assert rebuilt.retry_attempt == 0
    assert (rebuilt.task_id.name, rebuilt.task_id.project) == (keys.task, "project_1")


def test_hit_without_metadata_falls_back_to_unknown_source(catalog: Catalog, keys: Keys) -> None:
    key = keys()
    client = catalog()
    status = client.put(key, int_map(o0=1))
    assert status.metadata is not None
    assert not status.metadata.HasField("source_task_execution")

    metadata = client.get(key).status.metadata
    assert metadata is not None
    rebuilt = metadata.source_task_execution
    assert rebuilt.node_execution_id.node_id == "unknown"
    execution = rebuilt.node_execution_id.execution_id
    assert execution.name == "unknown"
    assert (execution.org, execution.project, execution.domain) == key.scope


def test_second_put_is_already_exists_with_put_failure_status(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    client = catalog.twin(twin)
    client.put(keys(), int_map(o0=1))

    with pytest.raises(AlreadyExistsError) as raised:
        catalog.twin(twin).put(keys(), int_map(o0=2))

    assert_put_failure(raised.value, keys())
    assert client.get(keys()).outputs.read() == int_map(o0=1)


def test_update_overwrites_and_creates(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)
    client.put(keys(1), int_map(o0=1))

    source = task_execution_id(keys(1))
    overwritten = client.update(keys(1), int_map(o0=2), Metadata(task_execution_id=source))
    assert overwritten.cache_status is CacheStatus.CACHE_POPULATED
    assert overwritten.metadata is not None
    assert overwritten.metadata.source_task_execution == source
    hit = client.get(keys(1))
    assert hit.outputs.read() == int_map(o0=2)
    assert hit.status.metadata is not None
    rebuilt = hit.status.metadata.source_task_execution
    if catalog.datacatalog:
        # The task version is the dataset's, recorded when the first put created it (with no
        # metadata): flytepropeller reads it there too.
        assert rebuilt.task_id.version == "unknown"
        rebuilt.task_id.version = source.task_id.version
    assert rebuilt == source  # the update's provenance

    created = client.update(keys(2), int_map(o0=3))
    assert created.cache_status is CacheStatus.CACHE_POPULATED
    assert created.metadata is not None
    assert created.metadata.dataset_id == catalog.dataset_id(keys(2))
    assert client.get(keys(2)).outputs.read() == int_map(o0=3)


# --- inline vs blob, by reference, dangling ----------------------------------------------


def test_small_outputs_are_inline(catalog: Catalog, keys: Keys) -> None:
    client = catalog()
    client.put(keys(), int_map(o0=1))

    entry = client.get(keys())

    assert entry.outputs.uri is None
    assert entry.outputs.read() == int_map(o0=1)
    assert files_under(catalog.storage) == set()


@CACHE_SERVICES_ONLY
@pytest.mark.parametrize("inline_max_bytes", [0, DEFAULT_INLINE_MAX_BYTES])
def test_blob_outputs_round_trip(
    catalog: Catalog, keys: Keys, inline_max_bytes: int, twin: str
) -> None:
    # inline_max_bytes=0 writes even tiny outputs as a blob; otherwise only larger ones.
    outputs = int_map(o0=1) if inline_max_bytes == 0 else big_string_map(inline_max_bytes + 10)
    client = catalog.twin(twin, inline_max_bytes=inline_max_bytes)
    client.put(keys(), outputs)

    entry = catalog.twin(twin).get(keys())

    uri = entry.outputs.uri
    assert uri is not None
    assert files_under(catalog.storage) == {normalized(uri)}
    assert entry.outputs.read() == outputs
    assert entry.status.cache_status is CacheStatus.CACHE_HIT


@CACHE_SERVICES_ONLY
def test_uri_output_reader_is_stored_by_reference(
    catalog: Catalog, keys: Keys, tmp_path: Path, twin: str
) -> None:
    external = tmp_path / "external" / "outputs.pb"
    external.parent.mkdir()
    external.write_bytes(int_map(o0=42).SerializeToString())
    client = catalog.twin(twin, inline_max_bytes=0)

    client.put(keys(), UriOutputReader(str(external)))

    entry = client.get(keys())
    assert entry.outputs.uri == str(external)
    assert entry.outputs.read() == int_map(o0=42)
    assert files_under(catalog.storage) == set()  # nothing copied


def test_missing_outputs_fail_the_put(
    catalog: Catalog, keys: Keys, tmp_path: Path, twin: str
) -> None:
    client = catalog.twin(twin)
    with pytest.raises(NotFoundError) as raised:
        client.put(keys(), UriOutputReader(str(tmp_path / "nowhere" / "outputs.pb")))
    assert_put_failure(raised.value, keys())
    with pytest.raises(NotFoundError):
        client.get(keys())


@CACHE_SERVICES_ONLY
def test_dangling_blob_is_a_miss_then_put_repopulates(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    client = catalog.twin(twin, inline_max_bytes=0)
    client.put(keys(), int_map(o0=1))
    uri = client.get(keys()).outputs.uri
    assert uri is not None
    remove_blob(uri)

    with pytest.raises(NotFoundError):
        client.get(keys())

    status = catalog.twin(twin).put(
        keys(), int_map(o0=2)
    )  # create-only: the dangling entry is gone
    assert status.cache_status is CacheStatus.CACHE_POPULATED
    entry = client.get(keys())
    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    assert entry.outputs.read() == int_map(o0=2)


class RePutBeforeDelete:
    """A transport that lets another worker re-put the entry just before a Delete is sent:
    the race a remote client's dangling-entry repair must survive.
    """

    def __init__(self, inner: Any, re_put: Callable[[], object]) -> None:
        self.inner = inner
        self.re_put = re_put
        self.deletes = 0

    def send(self, rpc: Rpc, request: Any, headers: Any = None, *, timeout: Any = None) -> Any:
        if rpc == rpcs.DELETE:
            self.deletes += 1
            self.re_put()
        return self.inner.send(rpc, request, headers, timeout=timeout)

    def close(self) -> None:
        self.inner.close()


def test_remote_repair_spares_an_entry_re_put_after_the_get(
    remote_catalog: Catalog, keys: Keys
) -> None:
    client = remote_catalog(inline_max_bytes=0)
    other = remote_catalog(inline_max_bytes=0)
    client.put(keys(), int_map(o0=1))
    uri = client.get(keys()).outputs.uri
    assert uri is not None
    remove_blob(uri)
    racer = RePutBeforeDelete(
        client._transport,  # type: ignore[attr-defined]
        lambda: other.update(keys(), int_map(o0=2)),
    )
    client._transport = racer  # type: ignore[attr-defined]

    with pytest.raises(NotFoundError):
        client.get(keys())

    assert racer.deletes == 1  # the repair was attempted, and refused by the service
    assert other.get(keys()).outputs.read() == int_map(o0=2)


def test_remote_repair_deletes_the_unchanged_dangling_entry(
    remote_catalog: Catalog, keys: Keys
) -> None:
    async def scenario() -> None:
        async with remote_catalog.open_async(inline_max_bytes=0) as client:
            await client.put(keys(), int_map(o0=1))
            uri = (await client.get(keys())).outputs.uri
            assert uri is not None
            remove_blob(uri)
            with pytest.raises(NotFoundError):
                await client.get(keys())
            # Gone, not merely unreadable: a create-only put succeeds.
            await client.put(keys(), int_map(o0=3))
            assert (await client.get(keys())).outputs.read() == int_map(o0=3)

    asyncio.run(scenario())


# --- max age, delete ---------------------------------------------------------------------


@CACHE_SERVICES_ONLY
def test_max_cache_age_misses_old_entries_and_put_replaces_them(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    catalog.aged(timedelta(hours=2)).put(keys(), int_map(o0=1))  # last updated 2 h ago
    aging = catalog.twin(twin, max_cache_age=timedelta(hours=1))

    with pytest.raises(NotFoundError):
        aging.get(keys())
    # The age limit is the client's: a longer one, or none, still hits the old entry.
    assert catalog.twin(twin, max_cache_age=timedelta(hours=3)).get(keys()).outputs.read() == (
        int_map(o0=1)
    )
    assert catalog.twin(twin).get(keys()).outputs.read() == int_map(o0=1)
    with pytest.raises(AlreadyExistsError):
        catalog.twin(twin).put(keys(), int_map(o0=3))

    status = aging.put(keys(), int_map(o0=2))  # create-only, over the old entry

    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert aging.get(keys()).outputs.read() == int_map(o0=2)
    with pytest.raises(AlreadyExistsError):
        aging.put(keys(), int_map(o0=4))  # the fresh entry is live


@CACHE_SERVICES_ONLY
def test_delete_then_not_found(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)
    client.put(keys(1), int_map(o0=1))
    client.put(keys(2), int_map(o0=2))

    client.delete(keys(1))

    with pytest.raises(NotFoundError):
        client.get(keys(1))
    with pytest.raises(NotFoundError):
        client.delete(keys(1))
    assert client.get(keys(2)).outputs.read() == int_map(o0=2)
    assert client.put(keys(1), int_map(o0=3)).cache_status is CacheStatus.CACHE_POPULATED


# --- reservations ------------------------------------------------------------------------


def test_reservation_acquire_contend_extend_release(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    client, other = catalog.twin(twin), catalog.twin(twin)
    heartbeat = MAX_HEARTBEAT  # A holds it for 90 s: B's calls can only see it held

    held = client.get_or_extend_reservation(keys(), "A", heartbeat)
    assert held.owner_id == "A"
    assert held.key == catalog.reservation_key(keys())
    assert held.heartbeat_interval == heartbeat

    seen = other.get_or_extend_reservation(keys(), "B", heartbeat)
    assert seen == held  # the holder's reservation, unchanged

    time.sleep(0.01)  # a coarse server clock could otherwise hand out the same expiry
    extended = client.get_or_extend_reservation(keys(), "A", heartbeat)
    assert extended.owner_id == "A"
    assert extended.expires_at > held.expires_at

    other.release_reservation(keys(), "B")  # not the owner: a no-op
    assert other.get_or_extend_reservation(keys(), "B", heartbeat).owner_id == "A"

    client.release_reservation(keys(), "A")
    client.release_reservation(keys(), "A")  # nothing held any more: a no-op
    taken = other.get_or_extend_reservation(keys(), "B", heartbeat)
    assert taken.owner_id == "B"
    assert client.get_or_extend_reservation(keys(), "A", heartbeat).owner_id == "B"

    other.release_reservation(keys(), "B")
    assert client.get_or_extend_reservation(keys(), "A", heartbeat).owner_id == "A"


def test_reservations_are_per_key(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)
    client.get_or_extend_reservation(keys(1), "A", timedelta(seconds=2))
    other = client.get_or_extend_reservation(keys(2), "B", timedelta(seconds=2))
    assert other.owner_id == "B"
    assert other.key == catalog.reservation_key(keys(2))


def test_heartbeat_is_clamped_to_the_maximum(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)

    before = datetime.now(UTC)
    clamped = client.get_or_extend_reservation(keys(1), "A", timedelta(seconds=60))
    after = datetime.now(UTC)
    assert clamped.heartbeat_interval == MAX_HEARTBEAT
    assert around(before, after, MAX_HEARTBEAT * GRACE_MULTIPLIER)(clamped.expires_at)
    assert clamped.expires_at.tzinfo is not None

    before = datetime.now(UTC)
    kept = client.get_or_extend_reservation(keys(2), "A", timedelta(seconds=2))
    after = datetime.now(UTC)
    assert kept.heartbeat_interval == timedelta(seconds=2)
    assert around(before, after, timedelta(seconds=2) * GRACE_MULTIPLIER)(kept.expires_at)

    unset = client.get_or_extend_reservation(keys(3), "A", timedelta(0))
    assert unset.heartbeat_interval == MAX_HEARTBEAT  # zero asks for the maximum


def test_heartbeat_may_be_seconds_but_nothing_else(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)
    assert client.get_or_extend_reservation(keys(1), "A", 10).heartbeat_interval == timedelta(
        seconds=10
    )
    assert client.get_or_extend_reservation(keys(2), "A", 2.5).heartbeat_interval == timedelta(
        seconds=2.5
    )
    for wrong in (True, "10", None, [10]):
        with pytest.raises(TypeError, match=r"heartbeat_interval must be a datetime\.timedelta"):
            client.get_or_extend_reservation(keys(3), "A", wrong)  # type: ignore[arg-type]
    for unbounded in (float("nan"), float("inf"), 1e300, timedelta(days=999_999_999)):
        with pytest.raises(InvalidArgumentError, match=r"^heartbeat_interval: "):
            client.get_or_extend_reservation(keys(3), "A", unbounded)  # type: ignore[arg-type]
    # Nothing above reserved keys(3).
    assert client.get_or_extend_reservation(keys(3), "B", MAX_HEARTBEAT).owner_id == "B"


def test_outputs_must_be_a_literal_map_or_a_reader(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)
    literal = int_map(o0=1).literals["o0"]  # a Literal, not a LiteralMap
    for wrong in (literal, {"o0": 1}, b"\n\x00", None):
        for write in (client.put, client.update):
            with pytest.raises(TypeError, match="outputs must be a LiteralMap or an OutputReader"):
                write(keys(), wrong)  # type: ignore[arg-type]

    class WrongReader:
        uri = None

        def read(self) -> Any:
            return literal

        def exists(self) -> bool:
            return True

    with pytest.raises(TypeError, match=r"read\(\) must return a LiteralMap, not Literal"):
        client.put(keys(), WrongReader())
    with pytest.raises(NotFoundError):  # nothing was stored
        client.get(keys())


def test_put_and_update_refuse_an_unknown_option(catalog: Catalog, keys: Keys, twin: str) -> None:
    client = catalog.twin(twin)
    for name, write in (("put", client.put), ("update", client.update)):
        with pytest.raises(TypeError, match=rf"^{name}\(\) got unexpected keyword arguments: tll$"):
            write(keys(), int_map(o0=1), tll=5)  # type: ignore[call-arg]
    with pytest.raises(NotFoundError):  # nothing was stored
        client.get(keys())


@CACHE_SERVICES_ONLY
def test_expired_reservation_is_taken_over(catalog: Catalog, keys: Keys, twin: str) -> None:
    # A's reservation was taken an hour ago (on A's clock): long expired, no waiting needed.
    held = catalog.aged(timedelta(hours=1)).get_or_extend_reservation(keys(), "A", MAX_HEARTBEAT)
    assert held.owner_id == "A"
    client = catalog.twin(twin)

    taken = client.get_or_extend_reservation(keys(), "B", MAX_HEARTBEAT)

    assert taken.owner_id == "B"
    assert taken.expires_at > held.expires_at
    assert client.get_or_extend_reservation(keys(), "A", MAX_HEARTBEAT).owner_id == "B"


# --- scope -------------------------------------------------------------------------------


@CACHE_SERVICES_ONLY
def test_same_task_under_two_projects_is_two_entries(catalog: Catalog, keys: Keys) -> None:
    client = catalog()
    first, second = keys(project="project_a"), keys(project="project_b")
    client.put(first, int_map(o0=1))
    assert client.put(second, int_map(o0=2)).cache_status is CacheStatus.CACHE_POPULATED

    assert client.get(keys(project="project_a")).outputs.read() == int_map(o0=1)
    assert client.get(keys(project="project_b")).outputs.read() == int_map(o0=2)
    assert client.get_or_extend_reservation(first, "A", MAX_HEARTBEAT).owner_id == "A"
    assert client.get_or_extend_reservation(second, "B", MAX_HEARTBEAT).owner_id == "B"

    client.delete(first)
    with pytest.raises(NotFoundError):
        client.get(first)
    assert client.get(second).outputs.read() == int_map(o0=2)


def test_scope_option_overrides_the_keys_scope(
    remote_catalog: Catalog, keys: Keys, twin: str
) -> None:
    in_a = remote_catalog.twin(twin, scope=("org_1", "scope_a", "domain_1"))
    in_b = remote_catalog.twin(twin, scope=("org_1", "scope_b", "domain_1"))
    by_key = remote_catalog.twin(twin)  # files under the key's own (org_1, project_1, domain_1)
    key = keys()

    in_a.put(key, int_map(o0=1))

    assert remote_catalog.twin(twin, scope=("org_1", "scope_a", "domain_1")).get(
        key
    ).outputs.read() == (int_map(o0=1))
    with pytest.raises(NotFoundError):
        in_b.get(key)
    with pytest.raises(NotFoundError):
        by_key.get(key)
    assert in_b.put(key, int_map(o0=2)).cache_status is CacheStatus.CACHE_POPULATED
    assert by_key.put(key, int_map(o0=3)).cache_status is CacheStatus.CACHE_POPULATED
    assert [c.get(key).outputs.read() for c in (in_a, in_b, by_key)] == [
        int_map(o0=1),
        int_map(o0=2),
        int_map(o0=3),
    ]

    assert in_a.get_or_extend_reservation(key, "A", MAX_HEARTBEAT).owner_id == "A"
    assert in_b.get_or_extend_reservation(key, "B", MAX_HEARTBEAT).owner_id == "B"
    in_a.delete(key)
    assert in_b.get(key).outputs.read() == int_map(o0=2)


# --- Flyte interop: key map names, outputs by URI -----------------------------------------


@CACHE_SERVICES_ONLY
def test_the_key_map_uses_flytes_names(catalog: Catalog, keys: Keys, twin: str) -> None:
    key = keys()
    catalog.twin(twin).put(key, int_map(o0=1), Metadata(task_execution_id=task_execution_id(key)))

    # Read the stored row itself, with an embedded client on the deployment's database.
    reader = catalog.aged(timedelta(0))
    row = reader.manager.get(  # type: ignore[attr-defined]
        Scope(*key.scope), hashing.cache_key(key)
    )
    assert row.key_map == {
        "task-version": "v7",
        "exec-project": "exec-project",
        "exec-domain": "exec-domain",
        "execution-name": "exec-name",
        "exec-node": "n3",
        "exec-attempt": "2",
        "exec-org": "exec-org",
    }


def test_outputs_uri_sends_every_output_by_uri(
    remote_catalog: Catalog, keys: Keys, twin: str
) -> None:
    sent: list[Any] = []
    client = remote_catalog.twin(twin, outputs="uri")
    recorded = client.client if isinstance(client, BlockingAsyncClient) else client
    recorded._transport = Recording(recorded._transport, sent)  # type: ignore[attr-defined]

    client.put(keys(1), int_map(o0=1))  # tiny: inline by default
    client.update(keys(1), int_map(o0=2))
    client.put(keys(2), UriOutputReader(_external(remote_catalog.storage, int_map(o0=3))))

    puts = [request for rpc, request in sent if rpc == rpcs.PUT]
    assert [put.base_request.output.WhichOneof("output") for put in puts] == ["output_uri"] * 3
    entry = client.get(keys(1))
    assert entry.outputs.read() == int_map(o0=2)
    assert entry.outputs.uri is not None
    assert normalized(entry.outputs.uri).is_relative_to(normalized(remote_catalog.storage))
    assert client.get(keys(2)).outputs.read() == int_map(o0=3)


def test_outputs_uri_needs_shared_storage_and_no_inline_limit(remote_catalog: Catalog) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open(remote_catalog.target, outputs="uri")
    assert raised.value.field == "storage"
    with pytest.raises(InvalidArgumentError) as raised:
        remote_catalog(outputs="uri", inline_max_bytes=1024)
    assert raised.value.field == "inline_max_bytes"
    with pytest.raises(InvalidArgumentError) as raised:
        remote_catalog(outputs="literals")  # type: ignore[arg-type]
    assert raised.value.field == "outputs"
    with pytest.raises(TypeError, match="outputs must be"):
        remote_catalog(outputs=True)  # type: ignore[arg-type]


class Recording:
    """A transport (sync or async) that records every (rpc, request) it sends."""

    def __init__(self, inner: Any, sent: list[Any]) -> None:
        self.inner = inner
        self.sent = sent

    def send(self, rpc: Rpc, request: Any, headers: Any = None, *, timeout: Any = None) -> Any:
        self.sent.append((rpc, request))
        return self.inner.send(rpc, request, headers, timeout=timeout)

    def close(self) -> Any:
        return self.inner.close()


def _external(folder: Path, outputs: literals_pb2.LiteralMap) -> str:
    path = folder / "external" / "outputs.pb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(outputs.SerializeToString())
    return str(path)


# --- invalid arguments -------------------------------------------------------------------


def _with_cache_key(keys: Keys, cache_key: str) -> Key:
    """A key whose (memoized) cache key string is ``cache_key``."""
    key = keys()
    key.remember_cache_key(cache_key)
    return key


def _no_identifier_key() -> Key:
    return Key(None, "1.0", make_interface("x"), inputs=int_map(x=1))  # type: ignore[arg-type]


CALLS: list[Any] = [
    pytest.param(lambda c, k: c.get(k), id="get"),
    pytest.param(lambda c, k: c.put(k, int_map(o0=1)), id="put"),
    pytest.param(lambda c, k: c.update(k, int_map(o0=1)), id="update"),
    pytest.param(lambda c, k: c.delete(k), id="delete"),
    pytest.param(lambda c, k: c.get_or_extend_reservation(k, "A", MAX_HEARTBEAT), id="reserve"),
    pytest.param(lambda c, k: c.release_reservation(k, "A"), id="release"),
]
Call = Callable[[Client, Key], object]


@CACHE_SERVICES_ONLY
@pytest.mark.parametrize("call", CALLS)
def test_empty_or_overlong_key_is_invalid(
    catalog: Catalog, keys: Keys, call: Call, twin: str
) -> None:
    client = catalog.twin(twin)
    for cache_key in ("", "k" * 1025):
        with pytest.raises(InvalidArgumentError) as raised:
            call(client, _with_cache_key(keys, cache_key))
        assert "key" in str(raised.value)
    with pytest.raises(InvalidArgumentError) as raised:
        call(client, _no_identifier_key())
    assert raised.value.field == "identifier"


@CACHE_SERVICES_ONLY
@pytest.mark.parametrize("call", [CALLS[1], CALLS[2]])
def test_invalid_put_carries_put_failure_status(
    catalog: Catalog, keys: Keys, call: Call, twin: str
) -> None:
    key = _with_cache_key(keys, "")
    with pytest.raises(InvalidArgumentError) as raised:
        call(catalog.twin(twin), key)
    assert_put_failure(raised.value, key)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, k: c.get_or_extend_reservation(k, "", MAX_HEARTBEAT), id="reserve"),
        pytest.param(lambda c, k: c.release_reservation(k, ""), id="release"),
    ],
)
def test_empty_owner_is_invalid(catalog: Catalog, keys: Keys, call: Call, twin: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        call(catalog.twin(twin), keys())
    assert raised.value.field == "owner_id"


# --- reservation cache -------------------------------------------------------------------


def _cache_entry(seconds: int, status: ReservationStatus) -> ReservationCache:
    return ReservationCache(
        timestamp=datetime(2024, 5, 17, tzinfo=UTC) + timedelta(seconds=seconds),
        reservation_status=status,
    )


def test_reservation_cache_methods(catalog: Catalog, twin: str) -> None:
    client = catalog.twin(twin, reservation_cache_size=2)
    assert client.get_reservation_cache("nobody") == ReservationCache()

    first = _cache_entry(1, ReservationStatus.RESERVATION_ACQUIRED)
    client.update_reservation_cache("A", first)
    assert client.get_reservation_cache("A") == first
    newer = _cache_entry(2, ReservationStatus.RESERVATION_RELEASED)
    client.update_reservation_cache("A", newer)
    assert client.get_reservation_cache("A") == newer

    client.update_reservation_cache("B", _cache_entry(3, ReservationStatus.RESERVATION_EXISTS))
    assert client.get_reservation_cache("A") == newer  # A is now the most recently used
    client.update_reservation_cache("C", _cache_entry(4, ReservationStatus.RESERVATION_EXISTS))
    assert client.get_reservation_cache("B") == ReservationCache()  # B was forgotten
    assert client.get_reservation_cache("A") == newer
    # Client-local memory: another client of the same catalog remembers nothing.
    assert catalog.twin(twin).get_reservation_cache("A") == ReservationCache()


# --- the async twin ----------------------------------------------------------------------


@CACHE_SERVICES_ONLY
def test_async_twin_round_trip(catalog: Catalog, keys: Keys) -> None:
    key = keys()

    async def scenario() -> None:
        async with catalog.open_async() as client:
            with pytest.raises(NotFoundError):
                await client.get(key)
            put = await client.put(key, int_map(o0=1))
            assert put.cache_status is CacheStatus.CACHE_POPULATED
            with pytest.raises(AlreadyExistsError) as raised:
                await client.put(key, int_map(o0=9))
            assert_put_failure(raised.value, key)
            hit = await client.get(key)
            assert hit.status.cache_status is CacheStatus.CACHE_HIT
            assert hit.outputs.read() == int_map(o0=1)
            await client.update(key, int_map(o0=2))
            assert (await client.get(key)).outputs.read() == int_map(o0=2)

            held = await client.get_or_extend_reservation(key, "A", timedelta(seconds=60))
            assert (held.owner_id, held.heartbeat_interval) == ("A", MAX_HEARTBEAT)
            assert (await client.get_or_extend_reservation(key, "B", MAX_HEARTBEAT)) == held
            await client.release_reservation(key, "A")
            taken = await client.get_or_extend_reservation(key, "B", MAX_HEARTBEAT)
            assert taken.owner_id == "B"
            with pytest.raises(InvalidArgumentError):
                await client.release_reservation(key, "")

            assert await client.get_reservation_cache("A") == ReservationCache()
            entry = _cache_entry(1, ReservationStatus.RESERVATION_ACQUIRED)
            await client.update_reservation_cache("A", entry)
            assert await client.get_reservation_cache("A") == entry

            await client.delete(key)
            with pytest.raises(NotFoundError):
                await client.delete(key)
        await client.close()  # idempotent

    asyncio.run(scenario())
    # What the async client wrote, a sync client of the same deployment sees.
    catalog().put(key, int_map(o0=5))
    with pytest.raises(AlreadyExistsError):
        catalog().put(key, int_map(o0=6))


def test_a_closed_client_refuses_calls_on_an_existing_entry(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    catalog().put(keys(), int_map(o0=1))
    client = catalog.twin(twin)
    assert client.get(keys()).outputs.read() == int_map(o0=1)

    client.close()

    # The entry exists, so only the closing can make these fail.
    with pytest.raises(UnavailableError):
        client.get(keys())
    with pytest.raises(UnavailableError):
        client.get_or_extend_reservation(keys(), "A", MAX_HEARTBEAT)
    with pytest.raises(UnavailableError) as raised:
        client.update(keys(), int_map(o0=2))
    assert_put_failure(raised.value, keys())
    client.close()  # a second close is a no-op
    assert catalog().get(keys()).outputs.read() == int_map(o0=1)  # closing deleted nothing


def test_deployments_are_what_they_claim(catalog: Catalog) -> None:
    client = catalog()
    expected = {
        EMBEDDED_SQLITE: "EmbeddedClient",
        EMBEDDED_POSTGRES: "EmbeddedClient",
        REMOTE_CONNECT_SQLITE: "RemoteClient",
        REMOTE_GRPC_POSTGRES: "RemoteClient",
        DATACATALOG_SQLITE: "DataCatalogClient",
        DATACATALOG_POSTGRES: "DataCatalogClient",
    }[catalog.deployment]
    assert type(client).__name__ == expected
    scheme = catalog.target.split("://", 1)[0]
    assert (
        scheme
        == {
            EMBEDDED_SQLITE: "sqlite",
            EMBEDDED_POSTGRES: "postgresql",
            REMOTE_CONNECT_SQLITE: "http",
            REMOTE_GRPC_POSTGRES: "grpc",
            DATACATALOG_SQLITE: "datacatalog",
            DATACATALOG_POSTGRES: "datacatalog",
        }[catalog.deployment]
    )


# --- get_or_compute ----------------------------------------------------------------------


class Counting:
    """A computation that counts its calls and returns ``o0 = value``."""

    def __init__(self, value: int = 7) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> literals_pb2.LiteralMap:
        self.calls += 1
        return int_map(o0=self.value)

    async def run_async(self) -> literals_pb2.LiteralMap:
        return self()


def test_get_or_compute_computes_once_then_hits(catalog: Catalog, keys: Keys) -> None:
    client = catalog()
    compute = Counting()
    first = client.get_or_compute(keys(), compute)
    assert first.status.cache_status is CacheStatus.CACHE_POPULATED
    assert first.outputs.read() == int_map(o0=7)
    second = catalog().get_or_compute(keys(), compute)
    assert second.status.cache_status is CacheStatus.CACHE_HIT
    assert second.outputs.read() == int_map(o0=7)
    assert compute.calls == 1
    # The reservation was released: another owner gets it at once.
    assert client.get_or_extend_reservation(keys(), "B", MAX_HEARTBEAT).owner_id == "B"


def test_async_get_or_compute_computes_once_then_hits(catalog: Catalog, keys: Keys) -> None:
    compute = Counting()

    async def scenario() -> tuple[Any, Any]:
        async with catalog.open_async() as client:
            first = await client.get_or_compute(keys(), compute.run_async)
            second = await client.get_or_compute(keys(), compute.run_async)
            held = await client.get_or_extend_reservation(keys(), "B", MAX_HEARTBEAT)
            assert held.owner_id == "B"
            return first, second

    first, second = asyncio.run(scenario())
    assert first.status.cache_status is CacheStatus.CACHE_POPULATED
    assert second.status.cache_status is CacheStatus.CACHE_HIT
    assert second.outputs.read() == int_map(o0=7)
    assert compute.calls == 1


def test_get_or_compute_never_caches_an_exception(catalog: Catalog, keys: Keys) -> None:
    client = catalog()

    def fail() -> literals_pb2.LiteralMap:
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        client.get_or_compute(keys(), fail)
    with pytest.raises(NotFoundError):
        client.get(keys())
    assert client.get_or_extend_reservation(keys(), "B", MAX_HEARTBEAT).owner_id == "B"


def test_get_or_compute_waits_for_the_owner_and_returns_its_entry(
    catalog: Catalog, keys: Keys
) -> None:
    owner, waiter = catalog(), catalog()
    owner.get_or_extend_reservation(keys(), "owner", MAX_HEARTBEAT)
    compute = Counting(value=1)
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(waiter.get_or_compute(keys(), compute)), daemon=True
    )
    thread.start()
    # The waiter is polling; the owner stores and releases.
    owner.put(keys(), int_map(o0=99))
    owner.release_reservation(keys(), "owner")
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert result[0].outputs.read() == int_map(o0=99)
    assert compute.calls == 0


def test_get_or_compute_gives_up_after_wait_timeout(catalog: Catalog, keys: Keys) -> None:
    catalog().get_or_extend_reservation(keys(), "owner", MAX_HEARTBEAT)
    compute = Counting()
    with pytest.raises(DeadlineExceededError, match="owner"):
        catalog().get_or_compute(keys(), compute, wait_timeout=timedelta(milliseconds=100))
    assert compute.calls == 0


@CACHE_SERVICES_ONLY
def test_get_or_compute_takes_over_an_expired_reservation(catalog: Catalog, keys: Keys) -> None:
    # A dead owner's lease, expired an hour ago for everyone else.
    catalog.aged(timedelta(hours=1)).get_or_extend_reservation(keys(), "dead", timedelta(seconds=1))
    compute = Counting()
    entry = catalog().get_or_compute(keys(), compute)
    assert entry.status.cache_status is CacheStatus.CACHE_POPULATED
    assert compute.calls == 1


def test_get_or_compute_heartbeat_keeps_the_lease_while_computing(
    catalog: Catalog, keys: Keys
) -> None:
    client, other = catalog(), catalog()
    # The lease lasts 1.5 s unless extended; each beat renews it, so only a stall of a whole
    # second on a loaded machine could let it lapse.
    heartbeat = timedelta(milliseconds=500)
    seen: list[str] = []

    def slow() -> literals_pb2.LiteralMap:
        for _ in range(4):  # well past one lease
            time.sleep(heartbeat.total_seconds())
            seen.append(other.get_or_extend_reservation(keys(), "other", heartbeat).owner_id)
        return int_map(o0=5)

    client.get_or_compute(keys(), slow, heartbeat=heartbeat, owner_id="computer")
    assert seen == ["computer"] * 4


def test_get_or_compute_without_serialize_keeps_the_stored_winner(
    catalog: Catalog, keys: Keys
) -> None:
    client, rival = catalog(), catalog()
    # A reservation held elsewhere does not stop an unserialized computation.
    rival.get_or_extend_reservation(keys(), "rival", MAX_HEARTBEAT)

    def racing() -> literals_pb2.LiteralMap:
        rival.put(keys(), int_map(o0=1))  # another writer stores first
        return int_map(o0=2)

    entry = client.get_or_compute(keys(), racing, serialize=False)
    assert entry.outputs.read() == int_map(o0=1)
    assert client.get(keys()).outputs.read() == int_map(o0=1)


def test_get_or_compute_validates_its_options(catalog: Catalog, keys: Keys) -> None:
    client = catalog()
    with pytest.raises(InvalidArgumentError) as caught:
        client.get_or_compute(keys(), Counting(), heartbeat=timedelta(0))
    assert caught.value.field == "heartbeat"
    with pytest.raises(InvalidArgumentError) as caught:
        client.get_or_compute(keys(), Counting(), wait_timeout=timedelta(seconds=-1))
    assert caught.value.field == "wait_timeout"


# --- the DataCatalog's own rules -----------------------------------------------------------

DATACATALOG_ONLY = pytest.mark.parametrize("catalog", DATACATALOG_DEPLOYMENTS, indirect=True)


@DATACATALOG_ONLY
def test_datacatalog_max_age_runs_on_created_at_and_a_tag_is_for_good(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    catalog.twin(twin).put(keys(), int_map(o0=1))

    def later(hours: int, **options: Any) -> Client:
        """A client whose clock is ``hours`` ahead: the artifact is that much older to it."""
        ahead = datetime.now(UTC) + timedelta(hours=hours)
        return catalog.twin(twin, clock=lambda: ahead, **options)

    aging = later(2, max_cache_age=timedelta(hours=1))
    with pytest.raises(NotFoundError, match="max_cache_age"):
        aging.get(keys())
    assert later(2, max_cache_age=timedelta(hours=3)).get(keys()).outputs.read() == int_map(o0=1)
    assert later(2).get(keys()).outputs.read() == int_map(o0=1)
    # The tag names its artifact for good and an update keeps created_at: too old stays too old.
    with pytest.raises(AlreadyExistsError):
        aging.put(keys(), int_map(o0=2))
    aging.update(keys(), int_map(o0=3))
    with pytest.raises(NotFoundError):
        aging.get(keys())
    assert catalog.twin(twin).get(keys()).outputs.read() == int_map(o0=3)


@DATACATALOG_ONLY
def test_datacatalog_refuses_delete_and_cache_service_options(
    catalog: Catalog, keys: Keys, twin: str
) -> None:
    client = catalog.twin(twin)
    client.put(keys(), int_map(o0=1))
    with pytest.raises(FailedPreconditionError, match="cannot delete"):
        client.delete(keys())
    assert client.get(keys()).outputs.read() == int_map(o0=1)
    for options in ({"inline_max_bytes": 0}, {"outputs": "uri"}, {"scope": ("o", "p", "d")}):
        with pytest.raises(InvalidArgumentError):
            catalog(**options)


@DATACATALOG_ONLY
def test_datacatalog_entries_are_the_ones_flyte_1_reads(catalog: Catalog, keys: Keys) -> None:
    """What the client stores is what flytepropeller's calls find, on the same service."""
    key = keys(7)
    catalog().put(key, int_map(o0=49), Metadata(task_execution_id=task_execution_id(key)))
    dataset = dc.DatasetID(
        project="project_1",
        domain="domain_1",
        name=f"flyte_task-{keys.task}",
        version=f"1.0-{hashing.interface_signature_hash(key.typed_interface)}",
    )
    tag = "flyte_cached-" + hashing.hash_literal_map(int_map(x=7))
    with grpc.insecure_channel(catalog.target.split("://", 1)[1]) as channel:
        stub = datacatalog_pb2_grpc.DataCatalogStub(channel)
        found = stub.GetDataset(dc.GetDatasetRequest(dataset=dataset), timeout=10)
        artifact = stub.GetArtifact(
            dc.GetArtifactRequest(dataset=dataset, tag_name=tag), timeout=10
        ).artifact
    assert dict(found.dataset.metadata.key_map) == {"task-version": "v7"}
    assert [(datum.name, datum.value.scalar.primitive.integer) for datum in artifact.data] == [
        ("o0", 49)
    ]
    assert dict(artifact.metadata.key_map) == {
        "exec-project": "exec-project",
        "exec-domain": "exec-domain",
        "execution-name": "exec-name",
        "exec-node": "n3",
        "exec-attempt": "2",
        "exec-org": "exec-org",
    }
