"""The DataCatalog repository against a model: random sequences of creates, tags, updates and
deletions keep Flyte's invariants (an artifact id and a tag are created once; a tag never
moves; listings page without gaps or repeats).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskcache.repositories.datacatalog_base import (
    ArtifactDatum,
    ArtifactFilter,
    ArtifactRef,
    ArtifactRow,
    DatasetKey,
    DatasetRow,
    Page,
    TagOutcome,
)
from taskcache.repositories.datacatalog_sqlite import SqliteDatacatalogRepository

START = datetime(2026, 1, 1, tzinfo=UTC)
IDS = st.sampled_from(["a", "b", "c", "d"])
TAGS = st.sampled_from(["t1", "t2", "t3"])
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("create"), IDS, st.integers(0, 9)),
        st.tuples(st.just("tag"), IDS, TAGS),
        st.tuples(st.just("update"), IDS, st.integers(0, 9)),
        st.tuples(st.just("delete"), IDS, st.just(0)),
    ),
    max_size=30,
)


def _value(number: int) -> tuple[ArtifactDatum, ...]:
    return (ArtifactDatum("o", str(number).encode(), None),)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_ids_and_tags_are_created_once_and_tags_never_move(
    operations: list[tuple[str, str, object]],
) -> None:
    repository = SqliteDatacatalogRepository(None)
    dataset = DatasetRow(DatasetKey("", "p", "d", "flyte_task-t", "v"), "u", b"", (), START)
    assert repository.create_dataset(dataset)
    assert not repository.create_dataset(dataset)
    artifacts: dict[str, int] = {}  # id -> its value
    tags: dict[str, str] = {}  # tag -> artifact id
    for step, (kind, artifact_id, argument) in enumerate(operations):
        ref = ArtifactRef("u", artifact_id)
        if kind == "create":
            assert isinstance(argument, int)
            row = ArtifactRow(
                dataset, artifact_id, b"", (), _value(argument), (), START + timedelta(seconds=step)
            )
            assert repository.create_artifact(row) == (artifact_id not in artifacts)
            artifacts.setdefault(artifact_id, argument)
        elif kind == "tag":
            assert isinstance(argument, str)
            outcome = repository.add_tag(ref, argument, START)
            # As Flyte's AddTag: a missing artifact first, then an existing tag.
            if artifact_id not in artifacts:
                expected = TagOutcome.NO_ARTIFACT
            elif argument in tags:
                expected = TagOutcome.EXISTS
            else:
                expected = TagOutcome.ADDED
                tags[argument] = artifact_id
            assert outcome is expected
        elif kind == "update":
            assert isinstance(argument, int)
            former = repository.update_artifact(ref, b"m", _value(argument))
            if artifact_id in artifacts:
                assert former == _value(artifacts[artifact_id])
                artifacts[artifact_id] = argument
            else:
                assert former is None
        else:
            deleted = repository.delete_artifacts([ref])
            assert [row.artifact_id for row in deleted] == (
                [artifact_id] if artifact_id in artifacts else []
            )
            artifacts.pop(artifact_id, None)
            tags = {tag: target for tag, target in tags.items() if target != artifact_id}
    for tag, artifact_id in tags.items():
        found = repository.get_tagged_artifact("u", tag)
        assert found is not None and found.artifact_id == artifact_id
        assert found.data == _value(artifacts[artifact_id])
    # Pages of any size cover every artifact exactly once, oldest first.
    for size in (1, 2, 3):
        listed = [
            row.artifact_id
            for offset in range(0, len(artifacts) + 1, size)
            for row in repository.list_artifacts(
                "u", ArtifactFilter(), Page(offset, size, descending=False)
            )
        ]
        assert sorted(listed) == sorted(artifacts) and len(set(listed)) == len(listed)
    repository.close()
