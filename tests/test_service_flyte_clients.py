"""``taskcache serve`` end to end, through Flyte's own generated clients only.

One server process serves the module (distinct keys per test); a few tests start their own to
check defaults and shutdown. Scoped v2 tests run over Connect (``CacheServiceClientSync``)
and gRPC (``CacheServiceStub``) alike.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from connectrpc.errors import ConnectError
from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl.cacheservice import cacheservice_pb2_grpc as flyte1_grpc
from flyteidl.core import literals_pb2 as literals_pb2_v1
from flyteidl2.cacheservice import cacheservice_connect as unscoped_connect
from flyteidl2.cacheservice import cacheservice_pb2 as base_pb2
from flyteidl2.cacheservice import cacheservice_pb2_grpc as unscoped_grpc
from flyteidl2.cacheservice.v2 import cacheservice_connect as scoped_connect
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2_grpc as scoped_grpc
from flyteidl2.core import identifier_pb2, literals_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import taskcache
from builders import int_map, make_identifier, make_interface
from server_process import ServerProcess, http_get, running_server
from server_sockets import established_fds, tcp_nodelay
from taskcache import Key
from taskcache.errors import InvalidArgumentError
from taskcache.rpcs import IF_UNCHANGED_HEADER, EntryVersion
from taskcache.server.settings import Settings, load_settings

pytestmark = pytest.mark.slow

MAX_HEARTBEAT = timedelta(seconds=5)
GRACE_MULTIPLIER = 3
MAX_MESSAGE_BYTES = 1024 * 1024
SCOPE = v2_pb2.Identifier(org="acme", project="flights", domain="development")
SCOPED = "flyteidl2.cacheservice.v2.CacheService"
UNSCOPED = "flyteidl2.cacheservice.CacheService"
FLYTE1 = "flyteidl.cacheservice.CacheService"
_GRPC_METHODS = {
    "get": "Get",
    "put": "Put",
    "delete": "Delete",
    "get_or_extend_reservation": "GetOrExtendReservation",
    "release_reservation": "ReleaseReservation",
}


class RemoteError(Exception):
    """A failed call, whatever the transport: the status code name and the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Remote:
    """Calls one cache service through one transport (snake_case method names)."""

    transport: str
    target: Any

    def __call__(self, method: str, request: Any, headers: dict[str, str] | None = None) -> Any:
        if self.transport == "connect":
            try:
                return getattr(self.target, method)(request, headers=headers)
            except ConnectError as error:
                raise RemoteError(error.code.name, error.message) from error
        metadata = tuple((headers or {}).items())
        try:
            return getattr(self.target, _GRPC_METHODS[method])(
                request, timeout=10, metadata=metadata
            )
        except grpc.RpcError as error:
            raise RemoteError(error.code().name, error.details() or "") from error


@dataclass
class Clients:
    """Every client of the module's server."""

    server: ServerProcess
    database: Path
    storage: Path
    scoped: dict[str, Remote]
    unscoped: dict[str, Remote]
    flyte1: Remote
    channel: grpc.Channel


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    folder = tmp_path_factory.mktemp("service")
    storage = folder / "blobs"
    database = folder / "db" / "catalog.db"
    with running_server(
        folder,
        database=f"sqlite:///{database}",
        storage=str(storage),
        extra_args=[
            "--max-reservation-heartbeat",
            f"{MAX_HEARTBEAT.total_seconds():g}s",
            "--heartbeat-grace-multiplier",
            str(GRACE_MULTIPLIER),
            "--max-message-bytes",
            str(MAX_MESSAGE_BYTES),
        ],
    ) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        scoped_client = scoped_connect.CacheServiceClientSync(server.http_url)
        unscoped_client = unscoped_connect.CacheServiceClientSync(server.http_url)
        try:
            yield Clients(
                server=server,
                database=database,
                storage=storage,
                scoped={
                    "connect": Remote("connect", scoped_client),
                    "grpc": Remote("grpc", scoped_grpc.CacheServiceStub(channel)),
                },
                unscoped={
                    "connect": Remote("connect", unscoped_client),
                    "grpc": Remote("grpc", unscoped_grpc.CacheServiceStub(channel)),
                },
                flyte1=Remote("grpc", flyte1_grpc.CacheServiceStub(channel)),
                channel=channel,
            )
        finally:
            scoped_client.close()
            unscoped_client.close()
            channel.close()


