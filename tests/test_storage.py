"""BlobStore: atomic writes under its root, deletes only there, and tidy folders; local roots
served by os with fsspec's local semantics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskcache.errors import NotFoundError, UnavailableError
from taskcache.storage import BlobStore, _LocalFiles, blob_exists, read_blob


def test_deleting_every_blob_leaves_an_empty_root(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    store = BlobStore(str(root))
    first = store.write_outputs("key", b"one")
    second = store.write_outputs("key", b"two")
    assert first != second  # each write gets a fresh name
    assert read_blob(first) == b"one"
    assert store.delete(first)
    assert read_blob(second) == b"two"  # the shared digest folder survives its sibling
    assert store.delete(second)
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_never_deletes_outside_its_root(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path / "blobs"))
    outside = tmp_path / "elsewhere" / "outputs.pb"
    outside.parent.mkdir()
    outside.write_bytes(b"keep")
    sneaky = str(tmp_path / "blobs" / ".." / "elsewhere" / "outputs.pb")
    assert not store.owns(str(outside))
    assert not store.owns(sneaky)
    assert not store.delete(sneaky)
    assert outside.read_bytes() == b"keep"


def test_no_temporary_files_remain_after_a_write(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    uri = store.write_outputs("key", b"data")
    assert blob_exists(uri)
    leftovers = [path for path in tmp_path.rglob("*") if path.name.endswith(".tmp")]
    assert leftovers == []


def test_a_local_store_round_trips_without_fsspec(tmp_path: Path) -> None:
    # Bare paths and file:// URLs are served by os, written under the root and read back,
    # each blob recorded as the bare absolute path fsspec's local filesystem gave.
    for root in (str(tmp_path / "bare"), f"file://{tmp_path / 'url'}"):
        store = BlobStore(root)
        uri = store.write_file("key", "blob.bin", b"\x00payload")
        assert uri.startswith(str(tmp_path) + "/")
        assert Path(uri).read_bytes() == b"\x00payload"
        assert store.read(uri) == b"\x00payload"
        assert store.read(f"file://{uri}") == b"\x00payload"
        assert read_blob(uri) == b"\x00payload"
        assert store.owns(f"local://{uri}")
        assert store.delete(uri)
        assert not blob_exists(uri)


def test_local_paths_mean_what_fsspec_makes_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsspec.implementations.local import LocalFileSystem

    monkeypatch.chdir(tmp_path)
    spellings = [
        "blobs",
        "./blobs/",
        ".",
        "~/blobs",
        "/abs/blobs//",
        "file:///abs/blobs",
        "file:blobs",
        "local:///abs/blobs",
        "local://blobs",
        "/",
    ]
    for spelling in spellings:
        assert _LocalFiles._strip_protocol(spelling) == LocalFileSystem._strip_protocol(spelling)
    assert isinstance(BlobStore(str(tmp_path))._fs, _LocalFiles)
    # Options, chained URLs and other protocols still go to fsspec.
    assert not isinstance(BlobStore(str(tmp_path), auto_mkdir=True)._fs, _LocalFiles)
    assert not isinstance(BlobStore("memory://blobs")._fs, _LocalFiles)


def test_local_reads_fail_as_the_catalog_errors(tmp_path: Path) -> None:
    store = BlobStore(str(tmp_path))
    with pytest.raises(NotFoundError):
        store.read(str(tmp_path / "missing" / "outputs.pb"))
    with pytest.raises(NotFoundError):
        read_blob(f"file://{tmp_path}/missing")
    with pytest.raises(UnavailableError):
        read_blob(str(tmp_path))  # a folder, not a blob
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(UnavailableError):
            BlobStore(str(tmp_path / "locked")).write_outputs("key", b"data")


def test_a_local_write_is_a_rename_of_a_complete_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[tuple[str, bytes]] = []
    replace = os.replace

    def observed(source: str, destination: str) -> None:
        renamed.append((Path(source).name, Path(source).read_bytes()))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", observed)
    uri = BlobStore(str(tmp_path)).write_outputs("key", b"whole")
    assert len(renamed) == 1
    name, data = renamed[0]
    assert name.startswith(".outputs.pb.") and name.endswith(".tmp")
    assert data == b"whole"
    assert Path(uri).name == "outputs.pb"
