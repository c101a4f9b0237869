"""The lean hit path (issue #12): the decorator's cached key parts and remembered keys give
byte-identical keys to a key built from scratch, registering a converter invalidates them,
a hit defers its provenance, and converter look-ups cached per type follow registrations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2, types_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskcache
from taskcache import decorator, hashing, values
from taskcache.clients import embedded
from taskcache.model import Entry, Key
from taskcache.outputs import InMemoryOutputReader
from taskcache.status import CacheStatus, Status

SCOPE_VARIABLES = ("TASKCACHE_ORG", "TASKCACHE_PROJECT", "TASKCACHE_DOMAIN")


@pytest.fixture(autouse=True)
def default_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys in the default scope unless a test sets the scope variables itself."""
    for variable in SCOPE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def scratch_key(
    function: Any,
    version: str,
    arguments: dict[str, tuple[Any, Any]],
    scope: tuple[str, str, str] = decorator.DEFAULT_SCOPE,
) -> str:
    """The cache key of a call, built from scratch with the public conversion and hashing
    functions: ``arguments`` maps each parameter in the key to (value, type or None for
    unhinted), in parameter order.
    """
    interface = interface_pb2.TypedInterface()
    inputs = literals_pb2.LiteralMap()
    for name, (value, hint) in arguments.items():
        python_type = values.infer_type(value) if hint is None else hint
        inputs.literals[name].CopyFrom(values.to_literal(value, python_type))
        variable = interface.inputs.variables.add()
        variable.key = name
        variable.value.type.CopyFrom(values.literal_type(python_type))
    if not interface.inputs.variables:
        interface.inputs.SetInParent()
    output = interface.outputs.variables.add()
    output.key = decorator.OUTPUT_NAME
    output.value.CopyFrom(values.interface_variable(str, pickle_fallback=True))
    org, project, domain = scope
    identifier = identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org=org,
        project=project,
        domain=domain,
        name=f"{function.__module__}.{function.__qualname__}",
        version=version,
    )
    return hashing.cache_key(Key(identifier, version, interface, inputs=inputs))


# ``anything`` is unhinted on purpose: the decorator types it from its value.
def mixed(count: int, scale: float, label: str, flag: bool, anything, blob: bytes) -> str:  # type: ignore[no-untyped-def]
    """Hinted scalars, one unhinted parameter, bytes."""
    return f"{count}{scale}{label}{flag}{anything!r}{blob!r}"


HINTS: dict[str, Any] = {
    "count": int,
    "scale": float,
    "label": str,
    "flag": bool,
    "anything": None,
    "blob": bytes,
}


def hinted(args: tuple[Any, ...]) -> dict[str, tuple[Any, Any]]:
    """``mixed``'s arguments by name, each with its hint (None: unhinted)."""
    return {name: (value, HINTS[name]) for name, value in zip(HINTS, args, strict=True)}


unhinted_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.integers(min_value=-1000, max_value=1000), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(min_value=0, max_value=9), max_size=3),
)
mixed_calls = st.tuples(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True) | st.sampled_from([0.0, -0.0, math.inf, -math.inf]),
    st.text(max_size=30) | st.text(min_size=1100, max_size=1200),
    st.booleans(),
    unhinted_values,
    st.binary(max_size=16),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(mixed_calls, min_size=1, max_size=4))
def test_cached_keys_equal_keys_built_from_scratch(calls: list[tuple[Any, ...]]) -> None:
    cached = taskcache.cached(version="v1")(mixed)
    for args in calls + calls:  # every call twice: built, then remembered where it can be
        expected = scratch_key(mixed, "v1", hinted(args))
        assert cached.cache_key(*args) == expected
        assert cached.cache_key(*args) == expected


def test_repeated_scalar_calls_are_remembered_and_other_calls_are_not() -> None:
    cached = taskcache.cached(version="v1")(mixed)
    signature = cached._signature
    assert signature.remembered_key((1, 0.5, "a", True, None, b""), {}) is None
    cached.cache_key(1, 0.5, "a", True, None, b"")
    recalled = signature.remembered_key((1, 0.5, "a", True, None, b""), {})
    assert recalled is not None
    assert recalled.remembered_cache_key == cached.cache_key(1, 0.5, "a", True, None, b"")
    # Equal but distinct values (1 == True == 1.0) are remembered apart.
    assert signature.remembered_key((True, 0.5, "a", True, None, b""), {}) is None
    assert signature.remembered_key((1.0, 0.5, "a", True, None, b""), {}) is None
    # Remembered apart (whatever the hashing makes of the sign), each as built from scratch.
    for scale in (0.0, -0.0):
        args = (1, scale, "a", True, None, b"")
        assert cached.cache_key(*args) == scratch_key(mixed, "v1", hinted(args))
    assert len(signature._remembered) == 3
    # Containers and long strings are converted on every call (never remembered).
    cached.cache_key(1, 0.5, "a", True, [1, 2], b"")
    assert signature.remembered_key((1, 0.5, "a", True, [1, 2], b""), {}) is None
    long_text = "x" * (decorator._MAX_REMEMBERED_LENGTH + 1)
    cached.cache_key(1, 0.5, long_text, True, None, b"")
    assert signature.remembered_key((1, 0.5, long_text, True, None, b""), {}) is None


