"""What a client sends and receives as outputs: inline LiteralMap bytes or a blob URI.

Shared by every client so the inline threshold, by-reference storage and blob read-back
behave the same embedded and remote.

It must not talk to a catalog: clients store what it prepares.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flyteidl2.core import literals_pb2
from google.protobuf.message import DecodeError, Message

from taskcache import hashing
from taskcache.errors import CacheError, InternalError, NotFoundError
from taskcache.model import LITERAL_MAP_TYPES, Key, LiteralMap, as_literal_map
from taskcache.outputs import OutputReader, decode_literal_map
from taskcache.provenance import put_failure_status
from taskcache.storage import BlobStore

Outputs = LiteralMap | OutputReader


def check_outputs(outputs: object) -> None:
    """Raise TypeError naming ``outputs`` unless it is a LiteralMap (flyteidl2 or flyteidl)
    or an :class:`~taskcache.outputs.OutputReader`.

    (Any other message, a single Literal say, would serialize to bytes that read back as a
    garbage LiteralMap.)
    """
    if isinstance(outputs, LITERAL_MAP_TYPES):
        return
    if isinstance(outputs, Message) or not isinstance(outputs, OutputReader):
        raise TypeError(
            f"outputs must be a LiteralMap or an OutputReader, not {type(outputs).__name__}"
        )


@dataclass(frozen=True)
class Payload:
    """Outputs ready to store: by URI or as serialized LiteralMap bytes.

    ``written_uri`` is a blob written for this payload, to delete if the put fails;
    ``blob_bytes`` its size (None for inline outputs and outputs stored by reference).
    """

    output_uri: str | None
    output_literals: bytes | None
    written_uri: str | None = None
    blob_bytes: int | None = None


def prepare_payload(
    cache_key: str, outputs: Outputs, blobs: BlobStore, inline_max_bytes: int
) -> Payload:
    """Turn ``outputs`` into a :class:`Payload`.

    A reader with a URI is stored by reference; other outputs are serialized and kept inline
    when at most ``inline_max_bytes`` (0 = never), else written once to ``blobs``. Raises
    NotFoundError when a reader says its outputs do not exist.
    """
    if isinstance(outputs, OutputReader) and outputs.uri is not None:
        if not outputs.exists():
            raise NotFoundError(f"outputs do not exist for {cache_key!r}")
        return Payload(output_uri=outputs.uri, output_literals=None)
    data = literal_outputs(outputs, cache_key).SerializeToString()
    if inline_max_bytes > 0 and len(data) <= inline_max_bytes:
        return Payload(output_uri=None, output_literals=data)
    uri = blobs.write_outputs(cache_key, data)
    return Payload(output_uri=uri, output_literals=None, written_uri=uri, blob_bytes=len(data))


def read_payload(
    output_literals: bytes | None, output_uri: str | None, *, key: str, blobs: BlobStore
) -> literals_pb2.LiteralMap:
    """Return the stored outputs: the inline bytes if any, else the blob at ``output_uri``
    (read through ``blobs`` when it lies on that store's filesystem, so its storage options
    apply).

    Raises NotFoundError if the blob vanished (a dangling entry), InternalError if neither
    form is present.
    """
    if output_literals is not None:
        try:
            return literals_pb2.LiteralMap.FromString(output_literals)
        except DecodeError:  # named by decode_literal_map (not formatted on every hit)
            return decode_literal_map(output_literals, source=f"entry {key!r}")
    if not output_uri:
        raise InternalError(f"entry {key!r} has neither outputs nor an output URI")
    return decode_literal_map(blobs.read(output_uri), source=output_uri)


def literal_outputs(outputs: Outputs, cache_key: str) -> LiteralMap:
    """Return ``outputs`` as a LiteralMap: itself, or what a reader reads.

    Raises TypeError (see :func:`check_outputs`) for another type or a reader whose
    ``read()`` returns something else; NotFoundError when a reader says its outputs do not
    exist.
    """
    check_outputs(outputs)
    if not isinstance(outputs, OutputReader):
        return outputs
    if not outputs.exists():
        raise NotFoundError(f"outputs do not exist for {cache_key!r}")
    return as_literal_map(outputs.read(), "the OutputReader's read()")


@contextmanager
def put_failures(key: Key) -> Iterator[None]:
    """Give every error raised in the block the CACHE_PUT_FAILURE status of ``key``.

    A CacheError is re-raised as it is, a TypeError as it is (the caller passed the wrong
    thing), any other exception as an InternalError caused by it.
    """
    try:
        yield
    except Exception as error:
        status = put_failure_status(key.identifier)
        if isinstance(error, CacheError):
            error.status = status
            raise
        if isinstance(error, TypeError):
            raise
        raise InternalError(f"put failed: {error}", status=status) from error


@contextmanager
def staged_put(
    key: Key, outputs: Outputs, blobs: BlobStore, inline_max_bytes: int
) -> Iterator[tuple[str, Payload]]:
    """Yield ``key``'s cache key and the :class:`Payload` of ``outputs`` (see
    :func:`prepare_payload`) for the ``with`` block to store.

    Raises TypeError (see :func:`check_outputs`) before anything is done for outputs of
    another type, and for a reader whose ``read()`` returns something else. If hashing,
    staging or the block fails otherwise, the blob written for the payload (if any) is
    deleted and the error is raised with the CACHE_PUT_FAILURE status (see
    :func:`put_failures`).
    """
    check_outputs(outputs)
    payload: Payload | None = None
    with put_failures(key):
        try:
            cache_key = hashing.cache_key(key)
            payload = prepare_payload(cache_key, outputs, blobs, inline_max_bytes)
            yield cache_key, payload
        except Exception as error:
            if payload is None:
                raise
            if payload.written_uri is not None:
                blobs.delete(payload.written_uri)
            if isinstance(error, TypeError):
                # Past staging the outputs were fine: a TypeError is taskcache's failure.
                raise InternalError(f"put failed: {error}") from error
            raise
