"""HTTP/1.1 clients for the load generator: a minimal keep-alive one, and httpx.

The minimal client costs a fraction of httpx's CPU per request, which
matters when the client shares two cores with the broker, the gateway and the
simulated nodes (the ``client`` CPU column of the results shows it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Client(Protocol):
    async def request(self, method: str, path: str, body: bytes | None) -> Response: ...

    async def close(self) -> None: ...


class ConnectionClosed(ConnectionError):
    """The server closed the connection before a whole response arrived."""


class RawClient:
    """One keep-alive HTTP/1.1 connection, one request at a time; reconnects when closed."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        parts = urlsplit(base_url)
        # Sent on every request when set (the admin token of a secure gateway).
        self.auth = [b"Authorization: Bearer " + token.encode()] if token else []
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, not {base_url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.host_header = parts.netloc.encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> Response:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        try:
            self._writer.write(self._encode(method, path, body))
            return await self._read_response()
        except BaseException:
            await self.close()  # the connection state is unknown: start afresh
            raise

    def _encode(self, method: str, path: str, body: bytes | None) -> bytes:
        head = [f"{method} {self.prefix}{path} HTTP/1.1".encode(), b"Host: " + self.host_header,
                b"Accept: */*", *self.auth]
        if body is not None:
            head += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
        return b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")

    async def _read_response(self) -> Response:
        assert self._reader is not None
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            raise ConnectionClosed("connection closed before the response") from None
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        body = await self._read_body(headers)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, headers, body)

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        assert self._reader is not None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._read_chunked()
        length = headers.get("content-length")
        if length is not None:
            return await self._reader.readexactly(int(length))
        return await self._reader.read()  # no length: the body ends with the connection

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        body = bytearray()
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")  # no trailers expected
                return bytes(body)
            body += await self._reader.readexactly(size)
            await self._reader.readexactly(2)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass


class HttpxClient:
    """The same through httpx (one pooled keep-alive connection per client)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=None,
            headers={"Authorization": f"Bearer {token}"} if token else None,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    async def request(self, method: str, path: str, body: bytes | None) -> Response:
        headers = {"Content-Type": "application/json"} if body is not None else None
        response = await self._client.request(method, path, content=body, headers=headers)
        return Response(response.status_code, dict(response.headers), response.content)

    async def close(self) -> None:
        await self._client.aclose()


CLIENTS = {"raw": RawClient, "httpx": HttpxClient}


def make_client(kind: str, base_url: str, token: str | None = None) -> Client:
    return CLIENTS[kind](base_url, token)
