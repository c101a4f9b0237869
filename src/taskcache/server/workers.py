"""``taskcache serve --workers N``: one supervisor process and N worker processes that share
both ports.

The supervisor migrates the database once and holds both ports with SO_REUSEPORT sockets
that never listen; each worker binds its own Connect and gRPC listeners to the same ports
with SO_REUSEPORT, and the kernel spreads incoming connections among them (evenly by
connection hash, unlike one shared accept queue, where the busiest worker tends to win every
accept). Nothing that does not ask for SO_REUSEPORT can take the ports meanwhile; another
process of the same user that does ask would share them (the cost of SO_REUSEPORT). A
connection waiting in the queue of a worker that dies is lost with it.

The supervisor then starts the workers — fresh interpreters running this module, never
forks of a process that may hold gRPC or database state — and only supervises: SIGTERM and
SIGINT are forwarded as SIGTERM (each worker drains like a single server), SIGHUP is
forwarded (token reload). A worker that exits while no stop was asked for stops the others
and makes the supervisor fail: restarting is left to the process manager around
``taskcache serve``, which sees the failure instead of a server silently running short of a
worker.

A worker reads its assignment as one JSON line on its stdin and keeps stdin open: end of
file there means the supervisor is gone (even SIGKILLed), and the worker drains and exits,
so no worker outlives its supervisor. Workers start with the forwarded signals blocked, so
one that arrives while a worker is still starting is handled, not fatal: a stop drains it,
a SIGHUP is moot (the token file is read at start).

It must not handle an RPC itself, nor decide cache policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import IO, Any, Final

from taskcache.errors import CacheError, UnavailableError
from taskcache.resolver import migrate, redact
from taskcache.server.logs import configure_logging
from taskcache.server.runner import WorkerPlace, bind_socket, serve
from taskcache.server.settings import Settings

logger = logging.getLogger("taskcache.server")

_POLL_SECONDS: Final = 0.05
# After the drain grace, how long a worker may take to close its database before SIGKILL.
_EXIT_SLACK_SECONDS: Final = 10.0
# What the supervisor forwards; a worker handles each from its first instruction on.
_WORKER_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Supervisor:
    """The running workers and what the supervisor was asked to do with them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._workers: list[subprocess.Popen[bytes]] = []
        self._stopping = False

    def start(self, port: int, grpc_port: int) -> None:
        """Start the workers on the held ports (their assignment goes to their stdin)."""
        settings = dataclasses.replace(self._settings, port=port, grpc_port=grpc_port, workers=1)
        for worker_number in range(1, self._settings.workers + 1):
            # Started with the signals blocked (the mask survives exec): one that arrives
            # while the worker imports waits until it can handle it (see main). Here they
            # wait the few milliseconds of the spawn, then go to forward().
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
            try:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "taskcache.server.workers"], stdin=subprocess.PIPE
                )
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            self._workers.append(worker)
            assignment = {
                "settings": dataclasses.asdict(settings),
                "worker": worker_number,
                "workers": self._settings.workers,
            }
            stdin: IO[bytes] | None = worker.stdin
            assert stdin is not None
            stdin.write(json.dumps(assignment).encode() + b"\n")
            stdin.flush()  # kept open: its end tells the worker the supervisor is gone
            if self._stopping:  # a stop signal came while the workers were starting
                self._signal_all(signal.SIGTERM)
                return

    def forward(self, signum: int, _frame: FrameType | None = None) -> None:
        """Signal handler: SIGHUP goes to every worker as is; anything else stops them."""
        if signum == signal.SIGHUP:
            if not self._settings.authenticates:
                logger.info("SIGHUP ignored: no token or key file to re-read")
                return
            self._signal_all(signal.SIGHUP)
            return
        if not self._stopping:
            logger.info("stopping %d workers (draining their calls)", len(self._workers))
        self._stopping = True
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def wait(self) -> list[str]:
        """Wait until every worker has exited; return what went wrong (empty: a clean stop).

        The first worker to exit without being asked stops the others.
        """
        failures: list[str] = []
        running = list(self._workers)
        deadline: float | None = None
        while running:
            for worker in list(running):
                code = worker.poll()
                if code is None:
                    continue
                running.remove(worker)
                if not self._stopping:
                    failures.append(f"worker pid {worker.pid} exited with status {code}")
                    logger.error("%s: stopping the other workers", failures[-1])
                    self._stopping = True
                    self._signal_all(signal.SIGTERM)
                elif code != 0:
                    failures.append(f"worker pid {worker.pid} stopped with status {code}")
            if self._stopping and deadline is None:
                deadline = time.monotonic() + self._settings.shutdown_grace + _EXIT_SLACK_SECONDS
            if deadline is not None and time.monotonic() > deadline:
                for worker in running:
                    failures.append(f"worker pid {worker.pid} did not stop in time: killed")
                    worker.kill()
                    worker.wait()
                running.clear()
            time.sleep(_POLL_SECONDS)
        for worker in self._workers:
            if worker.stdin is not None:
                worker.stdin.close()
        return failures

    def abandon(self) -> None:
        """Kill every worker still running (the supervisor itself is failing)."""
        for worker in self._workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            if worker.stdin is not None:
                worker.stdin.close()


