"""Per-call time budgets: the ``timeout`` every client method takes, and the deadline a call
carries while it runs.

A client turns its ``timeout`` argument (or, when that is None, its default) into a
:class:`Deadline` on the monotonic clock. Remote transports are handed theirs and spend it on
attempts and retry waits. An embedded call (and a server call, from the caller's incoming
deadline) carries it in a context variable for as long as it runs, so that the repositories,
several calls below, can bound what they wait on — SQLite's busy timeout, PostgreSQL's
statement timeout and pool wait — without every repository method taking one more parameter
(Flyte's Go client passes a ``ctx`` for the same reason). The variable follows asyncio tasks
and ``asyncio.to_thread``; :class:`~taskcache.repositories.threaded.ThreadedRepository`
copies it to its worker threads.

The clock only, no I/O. It must not import the rest of taskcache beyond the errors.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, TypeAlias

from taskcache.errors import DeadlineExceededError, InvalidArgumentError

# What the Python APIs take as a per-call ``timeout``: seconds (an int is a float here), a
# timedelta, or None for the client's default.
Timeout: TypeAlias = float | timedelta | None


def as_timeout(value: object, argument: str = "timeout") -> float | None:
    """Return ``value`` (seconds as an int or float, a timedelta, or None) as seconds.

    None stays None (the caller's default applies). Raises TypeError naming ``argument`` for
    any other type (bool included), InvalidArgumentError naming it for a value that is not a
    positive, finite number of seconds.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{argument} must be seconds as int or float, a datetime.timedelta or None, "
            f"not {type(value).__name__}"
        )
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidArgumentError("must be a positive, finite number of seconds", field=argument)
    return seconds


@dataclass(frozen=True, slots=True)
class Deadline:
    """The instant (``time.monotonic()``) a call's ``timeout`` seconds run out."""

    expires_at: float
    timeout: float

    @classmethod
    def after(cls, timeout: float) -> Deadline:
        """Return the deadline ``timeout`` seconds from now."""
        return cls(time.monotonic() + timeout, timeout)

    def remaining(self) -> float:
        """Return the seconds left (0 once passed)."""
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.expires_at

    def exceeded(self, what: str) -> DeadlineExceededError:
        """Return the DeadlineExceededError saying ``what`` ran out of this deadline's time."""
        return DeadlineExceededError(f"{what}: the {self.timeout:g} s timeout passed")


_CURRENT: Final[ContextVar[Deadline | None]] = ContextVar("taskcache_deadline", default=None)


def current() -> Deadline | None:
    """Return the deadline the running call carries, or None (no bound)."""
    return _CURRENT.get()


@contextlib.contextmanager
def _carried(deadline: Deadline) -> Iterator[Deadline]:
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


_UNBOUNDED: Final = contextlib.nullcontext(None)


def bounded(timeout: float | None) -> contextlib.AbstractContextManager[Deadline | None]:
    """Return a context manager that carries a deadline ``timeout`` seconds from now while
    its block runs, and yields it.

    None carries nothing new (and costs only this branch). A deadline already carried that
    ends sooner is kept: a call made inside another never outlives the outer one's budget.
    """
    if timeout is None:
        return _UNBOUNDED
    deadline = Deadline.after(timeout)
    outer = _CURRENT.get()
    if outer is not None and outer.expires_at <= deadline.expires_at:
        return contextlib.nullcontext(outer)
    return _carried(deadline)
