"""Malformed requests are the caller's error: fuzzing a real ``taskcache serve``.

Every RPC of every service is sent random bytes, truncations, bit flips and splices of valid
encoded requests, wrong JSON types, extreme durations and timestamps, deep nesting, invalid
UTF-8, oversized bodies, wrong content types and odd headers, over Connect and over gRPC. No
answer may be an HTTP 5xx, INTERNAL or UNKNOWN, or carry a Python exception class name or a
traceback; afterwards the server still serves valid requests and its log holds no traceback.

Hypothesis runs derandomized with no example database, so a run sends the same requests every
time. Every answer is counted by (transport, code); the histogram is printed at the end of the
module.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
import httpx
import pytest
from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl.datacatalog import datacatalog_pb2 as dc
from flyteidl2.cacheservice import cacheservice_pb2 as base_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2_pb2
from flyteidl2.core import literals_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_process import ServerProcess, running_server
from taskcache.rpcs import (
    ADD_TAG,
    CREATE_ARTIFACT,
    CREATE_DATASET,
    DATACATALOG_RPCS,
    DATACATALOG_SERVICE,
    FLYTE1_SERVICE,
    GET,
    GET_OR_EXTEND_RESERVATION,
    PUT,
    RPCS,
    SCOPED_SERVICE,
    SERVICES,
    UNSCOPED_SERVICE,
    Rpc,
    Service,
)

MAX_MESSAGE_BYTES: Final = 64 * 1024
FUZZ: Final = settings(
    max_examples=110,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEY: Final = "fuzz-key"
CONNECT_TARGETS: Final = [(s, r) for s in (SCOPED_SERVICE, UNSCOPED_SERVICE) for r in RPCS]
GRPC_TARGETS: Final = [(s, r) for s in SERVICES for r in RPCS]
# What a caller may be told about a malformed request; anything else is a server error.
CLIENT_CODES: Final = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "UNIMPLEMENTED",
        "DEADLINE_EXCEEDED",
        "HTTP_404",
        "HTTP_405",
        "HTTP_415",
    }
)
_LEAK: Final = re.compile(r"Traceback|\b[A-Z][A-Za-z]*(?:Error|Exception)\b")

OUTCOMES: Counter[tuple[str, str]] = Counter()


# --- valid requests -------------------------------------------------------------------------


def base_request(rpc: Rpc, *, overwrite: bool = True) -> Message:
    """A valid flyteidl2.cacheservice request for ``rpc``."""
    requests: dict[str, Message] = {
        "Get": base_pb2.GetCacheRequest(key=KEY),
        "Put": base_pb2.PutCacheRequest(
            key=KEY,
            output=base_pb2.CachedOutput(
                output_uri="s3://bucket/fuzz/outputs.pb",
                metadata=base_pb2.Metadata(key_map=base_pb2.KeyMapMetadata(values={"a": "b"})),
            ),
            overwrite=base_pb2.OverwriteOutput(overwrite=overwrite),
        ),
        "Delete": base_pb2.DeleteCacheRequest(key=KEY),
        "GetOrExtendReservation": base_pb2.GetOrExtendReservationRequest(
            key=KEY, owner_id="fuzzer"
        ),
        "ReleaseReservation": base_pb2.ReleaseReservationRequest(key=KEY, owner_id="fuzzer"),
    }
    request = requests[rpc.name]
    if rpc == PUT:
        request.output.metadata.created_at.seconds = 1_700_000_000  # type: ignore[attr-defined]
    if rpc == GET_OR_EXTEND_RESERVATION:
        request.heartbeat_interval.seconds = 5  # type: ignore[attr-defined]
    return request


def valid_request(service: Service, rpc: Rpc, base: Message | None = None) -> Message:
    """``base`` (default :func:`base_request`) as ``service``'s request for ``rpc``."""
    base = base if base is not None else base_request(rpc)
    request_type = service.request_type(rpc)
    if service == SCOPED_SERVICE:
        return request_type(
            base_request=base, identifier=v2_pb2.Identifier(org="o", project="p", domain="d")
        )
    if service == FLYTE1_SERVICE and rpc == PUT:
        put: Any = base
        return flyte1_pb2.PutCacheRequest(
            key=put.key,
            output=flyte1_pb2.CachedOutput.FromString(put.output.SerializeToString()),
            overwrite=put.overwrite.overwrite,
        )
    return request_type.FromString(base.SerializeToString())


