"""Which implementation computes digests: the compiled route or the pure-Python one.

Both give byte-identical results (the test suite holds them equal on Go's vectors, hypothesis
properties and a differential fuzz). The compiled route is used when its extension imports;
``TASKCACHE_HASHING=python`` or ``=compiled`` forces one, and :func:`use_route` switches at run
time (tests, benchmarks). A name other than those is a ValueError at import; ``compiled``
without the extension is a RuntimeError at the first digest.

The route is built on the first digest, not at import: building it imports the walkers, the
compiled core and its plans, which code that never hashes (``import taskcache``, a client of a
remote catalog) does not need. After that, :data:`active` is the built route and every digest
is one attribute read away from it, as before.

No I/O beyond reading that environment variable.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

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


def _python_route() -> Route:
    direct = importlib.import_module("taskcache.hashing.direct")
    hashify = importlib.import_module("taskcache.hashing.hashify")
    return Route(PYTHON, direct.pbhash, hashify.literal_map_text)


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


def _validated(name: str) -> str:
    if name in (PYTHON, COMPILED, *_AUTOMATIC):
        return name
    raise ValueError(
        f"{ENVIRONMENT_VARIABLE} must be {PYTHON!r}, {COMPILED!r} or 'auto', not {name!r}"
    )


def _build(name: str) -> Route:
    if name == PYTHON:
        return _python_route()
    if name == COMPILED:
        try:
            return _compiled_route()
        except ImportError as error:
            raise RuntimeError(
                f"{ENVIRONMENT_VARIABLE}=compiled, but the compiled hashing core is not "
                f"available ({error}); reinstall with a C compiler, or use "
                f"{ENVIRONMENT_VARIABLE}=python"
            ) from error
    try:
        return _compiled_route()
    except ImportError:
        return _python_route()


def _first_pbhash(message: Message) -> bytes:
    return _resolved().pbhash(message)


def _first_literal_map_text(literal_map: Any, ignore: Collection[str]) -> str:
    return _resolved().literal_map_text(literal_map, ignore)


# Stands in for the requested route until the first digest builds it (see the module's note).
_UNBUILT = Route("", _first_pbhash, _first_literal_map_text)
_requested = _validated(os.environ.get(ENVIRONMENT_VARIABLE, "").strip().lower())
# Held while the route is built or switched, so a use_route() racing the first digest wins.
_switching = threading.Lock()
active: Route = _UNBUILT


def _resolved() -> Route:
    global active  # noqa: PLW0603 - the one switch every digest goes through
    with _switching:
        if active is _UNBUILT:
            active = _build(_requested)
        return active


def use_route(name: str) -> None:
    """Make ``name`` ("python", "compiled" or "auto") the active route.

    Raises RuntimeError for "compiled" when the extension is not available, ValueError for
    any other name.
    """
    global active  # noqa: PLW0603 - the one switch every digest goes through
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, not {type(name).__name__}")
    route = _build(_validated(name))
    with _switching:
        active = route


def route_name() -> str:
    """Return the active route's name: "compiled" or "python" (building it if no digest has
    been computed yet; RuntimeError as for the first digest).
    """
    return _resolved().name
