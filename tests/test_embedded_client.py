"""The embedded client end to end: ``taskcache.open`` over ``memory://`` and a sqlite file."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flyteidl2.core import identifier_pb2, literals_pb2
from fsspec.core import url_to_fs

import taskcache
from builders import START, FakeClock, int_map, make_identifier, make_interface, make_key
from taskcache import (
    AlreadyExistsError,
    CacheError,
    CacheStatus,
    Client,
    InMemoryOutputReader,
    InvalidArgumentError,
    Key,
    Metadata,
    NotFoundError,
    Reservation,
    ReservationCache,
    ReservationStatus,
    UnavailableError,
    UriOutputReader,
    hashing,
)
from taskcache.clients.embedded import EmbeddedClient

OpenClient = Callable[..., Client]
DEFAULT_INLINE_MAX_BYTES = 64 * 1024


@pytest.fixture(params=["memory", "sqlite"])
def open_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenClient]:
    """Return ``open(**options)`` on this backend; every client opened is closed afterwards."""
    clients: list[Client] = []

    def factory(**options: Any) -> Client:
        target = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/c.db"
        client = taskcache.open(target, **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def client(open_client: OpenClient) -> Client:
    return open_client()


# --- helpers -----------------------------------------------------------------------------


def _normalized(path: str) -> str:
    return "/" + path.lstrip("/")


def blob_exists(uri: str) -> bool:
    fs, path = url_to_fs(uri)
    return bool(fs.exists(path))


def remove_blob(uri: str) -> None:
    fs, path = url_to_fs(uri)
    fs.rm_file(path)


def files_under(root: str) -> set[str]:
    """Every file below ``root`` (any fsspec URL or local path), as normalized paths."""
    fs, path = url_to_fs(root)
    if not fs.exists(path):
        return set()
    return {_normalized(found) for found in fs.find(path)}


def storage_root(client: Client) -> str:
    root: str = client.blobs.root  # type: ignore[attr-defined]
    return root


def is_under(uri: str, root: str) -> bool:
    return _normalized(url_to_fs(uri)[1]) in files_under(root)


def write_outputs_file(path: Path, literal_map: literals_pb2.LiteralMap) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(literal_map.SerializeToString())
    return str(path)


def big_string_map(length: int) -> literals_pb2.LiteralMap:
    literal = literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value="s" * length))
    )
    return literals_pb2.LiteralMap(literals={"o0": literal})


def map_of_serialized_size(size: int) -> literals_pb2.LiteralMap:
    """A LiteralMap whose serialization is exactly ``size`` bytes."""
    probe = big_string_map(size)
    overhead = probe.ByteSize() - size
    literal_map = big_string_map(size - overhead)
    assert literal_map.ByteSize() == size
    return literal_map


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


class CountingReader:
    """An InputReader that counts its calls (optionally slowly, to widen races)."""

    def __init__(self, inputs: literals_pb2.LiteralMap, delay: float = 0.0) -> None:
        self.inputs = inputs
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def get(self) -> literals_pb2.LiteralMap:
        with self._lock:
            self.calls += 1
        if self.delay:
            threading.Event().wait(self.delay)
        return self.inputs


class MissingOutputs:
    """An OutputReader whose outputs do not exist."""

    uri = None

    def __init__(self) -> None:
        self.read_calls = 0

    def read(self) -> literals_pb2.LiteralMap:
        self.read_calls += 1
        raise AssertionError("read() must not be called when exists() is False")

    def exists(self) -> bool:
        return False


# --- get / put / update ------------------------------------------------------------------


def test_get_on_empty_catalog_is_not_found(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.get(make_key())


def test_put_returns_populated_status_with_dataset_and_source(client: Client) -> None:
    key = make_key()
    source = task_execution_id(key)

    status = client.put(key, int_map(o0=1), Metadata(task_execution_id=source))

    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert status.metadata is not None
    assert status.metadata.dataset_id == key.identifier
    assert status.metadata.source_task_execution == source


def test_put_without_metadata_has_no_source_execution(client: Client) -> None:
    key = make_key()
    status = client.put(key, int_map(o0=1))
    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert status.metadata is not None
    assert status.metadata.dataset_id == key.identifier
    assert not status.metadata.HasField("source_task_execution")


def test_get_after_put_hits_with_the_stored_outputs(client: Client) -> None:
    key = make_key(3)
    outputs = int_map(o0=9, o1=-4)
    client.put(key, outputs)

    entry = client.get(make_key(3))  # a fresh but equal key

    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    assert entry.outputs.read() == outputs
    assert entry.outputs.exists()
    assert entry.status.metadata is not None
    assert entry.status.metadata.dataset_id == key.identifier
    with pytest.raises(NotFoundError):
        client.get(make_key(4))


def test_source_execution_round_trips_a_task_execution_id(client: Client) -> None:
    key = make_key()
    source = task_execution_id(key)
    client.put(key, int_map(o0=1), Metadata(task_execution_id=source))

    metadata = client.get(key).status.metadata
    assert metadata is not None
    rebuilt = metadata.source_task_execution
    assert rebuilt == source
    assert rebuilt.task_id.version == "v7"
    assert rebuilt.retry_attempt == 2
    assert rebuilt.node_execution_id.node_id == "n3"
    execution = rebuilt.node_execution_id.execution_id
    assert (execution.project, execution.domain, execution.name, execution.org) == (
        "exec-project",
        "exec-domain",
        "exec-name",
        "exec-org",
    )


def test_source_execution_from_a_node_execution_id(client: Client) -> None:
    key = make_key()
    node = identifier_pb2.NodeExecutionIdentifier(
        node_id="n9",
        execution_id=identifier_pb2.WorkflowExecutionIdentifier(
            project="ep", domain="ed", name="run-1", org="eo"
        ),
    )
    client.put(key, int_map(o0=1), Metadata(node_execution_id=node))

    metadata = client.get(key).status.metadata
    assert metadata is not None
    rebuilt = metadata.source_task_execution
    assert rebuilt.task_id.version == "unknown"
    assert rebuilt.retry_attempt == 0
    assert rebuilt.node_execution_id == node
    assert rebuilt.task_id.name == key.identifier.name
    assert rebuilt.task_id.project == key.identifier.project


def test_source_execution_without_metadata_falls_back(client: Client) -> None:
    key = make_key()
    client.put(key, int_map(o0=1))

    metadata = client.get(key).status.metadata
    assert metadata is not None
    rebuilt = metadata.source_task_execution
    ident = key.identifier
    assert rebuilt.task_id.version == "unknown"
    assert rebuilt.retry_attempt == 0
    assert rebuilt.node_execution_id.node_id == "unknown"
    execution = rebuilt.node_execution_id.execution_id
    assert execution.name == "unknown"
    assert (execution.project, execution.domain, execution.org) == (
        ident.project,
        ident.domain,
        ident.org,
    )


def test_put_twice_raises_already_exists_with_put_failure_status(client: Client) -> None:
    key = make_key()
    client.put(key, int_map(o0=1))

    with pytest.raises(AlreadyExistsError) as raised:
        client.put(make_key(), int_map(o0=2))

    status = raised.value.status
    assert status is not None
    assert status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    assert status.metadata is not None
    assert status.metadata.dataset_id == key.identifier
    assert client.get(key).outputs.read() == int_map(o0=1)


def test_failed_put_leaves_no_orphan_blob(open_client: OpenClient) -> None:
    client = open_client(inline_max_bytes=0)
    client.put(make_key(), int_map(o0=1))
    before = files_under(storage_root(client))
    assert len(before) == 1

    with pytest.raises(AlreadyExistsError):
        client.put(make_key(), int_map(o0=2))

    assert files_under(storage_root(client)) == before


def test_update_overwrites_and_creates(client: Client) -> None:
    key = make_key()
    client.put(key, int_map(o0=1))

    status = client.update(key, int_map(o0=2))
    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert client.get(key).outputs.read() == int_map(o0=2)

    fresh = make_key(99)
    created = client.update(fresh, int_map(o0=3))
    assert created.cache_status is CacheStatus.CACHE_POPULATED
    assert created.metadata is not None
    assert created.metadata.dataset_id == fresh.identifier
    assert client.get(fresh).outputs.read() == int_map(o0=3)


def test_keys_differ_by_cache_version_and_task_name(client: Client) -> None:
    client.put(make_key(cache_version="1.0"), int_map(o0=1))
    with pytest.raises(NotFoundError):
        client.get(make_key(cache_version="2.0"))
    with pytest.raises(NotFoundError):
        client.get(make_key(name="tests.other"))
    # The task version is not part of the key.
    other_version = make_key(identifier=make_identifier(version="v2"))
    assert client.get(other_version).outputs.read() == int_map(o0=1)


# --- inline vs blob ----------------------------------------------------------------------


def test_inline_max_bytes_zero_always_writes_a_blob(open_client: OpenClient) -> None:
    client = open_client(inline_max_bytes=0)
    key = make_key()
    client.put(key, int_map(o0=1))

    entry = client.get(key)
    uri = entry.outputs.uri
    assert uri is not None
    assert blob_exists(uri)
    assert is_under(uri, storage_root(client))
    assert entry.outputs.read() == int_map(o0=1)


def test_small_outputs_are_inline_and_large_ones_blobs(client: Client) -> None:
    small, large = make_key(1), make_key(2)
    client.put(small, int_map(o0=1))
    big = big_string_map(DEFAULT_INLINE_MAX_BYTES + 10)
    client.put(large, big)

    assert client.get(small).outputs.uri is None
    assert files_under(storage_root(client)) != set()
    entry = client.get(large)
    assert entry.outputs.uri is not None
    assert blob_exists(entry.outputs.uri)
    assert is_under(entry.outputs.uri, storage_root(client))
    assert entry.outputs.read() == big


def test_inline_limit_is_inclusive(client: Client) -> None:
    at_limit, over_limit = make_key(1), make_key(2)
    client.put(at_limit, map_of_serialized_size(DEFAULT_INLINE_MAX_BYTES))
    client.put(over_limit, map_of_serialized_size(DEFAULT_INLINE_MAX_BYTES + 1))

    assert client.get(at_limit).outputs.uri is None
    assert client.get(over_limit).outputs.uri is not None


def test_storage_option_places_blobs_in_that_folder(
    open_client: OpenClient, tmp_path: Path
) -> None:
    store = tmp_path / "elsewhere"
    client = open_client(storage=str(store), inline_max_bytes=0)
    key = make_key()
    client.put(key, int_map(o0=1))

    uri = client.get(key).outputs.uri
    assert uri is not None
    assert Path(uri).is_file()
    assert Path(uri).resolve().is_relative_to(store.resolve())
    assert not (tmp_path / "blobs").exists()


# --- output readers ----------------------------------------------------------------------


def test_uri_output_reader_is_stored_by_reference(client: Client, tmp_path: Path) -> None:
    outputs = int_map(o0=42)
    uri = write_outputs_file(tmp_path / "external" / "outputs.pb", outputs)
    key = make_key()

    client.put(key, UriOutputReader(uri))

    entry = client.get(key)
    assert entry.outputs.uri == uri
    assert entry.outputs.read() == outputs
    assert files_under(storage_root(client)) == set()


@pytest.mark.parametrize(
    "reader_factory",
    [
        pytest.param(lambda tmp: UriOutputReader(str(tmp / "nowhere" / "outputs.pb")), id="uri"),
        pytest.param(lambda tmp: MissingOutputs(), id="custom"),
    ],
)
def test_missing_outputs_fail_the_put(
    client: Client, tmp_path: Path, reader_factory: Callable[[Path], Any]
) -> None:
    key = make_key()
    reader = reader_factory(tmp_path)
    assert not reader.exists()

    with pytest.raises(CacheError) as raised:
        client.put(key, reader)

    status = raised.value.status
    assert status is not None
    assert status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    assert status.metadata is not None
    assert status.metadata.dataset_id == key.identifier
    with pytest.raises(NotFoundError):
        client.get(key)
    assert files_under(storage_root(client)) == set()


def test_in_memory_output_reader(client: Client) -> None:
    key = make_key()
    client.put(key, InMemoryOutputReader(int_map(o0=5)))
    entry = client.get(key)
    assert entry.outputs.read() == int_map(o0=5)
    assert entry.outputs.uri is None


def test_outputs_holding_an_execution_error_are_not_cached(client: Client) -> None:
    from flyteidl2.core import execution_pb2

    key = make_key()
    failed = InMemoryOutputReader(None, error=execution_pb2.ExecutionError(message="boom"))

    with pytest.raises(CacheError) as raised:
        client.put(key, failed)

    assert raised.value.status is not None
    assert raised.value.status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    with pytest.raises(NotFoundError):
        client.get(key)


# --- dangling outputs, max age -----------------------------------------------------------


def test_dangling_blob_is_a_miss_and_the_entry_is_removed(open_client: OpenClient) -> None:
    client = open_client(inline_max_bytes=0)
    key = make_key()
    client.put(key, int_map(o0=1))
    uri = client.get(key).outputs.uri
    assert uri is not None
    remove_blob(uri)

    with pytest.raises(NotFoundError):
        client.get(key)

    status = client.put(key, int_map(o0=2))  # a create-only put: the entry is gone
    assert status.cache_status is CacheStatus.CACHE_POPULATED
    entry = client.get(key)
    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    assert entry.outputs.read() == int_map(o0=2)


def test_get_outputs_is_gets_outputs_and_misses_when_get_does(open_client: OpenClient) -> None:
    clock = FakeClock()
    client = open_client(max_cache_age=timedelta(seconds=10), clock=clock)
    assert isinstance(client, EmbeddedClient)
    key, short_lived = make_key(), make_key(name="short-lived")
    with pytest.raises(NotFoundError):
        client.get_outputs(key)
    client.put(key, int_map(o0=1))
    client.put(short_lived, int_map(o0=2), ttl=timedelta(seconds=3))

    assert client.get_outputs(key) == client.get(key).outputs.read() == int_map(o0=1)
    assert client.get_outputs(short_lived, timeout=5.0) == int_map(o0=2)
    clock.advance(3)  # expired
    with pytest.raises(NotFoundError):
        client.get_outputs(short_lived)
    clock.advance(8)  # older than max_cache_age
    with pytest.raises(NotFoundError):
        client.get_outputs(key)


def test_get_outputs_of_a_dangling_blob_is_a_miss_and_the_entry_is_removed(
    open_client: OpenClient,
) -> None:
    client = open_client(inline_max_bytes=0)
    assert isinstance(client, EmbeddedClient)
    key = make_key()
    client.put(key, int_map(o0=1))
    uri = client.get(key).outputs.uri
    assert uri is not None and client.get_outputs(key) == int_map(o0=1)
    remove_blob(uri)

    with pytest.raises(NotFoundError, match="discarded"):
        client.get_outputs(key)

    assert client.put(key, int_map(o0=2)).cache_status is CacheStatus.CACHE_POPULATED
    assert client.get_outputs(key) == int_map(o0=2)


def test_max_cache_age(open_client: OpenClient) -> None:
    clock = FakeClock()
    client = open_client(max_cache_age=timedelta(seconds=10), clock=clock)
    key = make_key()
    client.put(key, int_map(o0=1))

    clock.advance(5)
    assert client.get(key).status.cache_status is CacheStatus.CACHE_HIT
    clock.advance(5)
    assert client.get(key).status.cache_status is CacheStatus.CACHE_HIT  # exactly 10 s
    clock.advance(1)
    with pytest.raises(NotFoundError):
        client.get(key)

    client.update(key, int_map(o0=2))  # refreshes the entry
    assert client.get(key).outputs.read() == int_map(o0=2)
    clock.advance(10)
    assert client.get(key).outputs.read() == int_map(o0=2)
    clock.advance(1)
    with pytest.raises(NotFoundError):
        client.get(key)


def test_put_replaces_an_expired_entry(open_client: OpenClient) -> None:
    clock = FakeClock()
    client = open_client(max_cache_age=timedelta(seconds=10), clock=clock)
    key = make_key()
    client.put(key, int_map(o0=1))
    clock.advance(11)
    with pytest.raises(NotFoundError):
        client.get(key)

    status = client.put(key, int_map(o0=2))

    assert status.cache_status is CacheStatus.CACHE_POPULATED
    assert client.get(key).outputs.read() == int_map(o0=2)


# --- blob ownership on update and delete -------------------------------------------------


def test_update_deletes_the_replaced_blob_it_wrote(open_client: OpenClient) -> None:
    client = open_client(inline_max_bytes=0)
    key = make_key()
    client.put(key, int_map(o0=1))
    old_uri = client.get(key).outputs.uri
    assert old_uri is not None

    client.update(key, int_map(o0=2))

    new_uri = client.get(key).outputs.uri
    assert new_uri is not None
    assert new_uri != old_uri
    assert not blob_exists(old_uri)
    assert blob_exists(new_uri)
    assert client.get(key).outputs.read() == int_map(o0=2)


def test_update_and_delete_never_remove_a_referenced_blob(
    open_client: OpenClient, tmp_path: Path
) -> None:
    client = open_client(inline_max_bytes=0)
    external = write_outputs_file(tmp_path / "external" / "outputs.pb", int_map(o0=1))
    key = make_key()
    client.put(key, UriOutputReader(external))

    client.update(key, int_map(o0=2))
    assert Path(external).is_file()
    assert client.get(key).outputs.read() == int_map(o0=2)

    client.update(key, UriOutputReader(external))
    client.delete(key)
    assert Path(external).is_file()
    assert files_under(storage_root(client)) == set()


def test_delete_removes_the_entry_and_its_blob(open_client: OpenClient) -> None:
    client = open_client(inline_max_bytes=0)
    key = make_key()
    client.put(key, int_map(o0=1))
    uri = client.get(key).outputs.uri
    assert uri is not None

    client.delete(key)

    assert not blob_exists(uri)
    with pytest.raises(NotFoundError):
        client.get(key)
    with pytest.raises(NotFoundError):
        client.delete(key)
    assert client.put(key, int_map(o0=3)).cache_status is CacheStatus.CACHE_POPULATED


def test_delete_of_an_inline_entry(client: Client) -> None:
    key = make_key()
    client.put(key, int_map(o0=1))
    client.delete(key)
    with pytest.raises(NotFoundError):
        client.get(key)
    with pytest.raises(NotFoundError):
        client.delete(key)


# --- input readers -----------------------------------------------------------------------


def test_input_reader_is_called_at_most_once(client: Client) -> None:
    reader = CountingReader(int_map(x=7))
    key = make_key(inputs=reader)

    with pytest.raises(NotFoundError):
        client.get(key)
    client.put(key, int_map(o0=49))
    client.get(key)
    client.update(key, int_map(o0=49))
    client.get_or_extend_reservation(key, "A", timedelta(seconds=1))
    client.release_reservation(key, "A")
    client.delete(key)

    assert reader.calls == 1
    # The reader's inputs are the ones hashed: a key built from the map hits the same entry.
    client.put(key, int_map(o0=49))
    assert client.get(make_key(7)).outputs.read() == int_map(o0=49)


def test_input_reader_is_called_once_across_threads(client: Client) -> None:
    reader = CountingReader(int_map(x=7), delay=0.02)
    key = make_key(inputs=reader)

    def reserve(i: int) -> str:
        return client.get_or_extend_reservation(key, f"owner-{i}", timedelta(seconds=1)).owner_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        owners = list(pool.map(reserve, range(8)))

    assert reader.calls == 1
    assert len(set(owners)) == 1


def test_input_reader_not_called_without_declared_inputs(client: Client) -> None:
    reader = CountingReader(int_map(x=7))
    key = Key(make_identifier(), "1.0", make_interface(), inputs=reader)

    with pytest.raises(NotFoundError):
        client.get(key)
    client.put(key, int_map(o0=1))
    client.get_or_extend_reservation(key, "A", timedelta(seconds=1))
    client.release_reservation(key, "A")

    assert reader.calls == 0
    no_inputs = Key(make_identifier(), "1.0", make_interface())
    assert client.get(no_inputs).outputs.read() == int_map(o0=1)


# --- reservations ------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def reserving(open_client: OpenClient, clock: FakeClock) -> Client:
    return open_client(
        max_reservation_heartbeat=timedelta(seconds=5),
        heartbeat_grace_multiplier=2,
        clock=clock,
    )


def test_reservation_is_acquired_and_clamped(reserving: Client, clock: FakeClock) -> None:
    key = make_key()
    reservation = reserving.get_or_extend_reservation(key, "A", timedelta(seconds=60))

    assert reservation.owner_id == "A"
    assert reservation.key == hashing.cache_key(make_key())
    assert reservation.heartbeat_interval == timedelta(seconds=5)
    assert reservation.expires_at == clock.now + timedelta(seconds=10)
    assert reservation.expires_at.tzinfo is not None


def test_short_heartbeat_is_kept(reserving: Client, clock: FakeClock) -> None:
    reservation = reserving.get_or_extend_reservation(make_key(), "A", timedelta(seconds=2))
    assert reservation.heartbeat_interval == timedelta(seconds=2)
    assert reservation.expires_at == clock.now + timedelta(seconds=4)


def test_other_owner_sees_the_holder_until_release(reserving: Client, clock: FakeClock) -> None:
    key = make_key()
    held = reserving.get_or_extend_reservation(key, "A", timedelta(seconds=5))

    clock.advance(1)
    seen = reserving.get_or_extend_reservation(key, "B", timedelta(seconds=5))
    assert seen == held

    reserving.release_reservation(key, "B")  # not the owner: a no-op
    assert reserving.get_or_extend_reservation(key, "B", timedelta(seconds=5)).owner_id == "A"

    reserving.release_reservation(key, "A")
    taken = reserving.get_or_extend_reservation(key, "B", timedelta(seconds=5))
    assert taken.owner_id == "B"
    assert taken.expires_at == clock.now + timedelta(seconds=10)


def test_owner_extends_its_reservation(reserving: Client, clock: FakeClock) -> None:
    key = make_key()
    reserving.get_or_extend_reservation(key, "A", timedelta(seconds=5))
    clock.advance(3)
    extended = reserving.get_or_extend_reservation(key, "A", timedelta(seconds=5))
    assert extended.owner_id == "A"
    assert extended.expires_at == clock.now + timedelta(seconds=10)


def test_expired_reservation_is_taken_over(reserving: Client, clock: FakeClock) -> None:
    key = make_key()
    reserving.get_or_extend_reservation(key, "A", timedelta(seconds=5))

    clock.advance(9)
    assert reserving.get_or_extend_reservation(key, "B", timedelta(seconds=5)).owner_id == "A"
    clock.advance(2)
    taken = reserving.get_or_extend_reservation(key, "B", timedelta(seconds=5))
    assert taken.owner_id == "B"
    assert taken.expires_at == clock.now + timedelta(seconds=10)
    assert reserving.get_or_extend_reservation(key, "A", timedelta(seconds=5)).owner_id == "B"


def test_reservations_are_per_key(reserving: Client) -> None:
    reserving.get_or_extend_reservation(make_key(1), "A", timedelta(seconds=5))
    other = reserving.get_or_extend_reservation(make_key(2), "B", timedelta(seconds=5))
    assert other.owner_id == "B"
    assert other.key == hashing.cache_key(make_key(2))


def test_reservation_proto_round_trip_keeps_microseconds() -> None:
    reservation = Reservation(
        key="k",
        owner_id="A",
        heartbeat_interval=timedelta(seconds=5, microseconds=250_001),
        expires_at=datetime(2024, 5, 17, 12, 0, 0, 123_457, tzinfo=UTC),
    )

    message = reservation.to_proto()

    assert message.key == "k"
    assert message.owner_id == "A"
    assert message.expires_at.nanos == 123_457_000
    assert message.heartbeat_interval.nanos == 250_001_000
    assert Reservation.from_proto(message) == reservation


def test_reservation_from_the_client_round_trips(reserving: Client) -> None:
    reservation = reserving.get_or_extend_reservation(make_key(), "A", timedelta(seconds=5))
    assert reservation.expires_at.microsecond == START.microsecond
    assert Reservation.from_proto(reservation.to_proto()) == reservation


def test_reservation_expiry_is_normalized_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    reservation = Reservation(
        "k", "A", timedelta(seconds=1), datetime(2024, 1, 1, 14, tzinfo=plus_two)
    )
    assert reservation.expires_at == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert reservation.expires_at.utcoffset() == timedelta(0)
    with pytest.raises(InvalidArgumentError):
        Reservation("k", "A", timedelta(seconds=1), datetime(2024, 1, 1))


# --- reservation cache -------------------------------------------------------------------


def _cache_entry(seconds: int, status: ReservationStatus) -> ReservationCache:
    return ReservationCache(timestamp=START + timedelta(seconds=seconds), reservation_status=status)


def test_reservation_cache_defaults_and_updates(client: Client) -> None:
    assert client.get_reservation_cache("nobody") == ReservationCache()
    assert ReservationCache().reservation_status is ReservationStatus.RESERVATION_DISABLED

    entry = _cache_entry(1, ReservationStatus.RESERVATION_ACQUIRED)
    client.update_reservation_cache("A", entry)
    assert client.get_reservation_cache("A") == entry

    newer = _cache_entry(2, ReservationStatus.RESERVATION_RELEASED)
    client.update_reservation_cache("A", newer)
    assert client.get_reservation_cache("A") == newer
    assert client.get_reservation_cache("B") == ReservationCache()


def test_reservation_cache_forgets_the_least_recently_used(open_client: OpenClient) -> None:
    client = open_client(reservation_cache_size=3)
    entries = {
        owner: _cache_entry(i, ReservationStatus.RESERVATION_EXISTS)
        for i, owner in enumerate(["o1", "o2", "o3", "o4"])
    }
    for owner in ("o1", "o2", "o3", "o4"):
        client.update_reservation_cache(owner, entries[owner])

    assert client.get_reservation_cache("o1") == ReservationCache()
    for owner in ("o2", "o3", "o4"):
        assert client.get_reservation_cache(owner) == entries[owner]


def test_reservation_cache_get_refreshes_recency(open_client: OpenClient) -> None:
    client = open_client(reservation_cache_size=3)
    entries = {
        owner: _cache_entry(i, ReservationStatus.RESERVATION_ACQUIRED)
        for i, owner in enumerate(["o1", "o2", "o3", "o4"])
    }
    for owner in ("o1", "o2", "o3"):
        client.update_reservation_cache(owner, entries[owner])
    assert client.get_reservation_cache("o1") == entries["o1"]  # o1 is now the most recent

    client.update_reservation_cache("o4", entries["o4"])

    assert client.get_reservation_cache("o2") == ReservationCache()
    for owner in ("o1", "o3", "o4"):
        assert client.get_reservation_cache(owner) == entries[owner]


def test_reservation_cache_under_concurrent_updates(open_client: OpenClient) -> None:
    bound, owners, threads, updates = 8, 20, 16, 500
    client = open_client(reservation_cache_size=bound)
    written: dict[str, set[ReservationCache]] = {f"owner-{i}": set() for i in range(owners)}
    written_lock = threading.Lock()
    barrier = threading.Barrier(threads)
    statuses = list(ReservationStatus)

    def work(thread: int) -> None:
        mine: list[tuple[str, ReservationCache]] = []
        barrier.wait()
        for i in range(updates):
            owner = f"owner-{(thread * 7 + i) % owners}"
            entry = _cache_entry(thread * updates + i, statuses[i % len(statuses)])
            mine.append((owner, entry))
            client.update_reservation_cache(owner, entry)
            if i % 5 == 0:
                client.get_reservation_cache(owner)
        with written_lock:
            for owner, entry in mine:
                written[owner].add(entry)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(threads)))

    remembered = {owner: client.get_reservation_cache(owner) for owner in written}
    stored = {owner: entry for owner, entry in remembered.items() if entry != ReservationCache()}
    # Every owner was written, so exactly ``bound`` of them are remembered.
    assert len(stored) == bound
    for owner, entry in stored.items():
        assert entry in written[owner]


# --- lifecycle ---------------------------------------------------------------------------


def test_context_manager_closes(open_client: OpenClient) -> None:
    with open_client() as client:
        client.put(make_key(), int_map(o0=1))
    with pytest.raises(UnavailableError):
        client.get(make_key())  # the entry exists: only the closing can make this fail
    client.close()  # a second close is a no-op
    client.close()


def test_put_on_a_closed_client_fails_with_put_failure(open_client: OpenClient) -> None:
    client = open_client()
    client.close()
    key = make_key()
    with pytest.raises(CacheError) as raised:
        client.put(key, int_map(o0=1))
    assert raised.value.status is not None
    assert raised.value.status.cache_status is CacheStatus.CACHE_PUT_FAILURE
    with pytest.raises(CacheError):
        client.get_or_extend_reservation(key, "A", timedelta(seconds=1))


def test_async_client() -> None:
    async def scenario() -> None:
        key = make_key()
        async with taskcache.open_async("memory://") as client:
            with pytest.raises(NotFoundError):
                await client.get(key)
            put = await client.put(key, int_map(o0=1))
            assert put.cache_status is CacheStatus.CACHE_POPULATED
            with pytest.raises(AlreadyExistsError):
                await client.put(key, int_map(o0=9))
            hit = await client.get(key)
            assert hit.status.cache_status is CacheStatus.CACHE_HIT
            assert hit.outputs.read() == int_map(o0=1)
            await client.update(key, int_map(o0=2))
            assert (await client.get(key)).outputs.read() == int_map(o0=2)

            held = await client.get_or_extend_reservation(key, "A", timedelta(seconds=1))
            assert held.owner_id == "A"
            other = await client.get_or_extend_reservation(key, "B", timedelta(seconds=1))
            assert other.owner_id == "A"
            await client.release_reservation(key, "A")
            taken = await client.get_or_extend_reservation(key, "B", timedelta(seconds=1))
            assert taken.owner_id == "B"

            assert await client.get_reservation_cache("A") == ReservationCache()
            entry = _cache_entry(1, ReservationStatus.RESERVATION_ACQUIRED)
            await client.update_reservation_cache("A", entry)
            assert await client.get_reservation_cache("A") == entry

            await client.delete(key)
            with pytest.raises(NotFoundError):
                await client.delete(key)
            await client.put(key, int_map(o0=3))
        # The entry exists: only the closing can make this fail.
        with pytest.raises(UnavailableError):
            await client.get(key)
        await client.close()  # idempotent

    asyncio.run(scenario())


# --- invalid arguments -------------------------------------------------------------------


def _no_identifier_key() -> Key:
    return Key(None, "1.0", make_interface("x"), inputs=int_map(x=1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, k: c.get(k), id="get"),
        pytest.param(lambda c, k: c.put(k, int_map(o0=1)), id="put"),
        pytest.param(lambda c, k: c.update(k, int_map(o0=1)), id="update"),
        pytest.param(lambda c, k: c.delete(k), id="delete"),
        pytest.param(
            lambda c, k: c.get_or_extend_reservation(k, "A", timedelta(seconds=1)),
            id="reserve",
        ),
        pytest.param(lambda c, k: c.release_reservation(k, "A"), id="release"),
    ],
)
def test_missing_identifier_is_invalid(
    client: Client, call: Callable[[Client, Key], object]
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        call(client, _no_identifier_key())
    assert raised.value.field == "identifier"


def test_put_without_identifier_carries_put_failure_status(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        client.put(_no_identifier_key(), int_map(o0=1))
    status = raised.value.status
    assert status is not None
    assert status.cache_status is CacheStatus.CACHE_PUT_FAILURE


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda c: c.get_or_extend_reservation(make_key(), "", timedelta(seconds=1)),
            id="reserve",
        ),
        pytest.param(lambda c: c.release_reservation(make_key(), ""), id="release"),
    ],
)
def test_empty_owner_is_invalid(client: Client, call: Callable[[Client], object]) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        call(client)
    assert raised.value.field == "owner_id"


def test_constructing_with_negative_inline_max_bytes_is_invalid(tmp_path: Path) -> None:
    from taskcache.clients.embedded import EmbeddedClient
    from taskcache.manager import CacheManager
    from taskcache.repositories.sqlite import SqliteRepository
    from taskcache.storage import BlobStore

    with SqliteRepository(None) as repository:
        manager, blobs = CacheManager(repository), BlobStore(str(tmp_path))
        with pytest.raises(InvalidArgumentError) as raised:
            EmbeddedClient(manager, blobs, inline_max_bytes=-1)
        assert raised.value.field == "inline_max_bytes"
        EmbeddedClient(manager, blobs, inline_max_bytes=0).close()
