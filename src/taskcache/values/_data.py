"""Arrays and data frames, keyed by a digest of their content and stored as blobs.

A numpy array or pandas DataFrame becomes a blob literal whose ``hash`` is a digest of its
content, so that Flyte's key hashing (which takes a literal's ``hash`` in place of the
literal) keys it by content, never by upload path. Given a store, the data is written to it
(``.npy`` for arrays; parquet for frames when pyarrow is installed, else a pandas pickle) and
the literal references it by URI.

numpy and pandas are optional: nothing here imports them unless a value or type of theirs is
converted, which means they are installed and already imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable
from typing import Any

from flyteidl2.core import literals_pb2, types_pb2

from taskcache.storage import read_blob
from taskcache.values._builtin import Literal, LiteralType, mismatch, unexpected
from taskcache.values._engine import Converter, Options, add_builtin

NPY_FORMAT = "npy"
PARQUET_FORMAT = "parquet"
PICKLE_FRAME_FORMAT = "pandas-pickle"


def _blob_converter(
    module: str,
    attribute: str,
    file_format: str,
    to_literal: Callable[[Any, Any, Options], Literal],
    from_literal: Callable[[Literal, Any], Any],
) -> Converter:
    """The converter of class ``attribute`` of the optional library ``module`` (named
    ``module.attribute``) to blobs of ``file_format``; it handles a type only once the library
    is imported.
    """

    def handles(python_type: Any) -> bool:
        library = sys.modules.get(module)
        return (
            library is not None
            and isinstance(python_type, type)
            and issubclass(python_type, getattr(library, attribute))
        )

    return Converter(
        name=f"{module}.{attribute}",
        handles=handles,
        literal_type=lambda _: LiteralType(blob=_blob_type(file_format)),
        to_literal=to_literal,
        from_literal=from_literal,
    )


def _digest(kind: str, header: dict[str, Any], *chunks: bytes) -> str:
    # A versioned, self-describing prefix: a changed canonical form must not reuse old keys.
    hasher = hashlib.sha256(f"taskcache.values {kind} v1\n".encode())
    hasher.update(json.dumps(header, sort_keys=True).encode())
    hasher.update(b"\n")
    for chunk in chunks:
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def _blob_type(file_format: str) -> types_pb2.BlobType:
    return types_pb2.BlobType(format=file_format, dimensionality=types_pb2.BlobType.SINGLE)


def _blob_literal(
    digest: str, file_format: str, options: Options, file_name: str, write: Callable[[], bytes]
) -> Literal:
    """The blob literal of content ``digest``, written by ``write()`` to the store if any."""
    uri = options.store.write_file(digest, file_name, write()) if options.store else ""
    blob = literals_pb2.Blob(
        metadata=literals_pb2.BlobMetadata(type=_blob_type(file_format)), uri=uri
    )
    return Literal(scalar=literals_pb2.Scalar(blob=blob), hash=digest)


def _stored_blob(literal: Literal, python_type: Any) -> tuple[str, bytes]:
    """The format and bytes of the blob a literal references."""
    if literal.WhichOneof("value") != "scalar" or not literal.scalar.HasField("blob"):
        raise unexpected(literal, python_type)
    blob = literal.scalar.blob
    if not blob.uri:
        raise TypeError(
            f"this {python_type.__qualname__} literal holds only its content digest (it was "
            "converted without a store), not the data"
        )
    return blob.metadata.type.format, read_blob(blob.uri)


def _canonical_array(value: Any) -> Any:
    """The array in C order and little-endian: equal content, equal bytes."""
    import numpy  # noqa: PLC0415 -- installed: the value is an array

    if value.dtype.hasobject:
        raise TypeError("an array of Python objects has no content digest; use a typed dtype")
    array = numpy.ascontiguousarray(value)
    little = array.dtype.newbyteorder("<")
    return array.astype(little, copy=False)


def _array_to_literal(value: Any, python_type: Any, options: Options) -> Literal:
    if not isinstance(value, python_type):
        raise mismatch(value, python_type)
    import numpy  # noqa: PLC0415 -- installed: the value is an array

    array = _canonical_array(value)
    descriptor = numpy.lib.format.dtype_to_descr(array.dtype)
    header = {"dtype": repr(descriptor), "shape": list(array.shape)}
    digest = _digest("ndarray", header, array.tobytes(order="C"))

    def write() -> bytes:
        buffer = io.BytesIO()
        numpy.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()

    return _blob_literal(digest, NPY_FORMAT, options, "array.npy", write)


def _array_from_literal(literal: Literal, python_type: Any) -> Any:
    import numpy  # noqa: PLC0415 -- installed: the type is numpy's

    file_format, data = _stored_blob(literal, python_type)
    if file_format != NPY_FORMAT:
        raise unexpected(literal, python_type)
    return numpy.load(io.BytesIO(data), allow_pickle=False)


ARRAY = _blob_converter("numpy", "ndarray", NPY_FORMAT, _array_to_literal, _array_from_literal)


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401, PLC0415 -- only whether it is there
    except ImportError:
        return False
    return True


def _frame_to_literal(value: Any, python_type: Any, options: Options) -> Literal:
    if not isinstance(value, python_type):
        raise mismatch(value, python_type)
    import pandas  # noqa: PLC0415 -- installed: the value is a frame

    header = {
        "columns": [repr(column) for column in value.columns],
        "dtypes": [str(dtype) for dtype in value.dtypes],
        "index": [repr(name) for name in value.index.names],
        "index_dtype": str(value.index.dtype),
        "shape": list(value.shape),
    }
    # pandas' content hash of each row (index included), with its fixed key: the same in every
    # process; little-endian so that machines agree.
    rows = pandas.util.hash_pandas_object(value, index=True).to_numpy().astype("<u8")
    digest = _digest("DataFrame", header, rows.tobytes())
    if _has_pyarrow():
        return _blob_literal(digest, PARQUET_FORMAT, options, "frame.parquet", value.to_parquet)

    def write_pickle() -> bytes:
        buffer = io.BytesIO()
        value.to_pickle(buffer)
        return buffer.getvalue()

    return _blob_literal(digest, PICKLE_FRAME_FORMAT, options, "frame.pkl", write_pickle)


def _frame_from_literal(literal: Literal, python_type: Any) -> Any:
    import pandas  # noqa: PLC0415 -- installed: the type is pandas'

    file_format, data = _stored_blob(literal, python_type)
    if file_format == PARQUET_FORMAT:
        return pandas.read_parquet(io.BytesIO(data))
    if file_format == PICKLE_FRAME_FORMAT:
        # Written by _frame_to_literal into the catalog's own store, never taken from elsewhere.
        return pandas.read_pickle(io.BytesIO(data))
    raise unexpected(literal, python_type)


FRAME = _blob_converter(
    "pandas", "DataFrame", PARQUET_FORMAT, _frame_to_literal, _frame_from_literal
)

for _converter in (ARRAY, FRAME):
    add_builtin(_converter)
