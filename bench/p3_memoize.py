"""P3: embedded memoized call overhead on hits, against diskcache and joblib.

The same function (5 small inputs, 1 KiB string output), the same 64 argument tuples, all
pre-populated; a round times ``calls`` hits cycling through them. Ours is
``@taskcache.cached`` on an embedded SQLite catalog (``taskcache.open``): bind the arguments,
convert them with :mod:`taskcache.values`, compute the Flyte key, ``get`` (a miss would go on
to ``get_or_compute``), decode the output. Repeated calls find their key remembered; the
``P3-new-keys`` row (info) builds every key afresh, as the first call with new arguments does.

Times are CPU time of the calling thread (``time.thread_time``): every variant runs in this
thread without waiting on anything, and on a shared machine wall time would also count the
time other processes hold the CPU.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import taskcache
from bench.common import Result, Tier, alternate, progress
from bench.literals import kib_text

ARGUMENT_SETS = 64


def task(count: int, scale: float, label: str, enabled: bool, seed: int) -> str:
    """The memoized function: five small inputs, a 1 KiB output."""
    return kib_text(count + seed)[: -len(label)] + label if enabled else kib_text(seed)


def arguments() -> list[tuple[int, float, str, bool, int]]:
    """Return the argument tuples every variant is called with."""
    return [(i, i * 0.5, f"label-{i:03d}", i % 2 == 0, 1000 + i) for i in range(ARGUMENT_SETS)]


def _timer(
    function: Callable[..., Any], calls: int, before_each: Callable[[], None] | None = None
) -> Callable[[], float]:
    args = arguments()

    def run() -> float:
        cycle = itertools.cycle(args)
        clock = time.thread_time
        started = clock()
        if before_each is None:
            for _ in range(calls):
                function(*next(cycle))
        else:
            for _ in range(calls):
                before_each()
                function(*next(cycle))
        return (clock() - started) / calls * 1e6

    return run


def _forgetting(cached: Any) -> Callable[[], None]:
    """Return what makes ``cached``'s next call build its key afresh (forget remembered keys)."""
    return cached._signature._remembered.clear  # type: ignore[no-any-return]


def populate(function: Callable[..., Any]) -> None:
    """Call ``function`` once per argument tuple (misses), then check that all are hits."""
    expected = {tuple(a): task(*a) for a in arguments()}
    for args, value in expected.items():
        assert function(*args) == value
    for args, value in expected.items():  # now all hits
        assert function(*args) == value


def run(tier: Tier) -> list[Result]:
    results = [
        Result(
            id="P3-diskcache",
            measure="@taskcache.cached hit, embedded SQLite, 5 inputs, 1 KiB out "
            "(vs diskcache.memoize)",
            unit="CPU us/call",
            target="<= 1.0x",
            direction="lower",
            limit=1.0,
        ),
        Result(
            id="P3-joblib",
            measure="@taskcache.cached hit, embedded SQLite, 5 inputs, 1 KiB out "
            "(vs joblib.Memory.cache)",
            unit="CPU us/call",
            target="<= 0.5x",
            direction="lower",
            limit=0.5,
        ),
        Result(
            id="P3-new-keys",
            measure="@taskcache.cached hit, every key built afresh (none remembered), "
            "embedded SQLite, 5 inputs, 1 KiB out (vs diskcache.memoize)",
            unit="CPU us/call",
            target="(info)",
            direction="lower",
            limit=None,
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="taskcache-bench-p3-") as folder:
        root = Path(folder)
        client = taskcache.open(root / "ours")
        try:
            ours = taskcache.cached(catalog=client)(task)
            populate(ours)
            ours_timer = _timer(ours, tier.p3_calls)
            fresh_timer = _timer(ours, tier.p3_calls, _forgetting(ours))
            baselines = _baselines(root)
            baselines["diskcache, new keys"] = baselines["diskcache"]
            for result, (name, baseline) in zip(results, baselines.items(), strict=True):
                timer = fresh_timer if result.id == "P3-new-keys" else ours_timer
                if baseline is None:
                    result.notes = f"{name} is not installed (pip install -e '.[bench]')"
                    result.ours_rounds = [timer() for _ in range(tier.p3_rounds)]
                    result.settle()
                    continue
                populate(baseline)
                baseline_timer = _timer(baseline, tier.p3_calls)
                timer()  # warm both once
                baseline_timer()
                result.ours_rounds, result.baseline_rounds = alternate(
                    tier.p3_rounds, timer, baseline_timer
                )
                result.settle()
                progress(f"{result.id}: ours {result.ours:.1f} us, {name} {result.baseline:.1f} us")
        finally:
            client.close()
    return results


def _baselines(root: Path) -> dict[str, Callable[..., Any] | None]:
    found: dict[str, Callable[..., Any] | None] = {}
    try:
        import diskcache  # type: ignore[import-untyped]  # noqa: PLC0415 - bench extra

        found["diskcache"] = diskcache.Cache(str(root / "diskcache")).memoize()(task)
    except ImportError:
        found["diskcache"] = None
    try:
        import joblib  # type: ignore[import-untyped]  # noqa: PLC0415 - bench extra

        found["joblib"] = joblib.Memory(str(root / "joblib"), verbose=0).cache(task)
    except ImportError:
        found["joblib"] = None
    return found


def profile_target(tier: Tier) -> Callable[[], None]:
    """Return a callable running ours' hits, for the profiler (its folder lives as long)."""
    folder = tempfile.TemporaryDirectory(prefix="taskcache-bench-p3-profile-")
    client = taskcache.open(Path(folder.name) / "ours")
    ours = taskcache.cached(catalog=client)(task)
    populate(ours)
    timer = _timer(ours, max(tier.p3_calls, 500))

    def go(folder: tempfile.TemporaryDirectory[str] = folder) -> None:
        timer()

    return go
