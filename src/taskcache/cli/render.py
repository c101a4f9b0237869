"""How the operator commands present catalog data: JSON documents and rich tables.

JSON values are plain (datetimes as ISO 8601 UTC strings ending in ``Z``, byte counts as
integers, protobuf messages in protobuf JSON form). Tables take user data as :class:`Text`,
so keys and URIs holding ``[`` or ``:`` are never read as rich markup or emoji codes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from google.protobuf import json_format
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Column, Table
from rich.text import Text

from taskcache.cli.literal_text import literal_text
from taskcache.operations import (
    CleanupSummary,
    EntryDetails,
    GcSummary,
    describe_scope,
    task_name,
)
from taskcache.repositories.base import CatalogStats, EntryRow, Scope

# Wide enough for a whole listing row: piped or redirected output is read whole, not on an
# 80-column screen (COLUMNS, when set, still wins).
_PIPE_WIDTH: Final = 180
# Wide listings (ls --wide) are as wide as their content: the terminal wraps them.
_WIDE_WIDTH: Final = 1000
KEY_WIDTH: Final = 32
_KEY_HEAD: Final = 14
OUTPUT_WIDTH: Final = 40
_OUTPUT_HEAD: Final = 12
TASK_WIDTH: Final = 20
_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def make_console(*, stderr: bool = False, wide: bool = False) -> Console:
    """Return a console on stdout (or stderr) that prints no markup, emoji or highlighting,
    and no colors unless writing to a terminal. ``wide``: lines are never cut to the
    terminal's width (long ones wrap there instead).
    """
    console = Console(stderr=stderr, markup=False, emoji=False, highlight=False)
    if wide:
        console.width = _WIDE_WIDTH
    elif not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPE_WIDTH
    return console


def iso(value: datetime) -> str:
    """Return ``value`` as ISO 8601 in UTC with a ``Z`` suffix (microseconds kept)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def table_time(value: datetime) -> str:
    """Return ``value`` as ``YYYY-MM-DD HH:MM:SS`` in UTC, for tables."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def human_bytes(count: int) -> str:
    """Return ``count`` bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.0 MiB``."""
    size = float(count)
    for unit in _UNITS:
        if size < 1024 or unit == _UNITS[-1]:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def shorten(text: str, width: int, head: int) -> str:
    """Return ``text`` cut to ``width`` characters: its first ``head``, an ellipsis, its end."""
    if len(text) <= width:
        return text
    return f"{text[:head]}…{text[len(text) - (width - head - 1) :]}"


def short_key(key: str) -> str:
    """Return ``key`` cut to :data:`KEY_WIDTH` characters with a middle ellipsis.

    The head stays a usable ``ls --prefix``; the tail keeps the end of the inputs hash and
    the cache version, which is what tells a task's entries apart.
    """
    return shorten(key, KEY_WIDTH, _KEY_HEAD)


def short_output(text: str) -> str:
    """Return an :func:`output_text` cut to :data:`OUTPUT_WIDTH` characters: a URI keeps
    its scheme or root and its final folders.
    """
    return shorten(text, OUTPUT_WIDTH, _OUTPUT_HEAD)


def seconds(value: timedelta) -> float:
    """Return ``value`` in seconds (for JSON)."""
    return value.total_seconds()


# --- JSON -----------------------------------------------------------------------------------------


def scope_json(scope: Scope) -> dict[str, str]:
    """Return ``scope`` as ``{"org", "project", "domain"}``."""
    return {"org": scope.org, "project": scope.project, "domain": scope.domain}


def entry_json(row: EntryRow) -> dict[str, Any]:
    """Return the listing fields of ``row``: key, scope (as a dict and in ``--scope`` form),
    task name, output (URI or inline size), times (``expires_at`` and ``last_accessed_at``
    None when not set).
    """
    return {
        "key": row.key,
        "scope": scope_json(row.scope),
        "scope_text": describe_scope(row.scope),
        "task": task_name(row),
        "output_uri": row.output_uri,
        "inline_bytes": None if row.output_literals is None else len(row.output_literals),
        "created_at": iso(row.created_at),
        "last_updated_at": iso(row.last_updated_at),
        "expires_at": None if row.expires_at is None else iso(row.expires_at),
        "last_accessed_at": None if row.last_accessed_at is None else iso(row.last_accessed_at),
    }


def details_json(details: EntryDetails) -> dict[str, Any]:
    """Return everything ``show`` knows about an entry, protobuf values in protobuf JSON."""
    reservation = details.reservation
    return {
        **entry_json(details.row),
        "outputs": None if details.outputs is None else json_format.MessageToDict(details.outputs),
        "source_identifier": (
            None if details.source is None else json_format.MessageToDict(details.source)
        ),
        "source_execution": (
            None
            if details.source_execution is None
            else json_format.MessageToDict(details.source_execution)
        ),
        "key_map": dict(sorted(details.row.key_map.items())),
        "reservation": (
            None
            if reservation is None
            else {
                "owner_id": reservation.owner_id,
                "expires_at": iso(reservation.expires_at),
                "heartbeat_interval_seconds": seconds(reservation.heartbeat_interval),
                "active": details.reservation_active,
            }
        ),
        "problems": list(details.problems),
    }


def stats_json(stats: CatalogStats, now: datetime) -> dict[str, Any]:
    """Return catalog totals and per-scope figures, as of ``now``."""
    return {
        "as_of": iso(now),
        "entries": stats.entries,
        "inline_bytes": stats.inline_bytes,
        "blob_entries": stats.blob_entries,
        "active_reservations": stats.active_reservations,
        "by_scope": [
            {
                **scope_json(group.scope),
                "entries": group.entries,
                "inline_bytes": group.inline_bytes,
                "blob_entries": group.blob_entries,
            }
            for group in stats.by_scope
        ],
    }


def _gc_totals(summary: GcSummary) -> dict[str, Any]:
    return {
        "entries": summary.entries,
        "blobs_deleted": summary.blobs_deleted,
        "blob_errors": summary.blob_errors,
        "blobs_skipped": summary.blobs_skipped,
        "inline_bytes_freed": summary.inline_bytes_freed,
        "blob_bytes_freed": summary.blob_bytes_freed,
    }


@dataclass(frozen=True)
class GcRun:
    """What a ``taskcache gc`` run was asked to do, as both of its reports show it: at
    ``now``, with ``older_than`` and the size cap ``max_bytes`` (None: not asked).
    """

    now: datetime
    older_than: timedelta | None
    max_bytes: int | None
    dry_run: bool
    delete_blobs: bool

    @property
    def cutoff(self) -> datetime | None:
        """Return the last-update time before which ``older_than`` deletes, or None."""
        return None if self.older_than is None else self.now - self.older_than


def gc_json(summary: CleanupSummary, run: GcRun) -> dict[str, Any]:
    """Return a cleanup's parameters, its totals and each phase's (None: not run)."""
    cutoff = run.cutoff
    return {
        "dry_run": run.dry_run,
        "now": iso(run.now),
        "cutoff": None if cutoff is None else iso(cutoff),
        "older_than_seconds": None if run.older_than is None else seconds(run.older_than),
        "max_bytes": run.max_bytes,
        "delete_blobs": run.delete_blobs,
        **_gc_totals(summary.total),
        "phases": {
            "older": None if summary.older is None else _gc_totals(summary.older),
            "expired": _gc_totals(summary.expired),
            "over_size": None if summary.over_size is None else _gc_totals(summary.over_size),
        },
    }


# --- tables ---------------------------------------------------------------------------------------


def entries_table(
    rows: Sequence[EntryRow], *, show_header: bool = True, wide: bool = False
) -> Table:
    """Return a listing table of ``rows``: key, scope, task, output, times.

    Every column has a fixed width so that the tables of successive pages (``ls --all``)
    line up as one listing; only the first needs ``show_header``. ``wide``: keys, task
    names and outputs whole (their columns as wide as the widest value on the page), plus
    each entry's expiry and last access (``-`` when not set).
    """

    def column(header: str, width: int, values: Sequence[str]) -> Column:
        if wide:
            return Column(header, min_width=max(map(len, values), default=width), no_wrap=True)
        return Column(header, width=width, no_wrap=True, overflow="ellipsis")

    keys = [row.key if wide else short_key(row.key) for row in rows]
    tasks = [task_name(row) for row in rows]
    outputs = [output_text(row) if wide else short_output(output_text(row)) for row in rows]
    table = Table(
        column("key", KEY_WIDTH, keys),
        Column("scope", width=24, no_wrap=True, overflow="ellipsis")
        if not wide
        else column("scope", 24, [describe_scope(row.scope) for row in rows]),
        column("task", TASK_WIDTH, tasks),
        column("output", OUTPUT_WIDTH, outputs),
        Column("created (UTC)", width=19, no_wrap=True),
        Column("last updated (UTC)", width=19, no_wrap=True),
        *(
            (
                Column("expires (UTC)", width=19, no_wrap=True),
                Column("last access (UTC)", width=19, no_wrap=True),
            )
            if wide
            else ()
        ),
        box=box.SIMPLE_HEAD,
        show_header=show_header,
        show_edge=False,
        pad_edge=False,
    )
    for row, key, task, output in zip(rows, keys, tasks, outputs, strict=True):
        times = [table_time(row.created_at), table_time(row.last_updated_at)]
        if wide:
            times += [_optional_time(row.expires_at), _optional_time(row.last_accessed_at)]
        table.add_row(Text(key), Text(describe_scope(row.scope)), Text(task), Text(output), *times)
    return table


def _optional_time(value: datetime | None) -> str:
    return "-" if value is None else table_time(value)


def output_text(row: EntryRow) -> str:
    """Return where ``row``'s outputs are: ``inline N bytes`` or the blob URI."""
    if row.output_literals is not None:
        return f"inline {len(row.output_literals)} bytes"
    return row.output_uri or "-"