def path(service: Service, rpc: Rpc) -> str:
    return f"/{service.name}/{rpc.name}"


# --- senders: every answer is checked and counted ---------------------------------------------


@dataclass(frozen=True)
class Answer:
    code: str
    message: str


def check(transport: str, answer: Answer) -> Answer:
    """Count ``answer`` and fail unless it is a client-side outcome with a clean message."""
    OUTCOMES[(transport, answer.code)] += 1
    assert answer.code in CLIENT_CODES, f"{transport} answered {answer.code}: {answer.message}"
    assert not _LEAK.search(answer.message), f"{transport} leaked internals: {answer.message}"
    return answer


class Connect:
    """Sends raw HTTP requests to the Connect listener."""

    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=20.0)

    def post(
        self,
        url_path: str,
        body: bytes,
        content_type: str = "application/proto",
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        response = self.client.post(
            url_path, content=body, headers={"content-type": content_type, **(headers or {})}
        )
        return check("connect", _connect_answer(response))

    def get(self, url_path: str, params: Mapping[str, str]) -> Answer:
        return check("connect", _connect_answer(self.client.get(url_path, params=params)))


def _connect_answer(response: httpx.Response) -> Answer:
    assert response.status_code < 500, f"HTTP {response.status_code}: {response.text[:500]}"
    if response.status_code == 200:
        return Answer("OK", "")
    try:
        error = response.json()
    except ValueError:
        return Answer(f"HTTP_{response.status_code}", response.text)
    return Answer(str(error.get("code", "")).upper(), str(error.get("message", "")))


class Grpc:
    """Sends raw bytes to the gRPC listener's methods."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)]
        )

    def call(self, url_path: str, body: bytes) -> Answer:
        method = self.channel.unary_unary(url_path)  # no serializers: raw bytes both ways
        try:
            method(body, timeout=20.0)
        except grpc.RpcError as error:
            return check("grpc", Answer(error.code().name, error.details() or ""))
        return check("grpc", Answer("OK", ""))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("malformed-server")
    with running_server(folder, extra_args=["--max-message-bytes", str(MAX_MESSAGE_BYTES)]) as s:
        yield s
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nmalformed requests sent: {sum(OUTCOMES.values())}")
            for (transport, code), count in sorted(OUTCOMES.items()):
                reporter.write_line(f"  {transport:8} {code:22} {count}")


@pytest.fixture(scope="module")
def connect(server: ServerProcess) -> Iterator[Connect]:
    sender = Connect(server.http_url)
    yield sender
    sender.client.close()


@pytest.fixture(scope="module")
def grpc_sender(server: ServerProcess) -> Iterator[Grpc]:
    sender = Grpc(server.grpc_target)
    yield sender
    sender.channel.close()


# --- strategies --------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, template: bytes) -> bytes:
    """Random bytes, or ``template`` truncated, bit-flipped or with bytes spliced in."""
    kind = draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if kind == "random" or not template:
        return draw(st.binary(max_size=96))
    if kind == "truncate":
        return template[: draw(st.integers(0, len(template) - 1))]
    data = bytearray(template)
    if kind == "flip":
        for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=4)):
            data[bit // 8] ^= 1 << (bit % 8)
        return bytes(data)
    at = draw(st.integers(0, len(data)))
    return bytes(data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:])


@st.composite
def mutated_requests(draw: st.DrawFn, targets: list[tuple[Service, Rpc]]) -> tuple[str, bytes]:
    """The path of one of ``targets`` and a :func:`mutated` encoding of its valid request."""
    service, rpc = draw(st.sampled_from(targets))
    return path(service, rpc), draw(mutated(valid_request(service, rpc).SerializeToString()))


ODD_HEADERS: Final = st.sampled_from(
    [
        {},
        {"content-encoding": "gzip"},
        {"content-encoding": "br"},
        {"connect-protocol-version": "7"},
        {"connect-timeout-ms": "soon"},
        {"connect-timeout-ms": "99999999999999999999"},
        {"taskcache-if-unchanged": "12;s3%3A%2F%2Fx"},
        {"taskcache-if-unchanged": "99999999999999999999999;x"},
    ]
)

JSON_VALUES: Final = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)


def _json_paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for name, inner in value.items():
            paths += _json_paths(inner, (*prefix, name))
    return paths


@st.composite
def wrong_json(draw: st.DrawFn, template: dict[str, Any]) -> bytes:
    """Any JSON value, or ``template`` with one field's value replaced by any JSON value."""
    if draw(st.booleans()):
        return json.dumps(draw(JSON_VALUES)).encode()
    document = json.loads(json.dumps(template))
    field = draw(st.sampled_from(_json_paths(document)))
    holder = document
    for name in field[:-1]:
        holder = holder[name]
    holder[field[-1]] = draw(JSON_VALUES)
    return json.dumps(document).encode()


# Boundaries of Duration and Timestamp, int64 extremes, and values whose arithmetic overflows.
SECONDS: Final = st.one_of(
    st.sampled_from(
        [
            0,
            -1,
            2**63 - 1,
            -(2**63),
            315_576_000_000,
            315_576_000_001,
            -315_576_000_001,
            10**11,
            253_402_300_799,
            253_402_300_800,
            -62_135_596_800,
            -62_135_596_801,
        ]
    ),
    st.integers(-(2**63), 2**63 - 1),
)
NANOS: Final = st.one_of(
    st.sampled_from([0, -1, 999_999_999, 1_000_000_000, -(2**31), 2**31 - 1]),
    st.integers(-(2**31), 2**31 - 1),
)


@st.composite
def extreme_times(draw: st.DrawFn) -> tuple[Rpc, Message]:
    """A valid base Put or GetOrExtendReservation with one duration or timestamp extreme."""
    field = draw(
        st.sampled_from(
            ["heartbeat_interval", "overwrite.max_age", "created_at", "last_updated_at"]
        )
    )
    seconds, nanos = draw(SECONDS), draw(NANOS)
    if field == "heartbeat_interval":
        reservation: Any = base_request(GET_OR_EXTEND_RESERVATION)
        reservation.heartbeat_interval.seconds = seconds
        reservation.heartbeat_interval.nanos = nanos
        return GET_OR_EXTEND_RESERVATION, reservation
    put: Any = base_request(PUT, overwrite=False)
    if field == "overwrite.max_age":
        put.overwrite.max_age.seconds = seconds
        put.overwrite.max_age.nanos = nanos
    else:
        stamp = getattr(put.output.metadata, field)
        stamp.seconds = seconds
        stamp.nanos = nanos
    return PUT, put


def nested_put(depth: int) -> bytes:
    """A scoped Put whose output literal map nests ``depth`` maps deep, encoded by hand (the
    protobuf runtime refuses to build it).
    """

    def varint(value: int) -> bytes:
        out = bytearray()
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    literal = literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=1))
    ).SerializeToString()
    for _ in range(depth):
        literal = field(3, field(1, field(1, b"a") + field(2, literal)))  # Literal.map
    literal_map = field(1, field(1, b"x") + field(2, literal))
    put = base_pb2.PutCacheRequest(
        key=KEY, overwrite=base_pb2.OverwriteOutput(overwrite=True)
    ).SerializeToString() + field(
        2, field(1, literal_map)
    )  # PutCacheRequest.output.output_literals
    identifier = v2_pb2.Identifier(org="o", project="p", domain="d").SerializeToString()
    return field(1, put) + field(2, identifier)


