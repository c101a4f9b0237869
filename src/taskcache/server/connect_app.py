"""The Connect transport: one ASGI app routing to the generated Connect apps, plus
``GET /healthz`` and ``GET /metrics``.

It adapts Connect calls to the service core (request headers in, Connect codes out), bounds
request bodies and refuses bodies that do not decode (INVALID_ARGUMENT) and gRPC requests,
which need HTTP trailers this server cannot send (HTTP 415), and stops a call whose client
disconnected; it owns no validation of decoded requests and no cache rules.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs

from connectrpc.code import Code
from connectrpc.codec import proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf.message import Message

from taskcache.errors import CacheError, InvalidArgumentError
from taskcache.rpcs import RPCS, SCOPED_SERVICE, UNSCOPED_SERVICE, Rpc, Service
from taskcache.server.auth import Authenticator
from taskcache.server.calls import CallObserver, RpcCall, observed_calls, servicer
from taskcache.server.decoding import decode_binary, decode_json
from taskcache.server.health import HealthMonitor
from taskcache.server.metrics import METRICS_CONTENT_TYPE, ServerMetrics
from taskcache.server.service import CacheService

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]

_TRANSPORT: Final = "connect"
# gzip can make an incompressible message slightly larger; allow for that on the raw body.
_COMPRESSION_SLACK: Final = 64 * 1024
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS

# gRPC over HTTP/2 needs response trailers (connectrpc's test for it: exactly this type or
# this prefix); gRPC-Web does not and is served.
_GRPC_CONTENT_TYPE: Final = "application/grpc"
_GRPC_CONTENT_TYPE_PREFIX: Final = "application/grpc+"
_ACCEPT_POST: Final = b"application/json, application/proto"
_IDENTITY: Final = "identity"
_COMPRESSIONS: Final = frozenset({_IDENTITY, "gzip"})  # identity and BoundedGzip

ConnectHandler = Callable[[Message, RequestContext[Any, Any]], Awaitable[Message]]

# Flyte 1 has no Connect API.
CONNECT_SERVICES: Final = (SCOPED_SERVICE, UNSCOPED_SERVICE)

Decoder = Callable[[bytes | bytearray, Message], Message]
Encoder = Callable[[Message], bytes]
Rejected = Callable[[Message, InvalidArgumentError], None]


class RequestCodec:
    """A Connect codec (``name`` "proto" or "json") whose ``decode`` refuses a body that is
    not the request message with ConnectError INVALID_ARGUMENT, after telling ``rejected``.

    (connectrpc's own codecs let the decoder's exception escape: the caller got HTTP 500
    naming it and the log a traceback.)
    """

    def __init__(self, name: str, decoder: Decoder, encoder: Encoder, rejected: Rejected) -> None:
        self._name = name
        self._decoder = decoder
        self._encoder = encoder
        self._rejected = rejected

    def name(self) -> str:
        """Return the codec name (the content type's suffix)."""
        return self._name

    def encode(self, message: Message) -> bytes:
        """Return ``message`` encoded."""
        return self._encoder(message)

    def decode(self, data: bytes | bytearray, message: Message) -> Message:
        """Return ``message`` filled from ``data``; ConnectError INVALID_ARGUMENT if it does
        not decode.
        """
        try:
            return self._decoder(data, message)
        except InvalidArgumentError as error:
            self._rejected(message, error)
            raise connect_error(error) from None


def _codecs(service: Service, observer: CallObserver) -> list[RequestCodec]:
    """Return the proto and JSON codecs of ``service``'s app, reporting rejected bodies to
    ``observer`` under the RPC whose request they were meant to be.
    """
    rpc_by_request = {service.request_type(rpc).DESCRIPTOR.full_name: rpc for rpc in RPCS}

    def rejected(message: Message, error: InvalidArgumentError) -> None:
        rpc = rpc_by_request[message.DESCRIPTOR.full_name]
        observer.reject(_TRANSPORT, service.name, rpc.name, error)

    return [
        RequestCodec("proto", decode_binary, proto_binary_codec().encode, rejected),
        RequestCodec("json", decode_json, proto_json_codec().encode, rejected),
    ]


class ServiceApp(ConnectASGIApplication[Any]):
    """The Connect routes of one service, ``/<service>/<method>`` for every RPC of the table,
    served by ``implementation`` (a servicer) — what the generated application would build,
    but with :class:`RequestCodec` codecs (the generated one cannot take codecs).
    """

    def __init__(
        self,
        service: Service,
        implementation: Any,
        observer: CallObserver,
        *,
        max_message_bytes: int,
    ) -> None:
        self._api = service
        super().__init__(
            service=implementation,
            endpoints=self._endpoints,
            read_max_bytes=max_message_bytes,
            compressions=[BoundedGzip(max_message_bytes)],
            codecs=_codecs(service, observer),
        )

    @property
    def path(self) -> str:
        """The URL path prefix of the service's routes."""
        return f"/{self._api.name}"

    def _endpoints(self, implementation: Any) -> Mapping[str, Any]:
        service = self._api
        return {
            f"/{service.name}/{rpc.name}": Endpoint.unary(
                method=MethodInfo(
                    name=rpc.name,
                    service_name=service.name,
                    input=service.request_type(rpc),
                    output=service.response_type(rpc),
                    idempotency_level=IdempotencyLevel.UNKNOWN,
                ),
                function=getattr(implementation, _connect_name(rpc)),
            )
            for rpc in RPCS
        }


def _header(scope: ASGIScope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == wanted:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def _is_grpc(scope: ASGIScope) -> bool:
    content_type = _header(scope, b"content-type") or ""
    return content_type == _GRPC_CONTENT_TYPE or content_type.startswith(_GRPC_CONTENT_TYPE_PREFIX)


def _unknown_compression(scope: ASGIScope) -> str | None:
    """Return the request's compression if it is one this server cannot inflate, else None.

    (connectrpc answers those UNIMPLEMENTED, HTTP 501: a server error for the caller's
    mistake.)
    """
    if scope.get("method") == "GET":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = query.get("compression", [_IDENTITY])[0]
    else:
        name = _header(scope, b"content-encoding") or _IDENTITY
    return None if name.lower() in _COMPRESSIONS else name


def _refusal(scope: ASGIScope) -> InvalidArgumentError | None:
    """Return why an RPC request is refused before Connect reads it (a gRPC content type,
    answered HTTP 415, or a compression this server cannot inflate), or None.
    """
    if _is_grpc(scope):
        return InvalidArgumentError(
            "a gRPC request on the Connect port; gRPC is served on its own port",
            field="content-type",
        )
    compression = _unknown_compression(scope)
    if compression is not None:
        return InvalidArgumentError(
            f"unsupported compression {compression!r}: use gzip or identity",
            field="compression",
        )
    return None


def connect_error(error: CacheError) -> ConnectError:
    """Return the ConnectError with the Code named by ``error.code`` and its message."""
    return ConnectError(Code.__members__.get(error.code, Code.UNKNOWN), error.message)


def _too_large(limit: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED, f"message is larger than the limit of {limit} bytes"
    )


class BoundedGzip:
    """gzip for Connect that refuses to inflate a request beyond ``max_bytes``.

    (connectrpc's own gzip inflates without bound before checking ``read_max_bytes``; a
    small compressed body could otherwise expand to gigabytes.)
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def name(self) -> str:
        """Return the content coding name."""
        return "gzip"

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return ``data`` gzip-compressed."""
        compressor = zlib.compressobj(6, zlib.DEFLATED, _GZIP_WBITS)
        return compressor.compress(data) + compressor.flush()

    def decompress(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return ``data`` inflated; ConnectError RESOURCE_EXHAUSTED past the limit,
        INVALID_ARGUMENT for a corrupt stream.
        """
        output = bytearray()
        remaining = bytes(data)
        try:
            # A gzip body may hold several members; inflate each within the budget.
            while remaining:
                inflater = zlib.decompressobj(_GZIP_WBITS)
                budget = self._max_bytes - len(output) + 1
                output += inflater.decompress(remaining, budget)
                if len(output) > self._max_bytes or inflater.unconsumed_tail:
                    raise _too_large(self._max_bytes)
                if not inflater.eof:
                    raise ConnectError(Code.INVALID_ARGUMENT, "truncated gzip request body")
                remaining = inflater.unused_data
        except zlib.error as error:
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"invalid gzip request body: {error}"
            ) from None
        return bytes(output)


def _limited(receive: ASGIReceive, scope: ASGIScope, limit: int, reported: int) -> ASGIReceive:
    """Return ``receive`` failing with RESOURCE_EXHAUSTED (naming the ``reported`` limit) once
    the raw body passes ``limit``.
    """
    declared = next(
        (value for name, value in scope.get("headers", ()) if name.lower() == b"content-length"),
        None,
    )
    received = 0

    async def receive_within_limit() -> MutableMapping[str, Any]:
        nonlocal received
        # Refuse a declared oversize body before reading any of it.
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(reported)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(reported)
        return message

    return receive_within_limit


def _connect_name(rpc: Rpc) -> str:
    return rpc.attribute


def _connect_handler(call: RpcCall) -> ConnectHandler:
    """Adapt ``call`` to a generated Connect service method: headers and the
    ``Connect-Timeout-Ms`` deadline in, Connect codes out.
    """

    async def handle(request: Message, ctx: RequestContext[Any, Any]) -> Message:
        try:
            remaining_ms = ctx.timeout_ms()
            timeout = None if remaining_ms is None else remaining_ms / 1000
            return await call(request, ctx.request_headers(), timeout)
        except CacheError as error:
            raise connect_error(error) from None

    return handle


async def _respond(
    send: ASGISend, status: int, body: bytes, content_type: str, *, head: bool = False
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _unsupported_media_type(send: ASGISend) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 415,
            "headers": [(b"accept-post", _ACCEPT_POST), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def _json(send: ASGISend, status: int, payload: object, *, head: bool = False) -> None:
    await _respond(send, status, json.dumps(payload).encode(), "application/json", head=head)


def _http_headers(scope: ASGIScope) -> dict[str, str]:
    """Return the request headers of an ASGI scope, names lower-cased."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }


class ConnectApp:
    """The ASGI application: RPCs by path prefix, ``/healthz`` and ``/metrics``.

    With ``metrics_auth``, ``/metrics`` answers 401 unless the request carries one of its
    bearer tokens (any scope); ``/healthz`` is always open.
    """

    def __init__(
        self,
        cores: Mapping[Service, CacheService],
        observer: CallObserver,
        monitor: HealthMonitor,
        metrics: ServerMetrics,
        *,
        max_message_bytes: int,
        metrics_auth: Authenticator | None = None,
    ) -> None:
        self._monitor = monitor
        self._metrics_auth = metrics_auth
        self._metrics = metrics
        self._max_message_bytes = max_message_bytes
        self._max_body = max_message_bytes + _COMPRESSION_SLACK
        self._observer = observer
        # (path prefix, app, its service, the names of that service's RPCs)
        self._routes: list[tuple[str, ASGIApp, Service, frozenset[str]]] = []
        for service, core in cores.items():
            app = ServiceApp(
                service,
                servicer(
                    observed_calls(_TRANSPORT, service, core, observer),
                    _connect_name,
                    _connect_handler,
                ),
                observer,
                max_message_bytes=max_message_bytes,
            )
            rpc_names = frozenset(rpc.name for rpc in service.rpcs)
            self._routes.append((f"{app.path}/", app, service, rpc_names))

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """Handle one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served; returning closes the connection
        path: str = scope["path"]
        for prefix, app, service, rpc_names in self._routes:
            if path.startswith(prefix):
                refusal = _refusal(scope)
                if refusal is not None:
                    method_name = path[len(prefix) :]
                    # Counted under the RPC it was meant for; an unknown method name is not
                    # a metric label (the path is the caller's, unbounded).
                    if method_name in rpc_names:
                        self._observer.reject(_TRANSPORT, service.name, method_name, refusal)
                    if refusal.field == "content-type":
                        # Connect's answer to a content type it does not serve.
                        await _unsupported_media_type(send)
                    else:
                        await _json(
                            send, 400, {"code": "invalid_argument", "message": refusal.message}
                        )
                    return
                limited = _limited(receive, scope, self._max_body, self._max_message_bytes)
                await _stopped_on_disconnect(app, scope, limited, send)
                return
        method: str = scope["method"]
        head = method == "HEAD"
        if path in ("/healthz", "/metrics") and method not in ("GET", "HEAD"):
            await _json(send, 405, {"error": "method not allowed"})
        elif path == "/healthz":
            serving = await self._monitor.check()
            await _json(
                send,
                200 if serving else 503,
                {"status": "SERVING" if serving else "NOT_SERVING"},
                head=head,
            )
        elif path == "/metrics" and not self._may_read_metrics(scope):
            await _json(send, 401, {"error": "bearer token required"}, head=head)
        elif path == "/metrics":
            await _respond(send, 200, self._metrics.render(), METRICS_CONTENT_TYPE, head=head)
        else:
            await _json(send, 404, {"error": "not found"}, head=head)

    def _may_read_metrics(self, scope: ASGIScope) -> bool:
        if self._metrics_auth is None:
            return True
        try:
            self._metrics_auth.authenticate(_http_headers(scope))
        except CacheError:
            return False
        return True


async def _stopped_on_disconnect(
    app: ASGIApp, scope: ASGIScope, receive: ASGIReceive, send: ASGISend
) -> None:
    """Run ``app`` on one unary RPC request, cancelling it if the client disconnects before
    the answer starts (an async client whose awaiting task was cancelled closes its
    connection): the call is then stopped as one whose deadline passed, its database
    statement cancelled. connectrpc itself watches for disconnects on streams only.
    """
    body_read = asyncio.Event()
    answering = False

    async def receive_body() -> MutableMapping[str, Any]:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_read.set()
        return message

    async def send_answer(message: MutableMapping[str, Any]) -> None:
        nonlocal answering
        answering = True
        await send(message)

    async def serve() -> None:
        await app(scope, receive_body, send_answer)

    handler = asyncio.create_task(serve())

    async def watch() -> None:
        await body_read.wait()
        # Once the body is read, the next message can only say the client went away (or,
        # after the answer, that the exchange is over).
        if (await receive())["type"] == "http.disconnect" and not answering:
            handler.cancel()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait({handler})
    finally:
        watcher.cancel()
        if not handler.done():  # this task itself was cancelled (the server is stopping)
            handler.cancel()
    if not handler.cancelled():
        handler.result()  # re-raise what the app raised


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    # Nothing to set up per app: the runner owns the repository's lifetime.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
