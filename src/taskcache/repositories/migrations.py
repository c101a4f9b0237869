"""Which schema migrations a database still needs: the rule both repositories apply.

A backend's migrations are a tuple of steps (each a tuple of statements); step ``n`` takes
version ``n`` to ``n + 1``. This module decides what to run; it runs nothing and knows no SQL.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from taskcache.errors import InternalError


def pending(
    migrations: Sequence[tuple[str, ...]], version: int
) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Yield ``(version reached, statements)`` for each step after ``version``.

    Raises InternalError if ``version`` is newer than the last step (the database was
    written by a newer taskcache).
    """
    if version > len(migrations):
        raise InternalError(
            f"database schema version {version} is newer than this taskcache "
            f"supports ({len(migrations)})"
        )
    yield from enumerate(migrations[version:], start=version + 1)
