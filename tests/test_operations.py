"""``taskcache.operations``: catalog maintenance logic, on repository rows directly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from builders import int_map, make_identifier
from taskcache import operations
from taskcache.errors import InvalidArgumentError, NotFoundError, UnavailableError
from taskcache.operations import GcSummary, parse_duration
from taskcache.repositories.base import (
    EntryFilter,
    EntryRow,
    Repository,
    ReservationRow,
    Scope,
)
from taskcache.repositories.sqlite import SCHEMA_VERSION, SqliteRepository
from taskcache.storage import BlobStore

NOW = datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=UTC)
SCOPE = Scope("org_1", "project_1", "domain_1")
SOURCE = make_identifier("tests.square").SerializeToString()
US = timedelta(microseconds=1)


def entry(
    key: str,
    updated: datetime,
    *,
    scope: Scope = SCOPE,
    literals: bytes | None = None,
    uri: str | None = None,
    key_map: dict[str, str] | None = None,
) -> EntryRow:
    """A row: inline ``literals``, else a blob at ``uri``, else the empty inline LiteralMap."""
    if literals is None and uri is None:
        literals = b""
    return EntryRow(
        scope=scope,
        key=key,
        output_uri=uri,
        output_literals=literals,
        source_identifier=SOURCE,
        key_map=key_map or {},
        created_at=updated,
        last_updated_at=updated,
    )


def store(repository: Repository, *rows: EntryRow) -> None:
    for row in rows:
        assert repository.create_entry(row, None).written


@pytest.fixture
def sqlite_repository() -> Iterator[SqliteRepository]:
    repository = SqliteRepository(None)
    yield repository
    repository.close()


@pytest.fixture(params=["sqlite", "postgres"])
def repository(request: pytest.FixtureRequest) -> Repository:
    """Each backend: the paging and cutoff arithmetic must hold on both."""
    name = "sqlite_repository" if request.param == "sqlite" else "postgres_repository"
    found: Repository = request.getfixturevalue(name)
    return found


# --- parse_duration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1h1h", timedelta(hours=2)),
        ("  7d ", timedelta(days=7)),
        ("0d1s", timedelta(seconds=1)),
        ("007s", timedelta(seconds=7)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "30",  # no unit: seconds or days? refuse to guess
        "d",
        "1.5d",
        "-1d",
        "+1d",
        "1M",  # months or minutes? refuse to guess
        "1D",
        "30 d",
        "1d 2h",
        "1y",
        "1ms",
        "P1D",
        "0d",
        "0s0m",
        "99999999999w",  # beyond timedelta's range
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_duration(text)


# --- listing --------------------------------------------------------------------------------------


def test_list_page_marks_whether_more_follow(sqlite_repository: SqliteRepository) -> None:
    store(sqlite_repository, *(entry(f"k{i}", NOW - i * US) for i in range(4)))
    first = operations.list_page(sqlite_repository, EntryFilter(), 3)
    assert [row.key for row in first.entries] == ["k0", "k1", "k2"]
    assert first.next_cursor == operations.cursor_after(first.entries[-1])
    last = operations.list_page(sqlite_repository, EntryFilter(), 3, first.next_cursor)
    assert [row.key for row in last.entries] == ["k3"]
    assert last.next_cursor is None


def test_iter_pages_covers_ties_once_and_ends_without_an_empty_page(
    repository: Repository,
) -> None:
    # Six rows on two timestamps, pages of three: page breaks fall inside ties.
    rows = [entry(f"k{i}", NOW if i % 2 else NOW - US) for i in range(6)]
    store(repository, *rows)
    pages = list(operations.iter_pages(repository, EntryFilter(), 3))
    assert [len(page.entries) for page in pages] == [3, 3]
    keys = [row.key for page in pages for row in page.entries]
    assert keys == ["k1", "k3", "k5", "k0", "k2", "k4"]


def test_iter_pages_filters(sqlite_repository: SqliteRepository) -> None:
    other = Scope("org_2", "project_1", "domain_1")
    store(
        sqlite_repository,
        entry("abc-1", NOW),
        entry("abd-1", NOW),
        entry("abc-2", NOW, scope=other),
    )
    only_org_2 = EntryFilter(org="org_2")
    listed = [
        r.key for p in operations.iter_pages(sqlite_repository, only_org_2) for r in p.entries
    ]
    assert listed == ["abc-2"]
    by_prefix = EntryFilter(key_prefix="abc")
    listed = [r.key for p in operations.iter_pages(sqlite_repository, by_prefix) for r in p.entries]
    assert listed == ["abc-1", "abc-2"]


@pytest.mark.parametrize("size", [0, -1])
def test_paging_rejects_a_non_positive_size(sqlite_repository: SqliteRepository, size: int) -> None:
    with pytest.raises(InvalidArgumentError):
        operations.list_page(sqlite_repository, EntryFilter(), size)
    with pytest.raises(InvalidArgumentError):
        next(operations.iter_pages(sqlite_repository, EntryFilter(), size))


# --- describe_entry -------------------------------------------------------------------------------


def test_describe_inline_entry_decodes_outputs_and_provenance(
    sqlite_repository: SqliteRepository,
) -> None:
    outputs = int_map(o0=7)
    key_map = {"exec-name": "run-1", "exec-node": "n0", "exec-attempt": "2", "task-version": "v9"}
    store(
        sqlite_repository,
        entry("k", NOW, literals=outputs.SerializeToString(), key_map=key_map),
    )
    details = operations.describe_entry(sqlite_repository, SCOPE, "k", NOW)
    assert details.outputs == outputs
    assert details.inline_bytes == len(outputs.SerializeToString())
    assert details.source == make_identifier("tests.square")
    assert details.source_execution is not None
    assert details.source_execution.node_execution_id.execution_id.name == "run-1"
    assert details.source_execution.node_execution_id.execution_id.project == "project_1"
    assert details.source_execution.retry_attempt == 2
    assert details.source_execution.task_id.version == "v9"
    assert details.reservation is None
    assert not details.reservation_active
    assert details.problems == ()


def test_describe_blob_entry_with_reservations(sqlite_repository: SqliteRepository) -> None:
    store(sqlite_repository, entry("k", NOW, uri="/blobs/outputs.pb"))
    reservation = ReservationRow(SCOPE, "k", "worker-1", timedelta(seconds=10), NOW + US)
    sqlite_repository.acquire_reservation(reservation, NOW)
    details = operations.describe_entry(sqlite_repository, SCOPE, "k", NOW)
    assert details.outputs is None
    assert details.inline_bytes is None
    assert details.row.output_uri == "/blobs/outputs.pb"
    assert details.source_execution is None  # no key map: nothing recorded
    assert details.reservation == reservation
    assert details.reservation_active
    # At its expiry instant a reservation is over.
    later = operations.describe_entry(sqlite_repository, SCOPE, "k", NOW + US)
    assert later.reservation == reservation
    assert not later.reservation_active


def test_describe_reports_undecodable_bytes_instead_of_failing(
    sqlite_repository: SqliteRepository,
) -> None:
    row = entry("k", NOW, literals=b"\xff\xff\xff")
    sqlite_repository.create_entry(replace(row, source_identifier=b"\x08\xff"), None)
    details = operations.describe_entry(sqlite_repository, SCOPE, "k", NOW)
    assert details.outputs is None
    assert details.source is None
    assert len(details.problems) == 2


def test_describe_missing_entry_is_not_found(sqlite_repository: SqliteRepository) -> None:
    store(sqlite_repository, entry("k", NOW))
    with pytest.raises(NotFoundError, match="'k' in scope \\(unscoped\\)"):
        operations.describe_entry(sqlite_repository, Scope(), "k", NOW)


# --- delete_entry ---------------------------------------------------------------------------------


def outside_blob(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "outputs.pb"
    path.parent.mkdir(parents=True)
    path.write_bytes(int_map(o0=1).SerializeToString())
    return path


def test_delete_entry_without_a_store_keeps_the_blob(
    sqlite_repository: SqliteRepository, tmp_path: Path
) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    uri = blobs.write_outputs("k", b"data")
    store(sqlite_repository, entry("k", NOW, uri=uri))
    result = operations.delete_entry(sqlite_repository, SCOPE, "k")
    assert result.row.key == "k"
    assert not result.blob_deleted
    assert Path(uri).exists()
    assert sqlite_repository.get_entry(SCOPE, "k") is None


def test_delete_entry_deletes_only_blobs_under_the_root(
    sqlite_repository: SqliteRepository, tmp_path: Path
) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    inside = blobs.write_outputs("k", b"data")
    outside = outside_blob(tmp_path)
    sneaky = f"{tmp_path / 'blobs'}/../outside/outputs.pb"
    store(
        sqlite_repository,
        entry("inside", NOW, uri=inside),
        entry("outside", NOW, uri=str(outside)),
        entry("sneaky", NOW, uri=sneaky),
        entry("inline", NOW),
    )
    assert operations.delete_entry(sqlite_repository, SCOPE, "inside", blobs).blob_deleted
    assert not Path(inside).exists()
    for key in ("outside", "sneaky"):
        result = operations.delete_entry(sqlite_repository, SCOPE, key, blobs)
        assert not result.blob_deleted
        assert result.blob_error is not None
        assert "not under the storage root" in result.blob_error
    assert outside.exists()
    inline = operations.delete_entry(sqlite_repository, SCOPE, "inline", blobs)
    assert (inline.blob_deleted, inline.blob_error) == (False, None)


def test_delete_entry_whose_blob_is_already_gone(
    sqlite_repository: SqliteRepository, tmp_path: Path
) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    store(sqlite_repository, entry("k", NOW, uri=str(tmp_path / "blobs" / "gone" / "outputs.pb")))
    result = operations.delete_entry(sqlite_repository, SCOPE, "k", blobs)
    assert not result.blob_deleted
    assert result.blob_error == "already gone"


def test_delete_missing_entry_is_not_found(sqlite_repository: SqliteRepository) -> None:
    with pytest.raises(NotFoundError):
        operations.delete_entry(sqlite_repository, SCOPE, "nope")


# --- gc -------------------------------------------------------------------------------------------

OLDER_THAN = timedelta(hours=1)
CUTOFF = NOW - OLDER_THAN


def test_gc_deletes_strictly_before_the_cutoff_and_dry_run_agrees(
    repository: Repository,
) -> None:
    rows = [
        entry("ancient", CUTOFF - timedelta(days=400), literals=b"\x01" * 10),
        entry("just-old", CUTOFF - US, literals=b"\x02" * 5),
        entry("at-cutoff", CUTOFF),
        entry("fresh", NOW),
        entry("unscoped-old", CUTOFF - timedelta(days=1), scope=Scope(), literals=b"\x03"),
    ]
    store(repository, *rows)
    dry = operations.gc(repository, None, OLDER_THAN, NOW, dry_run=True, batch_size=2)
    assert dry == GcSummary(entries=3, inline_bytes_freed=16)
    assert len(repository.list_entries(EntryFilter(), 10)) == 5

    real = operations.gc(repository, None, OLDER_THAN, NOW, batch_size=2)
    assert real == dry
    remaining = {row.key for row in repository.list_entries(EntryFilter(), 10)}
    assert remaining == {"at-cutoff", "fresh"}
    assert operations.gc(repository, None, OLDER_THAN, NOW) == GcSummary()


def test_gc_reports_progress_per_batch(sqlite_repository: SqliteRepository) -> None:
    store(sqlite_repository, *(entry(f"k{i}", CUTOFF - (i + 1) * US) for i in range(5)))
    for dry_run in (True, False):
        seen: list[GcSummary] = []
        summary = operations.gc(
            sqlite_repository,
            None,
            OLDER_THAN,
            NOW,
            dry_run=dry_run,
            batch_size=2,
            progress_callback=seen.append,
        )
        assert [progress.entries for progress in seen] == [2, 4, 5]
        assert seen[-1] == summary


def test_gc_deletes_blobs_only_under_the_storage_root(
    sqlite_repository: SqliteRepository, tmp_path: Path
) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    old_blob = blobs.write_outputs("old", b"old")
    fresh_blob = blobs.write_outputs("fresh", b"fresh")
    outside = outside_blob(tmp_path)
    old = CUTOFF - timedelta(days=1)
    store(
        sqlite_repository,
        entry("old", old, uri=old_blob),
        entry("old-outside", old, uri=str(outside)),
        entry("old-sneaky", old, uri=f"{tmp_path / 'blobs'}/../outside/outputs.pb"),
        entry("old-inline", old, literals=b"\x01\x02"),
        entry("fresh", NOW, uri=fresh_blob),
    )
    dry = operations.gc(sqlite_repository, blobs, OLDER_THAN, NOW, dry_run=True, delete_blobs=True)
    assert dry == GcSummary(entries=4, blobs_deleted=1, inline_bytes_freed=2, blobs_skipped=2)
    assert Path(old_blob).exists()

    real = operations.gc(sqlite_repository, blobs, OLDER_THAN, NOW, delete_blobs=True)
    assert real == dry
    assert not Path(old_blob).exists()
    assert outside.exists()
    assert Path(fresh_blob).exists()


def test_gc_keeps_blobs_unless_asked(sqlite_repository: SqliteRepository, tmp_path: Path) -> None:
    blobs = BlobStore(str(tmp_path / "blobs"))
    uri = blobs.write_outputs("old", b"old")
    store(sqlite_repository, entry("old", CUTOFF - US, uri=uri))
    summary = operations.gc(sqlite_repository, blobs, OLDER_THAN, NOW)
    assert summary == GcSummary(entries=1)
    assert Path(uri).exists()


class FailingBlobStore(BlobStore):
    """Owns everything under its root but cannot delete."""

    def delete(self, uri: str) -> bool:
        raise UnavailableError(f"cannot delete {uri}: storage down")


def test_gc_counts_blob_failures_and_carries_on(
    sqlite_repository: SqliteRepository, tmp_path: Path
) -> None:
    blobs = FailingBlobStore(str(tmp_path / "blobs"))
    old = CUTOFF - US
    store(
        sqlite_repository,
        entry("a", old, uri=str(tmp_path / "blobs" / "a" / "outputs.pb")),
        entry("b", old, uri=str(tmp_path / "blobs" / "b" / "outputs.pb")),
    )
    summary = operations.gc(sqlite_repository, blobs, OLDER_THAN, NOW, delete_blobs=True)
    assert summary == GcSummary(entries=2, blob_errors=2)
    assert sqlite_repository.list_entries(EntryFilter(), 10) == []


@pytest.mark.parametrize(
    ("older_than", "batch_size", "delete_blobs"),
    [
        (timedelta(0), 10, False),
        (-OLDER_THAN, 10, False),
        (timedelta(days=999_999_999), 10, False),  # cutoff before year 1
        (OLDER_THAN, 0, False),
        (OLDER_THAN, 10, True),  # no store to delete blobs with
    ],
)
def test_gc_rejects_bad_arguments(
    sqlite_repository: SqliteRepository,
    older_than: timedelta,
    batch_size: int,
    delete_blobs: bool,
) -> None:
    store(sqlite_repository, entry("k", CUTOFF - US))
    with pytest.raises(InvalidArgumentError):
        operations.gc(
            sqlite_repository,
            None,
            older_than,
            NOW,
            delete_blobs=delete_blobs,
            batch_size=batch_size,
        )
    assert sqlite_repository.get_entry(SCOPE, "k") is not None


# --- stats and migrate ----------------------------------------------------------------------------


def test_catalog_stats(sqlite_repository: SqliteRepository) -> None:
    store(
        sqlite_repository,
        entry("a", NOW, literals=b"\x01" * 3),
        entry("b", NOW, uri="/x/outputs.pb"),
        entry("c", NOW, scope=Scope(), literals=b"\x01"),
    )
    sqlite_repository.acquire_reservation(
        ReservationRow(SCOPE, "a", "w", timedelta(seconds=1), NOW + timedelta(seconds=3)), NOW
    )
    stats = operations.catalog_stats(sqlite_repository, NOW)
    assert (stats.entries, stats.inline_bytes, stats.blob_entries) == (3, 4, 1)
    assert stats.active_reservations == 1
    assert [(s.scope, s.entries, s.inline_bytes) for s in stats.by_scope] == [
        (Scope(), 1, 1),
        (SCOPE, 2, 3),
    ]
    assert (
        operations.catalog_stats(sqlite_repository, NOW + timedelta(seconds=3)).active_reservations
        == 0
    )


def test_migrate_database_sqlite_is_idempotent(tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'new' / 'catalog.db'}"
    assert operations.migrate_database(target) == SCHEMA_VERSION
    assert operations.migrate_database(target) == SCHEMA_VERSION
    assert operations.migrate_database(str(tmp_path / "folder")) == SCHEMA_VERSION
    assert (tmp_path / "folder" / "catalog.db").exists()


def test_migrate_database_rejects_an_unknown_scheme() -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported scheme"):
        operations.migrate_database("ftp://host/db")


def test_describe_scope() -> None:
    assert operations.describe_scope(Scope()) == "(unscoped)"
    assert operations.describe_scope(SCOPE) == "org_1/project_1/domain_1"
