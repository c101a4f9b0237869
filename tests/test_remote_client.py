"""Remote-only client behaviour: retries, recovery after a server restart, deadlines, the
bearer token and TLS.

Most tests talk to small in-process stand-ins, so they can count calls and see headers:

* :class:`StubServers`: the v2 ``CacheService`` over gRPC (``grpc.server``) and over Connect
  (the generated WSGI application under ``wsgiref``), both driven by one :class:`Stub`
  that records each call's headers and fails the first N calls with UNAVAILABLE;
* a "black hole": a listening socket that never accepts, so every call times out;
* for TLS, a ``grpc.aio`` server built by taskcache's own ``build_grpc_server`` (the real
  servicer on an in-memory catalog) with a self-signed certificate made by ``openssl``.

The restart test runs a real ``taskcache serve`` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from flyteidl2.cacheservice import cacheservice_pb2 as base_pb2
from flyteidl2.cacheservice.v2 import cacheservice_connect as scoped_connect
from flyteidl2.cacheservice.v2 import cacheservice_pb2_grpc as scoped_grpc

import server_process
import taskcache
from builders import int_map, make_key
from certificates import Certificate, make_certificate
from server_process import ServerProcess, free_port
from taskcache import (
    CacheStatus,
    DeadlineExceededError,
    Entry,
    NotFoundError,
    UnavailableError,
)
from taskcache.clients.transports import RetryPolicy

pytestmark = pytest.mark.slow

SCHEMES = ("http", "grpc")
TOKEN = "s3cret-token"


def get_once(target: str, mode: str, **options: Any) -> Entry:
    """``get(make_key())`` through a fresh ``mode`` ("sync" or "async") client of ``target``."""
    if mode == "async":

        async def scenario() -> Entry:
            async with taskcache.open_async(target, **options) as client:
                return await client.get(make_key())

        return asyncio.run(scenario())
    with taskcache.open(target, **options) as client:
        return client.get(make_key())


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def retry_delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every retry delay the policy hands out, and wait 0 s instead."""
    granted: list[float] = []
    original = RetryPolicy.delays

    def counting(self: RetryPolicy) -> Iterator[float]:
        for delay in original(self):
            granted.append(delay)
            yield 0.0

    monkeypatch.setattr(RetryPolicy, "delays", counting)
    return granted


# --- stub servers ------------------------------------------------------------------------


@dataclass
class Stub:
    """What both stub transports do: count calls, keep their headers, fail on demand.

    The first ``unavailable`` calls fail with ``failure`` (UNAVAILABLE unless told); later
    Gets answer ``outputs`` (NOT_FOUND if None).
    """

    unavailable: int = 0
    outputs: Any = None
    failure: str = "UNAVAILABLE"
    calls: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(
        self, *, unavailable: int = 0, outputs: Any = None, failure: str = "UNAVAILABLE"
    ) -> None:
        with self._lock:
            self.unavailable, self.outputs, self.calls = unavailable, outputs, 0
            self.failure = failure
            self.headers.clear()

    def get(self, headers: dict[str, str]) -> tuple[str, Any]:
        """Return ("OK", response) or (status code name, message)."""
        with self._lock:
            self.calls += 1
            self.headers.append(headers)
            if self.calls <= self.unavailable:
                return self.failure, f"stub: call {self.calls} refused"
            if self.outputs is None:
                return "NOT_FOUND", "stub: no entry"
            response = base_pb2.GetCacheResponse()
            response.output.output_literals.CopyFrom(self.outputs)
            response.output.metadata.source_identifier.CopyFrom(make_key().identifier)
            return "OK", response


