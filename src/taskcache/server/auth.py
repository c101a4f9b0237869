"""Bearer tokens with scopes: the token file and the check every RPC passes.

A token file holds one token per line, optionally followed by scope patterns
``org/project/domain`` whose parts may use ``*`` (any run of characters, ``/`` excluded):
``tok-a acme/ml/*``. A bare token may use every scope, including the empty scope of the unscoped
APIs (flyteidl2.cacheservice and Flyte 1); a token with patterns may use only the scopes they
match, never the empty one. ``#`` starts a comment; blank lines are ignored.

Tokens are compared in constant time, as SHA-256 digests, and never appear in logs or error
messages. This module knows nothing of transports: the service core hands it the request
headers and the scope. It also owns the seam every way of checking tokens fits
(:class:`Authenticator`); JWTs verified against a JWKS file are
:mod:`taskcache.server.jwt_auth`'s.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from taskcache.errors import InvalidArgumentError, PermissionDeniedError, UnauthenticatedError
from taskcache.repositories.base import Scope
from taskcache.server.reloading import ReloadableFile
from taskcache.server.scope import UNSCOPED

AUTHORIZATION_HEADER: Final = "authorization"
_BEARER: Final = "bearer "
_SCOPE_PARTS: Final = 3


def _scope_text(scope: Scope) -> str:
    return f"{scope.org}/{scope.project}/{scope.domain}"


def token_digest(token: str) -> bytes:
    """Return the SHA-256 of ``token``: what grants keep and compare, so that comparisons
    take the same time whatever the lengths, and no token sits in memory dumps or reprs.
    """
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Grant:
    """One token (its :func:`token_digest`) and the scopes it may use (None: every scope)."""

    digest: bytes = field(repr=False)
    patterns: tuple[re.Pattern[str], ...] | None

    def allows(self, scope: Scope) -> bool:
        """Return whether this token may act in ``scope``."""
        if self.patterns is None:
            return True
        # The empty scope is the unscoped APIs': it spans every project, so only all-scope
        # tokens may use it, whatever a pattern would match.
        if scope == UNSCOPED:
            return False
        text = _scope_text(scope)
        return any(pattern.fullmatch(text) for pattern in self.patterns)

    def authorize(self, scope: Scope) -> None:
        """Raise PermissionDeniedError unless this token may act in ``scope``."""
        if not self.allows(scope):
            shown = "the unscoped APIs" if scope == UNSCOPED else _scope_text(scope)
            raise PermissionDeniedError(f"this token may not use {shown}")


def scope_pattern(text: str) -> re.Pattern[str] | None:
    """Return the compiled ``org/project/domain`` glob ``text`` (``*``: any run of characters
    but ``/``), or None if it is not of that form.
    """
    parts = text.split("/")
    if len(parts) != _SCOPE_PARTS or not all(parts):
        return None
    return re.compile("/".join(re.escape(part).replace(r"\*", "[^/]*") for part in parts))


def _pattern(text: str, line_number: int, path: Path) -> re.Pattern[str]:
    pattern = scope_pattern(text)
    if pattern is None:
        raise InvalidArgumentError(
            f"{path}:{line_number}: scope pattern {text!r} is not org/project/domain",
            field="auth_token_file",
        )
    return pattern


def parse_token_file(text: str, path: Path) -> tuple[Grant, ...]:
    """Return the grants of a token file's ``text`` (``path`` only names it in errors).

    Raises InvalidArgumentError (field ``auth_token_file``) for a malformed scope pattern, a
    token listed twice, or a file without tokens; messages give line numbers, never tokens.
    """
    grants: list[Grant] = []
    seen: set[bytes] = set()
    for line_number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        token, *patterns = words
        digest = token_digest(token)
        if digest in seen:
            raise InvalidArgumentError(
                f"{path}:{line_number}: token listed twice", field="auth_token_file"
            )
        seen.add(digest)
        compiled = tuple(_pattern(pattern, line_number, path) for pattern in patterns)
        grants.append(Grant(digest, compiled or None))
    if not grants:
        raise InvalidArgumentError(f"{path} holds no tokens", field="auth_token_file")
    return tuple(grants)


def read_token_file(path: str | Path) -> tuple[Grant, ...]:
    """Return the grants in the token file at ``path``; InvalidArgumentError if it cannot be
    read or is malformed (see :func:`parse_token_file`).
    """
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidArgumentError(
            f"cannot read {file}: {error}", field="auth_token_file"
        ) from error
    return parse_token_file(text, file)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """Return the ``Bearer`` token of the ``authorization`` header in ``headers``, or None."""
    value = headers.get(AUTHORIZATION_HEADER)
    if value is None or value[: len(_BEARER)].lower() != _BEARER:
        return None
    return value[len(_BEARER) :].strip() or None


def _bearer_digest(headers: Mapping[str, str]) -> bytes | None:
    """Return the :func:`token_digest` of the ``Bearer`` token in ``headers``, or None."""
    token = bearer_token(headers)
    return None if token is None else token_digest(token)


class Authenticator(Protocol):
    """Finds the grant of a request's bearer token; the service core then asks the grant
    whether the request's scope is allowed.
    """

    def authenticate(self, headers: Mapping[str, str]) -> Grant:
        """Return the grant of the bearer token in ``headers``; UnauthenticatedError if it is
        missing or not accepted.
        """
        ...

    def reload(self) -> bool:
        """Re-read what it checks tokens against (on SIGHUP); return whether the new content
        is in force (a failed reload keeps the old and logs why).
        """
        ...


class EitherAuthenticator:
    """Accepts a token that ``first`` accepts, else one that ``second`` does (the token file
    and JWTs, both configured).
    """

    def __init__(self, first: Authenticator, second: Authenticator) -> None:
        self._first = first
        self._second = second

    def authenticate(self, headers: Mapping[str, str]) -> Grant:
        """Return ``first``'s grant, else ``second``'s; the latter's UnauthenticatedError if
        neither accepts the token.
        """
        try:
            return self._first.authenticate(headers)
        except UnauthenticatedError:
            return self._second.authenticate(headers)

    def reload(self) -> bool:
        """Reload both; return whether both reloads took effect."""
        first = self._first.reload()
        return self._second.reload() and first


class TokenAuthority:
    """Decides whether a request's bearer token may act in a scope.

    :meth:`authenticate` finds the request's token; the returned :class:`Grant` then
    authorizes the scope. Built from a token file; :meth:`reload` re-reads it (the runner
    calls it on SIGHUP). A reload that fails keeps the tokens in force and logs why.
    """

    def __init__(self, path: str | Path) -> None:
        self._file = ReloadableFile(path, read_token_file, kind="token file", items="tokens")

    def reload(self) -> bool:
        """Re-read the token file; return whether the new tokens are now in force."""
        return self._file.reload()

    def authenticate(self, headers: Mapping[str, str]) -> Grant:
        """Return the grant of the bearer token in ``headers``; UnauthenticatedError if it is
        missing or unknown.
        """
        presented = _bearer_digest(headers)
        if presented is None:
            raise UnauthenticatedError("missing bearer token")
        found: Grant | None = None
        # Compare against every token, without stopping at a match, so the time taken does
        # not tell which (or whether one) matched.
        for grant in self._file.contents:
            if hmac.compare_digest(grant.digest, presented):
                found = grant
        if found is None:
            raise UnauthenticatedError("unknown bearer token")
        return found
