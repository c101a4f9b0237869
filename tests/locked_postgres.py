"""A slow call inside a real server, without a test hook: the test locks a table the call needs.

The test holds ACCESS EXCLUSIVE on cache_entries in the server's PostgreSQL database, so a
Put (or Get) blocks inside the server, holding a pooled connection, until the test commits.
Reservations live in another table and stay answerable meanwhile.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import psycopg

# A generous bound that only catches a hang, never a slow machine.
HANG_GUARD = 20.0


@contextlib.contextmanager
def entries_locked(url: str) -> Iterator[psycopg.Connection]:
    """Hold ACCESS EXCLUSIVE on cache_entries until the caller commits (or the block ends)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        conn.execute("LOCK TABLE cache_entries IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.rollback()


def wait_for_blocked_calls(url: str, count: int = 1) -> None:
    """Return once ``count`` sessions wait on the test's lock (so that many calls are in
    flight inside the server).
    """
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + HANG_GUARD
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        while conn.execute(query).fetchone() != (count,):
            assert time.monotonic() < deadline, f"{count} call(s) never reached the database"
            time.sleep(0.02)
