"""The rules of CacheManager, checked against real repositories (SQLite and PostgreSQL) and a
fake clock."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskcache.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
)
from taskcache.manager import CacheManager, NewEntry, PutResult
from taskcache.repositories.base import EntryRow, Repository, ReservationRow, Scope
from taskcache.repositories.sqlite import SqliteRepository

SCOPE = Scope("org", "project", "domain")
START = datetime(2024, 5, 17, 12, 0, 0, 123457, tzinfo=UTC)
US = timedelta(microseconds=1)
MAX_HEARTBEAT = timedelta(seconds=10)
MULTIPLIER = 3.0


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def new_entry(
    uri: str | None = "s3://bucket/outputs.pb",
    literals: bytes | None = b"literals",
    created_at: datetime | None = None,
) -> NewEntry:
    return NewEntry(
        output_uri=uri,
        output_literals=literals,
        source_identifier=b"source",
        key_map={"input": "hash"},
        created_at=created_at,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def repo(request: pytest.FixtureRequest) -> Iterator[Repository]:
    if request.param == "postgres":
        # A clean PostgresRepository from tests/conftest.py (skipped without a server).
        yield request.getfixturevalue("postgres_repository")
        return
    repository = SqliteRepository(None)
    yield repository
    repository.close()


@pytest.fixture
def manager(repo: Repository, clock: FakeClock) -> CacheManager:
    return CacheManager(
        repo,
        clock=clock,
        max_reservation_heartbeat=MAX_HEARTBEAT,
        heartbeat_grace_multiplier=MULTIPLIER,
    )


# --- construction and validation -----------------------------------------------------------


@pytest.mark.parametrize("heartbeat", [timedelta(0), -US])
def test_constructor_rejects_non_positive_max_heartbeat(
    repo: Repository, heartbeat: timedelta
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        CacheManager(repo, max_reservation_heartbeat=heartbeat)
    assert caught.value.field == "max_reservation_heartbeat"


@pytest.mark.parametrize("multiplier", [0.0, -1.0])
def test_constructor_rejects_non_positive_multiplier(repo: Repository, multiplier: float) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        CacheManager(repo, heartbeat_grace_multiplier=multiplier)
    assert caught.value.field == "heartbeat_grace_multiplier"


def _calls_taking_key(manager: CacheManager, key: str) -> list[Any]:
    return [
        lambda: manager.get(SCOPE, key),
        lambda: manager.put(SCOPE, key, new_entry()),
        lambda: manager.put(SCOPE, key, new_entry(), overwrite=True),
        lambda: manager.delete(SCOPE, key),
        lambda: manager.get_or_extend_reservation(SCOPE, key, "owner", timedelta(seconds=1)),
        lambda: manager.release_reservation(SCOPE, key, "owner"),
    ]


@pytest.mark.parametrize("key", ["", "k" * 1025])
@pytest.mark.parametrize("call", range(6))
def test_bad_key_is_invalid_argument(manager: CacheManager, key: str, call: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        _calls_taking_key(manager, key)[call]()
    assert caught.value.field == "key"


def test_key_of_1024_characters_is_accepted(manager: CacheManager) -> None:
    key = "k" * 1024
    stored = manager.put(SCOPE, key, new_entry()).stored
    assert manager.get(SCOPE, key) == stored
    assert manager.get_or_extend_reservation(SCOPE, key, "owner", US).owner_id == "owner"
    manager.release_reservation(SCOPE, key, "owner")
    assert manager.delete(SCOPE, key) == stored


def test_empty_owner_is_invalid_argument(manager: CacheManager) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        manager.get_or_extend_reservation(SCOPE, "key", "", timedelta(seconds=1))
    assert caught.value.field == "owner_id"
    with pytest.raises(InvalidArgumentError) as caught:
        manager.release_reservation(SCOPE, "key", "")
    assert caught.value.field == "owner_id"


def test_put_without_outputs_is_invalid_argument(manager: CacheManager) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        manager.put(SCOPE, "key", new_entry(uri=None, literals=None))
    assert caught.value.field == "output"
    with pytest.raises(NotFoundError):
        manager.get(SCOPE, "key")


# --- put, get, delete ----------------------------------------------------------------------


def test_put_stores_row_stamped_now(manager: CacheManager, clock: FakeClock) -> None:
    result = manager.put(SCOPE, "key", new_entry())
    assert result.replaced is None
    stored = result.stored
    assert (stored.scope, stored.key) == (SCOPE, "key")
    assert (stored.output_uri, stored.output_literals) == ("s3://bucket/outputs.pb", b"literals")
    assert (stored.source_identifier, stored.key_map) == (b"source", {"input": "hash"})
    assert stored.created_at == stored.last_updated_at == clock.now
    assert manager.get(SCOPE, "key") == stored


def test_put_keeps_explicit_created_at(manager: CacheManager, clock: FakeClock) -> None:
    created = START - timedelta(days=3)
    stored = manager.put(SCOPE, "key", new_entry(created_at=created)).stored
    assert stored.created_at == created
    assert stored.last_updated_at == clock.now
    assert manager.get(SCOPE, "key") == stored


def test_put_refuses_existing_entry(manager: CacheManager, clock: FakeClock) -> None:
    first = manager.put(SCOPE, "key", new_entry()).stored
    clock.advance(timedelta(days=365))
    with pytest.raises(AlreadyExistsError):
        manager.put(SCOPE, "key", new_entry(uri="s3://other"))
    assert manager.get(SCOPE, "key") == first


@pytest.mark.parametrize("age", [timedelta(0), timedelta(minutes=30), timedelta(hours=1)])
def test_put_with_max_age_refuses_fresh_entry(
    manager: CacheManager, clock: FakeClock, age: timedelta
) -> None:
    first = manager.put(SCOPE, "key", new_entry()).stored
    clock.advance(age)
    with pytest.raises(AlreadyExistsError):
        manager.put(SCOPE, "key", new_entry(uri="s3://other"), max_age=timedelta(hours=1))
    assert manager.get(SCOPE, "key") == first


def test_put_with_max_age_replaces_stale_entry(manager: CacheManager, clock: FakeClock) -> None:
    first = manager.put(SCOPE, "key", new_entry()).stored
    clock.advance(timedelta(hours=1) + US)
    result = manager.put(SCOPE, "key", new_entry(uri="s3://other"), max_age=timedelta(hours=1))
    assert result.replaced == first
    assert result.stored.output_uri == "s3://other"
    assert result.stored.created_at == result.stored.last_updated_at == clock.now
    assert manager.get(SCOPE, "key") == result.stored


def test_put_with_max_age_on_absent_key_creates(manager: CacheManager) -> None:
    result = manager.put(SCOPE, "key", new_entry(), max_age=timedelta(hours=1))
    assert result.replaced is None
    assert manager.get(SCOPE, "key") == result.stored


def test_overwrite_keeps_original_created_at(manager: CacheManager, clock: FakeClock) -> None:
    first = manager.put(SCOPE, "key", new_entry()).stored
    clock.advance(timedelta(hours=2))
    result = manager.put(SCOPE, "key", new_entry(uri="s3://other"), overwrite=True)
    assert result.replaced == first
    assert result.stored.created_at == first.created_at
    assert result.stored.last_updated_at == clock.now
    assert result.stored.output_uri == "s3://other"
    assert manager.get(SCOPE, "key") == result.stored


def test_overwrite_uses_explicit_created_at(manager: CacheManager, clock: FakeClock) -> None:
    first = manager.put(SCOPE, "key", new_entry()).stored
    clock.advance(timedelta(hours=2))
    created = START + timedelta(hours=1)
    result = manager.put(SCOPE, "key", new_entry(created_at=created), overwrite=True)
    assert result.replaced == first
    assert result.stored.created_at == created
    assert result.stored.last_updated_at == clock.now
    assert manager.get(SCOPE, "key") == result.stored


def test_overwrite_on_absent_key_creates(manager: CacheManager, clock: FakeClock) -> None:
    result = manager.put(SCOPE, "key", new_entry(), overwrite=True)
    assert result.replaced is None
    assert result.stored.created_at == result.stored.last_updated_at == clock.now
    assert manager.get(SCOPE, "key") == result.stored


def test_get_absent_is_not_found(manager: CacheManager) -> None:
    with pytest.raises(NotFoundError):
        manager.get(SCOPE, "key")


def test_get_with_max_age(manager: CacheManager, clock: FakeClock) -> None:
    stored = manager.put(SCOPE, "key", new_entry()).stored
    clock.advance(timedelta(hours=1))
    assert manager.get(SCOPE, "key", max_age=timedelta(hours=1)) == stored
    clock.advance(US)
    with pytest.raises(NotFoundError):
        manager.get(SCOPE, "key", max_age=timedelta(hours=1))
    assert manager.get(SCOPE, "key") == stored  # stale, but still there


def test_delete(manager: CacheManager) -> None:
    stored = manager.put(SCOPE, "key", new_entry()).stored
    assert manager.delete(SCOPE, "key") == stored
    with pytest.raises(NotFoundError):
        manager.get(SCOPE, "key")
    with pytest.raises(NotFoundError):
        manager.delete(SCOPE, "key")


def _discard(manager: CacheManager, row: EntryRow) -> bool:
    assert row.output_uri is not None
    return manager.discard_dangling(row.scope, row.key, row.output_uri, row.last_updated_at)


def test_discard_dangling_removes_unchanged_row(manager: CacheManager) -> None:
    stored = manager.put(SCOPE, "key", new_entry(literals=None)).stored
    assert _discard(manager, stored) is True
    with pytest.raises(NotFoundError):
        manager.get(SCOPE, "key")


def test_discard_dangling_spares_row_rewritten_meanwhile(
    manager: CacheManager, clock: FakeClock
) -> None:
    seen = manager.put(SCOPE, "key", new_entry(literals=None)).stored
    clock.advance(US)
    # Same outputs, later write: only last_updated_at tells them apart.
    rewritten = manager.put(SCOPE, "key", new_entry(literals=None), overwrite=True).stored
    assert _discard(manager, seen) is False
    assert manager.get(SCOPE, "key") == rewritten


def test_discard_dangling_spares_an_entry_with_other_outputs(manager: CacheManager) -> None:
    seen = manager.put(SCOPE, "key", new_entry(literals=None)).stored
    manager.delete(SCOPE, "key")
    # Re-put at the very same instant, but with other outputs: not the version seen.
    other = manager.put(SCOPE, "key", new_entry(uri="s3://bucket/other.pb", literals=None)).stored
    assert other.last_updated_at == seen.last_updated_at
    assert _discard(manager, seen) is False
    assert manager.get(SCOPE, "key") == other


def test_discard_dangling_validates(manager: CacheManager) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        manager.discard_dangling(SCOPE, "key", "", START)
    assert caught.value.field == "output_uri"
    with pytest.raises(InvalidArgumentError) as caught:
        manager.discard_dangling(SCOPE, "", "s3://b/o.pb", START)
    assert caught.value.field == "key"


# --- reservations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (timedelta(0), MAX_HEARTBEAT),
        (-timedelta(seconds=1), MAX_HEARTBEAT),
        (MAX_HEARTBEAT, MAX_HEARTBEAT),
        (MAX_HEARTBEAT + US, MAX_HEARTBEAT),
        (timedelta(days=1), MAX_HEARTBEAT),
        (MAX_HEARTBEAT - US, MAX_HEARTBEAT - US),
        (timedelta(seconds=2), timedelta(seconds=2)),
        (US, US),
    ],
)
def test_heartbeat_is_clamped(
    manager: CacheManager, clock: FakeClock, requested: timedelta, granted: timedelta
) -> None:
    assert manager.effective_heartbeat(requested) == granted
    row = manager.get_or_extend_reservation(SCOPE, "key", "owner", requested)
    assert row.heartbeat_interval == granted
    assert row.expires_at == clock.now + granted * MULTIPLIER


def test_expiry_uses_grace_multiplier(repo: Repository, clock: FakeClock) -> None:
    manager = CacheManager(
        repo, clock=clock, max_reservation_heartbeat=MAX_HEARTBEAT, heartbeat_grace_multiplier=2.5
    )
    row = manager.get_or_extend_reservation(SCOPE, "key", "owner", timedelta(seconds=4))
    assert row == ReservationRow(
        scope=SCOPE,
        key="key",
        owner_id="owner",
        heartbeat_interval=timedelta(seconds=4),
        expires_at=clock.now + timedelta(seconds=10),
    )


def test_same_owner_extends(manager: CacheManager, clock: FakeClock) -> None:
    first = manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=5))
    clock.advance(timedelta(seconds=7))
    second = manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=2))
    assert second.owner_id == "a"
    assert second.heartbeat_interval == timedelta(seconds=2)
    assert second.expires_at == clock.now + timedelta(seconds=6)
    assert second.expires_at != first.expires_at


def test_other_owner_gets_holders_reservation(manager: CacheManager, clock: FakeClock) -> None:
    held = manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=5))
    clock.advance(timedelta(seconds=15) - US)
    assert manager.get_or_extend_reservation(SCOPE, "key", "b", timedelta(seconds=1)) == held


def test_expired_reservation_is_taken_over(manager: CacheManager, clock: FakeClock) -> None:
    manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=5))
    clock.advance(timedelta(seconds=15))
    taken = manager.get_or_extend_reservation(SCOPE, "key", "b", timedelta(seconds=1))
    assert taken.owner_id == "b"
    assert taken.expires_at == clock.now + timedelta(seconds=3)
    # The former holder now sees the new one.
    assert manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=5)) == taken


def test_release_own_reservation(manager: CacheManager) -> None:
    manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=5))
    manager.release_reservation(SCOPE, "key", "a")
    assert manager.get_or_extend_reservation(SCOPE, "key", "b", US).owner_id == "b"


def test_release_foreign_or_absent_is_noop(manager: CacheManager) -> None:
    manager.release_reservation(SCOPE, "key", "a")  # absent: no error
    held = manager.get_or_extend_reservation(SCOPE, "key", "a", timedelta(seconds=5))
    manager.release_reservation(SCOPE, "key", "b")
    manager.release_reservation(Scope(), "key", "a")
    assert manager.get_or_extend_reservation(SCOPE, "key", "b", US) == held


# --- reservation exclusivity against a model ------------------------------------------------


@dataclass
class _ModelReservation:
    owner: str
    heartbeat: timedelta
    expires_at: datetime


_OWNERS = st.sampled_from(["a", "b", "c"])
_KEYS = st.sampled_from(["k1", "k2"])
_HEARTBEATS = st.sampled_from(
    [
        timedelta(0),
        timedelta(seconds=1),
        timedelta(seconds=4),
        timedelta(seconds=10),
        timedelta(minutes=1),
    ]
)
_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), _OWNERS, _KEYS, _HEARTBEATS),
        st.tuples(st.just("release"), _OWNERS, _KEYS),
        st.tuples(
            st.just("advance"),
            st.integers(min_value=0, max_value=40_000_000).map(
                lambda us: timedelta(microseconds=us)
            ),
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations=_OPERATIONS)
def test_reservations_match_model(operations: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    model: dict[str, _ModelReservation] = {}
    with SqliteRepository(None) as repository:
        manager = CacheManager(
            repository,
            clock=clock,
            max_reservation_heartbeat=MAX_HEARTBEAT,
            heartbeat_grace_multiplier=MULTIPLIER,
        )
        for operation in operations:
            if operation[0] == "advance":
                clock.advance(operation[1])
                continue
            if operation[0] == "release":
                _, owner, key = operation
                manager.release_reservation(SCOPE, key, owner)
                if key in model and model[key].owner == owner:
                    del model[key]
                continue
            _, owner, key, requested = operation
            now = clock.now
            current = model.get(key)
            should_grant = current is None or current.owner == owner or current.expires_at <= now
            if should_grant:
                heartbeat = requested if timedelta(0) < requested < MAX_HEARTBEAT else MAX_HEARTBEAT
                model[key] = _ModelReservation(owner, heartbeat, now + heartbeat * MULTIPLIER)
            expected = model[key]
            got = manager.get_or_extend_reservation(SCOPE, key, owner, requested)
            assert (got.owner_id == owner) == should_grant
            assert (got.owner_id, got.heartbeat_interval, got.expires_at) == (
                expected.owner,
                expected.heartbeat,
                expected.expires_at,
            )
            # At most one unexpired owner: whoever was refused met an unexpired, different holder.
            if not should_grant:
                assert got.owner_id != owner
                assert got.expires_at > now


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_threads_racing_put_one_wins(tmp_path: Path, storage: str) -> None:
    repository = SqliteRepository(None if storage == "memory" else tmp_path / "cache.db")
    manager = CacheManager(repository)
    barrier = threading.Barrier(16)
    outcomes: list[PutResult | BaseException] = []
    lock = threading.Lock()

    def race(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            outcome: PutResult | BaseException = manager.put(
                SCOPE, "key", new_entry(uri=f"s3://thread-{index}")
            )
        except BaseException as error:
            outcome = error
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [o for o in outcomes if isinstance(o, PutResult)]
    losers = [o for o in outcomes if not isinstance(o, PutResult)]
    assert len(outcomes) == 16
    assert len(winners) == 1
    assert all(isinstance(o, AlreadyExistsError) for o in losers), losers
    assert manager.get(SCOPE, "key") == winners[0].stored
    repository.close()


def _put_worker(path: str, index: int, barrier: Any, results: Any) -> None:
    try:
        with SqliteRepository(path) as repository:
            manager = CacheManager(repository)
            barrier.wait(timeout=60)
            try:
                manager.put(SCOPE, "key", new_entry(uri=f"s3://process-{index}"))
            except AlreadyExistsError:
                results.put((index, "exists"))
            else:
                results.put((index, "stored"))
    except BaseException as error:
        results.put((index, repr(error)))


def _reservation_worker(path: str, index: int, calls: int, barrier: Any, results: Any) -> None:
    try:
        holders: list[tuple[str, str, float]] = []
        with SqliteRepository(path) as repository:
            manager = CacheManager(repository, max_reservation_heartbeat=timedelta(hours=1))
            barrier.wait(timeout=60)
            for call in range(calls):
                row = manager.get_or_extend_reservation(
                    SCOPE, "key", f"owner-{index}-{call}", timedelta(hours=1)
                )
                holders.append(
                    (
                        row.owner_id,
                        row.expires_at.isoformat(),
                        row.heartbeat_interval.total_seconds(),
                    )
                )
        results.put((index, holders))
    except BaseException as error:
        results.put((index, repr(error)))


def _run_processes(
    target: Any, args: list[tuple[Any, ...]], barrier: Any, results: Any
) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=(*arg, barrier, results)) for arg in args]
    for process in processes:
        process.start()
    try:
        # Drain the queue before joining: a child blocks on exit until its results are read.
        outcomes = [results.get(timeout=120) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert [process.exitcode for process in processes] == [0] * len(processes)
    return outcomes


def test_processes_racing_put_one_wins(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.db")
    context = multiprocessing.get_context("spawn")
    outcomes = _run_processes(
        _put_worker, [(path, i) for i in range(8)], context.Barrier(8), context.Queue()
    )
    verdicts = sorted(verdict for _, verdict in outcomes)
    assert verdicts == ["exists"] * 7 + ["stored"], outcomes
    winner = next(index for index, verdict in outcomes if verdict == "stored")
    with SqliteRepository(path) as repository:
        assert CacheManager(repository).get(SCOPE, "key").output_uri == f"s3://process-{winner}"


def test_processes_racing_reservations_one_owner(tmp_path: Path) -> None:
    path = str(tmp_path / "cache.db")
    context = multiprocessing.get_context("spawn")
    outcomes = _run_processes(
        _reservation_worker,
        [(path, i, 50) for i in range(8)],
        context.Barrier(8),
        context.Queue(),
    )
    rows = []
    for index, holders in outcomes:
        assert isinstance(holders, list), (index, holders)
        assert len(holders) == 50
        rows.extend(holders)
    assert len(rows) == 400
    # Every caller was a new owner, so the first grant is the only one: every row is the same.
    assert len({owner for owner, _, _ in rows}) == 1
    assert len(set(rows)) == 1
    assert rows[0][2] == timedelta(hours=1).total_seconds()


def test_negative_max_age_is_rejected_with_the_field_named() -> None:
    manager = CacheManager(SqliteRepository(None))
    entry = NewEntry(output_uri=None, output_literals=b"x", source_identifier=b"", key_map={})
    with pytest.raises(InvalidArgumentError) as raised:
        manager.put(Scope(), "k", entry, max_age=timedelta(seconds=-1))
    assert raised.value.field == "max_age"
    with pytest.raises(InvalidArgumentError) as raised:
        manager.get(Scope(), "k", max_age=timedelta(seconds=-1))
    assert raised.value.field == "max_age"


def test_naive_created_at_is_rejected() -> None:
    manager = CacheManager(SqliteRepository(None))
    entry = NewEntry(
        output_uri=None,
        output_literals=b"x",
        source_identifier=b"",
        key_map={},
        created_at=datetime(2026, 1, 1),
    )
    with pytest.raises(InvalidArgumentError) as raised:
        manager.put(Scope(), "k", entry)
    assert raised.value.field == "created_at"


@pytest.mark.parametrize("multiplier", [float("nan"), float("inf"), 0.0, -1.0])
def test_grace_multiplier_must_be_positive_and_finite(multiplier: float) -> None:
    with pytest.raises(InvalidArgumentError):
        CacheManager(SqliteRepository(None), heartbeat_grace_multiplier=multiplier)
