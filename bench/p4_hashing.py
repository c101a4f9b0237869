"""P4: Flyte-compatible ``hash_literal_map`` against the floor: deterministic
``SerializeToString`` + sha256 of the same message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flyteidl2.core import literals_pb2

from bench.common import Result, Tier, alternate, progress, time_per_call
from bench.literals import literal_map
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


CASES: dict[str, tuple[str, Callable[[], literals_pb2.LiteralMap]]] = {
    "P4-scalars": ("10 scalar inputs", scalars),
    "P4-list10k": ("a 10 000-element list", long_list),
    "P4-nested4": ("maps nested depth 4 (fan-out 4)", nested),
}


def floor(message: literals_pb2.LiteralMap) -> bytes:
    """The baseline: deterministic serialization + sha256."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


def run(tier: Tier) -> list[Result]:
    results = []
    for result_id, (label, build) in CASES.items():
        message = build()
        result = Result(
            id=result_id,
            measure=f"hash_literal_map, {label} (vs SerializeToString(deterministic)+sha256)",
            unit="us/hash",
            target="<= 2.0x",
            direction="lower",
            limit=2.0,
        )

        def ours(message: literals_pb2.LiteralMap = message) -> float:
            return time_per_call(lambda: hash_literal_map(message), tier.p4_min_round_seconds) * 1e6

        def baseline(message: literals_pb2.LiteralMap = message) -> float:
            return time_per_call(lambda: floor(message), tier.p4_min_round_seconds) * 1e6

        ours()  # warm the per-field plans
        result.ours_rounds, result.baseline_rounds = alternate(tier.p4_rounds, ours, baseline)
        result.extra["serialized_bytes"] = len(message.SerializeToString(deterministic=True))
        result.settle()
        progress(f"{result_id}: ours {result.ours:.1f} us, floor {result.baseline:.2f} us")
        results.append(result)
    return results


def profile_target(case: str) -> Callable[[], None]:
    """Return a callable hashing the P4 case ``case`` repeatedly, for the profiler."""
    message = CASES[case][1]()

    def go() -> None:
        for _ in range(20):
            hash_literal_map(message)

    return go
