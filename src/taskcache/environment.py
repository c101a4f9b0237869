"""Reading a few environment variables on every call, cheaply.

This module owns one thing: :class:`EnvironmentReader`, which returns the current values of
a fixed tuple of variables as ``os.environ.get`` would, for code that reads them on a hot
path (the decorator's scope and catalog target, per call). ``os.environ.get`` of an unset
variable raises and catches KeyError inside the mapping (~0.75 µs each); the reader looks
the encoded names up in the mapping's backing dict instead and decodes only when a value
changed. Every change made through ``os.environ`` (assignment, ``del``, ``pop``, pytest's
``monkeypatch.setenv``) is seen by the next read; so is replacing ``os.environ`` itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

_State = tuple[
    Mapping[str, str],
    Callable[[Any], Any] | None,
    tuple[Any, ...],
    tuple[Any, ...] | None,
    tuple[str | None, ...] | None,
]


class EnvironmentReader:
    """The current values of the environment variables ``names``.

    :meth:`read` returns a tuple with, per name, its value or None when unset — exactly
    ``tuple(os.environ.get(name) for name in names)``. While none of the values changes it
    returns the same tuple object, so a caller may remember what it derived from one read
    and reuse it when the next read ``is`` that tuple. Safe to share between threads.
    """

    __slots__ = ("_names", "_state")

    def __init__(self, names: tuple[str, ...]) -> None:
        self._names = names
        # (the mapping read, its backing dict's get or None, the encoded names, the raw
        # values last read, their decoded tuple): replaced whole, so threads never see a mix.
        self._state: _State | None = None

    def read(self) -> tuple[str | None, ...]:
        """Return the current values of the variables (None for an unset one)."""
        environ = os.environ
        state = self._state
        if state is None or state[0] is not environ:
            state = self._state = self._bind(environ)
        _, lookup, keys, last_raw, last_values = state
        if lookup is None:  # not CPython's os._Environ: the public mapping, read plainly
            return tuple(environ.get(name) for name in self._names)
        raw = tuple(map(lookup, keys))
        if raw == last_raw and last_values is not None:
            return last_values
        values = tuple(environ.get(name) for name in self._names)
        self._state = (environ, lookup, keys, raw, values)
        return values

    def _bind(self, environ: Mapping[str, str]) -> _State:
        """Return the state reading ``environ``: its backing dict and key encoding when it
        has them (CPython's ``os.environ``), else None to read the mapping itself.
        """
        data = getattr(environ, "_data", None)
        encode = getattr(environ, "encodekey", None)
        if isinstance(data, dict) and callable(encode):
            return (environ, data.get, tuple(encode(name) for name in self._names), None, None)
        return (environ, None, (), None, None)
