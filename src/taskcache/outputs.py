"""Output readers: how a task's outputs reach the catalog and come back out of it.

It must not know about catalogs, keys or policy.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from flyteidl2.core import execution_pb2, literals_pb2
from google.protobuf.message import DecodeError

from taskcache.errors import FailedPreconditionError, InvalidArgumentError
from taskcache.storage import blob_exists, read_blob


@runtime_checkable
class OutputReader(Protocol):
    """Gives access to a task's outputs.

    ``read`` returns the outputs LiteralMap (raising if they hold an execution error or are
    missing); ``exists`` says whether there are outputs to read; ``uri`` is where they are
    stored, or None for outputs that live only in memory.
    """

    @property
    def uri(self) -> str | None:
        """The storage URI of the outputs, if they have one."""
        ...

    def read(self) -> literals_pb2.LiteralMap:
        """Return the outputs."""
        ...

    def exists(self) -> bool:
        """Return whether the outputs exist."""
        ...


class InMemoryOutputReader:
    """Outputs already in memory: a LiteralMap, or the execution error the task ended with."""

    def __init__(
        self,
        outputs: literals_pb2.LiteralMap | None,
        *,
        error: execution_pb2.ExecutionError | None = None,
        uri: str | None = None,
    ) -> None:
        if outputs is None and error is None:
            raise InvalidArgumentError("outputs or an error is required", field="outputs")
        self._outputs = outputs
        self.error = error
        self._uri = uri

    @property
    def uri(self) -> str | None:
        """Where these outputs were stored, if they came from storage."""
        return self._uri

    def read(self) -> literals_pb2.LiteralMap:
        """Return the outputs; FailedPreconditionError if the task ended with an error."""
        if self.error is not None or self._outputs is None:
            message = self.error.message if self.error is not None else "no outputs"
            raise FailedPreconditionError(f"outputs hold an execution error: {message}")
        return self._outputs

    def exists(self) -> bool:
        """Return True: in-memory outputs (or their error) always exist."""
        return True


class UriOutputReader:
    """Outputs stored as an ``outputs.pb`` LiteralMap at a storage URI (any fsspec URL)."""

    def __init__(self, uri: str) -> None:
        if not uri:
            raise InvalidArgumentError("must not be empty", field="uri")
        self._uri = uri

    @property
    def uri(self) -> str:
        """The storage URI of ``outputs.pb``."""
        return self._uri

    def read(self) -> literals_pb2.LiteralMap:
        """Read and decode the LiteralMap.

        Raises NotFoundError if the blob is missing, InvalidArgumentError if it is not a
        LiteralMap, UnavailableError if storage fails.
        """
        return decode_literal_map(read_blob(self._uri), source=self._uri)

    def exists(self) -> bool:
        """Return whether the blob exists."""
        return blob_exists(self._uri)


def decode_literal_map(data: bytes, *, source: str) -> literals_pb2.LiteralMap:
    """Decode a serialized LiteralMap; InvalidArgumentError naming ``source`` if it is not one."""
    try:
        return literals_pb2.LiteralMap.FromString(data)
    except DecodeError as error:
        raise InvalidArgumentError(f"{source} does not hold a LiteralMap: {error}") from error
