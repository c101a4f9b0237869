"""The README's quick start must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
