"""What a plain ``pip install taskcache`` gives and what its extras add.

* ``import taskcache`` stays light: protobuf and the Flyte messages, the hashing core, the
  clients and repositories, fsspec, gRPC, the server stack, the CLI libraries and the
  Python-value converters are not imported until used, and ``taskcache.hashing`` builds its
  route on the first digest (a fresh interpreter's ``sys.modules``; the time itself is
  measured in the benchmarks, never asserted);
* the package metadata puts the server stack in the base install and offers the extras
  ``postgres``, ``s3``, ``gcs``, ``azure`` and ``all``;
* a missing optional package is one error line naming the extra, from the Python API and
  from the CLI (no traceback).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import taskcache
from taskcache.cli import main
from taskcache.extras import EXTRA_PACKAGES, STORAGE_EXTRAS, storage_extra
from taskcache.hashing.routes import compiled_unavailable_reason
from taskcache.storage import BlobStore, read_blob

ROOT = Path(__file__).resolve().parent.parent
# Imported by `import taskcache` only if some module pulls them in eagerly.
HEAVY = (
    "fsspec",
    "grpc",
    "connectrpc",
    "uvicorn",
    "click",
    "rich",
    "mashumaro",
    "platformdirs",
    "psycopg",
    "taskcache.values",
    "taskcache.server",
    # Only async code needs these (and the DataCatalog repositories, which bring them).
    "asyncio",
    "taskcache.repositories.datacatalog_base",
    # Only what a name exported by the package needs, on first access.
    "google.protobuf",
    "flyteidl",
    "flyteidl2",
    "sqlite3",
    "taskcache.errors",
    "taskcache.hashing",
    "taskcache.clients",
    "taskcache.targets",
)
# What the hashing route is built from: imported by the first digest, not with the package.
HASHING_ROUTE = (
    "taskcache.hashing.compiled",
    "taskcache.hashing.plans",
    "taskcache.hashing._core",
    "taskcache.hashing.direct",
    "taskcache.hashing.hashify",
)


def fresh_modules(code: str) -> set[str]:
    """Return the modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={"TASKCACHE_HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    return set(json.loads(result.stdout))


def test_import_taskcache_leaves_the_heavy_modules_unimported() -> None:
    loaded = fresh_modules("import taskcache")
    assert "taskcache" in loaded
    assert sorted(name for name in HEAVY if name in loaded) == []


def test_the_hashing_route_is_built_by_the_first_digest() -> None:
    loaded = fresh_modules("from taskcache import hashing")
    assert sorted(name for name in HASHING_ROUTE if name in loaded) == []
    hashed = fresh_modules(
        "from flyteidl2.core import literals_pb2\n"
        "from taskcache import hashing\n"
        "hashing.hash_literal_map(literals_pb2.LiteralMap())"
    )
    compiled = compiled_unavailable_reason() is None
    built = {"taskcache.hashing.compiled", "taskcache.hashing.plans", "taskcache.hashing._core"}
    assert built <= hashed if compiled else "taskcache.hashing.direct" in hashed


def test_mashumaro_is_imported_by_the_first_dataclass_conversion() -> None:
    assert "mashumaro" not in fresh_modules("from taskcache import cached, values")
    converted = fresh_modules(
        "import dataclasses\n"
        "from taskcache import values\n"
        "Point = dataclasses.make_dataclass('Point', [('x', int)])\n"
        "assert values.from_literal(values.to_literal(Point(3), Point), Point) == Point(3)"
    )
    assert "mashumaro" in converted


def test_opening_an_embedded_catalog_needs_no_remote_or_server_stack() -> None:
    loaded = fresh_modules("import taskcache; taskcache.open('memory://').close()")
    assert {"grpc", "connectrpc", "uvicorn", "taskcache.server"}.isdisjoint(loaded)


# What a first use loads only if some module on its way pulls them in eagerly.
FIRST_USE_HEAVY = ("asyncio", "concurrent.futures", "fsspec", "grpc", "connectrpc", "uvicorn")
FIRST_USE = "from taskcache import Key, cached, open"


def test_the_first_use_import_leaves_async_storage_and_remote_stacks_unimported() -> None:
    loaded = fresh_modules(FIRST_USE)
    assert {"taskcache.model", "taskcache.decorator", "taskcache.targets"} <= loaded
    assert sorted(name for name in FIRST_USE_HEAVY if name in loaded) == []


def test_a_local_catalog_put_and_get_need_no_fsspec_nor_asyncio(tmp_path: Path) -> None:
    loaded = fresh_modules(
        f"{FIRST_USE}\n"
        "from flyteidl2.core import identifier_pb2, interface_pb2, literals_pb2\n"
        "task = identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project='p',"
        " domain='d', name='n', version='v')\n"
        "key = Key(task, cache_version='1', typed_interface=interface_pb2.TypedInterface())\n"
        "outputs = literals_pb2.LiteralMap(literals={'o': literals_pb2.Literal("
        "scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(integer=3)))})\n"
        f"with open({str(tmp_path)!r}, inline_max_bytes=0) as catalog:\n"
        "    catalog.put(key, outputs)\n"
        "    assert catalog.get(key).outputs.read() == outputs\n"
    )
    assert sorted(name for name in FIRST_USE_HEAVY if name in loaded) == []
    assert list(tmp_path.rglob("outputs.pb"))  # the blob went through the local store


def test_the_first_async_function_made_binds_asyncio() -> None:
    decorated = fresh_modules(f"{FIRST_USE}\n@cached\nasync def f(x: int) -> int:\n    return x")
    assert "asyncio" in decorated
    # Unpickling (cloudpickle sends functions by value) makes one without __init__.
    unpickled = fresh_modules(
        "import copyreg\n"
        "from taskcache.decorator import AsyncCachedFunction\n"
        "copyreg.__newobj__(AsyncCachedFunction)"
    )
    assert "asyncio" in unpickled


def test_the_lazy_names_are_the_real_ones() -> None:
    from taskcache import errors, hashing, model, targets, values
    from taskcache.decorator import cached

    assert taskcache.cached is cached
    assert taskcache.values is values
    assert taskcache.hashing is hashing
    assert taskcache.open is targets.open_catalog
    assert taskcache.open_async is targets.open_async_catalog
    assert taskcache.Key is model.Key
    assert taskcache.NotFoundError is errors.NotFoundError
    assert set(taskcache.__all__) | {"hashing"} <= set(dir(taskcache))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = taskcache.nothing  # type: ignore[attr-defined]


def project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    table: dict[str, object] = data["project"]
    return table


def names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {str(item).split(">")[0].split("[")[0].split("<")[0].strip() for item in requirements}


def test_the_base_install_serves() -> None:
    base = names(project()["dependencies"])
    server = {"uvicorn", "grpcio-health-checking", "grpcio-reflection", "prometheus-client"}
    assert server | {"protovalidate", "opentelemetry-sdk", "fsspec", "grpcio"} <= base
    # What serve imports at start-up must be installed by the base requirements alone.
    loaded = fresh_modules("from taskcache.server import run_server")
    assert {"uvicorn", "grpc_health", "grpc_reflection", "prometheus_client"} <= loaded


def test_extras_name_each_backend_and_all_has_every_one() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert names(extras["s3"]) == {"s3fs"}
    assert names(extras["gcs"]) == {"gcsfs"}
    assert names(extras["azure"]) == {"adlfs"}
    assert {"psycopg", "psycopg-pool"} <= names(extras["postgres"])
    (everything,) = extras["all"]
    for extra in EXTRA_PACKAGES:
        assert extra in everything
    assert set(STORAGE_EXTRAS.values()) <= set(EXTRA_PACKAGES)
    # The Makefile's install keeps working with these names.
    assert "'.[dev,all,bench]'" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("s3://bucket/blobs", "s3"),
        ("S3://bucket", "s3"),
        ("gs://bucket", "gcs"),
        ("abfs://container/x", "azure"),
        ("az://container", "azure"),
        ("/srv/blobs", None),
        ("memory://x", None),
        ("file:///srv", None),
    ],
)
def test_storage_urls_map_to_their_extra(url: str, extra: str | None) -> None:
    assert storage_extra(url) == extra


