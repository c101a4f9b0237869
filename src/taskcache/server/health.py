"""Repository health: one monitor pings the database and tells every listener the result.

It must not change what the server answers beyond health, except through the circuit
breaker it feeds (each ping's outcome opens or closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Final

from taskcache.repositories.base import AsyncRepository
from taskcache.server.breaker import CircuitBreaker
from taskcache.server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL: Final = 5.0
DEFAULT_PING_TIMEOUT: Final = 3.0

HealthListener = Callable[[bool], Awaitable[None]]


# Not compared by value: each monitor is its own schedule and listeners.
@dataclass(eq=False)
class HealthMonitor:
    """Pings ``repository`` on demand and every ``interval`` seconds in the background.

    Listeners (e.g. the gRPC health service) hear each change; the ``taskcache_database_up``
    gauge follows every check. After :meth:`mark_shutting_down` the server reports unhealthy
    so load balancers stop sending work while in-flight calls drain. With a ``breaker``,
    every ping's outcome is recorded in it (so it closes once the database answers again,
    even while no call probes it).
    """

    repository: AsyncRepository
    metrics: ServerMetrics
    _: KW_ONLY
    interval: float = DEFAULT_CHECK_INTERVAL
    ping_timeout: float = DEFAULT_PING_TIMEOUT
    breaker: CircuitBreaker | None = None
    _listeners: list[HealthListener] = field(init=False, default_factory=list)
    _serving: bool | None = field(init=False, default=None)
    _shutting_down: bool = field(init=False, default=False)
    _task: asyncio.Task[None] | None = field(init=False, default=None)

    @property
    def serving(self) -> bool:
        """Whether the last check succeeded and the server is not shutting down."""
        return bool(self._serving) and not self._shutting_down

    def add_listener(self, listener: HealthListener) -> None:
        """Call ``listener(serving)`` after every check whose outcome changed."""
        self._listeners.append(listener)

    async def check(self) -> bool:
        """Ping the repository now; return whether the server should be considered healthy."""
        try:
            await asyncio.wait_for(self.repository.ping(), self.ping_timeout)
            up = True
        except TimeoutError:
            if self._serving is not False:
                logger.warning("database ping timed out after %.1f s", self.ping_timeout)
            up = False
        except Exception as error:
            if self._serving is not False:
                logger.warning("database ping failed: %s", error or type(error).__name__)
            up = False
        self.metrics.database_up.set(1 if up else 0)
        if self.breaker is not None:
            self.breaker.record_ping(up)
        await self._publish(up)
        return self.serving

    async def _publish(self, up: bool) -> None:
        previous, self._serving = self._serving, up
        if up != previous:
            if up and previous is False:
                logger.info("database is reachable again")
            for listener in self._listeners:
                await listener(self.serving)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()

    def start(self) -> None:
        """Start the background checks (call :meth:`check` once first)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="taskcache-health")

    async def mark_shutting_down(self) -> None:
        """Stop background checks and report not serving from now on. Idempotent."""
        if self._shutting_down:
            return
        self._shutting_down = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for listener in self._listeners:
            await listener(False)
