"""Wire transports to a service: Connect (HTTP) and gRPC, each sync and async.

A transport sends ``flyteidl2.cacheservice.v2`` requests (or, on a ``datacatalog(s)://``
channel, Flyte 1's ``datacatalog.DataCatalog`` requests) with Flyte's generated clients,
applies the per-call timeout, the bearer token and the retry policy, and turns wire errors
into :mod:`taskcache.errors` exceptions. It knows nothing about keys or outputs.

A call's timeout is its whole budget, retries included: each attempt is sent with what is
left of it as its deadline (the gRPC deadline, ``Connect-Timeout-Ms`` and the HTTP client's
own timeout), and a retry whose backoff would outlast it is not made. Cancelling the task
that awaits an async transport's call cancels the RPC.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit

import grpc
import grpc.aio
import pyqwest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from flyteidl.datacatalog import datacatalog_pb2_grpc
from flyteidl2.cacheservice.v2 import cacheservice_connect, cacheservice_pb2_grpc
from google.protobuf.message import Message

from taskcache.deadlines import Deadline
from taskcache.errors import (
    CacheError,
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    error_for_code,
)
from taskcache.rpcs import Rpc

Response = TypeVar("Response")
# The extra headers of one request (None: none).
Headers = Mapping[str, str] | None


class SyncTransport(Protocol):
    """What :class:`~taskcache.clients.remote.RemoteClient` needs from a transport."""

    def send(
        self, rpc: Rpc, request: Message, headers: Headers = None, *, timeout: float | None = None
    ) -> Message:
        """Send one request (with extra ``headers``) within ``timeout`` seconds (None: the
        transport's default) and return the response message.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class AsyncTransport(Protocol):
    """What :class:`~taskcache.clients.remote.AsyncRemoteClient` needs from a transport."""

    async def send(
        self, rpc: Rpc, request: Message, headers: Headers = None, *, timeout: float | None = None
    ) -> Message:
        """See :meth:`SyncTransport.send`."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


# A shed call (RESOURCE_EXHAUSTED) is retried like an outage: later, with backoff.
_RETRYABLE = (UnavailableError, DeadlineExceededError, ResourceExhaustedError)
CONNECT_SCHEMES = ("http", "https")
GRPC_SCHEMES = ("grpc", "grpcs")
DATACATALOG_SCHEMES = ("datacatalog", "datacatalogs")
_TLS_SCHEMES = frozenset({"grpcs", "datacatalogs"})
# A generated stub class: called with a channel, it has one attribute per RPC.
Stub = Callable[[Any], Any]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for UNAVAILABLE, DEADLINE_EXCEEDED and
    RESOURCE_EXHAUSTED (a call the service shed under load).

    Attempt ``n`` (from 0) waits a random time in ``[0, min(max_backoff,
    initial_backoff * multiplier**n)]`` before retrying; at most ``max_retries`` retries.
    """

    max_retries: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0

    def delays(self) -> Iterator[float]:
        """Yield the wait before each retry."""
        for attempt in range(self.max_retries):
            ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**attempt)
            yield random.uniform(0, ceiling)


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach a service: the default per-call timeout (seconds, the whole budget of a
    call including its retries; None: unbounded), retries, TLS CA file, client certificate
    and key (PEM files, for a server requiring mutual TLS; both or neither), bearer token and
    the message size limit.
    """

    timeout: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ca_file: str | None = None
    token: str | None = None
    max_message_bytes: int = 16 * 1024 * 1024
    client_cert: str | None = None
    client_key: str | None = None


def _headers(options: RemoteOptions) -> dict[str, str]:
    return {"authorization": f"Bearer {options.token}"} if options.token else {}


def _retry_delay(
    error: CacheError, delays: Iterator[float], deadline: Deadline | None
) -> float | None:
    """Return the wait before retrying after ``error``, or None to re-raise it (the retries
    are used up, or ``error`` is the deadline itself having passed).

    Raises DeadlineExceededError (``error`` as its cause) when the wait would outlast
    ``deadline``: the budget is spent, whatever the last attempt met.
    """
    delay = next(delays, None)
    if delay is None or deadline is None:
        return delay
    if deadline.expired and isinstance(error, DeadlineExceededError):
        return None
    if delay >= deadline.remaining():
        raise deadline.exceeded(f"the call (its last attempt: {error.code})") from error
    return delay


def call_with_retries(
    call: Callable[[], Response], policy: RetryPolicy, deadline: Deadline | None = None
) -> Response:
    """Run ``call``, retrying retryable taskcache errors per ``policy`` while ``deadline``
    (None: no bound) leaves time for the backoff; re-raise the last error, or raise
    DeadlineExceededError when the budget runs out first.
    """
    delays = policy.delays()
    while True:
        try:
            return call()
        except _RETRYABLE as error:
            delay = _retry_delay(error, delays, deadline)
            if delay is None:
                raise
            time.sleep(delay)


async def call_with_retries_async(
    call: Callable[[], Awaitable[Response]],
    policy: RetryPolicy,
    deadline: Deadline | None = None,
) -> Response:
    """Async twin of :func:`call_with_retries`."""
    delays = policy.delays()
    while True:
        try:
            return await call()
        except _RETRYABLE as error:
            delay = _retry_delay(error, delays, deadline)
            if delay is None:
                raise
            await asyncio.sleep(delay)


# What each client library says when it reached the other protocol's listener: hyper (under
# the Connect client) cannot parse an HTTP/2-only gRPC server's reply to HTTP/1.1, or sees
# that server's unsolicited SETTINGS frame arrive first; gRPC core sees an HTTP/1.x reply to
# its HTTP/2 preface. Either way retrying cannot help.
_CONNECT_AT_GRPC_PORT = (
    "invalid HTTP version parsed",
    "received unexpected message from connection",
)
_GRPC_AT_CONNECT_PORT = ("Trying to connect an http1.x server", "Failed parsing HTTP/2")


def _mismatch(url: str, *, speaking_grpc: bool) -> InvalidArgumentError:
    """Return the error for a ``url`` whose port speaks the other protocol, the fix spelled
    out (the same host and port with the other scheme, or the other port).
    """
    host = urlsplit(url).netloc
    if speaking_grpc:
        found = "HTTP/1.1, as the Connect port does"
        fix = f"use http://{host} for Connect, or grpc:// at the gRPC port (default 8095)"
    else:
        found = "HTTP/2 only, as the gRPC port does"
        fix = f"use grpc://{host} for gRPC, or http:// at the Connect port (default 8094)"
    return InvalidArgumentError(
        f"{url} answers {found}: probably a protocol/port mismatch; {fix}",
        field="target",
    )


def _deadline(options: RemoteOptions, timeout: float | None) -> Deadline | None:
    """Return the deadline of a call given ``timeout`` (None: the options' default)."""
    budget = options.timeout if timeout is None else timeout
    return None if budget is None else Deadline.after(budget)


def time_left(deadline: Deadline | None, what: str) -> float | None:
    """Return the seconds the next attempt (or RPC) of ``what`` may take before ``deadline``
    (None: no bound); DeadlineExceededError naming ``what`` if none are left.
    """
    if deadline is None:
        return None
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.exceeded(what)
    return remaining


def _from_connect(error: ConnectError, deadline: Deadline | None, url: str) -> CacheError:
    code = error.code.name
    if code == "UNAVAILABLE" and any(sign in error.message for sign in _CONNECT_AT_GRPC_PORT):
        mismatch = _mismatch(url, speaking_grpc=False)
        mismatch.__cause__ = error
        return mismatch
    if code == "UNAVAILABLE" and deadline is not None and deadline.expired:
        # connectrpc's sync client reports a deadline that ran out before the request was
        # sent (its HTTP client refuses a negative timeout) as UNAVAILABLE.
        code = "DEADLINE_EXCEEDED"
    translated = error_for_code(code, error.message)
    translated.__cause__ = error
    return translated


def _reraise_cancellation(error: ConnectError) -> None:
    """Raise CancelledError if ``error`` is connectrpc's report of the awaiting task being
    cancelled: the async client turns the cancellation into a CANCELED error, which would
    otherwise reach the caller as a CacheError and leave the task uncancelled.
    """
    task = asyncio.current_task()
    if error.code is Code.CANCELED and task is not None and task.cancelling():
        raise asyncio.CancelledError from error


def _from_grpc(error: grpc.RpcError, url: str) -> CacheError:
    code: grpc.StatusCode = error.code()
    details: str = error.details() or code.name
    if code is grpc.StatusCode.UNAVAILABLE and any(
        sign in details for sign in _GRPC_AT_CONNECT_PORT
    ):
        mismatch = _mismatch(url, speaking_grpc=True)
        mismatch.__cause__ = error
        return mismatch
    translated = error_for_code(code.name, details)
    translated.__cause__ = error
    return translated


def _timeout_ms(seconds: float | None) -> int | None:
    # Rounded up: int() made a sub-millisecond timeout 0 ms, a deadline expired at once.
    return None if seconds is None else max(1, math.ceil(seconds * 1000))


def _connect_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in CONNECT_SCHEMES or not parts.netloc:
        raise InvalidArgumentError(f"not an http(s) URL: {url!r}", field="target")
    return url.rstrip("/")


def _grpc_target(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if parts.scheme not in (*GRPC_SCHEMES, *DATACATALOG_SCHEMES) or not parts.netloc:
        raise InvalidArgumentError(f"not a grpc(s) or datacatalog(s) URL: {url!r}", field="target")
    return parts.netloc, parts.scheme in _TLS_SCHEMES


def _grpc_credentials(options: RemoteOptions) -> grpc.ChannelCredentials:
    key, chain = _client_identity(options)
    return grpc.ssl_channel_credentials(
        root_certificates=_ca(options), private_key=key, certificate_chain=chain
    )


# gRPC's own reconnect backoff grows to 120 s: after a short server outage the channel would
# refuse every call (and burn every retry) for minutes. Keep it at the retry policy's scale.
_RECONNECT_BACKOFF_MS = (100, 1000)


def _grpc_channel_options(options: RemoteOptions) -> list[tuple[str, Any]]:
    initial, maximum = _RECONNECT_BACKOFF_MS
    return [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", initial),
        ("grpc.max_reconnect_backoff_ms", maximum),
    ]


def _ca(options: RemoteOptions) -> bytes | None:
    return Path(options.ca_file).read_bytes() if options.ca_file else None


def _client_identity(options: RemoteOptions) -> tuple[bytes | None, bytes | None]:
    """Return the client's (private key, certificate chain) PEM bytes, or (None, None)."""
    if options.client_cert is None or options.client_key is None:
        return None, None
    return Path(options.client_key).read_bytes(), Path(options.client_cert).read_bytes()


def _connect_client(
    url: str,
    options: RemoteOptions,
    client_type: Callable[..., Any],
    http_client: Callable[[dict[str, Any]], Any],
) -> Any:
    """Build a generated Connect client (``client_type``) on the HTTP client that
    ``http_client`` makes from the TLS settings (the CA file, else the system's roots; the
    client certificate, if any).
    """
    ca = _ca(options)
    key, chain = _client_identity(options)
    tls = {"tls_ca_cert": ca, "tls_include_system_certs": ca is None}
    # No client-wide timeout: every attempt passes what is left of its call's budget.
    return client_type(
        _connect_address(url),
        timeout_ms=None,
        read_max_bytes=options.max_message_bytes,
        http_client=http_client({**tls, "tls_key": key, "tls_cert": chain}),
    )


def _grpc_channel(url: str, options: RemoteOptions, channels: ModuleType) -> Any:
    """Open a channel to a ``grpc(s)://`` URL with ``channels`` (``grpc`` or ``grpc.aio``)."""
    target, secure = _grpc_target(url)
    channel_options = _grpc_channel_options(options)
    if secure:
        return channels.secure_channel(target, _grpc_credentials(options), options=channel_options)
    return channels.insecure_channel(target, options=channel_options)


@dataclass(frozen=True, slots=True)
class _Attempts:
    """One send, planned once for the sync and async twins: each attempt is ``call(seconds
    left)`` (a response, or an awaitable of one); an error of type ``errors`` it raises
    becomes ``translate(error)``, which may also raise (a cancellation).
    """

    call: Callable[[float | None], Any]
    deadline: Deadline | None
    errors: type[Exception]
    translate: Callable[[Any], CacheError]

    def timeout(self) -> float | None:
        """Return the seconds the next attempt may take; DeadlineExceededError if none."""
        return time_left(self.deadline, "the call")


class _Wire(ABC):
    """What every transport holds (its URL, options and bearer header) and how it plans a
    send: the protocol's method look-up, headers, deadline and error translation.
    """

    _errors: ClassVar[type[Exception]]

    def __init__(self, url: str, options: RemoteOptions) -> None:
        self._url = url
        self._options = options
        self._headers = _headers(options)

    def _attempts(
        self, rpc: Rpc, request: Message, headers: Headers, timeout: float | None
    ) -> _Attempts:
        deadline = _deadline(self._options, timeout)
        sent = self._headers if not headers else {**self._headers, **headers}
        return _Attempts(
            self._caller(rpc, request, sent),
            deadline,
            self._errors,
            functools.partial(self._translate, deadline=deadline),
        )

    @abstractmethod
    def _caller(
        self, rpc: Rpc, request: Message, headers: Mapping[str, str]
    ) -> Callable[[float | None], Any]:
        """Return what sends ``request`` to ``rpc`` once, given the seconds it may take."""

    @abstractmethod
    def _translate(self, error: Any, deadline: Deadline | None) -> CacheError:
        """Return the taskcache error for the wire ``error`` of a call with ``deadline``."""


class _ConnectWire(_Wire):
    """A generated Connect client (``_client_type``, on the HTTP client ``_http_client``
    makes from the TLS settings) and how it is called.
    """

    _errors = ConnectError
    _client_type: ClassVar[Callable[..., Any]]

    def __init__(self, url: str, options: RemoteOptions) -> None:
        super().__init__(url, options)
        self._client = _connect_client(url, options, self._client_type, self._http_client)

    @staticmethod
    @abstractmethod
    def _http_client(tls: dict[str, Any]) -> Any:
        """Return the HTTP client (sync or async) with the TLS settings ``tls``."""

    def _caller(
        self, rpc: Rpc, request: Message, headers: Mapping[str, str]
    ) -> Callable[[float | None], Any]:
        method = getattr(self._client, rpc.attribute)
        return lambda left: method(request, headers=headers, timeout_ms=_timeout_ms(left))

    def _translate(self, error: ConnectError, deadline: Deadline | None) -> CacheError:
        return _from_connect(error, deadline, self._url)


class _GrpcWire(_Wire):
    """A channel opened with ``_channels`` (``grpc`` or ``grpc.aio``), a generated stub on
    it (``CacheServiceStub`` unless ``stub`` says otherwise) and how the stub is called.
    """

    _errors: ClassVar[type[Exception]] = grpc.RpcError
    _channels: ClassVar[ModuleType] = grpc

    def __init__(
        self, url: str, options: RemoteOptions, stub: Stub = cacheservice_pb2_grpc.CacheServiceStub
    ) -> None:
        super().__init__(url, options)
        self._channel = _grpc_channel(url, options, self._channels)
        self._stub = stub(self._channel)

    def _caller(
        self, rpc: Rpc, request: Message, headers: Mapping[str, str]
    ) -> Callable[[float | None], Any]:
        method = getattr(self._stub, rpc.name)
        metadata = tuple(headers.items())
        return lambda left: method(request, timeout=left, metadata=metadata)

    def _translate(self, error: grpc.RpcError, deadline: Deadline | None) -> CacheError:
        return _from_grpc(error, self._url)


class _SyncSends(_Wire):
    """``send`` of a synchronous transport."""

    def send(
        self, rpc: Rpc, request: Message, headers: Headers = None, *, timeout: float | None = None
    ) -> Message:
        """Send ``request`` to ``rpc`` (with retries, within ``timeout`` seconds or the
        default) and return the response message.
        """
        attempts = self._attempts(rpc, request, headers, timeout)

        def attempt() -> Message:
            left = attempts.timeout()
            try:
                response: Message = attempts.call(left)
                return response
            except attempts.errors as error:
                raise attempts.translate(error) from error

        return call_with_retries(attempt, self._options.retry, attempts.deadline)


class _AsyncSends(_Wire):
    """``send`` of an asynchronous transport (cancelling the awaiting task cancels the RPC)."""

    async def send(
        self, rpc: Rpc, request: Message, headers: Headers = None, *, timeout: float | None = None
    ) -> Message:
        """See :meth:`ConnectTransport.send`."""
        attempts = self._attempts(rpc, request, headers, timeout)

        async def attempt() -> Message:
            left = attempts.timeout()
            try:
                response: Message = await attempts.call(left)
                return response
            except attempts.errors as error:
                raise attempts.translate(error) from error

        return await call_with_retries_async(attempt, self._options.retry, attempts.deadline)


class ConnectTransport(_SyncSends, _ConnectWire):
    """Sync Connect transport over HTTP(S) with the generated ``CacheServiceClientSync``."""

    _client_type = cacheservice_connect.CacheServiceClientSync

    @staticmethod
    def _http_client(tls: dict[str, Any]) -> Any:
        return pyqwest.SyncClient(pyqwest.SyncHTTPTransport(**tls))

    def close(self) -> None:
        """Release the HTTP client."""
        self._client.close()


class GrpcTransport(_SyncSends, _GrpcWire):
    """Sync gRPC transport with a generated stub: ``CacheServiceStub`` unless ``stub`` says
    otherwise (``DataCatalogStub`` for a DataCatalog).
    """

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()


class AsyncConnectTransport(_AsyncSends, _ConnectWire):
    """Async Connect transport with the generated ``CacheServiceClient``."""

    _client_type = cacheservice_connect.CacheServiceClient

    @staticmethod
    def _http_client(tls: dict[str, Any]) -> Any:
        return pyqwest.Client(pyqwest.HTTPTransport(**tls))

    def _translate(self, error: ConnectError, deadline: Deadline | None) -> CacheError:
        _reraise_cancellation(error)
        return super()._translate(error, deadline)

    async def close(self) -> None:
        """Release the HTTP client."""
        await self._client.close()


class AsyncGrpcTransport(_AsyncSends, _GrpcWire):
    """Async gRPC transport (``grpc.aio``); ``stub`` as for :class:`GrpcTransport`."""

    _errors = grpc.aio.AioRpcError
    _channels = grpc.aio

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _is_grpc(url: str) -> bool:
    return url.split("://", 1)[0].lower() in GRPC_SCHEMES


def open_transport(url: str, options: RemoteOptions) -> SyncTransport:
    """Return the sync transport for ``url``: gRPC for ``grpc(s)://``, else Connect.

    Raises InvalidArgumentError if ``url`` is neither an http(s) nor a grpc(s) URL.
    """
    return GrpcTransport(url, options) if _is_grpc(url) else ConnectTransport(url, options)


def open_async_transport(url: str, options: RemoteOptions) -> AsyncTransport:
    """Async twin of :func:`open_transport`."""
    if _is_grpc(url):
        return AsyncGrpcTransport(url, options)
    return AsyncConnectTransport(url, options)


def open_datacatalog_transport(url: str, options: RemoteOptions) -> SyncTransport:
    """Return the sync gRPC transport to the DataCatalog at a ``datacatalog(s)://`` URL.

    Raises InvalidArgumentError if ``url`` is not one.
    """
    _check_datacatalog(url)
    return GrpcTransport(url, options, datacatalog_pb2_grpc.DataCatalogStub)


def open_async_datacatalog_transport(url: str, options: RemoteOptions) -> AsyncTransport:
    """Async twin of :func:`open_datacatalog_transport`."""
    _check_datacatalog(url)
    return AsyncGrpcTransport(url, options, datacatalog_pb2_grpc.DataCatalogStub)


def _check_datacatalog(url: str) -> None:
    if url.split("://", 1)[0].lower() not in DATACATALOG_SCHEMES:
        raise InvalidArgumentError(f"not a datacatalog(s) URL: {url!r}", field="target")
