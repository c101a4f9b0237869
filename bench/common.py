"""What every benchmark shares: tiers, results, A/B alternation, statistics, progress."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["higher", "lower"]

LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "connect": "Connect", "grpc": "gRPC"}


@dataclass(frozen=True)
class Tier:
    """How big each benchmark runs. ``full`` is ``make bench``; ``quick`` ``make bench-quick``;
    ``smoke`` only proves the harness works (a fast check while editing bench/).
    """

    name: str
    # P1: Get-hit throughput over the network.
    p1_clients: int
    p1_round_seconds: float
    p1_warmup_seconds: float
    p1_rounds: int
    # P2: reservations under contention.
    p2_owners: int
    p2_keys: int
    p2_round_seconds: float
    p2_rounds: int
    # P3: embedded memoized call overhead.
    p3_calls: int
    p3_rounds: int
    # P4: hash_literal_map against serialize + sha256.
    p4_min_round_seconds: float
    p4_rounds: int
    # P5: stampede.
    p5_task_seconds: float
    p5_rounds: int
    # P6: Get latency against catalog size.
    p6_sizes: tuple[int, int, int]
    p6_lookups: int
    p6_rounds: int
    # P7: takeover after the owner is killed.
    p7_waiters: int
    p7_heartbeat_seconds: float
    p7_rounds: int
    # Extras.
    open_repeats: int = 20
    notes: str = ""


TIERS: dict[str, Tier] = {
    "full": Tier(
        name="full",
        p1_clients=16,
        p1_round_seconds=3.0,
        p1_warmup_seconds=0.5,
        p1_rounds=5,
        p2_owners=64,
        p2_keys=8,
        p2_round_seconds=2.0,
        p2_rounds=5,
        p3_calls=2000,
        p3_rounds=7,
        p4_min_round_seconds=0.3,
        p4_rounds=7,
        p5_task_seconds=0.5,
        p5_rounds=3,
        p6_sizes=(1_000, 100_000, 1_000_000),
        p6_lookups=5000,
        p6_rounds=5,
        p7_waiters=8,
        p7_heartbeat_seconds=0.5,
        p7_rounds=3,
    ),
    "quick": Tier(
        name="quick",
        p1_clients=16,
        p1_round_seconds=1.0,
        p1_warmup_seconds=0.3,
        p1_rounds=3,
        p2_owners=64,
        p2_keys=8,
        p2_round_seconds=0.7,
        p2_rounds=3,
        p3_calls=500,
        p3_rounds=5,
        p4_min_round_seconds=0.1,
        p4_rounds=5,
        p5_task_seconds=0.5,
        p5_rounds=2,
        p6_sizes=(1_000, 10_000, 100_000),
        p6_lookups=2000,
        p6_rounds=3,
        p7_waiters=8,
        p7_heartbeat_seconds=0.5,
        p7_rounds=1,
        notes="quick tier: short rounds, P6 at 10^3/10^4/10^5 entries",
    ),
    "smoke": Tier(
        name="smoke",
        p1_clients=16,
        p1_round_seconds=0.3,
        p1_warmup_seconds=0.1,
        p1_rounds=1,
        p2_owners=64,
        p2_keys=8,
        p2_round_seconds=0.3,
        p2_rounds=1,
        p3_calls=50,
        p3_rounds=1,
        p4_min_round_seconds=0.01,
        p4_rounds=1,
        p5_task_seconds=0.2,
        p5_rounds=1,
        p6_sizes=(100, 1_000, 3_000),
        p6_lookups=100,
        p6_rounds=1,
        p7_waiters=4,
        p7_heartbeat_seconds=0.2,
        p7_rounds=1,
        open_repeats=2,
        notes="smoke tier: proves the harness only; its numbers mean nothing",
    ),
}


@dataclass
class Result:
    """One row of the table and of ``bench/results.json``.

    ``ours``/``baseline`` are medians over rounds in ``unit``; ``ratio`` is ours/baseline
    (for times lower is better, for throughputs higher is better: see ``direction``).
    """

    id: str
    measure: str
    unit: str
    target: str
    direction: Direction
    limit: float | None
    ours: float | None = None
    baseline: float | None = None
    ours_rounds: list[float] = field(default_factory=list)
    baseline_rounds: list[float] = field(default_factory=list)
    met: bool | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    def settle(self) -> None:
        """Fill the medians from the rounds and decide ``met`` against ``limit``."""
        if self.ours_rounds:
            self.ours = statistics.median(self.ours_rounds)
        if self.baseline_rounds:
            self.baseline = statistics.median(self.baseline_rounds)
        ratio = self.ratio
        if self.limit is not None and ratio is not None:
            self.met = ratio >= self.limit if self.direction == "higher" else ratio <= self.limit

    def shortfall(self) -> float:
        """How far the ratio is from its target (>1 means missed by that factor)."""
        ratio = self.ratio
        if self.limit is None or ratio is None or ratio <= 0:
            return 0.0
        return self.limit / ratio if self.direction == "higher" else ratio / self.limit

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "measure": self.measure,
            "ours": self.ours,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "unit": self.unit,
            "ours_spread": spread(self.ours_rounds),
            "baseline_spread": spread(self.baseline_rounds),
            "ours_rounds": self.ours_rounds,
            "baseline_rounds": self.baseline_rounds,
            "notes": self.notes,
            **({"extra": self.extra} if self.extra else {}),
        }


def spread(values: Sequence[float]) -> list[float] | None:
    """Return ``[min, max]`` of ``values`` (None when empty)."""
    return [min(values), max(values)] if values else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (0 < fraction <= 1)."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[index]


def alternate(
    rounds: int, ours: Callable[[], float], baseline: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run ``ours``, ``baseline``, ``ours``, ``baseline``, ... ``rounds`` times each."""
    ours_values: list[float] = []
    baseline_values: list[float] = []
    for _ in range(rounds):
        ours_values.append(ours())
        baseline_values.append(baseline())
    return ours_values, baseline_values


def time_per_call(
    function: Callable[[], Any],
    min_seconds: float,
    *,
    min_calls: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Return the mean seconds per call of ``function`` over at least ``min_seconds``.

    ``clock`` is wall time by default; ``time.thread_time`` measures CPU time of this thread
    (for single-threaded CPU-bound work on a shared machine, where waiting for a core is not
    the code's cost).
    """
    calls = 0
    started = clock()
    elapsed = 0.0
    while calls < min_calls or elapsed < min_seconds:
        function()
        calls += 1
        elapsed = clock() - started
    return elapsed / calls


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """Print a progress line to stderr (the table goes to stdout)."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)
