"""What both transports do around every RPC: time it, count it, and make its error safe to send."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from taskcache.errors import CacheError, InternalError
from taskcache.server.metrics import ServerMetrics
from taskcache.server.tracing import RequestTracer

logger = logging.getLogger(__name__)

GENERIC_INTERNAL_MESSAGE: Final = "internal server error"
# Codes whose messages may carry internals (driver errors, paths); clients get a generic one.
_HIDDEN_CODES: Final = frozenset({"INTERNAL", "UNKNOWN"})
# Outcomes an operator should see without debug logging (the database is in trouble).
_TROUBLE_CODES: Final = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


class CallRunner:
    """Runs RPC handlers, recording ``taskcache_requests`` and latency per call.

    :meth:`run` returns the handler's response or raises a :class:`CacheError` whose message
    may be sent to the client as is.
    """

    def __init__(self, metrics: ServerMetrics, tracer: RequestTracer | None = None) -> None:
        self._metrics = metrics
        self._tracer = tracer

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
        if self._tracer is None:
            return await self._run(transport, service, method, handler, request)
        with self._tracer.span(transport, service, method) as span:
            try:
                response = await self._run(transport, service, method, handler, request)
            except CacheError as error:
                self._tracer.record(span, error.code)
                raise
            except BaseException:
                self._tracer.record(span, "CANCELLED")
                raise
            self._tracer.record(span, "OK")
            return response

    async def _run(
        self,
        transport: str,
        service: str,
        method: str,
        handler: Callable[[Any], Awaitable[Any]],
        request: Any,
    ) -> Any:
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
            elapsed = time.perf_counter() - started
            self._metrics.observe_request(transport, service, method, code, elapsed)
            if code in _TROUBLE_CODES:
                logger.warning("%s %s/%s -> %s", transport, service, method, code)
            elif logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s/%s -> %s in %.2f ms", transport, service, method, code, elapsed * 1000
                )
