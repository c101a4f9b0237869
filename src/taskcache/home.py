"""The embedded catalog's home: where ``taskcache.open()`` and ``taskcache serve`` keep their
data when no target or database is given.

This module owns the names only (``$TASKCACHE_HOME``, ``catalog.db``, ``blobs``) and the rule
that picks the home folder. It must not open, create or parse anything: turning a target into
a repository is :mod:`taskcache.resolver`'s job, and clients and server both import from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

HOME_ENVIRONMENT_VARIABLE: Final = "TASKCACHE_HOME"
DATABASE_FILE_NAME: Final = "catalog.db"
BLOBS_FOLDER_NAME: Final = "blobs"


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """Return the default catalog's folder (it may not exist yet).

    ``$TASKCACHE_HOME`` from ``environ`` (default ``os.environ``), ``~`` expanded, if set and
    not empty; otherwise the platform's user data directory for taskcache. Never raises.
    """
    env = os.environ if environ is None else environ
    configured = env.get(HOME_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    # Imported here: `import taskcache` need not pay for it when $TASKCACHE_HOME is set.
    import platformdirs  # noqa: PLC0415

    return Path(platformdirs.user_data_dir("taskcache"))
