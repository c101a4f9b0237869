"""Observability: OTLP trace export per RPC, and one debug log line per request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from flyteidl2.cacheservice import cacheservice_pb2 as base
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2
from flyteidl2.cacheservice.v2 import cacheservice_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from server_process import ServerProcess, free_port


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC collector that keeps every exported span."""

    def __init__(self) -> None:
        self.spans: list[object] = []
        self.received = threading.Event()

    def Export(self, request, context):  # noqa: N802 - the generated servicer's method name
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector() -> Iterator[tuple[_Collector, int]]:
    servicer = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    yield servicer, port
    server.stop(None)


def _get_missing(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = cacheservice_pb2_grpc.CacheServiceStub(channel)
        request = v2.GetCacheRequest(
            base_request=base.GetCacheRequest(key="no-such-key"),
            identifier=v2.Identifier(org="o", project="p", domain="d"),
        )
        with pytest.raises(grpc.RpcError) as raised:
            stub.Get(request, timeout=5)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_spans_reach_the_configured_collector(
    tmp_path: Path, collector: tuple[_Collector, int]
) -> None:
    servicer, port = collector
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        extra_args=["--otlp-endpoint", f"http://127.0.0.1:{port}"],
    ).start()
    try:
        _get_missing(server)
    finally:
        assert server.stop() == 0  # shutdown flushes the batch of spans
    assert servicer.received.wait(10), server.log_text()
    names = {span.name: span for span in servicer.spans}
    span = names["flyteidl2.cacheservice.v2.CacheService/Get"]
    attributes = {item.key: item.value.string_value for item in span.attributes}
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.status_code"] == "NOT_FOUND"
    assert span.status.code == span.status.STATUS_CODE_ERROR


def test_debug_logging_writes_one_line_per_request(tmp_path: Path) -> None:
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        extra_env={"TASKCACHE_LOG_LEVEL": "DEBUG", "TASKCACHE_LOG_FORMAT": "json"},
    ).start()
    try:
        _get_missing(server)
        _get_missing(server)
    finally:
        assert server.stop() == 0
    request_lines = [
        json.loads(line)
        for line in server.log_text().splitlines()
        if "CacheService/Get -> NOT_FOUND" in line
    ]
    assert len(request_lines) == 2
    assert all(line["level"] == "DEBUG" for line in request_lines)
