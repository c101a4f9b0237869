"""Operator commands: ``migrate``, ``ls``, ``show``, ``delete``, ``gc``, ``stats`` and
``clear``.

Each opens the catalog ``taskcache serve`` would serve with the same ``--database`` (by
default the embedded catalog under ``$TASKCACHE_HOME``; ``TASKCACHE_DATABASE``,
``TASKCACHE_STORAGE`` and ``TASKCACHE_CONFIG`` apply as they do to serve) and calls
:mod:`taskcache.operations`. ``--scope`` takes a scope as ``ls`` prints it
(``org/project/domain`` or ``(unscoped)``, a part ``*`` for any); ``show`` and ``delete``
take a key or a unique prefix of one. ``--json`` prints one JSON document on stdout, a
failure included (:mod:`taskcache.cli.failure`); tables go to stdout, progress and prompts
to stderr.

The commands parse flags and render; the work is :mod:`taskcache.operations`'s and which
database they open is :mod:`taskcache.resolver`'s decision.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import click

from taskcache import operations
from taskcache.cli import render
from taskcache.cli.failure import (
    USAGE_EXIT_CODE,
    CommandError,
    from_cache_error,
    opened_for_command,
)
from taskcache.errors import CacheError, InvalidArgumentError
from taskcache.manager import utc_now
from taskcache.repositories.base import EntryFilter, EntryRow, OperatorRepository
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
_Parsed = TypeVar("_Parsed")

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


def database_options(function: F) -> F:
    """Add ``--database`` and ``--config`` (the catalog to operate on)."""
    function = click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None, help=_CONFIG_HELP
    )(function)
    return click.option("--database", default=None, help=_DATABASE_HELP)(function)


if TYPE_CHECKING:
    _ParamTypeBase = click.ParamType[Any]
else:
    # ParamType is generic only in recent click; at runtime subscripting it may fail.
    _ParamTypeBase = click.ParamType


class ParsedText(_ParamTypeBase, Generic[_Parsed]):
    """A command-line value written as text and read by one parser of
    :mod:`taskcache.operations` (a value already of ``kind`` passes as it is); a parser's
    InvalidArgumentError is a usage error with its message.
    """

    def __init__(self, name: str, kind: type[_Parsed], parse: Callable[[str], _Parsed]) -> None:
        self.name = name
        self._kind = kind
        self._parse = parse

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> _Parsed:
        """Return ``value`` parsed; a usage error naming the parameter if it does not parse."""
        if isinstance(value, self._kind):
            return value
        try:
            return self._parse(str(value))
        except InvalidArgumentError as error:
            self.fail(error.message, param, ctx)


# A scope as ls prints it (org/project/domain, * parts, (unscoped)).
SCOPE_TYPE: Final = ParsedText("scope", EntryFilter, operations.parse_scope)
# A duration such as 30d, 12h, 90m, 45s, 1w or 1d12h.
DURATION_TYPE: Final = ParsedText("duration", timedelta, operations.parse_duration)
# A size in bytes such as 500MB, 2GiB or 1000000.
SIZE_TYPE: Final = ParsedText("size", int, operations.parse_size)


def scope_option(what: str) -> Callable[[F], F]:
    """Add ``--scope`` (an :class:`EntryFilter`, every scope when not given) to a command;
    ``what`` says what it selects.
    """
    return click.option(
        "--scope",
        "entry_filter",
        type=SCOPE_TYPE,
        default="*/*/*",
        help=f"{what} of this scope, written as ls prints it: org/project/domain or "
        "(unscoped); a part may be * for any. [default: every scope]",
        show_default=False,
    )


def json_option(function: F) -> F:
    """Add ``--json`` (passed as ``as_json``): print one JSON document, failures included."""
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
        raise from_cache_error(error) from error


@dataclass(frozen=True)
class CatalogOptions:
    """What ``--database``, ``--config`` and ``--scope`` say: the catalog a command operates
    on and the scopes of the entries it selects.
    """

    database: str | None
    config_file: str | None
    entry_filter: EntryFilter

    def settings(self, storage: str | None = None, **more: str | None) -> Settings:
        """Return serve's settings for this catalog, ``storage`` and ``more`` (further serve
        options given as flags, None: not given); a command failure if they are invalid.
        """
        return _settings(self.database, self.config_file, storage, **more)


def catalog_options(scope_help: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add ``--database``, ``--config`` and ``--scope`` (``scope_help`` says what it selects)
    to a command, which receives them as one ``catalog`` (a :class:`CatalogOptions`).
    """

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def with_catalog(
            *,
            database: str | None,
            config_file: str | None,
            entry_filter: EntryFilter,
            **others: Any,
        ) -> None:
            command(catalog=CatalogOptions(database, config_file, entry_filter), **others)

        return database_options(scope_option(scope_help)(with_catalog))

    return decorate


