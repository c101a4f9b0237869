"""Server settings: one dataclass, filled from flags > ``TASKCACHE_*`` variables > a config
file > defaults.

It must not open databases or sockets: it only reads and validates values.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from taskcache.errors import InvalidArgumentError
from taskcache.home import BLOBS_FOLDER_NAME, default_home
from taskcache.resolver import DATABASE_FORMS, LocationKind, resolve_database
from taskcache.server.breaker import DEFAULT_BREAKER_COOLDOWN, DEFAULT_MAX_IN_FLIGHT

ENVIRONMENT_PREFIX: Final = "TASKCACHE_"
CONFIG_ENVIRONMENT_VARIABLE: Final = "TASKCACHE_CONFIG"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("console", "json")
DEFAULT_MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
DEFAULT_GC_INTERVAL: Final = 600.0
_MAX_PORT: Final = 65535


def _default_database() -> str:
    return str(default_home())


@dataclass(frozen=True)
class Settings:
    """Everything ``taskcache serve`` needs; build it with :func:`load_settings`.

    ``database``: what :func:`taskcache.resolver.resolve_database` accepts (a folder holding
    ``catalog.db``, a ``*.db`` path, ``sqlite:///path.db``, ``memory://`` or
    ``postgresql://…``); :func:`load_settings` refuses anything else. ``storage``: the blob
    root under which ``delete_blob`` may delete replaced outputs; None means the server never
    deletes blobs. Durations are seconds. ``tls_cert_file`` and ``tls_key_file`` come
    together (both listeners then refuse plaintext); ``tls_client_ca_file`` needs them and
    makes client certificates signed by that CA mandatory. ``auth_token_file`` (see
    :mod:`taskcache.server.auth`) makes every RPC need a bearer token, and so does
    ``auth_jwks_file`` (JWTs, see :mod:`taskcache.server.jwt_auth`; it needs
    ``auth_jwt_issuer`` and ``auth_jwt_audience``; either kind of token is then accepted);
    ``metrics_auth`` makes ``/metrics`` need one too and requires one of them.
    ``storage_options`` go to the storage's fsspec filesystem. ``default_ttl`` (seconds) is
    the expiry of puts that name none; ``max_bytes`` caps the catalog's stored bytes (least
    recently used evicted first); ``gc_interval`` (seconds) is how often the background
    cleanup runs: by default every :data:`DEFAULT_GC_INTERVAL` seconds when a TTL or a size
    cap is set, else never.
    ``workers`` above 1 serves from that many processes sharing both ports
    (:mod:`taskcache.server.workers`); it refuses ``memory://`` databases and storage, which
    a process cannot share.
    """

    host: str = "127.0.0.1"
    port: int = 8094
    grpc_port: int = 8095
    database: str = field(default_factory=_default_database)
    storage: str | None = None
    max_reservation_heartbeat: float = 10.0
    heartbeat_grace_multiplier: float = 3.0
    pool_size: int = 8
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    log_level: str = "INFO"
    log_format: str = "console"
    otlp_endpoint: str | None = None
    shutdown_grace: float = 10.0
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    auth_token_file: str | None = None
    metrics_auth: bool = False
    auth_jwks_file: str | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_scopes_claim: str | None = None

    storage_options: dict[str, Any] = field(default_factory=dict)
    default_ttl: float | None = None
    max_bytes: int | None = None
    gc_interval: float | None = None
    workers: int = 1

    @property
    def authenticates(self) -> bool:
        """Whether every RPC needs a bearer token (a token file or a JWKS file is set)."""
        return self.auth_token_file is not None or self.auth_jwks_file is not None

    @property
    def cleanup_interval(self) -> float | None:
        """Seconds between background cleanup runs, or None when it never runs."""
        if self.gc_interval is not None:
            return self.gc_interval
        if self.default_ttl is not None or self.max_bytes is not None:
            return DEFAULT_GC_INTERVAL
        return None

    @property
    def tls(self) -> bool:
        """Whether both listeners serve TLS only (a certificate and key are configured)."""
        return self.tls_cert_file is not None


# One help line per option, shared by ``taskcache serve --help`` and error messages.
OPTION_HELP: Final[Mapping[str, str]] = {
    "host": "Address both listeners bind to.",
    "port": "Port of the Connect (HTTP/1.1) listener, which also serves /healthz and /metrics.",
    "grpc_port": "Port of the gRPC listener.",
    "database": f"Catalog database: {DATABASE_FORMS}.",
    "storage": "Blob root (folder or fsspec URL). Put requests with delete_blob delete a replaced "
    "entry's output only if it lies under this root. Default: <home>/blobs when --database is "
    "not given, otherwise none (never delete). An empty value disables it.",
    "max_reservation_heartbeat": "Longest reservation heartbeat granted, in seconds "
    "(suffixes ms, s, m, h accepted).",
    "heartbeat_grace_multiplier": "A reservation expires this many heartbeats after its last "
    "extension.",
    "pool_size": "Database connections (PostgreSQL, used asynchronously) and threads running "
    "SQLite calls and blob deletions.",
    "max_message_bytes": "Largest request or response message, in bytes, on both transports.",
    "log_level": "One of DEBUG, INFO, WARNING, ERROR, CRITICAL.",
    "log_format": "console (human-readable) or json (one object per line).",
    "shutdown_grace": "On SIGTERM/SIGINT, how long in-flight calls may finish before the "
    "server stops, in seconds (suffixes ms, s, m, h accepted).",
    "max_in_flight": "Most RPCs served at once (both transports together); more are answered "
    "RESOURCE_EXHAUSTED at once instead of queueing.",
    "breaker_cooldown": "Once the database is known down (a call found it unavailable or a "
    "health ping failed), calls are answered UNAVAILABLE at once; after this many seconds one "
    "call at a time probes it again (suffixes ms, s, m, h accepted).",
    "otlp_endpoint": "OTLP/gRPC collector to export one trace span per request to (e.g. "
    "http://otel-collector:4317). Unset: tracing is off.",
    "tls_cert_file": "PEM certificate (chain) both listeners serve TLS with; plaintext is then "
    "refused. Needs --tls-key-file. Certificates are read at startup: restart to renew them.",
    "tls_key_file": "PEM private key of --tls-cert-file.",
    "tls_client_ca_file": "PEM CA bundle: with it, both listeners require client certificates "
    "signed by it (mutual TLS). Needs --tls-cert-file.",
    "auth_token_file": "File of bearer tokens, one per line, each optionally followed by scope "
    "patterns org/project/domain with * globs (tok-a acme/ml/*); a bare token may use every "
    "scope and the unscoped APIs. Every RPC then needs a token; /healthz and gRPC health "
    "stay open. SIGHUP re-reads the file.",
    "metrics_auth": "Require a bearer token (from --auth-token-file or a JWT) on /metrics too "
    "(true/false).",
    "auth_jwks_file": "JWKS file (JSON) of the public keys JWT bearer tokens are verified "
    "against: RS256 or ES256, picked by the token's kid; exp and nbf are honoured. Needs "
    "--auth-jwt-issuer and --auth-jwt-audience. Every RPC then needs a token (one of the "
    "token file, if also given, or a JWT). SIGHUP re-reads the file.",
    "auth_jwt_issuer": "The iss a JWT must carry.",
    "auth_jwt_audience": "The aud a JWT must carry.",
    "auth_jwt_scopes_claim": "The JWT claim listing its scopes (a space-separated string or a "
    "list of org/project/domain globs; * alone: every scope). Default: scope, else scopes.",
    "storage_options": "JSON object of fsspec options for --storage, e.g. "
    '\'{"endpoint_url": "http://127.0.0.1:9000"}\' for an S3-compatible server or '
    "'{\"anon\": true}'. Credentials otherwise come from the backend's usual environment "
    "and config files (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*).",
    "default_ttl": "Expiry of entries whose put names no TTL: an expired entry is a miss and "
    "the background cleanup deletes it (suffixes ms, s, m, h, d accepted).",
    "max_bytes": "Cap on the catalog's stored bytes (inline outputs plus recorded blob "
    "sizes); the background cleanup evicts least-recently-used entries above it (suffixes "
    "KB, MB, GB, TB, KiB, MiB, GiB, TiB accepted).",
    "gc_interval": "Seconds between background cleanup runs (expired entries, then the size "
    "cap; blobs only under --storage); one replica cleans at a time. Unset: every 600 s when "
    "--default-ttl or --max-bytes is set, else never.",
    "workers": "Server processes sharing both ports (one supervisor forwards SIGTERM/SIGINT and "
    "SIGHUP to them; if one dies the others are stopped and serve exits non-zero). Each has "
    "its own --pool-size and --max-in-flight. Not with memory:// database or storage.",
}


def environment_variable(name: str) -> str:
    """Return the environment variable that sets option ``name`` (e.g. TASKCACHE_GRPC_PORT)."""
    return ENVIRONMENT_PREFIX + name.upper()


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidArgumentError("must be a number of seconds", field=name)
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise InvalidArgumentError(
                f"{value!r} is not a duration (e.g. 10, 2.5s, 500ms)", field=name
            )
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds > 0:
        raise InvalidArgumentError("must be positive", field=name)
    return seconds


def _optional_seconds(value: Any, name: str) -> float | None:
    if isinstance(value, str) and not value.strip():
        return None
    seconds = _seconds(value, name)
    if seconds == float("inf"):
        raise InvalidArgumentError("must be finite", field=name)
    return seconds


def _optional_size(value: Any, name: str) -> int | None:
    if isinstance(value, bool):
        raise InvalidArgumentError("must be a number of bytes", field=name)
    if isinstance(value, int):
        size = value
    else:
        text = _text(value, name).strip()
        if not text:
            return None
        # Imported here: settings stay free of the operator module until a size is given.
        from taskcache.operations import parse_size  # noqa: PLC0415

        try:
            size = parse_size(text)
        except InvalidArgumentError as error:
            raise InvalidArgumentError(error.message, field=name) from error
    if size < 1:
        raise InvalidArgumentError("must be at least 1 byte", field=name)
    return size


def _storage_options(value: Any, name: str) -> dict[str, Any]:
    """Return a JSON object (text, or a table from a config file) as a dict."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError as error:
            raise InvalidArgumentError(f"is not valid JSON: {error}", field=name) from error
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidArgumentError("must be a JSON object", field=name)
    return dict(value)


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError("must be an integer", field=name)
    try:
        return int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError as error:
        raise InvalidArgumentError(f"{value!r} is not an integer", field=name) from error


