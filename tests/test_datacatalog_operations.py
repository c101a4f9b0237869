"""Operating Flyte 1 caches: listing and evicting DataCatalog artifacts by project, domain, task
and age (``taskcache.datacatalog_operations`` and ``taskcache artifacts``), on SQLite and
PostgreSQL repositories, with the blobs under the storage root removed and others kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from taskcache import datacatalog_operations as ops
from taskcache.cli import main
from taskcache.errors import InvalidArgumentError, NotFoundError
from taskcache.repositories.datacatalog_base import (
    ArtifactDatum,
    ArtifactRow,
    DatacatalogRepository,
    DatasetKey,
    DatasetRow,
)
from taskcache.resolver import open_datacatalog_repository
from taskcache.storage import BlobStore

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    url: str = request.getfixturevalue("clean_postgres")
    return url


@pytest.fixture
def repository(database: str) -> Iterator[DatacatalogRepository]:
    opened = open_datacatalog_repository(database, pool_size=2)
    yield opened
    opened.close()


def dataset(project: str, task: str, domain: str = "development") -> DatasetRow:
    return DatasetRow(
        key=DatasetKey("", project, domain, f"flyte_task-{task}", "1.0-abc"),
        uuid=f"{project}-{domain}-{task}",
        metadata=b"",
        partition_keys=(),
        created_at=NOW - timedelta(days=90),
    )


def artifact(
    row: DatasetRow, artifact_id: str, age: timedelta, data: tuple[ArtifactDatum, ...]
) -> ArtifactRow:
    return ArtifactRow(
        dataset=row,
        artifact_id=artifact_id,
        metadata=b"",
        partitions=(),
        data=data,
        tags=(),
        created_at=NOW - age,
    )


@pytest.fixture
def populated(repository: DatacatalogRepository, tmp_path: Path) -> tuple[BlobStore, list[str]]:
    """p1's wf.a (an old artifact with a blob under storage, a new inline one), p1's wf.b
    (old, with a blob outside storage) and p2's wf.a (new).
    """
    blobs = BlobStore(str(tmp_path / "blobs"))
    outside = tmp_path / "elsewhere.pb"
    outside.write_bytes(b"keep me")
    owned = blobs.write_file("datacatalog/x", "value-0.pb", b"old value")
    a1, b1, a2 = dataset("p1", "wf.a"), dataset("p1", "wf.b"), dataset("p2", "wf.a")
    for row in (a1, b1, a2):
        assert repository.create_dataset(row)
    inline = (ArtifactDatum("o0", b"12345", None),)
    assert repository.create_artifact(
        artifact(a1, "old", timedelta(days=40), (ArtifactDatum("o0", None, owned),))
    )
    assert repository.create_artifact(artifact(a1, "new", timedelta(days=1), inline))
    assert repository.create_artifact(
        artifact(b1, "old", timedelta(days=41), (ArtifactDatum("o0", None, str(outside)),))
    )
    assert repository.create_artifact(artifact(a2, "new", timedelta(days=2), inline))
    return blobs, [owned, str(outside)]


def ids(repository: DatacatalogRepository, selection: ops.ArtifactSelection) -> list[str]:
    return [
        f"{record.project}/{record.task}/{record.artifact_id}"
        for page in ops.iter_artifacts(repository, selection, NOW, page_size=2)
        for record in page
    ]


def test_listing_selects_by_project_task_and_age(
    repository: DatacatalogRepository, populated: tuple[BlobStore, list[str]]
) -> None:
    everything = ids(repository, ops.ArtifactSelection())
    assert everything == ["p1/wf.a/new", "p2/wf.a/new", "p1/wf.a/old", "p1/wf.b/old"]
    assert ids(repository, ops.ArtifactSelection(task="wf.a")) == [
        "p1/wf.a/new",
        "p2/wf.a/new",
        "p1/wf.a/old",
    ]
    assert ids(repository, ops.ArtifactSelection(project="p1", task="wf.a")) == [
        "p1/wf.a/new",
        "p1/wf.a/old",
    ]
    old = ops.ArtifactSelection(older_than=timedelta(days=30))
    assert ids(repository, old) == ["p1/wf.a/old", "p1/wf.b/old"]
    record = ops.find_artifact(
        repository, "new", DatasetKey("", "p2", "development", "flyte_task-wf.a", "1.0-abc")
    )
    assert (record.project, record.inline_bytes, record.values) == ("p2", 5, ("o0",))
    with pytest.raises(NotFoundError):
        ops.find_artifact(repository, "missing")
    with pytest.raises(InvalidArgumentError):
        ids(repository, ops.ArtifactSelection(older_than=timedelta(0)))


def test_evicting_a_task_removes_owned_blobs_only(
    repository: DatacatalogRepository, populated: tuple[BlobStore, list[str]]
) -> None:
    blobs, (owned, outside) = populated
    dry = ops.evict_artifacts(
        repository, blobs, ops.ArtifactSelection(project="p1"), NOW, dry_run=True, batch_size=1
    )
    assert (dry.artifacts, dry.blobs_deleted, dry.blobs_skipped) == (3, 1, 1)
    assert len(ids(repository, ops.ArtifactSelection())) == 4  # the dry run deleted nothing
    done = ops.evict_artifacts(
        repository, blobs, ops.ArtifactSelection(project="p1"), NOW, batch_size=1
    )
    assert done == ops.EvictionSummary(
        artifacts=3, inline_bytes_freed=5, blobs_deleted=1, blob_errors=0, blobs_skipped=1
    )
    assert not Path(owned).exists()
    assert Path(outside).exists()
    assert ids(repository, ops.ArtifactSelection()) == ["p2/wf.a/new"]
    assert ops.artifact_stats(repository).artifacts == 1


def test_evicting_one_artifact_by_id_and_dataset(
    repository: DatacatalogRepository, populated: tuple[BlobStore, list[str]]
) -> None:
    blobs, (owned, _) = populated
    a1 = DatasetKey("", "p1", "development", "flyte_task-wf.a", "1.0-abc")
    dry = ops.evict_artifact(repository, blobs, "old", a1, dry_run=True)
    assert (dry.artifacts, dry.blobs_deleted) == (1, 1)
    assert Path(owned).exists()
    done = ops.evict_artifact(repository, blobs, "old", a1)
    assert (done.artifacts, done.blobs_deleted, done.blobs_skipped) == (1, 1, 0)
    assert not Path(owned).exists()
    assert "p1/wf.b/old" in ids(repository, ops.ArtifactSelection())  # same id, other dataset
    with pytest.raises(NotFoundError):
        ops.evict_artifact(repository, blobs, "old", a1)
    only_version = ops.ArtifactSelection(task="wf.a", version="other")
    assert ids(repository, only_version) == []


def test_evicting_by_age_keeps_recent_artifacts(
    repository: DatacatalogRepository, populated: tuple[BlobStore, list[str]]
) -> None:
    blobs, _ = populated
    summary = ops.evict_artifacts(
        repository, blobs, ops.ArtifactSelection(older_than=timedelta(days=30)), NOW
    )
    assert summary.artifacts == 2
    assert ids(repository, ops.ArtifactSelection()) == ["p1/wf.a/new", "p2/wf.a/new"]


def test_the_cli_lists_evicts_and_counts(
    database: str, populated: tuple[BlobStore, list[str]], tmp_path: Path
) -> None:
    runner = CliRunner()
    base = ["--database", database]

    def run(*args: str) -> str:
        result = runner.invoke(main, ["artifacts", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    listed = json.loads(run("ls", *base, "--task", "wf.a", "--json"))["artifacts"]
    assert [(a["project"], a["artifact_id"]) for a in listed][:2] == [("p1", "new"), ("p2", "new")]
    shown = json.loads(run("show", "old", *base, "--json"))
    assert shown["task"] in {"wf.a", "wf.b"}
    refused = runner.invoke(main, ["artifacts", "delete", *base, "--yes"])
    assert refused.exit_code == 2  # no selection and no --everything
    storage = str(tmp_path / "blobs")
    evicted = json.loads(
        run("delete", *base, "--task", "wf.b", "--storage", storage, "--yes", "--json")
    )
    assert (evicted["artifacts"], evicted["blobs_skipped"]) == (1, 1)
    gone = json.loads(run("gc", *base, "--older-than", "30d", "--storage", storage, "--json"))
    assert (gone["artifacts"], gone["blobs_deleted"]) == (1, 1)
    assert json.loads(run("stats", *base, "--json"))["artifacts"] == 2


def test_the_cli_round_trips_what_ls_prints(
    database: str, repository: DatacatalogRepository, populated: tuple[BlobStore, list[str]]
) -> None:
    """The scope, task, version and id ``artifacts ls`` prints, pasted into ``show`` and
    ``delete``, name that one artifact; failures are JSON documents with their codes.
    """
    blobs, (owned, _) = populated
    runner = CliRunner()
    base = ["--database", database]
    listed = runner.invoke(main, ["artifacts", "ls", *base, "--older-than", "30d"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["/p1/development", "wf.a", "1.0-abc", "old"],
        ["/p1/development", "wf.b", "1.0-abc", "old"],
    ]
    scope, task, version, artifact_id = lines[0].split()[:4]
    named = ["--scope", scope, "--task", task, "--version", version]
    shown = runner.invoke(main, ["artifacts", "show", artifact_id, *base, *named, "--json"])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.output)
    assert (document["scope_text"], document["task"], document["blob_uris"]) == (
        scope,
        task,
        [owned],
    )
    deleted = runner.invoke(
        main,
        ["artifacts", "delete", artifact_id, *base, *named, "--storage", blobs.root, "--yes"],
    )
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted 1 artifacts" in deleted.output
    assert not Path(owned).exists()
    again = runner.invoke(main, ["artifacts", "show", artifact_id, *base, *named, "--json"])
    assert again.exit_code == 1
    assert json.loads(again.output)["error"]["code"] == "NOT_FOUND"
    # wf.b's artifact "old" is untouched: the scope and task named one dataset.
    assert (
        ops.find_artifact(
            repository,
            "old",
            DatasetKey("", "p1", "development", "flyte_task-wf.b", "1.0-abc"),
        ).task
        == "wf.b"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "--scope", "p1/development"],
        ["ls", "--project", "p1"],
        ["show", "old", "--task", "wf.a"],
        ["delete", "old", "--older-than", "1d", "--yes"],
    ],
)
def test_bad_artifact_selections_are_json_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = CliRunner().invoke(
        main, ["artifacts", *args, "--database", str(tmp_path / "c.db"), "--json"]
    )
    assert result.exit_code == 2
    assert json.loads(result.output)["error"]["code"] == "INVALID_ARGUMENT"
