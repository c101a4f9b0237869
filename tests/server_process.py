"""Run ``taskcache serve`` as a real subprocess on loopback for tests.

:class:`ServerProcess` picks free ports, starts ``python -m taskcache serve``, waits until
``/healthz`` answers 200, and stops the server with SIGTERM, asserting exit status 0. The
process is always terminated, killed if need be. Every ``TASKCACHE_*`` variable of the test
environment is dropped and ``TASKCACHE_HOME`` points at a temporary folder, so a server never
touches the developer's own catalog.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import IO, Self

STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 20.0
_START_ATTEMPTS = 3  # a picked port can be taken by someone else before the server binds it


@dataclass(frozen=True)
class HttpResponse:
    """Status, headers and body of a plain HTTP GET."""

    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_get(
    url: str,
    timeout: float = 5.0,
    *,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """GET ``url`` with the standard library (``context`` for https, extra ``headers``); any
    status (4xx/5xx too) is returned, not raised.
    """
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return HttpResponse(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpResponse(error.code, error.headers, error.read())


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


class ServerStartError(RuntimeError):
    """The server process exited or never became healthy; the message holds its log."""


class ServerProcess:
    """One ``taskcache serve`` subprocess.

    ``database``/``storage`` None leave the flag out (so the server applies its defaults);
    ``home`` is its ``TASKCACHE_HOME``; ``log_path`` receives its stdout and stderr.
    ``ssl_context``: the server serves TLS (pass ``--tls-*`` in ``extra_args``) and the health
    probe connects with this context.
    """

    def __init__(
        self,
        *,
        home: Path,
        log_path: Path,
        database: str | None = None,
        storage: str | None = None,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.home = home
        self.log_path = log_path
        self.database = database
        self.storage = storage
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})
        self.port = 0
        self.grpc_port = 0
        self.returncode: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def http_url(self) -> str:
        """Base URL of the Connect listener."""
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running server's process id."""
        assert self._process is not None, "server not started"
        return self._process.pid

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC listener."""
        return f"127.0.0.1:{self.grpc_port}"

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "taskcache", "serve"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--grpc-port", str(self.grpc_port)]
        if self.database is not None:
            command += ["--database", self.database]
        if self.storage is not None:
            command += ["--storage", self.storage]
        return command + list(self.extra_args)

    def _environment(self) -> dict[str, str]:
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("TASKCACHE_")
        }
        env["TASKCACHE_HOME"] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def log_text(self) -> str:
        """Return what the server has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Self:
        """Start the server and return once ``/healthz`` answers 200.

        Raises ServerStartError (with the server's log) if it exits or stays unhealthy.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        error: ServerStartError | None = None
        for _ in range(_START_ATTEMPTS):
            self.port, self.grpc_port = _two_free_ports()
            self._process = subprocess.Popen(
                self._command(),
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
            )
            try:
                self._wait_healthy()
            except ServerStartError as failure:
                error = failure
                self._kill()
                if "cannot listen" not in failure.args[0]:
                    break
            else:
                return self
        assert error is not None
        self._close_log()
        raise error

    def _wait_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"server exited with {self._process.returncode}:\n{self.log_text()}"
                )
            with contextlib.suppress(OSError):  # not listening yet
                probe = http_get(f"{self.http_url}/healthz", 2.0, context=self.ssl_context)
                if probe.status == 200:
                    return
            time.sleep(0.05)
        raise ServerStartError(f"server not healthy after {STARTUP_TIMEOUT} s:\n{self.log_text()}")

    def stop(self) -> int:
        """Send SIGTERM, wait for exit and return the exit status (killing it on timeout)."""
        process = self._process
        if process is None:
            return self.returncode if self.returncode is not None else 0
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            self.returncode = process.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
            raise
        finally:
            self._process = None
            self._close_log()
        return self.returncode

    def send_stop_signal(self) -> None:
        """Send SIGTERM and return at once (a shutdown test watches what happens next)."""
        assert self._process is not None, "server not started"
        self._process.send_signal(signal.SIGTERM)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the running server (e.g. SIGHUP to re-read its token file)."""
        assert self._process is not None, "server not started"
        self._process.send_signal(signum)

    def is_running(self, within: float = 0.0) -> bool:
        """True if the process is still running after waiting up to ``within`` s for an exit."""
        if self._process is None:
            return False
        try:
            self._process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            return True
        return False

    def stop_and_check(self) -> None:
        """Stop the server and assert it exited 0 (the message carries its log)."""
        code = self.stop()
        assert code == 0, f"server exited with {code} after SIGTERM:\n{self.log_text()}"

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=SHUTDOWN_TIMEOUT)
        self._process = None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.stop_and_check()
        finally:
            # Always gone afterwards, whatever happened in the block or in stop().
            self._kill()
            self._close_log()


@contextlib.contextmanager
def running_server(
    folder: Path,
    *,
    database: str | None = None,
    storage: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[ServerProcess]:
    """Yield a healthy server whose home and log live in ``folder``; on exit stop it with
    SIGTERM and assert exit status 0.
    """
    server = ServerProcess(
        home=folder / "home",
        log_path=folder / "server.log",
        database=database,
        storage=storage,
        extra_args=extra_args,
    )
    with server:
        yield server
