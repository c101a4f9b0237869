"""Type stub of the compiled hashing core (``_core.c``); see taskcache.hashing.compiled."""

from collections.abc import Callable, Sequence
from typing import Any

class Fallback(Exception):  # noqa: N818 - the C module's name for "let the Python route do it"
    """The walker met something its plans do not describe; the Python route must hash it."""

def compile(plans: tuple[Any, ...], /) -> object:
    """Return a table compiled from message plans (taskcache.hashing.plans)."""

def digest(
    table: object, index: int, data: bytes, ignore: frozenset[str] | set[str] | None, /
) -> bytes:
    """Return the objecthash of the serialized message ``data`` under plan ``index``."""

def digest_urlsafe(
    table: object, index: int, data: bytes, ignore: frozenset[str] | set[str] | None, /
) -> str:
    """Return :func:`digest` as URL-safe base64 without padding."""

def configure(float32_converter: Callable[[float], float], /) -> None:
    """Set the function giving the double Go reads back from a float32's shortest text."""

def sha256_bundled(data: bytes, sha_ni: bool, /) -> bytes:
    """Return SHA-256 of ``data`` by the bundled code (SHA-NI path or portable C).

    Raises ValueError for ``sha_ni`` on a CPU or build without it.
    """

def tagged_digests(tag: bytes, items: Sequence[bytes], /) -> list[bytes]:
    """Return ``sha256(tag + item)`` of each item, computed as one batch of the walker's jobs.

    Raises TypeError unless ``tag`` is one byte and every item is bytes.
    """

def set_batching(enabled: bool, /) -> bool:
    """Defer node digests and compute them in batches (the default), or compute each one where
    the walker meets it (``False``); both give the same digests. Return the previous setting.
    """

def select_sha256(name: str, /) -> None:
    """Use SHA-256 ``name``: "sha-ni", "openssl" or "portable" (ValueError if unavailable)."""

def sha256_backend() -> str:
    """Return the SHA-256 in use (the fastest available unless selected)."""