def test_remembered_keys_are_bounded_per_function() -> None:
    cached = taskcache.cached(version="v1")(mixed)
    for count in range(decorator.MAX_REMEMBERED_KEYS + 10):
        cached.cache_key(count, 0.5, "a", True, None, b"")
    assert len(cached._signature._remembered) == decorator.MAX_REMEMBERED_KEYS
    # The oldest went first; the newest is still there.
    last = (decorator.MAX_REMEMBERED_KEYS + 9, 0.5, "a", True, None, b"")
    assert cached._signature.remembered_key(last, {}) is not None
    assert cached._signature.remembered_key((0, 0.5, "a", True, None, b""), {}) is None


def test_scope_from_the_environment_is_read_on_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = taskcache.cached(version="v1")(mixed)
    args = (1, 0.5, "a", True, None, b"")
    arguments = hinted(args)
    default = cached.cache_key(*args)
    monkeypatch.setenv("TASKCACHE_PROJECT", "elsewhere")
    moved = cached.cache_key(*args)
    assert moved != default
    assert moved == scratch_key(mixed, "v1", arguments, ("taskcache", "elsewhere", "development"))
    monkeypatch.delenv("TASKCACHE_PROJECT")
    assert cached.cache_key(*args) == default


@dataclasses.dataclass(frozen=True)
class Point:
    x: int


def _point_converter(tag: str) -> dict[str, Any]:
    return {
        "to_literal": lambda point: values.to_literal(f"{tag}:{point.x}", str),
        "from_literal": lambda literal, cls: cls(int(literal.scalar.primitive.string_value[2:])),
        "literal_type": types_pb2.LiteralType(
            simple=types_pb2.STRING, structure=types_pb2.TypeStructure(tag=tag)
        ),
    }


def test_registering_a_converter_invalidates_cached_key_parts() -> None:
    def placed(point: Point) -> str:
        return str(point)

    cached = taskcache.cached(version="v1")(placed)
    values.register(Point, **_point_converter("a"))
    first = cached.cache_key(Point(1))
    assert first == scratch_key(placed, "v1", {"point": (Point(1), Point)})
    # Replaced: another literal and another interface type, so another key.
    values.register(Point, **_point_converter("b"))
    second = cached.cache_key(Point(1))
    assert second != first
    assert second == scratch_key(placed, "v1", {"point": (Point(1), Point)})


def test_registering_a_converter_forgets_remembered_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    cached = taskcache.cached(version="v1")(mixed)
    args = (1, 0.5, "a", True, None, b"")
    key = cached.cache_key(*args)
    assert cached._signature.remembered_key(args, {}) is not None

    class Unrelated:
        pass

    values.register(Unrelated, **_point_converter("u"))  # any registration may change a key
    assert cached._signature.remembered_key(args, {}) is None
    assert cached.cache_key(*args) == key  # rebuilt (this one did not change), then remembered
    assert cached._signature.remembered_key(args, {}) is not None


def test_converter_lookups_follow_registrations_of_subclasses() -> None:
    class Base:
        def __init__(self, x: int) -> None:
            self.x = x

    class Derived(Base):
        pass

    values.register(Base, **_point_converter("b"))
    assert values.to_literal(Derived(3)).scalar.primitive.string_value == "b:3"
    values.register(Derived, **_point_converter("d"))
    assert values.to_literal(Derived(3)).scalar.primitive.string_value == "d:3"
    assert values.literal_type(Derived).structure.tag == "d"


def test_a_hit_defers_its_provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[bytes] = []
    original = embedded._hit_status

    def counting(source: bytes, key_map: dict[str, str]) -> Status:
        built.append(source)
        return original(source, key_map)

    monkeypatch.setattr(embedded, "_hit_status", counting)
    with taskcache.open(tmp_path / "catalog") as client:

        @taskcache.cached(version="v1", catalog=client)
        def double(n: int) -> int:
            return 2 * n

        assert double(4) == 8
        assert double(4) == 8  # a hit: the decorator reads only the outputs
        assert built == []
        key = double._signature.key((4,), {})
        hit = client.get(key)
        assert built == []
        assert hit.status.cache_status is CacheStatus.CACHE_HIT
        assert hit.status.metadata is not None
        assert hit.status.metadata.dataset_id.name == double._signature.name
        assert len(built) == 1
        assert hit.status is hit.status  # built once
        assert len(built) == 1


