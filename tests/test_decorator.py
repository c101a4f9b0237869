"""``@taskcache.cached`` on plain Python functions: keys from calls, values in and out, the
catalog it opens, methods, async functions, and compute-once across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import taskcache
from server_process import running_server
from taskcache import NotFoundError
from taskcache.decorator import source_version

pytestmark = pytest.mark.slow


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private default catalog: ``$TASKCACHE_HOME`` in a temporary folder."""
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path / "home"))
    for variable in ("TASKCACHE_TARGET", "TASKCACHE_ORG", "TASKCACHE_PROJECT", "TASKCACHE_DOMAIN"):
        monkeypatch.delenv(variable, raising=False)
    yield tmp_path / "home"


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


class Calls:
    """Counts executions of the decorated functions of one test."""

    def __init__(self) -> None:
        self.count = 0


def test_bare_decorator_computes_once_and_hits(home: Path) -> None:
    calls = Calls()

    @taskcache.cached
    def square(n: int) -> int:
        calls.count += 1
        return n * n

    assert square(12) == 144
    assert square(12) == 144
    assert square(13) == 169
    assert calls.count == 2
    assert (home / "catalog.db").is_file()


def test_equivalent_calls_are_one_call(home: Path) -> None:
    calls = Calls()

    @taskcache.cached(version="1")
    def join(a: int, b: str = "x", c: float = 0.5) -> str:
        calls.count += 1
        return f"{a}{b}{c}"

    keys = {
        join.cache_key(3, b="x"),
        join.cache_key(a=3, b="x"),
        join.cache_key(3, "x"),
        join.cache_key(3, "x", 0.5),
    }
    assert len(keys) == 1
    assert join(3, b="x") == join(a=3) == join(3, "x") == "3x0.5"
    assert calls.count == 1
    assert join.cache_key(3, "y") not in keys


