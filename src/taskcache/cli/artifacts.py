"""``taskcache artifacts``: operating the Flyte 1 caches ``taskcache serve`` stores for
``datacatalog.DataCatalog`` (``ls``, ``show``, ``delete``, ``gc``, ``stats``).

The commands open the database ``taskcache serve`` would serve with the same ``--database``
/ ``--config`` (and ``TASKCACHE_*`` variables), select artifacts by ``--scope`` (written as
``ls`` prints it, as for the entry commands), ``--task``, ``--version`` and ``--older-than``,
and call :mod:`taskcache.datacatalog_operations`. ``ls`` prints each artifact's scope, task,
version and id in the form ``show`` and ``delete`` take back. ``--json`` prints one JSON
document on stdout, a failure included (:mod:`taskcache.cli.failure`). They parse flags and
render; nothing else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Any, TypeVar

import click

from taskcache import datacatalog_operations as ops
from taskcache.cli.failure import (
    USAGE_EXIT_CODE,
    CommandError,
    from_cache_error,
    opened_for_command,
)
from taskcache.cli.operate import (
    DURATION_TYPE,
    database_options,
    json_option,
    open_blob_store,
    scope_option,
)
from taskcache.errors import CacheError
from taskcache.manager import utc_now
from taskcache.operations import describe_scope
from taskcache.repositories.base import EntryFilter, Scope
from taskcache.repositories.datacatalog_base import DatacatalogRepository, DatasetKey
from taskcache.resolver import open_datacatalog_repository
from taskcache.server.settings import Settings, load_settings
from taskcache.storage import BlobStore

F = TypeVar("F", bound=Callable[..., Any])


def _dataset_options(function: F) -> F:
    """Add ``--task`` and ``--version`` (the dataset within ``--scope``)."""
    function = click.option(
        "--version", "dataset_version", default=None, help="Only this dataset version."
    )(function)
    return click.option(
        "--task", default=None, help="Only this task's (dataset flyte_task-<task>)."
    )(function)


def _older_than_option(function: F) -> F:
    return click.option(
        "--older-than",
        type=DURATION_TYPE,
        default=None,
        help="Only artifacts created longer ago than this: 30d, 12h, 90m, 1w, …",
    )(function)


def _selection(
    entry_filter: EntryFilter,
    task: str | None,
    dataset_version: str | None,
    older_than: timedelta | None = None,
) -> ops.ArtifactSelection:
    return ops.ArtifactSelection(
        org=entry_filter.org,
        project=entry_filter.project,
        domain=entry_filter.domain,
        task=task,
        version=dataset_version,
        older_than=older_than,
    )


def _selection_options(
    scope_help: str, *, with_age: bool = True
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add ``--scope`` (``scope_help`` says what it selects), ``--task``, ``--version`` and,
    if ``with_age``, ``--older-than`` to a command, which receives them as one ``selection``
    (an :class:`~taskcache.datacatalog_operations.ArtifactSelection`).
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def with_selection(
            *,
            entry_filter: EntryFilter,
            task: str | None,
            dataset_version: str | None,
            older_than: timedelta | None = None,
            **others: Any,
        ) -> None:
            selection = _selection(entry_filter, task, dataset_version, older_than)
            command(selection=selection, **others)

        options = _older_than_option(with_selection) if with_age else with_selection
        return scope_option(scope_help)(_dataset_options(options))

    return decorate


def _dataset_key(selection: ops.ArtifactSelection) -> DatasetKey | None:
    """Return the one dataset ``selection`` names (every part given, no ``*``), or None if
    it names none; a usage error if it names some parts only.
    """
    parts = (selection.org, selection.project, selection.domain, selection.task)
    if None not in parts and selection.version is not None:
        org, project, domain, task = (str(part) for part in parts)
        return DatasetKey(org, project, domain, ops.TASK_DATASET_PREFIX + task, selection.version)
    if selection == ops.ArtifactSelection():
        return None
    raise CommandError(
        "name the artifact's dataset with all of --scope (no *), --task and --version, as "
        "artifacts ls prints them, or none of them",
        code="INVALID_ARGUMENT",
        exit_code=USAGE_EXIT_CODE,
    )


def _settings(
    database: str | None, config_file: str | None, storage: str | None = None
) -> Settings:
    try:
        return load_settings({"database": database, "storage": storage}, config_file=config_file)
    except CacheError as error:
        raise from_cache_error(error) from error


@contextmanager
def _catalog(settings: Settings) -> Iterator[DatacatalogRepository]:
    """Yield the DataCatalog repository of ``settings.database``; close it afterwards.

    Taskcache errors become command failures with their codes (a bad ``--database`` or
    selection a usage error, exit 2; anything else exit 1).
    """
    with opened_for_command(
        lambda: open_datacatalog_repository(settings.database, pool_size=1), settings.database
    ) as repository:
        yield repository


def _scope_text(record: ops.ArtifactRecord) -> str:
    return describe_scope(Scope(org=record.org, project=record.project, domain=record.domain))


def _record_json(record: ops.ArtifactRecord) -> dict[str, Any]:
    document = asdict(record)
    document["scope_text"] = _scope_text(record)
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
@database_options
@_selection_options("Only artifacts")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
def ls_command(
    database: str | None,
    config_file: str | None,
    selection: ops.ArtifactSelection,
    limit: int,
    as_json: bool,
) -> None:
    """List artifacts, newest first: scope, task, version, id, tags, created.

    The scope, task, version and id are printed as show and delete take them back
    (``artifacts show ID --scope SCOPE --task TASK --version VERSION``). --json:
    {"artifacts": [...]}, each with its "scope_text".
    """
    settings = _settings(database, config_file)
    with _catalog(settings) as repository:
        pages = ops.iter_artifacts(repository, selection, utc_now(), limit)
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
            f"{_scope_text(record)}  {record.task}  {record.dataset_version}  "
            f"{record.artifact_id}  tags={tags}  {record.created_at.isoformat()}"
        )


@artifacts_group.command("show")
@click.argument("artifact_id")
@database_options
@_selection_options("The artifact's dataset is one", with_age=False)
@json_option
def show_command(
    artifact_id: str,
    database: str | None,
    config_file: str | None,
    selection: ops.ArtifactSelection,
    as_json: bool,
) -> None:
    """Show one artifact: of the dataset named by all of --scope, --task and --version (as
    artifacts ls prints them), or without them the newest with this id. Exits 1 if there is
    none (NOT_FOUND).
    """
    dataset = _dataset_key(selection)
    settings = _settings(database, config_file)
    with _catalog(settings) as repository:
        record = ops.find_artifact(repository, artifact_id, dataset)
    if as_json:
        _echo_json(_record_json(record))
        return
    for name, value in _record_json(record).items():
        click.echo(f"{name}: {value}")


def _blob_store(settings: Settings) -> BlobStore | None:
    """Return the store of ``settings.storage`` (None: no blob is deleted); a usage error if
    it cannot be opened.
    """
    if settings.storage is None:
        return None
    return open_blob_store(settings.storage, settings)


def _report(summary: ops.EvictionSummary, *, dry_run: bool, as_json: bool) -> None:
    if as_json:
        _echo_json({"dry_run": dry_run, **asdict(summary)})
        return
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(
        f"{verb} {summary.artifacts} artifacts ({summary.inline_bytes_freed} inline bytes, "
        f"{summary.blobs_deleted} blobs; {summary.blobs_skipped} blobs outside --storage kept, "
        f"{summary.blob_errors} blob errors)."
    )


def _evict(
    settings: Settings,
    selection: ops.ArtifactSelection,
    *,
    dry_run: bool,
    as_json: bool,
) -> None:
    blobs = _blob_store(settings)
    with _catalog(settings) as repository:
        summary = ops.evict_artifacts(repository, blobs, selection, utc_now(), dry_run=dry_run)
    _report(summary, dry_run=dry_run, as_json=as_json)


@artifacts_group.command("delete")
@click.argument("artifact_id", required=False)
@database_options
@_selection_options("Only artifacts")
@click.option("--everything", is_flag=True, help="Select every artifact (no other selection).")
@click.option("--storage", default=None, help="Blob root; only blobs under it are deleted.")
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would go.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def delete_command(
    artifact_id: str | None,
    database: str | None,
    config_file: str | None,
    selection: ops.ArtifactSelection,
    everything: bool,
    storage: str | None,
    dry_run: bool,
    assume_yes: bool,
    as_json: bool,
) -> None:
    """Evict artifacts with their tags and the blobs the server wrote under --storage: the
    one ARTIFACT_ID names (with --scope, --task and --version as artifacts ls prints them,
    or alone for the newest with that id), or the selection (a task's cache, a scope's,
    everything older than --older-than, or --everything).
    """
    if artifact_id is not None and (everything or selection.older_than is not None):
        raise CommandError(
            "ARTIFACT_ID names one artifact; --everything and --older-than select many",
            code="INVALID_ARGUMENT",
            exit_code=USAGE_EXIT_CODE,
        )
    if artifact_id is None and selection == ops.ArtifactSelection() and not everything:
        raise CommandError(
            "select artifacts (ARTIFACT_ID, --scope, --task, --older-than, …) or --everything",
            code="INVALID_ARGUMENT",
            exit_code=USAGE_EXIT_CODE,
        )
    dataset = None if artifact_id is None else _dataset_key(selection)
    settings = _settings(database, config_file, storage)
    if not (assume_yes or dry_run):
        click.confirm("Delete the selected artifacts?", abort=True, err=True)
    if artifact_id is None:
        _evict(settings, selection, dry_run=dry_run, as_json=as_json)
        return
    blobs = _blob_store(settings)
    with _catalog(settings) as repository:
        summary = ops.evict_artifact(repository, blobs, artifact_id, dataset, dry_run=dry_run)
    _report(summary, dry_run=dry_run, as_json=as_json)


@artifacts_group.command("gc")
@click.option("--older-than", type=DURATION_TYPE, required=True, help="30d, 12h, 1w, …")
@database_options
@click.option("--storage", default=None, help="Blob root; only blobs under it are deleted.")
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would go.")
@json_option
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
@database_options
@json_option
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