def _fields(items: Sequence[tuple[str, str]]) -> Text:
    """Return ``name  value`` lines, names aligned; print with ``soft_wrap`` so that long
    keys and URIs stay whole on one line.
    """
    width = max((len(name) for name, _ in items), default=0)
    lines = Text()
    for index, (name, value) in enumerate(items):
        if index:
            lines.append("\n")
        lines.append(f"{name:<{width}}", style="bold")
        lines.append(f"  {value}")
    return lines


def details_renderable(details: EntryDetails, now: datetime) -> RenderableType:
    """Return ``show``'s view of an entry: fields, provenance, reservation, outputs."""
    row = details.row
    items: list[tuple[str, str]] = [
        ("key", row.key),
        ("scope", describe_scope(row.scope)),
        ("output", output_text(row)),
        ("created", iso(row.created_at)),
        ("last updated", iso(row.last_updated_at)),
    ]
    if row.expires_at is not None:
        state = "expired" if row.expires_at <= now else "expires"
        items.append((state, iso(row.expires_at)))
    if row.last_accessed_at is not None:
        items.append(("last access", iso(row.last_accessed_at)))
    if details.source is not None:
        source = details.source
        items.append(
            (
                "source",
                f"{source.org}/{source.project}/{source.domain}/{source.name}@{source.version}",
            )
        )
    if details.source_execution is not None:
        execution = details.source_execution.node_execution_id
        workflow = execution.execution_id
        items.append(
            (
                "source execution",
                f"{workflow.org}/{workflow.project}/{workflow.domain}/{workflow.name} "
                f"node {execution.node_id} attempt {details.source_execution.retry_attempt}",
            )
        )
    items.extend((f"key map {name}", value) for name, value in sorted(row.key_map.items()))
    reservation = details.reservation
    if reservation is None:
        items.append(("reservation", "none"))
    else:
        state = "active" if details.reservation_active else "expired"
        remaining = reservation.expires_at - now
        when = (
            f"expires in {remaining.total_seconds():.0f}s"
            if details.reservation_active
            else f"expired {(-remaining).total_seconds():.0f}s ago"
        )
        items.append(
            (
                "reservation",
                f"{state}: held by {reservation.owner_id} until {iso(reservation.expires_at)} "
                f"({when}; heartbeat {seconds(reservation.heartbeat_interval):g}s)",
            )
        )
    items.extend(("problem", problem) for problem in details.problems)
    parts: list[RenderableType] = [_fields(items)]
    if details.outputs is not None:
        outputs = Table(
            Column("output"),
            Column("value (whole in --json)", overflow="fold"),
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
        )
        for name in sorted(details.outputs.literals):
            outputs.add_row(Text(name), Text(literal_text(details.outputs.literals[name])))
        parts.extend([Text(""), outputs])
    return Group(*parts)