# The options of the commands that delete, each declared once for all of them.
_storage_option: Final = click.option("--storage", default=None, help=_STORAGE_HELP)
_delete_blobs_option: Final = click.option(
    "--delete-blobs",
    is_flag=True,
    help="Also delete the output blobs of deleted entries that lie under --storage.",
)
_yes_option: Final = click.option(
    "--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation."
)


@contextmanager
def _catalog(settings: Settings, *, connections: int = 1) -> Iterator[OperatorRepository]:
    """Yield the repository of ``settings.database`` (at most ``connections`` PostgreSQL
    connections); close it afterwards.

    Taskcache errors become command failures: a bad ``--database`` a usage error (exit 2),
    anything else (unreachable, not found, ...) exit 1 with its message.
    """
    # One connection is all most commands use.
    with opened_for_command(
        lambda: open_repository(settings.database, pool_size=connections), settings.database
    ) as repository:
        yield repository


def _blob_store(settings: Settings, flag: str) -> BlobStore:
    """Return the store of ``settings.storage``; a usage error naming ``flag`` if none."""
    if settings.storage is None:
        raise CommandError(
            f"{flag} needs --storage (the blob root): only the default embedded catalog "
            "implies one",
            code="INVALID_ARGUMENT",
            exit_code=USAGE_EXIT_CODE,
        )
    return open_blob_store(settings.storage, settings)


def open_blob_store(storage: str, settings: Settings) -> BlobStore:
    """Return the blob store at ``storage`` with ``settings.storage_options``.

    A taskcache error opening it is a command failure with its code; an unusable root or
    options (ValueError, ImportError, TypeError) a usage error (exit 2) naming ``--storage``.
    """
    try:
        return BlobStore(storage, **settings.storage_options)
    except CacheError as error:
        raise from_cache_error(error, prefix=f"--storage {storage!r}: ") from error
    except (ValueError, ImportError, TypeError) as error:
        raise CommandError(
            f"--storage {storage!r}: {error}",
            code="INVALID_ARGUMENT",
            exit_code=USAGE_EXIT_CODE,
        ) from error


def _echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


# --- migrate --------------------------------------------------------------------------------------


@click.command("migrate")
@database_options
@json_option
def migrate_command(database: str | None, config_file: str | None, as_json: bool) -> None:
    """Create or upgrade the catalog's schema and print its version.

    PostgreSQL migrates under an advisory lock, so running it beside live servers is safe;
    SQLite catalogs also migrate whenever they are opened. Idempotent. --json:
    {"database": ..., "schema_version": N} (the database's password hidden).
    """
    settings = _settings(database, config_file)
    shown = redact(settings.database)
    try:
        version = operations.migrate_database(settings.database)
    except InvalidArgumentError as error:
        raise from_cache_error(error) from error
    except CacheError as error:
        raise from_cache_error(error, prefix=f"cannot migrate {shown}: ") from error
    if as_json:
        _echo_json({"database": shown, "schema_version": version})
    else:
        click.echo(f"{shown}: schema version {version}")


def _count_option(name: str, default: int, help_text: str) -> Callable[[F], F]:
    """A positive whole-number option with a shown default."""
    return click.option(
        name, type=click.IntRange(min=1), default=default, show_default=True, help=help_text
    )


_batch_size_option: Final = _count_option(
    "--batch-size", operations.DEFAULT_GC_BATCH_SIZE, "Entries deleted per transaction."
)


# --- ls -------------------------------------------------------------------------------------------


