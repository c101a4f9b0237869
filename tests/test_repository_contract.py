"""The Repository contract, checked against every backend.

Each test runs on an in-memory SQLite database, a SQLite file and a PostgreSQL database, the
last both through the synchronous ``PostgresRepository`` and through the asynchronous
``AsyncPostgresRepository`` (behind :class:`SyncAdapter`, which runs each coroutine on a
private event loop); see ``tests/conftest.py`` (skipped loudly without a server, failed under
``CI=true``). The operator queries (``OperatorRepository``) are checked on every backend but
the asynchronous one, which implements only the hot path.
Backend-specific behaviour lives in ``test_sqlite_repository.py`` and
``test_postgres_repository.py``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskcache.errors import InvalidArgumentError, UnavailableError
from taskcache.repositories.base import (
    CatalogStats,
    EntryCursor,
    EntryFilter,
    EntryRow,
    HitReader,
    HitRow,
    OperatorRepository,
    ProjectStats,
    Replaceable,
    Repository,
    ReservationRow,
    Scope,
)
from taskcache.repositories.sqlite import SqliteRepository

SCOPE = Scope("org", "project", "domain")
# Odd microseconds catch any float rounding on the way through the database.
T0 = datetime(2024, 5, 17, 12, 30, 45, 123457, tzinfo=UTC)
US = timedelta(microseconds=1)


def entry(
    key: str = "key",
    *,
    scope: Scope = SCOPE,
    output_uri: str | None = "s3://bucket/outputs.pb",
    output_literals: bytes | None = b"\x00\x01literals",
    created_at: datetime = T0,
    last_updated_at: datetime = T0,
    source_identifier: bytes = b"\x0asource",
    key_map: dict[str, str] | None = None,
) -> EntryRow:
    return EntryRow(
        scope=scope,
        key=key,
        output_uri=output_uri,
        output_literals=output_literals,
        source_identifier=source_identifier,
        key_map={"a": "1", "ключ": "значение"} if key_map is None else key_map,
        created_at=created_at,
        last_updated_at=last_updated_at,
    )


def reservation(
    owner: str,
    expires_at: datetime,
    *,
    key: str = "key",
    heartbeat: timedelta = timedelta(seconds=5),
) -> ReservationRow:
    return ReservationRow(
        scope=SCOPE, key=key, owner_id=owner, heartbeat_interval=heartbeat, expires_at=expires_at
    )


BACKENDS = ["sqlite-memory", "sqlite-file", "postgres", "postgres-async"]
# The asynchronous repository serves requests only: it is no OperatorRepository.
OPERATOR_BACKENDS = ["sqlite-memory", "sqlite-file", "postgres"]
# Runs a test on the backends that implement the operator queries (overrides repo's params).
operator_backends = pytest.mark.parametrize("repo", OPERATOR_BACKENDS, indirect=True)


class SyncAdapter:
    """An asynchronous repository as a synchronous one: each coroutine method runs to
    completion on ``loop`` (which also runs the pool's background tasks meanwhile).
    """

    def __init__(self, repository: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.repository = repository
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.repository, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attribute(*args, **kwargs))

        return call


def open_async_postgres(url: str, **options: Any) -> tuple[SyncAdapter, Callable[[], None]]:
    """Open an AsyncPostgresRepository on a private loop; return it adapted and a closer."""
    from taskcache.repositories.postgres_async import AsyncPostgresRepository

    loop = asyncio.new_event_loop()
    repository = loop.run_until_complete(AsyncPostgresRepository.open(url, **options))

    def close() -> None:
        try:
            loop.run_until_complete(repository.close())
        finally:
            loop.close()

    return SyncAdapter(repository, loop), close


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repository]:
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_repository")
        return
    if request.param == "postgres-async":
        adapted, close = open_async_postgres(
            request.getfixturevalue("clean_postgres"), min_size=1, max_size=4
        )
        try:
            yield cast(Repository, adapted)
        finally:
            close()
        return
    path = None if request.param == "sqlite-memory" else tmp_path / "nested" / "cache.db"
    repository = SqliteRepository(path)
    yield repository
    repository.close()


# --- entries -------------------------------------------------------------------------------


def test_get_absent_entry_is_none(repo: Repository) -> None:
    assert repo.get_entry(SCOPE, "missing") is None


def test_create_inserts_when_absent(repo: Repository) -> None:
    row = entry()
    outcome = repo.create_entry(row, None)
    assert outcome.written is True
    assert outcome.replaced is None
    assert repo.get_entry(SCOPE, "key") == row


@pytest.mark.parametrize(
    ("output_uri", "output_literals"), [("s3://only/uri", None), (None, b"only literals")]
)
def test_create_stores_either_output_alone(
    repo: Repository, output_uri: str | None, output_literals: bytes | None
) -> None:
    row = entry(output_uri=output_uri, output_literals=output_literals)
    repo.create_entry(row, None)
    assert repo.get_entry(SCOPE, "key") == row


def test_create_refuses_existing_without_cutoff(repo: Repository) -> None:
    old = entry(last_updated_at=T0 - timedelta(days=365))
    repo.create_entry(old, None)
    outcome = repo.create_entry(entry(output_uri="s3://new"), None)
    assert outcome.written is False
    assert outcome.replaced is None
    assert repo.get_entry(SCOPE, "key") == old


def test_create_keeps_entry_updated_exactly_at_cutoff(repo: Repository) -> None:
    old = entry()
    repo.create_entry(old, None)
    outcome = repo.create_entry(
        entry(output_uri="s3://new", last_updated_at=T0 + US), Replaceable(updated_before=T0)
    )
    assert outcome.written is False
    assert repo.get_entry(SCOPE, "key") == old


def test_create_replaces_entry_updated_before_cutoff(repo: Repository) -> None:
    old = entry()
    repo.create_entry(old, None)
    new = entry(
        output_uri="s3://new", output_literals=None, created_at=T0 + US, last_updated_at=T0 + US
    )
    outcome = repo.create_entry(new, Replaceable(updated_before=T0 + US))
    assert outcome.written is True
    assert outcome.replaced == old
    assert repo.get_entry(SCOPE, "key") == new


def test_scopes_and_keys_are_independent(repo: Repository) -> None:
    rows = [
        entry("key", scope=SCOPE),
        entry("key", scope=Scope()),
        entry("key", scope=Scope("org", "project", "other")),
        entry("other", scope=SCOPE),
    ]
    for row in rows:
        assert repo.create_entry(row, None).written
    for row in rows:
        assert repo.get_entry(row.scope, row.key) == row


def test_overwrite_inserts_when_absent(repo: Repository) -> None:
    row = entry()
    assert repo.overwrite_entry(row, keep_created_at=True) is None
    assert repo.get_entry(SCOPE, "key") == row


def test_overwrite_keeps_created_at_when_asked(repo: Repository) -> None:
    old = entry()
    repo.create_entry(old, None)
    later = T0 + timedelta(hours=1)
    new = entry(output_uri="s3://new", key_map={"b": "2"}, created_at=later, last_updated_at=later)
    assert repo.overwrite_entry(new, keep_created_at=True) == old
    assert repo.get_entry(SCOPE, "key") == replace(new, created_at=old.created_at)


def test_overwrite_replaces_created_at_otherwise(repo: Repository) -> None:
    old = entry()
    repo.create_entry(old, None)
    later = T0 + timedelta(hours=1)
    new = entry(output_uri=None, created_at=later, last_updated_at=later)
    assert repo.overwrite_entry(new, keep_created_at=False) == old
    assert repo.get_entry(SCOPE, "key") == new


def test_delete_returns_the_deleted_row(repo: Repository) -> None:
    row = entry()
    repo.create_entry(row, None)
    assert repo.delete_entry(SCOPE, "key") == row
    assert repo.get_entry(SCOPE, "key") is None
    assert repo.delete_entry(SCOPE, "key") is None


def test_delete_absent_is_none(repo: Repository) -> None:
    assert repo.delete_entry(SCOPE, "missing") is None


def test_delete_if_unchanged_deletes_unchanged_row(repo: Repository) -> None:
    row = entry(output_uri=None)  # NULL must match NULL
    repo.create_entry(row, None)
    assert repo.delete_entry_if_unchanged(row) is True
    assert repo.get_entry(SCOPE, "key") is None
    assert repo.delete_entry_if_unchanged(row) is False


@pytest.mark.parametrize(
    "change",
    [
        {"output_uri": "s3://elsewhere"},
        {"output_uri": None},
        {"output_literals": b"other"},
        {"output_literals": None},
        {"output_literals": b""},
        {"last_updated_at": T0 + US},
    ],
)
def test_delete_if_unchanged_keeps_changed_row(repo: Repository, change: dict[str, Any]) -> None:
    stored = replace(entry(), **change)
    repo.create_entry(stored, None)
    assert repo.delete_entry_if_unchanged(entry()) is False
    assert repo.get_entry(SCOPE, "key") == stored


def test_delete_if_unchanged_ignores_other_scope(repo: Repository) -> None:
    row = entry()
    repo.create_entry(row, None)
    assert repo.delete_entry_if_unchanged(replace(row, scope=Scope())) is False
    assert repo.get_entry(SCOPE, "key") == row


def test_record_accesses_moves_only_older_records_of_present_entries(repo: Repository) -> None:
    other = Scope("other-org", "other-project", "other-domain")
    for name in ("old", "recent"):
        repo.create_entry(entry(name), None)
    repo.create_entry(entry("old", scope=other), None)
    later = T0 + timedelta(minutes=5)
    assert repo.record_accesses([(SCOPE, "recent")], later, later) == 1
    at = T0 + timedelta(minutes=10)
    batch = [(SCOPE, "old"), (SCOPE, "recent"), (SCOPE, "absent"), (other, "old")]
    # "recent" was recorded at +5 min, not before the cutoff: it stays; "absent" is skipped.
    assert repo.record_accesses(batch, at, if_before=later) == 2

    def accessed(scope: Scope, key: str) -> datetime | None:
        row = repo.get_entry(scope, key)
        assert row is not None
        return row.last_accessed_at

    assert accessed(SCOPE, "old") == at and accessed(other, "old") == at
    assert accessed(SCOPE, "recent") == later
    assert repo.record_accesses([], at, at) == 0
    with pytest.raises(InvalidArgumentError):
        repo.record_accesses([(SCOPE, "old")], at.replace(tzinfo=None), at)


# --- reservations --------------------------------------------------------------------------


def test_output_uri_referenced_looks_in_every_scope(repo: Repository) -> None:
    other = Scope("other-org", "other-project", "other-domain")
    repo.create_entry(entry("a", output_uri="s3://b/a/outputs.pb"), None)
    repo.create_entry(entry("b", scope=other, output_uri="s3://b/b/outputs.pb"), None)
    repo.create_entry(entry("inline", output_uri=None), None)
    assert repo.output_uri_referenced(["s3://b/a/outputs.pb"])
    assert repo.output_uri_referenced(["s3://nope", "s3://b/b/outputs.pb"])
    assert not repo.output_uri_referenced(["s3://b/c/outputs.pb", "s3://b/a"])
    assert not repo.output_uri_referenced([])
    repo.delete_entry(other, "b")
    assert not repo.output_uri_referenced(["s3://b/b/outputs.pb"])


def test_acquire_grants_when_absent(repo: Repository) -> None:
    wanted = reservation("a", T0 + timedelta(seconds=15))
    assert repo.acquire_reservation(wanted, T0) == wanted


def test_acquire_returns_unexpired_holder_unchanged(repo: Repository) -> None:
    held = reservation("a", T0 + timedelta(seconds=15))
    repo.acquire_reservation(held, T0)
    now = T0 + timedelta(seconds=15) - US
    other = reservation("b", now + timedelta(seconds=30), heartbeat=timedelta(seconds=10))
    assert repo.acquire_reservation(other, now) == held
    # Still refused: the failed attempt must not have changed anything.
    assert repo.acquire_reservation(other, now) == held


def test_acquire_extends_own_reservation(repo: Repository) -> None:
    repo.acquire_reservation(reservation("a", T0 + timedelta(seconds=15)), T0)
    extended = reservation("a", T0 + timedelta(seconds=40), heartbeat=timedelta(seconds=7))
    assert repo.acquire_reservation(extended, T0 + timedelta(seconds=10)) == extended
    assert repo.acquire_reservation(reservation("b", T0), T0 + timedelta(seconds=39)) == extended


def test_acquire_takes_over_at_expiry(repo: Repository) -> None:
    expiry = T0 + timedelta(seconds=15)
    repo.acquire_reservation(reservation("a", expiry), T0)
    takeover = reservation("b", expiry + timedelta(seconds=15))
    assert repo.acquire_reservation(takeover, expiry) == takeover
    assert repo.acquire_reservation(reservation("a", expiry + US), expiry + US) == takeover


def test_reservations_are_per_key(repo: Repository) -> None:
    first = reservation("a", T0 + timedelta(seconds=15), key="k1")
    second = reservation("b", T0 + timedelta(seconds=15), key="k2")
    assert repo.acquire_reservation(first, T0) == first
    assert repo.acquire_reservation(second, T0) == second


def test_release_own_reservation(repo: Repository) -> None:
    repo.acquire_reservation(reservation("a", T0 + timedelta(seconds=15)), T0)
    assert repo.release_reservation(SCOPE, "key", "a") is True
    assert repo.release_reservation(SCOPE, "key", "a") is False
    other = reservation("b", T0 + timedelta(seconds=15))
    assert repo.acquire_reservation(other, T0) == other


def test_release_foreign_or_absent_is_noop(repo: Repository) -> None:
    assert repo.release_reservation(SCOPE, "key", "a") is False
    held = reservation("a", T0 + timedelta(seconds=15))
    repo.acquire_reservation(held, T0)
    assert repo.release_reservation(SCOPE, "key", "b") is False
    assert repo.release_reservation(Scope(), "key", "a") is False
    assert repo.acquire_reservation(reservation("b", T0), T0) == held


# --- time, encoding, lifecycle --------------------------------------------------------------


round_trip_examples = given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]),
    ),
    heartbeat=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)),
)
round_trip_settings = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _store_moment(repo: Repository, moment: datetime, heartbeat: timedelta) -> EntryRow:
    """Store an entry and a reservation at ``moment``; check and return the stored entry."""
    # One repository serves every example: start each from an empty key.
    repo.delete_entry(SCOPE, "key")
    repo.release_reservation(SCOPE, "key", "a")
    repo.create_entry(entry(created_at=moment, last_updated_at=moment), None)
    stored = repo.get_entry(SCOPE, "key")
    assert stored is not None
    assert stored.created_at == moment
    assert stored.last_updated_at == moment
    assert stored.created_at.utcoffset() == timedelta(0)
    wanted = reservation("a", moment, heartbeat=heartbeat)
    got = repo.acquire_reservation(wanted, moment - timedelta(days=1))
    assert got == wanted
    assert got.expires_at.utcoffset() == timedelta(0)
    return stored


@round_trip_settings
@round_trip_examples
def test_timestamps_round_trip_to_the_microsecond(
    repo: Repository, moment: datetime, heartbeat: timedelta
) -> None:
    _store_moment(repo, moment, heartbeat)


@operator_backends
@round_trip_settings
@round_trip_examples
def test_operator_queries_round_trip_timestamps(
    repo: OperatorRepository, moment: datetime, heartbeat: timedelta
) -> None:
    stored = _store_moment(repo, moment, heartbeat)
    assert repo.get_reservation(SCOPE, "key") == reservation("a", moment, heartbeat=heartbeat)
    assert repo.list_entries(EntryFilter(), 10, EntryCursor(moment, SCOPE, "kex")) == [stored]


def test_naive_datetime_is_rejected(repo: Repository) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        repo.create_entry(entry(created_at=datetime(2024, 1, 1)), None)
    assert caught.value.field == "created_at"
    assert repo.get_entry(SCOPE, "key") is None


def test_ping_and_close(repo: Repository) -> None:
    repo.ping()
    repo.close()
    repo.close()  # idempotent
    with pytest.raises(UnavailableError):
        repo.ping()
    with pytest.raises(UnavailableError):
        repo.get_entry(SCOPE, "key")


# --- operator methods: get_reservation ------------------------------------------------------


@operator_backends
def test_get_reservation_absent_is_none(repo: OperatorRepository) -> None:
    assert repo.get_reservation(SCOPE, "key") is None


@operator_backends
def test_get_reservation_returns_expired_and_unexpired_rows(repo: OperatorRepository) -> None:
    held = reservation("a", T0 + timedelta(seconds=15), heartbeat=timedelta(seconds=3))
    repo.acquire_reservation(held, T0)
    assert repo.get_reservation(SCOPE, "key") == held
    assert repo.get_reservation(Scope(), "key") is None
    assert repo.get_reservation(SCOPE, "other") is None
    # Expiry does not remove the row; only a release or a takeover changes it.
    expired = reservation("b", T0 - timedelta(seconds=1), key="stale")
    repo.acquire_reservation(expired, T0 - timedelta(days=1))
    assert repo.get_reservation(SCOPE, "stale") == expired
    taken = reservation("c", T0 + timedelta(seconds=15), key="stale")
    assert repo.acquire_reservation(taken, T0) == taken
    assert repo.get_reservation(SCOPE, "stale") == taken
    assert repo.release_reservation(SCOPE, "key", "a")
    assert repo.get_reservation(SCOPE, "key") is None


# --- operator methods: list_entries -----------------------------------------------------------


def _store(repo: Repository, rows: list[EntryRow]) -> None:
    for row in rows:
        assert repo.create_entry(row, None).written


def _newest_first(rows: list[EntryRow]) -> list[EntryRow]:
    """The contract's listing order, computed independently."""
    by_scope_and_key = sorted(
        rows, key=lambda r: (r.scope.org, r.scope.project, r.scope.domain, r.key)
    )
    return sorted(by_scope_and_key, key=lambda r: r.last_updated_at, reverse=True)


def _cursor(row: EntryRow) -> EntryCursor:
    return EntryCursor(last_updated_at=row.last_updated_at, scope=row.scope, key=row.key)


def _catalog() -> list[EntryRow]:
    """Entries over three scopes with many equal timestamps (the tie-breaking cases)."""
    scopes = [SCOPE, Scope("org", "project", "prod"), Scope("other", "project", "domain")]
    rows = []
    for index in range(12):
        scope = scopes[index % 3]
        # Four distinct times, three entries each; keys repeat across scopes.
        moment = T0 + timedelta(seconds=index // 3)
        rows.append(entry(f"k{index % 4}-{index}", scope=scope, last_updated_at=moment))
    rows.append(entry("k0-x", scope=Scope(), last_updated_at=T0 - timedelta(days=1)))
    return rows


@operator_backends
def test_list_entries_runs_newest_first_with_ties_by_scope_then_key(
    repo: OperatorRepository,
) -> None:
    rows = _catalog()
    _store(repo, rows)
    listed = repo.list_entries(EntryFilter(), 100)
    assert listed == _newest_first(rows)
    assert listed[-1].scope == Scope()
    assert repo.list_entries(EntryFilter(), 3) == listed[:3]
    assert repo.list_entries(EntryFilter(), 0) == []


@operator_backends
def test_list_entries_empty_catalog(repo: OperatorRepository) -> None:
    assert repo.list_entries(EntryFilter(), 10) == []
    assert repo.list_entries(EntryFilter(org="org"), 10, _cursor(entry())) == []


@operator_backends
@pytest.mark.parametrize("page_size", [1, 2, 5])
def test_list_entries_pages_cover_everything_once(repo: OperatorRepository, page_size: int) -> None:
    rows = _catalog()
    # Same timestamp, same scope, keys differing only after a shared prefix.
    rows += [entry(f"tie-{i}", last_updated_at=T0 + timedelta(seconds=2)) for i in range(4)]
    _store(repo, rows)
    pages: list[list[EntryRow]] = []
    after: EntryCursor | None = None
    while page := repo.list_entries(EntryFilter(), page_size, after):
        assert len(page) <= page_size
        pages.append(page)
        after = _cursor(page[-1])
    assert [row for page in pages for row in page] == _newest_first(rows)
    assert all(len(page) == page_size for page in pages[:-1])


@operator_backends
def test_list_entries_cursor_is_exclusive_and_need_not_exist(repo: OperatorRepository) -> None:
    rows = [entry(f"k{i}", last_updated_at=T0) for i in range(3)]
    _store(repo, rows)
    assert repo.list_entries(EntryFilter(), 10, _cursor(rows[0])) == rows[1:]
    # A cursor between stored keys (e.g. its row was deleted since) still works.
    assert repo.list_entries(EntryFilter(), 10, EntryCursor(T0, SCOPE, "k0a")) == rows[1:]
    assert repo.list_entries(EntryFilter(), 10, EntryCursor(T0 + US, Scope(), "")) == rows
    assert repo.list_entries(EntryFilter(), 10, EntryCursor(T0, SCOPE, "k2")) == []


@operator_backends
def test_list_entries_filters(repo: OperatorRepository) -> None:
    rows = _catalog()
    _store(repo, rows)

    def matching(entry_filter: EntryFilter) -> list[EntryRow]:
        return _newest_first(
            [
                row
                for row in rows
                if entry_filter.org in (None, row.scope.org)
                and entry_filter.project in (None, row.scope.project)
                and entry_filter.domain in (None, row.scope.domain)
                and row.key.startswith(entry_filter.key_prefix or "")
            ]
        )

    filters = [
        EntryFilter(org="org"),
        EntryFilter(org="other"),
        EntryFilter(org=""),
        EntryFilter(project="project"),
        EntryFilter(domain="prod"),
        EntryFilter(org="org", project="project", domain="domain"),
        EntryFilter(key_prefix="k0"),
        EntryFilter(key_prefix="k0-1"),
        EntryFilter(org="org", key_prefix="k1"),
        EntryFilter(key_prefix=""),
        EntryFilter(org="nobody"),
    ]
    for entry_filter in filters:
        expected = matching(entry_filter)
        assert repo.list_entries(entry_filter, 100) == expected, entry_filter
        if len(expected) > 1:
            after = _cursor(expected[0])
            assert repo.list_entries(entry_filter, 100, after) == expected[1:], entry_filter


@operator_backends
def test_list_entries_key_prefix_is_literal_and_case_sensitive(repo: OperatorRepository) -> None:
    keys = ["a%b", "axb", "a_b", "a\\b", "A%b", "a%", "ab", "é1", "é", "e1"]
    _store(repo, [entry(key) for key in keys])
    for prefix in ["a%", "a_", "a\\", "A", "a", "é", "e", "zz"]:
        listed = {row.key for row in repo.list_entries(EntryFilter(key_prefix=prefix), 100)}
        assert listed == {key for key in keys if key.startswith(prefix)}, prefix


@operator_backends
def test_list_entries_rejects_bad_arguments(repo: OperatorRepository) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        repo.list_entries(EntryFilter(), -1)
    assert caught.value.field == "limit"
    naive = EntryCursor(datetime(2024, 1, 1), SCOPE, "key")
    with pytest.raises(InvalidArgumentError):
        repo.list_entries(EntryFilter(), 10, naive)


# --- operator methods: delete_entries_updated_before ---------------------------------------


@operator_backends
def test_delete_entries_updated_before_oldest_first_strictly_before(
    repo: OperatorRepository,
) -> None:
    rows = [
        entry("newest", last_updated_at=T0 + timedelta(hours=1)),
        entry("at-cutoff", last_updated_at=T0),
        entry("b", last_updated_at=T0 - US),
        entry("a", last_updated_at=T0 - US),
        entry("a", scope=Scope(), last_updated_at=T0 - US),
        entry("oldest", last_updated_at=T0 - timedelta(days=30)),
    ]
    _store(repo, rows)
    expected = [rows[5], rows[4], rows[3], rows[2]]  # oldest first, ties by scope then key

    assert repo.delete_entries_updated_before(T0, 100, dry_run=True) == expected
    assert repo.delete_entries_updated_before(T0, 2, dry_run=True) == expected[:2]
    # A dry run deletes nothing.
    assert _newest_first(repo.list_entries(EntryFilter(), 100)) == _newest_first(rows)

    assert repo.delete_entries_updated_before(T0, 2) == expected[:2]
    assert repo.get_entry(SCOPE, "oldest") is None
    assert repo.get_entry(Scope(), "a") is None
    assert repo.get_entry(SCOPE, "a") == rows[3]
    assert repo.delete_entries_updated_before(T0, 100) == expected[2:]
    assert repo.delete_entries_updated_before(T0, 100) == []
    assert repo.list_entries(EntryFilter(), 100) == [rows[0], rows[1]]


@operator_backends
def test_delete_entries_updated_before_limit_zero_and_bad_arguments(
    repo: OperatorRepository,
) -> None:
    _store(repo, [entry(last_updated_at=T0 - timedelta(days=1))])
    assert repo.delete_entries_updated_before(T0, 0) == []
    assert repo.get_entry(SCOPE, "key") is not None
    with pytest.raises(InvalidArgumentError) as caught:
        repo.delete_entries_updated_before(T0, -1)
    assert caught.value.field == "limit"
    with pytest.raises(InvalidArgumentError) as caught:
        repo.delete_entries_updated_before(datetime(2024, 1, 1), 10)
    assert caught.value.field == "cutoff"
    assert repo.get_entry(SCOPE, "key") is not None


@operator_backends
def test_delete_entries_if_unchanged_deletes_only_unchanged_rows(
    repo: OperatorRepository,
) -> None:
    listed = [
        entry("inline", output_uri=None),  # NULL must match NULL
        entry("blob", output_literals=None),
        entry("rewritten"),
        entry("relocated"),
        entry("gone"),
        entry("key", scope=Scope()),
        entry("key", scope=Scope("org", "other", "domain")),
    ]
    _store(repo, listed[:4] + listed[5:])
    # Rewritten after it was listed: a newer update time, or other outputs at the same time.
    later = replace(listed[2], last_updated_at=T0 + US)
    repo.overwrite_entry(later, keep_created_at=True)
    moved = replace(listed[3], output_uri="s3://bucket/new.pb")
    repo.overwrite_entry(moved, keep_created_at=True)
    untouched = entry("not-listed")
    repo.create_entry(untouched, None)

    deleted = repo.delete_entries_if_unchanged(listed)

    assert deleted == [listed[0], listed[1], listed[5], listed[6]]  # in the order given
    assert _newest_first(repo.list_entries(EntryFilter(), 100)) == _newest_first(
        [later, moved, untouched]
    )
    assert repo.delete_entries_if_unchanged(listed) == []
    assert repo.delete_entries_if_unchanged([]) == []


@operator_backends
def test_delete_entries_if_unchanged_rejects_a_naive_time(repo: OperatorRepository) -> None:
    _store(repo, [entry()])
    with pytest.raises(InvalidArgumentError) as caught:
        repo.delete_entries_if_unchanged([entry(last_updated_at=datetime(2024, 1, 1))])
    assert caught.value.field == "last_updated_at"
    assert repo.get_entry(SCOPE, "key") is not None


# --- operator methods: stats ----------------------------------------------------------------


@operator_backends
def test_stats_of_an_empty_catalog(repo: OperatorRepository) -> None:
    assert repo.stats(T0) == CatalogStats(
        entries=0, inline_bytes=0, blob_entries=0, active_reservations=0, by_scope=()
    )


@operator_backends
def test_stats_figures(repo: OperatorRepository) -> None:
    prod = Scope("org", "project", "prod")
    _store(
        repo,
        [
            entry("both", output_uri="s3://x", output_literals=b"12345"),
            entry("inline", output_uri=None, output_literals=b"123"),
            entry("blob", output_uri="s3://y", output_literals=None),
            entry("empty-literals", output_uri="s3://z", output_literals=b""),
            entry("p1", scope=prod, output_uri=None, output_literals=b"1234567"),
            entry("u", scope=Scope(), output_uri="s3://u", output_literals=None),
        ],
    )
    # Active means expires_at > now: the one expiring exactly now is not.
    repo.acquire_reservation(reservation("a", T0 + US, key="r1"), T0)
    repo.acquire_reservation(reservation("a", T0 + timedelta(hours=1), key="r2"), T0)
    repo.acquire_reservation(reservation("a", T0, key="r3"), T0 - timedelta(days=1))
    repo.acquire_reservation(reservation("a", T0 - US, key="r4"), T0 - timedelta(days=1))

    assert repo.stats(T0) == CatalogStats(
        entries=6,
        inline_bytes=5 + 3 + 0 + 7,
        blob_entries=4,
        active_reservations=2,
        by_scope=(
            ProjectStats(scope=Scope(), entries=1, inline_bytes=0, blob_entries=1),
            ProjectStats(scope=SCOPE, entries=4, inline_bytes=8, blob_entries=3),
            ProjectStats(scope=prod, entries=1, inline_bytes=7, blob_entries=0),
        ),
    )
    assert repo.stats(T0 + US).active_reservations == 1
    assert repo.stats(T0 - US).active_reservations == 3
    assert repo.stats(T0 + timedelta(days=1)).active_reservations == 0
    with pytest.raises(InvalidArgumentError):
        repo.stats(datetime(2024, 1, 1))


def test_taking_over_an_expired_reservation_names_the_previous_owner(repo: Repository) -> None:
    fresh = repo.acquire_reservation(reservation("a", T0 + timedelta(seconds=15)), T0)
    assert fresh.taken_over_from is None
    extended = repo.acquire_reservation(
        reservation("a", T0 + timedelta(seconds=25)), T0 + timedelta(seconds=10)
    )
    assert extended.taken_over_from is None
    contended = repo.acquire_reservation(
        reservation("b", T0 + timedelta(seconds=30)), T0 + timedelta(seconds=12)
    )
    assert contended.owner_id == "a"
    assert contended.taken_over_from is None
    taken = repo.acquire_reservation(
        reservation("b", T0 + timedelta(seconds=60)), T0 + timedelta(seconds=25)
    )
    assert taken.owner_id == "b"
    assert taken.taken_over_from == "a"
    assert taken == reservation("b", T0 + timedelta(seconds=60))  # not part of equality


def test_pool_stats_exist_only_for_pooled_backends(repo: Repository) -> None:
    stats = repo.pool_stats()
    if isinstance(repo, SqliteRepository):
        assert stats is None
    else:
        assert stats is not None
        assert stats.size >= 1
        assert 0 <= stats.available <= stats.size
        assert stats.waiting >= 0


@pytest.mark.parametrize("in_memory", [True, False], ids=["sqlite-memory", "sqlite-file"])
@pytest.mark.parametrize("shared", [True, False], ids=["one-instant", "three-instants"])
def test_a_hit_row_holds_the_entry_rows_fields(
    tmp_path: Path, in_memory: bool, shared: bool
) -> None:
    # Only the SQLite repository has the lean hit reader (the others serve hits through
    # get_entry), so this runs on its two forms rather than on every backend.
    repo = SqliteRepository(None if in_memory else tmp_path / "cache.db")
    assert isinstance(repo, HitReader)
    try:
        _check_hit_row(repo, shared)
    finally:
        repo.close()


def _check_hit_row(repo: SqliteRepository, shared: bool) -> None:
    assert repo.get_hit(SCOPE, "key") is None
    updated = T0 if shared else T0 + 7 * US
    row = replace(
        entry(created_at=T0, last_updated_at=updated),
        expires_at=T0 + timedelta(days=1),
        last_accessed_at=T0 if shared else T0 + 13 * US,
    )
    repo.create_entry(row, None)
    found = repo.get_entry(SCOPE, "key")
    hit = repo.get_hit(SCOPE, "key")
    assert found is not None and hit is not None
    assert type(hit) is HitRow
    for name in HitRow._fields:
        assert getattr(hit, name) == getattr(found, name) == getattr(row, name), name
    repo.delete_entry(SCOPE, "key")
    assert repo.get_hit(SCOPE, "key") is None


@pytest.mark.parametrize("shared", [True, False], ids=["one-instant", "three-instants"])
def test_a_row_read_back_is_the_row_written_field_by_field(repo: Repository, shared: bool) -> None:
    # Rows are decoded without the dataclass __init__ and equal stored times are decoded
    # once: every field, last_accessed_at too (which equality ignores), must still match.
    updated = T0 if shared else T0 + 7 * US
    accessed = T0 if shared else T0 + 13 * US
    row = replace(
        entry(created_at=T0, last_updated_at=updated, key_map={"a": "1"}),
        expires_at=T0 + timedelta(days=1),
        blob_bytes=42,
        last_accessed_at=accessed,
    )
    repo.create_entry(row, None)
    found = repo.get_entry(SCOPE, "key")
    assert found is not None
    assert type(found) is EntryRow
    for name in EntryRow.__dataclass_fields__:
        assert getattr(found, name) == getattr(row, name), name
    assert found == row
    with pytest.raises(AttributeError):  # still frozen
        found.key = "other"  # type: ignore[misc]
