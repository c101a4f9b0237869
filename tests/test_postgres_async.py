"""The asyncpg machinery of ``AsyncPostgresRepository``: the ``$n`` statements, the error
mapping of each asyncpg error class, and its own pool (timeout, figures, sessions ended or
cancelled mid-statement). Its calls' results are in ``test_repository_contract.py``; the
restart and reconnect behaviour it shares with the synchronous one in
``test_postgres_repository.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ci_policy import in_ci

if not in_ci():
    pytest.importorskip("asyncpg", reason="NO POSTGRESQL: asyncpg is not installed")
    pytest.importorskip("psycopg", reason="NO POSTGRESQL: psycopg is not installed")

import asyncpg
import psycopg

from locked_postgres import HANG_GUARD, entries_locked
from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
from taskcache.repositories import postgres_sql as sql
from taskcache.repositories.base import PoolStats
from taskcache.repositories.postgres_async import AsyncPostgresRepository, translate_error
from test_repository_contract import SCOPE, entry

# --- statements ------------------------------------------------------------------------------


def test_numbered_numbers_the_placeholders_in_order() -> None:
    assert sql.numbered("a = %s AND b = %s OR c = %s") == "a = $1 AND b = $2 OR c = $3"
    assert sql.numbered("SELECT 1") == "SELECT 1"
    assert sql.numbered("%s::text[]") == "$1::text[]"


@pytest.mark.parametrize("query", ["a = %%s", "a = %(name)s", "a = %b", "100% = %s", "a = $1"])
def test_numbered_refuses_any_other_placeholder_form(query: str) -> None:
    with pytest.raises(ValueError, match="only plain %s placeholders"):
        sql.numbered(query)


def test_each_numbered_statement_keeps_its_text_and_parameter_count() -> None:
    for query, numbered in sql.NUMBERED.items():
        count = query.count("%s")
        assert "%" not in numbered
        assert [f"${n}" in numbered for n in range(1, count + 2)] == [True] * count + [False]
        restored = numbered
        for n in range(count, 0, -1):
            restored = restored.replace(f"${n}", "%s")
        assert restored == query


# --- errors ----------------------------------------------------------------------------------

exc = asyncpg.exceptions


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (exc.ConnectionDoesNotExistError("connection was closed"), UnavailableError),
        (exc.ConnectionFailureError("failure"), UnavailableError),
        (exc.AdminShutdownError("terminating connection"), UnavailableError),
        (exc.CannotConnectNowError("starting up"), UnavailableError),
        (exc.QueryCanceledError("canceling statement"), UnavailableError),
        (exc.SerializationError("could not serialize"), UnavailableError),
        (exc.DeadlockDetectedError("deadlock"), UnavailableError),
        (exc.TooManyConnectionsError("too many"), UnavailableError),
        (exc.LockNotAvailableError("lock"), UnavailableError),
        (exc.InvalidPasswordError("password"), UnavailableError),
        (ConnectionRefusedError("refused"), UnavailableError),
        (ConnectionResetError("reset"), UnavailableError),
        (TimeoutError("connect timed out"), UnavailableError),
        (exc.CharacterNotInRepertoireError("invalid byte sequence"), InvalidArgumentError),
        (exc.UntranslatableCharacterError("untranslatable"), InvalidArgumentError),
        (exc.NumericValueOutOfRangeError("out of range"), InvalidArgumentError),
        (asyncpg.DataError("invalid input for query argument $1"), InvalidArgumentError),
        (exc.UniqueViolationError("duplicate key"), InternalError),
        (exc.UndefinedTableError("no such table"), InternalError),
        (exc.PostgresSyntaxError("syntax"), InternalError),
        (asyncpg.PostgresError("no sqlstate"), InternalError),
        (asyncpg.InterfaceError("another operation is in progress"), InternalError),
        (exc.ProtocolError("protocol"), InternalError),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else "",
)
def test_each_asyncpg_error_class_maps_to_a_taskcache_error(
    error: BaseException, expected: type[Exception]
) -> None:
    translated = translate_error(error)
    assert type(translated) is expected
    assert str(error) in str(translated)


@pytest.mark.parametrize("error", [ValueError("ours"), asyncio.CancelledError(), KeyError("k")])
def test_other_errors_are_not_translated(error: BaseException) -> None:
    assert translate_error(error) is None


# --- the pool --------------------------------------------------------------------------------


def run(
    url: str, scenario: Callable[[AsyncPostgresRepository], Awaitable[Any]], **options: Any
) -> Any:
    """Open a repository on ``url`` with ``options``, run ``scenario`` on it, close it."""

    async def main() -> Any:
        repository = await AsyncPostgresRepository.open(url, **options)
        try:
            return await scenario(repository)
        finally:
            await repository.close()

    return asyncio.run(main())


@asynccontextmanager
async def held(repository: AsyncPostgresRepository) -> AsyncIterator[None]:
    """Hold one of ``repository``'s sessions for the block."""
    async with repository._connection():
        yield


