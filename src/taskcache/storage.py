"""Blob IO: ``outputs.pb`` LiteralMaps and other blobs at storage URIs, through fsspec.

A :class:`BlobStore` owns one root URL (a local folder, ``memory://…``, ``s3://…``, …). It
writes each blob once under a fresh name, atomically, and only ever deletes blobs under its
own root.

Paths and bytes only: it must not know about entries, keys or policy.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from typing import Any

from taskcache.errors import InvalidArgumentError, NotFoundError, UnavailableError
from taskcache.extras import missing_extra, storage_extra

OUTPUTS_FILE_NAME = "outputs.pb"


def url_to_fs(url: str, **storage_options: Any) -> tuple[Any, str]:
    """Return fsspec's (filesystem, path) for ``url``; ImportError if its backend is missing."""
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

    ``root`` is an fsspec URL or a local path. ``storage_options`` go to the filesystem.
    """

    def __init__(self, root: str, **storage_options: Any) -> None:
        if not root:
            raise InvalidArgumentError("must not be empty", field="storage")
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

    def _owned_path(self, uri: str) -> str | None:
        """Return the resolved path of ``uri`` if it lies strictly under the resolved root,
        else None (another filesystem, or outside the root once resolved).
        """
        fs, path = url_to_fs(uri)
        if type(fs) is not type(self._fs):
            return None
        resolved = self._resolved(path)
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
        path = url_to_fs(uri)[1]
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
            self._fs.rm_file(path)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise UnavailableError(f"cannot delete {uri}: {error}") from error
        # Each write has its own folder under two levels of digest folders; drop the ones left
        # empty, never the root (object stores have no folders, so this does nothing there).
        root = self._resolved(self._root_path).rstrip("/") + "/"
        folder = posixpath.dirname(path)
        while folder.startswith(root):
            try:
                self._fs.rmdir(folder)
            except OSError:
                break
            folder = posixpath.dirname(folder)
        return True


def read_blob(uri: str) -> bytes:
    """Return the bytes at ``uri`` (any fsspec URL or local path).

    Raises NotFoundError if nothing is there, UnavailableError if the storage fails.
    """
    try:
        import fsspec  # noqa: PLC0415 -- on first use, as in url_to_fs

        with fsspec.open(uri, "rb") as stream:
            data: bytes = stream.read()
    except ImportError as error:
        raise _missing_backend(uri, error, None) from error
    except FileNotFoundError as error:
        raise NotFoundError(f"no blob at {uri}") from error
    except OSError as error:
        raise UnavailableError(f"cannot read {uri}: {error}") from error
    return data


def blob_exists(uri: str) -> bool:
    """Return whether a blob exists at ``uri``; UnavailableError if the storage fails."""
    try:
        fs, path = url_to_fs(uri)
        exists: bool = fs.exists(path)
    except OSError as error:
        raise UnavailableError(f"cannot check {uri}: {error}") from error
    return exists
