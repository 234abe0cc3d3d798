"""Certificates made for a test with the ``openssl`` command: a CA, and a server cert it signs.

The openssl CLI rather than a Python package: it is on every machine that
runs RabbitMQ, and the project needs no crypto library of its own.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


def openssl(*args: str | Path) -> None:
    """Run ``openssl ARGS``, bounded; raise with its output if it fails."""
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace')}")


def make_ca(directory: Path, name: str) -> Pair:
    """A self-signed CA named ``name`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
            "-subj", f"/CN={name}", "-keyout", ca.key, "-out", ca.cert,
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return ca


def make_server(directory: Path, ca: Pair, name: str = "broker") -> Pair:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    server = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    request, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
    extensions.write_text(SERVER_EXTENSIONS)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", server.key, "-out", request)
    openssl("x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key,
            "-CAcreateserial", "-days", DAYS, "-extfile", extensions, "-out", server.cert)
    return server
