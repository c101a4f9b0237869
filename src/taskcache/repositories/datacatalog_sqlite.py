"""The DataCatalog tables in a SQLite database: :class:`SqliteDatacatalogRepository`.

It is a :class:`~taskcache.repositories.sqlite.SqliteRepository` (same connections, fork
safety and migrations) that also serves the DataCatalog rows through the SQL shared with
PostgreSQL (:mod:`taskcache.repositories.datacatalog_sql`). Writes run in one ``BEGIN
IMMEDIATE`` transaction, so SQLite's write lock serialises racing creators.

Rows only: it must not decide policy.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from taskcache.repositories.datacatalog_sql import DatacatalogTables
from taskcache.repositories.sqlite import SqliteRepository

__all__ = ["SqliteDatacatalogRepository"]


class SqliteDatacatalogRepository(SqliteRepository, DatacatalogTables):
    """Cache entries, reservations and DataCatalog rows in one SQLite database.

    Takes the arguments of :class:`~taskcache.repositories.sqlite.SqliteRepository` and
    raises as it does.
    """

    def _dc_read(self) -> AbstractContextManager[Any]:
        return self._session()

    def _dc_write(self) -> AbstractContextManager[Any]:
        return self._transaction()

    def _dc_snapshot(self) -> AbstractContextManager[Any]:
        return self._snapshot()
