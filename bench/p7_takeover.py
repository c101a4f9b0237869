"""P7: takeover. The owner of a computation is SIGKILLed mid-compute while 8 other processes
wait for its result: exactly one of them must take over, and soon.

Every process calls the same ``@taskcache.cached`` function (short heartbeat) on one embedded
SQLite catalog. The owner starts first and hangs inside the function; the waiters start once
it does, find the reservation held and poll. Then the owner is killed: its lease runs out at
most heartbeat x grace multiplier after its last heartbeat, the first waiter to poll after
that is granted the reservation, computes (instantly) and returns. Recovery time runs from
the kill until the first waiter has the value; it is compared with the lease (heartbeat x
grace), and the target allows one poll cap on top (a waiter polls at most that long after the
expiry). Executions are counted in a file: the owner's, then exactly one takeover.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import time
from datetime import timedelta
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import taskcache
from bench.common import Result, Tier, progress
from bench.literals import kib_text
from taskcache.clients.compute_once import _poll_cap  # the waiters' cap: the target follows it
from taskcache.clients.embedded import EmbeddedClient

HANG_SECONDS = 120.0  # the owner sleeps this long at most (it is killed long before)
WAIT_TIMEOUT = timedelta(seconds=60)  # no waiter polls forever if the takeover fails
SETTLE_SECONDS = 0.3  # after the waiters started calling: all of them are polling by then
START_TIMEOUT = 60.0  # spawning and importing, on a loaded machine


def task(round_id: int, folder: str) -> str:
    """The computation: counts its execution; the first one of a round hangs (the owner)."""
    work = Path(folder)
    with (work / f"executions-{round_id}.txt").open("a") as counter:
        counter.write(f"{os.getpid()}\n")
    try:
        # O_EXCL: exactly one execution per round becomes the hanging owner.
        descriptor = os.open(work / f"owner-{round_id}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return kib_text(round_id)
    os.write(descriptor, str(os.getpid()).encode())
    os.close(descriptor)
    time.sleep(HANG_SECONDS)
    return kib_text(round_id)


def _call(folder: str, round_id: int, heartbeat: float, outbox: Any) -> None:
    """A process: open the catalog, say so (if a waiter), call, report when the value came."""
    with taskcache.open(Path(folder) / "catalog") as client:
        memoized = taskcache.cached(
            catalog=client, heartbeat=timedelta(seconds=heartbeat), wait_timeout=WAIT_TIMEOUT
        )(task)
        if outbox is not None:
            outbox.put(("ready", os.getpid()))
        try:
            value = memoized(round_id, folder)
        except Exception as error:
            if outbox is not None:
                outbox.put(("error", repr(error)))
            raise
        if outbox is not None:
            outbox.put(("done", time.time(), value == kib_text(round_id)))


def _expect(outbox: Any, kind: str, count: int) -> list[tuple[Any, ...]]:
    messages: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + START_TIMEOUT
    while len(messages) < count:
        message = outbox.get(timeout=max(0.1, deadline - time.monotonic()))
        if message[0] == "error":
            raise RuntimeError(f"P7 waiter failed: {message[1]}")
        if message[0] != kind:
            raise RuntimeError(f"P7: expected {kind!r}, got {message!r}")
        messages.append(message)
    return messages


def _round(folder: Path, round_id: int, waiters: int, heartbeat: float) -> dict[str, Any]:
    """Run one round; return the recovery time, the takeovers and whether all had the value."""
    context = multiprocessing.get_context("spawn")
    outbox = context.Queue()
    owner = context.Process(
        target=_call, args=(str(folder), round_id, heartbeat, None), daemon=True
    )
    others: list[SpawnProcess] = []
    try:
        owner.start()
        marker = folder / f"owner-{round_id}"
        deadline = time.monotonic() + START_TIMEOUT
        while not (marker.exists() and marker.read_text()):
            if time.monotonic() > deadline or not owner.is_alive():
                raise RuntimeError("P7: the owner never started computing")
            time.sleep(0.01)
        others = [
            context.Process(
                target=_call, args=(str(folder), round_id, heartbeat, outbox), daemon=True
            )
            for _ in range(waiters)
        ]
        for process in others:
            process.start()
        _expect(outbox, "ready", waiters)
        time.sleep(SETTLE_SECONDS)
        killed_at = time.time()
        os.kill(owner.pid, signal.SIGKILL)  # type: ignore[arg-type]  # started: it has a pid
        done = _expect(outbox, "done", waiters)
    finally:
        for process in (owner, *others):
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    executions = (folder / f"executions-{round_id}.txt").read_text().split()
    ends = sorted(end for _, end, _ in done)
    return {
        "recovery": ends[0] - killed_at,
        "all_have_value": ends[-1] - killed_at,
        "takeovers": len(executions) - 1,  # the first execution is the killed owner's
        "values_ok": all(ok for _, _, ok in done),
    }


def run(tier: Tier) -> list[Result]:
    """Measure recovery after a killed owner, ``tier.p7_rounds`` times."""
    heartbeat = tier.p7_heartbeat_seconds
    with tempfile.TemporaryDirectory(prefix="taskcache-bench-p7-") as name:
        folder = Path(name)
        with taskcache.open(folder / "catalog") as client:
            assert isinstance(client, EmbeddedClient)  # a folder opens the embedded catalog
            grace = client.manager.heartbeat_grace_multiplier
        lease = heartbeat * grace
        poll_cap = _poll_cap(timedelta(seconds=heartbeat))
        rounds = [
            _round(folder, round_id, tier.p7_waiters, heartbeat)
            for round_id in range(tier.p7_rounds)
        ]
    bound = lease + poll_cap
    result = Result(
        id="P7-takeover",
        measure=(
            f"takeover: owner SIGKILLed mid-compute, {tier.p7_waiters} waiting processes, "
            "kill -> first waiter has the value (vs the lease, heartbeat "
            f"{heartbeat} s x grace {grace:g})"
        ),
        unit="s",
        target=f"<= lease + one poll cap ({bound:.2f} s), exactly 1 takeover",
        direction="lower",
        limit=bound / lease,
        ours_rounds=[r["recovery"] for r in rounds],
    )
    result.settle()
    result.baseline = lease
    takeovers = [r["takeovers"] for r in rounds]
    # A bound, not a typical value: every round must keep it.
    result.met = (
        all(r["recovery"] <= bound for r in rounds)
        and all(count == 1 for count in takeovers)
        and all(r["values_ok"] for r in rounds)
    )
    result.notes = f"takeovers per round: {'/'.join(map(str, takeovers))}"
    result.extra = {
        "takeovers": takeovers,
        "all_waiters_have_value_s": [r["all_have_value"] for r in rounds],
        "values_ok": [r["values_ok"] for r in rounds],
        "heartbeat_s": heartbeat,
        "grace_multiplier": grace,
        "poll_cap_s": poll_cap,
        "waiters": tier.p7_waiters,
    }
    recoveries = ", ".join(f"{r['recovery']:.2f}" for r in rounds)
    progress(
        f"P7: recovery {recoveries} s "
        f"(lease {lease:.2f} s, bound {bound:.2f} s), takeovers {takeovers}"
    )
    return [result]
