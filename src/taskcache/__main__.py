"""``python -m taskcache`` runs the command line.

It holds no logic of its own.
"""

from taskcache.cli import main

main(prog_name="taskcache")
