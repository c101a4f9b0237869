"""The DataCatalog tables' SQL, shared by the SQLite and PostgreSQL repositories.

Both databases run the same statements (times are integer microseconds since the epoch in
these tables, so no type differs); :class:`DatacatalogTables` holds them and each backend
supplies its connections (:meth:`DatacatalogTables._dc_read` / ``_dc_write``) and its
parameter marker. Every decision is one conditional statement: ``INSERT ... ON CONFLICT DO
NOTHING`` creates a dataset, an artifact or a tag at most once, whoever races it.

Rows only: it must not decide policy.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from taskcache.errors import InternalError, InvalidArgumentError
from taskcache.repositories.datacatalog_base import (
    ArtifactDatum,
    ArtifactFilter,
    ArtifactRef,
    ArtifactRow,
    DatacatalogStats,
    DatasetFilter,
    DatasetKey,
    DatasetRow,
    Page,
    TagOutcome,
)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)

_DATASET_COLUMNS: Final = (
    "d.org, d.project, d.domain, d.name, d.version, d.uuid, d.metadata, d.partition_keys, "
    "d.created_at"
)
_ARTIFACT_SELECT: Final = f"""
    SELECT a.dataset_uuid, a.artifact_id, a.metadata, a.created_at, {_DATASET_COLUMNS}
    FROM datacatalog_artifacts a JOIN datacatalog_datasets d ON d.uuid = a.dataset_uuid
"""
_ARTIFACT_KEY: Final = "dataset_uuid = ? AND artifact_id = ?"


class _Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class _Connection(Protocol):
    def execute(self, statement: Any, parameters: Any = ..., /) -> Any: ...


def to_us(value: datetime, field: str) -> int:
    """Return ``value`` as integer microseconds since the epoch; it must be timezone-aware."""
    if value.utcoffset() is None:
        raise InvalidArgumentError("must be a timezone-aware datetime", field=field)
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    """Return the aware UTC datetime ``value`` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=int(value))


def _decode_json_list(text: str, what: str) -> list[Any]:
    try:
        decoded = json.loads(text)
    except ValueError as error:
        raise InternalError(f"stored {what} is not valid JSON: {error}") from error
    if not isinstance(decoded, list):
        raise InternalError(f"stored {what} is not a JSON array")
    return decoded


def _dataset_from(values: Sequence[Any]) -> DatasetRow:
    org, project, domain, name, version, uuid, metadata, partition_keys, created_at = values
    keys = _decode_json_list(partition_keys, "partition keys")
    return DatasetRow(
        key=DatasetKey(org, project, domain, name, version),
        uuid=uuid,
        metadata=bytes(metadata),
        partition_keys=tuple(str(key) for key in keys),
        created_at=from_us(created_at),
    )


def _dataset_conditions(dataset_filter: DatasetFilter) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    for column in ("org", "project", "domain", "name", "version"):
        value = getattr(dataset_filter, column)
        if value is not None:
            conditions.append(f"d.{column} = ?")
            params.append(value)
    return conditions, params


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)}" if conditions else ""


def _order(page: Page, *columns: str) -> str:
    direction = "DESC" if page.descending else "ASC"
    return "ORDER BY " + ", ".join(f"{column} {direction}" for column in columns)


def _check_page(page: Page) -> None:
    if page.offset < 0:
        raise InvalidArgumentError("must not be negative", field="offset")
    if page.limit < 0:
        raise InvalidArgumentError("must not be negative", field="limit")


