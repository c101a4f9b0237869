"""Driving an async client from synchronous test code, so one test runs on both twins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from taskcache import AsyncClient


class BlockingAsyncClient:
    """An async twin driven from synchronous test code: each call runs on the client's own
    event loop, so the async twin runs the very tests the sync client runs.
    """

    def __init__(self, open_client: Callable[[], AsyncClient]) -> None:
        self._loop = asyncio.new_event_loop()

        async def opened() -> AsyncClient:  # async transports bind to the loop they start on
            return open_client()

        self.client = self._loop.run_until_complete(opened())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(method(*args, **kwargs))

        return call

    def shut(self) -> None:
        """Close the client (idempotent, like its close) and then its loop."""
        if not self._loop.is_closed():
            self._loop.run_until_complete(self.client.close())
            self._loop.close()
