"""An :class:`~taskcache.repositories.base.AsyncRepository` on PostgreSQL (psycopg 3's
async API): what the server awaits directly on its event loop.

It implements the hot path only; the operator queries
(:class:`~taskcache.repositories.base.OperatorRepository`) run on the synchronous
:class:`~taskcache.repositories.postgres.PostgresRepository`, which ``taskcache ls``, ``gc``
and the other operator commands open.

The statements, their parameters, the row decoding and the error mapping are
:mod:`taskcache.repositories.postgres_sql`'s, shared with the synchronous
:class:`~taskcache.repositories.postgres.PostgresRepository`; so are the calls of several
statements (:mod:`taskcache.repositories.postgres_steps`: the write's and the reservation's
retry loops, run here by ``run_async``) and the reconnect behaviour (a connection is
checked before each use; a broken one is discarded and the next tried at once), except that
here the check costs a round trip only when the connection's socket says it may be needed.
Only the execution differs: ``psycopg.AsyncConnection`` from a
``psycopg_pool.AsyncConnectionPool``. The schema is prepared by the synchronous module's
migration code, run once in a worker thread by :meth:`AsyncPostgresRepository.open`.

It must not carry operator queries: the synchronous repository serves those.
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Unpack

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from taskcache.errors import UnavailableError
from taskcache.repositories import postgres_sql as sql
from taskcache.repositories import postgres_steps
from taskcache.repositories.base import (
    CreateOutcome,
    EntryRow,
    PoolStats,
    Replaceable,
    ReservationRow,
    Scope,
)
from taskcache.repositories.postgres import _prepare_schema

__all__ = ["AsyncPostgresRepository"]

AsyncConnection = psycopg.AsyncConnection[TupleRow]


def _quiet(conn: AsyncConnection) -> bool:
    """Return True if ``conn`` is idle and the server has sent nothing since its last answer.

    A server that ends a session (restart, ``pg_terminate_backend``) sends a FATAL notice and
    closes the socket, both of which make it readable; an idle session otherwise receives
    nothing. So a quiet connection needs no test query (a round trip, the ``check_connection``
    of every call before); any other one is tested.
    """
    if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    return not poller.poll(0)


class AsyncPostgresRepository:
    """Entries and reservations in the PostgreSQL database at ``url``, as coroutines.

    Build it with ``await AsyncPostgresRepository.open(url, ...)`` (the pool opens on the
    running event loop). Options and errors are those of
    :class:`~taskcache.repositories.postgres.PostgresRepository`.
    """

    def __init__(self, url: str, **options: Unpack[sql.PoolOptions]) -> None:
        """Validate the options and build the (not yet open) pool; see :meth:`open`."""
        settings = sql.PoolSettings.of(options)
        self._connect_timeout = settings.connect_timeout
        self._url = url
        self._pool_timeout = settings.pool_timeout
        self._closed = False

        async def configure(conn: AsyncConnection) -> None:
            await conn.execute(sql.CONFIGURE_SESSION, (settings.statement_timeout,))

        self._pool: AsyncConnectionPool[AsyncConnection] = AsyncConnectionPool(
            url, configure=configure, **settings.pool_arguments("taskcache-async")
        )

    @classmethod
    async def open(
        cls, url: str, *, migrate: bool = True, **options: Unpack[sql.PoolOptions]
    ) -> AsyncPostgresRepository:
        """Prepare the schema (migrate, or check it is current) and open the pool.

        Raises UnavailableError if the database cannot be reached, InternalError if its
        schema is newer than this code (or, without ``migrate``, older).
        """
        repository = cls(url, **options)
        # The synchronous migration code, on a direct connection in a worker thread: an
        # unreachable database fails fast, before any pool task starts.
        await asyncio.to_thread(_prepare_schema, url, repository._connect_timeout, migrate=migrate)
        with sql.translate_errors():
            await repository._pool.open(wait=False)
        return repository

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """Yield a pooled autocommit connection that just answered, with errors translated.

        As in the synchronous repository: a connection broken by a server restart fails the
        check, is closed and returned (the pool replaces it), and the next one is tried at
        once, until a good one comes or ``pool_timeout`` passes. Only a connection that is
        not :func:`_quiet` is checked with a test query; a quiet one is used at once.
        """
        if self._closed:
            raise UnavailableError("the postgres repository is closed")
        with sql.translate_errors():
            deadline = time.monotonic() + self._pool_timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolTimeout(f"no working connection after {self._pool_timeout:.2f} sec")
                conn = await self._pool.getconn(timeout=remaining)
                if _quiet(conn):
                    break
                try:
                    await AsyncConnectionPool.check_connection(conn)
                except psycopg.Error:
                    await conn.close()
                    await self._pool.putconn(conn)
                    continue
                except BaseException:
                    await self._pool.putconn(conn)
                    raise
                break
            try:
                yield conn
            finally:
                await self._pool.putconn(conn)

    async def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.get_entry`."""
        async with self._connection() as conn:
            cursor = await conn.execute(sql.SELECT_ENTRY, sql.scope_key(scope, key))
            found = await cursor.fetchone()
        return None if found is None else sql.entry_from_row(scope, key, found)

    async def create_entry(
        self, row: EntryRow, replace: Replaceable | None = None
    ) -> CreateOutcome:
        """See :meth:`Repository.create_entry`."""
        writing = postgres_steps.create_entry(row, replace)
        async with self._connection() as conn:
            return await postgres_steps.run_async(writing, conn)

    async def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """See :meth:`Repository.overwrite_entry`."""
        writing = postgres_steps.overwrite_entry(row, keep_created_at)
        async with self._connection() as conn:
            outcome = await postgres_steps.run_async(writing, conn)
        return outcome.replaced

    async def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.delete_entry`."""
        async with self._connection() as conn:
            cursor = await conn.execute(sql.DELETE_ENTRY, sql.scope_key(scope, key))
            found = await cursor.fetchone()
        return None if found is None else sql.entry_from_row(scope, key, found)

    async def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """See :meth:`Repository.delete_entry_if_unchanged`."""
        params = sql.delete_if_unchanged_params(row)
        async with self._connection() as conn:
            cursor = await conn.execute(sql.DELETE_ENTRY_IF_UNCHANGED, params)
            return cursor.rowcount > 0

    async def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """See :meth:`Repository.record_accesses`."""
        params = sql.record_accesses_params(entries, at, if_before)
        if params is None:
            return 0
        async with self._connection() as conn:
            cursor = await conn.execute(sql.RECORD_ACCESSES, params)
            return cursor.rowcount

    async def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """See :meth:`Repository.output_uri_referenced`."""
        async with self._connection() as conn:
            cursor = await conn.execute(sql.OUTPUT_URI_REFERENCED, (list(uris),))
            found = await cursor.fetchone()
        return found is not None and bool(found[0])

    async def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """See :meth:`Repository.acquire_reservation` (and the synchronous repository's)."""
        acquiring = postgres_steps.acquire_reservation(row, now)
        async with self._connection() as conn:
            return await postgres_steps.run_async(acquiring, conn)

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """See :meth:`Repository.release_reservation`."""
        params = sql.release_params(scope, key, owner_id)
        async with self._connection() as conn:
            cursor = await conn.execute(sql.RELEASE_RESERVATION, params)
            return cursor.rowcount > 0

    def pool_stats(self) -> PoolStats | None:
        """Return the pool's open, idle and waiting figures (no I/O)."""
        return sql.pool_stats_from(self._pool.get_stats())

    async def ping(self) -> None:
        """Run ``SELECT 1``; raise UnavailableError if the store does not answer (or is closed)."""
        async with self._connection() as conn:
            await (await conn.execute(sql.PING)).fetchone()

    async def close(self) -> None:
        """Close the connection pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresRepository:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
