"""``python -m bench.fleet``: many simulated grid nodes in one process.

Two kinds of fleet speak the same node protocol. ``--client wire`` (the
default) runs the nodes on :mod:`bench.wirefleet`, a minimal AMQP client whose
reply path costs a small fraction of aio-pika's, so that the benchmark
measures the gateway rather than its simulator. ``--client sdk`` runs real
:class:`~services.node.sdk.GridNode` objects, sharing a few ``Bus``
connections (the broker has too few file descriptors for one per node).
Either way every node joins over HTTP, consumes its own queue and heartbeats.
Settings come from the environment (``AMQP_URL``, ``GRID_NAMESPACE``,
``GRID_GATEWAY_URL``...). Prints ``READY <count> <seconds>`` on stdout once
every node has joined, then runs until SIGTERM or SIGINT. SIGUSR1 starts
inventory churn (one change every ``--churn-ms``), SIGUSR2 stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator

import httpx
from aiormq.abc import DeliveredMessage
from pydantic import SecretStr

from bench import inventory as inv
from bench.wirefleet import WireFleet
from services.node.inventory import Inventory
from services.node.sdk import GridNode
from shared.bus import Bus
from shared.logs import setup_logging
from shared.settings import NodeSettings

log = logging.getLogger("bench.fleet")


class HungNode(GridNode):
    """A node that heartbeats and receives every broadcast, but never answers one."""

    async def _on_query(self, message: DeliveredMessage) -> None:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run simulated grid nodes.")
    parser.add_argument("--first", type=int, required=True, help="index of the first node")
    parser.add_argument("--count", type=int, required=True, help="nodes in this process")
    parser.add_argument("--total", type=int, required=True, help="nodes in the whole fleet")
    parser.add_argument("--hang", default="", help="comma-separated indices of hung nodes")
    parser.add_argument("--client", choices=("wire", "sdk"), default="wire",
                        help="the nodes' AMQP client: bench.wire, or the node SDK")
    parser.add_argument("--connections", type=int, default=2,
                        help="AMQP connections (sdk) or channels (wire)")
    parser.add_argument("--join-concurrency", type=int, default=8,
                        help="nodes starting (and joining) at once")
    parser.add_argument("--per-node-connections", action="store_true",
                        help="one AMQP connection per node (wire), as real nodes have")
    parser.add_argument("--no-versions", action="store_true",
                        help="announce no inventory version: the gateway asks every time")
    parser.add_argument("--churn-ms", type=float, default=100.0,
                        help="while churning (SIGUSR1 .. SIGUSR2), one inventory change per this")
    return parser.parse_args(argv)


def build_nodes(args: argparse.Namespace, settings: NodeSettings,
                buses: list[Bus]) -> list[GridNode]:
    hung = hung_indices(args)
    nodes = []
    for index in range(args.first, args.first + args.count):
        kind = HungNode if index in hung else GridNode
        node = kind(settings, inv.node_id(index), inv.node_address(index),
                    inv.inventory(index, args.total), bus=buses[index % len(buses)])
        if args.no_versions:
            node.version = None
        nodes.append(node)
    return nodes


async def start_all(nodes: list[GridNode], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def start(node: GridNode) -> None:
        async with gate:
            await node.start(join=True)

    await asyncio.gather(*(start(node) for node in nodes))


async def stop_all(nodes: list[GridNode], buses: list[Bus], timeout_s: float = 10.0) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
    for bus in buses:
        await bus.close()


def hung_indices(args: argparse.Namespace) -> set[int]:
    return {int(i) for i in args.hang.split(",") if i}


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    run_fleet = run_wire if args.client == "wire" else run_sdk

    ready = asyncio.Event()

    async def serve() -> None:
        started = time.perf_counter()
        async with run_fleet(args, NodeSettings()) as count:
            print(f"READY {count} {time.perf_counter() - started:.2f}", flush=True)
            ready.set()
            await stop.wait()

    serving = asyncio.ensure_future(serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not ready.is_set():
        serving.cancel()  # stopped while starting: cut the start-up short
    try:
        await serving
    except asyncio.CancelledError:
        return 1
    except Exception as exc:  # noqa: BLE001 - tell the parent, then exit non-zero
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 1
    return 0


@contextlib.asynccontextmanager
async def run_wire(args: argparse.Namespace, settings: NodeSettings) -> AsyncIterator[int]:
    fleet = WireFleet(settings, args.first, args.count, args.total, hung_indices(args),
                      channels=args.connections, per_node_connections=args.per_node_connections,
                      versions=not args.no_versions)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, fleet.churn, args.churn_ms / 1000)
    loop.add_signal_handler(signal.SIGUSR2, fleet.churn, None)
    try:
        await fleet.start(args.join_concurrency)
        yield len(fleet.nodes)
    finally:
        await fleet.stop()


@contextlib.asynccontextmanager
async def run_sdk(args: argparse.Namespace, settings: NodeSettings) -> AsyncIterator[int]:
    if settings.node_auth:
        async with run_enrolled(args, settings) as count:
            yield count
        return
    buses = [Bus(settings, f"bench-fleet-{args.first}-{n}") for n in range(args.connections)]
    nodes: list[GridNode] = []
    churn = Churn(nodes, {inv.node_id(i): inv.inventory(i, args.total)
                          for i in range(args.first, args.first + args.count)},
                  args.churn_ms / 1000)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, churn.start)
    loop.add_signal_handler(signal.SIGUSR2, churn.stop)
    try:
        for bus in buses:
            await bus.connect()
        nodes += build_nodes(args, settings, buses)
        await start_all(nodes, args.join_concurrency)
        yield len(nodes)
    finally:
        churn.stop()
        await stop_all(nodes, buses)


async def enroll(http: httpx.AsyncClient, settings: NodeSettings, index: int) -> NodeSettings:
    """Enroll node ``index`` through the admin route: its own broker user and token."""
    response = await http.post("/admin/enroll", json={"node-id": inv.node_id(index)})
    response.raise_for_status()
    given = response.json()
    return settings.model_copy(update={"amqp_url": given["amqp-url"],
                                       "node_token": SecretStr(given["token"])})


@contextlib.asynccontextmanager
async def run_enrolled(args: argparse.Namespace, settings: NodeSettings) -> AsyncIterator[int]:
    """Secure mode: every node enrolled, on a connection of its own as its own broker user."""
    token = settings.admin_token.get_secret_value()
    nodes: list[GridNode] = []
    try:
        async with httpx.AsyncClient(base_url=settings.gateway_url, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            for index in range(args.first, args.first + args.count):
                own = await enroll(http, settings, index)
                node = GridNode(own, inv.node_id(index), inv.node_address(index),
                                inv.inventory(index, args.total))
                node.version = None if args.no_versions else node.version
                nodes.append(node)
        await start_all(nodes, args.join_concurrency)
        yield len(nodes)
    finally:
        await stop_all(nodes, [])


class Churn:
    """Changes one SDK node's inventory every interval, round the fleet, while started."""

    def __init__(self, nodes: list[GridNode], inventories: dict[str, Inventory],
                 interval_s: float) -> None:
        self.nodes = nodes
        self.inventories = inventories  # what each node serves, by id
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._forever())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _forever(self) -> None:
        inventories = self.inventories
        for node in itertools.cycle([n for n in self.nodes if not isinstance(n, HungNode)]):
            inventories[node.node_id] = inv.churned(inventories[node.node_id])
            await node.update_inventory(inventories[node.node_id])
            await asyncio.sleep(self.interval_s)


def main() -> None:
    args = parse_args()
    setup_logging(NodeSettings().log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        sys.exit(asyncio.run(run(args)))
    sys.exit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
