"""The operator commands (migrate, ls, show, delete, gc, stats) through click's CliRunner,
on a SQLite catalog file and on PostgreSQL, populated through ``taskcache.open``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from flyteidl2.core import identifier_pb2

import taskcache
from builders import FakeClock, int_map, make_identifier, make_key
from taskcache import Metadata, UriOutputReader, hashing
from taskcache.cli import main
from taskcache.cli.render import short_key, short_output

SCOPE_FLAGS = ["--scope", "org_1/project_1/domain_1"]
OLD_AGE = timedelta(days=45)
NEW_AGE = timedelta(days=5)


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def ok(*args: str, stdin: str | None = None) -> Result:
    result = run(*args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


@dataclass
class Catalog:
    """A catalog the tests populate, and the flags that point the commands at it."""

    database: str
    storage: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def flags(self) -> list[str]:
        return ["--database", self.database]

    def open(self, clock: FakeClock | None = None, **options: Any) -> taskcache.Client:
        if clock is not None:
            options["clock"] = clock
        return taskcache.open(self.database, storage=str(self.storage), **options)

    def listed_keys(self, *flags: str) -> list[str]:
        listing = ok_json("ls", *self.flags, "--all", *flags)
        return [item["key"] for item in listing["entries"]]


@pytest.fixture(autouse=True)
def hermetic_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer setting leaks in, and the default catalog is a temporary folder."""
    for name in ("TASKCACHE_DATABASE", "TASKCACHE_STORAGE", "TASKCACHE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path / "home"))


@pytest.fixture
def sqlite_catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'catalog.db'}", tmp_path / "blobs")


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Catalog:
    if request.param == "sqlite":
        found: Catalog = request.getfixturevalue("sqlite_catalog")
        return found
    return Catalog(request.getfixturevalue("clean_postgres"), tmp_path / "blobs")


def populate(catalog: Catalog) -> Catalog:
    """Write, a minute apart and oldest first: three inline ``square`` entries 45 days old,
    then two ``cube`` entries 5 days old, one inline with provenance, one in a blob.
    """
    clock = FakeClock(datetime.now(UTC) - OLD_AGE)
    with catalog.open(clock) as client:
        for x in range(3):
            key = make_key(x)
            client.put(key, int_map(o0=x * x))
            catalog.keys[f"square{x}"] = hashing.cache_key(key)
            clock.advance(60)
        clock.now = datetime.now(UTC) - NEW_AGE
        traced = make_key(7, name="tests.cube")
        execution = identifier_pb2.TaskExecutionIdentifier(
            task_id=make_identifier("tests.cube"),
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n3",
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                    org="org_1", project="project_1", domain="domain_1", name="run-42"
                ),
            ),
            retry_attempt=1,
        )
        client.put(traced, int_map(o0=343), Metadata(task_execution_id=execution))
        catalog.keys["traced"] = hashing.cache_key(traced)
        clock.advance(60)
    with catalog.open(clock, inline_max_bytes=0) as client:
        blob_key = make_key(8, name="tests.cube")
        client.put(blob_key, int_map(o0=512))
        catalog.keys["blob"] = hashing.cache_key(blob_key)
    return catalog


@pytest.fixture
def populated(catalog: Catalog) -> Catalog:
    return populate(catalog)


@pytest.fixture
def populated_sqlite(sqlite_catalog: Catalog) -> Catalog:
    return populate(sqlite_catalog)


NEWEST_FIRST = ["blob", "traced", "square2", "square1", "square0"]


def names(catalog: Catalog, keys: list[str]) -> list[str]:
    by_key = {key: name for name, key in catalog.keys.items()}
    return [by_key[key] for key in keys]


# --- ls -------------------------------------------------------------------------------------------