def nested_json(depth: int) -> bytes:
    literal = '{"scalar":{"primitive":{"integer":"1"}}}'
    for _ in range(depth):
        literal = '{"map":{"literals":{"a":' + literal + "}}}"
    return (
        '{"identifier":{"org":"o","project":"p","domain":"d"},'
        '"baseRequest":{"key":"k","overwrite":{"overwrite":true},'
        '"output":{"outputLiterals":{"literals":{"x":' + literal + "}}}}}"
    ).encode()


# --- fuzzing -----------------------------------------------------------------------------------


@FUZZ
@given(request=mutated_requests(CONNECT_TARGETS), headers=ODD_HEADERS, gzipped=st.booleans())
def test_connect_refuses_mutated_binary_bodies(
    connect: Connect, request: tuple[str, bytes], headers: dict[str, str], gzipped: bool
) -> None:
    url_path, body = request
    if headers.get("content-encoding") == "gzip" and gzipped:
        body = gzip.compress(body)  # valid gzip around a corrupt message
    connect.post(url_path, body, headers=headers)


@settings(FUZZ, max_examples=160)
@given(request=mutated_requests(GRPC_TARGETS))
def test_grpc_refuses_mutated_binary_bodies(grpc_sender: Grpc, request: tuple[str, bytes]) -> None:
    grpc_sender.call(*request)


