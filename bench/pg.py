"""PostgreSQL for the benchmarks, resolved like the tests do: ``$TASKCACHE_TEST_POSTGRES_URL``,
else the machine's server on 127.0.0.1:5432 (user postgres, trust auth). Each benchmark gets a
fresh ``taskcache_bench_<random>`` database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

ENV_URL = "TASKCACHE_TEST_POSTGRES_URL"
SYSTEM_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> tuple[str | None, str]:
    """Return (URL of a server we may create databases on, or None; why not / its version)."""
    try:
        import psycopg  # noqa: PLC0415 - optional (the postgres extra)
    except ImportError as error:
        return None, f"psycopg is not installed ({error})"
    url = os.environ.get(ENV_URL) or SYSTEM_URL
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as error:
        return None, f"{url} does not answer: {str(error).strip()}"
    return url, str(row[0]) if row else "?"


def with_database(url: str, database: str) -> str:
    """Return ``url`` naming ``database`` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextmanager
def fresh_database(admin: str, label: str = "") -> Iterator[str]:
    """Yield the URL of a new, migrated database on ``admin``'s server; drop it afterwards."""
    import psycopg  # noqa: PLC0415

    from taskcache.repositories.postgres import migrate  # noqa: PLC0415

    name = f"taskcache_bench_{label}{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # our own name: [a-z0-9_]
    url = with_database(admin, name)
    try:
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
