"""A synchronous :class:`~taskcache.repositories.base.Repository` as an
:class:`~taskcache.repositories.base.AsyncRepository`: each write runs on a thread pool, each
entry read inline, and a reservation inline when it need not wait.

This is how the server (and the async manager's tests) use SQLite without blocking the event
loop on writes: the repository's own semantics are untouched, only where it runs changes.
An entry read (``get_entry``, the Get hit path) runs on the calling thread instead: in WAL
mode a read never waits for a writer, and one indexed select costs ~10-20 µs, while the hop
to a pool thread and back cost ~180 µs of CPU per Get under 16 concurrent calls (GIL
hand-offs between the loop and the pool; docs/benchmarks.md). A reservation (a short write
transaction) is tried inline too on a repository that can attempt it without waiting
(:class:`NowaitReservations`); only when another connection holds the write lock does it go
to the pool, where it waits as before. Those inline commits do not checkpoint the WAL (a
checkpoint fsyncs): the checkpoint they make due runs on the pool. It must not add behaviour
of its own (no retries, no caching).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from datetime import datetime
from typing import ParamSpec, Protocol, TypeVar, runtime_checkable

from taskcache.repositories.base import (
    CreateOutcome,
    EntryRow,
    PoolStats,
    Replaceable,
    Repository,
    ReservationRow,
    Scope,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

logger = logging.getLogger(__name__)


@runtime_checkable
class NowaitReservations(Protocol):
    """A repository that can try a reservation without waiting for a lock
    (:class:`~taskcache.repositories.sqlite.SqliteRepository`'s contract).
    """

    def acquire_reservation_nowait(
        self, row: ReservationRow, now: datetime
    ) -> ReservationRow | None:
        """``acquire_reservation`` if it needs no wait, else None having applied nothing."""
        ...

    @property
    def checkpoint_due(self) -> bool:
        """Whether those no-wait commits made a WAL checkpoint due."""
        ...

    def checkpoint(self) -> None:
        """Checkpoint the WAL (may wait and fsync: never on the event loop)."""
        ...


class ThreadedRepository:
    """Runs every call of ``repository`` but ``get_entry`` on ``executor`` and awaits it;
    ``get_entry`` runs inline, and so does ``acquire_reservation`` when ``repository`` can
    try it without waiting (see the module's docstring).

    Each method means what the :class:`Repository` method of the same name means; errors are
    the repository's own. ``pool_stats`` stays synchronous (no I/O). Closing closes the
    wrapped repository, not the executor (its owner shuts that down). A call runs in a copy
    of the caller's context, so the deadline it carries (:mod:`taskcache.deadlines`) bounds
    the repository's waits as it would in the caller's thread.
    """

    def __init__(self, repository: Repository, executor: Executor) -> None:
        self.repository = repository
        self._executor = executor
        self._nowait = repository if isinstance(repository, NowaitReservations) else None
        # A checkpoint submitted and not yet finished: at most one at a time.
        self._checkpointing = False

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args, **kwargs)
        # run_in_executor, unlike asyncio.to_thread, does not carry the context by itself.
        return await loop.run_in_executor(self._executor, contextvars.copy_context().run, call)

    async def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.get_entry` (run inline: no thread hop)."""
        return self.repository.get_entry(scope, key)

    async def create_entry(
        self, row: EntryRow, replace: Replaceable | None = None
    ) -> CreateOutcome:
        """See :meth:`Repository.create_entry`."""
        return await self._run(self.repository.create_entry, row, replace)

    async def overwrite_entry(self, row: EntryRow, keep_created_at: bool) -> EntryRow | None:
        """See :meth:`Repository.overwrite_entry`."""
        return await self._run(self.repository.overwrite_entry, row, keep_created_at)

    async def delete_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.delete_entry`."""
        return await self._run(self.repository.delete_entry, scope, key)

    async def delete_entry_if_unchanged(self, row: EntryRow) -> bool:
        """See :meth:`Repository.delete_entry_if_unchanged`."""
        return await self._run(self.repository.delete_entry_if_unchanged, row)

    async def record_accesses(
        self, entries: Sequence[tuple[Scope, str]], at: datetime, if_before: datetime
    ) -> int:
        """See :meth:`Repository.record_accesses`."""
        return await self._run(self.repository.record_accesses, entries, at, if_before)

    async def output_uri_referenced(self, uris: Sequence[str]) -> bool:
        """See :meth:`Repository.output_uri_referenced`."""
        return await self._run(self.repository.output_uri_referenced, uris)

    async def acquire_reservation(self, row: ReservationRow, now: datetime) -> ReservationRow:
        """See :meth:`Repository.acquire_reservation` (inline when it need not wait)."""
        nowait = self._nowait
        if nowait is not None:
            granted = nowait.acquire_reservation_nowait(row, now)
            if granted is not None:
                if nowait.checkpoint_due:
                    self._checkpoint_soon(nowait)
                return granted
        return await self._run(self.repository.acquire_reservation, row, now)

    def _checkpoint_soon(self, repository: NowaitReservations) -> None:
        """Submit ``repository.checkpoint`` to the executor unless one is under way."""
        if self._checkpointing:
            return
        try:
            future = self._executor.submit(repository.checkpoint)
        except RuntimeError:
            # Shut down: the server is stopping, and the last connection's close checkpoints.
            return
        self._checkpointing = True
        future.add_done_callback(self._checkpointed)

    def _checkpointed(self, future: Future[None]) -> None:
        self._checkpointing = False
        error = None if future.cancelled() else future.exception()
        if error is not None:
            # The next due commit tries again; the WAL only grows meanwhile.
            logger.warning("sqlite WAL checkpoint failed: %s", error)

    async def release_reservation(self, scope: Scope, key: str, owner_id: str) -> bool:
        """See :meth:`Repository.release_reservation`."""
        return await self._run(self.repository.release_reservation, scope, key, owner_id)

    def pool_stats(self) -> PoolStats | None:
        """See :meth:`Repository.pool_stats` (read here, no thread hop)."""
        return self.repository.pool_stats()

    async def ping(self) -> None:
        """See :meth:`Repository.ping` (on the default executor, not ``executor``)."""
        # Health checks must not queue behind requests: a saturated pool would make a healthy
        # database look down.
        await asyncio.to_thread(self.repository.ping)

    async def close(self) -> None:
        """Close the wrapped repository. Idempotent."""
        # Not on the executor: its owner may already have shut it down at this point.
        await asyncio.to_thread(self.repository.close)