def test_ls_table_lists_newest_first_with_shortened_keys(populated: Catalog) -> None:
    output = ok("ls", *populated.flags).stdout
    lines = [line for line in output.splitlines() if "org_1/project_1/domain_1" in line]
    assert len(lines) == 5
    for line, name in zip(lines, NEWEST_FIRST, strict=True):
        key = populated.keys[name]
        assert short_key(key) in line
        assert key not in line
        assert "…" in short_key(key)
    assert "inline" in lines[1]
    blob_uri = ok_json("show", populated.keys["blob"], *populated.flags, *SCOPE_FLAGS)["output_uri"]
    assert short_output(blob_uri) in lines[0]
    assert short_output(blob_uri).endswith("/outputs.pb")
    assert "created (UTC)" in output
    assert "\x1b[" not in output  # no colors off a terminal


def test_ls_json_pages_and_filters(populated: Catalog) -> None:
    flags = populated.flags
    first = ok_json("ls", *flags, "--limit", "2")
    assert names(populated, [item["key"] for item in first["entries"]]) == NEWEST_FIRST[:2]
    assert first["more"] is True
    everything = ok_json("ls", *flags, "--all", "--limit", "2")
    assert names(populated, [item["key"] for item in everything["entries"]]) == NEWEST_FIRST
    assert everything["more"] is False
    exact = ok_json("ls", *flags, "--limit", "5")
    assert exact["more"] is False

    item = everything["entries"][0]
    assert item["scope"] == {"org": "org_1", "project": "project_1", "domain": "domain_1"}
    assert item["inline_bytes"] is None
    assert item["output_uri"].startswith(str(populated.storage))
    assert everything["entries"][1]["output_uri"] is None
    assert everything["entries"][1]["inline_bytes"] > 0
    created = datetime.fromisoformat(item["created_at"])
    assert item["created_at"].endswith("Z")
    assert abs(datetime.now(UTC) - NEW_AGE - created) < timedelta(minutes=5)

    # --prefix: the identifier hash starts every key of a task.
    square_prefix = populated.keys["square0"].split("-", 1)[0]
    assert names(populated, populated.listed_keys("--prefix", square_prefix)) == [
        "square2",
        "square1",
        "square0",
    ]
    assert populated.listed_keys("--scope", "*/project_1/domain_1") == [
        populated.keys[name] for name in NEWEST_FIRST
    ]
    assert populated.listed_keys("--scope", "org_2/*/*") == []
    assert populated.listed_keys("--scope", "(unscoped)") == []
    assert populated.listed_keys("--prefix", "no-such-prefix") == []


def test_ls_all_prints_every_page_as_one_table(populated_sqlite: Catalog) -> None:
    result = ok("ls", *populated_sqlite.flags, "--all", "--limit", "2")
    assert result.stdout.count("created (UTC)") == 1
    assert result.stdout.count("org_1/project_1/domain_1") == 5
    assert "more entries" not in result.output


def test_ls_hints_when_cut_short(populated_sqlite: Catalog) -> None:
    result = ok("ls", *populated_sqlite.flags, "--limit", "3")
    assert result.stdout.count("org_1/project_1/domain_1") == 3
    assert "more entries follow" in result.stderr


def test_ls_on_an_empty_catalog(sqlite_catalog: Catalog) -> None:
    assert "No entries." in ok("ls", *sqlite_catalog.flags).stdout
    assert ok_json("ls", *sqlite_catalog.flags, "--all") == {"entries": [], "more": False}


def test_ls_rejects_a_zero_limit(sqlite_catalog: Catalog) -> None:
    assert run("ls", *sqlite_catalog.flags, "--limit", "0").exit_code == 2


# --- show -----------------------------------------------------------------------------------------


