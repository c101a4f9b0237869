"""``taskcache demo``: a guided run of the embedded catalog, for the README and first-time users.

This module owns the demo scenario (two workers, one reservation) and its command. It must
use only the public API (``taskcache.open``, ``taskcache.Key``, the :class:`~taskcache.Client`
methods), so that it shows what a user would write.

It uses only the public API; it never opens a repository itself.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import click
from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2, types_pb2

import taskcache
from taskcache import CacheError, Key, NotFoundError, hashing

_HEARTBEAT = timedelta(seconds=1)
_POLL_SECONDS = 0.05


def _integer_map(name: str, value: int) -> literals_pb2.LiteralMap:
    literal = literals_pb2.Literal(
        scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=value))
    )
    return literals_pb2.LiteralMap(literals={name: literal})


def _demo_key(run: str) -> Key:
    integer = interface_pb2.Variable(type=types_pb2.LiteralType(simple=types_pb2.INTEGER))
    interface = interface_pb2.TypedInterface(
        inputs=interface_pb2.VariableMap(
            variables=[interface_pb2.VariableEntry(key="n", value=integer)]
        ),
        outputs=interface_pb2.VariableMap(
            variables=[interface_pb2.VariableEntry(key="o0", value=integer)]
        ),
    )
    identifier = identifier_pb2.Identifier(
        resource_type=identifier_pb2.TASK,
        org="demo",
        project="taskcache",
        domain="development",
        name="demo.square",
        version="v1",
    )
    return Key(identifier, f"demo-{run}", interface, inputs=_integer_map("n", 12))


def run_demo(target: str | None, *, echo: Callable[[str], None] = print) -> None:
    """Run two workers that need the same task result against the catalog at ``target``.

    The first takes the reservation, computes and stores the result; the second waits on
    the reservation and then reads the stored result. Prints each step through ``echo``.
    Raises a CacheError if the catalog misbehaves.
    """
    run = uuid.uuid4().hex[:8]
    lock = threading.Lock()

    def say(worker: str, text: str) -> None:
        with lock:
            echo(f"[{worker}] {text}")

    with taskcache.open(target) as client:
        echo(f"cache key: {hashing.cache_key(_demo_key(run))}")

        def worker(name: str) -> None:
            key = _demo_key(run)
            while True:
                try:
                    entry = client.get(key)
                except NotFoundError:
                    pass
                else:
                    value = entry.outputs.read().literals["o0"].scalar.primitive.integer
                    say(name, f"cache hit: square = {value}")
                    return
                reservation = client.get_or_extend_reservation(key, name, _HEARTBEAT)
                if reservation.owner_id == name:
                    say(name, "cache miss; reservation acquired, computing")
                    time.sleep(0.3)
                    client.put(key, _integer_map("o0", 12 * 12))
                    client.release_reservation(key, name)
                    say(name, "result stored, reservation released")
                    return
                say(name, f"cache miss; {reservation.owner_id} is computing, waiting")
                time.sleep(_POLL_SECONDS * 4)

        first = threading.Thread(target=worker, args=("worker-a",))
        first.start()
        time.sleep(_POLL_SECONDS)
        second = threading.Thread(target=worker, args=("worker-b",))
        second.start()
        first.join()
        second.join()
        entry = client.get(_demo_key(run))
        echo(f"status: {entry.status.cache_status.name}; stored once, computed once")


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
