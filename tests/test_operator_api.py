"""The Python operator API of embedded clients: ``entries()``, ``stats()`` and ``clear()``.

Every test runs on ``memory://``, a SQLite file and PostgreSQL, through the sync client and
through its async twin (behind :class:`Twin`, which runs each call on a private event loop).
Blobs go to a folder of the test's own so that their deletion can be checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flyteidl2.core import identifier_pb2, literals_pb2
from fsspec.core import url_to_fs

import taskcache
from builders import START, FakeClock, int_map, make_key, string_literal
from taskcache import (
    AsyncOperatorClient,
    CatalogEntry,
    CatalogStats,
    InvalidArgumentError,
    Key,
    OperatorClient,
    ProjectStats,
    UnavailableError,
    UriOutputReader,
)
from taskcache.clients.embedded import EmbeddedClient
from taskcache.operations import clear as clear_catalog
from taskcache.repositories.base import EntryFilter, Scope

BACKENDS = ["memory", "sqlite", "postgres"]
INLINE_MAX_BYTES = 1024


class Twin:
    """The sync operator methods of an async embedded client (calls run on ``loop``)."""

    def __init__(self, client: AsyncOperatorClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self._loop = loop

    def put(self, key: Key, outputs: Any) -> None:
        self._loop.run_until_complete(self.client.put(key, outputs))

    def entries(self, **filters: Any) -> Iterator[CatalogEntry]:
        async def collect() -> list[CatalogEntry]:
            return [entry async for entry in self.client.entries(**filters)]

        return iter(self._loop.run_until_complete(collect()))

    def stats(self) -> CatalogStats:
        return self._loop.run_until_complete(self.client.stats())

    def clear(self, **filters: Any) -> int:
        return self._loop.run_until_complete(self.client.clear(**filters))

    def close(self) -> None:
        self._loop.run_until_complete(self.client.close())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def blob_root(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("clean_postgres")
        return url
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/c.db"


@pytest.fixture(params=["sync", "async"])
def client(
    request: pytest.FixtureRequest, target: str, blob_root: Path, clock: FakeClock
) -> Iterator[Any]:
    """A sync embedded client, or an async one behind :class:`Twin`; closed afterwards."""
    options: dict[str, Any] = {
        "storage": str(blob_root),
        "clock": clock,
        "inline_max_bytes": INLINE_MAX_BYTES,
    }
    if request.param == "sync":
        sync_client = taskcache.open(target, **options)
        assert isinstance(sync_client, OperatorClient)
        yield sync_client
        sync_client.close()
        return
    loop = asyncio.new_event_loop()
    async_client = taskcache.open_async(target, **options)
    assert isinstance(async_client, AsyncOperatorClient)
    twin = Twin(async_client, loop)
    try:
        yield twin
    finally:
        twin.close()
        loop.close()


def identifier(name: str, project: str = "project_1") -> identifier_pb2.Identifier:
    return identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org="org_1",
        project=project,
        domain="domain_1",
        name=name,
        version="v7",
    )


def big_outputs() -> literals_pb2.LiteralMap:
    """Outputs larger than ``INLINE_MAX_BYTES``: stored as a blob."""
    return literals_pb2.LiteralMap(literals={"o0": string_literal("x" * 2 * INLINE_MAX_BYTES)})


def files_under(root: Path) -> set[str]:
    return {str(path) for path in root.rglob("*") if path.is_file()}


def blob_exists(uri: str) -> bool:
    fs, path = url_to_fs(uri)
    exists: bool = fs.exists(path)
    return exists


# The catalog the listing and clearing tests share: (task name, project, x, blob?), put one
# second apart in this order, so the newest-first listing is the reverse.
CATALOG = [
    ("train", "project_1", 1, False),
    ("train", "project_1", 2, True),
    ("score", "project_1", 1, False),
    ("train", "project_2", 1, True),
    ("score", "project_2", 2, False),
    ("train", "project_1", 3, False),
    ("plot", "project_1", 1, False),
]


def fill(client: Any, clock: FakeClock) -> list[str]:
    """Put :data:`CATALOG`; return the cache keys in put order."""
    keys = []
    for name, project, x, as_blob in CATALOG:
        key = make_key(x, identifier=identifier(name, project))
        client.put(key, big_outputs() if as_blob else int_map(o0=x))
        keys.append(taskcache.hashing.cache_key(key))
        clock.advance(1)
    return keys


def listed(client: Any, **filters: Any) -> list[tuple[str, str, str]]:
    return [(entry.task, entry.project, entry.key) for entry in client.entries(**filters)]


def expected(keys: list[str], **where: Any) -> list[tuple[str, str, str]]:
    """The newest-first listing of the :data:`CATALOG` rows matching ``where``."""
    rows = [
        (name, project, key)
        for (name, project, _, _), key in zip(CATALOG, keys, strict=True)
        if where.get("task", name) == name and where.get("project", project) == project
    ]
    return rows[::-1]


# --- entries --------------------------------------------------------------------------------


def test_entries_lists_everything_newest_first_across_pages(client: Any, clock: FakeClock) -> None:
    keys = fill(client, clock)
    # Three entries a page: the seven entries take three pages.
    assert listed(client, page_size=3) == expected(keys)
    assert listed(client) == expected(keys)


@pytest.mark.parametrize(
    "filters",
    [
        {"project": "project_2"},
        {"task": "train"},
        {"task": "train", "project": "project_1"},
        {"task": "nothing"},
    ],
    ids=repr,
)
def test_entries_filter_by_scope_and_task(
    client: Any, clock: FakeClock, filters: dict[str, str]
) -> None:
    keys = fill(client, clock)
    assert listed(client, page_size=2, **filters) == expected(keys, **filters)


def test_entries_filter_by_org_domain_and_key_prefix(client: Any, clock: FakeClock) -> None:
    keys = fill(client, clock)
    assert listed(client, org="org_1", domain="domain_1") == expected(keys)
    assert listed(client, org="other") == []
    assert listed(client, domain="") == []  # nothing in the empty scope
    assert listed(client, key_prefix=keys[3]) == [("train", "project_2", keys[3])]


def test_entry_records_describe_the_stored_entry(
    client: Any, clock: FakeClock, blob_root: Path
) -> None:
    keys = fill(client, clock)
    by_key = {entry.key: entry for entry in client.entries()}
    inline, blob = by_key[keys[0]], by_key[keys[1]]
    assert (inline.org, inline.project, inline.domain) == ("org_1", "project_1", "domain_1")
    assert (inline.task, inline.task_version) == ("train", "v7")
    assert inline.source == identifier("train")
    assert inline.created_at == inline.last_updated_at == START
    assert inline.output_uri is None
    assert inline.inline_bytes == len(int_map(o0=1).SerializeToString())
    assert inline.source_execution is None  # put without metadata
    assert blob.last_updated_at == START + timedelta(seconds=1)
    assert blob.inline_bytes is None
    assert blob.output_uri is not None
    assert blob.output_uri.startswith(str(blob_root))


def test_entries_of_an_empty_catalog_and_a_bad_page_size(client: Any) -> None:
    assert list(client.entries()) == []
    with pytest.raises(InvalidArgumentError) as raised:
        client.entries(page_size=0)
    assert raised.value.field == "page_size"


# --- stats ----------------------------------------------------------------------------------


def test_stats_after_known_puts(client: Any, clock: FakeClock) -> None:
    assert client.stats() == CatalogStats(
        entries=0, inline_bytes=0, blob_entries=0, active_reservations=0, by_scope=()
    )
    fill(client, clock)
    inline_sizes = [entry.inline_bytes or 0 for entry in client.entries()]
    stats = client.stats()
    assert stats.entries == len(CATALOG)
    assert stats.blob_entries == 2
    assert stats.inline_bytes == sum(inline_sizes) > 0
    assert [(group.scope, group.entries) for group in stats.by_scope] == [
        (Scope("org_1", "project_1", "domain_1"), 5),
        (Scope("org_1", "project_2", "domain_1"), 2),
    ]
    assert all(isinstance(group, ProjectStats) for group in stats.by_scope)
    assert stats.active_reservations == 0


# --- clear ----------------------------------------------------------------------------------


def test_clear_by_scope_deletes_only_that_scope_and_its_blobs(
    client: Any, clock: FakeClock, blob_root: Path
) -> None:
    keys = fill(client, clock)
    blobs = {entry.key: entry.output_uri for entry in client.entries() if entry.output_uri}
    assert client.clear(project="project_2", batch_size=1) == 2
    assert listed(client) == expected(keys, project="project_1")
    assert not blob_exists(str(blobs[keys[3]]))  # project_2's blob went with its entry
    assert blob_exists(str(blobs[keys[1]]))
    assert files_under(blob_root) == {str(blobs[keys[1]])}
    assert client.clear(project="project_2") == 0


def test_clear_by_task_deletes_that_task_in_every_scope(client: Any, clock: FakeClock) -> None:
    keys = fill(client, clock)
    assert client.clear(task="train", batch_size=2) == 4
    remaining = listed(client)
    assert remaining == [row for row in expected(keys) if row[0] != "train"]
    assert client.clear(task="score", project="project_1") == 1
    assert listed(client) == [
        ("plot", "project_1", keys[6]),
        ("score", "project_2", keys[4]),
    ]


def test_clear_without_arguments_deletes_everything(
    client: Any, clock: FakeClock, blob_root: Path
) -> None:
    fill(client, clock)
    assert client.clear(batch_size=3) == len(CATALOG)
    assert list(client.entries()) == []
    assert client.stats().entries == 0
    assert files_under(blob_root) == set()
    assert client.clear() == 0


def test_clear_keeps_blobs_outside_the_blob_root(
    client: Any, clock: FakeClock, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere" / "outputs.pb"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(int_map(o0=9).SerializeToString())
    client.put(make_key(9, identifier=identifier("ref")), UriOutputReader(str(elsewhere)))
    (entry,) = client.entries()
    assert entry.output_uri == str(elsewhere)
    assert client.clear(task="ref") == 1
    assert elsewhere.exists()


def test_clear_rejects_a_bad_batch_size(client: Any, clock: FakeClock) -> None:
    fill(client, clock)
    with pytest.raises(InvalidArgumentError) as raised:
        client.clear(batch_size=0)
    assert raised.value.field == "batch_size"
    assert client.stats().entries == len(CATALOG)


def test_an_entry_rewritten_while_clearing_survives(target: str, clock: FakeClock) -> None:
    # Through operations.clear, whose progress callback runs between batches: the oldest
    # entry is rewritten after the first batch went, before clear reaches it.
    with taskcache.open(target, clock=clock) as client:
        assert isinstance(client, EmbeddedClient)
        keys = [make_key(x, identifier=identifier("train")) for x in range(3)]
        for key in keys:
            client.put(key, int_map(o0=1))
            clock.advance(1)

        def rewrite_oldest(_: object) -> None:
            client.update(keys[0], int_map(o0=2))

        summary = clear_catalog(
            client.manager.repository,
            client.blobs,
            EntryFilter(),
            batch_size=1,
            progress_callback=rewrite_oldest,
        )
        assert summary.entries == 2
        (survivor,) = client.entries()
        assert survivor.key == taskcache.hashing.cache_key(keys[0])
        assert survivor.last_updated_at == START + timedelta(seconds=3)


# --- which clients have it ------------------------------------------------------------------


def test_closed_clients_refuse_operator_calls(target: str) -> None:
    client = taskcache.open(target)
    client.close()
    assert isinstance(client, OperatorClient)
    for call in (lambda: list(client.entries()), client.stats, client.clear):
        with pytest.raises(UnavailableError):
            call()


def test_remote_clients_are_no_operator_clients() -> None:
    # Opening a remote client connects to nothing yet.
    with taskcache.open("http://127.0.0.1:9") as remote:
        assert not isinstance(remote, OperatorClient)
        assert not hasattr(remote, "clear")

    async def open_async_remote() -> bool:
        async with taskcache.open_async("grpc://127.0.0.1:9") as client:
            return isinstance(client, AsyncOperatorClient)

    assert asyncio.run(open_async_remote()) is False


def test_an_unknown_selection_keyword_is_a_type_error_and_clears_nothing(
    client: Any, clock: FakeClock
) -> None:
    fill(client, clock)
    with pytest.raises(TypeError, match="projet"):
        client.clear(projet="project_1")
    with pytest.raises(TypeError, match="tsak"):
        list(client.entries(tsak="train"))
    assert client.stats().entries == len(CATALOG)