def _port(value: Any, name: str) -> int:
    port = _integer(value, name)
    if not 0 <= port <= _MAX_PORT:
        raise InvalidArgumentError(f"must be between 0 and {_MAX_PORT}", field=name)
    return port


def _positive_int(value: Any, name: str) -> int:
    number = _integer(value, name)
    if number < 1:
        raise InvalidArgumentError("must be at least 1", field=name)
    return number


def _positive_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise InvalidArgumentError("must be a number", field=name)
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"{value!r} is not a number", field=name) from error
    if not (number > 0 and number != float("inf")):
        raise InvalidArgumentError("must be a positive finite number", field=name)
    return number


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError("must be a string", field=name)
    return value


def _non_empty_text(value: Any, name: str) -> str:
    text = _text(value, name).strip()
    if not text:
        raise InvalidArgumentError("must not be empty", field=name)
    return text


def _database(value: Any, name: str) -> str:
    """Return the database text, refused here (as the resolver refuses it) if unusable."""
    text = _text(value, name).strip()
    resolve_database(text, field=name)
    return text


def _optional_text(value: Any, name: str) -> str | None:
    text = _text(value, name).strip()
    return text or None


def _optional_path(value: Any, name: str) -> str | None:
    text = _optional_text(value, name)
    return None if text is None else str(Path(text).expanduser())


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def _boolean(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value, name).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise InvalidArgumentError(f"{value!r} is not true or false", field=name)


