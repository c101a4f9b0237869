"""``taskcache serve``: the cache service Flyte's own clients talk to.

An RPC crosses three layers: a transport adapter (``grpc_server`` or ``connect_app``, with
``calls`` observing it), the service core (``service.CacheService``) and the manager
(:class:`~taskcache.manager.AsyncCacheManager`). Modules, one concept each:

* ``settings``: the :class:`Settings` dataclass and its sources (flags, env, config file).
* ``scope``: the scope of a request (protovalidate on v2 identifiers).
* ``auth``: bearer tokens and the scopes each may use (checked by the service core).
* ``service``: the service core, one class for the three APIs, each read through a dialect.
* ``calls``: per-RPC metrics, tracing and error sanitising shared by both transports.
* ``grpc_server`` / ``connect_app``: the gRPC and Connect (ASGI) transports.
* ``health``, ``metrics``, ``logs``, ``tracing``: operations.
* ``runner``: both listeners in one asyncio loop, graceful shutdown.
* ``workers``: ``--workers N``, a supervisor of worker processes sharing the ports.
* ``launch``: :func:`run_server`, which runs one of the two.

Which database is opened is :mod:`taskcache.resolver`'s decision; the RPC table is
:mod:`taskcache.rpcs`.

This package imports grpc, uvicorn and prometheus_client (the ``server`` extra) only when
:func:`run_server` is first used.

The server must not decide cache policy (the manager does) nor parse database strings (the
resolver does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskcache.server.settings import Settings, load_settings

if TYPE_CHECKING:
    from taskcache.server.launch import run_server

__all__ = ["Settings", "load_settings", "run_server"]


def __getattr__(name: str) -> Any:
    # Lazy, so reading settings (and `taskcache serve --help`) needs no server extras.
    if name == "run_server":
        from taskcache.server.launch import run_server  # noqa: PLC0415

        return run_server
    raise AttributeError(name)
