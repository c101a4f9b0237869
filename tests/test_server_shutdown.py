"""The shutdown grace period is a setting: parsed like other durations, used by the server."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_process import ServerProcess
from taskcache.errors import InvalidArgumentError
from taskcache.server.settings import load_settings


def test_shutdown_grace_defaults_to_ten_seconds_and_parses_units() -> None:
    assert load_settings({}, environ={}).shutdown_grace == 10.0
    assert load_settings({"shutdown_grace": "500ms"}, environ={}).shutdown_grace == 0.5
    assert load_settings({}, environ={"TASKCACHE_SHUTDOWN_GRACE": "2m"}).shutdown_grace == 120.0


@pytest.mark.parametrize("value", ["-1", "0", "soon"])
def test_invalid_shutdown_grace_names_the_option(value: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        load_settings({"shutdown_grace": value}, environ={})
    assert raised.value.field == "shutdown_grace"


def test_server_drains_for_the_configured_grace(tmp_path: Path) -> None:
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        extra_args=["--shutdown-grace", "0.5"],
    ).start()
    assert server.stop() == 0
    assert "draining in-flight calls (up to 0.5 s)" in server.log_text()
