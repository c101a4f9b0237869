"""The gRPC transport: a ``grpc.aio`` server with the cache services, health and reflection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import grpc
from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl.cacheservice import cacheservice_pb2_grpc as flyte1_pb2_grpc
from flyteidl2.cacheservice import cacheservice_pb2 as unscoped_pb2
from flyteidl2.cacheservice import cacheservice_pb2_grpc as unscoped_pb2_grpc
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as scoped_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2_grpc as scoped_pb2_grpc
from grpc_health.v1 import (
    health,
    health_pb2,
    health_pb2_grpc,
)
from grpc_reflection.v1alpha import reflection

from taskcache.errors import CacheError
from taskcache.server.apis import FLYTE1_SERVICE, SCOPED_SERVICE, UNSCOPED_SERVICE, CacheApi
from taskcache.server.calls import CallRunner
from taskcache.server.health import HealthMonitor

_TRANSPORT: Final = "grpc"

# The generated modules, by service name: descriptors for reflection, registration functions.
_GENERATED: Final[Mapping[str, tuple[Any, Any]]] = {
    SCOPED_SERVICE: (scoped_pb2, scoped_pb2_grpc),
    UNSCOPED_SERVICE: (unscoped_pb2, unscoped_pb2_grpc),
    FLYTE1_SERVICE: (flyte1_pb2, flyte1_pb2_grpc),
}


def grpc_status(error: CacheError) -> Any:
    """Return the ``grpc.StatusCode`` named by ``error.code`` (UNKNOWN if there is none)."""
    return getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)


class CacheServicer:
    """Implements one generated ``CacheServiceServicer`` (all three share method names)."""

    def __init__(self, service: str, api: CacheApi, runner: CallRunner) -> None:
        self._service = service
        self._api = api
        self._runner = runner

    async def _call(self, method: str, handler: Any, request: Any, context: Any) -> Any:
        try:
            return await self._runner.run(_TRANSPORT, self._service, method, handler, request)
        except CacheError as error:
            await context.abort(grpc_status(error), error.message)
            raise  # abort() always raises; this only keeps the control flow explicit

    async def Get(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC method name
        """Serve Get."""
        return await self._call("Get", self._api.get, request, context)

    async def Put(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Serve Put."""
        return await self._call("Put", self._api.put, request, context)

    async def Delete(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Serve Delete."""
        return await self._call("Delete", self._api.delete, request, context)

    async def GetOrExtendReservation(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Serve GetOrExtendReservation."""
        return await self._call(
            "GetOrExtendReservation", self._api.get_or_extend_reservation, request, context
        )

    async def ReleaseReservation(self, request: Any, context: Any) -> Any:  # noqa: N802
        """Serve ReleaseReservation."""
        return await self._call(
            "ReleaseReservation", self._api.release_reservation, request, context
        )


def build_grpc_server(
    apis: Mapping[str, CacheApi],
    runner: CallRunner,
    monitor: HealthMonitor,
    *,
    max_message_bytes: int,
) -> Any:
    """Return an unstarted ``grpc.aio.Server`` serving ``apis`` (by service name), health and
    reflection. Health follows ``monitor``: SERVING while the repository answers.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Without this a second server could silently share the port (SO_REUSEPORT).
            ("grpc.so_reuseport", 0),
        ]
    )
    for name, api in apis.items():
        _, generated = _GENERATED[name]
        generated.add_CacheServiceServicer_to_server(CacheServicer(name, api, runner), server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    watched: Sequence[str] = (health.OVERALL_HEALTH, *apis)

    async def publish(serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in watched:
            await health_servicer.set(name, status)

    monitor.add_listener(publish)

    reflected = [
        *(
            _GENERATED[name][0].DESCRIPTOR.services_by_name["CacheService"].full_name
            for name in apis
        ),
        health.SERVICE_NAME,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(reflected, server)
    return server
