"""Provenance of entries: the key map stored with an entry and the CatalogMetadata rebuilt
from it, following Flyte's cache-service client.

Keys are written with Flyte's names (``flyteplugins/.../catalog/cache_service/metadata_keys.go``
and flytepropeller's datacatalog transformer): the execution name as ``execution-name``.
Entries written by taskcache before it followed Flyte used ``exec-name``; it is still read.

It stores and fetches nothing.
"""

from __future__ import annotations

from typing import Any

from flyteidl2.core import catalog_pb2, identifier_pb2

from taskcache.model import CacheStatus, Metadata, Status

TASK_VERSION = "task-version"
EXEC_PROJECT = "exec-project"
EXEC_DOMAIN = "exec-domain"
EXEC_NAME = "execution-name"
# What taskcache wrote before it used Flyte's name: read, never written.
LEGACY_EXEC_NAME = "exec-name"
EXEC_NODE = "exec-node"
EXEC_ATTEMPT = "exec-attempt"
EXEC_ORG = "exec-org"
UNKNOWN = "unknown"
_MAX_ATTEMPT = 2**32 - 1


def as_identifier(identifier: Any) -> identifier_pb2.Identifier:
    """Return ``identifier`` (flyteidl or flyteidl2) as a ``flyteidl2.core.Identifier``."""
    if isinstance(identifier, identifier_pb2.Identifier):
        return identifier
    # Flyte 1 and Flyte 2 identifiers share field numbers and types.
    return identifier_pb2.Identifier.FromString(identifier.SerializeToString())


def key_map_for(metadata: Metadata | None) -> dict[str, str]:
    """Return the key map recorded for ``metadata``: from the task execution id if set,
    else from the node execution id, else empty.
    """
    if metadata is None:
        return {}
    task = metadata.task_execution_id
    if task is not None:
        execution = task.node_execution_id.execution_id
        return {
            TASK_VERSION: task.task_id.version,
            EXEC_PROJECT: execution.project,
            EXEC_DOMAIN: execution.domain,
            EXEC_NAME: execution.name,
            EXEC_NODE: task.node_execution_id.node_id,
            EXEC_ATTEMPT: str(task.retry_attempt),
            EXEC_ORG: execution.org,
        }
    node = metadata.node_execution_id
    if node is not None:
        execution = node.execution_id
        return {
            EXEC_PROJECT: execution.project,
            EXEC_DOMAIN: execution.domain,
            EXEC_NAME: execution.name,
            EXEC_NODE: node.node_id,
            EXEC_ORG: execution.org,
        }
    return {}


def datacatalog_dataset_key_map(metadata: Metadata | None) -> dict[str, str]:
    """Return the key map of a DataCatalog dataset created for ``metadata``, as flytepropeller
    writes it: the task version of its task execution id, else nothing.
    """
    task = metadata.task_execution_id if metadata is not None else None
    return {} if task is None else {TASK_VERSION: task.task_id.version}


def datacatalog_artifact_key_map(metadata: Metadata | None) -> dict[str, str]:
    """Return the key map of a DataCatalog artifact stored with ``metadata``.

    From a task execution id: flytepropeller's five keys (``exec-project``, ``exec-domain``,
    ``execution-name``, ``exec-node``, ``exec-attempt``), plus ``exec-org`` when the
    execution has an org (Flyte 1 records none; Flyte 2's name for it). From a node execution
    id alone (propeller always has a task execution): the same keys but the attempt.
    """
    key_map = key_map_for(metadata)
    key_map.pop(TASK_VERSION, None)  # a dataset's, in the DataCatalog
    if not key_map.get(EXEC_ORG):
        key_map.pop(EXEC_ORG, None)
    return key_map


def datacatalog_source_key_map(
    dataset_key_map: dict[str, str], artifact_key_map: dict[str, str]
) -> dict[str, str]:
    """Return the one key map :func:`source_execution` reads for a DataCatalog hit: the
    artifact's, with the task version taken from the dataset only (as flytepropeller does).
    """
    merged = {key: value for key, value in artifact_key_map.items() if key != TASK_VERSION}
    if TASK_VERSION in dataset_key_map:
        merged[TASK_VERSION] = dataset_key_map[TASK_VERSION]
    return merged


def _value(key_map: dict[str, str], key: str, fallback: str) -> str:
    return key_map.get(key) or fallback


def _attempt(text: str) -> int:
    try:
        attempt = int(text)
    except ValueError:
        return 0
    return attempt if 0 <= attempt <= _MAX_ATTEMPT else 0


def source_execution(
    source: identifier_pb2.Identifier, key_map: dict[str, str]
) -> identifier_pb2.TaskExecutionIdentifier:
    """Rebuild the source task execution of an entry from its source identifier and key map.

    Missing or empty values read "unknown"; project, domain and org fall back to the source
    identifier's.
    """
    name = key_map.get(EXEC_NAME) or _value(key_map, LEGACY_EXEC_NAME, UNKNOWN)
    return identifier_pb2.TaskExecutionIdentifier(
        task_id=identifier_pb2.Identifier(
            resource_type=source.resource_type,
            project=source.project,
            domain=source.domain,
            name=source.name,
            version=_value(key_map, TASK_VERSION, UNKNOWN),
            org=source.org,
        ),
        retry_attempt=_attempt(_value(key_map, EXEC_ATTEMPT, "0")),
        node_execution_id=identifier_pb2.NodeExecutionIdentifier(
            node_id=_value(key_map, EXEC_NODE, UNKNOWN),
            execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                project=_value(key_map, EXEC_PROJECT, source.project),
                domain=_value(key_map, EXEC_DOMAIN, source.domain),
                name=name,
                org=_value(key_map, EXEC_ORG, source.org),
            ),
        ),
    )


def catalog_metadata(
    dataset_id: identifier_pb2.Identifier | None,
    source: identifier_pb2.TaskExecutionIdentifier | None,
) -> catalog_pb2.CatalogMetadata:
    """Return Flyte's CatalogMetadata for an entry: its dataset id and source execution."""
    metadata = catalog_pb2.CatalogMetadata(dataset_id=dataset_id)
    if source is not None:
        metadata.source_task_execution.CopyFrom(source)
    return metadata


def put_failure_status(identifier: Any | None) -> Status:
    """Return the CACHE_PUT_FAILURE status a failed put or update carries."""
    dataset_id = as_identifier(identifier) if identifier is not None else None
    return Status(CacheStatus.CACHE_PUT_FAILURE, catalog_metadata(dataset_id, None))


def populated_status(identifier: Any, metadata: Metadata | None) -> Status:
    """Return the CACHE_POPULATED status of a successful put: the key's identifier and the
    metadata's task execution as the source.
    """
    source = metadata.task_execution_id if metadata is not None else None
    return Status(CacheStatus.CACHE_POPULATED, catalog_metadata(as_identifier(identifier), source))


def hit_status(source_identifier: identifier_pb2.Identifier, key_map: dict[str, str]) -> Status:
    """Return the CACHE_HIT status of an entry from its stored provenance."""
    return Status(
        CacheStatus.CACHE_HIT,
        catalog_metadata(source_identifier, source_execution(source_identifier, key_map)),
    )