@click.command("ls")
@catalog_options("Only entries")
@click.option("--prefix", "key_prefix", default=None, help="Only keys starting with this.")
@click.option(
    "--task",
    default=None,
    help="Only entries written by the task of this name (taken from each page of --limit).",
)
@_count_option(
    "--limit",
    operations.DEFAULT_PAGE_SIZE,
    "Entries to list; with --all, how many to fetch at a time.",
)
@click.option("--all", "all_pages", is_flag=True, help="List every entry, page by page.")
@click.option("--wide", is_flag=True, help="Print keys, task names and outputs whole.")
@click.option("--keys", "keys_only", is_flag=True, help="Print only the keys, one per line.")
@json_option
def ls_command(
    catalog: CatalogOptions,
    key_prefix: str | None,
    task: str | None,
    limit: int,
    all_pages: bool,
    wide: bool,
    keys_only: bool,
    as_json: bool,
) -> None:
    """List entries, most recently updated first: key, scope, task, output, times.

    The table shortens keys (KEY…TAIL; the head works as a show/delete key prefix); --wide
    and --keys print them whole, and show/delete take the key and scope as printed.
    --json: {"entries": [...], "more": bool}, "more" telling whether --limit cut the
    listing.
    """
    if sum((wide, keys_only, as_json)) > 1:
        raise CommandError(
            "--wide, --keys and --json are different outputs; pick one",
            code="INVALID_ARGUMENT",
            exit_code=USAGE_EXIT_CODE,
        )
    selection = replace(catalog.entry_filter, key_prefix=key_prefix)
    settings = catalog.settings()
    with _catalog(settings) as repository:
        pages = _pages(repository, selection, task, limit, all_pages=all_pages)
        if as_json:
            _stream_json_listing(pages)
        elif keys_only:
            for page in pages:
                for row in page.entries:
                    click.echo(row.key)
        else:
            _print_listing(pages, wide=wide)


def _pages(
    repository: OperatorRepository,
    entry_filter: EntryFilter,
    task: str | None,
    limit: int,
    *,
    all_pages: bool,
) -> Iterator[operations.Page]:
    """Yield the listing's pages (only the first unless ``all_pages``), each keeping only
    the entries of ``task`` when it is given.
    """
    for page in operations.iter_pages(repository, entry_filter, limit):
        if task is None:
            yield page
        else:
            kept = tuple(row for row in page.entries if operations.task_name(row) == task)
            yield replace(page, entries=kept)
        if not all_pages:
            return


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


def _print_listing(pages: Iterator[operations.Page], *, wide: bool) -> None:
    """Print one table per page (they line up as one listing), then a hint if cut short."""
    console = render.make_console(wide=wide)
    shown = 0
    more = False
    for page in pages:
        if page.entries:
            console.print(render.entries_table(page.entries, show_header=shown == 0, wide=wide))
        shown += len(page.entries)
        more = page.next_cursor is not None
    if shown == 0:
        console.print("No entries.")
    elif more:
        click.echo(f"{shown} shown; more entries follow: raise --limit or use --all.", err=True)


# --- show -----------------------------------------------------------------------------------------


def _find(repository: OperatorRepository, entry_filter: EntryFilter, key: str) -> EntryRow:
    """Return the entry ``key`` (or a unique prefix) names; a failure (exit 1) listing the
    candidates if several match. NotFoundError if none does (inside :func:`_catalog`, a
    failure saying so).
    """
    try:
        return operations.find_entry(repository, entry_filter, key)
    except operations.AmbiguousKeyError as error:
        candidates = [
            {"key": row.key, "scope": operations.describe_scope(row.scope)}
            for row in error.candidates
        ]
        raise CommandError(
            error.message,
            code=error.code,
            details={"candidates": candidates, "more": error.more},
        ) from error


@click.command("show")
@click.argument("key")
@catalog_options("The entry is one")
@json_option
def show_command(key: str, catalog: CatalogOptions, as_json: bool) -> None:
    """Show one entry in full: output values, provenance and any reservation on its key.

    KEY is a key or a prefix matching one entry (in --scope, if given). Exits 1 if there is
    no such entry or several match (they are listed).
    """
    settings = catalog.settings()
    now = utc_now()
    with _catalog(settings) as repository:
        row = _find(repository, catalog.entry_filter, key)
        # Deleted since the look-up: NotFoundError, a failure as _catalog makes it.
        details = operations.describe_entry(repository, row.scope, row.key, now)
    if as_json:
        _echo_json(render.details_json(details))
    else:
        render.make_console().print(render.details_renderable(details, now), soft_wrap=True)


