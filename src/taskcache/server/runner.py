"""Run both listeners (Connect over uvicorn, gRPC over ``grpc.aio``) in one asyncio loop.

It wires the parts together and owns their lifetimes; it must not handle an RPC itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import grpc
import uvicorn

from taskcache.datacatalog_manager import DatacatalogManager
from taskcache.errors import InvalidArgumentError, UnavailableError
from taskcache.manager import AsyncCacheManager
from taskcache.repositories.base import AsyncRepository, OperatorRepository
from taskcache.repositories.datacatalog_base import ThreadedDatacatalogRepository
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from taskcache.resolver import (
    open_async_repository,
    open_datacatalog_repository,
    open_repository,
    redact,
)
from taskcache.rpcs import (
    DATACATALOG_SERVICE,
    FLYTE1_SERVICE,
    SCOPED_SERVICE,
    UNSCOPED_SERVICE,
    Service,
)
from taskcache.server.auth import Authenticator, EitherAuthenticator, TokenAuthority
from taskcache.server.breaker import CallGate, CircuitBreaker
from taskcache.server.calls import CallObserver, ServiceCore
from taskcache.server.cleanup import Cleaner
from taskcache.server.connect_app import CONNECT_SERVICES, ConnectApp
from taskcache.server.datacatalog_service import DataCatalogService
from taskcache.server.grpc_server import build_grpc_server
from taskcache.server.health import HealthMonitor
from taskcache.server.metrics import ServerMetrics
from taskcache.server.service import (
    Backend,
    CacheService,
    Flyte1Dialect,
    ScopedDialect,
    UnscopedDialect,
)
from taskcache.server.settings import Settings
from taskcache.server.tracing import configure_tracing
from taskcache.storage import BlobStore

logger = logging.getLogger("taskcache.server")

_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_BACKLOG: Final = 2048


@dataclass(frozen=True)
class WorkerPlace:
    """Where one worker of a supervisor (:mod:`taskcache.server.workers`) stands: ``worker``
    (from 1) of ``workers``. Such a worker binds both ports with SO_REUSEPORT, next to its
    siblings and the supervisor's placeholder sockets; the kernel spreads connections.
    """

    worker: int
    workers: int


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT.

    (uvicorn re-raises a captured signal after shutting down, which would turn a clean
    SIGTERM shutdown into death by signal instead of exit status 0.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_socket(
    host: str, port: int, *, share: bool, listen: bool, listener: str = "Connect"
) -> socket.socket:
    """Return a TCP socket bound to ``host``:``port`` (0: a free port), listening if
    ``listen``, with SO_REUSEPORT if ``share``. Bound here so a busy port is a clean
    UnavailableError naming the ``listener``, not uvicorn's sys.exit.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        # The explicit IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on connections whose
        # socket says proto TCP, and without it Nagle plus delayed ACKs add ~40 ms per call.
        bound = socket.socket(family, kind, proto)
        try:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share:
                bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            bound.bind(address)
            if listen:
                bound.listen(_BACKLOG)
        except BaseException:
            bound.close()
            raise
        return bound
    except OSError as error:
        raise UnavailableError(
            f"cannot listen on {_host_port(host, port)} ({listener}): {error}"
        ) from error


