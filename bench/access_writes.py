"""What coalescing and batching last-access writes save on the hit path: embedded SQLite
gets of 64 pre-populated entries, with the default one-minute window (a hit within it records
nothing) against a zero window (every hit is due a record), the latter both batched (the
default: one transaction per 128 records or 5 s) and written by each hit (a flush size of 1,
as before batching), alternated.

    python -m bench.access_writes

Prints microseconds per get (median of the rounds); bench/analysis.md reports them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from taskcache.manager import DEFAULT_ACCESS_RESOLUTION, CacheManager, NewEntry
from taskcache.repositories.base import Scope
from taskcache.repositories.sqlite import SqliteRepository

ENTRIES = 64
GETS = 5000
ROUNDS = 5
SCOPE = Scope("bench", "access", "writes")


def _round(manager: CacheManager[SqliteRepository]) -> float:
    started = time.perf_counter()
    for index in range(GETS):
        manager.get(SCOPE, f"key-{index % ENTRIES}")
    return (time.perf_counter() - started) / GETS * 1e6


def main() -> None:
    """Measure both windows on one SQLite file and print the medians."""
    with tempfile.TemporaryDirectory() as folder:
        repository = SqliteRepository(Path(folder) / "catalog.db")
        try:
            writer = CacheManager(repository)
            for index in range(ENTRIES):
                entry = NewEntry(
                    output_uri=None,
                    output_literals=b"x" * 1024,
                    source_identifier=b"",
                    key_map={},
                )
                writer.put(SCOPE, f"key-{index}", entry)
            windows = {
                "coalesced (60 s)": CacheManager(
                    repository, access_resolution=DEFAULT_ACCESS_RESOLUTION
                ),
                "every hit due, batched": CacheManager(repository, access_resolution=timedelta(0)),
                "every hit writes": CacheManager(
                    repository, access_resolution=timedelta(0), access_flush_size=1
                ),
            }
            timings: dict[str, list[float]] = {name: [] for name in windows}
            for _ in range(ROUNDS):
                for name, manager in windows.items():
                    timings[name].append(_round(manager))
            for name, values in timings.items():
                print(f"{name}: {statistics.median(values):.1f} us/get ({values})")
        finally:
            repository.close()


if __name__ == "__main__":
    main()
