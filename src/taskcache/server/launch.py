"""How ``taskcache serve`` runs: one serving process, or a supervisor of worker processes.

Above both :mod:`taskcache.server.runner` (one process serving both listeners) and
:mod:`taskcache.server.workers` (the supervisor, whose workers each run the runner), so that
neither needs the other's module to decide which runs.
"""

from __future__ import annotations

import asyncio

from taskcache.server.logs import configure_logging
from taskcache.server.runner import serve
from taskcache.server.settings import Settings
from taskcache.server.workers import supervise

__all__ = ["run_server"]


def run_server(settings: Settings) -> None:
    """Configure logging and serve ``settings`` until SIGTERM/SIGINT; return after a clean
    shutdown. With ``settings.workers`` above 1, supervise that many worker processes (see
    :func:`taskcache.server.workers.supervise`). Raises like
    :func:`taskcache.server.runner.serve`; with workers, UnavailableError when a worker ended
    other than by a clean shutdown.
    """
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        supervise(settings)
        return
    asyncio.run(serve(settings))
