"""Hits waiting for their access record: the cache manager's buffer of entries whose
``last_accessed_at`` is due to be written, so that many are written by one repository call.

It only collects and hands out batches; whether a hit needs a record, when a batch is written
and what a failed write means are the manager's rules (:mod:`taskcache.manager`).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from taskcache.repositories.base import Scope

AccessKey = tuple[Scope, str]


@dataclass(frozen=True)
class AccessBatch:
    """Entries to record as accessed at ``at``: the latest hit among them, so no entry's
    record is earlier than its hit, nor later by the buffer's ``max_wait`` or more.
    """

    entries: list[AccessKey]
    at: datetime


class PendingAccesses:
    """A thread-safe, insertion-ordered set of (scope, key) awaiting an access record.

    An entry is held at most once however often it is added. :meth:`add` hands a batch out
    (emptying the buffer) once it holds ``limit`` entries, or, before holding the new entry
    (which that batch's record then covers if it holds it already), when the oldest one was
    added ``max_wait`` or longer ago; :meth:`due` hands it out on that last condition alone,
    :meth:`take` on demand. The caller (the manager) has checked the options: ``limit`` >= 1,
    ``max_wait`` >= 0. A forked child starts with an empty buffer (the parent writes what it
    held).
    """

    def __init__(self, limit: int, max_wait: timedelta) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self._lock = threading.Lock()
        # A dict, not a set: it keeps the hit order, so batches write oldest hits first.
        self._entries: dict[AccessKey, None] = {}
        self._oldest: datetime | None = None
        self._newest: datetime | None = None
        _BUFFERS.add(self)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: AccessKey, now: datetime) -> AccessBatch | None:
        """Hold ``entry``, hit at ``now``; return the batch due now, else None."""
        with self._lock:
            due = None
            if self._waited(now):
                # Written without the new hit, so the batch's time stays within max_wait of
                # every hit in it; an entry already in it needs no second record.
                due = self._take_locked()
                if due is not None and entry in due.entries:
                    return due
            if self._oldest is None or self._newest is None:
                self._oldest = self._newest = now
            else:
                self._newest = max(self._newest, now)
            self._entries[entry] = None
            if due is None and len(self._entries) >= self.limit:
                due = self._take_locked()
        return due

    def due(self, now: datetime) -> AccessBatch | None:
        """Return the batch if its oldest entry was added ``max_wait`` or longer before
        ``now`` (emptying the buffer), else None.
        """
        # Unlocked first look: the common case (nothing waiting, or not for long) takes no
        # lock; the decision is re-checked under it.
        if not self._waited(now):
            return None
        with self._lock:
            return self._take_locked() if self._waited(now) else None

    def take(self) -> AccessBatch | None:
        """Return every held entry (oldest first) as a batch, leaving the buffer empty; None
        when it is empty.
        """
        with self._lock:
            return self._take_locked()

    def _waited(self, now: datetime) -> bool:
        oldest = self._oldest
        return oldest is not None and now - oldest >= self.max_wait

    def _take_locked(self) -> AccessBatch | None:
        if not self._entries or self._newest is None:
            return None
        batch = AccessBatch(list(self._entries), self._newest)
        self._entries = {}
        self._oldest = self._newest = None
        return batch


_BUFFERS: Final[weakref.WeakSet[PendingAccesses]] = weakref.WeakSet()


def _reset_in_child() -> None:
    # Another thread of the parent may have held a lock at the fork; it does not exist here.
    for buffer in list(_BUFFERS):
        buffer._lock = threading.Lock()
        buffer._take_locked()


os.register_at_fork(after_in_child=_reset_in_child)
