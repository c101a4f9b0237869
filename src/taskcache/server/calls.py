"""What both transports do around every RPC: time it, count it, and make its error safe to send."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from taskcache.errors import CacheError, InternalError
from taskcache.server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

GENERIC_INTERNAL_MESSAGE: Final = "internal server error"
# Codes whose messages may carry internals (driver errors, paths); clients get a generic one.
_HIDDEN_CODES: Final = frozenset({"INTERNAL", "UNKNOWN"})


class CallRunner:
    """Runs RPC handlers, recording ``taskcache_requests`` and latency per call.

    :meth:`run` returns the handler's response or raises a :class:`CacheError` whose message
    may be sent to the client as is.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def run(
        self,
        transport: str,
        service: str,
        method: str,
        handler: Callable[[Any], Awaitable[Any]],
        request: Any,
    ) -> Any:
        """Return ``await handler(request)``; raise CacheError (unexpected errors become a
        generic InternalError, their stack trace logged, never sent).
        """
        started = time.perf_counter()
        code = "OK"
        try:
            return await handler(request)
        except CacheError as error:
            code = error.code
            if code in _HIDDEN_CODES:
                logger.error("%s/%s failed: %s", service, method, error.message, exc_info=True)
                raise InternalError(GENERIC_INTERNAL_MESSAGE) from error
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as error:
            code = "INTERNAL"
            logger.exception("%s/%s failed unexpectedly", service, method)
            raise InternalError(GENERIC_INTERNAL_MESSAGE) from error
        finally:
            self._metrics.observe_request(
                transport, service, method, code, time.perf_counter() - started
            )