def _check_security(settings: Settings) -> None:
    """Refuse TLS and token options that only make sense together, given apart."""
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise InvalidArgumentError(
            "tls_cert_file and tls_key_file must be given together", field="tls_key_file"
        )
    if settings.tls_client_ca_file is not None and not settings.tls:
        raise InvalidArgumentError(
            "needs tls_cert_file and tls_key_file", field="tls_client_ca_file"
        )
    if settings.metrics_auth and not settings.authenticates:
        raise InvalidArgumentError("needs auth_token_file or auth_jwks_file", field="metrics_auth")
    jwt_options = ("auth_jwt_issuer", "auth_jwt_audience", "auth_jwt_scopes_claim")
    if settings.auth_jwks_file is None:
        for name in jwt_options:
            if getattr(settings, name) is not None:
                raise InvalidArgumentError("needs auth_jwks_file", field=name)
        return
    for name in jwt_options[:2]:
        if getattr(settings, name) is None:
            raise InvalidArgumentError("needed with auth_jwks_file", field=name)


def _check_workers(settings: Settings) -> None:
    """Refuse several workers on what only one process can see: each would get its own."""
    if settings.workers == 1:
        return
    if resolve_database(settings.database).kind is LocationKind.MEMORY:
        raise InvalidArgumentError(
            "a memory:// database cannot be shared by several workers (each would get its "
            "own empty catalog); use a SQLite file or PostgreSQL",
            field="workers",
        )
    if settings.storage is not None and settings.storage.lower().startswith("memory://"):
        raise InvalidArgumentError(
            "memory:// storage cannot be shared by several workers; use a folder or an "
            "object store",
            field="workers",
        )


def _log_level(value: Any, name: str) -> str:
    level = _text(value, name).strip().upper()
    if level not in LOG_LEVELS:
        raise InvalidArgumentError(f"must be one of {', '.join(LOG_LEVELS)}", field=name)
    return level


