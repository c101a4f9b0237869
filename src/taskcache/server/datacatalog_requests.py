"""Reading DataCatalog requests: Flyte's validation rules, and what a request asks for as rows,
filters and pages.

It reproduces the checks of Flyte's datacatalog validators (required dataset id fields, one
query handle, non-empty data, partitions matching the dataset's keys, pagination tokens and
sort options, which filters apply to which entity), each an InvalidArgumentError naming the
field by its protobuf path. It must not do I/O nor know the service's storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from flyteidl.datacatalog import datacatalog_pb2 as dc
from google.protobuf.message import Message

from taskcache.datacatalog_manager import ArtifactHandle
from taskcache.errors import InvalidArgumentError
from taskcache.repositories.datacatalog_base import (
    ArtifactFilter,
    DatasetFilter,
    DatasetKey,
    Page,
)

# Flyte's datacatalog: a page holds 50 rows unless the request sets a limit.
DEFAULT_PAGE_LIMIT: Final = 50
# Flyte's has no upper bound; one keeps a single response (data included) bounded.
MAX_PAGE_LIMIT: Final = 1000
# Flyte's tokens are decimal offsets that fit an unsigned 32-bit integer.
_MAX_TOKEN: Final = 2**32 - 1
_DATASET_FIELDS: Final = ("project", "domain", "name", "version")


def _missing(field: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"missing {field.rsplit('.', 1)[-1]}", field=field)


def require_field(request: Message, name: str) -> None:
    """Check that ``request`` carries its sub-message ``name``; InvalidArgumentError
    ("missing <name>", naming it) if it does not.
    """
    if not request.HasField(name):
        raise _missing(name)


def dataset_key(dataset_id: dc.DatasetID, field: str, *, present: bool = True) -> DatasetKey:
    """Return the key ``dataset_id`` names; InvalidArgumentError naming ``field`` (absent)
    or ``field.project`` … ``field.version`` (empty), as Flyte's ValidateDatasetID checks.
    ``present`` says whether the request carries the message at all.
    """
    if not present:
        raise _missing(field)
    for name in _DATASET_FIELDS:
        if not getattr(dataset_id, name):
            raise _missing(f"{field}.{name}")
    return DatasetKey(
        org=dataset_id.org,
        project=dataset_id.project,
        domain=dataset_id.domain,
        name=dataset_id.name,
        version=dataset_id.version,
    )


def unique_partition_keys(keys: Sequence[str], field: str) -> tuple[str, ...]:
    """Return ``keys``; InvalidArgumentError naming ``field`` if one repeats."""
    if len(set(keys)) != len(keys):
        raise InvalidArgumentError(f"partition keys are not unique: {list(keys)}", field=field)
    return tuple(keys)


def artifact_partitions(
    dataset_keys: Sequence[str], partitions: Sequence[dc.Partition], field: str
) -> tuple[tuple[str, str], ...]:
    """Return ``partitions`` as (key, value) pairs once they assign exactly the dataset's
    partition keys, each a non-empty value (Flyte's ValidatePartitions).
    """
    if len(partitions) != len(dataset_keys):
        raise InvalidArgumentError(
            f"partition key mismatch: the dataset has keys {list(dataset_keys)}, "
            f"the artifact {len(partitions)} partitions",
            field=field,
        )
    pairs: list[tuple[str, str]] = []
    for index, partition in enumerate(partitions):
        if not partition.key:
            raise InvalidArgumentError("missing partitionKey", field=f"{field}[{index}].key")
        if not partition.value:
            raise InvalidArgumentError("missing partitionValue", field=f"{field}[{index}].value")
        pairs.append((partition.key, partition.value))
    if sorted(key for key, _ in pairs) != sorted(dataset_keys):
        raise InvalidArgumentError(
            f"artifact partitions {[key for key, _ in pairs]} do not match the dataset's "
            f"partition keys {list(dataset_keys)}",
            field=field,
        )
    return tuple(pairs)


def data_names(data: Sequence[dc.ArtifactData], field: str) -> None:
    """Raise InvalidArgumentError naming ``field`` if ``data`` is empty or repeats a name."""
    if not data:
        raise InvalidArgumentError("missing artifactData", field=field)
    names = [datum.name for datum in data]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"data names are not unique: {names}", field=field)


def artifact_handle(
    request: dc.GetArtifactRequest | dc.UpdateArtifactRequest,
) -> ArtifactHandle:
    """Return the artifact ``request`` names (Flyte's ValidateGet/UpdateArtifactRequest):
    InvalidArgumentError naming ``query_handle`` if neither id nor tag is set, ``dataset…``
    for a malformed dataset id, ``artifact_id`` / ``tag_name`` if empty.
    """
    which = request.WhichOneof("query_handle")
    if which is None:
        raise InvalidArgumentError("missing one of artifactID/tagName", field="query_handle")
    has_dataset = request.HasField("dataset")
    if which == "artifact_id":
        dataset = dataset_key(request.dataset, "dataset") if has_dataset else None
        if not request.artifact_id:
            raise InvalidArgumentError("missing artifactID", field="artifact_id")
        return ArtifactHandle(dataset, request.dataset.UUID, request.artifact_id, None)
    dataset = dataset_key(request.dataset, "dataset", present=has_dataset)
    if not request.tag_name:
        raise InvalidArgumentError("missing tagName", field="tag_name")
    return ArtifactHandle(dataset, request.dataset.UUID, None, request.tag_name)


def page(request: dc.ListDatasetsRequest | dc.ListArtifactsRequest) -> Page:
    """Return the page ``request.pagination`` asks for (Flyte's ValidatePagination and
    ApplyPagination): the token is a decimal offset (blank: 0), the sort key creation time,
    newest first by default. A limit of 0 means :data:`DEFAULT_PAGE_LIMIT`; more than
    :data:`MAX_PAGE_LIMIT` is that. InvalidArgumentError naming ``pagination.token``,
    ``pagination.sortKey`` or ``pagination.sortOrder``.
    """
    if not request.HasField("pagination"):
        return Page(offset=0, limit=DEFAULT_PAGE_LIMIT, descending=True)
    options = request.pagination
    token = options.token.strip(" ")
    if not token:
        offset = 0
    elif token.isascii() and token.isdigit() and int(token) <= _MAX_TOKEN:
        offset = int(token)
    else:
        raise InvalidArgumentError(f"invalid token value: {token!r}", field="pagination.token")
    if options.sortKey != dc.PaginationOptions.CREATION_TIME:
        raise InvalidArgumentError(
            f"invalid sort key {options.sortKey}", field="pagination.sortKey"
        )
    if options.sortOrder not in (
        dc.PaginationOptions.DESCENDING,
        dc.PaginationOptions.ASCENDING,
    ):
        raise InvalidArgumentError(
            f"invalid sort order {options.sortOrder}", field="pagination.sortOrder"
        )
    limit = options.limit or DEFAULT_PAGE_LIMIT
    return Page(
        offset=offset,
        limit=min(limit, MAX_PAGE_LIMIT),
        descending=options.sortOrder == dc.PaginationOptions.DESCENDING,
    )


def next_token(current: Page, returned: int) -> str:
    """Return Flyte's next-page token: the offset after the rows returned."""
    return str(current.offset + returned)


def _check_operator(single: dc.SinglePropertyFilter, field: str) -> None:
    if single.operator != dc.SinglePropertyFilter.EQUALS:
        raise InvalidArgumentError(
            f"unsupported filter operator {single.operator}", field=f"{field}.operator"
        )


def dataset_filter(expression: dc.FilterExpression) -> DatasetFilter | None:
    """Return the dataset filter ``expression`` asks for, or None if its conditions
    contradict each other (nothing matches). Datasets cannot be filtered by tag, partition or
    artifact properties: InvalidArgumentError naming ``filter.filters[i]``.
    """
    values: dict[str, str] = {}
    for index, single in enumerate(expression.filters):
        field = f"filter.filters[{index}]"
        which = single.WhichOneof("property_filter")
        if which != "dataset_filter":
            entity = {"tag_filter": "Tag", "partition_filter": "Partition"}.get(
                which or "", "Artifact"
            )
            raise InvalidArgumentError(
                f"Dataset cannot be filtered by {entity} properties", field=field
            )
        _check_operator(single, field)
        prop = single.dataset_filter.WhichOneof("property")
        if prop is None:
            raise InvalidArgumentError("missing dataset property", field=f"{field}.dataset_filter")
        value = getattr(single.dataset_filter, prop)
        if not value:
            raise InvalidArgumentError(f"missing {prop}", field=f"{field}.dataset_filter.{prop}")
        if values.setdefault(prop, value) != value:
            return None
    return DatasetFilter(**values)


def artifact_filter(expression: dc.FilterExpression) -> ArtifactFilter:
    """Return the artifact filter ``expression`` asks for (partition key/value, tag name and
    artifact id conditions). Artifacts cannot be filtered across datasets: a dataset filter
    is InvalidArgumentError naming ``filter.filters[i]``, as is an empty value.
    """
    partitions: list[tuple[str, str]] = []
    tags: list[str] = []
    ids: list[str] = []
    for index, single in enumerate(expression.filters):
        field = f"filter.filters[{index}]"
        which = single.WhichOneof("property_filter")
        if which == "dataset_filter":
            raise InvalidArgumentError(
                "Artifact cannot be filtered by Dataset properties", field=field
            )
        if which is None:
            raise InvalidArgumentError("missing property filter", field=field)
        _check_operator(single, field)
        if which == "partition_filter":
            pair = single.partition_filter.key_val
            if not pair.key:
                raise InvalidArgumentError(
                    "missing PartitionKey", field=f"{field}.partition_filter.key_val.key"
                )
            if not pair.value:
                raise InvalidArgumentError(
                    "missing PartitionValue", field=f"{field}.partition_filter.key_val.value"
                )
            partitions.append((pair.key, pair.value))
        elif which == "tag_filter":
            if not single.tag_filter.tag_name:
                raise InvalidArgumentError("missing TagName", field=f"{field}.tag_filter.tag_name")
            tags.append(single.tag_filter.tag_name)
        else:
            if not single.artifact_filter.artifact_id:
                raise InvalidArgumentError(
                    "missing artifactID", field=f"{field}.artifact_filter.artifact_id"
                )
            ids.append(single.artifact_filter.artifact_id)
    return ArtifactFilter(tuple(partitions), tuple(tags), tuple(ids))


def reservation_of(
    request: dc.GetOrExtendReservationRequest | dc.ReleaseReservationRequest,
) -> tuple[DatasetKey, str]:
    """Return the dataset and tag name ``request.reservation_id`` names; InvalidArgumentError
    naming ``reservation_id.dataset_id…`` or ``reservation_id.tag_name`` if one is missing
    (Flyte's datacatalog does not check, and would file it under empty names).
    """
    reservation_id = request.reservation_id
    dataset = dataset_key(
        reservation_id.dataset_id,
        "reservation_id.dataset_id",
        present=request.HasField("reservation_id") and reservation_id.HasField("dataset_id"),
    )
    if not reservation_id.tag_name:
        raise InvalidArgumentError("missing tagName", field="reservation_id.tag_name")
    return dataset, reservation_id.tag_name
