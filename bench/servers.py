"""Server subprocesses on loopback: ``taskcache serve`` and the transport-ceiling server.

Both are started with ``sys.executable`` from the repository root, wait for ``/healthz``,
and stop with SIGTERM (killed if they do not exit). Peak RSS comes from /proc (VmHWM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def peak_rss_bytes(pid: int) -> int | None:
    """Return the process's peak resident set size (VmHWM) in bytes, None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


class Server:
    """One server subprocess listening on two free loopback ports (Connect and gRPC)."""

    def __init__(self, name: str, command: Sequence[str], folder: Path) -> None:
        self.name = name
        self.folder = folder
        self.port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.port:
            self.grpc_port = free_port()
        self.command = [
            *command,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
        ]
        self.log_path = folder / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def peak_rss(self) -> int | None:
        """Peak RSS so far (VmHWM), in bytes."""
        return peak_rss_bytes(self.pid) if self._process is not None else None

    def start(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TASKCACHE_")}
        environment["TASKCACHE_HOME"] = str(self.folder / f"{self.name}-home")
        environment["PYTHONUNBUFFERED"] = "1"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=REPOSITORY_ROOT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited with {self._process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')}"
                )
            if _healthy(f"{self.http_url}/healthz"):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} server not healthy after {STARTUP_TIMEOUT} s")

    def stop(self) -> int | None:
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def taskcache_server(name: str, database: str, folder: Path, *, workers: int = 1) -> Server:
    """``python -m taskcache serve`` on ``database`` (default pool size and settings) with
    ``workers`` processes.
    """
    command = [sys.executable, "-m", "taskcache", "serve", "--database", database]
    if workers > 1:
        command += ["--workers", str(workers)]
    return Server(name, [*command, "--log-level", "WARNING"], folder)


def ceiling_server(folder: Path, *, thread_hop: bool = False) -> Server:
    """The same server stack with a canned Get (see :mod:`bench.ceiling`); ``thread_hop``
    (diagnostics) fetches the canned answer through the server's thread pool.
    """
    command = [sys.executable, "-m", "bench.ceiling", *(["--thread-hop"] if thread_hop else [])]
    return Server("ceiling-hop" if thread_hop else "ceiling", command, folder)
