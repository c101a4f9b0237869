"""An :class:`~taskcache.repositories.base.AsyncRepository` on PostgreSQL through asyncpg:
what the server awaits directly on its event loop.

It implements the hot path only; the operator queries
(:class:`~taskcache.repositories.base.OperatorRepository`) run on the synchronous
:class:`~taskcache.repositories.postgres.PostgresRepository` (psycopg), which ``taskcache
ls``, ``gc`` and the other operator commands open.

Why asyncpg and not psycopg's async API: the server is CPU-bound on the repository, and
measured with callgrind one ``SELECT_ENTRY`` costs psycopg about 2.5 times the instructions
of asyncpg's ``fetchrow`` (asyncpg parses the protocol in C and keeps each statement
prepared). Why not ``asyncpg.Pool``: its acquire and release cost more than the statement
itself (a proxy object, ``wait_for`` and ``shield`` tasks, a reset query per release), so
:class:`_Pool` is a minimal free list: a checkout that finds an idle connection neither
awaits nor allocates more than a small context object.

The statements, their parameters, the row decoding are
:mod:`taskcache.repositories.postgres_sql`'s, shared with the synchronous repository (each
statement run in its ``$n`` form, :data:`~taskcache.repositories.postgres_sql.NUMBERED`);
so are the calls of several statements (:mod:`taskcache.repositories.postgres_steps`, run
here by ``run_async``). The parameters psycopg adapts differently: ``key_map`` (psycopg's
``Jsonb``) goes through a per-connection ``jsonb`` codec; times are aware datetimes and
arrays are lists for both drivers. asyncpg's errors are translated by
:func:`translate_error`, as psycopg's are by ``postgres_sql.translate_errors``. The schema is
prepared by the synchronous module's migration code, run once in a worker thread by
:meth:`AsyncPostgresRepository.open`.

Sessions: ``TimeZone`` UTC and the ``statement_timeout`` option are startup parameters (no
round trip; the server enforces the timeout, as with psycopg). A session the server ended
while idle (restart, ``pg_terminate_backend``) is noticed before use without a round trip
(:meth:`_Session.quiet`) and replaced; a statement that fails because its session ended is
never re-run (it may have executed): the call raises UnavailableError. A call cancelled
mid-statement returns only once the server has ended the statement
(:func:`_cancelled_in_server`), as with psycopg; its session stays pooled.

It must not carry operator queries: the synchronous repository serves those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final, TypeAlias, Unpack

import asyncpg
from psycopg.types.json import Jsonb

from taskcache.errors import InternalError, InvalidArgumentError, UnavailableError
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

__all__ = ["AsyncPostgresRepository", "translate_error"]

# asyncpg's classes are generic in its stubs only.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

_SELECT_ENTRY: Final = sql.NUMBERED[sql.SELECT_ENTRY]
_DELETE_ENTRY: Final = sql.NUMBERED[sql.DELETE_ENTRY]
_DELETE_ENTRY_IF_UNCHANGED: Final = sql.NUMBERED[sql.DELETE_ENTRY_IF_UNCHANGED]
_RECORD_ACCESSES: Final = sql.NUMBERED[sql.RECORD_ACCESSES]
_OUTPUT_URI_REFERENCED: Final = sql.NUMBERED[sql.OUTPUT_URI_REFERENCED]
_RELEASE_RESERVATION: Final = sql.NUMBERED[sql.RELEASE_RESERVATION]
_PING: Final = sql.NUMBERED[sql.PING]

# The SQLSTATE classes psycopg raises as OperationalError (postgres_sql.translate_errors
# makes those UnavailableError): both twins then answer a server condition alike.
_UNAVAILABLE_CLASSES: Final = frozenset(
    {"08", "27", "28", "2F", "38", "39", "3B", "40", "53", "54", "55", "57", "58"}
)


def translate_error(error: BaseException) -> Exception | None:
    """Return the taskcache error for an asyncpg (or socket) error, None for any other.

    Like ``postgres_sql.translate_errors`` for psycopg: connection loss, refusal and
    timeouts, cancelled statements, serialisation failures and the other conditions that may
    pass (SQLSTATE classes psycopg calls operational) are UnavailableError; values
    PostgreSQL or asyncpg cannot take (SQLSTATE class 22, asyncpg's client-side
    ``DataError``) are InvalidArgumentError; any other asyncpg error is InternalError.
    The caller raises the result ``from error``.
    """
    if isinstance(error, asyncpg.PostgresError):
        sqlstate_class = str(error.sqlstate)[:2]
        if sqlstate_class in _UNAVAILABLE_CLASSES:
            return UnavailableError(f"postgres database unavailable: {error}")
        if sqlstate_class == "22":
            return InvalidArgumentError(f"value rejected by postgres: {error}")
        return InternalError(f"postgres error: {error}")
    if isinstance(error, asyncpg.DataError):
        return InvalidArgumentError(f"value rejected by asyncpg: {error}")
    if isinstance(error, OSError | TimeoutError):
        return UnavailableError(f"postgres database unavailable: {error}")
    if isinstance(error, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        return InternalError(f"postgres error: {error}")
    return None


def _jsonb_text(value: Jsonb) -> str:
    """Encode a ``key_map`` parameter (psycopg's ``Jsonb`` wrapper, from ``sql.ROWS``) as
    the JSON text psycopg would send.
    """
    return json.dumps(value.obj)


def _socket_of(conn: Connection) -> int:
    """Return the file descriptor of ``conn``'s socket."""
    # asyncpg exposes no socket; its transport does (the slot is not in the stubs).
    transport: asyncio.Transport = conn._transport  # type: ignore[attr-defined]
    fileno: int = transport.get_extra_info("socket").fileno()
    return fileno


class _Session:
    """A pooled connection and a poller on its socket (registered once, not per check)."""

    __slots__ = ("_poller", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._poller = select.poll()
        self._poller.register(_socket_of(conn), select.POLLIN)

    def quiet(self) -> bool:
        """Return True if the connection is open and the server sent nothing since its last
        answer.

        A server that ends a session (restart, ``pg_terminate_backend``) sends a FATAL
        notice and closes the socket, both of which make it readable, possibly before the
        event loop has run to notice; an idle session otherwise receives nothing. So a
        readable idle session is not used (it is replaced), at the cost of one ``poll``.
        """
        return not self.conn.is_closed() and not self._poller.poll(0)


class _Pool:
    """At most ``max_size`` sessions opened by ``connect``, handed out last in, first out.

    :meth:`take` is the fast path (no await); :meth:`wait` opens a session if the bound
    allows, or waits for one to come back, for up to ``timeout`` seconds. A session lost
    later is replaced when a call needs one (no background task). One event loop only.
    """

    __slots__ = ("_connect", "_idle", "_size", "_timeout", "_waiters", "closed", "max_size")

    def __init__(
        self, connect: Callable[[], Awaitable[Connection]], *, max_size: int, timeout: float
    ) -> None:
        self._connect = connect
        self.max_size = max_size
        self._timeout = timeout
        self._idle: list[_Session] = []
        # Open sessions and those being opened: what max_size bounds.
        self._size = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def take(self) -> _Session | None:
        """Return a quiet idle session, discarding the others; None if none is idle.

        Raises UnavailableError once the pool is closed.
        """
        if self.closed:
            raise UnavailableError("the postgres repository is closed")
        idle = self._idle
        while idle:
            session = idle.pop()
            if session.quiet():
                return session
            self._discard(session)
        return None

    async def wait(self) -> _Session:
        """Return a session: an idle one, a new one, or one given back, whichever comes
        first within the pool timeout.

        Raises UnavailableError when the timeout passes ("no postgres connection available
        ..."), a new session cannot be opened, or the pool closes meanwhile.
        """
        try:
            async with asyncio.timeout(self._timeout):
                while (session := self.take()) is None:
                    if self._size < self.max_size:
                        return await self._open()
                    await self._wait_for_give_back()
                return session
        except TimeoutError as error:
            raise UnavailableError(
                f"no postgres connection available after {self._timeout:.2f} sec"
            ) from error

    async def _wait_for_give_back(self) -> None:
        """Wait until a session is given back or discarded (or the pool closes)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, but gone: pass the wake-up on
            elif waiter in self._waiters:  # (a wake-up may have skipped it, cancelled)
                self._waiters.remove(waiter)
            raise

    async def fill(self, count: int) -> None:
        """Open sessions until ``count`` are open (at startup). Raises UnavailableError."""
        while self._size < count:
            self._idle.append(await self._open())

    async def _open(self) -> _Session:
        self._size += 1
        try:
            return _Session(await self._connect())
        except BaseException:
            self._size -= 1
            self._wake()
            raise

    def give_back(self, session: _Session) -> None:
        """Return ``session`` after a use, whatever it raised.

        It is kept unless the pool closed, its connection closed, or it is still in a
        transaction. A session whose statement was cancelled is kept too: asyncpg is
        sending the server a cancel request, which terminating the connection would abort
        (leaving the statement running, e.g. waiting for a lock), and its next statement
        waits for that cancellation to finish first.
        """
        conn = session.conn
        if self.closed or conn.is_closed() or conn.is_in_transaction():
            self._discard(session)
            return
        self._idle.append(session)
        if self._waiters:
            self._wake()

    def _discard(self, session: _Session) -> None:
        session.conn.terminate()
        self._size -= 1
        self._wake()

    def _wake(self) -> None:
        """Wake the longest-waiting caller, if any."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def stats(self) -> PoolStats:
        """Return the open (or opening), idle and waiting figures."""
        return PoolStats(size=self._size, available=len(self._idle), waiting=len(self._waiters))

    async def close(self) -> None:
        """Close the idle sessions, wake the waiters (they raise); later give-backs close."""
        self.closed = True
        idle, self._idle = self._idle, []
        self._size -= len(idle)
        await asyncio.gather(
            *(session.conn.close(timeout=self._timeout) for session in idle),
            return_exceptions=True,
        )
        while self._waiters:
            self._wake()


class _Checkout:
    """``async with``: a session's connection, given back on exit, with errors translated."""

    __slots__ = ("_pool", "_session")

    def __init__(self, pool: _Pool) -> None:
        self._pool = pool

    async def __aenter__(self) -> Connection:
        session = self._pool.take() or await self._pool.wait()
        self._session = session
        return session.conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if isinstance(error, asyncio.CancelledError):
                await _cancelled_in_server(self._session.conn)
        finally:
            self._pool.give_back(self._session)
        if error is not None and (translated := translate_error(error)) is not None:
            raise translated from error


async def _cancelled_in_server(conn: Connection) -> None:
    """Return once the server has ended the statement whose await was just cancelled.

    asyncpg raises CancelledError at once and sends the server a cancel request in the
    background; as psycopg does, the caller is answered only after the statement ended, so
    a statement still waiting (e.g. on a lock) is never applied after that answer. A
    session's next statement waits for the pending cancel: ``SELECT 1`` is that statement.
    """
    with contextlib.suppress(Exception):  # a session that broke meanwhile is discarded
        await conn.fetchval(_PING)


def _rowcount(status: str) -> int:
    """Return the row count of a command status such as ``"UPDATE 3"``."""
    return int(status.rpartition(" ")[2])


class AsyncPostgresRepository:
    """Entries and reservations in the PostgreSQL database at ``url``, as coroutines.

    Build it with ``await AsyncPostgresRepository.open(url, ...)`` (``min_size`` sessions
    open on the running event loop). Options and errors are those of
    :class:`~taskcache.repositories.postgres.PostgresRepository`: ``pool_timeout`` bounds
    the wait for a session, ``connect_timeout`` each connection attempt,
    ``statement_timeout`` each statement (server-side).
    """

    def __init__(self, url: str, **options: Unpack[sql.PoolOptions]) -> None:
        """Validate the options and build the (not yet open) pool; see :meth:`open`.

        Raises InvalidArgumentError naming a bad option.
        """
        self._settings = settings = sql.PoolSettings.of(options)
        self._url = url
        self._server_settings = {"TimeZone": "UTC"}
        if settings.statement_timeout is not None:
            self._server_settings["statement_timeout"] = settings.statement_timeout
        self._pool = _Pool(self._connect, max_size=settings.max_size, timeout=settings.pool_timeout)

    @classmethod
    async def open(
        cls, url: str, *, migrate: bool = True, **options: Unpack[sql.PoolOptions]
    ) -> AsyncPostgresRepository:
        """Prepare the schema (migrate, or check it is current) and open ``min_size``
        sessions.

        Raises UnavailableError if the database cannot be reached, InternalError if its
        schema is newer than this code (or, without ``migrate``, older).
        """
        repository = cls(url, **options)
        # The synchronous migration code, on a direct connection in a worker thread.
        await asyncio.to_thread(
            _prepare_schema, url, repository._settings.connect_timeout, migrate=migrate
        )
        try:
            await repository._pool.fill(repository._settings.min_size)
        except BaseException:
            await repository.close()
            raise
        return repository

    async def _connect(self) -> Connection:
        """Open one session. Raises UnavailableError if it cannot be opened."""
        try:
            conn = await asyncpg.connect(
                self._url,
                timeout=self._settings.connect_timeout,
                server_settings=self._server_settings,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            # psycopg reports any failure to connect as operational; so do we.
            raise UnavailableError(f"postgres database unavailable: {error}") from error
        try:
            await conn.set_type_codec(
                "jsonb", encoder=_jsonb_text, decoder=str, schema="pg_catalog", format="text"
            )
        except BaseException as error:
            conn.terminate()
            translated = translate_error(error)
            if translated is not None:
                raise translated from error
            raise
        return conn

    def _connection(self) -> _Checkout:
        """Return an ``async with`` yielding a pooled session's connection (see _Checkout)."""
        return _Checkout(self._pool)

    async def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.get_entry`."""
        async with self._connection() as conn:
            found = await conn.fetchrow(_SELECT_ENTRY, *sql.scope_key(scope, key))
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
            found = await conn.fetchrow(_DELETE_ENTRY, *sql.scope_key(scope, key))
        return None if found is None else sql.entry_from_row(scope, key, found)

    async def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """See :meth:`Repository.delete_entry_if_unchanged`."""
        params = sql.delete_if_unchanged_params(row)
        async with self._connection() as conn:
            return _rowcount(await conn.execute(_DELETE_ENTRY_IF_UNCHANGED, *params)) > 0

    async def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """See :meth:`Repository.record_accesses`."""
        params = sql.record_accesses_params(entries, at, if_before)
        if params is None:
            return 0
        async with self._connection() as conn:
            return _rowcount(await conn.execute(_RECORD_ACCESSES, *params))

    async def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """See :meth:`Repository.output_uri_referenced`."""
        async with self._connection() as conn:
            found: Any = await conn.fetchval(_OUTPUT_URI_REFERENCED, list(uris))
        return bool(found)

    async def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """See :meth:`Repository.acquire_reservation` (and the synchronous repository's)."""
        acquiring = postgres_steps.acquire_reservation(row, now)
        async with self._connection() as conn:
            return await postgres_steps.run_async(acquiring, conn)

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """See :meth:`Repository.release_reservation`."""
        params = sql.release_params(scope, key, owner_id)
        async with self._connection() as conn:
            return _rowcount(await conn.execute(_RELEASE_RESERVATION, *params)) > 0

    def pool_stats(self) -> PoolStats | None:
        """Return the pool's open, idle and waiting figures (no I/O)."""
        return self._pool.stats()

    async def ping(self) -> None:
        """Run ``SELECT 1``; raise UnavailableError if the store does not answer (or is closed)."""
        async with self._connection() as conn:
            await conn.fetchval(_PING)

    async def close(self) -> None:
        """Close the idle sessions; those in use close when given back. Idempotent."""
        if self._pool.closed:
            return
        await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresRepository:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
