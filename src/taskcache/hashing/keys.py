"""Flyte's cache-key derivations: identifier, interface signature, inputs, and the keys built
from them (Flyte 2 cache-service key; Flyte 1 datacatalog dataset version and artifact tag).

Every function accepts ``flyteidl2`` and ``flyteidl`` messages alike and returns text
byte-identical to Flyte's Go code.

No I/O: it must not know where keys are stored.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from taskcache.errors import InvalidArgumentError
from taskcache.hashing import routes
from taskcache.hashing.objecthash import EMPTY_DICT_HASH

if TYPE_CHECKING:
    from taskcache.model import Key, LiteralMap, TaskIdentifier, TypedInterface

_SIGNATURE_HASH_LENGTH = 8
ARTIFACT_TAG_PREFIX = "flyte_cached-"
DATASET_NAME_PREFIX = "flyte_task-"


def compute_hash(message: Message) -> bytes:
    """Return Flyte's ``pbhash.ComputeHash(message)``: 32 bytes.

    Raises InvalidArgumentError where Go would fail to marshal the message.
    """
    return routes.active.pbhash(message)


def _urlsafe(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def hash_literal_map(literal_map: LiteralMap | None, ignore: Collection[str] = ()) -> str:
    """Return Flyte's ``HashLiteralMap``: URL-safe base64 (no padding) of the inputs' hash.

    Names in ``ignore`` are dropped; literals carrying a ``hash`` are replaced by it, at any
    depth (:mod:`taskcache.hashing.hashify`). None and an empty map hash like the empty
    LiteralMap. Raises InvalidArgumentError (field ``inputs``) for a map missing required fields.
    """
    if literal_map is None:
        return _urlsafe(EMPTY_DICT_HASH)
    return routes.active.literal_map_text(literal_map, ignore)


def hash_identifier_except_version(identifier: TaskIdentifier) -> str:
    """Return Flyte's ``HashIdentifierExceptVersion``: standard base64 with padding.

    The hash covers resource_type, project, domain, name and org; the version is left out so
    a new task version can hit entries of the old one.
    """
    fields = (
        identifier.resource_type,
        identifier.project,
        identifier.domain,
        identifier.name,
        identifier.org,
    )
    message_type: Any = type(identifier)
    return _identifier_hash(message_type, fields)


@lru_cache(maxsize=1024)
def _identifier_hash(message_type: Any, fields: tuple[int, str, str, str, str]) -> str:
    resource_type, project, domain, name, org = fields
    copy = message_type(
        resource_type=resource_type, project=project, domain=domain, name=name, org=org
    )
    return base64.b64encode(compute_hash(copy)).decode("ascii")


def _variable_map_prefix(interface: TypedInterface, which: str) -> str:
    if interface.HasField(which):
        variables = getattr(interface, which)
        if len(variables.variables):
            return _urlsafe(compute_hash(variables))[:_SIGNATURE_HASH_LENGTH]
    return _urlsafe(EMPTY_DICT_HASH)[:_SIGNATURE_HASH_LENGTH]


def interface_signature_hash(typed_interface: TypedInterface) -> str:
    """Return ``"<inputs>-<outputs>"``: the first 8 URL-safe base64 characters of each
    VariableMap's hash (an absent or empty map hashes as the empty VariableMap).

    Flyte 2 VariableMaps are ordered lists and hash in the order given; Flyte 1's are maps.
    """
    message_type: Any = type(typed_interface)
    return _interface_signature(message_type, typed_interface.SerializeToString(deterministic=True))


@lru_cache(maxsize=1024)
def _interface_signature(message_type: Any, serialized: bytes) -> str:
    # Interfaces repeat on every call for a task; their canonical bytes make a cheap cache key.
    interface = message_type.FromString(serialized)
    return (
        f"{_variable_map_prefix(interface, 'inputs')}-{_variable_map_prefix(interface, 'outputs')}"
    )


def cache_key(key: Key) -> str:
    """Return the Flyte 2 cache-service key of ``key``.

    ``"<identifier hash>-<interface signature>-<inputs hash>-<cache version>"``. Inputs are
    read (at most once per Key) only when the interface's ``inputs`` field is set; otherwise
    the empty map is hashed. Raises InvalidArgumentError for a missing identifier or interface.
    """
    remembered = key.remembered_cache_key
    if remembered is not None:
        return remembered
    if key.identifier is None:
        raise InvalidArgumentError("is required", field="identifier")
    if key.typed_interface is None:
        raise InvalidArgumentError("is required", field="typed_interface")
    inputs = key.read_inputs() if key.typed_interface.HasField("inputs") else None
    value = compose_cache_key(
        hash_identifier_except_version(key.identifier),
        interface_signature_hash(key.typed_interface),
        hash_literal_map(inputs, key.cache_ignore_input_vars),
        key.cache_version,
    )
    key.remember_cache_key(value)
    return value


def compose_cache_key(
    identifier_hash: str, interface_signature: str, inputs_hash: str, cache_version: str
) -> str:
    """Return the Flyte 2 cache-service key from its parts, as :func:`cache_key` joins them:
    :func:`hash_identifier_except_version`, :func:`interface_signature_hash`,
    :func:`hash_literal_map` and the cache version.

    For callers that compute the constant parts once (the decorator, per function).
    """
    return f"{identifier_hash}-{interface_signature}-{inputs_hash}-{cache_version}"


def datacatalog_dataset_version(typed_interface: TypedInterface, cache_version: str) -> str:
    """Return the Flyte 1 datacatalog dataset version ``"<cache version>-<signature>"``.

    The cache version is trimmed of leading and trailing ASCII spaces only (as Go's
    ``strings.Trim(v, " ")``); InvalidArgumentError if nothing is left.
    """
    trimmed = cache_version.strip(" ")
    if not trimmed:
        raise InvalidArgumentError("must not be empty", field="cache_version")
    return f"{trimmed}-{interface_signature_hash(typed_interface)}"


def datacatalog_dataset_name(identifier: TaskIdentifier) -> str:
    """Return the Flyte 1 datacatalog dataset name of a task: ``"flyte_task-<task name>"``."""
    name: str = identifier.name
    return DATASET_NAME_PREFIX + name


def datacatalog_artifact_tag(literal_map: LiteralMap | None, ignore: Collection[str] = ()) -> str:
    """Return the Flyte 1 datacatalog artifact tag ``"flyte_cached-<inputs hash>"``."""
    return ARTIFACT_TAG_PREFIX + hash_literal_map(literal_map, ignore)