@pytest.fixture(params=["connect", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def v2(clients: Clients, transport: str) -> Remote:
    """The scoped v2 service over the parametrized transport."""
    return clients.scoped[transport]


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    """A cache key no other test uses."""
    return f"{request.node.name}-{uuid.uuid4().hex}"


# --- request builders -------------------------------------------------------------------


def int_literals(**values: int) -> literals_pb2.LiteralMap:
    return literals_pb2.LiteralMap(
        literals={
            name: literals_pb2.Literal(
                scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=value))
            )
            for name, value in values.items()
        }
    )


def output(
    *,
    uri: str | None = None,
    literals: literals_pb2.LiteralMap | None = None,
    metadata: base_pb2.Metadata | None = None,
) -> base_pb2.CachedOutput:
    cached = base_pb2.CachedOutput(metadata=metadata)
    if uri is not None:
        cached.output_uri = uri
    if literals is not None:
        cached.output_literals.CopyFrom(literals)
    return cached


def put(
    key: str,
    cached: base_pb2.CachedOutput | None = None,
    *,
    identifier: v2_pb2.Identifier | None = SCOPE,
    overwrite: bool = False,
    delete_blob: bool = False,
    max_age: timedelta | None = None,
) -> v2_pb2.PutCacheRequest:
    base = base_pb2.PutCacheRequest(key=key, output=cached)
    if overwrite or delete_blob or max_age is not None:
        base.overwrite.overwrite = overwrite
        base.overwrite.delete_blob = delete_blob
        if max_age is not None:
            base.overwrite.max_age.FromTimedelta(max_age)
    return v2_pb2.PutCacheRequest(base_request=base, identifier=identifier)


def get(key: str, identifier: v2_pb2.Identifier | None = SCOPE) -> v2_pb2.GetCacheRequest:
    return v2_pb2.GetCacheRequest(
        base_request=base_pb2.GetCacheRequest(key=key), identifier=identifier
    )


def delete(key: str, identifier: v2_pb2.Identifier | None = SCOPE) -> v2_pb2.DeleteCacheRequest:
    return v2_pb2.DeleteCacheRequest(
        base_request=base_pb2.DeleteCacheRequest(key=key), identifier=identifier
    )


def reserve(
    key: str,
    owner: str,
    heartbeat: timedelta = timedelta(seconds=2),
    identifier: v2_pb2.Identifier | None = SCOPE,
) -> v2_pb2.GetOrExtendReservationRequest:
    base = base_pb2.GetOrExtendReservationRequest(key=key, owner_id=owner)
    base.heartbeat_interval.FromTimedelta(heartbeat)
    return v2_pb2.GetOrExtendReservationRequest(base_request=base, identifier=identifier)


def release(
    key: str, owner: str, identifier: v2_pb2.Identifier | None = SCOPE
) -> v2_pb2.ReleaseReservationRequest:
    return v2_pb2.ReleaseReservationRequest(
        base_request=base_pb2.ReleaseReservationRequest(key=key, owner_id=owner),
        identifier=identifier,
    )


def expect_error(code: str, call: Callable[[], object]) -> RemoteError:
    with pytest.raises(RemoteError) as caught:
        call()
    assert caught.value.code == code, caught.value
    return caught.value


def blob(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"outputs")
    return path


# --- scoped v2 service, over Connect and gRPC ---------------------------------------------


def test_put_get_round_trip_with_uri_and_metadata(v2: Remote, key: str) -> None:
    source = identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org="acme",
        project="flights",
        domain="development",
        name="train",
        version="v7",
    )
    created = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    metadata = base_pb2.Metadata(
        source_identifier=source, key_map=base_pb2.KeyMapMetadata(values={"exec-name": "run1"})
    )
    metadata.created_at.FromDatetime(created)
    before = datetime.now(UTC)
    v2("put", put(key, output(uri="s3://bucket/run1/outputs.pb", metadata=metadata)))

    got = v2("get", get(key)).output
    assert got.WhichOneof("output") == "output_uri"
    assert got.output_uri == "s3://bucket/run1/outputs.pb"
    assert got.metadata.source_identifier == source
    assert dict(got.metadata.key_map.values) == {"exec-name": "run1"}
    assert got.metadata.created_at.ToDatetime(tzinfo=UTC) == created
    updated = got.metadata.last_updated_at.ToDatetime(tzinfo=UTC)
    assert before - timedelta(seconds=1) <= updated <= datetime.now(UTC) + timedelta(seconds=1)


