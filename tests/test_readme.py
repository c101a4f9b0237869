"""The README's quick start must run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

_README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", _README.read_text(), flags=re.DOTALL)


def test_quick_start_runs_and_memoizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKCACHE_HOME", str(tmp_path))
    (block,) = _python_blocks()
    first: dict[str, object] = {}
    exec(compile(block, str(_README), "exec"), first)
    assert "outputs" not in first  # first run: a miss, so this worker computed and stored
    second: dict[str, object] = {}
    exec(compile(block, str(_README), "exec"), second)
    outputs = second["outputs"]
    assert outputs.literals["o0"].scalar.primitive.integer == 144  # type: ignore[attr-defined]
    assert (tmp_path / "catalog.db").exists()
