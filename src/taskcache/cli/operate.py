"""Operator commands: ``migrate``, ``ls``, ``show``, ``delete``, ``gc`` and ``stats``.

Each opens the catalog ``taskcache serve`` would serve with the same ``--database`` (by
default the embedded catalog under ``$TASKCACHE_HOME``; ``TASKCACHE_DATABASE``,
``TASKCACHE_STORAGE`` and ``TASKCACHE_CONFIG`` apply as they do to serve) and calls
:mod:`taskcache.operations`. ``--json`` prints one JSON document on stdout; tables go to
stdout, progress and prompts to stderr.

The commands parse flags and render; the work is :mod:`taskcache.operations`'s and which
database they open is :mod:`taskcache.resolver`'s decision.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from taskcache import operations
from taskcache.cli import render
from taskcache.errors import CacheError, InvalidArgumentError, NotFoundError
from taskcache.manager import utc_now
from taskcache.repositories.base import EntryFilter, OperatorRepository, Scope
from taskcache.resolver import open_repository, redact
from taskcache.server.settings import (
    CONFIG_ENVIRONMENT_VARIABLE,
    OPTION_HELP,
    Settings,
    environment_variable,
    load_settings,
)
from taskcache.storage import BlobStore

F = TypeVar("F", bound=Callable[..., Any])

_DATABASE_HELP = (
    f"{OPTION_HELP['database']} [env: {environment_variable('database')}; default: the "
    "embedded catalog in $TASKCACHE_HOME or the platform data dir, as for serve]"
)
_STORAGE_HELP = (
    "Blob root (folder or fsspec URL); only blobs under it are ever deleted. "
    f"[env: {environment_variable('storage')}; default: <home>/blobs when --database is not "
    "given, otherwise none]"
)
_CONFIG_HELP = (
    "serve's config file (TOML, or YAML with PyYAML); its database and storage apply. "
    f"[env: {CONFIG_ENVIRONMENT_VARIABLE}]"
)


def _database_options(function: F) -> F:
    """Add ``--database`` and ``--config`` (the catalog to operate on)."""
    function = click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None, help=_CONFIG_HELP
    )(function)
    return click.option("--database", default=None, help=_DATABASE_HELP)(function)


def _scope_options(*, filtering: bool) -> Callable[[F], F]:
    """Add ``--org``, ``--project`` and ``--domain``.

    ``filtering``: unset options match any value (``ls``); otherwise they name one scope,
    each part defaulting to empty (the unscoped Flyte 1 scope).
    """
    default = None if filtering else ""
    what = "Only entries of this {}." if filtering else "The entry's {} (default: empty)."

    def decorate(function: F) -> F:
        for name in ("domain", "project", "org"):
            function = click.option(f"--{name}", default=default, help=what.format(name))(function)
        return function

    return decorate


def _entry_scope(function: F) -> F:
    """Add ``--org``, ``--project`` and ``--domain`` naming one scope (each part defaulting to
    empty, the unscoped Flyte 1 scope), passed to ``function`` as one ``scope`` argument.
    """

    @functools.wraps(function)
    def with_scope(*args: Any, org: str, project: str, domain: str, **kwargs: Any) -> Any:
        return function(*args, scope=Scope(org, project, domain), **kwargs)

    return _scope_options(filtering=False)(cast(F, with_scope))


def _json_option(function: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON document (for scripts)."
    )(function)


def _settings(
    database: str | None,
    config_file: str | None,
    storage: str | None = None,
    **more: str | None,
) -> Settings:
    """Return serve's settings for these flags (env and config file applied); ``more`` are
    further serve options given as flags (None: not given).
    """
    try:
        return load_settings(
            {"database": database, "storage": storage, **more}, config_file=config_file
        )
    except CacheError as error:
        raise click.UsageError(str(error)) from error


@contextmanager
def _catalog(settings: Settings, *, connections: int = 1) -> Iterator[OperatorRepository]:
    """Yield the repository of ``settings.database`` (at most ``connections`` PostgreSQL
    connections); close it afterwards.

    Taskcache errors become click errors: a bad ``--database`` a usage error (exit 2),
    anything else (unreachable, not found, ...) exit 1 with its message.
    """
    try:
        # One connection is all most commands use.
        repository = open_repository(settings.database, pool_size=connections)
    except InvalidArgumentError as error:
        raise click.UsageError(str(error)) from error
    except CacheError as error:
        raise click.ClickException(f"cannot open {redact(settings.database)}: {error}") from error
    try:
        yield repository
    except CacheError as error:
        raise click.ClickException(str(error)) from error
    finally:
        repository.close()


def _blob_store(settings: Settings, flag: str) -> BlobStore:
    """Return the store of ``settings.storage``; a usage error naming ``flag`` if none."""
    if settings.storage is None:
        raise click.UsageError(
            f"{flag} needs --storage (the blob root): only the default embedded catalog implies one"
        )
    try:
        return BlobStore(settings.storage, **settings.storage_options)
    except (CacheError, ValueError, ImportError, TypeError) as error:
        raise click.UsageError(f"--storage {settings.storage!r}: {error}") from error


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


# --- migrate --------------------------------------------------------------------------------------


@click.command("migrate")
@_database_options
def migrate_command(database: str | None, config_file: str | None) -> None:
    """Create or upgrade the catalog's schema and print its version.

    PostgreSQL migrates under an advisory lock, so running it beside live servers is safe;
    SQLite catalogs also migrate whenever they are opened. Idempotent.
    """
    settings = _settings(database, config_file)
    try:
        version = operations.migrate_database(settings.database)
    except InvalidArgumentError as error:
        raise click.UsageError(str(error)) from error
    except CacheError as error:
        raise click.ClickException(
            f"cannot migrate {redact(settings.database)}: {error}"
        ) from error
    click.echo(f"{redact(settings.database)}: schema version {version}")


def _count_option(name: str, default: int, help_text: str) -> Callable[[F], F]:
    """A positive whole-number option with a shown default."""
    return click.option(
        name, type=click.IntRange(min=1), default=default, show_default=True, help=help_text
    )


# --- ls -------------------------------------------------------------------------------------------


@click.command("ls")
@_database_options
@_scope_options(filtering=True)
@click.option("--prefix", "key_prefix", default=None, help="Only keys starting with this.")
@_count_option(
    "--limit",
    operations.DEFAULT_PAGE_SIZE,
    "Entries to list; with --all, how many to fetch at a time.",
)
@click.option("--all", "all_pages", is_flag=True, help="List every entry, page by page.")
@_json_option
def ls_command(
    database: str | None,
    config_file: str | None,
    org: str | None,
    project: str | None,
    domain: str | None,
    key_prefix: str | None,
    limit: int,
    all_pages: bool,
    as_json: bool,
) -> None:
    """List entries, most recently updated first.

    The table shortens keys (KEY…TAIL; the head works as --prefix); --json has them whole:
    {"entries": [...], "more": bool}, "more" telling whether --limit cut the listing.
    """
    entry_filter = EntryFilter(org=org, project=project, domain=domain, key_prefix=key_prefix)
    settings = _settings(database, config_file)
    with _catalog(settings) as repository:
        pages: Iterator[operations.Page] = (
            operations.iter_pages(repository, entry_filter, limit)
            if all_pages
            else iter([operations.list_page(repository, entry_filter, limit)])
        )
        if as_json:
            _stream_json_listing(pages)
        else:
            _print_listing(pages)


def _stream_json_listing(pages: Iterator[operations.Page]) -> None:
    """Write ``{"entries": [...], "more": bool}`` a page at a time, so ``--all`` never holds
    the whole catalog in memory; ``more`` is whether the last page had a successor.
    """
    click.echo('{"entries": [', nl=False)
    separator = "\n  "
    more = False
    for page in pages:
        for row in page.entries:
            click.echo(separator + json.dumps(render.entry_json(row)), nl=False)
            separator = ",\n  "
        more = page.next_cursor is not None
    closing = "]" if separator == "\n  " else "\n]"
    click.echo(f'{closing}, "more": {json.dumps(more)}}}')


def _print_listing(pages: Iterator[operations.Page]) -> None:
    """Print one table per page (they line up as one listing), then a hint if cut short."""
    console = render.make_console()
    shown = 0
    more = False
    for page in pages:
        if page.entries:
            console.print(render.entries_table(page.entries, show_header=shown == 0))
        shown += len(page.entries)
        more = page.next_cursor is not None
    if shown == 0:
        console.print("No entries.")
    elif more:
        click.echo(f"{shown} shown; more entries follow: raise --limit or use --all.", err=True)


# --- show -----------------------------------------------------------------------------------------


def _missing(error: NotFoundError, scope: Scope) -> click.ClickException:
    """Return the exit-1 error for a missing entry, with a hint when no scope was given."""
    hint = (
        " (entries written through a scoped API need --org, --project and --domain)"
        if scope == Scope()
        else ""
    )
    return click.ClickException(f"{error}{hint}")


@click.command("show")
@click.argument("key")
@_database_options
@_entry_scope
@_json_option
def show_command(
    key: str, database: str | None, config_file: str | None, scope: Scope, as_json: bool
) -> None:
    """Show one entry in full: outputs, provenance and any reservation on its key.

    Exits 1 if there is no such entry.
    """
    settings = _settings(database, config_file)
    now = utc_now()
    with _catalog(settings) as repository:
        try:
            details = operations.describe_entry(repository, scope, key, now)
        except NotFoundError as error:
            raise _missing(error, scope) from error
    if as_json:
        _echo_json(render.details_json(details))
    else:
        render.make_console().print(render.details_renderable(details, now), soft_wrap=True)


# --- delete ---------------------------------------------------------------------------------------


@click.command("delete")
@click.argument("key")
@_database_options
@_entry_scope
@click.option(
    "--delete-blob",
    is_flag=True,
    help="Also delete the entry's output blob, if it lies under --storage.",
)
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
def delete_command(
    key: str,
    delete_blob: bool,
    storage: str | None,
    assume_yes: bool,
    database: str | None,
    config_file: str | None,
    scope: Scope,
) -> None:
    """Delete one entry (asks first unless --yes). Exits 1 if there is no such entry."""
    settings = _settings(database, config_file, storage)
    blobs = _blob_store(settings, "--delete-blob") if delete_blob else None
    with _catalog(settings) as repository:
        row = repository.get_entry(scope, key)
        if row is None:
            raise _missing(operations.entry_not_found(scope, key), scope)
        if not assume_yes:
            blob_note = " and its blob" if blobs is not None and row.output_uri else ""
            click.confirm(
                f"Delete entry {key} in scope {operations.describe_scope(scope)} "
                f"({render.output_text(row)}){blob_note}?",
                abort=True,
                err=True,
            )
        try:
            result = operations.delete_entry(repository, scope, key, blobs)
        except NotFoundError as error:
            # Someone else deleted it between the look-up and now.
            raise _missing(error, scope) from error
    click.echo(f"Deleted entry {key} in scope {operations.describe_scope(scope)}.")
    if result.blob_deleted:
        click.echo(f"Deleted blob {result.row.output_uri}.")
    elif result.blob_error is not None:
        click.echo(f"Blob {result.row.output_uri} not deleted: {result.blob_error}.", err=True)


# --- gc -------------------------------------------------------------------------------------------


if TYPE_CHECKING:
    _DurationParamType = click.ParamType[timedelta]
else:
    # ParamType is generic only in recent click; at runtime subscripting it may fail.
    _DurationParamType = click.ParamType


class DurationType(_DurationParamType):
    """A duration such as ``30d``, ``12h``, ``90m``, ``45s``, ``1w`` or ``1d12h``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        """Return ``value`` as a timedelta; a usage error if it is not a duration."""
        if isinstance(value, timedelta):
            return value
        try:
            return operations.parse_duration(str(value))
        except InvalidArgumentError as error:
            self.fail(error.message, param, ctx)


