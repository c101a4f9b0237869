"""The ``taskcache`` command line, through click's CliRunner and once as the real script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from taskcache import __version__
from taskcache.cli import main

# Flyte's golden values (flyteplugins catalog hashing tests; see tests/data/README.md).
IDENTIFIER_HASH = "+UmrGhEwHv3FesdpA4gliBluF3FUXz4tshmuOlw1FSk="
INPUTS_1_2_HASH = "GQid5LjHbakcW68DS3P2jp80QLbiF0olFHF2hTh5bg8"
EMPTY_INPUTS_HASH = "GKw-c0PwFokMUQ6T-TUmEWnZ4_VlQ2Qpgw-vCTT0-OQ"
FLYTE1_DATASET_VERSION = "1.0.0-UxVtPm0k-GKw-c0Pw"

IDENTIFIER_FLAGS = [
    "--project",
    "project_1",
    "--domain",
    "domain_1",
    "--name",
    "name_1",
    "--org",
    "org_1",
]
FLYTE2_INTERFACE = {
    "inputs": {
        "variables": [
            {"key": "1", "value": {"type": {"simple": "INTEGER"}}},
            {"key": "2", "value": {"type": {"simple": "INTEGER"}}},
        ]
    }
}
FLYTE1_INTERFACE = {
    "inputs": {
        "variables": {
            "1": {"type": {"simple": "INTEGER"}},
            "2": {"type": {"simple": "INTEGER"}},
        }
    }
}


def integer_inputs(**values: int) -> dict[str, Any]:
    return {
        "literals": {
            name: {"scalar": {"primitive": {"integer": str(value)}}}
            for name, value in values.items()
        }
    }


INPUTS_1_2 = {
    "literals": {
        "1": {"scalar": {"primitive": {"integer": "1"}}},
        "2": {"scalar": {"primitive": {"integer": "2"}}},
    }
}


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def run_json(*args: str, stdin: str | None = None) -> dict[str, Any]:
    result = run("key", *args, "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.output)
    return parsed


def write_task(tmp_path: Path, spec: dict[str, Any]) -> str:
    path = tmp_path / "task.json"
    path.write_text(json.dumps(spec))
    return str(path)


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"taskcache, version {__version__}"


def test_key_prints_every_field(tmp_path: Path) -> None:
    result = run(
        "key",
        *IDENTIFIER_FLAGS,
        "--cache-version",
        "1.0.0",
        "--interface",
        json.dumps(FLYTE2_INTERFACE),
        "--inputs",
        json.dumps(INPUTS_1_2),
    )
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.strip().splitlines())
    assert set(lines) == {
        "cache_key",
        "identifier_hash",
        "interface_signature",
        "inputs_hash",
        "datacatalog_dataset_version",
        "datacatalog_artifact_tag",
    }
    assert lines["inputs_hash"] == INPUTS_1_2_HASH
    assert lines["datacatalog_artifact_tag"] == f"flyte_cached-{INPUTS_1_2_HASH}"
    assert lines["cache_key"] == (
        f"{lines['identifier_hash']}-{lines['interface_signature']}-{INPUTS_1_2_HASH}-1.0.0"
    )


def test_key_for_an_identifier_without_resource_type(tmp_path: Path) -> None:
    # The identifier of Flyte's golden test: no resource type, so it comes from --task.
    task = write_task(tmp_path, {"identifier": {}})
    output = run_json(
        "--task",
        task,
        *IDENTIFIER_FLAGS,
        "--cache-version",
        "1.0.0",
        "--interface",
        json.dumps(FLYTE2_INTERFACE),
        "--inputs",
        json.dumps(INPUTS_1_2),
    )

    assert output["identifier_hash"] == IDENTIFIER_HASH
    assert output["inputs_hash"] == INPUTS_1_2_HASH
    assert output["cache_key"] == (
        f"{IDENTIFIER_HASH}-{output['interface_signature']}-{INPUTS_1_2_HASH}-1.0.0"
    )


def test_flags_alone_hash_a_task_identifier(tmp_path: Path) -> None:
    flags_only = run_json(*IDENTIFIER_FLAGS, "--cache-version", "1.0.0")
    explicit_task = run_json(
        "--task",
        write_task(tmp_path, {"identifier": {"resourceType": "TASK"}}),
        *IDENTIFIER_FLAGS,
        "--cache-version",
        "1.0.0",
    )
    assert flags_only == explicit_task
    assert flags_only["identifier_hash"] != IDENTIFIER_HASH
    assert flags_only["inputs_hash"] == EMPTY_INPUTS_HASH


def test_task_version_is_not_hashed() -> None:
    v1 = run_json(*IDENTIFIER_FLAGS, "--task-version", "v1", "--cache-version", "1")
    v2 = run_json(*IDENTIFIER_FLAGS, "--task-version", "v2", "--cache-version", "1")
    assert v1 == v2
    other = run_json(*IDENTIFIER_FLAGS, "--task-version", "v1", "--cache-version", "2")
    assert other["cache_key"] != v1["cache_key"]
    assert other["cache_key"].endswith("-2")


def test_ignore_drops_inputs_from_the_hash() -> None:
    common = [*IDENTIFIER_FLAGS, "--interface", json.dumps(FLYTE2_INTERFACE)]
    full = run_json(*common, "--inputs", json.dumps(INPUTS_1_2))
    ignored = run_json(*common, "--inputs", json.dumps(INPUTS_1_2), "--ignore", "2")
    only_one = run_json(*common, "--inputs", json.dumps(integer_inputs(**{"1": 1})))
    assert full["inputs_hash"] == INPUTS_1_2_HASH
    assert ignored["inputs_hash"] == only_one["inputs_hash"] != INPUTS_1_2_HASH


def test_flyte1_dataset_version() -> None:
    output = run_json(
        "--flyte1",
        *IDENTIFIER_FLAGS,
        "--cache-version",
        "1.0.0",
        "--interface",
        json.dumps(FLYTE1_INTERFACE),
    )
    assert output["datacatalog_dataset_version"] == FLYTE1_DATASET_VERSION
    assert output["datacatalog_artifact_tag"] == f"flyte_cached-{EMPTY_INPUTS_HASH}"


def test_flyte1_and_flyte2_inputs_hash_alike() -> None:
    flyte1 = run_json("--flyte1", *IDENTIFIER_FLAGS, "--inputs", json.dumps(INPUTS_1_2))
    assert flyte1["inputs_hash"] == INPUTS_1_2_HASH


def test_no_cache_version_has_no_dataset_version() -> None:
    result = run("key", *IDENTIFIER_FLAGS)
    assert result.exit_code == 0, result.output
    assert "datacatalog_dataset_version  -" in result.output
    assert run_json(*IDENTIFIER_FLAGS)["datacatalog_dataset_version"] is None


def task_spec() -> dict[str, Any]:
    return {
        "identifier": {
            "project": "project_1",
            "domain": "domain_1",
            "name": "name_1",
            "org": "org_1",
        },
        "interface": FLYTE2_INTERFACE,
        "inputs": INPUTS_1_2,
        "cache_version": "1.0.0",
    }


def test_task_file(tmp_path: Path) -> None:
    output = run_json("--task", write_task(tmp_path, task_spec()))
    assert output["identifier_hash"] == IDENTIFIER_HASH
    assert output["inputs_hash"] == INPUTS_1_2_HASH
    assert output["cache_key"].startswith(f"{IDENTIFIER_HASH}-")
    assert output["cache_key"].endswith(f"-{INPUTS_1_2_HASH}-1.0.0")


def test_task_from_stdin_matches_the_file(tmp_path: Path) -> None:
    from_file = run_json("--task", write_task(tmp_path, task_spec()))
    from_stdin = run_json("--task", "-", stdin=json.dumps(task_spec()))
    assert from_stdin == from_file


def test_flags_override_the_task_file(tmp_path: Path) -> None:
    spec = task_spec() | {"cache_ignore_input_vars": ["2"]}
    task = write_task(tmp_path, spec)
    from_file = run_json("--task", task)
    overridden = run_json("--task", task, "--cache-version", "2.0", "--name", "other")

    assert from_file["inputs_hash"] != INPUTS_1_2_HASH  # "2" is ignored
    assert overridden["cache_key"].endswith("-2.0")
    assert overridden["identifier_hash"] != from_file["identifier_hash"]
    assert overridden["inputs_hash"] == from_file["inputs_hash"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--interface", "{not json"),
        ("--inputs", '{"literals": '),
        ("--inputs", '{"literals": 5}'),
        ("--interface", '{"inputs": {"variables": "x"}}'),
    ],
)
def test_bad_json_flags_fail_cleanly(option: str, value: str) -> None:
    result = run("key", *IDENTIFIER_FLAGS, option, value)
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output


def test_bad_json_task_file_fails_cleanly(tmp_path: Path) -> None:
    task = tmp_path / "task.json"
    task.write_text("{not json")
    result = run("key", "--task", str(task))
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.startswith("Error: ")


def test_task_file_that_is_not_an_object_fails_cleanly(tmp_path: Path) -> None:
    result = run("key", "--task", write_task(tmp_path, [1, 2]))  # type: ignore[arg-type]
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.startswith("Error: ")


def test_missing_task_file_is_a_usage_error(tmp_path: Path) -> None:
    result = run("key", "--task", str(tmp_path / "missing.json"))
    assert result.exit_code == 2
    assert "No such file" in result.output


def test_demo_on_a_memory_catalog() -> None:
    result = run("demo", "--catalog", "memory://")
    assert result.exit_code == 0, result.output
    assert "cache hit" in result.output
    assert "reservation acquired" in result.output
    assert "status: CACHE_HIT" in result.output


def test_demo_rejects_an_unknown_scheme() -> None:
    result = run("demo", "--catalog", "mem://")
    assert result.exit_code == 1
    assert result.output.startswith("Error: target: unsupported scheme 'mem'")


def test_demo_on_a_folder(tmp_path: Path) -> None:
    result = run("demo", "--catalog", str(tmp_path / "catalog"))
    assert result.exit_code == 0, result.output
    assert "cache hit" in result.output
    assert (tmp_path / "catalog" / "catalog.db").is_file()


def console_script() -> str:
    sibling = Path(sys.executable).parent / "taskcache"
    if sibling.is_file():
        return str(sibling)
    found = shutil.which("taskcache")
    if found is None:
        pytest.fail("the taskcache console script is not installed")
    return found


def test_console_script_version() -> None:
    completed = subprocess.run(
        [console_script(), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"taskcache, version {__version__}"


def test_resource_type_flag_allows_the_unspecified_identifier() -> None:
    result = run(
        "key",
        "--resource-type",
        "UNSPECIFIED",
        "--project",
        "project_1",
        "--domain",
        "domain_1",
        "--name",
        "name_1",
        "--org",
        "org_1",
        "--cache-version",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["identifier_hash"] == (
        "+UmrGhEwHv3FesdpA4gliBluF3FUXz4tshmuOlw1FSk="
    )