class GrpcStub(scoped_grpc.CacheServiceServicer):  # type: ignore[misc]
    def __init__(self, stub: Stub) -> None:
        self._stub = stub

    def Get(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        headers = {name: str(value) for name, value in context.invocation_metadata()}
        # gRPC keeps the deadline out of the metadata; record what is left of it instead.
        headers["grpc-time-remaining"] = str(context.time_remaining())
        code, answer = self._stub.get(headers)
        if code != "OK":
            context.abort(getattr(grpc.StatusCode, code), answer)
        return answer


class ConnectStub(scoped_connect.CacheServiceSync):
    def __init__(self, stub: Stub) -> None:
        self._stub = stub

    def get(self, request: Any, ctx: RequestContext[Any, Any]) -> Any:
        headers = {name.lower(): value for name, value in ctx.request_headers().items()}
        code, answer = self._stub.get(headers)
        if code != "OK":
            raise ConnectError(Code[code], answer)
        return answer


def _bounded_input(app: Any) -> Any:
    """WSGI middleware: hand the app exactly Content-Length bytes of body.

    (wsgiref's ``wsgi.input`` is the raw socket; connectrpc's error path reads it to EOF,
    which would wait for the client to close the connection.)
    """

    def bounded(environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
        return app(environ, start_response)

    return bounded


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class StubServers:
    stub: Stub
    grpc_port: int
    http_port: int

    def target(self, scheme: str) -> str:
        port = self.http_port if scheme == "http" else self.grpc_port
        return f"{scheme}://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stub_servers() -> Iterator[StubServers]:
    stub = Stub()
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=4))
    scoped_grpc.add_CacheServiceServicer_to_server(GrpcStub(stub), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    app = _bounded_input(scoped_connect.CacheServiceWSGIApplication(ConnectStub(stub)))
    http_server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    http_thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    http_thread.start()
    try:
        yield StubServers(stub, grpc_port, http_server.server_port)
    finally:
        http_server.shutdown()
        http_server.server_close()
        http_thread.join(timeout=5)
        grpc_server.stop(grace=None).wait(timeout=5)


@pytest.fixture
def stub(stub_servers: StubServers) -> Stub:
    stub_servers.stub.reset()
    return stub_servers.stub


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port whose listener never accepts: connections hang, calls time out."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


# --- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_no_server_is_unavailable_after_the_retries(
    scheme: str, mode: str, retry_delays: list[float], tmp_path: Path
) -> None:
    target = f"{scheme}://127.0.0.1:{free_port()}"
    with pytest.raises(UnavailableError):
        get_once(target, mode, storage=str(tmp_path), timeout=2, max_retries=2)

    assert len(retry_delays) == 2  # three attempts: the first and two retries


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unavailable_calls_are_retried_until_one_succeeds(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str, retry_delays: list[float]
) -> None:
    stub.reset(unavailable=2, outputs=int_map(o0=7))

    entry = get_once(stub_servers.target(scheme), mode, storage="/nonexistent", timeout=5)

    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    assert entry.outputs.read() == int_map(o0=7)
    assert stub.calls == 3
    assert len(retry_delays) == 2


@pytest.mark.parametrize("scheme", SCHEMES)
def test_retries_stop_at_max_retries(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str, retry_delays: list[float]
) -> None:
    stub.reset(unavailable=5, outputs=int_map(o0=7))
    with pytest.raises(UnavailableError, match="stub: call 2 refused"):
        get_once(stub_servers.target(scheme), mode, storage="/nonexistent", max_retries=1)
    assert stub.calls == 2
    assert len(retry_delays) == 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_other_errors_are_not_retried(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str, retry_delays: list[float]
) -> None:
    with pytest.raises(NotFoundError, match="stub: no entry"):
        get_once(stub_servers.target(scheme), mode, storage="/nonexistent")
    assert stub.calls == 1
    assert retry_delays == []


def test_retry_policy_backs_off_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(max_retries=6, initial_backoff=0.1, max_backoff=0.5, multiplier=2)
    for _ in range(50):
        delays = list(policy.delays())
        assert len(delays) == 6
        for attempt, delay in enumerate(delays):
            assert 0 <= delay <= min(0.5, 0.1 * 2**attempt)
    assert list(RetryPolicy(max_retries=0).delays()) == []


