"""JWT bearer tokens verified against a JWKS file (``--auth-jwks-file``), with keys made here.

In-process: what :class:`~taskcache.server.jwt_auth.JwtAuthority` accepts (RS256 and ES256
tokens of a known ``kid``, for the configured issuer and audience, within ``exp``/``nbf``) and
refuses, the scopes claim, key rotation by reload, the settings. Through a real
``taskcache serve`` on both transports: allowed, denied, refused, the token file beside it,
SIGHUP re-reading the keys, and no token in the log.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

import taskcache
from builders import int_map, make_key
from server_process import ServerProcess
from taskcache import (
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from taskcache.repositories.base import Scope
from taskcache.server.jwt_auth import JwtAuthority
from taskcache.server.scope import UNSCOPED
from taskcache.server.settings import load_settings

pytestmark = pytest.mark.slow

ISSUER = "https://issuer.test"
AUDIENCE = "taskcache"
ML = Scope("acme", "ml", "dev")
WEB = Scope("acme", "web", "dev")
STATIC_TOKEN = "static-token-0123456789"


class Signer:
    """A private key and the JWK of its public half, under ``kid``."""

    def __init__(self, kid: str, algorithm: str) -> None:
        self.kid = kid
        self.algorithm = algorithm
        if algorithm == "RS256":
            self.key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        else:
            self.key = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwk["kid"] = kid

    def token(self, **claims: Any) -> str:
        """A token signed by this key: valid for a minute, for ISSUER/AUDIENCE, unless told."""
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 60, **claims}
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, self.key, algorithm=self.algorithm, headers={"kid": self.kid})


@pytest.fixture(scope="module")
def rsa_signer() -> Signer:
    return Signer("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ec_signer() -> Signer:
    return Signer("ec-1", "ES256")


def write_jwks(path: Path, *signers: Signer) -> Path:
    path.write_text(json.dumps({"keys": [signer.jwk for signer in signers]}))
    return path


def headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def authority(tmp_path: Path, rsa_signer: Signer, ec_signer: Signer) -> JwtAuthority:
    jwks = write_jwks(tmp_path / "jwks.json", rsa_signer, ec_signer)
    return JwtAuthority(jwks, issuer=ISSUER, audience=AUDIENCE)


# --- in-process --------------------------------------------------------------------------


@pytest.mark.parametrize("signer_name", ["rsa_signer", "ec_signer"])
def test_a_valid_token_may_use_the_scopes_it_lists(
    authority: JwtAuthority, request: pytest.FixtureRequest, signer_name: str
) -> None:
    signer: Signer = request.getfixturevalue(signer_name)
    grant = authority.authenticate(headers(signer.token(scope="openid acme/ml/*")))
    assert grant.allows(ML)
    assert not grant.allows(WEB)
    assert not grant.allows(UNSCOPED)
    with pytest.raises(PermissionDeniedError):
        grant.authorize(WEB)


def test_the_scopes_claim_forms(tmp_path: Path, rsa_signer: Signer) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", rsa_signer)
    default = JwtAuthority(jwks, issuer=ISSUER, audience=AUDIENCE)
    assert default.authenticate(headers(rsa_signer.token(scopes=["acme/web/*"]))).allows(WEB)
    everything = default.authenticate(headers(rsa_signer.token(scope="*")))
    assert everything.allows(WEB) and everything.allows(UNSCOPED)
    # No usable entry (none, or only other kinds of scope): no scope at all.
    for claims in ({}, {"scope": "openid profile"}, {"scope": 5}, {"scopes": ["a/b"]}):
        assert not default.authenticate(headers(rsa_signer.token(**claims))).allows(ML)
    custom = JwtAuthority(jwks, issuer=ISSUER, audience=AUDIENCE, scopes_claim="tc")
    token = rsa_signer.token(tc="acme/ml/dev", scope="*")
    grant = custom.authenticate(headers(token))
    assert grant.allows(ML) and not grant.allows(WEB)


def test_refused_tokens_are_unauthenticated_without_echoing_them(
    authority: JwtAuthority, rsa_signer: Signer
) -> None:
    stranger = Signer("rsa-1", "RS256")  # the known kid, another key
    unknown = Signer("rsa-9", "RS256")
    hours_ago = int(time.time()) - 7200
    refused = {
        "expired": rsa_signer.token(exp=hours_ago),
        "not yet valid": rsa_signer.token(nbf=int(time.time()) + 3600),
        "without exp": rsa_signer.token(exp=None),
        "another issuer": rsa_signer.token(iss="https://elsewhere.test"),
        "another audience": rsa_signer.token(aud="someone-else"),
        "another key": stranger.token(scope="*"),
        "an unknown kid": unknown.token(scope="*"),
        "a shared secret": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
            "secret-0123456789-0123456789-0123456789",
            algorithm="HS256",
            headers={"kid": "rsa-1"},
        ),
        "not a JWT": "not-a-jwt",
    }
    for reason, token in refused.items():
        with pytest.raises(UnauthenticatedError) as raised:
            authority.authenticate(headers(token))
        assert token not in str(raised.value), reason
    with pytest.raises(UnauthenticatedError):
        authority.authenticate({})


def test_reload_rotates_the_keys_and_keeps_them_when_the_file_breaks(
    tmp_path: Path, rsa_signer: Signer, ec_signer: Signer
) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", rsa_signer)
    authority = JwtAuthority(jwks, issuer=ISSUER, audience=AUDIENCE)
    write_jwks(jwks, ec_signer)
    assert authority.reload()
    authority.authenticate(headers(ec_signer.token()))
    with pytest.raises(UnauthenticatedError):
        authority.authenticate(headers(rsa_signer.token()))
    jwks.write_text("{not json")
    assert not authority.reload()
    authority.authenticate(headers(ec_signer.token()))


@pytest.mark.parametrize(
    "document",
    ['{"keys": []}', "[]", '{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', "{"],
)
def test_unusable_jwks_files_are_refused(tmp_path: Path, document: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(InvalidArgumentError) as raised:
        JwtAuthority(path, issuer=ISSUER, audience=AUDIENCE)
    assert raised.value.field == "auth_jwks_file"


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"auth_jwks_file": "k.json", "auth_jwt_audience": "a"}, "auth_jwt_issuer"),
        ({"auth_jwks_file": "k.json", "auth_jwt_issuer": "i"}, "auth_jwt_audience"),
        ({"auth_jwt_issuer": "i"}, "auth_jwt_issuer"),
        ({"auth_jwt_scopes_claim": "tc"}, "auth_jwt_scopes_claim"),
    ],
)
def test_incomplete_jwt_settings_are_refused(flags: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        load_settings(flags, environ={})
    assert raised.value.field == field


def test_jwt_settings_alone_allow_metrics_auth() -> None:
    flags = {"auth_jwks_file": "k.json", "auth_jwt_issuer": "i", "auth_jwt_audience": "a"}
    settings = load_settings({**flags, "metrics_auth": True}, environ={})
    assert settings.authenticates and settings.metrics_auth


# --- through a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def jwt_server(
    tmp_path_factory: pytest.TempPathFactory, rsa_signer: Signer
) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_path_factory.mktemp("jwt")
    jwks = write_jwks(folder / "jwks.json", rsa_signer)
    tokens = folder / "tokens.txt"
    tokens.write_text(f"{STATIC_TOKEN} acme/web/*\n")
    args = ["--auth-jwks-file", str(jwks), "--auth-jwt-issuer", ISSUER]
    args += ["--auth-jwt-audience", AUDIENCE, "--auth-token-file", str(tokens)]
    server = ServerProcess(
        home=folder / "home",
        log_path=folder / "server.log",
        database=f"sqlite://{folder}/jwt.db",
        storage=str(folder / "blobs"),
        extra_args=args,
    ).start()
    try:
        yield server, jwks
    finally:
        server.stop_and_check()


def round_trip(target: str, token: str, scope: Scope) -> None:
    key = make_key(name=f"jwt.{uuid.uuid4().hex}")
    options: dict[str, Any] = {"timeout": 5, "max_retries": 0, "token": token}
    with taskcache.open(
        target, storage="memory://jwt", scope=(scope.org, scope.project, scope.domain), **options
    ) as client:
        with pytest.raises(NotFoundError):
            client.get(key)
        client.put(key, int_map(o0=7))
        assert client.get(key).outputs.read() == int_map(o0=7)


@pytest.mark.parametrize("transport", ["connect", "grpc"])
def test_jwts_are_checked_on_both_transports(
    jwt_server: tuple[ServerProcess, Path], rsa_signer: Signer, transport: str
) -> None:
    server, _ = jwt_server
    target = server.http_url if transport == "connect" else f"grpc://{server.grpc_target}"
    token = rsa_signer.token(scope="acme/ml/*")
    round_trip(target, token, ML)
    round_trip(target, STATIC_TOKEN, WEB)  # the token file still works beside the JWKS
    with pytest.raises(PermissionDeniedError):
        round_trip(target, token, WEB)
    with pytest.raises(UnauthenticatedError):
        round_trip(target, rsa_signer.token(scope="*", exp=int(time.time()) - 3600), ML)
    assert token not in server.log_text()


def test_sighup_rereads_the_jwks_file(
    jwt_server: tuple[ServerProcess, Path], rsa_signer: Signer, ec_signer: Signer
) -> None:
    server, jwks = jwt_server
    target = f"grpc://{server.grpc_target}"
    with pytest.raises(UnauthenticatedError):
        round_trip(target, ec_signer.token(scope="*"), ML)
    write_jwks(jwks, rsa_signer, ec_signer)
    seen = server.log_text().count("JWKS file")
    server.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log_text().count("JWKS file") == seen:
        assert time.monotonic() < deadline, f"no reload after SIGHUP:\n{server.log_text()}"
        time.sleep(0.05)
    round_trip(target, ec_signer.token(scope="*"), ML)
    write_jwks(jwks, rsa_signer)
