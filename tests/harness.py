"""Services and nodes started inside the test's event loop, and stopped by the harness.

The API runs in a real uvicorn server on an ephemeral port, so nodes join it
over HTTP exactly as in production.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from services.api.app import create_app
from services.node.inventory import Inventory
from services.node.sdk import GridNode, QueryHandler
from services.registry.worker import RegistryWorker
from services.search.worker import SearchWorker
from shared.settings import ApiSettings, NodeSettings, RegistrySettings, SearchSettings

WAIT_S = 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def eventually(check: Callable[[], Awaitable[Any]], within: float = WAIT_S,
                     interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns a truthy value; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s (last: {result!r})")
        await asyncio.sleep(interval)


class ApiServer:
    """The API app served by uvicorn on 127.0.0.1 and an ephemeral port."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_config=None,
                                access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task | None = None
        self.url = ""

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        await eventually(self._started)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _started(self) -> bool:
        if self.task is not None and self.task.done():
            self.task.result()  # surface the start-up error
        return self.server.started

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, WAIT_S)


@dataclass
class Gateway:
    """A running gateway as the tests see it."""

    api: ApiServer
    client: httpx.AsyncClient
    registries: list[RegistryWorker] = field(default_factory=list)
    searches: list[SearchWorker] = field(default_factory=list)

    async def wait_ready(self) -> None:
        async def ready() -> bool:
            return (await self.client.get("/readyz")).status_code == 200

        await eventually(ready)

    async def wait_search_sees(self, count: int) -> None:
        """Until a search is sent to exactly ``count`` live nodes (and they all answer)."""

        async def seen() -> bool:
            response = await self.client.get("/search-available-tags")
            return (response.headers.get("x-grid-nodes-asked") == str(count)
                    and response.headers.get("x-grid-nodes-answered") == str(count))

        await eventually(seen)


class Harness:
    """Starts what a test asks for; ``close`` stops it all, nodes first."""

    def __init__(self, make_settings: Callable[..., Any]) -> None:
        self.make = make_settings
        self._stoppers: list[Callable[[], Awaitable[None]]] = []

    async def close(self) -> None:
        errors = []
        for stop in reversed(self._stoppers):
            try:
                await asyncio.wait_for(stop(), WAIT_S)
            except Exception as exc:  # noqa: BLE001 - stop everything, then report
                errors.append(exc)
        self._stoppers.clear()
        if errors:
            raise errors[0]

    async def registry(self, **overrides: Any) -> RegistryWorker:
        worker = RegistryWorker(self.make(RegistrySettings, **overrides))
        await worker.start()
        self._stoppers.append(worker.stop)
        return worker

    async def search(self, **overrides: Any) -> SearchWorker:
        worker = SearchWorker(self.make(SearchSettings, **overrides))
        await worker.start()
        self._stoppers.append(worker.stop)
        return worker

    async def api(self, **overrides: Any) -> ApiServer:
        server = ApiServer(self.make(ApiSettings, consumer_check_s=0.1, **overrides))
        await server.start()
        self._stoppers.append(server.stop)
        return server

    async def client(self, server: ApiServer, **kwargs: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=server.url, timeout=WAIT_S, **kwargs)
        self._stoppers.append(client.aclose)
        return client

    async def gateway(self, registries: int = 1, searches: int = 1, wait: bool = True,
                      registry: dict | None = None, search: dict | None = None,
                      **api: Any) -> Gateway:
        """API plus workers; with ``wait``, returns once /readyz says ready.

        The API follows node liveness too (for its search cache): it gets the
        search worker's TTL unless told otherwise, as in a deployment where every
        process reads the same GRID_NODE_TTL_S.
        """
        found = [await self.registry(**(registry or {})) for _ in range(registries)]
        searched = [await self.search(**(search or {})) for _ in range(searches)]
        if search and "node_ttl_s" in search:
            api.setdefault("node_ttl_s", search["node_ttl_s"])
        if registry and "n_replica" in registry:  # one GRID_N_REPLICA for all
            api.setdefault("n_replica", registry["n_replica"])
        server = await self.api(**api)
        gateway = Gateway(server, await self.client(server), found, searched)
        if wait:
            await gateway.wait_ready()
        return gateway

    async def node(self, gateway: Gateway, node_id: str,
                   handler: Inventory | QueryHandler | dict, address: str | None = None,
                   join: bool = True, version: str | None = None,
                   **overrides: Any) -> GridNode:
        """A grid node that joins the gateway over HTTP and heartbeats.

        An inventory (or dict) gives a versioned node; a handler is unversioned
        unless ``version`` is given.
        """
        if isinstance(handler, dict):
            handler = Inventory.model_validate(handler)
        settings = self.make(NodeSettings, gateway_url=gateway.api.url, **overrides)
        node = GridNode(settings, node_id, address or f"http://{node_id}:5000", handler,
                        version=version)
        self._stoppers.append(node.stop)
        await node.start(join=join)
        return node


def spawn(module: str, amqp_url: str, namespace: str, **env: str) -> subprocess.Popen:
    """Run a service as its own process (for kill and signal tests); the caller stops it."""
    environment = {**os.environ, "AMQP_URL": amqp_url, "GRID_NAMESPACE": namespace,
                   "GRID_LOG_LEVEL": "WARNING", **env}
    return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=environment)


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
