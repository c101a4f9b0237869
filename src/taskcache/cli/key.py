"""``taskcache key``: print a task's cache key and Flyte 1 datacatalog identity.

It computes keys with :mod:`taskcache.hashing` only and opens no catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import click
from flyteidl.core import identifier_pb2 as identifier_pb2_v1
from flyteidl.core import interface_pb2 as interface_pb2_v1
from flyteidl.core import literals_pb2 as literals_pb2_v1
from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from taskcache import hashing
from taskcache.errors import CacheError, InvalidArgumentError
from taskcache.model import Key


@dataclass(frozen=True)
class _Types:
    identifier: type[Message]
    interface: type[Message]
    literal_map: type[Message]


_FLYTE2 = _Types(identifier_pb2.Identifier, interface_pb2.TypedInterface, literals_pb2.LiteralMap)
_FLYTE1 = _Types(
    identifier_pb2_v1.Identifier, interface_pb2_v1.TypedInterface, literals_pb2_v1.LiteralMap
)


def _parse(message_type: type[Message], value: Any, field: str) -> Message:
    try:
        return json_format.ParseDict(value, message_type())
    except json_format.ParseError as error:
        raise InvalidArgumentError(str(error), field=field) from error


def _read_task_spec(task_file: Any) -> dict[str, Any]:
    if task_file is None:
        return {}
    try:
        spec = json.load(task_file)
    except json.JSONDecodeError as error:
        raise click.ClickException(f"--task: not valid JSON: {error}") from error
    if not isinstance(spec, dict):
        raise click.ClickException("--task: expected a JSON object")
    return spec


@click.command("key")
@click.option(
    "--task",
    "task_file",
    type=click.File("r"),
    help="JSON file ('-' for stdin) with identifier, interface, inputs, cache_version and "
    "cache_ignore_input_vars, each in protobuf JSON form.",
)
@click.option(
    "--resource-type",
    type=click.Choice(list(identifier_pb2.ResourceType.keys())),
    default=None,
    help="Task identifier resource type (default TASK unless --task gives one).",
)
@click.option("--project", default=None, help="Task identifier project.")
@click.option("--domain", default=None, help="Task identifier domain.")
@click.option("--name", default=None, help="Task identifier name.")
@click.option("--org", default=None, help="Task identifier org.")
@click.option("--task-version", default=None, help="Task identifier version (not hashed).")
@click.option("--cache-version", default=None, help="The task's cache version.")
@click.option("--interface", "interface_json", default=None, help="TypedInterface as JSON.")
@click.option("--inputs", "inputs_json", default=None, help="Input LiteralMap as JSON.")
@click.option("--ignore", multiple=True, help="Input name left out of the hash (repeatable).")
@click.option(
    "--flyte1", is_flag=True, help="Read the messages as Flyte 1 (flyteidl) types, not Flyte 2."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def key_command(
    task_file: Any,
    resource_type: str | None,
    project: str | None,
    domain: str | None,
    name: str | None,
    org: str | None,
    task_version: str | None,
    cache_version: str | None,
    interface_json: str | None,
    inputs_json: str | None,
    ignore: tuple[str, ...],
    flyte1: bool,
    as_json: bool,
) -> None:
    """Print a task's Flyte 2 cache key and Flyte 1 datacatalog identity.

    Flags override the values read from --task. Example:

        taskcache key --project p --domain d --name my.task --cache-version 1.0
        --interface '{"inputs": {"variables": [{"key": "x", "value":
        {"type": {"simple": "INTEGER"}}}]}}'
        --inputs '{"literals": {"x": {"scalar": {"primitive": {"integer": "3"}}}}}'
    """
    spec = _read_task_spec(task_file)
    identifier_spec = dict(spec.get("identifier", {}))
    if resource_type is not None:
        identifier_spec["resourceType"] = resource_type
    elif task_file is None:
        identifier_spec.setdefault("resourceType", "TASK")
    for field, value in (
        ("project", project),
        ("domain", domain),
        ("name", name),
        ("org", org),
        ("version", task_version),
    ):
        if value is not None:
            identifier_spec[field] = value
    types = _FLYTE1 if flyte1 else _FLYTE2
    try:
        identifier = _parse(types.identifier, identifier_spec, "identifier")
        interface_spec = json.loads(interface_json) if interface_json else spec.get("interface", {})
        interface = _parse(types.interface, interface_spec, "interface")
        inputs_spec = json.loads(inputs_json) if inputs_json else spec.get("inputs")
        inputs = _parse(types.literal_map, inputs_spec, "inputs") if inputs_spec else None
        version = cache_version if cache_version is not None else spec.get("cache_version", "")
        ignored = tuple(ignore) or tuple(spec.get("cache_ignore_input_vars", ()))
        key = Key(identifier, version, interface, inputs=inputs, cache_ignore_input_vars=ignored)
        result = {
            "cache_key": hashing.cache_key(key),
            "identifier_hash": hashing.hash_identifier_except_version(identifier),
            "interface_signature": hashing.interface_signature_hash(interface),
            "inputs_hash": hashing.hash_literal_map(inputs, ignored),
            "datacatalog_dataset_version": (
                hashing.datacatalog_dataset_version(interface, version)
                if version.strip(" ")
                else None
            ),
            "datacatalog_artifact_tag": hashing.datacatalog_artifact_tag(inputs, ignored),
        }
    except (CacheError, json.JSONDecodeError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    width = max(len(name) for name in result)
    for field_name, value in result.items():
        click.echo(f"{field_name:<{width}}  {value if value is not None else '-'}")