def test_put_get_round_trip_with_literals(v2: Remote, key: str) -> None:
    literals = int_literals(o0=144, o1=-1)
    v2("put", put(key, output(literals=literals)))
    got = v2("get", get(key)).output
    assert got.WhichOneof("output") == "output_literals"
    assert got.output_literals == literals
    # No created_at in the request: the server stamps it.
    assert got.metadata.created_at.ToDatetime(tzinfo=UTC) > datetime(2020, 1, 1, tzinfo=UTC)


def test_second_put_is_already_exists(v2: Remote, key: str) -> None:
    v2("put", put(key, output(uri="s3://b/first")))
    expect_error("ALREADY_EXISTS", lambda: v2("put", put(key, output(uri="s3://b/second"))))
    assert v2("get", get(key)).output.output_uri == "s3://b/first"


def test_overwrite_replaces_and_keeps_created_at(v2: Remote, key: str) -> None:
    v2("put", put(key, output(uri="s3://b/first")))
    first = v2("get", get(key)).output.metadata
    v2("put", put(key, output(literals=int_literals(x=2)), overwrite=True))
    got = v2("get", get(key)).output
    assert got.output_literals == int_literals(x=2)
    assert got.metadata.created_at == first.created_at
    assert got.metadata.last_updated_at.ToDatetime() > first.last_updated_at.ToDatetime()


def test_overwrite_of_a_missing_entry_creates_it(v2: Remote, key: str) -> None:
    v2("put", put(key, output(uri="s3://b/only"), overwrite=True))
    assert v2("get", get(key)).output.output_uri == "s3://b/only"


def test_max_age_replaces_only_a_stale_entry(clients: Clients) -> None:
    one_hour = timedelta(hours=1)
    for name, remote in clients.scoped.items():
        fresh, old = (f"max-age-{name}-{age}-{uuid.uuid4().hex}" for age in ("fresh", "old"))
        remote("put", put(fresh, output(uri="s3://b/fresh")))
        _put_aged(clients, old, timedelta(hours=2))  # last updated 2 h ago
        assert remote("get", get(old)).output.WhichOneof("output") == "output_literals"
        expect_error(
            "ALREADY_EXISTS",
            lambda r=remote, k=old: r("put", put(k, output(uri="s3://b/new"))),  # no max age
        )

        expect_error(
            "ALREADY_EXISTS",
            lambda r=remote, k=fresh: r("put", put(k, output(uri="s3://b/new"), max_age=one_hour)),
        )
        assert remote("get", get(fresh)).output.output_uri == "s3://b/fresh"
        remote("put", put(old, output(uri="s3://b/new"), max_age=one_hour))
        assert remote("get", get(old)).output.output_uri == "s3://b/new"


def _put_aged(clients: Clients, cache_key: str, age: timedelta) -> None:
    """Write an entry for ``cache_key`` in SCOPE that was last updated ``age`` ago, through
    an embedded client on the server's database whose clock runs that far behind.
    """
    past = datetime.now(UTC) - age
    key = Key(make_identifier("tests.aged"), "1.0", make_interface("x"), inputs=int_map(x=1))
    key.remember_cache_key(cache_key)
    with taskcache.open(
        f"sqlite:///{clients.database}",
        storage=str(clients.storage),
        scope=(SCOPE.org, SCOPE.project, SCOPE.domain),
        clock=lambda: past,
    ) as embedded:
        embedded.put(key, int_map(o0=1))


def test_delete_then_not_found(v2: Remote, key: str) -> None:
    v2("put", put(key, output(uri="s3://b/x")))
    v2("delete", delete(key))
    error = expect_error("NOT_FOUND", lambda: v2("get", get(key)))
    assert key in error.message
    expect_error("NOT_FOUND", lambda: v2("delete", delete(key)))


def test_delete_if_unchanged_deletes_only_the_version_seen(v2: Remote, key: str) -> None:
    v2("put", put(key, output(uri="s3://bucket/run1/outputs.pb")))
    seen = v2("get", get(key)).output
    version = EntryVersion(
        output_uri=seen.output_uri,
        last_updated_at=seen.metadata.last_updated_at.ToDatetime(tzinfo=UTC),
    )
    for other in (
        EntryVersion(version.output_uri, version.last_updated_at - timedelta(microseconds=1)),
        EntryVersion("s3://bucket/run2/outputs.pb", version.last_updated_at),
    ):
        condition = {IF_UNCHANGED_HEADER: other.header_value()}
        expect_error("FAILED_PRECONDITION", lambda c=condition: v2("delete", delete(key), c))
        assert v2("get", get(key)).output == seen  # a mismatch deletes nothing

    v2("delete", delete(key), {IF_UNCHANGED_HEADER: version.header_value()})
    expect_error("NOT_FOUND", lambda: v2("get", get(key)))
    gone = {IF_UNCHANGED_HEADER: version.header_value()}
    expect_error("FAILED_PRECONDITION", lambda: v2("delete", delete(key), gone))


