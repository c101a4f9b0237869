"""Blob IO: ``outputs.pb`` LiteralMaps and other blobs at storage URIs, through fsspec.

Local files (a bare path, ``file://…`` or ``local://…``) are read and written with :mod:`os`
directly (:class:`_LocalFiles`, fsspec's local semantics): opening a local catalog then loads
no fsspec, which with the asyncio it pulls in would double the cost of a first use.

A :class:`BlobStore` owns one root URL (a local folder, ``memory://…``, ``s3://…``,
``gs://…``, ``abfs://…``, …) and the fsspec options its filesystem needs (endpoint, anonymous
access, …; credentials otherwise come from each backend's usual environment and config). It
writes each blob once under a fresh name, atomically, reads blobs of its own filesystem with
its own options, and only ever deletes blobs under its own root.

Paths and bytes only: it must not know about entries, keys or policy.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from taskcache.errors import InvalidArgumentError, NotFoundError, UnavailableError
from taskcache.extras import missing_extra, storage_extra

OUTPUTS_FILE_NAME = "outputs.pb"


# fsspec's names for the local filesystem (LocalFileSystem.protocol).
_LOCAL_PROTOCOLS = ("file", "local")


def split_protocol(uri: str) -> tuple[str | None, str]:
    """Return ``uri``'s (protocol, rest) as fsspec splits it: None for a bare path (a
    one-letter "protocol" is a Windows drive), ``data`` for a ``data:`` URI.
    """
    if "://" in uri:
        protocol, path = uri.split("://", 1)
        if len(protocol) > 1:
            return protocol, path
    if uri.startswith("data:"):
        return "data", uri[len("data:") :]
    return None, uri


class _LocalFiles:
    """The filesystem calls a BlobStore makes, on local files through :mod:`os`.

    Paths mean what fsspec's LocalFileSystem makes of them (protocol stripped, made absolute
    from the working directory or ``~``, no trailing ``/``), and errors are the same OSErrors,
    so a store behaves the same whichever serves it. POSIX only (see :func:`_local_files`).
    """

    protocol = _LOCAL_PROTOCOLS

    @staticmethod
    def _strip_protocol(uri: str) -> str:
        for prefix in ("file://", "file:", "local://", "local:"):
            if uri.startswith(prefix):
                uri = uri.removeprefix(prefix)
                break
        if uri.startswith("~"):
            uri = os.path.expanduser(uri)
        elif not uri.startswith("/"):
            relative = "" if uri == "." else uri.removeprefix("./")
            uri = f"{os.getcwd()}/{relative}"
        return uri.rstrip("/") or "/"

    @staticmethod
    def makedirs(path: str, exist_ok: bool = False) -> None:
        os.makedirs(path, exist_ok=exist_ok)

    @staticmethod
    def open(path: str, mode: str) -> IO[Any]:
        return open(path, mode)

    @staticmethod
    def mv(source: str, destination: str) -> None:
        # One filesystem (the temporary name is beside the final one): an atomic rename.
        os.replace(source, destination)

    @staticmethod
    def rm_file(path: str) -> None:
        os.remove(path)

    @staticmethod
    def rmdir(path: str) -> None:
        os.rmdir(path)

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.lexists(path)

    @staticmethod
    def cat_file(path: str) -> bytes:
        with open(path, "rb") as stream:
            return stream.read()


def _local_files(uri: str) -> _LocalFiles | None:
    """Return the os-backed filesystem if ``uri`` is a plain local file URL (no chained
    ``::`` URL, no options to honour) on POSIX, else None (fsspec serves it).
    """
    if os.sep != "/" or "::" in uri:
        return None
    protocol, _ = split_protocol(uri)
    return _LocalFiles() if protocol is None or protocol in _LOCAL_PROTOCOLS else None


def url_to_fs(url: str, **storage_options: Any) -> tuple[Any, str]:
    """Return the (filesystem, path) for ``url``: :class:`_LocalFiles` for a local URL without
    options, else fsspec's; ImportError if its backend is missing.
    """
    local = None if storage_options else _local_files(url)
    if local is not None:
        return local, local._strip_protocol(url)
    # Imported on first use: fsspec is a third of `import taskcache` and only blob IO needs it.
    from fsspec.core import url_to_fs as fsspec_url_to_fs  # noqa: PLC0415

    found: tuple[Any, str] = fsspec_url_to_fs(url, **storage_options)
    return found


def _missing_backend(url: str, error: ImportError, field: str | None) -> Exception:
    """Return the one-line missing-extra error for ``url``, or ``error`` if no extra has it."""
    extra = storage_extra(url)
    if extra is None:
        return error
    return missing_extra(f"{url.partition('://')[0]}:// storage", extra, field=field)


class BlobStore:
    """Reads and writes blobs; writes and deletes only under ``root``.

    ``root`` is an fsspec URL or a local path. ``storage_options`` go to the filesystem
    (for S3, say, ``endpoint_url``, ``anon`` or ``client_kwargs``). Raises
    InvalidArgumentError for an empty root; ImportError (from fsspec, naming the package)
    when the root's filesystem is not installed; ValueError for an unknown protocol.
    """

    def __init__(self, root: str, **storage_options: Any) -> None:
        if not root:
            raise InvalidArgumentError("must not be empty", field="storage")
        self.storage_options = dict(storage_options)
        try:
            self._fs, root_path = url_to_fs(root, **storage_options)
        except ImportError as error:
            raise _missing_backend(root, error, "storage") from error
        self._root_path = root_path.rstrip("/") or "/"
        protocols = self._fs.protocol
        self._protocols: tuple[str, ...] = (
            (protocols,) if isinstance(protocols, str) else tuple(protocols)
        )
        self._protocol = self._protocols[0]
        self._local = self._protocol in ("file", "local")
        # Object stores have no folders to tidy (and asking costs requests); memory:// does.
        self._has_folders = self._local or self._protocol == "memory"
        self.root = root

    def _uri(self, path: str) -> str:
        return path if self._local else f"{self._protocol}://{path.lstrip('/')}"

    def write_outputs(self, key: str, data: bytes) -> str:
        """Write ``data`` as a new ``outputs.pb`` for ``key`` and return its URI.

        The write is atomic: a reader sees the whole blob or none. Raises UnavailableError when
        the storage refuses the write.
        """
        return self.write_file(key, OUTPUTS_FILE_NAME, data)

    def write_file(self, key: str, file_name: str, data: bytes) -> str:
        """Write ``data`` as a new file ``file_name`` for ``key`` and return its URI.

        Each write gets a folder of its own under the key's digest, so writes never overwrite
        each other. The write is atomic: a reader sees the whole blob or none. Raises
        UnavailableError when the storage refuses the write.
        """
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        folder = posixpath.join(self._root_path, digest[:2], digest, uuid.uuid4().hex)
        final_path = posixpath.join(folder, file_name)
        try:
            if self._has_folders:
                self._fs.makedirs(folder, exist_ok=True)
            if self._local:
                temporary = posixpath.join(folder, f".{file_name}.{uuid.uuid4().hex}.tmp")
                with self._fs.open(temporary, "wb") as stream:
                    stream.write(data)
                self._fs.mv(temporary, final_path)
            else:
                # Object stores publish a put whole, so no temporary name is needed.
                self._fs.pipe_file(final_path, data)
        except OSError as error:
            raise UnavailableError(f"cannot write {file_name} to {self.root}: {error}") from error
        return self._uri(final_path)

    def _resolved(self, path: str) -> str:
        """Return ``path`` with ``..``, ``.`` and repeated ``/`` removed and, on a local
        filesystem, every symlink resolved: the place a deletion would really reach.
        """
        if self._local:
            return os.path.realpath(path)
        return posixpath.normpath(path)

    def _own_path(self, uri: str) -> str | None:
        """Return ``uri``'s path on this store's filesystem if ``uri`` names that filesystem
        (one of its protocols, or a bare path for a local store), else None.
        """
        protocol, _ = split_protocol(uri)
        if protocol is None:
            return self._fs._strip_protocol(uri) if self._local else None
        if protocol not in self._protocols:
            return None
        path: str = self._fs._strip_protocol(uri)
        return path

    def _owned_path(self, uri: str) -> str | None:
        """Return the resolved path of ``uri`` if it lies strictly under the resolved root,
        else None (another filesystem, or outside the root once resolved).

        An object store has no symlinks, but its keys may literally contain ``..``, ``.`` or
        empty segments, which name other objects than their normalised spelling: such a URI
        is never owned, so a deletion always reaches exactly the object the URI names.
        Bucket and prefix boundaries are whole segments (``s3://b/prefix-evil/x`` is not under
        ``s3://b/prefix``).
        """
        path = self._own_path(uri)
        if path is None:
            return None
        resolved = self._resolved(path)
        if not self._local and resolved != path:
            return None
        root = self._resolved(self._root_path).rstrip("/") + "/"
        return resolved if resolved.startswith(root) else None

    def owns(self, uri: str) -> bool:
        """Return whether ``uri`` lies under this store's root (so it may be deleted).

        Decided on the resolved path: ``..`` segments are removed and, locally, symlinks are
        followed, so ``<root>/link/x`` with ``link`` pointing elsewhere is not owned.
        """
        return self._owned_path(uri) is not None

    def owned_spellings(self, uri: str) -> tuple[str, ...]:
        """Return the URIs an entry may use for the blob at ``uri`` if this store owns it:
        ``uri`` itself, its normalised and resolved paths, each bare and with this store's
        protocol(s). Empty if the store does not own ``uri`` or fsspec cannot parse it (an
        unknown protocol, or one whose filesystem is not installed: it cannot lie under a
        root this process writes to).

        Deleting a blob first asks whether any entry still references one of these.
        """
        try:
            if not self.owns(uri):
                return ()
        except (ValueError, ImportError):
            return ()
        path = self._own_path(uri)
        assert path is not None  # owned, so on this filesystem
        paths = dict.fromkeys((posixpath.normpath(path), self._resolved(path)))
        found = dict.fromkeys((uri, *paths))
        for protocol in self._protocols:
            found.update(dict.fromkeys(f"{protocol}://{name}" for name in paths))
            if not self._local:
                found.update(dict.fromkeys(f"{protocol}://{name.lstrip('/')}" for name in paths))
        return tuple(found)

    def delete(self, uri: str) -> bool:
        """Delete the blob at ``uri`` if this store owns it, then its folder if left empty.

        Returns whether a blob was deleted; never touches paths outside the resolved root.
        """
        path = self._owned_path(uri)
        if path is None:
            return False
        try:
            # An object store deletes a missing key without complaint: ask first, so that
            # "deleted" means a blob was there.
            if not self._has_folders and not self._fs.exists(path):
                return False
            self._fs.rm_file(path)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise UnavailableError(f"cannot delete {uri}: {error}") from error
        if not self._has_folders:
            return True
        # Each write has its own folder under two levels of digest folders; drop the ones left
        # empty, never the root.
        root = self._resolved(self._root_path).rstrip("/") + "/"
        folder = posixpath.dirname(path)
        while folder.startswith(root):
            try:
                self._fs.rmdir(folder)
            except OSError:
                break
            folder = posixpath.dirname(folder)
        return True

    def read(self, uri: str) -> bytes:
        """Return the bytes at ``uri``: through this store's filesystem (and options) when
        ``uri`` names it, else as :func:`read_blob` does.

        Raises NotFoundError if nothing is there, UnavailableError if the storage fails.
        """
        path = self._own_path(uri)
        if path is None:
            return read_blob(uri)
        with _reading(uri):
            data: bytes = self._fs.cat_file(path)
        return data


def read_blob(uri: str) -> bytes:
    """Return the bytes at ``uri`` (any fsspec URL or local path).

    Raises NotFoundError if nothing is there, UnavailableError if the storage fails.
    """
    local = _local_files(uri)
    with _reading(uri):
        if local is not None:
            return local.cat_file(local._strip_protocol(uri))
        try:
            import fsspec  # noqa: PLC0415 -- on first use, as in url_to_fs

            with fsspec.open(uri, "rb") as stream:
                data: bytes = stream.read()
        except ImportError as error:
            raise _missing_backend(uri, error, None) from error
    return data


@contextmanager
def _reading(uri: str) -> Iterator[None]:
    """Turn a failed read of ``uri`` into NotFoundError (nothing there) or UnavailableError
    (any other OSError).
    """
    try:
        yield
    except FileNotFoundError as error:
        raise NotFoundError(f"no blob at {uri}") from error
    except OSError as error:
        raise UnavailableError(f"cannot read {uri}: {error}") from error


def blob_exists(uri: str) -> bool:
    """Return whether a blob exists at ``uri``; UnavailableError if the storage fails."""
    try:
        fs, path = url_to_fs(uri)
        exists: bool = fs.exists(path)
    except OSError as error:
        raise UnavailableError(f"cannot check {uri}: {error}") from error
    return exists
