"""Both hashing routes at once: functions that compute a digest with the pure-Python route and
with the compiled core, assert the two agree (same value, or the same exception type), and
return the value. The compiled core missing skips (fails under ``CI=true``) in
:func:`require_compiled`; the wrapped functions then check the Python route alone, except
under CI, where they fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ci_policy import in_ci, skip_or_fail
from taskcache import hashing
from taskcache.hashing import routes

T = TypeVar("T")

COMPILED_MISSING = routes.compiled_unavailable_reason()


def require_compiled() -> None:
    """Skip (fail under CI) when the compiled core is not importable."""
    if COMPILED_MISSING is not None:
        skip_or_fail(f"the compiled hashing core is not available: {COMPILED_MISSING}")


@contextmanager
def route(name: str) -> Iterator[None]:
    """Run the body with route ``name`` active, then restore the previous one."""
    previous = hashing.hashing_route()
    hashing.use_hashing_route(name)
    try:
        yield
    finally:
        hashing.use_hashing_route(previous)


def _outcome(
    name: str, function: Callable[..., T], args: Any, kwargs: Any
) -> tuple[T | None, BaseException | None]:
    with route(name):
        try:
            return function(*args, **kwargs), None
        except Exception as error:
            return None, error


def on_both_routes(function: Callable[..., T]) -> Callable[..., T]:
    """Return ``function`` computed on both routes, asserting they agree."""

    def both(*args: Any, **kwargs: Any) -> T:
        python_value, python_error = _outcome(routes.PYTHON, function, args, kwargs)
        if COMPILED_MISSING is None:
            compiled_value, compiled_error = _outcome(routes.COMPILED, function, args, kwargs)
            assert type(compiled_error) is type(python_error), (python_error, compiled_error)
            assert compiled_value == python_value
        elif in_ci():
            raise AssertionError(f"CI=true and the compiled core is missing: {COMPILED_MISSING}")
        if python_error is not None:
            raise python_error
        return python_value  # type: ignore[return-value]

    both.__name__ = function.__name__
    return both
