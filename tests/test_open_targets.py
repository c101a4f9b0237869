"""``taskcache.open`` targets and options: where catalogs and blobs end up, and what is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import taskcache
from builders import FakeClock, int_map, make_key
from taskcache import Client, InvalidArgumentError, NotFoundError


@pytest.fixture
def opened() -> Iterator[list[Client]]:
    """Collects clients to close after the test."""
    clients: list[Client] = []
    yield clients
    for client in clients:
        client.close()


def open_tracked(opened: list[Client], target: Any = None, **options: Any) -> Client:
    client = taskcache.open(target, **options)
    opened.append(client)
    return client


def blob_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def put_blob(client: Client, x: int = 1) -> str:
    """Put outputs for ``make_key(x)`` (as a blob if the client has inline_max_bytes=0)."""
    client.put(make_key(x), int_map(o0=x * x))
    uri = client.get(make_key(x)).outputs.uri
    assert uri is not None
    return uri


def test_default_target_uses_taskcache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, opened: list[Client]
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("TASKCACHE_HOME", str(home))

    client = open_tracked(opened, inline_max_bytes=0)
    assert (home / "catalog.db").is_file()

    uri = put_blob(client)
    assert (home / "blobs").is_dir()
    assert Path(uri).resolve().is_relative_to((home / "blobs").resolve())
    assert blob_files(home / "blobs") == [Path(uri)]


def test_default_target_is_persistent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, opened: list[Client]
) -> None:
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path / "home"))
    with taskcache.open() as first:
        first.put(make_key(), int_map(o0=1))
    second = open_tracked(opened)
    assert second.get(make_key()).outputs.read() == int_map(o0=1)


def test_sqlite_url_with_an_absolute_path(tmp_path: Path, opened: list[Client]) -> None:
    database = tmp_path / "dbs" / "path.db"
    database.parent.mkdir()
    client = open_tracked(opened, f"sqlite://{database}", inline_max_bytes=0)

    assert database.is_file()
    uri = put_blob(client)
    assert Path(uri).resolve().is_relative_to((tmp_path / "dbs" / "blobs").resolve())


def test_sqlite_url_with_four_slashes(tmp_path: Path, opened: list[Client]) -> None:
    client = open_tracked(opened, f"sqlite:///{tmp_path}/c.db", inline_max_bytes=0)
    assert (tmp_path / "c.db").is_file()
    uri = put_blob(client)
    assert Path(uri).is_file()
    assert Path(uri).resolve().is_relative_to((tmp_path / "blobs").resolve())


def test_sqlite_url_without_a_file_is_invalid() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open("sqlite://")
    assert raised.value.field == "target"


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "pathlike"])
def test_plain_folder_target(tmp_path: Path, opened: list[Client], as_path: bool) -> None:
    folder = tmp_path / "catalog"
    client = open_tracked(opened, folder if as_path else str(folder), inline_max_bytes=0)

    assert (folder / "catalog.db").is_file()
    uri = put_blob(client)
    assert blob_files(folder / "blobs") == [Path(uri)]


@pytest.mark.parametrize("suffix", [".db", ".sqlite", ".sqlite3"])
def test_database_file_target(tmp_path: Path, opened: list[Client], suffix: str) -> None:
    database = tmp_path / f"mine{suffix}"
    client = open_tracked(opened, str(database), inline_max_bytes=0)

    assert database.is_file()
    assert not (tmp_path / f"mine{suffix}" / "catalog.db").exists()
    uri = put_blob(client)
    assert blob_files(tmp_path / "blobs") == [Path(uri)]


def test_memory_catalogs_are_private(opened: list[Client]) -> None:
    first = open_tracked(opened, "memory://", inline_max_bytes=0)
    second = open_tracked(opened, "memory://", inline_max_bytes=0)

    uri = put_blob(first)

    with pytest.raises(NotFoundError):
        second.get(make_key())
    # Each memory catalog has its own blob root too.
    other_uri = put_blob(second)
    assert other_uri != uri
    assert uri.split("/")[2] != other_uri.split("/")[2]
    assert first.get(make_key()).outputs.read() == int_map(o0=1)


@pytest.mark.parametrize("target", ["mysql://x", "ftp://x", "s3://bucket/catalog"])
def test_unsupported_schemes_are_invalid(target: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open(target)
    assert raised.value.field == "target"
    with pytest.raises(InvalidArgumentError) as raised_async:
        taskcache.open_async(target)
    assert raised_async.value.field == "target"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"inline_max_bytes": -1}, "inline_max_bytes"),
        ({"max_cache_age": timedelta(seconds=-1)}, "max_cache_age"),
        ({"max_cache_age": -0.5}, "max_cache_age"),
        ({"max_reservation_heartbeat": timedelta(seconds=-1)}, "max_reservation_heartbeat"),
        ({"reservation_cache_size": 0}, "reservation_cache_size"),
    ],
)
def test_negative_options_are_invalid(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        taskcache.open(str(tmp_path / "c.db"), **options)
    assert raised.value.field == field


def test_max_cache_age_in_seconds(opened: list[Client]) -> None:
    clock = FakeClock()
    client = open_tracked(opened, "memory://", max_cache_age=10, clock=clock)
    client.put(make_key(), int_map(o0=1))
    clock.advance(10)
    assert client.get(make_key()).outputs.read() == int_map(o0=1)
    clock.advance(1)
    with pytest.raises(NotFoundError):
        client.get(make_key())


def test_two_clients_share_a_sqlite_file(tmp_path: Path, opened: list[Client]) -> None:
    target = f"sqlite://{tmp_path / 'shared.db'}"
    first = open_tracked(opened, target, inline_max_bytes=0)
    second = open_tracked(opened, target, inline_max_bytes=0)

    first.put(make_key(1), int_map(o0=1))
    assert second.get(make_key(1)).outputs.read() == int_map(o0=1)

    second.update(make_key(1), int_map(o0=11))
    assert first.get(make_key(1)).outputs.read() == int_map(o0=11)

    second.put(make_key(2), int_map(o0=4))
    assert first.get(make_key(2)).outputs.read() == int_map(o0=4)

    first.delete(make_key(2))
    with pytest.raises(NotFoundError):
        second.get(make_key(2))


def test_two_clients_share_reservations(tmp_path: Path, opened: list[Client]) -> None:
    target = str(tmp_path / "shared.db")
    first = open_tracked(opened, target)
    second = open_tracked(opened, target)

    first.get_or_extend_reservation(make_key(), "A", timedelta(seconds=5))
    assert second.get_or_extend_reservation(make_key(), "B", timedelta(seconds=5)).owner_id == "A"
    first.release_reservation(make_key(), "A")
    assert second.get_or_extend_reservation(make_key(), "B", timedelta(seconds=5)).owner_id == "B"


def test_folder_and_database_targets_name_the_same_catalog(
    tmp_path: Path, opened: list[Client]
) -> None:
    folder = tmp_path / "cat"
    open_tracked(opened, str(folder)).put(make_key(), int_map(o0=1))
    for target in (str(folder / "catalog.db"), f"sqlite://{folder / 'catalog.db'}"):
        client = open_tracked(opened, target)
        assert client.get(make_key()).outputs.read() == int_map(o0=1)


def test_sqlite_url_with_four_slashes_names_the_same_absolute_file(tmp_path: Path) -> None:
    three = taskcache.open(f"sqlite://{tmp_path}/c.db", inline_max_bytes=0)
    four = taskcache.open(f"sqlite:///{tmp_path}/c.db", inline_max_bytes=0)
    key = make_key()
    try:
        three.put(key, int_map(o0=1))
        entry = four.get(key)
        assert entry.outputs.read() == int_map(o0=1)
        assert entry.outputs.uri is not None
        assert not entry.outputs.uri.startswith("//")
    finally:
        three.close()
        four.close()


def test_embedded_scope_option_files_entries_under_that_scope(tmp_path: Path) -> None:
    target = f"sqlite://{tmp_path}/c.db"
    key = make_key()
    with taskcache.open(target, scope=("o2", "p2", "d2")) as scoped:
        scoped.put(key, int_map(o0=2))
        assert scoped.get(key).outputs.read() == int_map(o0=2)
    with taskcache.open(target) as unscoped, pytest.raises(taskcache.NotFoundError):
        unscoped.get(key)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bogus"):
        taskcache.open("memory://", bogus=1)  # type: ignore[call-arg]