@FUZZ
@given(data=st.data(), target=st.sampled_from(CONNECT_TARGETS))
def test_connect_refuses_wrong_json(
    connect: Connect, data: st.DataObject, target: tuple[Service, Rpc]
) -> None:
    service, rpc = target
    template = json_format.MessageToDict(valid_request(service, rpc))
    body = data.draw(wrong_json(template))
    if data.draw(st.integers(0, 9)) == 0:
        body = body.replace(b'"', b'"\xff', 1)  # not UTF-8
    connect.post(path(service, rpc), body, content_type="application/json")


@settings(FUZZ, max_examples=70)
@given(case=extreme_times(), scoped=st.booleans())
def test_extreme_durations_and_timestamps_are_refused_or_served(
    connect: Connect, grpc_sender: Grpc, case: tuple[Rpc, Message], scoped: bool
) -> None:
    rpc, base = case
    service = SCOPED_SERVICE if scoped else UNSCOPED_SERVICE
    body = valid_request(service, rpc, base).SerializeToString()
    for answer in (
        connect.post(path(service, rpc), body),
        grpc_sender.call(path(service, rpc), body),
    ):
        assert answer.code in {"OK", "INVALID_ARGUMENT", "ALREADY_EXISTS"}, answer


@settings(FUZZ, max_examples=40)
@given(
    target=st.sampled_from(CONNECT_TARGETS),
    content_type=st.one_of(
        st.sampled_from(
            [
                "application/grpc",
                "application/grpc+proto",
                "application/grpc-web+proto",
                "application/connect+proto",
                "application/connect+json",
                "text/plain",
                "",
                "application/proto; charset=utf-8",
            ]
        ),
        # A header value may not start or end with white space (HTTP rejects it client-side).
        st.text(max_size=20).filter(
            lambda text: text.isascii() and text.isprintable() and text == text.strip()
        ),
    ),
)
def test_connect_refuses_wrong_content_types(
    connect: Connect, target: tuple[Service, Rpc], content_type: str
) -> None:
    service, rpc = target
    connect.post(path(service, rpc), valid_request(service, rpc).SerializeToString(), content_type)


@settings(FUZZ, max_examples=25)
@given(
    target=st.sampled_from(CONNECT_TARGETS),
    params=st.dictionaries(
        st.sampled_from(["message", "encoding", "base64", "compression", "connect"]),
        st.text(max_size=24),
        max_size=5,
    ),
)
def test_connect_refuses_odd_get_requests(
    connect: Connect, target: tuple[Service, Rpc], params: dict[str, str]
) -> None:
    service, rpc = target
    connect.get(path(service, rpc), params)


# --- the reproductions of the hardening issue ------------------------------------------------


SCOPED_GET: Final = path(SCOPED_SERVICE, GET)
SCOPED_PUT: Final = path(SCOPED_SERVICE, PUT)


