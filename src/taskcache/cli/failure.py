"""How a ``taskcache`` command fails: one line on stderr, or with ``--json`` one JSON
document on stdout, ``{"error": {"code": ..., "message": ...}}``, and a non-zero exit code.

Commands raise :class:`CommandError` (or click's own usage errors); the group
(:mod:`taskcache.cli`) renders them, so every command reports failures alike. Codes are the
gRPC status names taskcache errors carry (``NOT_FOUND``, ``INVALID_ARGUMENT``,
``UNAVAILABLE``, ...); exit code 2 is a usage error, 1 anything else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, Protocol, TypeVar

import click

from taskcache.errors import CacheError, InvalidArgumentError
from taskcache.resolver import redact

__all__ = [
    "JSON_FLAG",
    "USAGE_EXIT_CODE",
    "CommandError",
    "echo_error_document",
    "error_document",
    "from_cache_error",
    "note_json_request",
    "opened_for_command",
    "wants_json",
]

JSON_FLAG: Final = "--json"
_META_KEY: Final = "taskcache.json"
USAGE_EXIT_CODE: Final = 2


class CommandError(click.ClickException):
    """A failed command: ``code`` (a gRPC status name), the message, extra JSON ``details``
    and the exit code (2 for usage errors, else 1).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "UNKNOWN",
        exit_code: int = 1,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        # click reads the exit code from the instance; its stubs declare a class variable.
        self.exit_code = exit_code  # type: ignore[misc]
        self.details = details or {}


def from_cache_error(
    error: CacheError, *, prefix: str = "", details: dict[str, Any] | None = None
) -> CommandError:
    """Return ``error`` as a command failure: its code and message (after ``prefix``); an
    InvalidArgumentError is a usage error (exit 2).
    """
    usage = isinstance(error, InvalidArgumentError)
    return CommandError(
        f"{prefix}{error}",
        code=error.code,
        exit_code=USAGE_EXIT_CODE if usage else 1,
        details=details,
    )


def note_json_request(ctx: click.Context, args: list[str]) -> None:
    """Remember whether the command line asks for JSON (``--json`` before any ``--``), so
    that even a failure to parse it is reported as JSON.
    """
    options = args[: args.index("--")] if "--" in args else args
    ctx.meta[_META_KEY] = JSON_FLAG in options


def wants_json(ctx: click.Context) -> bool:
    """Return whether the command line asked for JSON output."""
    return bool(ctx.meta.get(_META_KEY, False))


def error_document(error: click.ClickException | click.Abort) -> tuple[dict[str, Any], int]:
    """Return the JSON error document for ``error`` and the exit code to leave with."""
    if isinstance(error, click.Abort):
        return {"error": {"code": "CANCELLED", "message": "aborted"}}, 1
    if isinstance(error, CommandError):
        body: dict[str, Any] = {"code": error.code, "message": error.message, **error.details}
        return {"error": body}, error.exit_code
    code = "INVALID_ARGUMENT" if isinstance(error, click.UsageError) else "UNKNOWN"
    return {"error": {"code": code, "message": error.format_message()}}, error.exit_code


def echo_error_document(error: click.ClickException | click.Abort) -> int:
    """Print ``error`` as a JSON document on stdout; return the exit code to leave with."""
    document, exit_code = error_document(error)
    click.echo(json.dumps(document, indent=2))
    return exit_code


class _Closable(Protocol):
    def close(self) -> None: ...


_Opened = TypeVar("_Opened", bound=_Closable)


@contextmanager
def opened_for_command(opener: Callable[[], _Opened], database: str) -> Iterator[_Opened]:
    """Yield what ``opener`` opens on ``database`` and close it afterwards, taskcache errors
    raised as command failures with their codes: a bad ``--database`` (InvalidArgumentError)
    a usage error, exit 2; failing to open it or anything else, exit 1 with its message.
    """
    try:
        opened = opener()
    except InvalidArgumentError as error:
        raise from_cache_error(error) from error
    except CacheError as error:
        raise from_cache_error(error, prefix=f"cannot open {redact(database)}: ") from error
    try:
        yield opened
    except CacheError as error:
        raise from_cache_error(error) from error
    finally:
        opened.close()