class DatacatalogTables(ABC):
    """The :class:`~taskcache.repositories.datacatalog_base.DatacatalogRepository` methods,
    over the connections a backend subclass provides.

    A subclass implements :meth:`_dc_read` (a connection for one or more reads),
    :meth:`_dc_write` (a connection inside one transaction, committed on success) and
    :meth:`_dc_sql` (rewrites ``?`` markers into its driver's); it may override
    :meth:`_dc_snapshot` with a cheaper read-only transaction.
    """

    @abstractmethod
    def _dc_read(self) -> AbstractContextManager[Any]:
        """A connection for one or more reads."""

    @abstractmethod
    def _dc_write(self) -> AbstractContextManager[Any]:
        """A connection inside one transaction, committed on success."""

    def _dc_snapshot(self) -> AbstractContextManager[Any]:
        """A connection whose reads see one snapshot; by default a write transaction."""
        return self._dc_write()

    def _dc_sql(self, statement: str) -> str:
        return statement

    def _run(self, conn: _Connection, statement: str, params: Sequence[Any] = ()) -> _Cursor:
        cursor: _Cursor = conn.execute(self._dc_sql(statement), tuple(params))
        return cursor

    # --- datasets ---------------------------------------------------------------------------

    def create_dataset(self, row: DatasetRow) -> bool:
        """Insert ``row`` unless its key or UUID is taken; return whether it was inserted."""
        key = row.key
        params = (
            key.org,
            key.project,
            key.domain,
            key.name,
            key.version,
            row.uuid,
            row.metadata,
            json.dumps(list(row.partition_keys)),
            to_us(row.created_at, "created_at"),
        )
        with self._dc_write() as conn:
            cursor = self._run(
                conn,
                """
                INSERT INTO datacatalog_datasets
                    (org, project, domain, name, version, uuid, metadata, partition_keys,
                     created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT DO NOTHING
                """,
                params,
            )
            return cursor.rowcount > 0

    def get_dataset(self, key: DatasetKey, uuid: str | None = None) -> DatasetRow | None:
        """Return the dataset named ``key`` (and having ``uuid``, if given), or None."""
        conditions = [
            "d.org = ?",
            "d.project = ?",
            "d.domain = ?",
            "d.name = ?",
            "d.version = ?",
        ]
        params: list[Any] = [key.org, key.project, key.domain, key.name, key.version]
        if uuid:
            conditions.append("d.uuid = ?")
            params.append(uuid)
        with self._dc_read() as conn:
            found = self._run(
                conn,
                f"SELECT {_DATASET_COLUMNS} FROM datacatalog_datasets d {_where(conditions)}",
                params,
            ).fetchone()
        return None if found is None else _dataset_from(found)

    def list_datasets(self, dataset_filter: DatasetFilter, page: Page) -> list[DatasetRow]:
        """Return one page of matching datasets by creation time (ties by UUID)."""
        _check_page(page)
        conditions, params = _dataset_conditions(dataset_filter)
        statement = f"""
            SELECT {_DATASET_COLUMNS} FROM datacatalog_datasets d {_where(conditions)}
            {_order(page, "d.created_at", "d.uuid")} LIMIT ? OFFSET ?
        """
        with self._dc_read() as conn:
            rows = self._run(conn, statement, (*params, page.limit, page.offset)).fetchall()
        return [_dataset_from(row) for row in rows]

    # --- artifacts --------------------------------------------------------------------------

    def create_artifact(self, row: ArtifactRow) -> bool:
        """Insert ``row`` with its data and partitions unless its id is taken in its
        dataset; return whether it was inserted. The insert decides; the rest follows it in
        the same transaction.
        """
        dataset_uuid, artifact_id = row.dataset.uuid, row.artifact_id
        with self._dc_write() as conn:
            cursor = self._run(
                conn,
                """
                INSERT INTO datacatalog_artifacts (dataset_uuid, artifact_id, metadata, created_at)
                VALUES (?, ?, ?, ?)
                ON CONFLICT DO NOTHING
                """,
                (dataset_uuid, artifact_id, row.metadata, to_us(row.created_at, "created_at")),
            )
            if cursor.rowcount == 0:
                return False
            self._insert_data(conn, ArtifactRef(dataset_uuid, artifact_id), row.data)
            for position, (key, value) in enumerate(row.partitions):
                self._run(
                    conn,
                    """
                    INSERT INTO datacatalog_partitions
                        (dataset_uuid, artifact_id, position, key, value)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                    (dataset_uuid, artifact_id, position, key, value),
                )
        return True

    def _insert_data(
        self, conn: _Connection, ref: ArtifactRef, data: Sequence[ArtifactDatum]
    ) -> None:
        for position, datum in enumerate(data):
            self._run(
                conn,
                """
                INSERT INTO datacatalog_artifact_data
                    (dataset_uuid, artifact_id, name, position, literal, uri)
                VALUES (?, ?, ?, ?, ?, ?)
                """,
                (ref.dataset_uuid, ref.artifact_id, datum.name, position, datum.literal, datum.uri),
            )

    def _load(self, conn: _Connection, heads: Sequence[Sequence[Any]]) -> list[ArtifactRow]:
        """Return the artifacts whose :data:`_ARTIFACT_SELECT` rows are ``heads``, with their
        data, partitions and tags (three batched reads on ``conn``).
        """
        if not heads:
            return []
        refs = [(head[0], head[1]) for head in heads]
        values = ", ".join("(?, ?)" for _ in refs)
        flat = [part for ref in refs for part in ref]
        where = f"WHERE (dataset_uuid, artifact_id) IN (VALUES {values})"
        data: dict[tuple[str, str], list[ArtifactDatum]] = {ref: [] for ref in refs}
        partitions: dict[tuple[str, str], list[tuple[str, str]]] = {ref: [] for ref in refs}
        tags: dict[tuple[str, str], list[str]] = {ref: [] for ref in refs}
        for uuid, artifact_id, name, literal, uri in self._run(
            conn,
            "SELECT dataset_uuid, artifact_id, name, literal, uri FROM datacatalog_artifact_data "
            f"{where} ORDER BY position",
            flat,
        ).fetchall():
            literal_bytes = None if literal is None else bytes(literal)
            data[(uuid, artifact_id)].append(ArtifactDatum(name, literal_bytes, uri))
        for uuid, artifact_id, key, value in self._run(
            conn,
            "SELECT dataset_uuid, artifact_id, key, value FROM datacatalog_partitions "
            f"{where} ORDER BY position",
            flat,
        ).fetchall():
            partitions[(uuid, artifact_id)].append((key, value))
        for uuid, artifact_id, tag_name in self._run(
            conn,
            "SELECT dataset_uuid, artifact_id, tag_name FROM datacatalog_tags "
            f"{where} ORDER BY created_at, tag_name",
            flat,
        ).fetchall():
            tags[(uuid, artifact_id)].append(tag_name)
        rows = []
        for head in heads:
            ref = (head[0], head[1])
            rows.append(
                ArtifactRow(
                    dataset=_dataset_from(head[4:]),
                    artifact_id=head[1],
                    metadata=bytes(head[2]),
                    partitions=tuple(partitions[ref]),
                    data=tuple(data[ref]),
                    tags=tuple(tags[ref]),
                    created_at=from_us(head[3]),
                )
            )
        return rows

    def _select_artifacts(self, statement: str, params: Sequence[Any]) -> list[ArtifactRow]:
        # One transaction, so the artifact rows and their details are one snapshot.
        with self._dc_snapshot() as conn:
            heads = self._run(conn, statement, params).fetchall()
            return self._load(conn, heads)

    def get_artifact(self, ref: ArtifactRef) -> ArtifactRow | None:
        """Return the artifact ``ref`` names, or None."""
        found = self._select_artifacts(
            f"{_ARTIFACT_SELECT} WHERE a.dataset_uuid = ? AND a.artifact_id = ?",
            (ref.dataset_uuid, ref.artifact_id),
        )
        return found[0] if found else None

    def find_artifact(self, artifact_id: str) -> ArtifactRow | None:
        """Return the newest artifact with id ``artifact_id`` in any dataset, or None."""
        found = self._select_artifacts(
            f"{_ARTIFACT_SELECT} WHERE a.artifact_id = ? "
            "ORDER BY a.created_at DESC, a.dataset_uuid LIMIT 1",
            (artifact_id,),
        )
        return found[0] if found else None

    def get_tagged_artifact(self, dataset_uuid: str, tag_name: str) -> ArtifactRow | None:
        """Return the artifact the dataset's tag ``tag_name`` names, or None."""
        found = self._select_artifacts(
            f"""{_ARTIFACT_SELECT}
            JOIN datacatalog_tags t
              ON t.dataset_uuid = a.dataset_uuid AND t.artifact_id = a.artifact_id
            WHERE t.dataset_uuid = ? AND t.tag_name = ?
            """,
            (dataset_uuid, tag_name),
        )
        return found[0] if found else None

    def add_tag(self, ref: ArtifactRef, tag_name: str, created_at: datetime) -> TagOutcome:
        """Create the tag naming ``ref`` unless the tag exists or the artifact does not.

        One statement decides: it inserts only if the artifact exists, and does nothing if
        the tag does.
        """
        with self._dc_write() as conn:
            cursor = self._run(
                conn,
                f"""
                INSERT INTO datacatalog_tags (dataset_uuid, tag_name, artifact_id, created_at)
                SELECT dataset_uuid, ?, artifact_id, ? FROM datacatalog_artifacts
                WHERE {_ARTIFACT_KEY}
                ON CONFLICT DO NOTHING
                """,
                (tag_name, to_us(created_at, "created_at"), ref.dataset_uuid, ref.artifact_id),
            )
            if cursor.rowcount > 0:
                return TagOutcome.ADDED
            exists = self._run(
                conn,
                f"SELECT 1 FROM datacatalog_artifacts WHERE {_ARTIFACT_KEY}",
                (ref.dataset_uuid, ref.artifact_id),
            ).fetchone()
        return TagOutcome.EXISTS if exists is not None else TagOutcome.NO_ARTIFACT

    def list_artifacts(
        self, dataset_uuid: str, artifact_filter: ArtifactFilter, page: Page
    ) -> list[ArtifactRow]:
        """Return one page of the dataset's matching artifacts by creation time (ties by id)."""
        _check_page(page)
        conditions = ["a.dataset_uuid = ?"]
        params: list[Any] = [dataset_uuid]
        for key, value in artifact_filter.partitions:
            conditions.append(
                """EXISTS (SELECT 1 FROM datacatalog_partitions p
                   WHERE p.dataset_uuid = a.dataset_uuid AND p.artifact_id = a.artifact_id
                     AND p.key = ? AND p.value = ?)"""
            )
            params.extend((key, value))
        for tag_name in artifact_filter.tag_names:
            conditions.append(
                """EXISTS (SELECT 1 FROM datacatalog_tags t
                   WHERE t.dataset_uuid = a.dataset_uuid AND t.artifact_id = a.artifact_id
                     AND t.tag_name = ?)"""
            )
            params.append(tag_name)
        for artifact_id in artifact_filter.artifact_ids:
            conditions.append("a.artifact_id = ?")
            params.append(artifact_id)
        return self._select_artifacts(
            f"""{_ARTIFACT_SELECT} {_where(conditions)}
            {_order(page, "a.created_at", "a.artifact_id")} LIMIT ? OFFSET ?""",
            (*params, page.limit, page.offset),
        )

    def update_artifact(
        self, ref: ArtifactRef, metadata: bytes, data: Sequence[ArtifactDatum]
    ) -> tuple[ArtifactDatum, ...] | None:
        """Replace the artifact's metadata and data; return its former data, or None if
        there is no such artifact. The update of the artifact row decides (and, on
        PostgreSQL, locks it against a concurrent update until the data is replaced).
        """
        key = (ref.dataset_uuid, ref.artifact_id)
        with self._dc_write() as conn:
            cursor = self._run(
                conn,
                f"UPDATE datacatalog_artifacts SET metadata = ? WHERE {_ARTIFACT_KEY}",
                (metadata, *key),
            )
            if cursor.rowcount == 0:
                return None
            former = self._run(
                conn,
                "SELECT name, literal, uri FROM datacatalog_artifact_data "
                f"WHERE {_ARTIFACT_KEY} ORDER BY position",
                key,
            ).fetchall()
            self._run(conn, f"DELETE FROM datacatalog_artifact_data WHERE {_ARTIFACT_KEY}", key)
            self._insert_data(conn, ref, data)
        return tuple(
            ArtifactDatum(name, None if literal is None else bytes(literal), uri)
            for name, literal, uri in former
        )

    # --- operators --------------------------------------------------------------------------

    def list_all_artifacts(
        self, dataset_filter: DatasetFilter, created_before: datetime | None, page: Page
    ) -> list[ArtifactRow]:
        """Return one page of the artifacts of matching datasets created strictly before
        ``created_before`` (None: any time), by creation time (ties by dataset UUID, id).
        """
        _check_page(page)
        conditions, params = _dataset_conditions(dataset_filter)
        if created_before is not None:
            conditions.append("a.created_at < ?")
            params.append(to_us(created_before, "created_before"))
        return self._select_artifacts(
            f"""{_ARTIFACT_SELECT} {_where(conditions)}
            {_order(page, "a.created_at", "a.dataset_uuid", "a.artifact_id")}
            LIMIT ? OFFSET ?""",
            (*params, page.limit, page.offset),
        )

    def delete_artifacts(self, refs: Sequence[ArtifactRef]) -> list[ArtifactRow]:
        """Delete the artifacts ``refs`` name with everything that hangs off them; return
        the deleted rows, in one transaction.
        """
        deleted: list[ArtifactRow] = []
        if not refs:
            return deleted
        with self._dc_write() as conn:
            for ref in refs:
                key = (ref.dataset_uuid, ref.artifact_id)
                heads = self._run(
                    conn,
                    f"{_ARTIFACT_SELECT} WHERE a.dataset_uuid = ? AND a.artifact_id = ?",
                    key,
                ).fetchall()
                if not heads:
                    continue
                deleted.extend(self._load(conn, heads))
                for table in (
                    "datacatalog_artifact_data",
                    "datacatalog_partitions",
                    "datacatalog_tags",
                    "datacatalog_artifacts",
                ):
                    self._run(conn, f"DELETE FROM {table} WHERE {_ARTIFACT_KEY}", key)
        return deleted

    def datacatalog_stats(self) -> DatacatalogStats:
        """Return operator totals from one read snapshot."""
        with self._dc_snapshot() as conn:
            found = self._run(
                conn,
                """
                SELECT (SELECT count(*) FROM datacatalog_datasets),
                       (SELECT count(*) FROM datacatalog_artifacts),
                       (SELECT count(*) FROM datacatalog_tags),
                       (SELECT coalesce(sum(length(literal)), 0) FROM datacatalog_artifact_data),
                       (SELECT count(uri) FROM datacatalog_artifact_data)
                """,
            ).fetchone()
        datasets, artifacts, tags, inline_bytes, blob_values = found
        return DatacatalogStats(
            datasets=int(datasets),
            artifacts=int(artifacts),
            tags=int(tags),
            inline_bytes=int(inline_bytes),
            blob_values=int(blob_values),
        )
