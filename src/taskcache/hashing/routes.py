"""Which implementation computes digests: the compiled route or the pure-Python one.

Both give byte-identical results (the test suite holds them equal on Go's vectors, hypothesis
properties and a differential fuzz). The compiled route is used when its extension imports;
``TASKCACHE_HASHING=python`` or ``=compiled`` forces one (``compiled`` without the extension is an
error at import), and :func:`use_route` switches at run time (tests, benchmarks).

No I/O beyond reading that environment variable.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from taskcache.hashing import direct, hashify

ENVIRONMENT_VARIABLE = "TASKCACHE_HASHING"
PYTHON = "python"
COMPILED = "compiled"
_AUTOMATIC = ("", "auto")


@dataclass(frozen=True)
class Route:
    """One implementation of the two digests everything else is built from."""

    name: str
    pbhash: Callable[[Message], bytes]
    literal_map_text: Callable[[Any, Collection[str]], str]


_PYTHON_ROUTE = Route(PYTHON, direct.pbhash, hashify.literal_map_text)


def _compiled_route() -> Route:
    compiled = importlib.import_module("taskcache.hashing.compiled")
    return Route(COMPILED, compiled.pbhash, compiled.literal_map_text)


def compiled_unavailable_reason() -> str | None:
    """Return why the compiled route cannot be used, or None when it can."""
    try:
        _compiled_route()
    except ImportError as error:
        return str(error)
    return None


def _choose(name: str) -> Route:
    if name == PYTHON:
        return _PYTHON_ROUTE
    if name == COMPILED:
        try:
            return _compiled_route()
        except ImportError as error:
            raise RuntimeError(
                f"{ENVIRONMENT_VARIABLE}=compiled, but the compiled hashing core is not "
                f"available ({error}); reinstall with a C compiler, or use "
                f"{ENVIRONMENT_VARIABLE}=python"
            ) from error
    if name in _AUTOMATIC:
        try:
            return _compiled_route()
        except ImportError:
            return _PYTHON_ROUTE
    raise ValueError(
        f"{ENVIRONMENT_VARIABLE} must be {PYTHON!r}, {COMPILED!r} or 'auto', not {name!r}"
    )


active: Route = _choose(os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower())


def use_route(name: str) -> None:
    """Make ``name`` ("python", "compiled" or "auto") the active route.

    Raises RuntimeError for "compiled" when the extension is not available, ValueError for
    any other name.
    """
    global active  # noqa: PLW0603 - the one switch every digest goes through
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    active = _choose(name)


def route_name() -> str:
    """Return the active route's name: "compiled" or "python"."""
    return active.name
