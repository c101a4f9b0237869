"""Test certificates made with the ``openssl`` CLI: self-signed ones (which are CAs too) and
leaves signed by one of them.

gRPC accepts a self-signed certificate as a server's identity and as the ``ca_file`` that
trusts it; rustls (under the Connect client) refuses a CA used as an end entity, so a server
reached over https needs a leaf signed by a CA.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ci_policy import skip_or_fail

_SUBJECT_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1"


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def _openssl(*arguments: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        skip_or_fail(
            "NO OPENSSL: the TLS tests need the openssl CLI to make a certificate; "
            "install it (Debian/Ubuntu: apt-get install openssl; macOS: brew install openssl)"
        )
    subprocess.run([openssl, *arguments], check=True, capture_output=True, timeout=30)


def make_certificate(
    folder: Path, name: str = "cert", *, issuer: Certificate | None = None
) -> Certificate:
    """Write ``<name>.pem`` and ``<name>-key.pem`` (P-256, valid one day, CN localhost, SANs
    localhost and 127.0.0.1) in ``folder``: self-signed, or a leaf signed by ``issuer``.
    Skip (or fail under CI policy) without openssl.
    """
    made = Certificate(folder / f"{name}.pem", folder / f"{name}-key.pem")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    new_key += ["-subj", "/CN=localhost", "-keyout", str(made.key)]
    if issuer is None:
        _openssl(
            "req",
            "-x509",
            *new_key,
            "-days",
            "1",
            "-addext",
            _SUBJECT_NAMES,
            "-out",
            str(made.cert),
        )
        return made
    request = folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    extensions.write_text(f"basicConstraints=CA:FALSE\n{_SUBJECT_NAMES}\n")
    _openssl("req", "-new", *new_key, "-out", str(request))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(issuer.cert),
        "-CAkey",
        str(issuer.key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(extensions),
        "-out",
        str(made.cert),
    )
    return made
