"""The SQLite catalog's hashed rowids: each entry sits at a 64-bit hash of its scope and key
where that slot is free, a colliding key still gets exactly its own entry, and files of the
previous schema upgrade in place keeping every row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskcache.repositories import sqlite as sqlite_module
from taskcache.repositories.base import EntryFilter, EntryRow, Replaceable
from taskcache.repositories.sqlite import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SqliteRepository,
    entry_rowid,
)
from test_repository_contract import SCOPE, T0, entry

# Every key hashes to one of two slots, so almost every write collides.
_TWO_SLOTS: Callable[[str, str, str, str], int] = lambda org, project, domain, key: len(key) % 2  # noqa: E731


def _rowids(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        return dict(conn.execute("SELECT key, id FROM cache_entries").fetchall())


def test_entry_rowid_is_pinned() -> None:
    # Existing files store these values: the function must never change.
    assert entry_rowid("org", "project", "domain", "key") == 6271504859616708531
    assert entry_rowid("", "", "", "") == -2097234767017527699
    assert entry_rowid("a", "bc", "", "") != entry_rowid("ab", "c", "", "")
    assert isinstance(entry_rowid("o", "p", "d", "\udc80 lone surrogate"), int)


def test_every_write_keeps_an_entry_at_its_hash_slot(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    home = entry_rowid(SCOPE.org, SCOPE.project, SCOPE.domain, "key")
    with SqliteRepository(path) as repository:
        repository.create_entry(entry(), None)
        assert _rowids(path) == {"key": home}
        repository.overwrite_entry(entry(output_uri="s3://b"), keep_created_at=True)
        assert _rowids(path) == {"key": home}
        stale_cutoff = T0 + timedelta(seconds=1)
        outcome = repository.create_entry(
            entry(output_uri="s3://c"), Replaceable(updated_before=stale_cutoff)
        )
        assert outcome.written
        assert _rowids(path) == {"key": home}
        stored = repository.get_entry(SCOPE, "key")
        assert stored is not None and stored.output_uri == "s3://c"


def test_a_colliding_key_gets_its_own_entry_and_never_displaces_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "entry_rowid", lambda *_: 42)
    path = tmp_path / "cache.db"
    with SqliteRepository(path) as repository:
        repository.create_entry(entry("first", output_uri="s3://first"), None)
        repository.create_entry(entry("second", output_uri="s3://second"), None)
        repository.overwrite_entry(entry("third", output_uri="s3://third"), keep_created_at=False)
        rowids = _rowids(path)
        assert rowids["first"] == 42
        assert len(set(rowids.values())) == 3
        for key in ("first", "second", "third"):
            stored = repository.get_entry(SCOPE, key)
            assert stored is not None and stored.output_uri == f"s3://{key}"
        # Replacing a displaced row must not take the slot from the row that holds it.
        later = T0 + timedelta(seconds=1)
        assert repository.create_entry(
            entry("second", output_uri="s3://2nd"), Replaceable(updated_before=later)
        ).written
        assert _rowids(path)["first"] == 42
        first = repository.get_entry(SCOPE, "first")
        assert first is not None and first.output_uri == "s3://first"
        # Once the slot is free, the next write of a key takes it.
        assert repository.delete_entry(SCOPE, "first") is not None
        assert repository.get_entry(SCOPE, "first") is None
        assert repository.create_entry(entry("fourth"), None).written
        assert _rowids(path)["fourth"] == 42
        assert repository.get_entry(SCOPE, "missing") is None


_KEYS = st.sampled_from(["a", "bb", "ccc", "dddd", "e"])
_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["create", "replace", "overwrite", "delete"]), _KEYS, st.integers(0, 9)
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(_OPERATIONS)
def test_colliding_writes_match_a_dictionary(operations: list[tuple[str, str, int]]) -> None:
    model: dict[str, str] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_module, "entry_rowid", _TWO_SLOTS)
        with SqliteRepository(None) as repository:
            for operation, key, version in operations:
                uri = f"s3://{key}/{version}"
                row = entry(key, output_uri=uri)
                if operation == "create" and repository.create_entry(row, None).written:
                    model[key] = uri
                elif operation == "replace":
                    # A cutoff after every stored row: always replaces.
                    repository.create_entry(row, Replaceable(updated_before=T0 + timedelta(days=1)))
                    model[key] = uri
                elif operation == "overwrite":
                    repository.overwrite_entry(row, keep_created_at=True)
                    model[key] = uri
                elif operation == "delete":
                    deleted = repository.delete_entry(SCOPE, key)
                    assert (deleted is None) == (key not in model)
                    model.pop(key, None)
                for probe in ("a", "bb", "ccc", "dddd", "e"):
                    stored = repository.get_entry(SCOPE, probe)
                    assert (None if stored is None else stored.output_uri) == model.get(probe)


def _version_5_file(path: Path, keys: list[str]) -> None:
    """Write a file of schema version 5 holding ``keys`` (eviction columns set)."""
    with closing(sqlite3.connect(path)) as conn:
        for step in MIGRATIONS[:5]:
            for statement in step:
                conn.execute(statement)
        for index, key in enumerate(keys):
            conn.execute(
                "INSERT INTO cache_entries (org, project, domain, key, output_uri,"
                " output_literals, source_identifier, key_map, created_at, last_updated_at,"
                " expires_at, blob_bytes, last_accessed_at)"
                " VALUES ('org', 'project', 'domain', ?, ?, x'00', x'0a', '{}', 1, 2, ?, ?, 3)",
                (key, f"s3://{key}", 100 + index, 10 * index),
            )
        conn.execute(
            "INSERT INTO reservations VALUES ('org', 'project', 'domain', 'k', 'owner', 5, 9)"
        )
        conn.execute("PRAGMA user_version = 5")
        conn.commit()


@pytest.mark.parametrize("colliding", [False, True], ids=["distinct-slots", "one-slot"])
def test_version_5_file_is_upgraded_in_place_keeping_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, colliding: bool
) -> None:
    assert SCHEMA_VERSION == 6
    if colliding:
        monkeypatch.setattr(sqlite_module, "entry_rowid", lambda *_: 7)
    path = tmp_path / "cache.db"
    keys = [f"key-{index}" for index in range(20)]
    _version_5_file(path, keys)
    with SqliteRepository(path) as repository:
        for index, key in enumerate(keys):
            stored = repository.get_entry(SCOPE, key)
            assert stored is not None
            assert (stored.output_uri, stored.output_literals) == (f"s3://{key}", b"\x00")
            assert stored.expires_at is not None
            assert stored.blob_bytes == 10 * index
            assert stored.last_accessed_at == stored.last_updated_at + timedelta(microseconds=1)
        assert len(repository.list_entries(EntryFilter(), 100)) == len(keys)
        reservation = repository.get_reservation(SCOPE, "k")
        assert reservation is not None and reservation.owner_id == "owner"
        # The upgraded table still enforces one row per key.
        written = repository.overwrite_entry(
            replace(_stored(repository, "key-3"), output_uri="s3://new"), keep_created_at=True
        )
        assert written is not None and written.output_uri == "s3://key-3"
    rowids = _rowids(path)
    assert len(rowids) == len(keys) and len(set(rowids.values())) == len(keys)
    if colliding:
        assert sorted(rowids.values()).count(7) == 1
    else:
        assert all(rowids[key] == entry_rowid("org", "project", "domain", key) for key in keys)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {
        "cache_entries_last_updated_at",
        "cache_entries_newest_first",
        "cache_entries_output_uri",
        "cache_entries_expires_at",
        "cache_entries_least_recently_used",
        "maintenance_leases",
        "datacatalog_datasets",
    } <= names
    assert "cache_entries_by_rowid" not in names


def _stored(repository: SqliteRepository, key: str) -> EntryRow:
    stored = repository.get_entry(SCOPE, key)
    assert stored is not None
    return stored
