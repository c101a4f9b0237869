"""Build of taskcache's optional C extension, the compiled hashing core.

Metadata lives in pyproject.toml; this file only adds ``taskcache.hashing._core``. It links
OpenSSL's libcrypto for SHA-256 when the compiler finds <openssl/sha.h>, and uses the bundled
portable SHA-256 otherwise. A failed compile (no compiler, no Python headers) warns and
installs the pure-Python package, which works the same, only slower.

``TASKCACHE_BUILD_EXTENSION=0`` skips the extension; ``TASKCACHE_BUILD_OPENSSL=0`` forces the
bundled SHA-256.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_SOURCE_DIRECTORY = Path("src") / "taskcache" / "hashing"


class OptionalBuildExt(build_ext):
    """build_ext that treats the extension as optional and probes for libcrypto."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any build failure means: pure Python
            _warn(f"cannot build the compiled hashing core ({error})")

    def build_extension(self, ext: Any) -> None:
        if os.environ.get("TASKCACHE_BUILD_OPENSSL", "1") != "0" and self._has_libcrypto():
            ext.define_macros.append(("TASKCACHE_OPENSSL", "1"))
            ext.libraries.append("crypto")
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001 - as in run()
            _warn(f"cannot compile {ext.name} ({error})")

    def _has_libcrypto(self) -> bool:
        with tempfile.TemporaryDirectory() as directory:
            probe = Path(directory) / "probe.c"
            probe.write_text(
                "#include <openssl/sha.h>\n"
                "int main(void) { unsigned char d[32]; SHA256((const unsigned char *)\"\", 0, d);"
                " return d[0] == 7; }\n"
            )
            try:
                objects = self.compiler.compile([str(probe)], output_dir=directory)
                self.compiler.link_executable(
                    objects, "probe", output_dir=directory, libraries=["crypto"]
                )
            except Exception:  # noqa: BLE001 - no header or no library: the bundled SHA-256
                return False
        return True


def _warn(message: str) -> None:
    print(
        f"WARNING: {message}; taskcache installs with the pure-Python hashing route.",
        file=sys.stderr,
    )


def _extensions() -> list[Extension]:
    if os.environ.get("TASKCACHE_BUILD_EXTENSION", "1") == "0":
        return []
    return [
        Extension(
            "taskcache.hashing._core",
            sources=[str(_SOURCE_DIRECTORY / "_core.c")],
            depends=[str(_SOURCE_DIRECTORY / "_sha256_portable.h")],
            extra_compile_args=["-O3", "-std=c11"] if os.name != "nt" else [],
            optional=True,
        )
    ]


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
