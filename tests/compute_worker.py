"""One worker process of the compute-once tests (run as a script, not collected).

``python compute_worker.py TARGET STORAGE TASK WORK_DIR HEARTBEAT_SECONDS MODE`` calls
``get_or_compute`` on the task's key and prints ``<value> <cache status>``. Every computation
appends this process's pid to ``WORK_DIR/computations``. With MODE ``hang-first`` the first
computation of the run writes ``WORK_DIR/hung`` and never returns (the test kills it).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from flyteidl2.core import literals_pb2

import taskcache
from builders import int_map, make_identifier, make_interface  # beside this script: on sys.path


def main() -> None:
    target, storage, task, work_dir, heartbeat, mode = sys.argv[1:7]
    folder = Path(work_dir)
    key = taskcache.Key(make_identifier(task), "1.0", make_interface("x"), inputs=int_map(x=1))

    def compute() -> literals_pb2.LiteralMap:
        with (folder / "computations").open("a") as log:
            log.write(f"{os.getpid()}\n")
        hung = folder / "hung"
        if mode == "hang-first" and not hung.exists():
            hung.write_text(str(os.getpid()))
            time.sleep(3600)  # the owner "dies" here: the test SIGKILLs it
        time.sleep(0.3)  # long enough that the other workers find the reservation held
        return int_map(o0=42)

    with taskcache.open(target, storage=storage) as client:
        entry = client.get_or_compute(key, compute, heartbeat=timedelta(seconds=float(heartbeat)))
    value = entry.outputs.read().literals["o0"].scalar.primitive.integer
    print(value, entry.status.cache_status.name, flush=True)


if __name__ == "__main__":
    main()
