"""``taskcache artifacts``: operating the Flyte 1 caches ``taskcache serve`` stores for
``datacatalog.DataCatalog`` (``ls``, ``show``, ``delete``, ``gc``, ``stats``).

The commands open the database ``taskcache serve`` would serve with the same ``--database``
/ ``--config`` (and ``TASKCACHE_*`` variables), select artifacts by ``--org``, ``--project``,
``--domain``, ``--task`` and ``--older-than``, and call :mod:`taskcache.datacatalog_operations`.
``--json`` prints one JSON document on stdout. They parse flags and render; nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Any, TypeVar

import click

from taskcache import datacatalog_operations as ops
from taskcache.cli.operate import DurationType
from taskcache.errors import CacheError, InvalidArgumentError, NotFoundError
from taskcache.manager import utc_now
from taskcache.repositories.datacatalog_base import DatacatalogRepository, DatasetKey
from taskcache.resolver import open_datacatalog_repository, redact
from taskcache.server.settings import Settings, load_settings
from taskcache.storage import BlobStore

F = TypeVar("F", bound=Callable[..., Any])


def _database_options(function: F) -> F:
    function = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="serve's config file; its database and storage apply.",
    )(function)
    return click.option(
        "--database", default=None, help="The database taskcache serve serves (as for serve)."
    )(function)


def _selection_options(function: F) -> F:
    """Add the selection flags, passed to ``function`` as one ``selection`` argument."""
    options = [
        click.option("--org", default=None, help="Only artifacts of this org."),
        click.option("--project", default=None, help="Only artifacts of this project."),
        click.option("--domain", default=None, help="Only artifacts of this domain."),
        click.option("--task", default=None, help="Only this task's (dataset flyte_task-<task>)."),
        click.option(
            "--older-than",
            type=DurationType(),
            default=None,
            help="Only artifacts created longer ago than this: 30d, 12h, 90m, 1w, …",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _selection(
    org: str | None,
    project: str | None,
    domain: str | None,
    task: str | None,
    older_than: timedelta | None,
) -> ops.ArtifactSelection:
    return ops.ArtifactSelection(org, project, domain, task, older_than)


def _json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(
        function
    )


def _settings(
    database: str | None, config_file: str | None, storage: str | None = None
) -> Settings:
    try:
        return load_settings({"database": database, "storage": storage}, config_file=config_file)
    except CacheError as error:
        raise click.UsageError(str(error)) from error


@contextmanager
def _catalog(settings: Settings) -> Iterator[DatacatalogRepository]:
    """Yield the DataCatalog repository of ``settings.database``; close it afterwards."""
    try:
        repository = open_datacatalog_repository(settings.database, pool_size=1)
    except InvalidArgumentError as error:
        raise click.UsageError(str(error)) from error
    except CacheError as error:
        raise click.ClickException(f"cannot open {redact(settings.database)}: {error}") from error
    try:
        yield repository
    except InvalidArgumentError as error:
        raise click.UsageError(str(error)) from error
    except CacheError as error:
        raise click.ClickException(str(error)) from error
    finally:
        repository.close()


def _record_json(record: ops.ArtifactRecord) -> dict[str, Any]:
    document = asdict(record)
    document["created_at"] = record.created_at.isoformat()
    document["tags"] = list(record.tags)
    document["values"] = list(record.values)
    document["blob_uris"] = list(record.blob_uris)
    return document


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


@click.group("artifacts")
def artifacts_group() -> None:
    """Flyte 1 caches (DataCatalog artifacts): ls, show, delete, gc, stats."""


@artifacts_group.command("ls")
@_database_options
@_selection_options
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@_json_option
def ls_command(
    database: str | None,
    config_file: str | None,
    limit: int,
    as_json: bool,
    **selection: Any,
) -> None:
    """List artifacts, newest first: project/domain, task, version, id, tags, created."""
    settings = _settings(database, config_file)
    with _catalog(settings) as repository:
        pages = ops.iter_artifacts(repository, _selection(**selection), utc_now(), limit)
        records = next(pages, [])
    if as_json:
        _echo_json({"artifacts": [_record_json(record) for record in records]})
        return
    if not records:
        click.echo("No artifacts.")
        return
    for record in records:
        tags = ",".join(record.tags) or "-"
        click.echo(
            f"{record.project}/{record.domain}  {record.task}  {record.dataset_version}  "
            f"{record.artifact_id}  tags={tags}  {record.created_at.isoformat()}"
        )


@artifacts_group.command("show")
@click.argument("artifact_id")
@_database_options
@click.option("--org", default="", help="The dataset's org (default: empty).")
@click.option("--project", default=None, help="The dataset's project.")
@click.option("--domain", default=None, help="The dataset's domain.")
@click.option("--task", default=None, help="The dataset's task (dataset flyte_task-<task>).")
@click.option("--version", "dataset_version", default=None, help="The dataset's version.")
@_json_option
def show_command(
    artifact_id: str,
    database: str | None,
    config_file: str | None,
    org: str,
    project: str | None,
    domain: str | None,
    task: str | None,
    dataset_version: str | None,
    as_json: bool,
) -> None:
    """Show one artifact (of the dataset named by all of --project, --domain, --task and
    --version; otherwise the newest with this id). Exits 1 if there is none.
    """
    parts = (project, domain, task, dataset_version)
    dataset = (
        DatasetKey(org, project, domain, ops.TASK_DATASET_PREFIX + task, dataset_version)
        if project and domain and task and dataset_version
        else None
    )
    if dataset is None and any(parts):
        raise click.UsageError("name a dataset with all of --project, --domain, --task, --version")
    settings = _settings(database, config_file)
    with _catalog(settings) as repository:
        try:
            record = ops.find_artifact(repository, artifact_id, dataset)
        except NotFoundError as error:
            raise click.ClickException(str(error)) from error
    if as_json:
        _echo_json(_record_json(record))
        return
    for name, value in _record_json(record).items():
        click.echo(f"{name}: {value}")


def _evict(
    settings: Settings,
    selection: ops.ArtifactSelection,
    *,
    dry_run: bool,
    as_json: bool,
) -> None:
    blobs = BlobStore(settings.storage) if settings.storage else None
    with _catalog(settings) as repository:
        summary = ops.evict_artifacts(repository, blobs, selection, utc_now(), dry_run=dry_run)
    if as_json:
        _echo_json({"dry_run": dry_run, **asdict(summary)})
        return
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(
        f"{verb} {summary.artifacts} artifacts ({summary.inline_bytes_freed} inline bytes, "
        f"{summary.blobs_deleted} blobs; {summary.blobs_skipped} blobs outside --storage kept, "
        f"{summary.blob_errors} blob errors)."
    )


@artifacts_group.command("delete")
@_database_options
@_selection_options
@click.option("--everything", is_flag=True, help="Select every artifact (no other selection).")
@click.option("--storage", default=None, help="Blob root; only blobs under it are deleted.")
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would go.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@_json_option
def delete_command(
    database: str | None,
    config_file: str | None,
    everything: bool,
    storage: str | None,
    dry_run: bool,
    assume_yes: bool,
    as_json: bool,
    **selection: Any,
) -> None:
    """Evict the selected artifacts (a task's cache, a project's, everything older than
    --older-than), with their tags and the blobs the server wrote under --storage.
    """
    chosen = _selection(**selection)
    if chosen == ops.ArtifactSelection() and not everything:
        raise click.UsageError(
            "select artifacts (--project, --task, --older-than, …) or --everything"
        )
    settings = _settings(database, config_file, storage)
    if not (assume_yes or dry_run):
        click.confirm("Delete the selected artifacts?", abort=True, err=True)
    _evict(settings, chosen, dry_run=dry_run, as_json=as_json)


@artifacts_group.command("gc")
@click.option("--older-than", type=DurationType(), required=True, help="30d, 12h, 1w, …")
@_database_options
@click.option("--storage", default=None, help="Blob root; only blobs under it are deleted.")
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would go.")
@_json_option
def gc_command(
    older_than: timedelta,
    database: str | None,
    config_file: str | None,
    storage: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Evict every artifact created longer ago than --older-than (Flyte 1's TTL)."""
    settings = _settings(database, config_file, storage)
    selection = ops.ArtifactSelection(older_than=older_than)
    _evict(settings, selection, dry_run=dry_run, as_json=as_json)


@artifacts_group.command("stats")
@_database_options
@_json_option
def stats_command(database: str | None, config_file: str | None, as_json: bool) -> None:
    """Show DataCatalog totals: datasets, artifacts, tags, inline bytes, blob values."""
    settings = _settings(database, config_file)
    with _catalog(settings) as repository:
        stats = ops.artifact_stats(repository)
    if as_json:
        _echo_json(asdict(stats))
        return
    for name, value in asdict(stats).items():
        click.echo(f"{name}: {value}")
