"""TLS to the broker: ``amqps://`` URLs, their certificate files, and a clear word when it fails.

aiormq reads the TLS files from an ``amqps://`` URL's query string
(``cafile``, ``certfile``, ``keyfile``) and verifies the broker's certificate
and host name by default. ``GRID_AMQP_CAFILE``, ``GRID_AMQP_CERTFILE`` and
``GRID_AMQP_KEYFILE`` are the same files, written into every ``amqps://``
address that does not name them itself (see docs/tls.md).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from yarl import URL

# Setting -> the aiormq query parameter it fills.
QUERY_NAMES = {"amqp_cafile": "cafile", "amqp_certfile": "certfile", "amqp_keyfile": "keyfile"}


def with_tls_files(urls: list[str], files: dict[str, Path | None]) -> list[str]:
    """``urls`` with the given TLS files added to each ``amqps://`` one that lacks them."""
    given = {QUERY_NAMES[name]: str(path) for name, path in files.items() if path is not None}
    if not given:
        return urls
    return [_with_query(url, given) for url in urls]


def _with_query(url: str, given: dict[str, str]) -> str:
    parsed = URL(url)
    if parsed.scheme != "amqps":
        return url
    missing = {key: value for key, value in given.items() if key not in parsed.query}
    return str(parsed.update_query(missing)) if missing else url


def tls_failure(exc: BaseException) -> str | None:
    """What went wrong, when ``exc`` (or what caused it) is a TLS error; else None.

    aiormq wraps the ``ssl`` module's errors in its own; the cause says which.
    """
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (f"TLS: certificate verify failed ({exc.verify_message or exc.reason}): "
                    "the broker's certificate was not accepted; check that GRID_AMQP_CAFILE "
                    "(or cafile= in AMQP_URL) is the CA that signed it, and that the URL's "
                    "host is a name the certificate carries")
        if isinstance(exc, ssl.SSLError):
            return f"TLS: the handshake with the broker failed ({exc.reason or exc})"
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
