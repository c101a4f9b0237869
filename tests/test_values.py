"""taskcache.values: errors, registration, the pickle fallback, stable encodings, round trips."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import os
import subprocess
import sys
import textwrap
from typing import Annotated, Any, Optional

import pydantic
import pytest
from flyteidl2.core import literals_pb2, types_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import input_key
from taskcache import values
from taskcache.hashing import hash_literal_map


class Opaque:
    def __init__(self, payload: int) -> None:
        self.payload = payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.payload == self.payload

    def __hash__(self) -> int:
        return self.payload


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Permission(enum.Flag):
    READ = 1
    WRITE = 2


class Plain(enum.Enum):
    ONE = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Event:
    when: datetime.datetime
    color: Color
    tags: list[str]
    span: datetime.timedelta | None = None


class Reading(pydantic.BaseModel):
    color: Color
    maybe: Optional[Color] = None  # noqa: UP045 -- the SDK writes these by name
    other: Color | None = None  # and these by value
    colors: list[Color] = []
    values: dict[str, float] = {}


# --- errors ------------------------------------------------------------------------------


def test_a_type_without_converter_is_a_type_error_naming_it_and_the_ways_out() -> None:
    with pytest.raises(values.NoConverterError) as caught:
        values.to_literal(Opaque(1))
    error = caught.value
    assert isinstance(error, TypeError)
    assert error.python_type is Opaque
    message = str(error)
    assert "Opaque" in message
    assert "register" in message
    assert "ignore=" in message
    assert "pickle_fallback" in message
    assert f"parameter 'x': {error}".startswith("parameter 'x': no converter for type Opaque")


def test_a_nested_type_without_converter_names_the_nested_type() -> None:
    with pytest.raises(values.NoConverterError) as caught:
        values.to_literal([Opaque(1)], list[Opaque])
    assert caught.value.python_type is Opaque
    with pytest.raises(values.NoConverterError):
        values.literal_type(dict[str, Opaque])


@pytest.mark.parametrize("python_type", [list, set, tuple])
def test_a_bare_container_hint_asks_for_element_types(python_type: Any) -> None:
    with pytest.raises(values.NoConverterError, match="element types"):
        values.literal_type(python_type)


@pytest.mark.parametrize("enum_type", [Permission, Plain])
def test_enums_the_sdk_refuses_have_no_converter(enum_type: Any) -> None:
    with pytest.raises(values.NoConverterError):
        values.literal_type(enum_type)


@pytest.mark.parametrize(
    ("value", "python_type"),
    [
        ("1", int),
        (True, int),
        (1, str),
        (1.5, int),
        ("x", float),
        ((1,), list[int]),
        ({1: 2}, dict[str, int]),
        ([1], tuple[int]),
        ((1, 2), tuple[int]),
        ("RED", Color),
        (1.5, int | str),
    ],
)
def test_a_value_of_another_type_is_a_type_error(value: object, python_type: Any) -> None:
    with pytest.raises(TypeError) as caught:
        values.to_literal(value, python_type)
    assert not isinstance(caught.value, values.NoConverterError)


def test_a_literal_of_another_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="does not hold"):
        values.from_literal(values.to_literal("x"), int)
    with pytest.raises(TypeError):
        values.from_literal(values.to_literal(1), list[int])


def test_an_int_past_64_bits_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="does not fit"):
        values.to_literal(2**63)


def test_an_int_is_taken_as_a_float() -> None:
    assert values.to_literal(3, float) == values.to_literal(3.0, float)


# --- the pickle fallback -----------------------------------------------------------------


def test_pickle_fallback_is_explicit_and_reads_back() -> None:
    literal = values.to_literal(Opaque(7), pickle_fallback=True)
    assert literal.scalar.binary.tag == values.PICKLE_TAG
    assert values.from_literal(literal, Opaque) == Opaque(7)
    assert values.from_literal(literal, Any) == Opaque(7)
    variable = values.interface_variable(Opaque, pickle_fallback=True)
    assert variable.type.structure.tag == values.PICKLE_TAG
    with pytest.raises(values.NoConverterError):
        values.interface_variable(Opaque)


def test_pickle_fallback_leaves_convertible_values_alone() -> None:
    assert values.to_literal([1], pickle_fallback=True) == values.to_literal([1])


# --- registration ------------------------------------------------------------------------


class Meters:
    def __init__(self, value: float) -> None:
        self.value = value


class Kilometers(Meters):
    pass


class Money(int):
    pass


def _register_meters() -> None:
    values.register(
        Meters,
        to_literal=lambda m: values.to_literal(m.value, float),
        from_literal=lambda literal, cls: cls(literal.scalar.primitive.float_value),
        literal_type=types_pb2.LiteralType(simple=types_pb2.SimpleType.FLOAT),
    )


def test_a_registered_type_and_its_subclasses_convert() -> None:
    _register_meters()
    assert values.to_literal(Meters(2.5)) == values.to_literal(2.5)
    back = values.from_literal(values.to_literal(Kilometers(1.0)), Kilometers)
    assert type(back) is Kilometers
    assert back.value == 1.0
    assert values.literal_type(Kilometers).simple == types_pb2.SimpleType.FLOAT
    assert values.literal_type(list[Meters]).collection_type.simple == types_pb2.SimpleType.FLOAT
    with pytest.raises(TypeError):
        values.to_literal("2.5", Meters)


def test_a_registration_wins_over_the_built_ins_and_the_most_specific_wins() -> None:
    values.register(
        Money,
        to_literal=lambda m: values.to_literal(f"{int(m)} EUR"),
        from_literal=lambda literal, cls: cls(literal.scalar.primitive.string_value.split()[0]),
        literal_type=types_pb2.LiteralType(simple=types_pb2.SimpleType.STRING),
    )
    assert values.to_literal(Money(5)) == values.to_literal("5 EUR")
    assert values.from_literal(values.to_literal(Money(5)), Money) == 5
    assert values.to_literal(5) == values.to_literal(5, int)  # int itself is untouched


def test_register_takes_classes_only() -> None:
    with pytest.raises(TypeError):
        values.register(
            list[int],  # type: ignore[arg-type]
            to_literal=values.to_literal,
            from_literal=lambda literal, cls: cls(),
            literal_type=types_pb2.LiteralType(),
        )


# --- inference and interface variables ---------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, int),
        (None, type(None)),
        ([1, 2], list[int]),
        ([], list[type(None)]),  # type: ignore[misc]
        ([1, "a"], list[int | str]),
        ({"a": 1.5}, dict[str, float]),
        ({1: "a"}, dict),
        ((1, "a"), tuple[int, str]),
        ({"b", "a"}, set[str]),
        (Color.RED, Color),
        (Point(1, 2), Point),
    ],
)
def test_infer_type(value: object, expected: Any) -> None:
    assert values.infer_type(value) == expected
    assert values.to_literal(value) == values.to_literal(value, expected)


def test_inferred_unions_do_not_depend_on_element_order() -> None:
    first = values.infer_type({"a": 1, "b": "x", "c": None})
    second = values.infer_type({"c": None, "b": "x", "a": 1})
    assert first == second
    assert values.literal_type(first) == values.literal_type(second)


def test_interface_variable_carries_the_literal_type_and_description() -> None:
    variable = values.interface_variable(list[int], "the numbers")
    assert variable.type == values.literal_type(list[int])
    assert variable.description == "the numbers"


def test_annotated_types_convert_as_their_base() -> None:
    assert values.to_literal(1, Annotated[int, "meta"]) == values.to_literal(1, int)
    assert values.literal_type(Annotated[list[int], "m"]) == values.literal_type(list[int])


# --- stable encodings --------------------------------------------------------------------


def test_bytes_tuples_and_sets_use_taskcache_encodings() -> None:
    assert values.to_literal(b"\x00\xff").scalar.binary == literals_pb2.Binary(
        value=b"\x00\xff", tag="bytes"
    )
    pair = values.to_literal((1, "a"), tuple[int, str])
    assert [item.WhichOneof("value") for item in pair.collection.literals] == ["scalar"] * 2
    assert (
        values.literal_type(tuple[int, ...]).collection_type.simple == types_pb2.SimpleType.INTEGER
    )
    ordered = values.to_literal({"b", "c", "a"}, set[str]).collection.literals
    assert [item.scalar.primitive.string_value for item in ordered] == ["a", "b", "c"]


def test_a_set_literal_does_not_depend_on_insertion_order() -> None:
    forwards: set[int] = set()
    backwards: set[int] = set()
    for number in range(0, 200, 7):
        forwards.add(number)
        backwards.add(200 - number)
    backwards = {200 - number for number in backwards}
    assert values.to_literal(forwards) == values.to_literal(backwards)


def test_a_str_keyed_dict_key_does_not_depend_on_insertion_order() -> None:
    first = values.to_literal({"a": 1, "b": 2, "c": 3})
    second = values.to_literal({"c": 3, "a": 1, "b": 2})
    assert input_key(first) == input_key(second)


_SUBPROCESS = textwrap.dedent(
    """
    from flyteidl2.core import literals_pb2
    from taskcache import values
    from taskcache.hashing import hash_literal_map
    literal = values.to_literal({"alpha", "beta", "gamma", "delta", "epsilon"})
    frozen = values.to_literal(frozenset({("x", 1), ("y", 2)}))
    print(hash_literal_map(literals_pb2.LiteralMap(literals={"s": literal, "f": frozen})))
    """
)


def test_set_keys_are_the_same_under_other_hash_seeds() -> None:
    keys = set()
    for seed in ("0", "12345"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        keys.add(result.stdout.strip())
    assert len(keys) == 1
    here = values.to_literal({"alpha", "beta", "gamma", "delta", "epsilon"})
    frozen = values.to_literal(frozenset({("x", 1), ("y", 2)}))
    assert keys == {hash_literal_map(literals_pb2.LiteralMap(literals={"s": here, "f": frozen}))}


# --- round trips -------------------------------------------------------------------------

_texts = st.text(max_size=8)
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_small_ints = st.integers(min_value=-(2**31), max_value=2**31)
_floats = st.floats(allow_nan=False)
# pydantic models hold only finite floats: their JSON cannot carry the others (see below).
_finite_floats = st.floats(allow_nan=False, allow_infinity=False)
_datetimes = st.datetimes(
    min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)
).map(lambda d: d.replace(tzinfo=datetime.UTC))
_timedeltas = st.timedeltas(
    min_value=datetime.timedelta(days=-100_000), max_value=datetime.timedelta(days=100_000)
)

ROUND_TRIPS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (type(None), st.none()),
    (bool, st.booleans()),
    (int, _ints),
    (float, _floats),
    (str, st.text()),
    (bytes, st.binary(max_size=32)),
    (datetime.datetime, _datetimes),
    (datetime.date, st.dates()),
    (datetime.timedelta, _timedeltas),
    (Color, st.sampled_from(Color)),
    (list[int], st.lists(_ints, max_size=5)),
    (dict[str, list[float]], st.dictionaries(_texts, st.lists(_floats, max_size=3), max_size=4)),
    (int | None, st.none() | _ints),
    (str | int, _texts | _ints),
    (tuple[int, str], st.tuples(_ints, _texts)),
    (tuple[float, ...], st.lists(_floats, max_size=4).map(tuple)),
    (set[str], st.sets(_texts, max_size=5)),
    (frozenset[int], st.frozensets(_ints, max_size=5)),
    (dict[int, str], st.dictionaries(_ints, _texts, max_size=4)),
    (dict, st.dictionaries(_texts, _ints | _texts | st.none(), max_size=4)),
    (Point, st.builds(Point, x=_ints, y=_ints)),
    (list[Point] | None, st.none() | st.lists(st.builds(Point, x=_ints, y=_ints), max_size=3)),
    (
        Event,
        st.builds(
            Event,
            when=_datetimes,
            color=st.sampled_from(Color),
            tags=st.lists(_texts, max_size=3),
            span=st.none() | _timedeltas,
        ),
    ),
    (
        Reading,
        st.builds(
            Reading,
            color=st.sampled_from(Color),
            maybe=st.none() | st.sampled_from(Color),
            other=st.none() | st.sampled_from(Color),
            colors=st.lists(st.sampled_from(Color), max_size=3),
            values=st.dictionaries(_texts, _finite_floats, max_size=3),
        ),
    ),
]


@pytest.mark.parametrize(("python_type", "strategy"), ROUND_TRIPS, ids=lambda p: repr(p)[:40])
def test_values_round_trip(python_type: Any, strategy: st.SearchStrategy[Any]) -> None:
    @settings(max_examples=30, deadline=None)
    @given(strategy)
    def round_trip(value: Any) -> None:
        literal = values.to_literal(value, python_type)
        back = values.from_literal(literal, python_type)
        assert back == value
        assert type(back) is type(value)
        # Converting again gives the very same literal: keys are a function of the value.
        assert values.to_literal(back, python_type) == literal

    round_trip()


def test_naive_datetimes_are_taken_as_utc() -> None:
    naive = datetime.datetime(2024, 1, 2, 3, 4, 5)
    assert values.to_literal(naive) == values.to_literal(naive.replace(tzinfo=datetime.UTC))
    assert values.from_literal(values.to_literal(naive), datetime.datetime) == naive.replace(
        tzinfo=datetime.UTC
    )


@settings(max_examples=50, deadline=None)
@given(st.sets(st.text(max_size=6) | _small_ints, max_size=8), st.randoms())
def test_set_literals_ignore_construction_order(elements: set[Any], random: Any) -> None:
    shuffled = list(elements)
    random.shuffle(shuffled)
    python_type = values.infer_type(elements) if elements else set[int]
    assert values.to_literal(set(shuffled), python_type) == values.to_literal(elements, python_type)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _small_ints, max_size=8), st.randoms())
def test_map_keys_ignore_insertion_order(mapping: dict[str, int], random: Any) -> None:
    items = list(mapping.items())
    random.shuffle(items)
    assert input_key(values.to_literal(dict(items), dict[str, int])) == input_key(
        values.to_literal(mapping, dict[str, int])
    )


class _Tolerant(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(ser_json_inf_nan="constants")
    values: dict[str, float] = {}


@pytest.mark.parametrize("non_finite", [math.inf, -math.inf, math.nan])
def test_pydantic_models_refuse_floats_their_json_would_lose(non_finite: float) -> None:
    # Written as null, inf, -inf and nan would share one cache key and read back as None.
    with pytest.raises(TypeError, match="ser_json_inf_nan"):
        values.to_literal(Reading(color=next(iter(Color)), values={"": non_finite}), Reading)


def test_pydantic_models_keep_non_finite_floats_when_configured_to() -> None:
    keys = {
        values.to_literal(_Tolerant(values={"x": x}), _Tolerant).SerializeToString()
        for x in (math.inf, -math.inf)
    }
    assert len(keys) == 2
    back = values.from_literal(
        values.to_literal(_Tolerant(values={"x": -math.inf}), _Tolerant), _Tolerant
    )
    assert back.values == {"x": -math.inf}
