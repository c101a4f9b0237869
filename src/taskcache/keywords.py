"""Keyword options typed as ``TypedDict`` (``**options: Unpack[...]``): the run-time check
that every given name is one the options declare.

mypy catches an unknown name statically; this catches it for untyped callers, so a typo can
never be silently ignored (or, for ``clear()``, widen what is deleted). It must not validate
values: each caller does that for its own options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_names(given: Mapping[str, Any], declared: type, caller: str) -> None:
    """Raise TypeError naming ``caller`` and every name of ``given`` that the TypedDict
    ``declared`` does not declare.
    """
    unknown = set(given) - set(declared.__annotations__)
    if unknown:
        raise TypeError(f"{caller} got unexpected keyword arguments: {', '.join(sorted(unknown))}")
