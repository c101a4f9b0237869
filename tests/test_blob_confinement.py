"""Blob deletion stays inside ``--storage`` and never takes another entry's blob.

Three deleting paths, each on SQLite and PostgreSQL: a Put with ``delete_blob`` (the service
core over the asynchronous repositories), ``taskcache delete --delete-blob``
(``operations.delete_entry``) and ``gc --delete-blobs`` (``operations.gc``). Two attacks:
a symlink under the root pointing elsewhere (``<root>/link/x`` must not delete
``/elsewhere/x``), and project A putting project B's blob URI under its own key, then
overwriting with ``delete_blob`` (B's blob must survive).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flyteidl2.cacheservice import cacheservice_pb2 as base_pb2
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2_pb2

from taskcache import operations
from taskcache.manager import AsyncCacheManager
from taskcache.repositories.base import EntryRow, Repository, Scope
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from taskcache.server.metrics import ServerMetrics
from taskcache.server.service import Backend, CacheService, ScopedDialect
from taskcache.storage import BlobStore

PROJECT_A = Scope("acme", "a", "dev")
PROJECT_B = Scope("acme", "b", "dev")
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def blob(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"outputs")
    return path


@dataclass
class Layout:
    """``root`` is the storage root; ``root/link`` points at ``elsewhere``."""

    root: Path
    elsewhere: Path

    @property
    def store(self) -> BlobStore:
        return BlobStore(str(self.root))


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    root = tmp_path / "blobs"
    elsewhere = tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere, target_is_directory=True)
    return Layout(root, elsewhere)


def test_a_symlink_under_the_root_does_not_make_its_target_owned(layout: Layout) -> None:
    target = blob(layout.elsewhere / "x" / "outputs.pb")
    through_link = str(layout.root / "link" / "x" / "outputs.pb")
    assert not layout.store.owns(through_link)
    assert layout.store.owned_spellings(through_link) == ()
    assert not layout.store.delete(through_link)
    assert target.exists()
    inside = blob(layout.root / "x" / "outputs.pb")
    assert layout.store.owns(str(inside))
    assert str(inside) in layout.store.owned_spellings(f"{layout.root}/y/../x/outputs.pb")


# --- Put with delete_blob, through the service core -------------------------------------------


class Core:
    """The scoped service core over an asynchronous repository, on a private loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        repository: Any,
        blobs: BlobStore,
        executor: ThreadPoolExecutor,
    ) -> None:
        self.loop = loop
        self.repository = repository
        backend = Backend(AsyncCacheManager(repository), ServerMetrics(), executor, blobs=blobs)
        self.service = CacheService(backend, ScopedDialect())

    def put(self, scope: Scope, key: str, uri: str, *, delete_blob: bool = False) -> None:
        request = v2_pb2.PutCacheRequest(
            base_request=base_pb2.PutCacheRequest(
                key=key,
                output=base_pb2.CachedOutput(output_uri=uri),
                overwrite=base_pb2.OverwriteOutput(overwrite=True, delete_blob=delete_blob),
            ),
            identifier=v2_pb2.Identifier(org=scope.org, project=scope.project, domain=scope.domain),
        )
        self.loop.run_until_complete(self.service.put(request, {}))


@pytest.fixture(params=["sqlite", "postgres"])
def core(request: pytest.FixtureRequest, layout: Layout) -> Iterator[Core]:
    executor = ThreadPoolExecutor(max_workers=2)
    loop = asyncio.new_event_loop()
    repository: Any
    if request.param == "sqlite":
        repository = ThreadedRepository(SqliteRepository(None), executor)
    else:
        from taskcache.repositories.postgres_async import AsyncPostgresRepository

        url = request.getfixturevalue("clean_postgres")
        repository = loop.run_until_complete(
            AsyncPostgresRepository.open(url, min_size=1, max_size=2)
        )
    made = Core(loop, repository, layout.store, executor)
    try:
        yield made
    finally:
        made.loop.run_until_complete(made.repository.close())
        made.loop.close()
        executor.shutdown(wait=True)


