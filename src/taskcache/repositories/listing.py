"""The operator listing's SQL, shared by the SQLite and PostgreSQL repositories: filters,
keyset pagination after a cursor, newest update first.

It builds a statement and its parameters and runs nothing; each repository converts times and
executes the statement its own way. It must not hold backend-specific SQL beyond what a
:class:`ListingDialect` names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskcache.errors import InvalidArgumentError
from taskcache.repositories.base import EntryCursor, EntryFilter


@dataclass(frozen=True)
class ListingDialect:
    """What differs between backends: the parameter marker, the key-prefix test (written
    with ``?`` markers, taking the prefix ``prefix_arity`` times) and the time encoding.
    """

    marker: str
    prefix_condition: str
    prefix_arity: int
    encode_time: Callable[[datetime, str], Any]


def check_limit(limit: int) -> None:
    """Raise InvalidArgumentError (field ``limit``) for a negative page size."""
    if limit < 0:
        raise InvalidArgumentError("must not be negative", field="limit")


def list_entries_query(
    dialect: ListingDialect,
    columns: str,
    entry_filter: EntryFilter,
    limit: int,
    after: EntryCursor | None,
) -> tuple[str, tuple[Any, ...]]:
    """Return the listing statement selecting ``org, project, domain, key, {columns}`` and
    its parameters. Raises InvalidArgumentError for a negative ``limit`` or a naive cursor.
    """
    check_limit(limit)
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("org", entry_filter.org),
        ("project", entry_filter.project),
        ("domain", entry_filter.domain),
    ):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(value)
    if entry_filter.key_prefix:
        conditions.append(dialect.prefix_condition)
        params.extend([entry_filter.key_prefix] * dialect.prefix_arity)
    if after is not None:
        cursor_at = dialect.encode_time(after.last_updated_at, "after.last_updated_at")
        # The first bound lets the newest-first index seek; the second breaks ties.
        conditions.append(
            "last_updated_at <= ? AND (last_updated_at < ? "
            "OR (org, project, domain, key) > (?, ?, ?, ?))"
        )
        scope = after.scope
        params.extend([cursor_at, cursor_at, scope.org, scope.project, scope.domain, after.key])
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    statement = f"""
        SELECT org, project, domain, key, {columns} FROM cache_entries
        {where}
        ORDER BY last_updated_at DESC, org, project, domain, key
        LIMIT ?
    """
    # Our statements hold no literal question marks, so the marker swap is exact.
    return statement.replace("?", dialect.marker), (*params, limit)