BLOCKED = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def blocked_sessions(url: str) -> int:
    """Return how many of the database's sessions wait for a lock."""
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(BLOCKED)
    finally:
        await conn.close()
    return count


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Return once ``condition`` holds (fail after HANG_GUARD)."""
    deadline = time.monotonic() + HANG_GUARD
    while not await condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


def test_sessions_run_in_utc_with_the_statement_timeout(clean_postgres: str) -> None:
    async def scenario(repository: AsyncPostgresRepository) -> Any:
        async with repository._connection() as conn:
            return await conn.fetchrow(
                "SELECT current_setting('TimeZone'), current_setting('statement_timeout')"
            )

    found = run(clean_postgres, scenario, statement_timeout=1.5)
    assert tuple(found) == ("UTC", "1500ms")


def test_a_call_waits_for_a_session_then_gets_the_one_given_back(clean_postgres: str) -> None:
    async def scenario(repository: AsyncPostgresRepository) -> list[PoolStats | None]:
        figures = [repository.pool_stats()]
        async with held(repository):
            waiting = asyncio.create_task(repository.get_entry(SCOPE, "key"))
            await asyncio.sleep(0.05)
            figures.append(repository.pool_stats())
        assert await waiting is None
        figures.append(repository.pool_stats())
        return figures

    figures = run(clean_postgres, scenario, min_size=1, max_size=1)
    assert figures == [
        PoolStats(size=1, available=1, waiting=0),
        PoolStats(size=1, available=0, waiting=1),
        PoolStats(size=1, available=1, waiting=0),
    ]


def test_no_session_within_the_pool_timeout_is_unavailable(clean_postgres: str) -> None:
    async def scenario(repository: AsyncPostgresRepository) -> PoolStats | None:
        async with held(repository):
            started = time.monotonic()
            with pytest.raises(UnavailableError, match="no postgres connection available"):
                await repository.get_entry(SCOPE, "key")
            assert 0.2 <= time.monotonic() - started < HANG_GUARD
        assert await repository.get_entry(SCOPE, "key") is None
        return repository.pool_stats()

    stats = run(clean_postgres, scenario, min_size=0, max_size=1, pool_timeout=0.2)
    assert stats == PoolStats(size=1, available=1, waiting=0)


def test_sessions_open_on_demand_up_to_max_size(clean_postgres: str) -> None:
    async def scenario(repository: AsyncPostgresRepository) -> list[PoolStats | None]:
        figures = [repository.pool_stats()]
        async with held(repository), held(repository):
            figures.append(repository.pool_stats())
        figures.append(repository.pool_stats())
        return figures

    assert run(clean_postgres, scenario, min_size=0, max_size=2) == [
        PoolStats(size=0, available=0, waiting=0),
        PoolStats(size=2, available=0, waiting=0),
        PoolStats(size=2, available=2, waiting=0),
    ]


def test_a_closed_repository_is_unavailable(clean_postgres: str) -> None:
    async def scenario() -> None:
        repository = await AsyncPostgresRepository.open(clean_postgres)
        await repository.close()
        await repository.close()
        with pytest.raises(UnavailableError, match="closed"):
            await repository.ping()

    asyncio.run(scenario())


def test_an_unreachable_server_is_unavailable_when_a_session_opens() -> None:
    async def scenario() -> None:
        repository = AsyncPostgresRepository(
            "postgresql://postgres@127.0.0.1:9/postgres", min_size=0, connect_timeout=1
        )
        with pytest.raises(UnavailableError, match="unavailable") as caught:
            await repository.ping()
        assert isinstance(caught.value.__cause__, OSError)
        await repository.close()

    asyncio.run(scenario())


def test_a_session_ended_mid_statement_fails_the_call_and_is_not_rerun(
    clean_postgres: str,
) -> None:
    """The statement may have run: the call is unavailable, never silently retried (a retry
    would still wait for the lock); the next call gets a new session.
    """

    async def scenario(repository: AsyncPostgresRepository) -> None:
        with entries_locked(clean_postgres) as lock:
            writing = asyncio.create_task(repository.create_entry(entry(), None))

            async def waits() -> bool:
                return await blocked_sessions(clean_postgres) == 1

            await until(waits)
            with psycopg.connect(clean_postgres, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            with pytest.raises(UnavailableError) as caught:
                await asyncio.wait_for(writing, HANG_GUARD)
            assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
            lock.commit()
        assert await repository.get_entry(SCOPE, "key") is None
        assert (await repository.create_entry(entry(), None)).written

    run(clean_postgres, scenario, min_size=1, max_size=1)


def test_a_cancelled_call_returns_once_its_statement_ended_and_keeps_its_session(
    clean_postgres: str,
) -> None:
    async def scenario(repository: AsyncPostgresRepository) -> PoolStats | None:
        with entries_locked(clean_postgres):
            reading = asyncio.create_task(repository.get_entry(SCOPE, "key"))

            async def waits() -> bool:
                return await blocked_sessions(clean_postgres) == 1

            await until(waits)
            reading.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading
            # Ended in the server (the lock still held) before the cancelled call returned:
            # counted at once, blocking the loop (no background cancel may run meanwhile).
            with psycopg.connect(clean_postgres, autocommit=True) as admin:
                found = admin.execute(BLOCKED).fetchone()
            assert found == (0,)
        assert await repository.get_entry(SCOPE, "key") is None
        return repository.pool_stats()

    stats = run(clean_postgres, scenario, min_size=1, max_size=1)
    assert stats == PoolStats(size=1, available=1, waiting=0)


def test_a_cancelled_waiter_neither_takes_nor_loses_a_session(clean_postgres: str) -> None:
    async def scenario(repository: AsyncPostgresRepository) -> PoolStats | None:
        async with held(repository):
            first = asyncio.create_task(repository.get_entry(SCOPE, "key"))
            second = asyncio.create_task(repository.get_entry(SCOPE, "key"))
            await asyncio.sleep(0.05)
            first.cancel()
            # Given back (on leaving the block) before the cancelled waiter has run again.
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, HANG_GUARD) is None
        return repository.pool_stats()

    stats = run(clean_postgres, scenario, min_size=1, max_size=1)
    assert stats == PoolStats(size=1, available=1, waiting=0)