@pytest.mark.parametrize(
    "value", ["", "garbage", "12;", ";s3://b/o", "-5;s3://b/o", "9" * 30 + ";x"]
)
def test_malformed_delete_condition_is_invalid_argument(v2: Remote, key: str, value: str) -> None:
    v2("put", put(key, output(uri="s3://bucket/outputs.pb")))
    error = expect_error(
        "INVALID_ARGUMENT", lambda: v2("delete", delete(key), {IF_UNCHANGED_HEADER: value})
    )
    assert IF_UNCHANGED_HEADER in error.message
    v2("get", get(key))  # still there


def test_get_of_a_missing_key_is_not_found(v2: Remote, key: str) -> None:
    expect_error("NOT_FOUND", lambda: v2("get", get(key)))


def test_reservation_flow(v2: Remote, key: str) -> None:
    first = v2("get_or_extend_reservation", reserve(key, "worker-a")).reservation
    assert (first.key, first.owner_id) == (key, "worker-a")
    assert first.heartbeat_interval.ToTimedelta() == timedelta(seconds=2)

    contended = v2("get_or_extend_reservation", reserve(key, "worker-b")).reservation
    assert (contended.key, contended.owner_id) == (key, "worker-a")
    assert contended.expires_at == first.expires_at

    extended = v2("get_or_extend_reservation", reserve(key, "worker-a")).reservation
    assert extended.owner_id == "worker-a"
    assert extended.expires_at.ToDatetime() > first.expires_at.ToDatetime()

    # Releasing someone else's reservation is a no-op.
    v2("release_reservation", release(key, "worker-b"))
    assert v2("get_or_extend_reservation", reserve(key, "worker-b")).reservation.owner_id == (
        "worker-a"
    )

    v2("release_reservation", release(key, "worker-a"))
    taken = v2("get_or_extend_reservation", reserve(key, "worker-b")).reservation
    assert taken.owner_id == "worker-b"
    v2("release_reservation", release(key, "worker-b"))
    # Releasing what is not held is fine too.
    v2("release_reservation", release(key, "worker-b"))


def test_reservation_heartbeat_is_clamped_to_the_server_maximum(v2: Remote, key: str) -> None:
    before = datetime.now(UTC)
    granted = v2(
        "get_or_extend_reservation", reserve(key, "worker-a", heartbeat=timedelta(minutes=5))
    ).reservation
    assert granted.heartbeat_interval.ToTimedelta() == MAX_HEARTBEAT
    expires = granted.expires_at.ToDatetime(tzinfo=UTC)
    expected = before + MAX_HEARTBEAT * GRACE_MULTIPLIER
    assert expected - timedelta(seconds=1) <= expires <= expected + timedelta(seconds=2)
    # A zero (absent) heartbeat gets the maximum too.
    other = f"{key}-zero"
    zero = v2("get_or_extend_reservation", reserve(other, "w", heartbeat=timedelta(0)))
    assert zero.reservation.heartbeat_interval.ToTimedelta() == MAX_HEARTBEAT


@pytest.mark.parametrize(
    ("request_factory", "field"),
    [
        (lambda k: get(k, identifier=None), "identifier"),
        (lambda k: put(k, output(uri="s3://b/x"), identifier=None), "identifier"),
        (lambda k: delete(k, identifier=None), "identifier"),
        (lambda k: reserve(k, "w", identifier=None), "identifier"),
        (lambda k: release(k, "w", identifier=None), "identifier"),
        (
            lambda k: get(k, v2_pb2.Identifier(org="acme", domain="development")),
            "identifier.project",
        ),
        (lambda k: get(k, v2_pb2.Identifier(project="p", domain="d")), "identifier.org"),
        (
            lambda k: put(
                k, output(uri="s3://b/x"), identifier=v2_pb2.Identifier(org="o", project="p")
            ),
            "identifier.domain",
        ),
        (lambda k: get(""), "key"),
        (lambda k: put("", output(uri="s3://b/x")), "key"),
        (lambda k: get("k" * 1025), "key"),
        (lambda k: reserve(k, ""), "owner_id"),
        (lambda k: release(k, ""), "owner_id"),
        (lambda k: reserve("", "w"), "key"),
        (lambda k: put(k, None), "output"),
        (lambda k: put(k, output(uri="")), "output"),
    ],
)
def test_invalid_arguments_name_the_field(
    v2: Remote, key: str, request_factory: Callable[[str], Any], field: str
) -> None:
    method = {
        v2_pb2.GetCacheRequest: "get",
        v2_pb2.PutCacheRequest: "put",
        v2_pb2.DeleteCacheRequest: "delete",
        v2_pb2.GetOrExtendReservationRequest: "get_or_extend_reservation",
        v2_pb2.ReleaseReservationRequest: "release_reservation",
    }
    message = request_factory(key)
    error = expect_error("INVALID_ARGUMENT", lambda: v2(method[type(message)], message))
    assert error.message.startswith(f"{field}"), error.message


