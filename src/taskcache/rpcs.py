"""The served RPCs and services: the one table the server's transports and the remote clients
are built from (the cache services' five RPCs, and Flyte 1's ``datacatalog.DataCatalog``).

It owns names only (service names, each RPC's protobuf method name and its snake_case
attribute on Connect clients, Connect services and the service core) plus the generated
protobuf modules that carry each service's request and response classes. It must not import
grpc, connectrpc or anything of the server, so clients can use it without the server extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Final
from urllib.parse import quote, unquote

from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl.datacatalog import datacatalog_pb2
from flyteidl2.cacheservice import cacheservice_pb2 as unscoped_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as scoped_pb2
from google.protobuf.message import Message

from taskcache.errors import InvalidArgumentError


@dataclass(frozen=True)
class Rpc:
    """One CacheService method.

    ``name`` is the protobuf method name (the gRPC stub's attribute and the URL path's last
    segment); ``attribute`` is its snake_case name on Connect clients and services and on
    the service core.
    """

    name: str
    attribute: str


GET: Final = Rpc("Get", "get")
PUT: Final = Rpc("Put", "put")
DELETE: Final = Rpc("Delete", "delete")
GET_OR_EXTEND_RESERVATION: Final = Rpc("GetOrExtendReservation", "get_or_extend_reservation")
RELEASE_RESERVATION: Final = Rpc("ReleaseReservation", "release_reservation")

RPCS: Final[tuple[Rpc, ...]] = (GET, PUT, DELETE, GET_OR_EXTEND_RESERVATION, RELEASE_RESERVATION)


# Flyte 1's datacatalog.DataCatalog, which flytepropeller memoizes through.
CREATE_DATASET: Final = Rpc("CreateDataset", "create_dataset")
GET_DATASET: Final = Rpc("GetDataset", "get_dataset")
LIST_DATASETS: Final = Rpc("ListDatasets", "list_datasets")
CREATE_ARTIFACT: Final = Rpc("CreateArtifact", "create_artifact")
GET_ARTIFACT: Final = Rpc("GetArtifact", "get_artifact")
ADD_TAG: Final = Rpc("AddTag", "add_tag")
LIST_ARTIFACTS: Final = Rpc("ListArtifacts", "list_artifacts")
UPDATE_ARTIFACT: Final = Rpc("UpdateArtifact", "update_artifact")

DATACATALOG_RPCS: Final[tuple[Rpc, ...]] = (
    CREATE_DATASET,
    GET_DATASET,
    LIST_DATASETS,
    CREATE_ARTIFACT,
    GET_ARTIFACT,
    ADD_TAG,
    LIST_ARTIFACTS,
    UPDATE_ARTIFACT,
    GET_OR_EXTEND_RESERVATION,
    RELEASE_RESERVATION,
)


@dataclass(frozen=True)
class Service:
    """One served API: its full name, its protobuf module, the protobuf service's short name
    in that module and the RPCs it has (the three CacheService APIs share :data:`RPCS`).
    """

    name: str
    messages: ModuleType
    proto_service: str = "CacheService"
    rpcs: tuple[Rpc, ...] = RPCS

    def request_type(self, rpc: Rpc) -> type[Message]:
        """Return the generated request class of ``rpc`` in this service."""
        return self._message_type(rpc, output=False)

    def response_type(self, rpc: Rpc) -> type[Message]:
        """Return the generated response class of ``rpc`` in this service."""
        return self._message_type(rpc, output=True)

    def _message_type(self, rpc: Rpc, *, output: bool) -> type[Message]:
        service = self.messages.DESCRIPTOR.services_by_name[self.proto_service]
        method = service.methods_by_name[rpc.name]
        descriptor = method.output_type if output else method.input_type
        # The v2 service answers with flyteidl2.cacheservice's responses: the class lives in
        # the module of the package that defines it.
        message_type: type[Message] = getattr(
            _MODULES_BY_PACKAGE[descriptor.file.package], descriptor.name
        )
        return message_type


_MODULES_BY_PACKAGE: Final = {
    module.DESCRIPTOR.package: module
    for module in (scoped_pb2, unscoped_pb2, flyte1_pb2, datacatalog_pb2)
}

# Flyte 2: entries scoped by the request's identifier (org, project, domain).
SCOPED_SERVICE: Final = Service("flyteidl2.cacheservice.v2.CacheService", scoped_pb2)
# Flyte 2's unscoped base API and Flyte 1's cacheservice: both under the empty scope.
UNSCOPED_SERVICE: Final = Service("flyteidl2.cacheservice.CacheService", unscoped_pb2)
FLYTE1_SERVICE: Final = Service("flyteidl.cacheservice.CacheService", flyte1_pb2)

SERVICES: Final[tuple[Service, ...]] = (SCOPED_SERVICE, UNSCOPED_SERVICE, FLYTE1_SERVICE)

# Flyte 1's DataCatalog (gRPC only, as flytepropeller speaks it).
DATACATALOG_SERVICE: Final = Service(
    "datacatalog.DataCatalog", datacatalog_pb2, "DataCatalog", DATACATALOG_RPCS
)


# A Delete carrying this header deletes the entry only if it is still the version the caller
# saw (compare-and-delete; the CacheService API itself has none). Value:
# "<last_updated_at as integer microseconds since the epoch>;<percent-encoded output_uri>".
IF_UNCHANGED_HEADER: Final = "taskcache-if-unchanged"

# A Put carrying this header asks that the entry expire this long after it is written:
# seconds, a decimal number with at most six fractional digits (e.g. "3600" or "0.25").
TTL_HEADER: Final = "taskcache-ttl"
# A Put of an output URI may carry the blob's size in bytes (a decimal integer), so a size
# cap (``--max-bytes``) can count it.
BLOB_BYTES_HEADER: Final = "taskcache-blob-bytes"

_TTL_TEXT: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
_BLOB_BYTES_TEXT: Final = re.compile(r"[0-9]{1,19}")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


@dataclass(frozen=True)
class EntryVersion:
    """One version of an entry that stores its outputs at ``output_uri``."""

    output_uri: str
    last_updated_at: datetime

    def header_value(self) -> str:
        """Return this version as the value of :data:`IF_UNCHANGED_HEADER`."""
        micros = (self.last_updated_at - _EPOCH) // _MICROSECOND
        return f"{micros};{quote(self.output_uri, safe='')}"

    @classmethod
    def from_header(cls, value: str) -> EntryVersion:
        """Parse :meth:`header_value`'s text; InvalidArgumentError if it is malformed."""
        micros, separator, uri = value.partition(";")
        if not separator or not micros.isdigit() or not uri:
            raise InvalidArgumentError(
                "must be '<microseconds>;<output uri>'", field=IF_UNCHANGED_HEADER
            )
        try:
            updated = _EPOCH + timedelta(microseconds=int(micros))
        except OverflowError as error:
            raise InvalidArgumentError("time out of range", field=IF_UNCHANGED_HEADER) from error
        return cls(output_uri=unquote(uri), last_updated_at=updated)


