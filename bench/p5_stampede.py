"""P5: stampede. 32 identical calls of a slow task at the same instant: 4 worker processes,
8 threads each.

Ours: ``@taskcache.cached`` (serialize=True, its default) on one embedded SQLite catalog
shared by the 4 processes: ``get_or_compute`` gets, then takes the key's reservation; the
holder re-checks, computes under a heartbeat, puts and releases, the others poll with capped
exponential backoff until the entry appears. Baseline: ``diskcache.Cache.memoize`` (no
serialization). Executions are counted by appending to a file; wall time runs from the
common start instant until the last of the 32 calls returned.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

from bench.common import Result, Tier, progress
from bench.literals import kib_text

PROCESSES = 4
THREADS = 8
START_DELAY = 1.5  # seconds between sending a round and its start instant

# Set in each worker process before a round.
_COUNTER: Path | None = None
_TASK_SECONDS = 0.5


def slow_task(round_id: int, label: str) -> str:
    """The stampeded task: counts its execution, sleeps, returns 1 KiB."""
    assert _COUNTER is not None
    with _COUNTER.open("a") as counter:
        counter.write(f"{os.getpid()}\n")
    time.sleep(_TASK_SECONDS)
    return kib_text(round_id)[: -len(label)] + label


def _memoized(variant: str, folder: Path) -> tuple[Callable[..., Any], Callable[[], None]]:
    if variant == "ours":
        import taskcache  # noqa: PLC0415

        client = taskcache.open(folder / "ours")
        return taskcache.cached(catalog=client)(slow_task), client.close
    import diskcache  # type: ignore[import-untyped]  # noqa: PLC0415 - bench extra

    cache = diskcache.Cache(str(folder / "diskcache"))
    return cache.memoize()(slow_task), cache.close


def _simultaneous_calls(function: Callable[..., Any], round_id: int, start_at: float) -> float:
    """Make THREADS calls starting at ``start_at``; return when the last one returned."""
    ends: list[float] = []
    values: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        try:
            values.append(function(round_id, "stampede"))
        except BaseException as error:
            errors.append(error)
        ends.append(time.time())

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    if len(set(values)) != 1:
        raise RuntimeError(f"calls returned {len(set(values))} different values")
    return max(ends)


def _worker(inbox: Any, outbox: Any) -> None:
    """A worker process: for each (variant, folder, counter, task seconds, round, start
    instant) run THREADS simultaneous calls and report when the last one returned.
    """
    global _COUNTER, _TASK_SECONDS  # per-process settings of slow_task
    while (command := inbox.get()) is not None:
        variant, folder, counter, task_seconds, round_id, start_at = command
        _COUNTER, _TASK_SECONDS = Path(counter), task_seconds
        try:
            function, close = _memoized(variant, Path(folder))
            try:
                outbox.put(("ok", _simultaneous_calls(function, round_id, start_at)))
            finally:
                close()
        except BaseException as error:
            outbox.put(("error", repr(error)))


class _Pool:
    """PROCESSES spawned workers, each with its own inbox."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.outbox = context.Queue()
        self.inboxes = [context.Queue() for _ in range(PROCESSES)]
        self.processes: list[SpawnProcess] = [
            context.Process(target=_worker, args=(inbox, self.outbox), daemon=True)
            for inbox in self.inboxes
        ]
        for process in self.processes:
            process.start()

    def round(
        self, variant: str, folder: Path, round_id: int, task_seconds: float
    ) -> tuple[float, int]:
        """Run one round; return (wall seconds, executions)."""
        counter = folder / f"executions-{variant}-{round_id}.txt"
        counter.touch()
        start_at = time.time() + START_DELAY
        for inbox in self.inboxes:
            inbox.put((variant, str(folder), str(counter), task_seconds, round_id, start_at))
        ends = []
        for _ in self.inboxes:
            status, value = self.outbox.get(timeout=120)
            if status != "ok":
                raise RuntimeError(f"P5 worker failed: {value}")
            ends.append(value)
        executions = len(counter.read_text().splitlines())
        return max(ends) - start_at, executions

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()


def run(tier: Tier) -> list[Result]:
    result = Result(
        id="P5-stampede",
        measure=(
            f"stampede: {PROCESSES * THREADS} identical calls of a {tier.p5_task_seconds} s task "
            f"on {PROCESSES} processes, wall time; ours @taskcache.cached (vs diskcache.memoize)"
        ),
        unit="s wall",
        target="exactly 1 execution",
        direction="lower",
        limit=None,
    )
    try:
        import diskcache  # noqa: F401, PLC0415
    except ImportError:
        has_diskcache = False
    else:
        has_diskcache = True
    ours_executions: list[int] = []
    baseline_executions: list[int] = []
    with tempfile.TemporaryDirectory(prefix="taskcache-bench-p5-") as folder:
        pool = _Pool()
        try:
            for round_id in range(tier.p5_rounds):
                wall, executions = pool.round("ours", Path(folder), round_id, tier.p5_task_seconds)
                result.ours_rounds.append(wall)
                ours_executions.append(executions)
                if has_diskcache:
                    wall, executions = pool.round(
                        "diskcache", Path(folder), round_id, tier.p5_task_seconds
                    )
                    result.baseline_rounds.append(wall)
                    baseline_executions.append(executions)
        finally:
            pool.close()
    result.settle()
    result.met = all(count == 1 for count in ours_executions)
    result.extra = {
        "ours_executions": ours_executions,
        "baseline_executions": baseline_executions,
        "task_seconds": tier.p5_task_seconds,
    }
    executions_text = "/".join(map(str, ours_executions))
    baseline_text = "/".join(map(str, baseline_executions)) or "n/a"
    result.notes = f"executions per round: ours {executions_text}, diskcache {baseline_text}" + (
        "" if has_diskcache else "; diskcache not installed"
    )
    progress(
        f"P5: ours {statistics.median(result.ours_rounds):.2f} s ({executions_text} executions), "
        f"diskcache {baseline_text} executions"
    )
    return [result]