def test_scopes_are_isolated(v2: Remote, key: str) -> None:
    other_project = v2_pb2.Identifier(org="acme", project="boats", domain="development")
    other_org = v2_pb2.Identifier(org="globex", project="flights", domain="development")
    other_domain = v2_pb2.Identifier(org="acme", project="flights", domain="production")
    v2("put", put(key, output(uri="s3://b/acme")))
    for identifier in (other_project, other_org, other_domain):
        expect_error("NOT_FOUND", lambda i=identifier: v2("get", get(key, i)))
    # The same key elsewhere is a different entry: no conflict, separate values.
    v2("put", put(key, output(uri="s3://b/boats"), identifier=other_project))
    assert v2("get", get(key, other_project)).output.output_uri == "s3://b/boats"
    assert v2("get", get(key)).output.output_uri == "s3://b/acme"
    # Reservations are scoped too.
    v2("get_or_extend_reservation", reserve(key, "a"))
    assert (
        v2(
            "get_or_extend_reservation", reserve(key, "b", identifier=other_org)
        ).reservation.owner_id
        == "b"
    )


def test_delete_blob_deletes_only_under_the_storage_root(
    v2: Remote, clients: Clients, key: str, tmp_path: Path
) -> None:
    inside = blob(clients.storage / key / "outputs.pb")
    outside = blob(tmp_path / "elsewhere" / "outputs.pb")
    # Normalises to outside the root: must not count as inside.
    sneaky_target = blob(clients.storage.parent / f"sneaky-{key}" / "outputs.pb")
    sneaky = f"{clients.storage}/../sneaky-{key}/outputs.pb"

    v2("put", put(key, output(uri=str(inside))))
    v2("put", put(key, output(uri=f"file://{outside}"), overwrite=True, delete_blob=True))
    assert not inside.exists()
    v2("put", put(key, output(uri=sneaky), overwrite=True, delete_blob=True))
    assert outside.exists()
    v2("put", put(key, output(uri="s3://b/final"), overwrite=True, delete_blob=True))
    assert sneaky_target.exists()

    # Without delete_blob an owned blob stays; re-putting the same URI never deletes it.
    kept = blob(clients.storage / f"{key}-kept" / "outputs.pb")
    v2("put", put(key, output(uri=str(kept)), overwrite=True))
    v2("put", put(key, output(uri="s3://b/other"), overwrite=True))
    assert kept.exists()
    v2("put", put(key, output(uri=str(kept)), overwrite=True))
    v2("put", put(key, output(uri=str(kept)), overwrite=True, delete_blob=True))
    assert kept.exists()


def test_messages_over_the_size_limit_are_refused(v2: Remote, key: str) -> None:
    # Random hex: gzip (the Connect client's default) cannot shrink it under the limit.
    payload = os.urandom(MAX_MESSAGE_BYTES * 3 // 2).hex()
    big = literals_pb2.LiteralMap(
        literals={
            "x": literals_pb2.Literal(
                scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(string_value=payload))
            )
        }
    )
    expect_error("RESOURCE_EXHAUSTED", lambda: v2("put", put(key, output(literals=big))))
    # The server is fine afterwards.
    v2("put", put(key, output(uri="s3://b/small")))


def test_internal_errors_reach_clients_as_a_generic_message(
    v2: Remote, clients: Clients, key: str
) -> None:
    v2("put", put(key, output(literals=int_literals(x=1))))
    # Corrupt the stored outputs behind the server's back: decoding them must fail inside.
    with sqlite3.connect(clients.database) as db:
        changed = db.execute(
            "UPDATE cache_entries SET output_literals = x'ff' WHERE key = ?", (key,)
        ).rowcount
    assert changed == 1
    error = expect_error("INTERNAL", lambda: v2("get", get(key)))
    assert error.message == "internal server error"
    log = clients.server.log_text()
    assert "Traceback" in log
    assert "cannot be decoded" in log


