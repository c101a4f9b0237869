"""``taskcache demo``: a guided run of the embedded catalog (the logic is taskcache.demo)."""

from __future__ import annotations

import click

from taskcache.demo import run_demo
from taskcache.errors import CacheError


@click.command("demo")
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
