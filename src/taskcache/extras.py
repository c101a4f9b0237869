"""Optional dependencies: which ``pip install 'taskcache[EXTRA]'`` brings what a URL needs.

The base install serves and runs the embedded catalog on SQLite and local or in-memory
blobs. PostgreSQL databases and object-store blob roots need an extra each; when one is
missing, the error says in one line which extra to install. This module owns that mapping
and the wording; it imports none of the optional packages itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from taskcache.errors import InvalidArgumentError

__all__ = [
    "EXTRA_PACKAGES",
    "STORAGE_EXTRAS",
    "install_hint",
    "missing_extra",
    "requires_extra",
    "storage_extra",
]

# Extra -> the package it installs that taskcache imports (what is named when it is missing).
EXTRA_PACKAGES: Final = {"postgres": "psycopg", "s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}

# fsspec protocol -> the extra whose package implements it.
STORAGE_EXTRAS: Final = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
}


def install_hint(extra: str) -> str:
    """Return the command that installs ``extra``: ``pip install 'taskcache[EXTRA]'``."""
    return f"pip install 'taskcache[{extra}]'"


def storage_extra(url: str) -> str | None:
    """Return the extra that provides ``url``'s storage protocol, or None if none does
    (a local path, ``file://``, ``memory://`` or a protocol taskcache has no extra for).
    """
    scheme, separator, _ = url.partition("://")
    if not separator:
        return None
    return STORAGE_EXTRAS.get(scheme.lower())


def missing_extra(what: str, extra: str, *, field: str | None = None) -> InvalidArgumentError:
    """Return the error for ``what`` (e.g. "s3:// storage") needing the uninstalled
    ``extra``: one line naming the missing package and the command that installs it.
    """
    return InvalidArgumentError(
        f"{what} needs {EXTRA_PACKAGES[extra]}, which is not installed; "
        f"install it with: {install_hint(extra)}",
        field=field,
    )


@contextmanager
def requires_extra(what: str, extra: str, *, field: str | None = None) -> Iterator[None]:
    """Run the block (the import of what ``extra`` installs); an ImportError it raises
    becomes :func:`missing_extra`'s InvalidArgumentError for ``what``, chained to it.
    """
    try:
        yield
    except ImportError as error:
        raise missing_extra(what, extra, field=field) from error
