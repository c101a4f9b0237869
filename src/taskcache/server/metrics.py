"""Prometheus metrics of one server, in a registry of its own (not the process-global one).

It counts what it is told; it must not inspect requests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from taskcache.repositories.base import PoolStats, ReservationRow

METRICS_CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Cache calls are sub-millisecond to tens of milliseconds; the tail shows database trouble.
_LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# Why the background cleanup deletes an entry: past its TTL, or over the size cap.
_EVICTION_REASONS: Final = ("expired", "size")


class ServerMetrics:
    """Counters, histogram and gauge of one server process (``worker``: its index among a
    supervisor's workers, from 1; 1 alone); :meth:`render` returns the text format.
    """

    def __init__(self, *, worker: int = 1) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Per-call series, looked up once per label set: labels() validates and locks.
        self._request_series: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        Gauge(
            "taskcache_worker",
            "1, labelled with this process's worker index and pid (with --workers, each "
            "scrape is answered by one worker and shows that worker's figures).",
            ("worker", "pid"),
            registry=self.registry,
        ).labels(str(worker), str(os.getpid())).set(1)
        self.requests = Counter(
            "taskcache_requests",
            "RPCs handled, by transport, service, method and status code.",
            ("transport", "service", "method", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "taskcache_request_duration_seconds",
            "RPC handling time, by transport, service and method.",
            ("transport", "service", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.hits = self._counter("taskcache_cache_hits", "Get calls that found an entry.")
        self.misses = self._counter("taskcache_cache_misses", "Get calls that found no entry.")
        self.puts = self._counter("taskcache_puts", "Entries written (created or overwritten).")
        self.put_conflicts = self._counter(
            "taskcache_put_conflicts", "Create-only puts refused because a live entry existed."
        )
        self.reservations = self._counter(
            "taskcache_reservations",
            "GetOrExtendReservation outcomes: granted (created or extended for the caller), "
            "taken_over (granted after another owner's reservation expired) or contended "
            "(held by another owner).",
            "outcome",
            ("granted", "taken_over", "contended"),
        )
        self.evicted_entries = self._counter(
            "taskcache_evicted_entries",
            "Entries deleted by the background cleanup: expired (past their TTL) or size "
            "(least recently used, over --max-bytes).",
            "reason",
            _EVICTION_REASONS,
        )
        self.evicted_bytes = self._counter(
            "taskcache_evicted_bytes",
            "Stored bytes (inline outputs plus recorded blob sizes) of the entries the "
            "background cleanup deleted, by reason.",
            "reason",
            _EVICTION_REASONS,
        )
        self.evicted_blobs = self._counter(
            "taskcache_evicted_blobs",
            "Blobs under --storage the background cleanup deleted with their entries.",
        )
        self.cleanup_runs = self._counter(
            "taskcache_cleanup_runs",
            "Background cleanup runs: completed, locked_out (another replica was cleaning) "
            "or failed.",
            "outcome",
            ("completed", "locked_out", "failed"),
        )
        self.database_up = Gauge(
            "taskcache_database_up",
            "1 if the last database ping succeeded, else 0.",
            registry=self.registry,
        )

    def _counter(
        self, name: str, documentation: str, label: str | None = None, values: tuple[str, ...] = ()
    ) -> Counter:
        """Return a new counter in this registry, by ``label`` if given; the series of each of
        ``values`` exist from the start, so dashboards see zeros before the first count.
        """
        counter = Counter(name, documentation, (label,) if label else (), registry=self.registry)
        for value in values:
            counter.labels(value)
        return counter

    def watch_pool(self, stats: Callable[[], PoolStats | None]) -> None:
        """Export the repository's connection-pool figures, read at every scrape.

        Repositories without a pool (``stats()`` returns None) export nothing.
        """
        if stats() is None:
            return
        for name, description, pick in (
            ("taskcache_db_pool_connections", "Open database connections.", _pool_size),
            ("taskcache_db_pool_idle", "Idle database connections in the pool.", _pool_idle),
            ("taskcache_db_pool_waiting", "Calls waiting for a connection.", _pool_waiting),
        ):
            gauge = Gauge(name, description, registry=self.registry)
            gauge.set_function(_reader(stats, pick))

    def watch_gate(self, in_flight: Callable[[], int], breaker_open: Callable[[], bool]) -> None:
        """Export the calls in flight and whether the database breaker refuses calls, read
        at every scrape.
        """
        running = Gauge(
            "taskcache_requests_in_flight",
            "RPCs admitted and not yet answered (beyond --max-in-flight: RESOURCE_EXHAUSTED).",
            registry=self.registry,
        )
        running.set_function(lambda: float(in_flight()))
        refusing = Gauge(
            "taskcache_database_breaker_open",
            "1 while calls are refused UNAVAILABLE at once (the database is known down), else 0.",
            registry=self.registry,
        )
        refusing.set_function(lambda: 1.0 if breaker_open() else 0.0)

    def observe_request(
        self, transport: str, service: str, method: str, code: str, seconds: float
    ) -> None:
        """Count one finished RPC and record its duration."""
        labels = (transport, service, method, code)
        series = self._request_series.get(labels)
        if series is None:
            series = (
                self.requests.labels(transport, service, method, code),
                self.latency.labels(transport, service, method),
            )
            self._request_series[labels] = series
        count, latency = series
        count.inc()
        latency.observe(seconds)

    def count_reservation(self, row: ReservationRow, owner_id: str) -> None:
        """Count one GetOrExtendReservation answered with ``row`` for ``owner_id``: contended
        (another owner holds it), taken_over (granted after an expired holder) or granted.
        """
        if row.owner_id != owner_id:
            outcome = "contended"
        elif row.taken_over_from is not None:
            outcome = "taken_over"
        else:
            outcome = "granted"
        self.reservations.labels(outcome=outcome).inc()

    def render(self) -> bytes:
        """Return all metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)


def _pool_size(stats: PoolStats) -> int:
    return stats.size


def _pool_idle(stats: PoolStats) -> int:
    return stats.available


def _pool_waiting(stats: PoolStats) -> int:
    return stats.waiting


def _reader(
    stats: Callable[[], PoolStats | None], pick: Callable[[PoolStats], int]
) -> Callable[[], float]:
    def read() -> float:
        current = stats()
        return float(pick(current)) if current is not None else 0.0

    return read
