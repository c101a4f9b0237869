"""The README's quick start must run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

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
