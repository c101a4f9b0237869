"""taskcache.values makes the very literals (and LiteralTypes) of the Flyte 2 SDK."""

from __future__ import annotations

import datetime
import enum
from typing import Any, Optional

import pytest

from flyte_sdk import key_of, sdk_literal, sdk_literal_type
from taskcache import values


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))

SDK_NATIVE: list[tuple[object, Any]] = [
    (None, type(None)),
    (True, bool),
    (False, bool),
    (0, int),
    (-(2**63), int),
    (2**63 - 1, int),
    (2.5, float),
    (-0.0, float),
    (float("inf"), float),
    ("", str),
    ("héllo\n", str),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, 123456), datetime.datetime),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=PLUS_TWO), datetime.datetime),
    (datetime.datetime(1969, 12, 31, 23, 59, 59, tzinfo=datetime.UTC), datetime.datetime),
    (datetime.date(2024, 2, 29), datetime.date),
    (datetime.timedelta(days=-1, seconds=3, microseconds=5), datetime.timedelta),
    (datetime.timedelta(0), datetime.timedelta),
    (Color.GREEN, Color),
    (Level.HIGH, Level),
    ([], list[int]),
    ([1, 2, 3], list[int]),
    ([[1.5], []], list[list[float]]),
    ({}, dict[str, int]),
    ({"b": 2, "a": 1}, dict[str, int]),
    ({"a": [Color.RED]}, dict[str, list[Color]]),
    (None, Optional[int]),  # noqa: UP045 -- the typing spelling is a case of its own
    (3, Optional[int]),  # noqa: UP045
    (None, int | None),
    ("s", int | str),
    (4, int | str),
    ([1], list[int] | None),
    ({"k": None}, dict[str, int | None]),
]


def _id(case: tuple[object, Any]) -> str:
    return f"{values.literal_type(case[1]).WhichOneof('type')}-{case[0]!r:.30}"


@pytest.mark.parametrize(("value", "python_type"), SDK_NATIVE, ids=[_id(c) for c in SDK_NATIVE])
def test_literal_is_the_sdk_literal(value: object, python_type: Any) -> None:
    ours = values.to_literal(value, python_type)
    theirs = sdk_literal(value, python_type)
    assert ours == theirs
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(
        deterministic=True
    )
    assert key_of(ours) == key_of(theirs)


@pytest.mark.parametrize("python_type", sorted({c[1] for c in SDK_NATIVE}, key=repr))
def test_literal_type_is_the_sdk_literal_type(python_type: Any) -> None:
    assert values.literal_type(python_type) == sdk_literal_type(python_type)