def stats_renderable(stats: CatalogStats, *, scoped: bool = False) -> RenderableType:
    """Return ``stats``' totals and its per-scope table; ``scoped``: the totals are those of
    the scopes a ``--scope`` matched (reservations still the whole catalog's).
    """
    totals = _fields(
        [
            ("entries", str(stats.entries)),
            ("inline bytes", f"{human_bytes(stats.inline_bytes)}"),
            ("blob entries", str(stats.blob_entries)),
            (
                "active reservations (all scopes)" if scoped else "active reservations",
                str(stats.active_reservations),
            ),
        ]
    )
    if not stats.by_scope:
        return totals
    by_scope = Table(
        Column("scope", no_wrap=True),
        Column("entries", justify="right"),
        Column("inline bytes", justify="right"),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for group in stats.by_scope:
        by_scope.add_row(
            Text(describe_scope(group.scope)), str(group.entries), human_bytes(group.inline_bytes)
        )
    return Group(totals, Text(""), by_scope)


def gc_renderable(summary: CleanupSummary, run: GcRun) -> RenderableType:
    """Return a cleanup's summary: what went in each phase, then the totals."""
    dry_run, max_bytes, cutoff = run.dry_run, run.max_bytes, run.cutoff
    verb = "would delete" if dry_run else "deleted"
    total = summary.total
    items = [
        (f"expired entries {verb}", f"{summary.expired.entries} (expiry up to {iso(run.now)})")
    ]
    if summary.older is not None and cutoff is not None:
        items.append(
            (f"old entries {verb}", f"{summary.older.entries} (last updated before {iso(cutoff)})")
        )
    if summary.over_size is not None and max_bytes is not None:
        items.append(
            (
                f"over-size entries {verb}",
                f"{summary.over_size.entries} (least recently used, above "
                f"{human_bytes(max_bytes)})",
            )
        )
    items += [
        (f"entries {verb}", str(total.entries)),
        (
            f"inline bytes {'to free' if dry_run else 'freed'}",
            f"{human_bytes(total.inline_bytes_freed)} ({total.inline_bytes_freed} bytes)",
        ),
    ]
    if total.blob_bytes_freed:
        items.append(("recorded blob bytes", human_bytes(total.blob_bytes_freed)))
    if run.delete_blobs:
        items.append((f"blobs {verb}", str(total.blobs_deleted)))
        if total.blobs_skipped:
            kept = "blobs kept (outside storage root or still referenced)"
            items.append((kept, str(total.blobs_skipped)))
        if total.blob_errors:
            items.append(("blob errors", str(total.blob_errors)))
    else:
        items.append(("blobs", "kept (no --delete-blobs)"))
    return _fields(items)
