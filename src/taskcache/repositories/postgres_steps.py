"""The PostgreSQL repositories' multi-statement calls, written once for both twins.

A call is a generator (:data:`Steps`) that yields what to run next, a :class:`Statement` or
a :class:`Transaction` of further steps, and is sent the answer: the statement's first row,
or what the transaction's steps returned. What the generator returns is the call's result.
:func:`run` executes one on a ``psycopg.Connection``, :func:`run_async` on an
``asyncpg.Connection``; so every decision of a call (which statements, in which
transaction, when to retry, when to give up) is made in one place, and the twins differ
only in the driver. This is psycopg's own model (its connection logic is generators that
a sync and an async wait drive), as :mod:`taskcache.clients.conversation` is for remote calls.

The statements, parameters and row decoding are :mod:`taskcache.repositories.postgres_sql`'s.
It must not open connections: each driver runs on one its repository has checked out.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg.rows import TupleRow

from taskcache.errors import UnavailableError
from taskcache.repositories import postgres_sql as sql
from taskcache.repositories.base import CreateOutcome, EntryRow, Replaceable, ReservationRow

if TYPE_CHECKING:
    # Only annotated: the synchronous repository, which imports this module, needs no asyncpg.
    import asyncpg

_Result = TypeVar("_Result")


@dataclass(frozen=True, slots=True)
class Statement:
    """Run ``query`` with ``params``; the step is sent its first row (None if it has none),
    or None unread when ``fetch`` is false (for a statement that returns no rows).
    """

    query: str
    params: sql.Params
    fetch: bool = True


@dataclass(frozen=True, slots=True)
class Transaction(Generic[_Result]):
    """Run ``steps`` in one transaction, committed when they return and rolled back if a
    statement fails; the step is sent what they returned.
    """

    steps: Steps[_Result]


# A statement's first row: a psycopg tuple or an asyncpg Record, which index and unpack alike.
Row = Any
# Answers are rows or a transaction's result; each step annotates the one it expects.
Steps = Generator[Statement | Transaction[Any], Any, _Result]


@dataclass(frozen=True, slots=True)
class _Returned(Generic[_Result]):
    """What finished steps returned."""

    value: _Result


def _advance(
    steps: Steps[_Result], answer: Any
) -> Statement | Transaction[Any] | _Returned[_Result]:
    """Send ``answer`` to ``steps``; return the next step, or their result once they return."""
    try:
        return steps.send(answer)
    except StopIteration as stop:
        return _Returned(stop.value)


def run(steps: Steps[_Result], conn: psycopg.Connection[TupleRow]) -> _Result:
    """Run ``steps`` on the autocommit connection ``conn``; return what they return.

    Raises what a statement raises (psycopg errors, for the caller to translate), which
    rolls back the transaction it ran in; the steps are not resumed. Raises what the steps
    raise.
    """
    answer: Any = None
    while not isinstance(step := _advance(steps, answer), _Returned):
        if isinstance(step, Transaction):
            with conn.transaction():
                answer = run(step.steps, conn)
        else:
            cursor = conn.execute(step.query, step.params)
            answer = cursor.fetchone() if step.fetch else None
    return step.value


async def run_async(steps: Steps[_Result], conn: asyncpg.Connection[asyncpg.Record]) -> _Result:
    """See :func:`run`: the same on an asyncpg connection, each statement awaited in its
    ``$n`` form (:data:`~taskcache.repositories.postgres_sql.NUMBERED`). Raises asyncpg
    errors for the caller to translate.
    """
    answer: Any = None
    while not isinstance(step := _advance(steps, answer), _Returned):
        if isinstance(step, Transaction):
            async with conn.transaction():
                answer = await run_async(step.steps, conn)
        elif step.fetch:
            answer = await conn.fetchrow(sql.NUMBERED[step.query], *step.params)
        else:
            await conn.execute(sql.NUMBERED[step.query], *step.params)
            answer = None
    return step.value


def create_entry(row: EntryRow, replace: Replaceable | None) -> Steps[CreateOutcome]:
    """The steps of ``create_entry``: write ``row`` unless a live entry holds its key
    (``replace`` says which entries are stale); see :func:`_write_entry`.

    Raises InvalidArgumentError for a naive time in ``replace`` or ``row``.
    """
    return _write_entry(
        row,
        cutoff=sql.create_cutoff(replace, "updated_before"),
        overwrite=False,
        keep_created_at=False,
        expired_at=sql.create_cutoff(replace, "expired_at"),
    )


def overwrite_entry(row: EntryRow, keep_created_at: bool) -> Steps[CreateOutcome]:
    """The steps of ``overwrite_entry``: insert or replace ``row`` (with ``keep_created_at``
    an existing row's ``created_at`` survives); see :func:`_write_entry`.

    Raises InvalidArgumentError for a naive time in ``row``.
    """
    return _write_entry(row, cutoff=None, overwrite=True, keep_created_at=keep_created_at)


def _write_entry(
    row: EntryRow,
    *,
    cutoff: datetime | None,
    overwrite: bool,
    keep_created_at: bool,
    expired_at: datetime | None = None,
) -> Steps[CreateOutcome]:
    """Insert ``row``, or replace the existing entry when ``overwrite`` or it is stale
    (:func:`~taskcache.repositories.postgres_sql.may_replace`).

    The insert is one statement (the unique index decides between racing inserters).
    On conflict, one short transaction locks the existing row (``SELECT ... FOR
    UPDATE`` reads its latest committed version), decides, and updates it; the row it
    returns is exactly the one replaced. If the row vanished in between, start over.

    The steps return whether they wrote and the row replaced, if any; they raise
    UnavailableError after :data:`~taskcache.repositories.postgres_sql.MAX_ATTEMPTS` such
    vanishings. The parameters are built here, before any connection is taken, so a bad
    value raises InvalidArgumentError at once.
    """
    key_params, insert_params, update_params = sql.write_entry_params(row, keep_created_at)

    def lock_decide_update() -> Steps[CreateOutcome | None]:
        found: Row | None = yield Statement(sql.SELECT_ENTRY_FOR_UPDATE, key_params)
        if found is None:
            return None
        existing = sql.entry_from_row(row.scope, row.key, found)
        if not sql.may_replace(existing, cutoff=cutoff, overwrite=overwrite, expired_at=expired_at):
            return CreateOutcome(written=False, replaced=None)
        yield Statement(sql.UPDATE_ENTRY, update_params, fetch=False)
        return CreateOutcome(written=True, replaced=existing)

    def attempts() -> Steps[CreateOutcome]:
        for _ in range(sql.MAX_ATTEMPTS):
            inserted: Row | None = yield Statement(sql.INSERT_ENTRY, insert_params)
            if inserted is not None:
                return CreateOutcome(written=True, replaced=None)
            decided: CreateOutcome | None = yield Transaction(lock_decide_update())
            if decided is not None:
                return decided
            # None: deleted since the insert saw it; try the insert again.
        raise UnavailableError(
            f"entry {row.key!r} kept changing; gave up after {sql.MAX_ATTEMPTS} attempts"
        )

    return attempts()


def acquire_reservation(row: ReservationRow, now: datetime) -> Steps[ReservationRow]:
    """Grant ``row`` unless another owner holds an unexpired reservation on the key.

    The upsert's WHERE decides the grant atomically and the same statement names the
    holder that refused it; only when its snapshot cannot, the holder is read back, and
    if the holder released in between, the upsert is tried again.

    The steps return the reservation in force afterwards: ``row`` if granted, else the
    holder's; they raise UnavailableError after
    :data:`~taskcache.repositories.postgres_sql.MAX_ATTEMPTS` such releases. The parameters
    are built here, before any connection is taken, so a bad value raises
    InvalidArgumentError at once.
    """
    params = sql.acquire_params(row, now)
    key_params = sql.scope_key(row.scope, row.key)

    def attempts() -> Steps[ReservationRow]:
        for _ in range(sql.MAX_ATTEMPTS):
            found: Row | None = yield Statement(sql.ACQUIRE_RESERVATION, params)
            decided = sql.acquired_reservation(row, found, now)
            if decided is not None:
                return decided
            holder: Row | None = yield Statement(sql.SELECT_RESERVATION, key_params)
            if holder is not None:
                return sql.reservation_from_row(row.scope, row.key, holder)
        raise UnavailableError(
            f"reservation on {row.key!r} kept changing; gave up after {sql.MAX_ATTEMPTS} attempts"
        )

    return attempts()
