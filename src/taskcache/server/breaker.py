"""Admission of RPCs into the service core: the database circuit breaker, the in-flight
bound and the caller's deadline, in one :class:`CallGate` every RPC of both transports
passes (:mod:`taskcache.server.calls` wraps each call in it).

Why here and not around the repository: a refusal must cost nothing (no pool wait, no
thread), it must be counted like any other outcome by the call observer, and the deadline
must cover the whole call (its token check, the manager's retries, a blob deletion) — all
of which the transport-neutral call wrapper sees and a repository wrapper would not. The
breaker still learns only from database outcomes: an UNAVAILABLE call (the repository's
translation of a pool timeout or a lost connection) or a failed health ping opens it; a
call the database answered, or a successful ping, closes it.

It must not know any RPC's meaning, nor decide cache policy.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Final, TypeVar

from taskcache import deadlines
from taskcache.errors import (
    CacheError,
    DeadlineExceededError,
    ResourceExhaustedError,
    UnavailableError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_MAX_IN_FLIGHT: Final = 256
DEFAULT_BREAKER_COOLDOWN: Final = 1.0

# Outcomes that say nothing about the database: refused before reaching it (token, request
# validation) or stopped by the caller. They neither open nor close the breaker.
_NEUTRAL_CODES: Final = frozenset(
    {"INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED", "DEADLINE_EXCEEDED"}
)


class DatabaseDownError(UnavailableError):
    """UNAVAILABLE from the breaker itself: refused at once, without reaching the database."""


class BreakerState(enum.Enum):
    """Where a :class:`CircuitBreaker` stands."""

    CLOSED = "closed"  # calls pass
    OPEN = "open"  # calls are refused UNAVAILABLE until the cooldown has passed
    HALF_OPEN = "half_open"  # one probe call passes; the others are refused


class CircuitBreaker:
    """Closed → open on a database failure → half-open after ``cooldown`` seconds, when one
    call at a time may probe the database; a probe the database answers closes the breaker,
    a failed one re-opens it for another cooldown. A health ping's outcome (see
    :meth:`record_ping`) opens or closes it the same way, so the breaker recovers even when
    no call arrives.

    Single-threaded: use it from the event loop only.
    """

    def __init__(
        self,
        cooldown: float = DEFAULT_BREAKER_COOLDOWN,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cooldown = cooldown
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN becomes HALF_OPEN once the cooldown has passed)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._cooldown:
            self._state = BreakerState.HALF_OPEN
        return self._state

    @property
    def refusing(self) -> bool:
        """Whether a call arriving now would be refused (open, or half-open with a probe
        running).
        """
        state = self.state
        return state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probing)

    def admit(self) -> bool:
        """Let a call through and return whether it is the half-open probe; raise
        DatabaseDownError (UNAVAILABLE) at once while open, or while another call probes.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        raise DatabaseDownError("the database is unavailable; retry later")

    def record(self, probe: bool, code: str | None) -> None:
        """Record the outcome of an admitted call: ``code`` is its status code name ("OK" for
        success), or None if it ended without one (cancelled, unexpected exception).
        """
        if probe:
            self._probing = False
        if code == UnavailableError.code:
            self._open()
        elif code is not None and code not in _NEUTRAL_CODES:
            self._close()

    def record_ping(self, up: bool) -> None:
        """Record a health ping: a failed one opens the breaker, a successful one closes it."""
        if up:
            self._close()
        else:
            self._open()

    def _open(self) -> None:
        if self._state is BreakerState.CLOSED:
            logger.warning("database unavailable: refusing calls at once until it answers")
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()

    def _close(self) -> None:
        if self._state is not BreakerState.CLOSED:
            logger.info("database answers again: calls pass")
        self._state = BreakerState.CLOSED


