"""``taskcache serve`` with TLS, mutual TLS and bearer tokens, end to end.

Real ``taskcache serve`` subprocesses with certificates made by ``openssl`` in the test: taskcache's
own clients over https:// and grpcs://, raw Flyte stubs for the unscoped APIs, plaintext
refused, tokens and their scopes on both transports and all three services, /healthz, gRPC
health and /metrics, and a SIGHUP re-reading the token file. Plus the token-file rules and
the TLS settings on their own.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pyqwest
import pytest
from connectrpc.errors import ConnectError
from flyteidl.cacheservice import cacheservice_pb2 as flyte1_pb2
from flyteidl.cacheservice import cacheservice_pb2_grpc as flyte1_grpc
from flyteidl2.cacheservice import cacheservice_connect as unscoped_connect
from flyteidl2.cacheservice import cacheservice_pb2 as unscoped_pb2
from flyteidl2.cacheservice import cacheservice_pb2_grpc as unscoped_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import taskcache
from builders import int_map, make_key
from certificates import Certificate, make_certificate
from server_process import ServerProcess, http_get
from taskcache import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from taskcache.repositories.base import Scope
from taskcache.server.auth import TokenAuthority, parse_token_file, token_digest
from taskcache.server.runner import serve
from taskcache.server.scope import UNSCOPED
from taskcache.server.settings import load_settings

pytestmark = pytest.mark.slow

ADMIN = "admin-token-0123456789"
ML = "ml-token-9876543210"
ML_SCOPE = ("acme", "ml", "dev")
OTHER_SCOPE = ("acme", "web", "dev")
TOKEN_FILE = f"""# operators
{ADMIN}