def test_put_with_delete_blob_does_not_follow_a_symlink_out_of_the_root(
    core: Core, layout: Layout
) -> None:
    target = blob(layout.elsewhere / "x" / "outputs.pb")
    core.put(PROJECT_A, "k", str(layout.root / "link" / "x" / "outputs.pb"))
    core.put(PROJECT_A, "k", str(blob(layout.root / "a2" / "outputs.pb")), delete_blob=True)
    assert target.exists()
    # The same path without the symlink is the root's own, and goes.
    own = blob(layout.root / "a3" / "outputs.pb")
    core.put(PROJECT_A, "k", str(own), delete_blob=True)
    core.put(PROJECT_A, "k", "s3://bucket/final", delete_blob=True)
    assert not own.exists()


@pytest.mark.parametrize("spelling", ["same", "dotdot", "file-url"])
def test_put_with_delete_blob_keeps_a_blob_another_project_references(
    core: Core, layout: Layout, spelling: str
) -> None:
    theirs = blob(layout.root / "b" / "outputs.pb")
    core.put(PROJECT_B, "k", str(theirs))
    borrowed = {
        "same": str(theirs),
        "dotdot": f"{layout.root}/a/../b/outputs.pb",
        "file-url": f"file://{theirs}",
    }[spelling]
    core.put(PROJECT_A, "k", borrowed)
    core.put(PROJECT_A, "k", "s3://bucket/a", delete_blob=True)
    assert theirs.exists()
    # Once B's entry has moved on, nobody references it: A's next replace may delete it.
    core.put(PROJECT_B, "k", "s3://bucket/b")
    core.put(PROJECT_A, "k", borrowed)
    core.put(PROJECT_A, "k", "s3://bucket/a2", delete_blob=True)
    assert not theirs.exists()


# --- the operator paths: delete --delete-blob and gc --delete-blobs ----------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def repository(request: pytest.FixtureRequest) -> Iterator[Repository]:
    if request.param == "postgres":
        found: Repository = request.getfixturevalue("postgres_repository")
        yield found
        return
    sqlite = SqliteRepository(None)
    yield sqlite
    sqlite.close()


def row(scope: Scope, key: str, uri: str, updated: datetime = NOW) -> EntryRow:
    """An entry whose only output is the blob at ``uri``."""
    return EntryRow(scope, key, uri, None, b"", {}, updated, updated)


def test_delete_entry_keeps_a_blob_another_project_references(
    repository: Repository, layout: Layout
) -> None:
    theirs = blob(layout.root / "b" / "outputs.pb")
    repository.create_entry(row(PROJECT_B, "k", str(theirs)), None)
    repository.create_entry(row(PROJECT_A, "k", str(theirs)), None)
    result = operations.delete_entry(repository, PROJECT_A, "k", layout.store)
    assert not result.blob_deleted
    assert result.blob_error is not None and "referenced" in result.blob_error
    assert theirs.exists()
    assert operations.delete_entry(repository, PROJECT_B, "k", layout.store).blob_deleted
    assert not theirs.exists()


def test_delete_entry_does_not_follow_a_symlink_out_of_the_root(
    repository: Repository, layout: Layout
) -> None:
    target = blob(layout.elsewhere / "x" / "outputs.pb")
    repository.create_entry(row(PROJECT_A, "k", str(layout.root / "link/x/outputs.pb")), None)
    result = operations.delete_entry(repository, PROJECT_A, "k", layout.store)
    assert not result.blob_deleted
    assert target.exists()


def test_gc_keeps_blobs_that_are_shared_with_a_fresh_entry_or_behind_a_symlink(
    repository: Any, layout: Layout
) -> None:
    shared = blob(layout.root / "shared" / "outputs.pb")
    target = blob(layout.elsewhere / "x" / "outputs.pb")
    alone = blob(layout.root / "alone" / "outputs.pb")
    old = NOW - timedelta(days=30)
    for made in (
        row(PROJECT_A, "old-shared", str(shared), old),
        row(PROJECT_B, "fresh-shared", str(shared)),
        row(PROJECT_A, "old-link", str(layout.root / "link" / "x" / "outputs.pb"), old),
        row(PROJECT_A, "old-alone", str(alone), old),
    ):
        repository.create_entry(made, None)
    summary = operations.gc(repository, layout.store, timedelta(days=1), NOW, delete_blobs=True)
    assert (summary.entries, summary.blobs_deleted, summary.blobs_skipped) == (3, 1, 2)
    assert shared.exists()
    assert target.exists()
    assert not alone.exists()