# --- deadlines ---------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.05, 0.0001], ids=["50ms", "100us"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_timeout_raises_deadline_exceeded(
    black_hole: int, scheme: str, mode: str, timeout: float, tmp_path: Path
) -> None:
    # The black hole never answers: only a deadline can end the call.
    target = f"{scheme}://127.0.0.1:{black_hole}"
    with pytest.raises(DeadlineExceededError):
        get_once(target, mode, storage=str(tmp_path), timeout=timeout, max_retries=0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_timeout_option_is_the_calls_deadline(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str
) -> None:
    # The deadline the server receives is the option's, not the 30 s default.
    with pytest.raises(NotFoundError):
        get_once(stub_servers.target(scheme), mode, storage="/nonexistent", timeout=7)

    (headers,) = stub.headers
    if scheme == "http":
        assert headers["connect-timeout-ms"] == "7000"
    else:
        # gRPC re-encodes the deadline at send time and the server re-reads it, so a few ms
        # either way are rounding; what matters is 7 s, not the 30 s default.
        assert 6 < float(headers["grpc-time-remaining"]) < 7.5


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_calls_timeout_overrides_the_clients_default(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str
) -> None:
    async def both_async() -> None:
        async with taskcache.open_async(target, storage="/nonexistent", timeout=7) as client:
            for timeout in (2, timedelta(seconds=3)):
                with pytest.raises(NotFoundError):
                    await client.get(make_key(), timeout=timeout)

    target = stub_servers.target(scheme)
    if mode == "async":
        asyncio.run(both_async())
    else:
        with taskcache.open(target, storage="/nonexistent", timeout=7) as client:
            for timeout in (2, timedelta(seconds=3)):
                with pytest.raises(NotFoundError):
                    client.get(make_key(), timeout=timeout)

    if scheme == "http":
        # The header carries what is left of the budget when the request goes out: the
        # call's own timeout, less the moments spent before sending (never the client's 7 s).
        sent = [int(headers["connect-timeout-ms"]) for headers in stub.headers]
        assert 1000 < sent[0] <= 2000
        assert 2000 < sent[1] <= 3000
    else:
        remaining = [float(headers["grpc-time-remaining"]) for headers in stub.headers]
        assert 1 < remaining[0] < 2.5
        assert 2 < remaining[1] < 3.5


@pytest.mark.parametrize("scheme", SCHEMES)
def test_deadline_exceeded_answered_with_time_left_is_retried(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str, retry_delays: list[float]
) -> None:
    stub.reset(unavailable=2, outputs=int_map(o0=7), failure="DEADLINE_EXCEEDED")

    entry = get_once(stub_servers.target(scheme), mode, storage="/nonexistent", timeout=30)

    assert entry.outputs.read() == int_map(o0=7)
    assert stub.calls == 3


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_timeout_is_the_whole_budget_retries_included(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str
) -> None:
    # Refused forever, with real backoff: 50 retries would take far longer than the budget,
    # so the budget, not the retry count, ends the call, naming the last attempt's outcome.
    stub.reset(unavailable=10**6)
    with pytest.raises(DeadlineExceededError, match="UNAVAILABLE") as raised:
        get_once(
            stub_servers.target(scheme), mode, storage="/nonexistent", timeout=0.5, max_retries=50
        )
    assert isinstance(raised.value.__cause__, UnavailableError)
    assert 1 <= stub.calls < 50
    # Every attempt was sent with what was left of the one budget, never a fresh 0.5 s.
    if scheme == "http":
        sent = [int(headers["connect-timeout-ms"]) for headers in stub.headers]
        assert sent == sorted(sent, reverse=True)
        assert sent[0] <= 500


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_call_that_spends_its_budget_is_not_retried(
    black_hole: int, scheme: str, mode: str, retry_delays: list[float], tmp_path: Path
) -> None:
    target = f"{scheme}://127.0.0.1:{black_hole}"
    with pytest.raises(DeadlineExceededError):
        get_once(target, mode, storage=str(tmp_path), timeout=0.05, max_retries=2)
    # The policy was asked for a delay once, and none was waited: the budget was gone.
    assert len(retry_delays) <= 1


# --- bearer token ------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_token_is_sent_as_a_bearer_authorization_header(
    stub_servers: StubServers, stub: Stub, scheme: str, mode: str
) -> None:
    target = stub_servers.target(scheme)
    for token in (TOKEN, None):
        with pytest.raises(NotFoundError):
            get_once(target, mode, storage="/nonexistent", token=token)

    with_token, without_token = stub.headers
    assert with_token.get("authorization") == f"Bearer {TOKEN}"
    assert "authorization" not in without_token