def test_show_inline_entry_with_provenance(populated: Catalog) -> None:
    key = populated.keys["traced"]
    shown = ok_json("show", key, *populated.flags, *SCOPE_FLAGS)
    assert shown["key"] == key
    assert shown["outputs"] == {"literals": {"o0": {"scalar": {"primitive": {"integer": "343"}}}}}
    assert shown["inline_bytes"] == len(int_map(o0=343).SerializeToString())
    assert shown["output_uri"] is None
    assert shown["source_identifier"]["name"] == "tests.cube"
    assert shown["source_identifier"]["resourceType"] == "TASK"
    assert shown["key_map"]["execution-name"] == "run-42"
    execution = shown["source_execution"]
    assert execution["nodeExecutionId"]["executionId"]["name"] == "run-42"
    assert execution["retryAttempt"] == 1
    assert shown["reservation"] is None
    assert shown["problems"] == []

    table = ok("show", key, *populated.flags, *SCOPE_FLAGS).stdout
    assert key in table  # whole, on one line
    assert "tests.cube" in table
    assert "run-42 node n3 attempt 1" in table
    assert re.search(r"^o0 +343\b", table, re.MULTILINE)
    assert re.search(r"^reservation +none$", table, re.MULTILINE)


def test_show_blob_entry_and_its_reservation(populated: Catalog) -> None:
    key = populated.keys["blob"]
    with populated.open() as client:
        client.get_or_extend_reservation(
            make_key(8, name="tests.cube"), "worker-9", timedelta(seconds=5)
        )
    shown = ok_json("show", key, *populated.flags, *SCOPE_FLAGS)
    assert shown["outputs"] is None
    assert shown["inline_bytes"] is None
    assert Path(shown["output_uri"]).is_relative_to(populated.storage)
    reservation = shown["reservation"]
    assert reservation["owner_id"] == "worker-9"
    assert reservation["active"] is True
    assert reservation["heartbeat_interval_seconds"] == 5.0
    expires = datetime.fromisoformat(reservation["expires_at"])
    assert datetime.now(UTC) < expires < datetime.now(UTC) + timedelta(minutes=1)

    table = ok("show", key, *populated.flags, *SCOPE_FLAGS).stdout
    assert shown["output_uri"] in table
    assert "active: held by worker-9" in table


def test_show_expired_reservation(populated_sqlite: Catalog) -> None:
    past = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    with populated_sqlite.open(past) as client:
        client.get_or_extend_reservation(make_key(0), "worker-1", timedelta(seconds=1))
    key = populated_sqlite.keys["square0"]
    shown = ok_json("show", key, *populated_sqlite.flags, *SCOPE_FLAGS)
    assert shown["reservation"]["active"] is False
    assert (
        "expired: held by worker-1" in ok("show", key, *populated_sqlite.flags, *SCOPE_FLAGS).stdout
    )


def test_show_missing_entry_exits_1(populated: Catalog) -> None:
    key = populated.keys["traced"]
    unscoped = run("show", key, *populated.flags, "--scope", "(unscoped)")  # it is scoped
    assert unscoped.exit_code == 1
    assert "no entry" in unscoped.stderr
    assert "(unscoped)" in unscoped.stderr
    missing = run("show", "no-such-key", *populated.flags, *SCOPE_FLAGS, "--json")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"]["code"] == "NOT_FOUND"


# --- delete ---------------------------------------------------------------------------------------


def test_delete_asks_first(populated_sqlite: Catalog) -> None:
    key = populated_sqlite.keys["square1"]
    flags = [*populated_sqlite.flags, *SCOPE_FLAGS]
    refused = run("delete", key, *flags, stdin="n\n")
    assert refused.exit_code == 1
    assert "Delete entry" in refused.stderr
    assert "Aborted" in refused.stderr
    no_answer = run("delete", key, *flags)  # end of input is no
    assert no_answer.exit_code == 1
    assert key in populated_sqlite.listed_keys()

    accepted = ok("delete", key, *flags, stdin="y\n")
    assert f"Deleted entry {key}" in accepted.stdout
    assert key not in populated_sqlite.listed_keys()
    assert len(populated_sqlite.listed_keys()) == 4


