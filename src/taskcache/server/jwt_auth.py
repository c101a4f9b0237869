"""JWT bearer tokens, verified against the keys of a JWKS file: the alternative (or the
companion) to the token file of :mod:`taskcache.server.auth`, behind the same
:class:`~taskcache.server.auth.Authenticator` seam.

A token is accepted when it is signed with RS256 or ES256 by a key of the file named by its
``kid`` header, was issued by the configured issuer for the configured audience, carries an
``exp`` that has not passed and no ``nbf`` still to come. Its scopes claim (``scope``, else
``scopes``, unless configured) lists the scopes it may use, as a space-separated string or a
list, in the token file's ``org/project/domain`` form with ``*`` globs; ``*`` alone grants
every scope, the unscoped APIs included. Entries of another form (OAuth scopes such as
``openid``) are ignored, and a token without any usable entry may use no scope.

Verification is PyJWT's. Tokens never appear in logs or error messages. Reading the keys again
(:meth:`JwtAuthority.reload`, on SIGHUP) lets keys rotate without a restart.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jwt

from taskcache.errors import InvalidArgumentError, UnauthenticatedError
from taskcache.server.auth import Grant, bearer_token, scope_pattern, token_digest
from taskcache.server.reloading import ReloadableFile

logger = logging.getLogger(__name__)

# Public-key signatures only: a shared-secret algorithm would let anyone holding the JWKS
# file mint tokens.
ALGORITHMS: Final = ("RS256", "ES256")
DEFAULT_SCOPES_CLAIMS: Final = ("scope", "scopes")
_ALL_SCOPES: Final = "*"
_FIELD: Final = "auth_jwks_file"


def read_jwks_file(path: str | Path) -> dict[str, jwt.PyJWK]:
    """Return the RS256 and ES256 keys of the JWKS file at ``path`` by key id.

    Keys of other kinds are skipped (and logged). Raises InvalidArgumentError (field
    ``auth_jwks_file``) if the file cannot be read, is not a JWKS document, lists a key
    without a ``kid`` or a ``kid`` twice, or holds no usable key.
    """
    file = Path(path).expanduser()
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InvalidArgumentError(f"cannot read {file}: {error}", field=_FIELD) from error
    listed = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        raise InvalidArgumentError(f"{file} is not a JWKS document (no keys list)", field=_FIELD)
    keys: dict[str, jwt.PyJWK] = {}
    for index, entry in enumerate(listed):
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not kid:
            raise InvalidArgumentError(f"{file}: key {index} has no kid", field=_FIELD)
        if kid in keys:
            raise InvalidArgumentError(f"{file}: kid {kid!r} listed twice", field=_FIELD)
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError as error:
            logger.warning("%s: key %r skipped: %s", file, kid, error)
            continue
        if key.algorithm_name not in ALGORITHMS:
            logger.warning("%s: key %r skipped: %s is not allowed", file, kid, key.algorithm_name)
            continue
        keys[kid] = key
    if not keys:
        raise InvalidArgumentError(f"{file} holds no RS256 or ES256 key", field=_FIELD)
    return keys


def _claimed_scopes(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    return []


class JwtAuthority:
    """Accepts JWTs signed by a key of the JWKS file at ``jwks_file`` for ``audience`` by
    ``issuer`` (see the module docstring); ``scopes_claim`` names the claim listing the
    token's scopes (None: ``scope``, else ``scopes``).

    Raises InvalidArgumentError if the file is unusable (see :func:`read_jwks_file`).
    """

    def __init__(
        self, jwks_file: str | Path, *, issuer: str, audience: str, scopes_claim: str | None = None
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._claims: Sequence[str] = (scopes_claim,) if scopes_claim else DEFAULT_SCOPES_CLAIMS
        self._keys = ReloadableFile(jwks_file, read_jwks_file, kind="JWKS file", items="keys")

    def reload(self) -> bool:
        """Re-read the JWKS file; return whether its keys are now in force (a failed reload
        keeps the previous keys and logs why).
        """
        return self._keys.reload()

    def authenticate(self, headers: Mapping[str, str]) -> Grant:
        """Return the grant of the JWT bearer token in ``headers``; UnauthenticatedError if it
        is missing, malformed, signed by an unknown key or with another algorithm, expired,
        not yet valid, or issued by or for someone else.
        """
        token = bearer_token(headers)
        if token is None:
            raise UnauthenticatedError("missing bearer token")
        claims = self._verified_claims(token)
        return Grant(token_digest(token), self._patterns(claims))

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise UnauthenticatedError("the bearer token is not a JWT") from error
        key = self._keys.contents.get(str(header.get("kid")))
        if key is None:
            raise UnauthenticatedError("the bearer token's signing key (kid) is unknown")
        if header.get("alg") != key.algorithm_name:
            raise UnauthenticatedError(f"the bearer token must be signed with {key.algorithm_name}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as error:
            # PyJWT's messages name the failed check, never the token.
            raise UnauthenticatedError(f"the bearer token was refused: {error}") from error
        return claims

    def _patterns(self, claims: Mapping[str, Any]) -> tuple[re.Pattern[str], ...] | None:
        """Return the token's scope patterns, or None for every scope (``*``)."""
        entries = next(
            (_claimed_scopes(claims[name]) for name in self._claims if name in claims), []
        )
        if _ALL_SCOPES in entries:
            return None
        patterns = (scope_pattern(entry) for entry in entries)
        return tuple(pattern for pattern in patterns if pattern is not None)
