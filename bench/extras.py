"""Facts reported beside the table: reservation-cache entry size, ``open()`` time and
``import taskcache`` time.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import taskcache
from bench.servers import REPOSITORY_ROOT
from taskcache.clients.reservation_cache import ReservationCacheStore
from taskcache.model import ReservationCache, ReservationStatus

OWNER_ID_LENGTH = 40  # e.g. "<execution name>-n0-0-<attempt>"


def reservation_cache_entry_bytes(entries: int = 10_000) -> dict[str, Any]:
    """Measure the memory one remembered owner costs in a ReservationCacheStore.

    Each entry is a fresh 40-character owner id and a ReservationCache holding its own
    timestamp; everything allocated while filling the store counts (tracemalloc).
    """
    store = ReservationCacheStore(max_owners=entries)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for index in range(entries):
            owner = f"bench-execution-{index:010d}-n0-0-attempt-1"[:OWNER_ID_LENGTH]
            store.put(
                owner,
                ReservationCache(
                    timestamp=datetime.now(UTC),
                    reservation_status=ReservationStatus.RESERVATION_ACQUIRED,
                ),
            )
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    owner_bytes = sys.getsizeof("x" * OWNER_ID_LENGTH)
    return {
        "bytes_per_entry": (after - before) / entries,
        "owner_id_bytes": owner_bytes,
        "entries": entries,
    }


def open_times(repeats: int) -> dict[str, Any]:
    """Median seconds to ``taskcache.open()`` an embedded SQLite catalog (and close it):
    a new folder (creates the schema), an existing one, and import + open in a fresh process.
    """
    cold: list[float] = []
    warm: list[float] = []
    with tempfile.TemporaryDirectory(prefix="taskcache-bench-open-") as folder:
        for index in range(repeats):
            target = Path(folder) / f"catalog-{index}"
            started = time.perf_counter()
            taskcache.open(target).close()
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            taskcache.open(target).close()
            warm.append(time.perf_counter() - started)
        script = (
            "import time; t = time.perf_counter(); import taskcache; "
            f"taskcache.open({str(Path(folder) / 'catalog-0')!r}).close(); "
            "print(time.perf_counter() - t)"
        )
        fresh = [float(_fresh_python(script).stdout) for _ in range(max(1, min(repeats, 3)))]
    return {
        "new_catalog_s": statistics.median(cold),
        "existing_catalog_s": statistics.median(warm),
        "fresh_process_import_and_open_s": statistics.median(fresh),
        "repeats": repeats,
    }


def _fresh_python(script: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter of this Python (with ``flags``) from the
    repository root; return what it printed. Raises CalledProcessError if it fails.
    """
    return subprocess.run(
        [sys.executable, *flags, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPOSITORY_ROOT,
        timeout=120,
    )


# Imported by `import taskcache` only if some module pulls them in eagerly (reported).
HEAVY_MODULES = ("fsspec", "grpc", "connectrpc", "uvicorn", "click", "rich", "mashumaro")


def _import_taskcache_once() -> tuple[float, list[str]]:
    """Return ``import taskcache``'s cumulative time in seconds (``-X importtime``) in a
    fresh process, and which :data:`HEAVY_MODULES` it loaded.
    """
    script = (
        f"import taskcache, sys; print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    completed = _fresh_python(script, "-X", "importtime")
    # Lines read "import time: self [us] | cumulative | name"; the package's own is last.
    line = next(
        line
        for line in reversed(completed.stderr.splitlines())
        if line.rstrip().endswith("| taskcache")
    )
    loaded = [name for name in completed.stdout.strip().split(",") if name]
    return int(line.split("|")[1]) / 1e6, loaded


# What a program using the package typically imports first: the names load on first access.
FIRST_USE_IMPORT = "from taskcache import Key, cached, open"


def _first_use_import_once() -> float:
    """Return the wall time in seconds of :data:`FIRST_USE_IMPORT` in a fresh process (the
    lazily exported names' modules included, which ``-X importtime``'s package line omits).
    """
    script = (
        "import time; started = time.perf_counter(); "
        f"{FIRST_USE_IMPORT}; print(time.perf_counter() - started)"
    )
    return float(_fresh_python(script).stdout.strip())


def import_times(repeats: int) -> dict[str, Any]:
    """Measure ``import taskcache`` in fresh processes: the median and best cumulative
    import time of ``repeats`` runs (target <= 100 ms; reported, not asserted), the heavy
    modules it imported (none expected), and the median and best of
    :data:`FIRST_USE_IMPORT` (reported).
    """
    count = max(1, repeats)
    runs = [_import_taskcache_once() for _ in range(count)]
    seconds = [elapsed for elapsed, _ in runs]
    first_use = [_first_use_import_once() for _ in range(count)]
    return {
        "median_s": statistics.median(seconds),
        "best_s": min(seconds),
        "heavy_modules": sorted({name for _, loaded in runs for name in loaded}),
        "first_use_median_s": statistics.median(first_use),
        "first_use_best_s": min(first_use),
        "first_use_statement": FIRST_USE_IMPORT,
        "repeats": len(runs),
    }
