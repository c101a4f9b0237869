"""The PostgreSQL repositories' multi-statement calls (``postgres_steps``), driven on a fake
connection: the statement and transaction sequence, and the give-up and rollback paths that a
real database cannot be made to hit on demand. The calls against PostgreSQL itself are in
``test_postgres_repository.py`` and ``test_repository_contract.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any

import pytest

from ci_policy import in_ci

if not in_ci():
    pytest.importorskip("psycopg", reason="NO POSTGRESQL: psycopg is not installed")

from taskcache.errors import InvalidArgumentError, UnavailableError
from taskcache.repositories import postgres_sql as sql
from taskcache.repositories import postgres_steps
from taskcache.repositories.base import Replaceable
from test_repository_contract import T0, entry, reservation

NAMES = {
    sql.INSERT_ENTRY: "insert",
    sql.SELECT_ENTRY_FOR_UPDATE: "lock",
    sql.UPDATE_ENTRY: "update",
    sql.ACQUIRE_RESERVATION: "acquire",
    sql.SELECT_RESERVATION: "holder",
}

Answer = Callable[[str], tuple[Any, ...] | None]


class FakeCursor:
    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self.row = row

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.row


class FakeConnection:
    """Answers each statement (by name) with ``answer``'s row and logs the statements and
    the transaction boundaries; :meth:`run` drives steps on it with ``postgres_steps.run``.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.log: list[str] = []

    def execute(self, query: str, params: tuple[Any, ...]) -> FakeCursor:
        name = NAMES[query]
        self.log.append(name)
        return FakeCursor(self.answer(name))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.log.append("begin")
        try:
            yield
        except BaseException:
            self.log.append("rollback")
            raise
        self.log.append("commit")

    def run(self, steps: postgres_steps.Steps[Any]) -> Any:
        return postgres_steps.run(steps, self)  # type: ignore[arg-type]


class FakeAsyncConnection:
    """:class:`FakeConnection` with asyncpg's interface (``$n`` statements, positional
    parameters, ``fetchrow``); :meth:`run` uses ``postgres_steps.run_async``.
    """

    def __init__(self, answer: Answer) -> None:
        self.sync = FakeConnection(answer)
        self.log = self.sync.log
        self.percent_form = {numbered: query for query, numbered in sql.NUMBERED.items()}

    async def fetchrow(self, query: str, *params: Any) -> tuple[Any, ...] | None:
        return self.sync.execute(self.percent_form[query], params).row

    async def execute(self, query: str, *params: Any) -> str:
        self.sync.execute(self.percent_form[query], params)
        return "UPDATE 1"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        with self.sync.transaction():
            yield

    def run(self, steps: postgres_steps.Steps[Any]) -> Any:
        return asyncio.run(postgres_steps.run_async(steps, self))  # type: ignore[arg-type]


CONNECTIONS = [
    pytest.param(FakeConnection, id="sync"),
    pytest.param(FakeAsyncConnection, id="async"),
]
Connection = type[FakeConnection] | type[FakeAsyncConnection]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_an_insert_that_wins_is_the_whole_write(connection: Connection) -> None:
    conn = connection(lambda name: (True,))
    outcome = conn.run(postgres_steps.create_entry(entry(), None))
    assert (outcome.written, outcome.replaced) == (True, None)
    assert conn.log == ["insert"]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_an_overwrite_that_conflicts_locks_and_updates_the_row_in_one_transaction(
    connection: Connection,
) -> None:
    existing = entry(output_uri="s3://old")
    stored = (*sql.entry_values(existing)[:3], json.dumps(existing.key_map))
    locked_row = (*stored, *sql.entry_values(existing)[4:])
    conn = connection(lambda name: locked_row if name == "lock" else None)
    outcome = conn.run(postgres_steps.overwrite_entry(entry(), keep_created_at=False))
    assert (outcome.written, outcome.replaced) == (True, existing)
    assert conn.log == ["insert", "begin", "lock", "update", "commit"]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_a_write_whose_row_keeps_vanishing_gives_up_after_max_attempts(
    connection: Connection,
) -> None:
    conn = connection(lambda name: None)
    with pytest.raises(UnavailableError, match=f"gave up after {sql.MAX_ATTEMPTS} attempts"):
        conn.run(postgres_steps.overwrite_entry(entry(), keep_created_at=False))
    # Each attempt: the insert conflicts, the locking read finds nothing, its transaction ends.
    assert conn.log == ["insert", "begin", "lock", "commit"] * sql.MAX_ATTEMPTS


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_a_failing_statement_rolls_back_its_transaction_and_propagates(
    connection: Connection,
) -> None:
    def answer(name: str) -> tuple[Any, ...] | None:
        if name == "lock":
            raise RuntimeError("lock failed")
        return None

    conn = connection(answer)
    with pytest.raises(RuntimeError, match="lock failed"):
        conn.run(postgres_steps.create_entry(entry(), None))
    assert conn.log == ["insert", "begin", "lock", "rollback"]


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_a_reservation_whose_holder_keeps_releasing_gives_up_after_max_attempts(
    connection: Connection,
) -> None:
    conn = connection(lambda name: None)
    with pytest.raises(UnavailableError, match=f"gave up after {sql.MAX_ATTEMPTS} attempts"):
        conn.run(postgres_steps.acquire_reservation(reservation("a", T0), T0))
    assert conn.log == ["acquire", "holder"] * sql.MAX_ATTEMPTS


def test_bad_values_fail_when_the_steps_are_made_before_any_connection_is_used() -> None:
    naive = datetime(2024, 5, 17, 12, 30)  # no tzinfo: the bad value
    with pytest.raises(InvalidArgumentError):
        postgres_steps.create_entry(entry(), Replaceable(updated_before=naive))
    with pytest.raises(InvalidArgumentError):
        postgres_steps.overwrite_entry(entry(last_updated_at=naive), keep_created_at=True)
    with pytest.raises(InvalidArgumentError):
        postgres_steps.acquire_reservation(reservation("a", naive), T0)
