"""Server metrics that need their own server: reservation takeovers and pool gauges."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from flyteidl2.cacheservice import cacheservice_pb2 as base
from flyteidl2.cacheservice.v2 import cacheservice_pb2 as v2
from flyteidl2.cacheservice.v2 import cacheservice_pb2_grpc

from server_process import ServerProcess, http_get


def _reserve(stub: cacheservice_pb2_grpc.CacheServiceStub, owner: str) -> str:
    request = v2.GetOrExtendReservationRequest(
        base_request=base.GetOrExtendReservationRequest(key="metrics-key", owner_id=owner),
        identifier=v2.Identifier(org="o", project="p", domain="d"),
    )
    request.base_request.heartbeat_interval.FromMilliseconds(100)
    owner_id: str = stub.GetOrExtendReservation(request, timeout=5).reservation.owner_id
    return owner_id


def test_takeovers_and_pool_gauges_are_exported(tmp_path: Path, postgres_url: str) -> None:
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        database=postgres_url,
        extra_args=["--max-reservation-heartbeat", "0.1", "--heartbeat-grace-multiplier", "1"],
    ).start()
    try:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = cacheservice_pb2_grpc.CacheServiceStub(channel)
            assert _reserve(stub, "a") == "a"
            assert _reserve(stub, "b") == "a"  # contended
            time.sleep(0.15)  # a's reservation expires
            assert _reserve(stub, "b") == "b"  # taken over
        text = http_get(f"{server.http_url}/metrics").text
    finally:
        assert server.stop() == 0
    assert 'taskcache_reservations_total{outcome="granted"} 1.0' in text
    assert 'taskcache_reservations_total{outcome="contended"} 1.0' in text
    assert 'taskcache_reservations_total{outcome="taken_over"} 1.0' in text
    for gauge in (
        "taskcache_db_pool_connections ",
        "taskcache_db_pool_idle ",
        "taskcache_db_pool_waiting ",
    ):
        assert gauge in text, gauge