{ML} acme/ml/*   # the ML team, every domain
"""
CALL_OPTIONS: dict[str, Any] = {"timeout": 5, "max_retries": 0}


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def server_context(ca: Certificate, client: Certificate | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@dataclass(frozen=True)
class Certificates:
    """``server`` is signed by ``ca`` (which clients trust), ``client`` by ``client_ca``
    (which the mutual-TLS server admits clients with).
    """

    ca: Certificate
    server: Certificate
    client_ca: Certificate
    client: Certificate


@pytest.fixture(scope="module")
def certs(folder: Path) -> Certificates:
    ca = make_certificate(folder, "ca")
    client_ca = make_certificate(folder, "client-ca")
    return Certificates(
        ca=ca,
        server=make_certificate(folder, "server", issuer=ca),
        client_ca=client_ca,
        client=make_certificate(folder, "client", issuer=client_ca),
    )


def start(folder: Path, name: str, args: list[str], context: ssl.SSLContext | None) -> Any:
    return ServerProcess(
        home=folder / name,
        log_path=folder / f"{name}.log",
        database=f"sqlite://{folder}/{name}.db",
        storage=str(folder / f"{name}-blobs"),
        extra_args=args,
        ssl_context=context,
    ).start()


@pytest.fixture(scope="module")
def tls_server(folder: Path, certs: Certificates) -> Iterator[ServerProcess]:
    """TLS on both ports and the two tokens; /metrics open."""
    tokens = folder / "tokens.txt"
    tokens.write_text(TOKEN_FILE)
    tls = ["--tls-cert-file", str(certs.server.cert), "--tls-key-file", str(certs.server.key)]
    tls += ["--auth-token-file", str(tokens)]
    server = start(folder, "tls", tls, server_context(certs.ca))
    try:
        yield server
    finally:
        server.stop_and_check()


def targets(server: ServerProcess) -> dict[str, str]:
    return {
        "connect": f"https://localhost:{server.port}",
        "grpc": f"grpcs://localhost:{server.grpc_port}",
    }


@pytest.fixture(params=["connect", "grpc"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def round_trip(target: str, **options: Any) -> None:
    """Miss, put, hit through a fresh sync client; the hit must return what was put."""
    key = make_key(name=f"security.{uuid.uuid4().hex}")
    with taskcache.open(target, storage="memory://security", **CALL_OPTIONS, **options) as client:
        with pytest.raises(NotFoundError):
            client.get(key)
        client.put(key, int_map(o0=7))
        assert client.get(key).outputs.read() == int_map(o0=7)


def test_taskcache_clients_round_trip_over_tls_with_a_scoped_token(
    tls_server: ServerProcess, certs: Certificates, transport: str
) -> None:
    target = targets(tls_server)[transport]
    round_trip(target, ca_file=str(certs.ca.cert), token=ML, scope=ML_SCOPE)
    round_trip(target, ca_file=str(certs.ca.cert), token=ADMIN, scope=OTHER_SCOPE)


def test_the_async_client_round_trips_over_tls(
    tls_server: ServerProcess, certs: Certificates, transport: str
) -> None:
    key = make_key(name=f"security.{uuid.uuid4().hex}")
    options = {"ca_file": str(certs.ca.cert), "token": ADMIN, **CALL_OPTIONS}

    async def scenario() -> None:
        target = targets(tls_server)[transport]
        async with taskcache.open_async(target, storage="memory://sec", **options) as client:
            await client.put(key, int_map(o0=3))
            assert (await client.get(key)).outputs.read() == int_map(o0=3)

    asyncio.run(scenario())


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_plaintext_is_refused_on_both_ports(tls_server: ServerProcess, scheme: str) -> None:
    port = tls_server.port if scheme == "http" else tls_server.grpc_port
    with (
        taskcache.open(f"{scheme}://127.0.0.1:{port}", token=ADMIN, **CALL_OPTIONS) as client,
        pytest.raises(UnavailableError),
    ):
        client.get(make_key())


@pytest.mark.parametrize("token", [None, "not-a-token", f"{ADMIN}x", ADMIN[:-1]])
def test_a_missing_or_unknown_token_is_unauthenticated(
    tls_server: ServerProcess, certs: Certificates, transport: str, token: str | None
) -> None:
    target = targets(tls_server)[transport]
    with (
        taskcache.open(target, ca_file=str(certs.ca.cert), token=token, **CALL_OPTIONS) as c,
        pytest.raises(UnauthenticatedError) as raised,
    ):
        c.get(make_key())
    assert ADMIN not in str(raised.value)


def test_a_scope_outside_the_token_is_permission_denied(
    tls_server: ServerProcess, certs: Certificates, transport: str
) -> None:
    target = targets(tls_server)[transport]
    options = {"ca_file": str(certs.ca.cert), "token": ML, **CALL_OPTIONS}
    for scope in (OTHER_SCOPE, ("acme", "mlx", "dev"), ("other", "ml", "dev")):
        with (
            taskcache.open(target, scope=scope, **options) as client,
            pytest.raises(PermissionDeniedError),
        ):
            client.put(make_key(), int_map(o0=1))


def unscoped_connect_get(server: ServerProcess, ca: Certificate, token: str | None) -> str:
    """Return the Connect code name (or OK) of a flyteidl2 unscoped Get over https."""
    http = pyqwest.SyncClient(pyqwest.SyncHTTPTransport(tls_ca_cert=ca.cert.read_bytes()))
    client = unscoped_connect.CacheServiceClientSync(
        f"https://localhost:{server.port}", http_client=http, timeout_ms=5000
    )
    headers = dict(bearer(token)) if token else None
    try:
        client.get(unscoped_pb2.GetCacheRequest(key=uuid.uuid4().hex), headers=headers)
    except ConnectError as error:
        return error.code.name
    finally:
        client.close()
    return "OK"


def grpc_code(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return str(error.code().name)
    return "OK"


def test_the_unscoped_apis_need_an_all_scope_token(
    tls_server: ServerProcess, certs: Certificates
) -> None:
    credentials = grpc.ssl_channel_credentials(certs.ca.cert.read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.grpc_port}", credentials) as channel:
        flyte1 = flyte1_grpc.CacheServiceStub(channel)
        unscoped = unscoped_grpc.CacheServiceStub(channel)

        def codes(token: str | None) -> list[str]:
            metadata = bearer(token) if token else ()
            return [
                grpc_code(
                    lambda: flyte1.Get(
                        flyte1_pb2.GetCacheRequest(key="k"), metadata=metadata, timeout=5
                    )
                ),
                grpc_code(
                    lambda: unscoped.Get(
                        unscoped_pb2.GetCacheRequest(key="k"), metadata=metadata, timeout=5
                    )
                ),
                unscoped_connect_get(tls_server, certs.ca, token),
            ]

        assert codes(None) == ["UNAUTHENTICATED"] * 3
        assert codes(ML) == ["PERMISSION_DENIED"] * 3
        assert codes(ADMIN) == ["NOT_FOUND"] * 3


def test_health_reflection_and_metrics_stay_open(
    tls_server: ServerProcess, certs: Certificates
) -> None:
    context = server_context(certs.ca)
    assert http_get(f"{tls_server.http_url}/healthz", context=context).status == 200
    assert http_get(f"{tls_server.http_url}/metrics", context=context).status == 200
    credentials = grpc.ssl_channel_credentials(certs.ca.cert.read_bytes())
    with grpc.secure_channel(f"localhost:{tls_server.grpc_port}", credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_tokens_never_reach_the_log(tls_server: ServerProcess) -> None:
    log = tls_server.log_text()
    assert "bearer tokens required" in log
    for token in (ADMIN, ML, "not-a-token"):
        assert token not in log


@pytest.fixture(scope="module")
def mtls_server(
    folder: Path,
    certs: Certificates,
) -> Iterator[ServerProcess]:
    args = ["--tls-cert-file", str(certs.server.cert), "--tls-key-file", str(certs.server.key)]
    args += ["--tls-client-ca-file", str(certs.client_ca.cert)]
    server = start(folder, "mtls", args, server_context(certs.ca, certs.client))
    try:
        yield server
    finally:
        server.stop_and_check()


def test_mutual_tls_admits_a_client_certificate_signed_by_the_client_ca(
    mtls_server: ServerProcess, certs: Certificates, transport: str
) -> None:
    round_trip(
        targets(mtls_server)[transport],
        ca_file=str(certs.ca.cert),
        client_cert=str(certs.client.cert),
        client_key=str(certs.client.key),
    )


@pytest.mark.parametrize("identity", ["none", "foreign"])
def test_mutual_tls_refuses_clients_without_an_admitted_certificate(
    mtls_server: ServerProcess,
    certs: Certificates,
    transport: str,
    identity: str,
) -> None:
    # "foreign": a valid certificate, but not signed by the client CA.
    options: dict[str, Any] = {"ca_file": str(certs.ca.cert), **CALL_OPTIONS}
    if identity == "foreign":
        options |= {"client_cert": str(certs.server.cert), "client_key": str(certs.server.key)}
    with (
        taskcache.open(targets(mtls_server)[transport], **options) as client,
        pytest.raises(UnavailableError),
    ):
        client.get(make_key())


def hang_up(server: ServerProcess, logged: str) -> None:
    """Send SIGHUP and wait until the server logs ``logged`` once more than before."""
    seen = server.log_text().count(logged)
    server.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log_text().count(logged) == seen:
        assert time.monotonic() < deadline, f"no {logged!r} after SIGHUP:\n{server.log_text()}"
        time.sleep(0.05)


def test_sighup_rereads_the_token_file_and_metrics_auth_guards_metrics(folder: Path) -> None:
    tokens = folder / "reloaded.txt"
    tokens.write_text(f"{ADMIN}\n")
    server = start(
        folder, "reload", ["--auth-token-file", str(tokens), "--metrics-auth"], context=None
    )
    try:
        target = f"grpc://{server.grpc_target}"
        assert http_get(f"{server.http_url}/metrics").status == 401
        assert http_get(f"{server.http_url}/metrics", headers=dict(bearer(ML))).status == 401
        assert http_get(f"{server.http_url}/metrics", headers=dict(bearer(ADMIN))).status == 200
        assert http_get(f"{server.http_url}/healthz").status == 200
        round_trip(target, token=ADMIN)
        with pytest.raises(UnauthenticatedError):
            round_trip(target, token=ML, scope=ML_SCOPE)

        tokens.write_text(f"{ML} acme/ml/*\n")
        hang_up(server, "reloaded:")
        round_trip(target, token=ML, scope=ML_SCOPE)
        with pytest.raises(UnauthenticatedError):
            round_trip(target, token=ADMIN)

        # A broken file is not loaded: the tokens in force stay.
        tokens.write_text(f"{ADMIN} not-a-scope\n")
        hang_up(server, "not reloaded")
        round_trip(target, token=ML, scope=ML_SCOPE)
        assert ADMIN not in server.log_text()
        assert ML not in server.log_text()
    finally:
        server.stop_and_check()


# --- the token file and the settings, without a server ----------------------------------


def test_token_file_patterns_match_whole_parts(tmp_path: Path) -> None:
    grants = parse_token_file(
        "# c\n\nbare\nglob a*/ml/* x/y/z  # trailing comment\n", tmp_path / "t"
    )
    bare, glob = grants
    assert bare.digest == token_digest("bare") and bare.patterns is None
    assert "bare" not in repr(bare)
    assert bare.allows(UNSCOPED)
    assert bare.allows(Scope("any", "thing", "here"))
    assert glob.allows(Scope("acme", "ml", "dev"))
    assert glob.allows(Scope("a", "ml", "prod"))
    assert glob.allows(Scope("x", "y", "z"))
    assert not glob.allows(Scope("acme", "mlx", "dev"))
    assert not glob.allows(Scope("b", "ml", "dev"))
    assert not glob.allows(Scope("x", "y", "zz"))
    # "*" does not cross "/": a project named "ml/evil" is not "ml".
    assert not glob.allows(Scope("acme", "ml/x", "dev"))
    assert not glob.allows(UNSCOPED)


def test_a_match_all_pattern_is_still_not_an_all_scope_token(tmp_path: Path) -> None:
    (grant,) = parse_token_file("tok */*/*\n", tmp_path / "t")
    assert grant.allows(Scope("a", "b", "c"))
    assert not grant.allows(UNSCOPED)


@pytest.mark.parametrize(
    "text",
    ["secret-1 acme/ml\n", "secret-1 acme//ml\n", "secret-1\nsecret-1\n", "# none\n\n"],
)
def test_malformed_token_files_are_refused_without_echoing_tokens(
    tmp_path: Path, text: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        parse_token_file(text, tmp_path / "t")
    assert raised.value.field == "auth_token_file"
    assert "secret-1" not in str(raised.value)


def test_the_authority_reads_bearer_headers(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{ML} acme/ml/*\n")
    authority = TokenAuthority(path)
    assert authority.authenticate({"authorization": f"bearer {ML}"}).patterns is not None
    for headers in ({}, {"authorization": ML}, {"authorization": "Bearer "}):
        with pytest.raises(UnauthenticatedError):
            authority.authenticate(headers)
    with pytest.raises(PermissionDeniedError):
        authority.authenticate({"authorization": f"Bearer {ML}"}).authorize(Scope("a", "b", "c"))


def test_tls_settings_come_from_flags_env_and_config(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('tls_cert_file = "/c/cert.pem"\ntls-key-file = "/c/key.pem"\n')
    env = {"TASKCACHE_TLS_KEY_FILE": "/e/key.pem", "TASKCACHE_METRICS_AUTH": "yes"}
    env["TASKCACHE_AUTH_TOKEN_FILE"] = "/e/tokens"
    settings = load_settings({"tls_client_ca_file": "/f/ca.pem"}, environ=env, config_file=config)
    assert settings.tls
    assert (settings.tls_cert_file, settings.tls_key_file) == ("/c/cert.pem", "/e/key.pem")
    assert settings.tls_client_ca_file == "/f/ca.pem"
    assert settings.auth_token_file == "/e/tokens"
    assert settings.metrics_auth is True
    assert not load_settings({}, environ={}).tls


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"tls_cert_file": "c.pem"}, "tls_key_file"),
        ({"tls_key_file": "k.pem"}, "tls_key_file"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_client_ca_file"),
        ({"metrics_auth": True}, "metrics_auth"),
        ({"metrics_auth": "maybe"}, "metrics_auth"),
    ],
)
def test_incomplete_security_settings_are_refused(flags: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        load_settings(flags, environ={})
    assert raised.value.field == field


@pytest.mark.parametrize("broken", ["garbage", "mismatched key", "garbage client CA"])
def test_unusable_certificate_files_stop_the_server_with_a_clear_error(
    tmp_path: Path, certs: Certificates, broken: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    flags = {"tls_cert_file": str(certs.server.cert), "tls_key_file": str(certs.server.key)}
    field = "tls_cert_file"
    if broken == "garbage":
        flags["tls_cert_file"] = str(garbage)
    elif broken == "mismatched key":
        flags["tls_key_file"] = str(certs.client.key)
    else:
        flags["tls_client_ca_file"] = str(garbage)
        field = "tls_client_ca_file"
    settings = load_settings(
        {**flags, "database": "memory://", "port": 0, "grpc_port": 0}, environ={}
    )
    with pytest.raises(InvalidArgumentError) as raised:
        asyncio.run(serve(settings))
    assert raised.value.field == field


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open("grpcs://localhost:1", client_cert="me.pem")
    assert raised.value.field == "client_key"
