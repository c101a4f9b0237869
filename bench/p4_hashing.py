"""P4: Flyte-compatible ``hash_literal_map`` against the floor: deterministic
``SerializeToString`` + sha256 of the same message.

Both hashing routes are measured: ``P4-<case>`` on the compiled core (the active route, which
is the pure-Python one where the extension is missing) and ``P4-<case>-python`` on the
pure-Python route. Each result records the route it ran on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from flyteidl2.core import literals_pb2

from bench.common import Result, Tier, alternate, progress, time_per_call
from bench.literals import literal_map
from taskcache import hashing
from taskcache.hashing import hash_literal_map

NESTED_FANOUT = 4
NESTED_DEPTH = 4
LIST_LENGTH = 10_000


def scalars() -> literals_pb2.LiteralMap:
    """10 scalar inputs: ints, floats, strings and booleans."""
    return literal_map(
        i0=1,
        i1=-42,
        i2=2**40,
        f0=0.5,
        f1=3.14159,
        s0="hello",
        s1="s3://bucket/some/prefix/file.parquet",
        s2="",
        b0=True,
        b1=False,
    )


def long_list() -> literals_pb2.LiteralMap:
    """One input: a 10 000-element list of integers."""
    return literal_map(xs=list(range(LIST_LENGTH)))


def _nested(depth: int) -> Any:
    if depth == 0:
        return depth
    return {f"k{i}": _nested(depth - 1) if depth > 1 else i for i in range(NESTED_FANOUT)}


def nested() -> literals_pb2.LiteralMap:
    """One input: maps nested 4 deep, 4 keys per level (256 integer leaves)."""
    return literal_map(m=_nested(NESTED_DEPTH))


def five_inputs() -> literals_pb2.LiteralMap:
    """The decorator's key inputs in P3: an int, a float, a str, a bool and an int."""
    return literal_map(count=3, scale=1.5, label="label-003", enabled=False, seed=1003)


# id -> (label, message builder, target ratio). The targets are about 1.5x what objecthash
# itself costs over the floor in tight C (issue #12).
CASES: dict[str, tuple[str, Callable[[], literals_pb2.LiteralMap], float]] = {
    "P4-scalars": ("10 scalar inputs", scalars, 3.5),
    "P4-list10k": ("a 10 000-element list", long_list, 8.0),
    "P4-nested4": ("maps nested depth 4 (fan-out 4)", nested, 6.6),
    "P4-inputs5": ("the 5-input key of P3", five_inputs, 2.3),
}
PYTHON_SUFFIX = "-python"


def routes() -> list[tuple[str, str]]:
    """Return ``(id suffix, route)`` pairs to measure: the active route, then pure Python."""
    return [("", hashing.hashing_route()), (PYTHON_SUFFIX, "python")]


def floor(message: literals_pb2.LiteralMap) -> bytes:
    """The baseline: deterministic serialization + sha256."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


def run(tier: Tier) -> list[Result]:
    results = []
    active = hashing.hashing_route()
    try:
        for suffix, route in routes():
            hashing.use_hashing_route(route)
            for case_id, (label, build, limit) in CASES.items():
                results.append(_measure(tier, case_id + suffix, label, build(), limit, route))
    finally:
        hashing.use_hashing_route(active)
    return results


def _measure(
    tier: Tier,
    result_id: str,
    label: str,
    message: literals_pb2.LiteralMap,
    limit: float,
    route: str,
) -> Result:
    result = Result(
        id=result_id,
        measure=f"hash_literal_map, {label}, {route} route "
        "(vs SerializeToString(deterministic)+sha256)",
        unit="us/hash (CPU)",
        target=f"<= {limit}x",
        direction="lower",
        limit=limit,
    )

    # CPU time of this thread: both sides are single-threaded CPU work, and on a shared
    # machine wall time mostly measures the wait for a core.
    def ours() -> float:
        return time_per_call(lambda: hash_literal_map(message), seconds, clock=time.thread_time)

    def baseline() -> float:
        return time_per_call(lambda: floor(message), seconds, clock=time.thread_time)

    seconds = tier.p4_min_round_seconds

    ours()  # warm the per-type plans
    ours_rounds, baseline_rounds = alternate(tier.p4_rounds, ours, baseline)
    result.ours_rounds = [value * 1e6 for value in ours_rounds]
    result.baseline_rounds = [value * 1e6 for value in baseline_rounds]
    result.extra["serialized_bytes"] = len(message.SerializeToString(deterministic=True))
    result.extra["hashing_route"] = route
    result.settle()
    progress(f"{result_id}: ours {result.ours:.1f} us, floor {result.baseline:.2f} us ({route})")
    return result


def profile_target(result_id: str) -> Callable[[], None]:
    """Return a callable hashing the P4 case ``result_id`` repeatedly on its route."""
    route = "python" if result_id.endswith(PYTHON_SUFFIX) else hashing.hashing_route()
    message = CASES[result_id.removesuffix(PYTHON_SUFFIX)][1]()

    def go() -> None:
        active = hashing.hashing_route()
        hashing.use_hashing_route(route)
        try:
            for _ in range(20):
                hash_literal_map(message)
        finally:
            hashing.use_hashing_route(active)

    return go