def ttl_header_value(ttl: timedelta) -> str:
    """Return ``ttl`` (positive) as the value of :data:`TTL_HEADER`."""
    micros = ttl // _MICROSECOND
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{seconds}.{fraction:06d}" if fraction else str(seconds)


def parse_ttl_header(value: str) -> timedelta:
    """Parse :data:`TTL_HEADER`'s text; InvalidArgumentError naming the header unless it is a
    positive number of seconds (at most six fractional digits).
    """
    text = value.strip()
    if not _TTL_TEXT.fullmatch(text):
        raise InvalidArgumentError(
            "must be a positive number of seconds (e.g. 3600 or 0.25)", field=TTL_HEADER
        )
    seconds, _, fraction = text.partition(".")
    ttl = timedelta(seconds=int(seconds), microseconds=int(fraction.ljust(6, "0") or 0))
    if ttl <= timedelta(0):
        raise InvalidArgumentError("must be positive", field=TTL_HEADER)
    return ttl


def parse_blob_bytes_header(value: str) -> int:
    """Parse :data:`BLOB_BYTES_HEADER`'s text; InvalidArgumentError naming the header unless
    it is a non-negative decimal integer that fits 63 bits.
    """
    text = value.strip()
    if not _BLOB_BYTES_TEXT.fullmatch(text) or int(text) >= 2**63:
        raise InvalidArgumentError("must be a number of bytes", field=BLOB_BYTES_HEADER)
    return int(text)
