"""Diagnostics behind ``docs/benchmarks.md``'s "What limits it" (not part of ``make bench``).

python -m bench.diagnose p1    # server CPU per Get: ceiling, ceiling + thread hop, SQLite,
                               # PostgreSQL (gRPC and Connect, 3 rounds each)
python -m bench.diagnose core  # in-process: one Get inline (as served) vs through the pool
python -m bench.diagnose p3    # P3's hit of @taskcache.cached, part by part, and its cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
import timeit
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

            async def hop(index: int, executor: ThreadPoolExecutor = executor) -> Any:
                return await asyncio.get_running_loop().run_in_executor(executor, lambda: canned)

            async def pooled(index: int, executor: ThreadPoolExecutor = executor) -> Any:
                loop = asyncio.get_running_loop()
                row = await loop.run_in_executor(executor, manager.get, scope, f"k{index}")
                return get_response(row)

            asyncio.run(measure(f"thread hop only, pool {threads}", hop))
            asyncio.run(measure(f"manager.get on pool {threads} + response", pooled))
            executor.shutdown()

        executor = ThreadPoolExecutor(8)
        served = AsyncCacheManager(ThreadedRepository(repository, executor))
        service = CacheService(Backend(served, ServerMetrics(), executor), UnscopedDialect())

        async def real(index: int) -> Any:
            return await service.get(requests[index], {})

        asyncio.run(measure("CacheService.get (the served path)", real))
        executor.shutdown()

        async def inline(index: int) -> Any:
            return get_response(manager.get(scope, f"k{index}"))

        asyncio.run(measure("manager.get + response, inline", inline))
        repository.close()


def _us(function: Callable[[], Any], number: int = 5000) -> float:
    """CPU microseconds per call of ``function`` (this thread's CPU time, which other
    processes on the shared cores disturb less than wall time): the best of 7 rounds.
    """
    rounds = timeit.repeat(function, number=number, repeat=7, timer=time.thread_time)
    return min(rounds) / number * 1e6


class _Stopwatch:
    """Accumulates the time spent inside the functions it wraps, by label (perf_counter:
    a thread's CPU clock costs a system call, ~0.6 us here, too much for steps this small).
    """

    def __init__(self) -> None:
        self.nanoseconds: dict[str, int] = {}

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.perf_counter_ns() - started
                self.nanoseconds[label] = self.nanoseconds.get(label, 0) + spent

        return timed


def p3(calls: int = 5000) -> None:
    """Where a P3 hit (``CachedFunction.__call__``) spends its time: the steps timed in
    place during real hits, the key's parts on their own, then cProfile.
    """
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415
    from unittest import mock  # noqa: PLC0415

    import taskcache  # noqa: PLC0415
    from bench import p3_memoize  # noqa: PLC0415
    from taskcache import hashing, values  # noqa: PLC0415
    from taskcache.clients import embedded  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        client = taskcache.open(Path(folder) / "ours")
        assert isinstance(client, embedded.EmbeddedClient)  # a folder opens it embedded
        ours = taskcache.cached(catalog=client)(p3_memoize.task)
        p3_memoize.populate(ours)
        signature = ours._signature  # the steps of the call, one by one
        argument_sets = p3_memoize.arguments()

        def hits() -> float:
            started = time.perf_counter_ns()
            for index in range(calls):
                ours(*argument_sets[index % len(argument_sets)])
            return (time.perf_counter_ns() - started) / calls / 1000

        plain = min(hits() for _ in range(3))
        watch = _Stopwatch()
        steps = {
            (signature, "key"): "_Signature.key: arguments -> Key",
            (hashing, "cache_key"): "hashing.cache_key (in client.get)",
            (client.manager, "serve"): "manager.serve: SQLite select -> row",
            (embedded, "read_payload"): "read_payload: decode the outputs",
            (embedded, "_hit_status"): "_hit_status: provenance (deferred, unread)",
            (signature, "result"): "_Signature.result: from_literal",
        }
        with contextlib.ExitStack() as stack:
            for (owner, name), label in steps.items():
                wrapped = watch.wrap(label, getattr(owner, name))
                stack.enter_context(mock.patch.object(owner, name, wrapped))
            total = hits()
        print(f"In place, {calls} hits (us per hit, wall):")
        for label in steps.values():
            print(f"  {label:46} {watch.nanoseconds.get(label, 0) / calls / 1000:7.1f}")
        rest = total - sum(watch.nanoseconds.values()) / calls / 1000
        print(f"  {'the rest (get_or_compute, get, __call__)':46} {rest:7.1f}")
        print(f"  {'the whole hit, timed in steps':46} {total:7.1f}")
        print(f"  {'the whole hit, untimed (best of 3)':46} {plain:7.1f}")

        args = argument_sets[3]
        hints = [signature.hints[name] for name in signature.signature.parameters]
        scope = signature.scope()
        arguments = signature.arguments(args, {})
        key = signature._build(arguments, scope, None)  # built afresh: it holds its inputs
        parts = {
            "bind the arguments": lambda: signature.arguments(args, {}),
            "values.to_literal x5": lambda: [
                values.to_literal(value, hint) for value, hint in zip(args, hints, strict=True)
            ],
            "values.literal_type x5 (the inputs' types)": lambda: [
                values.literal_type(hint) for hint in hints
            ],
            "values.interface_variable (the output's)": lambda: values.interface_variable(
                str, pickle_fallback=True
            ),
            "the scope (environment) and its Identifier": lambda: signature.identity(
                signature.scope()
            ),
            "_Signature.key, remembered (a repeated call)": lambda: signature.key(args, {}),
            "_Signature key, built afresh (a new call)": lambda: signature._build(
                arguments, scope, None
            ),
            "hash_identifier_except_version": lambda: hashing.hash_identifier_except_version(
                key.identifier
            ),
            "interface_signature_hash": lambda: hashing.interface_signature_hash(
                key.typed_interface
            ),
            "hash_literal_map (the 5 inputs)": lambda: hashing.hash_literal_map(key.read_inputs()),
            "hashing.cache_key of a Key built from scratch": lambda: hashing.cache_key(
                taskcache.Key(key.identifier, key.cache_version, key.typed_interface, key.inputs)
            ),
        }
        print("On their own (CPU us per call, best of 7 rounds):")
        for label, function in parts.items():
            print(f"  {label:46} {_us(function):7.1f}", flush=True)
        profiler = cProfile.Profile()
        profiler.enable()
        for index in range(calls):
            ours(*argument_sets[index % len(argument_sets)])
        profiler.disable()
        pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(20)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("p1", "core", "p3"))
    {"p1": p1, "core": core, "p3": p3}[parser.parse_args().what]()


if __name__ == "__main__":
    main()
