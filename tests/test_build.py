"""The package builds from source without a C compiler, as pure Python.

``pip`` turns an sdist (or a source tree) into a wheel through setup.py, whose build of the
compiled hashing core is optional: with no working compiler the build warns, the wheel holds
no extension, and the installed package hashes on the pure-Python route, giving the same keys
as the compiled one this checkout was built with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from flyteidl2.core import literals_pb2

from taskcache import hashing

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
from flyteidl2.core import literals_pb2
import taskcache
from taskcache import hashing
literal_map = literals_pb2.LiteralMap()
literal_map.literals["a"].scalar.primitive.integer = 7
print(taskcache.__file__)
print(hashing.hash_literal_map(literal_map))
print(hashing.hashing_route())
"""


@pytest.mark.timeout(600)
def test_a_build_without_a_compiler_installs_the_pure_python_route(tmp_path: Path) -> None:
    # `false` as the compiler (and linker): every compile fails, as on a machine without gcc.
    environment = dict(os.environ, CC="false", LDSHARED="false")
    environment.pop("TASKCACHE_HASHING", None)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=540,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "taskcache installs with the pure-Python hashing route" in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("taskcache-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "taskcache/hashing/__init__.py" in names
    assert not [name for name in names if name.endswith((".so", ".pyd"))]

    target = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), wheel],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    # The installed copy comes first on the path (the dependencies come from this
    # environment), and its route is chosen automatically.
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=dict(environment, PYTHONPATH=str(target)),
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    location, key, route = probe.stdout.split()
    assert Path(location).is_relative_to(target)
    assert route == "python"

    literal_map = literals_pb2.LiteralMap()
    literal_map.literals["a"].scalar.primitive.integer = 7
    assert key == hashing.hash_literal_map(literal_map)
