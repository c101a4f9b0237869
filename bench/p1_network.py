"""P1: Get-hit throughput over the network, 16 concurrent clients.

Ours is ``taskcache serve`` on SQLite and on PostgreSQL; the baseline is the transport
ceiling (:mod:`bench.ceiling`): the same server stack answering a canned GetCacheResponse.
Each client is Flyte's generated async client (``CacheServiceClient`` for Connect,
``CacheServiceStub`` on its own ``grpc.aio`` channel for gRPC), all in one asyncio loop in
this process, each asking for its own pre-populated key. A round warms up, then counts the
calls completed in a fixed window.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
import pyqwest
from flyteidl2.cacheservice import cacheservice_pb2 as base
from flyteidl2.cacheservice.v2 import cacheservice_connect, cacheservice_pb2, cacheservice_pb2_grpc

from bench.common import LABELS, Result, Tier, alternate, progress
from bench.literals import KIBIBYTE, OUTPUT_NAME, kib_output, task_identifier
from bench.servers import Server

SCOPE = cacheservice_pb2.Identifier(org="bench", project="taskcache", domain="development")
TRANSPORTS = ("connect", "grpc")
# Separate TCP connections per client (gRPC channels otherwise share subchannels).
_GRPC_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def hit_key(client: int) -> str:
    return f"bench-p1-hit-{client:03d}"


def get_request(client: int) -> cacheservice_pb2.GetCacheRequest:
    return cacheservice_pb2.GetCacheRequest(
        base_request=base.GetCacheRequest(key=hit_key(client)), identifier=SCOPE
    )


def populate(server: Server, clients: int) -> None:
    """Store one 1 KiB hit per client (over gRPC, overwriting)."""
    channel = grpc.insecure_channel(server.grpc_target)
    try:
        stub = cacheservice_pb2_grpc.CacheServiceStub(channel)
        for client in range(clients):
            output = base.CachedOutput(
                output_literals=kib_output(client),
                metadata=base.Metadata(source_identifier=task_identifier("bench.p1")),
            )
            stub.Put(
                cacheservice_pb2.PutCacheRequest(
                    base_request=base.PutCacheRequest(
                        key=hit_key(client),
                        output=output,
                        overwrite=base.OverwriteOutput(overwrite=True),
                    ),
                    identifier=SCOPE,
                ),
                timeout=30,
            )
    finally:
        channel.close()


@dataclass
class _Window:
    start: float
    stop: float
    completed: int = 0


def _check(response: Any) -> None:
    text = response.output.output_literals.literals[OUTPUT_NAME].scalar.primitive.string_value
    if len(text) != KIBIBYTE:
        raise RuntimeError(f"unexpected Get response: {response}")


async def _drive(calls: list[Callable[[], Awaitable[Any]]], window: _Window) -> None:
    async def worker(call: Callable[[], Awaitable[Any]]) -> None:
        _check(await call())
        while (now := time.perf_counter()) < window.stop:
            await call()
            if now >= window.start:
                window.completed += 1

    await asyncio.gather(*(worker(call) for call in calls))


def _bind(method: Callable[[Any], Awaitable[Any]], request: Any) -> Callable[[], Awaitable[Any]]:
    return lambda: method(request)


async def _connect_round(url: str, clients: int, warmup: float, seconds: float) -> float:
    stubs = [
        cacheservice_connect.CacheServiceClient(
            url, timeout_ms=30_000, http_client=pyqwest.Client(pyqwest.HTTPTransport())
        )
        for _ in range(clients)
    ]
    try:
        calls = [_bind(stub.get, get_request(i)) for i, stub in enumerate(stubs)]
        now = time.perf_counter()
        window = _Window(now + warmup, now + warmup + seconds)
        await _drive(calls, window)
        return window.completed / seconds
    finally:
        for stub in stubs:
            await stub.close()


async def _grpc_round(target: str, clients: int, warmup: float, seconds: float) -> float:
    channels = [grpc.aio.insecure_channel(target, options=_GRPC_OPTIONS) for _ in range(clients)]
    try:
        stubs = [cacheservice_pb2_grpc.CacheServiceStub(channel) for channel in channels]
        calls = [
            _bind(functools.partial(stub.Get, timeout=30), get_request(i))
            for i, stub in enumerate(stubs)
        ]
        now = time.perf_counter()
        window = _Window(now + warmup, now + warmup + seconds)
        await _drive(calls, window)
        return window.completed / seconds
    finally:
        for channel in channels:
            await channel.close()


def throughput(server: Server, transport: str, tier: Tier) -> float:
    """Return Get calls per second against ``server`` over ``transport`` for one round."""
    if transport == "connect":
        round_ = _connect_round(
            server.http_url, tier.p1_clients, tier.p1_warmup_seconds, tier.p1_round_seconds
        )
    else:
        round_ = _grpc_round(
            server.grpc_target, tier.p1_clients, tier.p1_warmup_seconds, tier.p1_round_seconds
        )
    return asyncio.run(round_)


WORKERS_SUFFIX = "-workers2"


def run(tier: Tier, ours: dict[str, Server | None], ceiling: Server) -> list[Result]:
    """``ours`` maps a database name (sqlite, postgres; sqlite-workers2: the SQLite catalog
    behind ``serve --workers 2``, an informational row) to its server, None if unavailable.
    """
    results = []
    for name, server in ours.items():
        database = name.removesuffix(WORKERS_SUFFIX)
        informational = name.endswith(WORKERS_SUFFIX)
        limit = None if informational else 0.75 if database == "sqlite" else 0.6
        if server is not None:
            populate(server, tier.p1_clients)
        for transport in TRANSPORTS:
            result = Result(
                id=f"P1-{name}-{transport}",
                measure=(
                    f"Get-hit req/s, {tier.p1_clients} clients, {LABELS[database]} server"
                    f"{', 2 worker processes' if informational else ''}, "
                    f"{LABELS[transport]} (vs transport ceiling)"
                ),
                unit="req/s",
                target="(info)" if limit is None else f">= {limit}x",
                direction="higher",
                limit=limit,
            )
            if server is None:
                result.notes = f"not run: no {name} server"
                results.append(result)
                continue

            def ours_round(server: Server = server, transport: str = transport) -> float:
                return throughput(server, transport, tier)

            def ceiling_round(transport: str = transport) -> float:
                return throughput(ceiling, transport, tier)

            result.ours_rounds, result.baseline_rounds = alternate(
                tier.p1_rounds, ours_round, ceiling_round
            )
            result.settle()
            progress(
                f"{result.id}: ours {result.ours:.0f} req/s, ceiling {result.baseline:.0f} req/s"
            )
            results.append(result)
    return results
