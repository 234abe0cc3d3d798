"""HTTP nodes that misbehave, for the bridge tests: silent, refusing, garbage, switchable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson

from localbroker import free_ports
from services.node.httpnode import HttpNodeApp


class SilentServer:
    """Accepts connections and reads requests, never answers one."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()


def free_port() -> int:
    """A loopback port nothing listens on (as long as nobody takes it meanwhile)."""
    return free_ports(1)[0]


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


async def _send(send: Callable, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def not_json(scope: dict, receive: Callable, send: Callable) -> None:
    """An ASGI app answering every request 200 with bytes that are not JSON."""
    if scope["type"] == "http":
        await _send(send, 200, b"\xff\x00 not json <html>")


# A valid model list (so probes find the node alive), every other route the wrong shape.
WRONG_SHAPES = {
    "/models/": {"success": True, "models": ["shapes-model"]},
    "/dataset-tags": {"tags": ["#shapes"]},
    "/search": {"content": "yes"},
    "/search-encrypted-models": {"workers": 3, "crypto_provider": ["x"]},
}


async def wrong_shapes(scope: dict, receive: Callable, send: Callable) -> None:
    """An ASGI app (any path prefix) that answers JSON of the wrong shape."""
    if scope["type"] != "http":
        return
    route = "/" + scope["path"].split("/", 3)[-1] if scope["path"].startswith("/n/") else ""
    answer = WRONG_SHAPES.get(route or scope["path"])
    await _send(send, 200 if answer is not None else 404, orjson.dumps(answer))


class Switch:
    """Wraps an HttpNodeApp: serves normally, or (``hang = True``) never answers."""

    def __init__(self, app: HttpNodeApp) -> None:
        self.app = app
        self.hang = False
        self.hung = 0
        self._release = asyncio.Event()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and self.hang:
            self.hung += 1
            await self._release.wait()  # until the test ends
            return
        await self.app(scope, receive, send)

    def release(self) -> None:
        """Let every hung request end, so the server can stop at once."""
        self._release.set()
