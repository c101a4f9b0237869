"""What both transports do around every RPC: time it, count it, trace it, admit it through
the :class:`~taskcache.server.breaker.CallGate` (in-flight bound, database breaker, deadline)
and make its error safe to send. It must not know any RPC's meaning (that is the service
core's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import SimpleNamespace
from typing import Final

from google.protobuf.message import Message

from taskcache.errors import CacheError, InternalError
from taskcache.rpcs import Rpc, Service
from taskcache.server.breaker import CallGate, DatabaseDownError
from taskcache.server.datacatalog_service import DataCatalogService
from taskcache.server.metrics import ServerMetrics
from taskcache.server.service import CacheService, Headers
from taskcache.server.tracing import RequestTracer

# The request, its headers and the seconds left before the caller's deadline (None: none).
RpcCall = Callable[[Message, Headers, float | None], Awaitable[Message]]
# A service core: one coroutine method per RPC of its Service, named by Rpc.attribute.
ServiceCore = CacheService | DataCatalogService

logger = logging.getLogger(__name__)

GENERIC_INTERNAL_MESSAGE: Final = "internal server error"
# Codes whose messages may carry internals (driver errors, paths); clients get a generic one.
_HIDDEN_CODES: Final = frozenset({"INTERNAL", "UNKNOWN"})
# Outcomes an operator should see without debug logging (the database is in trouble).
_TROUBLE_CODES: Final = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
# Requests refused as malformed: worth a warning, but a flood of them must not flood the log.
_REJECTED_CODES: Final = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})
REJECTION_WARNINGS_PER_SECOND: Final = 10


class RejectionLog:
    """Logs one warning line per rejected request, at most ``per_second`` lines a second;
    the first line after a quiet spell says how many were suppressed.
    """

    def __init__(self, per_second: int = REJECTION_WARNINGS_PER_SECOND) -> None:
        self._per_second = per_second
        self._lock = threading.Lock()
        self._window = 0
        self._logged = 0
        self._suppressed = 0

    def record(self, transport: str, service: str, method: str, code: str, message: str) -> None:
        """Log the rejection of one ``service``/``method`` request, unless over the rate."""
        now = int(time.monotonic())
        with self._lock:
            if now != self._window:
                self._window, self._logged = now, 0
            if self._logged >= self._per_second:
                self._suppressed += 1
                return
            self._logged += 1
            suppressed, self._suppressed = self._suppressed, 0
        note = f" ({suppressed} more rejections not logged)" if suppressed else ""
        logger.warning(
            "%s %s/%s rejected -> %s: %s%s", transport, service, method, code, message, note
        )


class CallObserver:
    """Records ``taskcache_requests``, latency and (with a tracer) a span per RPC; with a
    ``gate``, every observed call is admitted through it (its refusals are observed too).
    """

    def __init__(
        self,
        metrics: ServerMetrics,
        tracer: RequestTracer | None = None,
        *,
        gate: CallGate | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracer = tracer
        self._gate = gate
        self._rejections = RejectionLog()

    async def admit(self, work: Callable[[], Awaitable[Message]], timeout: float | None) -> Message:
        """Return ``await work()``, admitted through the gate with ``timeout`` seconds left
        (see :meth:`CallGate.run`); without a gate, simply awaited.
        """
        if self._gate is None:
            return await work()
        return await self._gate.run(work, timeout)

    def reject(self, transport: str, service: str, method: str, error: CacheError) -> None:
        """Record a request refused before it reached the service core (it did not decode):
        counted under ``error.code`` and logged like any other rejection.
        """
        self._metrics.observe_request(transport, service, method, error.code, 0.0)
        self._rejections.record(transport, service, method, error.code, error.message)

    @contextlib.contextmanager
    def observe(self, transport: str, service: str, method: str) -> Iterator[None]:
        """Observe the RPC run inside the ``with`` block.

        A CacheError leaves the block as it is, except INTERNAL/UNKNOWN ones, which become a
        generic InternalError (their message may hold internals; it is logged, never sent);
        any other exception becomes that generic InternalError too, its traceback logged.
        """
        span_context = (
            self._tracer.span(transport, service, method)
            if self._tracer is not None
            else contextlib.nullcontext()
        )
        started = time.perf_counter()
        code = "OK"
        # Refusals come as fast as clients retry: rate-limited, never one warning each.
        refused = False
        with span_context as span:
            try:
                yield
            except CacheError as error:
                code = error.code
                refused = code in _REJECTED_CODES or isinstance(error, DatabaseDownError)
                if refused:
                    self._rejections.record(transport, service, method, code, error.message)
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
                if self._tracer is not None:
                    self._tracer.record(span, code)
                if code in _TROUBLE_CODES and not refused:
                    logger.warning("%s %s/%s -> %s", transport, service, method, code)
                elif logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "%s %s/%s -> %s in %.2f ms",
                        transport,
                        service,
                        method,
                        code,
                        elapsed * 1000,
                    )


def observed_calls(
    transport: str, service: Service, core: ServiceCore, observer: CallObserver
) -> dict[Rpc, RpcCall]:
    """Return, for every RPC of ``service``, ``core``'s method for it wrapped in
    :meth:`CallObserver.observe`: what a transport's handler awaits with the request and its
    headers. It raises CacheError with a message safe to send.
    """
    return {rpc: _observed(transport, service, rpc, core, observer) for rpc in service.rpcs}


def _observed(
    transport: str, service: Service, rpc: Rpc, core: ServiceCore, observer: CallObserver
) -> RpcCall:
    method: Callable[[Message, Headers], Awaitable[Message]] = getattr(core, rpc.attribute)

    async def call(request: Message, headers: Headers, timeout: float | None) -> Message:
        with observer.observe(transport, service.name, rpc.name):
            return await observer.admit(lambda: method(request, headers), timeout)

    return call


def servicer(
    calls: Mapping[Rpc, RpcCall],
    name: Callable[[Rpc], str],
    handler: Callable[[RpcCall], Callable[..., Awaitable[Message]]],
) -> SimpleNamespace:
    """Return the object a generated server registers: for every RPC, the attribute
    ``name(rpc)`` holding ``handler(call)`` (the transport's adapter around the call).
    """
    return SimpleNamespace(**{name(rpc): handler(call) for rpc, call in calls.items()})