def test_version_name_ignore_and_scope_shape_the_key(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def f(a: int, verbose: bool = False) -> int:
        return a

    base = taskcache.cached(version="1")(f)
    assert taskcache.cached(version="2")(f).cache_key(1) != base.cache_key(1)
    assert taskcache.cached(version="1", name="other.f")(f).cache_key(1) != base.cache_key(1)
    quiet = taskcache.cached(version="1", ignore=["verbose"])(f)
    assert quiet.cache_key(1, verbose=True) == quiet.cache_key(1, verbose=False)
    assert base.cache_key(1, verbose=True) != base.cache_key(1, verbose=False)
    with pytest.raises(TypeError, match="nope"):
        taskcache.cached(ignore=["nope"])(f)
    # The scope is part of the identifier, so of the key; the environment supplies defaults.
    scoped = taskcache.cached(version="1", project="p2")(f)
    assert scoped.cache_key(1) != base.cache_key(1)
    monkeypatch.setenv("TASKCACHE_PROJECT", "p2")
    assert base.cache_key(1) == scoped.cache_key(1)


def test_default_version_follows_the_source() -> None:
    def first(a: int) -> int:
        return a + 1

    def second(a: int) -> int:
        return a + 2

    assert source_version(first) != source_version(second)
    assert source_version(first) == source_version(first)
    same_name = [taskcache.cached(name="shared")(f) for f in (first, second)]
    assert same_name[0].cache_key(1) != same_name[1].cache_key(1)


def test_exceptions_are_not_cached_but_none_is(home: Path) -> None:
    calls = Calls()

    @taskcache.cached
    def flaky(n: int) -> int | None:
        calls.count += 1
        if calls.count == 1:
            raise RuntimeError("first call fails")
        return None

    with pytest.raises(RuntimeError):
        flaky(1)
    assert flaky(1) is None
    assert flaky(1) is None
    assert calls.count == 2


def test_lookup_and_forget(home: Path) -> None:
    calls = Calls()

    @taskcache.cached
    def double(n: int) -> int:
        calls.count += 1
        return 2 * n

    with pytest.raises(NotFoundError):
        double.lookup(4)
    assert calls.count == 0  # lookup never computes
    assert double(4) == 8
    assert double.lookup(4) == 8
    double.forget(4)
    double.forget(4)  # absent: no error
    with pytest.raises(NotFoundError):
        double.lookup(4)
    assert double(4) == 8
    assert calls.count == 2


def test_methods_leave_self_out_of_the_key(home: Path) -> None:
    calls = Calls()

    class Model:
        def __init__(self, name: str) -> None:
            self.name = name

        @taskcache.cached(version="1")
        def predict(self, x: int) -> int:
            calls.count += 1
            return x + 1

    first, second = Model("a"), Model("b")
    assert first.predict(1) == 2
    assert second.predict(1) == 2
    assert calls.count == 1
    assert first.predict.cache_key(1) == second.predict.cache_key(1)
    assert first.predict.lookup(1) == 2
    first.predict.forget(1)
    with pytest.raises(NotFoundError):
        second.predict.lookup(1)


def test_async_functions_compute_once(home: Path) -> None:
    calls = Calls()

    @taskcache.cached
    async def fetch(day: date, window: int = 7) -> list[int]:
        calls.count += 1
        await asyncio.sleep(0)
        return [day.day, window]

    async def scenario() -> None:
        assert await fetch(date(2026, 11, 30)) == [30, 7]
        assert await fetch(date(2026, 11, 30), window=7) == [30, 7]
        assert await fetch.lookup(date(2026, 11, 30)) == [30, 7]
        await fetch.forget(date(2026, 11, 30))
        with pytest.raises(NotFoundError):
            await fetch.lookup(date(2026, 11, 30))

    asyncio.run(scenario())
    assert calls.count == 1


@dataclasses.dataclass
class Point:
    x: int
    y: float


def test_values_in_and_out(home: Path) -> None:
    @taskcache.cached
    def shift(point: Point, by: dict[str, int], labels: list[str]) -> Point:
        return Point(point.x + by["x"], point.y)

    result = shift(Point(1, 2.5), {"x": 3}, ["a"])
    assert result == Point(4, 2.5)
    assert shift.lookup(Point(1, 2.5), {"x": 3}, ["a"]) == Point(4, 2.5)


def test_an_input_without_converter_names_the_parameter(home: Path) -> None:
    class Opaque:
        pass

    @taskcache.cached
    def use(handle: Opaque, n: int) -> int:
        return n

    with pytest.raises(TypeError, match="'handle'") as caught:
        use(Opaque(), 1)
    assert "ignore=" in str(caught.value)
    assert "register" in str(caught.value)
    assert taskcache.cached(ignore=["handle"])(use.__wrapped__)(Opaque(), 1) == 1


class Box:
    """A type taskcache has no converter for (module level, so pickle can find it)."""

    def __init__(self, content: int) -> None:
        self.content = content


def test_outputs_without_converter_are_pickled_unless_refused(home: Path) -> None:
    @taskcache.cached
    def box(n: int) -> Box:
        return Box(n)

    assert box(3).content == 3
    assert box.lookup(3).content == 3

    @taskcache.cached(pickle=False)
    def strict(n: int) -> Box:
        return Box(n)

    with pytest.raises(TypeError):
        strict(3)


def test_catalog_targets_and_environment(tmp_path: Path, home: Path, monkeypatch: Any) -> None:
    folder = tmp_path / "team-cache"

    @taskcache.cached(catalog=str(folder))
    def one(n: int) -> int:
        return n

    assert one(1) == 1
    assert (folder / "catalog.db").is_file()

    monkeypatch.setenv("TASKCACHE_TARGET", f"sqlite:///{tmp_path}/from-env.db")

    @taskcache.cached
    def two(n: int) -> int:
        return n

    assert two(2) == 2
    assert (tmp_path / "from-env.db").is_file()

    with taskcache.open(f"sqlite:///{tmp_path}/given.db") as client:

        @taskcache.cached(catalog=client)
        def three(n: int) -> int:
            return n

        assert three(3) == 3
        assert three.lookup(3) == 3


def test_through_a_served_catalog_forget_and_lookup(tmp_path: Path, home: Path) -> None:
    calls = Calls()
    with running_server(tmp_path, database=f"sqlite:///{tmp_path}/server.db") as server:

        @taskcache.cached(catalog=f"grpc://{server.grpc_target}")
        def triple(n: int) -> int:
            calls.count += 1
            return 3 * n

        assert triple(2) == 6
        assert triple(2) == 6
        assert triple.lookup(2) == 6
        triple.forget(2)
        with pytest.raises(NotFoundError):
            triple.lookup(2)
    assert calls.count == 1


WORKER = Path(__file__).with_name("decorated_worker.py")


@pytest.fixture(params=["embedded-sqlite", "serve-postgres"])
def shared_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A catalog target many processes share: a SQLite file, or a server on PostgreSQL."""
    if request.param == "embedded-sqlite":
        yield f"sqlite:///{tmp_path}/shared.db"
        return
    database: str = request.getfixturevalue("clean_postgres")
    with running_server(tmp_path / "server", database=database) as server:
        yield f"grpc://{server.grpc_target}"


def test_eight_processes_run_a_decorated_function_once(shared_target: str, tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "TASKCACHE_TARGET": shared_target,
        "TASKCACHE_HOME": str(tmp_path / "home"),
        "DECORATED_LOG": str(tmp_path / "executions"),
        "DECORATED_TASK": unique("decorated"),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER)], env=environment, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    outputs = [worker.communicate(timeout=120)[0].strip() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert outputs == ["[1, 2, 3]"] * 8
    assert (tmp_path / "executions").read_text().count("\n") == 1


def test_a_forked_child_opens_its_own_catalog(home: Path) -> None:
    @taskcache.cached
    def answer(n: int) -> int:
        return n + 40

    assert answer(2) == 42  # the parent has opened the catalog
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hit the parent's entry, store one of its own
        os.close(read)
        ok = answer.lookup(2) == 42 and answer(3) == 43
        os.write(write, b"ok" if ok else b"no")
        os._exit(0)
    os.close(write)
    reply = os.read(read, 2)
    os.close(read)
    os.waitpid(pid, 0)
    assert reply == b"ok"
    assert answer.lookup(3) == 43  # the child's entry, seen by the parent


def test_max_age_recomputes_old_entries(home: Path) -> None:
    calls = Calls()

    @taskcache.cached(max_age=timedelta(hours=1))
    def stamp(n: int) -> int:
        calls.count += 1
        return n

    # An entry written two hours ago, by a client whose clock runs behind.
    past = datetime.now(UTC) - timedelta(hours=2)
    with taskcache.open(clock=lambda: past) as behind:
        key = stamp._signature.key((1,), {})
        behind.put(key, stamp._signature.outputs(1, None))
    assert stamp(1) == 1
    assert calls.count == 1  # too old: computed again, and stored fresh
    assert stamp(1) == 1
    assert calls.count == 1


def test_heartbeat_and_wait_timeout_reach_get_or_compute(home: Path) -> None:
    @taskcache.cached(heartbeat=timedelta(seconds=2), wait_timeout=timedelta(0))
    def value(n: int) -> int:
        return n

    # Another owner holds the reservation: with no time to wait, the call gives up.
    key_holder = taskcache.open()
    key = value._signature.key((5,), {})
    key_holder.get_or_extend_reservation(key, "someone-else", timedelta(seconds=30))
    with pytest.raises(taskcache.DeadlineExceededError):
        value(5)
    key_holder.release_reservation(key, "someone-else")
    assert value(5) == 5
    key_holder.close()


@pytest.mark.parametrize("served", [False, True], ids=["embedded", "served"])
def test_arrays_go_to_the_catalogs_blob_storage_by_content(
    served: bool, tmp_path: Path, home: Path
) -> None:
    calls = Calls()

    def scale(a: np.ndarray, k: float) -> np.ndarray:
        calls.count += 1
        return a * k

    with contextlib.ExitStack() as stack:
        if served:
            server = stack.enter_context(
                running_server(tmp_path / "server", database=f"sqlite:///{tmp_path}/s.db")
            )
            cached_scale = taskcache.cached(catalog=f"grpc://{server.grpc_target}")(scale)
        else:
            cached_scale = taskcache.cached(scale)
        matrix = np.arange(12.0).reshape(3, 4)
        first = cached_scale(matrix, 2.0)
        # The same content in another memory layout is the same call.
        again = cached_scale(np.asfortranarray(matrix), 2.0)
        np.testing.assert_array_equal(first, matrix * 2)
        np.testing.assert_array_equal(again, matrix * 2)
        assert calls.count == 1
    assert list((home / "blobs").rglob("*.npy"))  # the output went to the blob storage


def test_an_unresolvable_annotation_only_affects_its_own_parameter(home: Path) -> None:
    class Local:  # a string annotation naming it cannot be resolved from the module
        pass

    def mixed(n: int, handle: Local) -> int:
        return n

    decorated = taskcache.cached(ignore=["handle"])(mixed)
    assert decorated(2, Local()) == 2
    assert decorated._signature.hints == {"n": int, "return": int}


def test_an_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="verison"):
        taskcache.cached(verison="1")  # type: ignore[call-overload]
