"""``python -m taskcache`` runs the command line."""

from taskcache.cli import main

main(prog_name="taskcache")
