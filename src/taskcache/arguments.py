"""Checks of the arguments callers pass to the operator functions (sizes of pages and
batches), each refusing a bad value with InvalidArgumentError naming the argument.
"""

from __future__ import annotations

from taskcache.errors import InvalidArgumentError


def check_positive(value: int, field: str) -> None:
    """Return if ``value`` is at least 1; else raise InvalidArgumentError naming ``field``."""
    if value < 1:
        raise InvalidArgumentError("must be at least 1", field=field)