def test_delete_yes_with_blob(populated: Catalog) -> None:
    key = populated.keys["blob"]
    uri = ok_json("show", key, *populated.flags, *SCOPE_FLAGS)["output_uri"]
    assert Path(uri).exists()
    result = ok(
        "delete",
        key,
        *populated.flags,
        *SCOPE_FLAGS,
        "--delete-blob",
        "--storage",
        str(populated.storage),
        "--yes",
    )
    assert f"Deleted blob {uri}" in result.stdout
    assert not Path(uri).exists()
    assert key not in populated.listed_keys()
    gone = run("delete", key, *populated.flags, *SCOPE_FLAGS, "--yes")
    assert gone.exit_code == 1
    assert "no entry" in gone.stderr


def test_delete_keeps_a_blob_outside_the_storage_root(
    populated_sqlite: Catalog, tmp_path: Path
) -> None:
    key = populated_sqlite.keys["blob"]
    uri = ok_json("show", key, *populated_sqlite.flags, *SCOPE_FLAGS)["output_uri"]
    other_root = tmp_path / "other-root"
    result = ok(
        "delete",
        key,
        *populated_sqlite.flags,
        *SCOPE_FLAGS,
        "--delete-blob",
        "--storage",
        str(other_root),
        "-y",
    )
    assert "not under the storage root" in result.stderr
    assert Path(uri).exists()


def test_delete_without_blob_flag_keeps_the_blob(populated_sqlite: Catalog) -> None:
    key = populated_sqlite.keys["blob"]
    uri = ok_json("show", key, *populated_sqlite.flags, *SCOPE_FLAGS)["output_uri"]
    ok("delete", key, *populated_sqlite.flags, *SCOPE_FLAGS, "--yes")
    assert Path(uri).exists()


def test_delete_blob_needs_a_storage_root(populated_sqlite: Catalog) -> None:
    key = populated_sqlite.keys["blob"]
    result = run("delete", key, *populated_sqlite.flags, *SCOPE_FLAGS, "--delete-blob", "--yes")
    assert result.exit_code == 2
    assert "needs --storage" in result.stderr
    assert key in populated_sqlite.listed_keys()


# --- gc -------------------------------------------------------------------------------------------


def test_gc_dry_run_then_for_real(populated: Catalog) -> None:
    flags = [*populated.flags, "--older-than", "30d"]
    dry = ok_json("gc", *flags, "--dry-run")
    inline = sum(len(int_map(o0=x * x).SerializeToString()) for x in range(3))
    assert dry["dry_run"] is True
    assert (dry["entries"], dry["inline_bytes_freed"], dry["blobs_deleted"]) == (3, inline, 0)
    assert dry["older_than_seconds"] == 30 * 86400
    cutoff = datetime.fromisoformat(dry["cutoff"])
    assert abs(datetime.now(UTC) - timedelta(days=30) - cutoff) < timedelta(minutes=5)
    assert len(populated.listed_keys()) == 5

    real = ok_json("gc", *flags, "--batch-size", "2")
    assert {k: v for k, v in real.items() if k not in ("cutoff", "now")} == {
        **{k: v for k, v in dry.items() if k not in ("cutoff", "now")},
        "dry_run": False,
    }
    assert names(populated, populated.listed_keys()) == ["blob", "traced"]
    assert ok_json("gc", *flags)["entries"] == 0


def test_gc_table_summary(populated_sqlite: Catalog) -> None:
    flags = [*populated_sqlite.flags, "--older-than", "4w"]
    dry = ok("gc", *flags, "--dry-run").stdout
    assert "entries would delete 3" in " ".join(dry.split())
    assert "old entries would delete 3 (last updated before" in " ".join(dry.split())
    assert "kept (no --delete-blobs)" in dry
    real = ok("gc", *flags).stdout
    assert "entries deleted" in real
    assert "inline bytes freed" in real
    assert "\x1b[" not in real  # no progress bar or colors off a terminal