# --- a server restarted on the same ports ------------------------------------------------

OUTAGE_CALLS = 3  # failed calls per client while the server is down
RECOVERY_GUARD = 15.0  # only catches a client that never recovers, never a slow one


def test_clients_recover_when_the_server_restarts_on_the_same_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        database=f"sqlite:///{tmp_path}/db/catalog.db",
    )
    # Leaving the block stops the server with SIGTERM and checks it exits 0 (killed if not).
    with server, contextlib.ExitStack() as closing:
        # No retries: each call shows the transport's own state, and the polling loops below
        # keep asking (a gRPC channel reconnects only while calls come).
        options: dict[str, Any] = {
            "storage": str(tmp_path / "blobs"),
            "timeout": 2,
            "max_retries": 0,
        }
        clients = {
            "connect": closing.enter_context(taskcache.open(server.http_url, **options)),
            "grpc": closing.enter_context(
                taskcache.open(f"grpc://{server.grpc_target}", **options)
            ),
        }
        key = make_key()
        clients["connect"].put(key, int_map(o0=1))
        for client in clients.values():
            assert client.get(key).outputs.read() == int_map(o0=1)

        server.stop_and_check()
        for _ in range(OUTAGE_CALLS):
            for client in clients.values():
                with pytest.raises(UnavailableError):
                    client.get(key)

        ports = (server.port, server.grpc_port)
        monkeypatch.setattr(server_process, "_two_free_ports", lambda: ports)
        server.start()
        assert (server.port, server.grpc_port) == ports

        # The same client objects answer again: Connect on the next call, gRPC once its
        # reconnect backoff lets it try. (How soon is not asserted: that would be a timing
        # limit; the guard only stops a client that never recovers.)
        for name, client in clients.items():
            restarted = time.monotonic()
            while True:
                try:
                    entry = client.get(key)
                except UnavailableError:
                    assert time.monotonic() - restarted < RECOVERY_GUARD, f"{name} never recovered"
                    time.sleep(0.02)
                    continue
                assert entry.outputs.read() == int_map(o0=1)
                break


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


class TlsCacheServer:
    """taskcache's own gRPC server (``build_grpc_server``, scoped API, in-memory SQLite) on
    a TLS port, in a thread running its own event loop.
    """

    def __init__(self, certificate: Certificate) -> None:
        self._certificate = certificate
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._repository: Any = None
        self._executor = ThreadPoolExecutor(max_workers=2)
        self.port = 0

    async def _start(self) -> None:
        from taskcache.manager import AsyncCacheManager
        from taskcache.repositories.sqlite import SqliteRepository
        from taskcache.repositories.threaded import ThreadedRepository
        from taskcache.rpcs import SCOPED_SERVICE
        from taskcache.server.calls import CallObserver
        from taskcache.server.grpc_server import build_grpc_server
        from taskcache.server.health import HealthMonitor
        from taskcache.server.metrics import ServerMetrics
        from taskcache.server.service import Backend, CacheService, ScopedDialect

        self._repository = SqliteRepository(None)
        repository = ThreadedRepository(self._repository, self._executor)
        metrics = ServerMetrics()
        backend = Backend(AsyncCacheManager(repository), metrics, self._executor)
        self._server = build_grpc_server(
            {SCOPED_SERVICE: CacheService(backend, ScopedDialect())},
            CallObserver(metrics),
            HealthMonitor(repository, metrics),
            max_message_bytes=4 * 1024 * 1024,
        )
        credentials = grpc.ssl_server_credentials(
            [(self._certificate.key.read_bytes(), self._certificate.cert.read_bytes())]
        )
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
        await self._server.start()

    def start(self) -> TlsCacheServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(None), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._executor.shutdown(wait=True)
        if self._repository is not None:
            self._repository.close()


