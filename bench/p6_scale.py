"""P6: Get latency against catalog size (SQLite and PostgreSQL).

Three catalogs per database (10^3, 10^5, 10^6 entries; quick: 10^3, 10^4, 10^5) are
bulk-loaded into the repository's own schema (SQLite: ``executemany`` in large
transactions, one file per size; PostgreSQL: ``COPY``, one schema per size, all read
through one connection), with Flyte-shaped keys (~110 characters) and small inline outputs.
A round times ``lookups`` random-key ``CacheManager.get`` calls per size one by one
(embedded, no transport), the sizes taking turns every 50 lookups; the baseline is the 10^3
figure.
"""

from __future__ import annotations

import base64
import hashlib
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from bench.common import LABELS, Result, Tier, percentile, progress
from bench.literals import literal_map, task_identifier
from taskcache.errors import NotFoundError
from taskcache.manager import CacheManager
from taskcache.repositories.base import Repository, Scope
from taskcache.repositories.sqlite import SqliteRepository, entry_rowid

SCOPE = Scope("bench", "taskcache", "development")
BATCH = 50_000
BLOCK = 50  # lookups per size before the next size's turn
_PREFIX = "Wq1Tkp0mAxM6I3iGXjZ3rb1Xz1d7K8u2aZJ0c9p4b7E=-a1b2c3d4-e5f6a7b8"
_SOURCE = task_identifier("bench.p6").SerializeToString()
_LOADED_AT = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _count(size: int) -> str:
    exponent = len(str(size)) - 1
    return f"10^{exponent}" if size == 10**exponent else str(size)


def entry_key(index: int) -> str:
    """The Flyte-shaped cache key of entry ``index`` (inputs hash from sha256 of it)."""
    digest = hashlib.sha256(index.to_bytes(8, "big")).digest()
    inputs_hash = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return f"{_PREFIX}-{inputs_hash}-1.0"


def _output(index: int) -> bytes:
    return bytes(literal_map(o0=index).SerializeToString())


def _rows(count: int) -> Iterator[tuple[str, bytes, datetime]]:
    for index in range(count):
        yield entry_key(index), _output(index), _LOADED_AT + timedelta(microseconds=index)


def _batches(count: int) -> Iterator[list[tuple[str, bytes, datetime]]]:
    batch: list[tuple[str, bytes, datetime]] = []
    for row in _rows(count):
        batch.append(row)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def load_sqlite(path: Path, count: int) -> None:
    """Create the schema through SqliteRepository, then bulk-insert ``count`` entries with
    the repository's column encoding (times as integer microseconds, key_map as JSON).
    """
    import sqlite3  # noqa: PLC0415

    SqliteRepository(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for batch in _batches(count):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO cache_entries (id, org, project, domain, key, output_uri,"
                " output_literals, source_identifier, key_map, created_at, last_updated_at,"
                " last_accessed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        entry_rowid(SCOPE.org, SCOPE.project, SCOPE.domain, key),
                        SCOPE.org,
                        SCOPE.project,
                        SCOPE.domain,
                        key,
                        None,
                        output,
                        _SOURCE,
                        "{}",
                        (at - _EPOCH) // timedelta(microseconds=1),
                        (at - _EPOCH) // timedelta(microseconds=1),
                        (at - _EPOCH) // timedelta(microseconds=1),
                    )
                    for key, output, at in batch
                ],
            )
            conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def load_postgres(url: str, count: int) -> None:
    """COPY ``count`` entries into the (migrated) database at ``url``."""
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        for batch in _batches(count):
            with conn.transaction(), conn.cursor() as cursor:
                columns = (
                    "org, project, domain, key, output_uri, output_literals, source_identifier, "
                    "key_map, created_at, last_updated_at, last_accessed_at"
                )
                with cursor.copy(f"COPY cache_entries ({columns}) FROM STDIN") as copy:
                    for key, output, at in batch:
                        copy.write_row(
                            (
                                SCOPE.org,
                                SCOPE.project,
                                SCOPE.domain,
                                key,
                                None,
                                output,
                                _SOURCE,
                                "{}",
                                at,
                                at,
                                at,
                            )
                        )
        conn.execute("VACUUM ANALYZE cache_entries")


