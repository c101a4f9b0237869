"""``taskcache serve``: the cache service Flyte's own clients talk to.

Modules, one concept each:

* ``settings``: the :class:`Settings` dataclass and its sources (flags, env, config file).
* ``database``: ``--database`` value to Repository.
* ``scope``: the scope of a request (protovalidate on v2 identifiers).
* ``core``: transport-neutral service core (validation, manager calls, response protos).
* ``apis``: the scoped v2, unscoped flyteidl2 and Flyte 1 APIs over the core.
* ``calls``: per-RPC metrics and error sanitising shared by both transports.
* ``grpc_server`` / ``connect_app``: the gRPC and Connect (ASGI) transports.
* ``health``, ``metrics``, ``logs``: operations.
* ``runner``: both listeners in one asyncio loop, graceful shutdown.

This package imports grpc, uvicorn and prometheus_client (the ``server`` extra) only when
:func:`run_server` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskcache.server.settings import Settings, load_settings

if TYPE_CHECKING:
    from taskcache.server.runner import run_server

__all__ = ["Settings", "load_settings", "run_server"]


def __getattr__(name: str) -> Any:
    # Lazy, so reading settings (and `taskcache serve --help`) needs no server extras.
    if name == "run_server":
        from taskcache.server.runner import run_server  # noqa: PLC0415

        return run_server
    raise AttributeError(name)
