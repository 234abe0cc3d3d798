"""HTTP-only grid nodes: the original PyGrid node's gateway-facing routes, from inventories.

The routes the 2019 gateway called on its nodes (docs/bridge.md cites the original code):

- ``GET /models/``: ``{"success": true, "models": [...]}``
- ``GET /dataset-tags``: ``["#tag", ...]``
- ``POST /search`` ``{"query": ["#tag", ...]}``: ``{"content": bool}``
- ``POST /search-encrypted-models`` ``{"model_id": ...}``: ``{"workers": [[id, addr], ...],
  "crypto_provider": [id, addr]}``, or 404 ``{"error": "Model ID not found!"}``
- ``GET /identity/``: ``OpenGrid`` (plain text)

One process serves many nodes, node ``<id>`` under the path prefix ``/n/<id>`` (its
address is ``http://HOST:PORT/n/<id>``); a process serving one node serves it at the
root too. A bare ASGI app on uvicorn, so a fleet of stub nodes costs little::

    python -m services.node.httpnode --port 5001 --inventory examples/alice.json
    python -m services.node.httpnode --port 5001 --inventory examples/alice.json \\
        --count 100 --id-prefix h- --join        # h-0 ... h-99, joined to GRID_GATEWAY_URL
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn

from services.node.inventory import Inventory
from services.node.sdk import JoinRefused, delete_node, post_join
from shared.logs import setup_logging
from shared.settings import NodeSettings

log = logging.getLogger("services.node.httpnode")
MAX_BODY_BYTES = 1024 * 1024
START_TIMEOUT_S = 10.0
JSON = b"application/json"
Answer = tuple[int, bytes]
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


@dataclass(frozen=True)
class ServedNode:
    """A node's inventory, with its fixed answers encoded once."""

    inventory: Inventory
    models: bytes
    tags: bytes

    @classmethod
    def of(cls, inventory: Inventory) -> ServedNode:
        return cls(inventory, orjson.dumps({"success": True, "models": inventory.models}),
                   orjson.dumps(inventory.tags()))


def error(status: int, message: str) -> Answer:
    return status, orjson.dumps({"error": message})


def list_models(node: ServedNode, _: bytes) -> Answer:
    return 200, node.models


def dataset_tags(node: ServedNode, _: bytes) -> Answer:
    return 200, node.tags


def search(node: ServedNode, body: bytes) -> Answer:
    """``{"query": [...]}``: does one tensor carry every tag."""
    query = _field(body, "query")
    if isinstance(query, str):
        query = [query]
    if not query or not isinstance(query, list) or not all(isinstance(t, str) for t in query):
        return error(400, "Invalid payload format")
    return 200, orjson.dumps({"content": node.inventory.holds_all(query)})


def search_encrypted_models(node: ServedNode, body: bytes) -> Answer:
    """``{"model_id": ...}``: the encrypted model's workers and crypto provider, or 404."""
    model_id = _field(body, "model_id")
    if not model_id or not isinstance(model_id, str):
        return error(400, "Invalid payload format")
    hosts = node.inventory.encrypted_models.get(model_id)
    if hosts is None:
        return error(404, "Model ID not found!")
    return 200, orjson.dumps(hosts.model_dump(mode="json"))


def _field(body: bytes, name: str) -> Any:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return payload.get(name) if isinstance(payload, dict) else None


# path -> (method, handler); the paths are the original node's, trailing slashes included.
ROUTES: dict[str, tuple[str, Callable[[ServedNode, bytes], Answer]]] = {
    "/models/": ("GET", list_models),
    "/dataset-tags": ("GET", dataset_tags),
    "/search": ("POST", search),
    "/search-encrypted-models": ("POST", search_encrypted_models),
}


class HttpNodeApp:
    """The ASGI app: routes each request to its node (by path prefix) and route."""

    def __init__(self, nodes: dict[str, Inventory] | None = None) -> None:
        self.nodes: dict[str, ServedNode] = {}
        # Requests served, by node id (what the tests and the benchmark count).
        self.requests: Counter[str] = Counter()
        for node_id, inventory in (nodes or {}).items():
            self.add(node_id, inventory)

    def add(self, node_id: str, inventory: Inventory) -> None:
        self.nodes[node_id] = ServedNode.of(inventory)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; websockets are not served
        status, body, content_type = await self._respond(scope, receive)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _respond(self, scope: dict, receive: Callable) -> tuple[int, bytes, bytes]:
        found = self._locate(scope["path"])
        if found is None:
            return (*error(404, "Not found"), JSON)
        node_id, node, path = found
        if path == "/identity/":
            return 200, b"OpenGrid", b"text/plain"
        method, handler = ROUTES.get(path, (None, None))
        if handler is None:
            return (*error(404, "Not found"), JSON)
        if scope["method"] != method:
            return (*error(405, "Method not allowed"), JSON)
        self.requests[node_id] += 1
        body = await _read_body(receive) if method == "POST" else b""
        if body is None:
            return (*error(413, "Request body too large"), JSON)
        return (*handler(node, body), JSON)

    def _locate(self, path: str) -> tuple[str, ServedNode, str] | None:
        """(node id, node, route path) of a request path, None for no node."""
        if path.startswith("/n/"):
            node_id, _, rest = path[3:].partition("/")
            node = self.nodes.get(node_id)
            return None if node is None else (node_id, node, "/" + rest)
        if len(self.nodes) == 1:
            node_id, node = next(iter(self.nodes.items()))
            return node_id, node, path
        return None


