"""A tiny ``@cached``-like helper over a taskcache Client (the real decorator is a later issue).

``cached(client)(function)`` returns a wrapper that builds the Flyte key from the call's
arguments (a LiteralMap from Python values), looks it up, and decodes the output on a hit; on
a miss it runs the function and stores the result. With ``serialize=True`` concurrent callers
of the same arguments take a reservation first: one computes, the others poll until the
entry appears (Flyte's cache-serialize behaviour).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast, get_type_hints

from flyteidl2.core import literals_pb2

from bench.literals import OUTPUT_NAME, from_literal, interface, task_identifier, to_literal
from taskcache import Client, Key, NotFoundError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_POLL_SECONDS = 0.05
DEFAULT_HEARTBEAT = timedelta(seconds=5)


def cached(
    client: Client,
    *,
    cache_version: str = "1",
    serialize: bool = False,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    heartbeat: timedelta = DEFAULT_HEARTBEAT,
) -> Callable[[F], F]:
    """Return a decorator memoizing a function of simple typed arguments in ``client``."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        hints = get_type_hints(function)
        names = tuple(signature.parameters)
        identifier = task_identifier(f"{function.__module__}.{function.__qualname__}")
        typed_interface = interface(
            {name: hints[name] for name in names}, {OUTPUT_NAME: hints["return"]}
        )

        def key_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Key:
            if not kwargs and len(args) == len(names):
                arguments: dict[str, Any] = dict(zip(names, args, strict=True))
            else:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                arguments = bound.arguments
            inputs = literals_pb2.LiteralMap(
                literals={name: to_literal(value) for name, value in arguments.items()}
            )
            return Key(identifier, cache_version, typed_interface, inputs=inputs)

        def lookup(key: Key) -> tuple[bool, Any]:
            try:
                entry = client.get(key)
            except NotFoundError:
                return False, None
            return True, from_literal(entry.outputs.read().literals[OUTPUT_NAME])

        def compute_and_store(key: Key, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            value = function(*args, **kwargs)
            client.put(key, literals_pb2.LiteralMap(literals={OUTPUT_NAME: to_literal(value)}))
            return value

        @functools.wraps(function)
        def plain(*args: Any, **kwargs: Any) -> Any:
            key = key_for(args, kwargs)
            hit, value = lookup(key)
            if hit:
                return value
            return compute_and_store(key, args, kwargs)

        @functools.wraps(function)
        def serialized(*args: Any, **kwargs: Any) -> Any:
            key = key_for(args, kwargs)
            owner = f"{os.getpid()}-{threading.get_ident()}"
            while True:
                hit, value = lookup(key)
                if hit:
                    return value
                reservation = client.get_or_extend_reservation(key, owner, heartbeat)
                if reservation.owner_id != owner:
                    time.sleep(poll_seconds)
                    continue
                try:
                    # The holder before us may have stored the entry and released meanwhile.
                    hit, value = lookup(key)
                    return value if hit else compute_and_store(key, args, kwargs)
                finally:
                    client.release_reservation(key, owner)

        return cast(F, serialized if serialize else plain)

    return decorate