def supervise(settings: Settings) -> None:
    """Serve ``settings`` from ``settings.workers`` worker processes until SIGTERM/SIGINT,
    then drain all of them and return.

    Raises InvalidArgumentError / UnavailableError / InternalError like
    :func:`taskcache.server.runner.serve` for an unusable database or a busy port (found
    before any worker starts), and UnavailableError naming the worker if one exited
    unexpectedly or failed to stop cleanly (the others are stopped first).
    """
    migrate(settings.database)
    supervisor = _Supervisor(settings)
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {signum: signal.signal(signum, supervisor.forward) for signum in handled}
    try:
        with (
            bind_socket(settings.host, settings.port, share=True, listen=False) as http_holder,
            bind_socket(
                settings.host, settings.grpc_port, share=True, listen=False, listener="gRPC"
            ) as grpc_holder,
        ):
            port: int = http_holder.getsockname()[1]
            grpc_port: int = grpc_holder.getsockname()[1]
            try:
                supervisor.start(port, grpc_port)
            except BaseException:
                supervisor.abandon()
                raise
            logger.info(
                "taskcache supervising %d workers on Connect port %d and gRPC port %d; database %s",
                settings.workers,
                port,
                grpc_port,
                redact(settings.database),
            )
            failures = supervisor.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failures:
        raise UnavailableError("; ".join(failures))
    logger.info("taskcache workers stopped")


def _settings_from(data: dict[str, Any]) -> Settings:
    names = {item.name for item in dataclasses.fields(Settings)}
    return Settings(**{name: value for name, value in data.items() if name in names})


async def _serve_worker(settings: Settings, place: WorkerPlace, early: list[int]) -> None:
    """Serve as one worker until a stop signal or the end of stdin (supervisor gone).

    ``early``: signals received before the event loop ran (a stop among them stops at once).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    supervisor_pipe = sys.stdin.fileno()

    def stop_soon(signum: int, _frame: FrameType | None) -> None:
        # Until serve() installs its own handlers: a stop still drains, SIGHUP changes
        # nothing (the token file has not been read yet, or is read just now).
        if signum != signal.SIGHUP:
            loop.call_soon_threadsafe(stop.set)

    for signum in _WORKER_SIGNALS:
        signal.signal(signum, stop_soon)
    if any(signum != signal.SIGHUP for signum in early):
        stop.set()

    def supervisor_check() -> None:
        if not os.read(supervisor_pipe, 4096):
            loop.remove_reader(supervisor_pipe)
            logger.warning("supervisor gone: stopping")
            stop.set()

    loop.add_reader(supervisor_pipe, supervisor_check)
    try:
        await serve(settings, stop=stop, place=place)
    finally:
        loop.remove_reader(supervisor_pipe)
        # serve() restored the default actions: a late signal must not kill a clean exit.
        for signum in _WORKER_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """A worker's entry point (``python -m taskcache.server.workers``, started by
    :func:`supervise`): read the assignment from stdin and serve it. Returns the exit status.
    """
    del argv  # the assignment comes on stdin, not as arguments
    # The supervisor may forward a signal before this process serves (it arrives blocked,
    # pending since the spawn): SIGHUP's default action would kill it, SIGTERM's skip the
    # drain. Remember it instead, then let it in.
    early: list[int] = []
    for signum in _WORKER_SIGNALS:
        signal.signal(signum, lambda received, _frame: early.append(received))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)
    assignment = json.loads(sys.stdin.buffer.readline())
    settings = _settings_from(assignment["settings"])
    configure_logging(settings.log_level, settings.log_format)
    place = WorkerPlace(assignment["worker"], assignment["workers"])
    try:
        asyncio.run(_serve_worker(settings, place, early))
    except CacheError as error:
        logger.error("worker %d cannot serve: %s", place.worker, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
