"""The gRPC transport: a ``grpc.aio`` server with the cache services, health and reflection.

It adapts gRPC calls to the service core (request headers in, status codes out) and owns
nothing else: no validation, no cache rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import ModuleType
from typing import Final

import grpc
from flyteidl.cacheservice import cacheservice_pb2_grpc as flyte1_pb2_grpc
from flyteidl2.cacheservice import cacheservice_pb2_grpc as unscoped_pb2_grpc
from flyteidl2.cacheservice.v2 import cacheservice_pb2_grpc as scoped_pb2_grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taskcache.errors import CacheError
from taskcache.rpcs import FLYTE1_SERVICE, SCOPED_SERVICE, UNSCOPED_SERVICE, Rpc, Service
from taskcache.server.calls import CallObserver, RpcCall, observed_calls, servicer
from taskcache.server.health import HealthMonitor
from taskcache.server.service import CacheService

_TRANSPORT: Final = "grpc"

# The generated registration modules, by service name.
_GENERATED: Final[Mapping[str, ModuleType]] = {
    SCOPED_SERVICE.name: scoped_pb2_grpc,
    UNSCOPED_SERVICE.name: unscoped_pb2_grpc,
    FLYTE1_SERVICE.name: flyte1_pb2_grpc,
}

GrpcHandler = Callable[[Message, grpc.aio.ServicerContext], Awaitable[Message]]


def grpc_status(error: CacheError) -> grpc.StatusCode:
    """Return the ``grpc.StatusCode`` named by ``error.code`` (UNKNOWN if there is none)."""
    status: grpc.StatusCode = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    return status


def _grpc_name(rpc: Rpc) -> str:
    return rpc.name


def _grpc_handler(call: RpcCall) -> GrpcHandler:
    """Adapt ``call`` to a generated servicer method: metadata in, status codes out."""

    async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
        metadata = context.invocation_metadata() or ()
        headers = {name: value for name, value in metadata if isinstance(value, str)}
        try:
            return await call(request, headers)
        except CacheError as error:
            await context.abort(grpc_status(error), error.message)
            raise  # abort() always raises; this only keeps the control flow explicit

    return handle


def build_grpc_server(
    cores: Mapping[Service, CacheService],
    observer: CallObserver,
    monitor: HealthMonitor,
    *,
    max_message_bytes: int,
) -> grpc.aio.Server:
    """Return an unstarted ``grpc.aio.Server`` serving each service of ``cores`` through its
    core, plus health and reflection. Health follows ``monitor``: SERVING while the
    repository answers.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Without this a second server could silently share the port (SO_REUSEPORT).
            ("grpc.so_reuseport", 0),
        ]
    )
    for service, core in cores.items():
        calls = observed_calls(_TRANSPORT, service, core, observer)
        servicer_object = servicer(calls, _grpc_name, _grpc_handler)
        _GENERATED[service.name].add_CacheServiceServicer_to_server(servicer_object, server)

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    watched: Sequence[str] = (health.OVERALL_HEALTH, *(service.name for service in cores))

    async def publish(serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in watched:
            await health_servicer.set(name, status)

    monitor.add_listener(publish)
    reflection.enable_server_reflection(
        [*(service.name for service in cores), health.SERVICE_NAME, reflection.SERVICE_NAME],
        server,
    )
    return server