@pytest.fixture
def without_object_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make s3fs, gcsfs and adlfs unimportable, as in a base install."""
    # fsspec's package attribute `registry` is a read-only view; its module holds the dict.
    loaded = importlib.import_module("fsspec.registry")._registry
    for package in ("s3fs", "gcsfs", "adlfs"):
        monkeypatch.setitem(sys.modules, package, None)
    # fsspec keeps each filesystem class it has loaded: forget the object stores'.
    for protocol in [name for name in loaded if name in STORAGE_EXTRAS]:
        monkeypatch.delitem(loaded, protocol)


@pytest.mark.usefixtures("without_object_stores")
@pytest.mark.parametrize(
    ("url", "extra"), [("s3://bucket/blobs", "s3"), ("gs://b/x", "gcs"), ("abfs://c/x", "azure")]
)
def test_a_missing_object_store_is_one_line_naming_the_extra(url: str, extra: str) -> None:
    hint = f"pip install 'taskcache[{extra}]'"
    with pytest.raises(taskcache.InvalidArgumentError, match=rf"^storage: .*{hint[:-9]}") as raised:
        BlobStore(url)
    assert raised.value.message.endswith(hint)
    assert "\n" not in raised.value.message
    with pytest.raises(taskcache.InvalidArgumentError, match=r"taskcache\["):
        taskcache.open("memory://", storage=url)
    with pytest.raises(taskcache.InvalidArgumentError, match=r"taskcache\["):
        read_blob(f"{url}/outputs.pb")


@pytest.mark.usefixtures("without_object_stores")
def test_the_cli_prints_the_missing_extra_without_a_traceback(tmp_path: Path) -> None:
    flags = ["--database", str(tmp_path), "--storage", "s3://bucket", "--delete-blobs"]
    result = CliRunner().invoke(main, ["gc", *flags, "--older-than", "1d"])
    assert result.exit_code == 2
    assert "pip install 'taskcache[s3]'" in result.output
    assert "Traceback" not in result.output


def test_a_missing_psycopg_in_the_cli_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in ("taskcache.repositories.postgres", "taskcache.repositories.postgres_async"):
        monkeypatch.setitem(sys.modules, module, None)
    result = CliRunner().invoke(main, ["stats", "--database", "postgresql://u@127.0.0.1/db"])
    assert result.exit_code == 2
    assert "pip install 'taskcache[postgres]'" in result.output
    assert "Traceback" not in result.output