@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_accepted_connections_have_tcp_nodelay(clients: Clients, key: str, transport: str) -> None:
    # Without TCP_NODELAY on accepted connections each small response waits ~40 ms for a
    # delayed ACK (Nagle), which made sequential calls ~50x slower. Checked on the server's
    # own sockets rather than by timing calls.
    remote = clients.scoped[transport]
    remote("put", put(key, output(uri="s3://b/fast")))
    remote("get", get(key))  # the client's connection is open and was used
    server = clients.server
    port = server.port if transport == "connect" else server.grpc_port
    accepted = established_fds(server.pid, port)
    assert accepted, f"no established {transport} connection in the server"
    assert all(tcp_nodelay(server.pid, fd) for fd in accepted)


# --- unscoped flyteidl2 service and Flyte 1 ------------------------------------------------


def test_unscoped_service_round_trip_and_isolation_from_scoped(
    clients: Clients, transport: str, key: str
) -> None:
    unscoped = clients.unscoped[transport]
    unscoped("put", base_pb2.PutCacheRequest(key=key, output=output(literals=int_literals(a=1))))
    got = unscoped("get", base_pb2.GetCacheRequest(key=key)).output
    assert got.output_literals == int_literals(a=1)
    expect_error(
        "ALREADY_EXISTS",
        lambda: unscoped("put", base_pb2.PutCacheRequest(key=key, output=output(uri="s3://b/x"))),
    )
    # Scoped and unscoped entries under the same key are separate.
    scoped = clients.scoped[transport]
    expect_error("NOT_FOUND", lambda: scoped("get", get(key)))
    scoped("put", put(key, output(uri="s3://b/scoped")))
    assert unscoped("get", base_pb2.GetCacheRequest(key=key)).output.output_literals == (
        int_literals(a=1)
    )

    reservation = unscoped(
        "get_or_extend_reservation",
        base_pb2.GetOrExtendReservationRequest(key=key, owner_id="u"),
    ).reservation
    assert reservation.owner_id == "u"
    # The scoped reservation on the same key is free.
    assert scoped("get_or_extend_reservation", reserve(key, "s")).reservation.owner_id == "s"
    unscoped("release_reservation", base_pb2.ReleaseReservationRequest(key=key, owner_id="u"))
    unscoped("delete", base_pb2.DeleteCacheRequest(key=key))
    expect_error("NOT_FOUND", lambda: unscoped("get", base_pb2.GetCacheRequest(key=key)))
    assert scoped("get", get(key)).output.output_uri == "s3://b/scoped"


def test_unscoped_service_rejects_an_empty_key(clients: Clients, transport: str) -> None:
    error = expect_error(
        "INVALID_ARGUMENT",
        lambda: clients.unscoped[transport]("get", base_pb2.GetCacheRequest(key="")),
    )
    assert error.message.startswith("key")


def flyte1_literals(value: int) -> literals_pb2_v1.LiteralMap:
    return literals_pb2_v1.LiteralMap(
        literals={
            "o0": literals_pb2_v1.Literal(
                scalar=literals_pb2_v1.Scalar(primitive=literals_pb2_v1.Primitive(integer=value))
            )
        }
    )


