"""The operator CLI round-trips: what ``ls`` prints (keys whole or their heads, scopes as
``org/project/domain`` or ``(unscoped)``) is what ``show``, ``delete``, ``gc``, ``stats`` and
``clear`` take back; key prefixes resolve to one entry or fail listing the candidates;
``--json`` makes every outcome, failures included, one JSON document; ``clear`` asks, and
refuses without a terminal unless ``--yes``. On a SQLite catalog written through
``taskcache.open``; ``clear``'s prompt is answered on a real pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flyteidl2.core import literals_pb2, types_pb2
from hypothesis import given
from hypothesis import strategies as st

import taskcache
from builders import FakeClock, int_map, make_identifier, make_key, string_literal
from taskcache import hashing, operations
from taskcache.cli import main
from taskcache.cli.literal_text import MAX_ITEMS, literal_text
from taskcache.repositories.base import EntryFilter, EntryRow, Scope
from taskcache.repositories.sqlite import SqliteRepository

PROD = ("org_1", "project_1", "production")
DEV = ("org_1", "project_1", "development")


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def failed_json(*args: str, exit_code: int) -> dict[str, Any]:
    """Run with --json; assert the exit code and return the error object."""
    result = run(*args, "--json")
    assert result.exit_code == exit_code, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    assert set(document) == {"error"}
    assert {"code", "message"} <= set(document["error"])
    return document["error"]  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TASKCACHE_DATABASE", "TASKCACHE_STORAGE", "TASKCACHE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path / "home"))


@pytest.fixture
def database(tmp_path: Path) -> list[str]:
    """``--database`` of a catalog holding: in PROD three ``square`` entries (45 days old)
    and one ``cube``; in DEV the same ``square`` key 0 again; one unscoped entry.
    """
    folder = tmp_path / "catalog"
    clock = FakeClock(datetime.now(UTC) - timedelta(days=45))
    with taskcache.open(folder, clock=clock, scope=PROD) as client:
        for x in range(3):
            client.put(make_key(x), int_map(o0=x * x))
            clock.advance(60)
        clock.now = datetime.now(UTC)
        client.put(make_key(7, name="tests.cube"), int_map(o0=343))
    with taskcache.open(folder, scope=DEV) as client:
        client.put(make_key(0), int_map(o0=0))
    # Flyte 1 and the unscoped service file entries under the empty scope.
    now = datetime.now(UTC)
    with SqliteRepository(folder / "catalog.db") as repository:
        repository.create_entry(
            EntryRow(
                scope=Scope(),
                key=key(5, "tests.flyte1"),
                output_uri=None,
                output_literals=int_map(o0=5).SerializeToString(),
                source_identifier=make_identifier("tests.flyte1").SerializeToString(),
                key_map={},
                created_at=now,
                last_updated_at=now,
            ),
            None,
        )
    return ["--database", str(folder)]


def key(x: int, name: str = "tests.square") -> str:
    return hashing.cache_key(make_key(x, name=name))


def wide_rows(database: list[str], *flags: str) -> list[tuple[str, str, str]]:
    """Return (key, scope, task) of each row ``ls --wide`` prints."""
    lines = ok("ls", *database, "--wide", "--all", *flags).stdout.splitlines()[2:]
    return [(line.split()[0], line.split()[1], line.split()[2]) for line in lines if line]


def test_the_key_and_scope_ls_prints_go_back_into_show_and_delete(database: list[str]) -> None:
    rows = wide_rows(database)
    assert len(rows) == 6
    assert {scope for _, scope, _ in rows} == {
        "org_1/project_1/production",
        "org_1/project_1/development",
        "(unscoped)",
    }
    for printed_key, printed_scope, task in rows:
        shown = json.loads(
            ok("show", printed_key, "--scope", printed_scope, *database, "--json").stdout
        )
        assert shown["key"] == printed_key
        assert shown["scope_text"] == printed_scope
        assert shown["task"] == task
    cube_key, cube_scope, _ = next(row for row in rows if row[2] == "tests.cube")
    deleted = json.loads(
        ok("delete", cube_key, "--scope", cube_scope, *database, "--yes", "--json").stdout
    )
    assert deleted["key"] == cube_key
    assert deleted["scope_text"] == cube_scope
    assert len(wide_rows(database)) == 5


def test_the_shortened_key_head_is_a_usable_prefix(database: list[str]) -> None:
    table = ok("ls", *database, "--scope", "org_1/project_1/production").stdout
    line = next(row for row in table.splitlines() if "tests.cube" in row)
    head = line.split()[0].split("…")[0]
    assert len(head) < len(key(7, "tests.cube"))
    shown = json.loads(ok("show", head, *database, "--json").stdout)
    assert shown["key"] == key(7, "tests.cube")
    assert "343" in ok("show", head, *database).stdout


def test_ls_keys_prints_whole_keys_one_per_line(database: list[str]) -> None:
    printed = ok("ls", *database, "--keys", "--all").stdout.splitlines()
    listed = json.loads(ok("ls", *database, "--all", "--json").stdout)["entries"]
    assert printed == [item["key"] for item in listed]
    assert ok("ls", *database, "--keys", "--task", "tests.cube").stdout.splitlines() == [
        key(7, "tests.cube")
    ]


def test_ls_has_a_task_column(database: list[str]) -> None:
    assert {task for _, _, task in wide_rows(database)} == {
        "tests.square",
        "tests.cube",
        "tests.flyte1",
    }
    assert "task" in ok("ls", *database).stdout.splitlines()[0]


def test_an_ambiguous_prefix_lists_the_candidates(database: list[str]) -> None:
    # The square keys share their identifier hash, the first part of the key.
    shared = key(0).split("-", 1)[0]
    result = run("show", shared, *database)
    assert result.exit_code == 1
    for x in range(3):
        assert key(x) in result.stderr
    error = failed_json("delete", shared, *database, "--yes", exit_code=1)
    assert error["code"] == "INVALID_ARGUMENT"
    assert {item["key"] for item in error["candidates"]} == {key(0), key(1), key(2)}
    assert error["more"] is False
    assert len(wide_rows(database)) == 6  # nothing deleted


def test_one_key_in_two_scopes_needs_the_scope(database: list[str]) -> None:
    error = failed_json("show", key(0), *database, exit_code=1)
    assert {item["scope"] for item in error["candidates"]} == {
        "org_1/project_1/production",
        "org_1/project_1/development",
    }
    shown = json.loads(ok("show", key(0), *database, "--scope", "*/*/development", "--json").stdout)
    assert shown["scope"]["domain"] == "development"


def test_json_failures_are_documents(database: list[str], tmp_path: Path) -> None:
    assert failed_json("show", "nope", *database, exit_code=1)["code"] == "NOT_FOUND"
    bad_scope = failed_json("ls", *database, "--scope", "org_1/project_1", exit_code=2)
    assert bad_scope["code"] == "INVALID_ARGUMENT"
    assert "org/project/domain" in bad_scope["message"]
    assert failed_json("ls", *database, "--limit", "0", exit_code=2)["code"] == "INVALID_ARGUMENT"
    assert (
        failed_json("stats", "--database", "host:1234", exit_code=2)["code"] == "INVALID_ARGUMENT"
    )
    assert failed_json("ls", "--no-such-flag", exit_code=2)["code"] == "INVALID_ARGUMENT"
    unreachable = failed_json("migrate", "--database", "postgresql://u@127.0.0.1:1/x", exit_code=1)
    assert unreachable["code"] == "UNAVAILABLE"
    refused = failed_json("clear", *database, exit_code=2)
    assert refused["code"] == "FAILED_PRECONDITION"
    # Without --json the same failure is one line on stderr, no traceback.
    plain = run("show", "nope", *database)
    assert plain.exit_code == 1
    assert plain.stdout == ""
    assert plain.stderr.count("\n") == 1


def test_serve_reports_a_failure_to_start_as_json() -> None:
    error = failed_json("serve", "--database", "127.0.0.1:8094", exit_code=2)
    assert error["code"] == "INVALID_ARGUMENT"
    assert "postgresql://127.0.0.1:8094/DBNAME" in error["message"]


def test_migrate_prints_json(database: list[str]) -> None:
    migrated = json.loads(ok("migrate", *database, "--json").stdout)
    assert migrated["schema_version"] >= 1
    assert migrated["database"] == database[1]


def test_gc_and_stats_take_a_scope(database: list[str]) -> None:
    stats = json.loads(ok("stats", *database, "--scope", "org_1/*/*", "--json").stdout)
    assert stats["entries"] == 5
    assert {group["domain"] for group in stats["by_scope"]} == {"production", "development"}
    assert "all scopes" in ok("stats", *database, "--scope", "(unscoped)").stdout
    dry = json.loads(
        ok("gc", *database, "--older-than", "30d", "--scope", "*/*/development", "--json").stdout
    )
    assert dry["entries"] == 0  # the development entry is new
    gone = json.loads(
        ok("gc", *database, "--older-than", "30d", "--scope", "*/*/production", "--json").stdout
    )
    assert gone["entries"] == 3
    assert {row[2] for row in wide_rows(database, "--scope", "*/*/production")} == {"tests.cube"}
    assert len(wide_rows(database)) == 3


def test_clear_refuses_without_a_terminal_and_yes(database: list[str]) -> None:
    refused = run("clear", *database)
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert len(wide_rows(database)) == 6


def test_clear_by_scope_and_task(database: list[str]) -> None:
    flags = ["--scope", "org_1/project_1/production", "--task", "tests.square"]
    cleared = json.loads(ok("clear", *database, *flags, "--yes", "--json").stdout)
    assert cleared["entries"] == 3
    assert sorted(row[2] for row in wide_rows(database)) == [
        "tests.cube",
        "tests.flyte1",
        "tests.square",
    ]
    assert "Deleted 3 entries" in ok("clear", *database, "--yes").stdout
    assert wide_rows(database) == []


def test_clear_asks_on_a_terminal(database: list[str]) -> None:
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "taskcache", "clear", *database, "--scope", "(unscoped)"],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TERM": "dumb"},
        )
        os.write(leader, b"y\n")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        os.close(leader)
        os.close(follower)
    assert process.returncode == 0, stderr
    assert b"Delete the entries of scope (unscoped)" in stderr
    assert b"Deleted 1 entries" in stdout
    assert len(wide_rows(database)) == 5


# --- the Python side ------------------------------------------------------------------------------

names = st.text(st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), max_size=8)


@given(org=names, project=names, domain=names)
def test_parse_scope_reads_back_what_describe_scope_writes(
    org: str, project: str, domain: str
) -> None:
    scope = Scope(org.strip(), project.strip(), domain.strip())
    if "*" in (scope.org, scope.project, scope.domain) or scope.org.startswith("("):
        return
    parsed = operations.parse_scope(operations.describe_scope(scope))
    assert parsed == EntryFilter(org=scope.org, project=scope.project, domain=scope.domain)


def test_operator_clients_take_the_printed_scope(database: list[str]) -> None:
    with taskcache.open(database[1]) as client:
        assert isinstance(client, taskcache.OperatorClient)
        production = list(client.entries(scope="org_1/project_1/production"))
        assert {entry.task for entry in production} == {"tests.square", "tests.cube"}
        assert [entry.task for entry in client.entries(scope="(unscoped)")] == ["tests.flyte1"]
        with pytest.raises(TypeError, match="not both"):
            list(client.entries(scope="org_1/*/*", org="org_1"))
        with pytest.raises(taskcache.InvalidArgumentError, match="scope"):
            list(client.entries(scope="org_1"))
        assert client.clear(scope="*/*/development") == 1
    assert len(wide_rows(database)) == 5


def test_literal_values_print_readably() -> None:
    def scalar(**fields: Any) -> literals_pb2.Literal:
        return literals_pb2.Literal(scalar=literals_pb2.Scalar(**fields))

    many = literals_pb2.Literal(
        collection=literals_pb2.LiteralCollection(
            literals=[int_map(o0=x).literals["o0"] for x in range(MAX_ITEMS + 3)]
        )
    )
    assert literal_text(many).startswith("[0, 1, 2")
    assert literal_text(many).endswith("… 3 more]")
    nested = literals_pb2.Literal(
        map=literals_pb2.LiteralMap(literals={"b": string_literal("x" * 500), "a": many})
    )
    text = literal_text(nested)
    assert text.startswith("{'a': [0, 1")
    assert "…" in text
    assert len(text) < 200
    blob = scalar(
        blob=literals_pb2.Blob(
            uri="s3://bucket/df.parquet",
            metadata=literals_pb2.BlobMetadata(
                type=types_pb2.BlobType(format="parquet", dimensionality=0)
            ),
        )
    )
    assert literal_text(blob) == "file (parquet) s3://bucket/df.parquet"
    assert literal_text(scalar(none_type=literals_pb2.Void())) == "None"
    assert literal_text(scalar(binary=literals_pb2.Binary(value=b"abc", tag="msgpack"))) == (
        "binary msgpack (3 bytes)"
    )
    flag = scalar(primitive=literals_pb2.Primitive(boolean=True))
    assert literal_text(flag) == "True"
    assert literal_text(scalar(schema=literals_pb2.Schema(uri="gs://b/s"))) == "schema gs://b/s"
