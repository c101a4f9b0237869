"""Diagnostics behind ``docs/benchmarks.md``'s "What limits it" (not part of ``make bench``).

python -m bench.diagnose p1    # server CPU per Get: ceiling, ceiling + thread hop, SQLite,
                               # PostgreSQL (gRPC and Connect, 3 rounds each)
python -m bench.diagnose core  # in-process: one Get inline vs through the thread pool
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import p1_network, pg
from bench.common import TIERS
from bench.literals import kib_output, task_identifier
from bench.servers import Server, ceiling_server, taskcache_server


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p1() -> None:
    tier = dataclasses.replace(TIERS["quick"], p1_round_seconds=3.0)
    admin, _ = pg.admin_url()
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        root = Path(folder)
        servers: dict[str, Server] = {
            "ceiling": stack.enter_context(ceiling_server(root)),
            "ceiling+hop": stack.enter_context(ceiling_server(root, thread_hop=True)),
            "sqlite": stack.enter_context(taskcache_server("sqlite", str(root / "c.db"), root)),
        }
        if admin:
            url = stack.enter_context(pg.fresh_database(admin, "diag_"))
            servers["postgres"] = stack.enter_context(taskcache_server("postgres", url, root))
        for name in ("sqlite", "postgres"):
            if name in servers:
                p1_network.populate(servers[name], tier.p1_clients)
        for transport in p1_network.TRANSPORTS:
            for _ in range(3):
                for name, server in servers.items():
                    before, started = _cpu_seconds(server.pid), time.perf_counter()
                    rate = p1_network.throughput(server, transport, tier)
                    cpu = _cpu_seconds(server.pid) - before
                    calls = rate * (time.perf_counter() - started - tier.p1_warmup_seconds)
                    print(
                        f"{transport:8} {name:12} {rate:7.0f} req/s, "
                        f"server CPU {cpu / calls * 1e6:5.0f} us/request",
                        flush=True,
                    )


def core() -> None:
    from flyteidl2.cacheservice import cacheservice_pb2  # noqa: PLC0415

    from taskcache.manager import AsyncCacheManager, CacheManager, NewEntry  # noqa: PLC0415
    from taskcache.repositories.base import Scope  # noqa: PLC0415
    from taskcache.repositories.sqlite import SqliteRepository  # noqa: PLC0415
    from taskcache.repositories.threaded import ThreadedRepository  # noqa: PLC0415
    from taskcache.server.metrics import ServerMetrics  # noqa: PLC0415
    from taskcache.server.service import (  # noqa: PLC0415
        Backend,
        CacheService,
        UnscopedDialect,
        get_response,
    )

    scope = Scope()  # the unscoped API's scope, which the service below reads
    with tempfile.TemporaryDirectory() as folder:
        repository = SqliteRepository(Path(folder) / "c.db")
        manager = CacheManager(repository)
        for index in range(16):
            entry = NewEntry(
                None,
                kib_output(index).SerializeToString(),
                task_identifier("bench.p1").SerializeToString(),
                {},
            )
            manager.put(scope, f"k{index}", entry, overwrite=True)
        requests = [cacheservice_pb2.GetCacheRequest(key=f"k{i}") for i in range(16)]
        canned = get_response(manager.get(scope, "k0"))

        async def measure(label: str, call: Callable[[int], Awaitable[Any]]) -> None:
            stop = time.perf_counter() + 3.0
            count = 0

            async def worker(index: int) -> None:
                nonlocal count
                while time.perf_counter() < stop:
                    await call(index)
                    count += 1

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(16)))
            rate = count / (time.perf_counter() - wall)
            cpu_per_get = (time.process_time() - cpu) / count * 1e6
            print(f"{label:34} {rate:7.0f} Gets/s, {cpu_per_get:4.0f} us CPU/Get")

        for threads in (8, 1):
            executor = ThreadPoolExecutor(threads)
            threaded = AsyncCacheManager(ThreadedRepository(repository, executor))
            service = CacheService(Backend(threaded, ServerMetrics(), executor), UnscopedDialect())

            async def hop(index: int, executor: ThreadPoolExecutor = executor) -> Any:
                return await asyncio.get_running_loop().run_in_executor(executor, lambda: canned)

            async def real(index: int, service: CacheService = service) -> Any:
                return await service.get(requests[index], {})

            asyncio.run(measure(f"thread hop only, pool {threads}", hop))
            asyncio.run(measure(f"CacheService.get, pool {threads}", real))

        async def inline(index: int) -> Any:
            return get_response(manager.get(scope, f"k{index}"))

        asyncio.run(measure("manager.get + response, inline", inline))
        repository.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("p1", "core"))
    {"p1": p1, "core": core}[parser.parse_args().what]()


if __name__ == "__main__":
    main()
