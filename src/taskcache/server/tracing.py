"""OpenTelemetry tracing of RPCs: one server span per call, exported over OTLP/gRPC.

Tracing is configured only when an OTLP endpoint is given; otherwise nothing is imported and
calls pay nothing for it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from taskcache._version import __version__


class RequestTracer(Protocol):
    """Opens a span per RPC and flushes spans at shutdown."""

    def span(self, transport: str, service: str, method: str) -> AbstractContextManager[Any]:
        """Return a context manager around one RPC; the yielded span takes ``record``."""
        ...

    def record(self, span: Any, code: str) -> None:
        """Record the call's status code on ``span`` (an error status unless OK)."""
        ...

    def shutdown(self) -> None:
        """Export pending spans and stop the exporter."""
        ...


class OtlpRequestTracer:
    """A :class:`RequestTracer` exporting to an OTLP/gRPC collector at ``endpoint``."""

    def __init__(self, endpoint: str, *, service_name: str = "taskcache") -> None:
        # Imported here so that a server without tracing never loads the SDK.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service_name, "service.version": __version__})
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=_insecure(endpoint)))
        )
        self._tracer = self._provider.get_tracer("taskcache.server", __version__)
        self._server_kind = SpanKind.SERVER
        self._status = Status
        self._error = StatusCode.ERROR

    def span(self, transport: str, service: str, method: str) -> AbstractContextManager[Any]:
        """Start the server span of one RPC."""
        return self._tracer.start_as_current_span(
            f"{service}/{method}",
            kind=self._server_kind,
            attributes={
                "rpc.system": "grpc" if transport == "grpc" else "connect_rpc",
                "rpc.service": service,
                "rpc.method": method,
            },
        )

    def record(self, span: Any, code: str) -> None:
        """Set ``rpc.status_code`` and mark non-OK calls as errors."""
        span.set_attribute("rpc.status_code", code)
        if code != "OK":
            span.set_status(self._status(self._error, code))

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self._provider.shutdown()


def _insecure(endpoint: str) -> bool:
    return not endpoint.startswith("https://")


def configure_tracing(endpoint: str | None) -> RequestTracer | None:
    """Return a tracer exporting to ``endpoint``, or None (tracing off) when it is None."""
    return OtlpRequestTracer(endpoint) if endpoint else None