# --- delete ---------------------------------------------------------------------------------------


@click.command("delete")
@click.argument("key")
@catalog_options("The entry is one")
@click.option(
    "--delete-blob",
    is_flag=True,
    help="Also delete the entry's output blob, if it lies under --storage.",
)
@_storage_option
@_yes_option
@json_option
def delete_command(
    key: str,
    catalog: CatalogOptions,
    delete_blob: bool,
    storage: str | None,
    assume_yes: bool,
    as_json: bool,
) -> None:
    """Delete one entry (asks first unless --yes).

    KEY is a key or a prefix matching one entry (in --scope, if given). Exits 1 if there is
    no such entry or several match (they are listed). --json: {"key", "scope",
    "blob_deleted", "blob_error"}.
    """
    settings = catalog.settings(storage)
    blobs = _blob_store(settings, "--delete-blob") if delete_blob else None
    with _catalog(settings) as repository:
        row = _find(repository, catalog.entry_filter, key)
        scope_text = operations.describe_scope(row.scope)
        if not assume_yes:
            blob_note = " and its blob" if blobs is not None and row.output_uri else ""
            click.confirm(
                f"Delete entry {row.key} in scope {scope_text} "
                f"({render.output_text(row)}){blob_note}?",
                abort=True,
                err=True,
            )
        # Deleted by someone else since the look-up: NotFoundError, as in show.
        result = operations.delete_entry(repository, row.scope, row.key, blobs)
    if as_json:
        _echo_json(
            {
                "key": row.key,
                "scope": render.scope_json(row.scope),
                "scope_text": scope_text,
                "output_uri": row.output_uri,
                "blob_deleted": result.blob_deleted,
                "blob_error": result.blob_error,
            }
        )
        return
    click.echo(f"Deleted entry {row.key} in scope {scope_text}.")
    if result.blob_deleted:
        click.echo(f"Deleted blob {result.row.output_uri}.")
    elif result.blob_error is not None:
        click.echo(f"Blob {result.row.output_uri} not deleted: {result.blob_error}.", err=True)


# --- gc -------------------------------------------------------------------------------------------


@click.command("gc")
@click.option(
    "--older-than",
    type=DURATION_TYPE,
    default=None,
    help="Also delete entries last updated longer ago than this: 30d, 12h, 90m, 45s, 1w, 1d12h.",
)
@click.option(
    "--max-bytes",
    type=SIZE_TYPE,
    default=None,
    help="Then evict least-recently-used entries until the catalog's stored bytes (inline "
    "outputs plus recorded blob sizes) are at most this: 500MB, 2GiB, ... "
    f"[env: {environment_variable('max_bytes')}; default: serve's --max-bytes, else no cap]",
)
@click.option("--dry-run", is_flag=True, help="Delete nothing; report what would go.")
@_delete_blobs_option
@catalog_options("Only entries")
@_storage_option
@click.option(
    "--storage-options",
    default=None,
    help=f"{OPTION_HELP['storage_options']} [env: {environment_variable('storage_options')}]",
)
@_batch_size_option
@json_option
def gc_command(
    older_than: timedelta | None,
    max_bytes: int | None,
    dry_run: bool,
    delete_blobs: bool,
    catalog: CatalogOptions,
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
    settings = catalog.settings(storage, storage_options=storage_options)
    blobs = _blob_store(settings, "--delete-blobs") if delete_blobs else None
    cap = max_bytes if max_bytes is not None else settings.max_bytes
    now = utc_now()
    # Two connections: one holds PostgreSQL's advisory lock while the other deletes.
    with (
        _catalog(settings, connections=2) as repository,
        _gc_progress(dry_run=dry_run, show=not as_json) as report,
    ):
        summary = operations.cleanup(
            repository,
            blobs,
            now,
            max_bytes=cap,
            older_than=older_than,
            dry_run=dry_run,
            batch_size=batch_size,
            progress_callback=report,
            entry_filter=catalog.entry_filter,
        )
    if summary.locked_out:
        raise CommandError(
            "another cleaner holds this catalog's cleanup lock (a taskcache gc, or a taskcache "
            "serve with --gc-interval); nothing was deleted, try again later",
            code="ABORTED",
        )
    run = render.GcRun(
        now=now, older_than=older_than, max_bytes=cap, dry_run=dry_run, delete_blobs=delete_blobs
    )
    if as_json:
        _echo_json(render.gc_json(summary, run))
    else:
        render.make_console().print(render.gc_renderable(summary, run), soft_wrap=True)


@contextmanager
def _gc_progress(*, dry_run: bool, show: bool) -> Iterator[operations.GcProgress]:
    """Yield a cleanup's progress callback, drawn as a pulsing bar on stderr while the block
    runs (only if ``show`` and stderr is a terminal).
    """
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
        disable=not (show and console.is_terminal),
        transient=True,
    )
    with progress:
        # The total is unknown up front (counting would cost a full scan): a pulsing bar.
        task = progress.add_task("scanning" if dry_run else "deleting", total=None)

        def report(summary: operations.GcSummary) -> None:
            progress.update(task, completed=summary.entries)

        yield report