def test_a_hit_reads_only_the_outputs_of_an_embedded_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with taskcache.open(tmp_path / "catalog") as client:

        @taskcache.cached(version="v1", catalog=client)
        def double(n: int) -> int:
            return 2 * n

        assert double(4) == 8

        def no_entry(*_: object, **__: object) -> Entry:
            raise AssertionError("a hit reads no Entry")

        monkeypatch.setattr(embedded.EmbeddedClient, "get", no_entry)
        monkeypatch.setattr(client.manager.repository, "get_entry", no_entry)
        assert double(4) == 8
        assert double.lookup(4) == 8


def test_entries_compare_by_value_and_are_read_only() -> None:
    outputs = InMemoryOutputReader(literals_pb2.LiteralMap())
    status = Status(CacheStatus.CACHE_HIT)
    eager = Entry(outputs=outputs, status=status)
    deferred = Entry(outputs, status_of=lambda: status)
    assert eager == deferred
    assert deferred.status is status
    with pytest.raises(AttributeError):
        eager.outputs = outputs  # type: ignore[misc]
    with pytest.raises(TypeError, match="exactly one"):
        Entry(outputs)
    with pytest.raises(TypeError, match="exactly one"):
        Entry(outputs, status, status_of=lambda: status)


def test_async_functions_use_remembered_keys(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with taskcache.open_async(tmp_path / "catalog") as client:
            calls: list[int] = []

            @taskcache.cached(version="v1", catalog=client)
            async def triple(n: int) -> int:
                calls.append(n)
                return 3 * n

            assert await triple(5) == 15
            assert triple._signature.remembered_key((5,), {}) is not None
            assert await triple(5) == 15
            assert calls == [5]
            assert triple.cache_key(5) == scratch_key_int(triple, 5)
            key = triple._signature.key((5,), {})
            assert isinstance(client, embedded.AsyncEmbeddedClient)
            assert await client.get_outputs(key) == (await client.get(key)).outputs.read()
            assert values.from_literal((await client.get_outputs(key)).literals["o0"], int) == 15

    asyncio.run(scenario())


def scratch_key_int(cached: Any, n: int) -> str:
    """The from-scratch key of ``cached(n)`` for an ``(n: int) -> int`` function."""
    signature = cached._signature
    interface = interface_pb2.TypedInterface()
    variable = interface.inputs.variables.add()
    variable.key = "n"
    variable.value.type.CopyFrom(values.literal_type(int))
    output = interface.outputs.variables.add()
    output.key = decorator.OUTPUT_NAME
    output.value.CopyFrom(values.interface_variable(int, pickle_fallback=True))
    inputs = literals_pb2.LiteralMap(literals={"n": values.to_literal(n, int)})
    identifier = identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org=decorator.DEFAULT_SCOPE[0],
        project=decorator.DEFAULT_SCOPE[1],
        domain=decorator.DEFAULT_SCOPE[2],
        name=signature.name,
        version="v1",
    )
    return hashing.cache_key(Key(identifier, "v1", interface, inputs=inputs))


def test_file_catalogs_read_through_memory_mapping(tmp_path: Path) -> None:
    from taskcache.repositories.sqlite import SqliteRepository

    with SqliteRepository(tmp_path / "c.db") as repository, repository._session() as conn:
        # 2 GiB - 64 KiB: all of a 10^6-entry catalog's file.
        assert conn.execute("PRAGMA mmap_size").fetchone()[0] == 0x7FFF0000


def three(a: int, skipped: str, c: float) -> str:
    """A function with an ignored middle parameter."""
    return f"{a}{skipped}{c}"


def test_positional_and_keyword_calls_share_one_remembered_key() -> None:
    # Positional calls build their remembered-key form from args by position, keyword calls
    # from the bound arguments: both must name the same key, and skip the ignored parameter.
    cached = taskcache.cached(version="v1", ignore=["skipped"])(three)
    positional = cached.cache_key(1, "x", 2.5)
    signature = cached._signature
    assert signature.remembered_key((1, "other", 2.5), {}) is not None
    remembered = signature.remembered_key((1,), {"c": 2.5, "skipped": "y"})
    assert remembered is not None
    assert hashing.cache_key(remembered) == positional
    assert cached.cache_key(a=1, skipped="z", c=2.5) == positional
    assert cached.cache_key(1, "x", -2.5) != positional
    assert signature.remembered_key((2, "x", 2.5), {}) is None
