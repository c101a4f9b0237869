"""A remote target whose scheme does not match its port (``http://`` at the gRPC listener,
``grpc://`` at the Connect listener) fails on the first attempt with an InvalidArgumentError
that names the mismatch and the fix, against a real ``taskcache serve``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

import taskcache
from builders import make_key
from server_process import ServerProcess
from taskcache import InvalidArgumentError, NotFoundError, UnavailableError
from taskcache.clients.transports import RetryPolicy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("mismatch")
    with ServerProcess(
        home=folder / "home", log_path=folder / "server.log", database=str(folder / "db")
    ) as running:
        yield running


@pytest.fixture
def retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record every retry the policy grants (waiting 0 s instead)."""
    granted: list[float] = []

    def counting(self: RetryPolicy) -> Iterator[float]:
        for _ in range(self.max_retries):
            granted.append(0.0)
            yield 0.0

    monkeypatch.setattr(RetryPolicy, "delays", counting)
    return granted


def first_get(target: str, mode: str) -> BaseException:
    """Return what ``get`` raises through a fresh ``mode`` client of ``target``."""

    async def scenario() -> None:
        async with taskcache.open_async(target, max_retries=5, timeout=10) as client:
            await client.get(make_key())

    with pytest.raises(taskcache.CacheError) as raised:
        if mode == "async":
            asyncio.run(scenario())
        else:
            with taskcache.open(target, max_retries=5, timeout=10) as client:
                client.get(make_key())
    return raised.value


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_http_at_the_grpc_port_names_the_fix_without_retrying(
    server: ServerProcess, mode: str, retries: list[float]
) -> None:
    error = first_get(f"http://127.0.0.1:{server.grpc_port}", mode)
    assert isinstance(error, InvalidArgumentError)
    assert error.field == "target"
    assert "protocol/port mismatch" in error.message
    assert f"use grpc://127.0.0.1:{server.grpc_port} for gRPC" in error.message
    assert retries == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_grpc_at_the_connect_port_names_the_fix_without_retrying(
    server: ServerProcess, mode: str, retries: list[float]
) -> None:
    error = first_get(f"grpc://127.0.0.1:{server.port}", mode)
    assert isinstance(error, InvalidArgumentError)
    assert "protocol/port mismatch" in error.message
    assert f"use http://127.0.0.1:{server.port} for Connect" in error.message
    assert retries == []


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_closed_port_is_still_an_outage_and_retried(scheme: str, retries: list[float]) -> None:
    # The mismatch check must not swallow plain outages: nothing listens on the port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        pytest.raises(UnavailableError),
        taskcache.open(f"{scheme}://127.0.0.1:{port}", max_retries=2, timeout=5) as client,
    ):
        client.get(make_key())
    assert len(retries) == 2


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_the_matching_scheme_still_works(server: ServerProcess, scheme: str) -> None:
    port = server.port if scheme == "http" else server.grpc_port
    with (
        taskcache.open(f"{scheme}://127.0.0.1:{port}", max_retries=0) as client,
        pytest.raises(NotFoundError),
    ):
        client.get(make_key())