# --- stats ----------------------------------------------------------------------------------------


@click.command("stats")
@catalog_options("Only the figures")
@json_option
def stats_command(catalog: CatalogOptions, as_json: bool) -> None:
    """Show catalog totals (entries, inline bytes, blob entries, active reservations) and
    per-scope figures; with --scope, those of the matching scopes (active reservations are
    always counted over the whole catalog).
    """
    settings = catalog.settings()
    now = utc_now()
    scoped = catalog.entry_filter != EntryFilter()
    with _catalog(settings) as repository:
        stats = operations.catalog_stats(repository, now, catalog.entry_filter if scoped else None)
    if as_json:
        _echo_json(render.stats_json(stats, now))
    else:
        render.make_console().print(render.stats_renderable(stats, scoped=scoped), soft_wrap=True)


# --- clear ----------------------------------------------------------------------------------------


def _interactive() -> bool:
    """Return whether a person can answer a prompt (stdin is a terminal)."""
    return sys.stdin.isatty()


@click.command("clear")
@catalog_options("Only entries")
@click.option("--task", default=None, help="Only entries written by the task of this name.")
@_delete_blobs_option
@_storage_option
@_yes_option
@_batch_size_option
@json_option
def clear_command(
    catalog: CatalogOptions,
    task: str | None,
    delete_blobs: bool,
    storage: str | None,
    assume_yes: bool,
    batch_size: int,
    as_json: bool,
) -> None:
    """Delete every entry (of --scope and --task, if given), whatever its age.

    Asks first unless --yes; without a terminal to ask on, refuses unless --yes. --json:
    {"entries", "inline_bytes_freed", "blobs_deleted", "blob_errors", "blobs_skipped"}.
    """
    settings = catalog.settings(storage)
    blobs = _blob_store(settings, "--delete-blobs") if delete_blobs else None
    selected = operations.describe_selection(catalog.entry_filter, task)
    if not assume_yes:
        if not _interactive():
            raise CommandError(
                f"clear deletes {selected} and needs --yes when there is no terminal to ask on",
                code="FAILED_PRECONDITION",
                exit_code=USAGE_EXIT_CODE,
            )
        click.confirm(f"Delete {selected} from {redact(settings.database)}?", abort=True, err=True)
    with _catalog(settings) as repository:
        summary = operations.clear(
            repository, blobs, catalog.entry_filter, task=task, batch_size=batch_size
        )
    if as_json:
        _echo_json(
            {
                "entries": summary.entries,
                "inline_bytes_freed": summary.inline_bytes_freed,
                "blobs_deleted": summary.blobs_deleted,
                "blob_errors": summary.blob_errors,
                "blobs_skipped": summary.blobs_skipped,
            }
        )
    else:
        click.echo(f"Deleted {summary.entries} entries ({selected}).")
        if blobs is not None:
            click.echo(
                f"Blobs: {summary.blobs_deleted} deleted, {summary.blobs_skipped} kept, "
                f"{summary.blob_errors} errors."
            )
