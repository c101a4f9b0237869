"""A local S3 API server for the tests: moto's server mode on loopback (as s3fs's own test
suite runs it), started once per session by the ``s3`` fixture of ``conftest.py``, with the
``AWS_*`` credentials a user would export. Without moto or s3fs it skips loudly (fails under
``CI=true``).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ci_policy import skip_or_fail

AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "taskcache-test",
    "AWS_SECRET_ACCESS_KEY": "taskcache-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3:
    """The session's local S3 server: its endpoint, the fsspec options reaching it and a
    filesystem on it for the tests' own checks (listings are not cached by it).
    """

    endpoint: str
    fs: Any

    @property
    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint}

    def filesystem(self) -> Any:
        self.fs.invalidate_cache()
        return self.fs

    def new_bucket(self) -> str:
        name = f"taskcache-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name

    def objects(self, bucket: str) -> list[str]:
        fs = self.filesystem()
        return sorted(path for path in fs.find(bucket) if not path.endswith("/"))


@contextmanager
def local_s3() -> Iterator[S3]:
    """Start moto's S3 server on loopback with :data:`AWS_ENVIRONMENT` exported; yield it,
    then stop it and restore the environment. Skips (fails under CI) if it cannot start.
    """
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError as error:
        skip_or_fail(f"the S3 suite needs moto[server] and s3fs (pip install -e '.[dev]'): {error}")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    previous = {name: os.environ.get(name) for name in AWS_ENVIRONMENT}
    os.environ.update(AWS_ENVIRONMENT)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        server.start()
    except Exception as error:  # moto reports bind and start failures in several ways
        skip_or_fail(f"the local S3 server (moto) did not start: {error!r}")
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        yield S3(endpoint, s3fs.S3FileSystem(endpoint_url=endpoint, use_listings_cache=False))
    finally:
        server.stop()
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
