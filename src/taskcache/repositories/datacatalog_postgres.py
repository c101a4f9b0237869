"""The DataCatalog tables in a PostgreSQL database: :class:`PostgresDatacatalogRepository`.

It is a :class:`~taskcache.repositories.postgres.PostgresRepository` (same pool, checks and
migrations) that also serves the DataCatalog rows through the SQL shared with SQLite
(:mod:`taskcache.repositories.datacatalog_sql`). Racing creators meet on the primary keys:
``INSERT ... ON CONFLICT DO NOTHING`` lets exactly one insert a dataset, an artifact id or a
tag, and the others find it already there.

Rows only: it must not decide policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from taskcache.repositories.datacatalog_sql import DatacatalogTables
from taskcache.repositories.postgres import Connection, PostgresRepository

__all__ = ["PostgresDatacatalogRepository"]


class PostgresDatacatalogRepository(PostgresRepository, DatacatalogTables):
    """Cache entries, reservations and DataCatalog rows in one PostgreSQL database.

    Takes the arguments of :class:`~taskcache.repositories.postgres.PostgresRepository`
    and raises as it does.
    """

    def _dc_read(self) -> AbstractContextManager[Any]:
        return self._connection()

    def _dc_write(self) -> AbstractContextManager[Any]:
        return self._in_transaction()

    @contextmanager
    def _in_transaction(self) -> Iterator[Connection]:
        with self._connection() as conn, conn.transaction():
            yield conn

    def _dc_sql(self, statement: str) -> str:
        # psycopg's marker; the shared statements contain no other "?" and no "%".
        return statement.replace("?", "%s")