def _lookup_round(manager: CacheManager, size: int, lookups: int, seed: int) -> list[float]:
    """Return the latencies (microseconds) of ``lookups`` random-key gets."""
    rng = random.Random(seed)
    keys = [entry_key(rng.randrange(size)) for _ in range(lookups)]
    latencies = []
    clock = time.perf_counter_ns
    get = manager.get
    for key in keys:
        started = clock()
        get(SCOPE, key)
        latencies.append((clock() - started) / 1000)
    return latencies


def _check(manager: CacheManager, size: int) -> None:
    """The last loaded row reads back as written, and the catalog holds exactly ``size``."""
    row = manager.get(SCOPE, entry_key(size - 1))
    if row.output_literals != _output(size - 1) or row.source_identifier != _SOURCE:
        raise RuntimeError("bulk-loaded row does not read back as written")
    try:
        manager.get(SCOPE, entry_key(size))
    except NotFoundError:
        return
    raise RuntimeError(f"the {size}-entry catalog holds more entries (wrong catalog?)")


@dataclass
class _Rounds:
    """What the timed rounds saw, per catalog size: p50 and p95 of each round (us), and the
    minor page faults per lookup over all of them.
    """

    medians: dict[int, list[float]]
    p95s: dict[int, list[float]]
    faults: dict[int, float]


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed_rounds(
    managers: dict[int, CacheManager], tier: Tier, turn: Callable[[int], None], first_seed: int
) -> _Rounds:
    medians: dict[int, list[float]] = {size: [] for size in managers}
    p95s: dict[int, list[float]] = {size: [] for size in managers}
    faults = dict.fromkeys(managers, 0)
    blocks = max(1, tier.p6_lookups // BLOCK)
    for round_id in range(tier.p6_rounds):
        # Sizes take turns every BLOCK lookups, so machine noise that comes and goes
        # (other processes, CPU wake-ups) falls on every size alike.
        latencies: dict[int, list[float]] = {size: [] for size in managers}
        for block in range(blocks):
            for size, manager in managers.items():
                turn(size)
                seed = first_seed + round_id * blocks + block
                before = _minor_faults()
                latencies[size] += _lookup_round(manager, size, BLOCK, seed=seed)
                faults[size] += _minor_faults() - before
        for size, values in latencies.items():
            medians[size].append(statistics.median(values))
            p95s[size].append(percentile(values, 0.95))
    lookups = tier.p6_rounds * blocks * BLOCK
    return _Rounds(medians, p95s, {size: count / lookups for size, count in faults.items()})


def measure(
    database: str,
    managers: dict[int, CacheManager],
    tier: Tier,
    switch: Callable[[int], None] | None = None,
    prefault: Callable[[int], None] | None = None,
) -> list[Result]:
    """Time gets on each catalog (``managers`` by size), sizes taking turns; ``switch(size)``
    runs before each turn of ``size`` (PostgreSQL: point the one connection at its schema).
    With ``prefault`` (SQLite), the rounds run again after ``prefault(size)`` has read every
    catalog through the connection the gets use: the info row ``P6-<db>-large-warm``.
    """
    small, mid, large = tier.p6_sizes
    turn = switch or (lambda size: None)
    for size, manager in managers.items():
        turn(size)
        _check(manager, size)
        _lookup_round(manager, size, min(500, tier.p6_lookups), seed=-1)  # warm
    cold = _timed_rounds(managers, tier, turn, first_seed=0)
    results = [
        _result(database, label, size, small, cold, tier)
        for label, size in (("mid", mid), ("large", large))
    ]
    if prefault is not None:
        for size in managers:
            prefault(size)
        warm = _timed_rounds(managers, tier, turn, first_seed=10**6)
        results.append(_result(database, "large-warm", large, small, warm, tier))
    return results


def _result(
    database: str, label: str, size: int, small: int, rounds: _Rounds, tier: Tier
) -> Result:
    """The row comparing ``size`` with ``small`` in ``rounds``; only ``large`` has a target."""
    targeted = label == "large"
    measure = (
        f"Get p50 latency, random keys, {LABELS[database]}, {_count(size)} entries "
        f"(vs {_count(small)})"
    )
    if label == "large-warm":
        measure += ", after one read of every catalog through its connection"
    result = Result(
        id=f"P6-{database}-{label}",
        measure=measure,
        unit="us p50",
        target="<= 1.2x" if targeted else "(info)",
        direction="lower",
        limit=1.2 if targeted else None,
        ours_rounds=rounds.medians[size],
        baseline_rounds=rounds.medians[small],
    )
    result.extra = {
        "entries": size,
        "baseline_entries": small,
        "p95_us": statistics.median(rounds.p95s[size]),
        "baseline_p95_us": statistics.median(rounds.p95s[small]),
        "minor_faults_per_lookup": round(rounds.faults[size], 3),
        "baseline_minor_faults_per_lookup": round(rounds.faults[small], 3),
    }
    result.settle()
    if label != "mid" and tier.name != "full":
        result.notes = f"{tier.name} tier: {_count(size)} entries, not 10^6"
    progress(
        f"{result.id}: p50 {result.ours:.1f} us at {size} vs {result.baseline:.1f} us at "
        f"{small}; p95 {result.extra['p95_us']:.1f} vs {result.extra['baseline_p95_us']:.1f}; "
        f"minor faults per lookup {rounds.faults[size]:.2f} vs {rounds.faults[small]:.2f}"
    )
    return result


def _placeholders(database: str, tier: Tier, note: str) -> list[Result]:
    results = []
    for label in ("mid", "large"):
        results.append(
            Result(
                id=f"P6-{database}-{label}",
                measure=f"Get p50 latency vs catalog size, {LABELS[database]}",
                unit="us p50",
                target="<= 1.2x" if label == "large" else "(info)",
                direction="lower",
                limit=1.2 if label == "large" else None,
                notes=note,
            )
        )
    return results


def run(tier: Tier, postgres_admin: str | None) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="taskcache-bench-p6-") as folder:
        repositories: dict[int, Repository] = {}
        try:
            for size in tier.p6_sizes:
                path = Path(folder) / f"catalog-{size}.db"
                started = time.perf_counter()
                load_sqlite(path, size)
                progress(
                    f"P6 sqlite: loaded {size} entries in {time.perf_counter() - started:.1f} s"
                )
                repositories[size] = SqliteRepository(path)
            managers = {size: CacheManager(repo) for size, repo in repositories.items()}

            def prefault(size: int) -> None:
                # Every table page once, through the connection the gets use: its memory
                # mapping then holds them all, as a long-running process's comes to.
                with repositories[size]._session() as conn:
                    conn.execute(
                        "SELECT sum(length(key)), sum(length(output_literals)) FROM cache_entries"
                    ).fetchone()

            results.extend(measure("sqlite", managers, tier, prefault=prefault))
        finally:
            for repository in repositories.values():
                repository.close()
    if postgres_admin is None:
        results.extend(_placeholders("postgres", tier, "not run: no PostgreSQL server"))
        return results
    results.extend(_run_postgres(tier, postgres_admin))
    return results


