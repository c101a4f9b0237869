"""The gRPC transport: a ``grpc.aio`` server with the cache services, Flyte 1's DataCatalog,
health and reflection.

It adapts gRPC calls to the service core (request headers in, status codes out) and decodes
request bodies itself, so one that does not decode is INVALID_ARGUMENT (grpc's own
deserializer answers INTERNAL); it owns no validation of decoded requests and no cache rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taskcache.errors import CacheError, InvalidArgumentError
from taskcache.rpcs import Rpc, Service
from taskcache.server.calls import CallObserver, RpcCall, ServiceCore, observed_calls
from taskcache.server.decoding import decode_binary
from taskcache.server.health import HealthMonitor

_TRANSPORT: Final = "grpc"

GrpcHandler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]


def grpc_status(error: CacheError) -> grpc.StatusCode:
    """Return the ``grpc.StatusCode`` named by ``error.code`` (UNKNOWN if there is none)."""
    status: grpc.StatusCode = getattr(grpc.StatusCode, error.code, grpc.StatusCode.UNKNOWN)
    return status


def _grpc_handler(service: Service, rpc: Rpc, call: RpcCall, observer: CallObserver) -> GrpcHandler:
    """Adapt ``call`` to a gRPC method handler: the raw request body decoded here (a body
    that does not decode is reported to ``observer`` and answered INVALID_ARGUMENT), metadata
    and the deadline in, status codes out.
    """
    request_type = service.request_type(rpc)

    async def handle(body: bytes, context: grpc.aio.ServicerContext) -> Message:
        try:
            request = decode_binary(body, request_type())
        except InvalidArgumentError as error:
            observer.reject(_TRANSPORT, service.name, rpc.name, error)
            await context.abort(grpc_status(error), error.message)
            raise  # abort() always raises; this only keeps the control flow explicit
        metadata = context.invocation_metadata() or ()
        headers = {name: value for name, value in metadata if isinstance(value, str)}
        try:
            return await call(request, headers, context.time_remaining())
        except CacheError as error:
            await context.abort(grpc_status(error), error.message)
            raise

    return handle


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _service_handler(
    service: Service, calls: Mapping[Rpc, RpcCall], observer: CallObserver
) -> grpc.GenericRpcHandler:
    """Return the handler of ``service``'s methods (what its generated ``add_*_to_server``
    would register, with the request left undecoded for :func:`_grpc_handler`).
    """
    return grpc.method_handlers_generic_handler(
        service.name,
        {
            rpc.name: grpc.unary_unary_rpc_method_handler(
                _grpc_handler(service, rpc, call, observer),
                request_deserializer=None,  # the handler decodes: see _grpc_handler
                response_serializer=_serialize,
            )
            for rpc, call in calls.items()
        },
    )


def build_grpc_server(
    cores: Mapping[Service, ServiceCore],
    observer: CallObserver,
    monitor: HealthMonitor,
    *,
    max_message_bytes: int,
    share_port: bool = False,
) -> grpc.aio.Server:
    """Return an unstarted ``grpc.aio.Server`` serving each service of ``cores`` through its
    core, plus health and reflection. Health follows ``monitor``: SERVING while the
    repository answers. ``share_port``: bind with SO_REUSEPORT (the workers of one
    supervisor share the port; the kernel spreads connections among them).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Only a supervisor's workers share a port: otherwise a second server could
            # silently take half of the connections.
            ("grpc.so_reuseport", 1 if share_port else 0),
        ]
    )
    server.add_generic_rpc_handlers(
        [
            _service_handler(service, observed_calls(_TRANSPORT, service, core, observer), observer)
            for service, core in cores.items()
        ]
    )

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
