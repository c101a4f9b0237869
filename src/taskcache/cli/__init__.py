"""The ``taskcache`` command line.

``main`` is the click group (the console-script entry point). Each command lives in its own
module, imported only when that command runs or help lists it, so ``taskcache key`` never
pays for the server stack, rich tables or database drivers:

* ``key``: cache keys; ``demo``: a guided run of the embedded catalog;
* ``serve``: the cache service;
* ``operate``: catalog maintenance (``migrate``, ``ls``, ``show``, ``delete``, ``gc``,
  ``stats``);
* ``artifacts``: the same for Flyte 1's DataCatalog artifacts (``taskcache artifacts ls`` …).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Final

import click

from taskcache._version import __version__

__all__ = ["main"]

# Command name -> (module, attribute) of its click command.
COMMANDS: Final[Mapping[str, tuple[str, str]]] = {
    "key": ("taskcache.cli.key", "key_command"),
    "demo": ("taskcache.cli.demo", "demo_command"),
    "serve": ("taskcache.cli.serve", "serve_command"),
    "migrate": ("taskcache.cli.operate", "migrate_command"),
    "ls": ("taskcache.cli.operate", "ls_command"),
    "show": ("taskcache.cli.operate", "show_command"),
    "delete": ("taskcache.cli.operate", "delete_command"),
    "gc": ("taskcache.cli.operate", "gc_command"),
    "stats": ("taskcache.cli.operate", "stats_command"),
    "artifacts": ("taskcache.cli.artifacts", "artifacts_group"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`COMMANDS` on first use."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, tuple[str, str]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Return every command name, eager and lazy, sorted."""
        return sorted({*super().list_commands(ctx), *self._lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return the command ``cmd_name``, importing its module if needed; None if unknown.

        Raises TypeError if the registered attribute is not a click command.
        """
        if cmd_name not in self._lazy_commands:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = self._lazy_commands[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attribute} is not a click command")
        return command


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(__version__, prog_name="taskcache")
def main() -> None:
    """taskcache: a memoization catalog for workflow tasks, with Flyte-identical keys."""
