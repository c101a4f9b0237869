"""Flyte-identical cache keys: pure functions, no I/O.

``compute_hash`` is Flyte's ``pbhash.ComputeHash``; the other functions build Flyte 2
cache-service keys and Flyte 1 datacatalog identities from it. Digests come from the compiled
core when it was built, else from the pure-Python walk (:func:`hashing_route` says which;
``TASKCACHE_HASHING=python|compiled`` or :func:`use_hashing_route` forces one). The JSON
reference route (:mod:`taskcache.hashing.jsonpb`), which the tests hold ``compute_hash`` equal
to, is not part of this package's interface.

It must not depend on clients, repositories or the server.
"""

from taskcache.hashing.keys import (
    cache_key,
    compose_cache_key,
    compute_hash,
    datacatalog_artifact_tag,
    datacatalog_dataset_name,
    datacatalog_dataset_version,
    hash_identifier_except_version,
    hash_literal_map,
    interface_signature_hash,
)
from taskcache.hashing.routes import route_name as hashing_route
from taskcache.hashing.routes import use_route as use_hashing_route

__all__ = [
    "cache_key",
    "compose_cache_key",
    "compute_hash",
    "datacatalog_artifact_tag",
    "datacatalog_dataset_name",
    "datacatalog_dataset_version",
    "hash_identifier_except_version",
    "hash_literal_map",
    "hashing_route",
    "interface_signature_hash",
    "use_hashing_route",
]
