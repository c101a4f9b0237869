"""Read socket options of a server process's own sockets (Linux), to check how it set them up.

The server's end of a connection is borrowed with ``pidfd_getfd`` (Linux 5.6+, needs the
right to ptrace the process, which a test has over its own child): the duplicate shares the
socket, so ``getsockopt`` on it reads the server's setting.
"""

from __future__ import annotations

import ctypes
import os
import socket
from pathlib import Path

from ci_policy import skip_or_fail

_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture
_ESTABLISHED = "01"


def _socket_fds(pid: int) -> dict[str, int]:
    """The process's socket inodes, each with one of its file descriptors."""
    found: dict[str, int] = {}
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(entry.readlink())
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found[target.removeprefix("socket:[").removesuffix("]")] = int(entry.name)
    return found


def established_fds(pid: int, local_port: int) -> list[int]:
    """The process's descriptors of established TCP connections accepted on ``local_port``."""
    sockets = _socket_fds(pid)
    fds: list[int] = []
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            port = int(fields[1].rsplit(":", 1)[1], 16)
            if port == local_port and fields[3] == _ESTABLISHED and fields[9] in sockets:
                fds.append(sockets[fields[9]])
    return fds


def tcp_nodelay(pid: int, fd: int) -> bool:
    """Whether the process's socket ``fd`` has TCP_NODELAY set."""
    if not hasattr(os, "pidfd_open"):
        skip_or_fail("NO PIDFD: reading a server's socket options needs Linux (pidfd_open)")
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        borrowed = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
        if borrowed < 0:
            error = ctypes.get_errno()
            skip_or_fail(f"NO PIDFD_GETFD: cannot borrow the server's socket: {os.strerror(error)}")
    finally:
        os.close(pidfd)
    with socket.socket(fileno=borrowed) as duplicate:
        return duplicate.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
