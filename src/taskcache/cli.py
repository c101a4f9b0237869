"""The ``taskcache`` command line."""

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
from taskcache._version import __version__
from taskcache.demo import run_demo
from taskcache.errors import CacheError, InvalidArgumentError
from taskcache.model import Key
from taskcache.server.settings import (
    CONFIG_ENVIRONMENT_VARIABLE,
    OPTION_HELP,
    Settings,
    environment_variable,
    load_settings,
)


@click.group()
@click.version_option(__version__, prog_name="taskcache")
def main() -> None:
    """taskcache: a memoization catalog for workflow tasks, with Flyte-identical keys."""


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


@main.command("key")
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


@main.command("demo")
@click.option(
    "--catalog",
    default=None,
    help="Catalog target (folder, sqlite:///path.db, memory://). Default: the embedded catalog.",
)
def demo_command(catalog: str | None) -> None:
    """Exercise the embedded catalog: miss, reserve, put, hit, and a second worker waiting."""
    try:
        run_demo(catalog, echo=click.echo)
    except CacheError as error:
        raise click.ClickException(str(error)) from error


_SERVE_DEFAULTS = Settings(database="<home>")


def _serve_help(name: str) -> str:
    """Return the help of a serve option: its description, env variable and default."""
    default = getattr(_SERVE_DEFAULTS, name)
    shown = {"database": "$TASKCACHE_HOME or the platform data dir", "storage": "see above"}.get(
        name, default
    )
    return f"{OPTION_HELP[name]} [env: {environment_variable(name)}; default: {shown}]"


@main.command("serve")
@click.option("--host", default=None, help=_serve_help("host"))
@click.option("--port", type=int, default=None, help=_serve_help("port"))
@click.option("--grpc-port", type=int, default=None, help=_serve_help("grpc_port"))
@click.option("--database", default=None, help=_serve_help("database"))
@click.option("--storage", default=None, help=_serve_help("storage"))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of options (YAML if PyYAML is installed), keys named like the flags "
    "(port, grpc_port, ...). Flags beat TASKCACHE_* environment variables, which beat the "
    f"file, which beats defaults. [env: {CONFIG_ENVIRONMENT_VARIABLE}]",
)
@click.option(
    "--max-reservation-heartbeat", default=None, help=_serve_help("max_reservation_heartbeat")
)
@click.option(
    "--heartbeat-grace-multiplier",
    type=float,
    default=None,
    help=_serve_help("heartbeat_grace_multiplier"),
)
@click.option("--pool-size", type=int, default=None, help=_serve_help("pool_size"))
@click.option("--max-message-bytes", type=int, default=None, help=_serve_help("max_message_bytes"))
@click.option("--log-level", default=None, help=_serve_help("log_level"))
@click.option("--log-format", default=None, help=_serve_help("log_format"))
def serve_command(
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    database: str | None,
    storage: str | None,
    config_file: str | None,
    max_reservation_heartbeat: str | None,
    heartbeat_grace_multiplier: float | None,
    pool_size: int | None,
    max_message_bytes: int | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Run the cache service for Flyte's clients: Connect (HTTP/1.1) and gRPC.

    Serves flyteidl2.cacheservice.v2 (scoped by org/project/domain), flyteidl2.cacheservice
    and Flyte 1's flyteidl.cacheservice (both unscoped), gRPC health and reflection, plus
    GET /healthz and GET /metrics on the Connect port. With no options it serves the embedded
    default catalog. SIGTERM or SIGINT drain in-flight calls and exit 0.
    """
    flags = {
        "host": host,
        "port": port,
        "grpc_port": grpc_port,
        "database": database,
        "storage": storage,
        "max_reservation_heartbeat": max_reservation_heartbeat,
        "heartbeat_grace_multiplier": heartbeat_grace_multiplier,
        "pool_size": pool_size,
        "max_message_bytes": max_message_bytes,
        "log_level": log_level,
        "log_format": log_format,
    }
    try:
        settings = load_settings(flags, config_file=config_file)
    except CacheError as error:
        raise click.UsageError(str(error)) from error
    # Imported here: the server stack (grpc, uvicorn, ...) is only needed by this command.
    from taskcache.server import run_server  # noqa: PLC0415

    try:
        run_server(settings)
    except CacheError as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    main()
