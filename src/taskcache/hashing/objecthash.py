"""Ben Laurie's objecthash over "common JSON" values, as Flyte's Go code computes it.

Every node hashes to ``sha256(tag || payload)``: ``u`` strings (UTF-8 bytes), ``f`` numbers
(always IEEE doubles, in objecthash's normalized binary form), ``b`` booleans, ``n`` null,
``l`` lists (concatenated element hashes), ``d`` dicts (``key hash || value hash`` pairs sorted
by key hash). The helpers below are shared by the JSON route and the direct message walk.

It knows nothing of protobuf or Flyte.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from hashlib import sha256
from typing import Any

from taskcache.errors import InvalidArgumentError

_MAX_NORMALIZED_FLOAT_LENGTH = 1000

NIL_HASH = sha256(b"n").digest()
TRUE_HASH = sha256(b"b1").digest()
FALSE_HASH = sha256(b"b0").digest()
EMPTY_DICT_HASH = sha256(b"d").digest()
EMPTY_LIST_HASH = sha256(b"l").digest()


def hash_unicode(value: str | bytes) -> bytes:
    """Return the objecthash of a string: its UTF-8 bytes as given, no normalization.

    Raises InvalidArgumentError for text that is not valid Unicode, including a proto2 string
    field holding invalid UTF-8 (which protobuf hands over as bytes).
    """
    if isinstance(value, bytes):
        raise InvalidArgumentError("string field is not valid UTF-8")
    try:
        return sha256(b"u" + value.encode("utf-8")).digest()
    except UnicodeEncodeError as error:
        raise InvalidArgumentError(f"string is not valid Unicode: {error}") from error


@lru_cache(maxsize=4096)
def hash_key(name: str) -> bytes:
    """Return ``hash_unicode(name)``, memoized: field names and map keys repeat constantly."""
    return hash_unicode(name)


def hash_bool(value: bool) -> bytes:
    """Return the objecthash of a boolean."""
    return TRUE_HASH if value else FALSE_HASH


def normalize_float(value: float) -> str:
    """Return objecthash's normalized text of a finite double.

    ``"+0:"`` for zero (either sign); otherwise sign, binary exponent ``e`` such that the
    mantissa lies in (0.5, 1], and the mantissa's bits. Raises InvalidArgumentError when the
    text would reach 1 000 characters (objecthash refuses those).
    """
    if value == 0:
        return "+0:"
    sign = "+"
    f = value
    if f < 0:
        sign = "-"
        f = -f
    exponent = 0
    while f > 1:
        f /= 2
        exponent += 1
    while f <= 0.5:
        f *= 2
        exponent -= 1
    bits: list[str] = []
    length = len(sign) + len(str(exponent)) + 1
    while f != 0:
        if f >= 1:
            bits.append("1")
            f -= 1
        else:
            bits.append("0")
        length += 1
        if length >= _MAX_NORMALIZED_FLOAT_LENGTH:
            raise InvalidArgumentError(f"cannot normalize float {value!r}")
        f *= 2
    return f"{sign}{exponent}:{''.join(bits)}"


@lru_cache(maxsize=8192)
def _hash_finite_float(value: float) -> bytes:
    return sha256(b"f" + normalize_float(value).encode("ascii")).digest()


def hash_float(value: float) -> bytes:
    """Return the objecthash of a JSON number (a double)."""
    if math.isnan(value):
        return sha256(b"fNaN").digest()
    if math.isinf(value):
        return sha256(b"fInfinity" if value > 0 else b"f-Infinity").digest()
    return _hash_finite_float(value)


def hash_list(element_hashes: list[bytes]) -> bytes:
    """Return the objecthash of a list given its elements' hashes, in order."""
    return sha256(b"l" + b"".join(element_hashes)).digest()


def hash_dict(entries: list[bytes]) -> bytes:
    """Return the objecthash of a dict given its ``key hash || value hash`` entries.

    Sorting the concatenations orders them by key hash, because keys are unique.
    """
    entries.sort()
    return sha256(b"d" + b"".join(entries)).digest()


def object_hash(value: Any) -> bytes:
    """Return the objecthash of a parsed common-JSON value (dict, list, str, float, bool, None).

    Integers are hashed as the doubles Go's JSON decoder would have produced.
    Raises InvalidArgumentError for any other type.
    """
    if value is None:
        return NIL_HASH
    if isinstance(value, bool):
        return hash_bool(value)
    if isinstance(value, str):
        return hash_unicode(value)
    if isinstance(value, float | int):
        return hash_float(float(value))
    if isinstance(value, list):
        return hash_list([object_hash(item) for item in value])
    if isinstance(value, dict):
        return hash_dict([hash_key(key) + object_hash(item) for key, item in value.items()])
    raise InvalidArgumentError(f"cannot objecthash a {type(value).__name__}")


def _reject_constant(name: str) -> Any:
    raise InvalidArgumentError(f"JSON constant {name} is not valid JSON")


def common_json_hash(text: str) -> bytes:
    """Parse JSON text as Go's ``encoding/json`` would (every number a double) and hash it.

    Raises InvalidArgumentError for text Go would refuse: malformed JSON, bare NaN/Infinity,
    or numbers beyond the double range.
    """
    try:
        parsed = json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(f"invalid JSON: {error}") from error
    _reject_overflow(parsed)
    return object_hash(parsed)


def _reject_overflow(value: Any) -> None:
    if isinstance(value, float) and math.isinf(value):
        raise InvalidArgumentError("JSON number out of the double range")
    if isinstance(value, list):
        for item in value:
            _reject_overflow(item)
    elif isinstance(value, dict):
        for item in value.values():
            _reject_overflow(item)