def test_the_reported_bodies_are_invalid_arguments(connect: Connect, grpc_sender: Grpc) -> None:
    assert connect.post(SCOPED_GET, b"\xd6").code == "INVALID_ARGUMENT"
    assert grpc_sender.call(SCOPED_GET, b"\xd6").code == "INVALID_ARGUMENT"
    assert connect.post(SCOPED_PUT, b"5", "application/json").code == "INVALID_ARGUMENT"


def test_the_reported_times_name_their_field(connect: Connect, grpc_sender: Grpc) -> None:
    reservation: Any = base_request(GET_OR_EXTEND_RESERVATION)
    reservation.heartbeat_interval.seconds = 2**63 - 1
    created_early: Any = base_request(PUT)
    created_early.output.metadata.created_at.nanos = -1
    created_late: Any = base_request(PUT)
    created_late.output.metadata.created_at.seconds = 253_402_300_800
    cases = [
        (GET_OR_EXTEND_RESERVATION, reservation, "heartbeat_interval"),
        (PUT, created_early, "output.metadata.created_at"),
        (PUT, created_late, "output.metadata.created_at"),
    ]
    for rpc, base, field in cases:
        body = valid_request(SCOPED_SERVICE, rpc, base).SerializeToString()
        for answer in (
            connect.post(path(SCOPED_SERVICE, rpc), body),
            grpc_sender.call(path(SCOPED_SERVICE, rpc), body),
        ):
            assert answer.code == "INVALID_ARGUMENT"
            assert answer.message.startswith(f"{field}: "), answer


def test_a_max_age_reaching_before_year_one_replaces_nothing(connect: Connect) -> None:
    put: Any = base_request(PUT, overwrite=True)
    put.key = "fuzz-max-age"
    assert (
        connect.post(SCOPED_PUT, valid_request(SCOPED_SERVICE, PUT, put).SerializeToString()).code
        == "OK"
    )
    put.overwrite.overwrite = False
    put.overwrite.max_age.seconds = 10**11  # now - max_age is before year 1
    body = valid_request(SCOPED_SERVICE, PUT, put).SerializeToString()
    assert connect.post(SCOPED_PUT, body).code == "ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("uri", "why"), [("", "must not be empty"), ("s3://" + "u" * 4092, "4097")]
)
def test_output_uris_are_non_empty_and_bounded(grpc_sender: Grpc, uri: str, why: str) -> None:
    put: Any = base_request(PUT)
    put.output.output_uri = uri
    answer = grpc_sender.call(
        SCOPED_PUT, valid_request(SCOPED_SERVICE, PUT, put).SerializeToString()
    )
    assert answer.code == "INVALID_ARGUMENT"
    assert answer.message.startswith("output.output_uri: ")
    assert why in answer.message


@pytest.mark.parametrize("depth", [20, 150, 2000])
def test_deep_nesting_is_refused_on_both_transports(
    connect: Connect, grpc_sender: Grpc, depth: int
) -> None:
    binary = nested_put(depth)
    expected = "OK" if depth < 90 else "INVALID_ARGUMENT"  # protobuf's recursion limit is 100
    assert connect.post(SCOPED_PUT, binary).code == expected
    assert grpc_sender.call(SCOPED_PUT, binary).code == expected
    if len(binary) < MAX_MESSAGE_BYTES // 2:
        assert connect.post(SCOPED_PUT, nested_json(depth), "application/json").code == expected


def test_invalid_utf8_names_the_field(connect: Connect, grpc_sender: Grpc) -> None:
    body = valid_request(SCOPED_SERVICE, GET).SerializeToString().replace(b"fuzz", b"\xff\xfe")
    for answer in (connect.post(SCOPED_GET, body), grpc_sender.call(SCOPED_GET, body)):
        assert answer.code == "INVALID_ARGUMENT"
        assert answer.message.startswith("base_request.key: "), answer


def test_oversized_bodies_are_resource_exhausted(connect: Connect, grpc_sender: Grpc) -> None:
    big: Any = base_request(GET)
    big.key = "k" * (MAX_MESSAGE_BYTES + 1)
    body = valid_request(SCOPED_SERVICE, GET, big).SerializeToString()
    assert connect.post(SCOPED_GET, body).code == "RESOURCE_EXHAUSTED"
    assert grpc_sender.call(SCOPED_GET, body).code == "RESOURCE_EXHAUSTED"