if TYPE_CHECKING:
    _SizeParamType = click.ParamType[int]
else:
    _SizeParamType = click.ParamType


class SizeType(_SizeParamType):
    """A size in bytes such as ``500MB``, ``2GiB`` or ``1000000``."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """Return ``value`` as a number of bytes; a usage error if it is not a size."""
        if isinstance(value, int):
            return value
        try:
            return operations.parse_size(str(value))
        except InvalidArgumentError as error:
            self.fail(error.message, param, ctx)


@click.command("gc")
@click.option(
    "--older-than",
    type=DurationType(),
    default=None,
    help="Also delete entries last updated longer ago than this: 30d, 12h, 90m, 45s, 1w, 1d12h.",
)
@click.option(
    "--max-bytes",
    type=SizeType(),
    default=None,
    help="Then evict least-recently-used entries until the catalog's stored bytes (inline "
    "outputs plus recorded blob sizes) are at most this: 500MB, 2GiB, ... "
    f"[env: {environment_variable('max_bytes')}; default: serve's --max-bytes, else no cap]",
)
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would go.")
@click.option(
    "--delete-blobs",
    is_flag=True,
    help="Also delete the output blobs of deleted entries that lie under --storage.",
)
@_database_options
@click.option("--storage", default=None, help=_STORAGE_HELP)
@click.option(
    "--storage-options",
    default=None,
    help=f"{OPTION_HELP['storage_options']} [env: {environment_variable('storage_options')}]",
)
@_count_option("--batch-size", operations.DEFAULT_GC_BATCH_SIZE, "Entries deleted per transaction.")
@_json_option
def gc_command(
    older_than: timedelta | None,
    max_bytes: int | None,
    dry_run: bool,
    delete_blobs: bool,
    database: str | None,
    config_file: str | None,
    storage: str | None,
    storage_options: str | None,
    batch_size: int,
    as_json: bool,
) -> None:
    """Delete expired entries (past the TTL chosen at put), and with --older-than entries not
    updated for that long, then with --max-bytes the least recently used over the cap (a
    cache miss re-creates them all).

    Takes the catalog's cleanup lock, so it never runs beside another gc or a serve
    --gc-interval cleaner (exits 1 if one holds it). Shows a progress bar on a terminal,
    then a summary. Batches already deleted stay deleted if the run is interrupted.
    """
    settings = _settings(database, config_file, storage, storage_options=storage_options)
    blobs = _blob_store(settings, "--delete-blobs") if delete_blobs else None
    cap = max_bytes if max_bytes is not None else settings.max_bytes
    now = utc_now()
    # Two connections: one holds PostgreSQL's advisory lock while the other deletes.
    with _catalog(settings, connections=2) as repository:
        summary = _run_gc(
            repository,
            blobs,
            now,
            older_than=older_than,
            max_bytes=cap,
            dry_run=dry_run,
            batch_size=batch_size,
            show_progress=not as_json,
        )
    if summary.locked_out:
        raise click.ClickException(
            "another cleaner holds this catalog's cleanup lock (a taskcache gc, or a taskcache "
            "serve with --gc-interval); nothing was deleted, try again later"
        )
    cutoff = None if older_than is None else now - older_than
    if as_json:
        _echo_json(
            render.gc_json(
                summary,
                now=now,
                cutoff=cutoff,
                older_than=older_than,
                max_bytes=cap,
                dry_run=dry_run,
                delete_blobs=delete_blobs,
            )
        )
    else:
        render.make_console().print(
            render.gc_renderable(
                summary,
                now=now,
                cutoff=cutoff,
                max_bytes=cap,
                dry_run=dry_run,
                delete_blobs=delete_blobs,
            ),
            soft_wrap=True,
        )


def _run_gc(
    repository: OperatorRepository,
    blobs: BlobStore | None,
    now: datetime,
    *,
    older_than: timedelta | None,
    max_bytes: int | None,
    dry_run: bool,
    batch_size: int,
    show_progress: bool,
) -> operations.CleanupSummary:
    """Run the cleanup behind a progress display on stderr (when it is a terminal)."""
    # Imported here: only gc draws progress.
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = render.make_console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} entries"),
        TimeElapsedColumn(),
        console=console,
        disable=not (show_progress and console.is_terminal),
        transient=True,
    )
    with progress:
        # The total is unknown up front (counting would cost a full scan): a pulsing bar.
        task = progress.add_task("scanning" if dry_run else "deleting", total=None)

        def report(summary: operations.GcSummary) -> None:
            progress.update(task, completed=summary.entries)

        try:
            return operations.cleanup(
                repository,
                blobs,
                now,
                max_bytes=max_bytes,
                older_than=older_than,
                dry_run=dry_run,
                batch_size=batch_size,
                progress_callback=report,
            )
        except InvalidArgumentError as error:
            raise click.UsageError(str(error)) from error


# --- stats ----------------------------------------------------------------------------------------


@click.command("stats")
@_database_options
@_json_option
def stats_command(database: str | None, config_file: str | None, as_json: bool) -> None:
    """Show catalog totals (entries, inline bytes, blob entries, active reservations) and
    per-scope figures.
    """
    settings = _settings(database, config_file)
    now = utc_now()
    with _catalog(settings) as repository:
        stats = operations.catalog_stats(repository, now)
    if as_json:
        _echo_json(render.stats_json(stats, now))
    else:
        render.make_console().print(render.stats_renderable(stats), soft_wrap=True)
