"""Closing, once: the context-manager protocol and an idempotent close for clients and
repositories, sync and async.

A class mixes one of these in and implements ``_release`` (free what it holds); the mixin owns
the "already closed?" bookkeeping and ``with``/``async with`` support. It must not know what
is released.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Final, Self

# Closing is rare; one lock for every object keeps the objects free of per-instance state.
_CLOSE_LOCK: Final = threading.Lock()


class Closeable(ABC):
    """``close()`` releases the resource the first time and does nothing afterwards, from any
    thread; ``with`` closes on exit.
    """

    _closed: bool = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Release the resource. Idempotent."""
        with _CLOSE_LOCK:
            if self._closed:
                return
            self._closed = True
        self._release()

    @abstractmethod
    def _release(self) -> None:
        """Free what the object holds (called once, by :meth:`close`)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncCloseable(ABC):
    """The asynchronous twin of :class:`Closeable`: ``await close()``, ``async with``."""

    _closed: bool = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    async def close(self) -> None:
        """Release the resource. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()

    @abstractmethod
    async def _release(self) -> None:
        """Free what the object holds (awaited once, by :meth:`close`)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