def test_a_grpc_content_type_on_the_connect_port_is_unsupported_media(connect: Connect) -> None:
    answer = connect.post(SCOPED_GET, b"", "application/grpc")
    assert answer.code == "HTTP_415"


# --- Flyte 1's DataCatalog -------------------------------------------------------------------

DC_DATASET: Final = dc.DatasetID(project="p", domain="d", name="flyte_task-fuzz", version="v1")
DC_PAGE: Final = dc.PaginationOptions(limit=3, token="1", sortOrder=dc.PaginationOptions.ASCENDING)
DATACATALOG_TARGETS: Final = [(DATACATALOG_SERVICE, rpc) for rpc in DATACATALOG_RPCS]


def datacatalog_request(rpc: Rpc) -> Message:
    """A valid DataCatalog request for ``rpc`` on the fuzz dataset (created by the fixture)."""
    data = [dc.ArtifactData(name="o0", value={"scalar": {"primitive": {"integer": 1}}})]
    reservation = dc.ReservationID(dataset_id=DC_DATASET, tag_name="t")
    partition = dc.SinglePropertyFilter(
        partition_filter=dc.PartitionPropertyFilter(key_val=dc.KeyValuePair(key="k", value="v"))
    )
    requests: dict[str, Message] = {
        "CreateDataset": dc.CreateDatasetRequest(
            dataset=dc.Dataset(id=DC_DATASET, partitionKeys=["k"])
        ),
        "GetDataset": dc.GetDatasetRequest(dataset=DC_DATASET),
        "ListDatasets": dc.ListDatasetsRequest(
            filter=dc.FilterExpression(
                filters=[
                    dc.SinglePropertyFilter(dataset_filter=dc.DatasetPropertyFilter(project="p"))
                ]
            ),
            pagination=DC_PAGE,
        ),
        "CreateArtifact": dc.CreateArtifactRequest(
            artifact=dc.Artifact(
                id="a", dataset=DC_DATASET, data=data, partitions=[dc.Partition(key="k", value="v")]
            )
        ),
        "GetArtifact": dc.GetArtifactRequest(dataset=DC_DATASET, tag_name="t"),
        "AddTag": dc.AddTagRequest(tag=dc.Tag(name="t", artifact_id="a", dataset=DC_DATASET)),
        "ListArtifacts": dc.ListArtifactsRequest(
            dataset=DC_DATASET, filter=dc.FilterExpression(filters=[partition]), pagination=DC_PAGE
        ),
        "UpdateArtifact": dc.UpdateArtifactRequest(dataset=DC_DATASET, tag_name="t", data=data),
        "GetOrExtendReservation": dc.GetOrExtendReservationRequest(
            reservation_id=reservation, owner_id="fuzzer", heartbeat_interval={"seconds": 5}
        ),
        "ReleaseReservation": dc.ReleaseReservationRequest(
            reservation_id=reservation, owner_id="fuzzer"
        ),
    }
    return requests[rpc.name]


@pytest.fixture(scope="module")
def datacatalog(grpc_sender: Grpc) -> Grpc:
    """The fuzz server with the fuzz dataset, an artifact and its tag in place."""
    for rpc in (CREATE_DATASET, CREATE_ARTIFACT, ADD_TAG):
        body = datacatalog_request(rpc).SerializeToString()
        assert grpc_sender.call(path(DATACATALOG_SERVICE, rpc), body).code == "OK"
    return grpc_sender


@st.composite
def mutated_datacatalog_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """The path of a DataCatalog RPC and a :func:`mutated` encoding of its valid request."""
    service, rpc = draw(st.sampled_from(DATACATALOG_TARGETS))
    return path(service, rpc), draw(mutated(datacatalog_request(rpc).SerializeToString()))


ODD_TEXT: Final = st.sampled_from(["", " ", "\x00", "a/b", "%", "x" * 2000, "p", "d", "t", "a"])