async def _read_body(receive: Callable) -> bytes | None:
    """The request body, None when it is over the cap."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body"):
            return bytes(body)


class HttpNodeServer:
    """An :class:`HttpNodeApp` (or any ASGI app) served by uvicorn (port 0: an ephemeral one)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                                lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def address(self, node_id: str) -> str:
        """The node's address, as it joins the gateway."""
        return f"{self.url}/n/{node_id}"

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        async with asyncio.timeout(START_TIMEOUT_S):  # uvicorn offers no event to await
            while not self.server.started:
                if self.task.done():
                    self.task.result()  # surface the start-up error (a port in use)
                    raise RuntimeError("the HTTP node server stopped while starting")
                await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting, let requests in hand finish (for a second at most)."""
        self.server.should_exit = True
        if self.task is not None:
            await self.task


# --- python -m services.node.httpnode ---------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Serve HTTP-only grid nodes (the original PyGrid node routes) from an "
                    "inventory file; node <id> answers under /n/<id>.")
    parser.add_argument("--inventory", required=True, help="inventory JSON file")
    parser.add_argument("--id", action="append", dest="ids", default=[],
                        help="a node id (repeatable; default: the inventory file's name)")
    parser.add_argument("--count", type=int, default=0,
                        help="also serve this many nodes, <id-prefix>0 ... <id-prefix>N-1")
    parser.add_argument("--id-prefix", default="http-node-", help="id prefix for --count")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--public-url", help="base of the addresses the nodes join with "
                        "(default: http://HOST:PORT)")
    parser.add_argument("--join", action="store_true",
                        help="join every node to GRID_GATEWAY_URL, retrying until it answers")
    parser.add_argument("--leave", action="store_true",
                        help="with --join, delete the nodes from the gateway on exit")
    return parser.parse_args(argv)


def node_ids(args: argparse.Namespace) -> list[str]:
    ids = [*args.ids, *(f"{args.id_prefix}{i}" for i in range(args.count))]
    return ids or [Path(args.inventory).stem]


def public_url(args: argparse.Namespace) -> str:
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    return (args.public_url or f"http://{host}:{args.port}").rstrip("/")


async def join_all(settings: NodeSettings, addresses: dict[str, str]) -> None:
    """Join every node (a 409 means joined already), retrying while the gateway is away."""
    waiting = dict(addresses)
    async with httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as http:
        while waiting:
            for node_id, address in list(waiting.items()):
                try:
                    await post_join(http, settings, node_id, address)
                    del waiting[node_id]
                except JoinRefused as exc:  # a bad id or a missing token: retrying won't help
                    log.error("join refused", extra={"node_id": node_id, "error": str(exc)})
                    del waiting[node_id]
                except httpx.HTTPError as exc:
                    log.warning("cannot join yet, retrying", extra={"error": str(exc)})
                    break
            if waiting:
                await asyncio.sleep(1.0)
    log.info("nodes joined", extra={"nodes": len(addresses)})


async def leave_all(settings: NodeSettings, addresses: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=settings.gateway_url, timeout=10) as http:
        for node_id, address in addresses.items():
            await delete_node(http, settings, node_id, address)


async def serve(args: argparse.Namespace, settings: NodeSettings) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn's own handlers), joined meanwhile if asked."""
    inventory = Inventory.from_file(args.inventory)
    ids = node_ids(args)
    addresses = {node_id: f"{public_url(args)}/n/{node_id}" for node_id in ids}
    server = HttpNodeServer(HttpNodeApp(dict.fromkeys(ids, inventory)), args.host, args.port)
    await server.start()
    joining = asyncio.create_task(join_all(settings, addresses)) if args.join else None
    log.info("serving HTTP nodes", extra={"nodes": len(ids), "url": public_url(args)})
    await server.task
    if joining is not None:
        joining.cancel()
        await asyncio.gather(joining, return_exceptions=True)
        if args.leave:
            await leave_all(settings, addresses)


if __name__ == "__main__":
    node_settings = NodeSettings()
    setup_logging(node_settings.log_level, node_settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(parse_args(), node_settings))
    else:
        uvloop.run(serve(parse_args(), node_settings))