@pytest.fixture(scope="module")
def tls_server(certificate: Certificate) -> Iterator[TlsCacheServer]:
    server = TlsCacheServer(certificate)
    try:
        yield server.start()
    finally:
        server.stop()


def test_grpcs_with_the_ca_file_round_trips(
    tls_server: TlsCacheServer, certificate: Certificate, mode: str, tmp_path: Path
) -> None:
    target = f"grpcs://localhost:{tls_server.port}"
    options: dict[str, Any] = {"storage": str(tmp_path), "ca_file": str(certificate.cert)}
    key = make_key(name=f"tls.{uuid.uuid4().hex}")

    async def round_trip_async() -> Entry:
        async with taskcache.open_async(target, **options) as client:
            with pytest.raises(NotFoundError):
                await client.get(key)
            await client.put(key, int_map(o0=5))
            reservation = await client.get_or_extend_reservation(key, "A", timedelta(seconds=1))
            assert reservation.owner_id == "A"
            return await client.get(key)

    if mode == "async":
        entry = asyncio.run(round_trip_async())
    else:
        with taskcache.open(target, **options) as client:
            with pytest.raises(NotFoundError):
                client.get(key)
            client.put(key, int_map(o0=5))
            reservation = client.get_or_extend_reservation(key, "A", timedelta(seconds=1))
            assert reservation.owner_id == "A"
            entry = client.get(key)
    assert entry.status.cache_status is CacheStatus.CACHE_HIT
    assert entry.outputs.read() == int_map(o0=5)


def test_grpcs_without_the_ca_file_is_refused(
    tls_server: TlsCacheServer, mode: str, tmp_path: Path
) -> None:
    target = f"grpcs://localhost:{tls_server.port}"
    with pytest.raises(UnavailableError):
        get_once(target, mode, storage=str(tmp_path), timeout=5, max_retries=0)


def test_plaintext_grpc_to_the_tls_port_fails(tls_server: TlsCacheServer, tmp_path: Path) -> None:
    target = f"grpc://127.0.0.1:{tls_server.port}"
    with (
        taskcache.open(target, storage=str(tmp_path), timeout=5, max_retries=0) as client,
        pytest.raises(UnavailableError),
    ):
        client.get(make_key())


def test_update_deletes_the_replaced_blob_under_the_shared_storage_root(tmp_path: Path) -> None:
    storage = tmp_path / "blobs"
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        database=f"sqlite://{tmp_path}/server.db",
        storage=str(storage),
    ).start()
    try:
        with taskcache.open(
            f"grpc://{server.grpc_target}", storage=str(storage), inline_max_bytes=0
        ) as client:
            key = make_key()
            client.put(key, int_map(o0=1))
            first = client.get(key).outputs.uri
            client.update(key, int_map(o0=2))
            second = client.get(key).outputs.uri
            assert first is not None and second is not None and first != second
            assert not Path(first).exists()
            assert Path(second).exists()
    finally:
        assert server.stop() == 0


def test_a_shed_call_is_retried_like_an_outage(retry_delays: list[float]) -> None:
    from taskcache.clients.transports import call_with_retries
    from taskcache.errors import ResourceExhaustedError, error_for_code

    assert isinstance(error_for_code("resource_exhausted", "busy"), ResourceExhaustedError)
    attempts: list[int] = []

    def shed_twice() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ResourceExhaustedError("too many calls in flight")
        return "done"

    assert call_with_retries(shed_twice, RetryPolicy(max_retries=5)) == "done"
    assert len(attempts) == 3
    assert len(retry_delays) == 2