@st.composite
def odd_datacatalog_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A DataCatalog request that decodes, with odd strings, enums and limits in its fields."""
    rpc = draw(st.sampled_from(DATACATALOG_RPCS))
    request: Any = datacatalog_request(rpc)
    dataset = dc.DatasetID(
        project=draw(ODD_TEXT), domain=draw(ODD_TEXT), name=draw(ODD_TEXT), version=draw(ODD_TEXT)
    )
    for field in ("dataset", "artifact", "tag", "reservation_id"):
        if field in request.DESCRIPTOR.fields_by_name and draw(st.booleans()):
            target = getattr(request, field)
            if field == "dataset" and rpc.name != "CreateDataset":
                target.CopyFrom(dataset)
            elif field == "reservation_id":
                target.dataset_id.CopyFrom(dataset)
                target.tag_name = draw(ODD_TEXT)
            elif field == "artifact":
                target.dataset.CopyFrom(dataset)
                target.id = draw(ODD_TEXT)
            elif field == "tag":
                target.dataset.CopyFrom(dataset)
                target.name = draw(ODD_TEXT)
    if "pagination" in request.DESCRIPTOR.fields_by_name:
        request.pagination.limit = draw(st.integers(0, 2**32 - 1))
        request.pagination.token = draw(st.sampled_from(["", " 2 ", "-1", "4294967296", "x", "0"]))
        request.pagination.sortOrder = draw(st.integers(0, 3))
        request.pagination.sortKey = draw(st.integers(0, 2))
    if "filter" in request.DESCRIPTOR.fields_by_name and draw(st.booleans()):
        single = request.filter.filters.add(operator=draw(st.integers(0, 2)))
        kind = draw(st.sampled_from(["tag", "partition", "artifact", "dataset", "none"]))
        if kind == "tag":
            single.tag_filter.tag_name = draw(ODD_TEXT)
        elif kind == "partition":
            single.partition_filter.key_val.key = draw(ODD_TEXT)
            single.partition_filter.key_val.value = draw(ODD_TEXT)
        elif kind == "artifact":
            single.artifact_filter.artifact_id = draw(ODD_TEXT)
        elif kind == "dataset":
            single.dataset_filter.name = draw(ODD_TEXT)
    if rpc.name == "GetOrExtendReservation":
        request.heartbeat_interval.seconds = draw(st.sampled_from([0, -5, 10**12, 315_576_000_001]))
    return path(DATACATALOG_SERVICE, rpc), request.SerializeToString()


@settings(FUZZ, max_examples=120)
@given(request=mutated_datacatalog_requests())
def test_datacatalog_refuses_mutated_binary_bodies(
    datacatalog: Grpc, request: tuple[str, bytes]
) -> None:
    datacatalog.call(*request)


@settings(FUZZ, max_examples=120)
@given(request=odd_datacatalog_requests())
def test_datacatalog_answers_odd_fields_with_client_codes(
    datacatalog: Grpc, request: tuple[str, bytes]
) -> None:
    datacatalog.call(*request)


# --- afterwards ------------------------------------------------------------------------------


def test_the_server_still_serves_and_logged_no_traceback(
    server: ServerProcess, connect: Connect, grpc_sender: Grpc
) -> None:
    put: Any = base_request(PUT)
    put.key = "fuzz-after"
    senders: list[tuple[Service, Callable[[str, bytes], Answer]]] = [
        (SCOPED_SERVICE, connect.post),
        (FLYTE1_SERVICE, grpc_sender.call),
    ]
    for service, sender in senders:
        assert (
            sender(path(service, PUT), valid_request(service, PUT, put).SerializeToString()).code
            == "OK"
        )
        get = valid_request(service, GET, base_pb2.GetCacheRequest(key="fuzz-after"))
        assert sender(path(service, GET), get.SerializeToString()).code == "OK"
    log = server.log_text()
    assert "Traceback" not in log
    assert " ERROR " not in log
    rejected = sum(count for (_, code), count in OUTCOMES.items() if code == "INVALID_ARGUMENT")
    assert 0 < log.count(" rejected -> ") <= rejected