def test_gc_deletes_blobs_only_under_the_storage_root(populated: Catalog, tmp_path: Path) -> None:
    inside_uri = ok_json("show", populated.keys["blob"], *populated.flags, *SCOPE_FLAGS)[
        "output_uri"
    ]
    outside = tmp_path / "elsewhere" / "outputs.pb"
    outside.parent.mkdir()
    outside.write_bytes(int_map(o0=1).SerializeToString())
    # An old entry stored by reference to a blob outside the root.
    with populated.open(FakeClock(datetime.now(UTC) - OLD_AGE)) as client:
        client.put(make_key(99), UriOutputReader(str(outside)))
    flags = [*populated.flags, "--storage", str(populated.storage), "--delete-blobs"]

    # Every entry is older than two days; one blob is ours, one lies outside the root.
    young = ok_json("gc", *flags, "--older-than", "2d", "--dry-run")
    assert (young["entries"], young["blobs_deleted"], young["blobs_skipped"]) == (6, 1, 1)
    assert Path(inside_uri).exists()

    result = ok_json("gc", *flags, "--older-than", "2d")
    assert (result["entries"], result["blobs_deleted"], result["blobs_skipped"]) == (6, 1, 1)
    assert result["blob_errors"] == 0
    assert not Path(inside_uri).exists()
    assert outside.exists()
    assert populated.listed_keys() == []


@pytest.mark.parametrize("value", ["30", "3x", "0d", "-1d", "", "1.5d", "1M", "999999999999w"])
def test_gc_rejects_bad_durations(populated_sqlite: Catalog, value: str) -> None:
    result = run("gc", *populated_sqlite.flags, "--older-than", value)
    assert result.exit_code == 2, result.output
    assert "--older-than" in result.stderr
    assert len(populated_sqlite.listed_keys()) == 5


def test_gc_needs_storage_for_blobs(populated_sqlite: Catalog) -> None:
    # Without --older-than or --max-bytes only expired entries go: none here.
    assert ok_json("gc", *populated_sqlite.flags)["entries"] == 0
    result = run("gc", *populated_sqlite.flags, "--older-than", "1d", "--delete-blobs")
    assert result.exit_code == 2
    assert "needs --storage" in result.stderr
    assert (
        run("gc", *populated_sqlite.flags, "--older-than", "1d", "--batch-size", "0").exit_code == 2
    )
    assert len(populated_sqlite.listed_keys()) == 5


# --- stats ----------------------------------------------------------------------------------------


def test_stats(populated: Catalog) -> None:
    with populated.open() as client:
        client.get_or_extend_reservation(make_key(50), "worker-1", timedelta(seconds=5))
    listing = ok_json("ls", *populated.flags, "--all")["entries"]
    inline = sum(item["inline_bytes"] or 0 for item in listing)
    stats = ok_json("stats", *populated.flags)
    assert stats["entries"] == 5
    assert stats["inline_bytes"] == inline
    assert stats["blob_entries"] == 1
    assert stats["active_reservations"] == 1
    assert stats["by_scope"] == [
        {
            "org": "org_1",
            "project": "project_1",
            "domain": "domain_1",
            "entries": 5,
            "inline_bytes": inline,
            "blob_entries": 1,
        }
    ]
    assert stats["as_of"].endswith("Z")

    table = ok("stats", *populated.flags).stdout
    assert f"inline bytes         {inline} B" in table
    assert "active reservations  1" in table
    assert "org_1/project_1/domain_1" in table


def test_stats_of_an_empty_catalog(sqlite_catalog: Catalog) -> None:
    stats = ok_json("stats", *sqlite_catalog.flags)
    assert {k: v for k, v in stats.items() if k != "as_of"} == {
        "entries": 0,
        "inline_bytes": 0,
        "blob_entries": 0,
        "active_reservations": 0,
        "by_scope": [],
    }


