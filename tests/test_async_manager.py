"""AsyncCacheManager on both asynchronous repositories the server uses.

The rules themselves are shared with CacheManager (``test_manager.py`` checks them in depth);
these tests check that the async manager applies each of them, through real awaited calls on
SQLite behind :class:`ThreadedRepository` (runs everywhere) and on ``AsyncPostgresRepository``.
Each test runs its coroutines on a private event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from taskcache.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from taskcache.manager import AsyncCacheManager
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.repositories.threaded import ThreadedRepository
from test_manager import MAX_HEARTBEAT, MULTIPLIER, SCOPE, START, US, FakeClock, new_entry

_T = TypeVar("_T")


@dataclass
class Harness:
    manager: AsyncCacheManager
    clock: FakeClock
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(coroutine)


def _open(backend: str, request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop) -> Any:
    if backend == "sqlite":
        executor = ThreadPoolExecutor(max_workers=2)
        request.addfinalizer(executor.shutdown)
        return ThreadedRepository(SqliteRepository(None), executor)
    from taskcache.repositories.postgres_async import AsyncPostgresRepository

    url = request.getfixturevalue("clean_postgres")
    return loop.run_until_complete(AsyncPostgresRepository.open(url, min_size=1, max_size=4))


@pytest.fixture(params=["sqlite", "postgres"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    repository = _open(request.param, request, loop)
    clock = FakeClock()
    manager = AsyncCacheManager(
        repository,
        clock=clock,
        max_reservation_heartbeat=MAX_HEARTBEAT,
        heartbeat_grace_multiplier=MULTIPLIER,
    )
    try:
        yield Harness(manager, clock, loop)
    finally:
        # As the server does: the buffered access records before the repository closes.
        loop.run_until_complete(manager.flush_accesses())
        loop.run_until_complete(repository.close())
        loop.close()


def test_constructor_validates_options(harness: Harness) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        AsyncCacheManager(harness.manager.repository, max_reservation_heartbeat=timedelta(0))
    assert caught.value.field == "max_reservation_heartbeat"
    with pytest.raises(InvalidArgumentError) as caught:
        AsyncCacheManager(harness.manager.repository, heartbeat_grace_multiplier=0.0)
    assert caught.value.field == "heartbeat_grace_multiplier"


def test_validation_errors(harness: Harness) -> None:
    manager, run = harness.manager, harness.run
    for call in (
        manager.get(SCOPE, ""),
        manager.get(SCOPE, "k" * 1025),
        manager.get(SCOPE, "key", timedelta(seconds=-1)),
        manager.put(SCOPE, "", new_entry()),
        manager.put(SCOPE, "key", new_entry(uri=None, literals=None)),
        manager.put(SCOPE, "key", new_entry(created_at=START.replace(tzinfo=None))),
        manager.delete(SCOPE, ""),
        manager.get_or_extend_reservation(SCOPE, "key", "", timedelta(seconds=1)),
        manager.release_reservation(SCOPE, "key", ""),
    ):
        with pytest.raises(InvalidArgumentError):
            run(call)


def test_put_is_create_only(harness: Harness) -> None:
    manager, clock, run = harness.manager, harness.clock, harness.run
    result = run(manager.put(SCOPE, "key", new_entry()))
    assert result.replaced is None
    assert result.stored.created_at == result.stored.last_updated_at == clock.now
    assert run(manager.get(SCOPE, "key")) == result.stored
    clock.advance(timedelta(days=365))
    with pytest.raises(AlreadyExistsError):
        run(manager.put(SCOPE, "key", new_entry(uri="s3://other")))
    assert run(manager.get(SCOPE, "key")) == result.stored


def test_put_with_max_age_replaces_only_a_stale_entry(harness: Harness) -> None:
    manager, clock, run = harness.manager, harness.clock, harness.run
    first = run(manager.put(SCOPE, "key", new_entry())).stored
    clock.advance(timedelta(hours=1))
    with pytest.raises(AlreadyExistsError):
        run(manager.put(SCOPE, "key", new_entry(), max_age=timedelta(hours=1)))
    clock.advance(US)
    result = run(manager.put(SCOPE, "key", new_entry(uri="s3://new"), max_age=timedelta(hours=1)))
    assert result.replaced == first
    assert result.stored.created_at == result.stored.last_updated_at == clock.now


def test_overwrite_keeps_created_at_unless_given(harness: Harness) -> None:
    manager, clock, run = harness.manager, harness.clock, harness.run
    first = run(manager.put(SCOPE, "key", new_entry())).stored
    clock.advance(timedelta(hours=2))
    result = run(manager.put(SCOPE, "key", new_entry(uri="s3://new"), overwrite=True))
    assert result.replaced == first
    assert result.stored.created_at == first.created_at
    assert result.stored.last_updated_at == clock.now
    assert run(manager.get(SCOPE, "key")) == result.stored
    explicit = START - timedelta(days=1)
    result = run(manager.put(SCOPE, "key", new_entry(created_at=explicit), overwrite=True))
    assert result.stored.created_at == explicit
    assert run(manager.get(SCOPE, "key")).created_at == explicit


def test_get_with_max_age_misses_an_old_entry(harness: Harness) -> None:
    manager, clock, run = harness.manager, harness.clock, harness.run
    with pytest.raises(NotFoundError):
        run(manager.get(SCOPE, "key"))
    run(manager.put(SCOPE, "key", new_entry()))
    clock.advance(timedelta(hours=1))
    assert run(manager.get(SCOPE, "key", timedelta(hours=1))).key == "key"
    clock.advance(US)
    with pytest.raises(NotFoundError):
        run(manager.get(SCOPE, "key", timedelta(hours=1)))


def test_delete_and_discard_dangling(harness: Harness) -> None:
    manager, run = harness.manager, harness.run
    stored = run(manager.put(SCOPE, "key", new_entry())).stored
    assert run(manager.delete(SCOPE, "key")) == stored
    with pytest.raises(NotFoundError):
        run(manager.delete(SCOPE, "key"))
    stored = run(manager.put(SCOPE, "key", new_entry(literals=None))).stored
    assert stored.output_uri is not None
    discard = manager.discard_dangling(SCOPE, "key", stored.output_uri, stored.last_updated_at)
    assert run(discard)
    with pytest.raises(NotFoundError):
        run(manager.get(SCOPE, "key"))
    stored = run(manager.put(SCOPE, "key", new_entry(literals=None))).stored
    harness.clock.advance(US)
    rewritten = run(manager.put(SCOPE, "key", new_entry(literals=None), overwrite=True)).stored
    assert stored.output_uri is not None
    stale = manager.discard_dangling(SCOPE, "key", stored.output_uri, stored.last_updated_at)
    assert not run(stale)
    assert run(manager.get(SCOPE, "key")) == rewritten


def test_reservations(harness: Harness) -> None:
    manager, clock, run = harness.manager, harness.clock, harness.run
    heartbeat = timedelta(seconds=2)
    granted = run(manager.get_or_extend_reservation(SCOPE, "key", "a", heartbeat))
    assert granted.owner_id == "a"
    assert granted.expires_at == clock.now + heartbeat * MULTIPLIER
    # Contended: the holder's reservation comes back unchanged.
    clock.advance(timedelta(seconds=1))
    assert run(manager.get_or_extend_reservation(SCOPE, "key", "b", heartbeat)) == granted
    # The holder extends.
    extended = run(manager.get_or_extend_reservation(SCOPE, "key", "a", heartbeat))
    assert extended.expires_at == clock.now + heartbeat * MULTIPLIER
    # At expiry another owner takes over.
    clock.now = extended.expires_at
    taken = run(manager.get_or_extend_reservation(SCOPE, "key", "b", heartbeat))
    assert taken.owner_id == "b"
    assert taken.taken_over_from == "a"
    # Release: a foreign owner's is a no-op, the holder's frees the key.
    run(manager.release_reservation(SCOPE, "key", "a"))
    assert run(manager.get_or_extend_reservation(SCOPE, "key", "c", heartbeat)).owner_id == "b"
    run(manager.release_reservation(SCOPE, "key", "b"))
    assert run(manager.get_or_extend_reservation(SCOPE, "key", "c", heartbeat)).owner_id == "c"


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        (timedelta(seconds=3), timedelta(seconds=3)),
        (timedelta(0), MAX_HEARTBEAT),
        (-timedelta(seconds=1), MAX_HEARTBEAT),
        (MAX_HEARTBEAT + US, MAX_HEARTBEAT),
    ],
)
def test_heartbeat_is_clamped(harness: Harness, requested: timedelta, granted: timedelta) -> None:
    row = harness.run(harness.manager.get_or_extend_reservation(SCOPE, "key", "a", requested))
    assert row.heartbeat_interval == granted
    assert row.expires_at == harness.clock.now + granted * MULTIPLIER
