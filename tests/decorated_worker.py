"""A worker process for the decorator's multi-process test (run as a script, not collected).

Calls one decorated function whose every execution appends a line to ``$DECORATED_LOG``;
the catalog comes from ``$TASKCACHE_TARGET`` and the task name from ``$DECORATED_TASK``.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import taskcache


@taskcache.cached(name=os.environ["DECORATED_TASK"], heartbeat=timedelta(seconds=1))
def expensive(n: int) -> list[int]:
    with Path(os.environ["DECORATED_LOG"]).open("a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.3)  # long enough that the other workers find the reservation held
    return list(range(1, n + 1))


if __name__ == "__main__":
    print(expensive(3), flush=True)