# --- migrate --------------------------------------------------------------------------------------


def test_migrate_sqlite_prints_the_version_and_is_idempotent(tmp_path: Path) -> None:
    from taskcache.repositories.sqlite import SCHEMA_VERSION

    database = f"sqlite:///{tmp_path / 'fresh' / 'catalog.db'}"
    for _ in range(2):
        assert ok("migrate", "--database", database).stdout.strip() == (
            f"{database}: schema version {SCHEMA_VERSION}"
        )
    assert (tmp_path / "fresh" / "catalog.db").exists()


@pytest.fixture
def empty_postgres_database(postgres_server: Any) -> Iterator[str]:
    """A database with no taskcache schema yet, dropped afterwards."""
    url: str = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


def test_migrate_postgres_prints_the_version_and_is_idempotent(
    empty_postgres_database: str,
) -> None:
    import psycopg

    from taskcache.repositories.postgres import SCHEMA_VERSION

    for _ in range(2):
        assert ok("migrate", "--database", empty_postgres_database).stdout.strip() == (
            f"{empty_postgres_database}: schema version {SCHEMA_VERSION}"
        )
    with psycopg.connect(empty_postgres_database) as conn:
        versions = conn.execute("SELECT version FROM taskcache_schema_version").fetchall()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]


def test_migrate_reports_an_unreachable_database_without_its_password() -> None:
    result = run("migrate", "--database", "postgresql://admin:s3cret@127.0.0.1:1/nowhere")
    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert "postgresql://admin:***@127.0.0.1:1/nowhere" in result.stderr


# --- which catalog --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ls", "show k", "delete k --yes", "stats", "migrate"])
def test_a_bad_database_is_a_usage_error(command: str) -> None:
    result = run(*command.split(), "--database", "ftp://host/db")
    assert result.exit_code == 2
    assert "unsupported scheme" in result.stderr


def test_unreachable_postgres_exits_1(populated_sqlite: Catalog) -> None:
    result = run("stats", "--database", "postgresql://admin:s3cret@127.0.0.1:1/nowhere")
    assert result.exit_code == 1
    assert "cannot open postgresql://admin:***@127.0.0.1:1/nowhere" in result.stderr
    assert "s3cret" not in result.output


def test_default_catalog_is_the_home_one_with_its_blobs(tmp_path: Path) -> None:
    home = tmp_path / "home"  # TASKCACHE_HOME, set by hermetic_environment
    old = FakeClock(datetime.now(UTC) - OLD_AGE)
    with taskcache.open(clock=old, inline_max_bytes=0) as client:
        client.put(make_key(1), int_map(o0=1))
    blob_files = list((home / "blobs").rglob("outputs.pb"))
    assert len(blob_files) == 1
    assert ok_json("stats")["entries"] == 1
    # As for serve, the embedded default catalog implies its blob root: no --storage needed.
    result = ok_json("gc", "--older-than", "30d", "--delete-blobs")
    assert (result["entries"], result["blobs_deleted"]) == (1, 1)
    assert not blob_files[0].exists()