def _log_format(value: Any, name: str) -> str:
    form = _text(value, name).strip().lower()
    if form not in LOG_FORMATS:
        raise InvalidArgumentError(f"must be one of {', '.join(LOG_FORMATS)}", field=name)
    return form


_PARSERS: Final[Mapping[str, Callable[[Any, str], Any]]] = {
    "host": _non_empty_text,
    "port": _port,
    "grpc_port": _port,
    "database": _database,
    "storage": _optional_text,
    "max_reservation_heartbeat": _seconds,
    "heartbeat_grace_multiplier": _positive_float,
    "pool_size": _positive_int,
    "max_message_bytes": _positive_int,
    "log_level": _log_level,
    "log_format": _log_format,
    "otlp_endpoint": _optional_text,
    "shutdown_grace": _seconds,
    "max_in_flight": _positive_int,
    "breaker_cooldown": _seconds,
    "tls_cert_file": _optional_path,
    "tls_key_file": _optional_path,
    "tls_client_ca_file": _optional_path,
    "auth_token_file": _optional_path,
    "metrics_auth": _boolean,
    "auth_jwks_file": _optional_path,
    "auth_jwt_issuer": _optional_text,
    "auth_jwt_audience": _optional_text,
    "auth_jwt_scopes_claim": _optional_text,
    "storage_options": _storage_options,
    "default_ttl": _optional_seconds,
    "max_bytes": _optional_size,
    "gc_interval": _optional_seconds,
    "workers": _positive_int,
}
OPTION_NAMES: Final = tuple(item.name for item in fields(Settings))
assert set(OPTION_NAMES) == set(_PARSERS) == set(OPTION_HELP)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the options in a TOML (or, if PyYAML is installed, YAML) config file.

    Keys are option names with ``_`` or ``-``. Raises InvalidArgumentError (field ``config``)
    for an unreadable or malformed file, an unknown key, or YAML without PyYAML.
    """
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise InvalidArgumentError(f"cannot read {file}: {error}", field="config") from error
    if file.suffix.lower() in (".yaml", ".yml"):
        data = _parse_yaml(raw, file)
    else:
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise InvalidArgumentError(
                f"{file} is not valid TOML: {error}", field="config"
            ) from error
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{file} must hold a table of options", field="config")
    options: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _PARSERS:
            raise InvalidArgumentError(
                f"{file}: unknown option {key!r}; known: {', '.join(OPTION_NAMES)}",
                field="config",
            )
        options[name] = value
    return options


def _parse_yaml(raw: bytes, file: Path) -> Any:
    # YAML stays optional: PyYAML is not a dependency of taskcache.
    if importlib.util.find_spec("yaml") is None:
        raise InvalidArgumentError(
            f"{file}: YAML config files need PyYAML (pip install pyyaml); or use TOML",
            field="config",
        )
    yaml = importlib.import_module("yaml")
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise InvalidArgumentError(f"{file} is not valid YAML: {error}", field="config") from error


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Return the settings from ``flags`` (None values ignored), ``TASKCACHE_*`` variables in
    ``environ`` (default ``os.environ``), ``config_file`` (default ``$TASKCACHE_CONFIG``) and
    defaults, earlier sources winning.

    ``database`` defaults to ``$TASKCACHE_HOME`` (read from ``environ``) or the platform data
    dir; ``storage`` defaults to ``<home>/blobs`` only while ``database`` is that default.
    Raises InvalidArgumentError naming the offending option (also for TLS or token options
    missing their counterpart).
    """
    env = os.environ if environ is None else environ
    given_flags = {name: value for name, value in (flags or {}).items() if value is not None}
    unknown = set(given_flags) - set(_PARSERS)
    if unknown:
        raise InvalidArgumentError(f"unknown options: {', '.join(sorted(unknown))}")
    config_path = config_file if config_file is not None else env.get(CONFIG_ENVIRONMENT_VARIABLE)
    merged: dict[str, Any] = read_config_file(config_path) if config_path else {}
    for name in OPTION_NAMES:
        variable = environment_variable(name)
        if variable in env:
            merged[name] = env[variable]
    merged.update(given_flags)
    values = {name: _PARSERS[name](value, name) for name, value in merged.items()}
    if "database" not in values:
        values["database"] = str(default_home(env))
    settings = replace(Settings(), **values)
    if "database" not in merged and "storage" not in merged:
        # The embedded default catalog keeps its blobs beside the database; only then is a
        # blob root implied. Any other database must name its root explicitly.
        settings = replace(settings, storage=str(Path(settings.database) / BLOBS_FOLDER_NAME))
    _check_security(settings)
    _check_workers(settings)
    return settings
