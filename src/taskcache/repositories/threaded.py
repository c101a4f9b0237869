"""A synchronous :class:`~taskcache.repositories.base.Repository` as an
:class:`~taskcache.repositories.base.AsyncRepository`: each write runs on a thread pool, each
entry read inline.

This is how the server (and the async manager's tests) use SQLite without blocking the event
loop on writes: the repository's own semantics are untouched, only where it runs changes.
An entry read (``get_entry``, the Get hit path) runs on the calling thread instead: in WAL
mode a read never waits for a writer, and one indexed select costs ~10-20 µs, while the hop
to a pool thread and back cost ~180 µs of CPU per Get under 16 concurrent calls (GIL
hand-offs between the loop and the pool; docs/benchmarks.md). It must not add behaviour of
its own (no retries, no caching).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import datetime
from typing import ParamSpec, TypeVar

from taskcache.repositories.base import (
    CreateOutcome,
    EntryRow,
    PoolStats,
    Repository,
    ReservationRow,
    Scope,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ThreadedRepository:
    """Runs every call of ``repository`` but ``get_entry`` on ``executor`` and awaits it;
    ``get_entry`` runs inline (see the module's docstring).

    Each method means what the :class:`Repository` method of the same name means; errors are
    the repository's own. ``pool_stats`` stays synchronous (no I/O). Closing closes the
    wrapped repository, not the executor (its owner shuts that down). A call runs in a copy
    of the caller's context, so the deadline it carries (:mod:`taskcache.deadlines`) bounds
    the repository's waits as it would in the caller's thread.
    """

    def __init__(self, repository: Repository, executor: Executor) -> None:
        self.repository = repository
        self._executor = executor

    async def _run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args, **kwargs)
        # run_in_executor, unlike asyncio.to_thread, does not carry the context by itself.
        return await loop.run_in_executor(self._executor, contextvars.copy_context().run, call)

    async def get_entry(self, scope: Scope, key: str) -> EntryRow | None:
        """See :meth:`Repository.get_entry` (run inline: no thread hop)."""
        return self.repository.get_entry(scope, key)

    async def create_entry(
        self,
        row: EntryRow,
        replace_if_updated_before: datetime | None,
        replace_if_expired_at: datetime | None = None,
    ) -> CreateOutcome:
        """See :meth:`Repository.create_entry`."""
        return await self._run(
            self.repository.create_entry, row, replace_if_updated_before, replace_if_expired_at
        )

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
        """See :meth:`Repository.acquire_reservation`."""
        return await self._run(self.repository.acquire_reservation, row, now)

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