def test_taskcache_database_and_config_file_choose_the_catalog(
    populated_sqlite: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert ok_json("stats")["entries"] == 0  # the (empty) home catalog
    monkeypatch.setenv("TASKCACHE_DATABASE", populated_sqlite.database)
    assert ok_json("stats")["entries"] == 5
    monkeypatch.delenv("TASKCACHE_DATABASE")
    config = tmp_path / "taskcache.toml"
    config.write_text(f'database = "{populated_sqlite.database}"\n')
    assert ok_json("stats", "--config", str(config))["entries"] == 5
    monkeypatch.setenv("TASKCACHE_CONFIG", str(config))
    assert ok_json("ls")["more"] is False
    assert len(ok_json("ls")["entries"]) == 5
    # A flag beats both.
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert ok_json("stats", "--database", empty)["entries"] == 0


# --- the command line as a whole ------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    output = ok("--help").stdout
    for command in ("key", "demo", "serve", "migrate", "ls", "show", "delete", "gc", "stats"):
        assert f"  {command} " in output


def test_key_imports_no_operator_or_server_code() -> None:
    script = (
        "import sys\n"
        "from taskcache.cli import main\n"
        "main(['key', '--project', 'p', '--domain', 'd', '--name', 'n'], standalone_mode=False)\n"
        "heavy = ['rich', 'psycopg', 'uvicorn', 'taskcache.operations', 'taskcache.cli.operate',\n"
        "         'taskcache.cli.serve', 'taskcache.server.settings', 'taskcache.server.runner']\n"
        "print('LOADED', [name for name in heavy if name in sys.modules])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "LOADED []" in completed.stdout


def test_python_dash_m_runs_operator_commands(populated_sqlite: Catalog) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "taskcache", "stats", *populated_sqlite.flags, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(completed.stdout)["entries"] == 5


def test_unscoped_entries_need_no_scope_flags(sqlite_catalog: Catalog) -> None:
    # Flyte 1 and the unscoped service file entries under the empty scope.
    from taskcache.repositories.base import EntryRow, Scope
    from taskcache.repositories.sqlite import SqliteRepository

    now = datetime.now(UTC)
    path = sqlite_catalog.database.removeprefix("sqlite://")
    with SqliteRepository(path) as repository:
        repository.create_entry(
            EntryRow(
                scope=Scope(),
                key="flyte1-key",
                output_uri=None,
                output_literals=int_map(o0=1).SerializeToString(),
                source_identifier=make_identifier().SerializeToString(),
                key_map={},
                created_at=now,
                last_updated_at=now,
            ),
            None,
        )
    assert "(unscoped)" in ok("ls", *sqlite_catalog.flags).stdout
    shown = ok_json("show", "flyte1-key", *sqlite_catalog.flags)
    assert shown["scope"] == {"org": "", "project": "", "domain": ""}
    ok("delete", "flyte1-key", *sqlite_catalog.flags, "--yes")
    assert sqlite_catalog.listed_keys() == []


def test_ls_and_show_report_expiry_and_last_access(sqlite_catalog: Catalog) -> None:
    """An entry put with a TTL shows when it expires and when it was last used, in ls
    --json/--wide and show (text and --json); one without a TTL shows no expiry.
    """
    written = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    clock = FakeClock(written)
    with sqlite_catalog.open(clock) as client:
        client.put(make_key(1), int_map(o0=1), ttl=timedelta(days=400))
        client.put(make_key(2), int_map(o0=4))
    expiring, forever = hashing.cache_key(make_key(1)), hashing.cache_key(make_key(2))
    listed = {
        item["key"]: item for item in ok_json("ls", *sqlite_catalog.flags, "--all")["entries"]
    }
    assert listed[expiring]["expires_at"] == "2027-12-06T12:00:00Z"
    assert listed[forever]["expires_at"] is None
    assert listed[expiring]["last_accessed_at"] == "2026-11-01T12:00:00Z"
    wide = ok("ls", *sqlite_catalog.flags, "--wide").stdout
    assert "expires (UTC)" in wide and "last access (UTC)" in wide
    line = next(row for row in wide.splitlines() if expiring in row)
    assert "2027-12-06 12:00:00" in line
    shown = ok_json("show", expiring, *sqlite_catalog.flags)
    assert (shown["expires_at"], shown["last_accessed_at"]) == (
        "2027-12-06T12:00:00Z",
        "2026-11-01T12:00:00Z",
    )
    text = ok("show", expiring, *sqlite_catalog.flags).stdout
    assert re.search(r"expires\s+2027-12-06T12:00:00Z", text)
    assert re.search(r"last access\s+2026-11-01T12:00:00Z", text)
    assert "expires" not in ok("show", forever, *sqlite_catalog.flags).stdout