class CallGate:
    """What every RPC passes before the service core: at most ``max_in_flight`` calls run at
    once (more are refused RESOURCE_EXHAUSTED at once, never queued), the ``breaker`` refuses
    calls UNAVAILABLE at once while the database is known to be down, and a call whose
    deadline has passed, or passes while it runs, is stopped and answered DEADLINE_EXCEEDED.

    ``isolate``: run each call in a task of its own, so that it is cancelled at most once
    however often its caller is (see :meth:`run`); the PostgreSQL repository, which a second
    cancellation harms, needs it. Without it a call runs in
    the caller's task, which saves a task, a shield and their event-loop steps per call
    (~10-25 µs of CPU): right for SQLite, whose statements run to completion on their own.
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        *,
        isolate: bool = True,
    ) -> None:
        self.breaker = breaker
        self._max_in_flight = max_in_flight
        self._isolate = isolate
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        """How many admitted calls have not finished (a stopped one counts until its database
        statement has been cancelled).
        """
        return self._in_flight

    async def run(self, work: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        """Return ``await work()`` run as an admitted call with ``timeout`` seconds left
        (None: no deadline).

        Raises ResourceExhaustedError or UnavailableError without starting ``work``, and
        DeadlineExceededError when the time is up. A stopped call (deadline, or the caller
        gone) is cancelled once and waited for: the PostgreSQL repository then has the server
        cancel the statement and waits for it to end, so a statement still waiting (e.g. on a
        lock) is not applied after the answer; one that finished first was applied whole
        (each decision is one statement or transaction). A second cancellation would end that
        wait early, answering while a blocked autocommit statement may still run — and
        commit — on its own: hence the separate task. SQLite calls run on threads (or,
        reads, inline), which cannot be cancelled: ``work`` runs carrying the deadline
        (:mod:`taskcache.deadlines`), so a SQLite call waiting for the write lock gives up
        when it passes instead of applying after the answer.
        """
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError("the call's deadline passed before it started")
        if self._in_flight >= self._max_in_flight:
            raise ResourceExhaustedError(
                f"the server already runs {self._max_in_flight} calls; retry later"
            )
        probe = self.breaker.admit()
        self._in_flight += 1
        with _Admitted(self, probe, timeout):
            if not self._isolate:
                # In the caller's task: no task, shield or extra coroutine per call.
                if timeout is None:
                    return await work()
                # The deadline travels with the work (to the threads of SQLite writes too).
                with deadlines.bounded(timeout):
                    async with asyncio.timeout(timeout):
                        return await work()
            # The task copies the context as it is created, and with it the deadline.
            with deadlines.bounded(timeout):
                task = asyncio.create_task(_awaited(work))
            try:
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(task)
            except (TimeoutError, asyncio.CancelledError):
                await _stop(task)
                raise


class _Admitted:
    """The end of one admitted call, as the ``with`` block around it: it leaves the in-flight
    count and tells the breaker the outcome (OK, a CacheError's code, or none when cancelled
    or failed otherwise); a TimeoutError leaving the block is the call's deadline passing and
    is raised as DeadlineExceededError.
    """

    # A class, not a generator context manager: it wraps every RPC.
    __slots__ = ("_gate", "_probe", "_timeout")

    def __init__(self, gate: CallGate, probe: bool, timeout: float | None) -> None:
        self._gate = gate
        self._probe = probe
        self._timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        gate = self._gate
        gate._in_flight -= 1
        if kind is None:
            gate.breaker.record(self._probe, "OK")
            return
        timed_out = isinstance(error, TimeoutError)
        if timed_out:
            code: str | None = DeadlineExceededError.code
        else:
            code = error.code if isinstance(error, CacheError) else None
        gate.breaker.record(self._probe, code)
        if timed_out:
            raise DeadlineExceededError(
                f"the call's deadline passed after {self._timeout:.3f} s"
            ) from error


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


async def _stop(task: asyncio.Task[T]) -> None:
    """Cancel ``task`` once and wait until it has unwound, however often the waiter itself is
    cancelled meanwhile (its cancellation is re-raised afterwards).
    """
    task.cancel()
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            cancelled = True
    if not task.cancelled() and task.exception() is not None:
        logger.debug("stopped call ended with %r", task.exception())
    if cancelled:
        raise asyncio.CancelledError
