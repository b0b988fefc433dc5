"""Throwaway TLS certificates for the NATS TLS tests, made with the ``openssl`` command.

A CA, a server certificate for ``127.0.0.1``/``localhost`` and a client certificate it
signed, all PEM files in one directory; strict enough for Python's default context
(``VERIFY_X509_STRICT``: key usages, key identifiers) and for Go's ``crypto/tls``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import attrs

from tests.liqshell.services import unavailable

__all__ = ["Certificates", "make_certificates"]


@attrs.frozen
class Certificates:
    """Paths of the PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: a server verified against it is untrusted."""


_CA_EXTENSIONS = """\
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
{extra}"""


def _openssl(directory: Path, *args: str) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _ca(directory: Path, name: str) -> None:
    (directory / f"{name}.ext").write_text(_CA_EXTENSIONS)
    _openssl(
        directory, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=liqshell test {name}", "-extensions", "v3_ca",
        "-config", _request_config(directory, name),
    )  # fmt: skip


def _request_config(directory: Path, name: str) -> str:
    path = directory / f"{name}.cnf"
    path.write_text("[req]\ndistinguished_name = dn\n[dn]\n[v3_ca]\n" + _CA_EXTENSIONS)
    return path.name


def _leaf(directory: Path, name: str, usage: str, extra: str = "") -> None:
    (directory / f"{name}.ext").write_text(_LEAF_EXTENSIONS.format(usage=usage, extra=extra))
    _openssl(
        directory, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
        "-subj", f"/CN=liqshell test {name}",
    )  # fmt: skip
    _openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    """Create the certificates in ``directory`` (skips, or fails under CI, without
    ``openssl``)."""
    if shutil.which("openssl") is None:
        unavailable("the openssl command is not on PATH")
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(directory, "server", "serverAuth", "subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _leaf(directory, "client", "clientAuth")
    return Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
        other_ca=directory / "other-ca.pem",
    )
