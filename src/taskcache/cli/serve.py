"""``taskcache serve``: run the cache service (Connect and gRPC listeners).

It turns flags into :class:`~taskcache.server.Settings` and starts the runner; it builds no
server parts itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import click

from taskcache.cli.failure import CommandError, from_cache_error
from taskcache.errors import CacheError
from taskcache.server.settings import (
    CONFIG_ENVIRONMENT_VARIABLE,
    OPTION_HELP,
    Settings,
    environment_variable,
    load_settings,
)

_SERVE_DEFAULTS = Settings(database="<home>")


def _serve_help(name: str) -> str:
    """Return the help of a serve option: its description, env variable and default."""
    default = getattr(_SERVE_DEFAULTS, name)
    shown = {
        "database": "$TASKCACHE_HOME or the platform data dir",
        "storage": "see above",
        "storage_options": "{}",
        "default_ttl": "never",
        "max_bytes": "no cap",
        "gc_interval": "see above",
    }.get(name, default)
    return f"{OPTION_HELP[name]} [env: {environment_variable(name)}; default: {shown}]"


# The settings whose flags click parses (a bad value is a usage error naming the flag); the
# others reach the settings as text, which parse them (durations, sizes, paths, ...).
_FLAG_TYPES: Final[Mapping[str, type]] = {
    "port": int,
    "grpc_port": int,
    "heartbeat_grace_multiplier": float,
    "pool_size": int,
    "max_message_bytes": int,
    "max_in_flight": int,
    "workers": int,
}
# The settings given as a pair of switches, --NAME/--no-NAME.
_SWITCHES: Final = frozenset({"metrics_auth"})

F = TypeVar("F", bound=Callable[..., Any])


def _settings_options(*names: str) -> Callable[[F], F]:
    """Return a decorator adding, in this order, the flag ``--NAME`` of each setting in
    ``names``: its value is passed as keyword ``NAME``, None unless given.
    """

    def decorate(function: F) -> F:
        for name in reversed(names):
            flag = "--" + name.replace("_", "-")
            if name in _SWITCHES:
                flag = f"{flag}/--no-{flag[2:]}"
            option = click.option(
                flag, name, type=_FLAG_TYPES.get(name), default=None, help=_serve_help(name)
            )
            function = option(function)
        return function

    return decorate


@click.command("serve")
@_settings_options("host", "port", "grpc_port", "database", "storage", "storage_options")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of options (YAML if PyYAML is installed), keys named like the flags "
    "(port, grpc_port, ...). Flags beat TASKCACHE_* environment variables, which beat the "
    f"file, which beats defaults. [env: {CONFIG_ENVIRONMENT_VARIABLE}]",
)
@_settings_options(
    "max_reservation_heartbeat",
    "heartbeat_grace_multiplier",
    "pool_size",
    "max_message_bytes",
    "log_level",
    "log_format",
    "otlp_endpoint",
    "shutdown_grace",
    "max_in_flight",
    "breaker_cooldown",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "auth_token_file",
    "metrics_auth",
    "auth_jwks_file",
    "auth_jwt_issuer",
    "auth_jwt_audience",
    "auth_jwt_scopes_claim",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Report a failure to start (bad option, unreachable database, port in use) as one "
    'JSON document on stdout: {"error": {"code": ..., "message": ...}}.',
)
@_settings_options("default_ttl", "max_bytes", "gc_interval", "workers")
def serve_command(config_file: str | None, as_json: bool, **flags: Any) -> None:
    """Run the cache service for Flyte's clients: Connect (HTTP/1.1) and gRPC.

    Serves flyteidl2.cacheservice.v2 (scoped by org/project/domain), flyteidl2.cacheservice
    and Flyte 1's flyteidl.cacheservice (both unscoped), gRPC health and reflection, plus
    GET /healthz and GET /metrics on the Connect port. With no options it serves the embedded
    default catalog. SIGTERM or SIGINT drain in-flight calls (of every worker) and exit 0.
    """
    # as_json is read by the command group, which renders every failure (taskcache.cli).
    del as_json
    try:
        settings = load_settings(flags, config_file=config_file)
    except CacheError as error:
        raise from_cache_error(error) from error
    # Imported here: the server stack (grpc, uvicorn, ...) is only needed by this command.
    from taskcache.server import run_server  # noqa: PLC0415

    try:
        run_server(settings)
    except CacheError as error:
        # Settings were valid: whatever stops the server now is not a usage error (exit 1).
        raise CommandError(str(error), code=error.code) from error
