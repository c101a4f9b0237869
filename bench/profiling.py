"""Where the time goes: cProfile of the in-process measure furthest from its target."""

from __future__ import annotations

import cProfile
import io
import pstats
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import Result, Tier

TOP_FUNCTIONS = 12


@dataclass(frozen=True)
class Profile:
    result_id: str
    text: str


def _target(result_id: str, tier: Tier) -> Callable[[], None] | None:
    if result_id.startswith("P4-"):
        from bench import p4_hashing  # noqa: PLC0415

        return p4_hashing.profile_target(result_id)
    if result_id.startswith("P3-"):
        from bench import p3_memoize  # noqa: PLC0415

        return p3_memoize.profile_target(tier)
    return None


def profile_worst(results: list[Result], tier: Tier) -> Profile | None:
    """Profile the worst-missed measure that runs in this process (P3, P4)."""
    candidates = sorted(
        (r for r in results if r.met is False and _target(r.id, tier) is not None),
        key=lambda r: r.shortfall(),
        reverse=True,
    )
    if not candidates:
        return None
    worst = candidates[0]
    target = _target(worst.id, tier)
    assert target is not None
    target()  # warm
    profiler = cProfile.Profile()
    profiler.enable()
    target()
    profiler.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.strip_dirs().sort_stats("tottime").print_stats(TOP_FUNCTIONS)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    header = next((line.strip() for line in lines if "function calls" in line), "")
    body = "\n".join(line for line in lines[start:] if line.strip())
    return Profile(worst.id, f"{header}\n\n{body}")