def test_flyte1_put_get_overwrite_and_reservation(clients: Clients, key: str) -> None:
    flyte1 = clients.flyte1
    cached = flyte1_pb2.CachedOutput(output_literals=flyte1_literals(1))
    flyte1("put", flyte1_pb2.PutCacheRequest(key=key, output=cached))
    got = flyte1("get", flyte1_pb2.GetCacheRequest(key=key))
    assert isinstance(got, flyte1_pb2.GetCacheResponse)
    assert got.output.output_literals == flyte1_literals(1)
    assert got.output.metadata.HasField("created_at")

    expect_error(
        "ALREADY_EXISTS",
        lambda: flyte1("put", flyte1_pb2.PutCacheRequest(key=key, output=cached)),
    )
    replacement = flyte1_pb2.CachedOutput(output_uri="s3://b/flyte1")
    flyte1("put", flyte1_pb2.PutCacheRequest(key=key, output=replacement, overwrite=True))
    assert flyte1("get", flyte1_pb2.GetCacheRequest(key=key)).output.output_uri == "s3://b/flyte1"

    # Flyte 1 and the unscoped flyteidl2 service share the empty scope.
    unscoped = clients.unscoped["grpc"]
    assert unscoped("get", base_pb2.GetCacheRequest(key=key)).output.output_uri == "s3://b/flyte1"
    # ... and neither sees scoped entries.
    expect_error("NOT_FOUND", lambda: clients.scoped["grpc"]("get", get(key)))

    request = flyte1_pb2.GetOrExtendReservationRequest(key=key, owner_id="f1")
    request.heartbeat_interval.FromTimedelta(timedelta(seconds=3))
    reservation = flyte1("get_or_extend_reservation", request).reservation
    assert (reservation.key, reservation.owner_id) == (key, "f1")
    assert reservation.heartbeat_interval.ToTimedelta() == timedelta(seconds=3)
    other = flyte1_pb2.GetOrExtendReservationRequest(key=key, owner_id="f2")
    assert flyte1("get_or_extend_reservation", other).reservation.owner_id == "f1"
    flyte1("release_reservation", flyte1_pb2.ReleaseReservationRequest(key=key, owner_id="f1"))
    assert flyte1("get_or_extend_reservation", other).reservation.owner_id == "f2"

    flyte1("delete", flyte1_pb2.DeleteCacheRequest(key=key))
    expect_error("NOT_FOUND", lambda: flyte1("get", flyte1_pb2.GetCacheRequest(key=key)))
    error = expect_error("INVALID_ARGUMENT", lambda: flyte1("get", flyte1_pb2.GetCacheRequest()))
    assert error.message.startswith("key")


# --- operations ----------------------------------------------------------------------------


def test_grpc_health_and_reflection(clients: Clients) -> None:
    health = health_pb2_grpc.HealthStub(clients.channel)
    for service in ("", SCOPED, UNSCOPED, FLYTE1):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service

    reflection = reflection_pb2_grpc.ServerReflectionStub(clients.channel)
    replies = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {service.name for reply in replies for service in reply.list_services_response.service}
    assert {SCOPED, UNSCOPED, FLYTE1, "grpc.health.v1.Health"} <= names


def test_healthz_and_metrics(clients: Clients, key: str) -> None:
    scoped = clients.scoped["connect"]
    scoped("put", put(key, output(uri="s3://b/m")))
    scoped("get", get(key))
    expect_error("NOT_FOUND", lambda: scoped("get", get(f"{key}-missing")))
    expect_error("ALREADY_EXISTS", lambda: scoped("put", put(key, output(uri="s3://b/m"))))
    clients.scoped["grpc"]("get", get(key))

    base = clients.server.http_url
    healthz = http_get(f"{base}/healthz")
    assert healthz.status == 200
    assert json.loads(healthz.body) == {"status": "SERVING"}
    assert http_get(f"{base}/nowhere").status == 404
    metrics = http_get(f"{base}/metrics")
    assert metrics.status == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for expected in (
        f'taskcache_requests_total{{code="OK",method="Get",service="{SCOPED}",transport="connect"}}',
        f'taskcache_requests_total{{code="NOT_FOUND",method="Get",service="{SCOPED}",transport="connect"}}',
        f'taskcache_requests_total{{code="OK",method="Get",service="{SCOPED}",transport="grpc"}}',
        "taskcache_request_duration_seconds_bucket{",
        "taskcache_cache_hits_total ",
        "taskcache_cache_misses_total ",
        "taskcache_puts_total ",
        "taskcache_put_conflicts_total ",
        'taskcache_reservations_total{outcome="granted"}',
        "taskcache_database_up 1.0",
    ):
        assert expected in text, expected


# --- defaults and shutdown (their own servers) --------------------------------------------


