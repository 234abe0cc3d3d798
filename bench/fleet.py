"""``python -m bench.fleet``: many simulated grid nodes in one process.

The nodes are real :class:`~services.node.sdk.GridNode` objects: each joins
the gateway over HTTP, consumes its own queue and heartbeats, but they share
a few AMQP connections (the broker has too few file descriptors for one per
node). Settings come from the environment (``AMQP_URL``, ``GRID_NAMESPACE``,
``GRID_GATEWAY_URL``...). Prints ``READY <count> <seconds>`` on stdout once
every node has joined, then runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time

from aiormq.abc import DeliveredMessage

from bench import inventory as inv
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
    parser.add_argument("--connections", type=int, default=2, help="AMQP connections")
    parser.add_argument("--join-concurrency", type=int, default=8,
                        help="nodes starting (and joining) at once")
    return parser.parse_args(argv)


def build_nodes(args: argparse.Namespace, settings: NodeSettings,
                buses: list[Bus]) -> list[GridNode]:
    hung = {int(i) for i in args.hang.split(",") if i}
    nodes = []
    for index in range(args.first, args.first + args.count):
        kind = HungNode if index in hung else GridNode
        nodes.append(kind(settings, inv.node_id(index), inv.node_address(index),
                          inv.inventory(index, args.total), bus=buses[index % len(buses)]))
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


async def run(args: argparse.Namespace) -> int:
    settings = NodeSettings()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    buses = [Bus(settings, f"bench-fleet-{args.first}-{n}") for n in range(args.connections)]
    nodes: list[GridNode] = []
    try:
        for bus in buses:
            await bus.connect()
        nodes = build_nodes(args, settings, buses)
        started = time.perf_counter()
        starting = asyncio.ensure_future(start_all(nodes, args.join_concurrency))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            return 1
        starting.result()
        print(f"READY {len(nodes)} {time.perf_counter() - started:.2f}", flush=True)
        await stopping
        return 0
    except Exception as exc:  # noqa: BLE001 - tell the parent, then exit non-zero
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 1
    finally:
        await stop_all(nodes, buses)


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