def _read_pem(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise InvalidArgumentError(f"cannot read {path}: {error}", field=option) from error


def _check_tls_files(cert_file: str, key_file: str, client_ca: str | None) -> None:
    """Raise InvalidArgumentError unless the PEM files load: gRPC would only report a
    failure to bind, and uvicorn a traceback.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as error:
        raise InvalidArgumentError(
            f"{cert_file} and {key_file} are not a PEM certificate and its key: {error}",
            field="tls_cert_file",
        ) from error
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as error:
            raise InvalidArgumentError(
                f"{client_ca} is not a PEM CA bundle: {error}", field="tls_client_ca_file"
            ) from error


def _grpc_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Return the gRPC TLS credentials of ``settings`` (None: plaintext), requiring client
    certificates when a client CA is set. Raises InvalidArgumentError for unusable files.
    """
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file
    _check_tls_files(settings.tls_cert_file, settings.tls_key_file, client_ca)
    return grpc.ssl_server_credentials(
        [
            (
                _read_pem(settings.tls_key_file, "tls_key_file"),
                _read_pem(settings.tls_cert_file, "tls_cert_file"),
            )
        ],
        root_certificates=None if client_ca is None else _read_pem(client_ca, "tls_client_ca_file"),
        require_client_auth=client_ca is not None,
    )


def _uvicorn_tls(settings: Settings) -> dict[str, Any]:
    """Return uvicorn's ssl options for ``settings`` (empty: plaintext)."""
    if not settings.tls:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": settings.tls_cert_file,
        "ssl_keyfile": settings.tls_key_file,
    }
    if settings.tls_client_ca_file is not None:
        options["ssl_ca_certs"] = settings.tls_client_ca_file
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def _add_grpc_port(
    server: grpc.aio.Server, host: str, port: int, credentials: grpc.ServerCredentials | None
) -> int:
    address = _host_port(host, port)
    try:
        bound: int = (
            server.add_insecure_port(address)
            if credentials is None
            else server.add_secure_port(address, credentials)
        )
    except RuntimeError as error:
        raise UnavailableError(
            f"cannot listen on {_host_port(host, port)} (gRPC): {error}"
        ) from error
    if bound == 0:  # older grpcio reports failure this way
        raise UnavailableError(f"cannot listen on {_host_port(host, port)} (gRPC)")
    return bound


