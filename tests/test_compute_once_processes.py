"""Compute once across processes: 8 worker processes, one execution; the owner killed with
SIGKILL mid-computation, exactly one takeover, and every worker gets the value.

Runs on the embedded SQLite catalog (the workers share one file) and through a real
``taskcache serve`` on PostgreSQL (the workers reach it over gRPC).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server_process import running_server

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("compute_worker.py")
WORKERS = 8
HEARTBEAT = 0.3  # seconds; a dead owner's lease lapses after 3 of them (the grace multiplier)


@dataclass(frozen=True)
class Deployment:
    target: str
    storage: Path


@pytest.fixture(params=["embedded-sqlite", "serve-postgres"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded-sqlite":
        yield Deployment(f"sqlite:///{folder}/catalog.db", folder / "blobs")
        return
    database: str = request.getfixturevalue("clean_postgres")
    with running_server(folder, database=database) as server:
        yield Deployment(f"grpc://{server.grpc_target}", folder / "blobs")


def _start(deployment: Deployment, work: Path, task: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            deployment.target,
            str(deployment.storage),
            task,
            str(work),
            str(HEARTBEAT),
            mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out.strip()


def _computations(work: Path) -> list[int]:
    log = work / "computations"
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def test_eight_processes_compute_once(deployment: Deployment, tmp_path: Path) -> None:
    task = f"procs.{uuid.uuid4().hex[:12]}"
    workers = [_start(deployment, tmp_path, task, "normal") for _ in range(WORKERS)]
    results = [_finish(worker) for worker in workers]
    assert len(_computations(tmp_path)) == 1
    assert sorted(results) == ["42 CACHE_HIT"] * (WORKERS - 1) + ["42 CACHE_POPULATED"]


def test_a_killed_owner_is_taken_over_exactly_once(deployment: Deployment, tmp_path: Path) -> None:
    task = f"kill.{uuid.uuid4().hex[:12]}"
    workers = [_start(deployment, tmp_path, task, "hang-first") for _ in range(WORKERS)]
    hung = tmp_path / "hung"
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while not hung.exists():
        assert time.monotonic() < deadline, "no worker started computing"
        assert all(worker.poll() is None for worker in workers)
        time.sleep(0.02)
    owner_pid = int(hung.read_text())
    owner = next(worker for worker in workers if worker.pid == owner_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)

    survivors = [worker for worker in workers if worker is not owner]
    results = [_finish(worker) for worker in survivors]
    computations = _computations(tmp_path)
    assert computations[0] == owner_pid
    assert len(computations) == 2  # the killed owner's, then exactly one takeover's
    assert computations[1] != owner_pid
    assert sorted(results) == ["42 CACHE_HIT"] * (WORKERS - 2) + ["42 CACHE_POPULATED"]
