"""The README's examples must run as written: the quick start, the Flyte-level example, the
Flyte configuration sections and the production set-up (PostgreSQL, S3, expiry and size cap).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner

import taskcache
from builders import int_map, make_key
from local_s3 import AWS_ENVIRONMENT, S3
from postgres import PostgresServer
from server_process import ServerProcess
from taskcache.cli import main
from taskcache.server.settings import Settings

_README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _README.read_text(), flags=re.DOTALL)


def _run(block: str) -> dict[str, object]:
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, str(_README), "exec"), namespace)
    return namespace


def test_quick_start_computes_once_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TASKCACHE_TARGET", raising=False)
    quick_start = _python_blocks()[0]
    _run(quick_start)
    _run(quick_start)  # a second program on the same catalog: only hits
    assert capsys.readouterr().out.count("computing") == 1
    assert (tmp_path / "catalog.db").exists()


def test_flyte_level_example_runs_and_memoizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path))
    block = _python_blocks()[1]
    first: dict[str, object] = {}
    exec(compile(block, str(_README), "exec"), first)
    assert "outputs" not in first  # first run: a miss, so this worker computed and stored
    second: dict[str, object] = {}
    exec(compile(block, str(_README), "exec"), second)
    outputs = second["outputs"]
    assert outputs.literals["o0"].scalar.primitive.integer == 144  # type: ignore[attr-defined]
    assert (tmp_path / "catalog.db").exists()


def _yaml_blocks() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", _README.read_text(), flags=re.DOTALL)
    return [yaml.safe_load(block) for block in blocks]


def test_flyte_configuration_examples_use_flytes_sections() -> None:
    """The pasteable Flyte setups put each setting where Flyte's configuration code reads it:
    Flyte 2's ``executor.cacheServiceURL`` and ``plugins.catalogCache`` (a sub-section of
    ``plugins``), Flyte 1 propeller's top-level ``catalog-cache`` on the gRPC port.
    """
    flyte2 = next(block for block in _yaml_blocks() if "executor" in block)
    assert "catalogCache" not in flyte2  # a plugins sub-section, never top-level
    assert set(flyte2["plugins"]["catalogCache"]) == {"maxCacheAge"}
    url = urlsplit(flyte2["executor"]["cacheServiceURL"])
    assert (url.scheme, url.port) == ("http", Settings().port)

    flyte1 = next(block for block in _yaml_blocks() if "catalog-cache" in block)
    section = flyte1["catalog-cache"]
    assert section["type"] == "datacatalog"
    assert isinstance(section["insecure"], bool)
    assert set(section) <= {"type", "endpoint", "insecure", "max-cache-age", "use-admin-auth"}
    host, _, port = section["endpoint"].rpartition(":")
    assert host and "://" not in host  # propeller dials host:port
    assert int(port) == Settings().grpc_port


def _production_commands() -> list[list[str]]:
    """Return the commands of the README's production block, each as its words (line
    continuations joined, comments dropped).
    """
    text = _README.read_text()
    section = text[text.index("In production, run stateless replicas") :]
    found = re.search(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert found is not None, "the production section has no sh block"
    lines = found.group(1).replace("\\\n", " ").splitlines()
    return [words for words in (shlex.split(line, comments=True) for line in lines) if words]


# Where the test's own servers are: the variables the README tells the operator to set.
_OPERATOR_VARIABLES = {"TASKCACHE_DATABASE", "TASKCACHE_STORAGE_OPTIONS"}
# serve's listener flags, which the test replaces with loopback and free ports.
_LISTENER_FLAGS = {"--host", "--port", "--grpc-port"}


def _without_listener_flags(words: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in _LISTENER_FLAGS:
            skip = True
        else:
            kept.append(word)
    return kept


@pytest.fixture
def fresh_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty (unmigrated) PostgreSQL database, dropped afterwards."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


def test_production_section_runs_as_written(s3: S3, fresh_database: str, tmp_path: Path) -> None:
    """The production block, run as written against the local S3 server and a fresh
    PostgreSQL database: only the variables it exports (database URL, S3 endpoint) and the
    listener addresses (loopback, free ports) are the test's own; the AWS credentials come
    from the environment as the README says. ``migrate`` creates the schema, both replicas
    serve, a put over Connect to one lands in the README's bucket and a second client's get
    through the other is a hit, with the ``--default-ttl`` expiry recorded.
    """
    commands = _production_commands()
    exports = dict(words[1].partition("=")[::2] for words in commands if words[0] == "export")
    assert set(exports) == _OPERATOR_VARIABLES
    assert set(json.loads(exports["TASKCACHE_STORAGE_OPTIONS"])) == set(s3.options)
    operator_env = {
        **AWS_ENVIRONMENT,
        "TASKCACHE_DATABASE": fresh_database,
        "TASKCACHE_STORAGE_OPTIONS": json.dumps(s3.options),
    }
    runs = [words for words in commands if words[0] != "export"]
    assert [words[:2] for words in runs] == [["taskcache", "migrate"]] + [
        ["taskcache", "serve"]
    ] * 2

    env = {name: value for name, value in os.environ.items() if not name.startswith("TASKCACHE_")}
    env.update(operator_env, TASKCACHE_HOME=str(tmp_path / "home"))
    migrated = subprocess.run(
        [sys.executable, "-m", "taskcache", *runs[0][1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "schema version" in migrated.stdout

    serve_args = [_without_listener_flags(words[2:]) for words in runs[1:]]
    storage = serve_args[0][serve_args[0].index("--storage") + 1]
    bucket = urlsplit(storage).netloc
    if not s3.filesystem().exists(bucket):
        s3.filesystem().mkdir(bucket)
    replicas = [
        ServerProcess(
            home=tmp_path / f"home{index}",
            log_path=tmp_path / f"replica{index}.log",
            extra_args=args,
            extra_env=operator_env,
        )
        for index, args in enumerate(serve_args)
    ]
    key = make_key(11, name="readme.production")
    with replicas[0], replicas[1]:
        with taskcache.open(
            replicas[0].http_url, storage=storage, storage_options=s3.options, inline_max_bytes=0
        ) as writer:
            writer.put(key, int_map(y=121))
        written = [path for path in s3.objects(bucket) if path.startswith(f"{bucket}/outputs/")]
        assert written, "the put wrote no blob under the README's --storage"
        with taskcache.open(
            replicas[1].http_url, storage=storage, storage_options=s3.options
        ) as reader:
            entry = reader.get(key)
            assert entry.outputs.read() == int_map(y=121)
            assert entry.outputs.uri in {f"s3://{path}" for path in written}
    listed = CliRunner().invoke(main, ["ls", "--database", fresh_database, "--json"])
    assert listed.exit_code == 0, listed.output
    [item] = json.loads(listed.output)["entries"]
    assert item["expires_at"] is not None  # --default-ttl 30d applied at the put
