"""BlobStore: atomic writes under its root, deletes only there, and tidy folders."""

from __future__ import annotations

from pathlib import Path

from taskcache.storage import BlobStore, blob_exists, read_blob


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