def _schema(size: int) -> str:
    return f"p6_{size}"


def _on_schema(url: str, schema: str) -> str:
    """Return ``url`` whose sessions start with ``search_path`` = ``schema``."""
    parts = urlsplit(url)
    option = urlencode({"options": f"-c search_path={schema}"}, quote_via=quote)
    return urlunsplit(parts._replace(query=f"{parts.query}&{option}" if parts.query else option))


def _run_postgres(tier: Tier, admin: str) -> list[Result]:
    """One database, one schema per catalog size, and ONE connection for all the gets: a
    Get's latency here is mostly the loopback round trip to a backend process, which varies
    with where the scheduler puts that process, so every size must use the same backend.
    """
    import psycopg  # noqa: PLC0415

    from bench.pg import fresh_database  # noqa: PLC0415
    from taskcache.repositories.postgres import PostgresRepository, migrate  # noqa: PLC0415

    with fresh_database(admin, label="p6_") as url:
        for size in tier.p6_sizes:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {_schema(size)}")  # our own name: [a-z0-9_]
            schema_url = _on_schema(url, _schema(size))
            migrate(schema_url)
            started = time.perf_counter()
            load_postgres(schema_url, size)
            progress(f"P6 postgres: loaded {size} entries in {time.perf_counter() - started:.1f} s")
        repository = PostgresRepository(
            _on_schema(url, _schema(tier.p6_sizes[0])), min_size=1, max_size=1
        )
        try:

            def switch(size: int) -> None:
                # The pool's only connection: the next get runs on the same session.
                with repository._connection() as conn:
                    conn.execute(f"SET search_path TO {_schema(size)}")

            managers = {size: CacheManager(repository) for size in tier.p6_sizes}
            return list(measure("postgres", managers, tier, switch))
        finally:
            repository.close()
