"""The server's background cleanup: every ``--gc-interval`` seconds, one run of
:func:`taskcache.operations.cleanup` (expired entries, then the ``--max-bytes`` cap).

It owns the schedule, the metrics it feeds and the one log line per run; which entries go is
:mod:`taskcache.operations`' and the manager's rule, and one cleaner at a time across
replicas is the repository's maintenance lock. Each run first has the server's manager write
its buffered access records, so the size cap's least-recently-used order counts every hit
this process served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass, field

from taskcache import operations
from taskcache.errors import CacheError
from taskcache.manager import Clock, utc_now
from taskcache.repositories.base import OperatorRepository
from taskcache.server.metrics import ServerMetrics
from taskcache.storage import BlobStore

logger = logging.getLogger("taskcache.server.cleanup")


def _holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# Not compared by value: each cleaner is its own schedule.
@dataclass(eq=False)
class Cleaner:
    """Runs the cleanup on ``repository`` every ``interval`` seconds until stopped.

    ``blobs`` (None: blobs are never deleted) is the storage root whose blobs may go with
    their entries; ``max_bytes`` the size cap (None: none). ``flush_accesses`` (e.g.
    :meth:`AsyncCacheManager.flush_accesses <taskcache.manager.AsyncCacheManager.flush_accesses>`)
    is awaited before each run. Each run is counted in ``metrics`` and logged once; a failed
    run is logged and retried at the next interval.
    """

    repository: OperatorRepository
    blobs: BlobStore | None
    metrics: ServerMetrics
    _: KW_ONLY
    interval: float
    max_bytes: int | None
    clock: Clock = utc_now
    flush_accesses: Callable[[], Awaitable[object]] | None = None
    # One name for this process's runs: its SQLite lease is recognised as its own.
    holder: str = field(init=False, default_factory=_holder_name)

    async def run(self, stop: asyncio.Event) -> None:
        """Run once per interval until ``stop`` is set (a run in progress finishes first)."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set():
                return
            await self.run_once()

    async def run_once(self) -> operations.CleanupSummary | None:
        """Run the cleanup once in a worker thread; return its summary (None if it failed)."""
        started = time.monotonic()
        if self.flush_accesses is not None:
            # It never raises a store error (a failed write is logged and dropped).
            await self.flush_accesses()
        try:
            summary = await asyncio.to_thread(
                operations.cleanup,
                self.repository,
                self.blobs,
                self.clock(),
                max_bytes=self.max_bytes,
                holder=self.holder,
            )
        except CacheError as error:
            self.metrics.cleanup_runs.labels(outcome="failed").inc()
            logger.warning("cleanup failed: %s", error)
            return None
        self._record(summary, time.monotonic() - started)
        return summary

    def _record(self, summary: operations.CleanupSummary, seconds: float) -> None:
        metrics = self.metrics
        if summary.locked_out:
            metrics.cleanup_runs.labels(outcome="locked_out").inc()
            logger.info("cleanup skipped: another cleaner holds the catalog's lock")
            return
        metrics.cleanup_runs.labels(outcome="completed").inc()
        phases = (("expired", summary.expired), ("size", summary.over_size))
        for reason, phase in phases:
            if phase is not None:
                metrics.evicted_entries.labels(reason=reason).inc(phase.entries)
                metrics.evicted_bytes.labels(reason=reason).inc(phase.bytes_freed)
        total = summary.total
        metrics.evicted_blobs.inc(total.blobs_deleted)
        over_size = summary.over_size.entries if summary.over_size is not None else 0
        logger.info(
            "cleanup: %d expired and %d over-size entries deleted (%d bytes), %d blobs deleted, "
            "%d kept, %d failed, in %.3f s",
            summary.expired.entries,
            over_size,
            total.bytes_freed,
            total.blobs_deleted,
            total.blobs_skipped,
            total.blob_errors,
            seconds,
        )