def test_default_database_is_the_embedded_catalog_in_taskcache_home(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, grpc.insecure_channel(server.grpc_target) as channel:
        v2 = Remote("grpc", scoped_grpc.CacheServiceStub(channel))
        # The default database implies <home>/blobs as the storage root.
        owned = blob(server.home / "blobs" / "run" / "outputs.pb")
        v2("put", put("k", output(uri=str(owned))))
        v2("put", put("k", output(uri="s3://b/y"), overwrite=True, delete_blob=True))
        assert not owned.exists()
    assert (server.home / "catalog.db").is_file()
    assert server.returncode == 0


def test_without_a_storage_root_no_blob_is_deleted_and_sigterm_exits_zero(tmp_path: Path) -> None:
    folder = tmp_path / "catalog"
    server = ServerProcess(
        home=tmp_path / "home", log_path=tmp_path / "server.log", database=str(folder)
    )
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        v2 = Remote("grpc", scoped_grpc.CacheServiceStub(channel))
        # Where the embedded client would keep blobs; an explicit database implies no root.
        kept = blob(folder / "blobs" / "run" / "outputs.pb")
        v2("put", put("k", output(uri=str(kept))))
        v2("put", put("k", output(uri="s3://b/y"), overwrite=True, delete_blob=True))
        assert kept.exists()
    assert server.returncode == 0
    assert (folder / "catalog.db").is_file()
    log = server.log_text()
    assert "taskcache serving Connect on http://127.0.0.1:" in log
    assert "storage none" in log


# --- settings: flags > TASKCACHE_* > config file > defaults -------------------------------


def test_settings_defaults_follow_taskcache_home(tmp_path: Path) -> None:
    settings = load_settings({}, environ={"TASKCACHE_HOME": str(tmp_path)})
    assert settings == Settings(database=str(tmp_path), storage=str(tmp_path / "blobs"))
    assert (settings.host, settings.port, settings.grpc_port) == ("127.0.0.1", 8094, 8095)
    assert settings.max_message_bytes == 16 * 1024 * 1024
    # Any explicit database drops the implied blob root; an explicit root stays.
    assert load_settings({"database": str(tmp_path / "x")}, environ={}).storage is None
    explicit = load_settings({"database": "memory://", "storage": "/srv/blobs"}, environ={})
    assert explicit.storage == "/srv/blobs"
    # An empty storage disables the default root.
    assert load_settings({"storage": ""}, environ={"TASKCACHE_HOME": str(tmp_path)}).storage is None


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "taskcache.toml"
    config.write_text(
        'port = 1001\ngrpc-port = 1002\nhost = "0.0.0.0"\nmax_reservation_heartbeat = "500ms"\n'
    )
    environ = {"TASKCACHE_PORT": "2001", "TASKCACHE_GRPC_PORT": "2002", "TASKCACHE_CONFIG": "x"}
    settings = load_settings({"port": 3001, "host": None}, environ=environ, config_file=config)
    assert (settings.port, settings.grpc_port, settings.host) == (3001, 2002, "0.0.0.0")
    assert settings.max_reservation_heartbeat == 0.5
    # TASKCACHE_CONFIG names the file when no config_file is given.
    from_env = load_settings({}, environ={"TASKCACHE_CONFIG": str(config)})
    assert from_env.grpc_port == 1002


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"port": 70000}, "port"),
        ({"grpc_port": "x"}, "grpc_port"),
        ({"max_reservation_heartbeat": "-1"}, "max_reservation_heartbeat"),
        ({"max_reservation_heartbeat": "soon"}, "max_reservation_heartbeat"),
        ({"heartbeat_grace_multiplier": 0}, "heartbeat_grace_multiplier"),
        ({"pool_size": 0}, "pool_size"),
        ({"max_message_bytes": 0}, "max_message_bytes"),
        ({"log_level": "chatty"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"host": " "}, "host"),
    ],
)
def test_settings_reject_bad_values_naming_the_option(flags: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        load_settings(flags, environ={})
    assert caught.value.field == field


def test_settings_reject_an_unknown_config_key(tmp_path: Path) -> None:
    config = tmp_path / "taskcache.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(InvalidArgumentError, match="unknown option 'prot'") as caught:
        load_settings({}, environ={}, config_file=config)
    assert caught.value.field == "config"


def test_serve_reads_its_config_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    # The port is overridden by the helper's flags; the heartbeat by the environment.
    config.write_text(
        'port = 1\nlog_format = "json"\nmax_reservation_heartbeat = "4s"\n'
        "heartbeat_grace_multiplier = 2\n"
    )
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        database="memory://",
        extra_args=["--config", str(config)],
        extra_env={"TASKCACHE_MAX_RESERVATION_HEARTBEAT": "3"},
    )
    with server, grpc.insecure_channel(server.grpc_target) as channel:
        v2 = Remote("grpc", scoped_grpc.CacheServiceStub(channel))
        before = datetime.now(UTC)
        granted = v2("get_or_extend_reservation", reserve("k", "w", timedelta(minutes=1)))
        assert granted.reservation.heartbeat_interval.ToTimedelta() == timedelta(seconds=3)
        expires = granted.reservation.expires_at.ToDatetime(tzinfo=UTC)
        assert before + timedelta(seconds=5) <= expires <= before + timedelta(seconds=8)
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]
    assert any(line["message"].startswith("taskcache serving") for line in lines)
