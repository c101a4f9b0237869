"""Flyte-identical cache keys: pure functions, no I/O.

``compute_hash`` is Flyte's ``pbhash.ComputeHash``; the other functions build Flyte 2
cache-service keys and Flyte 1 datacatalog identities from it.
"""

from taskcache.hashing.jsonpb import marshal_jsonpb, pbhash_via_json
from taskcache.hashing.keys import (
    cache_key,
    compute_hash,
    datacatalog_artifact_tag,
    datacatalog_dataset_version,
    hash_identifier_except_version,
    hash_literal_map,
    interface_signature_hash,
)

__all__ = [
    "cache_key",
    "compute_hash",
    "datacatalog_artifact_tag",
    "datacatalog_dataset_version",
    "hash_identifier_except_version",
    "hash_literal_map",
    "interface_signature_hash",
    "marshal_jsonpb",
    "pbhash_via_json",
]
