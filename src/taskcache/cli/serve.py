"""``taskcache serve``: run the cache service (Connect and gRPC listeners).

It turns flags into :class:`~taskcache.server.Settings` and starts the runner; it builds no
server parts itself.
"""

from __future__ import annotations

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


@click.command("serve")
@click.option("--host", default=None, help=_serve_help("host"))
@click.option("--port", type=int, default=None, help=_serve_help("port"))
@click.option("--grpc-port", type=int, default=None, help=_serve_help("grpc_port"))
@click.option("--database", default=None, help=_serve_help("database"))
@click.option("--storage", default=None, help=_serve_help("storage"))
@click.option("--storage-options", default=None, help=_serve_help("storage_options"))
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
@click.option("--otlp-endpoint", default=None, help=_serve_help("otlp_endpoint"))
@click.option("--shutdown-grace", default=None, help=_serve_help("shutdown_grace"))
@click.option("--max-in-flight", type=int, default=None, help=_serve_help("max_in_flight"))
@click.option("--breaker-cooldown", default=None, help=_serve_help("breaker_cooldown"))
@click.option("--tls-cert-file", default=None, help=_serve_help("tls_cert_file"))
@click.option("--tls-key-file", default=None, help=_serve_help("tls_key_file"))
@click.option("--tls-client-ca-file", default=None, help=_serve_help("tls_client_ca_file"))
@click.option("--auth-token-file", default=None, help=_serve_help("auth_token_file"))
@click.option("--metrics-auth/--no-metrics-auth", default=None, help=_serve_help("metrics_auth"))
@click.option("--auth-jwks-file", default=None, help=_serve_help("auth_jwks_file"))
@click.option("--auth-jwt-issuer", default=None, help=_serve_help("auth_jwt_issuer"))
@click.option("--auth-jwt-audience", default=None, help=_serve_help("auth_jwt_audience"))
@click.option("--auth-jwt-scopes-claim", default=None, help=_serve_help("auth_jwt_scopes_claim"))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Report a failure to start (bad option, unreachable database, port in use) as one "
    'JSON document on stdout: {"error": {"code": ..., "message": ...}}.',
)
@click.option("--default-ttl", default=None, help=_serve_help("default_ttl"))
@click.option("--max-bytes", default=None, help=_serve_help("max_bytes"))
@click.option("--gc-interval", default=None, help=_serve_help("gc_interval"))
@click.option("--workers", type=int, default=None, help=_serve_help("workers"))
def serve_command(
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    database: str | None,
    storage: str | None,
    storage_options: str | None,
    config_file: str | None,
    max_reservation_heartbeat: str | None,
    heartbeat_grace_multiplier: float | None,
    pool_size: int | None,
    max_message_bytes: int | None,
    log_level: str | None,
    log_format: str | None,
    otlp_endpoint: str | None,
    shutdown_grace: str | None,
    max_in_flight: int | None,
    breaker_cooldown: str | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    tls_client_ca_file: str | None,
    auth_token_file: str | None,
    metrics_auth: bool | None,
    auth_jwks_file: str | None,
    auth_jwt_issuer: str | None,
    auth_jwt_audience: str | None,
    auth_jwt_scopes_claim: str | None,
    as_json: bool,
    default_ttl: str | None,
    max_bytes: str | None,
    gc_interval: str | None,
    workers: int | None,
) -> None:
    """Run the cache service for Flyte's clients: Connect (HTTP/1.1) and gRPC.

    Serves flyteidl2.cacheservice.v2 (scoped by org/project/domain), flyteidl2.cacheservice
    and Flyte 1's flyteidl.cacheservice (both unscoped), gRPC health and reflection, plus
    GET /healthz and GET /metrics on the Connect port. With no options it serves the embedded
    default catalog. SIGTERM or SIGINT drain in-flight calls (of every worker) and exit 0.
    """
    flags = {
        "host": host,
        "port": port,
        "grpc_port": grpc_port,
        "database": database,
        "storage": storage,
        "storage_options": storage_options,
        "max_reservation_heartbeat": max_reservation_heartbeat,
        "heartbeat_grace_multiplier": heartbeat_grace_multiplier,
        "pool_size": pool_size,
        "max_message_bytes": max_message_bytes,
        "log_level": log_level,
        "log_format": log_format,
        "otlp_endpoint": otlp_endpoint,
        "shutdown_grace": shutdown_grace,
        "max_in_flight": max_in_flight,
        "breaker_cooldown": breaker_cooldown,
        "tls_cert_file": tls_cert_file,
        "tls_key_file": tls_key_file,
        "tls_client_ca_file": tls_client_ca_file,
        "auth_token_file": auth_token_file,
        "metrics_auth": metrics_auth,
        "auth_jwks_file": auth_jwks_file,
        "auth_jwt_issuer": auth_jwt_issuer,
        "auth_jwt_audience": auth_jwt_audience,
        "auth_jwt_scopes_claim": auth_jwt_scopes_claim,
        "default_ttl": default_ttl,
        "max_bytes": max_bytes,
        "gc_interval": gc_interval,
        "workers": workers,
    }
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