def _authenticator(settings: Settings) -> Authenticator | None:
    """Return what checks bearer tokens: the token file's, the JWKS file's, either of both,
    or None (no authentication). Raises InvalidArgumentError for an unusable file.
    """
    tokens = TokenAuthority(settings.auth_token_file) if settings.auth_token_file else None
    if settings.auth_jwks_file is None:
        return tokens
    # Imported only when configured: PyJWT is needed by JWT users alone.
    from taskcache.server.jwt_auth import JwtAuthority  # noqa: PLC0415

    assert settings.auth_jwt_issuer is not None and settings.auth_jwt_audience is not None
    jwts = JwtAuthority(
        settings.auth_jwks_file,
        issuer=settings.auth_jwt_issuer,
        audience=settings.auth_jwt_audience,
        scopes_claim=settings.auth_jwt_scopes_claim,
    )
    return jwts if tokens is None else EitherAuthenticator(tokens, jwts)


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    service_type: type[CacheService] = CacheService,
    place: WorkerPlace | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then drain and return.

    Shutdown stops accepting new calls, gives in-flight ones up to
    ``settings.shutdown_grace`` seconds, then closes the repository. SIGHUP re-reads the token
    and JWKS files (certificates are read once, at startup). Raises InvalidArgumentError for a bad
    database setting or an unreadable certificate or token file, UnavailableError if the
    database or a port cannot be opened.
    ``service_type`` builds the service cores (a subclass with canned answers lets benchmarks
    measure the transport stack alone); ``taskcache serve`` always uses the real one.
    ``place``: serve as that worker of a supervisor, sharing its ports.
    """
    loop = asyncio.get_running_loop()
    stop_event = stop if stop is not None else asyncio.Event()
    auth = _authenticator(settings)
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_event.set)
    if auth is not None:
        loop.add_signal_handler(signal.SIGHUP, auth.reload)
    try:
        # Runs SQLite calls and blob deletions.
        executor = ThreadPoolExecutor(settings.pool_size, thread_name_prefix="taskcache-db")
        try:
            repository = await open_async_repository(
                settings.database, executor=executor, pool_size=settings.pool_size
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        try:
            # Flyte 1's DataCatalog rows: a synchronous repository on the same database,
            # its calls run on the executor's threads.
            datacatalog = ThreadedDatacatalogRepository(
                await asyncio.to_thread(
                    open_datacatalog_repository, settings.database, pool_size=settings.pool_size
                ),
                executor,
            )
        except BaseException:
            executor.shutdown(wait=False)
            await repository.close()
            raise
        try:
            manager = AsyncCacheManager(
                repository,
                max_reservation_heartbeat=timedelta(seconds=settings.max_reservation_heartbeat),
                heartbeat_grace_multiplier=settings.heartbeat_grace_multiplier,
                default_ttl=(
                    None
                    if settings.default_ttl is None
                    else timedelta(seconds=settings.default_ttl)
                ),
            )
            backend = Backend(
                manager,
                ServerMetrics(worker=1 if place is None else place.worker),
                executor,
                _blobs(settings),
                auth,
            )
            try:
                async with _cleaning(settings, repository, backend, stop_event):
                    await _serve(settings, backend, datacatalog, stop_event, service_type, place)
            finally:
                # The hits' last access records, before the repository closes.
                await manager.flush_accesses()
        finally:
            await datacatalog.close()
            executor.shutdown(wait=True)
            await repository.close()
    finally:
        for signum in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    logger.info("taskcache server stopped")


def _blobs(settings: Settings) -> BlobStore | None:
    """Return the storage root of ``settings`` (None: none); InvalidArgumentError if its
    filesystem cannot be built (unknown protocol, package not installed, bad options).
    """
    if not settings.storage:
        return None
    try:
        return BlobStore(settings.storage, **settings.storage_options)
    except (ValueError, ImportError, TypeError) as error:
        raise InvalidArgumentError(f"{settings.storage!r}: {error}", field="storage") from error


@contextlib.asynccontextmanager
async def _cleaning(
    settings: Settings, repository: AsyncRepository, backend: Backend, stop: asyncio.Event
) -> AsyncIterator[None]:
    """Run the background cleanup beside the listeners when ``settings`` asks for one; on
    exit, let a run in progress finish (up to the shutdown grace) and close what it opened.
    """
    interval = settings.cleanup_interval
    if interval is None:
        yield
        return
    # The operator queries run on a synchronous repository: SQLite's own (so ``memory://``
    # cleans the catalog it serves), or a small PostgreSQL pool of its own (one connection
    # holds the advisory lock, one deletes).
    own: OperatorRepository | None = None
    if isinstance(repository, ThreadedRepository) and isinstance(
        repository.repository, SqliteRepository
    ):
        operator: OperatorRepository = repository.repository
    else:
        own = operator = await asyncio.to_thread(open_repository, settings.database, pool_size=2)
    cleaner = Cleaner(
        operator,
        backend.blobs,
        backend.metrics,
        interval=interval,
        max_bytes=settings.max_bytes,
        flush_accesses=backend.manager.flush_accesses,
    )
    logger.info(
        "background cleanup every %.1f s: expired entries (default TTL %s), size cap %s, blobs %s",
        interval,
        "none" if settings.default_ttl is None else f"{settings.default_ttl:g} s",
        "none" if settings.max_bytes is None else f"{settings.max_bytes} bytes",
        f"under {settings.storage}" if backend.blobs is not None else "kept (no --storage)",
    )
    task = asyncio.create_task(cleaner.run(stop), name="taskcache-cleanup")
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, settings.shutdown_grace)
        except TimeoutError:
            logger.warning("cleanup still running at shutdown; abandoned")
        if own is not None:
            await asyncio.to_thread(own.close)


async def _serve(
    settings: Settings,
    backend: Backend,
    datacatalog: ThreadedDatacatalogRepository,
    stop: asyncio.Event,
    service_type: type[CacheService],
    place: WorkerPlace | None,
) -> None:
    metrics = backend.metrics
    repository = backend.manager.repository
    metrics.watch_pool(repository.pool_stats)
    cores: dict[Service, CacheService] = {
        SCOPED_SERVICE: service_type(backend, ScopedDialect()),
        UNSCOPED_SERVICE: service_type(backend, UnscopedDialect()),
        FLYTE1_SERVICE: service_type(backend, Flyte1Dialect()),
    }
    tracer = configure_tracing(settings.otlp_endpoint)
    breaker = CircuitBreaker(settings.breaker_cooldown)
    # Only PostgreSQL's statements need each call in a task of its own (see CallGate).
    gate = CallGate(
        breaker, settings.max_in_flight, isolate=not isinstance(repository, ThreadedRepository)
    )
    metrics.watch_gate(lambda: gate.in_flight, lambda: breaker.refusing)
    observer = CallObserver(metrics, tracer, gate=gate)
    monitor = HealthMonitor(repository, metrics, breaker=breaker)

    grpc_cores: dict[Service, ServiceCore] = {
        **cores,
        DATACATALOG_SERVICE: DataCatalogService(
            backend, DatacatalogManager(datacatalog, backend.manager)
        ),
    }
    grpc_server = build_grpc_server(
        grpc_cores,
        observer,
        monitor,
        max_message_bytes=settings.max_message_bytes,
        share_port=place is not None,
    )
    grpc_port = _add_grpc_port(
        grpc_server, settings.host, settings.grpc_port, _grpc_credentials(settings)
    )
    http_socket = bind_socket(settings.host, settings.port, share=place is not None, listen=True)
    http_port: int = http_socket.getsockname()[1]
    app = ConnectApp(
        {service: cores[service] for service in CONNECT_SERVICES},
        observer,
        monitor,
        metrics,
        max_message_bytes=settings.max_message_bytes,
        metrics_auth=backend.auth if settings.metrics_auth else None,
    )
    http = _UvicornServer(
        uvicorn.Config(
            app,
            interface="asgi3",
            http="h11",
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)),
            **_uvicorn_tls(settings),
        )
    )

    try:
        await monitor.check()
        monitor.start()
        await grpc_server.start()
        http_task = asyncio.create_task(http.serve(sockets=[http_socket]), name="taskcache-http")
        try:
            await _run_until_stopped(http, http_task, stop, settings, http_port, grpc_port, place)
        finally:
            await monitor.mark_shutting_down()
            http.should_exit = True
            # Both listeners stop accepting at once and drain in parallel.
            await asyncio.gather(grpc_server.stop(settings.shutdown_grace), http_task)
    finally:
        await monitor.mark_shutting_down()  # idempotent; covers a failed start
        http_socket.close()
        if tracer is not None:
            await asyncio.to_thread(tracer.shutdown)


async def _run_until_stopped(
    http: uvicorn.Server,
    http_task: asyncio.Task[None],
    stop: asyncio.Event,
    settings: Settings,
    http_port: int,
    grpc_port: int,
    place: WorkerPlace | None,
) -> None:
    """Log the startup line once uvicorn listens, then wait for a stop signal (or for the
    HTTP server to end on its own).
    """
    while not http.started:
        if http_task.done():
            return  # failed during startup; the caller's gather re-raises its error
        await asyncio.sleep(0.005)
    logger.info(
        "taskcache %sserving Connect on %s://%s (/healthz, /metrics) and gRPC%s on %s; "
        "database %s, storage %s, %s",
        "" if place is None else f"worker {place.worker} of {place.workers} (pid {os.getpid()}) ",
        "https" if settings.tls else "http",
        _host_port(settings.host, http_port),
        " (TLS)" if settings.tls else "",
        _host_port(settings.host, grpc_port),
        redact(settings.database),
        settings.storage or "none (delete_blob disabled)",
        "bearer tokens required" if settings.authenticates else "no authentication",
    )
    stop_wait = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stop_wait, http_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
    logger.info("shutting down: draining in-flight calls (up to %.1f s)", settings.shutdown_grace)
