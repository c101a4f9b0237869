"""The transport ceiling for P1 and P2: ``taskcache serve``'s own stack (uvicorn + Connect
app, grpc.aio server, the three APIs, call gate and observer, metrics, health) around a
service core whose Get answers one canned GetCacheResponse and whose GetOrExtendReservation
grants every caller a canned reservation, without touching the database or the thread pool.

Run as ``python -m bench.ceiling --host 127.0.0.1 --port P --grpc-port G``. The repository
behind it is ``memory://`` and only answers health pings.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime, timedelta
from typing import Final

from flyteidl2.cacheservice import cacheservice_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as scoped_pb2
from google.protobuf.message import Message

from bench.literals import kib_output, task_identifier
from taskcache.repositories.base import EntryRow, Scope
from taskcache.rpcs import GET, GET_OR_EXTEND_RESERVATION
from taskcache.server.logs import configure_logging
from taskcache.server.runner import serve
from taskcache.server.service import CacheService, Headers, get_response
from taskcache.server.settings import Settings

CANNED_AT: Final = datetime(2024, 5, 17, 12, 0, 0, 123456, tzinfo=UTC)


def canned_response() -> cacheservice_pb2.GetCacheResponse:
    """The response for a P1 hit, built by the real core's own response builder."""
    row = EntryRow(
        scope=Scope("bench", "taskcache", "development"),
        key="canned",
        output_uri=None,
        output_literals=kib_output().SerializeToString(),
        source_identifier=task_identifier("bench.p1").SerializeToString(),
        key_map={},
        created_at=CANNED_AT,
        last_updated_at=CANNED_AT,
    )
    return get_response(row)


_CANNED: Final = canned_response()


_CANNED_HEARTBEAT: Final = timedelta(milliseconds=5)


class CannedCore(CacheService):
    """A service core whose Get returns :data:`_CANNED` at once (hits are still counted)
    and whose GetOrExtendReservation grants the caller a reservation at once (counted as
    granted): the key and owner read from the v2 request, a fixed heartbeat and expiry.
    """

    async def get(self, request: Message, headers: Headers) -> Message:
        self._metrics.hits.inc()
        return self._dialect.wrap(GET, _CANNED)

    async def get_or_extend_reservation(self, request: Message, headers: Headers) -> Message:
        scoped: scoped_pb2.GetOrExtendReservationRequest = request
        wanted = scoped.base_request
        response = cacheservice_pb2.GetOrExtendReservationResponse()
        reservation = response.reservation
        reservation.key = wanted.key
        reservation.owner_id = wanted.owner_id
        reservation.heartbeat_interval.FromTimedelta(_CANNED_HEARTBEAT)
        reservation.expires_at.FromDatetime(CANNED_AT)
        self._metrics.reservations.labels(outcome="granted").inc()
        return self._dialect.wrap(GET_OR_EXTEND_RESERVATION, response)


def _canned() -> cacheservice_pb2.GetCacheResponse:
    return _CANNED


class CannedHopCore(CacheService):
    """Diagnostics only (``--thread-hop``): the canned answer, fetched through the server's
    thread pool like a real Get, to separate the hop's cost from the database's.
    """

    async def get(self, request: Message, headers: Headers) -> Message:
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self._backend.executor, _canned)
        self._metrics.hits.inc()
        return self._dialect.wrap(GET, response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument(
        "--thread-hop", action="store_true", help="diagnostics: go through the thread pool"
    )
    options = parser.parse_args()
    settings = Settings(
        host=options.host,
        port=options.port,
        grpc_port=options.grpc_port,
        database="memory://",
        storage=None,
        log_level="WARNING",
    )
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings, service_type=CannedHopCore if options.thread_hop else CannedCore))


if __name__ == "__main__":
    main()
