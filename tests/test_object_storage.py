"""Blobs on S3 end to end, against a local S3 API server (moto's server mode on loopback, one
per session, as s3fs's own test suite runs it); GCS and Azure to construction and URI handling.

S3: the embedded client with ``storage="s3://bucket/prefix"``, a remote client writing URIs
that ``taskcache serve --storage s3://... --storage-options`` deletes (Put with
``delete_blob``; plus a per-put TTL on that SQLite-backed server), ``taskcache gc
--delete-blobs``, and a deleted object reading as a miss that repairs the entry. Credentials
come from the environment (``AWS_*``), the endpoint from the storage options, as a user would
configure them. Without moto (or s3fs) the S3 tests skip loudly, and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import taskcache
from builders import int_map, make_key
from ci_policy import skip_or_fail
from local_s3 import AWS_ENVIRONMENT, S3
from server_process import ServerProcess
from taskcache import NotFoundError
from taskcache.cli import main
from taskcache.manager import CacheManager, NewEntry
from taskcache.repositories.base import Scope
from taskcache.repositories.sqlite import SqliteRepository
from taskcache.storage import BlobStore


def test_embedded_client_stores_and_reads_blobs_on_s3(s3: S3, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    storage = f"s3://{bucket}/cache"
    key = make_key(7, name="s3.embedded")
    with taskcache.open(
        tmp_path / "catalog.db", storage=storage, storage_options=s3.options, inline_max_bytes=0
    ) as client:
        client.put(key, int_map(y=49))
        [written] = s3.objects(bucket)
        assert written.startswith(f"{bucket}/cache/") and written.endswith("/outputs.pb")
        entry = client.get(key)
        assert entry.outputs.read() == int_map(y=49)
        assert entry.outputs.uri == f"s3://{written}"
        # Update replaces the blob; the replaced one is deleted (it lies under the root).
        client.update(key, int_map(y=50))
        [rewritten] = s3.objects(bucket)
        assert rewritten != written
        assert client.get(key).outputs.read() == int_map(y=50)
        client.delete(key)
        assert s3.objects(bucket) == []


def test_a_deleted_s3_object_reads_as_a_miss_and_the_entry_is_repaired(
    s3: S3, tmp_path: Path
) -> None:
    bucket = s3.new_bucket()
    key = make_key(3, name="s3.dangling")
    with taskcache.open(
        tmp_path / "catalog.db",
        storage=f"s3://{bucket}/cache",
        storage_options=s3.options,
        inline_max_bytes=0,
    ) as client:
        client.put(key, int_map(y=9))
        [written] = s3.objects(bucket)
        s3.filesystem().rm_file(written)
        with pytest.raises(NotFoundError, match="vanished"):
            client.get(key)
        assert list(client.entries()) == []  # repaired: the dangling entry is gone
        client.put(key, int_map(y=9))  # so a create-only put repopulates it
        assert client.get(key).outputs.read() == int_map(y=9)


@pytest.fixture
def s3_server(s3: S3, tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    bucket = s3.new_bucket()
    storage = f"s3://{bucket}/cache"
    server = ServerProcess(
        home=tmp_path / "home",
        log_path=tmp_path / "server.log",
        database=str(tmp_path / "served.db"),
        storage=storage,
        extra_args=["--storage-options", json.dumps(s3.options)],
        extra_env=AWS_ENVIRONMENT,
    )
    with server:
        yield server, bucket


def test_remote_client_writes_s3_uris_the_server_reads_and_deletes(
    s3: S3, s3_server: tuple[ServerProcess, str]
) -> None:
    server, bucket = s3_server
    key = make_key(5, name="s3.remote")
    with taskcache.open(
        server.http_url,
        storage=f"s3://{bucket}/cache",
        storage_options=s3.options,
        inline_max_bytes=0,
    ) as client:
        client.put(key, int_map(y=25))
        [first] = s3.objects(bucket)
        assert client.get(key).outputs.read() == int_map(y=25)
        # The update's Put carries delete_blob: the server deletes the replaced object,
        # which lies under its --storage, through its own storage options.
        client.update(key, int_map(y=26))
        [second] = s3.objects(bucket)
        assert second != first
        assert client.get(key).outputs.read() == int_map(y=26)
        # A vanished object is a miss, and the client's conditional delete repairs the entry.
        s3.filesystem().rm_file(second)
        with pytest.raises(NotFoundError):
            client.get(key)
        client.put(key, int_map(y=26))
        assert client.get(key).outputs.read() == int_map(y=26)
        # A per-put TTL travels with the Put to this SQLite-backed server.
        brief = make_key(6, name="s3.remote")
        client.put(brief, int_map(y=36), ttl=0.2)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get(brief)
            except NotFoundError:
                break
            assert time.monotonic() < deadline, "the entry never expired"
            time.sleep(0.05)


def test_gc_delete_blobs_removes_s3_objects_only_under_the_root(s3: S3, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    database = str(tmp_path / "catalog.db")
    keys = [make_key(x, name="s3.gc") for x in range(3)]
    with taskcache.open(
        database, storage=f"s3://{bucket}/cache", storage_options=s3.options, inline_max_bytes=0
    ) as client:
        for key in keys:
            client.put(key, int_map(y=1), ttl=0.001)
    # An entry pointing outside the root (a sibling prefix sharing its name's start).
    outside = f"{bucket}/cache-evil/outputs.pb"
    s3.filesystem().pipe_file(outside, int_map(y=2).SerializeToString())
    with SqliteRepository(database) as repository:
        CacheManager(repository).put(
            Scope(),
            "outside",
            NewEntry(
                output_uri=f"s3://{outside}",
                output_literals=None,
                source_identifier=b"",
                key_map={},
                ttl=timedelta(milliseconds=1),
            ),
        )
    result = CliRunner().invoke(
        main,
        [
            "gc",
            "--database",
            database,
            "--storage",
            f"s3://{bucket}/cache",
            "--storage-options",
            json.dumps(s3.options),
            "--delete-blobs",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["entries"], summary["blobs_deleted"], summary["blobs_skipped"]) == (4, 3, 1)
    assert s3.objects(bucket) == [outside]


def test_s3_confinement_is_by_whole_segments_and_refuses_unnormalised_keys() -> None:
    try:
        import s3fs  # noqa: F401
    except ImportError as error:
        skip_or_fail(f"s3fs is not installed: {error}")
    store = BlobStore("s3://bucket/prefix", endpoint_url="http://127.0.0.1:9")
    assert store.owns("s3://bucket/prefix/ab/cd/outputs.pb")
    assert store.owns("s3a://bucket/prefix/ab/cd/outputs.pb")
    for uri in (
        "s3://bucket/prefix-evil/x/outputs.pb",  # a sibling prefix, not a sub-folder
        "s3://bucket/prefix",  # the root itself
        "s3://bucket/prefix/../other/outputs.pb",
        "s3://bucket/prefix/a/../b/outputs.pb",  # an S3 key may contain "..": another object
        "s3://bucket/prefix//x/outputs.pb",
        "s3://bucket/prefix/./x/outputs.pb",
        "s3://other-bucket/prefix/x/outputs.pb",
        "gs://bucket/prefix/x/outputs.pb",
        "/bucket/prefix/x/outputs.pb",
    ):
        assert not store.owns(uri), uri
        assert store.owned_spellings(uri) == (), uri
        assert not store.delete(uri), uri


@pytest.mark.parametrize(
    ("root", "options", "aliases", "package"),
    [
        ("gs://bucket/prefix", {"token": "anon"}, ("gs", "gcs"), "gcsfs"),
        (
            "abfs://container/prefix",
            {"account_name": "devstoreaccount1", "anon": True},
            ("abfs", "az"),
            "adlfs",
        ),
    ],
)
def test_gcs_and_azure_roots_build_and_confine_like_s3(
    root: str, options: dict[str, Any], aliases: tuple[str, ...], package: str
) -> None:
    # No emulator is available here: construction and URI handling only (see the README).
    try:
        __import__(package)
    except ImportError as error:
        skip_or_fail(f"{package} is not installed: {error}")
    store = BlobStore(root, **options)
    path = root.split("://", 1)[1]
    for alias in aliases:
        assert store.owns(f"{alias}://{path}/ab/outputs.pb"), alias
    assert not store.owns(f"{aliases[0]}://{path}-evil/ab/outputs.pb")
    assert not store.owns(f"{aliases[0]}://{path}/a/../b/outputs.pb")
    assert not store.owns(f"s3://{path}/ab/outputs.pb")
    spellings = store.owned_spellings(f"{aliases[0]}://{path}/ab/outputs.pb")
    assert f"{aliases[0]}://{path}/ab/outputs.pb" in spellings


def test_storage_options_reach_the_filesystem_and_bad_ones_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="storage_options"):
        taskcache.open(tmp_path / "c.db", storage_options=["endpoint_url"])  # type: ignore[typeddict-item]
    store = BlobStore("memory://taskcache-options", skip_instance_cache=True)
    assert store.storage_options == {"skip_instance_cache": True}
