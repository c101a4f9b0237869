"""taskcache.values makes the very literals (and LiteralTypes) of the Flyte 2 SDK."""

from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Optional

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import input_key
from flyte_sdk import sdk_literal, sdk_literal_type, sdk_variable
from taskcache import values


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Inner:
    when: datetime.datetime
    day: datetime.date
    span: datetime.timedelta
    color: Color


@dataclasses.dataclass
class Outer:
    name: str
    ratio: float
    flag: bool
    count: int
    tags: list[str]
    scores: dict[str, float]
    by_id: dict[int, str]
    inner: Inner
    maybe: Optional[int] = None  # noqa: UP045 -- the typing spelling, as users write it
    either: int | str = 0
    inners: list[Inner] = dataclasses.field(default_factory=list)


class Model(pydantic.BaseModel):
    name: str
    color: Color
    level: Level
    colors: list[Color]
    maybe_color: Color | None = None  # the SDK writes its value, not its name
    optional_color: Optional[Color] = None  # noqa: UP045 -- the SDK writes its name
    when: datetime.datetime
    numbers: dict[str, list[float]]


class Wrapper(pydantic.BaseModel):
    model: Model
    models: list[Model]


INNER = Inner(
    when=datetime.datetime(2024, 5, 6, 7, 8, 9, 10, tzinfo=datetime.UTC),
    day=datetime.date(2023, 1, 31),
    span=datetime.timedelta(seconds=90, microseconds=5),
    color=Color.GREEN,
)
MODEL = Model(
    name="m",
    color=Color.RED,
    level=Level.LOW,
    colors=[Color.GREEN, Color.RED],
    maybe_color=Color.GREEN,
    optional_color=Color.GREEN,
    when=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC),
    numbers={"a": [1.0, 2.5]},
)

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
    ({}, dict),
    ({"b": [1, 2.5, None], "a": {"x": True}, "c": b"raw", "d": "s"}, dict),
    ({1: "one", 2: "two"}, dict[int, str]),
    ({"a": 1.5}, dict[Any, Any]),
    (INNER, Inner),
    (
        Outer(
            name="o",
            ratio=0.25,
            flag=True,
            count=7,
            tags=["x", "y"],
            scores={"s": 1.0},
            by_id={3: "three"},
            inner=INNER,
            maybe=5,
            either="e",
            inners=[INNER, INNER],
        ),
        Outer,
    ),
    (Outer("o", 1.0, False, 0, [], {}, {}, INNER), Outer),
    (MODEL, Model),
    (Wrapper(model=MODEL, models=[MODEL]), Wrapper),
    ([INNER], list[Inner]),
    ({"m": MODEL}, dict[str, Model]),
    (INNER, Inner | None),
    (MODEL, Model | int),
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
    assert input_key(ours) == input_key(theirs)


@pytest.mark.parametrize("python_type", sorted({c[1] for c in SDK_NATIVE}, key=repr))
def test_literal_type_is_the_sdk_literal_type(python_type: Any) -> None:
    assert values.literal_type(python_type) == sdk_literal_type(python_type)


@pytest.mark.parametrize("python_type", [int, list[str], Optional[Inner], Model, dict])  # noqa: UP045
def test_interface_variable_is_the_sdk_variable(python_type: Any) -> None:
    assert values.interface_variable(python_type) == sdk_variable(python_type)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
)


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=8,
    )
)
def test_untyped_dicts_are_the_sdk_msgpack_bytes(data: Any) -> None:
    value = {"data": data}
    assert values.to_literal(value, dict) == sdk_literal(value, dict)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=4),
        st.lists(st.datetimes(timezones=st.just(datetime.UTC)) | st.none(), max_size=3),
        max_size=3,
    )
)
def test_nested_maps_lists_and_optionals_are_the_sdk_literals(
    value: dict[str, list[datetime.datetime | None]],
) -> None:
    python_type = dict[str, list[Optional[datetime.datetime]]]  # noqa: UP045 -- the SDK's spelling
    ours = values.to_literal(value, python_type)
    assert ours == sdk_literal(value, python_type)
