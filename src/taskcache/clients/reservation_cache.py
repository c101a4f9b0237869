"""The client-side reservation cache: per owner, thread-safe, O(1), bounded (LRU).

It owns what a client remembers of each owner's last reservation attempt (Flyte's
``get_reservation_cache``/``update_reservation_cache``), in this process's memory only. It
must not talk to a catalog or a repository: the reservations themselves live in the catalog.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from taskcache.errors import InvalidArgumentError
from taskcache.model import ReservationCache

DEFAULT_MAX_OWNERS = 10_000


class ReservationCacheStore:
    """Remembers the last :class:`ReservationCache` of up to ``max_owners`` owners.

    Reading or writing an owner marks it most recently used; beyond the bound the least
    recently used owner is forgotten (Flyte keeps an unbounded map).
    """

    def __init__(self, max_owners: int = DEFAULT_MAX_OWNERS) -> None:
        if max_owners < 1:
            raise InvalidArgumentError("must be at least 1", field="reservation_cache_size")
        self._max_owners = max_owners
        self._entries: OrderedDict[str, ReservationCache] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, owner_id: str) -> ReservationCache:
        """Return the owner's entry, or an empty ``ReservationCache()`` if none is remembered."""
        with self._lock:
            entry = self._entries.get(owner_id)
            if entry is None:
                return ReservationCache()
            self._entries.move_to_end(owner_id)
            return entry

    def put(self, owner_id: str, entry: ReservationCache) -> None:
        """Remember ``entry`` for the owner, evicting the least recently used beyond the bound."""
        with self._lock:
            self._entries[owner_id] = entry
            self._entries.move_to_end(owner_id)
            if len(self._entries) > self._max_owners:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
